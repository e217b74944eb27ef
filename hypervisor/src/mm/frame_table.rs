//! The frame table: one [`FrameInfo`] record per machine frame.
//!
//! This is Xen's `struct page_info` reduced to what a PV memory manager
//! needs (see `docs/memory.md` for the full story). Every machine frame has:
//!
//! - an **owner** ([`Owner`]): nobody (free or private to the hypervisor), an
//!   ordinary domain, `DOMID_IO` (device memory inside the RAM map) or
//!   `DOMID_XEN` (hypervisor pages shared with privileged guests);
//! - a **general reference count**: every use of the frame (a mapping, a
//!   page-table entry pointing at it, a pin, the owner's allocation itself)
//!   holds one reference;
//! - a **type** ([`PageType`]) with a **type count**: how many uses rely on
//!   the frame *being* that type (an L1 table, a writable page, ...);
//! - **pinned** (the guest holds one type reference explicitly) and
//!   **validated** (every entry of a page-table type has been checked).
//!
//! The storage is a caller-provided `&mut [FrameInfo]` (the hypervisor
//! carves it out of RAM at boot, one entry per frame up to the highest RAM
//! frame); an all-zero entry is a frame that nobody owns, so zeroed memory
//! is a valid empty table.
//!
//! Invariants (enforced by [`super::types`], which is the only writer once a
//! domain runs):
//! - `type_count <= count`: every type reference comes with a general one.
//! - A frame whose `count` is 0 is owned by nobody and has type `None`.
//! - `count > 0` and not owned by nobody: the frame belongs to its owner;
//!   the `ALLOCATED` reference (Xen's `PGC_allocated`) is the owner's own.
//! - The type changes only while `type_count` is 0 (the type itself is kept
//!   at count 0, as Xen keeps it, so that a later change of type can tell
//!   that stale TLB entries may exist).
//! - A page-table type with `type_count > 0` is validated: each of its
//!   present entries holds the references it needs.
//! - Pinned implies `type_count >= 1`; a pin is never nested.
//! - The linear count is 0 unless the frame is a live page table: positive
//!   for a table holding same-level (linear) entries, negative for one
//!   they point at, never both.
//! - No count ever wraps: every increment is checked and fails instead.
#![forbid(unsafe_code)]

use dom0_abi::types::{DomId, Mfn};

/// Who a machine frame belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Owner {
    /// Nobody: a free frame, or one private to the hypervisor. Such a frame
    /// can never be referenced by a guest.
    None,
    /// An ordinary domain (id below `DOMID_FIRST_RESERVED`).
    Domain(DomId),
    /// `DOMID_IO`: device memory or firmware areas inside the RAM map,
    /// mappable by domains with I/O memory rights, never typed.
    Io,
    /// `DOMID_XEN`: hypervisor pages shared with privileged guests (mapped
    /// with `foreigndom = DOMID_XEN`).
    Xen,
}

impl Owner {
    /// The owner recorded under the ABI id `id` (`DOMID_IO`, `DOMID_XEN`
    /// or an ordinary domain), or `None` for any other special id.
    #[must_use]
    pub const fn from_domid(id: DomId) -> Option<Owner> {
        if id.0 == DomId::IO.0 {
            Some(Owner::Io)
        } else if id.0 == DomId::XEN.0 {
            Some(Owner::Xen)
        } else if id.is_ordinary() {
            Some(Owner::Domain(id))
        } else {
            None
        }
    }

    /// The ordinary domain, if the owner is one.
    #[must_use]
    pub const fn domain(self) -> Option<DomId> {
        match self {
            Owner::Domain(d) => Some(d),
            _ => None,
        }
    }

    /// Packs the owner into 16 bits: 0 = nobody, else the id plus one.
    const fn encode(self) -> u16 {
        match self {
            Owner::None => 0,
            Owner::Domain(d) => (d.0 & DomId::MASK) + 1,
            Owner::Io => DomId::IO.0 + 1,
            Owner::Xen => DomId::XEN.0 + 1,
        }
    }

    /// Inverse of [`Owner::encode`]; unknown codes read as nobody.
    const fn decode(code: u16) -> Owner {
        if code == 0 {
            return Owner::None;
        }
        match Owner::from_domid(DomId(code - 1)) {
            Some(owner) => owner,
            None => Owner::None,
        }
    }
}

/// The type of a frame (Xen's `PGT_*` types, without `shared`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum PageType {
    /// No type (`PGT_none`): a fresh frame, or one held read-only.
    #[default]
    None = 0,
    /// A level-1 page table (maps 4 KiB pages).
    L1 = 1,
    /// A level-2 page table (points at L1 tables).
    L2 = 2,
    /// A level-3 page table (points at L2 tables).
    L3 = 3,
    /// A level-4 page table (the root; points at L3 tables).
    L4 = 4,
    /// A GDT or LDT page (`PGT_seg_desc_page`).
    SegDesc = 5,
    /// A page mapped writable somewhere (`PGT_writable_page`).
    Writable = 7,
}

impl PageType {
    /// Whether this is one of the page-table types L1-L4.
    #[must_use]
    pub const fn is_page_table(self) -> bool {
        matches!(
            self,
            PageType::L1 | PageType::L2 | PageType::L3 | PageType::L4
        )
    }

    /// The page-table level (1-4), if this is a page-table type.
    #[must_use]
    pub const fn level(self) -> Option<u8> {
        match self {
            PageType::L1 => Some(1),
            PageType::L2 => Some(2),
            PageType::L3 => Some(3),
            PageType::L4 => Some(4),
            _ => None,
        }
    }

    /// The page-table type of `level` (1-4).
    #[must_use]
    pub const fn table(level: u8) -> Option<PageType> {
        match level {
            1 => Some(PageType::L1),
            2 => Some(PageType::L2),
            3 => Some(PageType::L3),
            4 => Some(PageType::L4),
            _ => None,
        }
    }

    /// The type of the tables an entry of this table points at (L2 → L1,
    /// L3 → L2, L4 → L3); `None` for L1 and non-table types.
    #[must_use]
    pub const fn child(self) -> Option<PageType> {
        match self {
            PageType::L2 => Some(PageType::L1),
            PageType::L3 => Some(PageType::L2),
            PageType::L4 => Some(PageType::L3),
            _ => None,
        }
    }
}

/// Flag: the owner's allocation reference is held (`PGC_allocated`).
const ALLOCATED: u8 = 1 << 0;
/// Flag: the guest pinned the frame's type (`PGT_pinned`).
const PINNED: u8 = 1 << 1;
/// Flag: the frame's current type has been validated (`PGT_validated`).
const VALIDATED: u8 = 1 << 2;
/// Flag: a hypervisor page shared with a domain (`PGC_xen_heap`); it does
/// not count towards the domain's pages and may not take cache attributes.
const XEN_HEAP: u8 = 1 << 3;
/// Flag: the hypervisor's own reference on a shared page is held (it keeps
/// the page alive while the hypervisor uses it, whatever the guest gives
/// back; dropped at domain teardown).
const HV_REF: u8 = 1 << 4;
/// Bits 5-7: the frame's cache attribute (a PAT index, 0 = write-back),
/// which the hypervisor's own mapping of it follows (`PGC_cacheattr`).
const CACHE_ATTR_SHIFT: u8 = 5;

/// The record of one machine frame (16 bytes). See the module docs for the
/// invariants; the fields change only through [`super::types::Mmu`] and the
/// setup functions of [`FrameTable`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameInfo {
    count: u32,
    type_count: u32,
    owner: u16,
    ty: PageType,
    flags: u8,
    /// Linear page-table bookkeeping (Xen's `linear_pt_count`): above 0,
    /// how many same-level (linear) entries this table holds; below 0, how
    /// many such entries of other tables point at it. A table is never
    /// both, which keeps every linear chain one step long.
    linear: i16,
}

const _: () = assert!(core::mem::size_of::<FrameInfo>() == 16);

/// Why a reference count could not change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CountError {
    /// The count is 0 (no owner, or no reference to give back).
    Zero,
    /// The count would wrap.
    Overflow,
}

impl FrameInfo {
    /// A frame nobody owns (the all-zero record).
    pub const UNOWNED: FrameInfo = FrameInfo {
        count: 0,
        type_count: 0,
        owner: 0,
        ty: PageType::None,
        flags: 0,
        linear: 0,
    };

    /// The frame's owner.
    #[must_use]
    pub const fn owner(&self) -> Owner {
        Owner::decode(self.owner)
    }

    /// General references held.
    #[must_use]
    pub const fn count(&self) -> u32 {
        self.count
    }

    /// References to the current type.
    #[must_use]
    pub const fn type_count(&self) -> u32 {
        self.type_count
    }

    /// The current (or, at type count 0, the last) type.
    #[must_use]
    pub const fn page_type(&self) -> PageType {
        self.ty
    }

    /// Whether the guest pinned the type.
    #[must_use]
    pub const fn is_pinned(&self) -> bool {
        self.flags & PINNED != 0
    }

    /// Whether the current type is validated.
    #[must_use]
    pub const fn is_validated(&self) -> bool {
        self.flags & VALIDATED != 0
    }

    /// Whether the owner's allocation reference is held.
    #[must_use]
    pub const fn is_allocated(&self) -> bool {
        self.flags & ALLOCATED != 0
    }

    /// Whether this is a hypervisor page shared with its owner.
    #[must_use]
    pub const fn is_xen_heap(&self) -> bool {
        self.flags & XEN_HEAP != 0
    }

    /// Whether the hypervisor's own reference (and permanent type
    /// reference) on a shared page is still held.
    #[must_use]
    pub const fn holds_hv_ref(&self) -> bool {
        self.flags & HV_REF != 0
    }

    /// The cache attribute of the frame's latest guest mapping (a PAT
    /// index, 0 = write-back), which the hypervisor's own mapping follows.
    #[must_use]
    pub const fn cache_attr(&self) -> u8 {
        self.flags >> CACHE_ATTR_SHIFT
    }

    /// Records the cache attribute (0-7) the frame is now mapped with.
    pub(super) fn set_cache_attr(&mut self, attr: u8) {
        self.flags = (self.flags & !(7 << CACHE_ATTR_SHIFT)) | ((attr & 7) << CACHE_ATTR_SHIFT);
    }

    /// Whether the frame holds the type `ty` with at least one reference
    /// (Xen's `page_lock` condition plus a type test).
    #[must_use]
    pub fn has_live_type(&self, ty: PageType) -> bool {
        self.type_count > 0 && self.page_type() == ty && self.is_validated()
    }

    /// Takes a general reference unless the count is 0 (not owned) or
    /// would wrap; returns the owner (Xen's `page_get_owner_and_reference`).
    pub fn get_ref(&mut self) -> Result<Owner, CountError> {
        if self.count == 0 {
            return Err(CountError::Zero);
        }
        self.count = self.count.checked_add(1).ok_or(CountError::Overflow)?;
        Ok(self.owner())
    }

    /// Drops a general reference; `Ok(true)` when it was the last one (the
    /// caller then releases the frame with [`FrameInfo::release`]).
    pub fn put_ref(&mut self) -> Result<bool, CountError> {
        self.count = self.count.checked_sub(1).ok_or(CountError::Zero)?;
        Ok(self.count == 0)
    }

    /// The linear page-table count: positive, same-level entries this
    /// table holds; negative, same-level entries pointing at it.
    #[must_use]
    pub const fn linear_count(&self) -> i16 {
        self.linear
    }

    /// Records one more linear entry in this table; false if the table is
    /// itself the target of linear entries, or the count would wrap.
    pub(super) fn inc_linear_entries(&mut self) -> bool {
        match self.linear.checked_add(1) {
            Some(n) if n > 0 => {
                self.linear = n;
                true
            }
            _ => false,
        }
    }

    /// Records one more linear entry pointing at this table; false if the
    /// table holds linear entries itself, or the count would wrap.
    pub(super) fn inc_linear_uses(&mut self) -> bool {
        match self.linear.checked_sub(1) {
            Some(n) if n < 0 => {
                self.linear = n;
                true
            }
            _ => false,
        }
    }

    /// Undoes [`FrameInfo::inc_linear_entries`]; false if there was none.
    pub(super) fn dec_linear_entries(&mut self) -> bool {
        if self.linear <= 0 {
            return false;
        }
        self.linear -= 1;
        true
    }

    /// Undoes [`FrameInfo::inc_linear_uses`]; false if there was none.
    pub(super) fn dec_linear_uses(&mut self) -> bool {
        if self.linear >= 0 {
            return false;
        }
        self.linear += 1;
        true
    }

    /// Takes a type reference on a frame already holding type `ty`
    /// (validated, count > 0).
    pub(super) fn type_ref_same(&mut self) -> Result<(), CountError> {
        self.type_count = self.type_count.checked_add(1).ok_or(CountError::Overflow)?;
        Ok(())
    }

    /// Sets the type at type count 0 and takes the first type reference.
    /// Returns the previous (kept) type. The caller validates.
    pub(super) fn begin_type(&mut self, ty: PageType) -> PageType {
        let old = self.page_type();
        if old != ty {
            self.flags &= !VALIDATED;
        }
        self.ty = ty;
        self.type_count = 1;
        old
    }

    /// Marks the type validated.
    pub(super) fn set_validated(&mut self) {
        self.flags |= VALIDATED;
    }

    /// Undoes a failed [`FrameInfo::begin_type`]: no type, count 0 (as
    /// Xen's `validate_page` clears `type_info`).
    pub(super) fn abort_type(&mut self) {
        self.ty = PageType::None;
        self.type_count = 0;
        self.flags &= !VALIDATED;
    }

    /// Drops a type reference. Returns the count left.
    pub(super) fn type_unref(&mut self) -> Result<u32, CountError> {
        self.type_count = self.type_count.checked_sub(1).ok_or(CountError::Zero)?;
        Ok(self.type_count)
    }

    /// Clears the validated flag (the last type reference of a page table
    /// is going away).
    pub(super) fn clear_validated(&mut self) {
        self.flags &= !VALIDATED;
    }

    /// Sets the pinned flag; `false` if it was already set.
    pub(super) fn set_pinned(&mut self) -> bool {
        let was = self.is_pinned();
        self.flags |= PINNED;
        !was
    }

    /// Clears the pinned flag; `false` if it was not set.
    pub(super) fn clear_pinned(&mut self) -> bool {
        let was = self.is_pinned();
        self.flags &= !PINNED;
        was
    }

    /// Clears the allocation flag; `true` if it was set (the caller then
    /// drops the allocation reference).
    pub(super) fn clear_allocated(&mut self) -> bool {
        let was = self.is_allocated();
        self.flags &= !ALLOCATED;
        was
    }

    /// Clears the hypervisor-reference flag of a shared page; `true` if it
    /// was set (the caller then drops that reference and the permanent
    /// type reference).
    pub(super) fn clear_hv_ref(&mut self) -> bool {
        let was = self.flags & HV_REF != 0;
        self.flags &= !HV_REF;
        was
    }

    /// Xen's `steal_page` for `XENMEM_exchange`: a frame of `owner`'s
    /// that nothing but the allocation references (so it is neither
    /// mapped, typed nor pinned) drops that reference and the allocation
    /// flag but keeps its owner: count 0 with an owner is the "stolen"
    /// state, which nothing else produces (a released frame is unowned).
    /// False, nothing changed, for any other frame.
    pub(super) fn steal(&mut self, owner: Owner) -> bool {
        if owner == Owner::None
            || self.owner() != owner
            || self.count != 1
            || !self.is_allocated()
            || self.is_xen_heap()
        {
            return false;
        }
        self.count = 0;
        self.flags &= !ALLOCATED;
        true
    }

    /// Whether [`FrameInfo::steal`] took this frame from `owner`.
    #[must_use]
    pub(super) fn is_stolen_from(&self, owner: Owner) -> bool {
        self.count == 0 && owner != Owner::None && self.owner() == owner
    }

    /// Gives a stolen frame back to its owner as it was.
    pub(super) fn unsteal(&mut self) {
        self.count = 1;
        self.flags |= ALLOCATED;
    }

    /// Gives an unowned frame to `owner` with the allocation reference and,
    /// for shared hypervisor pages, a permanent type reference of `ty`.
    fn assign(&mut self, owner: Owner, xen_heap: bool, ty: PageType) {
        let typed = ty != PageType::None || xen_heap;
        *self = FrameInfo {
            count: 1 + u32::from(xen_heap),
            type_count: u32::from(typed),
            owner: owner.encode(),
            ty,
            flags: ALLOCATED
                | if typed { VALIDATED } else { 0 }
                | if xen_heap { XEN_HEAP | HV_REF } else { 0 },
            linear: 0,
        };
    }

    /// Resets a frame whose last reference is gone to the unowned state.
    /// Returns what it was: owner and whether it counted as a domain page.
    pub(super) fn release(&mut self) -> (Owner, bool) {
        let owner = self.owner();
        let counted = !self.is_xen_heap();
        *self = FrameInfo::UNOWNED;
        (owner, counted)
    }
}

/// Why a setup operation on the frame table was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupError {
    /// The frame lies beyond the table.
    OutOfRange(Mfn),
    /// The frame is already owned or referenced.
    InUse(Mfn),
    /// The owner cannot own frames (`Owner::None`).
    BadOwner,
}

/// A view of the frame table storage with the boot-time setup operations
/// and read-only queries. Run-time changes go through
/// [`super::types::Mmu`].
#[derive(Debug)]
pub struct FrameTable<'a> {
    frames: &'a mut [FrameInfo],
}

impl<'a> FrameTable<'a> {
    /// Wraps the storage. Entries are taken as they are (all-zero entries
    /// are unowned frames).
    pub fn new(frames: &'a mut [FrameInfo]) -> FrameTable<'a> {
        FrameTable { frames }
    }

    /// Resets every entry to unowned.
    pub fn clear(&mut self) {
        self.frames.fill(FrameInfo::UNOWNED);
    }

    /// Number of frames covered (Xen's `max_page`).
    #[must_use]
    pub fn len(&self) -> u64 {
        u64::try_from(self.frames.len()).unwrap_or(u64::MAX)
    }

    /// Whether the table covers no frame.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The record of `mfn`, if the table covers it.
    #[must_use]
    pub fn get(&self, mfn: Mfn) -> Option<&FrameInfo> {
        crate::index::get(self.frames, mfn.0)
    }

    /// Marks `mfn` as device memory (`DOMID_IO`): mappable by domains with
    /// I/O memory rights, never typed (it holds a permanent writable type
    /// reference, as Xen's `assign_io_page` gives it).
    pub fn assign_io(&mut self, mfn: Mfn) -> Result<(), SetupError> {
        self.assign_raw(mfn, Owner::Io, false, PageType::Writable)
    }

    /// Shares a hypervisor page with `owner` (Xen's
    /// `share_xen_page_with_guest`): the owner may map it (writable if
    /// `writable`), it never changes type, and it does not count towards
    /// the owner's pages. [`Owner::Xen`] shares it with privileged domains.
    /// Besides the allocation reference the page holds one for the
    /// hypervisor itself, so that it outlives anything the guest gives
    /// back (`decrease_reservation` of it); domain teardown drops both.
    pub fn share_xen_page(
        &mut self,
        mfn: Mfn,
        owner: Owner,
        writable: bool,
    ) -> Result<(), SetupError> {
        let ty = if writable {
            PageType::Writable
        } else {
            PageType::None
        };
        self.assign_raw(mfn, owner, true, ty)
    }

    /// Gives `mfn` to `owner` with its allocation reference (used for
    /// frames that come straight from the allocator during setup; at run
    /// time [`super::types::Mmu::assign`] also counts the domain's pages).
    pub fn assign(&mut self, mfn: Mfn, owner: Owner) -> Result<(), SetupError> {
        self.assign_raw(mfn, owner, false, PageType::None)
    }

    fn assign_raw(
        &mut self,
        mfn: Mfn,
        owner: Owner,
        xen_heap: bool,
        ty: PageType,
    ) -> Result<(), SetupError> {
        if owner == Owner::None {
            return Err(SetupError::BadOwner);
        }
        let info = crate::index::get_mut(self.frames, mfn.0).ok_or(SetupError::OutOfRange(mfn))?;
        if info.count != 0 || info.owner != 0 {
            return Err(SetupError::InUse(mfn));
        }
        info.assign(owner, xen_heap, ty);
        Ok(())
    }

    /// Frames owned by `owner` (linear scan).
    #[must_use]
    pub fn owned_by(&self, owner: Owner) -> u64 {
        let n = self.frames.iter().filter(|f| f.owner() == owner).count();
        u64::try_from(n).unwrap_or(u64::MAX)
    }
}

/// Assigns a frame taken from the allocator at run time; see
/// [`FrameTable::assign`]. Used by [`super::types::Mmu`].
pub(super) fn assign_frame(info: &mut FrameInfo, owner: Owner) -> Result<(), SetupError> {
    if info.count != 0 || info.owner != 0 {
        return Err(SetupError::InUse(Mfn(0)));
    }
    info.assign(owner, false, PageType::None);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_entries_are_unowned() {
        let f = FrameInfo::default();
        assert_eq!(f, FrameInfo::UNOWNED);
        assert_eq!(f.owner(), Owner::None);
        assert_eq!(f.page_type(), PageType::None);
        assert!(!f.is_allocated() && !f.is_pinned() && !f.is_validated());
    }

    #[test]
    fn owner_encoding_round_trips() {
        for owner in [
            Owner::None,
            Owner::Domain(DomId(0)),
            Owner::Domain(DomId(0x7FEF)),
            Owner::Io,
            Owner::Xen,
        ] {
            assert_eq!(Owner::decode(owner.encode()), owner);
        }
        assert_eq!(Owner::from_domid(DomId::SELF), None);
        assert_eq!(Owner::from_domid(DomId::COW), None);
        assert_eq!(Owner::from_domid(DomId::IO), Some(Owner::Io));
    }

    #[test]
    fn references_never_wrap_or_underflow() {
        let mut f = FrameInfo::UNOWNED;
        assert_eq!(f.get_ref(), Err(CountError::Zero));
        assert_eq!(f.put_ref(), Err(CountError::Zero));
        f.assign(Owner::Domain(DomId(3)), false, PageType::None);
        assert_eq!(f.get_ref(), Ok(Owner::Domain(DomId(3))));
        assert_eq!(f.put_ref(), Ok(false));
        f.count = u32::MAX;
        assert_eq!(f.get_ref(), Err(CountError::Overflow));
        assert_eq!(f.count(), u32::MAX);
        f.count = 1;
        assert_eq!(f.put_ref(), Ok(true));
        assert_eq!(f.type_unref(), Err(CountError::Zero));
        f.type_count = u32::MAX;
        assert_eq!(f.type_ref_same(), Err(CountError::Overflow));
    }

    #[test]
    fn setup_operations() {
        let mut storage = vec![FrameInfo::UNOWNED; 8];
        let mut t = FrameTable::new(&mut storage);
        assert_eq!(t.len(), 8);
        t.assign(Mfn(1), Owner::Domain(DomId(0))).unwrap();
        assert_eq!(
            t.assign(Mfn(1), Owner::Domain(DomId(0))),
            Err(SetupError::InUse(Mfn(1)))
        );
        assert_eq!(
            t.assign(Mfn(8), Owner::Io),
            Err(SetupError::OutOfRange(Mfn(8)))
        );
        assert_eq!(t.assign(Mfn(2), Owner::None), Err(SetupError::BadOwner));
        t.assign_io(Mfn(2)).unwrap();
        t.share_xen_page(Mfn(3), Owner::Domain(DomId(0)), true)
            .unwrap();
        t.share_xen_page(Mfn(4), Owner::Xen, false).unwrap();
        let io = t.get(Mfn(2)).unwrap();
        assert_eq!(
            (io.owner(), io.page_type(), io.type_count()),
            (Owner::Io, PageType::Writable, 1)
        );
        let shared = t.get(Mfn(3)).unwrap();
        assert!(shared.is_xen_heap() && shared.has_live_type(PageType::Writable));
        let ro = t.get(Mfn(4)).unwrap();
        assert_eq!((ro.page_type(), ro.type_count()), (PageType::None, 1));
        assert_eq!(t.owned_by(Owner::Domain(DomId(0))), 2);
        assert!(t.get(Mfn(9)).is_none());
        t.clear();
        assert_eq!(t.owned_by(Owner::Io), 0);
    }

    #[test]
    fn page_type_levels() {
        assert_eq!(PageType::L4.child(), Some(PageType::L3));
        assert_eq!(PageType::L1.child(), None);
        assert_eq!(PageType::table(2), Some(PageType::L2));
        assert_eq!(PageType::table(5), None);
        assert!(PageType::L3.is_page_table() && !PageType::SegDesc.is_page_table());
        assert_eq!(PageType::L3.level(), Some(3));
    }
}
