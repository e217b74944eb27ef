//! `cargo xtask bench --trace <name>`: where the instructions of one
//! sample go, function by function.
//!
//! The guest runs with `trace=<name>` and calls two empty marker functions
//! around one extra sample (for `syscall_bounce`, two labels of the user
//! loop delimit each bounce instead). QEMU starts halted with its gdb stub
//! on a free local port; gdb breaks on the begin marker, then single-steps
//! to the end marker and records every program counter. Each one is then
//! named from the symbol tables (`nm`) of the guest and of this hypervisor;
//! the per-CPU trampoline runs a copy of the hypervisor's entry text, so
//! its addresses are named from that text. Xen ships without symbols: its
//! instructions are counted as one group.
//!
//! Single-stepping with gdb takes about a millisecond per instruction, so
//! a trace stops after [`STEP_LIMIT`] instructions.
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use dom0_abi::layout::{HYPERVISOR_VIRT_END, HYPERVISOR_VIRT_START, TRAMPOLINE_VIRT_START};

use super::{BENCH_MACHINE, Platform};
use crate::packages::{Probe, Tool};
use crate::qemu::{self, Boot, Module, RunSpec, Serial};

/// Instructions recorded at most.
pub const STEP_LIMIT: u32 = 100_000;

/// The tools a trace needs.
pub const TOOLS: &[Tool] = &[
    Tool {
        probe: Probe::Command("gdb"),
        package: "gdb",
    },
    Tool {
        probe: Probe::Command("nm"),
        package: "binutils",
    },
];

/// Where a traced sample starts and ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// Symbol of the first instruction recorded.
    pub begin: &'static str,
    /// Symbol of the first instruction not recorded.
    pub end: &'static str,
    /// Times `begin` is reached before the traced one.
    pub skip: u32,
}

/// The window for benchmark `name`; the guest then runs with `iters=1
/// warmup=1`.
pub fn window_for(name: &str) -> Window {
    if name == "syscall_bounce" {
        // The user loop runs once for the warm-up and once timed; the
        // labels sit right after the first `rdtsc` and before the second.
        Window {
            begin: "bench_user_window_begin",
            end: "bench_user_window_end",
            skip: 1,
        }
    } else {
        Window {
            begin: "bench_trace_begin",
            end: "bench_trace_end",
            skip: 0,
        }
    }
}

/// A symbol table: `(address, name)` sorted by address.
#[derive(Clone, Debug, Default)]
pub struct Symbols {
    entries: Vec<(u64, String)>,
}

impl Symbols {
    /// Parses `nm -n -C` output (code symbols only).
    pub fn parse_nm(text: &str) -> Symbols {
        let mut entries: Vec<(u64, String)> = text
            .lines()
            .filter_map(|line| {
                let mut parts = line.splitn(3, ' ');
                let address = u64::from_str_radix(parts.next()?, 16).ok()?;
                let kind = parts.next()?;
                let name = parts.next()?;
                matches!(kind, "T" | "t" | "W" | "w").then(|| (address, name.to_owned()))
            })
            .collect();
        entries.sort();
        Symbols { entries }
    }

    /// The symbols of an ELF file.
    pub fn of(elf: &Path) -> Result<Symbols, String> {
        let output = Command::new("nm")
            .args(["-n", "-C"])
            .arg(elf)
            .output()
            .map_err(|e| format!("cannot start nm: {e}"))?;
        if !output.status.success() {
            return Err(format!("nm {} failed ({})", elf.display(), output.status));
        }
        Ok(Symbols::parse_nm(&String::from_utf8_lossy(&output.stdout)))
    }

    /// The address of `name`.
    pub fn address(&self, name: &str) -> Option<u64> {
        self.entries
            .iter()
            .find(|(_, n)| n == name)
            .map(|(a, _)| *a)
    }

    /// The symbol containing `address` (the nearest one at or below it).
    pub fn name(&self, address: u64) -> Option<&str> {
        let after = self.entries.partition_point(|(a, _)| *a <= address);
        after.checked_sub(1).map(|i| self.entries[i].1.as_str())
    }
}

/// How program counters are named on one platform.
#[derive(Clone, Debug)]
pub struct Namer {
    guest: Symbols,
    hypervisor: Option<Symbols>,
}

impl Namer {
    /// For this hypervisor (`hypervisor` = its symbols) or Xen (`None`).
    pub fn new(guest: Symbols, hypervisor: Option<Symbols>) -> Namer {
        Namer { guest, hypervisor }
    }

    /// The group (`guest`, `hv`, `trampoline`, `xen`) and function of `pc`.
    pub fn name(&self, pc: u64) -> (&'static str, String) {
        let in_reserved = (HYPERVISOR_VIRT_START..HYPERVISOR_VIRT_END).contains(&pc);
        let Some(hv) = &self.hypervisor else {
            return if in_reserved {
                ("xen", "(no symbols)".to_owned())
            } else {
                ("guest", self.guest_name(pc))
            };
        };
        if !in_reserved {
            return ("guest", self.guest_name(pc));
        }
        if let (Some(start), Some(end)) = (
            hv.address("__entry_text_start"),
            hv.address("__entry_text_end"),
        ) && let Some(offset) = pc.checked_sub(TRAMPOLINE_VIRT_START)
            && offset < end.saturating_sub(start)
        {
            let name = hv.name(start + offset).unwrap_or("?");
            return ("trampoline", name.to_owned());
        }
        ("hv", hv.name(pc).unwrap_or("?").to_owned())
    }

    fn guest_name(&self, pc: u64) -> String {
        self.guest.name(pc).unwrap_or("?").to_owned()
    }
}

/// Consecutive instructions in one function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// `guest`, `hv`, `trampoline` or `xen`.
    pub group: &'static str,
    /// The function.
    pub function: String,
    /// Instructions.
    pub count: u64,
}

/// Merges the named program counters into runs.
pub fn runs(pcs: &[u64], namer: &Namer) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for &pc in pcs {
        let (group, function) = namer.name(pc);
        match runs.last_mut() {
            Some(last) if last.group == group && last.function == function => last.count += 1,
            _ => runs.push(Run {
                group,
                function,
                count: 1,
            }),
        }
    }
    runs
}

/// The trace report: runs in order, then totals per function.
pub fn report(name: &str, platform: Platform, runs: &[Run], truncated: bool) -> String {
    let total: u64 = runs.iter().map(|r| r.count).sum();
    let mut out = format!(
        "trace of one {name} sample on {}: {total} instructions{}\n",
        platform.name(),
        if truncated {
            " (stopped at the step limit)"
        } else {
            ""
        }
    );
    out.push_str("  in order:\n");
    for run in runs {
        let _ = writeln!(
            out,
            "  {:>7}  {:<10} {}",
            run.count, run.group, run.function
        );
    }
    let mut totals: Vec<(String, &'static str, u64)> = Vec::new();
    for run in runs {
        match totals
            .iter_mut()
            .find(|(f, g, _)| *f == run.function && *g == run.group)
        {
            Some(entry) => entry.2 += run.count,
            None => totals.push((run.function.clone(), run.group, run.count)),
        }
    }
    totals.sort_by_key(|t| std::cmp::Reverse(t.2));
    out.push_str("  per function:\n");
    for (function, group, count) in totals {
        let _ = writeln!(out, "  {count:>7}  {group:<10} {function}");
    }
    out
}

/// The gdb script: connect, skip `skip` hits of `begin`, record every PC
/// up to `end` into `out`, kill QEMU.
fn gdb_script(port: u16, begin: u64, end: u64, skip: u32, out: &Path) -> String {
    format!(
        r#"import gdb, time
gdb.execute("set pagination off")
gdb.execute("set confirm off")
for attempt in range(50):
    try:
        gdb.execute("target remote 127.0.0.1:{port}", to_string=True)
        break
    except gdb.error:
        time.sleep(0.1)
gdb.execute("hbreak *{begin}", to_string=True)
for hit in range({skip} + 1):
    gdb.execute("continue", to_string=True)
gdb.execute("delete", to_string=True)
pcs = []
while len(pcs) < {limit}:
    pc = int(gdb.parse_and_eval("$pc")) & 0xffffffffffffffff
    if pc == {end}:
        break
    pcs.append(pc)
    gdb.execute("stepi", to_string=True)
with open("{out}", "w") as f:
    f.write("\n".join("%x" % pc for pc in pcs))
gdb.execute("kill")
"#,
        limit = STEP_LIMIT,
        out = out.display(),
    )
}

/// A free local TCP port for QEMU's gdb stub.
fn free_port() -> Result<u16, String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| format!("no free local port: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("no free local port: {e}"))
}

/// Ends a QEMU whose gdb went away, through its gdb stub (a `k` packet),
/// so the run does not wait for its timeout. Best effort: if QEMU has
/// already gone, there is nothing to do.
fn kill_through_stub(port: u16) {
    if let Ok(mut stub) = TcpStream::connect(("127.0.0.1", port)) {
        let _ = std::io::Write::write_all(&mut stub, b"$k#6b");
    }
}

/// Runs gdb with `script` until it ends or `limit` passes.
fn run_gdb(script: &Path, limit: Duration) -> Result<(), String> {
    let mut gdb = Command::new("gdb")
        .args(["-batch", "-nx", "-x"])
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start gdb: {e}"))?;
    let start = Instant::now();
    loop {
        if let Some(status) = gdb.try_wait().map_err(|e| format!("gdb: {e}"))? {
            if status.success() {
                return Ok(());
            }
            let mut message = String::new();
            if let Some(mut stderr) = gdb.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut stderr, &mut message);
            }
            return Err(format!("gdb failed ({status}): {}", message.trim()));
        }
        if start.elapsed() > limit {
            let _ = gdb.kill();
            let _ = gdb.wait();
            return Err(format!("gdb did not finish within {} s", limit.as_secs()));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// What a platform is booted with.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// Which platform.
    pub platform: Platform,
    /// The multiboot kernel (this hypervisor or Xen).
    pub kernel: &'a Path,
    /// Its command line.
    pub append: &'a str,
    /// This hypervisor's ELF for symbols (`None` for Xen).
    pub symbols: Option<&'a Path>,
}

/// Traces one sample of benchmark `name` on `target`; returns the report.
pub fn trace(
    target: &Target<'_>,
    guest: &Path,
    name: &str,
    log_dir: &Path,
    limit: Duration,
) -> Result<String, String> {
    let guest_symbols = Symbols::of(guest)?;
    let window = window_for(name);
    let address = |symbol: &str| {
        guest_symbols
            .address(symbol)
            .ok_or_else(|| format!("the benchmark guest has no symbol {symbol}"))
    };
    let (begin, end) = (address(window.begin)?, address(window.end)?);
    let hypervisor_symbols = target.symbols.map(Symbols::of).transpose()?;
    let port = free_port()?;
    let prefix = format!("trace-{}-{name}", target.platform.name());
    let pcs_path = log_dir.join(format!("{prefix}.pcs"));
    let script_path = log_dir.join(format!("{prefix}.py"));
    let _ = fs::remove_file(&pcs_path);
    fs::write(
        &script_path,
        gdb_script(port, begin, end, window.skip, &pcs_path),
    )
    .map_err(|e| format!("{}: {e}", script_path.display()))?;
    let boot = Boot::Direct {
        kernel: target.kernel.to_path_buf(),
        append: target.append.to_owned(),
        modules: vec![Module {
            path: guest.to_path_buf(),
            args: format!("iters=1 warmup=1 only={name} trace={name}"),
        }],
    };
    let mut args = qemu::qemu_args(&BENCH_MACHINE, &boot)?;
    args.extend([
        "-gdb".into(),
        format!("tcp:127.0.0.1:{port}").into(),
        "-S".into(),
    ]);
    eprintln!(
        "xtask: tracing one {name} sample on {} (gdb single-steps; this takes a while)",
        target.platform.name()
    );
    let spec = RunSpec {
        args,
        serial: Serial::Capture,
        timeout: Some(limit),
        stop_markers: &[],
        typing: &[],
        host_steps: &[],
        port: None,
    };
    let qemu_run = thread::spawn(move || qemu::run(&spec));
    let traced = run_gdb(&script_path, limit);
    if traced.is_err() {
        kill_through_stub(port);
    }
    let qemu_result = qemu_run
        .join()
        .map_err(|_| "the QEMU thread panicked".to_owned())?;
    traced?;
    let log = qemu_result.map(|r| r.serial).unwrap_or_default();
    fs::write(log_dir.join(format!("{prefix}.log")), &log)
        .map_err(|e| format!("{}: {e}", log_dir.display()))?;
    let pcs: Vec<u64> = fs::read_to_string(&pcs_path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| u64::from_str_radix(l, 16).ok())
        .collect();
    if pcs.is_empty() {
        return Err(format!(
            "the guest never reached the traced sample (unsupported there? see {})",
            log_dir.join(format!("{prefix}.log")).display()
        ));
    }
    let truncated = pcs.len() >= usize::try_from(STEP_LIMIT).unwrap_or(usize::MAX);
    let namer = Namer::new(guest_symbols, hypervisor_symbols);
    Ok(report(
        name,
        target.platform,
        &runs(&pcs, &namer),
        truncated,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUEST_NM: &str = "\
ffffffff80001000 T _start\n\
ffffffff8000b800 t pv_bench::guest::harness::Harness::time\n\
ffffffff8000f000 T hypercall_page\n\
ffffffff80010000 B some_data\n";

    const HV_NM: &str = "\
ffff82d080109000 T __entry_text_start\n\
ffff82d080109000 T entry_stubs\n\
ffff82d080109ff9 t entry_common\n\
ffff82d08010a0fc T exit_to_guest_stub\n\
ffff82d08010b000 T __entry_text_end\n\
ffff82d08011ed30 t hypervisor::arch::x86_64::entry::guest_entry\n";

    fn ours() -> Namer {
        Namer::new(Symbols::parse_nm(GUEST_NM), Some(Symbols::parse_nm(HV_NM)))
    }

    #[test]
    fn nm_output_is_parsed_and_looked_up() {
        let guest = Symbols::parse_nm(GUEST_NM);
        assert_eq!(guest.address("hypercall_page"), Some(0xffff_ffff_8000_f000));
        assert_eq!(guest.address("some_data"), None);
        assert_eq!(guest.name(0xffff_ffff_8000_f227), Some("hypercall_page"));
        assert_eq!(
            guest.name(0xffff_ffff_8000_b83f),
            Some("pv_bench::guest::harness::Harness::time")
        );
        assert_eq!(guest.name(0x1000), None);
    }

    #[test]
    fn trampoline_addresses_are_named_from_the_entry_text() {
        let namer = ours();
        assert_eq!(
            namer.name(TRAMPOLINE_VIRT_START + 0x820),
            ("trampoline", "entry_stubs".to_owned())
        );
        assert_eq!(
            namer.name(TRAMPOLINE_VIRT_START + 0x1000),
            ("trampoline", "entry_common".to_owned())
        );
        assert_eq!(
            namer.name(TRAMPOLINE_VIRT_START + 0x10fc),
            ("trampoline", "exit_to_guest_stub".to_owned())
        );
        assert_eq!(
            namer.name(0xffff_82d0_8011_ed35),
            (
                "hv",
                "hypervisor::arch::x86_64::entry::guest_entry".to_owned()
            )
        );
        assert_eq!(
            namer.name(0xffff_ffff_8000_f005),
            ("guest", "hypercall_page".to_owned())
        );
        let xen = Namer::new(Symbols::parse_nm(GUEST_NM), None);
        assert_eq!(
            xen.name(0xffff_82d0_4020_0000),
            ("xen", "(no symbols)".to_owned())
        );
    }

    #[test]
    fn runs_merge_and_report_totals() {
        let namer = ours();
        let pcs = [
            0xffff_ffff_8000_f000,
            0xffff_ffff_8000_f005,
            TRAMPOLINE_VIRT_START + 0x820,
            TRAMPOLINE_VIRT_START + 0x1000,
            TRAMPOLINE_VIRT_START + 0x1001,
            0xffff_82d0_8011_ed30,
            TRAMPOLINE_VIRT_START + 0x1100,
            0xffff_ffff_8000_f007,
        ];
        let runs = runs(&pcs, &namer);
        let counts: Vec<u64> = runs.iter().map(|r| r.count).collect();
        assert_eq!(counts, [2, 1, 2, 1, 1, 1]);
        let text = report("null_hypercall", Platform::Ours, &runs, false);
        assert!(text.starts_with("trace of one null_hypercall sample on oxen: 8 instructions\n"));
        assert!(text.contains("      3  guest      hypercall_page"));
        assert!(text.contains("      2  trampoline entry_common"));
    }

    #[test]
    fn windows() {
        assert_eq!(window_for("null_hypercall").begin, "bench_trace_begin");
        assert_eq!(window_for("syscall_bounce").skip, 1);
    }
}
