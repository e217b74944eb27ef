//! Links the bare-metal image with the workspace's `linker.ld`, and records
//! the build facts `xen_version` reports (compiler, commit, commit date).

use std::process::Command;

fn main() {
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = std::path::Path::new(&manifest).join("..");
    let script = root.join("linker.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rerun-if-changed=../boot/entry.S");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("none") {
        println!("cargo:rustc-link-arg-bins=-T{}", script.display());
        println!("cargo:rustc-link-arg-bins=-zmax-page-size=4096");
        println!("cargo:rustc-link-arg-bins=--build-id=sha1");
    }

    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let compiler = output(Command::new(rustc).arg("--version")).unwrap_or_else(|| "rustc".into());
    let git = |args: &[&str]| output(Command::new("git").current_dir(&root).args(args));
    let changeset = match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(commit) => {
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            format!("git:{commit}{}", if dirty { "+" } else { "" })
        }
        None => "unknown".into(),
    };
    let date = git(&[
        "log",
        "-1",
        "--format=%cd",
        "--date=format:%a %b %e %H:%M:%S UTC %Y",
    ])
    .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=HV_COMPILER={compiler}");
    println!("cargo:rustc-env=HV_CHANGESET={changeset}");
    println!("cargo:rustc-env=HV_BUILD_DATE={date}");
    println!("cargo:rerun-if-changed=../.git/HEAD");
    println!("cargo:rerun-if-changed=../.git/index");
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
