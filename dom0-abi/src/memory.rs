//! `memory_op(cmd, arg)`: reservations, the physmap and memory maps.
//!
//! Bits 5:0 of `cmd` select the operation ([`MemoryOpCmd`]); bits 6 and up
//! carry the start extent of a continued (preempted) call and are 0 when a
//! guest makes the call. Unknown operation: `ENOSYS`.
//!
//! For a PV guest GMFN = MFN: reservation calls hand out and take back
//! machine frames, and the guest keeps its own p2m list up to date (plus the
//! M2P with `MMU_MACHPHYS_UPDATE`, except `populate_physmap` which updates
//! the M2P itself).

/// Bits of `cmd` above this shift carry the continuation start extent.
pub const MEMOP_EXTENT_SHIFT: u32 = 6;
/// The operation bits of `cmd`.
pub const MEMOP_CMD_MASK: u64 = (1 << MEMOP_EXTENT_SHIFT) - 1;

numbered_enum! {
    /// `XENMEM_*`: the operation in bits 5:0 of `memory_op`'s `cmd`.
    MemoryOpCmd {
        /// `arg`: [`XenMemoryReservation`] (IN; OUT: MFNs written to
        /// `extent_start`). Allocates `nr_extents` extents. Returns the
        /// number of extents done: fewer on shortage, 0 for an unreadable
        /// `arg` or a bad or foreign `domid` (never an error, as on Xen).
        IncreaseReservation = 0, "increase_reservation";
        /// `arg`: [`XenMemoryReservation`] (IN: GMFNs in `extent_start`).
        /// Frees the extents. Returns the number done (never an error, as
        /// above).
        DecreaseReservation = 1, "decrease_reservation";
        /// `arg` ignored. Returns the highest machine frame number in use.
        MaximumRamPage = 2, "maximum_ram_page";
        /// `arg`: [`XenMemoryDomain`] (IN). Returns the domain's current
        /// page count. `ESRCH`/`EPERM` for a bad or foreign domain.
        CurrentReservation = 3, "current_reservation";
        /// `arg`: [`XenMemoryDomain`] (IN). Returns the domain's page limit
        /// (`max_mem`; dom0's is `dom0_mem=max:`, else 2^32 - 1).
        /// `ESRCH`/`EPERM` for a bad or foreign domain.
        MaximumReservation = 4, "maximum_reservation";
        /// `arg`: [`XenMachphysMfnList`] (IN/OUT): the MFNs holding the M2P
        /// table, one per 2 MiB. Returns 0.
        MachphysMfnList = 5, "machphys_mfn_list";
        /// `arg`: [`XenMemoryReservation`] (IN: GPFNs; OUT: MFNs). Populates
        /// the pseudo-physical frames and updates the M2P. Returns the
        /// number of extents done.
        PopulatePhysmap = 6, "populate_physmap";
        /// `arg`: [`XenAddToPhysmap`] (IN). Translated guests only: for a
        /// PV domain `EACCES` after the checks: `EDOM` a start extent above
        /// 0xFFFF, `EFAULT` unreadable, `ENOSYS` space
        /// [`XENMAPSPACE_GMFN_FOREIGN`], `ESRCH` no such domain. Any caller.
        AddToPhysmap = 7, "add_to_physmap";
        /// `arg`: [`XenMemoryMap`] (IN `nr_entries` = buffer capacity; OUT
        /// `nr_entries` = entries written). The domain's pseudo-physical
        /// E820 map. `ENOSYS`: no map was set; `EFAULT`: bad buffer.
        MemoryMap = 9, "memory_map";
        /// `arg`: [`XenMemoryMap`]. The machine's E820 map as the boot
        /// loader gave it, with an `E820_RESERVED` entry in each gap for
        /// the MMIO the caller may not map. Hardware domain only. A NULL
        /// `buffer` asks for the entry count only. Faults writing entries
        /// are ignored, as on Xen.
        ///
        /// Errors: `EPERM` not the hardware domain; `EFAULT` `arg`
        /// unreadable or unwritable, or the buffer reaches the
        /// hypervisor's range; `EINVAL` `nr_entries` is less than the
        /// map's entries plus one.
        MachineMemoryMap = 10, "machine_memory_map";
        /// `arg`: [`XenMemoryExchange`] (IN/OUT). Trades the caller's
        /// `in` extents (GMFNs) for freshly allocated `out` extents that
        /// satisfy `out.mem_flags` (address bits), chunk by chunk: each
        /// chunk is one extent of the larger order and the extents of the
        /// smaller order that make it up. Each `out` list entry holds a
        /// GPFN, whose M2P entries the new frames get, and receives the
        /// MFN (PV). `nr_exchanged` (IN: `in` extents already done, 0 on a
        /// first call; OUT: `in` extents done) tells how far it got, also
        /// on failure. Any caller for itself; a privileged one for others.
        /// Returns 0; `in` and `out` pages are counted the same, so the
        /// domain's page count does not change.
        ///
        /// Errors: `EINVAL` a start extent in `cmd`, `nr_exchanged` above
        /// `in.nr_extents`, `in.domid` != `out.domid`, lists whose page
        /// totals differ or overflow, or an `in` frame that is not the
        /// domain's, still referenced (mapped, typed, pinned) or beyond
        /// the frame table; `EPERM` an order above the caller's limit (9
        /// for a domU, 12 with I/O rights, 18 for the control domain) or
        /// another domain without privilege; `ESRCH` no such domain;
        /// `EFAULT` unreadable `arg`, a list in the hypervisor's range, or
        /// a list entry that cannot be read or written; `ENOMEM` no free
        /// frames satisfy `out`'s order and address bits.
        Exchange = 11, "exchange";
        /// `arg`: [`XenMachphysMapping`] (OUT): where the M2P is mapped.
        /// Returns 0. `EFAULT`: bad `arg`.
        MachphysMapping = 12, "machphys_mapping";
        /// `arg`: `xen_foreign_memory_map`: set a domain's E820 (toolstack).
        SetMemoryMap = 13, "set_memory_map";
        /// `arg`: [`XenMemoryDomain`] (IN). Returns the highest GPFN.
        MaximumGpfn = 14, "maximum_gpfn";
        /// `arg`: `xen_remove_from_physmap` (translated guests).
        RemoveFromPhysmap = 15, "remove_from_physmap";
        /// Populate-on-demand target (HVM).
        SetPodTarget = 16, "set_pod_target";
        /// Populate-on-demand target (HVM).
        GetPodTarget = 17, "get_pod_target";
        /// Memory sharing statistics.
        GetSharingFreedPages = 18, "get_sharing_freed_pages";
        /// Memory sharing statistics.
        GetSharingSharedPages = 19, "get_sharing_shared_pages";
        /// Paging (HVM).
        PagingOp = 20, "paging_op";
        /// Memory access control (HVM).
        AccessOp = 21, "access_op";
        /// Memory sharing (HVM).
        SharingOp = 22, "sharing_op";
        /// Batched `add_to_physmap`.
        AddToPhysmapBatch = 23, "add_to_physmap_batch";
        /// Claim pages for a domain being built (toolstack).
        ClaimPages = 24, "claim_pages";
        /// M2P frames of the 32-bit compat table.
        MachphysCompatMfnList = 25, "machphys_compat_mfn_list";
        /// Virtual NUMA information.
        GetVnumainfo = 26, "get_vnumainfo";
        /// Reserved device memory map.
        ReservedDeviceMemoryMap = 27, "reserved_device_memory_map";
        /// Map a resource (grant table, ioreq server, ...) of a domain.
        AcquireResource = 28, "acquire_resource";
    }
}

/// `XENMEMF_*` bits of [`XenMemoryReservation::mem_flags`]: bits 7:0 are
/// the maximum address width of the frames (0 = any).
pub const XENMEMF_ADDRESS_BITS_MASK: u32 = 0xFF;
/// `XENMEMF_populate_on_demand`.
pub const XENMEMF_POPULATE_ON_DEMAND: u32 = 1 << 16;
/// `XENMEMF_exact_node_request`.
pub const XENMEMF_EXACT_NODE_REQUEST: u32 = 1 << 17;
/// `XENMEMF_vnode`.
pub const XENMEMF_VNODE: u32 = 1 << 18;

/// `struct xen_memory_reservation` (32 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenMemoryReservation {
    /// IN/OUT: guest pointer to an array of `nr_extents` frame numbers
    /// (meaning depends on the op).
    pub extent_start: u64,
    /// IN: number of extents.
    pub nr_extents: u64,
    /// IN: each extent is `2^extent_order` pages.
    pub extent_order: u32,
    /// IN: `XENMEMF_*` flags.
    pub mem_flags: u32,
    /// IN: the domain (`DOMID_SELF` for unprivileged callers).
    pub domid: u16,
    /// Padding.
    pub pad: [u8; 6],
}

/// `struct xen_memory_exchange` (72 bytes): the argument of
/// [`MemoryOpCmd::Exchange`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenMemoryExchange {
    /// IN: the extents given up (`extent_start`: their GMFNs).
    pub input: XenMemoryReservation,
    /// IN: the extents wanted (`extent_start`: IN GPFNs for the M2P, OUT
    /// MFNs; `mem_flags`: address bits); `domid` must equal `input`'s.
    pub output: XenMemoryReservation,
    /// IN: `input` extents already exchanged (0 on a first call); OUT:
    /// how many are exchanged when the call returns, successful or not.
    pub nr_exchanged: u64,
}

/// `struct xen_memory_domain` (2 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenMemoryDomain {
    /// IN: the domain to ask about.
    pub domid: u16,
}

/// `struct xen_machphys_mfn_list` (24 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenMachphysMfnList {
    /// IN: capacity of `extent_start`.
    pub max_extents: u32,
    /// Padding.
    pub pad0: u32,
    /// IN: guest pointer to the array to fill with M2P frame MFNs.
    pub extent_start: u64,
    /// OUT: number of entries written.
    pub nr_extents: u32,
    /// Padding.
    pub pad1: u32,
}

/// `struct xen_machphys_mapping` (24 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenMachphysMapping {
    /// OUT: start of the M2P mapping (`MACH2PHYS_VIRT_START`).
    pub v_start: u64,
    /// OUT: end (exclusive) of the M2P mapping.
    pub v_end: u64,
    /// OUT: largest MFN the M2P covers.
    pub max_mfn: u64,
}

/// `struct xen_memory_map` (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenMemoryMap {
    /// IN: capacity of `buffer` in entries; OUT: entries written.
    pub nr_entries: u32,
    /// Padding.
    pub pad: u32,
    /// IN: guest pointer to an array of [`E820Entry`].
    pub buffer: u64,
}

/// One E820 map entry (20 bytes, packed, as in the BIOS format).
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct E820Entry {
    /// Start address.
    pub addr: u64,
    /// Size in bytes.
    pub size: u64,
    /// Type: `E820_RAM` (1), reserved (2), ACPI (3), NVS (4), unusable (5).
    pub kind: u32,
}

/// E820 type: usable RAM.
pub const E820_RAM: u32 = 1;
/// E820 type: reserved.
pub const E820_RESERVED: u32 = 2;
/// E820 type: ACPI tables (reclaimable).
pub const E820_ACPI: u32 = 3;
/// E820 type: ACPI non-volatile storage.
pub const E820_NVS: u32 = 4;
/// E820 type: unusable.
pub const E820_UNUSABLE: u32 = 5;

/// `struct xen_add_to_physmap` (24 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenAddToPhysmap {
    /// IN: the domain whose physmap changes.
    pub domid: u16,
    /// IN: frames to map (`XENMAPSPACE_gmfn_range` only).
    pub size: u16,
    /// IN: a `XENMAPSPACE_*` value.
    pub space: u32,
    /// IN: index into the space (for [`XENMAPSPACE_GRANT_TABLE`], the
    /// table frame, with [`XENMAPIDX_GRANT_TABLE_STATUS`] for status
    /// frames).
    pub idx: u64,
    /// IN: the guest frame to map it at.
    pub gpfn: u64,
}

/// `XENMAPSPACE_shared_info`.
pub const XENMAPSPACE_SHARED_INFO: u32 = 0;
/// `XENMAPSPACE_grant_table`.
pub const XENMAPSPACE_GRANT_TABLE: u32 = 1;
/// `XENMAPSPACE_gmfn`.
pub const XENMAPSPACE_GMFN: u32 = 2;
/// `XENMAPSPACE_gmfn_range`.
pub const XENMAPSPACE_GMFN_RANGE: u32 = 3;
/// `XENMAPSPACE_gmfn_foreign` (`add_to_physmap_batch` only).
pub const XENMAPSPACE_GMFN_FOREIGN: u32 = 4;
/// `XENMAPIDX_grant_table_status`: the `idx` bit naming a status frame.
pub const XENMAPIDX_GRANT_TABLE_STATUS: u64 = 1 << 31;

crate::assert_layout!(XenAddToPhysmap, 24, { domid: 0, size: 2, space: 4, idx: 8, gpfn: 16 });
crate::assert_layout!(XenMemoryReservation, 32, {
    extent_start: 0, nr_extents: 8, extent_order: 16, mem_flags: 20, domid: 24, pad: 26,
});
crate::assert_layout!(XenMemoryExchange, 72, { input: 0, output: 32, nr_exchanged: 64 });
crate::assert_layout!(XenMemoryDomain, 2, { domid: 0 });
crate::assert_layout!(XenMachphysMfnList, 24, {
    max_extents: 0, pad0: 4, extent_start: 8, nr_extents: 16, pad1: 20,
});
crate::assert_layout!(XenMachphysMapping, 24, { v_start: 0, v_end: 8, max_mfn: 16 });
crate::assert_layout!(XenMemoryMap, 16, { nr_entries: 0, pad: 4, buffer: 8 });
crate::assert_layout!(E820Entry, 20, { addr: 0, size: 8, kind: 16 });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmd_bits() {
        let cmd = (5 << MEMOP_EXTENT_SHIFT) | 6;
        assert_eq!(
            MemoryOpCmd::from_number(cmd & MEMOP_CMD_MASK),
            Some(MemoryOpCmd::PopulatePhysmap)
        );
        assert_eq!(MemoryOpCmd::from_number(8), None);
        assert_eq!(MemoryOpCmd::MachphysMapping as u32, 12);
    }
}
