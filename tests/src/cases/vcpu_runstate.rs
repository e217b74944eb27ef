//! `vcpu_runstate_area`: `VCPUOP_register_runstate_memory_area`, in a dom0
//! with 2 vCPUs (`dom0_max_vcpus=2`), as Xen 4.17 answers it.
//!
//! vCPU 1 spins, yielding, so that every yield of vCPU 0 switches it out
//! and back in. Checks:
//! - registering vCPU 0's own area returns 0 and writes the record at
//!   once: `running`, entered no later than now, `time[]` summing to no
//!   more than the system time, no update flag;
//! - after a yield (vCPU 0 switched out and in again) the area has been
//!   rewritten: still `running`, entered later, and the time spent
//!   runnable meanwhile added; with the `runstate_update_flag` assist the
//!   same, and the flag (bit 63 of `state_entry_time`) clear again;
//! - registering vCPU 1's area from vCPU 0 writes vCPU 1's record at once
//!   (not `running`: vCPU 0 is; it has run);
//! - an area reaching into the hypervisor's range, or an unreadable
//!   argument, is `EFAULT`; an unmapped area is accepted (the writes
//!   fault and are dropped); a NULL area stops the updates.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use guest_pv_shim::dom0_abi::Errno;
use guest_pv_shim::dom0_abi::mmu::{VmAssistCmd, VmAssistType};
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::dom0_abi::vcpu::{
    RUNSTATE_RUNNABLE, RUNSTATE_RUNNING, VcpuOpCmd, XEN_RUNSTATE_UPDATE,
};
use guest_pv_shim::hypercall::{self as hc, vcpu_op_raw};
use guest_pv_shim::{report, shared};

use crate::support;

/// Yields to wait for vCPU 1 at most.
const WAIT: u32 = 10_000;
/// The first address of the hypervisor's range.
const HYPERVISOR_VIRT_START: u64 = 0xffff_8000_0000_0000;
/// What an area holds before the hypervisor writes it.
const FILL: u64 = 0x5a5a_5a5a_5a5a_5a5a;

/// A `vcpu_runstate_info` the hypervisor writes: `state` and `pad`,
/// `state_entry_time`, `time[4]`.
struct Area([AtomicU64; 6]);

impl Area {
    const fn new() -> Area {
        Area([const { AtomicU64::new(FILL) }; 6])
    }

    fn address(&self) -> u64 {
        self.0.as_ptr() as u64
    }

    fn fill(&self) {
        for word in &self.0 {
            word.store(FILL, Ordering::SeqCst);
        }
    }

    fn read(&self) -> Record {
        let w: [u64; 6] = core::array::from_fn(|i| self.0[i].load(Ordering::SeqCst));
        Record {
            #[allow(clippy::cast_possible_truncation, reason = "the low half is `state`")]
            state: (w[0] as u32).cast_signed(),
            entry: w[1],
            time: [w[2], w[3], w[4], w[5]],
        }
    }
}

/// What an area showed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Record {
    state: i32,
    entry: u64,
    time: [u64; 4],
}

impl Record {
    fn sum(&self) -> u64 {
        self.time.iter().fold(0u64, |a, &t| a.wrapping_add(t))
    }
}

static AREA0: Area = Area::new();
static AREA1: Area = Area::new();

/// Iterations of vCPU 1's loop so far.
static SPINS: AtomicU64 = AtomicU64::new(0);
/// Tells vCPU 1 to return.
static STOP: AtomicBool = AtomicBool::new(false);

fn spinner(_vcpu: usize) {
    while !STOP.load(Ordering::Acquire) {
        SPINS.fetch_add(1, Ordering::AcqRel);
        hc::sched_yield();
    }
}

/// `register_runstate_memory_area` of `vcpuid` with the area address
/// read from `arg`.
fn register_raw(vcpuid: u64, arg: u64) -> i64 {
    // SAFETY: the hypervisor reads one u64 at `arg` and writes runstate
    // records only at the address it holds: one of this test's areas, an
    // unmapped address, or one it refuses.
    unsafe { vcpu_op_raw(VcpuOpCmd::RegisterRunstateMemoryArea as u64, vcpuid, arg) }
}

/// `register_runstate_memory_area` of `vcpuid` at `area`.
fn register(vcpuid: u64, area: u64) -> i64 {
    let handle = area;
    register_raw(vcpuid, core::ptr::from_ref(&handle) as u64)
}

fn now() -> u64 {
    shared::system_time_of(0).unwrap_or(0)
}

/// Yields once and checks vCPU 0's area was rewritten since `before`.
fn check_rewritten(what: &str, before: Record) -> Record {
    let spins = SPINS.load(Ordering::Acquire);
    hc::sched_yield();
    let after = AREA0.read();
    report::check_observed(
        format_args!("{what}: vCPU 1 ran meanwhile"),
        SPINS.load(Ordering::Acquire) > spins,
        format_args!("{} iterations", SPINS.load(Ordering::Acquire)),
    );
    report::check_observed(
        format_args!("{what}: the area says running, entered later, with runnable time added"),
        after.state == RUNSTATE_RUNNING
            && after.entry > before.entry
            && after.entry & XEN_RUNSTATE_UPDATE == 0
            && after.time[RUNSTATE_RUNNABLE as usize] > before.time[RUNSTATE_RUNNABLE as usize]
            && after.entry <= now(),
        format_args!("before {before:?}, after {after:?}"),
    );
    after
}

/// `vcpu_runstate_area`.
pub fn run(_start_info: &'static StartInfo) {
    if !support::traps() {
        return;
    }
    let own = register(0, AREA0.address());
    report::check_ret("register vCPU 0's own area returns 0", own, 0);
    let first = AREA0.read();
    let at = now();
    report::check_observed(
        "it is written at once: running, entered no later than now, no update flag",
        first.state == RUNSTATE_RUNNING
            && first.entry <= at
            && first.entry & XEN_RUNSTATE_UPDATE == 0
            && first.sum() <= at,
        format_args!("{first:?}, now {at}"),
    );
    if !support::start_vcpu(1, spinner) {
        return;
    }
    support::yield_until(WAIT, || SPINS.load(Ordering::Acquire) >= 2);
    let second = check_rewritten("a yield", AREA0.read());
    report::check_ret(
        "enable VMASST_TYPE_runstate_update_flag",
        hc::vm_assist(VmAssistCmd::Enable, VmAssistType::RunstateUpdateFlag),
        0,
    );
    check_rewritten("a yield with the update flag", second);

    let other = register(1, AREA1.address());
    report::check_ret("register vCPU 1's area from vCPU 0 returns 0", other, 0);
    let one = AREA1.read();
    report::check_observed(
        "vCPU 1's record is written at once: not running, has run",
        one.state == RUNSTATE_RUNNABLE
            && one.time[RUNSTATE_RUNNING as usize] > 0
            && one.entry <= now(),
        format_args!("{one:?}"),
    );

    report::check_ret(
        "an area at the start of the hypervisor's range is EFAULT",
        register(0, HYPERVISOR_VIRT_START),
        Errno::EFAULT.neg(),
    );
    report::check_ret(
        "an area ending in the hypervisor's range is EFAULT",
        register(0, HYPERVISOR_VIRT_START - 8),
        Errno::EFAULT.neg(),
    );
    report::check_ret(
        "an unreadable argument (unmapped 0x1000) is EFAULT",
        register_raw(0, 0x1000),
        Errno::EFAULT.neg(),
    );
    report::check_ret(
        "an unmapped area (0x2000) is accepted",
        register(0, 0x2000),
        0,
    );
    hc::sched_yield();
    report::check_ret("a NULL area returns 0", register(0, 0), 0);
    AREA0.fill();
    hc::sched_yield();
    report::check_observed(
        "after NULL, a yield no longer writes the old area",
        AREA0.0.iter().all(|w| w.load(Ordering::SeqCst) == FILL),
        format_args!("{:?}", AREA0.read()),
    );

    STOP.store(true, Ordering::Release);
    report::check(
        "vCPU 1 finishes",
        support::yield_until(WAIT, || hc::vcpu_is_up(1) == 0),
        format_args!("is_up {}", hc::vcpu_is_up(1)),
    );
}
