//! The host tools xtask needs, and installing the missing ones.
//!
//! Each tool is checked first (a command on `PATH` or a file); only when
//! something is missing does xtask run `apt-get update && apt-get install`,
//! non-interactively, as root. Not being root, it prints the exact command
//! and stops.
#![forbid(unsafe_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

/// How to tell a tool is there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    /// An executable of this name on `PATH`.
    Command(&'static str),
    /// This file or directory exists.
    Path(&'static str),
}

/// One tool and the Debian package that provides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tool {
    /// How to find it.
    pub probe: Probe,
    /// The Debian package.
    pub package: &'static str,
}

/// QEMU.
pub const QEMU: &[Tool] = &[Tool {
    probe: Probe::Command("qemu-system-x86_64"),
    package: "qemu-system-x86",
}];

/// What `grub-mkrescue` needs to make a BIOS-bootable ISO.
pub const GRUB_ISO: &[Tool] = &[
    Tool {
        probe: Probe::Command("grub-mkrescue"),
        package: "grub-common",
    },
    Tool {
        probe: Probe::Path("/usr/lib/grub/i386-pc"),
        package: "grub-pc-bin",
    },
    Tool {
        probe: Probe::Command("xorriso"),
        package: "xorriso",
    },
    Tool {
        probe: Probe::Command("mformat"),
        package: "mtools",
    },
];

/// curl, which fetches the web domU's page through the port forward.
pub const CURL: &[Tool] = &[Tool {
    probe: Probe::Command("curl"),
    package: "curl",
}];

/// The path of Xen 4.17 as Debian installs it.
pub const XEN_GZ: &str = "/boot/xen-4.17-amd64.gz";

/// Xen 4.17, for `cargo xtask test --xen`.
pub const XEN: &[Tool] = &[Tool {
    probe: Probe::Path(XEN_GZ),
    package: "xen-hypervisor-4.17-amd64",
}];

/// Whether an executable called `name` is on `path` (a `PATH` value).
fn on_path(name: &str, path: &std::ffi::OsStr) -> bool {
    std::env::split_paths(path).any(|dir| {
        std::fs::metadata(dir.join(name))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

impl Tool {
    /// Whether the tool is installed.
    pub fn present(&self) -> bool {
        match self.probe {
            Probe::Command(name) => on_path(name, &std::env::var_os("PATH").unwrap_or_default()),
            Probe::Path(path) => Path::new(path).exists(),
        }
    }
}

/// The packages that provide the missing tools, each once, in order.
pub fn missing_packages(tools: &[Tool], present: impl Fn(&Tool) -> bool) -> Vec<&'static str> {
    let mut packages = Vec::new();
    for tool in tools {
        if !present(tool) && !packages.contains(&tool.package) {
            packages.push(tool.package);
        }
    }
    packages
}

/// The shell command that installs `packages`.
pub fn install_command(packages: &[&str]) -> String {
    format!(
        "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {}",
        packages.join(" ")
    )
}

/// Whether xtask runs as root (asks `id -u`).
fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout.trim_ascii() == b"0")
}

/// Makes sure every tool in `tools` is installed, installing what is missing.
pub fn ensure(tools: &[Tool]) -> Result<(), String> {
    let packages = missing_packages(tools, Tool::present);
    if packages.is_empty() {
        return Ok(());
    }
    let command = install_command(&packages);
    if !is_root() {
        return Err(format!(
            "missing host packages: {}\n  install them as root with:\n    {command}",
            packages.join(" ")
        ));
    }
    eprintln!("xtask: installing missing host packages: {command}");
    let status = Command::new("sh")
        .arg("-c")
        .arg(&command)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .map_err(|e| format!("cannot start sh: {e}"))?;
    if !status.success() {
        return Err(format!("installing packages failed ({status}): {command}"));
    }
    let still_missing = missing_packages(tools, Tool::present);
    if still_missing.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "still missing after installing: {}",
            still_missing.join(" ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_missing_packages_once_each() {
        let tools = [GRUB_ISO, QEMU].concat();
        assert!(missing_packages(&tools, |_| true).is_empty());
        assert_eq!(
            missing_packages(&tools, |t| t.package != "xorriso"
                && t.package != "qemu-system-x86"),
            ["xorriso", "qemu-system-x86"]
        );
        let twice = [QEMU[0], QEMU[0]];
        assert_eq!(missing_packages(&twice, |_| false), ["qemu-system-x86"]);
    }

    #[test]
    fn command_is_non_interactive() {
        assert_eq!(
            install_command(&["qemu-system-x86", "mtools"]),
            "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends qemu-system-x86 mtools"
        );
    }

    #[test]
    fn finds_commands_on_a_path() {
        let path = std::env::var_os("PATH").unwrap_or_default();
        assert!(on_path("sh", &path));
        assert!(!on_path("no-such-command-xtask", &path));
    }
}
