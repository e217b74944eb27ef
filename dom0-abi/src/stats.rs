//! `stats_op` (hypercall 63): event counters for benchmarks.
//!
//! Not part of Xen's ABI. A hypervisor built with its `stats` feature
//! counts, per vCPU, what an instruction count hides: entries into the
//! hypervisor, CR3 writes, TLB flushes and so on. A benchmark guest reads
//! them before and after its timed loop and divides the difference by the
//! number of samples (minus the difference of two back-to-back reads, since
//! a read is itself an entry). Without the feature every call is `ENOSYS`,
//! as on Xen.
//!
//! `stats_op(STATSOP_READ_VCPU, arg)`, `arg` → [`StatsBuffer`]:
//! - IN `version` = [`STATS_INTERFACE_VERSION`], IN `nr_counters` = room;
//! - OUT `nr_counters` = how many counters were written (the first
//!   `nr_counters` of [`Counter`], in order), OUT `counters`.
//!
//! Errors: `EINVAL` for another version, `EFAULT` for an unreadable or
//! unwritable buffer, `ENOSYS` for another command or a build without the
//! feature. Any domain may call it.
#![forbid(unsafe_code)]

/// `stats_op`'s hypercall number.
pub const HYPERCALL_STATS_OP: u32 = 63;
/// Reads the calling vCPU's counters.
pub const STATSOP_READ_VCPU: u64 = 0;
/// The layout version of [`StatsBuffer`].
pub const STATS_INTERFACE_VERSION: u32 = 1;
/// Room for counters in [`StatsBuffer`].
pub const STATS_MAX_COUNTERS: usize = 16;

/// The argument of `STATSOP_READ_VCPU` (136 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StatsBuffer {
    /// IN: [`STATS_INTERFACE_VERSION`].
    pub version: u32,
    /// IN: counters the buffer has room for; OUT: counters written.
    pub nr_counters: u32,
    /// OUT: the counters, indexed by [`Counter`].
    pub counters: [u64; STATS_MAX_COUNTERS],
}

impl StatsBuffer {
    /// A request for every counter.
    #[must_use]
    pub const fn request() -> StatsBuffer {
        #[allow(clippy::cast_possible_truncation, reason = "16 fits in u32")]
        StatsBuffer {
            version: STATS_INTERFACE_VERSION,
            nr_counters: STATS_MAX_COUNTERS as u32,
            counters: [0; STATS_MAX_COUNTERS],
        }
    }
}

crate::assert_layout!(StatsBuffer, 136, { version: 0, nr_counters: 4, counters: 8 });

macro_rules! counters {
    ($($(#[$doc:meta])* $variant:ident = $index:literal, $name:literal;)*) => {
        /// The counters, in buffer order.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Counter {
            $($(#[$doc])* $variant = $index,)*
        }

        impl Counter {
            /// Every counter, in buffer order.
            pub const ALL: &'static [Counter] = &[$(Counter::$variant),*];

            /// The counter's short name.
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
    /// Entries into the hypervisor from the guest (any vector, SYSCALL).
    Entries = 0, "entries";
    /// Hypercalls (a multicall counts once).
    Hypercalls = 1, "hypercalls";
    /// Exceptions from the guest, emulated instructions included.
    Exceptions = 2, "exceptions";
    /// External interrupts that arrived while the guest ran.
    Interrupts = 3, "interrupts";
    /// Bounce frames written (exceptions, software interrupts, SYSCALL, events).
    Bounces = 4, "bounces";
    /// CR3 writes (two per entry/exit pair: into and out of the hypervisor view).
    Cr3Writes = 5, "cr3_writes";
    /// CR3 writes that flush non-global TLB entries of the loaded PCID.
    Cr3Flushing = 6, "cr3_flushing";
    /// Full TLB flushes requested by memory operations.
    TlbFlushes = 7, "tlb_flushes";
    /// Single-page invalidations requested by memory operations.
    Invlpgs = 8, "invlpgs";
    /// Inter-processor interrupts sent.
    Ipis = 9, "ipis";
    /// Page-table entries validated.
    PteValidations = 10, "pte_validations";
    /// Time-stamp counter ticks spent in the hypervisor's Rust code (under
    /// `-icount`: instructions).
    HypervisorTsc = 11, "hv_tsc";
}

/// The counters that name costs an instruction count does not show.
pub const HIDDEN_COSTS: &[Counter] = &[
    Counter::Entries,
    Counter::Cr3Writes,
    Counter::TlbFlushes,
    Counter::Invlpgs,
    Counter::Ipis,
];
