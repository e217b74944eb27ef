//! Page-table entry rules: which bits a guest may set at each level.
//!
//! Xen's rules (`xen/arch/x86/mm.c`, `base_disallow_mask` and friends),
//! adapted to a guest kernel that runs in ring 1:
//!
//! | level | allowed flags |
//! |---|---|
//! | L2, L3, L4 | P, RW, US, A, D, AVAIL (9-11), AVAIL_HIGH (52-62), NX |
//! | L1 | the same plus G; plus PWT, PCD, PAT for a domain with I/O rights |
//!
//! Anything else set in a *present* entry (PSE at L2/L3, PWT/PCD/G above
//! L1, cache attributes without I/O rights) is refused with `EINVAL`.
//! Not-present entries are never checked (their other bits are ignored by
//! the MMU). Bit 62 is accepted in an L1 entry: it is Xen's `_PAGE_GNTTAB`
//! only in debug builds, and 0 in the release builds the project compares
//! against.
//!
//! Differences from Xen, all because the kernel runs in ring 1 (a
//! supervisor ring) instead of ring 3:
//! - Entries are stored exactly as the guest wrote them: no `US` forced on
//!   upper levels, no `_PAGE_GUEST_KERNEL` (bit 52) or forced `G` on L1
//!   entries. Kernel pages stay supervisor pages.
//! - The one rewrite kept is Xen's cache-attribute fix-up for device memory
//!   ([`io_cache_flip`]): write-back or write-through mappings of I/O
//!   frames become uncacheable.
#![forbid(unsafe_code)]

use dom0_abi::layout::{guest_addr_ok, is_canonical};
use dom0_abi::mmu::{L1_ALLOWED_FLAGS, L234_ALLOWED_FLAGS, PTE_ADDR_MASK, PteFlags};
use dom0_abi::types::Mfn;

/// Present.
pub const PRESENT: u64 = PteFlags::PRESENT.bits();
/// Writable.
pub const RW: u64 = PteFlags::RW.bits();
/// Accessed.
pub const ACCESSED: u64 = PteFlags::ACCESSED.bits();
/// Dirty.
pub const DIRTY: u64 = PteFlags::DIRTY.bits();
/// User/supervisor: set at every level for ring 3 to reach the page.
pub const USER: u64 = PteFlags::USER.bits();
/// Write-through.
pub const PWT: u64 = PteFlags::PWT.bits();
/// Cache disable.
pub const PCD: u64 = PteFlags::PCD.bits();
/// PAT (L1) / PSE (L2, L3).
pub const PAT_PSE: u64 = PteFlags::PAT_PSE.bits();
/// The three cache-attribute bits of an L1 entry.
pub const CACHE_ATTRS: u64 = PWT | PCD | PAT_PSE;

/// The PAT index (0-7) an L1 entry selects: PWT is bit 0, PCD bit 1 and
/// PAT bit 2 (Xen's `pte_flags_to_cacheattr`). 0 is write-back.
#[must_use]
#[allow(
    clippy::cast_possible_truncation,
    reason = "the three bits gathered are at most 7"
)]
pub const fn cache_attr(pte: u64) -> u8 {
    (((pte & PWT) >> 3) | ((pte & PCD) >> 3) | ((pte & PAT_PSE) >> 5)) as u8
}

/// The L1 entry bits that select PAT index `attr` (the inverse of
/// [`cache_attr`]; bits above 2 are ignored).
#[must_use]
pub const fn cache_attr_bits(attr: u8) -> u64 {
    let attr = attr as u64;
    ((attr & 1) << 3) | ((attr & 2) << 3) | ((attr & 4) << 5)
}
/// Flag bits of an entry: everything but the address (bits 12-51).
pub const FLAG_BITS: u64 = !PTE_ADDR_MASK;

/// Entries in one page-table page.
pub const ENTRIES: usize = 512;

/// Flags the guest may change in an entry of any level without the entry
/// being revalidated, when the frame stays the same (Xen's
/// `FASTPATH_FLAG_WHITELIST`): NX, AVAIL, AVAIL_HIGH, G, D, A, US. RW is
/// not among them: it decides the writable type of an L1 entry's frame,
/// and whether an L2-L4 entry may be a linear one.
const FASTPATH: u64 = PteFlags::NX.bits()
    | PteFlags::AVAIL_HIGH.bits()
    | PteFlags::AVAIL.bits()
    | PteFlags::GLOBAL.bits()
    | DIRTY
    | ACCESSED
    | PteFlags::USER.bits();

/// Whether an entry is present.
#[must_use]
pub const fn is_present(pte: u64) -> bool {
    pte & PRESENT != 0
}

/// Whether an entry is writable.
#[must_use]
pub const fn is_writable(pte: u64) -> bool {
    pte & RW != 0
}

/// The frame an entry points at (bits 12-51).
#[must_use]
pub const fn frame(pte: u64) -> Mfn {
    Mfn((pte & PTE_ADDR_MASK) >> 12)
}

/// The flag bits of a present L1 entry that the domain may not set; 0 if
/// the entry is acceptable. `io_caps`: the domain has I/O memory or port
/// rights (then PWT, PCD and PAT are allowed, as Xen's `l1_disallow_mask`
/// allows them).
#[must_use]
pub const fn l1_disallowed(pte: u64, io_caps: bool) -> u64 {
    let allowed = if io_caps {
        L1_ALLOWED_FLAGS.bits() | CACHE_ATTRS
    } else {
        L1_ALLOWED_FLAGS.bits()
    };
    pte & FLAG_BITS & !allowed
}

/// The flag bits of a present L2, L3 or L4 entry the guest may not set
/// (PSE, PWT, PCD, G); 0 if the entry is acceptable.
#[must_use]
pub const fn upper_disallowed(pte: u64) -> u64 {
    pte & FLAG_BITS & !L234_ALLOWED_FLAGS.bits()
}

/// Whether a new present entry (any level) differs from the old one in
/// anything that needs references taken again (Xen's `l*e_has_changed`
/// with the fast-path mask): the frame, P, RW, PSE or a cache attribute.
#[must_use]
pub const fn needs_revalidation(old: u64, new: u64) -> bool {
    (old ^ new) & (PTE_ADDR_MASK | (FLAG_BITS & !FASTPATH)) != 0
}

/// The bits Xen flips in an L1 entry mapping device memory, so that
/// device memory is never mapped cacheable: write-back (no attribute bits)
/// becomes uncacheable (PWT|PCD); write-through (PWT) and write-protect
/// (PWT|PAT) gain PCD (and lose PAT). Other combinations stay. The result
/// is XORed into the entry.
#[must_use]
pub const fn io_cache_flip(pte: u64) -> u64 {
    match pte & CACHE_ATTRS {
        0 => PWT | PCD,
        a if a == PWT || a == PWT | PAT_PSE => PCD | (pte & PAT_PSE),
        _ => 0,
    }
}

/// The index of `va` in the page table of `level` (1-4).
#[must_use]
pub const fn table_index(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * (level - 1))) & 0x1FF) as usize
}

/// Whether `va` lies under the L4 `root` in supervisor space:
/// `Some(true)` at the first present entry of the walk without the user
/// bit (nothing below it is reachable from ring 3), `Some(false)` when a
/// present leaf (a 4 KiB page, or a 2 MiB / 1 GiB superpage) is reached
/// with the user bit at every level, `None` when the walk finds no
/// present entry first, `va` is not a guest address, or `read_pte`
/// (entry `index` of table `mfn`) cannot read a table. Ring 3 cannot
/// execute from supervisor space, which is what the `SYSCALL` entry
/// relies on to tell the guest kernel's hypercalls from its user
/// programs' system calls.
#[inline]
pub fn maps_supervisor_page(
    mut read_pte: impl FnMut(Mfn, usize) -> Option<u64>,
    root: Mfn,
    va: u64,
) -> Option<bool> {
    if !is_canonical(va) || !guest_addr_ok(va) {
        return None;
    }
    let mut table = root;
    for level in [4, 3, 2, 1] {
        let entry = read_pte(table, table_index(va, level))?;
        if !is_present(entry) {
            return None;
        }
        if entry & USER == 0 {
            return Some(true);
        }
        if level == 1 || (level < 4 && entry & PAT_PSE != 0) {
            return Some(false);
        }
        table = frame(entry);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const NX: u64 = 1 << 63;
    const G: u64 = 1 << 8;
    const US: u64 = 1 << 2;
    const BIT62: u64 = 1 << 62;

    #[test]
    fn l1_rules() {
        let base = 0x1234_5000 | PRESENT | RW | US | ACCESSED | DIRTY;
        assert_eq!(l1_disallowed(base | G | NX | BIT62 | (0x7 << 9), false), 0);
        for bit in [PWT, PCD, PAT_PSE] {
            assert_eq!(l1_disallowed(base | bit, false), bit);
            assert_eq!(l1_disallowed(base | bit, true), 0);
        }
        // Address bits are never flags.
        assert_eq!(l1_disallowed(PTE_ADDR_MASK | PRESENT, false), 0);
    }

    #[test]
    fn upper_rules() {
        let base = 0x1234_5000 | PRESENT | RW | US | ACCESSED | DIRTY | NX | BIT62;
        assert_eq!(upper_disallowed(base | (0x7 << 9)), 0);
        for bit in [PAT_PSE, PWT, PCD, G] {
            assert_eq!(upper_disallowed(base | bit), bit, "bit {bit:#x}");
        }
    }

    #[test]
    fn fast_path_masks() {
        let old = 0x5000 | PRESENT | RW;
        assert!(!needs_revalidation(
            old,
            old | ACCESSED | DIRTY | G | US | NX
        ));
        assert!(needs_revalidation(old, old & !RW));
        assert!(needs_revalidation(old, old | PCD));
        assert!(needs_revalidation(old, 0x6000 | PRESENT | RW));
        assert!(needs_revalidation(old & !PRESENT, old));
        assert!(needs_revalidation(old, old | PAT_PSE));
    }

    #[test]
    fn cache_attributes_round_trip() {
        for attr in 0..8 {
            assert_eq!(
                cache_attr(cache_attr_bits(attr) | 0x5000 | PRESENT | RW),
                attr
            );
        }
        assert_eq!(cache_attr_bits(2), PCD);
        assert_eq!(cache_attr(PAT_PSE | PWT), 5);
    }

    #[test]
    fn io_flips() {
        assert_eq!(io_cache_flip(0), PWT | PCD);
        assert_eq!(io_cache_flip(PWT), PCD);
        assert_eq!(io_cache_flip(PWT | PAT_PSE), PCD | PAT_PSE);
        assert_eq!(io_cache_flip(PCD), 0);
        assert_eq!(io_cache_flip(PWT | PCD), 0);
        assert_eq!((PWT | PAT_PSE) ^ io_cache_flip(PWT | PAT_PSE), PWT | PCD);
    }

    #[test]
    fn indices_and_frames() {
        let va = 0xFFFF_FFFF_8020_3000u64;
        assert_eq!(table_index(va, 4), 511);
        assert_eq!(table_index(va, 3), 510);
        assert_eq!(table_index(va, 2), 1);
        assert_eq!(table_index(va, 1), 3);
        assert_eq!(frame(0x8000_0000_1234_5067), Mfn(0x12345));
        assert!(is_present(PRESENT) && !is_writable(PRESENT));
    }
}
