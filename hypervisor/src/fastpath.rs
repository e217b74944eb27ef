//! The hypercall fast path's policy: which hypercalls it answers, and the
//! per-CPU "work pending" flag that tells it when it may.
//!
//! A hypercall that needs no domain state (today `xen_version`'s
//! `XENVER_version` and `XENVER_pagesize`) is answered by the entry itself
//! without taking a lock, routing through the hypercall table or running
//! the exit checks, as long as nothing is pending for the running vCPU.
//! "Nothing pending" is two tests:
//!
//! - the CPU's [`Lane`] holds no work: no one changed the running vCPU's
//!   state behind its back since its last full entry began (an NMI
//!   raised, its domain paused, a new `vcpu_info` place: [`note_work`]),
//!   and a full entry has published where the vCPU's `vcpu_info` lies
//!   ([`Lane::begin_full`]);
//! - that `vcpu_info` shows no unmasked upcall ([`events_allow`]). The
//!   guest writes these bytes itself (Linux sets `evtchn_upcall_pending`
//!   when it unmasks a pending port and then makes a `xen_version` call to
//!   have the upcall delivered), so they are read on every fast call rather
//!   than trusted to a flag.
//!
//! Everything else the full exit looks at is made pending only by the
//! vCPU's own entries, each of which ends in a full exit, or by a switch
//! to the vCPU, which ends in one too; `docs/performance.md` ("The fast
//! path's flag") argues why no wake-up is lost.
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use dom0_abi::hypercall::Hypercall;
use dom0_abi::segment::{RING1_KERNEL_CS, RING1_KERNEL_SS};
use dom0_abi::stats::Counter;
use dom0_abi::version::VersionCmd;

use crate::hypercall::version::{XEN_MAJOR, XEN_MINOR};
use crate::layout::{PAGE_SIZE, is_canonical};
use crate::smp::MAX_CPUS;
use crate::stats::Stats;

/// The answer of a hypercall the fast path serves, or `None` when the full
/// path must run it (another hypercall, another sub-op, or an argument the
/// full path must look at, such as an error to report). Every answer is the
/// one `hypercall::dispatch` gives for the same call.
#[inline(always)]
#[must_use]
pub fn answer(number: u64, arg0: u64, arg1: u64) -> Option<u64> {
    if number != FAST_HYPERCALL {
        return None;
    }
    match arg0 {
        c if c == VersionCmd::Version as u64 => Some(u64::from((XEN_MAJOR << 16) | XEN_MINOR)),
        c if c == VersionCmd::Pagesize as u64 && arg1 == 0 => Some(PAGE_SIZE),
        _ => None,
    }
}

/// Whether `vcpu_info`'s upcall bytes let a hypercall return without the
/// event check: no upcall pending, or events masked (a masked upcall waits
/// for the guest to unmask, which is a write the guest follows with a
/// hypercall if it wants the upcall: that one sees it pending here).
#[inline(always)]
#[must_use]
pub fn events_allow(pending: u8, mask: u8) -> bool {
    pending == 0 || mask != 0
}

/// Whether the frame an `int $0x82` left (from ring 1: the gate's DPL
/// admits no other ring) is the common one [`crate::resume::is_plain`]
/// accepts: the ring-1 kernel selectors, a canonical RIP and RSP. The
/// exit's `iretq` can then load it without a descriptor check; any other
/// frame declines to the full path, whose exit checks it in full.
#[inline(always)]
#[must_use]
pub fn kernel_frame_is_plain(cs: u64, ss: u64, rip: u64, rsp: u64) -> bool {
    let selectors = (cs & 0xffff) | ((ss & 0xffff) << 16);
    selectors == u64::from(RING1_KERNEL_CS) | (u64::from(RING1_KERNEL_SS) << 16)
        && is_canonical(rip)
        && is_canonical(rsp)
}

/// What the fast path of one CPU reads without a lock: the work flag of
/// the vCPU running there, where that vCPU's `vcpu_info` lies, and (in
/// statistics builds) the fast calls it answered, not yet added to the
/// vCPU's counters.
#[derive(Debug)]
pub struct Lane {
    /// Something may be pending for the running vCPU: the next hypercall
    /// takes the full path. Set by anyone who makes work pending
    /// ([`note_work`]); cleared by the running vCPU's full path, before it
    /// looks at what is pending ([`Lane::begin_full`]).
    work: AtomicBool,
    /// Hypervisor address of the running vCPU's `vcpu_info` (0: none
    /// published, the fast path is off).
    vcpu_info: AtomicU64,
    /// Fast calls answered for the running vCPU (statistics builds).
    calls: AtomicU64,
    /// Their `hv_tsc` (statistics builds).
    tsc: AtomicU64,
}

impl Lane {
    const fn new() -> Lane {
        Lane {
            work: AtomicBool::new(true),
            vcpu_info: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            tsc: AtomicU64::new(0),
        }
    }

    /// Where the running vCPU's `vcpu_info` lies if a hypercall may take
    /// the fast path now (no work pending, a place published).
    #[inline(always)]
    #[must_use]
    pub fn ready(&self) -> Option<u64> {
        if self.work.load(Ordering::Acquire) {
            return None;
        }
        Some(self.vcpu_info.load(Ordering::Relaxed)).filter(|&va| va != 0)
    }

    /// Marks work pending for the vCPU running on this lane's CPU.
    pub fn note_work(&self) {
        self.work.store(true, Ordering::Release);
    }

    /// The full path of an entry of the vCPU whose `vcpu_info` lies at
    /// `vcpu_info` (hypervisor address) begins: what it is about to check
    /// need not stay flagged, and the place is published. Called before
    /// the checks, so that work made pending after them (a new place
    /// included) is flagged again. Costs a load and a branch while nothing
    /// was flagged.
    #[inline(always)]
    pub fn begin_full(&self, vcpu_info: impl FnOnce() -> u64) {
        if self.work.load(Ordering::Relaxed) {
            self.reopen(vcpu_info());
        }
    }

    /// [`Lane::begin_full`] when work was flagged.
    #[cold]
    #[inline(never)]
    fn reopen(&self, vcpu_info: u64) {
        self.work.swap(false, Ordering::AcqRel);
        self.vcpu_info.store(vcpu_info, Ordering::Relaxed);
    }

    /// The running vCPU leaves this CPU: no fast path until the next one's
    /// full exit, and its fast calls are added to its counters.
    pub fn disarm(&self, stats: &mut Stats) {
        self.vcpu_info.store(0, Ordering::Relaxed);
        self.work.store(true, Ordering::Release);
        self.fold(stats);
    }

    /// Counts one fast call that spent `tsc` ticks (statistics builds).
    #[inline(always)]
    pub fn count(&self, tsc: u64) {
        if Stats::ENABLED {
            self.calls.fetch_add(1, Ordering::Relaxed);
            self.tsc.fetch_add(tsc, Ordering::Relaxed);
        }
    }

    /// Moves the fast calls counted so far into the leaving vCPU's
    /// `stats`.
    fn fold(&self, stats: &mut Stats) {
        if Stats::ENABLED {
            let calls = self.calls.swap(0, Ordering::Relaxed);
            stats.add(Counter::Entries, calls);
            stats.add(Counter::Hypercalls, calls);
            stats.add(Counter::HypervisorTsc, self.tsc.swap(0, Ordering::Relaxed));
        }
    }

    /// Adds the fast calls counted so far to `stats`, a copy of the
    /// running vCPU's counters (for `stats_op`); they stay counted here
    /// until the vCPU leaves.
    pub fn add_counts(&self, stats: &mut Stats) {
        if Stats::ENABLED {
            let calls = self.calls.load(Ordering::Relaxed);
            stats.add(Counter::Entries, calls);
            stats.add(Counter::Hypercalls, calls);
            stats.add(Counter::HypervisorTsc, self.tsc.load(Ordering::Relaxed));
        }
    }
}

/// Every CPU's lane, by CPU number.
static LANES: [Lane; MAX_CPUS] = [const { Lane::new() }; MAX_CPUS];

/// CPU `cpu`'s lane.
#[inline(always)]
#[must_use]
pub fn lane(cpu: u64) -> Option<&'static Lane> {
    LANES.get(usize::try_from(cpu).ok()?)
}

/// The address of CPU `cpu`'s lane, which its trampoline's data page
/// holds so that an entry finds the lane with one load. CPU numbers stop
/// below [`MAX_CPUS`] (`smp::start_cpus`); a larger one is a bug in the
/// boot code.
#[must_use]
pub fn lane_address(cpu: u64) -> u64 {
    let Some(lane) = lane(cpu) else {
        panic!("CPU number {cpu} is not below {MAX_CPUS}")
    };
    core::ptr::from_ref(lane) as u64
}

/// The one hypercall number [`answer`] may serve: the entry stub sends no
/// other to the fast path.
pub const FAST_HYPERCALL: u64 = Hypercall::XenVersion as u64;

/// Work is now pending for a vCPU that runs on CPU `on_cpu` (if it runs):
/// its next hypercall takes the full path. For whoever changes a vCPU's
/// state other than through that vCPU's own entry. A vCPU that does not
/// run needs nothing: switching it in ends in a full exit.
pub fn note_work(on_cpu: Option<u16>) {
    if let Some(lane) = on_cpu.and_then(|cpu| lane(u64::from(cpu))) {
        lane.note_work();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypercall::dispatch::dispatch;
    use crate::mm::fake::FakeMachine;
    use proptest::prelude::*;

    #[test]
    fn a_lane_opens_after_a_full_entry_publishes_the_place() {
        let lane = Lane::new();
        assert_eq!(lane.ready(), None);
        lane.begin_full(|| 0x1000);
        assert_eq!(lane.ready(), Some(0x1000));
        lane.begin_full(|| 0x3000);
        assert_eq!(lane.ready(), Some(0x1000), "published only when flagged");
    }

    #[test]
    fn work_noted_during_a_full_path_survives_its_exit() {
        let lane = Lane::new();
        lane.begin_full(|| 0x1000);
        // An entry's full path starts; meanwhile another CPU raises work
        // (or this entry moves the vCPU's vcpu_info).
        lane.begin_full(|| 0x1000);
        lane.note_work();
        assert_eq!(lane.ready(), None);
        lane.begin_full(|| 0x2000);
        assert_eq!(lane.ready(), Some(0x2000), "the new place");
    }

    #[test]
    fn a_vcpu_leaving_closes_the_lane_and_takes_its_counts() {
        let lane = Lane::new();
        lane.begin_full(|| 0x1000);
        lane.count(7);
        lane.count(5);
        let mut stats = Stats::default();
        let mut copy = Stats::default();
        lane.add_counts(&mut copy);
        lane.add_counts(&mut copy);
        let expect = |n| if Stats::ENABLED { n } else { 0 };
        assert_eq!(copy.get(Counter::Hypercalls), expect(4), "read, not taken");
        lane.disarm(&mut stats);
        assert_eq!(lane.ready(), None);
        assert_eq!(stats.get(Counter::Hypercalls), expect(2));
        assert_eq!(stats.get(Counter::Entries), expect(2));
        assert_eq!(stats.get(Counter::HypervisorTsc), expect(12));
        lane.disarm(&mut stats);
        assert_eq!(stats.get(Counter::Hypercalls), expect(2), "taken once");
        lane.begin_full(|| 0x4000);
        assert_eq!(lane.ready(), Some(0x4000), "the next vCPU's place");
    }

    #[test]
    fn note_work_reaches_only_a_running_vcpu() {
        let last = MAX_CPUS as u64 - 1;
        let lane = lane(last).unwrap();
        lane.begin_full(|| 0x2000);
        note_work(None);
        assert_eq!(lane.ready(), Some(0x2000));
        note_work(Some(u16::try_from(last).unwrap()));
        assert_eq!(lane.ready(), None);
        note_work(Some(u16::MAX));
        assert!(super::lane(u64::MAX).is_none());
        assert_eq!(lane_address(last), core::ptr::from_ref(lane) as u64);
    }

    #[test]
    fn only_unmasked_pending_upcalls_stop_the_fast_path() {
        assert!(events_allow(0, 0));
        assert!(events_allow(0, 1));
        assert!(events_allow(1, 1));
        assert!(!events_allow(1, 0));
    }

    #[test]
    fn serves_xen_version_and_pagesize_only() {
        assert_eq!(
            answer(Hypercall::XenVersion as u64, 0, 0),
            Some(0x0004_0011)
        );
        assert_eq!(
            answer(Hypercall::XenVersion as u64, 0, 0x1234),
            Some(0x0004_0011)
        );
        assert_eq!(answer(Hypercall::XenVersion as u64, 7, 0), Some(4096));
        assert_eq!(answer(Hypercall::XenVersion as u64, 7, 8), None, "EINVAL");
        assert_eq!(answer(Hypercall::XenVersion as u64, 1, 0), None);
        assert_eq!(answer(Hypercall::Multicall as u64, 0, 0), None);
    }

    proptest! {
        /// The fast entry's frame test accepts exactly the ring-1 frames
        /// the full exit's `is_plain` accepts.
        #[test]
        fn kernel_frames_are_plain_as_the_exit_sees_them(
            cs in prop_oneof![Just(u64::from(RING1_KERNEL_CS)), any::<u16>().prop_map(u64::from), any::<u64>()],
            ss in prop_oneof![Just(u64::from(RING1_KERNEL_SS)), any::<u16>().prop_map(u64::from), any::<u64>()],
            rip in prop_oneof![0u64..0x0001_0000_0000_0000, any::<u64>(), Just(0x0000_8000_0000_0000u64), Just(0xffff_8000_0000_0000u64)],
            rsp in prop_oneof![0u64..0x0001_0000_0000_0000, any::<u64>(), Just(0x0000_7fff_ffff_fff8u64), Just(0xffff_7fff_ffff_fff8u64)],
        ) {
            let frame = crate::resume::Frame { rip, cs, rsp, ss };
            let ring1 = cs & 3 == 1;
            prop_assert_eq!(
                kernel_frame_is_plain(cs, ss, rip, rsp),
                ring1 && crate::resume::is_plain(&frame)
            );
        }

        /// The fast answer is the full path's, for any call it serves.
        #[test]
        fn fast_answers_match_the_dispatcher(
            number in prop_oneof![Just(Hypercall::XenVersion as u64), 0u64..64, any::<u64>()],
            arg0 in prop_oneof![0u64..16, any::<u64>()],
            arg1 in prop_oneof![Just(0u64), any::<u64>()],
        ) {
            if let Some(value) = answer(number, arg0, arg1) {
                let mut env = FakeMachine::new(16);
                let full = dispatch(&mut env, number, [arg0, arg1, 0, 0, 0]);
                prop_assert_eq!(full, value.cast_signed());
            }
        }
    }
}
