//! dom0's ramdisk: a cpio archive in the "newc" format (what `cpio -o -H
//! newc` writes and Linux initramfs reads) holding domU kernels and their
//! `xl.cfg`-subset configurations, which dom0's toolstack reads
//! (`toolstack::cpio`).
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use crate::build::Workspace;

/// The newc magic.
const MAGIC: &str = "070701";
/// Mode of a regular file, rw-r--r--.
const FILE_MODE: u32 = 0o100_644;

/// Pads `out` with zero bytes to a multiple of 4.
fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// One member: header, NUL-terminated name, data, each padded to 4 bytes.
fn member(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, data: &[u8]) -> Result<(), String> {
    let size = u32::try_from(data.len()).map_err(|_| format!("{name}: larger than 4 GiB"))?;
    let namesize = u32::try_from(name.len() + 1).map_err(|_| format!("{name}: name too long"))?;
    // ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
    // rdevmajor, rdevminor, namesize, check.
    let fields = [ino, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, namesize, 0];
    out.extend_from_slice(MAGIC.as_bytes());
    for field in fields {
        out.extend_from_slice(format!("{field:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
    Ok(())
}

/// A newc archive of regular files (in the given order), with the trailer.
pub fn newc(files: &[(&str, &[u8])]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for (ino, (name, data)) in (1..).zip(files) {
        if name.is_empty() || name.contains('\0') {
            return Err(format!("cpio: bad member name {name:?}"));
        }
        member(&mut out, ino, name, FILE_MODE, data)?;
    }
    member(&mut out, 0, "TRAILER!!!", 0, b"")?;
    Ok(out)
}

/// The domUs a toolstack test puts in dom0's ramdisk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomuSet {
    /// One demo domU that prints and powers off.
    Demo,
    /// One demo domU told to crash (`crash` on its command line).
    Crash,
    /// The demo domU driven by a shell script (`shell.xl`): created
    /// paused, pause counts, scheduling parameters, then run.
    Shell,
}

/// The script of [`DomuSet::Shell`].
const SHELL_SCRIPT: &str = "# dom0's shell, scripted (dom0 script=shell.xl)\n\
    create -p demo.cfg\n\
    list\n\
    pause demo\n\
    unpause demo\n\
    sched-credit -d demo -w 512 -c 50\n\
    vcpu-list demo\n\
    unpause demo\n\
    wait\n\
    list\n\
    info\n\
    dmesg\n";

/// The demo domU's configuration.
const DEMO_CONFIG: &str = "# The demo domU: prints through its console ring, then powers off.\n\
     name = \"demo\"\nkernel = \"domu-demo\"\nmemory = 4\nvcpus = 1\n\
     cmdline = \"hello\"\non_poweroff = \"destroy\"\n";

/// The demo domU's kernel name inside the archive.
const DEMO_KERNEL: &str = "domu-demo";

impl DomuSet {
    /// Its name (also the archive's file name).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            DomuSet::Demo => "demo",
            DomuSet::Crash => "crash",
            DomuSet::Shell => "shell",
        }
    }

    /// The configuration files and scripts, `(name, text)`.
    #[must_use]
    pub const fn configs(self) -> &'static [(&'static str, &'static str)] {
        match self {
            DomuSet::Demo => &[("demo.cfg", DEMO_CONFIG)],
            DomuSet::Shell => &[("demo.cfg", DEMO_CONFIG), ("shell.xl", SHELL_SCRIPT)],
            DomuSet::Crash => &[(
                "crash.cfg",
                "# The demo domU told to crash: dom0 must see SHUTDOWN_crash.\n\
                 name = \"crasher\"\nkernel = \"domu-demo\"\nmemory = 4\n\
                 cmdline = \"crash\"\non_crash = \"destroy\"\n",
            )],
        }
    }

    /// Writes the archive into `dir` and returns its path.
    pub fn write(self, workspace: &Workspace, dir: &Path) -> Result<PathBuf, String> {
        let kernel_path = workspace.domu_demo();
        let kernel =
            std::fs::read(&kernel_path).map_err(|e| format!("{}: {e}", kernel_path.display()))?;
        let mut files: Vec<(&str, &[u8])> = self
            .configs()
            .iter()
            .map(|(n, t)| (*n, t.as_bytes()))
            .collect();
        files.push((DEMO_KERNEL, &kernel));
        let path = dir.join(format!("{}.cpio", self.name()));
        std::fs::write(&path, newc(&files)?).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use toolstack::config::{Action, DomainConfig};
    use toolstack::cpio::Archive;

    #[test]
    fn dom0_reads_what_xtask_writes() {
        let bytes = newc(&[
            ("a.cfg", b"name = \"a\"\n"),
            ("kernel", b"\x7fELF..."),
            ("e", b""),
        ])
        .unwrap();
        let archive = Archive::new(&bytes);
        assert_eq!(archive.check(), Ok(()));
        let names: Vec<&str> = archive.files().map(|e| e.name).collect();
        assert_eq!(names, ["a.cfg", "kernel", "e"]);
        assert_eq!(archive.find("kernel").unwrap().data, b"\x7fELF...");
        assert!(archive.find("e").unwrap().data.is_empty());
        assert_eq!(bytes.len() % 4, 0);
        assert!(newc(&[("", b"")]).is_err());
    }

    #[test]
    fn header_is_newc() {
        let bytes = newc(&[("x", b"1")]).unwrap();
        assert_eq!(&bytes[..6], b"070701");
        // ino 1, mode 0o100644, filesize 1, namesize 2.
        assert_eq!(&bytes[6..22], b"00000001000081A4");
        assert_eq!(&bytes[6 + 6 * 8..6 + 7 * 8], b"00000001");
        assert_eq!(&bytes[6 + 11 * 8..6 + 12 * 8], b"00000002");
        assert_eq!(&bytes[110..112], b"x\0");
    }

    #[test]
    fn test_configs_parse() {
        for set in [DomuSet::Demo, DomuSet::Crash, DomuSet::Shell] {
            for (file, text) in set.configs().iter().filter(|(f, _)| f.ends_with(".cfg")) {
                let cfg = DomainConfig::parse(text).unwrap_or_else(|e| panic!("{file}: {e}"));
                assert_eq!(cfg.kernel, DEMO_KERNEL);
                assert_eq!(cfg.on_crash, Action::Destroy);
            }
        }
        let crash = DomainConfig::parse(DomuSet::Crash.configs()[0].1).unwrap();
        assert_eq!(crash.cmdline, "crash");
        let (_, script) = DomuSet::Shell.configs()[1];
        for line in script.lines() {
            assert!(toolstack::shell::parse(line).is_ok(), "{line}");
        }
    }
}
