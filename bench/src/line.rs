//! The console lines of the benchmark guest, written by the guest and
//! parsed by `cargo xtask bench`.
//!
//! One line each, words separated by single spaces:
//!
//! | line | meaning |
//! |---|---|
//! | `BENCH <name> <unit> mean=<x> min=<y> n=<n>` | a result, per item (see [`crate::catalogue`]) |
//! | `BENCH <name> unsupported` | the platform answered `ENOSYS` to a hypercall the benchmark needs (or cannot run it at all) |
//! | `BENCH <name> failed` | something the benchmark checks went wrong (the guest's `FAIL:` line says what) |
//! | `BENCH-NOTE <name> <text>` | why a benchmark is unsupported or failed |
//! | `COUNTERS <name> per=<sample> <counter>=<x> ...` | hypervisor events per sample ([`crate::counters`]) |
//! | `counters unavailable: <why>` | the statistics hypercall is not there |
//! | `BENCH-INFO <key>=<value> ...` | platform, `rdtsc` overhead, iterations |
//!
//! `<x>` and `<y>` are decimals ([`Fixed`]). Parsing ignores carriage
//! returns and a Xen-style `(dN) ` prefix, and any line that is not one
//! of these (the guest's `ok:`/`FAIL:` lines, the hypervisors' logs).

#![forbid(unsafe_code)]

use core::fmt;

use crate::catalogue;
use crate::stats::{Fixed, Samples, Summary};

/// First word of a result line.
pub const BENCH: &str = "BENCH";
/// First word of an information line.
pub const BENCH_INFO: &str = "BENCH-INFO";
/// First word of a counters line.
pub const COUNTERS: &str = "COUNTERS";
/// First word of a note line.
pub const BENCH_NOTE: &str = "BENCH-NOTE";
/// The word that marks a benchmark the platform cannot run.
pub const UNSUPPORTED: &str = "unsupported";
/// The word that marks a benchmark that ran and went wrong.
pub const FAILED: &str = "failed";
/// Start of the line printed when the statistics hypercall is missing.
pub const COUNTERS_UNAVAILABLE: &str = "counters unavailable";

/// Writes `BENCH <name> <unit> mean=<x> min=<y> n=<n>`.
///
/// # Errors
/// Whatever `out` returns.
pub fn write_measured(
    out: &mut impl fmt::Write,
    name: &str,
    unit: &str,
    summary: &Summary,
) -> fmt::Result {
    writeln!(
        out,
        "{BENCH} {name} {unit} mean={} min={} n={}",
        summary.mean, summary.min, summary.n
    )
}

/// Writes the `BENCH` line of the catalogued benchmark `name` from its
/// `samples` ([`write_measured`] per item as [`catalogue`] says, or
/// [`write_failed`] without samples); nothing for a name not catalogued.
///
/// # Errors
/// Whatever `out` returns.
pub fn write_catalogued(out: &mut impl fmt::Write, name: &str, samples: &Samples) -> fmt::Result {
    let Some(bench) = catalogue::find(name) else {
        return Ok(());
    };
    match samples.summary(bench.items_per_sample) {
        Some(summary) => write_measured(out, name, bench.unit, &summary),
        None => write_failed(out, name),
    }
}

/// Writes `BENCH <name> unsupported`.
///
/// # Errors
/// Whatever `out` returns.
pub fn write_unsupported(out: &mut impl fmt::Write, name: &str) -> fmt::Result {
    writeln!(out, "{BENCH} {name} {UNSUPPORTED}")
}

/// Writes `BENCH <name> failed`.
///
/// # Errors
/// Whatever `out` returns.
pub fn write_failed(out: &mut impl fmt::Write, name: &str) -> fmt::Result {
    writeln!(out, "{BENCH} {name} {FAILED}")
}

/// Writes `BENCH-NOTE <name> <text>`.
///
/// # Errors
/// Whatever `out` returns.
pub fn write_note(out: &mut impl fmt::Write, name: &str, text: fmt::Arguments<'_>) -> fmt::Result {
    writeln!(out, "{BENCH_NOTE} {name} {text}")
}

/// Writes `COUNTERS <name> per=<sample>` and one `<counter>=<x>` per value
/// (counter names from [`crate::counters::name_of`]).
///
/// # Errors
/// Whatever `out` returns.
pub fn write_counters(
    out: &mut impl fmt::Write,
    name: &str,
    sample: &str,
    values: impl Iterator<Item = (usize, Fixed)>,
) -> fmt::Result {
    write!(out, "{COUNTERS} {name} per={sample}")?;
    for (index, value) in values {
        out.write_char(' ')?;
        crate::counters::name_of(index, out)?;
        write!(out, "={value}")?;
    }
    out.write_char('\n')
}

/// Writes `counters unavailable: <why>`.
///
/// # Errors
/// Whatever `out` returns.
pub fn write_counters_unavailable(
    out: &mut impl fmt::Write,
    why: fmt::Arguments<'_>,
) -> fmt::Result {
    writeln!(out, "{COUNTERS_UNAVAILABLE}: {why}")
}

/// Writes `BENCH-INFO <pairs>`; `pairs` is `key=value` words.
///
/// # Errors
/// Whatever `out` returns.
pub fn write_info(out: &mut impl fmt::Write, pairs: fmt::Arguments<'_>) -> fmt::Result {
    writeln!(out, "{BENCH_INFO} {pairs}")
}

/// The `key=value` words of a line (a word without `=` has an empty value).
#[derive(Clone, Debug)]
pub struct Pairs<'a> {
    words: core::str::SplitAsciiWhitespace<'a>,
}

impl<'a> Pairs<'a> {
    fn new(text: &'a str) -> Pairs<'a> {
        Pairs {
            words: text.split_ascii_whitespace(),
        }
    }

    /// The value of `key`, if present.
    #[must_use]
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.clone().find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        self.words
            .next()
            .map(|word| word.split_once('=').unwrap_or((word, "")))
    }
}

/// One parsed line.
#[derive(Clone, Debug)]
pub enum Line<'a> {
    /// `BENCH <name> <unit> mean= min= n=`.
    Measured {
        /// Benchmark name.
        name: &'a str,
        /// Unit of `summary`.
        unit: &'a str,
        /// Mean, minimum, count.
        summary: Summary,
    },
    /// `BENCH <name> unsupported`.
    Unsupported {
        /// Benchmark name.
        name: &'a str,
    },
    /// `BENCH <name> failed`.
    Failed {
        /// Benchmark name.
        name: &'a str,
    },
    /// `BENCH-NOTE <name> <text>`.
    Note {
        /// Benchmark name.
        name: &'a str,
        /// The note.
        text: &'a str,
    },
    /// `COUNTERS <name> per=<sample> ...`.
    Counters {
        /// Benchmark name.
        name: &'a str,
        /// What one sample is.
        per: &'a str,
        /// The `<counter>=<value>` words.
        values: Pairs<'a>,
    },
    /// `counters unavailable: <why>`.
    CountersUnavailable {
        /// The reason.
        why: &'a str,
    },
    /// `BENCH-INFO ...`.
    Info(Pairs<'a>),
}

/// The line without carriage returns and without a `(dN) ` prefix.
fn clean(line: &str) -> &str {
    let line = line.trim_matches('\r').trim_end();
    if let Some(rest) = line.strip_prefix("(d")
        && let Some((domid, text)) = rest.split_once(") ")
        && !domid.is_empty()
        && domid.bytes().all(|b| b.is_ascii_digit())
    {
        return text;
    }
    line
}

/// Parses a `BENCH` result after the word `BENCH`.
fn parse_bench(rest: &str) -> Option<Line<'_>> {
    let mut words = rest.split(' ');
    let name = words.next().filter(|n| !n.is_empty())?;
    let unit = words.next()?;
    if unit == UNSUPPORTED {
        return words.next().is_none().then_some(Line::Unsupported { name });
    }
    if unit == FAILED {
        return words.next().is_none().then_some(Line::Failed { name });
    }
    let mut field = |key: &str| words.next()?.strip_prefix(key)?.strip_prefix('=');
    let mean = Fixed::parse(field("mean")?)?;
    let min = Fixed::parse(field("min")?)?;
    let n = field("n")?.parse().ok()?;
    if words.next().is_some() {
        return None;
    }
    Some(Line::Measured {
        name,
        unit,
        summary: Summary { mean, min, n },
    })
}

/// Parses one console line; `None` for anything else.
#[must_use]
pub fn parse(line: &str) -> Option<Line<'_>> {
    let line = clean(line);
    if let Some(why) = line.strip_prefix(COUNTERS_UNAVAILABLE) {
        return Some(Line::CountersUnavailable {
            why: why.trim_start_matches(':').trim(),
        });
    }
    let (first, rest) = line.split_once(' ')?;
    match first {
        BENCH => parse_bench(rest),
        BENCH_INFO => Some(Line::Info(Pairs::new(rest))),
        BENCH_NOTE => {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            Some(Line::Note { name, text })
        }
        COUNTERS => {
            let (name, rest) = rest.split_once(' ')?;
            let (per, values) = rest.split_once(' ').unwrap_or((rest, ""));
            Some(Line::Counters {
                name,
                per: per.strip_prefix("per=")?,
                values: Pairs::new(values),
            })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::string::String;
    use std::vec::Vec;

    use super::*;

    fn summary(mean: &str, min: &str, n: u64) -> Summary {
        Summary {
            mean: Fixed::parse(mean).unwrap(),
            min: Fixed::parse(min).unwrap(),
            n,
        }
    }

    #[test]
    fn measured_round_trip() {
        let mut out = String::new();
        write_measured(
            &mut out,
            "null_hypercall",
            "tsc/call",
            &summary("283.0", "283.0", 1000),
        )
        .unwrap();
        assert_eq!(
            out,
            "BENCH null_hypercall tsc/call mean=283.0 min=283.0 n=1000\n"
        );
        let Some(Line::Measured {
            name,
            unit,
            summary: s,
        }) = parse(out.trim_end())
        else {
            panic!("not parsed: {out}");
        };
        assert_eq!((name, unit), ("null_hypercall", "tsc/call"));
        assert_eq!(s, summary("283.0", "283.0", 1000));
    }

    #[test]
    fn unsupported_round_trip() {
        let mut out = String::new();
        write_unsupported(&mut out, "mmu_update_64").unwrap();
        assert_eq!(out, "BENCH mmu_update_64 unsupported\n");
        assert!(matches!(
            parse(&out),
            Some(Line::Unsupported {
                name: "mmu_update_64"
            })
        ));
        assert!(parse("BENCH x unsupported extra").is_none());
        let mut out = String::new();
        write_failed(&mut out, "page_fault").unwrap();
        write_note(
            &mut out,
            "page_fault",
            format_args!("set_trap_table returned -38 (ENOSYS)"),
        )
        .unwrap();
        let mut lines = out.lines();
        assert!(matches!(
            parse(lines.next().unwrap()),
            Some(Line::Failed { name: "page_fault" })
        ));
        assert!(matches!(
            parse(lines.next().unwrap()),
            Some(Line::Note {
                name: "page_fault",
                text: "set_trap_table returned -38 (ENOSYS)"
            })
        ));
    }

    #[test]
    fn counters_round_trip() {
        let mut out = String::new();
        let values = [
            (0, Fixed::parse("1.00").unwrap()),
            (5, Fixed::parse("2.00").unwrap()),
            (15, Fixed::parse("0.50").unwrap()),
        ];
        write_counters(&mut out, "null_hypercall", "call", values.into_iter()).unwrap();
        assert_eq!(
            out,
            "COUNTERS null_hypercall per=call entries=1.00 cr3_writes=2.00 c15=0.50\n"
        );
        let Some(Line::Counters { name, per, values }) = parse(&out) else {
            panic!("not parsed");
        };
        assert_eq!((name, per), ("null_hypercall", "call"));
        assert_eq!(values.get("cr3_writes"), Some("2.00"));
        assert_eq!(values.count(), 3);
        let mut out = String::new();
        write_counters_unavailable(&mut out, format_args!("stats_op returned -38 (ENOSYS)"))
            .unwrap();
        assert!(matches!(
            parse(&out),
            Some(Line::CountersUnavailable {
                why: "stats_op returned -38 (ENOSYS)"
            })
        ));
    }

    #[test]
    fn info_and_noise() {
        let mut out = String::new();
        write_info(&mut out, format_args!("platform=xen rdtsc_overhead=5")).unwrap();
        let Some(Line::Info(pairs)) = parse(&out) else {
            panic!("not parsed");
        };
        assert_eq!(pairs.get("platform"), Some("xen"));
        assert_eq!(pairs.get("rdtsc_overhead"), Some("5"));
        assert_eq!(pairs.get("missing"), None);
        for noise in [
            "(XEN) BENCH null_hypercall tsc/call mean=1.0 min=1.0 n=1",
            "(HV) starting dom0",
            "ok: null_hypercall returns 4.17",
            "BENCH",
            "BENCH null_hypercall tsc/call mean=1.0 min=x n=1",
            "BENCH null_hypercall tsc/call mean=1.0 min=1.0",
            "BENCH null_hypercall tsc/call mean=1.0 min=1.0 n=1 more",
            "COUNTERS x entries=1",
        ] {
            assert!(parse(noise).is_none(), "{noise}");
        }
        let names: Vec<&str> = [
            "(d0) BENCH a tsc/call mean=1.0 min=1.0 n=1\r",
            "BENCH b unsupported\r",
        ]
        .iter()
        .filter_map(|l| match parse(l) {
            Some(Line::Measured { name, .. } | Line::Unsupported { name }) => Some(name),
            _ => None,
        })
        .collect();
        assert_eq!(names, ["a", "b"]);
    }
}
