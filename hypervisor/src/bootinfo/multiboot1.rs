//! A reader of the Multiboot 1 information structure.
//!
//! Physical memory is read only through [`PhysMem`], so the reader is pure
//! and host-tested (see the tests for an example backend: a byte vector at
//! a base address). Every pointer, count, length and entry size in the
//! structure comes from the boot loader and is checked: unreadable memory,
//! wrapped ranges, entry sizes too small to hold an entry, unterminated or
//! non-UTF-8 strings and too many entries all become a [`BootInfoError`].
//!
//! Layout used (Multiboot 0.6.96 `multiboot_info`): `flags` @0,
//! `mem_lower` @4, `mem_upper` @8, `cmdline` @16, `mods_count` @20,
//! `mods_addr` @24, `mmap_length` @44, `mmap_addr` @48, `boot_loader_name`
//! @64. Module entries are 16 bytes (`mod_start`, `mod_end` exclusive,
//! `string`, reserved); memory-map entries are `size` (not counting
//! itself), `base_addr` u64, `length` u64, `type` u32.
#![forbid(unsafe_code)]

use super::{BootInfo, BootInfoError, MULTIBOOT1_MAGIC, MemoryKind, Protocol};
use super::{le32, le64, len_u64};

/// `flags` bit: `mem_lower`/`mem_upper` are valid.
pub const FLAG_MEM: u32 = 1 << 0;
/// `flags` bit: `cmdline` is valid.
pub const FLAG_CMDLINE: u32 = 1 << 2;
/// `flags` bit: `mods_count`/`mods_addr` are valid.
pub const FLAG_MODS: u32 = 1 << 3;
/// `flags` bit: `mmap_length`/`mmap_addr` are valid.
pub const FLAG_MMAP: u32 = 1 << 6;
/// `flags` bit: `boot_loader_name` is valid.
pub const FLAG_LOADER_NAME: u32 = 1 << 9;

/// Bytes of the info structure this reader uses (up to `boot_loader_name`).
pub const INFO_SIZE: usize = 68;
/// Size of one module entry.
pub const MODULE_ENTRY_SIZE: usize = 16;
/// Smallest memory-map entry `size` that holds base, length and type.
pub const MMAP_ENTRY_MIN_SIZE: u32 = 20;
/// Longest command line or module string accepted (bytes, NUL excluded).
pub const MAX_STRING_LEN: usize = 4096;
/// Longest boot loader name accepted.
pub const MAX_LOADER_NAME_LEN: usize = 256;
/// Longest memory map accepted, in bytes.
pub const MAX_MMAP_LENGTH: u32 = 64 * 1024;

/// Read access to physical memory.
pub trait PhysMem {
    /// The `len` bytes at physical address `paddr`, or `None` if any of
    /// them cannot be read.
    fn read(&self, paddr: u64, len: usize) -> Option<&[u8]>;
}

/// Reads a NUL-terminated string of at most `max_len` bytes (NUL excluded)
/// at `paddr` and returns it without the NUL.
pub fn read_cstr<'a, M: PhysMem>(
    mem: &'a M,
    paddr: u64,
    max_len: usize,
    what: &'static str,
) -> Result<&'a [u8], BootInfoError> {
    let unreadable = BootInfoError::Unreadable { what, addr: paddr };
    for len in 0..=max_len {
        let addr = paddr.checked_add(len_u64(len)).ok_or(unreadable)?;
        let byte = mem
            .read(addr, 1)
            .and_then(|b| b.first().copied())
            .ok_or(unreadable)?;
        if byte == 0 {
            return mem.read(paddr, len).ok_or(unreadable);
        }
    }
    Err(BootInfoError::Unterminated { what, addr: paddr })
}

fn read_str<'a, M: PhysMem>(
    mem: &'a M,
    paddr: u64,
    max_len: usize,
    what: &'static str,
) -> Result<&'a str, BootInfoError> {
    let bytes = read_cstr(mem, paddr, max_len, what)?;
    core::str::from_utf8(bytes).map_err(|_| BootInfoError::NotUtf8 { what })
}

/// Reads the Multiboot 1 information at `info_addr`, given the magic value
/// the loader left in EAX.
///
/// Without a memory map (`FLAG_MMAP` clear) the basic memory information
/// becomes two usable regions, `[0, mem_lower KiB)` and
/// `[1 MiB, 1 MiB + mem_upper KiB)`; with neither, the result is
/// [`BootInfoError::NoMemoryMap`].
pub fn parse<M: PhysMem>(
    mem: &M,
    magic: u32,
    info_addr: u64,
) -> Result<BootInfo<'_>, BootInfoError> {
    if magic != MULTIBOOT1_MAGIC {
        return Err(BootInfoError::BadMagic(magic));
    }
    let header = mem
        .read(info_addr, INFO_SIZE)
        .ok_or(BootInfoError::Unreadable {
            what: "multiboot1 info structure",
            addr: info_addr,
        })?;
    let field = |offset: usize| le32(header, offset);
    let flags = field(0);
    let mut info = BootInfo::new(Protocol::Multiboot1);
    info.push_boot_data(info_addr, len_u64(INFO_SIZE))?;

    if flags & FLAG_LOADER_NAME != 0 {
        let addr = u64::from(field(64));
        let name = read_str(mem, addr, MAX_LOADER_NAME_LEN, "boot loader name")?;
        info.push_boot_data(addr, len_u64(name.len() + 1))?;
        info.loader_name = Some(name);
    }
    if flags & FLAG_CMDLINE != 0 {
        let addr = u64::from(field(16));
        let cmdline = read_str(mem, addr, MAX_STRING_LEN, "command line")?;
        info.push_boot_data(addr, len_u64(cmdline.len() + 1))?;
        info.cmdline = cmdline;
    }
    if flags & FLAG_MEM != 0 {
        info.basic_memory = Some((field(4), field(8)));
    }
    if flags & FLAG_MODS != 0 {
        read_modules(mem, &mut info, field(20), u64::from(field(24)))?;
    }
    if flags & FLAG_MMAP != 0 {
        read_memory_map(mem, &mut info, field(44), u64::from(field(48)))?;
    } else if let Some((lower, upper)) = info.basic_memory {
        info.push_region(0, u64::from(lower) * 1024, MemoryKind::Usable)?;
        info.push_region(1 << 20, u64::from(upper) * 1024, MemoryKind::Usable)?;
    } else {
        return Err(BootInfoError::NoMemoryMap);
    }
    Ok(info)
}

fn read_modules<'a, M: PhysMem>(
    mem: &'a M,
    info: &mut BootInfo<'a>,
    count: u32,
    table: u64,
) -> Result<(), BootInfoError> {
    let count = usize::try_from(count).unwrap_or(usize::MAX);
    if count > super::MAX_MODULES {
        return Err(BootInfoError::TooMany {
            what: "modules",
            max: super::MAX_MODULES,
        });
    }
    let bytes = mem
        .read(table, count * MODULE_ENTRY_SIZE)
        .ok_or(BootInfoError::Unreadable {
            what: "module table",
            addr: table,
        })?;
    info.push_boot_data(table, len_u64(bytes.len()))?;
    for entry in bytes.chunks_exact(MODULE_ENTRY_SIZE) {
        let start = u64::from(le32(entry, 0));
        let end = u64::from(le32(entry, 4));
        let string_addr = u64::from(le32(entry, 8));
        let string = if string_addr == 0 {
            ""
        } else {
            let s = read_str(mem, string_addr, MAX_STRING_LEN, "module string")?;
            info.push_boot_data(string_addr, len_u64(s.len() + 1))?;
            s
        };
        info.push_module(start, end, string)?;
    }
    Ok(())
}

fn read_memory_map<M: PhysMem>(
    mem: &M,
    info: &mut BootInfo<'_>,
    length: u32,
    addr: u64,
) -> Result<(), BootInfoError> {
    if length > MAX_MMAP_LENGTH {
        return Err(BootInfoError::BadSize {
            what: "memory map",
            size: u64::from(length),
        });
    }
    let map_len = usize::try_from(length).unwrap_or(usize::MAX);
    let bytes = mem.read(addr, map_len).ok_or(BootInfoError::Unreadable {
        what: "memory map",
        addr,
    })?;
    info.push_boot_data(addr, u64::from(length))?;
    let mut offset = 0usize;
    while offset < bytes.len() {
        let size =
            bytes
                .get(offset..offset + 4)
                .map(|b| le32(b, 0))
                .ok_or(BootInfoError::BadSize {
                    what: "memory map (trailing bytes)",
                    size: len_u64(bytes.len() - offset),
                })?;
        let entry_len = usize::try_from(size).unwrap_or(usize::MAX);
        let entry = bytes
            .get(offset + 4..)
            .and_then(|rest| rest.get(..entry_len))
            .filter(|_| size >= MMAP_ENTRY_MIN_SIZE)
            .ok_or(BootInfoError::BadSize {
                what: "memory map entry",
                size: u64::from(size),
            })?;
        let base = le64(entry, 0);
        let len = le64(entry, 8);
        let kind = MemoryKind::from_multiboot(le32(entry, 16));
        if len > 0 {
            info.push_region(base, len, kind)?;
        }
        offset += 4 + entry_len;
    }
    Ok(())
}

#[cfg(test)]
#[allow(
    clippy::cast_possible_truncation,
    reason = "test fixtures are small, fixed-size images and counters"
)]
mod tests {
    use super::super::{MAX_MODULES, PhysRange};
    use super::*;

    /// Fake physical memory: `bytes` at physical address `base`.
    struct FakeMem {
        base: u64,
        bytes: Vec<u8>,
    }

    impl PhysMem for FakeMem {
        fn read(&self, paddr: u64, len: usize) -> Option<&[u8]> {
            let start = usize::try_from(paddr.checked_sub(self.base)?).ok()?;
            self.bytes.get(start..start.checked_add(len)?)
        }
    }

    const BASE: u64 = 0x9000;
    const INFO: u64 = BASE;
    const MODS: u64 = BASE + 0x100;
    const MMAP: u64 = BASE + 0x200;
    const STRINGS: u64 = BASE + 0x400;

    /// A QEMU-like info structure with two modules and a memory map.
    fn qemu_like() -> FakeMem {
        let mut mem = FakeMem {
            base: BASE,
            bytes: vec![0; 0x1000],
        };
        let flags = FLAG_MEM | FLAG_CMDLINE | FLAG_MODS | FLAG_MMAP | FLAG_LOADER_NAME;
        mem.put32(INFO, flags);
        mem.put32(INFO + 4, 639);
        mem.put32(INFO + 8, 130_048);
        let cmdline = mem.put_str(STRINGS, "/hv console=com1 dom0_mem=64M");
        mem.put32(INFO + 16, cmdline);
        let name = mem.put_str(STRINGS + 0x100, "qemu");
        mem.put32(INFO + 64, name);
        mem.put32(INFO + 20, 2);
        mem.put32(INFO + 24, MODS as u32);
        let s0 = mem.put_str(STRINGS + 0x200, "/dom0 test=hello");
        let s1 = mem.put_str(STRINGS + 0x300, "/initrd");
        for (i, (start, end, s)) in [(0x20_0000u32, 0x21_0000u32, s0), (0x30_0000, 0x30_0123, s1)]
            .into_iter()
            .enumerate()
        {
            let at = MODS + i as u64 * 16;
            mem.put32(at, start);
            mem.put32(at + 4, end);
            mem.put32(at + 8, s);
        }
        let entries = [
            (0u64, 0x9fc00u64, 1u32),
            (0x9fc00, 0x400, 2),
            (0x10_0000, 0x7ee_0000, 1),
            (0xfffc_0000, 0x4_0000, 2),
        ];
        for (i, (base, len, kind)) in entries.into_iter().enumerate() {
            let at = MMAP + i as u64 * 24;
            mem.put32(at, 20);
            mem.put64(at + 4, base);
            mem.put64(at + 12, len);
            mem.put32(at + 20, kind);
        }
        mem.put32(INFO + 44, 4 * 24);
        mem.put32(INFO + 48, MMAP as u32);
        mem
    }

    impl FakeMem {
        fn at(&mut self, paddr: u64, len: usize) -> &mut [u8] {
            let start = (paddr - self.base) as usize;
            &mut self.bytes[start..start + len]
        }

        fn put32(&mut self, paddr: u64, v: u32) {
            self.at(paddr, 4).copy_from_slice(&v.to_le_bytes());
        }

        fn put64(&mut self, paddr: u64, v: u64) {
            self.at(paddr, 8).copy_from_slice(&v.to_le_bytes());
        }

        fn put_str(&mut self, paddr: u64, s: &str) -> u32 {
            self.at(paddr, s.len()).copy_from_slice(s.as_bytes());
            self.at(paddr + s.len() as u64, 1)[0] = 0;
            paddr as u32
        }
    }

    #[test]
    fn reads_a_qemu_like_structure() {
        let mem = qemu_like();
        let info = parse(&mem, MULTIBOOT1_MAGIC, INFO).unwrap();
        assert_eq!(info.protocol, Protocol::Multiboot1);
        assert_eq!(info.loader_name, Some("qemu"));
        assert_eq!(info.cmdline, "/hv console=com1 dom0_mem=64M");
        assert_eq!(info.hypervisor_cmdline(), "console=com1 dom0_mem=64M");
        assert_eq!(info.basic_memory, Some((639, 130_048)));
        let modules = info.modules();
        assert_eq!(modules.len(), 2);
        assert_eq!((modules[0].start, modules[0].end), (0x20_0000, 0x21_0000));
        assert_eq!(modules[1].len(), 0x123);
        assert_eq!(info.module_cmdline(0), Some("test=hello"));
        assert_eq!(info.module_cmdline(1), Some(""));
        assert_eq!(info.regions().len(), 4);
        assert_eq!(info.regions()[2].kind, MemoryKind::Usable);
        assert_eq!(info.rsdp, None);
        assert_eq!(info.total_usable(), 0x9f000 + 0x7ee_0000);
        // Info structure, loader name, command line, module table, two
        // module strings, memory map.
        assert_eq!(info.boot_data_ranges().len(), 7);
        assert!(info.boot_data_ranges().contains(&PhysRange {
            start: MMAP,
            end: MMAP + 96
        }));
    }

    #[test]
    fn bad_magic_and_unreadable_info() {
        let mem = qemu_like();
        assert_eq!(
            parse(&mem, 0x36d7_6289, INFO).unwrap_err(),
            BootInfoError::BadMagic(0x36d7_6289)
        );
        assert!(matches!(
            parse(&mem, MULTIBOOT1_MAGIC, 0x100).unwrap_err(),
            BootInfoError::Unreadable { .. }
        ));
        assert!(parse(&mem, MULTIBOOT1_MAGIC, BASE + 0x1000 - 10).is_err());
    }

    #[test]
    fn falls_back_to_basic_memory() {
        let mut mem = qemu_like();
        mem.put32(INFO, FLAG_MEM);
        let info = parse(&mem, MULTIBOOT1_MAGIC, INFO).unwrap();
        assert_eq!(info.regions().len(), 2);
        assert_eq!(
            info.total_usable(),
            639 * 1024 / 4096 * 4096 + 130_048 * 1024
        );
        assert_eq!(info.loader_name, None);
        assert_eq!(info.cmdline, "");
        mem.put32(INFO, 0);
        assert_eq!(
            parse(&mem, MULTIBOOT1_MAGIC, INFO).unwrap_err(),
            BootInfoError::NoMemoryMap
        );
    }

    #[test]
    fn unterminated_and_bad_strings() {
        let mut mem = qemu_like();
        // The command line points at the last bytes with no NUL after them.
        let end = BASE + 0x1000 - 3;
        mem.at(end, 3).copy_from_slice(b"abc");
        mem.put32(INFO + 16, end as u32);
        assert!(matches!(
            parse(&mem, MULTIBOOT1_MAGIC, INFO).unwrap_err(),
            BootInfoError::Unreadable {
                what: "command line",
                ..
            }
        ));
        // Longer than allowed.
        let mut mem = qemu_like();
        mem.put32(INFO + 16, (STRINGS + 0x500) as u32);
        let long = "x".repeat(MAX_STRING_LEN + 1);
        let mut big = FakeMem {
            base: mem.base,
            bytes: mem.bytes.clone(),
        };
        big.bytes.resize(0x3000, 0);
        big.at(STRINGS + 0x500, long.len())
            .copy_from_slice(long.as_bytes());
        assert!(matches!(
            parse(&big, MULTIBOOT1_MAGIC, INFO).unwrap_err(),
            BootInfoError::Unterminated {
                what: "command line",
                ..
            }
        ));
        // Not UTF-8.
        let mut mem = qemu_like();
        mem.at(STRINGS + 0x100, 2).copy_from_slice(&[0xff, 0]);
        assert_eq!(
            parse(&mem, MULTIBOOT1_MAGIC, INFO).unwrap_err(),
            BootInfoError::NotUtf8 {
                what: "boot loader name"
            }
        );
    }

    #[test]
    fn bad_modules() {
        let mut mem = qemu_like();
        mem.put32(INFO + 20, MAX_MODULES as u32 + 1);
        assert!(matches!(
            parse(&mem, MULTIBOOT1_MAGIC, INFO).unwrap_err(),
            BootInfoError::TooMany {
                what: "modules",
                ..
            }
        ));
        let mut mem = qemu_like();
        mem.put32(MODS + 4, 0x1000);
        assert!(matches!(
            parse(&mem, MULTIBOOT1_MAGIC, INFO).unwrap_err(),
            BootInfoError::BadRange { what: "module", .. }
        ));
        let mut mem = qemu_like();
        mem.put32(INFO + 24, 0xffff_fff8);
        assert!(matches!(
            parse(&mem, MULTIBOOT1_MAGIC, INFO).unwrap_err(),
            BootInfoError::Unreadable {
                what: "module table",
                ..
            }
        ));
        let mut mem = qemu_like();
        mem.put32(MODS + 8, 0x10);
        assert!(parse(&mem, MULTIBOOT1_MAGIC, INFO).is_err());
    }

    #[test]
    fn bad_memory_maps() {
        // Entry size below 20.
        let mut mem = qemu_like();
        mem.put32(MMAP + 24, 12);
        assert!(matches!(
            parse(&mem, MULTIBOOT1_MAGIC, INFO).unwrap_err(),
            BootInfoError::BadSize {
                what: "memory map entry",
                size: 12
            }
        ));
        // Entry size running past mmap_length.
        let mut mem = qemu_like();
        mem.put32(MMAP + 72, 1000);
        assert!(parse(&mem, MULTIBOOT1_MAGIC, INFO).is_err());
        // Trailing bytes too short for a size field.
        let mut mem = qemu_like();
        mem.put32(INFO + 44, 4 * 24 + 2);
        assert!(parse(&mem, MULTIBOOT1_MAGIC, INFO).is_err());
        // base + length wraps.
        let mut mem = qemu_like();
        mem.put64(MMAP + 4, u64::MAX - 10);
        assert!(matches!(
            parse(&mem, MULTIBOOT1_MAGIC, INFO).unwrap_err(),
            BootInfoError::BadRange { .. }
        ));
        // Bigger entries (size 24) are fine, zero-length entries skipped.
        let mut mem = qemu_like();
        for i in 0..4u64 {
            mem.put32(MMAP + i * 28, 0);
        }
        let entries = [
            (0u64, 0x9f000u64, 1u32),
            (0x10_0000, 0, 1),
            (0x10_0000, 0x10_0000, 1),
        ];
        for (i, (base, len, kind)) in entries.into_iter().enumerate() {
            let at = MMAP + i as u64 * 28;
            mem.put32(at, 24);
            mem.put64(at + 4, base);
            mem.put64(at + 12, len);
            mem.put32(at + 20, kind);
        }
        mem.put32(INFO + 44, 3 * 28);
        let info = parse(&mem, MULTIBOOT1_MAGIC, INFO).unwrap();
        assert_eq!(info.regions().len(), 2);
        assert_eq!(info.total_usable(), 0x9f000 + 0x10_0000);
    }

    #[test]
    fn random_corruption_never_panics() {
        let good = qemu_like();
        let mut state = 0xdead_beef_1234_5678u64;
        for _ in 0..5000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut mem = FakeMem {
                base: good.base,
                bytes: good.bytes.clone(),
            };
            // Corrupt one byte of the first KiB (info, tables, map).
            let at = (state % 0x400) as usize;
            mem.bytes[at] = (state >> 40) as u8;
            let _ = parse(&mem, MULTIBOOT1_MAGIC, INFO);
        }
    }
}
