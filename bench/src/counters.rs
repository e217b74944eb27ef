//! Hypervisor event counters: what an instruction count hides.
//!
//! **A proposal.** No hypervisor implements this interface yet: this one
//! answers `ENOSYS` to [`HYPERCALL_STATS_OP`] today and Xen always will,
//! and the guest then prints `counters unavailable`. The layout below is
//! what the guest reads once benchmark builds of this hypervisor provide
//! it (`docs/performance.md`, "Hypervisor counters"); when it moves into
//! `dom0-abi`, this module should re-export it from there.
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

/// Proposed hypercall number of `stats_op`: unassigned in Xen 4.17 (which
/// answers `ENOSYS`), inside the 128-slot hypercall page.
pub const HYPERCALL_STATS_OP: u32 = 63;

/// `stats_op` command: copy the calling vCPU's counters.
pub const STATSOP_READ_VCPU: u64 = 0;

/// Interface version the guest asks for.
pub const STATS_INTERFACE_VERSION: u32 = 1;

/// Room for counters in a [`StatsBuffer`].
pub const STATS_MAX_COUNTERS: usize = STATS_MAX_COUNTERS_U32 as usize;

/// [`STATS_MAX_COUNTERS`] as the type of [`StatsBuffer::nr_counters`].
pub const STATS_MAX_COUNTERS_U32: u32 = 16;

/// `struct stats_buffer` (136 bytes), the argument of
/// [`STATSOP_READ_VCPU`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatsBuffer {
    /// IN: [`STATS_INTERFACE_VERSION`].
    pub version: u32,
    /// IN: room in `counters`; OUT: counters written.
    pub nr_counters: u32,
    /// OUT: counter values, indexed by [`Counter`].
    pub counters: [u64; STATS_MAX_COUNTERS],
}

impl StatsBuffer {
    /// A buffer asking for every counter.
    #[must_use]
    pub const fn request() -> StatsBuffer {
        StatsBuffer {
            version: STATS_INTERFACE_VERSION,
            nr_counters: STATS_MAX_COUNTERS_U32,
            counters: [0; STATS_MAX_COUNTERS],
        }
    }
}

const _: () = assert!(core::mem::size_of::<StatsBuffer>() == 136);
const _: () = assert!(core::mem::offset_of!(StatsBuffer, nr_counters) == 4);
const _: () = assert!(core::mem::offset_of!(StatsBuffer, counters) == 8);

/// Declares [`Counter`] with its names.
macro_rules! counters {
    ($($(#[$doc:meta])* $variant:ident = $index:literal, $name:literal;)*) => {
        /// A counter's index in [`StatsBuffer::counters`].
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Counter {
            $($(#[$doc])* $variant = $index,)*
        }

        impl Counter {
            /// Every counter, by index.
            pub const ALL: &'static [Counter] = &[$(Counter::$variant),*];

            /// Its name on the console lines.
            #[must_use]
            pub const fn name(self) -> &'static str {
                match self {
                    $(Counter::$variant => $name,)*
                }
            }
        }
    };
}

counters! {
    /// Every switch from the guest into the hypervisor (hypercall,
    /// exception, interrupt).
    Entries = 0, "entries";
    /// Hypercall entries (`int $0x82`); a multicall counts once.
    Hypercalls = 1, "hypercalls";
    /// CPU exceptions taken from the guest (emulated or bounced).
    Exceptions = 2, "exceptions";
    /// External interrupts (timer, IPIs, devices) taken while the vCPU ran.
    Interrupts = 3, "interrupts";
    /// Frames built on the guest stack: exceptions, events, syscalls
    /// delivered to the guest kernel.
    Bounces = 4, "bounces";
    /// Every CR3 write while the vCPU was current (the guest-view /
    /// hypervisor-view switch on entry and exit counts here).
    Cr3Writes = 5, "cr3_writes";
    /// The CR3 writes that flushed the non-global TLB (no PCID, or PCID
    /// without the no-flush bit).
    Cr3Flushing = 6, "cr3_flushing";
    /// Explicit full TLB flushes (not counting flushing CR3 writes).
    TlbFlushes = 7, "tlb_flushes";
    /// Single-address invalidations (`INVLPG`, `INVPCID` type 0).
    Invlpgs = 8, "invlpgs";
    /// IPIs sent on the vCPU's behalf.
    Ipis = 9, "ipis";
    /// Page-table entries validated (`mmu_update`, `update_va_mapping`,
    /// pinning).
    PteValidations = 10, "pte_validations";
    /// TSC ticks from entry to exit, summed (under `-icount shift=0`:
    /// hypervisor instructions).
    HypervisorTsc = 11, "hv_tsc";
    /// Of [`Counter::HypervisorTsc`]: from the entry vector to the start of
    /// the handler (the view switch and register save).
    HypervisorTscEntry = 12, "hv_tsc_entry";
    /// Of [`Counter::HypervisorTsc`]: from the end of the handler to the
    /// return instruction.
    HypervisorTscExit = 13, "hv_tsc_exit";
}

/// The counters the issue asks to show next to each instruction count.
pub const HIDDEN_COSTS: &[Counter] = &[
    Counter::Entries,
    Counter::Cr3Writes,
    Counter::TlbFlushes,
    Counter::Invlpgs,
    Counter::Ipis,
];

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
