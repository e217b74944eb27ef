//! Reading a test guest's serial log, and judging a run against what a test
//! expects.
//!
//! The guest prints, one per line: `ok: <check>`, `FAIL: <check>: <detail>`,
//! `skip: <check>: <why>` or `ERROR: <what>: <detail>`, then exactly one
//! `Test result: SUCCESS|SKIP|ERROR|FAILURE`. A line counts only if it starts with one of those
//! prefixes (after carriage returns and an optional Xen-style `(dN) ` guest
//! prefix), so a hypervisor log line that quotes one does not.
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
    /// `skip:`
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
            Verdict::Skip => "skip: ",
            Verdict::Error => "ERROR: ",
        }
    }
}

/// One check line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Check {
    /// The verdict.
    pub verdict: Verdict,
    /// The check's name: the text up to the first `": "`.
    pub name: String,
    /// The rest of the line after the name, if any.
    pub detail: String,
}

/// What the guest reported.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestReport {
    /// Every check line, in order.
    pub checks: Vec<Check>,
    /// The word after each `Test result: `, in order.
    pub results: Vec<String>,
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

/// Reads the guest's report out of a serial log.
pub fn parse(log: &str) -> GuestReport {
    let mut report = GuestReport::default();
    for line in log.lines().map(clean) {
        if let Some(result) = line.strip_prefix("Test result: ") {
            report.results.push(result.trim().to_owned());
            continue;
        }
        for verdict in [Verdict::Ok, Verdict::Fail, Verdict::Skip, Verdict::Error] {
            if let Some(rest) = line.strip_prefix(verdict.prefix()) {
                let (name, detail) = rest.split_once(": ").unwrap_or((rest, ""));
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
    /// Whether exactly one `Test result: SUCCESS` line is required. When not
    /// required, a result line may be absent, but one that is present must
    /// still be the only one and say SUCCESS.
    pub result_line: bool,
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

/// Every reason the run does not meet `expectation`; empty means it passed.
/// The hypervisor's teardown line when every frame came back.
const TEARDOWN_LINE: [&str; 2] = ["dom0 torn down:", "all returned"];

pub fn evaluate(expectation: &Expectation, outcome: &Outcome, log: &str) -> Vec<String> {
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
        [only] if only == "SUCCESS" => {}
        [only] => problems.push(format!("Test result: {only}")),
        many => problems.push(format!(
            "{} 'Test result:' lines ({}), expected one",
            many.len(),
            many.join(", ")
        )),
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
    // the build equal free frames after the teardown).
    let ends_with_dom0 = !matches!(
        expectation.exit,
        HostExit::HypervisorPanic | HostExit::BadDom0Image
    );
    if ends_with_dom0
        && !log
            .lines()
            .any(|line| contains_in_order(line, &TEARDOWN_LINE))
    {
        problems.push(
            "no 'dom0 torn down: ... all returned' line (frames lost or no teardown)".to_owned(),
        );
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

    const POWEROFF: Expectation = Expectation {
        exit: HostExit::Dom0Poweroff,
        result_line: true,
        log_lines: &[],
    };

    const TORN_DOWN: &str = "(HV) dom0 torn down: 9 frames released; free frames 5 before the build, 5 now: all returned\n";
    const GOOD: &str = "(HV) booting\r\n--- pv-tests: hello ---\r\nok: console\r\nskip: sse: no xsave\r\n\
                        Test result: SUCCESS\r\n(HV) dom0 shut down: poweroff\r\n\
                        (HV) dom0 torn down: 9 frames released; free frames 5 before the build, 5 now: all returned\r\n";

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
                    detail: "no xsave".into()
                },
            ]
        );
    }

    #[test]
    fn guest_prefix_and_quoted_lines() {
        let report = parse("(d0) ok: a\n(HV) ok: not a check\n(dx) ok: b\nFAIL: c: d: e\n");
        let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["a", "c"]);
        assert_eq!(report.checks[1].detail, "d: e");
    }

    #[test]
    fn a_good_run_passes() {
        let ok = Outcome::Exit(HostExit::Dom0Poweroff);
        assert_eq!(evaluate(&POWEROFF, &ok, GOOD), Vec::<String>::new());
    }

    #[test]
    fn each_rule_fails_on_its_own() {
        let ok = Outcome::Exit(HostExit::Dom0Poweroff);
        let crash = Outcome::Exit(HostExit::Dom0Crash);
        assert_eq!(evaluate(&POWEROFF, &crash, GOOD).len(), 1);
        assert_eq!(
            evaluate(&POWEROFF, &Outcome::ForeignStatus(0), GOOD).len(),
            1
        );
        assert_eq!(
            evaluate(&POWEROFF, &ok, &format!("ok: a\n{TORN_DOWN}")).len(),
            1
        );
        assert_eq!(
            evaluate(
                &POWEROFF,
                &ok,
                &format!("Test result: FAILURE\n{TORN_DOWN}")
            )
            .len(),
            1
        );
        assert_eq!(
            evaluate(
                &POWEROFF,
                &ok,
                &format!("Test result: SUCCESS\nTest result: SUCCESS\n{TORN_DOWN}")
            )
            .len(),
            1
        );
        let with_error = GOOD.replace("ok: console", "ERROR: setup: no memory");
        assert_eq!(
            evaluate(&POWEROFF, &ok, &with_error),
            ["ERROR: setup: no memory"]
        );
        let with_fail = GOOD.replace("ok: console", "FAIL: console: wrong");
        assert_eq!(
            evaluate(&POWEROFF, &ok, &with_fail),
            ["FAIL: console: wrong"]
        );
    }

    #[test]
    fn log_lines_must_match_on_one_line() {
        let rejected = Expectation {
            exit: HostExit::BadDom0Image,
            result_line: false,
            log_lines: &[&["dom0 image rejected:", "LOADER"]],
        };
        let bad = Outcome::Exit(HostExit::BadDom0Image);
        let log = "(HV) dom0 image rejected: LOADER is not \"generic\"\n";
        assert!(evaluate(&rejected, &bad, log).is_empty());
        let split = "(HV) dom0 image rejected: bad notes\n(HV) LOADER was x\n";
        assert_eq!(evaluate(&rejected, &bad, split).len(), 1);
        let reversed = "(HV) LOADER: dom0 image rejected: bad notes\n";
        assert_eq!(evaluate(&rejected, &bad, reversed).len(), 1);
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
            log_lines: &[&["unhandled #PF"]],
        };
        let outcome = Outcome::Exit(HostExit::Dom0Crash);
        let torn_down = "(HV) dom0 torn down: 3 frames released; free frames 7 before the build, 7 now: all returned\n";
        assert!(
            evaluate(
                &crash,
                &outcome,
                &format!("(HV) unhandled #PF\n{torn_down}")
            )
            .is_empty()
        );
        assert_eq!(
            evaluate(
                &crash,
                &outcome,
                &format!("(HV) unhandled #PF\nTest result: FAILURE\n{torn_down}")
            )
            .len(),
            1
        );
    }

    #[test]
    fn a_dom0_shutdown_must_return_every_frame() {
        let ok = Outcome::Exit(HostExit::Dom0Poweroff);
        let lost = GOOD.replace("all returned", "FRAMES LOST");
        assert_eq!(evaluate(&POWEROFF, &ok, &lost).len(), 1);
        let none = GOOD.replace("dom0 torn down", "dom0 went away");
        assert_eq!(evaluate(&POWEROFF, &ok, &none).len(), 1);
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
