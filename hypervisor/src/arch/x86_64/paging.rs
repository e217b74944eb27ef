//! Four-level page tables built and edited by the hypervisor (SDM vol. 3A
//! §4.5). Every table frame is reached through the direct map; the boot code
//! maps its first 4 GiB before any Rust runs, and frames used before the
//! final direct map exists come from there.
use dom0_abi::mmu::{PTE_ADDR_MASK, PteFlags};

use crate::layout::{DIRECTMAP_VIRT_START, PAGE_SIZE};

/// [`PAGE_SIZE`] as a `usize`, for byte counts of whole frames.
#[allow(clippy::cast_possible_truncation, reason = "4096 fits in every usize")]
pub const PAGE_BYTES: usize = PAGE_SIZE as usize;

// The entry bits, as short names for the tables this module builds; the
// one definition is dom0-abi's `PteFlags`.
/// Present.
pub const P: u64 = PteFlags::PRESENT.bits();
/// Writable.
pub const RW: u64 = PteFlags::RW.bits();
/// User-accessible.
pub const US: u64 = PteFlags::USER.bits();
/// Accessed.
pub const A: u64 = PteFlags::ACCESSED.bits();
/// Dirty.
pub const D: u64 = PteFlags::DIRTY.bits();
/// Large page (in an L2 or L3 entry).
pub const PS: u64 = PteFlags::PAT_PSE.bits();
/// Global.
pub const G: u64 = PteFlags::GLOBAL.bits();
/// No-execute.
pub const NX: u64 = PteFlags::NX.bits();
/// The frame address bits of an entry.
pub const ADDR_MASK: u64 = PTE_ADDR_MASK;

/// Size of a leaf mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageSize {
    /// 4 KiB (an L1 entry).
    Size4K,
    /// 2 MiB (an L2 entry with PS).
    Size2M,
    /// 1 GiB (an L3 entry with PS).
    Size1G,
}

impl PageSize {
    /// Bytes mapped by one entry.
    pub const fn bytes(self) -> u64 {
        match self {
            PageSize::Size4K => PAGE_SIZE,
            PageSize::Size2M => 1 << 21,
            PageSize::Size1G => 1 << 30,
        }
    }

    /// The table level that holds the leaf (1 = L1).
    const fn level(self) -> u32 {
        match self {
            PageSize::Size4K => 1,
            PageSize::Size2M => 2,
            PageSize::Size1G => 3,
        }
    }
}

/// The direct-map address of a physical address.
pub const fn phys_to_virt(pa: u64) -> u64 {
    DIRECTMAP_VIRT_START + pa
}

/// The 512 entries of the table in frame `pa`.
///
/// # Safety
/// `pa` must be a page-table frame the hypervisor owns, reachable through
/// the direct map, and no other reference to it may be live.
pub unsafe fn table(pa: u64) -> &'static mut [u64; 512] {
    // SAFETY: the caller guarantees the frame is a hypervisor-owned table,
    // mapped in the direct map and not aliased by another reference.
    unsafe { &mut *(phys_to_virt(pa) as *mut [u64; 512]) }
}

/// Index of `va` in the table at `level` (1 = L1 ... 4 = L4).
pub const fn index(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * (level - 1))) & 511) as usize
}

/// The cache-attribute bits of a 4 KiB leaf entry (PWT, PCD, PAT).
const CACHE_BITS_4K: u64 = PteFlags::PWT.bits() | PteFlags::PCD.bits() | PteFlags::PAT_PSE.bits();

/// Gives the 4 KiB page at `va` in the tree at `root` the cache-attribute
/// bits `bits` (PWT, PCD and PAT of a 4 KiB entry) and drops its TLB entry.
/// A 1 GiB or 2 MiB leaf on the way is split into 512 leaves of the next
/// size down, with the same frames and flags, in a table from `alloc`.
/// False if `va` is not mapped or `alloc` has no frame (then `va` keeps
/// its attributes; a split already made stays, mapping exactly what the
/// large leaf did).
///
/// # Safety
/// `root` must be the hypervisor's tree, loaded in CR3 (the TLB entry
/// dropped is the current one), and `va` an address of its direct map
/// whose attributes nothing running depends on; `alloc` must return
/// frames the hypervisor owns and nobody else uses.
pub unsafe fn set_page_cache_bits(
    root: u64,
    va: u64,
    bits: u64,
    alloc: &mut dyn FnMut() -> Option<u64>,
) -> bool {
    let mut table_pa = root;
    for level in [4, 3, 2] {
        // SAFETY: `table_pa` is `root` or a table under it (caller's
        // contract), reached through the direct map.
        let slot = &mut unsafe { table(table_pa) }[index(va, level)];
        if *slot & P == 0 {
            return false;
        }
        if level < 4 && *slot & PS != 0 {
            let Some(child_pa) = alloc() else {
                return false;
            };
            let (step, child_flags) = if level == 3 {
                (1 << 21, *slot & !ADDR_MASK)
            } else {
                (PAGE_SIZE, *slot & !ADDR_MASK & !PS)
            };
            let base = *slot & ADDR_MASK & !((step << 9) - 1);
            // SAFETY: `alloc` hands out frames nobody else uses.
            let child = unsafe { table(child_pa) };
            for (i, entry) in (0u64..).zip(child.iter_mut()) {
                *entry = (base + i * step) | child_flags;
            }
            *slot = child_pa | P | RW | A;
        }
        table_pa = *slot & ADDR_MASK;
    }
    // SAFETY: as above, the L1 table for `va`.
    let leaf = &mut unsafe { table(table_pa) }[index(va, 1)];
    if *leaf & P == 0 {
        return false;
    }
    *leaf = (*leaf & !CACHE_BITS_4K) | (bits & CACHE_BITS_4K);
    super::cr::invlpg(va);
    true
}

/// Maps `[va, va + size)` to `pa` with `flags` (P is added) in the tree at
/// `root`, creating intermediate tables with `alloc` (which must return the
/// physical address of a zeroed frame). Intermediate entries get P|RW, plus
/// US when the leaf has it; access is decided at the leaf.
///
/// # Safety
/// `root` and every table under it must be hypervisor-owned page tables not
/// in use through another reference; the new mapping must not remove or
/// change what running code depends on.
pub unsafe fn map(
    root: u64,
    va: u64,
    pa: u64,
    flags: u64,
    size: PageSize,
    alloc: &mut dyn FnMut() -> u64,
) {
    let mut table_pa = root;
    let mut level = 4;
    while level > size.level() {
        // SAFETY: `table_pa` is `root` or a table this function or an
        // earlier call created under it; the caller owns the whole tree.
        let entries = unsafe { table(table_pa) };
        let slot = &mut entries[index(va, level)];
        if *slot & P == 0 {
            *slot = alloc() | P | RW | (flags & US);
        } else {
            *slot |= flags & US;
        }
        table_pa = *slot & ADDR_MASK;
        level -= 1;
    }
    let leaf_flags = if size == PageSize::Size4K {
        flags | P
    } else {
        flags | P | PS
    };
    // SAFETY: as above.
    let entries = unsafe { table(table_pa) };
    entries[index(va, level)] = (pa & ADDR_MASK) | leaf_flags;
}

/// Maps `[va, va + len)` to `[pa, pa + len)` with 4 KiB pages.
///
/// # Safety
/// As for [`map`].
pub unsafe fn map_range_4k(
    root: u64,
    va: u64,
    pa: u64,
    len: u64,
    flags: u64,
    alloc: &mut dyn FnMut() -> u64,
) {
    let mut off = 0;
    while off < len {
        // SAFETY: forwarded from the caller.
        unsafe { map(root, va + off, pa + off, flags, PageSize::Size4K, alloc) };
        off += PAGE_SIZE;
    }
}

/// Finds the leaf entry that maps `va` under `root`, if any: its address
/// (physical) and value.
///
/// # Safety
/// `root` must be a hypervisor-owned page-table tree.
pub unsafe fn lookup(root: u64, va: u64) -> Option<(u64, u64)> {
    let mut table_pa = root;
    let mut level = 4;
    loop {
        // SAFETY: walking a hypervisor-owned tree read-only.
        let entries = unsafe { table(table_pa) };
        let i = index(va, level);
        let entry = entries[i];
        if entry & P == 0 {
            return None;
        }
        if level == 1 || entry & PS != 0 {
            return Some((table_pa + (i as u64) * 8, entry));
        }
        table_pa = entry & ADDR_MASK;
        level -= 1;
    }
}

/// The physical address of the L1 entry for `va` under `root`, whether or
/// not that entry is present (the tables above it must be).
///
/// # Safety
/// `root` must be a hypervisor-owned page-table tree.
pub unsafe fn l1_entry_address(root: u64, va: u64) -> Option<u64> {
    let mut table_pa = root;
    for level in [4, 3, 2] {
        // SAFETY: walking a hypervisor-owned tree read-only.
        let entry = unsafe { table(table_pa) }[index(va, level)];
        if entry & P == 0 || entry & PS != 0 {
            return None;
        }
        table_pa = entry & ADDR_MASK;
    }
    Some(table_pa + index(va, 1) as u64 * 8)
}
