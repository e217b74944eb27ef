//! The hypervisor's virtual address map, and the rule for guest addresses.
//!
//! All of the hypervisor lives in the L4 slots Xen reserves for itself,
//! 256-271 (`0xFFFF800000000000..0xFFFF880000000000`). Guests own slots
//! 0-255 and 272-511. Two views exist per physical CPU (see
//! `docs/address-spaces.md`):
//!
//! | slot    | address                | guest view              | hypervisor view |
//! |---------|------------------------|-------------------------|-----------------|
//! | 0-255   | `0x0000000000000000`   | the guest's L4 entries  | the same        |
//! | 256     | `0xFFFF800000000000`   | M2P table, read-only    | the same        |
//! | 257     | `0xFFFF808000000000`   | this CPU's trampoline   | the same        |
//! | 261     | `0xFFFF82D080000000`   | —                       | image, stacks   |
//! | 262-271 | `0xFFFF830000000000`   | —                       | direct map      |
//! | 272-511 | `0xFFFF880000000000`   | the guest's L4 entries  | the same        |
//!
//! Invariant: nothing of the hypervisor but slots 256 and 257 is ever
//! present in a root table a guest runs on.
#![forbid(unsafe_code)]

pub use dom0_abi::layout::{HYPERVISOR_VIRT_END, HYPERVISOR_VIRT_START, MACH2PHYS_VIRT_END, MACH2PHYS_VIRT_START};

/// Bytes in a small page.
pub const PAGE_SIZE: u64 = 4096;
/// Bytes covered by one L4 entry.
pub const L4_SLOT_SIZE: u64 = 1 << 39;
/// First L4 slot reserved for the hypervisor.
pub const FIRST_RESERVED_SLOT: usize = 256;
/// One past the last reserved L4 slot.
pub const END_RESERVED_SLOT: usize = 272;
/// The L4 slot of the M2P table.
pub const M2P_SLOT: usize = 256;
/// The L4 slot of the per-CPU trampoline.
pub const TRAMPOLINE_SLOT: usize = 257;
/// The L4 slot of the hypervisor image and stacks.
pub const IMAGE_SLOT: usize = 261;
/// First L4 slot of the direct map.
pub const DIRECTMAP_SLOT: usize = 262;

/// Virtual address of physical address 0 in the image mapping (the link base).
pub const IMAGE_BASE: u64 = 0xFFFF_82D0_8000_0000;
/// Per-CPU hypervisor stacks, each below an unmapped guard page.
pub const STACKS_BASE: u64 = 0xFFFF_82E0_0000_0000;
/// Size of one per-CPU hypervisor stack.
pub const STACK_SIZE: u64 = 64 * 1024;
/// Direct map of all machine memory: physical `p` is at `DIRECTMAP_BASE + p`.
pub const DIRECTMAP_BASE: u64 = 0xFFFF_8300_0000_0000;
/// End of the direct map (the end of the reserved slots): 5 TiB of RAM.
pub const DIRECTMAP_END: u64 = HYPERVISOR_VIRT_END;

/// The per-CPU trampoline: the only hypervisor pages in a guest view besides
/// the M2P. Every CPU maps its own copy at the same addresses.
pub mod trampoline {
    use super::PAGE_SIZE;

    /// Start of the trampoline (L4 slot 257).
    pub const BASE: u64 = 0xFFFF_8080_0000_0000;
    /// Entry and exit stubs (read-execute), at most [`TEXT_MAX_PAGES`].
    pub const TEXT: u64 = BASE;
    /// Most pages of stub code the trampoline can hold.
    pub const TEXT_MAX_PAGES: u64 = 16;
    /// Read-only values the entry path trusts (see [`data`]).
    pub const DATA: u64 = BASE + 0x10000;
    /// The IDT (read-only).
    pub const IDT: u64 = BASE + 0x11000;
    /// The TSS (read-only; room for an I/O bitmap later).
    pub const TSS: u64 = BASE + 0x12000;
    /// The GDT: 14 pages of guest descriptors, then the reserved page.
    pub const GDT: u64 = BASE + 0x20000;
    /// Pages in the GDT mapping.
    pub const GDT_PAGES: u64 = 16;
    /// The entry stack (the only writable page besides the IST stacks).
    pub const ENTRY_STACK: u64 = BASE + 0x31000;
    /// IST stack for NMIs.
    pub const NMI_STACK: u64 = BASE + 0x33000;
    /// IST stack for double faults.
    pub const DF_STACK: u64 = BASE + 0x35000;
    /// IST stack for machine checks.
    pub const MC_STACK: u64 = BASE + 0x37000;
    /// Top of a one-page stack that starts at `bottom`.
    pub const fn stack_top(bottom: u64) -> u64 {
        bottom + PAGE_SIZE
    }

    /// Offsets inside the read-only data page.
    pub mod data {
        /// CR3 of this CPU's hypervisor view.
        pub const HV_CR3: u64 = 0;
        /// Top of this CPU's hypervisor stack (where the saved guest registers go).
        pub const HV_STACK_TOP: u64 = 8;
        /// CR3 of this CPU's guest view.
        pub const GUEST_CR3: u64 = 16;
        /// This CPU's number.
        pub const CPU: u64 = 24;
    }
}

/// The L4 slot an address falls in.
pub const fn l4_slot(va: u64) -> usize {
    ((va >> 39) & 511) as usize
}

/// Whether an L4 slot belongs to the hypervisor.
pub const fn is_reserved_slot(slot: usize) -> bool {
    slot >= FIRST_RESERVED_SLOT && slot < END_RESERVED_SLOT
}

/// Whether an address is canonical for 48-bit linear addresses.
pub const fn is_canonical(va: u64) -> bool {
    let top = va >> 47;
    top == 0 || top == 0x1_ffff
}

/// Whether `[va, va + len)` is a range a guest may hand the hypervisor as a
/// buffer: it must not wrap, must be canonical throughout, and must not touch
/// the reserved slots (not even the read-only M2P, as on Xen).
pub const fn guest_range_ok(va: u64, len: u64) -> bool {
    if len == 0 {
        return true;
    }
    let Some(last) = va.checked_add(len - 1) else { return false };
    if va < HYPERVISOR_VIRT_START {
        // Lower half: the whole range must stay below the canonical hole.
        last < (1 << 47)
    } else {
        va >= HYPERVISOR_VIRT_END
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_slots_are_xens() {
        assert_eq!(l4_slot(HYPERVISOR_VIRT_START), FIRST_RESERVED_SLOT);
        assert_eq!(l4_slot(HYPERVISOR_VIRT_END - 1), END_RESERVED_SLOT - 1);
        assert_eq!(l4_slot(MACH2PHYS_VIRT_START), M2P_SLOT);
        assert_eq!(l4_slot(trampoline::BASE), TRAMPOLINE_SLOT);
        assert_eq!(l4_slot(IMAGE_BASE), IMAGE_SLOT);
        assert_eq!(l4_slot(STACKS_BASE), IMAGE_SLOT);
        assert_eq!(l4_slot(DIRECTMAP_BASE), DIRECTMAP_SLOT);
        assert!(is_reserved_slot(256) && is_reserved_slot(271));
        assert!(!is_reserved_slot(255) && !is_reserved_slot(272));
    }

    #[test]
    fn trampoline_fits_in_its_slot_and_does_not_overlap() {
        use trampoline::*;
        assert!(TEXT + TEXT_MAX_PAGES * PAGE_SIZE <= DATA);
        assert!(DATA < IDT && IDT < TSS && TSS < GDT);
        assert!(GDT + GDT_PAGES * PAGE_SIZE < ENTRY_STACK);
        assert!(stack_top(ENTRY_STACK) < NMI_STACK);
        assert!(stack_top(NMI_STACK) < DF_STACK && stack_top(DF_STACK) < MC_STACK);
        assert_eq!(l4_slot(stack_top(MC_STACK)), TRAMPOLINE_SLOT);
    }

    #[test]
    fn guest_ranges() {
        assert!(guest_range_ok(0x1000, 16));
        assert!(guest_range_ok(0, 0));
        assert!(guest_range_ok(0x7fff_ffff_f000, 0x1000));
        assert!(!guest_range_ok(0x7fff_ffff_f000, 0x1001));
        assert!(!guest_range_ok(MACH2PHYS_VIRT_START, 8));
        assert!(!guest_range_ok(DIRECTMAP_BASE, 1));
        assert!(!guest_range_ok(HYPERVISOR_VIRT_END - 1, 1));
        assert!(guest_range_ok(HYPERVISOR_VIRT_END, 1));
        assert!(guest_range_ok(0xffff_ffff_ffff_f000, 0x1000));
        assert!(!guest_range_ok(0xffff_ffff_ffff_f000, 0x1001));
        assert!(!guest_range_ok(0x0000_8000_0000_0000, 1));
    }
}
