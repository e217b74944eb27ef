//! Where things are, and building the bare-metal images.
//!
//! The images are built by the same `cargo` that runs xtask, into the same
//! target directory: `$CARGO_TARGET_DIR` if set, else the workspace's
//! `target/`. xtask's own files (ISOs, test logs, generated images) go under
//! that directory too.
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The bare-metal target every image is built for.
pub const TARGET: &str = "x86_64-unknown-none";

/// The workspace and its target directory.
#[derive(Clone, Debug)]
pub struct Workspace {
    /// The workspace root (holds the top `Cargo.toml`).
    pub root: PathBuf,
    /// The target directory, absolute.
    pub target_dir: PathBuf,
}

impl Workspace {
    /// Finds the workspace from xtask's own location and the environment.
    pub fn locate() -> Result<Workspace, String> {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let root = manifest
            .parent()
            .ok_or("xtask is not inside a workspace")?
            .to_path_buf();
        let target_dir = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) if !dir.is_empty() => {
                let dir = PathBuf::from(dir);
                if dir.is_absolute() {
                    dir
                } else {
                    std::env::current_dir()
                        .map_err(|e| format!("current directory: {e}"))?
                        .join(dir)
                }
            }
            _ => root.join("target"),
        };
        Ok(Workspace { root, target_dir })
    }

    /// A release artifact of the bare-metal target.
    pub fn image(&self, name: &str) -> PathBuf {
        self.target_dir.join(TARGET).join("release").join(name)
    }

    /// The hypervisor image.
    pub fn hypervisor(&self) -> PathBuf {
        self.image("hypervisor")
    }

    /// The test guest image (every QEMU test, chosen by `test=<name>`).
    pub fn test_guest(&self) -> PathBuf {
        self.image("test-guest")
    }

    /// The benchmark guest image (`cargo xtask bench`, and one smoke test).
    pub fn bench_guest(&self) -> PathBuf {
        self.image("bench-guest")
    }

    /// dom0 with the toolstack (`dom0/`).
    pub fn dom0(&self) -> PathBuf {
        self.image("dom0")
    }

    /// The demo domU (`domu-demo/`), which dom0's tests put in its ramdisk.
    pub fn domu_demo(&self) -> PathBuf {
        self.image("domu-demo")
    }

    /// A directory of xtask's own under the target directory.
    pub fn xtask_dir(&self, name: &str) -> PathBuf {
        self.target_dir.join(name)
    }

    /// A `cargo` command run in the workspace root, with the target
    /// directory pinned so nested and outer builds agree.
    pub fn cargo(&self) -> Command {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
        let mut command = Command::new(cargo);
        command
            .current_dir(&self.root)
            .env("CARGO_TARGET_DIR", &self.target_dir);
        command
    }
}

/// Runs `command`, failing with `what` if it does not succeed.
pub fn run_checked(mut command: Command, what: &str) -> Result<(), String> {
    let status = command
        .status()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}

/// `cargo xtask build`: the hypervisor, the test guest, the benchmark
/// guest, dom0 and the demo domU, release, bare metal.
pub fn build_images(workspace: &Workspace) -> Result<(), String> {
    eprintln!("xtask: building the hypervisor and the guests ({TARGET}, release)");
    let mut cargo = workspace.cargo();
    cargo.args(["build", "--release", "--target", TARGET]);
    cargo.args(["-p", "hypervisor", "--features", "hypervisor/bare-metal"]);
    cargo.args(["-p", "pv-tests", "--features", "pv-tests/bare-metal"]);
    cargo.args(["-p", "pv-bench", "--features", "pv-bench/bare-metal"]);
    cargo.args(["-p", "dom0", "--features", "dom0/bare-metal"]);
    cargo.args(["-p", "domu-demo", "--features", "domu-demo/bare-metal"]);
    run_checked(cargo, "cargo build")?;
    for image in [
        workspace.hypervisor(),
        workspace.test_guest(),
        workspace.bench_guest(),
        workspace.dom0(),
        workspace.domu_demo(),
    ] {
        if !image.is_file() {
            return Err(format!("the build did not produce {}", image.display()));
        }
    }
    Ok(())
}
