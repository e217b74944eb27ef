//! What belongs to one physical CPU, and the few facts that belong to the
//! whole machine.
//!
//! Ownership (see `docs/state.md`): a [`PerCpu`] is its CPU's alone, made
//! once at boot (the boot CPU's when dom0 is built, another's when it
//! starts) and never freed; it names the vCPU running there by domain and
//! vCPU id, and never holds a reference into a domain. Domains and their
//! vCPUs live in [`crate::domain::DOMAINS`].
//!
//! Every CPU's state sits in one [`CpuSlot`] of [`CPUS`], indexed by the
//! CPU's number; the trampoline's data page of each CPU holds the address
//! of that CPU's slot, so [`this_cpu`] is one load from a fixed address.
//! Besides the locked [`PerCpu`], a slot holds what other CPUs read
//! without a lock: the CPU's APIC id (to send it IPIs), how many
//! event-check IPIs it took, and its TLB flush requests (`crate::tlb`).
extern crate alloc;

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use dom0_abi::types::DomId;
use spin::{Mutex, MutexGuard, Once};

use crate::domain::{DomainSlot, DomainTable};
use crate::hypercall::HostInfo;
use crate::iomem::{Mmcfg, ReservedMmio};
use crate::layout::trampoline::{DATA, LDT_PAGE_COUNT, data};
use crate::sched::Slice;
use crate::smp::MAX_CPUS;
use crate::tlb::{self, Mailbox, Residency};

use super::cpu;
use super::trampoline::CpuViews;

/// The vCPU a CPU runs: its domain's slot in the domain table (found once,
/// when it starts running here, so an entry need not look it up) and its
/// index there.
#[derive(Debug, Clone, Copy)]
pub struct Running {
    /// The domain's id.
    pub domain: DomId,
    /// The domain's slot.
    pub slot: &'static DomainSlot,
    /// The vCPU's id, its index in the domain's vCPU list.
    pub vcpu: usize,
}

/// One physical CPU's state.
#[derive(Debug)]
pub struct PerCpu {
    /// Its number (its index in `CPUS`; 0 is the boot CPU).
    pub number: u16,
    /// Its two root tables.
    pub views: CpuViews,
    /// The guest slots its views may hold non-zero (bit `s % 64` of word
    /// `s / 64`: slot `s`); all of them unless a switch between vCPUs
    /// copied a known set (`builder::switch_guest_l4`).
    pub l4_installed: [u64; 8],
    /// How many leading pages of its GDT window may map something other
    /// than the zero page (`trampoline::load_guest_gdt`).
    pub gdt_mapped: u64,
    /// Frames mapped in its LDT window, by page (0: not mapped). They
    /// belong to the running vCPU's LDT and are released when it changes
    /// or the vCPU is switched out.
    pub ldt_pages: [u64; LDT_PAGE_COUNT],
    /// The vCPU running here.
    pub running: Option<Running>,
    /// Another vCPU should run before this entry returns (set by a
    /// hypercall that yields, blocks or takes its own vCPU down, and when
    /// a sleeping vCPU wakes or a time slice ends).
    pub resched: bool,
    /// The running vCPU's time slice (given by the scheduler when another
    /// vCPU waits, or its domain is capped).
    pub slice: Slice,
}

impl PerCpu {
    /// A CPU that is not set up to run guests: no views, nothing running
    /// (an entry on it finds no running vCPU).
    const DOWN: PerCpu = PerCpu::new(
        u16::MAX,
        CpuViews {
            hv_root: 0,
            guest_cr3: 0,
            guest_root: 0,
            gdt_zero: 0,
        },
    );

    /// CPU `number` with its views and nothing running.
    pub const fn new(number: u16, views: CpuViews) -> PerCpu {
        PerCpu {
            number,
            views,
            l4_installed: [u64::MAX; 8],
            gdt_mapped: u64::MAX,
            ldt_pages: [0; LDT_PAGE_COUNT],
            running: None,
            resched: false,
            slice: Slice::None,
        }
    }
}

/// One CPU's slot: its state, and what other CPUs read without a lock.
#[derive(Debug)]
pub struct CpuSlot {
    /// What runs on the CPU (`PerCpu::DOWN` until the CPU is set up);
    /// locked by the CPU itself on every entry.
    pub state: Mutex<PerCpu>,
    /// The CPU's local APIC id (`u32::MAX` until it is up).
    apic_id: AtomicU32,
    /// Event-check IPIs the CPU has taken.
    event_checks: AtomicU64,
    /// The TSC deadline its local APIC timer is armed for (0: disarmed).
    armed: AtomicU64,
    /// The domain whose vCPUs it runs or idles with, plus one (0: none;
    /// the CPU waits in its own idle loop). Changed only by the CPU itself
    /// under the scheduler's lock (`traps::RUNQUEUE`), so that no two CPUs
    /// hold one domain (`docs/scheduler.md`); read by any CPU without a
    /// lock, to find where to send a kick.
    holding: AtomicU32,
    /// The time it spent halted with nothing to run, ns (`sysctl
    /// getcpuinfo`).
    idle_ns: AtomicU64,
    /// An event-check IPI came: the CPU chooses again at its next
    /// `run_due` (another CPU woke or unpaused a vCPU it may run).
    choose_again: AtomicBool,
    /// The domain whose vCPU it loaded last, until a full flush away from
    /// it: the domain's set of CPUs (`DomainTable::dirty_cpus`) names
    /// this CPU meanwhile. Changed only by the CPU itself.
    tlb_of: Residency,
    /// Full flushes other CPUs asked of it.
    flush: Mailbox,
}

impl CpuSlot {
    /// A slot of a CPU that is not up.
    const fn down() -> CpuSlot {
        CpuSlot {
            state: Mutex::new(PerCpu::DOWN),
            apic_id: AtomicU32::new(u32::MAX),
            event_checks: AtomicU64::new(0),
            armed: AtomicU64::new(0),
            holding: AtomicU32::new(0),
            idle_ns: AtomicU64::new(0),
            choose_again: AtomicBool::new(false),
            tlb_of: Residency::new(),
            flush: Mailbox::new(),
        }
    }

    /// Asks the CPU to choose again (its own event-check handler).
    pub fn ask_to_choose_again(&self) {
        self.choose_again.store(true, Ordering::Relaxed);
    }

    /// Whether the CPU was asked to choose again; clears the request.
    pub fn take_choose_again(&self) -> bool {
        self.choose_again.load(Ordering::Relaxed)
            && self.choose_again.swap(false, Ordering::Relaxed)
    }

    /// Adds `ns` to the CPU's idle time.
    pub fn count_idle(&self, ns: u64) {
        self.idle_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// The CPU's idle time so far, ns.
    pub fn idle_ns(&self) -> u64 {
        self.idle_ns.load(Ordering::Relaxed)
    }

    /// The domain this CPU holds (runs or idles with), if any.
    pub fn holding(&self) -> Option<DomId> {
        let held = self.holding.load(Ordering::SeqCst);
        u16::try_from(held.checked_sub(1)?).ok().map(DomId)
    }

    /// Records that this CPU now holds `domain` (`None`: it idles in its
    /// own loop). Only under the scheduler's lock.
    pub fn set_holding(&self, domain: Option<DomId>) {
        let held = domain.map_or(0, |d| u32::from(d.0) + 1);
        self.holding.store(held, Ordering::SeqCst);
    }

    /// Records the CPU's APIC id (set by the CPU itself once it is up).
    pub fn set_apic_id(&self, id: u32) {
        self.apic_id.store(id, Ordering::Release);
    }

    /// The CPU's APIC id, if it is up.
    pub fn apic_id(&self) -> Option<u32> {
        Some(self.apic_id.load(Ordering::Acquire)).filter(|&id| id != u32::MAX)
    }

    /// Counts an event-check IPI taken by this CPU.
    pub fn note_event_check(&self) {
        self.event_checks.fetch_add(1, Ordering::AcqRel);
    }

    /// Records the TSC deadline the CPU's timer is now armed for (0:
    /// disarmed); returns the one it had. Only the CPU itself arms its
    /// timer.
    pub fn swap_armed(&self, deadline: u64) -> u64 {
        self.armed.swap(deadline, Ordering::Relaxed)
    }

    /// Whether the CPU's timer is armed.
    pub fn timer_armed(&self) -> bool {
        self.armed.load(Ordering::Relaxed) != 0
    }

    /// How many event-check IPIs the CPU has taken.
    pub fn event_checks(&self) -> u64 {
        self.event_checks.load(Ordering::Acquire)
    }

    /// Asks the CPU for a full flush and sends it a flush IPI, if it is
    /// up; returns the request's ticket (`tlb::Mailbox::ask`).
    pub fn ask_flush(&self) -> Option<u64> {
        let id = self.apic_id()?;
        let ticket = self.flush.ask();
        super::apic::send_flush(id);
        Some(ticket)
    }

    /// Whether the CPU answered the flush request with `ticket`.
    pub fn flush_answered(&self, ticket: u64) -> bool {
        self.flush.answered(ticket)
    }
}

/// Every CPU's slot, by CPU number (0 is the boot CPU). Each CPU locks
/// only its own `state`; other CPUs read a slot's atomics
/// (`docs/locking.md`).
static CPUS: [CpuSlot; MAX_CPUS] = [const { CpuSlot::down() }; MAX_CPUS];

/// The address of CPU `cpu`'s slot, which its trampoline's data page
/// holds at `data::PERCPU`. CPU numbers stop below [`MAX_CPUS`]
/// (`smp::start_cpus`); a larger one is a bug in the boot code.
pub fn slot_address(cpu: u64) -> u64 {
    let slot = usize::try_from(cpu).ok().and_then(|cpu| CPUS.get(cpu));
    let Some(slot) = slot else {
        panic!("CPU number {cpu} is not below {MAX_CPUS}")
    };
    core::ptr::from_ref(slot) as u64
}

/// CPU `cpu`'s slot (for another CPU: its APIC id, its IPI count).
pub fn cpu(cpu: usize) -> Option<&'static CpuSlot> {
    CPUS.get(cpu)
}

/// The slot of the CPU that is up with local APIC id `apic_id`.
pub fn by_apic_id(apic_id: u32) -> Option<&'static CpuSlot> {
    CPUS.iter().find(|slot| slot.apic_id() == Some(apic_id))
}

/// Sends an event-check IPI to every CPU of `cpus` (bit `c`: CPU `c`)
/// that is up; returns how many were sent (for `Counter::Ipis`).
#[cold]
pub fn send_event_checks(cpus: u64) -> u64 {
    let mut sent = 0;
    for c in crate::sched::kicked_ids(cpus) {
        let slot = usize::try_from(c).ok().and_then(cpu);
        if let Some(id) = slot.and_then(CpuSlot::apic_id) {
            super::apic::send_event_check(id);
            sent += 1;
        }
    }
    sent
}

/// One more than the highest CPU number that is up (`smp::start_cpus`):
/// the searches below look at no slot past it (1 while only the boot CPU
/// runs, so they stop at once).
static SLOTS_UP: AtomicUsize = AtomicUsize::new(1);

/// Records that CPU `index` is up.
pub fn note_other_cpu_up(index: usize) {
    SLOTS_UP.fetch_max(index.saturating_add(1).min(MAX_CPUS), Ordering::Release);
}

/// What every CPU that is up holds (index: CPU number), for the
/// scheduler's pure decisions (`sched::held_elsewhere`); only the boot
/// CPU's while it is the only one up.
pub fn holdings() -> impl Iterator<Item = Option<Option<DomId>>> {
    CPUS.iter()
        .take(SLOTS_UP.load(Ordering::Acquire))
        .map(|slot| slot.apic_id().map(|_| slot.holding()))
}

/// Sends an event-check IPI to the CPU other than `me` that holds domain
/// `domain`, if one does; returns how many were sent.
#[cold]
pub fn kick_holder(domain: DomId, me: u16) -> u64 {
    match crate::sched::holder(holdings(), domain, me) {
        Some(cpu) => send_event_checks(1u64.checked_shl(cpu).unwrap_or(0)),
        None => 0,
    }
}

/// Kicks the CPU that should look at domain `domain` after CPU `me`
/// changed it (woke a vCPU, unpaused it, made it stop): the CPU holding
/// it, else for dom0 the boot CPU (the only one that runs it), else one
/// idle CPU. Returns how many IPIs were sent.
#[cold]
pub fn kick_for(domain: DomId, me: u16) -> u64 {
    match kick_holder(domain, me) {
        0 if domain == DomId::DOM0 => match me {
            0 => 0,
            _ => send_event_checks(1),
        },
        0 => kick_idle_cpu(me),
        sent => sent,
    }
}

/// Sends an event-check IPI to one CPU other than `me` that idles in its
/// own loop (it then looks for a vCPU to run), if one does; returns how
/// many were sent.
#[cold]
pub fn kick_idle_cpu(me: u16) -> u64 {
    match crate::sched::idle_cpu(holdings(), me) {
        Some(cpu) => send_event_checks(1u64.checked_shl(cpu).unwrap_or(0)),
        None => 0,
    }
}

/// Records that CPU `me` loaded a vCPU of `domain` after a full flush
/// (`tlb::Residency::loaded`).
pub fn note_loaded(domain: DomId, me: u16) {
    this_cpu()
        .tlb_of
        .loaded(domain, me, DomainTable::dirty_cpus);
}

/// Answers the flush requests other CPUs left for this one, if any: one
/// full flush for all of them; then, unless the CPU holds the domain it
/// loaded last, it leaves that domain's set (`tlb::Residency::flushed`).
/// Takes no lock: it runs from the flush IPI's handler (also while the
/// CPU waits in `hlt` holding its own state) and from every wait of a CPU
/// that may be asked for a flush meanwhile ([`lock_answering`],
/// [`flush_elsewhere`]).
pub fn answer_flush() {
    let slot = this_cpu();
    let Some(ticket) = slot.flush.pending() else {
        return;
    };
    cpu::flush_tlb_all();
    slot.tlb_of
        .flushed(slot.holding(), cpu_number(slot), DomainTable::dirty_cpus);
    slot.flush.answer(ticket);
}

/// The number of the CPU whose slot `slot` is (its index in `CPUS`).
fn cpu_number(slot: &'static CpuSlot) -> u16 {
    let offset = (core::ptr::from_ref(slot) as usize).wrapping_sub(CPUS.as_ptr() as usize);
    u16::try_from(offset / core::mem::size_of::<CpuSlot>()).unwrap_or(u16::MAX)
}

/// Asks every CPU but `me` of domain `domain`'s set for a full flush (one
/// flush IPI each) and waits until each answered or left the set
/// (`tlb::settled`), answering this CPU's own requests meanwhile. The
/// caller flushed its own TLB. Returns how many IPIs were sent.
#[cold]
pub fn flush_elsewhere(domain: DomId, me: u16) -> u64 {
    let Some(set) = DomainTable::dirty_cpus(domain) else {
        return 0;
    };
    let targets = set.others(me);
    if targets == 0 {
        return 0;
    }
    // Each target's ticket (0: not asked, the CPU is not up).
    let mut tickets = [0u64; MAX_CPUS];
    let mut sent = 0;
    for c in crate::sched::kicked_ids(targets) {
        let (Some(slot), Some(ticket)) = (cpu(c as usize), tickets.get_mut(c as usize)) else {
            continue;
        };
        if let Some(asked) = slot.ask_flush() {
            *ticket = asked;
            sent += 1;
        }
    }
    for c in crate::sched::kicked_ids(targets) {
        let (Some(slot), Some(&ticket)) = (cpu(c as usize), tickets.get(c as usize)) else {
            continue;
        };
        if ticket == 0 {
            continue;
        }
        let target = u16::try_from(c).unwrap_or(u16::MAX);
        while !tlb::settled(slot.flush_answered(ticket), set.contains(target)) {
            answer_flush();
            core::hint::spin_loop();
        }
    }
    sent
}

/// Locks `lock`, answering this CPU's flush requests while it waits: a
/// CPU that may be in a domain's set of CPUs must not wait, with
/// interrupts off, for a lock whose holder may wait for its flush
/// (`docs/locking.md`).
pub fn lock_answering<T>(lock: &'static Mutex<T>) -> MutexGuard<'static, T> {
    loop {
        if let Some(guard) = lock.try_lock() {
            return guard;
        }
        answer_flush();
        core::hint::spin_loop();
    }
}

/// This CPU's slot: the one its trampoline's data page names.
#[inline(always)]
pub fn this_cpu() -> &'static CpuSlot {
    // SAFETY: every CPU runs the hypervisor on a root that maps its own
    // trampoline (`trampoline::load` comes before any use), whose data
    // page holds at `data::PERCPU` the address of one element of the
    // static `CPUS` (`slot_address`, written when the trampoline was
    // built and never after); the element lives for the whole run.
    unsafe { &*core::ptr::read((DATA + data::PERCPU) as *const *const CpuSlot) }
}

/// Facts about this boot that guests may ask for; set once, before dom0
/// is built.
pub static HOST: Once<HostInfo> = Once::new();

/// The machine address ranges no domain may map, even with I/O rights
/// (set once at boot, before dom0 is built).
pub static RESERVED_MMIO: Once<ReservedMmio> = Once::new();
/// Device memory domains with I/O rights map read-only only (the HPET),
/// set once at boot.
pub static READ_ONLY_MMIO: Once<ReservedMmio> = Once::new();
/// The MMCFG regions the direct map covers, through which the hardware
/// domain's stores to its read-only MMCFG mappings are performed (set once
/// at boot).
pub static MMCFG: Once<Vec<Mmcfg>> = Once::new();

/// Free frames just before dom0 was built: its teardown must give every
/// one back.
pub static FREE_BEFORE_DOM0: Once<u64> = Once::new();

/// `test_nonce=` from the command line: the test harness's per-boot
/// number, echoed in the teardown line so that a guest cannot forge it.
pub static TEST_NONCE: Once<u64> = Once::new();
