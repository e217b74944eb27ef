//! Choosing what runs next, and what time and events do to vCPUs. For now
//! one physical CPU runs the vCPUs of one domain, round robin among those
//! that are runnable, each for at most [`SLICE_NS`] while others wait;
//! the weighted scheduler across domains comes with more domains.
#![forbid(unsafe_code)]

use dom0_abi::event_channel::Virq;

use crate::evtchn::{EventBits, EventChannels};
use crate::timer::{Sleep, earliest};
use crate::vcpu::Vcpu;

/// The longest a vCPU runs while another one of the CPU waits to.
pub const SLICE_NS: u64 = 10_000_000;

/// The vCPU to run after `current`: the next runnable one, counting on
/// from `current` and wrapping round (so `current` itself when it is the
/// only one); `None` when none is.
pub fn next_vcpu(vcpus: &[Vcpu], current: usize) -> Option<usize> {
    let n = vcpus.len();
    (1..=n)
        .map(|step| (current + step) % n)
        .find(|&i| vcpus[i].is_runnable())
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
    fn sleeping_vcpus_are_skipped_until_woken() {
        let mut v = vcpus(&[true, true]);
        v[1].sleep = Sleep::Blocked;
        assert_eq!(next_vcpu(&v, 0), Some(0));
        let bits = crate::evtchn::fake::FakeBits::default();
        assert!(!wake_if_due(&mut v[1], &bits, false, 0));
        v[1].kicked = true;
        assert!(wake_if_due(&mut v[1], &bits, false, 0));
        assert!(!v[1].kicked);
        assert_eq!(next_vcpu(&v, 0), Some(1));
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
        assert_eq!(next_vcpu(&v, 0), Some(2));
        assert_eq!(next_vcpu(&v, 2), Some(3));
        assert_eq!(next_vcpu(&v, 3), Some(0));
        assert_eq!(next_vcpu(&v, 1), Some(2));
        let alone = vcpus(&[false, true]);
        assert_eq!(next_vcpu(&alone, 1), Some(1));
        assert_eq!(next_vcpu(&vcpus(&[false, false]), 0), None);
        assert_eq!(next_vcpu(&[], 0), None);
    }
}
