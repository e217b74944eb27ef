//! Weighted fair sharing of one CPU among the vCPUs of every domain, in
//! the manner of Xen's credit2 (whose `scheduler_op` parameters it takes:
//! a weight and a cap per domain).
//!
//! The model:
//! - every vCPU holds a **credit** in nanoseconds; running burns it at
//!   `max_weight / weight` times the time run, `max_weight` being the
//!   highest weight among the domains that competed at the last choice, so
//!   the heaviest burns real time and a domain of half its weight twice as
//!   fast;
//! - the runnable vCPU with the most credit runs (ties: the first in round
//!   robin order after the one that ran); a vCPU that yielded runs only if
//!   no other can;
//! - when even the best has no credit left, a **reset** gives every vCPU
//!   [`CREDIT_INIT`] more, but never more than [`CREDIT_INIT`] in all: debt
//!   carries over, savings do not, so a vCPU that blocked does not hoard
//!   credit. Resets are counted in an epoch and applied to a vCPU lazily,
//!   when it is next looked at, so a reset costs nothing per vCPU;
//! - a vCPU woken from a block usually holds more credit than the
//!   CPU-bound ones and so preempts them (Xen's wake-up preemption);
//! - the chosen vCPU's slice lasts until its credit would fall to the
//!   runner-up's, within [`MIN_SLICE_NS`]..=[`MAX_SLICE_NS`]; alone it has
//!   no slice;
//! - a **cap** (percent of one CPU, 0: none) gives the domain a budget of
//!   `cap` % of each [`BUDGET_PERIOD_NS`]; a domain that spent it is parked
//!   until the next period refills it (overruns are paid back from the
//!   next budget). The slice of a capped domain ends when its budget does.
#![forbid(unsafe_code)]

/// A domain's weight unless set (Xen's default).
pub const DEFAULT_WEIGHT: u16 = 256;
/// Credit given at each reset, and the most a vCPU can hold (credit2's
/// `CSCHED2_CREDIT_INIT`).
pub const CREDIT_INIT: i64 = 10_000_000;
/// Shortest slice (credit2's `CSCHED2_MIN_TIMER`).
pub const MIN_SLICE_NS: u64 = 500_000;
/// Longest slice while another vCPU waits.
pub const MAX_SLICE_NS: u64 = 10_000_000;
/// A capped domain's budget is refilled every period (credit2's
/// `CSCHED2_BDGT_REPL_PERIOD`).
pub const BUDGET_PERIOD_NS: u64 = 10_000_000;
/// One percent of a budget period, ns.
const BUDGET_PERCENT_NS: i64 = 100_000;

/// A domain's share: its `scheduler_op` parameters and its cap's budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share {
    weight: u16,
    cap: u16,
    /// Budget left in this period, ns (negative: overrun).
    budget: i64,
    /// When the budget is next refilled.
    refill_at: u64,
}

impl Default for Share {
    fn default() -> Share {
        Share {
            weight: DEFAULT_WEIGHT,
            cap: 0,
            budget: 0,
            refill_at: 0,
        }
    }
}

impl Share {
    /// The weight (1..=65535).
    pub fn weight(&self) -> u16 {
        self.weight
    }

    /// The cap in percent of one CPU (0: none).
    pub fn cap(&self) -> u16 {
        self.cap
    }

    /// Sets the weight; 0 leaves it unchanged (as `scheduler_op` putinfo).
    pub fn set_weight(&mut self, weight: u16) {
        if weight != 0 {
            self.weight = weight;
        }
    }

    /// Sets the cap (0 removes it). A domain that was not capped starts
    /// with a full budget at `now`; one that was keeps what is left of
    /// its budget, up to the new quota.
    pub fn set_cap(&mut self, cap: u16, now: u64) {
        let was_capped = self.cap != 0;
        self.cap = cap;
        if was_capped {
            self.budget = self.budget.min(self.quota());
        } else {
            self.budget = self.quota();
            self.refill_at = now.saturating_add(BUDGET_PERIOD_NS);
        }
    }

    /// The budget of one period, ns.
    fn quota(&self) -> i64 {
        BUDGET_PERCENT_NS * i64::from(self.cap)
    }

    /// Refills the budget for every period begun by `now`.
    fn refill(&mut self, now: u64) {
        if self.cap == 0 || now < self.refill_at {
            return;
        }
        let periods = (now - self.refill_at) / BUDGET_PERIOD_NS + 1;
        let quota = self.quota();
        let added = quota.saturating_mul(i64::try_from(periods).unwrap_or(i64::MAX));
        self.budget = self.budget.saturating_add(added).min(quota);
        self.refill_at = self
            .refill_at
            .saturating_add(periods.saturating_mul(BUDGET_PERIOD_NS));
    }

    /// Whether the domain may run at `now` (uncapped, or budget left);
    /// refills the budget first.
    pub fn eligible(&mut self, now: u64) -> bool {
        self.refill(now);
        self.cap == 0 || self.budget > 0
    }

    /// When a parked domain may run again (its next refill), if capped.
    pub fn parked_until(&self) -> Option<u64> {
        (self.cap != 0 && self.budget <= 0).then_some(self.refill_at)
    }

    /// How long the domain may run from `now` before its budget ends or
    /// is refilled, if capped.
    fn budget_left(&self, now: u64) -> Option<u64> {
        (self.cap != 0).then(|| {
            u64::try_from(self.budget)
                .unwrap_or(0)
                .min(self.refill_at.saturating_sub(now))
        })
    }
}

/// A vCPU's credit.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Credit {
    /// Credit, ns, as of reset `epoch`.
    credit: i64,
    epoch: u64,
    /// It yielded: it runs next only if nothing else can.
    pub yielded: bool,
}

impl Credit {
    /// Its credit after the resets up to `epoch` (applied now).
    fn settle(&mut self, epoch: u64) -> i64 {
        let resets = epoch.wrapping_sub(self.epoch);
        if resets != 0 {
            let gain = CREDIT_INIT.saturating_mul(i64::try_from(resets).unwrap_or(i64::MAX));
            self.credit = self.credit.saturating_add(gain).min(CREDIT_INIT);
            self.epoch = epoch;
        }
        self.credit
    }
}

/// The scheduler's state: credit epochs, the weight that scales burning,
/// and the charging of the CPU making a choice (see [`Charging`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Runqueue<T> {
    epoch: u64,
    max_weight: u16,
    /// The vCPU running since `since`, to be charged at the next choice.
    running: Option<T>,
    since: u64,
}

/// What one physical CPU is charged for: the vCPU it runs, since when.
/// With several CPUs sharing one [`Runqueue`], each keeps its own and
/// swaps it in for its choice ([`Runqueue::swap_charging`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Charging<T> {
    running: Option<T>,
    since: u64,
}

impl<T> Charging<T> {
    /// A CPU that has run nothing yet.
    pub const fn new() -> Charging<T> {
        Charging {
            running: None,
            since: 0,
        }
    }
}

impl<T> Default for Charging<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Default for Runqueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Runqueue<T> {
    /// A runqueue where nothing has run yet.
    pub const fn new() -> Runqueue<T> {
        Runqueue {
            epoch: 1,
            max_weight: DEFAULT_WEIGHT,
            running: None,
            since: 0,
        }
    }
}

/// A vCPU offered to [`Choice`].
#[derive(Clone, Copy, Debug)]
struct Candidate<T> {
    id: T,
    credit: i64,
    yielded: bool,
    weight: u16,
    budget_left: Option<u64>,
}

impl<T> Candidate<T> {
    /// Whether it should run rather than `other` (which came first).
    fn beats(&self, other: &Candidate<T>) -> bool {
        (!self.yielded, self.credit) > (!other.yielded, other.credit)
    }
}

/// What the scheduler chose.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chosen<T> {
    /// The vCPU.
    pub id: T,
    /// How long it may run before the next choice (`None`: until
    /// something changes).
    pub slice: Option<u64>,
}

/// One choice in progress: the vCPUs that can run are offered in round
/// robin order (from the one after the vCPU that ran, that one last),
/// then [`Choice::finish`] picks.
#[derive(Debug)]
pub struct Choice<T> {
    epoch: u64,
    now: u64,
    best: Option<Candidate<T>>,
    second: Option<Candidate<T>>,
    max_weight: u16,
}

impl<T: Copy + PartialEq> Runqueue<T> {
    /// Charges the vCPU that ran (if it is `id`, with `credit` and its
    /// domain's `share`) for the time since it was chosen, up to `now`.
    /// Call before [`Runqueue::choice`], with the vCPU that ran.
    pub fn charge(&mut self, id: T, credit: &mut Credit, share: &mut Share, now: u64) {
        if self.running != Some(id) {
            return;
        }
        let ran = now.saturating_sub(self.since);
        self.since = now;
        credit.settle(self.epoch);
        let burn = u128::from(ran) * u128::from(self.max_weight) / u128::from(share.weight.max(1));
        credit.credit = credit
            .credit
            .saturating_sub(i64::try_from(burn).unwrap_or(i64::MAX));
        if share.cap != 0 {
            share.refill(now);
            share.budget = share
                .budget
                .saturating_sub(i64::try_from(ran).unwrap_or(i64::MAX));
        }
    }

    /// Starts a choice at `now`.
    pub fn choice(&self, now: u64) -> Choice<T> {
        Choice {
            epoch: self.epoch,
            now,
            best: None,
            second: None,
            max_weight: 1,
        }
    }

    /// Exchanges the charging in the runqueue with `cpu`'s: a CPU swaps
    /// its own in before [`Runqueue::charge`] and out after
    /// [`Choice::finish`].
    pub fn swap_charging(&mut self, cpu: &mut Charging<T>) {
        core::mem::swap(&mut self.running, &mut cpu.running);
        core::mem::swap(&mut self.since, &mut cpu.since);
    }

    /// Nothing runs from `now` (the CPU idles).
    pub fn idle(&mut self, now: u64) {
        self.running = None;
        self.since = now;
    }
}

impl<T: Copy + PartialEq> Choice<T> {
    /// Offers vCPU `id`, which can run, with its credit and its domain's
    /// share (the caller checked [`Share::eligible`]).
    pub fn offer(&mut self, id: T, credit: &mut Credit, share: &Share) {
        self.max_weight = self.max_weight.max(share.weight);
        let c = Candidate {
            id,
            credit: credit.settle(self.epoch),
            yielded: core::mem::take(&mut credit.yielded),
            weight: share.weight.max(1),
            budget_left: share.budget_left(self.now),
        };
        match &self.best {
            Some(best) if !c.beats(best) => {
                if self.second.as_ref().is_none_or(|s| c.beats(s)) {
                    self.second = Some(c);
                }
            }
            _ => self.second = self.best.replace(c),
        }
    }

    /// Whether more than one vCPU was offered (another CPU could run the
    /// one not chosen).
    pub fn contested(&self) -> bool {
        self.second.is_some()
    }

    /// The vCPU to run, if any was offered; resets credit if even the
    /// best has none left.
    pub fn finish(self, rq: &mut Runqueue<T>) -> Option<Chosen<T>> {
        let now = self.now;
        let Some(best) = self.best else {
            rq.idle(now);
            return None;
        };
        rq.max_weight = self.max_weight;
        let mut top = best.credit;
        let mut runner_up = self.second.map(|s| s.credit);
        if top <= 0 {
            let resets = top.unsigned_abs() / CREDIT_INIT.unsigned_abs() + 1;
            rq.epoch = rq.epoch.wrapping_add(resets);
            let gain = CREDIT_INIT.saturating_mul(i64::try_from(resets).unwrap_or(i64::MAX));
            top = top.saturating_add(gain).min(CREDIT_INIT);
            runner_up = runner_up.map(|c| c.saturating_add(gain).min(CREDIT_INIT));
        }
        let fair = runner_up.map(|other| {
            let lead = u128::from(top.saturating_sub(other).unsigned_abs());
            let real = lead * u128::from(best.weight) / u128::from(self.max_weight.max(1));
            u64::try_from(real)
                .unwrap_or(u64::MAX)
                .clamp(MIN_SLICE_NS, MAX_SLICE_NS)
        });
        let slice = match (fair, best.budget_left) {
            (Some(f), Some(b)) => Some(f.min(b)),
            (f, b) => f.or(b),
        };
        rq.running = Some(best.id);
        rq.since = now;
        Some(Chosen { id: best.id, slice })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A simulated vCPU: its domain's index, whether it is CPU-bound or
    /// runs `burst` then blocks for `sleep`.
    #[derive(Clone, Debug)]
    struct SimVcpu {
        domain: usize,
        credit: Credit,
        /// (run, sleep) pattern, ns; `None`: CPU-bound.
        pattern: Option<(u64, u64)>,
        /// Asleep until.
        asleep_until: u64,
        /// Ran in the current burst.
        burst_ran: u64,
        ran: u64,
    }

    /// A machine of domains and vCPUs driven by the scheduler as the
    /// hypervisor drives it: a choice at every slice end, block, wake-up
    /// and budget refill.
    struct Sim {
        shares: Vec<Share>,
        vcpus: Vec<SimVcpu>,
        rq: Runqueue<usize>,
        now: u64,
        idle: u64,
        /// Run time per domain per budget period.
        per_period: Vec<Vec<u64>>,
        /// Slices run up to this much longer than given (0: exactly).
        jitter: u64,
        /// The jitter's generator state.
        seed: u64,
    }

    impl Sim {
        fn new(shares: &[(u16, u16)]) -> Sim {
            Sim {
                shares: shares
                    .iter()
                    .map(|&(w, c)| {
                        let mut s = Share::default();
                        s.set_weight(w);
                        s.set_cap(c, 0);
                        s
                    })
                    .collect(),
                vcpus: Vec::new(),
                rq: Runqueue::default(),
                now: 0,
                idle: 0,
                per_period: vec![Vec::new(); shares.len()],
                jitter: 0,
                seed: 1,
            }
        }

        fn vcpu(&mut self, domain: usize, pattern: Option<(u64, u64)>) {
            self.vcpus.push(SimVcpu {
                domain,
                credit: Credit::default(),
                pattern,
                asleep_until: 0,
                burst_ran: 0,
                ran: 0,
            });
        }

        fn choose(&mut self, last: Option<usize>) -> Option<Chosen<usize>> {
            if let Some(i) = last {
                let v = &mut self.vcpus[i];
                self.rq
                    .charge(i, &mut v.credit, &mut self.shares[v.domain], self.now);
            }
            let mut choice = self.rq.choice(self.now);
            let n = self.vcpus.len();
            let start = last.map_or(0, |l| l + 1);
            for k in 0..n {
                let i = (start + k) % n;
                let v = &mut self.vcpus[i];
                let share = &mut self.shares[v.domain];
                if v.asleep_until <= self.now && share.eligible(self.now) {
                    choice.offer(i, &mut v.credit, share);
                }
            }
            choice.finish(&mut self.rq)
        }

        /// The next time something wakes (a sleeper or a parked domain).
        fn next_wake(&self) -> Option<u64> {
            let sleepers = self
                .vcpus
                .iter()
                .map(|v| v.asleep_until)
                .filter(|&t| t > self.now);
            let refills = self.shares.iter().filter_map(Share::parked_until);
            sleepers.chain(refills).min()
        }

        fn account(&mut self, domain: usize, from: u64, ns: u64) {
            let mut t = from;
            let end = from + ns;
            while t < end {
                let period = usize::try_from(t / BUDGET_PERIOD_NS).unwrap();
                let upto = ((t / BUDGET_PERIOD_NS + 1) * BUDGET_PERIOD_NS).min(end);
                let slots = &mut self.per_period[domain];
                if slots.len() <= period {
                    slots.resize(period + 1, 0);
                }
                slots[period] += upto - t;
                t = upto;
            }
        }

        fn run(&mut self, until: u64) {
            let mut last = None;
            while self.now < until {
                let Some(chosen) = self.choose(last) else {
                    let to = self.next_wake().unwrap_or(until).min(until);
                    self.idle += to - self.now;
                    self.now = to;
                    last = None;
                    continue;
                };
                let i = chosen.id;
                let mut len = chosen.slice.unwrap_or(MAX_SLICE_NS);
                if self.jitter != 0 {
                    self.seed = self
                        .seed
                        .wrapping_mul(6_364_136_223_846_793_005)
                        .wrapping_add(1_442_695_040_888_963_407);
                    len += (self.seed >> 33) % self.jitter;
                }
                let v = &self.vcpus[i];
                if let Some((burst, _)) = v.pattern {
                    len = len.min(burst - v.burst_ran);
                }
                if let Some(wake) = self.next_wake() {
                    len = len.min(wake - self.now).max(1);
                }
                len = len.min(until - self.now);
                let domain = v.domain;
                self.account(domain, self.now, len);
                self.now += len;
                let v = &mut self.vcpus[i];
                v.ran += len;
                if let Some((burst, sleep)) = v.pattern {
                    v.burst_ran += len;
                    if v.burst_ran >= burst {
                        v.burst_ran = 0;
                        v.asleep_until = self.now + sleep;
                    }
                }
                last = Some(i);
            }
        }

        fn domain_time(&self, d: usize) -> u64 {
            self.vcpus
                .iter()
                .filter(|v| v.domain == d)
                .map(|v| v.ran)
                .sum()
        }
    }

    const SECOND: u64 = 1_000_000_000;

    /// Two CPU-bound vCPUs for each of `weights`, run for `run` with
    /// slices up to `jitter` late: each vCPU's share of the CPU must be
    /// within `tolerance` (a fraction) of its weight's.
    fn check_shares(weights: [u16; 4], jitter: u64, run: u64, tolerance: f64) {
        let mut sim = Sim::new(&weights.map(|w| (w, 0)));
        sim.jitter = jitter;
        for d in 0..4 {
            sim.vcpu(d, None);
            sim.vcpu(d, None);
        }
        sim.run(run);
        let total: u64 = (0..4).map(|d| sim.domain_time(d)).sum();
        assert_eq!(total, run, "the CPU never idles");
        let sum: f64 = weights.iter().map(|&w| 2.0 * f64::from(w)).sum();
        for (i, v) in sim.vcpus.iter().enumerate() {
            let expected = f64::from(weights[v.domain]) / sum;
            let got = v.ran as f64 / total as f64;
            assert!(
                (got - expected).abs() <= expected * tolerance,
                "vCPU {i}: {got:.4} of the CPU, expected {expected:.4}"
            );
        }
    }

    #[test]
    fn weights_1_2_4_8_share_in_proportion() {
        check_shares([1, 2, 4, 8], 0, 10 * SECOND, 0.03);
    }

    #[test]
    fn two_cpus_sharing_a_runqueue_are_charged_each_for_its_own_vcpu() {
        let mut rq = Runqueue::<u8>::new();
        let share = Share::default();
        let (mut a, mut b) = (Credit::default(), Credit::default());
        let mut cpus = [Charging::new(), Charging::new()];
        let choose = |rq: &mut Runqueue<u8>, cpu: &mut Charging<u8>, id, credit, now| {
            rq.swap_charging(cpu);
            let mut choice = rq.choice(now);
            choice.offer(id, credit, &share);
            let chosen = choice.finish(rq).map(|c| c.id);
            rq.swap_charging(cpu);
            chosen
        };
        let [c0, c1] = &mut cpus;
        assert_eq!(choose(&mut rq, c0, 0, &mut a, 0), Some(0));
        assert_eq!(choose(&mut rq, c1, 1, &mut b, 1_000), Some(1));
        // CPU 0 is charged 2 ms for vCPU 0, CPU 1 1 ms for vCPU 1: the
        // other CPU's choice in between did not take over the charging.
        rq.swap_charging(c0);
        rq.charge(0, &mut a, &mut share.clone(), 2_000_000);
        rq.swap_charging(c0);
        rq.swap_charging(c1);
        rq.charge(1, &mut b, &mut share.clone(), 1_001_000);
        rq.swap_charging(c1);
        assert_eq!(a.credit, CREDIT_INIT - 2_000_000);
        assert_eq!(b.credit, CREDIT_INIT - 1_000_000);
    }

    #[test]
    fn overruns_are_paid_back() {
        // Slices that end up to 1 ms late (a late timer, a slow switch):
        // the overrun is charged, and the shares stay within 5 %.
        check_shares([64, 128, 256, 512], 1_000_000, SECOND, 0.05);
    }

    #[test]
    fn equal_weights_share_equally_and_round_robin() {
        let mut sim = Sim::new(&[(256, 0), (256, 0), (256, 0)]);
        for d in 0..3 {
            sim.vcpu(d, None);
        }
        sim.run(3 * SECOND);
        for d in 0..3 {
            let t = sim.domain_time(d);
            assert!(t.abs_diff(SECOND) < SECOND / 100, "domain {d}: {t}");
        }
    }

    #[test]
    fn a_cap_is_never_exceeded() {
        // Capped at 25 % against an uncapped competitor, and alone.
        for competitor in [true, false] {
            let mut sim = Sim::new(&[(256, 25), (256, 0)]);
            sim.vcpu(0, None);
            sim.vcpu(0, None);
            if competitor {
                sim.vcpu(1, None);
            }
            sim.run(2 * SECOND);
            // Each period at most its quota, once past the first (which
            // starts with a full budget).
            for (p, &t) in sim.per_period[0].iter().enumerate() {
                assert!(t <= BUDGET_PERIOD_NS / 4 + MIN_SLICE_NS, "period {p}: {t}");
            }
            let total = sim.domain_time(0);
            assert!(total <= 2 * SECOND / 4 + BUDGET_PERIOD_NS, "{total}");
            assert!(total >= 2 * SECOND / 4 - BUDGET_PERIOD_NS, "{total}");
            if competitor {
                assert_eq!(sim.idle, 0);
            } else {
                assert!(sim.idle >= 2 * SECOND * 3 / 4 - BUDGET_PERIOD_NS);
            }
        }
    }

    #[test]
    fn a_vcpu_that_wakes_gets_what_it_needs_at_once() {
        // Domain 1 runs 1 ms every 20 ms: with equal weights it needs
        // less than its half and gets all it asks for.
        let mut sim = Sim::new(&[(256, 0), (256, 0)]);
        sim.vcpu(0, None);
        sim.vcpu(1, Some((1_000_000, 19_000_000)));
        sim.run(SECOND);
        let light = sim.domain_time(1);
        assert!(light >= SECOND / 20 - 1_000_000, "{light}");
        assert_eq!(sim.domain_time(0) + light, SECOND);
    }

    #[test]
    fn an_idle_domain_does_not_starve_the_others_when_it_wakes() {
        // Domain 1 sleeps for a second, then is CPU-bound: it has saved
        // nothing, and the two share from then on.
        let mut sim = Sim::new(&[(256, 0), (256, 0)]);
        sim.vcpu(0, None);
        sim.vcpu(1, Some((10 * SECOND, SECOND)));
        sim.vcpus[1].asleep_until = SECOND;
        sim.run(SECOND);
        assert_eq!(sim.domain_time(0), SECOND);
        sim.run(SECOND + 100_000_000);
        let woken = sim.domain_time(1);
        assert!(woken.abs_diff(50_000_000) <= 10_000_000, "{woken}");
    }

    #[test]
    fn blocked_vcpus_do_not_hoard_credit() {
        let rq = Runqueue::<usize> {
            epoch: 1000,
            ..Runqueue::default()
        };
        let mut c = Credit::default();
        assert_eq!(c.settle(rq.epoch), CREDIT_INIT);
        let mut debt = Credit {
            credit: -25_000_000,
            epoch: 10,
            yielded: false,
        };
        assert_eq!(debt.settle(11), -15_000_000);
        assert_eq!(debt.settle(13), 5_000_000);
        assert_eq!(debt.settle(14), CREDIT_INIT);
    }

    #[test]
    fn a_yielding_vcpu_runs_only_if_nothing_else_can() {
        let mut rq = Runqueue::default();
        let share = Share::default();
        let (mut a, mut b) = (Credit::default(), Credit::default());
        a.settle(rq.epoch);
        b.settle(rq.epoch);
        b.credit = 1;
        a.yielded = true;
        let mut choice = rq.choice(0);
        choice.offer(0, &mut a, &share);
        choice.offer(1, &mut b, &share);
        assert_eq!(choice.finish(&mut rq).map(|c| c.id), Some(1));
        a.yielded = true;
        let mut choice = rq.choice(0);
        choice.offer(0, &mut a, &share);
        assert_eq!(choice.finish(&mut rq), Some(Chosen { id: 0, slice: None }));
        assert!(!a.yielded, "the yield is used up");
        assert_eq!(rq.choice(5).finish(&mut rq), None);
        assert_eq!(rq.running, None);
    }

    #[test]
    fn ties_go_round_robin_and_slices_follow_the_lead() {
        let mut rq = Runqueue::default();
        let share = Share::default();
        let mut v = [Credit::default(); 3];
        let mut choice = rq.choice(0);
        for (i, c) in v.iter_mut().enumerate() {
            choice.offer(i, c, &share);
        }
        let chosen = choice.finish(&mut rq).unwrap();
        assert_eq!(
            chosen,
            Chosen {
                id: 0,
                slice: Some(MIN_SLICE_NS)
            }
        );
        rq.charge(0, &mut v[0], &mut share.clone(), 3_000_000);
        assert_eq!(v[0].credit, CREDIT_INIT - 3_000_000);
        let mut choice = rq.choice(3_000_000);
        for i in [1, 2, 0] {
            choice.offer(i, &mut v[i], &share);
        }
        assert_eq!(choice.finish(&mut rq).unwrap().id, 1);
    }

    proptest! {
        /// Whatever the weights, caps, sleep patterns and parameter
        /// changes: credit never exceeds `CREDIT_INIT`, the CPU idles
        /// only when no vCPU could run, and a capped domain's time stays
        /// within its budget.
        #[test]
        fn invariants(
            domains in prop::collection::vec((1u16..=65535, prop_oneof![Just(0u16), 1u16..=100]), 1..5),
            vcpus in prop::collection::vec((0usize..5, prop::option::of((1u64..5_000_000, 1u64..30_000_000))), 1..8),
        ) {
            let mut sim = Sim::new(&domains);
            for (d, pattern) in vcpus {
                sim.vcpu(d % domains.len(), pattern);
            }
            let mut t = 0;
            while t < 200_000_000 {
                t += 20_000_000;
                sim.run(t);
                for v in &mut sim.vcpus {
                    prop_assert!(v.credit.settle(sim.rq.epoch) <= CREDIT_INIT);
                }
            }
            let busy: u64 = (0..domains.len()).map(|d| sim.domain_time(d)).sum();
            prop_assert_eq!(busy + sim.idle, 200_000_000);
            let all_bound_uncapped = sim.vcpus.iter().any(|v| v.pattern.is_none() && domains[v.domain].1 == 0);
            if all_bound_uncapped {
                prop_assert_eq!(sim.idle, 0);
            }
            for (d, &(_, cap)) in domains.iter().enumerate() {
                if cap != 0 {
                    let quota = BUDGET_PERIOD_NS * u64::from(cap) / 100;
                    let periods = sim.per_period[d].len() as u64;
                    prop_assert!(sim.domain_time(d) <= quota * periods + BUDGET_PERIOD_NS);
                }
            }
        }
    }
}
