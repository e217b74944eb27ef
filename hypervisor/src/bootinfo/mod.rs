//! One model of what the boot loader told us, whichever protocol it used.
//!
//! [`multiboot2`] (GRUB) and [`multiboot1`] (QEMU `-kernel`) both produce a
//! [`BootInfo`]: boot loader name, command line, memory map, modules in
//! order, the ACPI RSDP copy (multiboot2 only) and the physical ranges the
//! boot information itself occupies. Strings are borrowed from boot memory
//! for the lifetime `'a`, so that memory must stay reserved while the
//! `BootInfo` is in use (see [`BootInfo::boot_data_ranges`]).
//!
//! Invariants of a `BootInfo` built by the adapters:
//! - every memory region and module has `start <= end` (no wrapped range);
//! - at most [`MAX_MEMORY_REGIONS`] regions and [`MAX_MODULES`] modules;
//!   more is an error, never a silent cut;
//! - strings are valid UTF-8, without their terminating NUL.
//!
//! Bad boot information gives a [`BootInfoError`], never a panic.
#![forbid(unsafe_code)]

pub mod multiboot1;
pub mod multiboot2;

use core::fmt;

use crate::cmdline;
use crate::layout::PAGE_SIZE;

/// EAX at entry from a multiboot1 loader.
pub const MULTIBOOT1_MAGIC: u32 = 0x2BAD_B002;
/// EAX at entry from a multiboot2 loader.
pub const MULTIBOOT2_MAGIC: u32 = 0x36D7_6289;
/// The most memory-map entries kept (Xen's E820 limit).
pub const MAX_MEMORY_REGIONS: usize = 128;
/// The most boot modules kept.
pub const MAX_MODULES: usize = 16;
/// The most boot-data ranges recorded (info structure, tables, strings).
pub const MAX_BOOT_DATA_RANGES: usize = MAX_MODULES + 8;

/// Which boot protocol delivered the information.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// Multiboot 1 (magic 0x2BADB002).
    Multiboot1,
    /// Multiboot 2 (magic 0x36d76289).
    Multiboot2,
}

/// What a memory-map region is (multiboot/E820 types 1-5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryKind {
    /// Type 1: RAM free for use.
    Usable,
    /// Type 2: reserved.
    Reserved,
    /// Type 3: ACPI tables, reusable once they are read.
    AcpiReclaimable,
    /// Type 4: ACPI non-volatile storage, to be preserved.
    AcpiNvs,
    /// Type 5: defective RAM.
    Bad,
    /// Any other type (treated as reserved).
    Other(u32),
}

impl MemoryKind {
    /// Maps a multiboot memory-map type.
    pub fn from_multiboot(kind: u32) -> Self {
        match kind {
            1 => MemoryKind::Usable,
            2 => MemoryKind::Reserved,
            3 => MemoryKind::AcpiReclaimable,
            4 => MemoryKind::AcpiNvs,
            5 => MemoryKind::Bad,
            other => MemoryKind::Other(other),
        }
    }
}

/// A physical address range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhysRange {
    /// First address.
    pub start: u64,
    /// End address (exclusive).
    pub end: u64,
}

impl PhysRange {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// True for an empty range.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// One memory-map region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    /// First address.
    pub start: u64,
    /// End address (exclusive).
    pub end: u64,
    /// What it is.
    pub kind: MemoryKind,
}

/// One boot module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Module<'a> {
    /// First physical address.
    pub start: u64,
    /// End physical address (exclusive).
    pub end: u64,
    /// The module's string as the loader gave it (for multiboot1 loaders
    /// other than GRUB 2 it starts with the file name; see
    /// [`BootInfo::module_cmdline`]).
    pub string: &'a str,
}

impl Module<'_> {
    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// True for an empty module.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// The module's physical range.
    pub fn range(&self) -> PhysRange {
        PhysRange {
            start: self.start,
            end: self.end,
        }
    }
}

/// The ACPI RSDP as copied into a multiboot2 tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rsdp<'a> {
    /// ACPI 1.0 RSDP (20 bytes) from the "ACPI old" tag.
    V1(&'a [u8]),
    /// ACPI 2.0+ RSDP (36 bytes) from the "ACPI new" tag.
    V2(&'a [u8]),
}

impl<'a> Rsdp<'a> {
    /// The RSDP bytes.
    pub fn bytes(&self) -> &'a [u8] {
        match self {
            Rsdp::V1(bytes) | Rsdp::V2(bytes) => bytes,
        }
    }
}

/// Why the boot information was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootInfoError {
    /// EAX did not hold the protocol's magic number.
    BadMagic(u32),
    /// Boot memory could not be read.
    Unreadable {
        /// What was being read.
        what: &'static str,
        /// Its physical address.
        addr: u64,
    },
    /// A string has no NUL within its length limit.
    Unterminated {
        /// Which string.
        what: &'static str,
        /// Its physical address.
        addr: u64,
    },
    /// A string is not valid UTF-8.
    NotUtf8 {
        /// Which string.
        what: &'static str,
    },
    /// A range ends before it starts or wraps around.
    BadRange {
        /// What the range is.
        what: &'static str,
        /// Its start.
        start: u64,
        /// Its length or end as given.
        end: u64,
    },
    /// A structure or entry has an impossible size.
    BadSize {
        /// What it is.
        what: &'static str,
        /// The size found.
        size: u64,
    },
    /// More entries than this model keeps.
    TooMany {
        /// What there are too many of.
        what: &'static str,
        /// The limit.
        max: usize,
    },
    /// The multiboot2 structure is misaligned, truncated or has no end tag.
    Malformed(&'static str),
    /// Neither a memory map nor basic memory information was given.
    NoMemoryMap,
}

impl fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootInfoError::BadMagic(magic) => {
                write!(f, "boot loader magic {magic:#x} is not multiboot's")
            }
            BootInfoError::Unreadable { what, addr } => {
                write!(f, "boot info: cannot read the {what} at {addr:#x}")
            }
            BootInfoError::Unterminated { what, addr } => {
                write!(
                    f,
                    "boot info: the {what} at {addr:#x} is not NUL-terminated"
                )
            }
            BootInfoError::NotUtf8 { what } => write!(f, "boot info: the {what} is not UTF-8"),
            BootInfoError::BadRange { what, start, end } => {
                write!(f, "boot info: bad {what} range {start:#x}..{end:#x}")
            }
            BootInfoError::BadSize { what, size } => {
                write!(f, "boot info: bad {what} size {size}")
            }
            BootInfoError::TooMany { what, max } => {
                write!(f, "boot info: more than {max} {what}")
            }
            BootInfoError::Malformed(what) => write!(f, "boot info: malformed multiboot2 {what}"),
            BootInfoError::NoMemoryMap => f.write_str("boot info: no memory information"),
        }
    }
}

/// What the boot loader told us. See the module documentation.
#[derive(Clone)]
pub struct BootInfo<'a> {
    /// The protocol used.
    pub protocol: Protocol,
    /// The boot loader's name, if given.
    pub loader_name: Option<&'a str>,
    /// The command line as given ("" if none); see
    /// [`BootInfo::hypervisor_cmdline`] for the image name rule.
    pub cmdline: &'a str,
    /// Basic memory info in KiB (`mem_lower`, `mem_upper`), if given.
    pub basic_memory: Option<(u32, u32)>,
    /// The RSDP copy (multiboot2 only; prefers the ACPI 2.0 tag).
    pub rsdp: Option<Rsdp<'a>>,
    regions: [MemoryRegion; MAX_MEMORY_REGIONS],
    region_count: usize,
    modules: [Module<'a>; MAX_MODULES],
    module_count: usize,
    boot_data: [PhysRange; MAX_BOOT_DATA_RANGES],
    boot_data_count: usize,
}

impl<'a> BootInfo<'a> {
    /// An empty model for `protocol` (the adapters fill it in).
    pub fn new(protocol: Protocol) -> Self {
        BootInfo {
            protocol,
            loader_name: None,
            cmdline: "",
            basic_memory: None,
            rsdp: None,
            regions: [MemoryRegion {
                start: 0,
                end: 0,
                kind: MemoryKind::Reserved,
            }; MAX_MEMORY_REGIONS],
            region_count: 0,
            modules: [Module {
                start: 0,
                end: 0,
                string: "",
            }; MAX_MODULES],
            module_count: 0,
            boot_data: [PhysRange { start: 0, end: 0 }; MAX_BOOT_DATA_RANGES],
            boot_data_count: 0,
        }
    }

    /// Adds a memory-map region of `len` bytes at `start`.
    pub fn push_region(
        &mut self,
        start: u64,
        len: u64,
        kind: MemoryKind,
    ) -> Result<(), BootInfoError> {
        let end = start.checked_add(len).ok_or(BootInfoError::BadRange {
            what: "memory map entry",
            start,
            end: len,
        })?;
        let slot = self
            .regions
            .get_mut(self.region_count)
            .ok_or(BootInfoError::TooMany {
                what: "memory map entries",
                max: MAX_MEMORY_REGIONS,
            })?;
        *slot = MemoryRegion { start, end, kind };
        self.region_count += 1;
        Ok(())
    }

    /// Adds a module occupying `[start, end)`.
    pub fn push_module(
        &mut self,
        start: u64,
        end: u64,
        string: &'a str,
    ) -> Result<(), BootInfoError> {
        if end < start {
            return Err(BootInfoError::BadRange {
                what: "module",
                start,
                end,
            });
        }
        let slot = self
            .modules
            .get_mut(self.module_count)
            .ok_or(BootInfoError::TooMany {
                what: "modules",
                max: MAX_MODULES,
            })?;
        *slot = Module { start, end, string };
        self.module_count += 1;
        Ok(())
    }

    /// Records `len` bytes at `start` as holding boot information.
    pub fn push_boot_data(&mut self, start: u64, len: u64) -> Result<(), BootInfoError> {
        let end = start.checked_add(len).ok_or(BootInfoError::BadRange {
            what: "boot data",
            start,
            end: len,
        })?;
        let slot = self
            .boot_data
            .get_mut(self.boot_data_count)
            .ok_or(BootInfoError::TooMany {
                what: "boot data ranges",
                max: MAX_BOOT_DATA_RANGES,
            })?;
        *slot = PhysRange { start, end };
        self.boot_data_count += 1;
        Ok(())
    }

    /// The memory map, in the loader's order.
    pub fn regions(&self) -> &[MemoryRegion] {
        &self.regions[..self.region_count]
    }

    /// The modules, in the loader's order (module 0 is dom0's kernel).
    pub fn modules(&self) -> &[Module<'a>] {
        &self.modules[..self.module_count]
    }

    /// Physical ranges holding the boot information (info structure, its
    /// tables and strings): keep them out of the frame allocator while this
    /// `BootInfo` is used.
    pub fn boot_data_ranges(&self) -> &[PhysRange] {
        &self.boot_data[..self.boot_data_count]
    }

    /// The hypervisor's own command line: [`BootInfo::cmdline`] without the
    /// image name that loaders other than GRUB 2 put first (Xen's rule).
    pub fn hypervisor_cmdline(&self) -> &'a str {
        cmdline::strip_image_name(self.cmdline, self.loader_name)
    }

    /// The command line of module `index`, the file name stripped by the
    /// same rule.
    pub fn module_cmdline(&self, index: usize) -> Option<&'a str> {
        let module = self.modules().get(index)?;
        Some(cmdline::strip_image_name(module.string, self.loader_name))
    }

    /// Usable RAM, page-aligned inward, minus every non-usable region and
    /// minus `excluded` (both page-aligned outward), in address order.
    /// Overlapping usable regions are merged where they overlap.
    pub fn usable_ranges<'r>(&'r self, excluded: &'r [PhysRange]) -> UsableRanges<'r> {
        UsableRanges {
            regions: self.regions(),
            excluded,
            cursor: 0,
            done: false,
        }
    }

    /// Total usable RAM in bytes (whole pages).
    pub fn total_usable(&self) -> u64 {
        self.usable_ranges(&[]).map(|r| r.len()).sum()
    }

    /// The highest usable byte address, if there is usable RAM.
    pub fn highest_usable_address(&self) -> Option<u64> {
        self.usable_ranges(&[]).last().map(|r| r.end - 1)
    }

    /// One past the highest usable frame number (the frame allocator's
    /// `max_frame`).
    pub fn usable_frame_limit(&self) -> u64 {
        self.usable_ranges(&[])
            .last()
            .map_or(0, |r| r.end / PAGE_SIZE)
    }
}

impl fmt::Debug for BootInfo<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Only the filled part of the fixed-size tables.
        f.debug_struct("BootInfo")
            .field("protocol", &self.protocol)
            .field("loader_name", &self.loader_name)
            .field("cmdline", &self.cmdline)
            .field("basic_memory", &self.basic_memory)
            .field("rsdp", &self.rsdp)
            .field("regions", &self.regions())
            .field("modules", &self.modules())
            .field("boot_data", &self.boot_data_ranges())
            .finish()
    }
}

/// Iterator over usable RAM ranges; see [`BootInfo::usable_ranges`].
#[derive(Clone, Debug)]
pub struct UsableRanges<'r> {
    regions: &'r [MemoryRegion],
    excluded: &'r [PhysRange],
    cursor: u64,
    done: bool,
}

impl UsableRanges<'_> {
    /// The lowest usable address at or above the cursor and the end of the
    /// usable run that starts there (merging overlapping usable regions).
    fn next_usable_run(&self) -> Option<(u64, u64)> {
        let usable = self
            .regions
            .iter()
            .filter(|r| r.kind == MemoryKind::Usable)
            .filter_map(|r| {
                let start = r.start.checked_next_multiple_of(PAGE_SIZE)?;
                let end = r.end & !(PAGE_SIZE - 1);
                (end > start && end > self.cursor).then_some((start.max(self.cursor), end))
            });
        let start = usable.clone().map(|(s, _)| s).min()?;
        // Extend through usable regions that overlap or touch the run.
        let mut end = start;
        loop {
            let extended = usable
                .clone()
                .filter(|&(s, e)| s <= end && e > end)
                .map(|(_, e)| e)
                .max();
            match extended {
                Some(e) => end = e,
                None => break,
            }
        }
        Some((start, end))
    }

    /// The first blocker (non-usable region or excluded range, page-aligned
    /// outward) that intersects `[start, end)`, by start address.
    fn first_blocker(&self, start: u64, end: u64) -> Option<(u64, u64)> {
        let reserved = self
            .regions
            .iter()
            .filter(|r| r.kind != MemoryKind::Usable)
            .map(|r| (r.start, r.end));
        let excluded = self.excluded.iter().map(|r| (r.start, r.end));
        reserved
            .chain(excluded)
            .filter(|&(s, e)| e > s)
            .map(|(s, e)| {
                let s = s & !(PAGE_SIZE - 1);
                let e = e.checked_next_multiple_of(PAGE_SIZE).unwrap_or(u64::MAX);
                (s, e)
            })
            .filter(|&(s, e)| s < end && e > start)
            .min_by_key(|&(s, _)| s)
    }
}

impl Iterator for UsableRanges<'_> {
    type Item = PhysRange;

    fn next(&mut self) -> Option<PhysRange> {
        while !self.done {
            let (start, end) = self.next_usable_run()?;
            match self.first_blocker(start, end) {
                None => {
                    self.cursor = end;
                    return Some(PhysRange { start, end });
                }
                Some((blocked_start, blocked_end)) => {
                    if blocked_end == u64::MAX {
                        self.done = true;
                    }
                    self.cursor = blocked_end;
                    if blocked_start > start {
                        return Some(PhysRange {
                            start,
                            end: blocked_start,
                        });
                    }
                }
            }
        }
        None
    }
}

/// A slice length as `u64` (saturating; lengths fit on every target).
pub(crate) fn len_u64(len: usize) -> u64 {
    u64::try_from(len).unwrap_or(u64::MAX)
}

/// The little-endian `u32` at `at`, or 0 past the end (callers check sizes first).
pub(crate) fn le32(bytes: &[u8], at: usize) -> u32 {
    let mut out = [0u8; 4];
    if let Some(src) = bytes.get(at..at + 4) {
        out.copy_from_slice(src);
    }
    u32::from_le_bytes(out)
}

/// The little-endian `u64` at `at`, or 0 past the end (callers check sizes first).
pub(crate) fn le64(bytes: &[u8], at: usize) -> u64 {
    let mut out = [0u8; 8];
    if let Some(src) = bytes.get(at..at + 8) {
        out.copy_from_slice(src);
    }
    u64::from_le_bytes(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn info_with(regions: &[(u64, u64, MemoryKind)]) -> BootInfo<'static> {
        let mut info = BootInfo::new(Protocol::Multiboot2);
        for &(start, len, kind) in regions {
            info.push_region(start, len, kind).unwrap();
        }
        info
    }

    fn ranges(info: &BootInfo<'_>, excluded: &[PhysRange]) -> Vec<(u64, u64)> {
        info.usable_ranges(excluded)
            .map(|r| (r.start, r.end))
            .collect()
    }

    fn qemu_map() -> BootInfo<'static> {
        info_with(&[
            (0, 0x9fc00, MemoryKind::Usable),
            (0x9fc00, 0x400, MemoryKind::Reserved),
            (0xf0000, 0x10000, MemoryKind::Reserved),
            (MIB, 127 * MIB - 0x20000, MemoryKind::Usable),
            (128 * MIB - 0x20000, 0x20000, MemoryKind::Reserved),
            (0xfffc_0000, 0x40000, MemoryKind::Reserved),
        ])
    }

    #[test]
    fn usable_ranges_of_a_qemu_map() {
        let info = qemu_map();
        assert_eq!(
            ranges(&info, &[]),
            [(0, 0x9f000), (MIB, 128 * MIB - 0x20000)]
        );
        assert_eq!(info.total_usable(), 0x9f000 + 127 * MIB - 0x20000);
        assert_eq!(info.highest_usable_address(), Some(128 * MIB - 0x20001));
        assert_eq!(info.usable_frame_limit(), (128 * MIB - 0x20000) / 4096);
    }

    #[test]
    fn exclusions_are_rounded_outward() {
        let info = qemu_map();
        let excluded = [
            PhysRange {
                start: MIB,
                end: 3 * MIB + 1,
            },
            PhysRange {
                start: 0x10_0000_0000,
                end: 0x10_0000_1000,
            },
            PhysRange {
                start: 64 * MIB + 0x800,
                end: 64 * MIB + 0x900,
            },
            PhysRange {
                start: 0x500,
                end: 0x500,
            },
        ];
        assert_eq!(
            ranges(&info, &excluded),
            [
                (0, 0x9f000),
                (3 * MIB + 0x1000, 64 * MIB),
                (64 * MIB + 0x1000, 128 * MIB - 0x20000)
            ]
        );
    }

    #[test]
    fn reserved_inside_usable_wins_and_overlaps_merge() {
        let info = info_with(&[
            (0x10_0000, 0x30_0000, MemoryKind::Usable),
            (0x20_0000, 0x30_0000, MemoryKind::Usable),
            (0x28_0000, 0x1000, MemoryKind::AcpiNvs),
            (0x100_0000, 0x10_0000, MemoryKind::Bad),
            (0x100_0000, 0x20_0000, MemoryKind::Usable),
            (0x400_0000, 0x800, MemoryKind::Usable),
        ]);
        assert_eq!(
            ranges(&info, &[]),
            [
                (0x10_0000, 0x28_0000),
                (0x28_1000, 0x50_0000),
                (0x110_0000, 0x120_0000)
            ]
        );
    }

    #[test]
    fn exclusion_reaching_the_top_ends_iteration() {
        let info = info_with(&[(0, 1 << 40, MemoryKind::Usable)]);
        let excluded = [PhysRange {
            start: MIB,
            end: u64::MAX,
        }];
        assert_eq!(ranges(&info, &excluded), [(0, MIB)]);
        let info = info_with(&[(u64::MAX - 0x1fff, 0x1fff, MemoryKind::Usable)]);
        assert_eq!(ranges(&info, &[]), [(u64::MAX - 0x1fff, u64::MAX - 0xfff)]);
    }

    #[test]
    fn limits_are_errors_not_truncation() {
        let mut info = BootInfo::new(Protocol::Multiboot1);
        for i in 0..MAX_MEMORY_REGIONS as u64 {
            info.push_region(i * 4096, 4096, MemoryKind::Usable)
                .unwrap();
        }
        assert_eq!(
            info.push_region(0, 1, MemoryKind::Usable),
            Err(BootInfoError::TooMany {
                what: "memory map entries",
                max: MAX_MEMORY_REGIONS
            })
        );
        assert!(info.push_region(u64::MAX, 2, MemoryKind::Usable).is_err());
        assert!(info.push_module(10, 5, "").is_err());
        for _ in 0..MAX_MODULES {
            info.push_module(0, 1, "m").unwrap();
        }
        assert!(info.push_module(0, 1, "m").is_err());
        assert_eq!(info.modules().len(), MAX_MODULES);
    }

    #[test]
    fn command_lines_follow_the_loader_rule() {
        let mut info = BootInfo::new(Protocol::Multiboot1);
        info.loader_name = Some("qemu");
        info.cmdline = "/hv console=com1";
        info.push_module(0, 10, "/dom0 test=hello").unwrap();
        assert_eq!(info.hypervisor_cmdline(), "console=com1");
        assert_eq!(info.module_cmdline(0), Some("test=hello"));
        assert_eq!(info.module_cmdline(1), None);
        info.loader_name = Some("GRUB 2.06");
        info.cmdline = "console=com1";
        assert_eq!(info.hypervisor_cmdline(), "console=com1");
    }
}
