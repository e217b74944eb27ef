//! A bounds-checked reader of little-endian ELF64 x86-64 images.
//!
//! [`ElfFile::parse`] checks the identification bytes, the machine, and that
//! the program and section header tables lie inside the image; after that,
//! iterating the tables cannot fail. Everything that points further into
//! the image (segment contents, section contents, notes) is checked again
//! where it is read, and reported as an [`ElfError`], never a panic.
//!
//! The image is untrusted input: all offset arithmetic is checked.
#![forbid(unsafe_code)]

use core::fmt;

/// `e_machine` of x86-64.
pub const EM_X86_64: u16 = 62;
/// Program header type of a loadable segment.
pub const PT_LOAD: u32 = 1;
/// Program header type of a note segment.
pub const PT_NOTE: u32 = 4;
/// Section type of a note section.
pub const SHT_NOTE: u32 = 7;
/// Section type of a section without file contents (`.bss`).
pub const SHT_NOBITS: u32 = 8;
/// Segment flag: executable.
pub const PF_X: u32 = 1;
/// Segment flag: writable.
pub const PF_W: u32 = 2;
/// Segment flag: readable.
pub const PF_R: u32 = 4;

const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
const SHDR_SIZE: usize = 64;
const NOTE_HEADER_SIZE: usize = 12;

/// Which header table an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    /// The program header table.
    ProgramHeaders,
    /// The section header table.
    SectionHeaders,
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Table::ProgramHeaders => "program header",
            Table::SectionHeaders => "section header",
        })
    }
}

/// Why an image is not a readable ELF64 x86-64 file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// The image does not start with the ELF magic bytes.
    NotElf,
    /// The image ends inside the ELF header.
    TruncatedHeader,
    /// `EI_CLASS` is not ELFCLASS64.
    Not64Bit {
        /// The class byte found.
        class: u8,
    },
    /// `EI_DATA` is not little-endian.
    NotLittleEndian {
        /// The data-encoding byte found.
        data: u8,
    },
    /// `e_machine` is not x86-64.
    NotX86_64 {
        /// The machine found.
        machine: u16,
    },
    /// A header table has entries of an unexpected size.
    BadEntrySize {
        /// The table.
        table: Table,
        /// The entry size found.
        size: u16,
    },
    /// A header table does not fit inside the image.
    TableOutOfBounds {
        /// The table.
        table: Table,
    },
    /// A segment's file contents do not fit inside the image.
    SegmentOutOfBounds {
        /// Index of the program header.
        index: usize,
    },
    /// A section's contents do not fit inside the image.
    SectionOutOfBounds {
        /// Index of the section header.
        index: usize,
    },
    /// A note runs past the end of its segment or section.
    TruncatedNote {
        /// Byte offset of the note within its segment or section.
        offset: usize,
    },
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElfError::NotElf => f.write_str("not an ELF image (bad magic)"),
            ElfError::TruncatedHeader => f.write_str("ELF header truncated"),
            ElfError::Not64Bit { class } => {
                write!(
                    f,
                    "ELF class {class}: only 64-bit (ELFCLASS64) images are supported"
                )
            }
            ElfError::NotLittleEndian { data } => write!(
                f,
                "ELF data encoding {data}: only little-endian 64-bit x86-64 images are supported"
            ),
            ElfError::NotX86_64 { machine } => write!(
                f,
                "ELF machine {machine}: only 64-bit x86-64 (EM_X86_64) images are supported"
            ),
            ElfError::BadEntrySize { table, size } => {
                write!(
                    f,
                    "ELF {table} entries are {size} bytes, expected ELF64 size"
                )
            }
            ElfError::TableOutOfBounds { table } => {
                write!(
                    f,
                    "ELF {table} table truncated (runs past the end of the image)"
                )
            }
            ElfError::SegmentOutOfBounds { index } => {
                write!(
                    f,
                    "ELF segment {index} truncated (file contents past the end of the image)"
                )
            }
            ElfError::SectionOutOfBounds { index } => {
                write!(
                    f,
                    "ELF section {index} truncated (contents past the end of the image)"
                )
            }
            ElfError::TruncatedNote { offset } => {
                write!(f, "ELF note at offset {offset} truncated")
            }
        }
    }
}

/// The fields of the ELF file header this loader uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileHeader {
    /// `e_type` (executable, shared object, ...).
    pub e_type: u16,
    /// `e_machine`.
    pub machine: u16,
    /// `e_entry`: the entry point's virtual address.
    pub entry: u64,
    /// `e_phoff`: file offset of the program header table.
    pub phoff: u64,
    /// `e_shoff`: file offset of the section header table.
    pub shoff: u64,
    /// `e_flags`.
    pub flags: u32,
    /// `e_phnum`: number of program headers.
    pub phnum: u16,
    /// `e_shnum`: number of section headers.
    pub shnum: u16,
    /// `e_shstrndx`: index of the section name string table.
    pub shstrndx: u16,
}

/// One program header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProgramHeader {
    /// `p_type`.
    pub p_type: u32,
    /// `p_flags` (`PF_R | PF_W | PF_X`).
    pub flags: u32,
    /// `p_offset`: file offset of the contents.
    pub offset: u64,
    /// `p_vaddr`.
    pub vaddr: u64,
    /// `p_paddr`.
    pub paddr: u64,
    /// `p_filesz`: bytes present in the file.
    pub filesz: u64,
    /// `p_memsz`: bytes in memory (the rest is zero-filled).
    pub memsz: u64,
    /// `p_align`.
    pub align: u64,
}

impl ProgramHeader {
    /// Xen's notion of a loadable segment: `PT_LOAD` with at least one of
    /// the R, W and X flags.
    pub fn is_loadable(&self) -> bool {
        self.p_type == PT_LOAD && self.flags & (PF_R | PF_W | PF_X) != 0
    }
}

/// One section header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectionHeader {
    /// `sh_name`: offset of the name in the section name string table.
    pub name: u32,
    /// `sh_type`.
    pub sh_type: u32,
    /// `sh_flags`.
    pub flags: u64,
    /// `sh_addr`.
    pub addr: u64,
    /// `sh_offset`: file offset of the contents.
    pub offset: u64,
    /// `sh_size`.
    pub size: u64,
    /// `sh_link`.
    pub link: u32,
    /// `sh_info`.
    pub info: u32,
    /// `sh_addralign`.
    pub addralign: u64,
    /// `sh_entsize`.
    pub entsize: u64,
}

/// A parsed ELF64 x86-64 image. Cheap to copy: it borrows the image.
#[derive(Clone, Copy)]
pub struct ElfFile<'a> {
    data: &'a [u8],
    header: FileHeader,
}

impl fmt::Debug for ElfFile<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The image itself can be megabytes: show its size only.
        f.debug_struct("ElfFile")
            .field("len", &self.data.len())
            .field("header", &self.header)
            .finish()
    }
}

impl<'a> ElfFile<'a> {
    /// Checks the identification, the machine and the header tables.
    pub fn parse(data: &'a [u8]) -> Result<Self, ElfError> {
        if data.get(..4) != Some(b"\x7fELF".as_slice()) {
            return Err(ElfError::NotElf);
        }
        if data.len() < EHDR_SIZE {
            return Err(ElfError::TruncatedHeader);
        }
        let class = data[4];
        if class != 2 {
            return Err(ElfError::Not64Bit { class });
        }
        let encoding = data[5];
        if encoding != 1 {
            return Err(ElfError::NotLittleEndian { data: encoding });
        }
        let header = FileHeader {
            e_type: le16(data, 16),
            machine: le16(data, 18),
            entry: le64(data, 24),
            phoff: le64(data, 32),
            shoff: le64(data, 40),
            flags: le32(data, 48),
            phnum: le16(data, 56),
            shnum: le16(data, 60),
            shstrndx: le16(data, 62),
        };
        if header.machine != EM_X86_64 {
            return Err(ElfError::NotX86_64 {
                machine: header.machine,
            });
        }
        let phentsize = le16(data, 54);
        let shentsize = le16(data, 58);
        check_table(
            data,
            Table::ProgramHeaders,
            header.phoff,
            header.phnum,
            phentsize,
        )?;
        check_table(
            data,
            Table::SectionHeaders,
            header.shoff,
            header.shnum,
            shentsize,
        )?;
        Ok(ElfFile { data, header })
    }

    /// The whole image.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// The file header.
    pub fn header(&self) -> &FileHeader {
        &self.header
    }

    /// The program header at `index`, if it exists.
    pub fn program_header(&self, index: usize) -> Option<ProgramHeader> {
        if index >= usize::from(self.header.phnum) {
            return None;
        }
        // In bounds: `parse` checked the whole table.
        let at = to_usize(self.header.phoff)? + index * PHDR_SIZE;
        let d = self.data.get(at..at + PHDR_SIZE)?;
        Some(ProgramHeader {
            p_type: le32(d, 0),
            flags: le32(d, 4),
            offset: le64(d, 8),
            vaddr: le64(d, 16),
            paddr: le64(d, 24),
            filesz: le64(d, 32),
            memsz: le64(d, 40),
            align: le64(d, 48),
        })
    }

    /// All program headers, in table order.
    pub fn program_headers(&self) -> impl Iterator<Item = ProgramHeader> + '_ {
        (0..usize::from(self.header.phnum)).filter_map(|i| self.program_header(i))
    }

    /// The loadable segments (see [`ProgramHeader::is_loadable`]) with their
    /// program header indices.
    pub fn load_segments(&self) -> impl Iterator<Item = (usize, ProgramHeader)> + '_ {
        self.program_headers()
            .enumerate()
            .filter(|(_, ph)| ph.is_loadable())
    }

    /// The section header at `index`, if it exists.
    pub fn section_header(&self, index: usize) -> Option<SectionHeader> {
        if index >= usize::from(self.header.shnum) {
            return None;
        }
        let at = to_usize(self.header.shoff)? + index * SHDR_SIZE;
        let d = self.data.get(at..at + SHDR_SIZE)?;
        Some(SectionHeader {
            name: le32(d, 0),
            sh_type: le32(d, 4),
            flags: le64(d, 8),
            addr: le64(d, 16),
            offset: le64(d, 24),
            size: le64(d, 32),
            link: le32(d, 40),
            info: le32(d, 44),
            addralign: le64(d, 48),
            entsize: le64(d, 56),
        })
    }

    /// All section headers, in table order (index 0 included).
    pub fn section_headers(&self) -> impl Iterator<Item = SectionHeader> + '_ {
        (0..usize::from(self.header.shnum)).filter_map(|i| self.section_header(i))
    }

    /// The file contents of a segment (`p_filesz` bytes at `p_offset`).
    pub fn segment_data(&self, index: usize, ph: &ProgramHeader) -> Result<&'a [u8], ElfError> {
        file_range(self.data, ph.offset, ph.filesz).ok_or(ElfError::SegmentOutOfBounds { index })
    }

    /// The contents of a section (empty for `SHT_NOBITS`).
    pub fn section_data(&self, index: usize, sh: &SectionHeader) -> Result<&'a [u8], ElfError> {
        if sh.sh_type == SHT_NOBITS {
            return Ok(&[]);
        }
        file_range(self.data, sh.offset, sh.size).ok_or(ElfError::SectionOutOfBounds { index })
    }
}

/// The slice `[offset, offset + len)` of `data`, if it lies inside.
fn file_range(data: &[u8], offset: u64, len: u64) -> Option<&[u8]> {
    let start = to_usize(offset)?;
    let end = start.checked_add(to_usize(len)?)?;
    data.get(start..end)
}

fn check_table(
    data: &[u8],
    table: Table,
    offset: u64,
    count: u16,
    entry_size: u16,
) -> Result<(), ElfError> {
    if count == 0 {
        return Ok(());
    }
    let expected = match table {
        Table::ProgramHeaders => PHDR_SIZE,
        Table::SectionHeaders => SHDR_SIZE,
    };
    if usize::from(entry_size) != expected {
        return Err(ElfError::BadEntrySize {
            table,
            size: entry_size,
        });
    }
    let len = u64::from(count) * u64::from(entry_size);
    file_range(data, offset, len)
        .map(|_| ())
        .ok_or(ElfError::TableOutOfBounds { table })
}

/// One ELF note.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Note<'a> {
    /// The name bytes (`namesz` of them, usually NUL-terminated).
    pub name: &'a [u8],
    /// The note type.
    pub note_type: u32,
    /// The descriptor bytes (`descsz` of them).
    pub desc: &'a [u8],
}

impl Note<'_> {
    /// True when the name, up to its first NUL, equals `name`.
    pub fn has_name(&self, name: &[u8]) -> bool {
        self.name.split(|&b| b == 0).next() == Some(name)
    }
}

/// Iterates the notes packed in a `PT_NOTE` segment or `SHT_NOTE` section.
///
/// Each note is a 12-byte header (`namesz`, `descsz`, `type`), the name
/// padded to 4 bytes, then the descriptor padded to 4 bytes. Fewer than 12
/// bytes left at the end are padding. A note that does not fit yields one
/// [`ElfError::TruncatedNote`] and ends the iteration.
#[derive(Clone, Debug)]
pub struct NoteIter<'a> {
    bytes: &'a [u8],
    offset: usize,
}

impl<'a> NoteIter<'a> {
    /// Notes in `bytes` (the contents of a note segment or section).
    pub fn new(bytes: &'a [u8]) -> Self {
        NoteIter { bytes, offset: 0 }
    }

    fn parse_at(&self, offset: usize) -> Option<(Note<'a>, usize)> {
        let header = self
            .bytes
            .get(offset..offset.checked_add(NOTE_HEADER_SIZE)?)?;
        let namesz = to_usize(u64::from(le32(header, 0)))?;
        let descsz = to_usize(u64::from(le32(header, 4)))?;
        let name_start = offset + NOTE_HEADER_SIZE;
        let name_end = name_start.checked_add(namesz)?;
        let desc_start = align4(name_end)?;
        let desc_end = desc_start.checked_add(descsz)?;
        let name = self.bytes.get(name_start..name_end)?;
        let desc = self.bytes.get(desc_start..desc_end)?;
        let next = align4(desc_end)?.min(self.bytes.len());
        Some((
            Note {
                name,
                note_type: le32(header, 8),
                desc,
            },
            next,
        ))
    }
}

impl<'a> Iterator for NoteIter<'a> {
    type Item = Result<Note<'a>, ElfError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.bytes.len().saturating_sub(self.offset) < NOTE_HEADER_SIZE {
            return None;
        }
        let offset = self.offset;
        match self.parse_at(offset) {
            Some((note, next)) => {
                self.offset = next;
                Some(Ok(note))
            }
            None => {
                self.offset = self.bytes.len();
                Some(Err(ElfError::TruncatedNote { offset }))
            }
        }
    }
}

fn align4(value: usize) -> Option<usize> {
    value.checked_next_multiple_of(4)
}

fn to_usize(value: u64) -> Option<usize> {
    usize::try_from(value).ok()
}

/// Little-endian reads at fixed offsets of slices whose length the caller
/// has checked; a short slice reads as zero bytes rather than panicking.
fn le_bytes<const N: usize>(data: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = data.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}

fn le16(data: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(le_bytes(data, at))
}

fn le32(data: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(le_bytes(data, at))
}

fn le64(data: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(le_bytes(data, at))
}

#[cfg(test)]
#[allow(
    clippy::cast_possible_truncation,
    reason = "test fixtures are small, fixed-size images and counters"
)]
pub(crate) mod tests {
    use super::*;

    /// A tiny ELF64 writer for tests: segments and sections with contents.
    #[derive(Default)]
    pub(crate) struct ElfBuilder {
        pub entry: u64,
        pub machine: Option<u16>,
        pub segments: Vec<(ProgramHeader, Vec<u8>)>,
        pub sections: Vec<(SectionHeader, Vec<u8>)>,
    }

    impl ElfBuilder {
        pub(crate) fn segment(&mut self, ph: ProgramHeader, data: Vec<u8>) -> &mut Self {
            self.segments.push((ph, data));
            self
        }

        pub(crate) fn section(&mut self, sh_type: u32, data: Vec<u8>) -> &mut Self {
            let sh = SectionHeader {
                name: 0,
                sh_type,
                flags: 0,
                addr: 0,
                offset: 0,
                size: data.len() as u64,
                link: 0,
                info: 0,
                addralign: 4,
                entsize: 0,
            };
            self.sections.push((sh, data));
            self
        }

        /// Lays out: header, program headers, section headers (with a null
        /// entry first), then each content blob 8-aligned. A segment whose
        /// `offset` is `u64::MAX` gets the offset of its blob; otherwise the
        /// given offset is kept (to build broken images).
        pub(crate) fn build(&self) -> Vec<u8> {
            let phnum = self.segments.len();
            let shnum = if self.sections.is_empty() {
                0
            } else {
                self.sections.len() + 1
            };
            let phoff = EHDR_SIZE;
            let shoff = phoff + phnum * PHDR_SIZE;
            let mut out = vec![0u8; shoff + shnum * SHDR_SIZE];
            out[..4].copy_from_slice(b"\x7fELF");
            out[4] = 2;
            out[5] = 1;
            out[6] = 1;
            put16(&mut out, 16, 2);
            put16(&mut out, 18, self.machine.unwrap_or(EM_X86_64));
            put32(&mut out, 20, 1);
            put64(&mut out, 24, self.entry);
            put64(&mut out, 32, if phnum > 0 { phoff as u64 } else { 0 });
            put64(&mut out, 40, if shnum > 0 { shoff as u64 } else { 0 });
            put16(&mut out, 52, EHDR_SIZE as u16);
            put16(&mut out, 54, PHDR_SIZE as u16);
            put16(&mut out, 56, phnum as u16);
            put16(&mut out, 58, SHDR_SIZE as u16);
            put16(&mut out, 60, shnum as u16);
            for (i, (ph, data)) in self.segments.iter().enumerate() {
                let offset = append(&mut out, data);
                let mut ph = *ph;
                if ph.offset == u64::MAX {
                    ph.offset = offset;
                }
                if ph.filesz == u64::MAX {
                    ph.filesz = data.len() as u64;
                }
                let at = phoff + i * PHDR_SIZE;
                put32(&mut out, at, ph.p_type);
                put32(&mut out, at + 4, ph.flags);
                put64(&mut out, at + 8, ph.offset);
                put64(&mut out, at + 16, ph.vaddr);
                put64(&mut out, at + 24, ph.paddr);
                put64(&mut out, at + 32, ph.filesz);
                put64(&mut out, at + 40, ph.memsz);
                put64(&mut out, at + 48, ph.align);
            }
            for (i, (sh, data)) in self.sections.iter().enumerate() {
                let offset = append(&mut out, data);
                let at = shoff + (i + 1) * SHDR_SIZE;
                put32(&mut out, at + 4, sh.sh_type);
                put64(&mut out, at + 24, offset);
                put64(&mut out, at + 32, sh.size);
                put64(&mut out, at + 48, sh.addralign);
            }
            out
        }
    }

    fn append(out: &mut Vec<u8>, data: &[u8]) -> u64 {
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
        let offset = out.len() as u64;
        out.extend_from_slice(data);
        offset
    }

    pub(crate) fn put16(out: &mut [u8], at: usize, v: u16) {
        out[at..at + 2].copy_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn put32(out: &mut [u8], at: usize, v: u32) {
        out[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    pub(crate) fn put64(out: &mut [u8], at: usize, v: u64) {
        out[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    /// Encodes one note with 4-byte padding.
    pub(crate) fn note(name: &[u8], note_type: u32, desc: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
        out.extend_from_slice(&note_type.to_le_bytes());
        out.extend_from_slice(name);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
        out.extend_from_slice(desc);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
        out
    }

    pub(crate) fn load(paddr: u64, vaddr: u64, memsz: u64, flags: u32) -> ProgramHeader {
        ProgramHeader {
            p_type: PT_LOAD,
            flags,
            offset: u64::MAX,
            vaddr,
            paddr,
            filesz: u64::MAX,
            memsz,
            align: 4096,
        }
    }

    pub(crate) fn note_segment() -> ProgramHeader {
        ProgramHeader {
            p_type: PT_NOTE,
            flags: PF_R,
            offset: u64::MAX,
            vaddr: 0,
            paddr: 0,
            filesz: u64::MAX,
            memsz: 0,
            align: 4,
        }
    }

    #[test]
    fn reads_headers_and_segments() {
        let mut b = ElfBuilder {
            entry: 0x1234,
            ..Default::default()
        };
        b.segment(
            load(0x1000, 0xffff_ffff_8000_1000, 0x3000, PF_R | PF_X),
            vec![0x90; 100],
        )
        .segment(note_segment(), note(b"Xen\0", 5, b"xen-3.0\0"))
        .section(SHT_NOTE, note(b"GNU\0", 1, &[1, 2, 3]));
        let image = b.build();
        let elf = ElfFile::parse(&image).unwrap();
        assert_eq!(elf.header().entry, 0x1234);
        assert_eq!(elf.header().phnum, 2);
        let loads: Vec<_> = elf.load_segments().collect();
        assert_eq!(loads.len(), 1);
        let (index, ph) = loads[0];
        assert_eq!(index, 0);
        assert_eq!(ph.paddr, 0x1000);
        assert_eq!(ph.memsz, 0x3000);
        assert_eq!(elf.segment_data(index, &ph).unwrap(), &[0x90; 100][..]);
        let ph = elf.program_header(1).unwrap();
        let notes: Vec<_> = NoteIter::new(elf.segment_data(1, &ph).unwrap())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(notes.len(), 1);
        assert!(notes[0].has_name(b"Xen"));
        assert_eq!(notes[0].note_type, 5);
        assert_eq!(notes[0].desc, b"xen-3.0\0");
        let sections: Vec<_> = elf.section_headers().collect();
        assert_eq!(sections.len(), 2);
        assert_eq!(sections[1].sh_type, SHT_NOTE);
        let data = elf.section_data(1, &sections[1]).unwrap();
        let note = NoteIter::new(data).next().unwrap().unwrap();
        assert_eq!(note.desc, &[1, 2, 3]);
        assert!(elf.program_header(2).is_none());
    }

    #[test]
    fn rejects_non_elf_and_wrong_kinds() {
        assert_eq!(ElfFile::parse(b"").unwrap_err(), ElfError::NotElf);
        assert_eq!(ElfFile::parse(b"MZ\x90\x00").unwrap_err(), ElfError::NotElf);
        assert_eq!(
            ElfFile::parse(b"\x7fELF\x02\x01").unwrap_err(),
            ElfError::TruncatedHeader
        );
        let good = ElfBuilder::default().build();
        let mut image = good.clone();
        image[4] = 1;
        let err = ElfFile::parse(&image).unwrap_err();
        assert_eq!(err, ElfError::Not64Bit { class: 1 });
        assert!(err.to_string().contains("64-bit"));
        let mut image = good.clone();
        image[5] = 2;
        assert!(
            ElfFile::parse(&image)
                .unwrap_err()
                .to_string()
                .contains("64-bit")
        );
        let image = ElfBuilder {
            machine: Some(3),
            ..Default::default()
        }
        .build();
        let err = ElfFile::parse(&image).unwrap_err();
        assert_eq!(err, ElfError::NotX86_64 { machine: 3 });
        assert!(err.to_string().contains("64-bit"));
        assert!(ElfError::NotElf.to_string().contains("not an ELF"));
    }

    #[test]
    fn rejects_tables_outside_the_image() {
        let mut b = ElfBuilder::default();
        b.segment(load(0, 0, 16, PF_R), vec![0; 16]);
        let good = b.build();
        let mut image = good.clone();
        let len = image.len() as u64;
        put64(&mut image, 32, len - 10);
        assert_eq!(
            ElfFile::parse(&image).unwrap_err(),
            ElfError::TableOutOfBounds {
                table: Table::ProgramHeaders
            }
        );
        let mut image = good.clone();
        put64(&mut image, 32, u64::MAX - 8);
        assert!(ElfFile::parse(&image).is_err());
        let mut image = good.clone();
        put16(&mut image, 54, 32);
        assert_eq!(
            ElfFile::parse(&image).unwrap_err(),
            ElfError::BadEntrySize {
                table: Table::ProgramHeaders,
                size: 32
            }
        );
        let mut image = good.clone();
        put16(&mut image, 60, 3);
        put64(&mut image, 40, 1 << 40);
        put16(&mut image, 58, 64);
        assert_eq!(
            ElfFile::parse(&image).unwrap_err(),
            ElfError::TableOutOfBounds {
                table: Table::SectionHeaders
            }
        );
    }

    #[test]
    fn segment_contents_are_bounds_checked() {
        let mut b = ElfBuilder::default();
        let mut ph = load(0, 0, 1 << 20, PF_R);
        ph.filesz = 1 << 20;
        b.segment(ph, vec![0; 16]);
        let image = b.build();
        let elf = ElfFile::parse(&image).unwrap();
        let ph = elf.program_header(0).unwrap();
        assert_eq!(
            elf.segment_data(0, &ph).unwrap_err(),
            ElfError::SegmentOutOfBounds { index: 0 }
        );
        let mut ph = ph;
        ph.offset = u64::MAX - 2;
        ph.filesz = 10;
        assert!(elf.segment_data(0, &ph).is_err());
    }

    #[test]
    fn notes_padding_and_truncation() {
        let mut bytes = note(b"Xen\0", 1, &[1, 2, 3, 4, 5, 6, 7, 8]);
        bytes.extend(note(b"Go\0", 4, b"abc"));
        bytes.extend(note(b"", 0, b""));
        bytes.extend([0u8; 8]);
        let notes: Vec<_> = NoteIter::new(&bytes).collect::<Result<_, _>>().unwrap();
        assert_eq!(notes.len(), 3);
        assert_eq!(notes[1].name, b"Go\0");
        assert_eq!(notes[1].desc, b"abc");
        assert!(!notes[2].has_name(b"Xen"));

        // A descriptor size pointing past the end.
        let mut bad = note(b"Xen\0", 1, &[0; 8]);
        put32(&mut bad, 4, 0xffff_fff0);
        let mut iter = NoteIter::new(&bad);
        assert_eq!(
            iter.next(),
            Some(Err(ElfError::TruncatedNote { offset: 0 }))
        );
        assert_eq!(iter.next(), None);
        // The last note's padding may be missing.
        let short = &note(b"Xen\0", 1, &[1, 2])[..18];
        let n = NoteIter::new(short).next().unwrap().unwrap();
        assert_eq!(n.desc, &[1, 2]);
    }
}
