//! `cargo xtask`: builds the hypervisor and its guests, boots them under
//! QEMU, and runs the test suite.
//!
//! A host program using only `std` (and the `hypervisor` library for the
//! host-exit contract, [`hypervisor::exit::HostExit`], and `pv_bench` for
//! the benchmark guest's line format). Commands:
//!
//! - `build`: the bare-metal images (see [`build`]);
//! - `run`: one boot, exit status mapped from the hypervisor's outcome
//!   (see [`run`] and [`status`]);
//! - `test`: host unit tests plus the QEMU integration tests of [`suite`]
//!   (see [`testrun`]), optionally compared against Xen 4.17 ([`xen`]);
//! - `new-test`: the skeleton of a new guest test (see [`new_test`]);
//! - `fuzz-guest`: the hypercall fuzzer as dom0 (see [`fuzz`]);
//! - `bench`: the benchmark guest under `-icount`, optionally against Xen
//!   4.17 (see [`bench`]).
//!
//! Every module except this one is free of `unsafe` code.
#![forbid(unsafe_code)]

mod bench;
mod build;
mod cli;
mod disk;
mod elf;
mod fuzz;
mod grub;
mod images;
mod linux;
mod new_test;
mod packages;
mod qemu;
mod ramdisk;
mod run;
mod serial_log;
mod status;
mod suite;
mod testrun;
mod toolchain;
mod xen;

use std::process::ExitCode;

use cli::Command;

/// What `command` needs beyond a bare toolchain: the bare-metal target
/// (and `rustfmt`/`clippy` for `test`, which runs them), checked and
/// installed before anything is built.
fn prerequisites(command: &Command) -> Result<(), String> {
    let components: &[toolchain::Component] = match command {
        Command::Help => return Ok(()),
        Command::Run(args) if args.hypervisor.is_some() && args.dom0.is_some() => return Ok(()),
        Command::Build
        | Command::Run(_)
        | Command::NewTest(_)
        | Command::Bench(_)
        | Command::FuzzGuest(_) => &[],
        Command::Test(_) => &[toolchain::Component::Rustfmt, toolchain::Component::Clippy],
    };
    toolchain::ensure(&build::Workspace::locate()?, components)
}

/// Runs one command; `Ok` carries the exit status.
fn dispatch(command: &Command) -> Result<u8, String> {
    prerequisites(command)?;
    match command {
        Command::Help => {
            print!("{}", cli::USAGE);
            Ok(0)
        }
        Command::Build => {
            let workspace = build::Workspace::locate()?;
            build::build_images(&workspace)?;
            eprintln!(
                "xtask: built {}, {} and {}",
                workspace.hypervisor().display(),
                workspace.test_guest().display(),
                workspace.bench_guest().display()
            );
            Ok(0)
        }
        Command::Run(args) => run::run(&build::Workspace::locate()?, args),
        Command::NewTest(name) => {
            new_test::new_test(&build::Workspace::locate()?, name)?;
            Ok(0)
        }
        Command::Test(args) => {
            let passed = testrun::test(&build::Workspace::locate()?, args)?;
            Ok(if passed { 0 } else { status::XTASK_ERROR })
        }
        Command::Bench(args) => bench::bench(&build::Workspace::locate()?, args),
        Command::FuzzGuest(args) => fuzz::fuzz_guest(&build::Workspace::locate()?, args),
    }
}

fn main() -> ExitCode {
    let args: Result<Vec<String>, _> = std::env::args_os()
        .skip(1)
        .map(|a| a.into_string())
        .collect();
    let command = match args {
        Ok(args) => cli::parse(args),
        Err(bad) => Err(format!("argument is not UTF-8: {}", bad.to_string_lossy())),
    };
    let command = match command {
        Ok(command) => command,
        Err(message) => {
            eprintln!("xtask: {message}\n\n{}", cli::USAGE);
            return ExitCode::from(status::XTASK_ERROR);
        }
    };
    match dispatch(&command) {
        Ok(code) => ExitCode::from(code),
        Err(message) => {
            eprintln!("xtask: error: {message}");
            ExitCode::from(status::XTASK_ERROR)
        }
    }
}
