//! What hypercall handlers and the memory-management core see of the
//! machine: [`ArchEnv`] implements `hypercall::Env` and `mm`'s machine
//! traits over the direct map, the frame table and the running vCPU; and
//! [`apply_effects`] carries out what a batch of memory operations left to do.
use core::mem::offset_of;
use core::sync::atomic::{AtomicU8, AtomicU16, AtomicU64, Ordering};

extern crate alloc;

use alloc::boxed::Box;

use dom0_abi::Errno;
use dom0_abi::shared_info::VcpuInfo;
use dom0_abi::stats::Counter;
use dom0_abi::types::{DomId, Mfn};
use spin::MutexGuard;

use crate::console::LogRead;
use crate::domain::{DOMAINS, Domain, DomainEntry, DomainTable, Privilege};
use crate::evtchn::{EventBits, EventChannels};
use crate::hypercall::desc;
use crate::hypercall::domctl::{ControlEnv, EventPair, MachineInfo};
use crate::hypercall::mmu::MmuEnv;
use crate::hypercall::{Env, HostInfo};
use crate::layout::PAGE_SIZE;
use crate::mm::effects::{CacheFlush, Effects, TlbFlush};
use crate::mm::frame_table::{FrameInfo, Owner};
use crate::mm::machine::{DomainMm, MmMachine, PageTableMemory, VcpuMm};
use crate::pirq::{Lines, Program};
use crate::stats::Stats;
use crate::vcpu::Vcpu;
use crate::wallclock::Wallclock;

use super::entry::GuestRegs;
use super::evtchn::SharedInfoBits;
use super::paging::{PAGE_BYTES, phys_to_virt};
use super::traps::{Current, crash};
use super::{cpu, guest, guest_mem, mem, paging, percpu, serial, time, trampoline};

/// The machine as one hypercall sees it.
pub struct ArchEnv<'a, 'c> {
    /// The running domain and vCPU.
    pub current: &'a mut Current<'c>,
    /// The guest registers (for `iret`).
    pub regs: &'a mut GuestRegs,
    /// The frame table, locked the first time a handler needs it (most
    /// hypercalls never do), and with it the slot of one other domain
    /// when a handler needs that domain (see `docs/locking.md`). One
    /// field, so that an entry that needs neither pays for one.
    frames: Option<Held>,
    /// A continuation the handler asked for.
    pub preempted: Option<[u64; 5]>,
    /// Whether `iret` replaced the guest context (RAX is then the restored one).
    pub replaced_context: bool,
    /// Whether a lower id's slot was found held elsewhere
    /// ([`Env::slot_busy`]).
    slot_busy: bool,
    /// The event bits of the domain's shared_info page (set when a handler
    /// asks for them; most hypercalls never do), with the vCPUs whose
    /// upcall the handler newly raised.
    events: Option<SharedInfoBits>,
}

impl<'a, 'c> ArchEnv<'a, 'c> {
    /// The environment of the vCPU whose context is `regs`.
    pub fn new(current: &'a mut Current<'c>, regs: &'a mut GuestRegs) -> ArchEnv<'a, 'c> {
        ArchEnv {
            current,
            events: None,
            regs,
            frames: None,
            preempted: None,
            replaced_context: false,
            slot_busy: false,
        }
    }
}

impl ArchEnv<'_, '_> {
    /// A lower id's slot stayed locked elsewhere ([`Env::slot_busy`]): the
    /// hypercall is continued with the arguments the guest made it with
    /// (its registers), unless a continuation is asked for already.
    #[cold]
    fn found_busy(&mut self) {
        self.slot_busy = true;
        let r = &*self.regs;
        self.preempted
            .get_or_insert([r.rdi, r.rsi, r.rdx, r.r10, r.r8]);
    }

    /// The other domain whose slot this environment holds, if any.
    fn held_other(&self) -> Option<DomId> {
        held_id(self.frames.as_ref()?.other.as_ref().map(|(guard, _)| guard))
    }

    /// Gives up the other domains' slots, if any are held (the frame
    /// table stays).
    fn release_other(&mut self) {
        if let Some(held) = self.frames.as_mut() {
            held.other = None;
            held.second = None;
        }
    }

    /// Holds domain `id`'s slot alone, giving up the other slots held
    /// (`None`: no such domain, or its slot stayed busy).
    fn lock_alone(&mut self, id: DomId) -> Option<()> {
        let slot = DOMAINS.get()?.slot(id)?;
        // Slots come before the frame table in the lock order: give it
        // up with the slots held so far, and take it again after (no
        // borrow of either outlives a call into this environment).
        self.frames = None;
        let Some(guard) = lock_other(slot, self.current.domain.id, id, self.current.cpu.number)
        else {
            self.found_busy();
            return None;
        };
        self.frames = Some(Held {
            other: Some(other_slot(guard)?),
            second: None,
            table: mem::FRAME_TABLE.lock(),
        });
        Some(())
    }

    /// Wakes the sleeping vCPUs of the other domain held whose wait the
    /// call ended (an interdomain send): those whose upcall it newly
    /// raised, and those polling a port that is pending now (Xen wakes a
    /// port's pollers whether or not the upcall was raised already). They
    /// become runnable now, and the scheduler looks again before the
    /// caller returns.
    #[cold]
    #[inline(never)]
    fn wake_peer_kicked(&mut self) {
        let Some((guard, bits)) = self.frames.as_mut().and_then(|held| held.other.as_mut()) else {
            return;
        };
        let kicked = bits.take_kicked();
        let Some(entry) = guard.as_deref_mut() else {
            return;
        };
        let now = time::now_ns();
        let mut woken = kicked;
        for vcpu in entry.vcpus.iter_mut().filter(|v| v.sleep.is_sleeping()) {
            let kick = kicked & 1u64.checked_shl(vcpu.id).unwrap_or(0) != 0;
            if crate::sched::wake_if_due(vcpu, bits, kick, now) {
                self.current.cpu.resched = true;
                woken |= 1u64.checked_shl(vcpu.id).unwrap_or(0);
            }
        }
        let me = self.current.cpu.number;
        let elsewhere = crate::sched::cpus_to_kick(entry.vcpus.iter(), woken, me);
        let mut sent = 0;
        if elsewhere != 0 {
            sent = percpu::send_event_checks(elsewhere);
        } else if woken != 0 {
            // A vCPU not loaded anywhere: the CPU that may run it chooses
            // again.
            sent = percpu::kick_for(entry.domain.id, me);
        }
        if sent != 0 {
            self.current.vcpu.stats.add(Counter::Ipis, sent);
        }
    }

    /// The memory state of a domain other than the caller's (out of line:
    /// the memory core asks for the caller's far more often).
    #[cold]
    #[inline(never)]
    fn other_mm(&mut self, dom: DomId) -> Option<&mut DomainMm> {
        self.other_domain(dom).map(|entry| &mut entry.domain.mm)
    }
}

/// The locks one hypercall holds beyond its own domain's slot.
struct Held {
    /// The slot of one other domain, with the event bits of its
    /// shared_info page: taken before the frame table (lock order), tried
    /// and never waited for.
    other: Option<OtherSlot>,
    /// A second other domain's slot, taken together with `other` in id
    /// order ([`MmMachine::hold_two`]); a lookup of either makes it
    /// `other`. The guard alone (its event bits are made when it becomes
    /// `other`), so that every entry that takes the frame table moves as
    /// few bytes as it can.
    second: Option<SlotGuard>,
    /// The frame table.
    table: MutexGuard<'static, Option<&'static mut [FrameInfo]>>,
}

/// A locked domain slot.
type SlotGuard = MutexGuard<'static, Option<Box<DomainEntry>>>;

/// Another domain's slot as a hypercall holds it, with the event bits of
/// its shared_info page.
type OtherSlot = (SlotGuard, SharedInfoBits);

/// The id of the domain in a held slot (`None`: the slot is empty).
fn held_id(slot: Option<&SlotGuard>) -> Option<DomId> {
    slot?.as_ref().map(|entry| entry.domain.id)
}

/// `guard`, another domain's slot, as a hypercall holds it (`None`: the
/// slot is empty).
fn other_slot(guard: SlotGuard) -> Option<OtherSlot> {
    let (shared_info, id) = guard
        .as_ref()
        .map(|e| (e.domain.shared_info, e.domain.id))?;
    Some((guard, SharedInfoBits::new(shared_info, id, u32::MAX)))
}

impl Held {
    /// The frame table alone.
    fn table() -> Held {
        Held {
            other: None,
            second: None,
            table: mem::FRAME_TABLE.lock(),
        }
    }
}

/// Whether the frame-table record of `mfn` (if it has one) says DOMID_IO.
fn is_device_frame(table: &[FrameInfo], mfn: Mfn) -> bool {
    usize::try_from(mfn.0)
        .ok()
        .and_then(|i| table.get(i))
        .is_none_or(|info| info.owner() == Owner::Io)
}

fn pte_ptr(mfn: Mfn, index: usize) -> *mut u64 {
    (phys_to_virt(mfn.maddr()) as *mut u64).wrapping_add(index)
}

impl PageTableMemory for ArchEnv<'_, '_> {
    fn read_pte(&self, mfn: Mfn, index: usize) -> u64 {
        // SAFETY: the memory core only names RAM frames it has typed or
        // owns, which the direct map covers, and indices below 512.
        unsafe { pte_ptr(mfn, index % 512).read_volatile() }
    }
    fn write_pte(&mut self, mfn: Mfn, index: usize, value: u64) {
        // SAFETY: as in `read_pte`; an aligned 8-byte store is atomic, so
        // the CPU's page walker never sees a torn entry.
        unsafe { pte_ptr(mfn, index % 512).write_volatile(value) }
    }
    fn write_pte_preserve_ad(&mut self, mfn: Mfn, index: usize, value: u64) -> u64 {
        const AD: u64 = (1 << 5) | (1 << 6);
        // SAFETY: as in `read_pte`; the entry is 8-byte aligned, and the CPU
        // sets A/D with locked operations, which the compare-exchange
        // below observes.
        let entry = unsafe { AtomicU64::from_ptr(pte_ptr(mfn, index % 512)) };
        let mut old = entry.load(Ordering::Relaxed);
        loop {
            let new = value | (old & AD);
            match entry.compare_exchange(old, new, Ordering::AcqRel, Ordering::Relaxed) {
                Ok(_) => return new,
                Err(seen) => old = seen,
            }
        }
    }
    fn clear_page(&mut self, mfn: Mfn) {
        // SAFETY: a RAM frame (as in `read_pte`), a whole page.
        unsafe { core::ptr::write_bytes(phys_to_virt(mfn.maddr()) as *mut u8, 0, PAGE_BYTES) }
    }
    fn copy_page(&mut self, dst: Mfn, src: Mfn) {
        // SAFETY: two RAM frames; the core never passes the same one twice.
        unsafe {
            core::ptr::copy(
                phys_to_virt(src.maddr()) as *const u8,
                phys_to_virt(dst.maddr()) as *mut u8,
                PAGE_BYTES,
            );
        }
    }
    fn cmpxchg_pte(&mut self, mfn: Mfn, index: usize, old: u64, new: u64) -> u64 {
        // SAFETY: as in `read_pte`: an aligned word of a RAM frame in the
        // direct map, which a guest may change at the same time (hence
        // the atomic).
        let word = unsafe { AtomicU64::from_ptr(pte_ptr(mfn, index % 512)) };
        match word.compare_exchange(old, new, Ordering::AcqRel, Ordering::Acquire) {
            Ok(seen) | Err(seen) => seen,
        }
    }
    fn and_pte(&mut self, mfn: Mfn, index: usize, mask: u64) {
        // SAFETY: as in `cmpxchg_pte`.
        let word = unsafe { AtomicU64::from_ptr(pte_ptr(mfn, index % 512)) };
        word.fetch_and(mask, Ordering::AcqRel);
    }
    fn copy_bytes(&mut self, dst: Mfn, dst_off: usize, src: Mfn, src_off: usize, len: usize) {
        let len = len
            .min(PAGE_BYTES - src_off.min(PAGE_BYTES))
            .min(PAGE_BYTES - dst_off.min(PAGE_BYTES));
        // SAFETY: both ranges lie within one RAM frame each (clamped
        // above); `copy` allows them to overlap (a copy within one frame).
        unsafe {
            core::ptr::copy(
                (phys_to_virt(src.maddr()) as *const u8).add(src_off),
                (phys_to_virt(dst.maddr()) as *mut u8).add(dst_off),
                len,
            );
        }
    }
}

impl MmMachine for ArchEnv<'_, '_> {
    fn frames(&mut self) -> &mut [FrameInfo] {
        let held = self.frames.get_or_insert_with(Held::table);
        held.table
            .as_deref_mut()
            .expect("the frame table exists before any domain runs")
    }
    fn set_cache_attr(&mut self, mfn: Mfn, attr: u8) -> Result<(), Errno> {
        let va = phys_to_virt(mfn.maddr());
        // SAFETY: the memory core names a RAM frame, which the direct map
        // covers, and the page starts at `va`.
        unsafe { cpu::flush_page_cache_lines(va) };
        let mut alloc = || {
            let frame = mem::alloc_frame()?;
            mem::DIRECT_MAP_TABLES.fetch_add(1, Ordering::Relaxed);
            Some(frame.maddr())
        };
        // SAFETY: hypercalls run in the hypervisor view, whose root this
        // is; the frame belongs to a guest, so no hypervisor code relies on
        // its direct-map attributes; new tables come from the allocator.
        let done = unsafe {
            paging::set_page_cache_bits(
                self.current.cpu.views.hv_root,
                va,
                crate::mm::pte::cache_attr_bits(attr),
                &mut alloc,
            )
        };
        if done { Ok(()) } else { Err(Errno::ENOMEM) }
    }
    fn alloc_frames(&mut self, order: u32, limit: u64) -> Option<Mfn> {
        let count = 1u64.checked_shl(order)?;
        let first = {
            let mut guard = mem::FRAMES.lock();
            let frames = guard.as_mut()?;
            // One frame: the allocator's rover finds it without scanning
            // the frames in use (a domain's creation populates its memory
            // a frame at a time; the scan from frame 0 made each one cost
            // more the more domains there were). Only if the rover's frame
            // lies above the limit does the scan look for a lower one.
            let rover = if count == 1 { frames.alloc() } else { None };
            let first = match rover {
                Some(one) if one.0 < limit => one,
                other => {
                    if let Some(one) = other {
                        let _ = frames.free(one);
                    }
                    frames.alloc_contiguous(count, count)?
                }
            };
            if first.0.saturating_add(count) > limit {
                for i in 0..count {
                    let _ = frames.free(Mfn(first.0 + i));
                }
                return None;
            }
            first
        };
        for i in 0..count {
            self.clear_page(Mfn(first.0 + i));
        }
        Some(first)
    }
    fn free_frame(&mut self, mfn: Mfn) {
        if let Some(frames) = mem::FRAMES.lock().as_mut()
            && let Err(e) = frames.free(mfn)
        {
            log::error!("frame {:#x} freed twice or never allocated: {e}", mfn.0);
        }
    }
    fn set_m2p(&mut self, mfn: Mfn, pfn: u64) {
        mem::set_m2p(mfn.0, pfn);
    }
    fn iomem_read_only(&self, mfn: Mfn) -> bool {
        super::percpu::READ_ONLY_MMIO
            .get()
            .is_some_and(|ro| ro.contains(mfn.0))
    }
    fn iomem_permitted(&self, dom: DomId, mfn: Mfn) -> bool {
        if dom != self.current.domain.id || !self.current.domain.iomem.contains(mfn.0) {
            return false;
        }
        let hypervisor_mmio = super::percpu::RESERVED_MMIO
            .get()
            .is_none_or(|reserved| reserved.contains(mfn.0));
        let below_limit = mfn.0 < (1u64 << (cpu::phys_bits() - 12));
        let device = match &self.frames {
            Some(held) => held
                .table
                .as_deref()
                .is_some_and(|t| is_device_frame(t, mfn)),
            None => mem::FRAME_TABLE
                .lock()
                .as_deref()
                .is_some_and(|t| is_device_frame(t, mfn)),
        };
        device && below_limit && !hypervisor_mmio
    }
    #[inline(always)]
    fn domain_mm(&mut self, dom: DomId) -> Option<&mut DomainMm> {
        if dom == self.current.domain.id {
            return Some(&mut self.current.domain.mm);
        }
        self.other_mm(dom)
    }
    /// The caller's and the held domains' counts go down at once; any
    /// other domain's slot is only tried (this CPU may hold a higher slot
    /// and the frame table), and when it is busy the page is owed
    /// (`DomainTable::owe_page`) and the CPU running the domain kicked,
    /// whose next look at its due work settles it.
    fn uncount_page(&mut self, dom: DomId) {
        let held = self.frames.as_mut().and_then(|held| {
            [
                held.other.as_mut().map(|(guard, _)| guard),
                held.second.as_mut(),
            ]
            .into_iter()
            .flatten()
            .find_map(|guard| guard.as_deref_mut().filter(|e| e.domain.id == dom))
        });
        let mm = if dom == self.current.domain.id {
            &mut self.current.domain.mm
        } else if let Some(entry) = held {
            &mut entry.domain.mm
        } else {
            let Some(table) = DOMAINS.get() else {
                return;
            };
            match table.slot(dom).and_then(|slot| slot.try_lock()) {
                Some(mut guard) => {
                    if let Some(entry) = guard.as_deref_mut() {
                        table.settle_pages(&mut entry.domain);
                        entry.domain.mm.tot_pages = entry.domain.mm.tot_pages.saturating_sub(1);
                    }
                }
                None => {
                    table.owe_page(dom);
                    let sent = percpu::kick_holder(dom, self.current.cpu.number);
                    self.current.vcpu.stats.add(Counter::Ipis, sent);
                }
            }
            return;
        };
        mm.tot_pages = mm.tot_pages.saturating_sub(1);
    }
    /// Both slots are locked here, the lower id first, each as
    /// `lock_other` does (a higher id than the caller's waited for, a
    /// lower one tried): the caller's slot, then the two in id order.
    fn hold_two(&mut self, a: DomId, b: DomId) -> bool {
        let own = self.current.domain.id;
        let (lo, hi) = if a.0 <= b.0 { (a, b) } else { (b, a) };
        if lo == hi || lo == own || hi == own {
            let other = if lo == own { hi } else { lo };
            return other == own || self.other_domain(other).is_some();
        }
        let held = self.frames.as_ref().map(|h| {
            let other = h.other.as_ref().map(|(guard, _)| guard);
            (held_id(other), held_id(h.second.as_ref()))
        });
        if held == Some((Some(lo), Some(hi))) || held == Some((Some(hi), Some(lo))) {
            return true;
        }
        let Some(table) = DOMAINS.get() else {
            return false;
        };
        let (Some(lo_slot), Some(hi_slot)) = (table.slot(lo), table.slot(hi)) else {
            return false;
        };
        let cpu = self.current.cpu.number;
        self.frames = None;
        let Some(lo_guard) = lock_other(lo_slot, own, lo, cpu) else {
            self.found_busy();
            return false;
        };
        let Some(hi_guard) = lock_other(hi_slot, own, hi, cpu) else {
            drop(lo_guard);
            self.found_busy();
            return false;
        };
        if hi_guard.is_none() {
            return false;
        }
        let Some(lo_held) = other_slot(lo_guard) else {
            return false;
        };
        self.frames = Some(Held {
            other: Some(lo_held),
            second: Some(hi_guard),
            table: mem::FRAME_TABLE.lock(),
        });
        true
    }
}

impl MmuEnv for ArchEnv<'_, '_> {
    fn vcpu_mm(&mut self) -> &mut VcpuMm {
        &mut self.current.vcpu.mm
    }
    fn shared_max_pfn(&mut self, dom: DomId) -> u64 {
        if dom != self.current.domain.id {
            return self.other_domain(dom).map_or(0, |entry| {
                guest::shared_max_pfn_at(entry.domain.shared_info)
            });
        }
        guest::shared_max_pfn(self.current)
    }
    fn m2p_frame(&mut self, entry: u64) -> Option<Mfn> {
        mem::m2p_frame(entry)
    }
}

/// How long a CPU holding one domain's slot spins for a lower id's slot
/// before the hypercall is continued instead ([`Env::slot_busy`]), ns:
/// long enough for a short entry of the holder to end, short beside the
/// round trip through the guest that the continuation costs.
const LOWER_SLOT_SPIN_NS: u64 = 20_000;

/// Locks `slot`, domain `id`'s, for the running domain `own`'s hypercall
/// on CPU `cpu`.
/// A higher id comes after the caller's in the lock order: it is waited
/// for (whoever holds it waits for no lower slot, so it finishes). A
/// lower one may be held by a CPU that waits for the caller's: it is
/// tried for [`LOWER_SLOT_SPIN_NS`] and then given up (`None`: the
/// hypercall is continued, [`Env::slot_busy`]; `docs/locking.md`).
fn lock_other(
    slot: &'static crate::domain::DomainSlot,
    own: DomId,
    id: DomId,
    cpu: u16,
) -> Option<MutexGuard<'static, Option<Box<DomainEntry>>>> {
    let mut guard = if id.0 > own.0 {
        slot.lock()
    } else {
        try_lower_slot(slot)?
    };
    if DomainTable::pages_owed_anywhere()
        && let (Some(table), Some(entry)) = (DOMAINS.get(), guard.as_deref_mut())
    {
        table.settle_pages(&mut entry.domain);
    }
    // A CPU running that domain looks at it again once the hypercall is
    // done with it (a pause, a destruction, a vCPU brought up or down);
    // when none does, an idle CPU looks whether it can run now (an
    // unpause, a wake-up).
    percpu::kick_for(id, cpu);
    Some(guard)
}

/// Tries `slot`, a lower id's than the caller's, for
/// [`LOWER_SLOT_SPIN_NS`].
fn try_lower_slot(
    slot: &'static crate::domain::DomainSlot,
) -> Option<MutexGuard<'static, Option<Box<DomainEntry>>>> {
    let mut until = None;
    loop {
        if let Some(guard) = slot.try_lock() {
            return Some(guard);
        }
        let now = time::now_ns();
        if now >= *until.get_or_insert(now.saturating_add(LOWER_SLOT_SPIN_NS)) {
            return None;
        }
        core::hint::spin_loop();
    }
}

/// Waits, holding no other domain's slot, until no CPU but `me` holds
/// domain `id`, kicking the one that does every [`RETRY_KICK_NS`].
fn wait_until_given_up(id: DomId, me: u16) {
    let mut kicked_at = None;
    while crate::sched::held_elsewhere(percpu::holdings(), id, me) {
        let now = time::now_ns();
        if kicked_at.is_none_or(|at: u64| now.saturating_sub(at) >= RETRY_KICK_NS) {
            percpu::kick_holder(id, me);
            kicked_at = Some(now);
        }
        core::hint::spin_loop();
    }
}

/// How often [`wait_until_given_up`] kicks the CPU it waits for, ns.
const RETRY_KICK_NS: u64 = 1_000_000;

/// The last domain id `createdomain` handed out (Xen's rover).
static DOMID_ROVER: AtomicU16 = AtomicU16::new(0);

impl ControlEnv for ArchEnv<'_, '_> {
    fn other_domain(&mut self, id: DomId) -> Option<&mut DomainEntry> {
        if id == self.current.domain.id {
            return None;
        }
        if self.held_other() != Some(id) {
            if self
                .frames
                .as_ref()
                .is_some_and(|held| held_id(held.second.as_ref()) == Some(id))
            {
                // Held together with the other one: no lock changes. The
                // other one's wake-ups are done before its bits go.
                self.wake_peer_kicked();
                let held = self.frames.as_mut()?;
                let other = other_slot(held.second.take()?)?;
                held.second = held.other.replace(other).map(|(guard, _)| guard);
            } else {
                self.lock_alone(id)?;
            }
        }
        self.frames.as_mut()?.other.as_mut()?.0.as_deref_mut()
    }
    fn event_channels_of(&mut self, other: DomId) -> Option<EventPair<'_>> {
        self.other_domain(other)?;
        let (guard, peer_bits) = self.frames.as_mut()?.other.as_mut()?;
        let entry = guard.as_deref_mut()?;
        let own_bits = self.events.get_or_insert(SharedInfoBits::new(
            self.current.domain.shared_info,
            self.current.domain.id,
            self.current.vcpu.id,
        ));
        Some(EventPair {
            own: &mut self.current.domain.evtchn,
            own_bits,
            peer_dying: entry.domain.dying,
            peer: &mut entry.domain.evtchn,
            peer_bits,
        })
    }
    fn first_domain_from(&mut self, from: DomId) -> Option<DomId> {
        // The table's bitmap counts the slots this environment holds too.
        DOMAINS.get()?.first_from(from, self.current.domain.id)
    }
    fn free_domain_id(&mut self) -> Option<DomId> {
        self.release_other();
        let table = DOMAINS.get()?;
        let id = table.free_id(
            DomId(DOMID_ROVER.load(Ordering::Relaxed)),
            self.current.domain.id,
        )?;
        DOMID_ROVER.store(id.0, Ordering::Relaxed);
        Some(id)
    }
    fn insert_domain(&mut self, entry: Box<DomainEntry>) -> Result<(), Box<DomainEntry>> {
        self.release_other();
        let Some(table) = DOMAINS.get() else {
            return Err(entry);
        };
        // Slots before the frame table.
        self.frames = None;
        // A new domain's vCPUs start with their `vcpu_info` in its page.
        super::evtchn::reset_moved_vcpu_info(entry.domain.id);
        table.try_insert(entry)
    }
    fn remove_domain(&mut self, id: DomId) -> Option<Box<DomainEntry>> {
        let me = self.current.cpu.number;
        let entry = self.other_domain(id)?;
        if let Some(cpu) = crate::sched::holder(percpu::holdings(), id, me) {
            // Another CPU runs it: it stops running for good, and that CPU
            // gives it up (`schedule::run_due`) before it is taken apart.
            log::info!("d{} runs on CPU {cpu}: stopping it first", id.0);
            entry.domain.pauses = entry.domain.pauses.saturating_add(1);
            self.frames = None;
            wait_until_given_up(id, me);
            self.other_domain(id)?;
        }
        let table = DOMAINS.get()?;
        let entry = table.take(&mut self.frames.as_mut()?.other.as_mut()?.0);
        self.release_other();
        entry
    }
    fn owe_dom_exc(&mut self) {
        super::schedule::DOM_EXC_OWED.store(true, Ordering::Release);
        percpu::kick_for(DomId::DOM0, self.current.cpu.number);
    }
    fn read_console(&mut self, req: LogRead, buffer: u64) -> Result<(u32, u32), Errno> {
        serial::read_log(req, |offset, piece| {
            let va = buffer.checked_add(u64::from(offset)).ok_or(Errno::EFAULT)?;
            guest_mem::copy_to_guest(va, piece)
        })
    }
    fn machine_info(&mut self) -> MachineInfo {
        let (free_pages, total_pages) = mem::frame_counts();
        MachineInfo {
            cpu_khz: u32::try_from(super::time::tsc_hz() / 1000).unwrap_or(u32::MAX),
            total_pages,
            free_pages,
            phys_bits: super::cpuid::phys_bits(),
            heap_used: mem::heap_used(),
        }
    }
    fn idle_ns(&mut self, cpu: usize) -> u64 {
        match self.host().pcpus.get(cpu) {
            Some(pcpu) if pcpu.online => {
                percpu::by_apic_id(pcpu.apic_id).map_or(0, percpu::CpuSlot::idle_ns)
            }
            _ => 0,
        }
    }
}

impl Env for ArchEnv<'_, '_> {
    fn copy_from_guest(&mut self, va: u64, buf: &mut [u8]) -> Result<(), Errno> {
        guest_mem::copy_from_guest(va, buf)
    }
    fn copy_to_guest(&mut self, va: u64, buf: &[u8]) -> Result<(), Errno> {
        guest_mem::copy_to_guest(va, buf)
    }
    fn console_write(&mut self, bytes: &[u8]) {
        serial::write_bytes(bytes);
    }
    fn console_read(&mut self, count: u32, buffer: u64) -> Result<u32, Errno> {
        // Whatever the UART holds now comes in first, so that input works
        // without its interrupt; the domain hears of it (VIRQ_CONSOLE) as
        // if the interrupt had taken it.
        let received = serial::receive() > 0;
        let read = serial::read_input(count, |offset, piece| {
            let va = buffer.checked_add(u64::from(offset)).ok_or(Errno::EFAULT)?;
            guest_mem::copy_to_guest(va, piece)
        });
        if received {
            super::schedule::run_due(self.current);
        }
        read
    }
    fn domain(&mut self) -> &mut Domain {
        self.current.domain
    }
    fn irq_lines<R>(&mut self, f: impl FnOnce(&mut Lines) -> (R, Option<Program>)) -> R {
        super::pirq::with_lines(f)
    }
    fn host(&self) -> &HostInfo {
        super::percpu::HOST
            .get()
            .expect("the host facts are set before any domain runs")
    }
    fn vcpu(&mut self) -> &mut Vcpu {
        self.current.vcpu
    }
    fn sync_segment_bases(&mut self) {
        super::context::sync_bases(self.current.vcpu);
    }
    type Bits = SharedInfoBits;
    fn event_channels(&mut self) -> (&mut EventChannels, &mut SharedInfoBits) {
        // Made once per hypercall: a send asks twice.
        let bits = self.events.get_or_insert_with(|| {
            SharedInfoBits::new(
                self.current.domain.shared_info,
                self.current.domain.id,
                self.current.vcpu.id,
            )
        });
        (&mut self.current.domain.evtchn, bits)
    }
    fn nmi_reason(&mut self) -> u64 {
        guest::shared_nmi_reason(self.current)
    }
    fn vcpu_by_id(&mut self, id: u32) -> Option<&mut Vcpu> {
        self.current.vcpu_by_id(id)
    }
    fn move_vcpu_info(&mut self, vcpu: u32, maddr: u64) {
        let dom = self.current.domain.id;
        let Some(v) = self.current.vcpu_by_id(vcpu) else {
            return;
        };
        let (from, to) = (phys_to_virt(v.vcpu_info), phys_to_virt(maddr));
        let size = size_of::<VcpuInfo>();
        // SAFETY: the old place is the vCPU's slot in its domain's
        // shared_info page, the new one 64 bytes of a frame of the domain
        // (8-aligned, inside the frame) the caller holds writable; both
        // are in the direct map and are different frames. The guest may
        // change either meanwhile; the copy is of plain bytes.
        unsafe { core::ptr::copy_nonoverlapping(from as *const u8, to as *mut u8, size) };
        // SAFETY: the same new place; the two fields are naturally
        // aligned and the guest changes them only atomically.
        unsafe {
            AtomicU64::from_ptr((to + offset_of!(VcpuInfo, evtchn_pending_sel) as u64) as *mut u64)
                .store(u64::MAX, Ordering::SeqCst);
            AtomicU8::from_ptr(
                (to + offset_of!(VcpuInfo, evtchn_upcall_pending) as u64) as *mut u8,
            )
            .store(1, Ordering::SeqCst);
        }
        v.vcpu_info = maddr;
        // The fast path reads the upcall bytes where the lane says.
        crate::fastpath::note_work(v.on_cpu);
        super::evtchn::set_moved_vcpu_info(dom, vcpu, maddr);
        time::publish(maddr);
    }
    fn reschedule(&mut self) {
        self.current.cpu.resched = true;
    }
    fn now_ns(&self) -> u64 {
        time::now_ns()
    }
    /// The caller's own page is written through its domain (its slot is
    /// locked for the entry); every domain with a higher id through its
    /// slot, locked alone and in id order (`docs/locking.md`). Domains
    /// with lower ids are not reached, as their slots cannot be locked
    /// while the caller's is held; there are none, since `privilege`
    /// exists only in the initial domain, domain 0.
    fn set_wallclock(&mut self, _privilege: Privilege, wallclock: Wallclock) {
        time::set_wallclock(wallclock);
        time::publish_wallclock(self.current.domain.shared_info);
        if let Some(table) = DOMAINS.get() {
            table.for_each_above(self.current.domain.id, |entry| {
                time::publish_wallclock(entry.domain.shared_info);
            });
        }
    }
    #[inline(always)]
    fn wake_kicked(&mut self) {
        if let Some(bits) = &mut self.events {
            let kicked = bits.take_kicked();
            if kicked != 0 {
                super::schedule::note_kicks(self.current, kicked);
            } else if !(self.current.others.0.is_empty() && self.current.others.1.is_empty()) {
                super::schedule::wake_pollers(self.current, bits);
            }
        }
        if self
            .frames
            .as_ref()
            .is_some_and(|held| held.other.is_some())
        {
            self.wake_peer_kicked();
        }
    }
    fn timers_changed(&mut self) {
        super::schedule::run_due(self.current);
    }
    fn preempt(&mut self, args: [u64; 5]) {
        self.preempted = Some(args);
        self.slot_busy = false;
    }
    fn take_preempted(&mut self) -> Option<[u64; 5]> {
        self.preempted.take()
    }
    fn slot_busy(&self) -> bool {
        self.slot_busy
    }
    fn clear_slot_busy(&mut self) {
        self.slot_busy = false;
    }
    fn iret(&mut self) -> Result<u64, Errno> {
        guest::iret(self.current, self.regs);
        self.replaced_context = true;
        Ok(self.regs.rax)
    }
    fn stats(&self) -> Stats {
        let mut stats = self.current.vcpu.stats.clone();
        // With the calls the fast path answered since the vCPU came here.
        super::fastpath::this_lane().add_counts(&mut stats);
        stats
    }
    fn apply_effects(&mut self, fx: &Effects) {
        if fx.ldt_changed {
            let mut more = Effects::default();
            release_ldt(self, &mut more);
            trampoline::load_ldt(
                &self.current.cpu.views,
                u64::from(self.current.vcpu.mm.ldt_ents),
            );
            apply_effects(self.current, &more);
        }
        apply_effects(self.current, fx);
    }
}

/// Gives back every page mapped in this CPU's LDT window (the LDT changed,
/// or the domain goes away).
pub fn release_ldt(env: &mut ArchEnv<'_, '_>, fx: &mut Effects) {
    for page in 0..env.current.cpu.ldt_pages.len() {
        let mfn = core::mem::take(&mut env.current.cpu.ldt_pages[page]);
        if mfn != 0 {
            trampoline::set_ldt_page(&env.current.cpu.views, page as u64, None);
            desc::release_ldt_page(env, fx, Mfn(mfn));
        }
    }
}

/// The CPU touched page `page` of the LDT window: claim the guest's page
/// there and map it, unless it is mapped already (it is claimed once,
/// however often it faults). Returns whether the page is mapped now (the
/// instruction is retried); if not, the guest gets the page fault.
pub fn fault_in_ldt_page(env: &mut ArchEnv<'_, '_>, page: u64) -> bool {
    let (base, entries) = (
        env.current.vcpu.mm.ldt_base,
        u64::from(env.current.vcpu.mm.ldt_ents),
    );
    if page * PAGE_SIZE >= entries * 8 {
        return false;
    }
    let Some(&mapped) = usize::try_from(page)
        .ok()
        .and_then(|i| env.current.cpu.ldt_pages.get(i))
    else {
        return false;
    };
    if mapped != 0 {
        // Already claimed: claiming again would take a second reference.
        return true;
    }
    let mut fx = Effects::default();
    let Some(mfn) = desc::take_ldt_page(env, &mut fx, base + page * PAGE_SIZE) else {
        return false;
    };
    if let Some(slot) = usize::try_from(page)
        .ok()
        .and_then(|i| env.current.cpu.ldt_pages.get_mut(i))
    {
        *slot = mfn.0;
    }
    trampoline::set_ldt_page(&env.current.cpu.views, page, Some(mfn.0));
    apply_effects(env.current, &fx);
    true
}

/// Carries out what a batch of memory operations left to do: resync this
/// CPU's views, flush TLBs (a flush of the domain here and, waited for, on
/// every other CPU of its set: `percpu::flush_elsewhere`), write back
/// caches, crash the domain. The guest view's TLB entries
/// (PCID 1) are dropped by the CR3 load on the way out anyway; the flushes
/// here are for the hypervisor view (PCID 0), which the hypervisor itself
/// uses to reach guest memory.
pub fn apply_effects(current: &mut Current, fx: &Effects) {
    if fx.root_sync.local
        && let Some(l4) = current.vcpu.mm.kernel_l4
    {
        super::builder::install_guest_l4(&current.cpu.views, l4.maddr());
        current.cpu.l4_installed = [u64::MAX; 8];
        // The `SYSCALL` lane walks the kernel's tables from the root the
        // vCPU published: a new one is taken afresh.
        super::fastpath::this_lane().note_root(l4);
    }
    // By reference: a copy of both flushes cost every call two
    // `TlbFlush` moves.
    for flush in [&fx.flush.local, &fx.flush.domain] {
        match *flush {
            TlbFlush::None => {}
            TlbFlush::Pages { count, ref va } => {
                for &address in &va[..usize::from(count)] {
                    cpu::invlpg(address);
                }
                current.vcpu.stats.add(Counter::Invlpgs, u64::from(count));
            }
            TlbFlush::Full => {
                // Global entries too: guest L1 entries may carry G.
                cpu::flush_tlb_all();
                current.vcpu.stats.add(Counter::TlbFlushes, 1);
            }
        }
    }
    if !fx.flush.domain.is_none() {
        // The other CPUs whose TLB may hold the domain's translations
        // flush everything (a remote flush carries no address list), and
        // the hypercall returns only after they did.
        let sent = percpu::flush_elsewhere(current.domain.id, current.cpu.number);
        if sent != 0 {
            current.vcpu.stats.add(Counter::Ipis, sent);
        }
    }
    if fx.cache != CacheFlush::None {
        cpu::wbinvd();
    }
    if fx.crash {
        crash(
            current,
            format_args!("a memory operation left the domain inconsistent"),
        );
    }
}
