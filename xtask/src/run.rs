//! `cargo xtask run`: build, boot one scenario, map the outcome to an exit
//! status.
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::build::{self, Workspace};
use crate::cli::{BootPath, RunArgs};
use crate::grub::{self, IsoContents};
use crate::linux;
use crate::packages;
use crate::qemu::{self, Boot, HostStep, Machine, Module, RunSpec, Serial};
use crate::ramdisk::{self, DomuSet};
use crate::status::Outcome;
use crate::xen;

/// The line the web domU prints once it serves.
pub const WEB_READY: &str = "web: serving http://10.0.2.15:80/";

/// dom0's line once the default scenario's `disk` domU has run its checks
/// and gone (by then the web domU, created first, serves).
pub const DISK_DONE: &str = "(disk) destroyed (";

/// `curl` fetching the web domU's page through the port forward (`{port}`):
/// bounded (10 s per try, 5 retries a second apart, also when the
/// connection is refused or reset), loopback only.
pub const CURL_PAGE: &[&str] = &[
    "curl",
    "--silent",
    "--show-error",
    "--max-time",
    "10",
    "--retry",
    "5",
    "--retry-delay",
    "1",
    "--retry-all-errors",
    "http://127.0.0.1:{port}/",
];

/// What the default scenario does without a terminal: once the disk domU
/// is done (so that its checks are not cut short), fetch the web domU's
/// page once, print it, and quit dom0's shell (which destroys the domUs
/// and powers the machine off).
const UNATTENDED: &[HostStep] = &[HostStep {
    after: DISK_DONE,
    command: CURL_PAGE,
    expect: &["oxen: a web page served by a PV domU"],
    then_type: b"quit\r",
}];

/// How long an unattended default scenario may run (it normally ends in
/// well under a minute); a run that hangs then ends with status 12.
const UNATTENDED_TIMEOUT_S: u64 = 300;

/// The files and command lines of one boot.
#[derive(Clone, Debug)]
pub struct BootFiles<'a> {
    /// The multiboot kernel (the hypervisor).
    pub hypervisor: &'a Path,
    /// Its command line.
    pub hv_args: &'a str,
    /// dom0 and its command line, if any.
    pub dom0: Option<(&'a Path, &'a str)>,
    /// dom0's ramdisk, if any.
    pub ramdisk: Option<&'a Path>,
}

/// What QEMU boots for `files` on `path`; a GRUB ISO is made in `work_dir`.
pub fn prepare_boot(
    files: &BootFiles<'_>,
    path: BootPath,
    work_dir: &Path,
) -> Result<Boot, String> {
    let given = [
        Some(files.hypervisor),
        files.dom0.map(|(p, _)| p),
        files.ramdisk,
    ];
    for file in given.into_iter().flatten() {
        if !file.is_file() {
            return Err(format!("no such file: {}", file.display()));
        }
    }
    match path {
        BootPath::Direct => {
            let mut modules = Vec::new();
            if let Some((dom0, args)) = files.dom0 {
                modules.push(Module {
                    path: dom0.to_path_buf(),
                    args: args.to_owned(),
                });
            }
            if let Some(ramdisk) = files.ramdisk {
                modules.push(Module {
                    path: ramdisk.to_path_buf(),
                    args: String::new(),
                });
            }
            Ok(Boot::Direct {
                kernel: files.hypervisor.to_path_buf(),
                append: files.hv_args.to_owned(),
                modules,
            })
        }
        BootPath::Grub => {
            let contents = IsoContents {
                kernel: files.hypervisor.to_path_buf(),
                kernel_args: files.hv_args.to_owned(),
                dom0: files.dom0.map(|(p, a)| (p.to_path_buf(), a.to_owned())),
                ramdisk: files.ramdisk.map(Path::to_path_buf),
            };
            grub::make_iso(&contents, work_dir).map(Boot::Cdrom)
        }
    }
}

/// The tools a boot path needs.
pub fn tools_for(path: BootPath) -> Vec<packages::Tool> {
    match path {
        BootPath::Direct => packages::QEMU.to_vec(),
        BootPath::Grub => [packages::QEMU, packages::GRUB_ISO].concat(),
    }
}

/// An absolute form of a user-given path (xtask may run from any directory).
fn absolute(path: &Path) -> Result<PathBuf, String> {
    std::path::absolute(path).map_err(|e| format!("{}: {e}", path.display()))
}

/// `cargo xtask run`; returns the exit status. Builds first, unless both
/// the hypervisor and dom0 are given.
pub fn run(workspace: &Workspace, args: &RunArgs) -> Result<u8, String> {
    packages::ensure(&tools_for(args.boot))?;
    if args.hypervisor.is_none() || args.dom0.is_none() {
        build::build_images(workspace)?;
    }
    let hypervisor = match &args.hypervisor {
        Some(path) => absolute(path)?,
        None => workspace.hypervisor(),
    };
    let run_dir = workspace.xtask_dir("xtask-run");
    std::fs::create_dir_all(&run_dir).map_err(|e| format!("{}: {e}", run_dir.display()))?;
    let linux = if args.linux {
        Some(linux::prepare(workspace)?)
    } else {
        None
    };
    let dom0 = match (&args.dom0, &linux) {
        (_, Some(files)) => files.kernel.clone(),
        (Some(path), None) => absolute(path)?,
        (None, None) if args.test.is_some() => workspace.test_guest(),
        (None, None) => workspace.dom0(),
    };
    let ramdisk = if let Some(files) = &linux {
        Some(files.initramfs.clone())
    } else if !args.domus.is_empty() {
        let path = run_dir.join("domus.cpio");
        ramdisk::write_domus(&args.domus, &path)?;
        Some(path)
    } else if args.default_scenario() {
        Some(DomuSet::Scenario.write(workspace, &run_dir)?)
    } else {
        args.ramdisk.as_deref().map(absolute).transpose()?
    };
    let terminal = std::io::stdin().is_terminal();
    let dom0_args = match (&linux, &args.linux_args) {
        (Some(_), Some(more)) => format!("{} {more}", linux::KERNEL_ARGS),
        (Some(_), None) => linux::KERNEL_ARGS.to_owned(),
        (None, _) => args.dom0_args(terminal),
    };
    let scenario = args.default_scenario();
    let mut devices = args.devices.clone();
    if scenario {
        packages::ensure(packages::CURL)?;
        devices.nic = true;
        devices.http_forward = Some(args.http_port);
        eprintln!(
            "xtask: the web domU will answer on the host at: curl http://127.0.0.1:{}/",
            args.http_port
        );
    }
    let unattended = scenario && !terminal;
    if unattended {
        eprintln!(
            "xtask: no terminal: once the disk domU is done, xtask fetches the web domU's \
             page once, prints it and types 'quit' into dom0's shell"
        );
    } else if args.rust_dom0() && dom0_args.split_whitespace().any(|w| w == "shell") {
        eprintln!(
            "xtask: dom0 creates its domUs, then its shell takes commands at the 'dom0> ' \
             prompt ('help' lists them, 'quit' powers off; QEMU's Ctrl-A X stops it at once)"
        );
    }
    let files = BootFiles {
        hypervisor: &hypervisor,
        hv_args: args.hv_args(),
        dom0: Some((&dom0, &dom0_args)),
        ramdisk: ramdisk.as_deref(),
    };
    // The ISO's own directory: making it wipes that directory, and the
    // ramdisk made above lives beside it.
    let boot = prepare_boot(&files, args.boot, &run_dir.join("grub"))?;
    // The default scenario's disk: xtask's image (an MBR with two
    // partitions), made once and kept, for the `disk` domU.
    if scenario && devices.disk.is_none() {
        let image = run_dir.join("disk.img");
        if !image.is_file() {
            crate::disk::create(&image)?;
        }
        eprintln!("xtask: the disk domU's disk is vda1 of {}", image.display());
        devices.disk = Some(image);
    }
    let machine = Machine {
        accel: qemu::host_accel(args.accel, args.icount),
        smp: args.smp,
        mem_mib: args.mem_mib,
        devices,
    };
    let qemu_args = qemu::qemu_args(&machine, &boot)?;
    eprintln!("xtask: {}", qemu::display_command(&qemu_args));
    let result = qemu::run(&RunSpec {
        args: qemu_args,
        serial: Serial::Terminal,
        timeout: args
            .timeout_secs
            .or(unattended.then_some(UNATTENDED_TIMEOUT_S))
            .map(Duration::from_secs),
        // Xen 4.17 (`--hypervisor`) halts instead of leaving QEMU.
        stop_markers: xen::STOP_MARKERS,
        typing: &[],
        host_steps: if unattended { UNATTENDED } else { &[] },
        port: Some(args.http_port),
    })?;
    let log = run_dir.join("serial.log");
    std::fs::write(&log, &result.serial).map_err(|e| format!("{}: {e}", log.display()))?;
    let code = match result.outcome {
        Outcome::Stopped(xen::DOM0_HALTED) => 0,
        ref outcome => outcome.xtask_status(),
    };
    if !result.serial.is_empty() && !result.serial.ends_with('\n') {
        println!();
    }
    println!("dom0 outcome: {} (exit status {code})", result.outcome);
    let problems: Vec<String> = if unattended {
        UNATTENDED
            .iter()
            .zip(
                result
                    .host_steps
                    .iter()
                    .map(Some)
                    .chain(std::iter::repeat(None)),
            )
            .flat_map(|(step, output)| match output {
                Some(output) => step.problems(output),
                None => vec![format!("the run never printed {:?}", step.after)],
            })
            .collect()
    } else {
        Vec::new()
    };
    if problems.is_empty() {
        Ok(code)
    } else {
        for problem in &problems {
            println!("xtask: {problem}");
        }
        println!("xtask: the page did not come back (exit status 1)");
        Ok(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_boot_lists_dom0_then_ramdisk() {
        let here = Path::new(env!("CARGO_MANIFEST_DIR"));
        let cargo_toml = here.join("Cargo.toml");
        let files = BootFiles {
            hypervisor: &cargo_toml,
            hv_args: "console=com1",
            dom0: Some((&cargo_toml, "test=hello")),
            ramdisk: Some(&cargo_toml),
        };
        let Ok(Boot::Direct {
            kernel,
            append,
            modules,
        }) = prepare_boot(&files, BootPath::Direct, here)
        else {
            panic!("direct boot not prepared");
        };
        assert_eq!(
            (kernel, append.as_str()),
            (cargo_toml.clone(), "console=com1")
        );
        assert_eq!(modules.len(), 2);
        assert_eq!(modules[0].args, "test=hello");
        assert_eq!(modules[1].args, "");
    }

    #[test]
    fn missing_files_are_reported() {
        let missing = Path::new("/nonexistent/dom0");
        let cargo_toml = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        let files = BootFiles {
            hypervisor: &cargo_toml,
            hv_args: "",
            dom0: Some((missing, "")),
            ramdisk: None,
        };
        assert!(prepare_boot(&files, BootPath::Direct, Path::new("/tmp")).is_err());
    }

    #[test]
    fn grub_needs_the_iso_tools() {
        assert_eq!(tools_for(BootPath::Direct).len(), 1);
        assert!(
            tools_for(BootPath::Grub)
                .iter()
                .any(|t| t.package == "grub-pc-bin")
        );
    }
}
