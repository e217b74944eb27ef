//! `pirq`: physical interrupts as event channels, as Xen 4.17 gives them
//! to a PV dom0.
//!
//! Checks:
//! - `PHYSDEVOP_irq_status_query`: the first PIRQ it refuses (`EINVAL`,
//!   dom0's `nr_pirqs`), and the flags of a PIRQ below it (needs EOI);
//! - `PHYSDEVOP_map_pirq` errors: an unknown type, a GSI out of range, a
//!   domain that does not exist, a PIRQ out of range; MSI for a device
//!   that is not there;
//! - `PHYSDEVOP_setup_gsi` out of range, and for a GSI already set up;
//! - `PHYSDEVOP_alloc_irq_vector` (Linux calls it for each GSI it binds)
//!   answers the IRQ as the vector, for a GSI and past them, and an
//!   unreadable argument is `EFAULT`;
//! - `EVTCHNOP_bind_pirq` errors: a PIRQ out of range, one not mapped, one
//!   bound twice, the line the hypervisor's console uses (`EBUSY`);
//! - `PHYSDEVOP_pirq_eoi_gmfn_v2`: a frame not the caller's is `EINVAL`,
//!   its own page is taken once (`EBUSY` the second time);
//! - end to end: the CMOS RTC's periodic interrupt (ISA IRQ 8, GSI 8)
//!   mapped to PIRQ 8 and bound: events arrive, are acknowledged at the
//!   RTC (register C) and with `PHYSDEVOP_eoi`, and more arrive; after
//!   `close` none does; `unmap_pirq` then works once (`EINVAL` after) and
//!   `bind_pirq` is refused (`EPERM`); the RTC's line is edge-triggered,
//!   so its bit in the EOI bitmap stays clear.

use guest_pv_shim::dom0_abi::physdev::{
    MAP_PIRQ_TYPE_GSI, MAP_PIRQ_TYPE_MSI, PhysdevMapPirq, PhysdevOp, XENIRQSTAT_NEEDS_EOI,
};
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::io::{self, Width};
use guest_pv_shim::{hypercall, mm, report, shared};

use crate::support;

/// The RTC's interrupt (ISA IRQ 8, identity-mapped on QEMU's q35).
const RTC_GSI: i32 = 8;
/// The console UART's interrupt (COM1, ISA IRQ 4).
const COM1_GSI: i32 = 4;
/// RTC registers.
const RTC_A: u8 = 0x0a;
const RTC_B: u8 = 0x0b;
const RTC_C: u8 = 0x0c;
/// Register B: periodic interrupt enable.
const RTC_PIE: u8 = 1 << 6;
/// Register C: interrupt request and periodic flag.
const RTC_IRQF_PF: u8 = 0xc0;
/// Register A: the 32.768 kHz time base with rate 11 (32 Hz).
const RTC_32HZ: u8 = 0x2b;

pub fn run(_start_info: &'static StartInfo) {
    if !support::traps() {
        return;
    }
    report::check_ret("set_iopl 1", io::set_iopl(1), 0);
    status_query();
    map_errors();
    setup_gsi();
    alloc_irq_vector();
    bind_errors();
    eoi_map();
    rtc_interrupts();
}

fn alloc_irq_vector() {
    for irq in [1, 9, 23, 500] {
        report::check_eq(
            format_args!("alloc_irq_vector {irq}"),
            io::alloc_irq_vector(irq),
            Ok(irq),
        );
    }
    report::check_ret(
        "alloc_irq_vector of an unreadable argument",
        // SAFETY: the hypervisor only reads (and fails to read) page 0.
        unsafe { hypercall::physdev_op_raw(PhysdevOp::AllocIrqVector as u64, 0) },
        -14,
    );
}

/// The EOI bitmap page: one page-aligned frame of this kernel.
#[repr(C, align(4096))]
struct Page([u64; 512]);
static mut EOI_MAP: Page = Page([0; 512]);

fn eoi_map() {
    report::check_eq(
        "pirq_eoi_gmfn_v2 of a frame not ours",
        io::pirq_eoi_gmfn_v2(0xf_ffff_ffff),
        -22,
    );
    let Some(mfn) = mm::virt_to_mfn(&raw const EOI_MAP as u64) else {
        report::fail("pirq_eoi_gmfn_v2 of our page", format_args!("no MFN"));
        return;
    };
    report::check_eq("pirq_eoi_gmfn_v2 of our page", io::pirq_eoi_gmfn_v2(mfn), 0);
    report::check_eq("pirq_eoi_gmfn_v2 again", io::pirq_eoi_gmfn_v2(mfn), -16);
}

fn eoi_bit(pirq: u32) -> bool {
    let map = &raw const EOI_MAP;
    // SAFETY: a plain read of this kernel's own page, which the hypervisor
    // may change at any time (hence the volatile read).
    let word = unsafe { core::ptr::read_volatile(&raw const (*map).0[(pirq / 64) as usize]) };
    word & (1 << (pirq % 64)) != 0
}

fn status_query() {
    // The first PIRQ refused, by bisection (status_query answers EINVAL
    // exactly from nr_pirqs on).
    let (mut ok, mut refused) = (0u32, 1u32 << 20);
    while refused - ok > 1 {
        let mid = ok + (refused - ok) / 2;
        if io::irq_status_query(mid).is_ok() {
            ok = mid;
        } else {
            refused = mid;
        }
    }
    report::ok_value("first PIRQ irq_status_query refuses", refused);
    for irq in [refused, u32::MAX, 0x8000_0000] {
        report::check_eq(
            format_args!("irq_status_query {irq:#x}"),
            io::irq_status_query(irq),
            Err(-22),
        );
    }
    for irq in [0, 8, 30] {
        match io::irq_status_query(irq) {
            Ok(flags) => report::ok_value(
                format_args!("irq_status_query {irq} flags"),
                format_args!(
                    "{flags:#x} (needs EOI: {})",
                    flags & XENIRQSTAT_NEEDS_EOI != 0
                ),
            ),
            Err(e) => report::fail(
                format_args!("irq_status_query {irq} flags"),
                format_args!("{e}"),
            ),
        }
    }
}

fn map_ret(name: &str, map: PhysdevMapPirq) {
    let mut map = map;
    let ret = io::map_pirq(&mut map);
    report::ok_value(format_args!("map_pirq {name}"), ret);
}

fn map_errors() {
    let gsi = |index, pirq| PhysdevMapPirq {
        domid: 0x7ff0,
        kind: MAP_PIRQ_TYPE_GSI,
        index,
        pirq,
        ..PhysdevMapPirq::default()
    };
    map_ret(
        "of type 7",
        PhysdevMapPirq {
            kind: 7,
            ..gsi(8, 8)
        },
    );
    map_ret("of GSI -1", gsi(-1, 8));
    map_ret("of GSI 1000", gsi(1000, -1));
    map_ret("of GSI 24", gsi(24, -1));
    map_ret(
        "for domain 0x3ff",
        PhysdevMapPirq {
            domid: 0x3ff,
            ..gsi(8, 8)
        },
    );
    map_ret("at PIRQ 0x100000", gsi(8, 0x10_0000));
    map_ret(
        "of MSI for an absent device",
        PhysdevMapPirq {
            kind: MAP_PIRQ_TYPE_MSI,
            index: -1,
            pirq: -1,
            bus: 0,
            devfn: 0xf8,
            ..gsi(0, 0)
        },
    );
    report::check_eq(
        "unmap_pirq of an unmapped PIRQ",
        io::unmap_pirq(0x7ff0, 30),
        -22,
    );
    report::check_eq("eoi of an untouched PIRQ", io::eoi(31), -22);
}

fn setup_gsi() {
    report::ok_value("setup_gsi -1", io::setup_gsi(-1, 0, 0));
    report::ok_value("setup_gsi 1000", io::setup_gsi(1000, 0, 0));
    report::ok_value("setup_gsi 8 (ISA, edge high)", io::setup_gsi(RTC_GSI, 0, 0));
    report::ok_value("setup_gsi 22 (level low)", io::setup_gsi(22, 1, 1));
    report::ok_value("setup_gsi 22 again", io::setup_gsi(22, 1, 1));
}

fn bind_errors() {
    report::check_eq("bind_pirq 0x100000", io::bind_pirq(0x10_0000, 0), Err(-22));
    report::check_eq(
        "bind_pirq of an unmapped PIRQ",
        io::bind_pirq(30, 0),
        Err(-1),
    );
    match io::map_gsi(0x7ff0, COM1_GSI, COM1_GSI) {
        Ok(pirq) => {
            report::ok_value("map_pirq of COM1's GSI", pirq);
            report::ok_value(
                "bind_pirq of the console's line",
                match io::bind_pirq(pirq, 0) {
                    Ok(_) => 0,
                    Err(e) => e,
                },
            );
            report::check_eq("unmap_pirq of COM1's PIRQ", io::unmap_pirq(0x7ff0, pirq), 0);
        }
        Err(e) => report::fail("map_pirq of COM1's GSI", format_args!("{e}")),
    }
}

fn rtc_read(index: u8) -> u8 {
    let _ = io::port_out(0x70, Width::Byte, u32::from(index));
    io::port_in(0x71, Width::Byte).map_or(0xff, |v| v.to_le_bytes()[0])
}

fn rtc_write(index: u8, value: u8) {
    let _ = io::port_out(0x70, Width::Byte, u32::from(index));
    let _ = io::port_out(0x71, Width::Byte, u32::from(value));
}

/// Waits up to 500 ms for `port`; clears it and returns whether it came.
fn wait_event(port: u32) -> bool {
    let deadline = shared::system_time_of(0).unwrap_or(0) + 500_000_000;
    while shared::evtchn_pending(port) != Some(true) {
        let now = shared::system_time_of(0).unwrap_or(u64::MAX);
        if now >= deadline {
            return false;
        }
        hypercall::sched_poll(&[port], deadline);
    }
    shared::clear_evtchn_pending(port);
    true
}

fn rtc_interrupts() {
    let pirq = match io::map_gsi(0x7ff0, RTC_GSI, RTC_GSI) {
        Ok(pirq) => {
            report::ok_value("map_pirq of GSI 8 at PIRQ 8", pirq);
            pirq
        }
        Err(e) => {
            report::fail("map_pirq of GSI 8 at PIRQ 8", format_args!("{e}"));
            return;
        }
    };
    report::ok_value(
        "map_pirq of GSI 8 again",
        io::map_gsi(0x7ff0, RTC_GSI, RTC_GSI).map_or_else(|e| e, i64::from),
    );
    report::ok_value(
        "map_pirq of GSI 8 at another PIRQ",
        io::map_gsi(0x7ff0, RTC_GSI, 40).map_or_else(|e| e, i64::from),
    );
    let Ok(port) = io::bind_pirq(pirq, 0) else {
        report::fail("bind_pirq 8", format_args!("refused"));
        return;
    };
    report::ok("bind_pirq 8");
    report::check_eq("bind_pirq 8 twice", io::bind_pirq(pirq, 0), Err(-17));
    shared::set_evtchn_mask(port, false);
    rtc_write(RTC_A, RTC_32HZ);
    rtc_read(RTC_C);
    let b = rtc_read(RTC_B);
    rtc_write(RTC_B, b | RTC_PIE);
    for n in 1..=3 {
        let came = wait_event(port);
        report::check(
            format_args!("periodic interrupt {n} arrives"),
            came,
            format_args!("no event in 500 ms"),
        );
        if !came {
            break;
        }
        report::check_eq(
            format_args!("register C after interrupt {n}"),
            rtc_read(RTC_C) & RTC_IRQF_PF,
            RTC_IRQF_PF,
        );
        report::check_eq(
            format_args!("EOI bitmap bit after interrupt {n} (edge)"),
            eoi_bit(pirq),
            false,
        );
        report::check_eq(format_args!("eoi after interrupt {n}"), io::eoi(pirq), 0);
    }
    report::check_eq("close of the PIRQ's port", hypercall::evtchn_close(port), 0);
    rtc_read(RTC_C);
    let came = wait_event(port);
    report::check("no event after close", !came, format_args!("an event came"));
    rtc_write(RTC_B, b & !RTC_PIE);
    rtc_read(RTC_C);
    report::check_eq("unmap_pirq 8", io::unmap_pirq(0x7ff0, pirq), 0);
    report::check_eq("unmap_pirq 8 again", io::unmap_pirq(0x7ff0, pirq), -22);
    report::check_eq("bind_pirq 8 after unmap", io::bind_pirq(pirq, 0), Err(-1));
}
