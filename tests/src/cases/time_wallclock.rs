//! `time_wallclock`: the wall clock in `shared_info` at boot, and setting
//! it with `platform_op` (`XENPF_settime64`, `XENPF_settime32`), as Xen
//! 4.17 does it.
//!
//! The wall clock (`wc_sec_hi:wc_sec`, `wc_nsec`) is the wall time at
//! system time 0; a guest adds its system time to get the time now. Why it
//! matters: every kernel reads the date at boot from it, and dom0 keeps
//! the hypervisor's clock right with `settime` (NTP).
//!
//! Checks (the values reported are the same on both hypervisors; run-
//! dependent times are only shown as observations):
//! - at boot: `wc_version` is even, the wall clock lies between
//!   2024-01-01 and 2100-01-01 with `wc_nsec` below 10^9, and wall clock
//!   plus system time advances exactly as the system time does;
//! - `settime64` returns 0 and the wall clock becomes `secs`.`nsecs` minus
//!   `system_time`, with `wc_version` advanced by 2: exactly so for
//!   system time 0, seconds beyond 32 bits (`wc_sec_hi`), `nsecs` of a
//!   second or more (carried, no error), a `system_time` after the time
//!   set and seconds whose nanoseconds overflow 64 bits (both wrap modulo
//!   2^64 ns), and for the current system time (read back to the ns);
//! - `settime32` does the same with 32-bit seconds;
//! - `mbz` not zero: `EINVAL`; an `interface_version` other than
//!   0x03000001: `EACCES`, also when `mbz` or `cmd` is bad as well (the
//!   version is checked first); `cmd` values that are no command: `ENOSYS`;
//!   an unmapped or hypervisor address, or an operation whose 136 bytes
//!   run into an unmapped page (its first 32 bytes, all settime64 uses,
//!   readable): `EFAULT`. None of these changes the wall clock, and no
//!   call writes into the operation;
//! - finally the boot wall clock is set back.

use core::fmt::Arguments;

use guest_pv_shim::dom0_abi::Errno;
use guest_pv_shim::dom0_abi::platform::{
    PlatformCmd, PlatformOp, XENPF_INTERFACE_VERSION, XenpfSettime32, XenpfSettime64,
};
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::dom0_abi::wire::Wire;
use guest_pv_shim::hypercall::{platform_op, platform_op_raw};
use guest_pv_shim::shared::{self, Wallclock};
use guest_pv_shim::{mm, report};

use super::BAD_POINTERS;

/// Nanoseconds in a second.
const NS: u64 = 1_000_000_000;
/// 2024-01-01 00:00:00 UTC.
const JAN_2024: u64 = 1_704_067_200;
/// 2100-01-01 00:00:00 UTC.
const JAN_2100: u64 = 4_102_444_800;
/// System time the boot check waits to pass (1 ms).
const WAIT_NS: u64 = 1_000_000;
/// Windows for the operation that runs into an unmapped page.
const MAPPED_WINDOW: usize = 0;
const UNMAPPED_WINDOW: usize = 1;

pub fn run(_start_info: &'static StartInfo) {
    let ret = shared::map();
    if ret != 0 {
        report::error(
            "map shared_info",
            format_args!("update_va_mapping: {}", report::Ret(ret)),
        );
        return;
    }
    let Some(boot) = boot_wallclock() else {
        return;
    };
    settime64();
    settime32();
    settime_now();
    errors();
    let ret = settime64_ret(boot.sec, boot.nsec, 0);
    let now = shared::wallclock();
    report::check(
        "settime64 back to the boot wall clock",
        ret == 0 && now.map(|w| (w.sec, w.nsec)) == Some((boot.sec, boot.nsec)),
        format_args!("returned {}, wall clock {now:?}", report::Ret(ret)),
    );
}

/// The current system time (ns), or an `ERROR`.
fn system_time() -> Option<u64> {
    let now = shared::system_time_of(0);
    if now.is_none() {
        report::error("system time", format_args!("no vcpu_info time record"));
    }
    now
}

/// The wall clock, or an `ERROR`.
fn wallclock() -> Option<Wallclock> {
    let wc = shared::wallclock();
    if wc.is_none() {
        report::error("wall clock", format_args!("shared_info is not mapped"));
    }
    wc
}

/// The checks of the wall clock the hypervisor set at boot; returns it.
fn boot_wallclock() -> Option<Wallclock> {
    let version = shared::wc_version()?;
    report::check(
        "wc_version is even at boot",
        version & 1 == 0,
        format_args!("wc_version {version}"),
    );
    let wc = wallclock()?;
    report::check_observed(
        "the boot wall clock lies between 2024 and 2100",
        (JAN_2024..JAN_2100).contains(&wc.sec),
        format_args!("wc_sec {}, wc_nsec {}", wc.sec, wc.nsec),
    );
    report::check(
        "wc_nsec is below one second",
        u64::from(wc.nsec) < NS,
        format_args!("wc_nsec {}", wc.nsec),
    );
    let start = system_time()?;
    let mut end = start;
    // The system time comes from the TSC: it advances without hypercalls.
    for _ in 0..100_000_000u64 {
        end = system_time()?;
        if end.saturating_sub(start) >= WAIT_NS {
            break;
        }
        core::hint::spin_loop();
    }
    let later = wallclock()?;
    report::check_observed(
        "wall clock plus system time advances as the system time",
        later == wc
            && end.saturating_sub(start) >= WAIT_NS
            && later.ns_at(end).wrapping_sub(wc.ns_at(start)) == end - start,
        format_args!("system time {start} -> {end}, wall clock {wc:?} -> {later:?}"),
    );
    Some(wc)
}

/// A `settime64` operation.
fn op64(secs: u64, nsecs: u32, mbz: u32, system_time: u64) -> PlatformOp {
    PlatformOp::new(
        PlatformCmd::Settime64,
        &XenpfSettime64 {
            secs,
            nsecs,
            mbz,
            system_time,
        },
    )
}

/// Issues `op` and reports whether the hypervisor wrote into it (it must
/// not, for any command here).
fn issue(what: Arguments<'_>, mut op: PlatformOp) -> i64 {
    let before = op;
    let ret = platform_op(&mut op);
    report::check(
        format_args!("{what} leaves the operation as it was"),
        op == before,
        format_args!("{before:?} became {op:?}"),
    );
    ret
}

/// `settime64` of `secs`.`nsecs` at system time `system_time`.
fn settime64_ret(secs: u64, nsecs: u32, system_time: u64) -> i64 {
    let mut op = op64(secs, nsecs, 0, system_time);
    platform_op(&mut op)
}

/// The wall clock Xen's arithmetic gives for `secs`.`nsecs` at system
/// time `system_time`: unsigned 64-bit nanoseconds, wrapping.
fn expected(secs: u64, nsecs: u32, system_time: u64) -> (u64, u32) {
    let ns = secs
        .wrapping_mul(NS)
        .wrapping_add(u64::from(nsecs))
        .wrapping_sub(system_time);
    (ns / NS, u32::try_from(ns % NS).unwrap_or(u32::MAX))
}

/// Runs a settime `op` that must succeed and checks the wall clock and
/// `wc_version` afterwards against `want`.
fn check_set(what: Arguments<'_>, op: PlatformOp, want: (u64, u32)) {
    let Some(before) = wallclock() else {
        return;
    };
    let ret = issue(what, op);
    report::check_ret(format_args!("{what} returns 0"), ret, 0);
    let Some(after) = wallclock() else {
        return;
    };
    report::check_eq(
        format_args!("{what}: wall clock (s, ns)"),
        (after.sec, after.nsec),
        want,
    );
    report::check_eq(
        format_args!("{what}: wc_version advances by"),
        after.version.wrapping_sub(before.version),
        2,
    );
}

fn settime64() {
    let cases: [(&str, u64, u32, u64); 5] = [
        ("settime64 at system time 0", 1_700_000_000, 5, 0),
        ("settime64 of seconds beyond 32 bits", 0x1_0000_0005, 0, 0),
        (
            "settime64 with nsecs 1.5e9",
            1_700_000_000,
            1_500_000_000,
            0,
        ),
        ("settime64 with nsecs u32::MAX", 1_700_000_000, u32::MAX, 0),
        ("settime64 of 1 s before system time 1 s", 0, 0, NS),
    ];
    for (what, secs, nsecs, system_time) in cases {
        check_set(
            format_args!("{what}"),
            op64(secs, nsecs, 0, system_time),
            expected(secs, nsecs, system_time),
        );
    }
    let secs = 1 << 40;
    check_set(
        format_args!("settime64 of 2^40 s (ns wrap 64 bits)"),
        op64(secs, 17, 0, 3),
        expected(secs, 17, 3),
    );
    let Some(after) = shared::wallclock() else {
        return;
    };
    report::check_eq(
        "wc_sec_hi after 2^40 s",
        after.sec >> 32,
        expected(secs, 17, 3).0 >> 32,
    );
}

fn settime32() {
    let set = XenpfSettime32 {
        secs: 1_800_000_000,
        nsecs: 7,
        system_time: 0,
    };
    check_set(
        format_args!("settime32 at system time 0"),
        PlatformOp::new(PlatformCmd::Settime32, &set),
        (1_800_000_000, 7),
    );
    let set = XenpfSettime32 {
        secs: u32::MAX,
        nsecs: 2_000_000_001,
        system_time: 5 * NS,
    };
    check_set(
        format_args!("settime32 of u32::MAX s with nsecs 2e9+1 at system time 5 s"),
        PlatformOp::new(PlatformCmd::Settime32, &set),
        expected(u64::from(u32::MAX), 2_000_000_001, 5 * NS),
    );
}

/// Sets the wall clock at the current system time and reads it back.
fn settime_now() {
    const SECS: u64 = 1_750_000_000;
    const NSECS: u32 = 123_456_789;
    let Some(now) = system_time() else {
        return;
    };
    let ret = settime64_ret(SECS, NSECS, now);
    report::check_ret("settime64 at the current system time returns 0", ret, 0);
    let (Some(wc), Some(later)) = (wallclock(), system_time()) else {
        return;
    };
    let set = SECS * NS + u64::from(NSECS);
    report::check_eq(
        "wall clock + that system time - the time set (ns)",
        wc.ns_at(now).wrapping_sub(set),
        0,
    );
    let elapsed = wc.ns_at(later).wrapping_sub(set);
    report::check_observed(
        "the wall time now is less than a second past the time set",
        elapsed < NS,
        format_args!("{elapsed} ns"),
    );
}

/// Runs `op`, which must fail with `want` and leave the wall clock as it
/// was.
fn check_refused(what: Arguments<'_>, op: PlatformOp, want: Errno) {
    let Some(before) = wallclock() else {
        return;
    };
    let ret = issue(what, op);
    report::check_ret(format_args!("{what} is {}", want.name()), ret, want.neg());
    let after = shared::wallclock();
    report::check(
        format_args!("{what} leaves the wall clock"),
        after == Some(before),
        format_args!("{before:?} became {after:?}"),
    );
}

fn errors() {
    for mbz in [1, 0x8000_0000, u32::MAX] {
        check_refused(
            format_args!("settime64 with mbz {mbz:#x}"),
            op64(1_700_000_000, 0, mbz, 0),
            Errno::EINVAL,
        );
    }
    for version in [0, XENPF_INTERFACE_VERSION - 1, XENPF_INTERFACE_VERSION + 1] {
        let mut op = op64(1_700_000_000, 0, 0, 0);
        op.interface_version = version;
        check_refused(
            format_args!("settime64 at interface version {version:#x}"),
            op,
            Errno::EACCES,
        );
    }
    let mut op = op64(1_700_000_000, 0, 1, 0);
    op.interface_version = 0;
    check_refused(format_args!("bad version and mbz"), op, Errno::EACCES);
    let mut op = op64(1_700_000_000, 0, 0, 0);
    op.cmd = 0;
    op.interface_version = 0;
    check_refused(format_args!("bad version and cmd 0"), op, Errno::EACCES);
    for cmd in [0, 1, 16, 18, 64, 1000, u32::MAX] {
        let mut op = op64(1_700_000_000, 0, 0, 0);
        op.cmd = cmd;
        check_refused(format_args!("cmd {cmd:#x}"), op, Errno::ENOSYS);
    }
    bad_pointers();
}

fn bad_pointers() {
    for &(what, ptr) in BAD_POINTERS {
        let before = shared::wallclock();
        // SAFETY: `ptr` is not Rust memory; the hypervisor must refuse it.
        let ret = unsafe { platform_op_raw(ptr) };
        report::check_ret(
            format_args!("platform_op at {what} is EFAULT"),
            ret,
            Errno::EFAULT.neg(),
        );
        report::check(
            format_args!("platform_op at {what} leaves the wall clock"),
            shared::wallclock() == before,
            format_args!("{before:?} became {:?}", shared::wallclock()),
        );
    }
    let ret = mm::unmap_window(UNMAPPED_WINDOW);
    if ret != 0 {
        report::error(
            "unmap window",
            format_args!("update_va_mapping: {}", report::Ret(ret)),
        );
        return;
    }
    // The 32 bytes of a settime64 operation end the mapped window; the
    // rest of the 136 lie in the unmapped one.
    let mut bytes = [0u8; PlatformOp::SIZE];
    let _ = op64(1_700_000_000, 0, 0, 0).to_wire(&mut bytes);
    let first = 512 - 4;
    for (index, chunk) in (first..512).zip(bytes.chunks_exact(8)) {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
        mm::window_write(MAPPED_WINDOW, index, word);
    }
    let at = mm::window_va(MAPPED_WINDOW) + first * 8;
    let before = shared::wallclock();
    // SAFETY: the operation lies in the windows, which no Rust code uses;
    // the hypervisor only reads it.
    let ret = unsafe { platform_op_raw(at) };
    report::check_ret(
        "settime64 running into an unmapped page is EFAULT",
        ret,
        Errno::EFAULT.neg(),
    );
    report::check(
        "settime64 running into an unmapped page leaves the wall clock",
        shared::wallclock() == before,
        format_args!("{before:?} became {:?}", shared::wallclock()),
    );
}
