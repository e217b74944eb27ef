//! The guest's own page tables, as the benchmarks use them: a thin view
//! over `guest_pv_shim::mm`, which reads the bootstrap tables through the
//! initial mapping. Nothing here writes a table.

use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::mm;

pub use guest_pv_shim::mm::Entry;

/// A walk found no readable entry at the level asked for: a table above
/// it is not present, or not one the guest can read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotMapped;

/// The bootstrap page tables of this domain.
#[derive(Clone, Copy, Debug)]
pub struct PageTables {
    l4_mfn: u64,
}

impl PageTables {
    /// The tables `start_info` describes; `None` if `pt_base` is not in the
    /// initial mapping.
    #[must_use]
    pub fn new(start_info: &'static StartInfo) -> Option<PageTables> {
        Some(PageTables {
            l4_mfn: mm::virt_to_mfn(start_info.pt_base)?,
        })
    }

    /// MFN of the top-level table (the current CR3's frame).
    #[must_use]
    pub const fn l4_mfn(&self) -> u64 {
        self.l4_mfn
    }

    /// MFN backing a virtual address of the initial mapping.
    #[must_use]
    pub fn mfn_of(&self, va: u64) -> Option<u64> {
        mm::virt_to_mfn(va)
    }

    /// The entry at `level` (4 = L4 .. 1 = L1) on the walk for `va`.
    ///
    /// # Errors
    /// A non-present entry above `level`, or a table the guest cannot read.
    pub fn entry(&self, va: u64, level: u8) -> Result<Entry, NotMapped> {
        let slot = 4usize.checked_sub(usize::from(level)).ok_or(NotMapped)?;
        mm::walk_from(self.l4_mfn, va)
            .get(slot)
            .copied()
            .flatten()
            .ok_or(NotMapped)
    }

    /// Whether `va` is mapped (every level present).
    #[must_use]
    pub fn is_mapped(&self, va: u64) -> bool {
        self.entry(va, 1).is_ok_and(|e| e.present())
    }
}
