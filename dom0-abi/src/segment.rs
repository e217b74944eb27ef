//! Segment selectors of the hypervisor-reserved GDT area.
//!
//! The last two pages of every vCPU's GDT window (entries 7168 and up, byte
//! offset 0xE000) belong to the hypervisor; a guest GDT may hold at most
//! [`FIRST_RESERVED_GDT_ENTRY`] descriptors (14 frames).
//!
//! # Difference from Xen
//!
//! Xen runs 64-bit PV kernels in ring 3 with `FLAT_KERNEL_CS` = 0xe033.
//! This hypervisor runs them in **ring 1** with [`RING1_KERNEL_CS`] (0xe019)
//! and [`RING1_KERNEL_SS`] (0xe039); guest user mode uses Xen's ring-3
//! selectors unchanged, so SYSCALL/SYSRET need no translation.
//!
//! Invariants:
//! - Selector = entry index * 8 + RPL; each constant below is checked
//!   against its entry index at compile time.
//! - In frames the hypervisor shows the guest, CS has RPL 0 for kernel
//!   context (0xe018 here, 0xe030 on Xen) and RPL 3 for user context, as on
//!   Xen; [`is_user_cs`] tells them apart.

/// First GDT frame the hypervisor reserves (the guest owns frames 0-13).
pub const FIRST_RESERVED_GDT_PAGE: usize = 14;
/// Byte offset of the reserved area in the GDT (14 * 4096).
pub const FIRST_RESERVED_GDT_BYTE: usize = FIRST_RESERVED_GDT_PAGE * 4096;
/// First reserved GDT entry (0xE000 / 8); also the maximum `entries` of
/// `set_gdt`.
pub const FIRST_RESERVED_GDT_ENTRY: usize = FIRST_RESERVED_GDT_BYTE / 8;

/// Hypervisor 64-bit code segment (entry 7169, DPL 0).
pub const HYPERVISOR_CS: u16 = 0xe008;
/// Hypervisor data/stack segment (entry 7170, DPL 0).
pub const HYPERVISOR_DS: u16 = 0xe010;
/// Guest kernel 64-bit code segment on this hypervisor (entry 7171, DPL 1,
/// RPL 1). This is where the guest kernel runs; kernel-mode frames carry
/// it with RPL 0 (0xe018), as Xen's frames carry `FLAT_KERNEL_CS` with
/// RPL 0.
pub const RING1_KERNEL_CS: u16 = 0xe019;
/// Guest kernel stack segment on this hypervisor (entry 7175, DPL 1, RPL 1).
pub const RING1_KERNEL_SS: u16 = 0xe039;
/// Flat 32-bit user code segment (entry 7172, DPL 3); same value as Xen.
pub const FLAT_RING3_CS32: u16 = 0xe023;
/// Flat user data/stack segment (entry 7173, DPL 3); same value as Xen.
pub const FLAT_RING3_DS: u16 = 0xe02b;
/// Flat 64-bit user code segment (entry 7174, DPL 3); same value as Xen.
pub const FLAT_RING3_CS64: u16 = 0xe033;
/// Xen's name for the 32-bit flat data selector ([`FLAT_RING3_DS`]).
pub const FLAT_RING3_DS32: u16 = FLAT_RING3_DS;
/// Xen's 64-bit data selector: the null selector.
pub const FLAT_RING3_DS64: u16 = 0;
/// Xen's 32-bit stack selector ([`FLAT_RING3_DS`]).
pub const FLAT_RING3_SS32: u16 = FLAT_RING3_DS;
/// Xen's 64-bit stack selector ([`FLAT_RING3_DS`]).
pub const FLAT_RING3_SS64: u16 = FLAT_RING3_DS;

/// On **Xen**: the 64-bit PV kernel code segment (ring 3, 0xe033). Not used
/// for kernel mode on this hypervisor (see [`RING1_KERNEL_CS`]).
pub const FLAT_KERNEL_CS: u16 = FLAT_RING3_CS64;
/// On **Xen**: the 64-bit PV kernel stack segment (0xe02b). On this
/// hypervisor the kernel stack segment is [`RING1_KERNEL_SS`].
pub const FLAT_KERNEL_SS: u16 = FLAT_RING3_SS64;
/// On **Xen**: the 64-bit PV kernel data segment (null). Also usable here.
pub const FLAT_KERNEL_DS: u16 = FLAT_RING3_DS64;
/// On **Xen**: the 32-bit kernel code segment of a 64-bit PV guest (0xe023).
pub const FLAT_KERNEL_CS32: u16 = FLAT_RING3_CS32;
/// User 64-bit code segment, on Xen and here (0xe033).
pub const FLAT_USER_CS: u16 = FLAT_RING3_CS64;
/// User 32-bit code segment, on Xen and here (0xe023).
pub const FLAT_USER_CS32: u16 = FLAT_RING3_CS32;
/// User stack segment, on Xen and here (0xe02b).
pub const FLAT_USER_SS: u16 = FLAT_RING3_SS64;
/// User 64-bit data segment, on Xen and here (null).
pub const FLAT_USER_DS: u16 = FLAT_RING3_DS64;
/// On **Xen**, 32-bit PV guests only: the ring-1 kernel code segment of the
/// compat GDT. Same value as [`RING1_KERNEL_CS`], but a 32-bit segment there.
pub const XEN_COMPAT_FLAT_RING1_CS: u16 = 0xe019;
/// On **Xen**, 32-bit PV guests only: the ring-1 kernel data segment.
pub const XEN_COMPAT_FLAT_RING1_DS: u16 = 0xe021;

/// The requested privilege level (bits 1:0) of a selector.
#[must_use]
pub const fn rpl(selector: u16) -> u16 {
    selector & 3
}

/// The descriptor-table index of a selector.
#[must_use]
pub const fn index(selector: u16) -> usize {
    (selector >> 3) as usize
}

/// Whether a selector refers to the LDT (table indicator, bit 2).
#[must_use]
pub const fn is_ldt(selector: u16) -> bool {
    selector & 4 != 0
}

/// Whether a CS value from a guest frame denotes guest *user* mode.
///
/// Uses the test `CS & 2`: user RPL is 3; kernel RPL is 0 in frames (on
/// both hypervisors) and 1 in the CS the kernel runs with here.
#[must_use]
pub const fn is_user_cs(cs: u16) -> bool {
    cs & 2 != 0
}

/// Whether a selector points into the hypervisor-reserved GDT area.
#[must_use]
pub const fn is_reserved(selector: u16) -> bool {
    !is_ldt(selector) && index(selector) >= FIRST_RESERVED_GDT_ENTRY
}

const _: () = assert!(FIRST_RESERVED_GDT_ENTRY == 7168);
const _: () = assert!(FIRST_RESERVED_GDT_BYTE == 0xE000);
const _: () = assert!(index(HYPERVISOR_CS) == 7169 && rpl(HYPERVISOR_CS) == 0);
const _: () = assert!(index(HYPERVISOR_DS) == 7170 && rpl(HYPERVISOR_DS) == 0);
const _: () = assert!(index(RING1_KERNEL_CS) == 7171 && rpl(RING1_KERNEL_CS) == 1);
const _: () = assert!(index(FLAT_RING3_CS32) == 7172 && rpl(FLAT_RING3_CS32) == 3);
const _: () = assert!(index(FLAT_RING3_DS) == 7173 && rpl(FLAT_RING3_DS) == 3);
const _: () = assert!(index(FLAT_RING3_CS64) == 7174 && rpl(FLAT_RING3_CS64) == 3);
const _: () = assert!(index(RING1_KERNEL_SS) == 7175 && rpl(RING1_KERNEL_SS) == 1);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_test_works_on_both_platforms() {
        assert!(!is_user_cs(RING1_KERNEL_CS));
        assert!(!is_user_cs(FLAT_KERNEL_CS & !3)); // Xen's kernel frames: RPL 0
        assert!(is_user_cs(FLAT_USER_CS));
        assert!(is_user_cs(FLAT_USER_CS32));
        assert!(is_reserved(RING1_KERNEL_SS));
        assert!(!is_reserved(0x10));
        assert!(!is_reserved(0xe00c)); // LDT selector
    }
}
