//! What happens after an entry stub: hypercalls, guest exceptions, and
//! exceptions in the hypervisor itself.
use core::fmt::Write;

use dom0_abi::event_channel::Virq;
use dom0_abi::hypercall::{HYPERCALL_VECTOR, Hypercall};
use dom0_abi::mmu::VmAssistType;
use dom0_abi::sched::ShutdownReason;
use dom0_abi::types::DomId;
use spin::{Mutex, MutexGuard};

extern crate alloc;

use alloc::boxed::Box;
use dom0_abi::stats::Counter;

use dom0_abi::vcpu::{RUNSTATE_BLOCKED, RUNSTATE_OFFLINE, RUNSTATE_RUNNABLE, RUNSTATE_RUNNING};

use crate::domain::{DOMAINS, Domain, DomainEntry, RunState};
use crate::exit::HostExit;
use crate::hypercall::dispatch::dispatch;
use crate::index;
use crate::layout::{DIRECTMAP_VIRT_START, HYPERVISOR_TEXT_START};
use crate::logfilter::GUEST;
use crate::mm::effects::Effects;
use crate::mm::types::{L4Slots, l4_generation};

use crate::sched::credit::{Charging, Runqueue};
use crate::sched::{self, Next, Slice};
use crate::smp::MAX_CPUS;
use crate::stats::Stats;
use crate::vcpu::Vcpu;

use super::entry::{GuestRegs, exit_to_guest};
use super::env::ArchEnv;
use super::evtchn::SharedInfoBits;
use super::fastpath::this_lane;
use super::percpu::{self, FREE_BEFORE_DOM0, PerCpu, Running, TEST_NONCE, this_cpu};
use super::{
    context, cpu, guest, guest_mem, machine, mem, paging, schedule, serial, time, trampoline,
};
use crate::evtchn::EventBits;

/// Page-fault vector.
pub const PF_VECTOR: u64 = 14;
/// Debug-exception vector.
const DB_VECTOR: u64 = 1;
/// NMI and machine-check vectors.
const NMI_VECTOR: u64 = 2;
const MC_VECTOR: u64 = 18;
/// Segment-not-present, stack-fault and general-protection vectors.
const NP_VECTOR: u64 = 11;
const SS_VECTOR: u64 = 12;
const GP_VECTOR: u64 = 13;

/// What one entry from a guest works on: the running vCPU, its domain and
/// this physical CPU, borrowed for the entry (the domain's slot is locked
/// meanwhile; see `docs/locking.md`).
pub struct Current<'a> {
    /// The running domain.
    pub domain: &'a mut Domain,
    /// The running vCPU.
    pub vcpu: &'a mut Vcpu,
    /// The domain's other vCPUs: those with lower ids, then higher.
    pub others: (&'a mut [Vcpu], &'a mut [Vcpu]),
    /// This physical CPU.
    pub cpu: &'a mut PerCpu,
}

impl<'a> Current<'a> {
    /// The view of `entry` with its vCPU `index` running on `cpu`; `None`
    /// if the domain has no such vCPU.
    pub fn of(entry: &'a mut DomainEntry, index: usize, cpu: &'a mut PerCpu) -> Option<Self> {
        let (before, rest) = entry.vcpus.split_at_mut(index);
        let (vcpu, after) = rest.split_first_mut()?;
        Some(Current {
            domain: &mut entry.domain,
            vcpu,
            others: (before, after),
            cpu,
        })
    }

    /// vCPU `id` of the running domain, the running one included.
    pub fn vcpu_by_id(&mut self, id: u32) -> Option<&mut Vcpu> {
        let me = self.vcpu.id;
        match id.cmp(&me) {
            core::cmp::Ordering::Equal => Some(&mut *self.vcpu),
            core::cmp::Ordering::Less => index::get_mut(self.others.0, u64::from(id)),
            core::cmp::Ordering::Greater => index::get_mut(self.others.1, u64::from(id - me - 1)),
        }
    }
}

/// Starts running the guest context `regs` (the running vCPU's first),
/// which must sit at the top of this CPU's hypervisor stack (or be the
/// caller's, for a CPU's first vCPU). A domU that turns out to have shut
/// down meanwhile is reported and another vCPU chosen, as at the end of
/// an entry.
pub fn run_guest(regs: &mut GuestRegs) -> ! {
    {
        let mut cpu_guard = this_cpu().state.lock();
        let cpu = &mut *cpu_guard;
        let Some(Running { domain, slot, vcpu }) = cpu.running else {
            panic!("starting a guest while no vCPU runs")
        };
        if this_cpu().holding() != Some(domain) {
            let _rq = RUNQUEUE.lock();
            this_cpu().set_holding(Some(domain));
            // The boot CPU's first vCPU, whose tables the builder loaded.
            percpu::note_loaded(domain, cpu.number);
        }
        let mut entry_guard = percpu::lock_answering(slot);
        let Some(entry) = entry_guard.as_deref_mut() else {
            panic!("the running domain d{} is not in its slot", domain.0)
        };
        let shut_down = Current::of(entry, vcpu, cpu).and_then(|mut c| {
            schedule::run_due(&mut c);
            prepare_exit(&mut c, regs)
        });
        if let Some(reason) = shut_down {
            if domain == DomId::DOM0 {
                dom0_shut_down(cpu, entry, reason);
            }
            reschedule(cpu, entry_guard, vcpu, regs, shut_down);
        }
    }
    // SAFETY: `regs` is the frame at the top of this CPU's hypervisor stack
    // (the caller's contract) and `prepare_exit` made it a context the
    // exit `iretq` loads without faulting.
    unsafe { exit_to_guest(regs) }
}

/// The last steps before any exit of `current`: the context must be one
/// the CPU can load (otherwise the guest gets the fault, or the domain is
/// crashed), pending CPU state is applied and RFLAGS made safe. Returns the
/// domain's shutdown reason if it has shut down (it is then torn down
/// instead of resumed).
fn prepare_exit(current: &mut Current, regs: &mut GuestRegs) -> Option<u8> {
    guest::check_exit(current, regs);
    if let RunState::ShutDown(reason) = current.domain.state {
        return Some(reason);
    }
    guest::apply_pending(current);
    sanitize_rflags(regs);
    None
}

/// Entry from a guest: every vector lands here on the hypervisor stack.
/// Inlined into `entry::guest_entry`, its only caller, which would
/// otherwise be one more call per entry.
#[inline(always)]
pub fn from_guest(regs: &mut GuestRegs) -> ! {
    {
        let mut cpu_guard = this_cpu().state.lock();
        let cpu = &mut *cpu_guard;
        let Some(Running {
            domain,
            slot,
            vcpu: index,
        }) = cpu.running
        else {
            panic!("entry from a guest while no vCPU runs")
        };
        let mut entry_guard = slot.lock();
        let Some(entry) = entry_guard.as_deref_mut() else {
            panic!("the running domain d{} is not in its slot", domain.0)
        };
        let (shut_down, resched) = match Current::of(entry, index, cpu) {
            Some(mut current) => handle_entry(&mut current, regs),
            None => panic!("d{}v{index} does not exist", domain.0),
        };
        if shut_down.is_some() || resched {
            reschedule(cpu, entry_guard, index, regs, shut_down);
        }
    }
    // SAFETY: `regs` is the frame the entry stub built at the top of this
    // CPU's hypervisor stack, and `prepare_exit` made it a context the exit
    // `iretq` loads without faulting.
    unsafe { exit_to_guest(regs) }
}

/// The scheduler's state shared by every CPU: credit epochs, and what
/// each CPU is charged for (`sched::credit::Charging`). Apart from
/// `PerCpu`, which every entry locks: only [`pick`] and [`claim`] take it,
/// and only try slots while they hold it (`docs/locking.md`). A CPU
/// changes what it holds (`CpuSlot::set_holding`) only under it, so no two
/// CPUs ever claim one domain.
static RUNQUEUE: Mutex<Scheduler> = Mutex::new(Scheduler {
    rq: Runqueue::new(),
    charging: [const { Charging::new() }; MAX_CPUS],
});

/// [`RUNQUEUE`]'s contents.
struct Scheduler {
    /// The shared credit state.
    rq: Runqueue<(DomId, usize)>,
    /// Each CPU's charging, by CPU number.
    charging: [Charging<(DomId, usize)>; MAX_CPUS],
}

/// The slot guard of the domain running on this CPU.
type SlotGuard = MutexGuard<'static, Option<Box<DomainEntry>>>;

/// Whether this CPU may be offered domain `id`'s vCPUs: the domain may
/// run here (`sched::may_run_domain_on`) and no other CPU holds it.
pub fn claimable(id: DomId, cpu: u16) -> bool {
    sched::may_run_domain_on(id, cpu) && !sched::held_elsewhere(percpu::holdings(), id, cpu)
}

/// The next vCPU to run on this CPU after vCPU `index` of `running`'s
/// domain (`None`: the CPU idles in its own loop), which is charged for
/// the time it ran: the credit scheduler's choice (`sched::credit`) among
/// the runnable vCPUs of every domain this CPU may claim ([`claimable`]),
/// offered in round robin order (the domain's higher vCPUs, the other
/// domains in id order after it, then its lower ones and `index`
/// itself). The other domains' slots are only tried (`docs/locking.md`).
/// The chosen vCPU's domain is claimed for this CPU before the lock is
/// released; with nothing chosen the CPU keeps what it holds. Its slice
/// is left on `cpu`, to start when it has been switched in
/// (`schedule::run_due`). When more than one vCPU could run, a CPU
/// idling elsewhere is kicked to look too.
fn pick(cpu: &mut PerCpu, mut running: Option<(&mut DomainEntry, usize)>, now: u64) -> Next<DomId> {
    let me = running.as_ref().map(|(e, _)| e.domain.id);
    let mut guard = RUNQUEUE.lock();
    let Scheduler { rq, charging } = &mut *guard;
    let Some(charge) = charging.get_mut(usize::from(cpu.number)) else {
        return Next::Nothing;
    };
    rq.swap_charging(charge);
    if let Some((entry, index)) = running.as_mut()
        && let Some(v) = entry.vcpus.get_mut(*index)
    {
        rq.charge(
            (entry.domain.id, *index),
            &mut v.credit,
            &mut entry.domain.share,
            now,
        );
    }
    let mut choice = rq.choice(now);
    if let Some((entry, index)) = running.as_mut() {
        sched::offer(&mut choice, entry, *index + 1..usize::MAX, now, cpu.number);
    }
    if let Some(table) = DOMAINS.get() {
        let me_at = me.map_or(0, |d| usize::from(d.0) + 1);
        let after = table.occupied(me_at..usize::MAX);
        for id in after.chain(table.occupied(0..me_at)) {
            if Some(id) == me || !claimable(id, cpu.number) {
                continue;
            }
            let Some(mut guard) = table.slot(id).and_then(|slot| slot.try_lock()) else {
                continue;
            };
            if let Some(other) = guard.as_deref_mut() {
                sched::offer(&mut choice, other, 0..usize::MAX, now, cpu.number);
            }
        }
    }
    if let Some((entry, index)) = running.as_mut() {
        sched::offer(&mut choice, entry, 0..*index + 1, now, cpu.number);
    }
    let contested = choice.contested();
    let chosen = choice.finish(rq);
    rq.swap_charging(charge);
    cpu.slice = chosen
        .and_then(|c| c.slice)
        .map_or(Slice::None, Slice::Given);
    if let Some(c) = chosen {
        this_cpu().set_holding(Some(c.id.0));
    }
    drop(guard);
    if contested {
        percpu::kick_idle_cpu(cpu.number);
    }
    match chosen {
        None => Next::Nothing,
        Some(c) if Some(c.id.0) == me => Next::Local(c.id.1),
        Some(c) => Next::Remote(c.id.0, c.id.1),
    }
}

/// Claims domain `id` for this CPU if no other CPU holds it (the boot
/// CPU idling in dom0's context); whether it did.
fn claim(id: DomId, cpu: u16) -> bool {
    let _rq = RUNQUEUE.lock();
    let free = claimable(id, cpu);
    if free {
        this_cpu().set_holding(Some(id));
    }
    free
}

/// The slow end of an entry: the running domain shut down, or another
/// vCPU is to run. dom0's shutdown ends the machine; another domain's is
/// reported to dom0 (`VIRQ_DOM_EXC`) and its vCPUs stop. Then the next
/// vCPU is chosen among every domain's ([`pick`]) and switched to,
/// changing slots when it belongs to another domain; with nothing to run
/// the CPU waits, in dom0's context (whose timers and kicks are what can
/// wake anything today). Returns with `regs` ready for the exit.
#[cold]
#[inline(never)]
fn reschedule(
    cpu: &mut PerCpu,
    mut guard: SlotGuard,
    mut index: usize,
    regs: &mut GuestRegs,
    mut shut_down: Option<u8>,
) {
    // Whether `regs` was saved into vCPU `index`'s record already (it no
    // longer holds a live context).
    let mut saved = false;
    loop {
        let Some(entry) = guard.as_deref_mut() else {
            panic!("the running domain is not in its slot")
        };
        if let Some(reason) = shut_down.take() {
            if entry.domain.id == DomId::DOM0 {
                dom0_shut_down(cpu, entry, reason);
            }
            domu_shut_down(entry, reason, cpu.number);
        }
        let now = time::now_ns();
        match pick(cpu, Some((&mut *entry, index)), now) {
            Next::Local(to) => {
                if to != index || saved {
                    if !saved {
                        save_vcpu(cpu, entry, index, regs, now);
                    }
                    load_vcpu(cpu, entry, to, regs, now);
                } else if let Some(v) = entry.vcpus.get_mut(to)
                    && v.runstate.state != RUNSTATE_RUNNING
                {
                    v.runstate.enter(RUNSTATE_RUNNING, now);
                }
                index = to;
            }
            Next::Remote(id, to) => {
                if !saved {
                    save_vcpu(cpu, entry, index, regs, now);
                }
                guard = switch_slot(cpu, guard, id, to);
                let Some(entry) = guard.as_deref_mut() else {
                    panic!("d{} left its slot", id.0)
                };
                load_vcpu(cpu, entry, to, regs, now);
                index = to;
            }
            Next::Nothing => {
                let here = entry.domain.id;
                if here != DomId::DOM0 || cpu.number != 0 {
                    if !saved {
                        save_vcpu(cpu, entry, index, regs, now);
                        saved = true;
                    }
                    if cpu.number == 0 && claim(DomId::DOM0, 0) {
                        // Wait where the timers that can wake someone are.
                        guard = switch_slot(cpu, guard, DomId::DOM0, 0);
                        index = 0;
                        continue;
                    }
                    // Wait in this CPU's own loop, holding nothing.
                    drop(guard);
                    (guard, index) = idle_here(cpu, regs);
                    saved = false;
                    let Some(entry) = guard.as_deref_mut() else {
                        panic!("a chosen domain left its slot")
                    };
                    if let RunState::ShutDown(reason) = entry.domain.state {
                        shut_down = Some(reason);
                        continue;
                    }
                    let shut = Current::of(entry, index, cpu).and_then(|mut current| {
                        schedule::run_due(&mut current);
                        guest::deliver_pending_event(&mut current, regs);
                        prepare_exit(&mut current, regs)
                    });
                    if shut.is_none() {
                        return;
                    }
                    shut_down = shut;
                    continue;
                }
                if !saved {
                    note_stopped(entry, index, now);
                }
                guard = idle(cpu, guard, index);
                let Some(entry) = guard.as_deref_mut() else {
                    panic!("dom0 left its slot while this CPU waited")
                };
                if let RunState::ShutDown(reason) = entry.domain.state {
                    shut_down = Some(reason);
                }
                continue;
            }
        }
        saved = false;
        let Some(entry) = guard.as_deref_mut() else {
            panic!("the running domain is not in its slot")
        };
        shut_down = Current::of(entry, index, cpu).and_then(|mut current| {
            schedule::run_due(&mut current);
            guest::deliver_pending_event(&mut current, regs);
            prepare_exit(&mut current, regs)
        });
        if shut_down.is_none() {
            return;
        }
    }
}

/// Waits, with interrupts enabled, until an interrupt (the hypervisor's
/// timer, armed by `run_due` for the next deadline, or another CPU's
/// event-check IPI), then runs what is due for vCPU `index` of the
/// running domain (dom0), whose slot `guard` holds. The slot is released
/// for the wait, so that another CPU can reach dom0 meanwhile; this CPU's
/// own state stays locked (no other CPU takes it), and the vCPU's context
/// stays here (`Vcpu::on_cpu`: no other CPU is offered it). For a CPU on
/// which no vCPU can run. The time halted here is the CPU's idle time
/// (`sysctl getcpuinfo`).
fn idle(cpu: &mut PerCpu, guard: SlotGuard, index: usize) -> SlotGuard {
    drop(guard);
    let Some(Running { slot, .. }) = cpu.running else {
        panic!("idle while no domain runs here")
    };
    let start = time::now_ns();
    cpu::wait_for_interrupt();
    this_cpu().count_idle(time::now_ns().saturating_sub(start));
    // The views may still hold the domU this CPU ran before it came to
    // wait here, whose holder may wait for its flush.
    let mut guard = percpu::lock_answering(slot);
    if let Some(entry) = guard.as_deref_mut()
        && let Some(mut current) = Current::of(entry, index, cpu)
    {
        schedule::run_due(&mut current);
    }
    guard
}

/// Waits in this CPU's own loop, holding no domain, until a vCPU is
/// chosen for it ([`pick`]); returns the chosen domain's slot, locked,
/// and the vCPU, loaded into `regs`. Between looks it runs what is due
/// for every domain no other CPU holds (`schedule::idle_due`), arms its
/// timer and halts with interrupts on, until the timer or an event-check
/// IPI (another CPU made a vCPU runnable). The time halted here is the
/// CPU's idle time, as in [`idle`].
pub fn idle_here(cpu: &mut PerCpu, regs: &mut GuestRegs) -> (SlotGuard, usize) {
    cpu.running = None;
    {
        let _rq = RUNQUEUE.lock();
        this_cpu().set_holding(None);
    }
    loop {
        // This look answers every kick so far.
        this_cpu().take_choose_again();
        let now = time::now_ns();
        if let Next::Remote(id, to) = pick(cpu, None, now) {
            let mut guard = take_slot(cpu, id, to);
            if let Some(entry) = guard.as_deref_mut() {
                load_vcpu(cpu, entry, to, regs, now);
                return (guard, to);
            }
            // Destroyed between the choice and here: look again.
            drop(guard);
            cpu.running = None;
            let _rq = RUNQUEUE.lock();
            this_cpu().set_holding(None);
            continue;
        }
        if schedule::idle_due(cpu.number, now) {
            continue;
        }
        let start = time::now_ns();
        cpu::wait_for_interrupt();
        this_cpu().count_idle(time::now_ns().saturating_sub(start));
    }
}

/// Leaves the slot `guard` holds for domain `id`'s, whose vCPU `vcpu`
/// now runs here (its context is not loaded yet). The running domain's
/// slot is released first: one slot at a time, so no order applies.
fn switch_slot(cpu: &mut PerCpu, guard: SlotGuard, id: DomId, vcpu: usize) -> SlotGuard {
    drop(guard);
    take_slot(cpu, id, vcpu)
}

/// Locks domain `id`'s slot for this CPU, which holds no slot, and makes
/// `PerCpu::running` name its vCPU `vcpu` (its context is not loaded
/// yet).
fn take_slot(cpu: &mut PerCpu, id: DomId, vcpu: usize) -> SlotGuard {
    let Some(slot) = DOMAINS.get().and_then(|table| table.slot(id)) else {
        panic!("d{} has no slot", id.0)
    };
    cpu.running = Some(Running {
        domain: id,
        slot,
        vcpu,
    });
    // This CPU may still be in the set of the domain it ran before, whose
    // holder may wait for its flush.
    percpu::lock_answering(slot)
}

/// Another domain than dom0 shut down (or crashed): its vCPUs stop, and
/// dom0 hears of it through `VIRQ_DOM_EXC`. dom0's slot comes before
/// this one in the lock order, so it is only tried; when another CPU
/// holds it, the event is owed (`schedule::DOM_EXC_OWED`) and the CPU
/// holding dom0 is kicked to raise it.
fn domu_shut_down(entry: &mut DomainEntry, reason: u8, cpu: u16) {
    log::info!("d{} shut down (reason {reason})", entry.domain.id.0);
    let Some(slot) = DOMAINS.get().and_then(|table| table.slot(DomId::DOM0)) else {
        return;
    };
    let Some(mut dom0) = slot.try_lock() else {
        schedule::DOM_EXC_OWED.store(true, core::sync::atomic::Ordering::Release);
        percpu::kick_for(DomId::DOM0, cpu);
        return;
    };
    if let Some(dom0) = dom0.as_deref_mut() {
        let mut bits = SharedInfoBits::new(dom0.domain.shared_info, dom0.domain.id, u32::MAX);
        dom0.domain.evtchn.send_virq(&mut bits, Virq::DomExc, 0);
        let kicked = bits.take_kicked();
        sched::mark_kicked(&mut dom0.vcpus, kicked);
        if kicked != 0 {
            percpu::kick_for(DomId::DOM0, cpu);
        }
    }
}

/// vCPU `index` stops running without being switched out (nothing else
/// can run): its runstate says why.
fn note_stopped(entry: &mut DomainEntry, index: usize, now: u64) {
    if let Some(v) = entry.vcpus.get_mut(index) {
        let state = stopped_state(v);
        if v.runstate.state != state {
            v.runstate.enter(state, now);
        }
    }
}

/// The runstate of a vCPU that is not running.
fn stopped_state(v: &Vcpu) -> i32 {
    if !v.is_up() {
        RUNSTATE_OFFLINE
    } else if v.sleep.is_sleeping() {
        RUNSTATE_BLOCKED
    } else {
        RUNSTATE_RUNNABLE
    }
}

/// Handles one entry for `current` and, unless another vCPU is to run
/// (the switch then prepares that one's exit), prepares its exit; returns
/// the domain's shutdown reason if it has shut down, and whether another
/// vCPU is to run (the request is taken: it is answered once). Inlined
/// into the entry: on its own it was one more call and frame per entry.
#[inline(always)]
fn handle_entry(current: &mut Current, regs: &mut GuestRegs) -> (Option<u8>, bool) {
    let start = if Stats::ENABLED { cpu::rdtsc() } else { 0 };
    let domain = &current.domain;
    this_lane().begin_full(
        current.vcpu,
        domain.id,
        || domain.evtchn.may_send_locally(),
        |v| paging::phys_to_virt(v.vcpu_info),
    );
    count_entry(&mut current.vcpu.stats, regs.vector);
    // One place makes hypercalls, whether they came through `int $0x82`
    // or the kernel's `SYSCALL`: a second inlined copy of the dispatch
    // cost every hypercall instructions.
    'not_a_hypercall: {
        match regs.vector {
            v if v == u64::from(HYPERCALL_VECTOR) => {}
            guest::SYSCALL_VECTOR | guest::SYSCALL32_VECTOR => {
                if !guest::syscall(current, regs) {
                    break 'not_a_hypercall;
                }
            }
            // Hardware events that hit while the guest ran: never the
            // guest's (its `int $2`/`int $18` are #GP: those gates have
            // DPL 0).
            NMI_VECTOR => {
                hardware_nmi();
                break 'not_a_hypercall;
            }
            MC_VECTOR => fatal(regs, "while a guest ran"),
            0..32 => {
                guest::exception(current, regs);
                break 'not_a_hypercall;
            }
            // A physical interrupt (its gate has DPL 0: a guest's `int` on
            // its vector is a #GP, not this).
            vector => {
                if schedule::acknowledge(vector) {
                    schedule::run_due(current);
                }
                break 'not_a_hypercall;
            }
        }
        hypercall(current, regs);
    }
    guest::deliver_pending_event(current, regs);
    // Read, and cleared only when set: most entries do not write it.
    let resched = current.cpu.resched;
    if resched {
        current.cpu.resched = false;
    }
    let shut_down = if resched {
        match current.domain.state {
            RunState::ShutDown(reason) => Some(reason),
            RunState::Running => None,
        }
    } else {
        prepare_exit(current, regs)
    };
    if Stats::ENABLED {
        current
            .vcpu
            .stats
            .add(Counter::HypervisorTsc, cpu::rdtsc().wrapping_sub(start));
    }
    (shut_down, resched)
}

/// Saves vCPU `from` of `entry`, whose registers are `regs`, into its
/// record: everything it owns in the CPU (registers, FPU/SSE/AVX state,
/// data selectors and segment bases) goes there, its LDT pages are
/// released, and its runstate says why it stopped.
fn save_vcpu(
    cpu: &mut PerCpu,
    entry: &mut DomainEntry,
    from: usize,
    regs: &mut GuestRegs,
    now: u64,
) {
    if let Some(mut current) = Current::of(entry, from, cpu) {
        let mut fx = Effects::default();
        super::env::release_ldt(&mut ArchEnv::new(&mut current, regs), &mut fx);
        super::env::apply_effects(&mut current, &fx);
    }
    let Some(old) = entry.vcpus.get_mut(from) else {
        return;
    };
    old.on_cpu = None;
    this_lane().disarm(&mut old.stats);
    old.context = *regs;
    context::save(old);
    let state = stopped_state(old);
    if old.runstate.state != state {
        old.runstate.enter(state, now);
    }
    // Its page tables are still the views'.
    publish_runstate(old, entry.domain.mm.vm_assist);
}

/// Rewrites `vcpu`'s runstate area, if it registered one, through the
/// page tables loaded now (which must be its own).
fn publish_runstate(vcpu: &Vcpu, vm_assist: u64) {
    if vcpu.runstate_area != 0 {
        crate::vcpu::publish_runstate(
            vcpu.runstate_area,
            &vcpu.runstate.area_record(),
            vm_assist & VmAssistType::RunstateUpdateFlag.mask() != 0,
            |va, bytes| {
                // A fault is the guest's: its area is left as it is.
                let _ = guest_mem::copy_to_guest(va, bytes);
            },
        );
    }
}

/// Loads vCPU `to` of `entry` into this CPU: its registers into `regs`,
/// its FPU state, its page tables into the CPU's views; everything else
/// it owns (GDT, selectors, segment bases, debug registers, CR0.TS) is
/// pending for the exit path. Its LDT is faulted in afresh.
fn load_vcpu(cpu: &mut PerCpu, entry: &mut DomainEntry, to: usize, regs: &mut GuestRegs, now: u64) {
    let Some(new) = entry.vcpus.get_mut(to) else {
        return;
    };
    *regs = new.context;
    new.on_cpu = Some(cpu.number);
    context::restore(new);
    new.runstate.enter(RUNSTATE_RUNNING, now);
    time::publish(new.vcpu_info);
    trampoline::load_ldt(&cpu.views, u64::from(new.mm.ldt_ents));
    if let Some(l4) = new.mm.kernel_l4 {
        let generation = l4_generation();
        let slots = match new.l4_slots {
            Some(slots) if slots.valid_for(l4, generation) => slots,
            _ => {
                // SAFETY: the vCPU holds an L4 type reference on its
                // kernel L4, a frame it cannot write; it is only read.
                let entries = unsafe { super::paging::table(l4.maddr()) };
                L4Slots::scan(l4, generation, entries)
            }
        };
        new.l4_slots = Some(slots);
        super::builder::switch_guest_l4(&cpu.views, &mut cpu.l4_installed, l4.maddr(), &slots.used);
        // Global entries too, as Xen flushes them on every switch: guest L1
        // entries may carry G, and a CR3 load keeps such entries, so the
        // vCPU this CPU ran before (another domain's, or this domain's
        // before it ran on another CPU and changed its mappings there)
        // could otherwise still be translated through.
        cpu::flush_tlb_all();
        percpu::note_loaded(entry.domain.id, cpu.number);
        publish_runstate(new, entry.domain.mm.vm_assist);
    }
    if let Some(running) = cpu.running.as_mut() {
        running.vcpu = to;
    }
}

/// Counts one entry. Its two CR3 writes (entry and exit), both flushing
/// (the views are loaded without PCID's no-flush bit), are not added here:
/// `Stats::get` derives them from `Entries`.
fn count_entry(stats: &mut Stats, vector: u64) {
    stats.add(Counter::Entries, 1);
    let kind = match vector {
        v if v == u64::from(HYPERCALL_VECTOR) => Counter::Hypercalls,
        0..32 | guest::SYSCALL_VECTOR | guest::SYSCALL32_VECTOR => Counter::Exceptions,
        _ => Counter::Interrupts,
    };
    stats.add(kind, 1);
}

/// A hypercall; inlined into the entry (its only caller).
#[inline(always)]
fn hypercall(current: &mut Current, regs: &mut GuestRegs) {
    let number = regs.rax;
    if number == Hypercall::Iret as u64 {
        // It ends every bounce: straight to the handler, without the
        // arguments and the environment the table's handlers take. It
        // loads a whole context (no result, no continuation).
        guest::iret(current, regs);
        return;
    }
    let args = [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8];
    let mut env = ArchEnv::new(current, regs);
    let result = dispatch(&mut env, number, args);
    // The outcome is read in place: copying it out of `env` first cost
    // every hypercall a copy of the continuation arguments.
    let regs = &mut *env.regs;
    if let Some(args) = env.preempted {
        // Continuation: re-execute `int $0x82` with the updated arguments
        // (RAX still holds the hypercall number).
        regs.rip = regs.rip.wrapping_sub(2);
        (regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8) =
            (args[0], args[1], args[2], args[3], args[4]);
        return;
    }
    if env.replaced_context {
        // An iret (on its own or ending a multicall) loaded a whole context.
        return;
    }
    regs.rax = result.cast_unsigned();
    if cfg!(debug_assertions) {
        poison_arguments(regs);
    }
}

/// Argument registers are clobbered by the ABI: debug builds overwrite
/// them after a hypercall so that no guest comes to rely on them
/// surviving.
pub fn poison_arguments(regs: &mut GuestRegs) {
    const POISON: u64 = 0xdead_beef_dead_f00d;
    (regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8) = (POISON, POISON, POISON, POISON, POISON);
}

/// Crashes the running domain with a logged reason.
pub fn crash(current: &mut Current, reason: core::fmt::Arguments<'_>) {
    log::error!(
        target: GUEST,
        "d{}v{}: {reason}: domain crashed",
        current.domain.id.0,
        current.vcpu.id
    );
    current.domain.crash();
}

/// dom0 has shut down: report why and end the machine, as Xen ends it when
/// its hardware domain goes away.
fn dom0_shut_down(cpu: &mut PerCpu, entry: &mut DomainEntry, reason: u8) -> ! {
    let (outcome, what) = match ShutdownReason::from_number(u64::from(reason)) {
        Some(ShutdownReason::Poweroff) => (HostExit::Dom0Poweroff, "halting the machine"),
        Some(ShutdownReason::Crash) => (HostExit::Dom0Crash, "crashed"),
        Some(ShutdownReason::Reboot) => (HostExit::Dom0Reboot, "rebooting the machine"),
        Some(ShutdownReason::Suspend) => (
            HostExit::Dom0Suspend,
            "suspend is not supported for dom0; stopping",
        ),
        Some(ShutdownReason::Watchdog) => {
            (HostExit::Dom0Watchdog, "watchdog: rebooting the machine")
        }
        Some(ShutdownReason::SoftReset) => (
            HostExit::Dom0SoftReset,
            "soft reset is not supported for dom0; rebooting",
        ),
        None => (
            HostExit::Dom0Reboot,
            "unknown reason; rebooting the machine",
        ),
    };
    log::info!(
        "dom0 shut down (reason {reason}: {}): {what}",
        outcome.name()
    );
    let teardown = super::builder::destroy_dom0(cpu, entry);
    let (free, _) = mem::frame_counts();
    let tables = mem::DIRECT_MAP_TABLES.load(core::sync::atomic::Ordering::Relaxed);
    let before = FREE_BEFORE_DOM0.get().copied().unwrap_or(0);
    // The test harness trusts only "all returned" on a line carrying the
    // nonce it gave this boot; an inconsistent frame table wins over the
    // counts (a reference dropped early and dropped again at teardown
    // leaves the counts right).
    let verdict = if teardown.inconsistent {
        "FRAME TABLE INCONSISTENT"
    } else if free + tables == before {
        "all returned"
    } else {
        "FRAMES LOST"
    };
    let nonce = TestNonce(TEST_NONCE.get().copied());
    log::info!(
        "dom0 torn down{nonce}: {} frames released; free frames {before} before the build, {free} now{}: {verdict}",
        teardown.released,
        DirectMapTables(tables)
    );
    machine::end(outcome)
}

/// `, <n> kept as direct-map tables` when splitting the direct map took
/// frames for good (see `mem::DIRECT_MAP_TABLES`), nothing otherwise.
struct DirectMapTables(u64);

impl core::fmt::Display for DirectMapTables {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            0 => Ok(()),
            n => write!(f, ", {n} kept as direct-map tables"),
        }
    }
}

/// ` (nonce <16 hex digits>)` when the command line gave `test_nonce=`,
/// else nothing.
struct TestNonce(Option<u64>);

impl core::fmt::Display for TestNonce {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(nonce) => write!(f, " (nonce {nonce:016x})"),
            None => Ok(()),
        }
    }
}

/// RFLAGS as the guest may have it: no privilege bits (IOPL 0, no VM/NT),
/// IF set (the guest's interrupt flag is its upcall mask).
pub fn sanitize_rflags(regs: &mut GuestRegs) {
    regs.rflags = sanitized_rflags(regs.rflags);
}

/// `rflags` as [`sanitize_rflags`] leaves it.
#[inline(always)]
#[must_use]
pub fn sanitized_rflags(rflags: u64) -> u64 {
    const IF: u64 = 1 << 9;
    const KEEP: u64 = 0x0000_0000_0004_0dd5 | (1 << 21); // CF PF AF ZF SF TF DF OF AC ID
    (rflags & KEEP) | IF | 0x2
}

/// An exception in the hypervisor: a guest-copy fault is recovered;
/// anything else is fatal.
pub fn from_hypervisor(regs: &mut GuestRegs) {
    if regs.vector >= 32 {
        // An interrupt while the hypervisor waits for one (it runs with
        // interrupts disabled otherwise): the waiter runs what is due.
        schedule::acknowledge(regs.vector);
        return;
    }
    if regs.vector == NMI_VECTOR {
        hardware_nmi();
        return;
    }
    if regs.vector == PF_VECTOR
        && let Some(resume) = guest_mem::fixup(regs.rip)
    {
        regs.rip = resume;
        return;
    }
    if matches!(regs.vector, NP_VECTOR | SS_VECTOR | GP_VECTOR | PF_VECTOR)
        && let Some(resume) = context::fixup(regs.rip)
    {
        regs.rip = resume;
        return;
    }
    if regs.vector == DB_VECTOR {
        // A guest's data breakpoint hit by the hypervisor's own access to
        // guest memory: not the guest's event, and harmless here.
        cpu::clear_dr6();
        return;
    }
    fatal(regs, "in the hypervisor")
}

/// A hardware NMI (the local APIC's LINT1, a watchdog, a monitor's `nmi`):
/// no domain gets it (see `docs/abi-differences.md`); the first is logged.
/// Out of line: the logging would otherwise weigh on the entry's code.
#[cold]
#[inline(never)]
fn hardware_nmi() {
    static SEEN: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    if !SEEN.swap(true, core::sync::atomic::Ordering::Relaxed) {
        log::warn!("hardware NMI received; hardware NMIs are not passed to any domain");
    }
}

/// Ends the machine after an exception the hypervisor cannot handle (one
/// of its own, or a machine check), with the registers `where` it hit.
fn fatal(regs: &GuestRegs, place: &str) -> ! {
    serial::enter_panic_mode();
    let mut out = serial::Console;
    let _ = writeln!(
        out,
        "\r\n(HV) FATAL: {} (vector {}, error {:#x}) {place} at rip {:#x}\r",
        exception_name(regs.vector),
        regs.vector,
        regs.error_code,
        regs.rip
    );
    let _ = writeln!(
        out,
        "(HV)   cr2 {:#018x} cr3 {:#018x} cr0 {:#018x} cr4 {:#018x}\r",
        cpu::read_cr2(),
        cpu::read_cr3(),
        cpu::read_cr0(),
        cpu::read_cr4()
    );
    dump_registers(&mut out, regs);
    backtrace(&mut out, regs.rbp);
    machine::end(HostExit::HypervisorPanic)
}

fn dump_registers(out: &mut serial::Console, r: &GuestRegs) {
    let rows = [
        ("rax", r.rax, "rbx", r.rbx, "rcx", r.rcx),
        ("rdx", r.rdx, "rsi", r.rsi, "rdi", r.rdi),
        ("rbp", r.rbp, "rsp", r.rsp, "r8 ", r.r8),
        ("r9 ", r.r9, "r10", r.r10, "r11", r.r11),
        ("r12", r.r12, "r13", r.r13, "r14", r.r14),
        ("r15", r.r15, "rfl", r.rflags, "cs ", r.cs),
    ];
    for (a, av, b, bv, c, cv) in rows {
        let _ = writeln!(out, "(HV)   {a} {av:#018x} {b} {bv:#018x} {c} {cv:#018x}\r");
    }
}

/// Walks the frame-pointer chain (the image is built with frame pointers),
/// stopping at the first frame outside the hypervisor image.
pub fn backtrace(out: &mut serial::Console, mut rbp: u64) {
    let _ = writeln!(out, "(HV)   backtrace:\r");
    for _ in 0..16 {
        if !(HYPERVISOR_TEXT_START..DIRECTMAP_VIRT_START).contains(&rbp) || !rbp.is_multiple_of(8) {
            break;
        }
        // SAFETY: `rbp` lies in the hypervisor's own mapped area (image or
        // stacks), 8-byte aligned; frames there hold [saved rbp, return rip].
        let (next, ret) = unsafe { (*(rbp as *const u64), *((rbp + 8) as *const u64)) };
        let _ = writeln!(out, "(HV)     {ret:#018x}\r");
        rbp = next;
    }
}

/// Xen-style mnemonic of an exception vector.
pub fn exception_name(vector: u64) -> &'static str {
    const NAMES: [&str; 32] = [
        "#DE (divide error)",
        "#DB (debug)",
        "NMI",
        "#BP (breakpoint)",
        "#OF (overflow)",
        "#BR (bound range)",
        "#UD (invalid opcode)",
        "#NM (device not available)",
        "#DF (double fault)",
        "coprocessor segment overrun",
        "#TS (invalid TSS)",
        "#NP (segment not present)",
        "#SS (stack fault)",
        "#GP (general protection)",
        "#PF (page fault)",
        "reserved vector 15",
        "#MF (x87 error)",
        "#AC (alignment check)",
        "#MC (machine check)",
        "#XM (SIMD error)",
        "#VE (virtualization)",
        "#CP (control protection)",
        "reserved vector 22",
        "reserved vector 23",
        "reserved vector 24",
        "reserved vector 25",
        "reserved vector 26",
        "reserved vector 27",
        "#HV (hypervisor injection)",
        "#VC (VMM communication)",
        "#SX (security)",
        "reserved vector 31",
    ];
    match usize::try_from(vector) {
        Ok(v) if v < NAMES.len() => NAMES[v],
        _ => "external interrupt",
    }
}
