//! The CPU hypercalls that only change a vCPU's PV state: `set_trap_table`,
//! `stack_switch`, `set_callbacks`, `callback_op`, `nmi_op`,
//! `fpu_taskswitch` and `set_segment_base`. What the real CPU must then
//! do (load segment bases, set CR0.TS) is flagged in `Vcpu::pending` for
//! `arch` to apply on exit; an NMI made pending here is taken on the way
//! out.
#![forbid(unsafe_code)]

use dom0_abi::Errno;
use dom0_abi::cpu::{
    CallbackFlags, CallbackOp, CallbackRegister, CallbackType, CallbackUnregister, SegmentBase,
    TrapInfo,
};
use dom0_abi::nmi::{NmiOp, XenNmiCallback};
use dom0_abi::segment::FLAT_RING3_DS;

use super::{Env, read_struct};
use crate::layout::is_canonical;
use crate::vcpu::{Callback, Pending, debug};
use dom0_abi::wire::Wire;

/// `trap_info` entries merged per invocation before the call is continued.
const TRAPS_PER_CALL: u64 = 64;

/// `set_trap_table(traps)`: merges `trap_info` entries until one with
/// address 0; a NULL `traps` clears the whole table. A non-canonical handler
/// address gives `-EINVAL` (entries before it stay merged), an unreadable
/// entry `-EFAULT`. Long tables are processed in chunks: the hypercall is
/// continued with `traps` advanced, as Xen does.
pub fn set_trap_table(env: &mut impl Env, traps: u64) -> Result<u64, Errno> {
    // The fast lanes read the #PF entry: they take it afresh.
    crate::fastpath::note_work(env.vcpu().on_cpu);
    if traps == 0 {
        env.vcpu().traps = [Default::default(); 256];
        return Ok(0);
    }
    for i in 0..TRAPS_PER_CALL {
        let va = traps
            .checked_add(i * TrapInfo::SIZE as u64)
            .ok_or(Errno::EFAULT)?;
        let info: TrapInfo = read_struct(env, va)?;
        if info.address == 0 {
            return Ok(0);
        }
        if !is_canonical(info.address) {
            return Err(Errno::EINVAL);
        }
        env.vcpu().set_trap(&info);
    }
    env.preempt([traps + TRAPS_PER_CALL * TrapInfo::SIZE as u64, 0, 0, 0, 0]);
    Ok(0)
}

/// `stack_switch(ss, sp)`: the kernel stack used when an event interrupts
/// user mode. Always succeeds (frames always use the ring-1 SS).
pub fn stack_switch(env: &mut impl Env, ss: u64, sp: u64) -> Result<u64, Errno> {
    let vcpu = env.vcpu();
    // The `SYSCALL` lane reads the kernel stack: it takes it afresh.
    crate::fastpath::note_work(vcpu.on_cpu);
    vcpu.kernel_ss = ss;
    vcpu.kernel_sp = sp;
    Ok(0)
}

/// `set_callbacks(event, failsafe, syscall)`: always succeeds; a
/// non-canonical address leaves that callback unchanged (Xen 4.17 ignores it
/// silently).
pub fn set_callbacks(
    env: &mut impl Env,
    event: u64,
    failsafe: u64,
    syscall: u64,
) -> Result<u64, Errno> {
    let vcpu = env.vcpu();
    // The lanes read the event and syscall callbacks: they take them
    // afresh.
    crate::fastpath::note_work(vcpu.on_cpu);
    for (slot, address, mask_events) in [
        (&mut vcpu.event, event, true),
        (&mut vcpu.failsafe, failsafe, false),
        (&mut vcpu.syscall, syscall, false),
    ] {
        if is_canonical(address) {
            *slot = Callback {
                address,
                mask_events,
            };
        }
    }
    Ok(0)
}

/// `callback_op(cmd, arg)`: register (`struct callback_register`) or
/// unregister (`struct callback_unregister`; only `nmi` may be). `cmd` is
/// a C `int`: bits 63:32 are ignored. Errors: `-EFAULT` (unreadable
/// argument), `-EINVAL` (non-canonical address, or unregistering a type
/// other than `nmi`), `-ENOSYS` (unknown type, the deprecated sysenter
/// number 3, or an unknown command). The `nmi` callback is trap-table
/// entry 2 ([`register_nmi`]).
pub fn callback_op(env: &mut impl Env, cmd: u64, arg: u64) -> Result<u64, Errno> {
    match CallbackOp::from_number(cmd & 0xffff_ffff) {
        Some(CallbackOp::Register) => {
            let reg: CallbackRegister = read_struct(env, arg)?;
            if !is_canonical(reg.address) {
                return Err(Errno::EINVAL);
            }
            let mask_events =
                CallbackFlags::from_bits_truncate(reg.flags).contains(CallbackFlags::MASK_EVENTS);
            let requested = Callback {
                address: reg.address,
                mask_events,
            };
            let vcpu = env.vcpu();
            // The lanes read the event and syscall callbacks: they take
            // them afresh.
            crate::fastpath::note_work(vcpu.on_cpu);
            match CallbackType::from_number(u64::from(reg.kind)) {
                // The event upcall always masks events.
                Some(CallbackType::Event) => {
                    vcpu.event = Callback {
                        mask_events: true,
                        ..requested
                    };
                }
                Some(CallbackType::Failsafe) => vcpu.failsafe = requested,
                Some(CallbackType::Syscall) => vcpu.syscall = requested,
                Some(CallbackType::Syscall32) => vcpu.syscall32 = requested,
                Some(CallbackType::Sysenter) => vcpu.sysenter = requested,
                Some(CallbackType::Nmi) => register_nmi(env, reg.address),
                // The deprecated sysenter number is refused by Xen 4.17.
                Some(CallbackType::SysenterDeprecated) | None => return Err(Errno::ENOSYS),
            }
            Ok(0)
        }
        Some(CallbackOp::Unregister) => {
            let unreg: CallbackUnregister = read_struct(env, arg)?;
            match CallbackType::from_number(u64::from(unreg.kind)) {
                Some(CallbackType::Nmi) => {
                    env.vcpu().set_nmi_handler(0);
                    Ok(0)
                }
                Some(_) => Err(Errno::EINVAL),
                None => Err(Errno::ENOSYS),
            }
        }
        None => Err(Errno::ENOSYS),
    }
}

/// `nmi_op(cmd, arg)`: `XENNMI_register_callback` (`struct
/// xennmi_callback`) or `XENNMI_unregister_callback` (`arg` not read), for
/// the calling vCPU. `cmd` is an `unsigned int`: bits 63:32 are ignored.
/// Errors: `-EFAULT` (unreadable argument), `-EINVAL` (non-canonical
/// handler; nothing changes), `-ENOSYS` (unknown command).
pub fn nmi_op(env: &mut impl Env, cmd: u64, arg: u64) -> Result<u64, Errno> {
    match NmiOp::from_number(cmd & 0xffff_ffff) {
        Some(NmiOp::RegisterCallback) => {
            let callback: XenNmiCallback = read_struct(env, arg)?;
            if !is_canonical(callback.handler_address) {
                return Err(Errno::EINVAL);
            }
            register_nmi(env, callback.handler_address);
            Ok(0)
        }
        Some(NmiOp::UnregisterCallback) => {
            env.vcpu().set_nmi_handler(0);
            Ok(0)
        }
        None => Err(Errno::ENOSYS),
    }
}

/// Makes `handler` (canonical) the calling vCPU's NMI callback, as
/// `callback_op` and `nmi_op` do: trap-table entry 2 with DPL 0 and
/// events masked. On vCPU 0, a non-zero `shared_info.arch.nmi_reason`
/// makes an NMI pending, as on Xen 4.17: a reason recorded while no
/// handler was registered is not lost.
fn register_nmi(env: &mut impl Env, handler: u64) {
    let reason = env.nmi_reason();
    let vcpu = env.vcpu();
    vcpu.set_nmi_handler(handler);
    if vcpu.id == 0 && reason != 0 {
        // The caller itself: it takes the NMI on the way out, no kick.
        vcpu.nmi.raise();
    }
}

/// `fpu_taskswitch(set)`: sets (non-zero) or clears the virtual CR0.TS. With
/// it set, the guest's next FPU/SSE instruction raises `#NM` in the guest
/// (and clears it again), as after a native `mov %cr0` with TS.
pub fn fpu_taskswitch(env: &mut impl Env, set: u64) -> Result<u64, Errno> {
    let vcpu = env.vcpu();
    vcpu.fpu_ts = set & 0xffff_ffff != 0;
    vcpu.pending.insert(Pending::FPU);
    Ok(0)
}

/// `set_segment_base(which, base)`: FS, user GS, kernel GS base (must be
/// canonical: `-EINVAL`), or the user GS selector (`base[15:0]`; anything
/// but a null selector or `FLAT_RING3_DS` loads the null selector, and the
/// call still succeeds, as on Xen). Unknown `which`: `-EINVAL`.
pub fn set_segment_base(env: &mut impl Env, which: u64, base: u64) -> Result<u64, Errno> {
    let Some(which) = SegmentBase::from_number(which) else {
        return Err(Errno::EINVAL);
    };
    if which != SegmentBase::GsUserSel && !is_canonical(base) {
        return Err(Errno::EINVAL);
    }
    env.sync_segment_bases();
    let vcpu = env.vcpu();
    // The fast `iret` loads the user segments from what the vCPU
    // published: it takes them afresh.
    crate::fastpath::note_work(vcpu.on_cpu);
    match which {
        SegmentBase::Fs => vcpu.fs_base = base,
        SegmentBase::GsUser => vcpu.gs_base_user = base,
        SegmentBase::GsKernel => vcpu.gs_base_kernel = base,
        SegmentBase::GsUserSel => {
            let selector = (base & 0xffff) as u16;
            vcpu.user_gs_sel = if selector == FLAT_RING3_DS {
                selector
            } else {
                0
            };
        }
    }
    vcpu.pending.insert(Pending::SEGMENTS);
    Ok(0)
}

/// `set_debugreg(reg, value)`: DR0-3 (addresses in guest memory, else
/// `-EPERM`), DR6, DR7 (no GD, I/O breakpoints or upper bits: `-EPERM`);
/// 4 and 5 alias 6 and 7; other numbers `-ENODEV`.
pub fn set_debugreg(env: &mut impl Env, reg: u64, value: u64) -> Result<u64, Errno> {
    let index = debug::register(reg).map_err(refused)?;
    let value = debug::check(index, value).map_err(refused)?;
    let vcpu = env.vcpu();
    vcpu.debugreg[index] = value;
    vcpu.pending.insert(Pending::DEBUG);
    Ok(0)
}

/// `get_debugreg(reg)`: the value (as set, DR6 as the last `#DB` left it);
/// `-ENODEV` for numbers other than 0-7.
pub fn get_debugreg(env: &mut impl Env, reg: u64) -> Result<u64, Errno> {
    let index = debug::register(reg).map_err(refused)?;
    Ok(env.vcpu().debugreg[index])
}

fn refused(r: debug::Refused) -> Errno {
    match r {
        debug::Refused::NoRegister => Errno::ENODEV,
        debug::Refused::Value => Errno::EPERM,
        debug::Refused::Reserved => Errno::EINVAL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::fake::{BASE, FakeMachine};
    use crate::vcpu::TrapGate;

    fn put_trap(env: &mut FakeMachine, i: usize, vector: u8, flags: u8, address: u64) {
        let at = i * 16;
        env.guest[at] = vector;
        env.guest[at + 1] = flags;
        env.guest[at + 8..at + 16].copy_from_slice(&address.to_le_bytes());
    }

    #[test]
    fn trap_table_merges_until_zero_and_null_clears() {
        let mut env = FakeMachine::new(16);
        put_trap(&mut env, 0, 14, 0, 0xffff_ffff_8000_1000);
        put_trap(&mut env, 1, 3, 3 | 4, 0xffff_ffff_8000_2000);
        assert_eq!(set_trap_table(&mut env, BASE), Ok(0));
        assert_eq!(env.cpu.traps[14].address, 0xffff_ffff_8000_1000);
        assert_eq!(
            (env.cpu.traps[3].dpl, env.cpu.traps[3].mask_events),
            (3, true)
        );
        assert_eq!(set_trap_table(&mut env, 0), Ok(0));
        assert_eq!(env.cpu.traps[14].address, 0);
    }

    #[test]
    fn trap_table_errors() {
        let mut env = FakeMachine::new(16);
        put_trap(&mut env, 0, 6, 0, 0x1000);
        put_trap(&mut env, 1, 7, 0, 0x8000_0000_0000);
        assert_eq!(set_trap_table(&mut env, BASE), Err(Errno::EINVAL));
        assert_eq!(
            env.cpu.traps[6].address, 0x1000,
            "entries before the bad one stay"
        );
        assert_eq!(set_trap_table(&mut env, 0x10), Err(Errno::EFAULT));
    }

    #[test]
    fn long_trap_tables_continue() {
        let mut env = FakeMachine::new(16);
        for i in 0..70 {
            put_trap(&mut env, i, u8::try_from(i).unwrap(), 0, 0x1000 + i as u64);
        }
        assert_eq!(set_trap_table(&mut env, BASE), Ok(0));
        assert_eq!(env.preempted, Some([BASE + 64 * 16, 0, 0, 0, 0]));
    }

    #[test]
    fn callbacks() {
        let mut env = FakeMachine::new(16);
        assert_eq!(set_callbacks(&mut env, 0x10, 0x20, 0x30), Ok(0));
        assert_eq!(set_callbacks(&mut env, 0x11, 0x21, 0x8000_0000_0000), Ok(0));
        assert_eq!(
            (env.cpu.event.address, env.cpu.syscall.address),
            (0x11, 0x30)
        );
        let reg = |env: &mut FakeMachine, kind: u16, flags: u16, address: u64| {
            env.guest[0..2].copy_from_slice(&kind.to_le_bytes());
            env.guest[2..4].copy_from_slice(&flags.to_le_bytes());
            env.guest[8..16].copy_from_slice(&address.to_le_bytes());
            callback_op(env, 0, BASE)
        };
        assert_eq!(reg(&mut env, 2, 1, 0x40), Ok(0));
        assert_eq!(
            env.cpu.syscall,
            Callback {
                address: 0x40,
                mask_events: true
            }
        );
        assert_eq!(reg(&mut env, 6, 0, 0x40), Err(Errno::ENOSYS));
        assert_eq!(reg(&mut env, 3, 0, 0x40), Err(Errno::ENOSYS));
        assert_eq!(reg(&mut env, 0, 0, 0x8000_0000_0000), Err(Errno::EINVAL));
        assert_eq!(reg(&mut env, 4, 0, 0x50), Ok(0));
        assert_eq!(
            env.cpu.traps[2],
            TrapGate {
                address: 0x50,
                dpl: 0,
                mask_events: true
            },
            "the NMI callback is trap entry 2, always masking events"
        );
        env.guest[0..2].copy_from_slice(&4u16.to_le_bytes());
        assert_eq!(callback_op(&mut env, 1, BASE), Ok(0));
        assert_eq!(env.cpu.traps[2], TrapGate::default());
        assert_eq!(reg(&mut env, 4, 0, 0x50), Ok(0));
        env.guest[0..2].copy_from_slice(&4u16.to_le_bytes());
        assert_eq!(
            callback_op(&mut env, (1 << 32) | 1, BASE),
            Ok(0),
            "cmd is 32-bit"
        );
        assert_eq!(env.cpu.traps[2].address, 0);
        env.guest[0..2].copy_from_slice(&0u16.to_le_bytes());
        assert_eq!(callback_op(&mut env, 1, BASE), Err(Errno::EINVAL));
        env.guest[0..2].copy_from_slice(&9u16.to_le_bytes());
        assert_eq!(callback_op(&mut env, 1, BASE), Err(Errno::ENOSYS));
        assert_eq!(callback_op(&mut env, 2, BASE), Err(Errno::ENOSYS));
        assert_eq!(callback_op(&mut env, 0, 0x10), Err(Errno::EFAULT));
    }

    fn put_nmi_callback(env: &mut FakeMachine, handler: u64) {
        env.guest[0..8].copy_from_slice(&handler.to_le_bytes());
    }

    #[test]
    fn nmi_op_registers_trap_entry_2() {
        let mut env = FakeMachine::new(16);
        put_nmi_callback(&mut env, 0xffff_ffff_8000_2000);
        assert_eq!(nmi_op(&mut env, 0, BASE), Ok(0));
        assert_eq!(
            env.cpu.traps[2],
            TrapGate {
                address: 0xffff_ffff_8000_2000,
                dpl: 0,
                mask_events: true
            }
        );
        put_nmi_callback(&mut env, 0x8000_0000_0000);
        assert_eq!(nmi_op(&mut env, 0, BASE), Err(Errno::EINVAL));
        assert_eq!(env.cpu.traps[2].address, 0xffff_ffff_8000_2000, "kept");
        assert_eq!(nmi_op(&mut env, 0, 0x10), Err(Errno::EFAULT));
        assert_eq!(nmi_op(&mut env, 2, BASE), Err(Errno::ENOSYS));
        assert_eq!(nmi_op(&mut env, 1, 0x10), Ok(0), "arg not read");
        assert_eq!(env.cpu.traps[2], TrapGate::default());
        put_nmi_callback(&mut env, 0x3000);
        assert_eq!(nmi_op(&mut env, 1 << 32, BASE), Ok(0), "cmd is 32-bit");
        assert_eq!(env.cpu.traps[2].address, 0x3000);
        assert!(!env.cpu.nmi.deliverable(), "no NMI reason, no NMI");
    }

    #[test]
    fn registering_on_vcpu_0_with_an_nmi_reason_raises_an_nmi() {
        let mut env = FakeMachine::with_vcpus(16, 2);
        env.nmi_reason = 1 << 40;
        put_nmi_callback(&mut env, 0x3000);
        assert_eq!(nmi_op(&mut env, 0, BASE), Ok(0));
        assert!(env.cpu.nmi.deliverable());
        let mut other = FakeMachine::with_vcpus(16, 2);
        other.cpu.id = 1;
        other.nmi_reason = 1;
        put_nmi_callback(&mut other, 0x3000);
        assert_eq!(nmi_op(&mut other, 0, BASE), Ok(0));
        assert!(!other.cpu.nmi.deliverable(), "vCPU 0 only");
        let mut by_callback_op = FakeMachine::new(16);
        by_callback_op.nmi_reason = 4;
        by_callback_op.guest[0..2].copy_from_slice(&4u16.to_le_bytes());
        by_callback_op.guest[8..16].copy_from_slice(&0x3000u64.to_le_bytes());
        assert_eq!(callback_op(&mut by_callback_op, 0, BASE), Ok(0));
        assert!(by_callback_op.cpu.nmi.deliverable());
        let mut by_trap_table = FakeMachine::new(16);
        by_trap_table.nmi_reason = 4;
        put_trap(&mut by_trap_table, 0, 2, 4, 0x3000);
        assert_eq!(set_trap_table(&mut by_trap_table, BASE), Ok(0));
        assert_eq!(by_trap_table.cpu.traps[2].address, 0x3000);
        assert!(!by_trap_table.cpu.nmi.deliverable(), "not set_trap_table");
    }

    #[test]
    fn segment_bases_and_fpu() {
        let mut env = FakeMachine::new(16);
        assert_eq!(set_segment_base(&mut env, 0, 0x1234), Ok(0));
        assert_eq!(env.cpu.fs_base, 0x1234);
        assert!(env.cpu.pending.contains(Pending::SEGMENTS));
        assert_eq!(
            set_segment_base(&mut env, 2, 0x8000_0000_0000),
            Err(Errno::EINVAL)
        );
        assert_eq!(set_segment_base(&mut env, 4, 0), Err(Errno::EINVAL));
        assert_eq!(set_segment_base(&mut env, 3, 0xe02b), Ok(0));
        assert_eq!(env.cpu.user_gs_sel, 0xe02b);
        assert_eq!(set_segment_base(&mut env, 3, 0xe008), Ok(0));
        assert_eq!(env.cpu.user_gs_sel, 0);
        assert_eq!(fpu_taskswitch(&mut env, 1), Ok(0));
        assert!(env.cpu.fpu_ts && env.cpu.pending.contains(Pending::FPU));
    }

    #[test]
    fn debug_registers() {
        let mut env = FakeMachine::new(16);
        for (reg, value) in [
            (0, 0x1000),
            (1, 0x2008),
            (2, 0xffff_ffff_8000_0000),
            (3, 0x7fff_ffff_f000),
        ] {
            assert_eq!(set_debugreg(&mut env, reg, value), Ok(0));
            assert_eq!(get_debugreg(&mut env, reg), Ok(value));
        }
        assert_eq!(get_debugreg(&mut env, 7), Ok(0x400));
        assert_eq!(get_debugreg(&mut env, 6), Ok(0xffff_0ff0));
        assert_eq!(set_debugreg(&mut env, 8, 0), Err(Errno::ENODEV));
        assert_eq!(get_debugreg(&mut env, 8), Err(Errno::ENODEV));
        assert_eq!(
            set_debugreg(&mut env, 0, 0xffff_8000_0000_0000),
            Err(Errno::EPERM)
        );
        assert_eq!(
            set_debugreg(&mut env, 0, 0x8000_0000_0000_0000),
            Err(Errno::EPERM)
        );
        assert_eq!(set_debugreg(&mut env, 7, 0x2000), Err(Errno::EPERM), "GD");
        assert_eq!(
            set_debugreg(&mut env, 7, 0x1 | (2 << 16)),
            Err(Errno::EPERM),
            "I/O breakpoint"
        );
        assert_eq!(set_debugreg(&mut env, 7, 0x401), Ok(0));
        assert!(env.cpu.pending.contains(Pending::DEBUG));
    }
}
