//! Segment descriptors, gates and the TSS (SDM vol. 3A §3.4.5, §6.14, §7.7).
//!
//! Descriptors are built with their accessed bit already set so the CPU
//! never writes the (read-only) GDT when loading a selector.

/// A 64-bit code segment with the given DPL.
pub const fn code64(dpl: u64) -> u64 {
    0x00AF_9B00_0000_FFFF | (dpl << 45)
}

/// A 32-bit (compatibility-mode) code segment with the given DPL.
pub const fn code32(dpl: u64) -> u64 {
    0x00CF_9B00_0000_FFFF | (dpl << 45)
}

/// A flat writable data segment with the given DPL.
pub const fn data(dpl: u64) -> u64 {
    0x00CF_9300_0000_FFFF | (dpl << 45)
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
pub const TSS_SIZE: usize = 104;

/// Builds a 64-bit TSS with `rsp0`, IST entries 1-4 and no I/O bitmap
/// (the bitmap offset points past the limit, so every port faults below IOPL).
pub fn tss_bytes(rsp0: u64, ist: [u64; 4]) -> [u8; TSS_SIZE] {
    let mut t = [0u8; TSS_SIZE];
    t[4..12].copy_from_slice(&rsp0.to_le_bytes());
    for (i, stack) in ist.iter().enumerate() {
        let at = 36 + 8 * i;
        t[at..at + 8].copy_from_slice(&stack.to_le_bytes());
    }
    // The I/O map base: the TSS size, 104, which fits 16 bits.
    #[allow(clippy::cast_possible_truncation, reason = "TSS_SIZE is 104")]
    let io_map_base = TSS_SIZE as u16;
    t[102..104].copy_from_slice(&io_map_base.to_le_bytes());
    t
}
