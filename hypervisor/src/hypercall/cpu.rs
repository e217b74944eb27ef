//! The CPU hypercalls that only change a vCPU's PV state: `set_trap_table`,
//! `stack_switch`, `set_callbacks`, `callback_op`, `fpu_taskswitch` and
//! `set_segment_base`. What the real CPU must then do (load segment bases,
//! set CR0.TS) is flagged in `Vcpu::pending` for `arch` to apply on exit.
#![forbid(unsafe_code)]

use dom0_abi::Errno;
use dom0_abi::cpu::{
    CallbackFlags, CallbackOp, CallbackRegister, CallbackType, CallbackUnregister, SegmentBase,
    TrapInfo,
};
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
/// unregister (`struct callback_unregister`; only `nmi` may be). Errors:
/// `-EFAULT` (unreadable argument), `-EINVAL` (non-canonical address, or
/// unregistering a type other than `nmi`), `-ENOSYS` (unknown type, the
/// deprecated sysenter number 3, or an unknown command).
pub fn callback_op(env: &mut impl Env, cmd: u64, arg: u64) -> Result<u64, Errno> {
    match CallbackOp::from_number(cmd) {
        Some(CallbackOp::Register) => {
            let reg: CallbackRegister = read_struct(env, arg)?;
            if !is_canonical(reg.address) {
                return Err(Errno::EINVAL);
            }
            let mask =
                CallbackFlags::from_bits_truncate(reg.flags).contains(CallbackFlags::MASK_EVENTS);
            let vcpu = env.vcpu();
            let slot = match CallbackType::from_number(u64::from(reg.kind)) {
                Some(CallbackType::Event) => &mut vcpu.event,
                Some(CallbackType::Failsafe) => &mut vcpu.failsafe,
                Some(CallbackType::Syscall) => &mut vcpu.syscall,
                Some(CallbackType::Syscall32) => &mut vcpu.syscall32,
                Some(CallbackType::Sysenter) => &mut vcpu.sysenter,
                Some(CallbackType::Nmi) => &mut vcpu.nmi,
                // The deprecated sysenter number is refused by Xen 4.17.
                Some(CallbackType::SysenterDeprecated) | None => return Err(Errno::ENOSYS),
            };
            let always_masks = matches!(
                CallbackType::from_number(u64::from(reg.kind)),
                Some(CallbackType::Event | CallbackType::Nmi)
            );
            *slot = Callback {
                address: reg.address,
                mask_events: mask || always_masks,
            };
            Ok(0)
        }
        Some(CallbackOp::Unregister) => {
            let unreg: CallbackUnregister = read_struct(env, arg)?;
            match CallbackType::from_number(u64::from(unreg.kind)) {
                Some(CallbackType::Nmi) => {
                    env.vcpu().nmi = Callback::default();
                    Ok(0)
                }
                Some(_) => Err(Errno::EINVAL),
                None => Err(Errno::ENOSYS),
            }
        }
        None => Err(Errno::ENOSYS),
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
    let vcpu = env.vcpu();
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
        env.guest[0..2].copy_from_slice(&4u16.to_le_bytes());
        assert_eq!(callback_op(&mut env, 1, BASE), Ok(0));
        env.guest[0..2].copy_from_slice(&0u16.to_le_bytes());
        assert_eq!(callback_op(&mut env, 1, BASE), Err(Errno::EINVAL));
        env.guest[0..2].copy_from_slice(&9u16.to_le_bytes());
        assert_eq!(callback_op(&mut env, 1, BASE), Err(Errno::ENOSYS));
        assert_eq!(callback_op(&mut env, 2, BASE), Err(Errno::ENOSYS));
        assert_eq!(callback_op(&mut env, 0, 0x10), Err(Errno::EFAULT));
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
