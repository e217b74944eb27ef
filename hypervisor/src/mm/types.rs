//! Xen's page-type system: references, types, validation of page tables
//! and checked updates of their entries.
//!
//! [`Mmu`] is the only code that changes the frame table once domains run.
//! It works on the machine through [`MmMachine`] and records the TLB
//! flushes and view resyncs it needs in an [`Effects`] value (see
//! `mm::fake` in the tests for an example machine).
//!
//! The rules (Xen's, from `xen/arch/x86/mm.c`):
//! - A general reference ([`Mmu::get_page`]) can be taken only on a frame
//!   that is owned (count > 0) and only by naming its owner.
//! - A frame gets a new type only at type count 0 ([`Mmu::get_page_type`]).
//!   Getting an L*n* type the first time *validates* the frame: every
//!   present entry must pass the PTE rules ([`super::pte`]) and its target
//!   must take a reference (L1: a general reference, plus the writable type
//!   if the entry is writable; L2-L4: a general reference and the type of
//!   the next level down, recursively). If any entry fails, the references
//!   taken for the earlier entries are given back and the frame is left
//!   untyped: a failed validation changes no count.
//! - Dropping the last type reference of a page table *devalidates* it:
//!   the references its entries held are dropped, which may cascade down.
//! - A writable mapping holds the `Writable` type, so a frame is never
//!   writable by a guest while it is a page table or descriptor table.
//! - Linear (recursive) page tables are allowed as Xen 4.17 allows them
//!   (`pv-linear-pt`, on by default): an L2-L4 entry whose frame does not
//!   take the next level's type (`EINVAL`) may instead point at a table of
//!   its *own* level, read-only. An entry pointing at its own table takes
//!   no reference at all; one pointing at another table needs that table
//!   owned by the same domain and already validated at that level, and
//!   takes a general and a type reference on it. The XSA-240 rule keeps
//!   every chain one step long: a table holding linear entries cannot be
//!   the target of one, and a target cannot hold any (the frame's linear
//!   count, [`FrameInfo::linear_count`]). So the reference graph has no
//!   cycles, and devalidation and teardown always terminate.
//! - A count that would wrap makes the operation fail (`EINVAL` or
//!   `EBUSY` as Xen's path says); a count that would go below zero is a
//!   hypervisor bug, reported through [`Effects::crash`], never a panic.
//!
//! There is no preemption: a validation runs to its end. Its cost is
//! bounded by the frames the domain owns, each of which is validated at
//! most once per type change.
#![forbid(unsafe_code)]

use dom0_abi::Errno;
use dom0_abi::layout::{guest_addr_ok, is_canonical, is_guest_l4_slot};
use dom0_abi::types::{DomId, Mfn};

use core::sync::atomic::{AtomicU64, Ordering};

use super::INVALID_M2P_ENTRY;
use super::effects::Effects;
use super::frame_table::{FrameInfo, Owner, PageType, assign_frame};
use super::machine::MmMachine;
use super::pte::{self, ENTRIES};
use crate::emulate::Update;

/// Counts the events that may change what an L4 table holds while it is
/// one: an L4 validated (its entries were written while it was not one),
/// an entry of a validated L4 updated. A frame is writable by a guest only
/// while it has no page-table type, so an L4 whose type a vCPU holds
/// changes only through these. Whoever remembers something about an L4's
/// contents (the slots a vCPU's root uses, `arch`'s switch between
/// vCPUs) remembers this count with it and looks again when it moved.
static L4_GENERATION: AtomicU64 = AtomicU64::new(0);

/// The current count of [`L4_GENERATION`].
pub fn l4_generation() -> u64 {
    L4_GENERATION.load(Ordering::Acquire)
}

/// Some L4 table may hold something else from now on.
fn l4_changed() {
    L4_GENERATION.fetch_add(1, Ordering::AcqRel);
}

/// The guest slots of an L4 table that are not zero (bit `s % 64` of word
/// `s / 64`: slot `s`), found at a [`l4_generation`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct L4Slots {
    /// The L4 table.
    pub l4: Mfn,
    /// [`l4_generation`] when they were found.
    pub generation: u64,
    /// Its non-zero guest slots.
    pub used: [u64; 8],
}

impl L4Slots {
    /// Finds the non-zero guest slots of `l4`, whose entries are `entries`.
    pub fn scan(l4: Mfn, generation: u64, entries: &[u64; ENTRIES]) -> L4Slots {
        let mut used = [0u64; 8];
        for (slot, &entry) in entries.iter().enumerate() {
            if entry != 0 && is_guest_l4_slot(slot) {
                used[slot / 64] |= 1 << (slot % 64);
            }
        }
        L4Slots {
            l4,
            generation,
            used,
        }
    }

    /// Whether these are still `l4`'s slots at `generation`.
    pub fn valid_for(&self, l4: Mfn, generation: u64) -> bool {
        self.l4 == l4 && self.generation == generation
    }
}

/// The highest frame number a PTE can name (Xen's `PADDR_MASK >>
/// PAGE_SHIFT`): an I/O mapping of it fails with `EINVAL` instead of
/// `EPERM`.
const MAX_PTE_FRAME: u64 = (1 << 40) - 1;

/// Who an entry update or a validation acts for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapCtx {
    /// The domain that owns the page table being written (Xen's
    /// `pt_owner` / `l1e_owner`).
    pub pt_owner: DomId,
    /// Whether `pt_owner` holds I/O rights (PWT/PCD/PAT allowed in L1).
    pub pt_io_caps: bool,
    /// The domain making the hypercall: I/O mappings made with
    /// `foreigndom = DOMID_IO` are checked against its rights.
    pub caller: DomId,
    /// The owner data frames must have (`foreigndom`; normally
    /// `pt_owner` itself).
    pub pg_owner: Owner,
    /// Whether `pg_owner` is a privileged domain, which may map frames of
    /// other domains (Xen's `xsm_priv_mapping`).
    pub pg_owner_privileged: bool,
}

impl MapCtx {
    /// A domain acting on its own tables and frames.
    #[must_use]
    pub const fn own(dom: DomId, io_caps: bool) -> MapCtx {
        MapCtx {
            pt_owner: dom,
            pt_io_caps: io_caps,
            caller: dom,
            pg_owner: Owner::Domain(dom),
            pg_owner_privileged: false,
        }
    }
}

/// A write by the guest to one of its read-only L1 pages, to be emulated
/// (writable page tables, [`Mmu::ptwr_emulate`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PtwrWrite {
    /// Linear address written (aligned to `bytes`).
    pub addr: u64,
    /// Width: 1, 2, 4 or 8 bytes.
    pub bytes: u8,
    /// How the new bytes come from the old ones (any store the emulation
    /// decodes: `mov`, `xchg`, `cmpxchg`, and read-modify-writes such as
    /// the `and`/`or` Linux clears and sets bits with).
    pub op: Update,
}

/// What the emulation of a [`PtwrWrite`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PtwrOutcome {
    /// Validated and written; the guest continues after the instruction.
    /// Carries the old bytes (shifted to the access).
    Done(u64),
    /// A `cmpxchg` found another value (returned, shifted to the access):
    /// nothing was written; the guest sees the failed compare.
    CompareFailed(u64),
    /// Not a write this emulation handles (no read-only L1 mapping, the
    /// frame is not an L1 table of the domain, bad width or alignment, or
    /// the new entry fails validation): deliver the page fault.
    NotHandled,
}

/// The frame whose general reference a batch of page-table updates holds
/// ([`Mmu::pt_update_in_batch`]; one batch has one page-table owner).
#[derive(Debug, Default)]
#[must_use = "the held reference must be dropped with Mmu::end_batch"]
pub struct HeldTable(Option<Mfn>);

/// The memory manager working on a machine for one batch of operations.
pub struct Mmu<'m, M: MmMachine + ?Sized> {
    /// The machine (frame table, memory, allocator, M2P, domains).
    pub machine: &'m mut M,
    /// What the batch leaves for `arch` to do.
    pub fx: &'m mut Effects,
}

impl<'m, M: MmMachine + ?Sized> Mmu<'m, M> {
    /// Starts working on `machine`, accumulating into `fx`.
    pub fn new(machine: &'m mut M, fx: &'m mut Effects) -> Mmu<'m, M> {
        Mmu { machine, fx }
    }

    /// Xen's `max_page`: the number of frames the table covers.
    pub fn max_page(&mut self) -> u64 {
        u64::try_from(self.machine.frames().len()).unwrap_or(u64::MAX)
    }

    /// A copy of the record of `mfn`, if the table covers it.
    pub fn frame(&mut self, mfn: Mfn) -> Option<FrameInfo> {
        self.info(mfn).copied()
    }

    fn info(&mut self, mfn: Mfn) -> Option<&mut FrameInfo> {
        crate::index::get_mut(self.machine.frames(), mfn.0)
    }

    /// Records an impossible state of the frame table.
    fn bug(&mut self) {
        self.fx.crash = true;
    }

    // ---- general references ----

    /// Takes a general reference on `mfn`, which must be owned by
    /// `owner` (Xen's `get_page`). False if it is not (nothing changes).
    pub fn get_page(&mut self, mfn: Mfn, owner: Owner) -> bool {
        let Some(info) = self.info(mfn) else {
            return false;
        };
        match info.get_ref() {
            Ok(found) if found == owner => true,
            Ok(_) => {
                self.put_page(mfn);
                false
            }
            Err(_) => false,
        }
    }

    /// Drops a general reference; the last one releases the frame to the
    /// allocator (Xen's `put_page`).
    pub fn put_page(&mut self, mfn: Mfn) {
        let Some(info) = self.info(mfn) else {
            self.bug();
            return;
        };
        match info.put_ref() {
            Ok(true) => self.release(mfn),
            Ok(false) => {}
            Err(_) => self.bug(),
        }
    }

    /// A frame's last reference is gone: back to the allocator, M2P entry
    /// invalid, owner's page count down. TLBs may still map it.
    fn release(&mut self, mfn: Mfn) {
        let Some(info) = self.info(mfn) else {
            return;
        };
        // The allocation, a pin, the hypervisor's reference and a type
        // reference each hold a general reference too: reaching zero while
        // one is still recorded means some reference was dropped twice (the
        // counts alone would come out right at teardown). Keep the frame
        // out of the allocator, since something may still use it.
        if info.is_allocated()
            || info.is_pinned()
            || info.holds_hv_ref()
            || info.type_count() > 0
            || info.linear_count() != 0
        {
            self.bug();
            return;
        }
        if info.cache_attr() != 0 && self.machine.set_cache_attr(mfn, 0).is_err() {
            self.bug();
        }
        let Some(info) = self.info(mfn) else {
            return;
        };
        let (owner, counted) = info.release();
        let Some(dom) = owner.domain() else {
            // Device memory and DOMID_XEN pages keep a permanent reference;
            // reaching zero means the table is inconsistent. Never give
            // such a frame to the allocator.
            self.bug();
            return;
        };
        if counted {
            self.machine.uncount_page(dom);
        }
        self.machine.set_m2p(mfn, INVALID_M2P_ENTRY);
        self.fx.stale_tlb();
        self.machine.free_frame(mfn);
    }

    // ---- types ----

    /// Takes a reference to type `ty` (Xen's `get_page_type`); the caller
    /// holds a general reference. At type count 0 the type may change, and
    /// a page-table type is validated (recursively). Errors: `EINVAL` for
    /// a different type in use, a count overflow, or a validation failure
    /// with `EINVAL`; validation may also fail with `EBUSY`, `EPERM` or
    /// `EACCES` from an L1 entry.
    pub fn get_page_type(&mut self, mfn: Mfn, ty: PageType) -> Result<(), Errno> {
        let old = {
            let Some(info) = self.info(mfn) else {
                self.bug();
                return Err(Errno::EINVAL);
            };
            if info.type_count() > 0 {
                if info.page_type() != ty || !info.is_validated() {
                    return Err(Errno::EINVAL);
                }
                return info.type_ref_same().map_err(|_| Errno::EINVAL);
            }
            let old = info.begin_type(ty);
            if info.is_validated() {
                return Ok(());
            }
            if !ty.is_page_table() {
                info.set_validated();
            }
            old
        };
        if old != ty && old != PageType::None {
            // Stale writable (or page-table) TLB entries may still exist
            // for this frame: flush before the guest runs again.
            self.fx.stale_tlb();
        }
        if !ty.is_page_table() {
            return Ok(());
        }
        match self.validate(mfn, ty) {
            Ok(()) => {
                if let Some(info) = self.info(mfn) {
                    info.set_validated();
                }
                Ok(())
            }
            Err(e) => {
                if let Some(info) = self.info(mfn) {
                    info.abort_type();
                }
                Err(e)
            }
        }
    }

    /// Drops a type reference (Xen's `put_page_type`). The last reference
    /// of a page-table type devalidates the frame.
    pub fn put_page_type(&mut self, mfn: Mfn) {
        let Some(info) = self.info(mfn) else {
            self.bug();
            return;
        };
        let ty = info.page_type();
        match info.type_count() {
            0 => self.bug(),
            1 if ty.is_page_table() && info.is_validated() => {
                // Devalidate first (the frame keeps its one type reference
                // while its entries are dropped, so nothing can re-type it
                // half way), then drop the reference.
                info.clear_validated();
                self.devalidate(mfn, ty);
                if let Some(info) = self.info(mfn)
                    && info.type_unref().is_err()
                {
                    self.bug();
                }
            }
            _ => {
                if info.type_unref().is_err() {
                    self.bug();
                }
            }
        }
    }

    /// [`Mmu::get_page`] then [`Mmu::get_page_type`], undoing the first if
    /// the second fails. `EINVAL` if `mfn` is not owned by `owner`.
    pub fn get_page_and_type(&mut self, mfn: Mfn, owner: Owner, ty: PageType) -> Result<(), Errno> {
        if !self.get_page(mfn, owner) {
            return Err(Errno::EINVAL);
        }
        self.get_page_type(mfn, ty)
            .inspect_err(|_| self.put_page(mfn))
    }

    /// Drops a type reference and a general reference.
    pub fn put_page_and_type(&mut self, mfn: Mfn) {
        self.put_page_type(mfn);
        self.put_page(mfn);
    }

    // ---- validation ----

    /// Takes the references every present entry of `mfn` needs as a table
    /// of type `ty`, or none at all.
    fn validate(&mut self, mfn: Mfn, ty: PageType) -> Result<(), Errno> {
        if ty == PageType::L4 {
            // What it holds was written while it was no L4.
            l4_changed();
        }
        let Some(dom) = self.info(mfn).and_then(|f| f.owner().domain()) else {
            return Err(Errno::EINVAL);
        };
        let io_caps = self.machine.domain_mm(dom).is_some_and(|d| d.io_caps);
        let ctx = MapCtx::own(dom, io_caps);
        for i in 0..ENTRIES {
            if ty == PageType::L4 && !is_guest_l4_slot(i) {
                continue;
            }
            let entry = self.machine.read_pte(mfn, i);
            if !pte::is_present(entry) {
                continue;
            }
            match self.get_entry_refs(mfn, ty, entry, &ctx) {
                Ok(0) => {}
                Ok(flip) => self.machine.write_pte(mfn, i, entry ^ flip),
                Err(e) => {
                    for j in (0..i).rev() {
                        if ty == PageType::L4 && !is_guest_l4_slot(j) {
                            continue;
                        }
                        let entry = self.machine.read_pte(mfn, j);
                        self.put_entry_refs(mfn, ty, entry);
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Drops the references the entries of a table of type `ty` hold.
    #[inline(never)]
    fn devalidate(&mut self, mfn: Mfn, ty: PageType) {
        for i in 0..ENTRIES {
            if ty == PageType::L4 && !is_guest_l4_slot(i) {
                continue;
            }
            let entry = self.machine.read_pte(mfn, i);
            self.put_entry_refs(mfn, ty, entry);
        }
    }

    /// The references a present entry of `table`, of type `ty`, needs.
    /// Returns the bits to flip in the entry (L1 device mappings).
    fn get_entry_refs(
        &mut self,
        table: Mfn,
        ty: PageType,
        entry: u64,
        ctx: &MapCtx,
    ) -> Result<u64, Errno> {
        if ty == PageType::L1 {
            self.get_page_from_l1e(entry, ctx)
        } else {
            self.get_page_from_upper(table, ty, entry, ctx.pt_owner)
                .map(|()| 0)
        }
    }

    /// Drops what [`Mmu::get_entry_refs`] took (nothing for entries that
    /// are not present).
    fn put_entry_refs(&mut self, table: Mfn, ty: PageType, entry: u64) {
        if ty == PageType::L1 {
            self.put_page_from_l1e(entry);
        } else if pte::is_present(entry) {
            self.put_page_from_upper(table, ty, entry);
        }
    }

    /// Xen's `get_page_from_l1e` for a present entry: flag rules, then the
    /// frame. Device memory (beyond the table, or owned by `DOMID_IO`)
    /// needs I/O rights and takes no reference; RAM must be owned by
    /// `ctx.pg_owner` and, if the entry is writable, take the writable type.
    ///
    /// Errors: `EINVAL` bad flags; `EPERM` device memory without rights;
    /// `EBUSY` a frame of another owner (or of nobody), or a writable
    /// mapping of a frame typed otherwise; `EACCES` cache attributes on a
    /// shared hypervisor page; `ENOMEM` no memory to give the hypervisor's
    /// own mapping of the frame the entry's cache attributes.
    pub fn get_page_from_l1e(&mut self, entry: u64, ctx: &MapCtx) -> Result<u64, Errno> {
        if pte::l1_disallowed(entry, ctx.pt_io_caps) != 0 {
            return Err(Errno::EINVAL);
        }
        let mfn = pte::frame(entry);
        let is_io = self.info(mfn).is_none_or(|f| f.owner() == Owner::Io);
        if is_io {
            return self.io_mapping(mfn, entry, ctx);
        }
        let (real_owner, frame_attr) = match self.info(mfn) {
            Some(f) => (f.get_ref().ok(), f.cache_attr()),
            None => (None, 0),
        };
        if real_owner != Some(ctx.pg_owner) {
            let allowed = real_owner.is_some()
                && ctx.pg_owner != Owner::Domain(ctx.pt_owner)
                && ctx.pg_owner_privileged;
            if !allowed {
                if real_owner.is_some() {
                    self.put_page(mfn);
                }
                return Err(Errno::EBUSY);
            }
        }
        let writable = pte::is_writable(entry);
        if writable && self.get_page_type(mfn, PageType::Writable).is_err() {
            self.put_page(mfn);
            return Err(Errno::EBUSY);
        }
        let attr = pte::cache_attr(entry);
        if attr != frame_attr
            && let Err(e) = self.change_cache_attr(mfn, attr)
        {
            if writable {
                self.put_page_type(mfn);
            }
            self.put_page(mfn);
            return Err(e);
        }
        Ok(0)
    }

    /// A RAM frame is mapped with cache attribute `attr`, not the one it
    /// has: the frame takes it, and so does the hypervisor's own mapping,
    /// so that no mapping of the hypervisor aliases it with another
    /// attribute. The last mapping wins, as on Xen (aliases between the
    /// guest's own mappings are the guest's business). `EACCES` for a
    /// hypervisor page shared with the guest (always write-back); `ENOMEM`
    /// if the hypervisor's mapping cannot be split.
    #[cold]
    #[inline(never)]
    fn change_cache_attr(&mut self, mfn: Mfn, attr: u8) -> Result<(), Errno> {
        let Some(info) = self.info(mfn) else {
            return Err(Errno::EINVAL);
        };
        if info.is_xen_heap() {
            return Err(Errno::EACCES);
        }
        let old = info.cache_attr();
        info.set_cache_attr(attr);
        self.machine.set_cache_attr(mfn, attr).inspect_err(|_| {
            if let Some(info) = self.info(mfn) {
                info.set_cache_attr(old);
            }
        })
    }

    /// The device-memory half of [`Mmu::get_page_from_l1e`].
    fn io_mapping(&mut self, mfn: Mfn, entry: u64, ctx: &MapCtx) -> Result<u64, Errno> {
        let denied = if mfn.0 == MAX_PTE_FRAME {
            Errno::EINVAL
        } else {
            Errno::EPERM
        };
        // DOMID_IO stands for the caller's own rights.
        let checked = match ctx.pg_owner {
            Owner::Io => Some(ctx.caller),
            Owner::Domain(d) => Some(d),
            Owner::Xen | Owner::None => None,
        };
        let Some(checked) = checked else {
            return Err(denied);
        };
        if !self.machine.iomem_permitted(checked, mfn) {
            return Err(denied);
        }
        if checked != ctx.pt_owner && !self.machine.iomem_permitted(ctx.pt_owner, mfn) {
            return Err(denied);
        }
        let read_only = if self.machine.iomem_read_only(mfn) {
            entry & pte::RW
        } else {
            0
        };
        Ok(pte::io_cache_flip(entry) | read_only)
    }

    /// Xen's `put_page_from_l1e`: drops what a present L1 entry holds.
    pub fn put_page_from_l1e(&mut self, entry: u64) {
        if !pte::is_present(entry) {
            return;
        }
        let mfn = pte::frame(entry);
        if self.info(mfn).is_none_or(|f| f.owner() == Owner::Io) {
            return;
        }
        if pte::is_writable(entry) {
            self.put_page_type(mfn);
        }
        self.put_page(mfn);
    }

    /// Xen's `get_page_from_l{2,3,4}e` for a present entry of `table`, a
    /// table of type `ty` owned by `dom`: flag rules, then a reference and
    /// the next level's type on the frame it points at, which `dom` must
    /// own; failing that with `EINVAL`, a linear entry
    /// ([`Mmu::get_linear`]). `EINVAL` for bad flags, a frame not owned, a
    /// type in use that is not a valid linear target, or a child that
    /// fails validation with `EINVAL`; other validation errors pass
    /// through.
    fn get_page_from_upper(
        &mut self,
        table: Mfn,
        ty: PageType,
        entry: u64,
        dom: DomId,
    ) -> Result<(), Errno> {
        let Some(child) = ty.child() else {
            return Err(Errno::EINVAL);
        };
        if pte::upper_disallowed(entry) != 0 {
            return Err(Errno::EINVAL);
        }
        match self.get_page_and_type(pte::frame(entry), Owner::Domain(dom), child) {
            Err(Errno::EINVAL) if self.get_linear(table, ty, entry, dom) => Ok(()),
            result => result,
        }
    }

    /// Xen's `get_l{2,3,4}_linear_pagetable`: whether the present entry
    /// `entry` of `table` (type `ty`, owned by `dom`) is an acceptable
    /// linear entry, taking its references if so. It must be read-only;
    /// an entry pointing at `table` itself needs nothing more and takes
    /// nothing. Otherwise the target must be owned by `dom` and hold type
    /// `ty`, validated; `table` must not be a linear target itself and the
    /// target must hold no linear entries. Then the entry holds a general
    /// and a type reference on the target, and both linear counts move.
    #[cold]
    #[inline(never)]
    fn get_linear(&mut self, table: Mfn, ty: PageType, entry: u64, dom: DomId) -> bool {
        if pte::is_writable(entry) {
            return false;
        }
        let target = pte::frame(entry);
        if target == table {
            return true;
        }
        let owner = Owner::Domain(dom);
        if self.info(table).map(|f| f.owner()) != Some(owner) || !self.get_page(target, owner) {
            return false;
        }
        if !self.info(table).is_some_and(FrameInfo::inc_linear_entries) {
            self.put_page(target);
            return false;
        }
        let taken = self.info(target).is_some_and(|f| {
            if !f.has_live_type(ty) || !f.inc_linear_uses() {
                return false;
            }
            if f.type_ref_same().is_err() {
                f.dec_linear_uses();
                return false;
            }
            true
        });
        if !taken {
            if let Some(f) = self.info(table) {
                f.dec_linear_entries();
            }
            self.put_page(target);
        }
        taken
    }

    /// Xen's `put_page_from_l{2,3,4}e` for a present entry of `table`
    /// (type `ty`): nothing for an entry pointing at `table` itself; the
    /// linear counts for one pointing at a table of the same type; then
    /// the type and general references the entry held.
    fn put_page_from_upper(&mut self, table: Mfn, ty: PageType, entry: u64) {
        let target = pte::frame(entry);
        if target == table {
            return;
        }
        if self.info(target).is_some_and(|f| f.page_type() == ty) {
            let uses = self.info(target).is_some_and(FrameInfo::dec_linear_uses);
            let entries = self.info(table).is_some_and(FrameInfo::dec_linear_entries);
            if !(uses && entries) {
                self.bug();
            }
        }
        self.put_page_and_type(target);
    }

    // ---- entry updates ----

    fn store(&mut self, mfn: Mfn, index: usize, value: u64, preserve_ad: bool) {
        if preserve_ad {
            self.machine.write_pte_preserve_ad(mfn, index, value);
        } else {
            self.machine.write_pte(mfn, index, value);
        }
    }

    /// Xen's `mod_l1_entry`: replaces entry `index` of L1 table `table`
    /// with `new`, validated for `ctx`; the old entry's references are
    /// dropped after the write. Entries that keep the frame and its access
    /// rights take the fast path (no reference changes).
    pub fn mod_l1_entry(
        &mut self,
        table: Mfn,
        index: usize,
        new: u64,
        preserve_ad: bool,
        ctx: &MapCtx,
    ) -> Result<(), Errno> {
        let old = self.machine.read_pte(table, index);
        let mut new = new;
        if pte::is_present(new) {
            if pte::l1_disallowed(new, ctx.pt_io_caps) != 0 {
                return Err(Errno::EINVAL);
            }
            if !pte::needs_revalidation(old, new) {
                self.store(table, index, new, preserve_ad);
                return Ok(());
            }
            new ^= self.get_page_from_l1e(new, ctx)?;
        }
        self.store(table, index, new, preserve_ad);
        self.put_page_from_l1e(old);
        Ok(())
    }

    /// Xen's `mod_l{2,3,4}_entry`: replaces entry `index` of the table
    /// `table` of type `ty` (L2-L4) with `new`, for domain `dom`. `EINVAL`
    /// for an L4 slot reserved for the hypervisor (256-271), bad flags, or
    /// a target that neither takes the next level's type nor makes an
    /// acceptable linear entry.
    pub fn mod_upper_entry(
        &mut self,
        table: Mfn,
        ty: PageType,
        index: usize,
        new: u64,
        preserve_ad: bool,
        dom: DomId,
    ) -> Result<(), Errno> {
        if ty.child().is_none() || (ty == PageType::L4 && !is_guest_l4_slot(index)) {
            return Err(Errno::EINVAL);
        }
        if ty == PageType::L4 {
            l4_changed();
        }
        let old = self.machine.read_pte(table, index);
        if pte::is_present(new) {
            if pte::upper_disallowed(new) != 0 {
                return Err(Errno::EINVAL);
            }
            if !pte::needs_revalidation(old, new) {
                self.store(table, index, new, preserve_ad);
                return Ok(());
            }
            self.get_page_from_upper(table, ty, new, dom)?;
        }
        self.store(table, index, new, preserve_ad);
        if pte::is_present(old) {
            self.put_page_from_upper(table, ty, old);
        }
        Ok(())
    }

    /// One `MMU_NORMAL_PT_UPDATE` / `MMU_PT_UPDATE_PRESERVE_AD` request:
    /// the 8-byte word at machine address `maddr` (8-aligned) becomes
    /// `value`. The frame must belong to `ctx.pt_owner`. Page tables are
    /// updated entry-wise with validation (L2-L4 only when `pg_owner` is
    /// `pt_owner`); a writable-typed frame gets a plain write; an untyped
    /// frame is written as a writable page. Returns the type of the frame
    /// written. `EINVAL` otherwise. No reference is taken on the frame
    /// ([`Mmu::unreferenced_table`]).
    pub fn pt_update(
        &mut self,
        maddr: u64,
        value: u64,
        preserve_ad: bool,
        ctx: &MapCtx,
    ) -> Result<PageType, Errno> {
        let mfn = Mfn(maddr >> 12);
        if self.unreferenced_table(mfn, ctx.pt_owner).is_none() {
            return Err(Errno::EINVAL);
        }
        self.pt_update_held(mfn, entry_index(maddr), value, preserve_ad, ctx)
    }

    /// [`Mmu::pt_update`] as one request of a batch: the general reference
    /// on the written frame is taken once per run of requests to the same
    /// frame and kept in `held` (dropped when a request names another
    /// frame, and by [`Mmu::end_batch`]), instead of taken and dropped per
    /// request. The frame's type is still checked per request: a request
    /// of the batch may change it. Holding the reference longer changes
    /// nothing a request can see: only a frame's last general reference
    /// matters (its release), and a held one is never the last.
    pub fn pt_update_in_batch(
        &mut self,
        held: &mut HeldTable,
        maddr: u64,
        value: u64,
        preserve_ad: bool,
        ctx: &MapCtx,
    ) -> Result<PageType, Errno> {
        let mfn = Mfn(maddr >> 12);
        if held.0 != Some(mfn) {
            self.end_batch(held);
            if !self.get_page(mfn, Owner::Domain(ctx.pt_owner)) {
                return Err(Errno::EINVAL);
            }
            held.0 = Some(mfn);
        }
        self.pt_update_held(mfn, entry_index(maddr), value, preserve_ad, ctx)
    }

    /// Drops the reference a batch of [`Mmu::pt_update_in_batch`] holds.
    #[inline(always)]
    pub fn end_batch(&mut self, held: &mut HeldTable) {
        if let Some(mfn) = held.0.take() {
            self.put_page(mfn);
        }
    }

    /// The request's write, on a frame checked (and, in a batch, held):
    /// inlined into both callers, whose per-request cost it is.
    #[inline(always)]
    fn pt_update_held(
        &mut self,
        mfn: Mfn,
        index: usize,
        value: u64,
        preserve_ad: bool,
        ctx: &MapCtx,
    ) -> Result<PageType, Errno> {
        let Some(info) = self.frame(mfn) else {
            return Err(Errno::EINVAL);
        };
        if info.type_count() == 0 {
            self.get_page_type(mfn, PageType::Writable)
                .map_err(|_| Errno::EINVAL)?;
            self.machine.write_pte(mfn, index, value);
            self.put_page_type(mfn);
            return Ok(PageType::Writable);
        }
        if !info.is_validated() {
            return Err(Errno::EINVAL);
        }
        match info.page_type() {
            PageType::L1 => self.mod_l1_entry(mfn, index, value, preserve_ad, ctx)?,
            ty @ (PageType::L2 | PageType::L3 | PageType::L4) => {
                if ctx.pg_owner != Owner::Domain(ctx.pt_owner) {
                    return Err(Errno::EINVAL);
                }
                self.mod_upper_entry(mfn, ty, index, value, preserve_ad, ctx.pt_owner)?;
            }
            PageType::Writable => self.machine.write_pte(mfn, index, value),
            PageType::None | PageType::SegDesc => return Err(Errno::EINVAL),
        }
        Ok(info.page_type())
    }

    /// Finds the L1 table and index that map `va` under the L4 `root`
    /// (Xen's `map_guest_l1e`): every level present, no superpage, `va`
    /// canonical and outside the hypervisor's slots.
    pub fn walk_to_l1(&mut self, root: Mfn, va: u64) -> Option<(Mfn, usize)> {
        if !is_canonical(va) || !guest_addr_ok(va) {
            return None;
        }
        let mut table = root;
        for level in [4, 3, 2] {
            self.info(table)?;
            let entry = self.machine.read_pte(table, pte::table_index(va, level));
            if !pte::is_present(entry) || (level == 2 && entry & pte::PAT_PSE != 0) {
                return None;
            }
            table = pte::frame(entry);
        }
        self.info(table)?;
        Some((table, pte::table_index(va, 1)))
    }

    /// The L1 entry that maps `va` under `root`, if the walk reaches one.
    pub fn l1e_of(&mut self, root: Mfn, va: u64) -> Option<u64> {
        let (l1, i) = self.walk_to_l1(root, va)?;
        Some(self.machine.read_pte(l1, i))
    }

    /// `update_va_mapping`'s core: the L1 entry mapping `va` under `root`
    /// becomes `value`, validated like [`Mmu::mod_l1_entry`]. `EINVAL` if
    /// no L1 table of `ctx.pt_owner` maps `va`.
    pub fn update_va(&mut self, root: Mfn, va: u64, value: u64, ctx: &MapCtx) -> Result<(), Errno> {
        let (l1, index) = self.walk_to_l1(root, va).ok_or(Errno::EINVAL)?;
        let table = self
            .unreferenced_table(l1, ctx.pt_owner)
            .is_some_and(|f| f.has_live_type(PageType::L1));
        if !table {
            return Err(Errno::EINVAL);
        }
        self.mod_l1_entry(l1, index, value, false, ctx)
    }

    /// Frame `mfn`, a page table (or page) of `owner` about to be
    /// written, if [`Mmu::get_page`] would take a reference on it
    /// (referenced, below the count's limit, `owner`'s), without taking
    /// one: as for a grant's PTE, the frame table is held for the whole
    /// hypercall, so the frame keeps its type and owner, and a typed
    /// table's holders keep it referenced even when the entry written
    /// dropped a mapping of the table itself; an untyped frame is only
    /// written. Xen takes and drops the reference around the request,
    /// which this test answers the same.
    fn unreferenced_table(&mut self, mfn: Mfn, owner: DomId) -> Option<FrameInfo> {
        self.frame(mfn).filter(|f| {
            f.count() != 0 && f.count() != u32::MAX && f.owner() == Owner::Domain(owner)
        })
    }

    // ---- pins and roots ----

    /// Pins `mfn` as `ty` (an L1-L4 type): validates it if needed and
    /// keeps a general and a type reference until it is unpinned. `EINVAL`
    /// if not owned by `owner`, already pinned, or it does not validate
    /// with `EINVAL`; other validation errors pass through.
    pub fn pin(&mut self, mfn: Mfn, ty: PageType, owner: Owner) -> Result<(), Errno> {
        if !self.get_page(mfn, owner) {
            return Err(Errno::EINVAL);
        }
        if let Err(e) = self.get_page_type(mfn, ty) {
            self.put_page(mfn);
            return Err(e);
        }
        let newly = self.info(mfn).is_some_and(FrameInfo::set_pinned);
        if !newly {
            self.put_page_and_type(mfn);
            return Err(Errno::EINVAL);
        }
        Ok(())
    }

    /// Unpins `mfn`, dropping the pin's references (which may devalidate
    /// it). `EINVAL` if not owned by `owner` or not pinned.
    pub fn unpin(&mut self, mfn: Mfn, owner: Owner) -> Result<(), Errno> {
        if !self.get_page(mfn, owner) {
            return Err(Errno::EINVAL);
        }
        let was = self.info(mfn).is_some_and(FrameInfo::clear_pinned);
        if !was {
            self.put_page(mfn);
            return Err(Errno::EINVAL);
        }
        self.put_page_and_type(mfn);
        self.put_page(mfn);
        Ok(())
    }

    /// Moves a vCPU base pointer from `old` to `new` (either may be
    /// none): `new` takes a general and an L4 type reference (owned by
    /// `dom`), then `old`'s are dropped. On error nothing changes.
    pub fn replace_root(
        &mut self,
        old: Option<Mfn>,
        new: Option<Mfn>,
        dom: DomId,
    ) -> Result<(), Errno> {
        if old == new {
            return Ok(());
        }
        if let Some(new) = new {
            self.get_page_and_type(new, Owner::Domain(dom), PageType::L4)?;
        }
        if let Some(old) = old {
            self.put_page_and_type(old);
        }
        Ok(())
    }

    // ---- frames of a domain ----

    /// Gives a frame fresh from the allocator to `dom` as its page `pfn`
    /// (`None`: no pseudo-physical page yet, M2P entry invalid) and counts
    /// it in the domain's pages.
    pub fn assign(&mut self, mfn: Mfn, dom: DomId, pfn: Option<u64>) -> Result<(), Errno> {
        let Some(info) = self.info(mfn) else {
            return Err(Errno::EINVAL);
        };
        assign_frame(info, Owner::Domain(dom)).map_err(|_| Errno::EINVAL)?;
        if let Some(d) = self.machine.domain_mm(dom) {
            d.tot_pages = d.tot_pages.saturating_add(1);
        }
        self.machine.set_m2p(mfn, pfn.unwrap_or(INVALID_M2P_ENTRY));
        Ok(())
    }

    /// Xen's `guest_remove_page` for a PV domain: gives back `dom`'s
    /// allocation reference on frame `gmfn` (= MFN). The frame is freed
    /// once nothing else references it. `EINVAL` beyond the table, `ENXIO`
    /// not owned by `dom`.
    pub fn remove_page(&mut self, dom: DomId, gmfn: u64) -> Result<(), Errno> {
        let mfn = Mfn(gmfn);
        if self.info(mfn).is_none() {
            return Err(Errno::EINVAL);
        }
        if !self.get_page(mfn, Owner::Domain(dom)) {
            return Err(Errno::ENXIO);
        }
        if self.info(mfn).is_some_and(FrameInfo::clear_allocated) {
            self.put_page(mfn);
        }
        self.put_page(mfn);
        Ok(())
    }

    /// Xen's `steal_page` on `dom`'s frame `gmfn` (= MFN) for
    /// `XENMEM_exchange`: the frame leaves the domain's use but stays
    /// counted in its pages until [`Mmu::settle_stolen`]. `EINVAL` beyond
    /// the table, not `dom`'s, or referenced by anything but the
    /// allocation (mapped, typed, pinned, shared with the hypervisor).
    pub fn steal(&mut self, dom: DomId, gmfn: u64) -> Result<(), Errno> {
        if self
            .info(Mfn(gmfn))
            .is_some_and(|info| info.steal(Owner::Domain(dom)))
        {
            Ok(())
        } else {
            Err(Errno::EINVAL)
        }
    }

    /// Ends a steal of frame `gmfn` from `dom` if it is stolen: gives it
    /// back unchanged (`keep`), or frees it (the exchange went through).
    /// Returns whether it was stolen.
    pub fn settle_stolen(&mut self, dom: DomId, gmfn: u64, keep: bool) -> bool {
        let Some(info) = self.info(Mfn(gmfn)) else {
            return false;
        };
        if !info.is_stolen_from(Owner::Domain(dom)) {
            return false;
        }
        // Freeing goes through `put_page` like every other release (one
        // caller keeps `release` inlined in the hot `put_page`).
        info.unsteal();
        if !keep && info.clear_allocated() {
            self.put_page(Mfn(gmfn));
        }
        true
    }

    /// Settles every frame still stolen from `dom` (a scan of the whole
    /// table, for when the guest changed its list under the call).
    pub fn settle_all_stolen(&mut self, dom: DomId, keep: bool) {
        for mfn in 0..self.max_page() {
            self.settle_stolen(dom, mfn, keep);
        }
    }

    // ---- writable page tables ----

    /// Emulates a guest store (or `cmpxchg`) to a page-table entry through
    /// a read-only mapping (Xen's `ptwr_emulated_update`): `cr2` is the
    /// faulting address, `root` the vCPU's L4, `dom` the domain. The page
    /// mapped at `cr2` must be an L1 table of `dom` mapped read-only; the
    /// new entry is validated like an `mmu_update` of it.
    pub fn ptwr_emulate(
        &mut self,
        root: Mfn,
        dom: DomId,
        io_caps: bool,
        cr2: u64,
        write: PtwrWrite,
    ) -> PtwrOutcome {
        let Some(mapping) = self.l1e_of(root, cr2) else {
            return PtwrOutcome::NotHandled;
        };
        if mapping & (pte::PRESENT | pte::RW) != pte::PRESENT {
            return PtwrOutcome::NotHandled;
        }
        let l1 = pte::frame(mapping);
        if !self.get_page(l1, Owner::Domain(dom)) {
            return PtwrOutcome::NotHandled;
        }
        let outcome = if self
            .frame(l1)
            .is_some_and(|f| f.has_live_type(PageType::L1))
        {
            self.ptwr_update(l1, dom, io_caps, cr2, write)
        } else {
            PtwrOutcome::NotHandled
        };
        self.put_page(l1);
        outcome
    }

    fn ptwr_update(
        &mut self,
        l1: Mfn,
        dom: DomId,
        io_caps: bool,
        cr2: u64,
        w: PtwrWrite,
    ) -> PtwrOutcome {
        let bytes = u64::from(w.bytes);
        if !matches!(w.bytes, 1 | 2 | 4 | 8)
            || (w.addr ^ cr2) & !0xFFF != 0
            || w.addr & (bytes - 1) != 0
        {
            return PtwrOutcome::NotHandled;
        }
        let index = entry_index(w.addr);
        let shift = (w.addr & 7) * 8;
        let current = self.machine.read_pte(l1, index);
        let mask = (u64::MAX >> (64 - bytes * 8)) << shift;
        let old = (current & mask) >> shift;
        let value = w.op.new_bytes(old, w.bytes);
        let rest = current & !mask;
        let mut new = rest | ((value << shift) & mask);
        let ctx = MapCtx::own(dom, io_caps);
        if pte::is_present(new) {
            match self.get_page_from_l1e(new, &ctx) {
                Ok(flip) => new ^= flip,
                Err(_) => return PtwrOutcome::NotHandled,
            }
        }
        if let Some(expected) = w.op.expected()
            && rest | ((expected << shift) & mask) != current
        {
            self.put_page_from_l1e(new);
            return PtwrOutcome::CompareFailed(old);
        }
        self.machine.write_pte(l1, index, new);
        self.put_page_from_l1e(current);
        PtwrOutcome::Done(old)
    }
}

/// The index (0-511) of the 8-byte entry at machine or linear address
/// `addr` within its page.
#[must_use]
pub const fn entry_index(addr: u64) -> usize {
    ((addr & 0xFFF) >> 3) as usize
}
