//! A small ELF64 reader: header fields, loadable segments and notes, as
//! file offsets, so an image can be edited in place.
//!
//! Notes are found in every `PT_NOTE` segment and every `SHT_NOTE` section;
//! a segment and a section usually cover the same bytes, so each note is
//! reported once (by the file offset of its header). Note names and
//! descriptors are padded to 4 bytes, the rule Xen's libelf uses.
//! Every offset and length read from the file is bounds-checked.
#![forbid(unsafe_code)]

use std::ops::Range;

use dom0_abi::elfnote::{XEN_ELFNOTE_NAME, XenElfNote};

/// ELF class byte for 64-bit objects.
const ELFCLASS64: u8 = 2;
/// ELF data byte for little-endian objects.
const ELFDATA2LSB: u8 = 1;
/// Program header type of a loadable segment.
const PT_LOAD: u32 = 1;
/// Program header type of a note segment.
const PT_NOTE: u32 = 4;
/// Section header type of a note section.
const SHT_NOTE: u32 = 7;
/// Size of the ELF64 file header.
const EHDR_SIZE: usize = 64;

/// File offset of `e_entry` in the ELF64 header.
pub const E_ENTRY_OFFSET: usize = 24;

/// One note, located in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    /// File offset of the note header.
    pub offset: usize,
    /// The note type.
    pub note_type: u32,
    /// File range of the name, `namesz` bytes (NUL included).
    pub name: Range<usize>,
    /// File range of the descriptor, `descsz` bytes.
    pub desc: Range<usize>,
}

/// One `PT_LOAD` segment's virtual range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadSegment {
    /// `p_vaddr`.
    pub vaddr: u64,
    /// `p_memsz`.
    pub memsz: u64,
    /// `p_offset`: where its file bytes start.
    pub offset: u64,
    /// `p_filesz`.
    pub filesz: u64,
}

fn read<const N: usize>(bytes: &[u8], at: usize) -> Result<[u8; N], String> {
    at.checked_add(N)
        .and_then(|end| bytes.get(at..end))
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| format!("ELF truncated: {N} bytes at {at:#x}"))
}

fn u16_at(bytes: &[u8], at: usize) -> Result<u16, String> {
    read::<2>(bytes, at).map(u16::from_le_bytes)
}

fn u32_at(bytes: &[u8], at: usize) -> Result<u32, String> {
    read::<4>(bytes, at).map(u32::from_le_bytes)
}

/// Reads a little-endian `u64` at file offset `at`.
pub fn u64_at(bytes: &[u8], at: usize) -> Result<u64, String> {
    read::<8>(bytes, at).map(u64::from_le_bytes)
}

/// A file offset or size from the file as a `usize`.
fn offset(value: u64) -> Result<usize, String> {
    usize::try_from(value).map_err(|_| format!("ELF offset {value:#x} too large"))
}

/// `start..start+len` if it lies inside a file of `size` bytes.
fn range(start: usize, len: usize, size: usize) -> Result<Range<usize>, String> {
    match start.checked_add(len) {
        Some(end) if end <= size => Ok(start..end),
        _ => Err(format!("ELF range {start:#x}+{len:#x} outside the file")),
    }
}

/// A table of `count` entries of `entsize` bytes at `table`: the offset of each.
fn table(
    bytes: &[u8],
    table: u64,
    entsize: u16,
    count: u16,
    min_entsize: u16,
) -> Result<Vec<usize>, String> {
    if count == 0 {
        return Ok(Vec::new());
    }
    if entsize < min_entsize {
        return Err(format!("ELF table entry size {entsize} too small"));
    }
    let table = offset(table)?;
    let all = range(
        table,
        usize::from(entsize) * usize::from(count),
        bytes.len(),
    )?;
    Ok(all.step_by(usize::from(entsize)).collect())
}

/// Checks the ELF64 little-endian header.
fn check_header(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() < EHDR_SIZE || bytes[..4] != *b"\x7fELF" {
        return Err("not an ELF file".to_owned());
    }
    if bytes[4] != ELFCLASS64 || bytes[5] != ELFDATA2LSB {
        return Err("not a little-endian ELF64 file".to_owned());
    }
    Ok(())
}

/// The program headers' file offsets.
fn program_headers(bytes: &[u8]) -> Result<Vec<usize>, String> {
    check_header(bytes)?;
    table(
        bytes,
        u64_at(bytes, 32)?,
        u16_at(bytes, 54)?,
        u16_at(bytes, 56)?,
        56,
    )
}

/// The section headers' file offsets.
fn section_headers(bytes: &[u8]) -> Result<Vec<usize>, String> {
    check_header(bytes)?;
    table(
        bytes,
        u64_at(bytes, 40)?,
        u16_at(bytes, 58)?,
        u16_at(bytes, 60)?,
        64,
    )
}

/// Every `PT_LOAD` segment.
pub fn load_segments(bytes: &[u8]) -> Result<Vec<LoadSegment>, String> {
    let mut segments = Vec::new();
    for ph in program_headers(bytes)? {
        if u32_at(bytes, ph)? == PT_LOAD {
            segments.push(LoadSegment {
                vaddr: u64_at(bytes, ph + 16)?,
                memsz: u64_at(bytes, ph + 40)?,
                offset: u64_at(bytes, ph + 8)?,
                filesz: u64_at(bytes, ph + 32)?,
            });
        }
    }
    Ok(segments)
}

/// The notes in the file range `area`, appended to `notes`.
fn walk_notes(bytes: &[u8], area: Range<usize>, notes: &mut Vec<Note>) -> Result<(), String> {
    let pad = |n: usize| n.div_ceil(4) * 4;
    let mut at = area.start;
    while at + 12 <= area.end {
        let namesz = offset(u64::from(u32_at(bytes, at)?))?;
        let descsz = offset(u64::from(u32_at(bytes, at + 4)?))?;
        let note_type = u32_at(bytes, at + 8)?;
        let name = range(at + 12, namesz, area.end)?;
        let desc = range(at + 12 + pad(namesz), descsz, area.end)?;
        notes.push(Note {
            offset: at,
            note_type,
            name,
            desc: desc.clone(),
        });
        at = desc.start + pad(descsz);
    }
    Ok(())
}

/// Every note of every `PT_NOTE` segment and `SHT_NOTE` section, each once,
/// in file order.
pub fn notes(bytes: &[u8]) -> Result<Vec<Note>, String> {
    let mut areas = Vec::new();
    for ph in program_headers(bytes)? {
        if u32_at(bytes, ph)? == PT_NOTE {
            areas.push((u64_at(bytes, ph + 8)?, u64_at(bytes, ph + 32)?));
        }
    }
    for sh in section_headers(bytes)? {
        if u32_at(bytes, sh + 4)? == SHT_NOTE {
            areas.push((u64_at(bytes, sh + 24)?, u64_at(bytes, sh + 32)?));
        }
    }
    let mut notes = Vec::new();
    for (start, len) in areas {
        walk_notes(
            bytes,
            range(offset(start)?, offset(len)?, bytes.len())?,
            &mut notes,
        )?;
    }
    notes.sort_by_key(|n| n.offset);
    notes.dedup_by_key(|n| n.offset);
    Ok(notes)
}

/// Whether a note's stored name (with its NUL) is Xen's.
pub fn is_xen_name(name: &[u8]) -> bool {
    name.strip_suffix(&[0]) == Some(XEN_ELFNOTE_NAME)
}

/// The Xen notes (name "Xen") of type `kind`.
pub fn xen_notes(bytes: &[u8], kind: XenElfNote) -> Result<Vec<Note>, String> {
    Ok(notes(bytes)?
        .into_iter()
        .filter(|n| n.note_type == kind as u32 && is_xen_name(&bytes[n.name.clone()]))
        .collect())
}

#[cfg(test)]
pub(crate) mod synthetic {
    //! A small ELF64 image built in code, for the tests of this module and
    //! of the image mutations.

    /// A note to put into the image.
    pub struct TestNote<'a> {
        pub name: &'a [u8],
        pub note_type: u32,
        pub desc: &'a [u8],
    }

    fn put_u16(v: &mut [u8], at: usize, x: u16) {
        v[at..at + 2].copy_from_slice(&x.to_le_bytes());
    }
    fn put_u32(v: &mut [u8], at: usize, x: u32) {
        v[at..at + 4].copy_from_slice(&x.to_le_bytes());
    }
    fn put_u64(v: &mut [u8], at: usize, x: u64) {
        v[at..at + 8].copy_from_slice(&x.to_le_bytes());
    }

    fn encode(notes: &[TestNote<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        for note in notes {
            for word in [note.name.len(), note.desc.len()] {
                out.extend_from_slice(&u32::try_from(word).unwrap().to_le_bytes());
            }
            out.extend_from_slice(&note.note_type.to_le_bytes());
            for part in [note.name, note.desc] {
                out.extend_from_slice(part);
                out.resize(out.len().div_ceil(4) * 4, 0);
            }
        }
        out
    }

    /// An ELF64 image: one PT_LOAD (vaddr 0xffffffff80001000, memsz 0x3000),
    /// one PT_NOTE with `segment_notes`, and two SHT_NOTE sections: one over
    /// the same bytes, one with `section_only_notes` that no segment covers.
    pub fn image(segment_notes: &[TestNote<'_>], section_only_notes: &[TestNote<'_>]) -> Vec<u8> {
        let seg = encode(segment_notes);
        let sec = encode(section_only_notes);
        let phoff = 64;
        let seg_at = phoff + 2 * 56;
        let sec_at = seg_at + seg.len();
        let shoff = (sec_at + sec.len()).div_ceil(8) * 8;
        let mut v = vec![0u8; shoff + 3 * 64];
        v[..4].copy_from_slice(b"\x7fELF");
        v[4] = 2;
        v[5] = 1;
        v[6] = 1;
        put_u16(&mut v, 16, 2);
        put_u16(&mut v, 18, 62);
        put_u32(&mut v, 20, 1);
        put_u64(&mut v, 24, 0xffff_ffff_8000_1000);
        put_u64(&mut v, 32, phoff as u64);
        put_u64(&mut v, 40, shoff as u64);
        put_u16(&mut v, 52, 64);
        put_u16(&mut v, 54, 56);
        put_u16(&mut v, 56, 2);
        put_u16(&mut v, 58, 64);
        put_u16(&mut v, 60, 3);
        // PT_LOAD
        put_u32(&mut v, phoff, 1);
        put_u64(&mut v, phoff + 16, 0xffff_ffff_8000_1000);
        put_u64(&mut v, phoff + 40, 0x3000);
        // PT_NOTE
        let ph = phoff + 56;
        put_u32(&mut v, ph, 4);
        put_u64(&mut v, ph + 8, seg_at as u64);
        put_u64(&mut v, ph + 32, seg.len() as u64);
        v[seg_at..seg_at + seg.len()].copy_from_slice(&seg);
        v[sec_at..sec_at + sec.len()].copy_from_slice(&sec);
        // Section 0 is the null section; 1 and 2 are notes.
        for (i, (at, len)) in [(seg_at, seg.len()), (sec_at, sec.len())]
            .into_iter()
            .enumerate()
        {
            let sh = shoff + (i + 1) * 64;
            put_u32(&mut v, sh + 4, 7);
            put_u64(&mut v, sh + 24, at as u64);
            put_u64(&mut v, sh + 32, len as u64);
        }
        v
    }

    /// The notes a Xen PV kernel carries, as in the test guest.
    pub fn xen_kernel() -> Vec<u8> {
        image(
            &[
                TestNote {
                    name: b"Xen\0",
                    note_type: 6,
                    desc: b"pv-tests\0",
                },
                TestNote {
                    name: b"Xen\0",
                    note_type: 5,
                    desc: b"xen-3.0\0",
                },
                TestNote {
                    name: b"GNU\0",
                    note_type: 3,
                    desc: &[1, 2, 3, 4, 5, 6, 7, 8],
                },
                TestNote {
                    name: b"Xen\0",
                    note_type: 8,
                    desc: b"generic\0",
                },
                TestNote {
                    name: b"Xen\0",
                    note_type: 17,
                    desc: &[0x00, 0x08, 0x00, 0x00],
                },
            ],
            &[TestNote {
                name: b"Xen\0",
                note_type: 2,
                desc: &[0, 0x20, 0, 0x80, 0xff, 0xff, 0xff, 0xff],
            }],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::synthetic::*;
    use super::*;

    #[test]
    fn walks_segments_and_sections_once_each() {
        let elf = xen_kernel();
        let notes = notes(&elf).unwrap();
        let types: Vec<u32> = notes.iter().map(|n| n.note_type).collect();
        assert_eq!(types, [6, 5, 3, 8, 17, 2]);
        let version = &notes[1];
        assert_eq!(&elf[version.name.clone()], b"Xen\0");
        assert_eq!(&elf[version.desc.clone()], b"xen-3.0\0");
        assert_eq!(&elf[notes[2].name.clone()], b"GNU\0");
    }

    #[test]
    fn xen_notes_by_type() {
        let elf = xen_kernel();
        let loader = xen_notes(&elf, XenElfNote::Loader).unwrap();
        assert_eq!(loader.len(), 1);
        assert_eq!(&elf[loader[0].desc.clone()], b"generic\0");
        assert_eq!(
            notes(&elf)
                .unwrap()
                .iter()
                .filter(|n| n.note_type == 3)
                .count(),
            1
        );
        assert!(
            xen_notes(&elf, XenElfNote::VirtBase).unwrap().is_empty(),
            "the GNU note is not a Xen note"
        );
        assert!(xen_notes(&elf, XenElfNote::Entry).unwrap().is_empty());
    }

    #[test]
    fn load_segments_and_entry() {
        let elf = xen_kernel();
        assert_eq!(
            load_segments(&elf).unwrap(),
            [LoadSegment {
                vaddr: 0xffff_ffff_8000_1000,
                memsz: 0x3000,
                offset: 0,
                filesz: 0,
            }]
        );
        assert_eq!(u64_at(&elf, E_ENTRY_OFFSET).unwrap(), 0xffff_ffff_8000_1000);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(notes(b"hello").is_err());
        let mut elf32 = xen_kernel();
        elf32[4] = 1;
        assert!(notes(&elf32).is_err());
        let mut overrun = xen_kernel();
        // First note's descsz far beyond the segment.
        let first = notes(&xen_kernel()).unwrap()[0].offset;
        overrun[first + 4..first + 8].copy_from_slice(&0x1000_0000u32.to_le_bytes());
        assert!(notes(&overrun).is_err());
        let mut bad_table = xen_kernel();
        bad_table[56..58].copy_from_slice(&0xffffu16.to_le_bytes());
        assert!(notes(&bad_table).is_err());
    }
}
