//! Domains: what the hypervisor knows about each guest, and the table
//! that holds them.
//!
//! Invariants: a domain's run state only moves forward (running → shut
//! down); the first `SCHEDOP_shutdown_code` wins and then overrides the
//! reason of the domain's eventual shutdown or crash, as on Xen. Privilege
//! is a [`Privilege`] capability that only this module can mint, when it
//! creates the initial domain; nothing a guest does can create one.
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::boxed::Box;
use alloc::vec::Vec;

use core::mem::offset_of;

use core::ops::Range;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use dom0_abi::sched::ShutdownReason;
use dom0_abi::shared_info::{SharedInfo, VcpuInfo, XEN_LEGACY_MAX_VCPUS};
use dom0_abi::types::DomId;

use spin::{Mutex, MutexGuard, Once};

use crate::evtchn::EventChannels;
use crate::gnttab::GrantTable;
use crate::index::bounded;
use crate::iomem::IomemCaps;
use crate::ioport::{IoPorts, Latches};
use crate::mm::machine::DomainMm;
use crate::pirq::Pirqs;
use crate::sched::credit::Share;
use crate::timer::Watchdogs;
use crate::tlb::CpuSet;
use crate::vcpu::Vcpu;

/// The right to use privileged hypercalls (Xen's control and hardware
/// domain). Only domain creation in this module mints one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Privilege(());

impl Privilege {
    /// A capability for the unit tests' fake domains.
    #[cfg(test)]
    pub(crate) const fn for_tests() -> Privilege {
        Privilege(())
    }
}

/// Where a domain is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    /// Running (or runnable).
    Running,
    /// Shut down with this reason (a `SHUTDOWN_*` value; any `u8` a guest
    /// passes is kept as is, as Xen keeps it).
    ShutDown(u8),
}

/// A guest domain: what belongs to the domain as a whole. Its vCPUs sit
/// beside it in its [`DomainEntry`].
#[derive(Debug)]
pub struct Domain {
    /// Its identifier.
    pub id: DomId,
    /// The toolstack's 16-byte handle (`XENVER_guest_handle`); zero for dom0.
    pub handle: [u8; 16],
    /// The code recorded by `SCHEDOP_shutdown_code`, if any.
    pub shutdown_code: Option<u8>,
    /// Its run state.
    pub state: RunState,
    /// Its memory accounting, assists and privilege.
    pub mm: DomainMm,
    /// Machine address of its shared_info page (0 before it has one).
    pub shared_info: u64,
    /// Its event channels (their bits live in the shared_info page).
    pub evtchn: EventChannels,
    /// Its watchdogs (`SCHEDOP_watchdog`).
    pub watchdogs: Watchdogs,
    /// The toolstack's pauses (`XEN_DOMCTL_pausedomain`, at most
    /// [`MAX_PAUSES`]); a domain made by `createdomain` starts with one.
    pub pauses: u8,
    /// The vCPU count `createdomain` fixed; `XEN_DOMCTL_max_vcpus` must
    /// name the same (the vCPUs exist from then on).
    pub config_vcpus: u32,
    /// `XEN_X86_EMU_*` bits it was created with (dom0: the PIT).
    pub emulation_flags: u32,
    /// Destroyed, but some of its frames are still referenced from
    /// elsewhere (Xen's `DOMDYING_dead` zombie).
    pub dying: bool,
    /// Its grant table (grants it gives, mappings it holds); boxed so that
    /// a grant operation takes it out and puts it back with one word
    /// (`None` only meanwhile).
    pub grant: Option<Box<GrantTable>>,
    /// Its share of the CPU (`scheduler_op`'s weight and cap).
    pub share: Share,
    /// The I/O ports it may reach (`None`: none): dom0's as Xen gives
    /// them, others' from `XEN_DOMCTL_ioport_permission`.
    pub ioports: Option<Box<IoPorts>>,
    /// The machine frames it may map as device memory.
    pub iomem: IomemCaps,
    /// The emulated ports' latched registers (0xCF8, the RTC index).
    pub io_latches: Latches,
    /// Its PIRQs and the GSIs it may use.
    pub pirqs: Pirqs,
    /// The page of `PHYSDEVOP_pirq_eoi_gmfn_v1`/`v2`, which it holds a
    /// writable type reference on: bit `n` set means PIRQ `n` waits for
    /// `PHYSDEVOP_eoi`.
    pub pirq_eoi_map: Option<PirqEoiMap>,
    /// The machine's PCI devices as the hypervisor knows them (the
    /// hardware domain only: it reports and removes them).
    pub pci: Option<Box<crate::pci::PciDevices>>,
}

/// A registered PIRQ EOI bitmap page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PirqEoiMap {
    /// The frame.
    pub mfn: dom0_abi::types::Mfn,
    /// Registered with v1: `PHYSDEVOP_eoi` also unmasks the PIRQ's port.
    pub auto_unmask: bool,
}

/// Xen's default `gnttab_max_frames`: dom0's limit, and a domain's when
/// `createdomain` passes a negative `max_grant_frames`.
pub const DEFAULT_GRANT_FRAMES: u32 = 64;
/// Xen's default `gnttab_max_maptrack_frames`.
pub const DEFAULT_MAPTRACK_FRAMES: u32 = 1024;

/// Most nested toolstack pauses (Xen's limit: 255).
pub const MAX_PAUSES: u8 = u8::MAX;

/// `XEN_X86_EMU_PIT`: the only emulation a PV domain may have.
pub const EMU_PIT: u32 = 1 << 8;

impl Domain {
    /// Recomputes whether the domain has I/O rights (Xen's
    /// `cache_flush_permitted`: some device memory or some port), which
    /// lets its page tables carry cache attributes.
    pub fn refresh_io_caps(&mut self) {
        self.mm.io_caps =
            !self.iomem.is_empty() || self.ioports.as_deref().is_some_and(IoPorts::any);
    }

    /// The initial domain as the dom0 builder creates it: privileged, with
    /// I/O rights and `max_vcpus` vCPUs; its pages are counted as the
    /// builder assigns them.
    pub fn dom0(max_vcpus: u32, shared_info: u64) -> Domain {
        Domain {
            mm: DomainMm {
                max_vcpus,
                ..DomainMm::dom0(Privilege(()), 0)
            },
            emulation_flags: EMU_PIT,
            ..Domain::created(
                DomId::DOM0,
                [0; 16],
                EventChannels::new(DomId::DOM0, max_vcpus),
                max_vcpus,
                shared_info,
            )
        }
    }

    /// An unprivileged domain as `XEN_DOMCTL_createdomain` makes it:
    /// paused once by the toolstack, no vCPUs yet (they come with
    /// `XEN_DOMCTL_max_vcpus`, which must name `config_vcpus`), no page
    /// allowance (`max_pages` 0 until `XEN_DOMCTL_max_mem`), its
    /// shared_info page at `shared_info`, event ports up to `max_port`.
    pub fn domu(
        id: DomId,
        handle: [u8; 16],
        config_vcpus: u32,
        max_port: u32,
        shared_info: u64,
    ) -> Domain {
        Domain {
            pauses: 1,
            ..Domain::created(
                id,
                handle,
                EventChannels::new(id, config_vcpus).with_max_port(max_port),
                config_vcpus,
                shared_info,
            )
        }
    }

    /// What every new domain starts with: running, unpaused, no pages, no
    /// rights, no emulation, Xen's default grant-table limits, and the
    /// event channels `evtchn`.
    fn created(
        id: DomId,
        handle: [u8; 16],
        evtchn: EventChannels,
        config_vcpus: u32,
        shared_info: u64,
    ) -> Domain {
        Domain {
            id,
            handle,
            shutdown_code: None,
            state: RunState::Running,
            mm: DomainMm {
                tot_pages: 0,
                max_pages: 0,
                vm_assist: 0,
                io_caps: false,
                privilege: None,
                memory_map: None,
                max_vcpus: 0,
            },
            shared_info,
            evtchn,
            watchdogs: Watchdogs::default(),
            pauses: 0,
            config_vcpus,
            emulation_flags: 0,
            dying: false,
            grant: Some(Box::new(GrantTable::new(
                DEFAULT_GRANT_FRAMES,
                DEFAULT_MAPTRACK_FRAMES,
            ))),
            share: Share::default(),
            ioports: None,
            iomem: IomemCaps::none(),
            io_latches: Latches::default(),
            pirqs: Pirqs::default(),
            pirq_eoi_map: None,
            pci: None,
        }
    }

    /// The shutdown code Xen reports in `getdomaininfo` (bits 16 and up of
    /// its flags): the effective reason once shut down, else a recorded
    /// `SCHEDOP_shutdown_code`, else `!0` (none).
    pub fn reported_shutdown_code(&self) -> u32 {
        match (self.state, self.shutdown_code) {
            (RunState::ShutDown(reason), _) => u32::from(reason),
            (RunState::Running, Some(code)) => u32::from(code),
            (RunState::Running, None) => u32::MAX,
        }
    }

    /// Whether the domain may use privileged hypercalls.
    pub fn is_privileged(&self) -> bool {
        self.mm.privilege.is_some()
    }

    /// Records a shutdown code; only the first one counts.
    pub fn set_shutdown_code(&mut self, code: u8) {
        self.shutdown_code.get_or_insert(code);
    }

    /// Shuts the domain down for `reason` and returns the reason that takes
    /// effect (a recorded shutdown code overrides it). A domain already shut
    /// down keeps its first reason.
    pub fn shutdown(&mut self, reason: u8) -> u8 {
        if let RunState::ShutDown(first) = self.state {
            return first;
        }
        let effective = self.shutdown_code.unwrap_or(reason);
        self.state = RunState::ShutDown(effective);
        effective
    }

    /// Crashes the domain: a shutdown with `SHUTDOWN_crash`.
    pub fn crash(&mut self) -> u8 {
        self.shutdown(ShutdownReason::Crash as u8)
    }

    /// Whether the domain still runs.
    pub fn is_running(&self) -> bool {
        self.state == RunState::Running
    }

    /// Whether its vCPUs may run: not shut down, not paused by the
    /// toolstack.
    pub fn may_run(&self) -> bool {
        self.is_running() && self.pauses == 0
    }
}

/// A domain table entry: the domain and its vCPUs (index = vCPU id).
#[derive(Debug)]
pub struct DomainEntry {
    /// The domain.
    pub domain: Domain,
    /// Its vCPUs, `domain.mm.max_vcpus` of them.
    pub vcpus: Vec<Vcpu>,
}

impl DomainEntry {
    /// A domain with `max_vcpus` vCPUs, all down, each with its
    /// `vcpu_info` in the domain's shared_info page (slot = vCPU id; the
    /// domain must have at most [`XEN_LEGACY_MAX_VCPUS`] vCPUs).
    pub fn new(domain: Domain) -> DomainEntry {
        let mut entry = DomainEntry {
            domain,
            vcpus: Vec::new(),
        };
        entry.make_vcpus(entry.domain.mm.max_vcpus);
        entry
    }

    /// Gives a domain without vCPUs `count` of them, all down, as
    /// [`DomainEntry::new`] does.
    pub fn make_vcpus(&mut self, count: u32) {
        let shared_info = self.domain.shared_info;
        self.vcpus = (0..count)
            .map(|id| {
                let mut vcpu = Vcpu::new(id);
                let slot = bounded(u64::from(id), XEN_LEGACY_MAX_VCPUS).unwrap_or(0);
                vcpu.vcpu_info = shared_info
                    + (offset_of!(SharedInfo, vcpu_info) + slot * size_of::<VcpuInfo>()) as u64;
                vcpu
            })
            .collect();
        self.domain.mm.max_vcpus = count;
    }
}

/// The most domain slots the table can have (`max_domains=`).
pub const MAX_DOMAINS: usize = 1024;
/// Slots when the command line does not say.
pub const DEFAULT_DOMAINS: usize = 64;

/// Every domain of this boot; made once, before dom0 is built.
pub static DOMAINS: Once<DomainTable> = Once::new();

/// One slot of the table.
pub type DomainSlot = Mutex<Option<Box<DomainEntry>>>;

/// Every domain, in fixed slots indexed by domain id, each behind its own
/// lock. Lock order (see `docs/locking.md`): per-CPU state, then domain
/// slots in ascending id order ([`DomainTable::lock_two`]), then the frame
/// table, then the frame allocator.
pub struct DomainTable {
    slots: Vec<DomainSlot>,
    /// Domains in the table (so that walks over the others can be skipped
    /// while dom0 is alone).
    live: AtomicUsize,
    /// Which slots hold a domain (bit `i % 64` of word `i / 64`: slot
    /// `i`), changed with the slot locked: the scheduler's walks over
    /// every domain visit these instead of trying all `max_domains`
    /// slots (about 15 instructions per empty slot, several walks per
    /// switch between domains). A hint: the slot, locked, has the last
    /// word.
    occupied: [AtomicU64; MAX_DOMAINS / 64],
    /// Per slot, frames of its domain the memory core freed on a CPU that
    /// did not hold the slot ([`DomainTable::owe_page`]): its page count
    /// owes them, until the next CPU that locks the slot settles them
    /// ([`DomainTable::settle_pages`]). Xen keeps `tot_pages` under a
    /// lock of its own (`page_alloc_lock`); here it lives in the slot, and
    /// a free must not wait for a slot it may not wait for.
    pages_owed: Vec<AtomicU64>,
}

/// Per domain id, the CPUs whose TLB may hold the domain's translations
/// (`crate::tlb`): a flush of the domain is asked of each of them. Outside
/// the table, so that a vCPU switch reaches it without finding the table.
static DIRTY_CPUS: [CpuSet; MAX_DOMAINS] = [const { CpuSet::new() }; MAX_DOMAINS];

/// The sum of every table's `pages_owed` (a hint: it may lag a slot's
/// count for a moment), so that a settle with nothing owed anywhere is
/// one load ([`DomainTable::settle_pages`]).
static ANY_PAGES_OWED: AtomicU64 = AtomicU64::new(0);

impl DomainTable {
    /// A table of `slots` empty slots (clamped to 1..=[`MAX_DOMAINS`]).
    pub fn new(slots: usize) -> DomainTable {
        let slots = slots.clamp(1, MAX_DOMAINS);
        DomainTable {
            slots: (0..slots).map(|_| Mutex::new(None)).collect(),
            live: AtomicUsize::new(0),
            occupied: [const { AtomicU64::new(0) }; MAX_DOMAINS / 64],
            pages_owed: (0..slots).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// The CPUs whose TLB may hold translations of domain `id`'s page
    /// tables (`crate::tlb`), if `id` can name a domain. The set outlives
    /// its domain: a CPU still named when the id is used again costs the
    /// new domain one needless flush, never a missed one.
    #[inline]
    pub fn dirty_cpus(id: DomId) -> Option<&'static CpuSet> {
        DIRTY_CPUS.get(usize::from(id.0))
    }

    /// How many slots there are.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the table has no slots (never: it has at least one).
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The slot of `id`, if the table has one (special ids have none).
    pub fn slot(&self, id: DomId) -> Option<&DomainSlot> {
        bounded(u64::from(id.0), self.slots.len()).map(|i| &self.slots[i])
    }

    /// Puts `entry` into its domain's empty slot; gives it back if the
    /// slot is taken or does not exist.
    pub fn insert(&self, entry: Box<DomainEntry>) -> Result<(), Box<DomainEntry>> {
        let Some(slot) = self.slot(entry.domain.id) else {
            return Err(entry);
        };
        let mut guard = slot.lock();
        self.put(&mut guard, entry)
    }

    /// [`DomainTable::insert`], for a caller that holds another slot: the
    /// slot is tried, never waited for (`docs/locking.md`).
    pub fn try_insert(&self, entry: Box<DomainEntry>) -> Result<(), Box<DomainEntry>> {
        let Some(slot) = self.slot(entry.domain.id) else {
            return Err(entry);
        };
        let Some(mut guard) = slot.try_lock() else {
            return Err(entry);
        };
        self.put(&mut guard, entry)
    }

    /// Puts `entry` into the slot `guard` holds, if it is empty.
    fn put(
        &self,
        guard: &mut Option<Box<DomainEntry>>,
        entry: Box<DomainEntry>,
    ) -> Result<(), Box<DomainEntry>> {
        if guard.is_some() {
            return Err(entry);
        }
        self.mark(entry.domain.id, true);
        *guard = Some(entry);
        self.live.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Takes the domain out of the slot `guard` holds (a slot of this
    /// table).
    pub fn take(&self, guard: &mut Option<Box<DomainEntry>>) -> Option<Box<DomainEntry>> {
        let mut entry = guard.take()?;
        self.settle_pages(&mut entry.domain);
        self.mark(entry.domain.id, false);
        self.live.fetch_sub(1, Ordering::Relaxed);
        Some(entry)
    }

    /// A frame of domain `id` went back to the allocator on a CPU that
    /// does not hold `id`'s slot (another CPU may, or may be waiting for
    /// the one this CPU holds): its page count is lowered by whoever
    /// locks the slot next ([`DomainTable::settle_pages`]).
    pub fn owe_page(&self, id: DomId) {
        if let Some(owed) =
            bounded(u64::from(id.0), self.pages_owed.len()).and_then(|i| self.pages_owed.get(i))
        {
            owed.fetch_add(1, Ordering::AcqRel);
            ANY_PAGES_OWED.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Lowers `domain`'s page count by the frames freed while its slot
    /// was held elsewhere ([`DomainTable::owe_page`]); the caller holds
    /// its slot. One load when nothing is owed.
    #[inline(always)]
    pub fn settle_pages(&self, domain: &mut Domain) {
        if Self::pages_owed_anywhere() {
            self.settle_owed(domain);
        }
    }

    /// Whether some domain owes pages (then the next holder of its slot
    /// settles them: [`DomainTable::settle_pages`]).
    #[inline(always)]
    pub fn pages_owed_anywhere() -> bool {
        ANY_PAGES_OWED.load(Ordering::Relaxed) != 0
    }

    /// [`DomainTable::settle_pages`] once some domain owes pages.
    #[cold]
    fn settle_owed(&self, domain: &mut Domain) {
        let Some(owed) = bounded(u64::from(domain.id.0), self.pages_owed.len())
            .and_then(|i| self.pages_owed.get(i))
        else {
            return;
        };
        let pages = owed.swap(0, Ordering::AcqRel);
        if pages != 0 {
            // Wraps for a moment at most, if this ran between an
            // `owe_page`'s two additions: a hint only.
            ANY_PAGES_OWED.fetch_sub(pages, Ordering::AcqRel);
            let mm = &mut domain.mm;
            mm.tot_pages = mm.tot_pages.saturating_sub(pages);
        }
    }

    /// Records whether `id`'s slot holds a domain.
    fn mark(&self, id: DomId, occupied: bool) {
        let i = usize::from(id.0);
        if let Some(word) = self.occupied.get(i / 64) {
            let bit = 1u64 << (i % 64);
            if occupied {
                word.fetch_or(bit, Ordering::Relaxed);
            } else {
                word.fetch_and(!bit, Ordering::Relaxed);
            }
        }
    }

    /// The ids in `ids` whose slots hold a domain, lowest first (each
    /// slot must still be locked, or tried, and looked at).
    pub fn occupied(&self, ids: Range<usize>) -> Occupied<'_> {
        let end = ids.end.min(self.slots.len());
        let start = ids.start.min(end);
        let word = start / 64;
        let bits = self
            .occupied
            .get(word)
            .map_or(0, |w| w.load(Ordering::Relaxed))
            & (u64::MAX << (start % 64));
        Occupied {
            words: &self.occupied,
            word,
            bits,
            end,
        }
    }

    /// How many domains the table holds.
    pub fn live(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    /// Runs `f` on every domain whose id is above `held`, whose slot the
    /// caller holds: each slot is locked alone, in ascending id order, so
    /// that the caller holds at most two slots, the lower one first (the
    /// order of `docs/locking.md`). Slots below `held` cannot be reached
    /// this way.
    pub fn for_each_above(&self, held: DomId, mut f: impl FnMut(&mut DomainEntry)) {
        for slot in self.slots.iter().skip(usize::from(held.0) + 1) {
            if let Some(entry) = slot.lock().as_deref_mut() {
                f(entry);
            }
        }
    }

    /// Takes a domain out of the table.
    pub fn remove(&self, id: DomId) -> Option<Box<DomainEntry>> {
        self.take(&mut self.slot(id)?.lock())
    }

    /// Whether domain `id` exists, for a caller that holds the slot of
    /// `holding` (which counts as existing). No slot is locked or tried:
    /// the answer is the table's bitmap, which changes only under the
    /// slot's lock, so a slot another CPU holds is answered as exactly as
    /// any other.
    pub fn exists(&self, id: DomId, holding: DomId) -> bool {
        if id == holding {
            return self.slot(id).is_some();
        }
        self.occupied(usize::from(id.0)..usize::from(id.0) + 1)
            .next()
            .is_some()
    }

    /// The first existing domain with an id of at least `from` (Xen's
    /// lookup rule of `getdomaininfo` and `getdomaininfolist`), for a
    /// caller holding the slot of `holding`. From the bitmap, as
    /// [`DomainTable::exists`].
    pub fn first_from(&self, from: DomId, holding: DomId) -> Option<DomId> {
        let start = usize::from(from.0);
        let other = self.occupied(start..self.slots.len()).next();
        let own = (holding.0 >= from.0 && self.slot(holding).is_some()).then_some(holding);
        match (own, other) {
            (Some(own), Some(other)) => Some(if own.0 < other.0 { own } else { other }),
            (own, other) => own.or(other),
        }
    }

    /// A free id for a new domain: the first free one after `rover`,
    /// wrapping round to 1 (Xen's rover; 0 is never handed out), for a
    /// caller holding the slot of `holding`. An empty slot another CPU
    /// holds (a domain going in or coming out) is passed over: it is not
    /// free to take now, and the next one is as good.
    pub fn free_id(&self, rover: DomId, holding: DomId) -> Option<DomId> {
        let n = self.slots.len();
        (1..n)
            .map(|step| (usize::from(rover.0) + step) % n)
            .filter(|&i| i != 0)
            .filter_map(|i| u16::try_from(i).ok().map(DomId))
            .find(|&id| {
                id != holding
                    && !self.exists(id, holding)
                    && self
                        .slot(id)
                        .is_some_and(|slot| slot.try_lock().is_some_and(|guard| guard.is_none()))
            })
    }

    /// Locks two different domains' slots in the documented order (lower
    /// id first) and returns the guards as `(a, b)`. `None` if either has
    /// no slot or `a == b` (lock that one alone).
    #[allow(
        clippy::type_complexity,
        reason = "two guards of the one slot type, named where it is defined"
    )]
    pub fn lock_two(
        &self,
        a: DomId,
        b: DomId,
    ) -> Option<(
        MutexGuard<'_, Option<Box<DomainEntry>>>,
        MutexGuard<'_, Option<Box<DomainEntry>>>,
    )> {
        if a == b {
            return None;
        }
        let (sa, sb) = (self.slot(a)?, self.slot(b)?);
        if a.0 < b.0 {
            let ga = sa.lock();
            Some((ga, sb.lock()))
        } else {
            let gb = sb.lock();
            Some((sa.lock(), gb))
        }
    }
}

/// The occupied slots of a range of the domain table
/// ([`DomainTable::occupied`]): one word of the bitmap at a time, the
/// bits not yet returned in `bits`.
pub struct Occupied<'a> {
    words: &'a [AtomicU64],
    word: usize,
    bits: u64,
    end: usize,
}

impl Iterator for Occupied<'_> {
    type Item = DomId;

    fn next(&mut self) -> Option<DomId> {
        loop {
            if self.bits != 0 {
                let i = self.word * 64 + self.bits.trailing_zeros() as usize;
                self.bits &= self.bits - 1;
                return if i < self.end {
                    u16::try_from(i).ok().map(DomId)
                } else {
                    None
                };
            }
            self.word += 1;
            if self.word * 64 >= self.end {
                return None;
            }
            self.bits = self.words.get(self.word)?.load(Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_code_overrides_and_first_one_wins() {
        let mut d = Domain::dom0(1, 0);
        d.set_shutdown_code(ShutdownReason::Reboot as u8);
        d.set_shutdown_code(ShutdownReason::Suspend as u8);
        assert_eq!(
            d.shutdown(ShutdownReason::Poweroff as u8),
            ShutdownReason::Reboot as u8
        );
        assert!(!d.is_running());
    }

    #[test]
    fn first_shutdown_sticks() {
        let mut d = Domain::dom0(1, 0);
        assert_eq!(d.shutdown(ShutdownReason::Poweroff as u8), 0);
        assert_eq!(d.crash(), 0);
        assert_eq!(d.state, RunState::ShutDown(0));
    }

    #[test]
    fn dom0_is_privileged_with_its_vcpus() {
        let entry = DomainEntry::new(Domain::dom0(3, 0x1000));
        assert!(entry.domain.is_privileged());
        assert_eq!(entry.vcpus.len(), 3);
        assert!(
            entry
                .vcpus
                .iter()
                .enumerate()
                .all(|(i, v)| v.id as usize == i)
        );
    }

    #[test]
    fn table_slots_and_lock_order() {
        let table = DomainTable::new(4);
        assert_eq!(table.len(), 4);
        assert!(table.slot(DomId(4)).is_none());
        assert!(table.slot(DomId::SELF).is_none());
        let entry = Box::new(DomainEntry::new(Domain::dom0(1, 0)));
        assert!(table.insert(entry).is_ok());
        let again = Box::new(DomainEntry::new(Domain::dom0(1, 0)));
        assert!(table.insert(again).is_err());
        {
            let (a, b) = table.lock_two(DomId(2), DomId(0)).unwrap();
            assert!(a.is_none());
            assert_eq!(b.as_ref().unwrap().domain.id, DomId(0));
        }
        assert!(table.lock_two(DomId(1), DomId(1)).is_none());
        assert!(table.lock_two(DomId(1), DomId(9)).is_none());
        assert_eq!(table.remove(DomId(0)).unwrap().domain.id, DomId(0));
        assert!(table.remove(DomId(0)).is_none());
    }

    #[test]
    fn pages_freed_elsewhere_are_settled_by_the_next_holder() {
        let table = DomainTable::new(4);
        let mut entry = domu(2);
        entry.domain.mm.tot_pages = 10;
        table.insert(entry).unwrap();
        // Freed by CPUs that could not lock the slot: nothing changes yet.
        table.owe_page(DomId(2));
        table.owe_page(DomId(2));
        table.owe_page(DomId(9));
        let slot = table.slot(DomId(2)).unwrap();
        assert_eq!(slot.lock().as_ref().unwrap().domain.mm.tot_pages, 10);
        let mut guard = slot.lock();
        let entry = guard.as_deref_mut().unwrap();
        table.settle_pages(&mut entry.domain);
        assert_eq!(entry.domain.mm.tot_pages, 8);
        table.settle_pages(&mut entry.domain);
        assert_eq!(entry.domain.mm.tot_pages, 8, "settled once");
        // A debt left when the domain leaves its slot is its own.
        table.owe_page(DomId(2));
        let entry = table.take(&mut guard).unwrap();
        assert_eq!(entry.domain.mm.tot_pages, 7);
        drop(guard);
        table.insert(domu(2)).unwrap();
        let mut guard = slot.lock();
        let fresh = guard.as_deref_mut().unwrap();
        table.settle_pages(&mut fresh.domain);
        assert_eq!(fresh.domain.mm.tot_pages, 0, "a new domain owes nothing");
    }

    fn domu(id: u16) -> Box<DomainEntry> {
        Box::new(DomainEntry::new(Domain::domu(
            DomId(id),
            [id.to_le_bytes()[0]; 16],
            2,
            1023,
            0x5000,
        )))
    }

    #[test]
    fn ids_lookup_and_rover() {
        let table = DomainTable::new(5);
        table
            .insert(Box::new(DomainEntry::new(Domain::dom0(1, 0))))
            .unwrap();
        assert_eq!(table.free_id(DomId(0), DomId(0)), Some(DomId(1)));
        table.insert(domu(1)).unwrap();
        table.insert(domu(3)).unwrap();
        assert_eq!(table.free_id(DomId(1), DomId(0)), Some(DomId(2)));
        assert_eq!(table.free_id(DomId(3), DomId(0)), Some(DomId(4)));
        table.insert(domu(4)).unwrap();
        assert_eq!(
            table.free_id(DomId(4), DomId(0)),
            Some(DomId(2)),
            "wraps past 0"
        );
        table.insert(domu(2)).unwrap();
        assert_eq!(table.free_id(DomId(2), DomId(0)), None);
        assert_eq!(table.live(), 5);
        assert!(table.occupied(0..5).eq((0..5).map(DomId)));
        assert_eq!(table.first_from(DomId(2), DomId(0)), Some(DomId(2)));
        table.remove(DomId(2));
        assert_eq!(table.first_from(DomId(2), DomId(0)), Some(DomId(3)));
        assert!(table.occupied(1..usize::MAX).eq([1, 3, 4].map(DomId)));
        assert!(table.occupied(2..4).eq([DomId(3)]));
        assert_eq!(table.first_from(DomId(5), DomId(0)), None);
        // The caller's own slot is held: it counts as existing.
        let held = table.slot(DomId(3)).unwrap().lock();
        assert!(table.exists(DomId(3), DomId(3)));
        assert!(
            table.exists(DomId(3), DomId(0)),
            "held elsewhere: still there"
        );
        assert_eq!(table.first_from(DomId(3), DomId(0)), Some(DomId(3)));
        drop(held);
        // A slot held elsewhere is answered from the bitmap, not as taken.
        table.remove(DomId(4));
        let held = table.slot(DomId(4)).unwrap().lock();
        assert!(!table.exists(DomId(4), DomId(0)), "held elsewhere, empty");
        assert_eq!(table.first_from(DomId(4), DomId(0)), None);
        assert_eq!(
            table.free_id(DomId(3), DomId(0)),
            Some(DomId(2)),
            "an empty slot held elsewhere is not handed out"
        );
        drop(held);
        assert_eq!(table.free_id(DomId(3), DomId(0)), Some(DomId(4)));
    }

    #[test]
    fn occupied_ids_across_words() {
        let table = DomainTable::new(200);
        for id in [63, 64, 130, 199] {
            table.insert(domu(id)).unwrap();
        }
        assert!(table.occupied(0..200).eq([63, 64, 130, 199].map(DomId)));
        assert!(table.occupied(64..199).eq([64, 130].map(DomId)));
        assert!(table.occupied(131..usize::MAX).eq([DomId(199)]));
        assert_eq!(table.occupied(300..400).count(), 0);
        table.remove(DomId(64));
        assert!(table.occupied(0..usize::MAX).eq([63, 130, 199].map(DomId)));
    }

    #[test]
    fn a_new_domu_is_paused_without_vcpus_or_pages() {
        let mut entry = domu(7);
        let d = &entry.domain;
        assert!(!d.is_privileged());
        assert_eq!((d.pauses, d.config_vcpus, d.mm.max_vcpus), (1, 2, 0));
        assert_eq!((d.mm.max_pages, d.mm.tot_pages), (0, 0));
        assert_eq!(d.reported_shutdown_code(), u32::MAX);
        assert!(entry.vcpus.is_empty());
        entry.make_vcpus(2);
        assert_eq!(entry.vcpus.len(), 2);
        assert_eq!(entry.domain.mm.max_vcpus, 2);
        assert_eq!(entry.vcpus[1].vcpu_info, 0x5000 + 64);
        entry.domain.set_shutdown_code(ShutdownReason::Reboot as u8);
        assert_eq!(entry.domain.reported_shutdown_code(), 1);
        entry.domain.crash();
        assert_eq!(entry.domain.reported_shutdown_code(), 1);
    }
}
