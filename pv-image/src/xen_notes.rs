//! Xen ELF notes and Xen's rules for accepting a PV kernel image.
//!
//! [`GuestImageInfo::parse`] reads the notes named `"Xen"` and applies the
//! checks of Xen's loader (libelf's `elf_xen_parse`, `elf_xen_note_check`
//! and `elf_xen_addr_calc_check`, whose documented behaviour is followed
//! here; the code is this project's own):
//!
//! 1. Notes come from `PT_NOTE` segments with a non-zero file offset; only
//!    when those hold no Xen note are `SHT_NOTE` sections read. The legacy
//!    `__xen_guest` section is not supported.
//! 2. `LOADER` starts with `generic`, or `GUEST_OS` starts with `linux`.
//! 3. `XEN_VERSION` starts with `xen-3.0`.
//! 4. `FEATURES` names are separated by `|`; a `!` prefix marks a feature
//!    required; an unknown required feature rejects the image, an unknown
//!    optional one is ignored. `SUPPORTED_FEATURES` is ORed in.
//! 5. `VIRT_BASE` defaults to 0; `PADDR_OFFSET` defaults to 0 and may not be
//!    given without `VIRT_BASE`; `virt_offset = virt_base - paddr_offset`;
//!    the kernel spans `[kstart, kend)` = the loadable segments' physical
//!    span shifted by `virt_offset`; the entry is the `ENTRY` note or else
//!    `e_entry` (a virtual address, used as is).
//! 6. `virt_base <= kstart <= entry <= kend`, and an `INIT_P2M` address must
//!    not lie in `[kstart, kend)`.
//!
//! [`GuestImageInfo::check_dom0`] adds the dom0 rules of Xen's PV dom0
//! builder. Where this module is stricter than Xen (numeric notes of an odd
//! size, segments that do not fit in the file) the image is rejected with a
//! message rather than read as zero. A string note ends at its first NUL or
//! else at the end of its descriptor (Linux's `FEATURES` has no NUL; Xen
//! stops at the padding's zero byte, which is the same text whenever the
//! descriptor's length is not a multiple of 4, and then reads on into the
//! next note, which this module does not).
#![forbid(unsafe_code)]

use core::fmt;

use dom0_abi::elfnote::{
    XEN_ELFNOTE_LOADER_GENERIC, XEN_ELFNOTE_NAME, XEN_ELFNOTE_XEN_VERSION_PREFIX, XenElfNote,
};
use dom0_abi::features::XenFeature;

use super::elf::{ElfError, ElfFile, NoteIter, PT_NOTE, ProgramHeader, SHT_NOTE};

/// The features a `FEATURES` note may name: the subset of [`XenFeature`]
/// that Xen's loader recognises there (by [`XenFeature::name`]). Any other
/// name is unknown to the loader, even if it is a feature bit.
pub const FEATURES_NOTE_NAMES: [XenFeature; 7] = [
    XenFeature::WritablePageTables,
    XenFeature::WritableDescriptorTables,
    XenFeature::AutoTranslatedPhysmap,
    XenFeature::SupervisorModeKernel,
    XenFeature::PaePgdirAbove4gb,
    XenFeature::HvmCallbackVector,
    XenFeature::Dom0,
];

/// Xen's cap on the number of notes it reads from one image.
pub const MAX_TOTAL_NOTES: usize = 65536;

/// A short copy of text from the image, for error messages (truncated to
/// 32 bytes).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ShortStr {
    bytes: [u8; 32],
    len: u8,
}

impl ShortStr {
    fn new(text: &str) -> Self {
        let mut end = text.len().min(32);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let mut bytes = [0u8; 32];
        bytes[..end].copy_from_slice(&text.as_bytes()[..end]);
        ShortStr {
            bytes,
            // `end` is at most 32.
            len: u8::try_from(end).unwrap_or(32),
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

impl fmt::Display for ShortStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for ShortStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// Why a kernel image was rejected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// The ELF container itself is unusable.
    Elf(ElfError),
    /// No note named "Xen" in any `PT_NOTE` segment or `SHT_NOTE` section.
    NoXenNotes,
    /// More notes than [`MAX_TOTAL_NOTES`].
    TooManyNotes,
    /// A Xen note has the wrong size or contents.
    BadNote {
        /// The note's name (for example `HYPERCALL_PAGE`).
        note: &'static str,
        /// What is wrong.
        reason: &'static str,
    },
    /// `FEATURES` marks a feature Xen's loader does not know as required.
    UnknownRequiredFeature(ShortStr),
    /// Neither `LOADER` starts with "generic" nor `GUEST_OS` with "linux".
    BadLoader {
        /// The `LOADER` note (empty if absent).
        loader: ShortStr,
        /// The `GUEST_OS` note (empty if absent).
        guest_os: ShortStr,
    },
    /// `XEN_VERSION` is absent or does not start with "xen-3.0".
    BadXenVersion(ShortStr),
    /// `PADDR_OFFSET` is given but `VIRT_BASE` is not.
    PaddrOffsetWithoutVirtBase,
    /// No loadable (`PT_LOAD` with R, W or X) segment.
    NoLoadableSegments,
    /// A loadable segment is malformed.
    BadSegment {
        /// Index of the program header.
        index: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// `virt_base <= kstart <= entry <= kend` does not hold.
    AddressOrder {
        /// `VIRT_BASE`.
        virt_base: u64,
        /// First VA of the kernel.
        kstart: u64,
        /// End VA of the kernel.
        kend: u64,
        /// Entry point VA.
        entry: u64,
    },
    /// The `INIT_P2M` address lies inside the kernel.
    P2mInsideKernel {
        /// The `INIT_P2M` VA.
        p2m: u64,
    },
    /// `SUPPORTED_FEATURES` is present without the dom0 bit.
    NoDom0Support {
        /// The supported-feature bitmap.
        supported: u32,
    },
    /// The kernel requires `supervisor_mode_kernel`, impossible for dom0.
    Dom0SupervisorMode,
}

impl From<ElfError> for ImageError {
    fn from(error: ElfError) -> Self {
        ImageError::Elf(error)
    }
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::Elf(e) => e.fmt(f),
            ImageError::NoXenNotes => f.write_str(
                "no Xen ELF notes (no \"Xen\" note in a PT_NOTE segment or SHT_NOTE section)",
            ),
            ImageError::TooManyNotes => write!(f, "more than {MAX_TOTAL_NOTES} ELF notes"),
            ImageError::BadNote { note, reason } => write!(f, "Xen ELF note {note}: {reason}"),
            ImageError::UnknownRequiredFeature(name) => {
                write!(f, "FEATURES note requires unknown feature '{name}'")
            }
            ImageError::BadLoader { loader, guest_os } => write!(
                f,
                "LOADER note must be \"generic\" (or GUEST_OS start with \"linux\"): \
                 LOADER '{loader}', GUEST_OS '{guest_os}'"
            ),
            ImageError::BadXenVersion(version) => write!(
                f,
                "XEN_VERSION note must start with \"xen-3.0\" (found '{version}')"
            ),
            ImageError::PaddrOffsetWithoutVirtBase => {
                f.write_str("PADDR_OFFSET note given without VIRT_BASE")
            }
            ImageError::NoLoadableSegments => f.write_str("no loadable PT_LOAD segment"),
            ImageError::BadSegment { index, reason } => {
                write!(f, "loadable segment {index}: {reason}")
            }
            ImageError::AddressOrder {
                virt_base,
                kstart,
                kend,
                entry,
            } => write!(
                f,
                "kernel start or entry out of bounds: need VIRT_BASE {virt_base:#x} <= \
                 kstart {kstart:#x} <= entry {entry:#x} <= kend {kend:#x}"
            ),
            ImageError::P2mInsideKernel { p2m } => {
                write!(f, "INIT_P2M address {p2m:#x} lies inside the kernel image")
            }
            ImageError::NoDom0Support { supported } => write!(
                f,
                "kernel does not support dom0 operation: SUPPORTED_FEATURES {supported:#x} \
                 lacks the dom0 bit (1 << 11)"
            ),
            ImageError::Dom0SupervisorMode => {
                f.write_str("dom0 kernel requires supervisor_mode_kernel, which is not supported")
            }
        }
    }
}

/// Feature bitmaps from `FEATURES` and `SUPPORTED_FEATURES` (submap 0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// Features the kernel supports (required ones included).
    pub supported: u32,
    /// Features the kernel requires.
    pub required: u32,
}

impl Features {
    /// True when `feature` is in the supported set.
    pub fn supports(&self, feature: XenFeature) -> bool {
        feature.is_set_in(self.supported)
    }

    /// True when `feature` is in the required set.
    pub fn requires(&self, feature: XenFeature) -> bool {
        feature.is_set_in(self.required)
    }
}

/// Where the Xen notes were found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoteSource {
    /// `PT_NOTE` program headers (the normal place).
    ProgramHeaders,
    /// `SHT_NOTE` sections (the fallback).
    Sections,
}

/// One loadable segment with its destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadSegment<'a> {
    /// Index of the program header.
    pub index: usize,
    /// Destination VA: `p_paddr + virt_offset`.
    pub va: u64,
    /// `p_paddr` as written in the image.
    pub paddr: u64,
    /// The bytes to copy to `va` (`p_filesz` of them).
    pub file_bytes: &'a [u8],
    /// Bytes the segment occupies in memory; those past `file_bytes` are
    /// zero.
    pub memsz: u64,
    /// `PF_R | PF_W | PF_X`.
    pub flags: u32,
}

/// What the domain builder needs to know about an accepted kernel image.
#[derive(Clone, Copy, Debug)]
pub struct GuestImageInfo<'a> {
    elf: ElfFile<'a>,
    /// `VIRT_BASE` (0 if absent): VA of pseudo-physical address 0.
    pub virt_base: u64,
    /// `PADDR_OFFSET` (0 if absent).
    pub paddr_offset: u64,
    /// `virt_base - paddr_offset` (wrapping): added to ELF physical
    /// addresses to get VAs.
    pub virt_offset: u64,
    /// First VA of the kernel image.
    pub kstart: u64,
    /// End VA (exclusive) of the kernel image, `.bss` included.
    pub kend: u64,
    /// Entry point VA.
    pub entry: u64,
    /// `HYPERCALL_PAGE` VA, if given.
    pub hypercall_page: Option<u64>,
    /// `FEATURES` and `SUPPORTED_FEATURES` combined.
    pub features: Features,
    /// True when a `SUPPORTED_FEATURES` note was present.
    pub has_supported_features_note: bool,
    /// `INIT_P2M`: VA for the p2m list outside the initial mapping.
    pub init_p2m: Option<u64>,
    /// `MOD_START_PFN` non-zero: the initrd is passed by PFN, unmapped.
    pub mod_start_pfn: bool,
    /// `GUEST_OS` ("" if absent).
    pub guest_os: &'a str,
    /// `GUEST_VERSION` ("" if absent).
    pub guest_version: &'a str,
    /// `LOADER` ("" if absent).
    pub loader: &'a str,
    /// `XEN_VERSION`.
    pub xen_version: &'a str,
    /// `PAE_MODE`, if given (meaningful for 32-bit guests only).
    pub pae_mode: Option<&'a str>,
    /// `BSD_SYMTAB` is "yes". Loading the symbol table is not implemented;
    /// the flag is kept so the caller can warn.
    pub bsd_symtab: bool,
    /// `SUSPEND_CANCEL`, if given.
    pub suspend_cancel: Option<u64>,
    /// `HV_START_LOW`, if given (32-bit guests only).
    pub hv_start_low: Option<u64>,
    /// `PHYS32_ENTRY`, if given (PVH only).
    pub phys32_entry: Option<u64>,
    /// Where the notes were found.
    pub note_source: NoteSource,
}

/// The raw note values collected before the checks.
#[derive(Default)]
struct RawNotes<'a> {
    count: usize,
    entry: Option<u64>,
    hypercall_page: Option<u64>,
    virt_base: Option<u64>,
    paddr_offset: Option<u64>,
    init_p2m: Option<u64>,
    mod_start_pfn: bool,
    suspend_cancel: Option<u64>,
    hv_start_low: Option<u64>,
    phys32_entry: Option<u64>,
    features: Features,
    has_supported_features: bool,
    xen_version: &'a str,
    guest_os: &'a str,
    guest_version: &'a str,
    loader: &'a str,
    pae_mode: Option<&'a str>,
    bsd_symtab: bool,
}

impl<'a> GuestImageInfo<'a> {
    /// Parses an image and applies Xen's loader checks (module docs).
    pub fn parse(image: &'a [u8]) -> Result<Self, ImageError> {
        let elf = ElfFile::parse(image)?;
        let mut total_notes = 0usize;
        let mut notes = RawNotes::default();
        let mut note_source = NoteSource::ProgramHeaders;
        for (index, ph) in elf.program_headers().enumerate() {
            if ph.p_type != PT_NOTE || ph.offset == 0 {
                continue;
            }
            let bytes = elf.segment_data(index, &ph)?;
            read_notes(bytes, &mut notes, &mut total_notes)?;
        }
        if notes.count == 0 {
            note_source = NoteSource::Sections;
            for (index, sh) in elf.section_headers().enumerate().skip(1) {
                if sh.sh_type != SHT_NOTE {
                    continue;
                }
                let bytes = elf.section_data(index, &sh)?;
                read_notes(bytes, &mut notes, &mut total_notes)?;
            }
        }
        if notes.count == 0 {
            return Err(ImageError::NoXenNotes);
        }
        check_notes(&notes)?;
        Self::from_notes(elf, &notes, note_source)
    }

    /// Parses an image as a dom0 kernel: [`GuestImageInfo::parse`] followed
    /// by [`GuestImageInfo::check_dom0`].
    pub fn parse_dom0(image: &'a [u8]) -> Result<Self, ImageError> {
        let info = Self::parse(image)?;
        info.check_dom0()?;
        Ok(info)
    }

    /// The dom0 rules of Xen's PV dom0 builder: if `SUPPORTED_FEATURES` is
    /// present it must contain the dom0 bit, and `supervisor_mode_kernel`
    /// may not be required.
    pub fn check_dom0(&self) -> Result<(), ImageError> {
        if self.has_supported_features_note && !self.features.supports(XenFeature::Dom0) {
            return Err(ImageError::NoDom0Support {
                supported: self.features.supported,
            });
        }
        if self.features.requires(XenFeature::SupervisorModeKernel) {
            return Err(ImageError::Dom0SupervisorMode);
        }
        Ok(())
    }

    fn from_notes(
        elf: ElfFile<'a>,
        notes: &RawNotes<'a>,
        note_source: NoteSource,
    ) -> Result<Self, ImageError> {
        if notes.paddr_offset.is_some() && notes.virt_base.is_none() {
            return Err(ImageError::PaddrOffsetWithoutVirtBase);
        }
        let virt_base = notes.virt_base.unwrap_or(0);
        let paddr_offset = notes.paddr_offset.unwrap_or(0);
        let virt_offset = virt_base.wrapping_sub(paddr_offset);
        let (pstart, pend) = physical_span(&elf, virt_offset)?;
        let kstart = pstart.wrapping_add(virt_offset);
        let kend = pend.wrapping_add(virt_offset);
        let entry = notes.entry.unwrap_or(elf.header().entry);
        if kstart > kend || entry < kstart || entry > kend || virt_base > kstart {
            return Err(ImageError::AddressOrder {
                virt_base,
                kstart,
                kend,
                entry,
            });
        }
        if let Some(p2m) = notes.init_p2m
            && (kstart..kend).contains(&p2m)
        {
            return Err(ImageError::P2mInsideKernel { p2m });
        }
        Ok(GuestImageInfo {
            elf,
            virt_base,
            paddr_offset,
            virt_offset,
            kstart,
            kend,
            entry,
            hypercall_page: notes.hypercall_page,
            features: notes.features,
            has_supported_features_note: notes.has_supported_features,
            init_p2m: notes.init_p2m,
            mod_start_pfn: notes.mod_start_pfn,
            guest_os: notes.guest_os,
            guest_version: notes.guest_version,
            loader: notes.loader,
            xen_version: notes.xen_version,
            pae_mode: notes.pae_mode,
            bsd_symtab: notes.bsd_symtab,
            suspend_cancel: notes.suspend_cancel,
            hv_start_low: notes.hv_start_low,
            phys32_entry: notes.phys32_entry,
            note_source,
        })
    }

    /// The parsed ELF file.
    pub fn elf(&self) -> &ElfFile<'a> {
        &self.elf
    }

    /// The loadable segments with their destination VAs and contents, in
    /// program header order. Every segment was checked by
    /// [`GuestImageInfo::parse`]: its bytes are in the image and its
    /// destination lies in `[kstart, kend)`.
    pub fn segments(&self) -> impl Iterator<Item = LoadSegment<'a>> + use<'a> {
        let elf = self.elf;
        let virt_offset = self.virt_offset;
        (0..usize::from(elf.header().phnum)).filter_map(move |index| {
            let ph = elf
                .program_header(index)
                .filter(ProgramHeader::is_loadable)?;
            Some(LoadSegment {
                index,
                va: ph.paddr.wrapping_add(virt_offset),
                paddr: ph.paddr,
                file_bytes: elf.segment_data(index, &ph).ok()?,
                memsz: ph.memsz,
                flags: ph.flags,
            })
        })
    }

    /// Size in bytes of the kernel image in memory (`kend - kstart`).
    pub fn image_size(&self) -> u64 {
        self.kend - self.kstart
    }
}

/// Checks every loadable segment and returns the lowest physical address
/// and the highest physical end over them.
fn physical_span(elf: &ElfFile<'_>, virt_offset: u64) -> Result<(u64, u64), ImageError> {
    let mut span: Option<(u64, u64)> = None;
    for (index, ph) in elf.load_segments() {
        check_segment(elf, index, &ph, virt_offset)?;
        let end = ph.paddr + ph.memsz;
        span = Some(match span {
            None => (ph.paddr, end),
            Some((low, high)) => (low.min(ph.paddr), high.max(end)),
        });
    }
    span.ok_or(ImageError::NoLoadableSegments)
}

fn check_segment(
    elf: &ElfFile<'_>,
    index: usize,
    ph: &ProgramHeader,
    virt_offset: u64,
) -> Result<(), ImageError> {
    elf.segment_data(index, ph)?;
    let bad = |reason| ImageError::BadSegment { index, reason };
    if ph.filesz > ph.memsz {
        return Err(bad("p_filesz larger than p_memsz"));
    }
    if ph.paddr.checked_add(ph.memsz).is_none() {
        return Err(bad("physical address range overflows"));
    }
    let va = ph.paddr.wrapping_add(virt_offset);
    if va.checked_add(ph.memsz).is_none() {
        return Err(bad("virtual address range overflows"));
    }
    Ok(())
}

fn read_notes<'a>(
    bytes: &'a [u8],
    notes: &mut RawNotes<'a>,
    total: &mut usize,
) -> Result<(), ImageError> {
    for note in NoteIter::new(bytes) {
        let note = note?;
        *total += 1;
        if *total > MAX_TOTAL_NOTES {
            return Err(ImageError::TooManyNotes);
        }
        if note.has_name(XEN_ELFNOTE_NAME) {
            apply_note(notes, note.note_type, note.desc)?;
            notes.count += 1;
        }
    }
    Ok(())
}

/// Records one Xen note; a later note of the same type overrides an
/// earlier one, as in Xen. Unknown types and `INFO`/`L1_MFN_VALID` are
/// ignored.
fn apply_note<'a>(notes: &mut RawNotes<'a>, kind: u32, desc: &'a [u8]) -> Result<(), ImageError> {
    let Some(kind) = XenElfNote::from_number(u64::from(kind)) else {
        return Ok(());
    };
    let name = kind.name();
    let number = || {
        numeric(desc).ok_or(ImageError::BadNote {
            note: name,
            reason: "numeric value must be 1, 2, 4 or 8 bytes",
        })
    };
    let text = || {
        string(desc).ok_or(ImageError::BadNote {
            note: name,
            reason: "string must be UTF-8",
        })
    };
    match kind {
        XenElfNote::Entry => notes.entry = Some(number()?),
        XenElfNote::HypercallPage => notes.hypercall_page = Some(number()?),
        XenElfNote::VirtBase => notes.virt_base = Some(number()?),
        XenElfNote::PaddrOffset => notes.paddr_offset = Some(number()?),
        XenElfNote::HvStartLow => notes.hv_start_low = Some(number()?),
        XenElfNote::SuspendCancel => notes.suspend_cancel = Some(number()?),
        XenElfNote::InitP2m => notes.init_p2m = Some(number()?),
        XenElfNote::ModStartPfn => notes.mod_start_pfn = number()? != 0,
        XenElfNote::Phys32Entry => notes.phys32_entry = Some(number()?),
        XenElfNote::XenVersion => notes.xen_version = text()?,
        XenElfNote::GuestOs => notes.guest_os = text()?,
        XenElfNote::GuestVersion => notes.guest_version = text()?,
        XenElfNote::Loader => notes.loader = text()?,
        XenElfNote::PaeMode => notes.pae_mode = Some(text()?),
        XenElfNote::BsdSymtab => notes.bsd_symtab = text()? == "yes",
        XenElfNote::Features => parse_features(text()?, &mut notes.features)?,
        XenElfNote::SupportedFeatures => {
            let first_word = desc
                .get(..4)
                .filter(|_| desc.len().is_multiple_of(4))
                .ok_or(ImageError::BadNote {
                    note: name,
                    reason: "bitmap must be a whole number of 32-bit words",
                })?;
            notes.features.supported |=
                u32::from_le_bytes([first_word[0], first_word[1], first_word[2], first_word[3]]);
            notes.has_supported_features = true;
        }
        XenElfNote::Info | XenElfNote::L1MfnValid => {}
    }
    Ok(())
}

/// Parses a `FEATURES` string into `features` (Xen's rules, module docs).
pub fn parse_features(text: &str, features: &mut Features) -> Result<(), ImageError> {
    for item in text.split('|') {
        let (name, required) = match item.strip_prefix('!') {
            Some(name) => (name, true),
            None => (item, false),
        };
        match FEATURES_NOTE_NAMES.iter().find(|f| f.name() == name) {
            Some(feature) => {
                features.supported |= feature.bit();
                if required {
                    features.required |= feature.bit();
                }
            }
            None if required => {
                return Err(ImageError::UnknownRequiredFeature(ShortStr::new(name)));
            }
            None => {}
        }
    }
    Ok(())
}

fn check_notes(notes: &RawNotes<'_>) -> Result<(), ImageError> {
    if !notes
        .loader
        .as_bytes()
        .starts_with(XEN_ELFNOTE_LOADER_GENERIC)
        && !notes.guest_os.starts_with("linux")
    {
        return Err(ImageError::BadLoader {
            loader: ShortStr::new(notes.loader),
            guest_os: ShortStr::new(notes.guest_os),
        });
    }
    if !notes
        .xen_version
        .as_bytes()
        .starts_with(XEN_ELFNOTE_XEN_VERSION_PREFIX)
    {
        return Err(ImageError::BadXenVersion(ShortStr::new(notes.xen_version)));
    }
    Ok(())
}

/// A little-endian number of 1, 2, 4 or 8 bytes.
fn numeric(desc: &[u8]) -> Option<u64> {
    if !matches!(desc.len(), 1 | 2 | 4 | 8) {
        return None;
    }
    let mut bytes = [0u8; 8];
    bytes[..desc.len()].copy_from_slice(desc);
    Some(u64::from_le_bytes(bytes))
}

/// The text before the first NUL, or the whole descriptor when it has
/// none: Linux writes `FEATURES` with `.ascii`, and Xen reads a string note
/// up to the NUL that the note's zero padding supplies.
fn string(desc: &[u8]) -> Option<&str> {
    let end = desc.iter().position(|&b| b == 0).unwrap_or(desc.len());
    core::str::from_utf8(&desc[..end]).ok()
}

#[cfg(test)]
#[allow(
    clippy::cast_possible_truncation,
    reason = "test fixtures are small, fixed-size images and counters"
)]
pub(crate) mod tests {
    use super::super::elf::tests::{ElfBuilder, load, note, note_segment};
    use super::super::elf::{PF_R, PF_W, PF_X, SHT_NOTE};
    use super::*;

    pub(crate) const LINUX_BASE: u64 = 0xffff_ffff_8000_0000;

    /// The notes of a guest linked the way this project's guests are.
    pub(crate) fn standard_notes() -> Vec<(XenElfNote, Vec<u8>)> {
        vec![
            (XenElfNote::GuestOs, b"pv-tests\0".to_vec()),
            (XenElfNote::Loader, b"generic\0".to_vec()),
            (XenElfNote::XenVersion, b"xen-3.0\0".to_vec()),
            (XenElfNote::VirtBase, LINUX_BASE.to_le_bytes().to_vec()),
            (XenElfNote::PaddrOffset, 0u64.to_le_bytes().to_vec()),
            (
                XenElfNote::HypercallPage,
                (LINUX_BASE + 0x2000).to_le_bytes().to_vec(),
            ),
            (
                XenElfNote::SupportedFeatures,
                (1u32 << 11).to_le_bytes().to_vec(),
            ),
        ]
    }

    fn note_blob(notes: &[(XenElfNote, Vec<u8>)]) -> Vec<u8> {
        notes
            .iter()
            .flat_map(|(t, d)| note(b"Xen\0", *t as u32, d))
            .collect()
    }

    /// A guest image: text at paddr 0x1000 (`text` bytes, `memsz` total),
    /// data page after it, notes in a PT_NOTE segment.
    pub(crate) fn image_with(notes: &[(XenElfNote, Vec<u8>)], entry: u64, memsz: u64) -> Vec<u8> {
        let mut b = ElfBuilder {
            entry,
            ..Default::default()
        };
        b.segment(
            load(0x1000, LINUX_BASE + 0x1000, memsz, PF_R | PF_X),
            vec![0xcc; 0x800],
        )
        .segment(
            load(
                0x1000 + memsz,
                LINUX_BASE + 0x1000 + memsz,
                0x1000,
                PF_R | PF_W,
            ),
            vec![0x11; 0x10],
        )
        .segment(note_segment(), note_blob(notes));
        b.build()
    }

    fn standard_image() -> Vec<u8> {
        image_with(&standard_notes(), LINUX_BASE + 0x1000, 0x18000)
    }

    fn with_note(kind: XenElfNote, desc: &[u8]) -> Vec<(XenElfNote, Vec<u8>)> {
        let mut notes: Vec<_> = standard_notes()
            .into_iter()
            .filter(|(t, _)| *t != kind)
            .collect();
        notes.push((kind, desc.to_vec()));
        notes
    }

    fn without_note(kind: XenElfNote) -> Vec<(XenElfNote, Vec<u8>)> {
        standard_notes()
            .into_iter()
            .filter(|(t, _)| *t != kind)
            .collect()
    }

    fn error_of(image: &[u8]) -> String {
        GuestImageInfo::parse_dom0(image).unwrap_err().to_string()
    }

    #[test]
    fn accepts_a_standard_guest() {
        let image = standard_image();
        let info = GuestImageInfo::parse_dom0(&image).unwrap();
        assert_eq!(info.virt_base, LINUX_BASE);
        assert_eq!(info.virt_offset, LINUX_BASE);
        assert_eq!(info.kstart, LINUX_BASE + 0x1000);
        assert_eq!(info.kend, LINUX_BASE + 0x1000 + 0x18000 + 0x1000);
        assert_eq!(info.entry, LINUX_BASE + 0x1000);
        assert_eq!(info.hypercall_page, Some(LINUX_BASE + 0x2000));
        assert!(info.features.supports(XenFeature::Dom0));
        assert_eq!(info.note_source, NoteSource::ProgramHeaders);
        assert_eq!(info.guest_os, "pv-tests");
        assert_eq!(info.loader, "generic");
        let segments: Vec<_> = info.segments().collect();
        assert_eq!(segments.len(), 2);
        assert_eq!(segments[0].va, LINUX_BASE + 0x1000);
        assert_eq!(segments[0].file_bytes.len(), 0x800);
        assert_eq!(segments[1].va, LINUX_BASE + 0x19000);
        assert_eq!(segments[1].file_bytes, &[0x11; 0x10]);
        assert_eq!(info.image_size(), 0x19000);
    }

    #[test]
    fn xtf_style_guest_at_one_mib() {
        // XTF: no VIRT_BASE, linked at 1 MiB, FEATURES string.
        let notes = vec![
            (XenElfNote::GuestOs, b"XTF\0".to_vec()),
            (XenElfNote::GuestVersion, b"0\0".to_vec()),
            (XenElfNote::Loader, b"generic\0".to_vec()),
            (XenElfNote::XenVersion, b"xen-3.0\0".to_vec()),
            (
                XenElfNote::HypercallPage,
                0x101000u64.to_le_bytes().to_vec(),
            ),
            (
                XenElfNote::Features,
                b"!writable_page_tables|pae_pgdir_above_4gb\0".to_vec(),
            ),
            (XenElfNote::PaeMode, b"yes\0".to_vec()),
        ];
        let mut b = ElfBuilder {
            entry: 0x100000,
            ..Default::default()
        };
        b.segment(load(0x100000, 0x100000, 0x5000, PF_R | PF_X), vec![0; 64])
            .segment(note_segment(), note_blob(&notes));
        let image = b.build();
        let info = GuestImageInfo::parse_dom0(&image).unwrap();
        assert_eq!(info.virt_base, 0);
        assert_eq!((info.kstart, info.kend), (0x100000, 0x105000));
        assert_eq!(info.features.required, XenFeature::WritablePageTables.bit());
        assert_eq!(
            info.features.supported,
            (XenFeature::WritablePageTables.bit()) | (XenFeature::PaePgdirAbove4gb.bit())
        );
        assert!(!info.has_supported_features_note);
        assert_eq!(info.pae_mode, Some("yes"));
    }

    #[test]
    fn falls_back_to_note_sections() {
        let mut b = ElfBuilder {
            entry: LINUX_BASE + 0x1000,
            ..Default::default()
        };
        b.segment(
            load(0x1000, LINUX_BASE + 0x1000, 0x1000, PF_R | PF_X),
            vec![0; 16],
        )
        .section(SHT_NOTE, note_blob(&standard_notes()));
        let image = b.build();
        let info = GuestImageInfo::parse(&image).unwrap();
        assert_eq!(info.note_source, NoteSource::Sections);
        assert_eq!(info.virt_base, LINUX_BASE);
    }

    #[test]
    fn pt_note_with_zero_offset_is_skipped() {
        let mut b = ElfBuilder {
            entry: LINUX_BASE + 0x1000,
            ..Default::default()
        };
        let mut ph = note_segment();
        ph.offset = 0;
        ph.filesz = 64;
        b.segment(
            load(0x1000, LINUX_BASE + 0x1000, 0x1000, PF_R | PF_X),
            vec![0; 16],
        )
        .segment(ph, vec![]);
        let image = b.build();
        assert!(error_of(&image).contains("no Xen ELF notes"));
    }

    #[test]
    fn rejects_non_elf_and_32_bit() {
        assert!(error_of(b"hello world").contains("not an ELF"));
        let mut image = standard_image();
        image[4] = 1;
        assert!(error_of(&image).contains("64-bit"));
    }

    #[test]
    fn rejects_missing_notes() {
        let mut b = ElfBuilder {
            entry: 0x1000,
            ..Default::default()
        };
        b.segment(load(0x1000, 0x1000, 0x1000, PF_R), vec![0; 8])
            .segment(note_segment(), note(b"GNU\0", 3, &[0; 20]));
        assert!(error_of(&b.build()).contains("no Xen ELF notes"));
    }

    #[test]
    fn loader_rules() {
        let image = image_with(
            &with_note(XenElfNote::Loader, b"elf\0"),
            LINUX_BASE + 0x1000,
            0x1000,
        );
        assert!(error_of(&image).contains("LOADER"));
        let image = image_with(
            &without_note(XenElfNote::Loader),
            LINUX_BASE + 0x1000,
            0x1000,
        );
        assert!(error_of(&image).contains("LOADER"));
        // No LOADER, but GUEST_OS starting with "linux" is fine.
        let mut notes = without_note(XenElfNote::Loader);
        notes.push((XenElfNote::GuestOs, b"linux-6.1\0".to_vec()));
        let image = image_with(&notes, LINUX_BASE + 0x1000, 0x1000);
        assert!(GuestImageInfo::parse_dom0(&image).is_ok());
    }

    #[test]
    fn xen_version_rules() {
        for bad in [&b"xen-2.0\0"[..], b"\0"] {
            let image = image_with(
                &with_note(XenElfNote::XenVersion, bad),
                LINUX_BASE + 0x1000,
                0x1000,
            );
            assert!(error_of(&image).contains("XEN_VERSION"));
        }
        let image = image_with(
            &without_note(XenElfNote::XenVersion),
            LINUX_BASE + 0x1000,
            0x1000,
        );
        assert!(error_of(&image).contains("XEN_VERSION"));
        let image = image_with(
            &with_note(XenElfNote::XenVersion, b"xen-3.0-x86_64\0"),
            LINUX_BASE + 0x1000,
            0x1000,
        );
        assert!(GuestImageInfo::parse_dom0(&image).is_ok());
    }

    #[test]
    fn dom0_feature_rules() {
        let image = image_with(
            &with_note(XenElfNote::SupportedFeatures, &1u32.to_le_bytes()),
            LINUX_BASE + 0x1000,
            0x1000,
        );
        assert!(GuestImageInfo::parse(&image).is_ok());
        assert!(error_of(&image).contains("dom0"));
        // No SUPPORTED_FEATURES at all: accepted, as on Xen.
        let image = image_with(
            &without_note(XenElfNote::SupportedFeatures),
            LINUX_BASE + 0x1000,
            0x1000,
        );
        assert!(GuestImageInfo::parse_dom0(&image).is_ok());
        // The dom0 bit may also come from FEATURES.
        let mut notes = with_note(XenElfNote::SupportedFeatures, &0u32.to_le_bytes());
        notes.push((XenElfNote::Features, b"dom0\0".to_vec()));
        let image = image_with(&notes, LINUX_BASE + 0x1000, 0x1000);
        assert!(GuestImageInfo::parse_dom0(&image).is_ok());
        let mut notes = standard_notes();
        notes.push((XenElfNote::Features, b"!supervisor_mode_kernel\0".to_vec()));
        let image = image_with(&notes, LINUX_BASE + 0x1000, 0x1000);
        assert!(error_of(&image).contains("dom0"));
    }

    #[test]
    fn feature_strings() {
        let mut f = Features::default();
        parse_features("writable_page_tables|!dom0|no_such_feature||", &mut f).unwrap();
        assert_eq!(f.supported, 1 | 1 << 11);
        assert_eq!(f.required, 1 << 11);
        let err = parse_features("!no_such_feature", &mut f).unwrap_err();
        assert_eq!(
            err.to_string(),
            "FEATURES note requires unknown feature 'no_such_feature'"
        );
        // Xen's loader knows only these names, e.g. not `direct_mapped`.
        let names: Vec<_> = FEATURES_NOTE_NAMES.iter().map(|f| f.name()).collect();
        assert_eq!(
            names,
            [
                "writable_page_tables",
                "writable_descriptor_tables",
                "auto_translated_physmap",
                "supervisor_mode_kernel",
                "pae_pgdir_above_4gb",
                "hvm_callback_vector",
                "dom0"
            ]
        );
        assert!(parse_features("!direct_mapped", &mut f).is_err());
    }

    #[test]
    fn string_notes_without_nul_as_linux_writes_them() {
        // Linux 6.1: `.ascii "!writable_page_tables"`, no NUL; the note's
        // padding ends it on Xen.
        let image = image_with(
            &with_note(XenElfNote::Features, b"!writable_page_tables|dom0"),
            LINUX_BASE + 0x1000,
            0x1000,
        );
        let info = GuestImageInfo::parse_dom0(&image).unwrap();
        assert!(info.features.requires(XenFeature::WritablePageTables));
        assert!(info.features.supports(XenFeature::Dom0));
        let image = image_with(
            &with_note(XenElfNote::Loader, b"generic"),
            LINUX_BASE + 0x1000,
            0x1000,
        );
        assert_eq!(
            GuestImageInfo::parse_dom0(&image).unwrap().loader,
            "generic"
        );
        // Text after a NUL inside the descriptor is not read.
        let image = image_with(
            &with_note(XenElfNote::Features, b"dom0\0!no_such_feature"),
            LINUX_BASE + 0x1000,
            0x1000,
        );
        assert!(GuestImageInfo::parse_dom0(&image).is_ok());
    }

    #[test]
    fn unknown_and_ignored_note_types() {
        // An unassigned type, INFO and L1_MFN_VALID are skipped, whatever
        // their contents.
        let mut b = ElfBuilder {
            entry: LINUX_BASE + 0x1000,
            ..Default::default()
        };
        let mut blob = note_blob(&standard_notes());
        blob.extend(note(b"Xen\0", 99, &[1, 2, 3]));
        blob.extend(note(b"Xen\0", XenElfNote::Info as u32, b"no NUL"));
        blob.extend(note(b"Xen\0", XenElfNote::L1MfnValid as u32, &[7]));
        b.segment(
            load(0x1000, LINUX_BASE + 0x1000, 0x1000, PF_R | PF_X),
            vec![0; 16],
        )
        .segment(note_segment(), blob);
        let image = b.build();
        let info = GuestImageInfo::parse_dom0(&image).unwrap();
        assert_eq!(info.virt_base, LINUX_BASE);
    }

    #[test]
    fn entry_rules() {
        // Entry below the kernel.
        let image = image_with(&standard_notes(), LINUX_BASE, 0x1000);
        assert!(error_of(&image).contains("entry"));
        // Entry past kend.
        let image = image_with(&standard_notes(), LINUX_BASE + 0x10000, 0x1000);
        assert!(error_of(&image).contains("entry"));
        // Entry exactly at kend is allowed (Xen's inclusive bound).
        let image = image_with(&standard_notes(), LINUX_BASE + 0x3000, 0x1000);
        assert!(GuestImageInfo::parse_dom0(&image).is_ok());
        // The ENTRY note overrides e_entry.
        let image = image_with(
            &with_note(XenElfNote::Entry, &(LINUX_BASE + 0x1800).to_le_bytes()),
            0,
            0x1000,
        );
        assert_eq!(
            GuestImageInfo::parse_dom0(&image).unwrap().entry,
            LINUX_BASE + 0x1800
        );
        // VIRT_BASE above kstart (PADDR_OFFSET keeps the kernel in place).
        let mut notes = with_note(XenElfNote::VirtBase, &(LINUX_BASE + 0x2000).to_le_bytes());
        notes.retain(|(t, _)| *t != XenElfNote::PaddrOffset);
        notes.push((XenElfNote::PaddrOffset, 0x2000u64.to_le_bytes().to_vec()));
        let image = image_with(&notes, LINUX_BASE + 0x1000, 0x1000);
        assert!(error_of(&image).contains("entry"));
    }

    #[test]
    fn paddr_offset_rules() {
        // Old Linux style: paddr == vaddr, PADDR_OFFSET == VIRT_BASE.
        let mut notes = with_note(XenElfNote::PaddrOffset, &LINUX_BASE.to_le_bytes());
        notes.retain(|(t, _)| *t != XenElfNote::HypercallPage);
        let mut b = ElfBuilder {
            entry: LINUX_BASE + 0x1000,
            ..Default::default()
        };
        b.segment(
            load(
                LINUX_BASE + 0x1000,
                LINUX_BASE + 0x1000,
                0x1000,
                PF_R | PF_X,
            ),
            vec![0; 8],
        )
        .segment(note_segment(), note_blob(&notes));
        let image = b.build();
        let info = GuestImageInfo::parse_dom0(&image).unwrap();
        assert_eq!(info.virt_offset, 0);
        assert_eq!(info.kstart, LINUX_BASE + 0x1000);
        // PADDR_OFFSET without VIRT_BASE.
        let mut notes = without_note(XenElfNote::VirtBase);
        notes.retain(|(t, _)| *t != XenElfNote::HypercallPage);
        let image = image_with(&notes, 0x1000, 0x1000);
        assert!(error_of(&image).contains("PADDR_OFFSET"));
    }

    #[test]
    fn init_p2m_inside_kernel_is_rejected() {
        let image = image_with(
            &with_note(XenElfNote::InitP2m, &(LINUX_BASE + 0x1000).to_le_bytes()),
            LINUX_BASE + 0x1000,
            0x1000,
        );
        assert!(error_of(&image).contains("INIT_P2M"));
        let image = image_with(
            &with_note(XenElfNote::InitP2m, &0xffff_ea00_0000_0000u64.to_le_bytes()),
            LINUX_BASE + 0x1000,
            0x1000,
        );
        let info = GuestImageInfo::parse_dom0(&image).unwrap();
        assert_eq!(info.init_p2m, Some(0xffff_ea00_0000_0000));
    }

    #[test]
    fn malformed_notes() {
        let image = image_with(
            &with_note(XenElfNote::HypercallPage, &[1, 2, 3]),
            LINUX_BASE + 0x1000,
            0x1000,
        );
        assert!(error_of(&image).contains("HYPERCALL_PAGE"));
        let image = image_with(
            &with_note(XenElfNote::Loader, b"generic\xff\xfe"),
            LINUX_BASE + 0x1000,
            0x1000,
        );
        assert!(error_of(&image).contains("LOADER"));
        let image = image_with(
            &with_note(XenElfNote::SupportedFeatures, &[1, 2]),
            LINUX_BASE + 0x1000,
            0x1000,
        );
        assert!(error_of(&image).contains("SUPPORTED_FEATURES"));
        // A 4-byte numeric note and an 8-byte SUPPORTED_FEATURES are fine.
        let mut notes = with_note(XenElfNote::ModStartPfn, &1u32.to_le_bytes());
        notes.push((
            XenElfNote::SupportedFeatures,
            vec![0, 8, 0, 0, 0xff, 0xff, 0xff, 0xff],
        ));
        let image = image_with(&notes, LINUX_BASE + 0x1000, 0x1000);
        let info = GuestImageInfo::parse_dom0(&image).unwrap();
        assert!(info.mod_start_pfn);
        assert_eq!(info.features.supported, 1 << 11);
    }

    #[test]
    fn truncated_and_overflowing_segments() {
        let mut b = ElfBuilder {
            entry: LINUX_BASE + 0x1000,
            ..Default::default()
        };
        let mut ph = load(0x1000, 0, 0x10, PF_R);
        ph.filesz = 0x20;
        b.segment(ph, vec![0; 0x20])
            .segment(note_segment(), note_blob(&standard_notes()));
        assert!(error_of(&b.build()).contains("p_filesz"));

        let mut b = ElfBuilder::default();
        b.segment(load(u64::MAX - 0x10, 0, 0x1000, PF_R), vec![])
            .segment(note_segment(), note_blob(&standard_notes()));
        assert!(error_of(&b.build()).contains("overflows"));

        let mut b = ElfBuilder::default();
        let mut ph = load(0x1000, 0, 0x1000, PF_R);
        ph.offset = 1 << 30;
        b.segment(ph, vec![])
            .segment(note_segment(), note_blob(&standard_notes()));
        assert!(error_of(&b.build()).contains("truncated"));

        // No loadable segment (a PT_LOAD without flags does not count).
        let mut b = ElfBuilder::default();
        b.segment(load(0x1000, 0, 0x1000, 0), vec![])
            .segment(note_segment(), note_blob(&standard_notes()));
        assert!(error_of(&b.build()).contains("no loadable"));
    }

    #[test]
    fn truncated_note_segment() {
        let mut blob = note_blob(&standard_notes());
        blob.truncate(blob.len() - 6);
        let mut b = ElfBuilder {
            entry: LINUX_BASE + 0x1000,
            ..Default::default()
        };
        b.segment(
            load(0x1000, LINUX_BASE + 0x1000, 0x1000, PF_R | PF_X),
            vec![0; 16],
        )
        .segment(note_segment(), blob);
        assert!(error_of(&b.build()).contains("truncated"));
    }

    #[test]
    fn garbage_never_panics() {
        // Flip bytes of a valid image one at a time; every result must be a
        // clean Ok or Err.
        let image = standard_image();
        let mut state = 0x1234_5678_9abc_def0u64;
        for _ in 0..3000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut copy = image.clone();
            let at = (state % copy.len() as u64) as usize;
            copy[at] = (state >> 32) as u8;
            let at2 = ((state >> 16) % copy.len() as u64) as usize;
            copy[at2] ^= 0xff;
            if let Ok(info) = GuestImageInfo::parse_dom0(&copy) {
                for s in info.segments() {
                    assert!(s.file_bytes.len() as u64 <= s.memsz);
                }
            }
            let _ = GuestImageInfo::parse(&copy[..at.min(copy.len())]);
        }
    }
}
