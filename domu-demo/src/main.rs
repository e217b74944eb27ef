//! A tiny PV domU for dom0's toolstack: writes a few lines to its console
//! ring (`start_info.console.domU`), waits until the back end has read
//! them, then shuts down: poweroff, or crash when its command line has the
//! word `crash`. With the word `probe` it first tries the control domain's
//! hypercalls on dom0, then device access it has no right to (ports,
//! PIRQs, the local APIC through `DOMID_IO`), and reports what each
//! returned; with `xenstore` it uses its xenstore connection (`xenstore`
//! module) and reports every answer; with `grant` it grants two pages to
//! dom0 and follows dom0's use of them (see [`grant`]); with `blk` or
//! `blkhostile` it uses its virtual disk, honestly or not (the `blk`
//! module); with `disk` it tests a disk dom0 serves from a real device
//! (the `disk` module); with `net` it brings up its vif under smoltcp and pings,
//! serves or talks TCP, or misbehaves (see [`net`]); with `net web` it is
//! the default scenario's web server (see [`web`]); with `pong` it
//! answers dom0's events on a port of its own, with `copy=<peer>` it
//! copies from another domU's grant while that one copies from its own,
//! with `hold=<peer>` it holds the grant such a copy goes into (see
//! [`copy`]), with `xsread=<n>` it times
//! `n` xenstore reads (a `BENCH xenstore_read` line), with `spin=<n>` it does
//! a fixed amount of work first, and with `idle` it never shuts down but
//! sleeps after printing (see [`events`]); with `input` it reports each
//! line typed at dom0's `console` attach, until `bye`.
//!
//! It runs unchanged on Xen 4.17 and on this hypervisor. Its output only
//! reaches the serial line through dom0's console back end, prefixed with
//! `(d<N>) `.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, Ordering, fence};

use guest_pv_shim::dom0_abi::sched::ShutdownReason;
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::{cmdline, hypercall, mm};

mod blk;
mod copy;
mod disk;
mod events;
mod net;
mod web;
mod xenstore;

guest_pv_shim::guest_kernel! {
    main: demo_main,
    guest_os: "domu-demo",
    guest_version: "0.1.0",
}

/// How long, in ns of system time, the domain waits for dom0 without
/// progress (a store reply, room in the console ring, a grant flag)
/// before it gives up.
pub const PATIENCE_NS: u64 = 10_000_000_000;

/// This domain's console ring (the shim attached it at boot).
pub use guest_pv_shim::console::RingConsole as Console;

/// The window the privilege probe tries to map dom0's frames into.
const PROBE_WINDOW: usize = 1;

/// Tries what only the control domain may do, aimed at dom0, and reports
/// each result as a `check: <what> = <result>` console line (dom0 turns
/// those into its own checks). Xen answers `EPERM` (-1) to each; none of
/// them may change anything.
fn probe(console: &mut Console, si: &StartInfo) {
    use guest_pv_shim::dom0_abi::domctl::{DomctlCmd, NoPayload};
    use guest_pv_shim::dom0_abi::event_channel::EvtchnAllocUnbound;
    use guest_pv_shim::dom0_abi::mca::{McaCmd, XenMc, XenMcPhyscpuinfo};
    use guest_pv_shim::dom0_abi::platform::{PlatformCmd, PlatformOp, XenpfSettime64};
    use guest_pv_shim::dom0_abi::sysctl::{PhysInfo, SysctlCmd};

    let own_frame = si.console.domu_mfn();
    let mut unbound = EvtchnAllocUnbound {
        dom: 0,
        remote_dom: 0x7FF0,
        port: 0,
    };
    let mut extents = [0u64; 1];
    let mut settime = PlatformOp::new(PlatformCmd::Settime64, &XenpfSettime64::default());
    let mut cpus = XenMc::new(McaCmd::Physcpuinfo, &XenMcPhyscpuinfo::default());
    let results = [
        (
            "domctl getdomaininfo of dom0",
            hypercall::domctl(DomctlCmd::GetDomainInfo, 0, &NoPayload).0,
        ),
        (
            "domctl pausedomain of dom0",
            hypercall::domctl(DomctlCmd::PauseDomain, 0, &NoPayload).0,
        ),
        (
            "domctl destroydomain of dom0",
            hypercall::domctl(DomctlCmd::DestroyDomain, 0, &NoPayload).0,
        ),
        (
            "sysctl physinfo",
            hypercall::sysctl(SysctlCmd::PhysInfo, &PhysInfo::default()).0,
        ),
        (
            "platform_op settime64",
            hypercall::platform_op(&mut settime),
        ),
        ("mca physcpuinfo", hypercall::mca(&mut cpus)),
        (
            "console_io write",
            hypercall::console_write(b"a domU must not write here\r\n"),
        ),
        (
            "remote_shutdown of dom0",
            hypercall::sched_remote_shutdown(0, ShutdownReason::Poweroff as u32),
        ),
        (
            "alloc_unbound in dom0",
            hypercall::evtchn_alloc_unbound(&mut unbound),
        ),
        (
            "populate_physmap for dom0",
            hypercall::populate_physmap(&mut extents, 0, 0),
        ),
        (
            "update_va_mapping_otherdomain with dom0",
            mm::map_foreign_window(PROBE_WINDOW, 0, own_frame, mm::PTE_RW),
        ),
        (
            "mmu_update with foreigndom dom0",
            mm::map_foreign_window_mmu(PROBE_WINDOW, 0, own_frame, mm::PTE_RW),
        ),
    ];
    for (what, ret) in results {
        let _ = core::fmt::Write::write_fmt(console, format_args!("check: {what} = {ret}\r\n"));
    }
    probe_devices(console);
    probe_exchange(console);
}

/// `XENMEM_exchange` of frames this domain does not own: frame 0 (the
/// firmware's), the highest frame below `maximum_ram_page` that is not
/// its own (dom0's or free), one past it, and a chunk of a frame of its
/// own with one it does not own. Each is `EINVAL` with nothing exchanged
/// (`check: <what> = <result> <nr_exchanged>`); the domain keeps its
/// frame (given back afterwards).
fn probe_exchange(console: &mut Console) {
    use guest_pv_shim::dom0_abi::memory::{MemoryOpCmd, XenMemoryExchange, XenMemoryReservation};

    const SELF: u16 = 0x7FF0;
    let list = |extents: &mut [u64], order: u32| XenMemoryReservation {
        extent_start: extents.as_mut_ptr() as u64,
        nr_extents: extents.len() as u64,
        extent_order: order,
        mem_flags: 0,
        domid: SELF,
        pad: [0; 6],
    };
    let exchange = |ins: &mut [u64], out_order: u32| {
        let mut out = [0u64];
        let mut arg = XenMemoryExchange {
            input: list(ins, 0),
            output: list(&mut out, out_order),
            nr_exchanged: 0,
        };
        // SAFETY: every `in` list holds a frame this domain does not own,
        // which the hypervisor must refuse, and at most the one frame of
        // its own got below, which no code uses.
        let ret = unsafe { hypercall::memory_exchange(&mut arg) };
        (ret, arg.nr_exchanged)
    };
    let max = u64::try_from(hypercall::maximum_ram_page()).unwrap_or(0);
    let foreign = (max.saturating_sub(64)..max)
        .rev()
        .find(|&mfn| mm::pfn_to_mfn(mm::m2p(mfn)) != Some(mfn))
        .unwrap_or(0);
    let mut report = |what: &str, (ret, done): (i64, u64)| {
        let _ = core::fmt::Write::write_fmt(
            console,
            format_args!("check: exchange of {what} = {ret} {done}\r\n"),
        );
    };
    for (what, mfn) in [
        ("frame 0", 0),
        ("the last frame below maximum_ram_page not its own", foreign),
        ("the frame at maximum_ram_page", max),
    ] {
        report(what, exchange(&mut [mfn], 0));
    }
    let mut spare = [0u64];
    // SAFETY: a new frame; nothing uses it.
    let got =
        unsafe { hypercall::reservation(MemoryOpCmd::IncreaseReservation, &mut spare, 0, 0, SELF) };
    if got == 1 {
        report(
            "its own frame with frame 0 in one chunk",
            exchange(&mut [spare[0], 0], 1),
        );
        // SAFETY: the frame got above, which nothing uses: given back.
        let back = unsafe {
            hypercall::reservation(MemoryOpCmd::DecreaseReservation, &mut spare, 0, 0, SELF)
        };
        report("its own frame given back afterwards", (back, 0));
    }
}

/// The device side of the probe: a domain without ports, IRQs or I/O
/// memory gets all ones from ports (even with a virtual IOPL), no PCI
/// configuration space, no PIRQ and no mapping of the hypervisor's local
/// APIC through `DOMID_IO`.
fn probe_devices(console: &mut Console) {
    use guest_pv_shim::io::{self, Width};

    const DOMID_SELF: u16 = 0x7FF0;
    const DOMID_IO: u16 = 0x7FF1;
    const LOCAL_APIC_FRAME: u64 = 0xfee00;
    let code = |r: Result<u32, i64>| r.map_or_else(|e| e, |_| 0);
    let results = [
        ("set_iopl 1", io::set_iopl(1)),
        ("map_pirq of GSI 8", code(io::map_gsi(DOMID_SELF, 8, 8))),
        ("unmap_pirq 8", io::unmap_pirq(DOMID_SELF, 8)),
        ("bind_pirq 8", code(io::bind_pirq(8, 0))),
        ("setup_gsi 8", io::setup_gsi(8, 0, 0)),
        ("irq_status_query 8", code(io::irq_status_query(8))),
        ("irq_status_query 1000", code(io::irq_status_query(1000))),
        (
            "mmu_update of the local APIC with DOMID_IO",
            mm::map_foreign_window_mmu(PROBE_WINDOW, DOMID_IO, LOCAL_APIC_FRAME, mm::PTE_RW),
        ),
    ];
    for (what, ret) in results {
        let _ = core::fmt::Write::write_fmt(console, format_args!("check: {what} = {ret}\r\n"));
    }
    for (what, port, width) in [
        ("inb 0x81", 0x81, Width::Byte),
        ("inb 0x71", 0x71, Width::Byte),
        ("inl 0xcfc", 0xcfc, Width::Dword),
    ] {
        let value = io::port_in(port, width).map_or(-1, i64::from);
        let _ =
            core::fmt::Write::write_fmt(console, format_args!("check: {what} = {value:#x}\r\n"));
    }
}

/// Sets up this domain's grant table (one frame): the call's result, its
/// status and the frame.
pub fn own_grant_table() -> (i64, i16, u64) {
    use guest_pv_shim::dom0_abi::grant_table::GnttabSetupTable;
    let mut frame = [0u64; 1];
    let mut setup = GnttabSetupTable {
        dom: 0x7FF0,
        nr_frames: 1,
        frame_list: frame.as_mut_ptr() as u64,
        ..GnttabSetupTable::default()
    };
    let ret = hypercall::gnttab_setup_table(&mut setup);
    (ret, setup.status, frame[0])
}

/// Windows of the grant test: the table's first frame and the two pages.
/// (The xenstore checks use window 2.)
const TABLE_WINDOW: usize = 5;
const PAGE_WINDOWS: [usize; 2] = [6, 7];
/// The references granted: one dom0 maps writable and gives back, one it
/// keeps mapped (read-only) past this domain's end.
const GREFS: [u32; 2] = [8, 9];
/// What the pages start with; dom0 stores its complement at word 1 of the
/// first through its mapping.
const GRANT_PATTERN: u64 = 0x6772_616E_7465_6421;
/// `GTF_reading | GTF_writing`.
const IN_USE: u32 = (1 << 3) | (1 << 4);

/// The flags and `domid` word of entry `gref` (table mapped at
/// [`TABLE_WINDOW`]).
fn entry_word(gref: u32) -> &'static AtomicU32 {
    let va = mm::window_va(TABLE_WINDOW) + u64::from(gref) * 8;
    // SAFETY: the table frame is mapped writable at TABLE_WINDOW for the
    // rest of the domain's life and holds no Rust value; the word is
    // 4-aligned and shared with the hypervisor, hence the atomic.
    unsafe { AtomicU32::from_ptr(va as *mut u32) }
}

/// Waits until `done` holds, for at most [`PATIENCE_NS`]
/// (`shared::wait_for`); false if it never does.
fn wait_for(port: Option<u32>, done: impl FnMut() -> bool) -> bool {
    guest_pv_shim::shared::wait_for(port, PATIENCE_NS, done)
}

/// The granter's side of the two-domain grant test. Each step is a
/// `check:` line (dom0 makes them its checks, compared with Xen 4.17);
/// `grant: offer <a> <b>` asks dom0 to map the grants, `grant: tried`
/// tells it the revocation was attempted while mapped.
fn grant(console: &mut Console, si: &StartInfo) -> core::fmt::Result {
    use core::fmt::Write;

    let (ret, status, frame) = own_grant_table();
    writeln!(console, "check: setup_table = {ret}/{status}\r")?;
    let (Some(a), Some(b)) = (mm::alloc_frame(), mm::alloc_frame()) else {
        return writeln!(console, "check: scratch frames = none\r");
    };
    let mapped = [
        mm::map_window(TABLE_WINDOW, frame, mm::PTE_RW),
        mm::map_window(PAGE_WINDOWS[0], a.mfn, mm::PTE_RW),
        mm::map_window(PAGE_WINDOWS[1], b.mfn, mm::PTE_RW),
    ];
    writeln!(console, "check: table and pages mapped = {mapped:?}\r")?;
    if mapped != [0; 3] {
        return Ok(());
    }
    // The toolstack seeded entries 0 (console) and 1 (xenstore) for dom0.
    let seeded = [(0, si.console.domu_mfn()), (1, si.store_mfn)].map(|(gref, mfn)| {
        // flags `GTF_permit_access` and domid 0 in the first word.
        mm::window_read_u32(TABLE_WINDOW, gref * 8) == 1
            && u64::from(mm::window_read_u32(TABLE_WINDOW, gref * 8 + 4)) == mfn
    });
    writeln!(
        console,
        "check: reserved grants 0 and 1 seeded for dom0 = {seeded:?}\r"
    )?;
    mm::fill_window(PAGE_WINDOWS[0], &[GRANT_PATTERN, 0]);
    mm::fill_window(PAGE_WINDOWS[1], &[GRANT_PATTERN]);
    for (gref, page) in GREFS.iter().zip([a, b]) {
        let frame = u32::try_from(page.mfn).unwrap_or(0);
        mm::window_write_u32(TABLE_WINDOW, u64::from(*gref) * 8 + 4, frame);
        fence(Ordering::Release);
        // domid 0 (dom0), GTF_permit_access.
        entry_word(*gref).store(1, Ordering::Release);
    }
    writeln!(console, "grant: offer {} {}\r", GREFS[0], GREFS[1])?;
    let first = entry_word(GREFS[0]);
    let mapped = wait_for(None, || first.load(Ordering::Acquire) & IN_USE == IN_USE);
    writeln!(console, "check: dom0 maps grant 8 writable = {mapped}\r")?;
    let stored = wait_for(None, || {
        mm::window_read(PAGE_WINDOWS[0], 1) == !GRANT_PATTERN
    });
    writeln!(
        console,
        "check: dom0's store through its mapping arrived = {stored}\r"
    )?;
    let seen = first.load(Ordering::Acquire);
    let revoked = first
        .compare_exchange(seen & !IN_USE, 0, Ordering::AcqRel, Ordering::Acquire)
        .is_ok();
    writeln!(
        console,
        "check: revocation while dom0 maps it succeeds = {revoked}\r"
    )?;
    writeln!(console, "grant: tried\r")?;
    let idle = wait_for(None, || first.load(Ordering::Acquire) & IN_USE == 0);
    writeln!(
        console,
        "check: grant 8 idle once dom0 unmapped it = {idle}\r"
    )?;
    let revoked = first
        .compare_exchange(1, 0, Ordering::AcqRel, Ordering::Acquire)
        .is_ok();
    writeln!(
        console,
        "check: revocation after the unmap succeeds = {revoked}\r"
    )?;
    let kept = entry_word(GREFS[1]).load(Ordering::Acquire) & 0xFFFF;
    writeln!(console, "check: grant 9 flags at shutdown = {kept:#x}\r")
}

/// `input`: asks for lines on its console (typed at dom0's `console`
/// attach) and reports each, until `bye` or a minute without one.
fn typed_lines(console: &mut Console) {
    use core::fmt::Write;
    let mapped = guest_pv_shim::shared::map();
    let _ = writeln!(console, "domu-demo: type lines, then bye\r");
    let mut line = [0u8; 80];
    loop {
        let got = (mapped == 0)
            .then(|| console.read_line(&mut line, 60_000_000_000))
            .flatten();
        let Some(n) = got else {
            let _ = writeln!(console, "check: console input = none\r");
            return;
        };
        let text = core::str::from_utf8(&line[..n]).unwrap_or("(not UTF-8)");
        let _ = writeln!(console, "check: console input = {text:?}\r");
        if text == "bye" {
            return;
        }
    }
}

fn demo_main(si: &'static StartInfo) {
    // Every wait for dom0 reads the clock in shared_info.
    let _ = guest_pv_shim::shared::map();
    let reason = if cmdline::has_flag(si.cmdline(), b"crash") {
        ShutdownReason::Crash
    } else {
        ShutdownReason::Poweroff
    };
    if let Some(mut console) = guest_pv_shim::console::ring() {
        let _ = core::fmt::Write::write_fmt(
            &mut console,
            format_args!(
                "domu-demo: hello from a PV domU\r\ndomu-demo: {} pages, start_info flags {:#x}, \
                 command line {:?}\r\n",
                si.nr_pages,
                si.flags,
                core::str::from_utf8(si.cmdline()).unwrap_or("?"),
            ),
        );
        if cmdline::has_flag(si.cmdline(), b"probe") {
            probe(&mut console, si);
        }
        if cmdline::has_flag(si.cmdline(), b"xenstore") {
            xenstore::checks(&mut console, si);
        }
        if cmdline::has_flag(si.cmdline(), b"grant") {
            let _ = grant(&mut console, si);
        }
        if cmdline::has_flag(si.cmdline(), b"blk") {
            blk::checks(&mut console, si);
        }
        if cmdline::has_flag(si.cmdline(), b"disk") {
            disk::run(&mut console, si);
        }
        if cmdline::has_flag(si.cmdline(), b"blkhostile") {
            blk::hostile(&mut console, si);
        }
        if cmdline::has_flag(si.cmdline(), b"net") {
            net::run(&mut console, si);
        }
        if cmdline::has_flag(si.cmdline(), b"input") {
            typed_lines(&mut console);
        }
        if let Some(peer) =
            events::number(si.cmdline(), b"copy").and_then(|n| u16::try_from(n).ok())
        {
            let _ = copy::run(&mut console, si.cmdline(), peer);
        }
        if let Some(peer) =
            events::number(si.cmdline(), b"hold").and_then(|n| u16::try_from(n).ok())
        {
            let _ = copy::hold(&mut console, peer);
        }
        if cmdline::has_flag(si.cmdline(), b"pong") {
            let _ = events::pong(&mut console, si.cmdline());
        }
        if let Some(rounds) =
            events::number(si.cmdline(), b"xsread").and_then(|n| u32::try_from(n).ok())
        {
            xenstore::read_bench(&mut console, si, rounds);
        }
        let _ = events::spin(&mut console, si.cmdline());
        if cmdline::has_flag(si.cmdline(), b"idle") {
            events::idle(console.port());
        }
        let _ = core::fmt::Write::write_fmt(
            &mut console,
            format_args!("domu-demo: shutting down: {}\r\n", reason.name()),
        );
        console.drained();
    }
    hypercall::shutdown(reason)
}
