//! Fixed virtual addresses of the x86-64 PV address space.
//!
//! L4 slots 256-271 (`0xFFFF800000000000..0xFFFF880000000000`) belong to the
//! hypervisor in every guest page table; guests own slots 0-255 and 272-511.
//! Xen's public values (`xen-x86_64.h`) are first; the project's own
//! placements inside the reserved range follow.
//!
//! # Difference from Xen
//!
//! On Xen the whole hypervisor is mapped (supervisor-only) in the reserved
//! slots of every guest. Here the guest's view of slots 256-271 holds only
//! the read-only M2P table (slot 256, at Xen's address) and a per-CPU
//! trampoline (slot 257); every other reserved address is unmapped for the
//! guest. A guest access there faults, and like Xen, with no handler the
//! domain is crashed.
//!
//! Invariants:
//! - A guest pointer passed to a hypercall is refused with `EFAULT` if it
//!   starts inside the reserved range ([`guest_addr_ok`] is Xen's rule).
//! - The M2P holds one `u64` PFN per MFN, [`MACH2PHYS_NR_ENTRIES`] entries.

/// Size of a page.
pub const PAGE_SIZE: u64 = 4096;
/// log2 of [`PAGE_SIZE`].
pub const PAGE_SHIFT: u32 = 12;

/// Start of the hypervisor-reserved range (L4 slot 256).
pub const HYPERVISOR_VIRT_START: u64 = 0xFFFF_8000_0000_0000;
/// End (exclusive) of the hypervisor-reserved range (start of L4 slot 272).
pub const HYPERVISOR_VIRT_END: u64 = 0xFFFF_8800_0000_0000;
/// Start of the read-only machine-to-physical table guests may read.
pub const MACH2PHYS_VIRT_START: u64 = 0xFFFF_8000_0000_0000;
/// End (exclusive) of the M2P window (256 GiB).
pub const MACH2PHYS_VIRT_END: u64 = 0xFFFF_8040_0000_0000;
/// Number of entries the M2P window can hold (2^35).
pub const MACH2PHYS_NR_ENTRIES: u64 = (MACH2PHYS_VIRT_END - MACH2PHYS_VIRT_START) >> 3;

/// First reserved L4 slot (256).
pub const FIRST_RESERVED_L4_SLOT: usize = 256;
/// One past the last reserved L4 slot (272).
pub const END_RESERVED_L4_SLOT: usize = 272;
/// L4 slot of the read-only M2P (256), on Xen and here.
pub const M2P_L4_SLOT: usize = 256;
/// This hypervisor: L4 slot of the per-CPU trampoline (entry stubs,
/// read-only IDT/GDT/TSS, entry stacks) mapped in the guest view (257).
pub const TRAMPOLINE_L4_SLOT: usize = 257;
/// Base of the trampoline slot (`0xFFFF808000000000`).
pub const TRAMPOLINE_VIRT_START: u64 = 0xFFFF_8080_0000_0000;
/// This hypervisor's link address (Xen's too; L4 slot 261). Never mapped in
/// a guest's view.
pub const HYPERVISOR_TEXT_START: u64 = 0xFFFF_82D0_8000_0000;
/// This hypervisor's direct map of all RAM (Xen's too; L4 slot 262). Never
/// mapped in a guest's view.
pub const DIRECTMAP_VIRT_START: u64 = 0xFFFF_8300_0000_0000;

/// The L4 slot (bits 47:39) a virtual address falls in.
#[must_use]
pub const fn l4_slot(va: u64) -> usize {
    ((va >> 39) & 0x1FF) as usize
}

/// Whether a guest may install entries in L4 slot `slot` (0-255, 272-511).
#[must_use]
pub const fn is_guest_l4_slot(slot: usize) -> bool {
    slot < FIRST_RESERVED_L4_SLOT || (slot >= END_RESERVED_L4_SLOT && slot < 512)
}

/// Whether `va` is canonical (bits 63:47 all equal).
#[must_use]
pub const fn is_canonical(va: u64) -> bool {
    #[allow(
        clippy::cast_possible_wrap,
        reason = "sign extension of the address bits"
    )]
    let signed = va as i64;
    (signed << 16) >> 16 == signed
}

/// Whether `va` lies in the hypervisor-reserved range.
#[must_use]
pub const fn in_hypervisor_range(va: u64) -> bool {
    va >= HYPERVISOR_VIRT_START && va < HYPERVISOR_VIRT_END
}

/// Xen's check of a guest pointer's *start* address (`__addr_ok`): below
/// 2^47 or at/above [`HYPERVISOR_VIRT_END`]. A hypercall given a pointer
/// that fails it returns `EFAULT` without touching memory; one that passes
/// but hits an unmapped page also returns `EFAULT`.
#[must_use]
pub const fn guest_addr_ok(va: u64) -> bool {
    va < (1 << 47) || va >= HYPERVISOR_VIRT_END
}

/// Stricter range form of [`guest_addr_ok`]: the whole `[va, va + len)`
/// is canonical guest space and touches no reserved slot. `len == 0` only
/// checks `va`.
#[must_use]
pub const fn guest_range_ok(va: u64, len: u64) -> bool {
    if !guest_addr_ok(va) {
        return false;
    }
    if len == 0 {
        return true;
    }
    let Some(last) = va.checked_add(len - 1) else {
        return false;
    };
    // Both ends in the same canonical half, none in the reserved range.
    if va < (1 << 47) {
        last < (1 << 47)
    } else {
        guest_addr_ok(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constants() {
        assert_eq!(MACH2PHYS_NR_ENTRIES, 1 << 35);
        assert_eq!(l4_slot(HYPERVISOR_VIRT_START), 256);
        assert_eq!(l4_slot(HYPERVISOR_VIRT_END), 272);
        assert_eq!(l4_slot(TRAMPOLINE_VIRT_START), TRAMPOLINE_L4_SLOT);
        assert_eq!(l4_slot(HYPERVISOR_TEXT_START), 261);
        assert_eq!(l4_slot(DIRECTMAP_VIRT_START), 262);
        assert_eq!(l4_slot(0xFFFF_87FF_FFFF_F000), 271);
        assert_eq!(l4_slot(0xFFFF_FFFF_8000_0000), 511);
    }

    #[test]
    fn guest_pointers() {
        assert!(guest_addr_ok(0x1000));
        assert!(guest_addr_ok(0xFFFF_FFFF_8000_0000));
        assert!(!guest_addr_ok(MACH2PHYS_VIRT_START));
        assert!(!guest_addr_ok(DIRECTMAP_VIRT_START));
        assert!(!guest_addr_ok(0x0000_8000_0000_0000));
        assert!(guest_range_ok(0x1000, 0));
        assert!(guest_range_ok(0x7FFF_FFFF_F000, 0x1000));
        assert!(!guest_range_ok(0x7FFF_FFFF_F000, 0x1001));
        assert!(!guest_range_ok(0xFFFF_FFFF_FFFF_F000, 0x2000));
        assert!(guest_range_ok(HYPERVISOR_VIRT_END, 16));
        assert!(is_guest_l4_slot(255) && !is_guest_l4_slot(256));
        assert!(!is_guest_l4_slot(271) && is_guest_l4_slot(272) && is_guest_l4_slot(511));
        assert!(!is_guest_l4_slot(512));
        assert!(is_canonical(0xFFFF_8000_0000_0000) && !is_canonical(0x8000_0000_0000));
        assert!(in_hypervisor_range(0xFFFF_87FF_FFFF_FFFF));
    }
}
