//! Domains: what the hypervisor knows about each guest.
//!
//! Invariants: a domain's run state only moves forward (running → shut
//! down); the first `SCHEDOP_shutdown_code` wins and then overrides the
//! reason of the domain's eventual shutdown or crash, as on Xen.
#![forbid(unsafe_code)]

use dom0_abi::sched::ShutdownReason;
use dom0_abi::types::DomId;

/// Where a domain is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunState {
    /// Running (or runnable).
    Running,
    /// Shut down with this reason (a `SHUTDOWN_*` value; any `u8` a guest
    /// passes is kept as is, as Xen keeps it).
    ShutDown(u8),
}

/// A guest domain.
#[derive(Debug)]
pub struct Domain {
    /// Its identifier.
    pub id: DomId,
    /// Whether it may use privileged hypercalls (dom0).
    pub privileged: bool,
    /// The toolstack's 16-byte handle (`XENVER_guest_handle`); zero for dom0.
    pub handle: [u8; 16],
    /// Pages the domain was given.
    pub nr_pages: u64,
    /// The code recorded by `SCHEDOP_shutdown_code`, if any.
    pub shutdown_code: Option<u8>,
    /// Its run state.
    pub state: RunState,
}

impl Domain {
    /// The initial domain as the dom0 builder creates it.
    pub fn dom0(nr_pages: u64) -> Domain {
        Domain {
            id: DomId::DOM0,
            privileged: true,
            handle: [0; 16],
            nr_pages,
            shutdown_code: None,
            state: RunState::Running,
        }
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_code_overrides_and_first_one_wins() {
        let mut d = Domain::dom0(16);
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
        let mut d = Domain::dom0(16);
        assert_eq!(d.shutdown(ShutdownReason::Poweroff as u8), 0);
        assert_eq!(d.crash(), 0);
        assert_eq!(d.state, RunState::ShutDown(0));
    }
}
