//! `event_channel_op` and its legacy form `event_channel_op_compat`.
//!
//! Each wrapper passes the structure its command takes, so the hypervisor
//! reads and writes only that structure; the `*_raw` forms take any
//! command and guest address so that tests can pass bad ones on purpose.
//! Results are the raw hypercall values; OUT fields are in the structure.

use dom0_abi::Hypercall;
use dom0_abi::event_channel::{
    EvtchnAllocUnbound, EvtchnBindInterdomain, EvtchnBindIpi, EvtchnBindVcpu, EvtchnBindVirq,
    EvtchnExpandArray, EvtchnInitControl, EvtchnOp, EvtchnOpCompat, EvtchnPortArg, EvtchnReset,
    EvtchnSetPriority, EvtchnStatus,
};

use super::{addr_of_mut, raw};

/// `event_channel_op(cmd, arg)` with raw arguments.
///
/// # Safety
/// `arg` must be valid for the structure command `cmd` reads and writes,
/// or be memory no Rust code uses.
pub unsafe fn event_channel_op_raw(cmd: u64, arg: u64) -> i64 {
    // SAFETY: the caller's contract.
    unsafe { raw::hypercall2(u64::from(Hypercall::EventChannelOp.number()), cmd, arg) }
}

/// `event_channel_op_compat(op)` with a raw argument.
///
/// # Safety
/// `op` must be valid for an `evtchn_op` (28 bytes), or be memory no Rust
/// code uses.
pub unsafe fn event_channel_op_compat_raw(op: u64) -> i64 {
    // SAFETY: the caller's contract.
    unsafe { raw::hypercall1(u64::from(Hypercall::EventChannelOpCompat.number()), op) }
}

/// Issues `cmd` with `arg`, the structure that command takes.
fn op<T>(cmd: EvtchnOp, arg: &mut T) -> i64 {
    // SAFETY: every caller passes the structure `cmd` reads and writes;
    // the hypervisor touches no more than its size.
    unsafe { event_channel_op_raw(cmd as u64, addr_of_mut(arg)) }
}

/// `EVTCHNOP_alloc_unbound`; the new port is in `arg.port`.
pub fn evtchn_alloc_unbound(arg: &mut EvtchnAllocUnbound) -> i64 {
    op(EvtchnOp::AllocUnbound, arg)
}

/// `EVTCHNOP_bind_interdomain`; the new port is in `arg.local_port`.
pub fn evtchn_bind_interdomain(arg: &mut EvtchnBindInterdomain) -> i64 {
    op(EvtchnOp::BindInterdomain, arg)
}

/// `EVTCHNOP_bind_virq`; the new port is in `arg.port`.
pub fn evtchn_bind_virq(arg: &mut EvtchnBindVirq) -> i64 {
    op(EvtchnOp::BindVirq, arg)
}

/// `EVTCHNOP_bind_ipi`; the new port is in `arg.port`.
pub fn evtchn_bind_ipi(arg: &mut EvtchnBindIpi) -> i64 {
    op(EvtchnOp::BindIpi, arg)
}

/// `EVTCHNOP_bind_vcpu`.
pub fn evtchn_bind_vcpu(port: u32, vcpu: u32) -> i64 {
    op(EvtchnOp::BindVcpu, &mut EvtchnBindVcpu { port, vcpu })
}

/// `EVTCHNOP_status`: fills `arg`.
pub fn evtchn_status(arg: &mut EvtchnStatus) -> i64 {
    op(EvtchnOp::Status, arg)
}

/// `EVTCHNOP_close`.
pub fn evtchn_close(port: u32) -> i64 {
    op(EvtchnOp::Close, &mut EvtchnPortArg { port })
}

/// `EVTCHNOP_send`.
pub fn evtchn_send(port: u32) -> i64 {
    op(EvtchnOp::Send, &mut EvtchnPortArg { port })
}

/// `EVTCHNOP_unmask`.
pub fn evtchn_unmask(port: u32) -> i64 {
    op(EvtchnOp::Unmask, &mut EvtchnPortArg { port })
}

/// `EVTCHNOP_reset` of domain `dom`.
pub fn evtchn_reset(dom: u16) -> i64 {
    op(EvtchnOp::Reset, &mut EvtchnReset { dom })
}

/// `EVTCHNOP_reset_cont` of domain `dom` (the continuation of a reset).
pub fn evtchn_reset_cont(dom: u16) -> i64 {
    op(EvtchnOp::ResetCont, &mut EvtchnReset { dom })
}

/// `EVTCHNOP_init_control`; `arg.link_bits` is written on success.
pub fn evtchn_init_control(arg: &mut EvtchnInitControl) -> i64 {
    op(EvtchnOp::InitControl, arg)
}

/// `EVTCHNOP_expand_array`.
pub fn evtchn_expand_array(array_gfn: u64) -> i64 {
    op(EvtchnOp::ExpandArray, &mut EvtchnExpandArray { array_gfn })
}

/// `EVTCHNOP_set_priority`.
pub fn evtchn_set_priority(port: u32, priority: u32) -> i64 {
    op(
        EvtchnOp::SetPriority,
        &mut EvtchnSetPriority { port, priority },
    )
}

/// `event_channel_op_compat` with `op`; OUT fields land in `op.u`.
pub fn evtchn_compat(op: &mut EvtchnOpCompat) -> i64 {
    // SAFETY: `op` is a whole `evtchn_op`, which is all the hypervisor
    // reads and writes.
    unsafe { event_channel_op_compat_raw(addr_of_mut(op)) }
}
