//! Choosing what runs next, and what time and events do to vCPUs. For now
//! one physical CPU runs the vCPUs of every domain, round robin among
//! those that are runnable ([`next_vcpu`]), each for at most [`SLICE_NS`]
//! while others wait; the weighted scheduler comes next.
#![forbid(unsafe_code)]

use dom0_abi::event_channel::Virq;

use crate::evtchn::{EventBits, EventChannels};
use crate::timer::{Sleep, earliest};
use crate::vcpu::Vcpu;

/// The longest a vCPU runs while another one of the CPU waits to.
pub const SLICE_NS: u64 = 10_000_000;

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

/// The first runnable vCPU of a domain whose vCPUs may run (not shut
/// down, not paused).
pub fn first_runnable(vcpus: &[Vcpu]) -> Option<usize> {
    vcpus.iter().position(Vcpu::is_runnable)
}

/// Round robin over (domain, vCPU) pairs in id order, from the one after
/// vCPU `current` of the domain that ran (whose vCPUs are `vcpus`, and
/// may run if `may_run`): its higher runnable vCPUs, then `remote` (the
/// first runnable vCPU of the next domain in id order that has one, if
/// any), then its lower ones and `current` itself.
pub fn next_vcpu<D>(
    vcpus: &[Vcpu],
    may_run: bool,
    current: usize,
    remote: Option<(D, usize)>,
) -> Next<D> {
    let runnable = |i: &usize| may_run && vcpus.get(*i).is_some_and(Vcpu::is_runnable);
    if let Some(i) = (current.saturating_add(1)..vcpus.len()).find(runnable) {
        return Next::Local(i);
    }
    if let Some((domain, vcpu)) = remote {
        return Next::Remote(domain, vcpu);
    }
    match (0..=current).find(runnable) {
        Some(i) => Next::Local(i),
        None => Next::Nothing,
    }
}

/// The vCPU ids in a kick mask (bit `n`: vCPU `n`), lowest first.
pub fn kicked_ids(mut kicked: u64) -> impl Iterator<Item = u32> {
    core::iter::from_fn(move || {
        let id = (kicked != 0).then(|| kicked.trailing_zeros())?;
        kicked &= kicked - 1;
        Some(id)
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

    #[test]
    fn sleeping_vcpus_are_skipped_until_woken() {
        let mut v = vcpus(&[true, true]);
        v[1].sleep = Sleep::Blocked;
        assert_eq!(next_vcpu::<u16>(&v, true, 0, None), Next::Local(0));
        let bits = crate::evtchn::fake::FakeBits::default();
        assert!(!wake_if_due(&mut v[1], &bits, false, 0));
        v[1].kicked = true;
        assert!(wake_if_due(&mut v[1], &bits, false, 0));
        assert!(!v[1].kicked);
        assert_eq!(next_vcpu::<u16>(&v, true, 0, None), Next::Local(1));
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
            ports: alloc::vec![port],
            deadline: Some(15_000_000),
        };
        assert_eq!(next_deadline(&v[0], &channels), Some(15_000_000));
    }

    #[test]
    fn round_robin_over_the_vcpus_that_are_up() {
        let v = vcpus(&[true, false, true, true]);
        let next = |current| next_vcpu::<u16>(&v, true, current, None);
        assert_eq!(next(0), Next::Local(2));
        assert_eq!(next(2), Next::Local(3));
        assert_eq!(next(3), Next::Local(0));
        assert_eq!(next(1), Next::Local(2));
        let alone = vcpus(&[false, true]);
        assert_eq!(next_vcpu::<u16>(&alone, true, 1, None), Next::Local(1));
        assert_eq!(
            next_vcpu::<u16>(&vcpus(&[false, false]), true, 0, None),
            Next::Nothing
        );
        assert_eq!(next_vcpu::<u16>(&[], true, 0, None), Next::Nothing);
        assert_eq!(first_runnable(&v[1..]), Some(1));
        assert_eq!(first_runnable(&vcpus(&[false])), None);
    }

    #[test]
    fn round_robin_across_domains() {
        let v = vcpus(&[true, true, true]);
        // Higher vCPUs of the domain first, then the other domain, then
        // the lower ones and the one that ran.
        assert_eq!(next_vcpu(&v, true, 0, Some((3u16, 1))), Next::Local(1));
        assert_eq!(next_vcpu(&v, true, 2, Some((3u16, 1))), Next::Remote(3, 1));
        assert_eq!(next_vcpu::<u16>(&v, true, 2, None), Next::Local(0));
        // A domain that may not run (paused, shut down) gives way.
        assert_eq!(next_vcpu(&v, false, 0, Some((3u16, 0))), Next::Remote(3, 0));
        assert_eq!(next_vcpu::<u16>(&v, false, 0, None), Next::Nothing);
    }
}
