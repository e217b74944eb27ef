//! `vcpu_op`: bringing vCPUs up and down, reading their runstate, their
//! timers, and sending them NMIs.
//!
//! `vcpuid` is passed as a full register; the hypervisor reads it as an
//! `unsigned int` (Xen 4.17 ignores bits 63:32). The `*_raw` forms take
//! guest addresses so that tests can pass bad pointers on purpose.

use dom0_abi::Hypercall;
use dom0_abi::cpu::VcpuGuestContext;
use dom0_abi::vcpu::{VcpuOpCmd, VcpuRunstateInfo, VcpuSetPeriodicTimer, VcpuSetSingleshotTimer};

use super::{addr_of, addr_of_mut, raw};

/// `vcpu_op(cmd, vcpuid, arg)` with raw arguments.
///
/// # Safety
/// `arg` must be valid for what sub-op `cmd` reads and writes (or point to
/// memory no Rust code uses); a context it installs must describe correct
/// code, stacks and page tables for as long as the vCPU runs.
pub unsafe fn vcpu_op_raw(cmd: u64, vcpuid: u64, arg: u64) -> i64 {
    // SAFETY: the caller's contract.
    unsafe { raw::hypercall3(u64::from(Hypercall::VcpuOp.number()), cmd, vcpuid, arg) }
}

/// `VCPUOP_initialise` of vCPU `vcpuid` with `ctx`.
///
/// # Safety
/// Once the vCPU is brought up it runs `ctx`: its entry point, stack,
/// page tables, trap table and callbacks must be correct for it and used
/// by nothing else.
pub unsafe fn vcpu_initialise(vcpuid: u64, ctx: &VcpuGuestContext) -> i64 {
    // SAFETY: `ctx` is readable; what it describes is the caller's
    // contract.
    unsafe { vcpu_op_raw(VcpuOpCmd::Initialise as u64, vcpuid, addr_of(ctx)) }
}

/// `VCPUOP_up`: starts (or resumes) an initialised vCPU.
///
/// # Safety
/// The vCPU's context (as initialised, or as it was when it went down)
/// must still describe correct code and memory.
pub unsafe fn vcpu_up(vcpuid: u64) -> i64 {
    // SAFETY: the argument is not read; the context is the caller's
    // contract.
    unsafe { vcpu_op_raw(VcpuOpCmd::Up as u64, vcpuid, 0) }
}

/// `VCPUOP_down`: stops a vCPU (the caller itself, or another one of the
/// domain). Taking down the last vCPU that is up shuts the domain down.
pub fn vcpu_down(vcpuid: u64) -> i64 {
    // SAFETY: the argument is not read; a stopped vCPU touches no memory.
    unsafe { vcpu_op_raw(VcpuOpCmd::Down as u64, vcpuid, 0) }
}

/// `VCPUOP_is_up`: 1 if the vCPU is up, 0 if not, or a negative errno.
pub fn vcpu_is_up(vcpuid: u64) -> i64 {
    // SAFETY: the argument is not read.
    unsafe { vcpu_op_raw(VcpuOpCmd::IsUp as u64, vcpuid, 0) }
}

/// `VCPUOP_get_runstate_info` of vCPU `vcpuid` into `out`.
pub fn vcpu_get_runstate_info(vcpuid: u64, out: &mut VcpuRunstateInfo) -> i64 {
    // SAFETY: the hypervisor writes exactly one `VcpuRunstateInfo` into
    // the exclusively borrowed `out`.
    unsafe { vcpu_op_raw(VcpuOpCmd::GetRunstateInfo as u64, vcpuid, addr_of_mut(out)) }
}

/// `VCPUOP_set_periodic_timer` of vCPU `vcpuid`: `VIRQ_TIMER` every
/// `period_ns`.
pub fn vcpu_set_periodic_timer(vcpuid: u64, period_ns: u64) -> i64 {
    let arg = VcpuSetPeriodicTimer { period_ns };
    // SAFETY: the hypervisor reads the 8-byte `arg`.
    unsafe { vcpu_op_raw(VcpuOpCmd::SetPeriodicTimer as u64, vcpuid, addr_of(&arg)) }
}

/// `VCPUOP_stop_periodic_timer` of vCPU `vcpuid`.
pub fn vcpu_stop_periodic_timer(vcpuid: u64) -> i64 {
    // SAFETY: the argument is not read.
    unsafe { vcpu_op_raw(VcpuOpCmd::StopPeriodicTimer as u64, vcpuid, 0) }
}

/// `VCPUOP_set_singleshot_timer` of vCPU `vcpuid` (the caller's own):
/// `VIRQ_TIMER` at system time `deadline`.
pub fn vcpu_set_singleshot_timer(vcpuid: u64, deadline: u64, flags: u32) -> i64 {
    let arg = VcpuSetSingleshotTimer {
        timeout_abs_ns: deadline,
        flags,
        ..Default::default()
    };
    // SAFETY: the hypervisor reads the 16-byte `arg`.
    unsafe { vcpu_op_raw(VcpuOpCmd::SetSingleshotTimer as u64, vcpuid, addr_of(&arg)) }
}

/// `VCPUOP_stop_singleshot_timer` of vCPU `vcpuid`.
pub fn vcpu_stop_singleshot_timer(vcpuid: u64) -> i64 {
    // SAFETY: the argument is not read.
    unsafe { vcpu_op_raw(VcpuOpCmd::StopSingleshotTimer as u64, vcpuid, 0) }
}

/// `VCPUOP_send_nmi` to vCPU `vcpuid` (the argument NULL, as it must be).
pub fn vcpu_send_nmi(vcpuid: u64) -> i64 {
    // SAFETY: the argument is not read; an NMI enters the vCPU's NMI
    // callback, which the caller registered (or the NMI is dropped).
    unsafe { vcpu_op_raw(VcpuOpCmd::SendNmi as u64, vcpuid, 0) }
}
