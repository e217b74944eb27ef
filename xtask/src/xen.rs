//! Conformance against Xen 4.17: the same test guest booted as dom0 on Xen,
//! and its check lines compared with ours.
//!
//! Xen never ends QEMU by itself: when dom0 powers off it prints "Hardware
//! Dom0 halted" and spins. The harness watches the serial log for that (or
//! for dom0 crashing or shutting down, or Xen panicking) and stops QEMU.
//! [`judge`] then accepts only the poweroff: a conformance guest must end
//! on Xen as it ends here, with one `Test result: SUCCESS`, at least one
//! `ok:` check and no guest panic.
#![forbid(unsafe_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::packages;
use crate::serial_log::{self, GuestReport, Verdict};
use crate::status::Outcome;

/// Xen's command line for the conformance runs.
pub const XEN_ARGS: &str =
    "console=com1 com1=115200,8n1 dom0_mem=64M noreboot loglvl=all guest_loglvl=all";

/// Xen's line when dom0 powered off: the only good end of a run.
const DOM0_HALTED: &str = "Hardware Dom0 halted";

/// Xen's line when dom0 crashed.
const DOM0_CRASHED: &str = "Hardware Dom0 crashed";

/// Xen's line after a panic of its own (with `noreboot`).
const XEN_PANICKED: &str = "Manual reset required";

/// Serial-log lines after which Xen will print nothing more of interest.
pub const STOP_MARKERS: &[&str] = &[
    DOM0_HALTED,
    DOM0_CRASHED,
    "Hardware Dom0 shutdown",
    XEN_PANICKED,
];

/// Every reason a conformance run on Xen did not end as it must (dom0
/// powered off after exactly one `Test result: SUCCESS`, with at least
/// one `ok:` check and no guest panic); empty means it did.
pub fn judge(outcome: &Outcome, log: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let panicked = log.lines().any(|line| line.contains("Panic on CPU"));
    match outcome {
        _ if panicked => problems.push("Xen panicked".to_owned()),
        Outcome::Stopped(DOM0_HALTED) => {}
        Outcome::Stopped(DOM0_CRASHED) => problems.push("Xen: dom0 crashed".to_owned()),
        Outcome::Stopped(XEN_PANICKED) => problems.push("Xen panicked".to_owned()),
        other => problems.push(format!("Xen run did not end with dom0 halted: {other}")),
    }
    let report = serial_log::parse(log);
    match report.results.as_slice() {
        [only] if report.passed(only) => {}
        [] => problems.push("Xen run: no 'Test result:' line".to_owned()),
        many => problems.push(format!("Xen run: Test result: {}", many.join(", "))),
    }
    for message in &report.panics {
        problems.push(format!("Xen run: the guest panicked: {message}"));
    }
    if report.with_verdict(Verdict::Ok).next().is_none() {
        problems.push("Xen run: no 'ok:' check line".to_owned());
    }
    problems
}

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
        let ours = parse("ok: a\nSKIP: b (no x)\nFAIL: c: got 1\nTest result: FAILURE\n");
        let xen = parse(
            "(XEN) noise\nok: a\nSKIP: b (other reason)\nFAIL: c: got 2\nTest result: FAILURE\n",
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

    #[test]
    fn only_a_halted_dom0_with_one_success_passes_on_xen() {
        let good = "(d0) ok: a\n(d0) Test result: SUCCESS\n(XEN) Hardware Dom0 halted\n";
        let halted = Outcome::Stopped(DOM0_HALTED);
        assert!(judge(&halted, good).is_empty());
        assert_eq!(
            judge(&Outcome::Stopped(DOM0_CRASHED), good),
            ["Xen: dom0 crashed"]
        );
        assert_eq!(
            judge(&Outcome::Stopped(XEN_PANICKED), good),
            ["Xen panicked"]
        );
        let panic_log = format!("{good}(XEN) Panic on CPU 0:\n");
        assert_eq!(judge(&halted, &panic_log), ["Xen panicked"]);
        assert_eq!(
            judge(&Outcome::Timeout(std::time::Duration::from_secs(1)), good).len(),
            1
        );
        assert_eq!(judge(&halted, "(d0) ok: a\n").len(), 1);
        assert_eq!(judge(&halted, "(d0) Test result: SUCCESS\n").len(), 1);
        let failed = good.replace("SUCCESS", "FAILURE");
        assert_eq!(judge(&halted, &failed).len(), 1);
        let guest_panic = good.replace("(d0) Test", "(d0) PANIC: x.rs:1: y\n(d0) Test");
        assert_eq!(judge(&halted, &guest_panic).len(), 1);
    }
}
