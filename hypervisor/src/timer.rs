//! Guest timers and sleeping vCPUs, as pure state: each vCPU's one-shot
//! and periodic timers (both raise its `VIRQ_TIMER`), a domain's
//! watchdogs, and what a blocked or polling vCPU waits for.
//!
//! Xen 4.17's rules, which this module keeps:
//! - a PV vCPU starts with a 10 ms periodic timer whose last event was at
//!   system time 0; setting a period (1 ms at least) raises the event at
//!   once when a period has passed since the last one, which is Xen's
//!   quirk of pending an event as soon as a periodic timer is set;
//! - `set_timer_op` and `VCPUOP_set_singleshot_timer` set the same one-shot
//!   timer. `set_timer_op(0)` cancels it; a deadline that is negative as a
//!   signed number, or 2^50 ns or more ahead, fires 100 ms from now instead
//!   (guests whose jiffies wrapped ask for such deadlines);
//!   `set_singleshot_timer` takes any deadline as it is: one already past
//!   replaces the armed one and fires at once (`VCPU_SSHOTTMR_future` is
//!   ignored);
//! - a domain has two watchdogs: id 0 takes the first free one and returns
//!   its id (1 or 2; `ENOSPC` when both are in use), another id re-arms
//!   that one, or frees it with timeout 0 (`EINVAL` for an id not in use);
//!   when one expires the domain shuts down with `SHUTDOWN_watchdog`.
//!
//! Times are nanoseconds of system time (`crate::time`).
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;

use dom0_abi::Errno;

/// The periodic timer a PV vCPU starts with (Xen's 100 Hz).
pub const DEFAULT_PERIOD_NS: u64 = 10_000_000;
/// The shortest period `VCPUOP_set_periodic_timer` accepts.
pub const MIN_PERIOD_NS: u64 = 1_000_000;
/// The longest period: Xen's `STIME_DELTA_MAX`, the largest `s_time_t`
/// delta a timer accepts.
pub const MAX_PERIOD_NS: u64 = (1 << 62) - 1;
/// A `set_timer_op` deadline this far ahead (or negative) is taken as a
/// wrapped one.
pub const FAR_FUTURE_NS: u64 = 1 << 50;
/// When such a deadline fires instead: this long from now.
pub const WRAPPED_DEADLINE_DELAY_NS: u64 = 100_000_000;
/// Watchdogs per domain (Xen's `NR_DOMAIN_WATCHDOG_TIMERS`).
pub const WATCHDOGS: usize = 2;
/// Nanoseconds in a second.
const NS_PER_SEC: u64 = 1_000_000_000;
/// Ports one `SCHEDOP_poll` may name.
pub const MAX_POLL_PORTS: u32 = 128;

/// A vCPU's timers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuTimers {
    /// The one-shot deadline, if armed.
    pub singleshot: Option<u64>,
    /// The periodic timer's period (0: stopped).
    pub period: u64,
    /// When the periodic timer last raised its event.
    pub last_periodic: u64,
}

impl Default for VcpuTimers {
    fn default() -> Self {
        VcpuTimers {
            singleshot: None,
            period: DEFAULT_PERIOD_NS,
            last_periodic: 0,
        }
    }
}

impl VcpuTimers {
    /// `set_timer_op(deadline)` at `now`.
    pub fn set_timer_op(&mut self, deadline: u64, now: u64) {
        self.singleshot = if deadline == 0 {
            None
        } else if deadline.cast_signed() < 0 || deadline.saturating_sub(now) >= FAR_FUTURE_NS {
            Some(now.saturating_add(WRAPPED_DEADLINE_DELAY_NS))
        } else {
            Some(deadline)
        };
    }

    /// `VCPUOP_set_singleshot_timer(deadline)`: a deadline already past
    /// replaces the armed one too, and fires at the next expiry check.
    pub fn set_singleshot(&mut self, deadline: u64) {
        self.singleshot = Some(deadline);
    }

    /// `VCPUOP_set_periodic_timer(period)` (0: stop) at `now`; returns
    /// whether the event is to be raised at once.
    pub fn set_periodic(&mut self, period: u64, now: u64) -> bool {
        self.period = period;
        period != 0 && self.periodic_due(now)
    }

    /// Whether the periodic timer is due at `now`; if it is, its period
    /// starts again at `now`.
    fn periodic_due(&mut self, now: u64) -> bool {
        if now < self.last_periodic.saturating_add(self.period) {
            return false;
        }
        self.last_periodic = now;
        true
    }

    /// Fires what is due at `now`; returns whether `VIRQ_TIMER` is to be
    /// raised (once, however many timers fired).
    pub fn expire(&mut self, now: u64) -> bool {
        let singleshot = self.singleshot.is_some_and(|at| at <= now);
        if singleshot {
            self.singleshot = None;
        }
        let periodic = self.period != 0 && self.periodic_due(now);
        singleshot || periodic
    }

    /// The next time one of the timers fires; the periodic one counts
    /// only if `periodic_wanted` (its event goes somewhere).
    pub fn next_deadline(&self, periodic_wanted: bool) -> Option<u64> {
        let periodic = (periodic_wanted && self.period != 0)
            .then(|| self.last_periodic.saturating_add(self.period));
        earliest(self.singleshot, periodic)
    }
}

/// The earlier of two optional deadlines.
pub fn earliest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Whether a vCPU runs, or sleeps in the hypervisor and on what.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Sleep {
    /// Not sleeping.
    #[default]
    Awake,
    /// `SCHEDOP_block`: until an upcall is pending.
    Blocked,
    /// `SCHEDOP_poll`: until one of `ports` is pending, an upcall is
    /// newly raised, or `deadline` passes.
    Polling {
        /// The ports polled.
        ports: PollPorts,
        /// The timeout, if one was given.
        deadline: Option<u64>,
    },
}

/// The ports a vCPU polls: a poll of one port, the common case (every
/// round of an event ping-pong), is kept without a heap allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PollPorts {
    /// Exactly one port.
    One(u32),
    /// Any other number of ports.
    Many(Vec<u32>),
}

impl Default for PollPorts {
    fn default() -> Self {
        PollPorts::Many(Vec::new())
    }
}

impl PollPorts {
    /// Adds `port` at the end.
    pub fn push(&mut self, port: u32) {
        match self {
            PollPorts::Many(ports) if ports.is_empty() => *self = PollPorts::One(port),
            PollPorts::One(first) => *self = PollPorts::Many(alloc::vec![*first, port]),
            PollPorts::Many(ports) => ports.push(port),
        }
    }

    /// The ports, in the order pushed.
    pub fn as_slice(&self) -> &[u32] {
        match self {
            PollPorts::One(port) => core::slice::from_ref(port),
            PollPorts::Many(ports) => ports,
        }
    }
}

impl From<&[u32]> for PollPorts {
    fn from(ports: &[u32]) -> Self {
        let mut all = PollPorts::default();
        for &port in ports {
            all.push(port);
        }
        all
    }
}

impl Sleep {
    /// Whether the vCPU sleeps.
    pub fn is_sleeping(&self) -> bool {
        *self != Sleep::Awake
    }

    /// The timeout of a poll, if any.
    pub fn deadline(&self) -> Option<u64> {
        match self {
            Sleep::Polling { deadline, .. } => *deadline,
            _ => None,
        }
    }

    /// Whether a sleeping vCPU wakes, given whether it has an upcall
    /// pending, whether one was newly raised for it (`kicked`), which
    /// ports are pending, and the time.
    pub fn wakes(
        &self,
        upcall_pending: bool,
        kicked: bool,
        port_pending: impl Fn(u32) -> bool,
        now: u64,
    ) -> bool {
        match self {
            Sleep::Awake => true,
            Sleep::Blocked => upcall_pending || kicked,
            Sleep::Polling { ports, deadline } => {
                kicked
                    || deadline.is_some_and(|at| at <= now)
                    || ports.as_slice().iter().any(|&p| port_pending(p))
            }
        }
    }
}

/// One watchdog.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Watchdog {
    /// Not in use.
    #[default]
    Free,
    /// In use, expiring at this time.
    Armed(u64),
    /// In use, expired (it fires once).
    Fired,
}

/// A domain's watchdogs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Watchdogs {
    slots: [Watchdog; WATCHDOGS],
}

impl Watchdogs {
    /// `SCHEDOP_watchdog(id, timeout)` at `now` (timeout in seconds).
    pub fn op(&mut self, id: u32, timeout: u32, now: u64) -> Result<u64, Errno> {
        let deadline = now.saturating_add(u64::from(timeout) * NS_PER_SEC);
        if id == 0 {
            let free = self
                .slots
                .iter()
                .position(|w| *w == Watchdog::Free)
                .ok_or(Errno::ENOSPC)?;
            self.slots[free] = Watchdog::Armed(deadline);
            return Ok(free as u64 + 1);
        }
        let slot = usize::try_from(id - 1)
            .ok()
            .and_then(|i| self.slots.get_mut(i))
            .filter(|w| **w != Watchdog::Free)
            .ok_or(Errno::EINVAL)?;
        *slot = if timeout == 0 {
            Watchdog::Free
        } else {
            Watchdog::Armed(deadline)
        };
        Ok(0)
    }

    /// The next expiry.
    pub fn next_deadline(&self) -> Option<u64> {
        self.slots
            .iter()
            .map(|w| match *w {
                Watchdog::Armed(at) => Some(at),
                _ => None,
            })
            .fold(None, earliest)
    }

    /// Whether one expires at `now` (it stays in use, fired).
    pub fn take_expired(&mut self, now: u64) -> bool {
        let mut expired = false;
        for w in &mut self.slots {
            if matches!(*w, Watchdog::Armed(at) if at <= now) {
                *w = Watchdog::Fired;
                expired = true;
            }
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn periodic_starts_at_ten_ms_and_pends_when_set() {
        let mut t = VcpuTimers::default();
        assert_eq!(t.next_deadline(true), Some(10 * MS));
        assert_eq!(t.next_deadline(false), None);
        assert!(!t.expire(9 * MS));
        assert!(t.expire(10 * MS));
        assert_eq!(t.next_deadline(true), Some(20 * MS));
        // A period has passed since the last event: setting one raises it.
        assert!(t.set_periodic(5 * MS, 30 * MS));
        assert_eq!(t.next_deadline(true), Some(35 * MS));
        assert!(!t.set_periodic(20 * MS, 31 * MS));
        assert!(!t.set_periodic(0, 100 * MS));
        assert_eq!(t.next_deadline(true), None);
        assert!(!t.expire(200 * MS));
    }

    #[test]
    fn set_timer_op_rules() {
        let mut t = VcpuTimers {
            period: 0,
            ..VcpuTimers::default()
        };
        t.set_timer_op(50 * MS, 10 * MS);
        assert_eq!(t.singleshot, Some(50 * MS));
        t.set_timer_op(0, 10 * MS);
        assert_eq!(t.singleshot, None);
        t.set_timer_op(1 << 63, 10 * MS);
        assert_eq!(t.singleshot, Some(110 * MS));
        t.set_timer_op(10 * MS + FAR_FUTURE_NS, 10 * MS);
        assert_eq!(t.singleshot, Some(110 * MS));
        t.set_timer_op(10 * MS + FAR_FUTURE_NS - 1, 10 * MS);
        assert_eq!(t.singleshot, Some(10 * MS + FAR_FUTURE_NS - 1));
        // A past deadline is kept: it fires at the next expiry check.
        t.set_timer_op(5 * MS, 10 * MS);
        assert!(t.expire(10 * MS));
        assert!(!t.expire(11 * MS));
    }

    #[test]
    fn singleshot_in_the_past_replaces_the_armed_one() {
        let mut t = VcpuTimers::default();
        t.set_singleshot(40 * MS);
        t.set_singleshot(5 * MS);
        assert_eq!(t.singleshot, Some(5 * MS));
        assert!(t.expire(10 * MS));
        assert_eq!(t.singleshot, None);
    }

    #[test]
    fn sleeping() {
        let pending = |p: u32| p == 7;
        assert!(!Sleep::Blocked.wakes(false, false, pending, 0));
        assert!(Sleep::Blocked.wakes(true, false, pending, 0));
        let poll = |ports: &[u32], deadline| Sleep::Polling {
            ports: ports.into(),
            deadline,
        };
        assert!(!poll(&[3, 4], None).wakes(true, false, pending, 0));
        assert!(poll(&[3, 4], None).wakes(false, true, pending, 0));
        assert!(poll(&[3, 7], None).wakes(false, false, pending, 0));
        assert!(!poll(&[3], Some(MS)).wakes(false, false, pending, MS - 1));
        assert!(poll(&[3], Some(MS)).wakes(false, false, pending, MS));
        assert_eq!(poll(&[3], Some(MS)).deadline(), Some(MS));
    }

    #[test]
    fn poll_ports_keep_their_order() {
        assert_eq!(PollPorts::from(&[][..]).as_slice(), &[] as &[u32]);
        assert_eq!(PollPorts::from(&[5][..]), PollPorts::One(5));
        let many = PollPorts::from(&[5, 1, 9][..]);
        assert_eq!(many.as_slice(), &[5, 1, 9]);
        assert_eq!(many, PollPorts::Many(vec![5, 1, 9]));
    }

    #[test]
    fn watchdogs() {
        let mut w = Watchdogs::default();
        assert_eq!(w.op(1, 5, 0), Err(Errno::EINVAL));
        assert_eq!(w.op(0, 5, 0), Ok(1));
        assert_eq!(w.op(0, 1, 0), Ok(2));
        assert_eq!(w.op(0, 1, 0), Err(Errno::ENOSPC));
        assert_eq!(w.next_deadline(), Some(NS_PER_SEC));
        assert!(!w.take_expired(NS_PER_SEC - 1));
        assert!(w.take_expired(NS_PER_SEC));
        assert!(!w.take_expired(NS_PER_SEC), "it fires once");
        assert_eq!(w.next_deadline(), Some(5 * NS_PER_SEC));
        assert_eq!(
            w.op(0, 1, 0),
            Err(Errno::ENOSPC),
            "a fired one stays in use"
        );
        assert_eq!(w.op(2, 0, 0), Ok(0));
        assert_eq!(w.op(2, 0, 0), Err(Errno::EINVAL));
        assert_eq!(w.op(3, 1, 0), Err(Errno::EINVAL));
        assert_eq!(w.op(u32::MAX, 1, 0), Err(Errno::EINVAL));
        assert_eq!(w.op(1, 10, 0), Ok(0));
        assert_eq!(w.next_deadline(), Some(10 * NS_PER_SEC));
    }
}
