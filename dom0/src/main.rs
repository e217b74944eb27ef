//! A Rust PV dom0: creates the domUs its ramdisk describes, serves their
//! consoles and reaps them when they shut down.
//!
//! The ramdisk is a cpio (newc) archive. Every member whose name ends in
//! `.cfg` is a domain configuration in the `xl.cfg` subset of
//! [`toolstack::config`], whose `kernel` names another member. dom0 creates
//! them in archive order ([`toolstack::builder::build`]), binds each
//! console ring's event channel and unpauses the domain, then waits: each
//! domU's console output is printed with a `(d<N>) ` prefix, and on
//! `VIRQ_DOM_EXC` every domain that has shut down is drained, reported and
//! handled as its `on_poweroff`/`on_crash` says (destroyed, or preserved).
//! When no domU is left running dom0 prints its result and powers off.
//!
//! Command line (all optional):
//! - `expect=<reason>`: every domU must shut down with this reason
//!   (`poweroff`, `crash`, ...); a different one fails the run;
//! - `timeout=<seconds>`: give up waiting after this long (default 60).
//!
//! Its output is XTF-style (`ok:` lines and one `Test result:`), so the
//! same run is compared between this hypervisor and Xen 4.17.

#![no_std]
#![no_main]

use guest_pv_shim::dom0_abi::domctl::DomInfoFlags;
use guest_pv_shim::dom0_abi::event_channel::{EvtchnBindInterdomain, EvtchnBindVirq, Virq};
use guest_pv_shim::dom0_abi::sched::ShutdownReason;
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::{cmdline, hypercall, report, shared};
use toolstack::builder::{self, Built, Hypervisor};
use toolstack::config::{Action, DomainConfig};
use toolstack::console::ConsoleOutput;
use toolstack::cpio::Archive;
use toolstack::xen::{CONSOLE_WINDOW_BASE, ConsoleRing, Xen, domain_info};

guest_pv_shim::guest_kernel! {
    main: dom0_main,
    guest_os: "oxen-dom0",
    guest_version: "0.1.0",
}

/// Domains served at once (one mapping window each).
const MAX_DOMUS: usize = 8;
/// Pages of the largest domU (256 MiB): the p2m buffer's size.
const P2M_CAPACITY: usize = 65536;
/// Nanoseconds per second.
const NS: u64 = 1_000_000_000;
/// How long one poll sleeps before dom0 rescans everything.
const POLL_NS: u64 = 100_000_000;

/// The MFNs of the domU being built (one build at a time).
static P2M: spin::Mutex<[u64; P2M_CAPACITY]> = spin::Mutex::new([0; P2M_CAPACITY]);

/// A running domU and its console back end.
struct Domu {
    name: &'static str,
    built: Built,
    cfg: DomainConfig<'static>,
    /// dom0's end of the console event channel.
    local_port: u32,
    ring: ConsoleRing,
    output: ConsoleOutput,
}

fn dom0_main(si: &'static StartInfo) {
    report::banner("dom0", "toolstack");
    let line = si.cmdline();
    let expect = cmdline::option(line, b"expect").and_then(|r| core::str::from_utf8(r).ok());
    let timeout_s = cmdline::option(line, b"timeout")
        .and_then(|t| core::str::from_utf8(t).ok()?.parse::<u64>().ok())
        .unwrap_or(60);
    if !report::check_ret("map shared_info", shared::map(), 0) {
        return;
    }
    let mut virq = EvtchnBindVirq {
        virq: Virq::DomExc as u32,
        vcpu: 0,
        port: 0,
    };
    if !report::check_ret(
        "bind VIRQ_DOM_EXC",
        hypercall::evtchn_bind_virq(&mut virq),
        0,
    ) {
        return;
    }
    let archive = Archive::new(guest_pv_shim::ramdisk());
    if let Err(e) = archive.check() {
        report::fail("ramdisk", format_args!("{e}"));
        return;
    }
    let mut domus: [Option<Domu>; MAX_DOMUS] = [const { None }; MAX_DOMUS];
    let mut configs = 0;
    for entry in archive.files().filter(|e| e.name.ends_with(".cfg")) {
        configs += 1;
        let Some(slot) = domus.iter().position(Option::is_none) else {
            report::fail(entry.name, format_args!("more than {MAX_DOMUS} domains"));
            break;
        };
        domus[slot] = start(&archive, entry.name, entry.data, slot);
    }
    report::ok_value("domain configurations in the ramdisk", configs);
    serve(&mut domus, virq.port, expect, timeout_s);
    report::finish()
}

/// Parses, builds, connects and unpauses one domain.
fn start(
    archive: &Archive<'static>,
    file: &'static str,
    text: &'static [u8],
    slot: usize,
) -> Option<Domu> {
    let cfg = match core::str::from_utf8(text).map(DomainConfig::parse) {
        Ok(Ok(cfg)) => cfg,
        Ok(Err(e)) => {
            report::fail(file, format_args!("{e}"));
            return None;
        }
        Err(_) => {
            report::fail(file, format_args!("not UTF-8"));
            return None;
        }
    };
    let Some(kernel) = archive.find(cfg.kernel) else {
        report::fail(
            cfg.name,
            format_args!("kernel {:?} is not in the ramdisk", cfg.kernel),
        );
        return None;
    };
    let mut xen = Xen;
    let built = match builder::build(&mut xen, &cfg, kernel.data, &mut P2M.lock()[..]) {
        Ok(built) => built,
        Err(e) => {
            report::fail(cfg.name, format_args!("build: {e}"));
            return None;
        }
    };
    report::ok_value(format_args!("create {}: domain id", cfg.name), built.domid);
    match connect(&built, slot) {
        Ok((local_port, ring)) => {
            guest_pv_shim::println!(
                "dom0: {} is domain {}: {} MiB, {} vCPU(s), entry {:#x}",
                cfg.name,
                built.domid,
                cfg.memory_mib,
                cfg.vcpus,
                built.entry
            );
            Some(Domu {
                name: cfg.name,
                built,
                cfg,
                local_port,
                ring,
                output: ConsoleOutput::new(built.domid),
            })
        }
        Err(e) => {
            report::fail(format_args!("start {}", cfg.name), format_args!("{e}"));
            let _ = xen.destroy(built.domid);
            None
        }
    }
}

/// Binds the console's event channel, maps its ring and unpauses the
/// domain.
fn connect(built: &Built, slot: usize) -> Result<(u32, ConsoleRing), builder::HvError> {
    let mut bind = EvtchnBindInterdomain {
        remote_dom: built.domid,
        pad: 0,
        remote_port: built.console_port,
        local_port: 0,
    };
    let ret = hypercall::evtchn_bind_interdomain(&mut bind);
    if ret != 0 {
        return Err(builder::HvError {
            op: "bind_interdomain",
            ret,
        });
    }
    let ring = ConsoleRing::map(CONSOLE_WINDOW_BASE + slot, built.domid, built.console_mfn)?;
    Xen.unpause(built.domid)?;
    Ok((bind.local_port, ring))
}

/// Serves consoles and reaps domains until none is left or time runs out.
fn serve(domus: &mut [Option<Domu>], virq_port: u32, expect: Option<&str>, timeout_s: u64) {
    let now = || shared::system_time_of(0).unwrap_or(0);
    let deadline = now().saturating_add(timeout_s.saturating_mul(NS));
    let mut ports = [0u32; MAX_DOMUS + 1];
    loop {
        let mut n = 0;
        for domu in domus.iter_mut().flatten() {
            drain(domu);
            ports[n] = domu.local_port;
            n += 1;
        }
        for slot in domus.iter_mut() {
            if slot.as_ref().is_some_and(shut_down)
                && let Some(domu) = slot.take()
            {
                reap(domu, expect);
            }
        }
        if domus.iter().all(Option::is_none) {
            return;
        }
        if now() > deadline {
            for domu in domus.iter().flatten() {
                report::fail(
                    format_args!("{} shuts down", domu.name),
                    format_args!("still running after {timeout_s} s"),
                );
            }
            return;
        }
        ports[n] = virq_port;
        hypercall::sched_poll(&ports[..=n], now().saturating_add(POLL_NS));
        for &port in &ports[..=n] {
            shared::clear_evtchn_pending(port);
        }
    }
}

/// Prints what the domain's console has, and tells it the ring has room.
fn drain(domu: &mut Domu) {
    let consumed = domu.output.drain(&mut domu.ring, &mut |line| {
        hypercall::console_write(line);
    });
    if consumed > 0 {
        hypercall::evtchn_send(domu.local_port);
    }
}

/// Whether the domain has shut down (all its vCPUs stopped).
fn shut_down(domu: &Domu) -> bool {
    domain_info(domu.built.domid)
        .is_ok_and(|i| i.domain == domu.built.domid && i.dominf().contains(DomInfoFlags::SHUTDOWN))
}

/// Reports a shut-down domain and destroys or preserves it.
fn reap(mut domu: Domu, expect: Option<&str>) {
    drain(&mut domu);
    domu.output.flush(&mut |line| {
        hypercall::console_write(line);
    });
    let domid = domu.built.domid;
    let code = domain_info(domid).map_or(u32::MAX, |i| i.shutdown_code());
    let reason =
        ShutdownReason::from_number(u64::from(code)).map_or("unknown", ShutdownReason::name);
    report::check(
        format_args!("{} printed on its console", domu.name),
        domu.output.lines() > 0,
        format_args!("no output from domain {domid}"),
    );
    match expect {
        Some(want) => {
            report::check_eq(format_args!("{} shutdown reason", domu.name), reason, want);
        }
        None => report::ok_value(format_args!("{} shutdown reason", domu.name), reason),
    }
    let action = if code == ShutdownReason::Crash as u32 {
        domu.cfg.on_crash
    } else {
        domu.cfg.on_poweroff
    };
    if action == Action::Preserve {
        guest_pv_shim::println!("dom0: domain {domid} ({}) preserved", domu.name);
        return;
    }
    let unmapped = domu.ring.unmap();
    report::check(
        format_args!("{} console unmapped", domu.name),
        unmapped.is_ok(),
        format_args!("{unmapped:?}"),
    );
    report::check_ret(
        format_args!("{} console port closed", domu.name),
        hypercall::evtchn_close(domu.local_port),
        0,
    );
    let destroyed = Xen.destroy(domid);
    report::check(
        format_args!("destroy {}", domu.name),
        destroyed.is_ok(),
        format_args!("{destroyed:?}"),
    );
    // Gone, or at least dying: getdomaininfo reports another domain, none,
    // or this one marked dying.
    let gone = domain_info(domid).map_or(true, |i| {
        i.domain != domid || i.dominf().contains(DomInfoFlags::DYING)
    });
    report::check(
        format_args!("{} is gone after destroy", domu.name),
        gone,
        format_args!("domain {domid} still listed"),
    );
    guest_pv_shim::println!("dom0: domain {domid} ({}) destroyed ({reason})", domu.name);
}
