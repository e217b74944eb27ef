//! Page-table updates: `mmu_update`, `mmuext_op`, `update_va_mapping`,
//! `vm_assist`.
//!
//! PV guests use direct paging: their page tables hold machine frame
//! numbers, and the hypervisor validates every entry before it becomes
//! live. Frames have a *type* (none, L1-L4, descriptor table, writable) and
//! a type count; a frame can change type only when its type count is 0.
//!
//! Rules the guest must follow (Xen's, enforced here too):
//! - Any writable mapping of a frame gives it the writable type, so a frame
//!   used as a page table or GDT/LDT must be mapped read-only everywhere
//!   first (`EBUSY`/`EINVAL` otherwise).
//! - Build tables bottom-up with read-only mappings, then pin
//!   (`MMUEXT_PIN_L4_TABLE`) or load them (`MMUEXT_NEW_BASEPTR`).
//! - L2-L4 entries may use P, RW, US, A, D, AVAIL (bits 9-11), AVAIL_HIGH
//!   (bits 52-62) and NX; PSE, PWT, PCD and G are refused (`EINVAL`), so
//!   there are no superpages. An entry normally points at a table of the
//!   next level down; a *linear* entry, read-only, may point at a table of
//!   its own level: itself, or another table of the domain already in use
//!   at that level, as long as no chain of two forms (a table holding
//!   linear entries is never a target, a target holds none). Anything
//!   else is `EINVAL`.
//! - L1 entries may in addition use G (and, with I/O privilege, PWT, PCD,
//!   PAT). A RAM frame mapped with cache attributes makes the hypervisor
//!   re-map its own view of the frame to match (the last mapping wins);
//!   `ENOMEM` if that needs a page table it cannot allocate, `EACCES` for
//!   a hypervisor page shared with the guest (`shared_info`, grant
//!   frames), which stays write-back.
//! - L4 slots 256-271 belong to the hypervisor and cannot be written.
//! - A non-present entry should have a zero address.
//!
//! Batches (`mmu_update`, `mmuext_op`) run in order, stop at the first
//! failing entry with its error, and report the number done in `*pdone`.

use bitflags::bitflags;

/// Bit 31 of `mmu_update`'s (and `mmuext_op`'s) `count`: the call is a
/// continuation whose progress so far is in `*pdone` (Xen's
/// `MMU_UPDATE_PREEMPTED`).
pub const MMU_UPDATE_PREEMPTED: u32 = 1 << 31;

/// `mmu_update` request: `ptr & 7` selects the command (4-7 are not
/// commands: `ENOSYS`).
pub const MMU_UPDATE_CMD_MASK: u64 = 7;

numbered_enum! {
    /// `MMU_*`: the command in bits 2:0 of [`MmuUpdate::ptr`].
    MmuUpdateCmd {
        /// Checked write of `val` to the page-table entry at machine
        /// address `ptr & !7` (its frame must be an L1-L4 table of the
        /// caller, or a writable page).
        NormalPtUpdate = 0, "NORMAL_PT_UPDATE";
        /// `M2P[ptr >> 12] = val`: records that machine frame `ptr >> 12`
        /// backs pseudo-physical frame `val`. The frame must be the
        /// caller's (`EINVAL`; `EPERM` with a foreign page-table owner).
        /// Xen 4.17 also accepts an I/O frame named with `DOMID_IO`; this
        /// hypervisor refuses it (`EINVAL`, `docs/abi-differences.md`).
        MachphysUpdate = 1, "MACHPHYS_UPDATE";
        /// As `NormalPtUpdate`, but the accessed/dirty bits already in the
        /// entry are kept (ORed in atomically).
        PtUpdatePreserveAd = 2, "PT_UPDATE_PRESERVE_AD";
        /// As `NormalPtUpdate`, but `val` is not translated through the
        /// foreign domain's physmap.
        PtUpdateNoTranslate = 3, "PT_UPDATE_NO_TRANSLATE";
    }
}

/// `struct mmu_update` (16 bytes): one `mmu_update` request (IN).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmuUpdate {
    /// IN: machine address of the entry (or frame), with the command in
    /// bits 2:0.
    pub ptr: u64,
    /// IN: the new entry (or PFN for `MachphysUpdate`).
    pub val: u64,
}

impl MmuUpdate {
    /// A request for command `cmd` on machine address `maddr` (whose low
    /// three bits are replaced by the command).
    #[must_use]
    pub const fn new(cmd: MmuUpdateCmd, maddr: u64, val: u64) -> MmuUpdate {
        MmuUpdate {
            ptr: (maddr & !MMU_UPDATE_CMD_MASK) | cmd as u64,
            val,
        }
    }

    /// The command in bits 2:0 of `ptr` (`None` for 4-7, which the
    /// hypervisor refuses with `ENOSYS`).
    #[must_use]
    pub const fn cmd(&self) -> Option<MmuUpdateCmd> {
        match self.ptr & MMU_UPDATE_CMD_MASK {
            0 => Some(MmuUpdateCmd::NormalPtUpdate),
            1 => Some(MmuUpdateCmd::MachphysUpdate),
            2 => Some(MmuUpdateCmd::PtUpdatePreserveAd),
            3 => Some(MmuUpdateCmd::PtUpdateNoTranslate),
            _ => None,
        }
    }

    /// The machine address in `ptr`, command bits cleared.
    #[must_use]
    pub const fn maddr(&self) -> u64 {
        self.ptr & !MMU_UPDATE_CMD_MASK
    }
}

numbered_enum! {
    /// `MMUEXT_*`: the `cmd` of an [`MmuextOp`]. Unknown (including 14):
    /// `ENOSYS`.
    MmuextCmd {
        /// `arg1.mfn`: validate the frame as an L1 table and pin it.
        /// `EINVAL`: validation fails or already pinned.
        PinL1Table = 0, "PIN_L1_TABLE";
        /// As `PinL1Table` for an L2 table.
        PinL2Table = 1, "PIN_L2_TABLE";
        /// As `PinL1Table` for an L3 table.
        PinL3Table = 2, "PIN_L3_TABLE";
        /// As `PinL1Table` for an L4 table (fills the reserved slots).
        PinL4Table = 3, "PIN_L4_TABLE";
        /// `arg1.mfn`: drop the pin. `EINVAL`: not pinned.
        UnpinTable = 4, "UNPIN_TABLE";
        /// `arg1.mfn`: the L4 to load as the kernel page-table base
        /// (validated as L4). `EINVAL`: not a valid L4; `EPERM`: used with
        /// a foreign domain.
        NewBaseptr = 5, "NEW_BASEPTR";
        /// No arguments: flush this vCPU's TLB.
        TlbFlushLocal = 6, "TLB_FLUSH_LOCAL";
        /// `arg1.linear_addr`: flush one address from this vCPU's TLB.
        InvlpgLocal = 7, "INVLPG_LOCAL";
        /// `arg2.vcpumask`: flush the TLBs of the vCPUs in the bitmap; the
        /// call returns once every CPU they may have left entries on has
        /// flushed. `EINVAL`: bitmap unreadable.
        TlbFlushMulti = 8, "TLB_FLUSH_MULTI";
        /// `arg1.linear_addr`, `arg2.vcpumask`: flush one address on the
        /// vCPUs in the bitmap. `EINVAL`: bitmap unreadable.
        InvlpgMulti = 9, "INVLPG_MULTI";
        /// No arguments: flush the TLBs of all the domain's vCPUs (returns
        /// once every CPU they may have left entries on has flushed).
        TlbFlushAll = 10, "TLB_FLUSH_ALL";
        /// `arg1.linear_addr`: flush one address on all the domain's vCPUs.
        InvlpgAll = 11, "INVLPG_ALL";
        /// Write back and invalidate caches. `EACCES` without cache-flush
        /// permission.
        FlushCache = 12, "FLUSH_CACHE";
        /// `arg1.linear_addr` (page aligned), `arg2.nr_ents` (<= 8192): set
        /// the LDT. `EINVAL` otherwise.
        SetLdt = 13, "SET_LDT";
        /// `arg1.mfn`: L4 used while the guest is in user mode (0: none).
        /// Accepted here for compatibility (user and kernel share one table).
        NewUserBaseptr = 15, "NEW_USER_BASEPTR";
        /// `arg1.mfn`: zero a frame of the caller.
        ClearPage = 16, "CLEAR_PAGE";
        /// `arg1.mfn` (destination), `arg2.src_mfn`: copy a frame.
        CopyPage = 17, "COPY_PAGE";
        /// Write back and invalidate caches on all CPUs.
        FlushCacheGlobal = 18, "FLUSH_CACHE_GLOBAL";
        /// Superpage marking, removed: always `EOPNOTSUPP`.
        MarkSuper = 19, "MARK_SUPER";
        /// Superpage unmarking, removed: always `EOPNOTSUPP`.
        UnmarkSuper = 20, "UNMARK_SUPER";
    }
}

/// `struct mmuext_op` (24 bytes): one `mmuext_op` request (IN).
///
/// `arg1` is an MFN or a linear address; `arg2` is `nr_ents`, a guest
/// pointer to a vCPU bitmap, or a source MFN, as [`MmuextCmd`] says.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MmuextOp {
    /// IN: a [`MmuextCmd`] number.
    pub cmd: u32,
    /// Padding.
    pub pad: u32,
    /// IN: `mfn` or `linear_addr`.
    pub arg1: u64,
    /// IN: `nr_ents`, `vcpumask` or `src_mfn`.
    pub arg2: u64,
}

bitflags! {
    /// `UVMF_*`: the `flags` argument of `update_va_mapping`.
    ///
    /// Bits 1:0 are the flush type (`NONE` 0, [`Self::TLB_FLUSH`],
    /// [`Self::INVLPG`]; 3 flushes nothing). The rest is the scope: 0 =
    /// local, [`Self::ALL`] = every vCPU of the domain, anything else is a
    /// guest pointer to a vCPU bitmap (`UVMF_MULTI`) ORed in. A flush of
    /// other vCPUs is done on every CPU they may have left entries on
    /// before the call returns. Decode with [`uvmf_decode`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct UvmfFlags: u64 {
        /// Flush whole TLBs.
        const TLB_FLUSH = 1;
        /// Flush only the entry for `va`.
        const INVLPG = 2;
        /// Scope: all vCPUs of the domain.
        const ALL = 1 << 2;
    }
}

/// `UVMF_FLUSHTYPE_MASK`: the flush-type bits of the flags.
pub const UVMF_FLUSHTYPE_MASK: u64 = 3;

/// What `update_va_mapping` flushes after a successful write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UvmfFlush {
    /// Nothing (`UVMF_NONE`, or the undefined type 3).
    None,
    /// Whole TLBs.
    TlbFlush,
    /// The entry for `va` only.
    Invlpg,
}

/// On which vCPUs `update_va_mapping` flushes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UvmfScope {
    /// The calling vCPU (`UVMF_LOCAL`).
    Local,
    /// All vCPUs of the domain (`UVMF_ALL`).
    All,
    /// The vCPUs in the bitmap at this guest address (`UVMF_MULTI`).
    Multi(u64),
}

/// Splits `update_va_mapping` flags into flush type and scope.
#[must_use]
pub const fn uvmf_decode(flags: u64) -> (UvmfFlush, UvmfScope) {
    let flush = match flags & UVMF_FLUSHTYPE_MASK {
        1 => UvmfFlush::TlbFlush,
        2 => UvmfFlush::Invlpg,
        _ => UvmfFlush::None,
    };
    let scope = match flags & !UVMF_FLUSHTYPE_MASK {
        0 => UvmfScope::Local,
        4 => UvmfScope::All,
        ptr => UvmfScope::Multi(ptr),
    };
    (flush, scope)
}

numbered_enum! {
    /// `VMASST_CMD_*`: the `cmd` argument of `vm_assist`. Other: `ENOSYS`.
    VmAssistCmd {
        /// Turn the assist on.
        Enable = 0, "enable";
        /// Turn the assist off.
        Disable = 1, "disable";
    }
}

numbered_enum! {
    /// `VMASST_TYPE_*`: the `type` argument of `vm_assist`. A type not in
    /// this list gives `EINVAL` (checked before `cmd`). All of these are
    /// accepted for a 64-bit PV guest; several only matter for 32-bit ones.
    VmAssistType {
        /// 32-bit guests: emulate 4 GiB segment limits.
        FourGbSegments = 0, "4gb_segments";
        /// 32-bit guests: report uses of the above with trap 15.
        FourGbSegmentsNotify = 1, "4gb_segments_notify";
        /// Direct writes to read-only-mapped L1 entries are emulated (with
        /// validation) instead of faulting.
        WritablePagetables = 2, "writable_pagetables";
        /// 32-bit PAE guests: PDPTs above 4 GiB.
        PaeExtendedCr3 = 3, "pae_extended_cr3";
        /// Architectural virtual IOPL: updated by `iret`, shown in bounce
        /// frames.
        ArchitecturalIopl = 4, "architectural_iopl";
        /// Set `XEN_RUNSTATE_UPDATE` in the runstate area while updating it.
        RunstateUpdateFlag = 5, "runstate_update_flag";
        /// 64-bit guests: hide the M2P from user-mode page tables.
        M2pStrict = 32, "m2p_strict";
    }
}

impl VmAssistType {
    /// The bit of this assist in a domain's `vm_assist` bitmap.
    #[must_use]
    pub const fn mask(self) -> u64 {
        1 << (self as u32)
    }
}

bitflags! {
    /// x86-64 page-table entry bits as the PV ABI uses them.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct PteFlags: u64 {
        /// Present.
        const PRESENT = 1 << 0;
        /// Writable.
        const RW = 1 << 1;
        /// User-accessible.
        const USER = 1 << 2;
        /// Write-through.
        const PWT = 1 << 3;
        /// Cache disable.
        const PCD = 1 << 4;
        /// Accessed.
        const ACCESSED = 1 << 5;
        /// Dirty.
        const DIRTY = 1 << 6;
        /// L1: PAT; L2/L3: page size (refused for PV guests).
        const PAT_PSE = 1 << 7;
        /// Global (L1 only).
        const GLOBAL = 1 << 8;
        /// Available to software (bits 9-11).
        const AVAIL = 0x7 << 9;
        /// Xen: marks a kernel-only page of a ring-3 PV kernel (bit 52).
        const XEN_GUEST_KERNEL = 1 << 52;
        /// Available to software (bits 52-62).
        const AVAIL_HIGH = 0x7FF << 52;
        /// No-execute.
        const NX = 1 << 63;
    }
}

/// Address bits of a page-table entry (bits 51:12).
pub const PTE_ADDR_MASK: u64 = 0x000F_FFFF_FFFF_F000;

/// Flags a guest may set in an L2, L3 or L4 entry.
pub const L234_ALLOWED_FLAGS: PteFlags = PteFlags::PRESENT
    .union(PteFlags::RW)
    .union(PteFlags::USER)
    .union(PteFlags::ACCESSED)
    .union(PteFlags::DIRTY)
    .union(PteFlags::AVAIL)
    .union(PteFlags::AVAIL_HIGH)
    .union(PteFlags::NX);

/// Flags a guest without I/O privilege may set in an L1 entry (adds G).
pub const L1_ALLOWED_FLAGS: PteFlags = L234_ALLOWED_FLAGS.union(PteFlags::GLOBAL);

crate::assert_layout!(MmuUpdate, 16, { ptr: 0, val: 8 });
crate::assert_layout!(MmuextOp, 24, { cmd: 0, pad: 4, arg1: 8, arg2: 16 });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests() {
        let r = MmuUpdate::new(MmuUpdateCmd::MachphysUpdate, 0x1234_5003, 7);
        assert_eq!(r.ptr, 0x1234_5001);
        assert_eq!(r.cmd(), Some(MmuUpdateCmd::MachphysUpdate));
        assert_eq!(
            MmuUpdate {
                ptr: 0x1004,
                val: 0
            }
            .cmd(),
            None
        );
        assert_eq!(r.maddr(), 0x1234_5000);
        assert_eq!(MmuextCmd::from_number(14), None);
        assert_eq!(MmuextCmd::from_number(15), Some(MmuextCmd::NewUserBaseptr));
        assert_eq!(VmAssistType::from_number(32), Some(VmAssistType::M2pStrict));
        assert_eq!(VmAssistType::M2pStrict.mask(), 1 << 32);
    }

    #[test]
    fn uvmf() {
        assert_eq!(uvmf_decode(0), (UvmfFlush::None, UvmfScope::Local));
        assert_eq!(uvmf_decode(2), (UvmfFlush::Invlpg, UvmfScope::Local));
        assert_eq!(uvmf_decode(1 | 4), (UvmfFlush::TlbFlush, UvmfScope::All));
        assert_eq!(
            uvmf_decode(0x1000 | 2),
            (UvmfFlush::Invlpg, UvmfScope::Multi(0x1000))
        );
        assert_eq!(uvmf_decode(3).0, UvmfFlush::None);
        assert_eq!(UvmfFlags::INVLPG.bits(), 2);
    }

    #[test]
    fn pte_masks() {
        assert!(!L234_ALLOWED_FLAGS.contains(PteFlags::PAT_PSE));
        assert!(!L234_ALLOWED_FLAGS.contains(PteFlags::GLOBAL));
        assert!(L1_ALLOWED_FLAGS.contains(PteFlags::GLOBAL));
        assert_eq!(PteFlags::AVAIL_HIGH.bits() & PTE_ADDR_MASK, 0);
    }
}
