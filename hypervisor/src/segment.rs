//! Segment descriptors, gates and the TSS of the hypervisor's own tables (SDM
//! vol. 3A §3.4.5, §6.14, §7.7): pure encodings, tested on the host.
//!
//! Descriptors are built with their accessed bit already set so the CPU
//! never writes the (read-only) GDT when loading a selector. The flat code
//! and data segments and the TSS itself are the `x86_64` crate's. The
//! system descriptors (TSS, LDT) and the interrupt gates to the entry
//! stubs are built here: the crate makes a TSS descriptor only from a
//! reference to the TSS (ours lives at a fixed address of the trampoline,
//! not in a static), has no LDT descriptor, and its gates take a handler
//! function and the code selector loaded when they are set.

use x86_64::VirtAddr;
use x86_64::structures::gdt::DescriptorFlags;
use x86_64::structures::tss::TaskStateSegment;

/// The DPL field of a descriptor for ring `dpl`.
const fn dpl_bits(dpl: u64) -> u64 {
    (dpl & 3) << 45
}

/// A 64-bit code segment with the given DPL.
pub const fn code64(dpl: u64) -> u64 {
    DescriptorFlags::KERNEL_CODE64.bits() | dpl_bits(dpl)
}

/// A 32-bit (compatibility-mode) code segment with the given DPL.
pub const fn code32(dpl: u64) -> u64 {
    DescriptorFlags::KERNEL_CODE32.bits() | dpl_bits(dpl)
}

/// A flat writable data segment with the given DPL.
pub const fn data(dpl: u64) -> u64 {
    DescriptorFlags::KERNEL_DATA.bits() | dpl_bits(dpl)
}

/// The two GDT slots of an available 64-bit TSS at `base` with `limit`.
pub const fn tss(base: u64, limit: u64) -> [u64; 2] {
    let low = (limit & 0xFFFF)
        | ((base & 0xFF_FFFF) << 16)
        | (0x89 << 40)
        | (((limit >> 16) & 0xF) << 48)
        | (((base >> 24) & 0xFF) << 56);
    [low, base >> 32]
}

/// The two GDT slots of a 64-bit LDT descriptor at `base` with `limit`.
pub const fn ldt(base: u64, limit: u64) -> [u64; 2] {
    let low = (limit & 0xFFFF)
        | ((base & 0xFF_FFFF) << 16)
        | (0x82 << 40)
        | (((limit >> 16) & 0xF) << 48)
        | (((base >> 24) & 0xFF) << 56);
    [low, base >> 32]
}

/// A 64-bit interrupt gate to `target` through code selector `selector`.
pub const fn interrupt_gate(target: u64, selector: u16, ist: u8, dpl: u8) -> [u64; 2] {
    let attrs = 0x8E | ((dpl as u64 & 3) << 5);
    let low = (target & 0xFFFF)
        | ((selector as u64) << 16)
        | ((ist as u64 & 7) << 32)
        | (attrs << 40)
        | (((target >> 16) & 0xFFFF) << 48);
    [low, target >> 32]
}

/// Size of a 64-bit TSS without an I/O bitmap.
pub const TSS_SIZE: usize = size_of::<TaskStateSegment>();

/// A 64-bit TSS with `rsp0`, IST entries 1-4 and no I/O bitmap (the
/// crate puts the bitmap offset at the TSS's size, past the limit, so
/// every port faults below IOPL).
pub fn tss_with_stacks(rsp0: u64, ist: [u64; 4]) -> TaskStateSegment {
    let mut tss = TaskStateSegment::new();
    tss.privilege_stack_table[0] = VirtAddr::new_truncate(rsp0);
    let mut stacks = [VirtAddr::zero(); 7];
    for (slot, &stack) in stacks.iter_mut().zip(&ist) {
        *slot = VirtAddr::new_truncate(stack);
    }
    tss.interrupt_stack_table = stacks;
    tss
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_segments_are_the_classic_encodings() {
        assert_eq!(code64(0), 0x00AF_9B00_0000_FFFF);
        assert_eq!(code64(1), 0x00AF_BB00_0000_FFFF);
        assert_eq!(code32(3), 0x00CF_FB00_0000_FFFF);
        assert_eq!(data(0), 0x00CF_9300_0000_FFFF);
        assert_eq!(data(1), 0x00CF_B300_0000_FFFF);
        assert_eq!(data(3), 0x00CF_F300_0000_FFFF);
    }

    #[test]
    fn tss_has_the_stacks_and_no_io_bitmap() {
        let tss = tss_with_stacks(0xffff_8000_0000_1000, [1 << 12, 2 << 12, 3 << 12, 4 << 12]);
        assert_eq!(TSS_SIZE, 104);
        assert_eq!({ tss.iomap_base }, 104);
        assert_eq!(
            { tss.privilege_stack_table }[0].as_u64(),
            0xffff_8000_0000_1000
        );
        let ist = { tss.interrupt_stack_table };
        assert_eq!(ist[3].as_u64(), 4 << 12);
        assert_eq!(ist[4].as_u64(), 0);
    }
}
