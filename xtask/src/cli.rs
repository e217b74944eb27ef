//! Command-line parsing for `cargo xtask`.
//!
//! Pure logic: turns the argument list into a [`Command`] or an error message.
//! Options take their value either as the next argument (`--mem 512`) or after
//! an equals sign (`--mem=512`). Every option may be given at most once.
#![forbid(unsafe_code)]

use std::path::PathBuf;

/// The usage text printed by `cargo xtask help` and after a usage error.
pub const USAGE: &str = "\
usage: cargo xtask <command> [options]

commands:
  build                 build the hypervisor and the guests (x86_64-unknown-none, release)
  run [options]         build, then boot the hypervisor and a dom0 under QEMU
  test [options]        run the host unit tests and every QEMU integration test
  bench [options]       benchmark under -icount (instructions per path), optionally against Xen 4.17
  fuzz-guest [options]  boot the hypercall fuzzer as dom0 or a domU (not part of 'test')
  new-test <name>       create the skeleton of a new guest test (tests/src/cases/<name>.rs)
  help                  print this text

run options (default: the scenario of README's 'What you see': the Rust dom0
with a virtio NIC as its bridge's uplink, a web domU reached from the host with
curl http://127.0.0.1:8080/, a demo domU, and dom0's shell; without a terminal
xtask fetches the page once, prints it and quits):
  --test <name>         boot the test guest as dom0 with test=<name> instead
  --dom0 <ELF>          boot this dom0 kernel instead
  --dom0-args <line>    dom0 command line (default: `nic shell` for the default
                        scenario, test=<name> with --test, else empty)
  --ramdisk <file>      dom0 ramdisk (second boot module; default for the Rust
                        dom0: the scenario's domUs and their configs)
  --http-port <N>       the default scenario's host port, on 127.0.0.1 only, forwarded
                        to the web domU's port 80 (default 8080)
  --domu <ELF>[,memory=M][,vcpus=N][,cmdline=...]
                        (repeatable) the Rust dom0 creates these PV kernels
  --hypervisor <ELF>    boot this image instead of the freshly built hypervisor
  --hv-args <line>      hypervisor command line
                        (default: console=com1 com1=115200,8n1 dom0_mem=64M loglvl=info)
  --boot grub|direct    GRUB multiboot2 ISO (default) or QEMU -kernel (multiboot1)
  --accel auto|tcg|kvm  QEMU accelerator (default auto: KVM only with vmx/svm and /dev/kvm)
  --icount              TCG with -icount shift=0,sleep=off (deterministic TSC)
  --smp <N>             number of CPUs, 1-64 (default 1); the hypervisor starts them all,
                        guests run on the first
  --mem <MiB>           RAM size (default 256)
  --timeout <seconds>   stop QEMU after this long (default: no limit)
  --disk <image>        attach this raw image as a virtio-blk disk (00:04.0)
  --nic                 attach a virtio-net NIC on QEMU user networking (00:05.0)
  --linux               dom0 is Debian's current linux-image-amd64 with a busybox
                        initramfs (apt-get download, cached in target/linux/); default
                        --hv-args then give dom0_mem=256M and --mem 512
  --linux-args <line>   more kernel arguments after 'console=hvc0 earlyprintk=xen'

test options:
  --xen                 also boot the conformance tests on Xen 4.17 and compare the results
  --pending             also run the pending tests (written against Xen, not yet passing here)
  --filter <substr>     run only the tests whose name contains <substr>
  --timeout <seconds>   per-test timeout (default 60)
  --linux               instead, boot Debian's Linux on Xen 4.17 and here, one test per
                        boot stage (downloads the kernel; not part of the default run;
                        each boot gets at least 180 s)
  --stress <n>          instead, boot every (selected) test with more than one CPU n times
                        here, to find races (not part of the default run)

fuzz-guest options:
  --seed <n>            the fuzzer's seed (default 1)
  --calls <n>           hypercalls to make (default 100000)
  --timeout <seconds>   watchdog (default: 60 + calls / 1000)
  --domu                run the fuzzer as an unprivileged domU (two vCPUs) of the
                        toolstack dom0, which destroys it afterwards

bench options:
  --against xen         also run the benchmarks on Xen 4.17 and show ours/Xen
  --json <file>         also write the results as JSON
  --iters <n>           timed samples per benchmark (default 1000)
  --warmup <n>          untimed runs before them (default: iters / 10)
  --only <a,b,...>      run only these benchmarks (names as in docs/performance.md)
  --hypervisor <ELF>    benchmark this image instead of the freshly built hypervisor
  --timeout <seconds>   per-run timeout (default 600)
  --trace <name>        instead, single-step one sample of <name> under gdb and
                        show where its instructions go, function by function
  --profile             also count every instruction of each boot (all domains
                        and the hypervisor) by function, through a QEMU plugin;
                        reports in target/xtask-bench/<boot>.profile.txt
  --update-docs         rewrite the results table of docs/performance.md from
                        this run (needs --against xen; all benchmarks)
";

/// The hypervisor command line used when `--hv-args` is not given.
pub const DEFAULT_HV_ARGS: &str = "console=com1 com1=115200,8n1 dom0_mem=64M loglvl=info";

/// Default RAM size of the QEMU machine, in MiB.
pub const DEFAULT_MEM_MIB: u32 = 256;

/// Default per-test timeout of `cargo xtask test`, in seconds.
pub const DEFAULT_TEST_TIMEOUT_SECS: u64 = 60;

/// Timed samples per benchmark when `bench --iters` is not given.
pub const DEFAULT_BENCH_ITERS: u32 = 1000;

/// Default per-run timeout of `cargo xtask bench`, in seconds.
pub const DEFAULT_BENCH_TIMEOUT_SECS: u64 = 600;

/// One `cargo xtask` command with its options.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `cargo xtask build`.
    Build,
    /// `cargo xtask run`.
    Run(RunArgs),
    /// `cargo xtask test`.
    Test(TestArgs),
    /// `cargo xtask new-test <name>`.
    NewTest(String),
    /// `cargo xtask bench`.
    Bench(BenchArgs),
    /// `cargo xtask fuzz-guest`.
    FuzzGuest(FuzzArgs),
    /// `cargo xtask help` (or `--help`, `-h`, or no command at all).
    Help,
}

/// How the hypervisor is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootPath {
    /// GRUB 2 from an ISO image, multiboot2.
    Grub,
    /// QEMU's own loader (`-kernel`, `-initrd`), multiboot1.
    Direct,
}

/// The accelerator the user asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AccelChoice {
    /// KVM where the host has hardware virtualization, TCG elsewhere.
    Auto,
    /// QEMU's emulator.
    Tcg,
    /// Hardware virtualization through `/dev/kvm`.
    Kvm,
}

/// Options of `cargo xtask run`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunArgs {
    /// `--dom0`: the dom0 kernel; `None` means the Rust dom0 (`dom0/`),
    /// or the test guest with `--test`.
    pub dom0: Option<PathBuf>,
    /// `--test`: boot the test guest as dom0 with `test=<name>`.
    pub test: Option<String>,
    /// `--dom0-args`: dom0's command line, if given.
    pub dom0_args: Option<String>,
    /// `--ramdisk`: dom0's ramdisk, if any.
    pub ramdisk: Option<PathBuf>,
    /// `--hypervisor`: an image to boot instead of the built hypervisor.
    pub hypervisor: Option<PathBuf>,
    /// `--hv-args`: the hypervisor's command line, if given.
    pub hv_args: Option<String>,
    /// `--boot`.
    pub boot: BootPath,
    /// `--accel`.
    pub accel: AccelChoice,
    /// `--icount`.
    pub icount: bool,
    /// `--smp`: number of CPUs, at least 1.
    pub smp: u32,
    /// `--mem`: RAM in MiB, at least 1.
    pub mem_mib: u32,
    /// `--timeout`: seconds after which QEMU is stopped, if given.
    pub timeout_secs: Option<u64>,
    /// `--domu` (repeatable): PV kernels dom0 creates at start; dom0 is
    /// then the toolstack dom0 with a ramdisk made from them.
    pub domus: Vec<crate::ramdisk::DomuSpec>,
    /// `--linux`: dom0 is Debian's Linux with a busybox initramfs.
    pub linux: bool,
    /// `--linux-args`: more kernel arguments, if given.
    pub linux_args: Option<String>,
    /// `--disk` and `--nic`: the machine's virtio devices.
    pub devices: crate::qemu::Devices,
    /// `--http-port`: the default scenario's forwarded host port.
    pub http_port: u16,
}

/// The default scenario's forwarded host port.
pub const DEFAULT_HTTP_PORT: u16 = 8080;

impl Default for RunArgs {
    fn default() -> Self {
        RunArgs {
            dom0: None,
            test: None,
            dom0_args: None,
            ramdisk: None,
            hypervisor: None,
            hv_args: None,
            boot: BootPath::Grub,
            accel: AccelChoice::Auto,
            icount: false,
            smp: 1,
            mem_mib: DEFAULT_MEM_MIB,
            timeout_secs: None,
            domus: Vec::new(),
            linux: false,
            linux_args: None,
            devices: crate::qemu::Devices::NONE,
            http_port: DEFAULT_HTTP_PORT,
        }
    }
}

impl RunArgs {
    /// The hypervisor command line to use.
    pub fn hv_args(&self) -> &str {
        let default = if self.linux {
            crate::linux::HV_ARGS
        } else {
            DEFAULT_HV_ARGS
        };
        self.hv_args.as_deref().unwrap_or(default)
    }

    /// Whether dom0 is the Rust dom0 (`dom0/`, the default).
    pub fn rust_dom0(&self) -> bool {
        self.dom0.is_none() && self.test.is_none() && !self.linux
    }

    /// Whether this is the default scenario: the Rust dom0 with the
    /// domUs, NIC and port forward xtask picks (no `--ramdisk`, `--domu`).
    pub fn default_scenario(&self) -> bool {
        self.rust_dom0() && self.ramdisk.is_none() && self.domus.is_empty()
    }

    /// dom0's command line: as given; else `test=<name>` with `--test`,
    /// `nic shell` for the default scenario (the NIC joins the bridge;
    /// without a terminal xtask types into the shell), `shell` for the
    /// Rust dom0 when `terminal` (standard input is one, so the user can
    /// type), and empty otherwise.
    pub fn dom0_args(&self, terminal: bool) -> String {
        match (&self.dom0_args, &self.test) {
            (Some(args), _) => args.clone(),
            (None, Some(test)) => format!("test={test}"),
            (None, None) if self.default_scenario() => "nic shell".to_owned(),
            (None, None) if self.rust_dom0() && terminal => "shell".to_owned(),
            (None, None) => String::new(),
        }
    }
}

/// Options of `cargo xtask test`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestArgs {
    /// `--xen`: also compare against Xen 4.17.
    pub xen: bool,
    /// `--pending`: also run the pending tests (`suite::PENDING`).
    pub pending: bool,
    /// `--filter`: run only tests whose name contains this.
    pub filter: Option<String>,
    /// `--timeout`: per-test timeout in seconds.
    pub timeout_secs: u64,
    /// `--linux`: run the Linux boot stages instead.
    pub linux: bool,
    /// `--stress <n>`: instead, boot every selected test with more than
    /// one CPU `n` times on this hypervisor.
    pub stress: Option<u64>,
}

impl Default for TestArgs {
    fn default() -> Self {
        TestArgs {
            xen: false,
            pending: false,
            filter: None,
            timeout_secs: DEFAULT_TEST_TIMEOUT_SECS,
            linux: false,
            stress: None,
        }
    }
}

impl TestArgs {
    /// Whether the test called `name` is selected by `--filter`.
    pub fn selects(&self, name: &str) -> bool {
        self.filter.as_deref().is_none_or(|f| name.contains(f))
    }
}

/// Options of `cargo xtask bench`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BenchArgs {
    /// `--against xen`: also run on Xen 4.17.
    pub against_xen: bool,
    /// `--json`: where to write the results as JSON.
    pub json: Option<PathBuf>,
    /// `--iters`: timed samples per benchmark.
    pub iters: u32,
    /// `--warmup`: untimed runs per benchmark (the guest's default if not given).
    pub warmup: Option<u32>,
    /// `--only`: comma-separated benchmark names.
    pub only: Option<String>,
    /// `--hypervisor`: an image to benchmark instead of the built hypervisor.
    pub hypervisor: Option<PathBuf>,
    /// `--timeout`: per-run timeout in seconds.
    pub timeout_secs: u64,
    /// `--trace`: the benchmark to trace instead of running them all.
    pub trace: Option<String>,
    /// `--profile`: count the instructions of each boot by function.
    pub profile: bool,
    /// `--update-docs`: rewrite the results table of
    /// `docs/performance.md` from this run.
    pub update_docs: bool,
}

impl Default for BenchArgs {
    fn default() -> Self {
        BenchArgs {
            against_xen: false,
            json: None,
            iters: DEFAULT_BENCH_ITERS,
            warmup: None,
            only: None,
            hypervisor: None,
            timeout_secs: DEFAULT_BENCH_TIMEOUT_SECS,
            trace: None,
            profile: false,
            update_docs: false,
        }
    }
}

/// Options of `cargo xtask fuzz-guest`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FuzzArgs {
    /// `--seed`: the generator's seed.
    pub seed: u64,
    /// `--calls`: how many hypercalls the fuzzer makes.
    pub calls: u64,
    /// `--timeout`: the watchdog in seconds, if given.
    pub timeout_secs: Option<u64>,
    /// `--domu`: the fuzzer runs as an unprivileged domU of the toolstack
    /// dom0 instead of as dom0.
    pub domu: bool,
}

impl Default for FuzzArgs {
    fn default() -> Self {
        FuzzArgs {
            seed: 1,
            calls: 100_000,
            timeout_secs: None,
            domu: false,
        }
    }
}

/// Options that may be given more than once (every other one only once).
const REPEATABLE: &[&str] = &["--domu"];

/// Walks the arguments after the command name.
struct Options {
    args: std::vec::IntoIter<String>,
    seen: Vec<String>,
}

impl Options {
    /// The next option name and, for `--name=value`, its inline value.
    fn next_option(&mut self) -> Result<Option<(String, Option<String>)>, String> {
        let Some(arg) = self.args.next() else {
            return Ok(None);
        };
        if !arg.starts_with("--") {
            return Err(format!("unexpected argument '{arg}'"));
        }
        let (name, inline) = match arg.split_once('=') {
            Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
            None => (arg, None),
        };
        if self.seen.contains(&name) && !REPEATABLE.contains(&name.as_str()) {
            return Err(format!("option '{name}' given twice"));
        }
        self.seen.push(name.clone());
        Ok(Some((name, inline)))
    }

    /// The value of option `name`: inline, or else the next argument.
    fn value(&mut self, name: &str, inline: Option<String>) -> Result<String, String> {
        match inline {
            Some(value) => Ok(value),
            None => self
                .args
                .next()
                .ok_or_else(|| format!("option '{name}' needs a value")),
        }
    }

    /// Rejects a value on a flag that takes none (`--icount=yes`).
    fn flag(name: &str, inline: Option<String>) -> Result<bool, String> {
        match inline {
            Some(_) => Err(format!("option '{name}' takes no value")),
            None => Ok(true),
        }
    }
}

/// Parses a positive decimal number for option `name`.
/// The most CPUs `--smp` gives the machine: the hypervisor starts at
/// most this many (`hypervisor::smp::MAX_CPUS`).
const MAX_SMP: u32 = 64;

fn positive<T: std::str::FromStr + PartialOrd + From<u8>>(
    name: &str,
    value: &str,
) -> Result<T, String> {
    match value.parse::<T>() {
        Ok(n) if n >= T::from(1) => Ok(n),
        _ => Err(format!(
            "option '{name}': expected a positive number, got '{value}'"
        )),
    }
}

/// Parses the arguments that follow `cargo xtask` (without the program name).
pub fn parse(args: Vec<String>) -> Result<Command, String> {
    let mut args = args.into_iter();
    let Some(command) = args.next() else {
        return Ok(Command::Help);
    };
    let mut options = Options {
        args,
        seen: Vec::new(),
    };
    match command.as_str() {
        "build" => {
            if let Some((name, _)) = options.next_option()? {
                return Err(format!("'build' takes no options (got '{name}')"));
            }
            Ok(Command::Build)
        }
        "run" => parse_run(&mut options).map(Command::Run),
        "test" => parse_test(&mut options).map(Command::Test),
        "bench" => parse_bench(&mut options).map(Command::Bench),
        "fuzz-guest" => parse_fuzz(&mut options).map(Command::FuzzGuest),
        "new-test" => match (options.args.next(), options.args.next()) {
            (Some(name), None) if !name.starts_with('-') => Ok(Command::NewTest(name)),
            _ => Err("usage: cargo xtask new-test <name>".to_owned()),
        },
        "help" | "--help" | "-h" => Ok(Command::Help),
        other => Err(format!("unknown command '{other}'")),
    }
}

fn parse_run(options: &mut Options) -> Result<RunArgs, String> {
    let mut run = RunArgs::default();
    while let Some((name, inline)) = options.next_option()? {
        match name.as_str() {
            "--dom0" => run.dom0 = Some(options.value(&name, inline)?.into()),
            "--test" => run.test = Some(options.value(&name, inline)?),
            "--dom0-args" => run.dom0_args = Some(options.value(&name, inline)?),
            "--ramdisk" => run.ramdisk = Some(options.value(&name, inline)?.into()),
            "--hypervisor" => run.hypervisor = Some(options.value(&name, inline)?.into()),
            "--hv-args" => run.hv_args = Some(options.value(&name, inline)?),
            "--boot" => {
                run.boot = match options.value(&name, inline)?.as_str() {
                    "grub" => BootPath::Grub,
                    "direct" => BootPath::Direct,
                    other => return Err(format!("--boot: expected grub or direct, got '{other}'")),
                }
            }
            "--accel" => {
                run.accel = match options.value(&name, inline)?.as_str() {
                    "auto" => AccelChoice::Auto,
                    "tcg" => AccelChoice::Tcg,
                    "kvm" => AccelChoice::Kvm,
                    other => {
                        return Err(format!("--accel: expected auto, tcg or kvm, got '{other}'"));
                    }
                }
            }
            "--icount" => run.icount = Options::flag(&name, inline)?,
            "--smp" => {
                let value = options.value(&name, inline)?;
                run.smp = positive(&name, &value)?;
                if run.smp > MAX_SMP {
                    return Err(format!(
                        "option '{name}': at most {MAX_SMP} CPUs (the hypervisor's limit), got '{value}'"
                    ));
                }
            }
            "--mem" => run.mem_mib = positive(&name, &options.value(&name, inline)?)?,
            "--timeout" => {
                run.timeout_secs = Some(positive(&name, &options.value(&name, inline)?)?)
            }
            "--domu" => run.domus.push(crate::ramdisk::DomuSpec::parse(
                &options.value(&name, inline)?,
            )?),
            "--linux" => run.linux = Options::flag(&name, inline)?,
            "--linux-args" => run.linux_args = Some(options.value(&name, inline)?),
            "--disk" => run.devices.disk = Some(options.value(&name, inline)?.into()),
            "--nic" => run.devices.nic = Options::flag(&name, inline)?,
            "--http-port" => run.http_port = positive(&name, &options.value(&name, inline)?)?,
            _ => return Err(format!("unknown option '{name}' for 'run'")),
        }
    }
    if !run.domus.is_empty() && (run.dom0.is_some() || run.ramdisk.is_some()) {
        return Err("--domu boots the toolstack dom0 with its own ramdisk: it cannot be combined with --dom0 or --ramdisk".to_owned());
    }
    if run.test.is_some() && (run.dom0.is_some() || !run.domus.is_empty()) {
        return Err(
            "--test boots the test guest as dom0: it cannot be combined with --dom0 or --domu"
                .to_owned(),
        );
    }
    if run.linux
        && (run.dom0.is_some()
            || run.ramdisk.is_some()
            || run.dom0_args.is_some()
            || run.test.is_some()
            || !run.domus.is_empty())
    {
        return Err("--linux brings its own dom0 and ramdisk: it cannot be combined with --dom0, --dom0-args, --ramdisk, --test or --domu".to_owned());
    }
    if run.linux_args.is_some() && !run.linux {
        return Err("--linux-args needs --linux".to_owned());
    }
    if options.seen.iter().any(|o| o == "--http-port") && !run.default_scenario() {
        return Err("--http-port belongs to the default scenario: it cannot be combined with --dom0, --test, --ramdisk, --domu or --linux".to_owned());
    }
    if run.linux && !options.seen.iter().any(|o| o == "--mem") {
        run.mem_mib = crate::linux::MEM_MIB;
    }
    if run.icount && run.accel == AccelChoice::Kvm {
        return Err("--icount needs TCG; it cannot be combined with --accel kvm".to_owned());
    }
    Ok(run)
}

fn parse_test(options: &mut Options) -> Result<TestArgs, String> {
    let mut test = TestArgs::default();
    while let Some((name, inline)) = options.next_option()? {
        match name.as_str() {
            "--xen" => test.xen = Options::flag(&name, inline)?,
            "--pending" => test.pending = Options::flag(&name, inline)?,
            "--linux" => test.linux = Options::flag(&name, inline)?,
            "--filter" => test.filter = Some(options.value(&name, inline)?),
            "--timeout" => test.timeout_secs = positive(&name, &options.value(&name, inline)?)?,
            "--stress" => test.stress = Some(positive(&name, &options.value(&name, inline)?)?),
            _ => return Err(format!("unknown option '{name}' for 'test'")),
        }
    }
    Ok(test)
}

fn parse_fuzz(options: &mut Options) -> Result<FuzzArgs, String> {
    let mut fuzz = FuzzArgs::default();
    while let Some((name, inline)) = options.next_option()? {
        match name.as_str() {
            "--seed" => {
                let value = options.value(&name, inline)?;
                fuzz.seed = value
                    .parse()
                    .map_err(|_| format!("option '--seed': expected a number, got '{value}'"))?;
            }
            "--calls" => fuzz.calls = positive(&name, &options.value(&name, inline)?)?,
            "--timeout" => {
                fuzz.timeout_secs = Some(positive(&name, &options.value(&name, inline)?)?)
            }
            "--domu" => fuzz.domu = true,
            _ => return Err(format!("unknown option '{name}' for 'fuzz-guest'")),
        }
    }
    Ok(fuzz)
}

/// A sample count for option `name`: 1 to the guest's maximum.
fn sample_count(name: &str, value: &str) -> Result<u32, String> {
    let n: u32 = positive(name, value)?;
    if n > pv_bench::options::MAX_ITERS {
        return Err(format!(
            "option '{name}': at most {}, got {n}",
            pv_bench::options::MAX_ITERS
        ));
    }
    Ok(n)
}

/// `list` (comma-separated) if every name in it is a benchmark.
fn benchmark_names(option: &str, list: String) -> Result<String, String> {
    match list
        .split(',')
        .find(|n| pv_bench::catalogue::find(n).is_none())
    {
        Some(unknown) => {
            let known: Vec<&str> = pv_bench::catalogue::ALL.iter().map(|b| b.name).collect();
            Err(format!(
                "{option}: no benchmark called '{unknown}' (known: {})",
                known.join(", ")
            ))
        }
        None => Ok(list),
    }
}

fn parse_bench(options: &mut Options) -> Result<BenchArgs, String> {
    let mut bench = BenchArgs::default();
    while let Some((name, inline)) = options.next_option()? {
        match name.as_str() {
            "--against" => match options.value(&name, inline)?.as_str() {
                "xen" => bench.against_xen = true,
                other => return Err(format!("--against: only 'xen' is known, got '{other}'")),
            },
            "--json" => bench.json = Some(options.value(&name, inline)?.into()),
            "--iters" => bench.iters = sample_count(&name, &options.value(&name, inline)?)?,
            "--warmup" => bench.warmup = Some(sample_count(&name, &options.value(&name, inline)?)?),
            "--only" => bench.only = Some(benchmark_names(&name, options.value(&name, inline)?)?),
            "--trace" => {
                let one = options.value(&name, inline)?;
                if one.contains(',') {
                    return Err("--trace: one benchmark at a time".to_owned());
                }
                bench.trace = Some(benchmark_names(&name, one)?);
            }
            "--hypervisor" => bench.hypervisor = Some(options.value(&name, inline)?.into()),
            "--timeout" => bench.timeout_secs = positive(&name, &options.value(&name, inline)?)?,
            "--update-docs" => bench.update_docs = Options::flag(&name, inline)?,
            "--profile" => bench.profile = Options::flag(&name, inline)?,
            _ => return Err(format!("unknown option '{name}' for 'bench'")),
        }
    }
    if bench.update_docs
        && (!bench.against_xen
            || bench.only.is_some()
            || bench.trace.is_some()
            || bench.hypervisor.is_some())
    {
        return Err(
            "--update-docs records a full comparison: it needs --against xen, and no --only, --trace or --hypervisor"
                .to_owned(),
        );
    }
    Ok(bench)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(line: &str) -> Result<Command, String> {
        parse(line.split_whitespace().map(str::to_owned).collect())
    }

    #[test]
    fn update_docs_needs_a_full_comparison() {
        let Ok(Command::Bench(args)) = parse_str("bench --against xen --update-docs") else {
            panic!("a full comparison may update the docs");
        };
        assert!(args.update_docs);
        for partial in [
            "bench --update-docs",
            "bench --against xen --only null_hypercall --update-docs",
            "bench --against xen --trace null_hypercall --update-docs",
        ] {
            assert!(parse_str(partial).is_err(), "{partial}");
        }
    }

    #[test]
    fn no_command_is_help() {
        assert_eq!(parse(Vec::new()), Ok(Command::Help));
        assert_eq!(parse_str("--help"), Ok(Command::Help));
    }

    #[test]
    fn run_defaults() {
        let Ok(Command::Run(run)) = parse_str("run") else {
            panic!("run did not parse");
        };
        assert_eq!(run, RunArgs::default());
        assert_eq!(run.boot, BootPath::Grub);
        assert_eq!(run.hv_args(), DEFAULT_HV_ARGS);
        assert!(run.rust_dom0());
        assert!(run.default_scenario());
        assert_eq!(run.http_port, DEFAULT_HTTP_PORT);
        assert_eq!(run.dom0_args(true), "nic shell");
        assert_eq!(run.dom0_args(false), "nic shell");
        let Ok(Command::Run(run)) = parse_str("run --http-port 9090") else {
            panic!("run --http-port did not parse");
        };
        assert_eq!(run.http_port, 9090);
        assert!(parse_str("run --http-port 0").is_err());
        assert!(parse_str("run --http-port 70000").is_err());
        assert!(parse_str("run --test hello --http-port 9090").is_err());
        assert_eq!((run.smp, run.mem_mib), (1, 256));
    }

    #[test]
    fn run_every_option() {
        let args = [
            "run",
            "--dom0",
            "k.elf",
            "--dom0-args",
            "a=1 b=2",
            "--ramdisk=rd.img",
            "--hypervisor",
            "xen",
            "--hv-args",
            "console=com1 loglvl=all",
            "--boot",
            "direct",
            "--accel=tcg",
            "--icount",
            "--smp",
            "2",
            "--mem",
            "512",
            "--timeout",
            "30",
            "--disk",
            "d.img",
            "--nic",
        ];
        let Ok(Command::Run(run)) = parse(args.iter().map(|s| (*s).to_owned()).collect()) else {
            panic!("run did not parse");
        };
        assert_eq!(run.dom0, Some(PathBuf::from("k.elf")));
        assert_eq!(run.dom0_args(true), "a=1 b=2");
        assert_eq!(run.ramdisk, Some(PathBuf::from("rd.img")));
        assert_eq!(run.hypervisor, Some(PathBuf::from("xen")));
        assert_eq!(run.hv_args(), "console=com1 loglvl=all");
        assert_eq!(run.boot, BootPath::Direct);
        assert_eq!(run.accel, AccelChoice::Tcg);
        assert!(run.icount);
        assert_eq!((run.smp, run.mem_mib, run.timeout_secs), (2, 512, Some(30)));
        assert_eq!(run.devices.disk, Some(PathBuf::from("d.img")));
        assert!(run.devices.nic);
    }

    #[test]
    fn own_dom0_has_empty_default_args() {
        let Ok(Command::Run(run)) = parse_str("run --dom0 k") else {
            panic!("run did not parse");
        };
        assert_eq!(run.dom0_args(true), "");
    }

    #[test]
    fn test_picks_the_test_guest() {
        let Ok(Command::Run(run)) = parse_str("run --test xen_version") else {
            panic!("run did not parse");
        };
        assert!(!run.rust_dom0());
        assert_eq!(run.dom0_args(true), "test=xen_version");
        assert!(parse_str("run --test a --dom0 k").is_err());
        assert!(parse_str("run --test a --domu d.elf").is_err());
    }

    #[test]
    fn domus_pick_the_toolstack_dom0() {
        let Ok(Command::Run(run)) = parse_str("run --domu a.elf,memory=8 --domu b.elf") else {
            panic!("run did not parse");
        };
        assert_eq!(run.domus.len(), 2);
        assert_eq!(run.domus[0].memory_mib, 8);
        assert_eq!(run.dom0_args(false), "");
        assert!(parse_str("run --domu a.elf --dom0 k").is_err());
        assert!(parse_str("run --domu a.elf --ramdisk r").is_err());
        assert!(parse_str("run --domu a.elf,bogus=1").is_err());
    }

    #[test]
    fn linux_options() {
        let Ok(Command::Run(run)) = parse_str("run --linux --linux-args=quiet") else {
            panic!("run --linux did not parse");
        };
        assert!(run.linux);
        assert_eq!(run.linux_args.as_deref(), Some("quiet"));
        assert_eq!(run.mem_mib, crate::linux::MEM_MIB);
        assert_eq!(run.hv_args(), crate::linux::HV_ARGS);
        let Ok(Command::Run(small)) = parse_str("run --linux --mem 300") else {
            panic!("run --linux --mem did not parse");
        };
        assert_eq!(small.mem_mib, 300);
        assert!(parse_str("run --linux --dom0 k").is_err());
        assert!(parse_str("run --linux --ramdisk r").is_err());
        assert!(parse_str("run --linux-args quiet").is_err());
        let Ok(Command::Test(test)) = parse_str("test --linux") else {
            panic!("test --linux did not parse");
        };
        assert!(test.linux && !test.xen);
    }

    #[test]
    fn run_errors() {
        assert!(parse_str("run --boot floppy").is_err());
        assert!(parse_str("run --accel hvf").is_err());
        assert!(parse_str("run --smp 0").is_err());
        assert!(parse_str("run --smp 65").is_err());
        assert!(parse_str("run --smp 64").is_ok());
        assert!(parse_str("run --mem lots").is_err());
        assert!(parse_str("run --mem").is_err());
        assert!(parse_str("run --icount=1").is_err());
        assert!(parse_str("run --icount --accel kvm").is_err());
        assert!(parse_str("run --smp 1 --smp 2").is_err());
        assert!(parse_str("run --bogus").is_err());
        assert!(parse_str("run stray").is_err());
        assert!(parse_str("frobnicate").is_err());
        assert!(parse_str("build --xen").is_err());
        assert!(parse_str("new-test").is_err());
        assert!(parse_str("new-test a b").is_err());
        assert!(parse_str("new-test --help").is_err());
        assert_eq!(
            parse_str("new-test grant_copy"),
            Ok(Command::NewTest("grant_copy".into()))
        );
    }

    #[test]
    fn test_options_and_filter() {
        assert_eq!(parse_str("test"), Ok(Command::Test(TestArgs::default())));
        let Ok(Command::Test(test)) = parse_str("test --xen --filter shutdown --timeout 90") else {
            panic!("test did not parse");
        };
        assert!(test.xen);
        assert!(!test.pending);
        assert_eq!(test.timeout_secs, 90);
        assert!(test.selects("shutdown_crash"));
        assert!(!test.selects("hello"));
        assert!(TestArgs::default().selects("anything"));
        assert!(parse_str("test --filter").is_err());
        let Ok(Command::Test(pending)) = parse_str("test --pending --xen") else {
            panic!("test --pending did not parse");
        };
        assert!(pending.pending && pending.xen);
        assert!(parse_str("test --pending=yes").is_err());
        let Ok(Command::Test(stress)) = parse_str("test --stress 20 --filter smp") else {
            panic!("test --stress did not parse");
        };
        assert_eq!(stress.stress, Some(20));
        assert_eq!(TestArgs::default().stress, None);
        assert!(parse_str("test --stress 0").is_err());
        assert!(parse_str("test --stress").is_err());
    }

    #[test]
    fn bench_options() {
        assert_eq!(parse_str("bench"), Ok(Command::Bench(BenchArgs::default())));
        let Ok(Command::Bench(bench)) = parse_str(
            "bench --against xen --json out.json --iters 50 --warmup=5 --only null_hypercall,page_fault --timeout 30",
        ) else {
            panic!("bench did not parse");
        };
        assert!(bench.against_xen);
        assert_eq!(bench.json, Some(PathBuf::from("out.json")));
        assert_eq!((bench.iters, bench.warmup), (50, Some(5)));
        assert_eq!(bench.only.as_deref(), Some("null_hypercall,page_fault"));
        assert_eq!(bench.timeout_secs, 30);
        assert!(parse_str("bench --against kvm").is_err());
        assert!(parse_str("bench --iters 0").is_err());
        assert!(parse_str("bench --iters 2000000").is_err());
        assert!(parse_str("bench --only bogus").is_err());
        assert!(parse_str("bench --json").is_err());
        assert!(parse_str("bench --xen").is_err());
        let Ok(Command::Bench(traced)) = parse_str("bench --trace page_fault") else {
            panic!("bench --trace did not parse");
        };
        assert_eq!(traced.trace.as_deref(), Some("page_fault"));
        assert!(parse_str("bench --trace page_fault,null_hypercall").is_err());
        assert!(parse_str("bench --trace bogus").is_err());
    }

    #[test]
    fn fuzz_guest_options() {
        assert_eq!(
            parse_str("fuzz-guest"),
            Ok(Command::FuzzGuest(FuzzArgs::default()))
        );
        let Ok(Command::FuzzGuest(fuzz)) =
            parse_str("fuzz-guest --seed 0 --calls 1000000 --timeout=900")
        else {
            panic!("fuzz-guest did not parse");
        };
        assert_eq!((fuzz.seed, fuzz.calls), (0, 1_000_000));
        assert_eq!(fuzz.timeout_secs, Some(900));
        assert!(!fuzz.domu);
        let Ok(Command::FuzzGuest(fuzz)) = parse_str("fuzz-guest --domu --seed 3") else {
            panic!("fuzz-guest --domu did not parse");
        };
        assert!(fuzz.domu);
        assert_eq!(fuzz.seed, 3);
        assert!(parse_str("fuzz-guest --calls 0").is_err());
        assert!(parse_str("fuzz-guest --seed x").is_err());
        assert!(parse_str("fuzz-guest --filter a").is_err());
    }
}
