//! Starting the other CPUs, the parts that need no hardware: where their
//! start-up code goes, what it is told, where their stacks are. The
//! hardware side (INIT-SIPI-SIPI, the mode switches, each CPU's tables)
//! is `arch::x86_64::smp`.
//!
//! A CPU woken by a start-up IPI runs in real mode at the page the IPI
//! names, which must lie below 1 MiB. That page holds the start-up code
//! and, at [`params`], what it needs to reach long mode: a GDT, the far
//! pointers of its two mode switches, a root table for the switch (the
//! next three pages: an identity map of the first 2 MiB and the
//! hypervisor's half of the new CPU's own root), EFER and CR0 as the boot
//! CPU has them, and the stack, entry point and argument of the Rust code
//! that takes over.

#![forbid(unsafe_code)]

use crate::layout::{PAGE_SIZE, STACK_SIZE, STACKS_BASE};

/// The most CPUs the hypervisor starts (the rest are reported and left
/// halted).
pub const MAX_CPUS: usize = 64;

/// Pages of the start-up area: the code and its parameters, then the
/// root, directory-pointer and directory tables of the switch.
pub const STARTUP_PAGES: u64 = 4;

/// The lowest address the start-up area may take: page 0 holds the
/// real-mode interrupt table and the BIOS data area.
const AREA_LOW: u64 = 0x1000;
/// One past the highest: above it lie the EBDA and the BIOS.
const AREA_HIGH: u64 = 0x9_f000;

/// Offsets in the start-up page of what the code reads (past the code).
pub mod params {
    /// The GDT of the switch: null, 32-bit code (0x08), data (0x10),
    /// 64-bit code (0x18).
    pub const GDT: u64 = 0xf00;
    /// The GDT's pseudo-descriptor (limit, 32-bit base).
    pub const GDTR: u64 = 0xf20;
    /// Far pointer (32-bit offset, selector) to the 32-bit code.
    pub const FAR32: u64 = 0xf28;
    /// Far pointer to the 64-bit code.
    pub const FAR64: u64 = 0xf30;
    /// Physical address of the switch's root table (below 4 GiB).
    pub const CR3: u64 = 0xf38;
    /// EFER to load (long mode, NX, SYSCALL as on the boot CPU).
    pub const EFER: u64 = 0xf40;
    /// CR0 to load (paging and protection on).
    pub const CR0: u64 = 0xf48;
    /// The top of the new CPU's hypervisor stack.
    pub const STACK: u64 = 0xf50;
    /// The Rust function that takes over.
    pub const ENTRY: u64 = 0xf58;
    /// Its argument.
    pub const ARG: u64 = 0xf60;
    /// One past the parameters.
    pub const END: u64 = 0xf68;
}

/// The selectors of the switch's GDT.
pub mod selectors {
    /// 32-bit code.
    pub const CODE32: u16 = 0x08;
    /// Flat data.
    pub const DATA: u16 = 0x10;
    /// 64-bit code.
    pub const CODE64: u16 = 0x18;
}

/// The switch's GDT (see [`params::GDT`]).
pub const GDT: [u64; 4] = [
    0,
    0x00CF_9A00_0000_FFFF,
    0x00CF_9200_0000_FFFF,
    0x00AF_9A00_0000_FFFF,
];

/// Where the start-up area goes: the highest run of [`STARTUP_PAGES`]
/// free pages between 4 KiB and 0x9f000 in `free` (free RAM ranges,
/// page-aligned, in any order). `None` if there is none: then no other
/// CPU can be started.
pub fn startup_area(free: impl IntoIterator<Item = (u64, u64)>) -> Option<u64> {
    let bytes = STARTUP_PAGES * PAGE_SIZE;
    free.into_iter()
        .filter_map(|(start, end)| {
            let start = start.max(AREA_LOW).next_multiple_of(PAGE_SIZE);
            let end = end.min(AREA_HIGH) & !(PAGE_SIZE - 1);
            (end >= start + bytes).then(|| end - bytes)
        })
        .max()
}

/// The start-up IPI's vector for an area at `base` (its page number),
/// if `base` is a page below 1 MiB.
pub fn sipi_vector(base: u64) -> Option<u8> {
    if !base.is_multiple_of(PAGE_SIZE) {
        return None;
    }
    u8::try_from(base / PAGE_SIZE).ok()
}

/// The top of CPU `cpu`'s hypervisor stack: stacks follow each other
/// from [`STACKS_BASE`], each above an unmapped guard page.
pub fn stack_top(cpu: usize) -> u64 {
    let slot = u64::try_from(cpu).unwrap_or(u64::MAX) * (STACK_SIZE + PAGE_SIZE);
    STACKS_BASE + slot + PAGE_SIZE + STACK_SIZE
}

/// The GDT pseudo-descriptor of the switch for an area at `base`:
/// limit (16 bits) then 32-bit base, as `lgdtl` reads them.
pub fn gdtr(base: u64) -> [u8; 6] {
    let mut bytes = [0; 6];
    let limit = u16::try_from(GDT.len() * 8 - 1).unwrap_or(u16::MAX);
    bytes[..2].copy_from_slice(&limit.to_le_bytes());
    let at = u32::try_from(base + params::GDT).unwrap_or(0);
    bytes[2..].copy_from_slice(&at.to_le_bytes());
    bytes
}

/// A far pointer (32-bit offset, then selector) to `offset` bytes into
/// an area at `base`.
pub fn far_pointer(base: u64, offset: u64, selector: u16) -> [u8; 6] {
    let mut bytes = [0; 6];
    let at = u32::try_from(base + offset).unwrap_or(0);
    bytes[..4].copy_from_slice(&at.to_le_bytes());
    bytes[4..].copy_from_slice(&selector.to_le_bytes());
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_area_is_the_highest_fit_below_the_ebda() {
        let free = [(0x0, 0x9_fc00 & !0xfff), (0x10_0000, 0x800_0000)];
        assert_eq!(startup_area(free), Some(0x9_f000 - 0x4000));
        assert_eq!(startup_area([(0x0, 0x5000)]), Some(0x1000));
        assert_eq!(startup_area([(0x0, 0x4000)]), None, "page 0 is never used");
        assert_eq!(startup_area([(0x10_0000, 0x20_0000)]), None, "above 1 MiB");
        assert_eq!(
            startup_area([(0x2000, 0x6000), (0x8000, 0xd000)]),
            Some(0x9000)
        );
    }

    #[test]
    fn sipi_vectors_name_pages_below_1_mib() {
        assert_eq!(sipi_vector(0x9b000), Some(0x9b));
        assert_eq!(sipi_vector(0x1000), Some(1));
        assert_eq!(sipi_vector(0x10_0000), None);
        assert_eq!(sipi_vector(0x1800), None);
    }

    #[test]
    fn stacks_do_not_overlap_and_keep_their_guard_pages() {
        assert_eq!(stack_top(0), STACKS_BASE + PAGE_SIZE + STACK_SIZE);
        for cpu in 1..MAX_CPUS {
            let bottom = stack_top(cpu) - STACK_SIZE;
            assert_eq!(bottom - stack_top(cpu - 1), PAGE_SIZE);
        }
        assert!(stack_top(MAX_CPUS - 1) < crate::layout::DIRECTMAP_VIRT_START);
    }

    #[test]
    fn parameters_fit_the_page_after_the_code_and_are_aligned() {
        const { assert!(params::END <= PAGE_SIZE) };
        for at in [
            params::CR3,
            params::EFER,
            params::CR0,
            params::STACK,
            params::ENTRY,
            params::ARG,
        ] {
            assert_eq!(at % 8, 0);
        }
        assert_eq!(params::GDT + 8 * GDT.len() as u64, params::GDTR);
    }

    #[test]
    fn pointers_encode_little_endian() {
        assert_eq!(gdtr(0x9b000), [31, 0, 0x00, 0xbf, 0x09, 0x00]);
        assert_eq!(
            far_pointer(0x9b000, 0x40, selectors::CODE64),
            [0x40, 0xb0, 0x09, 0x00, 0x18, 0x00]
        );
    }
}
