//! A Rust PV dom0: creates the domUs its ramdisk describes, serves their
//! consoles and their xenstore (it is their xenstored, `docs/xenstore.md`)
//! and reaps them when they shut down.
//!
//! The ramdisk is a cpio (newc) archive of domain configurations (the
//! `xl.cfg` subset of [`toolstack::config`]) and the kernels they name.
//! Without a script, dom0 creates every `*.cfg` member in archive order
//! and then waits: each domU's console output is printed with a `(d<N>) `
//! prefix, and every domain that shuts down is reported and destroyed (or
//! preserved, as its `on_poweroff`/`on_crash` says). With `script=<file>`
//! it runs the `xl`-like commands of that ramdisk file instead
//! ([`toolstack::shell`]); with `shell` it creates the domUs and then
//! takes the same commands typed at its console (`cargo xtask run` boots
//! it so). When done it prints its result and powers off.
//!
//! Command line (all optional):
//! - `script=<file>`: run this ramdisk file's commands;
//! - `shell`: after creating the domUs, run the interactive shell until
//!   `quit` (the domUs still running are then destroyed);
//! - `expect=<reason>`: every domU must shut down with this reason
//!   (`poweroff`, `crash`, ...); a different one fails the run;
//! - `timeout=<seconds>`: give up waiting after this long (default 60).
//! - `nic`: bring up the machine's virtio-net card first and make it the
//!   uplink port of the vifs' bridge (`docs/network.md`).
//! - `readbench`: first read the virtio disk `vda` through dom0's own
//!   driver and print the block benchmark's reference (`blk_read_dom0`),
//!   then time a `disk` domU's read through blkback (`blk_read_domu`,
//!   [`readbench`]).
//!
//! Its output is XTF-style (`ok:` lines and one `Test result:`), so the
//! same run is compared between this hypervisor and Xen 4.17.

#![no_std]
#![no_main]

extern crate alloc;

mod blkback_xen;
mod devices;
mod domains;
mod grants;
mod netback;
mod netbench;
mod pingpong;
mod readbench;
mod scale;
mod share;
mod shell;
mod store;

use core::mem::MaybeUninit;

use linked_list_allocator::LockedHeap;

use guest_pv_shim::dom0_abi::event_channel::{EvtchnBindVirq, Virq};
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::{cmdline, hypercall, report, shared};
use toolstack::cpio::Archive;

use crate::domains::Domains;

/// dom0's heap: the xenstore's nodes, watches, transactions and queued
/// replies: each domU holds at most 256 KiB of node records (the store's
/// memory quota) and 64 KiB of queued events, with the allocator's overhead
/// about 5 MiB for eight; and the RAM disks of the domUs' `disk` entries.
#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// Bytes of heap.
const HEAP_SIZE: usize = 16 << 20;

/// The heap's memory, in `.bss`.
static HEAP_SPACE: spin::Mutex<[MaybeUninit<u8>; HEAP_SIZE]> =
    spin::Mutex::new([MaybeUninit::uninit(); HEAP_SIZE]);

/// Gives the heap its memory; once, before anything allocates.
fn init_heap() {
    let mut space = HEAP_SPACE.lock();
    // SAFETY: the guard is leaked below, so the slice is never reached
    // through the mutex again and lives as long as the heap (`'static`).
    let memory: &'static mut [MaybeUninit<u8>] =
        unsafe { &mut *core::ptr::from_mut::<[MaybeUninit<u8>]>(&mut *space) };
    core::mem::forget(space);
    HEAP.lock().init_from_slice(memory);
}

guest_pv_shim::guest_kernel! {
    main: dom0_main,
    guest_os: "oxen-dom0",
    guest_version: "0.1.0",
}

/// The command-line value of `key` as text.
fn option(line: &'static [u8], key: &[u8]) -> Option<&'static str> {
    cmdline::option(line, key).and_then(|v| core::str::from_utf8(v).ok())
}

fn dom0_main(si: &'static StartInfo) {
    init_heap();
    report::whole_lines();
    report::banner("dom0", "toolstack");
    let line = si.cmdline();
    let timeout_s = option(line, b"timeout")
        .and_then(|t| t.parse().ok())
        .unwrap_or(60);
    if !report::check_ret("map shared_info", shared::map(), 0) {
        return;
    }
    let Some(dom_exc_port) = bind_virq(Virq::DomExc) else {
        return;
    };
    let archive = Archive::new(guest_pv_shim::ramdisk());
    if let Err(e) = archive.check() {
        report::fail("ramdisk", format_args!("{e}"));
        return;
    }
    let mut domains = Domains::new(dom_exc_port, option(line, b"expect"), timeout_s);
    if cmdline::has_flag(line, b"nic")
        && let Some(mut uplink) = netback::Uplink::probe()
    {
        if cmdline::has_flag(line, b"netbench") {
            netbench::run(uplink.nic_mut());
        }
        domains.set_uplink(uplink);
    }
    if cmdline::has_flag(line, b"readbench") {
        readbench::run(domains.blk().0);
    }
    match option(line, b"script") {
        Some(name) => match archive.find(name).map(|f| core::str::from_utf8(f.data)) {
            Some(Ok(script)) => shell::run(script, &mut domains, &archive),
            Some(Err(_)) => report::fail("script", format_args!("{name} is not UTF-8")),
            None => report::fail("script", format_args!("{name} is not in the ramdisk")),
        },
        None => {
            let mut configs = 0;
            for entry in archive.files().filter(|e| e.name.ends_with(".cfg")) {
                configs += 1;
                domains.create(&archive, entry.name, false);
            }
            report::ok_value("domain configurations in the ramdisk", configs);
            if cmdline::has_flag(line, b"shell") {
                interactive(&mut domains, &archive);
            } else {
                domains.wait();
            }
        }
    }
    report::finish()
}

/// The interactive shell on dom0's console (`VIRQ_CONSOLE` and
/// `CONSOLEIO_read`); on `quit` the domUs still running are destroyed.
fn interactive(domains: &mut Domains, archive: &Archive<'static>) {
    let Some(console_port) = bind_virq(Virq::Console) else {
        return;
    };
    shell::interactive(domains, archive, console_port);
    domains.destroy_all();
}

/// Binds `virq` on vCPU 0 (a check, `bind VIRQ_<name>`): its port.
fn bind_virq(virq: Virq) -> Option<u32> {
    let mut bind = EvtchnBindVirq {
        virq: virq as u32,
        vcpu: 0,
        port: 0,
    };
    let ret = hypercall::evtchn_bind_virq(&mut bind);
    report::check_ret(format_args!("bind VIRQ_{}", virq.name()), ret, 0).then_some(bind.port)
}
