//! `physdev_op`: of its commands only `PHYSDEVOP_set_iopl` so far; every
//! other one answers `-ENOSYS` (docs/abi-differences.md).
#![forbid(unsafe_code)]

use dom0_abi::Errno;
use dom0_abi::physdev::PhysdevOp;

use super::Env;

/// `physdev_op(cmd, arg)`.
pub fn physdev_op(env: &mut impl Env, cmd: u64, arg: u64) -> Result<u64, Errno> {
    match PhysdevOp::from_number(cmd) {
        Some(PhysdevOp::SetIopl) => set_iopl(env, arg),
        _ => Err(Errno::ENOSYS),
    }
}

/// `PHYSDEVOP_set_iopl`: the calling vCPU's virtual IOPL, which decides
/// whether its `cli`/`sti` are accepted (as no-ops). Any domain may set
/// it, as on Xen; `EFAULT` if `arg` cannot be read, `EINVAL` above 3.
fn set_iopl(env: &mut impl Env, arg: u64) -> Result<u64, Errno> {
    let mut bytes = [0u8; 4];
    env.copy_from_guest(arg, &mut bytes)?;
    let iopl = u8::try_from(u32::from_le_bytes(bytes))
        .ok()
        .filter(|&iopl| iopl <= 3)
        .ok_or(Errno::EINVAL)?;
    env.vcpu().iopl = iopl;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::fake::{BASE, FakeMachine};

    fn set(env: &mut FakeMachine, iopl: u32) -> Result<u64, Errno> {
        env.poke(BASE, &iopl.to_le_bytes());
        physdev_op(env, PhysdevOp::SetIopl as u64, BASE)
    }

    #[test]
    fn set_iopl_as_xen() {
        let mut env = FakeMachine::new(16);
        assert_eq!(set(&mut env, 1), Ok(0));
        assert_eq!(env.vcpu().iopl, 1);
        assert_eq!(set(&mut env, 3), Ok(0));
        assert_eq!(env.vcpu().iopl, 3);
        for bad in [4, 0x100, u32::MAX] {
            assert_eq!(set(&mut env, bad), Err(Errno::EINVAL));
            assert_eq!(env.vcpu().iopl, 3);
        }
        assert_eq!(
            physdev_op(&mut env, PhysdevOp::SetIopl as u64, 0),
            Err(Errno::EFAULT)
        );
        assert_eq!(
            physdev_op(&mut env, PhysdevOp::Eoi as u64, BASE),
            Err(Errno::ENOSYS)
        );
        assert_eq!(physdev_op(&mut env, 9999, BASE), Err(Errno::ENOSYS));
    }
}
