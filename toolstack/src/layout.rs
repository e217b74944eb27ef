//! Where everything goes in a new domU: its pseudo-physical frames, its
//! initial virtual mapping and the bootstrap page tables that make it.
//!
//! The order is the one Xen's domain builder uses (libxenguest's
//! `xc_dom_build_image`, the same as the hypervisor's dom0 builder):
//! from `VIRT_BASE`, pseudo-physical frames map 1:1 (`va = virt_base +
//! pfn * 4096`), each part page-aligned:
//!
//! 1. the kernel image, from `VIRT_BASE` (pages before `kstart` are
//!    populated and zero) to `kend` rounded up; `.bss` is zero;
//! 2. the p2m list: one 8-byte MFN per page of the domain;
//! 3. the `start_info` page;
//! 4. the xenstore ring page;
//! 5. the console ring page;
//! 6. the bootstrap page tables: one L4, then the L3s, L2s and L1s that
//!    map the whole mapping, each level in address order;
//! 7. one boot-stack page.
//!
//! The mapping then extends to the next 4 MiB boundary at least 512 KiB
//! past the stack (as Xen's, so a kernel may use that space for its own
//! early page tables), or to the end of the domain's memory if that comes
//! first.
//!
//! Mapping flags are Xen's: L1 entries present, writable and accessed,
//! except that the page-table frames themselves are mapped read-only (the
//! hypervisor refuses to validate tables that are writable anywhere);
//! upper-level entries present, writable, accessed, dirty and user.
#![forbid(unsafe_code)]

use dom0_abi::layout::{PAGE_SHIFT, PAGE_SIZE, guest_range_ok};
use dom0_abi::mmu::PteFlags;

/// Flags of an L1 entry of the initial mapping (data page).
pub const L1_FLAGS: u64 =
    PteFlags::PRESENT.bits() | PteFlags::RW.bits() | PteFlags::ACCESSED.bits();
/// Flags of an L1 entry that maps a page-table frame (read-only).
pub const L1_FLAGS_RO: u64 = PteFlags::PRESENT.bits() | PteFlags::ACCESSED.bits();
/// Flags of an L2, L3 or L4 entry.
pub const UPPER_FLAGS: u64 = PteFlags::PRESENT.bits()
    | PteFlags::RW.bits()
    | PteFlags::ACCESSED.bits()
    | PteFlags::DIRTY.bits()
    | PteFlags::USER.bits();

/// Bytes of mapping guaranteed past the boot stack.
const MIN_SLACK: u64 = 512 * 1024;
/// The mapping's end is rounded up to this.
const END_ALIGN: u64 = 4 << 20;
/// Shifts of the regions one table of each level covers (L1: 2 MiB, L2:
/// 1 GiB, L3: 512 GiB).
const L1_SHIFT: u32 = 21;
const L2_SHIFT: u32 = 30;
const L3_SHIFT: u32 = 39;

/// Why no layout fits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// `VIRT_BASE` is not page-aligned.
    VirtBaseUnaligned,
    /// The kernel starts below `VIRT_BASE` (the image checks prevent it).
    KernelBelowBase,
    /// An address computation overflowed.
    Overflow,
    /// The mapping leaves the canonical guest space or touches the
    /// hypervisor's reserved range.
    OutsideGuestSpace,
    /// The domain has fewer pages than the initial mapping needs.
    TooSmall {
        /// Pages needed (through the boot stack).
        needed: u64,
        /// Pages the domain has.
        have: u64,
    },
}

impl core::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LayoutError::VirtBaseUnaligned => write!(f, "VIRT_BASE is not page-aligned"),
            LayoutError::KernelBelowBase => write!(f, "the kernel starts below VIRT_BASE"),
            LayoutError::Overflow => write!(f, "address overflow in the layout"),
            LayoutError::OutsideGuestSpace => {
                write!(f, "the initial mapping leaves the guest's address space")
            }
            LayoutError::TooSmall { needed, have } => write!(
                f,
                "memory too small: the initial mapping needs {needed} pages, the domain has {have}"
            ),
        }
    }
}

/// A domU's initial layout (all positions are pseudo-physical frames).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DomuLayout {
    /// VA of pfn 0.
    pub virt_base: u64,
    /// Pages of the domain.
    pub nr_pages: u64,
    /// Pages of the kernel part (pfns `0..kernel_pages`).
    pub kernel_pages: u64,
    /// First pfn of the p2m list.
    pub p2m_pfn: u64,
    /// Pages of the p2m list.
    pub p2m_pages: u64,
    /// The `start_info` page.
    pub start_info_pfn: u64,
    /// The xenstore ring page.
    pub store_pfn: u64,
    /// The console ring page.
    pub console_pfn: u64,
    /// First page-table frame (the L4).
    pub pt_pfn: u64,
    /// Page-table frames.
    pub nr_pt_frames: u64,
    /// The boot-stack page.
    pub stack_pfn: u64,
    /// Pages the bootstrap tables map (pfns `0..mapped_pages`).
    pub mapped_pages: u64,
    /// Number of L3, L2 and L1 tables.
    pub tables: [u64; 3],
}

/// `(first, count)` of the regions of `1 << shift` bytes that
/// `[start, end)` touches.
const fn regions(start: u64, end: u64, shift: u32) -> (u64, u64) {
    let first = start >> shift;
    (first, ((end - 1) >> shift) - first + 1)
}

impl DomuLayout {
    /// The layout for a kernel occupying `[virt_base, kend)` in a domain
    /// of `nr_pages` pages.
    pub fn new(virt_base: u64, kstart: u64, kend: u64, nr_pages: u64) -> Result<Self, LayoutError> {
        if !virt_base.is_multiple_of(PAGE_SIZE) {
            return Err(LayoutError::VirtBaseUnaligned);
        }
        if kstart < virt_base || kend < kstart {
            return Err(LayoutError::KernelBelowBase);
        }
        let kernel_pages = (kend - virt_base).div_ceil(PAGE_SIZE);
        let p2m_pages = (nr_pages * 8).div_ceil(PAGE_SIZE);
        let p2m_pfn = kernel_pages;
        let start_info_pfn = p2m_pfn + p2m_pages;
        let store_pfn = start_info_pfn + 1;
        let console_pfn = store_pfn + 1;
        let pt_pfn = console_pfn + 1;
        // The smallest table count that maps everything including itself:
        // growing the count by one page grows the need by at most one
        // table at the boundary where it first suffices.
        let mut nr_pt_frames = 4;
        loop {
            let stack_pfn = pt_pfn + nr_pt_frames;
            let needed = stack_pfn + 1;
            let layout = Self::with_tables(virt_base, nr_pages, needed)?;
            let tables = layout.iter().sum::<u64>() + 1;
            if tables <= nr_pt_frames {
                if needed > nr_pages {
                    return Err(LayoutError::TooSmall {
                        needed,
                        have: nr_pages,
                    });
                }
                let mapped_pages = Self::mapped_pages(virt_base, nr_pages, needed)?;
                return Ok(DomuLayout {
                    virt_base,
                    nr_pages,
                    kernel_pages,
                    p2m_pfn,
                    p2m_pages,
                    start_info_pfn,
                    store_pfn,
                    console_pfn,
                    pt_pfn,
                    nr_pt_frames,
                    stack_pfn,
                    mapped_pages,
                    tables: layout,
                });
            }
            nr_pt_frames = tables;
        }
    }

    /// Pages mapped when `needed` pages hold the image up to the stack.
    fn mapped_pages(virt_base: u64, nr_pages: u64, needed: u64) -> Result<u64, LayoutError> {
        let used = needed.checked_mul(PAGE_SIZE).ok_or(LayoutError::Overflow)?;
        let padded_end = virt_base
            .checked_add(used + MIN_SLACK)
            .and_then(|end| end.checked_next_multiple_of(END_ALIGN))
            .ok_or(LayoutError::Overflow)?;
        Ok(((padded_end - virt_base) >> PAGE_SHIFT).min(nr_pages.max(needed)))
    }

    /// Tables `[L3, L2, L1]` needed to map `needed` pages (plus padding).
    fn with_tables(virt_base: u64, nr_pages: u64, needed: u64) -> Result<[u64; 3], LayoutError> {
        let pages = Self::mapped_pages(virt_base, nr_pages, needed)?;
        let len = pages << PAGE_SHIFT;
        if !guest_range_ok(virt_base, len) {
            return Err(LayoutError::OutsideGuestSpace);
        }
        let end = virt_base + len;
        Ok([
            regions(virt_base, end, L3_SHIFT).1,
            regions(virt_base, end, L2_SHIFT).1,
            regions(virt_base, end, L1_SHIFT).1,
        ])
    }

    /// The VA of pfn `pfn`.
    #[must_use]
    pub const fn va(&self, pfn: u64) -> u64 {
        self.virt_base + (pfn << PAGE_SHIFT)
    }

    /// The end (exclusive) of the mapped range.
    #[must_use]
    pub const fn mapped_end(&self) -> u64 {
        self.va(self.mapped_pages)
    }

    /// Whether `pfn` is one of the page-table frames.
    #[must_use]
    pub const fn is_pt_pfn(&self, pfn: u64) -> bool {
        pfn >= self.pt_pfn && pfn < self.pt_pfn + self.nr_pt_frames
    }

    /// The level (4, 3, 2 or 1) and index within its level of page-table
    /// frame `frame` (0 = the L4).
    #[must_use]
    pub fn table(&self, frame: u64) -> Option<(u32, u64)> {
        let [l3, l2, l1] = self.tables;
        match frame {
            0 => Some((4, 0)),
            f if f <= l3 => Some((3, f - 1)),
            f if f <= l3 + l2 => Some((2, f - 1 - l3)),
            f if f <= l3 + l2 + l1 => Some((1, f - 1 - l3 - l2)),
            _ => None,
        }
    }

    /// Calls `entry(slot, pfn, flags)` for every present entry of
    /// page-table frame `frame` (0-based from [`DomuLayout::pt_pfn`]): the
    /// entry at `slot` points at the MFN of pseudo-physical frame `pfn`.
    /// Entries not named are zero.
    pub fn table_entries(&self, frame: u64, mut entry: impl FnMut(usize, u64, u64)) {
        let Some((level, index)) = self.table(frame) else {
            return;
        };
        let [l3, l2, _] = self.tables;
        let (start, end) = (self.virt_base, self.mapped_end());
        if level == 1 {
            let region = (start >> L1_SHIFT) + index;
            let first_va = (region << L1_SHIFT).max(start);
            let last_va = ((region + 1) << L1_SHIFT).min(end);
            let mut va = first_va;
            while va < last_va {
                let pfn = (va - start) >> PAGE_SHIFT;
                let flags = if self.is_pt_pfn(pfn) {
                    L1_FLAGS_RO
                } else {
                    L1_FLAGS
                };
                entry(slot(va, 1), pfn, flags);
                va += PAGE_SIZE;
            }
            return;
        }
        // Level n covers regions of `own` bytes; its children are the
        // next level's tables, which start at frame `child_base`.
        let (own, child, child_base) = match level {
            4 => (u32::MAX, L3_SHIFT, 1),
            3 => (L3_SHIFT, L2_SHIFT, 1 + l3),
            _ => (L2_SHIFT, L1_SHIFT, 1 + l3 + l2),
        };
        let (first_child, children) = regions(start, end, child);
        for c in 0..children {
            let region = first_child + c;
            let va = region << child;
            let owner = if own == u32::MAX {
                0
            } else {
                (va >> own) - (start >> own)
            };
            if owner == index {
                entry(
                    slot(va.max(start), level),
                    self.pt_pfn + child_base + c,
                    UPPER_FLAGS,
                );
            }
        }
    }
}

/// Index of `va` in its level-`level` table.
const fn slot(va: u64, level: u32) -> usize {
    ((va >> (PAGE_SHIFT + 9 * (level - 1))) & 511) as usize
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::collections::BTreeMap;

    use super::*;

    const BASE: u64 = 0xFFFF_FFFF_8000_0000;

    /// Walks the tables the layout describes (pfn = mfn) for `va`.
    fn walk(l: &DomuLayout, va: u64) -> Option<(u64, u64)> {
        let mut tables: BTreeMap<u64, BTreeMap<usize, (u64, u64)>> = BTreeMap::new();
        for f in 0..l.nr_pt_frames {
            l.table_entries(f, |s, pfn, flags| {
                assert!(
                    tables
                        .entry(l.pt_pfn + f)
                        .or_default()
                        .insert(s, (pfn, flags))
                        .is_none()
                );
            });
        }
        let mut table = l.pt_pfn;
        for level in [4, 3, 2, 1] {
            let (pfn, flags) = *tables.get(&table)?.get(&slot(va, level))?;
            if level == 1 {
                return Some((pfn, flags));
            }
            assert_eq!(flags, UPPER_FLAGS);
            table = pfn;
        }
        None
    }

    #[test]
    fn small_domain_in_order() {
        // A 200 KiB kernel in 4 MiB.
        let l = DomuLayout::new(BASE, BASE + 0x1000, BASE + 200 * 1024, 1024).unwrap();
        assert_eq!(l.kernel_pages, 50);
        assert_eq!((l.p2m_pfn, l.p2m_pages), (50, 2));
        assert_eq!(
            (l.start_info_pfn, l.store_pfn, l.console_pfn, l.pt_pfn),
            (52, 53, 54, 55)
        );
        // 4 MiB from the top-2 GiB base: one L3, one L2, two L1s.
        assert_eq!(l.tables, [1, 1, 2]);
        assert_eq!(l.nr_pt_frames, 5);
        assert_eq!(l.stack_pfn, 60);
        assert_eq!(l.mapped_pages, 1024);
        for pfn in [0, 1, 53, 60, 511, 512, 1023] {
            let want = if l.is_pt_pfn(pfn) {
                L1_FLAGS_RO
            } else {
                L1_FLAGS
            };
            assert_eq!(walk(&l, l.va(pfn)), Some((pfn, want)), "pfn {pfn}");
        }
        assert_eq!(walk(&l, l.va(55)), Some((55, L1_FLAGS_RO)));
        assert_eq!(walk(&l, l.va(1024)), None);
    }

    #[test]
    fn large_domain_maps_only_the_padded_start() {
        let l = DomuLayout::new(BASE, BASE, BASE + (3 << 20), 65536).unwrap();
        // 768 kernel pages + 128 p2m + 3 + tables + stack, padded to 8 MiB.
        assert_eq!(l.p2m_pages, 128);
        assert_eq!(l.mapped_pages, 2048);
        assert_eq!(l.tables, [1, 1, 4]);
        assert_eq!(walk(&l, l.va(2047)).map(|e| e.0), Some(2047));
        assert_eq!(walk(&l, l.va(2048)), None);
    }

    #[test]
    fn crossing_a_gigabyte_and_low_bases() {
        // Starts 1 MiB below a 1 GiB boundary and maps 4 MiB: two L2s,
        // three L1s.
        let base = (1 << 30) - (1 << 20);
        let l = DomuLayout::new(base, base, base + (1 << 20) + 0x2000, 1024).unwrap();
        assert_eq!(l.mapped_pages, 1024);
        assert_eq!(l.tables, [1, 2, 3]);
        for pfn in [0, 255, 256, 700, 1023] {
            assert_eq!(walk(&l, l.va(pfn)).map(|e| e.0), Some(pfn), "pfn {pfn}");
        }
        // Virtual address 0 (XTF-style kernels link low).
        let l = DomuLayout::new(0, 0x1000, 0x5000, 512).unwrap();
        assert_eq!(l.mapped_pages, 512);
        assert_eq!(walk(&l, 0).map(|e| e.0), Some(0));
    }

    #[test]
    fn refusals() {
        assert_eq!(
            DomuLayout::new(BASE + 1, BASE + 1, BASE + 2, 1024),
            Err(LayoutError::VirtBaseUnaligned)
        );
        assert_eq!(
            DomuLayout::new(BASE, BASE - 1, BASE, 1024),
            Err(LayoutError::KernelBelowBase)
        );
        assert!(matches!(
            DomuLayout::new(BASE, BASE, BASE + (4 << 20), 1024),
            Err(LayoutError::TooSmall { have: 1024, .. })
        ));
        // Into the hypervisor's reserved range.
        let hv = 0xFFFF_8000_0000_0000;
        assert_eq!(
            DomuLayout::new(hv, hv, hv + 0x1000, 256),
            Err(LayoutError::OutsideGuestSpace)
        );
        // Off the top of the address space.
        let top = 0xFFFF_FFFF_FFE0_0000;
        assert_eq!(
            DomuLayout::new(top, top, top + 0x1000, 1024),
            Err(LayoutError::Overflow)
        );
    }
}
