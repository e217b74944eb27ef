//! How a run of the hypervisor ends, as seen from the host.
//!
//! Under QEMU the hypervisor ends the machine by writing one of these codes
//! to the `isa-debug-exit` device (I/O port [`DEBUG_EXIT_PORT`]); QEMU then
//! exits with status `(code << 1) | 1`. `cargo xtask run` maps that status to
//! its own exit status, so a shell script sees `0` when dom0 powered off and
//! a distinct non-zero value for every other outcome:
//!
//! | outcome                                    | code | QEMU status | `xtask run` |
//! |--------------------------------------------|------|-------------|-------------|
//! | dom0 shut down: poweroff                   | 0    | 1           | 0           |
//! | dom0 crashed (`SHUTDOWN_crash`, or crashed by the hypervisor) | 1 | 3 | 2   |
//! | dom0 shut down: reboot                     | 2    | 5           | 3           |
//! | dom0 shut down: suspend                    | 3    | 7           | 4           |
//! | dom0 shut down: watchdog                   | 4    | 9           | 5           |
//! | dom0 shut down: soft_reset                 | 5    | 11          | 6           |
//! | hypervisor panic or fatal exception        | 6    | 13          | 10          |
//! | dom0 image rejected (or no dom0 module)    | 7    | 15          | 11          |
//!
//! `xtask` itself adds: 1 for its own errors (build failure, missing tools),
//! 12 for a run that hit its timeout, 13 for a QEMU that ended without a code.
#![forbid(unsafe_code)]

/// The I/O port of QEMU's `isa-debug-exit` device (`iobase=0xf4,iosize=0x04`).
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// Every way a run can end that the hypervisor reports to the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum HostExit {
    /// dom0 asked for `SHUTDOWN_poweroff`.
    Dom0Poweroff = 0,
    /// dom0 asked for `SHUTDOWN_crash`, or the hypervisor crashed it.
    Dom0Crash = 1,
    /// dom0 asked for `SHUTDOWN_reboot`.
    Dom0Reboot = 2,
    /// dom0 asked for `SHUTDOWN_suspend`.
    Dom0Suspend = 3,
    /// dom0 asked for `SHUTDOWN_watchdog`.
    Dom0Watchdog = 4,
    /// dom0 asked for `SHUTDOWN_soft_reset`.
    Dom0SoftReset = 5,
    /// The hypervisor panicked or took an exception it cannot handle.
    HypervisorPanic = 6,
    /// The dom0 kernel was missing or rejected by the domain builder.
    BadDom0Image = 7,
}

impl HostExit {
    /// Every outcome, in code order.
    pub const ALL: [HostExit; 8] = [
        HostExit::Dom0Poweroff,
        HostExit::Dom0Crash,
        HostExit::Dom0Reboot,
        HostExit::Dom0Suspend,
        HostExit::Dom0Watchdog,
        HostExit::Dom0SoftReset,
        HostExit::HypervisorPanic,
        HostExit::BadDom0Image,
    ];

    /// The value written to [`DEBUG_EXIT_PORT`].
    pub const fn code(self) -> u8 {
        self as u8
    }

    /// The exit status QEMU reports for this outcome.
    pub const fn qemu_status(self) -> i32 {
        ((self as i32) << 1) | 1
    }

    /// The outcome QEMU's exit status stands for, if it is one of ours.
    pub fn from_qemu_status(status: i32) -> Option<HostExit> {
        HostExit::ALL
            .into_iter()
            .find(|e| e.qemu_status() == status)
    }

    /// The exit status `cargo xtask run` gives for this outcome.
    pub const fn xtask_status(self) -> u8 {
        match self {
            HostExit::Dom0Poweroff => 0,
            HostExit::Dom0Crash => 2,
            HostExit::Dom0Reboot => 3,
            HostExit::Dom0Suspend => 4,
            HostExit::Dom0Watchdog => 5,
            HostExit::Dom0SoftReset => 6,
            HostExit::HypervisorPanic => 10,
            HostExit::BadDom0Image => 11,
        }
    }

    /// A short lower-case name, as used in logs and test expectations.
    pub const fn name(self) -> &'static str {
        match self {
            HostExit::Dom0Poweroff => "poweroff",
            HostExit::Dom0Crash => "crash",
            HostExit::Dom0Reboot => "reboot",
            HostExit::Dom0Suspend => "suspend",
            HostExit::Dom0Watchdog => "watchdog",
            HostExit::Dom0SoftReset => "soft_reset",
            HostExit::HypervisorPanic => "hypervisor-panic",
            HostExit::BadDom0Image => "bad-dom0-image",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_status_round_trips() {
        for e in HostExit::ALL {
            assert_eq!(HostExit::from_qemu_status(e.qemu_status()), Some(e));
        }
        assert_eq!(HostExit::from_qemu_status(0), None);
        assert_eq!(HostExit::from_qemu_status(2), None);
    }

    #[test]
    fn xtask_statuses_are_distinct_and_poweroff_is_zero() {
        let mut seen = [false; 256];
        for e in HostExit::ALL {
            assert!(!seen[usize::from(e.xtask_status())]);
            seen[usize::from(e.xtask_status())] = true;
        }
        assert_eq!(HostExit::Dom0Poweroff.xtask_status(), 0);
    }
}
