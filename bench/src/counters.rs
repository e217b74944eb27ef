//! Hypervisor event counters: what an instruction count hides.
//!
//! The interface is defined in `dom0_abi::stats` (re-exported here) and
//! implemented by hypervisor builds with the `stats` feature, which
//! `cargo xtask bench` turns on; Xen answers `ENOSYS`, and the guest then
//! prints `counters unavailable`.
//!
//! # Interface
//!
//! `stats_op(cmd, arg)`, hypercall [`HYPERCALL_STATS_OP`] (a number Xen
//! has never assigned, inside the hypercall page, so the guest calls it
//! through the page on both hypervisors). Compiled into benchmark builds
//! only; other builds return `ENOSYS`.
//!
//! - `cmd` = [`STATSOP_READ_VCPU`]: `arg` points to a [`StatsBuffer`]
//!   (IN `version` = [`STATS_INTERFACE_VERSION`], IN `nr_counters` = how
//!   many `counters` the buffer has room for; OUT `nr_counters` = how many
//!   were written, the first ones in [`Counter`] order). Returns 0.
//! - `EINVAL`: wrong `version`. `EFAULT`: `arg` unreadable or unwritable.
//!   `ENOSYS`: unknown `cmd`, or a build without statistics.
//!
//! Counters are per vCPU, `u64`, monotonic from the vCPU's creation
//! (wrapping), counted by the hypervisor on behalf of the vCPU that was
//! running. The copy is taken during the call, so it includes the call's
//! own entry but not its exit.
//!
//! # Reading a delta
//!
//! Read once before and once after the timed loop; the difference, minus
//! the difference of two back-to-back reads (the second read's entry and
//! the first one's exit, [`Snapshot::minus`]), divided by the number of
//! samples, is what one sample cost in hypervisor events.

#![forbid(unsafe_code)]

pub use dom0_abi::stats::{
    Counter, HIDDEN_COSTS, HYPERCALL_STATS_OP, STATS_INTERFACE_VERSION, STATS_MAX_COUNTERS,
    STATSOP_READ_VCPU, StatsBuffer,
};

/// The name of counter `index`: its [`Counter`] name, or `c<index>` for
/// one this guest does not know.
pub fn name_of(index: usize, out: &mut impl core::fmt::Write) -> core::fmt::Result {
    match Counter::ALL.get(index) {
        Some(counter) => out.write_str(counter.name()),
        None => write!(out, "c{index}"),
    }
}

/// Counter values copied out of a [`StatsBuffer`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot {
    values: [u64; STATS_MAX_COUNTERS],
    len: usize,
}

impl Snapshot {
    /// The counters the hypervisor wrote into `buffer`.
    #[must_use]
    pub fn from_buffer(buffer: &StatsBuffer) -> Snapshot {
        let len = usize::try_from(buffer.nr_counters)
            .unwrap_or(STATS_MAX_COUNTERS)
            .min(STATS_MAX_COUNTERS);
        Snapshot {
            values: buffer.counters,
            len,
        }
    }

    /// Number of counters.
    #[must_use]
    pub const fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The counters as a slice, by index.
    #[must_use]
    pub fn values(&self) -> &[u64] {
        &self.values[..self.len]
    }

    /// `self - earlier`, counter by counter (wrapping, as the counters do).
    #[must_use]
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        let len = self.len.min(earlier.len);
        let mut values = [0; STATS_MAX_COUNTERS];
        for (i, v) in values.iter_mut().enumerate().take(len) {
            *v = self.values[i].wrapping_sub(earlier.values[i]);
        }
        Snapshot { values, len }
    }

    /// A delta minus the `baseline` delta of two back-to-back reads,
    /// saturating at zero.
    #[must_use]
    pub fn minus(&self, baseline: &Snapshot) -> Snapshot {
        let len = self.len.min(baseline.len);
        let mut values = [0; STATS_MAX_COUNTERS];
        for (i, v) in values.iter_mut().enumerate().take(len) {
            *v = self.values[i].saturating_sub(baseline.values[i]);
        }
        Snapshot { values, len }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::string::String;

    use super::*;

    fn snapshot(values: &[u64]) -> Snapshot {
        let mut buffer = StatsBuffer::request();
        buffer.nr_counters = u32::try_from(values.len()).unwrap();
        buffer.counters[..values.len()].copy_from_slice(values);
        Snapshot::from_buffer(&buffer)
    }

    #[test]
    fn counters_are_indexed_in_order() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
        assert!(Counter::ALL.len() <= STATS_MAX_COUNTERS);
        let mut name = String::new();
        name_of(5, &mut name).unwrap();
        assert_eq!(name, "cr3_writes");
        name.clear();
        name_of(15, &mut name).unwrap();
        assert_eq!(name, "c15");
    }

    #[test]
    fn deltas_wrap_and_baselines_saturate() {
        let before = snapshot(&[u64::MAX, 10, 3]);
        let after = snapshot(&[1, 30, 3]);
        let delta = after.since(&before);
        assert_eq!(delta.values(), [2, 20, 0]);
        let baseline = snapshot(&[1, 2, 1]);
        assert_eq!(delta.minus(&baseline).values(), [1, 18, 0]);
        let shorter = snapshot(&[5]);
        assert_eq!(after.since(&shorter).len(), 1);
    }

    #[test]
    fn a_buffer_cannot_claim_more_than_it_holds() {
        let mut buffer = StatsBuffer::request();
        buffer.nr_counters = 1000;
        assert_eq!(Snapshot::from_buffer(&buffer).len(), STATS_MAX_COUNTERS);
        buffer.nr_counters = 0;
        assert!(Snapshot::from_buffer(&buffer).is_empty());
    }
}
