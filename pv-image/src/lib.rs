//! Loading of PV kernel images: an ELF64 reader and Xen's note rules.
//!
//! [`elf`] reads the container with every offset bounds-checked;
//! [`bzimage`] finds the compressed kernel inside a Linux `bzImage`;
//! [`xen_notes`] applies Xen's acceptance rules and yields a
//! [`GuestImageInfo`] for a domain builder. Both are pure and host-tested.
//!
//! Two builders use it: the hypervisor's dom0 builder
//! ([`GuestImageInfo::parse_dom0`]) and the toolstack's domU builder in
//! dom0 ([`GuestImageInfo::parse`]), so both accept exactly the same
//! images by the same rules.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod bzimage;
pub mod elf;
pub mod xen_notes;

pub use bzimage::{BzImage, BzImageError, Compression};
pub use elf::{ElfError, ElfFile};
pub use xen_notes::{Features, GuestImageInfo, ImageError, LoadSegment, NoteSource};
