//! Which log lines reach the console: `loglvl=` for the hypervisor's own
//! messages, `guest_loglvl=` for messages a guest causes (their `log`
//! target is [`GUEST`]), each with Xen's two thresholds.
//!
//! A line at or above a setting's first level is always printed; one
//! below it but at or above the second (rate-limited) level is printed
//! while its setting's budget lasts ([`BURST`] lines per [`WINDOW_MS`]);
//! anything below both is dropped. The budget is what stops a guest that
//! crashes domains or sends itself NMIs in a loop from flooding the
//! serial line: with the default `guest_loglvl=none/warning`, every
//! guest message is rate-limited and those below `warning` are dropped.
//! When a window ends with lines held back, the next printed line of
//! that setting is preceded by a count of them, so nothing is lost
//! silently.

#![forbid(unsafe_code)]

use log::{Level, LevelFilter};

use crate::cmdline::LogLevels;

/// The `log` target of messages a guest causes (`log::error!(target:
/// GUEST, ...)`): they follow `guest_loglvl=`.
pub const GUEST: &str = "guest";

/// Rate-limited lines printed per window at most (Xen's figure).
pub const BURST: u32 = 10;

/// The length of a rate-limiting window, in milliseconds (Xen's figure).
pub const WINDOW_MS: u64 = 5000;

/// What to do with one line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Print it, after saying that `suppressed` lines of this setting were
    /// held back since the last one printed (when not zero).
    Print {
        /// Lines dropped by the rate limit before this one.
        suppressed: u32,
    },
    /// Drop it.
    Drop,
}

/// One setting (`loglvl` or `guest_loglvl`) and its rate-limiting state.
#[derive(Clone, Copy, Debug)]
pub struct Setting {
    levels: LogLevels,
    window_start_ms: u64,
    printed: u32,
    suppressed: u32,
}

impl Setting {
    /// A setting with a fresh budget.
    pub const fn new(levels: LogLevels) -> Self {
        Setting {
            levels,
            window_start_ms: 0,
            printed: 0,
            suppressed: 0,
        }
    }

    /// The most verbose level this setting can print.
    pub fn max_level(&self) -> LevelFilter {
        self.levels.level.max(self.levels.rate_limited)
    }

    /// The verdict on a line of `level` at `now_ms` (milliseconds since
    /// boot; any monotonic clock).
    pub fn decide(&mut self, level: Level, now_ms: u64) -> Verdict {
        if level <= self.levels.level {
            return Verdict::Print {
                suppressed: core::mem::take(&mut self.suppressed),
            };
        }
        if level > self.levels.rate_limited {
            return Verdict::Drop;
        }
        if now_ms.saturating_sub(self.window_start_ms) >= WINDOW_MS {
            self.window_start_ms = now_ms;
            self.printed = 0;
        }
        if self.printed < BURST {
            self.printed += 1;
            Verdict::Print {
                suppressed: core::mem::take(&mut self.suppressed),
            }
        } else {
            self.suppressed = self.suppressed.saturating_add(1);
            Verdict::Drop
        }
    }
}

/// Both settings: the hypervisor's and the guests'.
#[derive(Clone, Copy, Debug)]
pub struct LogFilter {
    hypervisor: Setting,
    guest: Setting,
}

impl LogFilter {
    /// The filter for `loglvl` and `guest_loglvl`.
    pub const fn new(loglvl: LogLevels, guest_loglvl: LogLevels) -> Self {
        LogFilter {
            hypervisor: Setting::new(loglvl),
            guest: Setting::new(guest_loglvl),
        }
    }

    /// The most verbose level either setting can print (what the `log`
    /// crate's global filter must let through).
    pub fn max_level(&self) -> LevelFilter {
        self.hypervisor.max_level().max(self.guest.max_level())
    }

    /// The verdict on a line of `level` with `log` target `target`.
    pub fn decide(&mut self, target: &str, level: Level, now_ms: u64) -> Verdict {
        if target == GUEST {
            self.guest.decide(level, now_ms)
        } else {
            self.hypervisor.decide(level, now_ms)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmdline::parse_log_levels;

    fn setting(value: &str) -> Setting {
        Setting::new(parse_log_levels(value).expect("valid levels"))
    }

    #[test]
    fn first_level_always_prints() {
        let mut s = setting("warning");
        for _ in 0..100 {
            assert_eq!(s.decide(Level::Error, 0), Verdict::Print { suppressed: 0 });
        }
        assert_eq!(s.decide(Level::Info, 0), Verdict::Drop);
    }

    #[test]
    fn rate_limited_level_prints_a_burst_per_window_then_counts_the_rest() {
        let mut s = setting("none/warning");
        for _ in 0..BURST {
            assert_eq!(s.decide(Level::Warn, 100), Verdict::Print { suppressed: 0 });
        }
        assert_eq!(s.decide(Level::Error, 200), Verdict::Drop);
        assert_eq!(s.decide(Level::Warn, 300), Verdict::Drop);
        assert_eq!(s.decide(Level::Info, 300), Verdict::Drop);
        assert_eq!(
            s.decide(Level::Warn, 100 + WINDOW_MS),
            Verdict::Print { suppressed: 2 }
        );
        assert_eq!(
            s.decide(Level::Warn, 100 + WINDOW_MS),
            Verdict::Print { suppressed: 0 }
        );
    }

    #[test]
    fn an_unconditional_line_reports_what_the_limit_held_back() {
        let mut s = setting("error/info");
        for _ in 0..=BURST {
            s.decide(Level::Info, 0);
        }
        assert_eq!(s.decide(Level::Error, 1), Verdict::Print { suppressed: 1 });
    }

    #[test]
    fn guest_target_follows_guest_loglvl() {
        let mut f = LogFilter::new(
            parse_log_levels("info").expect("valid"),
            parse_log_levels("none/warning").expect("valid"),
        );
        assert_eq!(f.max_level(), LevelFilter::Info);
        assert_eq!(
            f.decide("hypervisor", Level::Info, 0),
            Verdict::Print { suppressed: 0 }
        );
        assert_eq!(f.decide(GUEST, Level::Info, 0), Verdict::Drop);
        assert_eq!(
            f.decide(GUEST, Level::Error, 0),
            Verdict::Print { suppressed: 0 }
        );
    }

    #[test]
    fn none_drops_everything() {
        let mut s = setting("none");
        assert_eq!(s.max_level(), LevelFilter::Off);
        assert_eq!(s.decide(Level::Error, 0), Verdict::Drop);
    }
}
