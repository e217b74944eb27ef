//! `cargo xtask test`: host unit tests, then every QEMU integration test
//! one at a time (with `--pending`, the pending ones after them), then
//! (with `--xen`) the conformance runs on Xen 4.17.
//!
//! Every run's serial log is saved to `target/xtask-tests/<name>.log`
//! (Xen's to `target/xtask-tests/xen/<name>.log`), followed by a trailer
//! with the QEMU command, the outcome and QEMU's own messages. Before the
//! tally come the allowed differences from Xen and every skipped check
//! (`<test>: <check> (<reason>)`, under a `skipped checks (K):` heading);
//! the last line printed is the tally, `N passed, M failed` (the form CI
//! reads).
//!
//! Each boot of the hypervisor gets a fresh `test_nonce=<16 hex digits>`;
//! its teardown line must carry it (see `serial_log::evaluate`).
//!
//! Integration tests always use TCG with one CPU and 256 MiB, so a test
//! behaves the same on every host.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::build::{self, Workspace};
use crate::cli::{DEFAULT_MEM_MIB, TestArgs};
use crate::disk;
use crate::linux;
use crate::packages;
use crate::qemu::{self, Accel, Boot, Devices, Machine, Module, RunResult, RunSpec, Serial};
use crate::run::{BootFiles, prepare_boot};
use crate::serial_log::{self, Verdict, evaluate};
use crate::suite::{Dom0, IntegrationTest, PENDING, TESTS};
use crate::xen;

/// The machine an integration test runs on: TCG (with `-icount` if the
/// test asks for it), its CPUs, and the devices it asks for (its disk
/// image at `disk`, the port forward from the host's `port`).
fn test_machine(test: &IntegrationTest, disk: Option<&Path>, port: Option<u16>) -> Machine {
    Machine {
        accel: if test.icount {
            Accel::TcgIcount
        } else {
            Accel::Tcg
        },
        smp: test.cpus,
        mem_mib: DEFAULT_MEM_MIB,
        devices: Devices {
            disk: disk
                .filter(|_| test.devices.disk.is_some())
                .map(Path::to_path_buf),
            nic: test.devices.nic,
            http_forward: port.filter(|_| test.devices.nic),
        },
    }
}

/// A fresh host port for a test whose host steps reach the web domU
/// through the forward (none for other tests).
fn forward_port(test: &IntegrationTest) -> Result<Option<u16>, String> {
    if test.devices.nic && !test.host_steps.is_empty() {
        qemu::free_port().map(Some)
    } else {
        Ok(None)
    }
}

/// The problems of a run's host steps: one that never ran (its trigger
/// did not appear), failed, or did not print what it must.
fn host_step_problems(test: &IntegrationTest, result: &RunResult) -> Vec<String> {
    test.host_steps
        .iter()
        .enumerate()
        .flat_map(|(i, step)| match result.host_steps.get(i) {
            Some(output) => step.problems(output),
            None => vec![format!(
                "host step `{}` never ran: no {:?} in the log",
                step.command.join(" "),
                step.after
            )],
        })
        .collect()
}

/// A test's fresh disk image in `dir`, if it has a disk.
fn fresh_disk(test: &IntegrationTest, dir: &Path) -> Result<Option<PathBuf>, String> {
    if test.devices.disk.is_none() {
        return Ok(None);
    }
    let path = dir.join(format!("{}.img", test.name));
    disk::create(&path)?;
    Ok(Some(path))
}

/// The problems of a test's disk image `image` after a run (none without
/// a disk).
fn disk_problems(test: &IntegrationTest, image: Option<&Path>, log: &str) -> Vec<String> {
    match (test.devices.disk, image) {
        (Some(expect), Some(image)) => disk::check(log, image, expect),
        _ => Vec::new(),
    }
}

/// Lines of a failing test's log shown on the terminal.
const TAIL_LINES: usize = 30;

/// Passed and failed test names, and every check a run skipped.
#[derive(Debug, Default)]
struct Tally {
    passed: Vec<String>,
    failed: Vec<String>,
    /// `<test>: <check> (<reason>)` for each `SKIP:` line.
    skipped: Vec<String>,
    /// Each known difference from Xen that a conformance run showed.
    allowed: Vec<String>,
    /// `<test> (<what>)` for each Linux stage not reached here yet.
    pending: Vec<String>,
}

impl Tally {
    fn record(&mut self, name: &str, problems: &[String], elapsed: Option<Duration>, log: &str) {
        let skips: Vec<String> = serial_log::parse(log)
            .with_verdict(Verdict::Skip)
            .map(|c| format!("{name}: {} ({})", c.name, c.detail))
            .collect();
        let mut notes: Vec<String> = elapsed
            .map(|t| format!("{:.1} s", t.as_secs_f64()))
            .into_iter()
            .collect();
        if !skips.is_empty() {
            notes.push(format!("{} skipped", skips.len()));
        }
        self.skipped.extend(skips);
        let time = if notes.is_empty() {
            String::new()
        } else {
            format!(" ({})", notes.join(", "))
        };
        if problems.is_empty() {
            println!("test {name} ... ok{time}");
            self.passed.push(name.to_owned());
            return;
        }
        println!("test {name} ... FAILED{time}");
        for problem in problems {
            println!("    {problem}");
        }
        if !log.is_empty() {
            println!("    --- last lines of the log ---");
            for line in serial_log::tail(log, TAIL_LINES).lines() {
                println!("    | {line}");
            }
        }
        self.failed.push(name.to_owned());
    }
}

/// Where the test files live.
struct TestDirs {
    logs: PathBuf,
    images: PathBuf,
    isos: PathBuf,
    xen: PathBuf,
}

impl TestDirs {
    fn new(workspace: &Workspace) -> Result<TestDirs, String> {
        let logs = workspace.xtask_dir("xtask-tests");
        let dirs = TestDirs {
            images: logs.join("images"),
            isos: logs.join("iso"),
            xen: logs.join("xen"),
            logs,
        };
        for dir in [&dirs.logs, &dirs.images, &dirs.isos, &dirs.xen] {
            fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        Ok(dirs)
    }
}

/// Writes a run's serial log and trailer to `path`.
fn save_log(path: &Path, args: &[std::ffi::OsString], result: &RunResult) -> Result<(), String> {
    let mut text = result.serial.clone();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str("--- xtask ---\n");
    text.push_str(&format!("command: {}\n", qemu::display_command(args)));
    text.push_str(&format!("outcome: {}\n", result.outcome));
    text.push_str(&format!("time: {:.1} s\n", result.elapsed.as_secs_f64()));
    for step in &result.host_steps {
        text.push_str(&format!(
            "--- host step: {} (status {:?}) ---\n{}",
            step.command, step.status, step.stdout
        ));
        if !step.stderr.is_empty() {
            text.push_str(&format!("--- its stderr ---\n{}", step.stderr));
        }
    }
    if !result.stderr.is_empty() {
        text.push_str("--- QEMU stderr ---\n");
        text.push_str(&result.stderr);
    }
    fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))
}

/// A fresh 64-bit nonce as 16 hex digits, for one boot's `test_nonce=`.
///
/// It only has to be unknown to the guest and differ between boots:
/// `RandomState` is seeded from the OS per process, and the time and a
/// counter make every call in the process differ.
pub fn new_nonce() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    hasher.write_u128(now);
    hasher.write_u32(std::process::id());
    format!("{:016x}", hasher.finish())
}

/// One boot of an integration test: the run, and the nonce its hypervisor
/// was given.
#[derive(Clone)]
struct TestRun {
    result: RunResult,
    nonce: String,
    /// What the check of its disk image found.
    disk_problems: Vec<String>,
}

/// Boots one integration test and returns its run (the log already saved).
/// The hypervisor gets a fresh `test_nonce=`, which it echoes in its
/// teardown line (see [`serial_log::teardown_prefix`]).
fn boot_test(
    workspace: &Workspace,
    dirs: &TestDirs,
    test: &IntegrationTest,
    timeout: Duration,
) -> Result<TestRun, String> {
    let guest = workspace.test_guest();
    let ramdisk = ramdisk_of(workspace, dirs, test)?;
    let dom0 = match test.dom0 {
        Dom0::TestGuest => Some(guest),
        Dom0::BenchGuest => Some(workspace.bench_guest()),
        Dom0::Toolstack(_) => Some(workspace.dom0()),
        Dom0::Absent => None,
        Dom0::Bad(kind) => {
            let original = fs::read(&guest).map_err(|e| format!("{}: {e}", guest.display()))?;
            let path = dirs.images.join(test.name);
            fs::write(&path, kind.make(&original)?)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            Some(path)
        }
    };
    let hypervisor = workspace.hypervisor();
    let nonce = new_nonce();
    let hv_args = format!("{} test_nonce={nonce}", test.command_line(test.hv_args));
    let files = BootFiles {
        hypervisor: &hypervisor,
        hv_args: &hv_args,
        dom0: dom0.as_deref().map(|p| (p, test.dom0_args)),
        ramdisk: ramdisk.as_deref(),
    };
    let boot = prepare_boot(&files, test.boot, &dirs.isos.join(test.name))?;
    let image = fresh_disk(test, &dirs.images)?;
    let port = forward_port(test)?;
    let args = qemu::qemu_args(&test_machine(test, image.as_deref(), port), &boot)?;
    let result = qemu::run(&RunSpec {
        args: args.clone(),
        serial: Serial::Capture,
        timeout: Some(timeout),
        stop_markers: &[],
        typing: test.typing,
        host_steps: test.host_steps,
        port,
    })?;
    save_log(
        &dirs.logs.join(format!("{}.log", test.name)),
        &args,
        &result,
    )?;
    let mut disk_problems = disk_problems(test, image.as_deref(), &result.serial);
    disk_problems.extend(host_step_problems(test, &result));
    Ok(TestRun {
        result,
        nonce,
        disk_problems,
    })
}

/// The ramdisk a test's dom0 gets, written into the images directory.
fn ramdisk_of(
    workspace: &Workspace,
    dirs: &TestDirs,
    test: &IntegrationTest,
) -> Result<Option<PathBuf>, String> {
    match test.dom0 {
        Dom0::Toolstack(set) => set.write(workspace, &dirs.images).map(Some),
        _ => Ok(None),
    }
}

/// Boots a conformance test's dom0 on Xen (the test guest with
/// `test=<name>`, or dom0 with the toolstack and its ramdisk), with the
/// test's extra hypervisor options after [`xen::XEN_ARGS`]. Returns the
/// run and what the check of its disk image found.
fn boot_on_xen(
    xen: &Path,
    workspace: &Workspace,
    dirs: &TestDirs,
    test: &IntegrationTest,
    timeout: Duration,
) -> Result<(RunResult, Vec<String>), String> {
    let name = test.name;
    let dom0 = match test.dom0 {
        Dom0::Toolstack(_) => Module {
            path: workspace.dom0(),
            args: test.dom0_args.to_owned(),
        },
        _ => Module {
            path: workspace.test_guest(),
            args: format!("test={name}"),
        },
    };
    let mut modules = vec![dom0];
    if let Some(ramdisk) = ramdisk_of(workspace, dirs, test)? {
        modules.push(Module {
            path: ramdisk,
            args: String::new(),
        });
    }
    let boot = Boot::Direct {
        kernel: xen.to_path_buf(),
        append: test.command_line(xen::XEN_ARGS),
        modules,
    };
    let image = fresh_disk(test, &dirs.xen)?;
    let port = forward_port(test)?;
    let args = qemu::qemu_args(&test_machine(test, image.as_deref(), port), &boot)?;
    let result = qemu::run(&RunSpec {
        args: args.clone(),
        serial: Serial::Capture,
        timeout: Some(timeout),
        stop_markers: xen::STOP_MARKERS,
        typing: test.typing,
        host_steps: test.host_steps,
        port,
    })?;
    save_log(&dirs.xen.join(format!("{name}.log")), &args, &result)?;
    let mut problems = disk_problems(test, image.as_deref(), &result.serial);
    problems.extend(host_step_problems(test, &result));
    Ok((result, problems))
}

/// `cargo test --workspace` on the host.
fn host_unit_tests(workspace: &Workspace, tally: &mut Tally) {
    const NAME: &str = "host_unit_tests";
    /// The property tests' seed unless `PROPTEST_RNG_SEED` names another:
    /// a run is repeatable, and a new seed is a new search.
    const PROPTEST_SEED: &str = "20261206";
    let seed = std::env::var("PROPTEST_RNG_SEED").unwrap_or_else(|_| PROPTEST_SEED.to_owned());
    println!("test {NAME}: cargo test --workspace (PROPTEST_RNG_SEED={seed})");
    let mut cargo = workspace.cargo();
    cargo.args(["test", "--workspace", "--quiet"]);
    cargo.env("PROPTEST_RNG_SEED", &seed);
    let problems: Vec<String> = build::run_checked(cargo, "cargo test --workspace")
        .err()
        .into_iter()
        .collect();
    tally.record(NAME, &problems, None, "");
}

/// The lint checks, each counted as one test: formatting, and clippy with
/// every warning an error, on the host workspace and on the bare-metal
/// crates as they are built for the machine.
const LINTS: [(&str, &[&str]); 3] = [
    ("fmt", &["fmt", "--all", "--check"]),
    (
        "clippy_host",
        &[
            "clippy",
            "--workspace",
            "--all-targets",
            "--quiet",
            "--",
            "-D",
            "warnings",
        ],
    ),
    (
        "clippy_bare_metal",
        &[
            "clippy",
            "--release",
            "--quiet",
            "--target",
            build::TARGET,
            "-p",
            "hypervisor",
            "--features",
            "hypervisor/bare-metal",
            "-p",
            "pv-tests",
            "--features",
            "pv-tests/bare-metal",
            "-p",
            "pv-bench",
            "--features",
            "pv-bench/bare-metal",
            "-p",
            "dom0",
            "--features",
            "dom0/bare-metal",
            "-p",
            "domu-demo",
            "--features",
            "domu-demo/bare-metal",
            "-p",
            "guest-pv-shim",
            "-p",
            "toolstack",
            "-p",
            "pv-image",
            "-p",
            "drivers",
            "--",
            "-D",
            "warnings",
        ],
    ),
];

/// Runs the [`LINTS`] the arguments select.
fn lints(workspace: &Workspace, args: &TestArgs, tally: &mut Tally) {
    for (name, cargo_args) in LINTS {
        if !args.selects(name) {
            continue;
        }
        let what = format!("cargo {}", cargo_args.join(" "));
        println!("test {name}: {what}");
        let mut cargo = workspace.cargo();
        cargo.args(cargo_args);
        let problems: Vec<String> = build::run_checked(cargo, &what).err().into_iter().collect();
        tally.record(name, &problems, None, "");
    }
}

/// The name of a test's conformance run.
fn xen_name(test: &IntegrationTest) -> String {
    format!("xen:{}", test.name)
}

/// The conformance runs of `selected`: ours (reusing this invocation's run
/// if there was one) against Xen's.
fn conformance(
    workspace: &Workspace,
    dirs: &TestDirs,
    selected: &[&IntegrationTest],
    timeout: Duration,
    our_runs: &BTreeMap<&'static str, TestRun>,
    tally: &mut Tally,
) {
    let xen = match packages::ensure(packages::XEN).and_then(|()| xen::unpack(&dirs.xen)) {
        Ok(xen) => xen,
        Err(error) => {
            for &test in selected {
                tally.record(&xen_name(test), &[format!("not run: {error}")], None, "");
            }
            return;
        }
    };
    for &test in selected {
        let name = xen_name(test);
        let compared = our_runs
            .get(test.name)
            .map_or_else(
                || boot_test(workspace, dirs, test, timeout),
                |run| Ok(run.clone()),
            )
            .and_then(|ours| {
                let theirs = boot_on_xen(&xen, workspace, dirs, test, timeout)?;
                Ok((ours, theirs))
            });
        let (ours, (theirs, their_disk)) = match compared {
            Ok(runs) => runs,
            Err(error) => {
                tally.record(&name, &[error], None, "");
                continue;
            }
        };
        let mut problems = xen::judge(&theirs.outcome, &theirs.serial);
        problems.extend(their_disk);
        // A run of ours booted only for this comparison is judged here too
        // (one from this invocation already counted as its own test).
        if !our_runs.contains_key(test.name) {
            let here = &ours.result;
            problems.extend(
                evaluate(&test.expect, &here.outcome, &here.serial, &ours.nonce)
                    .into_iter()
                    .chain(ours.disk_problems.iter().cloned())
                    .map(|p| format!("here: {p}")),
            );
        }
        let comparison = xen::compare(
            test.name,
            &serial_log::parse(&ours.result.serial),
            &serial_log::parse(&theirs.serial),
        );
        problems.extend(comparison.differences);
        tally
            .allowed
            .extend(comparison.allowed.iter().map(|a| format!("{name}: {a}")));
        tally.record(&name, &problems, Some(theirs.elapsed), &theirs.serial);
    }
}

/// `cargo xtask test`; returns whether every selected test passed.
pub fn test(workspace: &Workspace, args: &TestArgs) -> Result<bool, String> {
    let mut tools = [packages::QEMU, packages::GRUB_ISO].concat();
    if args.xen {
        tools.extend_from_slice(packages::XEN);
    }
    packages::ensure(&tools)?;
    let mut tally = Tally::default();
    if args.linux {
        linux_tests(workspace, args, &mut tally)?;
        return Ok(finish(&tally));
    }
    if let Some(rounds) = args.stress {
        stress(workspace, args, rounds, &mut tally)?;
        return Ok(finish(&tally));
    }
    let pending: &[IntegrationTest] = if args.pending { PENDING } else { &[] };
    let table = || TESTS.iter().chain(pending);
    let selected: Vec<&IntegrationTest> = table().filter(|t| args.selects(t.name)).collect();
    let conformance_selected: Vec<&IntegrationTest> = if args.xen {
        table()
            .filter(|t| t.conformance && args.selects(&xen_name(t)))
            .collect()
    } else {
        Vec::new()
    };
    if let Some(filter) = &args.filter
        && !args.selects("host_unit_tests")
        && !LINTS.iter().any(|(name, _)| args.selects(name))
        && selected.is_empty()
        && conformance_selected.is_empty()
    {
        return Err(format!(
            "--filter '{filter}' matches no test{}",
            if args.xen || args.pending {
                ""
            } else {
                " (conformance runs need --xen, pending tests --pending)"
            }
        ));
    }
    if args.selects("host_unit_tests") {
        host_unit_tests(workspace, &mut tally);
    }
    lints(workspace, args, &mut tally);
    if !selected.is_empty() || !conformance_selected.is_empty() {
        if let Err(error) = build::build_images(workspace) {
            let not_run = [format!("not run: {error}")];
            for name in selected
                .iter()
                .map(|t| t.name.to_owned())
                .chain(conformance_selected.iter().map(|t| xen_name(t)))
            {
                tally.record(&name, &not_run, None, "");
            }
        } else {
            let dirs = TestDirs::new(workspace)?;
            let timeout = Duration::from_secs(args.timeout_secs);
            let mut our_runs = BTreeMap::new();
            for test in selected {
                let run = boot_and_check(workspace, &dirs, test, timeout, test.name, &mut tally);
                if let Some(run) = run {
                    our_runs.insert(test.name, run);
                }
            }
            if !conformance_selected.is_empty() {
                conformance(
                    workspace,
                    &dirs,
                    &conformance_selected,
                    timeout,
                    &our_runs,
                    &mut tally,
                );
            }
        }
    }
    Ok(finish(&tally))
}

/// `cargo xtask test --stress <rounds>`: boots every selected test with
/// more than one CPU `rounds` times here, each boot checked as in the
/// normal run and recorded as `<name>#<round>`.
fn stress(
    workspace: &Workspace,
    args: &TestArgs,
    rounds: u64,
    tally: &mut Tally,
) -> Result<(), String> {
    let selected: Vec<&IntegrationTest> = TESTS
        .iter()
        .filter(|t| t.cpus > 1 && args.selects(t.name))
        .collect();
    if selected.is_empty() {
        return Err("--stress: no selected test runs with more than one CPU".into());
    }
    build::build_images(workspace)?;
    let dirs = TestDirs::new(workspace)?;
    let timeout = Duration::from_secs(args.timeout_secs);
    for round in 1..=rounds {
        for test in &selected {
            let name = format!("{}#{round}", test.name);
            boot_and_check(workspace, &dirs, test, timeout, &name, tally);
        }
    }
    Ok(())
}

/// Boots `test` here and records its outcome in `tally` as `name`;
/// returns the run if it booted.
fn boot_and_check(
    workspace: &Workspace,
    dirs: &TestDirs,
    test: &IntegrationTest,
    timeout: Duration,
    name: &str,
    tally: &mut Tally,
) -> Option<TestRun> {
    match boot_test(workspace, dirs, test, timeout) {
        Ok(run) => {
            let result = &run.result;
            let mut problems = evaluate(&test.expect, &result.outcome, &result.serial, &run.nonce);
            problems.extend(run.disk_problems.iter().cloned());
            tally.record(name, &problems, Some(result.elapsed), &result.serial);
            Some(run)
        }
        Err(error) => {
            tally.record(name, &[error], None, "");
            None
        }
    }
}

/// Prints the allowed differences, skips, pending stages and the tally;
/// returns whether every test passed.
fn finish(tally: &Tally) -> bool {
    if !tally.allowed.is_empty() {
        println!(
            "allowed differences from Xen 4.17 (xtask/src/xen.rs ALLOWED, linux.rs KNOWN_DIFFERENCES):"
        );
        for allowed in &tally.allowed {
            println!("    {allowed}");
        }
    }
    if !tally.skipped.is_empty() {
        println!("skipped checks ({}):", tally.skipped.len());
        for skip in &tally.skipped {
            println!("    {skip}");
        }
    }
    if !tally.pending.is_empty() {
        println!(
            "Linux stages not reached here yet ({}, see xtask/src/linux.rs):",
            tally.pending.len()
        );
        for stage in &tally.pending {
            println!("    {stage}");
        }
    }
    if !tally.failed.is_empty() {
        println!("failed: {}", tally.failed.join(" "));
    }
    println!(
        "{} passed, {} failed",
        tally.passed.len(),
        tally.failed.len()
    );
    tally.failed.is_empty()
}

/// Boots Linux with its initramfs (`oxen=check`) under `hypervisor`,
/// saving the log as `log`.
fn boot_linux(
    hypervisor: &Path,
    hv_args: &str,
    files: &linux::LinuxFiles,
    stop_markers: &'static [&'static str],
    timeout: Duration,
    log: &Path,
) -> Result<RunResult, String> {
    let boot = Boot::Direct {
        kernel: hypervisor.to_path_buf(),
        append: hv_args.to_owned(),
        modules: files.check_modules(),
    };
    let machine = Machine {
        accel: Accel::Tcg,
        smp: 1,
        mem_mib: linux::MEM_MIB,
        devices: Devices::NONE,
    };
    let args = qemu::qemu_args(&machine, &boot)?;
    let result = qemu::run(&RunSpec {
        args: args.clone(),
        serial: Serial::Capture,
        timeout: Some(timeout),
        stop_markers,
        typing: &[],
        host_steps: &[],
        port: None,
    })?;
    save_log(log, &args, &result)?;
    Ok(result)
}

/// The name of the Linux boot on Xen 4.17, one test for all stages.
const XEN_LINUX: &str = "xen:linux";

/// `cargo xtask test --linux`: Linux on Xen 4.17 (every stage must be
/// reached) and here (the first [`linux::PASSING_HERE`] stages must be,
/// later ones are pending until they are raised), one test per stage;
/// once the check script runs here, its lines must equal Xen's.
fn linux_tests(workspace: &Workspace, args: &TestArgs, tally: &mut Tally) -> Result<(), String> {
    let dirs = TestDirs::new(workspace)?;
    let timeout = Duration::from_secs(args.timeout_secs.max(linux::MIN_TIMEOUT_SECS));
    let names = || {
        std::iter::once(XEN_LINUX.to_owned()).chain(linux::STAGES.iter().map(|s| s.name.to_owned()))
    };
    let files = match packages::ensure(packages::XEN)
        .and_then(|()| build::build_images(workspace))
        .and_then(|()| linux::prepare(workspace))
    {
        Ok(files) => files,
        Err(error) => {
            for name in names() {
                tally.record(&name, &[format!("not run: {error}")], None, "");
            }
            return Ok(());
        }
    };
    let theirs = xen::unpack(&dirs.xen).and_then(|xen| {
        boot_linux(
            &xen,
            linux::XEN_ARGS,
            &files,
            xen::STOP_MARKERS,
            timeout,
            &dirs.xen.join("linux.log"),
        )
    });
    let theirs_log = match &theirs {
        Ok(run) => {
            let missed: Vec<String> = linux::STAGES
                .iter()
                .filter(|s| !(s.reached)(linux::Platform::Xen, &run.outcome, &run.serial))
                .map(|s| format!("not reached on Xen: {} ({})", s.name, s.what))
                .collect();
            tally.record(XEN_LINUX, &missed, Some(run.elapsed), &run.serial);
            run.serial.as_str()
        }
        Err(error) => {
            tally.record(XEN_LINUX, std::slice::from_ref(error), None, "");
            ""
        }
    };
    let ours = match boot_linux(
        &workspace.hypervisor(),
        linux::HV_ARGS,
        &files,
        &[],
        timeout,
        &dirs.logs.join("linux.log"),
    ) {
        Ok(run) => run,
        Err(error) => {
            for stage in linux::STAGES {
                tally.record(stage.name, std::slice::from_ref(&error), None, "");
            }
            return Ok(());
        }
    };
    for (index, stage) in linux::STAGES.iter().enumerate() {
        let reached = (stage.reached)(linux::Platform::Oxen, &ours.outcome, &ours.serial);
        let mut problems = Vec::new();
        match (index < linux::PASSING_HERE, reached) {
            (true, true) => {}
            (true, false) => problems.push(format!("not reached: {}", stage.what)),
            (false, true) => problems.push(format!(
                "reached now: raise linux::PASSING_HERE to {}",
                index + 1
            )),
            (false, false) => {
                tally
                    .pending
                    .push(format!("{} ({})", stage.name, stage.what));
                continue;
            }
        }
        if stage.name == "linux_script" {
            let (differences, allowed) = linux::compare_checks(&ours.serial, theirs_log);
            problems.extend(differences);
            tally
                .allowed
                .extend(allowed.iter().map(|a| format!("linux_script: {a}")));
        }
        tally.record(stage.name, &problems, Some(ours.elapsed), &ours.serial);
    }
    Ok(())
}
