//! Reading a test guest's serial log, and judging a run against what a test
//! expects.
//!
//! The guest prints, one per line: `ok: <check>` (or `ok: <check> =
//! <value>` with the value the check saw), `FAIL: <check>: <detail>`,
//! `SKIP: <check> (<reason>)` or `ERROR: <what>: <detail>`, then exactly one
//! `Test result: SUCCESS|SKIP|ERROR|FAILURE`; a guest that panics prints
//! `PANIC: <message>`. A line counts only if it starts with one of those
//! prefixes (after carriage returns and an optional Xen-style `(dN) ` guest
//! prefix), so a hypervisor log line that quotes one does not.
//!
//! The hypervisor's teardown line is trusted only with the `(HV) ` prefix
//! and the per-boot nonce xtask passed as `test_nonce=` (see
//! [`teardown_prefix`]): the guest never learns the nonce, so it cannot
//! print that line itself.
#![forbid(unsafe_code)]

use hypervisor::exit::HostExit;

use crate::status::Outcome;

/// A check's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verdict {
    /// `ok:`
    Ok,
    /// `FAIL:`
    Fail,
    /// `SKIP:`
    Skip,
    /// `ERROR:` (the test itself could not run as intended)
    Error,
}

impl Verdict {
    /// The line prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            Verdict::Ok => "ok: ",
            Verdict::Fail => "FAIL: ",
            Verdict::Skip => "SKIP: ",
            Verdict::Error => "ERROR: ",
        }
    }
}

/// One check line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// The verdict.
    pub verdict: Verdict,
    /// The check's name: for `FAIL:` and `ERROR:` the text up to the first
    /// `": "`, for `ok:` the text before the last `" = "` (or, without one,
    /// before the first `": "`, or all of it), for `SKIP:` the text before
    /// the final parenthesized reason.
    pub name: String,
    /// The rest of the line after the name, if any (for `SKIP:`, the
    /// reason without its parentheses; for `ok:`, the value after the last
    /// `" = "`, or empty: what an `ok: <check>: <observed>` line observed
    /// differs from run to run and is not part of the comparison).
    pub detail: String,
}

/// What the guest reported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestReport {
    /// Every check line, in order.
    pub checks: Vec<Check>,
    /// The word after each `Test result: `, in order.
    pub results: Vec<String>,
    /// The message of each `PANIC: ` line, in order.
    pub panics: Vec<String>,
}

impl GuestReport {
    /// Whether the result word `result` is a pass: `SUCCESS`, or `SKIP`
    /// when the guest printed the `SKIP:` lines that explain it (the
    /// harness lists them; a test still needs its `ok:` checks).
    pub fn passed(&self, result: &str) -> bool {
        result == "SUCCESS"
            || (result == "SKIP" && self.with_verdict(Verdict::Skip).next().is_some())
    }

    /// The checks with verdict `verdict`.
    pub fn with_verdict(&self, verdict: Verdict) -> impl Iterator<Item = &Check> {
        self.checks.iter().filter(move |c| c.verdict == verdict)
    }
}

/// Splits `<name> (<reason>)` at its final, balanced parenthesized group;
/// without one the whole text is the name and the reason is empty.
fn split_skip(rest: &str) -> (&str, &str) {
    let Some(inner) = rest.strip_suffix(')') else {
        return (rest, "");
    };
    let mut depth = 0usize;
    for (at, c) in inner.char_indices().rev() {
        match c {
            ')' => depth += 1,
            '(' if depth == 0 => return (inner[..at].trim_end(), &inner[at + 1..]),
            '(' => depth -= 1,
            _ => {}
        }
    }
    (rest, "")
}

/// The line without carriage returns and without a `(dN) ` prefix.
fn clean(line: &str) -> &str {
    let line = line.trim_matches('\r');
    if let Some(rest) = line.strip_prefix("(d")
        && let Some((domid, text)) = rest.split_once(") ")
        && !domid.is_empty()
        && domid.bytes().all(|b| b.is_ascii_digit())
    {
        return text;
    }
    line
}

/// An `ok:` line's name and value: `<check> = <value>`, or `<check>:
/// <observed>` (the observation is dropped), or just `<check>`.
fn split_ok(rest: &str) -> (&str, &str) {
    if let Some(split) = rest.rsplit_once(" = ") {
        return split;
    }
    (rest.split_once(": ").map_or(rest, |(name, _)| name), "")
}

/// Reads the guest's report out of a serial log.
pub fn parse(log: &str) -> GuestReport {
    let mut report = GuestReport::default();
    for line in log.lines().map(clean) {
        if let Some(result) = line.strip_prefix("Test result: ") {
            report.results.push(result.trim().to_owned());
            continue;
        }
        if let Some(message) = line.strip_prefix("PANIC: ") {
            report.panics.push(message.trim().to_owned());
            continue;
        }
        for verdict in [Verdict::Ok, Verdict::Fail, Verdict::Skip, Verdict::Error] {
            if let Some(rest) = line.strip_prefix(verdict.prefix()) {
                let (name, detail) = match verdict {
                    Verdict::Skip => split_skip(rest),
                    Verdict::Ok => split_ok(rest),
                    Verdict::Fail | Verdict::Error => rest.split_once(": ").unwrap_or((rest, "")),
                };
                report.checks.push(Check {
                    verdict,
                    name: name.trim().to_owned(),
                    detail: detail.trim().to_owned(),
                });
            }
        }
    }
    report
}

/// What a test requires of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expectation {
    /// The outcome QEMU's status must map to.
    pub exit: HostExit,
    /// Whether exactly one passing `Test result:` line is required
    /// (`SUCCESS`, or `SKIP` explained by `SKIP:` lines, see
    /// [`GuestReport::passed`]). When not required, a result line may be
    /// absent, but one that is present must still be the only one and pass.
    pub result_line: bool,
    /// Whether the guest must print at least one `ok:` check. Tests that
    /// only end the machine (shutdown, isolation, rejected images) say
    /// false and name their exact path in `log_lines` instead.
    pub checks: bool,
    /// Each entry: substrings that must all appear on one line of the log,
    /// in this order and without overlapping (so `["dom0 image rejected:",
    /// "dom0"]` needs a second "dom0" after the prefix).
    pub log_lines: &'static [&'static [&'static str]],
}

/// Whether `line` contains every one of `needles`, in order, without overlap.
fn contains_in_order(line: &str, needles: &[&str]) -> bool {
    let mut rest = line;
    for needle in needles {
        match rest.find(needle) {
            Some(at) => rest = &rest[at + needle.len()..],
            None => return false,
        }
    }
    true
}

/// The start of the hypervisor's teardown line for a boot with `nonce`
/// (`hypervisor/src/arch/x86_64/traps.rs` prints it).
pub fn teardown_prefix(nonce: &str) -> String {
    format!("(HV) dom0 torn down (nonce {nonce}):")
}

/// How the teardown line ends when every frame came back and the frame
/// table stayed consistent.
const TEARDOWN_OK: &str = ": all returned";

/// The word the hypervisor's teardown line uses for a frame table found
/// inconsistent.
const TEARDOWN_INCONSISTENT: &str = "FRAME TABLE INCONSISTENT";

/// Every reason the run does not meet `expectation`; empty means it passed.
/// `nonce` is the `test_nonce=` this boot's hypervisor was given.
pub fn evaluate(
    expectation: &Expectation,
    outcome: &Outcome,
    log: &str,
    nonce: &str,
) -> Vec<String> {
    let mut problems = Vec::new();
    if *outcome != Outcome::Exit(expectation.exit) {
        problems.push(format!(
            "outcome: expected {}, got {outcome}",
            expectation.exit.name()
        ));
    }
    let report = parse(log);
    match report.results.as_slice() {
        [] if !expectation.result_line => {}
        [] => problems.push("no 'Test result:' line".to_owned()),
        [only] if report.passed(only) => {}
        [only] => problems.push(format!("Test result: {only}")),
        many => problems.push(format!(
            "{} 'Test result:' lines ({}), expected one",
            many.len(),
            many.join(", ")
        )),
    }
    for message in &report.panics {
        problems.push(format!("the guest panicked: {message}"));
    }
    if expectation.checks && report.with_verdict(Verdict::Ok).next().is_none() {
        problems.push("no 'ok:' check line (the test checked nothing)".to_owned());
    }
    let failed = |c: &&Check| matches!(c.verdict, Verdict::Fail | Verdict::Error);
    for check in report.checks.iter().filter(failed) {
        problems.push(format!(
            "{}{}: {}",
            check.verdict.prefix(),
            check.name,
            check.detail
        ));
    }
    // Every run that ends with dom0 shutting down must also show that its
    // teardown gave back every frame it took (issue 3: free frames before
    // the build equal free frames after the teardown) and found the frame
    // table consistent (issue 19), on a line only the hypervisor can print.
    let ends_with_dom0 = !matches!(
        expectation.exit,
        HostExit::HypervisorPanic | HostExit::BadDom0Image
    );
    if ends_with_dom0 {
        let prefix = teardown_prefix(nonce);
        let teardown: Vec<&str> = log
            .lines()
            .map(|line| line.trim_matches('\r'))
            .filter(|line| line.starts_with(&prefix))
            .collect();
        match teardown.as_slice() {
            [line] if line.ends_with(TEARDOWN_OK) => {}
            [line] if line.contains(TEARDOWN_INCONSISTENT) => problems.push(format!(
                "the teardown found the frame table inconsistent: {line}"
            )),
            [line] => problems.push(format!("the teardown lost frames: {line}")),
            [] => problems.push(format!(
                "no '{prefix} ...{TEARDOWN_OK}' line (no teardown, or not from this boot's hypervisor)"
            )),
            many => problems.push(format!("{} teardown lines, expected one", many.len())),
        }
    }
    for wanted in expectation.log_lines {
        if !log.lines().any(|line| contains_in_order(line, wanted)) {
            problems.push(format!(
                "no log line contains {}",
                wanted
                    .iter()
                    .map(|w| format!("'{w}'"))
                    .collect::<Vec<_>>()
                    .join(" then ")
            ));
        }
    }
    problems
}

/// Longest line [`tail`] shows, in characters.
const TAIL_LINE_MAX: usize = 200;

/// The last `n` lines of `log`, safe to print on a terminal: control
/// characters become `.` and long lines are cut at [`TAIL_LINE_MAX`].
pub fn tail(log: &str, n: usize) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(n)..]
        .iter()
        .map(|line| {
            let line = line.trim_end_matches('\r');
            let mut shown: String = line
                .chars()
                .take(TAIL_LINE_MAX)
                .map(|c| if c.is_control() && c != '\t' { '.' } else { c })
                .collect();
            if line.chars().count() > TAIL_LINE_MAX {
                shown.push_str(" [...]");
            }
            shown
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_lines_with_values_or_observations() {
        assert_eq!(
            split_ok("unknown op = -38 (ENOSYS)"),
            ("unknown op", "-38 (ENOSYS)")
        );
        assert_eq!(
            split_ok("vCPU 0 did its rounds: 300 rounds"),
            ("vCPU 0 did its rounds", "")
        );
        assert_eq!(split_ok("plain check"), ("plain check", ""));
        assert_eq!(
            split_ok("entry = pfn 0x3 | 0x67"),
            ("entry", "pfn 0x3 | 0x67")
        );
    }

    const POWEROFF: Expectation = Expectation {
        exit: HostExit::Dom0Poweroff,
        result_line: true,
        checks: true,
        log_lines: &[],
    };

    const NONCE: &str = "0123456789abcdef";
    const TORN_DOWN: &str = "(HV) dom0 torn down (nonce 0123456789abcdef): 9 frames released; free frames 5 before the build, 5 now: all returned\n";
    const GOOD: &str = "(HV) booting\r\n--- pv-tests: hello ---\r\nok: console\r\nSKIP: sse (no xsave (not in QEMU))\r\n\
                        Test result: SUCCESS\r\n(HV) dom0 shut down: poweroff\r\n\
                        (HV) dom0 torn down (nonce 0123456789abcdef): 9 frames released; free frames 5 before the build, 5 now: all returned\r\n";

    #[test]
    fn parses_checks_and_results() {
        let report = parse(GOOD);
        assert_eq!(report.results, ["SUCCESS"]);
        assert_eq!(
            report.checks,
            [
                Check {
                    verdict: Verdict::Ok,
                    name: "console".into(),
                    detail: String::new()
                },
                Check {
                    verdict: Verdict::Skip,
                    name: "sse".into(),
                    detail: "no xsave (not in QEMU)".into()
                },
            ]
        );
        assert!(report.panics.is_empty());
    }

    #[test]
    fn skip_lines_split_at_the_last_parenthesized_reason() {
        assert_eq!(split_skip("a (b) c (why)"), ("a (b) c", "why"));
        assert_eq!(split_skip("x (y (z))"), ("x", "y (z)"));
        assert_eq!(split_skip("no reason"), ("no reason", ""));
        assert_eq!(split_skip("odd)"), ("odd)", ""));
    }

    #[test]
    fn guest_prefix_and_quoted_lines() {
        let report = parse(
            "(d0) ok: a\n(HV) ok: not a check\n(dx) ok: b\nFAIL: c: d: e\nok: f: x = y = -22 (EINVAL)\n",
        );
        let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a", "c", "f: x = y"]);
        assert_eq!(report.checks[1].detail, "d: e");
        assert_eq!(report.checks[2].detail, "-22 (EINVAL)");
        let panics = parse("(d0) PANIC: src/x.rs:3: boom\n(HV) PANIC: not the guest\n");
        assert_eq!(panics.panics, ["src/x.rs:3: boom"]);
    }

    #[test]
    fn a_good_run_passes() {
        let ok = Outcome::Exit(HostExit::Dom0Poweroff);
        assert_eq!(evaluate(&POWEROFF, &ok, GOOD, NONCE), Vec::<String>::new());
    }

    #[test]
    fn each_rule_fails_on_its_own() {
        let ok = Outcome::Exit(HostExit::Dom0Poweroff);
        let crash = Outcome::Exit(HostExit::Dom0Crash);
        let eval = |log: &str| evaluate(&POWEROFF, &ok, log, NONCE);
        assert_eq!(evaluate(&POWEROFF, &crash, GOOD, NONCE).len(), 1);
        assert_eq!(
            evaluate(&POWEROFF, &Outcome::ForeignStatus(0), GOOD, NONCE).len(),
            1
        );
        assert_eq!(eval(&format!("ok: a\n{TORN_DOWN}")).len(), 1);
        assert_eq!(
            eval(&format!("ok: a\nTest result: FAILURE\n{TORN_DOWN}")).len(),
            1
        );
        assert_eq!(
            eval(&format!(
                "ok: a\nTest result: SUCCESS\nTest result: SUCCESS\n{TORN_DOWN}"
            ))
            .len(),
            1
        );
        let with_error = GOOD.replace("ok: console", "ok: x\nERROR: setup: no memory");
        assert_eq!(eval(&with_error), ["ERROR: setup: no memory"]);
        let with_fail = GOOD.replace("ok: console", "ok: x\nFAIL: console: wrong");
        assert_eq!(eval(&with_fail), ["FAIL: console: wrong"]);
        let panicked = GOOD.replace("Test result", "PANIC: t.rs:1: oops\nTest result");
        assert_eq!(eval(&panicked), ["the guest panicked: t.rs:1: oops"]);
    }

    #[test]
    fn a_skip_result_passes_only_with_its_skip_lines() {
        let ok = Outcome::Exit(HostExit::Dom0Poweroff);
        let skipped = GOOD.replace("SUCCESS", "SKIP");
        assert!(evaluate(&POWEROFF, &ok, &skipped, NONCE).is_empty());
        let unexplained = skipped.replace("SKIP: sse (no xsave (not in QEMU))\r\n", "");
        assert_eq!(
            evaluate(&POWEROFF, &ok, &unexplained, NONCE),
            ["Test result: SKIP"]
        );
    }

    #[test]
    fn a_test_that_expects_checks_fails_without_one() {
        let ok = Outcome::Exit(HostExit::Dom0Poweroff);
        let unchecked = GOOD.replace("ok: console", "nothing checked");
        assert_eq!(
            evaluate(&POWEROFF, &ok, &unchecked, NONCE),
            ["no 'ok:' check line (the test checked nothing)"]
        );
        let skipped_only = format!("SKIP: a (b)\nTest result: SUCCESS\n{TORN_DOWN}");
        assert_eq!(evaluate(&POWEROFF, &ok, &skipped_only, NONCE).len(), 1);
        let no_checks = Expectation {
            checks: false,
            ..POWEROFF
        };
        assert!(evaluate(&no_checks, &ok, &unchecked, NONCE).is_empty());
    }

    #[test]
    fn log_lines_must_match_on_one_line() {
        let rejected = Expectation {
            exit: HostExit::BadDom0Image,
            result_line: false,
            checks: false,
            log_lines: &[&["dom0 image rejected:", "LOADER"]],
        };
        let bad = Outcome::Exit(HostExit::BadDom0Image);
        let log = "(HV) dom0 image rejected: LOADER is not \"generic\"\n";
        assert!(evaluate(&rejected, &bad, log, NONCE).is_empty());
        let split = "(HV) dom0 image rejected: bad notes\n(HV) LOADER was x\n";
        assert_eq!(evaluate(&rejected, &bad, split, NONCE).len(), 1);
        let reversed = "(HV) LOADER: dom0 image rejected: bad notes\n";
        assert_eq!(evaluate(&rejected, &bad, reversed, NONCE).len(), 1);
        assert!(contains_in_order(
            "dom0 image rejected: no dom0 bit",
            &["dom0 image rejected:", "dom0"]
        ));
        assert!(!contains_in_order(
            "dom0 image rejected: too big",
            &["dom0 image rejected:", "dom0"]
        ));
    }

    #[test]
    fn optional_result_line_must_still_be_success() {
        let crash = Expectation {
            exit: HostExit::Dom0Crash,
            result_line: false,
            checks: false,
            log_lines: &[&["unhandled #PF"]],
        };
        let outcome = Outcome::Exit(HostExit::Dom0Crash);
        assert!(
            evaluate(
                &crash,
                &outcome,
                &format!("(HV) unhandled #PF\n{TORN_DOWN}"),
                NONCE
            )
            .is_empty()
        );
        assert_eq!(
            evaluate(
                &crash,
                &outcome,
                &format!("(HV) unhandled #PF\nTest result: FAILURE\n{TORN_DOWN}"),
                NONCE
            )
            .len(),
            1
        );
    }

    #[test]
    fn a_dom0_shutdown_must_return_every_frame() {
        let ok = Outcome::Exit(HostExit::Dom0Poweroff);
        let eval = |log: &str| evaluate(&POWEROFF, &ok, log, NONCE);
        let lost = GOOD.replace("all returned", "FRAMES LOST");
        assert_eq!(eval(&lost).len(), 1);
        let none = GOOD.replace("dom0 torn down", "dom0 went away");
        assert_eq!(eval(&none).len(), 1);
        let inconsistent = GOOD.replace("all returned", "FRAME TABLE INCONSISTENT");
        let problems = eval(&inconsistent);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].contains("inconsistent"), "{problems:?}");
        let twice = format!("{GOOD}{TORN_DOWN}");
        assert_eq!(eval(&twice).len(), 1);
    }

    #[test]
    fn the_teardown_line_needs_the_hypervisor_prefix_and_this_boots_nonce() {
        let ok = Outcome::Exit(HostExit::Dom0Poweroff);
        let forged_by_guest = GOOD.replace("(HV) dom0 torn down", "dom0 torn down");
        assert_eq!(evaluate(&POWEROFF, &ok, &forged_by_guest, NONCE).len(), 1);
        let mid_line = GOOD.replace("(HV) dom0 torn down", "x (HV) dom0 torn down");
        assert_eq!(evaluate(&POWEROFF, &ok, &mid_line, NONCE).len(), 1);
        assert_eq!(evaluate(&POWEROFF, &ok, GOOD, "fedcba9876543210").len(), 1);
    }

    #[test]
    fn tail_keeps_the_last_lines() {
        assert_eq!(tail("a\r\nb\r\nc\r\n", 2), "b\nc");
        assert_eq!(tail("a\n", 5), "a");
        assert_eq!(tail("\x1b[2Jx\x07\n", 1), ".[2Jx.");
        let long = "y".repeat(TAIL_LINE_MAX + 1);
        assert_eq!(tail(&long, 1), format!("{} [...]", &long[..TAIL_LINE_MAX]));
    }
}
