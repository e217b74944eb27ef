//! `sysctl(arg)` (hypercall 35): the toolstack's whole-machine operations.
//!
//! The one argument points at a [`Sysctl`] (136 bytes). Unlike
//! [`crate::domctl::Domctl`], the 128-byte union starts at offset 8: there
//! is no domain field.
//!
//! # Checks, in this order (every command)
//!
//! 1. The structure cannot be read: `EFAULT`.
//! 2. `interface_version` is not [`XEN_SYSCTL_INTERFACE_VERSION`]: `EACCES`.
//! 3. The caller is not the control domain (dom0): `EPERM`.
//! 4. The command's own checks, listed on each [`SysctlCmd`] variant.
//!
//! On success the whole structure is copied back. A command number not
//! listed here: `ENOSYS`.

use bitflags::bitflags;

/// `XEN_SYSCTL_INTERFACE_VERSION` of Xen 4.17.
pub const XEN_SYSCTL_INTERFACE_VERSION: u32 = 0x0000_0015;

/// Size of the per-command union in [`Sysctl::u`].
pub const SYSCTL_PAYLOAD_SIZE: usize = 128;

/// `struct xen_sysctl` (136 bytes): the argument of `sysctl`.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sysctl {
    /// IN: a [`SysctlCmd`] number.
    pub cmd: u32,
    /// IN: must be [`XEN_SYSCTL_INTERFACE_VERSION`] (`EACCES`).
    pub interface_version: u32,
    /// IN/OUT: the command's structure, zero-padded to 128 bytes.
    pub u: [u8; SYSCTL_PAYLOAD_SIZE],
}

impl Sysctl {
    /// A request for `cmd` carrying `payload` (zero-padded), with the right
    /// interface version.
    #[must_use]
    pub fn new<P: crate::wire::Wire>(cmd: SysctlCmd, payload: &P) -> Sysctl {
        let mut u = [0u8; SYSCTL_PAYLOAD_SIZE];
        // Every payload type is at most 128 bytes (checked below).
        let _ = payload.to_wire(&mut u);
        Sysctl {
            cmd: cmd as u32,
            interface_version: XEN_SYSCTL_INTERFACE_VERSION,
            u,
        }
    }

    /// The union read as `P`.
    #[must_use]
    pub fn payload<P: crate::wire::Wire>(&self) -> Option<P> {
        P::from_wire(&self.u)
    }
}

numbered_enum! {
    /// `XEN_SYSCTL_*`: [`Sysctl::cmd`]. Every command needs the control
    /// domain (`EPERM`).
    SysctlCmd {
        /// `u`: [`ReadConsole`] (IN/OUT). Copies text from the
        /// hypervisor's console log ring (not NUL-terminated) into
        /// `buffer`: from the unread position, or from `index` if
        /// `incremental` and `index` is still in the ring. OUT: `count` =
        /// bytes copied, `index` = position after the last one. `clear`
        /// marks everything up to there as read for later non-incremental
        /// reads. `EFAULT`: `buffer` unwritable.
        ReadConsole = 1, "readconsole";
        /// `u`: [`PhysInfo`] (OUT). The machine: CPUs, memory, capabilities.
        PhysInfo = 3, "physinfo";
        /// `u`: [`SchedId`] (OUT). The default scheduler's
        /// `XEN_SCHEDULER_*` number (see [`crate::domctl`]).
        SchedId = 4, "sched_id";
        /// `u`: [`GetDomainInfoList`] (IN/OUT). Fills `buffer` with up to
        /// `max_domains` [`crate::domctl::GetDomainInfo`] records of the
        /// domains with ids `>= first_domain`, in id order; OUT:
        /// `num_domains`. `EFAULT`: `buffer` unwritable.
        GetDomainInfoList = 6, "getdomaininfolist";
        /// `u`: [`GetCpuInfo`] (IN/OUT). Writes one [`CpuInfo`] (the
        /// CPU's idle time in ns of system time) for each of the first
        /// `max_cpus` CPUs the hypervisor knows (`nr_cpu_ids`; an offline
        /// one has 0) into the array at `info`; OUT: `nr_cpus` = records
        /// written. `EFAULT`: a record cannot be written (those before it
        /// are, `nr_cpus` is not).
        GetCpuInfo = 8, "getcpuinfo";
    }
}

/// `struct xen_sysctl_readconsole` (24 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadConsole {
    /// IN: non-zero: mark what was read as consumed.
    pub clear: u8,
    /// IN: non-zero: start at `index`.
    pub incremental: u8,
    /// Padding.
    pub pad: [u8; 2],
    /// IN (with `incremental`): start position. OUT: position after the
    /// last byte copied.
    pub index: u32,
    /// IN: address of the caller's buffer.
    pub buffer: u64,
    /// IN: buffer size. OUT: bytes copied.
    pub count: u32,
    /// Padding.
    pub pad2: u32,
}

bitflags! {
    /// `XEN_SYSCTL_PHYSCAP_*`: [`PhysInfo::capabilities`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct PhysCap: u32 {
        /// HVM guests can be created.
        const HVM = 1 << 0;
        /// PV guests can be created.
        const PV = 1 << 1;
        /// Device passthrough (IOMMU on).
        const DIRECTIO = 1 << 2;
        /// Hardware-assisted paging.
        const HAP = 1 << 3;
        /// Shadow paging.
        const SHADOW = 1 << 4;
        /// The IOMMU shares HAP page tables.
        const IOMMU_HAP_PT_SHARE = 1 << 5;
        /// Processor tracing for guests.
        const VMTRACE = 1 << 6;
        /// Virtual PMU.
        const VPMU = 1 << 7;
        /// Grant tables version 1.
        const GNTTAB_V1 = 1 << 8;
        /// Grant tables version 2.
        const GNTTAB_V2 = 1 << 9;
    }
}

/// `struct xen_sysctl_physinfo` (112 bytes): all OUT.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhysInfo {
    /// Hardware threads per core.
    pub threads_per_core: u32,
    /// Cores per socket.
    pub cores_per_socket: u32,
    /// CPUs online.
    pub nr_cpus: u32,
    /// Highest possible CPU id.
    pub max_cpu_id: u32,
    /// NUMA nodes online.
    pub nr_nodes: u32,
    /// Highest possible node id.
    pub max_node_id: u32,
    /// CPU frequency in kHz.
    pub cpu_khz: u32,
    /// [`PhysCap`].
    pub capabilities: u32,
    /// Architecture-specific capabilities (0 on x86 in 4.17).
    pub arch_capabilities: u32,
    /// Padding.
    pub pad: u32,
    /// Pages of RAM the hypervisor manages.
    pub total_pages: u64,
    /// Pages free.
    pub free_pages: u64,
    /// Pages waiting to be scrubbed (0 in 4.17).
    pub scrub_pages: u64,
    /// Pages claimed but not allocated.
    pub outstanding_pages: u64,
    /// Highest possible MFN.
    pub max_mfn: u64,
    /// The boot CPU's x86 feature words.
    pub hw_cap: [u32; 8],
}

/// `struct xen_sysctl_sched_id` (4 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedId {
    /// OUT: `XEN_SCHEDULER_*`.
    pub sched_id: u32,
}

/// `struct xen_sysctl_getdomaininfolist` (24 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GetDomainInfoList {
    /// IN: lowest id to report.
    pub first_domain: u16,
    /// Padding.
    pub pad: u16,
    /// IN: capacity of `buffer` in records.
    pub max_domains: u32,
    /// IN: address of an array of 112-byte
    /// [`crate::domctl::GetDomainInfo`] records.
    pub buffer: u64,
    /// OUT: records written.
    pub num_domains: u32,
    /// Padding.
    pub pad2: u32,
}

/// `struct xen_sysctl_getcpuinfo` (24 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GetCpuInfo {
    /// IN: capacity of `info` in records.
    pub max_cpus: u32,
    /// Padding.
    pub pad: u32,
    /// IN: address of an array of [`CpuInfo`] records.
    pub info: u64,
    /// OUT: records written.
    pub nr_cpus: u32,
    /// Padding.
    pub pad2: u32,
}

/// `struct xen_sysctl_cpuinfo` (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuInfo {
    /// The CPU's time spent idle, in ns of system time.
    pub idletime: u64,
}

crate::assert_layout!(GetCpuInfo, 24, { max_cpus: 0, pad: 4, info: 8, nr_cpus: 16, pad2: 20 });
crate::assert_layout!(CpuInfo, 8, { idletime: 0 });
crate::assert_layout!(Sysctl, 136, { cmd: 0, interface_version: 4, u: 8 });
crate::assert_layout!(ReadConsole, 24, {
    clear: 0, incremental: 1, pad: 2, index: 4, buffer: 8, count: 16, pad2: 20,
});
crate::assert_layout!(PhysInfo, 112, {
    threads_per_core: 0, cores_per_socket: 4, nr_cpus: 8, max_cpu_id: 12, nr_nodes: 16,
    max_node_id: 20, cpu_khz: 24, capabilities: 28, arch_capabilities: 32, pad: 36,
    total_pages: 40, free_pages: 48, scrub_pages: 56, outstanding_pages: 64, max_mfn: 72,
    hw_cap: 80,
});
crate::assert_layout!(SchedId, 4, { sched_id: 0 });
crate::assert_layout!(GetDomainInfoList, 24, {
    first_domain: 0, pad: 2, max_domains: 4, buffer: 8, num_domains: 16, pad2: 20,
});

const _: () = assert!(size_of::<PhysInfo>() <= SYSCTL_PAYLOAD_SIZE);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Wire;

    #[test]
    fn union_starts_at_eight() {
        let s = Sysctl::new(
            SysctlCmd::GetDomainInfoList,
            &GetDomainInfoList {
                first_domain: 1,
                max_domains: 4,
                ..Default::default()
            },
        );
        let mut bytes = [0u8; Sysctl::SIZE];
        s.to_wire(&mut bytes).unwrap();
        assert_eq!(bytes[0], 6);
        assert_eq!(bytes[4], 0x15);
        assert_eq!(bytes[8], 1);
        assert_eq!(bytes[12], 4);
        let back = Sysctl::from_wire(&bytes)
            .unwrap()
            .payload::<GetDomainInfoList>()
            .unwrap();
        assert_eq!(back.max_domains, 4);
    }
}
