//! `grant_table_op(cmd, uop, count)`: grant tables, version 1.
//!
//! A domain shares a frame by filling an entry of its grant table
//! ([`GrantEntryV1`]); another domain then maps or copies it by reference.
//! The call returns 0 if it ran; each operation's own result is in its
//! `status` field ([`GrantStatus`]).
//!
//! Protocol on an entry (`[GRANTER]` = owning guest, `[HV]` = hypervisor):
//! - Grant: `[GRANTER]` writes `domid`, then `frame`, then a write barrier,
//!   then `flags` (type `GTF_permit_access`, optionally `GTF_readonly`).
//! - Map: `[HV]` sets `GTF_reading` (and `GTF_writing` for a writable map)
//!   with compare-and-swap, and clears them when the last mapping goes.
//! - Revoke: `[GRANTER]` checks neither `reading` nor `writing` is set and
//!   compare-and-swaps `flags` to 0; an entry in use cannot be revoked.
//! - Entries 0-7 are reserved (0: console, 1: xenstore).

use bitflags::bitflags;

numbered_enum! {
    /// `GNTTABOP_*`: the `cmd` of `grant_table_op(cmd, uop, count)`.
    ///
    /// Any domain may call it. The call returns 0 once it ran (each
    /// operation's outcome is the `status` of its structure, a
    /// [`GrantStatus`]) and fails as a whole with `EINVAL` for a negative
    /// `count` or bits above [`GNTTABOP_CMD_MASK`] in `cmd`, `EFAULT` for
    /// an array outside guest space or a structure that cannot be read or
    /// written back, `ENOSYS` for an unknown command.
    GnttabOp {
        /// [`GnttabMapGrantRef`]\[count\]: map grants of domain `dom`
        /// (an existing id; `DOMID_SELF` is `bad_domain`) into the
        /// caller's page tables (`GNTMAP_host_map`, at a VA or, with
        /// `GNTMAP_contains_pte`, the machine address of an L1 entry)
        /// and/or for devices (`GNTMAP_device_map`). OUT `handle`,
        /// `dev_bus_addr` (the frame's address). Statuses: `bad_gntref`
        /// (no mapping kind, or beyond the table), `bad_domain`,
        /// `no_space` (no maptrack handle), `general_error` (entry not
        /// granted to the caller, writable use of a read-only grant,
        /// frame that cannot be typed writable, no L1 table at the
        /// address), `bad_page` (granted frame not the granter's).
        MapGrantRef = 0, "map_grant_ref";
        /// [`GnttabUnmapGrantRef`]\[count\]: undo maps by handle; only
        /// `status` is written. Statuses: `bad_handle`, `bad_dev_addr`
        /// (another bus address), `general_error` (the PTE no longer maps
        /// the frame with the mapping's access).
        UnmapGrantRef = 1, "unmap_grant_ref";
        /// [`GnttabSetupTable`] (count must be 1, else `EINVAL`): grow the
        /// table of `dom` (`DOMID_SELF` or an id; another domain needs
        /// privilege: `permission_denied`) to `nr_frames` and write the
        /// frames' MFNs. Statuses: `bad_domain`, `general_error` (above
        /// `max_grant_frames`, no memory), `bad_virt_addr`.
        SetupTable = 2, "setup_table";
        /// Debug dump of a table: not handled by Xen 4.17 (`ENOSYS`).
        DumpTable = 3, "dump_table";
        /// Page transfer (`ENOSYS` here, see `docs/grant-tables.md`).
        Transfer = 4, "transfer";
        /// [`GnttabCopy`]\[count\]: copy bytes between a grant or (the
        /// caller's own, named with `DOMID_SELF`) frame and another; only
        /// `status` is written. Statuses: `permission_denied` (a frame
        /// named with any id but `DOMID_SELF`), `bad_domain`,
        /// `bad_gntref`, `bad_page`, `general_error` (not granted,
        /// read-only grant as destination, destination frame typed
        /// otherwise), `bad_copy_arg` (a range crossing the page end).
        Copy = 5, "copy";
        /// [`GnttabQuerySize`] (count 1): current and maximum frames of
        /// `dom`'s table; `bad_domain`, `permission_denied`.
        QuerySize = 6, "query_size";
        /// [`GnttabUnmapAndReplace`]\[count\]: unmap a host mapping by
        /// handle, moving the mapping at `new_addr` (if not 0) into its
        /// place; statuses as `UnmapGrantRef`.
        UnmapAndReplace = 7, "unmap_and_replace";
        /// [`GnttabSetVersion`]: 1 is accepted; 2 is `ENOSYS` (only v1 is
        /// offered); other values `EINVAL`. `version` OUT in every case.
        SetVersion = 8, "set_version";
        /// [`GnttabGetStatusFrames`] (count 1): v2 status frames; a v1
        /// table has none (`general_error` for any `nr_frames` but 0).
        GetStatusFrames = 9, "get_status_frames";
        /// [`GnttabGetVersion`]: the version of `dom`'s table; `ESRCH` no
        /// such domain, `EPERM` another domain without privilege.
        GetVersion = 10, "get_version";
        /// [`GnttabSwapGrantRef`]\[count\]: exchange two entries of the
        /// caller's table; `bad_gntref`, `eagain` (either is in use).
        SwapGrantRef = 11, "swap_grant_ref";
        /// Cache maintenance on granted frames (`ENOSYS` here).
        CacheFlush = 12, "cache_flush";
    }
}

bitflags! {
    /// `GTF_*` bits of [`GrantEntryV1::flags`]; bits 1:0 are the type.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct GtfFlags: u16 {
        /// Type: the frame may be mapped or copied.
        const PERMIT_ACCESS = 1;
        /// Type: the domain accepts a page transfer into this entry.
        const ACCEPT_TRANSFER = 2;
        /// Type (both bits): transitive grant (v2).
        const TRANSITIVE = 3;
        /// `[GRANTER]` Read-only access only (or, for transfers,
        /// `transfer_committed` written by `[HV]`).
        const READONLY = 1 << 2;
        /// `[HV]` The frame is mapped or being copied from (transfers:
        /// `transfer_completed`).
        const READING = 1 << 3;
        /// `[HV]` The frame is mapped writable or being copied to.
        const WRITING = 1 << 4;
        /// Cache attribute PWT for the mapping.
        const PWT = 1 << 5;
        /// Cache attribute PCD for the mapping.
        const PCD = 1 << 6;
        /// Cache attribute PAT for the mapping.
        const PAT = 1 << 7;
        /// Sub-page grant (v2).
        const SUB_PAGE = 1 << 8;
    }
}

/// Mask of the type bits in [`GrantEntryV1::flags`].
pub const GTF_TYPE_MASK: u16 = 3;

bitflags! {
    /// `GNTMAP_*`: [`GnttabMapGrantRef::flags`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct GntmapFlags: u32 {
        /// Map for device (DMA) access.
        const DEVICE_MAP = 1 << 0;
        /// Map into the host's address space.
        const HOST_MAP = 1 << 1;
        /// Read-only mapping.
        const READONLY = 1 << 2;
        /// Mapping for a user application (`host_addr` is a user VA).
        const APPLICATION_MAP = 1 << 3;
        /// `host_addr` is the machine address of a PTE to write.
        const CONTAINS_PTE = 1 << 4;
        /// Bits 16-31: copied into the available bits 9-11 of the PTE of
        /// a host mapping (`XENFEAT_gnttab_map_avail_bits`; only the low
        /// three bits fit).
        const GUEST_AVAIL = 0xFFFF_0000;
    }
}

/// `_GNTMAP_guest_avail0`: the first bit of [`GntmapFlags::GUEST_AVAIL`].
pub const GNTMAP_GUEST_AVAIL_SHIFT: u32 = 16;

/// `GNTTABOP_CMD_MASK`: the low 12 bits of `cmd` select the operation;
/// the bits above carry continuation state (`cache_flush` only, any other
/// operation with them set is `EINVAL`).
pub const GNTTABOP_CMD_MASK: u32 = (1 << 12) - 1;

/// `GNTCOPY_source_gref`: the copy source is a grant reference.
pub const GNTCOPY_SOURCE_GREF: u16 = 1 << 0;
/// `GNTCOPY_dest_gref`: the copy destination is a grant reference.
pub const GNTCOPY_DEST_GREF: u16 = 1 << 1;
/// Entries a domain starts with (one frame of v1 entries).
pub const INITIAL_NR_GRANT_FRAMES: u32 = 1;
/// v1 entries per 4 KiB frame.
pub const GRANT_ENTRIES_V1_PER_FRAME: u32 = 512;
/// First grant reference free for general use (0-7 are reserved).
pub const GNTTAB_NR_RESERVED_ENTRIES: u32 = 8;

/// `GNTST_*`: per-operation status of a grant operation.
#[repr(i16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GrantStatus {
    /// Success.
    Okay = 0,
    /// Unspecified error.
    GeneralError = -1,
    /// Unknown domain.
    BadDomain = -2,
    /// Unknown or unsuitable grant reference.
    BadGntref = -3,
    /// Unknown or unsuitable handle.
    BadHandle = -4,
    /// Unsuitable virtual address.
    BadVirtAddr = -5,
    /// Unsuitable device address.
    BadDevAddr = -6,
    /// No space in the IOMMU.
    NoDeviceSpace = -7,
    /// Not allowed.
    PermissionDenied = -8,
    /// Unsuitable page.
    BadPage = -9,
    /// Copy crosses a page boundary.
    BadCopyArg = -10,
    /// Transfer address too large.
    AddressTooBig = -11,
    /// Not done; try again.
    Eagain = -12,
    /// No space (handles, ...).
    NoSpace = -13,
}

impl GrantStatus {
    /// The status with value `v`, if defined.
    #[must_use]
    pub const fn from_value(v: i16) -> Option<GrantStatus> {
        Some(match v {
            0 => GrantStatus::Okay,
            -1 => GrantStatus::GeneralError,
            -2 => GrantStatus::BadDomain,
            -3 => GrantStatus::BadGntref,
            -4 => GrantStatus::BadHandle,
            -5 => GrantStatus::BadVirtAddr,
            -6 => GrantStatus::BadDevAddr,
            -7 => GrantStatus::NoDeviceSpace,
            -8 => GrantStatus::PermissionDenied,
            -9 => GrantStatus::BadPage,
            -10 => GrantStatus::BadCopyArg,
            -11 => GrantStatus::AddressTooBig,
            -12 => GrantStatus::Eagain,
            -13 => GrantStatus::NoSpace,
            _ => return None,
        })
    }
}

/// `struct grant_entry_v1` (8 bytes): one entry of a v1 grant table.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GrantEntryV1 {
    /// `[GRANTER]`/`[HV]` [`GtfFlags`]; written last when granting.
    pub flags: u16,
    /// `[GRANTER]` The domain allowed to use the entry.
    pub domid: u16,
    /// `[GRANTER]` The frame (MFN for PV).
    pub frame: u32,
}

/// `struct gnttab_map_grant_ref` (32 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabMapGrantRef {
    /// IN: where to map (VA, or PTE machine address with `CONTAINS_PTE`).
    pub host_addr: u64,
    /// IN: [`GntmapFlags`].
    pub flags: u32,
    /// IN: the grant reference.
    pub gref: u32,
    /// IN: the granting domain.
    pub dom: u16,
    /// OUT: a [`GrantStatus`].
    pub status: i16,
    /// OUT: handle for unmapping.
    pub handle: u32,
    /// OUT: bus address for device mappings.
    pub dev_bus_addr: u64,
}

/// `struct gnttab_unmap_grant_ref` (24 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabUnmapGrantRef {
    /// IN: the mapped address.
    pub host_addr: u64,
    /// IN: the device address (device mappings).
    pub dev_bus_addr: u64,
    /// IN: the handle from the map.
    pub handle: u32,
    /// OUT: a [`GrantStatus`].
    pub status: i16,
    /// Padding.
    pub pad: u16,
}

/// `struct gnttab_setup_table` (24 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabSetupTable {
    /// IN: the domain (`DOMID_SELF`).
    pub dom: u16,
    /// Padding.
    pub pad0: u16,
    /// IN: number of frames wanted.
    pub nr_frames: u32,
    /// OUT: a [`GrantStatus`].
    pub status: i16,
    /// Padding.
    pub pad1: [u16; 3],
    /// IN: guest pointer to `nr_frames` u64 to receive the frames' MFNs.
    pub frame_list: u64,
}

/// One side of a grant copy (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabCopyPtr {
    /// A grant reference (low 32 bits) or a GMFN, per the copy flags.
    pub u: u64,
    /// The domain.
    pub domid: u16,
    /// Byte offset in the frame.
    pub offset: u16,
    /// Padding.
    pub pad: u32,
}

/// `struct gnttab_copy` (40 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabCopy {
    /// IN: source.
    pub source: GnttabCopyPtr,
    /// IN: destination.
    pub dest: GnttabCopyPtr,
    /// IN: bytes to copy (must not cross a page: `BadCopyArg`).
    pub len: u16,
    /// IN: `GNTCOPY_*` flags.
    pub flags: u16,
    /// OUT: a [`GrantStatus`].
    pub status: i16,
    /// Padding.
    pub pad: u16,
}

/// `struct gnttab_query_size` (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabQuerySize {
    /// IN: the domain.
    pub dom: u16,
    /// Padding.
    pub pad: u16,
    /// OUT: current frames.
    pub nr_frames: u32,
    /// OUT: maximum frames.
    pub max_nr_frames: u32,
    /// OUT: a [`GrantStatus`].
    pub status: i16,
    /// Padding.
    pub pad1: u16,
}

/// `struct gnttab_unmap_and_replace` (24 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabUnmapAndReplace {
    /// IN: the mapped address.
    pub host_addr: u64,
    /// IN: an address whose mapping moves to `host_addr` (0: none, the
    /// entry at `host_addr` is cleared).
    pub new_addr: u64,
    /// IN: the handle from the map.
    pub handle: u32,
    /// OUT: a [`GrantStatus`].
    pub status: i16,
    /// Padding.
    pub pad: u16,
}

/// `struct gnttab_get_status_frames` (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabGetStatusFrames {
    /// IN: number of frames wanted.
    pub nr_frames: u32,
    /// IN: the domain.
    pub dom: u16,
    /// OUT: a [`GrantStatus`].
    pub status: i16,
    /// IN: guest pointer to `nr_frames` u64 to receive the frames.
    pub frame_list: u64,
}

/// `struct gnttab_get_version` (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabGetVersion {
    /// IN: the domain.
    pub dom: u16,
    /// Padding.
    pub pad: u16,
    /// OUT: its table's version.
    pub version: u32,
}

/// `struct gnttab_swap_grant_ref` (12 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabSwapGrantRef {
    /// IN: one entry.
    pub ref_a: u32,
    /// IN: the other.
    pub ref_b: u32,
    /// OUT: a [`GrantStatus`].
    pub status: i16,
    /// Padding.
    pub pad: u16,
}

/// `struct gnttab_set_version` (4 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GnttabSetVersion {
    /// IN: version wanted (1 or 2); OUT: version in force.
    pub version: u32,
}

crate::assert_layout!(GrantEntryV1, 8, { flags: 0, domid: 2, frame: 4 });
crate::assert_layout!(GnttabMapGrantRef, 32, {
    host_addr: 0, flags: 8, gref: 12, dom: 16, status: 18, handle: 20, dev_bus_addr: 24,
});
crate::assert_layout!(GnttabUnmapGrantRef, 24, {
    host_addr: 0, dev_bus_addr: 8, handle: 16, status: 20, pad: 22,
});
crate::assert_layout!(GnttabSetupTable, 24, {
    dom: 0, pad0: 2, nr_frames: 4, status: 8, pad1: 10, frame_list: 16,
});
crate::assert_layout!(GnttabCopyPtr, 16, { u: 0, domid: 8, offset: 10, pad: 12 });
crate::assert_layout!(GnttabCopy, 40, {
    source: 0, dest: 16, len: 32, flags: 34, status: 36, pad: 38,
});
crate::assert_layout!(GnttabQuerySize, 16, {
    dom: 0, pad: 2, nr_frames: 4, max_nr_frames: 8, status: 12, pad1: 14,
});
crate::assert_layout!(GnttabSetVersion, 4, { version: 0 });
crate::assert_layout!(GnttabUnmapAndReplace, 24, {
    host_addr: 0, new_addr: 8, handle: 16, status: 20, pad: 22,
});
crate::assert_layout!(GnttabGetStatusFrames, 16, {
    nr_frames: 0, dom: 4, status: 6, frame_list: 8,
});
crate::assert_layout!(GnttabGetVersion, 8, { dom: 0, pad: 2, version: 4 });
crate::assert_layout!(GnttabSwapGrantRef, 12, { ref_a: 0, ref_b: 4, status: 8, pad: 10 });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        for v in -13..=0 {
            assert_eq!(GrantStatus::from_value(v).map(|s| s as i16), Some(v));
        }
        assert_eq!(GrantStatus::from_value(-14), None);
        assert_eq!(GtfFlags::WRITING.bits(), 16);
    }
}
