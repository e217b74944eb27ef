//! Xen ELF notes: how a PV kernel image describes itself to the builder.
//!
//! Notes sit in a `PT_NOTE` segment (with a non-zero file offset), each with
//! owner name [`XEN_ELFNOTE_NAME`] (`"Xen"`, stored NUL-terminated and
//! padded to 4 bytes). String notes are NUL-terminated; numeric notes are 4
//! or 8 bytes little-endian (`SUPPORTED_FEATURES` is an array of 32-bit
//! submaps).
//!
//! Builder rules (Xen's libelf, followed here):
//! - `LOADER` must be `"generic"` (or `GUEST_OS` must start with `"linux"`).
//! - `XEN_VERSION` must start with `"xen-3.0"`.
//! - `VIRT_BASE` defaults to 0 and `PADDR_OFFSET` to 0 when notes are used;
//!   a segment's virtual address is `p_paddr + VIRT_BASE - PADDR_OFFSET`.
//! - `virt_base <= kernel start <= entry <= kernel end`.
//! - If `SUPPORTED_FEATURES` is present, a dom0 kernel must have the
//!   `dom0` bit (`1 << 11`) in it or the build fails.
//! - `ENTRY` defaults to the ELF `e_entry`.

/// The owner name of every Xen note (without its NUL).
pub const XEN_ELFNOTE_NAME: &[u8] = b"Xen";
/// The prefix `XEN_VERSION` must start with.
pub const XEN_ELFNOTE_XEN_VERSION_PREFIX: &[u8] = b"xen-3.0";
/// The `LOADER` value the builder accepts.
pub const XEN_ELFNOTE_LOADER_GENERIC: &[u8] = b"generic";

/// Whether a note's descriptor is a string or a number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoteKind {
    /// NUL-terminated string.
    String,
    /// 4- or 8-byte little-endian number (or an array of them).
    Numeric,
}

numbered_enum! {
    /// `XEN_ELFNOTE_*`: the type of a Xen note.
    XenElfNote {
        /// String `NAME=VALUE`, informational (ignored).
        Info = 0, "INFO";
        /// Number: entry virtual address (default `e_entry`).
        Entry = 1, "ENTRY";
        /// Number: virtual address of the page to fill with hypercall stubs.
        HypercallPage = 2, "HYPERCALL_PAGE";
        /// Number: virtual address where pseudo-physical 0 is mapped.
        VirtBase = 3, "VIRT_BASE";
        /// Number: bias between ELF `p_paddr` and pseudo-physical addresses.
        PaddrOffset = 4, "PADDR_OFFSET";
        /// String: ABI version, must start with `"xen-3.0"`.
        XenVersion = 5, "XEN_VERSION";
        /// String: the kernel's name.
        GuestOs = 6, "GUEST_OS";
        /// String: the kernel's version.
        GuestVersion = 7, "GUEST_VERSION";
        /// String: loader type, `"generic"`.
        Loader = 8, "LOADER";
        /// String: 32-bit PAE mode (`yes`, `no`, `bimodal`); unused for 64-bit.
        PaeMode = 9, "PAE_MODE";
        /// String: feature names separated by `|`; a leading `!` marks a
        /// feature as required.
        Features = 10, "FEATURES";
        /// String: `"yes"` to load the symbol table.
        BsdSymtab = 11, "BSD_SYMTAB";
        /// Number: lowest hypervisor-hole start (32-bit guests).
        HvStartLow = 12, "HV_START_LOW";
        /// Number pairs: L1 MFN validity mask/value (ignored).
        L1MfnValid = 13, "L1_MFN_VALID";
        /// Number: the kernel supports suspend cancellation.
        SuspendCancel = 14, "SUSPEND_CANCEL";
        /// Number: virtual address to place the p2m list at.
        InitP2m = 15, "INIT_P2M";
        /// Number: the initrd may be passed unmapped, as a PFN.
        ModStartPfn = 16, "MOD_START_PFN";
        /// Number array: bitmap(s) of supported `XENFEAT_*`, ORed into the
        /// `FEATURES` set.
        SupportedFeatures = 17, "SUPPORTED_FEATURES";
        /// Number: 32-bit PVH entry point (not used by PV).
        Phys32Entry = 18, "PHYS32_ENTRY";
    }
}

impl XenElfNote {
    /// Whether this note carries a string or a number.
    #[must_use]
    pub const fn kind(self) -> NoteKind {
        match self {
            XenElfNote::Info
            | XenElfNote::XenVersion
            | XenElfNote::GuestOs
            | XenElfNote::GuestVersion
            | XenElfNote::Loader
            | XenElfNote::PaeMode
            | XenElfNote::Features
            | XenElfNote::BsdSymtab => NoteKind::String,
            XenElfNote::Entry
            | XenElfNote::HypercallPage
            | XenElfNote::VirtBase
            | XenElfNote::PaddrOffset
            | XenElfNote::HvStartLow
            | XenElfNote::L1MfnValid
            | XenElfNote::SuspendCancel
            | XenElfNote::InitP2m
            | XenElfNote::ModStartPfn
            | XenElfNote::SupportedFeatures
            | XenElfNote::Phys32Entry => NoteKind::Numeric,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(XenElfNote::ALL.len(), 19);
        assert_eq!(XenElfNote::from_number(2), Some(XenElfNote::HypercallPage));
        assert_eq!(
            XenElfNote::from_number(17),
            Some(XenElfNote::SupportedFeatures)
        );
        assert_eq!(XenElfNote::from_number(19), None);
        assert_eq!(XenElfNote::Loader.kind(), NoteKind::String);
        assert_eq!(XenElfNote::VirtBase.kind(), NoteKind::Numeric);
    }
}
