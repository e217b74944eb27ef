//! XTF-style test reporting: one line per check, one final result line.
//!
//! Lines, each on its own console line:
//! - `ok: <check>`, or `ok: <check> = <value>` for a check that compared a
//!   value (a hypercall's return, an `==` comparison): the value it saw,
//!   which the harness compares with Xen's; a check that also shows what
//!   it observed on this run (times, counts that differ from run to run)
//!   ends with `: <observed>`, which the harness does not compare
//!   ([`Recorder::check_observed`])
//! - `FAIL: <check>: <detail>` (status FAILURE)
//! - `SKIP: <check> (<why>)` (status SKIP): the check could not apply
//!   here; the harness counts and lists every one
//! - `ERROR: <what>: <detail>` (status ERROR: the test could not run as
//!   intended, e.g. an unknown test name)
//! - finally exactly one `Test result: SUCCESS|SKIP|ERROR|FAILURE`.
//!
//! Check names are anything [`fmt::Display`]: a `&str` or `format_args!`.
//!
//! Invariant: the overall status only escalates, in the order
//! SUCCESS < SKIP < ERROR < FAILURE (as in XTF: a failed check outranks a
//! test that could not run, which outranks a skipped check). A later `ok`
//! never lowers it.
//!
//! The line formatting and the status logic are pure (tested on the host);
//! the functions that print to the console and shut the guest down exist
//! only on the bare-metal target.

#![forbid(unsafe_code)]

use core::fmt;

use dom0_abi::Errno;

/// Overall test status, ordered by severity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Status {
    /// Every check passed.
    Success = 0,
    /// Some check could not apply here and was skipped.
    Skip = 1,
    /// The test could not run as intended.
    Error = 2,
    /// A check failed.
    Failure = 3,
}

impl Status {
    /// The word printed in the result line.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Status::Success => "SUCCESS",
            Status::Skip => "SKIP",
            Status::Error => "ERROR",
            Status::Failure => "FAILURE",
        }
    }

    /// The more severe of `self` and `other`.
    #[must_use]
    pub fn escalate(self, other: Status) -> Status {
        self.max(other)
    }

    /// The status stored as `raw` by [`Status::as_raw`].
    #[must_use]
    pub const fn from_raw(raw: u8) -> Status {
        match raw {
            0 => Status::Success,
            1 => Status::Skip,
            2 => Status::Error,
            _ => Status::Failure,
        }
    }

    /// The status as a byte (for atomic storage).
    #[must_use]
    pub const fn as_raw(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A hypercall return value, displayed with its errno name when it is one:
/// `0`, `4096`, `-38 (ENOSYS)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ret(pub i64);

impl fmt::Display for Ret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Errno::from_ret(self.0) {
            Some(e) => write!(f, "{} ({})", self.0, e.name()),
            None => write!(f, "{}", self.0),
        }
    }
}

/// Writes `ok: <check>`.
///
/// # Errors
/// Whatever `out` returns.
pub fn write_ok(out: &mut impl fmt::Write, check: impl fmt::Display) -> fmt::Result {
    writeln!(out, "ok: {check}")
}

/// Writes `ok: <check> = <value>`.
///
/// # Errors
/// Whatever `out` returns.
pub fn write_ok_value(
    out: &mut impl fmt::Write,
    check: impl fmt::Display,
    value: impl fmt::Display,
) -> fmt::Result {
    writeln!(out, "ok: {check} = {value}")
}

/// Writes `ok: <check>: <observed>`.
///
/// # Errors
/// Whatever `out` returns.
pub fn write_ok_observed(
    out: &mut impl fmt::Write,
    check: impl fmt::Display,
    observed: fmt::Arguments<'_>,
) -> fmt::Result {
    writeln!(out, "ok: {check}: {observed}")
}

/// Writes `FAIL: <check>: <detail>`.
///
/// # Errors
/// Whatever `out` returns.
pub fn write_fail(
    out: &mut impl fmt::Write,
    check: impl fmt::Display,
    detail: fmt::Arguments<'_>,
) -> fmt::Result {
    writeln!(out, "FAIL: {check}: {detail}")
}

/// Writes `SKIP: <check> (<why>)`.
///
/// # Errors
/// Whatever `out` returns.
pub fn write_skip(
    out: &mut impl fmt::Write,
    check: impl fmt::Display,
    why: fmt::Arguments<'_>,
) -> fmt::Result {
    writeln!(out, "SKIP: {check} ({why})")
}

/// Writes `ERROR: <what>: <detail>`.
///
/// # Errors
/// Whatever `out` returns.
pub fn write_error(
    out: &mut impl fmt::Write,
    what: impl fmt::Display,
    detail: fmt::Arguments<'_>,
) -> fmt::Result {
    writeln!(out, "ERROR: {what}: {detail}")
}

/// Writes `Test result: <STATUS>`.
///
/// # Errors
/// Whatever `out` returns.
pub fn write_result(out: &mut impl fmt::Write, status: Status) -> fmt::Result {
    writeln!(out, "Test result: {status}")
}

/// Writes the banner `--- <suite>: <test> ---`.
///
/// # Errors
/// Whatever `out` returns.
pub fn write_banner(out: &mut impl fmt::Write, suite: &str, test: &str) -> fmt::Result {
    writeln!(out, "--- {suite}: {test} ---")
}

/// Records checks and their lines; the status only escalates.
///
/// The bare-metal global functions of this module keep one of these per
/// guest; host tests use their own.
#[derive(Debug)]
pub struct Recorder<W: fmt::Write> {
    out: W,
    status: Status,
}

impl<W: fmt::Write> Recorder<W> {
    /// A recorder writing to `out`, status SUCCESS.
    pub const fn new(out: W) -> Recorder<W> {
        Recorder {
            out,
            status: Status::Success,
        }
    }

    /// The status so far.
    pub const fn status(&self) -> Status {
        self.status
    }

    /// The output sink.
    pub const fn output(&self) -> &W {
        &self.out
    }

    /// Raises the status to at least `status`.
    pub fn raise(&mut self, status: Status) {
        self.status = self.status.escalate(status);
    }

    /// A passed check.
    pub fn ok(&mut self, check: impl fmt::Display) {
        // Console output cannot be retried: a failed write is dropped.
        let _ = write_ok(&mut self.out, check);
    }

    /// A passed check that saw `value`.
    pub fn ok_value(&mut self, check: impl fmt::Display, value: impl fmt::Display) {
        let _ = write_ok_value(&mut self.out, check, value);
    }

    /// A failed check (FAILURE).
    pub fn fail(&mut self, check: impl fmt::Display, detail: fmt::Arguments<'_>) {
        self.raise(Status::Failure);
        let _ = write_fail(&mut self.out, check, detail);
    }

    /// A skipped check (SKIP).
    pub fn skip(&mut self, check: impl fmt::Display, why: fmt::Arguments<'_>) {
        self.raise(Status::Skip);
        let _ = write_skip(&mut self.out, check, why);
    }

    /// A test that could not run as intended (ERROR).
    pub fn error(&mut self, what: impl fmt::Display, detail: fmt::Arguments<'_>) {
        self.raise(Status::Error);
        let _ = write_error(&mut self.out, what, detail);
    }

    /// `ok` if `cond`, else `fail` with `detail`. Returns `cond`.
    pub fn check(
        &mut self,
        check: impl fmt::Display,
        cond: bool,
        detail: fmt::Arguments<'_>,
    ) -> bool {
        if cond {
            self.ok(check);
        } else {
            self.fail(check, detail);
        }
        cond
    }

    /// `ok` if `cond`, else `fail`, showing `observed` either way.
    /// Returns `cond`.
    pub fn check_observed(
        &mut self,
        check: impl fmt::Display,
        cond: bool,
        observed: fmt::Arguments<'_>,
    ) -> bool {
        if cond {
            let _ = write_ok_observed(&mut self.out, check, observed);
        } else {
            self.fail(check, observed);
        }
        cond
    }

    /// `ok` with the value if `got == want`, else `fail` showing both.
    /// Returns the outcome.
    pub fn check_eq<T: PartialEq + fmt::Debug>(
        &mut self,
        check: impl fmt::Display,
        got: T,
        want: T,
    ) -> bool {
        let pass = got == want;
        if pass {
            self.ok_value(check, format_args!("{got:?}"));
        } else {
            self.fail(check, format_args!("got {got:?}, want {want:?}"));
        }
        pass
    }

    /// As [`Recorder::check_eq`] for hypercall return values, naming errnos.
    pub fn check_ret(&mut self, check: impl fmt::Display, got: i64, want: i64) -> bool {
        self.check_ret_any(check, got, &[want])
    }

    /// `ok` with the value if a hypercall returned one of `wanted`, else
    /// `fail`. Returns the outcome.
    pub fn check_ret_any(&mut self, check: impl fmt::Display, got: i64, wanted: &[i64]) -> bool {
        let pass = wanted.contains(&got);
        match wanted {
            _ if pass => self.ok_value(check, Ret(got)),
            [want] => self.fail(check, format_args!("got {}, want {}", Ret(got), Ret(*want))),
            _ => self.fail(
                check,
                format_args!("got {}, want one of {wanted:?}", Ret(got)),
            ),
        }
        pass
    }

    /// Writes the final result line and returns the status.
    pub fn finish(&mut self) -> Status {
        let _ = write_result(&mut self.out, self.status);
        self.status
    }
}

#[cfg(target_os = "none")]
pub use global::*;

/// The guest's own recorder, printing to the console.
#[cfg(target_os = "none")]
mod global {
    use core::fmt;
    use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

    use dom0_abi::sched::ShutdownReason;

    use super::{Recorder, Status};
    use crate::console::{Buffered, Console};

    /// The status so far (the guest has one vCPU; atomics keep it safe).
    static STATUS: AtomicU8 = AtomicU8::new(Status::Success as u8);

    /// Whether each report goes out in one console write ([`whole_lines`]).
    static WHOLE_LINES: AtomicBool = AtomicBool::new(false);

    /// From now on, write each report in one console write (up to 256
    /// bytes) rather than piece by piece: for a dom0 whose lines must not
    /// be split by the hypervisor's log of what its domUs do meanwhile.
    /// Test guests keep the piecewise writes their timing was tuned with.
    pub fn whole_lines() {
        WHOLE_LINES.store(true, Ordering::Relaxed);
    }

    /// Where a report goes: the buffer when `whole`, else straight out.
    struct Out {
        whole: bool,
        buf: Buffered,
    }

    impl fmt::Write for Out {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            if self.whole {
                self.buf.write_str(s)
            } else {
                Console.write_str(s)
            }
        }
    }

    /// Runs `f` with a recorder seeded from, and saved back to, `STATUS`.
    fn with<R>(f: impl FnOnce(&mut Recorder<Out>) -> R) -> R {
        let mut rec = Recorder::new(Out {
            whole: WHOLE_LINES.load(Ordering::Relaxed),
            buf: Buffered::new(),
        });
        rec.raise(Status::from_raw(STATUS.load(Ordering::Relaxed)));
        let r = f(&mut rec);
        STATUS.fetch_max(rec.status().as_raw(), Ordering::Relaxed);
        r
    }

    /// The status so far.
    pub fn status() -> Status {
        Status::from_raw(STATUS.load(Ordering::Relaxed))
    }

    /// Prints the banner `--- <suite>: <test> ---`.
    pub fn banner(suite: &str, test: &str) {
        let _ = super::write_banner(&mut Console, suite, test);
    }

    /// Prints `ok: <check>`.
    pub fn ok(check: impl fmt::Display) {
        with(|r| r.ok(check));
    }

    /// Prints `FAIL: <check>: <detail>`; status FAILURE.
    pub fn fail(check: impl fmt::Display, detail: fmt::Arguments<'_>) {
        with(|r| r.fail(check, detail));
    }

    /// Prints `SKIP: <check> (<why>)`; status at least SKIP.
    pub fn skip(check: impl fmt::Display, why: fmt::Arguments<'_>) {
        with(|r| r.skip(check, why));
    }

    /// Prints `ERROR: <what>: <detail>`; status at least ERROR.
    pub fn error(what: impl fmt::Display, detail: fmt::Arguments<'_>) {
        with(|r| r.error(what, detail));
    }

    /// `ok` if `cond`, else `fail` with `detail`. Returns `cond`.
    pub fn check(check: impl fmt::Display, cond: bool, detail: fmt::Arguments<'_>) -> bool {
        with(|r| r.check(check, cond, detail))
    }

    /// `ok` if `cond`, else `fail`, showing `observed` either way.
    pub fn check_observed(
        check: impl fmt::Display,
        cond: bool,
        observed: fmt::Arguments<'_>,
    ) -> bool {
        with(|r| r.check_observed(check, cond, observed))
    }

    /// Prints `ok: <check> = <value>`.
    pub fn ok_value(check: impl fmt::Display, value: impl fmt::Display) {
        with(|r| r.ok_value(check, value));
    }

    /// `ok` with the value if `got == want`, else `fail` showing both.
    pub fn check_eq<T: PartialEq + fmt::Debug>(check: impl fmt::Display, got: T, want: T) -> bool {
        with(|r| r.check_eq(check, got, want))
    }

    /// `ok` if a hypercall returned `want`, else `fail` naming the errnos.
    pub fn check_ret(check: impl fmt::Display, got: i64, want: i64) -> bool {
        with(|r| r.check_ret(check, got, want))
    }

    /// `ok` if a hypercall returned one of `wanted`, else `fail`.
    pub fn check_ret_any(check: impl fmt::Display, got: i64, wanted: &[i64]) -> bool {
        with(|r| r.check_ret_any(check, got, wanted))
    }

    /// Prints only the result line for `status` (for tests that end the
    /// machine themselves right after it).
    pub fn print_result(status: Status) {
        let _ = super::write_result(&mut Console, status);
    }

    /// Prints `Test result: <STATUS>` and powers the guest off.
    pub fn finish() -> ! {
        print_result(status());
        crate::hypercall::shutdown(ShutdownReason::Poweroff)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::String;

    use super::*;

    #[test]
    fn status_only_escalates() {
        let mut r = Recorder::new(String::new());
        assert_eq!(r.status(), Status::Success);
        r.skip("a", format_args!("n/a"));
        assert_eq!(r.status(), Status::Skip);
        r.ok("b");
        assert_eq!(r.status(), Status::Skip);
        r.fail("c", format_args!("bad"));
        assert_eq!(r.status(), Status::Failure);
        r.error("d", format_args!("oops"));
        r.skip("e", format_args!("n/a"));
        assert_eq!(r.status(), Status::Failure);
        let mut e = Recorder::new(String::new());
        e.error("x", format_args!("y"));
        e.skip("z", format_args!("w"));
        assert_eq!(e.status(), Status::Error);
        assert!(Status::Success < Status::Skip && Status::Skip < Status::Error);
        assert!(Status::Error < Status::Failure);
        for s in [
            Status::Success,
            Status::Skip,
            Status::Error,
            Status::Failure,
        ] {
            assert_eq!(Status::from_raw(s.as_raw()), s);
        }
    }

    #[test]
    fn lines() {
        let mut r = Recorder::new(String::new());
        assert!(r.check_ret("unknown op", -38, -38));
        assert!(!r.check_ret("bad ptr", 0, -14));
        assert!(!r.check_eq("pagesize", 8192u64, 4096));
        r.skip("build_id", format_args!("{}", "not on this platform"));
        assert!(r.check_observed("time", true, format_args!("{} ns", 5)));
        assert!(!r.check_observed("order", false, format_args!("{} > {}", 2, 1)));
        assert_eq!(r.finish(), Status::Failure);
        assert_eq!(
            r.output().as_str(),
            "ok: unknown op = -38 (ENOSYS)\n\
             FAIL: bad ptr: got 0, want -14 (EFAULT)\n\
             FAIL: pagesize: got 8192, want 4096\n\
             SKIP: build_id (not on this platform)\n\
             ok: time: 5 ns\n\
             FAIL: order: 2 > 1\n\
             Test result: FAILURE\n"
        );
        let mut s = String::new();
        write_banner(&mut s, "pv-tests", "hello").unwrap();
        write_error(&mut s, "test", format_args!("unknown test \"x\"")).unwrap();
        assert_eq!(
            s,
            "--- pv-tests: hello ---\nERROR: test: unknown test \"x\"\n"
        );
    }

    #[test]
    fn ret_display() {
        assert_eq!(std::format!("{}", Ret(0)), "0");
        assert_eq!(std::format!("{}", Ret(-38)), "-38 (ENOSYS)");
        assert_eq!(std::format!("{}", Ret(-15)), "-15");
        assert_eq!(std::format!("{}", Ret(0x0004_0011)), "262161");
    }
}
