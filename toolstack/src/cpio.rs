//! Reading the ramdisk: a cpio archive in the "newc" format (`cpio -H
//! newc`, magic `070701`), as Linux initramfs uses.
//!
//! Each member is a 110-byte ASCII header (13 eight-digit hex fields after
//! the magic), the NUL-terminated name padded to a multiple of 4 bytes
//! (counting from the header), then the data padded to a multiple of 4.
//! The member named `TRAILER!!!` ends the archive. Only the name, mode and
//! size are used; members other than regular files are skipped by
//! [`Archive::files`].
#![forbid(unsafe_code)]

/// Length of a newc header.
const HEADER_LEN: usize = 110;
/// The newc magic (without CRC).
const MAGIC: &[u8; 6] = b"070701";
/// The name of the last member.
const TRAILER: &str = "TRAILER!!!";
/// `S_IFMT` and `S_IFREG` of the mode field.
const S_IFMT: u32 = 0o170_000;
const S_IFREG: u32 = 0o100_000;

/// Why the archive cannot be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpioError {
    /// A header does not start with `070701` at this offset.
    BadMagic(usize),
    /// A header field is not hexadecimal (member at this offset).
    BadField(usize),
    /// A header, name or data runs past the end (member at this offset).
    Truncated(usize),
    /// A name is not NUL-terminated UTF-8 (member at this offset).
    BadName(usize),
}

impl core::fmt::Display for CpioError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CpioError::BadMagic(at) => write!(f, "cpio: no newc magic at offset {at}"),
            CpioError::BadField(at) => write!(f, "cpio: bad header field at offset {at}"),
            CpioError::Truncated(at) => write!(f, "cpio: member at offset {at} is truncated"),
            CpioError::BadName(at) => write!(f, "cpio: bad name at offset {at}"),
        }
    }
}

/// One member of the archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Its path, as stored (no leading `./` removed).
    pub name: &'a str,
    /// Its mode bits (type and permissions).
    pub mode: u32,
    /// Its contents.
    pub data: &'a [u8],
}

impl Entry<'_> {
    /// Whether the member is a regular file.
    #[must_use]
    pub const fn is_file(&self) -> bool {
        self.mode & S_IFMT == S_IFREG
    }
}

/// A newc archive in memory.
#[derive(Clone, Copy, Debug)]
pub struct Archive<'a> {
    bytes: &'a [u8],
}

impl<'a> Archive<'a> {
    /// The archive in `bytes` (read lazily: errors come from iteration).
    #[must_use]
    pub const fn new(bytes: &'a [u8]) -> Archive<'a> {
        Archive { bytes }
    }

    /// Every member up to the trailer, in archive order; an error ends the
    /// iteration.
    #[must_use]
    pub fn entries(&self) -> Entries<'a> {
        Entries {
            bytes: self.bytes,
            at: 0,
            done: false,
        }
    }

    /// Every regular file up to the first error.
    pub fn files(&self) -> impl Iterator<Item = Entry<'a>> + use<'a> {
        self.entries().map_while(Result::ok).filter(Entry::is_file)
    }

    /// The regular file named `name` (a leading `./` on either side is
    /// ignored).
    #[must_use]
    pub fn find(&self, name: &str) -> Option<Entry<'a>> {
        let want = name.trim_start_matches("./");
        self.files()
            .find(|e| e.name.trim_start_matches("./") == want)
    }

    /// The first error in the archive, if any.
    pub fn check(&self) -> Result<(), CpioError> {
        self.entries().try_for_each(|e| e.map(|_| ()))
    }
}

/// Iterator over an archive's members.
#[derive(Clone, Debug)]
pub struct Entries<'a> {
    bytes: &'a [u8],
    at: usize,
    done: bool,
}

/// `n` rounded up to a multiple of 4.
const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Header field `index` (0 = ino) of the header at `header`.
fn field(header: &[u8], index: usize, at: usize) -> Result<u32, CpioError> {
    let start = MAGIC.len() + index * 8;
    let text = header
        .get(start..start + 8)
        .ok_or(CpioError::Truncated(at))?;
    let text = core::str::from_utf8(text).map_err(|_| CpioError::BadField(at))?;
    u32::from_str_radix(text, 16).map_err(|_| CpioError::BadField(at))
}

impl<'a> Entries<'a> {
    fn parse(&mut self) -> Result<Option<Entry<'a>>, CpioError> {
        let at = self.at;
        let header = self
            .bytes
            .get(at..at + HEADER_LEN)
            .ok_or(CpioError::Truncated(at))?;
        if &header[..MAGIC.len()] != MAGIC {
            return Err(CpioError::BadMagic(at));
        }
        let mode = field(header, 1, at)?;
        let size = field(header, 6, at)? as usize;
        let namesize = field(header, 11, at)? as usize;
        let name_start = at + HEADER_LEN;
        let name_bytes = self
            .bytes
            .get(name_start..name_start + namesize)
            .ok_or(CpioError::Truncated(at))?;
        let name = match name_bytes.split_last() {
            Some((0, name)) => core::str::from_utf8(name).map_err(|_| CpioError::BadName(at))?,
            _ => return Err(CpioError::BadName(at)),
        };
        let data_start = align4(name_start + namesize);
        let data = self
            .bytes
            .get(data_start..data_start + size)
            .ok_or(CpioError::Truncated(at))?;
        self.at = align4(data_start + size);
        if name == TRAILER {
            return Ok(None);
        }
        Ok(Some(Entry { name, mode, data }))
    }
}

impl<'a> Iterator for Entries<'a> {
    type Item = Result<Entry<'a>, CpioError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.parse() {
            Ok(Some(entry)) => Some(Ok(entry)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    extern crate std;
    use std::vec::Vec;

    use super::*;

    /// A newc member, as `cpio -o -H newc` writes it.
    #[allow(clippy::cast_possible_truncation, reason = "test members are small")]
    pub(crate) fn member(out: &mut Vec<u8>, name: &str, mode: u32, data: &[u8]) {
        let fields = [
            1,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        out.extend_from_slice(MAGIC);
        for f in fields {
            out.extend_from_slice(std::format!("{f:08X}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
        out.extend_from_slice(data);
        while !out.len().is_multiple_of(4) {
            out.push(0);
        }
    }

    /// An archive of regular files, with the trailer.
    pub(crate) fn archive(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        member(&mut out, ".", 0o040_755, b"");
        for (name, data) in files {
            member(&mut out, name, 0o100_644, data);
        }
        member(&mut out, TRAILER, 0, b"");
        out
    }

    #[test]
    fn reads_files_in_order_and_skips_directories() {
        let bytes = archive(&[("a.cfg", b"name = \"a\"\n"), ("./kernel", b"\x7fELF12345")]);
        let ar = Archive::new(&bytes);
        assert_eq!(ar.check(), Ok(()));
        let names: Vec<&str> = ar.files().map(|e| e.name).collect();
        assert_eq!(names, ["a.cfg", "./kernel"]);
        assert_eq!(ar.find("kernel").unwrap().data, b"\x7fELF12345");
        assert_eq!(ar.find("./a.cfg").unwrap().data.len(), 11);
        assert!(ar.find("missing").is_none());
    }

    #[test]
    fn reports_damage() {
        let bytes = archive(&[("x", b"0123456789")]);
        // Cut inside the data of `x` (the "." member is 112 bytes).
        let cut = &bytes[..112 + 116];
        assert_eq!(Archive::new(cut).check(), Err(CpioError::Truncated(112)));
        let mut bad = bytes.clone();
        bad[112] = b'1';
        assert_eq!(Archive::new(&bad).check(), Err(CpioError::BadMagic(112)));
        let mut field = bytes.clone();
        field[112 + 6 + 6 * 8] = b'g';
        assert_eq!(Archive::new(&field).check(), Err(CpioError::BadField(112)));
        assert_eq!(Archive::new(b"").check(), Err(CpioError::Truncated(0)));
    }
}
