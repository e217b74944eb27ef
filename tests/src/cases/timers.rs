//! Timers, blocking and polling: `timer_ops` (`VIRQ_TIMER` from each
//! timer operation, and their errors), `timer_user_mode` (a timer event
//! interrupting guest user mode), `time_monotonic` (system time read on
//! two vCPUs never goes backwards), `sched_block_poll` (`SCHEDOP_block`
//! and `SCHEDOP_poll`), `sched_watchdog` (its errors) and the two tests
//! that end the domain, `sched_watchdog_expiry` and
//! `sched_remote_shutdown`.
//!
//! Xen 4.17's answers, as these guests see them there:
//! - a PV vCPU starts with a 10 ms periodic timer; setting a periodic
//!   timer raises `VIRQ_TIMER` at once (a period has passed since the last
//!   event); periods under 1 ms are `EINVAL`;
//! - `set_timer_op` and `VCPUOP_set_singleshot_timer` arm the same
//!   one-shot timer; 0 cancels; a deadline 2^50 ns or more ahead fires
//!   after 100 ms instead (`set_timer_op` only); a past deadline replaces
//!   the armed one and fires at once; `VCPU_SSHOTTMR_future` is ignored;
//!   the singleshot calls work on the caller's own vCPU only (`EINVAL`);
//! - `SCHEDOP_block` clears the caller's upcall mask and returns once an
//!   event is pending (at once if one is); `SCHEDOP_poll` leaves the mask
//!   alone and returns when a polled port is pending or at its timeout,
//!   `EINVAL` for more than 128 ports or a port outside the buckets the
//!   domain has allocated;
//! - two watchdogs per domain (`EINVAL` for an id not in use). A third
//!   is refused: here with `-ENOSPC`; Xen 4.17 returns the same value
//!   zero-extended from 32 bits (4294967268), a positive number a guest
//!   would take for a watchdog id; an expired one shuts the domain down with reason
//!   watchdog; `remote_shutdown` needs an existing domain by id (`ESRCH`,
//!   also for `DOMID_SELF`).
//!
//! Times are system time from the vCPU's time record; the bounds are wide
//! (TCG on a loaded host stalls a guest for milliseconds at times), and
//! only the checks' outcomes are compared with Xen, never the times
//! themselves. "At once" means well before any timer armed could fire: a
//! call that wrongly slept would sleep for ever.

use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use guest_pv_shim::dom0_abi::Errno;
use guest_pv_shim::dom0_abi::event_channel::{EvtchnAllocUnbound, EvtchnBindVirq, Virq};
use guest_pv_shim::dom0_abi::sched::{SchedOp, SchedPoll, ShutdownReason};
use guest_pv_shim::dom0_abi::segment::FLAT_USER_CS;
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::dom0_abi::types::DomId;
use guest_pv_shim::dom0_abi::vcpu::{VCPU_SSHOTTMR_FUTURE, VcpuOpCmd};
use guest_pv_shim::hypercall::{self as hc};
use guest_pv_shim::traps::{self, Disposition, Trap, TrapFrame, UserEntry, VECTOR_EVENT};
use guest_pv_shim::{report, shared};

use super::BAD_POINTERS;
use crate::{support, user_code};

const MS: u64 = 1_000_000;

/// The `VIRQ_TIMER` port of vCPU 0.
static TIMER_PORT: AtomicU32 = AtomicU32::new(0);
/// Timer events taken by upcalls.
static TIMER_EVENTS: AtomicU64 = AtomicU64::new(0);

/// The CS of the context the last upcall interrupted.
static INTERRUPTED_CS: AtomicU64 = AtomicU64::new(0);

/// The upcall protocol for vCPU 0, counting the timer port's events; an
/// upcall that interrupts user mode also releases `user_wait`.
fn upcall_hook(frame: &mut TrapFrame, rec: &Trap) -> Disposition {
    if rec.vector != VECTOR_EVENT {
        return Disposition::Default;
    }
    let cs = frame.cs & 0xffff;
    INTERRUPTED_CS.store(cs, Ordering::SeqCst);
    if cs & 3 == 3 {
        let flag = (traps::user_data() + user_code::ARG) as *mut u64;
        // SAFETY: the user data page is the shim's, mapped writable for
        // the kernel too; `user_wait` only reads this word.
        unsafe { flag.write_volatile(0x7173) };
    }
    shared::take_pending_ports(0, |port| {
        if port == TIMER_PORT.load(Ordering::SeqCst) {
            TIMER_EVENTS.fetch_add(1, Ordering::SeqCst);
        }
    });
    Disposition::Return
}

fn now() -> u64 {
    shared::system_time_of(0).unwrap_or(0)
}

fn spin_until(deadline: u64) {
    while now() < deadline {
        core::hint::spin_loop();
    }
}

/// Spins for `ns` with upcalls enabled; returns the timer events taken.
fn events_during(ns: u64) -> u64 {
    let before = TIMER_EVENTS.load(Ordering::SeqCst);
    shared::set_upcall_mask(0);
    spin_until(now() + ns);
    shared::set_upcall_mask(1);
    TIMER_EVENTS.load(Ordering::SeqCst) - before
}

fn timer_pending() -> bool {
    shared::evtchn_pending(TIMER_PORT.load(Ordering::SeqCst)) == Some(true)
}

/// Clears what the timer port left pending (upcalls masked).
fn quiesce() {
    shared::set_upcall_mask(1);
    shared::clear_evtchn_pending(TIMER_PORT.load(Ordering::SeqCst));
    shared::take_pending_sel_of(0);
    shared::set_upcall_pending_of(0, 0);
}

/// Traps, the upcall hook, and `VIRQ_TIMER` bound on vCPU 0 with upcalls
/// masked; `false` (after an `ERROR` line) if any of it failed.
fn bind_timer() -> bool {
    if !support::traps() {
        return false;
    }
    shared::set_upcall_mask(1);
    traps::set_hook(Some(upcall_hook));
    let mut b = EvtchnBindVirq {
        virq: Virq::Timer as u32,
        vcpu: 0,
        port: 0,
    };
    let ret = hc::evtchn_bind_virq(&mut b);
    if ret != 0 {
        report::error("bind VIRQ_TIMER", format_args!("{}", report::Ret(ret)));
        return false;
    }
    TIMER_PORT.store(b.port, Ordering::SeqCst);
    true
}

/// Whether the timer port goes pending within `within` ns (upcalls
/// masked), and not before `not_before` ns from now.
fn fires_between(not_before: u64, within: u64) -> bool {
    let start = now();
    if not_before > 0 {
        spin_until(start + not_before);
        if timer_pending() {
            return false;
        }
    }
    while now() < start + within {
        if timer_pending() {
            return true;
        }
    }
    timer_pending()
}

/// Whether the timer port stays quiet for `ns` (upcalls masked).
fn quiet_for(ns: u64) -> bool {
    spin_until(now() + ns);
    !timer_pending()
}

/// `timer_ops`: `VIRQ_TIMER` from the periodic and one-shot timers.
pub fn ops(_start_info: &'static StartInfo) {
    if !bind_timer() {
        return;
    }
    let n = events_during(55 * MS);
    report::check(
        "a vCPU starts with a 10 ms periodic timer",
        (2..=8).contains(&n),
        format_args!("{n} timer events in 55 ms"),
    );
    report::check_ret("stop_periodic_timer", hc::vcpu_stop_periodic_timer(0), 0);
    quiesce();
    let n = events_during(40 * MS);
    report::check(
        "no timer events once it is stopped",
        n == 0,
        format_args!("{n} timer events in 40 ms"),
    );

    periodic();
    quiesce();
    one_shot();
    quiesce();
    singleshot();
    report::check_ret(
        "stop_periodic_timer again",
        hc::vcpu_stop_periodic_timer(0),
        0,
    );
}

fn periodic() {
    report::check_ret(
        "set_periodic_timer of 999999 ns is EINVAL",
        hc::vcpu_set_periodic_timer(0, MS - 1),
        Errno::EINVAL.neg(),
    );
    report::check_ret(
        "set_periodic_timer of vCPU 5 is ENOENT",
        hc::vcpu_set_periodic_timer(5, 10 * MS),
        Errno::ENOENT.neg(),
    );
    for &(what, ptr) in BAD_POINTERS {
        // SAFETY: `ptr` is not Rust memory; the call must fail.
        let ret = unsafe { hc::vcpu_op_raw(VcpuOpCmd::SetPeriodicTimer as u64, 0, ptr) };
        report::check_ret(
            format_args!("set_periodic_timer with {what} is EFAULT"),
            ret,
            Errno::EFAULT.neg(),
        );
    }
    quiesce();
    report::check_ret(
        "set_periodic_timer of 5 ms",
        hc::vcpu_set_periodic_timer(0, 5 * MS),
        0,
    );
    report::check_eq(
        "setting a periodic timer raises VIRQ_TIMER at once",
        timer_pending(),
        true,
    );
    let n = events_during(52 * MS);
    report::check(
        "a 5 ms periodic timer fires about every 5 ms",
        (4..=14).contains(&n),
        format_args!("{n} timer events in 52 ms"),
    );
    report::check_ret("stop_periodic_timer", hc::vcpu_stop_periodic_timer(0), 0);
    quiesce();
    report::check(
        "no timer event after it stops",
        quiet_for(20 * MS),
        format_args!("the timer port went pending"),
    );
    // The 1 ms minimum is accepted.
    report::check_ret(
        "set_periodic_timer of 1 ms",
        hc::vcpu_set_periodic_timer(0, MS),
        0,
    );
    report::check_ret("stop_periodic_timer", hc::vcpu_stop_periodic_timer(0), 0);
}

fn one_shot() {
    quiesce();
    report::check_ret(
        "set_timer_op 30 ms ahead",
        hc::set_timer_op(now() + 30 * MS),
        0,
    );
    report::check(
        "set_timer_op fires at its deadline",
        fires_between(2 * MS, 200 * MS),
        format_args!("pending {} at the wrong time", timer_pending()),
    );
    quiesce();
    report::check_ret("set_timer_op in the past", hc::set_timer_op(now() - MS), 0);
    report::check(
        "a past deadline fires at once",
        fires_between(0, 5 * MS),
        format_args!("not pending"),
    );
    quiesce();
    hc::set_timer_op(now() + 50 * MS);
    report::check_ret("set_timer_op(0) cancels", hc::set_timer_op(0), 0);
    report::check(
        "a cancelled timer stays quiet",
        quiet_for(80 * MS),
        format_args!("the timer port went pending"),
    );
    for (what, deadline) in [
        ("2^51 ns ahead", now() + (1 << 51)),
        ("negative", 1u64 << 63),
    ] {
        quiesce();
        report::check_ret(
            format_args!("set_timer_op {what}"),
            hc::set_timer_op(deadline),
            0,
        );
        report::check(
            format_args!("a deadline {what} fires after 100 ms instead"),
            fires_between(60 * MS, 300 * MS),
            format_args!("pending {} at the wrong time", timer_pending()),
        );
    }
}

fn singleshot() {
    report::check_ret(
        "set_singleshot_timer on another vCPU is EINVAL",
        hc::vcpu_set_singleshot_timer(1, now() + 5 * MS, 0),
        Errno::EINVAL.neg(),
    );
    report::check_ret(
        "stop_singleshot_timer on another vCPU is EINVAL",
        hc::vcpu_stop_singleshot_timer(1),
        Errno::EINVAL.neg(),
    );
    report::check_ret(
        "set_singleshot_timer of vCPU 5 is ENOENT",
        hc::vcpu_set_singleshot_timer(5, now() + 5 * MS, 0),
        Errno::ENOENT.neg(),
    );
    for &(what, ptr) in BAD_POINTERS {
        // SAFETY: `ptr` is not Rust memory; the call must fail.
        let ret = unsafe { hc::vcpu_op_raw(VcpuOpCmd::SetSingleshotTimer as u64, 0, ptr) };
        report::check_ret(
            format_args!("set_singleshot_timer with {what} is EFAULT"),
            ret,
            Errno::EFAULT.neg(),
        );
    }
    quiesce();
    report::check_ret(
        "set_singleshot_timer 30 ms ahead",
        hc::vcpu_set_singleshot_timer(0, now() + 30 * MS, 0),
        0,
    );
    report::check(
        "the singleshot timer fires at its deadline",
        fires_between(2 * MS, 200 * MS),
        format_args!("pending {} at the wrong time", timer_pending()),
    );
    for (what, flags) in [
        ("", 0),
        (" with VCPU_SSHOTTMR_future", VCPU_SSHOTTMR_FUTURE),
    ] {
        quiesce();
        report::check_ret(
            format_args!("set_singleshot_timer in the past{what}"),
            hc::vcpu_set_singleshot_timer(0, now() - MS, flags),
            0,
        );
        report::check_eq(
            format_args!("a past singleshot deadline{what} raises VIRQ_TIMER at once"),
            timer_pending(),
            true,
        );
    }
    quiesce();
    hc::vcpu_set_singleshot_timer(0, now() + 30 * MS, 0);
    hc::vcpu_set_singleshot_timer(0, now() - MS, 0);
    quiesce();
    report::check(
        "a past singleshot deadline replaces the armed one",
        quiet_for(80 * MS),
        format_args!("the earlier deadline fired"),
    );
    quiesce();
    hc::vcpu_set_singleshot_timer(0, now() + 50 * MS, 0);
    report::check_ret(
        "stop_singleshot_timer",
        hc::vcpu_stop_singleshot_timer(0),
        0,
    );
    report::check(
        "a stopped singleshot timer stays quiet",
        quiet_for(80 * MS),
        format_args!("the timer port went pending"),
    );
    quiesce();
    hc::set_timer_op(now() + 50 * MS);
    hc::vcpu_stop_singleshot_timer(0);
    report::check(
        "stop_singleshot_timer also stops set_timer_op's deadline",
        quiet_for(80 * MS),
        format_args!("the timer port went pending"),
    );
}

/// `SCHEDOP_poll` with a raw argument.
fn poll_raw(arg: &SchedPoll) -> i64 {
    // SAFETY: `arg` is readable; the ports it names are the test's to
    // choose (bad ones must be refused).
    unsafe { hc::sched_op_raw(SchedOp::Poll as u64, arg as *const SchedPoll as u64) }
}

/// `sched_block_poll`: sleeping in the hypervisor until an event.
pub fn block_poll(_start_info: &'static StartInfo) {
    if !bind_timer() {
        return;
    }
    hc::vcpu_stop_periodic_timer(0);
    let port = TIMER_PORT.load(Ordering::SeqCst);
    quiesce();

    let before = TIMER_EVENTS.load(Ordering::SeqCst);
    let start = now();
    hc::set_timer_op(start + 10 * MS);
    report::check_ret("block with a timer armed", hc::sched_block(), 0);
    let slept = now() - start;
    report::check(
        "block sleeps until the timer's event",
        slept >= 10 * MS,
        format_args!("returned after {slept} ns"),
    );
    report::check_eq("block enables upcalls", shared::upcall_mask(), Some(0));
    report::check(
        "the event is delivered on the way out of block",
        TIMER_EVENTS.load(Ordering::SeqCst) == before + 1,
        format_args!("{} events", TIMER_EVENTS.load(Ordering::SeqCst) - before),
    );

    quiesce();
    hc::set_timer_op(now() - MS);
    let start = now();
    report::check_ret("block with an event pending", hc::sched_block(), 0);
    let slept = now() - start;
    report::check(
        "block with an event pending returns at once",
        slept < 50 * MS,
        format_args!("returned after {slept} ns"),
    );

    quiesce();
    let start = now();
    hc::set_timer_op(start + 5 * MS);
    report::check_ret(
        "sched_op_compat block",
        hc::sched_op_compat(SchedOp::Block as u64, 0),
        0,
    );
    report::check(
        "compat block sleeps until the event",
        now() - start >= 5 * MS,
        format_args!("returned after {} ns", now() - start),
    );

    quiesce();
    poll_errors(port);
    poll_wakes(port);
}

fn poll_errors(port: u32) {
    let ports = [port; 129];
    let many = SchedPoll {
        ports: ports.as_ptr() as u64,
        nr_ports: 129,
        pad: 0,
        timeout: 0,
    };
    report::check_ret(
        "poll of 129 ports is EINVAL",
        poll_raw(&many),
        Errno::EINVAL.neg(),
    );
    for &(what, ptr) in BAD_POINTERS {
        // SAFETY: `ptr` is not Rust memory; the call must fail.
        let ret = unsafe { hc::sched_op_raw(SchedOp::Poll as u64, ptr) };
        report::check_ret(
            format_args!("poll with the argument at {what} is EFAULT"),
            ret,
            Errno::EFAULT.neg(),
        );
        let bad = SchedPoll {
            ports: ptr,
            nr_ports: 1,
            pad: 0,
            timeout: 0,
        };
        report::check_ret(
            format_args!("poll with the ports at {what} is EFAULT"),
            poll_raw(&bad),
            Errno::EFAULT.neg(),
        );
    }
    report::check_ret(
        "poll of a port outside the allocated buckets is EINVAL",
        hc::sched_poll(&[3000], 0),
        Errno::EINVAL.neg(),
    );
}

fn poll_wakes(port: u32) {
    quiesce();
    let start = now();
    report::check_ret(
        "poll with a timeout",
        hc::sched_poll(&[port], start + 10 * MS),
        0,
    );
    report::check(
        "poll sleeps until its timeout",
        now() - start >= 10 * MS,
        format_args!("returned after {} ns", now() - start),
    );
    report::check_eq("poll leaves upcalls masked", shared::upcall_mask(), Some(1));

    quiesce();
    hc::set_timer_op(now() - MS);
    let start = now();
    report::check_ret("poll of a pending port", hc::sched_poll(&[port], 0), 0);
    report::check(
        "poll of a pending port returns at once",
        now() - start < 50 * MS,
        format_args!("returned after {} ns", now() - start),
    );

    quiesce();
    let mut unbound = EvtchnAllocUnbound {
        dom: DomId::SELF.0,
        remote_dom: DomId::SELF.0,
        port: 0,
    };
    hc::evtchn_alloc_unbound(&mut unbound);
    let start = now();
    hc::set_timer_op(start + 10 * MS);
    report::check_ret(
        "poll woken by one of its ports",
        hc::sched_poll(&[unbound.port, port], 0),
        0,
    );
    report::check(
        "poll sleeps until a polled port is pending",
        now() - start >= 10 * MS && timer_pending(),
        format_args!(
            "returned after {} ns, pending {}",
            now() - start,
            timer_pending()
        ),
    );

    quiesce();
    let start = now();
    report::check_ret("poll with a past timeout", hc::sched_poll(&[port], 1), 0);
    report::check(
        "poll with a past timeout returns at once",
        now() - start < 50 * MS,
        format_args!("returned after {} ns", now() - start),
    );
}

/// `timer_user_mode`: a timer event interrupts guest user mode, which
/// spins until the upcall (in the kernel) releases it.
pub fn user_mode(_start_info: &'static StartInfo) {
    if !support::traps_and_user() || !bind_timer() {
        return;
    }
    hc::vcpu_stop_periodic_timer(0);
    quiesce();
    let data = traps::user_data();
    for offset in [user_code::ARG, user_code::OUT_0] {
        // SAFETY: the shim's user data page, writable by the kernel.
        unsafe { ((data + offset) as *mut u64).write_volatile(0) };
    }
    INTERRUPTED_CS.store(0, Ordering::SeqCst);
    let before = TIMER_EVENTS.load(Ordering::SeqCst);
    hc::set_timer_op(now() + 20 * MS);
    let entry = core::ptr::addr_of!(user_code::user_wait) as u64;
    // IF set: user mode runs with upcalls enabled.
    traps::run_user(entry, FLAT_USER_CS, 0x202, UserEntry::Hypercall);
    shared::set_upcall_mask(1);
    report::check_eq(
        "the timer's upcall interrupted user mode",
        INTERRUPTED_CS.load(Ordering::SeqCst) & 3,
        3,
    );
    report::check_eq(
        "one timer event was taken",
        TIMER_EVENTS.load(Ordering::SeqCst) - before,
        1,
    );
    // SAFETY: as above.
    let out = unsafe { ((data + user_code::OUT_0) as *const u64).read_volatile() };
    report::check_eq("user mode ran on after the upcall", out, 0x7173);
}

/// The latest system time any vCPU has read (`time_monotonic`).
static LATEST: AtomicU64 = AtomicU64::new(0);
/// Readings earlier than one published before them.
static BACKWARDS: AtomicU64 = AtomicU64::new(0);
/// Readings per vCPU.
static READS: [AtomicU64; 2] = [AtomicU64::new(0), AtomicU64::new(0)];
/// When the readers stop.
static END: AtomicU64 = AtomicU64::new(0);
/// vCPU 1 has stopped reading.
static READER_DONE: AtomicBool = AtomicBool::new(false);

/// Readings each vCPU must take.
const MIN_READS: u64 = 100;

/// Reads the system time from vCPU `vcpu`'s own record until [`END`] has
/// passed and both vCPUs took [`MIN_READS`] readings (a loaded host may
/// stall the machine for longer than a time slice, so a vCPU that is done
/// yields to the other), or for 10 s at most:
/// each reading must be at least the latest one published before it was
/// taken (by either vCPU).
fn read_time_until_end(vcpu: usize) {
    let end = END.load(Ordering::SeqCst);
    let give_up = end + 10_000 * MS;
    loop {
        let before = LATEST.load(Ordering::SeqCst);
        let Some(t) = shared::system_time_of(vcpu) else {
            return;
        };
        if t < before {
            BACKWARDS.fetch_add(1, Ordering::SeqCst);
        }
        LATEST.fetch_max(t, Ordering::SeqCst);
        let own = READS[vcpu].fetch_add(1, Ordering::SeqCst) + 1;
        let both_read = READS.iter().all(|r| r.load(Ordering::SeqCst) > MIN_READS);
        if (t >= end && both_read) || t >= give_up {
            return;
        }
        if t >= end && own > MIN_READS {
            // Done here but the other vCPU is short of readings (a loaded
            // host can starve it of time slices): hand it the CPU.
            hc::sched_yield();
        }
    }
}

fn time_reader(vcpu: usize) {
    read_time_until_end(vcpu);
    READER_DONE.store(true, Ordering::SeqCst);
}

/// `time_monotonic` (`dom0_max_vcpus=2`): both vCPUs read the system time
/// from their own records for at least 400 ms, sharing the physical CPU
/// through time slices; no reading may be earlier than one taken before
/// it.
pub fn monotonic(_start_info: &'static StartInfo) {
    if !support::traps() {
        return;
    }
    END.store(now() + 400 * MS, Ordering::SeqCst);
    if !support::start_vcpu(1, time_reader) {
        return;
    }
    read_time_until_end(0);
    let done = support::yield_until(100_000, || READER_DONE.load(Ordering::SeqCst));
    report::check(
        "vCPU 1 read the time to the end",
        done,
        format_args!("it did not finish"),
    );
    let reads = [0, 1].map(|v| READS[v].load(Ordering::SeqCst));
    report::check(
        "both vCPUs read the time many times",
        reads.iter().all(|&n| n > MIN_READS),
        format_args!("readings per vCPU: {reads:?}"),
    );
    let backwards = BACKWARDS.load(Ordering::SeqCst);
    report::check(
        "system time never went backwards, within or across vCPUs",
        backwards == 0,
        format_args!("{backwards} readings went backwards"),
    );
}

/// `sched_watchdog`: creating, re-arming and stopping watchdogs.
pub fn watchdog(_start_info: &'static StartInfo) {
    report::check_ret(
        "re-arming watchdog 1 before it exists is EINVAL",
        hc::sched_watchdog(1, 10),
        Errno::EINVAL.neg(),
    );
    report::check_ret("a first watchdog is id 1", hc::sched_watchdog(0, 60), 1);
    report::check_ret("a second watchdog is id 2", hc::sched_watchdog(0, 60), 2);
    // Xen 4.17 answers -ENOSPC zero-extended from 32 bits.
    report::check_ret_any(
        "a third watchdog is ENOSPC",
        hc::sched_watchdog(0, 60),
        &[Errno::ENOSPC.neg(), Errno::ENOSPC.neg() & 0xffff_ffff],
    );
    report::check_ret("re-arming watchdog 1", hc::sched_watchdog(1, 120), 0);
    report::check_ret(
        "watchdog id 3 is EINVAL",
        hc::sched_watchdog(3, 10),
        Errno::EINVAL.neg(),
    );
    report::check_ret("stopping watchdog 2", hc::sched_watchdog(2, 0), 0);
    report::check_ret(
        "stopping watchdog 2 again is EINVAL",
        hc::sched_watchdog(2, 0),
        Errno::EINVAL.neg(),
    );
    report::check_ret(
        "a new watchdog takes id 2 again",
        hc::sched_watchdog(0, 60),
        2,
    );
    report::check_ret("stopping watchdog 1", hc::sched_watchdog(1, 0), 0);
    report::check_ret("stopping watchdog 2", hc::sched_watchdog(2, 0), 0);
    for &(what, ptr) in BAD_POINTERS {
        // SAFETY: `ptr` is not Rust memory; the call must fail.
        let ret = unsafe { hc::sched_op_raw(SchedOp::Watchdog as u64, ptr) };
        report::check_ret(
            format_args!("watchdog with {what} is EFAULT"),
            ret,
            Errno::EFAULT.neg(),
        );
    }
}

/// `sched_watchdog_expiry`: a 1 s watchdog left to expire while the vCPU
/// blocks; the domain must shut down with reason watchdog.
pub fn watchdog_expiry(_start_info: &'static StartInfo) {
    if !support::traps() {
        return;
    }
    hc::vcpu_stop_periodic_timer(0);
    report::check_ret("a 1 s watchdog", hc::sched_watchdog(0, 1), 1);
    guest_pv_shim::println!("shutting down: watchdog expiry while blocked");
    report::print_result(report::status());
    loop {
        hc::sched_block();
    }
}

/// `sched_remote_shutdown`: its errors, then dom0 shuts itself down
/// through it.
pub fn remote_shutdown(_start_info: &'static StartInfo) {
    report::check_ret(
        "remote_shutdown of domain 7 is ESRCH",
        hc::sched_remote_shutdown(7, ShutdownReason::Poweroff as u32),
        Errno::ESRCH.neg(),
    );
    report::check_ret(
        "remote_shutdown of DOMID_SELF is ESRCH",
        hc::sched_remote_shutdown(DomId::SELF.0, ShutdownReason::Poweroff as u32),
        Errno::ESRCH.neg(),
    );
    for &(what, ptr) in BAD_POINTERS {
        // SAFETY: `ptr` is not Rust memory; the call must fail.
        let ret = unsafe { hc::sched_op_raw(SchedOp::RemoteShutdown as u64, ptr) };
        report::check_ret(
            format_args!("remote_shutdown with {what} is EFAULT"),
            ret,
            Errno::EFAULT.neg(),
        );
    }
    guest_pv_shim::println!("shutting down: SCHEDOP_remote_shutdown(0, poweroff)");
    report::print_result(report::status());
    hc::sched_remote_shutdown(0, ShutdownReason::Poweroff as u32);
    report::fail(
        "remote_shutdown of dom0 by itself",
        format_args!("returned"),
    );
}
