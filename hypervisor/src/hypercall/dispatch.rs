//! The hypercall table: the only place on the hypervisor side that maps
//! hypercall numbers to handlers.
//!
//! Register convention (Xen's x86-64 one): RAX = number; RDI, RSI, RDX, R10,
//! R8 = arguments 1-5; the result goes back in RAX, a negative Xen errno on
//! failure. Numbers that are unknown, or known but not implemented here,
//! return `-ENOSYS`; `docs/abi-differences.md` lists which are implemented.
//!
//! Memory operations record TLB flushes and view resyncs in one
//! [`Effects`] per hypercall (a `multicall` shares one between all its
//! entries), which [`Env::apply_effects`] carries out at the end; other
//! hypercalls never build one.
#![forbid(unsafe_code)]

use dom0_abi::Errno;
use dom0_abi::hypercall::Hypercall;

#[cfg(doc)]
use super::Env;
use super::mmu::{self, MmuEnv};
use super::{console, cpu, desc, evtchn, memory, sched, stats, vcpu, version};
use crate::mm::effects::Effects;

/// Multicall entries run per invocation before the call is continued.
const MULTICALL_CHUNK: u64 = 64;
/// Bytes of one `multicall_entry`.
const MULTICALL_ENTRY_SIZE: u64 = 64;

/// Runs hypercall `number` with `args` for the calling vCPU and returns the
/// value for the guest's RAX.
pub fn dispatch(env: &mut impl MmuEnv, number: u64, args: [u64; 5]) -> i64 {
    let result = match Hypercall::from_number(number) {
        Some(call) if is_memory_op(call) => {
            let mut fx = Effects::default();
            let result = memory_call(env, &mut fx, call, args);
            env.apply_effects(&fx);
            result
        }
        Some(call) => plain_call(env, call, args),
        None => Err(Errno::ENOSYS),
    };
    encode(result)
}

/// Hypercalls that change mappings or page types, and so leave
/// [`Effects`] (TLB flushes, view resyncs) to be carried out afterwards.
const fn is_memory_op(call: Hypercall) -> bool {
    matches!(
        call,
        Hypercall::MmuUpdate
            | Hypercall::MmuextOp
            | Hypercall::UpdateVaMapping
            | Hypercall::UpdateVaMappingOtherdomain
            | Hypercall::VmAssist
            | Hypercall::MemoryOp
            | Hypercall::SetGdt
            | Hypercall::UpdateDescriptor
            | Hypercall::VcpuOp
    )
}

/// The hypercalls that touch no page tables.
fn plain_call(env: &mut impl MmuEnv, call: Hypercall, a: [u64; 5]) -> Result<u64, Errno> {
    match call {
        Hypercall::ConsoleIo => console::console_io(env, a[0], a[1], a[2]),
        Hypercall::XenVersion => version::xen_version(env, a[0], a[1]),
        Hypercall::SchedOp => sched::sched_op(env, a[0], a[1]),
        Hypercall::SchedOpCompat => sched::sched_op_compat(env, a[0], a[1]),
        Hypercall::SetTrapTable => cpu::set_trap_table(env, a[0]),
        Hypercall::StackSwitch => cpu::stack_switch(env, a[0], a[1]),
        Hypercall::SetCallbacks => cpu::set_callbacks(env, a[0], a[1], a[2]),
        Hypercall::CallbackOp => cpu::callback_op(env, a[0], a[1]),
        Hypercall::FpuTaskswitch => cpu::fpu_taskswitch(env, a[0]),
        Hypercall::SetSegmentBase => cpu::set_segment_base(env, a[0], a[1]),
        Hypercall::SetDebugreg => cpu::set_debugreg(env, a[0], a[1]),
        Hypercall::GetDebugreg => cpu::get_debugreg(env, a[0]),
        Hypercall::Iret => env.iret(),
        Hypercall::Multicall => multicall(env, a[0], a[1]),
        Hypercall::StatsOp => stats::stats_op(env, a[0], a[1]),
        Hypercall::EventChannelOp => evtchn::event_channel_op(env, a[0], a[1]),
        Hypercall::EventChannelOpCompat => evtchn::event_channel_op_compat(env, a[0]),
        _ => Err(Errno::ENOSYS),
    }
}

/// The hypercalls that change mappings or page types.
fn memory_call(
    env: &mut impl MmuEnv,
    fx: &mut Effects,
    call: Hypercall,
    a: [u64; 5],
) -> Result<u64, Errno> {
    match call {
        Hypercall::MmuUpdate => mmu::mmu_update(env, fx, a[0], a[1], a[2], a[3]),
        Hypercall::MmuextOp => mmu::mmuext_op(env, fx, a[0], a[1], a[2], a[3]),
        Hypercall::UpdateVaMapping => mmu::update_va_mapping(env, fx, a[0], a[1], a[2]),
        Hypercall::UpdateVaMappingOtherdomain => {
            mmu::update_va_mapping_otherdomain(env, fx, a[0], a[1], a[2], a[3])
        }
        Hypercall::VmAssist => mmu::vm_assist(env, a[0], a[1]),
        Hypercall::MemoryOp => memory::memory_op(env, fx, a[0], a[1]),
        Hypercall::SetGdt => desc::set_gdt(env, fx, a[0], a[1]),
        Hypercall::UpdateDescriptor => desc::update_descriptor(env, fx, a[0], a[1]),
        Hypercall::VcpuOp => vcpu::vcpu_op(env, fx, a[0], a[1], a[2]),
        _ => Err(Errno::ENOSYS),
    }
}

/// Turns a handler's result into the guest-visible RAX value.
fn encode(result: Result<u64, Errno>) -> i64 {
    match result {
        Ok(value) => value.cast_signed(),
        Err(errno) => errno.neg(),
    }
}

/// `multicall(entries, nr)`: runs each `multicall_entry` `{op, result,
/// args[6]}` in order, whatever earlier entries returned, and stores each
/// result (64-bit, sign-extended). A nested `multicall` entry gets
/// `-EINVAL` and the batch goes on; an `iret` entry performs the iret and
/// ends the batch (later entries are not run). `-EFAULT` if an entry cannot
/// be read or its result written. Long batches are continued; an entry that
/// is itself continued is rewritten in place and run again.
fn multicall(env: &mut impl MmuEnv, entries: u64, nr: u64) -> Result<u64, Errno> {
    let mut fx = Effects::default();
    let result = multicall_entries(env, &mut fx, entries, nr);
    env.apply_effects(&fx);
    result
}

/// The entries of a multicall, sharing one [`Effects`]: TLB flushes are
/// deferred to the end of the whole batch.
fn multicall_entries(
    env: &mut impl MmuEnv,
    fx: &mut Effects,
    entries: u64,
    nr: u64,
) -> Result<u64, Errno> {
    let nr = nr & 0xffff_ffff;
    for i in 0..nr {
        if i == MULTICALL_CHUNK {
            env.preempt([entries + i * MULTICALL_ENTRY_SIZE, nr - i, 0, 0, 0]);
            return Ok(0);
        }
        let at = entries
            .checked_add(i * MULTICALL_ENTRY_SIZE)
            .ok_or(Errno::EFAULT)?;
        let mut raw = [0u8; 64];
        env.copy_from_guest(at, &mut raw)?;
        let word =
            |k: usize| u64::from_le_bytes(raw[8 * k..8 * k + 8].try_into().unwrap_or_default());
        let (op, args) = (word(0), [word(2), word(3), word(4), word(5), word(6)]);
        let result = match Hypercall::from_number(op) {
            Some(Hypercall::Multicall) => Errno::EINVAL.neg(),
            Some(call) if is_memory_op(call) => encode(memory_call(env, fx, call, args)),
            Some(call) => encode(plain_call(env, call, args)),
            None => Errno::ENOSYS.neg(),
        };
        if let Some(args) = env.take_preempted() {
            let mut rewritten = [0u8; 40];
            for (chunk, arg) in rewritten.chunks_exact_mut(8).zip(args) {
                chunk.copy_from_slice(&arg.to_le_bytes());
            }
            env.copy_to_guest(at + 16, &rewritten)?;
            env.preempt([at, nr - i, 0, 0, 0]);
            return Ok(0);
        }
        env.copy_to_guest(at + 8, &result.to_le_bytes())?;
        if Hypercall::from_number(op) == Some(Hypercall::Iret) {
            break;
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypercall::Env;
    use crate::mm::fake::{BASE, FakeMachine};

    fn run(env: &mut FakeMachine, number: u64, args: [u64; 5]) -> i64 {
        dispatch(env, number, args)
    }

    #[test]
    fn unknown_and_unimplemented_numbers_are_enosys() {
        let mut env = FakeMachine::new(64);
        for nr in [11, 38, 43, 56, 127, 1000, u64::MAX] {
            assert_eq!(
                run(&mut env, nr, [0; 5]),
                Errno::ENOSYS.neg(),
                "hypercall {nr}"
            );
        }
    }

    #[test]
    fn known_numbers_reach_their_handler() {
        let mut env = FakeMachine::new(64);
        assert_eq!(
            run(&mut env, Hypercall::XenVersion as u64, [0; 5]),
            0x0004_0011
        );
    }

    fn entry(env: &mut FakeMachine, i: u64, op: u64, args: [u64; 6]) {
        let mut raw = [0u8; 64];
        raw[..8].copy_from_slice(&op.to_le_bytes());
        for (k, a) in args.iter().enumerate() {
            raw[16 + 8 * k..24 + 8 * k].copy_from_slice(&a.to_le_bytes());
        }
        env.poke(BASE + i * 64, &raw);
    }

    #[test]
    fn multicall_runs_every_entry_and_stores_results() {
        let mut env = FakeMachine::new(64);
        entry(&mut env, 0, 17, [0; 6]);
        entry(&mut env, 1, 11, [0; 6]);
        entry(&mut env, 2, 13, [BASE, 1, 0, 0, 0, 0]);
        entry(&mut env, 3, 17, [0; 6]);
        assert_eq!(run(&mut env, 13, [BASE, 4, 0, 0, 0]), 0);
        assert_eq!(env.peek_u64(BASE + 8), 0x0004_0011);
        assert_eq!(
            env.peek_u64(BASE + 64 + 8),
            Errno::ENOSYS.neg().cast_unsigned()
        );
        assert_eq!(
            env.peek_u64(BASE + 128 + 8),
            Errno::EINVAL.neg().cast_unsigned()
        );
        assert_eq!(env.peek_u64(BASE + 192 + 8), 0x0004_0011);
        assert_eq!(run(&mut env, 13, [0x10, 1, 0, 0, 0]), Errno::EFAULT.neg());
        assert_eq!(run(&mut env, 13, [BASE, 0, 0, 0, 0]), 0);
    }

    #[test]
    fn long_multicalls_continue() {
        let mut env = FakeMachine::new(64);
        for i in 0..70 {
            entry(&mut env, i, 17, [0; 6]);
        }
        assert_eq!(run(&mut env, 13, [BASE, 70, 0, 0, 0]), 0);
        assert_eq!(env.take_preempted(), Some([BASE + 64 * 64, 6, 0, 0, 0]));
    }
}
