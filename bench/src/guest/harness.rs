//! The timing loop every benchmark shares, and the lines it prints.
//!
//! A benchmark is an operation `op()` returning a hypercall result. The
//! harness runs it `warmup` times untimed, then `iters` times, each time
//! between two fenced `rdtsc`s, and subtracts the measured cost of an
//! empty `rdtsc` pair from every sample. Results are checked outside the
//! timed region. The hypervisor counters, when they exist, are read
//! before and after the timed runs.
//!
//! Rule for results: a first call answered with `ENOSYS` makes the
//! benchmark `unsupported`; any other unexpected result makes it `failed`
//! (with a `FAIL:` line). Nothing is ever dropped or estimated.

use core::fmt;

use guest_pv_shim::dom0_abi::Errno;
use guest_pv_shim::report::{self, Ret};
use pv_bench::catalogue::Benchmark;
use pv_bench::counters::{Snapshot, StatsBuffer};
use pv_bench::line;
use pv_bench::options::Options;
use pv_bench::stats::{COUNTER_PLACES, Fixed, Samples};

use crate::guest::asm::{bench_trace_begin, bench_trace_end, rdtsc_fenced};
use crate::guest::hc;

/// Why a benchmark produced no result.
#[derive(Clone, Copy, Debug)]
pub enum NotRun {
    /// A hypercall it needs answered `ENOSYS` (or the platform lacks the
    /// mechanism altogether).
    Unsupported(Reason),
    /// Something went wrong; a `FAIL:` line has been printed.
    Failed(Reason),
}

/// What a [`NotRun`] is about.
#[derive(Clone, Copy, Debug)]
pub enum Reason {
    /// A hypercall and its result.
    Call(&'static str, i64),
    /// A sentence.
    Text(&'static str),
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Call(call, ret) => write!(f, "{call} returned {}", Ret(*ret)),
            Reason::Text(text) => f.write_str(text),
        }
    }
}

/// `Unsupported` if `ret` is `ENOSYS`, else a `FAIL:` line for `check` and
/// `Failed`.
pub fn not_run(check: &str, call: &'static str, ret: i64) -> NotRun {
    if ret == Errno::ENOSYS.neg() {
        NotRun::Unsupported(Reason::Call(call, ret))
    } else {
        report::fail(check, format_args!("{call} returned {}", Ret(ret)));
        NotRun::Failed(Reason::Call(call, ret))
    }
}

/// A `FAIL:` line for `check` with `detail`, as a [`NotRun`].
pub fn failed(check: &str, detail: &'static str) -> NotRun {
    report::fail(check, format_args!("{detail}"));
    NotRun::Failed(Reason::Text(detail))
}

/// A benchmark's timed result.
#[derive(Clone, Copy, Debug)]
pub struct Measured {
    /// The corrected sample ticks.
    pub samples: Samples,
    /// Hypervisor counters over the timed runs, if the hypervisor has them.
    pub counters: Option<Snapshot>,
    /// How many times `op` ran, warm-up included.
    pub runs: u64,
}

/// Shows a closure that writes to a formatter (to print a line in one
/// console write).
struct Show<F: Fn(&mut fmt::Formatter<'_>) -> fmt::Result>(F);

impl<F: Fn(&mut fmt::Formatter<'_>) -> fmt::Result> fmt::Display for Show<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        (self.0)(f)
    }
}

/// Smallest delta of two back-to-back fenced `rdtsc`s.
fn rdtsc_overhead() -> u64 {
    (0..64)
        .map(|_| {
            let t0 = rdtsc_fenced();
            let t1 = rdtsc_fenced();
            t1.wrapping_sub(t0)
        })
        .min()
        .unwrap_or(0)
}

/// The counters now, if the hypervisor has them.
fn read_counters() -> Result<Snapshot, i64> {
    let mut buffer = StatsBuffer::request();
    match hc::stats_read(&mut buffer) {
        0 => Ok(Snapshot::from_buffer(&buffer)),
        err => Err(err),
    }
}

/// Shared state of one run of the guest.
#[derive(Clone, Copy, Debug)]
pub struct Harness {
    /// The command line.
    pub options: Options<'static>,
    /// Ticks of an empty fenced `rdtsc` pair, subtracted from each sample.
    pub overhead: u64,
    /// Counter delta of two back-to-back reads, if counters exist.
    counter_baseline: Option<Snapshot>,
}

impl Harness {
    /// Measures the `rdtsc` overhead and probes the counters (printing
    /// `counters unavailable` if they are missing).
    pub fn new(options: Options<'static>) -> Harness {
        let overhead = rdtsc_overhead();
        let counter_baseline = match (read_counters(), read_counters()) {
            (Ok(first), Ok(second)) => Some(second.since(&first)),
            (Err(err), _) | (_, Err(err)) => {
                guest_pv_shim::print!(
                    "{}",
                    Show(|f| line::write_counters_unavailable(
                        f,
                        format_args!("stats_op returned {}", Ret(err))
                    ))
                );
                None
            }
        };
        Harness {
            options,
            overhead,
            counter_baseline,
        }
    }

    /// Whether the hypervisor counters are readable.
    pub fn has_counters(&self) -> bool {
        self.counter_baseline.is_some()
    }

    /// The counters now (`None` without counters).
    pub fn counters_now(&self) -> Option<Snapshot> {
        self.counter_baseline.and_then(|_| read_counters().ok())
    }

    /// Counters spent since `before`, without the reads' own cost.
    pub fn counters_since(&self, before: Option<Snapshot>) -> Option<Snapshot> {
        let baseline = self.counter_baseline?;
        let after = read_counters().ok()?;
        Some(after.since(&before?).minus(&baseline))
    }

    /// Runs `op` `warmup` times untimed, then `iters` times timed (plus
    /// once between the trace markers if this benchmark is traced). Each
    /// result must satisfy `accept`.
    ///
    /// # Errors
    /// [`NotRun::Unsupported`] if the first run returns `ENOSYS`;
    /// [`NotRun::Failed`] (after a `FAIL:` line) if any result is refused.
    pub fn time(
        &self,
        name: &str,
        call: &'static str,
        mut op: impl FnMut() -> i64,
        accept: impl Fn(i64) -> bool,
    ) -> Result<Measured, NotRun> {
        let warmup = u64::from(self.options.warmup);
        let iters = u64::from(self.options.iters);
        let mut runs = 0;
        for _ in 0..warmup {
            let ret = op();
            runs += 1;
            if !accept(ret) {
                return Err(not_run(name, call, ret));
            }
        }
        if self.options.traces(name) {
            bench_trace_begin();
            let ret = op();
            bench_trace_end();
            runs += 1;
            if !accept(ret) {
                return Err(not_run(name, call, ret));
            }
        }
        let before = self.counters_now();
        let mut samples = Samples::new();
        for _ in 0..iters {
            let t0 = rdtsc_fenced();
            let ret = op();
            let t1 = rdtsc_fenced();
            runs += 1;
            if !accept(ret) {
                return Err(not_run(name, call, ret));
            }
            samples.record(t1.wrapping_sub(t0).saturating_sub(self.overhead));
        }
        Ok(Measured {
            samples,
            counters: self.counters_since(before),
            runs,
        })
    }

    /// Prints the lines for `bench`'s outcome: `BENCH` (measured,
    /// unsupported or failed), then `COUNTERS` or a `BENCH-NOTE`.
    pub fn report(&self, bench: &Benchmark, outcome: Result<Measured, NotRun>) {
        let name = bench.name;
        match outcome {
            Ok(measured) => match measured.samples.summary(bench.items_per_sample) {
                Some(summary) => {
                    guest_pv_shim::print!(
                        "{}",
                        Show(|f| line::write_measured(f, name, bench.unit, &summary))
                    );
                    if let Some(counters) = measured.counters {
                        print_counters(bench, &counters, summary.n);
                    }
                }
                None => self.report(
                    bench,
                    Err(NotRun::Failed(Reason::Text("no samples were taken"))),
                ),
            },
            Err(NotRun::Unsupported(reason)) => {
                guest_pv_shim::print!("{}", Show(|f| line::write_unsupported(f, name)));
                guest_pv_shim::print!(
                    "{}",
                    Show(|f| line::write_note(f, name, format_args!("{reason}")))
                );
            }
            Err(NotRun::Failed(reason)) => {
                guest_pv_shim::print!("{}", Show(|f| line::write_failed(f, name)));
                guest_pv_shim::print!(
                    "{}",
                    Show(|f| line::write_note(f, name, format_args!("{reason}")))
                );
            }
        }
    }
}

/// Prints `COUNTERS <name> per=<sample> ...` with every counter divided by
/// the number of samples.
fn print_counters(bench: &Benchmark, counters: &Snapshot, samples: u64) {
    let per_sample = |(index, &value): (usize, &u64)| {
        Fixed::ratio(u128::from(value), u128::from(samples), COUNTER_PLACES)
            .map(|fixed| (index, fixed))
    };
    guest_pv_shim::print!(
        "{}",
        Show(|f| line::write_counters(
            f,
            bench.name,
            bench.sample,
            counters.values().iter().enumerate().filter_map(per_sample)
        ))
    );
}
