//! `platform_op`: setting the wall clock (`XENPF_settime32`,
//! `XENPF_settime64`) and describing the physical CPUs
//! (`XENPF_get_cpuinfo`); every other command is `-ENOSYS` here.
//!
//! Xen 4.17's order of checks: the whole `xen_platform_op` is read
//! (`EFAULT`), then its interface version (`EACCES`), then the caller's
//! privilege (`EPERM`, Xen's `XSM_PRIV` default), then the command. The
//! new wall clock is computed with Xen's wrapping arithmetic
//! (`crate::wallclock`) and published in every domain before the call
//! returns; nothing is written back to the guest. `get_cpuinfo` writes
//! its `xenpf_pcpuinfo` back (`EFAULT` if it cannot).
#![forbid(unsafe_code)]

use dom0_abi::Errno;
use dom0_abi::platform::{
    PlatformCmd, PlatformOp, XEN_PCPU_FLAGS_INVALID, XEN_PCPU_FLAGS_ONLINE,
    XENPF_INTERFACE_VERSION, XenpfPcpuinfo, XenpfSettime32, XenpfSettime64,
};

use super::{Env, Pcpu, read_struct, write_struct};
use crate::wallclock::Wallclock;

/// Where the command's structure lies in `xen_platform_op`.
const UNION_OFFSET: u64 = 8;

/// `platform_op(op)`: `op` is the guest address of a `xen_platform_op`.
pub fn platform_op(env: &mut impl Env, op_addr: u64) -> Result<u64, Errno> {
    let op: PlatformOp = read_struct(env, op_addr)?;
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
        Some(PlatformCmd::GetCpuinfo) => {
            let info = cpuinfo(env.host().pcpus, op.payload().ok_or(Errno::EFAULT)?);
            write_struct(env, op_addr.wrapping_add(UNION_OFFSET), &info)?;
            return Ok(0);
        }
        _ => return Err(Errno::ENOSYS),
    };
    env.set_wallclock(privilege, wallclock);
    Ok(0)
}

/// Xen's `XENPF_get_cpuinfo` answer for `info.xen_cpuid` among `pcpus`.
fn cpuinfo(pcpus: &[Pcpu], mut info: XenpfPcpuinfo) -> XenpfPcpuinfo {
    match usize::try_from(info.xen_cpuid)
        .ok()
        .and_then(|i| pcpus.get(i))
    {
        Some(pcpu) => {
            info.apic_id = pcpu.apic_id;
            info.acpi_id = pcpu.acpi_id;
            info.flags = if pcpu.online {
                XEN_PCPU_FLAGS_ONLINE
            } else {
                0
            };
        }
        None => info.flags = XEN_PCPU_FLAGS_INVALID,
    }
    info.max_present = u32::try_from(pcpus.len().saturating_sub(1)).unwrap_or(u32::MAX);
    info
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
            if !matches!(
                cmd,
                PlatformCmd::Settime32 | PlatformCmd::Settime64 | PlatformCmd::GetCpuinfo
            ) {
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
    fn get_cpuinfo_describes_each_cpu() {
        let mut env = FakeMachine::new(16);
        let ask = |env: &mut FakeMachine, xen_cpuid: u32| {
            let given = XenpfPcpuinfo {
                xen_cpuid,
                max_present: 77,
                flags: 77,
                apic_id: 0xdead,
                acpi_id: 0xbeef,
            };
            let r = run(env, &PlatformOp::new(PlatformCmd::GetCpuinfo, &given));
            let mut out = [0u8; XenpfPcpuinfo::SIZE];
            env.copy_from_guest(BASE + 8, &mut out).unwrap();
            (r, XenpfPcpuinfo::from_wire(&out).unwrap())
        };
        let info = |xen_cpuid, flags, apic_id, acpi_id| XenpfPcpuinfo {
            xen_cpuid,
            max_present: 1,
            flags,
            apic_id,
            acpi_id,
        };
        assert_eq!(
            ask(&mut env, 0),
            (Ok(0), info(0, XEN_PCPU_FLAGS_ONLINE, 0, 0))
        );
        assert_eq!(ask(&mut env, 1), (Ok(0), info(1, 0, 2, 1)));
        for cpu in [2, u32::MAX] {
            assert_eq!(
                ask(&mut env, cpu),
                (Ok(0), info(cpu, XEN_PCPU_FLAGS_INVALID, 0xdead, 0xbeef))
            );
        }
        env.domain.mm.privilege = None;
        assert_eq!(ask(&mut env, 0).0, Err(Errno::EPERM));
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
