//! The benchmark guest's command line.
//!
//! | option | default | meaning |
//! |---|---|---|
//! | `iters=<n>` | [`DEFAULT_ITERS`] | timed samples per benchmark (at least 1) |
//! | `warmup=<n>` | `iters / 10`, at least 1 | untimed runs before the timed ones |
//! | `only=<a>,<b>` | all | run only these benchmarks (names from the catalogue) |
//! | `trace=<name>` | none | call the trace markers around one extra sample of `<name>` (after the warm-up), for `cargo xtask bench --trace` |
//!
//! A malformed value is an error naming the option, never silently
//! replaced by the default.

#![forbid(unsafe_code)]

use core::fmt;

use guest_pv_shim::cmdline;

use crate::catalogue;

/// Timed samples per benchmark when `iters=` is absent.
pub const DEFAULT_ITERS: u32 = 1000;

/// Largest accepted `iters=` / `warmup=` (keeps every benchmark's run time
/// bounded and every sum far from overflow).
pub const MAX_ITERS: u32 = 1_000_000;

/// The parsed command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options<'a> {
    /// Timed samples per benchmark.
    pub iters: u32,
    /// Untimed warm-up runs per benchmark.
    pub warmup: u32,
    only: Option<&'a [u8]>,
    trace: Option<&'a [u8]>,
}

/// A bad option.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OptionError<'a> {
    /// `iters=` or `warmup=` is not a number in range.
    BadNumber {
        /// The option.
        option: &'static str,
        /// Its value.
        value: &'a [u8],
    },
    /// `only=` names a benchmark that does not exist.
    UnknownBenchmark(&'a [u8]),
}

/// `bytes` as text for messages.
fn as_text(bytes: &[u8]) -> &str {
    core::str::from_utf8(bytes).unwrap_or("<not UTF-8>")
}

impl fmt::Display for OptionError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OptionError::BadNumber { option, value } => write!(
                f,
                "{option}: expected a number from 1 to {MAX_ITERS}, got '{}'",
                as_text(value)
            ),
            OptionError::UnknownBenchmark(name) => {
                write!(f, "no benchmark called '{}'", as_text(name))
            }
        }
    }
}

/// A number from 1 to [`MAX_ITERS`].
fn count<'a>(option: &'static str, value: &'a [u8]) -> Result<u32, OptionError<'a>> {
    core::str::from_utf8(value)
        .ok()
        .and_then(|s| s.parse::<u32>().ok())
        .filter(|n| (1..=MAX_ITERS).contains(n))
        .ok_or(OptionError::BadNumber { option, value })
}

impl<'a> Options<'a> {
    /// Parses `cmdline` (see the module docs).
    ///
    /// # Errors
    /// The first bad option.
    pub fn parse(cmdline: &'a [u8]) -> Result<Options<'a>, OptionError<'a>> {
        let iters = match cmdline::option(cmdline, b"iters") {
            Some(value) => count("iters", value)?,
            None => DEFAULT_ITERS,
        };
        let warmup = match cmdline::option(cmdline, b"warmup") {
            Some(value) => count("warmup", value)?,
            None => (iters / 10).max(1),
        };
        let only = cmdline::option(cmdline, b"only");
        let trace = cmdline::option(cmdline, b"trace");
        let named = only
            .into_iter()
            .flat_map(|list| list.split(|&b| b == b','))
            .chain(trace);
        for name in named {
            let known = core::str::from_utf8(name)
                .ok()
                .and_then(catalogue::find)
                .is_some();
            if !known {
                return Err(OptionError::UnknownBenchmark(name));
            }
        }
        Ok(Options {
            iters,
            warmup,
            only,
            trace,
        })
    }

    /// Whether benchmark `name` is the one to trace.
    #[must_use]
    pub fn traces(&self, name: &str) -> bool {
        self.trace == Some(name.as_bytes())
    }

    /// Whether benchmark `name` is to run.
    #[must_use]
    pub fn selects(&self, name: &str) -> bool {
        self.only
            .is_none_or(|list| list.split(|&b| b == b',').any(|n| n == name.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::string::ToString;

    use super::*;

    #[test]
    fn defaults() {
        let o = Options::parse(b"").unwrap();
        assert_eq!((o.iters, o.warmup), (DEFAULT_ITERS, DEFAULT_ITERS / 10));
        assert!(o.selects("null_hypercall"));
        let o = Options::parse(b"iters=4").unwrap();
        assert_eq!((o.iters, o.warmup), (4, 1));
    }

    #[test]
    fn explicit_values_and_selection() {
        let o = Options::parse(b"iters=50 warmup=5 only=null_hypercall,mmu_update_8").unwrap();
        assert_eq!((o.iters, o.warmup), (50, 5));
        assert!(o.selects("null_hypercall"));
        assert!(o.selects("mmu_update_8"));
        assert!(!o.selects("mmu_update_1"));
        assert!(!o.traces("null_hypercall"));
        let o = Options::parse(b"trace=page_fault").unwrap();
        assert!(o.traces("page_fault") && !o.traces("null_hypercall"));
    }

    #[test]
    fn errors_name_the_option() {
        for (line, msg) in [
            (
                &b"iters=0"[..],
                "iters: expected a number from 1 to 1000000, got '0'",
            ),
            (
                b"iters=lots",
                "iters: expected a number from 1 to 1000000, got 'lots'",
            ),
            (
                b"warmup=2000000",
                "warmup: expected a number from 1 to 1000000, got '2000000'",
            ),
            (b"only=null_hypercall,bogus", "no benchmark called 'bogus'"),
            (b"trace=bogus", "no benchmark called 'bogus'"),
        ] {
            assert_eq!(Options::parse(line).unwrap_err().to_string(), msg);
        }
    }
}
