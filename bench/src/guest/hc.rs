//! The hypercalls the benchmark guest makes, issued the way a PV kernel
//! issues them on a hot path: `call hypercall_page + N*32` straight from
//! inline assembly, arguments already in registers.
//!
//! The shim's `hypercall5` picks the slot at run time and checks the
//! number; that costs a few instructions per call, which would end up in
//! every result. These wrappers cost only the argument moves and the call.
//! Results are raw (`0`, a count, or a negative errno).

use core::arch::asm;

use guest_pv_shim::dom0_abi::Hypercall;
use guest_pv_shim::dom0_abi::cpu::{
    CallbackFlags, CallbackOp, CallbackRegister, CallbackType, TrapInfo,
};
use guest_pv_shim::dom0_abi::event_channel::{
    EvtchnBindIpi, EvtchnBindVirq, EvtchnOp, EvtchnPortArg, Virq,
};
use guest_pv_shim::dom0_abi::grant_table::GnttabOp;
use guest_pv_shim::dom0_abi::mmu::{MmuUpdate, MmuextOp};
use guest_pv_shim::dom0_abi::multicall::MulticallEntry;
use guest_pv_shim::dom0_abi::sched::{SchedOp, SchedPoll};
use guest_pv_shim::dom0_abi::types::DomId;
use guest_pv_shim::dom0_abi::vcpu::VcpuOpCmd;
use guest_pv_shim::dom0_abi::version::VersionCmd;
use pv_bench::counters::{HYPERCALL_STATS_OP, STATSOP_READ_VCPU, StatsBuffer};

/// `call hypercall_page + nr*32` with five arguments; evaluates to RAX.
/// Must be used inside `unsafe`: what the call does to memory and to the
/// vCPU is the caller's business.
macro_rules! hypercall {
    ($nr:expr; $a1:expr, $a2:expr, $a3:expr, $a4:expr, $a5:expr) => {{
        let ret: i64;
        asm!(
            "call hypercall_page + {offset}",
            offset = const ($nr as usize) * 32,
            lateout("rax") ret,
            inlateout("rdi") $a1 => _,
            inlateout("rsi") $a2 => _,
            inlateout("rdx") $a3 => _,
            inlateout("r10") $a4 => _,
            inlateout("r8") $a5 => _,
            clobber_abi("C"),
        );
        ret
    }};
}

/// The address of `r` as an argument the hypervisor only reads.
fn addr<T: ?Sized>(r: &T) -> u64 {
    (r as *const T).cast::<u8>() as u64
}

/// The address of `r` as an argument the hypervisor writes.
fn addr_mut<T: ?Sized>(r: &mut T) -> u64 {
    (r as *mut T).cast::<u8>() as u64
}

/// `DOMID_SELF` as the `foreigndom` argument.
const SELF: u64 = DomId::SELF.0 as u64;

/// `xen_version(XENVER_version, NULL)`: the null hypercall.
#[inline(always)]
pub fn xen_version_null() -> i64 {
    // SAFETY: the sub-op reads and writes no guest memory.
    unsafe { hypercall!(Hypercall::XenVersion; VersionCmd::Version as u64, 0u64, 0u64, 0u64, 0u64) }
}

/// `multicall(entries, len)`.
#[inline(always)]
pub fn multicall(entries: &mut [MulticallEntry]) -> i64 {
    let len = entries.len() as u64;
    // SAFETY: the hypervisor reads the entries and writes their `result`
    // fields, inside the exclusively borrowed slice. The benchmark only
    // batches calls that touch no memory.
    unsafe { hypercall!(Hypercall::Multicall; addr_mut(entries), len, 0u64, 0u64, 0u64) }
}

/// `mmu_update(reqs, len, &done, DOMID_SELF)`.
///
/// # Safety
/// The requests change live page tables: no Rust object may live in a
/// page they unmap or make read-only while it is so.
#[inline(always)]
pub unsafe fn mmu_update(reqs: &[MmuUpdate], done: &mut u32) -> i64 {
    let len = reqs.len() as u64;
    // SAFETY: the hypervisor reads `reqs` and writes `done`; the caller
    // answers for the page-table changes.
    unsafe { hypercall!(Hypercall::MmuUpdate; addr(reqs), len, addr_mut(done), SELF, 0u64) }
}

/// `update_va_mapping(va, pte, flags)`.
///
/// # Safety
/// As [`mmu_update`] for the page at `va`.
#[inline(always)]
pub unsafe fn update_va_mapping(va: u64, pte: u64, flags: u64) -> i64 {
    // SAFETY: reads and writes no guest memory besides the PTE; the caller
    // answers for the mapping change.
    unsafe { hypercall!(Hypercall::UpdateVaMapping; va, pte, flags, 0u64, 0u64) }
}

/// `mmuext_op(ops, len, &done, DOMID_SELF)`.
///
/// # Safety
/// The operations may change page-table types and base pointers: the
/// caller answers for what they do to the running address space.
#[inline(always)]
pub unsafe fn mmuext_op(ops: &[MmuextOp], done: &mut u32) -> i64 {
    let len = ops.len() as u64;
    // SAFETY: the hypervisor reads `ops` and writes `done`.
    unsafe { hypercall!(Hypercall::MmuextOp; addr(ops), len, addr_mut(done), SELF, 0u64) }
}

/// `grant_table_op(cmd, ops, len)` on an array of the structure `cmd`
/// takes.
///
/// # Safety
/// `ops` must be the structures `cmd` reads and writes; a map or unmap
/// changes the page-table entry it names: no Rust object may live in the
/// page it replaces.
#[inline(always)]
pub unsafe fn grant_table_op<T>(cmd: GnttabOp, ops: &mut [T]) -> i64 {
    let len = ops.len() as u64;
    // SAFETY: the hypervisor reads and writes the structures of `ops`;
    // the caller answers for the mappings.
    unsafe { hypercall!(Hypercall::GrantTableOp; cmd as u64, addr_mut(ops), len, 0u64, 0u64) }
}

/// `set_trap_table(traps)`; `None` clears the virtual IDT.
///
/// # Safety
/// Every handler in `traps` must be an entry point that handles its
/// vector's bounce frame.
pub unsafe fn set_trap_table(traps: Option<&[TrapInfo]>) -> i64 {
    if let Some(table) = traps {
        assert!(
            table.last().is_some_and(|t| t.address == 0),
            "a trap table ends with a zero entry"
        );
    }
    let ptr = traps.map_or(0, addr);
    // SAFETY: the hypervisor reads the table up to its zero entry; the
    // caller vouches for the handlers.
    unsafe { hypercall!(Hypercall::SetTrapTable; ptr, 0u64, 0u64, 0u64, 0u64) }
}

/// `callback_op(CALLBACKOP_register, {kind, flags, address})`.
///
/// # Safety
/// `address` must be an entry point that handles `kind`'s frame.
pub unsafe fn callback_register(kind: CallbackType, address: u64, flags: CallbackFlags) -> i64 {
    let arg = CallbackRegister {
        kind: kind as u16,
        flags: flags.bits(),
        pad: 0,
        address,
    };
    // SAFETY: the hypervisor reads the 16-byte `arg`; the caller vouches
    // for the entry point.
    unsafe {
        hypercall!(Hypercall::CallbackOp; CallbackOp::Register as u64, addr(&arg), 0u64, 0u64, 0u64)
    }
}

/// `stack_switch(ss, sp)`: the kernel stack for entries from user mode.
///
/// # Safety
/// `sp` must be the top of a stack no Rust code uses.
pub unsafe fn stack_switch(ss: u16, sp: u64) -> i64 {
    // SAFETY: records the stack only; the caller vouches for it.
    unsafe { hypercall!(Hypercall::StackSwitch; u64::from(ss), sp, 0u64, 0u64, 0u64) }
}

/// `event_channel_op(cmd, arg)` with `arg` an exclusively borrowed struct.
fn evtchn_op<T>(cmd: EvtchnOp, arg: &mut T) -> i64 {
    // SAFETY: every caller pairs `cmd` with its argument struct (layouts
    // from dom0-abi); the hypervisor reads and writes only that struct.
    unsafe { hypercall!(Hypercall::EventChannelOp; cmd as u64, addr_mut(arg), 0u64, 0u64, 0u64) }
}

/// `EVTCHNOP_bind_ipi` for `vcpu`: the new port, or the errno.
pub fn evtchn_bind_ipi(vcpu: u32) -> Result<u32, i64> {
    let mut arg = EvtchnBindIpi { vcpu, port: 0 };
    match evtchn_op(EvtchnOp::BindIpi, &mut arg) {
        0 => Ok(arg.port),
        err => Err(err),
    }
}

/// `EVTCHNOP_bind_virq` of `virq` on `vcpu`: the new port, or the errno.
pub fn evtchn_bind_virq(virq: Virq, vcpu: u32) -> Result<u32, i64> {
    let mut arg = EvtchnBindVirq {
        virq: virq as u32,
        vcpu,
        port: 0,
    };
    match evtchn_op(EvtchnOp::BindVirq, &mut arg) {
        0 => Ok(arg.port),
        err => Err(err),
    }
}

/// `set_timer_op(deadline)`.
#[inline(always)]
pub fn set_timer_op(deadline: u64) -> i64 {
    // SAFETY: the argument is a value; the call only arms a timer.
    unsafe { hypercall!(Hypercall::SetTimerOp; deadline, 0u64, 0u64, 0u64, 0u64) }
}

/// `SCHEDOP_block`.
#[inline(always)]
pub fn sched_block() -> i64 {
    // SAFETY: block reads no guest memory.
    unsafe { hypercall!(Hypercall::SchedOp; SchedOp::Block as u64, 0u64, 0u64, 0u64, 0u64) }
}

/// `SCHEDOP_poll` of the one port `port`, without a timeout.
#[inline(always)]
pub fn sched_poll_one(port: u32) -> i64 {
    let ports = [port];
    let arg = SchedPoll {
        ports: ports.as_ptr() as u64,
        nr_ports: 1,
        pad: 0,
        timeout: 0,
    };
    // SAFETY: the hypervisor reads `arg` and the one port it names, both
    // on this stack for the call.
    unsafe {
        hypercall!(Hypercall::SchedOp; SchedOp::Poll as u64, core::ptr::from_ref(&arg) as u64, 0u64, 0u64, 0u64)
    }
}

/// `VCPUOP_stop_periodic_timer` of `vcpu`.
pub fn vcpu_stop_periodic_timer(vcpu: u32) -> i64 {
    // SAFETY: the command reads no guest memory.
    unsafe {
        hypercall!(Hypercall::VcpuOp; VcpuOpCmd::StopPeriodicTimer as u64, u64::from(vcpu), 0u64, 0u64, 0u64)
    }
}

/// `EVTCHNOP_send` on `port`.
#[inline(always)]
pub fn evtchn_send(port: u32) -> i64 {
    let mut arg = EvtchnPortArg { port };
    evtchn_op(EvtchnOp::Send, &mut arg)
}

/// `EVTCHNOP_close` of `port`.
pub fn evtchn_close(port: u32) -> i64 {
    let mut arg = EvtchnPortArg { port };
    evtchn_op(EvtchnOp::Close, &mut arg)
}

/// The proposed `stats_op(STATSOP_read_vcpu, buffer)`
/// ([`pv_bench::counters`]); `ENOSYS` where it does not exist.
pub fn stats_read(buffer: &mut StatsBuffer) -> i64 {
    // SAFETY: the hypervisor writes at most the 136-byte, exclusively
    // borrowed buffer; where the call does not exist it touches nothing.
    unsafe { hypercall!(HYPERCALL_STATS_OP; STATSOP_READ_VCPU, addr_mut(buffer), 0u64, 0u64, 0u64) }
}
