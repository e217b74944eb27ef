//! `cargo xtask bench`: the benchmark guest under `-icount`, on this
//! hypervisor and (with `--against xen`) on Xen 4.17, side by side.
//!
//! Both runs boot the same `bench-guest` image with QEMU's multiboot
//! loader under TCG with `-icount shift=0,sleep=off`, where the TSC
//! advances once per executed instruction: every figure is a path length
//! in instructions, the same on every run. The guest prints one `BENCH`
//! line per benchmark (format in `pv_bench::line`); this module reads them
//! back, prints a table and optionally writes JSON.
//!
//! Xen never ends QEMU by itself: its run is stopped when the serial log
//! shows "Hardware Dom0 halted" (or another of `xen::STOP_MARKERS`).
//! Serial logs go to `target/xtask-bench/{oxen,xen}.log`.
//!
//! With `--trace <name>`, one sample of one benchmark is single-stepped
//! under gdb instead, and its instructions are attributed to functions
//! ([`trace`]).
//!
//! Not part of `cargo xtask test`; the suite runs the guest once with tiny
//! iteration counts (`bench_guest_smoke`) so it cannot rot.
#![forbid(unsafe_code)]

mod profile;
mod trace;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use hypervisor::exit::HostExit;
use pv_bench::catalogue;
use pv_bench::line::{self, Line};

use crate::build::{self, TARGET, Workspace};
use crate::cli::{BenchArgs, DEFAULT_HV_ARGS, DEFAULT_MEM_MIB};
use crate::linux;
use crate::packages;
use crate::qemu::{
    self, Accel, Boot, Devices, HostStep, Machine, Module, RunResult, RunSpec, Serial,
};
use crate::ramdisk::DomuSet;
use crate::serial_log;
use crate::status::{Outcome, XTASK_ERROR};
use crate::xen;
use profile::Profiler;

/// The machine both runs use: one CPU, instruction-counting TCG.
const BENCH_MACHINE: Machine = Machine {
    accel: Accel::TcgIcount,
    smp: 1,
    mem_mib: DEFAULT_MEM_MIB,
    devices: Devices::NONE,
};

/// The hypervisor feature that compiles in the statistics hypercall, if
/// the hypervisor crate declares it (`docs/performance.md`).
pub const STATS_FEATURE: &str = "stats";

/// Which hypervisor a run is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    /// This hypervisor.
    Ours,
    /// Xen 4.17.
    Xen,
}

impl Platform {
    /// Name in tables, JSON and log file names.
    pub fn name(self) -> &'static str {
        match self {
            Platform::Ours => "oxen",
            Platform::Xen => "xen",
        }
    }
}

/// One benchmark's result on one platform.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    /// Measured: minimum and mean per item, as printed, and samples.
    Measured {
        /// Smallest sample per item.
        min: String,
        /// Mean per item.
        mean: String,
        /// Samples.
        n: u64,
    },
    /// The platform cannot run it.
    Unsupported,
    /// It ran and a check failed.
    Failed,
    /// The guest never printed its line (it stopped earlier).
    NotReached,
}

impl Cell {
    /// The minimum as a number, if measured.
    fn min(&self) -> Option<f64> {
        match self {
            Cell::Measured { min, .. } => min.parse().ok(),
            _ => None,
        }
    }

    /// The word shown for a cell without numbers.
    fn word(&self) -> &'static str {
        match self {
            Cell::Measured { .. } => "",
            Cell::Unsupported => "unsupported",
            Cell::Failed => "failed",
            Cell::NotReached => "not reached",
        }
    }
}

/// Everything one run printed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Results {
    /// Benchmark names in the order printed.
    pub order: Vec<String>,
    /// Each benchmark's result.
    pub cells: BTreeMap<String, Cell>,
    /// Each measured benchmark's unit.
    pub units: BTreeMap<String, String>,
    /// Why a benchmark is unsupported or failed.
    pub notes: BTreeMap<String, String>,
    /// Hypervisor counters per benchmark: what a sample is, then
    /// `(counter, value per sample)`.
    pub counters: BTreeMap<String, (String, Vec<(String, String)>)>,
    /// Why the counters are unavailable, if the guest said so.
    pub counters_unavailable: Option<String>,
    /// The `BENCH-INFO` pairs.
    pub info: Vec<(String, String)>,
    /// The guest's `Test result:` words.
    pub test_results: Vec<String>,
}

/// Reads a run's serial log.
pub fn parse_results(log: &str) -> Results {
    let mut results = Results::default();
    for text in log.lines() {
        let Some(parsed) = line::parse(text) else {
            continue;
        };
        let mut record = |name: &str, cell: Cell| {
            if !results.cells.contains_key(name) {
                results.order.push(name.to_owned());
            }
            results.cells.insert(name.to_owned(), cell);
        };
        match parsed {
            Line::Measured {
                name,
                unit,
                summary,
            } => {
                record(
                    name,
                    Cell::Measured {
                        min: summary.min.to_string(),
                        mean: summary.mean.to_string(),
                        n: summary.n,
                    },
                );
                results.units.insert(name.to_owned(), unit.to_owned());
            }
            Line::Unsupported { name } => record(name, Cell::Unsupported),
            Line::Failed { name } => record(name, Cell::Failed),
            Line::Note { name, text } => {
                results.notes.insert(name.to_owned(), text.to_owned());
            }
            Line::Counters { name, per, values } => {
                let values = values.map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
                results
                    .counters
                    .insert(name.to_owned(), (per.to_owned(), values));
            }
            Line::CountersUnavailable { why } => {
                results.counters_unavailable = Some(why.to_owned());
            }
            Line::Info(pairs) => {
                results
                    .info
                    .extend(pairs.map(|(k, v)| (k.to_owned(), v.to_owned())));
            }
        }
    }
    results.test_results = serial_log::parse(log).results;
    results
}

/// One platform's run.
#[derive(Clone, Debug)]
pub struct PlatformRun {
    /// Which platform.
    pub platform: Platform,
    /// How QEMU ended.
    pub outcome: Outcome,
    /// What the guest printed.
    pub results: Results,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
}

impl PlatformRun {
    /// Whether the guest ran to its end: the platform's normal end of a
    /// powered-off dom0, and a `Test result:` line.
    pub fn completed(&self) -> bool {
        let ended = match self.platform {
            Platform::Ours => self.outcome == Outcome::Exit(HostExit::Dom0Poweroff),
            Platform::Xen => self.outcome == Outcome::Stopped("Hardware Dom0 halted"),
        };
        ended && !self.results.test_results.is_empty()
    }

    /// The result for `name` (not reached if the guest never printed it).
    pub fn cell(&self, name: &str) -> Cell {
        self.results
            .cells
            .get(name)
            .cloned()
            .unwrap_or(Cell::NotReached)
    }
}

/// Whether the `[features]` table of a `Cargo.toml` declares `feature`.
pub fn declares_feature(cargo_toml: &str, feature: &str) -> bool {
    let mut in_features = false;
    for line in cargo_toml.lines().map(str::trim) {
        if line.starts_with('[') {
            in_features = line == "[features]";
        } else if in_features
            && let Some((key, _)) = line.split_once('=')
            && key.trim().trim_matches('"') == feature
        {
            return true;
        }
    }
    false
}

/// Builds the hypervisor (with the statistics feature when it exists) and
/// the benchmark guest; returns whether statistics were compiled in.
fn build_images(workspace: &Workspace, build_hypervisor: bool) -> Result<bool, String> {
    let manifest = workspace.root.join("hypervisor/Cargo.toml");
    let manifest_text =
        fs::read_to_string(&manifest).map_err(|e| format!("{}: {e}", manifest.display()))?;
    let stats = build_hypervisor && declares_feature(&manifest_text, STATS_FEATURE);
    let mut cargo = workspace.cargo();
    cargo.args(["build", "--release", "--target", TARGET]);
    cargo.args(["-p", "pv-bench", "--features", "pv-bench/bare-metal"]);
    cargo.args(["-p", "dom0", "--features", "dom0/bare-metal"]);
    cargo.args(["-p", "domu-demo", "--features", "domu-demo/bare-metal"]);
    if build_hypervisor {
        let features = if stats {
            format!("hypervisor/bare-metal,hypervisor/{STATS_FEATURE}")
        } else {
            "hypervisor/bare-metal".to_owned()
        };
        cargo.args(["-p", "hypervisor", "--features", &features]);
    }
    eprintln!(
        "xtask: building the benchmark guest{} ({TARGET}, release)",
        if build_hypervisor {
            if stats {
                " and the hypervisor with statistics"
            } else {
                " and the hypervisor"
            }
        } else {
            ""
        }
    );
    build::run_checked(cargo, "cargo build")?;
    Ok(stats)
}

/// The benchmark guest's command line.
fn guest_args(args: &BenchArgs) -> String {
    let mut line = format!("iters={}", args.iters);
    if let Some(warmup) = args.warmup {
        line.push_str(&format!(" warmup={warmup}"));
    }
    if let Some(only) = &args.only {
        line.push_str(&format!(" only={only}"));
    }
    line
}

/// What a benchmark run boots as dom0.
enum BenchDom0<'a> {
    /// The benchmark guest.
    Guest(&'a Path),
    /// Debian's Linux with the test initramfs (`oxen=check`), for
    /// [`LINUX_BOOT`].
    Linux(&'a linux::LinuxFiles),
    /// The toolstack dom0 with domUs that measure what the benchmark
    /// guest cannot (a [`ToolstackRun`]).
    Toolstack {
        /// The dom0 image.
        dom0: &'a Path,
        /// Its ramdisk.
        ramdisk: &'a Path,
        /// The run.
        run: &'a ToolstackRun,
        /// The disk image attached as a virtio disk, if the run needs one.
        disk: Option<&'a Path>,
    },
}

/// A boot of the toolstack dom0 that measures benchmarks the benchmark
/// guest reports unsupported (they need a second domain or a device).
pub struct ToolstackRun {
    /// The benchmarks it measures.
    pub names: &'static [&'static str],
    /// The domUs in dom0's ramdisk.
    pub domus: DomuSet,
    /// dom0's command line.
    pub dom0_args: &'static str,
    /// Whether it needs a virtio disk (a fresh test image).
    pub disk: bool,
    /// What the host does during the run through the NIC's port forward
    /// (empty: no NIC).
    pub host_steps: &'static [HostStep],
    /// The log's name suffix.
    pub log_suffix: &'static str,
}

/// The host's side of the network benchmarks' boot: three streams to
/// dom0, then three to the domU.
pub const NET_STREAMS: &[HostStep] = &[STREAM; 2 * catalogue::NET_RECV_PASSES as usize];

/// One stream of the network benchmarks: once the receiver says it
/// listens, the host sends it `NET_RECV_MIB` MiB of zeros through the
/// port forward and closes (bash's `/dev/tcp`, so nothing needs
/// installing).
const STREAM: HostStep = HostStep {
    after: catalogue::NET_RECV_LISTENING,
    command: &[
        "bash",
        "-c",
        "head -c $((8 << 20)) /dev/zero > /dev/tcp/127.0.0.1/{port}",
    ],
    expect: &[],
    then_type: &[],
};
const _: () = assert!(catalogue::NET_RECV_MIB == 8);

/// The toolstack runs: the interdomain ping-pong with its pong domU
/// (dom0 times the ping-pong, the `pong` domU its xenstore reads), and
/// the block reads through dom0's driver and through blkback (dom0 reads
/// the disk, then the `disk` domU reads it again; each idle wait jumps
/// the clock to QEMU's next timer, hence dom0's long `timeout`, in
/// system time).
pub const TOOLSTACK_RUNS: &[ToolstackRun] = &[
    ToolstackRun {
        names: &["evtchn_interdomain_pingpong", "xenstore_read"],
        domus: DomuSet::Pong,
        dom0_args: "expect=poweroff",
        disk: false,
        host_steps: &[],
        log_suffix: "-toolstack",
    },
    ToolstackRun {
        names: &["blk_read_dom0", "blk_read_domu"],
        domus: DomuSet::BlkBench,
        dom0_args: "expect=poweroff readbench timeout=100000",
        disk: true,
        host_steps: &[],
        log_suffix: "-blk",
    },
    ToolstackRun {
        names: &["net_recv_dom0", "net_recv_domu"],
        domus: DomuSet::NetBench,
        dom0_args: "expect=poweroff nic netbench timeout=100000",
        disk: false,
        host_steps: NET_STREAMS,
        log_suffix: "-net",
    },
];

/// The Linux row: Linux's own `/proc/uptime` when `/init` starts, booted
/// as dom0 with the hypervisor's Linux command line. Under `-icount
/// shift=0` a nanosecond of virtual time is one instruction, so it counts
/// every instruction from the hypervisor's first to `/init` (and the
/// virtual time an idle CPU skips to its next timer).
pub const LINUX_BOOT: &str = "linux_boot_to_init";

/// Records [`LINUX_BOOT`] in `results` from a Linux run's log: measured
/// if Linux printed its uptime and the run then powered off cleanly.
fn linux_results(results: &mut Results, platform: Platform, result: &RunResult) {
    let stage = match platform {
        Platform::Ours => linux::Platform::Oxen,
        Platform::Xen => linux::Platform::Xen,
    };
    let powered_off = linux::STAGES
        .last()
        .is_some_and(|s| (s.reached)(stage, &result.outcome, &result.serial));
    let cell = match linux::uptime_at_marker_ns(&result.serial) {
        Some(ns) if powered_off => Cell::Measured {
            min: ns.to_string(),
            mean: ns.to_string(),
            n: 1,
        },
        Some(_) => {
            results.notes.insert(
                LINUX_BOOT.to_owned(),
                format!("Linux did not power off cleanly ({})", result.outcome),
            );
            Cell::Failed
        }
        None => Cell::NotReached,
    };
    results.order.push(LINUX_BOOT.to_owned());
    if let Some(benchmark) = catalogue::find(LINUX_BOOT) {
        results
            .units
            .insert(LINUX_BOOT.to_owned(), benchmark.unit.to_owned());
    }
    results.cells.insert(LINUX_BOOT.to_owned(), cell);
}

/// Boots `kernel` with `dom0` and reads the results; the log is
/// `<platform><log_suffix>.log`.
fn boot(
    platform: Platform,
    kernel: &Path,
    append: &str,
    dom0: &BenchDom0<'_>,
    args: &BenchArgs,
    log_dir: &Path,
    profiler: Option<&Profiler>,
) -> Result<PlatformRun, String> {
    let mut machine = BENCH_MACHINE;
    let mut timeout = args.timeout_secs;
    let (modules, log_suffix) = match dom0 {
        BenchDom0::Linux(files) => {
            machine.mem_mib = linux::MEM_MIB;
            timeout = timeout.max(linux::MIN_TIMEOUT_SECS);
            (files.check_modules(), "-linux")
        }
        BenchDom0::Guest(guest) => (
            vec![Module {
                path: guest.to_path_buf(),
                args: guest_args(args),
            }],
            "",
        ),
        BenchDom0::Toolstack {
            dom0,
            ramdisk,
            run,
            disk,
        } => {
            machine.devices.disk = disk.map(Path::to_path_buf);
            if !run.host_steps.is_empty() {
                machine.devices.nic = true;
                machine.devices.http_forward = Some(qemu::free_port()?);
            }
            (
                vec![
                    Module {
                        path: dom0.to_path_buf(),
                        args: run.dom0_args.to_owned(),
                    },
                    Module {
                        path: ramdisk.to_path_buf(),
                        args: String::new(),
                    },
                ],
                run.log_suffix,
            )
        }
    };
    let boot = Boot::Direct {
        kernel: kernel.to_path_buf(),
        append: append.to_owned(),
        modules,
    };
    let mut qemu_args = qemu::qemu_args(&machine, &boot)?;
    let profile_out = log_dir.join(format!("{}{log_suffix}.profile", platform.name()));
    if let Some(profiler) = profiler {
        let _ = fs::remove_file(&profile_out);
        qemu_args.extend(profiler.qemu_args(&profile_out));
    }
    eprintln!("xtask: benchmarking on {}{log_suffix}", platform.name());
    let result = qemu::run(&RunSpec {
        args: qemu_args.clone(),
        serial: Serial::Capture,
        timeout: Some(Duration::from_secs(timeout)),
        stop_markers: match platform {
            Platform::Ours => &[],
            Platform::Xen => xen::STOP_MARKERS,
        },
        typing: &[],
        host_steps: match dom0 {
            BenchDom0::Toolstack { run, .. } => run.host_steps,
            BenchDom0::Guest(_) | BenchDom0::Linux(_) => &[],
        },
        port: machine.devices.http_forward,
    })?;
    save_log(
        &log_dir.join(format!("{}{log_suffix}.log", platform.name())),
        &qemu_args,
        &result,
    )?;
    if let Some(profiler) = profiler {
        let Boot::Direct { modules, .. } = &boot else {
            unreachable!("benchmarks boot directly")
        };
        let mut guests: Vec<PathBuf> = modules
            .iter()
            .map(|m| m.path.clone())
            .filter(|path| is_elf(path))
            .collect();
        guests.extend(profiler.domus.iter().cloned());
        write_profile(
            &profile_out,
            &format!("{}{log_suffix}", platform.name()),
            (platform == Platform::Ours).then_some(kernel),
            &guests,
        )?;
    }
    let mut results = parse_results(&result.serial);
    if let BenchDom0::Linux(_) = dom0 {
        linux_results(&mut results, platform, &result);
    }
    Ok(PlatformRun {
        platform,
        outcome: result.outcome,
        results,
        elapsed: result.elapsed,
    })
}

/// Whether `path` is an ELF file (a ramdisk is not).
fn is_elf(path: &Path) -> bool {
    use std::io::Read as _;
    let mut magic = [0u8; 4];
    fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok()
        && magic == *b"\x7fELF"
}

/// Names the blocks of a profiled boot (`out`, the plugin's output) and
/// writes the report beside it (`<boot>.profile.txt`); prints its head.
fn write_profile(
    out: &Path,
    title: &str,
    hypervisor: Option<&Path>,
    guests: &[PathBuf],
) -> Result<(), String> {
    let text = fs::read_to_string(out).map_err(|e| {
        format!(
            "{}: {e} (the profiling plugin wrote nothing: did QEMU exit normally?)",
            out.display()
        )
    })?;
    let report = profile::report(&text, title, hypervisor, guests)?;
    let path = out.with_extension("profile.txt");
    fs::write(&path, &report).map_err(|e| format!("{}: {e}", path.display()))?;
    for section in report.split("\n\n") {
        for line in section.lines().take(16) {
            println!("{line}");
        }
    }
    println!("  (the whole report: {})", path.display());
    Ok(())
}

/// Puts the toolstack run's measurement of `name` into `run` (the
/// benchmark guest's, which reports it unsupported); a toolstack run
/// that did not reach its end leaves it failed.
fn merge_toolstack(run: &mut PlatformRun, toolstack: &PlatformRun, name: &str) {
    let cell = match toolstack.cell(name) {
        cell @ Cell::Measured { .. } if toolstack.completed() => cell,
        _ => Cell::Failed,
    };
    let note = (cell == Cell::Failed)
        .then(|| format!("the toolstack run ended with {}", toolstack.outcome));
    merge_cell(run, &toolstack.results, name, cell, note);
}

/// Puts `cell` as row `name` into `run`, with its unit from `from` and
/// `note` (or `from`'s note) if any.
fn merge_cell(run: &mut PlatformRun, from: &Results, name: &str, cell: Cell, note: Option<String>) {
    let results = &mut run.results;
    if !results.cells.contains_key(name) {
        results.order.push(name.to_owned());
    }
    results.notes.remove(name);
    if let Some(note) = note.or_else(|| from.notes.get(name).cloned()) {
        results.notes.insert(name.to_owned(), note);
    }
    if let Some(unit) = from.units.get(name) {
        results.units.insert(name.to_owned(), unit.clone());
    }
    results.cells.insert(name.to_owned(), cell);
}

/// Writes a run's serial log followed by the QEMU command and outcome.
fn save_log(path: &Path, args: &[std::ffi::OsString], result: &RunResult) -> Result<(), String> {
    let mut text = result.serial.clone();
    if !text.ends_with('\n') {
        text.push('\n');
    }
    let _ = writeln!(text, "--- xtask ---");
    let _ = writeln!(text, "command: {}", qemu::display_command(args));
    let _ = writeln!(text, "outcome: {}", result.outcome);
    let _ = writeln!(text, "time: {:.1} s", result.elapsed.as_secs_f64());
    if !result.stderr.is_empty() {
        let _ = writeln!(text, "--- QEMU stderr ---\n{}", result.stderr);
    }
    fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// The benchmark names to show: the catalogue's (or `--only`'s), then any
/// other name a run printed.
fn row_names(args: &BenchArgs, runs: &[PlatformRun]) -> Vec<String> {
    let mut names: Vec<String> = catalogue::ALL
        .iter()
        .map(|b| b.name)
        .filter(|name| {
            args.only
                .as_deref()
                .is_none_or(|only| only.split(',').any(|n| n == *name))
        })
        .map(str::to_owned)
        .collect();
    for run in runs {
        for name in &run.results.order {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    names
}

/// A benchmark's unit: from a run that measured it, else the catalogue.
fn unit_of(name: &str, runs: &[PlatformRun]) -> String {
    runs.iter()
        .find_map(|run| run.results.units.get(name).cloned())
        .or_else(|| catalogue::find(name).map(|b| b.unit.to_owned()))
        .unwrap_or_default()
}

/// `ours / theirs` of the minima, to two decimals.
fn ratio(ours: &Cell, theirs: &Cell) -> Option<f64> {
    match (ours.min(), theirs.min()) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

/// Lays out rows of cells as an aligned text table (the first `left`
/// columns left-aligned, the others right-aligned), with a rule under the
/// header.
pub fn render_table(header: &[String], rows: &[Vec<String>], left: usize) -> String {
    let columns = header.len();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate().take(columns) {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let format_row = |row: &[String]| {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if i < left {
                    format!("{cell:<width$}", width = widths[i])
                } else {
                    format!("{cell:>width$}", width = widths[i])
                }
            })
            .collect();
        cells.join("  ").trim_end().to_owned()
    };
    let mut out = format_row(header);
    out.push('\n');
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    out.push_str(&rule.join("  "));
    out.push('\n');
    for row in rows {
        out.push_str(&format_row(row));
        out.push('\n');
    }
    out
}

/// The results table: benchmark, unit, then per platform min and mean,
/// then the ratio of the minima when both platforms ran.
pub fn results_table(names: &[String], runs: &[PlatformRun]) -> String {
    let (header, rows) = results_cells(names, runs);
    render_table(&header, &rows, 2)
}

/// The header and rows of [`results_table`].
fn results_cells(names: &[String], runs: &[PlatformRun]) -> (Vec<String>, Vec<Vec<String>>) {
    let mut header = vec!["benchmark".to_owned(), "unit".to_owned()];
    for run in runs {
        let who = match run.platform {
            Platform::Ours => "ours",
            Platform::Xen => "Xen",
        };
        header.push(format!("{who} min"));
        header.push(format!("{who} mean"));
    }
    let compare = runs.len() == 2;
    if compare {
        header.push("ours/Xen".to_owned());
    }
    let rows: Vec<Vec<String>> = names
        .iter()
        .map(|name| {
            let mut row = vec![name.clone(), unit_of(name, runs)];
            for run in runs {
                match run.cell(name) {
                    Cell::Measured { min, mean, .. } => {
                        row.push(min);
                        row.push(mean);
                    }
                    other => {
                        row.push(other.word().to_owned());
                        row.push(String::new());
                    }
                }
            }
            if compare {
                let shown = ratio(&runs[0].cell(name), &runs[1].cell(name))
                    .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}"));
                row.push(shown);
            }
            row
        })
        .collect();
    (header, rows)
}

/// Where `docs/performance.md` keeps the generated results.
pub const DOCS_START: &str =
    "<!-- generated by cargo xtask bench --against xen --update-docs: start -->";
/// The end of the generated block.
pub const DOCS_END: &str =
    "<!-- generated by cargo xtask bench --against xen --update-docs: end -->";

/// The results as a Markdown table (the same cells as [`results_table`]).
pub fn results_markdown(names: &[String], runs: &[PlatformRun]) -> String {
    let (header, rows) = results_cells(names, runs);
    markdown_table(&header, &rows)
}

/// Rows of cells as a Markdown table.
pub fn markdown_table(header: &[String], rows: &[Vec<String>]) -> String {
    let line = |cells: &[String]| format!("| {} |\n", cells.join(" | "));
    let mut out = line(header);
    out.push_str(&format!("|{}\n", "---|".repeat(header.len())));
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

/// `doc` with the text between [`DOCS_START`] and [`DOCS_END`] replaced by
/// `block`; an error if the markers are missing or out of order.
pub fn splice_docs(doc: &str, block: &str) -> Result<String, String> {
    let start = doc
        .find(DOCS_START)
        .ok_or("docs/performance.md has no start marker for the results")?;
    let end = doc
        .find(DOCS_END)
        .filter(|&end| end > start)
        .ok_or("docs/performance.md has no end marker after the start marker")?;
    Ok(format!(
        "{}{DOCS_START}\n{block}{}",
        &doc[..start],
        &doc[end..]
    ))
}

/// The hypervisor-counter table of one run, or the line saying why there
/// is none.
pub fn counters_table(names: &[String], run: &PlatformRun) -> String {
    let results = &run.results;
    if results.counters.is_empty() {
        let why = results
            .counters_unavailable
            .as_deref()
            .unwrap_or("no COUNTERS lines");
        return format!(
            "hypervisor counters on {}: unavailable ({why})\n",
            run.platform.name()
        );
    }
    let shown: Vec<&str> = pv_bench::counters::HIDDEN_COSTS
        .iter()
        .map(|c| c.name())
        .chain(["hv_tsc"])
        .collect();
    let mut header = vec!["benchmark".to_owned(), "per".to_owned()];
    header.extend(shown.iter().map(|s| (*s).to_owned()));
    let rows: Vec<Vec<String>> = names
        .iter()
        .filter_map(|name| {
            let (per, values) = results.counters.get(name)?;
            let mut row = vec![name.clone(), per.clone()];
            for counter in &shown {
                let value = values.iter().find(|(k, _)| k == counter);
                row.push(value.map_or_else(|| "-".to_owned(), |(_, v)| v.clone()));
            }
            Some(row)
        })
        .collect();
    format!(
        "hypervisor events per sample on {}:\n{}",
        run.platform.name(),
        render_table(&header, &rows, 2)
    )
}

/// A JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A number as JSON (a printed decimal is already valid JSON).
fn json_number(text: &str) -> String {
    if text.parse::<f64>().is_ok_and(f64::is_finite) {
        text.to_owned()
    } else {
        json_string(text)
    }
}

/// One platform's result for `name`, as a JSON object.
fn json_cell(run: &PlatformRun, name: &str) -> String {
    let cell = run.cell(name);
    let mut out = String::from("{");
    match &cell {
        Cell::Measured { min, mean, n } => {
            let _ = write!(
                out,
                "\"status\": \"measured\", \"min\": {}, \"mean\": {}, \"n\": {n}",
                json_number(min),
                json_number(mean)
            );
        }
        other => {
            let _ = write!(out, "\"status\": {}", json_string(other.word()));
        }
    }
    if let Some(note) = run.results.notes.get(name) {
        let _ = write!(out, ", \"note\": {}", json_string(note));
    }
    if let Some((per, values)) = run.results.counters.get(name) {
        let values: Vec<String> = values
            .iter()
            .map(|(k, v)| format!("{}: {}", json_string(k), json_number(v)))
            .collect();
        let _ = write!(
            out,
            ", \"counters\": {{\"per\": {}, {}}}",
            json_string(per),
            values.join(", ")
        );
    }
    out.push('}');
    out
}

/// What the JSON file records about the run as a whole.
#[derive(Clone, Debug)]
pub struct RunInfo {
    /// UTC date, `YYYY-MM-DD`.
    pub date: String,
    /// The workspace's commit (`+` when the tree has changes).
    pub commit: String,
    /// The guest's command line.
    pub guest_args: String,
}

/// The whole result as JSON.
pub fn to_json(info: &RunInfo, names: &[String], runs: &[PlatformRun]) -> String {
    let mut out = String::from("{\n");
    let _ = writeln!(out, "  \"date\": {},", json_string(&info.date));
    let _ = writeln!(out, "  \"commit\": {},", json_string(&info.commit));
    let _ = writeln!(out, "  \"guest_args\": {},", json_string(&info.guest_args));
    let _ = writeln!(
        out,
        "  \"method\": \"QEMU TCG -icount shift=0,sleep=off: one TSC tick per instruction\","
    );
    out.push_str("  \"platforms\": {");
    let platforms: Vec<String> = runs
        .iter()
        .map(|run| {
            let info: Vec<String> = run
                .results
                .info
                .iter()
                .map(|(k, v)| format!("{}: {}", json_string(k), json_string(v)))
                .collect();
            format!(
                "\n    {}: {{\"outcome\": {}, \"completed\": {}, \"counters_unavailable\": {}, \"info\": {{{}}}}}",
                json_string(run.platform.name()),
                json_string(&run.outcome.to_string()),
                run.completed(),
                run.results
                    .counters_unavailable
                    .as_deref()
                    .map_or_else(|| "null".to_owned(), json_string),
                info.join(", ")
            )
        })
        .collect();
    out.push_str(&platforms.join(","));
    out.push_str("\n  },\n  \"benchmarks\": [");
    let rows: Vec<String> = names
        .iter()
        .map(|name| {
            let mut row = format!(
                "\n    {{\"name\": {}, \"unit\": {}",
                json_string(name),
                json_string(&unit_of(name, runs))
            );
            if let Some(bench) = catalogue::find(name) {
                let _ = write!(row, ", \"what\": {}", json_string(bench.what));
            }
            for run in runs {
                let _ = write!(
                    row,
                    ", {}: {}",
                    json_string(run.platform.name()),
                    json_cell(run, name)
                );
            }
            if let [ours, theirs] = runs {
                let shown = ratio(&ours.cell(name), &theirs.cell(name))
                    .map_or_else(|| "null".to_owned(), |r| format!("{r:.4}"));
                let _ = write!(row, ", \"ratio_min\": {shown}");
            }
            row.push('}');
            row
        })
        .collect();
    out.push_str(&rows.join(","));
    out.push_str("\n  ]\n}\n");
    out
}

/// `YYYY-MM-DD` of a day count since 1970-01-01 (proleptic Gregorian).
pub fn civil_date(days_since_epoch: i64) -> String {
    // Shift the epoch to 0000-03-01 so leap days end each 400-year era.
    let z = days_since_epoch + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Today's UTC date.
fn today() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    civil_date(i64::try_from(secs / 86_400).unwrap_or(0))
}

/// The workspace's commit, with `+` when the tree has uncommitted changes
/// (as the hypervisor's banner shows it); `unknown` without git.
fn commit(root: &Path) -> String {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(hash) => {
            let dirty = git(&["status", "--porcelain"]).is_some_and(|s| !s.is_empty());
            if dirty { format!("{hash}+") } else { hash }
        }
        None => "unknown".to_owned(),
    }
}

/// `cargo xtask bench --trace <name>`: the trace reports, ours first; a
/// platform that cannot trace it is reported and the other still runs.
fn trace_runs(
    name: &str,
    args: &BenchArgs,
    hypervisor: &Path,
    guest: &Path,
    log_dir: &Path,
) -> Result<u8, String> {
    let limit = Duration::from_secs(args.timeout_secs);
    let mut targets = vec![(Platform::Ours, hypervisor.to_path_buf())];
    if args.against_xen {
        targets.push((Platform::Xen, xen::unpack(log_dir)?));
    }
    let mut status = 0;
    for (platform, kernel) in &targets {
        let target = trace::Target {
            platform: *platform,
            kernel,
            append: match platform {
                Platform::Ours => DEFAULT_HV_ARGS,
                Platform::Xen => xen::XEN_ARGS,
            },
            symbols: (*platform == Platform::Ours).then_some(hypervisor),
        };
        match trace::trace(&target, guest, name, log_dir, limit) {
            Ok(report) => print!("{report}"),
            Err(error) => {
                println!("no trace of {name} on {}: {error}", platform.name());
                status = XTASK_ERROR;
            }
        }
    }
    Ok(status)
}

/// Rewrites the generated results block of `docs/performance.md`.
fn update_docs(
    workspace: &Workspace,
    info: &RunInfo,
    names: &[String],
    runs: &[PlatformRun],
) -> Result<(), String> {
    if let Some(run) = runs.iter().find(|r| !r.completed()) {
        return Err(format!(
            "not updating docs/performance.md: the run on {} did not finish",
            run.platform.name()
        ));
    }
    let path = workspace.root.join("docs/performance.md");
    let doc = fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let block = format!(
        "{}, commit {}, `cargo xtask bench --against xen` (guest: {}), this\n\
         hypervisor built with statistics. Guest plus hypervisor instructions per\n\
         unit (TCG `-icount shift=0`); the ratio uses the minima.\n\n{}",
        info.date,
        info.commit,
        info.guest_args,
        results_markdown(names, runs)
    );
    fs::write(&path, splice_docs(&doc, &block)?).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("results table written to {}", path.display());
    Ok(())
}

/// Builds the profiling plugin (`qemu-profile`, for the host).
fn build_profiler(workspace: &Workspace) -> Result<Profiler, String> {
    let status = workspace
        .cargo()
        .args(["build", "--release", "--quiet", "-p", "qemu-profile"])
        .status()
        .map_err(|e| format!("cannot start cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building the profiling plugin failed ({status})"));
    }
    Ok(Profiler {
        plugin: workspace.target_dir.join("release/libqemu_profile.so"),
        domus: vec![workspace.domu_demo()],
    })
}

/// `cargo xtask bench`; returns the exit status (0 when every run reached
/// its end).
pub fn bench(workspace: &Workspace, args: &BenchArgs) -> Result<u8, String> {
    let mut tools = packages::QEMU.to_vec();
    if args.trace.is_some() {
        tools.extend_from_slice(trace::TOOLS);
    }
    if args.against_xen {
        tools.extend_from_slice(packages::XEN);
    }
    packages::ensure(&tools)?;
    let stats = build_images(workspace, args.hypervisor.is_none())?;
    let hypervisor: PathBuf = match &args.hypervisor {
        Some(path) => std::path::absolute(path).map_err(|e| format!("{}: {e}", path.display()))?,
        None => workspace.hypervisor(),
    };
    let guest = workspace.bench_guest();
    let log_dir = workspace.xtask_dir("xtask-bench");
    fs::create_dir_all(&log_dir).map_err(|e| format!("{}: {e}", log_dir.display()))?;
    if let Some(name) = &args.trace {
        return trace_runs(name, args, &hypervisor, &guest, &log_dir);
    }
    let profiler = if args.profile {
        Some(build_profiler(workspace)?)
    } else {
        None
    };
    let profiler = profiler.as_ref();
    let mut targets = vec![(Platform::Ours, hypervisor, DEFAULT_HV_ARGS)];
    if args.against_xen {
        targets.push((Platform::Xen, xen::unpack(&log_dir)?, xen::XEN_ARGS));
    }
    let selected = |name: &str| {
        args.only
            .as_deref()
            .is_none_or(|only| only.split(',').any(|n| n == name))
    };
    let mut extra = Vec::new();
    for run in TOOLSTACK_RUNS {
        if run.names.iter().any(|n| selected(n)) {
            extra.push((run, run.domus.write(workspace, &log_dir)?));
        }
    }
    let linux = selected(LINUX_BOOT).then(|| linux::prepare(workspace));
    let mut runs = Vec::new();
    for (platform, kernel, append) in &targets {
        let mut run = boot(
            *platform,
            kernel,
            append,
            &BenchDom0::Guest(&guest),
            args,
            &log_dir,
            profiler,
        )?;
        for (toolstack_run, ramdisk) in &extra {
            let image = log_dir.join(format!(
                "{}{}.img",
                platform.name(),
                toolstack_run.log_suffix
            ));
            if toolstack_run.disk {
                crate::disk::create(&image)?;
            }
            let dom0 = workspace.dom0();
            let toolstack = BenchDom0::Toolstack {
                dom0: &dom0,
                ramdisk,
                run: toolstack_run,
                disk: toolstack_run.disk.then_some(image.as_path()),
            };
            let measured = boot(
                *platform, kernel, append, &toolstack, args, &log_dir, profiler,
            )?;
            for name in toolstack_run.names {
                merge_toolstack(&mut run, &measured, name);
            }
        }
        match &linux {
            Some(Ok(files)) => {
                let linux_args = match platform {
                    Platform::Ours => linux::HV_ARGS,
                    Platform::Xen => linux::XEN_ARGS,
                };
                let measured = boot(
                    *platform,
                    kernel,
                    linux_args,
                    &BenchDom0::Linux(files),
                    args,
                    &log_dir,
                    profiler,
                )?;
                let cell = measured.cell(LINUX_BOOT);
                merge_cell(&mut run, &measured.results, LINUX_BOOT, cell, None);
            }
            Some(Err(error)) => {
                let note = Some(format!("no Linux to boot: {error}"));
                merge_cell(
                    &mut run,
                    &Results::default(),
                    LINUX_BOOT,
                    Cell::Failed,
                    note,
                );
            }
            None => {}
        }
        runs.push(run);
    }
    let info = RunInfo {
        date: today(),
        commit: commit(&workspace.root),
        guest_args: guest_args(args),
    };
    let names = row_names(args, &runs);
    println!(
        "benchmarks, {} (commit {}), guest: {}; guest+hypervisor instructions per unit (TCG -icount shift=0)",
        info.date, info.commit, info.guest_args
    );
    print!("{}", results_table(&names, &runs));
    for run in &runs {
        let notes: Vec<String> = names
            .iter()
            .filter_map(|name| {
                let note = run.results.notes.get(name)?;
                Some(format!("  {name}: {note}"))
            })
            .collect();
        if !notes.is_empty() {
            println!(
                "not measured on {}:\n{}",
                run.platform.name(),
                notes.join("\n")
            );
        }
    }
    for run in &runs {
        print!("{}", counters_table(&names, run));
    }
    if !stats && args.hypervisor.is_none() {
        println!("(the hypervisor has no '{STATS_FEATURE}' feature yet: built without statistics)");
    }
    if args.update_docs {
        update_docs(workspace, &info, &names, &runs)?;
    }
    if let Some(path) = &args.json {
        fs::write(path, to_json(&info, &names, &runs))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        println!("results written to {}", path.display());
    }
    let mut status = 0;
    for run in &runs {
        println!(
            "{}: {} in {:.1} s (log: {})",
            run.platform.name(),
            run.outcome,
            run.elapsed.as_secs_f64(),
            log_dir
                .join(format!("{}.log", run.platform.name()))
                .display()
        );
        if !run.completed() {
            eprintln!(
                "xtask: the benchmark guest did not run to its end on {}",
                run.platform.name()
            );
            status = XTASK_ERROR;
        }
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_keeps_empty_cells() {
        let header = ["a", "b", "c"].map(str::to_owned).to_vec();
        let rows = vec![["x", "", "z"].map(str::to_owned).to_vec()];
        assert_eq!(
            markdown_table(&header, &rows),
            "| a | b | c |\n|---|---|---|\n| x |  | z |\n"
        );
    }

    #[test]
    fn docs_block_is_replaced_between_its_markers() {
        let doc = format!("intro\n{DOCS_START}\nold table\n{DOCS_END}\nafter\n");
        assert_eq!(
            splice_docs(&doc, "new\n").unwrap(),
            format!("intro\n{DOCS_START}\nnew\n{DOCS_END}\nafter\n")
        );
        assert!(splice_docs("no markers", "x").is_err());
        let reversed = format!("{DOCS_END}\n{DOCS_START}\n");
        assert!(splice_docs(&reversed, "x").is_err());
    }

    #[test]
    fn the_performance_page_has_the_markers() {
        let doc = include_str!("../../docs/performance.md");
        assert!(splice_docs(doc, "x\n").is_ok());
    }

    const OURS: &str = "\
(HV) starting dom0\n\
--- pv-bench: bench ---\n\
counters unavailable: stats_op returned -38 (ENOSYS)\n\
BENCH-INFO platform=oxen rdtsc_overhead=5 iters=4 warmup=1 counters=no\n\
BENCH null_hypercall tsc/call mean=241.0 min=240.0 n=4\n\
BENCH mmu_update_1 unsupported\n\
BENCH-NOTE mmu_update_1 mmu_update returned -38 (ENOSYS)\n\
Test result: SUCCESS\n";

    const THEIRS: &str = "\
BENCH null_hypercall tsc/call mean=282.0 min=282.0 n=4\n\
COUNTERS null_hypercall per=call entries=1.00 cr3_writes=0.00\n\
BENCH mmu_update_1 tsc/pte mean=950.0 min=933.0 n=4\n\
BENCH page_fault failed\n\
Test result: FAILURE\n";

    fn run(platform: Platform, log: &str, outcome: Outcome) -> PlatformRun {
        PlatformRun {
            platform,
            outcome,
            results: parse_results(log),
            elapsed: Duration::from_secs(1),
        }
    }

    fn both() -> Vec<PlatformRun> {
        vec![
            run(Platform::Ours, OURS, Outcome::Exit(HostExit::Dom0Poweroff)),
            run(
                Platform::Xen,
                THEIRS,
                Outcome::Stopped("Hardware Dom0 halted"),
            ),
        ]
    }

    #[test]
    fn results_are_read_from_the_log() {
        let ours = parse_results(OURS);
        assert_eq!(ours.order, ["null_hypercall", "mmu_update_1"]);
        assert_eq!(
            ours.cells["null_hypercall"],
            Cell::Measured {
                min: "240.0".into(),
                mean: "241.0".into(),
                n: 4
            }
        );
        assert_eq!(ours.cells["mmu_update_1"], Cell::Unsupported);
        assert_eq!(
            ours.notes["mmu_update_1"],
            "mmu_update returned -38 (ENOSYS)"
        );
        assert_eq!(
            ours.counters_unavailable.as_deref(),
            Some("stats_op returned -38 (ENOSYS)")
        );
        assert!(ours.info.contains(&("rdtsc_overhead".into(), "5".into())));
        assert_eq!(ours.test_results, ["SUCCESS"]);
        let theirs = parse_results(THEIRS);
        assert_eq!(theirs.counters["null_hypercall"].0, "call");
        assert_eq!(theirs.cells["page_fault"], Cell::Failed);
    }

    #[test]
    fn completion_needs_the_platforms_end_and_a_result_line() {
        let runs = both();
        assert!(runs[0].completed() && runs[1].completed());
        let stopped = run(Platform::Ours, OURS, Outcome::Exit(HostExit::Dom0Crash));
        assert!(!stopped.completed());
        let silent = run(Platform::Xen, "", Outcome::Stopped("Hardware Dom0 halted"));
        assert!(!silent.completed());
        assert_eq!(stopped.cell("syscall_bounce"), Cell::NotReached);
    }

    #[test]
    fn table_shows_every_row_and_the_ratio() {
        let runs = both();
        let args = BenchArgs::default();
        let names = row_names(&args, &runs);
        assert_eq!(names.len(), catalogue::ALL.len());
        let table = results_table(&names, &runs);
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].starts_with("benchmark"));
        assert!(lines[0].ends_with("ours/Xen"));
        let null = lines
            .iter()
            .find(|l| l.starts_with("null_hypercall"))
            .unwrap();
        assert!(null.contains("240.0") && null.contains("282.0") && null.ends_with("0.85"));
        let mmu = lines
            .iter()
            .find(|l| l.starts_with("mmu_update_1 "))
            .unwrap();
        assert!(mmu.contains("unsupported") && mmu.contains("933.0") && mmu.ends_with('-'));
        let pf = lines.iter().find(|l| l.starts_with("page_fault")).unwrap();
        assert!(pf.contains("not reached") && pf.contains("failed"));
        let only = BenchArgs {
            only: Some("null_hypercall".into()),
            ..BenchArgs::default()
        };
        assert_eq!(row_names(&only, &runs).len(), 3);
    }

    #[test]
    fn counters_table_or_why_not() {
        let runs = both();
        let names = row_names(&BenchArgs::default(), &runs);
        assert_eq!(
            counters_table(&names, &runs[0]),
            "hypervisor counters on oxen: unavailable (stats_op returned -38 (ENOSYS))\n"
        );
        let theirs = counters_table(&names, &runs[1]);
        assert!(theirs.contains("entries") && theirs.contains("1.00"));
    }

    #[test]
    fn json_is_well_formed_enough() {
        let runs = both();
        let names = row_names(&BenchArgs::default(), &runs);
        let info = RunInfo {
            date: "2026-11-21".into(),
            commit: "abc+".into(),
            guest_args: "iters=4".into(),
        };
        let json = to_json(&info, &names, &runs);
        assert!(json.contains("\"date\": \"2026-11-21\""));
        assert!(json.contains(
            "\"oxen\": {\"status\": \"measured\", \"min\": 240.0, \"mean\": 241.0, \"n\": 4}"
        ));
        assert!(json.contains("\"ratio_min\": 0.8511"));
        assert!(json.contains("\"note\": \"mmu_update returned -38 (ENOSYS)\""));
        assert!(json.contains("\"counters\": {\"per\": \"call\", \"entries\": 1.00"));
        let opens = json.matches(['{', '[']).count();
        let closes = json.matches(['}', ']']).count();
        assert_eq!(opens, closes);
        assert_eq!(json_string("a\"b\\\n\u{1}"), "\"a\\\"b\\\\\\n\\u0001\"");
    }

    #[test]
    fn dates() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(59), "1970-03-01");
        assert_eq!(civil_date(11_016), "2000-02-29");
        assert_eq!(civil_date(20_513), "2026-03-01");
        assert_eq!(civil_date(-1), "1969-12-31");
    }

    #[test]
    fn feature_detection() {
        let toml = "[package]\nname = \"hypervisor\"\n\n[features]\nbare-metal = []\nstats = []\n\n[dependencies]\nstats = \"1\"\n";
        assert!(declares_feature(toml, "stats"));
        assert!(declares_feature(toml, "bare-metal"));
        assert!(!declares_feature(toml, "debug"));
        assert!(!declares_feature(
            "[dependencies]\nstats = \"1\"\n",
            "stats"
        ));
    }

    #[test]
    fn guest_command_line() {
        let args = BenchArgs {
            iters: 50,
            warmup: Some(5),
            only: Some("null_hypercall".into()),
            ..BenchArgs::default()
        };
        assert_eq!(guest_args(&args), "iters=50 warmup=5 only=null_hypercall");
        assert_eq!(guest_args(&BenchArgs::default()), "iters=1000");
    }
}
