//! `cargo xtask fuzz-guest`: boots the hypervisor with the hypercall
//! fuzzer (`test=fuzz` of the test guest, two vCPUs) as dom0, or with
//! `--domu` as an unprivileged domU of the toolstack dom0, and judges the
//! run.
//!
//! The run passes when dom0 powers off with `Test result: SUCCESS` after
//! all the fuzzer's calls (as a domU: dom0 checks the domU's result line,
//! then destroys it), the hypervisor's teardown line says every frame
//! came back, and nothing panicked; a watchdog stops QEMU after
//! [`timeout_for`] (a hang). The guest's summary lines (calls per second,
//! return codes) are printed again at the end.
#![forbid(unsafe_code)]

use std::time::Duration;

use hypervisor::exit::HostExit;

use crate::build::{self, Workspace};
use crate::cli::{AccelChoice, BootPath, DEFAULT_HV_ARGS, DEFAULT_MEM_MIB, FuzzArgs};
use crate::packages;
use crate::qemu::{self, Devices, Machine, RunSpec, Serial};
use crate::ramdisk::{self, DomuSpec};
use crate::run::{self, BootFiles};
use crate::serial_log::{self, Expectation};
use crate::status;
use crate::testrun;

/// Seconds allowed for booting and tearing down, whatever the call count.
const FIXED_SECS: u64 = 60;
/// Calls per second the watchdog assumes at least (under TCG the
/// fuzzer makes 10000 to 20500 a second, see `docs/address-spaces.md`).
const MIN_CALLS_PER_SEC: u64 = 1000;

/// The watchdog for `calls` calls.
pub fn timeout_for(calls: u64) -> Duration {
    Duration::from_secs(FIXED_SECS + calls / MIN_CALLS_PER_SEC)
}

/// dom0's vCPUs: the fuzzer's second one idles in yields, so fuzzed
/// yields and `vcpu_op` calls switch vCPUs.
pub const HV_EXTRA_ARGS: &str = "dom0_max_vcpus=2";

/// The fuzzer's command line.
pub fn dom0_args(args: &FuzzArgs) -> String {
    format!("test=fuzz seed={} calls={}", args.seed, args.calls)
}

/// The fuzzer as the toolstack's domU (`--domu`): the test guest with the
/// fuzzer's command line, two vCPUs (one yields, as dom0's second does).
fn domu_spec(workspace: &Workspace, args: &FuzzArgs) -> DomuSpec {
    DomuSpec {
        kernel: workspace.test_guest(),
        memory_mib: 16,
        vcpus: 2,
        cmdline: dom0_args(args),
    }
}

/// What the run must show.
const EXPECT: Expectation = Expectation {
    exit: HostExit::Dom0Poweroff,
    result_line: true,
    checks: true,
    log_lines: &[&["fuzz summary:", "calls/s"], &["fuzz returns:"]],
};

/// `cargo xtask fuzz-guest`; returns the exit status.
pub fn fuzz_guest(workspace: &Workspace, args: &FuzzArgs) -> Result<u8, String> {
    packages::ensure(&run::tools_for(BootPath::Direct))?;
    build::build_images(workspace)?;
    let hypervisor = workspace.hypervisor();
    let nonce = testrun::new_nonce();
    let dir = workspace.xtask_dir("xtask-fuzz");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let (dom0, dom0_args, hv_args, ramdisk) = if args.domu {
        let path = dir.join("fuzz-domu.cpio");
        ramdisk::write_domus(&[domu_spec(workspace, args)], &path)?;
        (
            workspace.dom0(),
            // dom0 gives up on the domU before the watchdog stops QEMU.
            format!(
                "expect=poweroff timeout={}",
                timeout_for(args.calls).as_secs() - FIXED_SECS / 2
            ),
            format!("{DEFAULT_HV_ARGS} test_nonce={nonce}"),
            Some(path),
        )
    } else {
        (
            workspace.test_guest(),
            dom0_args(args),
            format!("{DEFAULT_HV_ARGS} {HV_EXTRA_ARGS} test_nonce={nonce}"),
            None,
        )
    };
    let files = BootFiles {
        hypervisor: &hypervisor,
        hv_args: &hv_args,
        dom0: Some((&dom0, &dom0_args)),
        ramdisk: ramdisk.as_deref(),
    };
    let boot = run::prepare_boot(&files, BootPath::Direct, &dir)?;
    let machine = Machine {
        accel: qemu::host_accel(AccelChoice::Tcg, false),
        smp: 1,
        mem_mib: DEFAULT_MEM_MIB,
        devices: Devices::NONE,
    };
    let qemu_args = qemu::qemu_args(&machine, &boot)?;
    let timeout = args
        .timeout_secs
        .map_or_else(|| timeout_for(args.calls), Duration::from_secs);
    eprintln!(
        "xtask: {} (watchdog {}s)",
        qemu::display_command(&qemu_args),
        timeout.as_secs()
    );
    let result = qemu::run(&RunSpec {
        args: qemu_args,
        serial: Serial::Terminal,
        timeout: Some(timeout),
        stop_markers: &[],
        typing: &[],
        host_steps: &[],
        port: None,
    })?;
    let log = dir.join(format!(
        "{}seed-{}.log",
        if args.domu { "domu-" } else { "" },
        args.seed
    ));
    std::fs::write(&log, &result.serial).map_err(|e| format!("{}: {e}", log.display()))?;
    if !result.serial.is_empty() && !result.serial.ends_with('\n') {
        println!();
    }
    println!("xtask: fuzz-guest log saved to {}", log.display());
    for line in result.serial.lines() {
        if let Some(at) = line
            .find("fuzz summary:")
            .or_else(|| line.find("fuzz returns:"))
        {
            println!("{}", line[at..].trim_end());
        }
    }
    println!(
        "xtask: {} calls, seed {}: {:.1} s wall clock including boot",
        args.calls,
        args.seed,
        result.elapsed.as_secs_f64()
    );
    let problems = serial_log::evaluate(&EXPECT, &result.outcome, &result.serial, &nonce);
    if problems.is_empty() {
        println!("fuzz-guest: PASS (dom0 outcome: {})", result.outcome);
        return Ok(0);
    }
    for problem in &problems {
        println!("fuzz-guest: {problem}");
    }
    println!("fuzz-guest: FAIL (dom0 outcome: {})", result.outcome);
    let code = result.outcome.xtask_status();
    Ok(if code == 0 { status::XTASK_ERROR } else { code })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_grows_with_the_call_count() {
        assert_eq!(timeout_for(0), Duration::from_secs(FIXED_SECS));
        assert!(timeout_for(1_000_000) > timeout_for(20_000));
    }

    #[test]
    fn the_guest_gets_seed_and_count() {
        let args = FuzzArgs {
            seed: 7,
            calls: 20_000,
            ..FuzzArgs::default()
        };
        assert_eq!(dom0_args(&args), "test=fuzz seed=7 calls=20000");
    }
}
