//! CPU hypercalls: `set_trap_table`, `set_callbacks`, `callback_op`,
//! `nmi_op`, `stack_switch`, `fpu_taskswitch`, `set_segment_base`, `set_gdt`,
//! `update_descriptor`, `set_debugreg`, `get_debugreg`.
//!
//! `HYPERVISOR_iret` does not return and is reached by a jump from
//! assembly; see [`crate::traps`].
//!
//! Calls that install code addresses, stacks or descriptors are `unsafe`:
//! what they point at must be correct code or memory for the whole time
//! they are installed.

use dom0_abi::Hypercall;
use dom0_abi::cpu::{CallbackOp, CallbackRegister, CallbackUnregister, TrapInfo};
use dom0_abi::nmi::{NmiOp, XenNmiCallback};

use super::{addr_of, raw};

/// `set_trap_table(traps)` with a raw address (0 clears the table).
///
/// # Safety
/// `traps` must be readable up to its terminating entry (or deliberately
/// bad), and every handler it installs must be a correct entry point.
pub unsafe fn set_trap_table_raw(traps: u64) -> i64 {
    // SAFETY: the caller's contract.
    unsafe { raw::hypercall1(u64::from(Hypercall::SetTrapTable.number()), traps) }
}

/// `set_trap_table` of `traps`, which must end with an entry whose
/// `address` is 0.
///
/// # Safety
/// Every handler installed must be a correct entry point.
pub unsafe fn set_trap_table(traps: &[TrapInfo]) -> i64 {
    debug_assert!(traps.last().is_some_and(|t| t.address == 0));
    // SAFETY: `traps` is readable and terminated; handlers are the caller's
    // contract.
    unsafe { set_trap_table_raw(addr_of(traps)) }
}

/// `set_callbacks(event, failsafe, syscall)`.
///
/// # Safety
/// Each address must be a correct callback entry point (or 0).
pub unsafe fn set_callbacks(event: u64, failsafe: u64, syscall: u64) -> i64 {
    // SAFETY: the caller's contract.
    unsafe {
        raw::hypercall3(
            u64::from(Hypercall::SetCallbacks.number()),
            event,
            failsafe,
            syscall,
        )
    }
}

/// `callback_op(cmd, arg)` with raw arguments.
///
/// # Safety
/// `arg` must be readable for the sub-op (or deliberately bad); a callback
/// it registers must be a correct entry point.
pub unsafe fn callback_op_raw(cmd: u64, arg: u64) -> i64 {
    // SAFETY: the caller's contract.
    unsafe { raw::hypercall2(u64::from(Hypercall::CallbackOp.number()), cmd, arg) }
}

/// `CALLBACKOP_register` of `reg`.
///
/// # Safety
/// `reg.address` must be a correct entry point for its callback type.
pub unsafe fn callback_register(reg: &CallbackRegister) -> i64 {
    // SAFETY: `reg` is readable; the entry point is the caller's contract.
    unsafe { callback_op_raw(CallbackOp::Register as u64, addr_of(reg)) }
}

/// `CALLBACKOP_unregister` of callback type `kind`.
pub fn callback_unregister(kind: u16) -> i64 {
    let arg = CallbackUnregister { kind, unused: 0 };
    // SAFETY: the hypervisor reads the 4-byte `arg`; removing a callback
    // only means the event is no longer delivered.
    unsafe { callback_op_raw(CallbackOp::Unregister as u64, addr_of(&arg)) }
}

/// `nmi_op(cmd, arg)` with raw arguments.
///
/// # Safety
/// `arg` must be readable for the sub-op (or deliberately bad); a
/// handler it registers must be a correct NMI entry point.
pub unsafe fn nmi_op_raw(cmd: u64, arg: u64) -> i64 {
    // SAFETY: the caller's contract.
    unsafe { raw::hypercall2(u64::from(Hypercall::NmiOp.number()), cmd, arg) }
}

/// `XENNMI_register_callback` of `handler`.
///
/// # Safety
/// `handler` must be a correct NMI entry point.
pub unsafe fn nmi_register_callback(handler: u64) -> i64 {
    let arg = XenNmiCallback {
        handler_address: handler,
        pad: 0,
    };
    // SAFETY: `arg` is readable; the entry point is the caller's contract.
    unsafe { nmi_op_raw(NmiOp::RegisterCallback as u64, addr_of(&arg)) }
}

/// `XENNMI_unregister_callback` (the argument NULL).
pub fn nmi_unregister_callback() -> i64 {
    // SAFETY: the argument is not read; removing the callback only means
    // NMIs are no longer delivered.
    unsafe { nmi_op_raw(NmiOp::UnregisterCallback as u64, 0) }
}

/// `stack_switch(ss, sp)`.
///
/// # Safety
/// `sp` must be the top of a stack reserved for kernel entries from user
/// mode for as long as it is registered.
pub unsafe fn stack_switch(ss: u64, sp: u64) -> i64 {
    // SAFETY: the caller's contract.
    unsafe { raw::hypercall2(u64::from(Hypercall::StackSwitch.number()), ss, sp) }
}

/// `fpu_taskswitch(set)`: sets (non-zero) or clears the virtual CR0.TS.
///
/// The shim's Rust code uses no FPU or SSE instructions (the target is
/// soft-float), so only code that does (inline assembly) can see `#NM`.
pub fn fpu_taskswitch(set: u64) -> i64 {
    // SAFETY: changes only whether the next FPU instruction faults.
    unsafe { raw::hypercall1(u64::from(Hypercall::FpuTaskswitch.number()), set) }
}

/// `set_segment_base(which, base)`.
///
/// The shim's Rust code uses neither FS nor GS, so changing their bases
/// cannot affect it.
pub fn set_segment_base(which: u64, base: u64) -> i64 {
    // SAFETY: the FS/GS bases and the user GS selector are not used by the
    // running Rust code.
    unsafe { raw::hypercall2(u64::from(Hypercall::SetSegmentBase.number()), which, base) }
}

/// `set_gdt(frames, entries)` with a raw frame-list address.
///
/// # Safety
/// The frame list must be readable (or deliberately bad); the new GDT must
/// not break segment registers the running code relies on.
pub unsafe fn set_gdt_raw(frames: u64, entries: u64) -> i64 {
    // SAFETY: the caller's contract.
    unsafe { raw::hypercall2(u64::from(Hypercall::SetGdt.number()), frames, entries) }
}

/// `set_gdt` of the machine frames `frames` holding `entries` descriptors.
///
/// # Safety
/// As [`set_gdt_raw`] for the new table's effect.
pub unsafe fn set_gdt(frames: &[u64], entries: u64) -> i64 {
    // SAFETY: `frames` is readable; the table is the caller's contract.
    unsafe { set_gdt_raw(addr_of(frames), entries) }
}

/// `update_descriptor(maddr, desc)`.
///
/// # Safety
/// The descriptor written must not break segment registers the running
/// code relies on.
pub unsafe fn update_descriptor(maddr: u64, desc: u64) -> i64 {
    // SAFETY: the caller's contract.
    unsafe { raw::hypercall2(u64::from(Hypercall::UpdateDescriptor.number()), maddr, desc) }
}

/// `set_debugreg(reg, value)`.
///
/// # Safety
/// An enabled breakpoint raises `#DB`: a handler must be installed for as
/// long as it can trigger.
pub unsafe fn set_debugreg(reg: u64, value: u64) -> i64 {
    // SAFETY: the caller's contract.
    unsafe { raw::hypercall2(u64::from(Hypercall::SetDebugreg.number()), reg, value) }
}

/// `get_debugreg(reg)`: the register's value, or a negative errno.
pub fn get_debugreg(reg: u64) -> i64 {
    // SAFETY: reads a virtual register; no memory is touched.
    unsafe { raw::hypercall1(u64::from(Hypercall::GetDebugreg.number()), reg) }
}
