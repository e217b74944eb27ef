//! Debian's stock Linux kernel as dom0: `cargo xtask run --linux` and
//! `cargo xtask test --linux`.
//!
//! [`prepare`] fetches Debian's current `linux-image-amd64` (through the
//! versioned package it depends on) and `busybox-static` with `apt-get
//! download`, keeps the ELF `vmlinux` and `busybox` in a cache under
//! `target/linux/` (reused when present: delete the directory to fetch
//! again), and writes a busybox initramfs whose `/init` mounts `/proc`,
//! `/sys` and `/dev`, prints [`MARKER`] and starts a shell on the console.
//! With `oxen=check` on the kernel command line, `/init` instead runs a
//! fixed script whose `oxen-linux: check <name>: <value>` lines are compared
//! between this hypervisor and Xen 4.17, then powers off.
//!
//! Debian ships an XZ-compressed `bzImage`; xtask unpacks its payload on the
//! host with `xz` (the boot protocol's header is read by
//! [`pv_image::BzImage`]), as the hypervisor has no decompressor yet.
//!
//! The Linux boot is measured in [`STAGES`]: each is a test of its own, on
//! Xen 4.17 (where all must pass) and here, where the first
//! [`PASSING_HERE`] must pass and the later ones are reported as pending
//! until the hypervisor reaches them.
#![forbid(unsafe_code)]

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use hypervisor::exit::HostExit;
use pv_image::{BzImage, Compression};

use crate::build::Workspace;
use crate::packages::{self, Probe, Tool};
use crate::qemu::Module;
use crate::ramdisk::{DIR_MODE, EXEC_MODE, newc_members};
use crate::status::Outcome;

/// The line `/init` prints once it runs and has mounted the file systems.
pub const MARKER: &str = "oxen-linux: /init reached";

/// The line the check script prints after its last check.
const SCRIPT_DONE: &str = "oxen-linux: script done";

/// The prefix of the check script's comparable lines.
const CHECK_PREFIX: &str = "oxen-linux: check ";

/// The kernel command line before `--linux-args`.
pub const KERNEL_ARGS: &str = "console=hvc0 earlyprintk=xen";

/// The kernel command line argument that makes `/init` run the checks.
pub const CHECK_ARG: &str = "oxen=check";

/// This hypervisor's command line for a Linux dom0.
pub const HV_ARGS: &str = "console=com1 com1=115200,8n1 dom0_mem=256M loglvl=info";

/// Xen's command line for a Linux dom0: QEMU's TCG mis-handles the
/// kernel's `iretq` to ring 3 with SMAP on, so Xen is told not to use it.
pub const XEN_ARGS: &str =
    "console=com1 com1=115200,8n1 dom0_mem=256M noreboot smap=0 loglvl=all guest_loglvl=all";

/// The shortest per-boot timeout of `test --linux`: Linux on Xen under
/// TCG takes 15 to 30 s to power off on this kind of machine.
pub const MIN_TIMEOUT_SECS: u64 = 180;

/// RAM of the QEMU machine for a Linux dom0, in MiB.
pub const MEM_MIB: u32 = 512;

/// The metapackage that names Debian's current kernel.
const KERNEL_META: &str = "linux-image-amd64";

/// The statically linked busybox.
const BUSYBOX: &str = "busybox-static";

/// Host tools beyond apt and dpkg (always there on Debian).
const TOOLS: &[Tool] = &[Tool {
    probe: Probe::Command("xz"),
    package: "xz-utils",
}];

/// `/init`: mounts, the marker, then the checks (`oxen=check`) or a shell.
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "oxen-linux: /init reached"
read uptime idle </proc/uptime
echo "oxen-linux: uptime at the marker: $uptime s"
if [ "$oxen" = check ]; then
    echo "oxen-linux: check uname: $(uname -s -r -m)"
    echo "oxen-linux: check memtotal: $(grep MemTotal /proc/meminfo)"
    echo "oxen-linux: check cpu flags: $(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2)"
    echo "oxen-linux: check dmesg errors and warnings: $(dmesg -r | grep -c '^<[34]>')"
    n=0
    while [ $n -lt 100 ] && /bin/true; do n=$((n + 1)); done
    echo "oxen-linux: check fork and exec: $n"
    mount -t tmpfs tmpfs /tmp && echo written >/tmp/file
    echo "oxen-linux: check tmpfs: $(cat /tmp/file)"
    echo "oxen-linux: script done"
    poweroff -f
fi
echo "oxen-linux: a busybox shell on hvc0; 'poweroff -f' ends the run"
setsid cttyhack sh
poweroff -f
"#;

/// What `/init` prints right after [`MARKER`]: Linux's own `/proc/uptime`
/// (seconds, two decimals) at that point, then ` s`.
const UPTIME_PREFIX: &str = "oxen-linux: uptime at the marker: ";

/// Linux's uptime at the marker in `log`, in ns (in steps of 10 ms, as
/// `/proc/uptime` has them); `None` if the line is missing or malformed.
pub fn uptime_at_marker_ns(log: &str) -> Option<u64> {
    let text = log
        .lines()
        .find_map(|line| line.trim_end().strip_prefix(UPTIME_PREFIX))?
        .strip_suffix(" s")?;
    let (whole, fraction) = text.split_once('.').unwrap_or((text, ""));
    if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let ns = format!("{fraction:0<9}").parse::<u64>().ok()?;
    whole
        .parse::<u64>()
        .ok()?
        .checked_mul(1_000_000_000)?
        .checked_add(ns)
}

/// The kernel and initramfs of a Linux boot.
#[derive(Clone, Debug)]
pub struct LinuxFiles {
    /// The ELF `vmlinux`.
    pub kernel: PathBuf,
    /// The busybox initramfs.
    pub initramfs: PathBuf,
}

impl LinuxFiles {
    /// The boot modules of a checking boot: the kernel with
    /// [`KERNEL_ARGS`] and [`CHECK_ARG`], then the initramfs.
    pub fn check_modules(&self) -> Vec<Module> {
        vec![
            Module {
                path: self.kernel.clone(),
                args: format!("{KERNEL_ARGS} {CHECK_ARG}"),
            },
            Module {
                path: self.initramfs.clone(),
                args: String::new(),
            },
        ]
    }
}

/// Runs `command`, failing with its stderr unless it succeeds; returns
/// its stdout.
fn output(mut command: Command, what: &str) -> Result<Vec<u8>, String> {
    let out = command
        .output()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `apt-get download` of `packages` into `dir`; after a failure, once
/// `apt-get update` and again (a fresh machine has no package lists).
fn apt_download(dir: &Path, packages: &[&str]) -> Result<(), String> {
    let download = || {
        let mut apt = Command::new("apt-get");
        apt.arg("download").args(packages).current_dir(dir);
        output(apt, &format!("apt-get download {}", packages.join(" ")))
    };
    eprintln!("xtask: apt-get download {}", packages.join(" "));
    if download().is_ok() {
        return Ok(());
    }
    eprintln!("xtask: apt-get update");
    output(
        {
            let mut update = Command::new("apt-get");
            update.arg("update");
            update
        },
        "apt-get update",
    )?;
    download().map(|_| ())
}

/// The versioned kernel package a `linux-image-amd64` `Depends:` field
/// names (`linux-image-6.1.0-57-amd64 (= 6.1.192-3)` gives
/// `linux-image-6.1.0-57-amd64`).
pub fn kernel_package(depends: &str) -> Option<&str> {
    depends
        .split([',', '|'])
        .filter_map(|item| item.split_whitespace().next())
        .find(|name| name.starts_with("linux-image-") && *name != KERNEL_META)
}

/// Unpacks the members of `deb` that match `pattern` (a `tar` wildcard)
/// into `dest`.
fn extract(deb: &Path, pattern: &str, dest: &Path) -> Result<(), String> {
    fs::create_dir_all(dest).map_err(|e| format!("{}: {e}", dest.display()))?;
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start dpkg-deb: {e}"))?;
    let tar = dpkg
        .stdout
        .take()
        .map(Stdio::from)
        .ok_or("dpkg-deb: no output pipe")?;
    let status = Command::new("tar")
        .arg("-x")
        .arg("-C")
        .arg(dest)
        .args(["--wildcards", pattern])
        .stdin(tar)
        .status()
        .map_err(|e| format!("cannot start tar: {e}"))?;
    let dpkg_status = dpkg.wait().map_err(|e| format!("dpkg-deb: {e}"))?;
    if status.success() && dpkg_status.success() {
        Ok(())
    } else {
        Err(format!(
            "unpacking {pattern} from {} failed (dpkg-deb {dpkg_status}, tar {status})",
            deb.display()
        ))
    }
}

/// A file in `dir` whose name starts with `prefix` and ends with `suffix`.
fn file_in(dir: &Path, prefix: &str, suffix: &str) -> Result<PathBuf, String> {
    fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(suffix))
        })
        .ok_or_else(|| format!("no {prefix}*{suffix} in {}", dir.display()))
}

/// The `.deb` `apt-get download` left for `package` in `dir`.
fn deb_of(dir: &Path, package: &str) -> Result<PathBuf, String> {
    file_in(dir, &format!("{package}_"), ".deb")
}

/// The ELF `vmlinux` of `kernel`: itself if it is an ELF, else the
/// payload of its `bzImage`, decompressed by the host's command for it.
pub fn vmlinux(kernel: &[u8]) -> Result<Vec<u8>, String> {
    if kernel.starts_with(b"\x7fELF") {
        return Ok(kernel.to_vec());
    }
    let bz = BzImage::parse(kernel).map_err(|e| e.to_string())?;
    let elf = match bz.compression {
        Compression::None => bz.compressed.to_vec(),
        Compression::Xz | Compression::Gzip | Compression::Zstd | Compression::Bzip2 => {
            decompress(bz.compression.name(), bz.compressed)?
        }
        other => {
            return Err(format!(
                "bzImage payload compressed with {}: xtask unpacks only xz, gzip, zstd and bzip2",
                other.name()
            ));
        }
    };
    if u32::try_from(elf.len()).ok() != Some(bz.uncompressed_size) {
        return Err(format!(
            "bzImage payload unpacked to {} bytes, its trailer says {}",
            elf.len(),
            bz.uncompressed_size
        ));
    }
    if !elf.starts_with(b"\x7fELF") {
        return Err("bzImage payload is not an ELF vmlinux".to_owned());
    }
    Ok(elf)
}

/// `<tool> -d -c` with `data` on stdin.
fn decompress(tool: &str, data: &[u8]) -> Result<Vec<u8>, String> {
    let mut child = Command::new(tool)
        .args(["-d", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {tool}: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("no stdin pipe")?;
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{tool}: {e}"))?;
    let written = writer.join().map_err(|_| format!("{tool}: writer died"))?;
    if !out.status.success() {
        return Err(format!(
            "{tool} -d -c failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    written.map_err(|e| format!("{tool}: {e}"))?;
    Ok(out.stdout)
}

/// Writes `data` to `path` through a temporary file, so an interrupted
/// run never leaves a partial file the cache would reuse.
fn write_whole(path: &Path, data: &[u8]) -> Result<(), String> {
    let partial = path.with_extension("partial");
    fs::write(&partial, data).map_err(|e| format!("{}: {e}", partial.display()))?;
    fs::rename(&partial, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Downloads and unpacks the kernel and busybox into `cache`.
fn fetch(cache: &Path, kernel: &Path, busybox: &Path) -> Result<(), String> {
    let debs = cache.join("debs");
    let unpacked = cache.join("unpacked");
    for dir in [&debs, &unpacked] {
        if dir.exists() {
            fs::remove_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    apt_download(&debs, &[KERNEL_META, BUSYBOX])?;
    let meta = deb_of(&debs, KERNEL_META)?;
    let depends = output(
        {
            let mut dpkg = Command::new("dpkg-deb");
            dpkg.args(["-f"]).arg(&meta).arg("Depends");
            dpkg
        },
        "dpkg-deb -f Depends",
    )?;
    let depends = String::from_utf8_lossy(&depends);
    let image = kernel_package(&depends)
        .ok_or_else(|| format!("{KERNEL_META} depends on no kernel image: {depends}"))?;
    apt_download(&debs, &[image])?;
    extract(&deb_of(&debs, image)?, "./boot/vmlinuz-*", &unpacked)?;
    extract(&deb_of(&debs, BUSYBOX)?, "./bin/busybox", &unpacked)?;
    let vmlinuz = file_in(&unpacked.join("boot"), "vmlinuz-", "")?;
    let bytes = fs::read(&vmlinuz).map_err(|e| format!("{}: {e}", vmlinuz.display()))?;
    let elf = vmlinux(&bytes).map_err(|e| format!("{}: {e}", vmlinuz.display()))?;
    let box_path = unpacked.join("bin/busybox");
    let box_bytes = fs::read(&box_path).map_err(|e| format!("{}: {e}", box_path.display()))?;
    write_whole(kernel, &elf)?;
    write_whole(busybox, &box_bytes)?;
    eprintln!(
        "xtask: {image}: {} unpacked to {}",
        vmlinuz.display(),
        kernel.display()
    );
    for dir in [&debs, &unpacked] {
        fs::remove_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Ok(())
}

/// The initramfs: directories, busybox and `/init`.
pub fn initramfs(busybox: &[u8]) -> Result<Vec<u8>, String> {
    let mut members: Vec<(&str, u32, &[u8])> = ["bin", "dev", "proc", "sys", "tmp"]
        .into_iter()
        .map(|dir| (dir, DIR_MODE, &b""[..]))
        .collect();
    members.push(("bin/busybox", EXEC_MODE, busybox));
    members.push(("init", EXEC_MODE, INIT.as_bytes()));
    newc_members(&members)
}

/// The kernel and initramfs, fetched into `target/linux/` unless there.
pub fn prepare(workspace: &Workspace) -> Result<LinuxFiles, String> {
    packages::ensure(TOOLS)?;
    let cache = workspace.xtask_dir("linux");
    fs::create_dir_all(&cache).map_err(|e| format!("{}: {e}", cache.display()))?;
    let kernel = cache.join("vmlinux");
    let busybox = cache.join("busybox");
    if kernel.is_file() && busybox.is_file() {
        eprintln!(
            "xtask: Linux from the cache {} (delete it to fetch Debian's current kernel)",
            cache.display()
        );
    } else {
        fetch(&cache, &kernel, &busybox)?;
    }
    let box_bytes = fs::read(&busybox).map_err(|e| format!("{}: {e}", busybox.display()))?;
    let archive = cache.join("initramfs.cpio");
    write_whole(&archive, &initramfs(&box_bytes)?)?;
    Ok(LinuxFiles {
        kernel,
        initramfs: archive,
    })
}

/// Which hypervisor a Linux boot ran on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Platform {
    /// This hypervisor.
    Oxen,
    /// Xen 4.17.
    Xen,
}

/// One stage of the boot: a test of its own.
#[derive(Clone, Copy, Debug)]
pub struct Stage {
    /// The test's name.
    pub name: &'static str,
    /// What it means, for messages.
    pub what: &'static str,
    /// Whether a run on `Platform` that ended with `Outcome` and printed
    /// the log reached it.
    pub reached: fn(Platform, &Outcome, &str) -> bool,
}

/// The stages in boot order.
pub const STAGES: &[Stage] = &[
    Stage {
        name: "linux_loader",
        what: "the dom0 builder accepts the kernel",
        reached: |platform, _, log| {
            log.contains(match platform {
                Platform::Oxen => "(HV) starting dom0",
                Platform::Xen => "Dom0 has maximum",
            })
        },
    },
    Stage {
        name: "linux_early_console",
        what: "Linux writes its raw early console lines (before start_kernel)",
        reached: |_, _, log| log.contains("about to get started..."),
    },
    Stage {
        name: "linux_version",
        what: "Linux prints its version",
        reached: |_, _, log| log.contains("Linux version "),
    },
    Stage {
        name: "linux_run_init",
        what: "Linux starts /init",
        reached: |_, _, log| log.contains("Run /init as init process"),
    },
    Stage {
        name: "linux_init_marker",
        what: "/init mounts /proc, /sys, /dev and prints its marker",
        reached: |_, _, log| log.contains(MARKER),
    },
    Stage {
        name: "linux_script",
        what: "the check script runs to its end",
        reached: |_, _, log| log.contains(SCRIPT_DONE),
    },
    Stage {
        name: "linux_poweroff",
        what: "Linux powers off cleanly",
        // Linux as Xen's dom0 powers the machine off through ACPI (QEMU
        // exits with 0), or Xen halts when dom0 only shuts down.
        reached: |platform, outcome, log| {
            log.contains("reboot: Power down")
                && match platform {
                    Platform::Oxen => *outcome == Outcome::Exit(HostExit::Dom0Poweroff),
                    Platform::Xen => matches!(
                        outcome,
                        Outcome::ForeignStatus(0) | Outcome::Stopped(crate::xen::DOM0_HALTED)
                    ),
                }
        },
    },
];

/// How many of [`STAGES`] Linux passes on this hypervisor today; raise it
/// when a stage starts passing (the test then fails until it is raised).
pub const PASSING_HERE: usize = 7;

/// The `check` lines of a log: name to value.
pub fn checks(log: &str) -> Vec<(&str, &str)> {
    log.lines()
        .filter_map(|line| line.trim_end().strip_prefix(CHECK_PREFIX)?.split_once(": "))
        .collect()
}

/// Check lines known to differ from Xen's, each with its reason (shown
/// among the allowed differences). A listed check that matches Xen again
/// fails until it is taken off the list.
pub const KNOWN_DIFFERENCES: &[(&str, &str)] = &[];

/// The differences between the check lines of our log and Xen's:
/// problems, and those [`KNOWN_DIFFERENCES`] allows.
pub fn compare_checks(ours: &str, xen: &str) -> (Vec<String>, Vec<String>) {
    compare_checks_with(ours, xen, KNOWN_DIFFERENCES)
}

/// [`compare_checks`] with the list of `known` differences.
fn compare_checks_with(
    ours: &str,
    xen: &str,
    known: &[(&str, &str)],
) -> (Vec<String>, Vec<String>) {
    let (ours, xen) = (checks(ours), checks(xen));
    let mut problems = Vec::new();
    let mut allowed = Vec::new();
    if xen.is_empty() {
        problems.push("Xen's run printed no check line".to_owned());
    }
    for (name, value) in &xen {
        let known = known.iter().find(|(n, _)| n == name);
        match (ours.iter().find(|(n, _)| n == name), known) {
            (Some((_, mine)), None) if mine == value => {}
            (Some((_, mine)), Some(_)) if mine == value => problems.push(format!(
                "{name}: equal to Xen's now: take it off linux::KNOWN_DIFFERENCES"
            )),
            (Some((_, mine)), Some((_, why))) => {
                allowed.push(format!("{name}: here '{mine}', Xen '{value}': {why}"));
            }
            (Some((_, mine)), None) => {
                problems.push(format!("{name}: here '{mine}', Xen '{value}'"));
            }
            (None, _) => problems.push(format!("{name}: missing here (Xen '{value}')")),
        }
    }
    for (name, _) in ours
        .iter()
        .filter(|(n, _)| !xen.iter().any(|(x, _)| x == n))
    {
        problems.push(format!("{name}: only here"));
    }
    (problems, allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_package_from_depends() {
        assert_eq!(
            kernel_package("linux-image-6.1.0-57-amd64 (= 6.1.192-3)"),
            Some("linux-image-6.1.0-57-amd64")
        );
        assert_eq!(
            kernel_package("initramfs-tools, linux-image-6.12.9-amd64 | linux-image-amd64"),
            Some("linux-image-6.12.9-amd64")
        );
        assert_eq!(kernel_package("linux-image-amd64"), None);
        assert_eq!(kernel_package(""), None);
    }

    #[test]
    fn vmlinux_passes_an_elf_and_refuses_junk() {
        let elf = b"\x7fELF\x02\x01\x01".to_vec();
        assert_eq!(vmlinux(&elf), Ok(elf));
        assert!(vmlinux(&[0u8; 1024]).unwrap_err().contains("bzImage"));
    }

    #[test]
    fn initramfs_holds_init_and_busybox() {
        let archive = initramfs(b"BUSYBOX").unwrap();
        let text = String::from_utf8_lossy(&archive);
        for name in [
            "bin\0",
            "proc\0",
            "sys\0",
            "dev\0",
            "bin/busybox\0",
            "init\0",
        ] {
            assert!(text.contains(name), "{name}");
        }
        assert!(text.contains(MARKER));
        assert!(text.contains(SCRIPT_DONE));
        // Directories come before what they hold.
        assert!(text.find("bin\0") < text.find("bin/busybox\0"));
    }

    #[test]
    fn the_uptime_line_is_what_init_prints() {
        assert!(INIT.contains(&format!("echo \"{UPTIME_PREFIX}$uptime s\"")));
        let log = format!("x\n{MARKER}\n{UPTIME_PREFIX}3.55 s\r\nmore");
        assert_eq!(uptime_at_marker_ns(&log), Some(3_550_000_000));
        assert_eq!(
            uptime_at_marker_ns(&format!("{UPTIME_PREFIX}12 s")),
            Some(12_000_000_000)
        );
        for bad in ["3.5x s", "3.55", "-1.00 s", ".5 s", "1.0000000001 s"] {
            assert_eq!(
                uptime_at_marker_ns(&format!("{UPTIME_PREFIX}{bad}")),
                None,
                "{bad}"
            );
        }
        assert_eq!(uptime_at_marker_ns("no such line"), None);
    }

    #[test]
    fn stages_read_the_log_and_outcome() {
        let log = "(HV) starting dom0\n[    0.000000] Linux version 6.1.0\nreboot: Power down\n";
        let done = Outcome::Exit(HostExit::Dom0Poweroff);
        let reached: Vec<_> = STAGES
            .iter()
            .filter(|s| (s.reached)(Platform::Oxen, &done, log))
            .map(|s| s.name)
            .collect();
        assert_eq!(reached, ["linux_loader", "linux_version", "linux_poweroff"]);
        assert!(!(STAGES[0].reached)(Platform::Xen, &done, log));
        assert!(PASSING_HERE <= STAGES.len());
    }

    #[test]
    fn check_lines_compare_by_name() {
        let xen = "oxen-linux: check uname: Linux 6.1\r\noxen-linux: check tmpfs: written\n";
        let same = "noise\noxen-linux: check uname: Linux 6.1\noxen-linux: check tmpfs: written\n";
        assert_eq!(checks(xen), [("uname", "Linux 6.1"), ("tmpfs", "written")]);
        assert_eq!(compare_checks(same, xen), (vec![], vec![]));
        let differs = "oxen-linux: check uname: Linux 6.2\noxen-linux: check extra: 1\n";
        let (problems, _) = compare_checks(differs, xen);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            compare_checks(same, "")
                .0
                .iter()
                .any(|p| p.contains("no check"))
        );
        // A known difference is allowed while it differs, and a problem
        // once it no longer does.
        let known = [("cpu flags", "a reason")];
        let xen = "oxen-linux: check cpu flags: fpu\n";
        let (problems, allowed) =
            compare_checks_with("oxen-linux: check cpu flags: fpu de\n", xen, &known);
        assert!(problems.is_empty() && allowed.len() == 1, "{allowed:?}");
        let (problems, allowed) = compare_checks_with(xen, xen, &known);
        assert!(problems.len() == 1 && allowed.is_empty(), "{problems:?}");
    }
}
