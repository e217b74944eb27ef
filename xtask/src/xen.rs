//! Conformance against Xen 4.17: the same test guest booted as dom0 on Xen,
//! and its check lines compared with ours.
//!
//! Xen never ends QEMU by itself: when dom0 powers off it prints "Hardware
//! Dom0 halted" and spins. The harness watches the serial log for that (or
//! for dom0 crashing or shutting down, or Xen panicking) and stops QEMU.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::packages;
use crate::serial_log::{GuestReport, Verdict};

/// Xen's command line for the conformance runs.
pub const XEN_ARGS: &str =
    "console=com1 com1=115200,8n1 dom0_mem=64M noreboot loglvl=all guest_loglvl=all";

/// Serial-log lines after which Xen will print nothing more of interest.
pub const STOP_MARKERS: &[&str] = &[
    "Hardware Dom0 halted",
    "Hardware Dom0 crashed",
    "Hardware Dom0 shutdown",
    "Manual reset required",
];

/// Unpacks Debian's Xen 4.17 into `dir` and returns the ELF's path.
pub fn unpack(dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let xen = dir.join("xen-4.17-amd64");
    let file = std::fs::File::create(&xen).map_err(|e| format!("{}: {e}", xen.display()))?;
    let status = Command::new("gzip")
        .args(["-d", "-c", packages::XEN_GZ])
        .stdout(file)
        .status()
        .map_err(|e| format!("cannot start gzip: {e}"))?;
    if !status.success() {
        return Err(format!("gzip -d -c {} failed ({status})", packages::XEN_GZ));
    }
    Ok(xen)
}

/// The checks as a comparable set: (name, verdict), plus the result line
/// as a pseudo-check named `Test result: <word>`.
fn verdicts(report: &GuestReport) -> BTreeSet<(String, Verdict)> {
    let mut set: BTreeSet<(String, Verdict)> = report
        .checks
        .iter()
        .map(|c| (c.name.clone(), c.verdict))
        .collect();
    for result in &report.results {
        set.insert((format!("Test result: {result}"), Verdict::Ok));
    }
    set
}

/// How `line` reads in a difference listing.
fn describe((name, verdict): &(String, Verdict)) -> String {
    if name.starts_with("Test result: ") {
        name.clone()
    } else {
        format!("{}{name}", verdict.prefix())
    }
}

/// The differences between our report and Xen's; empty means they agree.
pub fn compare(ours: &GuestReport, xen: &GuestReport) -> Vec<String> {
    let ours = verdicts(ours);
    let xen = verdicts(xen);
    let mut differences: Vec<String> = ours
        .difference(&xen)
        .map(|c| format!("only here:   {}", describe(c)))
        .collect();
    differences.extend(
        xen.difference(&ours)
            .map(|c| format!("only on Xen: {}", describe(c))),
    );
    if ours.is_empty() && xen.is_empty() {
        differences.push("neither run printed a check or result line".to_owned());
    }
    differences
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serial_log::parse;

    #[test]
    fn same_checks_agree_whatever_the_details() {
        let ours = parse("ok: a\nskip: b: no x\nFAIL: c: got 1\nTest result: FAILURE\n");
        let xen = parse(
            "(XEN) noise\nok: a\nskip: b: other reason\nFAIL: c: got 2\nTest result: FAILURE\n",
        );
        assert!(compare(&ours, &xen).is_empty());
    }

    #[test]
    fn differences_are_listed_both_ways() {
        let ours = parse("ok: a\nok: b\nTest result: SUCCESS\n");
        let xen = parse("ok: a\nFAIL: b: -38\nTest result: FAILURE\n");
        let mut differences = compare(&ours, &xen);
        differences.sort();
        assert_eq!(
            differences,
            [
                "only here:   Test result: SUCCESS",
                "only here:   ok: b",
                "only on Xen: FAIL: b",
                "only on Xen: Test result: FAILURE",
            ]
        );
    }

    #[test]
    fn a_missing_check_or_result_is_a_difference() {
        let ours = parse("ok: a\nok: b\nTest result: SUCCESS\n");
        assert_eq!(
            compare(&ours, &parse("ok: a\nTest result: SUCCESS\n")).len(),
            1
        );
        assert_eq!(compare(&ours, &parse("ok: a\nok: b\n")).len(), 1);
        assert_eq!(compare(&parse(""), &parse("")).len(), 1);
    }
}
