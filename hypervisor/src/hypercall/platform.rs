//! `platform_op`: setting the wall clock (`XENPF_settime32`,
//! `XENPF_settime64`); every other command is `-ENOSYS` here.
//!
//! Xen 4.17's order of checks: the whole `xen_platform_op` is read
//! (`EFAULT`), then its interface version (`EACCES`), then the caller's
//! privilege (`EPERM`, Xen's `XSM_PRIV` default), then the command. The
//! new wall clock is computed with Xen's wrapping arithmetic
//! (`crate::wallclock`) and published in every domain before the call
//! returns; nothing is written back to the guest.
#![forbid(unsafe_code)]

use dom0_abi::Errno;
use dom0_abi::platform::{
    PlatformCmd, PlatformOp, XENPF_INTERFACE_VERSION, XenpfSettime32, XenpfSettime64,
};

use super::{Env, read_struct};
use crate::wallclock::Wallclock;

/// `platform_op(op)`: `op` is the guest address of a `xen_platform_op`.
pub fn platform_op(env: &mut impl Env, op: u64) -> Result<u64, Errno> {
    let op: PlatformOp = read_struct(env, op)?;
    if op.interface_version != XENPF_INTERFACE_VERSION {
        return Err(Errno::EACCES);
    }
    let Some(privilege) = env.domain().mm.privilege else {
        return Err(Errno::EPERM);
    };
    let wallclock = match PlatformCmd::from_number(u64::from(op.cmd)) {
        Some(PlatformCmd::Settime32) => {
            let set: XenpfSettime32 = op.payload().ok_or(Errno::EFAULT)?;
            Wallclock::reading_at(u64::from(set.secs), set.nsecs, set.system_time)
        }
        Some(PlatformCmd::Settime64) => {
            let set: XenpfSettime64 = op.payload().ok_or(Errno::EFAULT)?;
            if set.mbz != 0 {
                return Err(Errno::EINVAL);
            }
            Wallclock::reading_at(set.secs, set.nsecs, set.system_time)
        }
        _ => return Err(Errno::ENOSYS),
    };
    env.set_wallclock(privilege, wallclock);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::fake::{BASE, FakeMachine};
    use dom0_abi::wire::Wire;

    /// Writes `op` at `BASE` and runs `platform_op` on it.
    fn run(env: &mut FakeMachine, op: &PlatformOp) -> Result<u64, Errno> {
        let mut bytes = [0u8; PlatformOp::SIZE];
        op.to_wire(&mut bytes).unwrap();
        env.poke(BASE, &bytes);
        platform_op(env, BASE)
    }

    fn settime64(secs: u64, nsecs: u32, mbz: u32, system_time: u64) -> PlatformOp {
        PlatformOp::new(
            PlatformCmd::Settime64,
            &XenpfSettime64 {
                secs,
                nsecs,
                mbz,
                system_time,
            },
        )
    }

    #[test]
    fn settime64_sets_the_wall_clock() {
        let mut env = FakeMachine::new(16);
        let op = settime64(1_750_000_000, 123_456_789, 0, 2_000_000_000);
        assert_eq!(run(&mut env, &op), Ok(0));
        let wc = env.wallclock.expect("the wall clock was set");
        assert_eq!((wc.sec(), wc.nsec()), (1_749_999_998, 123_456_789));
    }

    #[test]
    fn settime32_takes_32_bit_seconds() {
        let mut env = FakeMachine::new(16);
        let set = XenpfSettime32 {
            secs: u32::MAX,
            nsecs: 2_000_000_001,
            system_time: 5_000_000_000,
        };
        let op = PlatformOp::new(PlatformCmd::Settime32, &set);
        assert_eq!(run(&mut env, &op), Ok(0));
        let wc = env.wallclock.expect("the wall clock was set");
        assert_eq!((wc.sec(), wc.nsec()), (4_294_967_292, 1));
    }

    #[test]
    fn errors_in_xens_order() {
        let mut env = FakeMachine::new(16);
        let mut op = settime64(1, 0, 1, 0);
        assert_eq!(run(&mut env, &op), Err(Errno::EINVAL));
        op.interface_version = XENPF_INTERFACE_VERSION + 1;
        assert_eq!(run(&mut env, &op), Err(Errno::EACCES), "version first");
        op.cmd = 0;
        assert_eq!(run(&mut env, &op), Err(Errno::EACCES));
        op.interface_version = XENPF_INTERFACE_VERSION;
        assert_eq!(run(&mut env, &op), Err(Errno::ENOSYS));
        for cmd in PlatformCmd::ALL {
            if !matches!(cmd, PlatformCmd::Settime32 | PlatformCmd::Settime64) {
                op.cmd = *cmd as u32;
                assert_eq!(run(&mut env, &op), Err(Errno::ENOSYS), "{}", cmd.name());
            }
        }
        env.domain.mm.privilege = None;
        let op = settime64(1, 0, 1, 0);
        assert_eq!(
            run(&mut env, &op),
            Err(Errno::EPERM),
            "privilege before mbz"
        );
        let mut op = op;
        op.interface_version = 0;
        assert_eq!(
            run(&mut env, &op),
            Err(Errno::EACCES),
            "version before privilege"
        );
        assert_eq!(env.wallclock, None, "no error sets the clock");
    }

    #[test]
    fn the_whole_operation_must_be_readable() {
        let mut env = FakeMachine::new(16);
        assert_eq!(platform_op(&mut env, 0x1000), Err(Errno::EFAULT));
        // The 32 bytes settime64 uses end the fake guest memory; the rest
        // of the 136 lie beyond it.
        let end = BASE + env.guest.len() as u64;
        let mut bytes = [0u8; PlatformOp::SIZE];
        settime64(1, 0, 0, 0).to_wire(&mut bytes).unwrap();
        env.poke(end - 32, &bytes[..32]);
        assert_eq!(platform_op(&mut env, end - 32), Err(Errno::EFAULT));
        assert_eq!(env.wallclock, None);
    }
}
