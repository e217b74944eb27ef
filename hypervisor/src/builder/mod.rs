//! The dom0 domain builder: the pure layout arithmetic (here) and the
//! machine side (`arch::x86_64::builder`).
#![forbid(unsafe_code)]

pub mod layout;

use core::fmt;
use core::ops::Range;

use crate::layout::{PAGE_SIZE, is_canonical, is_reserved_slot, l4_slot};
use crate::loader::GuestImageInfo;

/// Xen's dom0 initial mapping: where everything goes, as virtual addresses
/// (`VA = virt_base + pfn * 4096`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dom0Layout {
    /// VA of pseudo-physical frame 0.
    pub virt_base: u64,
    /// The kernel image, page-rounded.
    pub kernel: Range<u64>,
    /// The ramdisk (empty when there is none).
    pub ramdisk: Range<u64>,
    /// The p2m list (8 bytes per page of dom0).
    pub p2m: Range<u64>,
    /// The `start_info` page.
    pub start_info: u64,
    /// The bootstrap page tables (L4 first).
    pub page_tables: Range<u64>,
    /// How many page-table frames.
    pub nr_pt_frames: u64,
    /// The boot stack page (RSP starts at its end).
    pub stack: u64,
    /// End of the initial mapping.
    pub v_end: u64,
}

/// Why a layout does not work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// The initial mapping needs more pages than dom0 has.
    TooSmall {
        /// Pages the initial mapping needs.
        needed: u64,
        /// Pages `dom0_mem` gives.
        nr_pages: u64,
    },
    /// The mapping overflows, leaves canonical space or crosses the
    /// hypervisor's reserved L4 slots.
    BadRange,
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutError::TooSmall { needed, nr_pages } => write!(
                f,
                "the initial mapping needs {needed} pages ({} KiB) but dom0_mem gives {nr_pages} pages ({} KiB)",
                needed * 4,
                nr_pages * 4
            ),
            LayoutError::BadRange => {
                f.write_str("the initial mapping overflows or crosses the hypervisor's reserved address range")
            }
        }
    }
}

fn page_up(x: u64) -> Result<u64, LayoutError> {
    x.checked_next_multiple_of(PAGE_SIZE).ok_or(LayoutError::BadRange)
}

/// Number of `1 << shift`-aligned regions that the non-empty `[lo, hi)` touches.
const fn regions(lo: u64, hi: u64, shift: u32) -> u64 {
    ((hi - 1) >> shift) - (lo >> shift) + 1
}

impl Dom0Layout {
    /// Lays out dom0 in Xen's order for a kernel `info`, a ramdisk of
    /// `ramdisk_len` bytes and `nr_pages` pages of memory.
    pub fn compute(info: &GuestImageInfo<'_>, ramdisk_len: u64, nr_pages: u64) -> Result<Dom0Layout, LayoutError> {
        Self::compute_raw(info.virt_base, info.kend, ramdisk_len, nr_pages)
    }

    fn compute_raw(virt_base: u64, kend: u64, ramdisk_len: u64, nr_pages: u64) -> Result<Dom0Layout, LayoutError> {
        let add = |a: u64, b: u64| a.checked_add(b).ok_or(LayoutError::BadRange);
        let kernel_end = page_up(kend)?;
        let ramdisk = kernel_end..add(kernel_end, ramdisk_len)?;
        let p2m_start = page_up(ramdisk.end)?;
        let p2m = p2m_start..add(p2m_start, nr_pages.checked_mul(8).ok_or(LayoutError::BadRange)?)?;
        let start_info = page_up(p2m.end)?;
        let pt_start = add(start_info, PAGE_SIZE)?;
        let mut nr_pt = 1u64;
        loop {
            let stack = add(pt_start, nr_pt * PAGE_SIZE)?;
            let stack_end = add(stack, PAGE_SIZE)?;
            let mut v_end = stack_end.checked_next_multiple_of(4 << 20).ok_or(LayoutError::BadRange)?;
            if v_end - stack_end < 512 << 10 {
                v_end = add(v_end, 4 << 20)?;
            }
            let needed_tables =
                1 + regions(virt_base, v_end, 39) + regions(virt_base, v_end, 30) + regions(virt_base, v_end, 21);
            if needed_tables <= nr_pt {
                let layout = Dom0Layout {
                    virt_base,
                    kernel: virt_base..kernel_end,
                    ramdisk,
                    p2m,
                    start_info,
                    page_tables: pt_start..stack,
                    nr_pt_frames: nr_pt,
                    stack,
                    v_end,
                };
                return layout.check(nr_pages);
            }
            nr_pt += 1;
        }
    }

    fn check(self, nr_pages: u64) -> Result<Dom0Layout, LayoutError> {
        let last = self.v_end - 1;
        if !is_canonical(self.virt_base) || !is_canonical(last) || (self.virt_base >> 47) != (last >> 47) {
            return Err(LayoutError::BadRange);
        }
        if (l4_slot(self.virt_base)..=l4_slot(last)).any(is_reserved_slot) {
            return Err(LayoutError::BadRange);
        }
        let needed = self.initial_pages();
        if needed > nr_pages {
            return Err(LayoutError::TooSmall { needed, nr_pages });
        }
        Ok(self)
    }

    /// Pages in the initial mapping.
    pub fn initial_pages(&self) -> u64 {
        (self.v_end - self.virt_base) / PAGE_SIZE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: u64 = 0xFFFF_FFFF_8000_0000;

    #[test]
    fn small_kernel_in_the_top_2g() {
        let l = Dom0Layout::compute_raw(BASE, BASE + 0x1_8000, 0, 16384).unwrap();
        assert_eq!(l.kernel, BASE..BASE + 0x1_8000);
        assert_eq!(l.p2m, BASE + 0x1_8000..BASE + 0x1_8000 + 16384 * 8);
        assert_eq!(l.start_info, BASE + 0x3_8000);
        // One L4, one L3, one L2 and two L1s cover 4 MiB plus padding.
        assert_eq!(l.page_tables.start, BASE + 0x3_9000);
        assert_eq!(l.v_end, BASE + (4 << 20));
        assert_eq!(l.nr_pt_frames, 1 + 1 + 1 + 2);
        assert_eq!(l.stack, l.page_tables.end);
        assert!(l.v_end - (l.stack + PAGE_SIZE) >= 512 << 10);
    }

    #[test]
    fn padding_keeps_512k_spare() {
        // Stack end lands just below a 4 MiB boundary: another 4 MiB is added.
        let kend = BASE + (4 << 20) - 0x6_0000 - 16384 * 8;
        let l = Dom0Layout::compute_raw(BASE, kend, 0, 16384).unwrap();
        assert_eq!(l.v_end % (4 << 20), 0);
        assert!(l.v_end - (l.stack + PAGE_SIZE) >= 512 << 10);
    }

    #[test]
    fn xtf_style_low_kernel_with_ramdisk() {
        let l = Dom0Layout::compute_raw(0, 0x10_0000 + 0x8000, 3 << 20, 32768).unwrap();
        assert_eq!(l.ramdisk, 0x10_8000..0x10_8000 + (3 << 20));
        assert_eq!(l.p2m.start, 0x10_8000 + (3 << 20));
        assert_eq!(l.v_end % (4 << 20), 0);
    }

    #[test]
    fn too_little_memory() {
        let e = Dom0Layout::compute_raw(BASE, BASE + 0x1_0000, 0, 512).unwrap_err();
        assert!(matches!(e, LayoutError::TooSmall { needed: 1024, nr_pages: 512 }));
        assert!(e.to_string().contains("dom0_mem"));
    }

    #[test]
    fn reserved_slots_and_overflow_refused() {
        assert_eq!(Dom0Layout::compute_raw(0xFFFF_8000_0000_0000, 0xFFFF_8000_0010_0000, 0, 1 << 20), Err(LayoutError::BadRange));
        assert_eq!(Dom0Layout::compute_raw(0x7FFF_FFF0_0000, 0x7FFF_FFFF_F000, 0, 1 << 20), Err(LayoutError::BadRange));
        assert_eq!(Dom0Layout::compute_raw(BASE, u64::MAX - 10, 0, 1 << 20), Err(LayoutError::BadRange));
    }
}
