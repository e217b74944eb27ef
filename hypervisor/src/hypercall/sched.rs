//! `sched_op` and the legacy `sched_op_compat`.
//!
//! `yield` lets the domain's next runnable vCPU run (round robin on the
//! one physical CPU; with no other vCPU up it returns at once). `block`,
//! `poll`, `remote_shutdown`, `watchdog` and `pin_override` return
//! `-ENOSYS` until events and more domains exist.
#![forbid(unsafe_code)]

use dom0_abi::Errno;
use dom0_abi::sched::SchedOp;

use super::{Env, read_u32};

/// `sched_op(cmd, arg)`.
pub fn sched_op(env: &mut impl Env, cmd: u64, arg: u64) -> Result<u64, Errno> {
    match SchedOp::from_number(cmd) {
        Some(SchedOp::Yield) => yield_cpu(env),
        Some(SchedOp::Shutdown) => {
            let reason = read_u32(env, arg)?;
            shutdown(env, reason)
        }
        Some(SchedOp::ShutdownCode) => {
            let reason = read_u32(env, arg)?;
            // Xen keeps the low byte of the reason, unchecked.
            env.domain().set_shutdown_code(low_byte(reason));
            Ok(0)
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// `sched_op_compat(cmd, arg)`: as [`sched_op`], but `SCHEDOP_shutdown`
/// takes the reason itself in `arg`.
pub fn sched_op_compat(env: &mut impl Env, cmd: u64, arg: u64) -> Result<u64, Errno> {
    match SchedOp::from_number(cmd) {
        Some(SchedOp::Yield) => yield_cpu(env),
        Some(SchedOp::Shutdown) => shutdown(env, (arg & 0xffff_ffff) as u32),
        _ => Err(Errno::ENOSYS),
    }
}

fn yield_cpu(env: &mut impl Env) -> Result<u64, Errno> {
    env.reschedule();
    Ok(0)
}

fn shutdown(env: &mut impl Env, reason: u32) -> Result<u64, Errno> {
    env.domain().shutdown(low_byte(reason));
    Ok(0)
}

fn low_byte(reason: u32) -> u8 {
    (reason & 0xff) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RunState;
    use crate::mm::fake::{BASE, FakeMachine};

    #[test]
    fn shutdown_and_code() {
        let mut env = FakeMachine::new(16);
        env.guest[..4].copy_from_slice(&1u32.to_le_bytes());
        assert_eq!(sched_op(&mut env, 5, BASE), Ok(0));
        env.guest[..4].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(sched_op(&mut env, 2, BASE), Ok(0));
        assert_eq!(env.domain.state, RunState::ShutDown(1));
    }

    #[test]
    fn compat_shutdown_takes_the_reason_directly() {
        let mut env = FakeMachine::new(16);
        assert_eq!(sched_op_compat(&mut env, 2, 3), Ok(0));
        assert_eq!(env.domain.state, RunState::ShutDown(3));
    }

    #[test]
    fn errors() {
        let mut env = FakeMachine::new(16);
        assert_eq!(sched_op(&mut env, 0, 0), Ok(0));
        assert!(env.rescheduled, "yield asks for the next vCPU");
        assert_eq!(sched_op(&mut env, 99, 0), Err(Errno::ENOSYS));
        assert_eq!(sched_op(&mut env, 2, 0x10), Err(Errno::EFAULT));
        assert_eq!(sched_op(&mut env, 5, 0x10), Err(Errno::EFAULT));
        assert!(env.domain.is_running());
    }
}
