//! `sched_op(cmd, arg)`: yield, block, shutdown, poll.
//!
//! A domain uses it on itself (except `remote_shutdown`). Shutdown of the
//! hardware domain ends the machine: on Xen poweroff halts, reboot, watchdog
//! and soft_reset restart, crash reboots (or halts with `noreboot`); this
//! hypervisor reports the reason to the host instead (see `HostExit`).
//!
//! Invariant (Xen semantics, kept): the *first* reason recorded for a domain
//! wins. `SCHEDOP_shutdown_code` records a reason without shutting down; a
//! later `SCHEDOP_shutdown` with another reason then shuts down with the
//! recorded one.

numbered_enum! {
    /// `SCHEDOP_*`: the `cmd` argument of `sched_op`. Unknown: `ENOSYS`.
    SchedOp {
        /// `arg` ignored. Gives up the CPU: the domain's next runnable vCPU
        /// runs before this one continues (round robin here); returns 0.
        Yield = 0, "yield";
        /// `arg` ignored. Clears the vCPU's `evtchn_upcall_mask`, then
        /// sleeps until an upcall is pending for it (not at all if one is);
        /// returns 0, and the upcall is taken on the way out. Also in
        /// `sched_op_compat`.
        Block = 1, "block";
        /// `arg`: [`SchedShutdown`] (IN). Shuts the calling domain down with
        /// the recorded or given reason; does not return to a dom0 caller.
        /// `EFAULT`: `arg` unreadable (nothing happens).
        Shutdown = 2, "shutdown";
        /// `arg`: [`SchedPoll`] (IN). Sleeps until one of the ports is
        /// pending, an upcall is newly raised for the caller, or system
        /// time `timeout` (0: none) passes; returns 0 (at once if an
        /// upcall is pending and unmasked, or a listed port is pending).
        /// Leaves `evtchn_upcall_mask` alone. In this order: `EFAULT`: `arg`
        /// unreadable; `EINVAL`: more than 128 ports; `EFAULT`: the port
        /// list outside guest space, or unreadable; `EINVAL`: a port outside
        /// the domain's allocated buckets.
        Poll = 3, "poll";
        /// `arg`: [`SchedRemoteShutdown`] (IN). Shuts a domain down by id
        /// with the low byte of `reason`. `EFAULT`: unreadable; `ESRCH`: no
        /// such domain (also `DOMID_SELF`); `EPERM`: the caller is not
        /// privileged (Xen: nor the domain's device model).
        RemoteShutdown = 4, "remote_shutdown";
        /// `arg`: [`SchedShutdown`] (IN). Records the reason a later
        /// shutdown will report, if none is recorded yet; returns 0.
        /// `EFAULT`: `arg` unreadable.
        ShutdownCode = 5, "shutdown_code";
        /// `arg`: [`SchedWatchdog`] (IN). Id 0 creates one of the domain's
        /// two watchdogs, expiring `timeout` seconds from now, and returns
        /// its id (1 or 2); another id re-arms that watchdog, or frees it
        /// with timeout 0. An expired watchdog shuts the domain down with
        /// `SHUTDOWN_watchdog` (once; it stays in use). `EFAULT`:
        /// unreadable; `EINVAL`: an id not in use; `ENOSPC`: both in use
        /// (Xen 4.17 returns it zero-extended from 32 bits).
        Watchdog = 6, "watchdog";
        /// `arg`: [`SchedPinOverride`] (IN). Hardware domain only (`EPERM`);
        /// temporarily pins the vCPU to a physical CPU (-1 ends it).
        /// `EINVAL`: bad CPU; `EFAULT`: unreadable. Not implemented here
        /// (`ENOSYS`).
        PinOverride = 7, "pin_override";
    }
}

numbered_enum! {
    /// `SHUTDOWN_*`: why a domain shuts down.
    ShutdownReason {
        /// Exited normally; clean up and destroy.
        Poweroff = 0, "poweroff";
        /// Clean up, destroy and restart.
        Reboot = 1, "reboot";
        /// Clean up and save the state for a later resume (RDX of the
        /// compat call carries the start_info MFN).
        Suspend = 2, "suspend";
        /// The domain crashed (also what the hypervisor records when it
        /// kills a misbehaving domain).
        Crash = 3, "crash";
        /// A domain watchdog expired.
        Watchdog = 4, "watchdog";
        /// Reset the domain in place, keeping its memory.
        SoftReset = 5, "soft_reset";
    }
}

/// The largest defined shutdown reason (`SHUTDOWN_MAX`).
pub const SHUTDOWN_MAX: u32 = ShutdownReason::SoftReset as u32;

/// `struct sched_shutdown` (4 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedShutdown {
    /// IN: a [`ShutdownReason`] number. Xen keeps only the low 8 bits and
    /// does not check the value.
    pub reason: u32,
}

/// `struct sched_poll` (24 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedPoll {
    /// IN: guest pointer to an array of `u32` event-channel ports.
    pub ports: u64,
    /// IN: number of ports (at most 128).
    pub nr_ports: u32,
    /// Padding.
    pub pad: u32,
    /// IN: absolute system time (ns) to give up at; 0 = no timeout.
    pub timeout: u64,
}

/// `struct sched_remote_shutdown` (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedRemoteShutdown {
    /// IN: the domain to shut down.
    pub domain_id: u16,
    /// Padding.
    pub pad: u16,
    /// IN: a [`ShutdownReason`] number.
    pub reason: u32,
}

/// `struct sched_watchdog` (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedWatchdog {
    /// IN: watchdog id (0 = create a new one).
    pub id: u32,
    /// IN: timeout in seconds (0 = destroy).
    pub timeout: u32,
}

/// `struct sched_pin_override` (4 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedPinOverride {
    /// IN: physical CPU to pin to, or negative to end the override.
    pub pcpu: i32,
}

crate::assert_layout!(SchedShutdown, 4, { reason: 0 });
crate::assert_layout!(SchedPoll, 24, { ports: 0, nr_ports: 8, pad: 12, timeout: 16 });
crate::assert_layout!(SchedRemoteShutdown, 8, { domain_id: 0, pad: 2, reason: 4 });
crate::assert_layout!(SchedWatchdog, 8, { id: 0, timeout: 4 });
crate::assert_layout!(SchedPinOverride, 4, { pcpu: 0 });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(SchedOp::from_number(5), Some(SchedOp::ShutdownCode));
        assert_eq!(SchedOp::from_number(8), None);
        assert_eq!(ShutdownReason::from_number(3), Some(ShutdownReason::Crash));
        assert_eq!(ShutdownReason::SoftReset.name(), "soft_reset");
        assert_eq!(ShutdownReason::from_number(6), None);
        assert_eq!(SHUTDOWN_MAX, 5);
    }
}
