//! The guest's own page tables, read through the initial mapping.
//!
//! PV guests see machine frame numbers in their tables. A table frame is
//! found in the bootstrap page-table area (`start_info.pt_base`,
//! `nr_pt_frames` frames, mapped read-only at `VIRT_BASE + pfn * 4096`) by
//! looking its MFN up in the p2m list; the benchmarks only ever touch
//! mappings those bootstrap tables hold. Nothing here writes a table.

use guest_pv_shim::dom0_abi::layout::PAGE_SHIFT;
use guest_pv_shim::dom0_abi::mmu::PTE_ADDR_MASK;
use guest_pv_shim::dom0_abi::mmu::PteFlags;
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::entry::p2m_entry;
use guest_pv_shim::platform::{VIRT_BASE, initial_mapping_pfn};

/// One page-table entry: where it is and what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Machine address of the entry (the `ptr` of an `mmu_update`).
    pub maddr: u64,
    /// Its value.
    pub value: u64,
}

impl Entry {
    /// Whether the entry is present.
    #[must_use]
    pub const fn present(&self) -> bool {
        self.value & PteFlags::PRESENT.bits() != 0
    }

    /// The frame it points to.
    #[must_use]
    pub const fn mfn(&self) -> u64 {
        (self.value & PTE_ADDR_MASK) >> PAGE_SHIFT
    }
}

/// Why a walk stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalkError {
    /// The entry at this level (4..=2) is not present.
    NotPresent(u8),
    /// A table is not one of the bootstrap frames (the guest cannot read it).
    UnknownTable(u64),
}

/// The bootstrap page tables of this domain.
#[derive(Clone, Copy, Debug)]
pub struct PageTables {
    start_info: &'static StartInfo,
    first_pfn: u64,
    frames: u64,
    l4_mfn: u64,
}

impl PageTables {
    /// The tables `start_info` describes; `None` if `pt_base` is not in the
    /// initial mapping.
    #[must_use]
    pub fn new(start_info: &'static StartInfo) -> Option<PageTables> {
        let first_pfn = initial_mapping_pfn(start_info.pt_base)?;
        Some(PageTables {
            start_info,
            first_pfn,
            frames: start_info.nr_pt_frames,
            l4_mfn: p2m_entry(start_info, first_pfn)?,
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
        p2m_entry(self.start_info, initial_mapping_pfn(va)?)
    }

    /// Virtual address of bootstrap table frame `mfn`.
    fn table_va(&self, mfn: u64) -> Option<u64> {
        (self.first_pfn..self.first_pfn + self.frames)
            .find(|&pfn| p2m_entry(self.start_info, pfn) == Some(mfn))
            .map(|pfn| VIRT_BASE + (pfn << PAGE_SHIFT))
    }

    /// Entry `index` of table `mfn`.
    fn read(&self, mfn: u64, index: u64) -> Result<Entry, WalkError> {
        let table = self.table_va(mfn).ok_or(WalkError::UnknownTable(mfn))?;
        let va = table + index * 8;
        // SAFETY: `table` is a bootstrap page-table frame, mapped (read-only)
        // in the initial mapping for the domain's lifetime; `index` < 512
        // keeps the 8-byte read inside it. The hypervisor may change the
        // entry at any time, hence a volatile read and no reference.
        let value = unsafe { (va as *const u64).read_volatile() };
        Ok(Entry {
            maddr: (mfn << PAGE_SHIFT) + index * 8,
            value,
        })
    }

    /// The entry at `level` (4 = L4 .. 1 = L1) on the walk for `va`.
    ///
    /// # Errors
    /// A non-present entry above `level`, or a table the guest cannot read.
    pub fn entry(&self, va: u64, level: u8) -> Result<Entry, WalkError> {
        let mut mfn = self.l4_mfn;
        for current in (level..=4).rev() {
            let shift = PAGE_SHIFT + 9 * u32::from(current - 1);
            let entry = self.read(mfn, (va >> shift) & 511)?;
            if current == level {
                return Ok(entry);
            }
            if !entry.present() {
                return Err(WalkError::NotPresent(current));
            }
            mfn = entry.mfn();
        }
        Err(WalkError::NotPresent(level))
    }

    /// Whether `va` is mapped (every level present).
    #[must_use]
    pub fn is_mapped(&self, va: u64) -> bool {
        self.entry(va, 1).is_ok_and(|e| e.present())
    }
}
