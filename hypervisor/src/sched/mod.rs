//! Choosing what runs next, and what time and events do to vCPUs. One
//! physical CPU runs the vCPUs of every domain, shared by weight and cap
//! ([`credit`]: the choice itself; [`offer`] puts a domain's vCPUs to
//! it).
#![forbid(unsafe_code)]

pub mod credit;

use core::ops::Range;

use dom0_abi::event_channel::Virq;
use dom0_abi::types::DomId;

use crate::domain::DomainEntry;
use crate::evtchn::{EventBits, EventChannels};
use crate::timer::{Sleep, earliest};
use crate::vcpu::Vcpu;
use credit::Choice;

/// The running vCPU's time slice.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Slice {
    /// None: it runs until something changes.
    #[default]
    None,
    /// This long, from when it has been switched in (a slow switch does
    /// not eat it).
    Given(u64),
    /// Until this system time.
    EndsAt(u64),
}

impl Slice {
    /// Starts a given slice at `now`; returns when the slice ends, if it
    /// has one.
    pub fn start(&mut self, now: u64) -> Option<u64> {
        match *self {
            Slice::None => None,
            Slice::Given(length) => {
                let end = now.saturating_add(length);
                *self = Slice::EndsAt(end);
                Some(end)
            }
            Slice::EndsAt(end) => Some(end),
        }
    }
}

/// What a CPU runs next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next<D> {
    /// vCPU `n` of the domain that ran.
    Local(usize),
    /// vCPU `n` of another domain.
    Remote(D, usize),
    /// Nothing can run.
    Nothing,
}

/// Offers `entry`'s vCPUs with indices in `ids` (clamped to its vCPUs)
/// that may run on physical CPU `cpu` (runnable, not running on another
/// CPU), lowest first, to `choice`: none if the domain may not run
/// (paused, shut down) or has spent its capped budget at `now`.
pub fn offer(
    choice: &mut Choice<(DomId, usize)>,
    entry: &mut DomainEntry,
    ids: Range<usize>,
    now: u64,
    cpu: u16,
) {
    let domain = &mut entry.domain;
    if !domain.may_run() || !domain.share.eligible(now) {
        return;
    }
    let end = ids.end.min(entry.vcpus.len());
    let Some(vcpus) = entry.vcpus.get_mut(ids.start.min(end)..end) else {
        return;
    };
    for (i, v) in (ids.start..).zip(vcpus) {
        if v.may_run_on(cpu) {
            choice.offer((domain.id, i), &mut v.credit, &domain.share);
        }
    }
}

/// Whether a CPU other than `cpu` holds domain `domain`, given what each
/// CPU that is up holds (`holdings`, by CPU number; `None` for a CPU that
/// is not up). A domain runs on one CPU at a time: until remote TLB
/// flushes exist, its vCPUs share the page-table state one CPU's flushes
/// keep right (`docs/scheduler.md`).
pub fn held_elsewhere<D: PartialEq>(
    holdings: impl Iterator<Item = Option<Option<D>>>,
    domain: D,
    cpu: u16,
) -> bool {
    holder(holdings, domain, cpu).is_some()
}

/// The CPU other than `me` that holds `domain`, if any (see
/// [`held_elsewhere`]).
pub fn holder<D: PartialEq>(
    holdings: impl Iterator<Item = Option<Option<D>>>,
    domain: D,
    me: u16,
) -> Option<u32> {
    (0u32..)
        .zip(holdings)
        .filter(|&(c, _)| c != u32::from(me))
        .find(|(_, held)| held.as_ref().is_some_and(|h| h.as_ref() == Some(&domain)))
        .map(|(c, _)| c)
}

/// A CPU other than `me` that is up and holds no domain (it waits in its
/// own idle loop), lowest first.
pub fn idle_cpu<D>(holdings: impl Iterator<Item = Option<Option<D>>>, me: u16) -> Option<u32> {
    (0u32..)
        .zip(holdings)
        .find(|(c, held)| *c != u32::from(me) && matches!(held, Some(None)))
        .map(|(c, _)| c)
}

/// Whether physical CPU `cpu` may run domain `domain`'s vCPUs at all:
/// dom0 runs on the boot CPU only (the CPU that takes the machine's
/// interrupts and idles in its context), other domains anywhere.
pub fn may_run_domain_on(domain: DomId, cpu: u16) -> bool {
    domain != DomId::DOM0 || cpu == 0
}

/// The vCPU ids in a kick mask (bit `n`: vCPU `n`), lowest first.
pub fn kicked_ids(mut kicked: u64) -> impl Iterator<Item = u32> {
    core::iter::from_fn(move || {
        let id = (kicked != 0).then(|| kicked.trailing_zeros())?;
        kicked &= kicked - 1;
        Some(id)
    })
}

/// The physical CPUs other than `cpu` (bit `c`: CPU `c`) that hold the
/// context of one of `vcpus` named in `woken` (bit `n`: vCPU `n`, its
/// upcall newly raised or its wait ended): each must take an event-check
/// IPI, so that the vCPU running there delivers its upcall on its way
/// back to the guest, or the CPU idling with it looks again.
pub fn cpus_to_kick<'a>(vcpus: impl Iterator<Item = &'a Vcpu>, woken: u64, cpu: u16) -> u64 {
    vcpus
        .filter(|v| woken & 1u64.checked_shl(v.id).unwrap_or(0) != 0)
        .filter_map(|v| v.on_cpu)
        .filter(|&on| on != cpu)
        .fold(0, |mask, on| {
            mask | 1u64.checked_shl(u32::from(on)).unwrap_or(0)
        })
}

/// Marks every vCPU of `vcpus` (index = id) named in `kicked` as kicked.
pub fn mark_kicked(vcpus: &mut [Vcpu], kicked: u64) {
    for id in kicked_ids(kicked) {
        if let Some(v) = crate::index::get_mut(vcpus, u64::from(id)) {
            v.kicked = true;
        }
    }
}

/// Fires `vcpu`'s timers that are due at `now`: its `VIRQ_TIMER` (if
/// bound) is raised once however many fired.
pub fn fire_timers(
    vcpu: &mut Vcpu,
    channels: &EventChannels,
    bits: &mut (impl EventBits + ?Sized),
    now: u64,
) {
    if vcpu.timers.expire(now) {
        channels.send_virq(bits, Virq::Timer, vcpu.id);
    }
}

/// Wakes `vcpu` if it sleeps and what it waits for has come (`kicked`:
/// an upcall was newly raised for it); returns whether it woke.
pub fn wake_if_due(
    vcpu: &mut Vcpu,
    bits: &(impl EventBits + ?Sized),
    kicked: bool,
    now: u64,
) -> bool {
    let kicked = core::mem::take(&mut vcpu.kicked) || kicked;
    if vcpu.sleep.is_sleeping()
        && vcpu.sleep.wakes(
            bits.upcall_pending(vcpu.id),
            kicked,
            |p| bits.is_pending(p),
            now,
        )
    {
        vcpu.sleep = Sleep::Awake;
        return true;
    }
    false
}

/// The next time something of `vcpu` is due: a timer whose event goes
/// somewhere, or its poll's timeout.
pub fn next_deadline(vcpu: &Vcpu, channels: &EventChannels) -> Option<u64> {
    let periodic_wanted = channels.virq_bound(Virq::Timer, vcpu.id);
    earliest(
        vcpu.timers.next_deadline(periodic_wanted),
        vcpu.sleep.deadline(),
    )
}

#[cfg(test)]
mod tests {
    extern crate alloc;

    use super::*;
    use crate::vcpu::Power;

    fn vcpus(up: &[bool]) -> Vec<Vcpu> {
        up.iter()
            .enumerate()
            .map(|(i, &up)| {
                let mut v = Vcpu::new(u32::try_from(i).unwrap());
                if up {
                    v.power = Power::Up;
                }
                v
            })
            .collect()
    }

    #[test]
    fn kick_masks() {
        assert_eq!(kicked_ids(0).count(), 0);
        assert!(kicked_ids(0b1010_0001).eq([0, 5, 7]));
        assert!(kicked_ids(1 << 63).eq([63]));
        let mut v = vcpus(&[true, true, true]);
        mark_kicked(&mut v, 0b101 | 1 << 40);
        assert_eq!(
            v.iter().map(|v| v.kicked).collect::<Vec<_>>(),
            [true, false, true]
        );
    }

    /// A domain (dom0's record will do) with vCPUs up as in `up`.
    fn domain(up: &[bool]) -> DomainEntry {
        let mut entry = DomainEntry::new(crate::domain::Domain::dom0(8, 0));
        entry.vcpus = vcpus(up);
        entry
    }

    /// The vCPU the scheduler picks among `entry`'s vCPUs in `ids`.
    fn chosen(entry: &mut DomainEntry, ids: Range<usize>) -> Option<usize> {
        let mut rq = credit::Runqueue::default();
        let mut choice = rq.choice(0);
        offer(&mut choice, entry, ids, 0, 0);
        choice.finish(&mut rq).map(|c| c.id.1)
    }

    #[test]
    fn sleeping_vcpus_are_skipped_until_woken() {
        let mut d = domain(&[false, true, true]);
        d.vcpus[1].sleep = Sleep::Blocked;
        assert_eq!(chosen(&mut d, 0..3), Some(2));
        let bits = crate::evtchn::fake::FakeBits::default();
        assert!(!wake_if_due(&mut d.vcpus[1], &bits, false, 0));
        d.vcpus[1].kicked = true;
        assert!(wake_if_due(&mut d.vcpus[1], &bits, false, 0));
        assert!(!d.vcpus[1].kicked);
        assert_eq!(chosen(&mut d, 0..3), Some(1));
    }

    #[test]
    fn only_cpus_holding_a_woken_vcpu_elsewhere_are_kicked() {
        let mut v = vcpus(&[true, true, true, true]);
        v[0].on_cpu = Some(0);
        v[1].on_cpu = Some(3);
        v[2].on_cpu = Some(63);
        let kick = |woken| cpus_to_kick(v.iter(), woken, 0);
        assert_eq!(kick(0b0001), 0, "vCPU 0 runs on the kicking CPU");
        assert_eq!(kick(0b1000), 0, "vCPU 3 runs nowhere");
        assert_eq!(kick(0b0010), 1 << 3);
        assert_eq!(kick(0b1111), 1 << 3 | 1 << 63);
        assert_eq!(kick(0b0100 | 1 << 40), 1 << 63, "no vCPU 40");
        assert_eq!(cpus_to_kick(v.iter(), 0b0111, 3), 1 | 1 << 63);
    }

    #[test]
    fn a_vcpu_running_on_another_cpu_is_not_offered() {
        let mut d = domain(&[true, true, true]);
        d.vcpus[0].on_cpu = Some(1);
        d.vcpus[1].on_cpu = Some(0);
        let mut rq = credit::Runqueue::default();
        let mut offered = |d: &mut DomainEntry, cpu| {
            let mut choice = rq.choice(0);
            offer(&mut choice, d, 0..2, 0, cpu);
            choice.finish(&mut rq).map(|c| c.id.1)
        };
        assert_eq!(offered(&mut d, 0), Some(1), "CPU 0 holds vCPU 1 only");
        assert_eq!(offered(&mut d, 1), Some(0), "CPU 1 holds vCPU 0 only");
        assert_eq!(offered(&mut d, 2), None, "both run elsewhere");
        d.vcpus[0].on_cpu = None;
        assert_eq!(offered(&mut d, 2), Some(0), "vCPU 0 was saved");
        assert_eq!(chosen(&mut d, 2..3), Some(2), "vCPU 2 runs nowhere");
    }

    #[test]
    fn a_domain_is_held_by_one_cpu_and_idle_cpus_are_found() {
        let h = [Some(Some(DomId(0))), Some(None), None, Some(Some(DomId(3)))];
        assert!(held_elsewhere(h.iter().copied(), DomId(3), 0));
        assert!(!held_elsewhere(h.iter().copied(), DomId(3), 3), "its own");
        assert!(!held_elsewhere(h.iter().copied(), DomId(2), 0));
        assert_eq!(holder(h.iter().copied(), DomId(0), 1), Some(0));
        assert_eq!(holder(h.iter().copied(), DomId(0), 0), None);
        assert_eq!(idle_cpu(h.iter().copied(), 0), Some(1));
        assert_eq!(idle_cpu(h.iter().copied(), 1), None, "CPU 2 is down");
        assert!(may_run_domain_on(DomId(0), 0));
        assert!(!may_run_domain_on(DomId(0), 1));
        assert!(may_run_domain_on(DomId(4), 1));
    }

    #[test]
    fn offers_the_range_asked_of_a_domain_that_may_run() {
        let mut d = domain(&[true, true, true]);
        assert_eq!(chosen(&mut d, 1..usize::MAX), Some(1));
        assert_eq!(chosen(&mut d, 3..4), None);
        assert_eq!(chosen(&mut d, 2..3), Some(2));
        d.domain.pauses = 1;
        assert_eq!(chosen(&mut d, 0..3), None, "paused");
        d.domain.pauses = 0;
        d.domain.share.set_cap(1, 0);
        let mut rq = credit::Runqueue::default();
        let mut choice = rq.choice(0);
        offer(&mut choice, &mut d, 0..1, 0, 0);
        assert_eq!(choice.finish(&mut rq).and_then(|c| c.slice), Some(100_000));
        rq.charge(
            (DomId(0), 0),
            &mut d.vcpus[0].credit,
            &mut d.domain.share,
            100_000,
        );
        let mut choice = rq.choice(100_000);
        offer(&mut choice, &mut d, 0..3, 100_000, 0);
        assert!(choice.finish(&mut rq).is_none(), "budget spent");
        assert_eq!(d.domain.share.parked_until(), Some(10_000_000));
        assert_eq!(chosen(&mut d, 0..3), None);
    }

    #[test]
    fn timers_raise_virq_timer_and_give_deadlines() {
        let mut v = vcpus(&[true]);
        let mut channels = EventChannels::new(dom0_abi::types::DomId(0), 1);
        let mut bits = crate::evtchn::fake::FakeBits::default();
        assert_eq!(next_deadline(&v[0], &channels), None, "VIRQ_TIMER unbound");
        let port = channels.bind_virq(Virq::Timer as u32, 0).unwrap();
        assert_eq!(next_deadline(&v[0], &channels), Some(10_000_000));
        fire_timers(&mut v[0], &channels, &mut bits, 10_000_000);
        assert!(bits.pending(port));
        assert_eq!(bits.take_kicked(), 1);
        v[0].sleep = Sleep::Polling {
            ports: crate::timer::PollPorts::One(port),
            deadline: Some(15_000_000),
        };
        assert_eq!(next_deadline(&v[0], &channels), Some(15_000_000));
    }
}
