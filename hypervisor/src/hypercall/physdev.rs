//! `physdev_op`: I/O privilege (`set_iopl`, `set_iobitmap`); every other
//! command answers `-ENOSYS` (docs/abi-differences.md).
#![forbid(unsafe_code)]

use dom0_abi::Errno;
use dom0_abi::layout::guest_addr_ok;
use dom0_abi::physdev::{PhysdevOp, PhysdevSetIobitmap};

use crate::ioport::{IoBitmap, NR_PORTS};

use super::Env;

/// `physdev_op(cmd, arg)`.
pub fn physdev_op(env: &mut impl Env, cmd: u64, arg: u64) -> Result<u64, Errno> {
    match PhysdevOp::from_number(cmd) {
        Some(PhysdevOp::SetIopl) => set_iopl(env, arg),
        Some(PhysdevOp::SetIobitmap) => set_iobitmap(env, arg),
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

/// `PHYSDEVOP_set_iobitmap`: the calling vCPU's I/O bitmap (one bit per
/// port, set = denied, read from guest memory at each access) for ports
/// below `nr_ports`; 0 ports turns it off. Any domain may set it, as on
/// Xen: it only narrows what the domain's rights give. `EFAULT` if `arg`
/// cannot be read; `EINVAL` for more than 65536 ports or a bitmap that
/// starts outside guest space (only the start is checked, as Xen's
/// `guest_handle_okay` does).
fn set_iobitmap(env: &mut impl Env, arg: u64) -> Result<u64, Errno> {
    let mut bytes = [0u8; size_of::<PhysdevSetIobitmap>()];
    env.copy_from_guest(arg, &mut bytes)?;
    let base = u64::from_le_bytes(bytes[0..8].try_into().unwrap_or_default());
    let limit = u32::from_le_bytes(bytes[8..12].try_into().unwrap_or_default());
    if limit > NR_PORTS || !guest_addr_ok(base) {
        return Err(Errno::EINVAL);
    }
    env.vcpu().iobitmap = IoBitmap { base, limit };
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

    fn iobitmap(env: &mut FakeMachine, base: u64, nr_ports: u32) -> Result<u64, Errno> {
        let mut arg = [0u8; 16];
        arg[..8].copy_from_slice(&base.to_le_bytes());
        arg[8..12].copy_from_slice(&nr_ports.to_le_bytes());
        env.poke(BASE, &arg);
        physdev_op(env, PhysdevOp::SetIobitmap as u64, BASE)
    }

    #[test]
    fn set_iobitmap_as_xen() {
        let mut env = FakeMachine::new(16);
        assert_eq!(iobitmap(&mut env, 0x1000, 0x100), Ok(0));
        assert_eq!(
            env.vcpu().iobitmap,
            IoBitmap {
                base: 0x1000,
                limit: 0x100
            }
        );
        assert_eq!(iobitmap(&mut env, 0x2000, 0x1_0000), Ok(0));
        assert_eq!(iobitmap(&mut env, 0x7fff_ffff_f000, 0x100), Ok(0));
        for (base, ports) in [
            (0x1000, 0x1_0001),
            (0xffff_8000_0000_0000, 0x100),
            (0x0000_8000_0000_0000, 0x10),
        ] {
            assert_eq!(iobitmap(&mut env, base, ports), Err(Errno::EINVAL));
        }
        assert_eq!(env.vcpu().iobitmap.base, 0x7fff_ffff_f000);
        assert_eq!(iobitmap(&mut env, 0, 0), Ok(0));
        assert_eq!(env.vcpu().iobitmap, IoBitmap::default());
        assert_eq!(
            physdev_op(&mut env, PhysdevOp::SetIobitmap as u64, 0),
            Err(Errno::EFAULT)
        );
    }
}
