//! The x86 Linux boot protocol's `bzImage`: where its compressed kernel
//! (`payload`) is and how it is compressed.
//!
//! Xen's PV loader accepts a `bzImage` as well as an ELF: it reads the
//! real-mode setup header, takes the payload named by `payload_offset` and
//! `payload_length` (boot protocol 2.08 and later), decompresses it and
//! loads the ELF `vmlinux` inside. The facts used here (offsets and magics
//! of the boot protocol, and the 4-byte little-endian uncompressed size the
//! kernel's build appends to every payload) come from the boot protocol's
//! documentation; [`BzImage::parse`] is this project's own code and never
//! panics, whatever the bytes.
#![forbid(unsafe_code)]

use core::fmt;

/// Offset of `setup_sects` (number of 512-byte setup sectors after the
/// boot sector; 0 means 4).
const SETUP_SECTS: usize = 0x1f1;
/// Offset of the `HdrS` signature.
const HEADER_MAGIC_AT: usize = 0x202;
/// The setup header's signature.
const HEADER_MAGIC: &[u8; 4] = b"HdrS";
/// Offset of the boot protocol version (major in the high byte).
const VERSION_AT: usize = 0x206;
/// Offset of `payload_offset` (from the start of the protected-mode code).
const PAYLOAD_OFFSET_AT: usize = 0x248;
/// Offset of `payload_length`.
const PAYLOAD_LENGTH_AT: usize = 0x24c;
/// The first boot protocol with `payload_offset`/`payload_length` (2.08).
const PAYLOAD_SINCE: u16 = 0x0208;
/// Bytes of the uncompressed-size trailer at the end of every payload.
const SIZE_TRAILER: usize = 4;

/// How a payload is compressed, told by its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    /// XZ (`FD 37 7A 58 5A 00`): Debian's kernels.
    Xz,
    /// gzip (`1F 8B`).
    Gzip,
    /// Zstandard (`28 B5 2F FD`).
    Zstd,
    /// bzip2 (`BZh`).
    Bzip2,
    /// Legacy LZMA (`5D 00 00`).
    Lzma,
    /// LZ4 legacy frames (`02 21 4C 18`).
    Lz4,
    /// LZO (`89 4C 5A 4F`).
    Lzo,
    /// Not compressed: the payload is the ELF itself (`7F 45 4C 46`).
    None,
}

impl Compression {
    /// The magic numbers, in the order they are tried.
    const MAGICS: [(&'static [u8], Compression); 8] = [
        (&[0xfd, b'7', b'z', b'X', b'Z', 0], Compression::Xz),
        (&[0x1f, 0x8b], Compression::Gzip),
        (&[0x28, 0xb5, 0x2f, 0xfd], Compression::Zstd),
        (b"BZh", Compression::Bzip2),
        (&[0x5d, 0, 0], Compression::Lzma),
        (&[0x02, 0x21, 0x4c, 0x18], Compression::Lz4),
        (&[0x89, b'L', b'Z', b'O'], Compression::Lzo),
        (b"\x7fELF", Compression::None),
    ];

    /// The compression whose magic starts `data`, if any.
    #[must_use]
    pub fn detect(data: &[u8]) -> Option<Compression> {
        Self::MAGICS
            .iter()
            .find(|(magic, _)| data.starts_with(magic))
            .map(|&(_, kind)| kind)
    }

    /// Its usual name (also the name of the host command that undoes it).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Compression::Xz => "xz",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Bzip2 => "bzip2",
            Compression::Lzma => "lzma",
            Compression::Lz4 => "lz4",
            Compression::Lzo => "lzop",
            Compression::None => "none",
        }
    }
}

/// Why bytes are not a usable `bzImage`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BzImageError {
    /// No `HdrS` signature at 0x202: not a Linux boot image.
    NotBzImage,
    /// Boot protocol older than 2.08: no payload fields.
    OldProtocol(u16),
    /// The payload does not lie inside the file.
    PayloadOutOfBounds {
        /// Its file offset.
        offset: u64,
        /// Its length.
        length: u64,
    },
    /// The payload's first bytes are no known compression.
    UnknownCompression,
}

impl fmt::Display for BzImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BzImageError::NotBzImage => write!(f, "not a bzImage (no HdrS setup header)"),
            BzImageError::OldProtocol(v) => write!(
                f,
                "bzImage boot protocol {}.{:02} has no payload fields (2.08 or later needed)",
                v >> 8,
                v & 0xff
            ),
            BzImageError::PayloadOutOfBounds { offset, length } => write!(
                f,
                "bzImage payload ({length} bytes at {offset:#x}) lies outside the file"
            ),
            BzImageError::UnknownCompression => {
                write!(f, "bzImage payload has no known compression magic")
            }
        }
    }
}

/// A parsed `bzImage`: its payload and how to undo its compression.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BzImage<'a> {
    /// Boot protocol version (0x020f is 2.15).
    pub protocol: u16,
    /// The compressed stream, without the size trailer.
    pub compressed: &'a [u8],
    /// Its compression.
    pub compression: Compression,
    /// The decompressed size the build recorded after the stream.
    pub uncompressed_size: u32,
}

/// The little-endian `u16` at `at`, if inside `data`.
fn le16(data: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(data.get(at..at + 2)?.try_into().ok()?))
}

/// The little-endian `u32` at `at`, if inside `data`.
fn le32(data: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(data.get(at..at + 4)?.try_into().ok()?))
}

impl<'a> BzImage<'a> {
    /// Reads the setup header of `image` and finds its payload.
    ///
    /// # Errors
    /// Every [`BzImageError`]: not a boot image, too old a protocol, a
    /// payload outside the file or of unknown compression.
    pub fn parse(image: &'a [u8]) -> Result<Self, BzImageError> {
        if image.get(HEADER_MAGIC_AT..HEADER_MAGIC_AT + 4) != Some(HEADER_MAGIC.as_slice()) {
            return Err(BzImageError::NotBzImage);
        }
        let protocol = le16(image, VERSION_AT).ok_or(BzImageError::NotBzImage)?;
        if protocol < PAYLOAD_SINCE {
            return Err(BzImageError::OldProtocol(protocol));
        }
        let (Some(sects), Some(offset), Some(length)) = (
            image.get(SETUP_SECTS),
            le32(image, PAYLOAD_OFFSET_AT),
            le32(image, PAYLOAD_LENGTH_AT),
        ) else {
            return Err(BzImageError::NotBzImage);
        };
        let sects = if *sects == 0 { 4 } else { u64::from(*sects) };
        let start = (sects + 1) * 512 + u64::from(offset);
        let out_of_bounds = BzImageError::PayloadOutOfBounds {
            offset: start,
            length: u64::from(length),
        };
        let payload = usize::try_from(start)
            .ok()
            .zip(usize::try_from(length).ok())
            .and_then(|(start, length)| image.get(start..start.checked_add(length)?))
            .filter(|p| p.len() > SIZE_TRAILER)
            .ok_or(out_of_bounds)?;
        let (compressed, trailer) = payload.split_at(payload.len() - SIZE_TRAILER);
        let compression =
            Compression::detect(compressed).ok_or(BzImageError::UnknownCompression)?;
        let uncompressed_size = le32(trailer, 0).ok_or(out_of_bounds)?;
        Ok(BzImage {
            protocol,
            compressed,
            compression,
            uncompressed_size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bzImage of `setup_sects` setup sectors (plus the boot sector)
    /// whose payload is `payload` at `payload_offset` into the
    /// protected-mode part.
    fn image(setup_sects: u8, protocol: u16, payload_offset: u32, payload: &[u8]) -> Vec<u8> {
        let sects = if setup_sects == 0 { 4 } else { setup_sects };
        let pm_start = (usize::from(sects) + 1) * 512;
        let mut out = vec![0u8; pm_start + payload_offset as usize];
        out[SETUP_SECTS] = setup_sects;
        out[HEADER_MAGIC_AT..HEADER_MAGIC_AT + 4].copy_from_slice(HEADER_MAGIC);
        out[VERSION_AT..VERSION_AT + 2].copy_from_slice(&protocol.to_le_bytes());
        out[PAYLOAD_OFFSET_AT..PAYLOAD_OFFSET_AT + 4]
            .copy_from_slice(&payload_offset.to_le_bytes());
        let length = u32::try_from(payload.len()).unwrap();
        out[PAYLOAD_LENGTH_AT..PAYLOAD_LENGTH_AT + 4].copy_from_slice(&length.to_le_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn xz_payload() -> Vec<u8> {
        let mut p = vec![0xfd, b'7', b'z', b'X', b'Z', 0, 1, 2, 3];
        p.extend_from_slice(&0x0123_4567u32.to_le_bytes());
        p
    }

    #[test]
    fn finds_an_xz_payload() {
        let payload = xz_payload();
        let data = image(27, 0x020f, 0x3c0, &payload);
        let bz = BzImage::parse(&data).unwrap();
        assert_eq!(bz.protocol, 0x020f);
        assert_eq!(bz.compression, Compression::Xz);
        assert_eq!(bz.compressed, &payload[..payload.len() - 4]);
        assert_eq!(bz.uncompressed_size, 0x0123_4567);
    }

    #[test]
    fn zero_setup_sects_means_four() {
        let payload = xz_payload();
        let data = image(0, 0x0208, 0, &payload);
        assert_eq!(data.len(), 5 * 512 + payload.len());
        assert_eq!(BzImage::parse(&data).unwrap().compression, Compression::Xz);
    }

    #[test]
    fn every_known_magic() {
        for (magic, kind) in Compression::MAGICS {
            let mut payload = magic.to_vec();
            payload.extend_from_slice(&[0; 8]);
            let data = image(4, 0x020f, 16, &payload);
            assert_eq!(BzImage::parse(&data).unwrap().compression, kind);
        }
        let data = image(4, 0x020f, 16, &[0x42; 12]);
        assert_eq!(BzImage::parse(&data), Err(BzImageError::UnknownCompression));
    }

    #[test]
    fn rejects_what_is_not_a_usable_bzimage() {
        assert_eq!(BzImage::parse(b"\x7fELF"), Err(BzImageError::NotBzImage));
        assert_eq!(BzImage::parse(&[0; 4096]), Err(BzImageError::NotBzImage));
        let old = image(4, 0x0206, 0, &xz_payload());
        assert_eq!(BzImage::parse(&old), Err(BzImageError::OldProtocol(0x0206)));
        assert!(
            BzImage::parse(&old)
                .unwrap_err()
                .to_string()
                .contains("2.06")
        );
        let mut short = image(4, 0x020f, 0, &xz_payload());
        short.truncate(short.len() - 1);
        assert!(matches!(
            BzImage::parse(&short),
            Err(BzImageError::PayloadOutOfBounds { .. })
        ));
        // A payload of the trailer alone holds no stream.
        let empty = image(4, 0x020f, 0, &[1, 0, 0, 0]);
        assert!(matches!(
            BzImage::parse(&empty),
            Err(BzImageError::PayloadOutOfBounds { .. })
        ));
    }

    #[test]
    fn huge_fields_never_panic() {
        let mut data = image(255, 0x020f, 0, &xz_payload());
        data[PAYLOAD_OFFSET_AT..PAYLOAD_OFFSET_AT + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        data[PAYLOAD_LENGTH_AT..PAYLOAD_LENGTH_AT + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            BzImage::parse(&data),
            Err(BzImageError::PayloadOutOfBounds { .. })
        ));
        for len in 0..0x260 {
            let _ = BzImage::parse(&data[..len.min(data.len())]);
        }
    }
}
