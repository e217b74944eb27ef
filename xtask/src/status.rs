//! How a QEMU run ended, and the exit status `cargo xtask run` gives for it.
//!
//! The hypervisor's own outcomes come from [`HostExit`], the single source of
//! the QEMU-status mapping; this module only adds xtask's three statuses
//! (its own error, a timeout, a QEMU that ended without one of our codes).
#![forbid(unsafe_code)]

use std::fmt;
use std::time::Duration;

use hypervisor::exit::HostExit;

/// Exit status for xtask's own errors (bad arguments, build failure, missing tools).
pub const XTASK_ERROR: u8 = 1;
/// Exit status for a run stopped because it hit its timeout.
pub const TIMEOUT: u8 = 12;
/// Exit status for a QEMU that ended without one of the hypervisor's codes.
pub const NOT_OURS: u8 = 13;

/// How one QEMU run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The hypervisor wrote one of its codes to `isa-debug-exit`.
    Exit(HostExit),
    /// QEMU exited with a status that is not one of ours (0 after a triple
    /// fault with `-no-reboot`, 1 for a QEMU error, ...).
    ForeignStatus(i32),
    /// QEMU was killed by a signal it did not handle.
    Signal,
    /// QEMU itself failed (it exited with status 1, which is also the
    /// poweroff status, but printed an error): the message.
    QemuFailed(String),
    /// xtask stopped QEMU after this long.
    Timeout(Duration),
    /// xtask stopped QEMU because the serial log showed this marker (used for
    /// Xen, which never exits QEMU).
    Stopped(&'static str),
}

impl Outcome {
    /// The outcome for a QEMU that exited on its own with `status`
    /// (`None`: killed by a signal), having printed `stderr`.
    ///
    /// QEMU's own failures (bad option, missing file) exit with status 1,
    /// the same status as a dom0 poweroff; they are told apart by QEMU's
    /// error message on stderr (`qemu-system-x86_64: <message>`, where a
    /// mere warning reads `qemu-system-x86_64: warning: <message>`).
    pub fn from_qemu_exit(status: Option<i32>, stderr: &str) -> Outcome {
        let qemu_error = stderr.lines().find_map(|line| {
            let message = line.strip_prefix(crate::qemu::QEMU)?.strip_prefix(": ")?;
            (!message.starts_with("warning:")).then(|| message.to_owned())
        });
        match (status, qemu_error) {
            (None, _) => Outcome::Signal,
            (Some(1), Some(message)) => Outcome::QemuFailed(message),
            (Some(code), _) => {
                HostExit::from_qemu_status(code).map_or(Outcome::ForeignStatus(code), Outcome::Exit)
            }
        }
    }

    /// The exit status of `cargo xtask run` for this outcome.
    pub fn xtask_status(&self) -> u8 {
        match self {
            Outcome::Exit(exit) => exit.xtask_status(),
            Outcome::Timeout(_) => TIMEOUT,
            Outcome::ForeignStatus(_)
            | Outcome::Signal
            | Outcome::QemuFailed(_)
            | Outcome::Stopped(_) => NOT_OURS,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Exit(exit) => f.write_str(exit.name()),
            Outcome::ForeignStatus(code) => write!(
                f,
                "unknown (QEMU exit status {code}, not a hypervisor code)"
            ),
            Outcome::Signal => f.write_str("unknown (QEMU killed by a signal)"),
            Outcome::QemuFailed(message) => write!(f, "unknown (QEMU failed: {message})"),
            Outcome::Timeout(after) => write!(f, "timeout (stopped after {} s)", after.as_secs()),
            Outcome::Stopped(marker) => write!(f, "stopped after \"{marker}\""),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_host_exit_maps_through_the_contract() {
        for exit in HostExit::ALL {
            let outcome = Outcome::from_qemu_exit(Some(exit.qemu_status()), "");
            assert_eq!(outcome, Outcome::Exit(exit));
            assert_eq!(outcome.xtask_status(), exit.xtask_status());
        }
        assert_eq!(Outcome::from_qemu_exit(Some(1), "").xtask_status(), 0);
        assert_eq!(Outcome::from_qemu_exit(Some(3), "").xtask_status(), 2);
        assert_eq!(Outcome::from_qemu_exit(Some(15), "").xtask_status(), 11);
    }

    #[test]
    fn foreign_statuses() {
        assert_eq!(
            Outcome::from_qemu_exit(Some(0), ""),
            Outcome::ForeignStatus(0)
        );
        assert_eq!(
            Outcome::from_qemu_exit(Some(0), "").xtask_status(),
            NOT_OURS
        );
        assert_eq!(
            Outcome::from_qemu_exit(Some(17), "").xtask_status(),
            NOT_OURS
        );
        assert_eq!(Outcome::from_qemu_exit(None, "").xtask_status(), NOT_OURS);
        assert_eq!(
            Outcome::Timeout(Duration::from_secs(5)).xtask_status(),
            TIMEOUT
        );
    }

    #[test]
    fn qemu_errors_are_not_a_poweroff() {
        let error = "qemu-system-x86_64: -kernel x: Error loading uncompressed kernel\n";
        let warning = "qemu-system-x86_64: warning: host doesn't support requested feature\n";
        assert!(matches!(
            Outcome::from_qemu_exit(Some(1), error),
            Outcome::QemuFailed(_)
        ));
        assert_eq!(
            Outcome::from_qemu_exit(Some(1), error).xtask_status(),
            NOT_OURS
        );
        assert_eq!(
            Outcome::from_qemu_exit(Some(1), warning),
            Outcome::Exit(HostExit::Dom0Poweroff)
        );
        assert_eq!(
            Outcome::from_qemu_exit(Some(3), error),
            Outcome::Exit(HostExit::Dom0Crash)
        );
    }

    #[test]
    fn display_names_the_outcome() {
        assert_eq!(
            Outcome::Exit(HostExit::Dom0Poweroff).to_string(),
            "poweroff"
        );
        assert_eq!(
            Outcome::Exit(HostExit::BadDom0Image).to_string(),
            "bad-dom0-image"
        );
        assert!(Outcome::ForeignStatus(0).to_string().contains("status 0"));
    }
}
