//! The adapter from Multiboot 2 boot information to [`BootInfo`].
//!
//! Two entry points share one tag decoder:
//! - [`from_boot_information`] takes the `multiboot2` crate's
//!   [`BootInformation`] (which the boot path obtains with the crate's
//!   `load`; that validates the header, the tag chain and the end tag);
//! - [`from_bytes`] takes the structure as a byte slice and validates the
//!   header and the tag chain itself, so it needs no `unsafe` anywhere and
//!   is what the host tests drive.
//!
//! Tag payloads are decoded here with explicit bounds checks rather than
//! through the crate's typed tags, whose accessors assume well-formed
//! contents (some assert). Tags used: command line (1), boot loader name
//! (2), module (3), basic memory information (4), memory map (6), ACPI old
//! (14) and new (15) RSDP copies. Other tags are ignored.
#![forbid(unsafe_code)]

use multiboot2::{BootInformation, DynSizedStructure, TagHeader, TagType};

/// A tag seen through its generic header (the crate's `GenericInfoTag`).
type GenericInfoTag = DynSizedStructure<TagHeader>;

use super::{BootInfo, BootInfoError, MemoryKind, Protocol, Rsdp};
use super::{le32, le64, len_u64};

/// Size of the fixed header (`total_size`, reserved) and of a tag header.
const HEADER_SIZE: usize = 8;
/// Size of one memory-map entry as the specification defines it.
const MMAP_ENTRY_MIN_SIZE: usize = 24;
/// Bytes of an ACPI 1.0 RSDP.
const RSDP_V1_LEN: usize = 20;
/// Bytes of an ACPI 2.0 RSDP.
const RSDP_V2_LEN: usize = 36;

/// Builds a [`BootInfo`] from the crate's view of the structure.
/// `info_paddr` is the structure's physical address (recorded as boot
/// data).
pub fn from_boot_information<'a>(
    info: &'a BootInformation<'_>,
    info_paddr: u64,
) -> Result<BootInfo<'a>, BootInfoError> {
    let total = u64::try_from(info.total_size()).unwrap_or(u64::MAX);
    from_tags(info.tags(), info_paddr, total)
}

/// Builds a [`BootInfo`] from the structure's bytes (8-byte aligned, at
/// least `total_size` long). `info_paddr` is its physical address.
pub fn from_bytes(bytes: &[u8], info_paddr: u64) -> Result<BootInfo<'_>, BootInfoError> {
    let total = bytes
        .get(..4)
        .map(|b| le32(b, 0))
        .ok_or(BootInfoError::Malformed("header"))?;
    let total_len = usize::try_from(total).unwrap_or(usize::MAX);
    if total_len < 2 * HEADER_SIZE || total_len > bytes.len() {
        return Err(BootInfoError::BadSize {
            what: "multiboot2 total",
            size: u64::from(total),
        });
    }
    let bytes = &bytes[..total_len];
    let tags = TagWalk {
        bytes,
        offset: HEADER_SIZE,
    };
    // Validate the whole chain (sizes, alignment, end tag) before use.
    let mut end_seen = false;
    for tag in tags.clone() {
        let tag = tag?;
        if tag.header().typ.get() == TagType::End.val() {
            end_seen = true;
        }
    }
    if !end_seen {
        return Err(BootInfoError::Malformed("tag list (no end tag)"));
    }
    from_tags(tags.map_while(Result::ok), info_paddr, u64::from(total))
}

/// Walks the tags of a structure whose header was checked, stopping after
/// the end tag.
#[derive(Clone)]
struct TagWalk<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> Iterator for TagWalk<'a> {
    type Item = Result<&'a GenericInfoTag, BootInfoError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.offset >= self.bytes.len() {
            return None;
        }
        let start = self.offset;
        let result = self.tag_at(start);
        match &result {
            Ok(tag) if tag.header().typ.get() != TagType::End.val() => {
                let size = usize::try_from(tag.header().size).unwrap_or(usize::MAX);
                self.offset = start + size.next_multiple_of(8);
            }
            _ => self.offset = self.bytes.len(),
        }
        Some(result)
    }
}

impl<'a> TagWalk<'a> {
    fn tag_at(&self, start: usize) -> Result<&'a GenericInfoTag, BootInfoError> {
        let header = self
            .bytes
            .get(start..start + HEADER_SIZE)
            .ok_or(BootInfoError::Malformed("tag header"))?;
        let size = usize::try_from(le32(header, 4)).unwrap_or(usize::MAX);
        if size < HEADER_SIZE {
            return Err(BootInfoError::Malformed("tag size"));
        }
        let padded = size
            .checked_next_multiple_of(8)
            .and_then(|s| start.checked_add(s))
            .ok_or(BootInfoError::Malformed("tag size"))?;
        let slice = self
            .bytes
            .get(start..padded)
            .ok_or(BootInfoError::Malformed("tag (runs past the end)"))?;
        GenericInfoTag::ref_from_slice(slice).map_err(|_| BootInfoError::Malformed("tag alignment"))
    }
}

/// Decodes the tags into a [`BootInfo`].
fn from_tags<'a>(
    tags: impl Iterator<Item = &'a GenericInfoTag>,
    info_paddr: u64,
    total_size: u64,
) -> Result<BootInfo<'a>, BootInfoError> {
    let mut info = BootInfo::new(Protocol::Multiboot2);
    info.push_boot_data(info_paddr, total_size)?;
    let mut memory_map_seen = false;
    for tag in tags {
        let payload = tag.payload();
        match TagType::from_val(tag.header().typ.get()) {
            TagType::End => break,
            TagType::Cmdline => info.cmdline = string(payload, "command line")?,
            TagType::BootLoaderName => {
                info.loader_name = Some(string(payload, "boot loader name")?);
            }
            TagType::Module => {
                let start = u64::from(le32_at(payload, 0, "module tag")?);
                let end = u64::from(le32_at(payload, 4, "module tag")?);
                let text = string(payload.get(8..).unwrap_or(&[]), "module string")?;
                info.push_module(start, end, text)?;
            }
            TagType::BasicMeminfo => {
                let lower = le32_at(payload, 0, "basic memory tag")?;
                let upper = le32_at(payload, 4, "basic memory tag")?;
                info.basic_memory = Some((lower, upper));
            }
            TagType::Mmap => {
                read_memory_map(&mut info, payload)?;
                memory_map_seen = true;
            }
            TagType::AcpiV1 => {
                let bytes = payload.get(..RSDP_V1_LEN).ok_or(BootInfoError::BadSize {
                    what: "ACPI 1.0 RSDP tag",
                    size: len_u64(payload.len()),
                })?;
                if !matches!(info.rsdp, Some(Rsdp::V2(_))) {
                    info.rsdp = Some(Rsdp::V1(bytes));
                }
            }
            TagType::AcpiV2 => {
                let bytes = payload.get(..RSDP_V2_LEN).ok_or(BootInfoError::BadSize {
                    what: "ACPI 2.0 RSDP tag",
                    size: len_u64(payload.len()),
                })?;
                info.rsdp = Some(Rsdp::V2(bytes));
            }
            _ => {}
        }
    }
    if !memory_map_seen {
        let Some((lower, upper)) = info.basic_memory else {
            return Err(BootInfoError::NoMemoryMap);
        };
        info.push_region(0, u64::from(lower) * 1024, MemoryKind::Usable)?;
        info.push_region(1 << 20, u64::from(upper) * 1024, MemoryKind::Usable)?;
    }
    Ok(info)
}

/// Memory-map tag payload: `entry_size` u32, `entry_version` u32, then
/// entries of `entry_size` bytes: base u64, length u64, type u32.
fn read_memory_map(info: &mut BootInfo<'_>, payload: &[u8]) -> Result<(), BootInfoError> {
    let entry_size = le32_at(payload, 0, "memory map tag")?;
    let step = usize::try_from(entry_size).unwrap_or(usize::MAX);
    if step < MMAP_ENTRY_MIN_SIZE || !step.is_multiple_of(8) {
        return Err(BootInfoError::BadSize {
            what: "memory map entry",
            size: u64::from(entry_size),
        });
    }
    let entries = payload.get(8..).unwrap_or(&[]);
    if !entries.len().is_multiple_of(step) {
        return Err(BootInfoError::BadSize {
            what: "memory map tag",
            size: len_u64(payload.len()),
        });
    }
    for entry in entries.chunks_exact(step) {
        let base = le64(entry, 0);
        let len = le64(entry, 8);
        if len > 0 {
            info.push_region(base, len, MemoryKind::from_multiboot(le32(entry, 16)))?;
        }
    }
    Ok(())
}

/// A NUL-terminated UTF-8 string filling a payload.
fn string<'a>(payload: &'a [u8], what: &'static str) -> Result<&'a str, BootInfoError> {
    let end = payload
        .iter()
        .position(|&b| b == 0)
        .ok_or(BootInfoError::Unterminated { what, addr: 0 })?;
    core::str::from_utf8(&payload[..end]).map_err(|_| BootInfoError::NotUtf8 { what })
}

fn le32_at(bytes: &[u8], at: usize, what: &'static str) -> Result<u32, BootInfoError> {
    bytes
        .get(at..at + 4)
        .map(|b| le32(b, 0))
        .ok_or(BootInfoError::BadSize {
            what,
            size: len_u64(bytes.len()),
        })
}

#[cfg(test)]
#[allow(
    clippy::cast_possible_truncation,
    reason = "test fixtures are small, fixed-size images and counters"
)]
mod tests {
    use super::super::PhysRange;
    use super::*;

    /// An 8-byte aligned buffer for a synthetic structure.
    #[repr(C, align(8))]
    struct Aligned([u8; 1024]);

    /// Builds a multiboot2 information structure tag by tag.
    struct Mbi {
        bytes: Vec<u8>,
    }

    impl Mbi {
        fn new() -> Self {
            Mbi { bytes: vec![0; 8] }
        }

        fn tag(mut self, typ: u32, payload: &[u8]) -> Self {
            let size = 8 + payload.len() as u32;
            self.bytes.extend_from_slice(&typ.to_le_bytes());
            self.bytes.extend_from_slice(&size.to_le_bytes());
            self.bytes.extend_from_slice(payload);
            while !self.bytes.len().is_multiple_of(8) {
                self.bytes.push(0);
            }
            self
        }

        fn string(self, typ: u32, text: &str) -> Self {
            let mut payload = text.as_bytes().to_vec();
            payload.push(0);
            self.tag(typ, &payload)
        }

        fn module(self, start: u32, end: u32, text: &str) -> Self {
            let mut payload = Vec::new();
            payload.extend_from_slice(&start.to_le_bytes());
            payload.extend_from_slice(&end.to_le_bytes());
            payload.extend_from_slice(text.as_bytes());
            payload.push(0);
            self.tag(3, &payload)
        }

        fn mmap(self, entries: &[(u64, u64, u32)]) -> Self {
            let mut payload = Vec::new();
            payload.extend_from_slice(&24u32.to_le_bytes());
            payload.extend_from_slice(&0u32.to_le_bytes());
            for &(base, len, kind) in entries {
                payload.extend_from_slice(&base.to_le_bytes());
                payload.extend_from_slice(&len.to_le_bytes());
                payload.extend_from_slice(&kind.to_le_bytes());
                payload.extend_from_slice(&0u32.to_le_bytes());
            }
            self.tag(6, &payload)
        }

        /// Adds the end tag, fills in `total_size`, copies into `buf`.
        fn finish(mut self, buf: &mut Aligned) -> usize {
            self = self.tag(0, &[]);
            let total = self.bytes.len() as u32;
            self.bytes[..4].copy_from_slice(&total.to_le_bytes());
            buf.0[..self.bytes.len()].copy_from_slice(&self.bytes);
            self.bytes.len()
        }
    }

    fn rsdp_v2() -> Vec<u8> {
        let mut rsdp = b"RSD PTR ".to_vec();
        rsdp.push(0);
        rsdp.extend_from_slice(b"QEMU  ");
        rsdp.push(2);
        rsdp.extend_from_slice(&0x7fe_0000u32.to_le_bytes());
        rsdp.extend_from_slice(&36u32.to_le_bytes());
        rsdp.extend_from_slice(&0x7fe_1000u64.to_le_bytes());
        rsdp.extend_from_slice(&[0, 0, 0, 0]);
        rsdp
    }

    fn grub_like() -> Mbi {
        Mbi::new()
            .string(1, "console=com1 dom0_mem=64M")
            .string(2, "GRUB 2.06-13+deb12u1")
            .tag(4, &[0x7f, 2, 0, 0, 0x00, 0xfc, 1, 0])
            .module(0x20_0000, 0x21_0000, "test=hello")
            .module(0x30_0000, 0x30_0100, "")
            .mmap(&[
                (0, 0x9fc00, 1),
                (0x9fc00, 0x400, 2),
                (0x10_0000, 0x7ee_0000, 1),
                (0x7fe_0000, 0x2_0000, 3),
                (0xfeff_c000, 0x4000, 4),
            ])
            .tag(14, &rsdp_v2()[..20])
            .tag(15, &rsdp_v2())
    }

    #[test]
    fn decodes_a_grub_like_structure() {
        let mut buf = Aligned([0; 1024]);
        let len = grub_like().finish(&mut buf);
        let info = from_bytes(&buf.0, 0x1_0000).unwrap();
        assert_eq!(info.protocol, Protocol::Multiboot2);
        assert_eq!(info.loader_name, Some("GRUB 2.06-13+deb12u1"));
        assert_eq!(info.cmdline, "console=com1 dom0_mem=64M");
        // GRUB 2 puts no image name first: nothing is stripped.
        assert_eq!(info.hypervisor_cmdline(), "console=com1 dom0_mem=64M");
        assert_eq!(info.basic_memory, Some((639, 130_048)));
        let modules = info.modules();
        assert_eq!(modules.len(), 2);
        assert_eq!(modules[0].string, "test=hello");
        assert_eq!(info.module_cmdline(0), Some("test=hello"));
        assert_eq!(
            modules[1].range(),
            PhysRange {
                start: 0x30_0000,
                end: 0x30_0100
            }
        );
        assert_eq!(info.regions().len(), 5);
        assert_eq!(info.regions()[3].kind, MemoryKind::AcpiReclaimable);
        assert_eq!(info.regions()[4].kind, MemoryKind::AcpiNvs);
        let Some(Rsdp::V2(rsdp)) = info.rsdp else {
            panic!("no v2 RSDP: {:?}", info.rsdp);
        };
        assert_eq!(rsdp.len(), 36);
        assert_eq!(&rsdp[..8], b"RSD PTR ");
        assert_eq!(
            info.boot_data_ranges(),
            [PhysRange {
                start: 0x1_0000,
                end: 0x1_0000 + len as u64
            }]
        );
        assert_eq!(info.total_usable(), 0x9f000 + 0x7ee_0000);
        assert_eq!(info.highest_usable_address(), Some(0x7fd_ffff));
    }

    #[test]
    fn v1_rsdp_and_basic_memory_fallback() {
        let mut buf = Aligned([0; 1024]);
        Mbi::new()
            .tag(4, &[0x7f, 2, 0, 0, 0x00, 0x04, 0, 0])
            .tag(14, &rsdp_v2()[..20])
            .finish(&mut buf);
        let info = from_bytes(&buf.0, 0).unwrap();
        assert!(matches!(info.rsdp, Some(Rsdp::V1(b)) if b.len() == 20));
        assert_eq!(info.regions().len(), 2);
        assert_eq!(info.total_usable(), 0x9f000 + 1024 * 1024);
        assert_eq!(info.cmdline, "");
        assert_eq!(info.loader_name, None);
    }

    #[test]
    fn no_memory_information_is_an_error() {
        let mut buf = Aligned([0; 1024]);
        Mbi::new().string(1, "x").finish(&mut buf);
        assert_eq!(
            from_bytes(&buf.0, 0).unwrap_err(),
            BootInfoError::NoMemoryMap
        );
    }

    #[test]
    fn structural_errors() {
        let mut buf = Aligned([0; 1024]);
        let len = grub_like().finish(&mut buf);
        // Misaligned slice.
        assert!(from_bytes(&buf.0[4..], 0).is_err());
        // Total size larger than the buffer, or tiny.
        buf.0[..4].copy_from_slice(&2000u32.to_le_bytes());
        assert!(from_bytes(&buf.0, 0).is_err());
        buf.0[..4].copy_from_slice(&4u32.to_le_bytes());
        assert!(from_bytes(&buf.0, 0).is_err());
        // No end tag (total size cut before it).
        buf.0[..4].copy_from_slice(&((len - 8) as u32).to_le_bytes());
        assert_eq!(
            from_bytes(&buf.0, 0).unwrap_err(),
            BootInfoError::Malformed("tag list (no end tag)")
        );
        // A tag size running past the end.
        let mut buf = Aligned([0; 1024]);
        grub_like().finish(&mut buf);
        buf.0[12..16].copy_from_slice(&0xffffu32.to_le_bytes());
        assert!(from_bytes(&buf.0, 0).is_err());
        // A tag size below the header size.
        buf.0[12..16].copy_from_slice(&4u32.to_le_bytes());
        assert!(from_bytes(&buf.0, 0).is_err());
    }

    #[test]
    fn bad_tag_contents() {
        let cases: Vec<Mbi> = vec![
            Mbi::new().tag(1, b"no nul"),
            Mbi::new().tag(2, &[0xff, 0xfe, 0]),
            Mbi::new().tag(3, &[1, 2, 3]),
            Mbi::new().module(0x2000, 0x1000, "backwards"),
            Mbi::new().tag(6, &[16, 0, 0, 0, 0, 0, 0, 0]),
            Mbi::new().tag(6, &[24, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3]),
            Mbi::new().mmap(&[(u64::MAX - 5, 10, 1)]),
            Mbi::new().tag(15, &[0; 20]),
            Mbi::new().tag(14, &[0; 10]),
            Mbi::new().tag(4, &[0; 4]),
        ];
        for (i, mbi) in cases.into_iter().enumerate() {
            let mut buf = Aligned([0; 1024]);
            mbi.tag(4, &[0, 0, 0, 0, 0, 4, 0, 0]).finish(&mut buf);
            assert!(from_bytes(&buf.0, 0).is_err(), "case {i}");
        }
    }

    #[test]
    fn too_many_modules() {
        let mut mbi = Mbi::new().tag(4, &[0, 0, 0, 0, 0, 4, 0, 0]);
        for i in 0..=super::super::MAX_MODULES as u32 {
            mbi = mbi.module(i * 0x1000, i * 0x1000 + 1, "m");
        }
        let mut buf = Aligned([0; 1024]);
        mbi.finish(&mut buf);
        assert!(matches!(
            from_bytes(&buf.0, 0).unwrap_err(),
            BootInfoError::TooMany {
                what: "modules",
                ..
            }
        ));
    }

    #[test]
    fn random_corruption_never_panics() {
        let mut good = Aligned([0; 1024]);
        let len = grub_like().finish(&mut good);
        let mut state = 0x0123_4567_89ab_cdefu64;
        for _ in 0..5000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut buf = Aligned(good.0);
            let at = (state % len as u64) as usize;
            buf.0[at] = (state >> 40) as u8;
            let _ = from_bytes(&buf.0, 0);
        }
    }
}
