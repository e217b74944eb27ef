//! `event_channel_op(cmd, arg)` and the legacy `event_channel_op_compat`:
//! copy the command's structure in, let `crate::evtchn` decide, copy the
//! OUT fields back (only on success, as Xen: a port allocated before a
//! failed copy-back stays allocated).
//!
//! `cmd` is a C `int`: only its low 32 bits count. `EFAULT` when the
//! structure cannot be read; unknown commands and the FIFO ABI's
//! `init_control` (after Xen's own checks) are `ENOSYS` (see
//! `docs/abi-differences.md`). `bind_pirq` binds a physical interrupt
//! (`crate::pirq`); closing its port, or resetting the domain's ports,
//! masks the line again.
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;

use dom0_abi::Errno;
use dom0_abi::event_channel::{
    EVTCHN_OP_COMPAT_ARG, EvtchnAllocUnbound, EvtchnBindInterdomain, EvtchnBindIpi, EvtchnBindPirq,
    EvtchnBindVcpu, EvtchnBindVirq, EvtchnExpandArray, EvtchnInitControl, EvtchnOp, EvtchnOpCompat,
    EvtchnPortArg, EvtchnReset, EvtchnSetPriority, EvtchnStatus,
};
use dom0_abi::types::DomId;

use super::domctl::ControlEnv;
use super::{Env, read_struct, read_u32, write_struct};
use crate::evtchn::Binding;

/// `EVTCHNOP_bind_pirq` of one of the caller's PIRQs, notifying vCPU 0:
/// `EINVAL` past `nr_pirqs`; `EPERM` not mapped, or its GSI not
/// permitted; `EEXIST` already bound; `ENOSPC` no free port; `EBUSY` the
/// hypervisor uses the line, or another domain has it bound.
fn bind_pirq(env: &mut impl Env, pirq: u32) -> Result<u32, Errno> {
    let gsi = env.domain().pirqs.bindable(pirq)?;
    let owner = (env.domain().id, pirq);
    let port = env.event_channels().0.bind_pirq(pirq)?;
    if let Err(e) = env.irq_lines(|lines| match lines.bind(gsi, owner) {
        Ok(program) => (Ok(()), Some(program)),
        Err(e) => (Err(e), None),
    }) {
        let (channels, bits) = env.event_channels();
        let _ = channels.close(bits, port);
        return Err(e);
    }
    env.domain().pirqs.set_port(pirq, Some(port));
    Ok(port)
}

/// Unbinds the line of `pirq` (its port is being closed): masked again.
fn unbind_pirq(env: &mut impl Env, pirq: u32) {
    let domain = env.domain();
    let Some(mapped) = domain.pirqs.get(pirq) else {
        return;
    };
    domain.pirqs.set_port(pirq, None);
    let owner = (domain.id, pirq);
    env.irq_lines(|lines| ((), lines.unbind(mapped.gsi, owner)));
}

/// The domain's first port whose sends stay in it was bound: the caller's
/// event lane, which declines every send at its entry until its vCPU
/// publishes that such ports exist (`fastpath::Published::local_sends`),
/// publishes afresh at the next entry. The domain's other running vCPUs
/// publish it at their next switch or flagged entry (until then their
/// lanes only decline).
fn first_local_port(env: &mut impl ControlEnv) {
    crate::fastpath::note_work(env.vcpu().on_cpu);
}

/// Whether `dom` names another domain than the caller.
fn is_other(env: &mut impl ControlEnv, dom: u16) -> bool {
    DomId(dom) != DomId::SELF && DomId(dom) != env.domain().id
}

/// `event_channel_op(cmd, arg)`.
pub fn event_channel_op(env: &mut impl ControlEnv, cmd: u64, arg: u64) -> Result<u64, Errno> {
    let Some(op) = EvtchnOp::from_number(cmd & 0xffff_ffff) else {
        return Err(Errno::ENOSYS);
    };
    match op {
        EvtchnOp::AllocUnbound => {
            let mut a: EvtchnAllocUnbound = read_struct(env, arg)?;
            if is_other(env, a.dom) {
                // A port in another domain: the control domain's (Xen's
                // XSM_TARGET), after looking the domain up.
                let caller = env.domain().id;
                let privileged = env.domain().is_privileged();
                let remote = if DomId(a.remote_dom) == DomId::SELF {
                    caller
                } else {
                    DomId(a.remote_dom)
                };
                let pair = env.event_channels_of(DomId(a.dom)).ok_or(Errno::ESRCH)?;
                if !privileged {
                    return Err(Errno::EPERM);
                }
                if pair.peer_dying {
                    return Err(Errno::EINVAL);
                }
                a.port = pair.peer.alloc_unbound_for(remote)?;
            } else {
                let (channels, _) = env.event_channels();
                a.port = channels.alloc_unbound(DomId(a.dom), DomId(a.remote_dom))?;
            }
            write_struct(env, arg, &a)?;
        }
        EvtchnOp::BindInterdomain => {
            let mut b: EvtchnBindInterdomain = read_struct(env, arg)?;
            if is_other(env, b.remote_dom) {
                let pair = env
                    .event_channels_of(DomId(b.remote_dom))
                    .ok_or(Errno::ESRCH)?;
                b.local_port =
                    pair.own
                        .bind_interdomain_with(pair.own_bits, pair.peer, b.remote_port)?;
            } else {
                let (channels, bits) = env.event_channels();
                let first = !channels.may_send_locally();
                b.local_port =
                    channels.bind_interdomain(bits, DomId(b.remote_dom), b.remote_port)?;
                if first {
                    first_local_port(env);
                }
            }
            write_struct(env, arg, &b)?;
        }
        EvtchnOp::BindVirq => {
            let mut b: EvtchnBindVirq = read_struct(env, arg)?;
            let (channels, _) = env.event_channels();
            b.port = channels.bind_virq(b.virq, b.vcpu)?;
            // A periodic timer counts once its VIRQ goes somewhere.
            env.timers_changed();
            write_struct(env, arg, &b)?;
        }
        EvtchnOp::BindIpi => {
            let mut b: EvtchnBindIpi = read_struct(env, arg)?;
            let (channels, _) = env.event_channels();
            let first = !channels.may_send_locally();
            b.port = channels.bind_ipi(b.vcpu)?;
            if first {
                first_local_port(env);
            }
            write_struct(env, arg, &b)?;
        }
        EvtchnOp::BindVcpu => {
            let b: EvtchnBindVcpu = read_struct(env, arg)?;
            env.event_channels().0.bind_vcpu(b.port, b.vcpu)?;
        }
        EvtchnOp::Close => {
            let p: EvtchnPortArg = read_struct(env, arg)?;
            if let Some(Binding::Pirq(pirq)) =
                env.event_channels().0.channel(p.port).map(|c| c.binding)
            {
                unbind_pirq(env, pirq);
            }
            let remote = env.event_channels().0.remote_end(p.port);
            let caller = env.domain().id;
            // The peer first: when its slot is busy nothing has changed
            // yet, and the continued call closes the port whole.
            if let Some((dom, port)) = remote
                && let Some(pair) = env.event_channels_of(dom)
            {
                pair.own.close(pair.own_bits, p.port)?;
                pair.peer.disconnect(port, caller);
            } else if !env.slot_busy() {
                let (channels, bits) = env.event_channels();
                channels.close(bits, p.port)?;
            }
        }
        EvtchnOp::Send => {
            // `evtchn_send` is the port alone: read as such, not through
            // a zeroed structure buffer.
            let port = read_u32(env, arg)?;
            let (channels, bits) = env.event_channels();
            match channels.remote_end(port) {
                // The other end is another domain's: its bits.
                Some((dom, port)) => {
                    if let Some(pair) = env.event_channels_of(dom) {
                        pair.peer.raise(pair.peer_bits, port);
                    }
                }
                None => channels.send(bits, port)?,
            }
        }
        EvtchnOp::Status => {
            let mut s: EvtchnStatus = read_struct(env, arg)?;
            if is_other(env, s.dom) {
                let privileged = env.domain().is_privileged();
                let pair = env.event_channels_of(DomId(s.dom)).ok_or(Errno::ESRCH)?;
                if !privileged {
                    return Err(Errno::EPERM);
                }
                pair.peer.status(&mut s)?;
            } else {
                env.event_channels().0.status(&mut s)?;
            }
            write_struct(env, arg, &s)?;
        }
        EvtchnOp::Unmask => {
            let p: EvtchnPortArg = read_struct(env, arg)?;
            let (channels, bits) = env.event_channels();
            channels.unmask(bits, p.port)?;
        }
        EvtchnOp::Reset => {
            let r: EvtchnReset = read_struct(env, arg)?;
            let bound: Vec<u32> = env
                .domain()
                .pirqs
                .all()
                .filter_map(|(pirq, m)| m.port.map(|_| pirq))
                .collect();
            let (channels, bits) = env.event_channels();
            channels.reset(bits, DomId(r.dom))?;
            for pirq in bound {
                unbind_pirq(env, pirq);
            }
        }
        EvtchnOp::ResetCont => {
            let r: EvtchnReset = read_struct(env, arg)?;
            env.event_channels().0.reset_cont(DomId(r.dom))?;
        }
        EvtchnOp::InitControl => {
            let c: EvtchnInitControl = read_struct(env, arg)?;
            env.event_channels().0.init_control(c.vcpu, c.offset)?;
        }
        EvtchnOp::ExpandArray => {
            let _: EvtchnExpandArray = read_struct(env, arg)?;
            return Err(Errno::EOPNOTSUPP);
        }
        EvtchnOp::SetPriority => {
            let p: EvtchnSetPriority = read_struct(env, arg)?;
            env.event_channels().0.set_priority(p.port)?;
        }
        EvtchnOp::BindPirq => {
            let mut b: EvtchnBindPirq = read_struct(env, arg)?;
            b.port = bind_pirq(env, b.pirq)?;
            write_struct(env, arg, &b)?;
        }
    }
    Ok(0)
}

/// `event_channel_op_compat(op)`: an `evtchn_op` `{cmd, union}`; commands
/// 0-9 run as [`event_channel_op`] on the union, the others are `ENOSYS`.
pub fn event_channel_op_compat(env: &mut impl ControlEnv, op: u64) -> Result<u64, Errno> {
    let compat: EvtchnOpCompat = read_struct(env, op)?;
    match EvtchnOp::from_number(u64::from(compat.cmd)) {
        Some(
            EvtchnOp::BindInterdomain
            | EvtchnOp::BindVirq
            | EvtchnOp::BindPirq
            | EvtchnOp::Close
            | EvtchnOp::Send
            | EvtchnOp::Status
            | EvtchnOp::AllocUnbound
            | EvtchnOp::BindIpi
            | EvtchnOp::BindVcpu
            | EvtchnOp::Unmask,
        ) => event_channel_op(
            env,
            u64::from(compat.cmd),
            op.wrapping_add(EVTCHN_OP_COMPAT_ARG),
        ),
        _ => Err(Errno::ENOSYS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::fake::{BASE, FakeMachine};
    use dom0_abi::wire::Wire;

    fn put<T: Wire>(m: &mut FakeMachine, value: &T) {
        value.to_wire(&mut m.guest[..T::SIZE]).unwrap();
    }

    fn get<T: Wire>(m: &FakeMachine) -> T {
        T::from_wire(&m.guest).unwrap()
    }

    #[test]
    fn alloc_bind_send_deliver_bits() {
        let mut m = FakeMachine::new(16);
        put(
            &mut m,
            &EvtchnAllocUnbound {
                dom: DomId::SELF.0,
                remote_dom: DomId::SELF.0,
                port: 0,
            },
        );
        assert_eq!(
            event_channel_op(&mut m, EvtchnOp::AllocUnbound as u64, BASE),
            Ok(0)
        );
        let a = get::<EvtchnAllocUnbound>(&m).port;
        assert_eq!(a, 1);
        put(
            &mut m,
            &EvtchnBindInterdomain {
                remote_dom: DomId::SELF.0,
                remote_port: a,
                ..Default::default()
            },
        );
        assert_eq!(event_channel_op(&mut m, 0, BASE), Ok(0));
        let b = get::<EvtchnBindInterdomain>(&m).local_port;
        assert_eq!(b, 2);
        assert!(m.events.pending(b));
        put(&mut m, &EvtchnPortArg { port: b });
        assert_eq!(event_channel_op(&mut m, EvtchnOp::Send as u64, BASE), Ok(0));
        assert!(m.events.pending(a));
        put(
            &mut m,
            &EvtchnStatus {
                dom: DomId::SELF.0,
                port: a,
                ..Default::default()
            },
        );
        assert_eq!(
            event_channel_op(&mut m, EvtchnOp::Status as u64, BASE),
            Ok(0)
        );
        let s = get::<EvtchnStatus>(&m);
        assert_eq!((s.status, s.u), (2, [0, b]));
    }

    #[test]
    fn errors_and_compat() {
        let mut m = FakeMachine::new(16);
        assert_eq!(event_channel_op(&mut m, 15, BASE), Err(Errno::ENOSYS));
        assert_eq!(
            event_channel_op(&mut m, (1 << 32) | 15, BASE),
            Err(Errno::ENOSYS)
        );
        for cmd in 0..=14 {
            assert_eq!(
                event_channel_op(&mut m, cmd, 0x10),
                Err(Errno::EFAULT),
                "cmd {cmd}"
            );
        }
        assert_eq!(
            event_channel_op(&mut m, EvtchnOp::ExpandArray as u64, BASE),
            Err(Errno::EOPNOTSUPP)
        );
        assert_eq!(event_channel_op_compat(&mut m, 0x10), Err(Errno::EFAULT));
        let mut op = EvtchnOpCompat {
            cmd: EvtchnOp::BindIpi as u32,
            u: [0; 6],
        };
        put(&mut m, &op);
        assert_eq!(event_channel_op_compat(&mut m, BASE), Ok(0));
        assert_eq!(get::<EvtchnOpCompat>(&m).u[1], 1);
        op.cmd = EvtchnOp::Reset as u32;
        put(&mut m, &op);
        assert_eq!(event_channel_op_compat(&mut m, BASE), Err(Errno::ENOSYS));
    }
}
