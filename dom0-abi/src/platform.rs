//! `platform_op(op)`: operations on the physical platform (Xen's
//! `public/platform.h`), for the hardware domain.
//!
//! The one argument is the guest address of a [`PlatformOp`]: a `cmd`, the
//! `interface_version` the caller was built against, and a 128-byte union
//! holding the command's structure. The hypervisor reads all 136 bytes
//! first, then checks in this order (Xen 4.17's), stopping at the first
//! error:
//!
//! 1. `EFAULT`: the 136 bytes cannot be read whole (also when only the
//!    part past the command's own structure is unreadable);
//! 2. `EACCES`: `interface_version` is not [`XENPF_INTERFACE_VERSION`];
//! 3. `EPERM`: the caller is not the control domain (the hardware domain,
//!    dom0, here; Xen's XSM default, `XSM_PRIV`);
//! 4. `ENOSYS`: `cmd` is not a [`PlatformCmd`], or one this hypervisor
//!    does not implement (all but [`PlatformCmd::Settime32`] and
//!    [`PlatformCmd::Settime64`]; `docs/abi-differences.md`);
//! 5. the command's own errors, listed with each command.
//!
//! Returns 0 on success for the commands implemented here; they write
//! nothing back.
//!
//! # The wall clock
//!
//! The settime commands set the wall clock that every domain reads from
//! its [`SharedInfo`](crate::shared_info::SharedInfo): `wc_sec`,
//! `wc_sec_hi` and `wc_nsec` hold the wall time (seconds and nanoseconds
//! since 1970-01-01 00:00 UTC) at system time 0, so that a guest computes
//! the time now as that plus its current system time (from
//! [`VcpuTimeInfo`](crate::shared_info::VcpuTimeInfo)). At boot the
//! hypervisor sets it from the CMOS real-time clock. A settime command
//! rewrites it in every domain's page before it returns, under
//! `wc_version` (odd while the fields change).
//!
//! The arithmetic is Xen's, in unsigned 64-bit nanoseconds that wrap: the
//! wall clock becomes `secs * 10^9 + nsecs - system_time`, split into whole
//! seconds and the nanoseconds left over. Nothing is range-checked: a
//! `nsecs` of a second or more carries into the seconds, and a
//! `system_time` later than the time set wraps around to a wall clock
//! near 2^64 ns.

numbered_enum! {
    /// `XENPF_*`: the `cmd` of a [`PlatformOp`]. Every command needs the
    /// checks of the module documentation first; those not implemented
    /// here answer `ENOSYS`.
    PlatformCmd {
        /// [`XenpfSettime32`]: sets the wall clock so that it reads
        /// `secs`.`nsecs` at system time `system_time` (see the module
        /// documentation). Never fails once the common checks passed.
        Settime32 = 17, "settime32";
        /// Sets an MTRR range. Not implemented here (`ENOSYS`).
        AddMemtype = 31, "add_memtype";
        /// Removes an MTRR range. Not implemented here (`ENOSYS`).
        DelMemtype = 32, "del_memtype";
        /// Reads an MTRR. Not implemented here (`ENOSYS`).
        ReadMemtype = 33, "read_memtype";
        /// Loads CPU microcode. Not implemented here (`ENOSYS`).
        MicrocodeUpdate = 35, "microcode_update";
        /// Sets a platform quirk. Not implemented here (`ENOSYS`).
        PlatformQuirk = 39, "platform_quirk";
        /// Reads a physical CPU's identification. Not implemented here
        /// (`ENOSYS`).
        GetCpuVersion = 48, "get_cpu_version";
        /// Calls an EFI runtime service. Not implemented here (`ENOSYS`).
        EfiRuntimeCall = 49, "efi_runtime_call";
        /// Reads firmware information (EDD, MBR signatures, EDID, EFI).
        /// Not implemented here (`ENOSYS`).
        FirmwareInfo = 50, "firmware_info";
        /// Enters an ACPI sleep state. Not implemented here (`ENOSYS`).
        EnterAcpiSleep = 51, "enter_acpi_sleep";
        /// Changes a CPU's frequency. Not implemented here (`ENOSYS`).
        ChangeFreq = 52, "change_freq";
        /// Reads the CPUs' idle times. Not implemented here (`ENOSYS`).
        Getidletime = 53, "getidletime";
        /// Hands over ACPI processor power-management data. Not
        /// implemented here (`ENOSYS`).
        SetProcessorPminfo = 54, "set_processor_pminfo";
        /// [`XenpfPcpuinfo`] (IN `xen_cpuid`; OUT the rest, written
        /// back whole): physical CPU `xen_cpuid`'s APIC and ACPI ids, with
        /// [`XEN_PCPU_FLAGS_ONLINE`] if it runs; a CPU that is not there
        /// gets [`XEN_PCPU_FLAGS_INVALID`] and its ids are left as given.
        /// `max_present` is the highest CPU number there is. CPU 0 is the
        /// boot CPU, the others follow in the MADT's order. `EFAULT`: the
        /// answer cannot be written.
        GetCpuinfo = 55, "get_cpuinfo";
        /// Brings a physical CPU online. Not implemented here (`ENOSYS`).
        CpuOnline = 56, "cpu_online";
        /// Takes a physical CPU offline. Not implemented here (`ENOSYS`).
        CpuOffline = 57, "cpu_offline";
        /// Adds a hot-plugged CPU. Not implemented here (`ENOSYS`).
        CpuHotadd = 58, "cpu_hotadd";
        /// Adds hot-plugged memory. Not implemented here (`ENOSYS`).
        MemHotadd = 59, "mem_hotadd";
        /// Parks or unparks CPUs. Not implemented here (`ENOSYS`).
        CoreParking = 60, "core_parking";
        /// Reads or writes MSRs on a physical CPU. Not implemented here
        /// (`ENOSYS`).
        ResourceOp = 61, "resource_op";
        /// [`XenpfSettime64`]: as [`PlatformCmd::Settime32`] with 64-bit
        /// seconds. `EINVAL`: `mbz` is not 0 (the wall clock is then left
        /// as it was).
        Settime64 = 62, "settime64";
        /// Reads one of the hypervisor's symbols. Not implemented here
        /// (`ENOSYS`).
        GetSymbol = 63, "get_symbol";
    }
}

/// `XENPF_INTERFACE_VERSION`: the only `interface_version` accepted.
pub const XENPF_INTERFACE_VERSION: u32 = 0x0300_0001;

/// Bytes of [`PlatformOp::u`], the union of the commands' structures.
pub const PLATFORM_OP_UNION_SIZE: usize = 128;

/// `struct xen_platform_op` (136 bytes): the argument of `platform_op`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlatformOp {
    /// IN: a [`PlatformCmd`] number.
    pub cmd: u32,
    /// IN: must be [`XENPF_INTERFACE_VERSION`] (`EACCES` otherwise).
    pub interface_version: u32,
    /// IN (and OUT for commands that answer): the command's structure, in
    /// its first bytes; the rest is ignored.
    pub u: [u8; PLATFORM_OP_UNION_SIZE],
}

impl PlatformOp {
    /// An operation for `cmd` at the current interface version whose
    /// union starts with `payload` (the rest zero).
    #[must_use]
    pub fn new<T: crate::wire::Wire>(cmd: PlatformCmd, payload: &T) -> PlatformOp {
        let mut u = [0u8; PLATFORM_OP_UNION_SIZE];
        // Every command structure is smaller than the union.
        let _ = payload.to_wire(&mut u);
        PlatformOp {
            cmd: cmd as u32,
            interface_version: XENPF_INTERFACE_VERSION,
            u,
        }
    }

    /// The command structure at the start of the union.
    #[must_use]
    pub fn payload<T: crate::wire::Wire>(&self) -> Option<T> {
        T::from_wire(&self.u)
    }
}

/// `struct xenpf_settime32` (16 bytes): the wall clock reads
/// `secs`.`nsecs` at system time `system_time`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenpfSettime32 {
    /// IN: seconds since 1970-01-01 00:00 UTC.
    pub secs: u32,
    /// IN: nanoseconds (not checked: a second or more carries).
    pub nsecs: u32,
    /// IN: the system time (ns since boot) at which the wall clock reads
    /// `secs`.`nsecs`.
    pub system_time: u64,
}

/// `struct xenpf_settime64` (24 bytes): the wall clock reads
/// `secs`.`nsecs` at system time `system_time`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenpfSettime64 {
    /// IN: seconds since 1970-01-01 00:00 UTC.
    pub secs: u64,
    /// IN: nanoseconds (not checked: a second or more carries).
    pub nsecs: u32,
    /// IN: must be zero (`EINVAL` otherwise).
    pub mbz: u32,
    /// IN: the system time (ns since boot) at which the wall clock reads
    /// `secs`.`nsecs`.
    pub system_time: u64,
}

/// `XEN_PCPU_FLAGS_ONLINE`: the CPU is online.
pub const XEN_PCPU_FLAGS_ONLINE: u32 = 1;
/// `XEN_PCPU_FLAGS_INVALID`: there is no such CPU.
pub const XEN_PCPU_FLAGS_INVALID: u32 = 2;

/// `struct xenpf_pcpuinfo` (20 bytes): one physical CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenpfPcpuinfo {
    /// IN: the hypervisor's number of the CPU.
    pub xen_cpuid: u32,
    /// OUT: the highest CPU number present.
    pub max_present: u32,
    /// OUT: `XEN_PCPU_FLAGS_*`.
    pub flags: u32,
    /// OUT: its local APIC id (unchanged for an invalid CPU).
    pub apic_id: u32,
    /// OUT: its ACPI processor id (unchanged for an invalid CPU).
    pub acpi_id: u32,
}

crate::assert_layout!(XenpfPcpuinfo, 20, {
    xen_cpuid: 0, max_present: 4, flags: 8, apic_id: 12, acpi_id: 16,
});
crate::assert_layout!(PlatformOp, 136, { cmd: 0, interface_version: 4, u: 8 });
crate::assert_layout!(XenpfSettime32, 16, { secs: 0, nsecs: 4, system_time: 8 });
crate::assert_layout!(XenpfSettime64, 24, { secs: 0, nsecs: 8, mbz: 12, system_time: 16 });

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Wire;

    #[test]
    fn numbers_are_xens() {
        assert_eq!(PlatformCmd::Settime32 as u32, 17);
        assert_eq!(PlatformCmd::Settime64 as u32, 62);
        assert_eq!(PlatformCmd::from_number(63), Some(PlatformCmd::GetSymbol));
        assert_eq!(PlatformCmd::from_number(0), None);
        assert_eq!(PlatformCmd::from_number(64), None);
        assert_eq!(XENPF_INTERFACE_VERSION, 0x0300_0001);
    }

    #[test]
    fn settime64_sits_at_the_start_of_the_union() {
        let set = XenpfSettime64 {
            secs: 0x1122_3344_5566_7788,
            nsecs: 999,
            mbz: 0,
            system_time: 42,
        };
        let op = PlatformOp::new(PlatformCmd::Settime64, &set);
        let mut bytes = [0u8; PlatformOp::SIZE];
        op.to_wire(&mut bytes).unwrap();
        assert_eq!(bytes[..4], 62u32.to_le_bytes());
        assert_eq!(bytes[4..8], XENPF_INTERFACE_VERSION.to_le_bytes());
        assert_eq!(bytes[8..16], 0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(bytes[16..20], 999u32.to_le_bytes());
        assert_eq!(bytes[24..32], 42u64.to_le_bytes());
        let back = PlatformOp::from_wire(&bytes).unwrap();
        assert_eq!(back.payload::<XenpfSettime64>(), Some(set));
        assert_eq!(
            back.payload::<XenpfSettime32>().map(|s| s.secs),
            Some(0x5566_7788)
        );
    }
}
