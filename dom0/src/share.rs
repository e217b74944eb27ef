//! `cpu-share`: the fairness measurement of the `xl`-like shell.
//!
//! Every served domU that is paused is unpaused at once; they run (each a
//! fixed amount of work, `domu-demo spin=<n>`) until the first one shuts
//! down, when the others are paused again. Each one's CPU time meanwhile
//! (its runstate time, `getdomaininfo`'s `cpu_time`) is then compared
//! with its weight's share of the total: within [`TOLERANCE_PERCENT`].
//! The measurement ends with a fixed amount of guest work done (the
//! first domain's), not after a wall-clock time.

use alloc::vec::Vec;

use toolstack::builder::Hypervisor;
use toolstack::shell::Share;
use toolstack::xen::{self, Xen, domain_info};

use guest_pv_shim::dom0_abi::domctl::DomInfoFlags;
use guest_pv_shim::{println, report};

use crate::domains::{Domains, NS, has_shut_down, now};
use crate::shell::At;

/// How far a share may be from its weight's, in percent of it.
const TOLERANCE_PERCENT: u64 = 10;

/// A domain taking part: id, name, weight, CPU time at the start.
struct Runner {
    id: u16,
    name: &'static str,
    weight: u16,
    start_ns: u64,
}

/// The CPU time domain `id` has used, in ns (0 if it is gone).
fn cpu_time(id: u16) -> u64 {
    domain_info(id).map_or(0, |i| i.cpu_time)
}

/// With a CPU for each of several runners, their CPU time must add up to
/// at least [`PARALLEL_PERCENT`] % of the wall time times their number:
/// they ran at once, on different CPUs. Their shares then say only how
/// fast each CPU went, and are not checked. Whether it checked.
fn check_parallel(at: At, used: &[(u16, u64)], wall_ns: u64) -> bool {
    let cpus = xen::physinfo().map_or(1, |p| p.nr_cpus);
    let at_once = u64::try_from(used.len()).unwrap_or(0);
    if at_once < 2 || at_once > u64::from(cpus) {
        return false;
    }
    let total: u64 = used.iter().map(|&(_, ns)| ns).sum();
    report::check_observed(
        format_args!("{at}cpu-share ran on {at_once} CPUs at once"),
        u128::from(total) * 100 >= u128::from(wall_ns) * u128::from(PARALLEL_PERCENT * at_once),
        format_args!(
            "{} ms of CPU time in {} ms",
            total / 1_000_000,
            wall_ns / 1_000_000
        ),
    );
    true
}

/// How much of the CPUs the runners must fill together, in percent.
const PARALLEL_PERCENT: u64 = 65;

/// Runs the measurement (see the module's documentation).
pub fn cpu_share(at: At, domains: &mut Domains) {
    let sched_id = match xen::sched_id() {
        Ok(id) => id,
        Err(e) => {
            report::fail(format_args!("{at}cpu-share"), format_args!("{e}"));
            return;
        }
    };
    let mut runners: Vec<Runner> = domains
        .iter()
        .filter(|d| {
            let id = d.built.domid;
            domain_info(id)
                .is_ok_and(|i| i.domain == id && i.dominf().contains(DomInfoFlags::PAUSED))
        })
        .map(|d| Runner {
            id: d.built.domid,
            name: d.cfg.name,
            weight: xen::sched_credit(d.built.domid, sched_id, None).map_or(0, |c| c.weight),
            start_ns: 0,
        })
        .collect();
    report::ok_value(format_args!("{at}cpu-share paused domains"), runners.len());
    if runners.is_empty() {
        return;
    }
    for runner in &mut runners {
        runner.start_ns = cpu_time(runner.id);
    }
    let wall_start = now();
    let unpaused = runners.iter().filter(|r| Xen.unpause(r.id).is_ok()).count();
    report::check_eq(
        format_args!("{at}cpu-share all unpaused"),
        unpaused,
        runners.len(),
    );
    let deadline = now().saturating_add(domains.timeout_s().saturating_mul(NS));
    let first = loop {
        domains.serve();
        if let Some(first) = runners.iter().position(|r| has_shut_down(r.id)) {
            break Some(first);
        }
        if now() > deadline {
            break None;
        }
        domains.sleep(None);
    };
    let paused = runners
        .iter()
        .filter(|r| has_shut_down(r.id) || xen::pause(r.id).is_ok())
        .count();
    report::check_eq(
        format_args!("{at}cpu-share the others paused when the first finished"),
        (first.is_some(), paused),
        (true, runners.len()),
    );
    let wall_ns = now().saturating_sub(wall_start);
    let used: Vec<(u16, u64)> = runners
        .iter()
        .map(|r| (r.weight, cpu_time(r.id).saturating_sub(r.start_ns)))
        .collect();
    if check_parallel(at, &used, wall_ns) {
        return;
    }
    println!(
        "dom0: {} finished its work first; {} ms of CPU time in all",
        first.map_or("none", |i| runners[i].name),
        used.iter().map(|&(_, ns)| ns).sum::<u64>() / 1_000_000
    );
    for (runner, share) in runners.iter().zip(Share::of(&used)) {
        report::check_observed(
            format_args!(
                "{at}cpu-share {} (weight {}) within {TOLERANCE_PERCENT} % of its weight's share",
                runner.name, runner.weight
            ),
            share.within(TOLERANCE_PERCENT),
            format_args!(
                "{} ppm of the CPU time, weight's share {} ppm",
                share.got_ppm, share.want_ppm
            ),
        );
    }
}
