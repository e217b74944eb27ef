//! Time and interrupts on this CPU: acknowledging interrupts, running what
//! is due (guest timers, watchdogs, poll timeouts, console input for the
//! hardware domain, guests' physical interrupts, sleeping vCPUs woken by
//! events, the time slice) and setting the local APIC's timer for the
//! next deadline. The wait while no vCPU can run is `traps::idle`.
//!
//! [`run_due`] runs when something it looks at changed, and only then: on
//! the timer's, COM1's receive and guests' lines' interrupts, after a
//! hypercall that changed a timer or a sleeping vCPU
//! (`Env::timers_changed`) or raised an upcall for a sleeping vCPU
//! ([`note_kicks`]), after a `CONSOLEIO_read` that took input from the
//! UART itself, after a vCPU switch, before the first exit and after every
//! idle wake-up. Entries that change none of it (almost all) pay nothing
//! for time.
//!
//! The decisions are `crate::sched`'s and `crate::timer`'s; this module
//! walks the running domain's vCPUs with them. The timer's and the serial
//! port's interrupts only feed this bookkeeping and the events it raises;
//! a line a guest has bound (`super::pirq`) reaches it as its PIRQ's
//! event, raised here with the rest of the due work.
use core::iter;
use core::sync::atomic::{AtomicBool, Ordering};

use dom0_abi::event_channel::Virq;
use dom0_abi::sched::ShutdownReason;
use dom0_abi::stats::Counter;

use dom0_abi::types::DomId;

use crate::domain::{DOMAINS, Domain, DomainTable};
use crate::evtchn::EventBits;
use crate::sched::{self, Slice};
use crate::timer::{Sleep, earliest};

use super::evtchn::SharedInfoBits;
use super::traps::Current;

/// How soon a domain whose slot another CPU held is looked at again, ns.
const RETRY_NS: u64 = 1_000_000;
use super::{apic, percpu, pirq, serial, time};

/// Handles and acknowledges the interrupt on `vector`; returns whether
/// [`run_due`] has work from it (the timer fired, or console input came
/// in). Takes only leaf locks (the console's): it also runs for
/// interrupts taken while the hypervisor waits (`traps::idle`, holding
/// this CPU's state, and a started CPU's idle loop).
pub fn acknowledge(vector: u64) -> bool {
    match vector {
        v if v == u64::from(apic::TIMER_VECTOR) => {
            apic::timer_fired();
            apic::eoi();
            true
        }
        // Another CPU left work to look at.
        v if v == u64::from(apic::EVENT_CHECK_VECTOR) => {
            let slot = percpu::this_cpu();
            slot.note_event_check();
            slot.ask_to_choose_again();
            apic::eoi();
            true
        }
        // Another CPU waits until this one flushed its TLB.
        v if v == u64::from(apic::FLUSH_VECTOR) => {
            percpu::answer_flush();
            apic::eoi();
            false
        }
        // The UART is drained before the end of interrupt, so that its
        // (edge-triggered) line has dropped and a later byte raises it
        // again.
        v if serial::is_receive_vector(v) => {
            serial::receive();
            apic::eoi();
            true
        }
        // Spurious: no end-of-interrupt. The masked 8259s raise only
        // their spurious IRQ 7 and 15, which are not acknowledged either.
        v if v == u64::from(apic::SPURIOUS_VECTOR) => false,
        0x20..0x30 => false,
        v if v == u64::from(apic::ERROR_VECTOR) => {
            log::warn!("local APIC error status {:#x}", apic::take_errors());
            apic::eoi();
            false
        }
        // A guest's line: marked pending (masked if level-triggered) for
        // `run_due` to deliver.
        v if pirq::interrupt(v) => {
            apic::eoi();
            true
        }
        _ => {
            log::warn!("unexpected interrupt on vector {vector:#x}");
            apic::eoi();
            false
        }
    }
}

/// Kicks the vCPUs of the running domain whose upcall was newly raised
/// (bit `n`: vCPU `n`): those sleeping wake (through [`run_due`]), and
/// the CPUs that hold one of them elsewhere take an event-check IPI.
#[cold]
pub fn note_kicks(current: &mut Current, kicked: u64) {
    let elsewhere = sched::cpus_to_kick(
        current.others.0.iter().chain(current.others.1.iter()),
        kicked,
        current.cpu.number,
    );
    if elsewhere != 0 {
        let sent = percpu::send_event_checks(elsewhere);
        current.vcpu.stats.add(Counter::Ipis, sent);
    }
    let mut sleeping = false;
    for id in sched::kicked_ids(kicked) {
        if let Some(vcpu) = current.vcpu_by_id(id)
            && vcpu.sleep.is_sleeping()
        {
            vcpu.kicked = true;
            sleeping = true;
        }
    }
    if sleeping {
        run_due(current);
    }
}

/// Wakes the running domain's other vCPUs that poll a port now pending
/// (an event raised without a kick: their upcall was pending already), as
/// Xen wakes a port's pollers.
#[cold]
#[inline(never)]
pub fn wake_pollers(current: &mut Current, bits: &SharedInfoBits) {
    let mut now = None;
    for v in current
        .others
        .0
        .iter_mut()
        .chain(current.others.1.iter_mut())
    {
        if matches!(v.sleep, Sleep::Polling { .. }) {
            let now = *now.get_or_insert_with(time::now_ns);
            if sched::wake_if_due(v, bits, false, now) {
                current.cpu.resched = true;
            }
        }
    }
}

/// Runs everything due for the running domain and sets the hypervisor's
/// timer for the next deadline. A sleeping vCPU that wakes, or the end of
/// the running vCPU's slice while another waits, asks for a reschedule;
/// an expired watchdog shuts the domain down; console input that came in
/// raises `VIRQ_CONSOLE` for the hardware domain, running or not (see
/// [`console_input_due`]).
pub fn run_due(current: &mut Current) {
    let Current {
        domain,
        vcpu,
        others,
        cpu,
    } = current;
    let running = vcpu.id;
    let mut bits = SharedInfoBits::new(domain.shared_info, domain.id, u32::MAX);
    if DomainTable::pages_owed_anywhere()
        && let Some(table) = DOMAINS.get()
    {
        // Frames freed by CPUs that found this slot held.
        table.settle_pages(domain);
    }
    loop {
        let now = time::now_ns();
        let slice_end = cpu.slice.start(now);
        for v in others
            .0
            .iter_mut()
            .chain(iter::once(&mut **vcpu))
            .chain(others.1.iter_mut())
        {
            sched::fire_timers(v, &domain.evtchn, &mut bits, now);
        }
        if domain.watchdogs.take_expired(now) && domain.is_running() {
            log::info!("d{}: watchdog timer fired", domain.id.0);
            domain.shutdown(ShutdownReason::Watchdog as u8);
        }
        console_input_due(domain, &mut bits);
        pirq::deliver(domain, &mut bits);
        let kicked = bits.take_kicked();
        let mut next = earliest(
            domain.watchdogs.next_deadline(),
            domain.share.parked_until(),
        );
        // A domain paused (or being destroyed) by another CPU while it ran
        // here gives the CPU up.
        cpu.resched |= !domain.may_run() || percpu::this_cpu().take_choose_again();
        let mut others_runnable = false;
        if DOMAINS.get().is_some_and(|table| table.live() > 1) {
            let (due, woke, runnable) = other_domains_due(Some(domain.id), cpu.number, now);
            next = earliest(next, due);
            others_runnable |= runnable;
            cpu.resched |= woke;
        }
        for v in others
            .0
            .iter_mut()
            .chain(iter::once(&mut **vcpu))
            .chain(others.1.iter_mut())
        {
            let kick = kicked & 1u64.checked_shl(v.id).unwrap_or(0) != 0;
            if sched::wake_if_due(v, &bits, kick, now) && v.id != running {
                cpu.resched = true;
            }
            next = earliest(next, sched::next_deadline(v, &domain.evtchn));
            others_runnable |= v.id != running && v.is_runnable();
        }
        // The slice the scheduler gave ends; without one, a vCPU that
        // became runnable since the choice (a wake-up, an unpause, a
        // refilled budget) asks for a new one.
        match slice_end {
            Some(end) if end <= now => {
                cpu.resched = true;
                cpu.slice = Slice::None;
            }
            Some(end) => next = earliest(next, Some(end)),
            None => cpu.resched |= others_runnable,
        }
        match next {
            Some(at) if at <= time::now_ns() => {}
            _ => {
                apic::set_timer(next.and_then(time::tsc_at));
                return;
            }
        }
    }
}

/// What is due for a CPU that idles in its own loop, holding no domain
/// (`traps::idle_here`): every domain it may claim has its timers fired
/// and its waits looked at (`other_domains_due`), and the CPU's timer is
/// armed for their next deadline. Returns whether a vCPU it may run woke
/// or can run (then it looks again instead of halting).
pub fn idle_due(cpu: u16, now: u64) -> bool {
    let (next, woke, runnable) = other_domains_due(None, cpu, now);
    if woke || runnable {
        return true;
    }
    if next.is_some_and(|at| at <= time::now_ns()) {
        return true;
    }
    apic::set_timer(next.and_then(time::tsc_at));
    false
}

/// Raises `VIRQ_CONSOLE` for `domain` if it is the hardware domain and
/// console input came in since it was last told. The mark is taken only
/// with the hardware domain at hand: while another domain runs, through
/// [`other_domains_due`], whose slot try may fail (the mark then waits
/// for the next look).
fn console_input_due(domain: &Domain, bits: &mut SharedInfoBits) {
    if domain.is_privileged() && serial::take_input_pending() {
        domain.evtchn.send_virq(bits, Virq::Console, 0);
    }
    if domain.id == DomId::DOM0 && DOM_EXC_OWED.swap(false, Ordering::AcqRel) {
        domain.evtchn.send_virq(bits, Virq::DomExc, 0);
    }
}

/// A domain shut down while dom0's slot was held by another CPU
/// (`traps::domu_shut_down`): dom0 is owed a `VIRQ_DOM_EXC`, raised the
/// next time dom0 is at hand here (the shutting-down CPU kicks dom0's).
pub static DOM_EXC_OWED: AtomicBool = AtomicBool::new(false);

/// Fires the due timers of every domain but `running` that CPU `cpu` may
/// claim (`traps::claimable`: another CPU's domain is that CPU's to look
/// after), tells the hardware domain of console input
/// ([`console_input_due`]), and wakes their vCPUs whose wait is over
/// (their slots are only tried, `docs/locking.md`; a slot locked
/// elsewhere is looked at again [`RETRY_NS`] later): returns their next
/// deadline (a capped domain's budget refill included), whether one woke
/// and whether one of them can run now. A wake-up also kicks a CPU that
/// idles in its own loop, which may run it sooner than this one. Their
/// watchdogs are not looked at here (only while they run).
fn other_domains_due(running: Option<DomId>, cpu: u16, now: u64) -> (Option<u64>, bool, bool) {
    let (mut next, mut woke, mut runnable) = (None, false, false);
    let Some(table) = DOMAINS.get() else {
        return (next, woke, runnable);
    };
    for id in table.occupied(0..usize::MAX) {
        if Some(id) == running || !super::traps::claimable(id, cpu) {
            continue;
        }
        let Some(mut guard) = table.slot(id).and_then(|slot| slot.try_lock()) else {
            next = earliest(next, Some(now.saturating_add(RETRY_NS)));
            continue;
        };
        let Some(entry) = guard.as_deref_mut() else {
            continue;
        };
        table.settle_pages(&mut entry.domain);
        let mut bits = SharedInfoBits::new(entry.domain.shared_info, entry.domain.id, u32::MAX);
        for v in &mut entry.vcpus {
            sched::fire_timers(v, &entry.domain.evtchn, &mut bits, now);
        }
        console_input_due(&entry.domain, &mut bits);
        pirq::deliver(&entry.domain, &mut bits);
        let kicked = bits.take_kicked();
        let mut may_run = entry.domain.may_run();
        if may_run && !entry.domain.share.eligible(now) {
            next = earliest(next, entry.domain.share.parked_until());
            may_run = false;
        }
        for v in &mut entry.vcpus {
            let kick = kicked & 1u64.checked_shl(v.id).unwrap_or(0) != 0;
            woke |= sched::wake_if_due(v, &bits, kick, now) && may_run;
            next = earliest(next, sched::next_deadline(v, &entry.domain.evtchn));
            runnable |= may_run && v.is_runnable();
        }
    }
    if woke {
        percpu::kick_idle_cpu(cpu);
    }
    (next, woke, runnable)
}
