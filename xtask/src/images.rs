//! Broken dom0 images for the domain builder's rejection tests, each made
//! from the real test guest by one targeted change, so that exactly one
//! rule of the builder is broken.
#![forbid(unsafe_code)]

use dom0_abi::elfnote::{XEN_ELFNOTE_XEN_VERSION_PREFIX, XenElfNote};
use dom0_abi::features::XenFeature;

use crate::elf;

/// Each kind of broken image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadImage {
    /// A text file.
    NotElf,
    /// A minimal valid ELF32 executable.
    Elf32,
    /// Every Xen note renamed, so none is a Xen note.
    NoXenNotes,
    /// The `LOADER` note's string replaced by another of the same length.
    Loader,
    /// `XEN_VERSION` "xen-3.0" changed to "xen-2.0".
    XenVersion,
    /// `SUPPORTED_FEATURES` without the dom0 bit.
    NoDom0Feature,
    /// `e_entry` just past the end of the loaded image.
    Entry,
}

/// A minimal valid ELF32 executable: the header and one `PT_LOAD` program
/// header covering the file (i386, loaded at 1 MiB, entry at its start).
fn elf32_image() -> Vec<u8> {
    const EHDR: u16 = 52;
    const PHDR: u16 = 32;
    let size = u32::from(EHDR + PHDR);
    let mut image = Vec::with_capacity(usize::from(EHDR + PHDR));
    image.extend_from_slice(&[0x7f, b'E', b'L', b'F', 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    image.extend_from_slice(&2u16.to_le_bytes()); // e_type: ET_EXEC
    image.extend_from_slice(&3u16.to_le_bytes()); // e_machine: EM_386
    image.extend_from_slice(&1u32.to_le_bytes()); // e_version
    image.extend_from_slice(&0x0010_0000u32.to_le_bytes()); // e_entry
    image.extend_from_slice(&u32::from(EHDR).to_le_bytes()); // e_phoff
    image.extend_from_slice(&0u32.to_le_bytes()); // e_shoff
    image.extend_from_slice(&0u32.to_le_bytes()); // e_flags
    for half in [EHDR, PHDR, 1, 40, 0, 0] {
        // e_ehsize, e_phentsize, e_phnum, e_shentsize, e_shnum, e_shstrndx
        image.extend_from_slice(&half.to_le_bytes());
    }
    // PT_LOAD: type, offset, vaddr, paddr, filesz, memsz, flags (R+X), align.
    for word in [1, 0, 0x0010_0000, 0x0010_0000, size, size, 5, 0x1000] {
        image.extend_from_slice(&u32::to_le_bytes(word));
    }
    image
}

/// The single Xen note of `note_type`, or an error naming `what`.
fn one_note(image: &[u8], kind: XenElfNote) -> Result<elf::Note, String> {
    let what = kind.name();
    let mut found = elf::xen_notes(image, kind)?;
    match (found.pop(), found.is_empty()) {
        (Some(note), true) => Ok(note),
        (None, _) => Err(format!("the test guest has no {what} note")),
        (Some(_), false) => Err(format!("the test guest has more than one {what} note")),
    }
}

/// Renames every Xen note ("Xen" becomes "Xem").
fn strip_xen_notes(image: &mut [u8]) -> Result<(), String> {
    let notes = elf::notes(image)?;
    let mut renamed = 0;
    for note in notes {
        if elf::is_xen_name(&image[note.name.clone()]) {
            image[note.name.start + 2] = b'm';
            renamed += 1;
        }
    }
    if renamed == 0 {
        return Err("the test guest has no Xen notes".to_owned());
    }
    Ok(())
}

/// Replaces the `LOADER` string by one of the same length that is not "generic".
fn break_loader(image: &mut [u8]) -> Result<(), String> {
    let note = one_note(image, XenElfNote::Loader)?;
    let text_len = image[note.desc.clone()]
        .iter()
        .take_while(|&&b| b != 0)
        .count();
    if text_len == 0 {
        return Err("the test guest's LOADER note is empty".to_owned());
    }
    let replacement = b"unknown-loader";
    for (i, byte) in image[note.desc.start..note.desc.start + text_len]
        .iter_mut()
        .enumerate()
    {
        *byte = replacement[i % replacement.len()];
    }
    Ok(())
}

/// Turns "xen-3.0" into "xen-2.0".
fn break_xen_version(image: &mut [u8]) -> Result<(), String> {
    let note = one_note(image, XenElfNote::XenVersion)?;
    if !image[note.desc.clone()].starts_with(XEN_ELFNOTE_XEN_VERSION_PREFIX) {
        return Err("the test guest's XEN_VERSION is not \"xen-3.0\"".to_owned());
    }
    image[note.desc.start + 4] = b'2';
    Ok(())
}

/// `features` (a `FEATURES` string: names separated by `|`, a leading `!`
/// marking a required one) without `dom0`, or `None` if it does not name it.
fn without_dom0(features: &str) -> Option<String> {
    let names: Vec<&str> = features.split('|').collect();
    let is_dom0 = |name: &&str| name.trim_start_matches('!') == XenFeature::Dom0.name();
    names.iter().any(is_dom0).then(|| {
        let kept: Vec<&str> = names.into_iter().filter(|n| !is_dom0(n)).collect();
        kept.join("|")
    })
}

/// Removes every claim of dom0 support: the dom0 bit in
/// `SUPPORTED_FEATURES` and, since the builder ORs the `FEATURES` string
/// into the same set, the name `dom0` from that string (padded with NULs
/// to its old length).
fn drop_dom0_feature(image: &mut [u8]) -> Result<(), String> {
    for note in elf::xen_notes(image, XenElfNote::Features)? {
        let desc = &image[note.desc.clone()];
        let text_len = desc.iter().position(|&b| b == 0).unwrap_or(desc.len());
        let text = std::str::from_utf8(&desc[..text_len])
            .map_err(|_| "the test guest's FEATURES note is not UTF-8".to_owned())?;
        if let Some(kept) = without_dom0(text) {
            let field = &mut image[note.desc.start..note.desc.start + text_len];
            field.fill(0);
            field[..kept.len()].copy_from_slice(kept.as_bytes());
        }
    }
    let note = one_note(image, XenElfNote::SupportedFeatures)?;
    let word = note.desc.start..note.desc.start + 4;
    let bytes: [u8; 4] = image
        .get(word.clone())
        .filter(|_| note.desc.len() >= 4)
        .and_then(|s| s.try_into().ok())
        .ok_or("the test guest's SUPPORTED_FEATURES note is shorter than 4 bytes")?;
    let features = u32::from_le_bytes(bytes);
    let dom0_bit = 1u32 << (XenFeature::Dom0 as u32);
    if features & dom0_bit == 0 {
        return Err("the test guest does not claim dom0 support".to_owned());
    }
    image[word].copy_from_slice(&(features & !dom0_bit).to_le_bytes());
    Ok(())
}

/// Moves `e_entry` one page past the end of the highest `PT_LOAD` segment.
fn break_entry(image: &mut [u8]) -> Result<(), String> {
    if !elf::xen_notes(image, XenElfNote::Entry)?.is_empty() {
        return Err("the test guest has an ENTRY note, which overrides e_entry".to_owned());
    }
    let end = elf::load_segments(image)?
        .iter()
        .filter_map(|s| s.vaddr.checked_add(s.memsz))
        .max()
        .ok_or("the test guest has no PT_LOAD segment")?;
    let entry = end
        .checked_next_multiple_of(0x1000)
        .and_then(|e| e.checked_add(0x1000))
        .ok_or("the test guest ends at the top of the address space")?;
    image[elf::E_ENTRY_OFFSET..elf::E_ENTRY_OFFSET + 8].copy_from_slice(&entry.to_le_bytes());
    Ok(())
}

impl BadImage {
    /// The broken image, made from the test guest's bytes.
    pub fn make(self, test_guest: &[u8]) -> Result<Vec<u8>, String> {
        let mut image = test_guest.to_vec();
        match self {
            BadImage::NotElf => return Ok(b"This is a text file, not a kernel image.\n".to_vec()),
            BadImage::Elf32 => return Ok(elf32_image()),
            BadImage::NoXenNotes => strip_xen_notes(&mut image)?,
            BadImage::Loader => break_loader(&mut image)?,
            BadImage::XenVersion => break_xen_version(&mut image)?,
            BadImage::NoDom0Feature => drop_dom0_feature(&mut image)?,
            BadImage::Entry => break_entry(&mut image)?,
        }
        Ok(image)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::elf::synthetic::xen_kernel;

    fn desc(image: &[u8], kind: XenElfNote) -> Vec<u8> {
        let note = elf::xen_notes(image, kind).unwrap().pop().unwrap();
        image[note.desc].to_vec()
    }

    #[test]
    fn not_elf_and_elf32() {
        let text = BadImage::NotElf.make(&xen_kernel()).unwrap();
        assert!(text.is_ascii() && !text.starts_with(b"\x7fELF"));
        let elf32 = BadImage::Elf32.make(&xen_kernel()).unwrap();
        assert_eq!(elf32.len(), 52 + 32);
        assert_eq!(&elf32[..6], b"\x7fELF\x01\x01");
        assert_eq!(
            u32::from_le_bytes(elf32[28..32].try_into().unwrap()),
            52,
            "e_phoff"
        );
        assert_eq!(
            u16::from_le_bytes(elf32[44..46].try_into().unwrap()),
            1,
            "e_phnum"
        );
        assert_eq!(
            u32::from_le_bytes(elf32[52..56].try_into().unwrap()),
            1,
            "PT_LOAD"
        );
        assert_eq!(
            u32::from_le_bytes(elf32[68..72].try_into().unwrap()),
            84,
            "p_filesz"
        );
    }

    #[test]
    fn no_xen_notes_left() {
        let original = xen_kernel();
        let image = BadImage::NoXenNotes.make(&original).unwrap();
        assert_eq!(image.len(), original.len());
        for &kind in XenElfNote::ALL {
            assert!(elf::xen_notes(&image, kind).unwrap().is_empty());
        }
        // The GNU note is left alone; every note is still there.
        assert_eq!(
            elf::notes(&image).unwrap().len(),
            elf::notes(&original).unwrap().len()
        );
        assert!(BadImage::NoXenNotes.make(&image).is_err());
    }

    #[test]
    fn loader_and_version() {
        let image = BadImage::Loader.make(&xen_kernel()).unwrap();
        assert_eq!(desc(&image, XenElfNote::Loader), b"unknown\0");
        let image = BadImage::XenVersion.make(&xen_kernel()).unwrap();
        assert_eq!(desc(&image, XenElfNote::XenVersion), b"xen-2.0\0");
        assert!(BadImage::XenVersion.make(&image).is_err());
    }

    #[test]
    fn dom0_feature_cleared() {
        let image = BadImage::NoDom0Feature.make(&xen_kernel()).unwrap();
        assert_eq!(desc(&image, XenElfNote::SupportedFeatures), [0, 0, 0, 0]);
        assert!(BadImage::NoDom0Feature.make(&image).is_err());
    }

    #[test]
    fn dom0_named_in_features_is_removed_too() {
        use crate::elf::synthetic::{TestNote, image};
        let original = image(
            &[
                TestNote {
                    name: b"Xen\0",
                    note_type: 10,
                    desc: b"!writable_page_tables|dom0\0",
                },
                TestNote {
                    name: b"Xen\0",
                    note_type: 17,
                    desc: &[0x00, 0x08, 0x00, 0x00],
                },
            ],
            &[],
        );
        let image = BadImage::NoDom0Feature.make(&original).unwrap();
        assert_eq!(
            desc(&image, XenElfNote::Features),
            b"!writable_page_tables\0\0\0\0\0\0"
        );
        assert_eq!(desc(&image, XenElfNote::SupportedFeatures), [0, 0, 0, 0]);
    }

    #[test]
    fn feature_strings() {
        assert_eq!(without_dom0("dom0").as_deref(), Some(""));
        assert_eq!(without_dom0("a|!dom0|b").as_deref(), Some("a|b"));
        assert_eq!(without_dom0("a|dom0x"), None);
    }

    #[test]
    fn entry_past_the_end() {
        let image = BadImage::Entry.make(&xen_kernel()).unwrap();
        // The synthetic image's PT_LOAD ends at 0xffffffff80004000.
        assert_eq!(
            elf::u64_at(&image, elf::E_ENTRY_OFFSET).unwrap(),
            0xffff_ffff_8000_5000
        );
    }

    #[test]
    fn mutations_need_an_elf() {
        assert!(BadImage::Loader.make(b"not an elf").is_err());
        assert!(BadImage::Entry.make(b"").is_err());
    }
}
