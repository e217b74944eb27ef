//! What a batch of memory operations asks the machine to do afterwards.
//!
//! Memory-management operations never flush a TLB or reload a root table
//! themselves. They record what is needed in an [`Effects`] value, which
//! accumulates over a whole batch (an `mmu_update` array, an `mmuext_op`
//! array, a `multicall`) and which `arch` carries out once, before the
//! guest runs again:
//!
//! 1. resync the per-CPU guest views if [`RootSync`] says so (copy the
//!    guest slots of the vCPU's L4 again; on other CPUs running the domain
//!    as well when `others` is set);
//! 2. reload the LDT if `ldt_changed`;
//! 3. flush TLBs as [`Flush`] says (`local` on this CPU, `domain` on every
//!    CPU that may hold entries of the domain, this one included);
//! 4. write back caches as [`CacheFlush`] says;
//! 5. crash the domain if `crash` is set.
//!
//! Deferring is safe on one CPU because the guest cannot run while the
//! batch is processed. With several vCPUs of a domain running at once, the
//! `domain` flushes that come from a type change of a frame (see
//! `docs/memory.md`) must reach the other CPUs before the batch goes on;
//! `arch` must then flush synchronously when [`Effects::stale_writable`]
//! becomes true.
#![forbid(unsafe_code)]

/// How many single-page invalidations a [`TlbFlush`] keeps before it
/// turns into a full flush.
pub const MAX_INVLPG: usize = 16;

/// A TLB flush on one set of CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TlbFlush {
    /// Nothing to flush.
    #[default]
    None,
    /// Invalidate these linear addresses (the first `count` of `va`).
    Pages {
        /// Entries of `va` in use.
        count: u8,
        /// The addresses.
        va: [u64; MAX_INVLPG],
    },
    /// Flush every non-global entry.
    Full,
}

impl TlbFlush {
    /// Adds one address; more than [`MAX_INVLPG`] become a full flush.
    pub fn add_page(&mut self, addr: u64) {
        match self {
            TlbFlush::None => {
                let mut va = [0; MAX_INVLPG];
                va[0] = addr;
                *self = TlbFlush::Pages { count: 1, va };
            }
            TlbFlush::Pages { count, va } => {
                let n = usize::from(*count);
                if va[..n].contains(&addr) {
                    return;
                }
                if n == MAX_INVLPG {
                    *self = TlbFlush::Full;
                } else {
                    va[n] = addr;
                    *count += 1;
                }
            }
            TlbFlush::Full => {}
        }
    }

    /// Turns this into a full flush.
    pub fn add_full(&mut self) {
        *self = TlbFlush::Full;
    }

    /// Adds everything `other` asks for.
    pub fn merge(&mut self, other: &TlbFlush) {
        match other {
            TlbFlush::None => {}
            TlbFlush::Full => self.add_full(),
            TlbFlush::Pages { .. } => {
                for &va in other.pages() {
                    self.add_page(va);
                }
            }
        }
    }

    /// The addresses of a page list (empty for `None` and `Full`).
    #[must_use]
    pub fn pages(&self) -> &[u64] {
        match self {
            TlbFlush::Pages { count, va } => &va[..usize::from(*count).min(MAX_INVLPG)],
            _ => &[],
        }
    }

    /// Whether nothing is to be flushed.
    #[must_use]
    pub fn is_none(&self) -> bool {
        *self == TlbFlush::None
    }
}

/// The TLB flushes a batch needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flush {
    /// On this CPU only.
    pub local: TlbFlush,
    /// On every CPU that may hold TLB entries of the domain (its dirty
    /// CPU set), this one included.
    pub domain: TlbFlush,
}

/// Which per-CPU guest views must copy their L4 slots again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RootSync {
    /// The current vCPU's root changed (new base pointer) or one of its
    /// entries changed: this CPU's views must be refreshed (and the TLB
    /// flushed, which a view reload implies).
    pub local: bool,
    /// An entry changed in an L4 that other vCPUs may run on.
    pub others: bool,
}

/// Cache write-back requests (`MMUEXT_FLUSH_CACHE[_GLOBAL]`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum CacheFlush {
    /// None.
    #[default]
    None,
    /// `wbinvd` on this CPU.
    Local,
    /// `wbinvd` on every CPU (one per core is enough).
    Global,
}

/// Everything a batch of memory operations leaves for the machine to do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// TLB flushes.
    pub flush: Flush,
    /// Guest-view resyncs.
    pub root_sync: RootSync,
    /// The vCPU's LDT changed (`MMUEXT_SET_LDT`) or the page tables it was
    /// reached through did (`MMUEXT_NEW_BASEPTR`): reload it.
    pub ldt_changed: bool,
    /// Cache write-backs.
    pub cache: CacheFlush,
    /// A frame changed type while stale writable or page-table TLB entries
    /// may still exist for it, or a frame went back to the allocator:
    /// `flush.domain` is `Full`. On SMP this flush cannot wait for the end
    /// of the batch.
    pub stale_writable: bool,
    /// The frame table was found inconsistent while serving this domain
    /// (a hypervisor bug, never guest input alone): crash the domain.
    pub crash: bool,
}

impl Effects {
    /// Requests a full flush of every CPU the domain may have run on
    /// because a frame changed type or was freed (see
    /// [`Effects::stale_writable`]).
    pub fn stale_tlb(&mut self) {
        self.stale_writable = true;
        self.flush.domain.add_full();
    }

    /// Adds everything `other` asks for (batches inside a `multicall`).
    pub fn merge(&mut self, other: &Effects) {
        self.flush.local.merge(&other.flush.local);
        self.flush.domain.merge(&other.flush.domain);
        self.root_sync.local |= other.root_sync.local;
        self.root_sync.others |= other.root_sync.others;
        self.ldt_changed |= other.ldt_changed;
        self.cache = self.cache.max(other.cache);
        self.stale_writable |= other.stale_writable;
        self.crash |= other.crash;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_lists_are_bounded() {
        let mut f = TlbFlush::None;
        for i in 0..MAX_INVLPG as u64 {
            f.add_page(i * 4096);
            f.add_page(i * 4096);
        }
        assert_eq!(f.pages().len(), MAX_INVLPG);
        f.add_page(1 << 40);
        assert_eq!(f, TlbFlush::Full);
        f.add_page(0);
        assert_eq!(f, TlbFlush::Full);
        assert!(f.pages().is_empty());
    }

    #[test]
    fn merging() {
        let mut a = Effects::default();
        let mut b = Effects::default();
        a.flush.local.add_page(0x1000);
        b.flush.local.add_page(0x2000);
        b.cache = CacheFlush::Global;
        b.root_sync.others = true;
        b.stale_tlb();
        a.merge(&b);
        assert_eq!(a.flush.local.pages(), &[0x1000, 0x2000]);
        assert_eq!(a.flush.domain, TlbFlush::Full);
        assert_eq!(a.cache, CacheFlush::Global);
        assert!(a.root_sync.others && a.stale_writable && !a.crash);
        let mut c = TlbFlush::None;
        c.merge(&TlbFlush::Full);
        assert_eq!(c, TlbFlush::Full);
        assert!(TlbFlush::None.is_none());
    }
}
