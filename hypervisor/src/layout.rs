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

pub use dom0_abi::layout::{
    DIRECTMAP_VIRT_START, END_RESERVED_L4_SLOT, FIRST_RESERVED_L4_SLOT, HYPERVISOR_TEXT_START,
    HYPERVISOR_VIRT_END, HYPERVISOR_VIRT_START, M2P_L4_SLOT, MACH2PHYS_VIRT_END,
    MACH2PHYS_VIRT_START, PAGE_SHIFT, PAGE_SIZE, TRAMPOLINE_L4_SLOT, TRAMPOLINE_VIRT_START,
    is_canonical, is_guest_l4_slot, l4_slot,
};

/// The L4 slot of the hypervisor image and stacks.
pub const IMAGE_SLOT: usize = l4_slot(HYPERVISOR_TEXT_START);
/// First L4 slot of the direct map.
pub const DIRECTMAP_SLOT: usize = l4_slot(DIRECTMAP_VIRT_START);
/// Per-CPU hypervisor stacks, each below an unmapped guard page.
pub const STACKS_BASE: u64 = 0xFFFF_82E0_0000_0000;
/// Size of one per-CPU hypervisor stack.
pub const STACK_SIZE: u64 = 64 * 1024;
/// End of the direct map (the end of the reserved slots): 5 TiB of RAM.
/// Physical `p` is at `DIRECTMAP_VIRT_START + p`.
pub const DIRECTMAP_END: u64 = HYPERVISOR_VIRT_END;

/// The per-CPU trampoline: the only hypervisor pages in a guest view besides
/// the M2P. Every CPU maps its own copy at the same addresses.
pub mod trampoline {
    use super::PAGE_SIZE;

    /// Start of the trampoline (L4 slot 257).
    pub const BASE: u64 = super::TRAMPOLINE_VIRT_START;
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
    /// IST stack for debug exceptions (a #DB can hit the first instruction
    /// of the SYSCALL stub, while RSP is still the guest's).
    pub const DB_STACK: u64 = BASE + 0x39000;
    /// The guest's LDT: its pages are mapped here read-only, one by one,
    /// when the CPU first touches them.
    pub const LDT: u64 = BASE + 0x40000;
    /// Pages of the LDT window (8192 descriptors).
    pub const LDT_PAGE_COUNT: usize = 16;
    /// [`LDT_PAGE_COUNT`] as an address-arithmetic value.
    pub const LDT_PAGES: u64 = LDT_PAGE_COUNT as u64;
    /// Top of a one-page stack that starts at `bottom`.
    pub const fn stack_top(bottom: u64) -> u64 {
        bottom + PAGE_SIZE
    }

    // The trampoline's pieces do not overlap and all fit in its L4 slot.
    const _: () = {
        assert!(TEXT + TEXT_MAX_PAGES * PAGE_SIZE <= DATA);
        assert!(DATA < IDT && IDT < TSS && TSS < GDT);
        assert!(GDT + GDT_PAGES * PAGE_SIZE < ENTRY_STACK);
        assert!(stack_top(ENTRY_STACK) < NMI_STACK);
        assert!(stack_top(NMI_STACK) < DF_STACK && stack_top(DF_STACK) < MC_STACK);
        assert!(stack_top(MC_STACK) < DB_STACK);
        assert!(super::l4_slot(stack_top(DB_STACK)) == super::TRAMPOLINE_L4_SLOT);
        assert!(stack_top(DB_STACK) < LDT);
        assert!(super::l4_slot(LDT + LDT_PAGES * PAGE_SIZE) == super::TRAMPOLINE_L4_SLOT);
    };

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
        /// Address of this CPU's per-CPU state (`percpu::this_cpu`), so
        /// that an entry finds it with one load, without a lock or a
        /// search.
        pub const PERCPU: u64 = 32;
        /// Address of this CPU's hypercall fast-path lane
        /// (`crate::fastpath::Lane`), read by every hypercall.
        pub const LANE: u64 = 40;
    }
}

/// Whether `[va, va + len)` is a range a guest may hand the hypervisor as a
/// buffer: it must not wrap, must be canonical throughout, and must not touch
/// the reserved slots (not even the read-only M2P, as on Xen).
///
/// This is `dom0_abi::layout::guest_range_ok` except that an empty range is
/// always accepted, whatever its address: like Xen's copy routines, a copy
/// of zero bytes succeeds without looking at the pointer.
pub const fn guest_range_ok(va: u64, len: u64) -> bool {
    len == 0 || dom0_abi::layout::guest_range_ok(va, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_slots_are_xens() {
        assert_eq!(l4_slot(HYPERVISOR_VIRT_START), FIRST_RESERVED_L4_SLOT);
        assert_eq!(l4_slot(HYPERVISOR_VIRT_END - 1), END_RESERVED_L4_SLOT - 1);
        assert_eq!(l4_slot(MACH2PHYS_VIRT_START), M2P_L4_SLOT);
        assert_eq!(l4_slot(trampoline::BASE), TRAMPOLINE_L4_SLOT);
        assert_eq!(IMAGE_SLOT, 261);
        assert_eq!(l4_slot(STACKS_BASE), IMAGE_SLOT);
        assert_eq!(DIRECTMAP_SLOT, 262);
        assert!(!is_guest_l4_slot(256) && !is_guest_l4_slot(271));
        assert!(is_guest_l4_slot(255) && is_guest_l4_slot(272));
    }

    #[test]
    fn guest_ranges() {
        assert!(guest_range_ok(0x1000, 16));
        assert!(guest_range_ok(0, 0));
        assert!(guest_range_ok(MACH2PHYS_VIRT_START, 0));
        assert!(guest_range_ok(0x7fff_ffff_f000, 0x1000));
        assert!(!guest_range_ok(0x7fff_ffff_f000, 0x1001));
        assert!(!guest_range_ok(MACH2PHYS_VIRT_START, 8));
        assert!(!guest_range_ok(DIRECTMAP_VIRT_START, 1));
        assert!(!guest_range_ok(HYPERVISOR_VIRT_END - 1, 1));
        assert!(guest_range_ok(HYPERVISOR_VIRT_END, 1));
        assert!(guest_range_ok(0xffff_ffff_ffff_f000, 0x1000));
        assert!(!guest_range_ok(0xffff_ffff_ffff_f000, 0x1001));
        assert!(!guest_range_ok(0x0000_8000_0000_0000, 1));
    }
}
