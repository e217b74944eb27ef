//! `sched_weights`: eight domains that never stop (`jmp .`), two each
//! with weights in the ratio 1:2:4:8 (64, 128, 256, 512), share the CPU
//! in proportion while dom0 sleeps.
//!
//! dom0 builds them (as `domctl_domains` does), pauses them, sets their
//! weights with `scheduler_op`, notes their `cpu_time`, unpauses them all,
//! sleeps in `SCHEDOP_poll` for [`RUN_NS`], pauses them all again and
//! compares the CPU time each used meanwhile (its runstate time, as
//! `getdomaininfo` reports it) with its weight's share of the total:
//! each must be within [`TOLERANCE_PERCENT`] of it. The shares themselves
//! are printed as observations (they differ from run to run).

use guest_pv_shim::dom0_abi::domctl::{
    DomctlCmd, NoPayload, SchedCredit, SchedulerOp, SchedulerOpCmd, XEN_SCHEDULER_CREDIT2,
};
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::{report, shared};

use super::domctl::{SPIN, call, info, sleep_in_poll, start_domain};

/// The domains' weights.
const WEIGHTS: [u16; 8] = [64, 64, 128, 128, 256, 256, 512, 512];
/// How long they share the CPU (guest time: the test runs under
/// `-icount`, where a nanosecond is an instruction).
const RUN_NS: u64 = 400_000_000;
/// How far a share may be from its weight's, in percent of it.
const TOLERANCE_PERCENT: u64 = 10;

pub fn run(_start_info: &'static StartInfo) {
    if shared::map() != 0 {
        report::error("map shared_info", format_args!("failed"));
        return;
    }
    let mut ids = [0u16; WEIGHTS.len()];
    for (i, (&weight, id)) in WEIGHTS.iter().zip(&mut ids).enumerate() {
        let handle = 0xe0 + u8::try_from(i).unwrap_or(0);
        let Some((started, _)) = start_domain(&[(0, SPIN)], handle) else {
            return;
        };
        *id = started;
        let paused = call(DomctlCmd::PauseDomain, started, &NoPayload).0;
        let op = SchedulerOp {
            sched_id: XEN_SCHEDULER_CREDIT2,
            cmd: SchedulerOpCmd::PutInfo as u32,
            credit: SchedCredit { weight, cap: 0 },
            ..SchedulerOp::default()
        };
        let set = call(DomctlCmd::SchedulerOp, started, &op).0;
        report::check_eq(
            format_args!("domain {i}: paused, weight {weight} set"),
            (paused, set),
            (0, 0),
        );
    }
    let before = ids.map(|id| info(id).2.cpu_time);
    let unpaused = ids.map(|id| call(DomctlCmd::UnpauseDomain, id, &NoPayload).0);
    report::check_eq("all unpaused", unpaused, [0; WEIGHTS.len()]);
    let Some((slept, _)) = sleep_in_poll(RUN_NS) else {
        return;
    };
    let paused = ids.map(|id| call(DomctlCmd::PauseDomain, id, &NoPayload).0);
    report::check_eq(
        "slept, then all paused",
        (slept, paused),
        (0, [0; WEIGHTS.len()]),
    );
    let used: [u64; WEIGHTS.len()] =
        core::array::from_fn(|i| info(ids[i]).2.cpu_time.saturating_sub(before[i]));
    let total: u64 = used.iter().sum();
    let weights: u64 = WEIGHTS.iter().map(|&w| u64::from(w)).sum();
    report::check_observed(
        "the domains used the CPU",
        total >= RUN_NS / 2,
        format_args!("{total} ns of {RUN_NS}"),
    );
    for (i, (&weight, &ns)) in WEIGHTS.iter().zip(&used).enumerate() {
        // Shares in parts per million.
        let want = u64::from(weight) * 1_000_000 / weights;
        let got = ns * 1_000_000 / total.max(1);
        report::check_observed(
            format_args!("domain {i} (weight {weight}) got its share within {TOLERANCE_PERCENT} %"),
            got.abs_diff(want) * 100 <= want * TOLERANCE_PERCENT,
            format_args!("{got} ppm, weight's share {want} ppm, {ns} ns"),
        );
    }
    let destroyed = ids.map(|id| call(DomctlCmd::DestroyDomain, id, &NoPayload).0);
    report::check_eq("all destroyed", destroyed, [0; WEIGHTS.len()]);
}
