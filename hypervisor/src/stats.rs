//! Per-vCPU event counters for `stats_op` (`dom0_abi::stats`). Without the
//! `stats` feature the counters do not exist and counting compiles to
//! nothing, so ordinary builds pay no instruction for them.
#![forbid(unsafe_code)]

use dom0_abi::stats::Counter;
#[cfg(feature = "stats")]
use dom0_abi::stats::STATS_MAX_COUNTERS;

/// CR3 writes of every entry: one switching to the hypervisor's view, one
/// switching back on the exit.
#[cfg(feature = "stats")]
const CR3_WRITES_PER_ENTRY: u64 = 2;

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

    /// The value of `counter` (always 0 without the feature). Every entry
    /// writes CR3 twice, both writes flushing: those are counted here from
    /// `Entries` rather than on every entry; `Cr3Writes` and `Cr3Flushing`
    /// themselves hold only writes beyond them.
    pub fn get(&self, counter: Counter) -> u64 {
        #[cfg(feature = "stats")]
        {
            let per_entry = match counter {
                Counter::Cr3Writes | Counter::Cr3Flushing => {
                    CR3_WRITES_PER_ENTRY.wrapping_mul(self.counters[Counter::Entries as usize])
                }
                _ => 0,
            };
            return self.counters[counter as usize].wrapping_add(per_entry);
        }
        #[cfg(not(feature = "stats"))]
        {
            let _ = counter;
            0
        }
    }
}
