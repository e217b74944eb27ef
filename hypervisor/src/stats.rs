//! Per-vCPU event counters for `stats_op` (`dom0_abi::stats`). Without the
//! `stats` feature the counters do not exist and counting compiles to
//! nothing, so ordinary builds pay no instruction for them.
#![forbid(unsafe_code)]

use dom0_abi::stats::Counter;
#[cfg(feature = "stats")]
use dom0_abi::stats::STATS_MAX_COUNTERS;

/// One vCPU's counters.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    #[cfg(feature = "stats")]
    counters: [u64; STATS_MAX_COUNTERS],
}

impl Stats {
    /// Counters that were never counted.
    pub const EMPTY: Stats = Stats {
        #[cfg(feature = "stats")]
        counters: [0; STATS_MAX_COUNTERS],
    };

    /// Whether this build counts at all.
    pub const ENABLED: bool = cfg!(feature = "stats");

    /// Adds `n` to `counter`.
    #[inline(always)]
    pub fn add(&mut self, counter: Counter, n: u64) {
        #[cfg(feature = "stats")]
        {
            let slot = &mut self.counters[counter as usize];
            *slot = slot.wrapping_add(n);
        }
        #[cfg(not(feature = "stats"))]
        let _ = (counter, n);
    }

    /// The value of `counter` (always 0 without the feature).
    pub fn get(&self, counter: Counter) -> u64 {
        #[cfg(feature = "stats")]
        return self.counters[counter as usize];
        #[cfg(not(feature = "stats"))]
        {
            let _ = counter;
            0
        }
    }
}
