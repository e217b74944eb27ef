//! Grant tables, version 1: the per-domain state and the entry state
//! machine, as pure logic over [`EntryMemory`] (the shared table frames).
//!
//! A domain's [`GrantTable`] has three parts, as Xen 4.17 keeps them:
//! - the **shared frames**: hypervisor-allocated frames the domain maps
//!   and fills with [`GrantEntryV1`]s (`flags`, `domid`, `frame`), one
//!   frame at first, grown by `setup_table` up to `max_grant_frames`;
//! - the **active entries**, one per grant reference: the pin counts of
//!   the grant's current users (8-bit counters for host and device,
//!   read-only and writable mappings; a grant copy counts as a host
//!   mapping for its duration), the domain using it and its frame;
//! - the **maptrack table**: the mappings this domain holds of other
//!   grants, each under a handle, at most `max_maptrack_frames` frames of
//!   256 handles.
//!
//! Entry protocol, the hypervisor's side: the first pin of an entry (or
//! the first writable pin) checks the entry's type (`GTF_permit_access`),
//! its `domid` (the user) and `GTF_readonly`, and sets `GTF_reading` (and
//! `GTF_writing`) with a compare-and-swap, retried at most five times
//! against a guest that keeps changing the entry; the last unpin clears
//! them again (`GTF_writing` when the last writable pin goes). While
//! either is set the granter's own compare-and-swap to revoke the entry
//! fails: a grant in use cannot be revoked.
//!
//! Handles are handed out as Xen hands them to a domain with one vCPU:
//! the first frame's handles in order, a released handle going to the end
//! of the free list, the last free handle never given out while a new
//! frame can be added instead (here one free list per domain, where Xen
//! keeps one per vCPU).
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::collections::VecDeque;
use alloc::vec::Vec;

use dom0_abi::grant_table::{
    GRANT_ENTRIES_V1_PER_FRAME, GTF_TYPE_MASK, GrantEntryV1, GrantStatus, GtfFlags,
};
use dom0_abi::types::{DomId, Mfn};

use crate::mm::machine::PageTableMemory;

/// Pin counter width (bits) and mask.
const PIN_WIDTH: u32 = 8;
const PIN_MASK: u32 = (1 << PIN_WIDTH) - 1;
/// `GNTPIN_hstw_inc`: one writable host mapping (or writable copy).
pub const PIN_HOST_W: u32 = 1;
/// `GNTPIN_hstr_inc`: one read-only host mapping (or copy source).
pub const PIN_HOST_R: u32 = 1 << PIN_WIDTH;
/// `GNTPIN_devw_inc`: one writable device mapping.
pub const PIN_DEV_W: u32 = 1 << (2 * PIN_WIDTH);
/// `GNTPIN_devr_inc`: one read-only device mapping.
pub const PIN_DEV_R: u32 = 1 << (3 * PIN_WIDTH);
/// The writable counters.
const PIN_WRITERS: u32 = (PIN_MASK * PIN_HOST_W) | (PIN_MASK * PIN_DEV_W);
/// Compare-and-swap attempts on a shared entry before giving up.
const CAS_RETRIES: u32 = 5;
/// Handles per maptrack frame (a 16-byte `struct grant_mapping` each).
pub const MAPTRACK_PER_FRAME: u32 = 256;
/// Highest grant-table version this hypervisor offers (Xen 4.17 with
/// `gnttab=max_ver:1`).
pub const MAX_VERSION: u32 = 1;

/// Reads and compare-and-swaps the 8-byte entries of shared table frames.
pub trait EntryMemory {
    /// Word `index` of frame `mfn`.
    fn load(&self, mfn: Mfn, index: usize) -> u64;
    /// Writes `new` if the word holds `old`; returns what it held.
    fn cmpxchg(&mut self, mfn: Mfn, index: usize, old: u64, new: u64) -> u64;
    /// ANDs the word with `mask`.
    fn and(&mut self, mfn: Mfn, index: usize, mask: u64);
}

impl<T: PageTableMemory + ?Sized> EntryMemory for T {
    fn load(&self, mfn: Mfn, index: usize) -> u64 {
        self.read_pte(mfn, index)
    }
    fn cmpxchg(&mut self, mfn: Mfn, index: usize, old: u64, new: u64) -> u64 {
        self.cmpxchg_pte(mfn, index, old, new)
    }
    fn and(&mut self, mfn: Mfn, index: usize, mask: u64) {
        self.and_pte(mfn, index, mask);
    }
}

/// A v1 entry as the 8-byte word the hypervisor reads and swaps.
#[must_use]
pub fn decode(raw: u64) -> GrantEntryV1 {
    GrantEntryV1 {
        flags: (raw & 0xFFFF) as u16,
        domid: ((raw >> 16) & 0xFFFF) as u16,
        frame: (raw >> 32) as u32,
    }
}

/// The word of a v1 entry.
#[must_use]
pub fn encode(entry: GrantEntryV1) -> u64 {
    u64::from(entry.flags) | (u64::from(entry.domid) << 16) | (u64::from(entry.frame) << 32)
}

/// One grant reference's use (Xen's `struct active_grant_entry`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Active {
    /// The `PIN_*` counters.
    pub pin: u32,
    /// The domain using the grant (while pinned).
    pub domid: DomId,
    /// The granted frame (while pinned).
    pub mfn: Mfn,
}

/// One mapping of a grant held by this domain (Xen's `grant_mapping`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mapping {
    /// `GNTMAP_host_map` / `device_map` / `readonly` bits still in force
    /// (0: the handle is free).
    pub flags: u32,
    /// The granting domain.
    pub domid: DomId,
    /// The grant reference.
    pub gref: u32,
}

/// The pin a new use of an entry asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinRequest {
    /// The domain that will use the grant.
    pub user: DomId,
    /// The `PIN_*` increments.
    pub incr: u32,
    /// Read-only use (no `GTF_writing`; allowed on a read-only grant).
    pub readonly: bool,
    /// A mapping (sub-page grants are refused; v1 has none).
    pub map: bool,
}

/// A domain's grant table; see the module documentation.
#[derive(Debug, Default)]
pub struct GrantTable {
    /// The shared frames (emptied when the domain is torn down).
    frames: Vec<Mfn>,
    /// Most shared frames (`max_grant_frames`).
    max_frames: u32,
    /// Grant references the table holds (kept after teardown, as are the
    /// active entries, until the last pin goes).
    entries: u32,
    /// The active entries up to the highest reference ever pinned (those
    /// beyond are unpinned): an idle domain holds none, where one per
    /// reference would be 8 KiB a frame.
    active: Vec<Active>,
    /// Mappings this domain holds, by handle.
    maptrack: Vec<Mapping>,
    /// Free handles, next first.
    free: VecDeque<u32>,
    /// Most maptrack frames (`max_maptrack_frames`).
    max_maptrack_frames: u32,
}

impl GrantTable {
    /// An empty table: no frames yet (the first is added by
    /// [`GrantTable::add_frame`]), limits as `createdomain` set them.
    #[must_use]
    pub fn new(max_frames: u32, max_maptrack_frames: u32) -> GrantTable {
        GrantTable {
            max_frames,
            max_maptrack_frames,
            ..GrantTable::default()
        }
    }

    /// Shared frames in use (Xen's `nr_grant_frames`).
    #[must_use]
    pub fn nr_frames(&self) -> u32 {
        u32::try_from(self.frames.len()).unwrap_or(u32::MAX)
    }

    /// `max_grant_frames`.
    #[must_use]
    pub fn max_frames(&self) -> u32 {
        self.max_frames
    }

    /// The shared frames.
    #[must_use]
    pub fn frames(&self) -> &[Mfn] {
        &self.frames
    }

    /// Grant references the table holds.
    #[must_use]
    pub fn nr_entries(&self) -> u32 {
        self.entries
    }

    /// Adds a (zeroed) shared frame; false at `max_grant_frames`.
    pub fn add_frame(&mut self, mfn: Mfn) -> bool {
        if self.nr_frames() >= self.max_frames {
            return false;
        }
        self.frames.push(mfn);
        self.entries = self.nr_frames().saturating_mul(GRANT_ENTRIES_V1_PER_FRAME);
        true
    }

    /// The active entry of `gref`.
    #[must_use]
    pub fn active(&self, gref: u32) -> Option<Active> {
        (gref < self.entries).then(|| self.active.get(gref as usize).copied().unwrap_or_default())
    }

    /// Whether any entry is pinned.
    #[must_use]
    pub fn any_pinned(&self) -> bool {
        self.active.iter().any(|a| a.pin != 0)
    }

    /// Where the shared entry of `gref` lives: (frame, word index).
    fn slot(&self, gref: u32) -> Option<(Mfn, usize)> {
        let per = GRANT_ENTRIES_V1_PER_FRAME;
        let frame = *self.frames.get((gref / per) as usize)?;
        Some((frame, (gref % per) as usize))
    }

    /// The shared entry of `gref` (`None` beyond the table, or after
    /// teardown).
    pub fn entry(&self, mem: &impl EntryMemory, gref: u32) -> Option<GrantEntryV1> {
        let (mfn, index) = self.slot(gref)?;
        Some(decode(mem.load(mfn, index)))
    }

    /// Pins `gref` for `req` (Xen's checks in `map_grant_ref` and
    /// `acquire_grant_for_copy` with `_set_status_v1`). On the first pin
    /// the entry's frame number goes through `frame` (which checks the
    /// granter owns it: `GNTST_bad_page` otherwise). Returns the frame and
    /// whether this was the first pin.
    ///
    /// Errors: `bad_gntref` beyond the table; `general_error` pinned by
    /// another domain, a counter that would overflow, a wrong type or
    /// `domid`, a writable use of a read-only grant, or an entry the
    /// granter keeps changing; `frame`'s error (the flags are then taken
    /// back).
    pub fn pin<M: EntryMemory>(
        &mut self,
        mem: &mut M,
        gref: u32,
        req: PinRequest,
        frame: impl FnOnce(&mut M, u64) -> Result<Mfn, GrantStatus>,
    ) -> Result<(Mfn, bool), GrantStatus> {
        let act = self.active(gref).ok_or(GrantStatus::BadGntref)?;
        if act.pin != 0 && (act.domid != req.user || act.pin & (req.incr << (PIN_WIDTH - 1)) != 0) {
            return Err(GrantStatus::GeneralError);
        }
        let first = act.pin == 0;
        let mut mfn = act.mfn;
        if first || (!req.readonly && act.pin & PIN_WRITERS == 0) {
            let (slot, index) = self.slot(gref).ok_or(GrantStatus::BadGntref)?;
            let raw = set_status(mem, slot, index, act.pin, req)?;
            if first {
                match frame(mem, u64::from(decode(raw).frame)) {
                    Ok(found) => mfn = found,
                    Err(e) => {
                        self.reduce_status(mem, gref, req.readonly);
                        return Err(e);
                    }
                }
            }
        }
        if self.active.len() <= gref as usize {
            self.active.resize(gref as usize + 1, Active::default());
        }
        if let Some(a) = self.active.get_mut(gref as usize) {
            if first {
                a.domid = req.user;
                a.mfn = mfn;
            }
            a.pin += req.incr;
        }
        Ok((mfn, first))
    }

    /// Drops `decr` pins of `gref` and clears the flags no pin needs any
    /// more (Xen's unpin with `reduce_status_for_pin`).
    pub fn unpin(&mut self, mem: &mut impl EntryMemory, gref: u32, decr: u32, readonly: bool) {
        if let Some(a) = self.active.get_mut(gref as usize) {
            a.pin = a.pin.saturating_sub(decr);
        }
        self.reduce_status(mem, gref, readonly);
    }

    /// Clears `GTF_reading` once nothing pins `gref`, and `GTF_writing`
    /// (after a writable use) once no writable pin is left.
    fn reduce_status(&mut self, mem: &mut impl EntryMemory, gref: u32, readonly: bool) {
        let pin = self.active(gref).map_or(0, |a| a.pin);
        let mut clear = 0u16;
        if pin == 0 {
            clear |= GtfFlags::READING.bits();
        }
        if !readonly && pin & PIN_WRITERS == 0 {
            clear |= GtfFlags::WRITING.bits();
        }
        if clear != 0
            && let Some((mfn, index)) = self.slot(gref)
        {
            mem.and(mfn, index, !u64::from(clear));
        }
    }

    /// `swap_grant_ref`: exchanges two entries. `bad_gntref` beyond the
    /// table; `eagain` either is pinned; the same entry twice: nothing.
    pub fn swap(&mut self, mem: &mut impl EntryMemory, a: u32, b: u32) -> Result<(), GrantStatus> {
        if a >= self.nr_entries() || b >= self.nr_entries() {
            return Err(GrantStatus::BadGntref);
        }
        if a == b {
            return Ok(());
        }
        if self.active(a).is_some_and(|x| x.pin != 0) || self.active(b).is_some_and(|x| x.pin != 0)
        {
            return Err(GrantStatus::Eagain);
        }
        let (Some((fa, ia)), Some((fb, ib))) = (self.slot(a), self.slot(b)) else {
            return Err(GrantStatus::BadGntref);
        };
        let va = mem.load(fa, ia);
        let vb = mem.load(fb, ib);
        store(mem, fa, ia, vb);
        store(mem, fb, ib, va);
        Ok(())
    }

    // ---- maptrack ----

    /// A free handle (Xen's `get_maptrack_handle`), growing the table by
    /// a frame when only the last free handle is left; `None` when it
    /// cannot (`GNTST_no_space`).
    pub fn get_handle(&mut self) -> Option<u32> {
        if self.free.len() > 1 {
            return self.free.pop_front();
        }
        let frames = u32::try_from(self.maptrack.len()).unwrap_or(u32::MAX) / MAPTRACK_PER_FRAME;
        if frames >= self.max_maptrack_frames {
            return None;
        }
        let first = u32::try_from(self.maptrack.len()).ok()?;
        self.maptrack.resize(
            self.maptrack.len() + MAPTRACK_PER_FRAME as usize,
            Mapping::default(),
        );
        for h in (first + 1..first + MAPTRACK_PER_FRAME).rev() {
            self.free.push_front(h);
        }
        Some(first)
    }

    /// Returns `handle` to the end of the free list.
    pub fn put_handle(&mut self, handle: u32) {
        if let Some(m) = self.maptrack.get_mut(handle as usize) {
            *m = Mapping::default();
        }
        self.free.push_back(handle);
    }

    /// The number of handles that exist (Xen's `maptrack_limit`).
    #[must_use]
    pub fn maptrack_limit(&self) -> u32 {
        u32::try_from(self.maptrack.len()).unwrap_or(u32::MAX)
    }

    /// The mapping under `handle`, if the handle exists.
    pub fn mapping_mut(&mut self, handle: u32) -> Option<&mut Mapping> {
        self.maptrack.get_mut(handle as usize)
    }

    /// Every mapping still in force, with its handle.
    pub fn mappings(&self) -> impl Iterator<Item = (u32, Mapping)> + '_ {
        (0u32..)
            .zip(self.maptrack.iter().copied())
            .filter(|(_, m)| m.flags != 0)
    }

    /// Teardown: forgets the shared frames (the frame table releases
    /// them with the domain's other shared pages) and the mappings; the
    /// active entries stay until other domains drop their pins.
    pub fn release(&mut self) {
        self.frames.clear();
        self.maptrack.clear();
        self.free.clear();
    }
}

/// A plain store through compare-and-swap (a word nobody else changes).
fn store(mem: &mut impl EntryMemory, mfn: Mfn, index: usize, value: u64) {
    let mut seen = mem.load(mfn, index);
    loop {
        let prev = mem.cmpxchg(mfn, index, seen, value);
        if prev == seen {
            return;
        }
        seen = prev;
    }
}

/// Xen's `_set_status_v1`: checks the entry (unless already pinned) and
/// sets `GTF_reading` (and `GTF_writing`) with compare-and-swap. Returns
/// the entry as swapped.
fn set_status(
    mem: &mut impl EntryMemory,
    mfn: Mfn,
    index: usize,
    pin: u32,
    req: PinRequest,
) -> Result<u64, GrantStatus> {
    let mut mask = GTF_TYPE_MASK;
    if req.map {
        mask |= GtfFlags::SUB_PAGE.bits();
    }
    let mut seen = mem.load(mfn, index);
    for _ in 0..CAS_RETRIES {
        let entry = decode(seen);
        if pin == 0
            && (entry.flags & mask != GtfFlags::PERMIT_ACCESS.bits() || entry.domid != req.user.0)
        {
            return Err(GrantStatus::GeneralError);
        }
        let mut flags = entry.flags | GtfFlags::READING.bits();
        if !req.readonly {
            flags |= GtfFlags::WRITING.bits();
            if entry.flags & GtfFlags::READONLY.bits() != 0 {
                return Err(GrantStatus::GeneralError);
            }
        }
        let new = (seen & !0xFFFF) | u64::from(flags);
        let prev = mem.cmpxchg(mfn, index, seen, new);
        if prev == seen {
            return Ok(new);
        }
        seen = prev;
    }
    Err(GrantStatus::GeneralError)
}

/// The `PIN_*` increment of a use: host or device, read-only or not.
#[must_use]
pub const fn pin_incr(host: bool, device: bool, readonly: bool) -> u32 {
    let mut incr = 0;
    if device {
        incr += if readonly { PIN_DEV_R } else { PIN_DEV_W };
    }
    if host {
        incr += if readonly { PIN_HOST_R } else { PIN_HOST_W };
    }
    incr
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::collections::BTreeMap;
    use proptest::prelude::*;

    /// Shared frames as a map of words.
    #[derive(Default)]
    struct Words(BTreeMap<(u64, usize), u64>);

    impl EntryMemory for Words {
        fn load(&self, mfn: Mfn, index: usize) -> u64 {
            self.0.get(&(mfn.0, index)).copied().unwrap_or(0)
        }
        fn cmpxchg(&mut self, mfn: Mfn, index: usize, old: u64, new: u64) -> u64 {
            let seen = self.load(mfn, index);
            if seen == old {
                self.0.insert((mfn.0, index), new);
            }
            seen
        }
        fn and(&mut self, mfn: Mfn, index: usize, mask: u64) {
            let v = self.load(mfn, index) & mask;
            self.0.insert((mfn.0, index), v);
        }
    }

    const TABLE: Mfn = Mfn(0x100);
    const USER: DomId = DomId(1);

    fn table() -> (GrantTable, Words) {
        let mut gt = GrantTable::new(2, 1);
        assert!(gt.add_frame(TABLE));
        (gt, Words::default())
    }

    fn grant(mem: &mut Words, gref: u32, flags: GtfFlags, frame: u32) {
        let e = GrantEntryV1 {
            flags: flags.bits(),
            domid: USER.0,
            frame,
        };
        mem.0.insert((TABLE.0, gref as usize), encode(e));
    }

    fn req(readonly: bool) -> PinRequest {
        PinRequest {
            user: USER,
            incr: pin_incr(true, false, readonly),
            readonly,
            map: true,
        }
    }

    fn flags(gt: &GrantTable, mem: &Words, gref: u32) -> GtfFlags {
        GtfFlags::from_bits_retain(gt.entry(mem, gref).map_or(0, |e| e.flags))
    }

    fn owned(_: &mut Words, gfn: u64) -> Result<Mfn, GrantStatus> {
        Ok(Mfn(gfn))
    }

    #[test]
    fn pins_set_and_clear_the_flags() {
        let (mut gt, mut mem) = table();
        grant(&mut mem, 10, GtfFlags::PERMIT_ACCESS, 0x55);
        // An unused table holds no active entries, yet answers for each.
        assert!(gt.active.is_empty());
        assert_eq!(gt.active(511), Some(Active::default()));
        assert_eq!(gt.active(512), None);
        assert_eq!(
            gt.pin(&mut mem, 10, req(true), owned),
            Ok((Mfn(0x55), true))
        );
        assert!(flags(&gt, &mem, 10).contains(GtfFlags::READING));
        assert!(!flags(&gt, &mem, 10).contains(GtfFlags::WRITING));
        assert_eq!(
            gt.pin(&mut mem, 10, req(false), owned),
            Ok((Mfn(0x55), false))
        );
        assert!(flags(&gt, &mem, 10).contains(GtfFlags::WRITING));
        gt.unpin(&mut mem, 10, PIN_HOST_W, false);
        assert_eq!(
            flags(&gt, &mem, 10),
            GtfFlags::PERMIT_ACCESS | GtfFlags::READING
        );
        gt.unpin(&mut mem, 10, PIN_HOST_R, true);
        assert_eq!(flags(&gt, &mem, 10), GtfFlags::PERMIT_ACCESS);
        assert_eq!(gt.active(10).map(|a| a.pin), Some(0));
        assert_eq!(gt.active.len(), 11, "grown to the pinned reference only");
    }

    #[test]
    fn refusals() {
        let (mut gt, mut mem) = table();
        assert_eq!(
            gt.pin(&mut mem, 512, req(true), owned),
            Err(GrantStatus::BadGntref)
        );
        assert_eq!(
            gt.pin(&mut mem, 9, req(true), owned),
            Err(GrantStatus::GeneralError),
            "invalid entry"
        );
        grant(
            &mut mem,
            9,
            GtfFlags::PERMIT_ACCESS | GtfFlags::READONLY,
            0x55,
        );
        assert_eq!(
            gt.pin(&mut mem, 9, req(false), owned),
            Err(GrantStatus::GeneralError),
            "writable use of a read-only grant"
        );
        assert_eq!(
            flags(&gt, &mem, 9),
            GtfFlags::PERMIT_ACCESS | GtfFlags::READONLY
        );
        let other = PinRequest {
            user: DomId(2),
            ..req(true)
        };
        assert_eq!(
            gt.pin(&mut mem, 9, other, owned),
            Err(GrantStatus::GeneralError)
        );
        assert_eq!(
            gt.pin(&mut mem, 9, req(true), |_, _| Err(GrantStatus::BadPage)),
            Err(GrantStatus::BadPage)
        );
        assert_eq!(
            flags(&gt, &mem, 9),
            GtfFlags::PERMIT_ACCESS | GtfFlags::READONLY
        );
        for _ in 0..128 {
            assert!(gt.pin(&mut mem, 9, req(true), owned).is_ok());
        }
        assert_eq!(
            gt.pin(&mut mem, 9, req(true), owned),
            Err(GrantStatus::GeneralError),
            "counter would overflow"
        );
    }

    #[test]
    fn swap_and_growth() {
        let (mut gt, mut mem) = table();
        grant(&mut mem, 8, GtfFlags::PERMIT_ACCESS, 1);
        assert_eq!(gt.swap(&mut mem, 8, 9), Ok(()));
        assert_eq!(gt.entry(&mem, 9).map(|e| e.frame), Some(1));
        assert_eq!(gt.swap(&mut mem, 8, 512), Err(GrantStatus::BadGntref));
        assert!(gt.pin(&mut mem, 9, req(true), owned).is_ok());
        assert_eq!(gt.swap(&mut mem, 8, 9), Err(GrantStatus::Eagain));
        assert_eq!(gt.swap(&mut mem, 9, 9), Ok(()));
        assert!(gt.add_frame(Mfn(0x101)));
        assert!(!gt.add_frame(Mfn(0x102)), "max_grant_frames");
        assert_eq!(gt.nr_entries(), 1024);
    }

    #[test]
    fn handles_in_xen_order() {
        let mut gt = GrantTable::new(1, 1);
        assert_eq!(gt.get_handle(), Some(0));
        assert_eq!(gt.get_handle(), Some(1));
        gt.put_handle(0);
        assert_eq!(gt.get_handle(), Some(2), "a freed handle goes to the end");
        for want in 3..MAPTRACK_PER_FRAME {
            assert_eq!(gt.get_handle(), Some(want));
        }
        assert_eq!(gt.get_handle(), None, "the last free handle stays");
        let mut none = GrantTable::new(1, 0);
        assert_eq!(none.get_handle(), None);
    }

    /// One step of a random sequence on entry 8.
    #[derive(Clone, Debug)]
    enum Step {
        Grant(bool),
        Revoke,
        Pin { host: bool, readonly: bool },
        Unpin(usize),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            any::<bool>().prop_map(Step::Grant),
            Just(Step::Revoke),
            (any::<bool>(), any::<bool>())
                .prop_map(|(host, readonly)| Step::Pin { host, readonly }),
            any::<usize>().prop_map(Step::Unpin),
        ]
    }

    proptest! {
        /// Maps, unmaps, copies (pins) and the granter's grants and
        /// revocations, in any order: the pin count is exactly the sum of
        /// the uses in force, `GTF_reading` is set exactly while pinned,
        /// `GTF_writing` exactly while a writable use is in force, and a
        /// revocation succeeds only when nothing uses the grant.
        #[test]
        fn the_entry_state_machine_never_loses_a_use(steps in proptest::collection::vec(step(), 1..60)) {
            let (mut gt, mut mem) = table();
            let gref = 8;
            let mut uses: Vec<(u32, bool)> = Vec::new();
            for s in steps {
                match s {
                    Step::Grant(readonly) => {
                        let e = gt.entry(&mem, gref).unwrap_or_default();
                        if e.flags & GTF_TYPE_MASK == 0 {
                            let mut f = GtfFlags::PERMIT_ACCESS;
                            f.set(GtfFlags::READONLY, readonly);
                            grant(&mut mem, gref, f, 0x77);
                        }
                    }
                    Step::Revoke => {
                        let raw = mem.load(TABLE, gref as usize);
                        let busy = GtfFlags::from_bits_retain(decode(raw).flags)
                            .intersects(GtfFlags::READING | GtfFlags::WRITING);
                        if !busy {
                            mem.cmpxchg(TABLE, gref as usize, raw, raw & !0xFFFF);
                        }
                        prop_assert_eq!(busy, !uses.is_empty());
                    }
                    Step::Pin { host, readonly } => {
                        let incr = pin_incr(host, !host, readonly);
                        let r = PinRequest { user: USER, incr, readonly, map: host };
                        let e = decode(mem.load(TABLE, gref as usize));
                        let granted = e.flags & GTF_TYPE_MASK == 1;
                        let ro_grant = e.flags & GtfFlags::READONLY.bits() != 0;
                        let result = gt.pin(&mut mem, gref, r, owned);
                        let expect_ok = (granted || !uses.is_empty()) && (readonly || !ro_grant);
                        prop_assert_eq!(result.is_ok(), expect_ok);
                        if result.is_ok() {
                            uses.push((incr, readonly));
                        }
                    }
                    Step::Unpin(i) => {
                        if !uses.is_empty() {
                            let (incr, readonly) = uses.remove(i % uses.len());
                            gt.unpin(&mut mem, gref, incr, readonly);
                        }
                    }
                }
                let pin: u32 = uses.iter().map(|u| u.0).sum();
                prop_assert_eq!(gt.active(gref).map(|a| a.pin), Some(pin));
                let f = GtfFlags::from_bits_retain(decode(mem.load(TABLE, gref as usize)).flags);
                prop_assert_eq!(f.contains(GtfFlags::READING), !uses.is_empty());
                prop_assert_eq!(f.contains(GtfFlags::WRITING), uses.iter().any(|u| !u.1));
            }
        }
    }
}
