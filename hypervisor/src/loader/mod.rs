//! Loading of PV kernel images: an ELF64 reader and Xen's note rules.
//!
//! [`elf`] reads the container with every offset bounds-checked;
//! [`xen_notes`] applies Xen's acceptance rules and yields a
//! [`GuestImageInfo`] for the domain builder. Both are pure and host-tested.
#![forbid(unsafe_code)]

pub mod elf;
pub mod xen_notes;

pub use elf::{ElfError, ElfFile};
pub use xen_notes::{Features, GuestImageInfo, ImageError, LoadSegment, NoteSource};
