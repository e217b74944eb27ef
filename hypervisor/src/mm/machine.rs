//! What the memory manager needs from the machine, and the per-domain and
//! per-vCPU memory state it keeps.
//!
//! The memory manager never touches memory itself: it reads and writes
//! page-table entries, clears and copies frames, allocates and frees frames
//! and updates the M2P through [`PageTableMemory`] and [`MmMachine`].
//! `arch` implements them over the direct map and the frame allocator; the
//! tests implement them over a `Vec` of pages with a write log (see
//! `mm::fake`), and the fuzz target over its own small memory.
//!
//! Contract for implementors:
//! - The frame numbers passed in are always below `frames().len()` and
//!   refer to RAM (the memory manager checks before it reads or writes).
//! - `read_pte`/`write_pte` access the 8-byte word `index` (0-511) of the
//!   frame; a write must be a single 8-byte store (the MMU may walk the
//!   table concurrently), and [`PageTableMemory::write_pte_preserve_ad`]
//!   must not lose accessed/dirty bits the MMU sets in between.
//! - Frames handed out by [`MmMachine::alloc_frames`] are not owned by
//!   anyone in the frame table and their content is zero.
#![forbid(unsafe_code)]

use dom0_abi::Errno;
use dom0_abi::types::{DomId, Mfn};

use super::frame_table::FrameInfo;
use crate::domain::Privilege;

/// Word-level access to machine frames holding page tables.
pub trait PageTableMemory {
    /// Reads the 8-byte entry `index` (0-511) of frame `mfn`.
    fn read_pte(&self, mfn: Mfn, index: usize) -> u64;
    /// Writes the 8-byte entry `index` of frame `mfn` with one store.
    fn write_pte(&mut self, mfn: Mfn, index: usize, value: u64);
    /// Writes `value` ORed with the accessed and dirty bits the entry has
    /// at the moment of the write (a compare-exchange loop on hardware, so
    /// that bits the MMU sets concurrently are kept). Returns the value
    /// written.
    fn write_pte_preserve_ad(&mut self, mfn: Mfn, index: usize, value: u64) -> u64;
    /// Fills frame `mfn` with zeros.
    fn clear_page(&mut self, mfn: Mfn);
    /// Copies frame `src` to frame `dst`.
    fn copy_page(&mut self, dst: Mfn, src: Mfn);
    /// Compare-and-exchange of the 8-byte word `index` of `mfn`: writes
    /// `new` if it holds `old`; returns what it held. Atomic on hardware
    /// (the word may be shared with a running guest, like a grant entry).
    fn cmpxchg_pte(&mut self, mfn: Mfn, index: usize, old: u64, new: u64) -> u64 {
        let seen = self.read_pte(mfn, index);
        if seen == old {
            self.write_pte(mfn, index, new);
        }
        seen
    }
    /// ANDs the 8-byte word `index` of `mfn` with `mask` (atomic on
    /// hardware).
    fn and_pte(&mut self, mfn: Mfn, index: usize, mask: u64) {
        let value = self.read_pte(mfn, index);
        self.write_pte(mfn, index, value & mask);
    }
    /// Copies `len` bytes from byte `src_off` of `src` to byte `dst_off` of
    /// `dst` (both ranges within their page, checked by the caller). The
    /// default goes word by word through [`PageTableMemory::read_pte`].
    fn copy_bytes(&mut self, dst: Mfn, dst_off: usize, src: Mfn, src_off: usize, len: usize) {
        for i in 0..len {
            let (s, d) = (src_off + i, dst_off + i);
            let byte = self.read_pte(src, s / 8).to_le_bytes()[s % 8];
            let mut word = self.read_pte(dst, d / 8).to_le_bytes();
            word[d % 8] = byte;
            self.write_pte(dst, d / 8, u64::from_le_bytes(word));
        }
    }
}

/// The machine side of memory management: the frame table storage, the
/// frame allocator, the M2P and the domains' memory state.
pub trait MmMachine: PageTableMemory {
    /// The frame table: one record per machine frame from 0 up to the
    /// highest RAM frame (its length is Xen's `max_page`).
    fn frames(&mut self) -> &mut [FrameInfo];
    /// Allocates `2^order` contiguous frames aligned to their size, all
    /// below frame `limit` (exclusive; `u64::MAX` for no limit), zeroed.
    /// `None` when there is no such run.
    fn alloc_frames(&mut self, order: u32, limit: u64) -> Option<Mfn>;
    /// Returns a frame nobody references any more to the allocator.
    ///
    /// On SMP the frame may still sit in another CPU's TLB until the end
    /// of the current batch's flush (see [`super::effects::Effects`]); the
    /// implementation must not hand it out to anyone else before that
    /// flush has happened (for example by quarantining it until then).
    fn free_frame(&mut self, mfn: Mfn);
    /// Sets the M2P entry of `mfn` (`INVALID_M2P_ENTRY` for none).
    fn set_m2p(&mut self, mfn: Mfn, pfn: u64);
    /// Whether domain `dom` may map machine frame `mfn` as device memory
    /// (Xen's `iomem_access_permitted`). Must be false for every RAM frame
    /// and for device memory the hypervisor itself uses (local APIC, I/O
    /// APIC, IOMMU, ...).
    fn iomem_permitted(&self, dom: DomId, mfn: Mfn) -> bool;
    /// Whether device memory `mfn` may only be mapped read-only (Xen's
    /// `mmio_ro_ranges`: the HPET): a writable mapping asked for is made
    /// read-only, as Xen does for the hardware domain.
    fn iomem_read_only(&self, mfn: Mfn) -> bool;
    /// The memory state of domain `dom`, if it exists.
    fn domain_mm(&mut self, dom: DomId) -> Option<&mut DomainMm>;
    /// A frame domain `dom` owned and counted went back to the allocator:
    /// its page count goes down. Never fails and never makes the
    /// hypercall run again: the frame is gone already. The slot of a
    /// domain that is neither the caller's nor held for the hypercall is
    /// only tried, and while it is busy the domain owes the page
    /// (`docs/locking.md`).
    fn uncount_page(&mut self, dom: DomId) {
        if let Some(d) = self.domain_mm(dom) {
            d.tot_pages = d.tot_pages.saturating_sub(1);
        }
    }
    /// Holds domains `a` and `b` (either may be the caller, or both the
    /// same) for the rest of the hypercall, taken together before the
    /// operation changes anything, so that looking either up later
    /// cannot find its slot busy half-way (`docs/locking.md`). False if
    /// one does not exist or its slot stayed busy (`Env::slot_busy`:
    /// the hypercall runs again).
    fn hold_two(&mut self, a: DomId, b: DomId) -> bool {
        self.domain_mm(a).is_some() && self.domain_mm(b).is_some()
    }
    /// Gives the hypervisor's own mapping of the RAM frame `mfn` the cache
    /// attribute `attr` (a PAT index, see [`super::pte::cache_attr`]), so
    /// that it never aliases a guest mapping of the frame with other
    /// attributes (Xen's `update_xen_mappings`). `ENOMEM` if a page table
    /// for it cannot be allocated; going back to write-back (0) never
    /// fails.
    fn set_cache_attr(&mut self, mfn: Mfn, attr: u8) -> Result<(), Errno>;
}

/// A domain's memory-management state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DomainMm {
    /// Pages the domain owns (Xen's `tot_pages`): counted when a frame is
    /// assigned, uncounted when its last reference goes away.
    pub tot_pages: u64,
    /// The most pages it may own (Xen's `max_pages`; dom0: `dom0_mem=max:`,
    /// else `u32::MAX`).
    pub max_pages: u64,
    /// `VMASST_*` bits enabled with `vm_assist`.
    pub vm_assist: u64,
    /// Whether the domain holds I/O memory or I/O port rights (Xen: its
    /// `iomem_caps`/`ioport_caps` are not empty). Allows cache attributes
    /// in L1 entries, cache flushes and larger memory-op extents.
    pub io_caps: bool,
    /// The domain's privilege, if it is the control/hardware domain (dom0).
    pub privilege: Option<Privilege>,
    /// Bytes of RAM in the domain's E820 map, a single RAM entry
    /// `[0, size)`; `None` when no map was set (then `XENMEM_memory_map`
    /// gives `ENOSYS`, as on Xen for a PV dom0).
    pub memory_map: Option<u64>,
    /// Number of vCPUs (Xen's `max_vcpus`).
    pub max_vcpus: u32,
}

impl DomainMm {
    /// The state of the initial domain: privileged, with I/O rights, no
    /// page limit (`max_pages` `~0U`, which the dom0 builder lowers to
    /// `dom0_mem=max:` as Xen does) and no E820 map.
    #[must_use]
    pub const fn dom0(privilege: Privilege, tot_pages: u64) -> DomainMm {
        DomainMm {
            tot_pages,
            max_pages: u32::MAX as u64,
            vm_assist: 0,
            io_caps: true,
            privilege: Some(privilege),
            memory_map: None,
            max_vcpus: 1,
        }
    }

    /// Whether the domain is the control/hardware domain.
    #[must_use]
    pub const fn privileged(&self) -> bool {
        self.privilege.is_some()
    }
}

/// A vCPU's memory-management state: its page-table bases and LDT.
///
/// `kernel_l4` and `user_l4` each hold a general and an L4 type reference
/// on their frame while set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuMm {
    /// The L4 the vCPU runs on (`MMUEXT_NEW_BASEPTR`; Xen's `guest_table`).
    pub kernel_l4: Option<Mfn>,
    /// The L4 given with `MMUEXT_NEW_USER_BASEPTR` (Xen's
    /// `guest_table_user`). Recorded and referenced, never loaded: with
    /// the kernel in ring 1, user and kernel share the kernel L4.
    pub user_l4: Option<Mfn>,
    /// Linear address of the LDT (0 when `ldt_ents` is 0).
    pub ldt_base: u64,
    /// Number of LDT entries (at most 8192).
    pub ldt_ents: u32,
}
