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

use core::mem::offset_of;

use dom0_abi::Errno;
use dom0_abi::hypercall::Hypercall;
use dom0_abi::multicall::MulticallEntry;
use dom0_abi::wire::Wire;

#[cfg(doc)]
use super::Env;
use super::domctl::{self, ControlEnv};
use super::mmu;
use super::{
    console, cpu, desc, evtchn, gnttab, mca, memory, physdev, platform, sched, stats, vcpu, version,
};
use crate::mm::effects::Effects;

/// Multicall entries run per invocation before the call is continued.
const MULTICALL_CHUNK: u64 = 64;
/// Bytes of one `multicall_entry`.
const ENTRY_SIZE: u64 = MulticallEntry::SIZE as u64;

/// Runs hypercall `number` with `args` for the calling vCPU and returns the
/// value for the guest's RAX. Inlined: it is the whole of the per-entry
/// routing, a few instructions around the call of [`run`].
///
/// The direct path: two hypercalls that record no [`Effects`] are routed
/// here and do not pay [`run`]'s frame, which every other hypercall
/// shares: `iret`, which ends every exception, system call and event
/// bounce, and `xen_version`, whose hot sub-op (`XENVER_version`) is
/// answered inline (the others go on to their own function). They are the
/// same handlers `run` calls inside a `multicall`.
#[inline(always)]
pub fn dispatch(env: &mut impl ControlEnv, number: u64, args: [u64; 5]) -> i64 {
    encode(match Hypercall::from_number(number) {
        Some(Hypercall::Iret) => env.iret(),
        Some(Hypercall::XenVersion) => version::xen_version(env, args[0], args[1]),
        Some(call) => run(env, None, call, args),
        None => Err(Errno::ENOSYS),
    })
}

/// Runs `call` with arguments `a`. A hypercall that changes mappings or
/// page types records what is left to do (TLB flushes, view resyncs) in
/// `batch` when it runs inside a `multicall` (which carries all of it out
/// at the end), else in its own [`Effects`], carried out when it returns;
/// the others never build one. Every hypercall of the table has its arm:
/// the ones not implemented say `ENOSYS` explicitly.
fn run(
    env: &mut impl ControlEnv,
    batch: Option<&mut Effects>,
    call: Hypercall,
    a: [u64; 5],
) -> Result<u64, Errno> {
    match call {
        Hypercall::MmuUpdate => with_effects(env, batch, |env, fx| {
            mmu::mmu_update(env, fx, a[0], a[1], a[2], a[3])
        }),
        Hypercall::MmuextOp => with_effects(env, batch, |env, fx| {
            mmu::mmuext_op(env, fx, a[0], a[1], a[2], a[3])
        }),
        Hypercall::UpdateVaMapping => with_effects(env, batch, |env, fx| {
            mmu::update_va_mapping(env, fx, a[0], a[1], a[2])
        }),
        Hypercall::UpdateVaMappingOtherdomain => with_effects(env, batch, |env, fx| {
            mmu::update_va_mapping_otherdomain(env, fx, a[0], a[1], a[2], a[3])
        }),
        Hypercall::VmAssist => mmu::vm_assist(env, a[0], a[1]),
        Hypercall::MemoryOp => {
            with_effects(env, batch, |env, fx| memory::memory_op(env, fx, a[0], a[1]))
        }
        Hypercall::SetGdt => with_effects(env, batch, |env, fx| desc::set_gdt(env, fx, a[0], a[1])),
        Hypercall::UpdateDescriptor => with_effects(env, batch, |env, fx| {
            desc::update_descriptor(env, fx, a[0], a[1])
        }),
        Hypercall::VcpuOp => {
            let result = with_effects(env, batch, |env, fx| {
                vcpu::vcpu_op(env, fx, a[0], a[1], a[2])
            });
            env.wake_kicked();
            result
        }
        Hypercall::ConsoleIo => console::console_io(env, a[0], a[1], a[2]),
        Hypercall::XenVersion => version::xen_version(env, a[0], a[1]),
        Hypercall::SchedOp => sched::sched_op(env, a[0], a[1]),
        Hypercall::SchedOpCompat => sched::sched_op_compat(env, a[0], a[1]),
        Hypercall::SetTimerOp => sched::set_timer_op(env, a[0]),
        Hypercall::SetTrapTable => cpu::set_trap_table(env, a[0]),
        Hypercall::StackSwitch => cpu::stack_switch(env, a[0], a[1]),
        Hypercall::SetCallbacks => cpu::set_callbacks(env, a[0], a[1], a[2]),
        Hypercall::CallbackOp => cpu::callback_op(env, a[0], a[1]),
        Hypercall::NmiOp => cpu::nmi_op(env, a[0], a[1]),
        Hypercall::FpuTaskswitch => cpu::fpu_taskswitch(env, a[0]),
        Hypercall::SetSegmentBase => cpu::set_segment_base(env, a[0], a[1]),
        Hypercall::SetDebugreg => cpu::set_debugreg(env, a[0], a[1]),
        Hypercall::GetDebugreg => cpu::get_debugreg(env, a[0]),
        Hypercall::Iret => env.iret(),
        // A multicall inside a multicall is refused (that entry only).
        Hypercall::Multicall => match batch {
            Some(_) => Err(Errno::EINVAL),
            None => multicall(env, a[0], a[1]),
        },
        Hypercall::Domctl => with_effects(env, batch, |env, fx| domctl::domctl(env, fx, a[0])),
        Hypercall::Sysctl => domctl::sysctl(env, a[0]),
        Hypercall::StatsOp => stats::stats_op(env, a[0], a[1]),
        Hypercall::EventChannelOp => {
            let result = evtchn::event_channel_op(env, a[0], a[1]);
            env.wake_kicked();
            result
        }
        Hypercall::EventChannelOpCompat => {
            let result = evtchn::event_channel_op_compat(env, a[0]);
            env.wake_kicked();
            result
        }
        Hypercall::PlatformOp => platform::platform_op(env, a[0]),
        Hypercall::Mca => mca::mca(env, a[0]),
        Hypercall::GrantTableOp => with_effects(env, batch, |env, fx| {
            gnttab::grant_table_op(env, fx, a[0], a[1], a[2])
        }),
        Hypercall::PhysdevOp => with_effects(env, batch, |env, fx| {
            physdev::physdev_op(env, fx, a[0], a[1])
        }),
        Hypercall::PhysdevOpCompat
        | Hypercall::XsmOp
        | Hypercall::XenoprofOp
        | Hypercall::HvmOp
        | Hypercall::KexecOp
        | Hypercall::TmemOp
        | Hypercall::ArgoOp
        | Hypercall::XenpmuOp
        | Hypercall::DmOp
        | Hypercall::HypfsOp
        | Hypercall::Arch1
        | Hypercall::Arch2
        | Hypercall::Arch3
        | Hypercall::Arch4
        | Hypercall::Arch5
        | Hypercall::Arch6
        | Hypercall::Arch7 => Err(Errno::ENOSYS),
    }
}

/// Runs a hypercall that records [`Effects`]: into the multicall's
/// `batch` if there is one, else into its own, carried out at once.
fn with_effects<E: ControlEnv>(
    env: &mut E,
    batch: Option<&mut Effects>,
    f: impl FnOnce(&mut E, &mut Effects) -> Result<u64, Errno>,
) -> Result<u64, Errno> {
    match batch {
        Some(fx) => f(env, fx),
        None => {
            let mut fx = Effects::default();
            let result = f(env, &mut fx);
            env.apply_effects(&fx);
            result
        }
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
fn multicall(env: &mut impl ControlEnv, entries: u64, nr: u64) -> Result<u64, Errno> {
    let mut fx = Effects::default();
    let result = multicall_entries(env, &mut fx, entries, nr);
    env.apply_effects(&fx);
    result
}

/// The entries of a multicall, sharing one [`Effects`]: TLB flushes are
/// deferred to the end of the whole batch.
fn multicall_entries(
    env: &mut impl ControlEnv,
    fx: &mut Effects,
    entries: u64,
    nr: u64,
) -> Result<u64, Errno> {
    let nr = nr & 0xffff_ffff;
    for i in 0..nr {
        if i == MULTICALL_CHUNK {
            env.preempt([entries + i * ENTRY_SIZE, nr - i, 0, 0, 0]);
            return Ok(0);
        }
        let at = entries.checked_add(i * ENTRY_SIZE).ok_or(Errno::EFAULT)?;
        let mut raw = [0u8; MulticallEntry::SIZE];
        env.copy_from_guest(at, &mut raw)?;
        let entry = MulticallEntry::from_wire(&raw).ok_or(Errno::EFAULT)?;
        let op = entry.op;
        let a = entry.args;
        let args = [a[0], a[1], a[2], a[3], a[4]];
        let result = encode(match Hypercall::from_number(op) {
            Some(call) => run(env, Some(&mut *fx), call, args),
            None => Err(Errno::ENOSYS),
        });
        if let Some(args) = env.take_preempted() {
            if env.slot_busy() {
                // A slot found busy: the entry runs again as the guest
                // wrote it.
                env.clear_slot_busy();
            } else {
                let mut rewritten = [0u8; 40];
                for (chunk, arg) in rewritten.chunks_exact_mut(8).zip(args) {
                    chunk.copy_from_slice(&arg.to_le_bytes());
                }
                env.copy_to_guest(at + offset_of!(MulticallEntry, args) as u64, &rewritten)?;
            }
            env.preempt([at, nr - i, 0, 0, 0]);
            return Ok(0);
        }
        env.copy_to_guest(
            at + offset_of!(MulticallEntry, result) as u64,
            &result.to_le_bytes(),
        )?;
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

    /// Where the tests below keep an event channel operation's argument.
    const ARG: u64 = BASE + 0x800;
    const EVTCHN: u64 = Hypercall::EventChannelOp as u64;
    const SEND: u64 = 4;
    const CLOSE: u64 = 3;

    /// Domain 5 with an unbound port for the caller, which binds to it:
    /// (the caller's port, the peer's).
    fn interdomain_pair(env: &mut FakeMachine) -> (u32, u32) {
        use crate::domain::{Domain, DomainEntry};
        use dom0_abi::types::DomId;
        extern crate alloc;
        use dom0_abi::event_channel::EvtchnBindInterdomain;
        let mut peer = DomainEntry::new(Domain::domu(DomId(5), [5; 16], 1, 1023, 0x5000));
        let remote_port = peer.domain.evtchn.alloc_unbound_for(env.domain.id).unwrap();
        env.others.insert(5, alloc::boxed::Box::new(peer));
        let mut bind = EvtchnBindInterdomain {
            remote_dom: 5,
            remote_port,
            ..Default::default()
        };
        let mut raw = [0u8; EvtchnBindInterdomain::SIZE];
        bind.to_wire(&mut raw).unwrap();
        env.poke(ARG, &raw);
        assert_eq!(run(env, EVTCHN, [0, ARG, 0, 0, 0]), 0);
        bind = EvtchnBindInterdomain::from_wire(&env.guest[0x800..]).unwrap();
        (bind.local_port, remote_port)
    }

    /// Runs a hypercall the guest made with `args` in its registers.
    fn entered(env: &mut FakeMachine, number: u64, args: [u64; 5]) -> i64 {
        env.entry_args = args;
        run(env, number, args)
    }

    fn peer_pending(env: &FakeMachine, port: u32) -> bool {
        env.other_events
            .get(&5)
            .is_some_and(|bits| bits.pending(port))
    }

    #[test]
    fn a_busy_slot_continues_the_call_with_its_own_arguments() {
        let mut env = FakeMachine::new(64);
        let (port, remote) = interdomain_pair(&mut env);
        env.poke(ARG, &port.to_le_bytes());
        env.busy.insert(5);
        entered(&mut env, EVTCHN, [SEND, ARG, 0, 0, 0]);
        assert_eq!(env.take_preempted(), Some([SEND, ARG, 0, 0, 0]));
        assert!(!peer_pending(&env, remote));
        env.slot_busy = false;
        // Inside a multicall: the entry is run again, its result unwritten.
        entry(&mut env, 0, 17, [0; 6]);
        entry(&mut env, 1, EVTCHN, [SEND, ARG, 0, 0, 0, 0]);
        env.poke(BASE + 64 + 8, &[0xee; 8]);
        assert_eq!(entered(&mut env, 13, [BASE, 2, 0, 0, 0]), 0);
        assert_eq!(env.take_preempted(), Some([BASE + 64, 1, 0, 0, 0]));
        assert!(!env.slot_busy, "cleared once continued");
        assert_eq!(env.peek_u64(BASE + 8), 0x0004_0011);
        assert_eq!(env.peek_u64(BASE + 64 + 8), u64::from_le_bytes([0xee; 8]));
        assert_eq!(env.peek_u64(BASE + 64 + 16), SEND);
        assert_eq!(env.peek_u64(BASE + 64 + 24), ARG);
        // Closing keeps the port whole until the peer can be reached.
        env.poke(ARG, &port.to_le_bytes());
        entered(&mut env, EVTCHN, [CLOSE, ARG, 0, 0, 0]);
        assert_eq!(env.take_preempted(), Some([CLOSE, ARG, 0, 0, 0]));
        assert!(env.domain.evtchn.remote_end(port).is_some());
        // The slot free again, the same calls succeed.
        env.busy.clear();
        assert_eq!(run(&mut env, 13, [BASE + 64, 1, 0, 0, 0]), 0);
        assert_eq!(env.take_preempted(), None);
        assert_eq!(env.peek_u64(BASE + 64 + 8), 0);
        assert!(peer_pending(&env, remote));
        env.poke(ARG, &port.to_le_bytes());
        assert_eq!(run(&mut env, EVTCHN, [CLOSE, ARG, 0, 0, 0]), 0);
        assert_eq!(env.take_preempted(), None);
        assert!(env.domain.evtchn.remote_end(port).is_none());
        let peer = &env.others[&5].domain.evtchn;
        assert!(peer.remote_end(remote).is_none(), "disconnected");
    }
}
