//! The QEMU command line, and running QEMU with a timeout.
//!
//! One machine shape serves every boot: `-machine q35`, COM1 on QEMU's
//! stdout (a pipe xtask reads: shown live by `run`, kept for the logs),
//! `isa-debug-exit` at port 0xf4, `-no-reboot` (a triple fault ends QEMU
//! with status 0 instead of looping). q35 is chosen because both
//! boot paths work on it (QEMU's multiboot loader and SeaBIOS booting a GRUB
//! CD from AHCI) and it is the chipset a dom0 will want later (PCIe with
//! ECAM); `pc` would do for the boot paths alike.
//!
//! [`qemu_args`] and [`Typist`] are pure and tested on the host; [`run`]
//! owns the child process. QEMU's stdin is COM1's input: a pipe xtask
//! types into when the run has [`Keys`] to type, the terminal when xtask's
//! stdin is one (`run`), else `/dev/null`. The monitor is off (`-monitor
//! none`) so it is never multiplexed onto the serial stdio.
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use hypervisor::exit::DEBUG_EXIT_PORT;

use crate::cli::AccelChoice;
use crate::status::Outcome;

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-x86_64";

/// The accelerator QEMU will use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// TCG, wall-clock time.
    Tcg,
    /// TCG with `-icount shift=0,sleep=off`: the TSC counts guest instructions.
    TcgIcount,
    /// KVM with `-cpu host`.
    Kvm,
}

/// Picks the accelerator. `auto` means KVM only where `cpuinfo` (the text of
/// `/proc/cpuinfo`) shows `vmx` or `svm` *and* `/dev/kvm` opened: some hosts
/// have a `/dev/kvm` that emulates ring 0 instruction by instruction, which
/// is slower than TCG and cannot run a hypervisor.
pub fn choose_accel(choice: AccelChoice, icount: bool, cpuinfo: &str, kvm_opens: bool) -> Accel {
    let hardware_virt = cpuinfo
        .lines()
        .filter(|line| line.starts_with("flags"))
        .any(|line| {
            line.split_whitespace()
                .any(|flag| flag == "vmx" || flag == "svm")
        });
    match (choice, icount) {
        (_, true) => Accel::TcgIcount,
        (AccelChoice::Tcg, false) => Accel::Tcg,
        (AccelChoice::Kvm, false) => Accel::Kvm,
        (AccelChoice::Auto, false) if hardware_virt && kvm_opens => Accel::Kvm,
        (AccelChoice::Auto, false) => Accel::Tcg,
    }
}

/// [`choose_accel`] on this host.
pub fn host_accel(choice: AccelChoice, icount: bool) -> Accel {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let kvm_opens = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    choose_accel(choice, icount, &cpuinfo, kvm_opens)
}

/// The devices a machine has besides QEMU's q35 defaults.
///
/// Both are modern-only virtio PCI functions (`disable-legacy=on`) at
/// fixed slots on bus 0, so that dom0 sees the same bus, BARs and
/// interrupt lines on every run and hypervisor: the disk at 00:04.0 (INTA,
/// GSI 20), the NIC at 00:05.0 (INTA, GSI 21) with QEMU's default MAC
/// `52:54:00:12:34:56` on user networking (the gateway 10.0.2.2; with
/// `http_forward`, the host's `127.0.0.1:<port>` is forwarded to port 80
/// of [`WEB_ADDRESS`], and nothing else from the host).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Devices {
    /// A raw disk image behind a `virtio-blk-pci`.
    pub disk: Option<PathBuf>,
    /// A `virtio-net-pci` on user networking.
    pub nic: bool,
    /// With the NIC: the host port (on 127.0.0.1 only) forwarded to the
    /// web domU's port 80.
    pub http_forward: Option<u16>,
}

impl Devices {
    /// No extra device.
    pub const NONE: Devices = Devices {
        disk: None,
        nic: false,
        http_forward: None,
    };
}

/// The web domU's address on QEMU's user network (the first address its
/// DHCP server would hand out, given statically in the domU's `vif`).
pub const WEB_ADDRESS: &str = "10.0.2.15";

/// The user network's `-netdev` value: `forward` (a host port) reaches
/// port 80 of [`WEB_ADDRESS`], bound to the host's loopback only.
#[must_use]
pub fn user_netdev(forward: Option<u16>) -> String {
    match forward {
        Some(port) => format!("user,id=net0,hostfwd=tcp:127.0.0.1:{port}-{WEB_ADDRESS}:80"),
        None => "user,id=net0".to_owned(),
    }
}

/// A free TCP port on the host's loopback (the kernel picks it), for a
/// run's port forward: each run gets its own, so parallel runs never
/// collide.
pub fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port on 127.0.0.1: {e}"))
}

/// The virtual machine's size, accelerator and extra devices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Machine {
    /// The accelerator.
    pub accel: Accel,
    /// Number of CPUs.
    pub smp: u32,
    /// RAM in MiB.
    pub mem_mib: u32,
    /// Extra devices.
    pub devices: Devices,
}

/// One multiboot module for the direct boot path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    /// The file.
    pub path: PathBuf,
    /// The module's string after the file name (dom0's command line).
    pub args: String,
}

/// What QEMU boots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Boot {
    /// QEMU's multiboot1 loader: `-kernel`, `-append`, `-initrd`.
    Direct {
        /// The hypervisor image.
        kernel: PathBuf,
        /// The hypervisor's command line.
        append: String,
        /// The modules, dom0 first (may be empty).
        modules: Vec<Module>,
    },
    /// A bootable CD image (GRUB).
    Cdrom(PathBuf),
}

/// A path as UTF-8 without whitespace, for QEMU's space-separated
/// multiboot strings (QEMU cuts a module's file name at the first space).
fn plain_path<'p>(path: &'p Path, what: &str) -> Result<&'p str, String> {
    match path.to_str() {
        Some(s) if !s.is_empty() && !s.contains(char::is_whitespace) => Ok(s),
        _ => Err(format!(
            "{what} path '{}' must be UTF-8 without spaces for QEMU's multiboot loader",
            path.display()
        )),
    }
}

/// The value of `-initrd`: `file args` per module, comma-separated, with
/// every comma inside a module doubled (QEMU's escape for option values).
pub fn initrd_value(modules: &[Module]) -> Result<String, String> {
    let mut parts = Vec::new();
    for module in modules {
        let path = plain_path(&module.path, "module")?;
        let one = if module.args.is_empty() {
            path.to_owned()
        } else {
            format!("{path} {}", module.args)
        };
        parts.push(one.replace(',', ",,"));
    }
    Ok(parts.join(","))
}

/// The full argument list for QEMU (without the program name).
pub fn qemu_args(machine: &Machine, boot: &Boot) -> Result<Vec<OsString>, String> {
    let mut args: Vec<OsString> = Vec::new();
    let mut push = |items: &[&str]| args.extend(items.iter().map(OsString::from));
    push(&["-machine", "q35"]);
    match machine.accel {
        Accel::Tcg => push(&["-accel", "tcg", "-cpu", "max"]),
        Accel::TcgIcount => push(&[
            "-accel",
            "tcg",
            "-icount",
            "shift=0,sleep=off",
            "-cpu",
            "max",
        ]),
        Accel::Kvm => push(&["-accel", "kvm", "-cpu", "host,-arch-capabilities"]),
    }
    let mem = machine.mem_mib.to_string();
    let smp = machine.smp.to_string();
    let debug_exit = format!("isa-debug-exit,iobase={DEBUG_EXIT_PORT:#x},iosize=0x04");
    push(&["-m", &mem, "-smp", &smp]);
    push(&[
        "-display",
        "none",
        "-monitor",
        "none",
        "-serial",
        "stdio",
        "-no-reboot",
    ]);
    push(&["-device", &debug_exit]);
    if let Some(disk) = &machine.devices.disk {
        let path = plain_path(disk, "disk image")?;
        if path.contains(',') {
            return Err(format!("disk image path '{path}' must not contain a comma"));
        }
        let drive = format!("file={path},if=none,id=disk0,format=raw");
        push(&["-drive", &drive]);
        push(&[
            "-device",
            "virtio-blk-pci,drive=disk0,disable-legacy=on,addr=04.0",
        ]);
    }
    if machine.devices.nic {
        push(&["-netdev", &user_netdev(machine.devices.http_forward)]);
        push(&[
            "-device",
            "virtio-net-pci,netdev=net0,disable-legacy=on,addr=05.0,mac=52:54:00:12:34:56",
        ]);
    }
    match boot {
        Boot::Direct {
            kernel,
            append,
            modules,
        } => {
            plain_path(kernel, "kernel")?;
            args.extend(["-kernel".into(), kernel.clone().into_os_string()]);
            args.extend(["-append".into(), append.into()]);
            if !modules.is_empty() {
                args.extend(["-initrd".into(), initrd_value(modules)?.into()]);
            }
        }
        Boot::Cdrom(iso) => {
            args.extend(["-cdrom".into(), iso.clone().into_os_string()]);
            args.extend(["-boot".into(), "d".into()]);
        }
    }
    Ok(args)
}

/// The command line as one shell-like string, for messages and logs.
pub fn display_command(args: &[OsString]) -> String {
    let mut line = String::from(QEMU);
    for arg in args {
        let arg = arg.to_string_lossy();
        line.push(' ');
        if arg.is_empty()
            || arg.contains(|c: char| c.is_whitespace() || "'\"\\$;&|<>()*?".contains(c))
        {
            line.push('\'');
            line.push_str(&arg.replace('\'', r"'\''"));
            line.push('\'');
        } else {
            line.push_str(&arg);
        }
    }
    line
}

/// How [`run`] treats the serial output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serial {
    /// Shown live on xtask's stdout (QEMU's messages on its stderr), and
    /// captured; QEMU reads the terminal when stdin is one.
    Terminal,
    /// Captured only (for tests).
    Capture,
}

/// Everything [`run`] needs.
#[derive(Clone, Debug)]
pub struct RunSpec {
    /// QEMU's arguments.
    pub args: Vec<OsString>,
    /// Where the serial output goes.
    pub serial: Serial,
    /// Stop QEMU after this long.
    pub timeout: Option<Duration>,
    /// Stop QEMU as soon as the captured serial log contains one of these.
    pub stop_markers: &'static [&'static str],
    /// What to type into COM1, in order (empty: nothing).
    pub typing: &'static [Keys],
    /// Host commands to run during the run, in order (empty: none).
    pub host_steps: &'static [HostStep],
    /// What `{port}` stands for in their arguments (the forwarded port).
    pub port: Option<u16>,
}

/// A command run on the host once the serial log shows `after` (after
/// the previous step's trigger), e.g. `curl` through the port forward;
/// its output is kept in [`RunResult::host_steps`], and `then_type` is
/// typed into COM1 once it has ended. The command must bound its own
/// time (`curl --max-time`, `--retry`): the run waits for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostStep {
    /// The text the serial output must show first.
    pub after: &'static str,
    /// The program and its arguments; `{port}` in an argument is replaced
    /// by the run's [`RunSpec::port`].
    pub command: &'static [&'static str],
    /// Text its standard output must contain for the step to pass.
    pub expect: &'static [&'static str],
    /// Typed into COM1 once the command has ended (empty: nothing).
    pub then_type: &'static [u8],
}

/// What one [`HostStep`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostOutput {
    /// The command line as run.
    pub command: String,
    /// Its exit status (`None`: killed by a signal, or it could not start).
    pub status: Option<i32>,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error (or why it could not start).
    pub stderr: String,
}

impl HostStep {
    /// The problems of `output` of this step: a failed command, or text
    /// missing from its output.
    #[must_use]
    pub fn problems(&self, output: &HostOutput) -> Vec<String> {
        let mut problems = Vec::new();
        if output.status != Some(0) {
            problems.push(format!(
                "host step `{}` failed ({:?}): {}",
                output.command,
                output.status,
                output.stderr.trim()
            ));
        }
        for text in self.expect {
            if !output.stdout.contains(text) {
                problems.push(format!(
                    "host step `{}`: no {text:?} in its output",
                    output.command
                ));
            }
        }
        problems
    }

    /// Runs the command, `{port}` replaced by `port`.
    fn run(&self, port: Option<u16>) -> HostOutput {
        let port = port.map_or_else(|| "{port}".to_owned(), |p| p.to_string());
        let args: Vec<String> = self
            .command
            .iter()
            .map(|a| a.replace("{port}", &port))
            .collect();
        let command = args.join(" ");
        let Some((program, rest)) = args.split_first() else {
            return HostOutput {
                command,
                status: None,
                stdout: String::new(),
                stderr: "empty command".to_owned(),
            };
        };
        match Command::new(program)
            .args(rest)
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) => HostOutput {
                command,
                status: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            },
            Err(e) => HostOutput {
                command,
                status: None,
                stdout: String::new(),
                stderr: format!("cannot start {program}: {e}"),
            },
        }
    }
}

/// Whether `trigger` appears in `log` at or after `from`; if so, where it
/// ends.
fn find_from(log: &[u8], from: usize, trigger: &str) -> Option<usize> {
    let tail = log.get(from..).unwrap_or_default();
    tail.windows(trigger.len())
        .position(|w| w == trigger.as_bytes())
        .map(|at| from + at + trigger.len())
}

/// Bytes typed into COM1's input (QEMU's stdin) once the serial log shows
/// `after`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Keys {
    /// The text the serial output must show first.
    pub after: &'static str,
    /// What is then typed, all at once (QEMU hands it to the UART as its
    /// receive FIFO drains; nothing is lost on the way).
    pub bytes: &'static [u8],
}

/// Types a script of [`Keys`] into a run: each entry once, in order, when
/// its `after` text appears in the serial log after the previous entry's
/// `after` text (so the same prompt printed twice is two triggers).
#[derive(Clone, Debug)]
pub struct Typist {
    script: &'static [Keys],
    /// The next entry to type.
    next: usize,
    /// Where the search for the next entry's trigger starts.
    from: usize,
}

impl Typist {
    /// A typist for `script`, which has typed nothing yet.
    pub fn new(script: &'static [Keys]) -> Typist {
        Typist {
            script,
            next: 0,
            from: 0,
        }
    }

    /// Whether every entry has been typed.
    pub fn done(&self) -> bool {
        self.next == self.script.len()
    }

    /// What to type now that the serial log reads `log` (which only ever
    /// grows): the bytes of every entry whose trigger has appeared since
    /// the last call, in order; empty if none.
    pub fn due(&mut self, log: &[u8]) -> Vec<u8> {
        let mut typed = Vec::new();
        while let Some(keys) = self.script.get(self.next) {
            let Some(end) = find_from(log, self.from, keys.after) else {
                // Search again from where the trigger could still begin.
                self.from = log.len().saturating_sub(keys.after.len()).max(self.from);
                break;
            };
            self.from = end;
            self.next += 1;
            typed.extend_from_slice(keys.bytes);
        }
        typed
    }
}

/// What a QEMU run left behind.
#[derive(Clone, Debug)]
pub struct RunResult {
    /// How it ended.
    pub outcome: Outcome,
    /// The serial output.
    pub serial: String,
    /// QEMU's own messages (with [`Serial::Terminal`] also shown as they came).
    pub stderr: String,
    /// Wall-clock time QEMU ran.
    pub elapsed: Duration,
    /// What each [`HostStep`] whose trigger appeared did, in order.
    pub host_steps: Vec<HostOutput>,
}

/// A buffer filled by a reader thread.
type Shared = Arc<Mutex<Vec<u8>>>;

/// Where a reader thread copies what it reads, as it comes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Echo {
    /// Nowhere.
    Off,
    /// xtask's stdout.
    Stdout,
    /// xtask's stderr.
    Stderr,
}

/// Reads `source` to its end into `sink`, copying each chunk to `echo`.
fn collect(
    mut source: impl Read + Send + 'static,
    sink: Shared,
    echo: Echo,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let mut chunk = [0u8; 4096];
        loop {
            match source.read(&mut chunk) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    // Nothing useful is left to do if xtask's own output is gone.
                    let _ = match echo {
                        Echo::Off => Ok(()),
                        Echo::Stdout => {
                            let mut out = std::io::stdout().lock();
                            out.write_all(&chunk[..n]).and_then(|()| out.flush())
                        }
                        Echo::Stderr => std::io::stderr().write_all(&chunk[..n]),
                    };
                    sink.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend_from_slice(&chunk[..n]);
                }
            }
        }
    })
}

/// The text in a shared buffer.
fn text(buffer: &Shared) -> String {
    String::from_utf8_lossy(&buffer.lock().unwrap_or_else(|e| e.into_inner())).into_owned()
}

/// The first of `markers` found in `log` at or after byte `from`.
fn find_marker(log: &[u8], from: usize, markers: &[&'static str]) -> Option<&'static str> {
    let tail = log.get(from..).unwrap_or_default();
    markers
        .iter()
        .copied()
        .find(|marker| tail.windows(marker.len()).any(|w| w == marker.as_bytes()))
}

/// Kills QEMU (a run xtask ends itself) and reaps it.
fn stop(child: &mut Child) -> Result<(), String> {
    match child.kill() {
        Ok(()) => {}
        // Already exited between the check and the kill.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {}
        Err(e) => return Err(format!("stopping {QEMU}: {e}")),
    }
    child
        .wait()
        .map(|_| ())
        .map_err(|e| format!("reaping {QEMU}: {e}"))
}

/// How the wait for QEMU ended.
enum Ended {
    /// QEMU exited by itself with this status (`None`: by a signal).
    Exited(Option<i32>),
    /// xtask stopped it.
    ByXtask(Outcome),
}

/// Types what `typist` says is due into `stdin`. QEMU gone (a broken
/// pipe) is not an error here: its exit is seen next.
fn type_due(typist: &mut Typist, stdin: &mut Option<ChildStdin>, log: &[u8]) -> Result<(), String> {
    type_bytes(stdin, &typist.due(log))
}

/// Prints what a host step did, for a run shown on the terminal.
fn show_host_step(output: &HostOutput) {
    println!("\nxtask: $ {}", output.command);
    print!("{}", output.stdout);
    if !output.stdout.is_empty() && !output.stdout.ends_with('\n') {
        println!();
    }
    if output.status != Some(0) {
        println!(
            "xtask: it failed ({:?}): {}",
            output.status,
            output.stderr.trim()
        );
    }
}

/// Types `bytes` into `stdin` (nothing if empty). QEMU gone (a broken
/// pipe) is not an error here: its exit is seen next.
fn type_bytes(stdin: &mut Option<ChildStdin>, bytes: &[u8]) -> Result<(), String> {
    let Some(pipe) = stdin.as_mut().filter(|_| !bytes.is_empty()) else {
        return Ok(());
    };
    match pipe.write_all(bytes).and_then(|()| pipe.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            *stdin = None;
            Ok(())
        }
        Err(e) => Err(format!("typing into {QEMU}: {e}")),
    }
}

/// Polls `child` until it exits, `spec.timeout` passes, or the serial log
/// shows one of `spec.stop_markers`; types `spec.typing` into `stdin` as
/// its triggers appear, and runs `spec.host_steps` likewise (their outputs
/// into `outputs`).
fn wait(
    child: &mut Child,
    spec: &RunSpec,
    start: Instant,
    serial: &Shared,
    mut stdin: Option<ChildStdin>,
    outputs: &mut Vec<HostOutput>,
) -> Result<Ended, String> {
    let longest_marker = spec.stop_markers.iter().map(|m| m.len()).max().unwrap_or(0);
    let mut scanned: usize = 0;
    let mut typist = Typist::new(spec.typing);
    let mut step_from = 0;
    loop {
        if let Some(step) = spec.host_steps.get(outputs.len()) {
            let log = serial.lock().unwrap_or_else(|e| e.into_inner());
            let (found, len) = (find_from(&log, step_from, step.after), log.len());
            drop(log);
            match found {
                Some(end) => {
                    step_from = end;
                    let output = step.run(spec.port);
                    if spec.serial == Serial::Terminal {
                        show_host_step(&output);
                    }
                    outputs.push(output);
                    type_bytes(&mut stdin, step.then_type)?;
                }
                None => step_from = len.saturating_sub(step.after.len()).max(step_from),
            }
        }
        if let Some(status) = child
            .try_wait()
            .map_err(|e| format!("waiting for {QEMU}: {e}"))?
        {
            return Ok(Ended::Exited(status.code()));
        }
        if let Some(limit) = spec.timeout
            && start.elapsed() >= limit
        {
            stop(child)?;
            return Ok(Ended::ByXtask(Outcome::Timeout(limit)));
        }
        if !typist.done() {
            let log = serial.lock().unwrap_or_else(|e| e.into_inner());
            type_due(&mut typist, &mut stdin, &log)?;
        }
        if !spec.stop_markers.is_empty() {
            let log = serial.lock().unwrap_or_else(|e| e.into_inner());
            let found = find_marker(
                &log,
                scanned.saturating_sub(longest_marker),
                spec.stop_markers,
            );
            scanned = log.len();
            drop(log);
            if let Some(marker) = found {
                stop(child)?;
                return Ok(Ended::ByXtask(Outcome::Stopped(marker)));
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Runs QEMU to its end, its timeout, or a stop marker.
pub fn run(spec: &RunSpec) -> Result<RunResult, String> {
    let mut command = Command::new(QEMU);
    command.args(&spec.args);
    let capture = spec.serial == Serial::Capture;
    let interactive = !capture && std::io::stdin().is_terminal();
    let types = !spec.typing.is_empty() || spec.host_steps.iter().any(|s| !s.then_type.is_empty());
    command.stdin(if types {
        Stdio::piped()
    } else if interactive {
        Stdio::inherit()
    } else {
        Stdio::null()
    });
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let start = Instant::now();
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start {QEMU}: {e}"))?;
    let serial = Shared::default();
    let stderr = Shared::default();
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        let echo = if capture { Echo::Off } else { Echo::Stdout };
        readers.push(collect(out, Arc::clone(&serial), echo));
    }
    if let Some(err) = child.stderr.take() {
        let echo = if capture { Echo::Off } else { Echo::Stderr };
        readers.push(collect(err, Arc::clone(&stderr), echo));
    }
    // Kept open until QEMU ends: an end of file on its stdin is not input.
    let stdin = child.stdin.take();
    let mut host_steps = Vec::new();
    let ended = wait(&mut child, spec, start, &serial, stdin, &mut host_steps);
    if ended.is_err() {
        // Leave no QEMU behind; the wait's error is the one worth reporting.
        let _ = stop(&mut child);
    }
    let ended = ended?;
    let elapsed = start.elapsed();
    for reader in readers {
        // A reader ends at end of file; a panic there is a bug in collect().
        reader
            .join()
            .map_err(|_| "QEMU output reader thread panicked".to_owned())?;
    }
    std::io::stdout()
        .flush()
        .map_err(|e| format!("stdout: {e}"))?;
    let stderr = text(&stderr);
    let outcome = match ended {
        Ended::Exited(status) => Outcome::from_qemu_exit(status, &stderr),
        Ended::ByXtask(outcome) => outcome,
    };
    Ok(RunResult {
        outcome,
        serial: text(&serial),
        stderr,
        elapsed,
        host_steps,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCG: Machine = Machine {
        accel: Accel::Tcg,
        smp: 1,
        mem_mib: 256,
        devices: Devices::NONE,
    };

    fn strings(args: &[OsString]) -> Vec<String> {
        args.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn auto_needs_vmx_or_svm_and_a_usable_kvm() {
        let vmx = "processor\t: 0\nflags\t\t: fpu vme vmx sse\n";
        let none = "processor\t: 0\nflags\t\t: fpu vme sse hypervisor\n";
        assert_eq!(
            choose_accel(AccelChoice::Auto, false, vmx, true),
            Accel::Kvm
        );
        assert_eq!(
            choose_accel(AccelChoice::Auto, false, vmx, false),
            Accel::Tcg
        );
        assert_eq!(
            choose_accel(AccelChoice::Auto, false, none, true),
            Accel::Tcg
        );
        assert_eq!(
            choose_accel(AccelChoice::Auto, false, "flags : svm\n", true),
            Accel::Kvm
        );
        assert_eq!(
            choose_accel(AccelChoice::Auto, true, vmx, true),
            Accel::TcgIcount
        );
        assert_eq!(
            choose_accel(AccelChoice::Kvm, false, none, false),
            Accel::Kvm
        );
        assert_eq!(choose_accel(AccelChoice::Tcg, false, vmx, true), Accel::Tcg);
    }

    #[test]
    fn direct_boot_command() {
        let boot = Boot::Direct {
            kernel: "/t/hypervisor".into(),
            append: "console=com1 com1=115200,8n1".into(),
            modules: vec![
                Module {
                    path: "/t/guest".into(),
                    args: "test=hello list=a,b".into(),
                },
                Module {
                    path: "/t/rd,1".into(),
                    args: String::new(),
                },
            ],
        };
        let args = strings(&qemu_args(&TCG, &boot).unwrap());
        let line = args.join(" ");
        assert!(line.starts_with("-machine q35 -accel tcg -cpu max -m 256 -smp 1 -display none"));
        assert!(
            line.contains(
                "-serial stdio -no-reboot -device isa-debug-exit,iobase=0xf4,iosize=0x04"
            )
        );
        let at = |flag: &str| args[args.iter().position(|a| a == flag).unwrap() + 1].clone();
        assert_eq!(at("-kernel"), "/t/hypervisor");
        assert_eq!(at("-append"), "console=com1 com1=115200,8n1");
        assert_eq!(at("-initrd"), "/t/guest test=hello list=a,,b,/t/rd,,1");
        assert!(!args.contains(&"-cdrom".to_owned()));
    }

    #[test]
    fn direct_boot_without_modules_has_no_initrd() {
        let boot = Boot::Direct {
            kernel: "/t/hv".into(),
            append: String::new(),
            modules: Vec::new(),
        };
        let args = strings(&qemu_args(&TCG, &boot).unwrap());
        assert!(!args.contains(&"-initrd".to_owned()));
    }

    #[test]
    fn paths_with_spaces_are_refused() {
        let module = Module {
            path: "/my dir/guest".into(),
            args: String::new(),
        };
        assert!(initrd_value(&[module]).is_err());
        let boot = Boot::Direct {
            kernel: "/my dir/hv".into(),
            append: String::new(),
            modules: Vec::new(),
        };
        assert!(qemu_args(&TCG, &boot).is_err());
    }

    #[test]
    fn grub_boot_and_accelerators() {
        let cd = Boot::Cdrom("/t/boot.iso".into());
        let kvm = Machine {
            accel: Accel::Kvm,
            smp: 2,
            mem_mib: 512,
            devices: Devices::NONE,
        };
        let line = strings(&qemu_args(&kvm, &cd).unwrap()).join(" ");
        assert!(line.contains("-accel kvm -cpu host,-arch-capabilities -m 512 -smp 2"));
        assert!(line.ends_with("-cdrom /t/boot.iso -boot d"));
        let icount = Machine {
            accel: Accel::TcgIcount,
            ..TCG
        };
        let line = strings(&qemu_args(&icount, &cd).unwrap()).join(" ");
        assert!(line.contains("-accel tcg -icount shift=0,sleep=off -cpu max"));
    }

    #[test]
    fn devices_are_modern_virtio_functions_at_fixed_slots() {
        let machine = Machine {
            devices: Devices {
                disk: Some("/t/disk.img".into()),
                nic: true,
                http_forward: None,
            },
            ..TCG
        };
        let line =
            strings(&qemu_args(&machine, &Boot::Cdrom("/t/b.iso".into())).unwrap()).join(" ");
        assert!(line.contains(
            "-drive file=/t/disk.img,if=none,id=disk0,format=raw \
             -device virtio-blk-pci,drive=disk0,disable-legacy=on,addr=04.0"
        ));
        assert!(
            line.contains(
                "-netdev user,id=net0 -device virtio-net-pci,netdev=net0,disable-legacy=on"
            )
        );
        let comma = Machine {
            devices: Devices {
                disk: Some("/t/a,b.img".into()),
                ..Devices::NONE
            },
            ..TCG
        };
        assert!(qemu_args(&comma, &Boot::Cdrom("/t/b.iso".into())).is_err());
        let line = strings(&qemu_args(&TCG, &Boot::Cdrom("/t/b.iso".into())).unwrap()).join(" ");
        assert!(!line.contains("virtio"));
    }

    #[test]
    fn display_quotes_what_a_shell_would_split() {
        let args: Vec<OsString> = vec!["-append".into(), "a b".into(), "-m".into(), "256".into()];
        assert_eq!(
            display_command(&args),
            "qemu-system-x86_64 -append 'a b' -m 256"
        );
    }

    #[test]
    fn the_forward_is_bound_to_loopback_and_reaches_the_web_domu() {
        assert_eq!(user_netdev(None), "user,id=net0");
        assert_eq!(
            user_netdev(Some(8080)),
            "user,id=net0,hostfwd=tcp:127.0.0.1:8080-10.0.2.15:80"
        );
        let machine = Machine {
            devices: Devices {
                nic: true,
                http_forward: Some(9000),
                ..Devices::NONE
            },
            ..TCG
        };
        let line =
            strings(&qemu_args(&machine, &Boot::Cdrom("/t/b.iso".into())).unwrap()).join(" ");
        assert!(line.contains("-netdev user,id=net0,hostfwd=tcp:127.0.0.1:9000-10.0.2.15:80 "));
        assert_ne!(free_port().unwrap(), 0);
    }

    #[test]
    fn host_steps_run_with_the_port_and_are_judged_by_their_output() {
        let step = HostStep {
            after: "ready",
            command: &["echo", "port {port}"],
            expect: &["port 8080"],
            then_type: b"",
        };
        let output = step.run(Some(8080));
        assert_eq!(output.command, "echo port 8080");
        assert_eq!(
            (output.status, output.stdout.as_str()),
            (Some(0), "port 8080\n")
        );
        assert!(step.problems(&output).is_empty());
        let wrong = step.run(Some(1));
        assert_eq!(step.problems(&wrong).len(), 1);
        let failing = HostStep {
            command: &["false"],
            expect: &[],
            ..step
        };
        assert_eq!(failing.problems(&failing.run(None)).len(), 1);
        let missing = HostStep {
            command: &["/nonexistent/program"],
            ..failing
        };
        let output = missing.run(None);
        assert_eq!(output.status, None);
        assert!(output.stderr.contains("cannot start"));
        assert_eq!(find_from(b"a ready b ready", 0, "ready"), Some(7));
        assert_eq!(find_from(b"a ready b ready", 7, "ready"), Some(15));
        assert_eq!(find_from(b"a ready b ready", 15, "ready"), None);
    }

    #[test]
    fn markers_found_across_the_scan_boundary() {
        let log = b"(XEN) Hardware Dom0 halted: halting machine";
        assert_eq!(find_marker(log, 0, &["Dom0 halted"]), Some("Dom0 halted"));
        assert_eq!(find_marker(log, 10, &["Dom0 halted"]), Some("Dom0 halted"));
        assert_eq!(find_marker(log, 30, &["Dom0 halted"]), None);
        assert_eq!(find_marker(log, 100, &["Dom0 halted"]), None);
    }

    const SCRIPT: &[Keys] = &[
        Keys {
            after: "type now",
            bytes: b"first",
        },
        Keys {
            after: "type now",
            bytes: b"second",
        },
        Keys {
            after: "last one",
            bytes: b"third",
        },
    ];

    #[test]
    fn typing_waits_for_each_trigger_and_types_once() {
        let mut typist = Typist::new(SCRIPT);
        let mut log = b"booting...\n".to_vec();
        assert!(typist.due(&log).is_empty());
        log.extend_from_slice(b"(d0) type now\n");
        assert_eq!(typist.due(&log), b"first");
        // The same text again is the second entry's trigger, not the first's.
        assert!(typist.due(&log).is_empty());
        log.extend_from_slice(b"echo: first\n(d0) type now\n");
        assert_eq!(typist.due(&log), b"second");
        assert!(!typist.done());
        log.extend_from_slice(b"last one\n");
        assert_eq!(typist.due(&log), b"third");
        assert!(typist.done());
        log.extend_from_slice(b"type now\nlast one\n");
        assert!(typist.due(&log).is_empty());
    }

    #[test]
    fn a_trigger_split_across_reads_is_found() {
        let mut typist = Typist::new(SCRIPT);
        let mut log = b"xx type".to_vec();
        assert!(typist.due(&log).is_empty());
        log.extend_from_slice(b" n");
        assert!(typist.due(&log).is_empty());
        log.extend_from_slice(b"ow");
        assert_eq!(typist.due(&log), b"first");
    }

    #[test]
    fn triggers_that_came_together_type_in_order() {
        let mut typist = Typist::new(SCRIPT);
        assert_eq!(
            typist.due(b"type now type now last one"),
            b"firstsecondthird"
        );
        assert!(typist.done());
        // Out of order, the later trigger alone types nothing.
        let mut typist = Typist::new(SCRIPT);
        assert!(typist.due(b"last one").is_empty());
        assert_eq!(typist.due(b"last one type now"), b"first");
    }

    #[test]
    fn nothing_to_type_is_done_at_once() {
        let mut typist = Typist::new(&[]);
        assert!(typist.done());
        assert!(typist.due(b"anything").is_empty());
    }
}
