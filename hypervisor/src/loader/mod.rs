//! Loading of PV kernel images: the `pv-image` crate (an ELF64 reader and
//! Xen's note rules), which dom0's domain builder shares.
#![forbid(unsafe_code)]

pub use pv_image::{
    ElfError, ElfFile, Features, GuestImageInfo, ImageError, LoadSegment, NoteSource,
};
pub use pv_image::{elf, xen_notes};
