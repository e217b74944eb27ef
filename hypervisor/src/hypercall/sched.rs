//! `sched_op`, the legacy `sched_op_compat`, and `set_timer_op`.
//!
//! - `yield` lets the next runnable vCPU run (with none other, it returns
//!   at once);
//! - `block` clears the caller's upcall mask and, unless an upcall is
//!   pending, sleeps until one is; `poll` sleeps until one of up to 128
//!   ports is pending, an upcall is newly raised for the caller, or the
//!   timeout passes, leaving the mask alone. Both return 0 when woken;
//! - `watchdog` and `remote_shutdown` as `crate::timer` and Xen 4.17
//!   describe them (`remote_shutdown`: the domain by its exact id, else
//!   `ESRCH`; then the control domain only, `EPERM`; another domain, which
//!   does not run, is shut down at once and `VIRQ_DOM_EXC` raised for the
//!   caller);
//! - `pin_override` is `ENOSYS` (see `docs/abi-differences.md`).
#![forbid(unsafe_code)]

use dom0_abi::Errno;
use dom0_abi::sched::{SchedOp, SchedPoll, SchedRemoteShutdown, SchedWatchdog};

use dom0_abi::event_channel::Virq;
use dom0_abi::types::DomId;

use super::domctl::ControlEnv;
use super::{Env, read_struct, read_u32};
use crate::evtchn::EventBits;
use crate::layout::guest_range_ok;
use crate::timer::{MAX_POLL_PORTS, PollPorts, Sleep};

/// `sched_op(cmd, arg)`.
pub fn sched_op(env: &mut impl ControlEnv, cmd: u64, arg: u64) -> Result<u64, Errno> {
    match SchedOp::from_number(cmd) {
        Some(SchedOp::Yield) => yield_cpu(env),
        Some(SchedOp::Block) => block(env),
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
        Some(SchedOp::Poll) => poll(env, arg),
        Some(SchedOp::Watchdog) => {
            let w: SchedWatchdog = read_struct(env, arg)?;
            let now = env.now_ns();
            let id = env.domain().watchdogs.op(w.id, w.timeout, now)?;
            env.timers_changed();
            Ok(id)
        }
        Some(SchedOp::RemoteShutdown) => remote_shutdown(env, arg),
        Some(SchedOp::PinOverride) | None => Err(Errno::ENOSYS),
    }
}

/// `sched_op_compat(cmd, arg)`: yield, block, and `SCHEDOP_shutdown`
/// taking the reason itself in `arg`; the other commands are `ENOSYS`.
pub fn sched_op_compat(env: &mut impl Env, cmd: u64, arg: u64) -> Result<u64, Errno> {
    match SchedOp::from_number(cmd) {
        Some(SchedOp::Yield) => yield_cpu(env),
        Some(SchedOp::Block) => block(env),
        Some(SchedOp::Shutdown) => shutdown(env, (arg & 0xffff_ffff) as u32),
        _ => Err(Errno::ENOSYS),
    }
}

/// `set_timer_op(deadline)`: the caller's one-shot timer.
pub fn set_timer_op(env: &mut impl Env, deadline: u64) -> Result<u64, Errno> {
    let now = env.now_ns();
    env.vcpu().timers.set_timer_op(deadline, now);
    env.timers_changed();
    Ok(0)
}

/// `SCHEDOP_yield`: any other runnable vCPU runs before the caller
/// (`crate::sched::credit`).
fn yield_cpu(env: &mut impl Env) -> Result<u64, Errno> {
    env.vcpu().credit.yielded = true;
    env.reschedule();
    Ok(0)
}

/// Whether the caller has an upcall to take now (pending and unmasked).
fn events_need_delivery(env: &mut impl Env) -> bool {
    let me = env.vcpu().id;
    let (_, bits) = env.event_channels();
    bits.upcall_pending(me) && !bits.upcall_masked(me)
}

fn block(env: &mut impl Env) -> Result<u64, Errno> {
    let me = env.vcpu().id;
    env.event_channels().1.set_upcall_mask(me, false);
    // Asleep first, then the check: an event raised in between finds the
    // vCPU blocked and wakes it, so none is lost.
    env.vcpu().sleep = Sleep::Blocked;
    if events_need_delivery(env) {
        env.vcpu().sleep = Sleep::Awake;
    } else {
        env.reschedule();
    }
    Ok(0)
}

/// `SCHEDOP_poll`: Xen's order of checks: the port count, the port
/// array's address, a pending upcall (returns at once), then each port
/// (`EFAULT`, `EINVAL` outside the allocated buckets, at once if one is
/// pending).
fn poll(env: &mut impl Env, arg: u64) -> Result<u64, Errno> {
    let p: SchedPoll = read_struct(env, arg)?;
    if p.nr_ports > MAX_POLL_PORTS {
        return Err(Errno::EINVAL);
    }
    if !guest_range_ok(p.ports, u64::from(p.nr_ports) * 4) {
        return Err(Errno::EFAULT);
    }
    if events_need_delivery(env) {
        return Ok(0);
    }
    let mut ports = PollPorts::default();
    for i in 0..u64::from(p.nr_ports) {
        let port = read_u32(env, p.ports + i * 4)?;
        let (channels, bits) = env.event_channels();
        if port >= channels.valid_ports() {
            return Err(Errno::EINVAL);
        }
        if bits.is_pending(port) {
            return Ok(0);
        }
        ports.push(port);
    }
    let deadline = (p.timeout != 0).then_some(p.timeout);
    env.vcpu().sleep = Sleep::Polling { ports, deadline };
    // Only a timeout is a new deadline for the hypervisor's timer: without
    // one, the switch that follows looks at what is due anyway.
    if deadline.is_some() {
        env.timers_changed();
    }
    env.reschedule();
    Ok(0)
}

/// `SCHEDOP_remote_shutdown`: `EFAULT`, then `ESRCH` for a domain that
/// does not exist (`DOMID_SELF` included, as on Xen), then `EPERM` for an
/// unprivileged caller.
fn remote_shutdown(env: &mut impl ControlEnv, arg: u64) -> Result<u64, Errno> {
    let r: SchedRemoteShutdown = read_struct(env, arg)?;
    let privileged = env.domain().is_privileged();
    if r.domain_id == env.domain().id.0 {
        if !privileged {
            return Err(Errno::EPERM);
        }
        env.domain().shutdown(low_byte(r.reason));
        return Ok(0);
    }
    let target = env.other_domain(DomId(r.domain_id)).ok_or(Errno::ESRCH)?;
    if !privileged {
        return Err(Errno::EPERM);
    }
    if !target.domain.is_running() {
        // Already shut down: the first reason stays, nothing is raised.
        return Ok(0);
    }
    target.domain.shutdown(low_byte(r.reason));
    // It does not run, so it is fully shut down at once: the hardware
    // domain (the caller) hears of it.
    let (channels, bits) = env.event_channels();
    channels.send_virq(bits, Virq::DomExc, 0);
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
        assert!(env.cpu.credit.yielded, "and lets any other run first");
        assert_eq!(sched_op(&mut env, 99, 0), Err(Errno::ENOSYS));
        assert_eq!(sched_op(&mut env, 7, 0), Err(Errno::ENOSYS));
        assert_eq!(sched_op(&mut env, 2, 0x10), Err(Errno::EFAULT));
        assert_eq!(sched_op(&mut env, 5, 0x10), Err(Errno::EFAULT));
        assert!(env.domain.is_running());
    }

    fn poll_arg(env: &mut FakeMachine, ports: &[u32], timeout: u64) -> u64 {
        let list = BASE + 64;
        for (i, p) in ports.iter().enumerate() {
            env.guest[64 + i * 4..68 + i * 4].copy_from_slice(&p.to_le_bytes());
        }
        let arg = SchedPoll {
            ports: list,
            nr_ports: u32::try_from(ports.len()).unwrap(),
            pad: 0,
            timeout,
        };
        let mut bytes = [0u8; 24];
        dom0_abi::wire::Wire::to_wire(&arg, &mut bytes).unwrap();
        env.guest[..24].copy_from_slice(&bytes);
        BASE
    }

    #[test]
    fn block_unmasks_and_sleeps_unless_an_upcall_is_pending() {
        let mut env = FakeMachine::new(16);
        env.events.upcall_mask[0] = 1;
        assert_eq!(sched_op(&mut env, 1, 0), Ok(0));
        assert_eq!(env.events.upcall_mask[0], 0);
        assert_eq!(env.cpu.sleep, Sleep::Blocked);
        assert!(env.rescheduled);

        let mut env = FakeMachine::new(16);
        env.events.upcall[0] = 1;
        env.events.upcall_mask[0] = 1;
        assert_eq!(sched_op_compat(&mut env, 1, 0), Ok(0));
        assert_eq!(env.cpu.sleep, Sleep::Awake);
        assert!(!env.rescheduled);
    }

    #[test]
    fn poll_checks_and_sleeps() {
        let mut env = FakeMachine::new(16);
        let arg = poll_arg(&mut env, &[1, 2], 500);
        assert_eq!(sched_op(&mut env, 3, arg), Ok(0));
        assert_eq!(
            env.cpu.sleep,
            Sleep::Polling {
                ports: PollPorts::from(&[1, 2][..]),
                deadline: Some(500)
            }
        );
        assert!(env.rescheduled && env.timers_changed);

        let mut env = FakeMachine::new(16);
        let arg = poll_arg(&mut env, &[1], 0);
        assert_eq!(sched_op(&mut env, 3, arg), Ok(0));
        assert!(env.rescheduled && !env.timers_changed, "no timeout");

        let mut env = FakeMachine::new(16);
        env.events.pending[0] = 1 << 2;
        let arg = poll_arg(&mut env, &[1, 2, 9999], 0);
        assert_eq!(sched_op(&mut env, 3, arg), Ok(0), "port 2 is pending");
        assert_eq!(env.cpu.sleep, Sleep::Awake);

        let mut env = FakeMachine::new(16);
        let arg = poll_arg(&mut env, &[1, 64], 0);
        assert_eq!(
            sched_op(&mut env, 3, arg),
            Err(Errno::EINVAL),
            "bucket 1 does not exist"
        );
        let arg = poll_arg(&mut env, &[1; 129], 0);
        assert_eq!(sched_op(&mut env, 3, arg), Err(Errno::EINVAL));
        assert_eq!(sched_op(&mut env, 3, 0x10), Err(Errno::EFAULT));
        // An upcall to take returns before the ports are read.
        env.events.upcall[0] = 1;
        let arg = poll_arg(&mut env, &[1, 64], 0);
        assert_eq!(sched_op(&mut env, 3, arg), Ok(0));
        assert_eq!(env.cpu.sleep, Sleep::Awake);
    }

    #[test]
    fn timers_watchdogs_and_remote_shutdown() {
        let mut env = FakeMachine::new(16);
        env.now = 1000;
        assert_eq!(set_timer_op(&mut env, 5000), Ok(0));
        assert_eq!(env.cpu.timers.singleshot, Some(5000));
        assert!(env.timers_changed);
        env.guest[..8].copy_from_slice(&[0, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(sched_op(&mut env, 6, BASE), Ok(1));
        assert_eq!(
            env.domain.watchdogs.next_deadline(),
            Some(1000 + 1_000_000_000)
        );
        env.guest[..8].copy_from_slice(&[9, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(sched_op(&mut env, 6, BASE), Err(Errno::EINVAL));

        env.guest[..8].copy_from_slice(&[7, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(sched_op(&mut env, 4, BASE), Err(Errno::ESRCH));
        env.guest[..8].copy_from_slice(&[0xf0, 0x7f, 0, 0, 0, 0, 0, 0]);
        assert_eq!(sched_op(&mut env, 4, BASE), Err(Errno::ESRCH), "DOMID_SELF");
        assert!(env.domain.is_running());
        env.guest[..8].copy_from_slice(&[0, 0, 0, 0, 1, 0, 0, 0]);
        assert_eq!(sched_op(&mut env, 4, BASE), Ok(0));
        assert_eq!(env.domain.state, RunState::ShutDown(1));
    }
}
