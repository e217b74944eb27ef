//! The hypercall table: the only place on the hypervisor side that maps
//! hypercall numbers to handlers.
//!
//! Register convention (Xen's x86-64 one): RAX = number; RDI, RSI, RDX, R10,
//! R8 = arguments 1-5; the result goes back in RAX, a negative Xen errno on
//! failure. Numbers that are unknown, or known but not implemented here,
//! return `-ENOSYS`; `dom0-abi`'s docs list which those are.
#![forbid(unsafe_code)]

use dom0_abi::Errno;
use dom0_abi::hypercall::Hypercall;

use super::{Env, console, cpu, sched, stats, version};

/// Runs hypercall `number` with `args` for the calling domain and returns
/// the value for the guest's RAX.
pub fn dispatch(env: &mut impl Env, number: u64, args: [u64; 5]) -> i64 {
    let result = match Hypercall::from_number(number) {
        Some(Hypercall::ConsoleIo) => console::console_io(env, args[0], args[1], args[2]),
        Some(Hypercall::XenVersion) => version::xen_version(env, args[0], args[1]),
        Some(Hypercall::SchedOp) => sched::sched_op(env, args[0], args[1]),
        Some(Hypercall::SchedOpCompat) => sched::sched_op_compat(env, args[0], args[1]),
        Some(Hypercall::SetTrapTable) => cpu::set_trap_table(env, args[0]),
        Some(Hypercall::StackSwitch) => cpu::stack_switch(env, args[0], args[1]),
        Some(Hypercall::SetCallbacks) => cpu::set_callbacks(env, args[0], args[1], args[2]),
        Some(Hypercall::CallbackOp) => cpu::callback_op(env, args[0], args[1]),
        Some(Hypercall::FpuTaskswitch) => cpu::fpu_taskswitch(env, args[0]),
        Some(Hypercall::SetSegmentBase) => cpu::set_segment_base(env, args[0], args[1]),
        Some(Hypercall::StatsOp) => stats::stats_op(env, args[0], args[1]),
        _ => Err(Errno::ENOSYS),
    };
    encode(result)
}

/// Turns a handler's result into the guest-visible RAX value.
fn encode(result: Result<u64, Errno>) -> i64 {
    match result {
        // Successful results are small (counts, versions, sizes): at most
        // `i32::MAX` by construction of every handler.
        Ok(value) => i64::try_from(value).unwrap_or(i64::MAX),
        Err(errno) => errno.neg(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypercall::fake::FakeEnv;

    #[test]
    fn unknown_and_unimplemented_numbers_are_enosys() {
        let mut env = FakeEnv::new();
        for nr in [11, 38, 43, 56, 127, 1000, u64::MAX] {
            assert_eq!(
                dispatch(&mut env, nr, [0; 5]),
                Errno::ENOSYS.neg(),
                "hypercall {nr}"
            );
        }
    }

    #[test]
    fn known_numbers_reach_their_handler() {
        let mut env = FakeEnv::new();
        assert_eq!(
            dispatch(&mut env, Hypercall::XenVersion as u64, [0; 5]),
            0x0004_0011
        );
    }
}
