//! `vcpu_op_errors`: the errors and answers of `VCPUOP_initialise`, `up`,
//! `down`, `is_up` and `get_runstate_info`, in a dom0 with 3 vCPUs
//! (`dom0_max_vcpus=3`), as Xen 4.17 gives them.
//!
//! vCPU 1 is initialised and brought up (it spins, yielding); vCPU 2 is
//! never initialised. Checks:
//! - `is_up`: 1 for vCPU 0, 0 for vCPUs 1 and 2 at boot; bits 63:32 of
//!   `vcpuid` are ignored (it is an `unsigned int`);
//! - every sub-op on a vCPU id the domain does not have (3, 31, 32,
//!   0xffffffff) is `ENOENT`, unknown sub-ops `ENOSYS` (and `ENOENT` with a
//!   bad id: the id is checked first);
//! - `up` of an uninitialised vCPU is `EINVAL`; `initialise` from an
//!   unreadable context is `EFAULT`, of a context with a non-canonical
//!   address or too many GDT or LDT entries `EINVAL`, and leaves the vCPU
//!   uninitialised;
//! - `initialise` of an initialised vCPU (1, and vCPU 0 itself) is
//!   `EEXIST`; `up` of a vCPU that is up (vCPU 1, the caller) is 0;
//! - `down` of another vCPU and of a vCPU that is already down is 0, and a
//!   vCPU taken down and brought up again carries on;
//! - `get_runstate_info`: vCPU 0 (the caller) is `running`, vCPU 2 is
//!   `offline` and has never run, vCPU 1 has run and is `offline` after
//!   `down`; `state_entry_time` is not in the future and never goes back,
//!   `time[]` never decreases and sums to no more than the system time (it
//!   counts from the vCPU's creation); an unmapped or read-only buffer is
//!   `EFAULT`.

use core::sync::atomic::Ordering;

use guest_pv_shim::dom0_abi::Errno;
use guest_pv_shim::dom0_abi::cpu::VcpuGuestContext;
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::dom0_abi::vcpu::{
    RUNSTATE_OFFLINE, RUNSTATE_RUNNING, VcpuOpCmd, VcpuRunstateInfo,
};
use guest_pv_shim::hypercall::{
    self as hc, vcpu_down, vcpu_get_runstate_info, vcpu_is_up, vcpu_op_raw,
};
use guest_pv_shim::{mm, report, shared, smp};

use crate::support::{self, SPINS, STOP, spinner};

/// vCPUs the test boots with (`dom0_max_vcpus=3`).
const VCPUS: u64 = 3;
/// The vCPU that is brought up.
const UP: u64 = 1;
/// The vCPU that is never initialised.
const NEVER: u64 = 2;
/// Yields to wait for vCPU 1 at most.
const WAIT: u32 = 10_000;

/// Makes a context invalid (the second argument is a non-canonical
/// address).
type Spoil = fn(&mut VcpuGuestContext, u64);

/// `VCPUOP_initialise` of `vcpuid` from the guest address `ctx`.
fn initialise_raw(vcpuid: u64, ctx: u64) -> i64 {
    // SAFETY: every context passed here is either refused (bad pointer,
    // bad content, vCPU id, or an initialised vCPU) or is the valid
    // context of `smp::kernel_context` for vCPU 1.
    unsafe { vcpu_op_raw(VcpuOpCmd::Initialise as u64, vcpuid, ctx) }
}

/// `VCPUOP_initialise` of `vcpuid` with `ctx`.
fn initialise(vcpuid: u64, ctx: &VcpuGuestContext) -> i64 {
    initialise_raw(vcpuid, core::ptr::from_ref(ctx) as u64)
}

/// `VCPUOP_up` of `vcpuid`.
fn up(vcpuid: u64) -> i64 {
    // SAFETY: only vCPU 1 is ever initialised, with `spinner`'s context;
    // vCPU 0 is the caller, already running; other ids are refused.
    unsafe { hc::vcpu_up(vcpuid) }
}

/// The runstate of `vcpuid`, or `None` after a failed call (reported).
fn runstate(what: &str, vcpuid: u64) -> Option<VcpuRunstateInfo> {
    let mut info = VcpuRunstateInfo::default();
    let ret = vcpu_get_runstate_info(vcpuid, &mut info);
    report::check_ret(
        format_args!("get_runstate_info of vCPU {vcpuid} ({what}) returns 0"),
        ret,
        0,
    )
    .then_some(info)
}

/// A runstate and the system time, as check lines show them.
struct Shown<'a>(&'a VcpuRunstateInfo, u64);

impl core::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let Shown(info, now) = self;
        write!(
            f,
            "state {} entry {} time {:?} sum {} now {now}",
            info.state,
            info.state_entry_time,
            info.time,
            info.time.iter().sum::<u64>()
        )
    }
}

/// Checks one runstate against the system time read right after it.
fn check_runstate(what: &str, vcpuid: u64, info: &VcpuRunstateInfo, want_state: Option<i32>) {
    let now = shared::system_time_of(0).unwrap_or(0);
    let sum: u64 = info.time.iter().sum();
    if let Some(state) = want_state {
        report::check_observed(
            format_args!("vCPU {vcpuid} ({what}) is in runstate {state}"),
            info.state == state,
            format_args!("{}", Shown(info, now)),
        );
    }
    report::check_observed(
        format_args!(
            "vCPU {vcpuid} ({what}) has state_entry_time and the sum of time[] not in the future"
        ),
        info.state_entry_time <= now && sum <= now,
        format_args!("{}", Shown(info, now)),
    );
}

/// Checks that `later` does not go back from `earlier`.
fn check_monotone(vcpuid: u64, earlier: &VcpuRunstateInfo, later: &VcpuRunstateInfo) {
    let grows = later.state_entry_time >= earlier.state_entry_time
        && earlier.time.iter().zip(&later.time).all(|(a, b)| b >= a)
        && later.time.iter().sum::<u64>() >= earlier.time.iter().sum::<u64>();
    report::check_observed(
        format_args!("vCPU {vcpuid} has state_entry_time and time[] that never go back"),
        grows,
        format_args!(
            "entry {} -> {}, time {:?} -> {:?}",
            earlier.state_entry_time, later.state_entry_time, earlier.time, later.time
        ),
    );
}

pub fn run(_start_info: &'static StartInfo) {
    if !support::traps() {
        return;
    }

    for (vcpuid, want) in [
        (0, 1),
        (UP, 0),
        (NEVER, 0),
        ((1 << 32) | UP, 0),
        (1 << 32, 1),
    ] {
        report::check_ret(
            format_args!("is_up of vcpuid {vcpuid:#x} is {want}"),
            vcpu_is_up(vcpuid),
            want,
        );
    }

    let mut ctx = VcpuGuestContext::zeroed();
    if !smp::kernel_context(&mut ctx, 1, spinner) {
        report::error("context", format_args!("no stack for vCPU 1"));
        return;
    }
    let enoent = Errno::ENOENT.neg();
    for vcpuid in [VCPUS, 31, 32, 0xFFFF_FFFF] {
        report::check_ret(
            format_args!("is_up of vCPU {vcpuid} is ENOENT"),
            vcpu_is_up(vcpuid),
            enoent,
        );
        report::check_ret(
            format_args!("up of vCPU {vcpuid} is ENOENT"),
            up(vcpuid),
            enoent,
        );
        report::check_ret(
            format_args!("down of vCPU {vcpuid} is ENOENT"),
            vcpu_down(vcpuid),
            enoent,
        );
        report::check_ret(
            format_args!("initialise of vCPU {vcpuid} is ENOENT"),
            initialise(vcpuid, &ctx),
            enoent,
        );
        let mut info = VcpuRunstateInfo::default();
        report::check_ret(
            format_args!("get_runstate_info of vCPU {vcpuid} is ENOENT"),
            vcpu_get_runstate_info(vcpuid, &mut info),
            enoent,
        );
    }
    for (cmd, vcpuid, want) in [
        (14, 0, Errno::ENOSYS.neg()),
        (99, 0, Errno::ENOSYS.neg()),
        (99, VCPUS, enoent),
    ] {
        // SAFETY: unknown sub-ops read no argument.
        let ret = unsafe { vcpu_op_raw(cmd, vcpuid, 0) };
        report::check_ret(
            format_args!(
                "unknown sub-op {cmd} on vCPU {vcpuid} is {}",
                report::Ret(want)
            ),
            ret,
            want,
        );
    }

    report::check_ret(
        "up of the uninitialised vCPU 2 is EINVAL",
        up(NEVER),
        Errno::EINVAL.neg(),
    );
    for (what, ptr) in [
        ("an unmapped 0x1000", 0x1000),
        ("a non-canonical", 0x8000_0000_0000_0000),
    ] {
        report::check_ret(
            format_args!("initialise of vCPU 2 from {what} context is EFAULT"),
            initialise_raw(NEVER, ptr),
            Errno::EFAULT.neg(),
        );
    }
    let non_canonical = 0x8000_0000_0000_0000;
    let bad: [(&str, Spoil); 5] = [
        ("a non-canonical RIP", |c, v| c.user_regs.rip = v),
        ("a non-canonical kernel_sp", |c, v| c.kernel_sp = v),
        ("a non-canonical event callback", |c, v| {
            c.event_callback_eip = v
        }),
        ("8192 GDT entries", |c, _| c.gdt_ents = 8192),
        ("8193 LDT entries", |c, _| c.ldt_ents = 8193),
    ];
    for (what, spoil) in bad {
        let mut bad_ctx = ctx;
        spoil(&mut bad_ctx, non_canonical);
        report::check_ret(
            format_args!("initialise of vCPU 2 with {what} is EINVAL"),
            initialise(NEVER, &bad_ctx),
            Errno::EINVAL.neg(),
        );
    }
    report::check_ret(
        "up of vCPU 2 after the refused contexts is still EINVAL",
        up(NEVER),
        Errno::EINVAL.neg(),
    );

    shared::set_upcall_mask_of(1, 1);
    report::check_ret("initialise of vCPU 1 returns 0", initialise(UP, &ctx), 0);
    report::check_ret(
        "initialise of vCPU 1 again is EEXIST",
        initialise(UP, &ctx),
        Errno::EEXIST.neg(),
    );
    report::check_ret(
        "initialise of vCPU 0 (the caller) is EEXIST",
        initialise(0, &ctx),
        Errno::EEXIST.neg(),
    );
    report::check_ret("is_up of the initialised vCPU 1 is 0", vcpu_is_up(UP), 0);
    report::check_ret("up of vCPU 1 returns 0", up(UP), 0);
    report::check_ret("is_up of vCPU 1 is 1", vcpu_is_up(UP), 1);
    report::check_ret("up of vCPU 1 while it is up returns 0", up(UP), 0);
    report::check_ret("up of vCPU 0 (the caller) returns 0", up(0), 0);
    report::check(
        "vCPU 1 runs",
        support::yield_until(WAIT, || SPINS.load(Ordering::Acquire) >= 3),
        format_args!("{} iterations", SPINS.load(Ordering::Acquire)),
    );

    let Some(own) = runstate("the caller", 0) else {
        return;
    };
    check_runstate("the caller", 0, &own, Some(RUNSTATE_RUNNING));
    if let Some(never) = runstate("never up", NEVER) {
        check_runstate("never up", NEVER, &never, Some(RUNSTATE_OFFLINE));
        report::check_observed(
            "vCPU 2 (never up) has never run or been runnable",
            never.time[0] == 0 && never.time[1] == 0,
            format_args!("time {:?}", never.time),
        );
    }
    if let Some(one) = runstate("up", UP) {
        check_runstate("up", UP, &one, None);
        report::check_observed(
            "vCPU 1 (up) is not offline and has run",
            one.state != RUNSTATE_OFFLINE && one.time[0] > 0,
            format_args!("state {} time {:?}", one.state, one.time),
        );
    }
    hc::sched_yield();
    if let Some(again) = runstate("the caller, later", 0) {
        check_monotone(0, &own, &again);
    }

    // SAFETY: the boot L4 page table is mapped read-only; the hypervisor
    // must refuse to write it.
    let ret = unsafe { vcpu_op_raw(VcpuOpCmd::GetRunstateInfo as u64, 0, mm::boot_l4_va()) };
    report::check_ret(
        "get_runstate_info into the read-only L4 page table is EFAULT",
        ret,
        Errno::EFAULT.neg(),
    );
    // SAFETY: 0x1000 is not mapped; the hypervisor must refuse it.
    let ret = unsafe { vcpu_op_raw(VcpuOpCmd::GetRunstateInfo as u64, 0, 0x1000) };
    report::check_ret(
        "get_runstate_info into unmapped 0x1000 is EFAULT",
        ret,
        Errno::EFAULT.neg(),
    );

    report::check_ret("down of vCPU 1 from vCPU 0 returns 0", vcpu_down(UP), 0);
    report::check_ret("is_up of vCPU 1 after down is 0", vcpu_is_up(UP), 0);
    if let Some(down) = runstate("down", UP) {
        check_runstate("down", UP, &down, Some(RUNSTATE_OFFLINE));
    }
    report::check_ret("down of vCPU 1 again returns 0", vcpu_down(UP), 0);
    report::check_ret("down of the never-up vCPU 2 returns 0", vcpu_down(NEVER), 0);
    let before = SPINS.load(Ordering::Acquire);
    for _ in 0..20 {
        hc::sched_yield();
    }
    let after = SPINS.load(Ordering::Acquire);
    report::check_observed(
        "vCPU 1 does not run while down",
        after == before,
        format_args!("{before} rounds before 20 yields, {after} after"),
    );
    report::check_ret("up of vCPU 1 after down returns 0", up(UP), 0);
    report::check(
        "vCPU 1 carries on after up",
        support::yield_until(WAIT, || SPINS.load(Ordering::Acquire) > before),
        format_args!(
            "{} iterations, {before} before",
            SPINS.load(Ordering::Acquire)
        ),
    );
    STOP.store(true, Ordering::Release);
    report::check(
        "vCPU 1 takes itself down when its function returns",
        support::yield_until(WAIT, || vcpu_is_up(UP) == 0),
        format_args!("is_up {}", vcpu_is_up(UP)),
    );
}
