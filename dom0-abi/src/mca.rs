//! `mca(op)`: the machine-check architecture interface (Xen's
//! `public/arch-x86/xen-mca.h`), hypercall 48 (`__HYPERVISOR_mca`, x86's
//! `arch_0`), for the control domain.
//!
//! The one argument is the guest address of a [`XenMc`]: a `cmd`, the
//! `interface_version` the caller was built against, and a 144-byte union
//! holding the command's structure. Checks, in Xen 4.17's order, stopping
//! at the first error:
//!
//! 1. `EPERM`: the caller is not the control domain (dom0 here; Xen's XSM
//!    default, `XSM_PRIV`), before anything is read;
//! 2. `EFAULT`: the 152 bytes of [`XenMc`] cannot be read whole;
//! 3. `EACCES`: `interface_version` is not [`XEN_MCA_INTERFACE_VERSION`];
//! 4. `EINVAL`: `cmd` is not a [`McaCmd`] (or is
//!    [`McaCmd::Notifydomain`]);
//! 5. the command's own errors, listed with each command.
//!
//! Linux's dom0 asks for [`McaCmd::Physcpuinfo`] at boot (twice: the
//! number of CPUs, then their descriptions), binds [`VIRQ_MCA`], and calls
//! [`McaCmd::Fetch`] when that VIRQ fires.

numbered_enum! {
    /// `XEN_MC_*`: the `cmd` of a [`XenMc`].
    McaCmd {
        /// [`XenMcFetch`] (IN `flags`, `fetch_id`, `data`; OUT `flags`,
        /// `fetch_id`): takes the oldest machine-check telemetry of the
        /// class `flags` names ([`XEN_MC_URGENT`] or
        /// [`XEN_MC_NONURGENT`], exactly one). With [`XEN_MC_ACK`] it
        /// acknowledges telemetry fetched as `fetch_id` and writes nothing
        /// back. Otherwise the whole [`XenMc`] is written back with
        /// `flags` [`XEN_MC_NODATA`] and `fetch_id` 0 when there is none
        /// (this hypervisor never records any). `EINVAL`: neither or both
        /// classes; `data` null (without [`XEN_MC_ACK`]); `EFAULT`: the
        /// answer cannot be written.
        Fetch = 1, "fetch";
        /// Asks the hypervisor to notify a domain of an error. Xen 4.17
        /// does not support it: always `EINVAL`.
        Notifydomain = 2, "notifydomain";
        /// [`XenMcPhyscpuinfo`] (IN/OUT `ncpus`, IN `info`): with `info`
        /// null, `ncpus` becomes the number of online physical CPUs;
        /// otherwise the first `min(ncpus, online)` CPUs are described in
        /// the [`McinfoLogicalCpu`] array at `info` and `ncpus` becomes
        /// that count. The whole [`XenMc`] is written back. `EINVAL`:
        /// `info` given with `ncpus` 0; `ENOMEM`: `ncpus` of 2^31 or more
        /// (Xen's signed count); `EFAULT`: the array or the answer cannot
        /// be written (`ncpus` is still written back when only the array
        /// faulted).
        Physcpuinfo = 3, "physcpuinfo";
        /// Interposes machine-check MSR values on a CPU (testing). Not
        /// implemented here (`ENOSYS`).
        Msrinject = 4, "msrinject";
        /// Raises a machine check on a CPU (testing). Not implemented here
        /// (`ENOSYS`).
        Mceinject = 5, "mceinject";
        /// Raises machine checks on a set of CPUs (testing, tools only).
        /// Not implemented here (`ENOSYS`).
        InjectV2 = 6, "inject_v2";
    }
}

/// `XEN_MCA_INTERFACE_VERSION`: the only `interface_version` accepted.
pub const XEN_MCA_INTERFACE_VERSION: u32 = 0x01ec_c003;

/// `XEN_MC_NONURGENT`: fetch the non-urgent telemetry class.
pub const XEN_MC_NONURGENT: u32 = 0x1;
/// `XEN_MC_URGENT`: fetch the urgent telemetry class.
pub const XEN_MC_URGENT: u32 = 0x2;
/// `XEN_MC_ACK`: acknowledge telemetry fetched earlier.
pub const XEN_MC_ACK: u32 = 0x4;
/// `XEN_MC_OK`: the fetch succeeded.
pub const XEN_MC_OK: u32 = 0x0;
/// `XEN_MC_FETCHFAILED`: the telemetry could not be copied out.
pub const XEN_MC_FETCHFAILED: u32 = 0x1;
/// `XEN_MC_NODATA`: there was no telemetry to fetch.
pub const XEN_MC_NODATA: u32 = 0x2;

/// `VIRQ_MCA` (`VIRQ_ARCH_0`): global, raised in the control domain when
/// telemetry is waiting.
pub const VIRQ_MCA: u32 = 16;

/// `MSR_IA32_MCG_CAP`, the MSR each [`McinfoLogicalCpu`] reports first.
pub const MSR_IA32_MCG_CAP: u64 = 0x179;

/// Bytes of [`XenMc::u`], the union of the commands' structures (the
/// largest is `xen_mc_msrinject`).
pub const XEN_MC_UNION_SIZE: usize = 144;

/// `struct xen_mc` (152 bytes): the argument of `mca`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XenMc {
    /// IN: a [`McaCmd`] number.
    pub cmd: u32,
    /// IN: must be [`XEN_MCA_INTERFACE_VERSION`] (`EACCES` otherwise).
    pub interface_version: u32,
    /// IN/OUT: the command's structure, in its first bytes.
    pub u: [u8; XEN_MC_UNION_SIZE],
}

impl XenMc {
    /// An operation for `cmd` at the current interface version whose
    /// union starts with `payload` (the rest zero).
    #[must_use]
    pub fn new<T: crate::wire::Wire>(cmd: McaCmd, payload: &T) -> XenMc {
        let mut u = [0u8; XEN_MC_UNION_SIZE];
        // Every command structure is smaller than the union.
        let _ = payload.to_wire(&mut u);
        XenMc {
            cmd: cmd as u32,
            interface_version: XEN_MCA_INTERFACE_VERSION,
            u,
        }
    }

    /// The command structure at the start of the union.
    #[must_use]
    pub fn payload<T: crate::wire::Wire>(&self) -> Option<T> {
        T::from_wire(&self.u)
    }

    /// Replaces the start of the union with `payload`.
    pub fn set_payload<T: crate::wire::Wire>(&mut self, payload: &T) {
        let _ = payload.to_wire(&mut self.u);
    }
}

/// `struct xen_mc_fetch` (24 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenMcFetch {
    /// IN: `XEN_MC_URGENT` or `XEN_MC_NONURGENT`, maybe with
    /// `XEN_MC_ACK`; OUT: `XEN_MC_OK`, `XEN_MC_FETCHFAILED`,
    /// `XEN_MC_NODATA`.
    pub flags: u32,
    /// Padding.
    pub pad0: u32,
    /// OUT: the id to acknowledge; IN (with `XEN_MC_ACK`): the id
    /// acknowledged.
    pub fetch_id: u64,
    /// IN: guest address of a `struct mc_info` for the telemetry.
    pub data: u64,
}

/// `struct xen_mc_physcpuinfo` (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenMcPhyscpuinfo {
    /// IN: entries at `info`; OUT: CPUs described (or online, with a null
    /// `info`).
    pub ncpus: u32,
    /// Padding.
    pub pad0: u32,
    /// IN: guest address of an array of [`McinfoLogicalCpu`], or 0.
    pub info: u64,
}

/// `struct mcinfo_msr` (16 bytes): one MSR and its value.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct McinfoMsr {
    /// The MSR's index.
    pub reg: u64,
    /// Its value.
    pub value: u64,
}

/// `struct mcinfo_logical_cpu` (304 bytes, 4 of them padding before `mc_msrvalues`): one physical CPU as the
/// hypervisor identified it at boot.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct McinfoLogicalCpu {
    /// The hypervisor's number of the CPU.
    pub mc_cpunr: u32,
    /// Its package (socket).
    pub mc_chipid: u32,
    /// Its core within the package (0 with one core per package).
    pub mc_coreid: u16,
    /// Its thread within the core.
    pub mc_threadid: u16,
    /// Its local APIC id.
    pub mc_apicid: u32,
    /// The initial APIC id of CPUID leaf 1 (EBX bits 31:24).
    pub mc_clusterid: u32,
    /// Cores per package.
    pub mc_ncores: u32,
    /// Cores of its package online.
    pub mc_ncores_active: u32,
    /// Threads per core.
    pub mc_nthreads: u32,
    /// The highest basic CPUID leaf.
    pub mc_cpuid_level: i32,
    /// Family (with the extended family added).
    pub mc_family: u32,
    /// Xen's vendor number: 1 Intel, 2 AMD, 4 Centaur, 8 Shanghai,
    /// 16 Hygon, 0 unknown.
    pub mc_vendor: u32,
    /// Model (with the extended model for family 6 and above).
    pub mc_model: u32,
    /// Stepping.
    pub mc_step: u32,
    /// The vendor string of CPUID leaf 0, NUL-padded.
    pub mc_vendorid: [u8; 16],
    /// The brand string of leaves 0x80000002-4, leading spaces removed,
    /// NUL-padded.
    pub mc_brandid: [u8; 64],
    /// Feature words: leaf 1 EDX and ECX, leaf 0x80000001 EDX and ECX,
    /// leaf 0xd.1 EAX, leaf 7.0 EBX and ECX.
    pub mc_cpu_caps: [u32; 7],
    /// Cache size in KiB (the last level the vendor's leaves describe).
    pub mc_cache_size: u32,
    /// Cache line alignment in bytes.
    pub mc_cache_alignment: u32,
    /// Entries of `mc_msrvalues` used.
    pub mc_nmsrvals: i32,
    /// MSR values: `MSR_IA32_MCG_CAP` first.
    pub mc_msrvalues: [McinfoMsr; 8],
}

impl Default for McinfoLogicalCpu {
    fn default() -> McinfoLogicalCpu {
        McinfoLogicalCpu {
            mc_cpunr: 0,
            mc_chipid: 0,
            mc_coreid: 0,
            mc_threadid: 0,
            mc_apicid: 0,
            mc_clusterid: 0,
            mc_ncores: 0,
            mc_ncores_active: 0,
            mc_nthreads: 0,
            mc_cpuid_level: 0,
            mc_family: 0,
            mc_vendor: 0,
            mc_model: 0,
            mc_step: 0,
            mc_vendorid: [0; 16],
            mc_brandid: [0; 64],
            mc_cpu_caps: [0; 7],
            mc_cache_size: 0,
            mc_cache_alignment: 0,
            mc_nmsrvals: 0,
            mc_msrvalues: [McinfoMsr::default(); 8],
        }
    }
}

crate::assert_layout!(XenMc, 152, { cmd: 0, interface_version: 4, u: 8 });
crate::assert_layout!(XenMcFetch, 24, { flags: 0, pad0: 4, fetch_id: 8, data: 16 });
crate::assert_layout!(XenMcPhyscpuinfo, 16, { ncpus: 0, pad0: 4, info: 8 });
crate::assert_layout!(McinfoMsr, 16, { reg: 0, value: 8 });
crate::assert_layout!(McinfoLogicalCpu, 304, {
    mc_cpunr: 0, mc_chipid: 4, mc_coreid: 8, mc_threadid: 10, mc_apicid: 12,
    mc_clusterid: 16, mc_ncores: 20, mc_ncores_active: 24, mc_nthreads: 28,
    mc_cpuid_level: 32, mc_family: 36, mc_vendor: 40, mc_model: 44, mc_step: 48,
    mc_vendorid: 52, mc_brandid: 68, mc_cpu_caps: 132, mc_cache_size: 160,
    mc_cache_alignment: 164, mc_nmsrvals: 168, mc_msrvalues: 176,
});

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Wire;

    #[test]
    fn numbers_are_xens() {
        assert_eq!(McaCmd::Fetch as u32, 1);
        assert_eq!(McaCmd::Physcpuinfo as u32, 3);
        assert_eq!(McaCmd::from_number(6), Some(McaCmd::InjectV2));
        assert_eq!(McaCmd::from_number(7), None);
        assert_eq!(XEN_MCA_INTERFACE_VERSION, 0x01ec_c003);
    }

    #[test]
    fn physcpuinfo_sits_at_the_start_of_the_union() {
        let info = XenMcPhyscpuinfo {
            ncpus: 3,
            pad0: 0,
            info: 0x1122_3344_5566_7788,
        };
        let op = XenMc::new(McaCmd::Physcpuinfo, &info);
        let mut bytes = [0u8; XenMc::SIZE];
        op.to_wire(&mut bytes).unwrap();
        assert_eq!(bytes[..4], 3u32.to_le_bytes());
        assert_eq!(bytes[4..8], XEN_MCA_INTERFACE_VERSION.to_le_bytes());
        assert_eq!(bytes[8..12], 3u32.to_le_bytes());
        assert_eq!(bytes[16..24], 0x1122_3344_5566_7788u64.to_le_bytes());
        let back = XenMc::from_wire(&bytes).unwrap();
        assert_eq!(back.payload::<XenMcPhyscpuinfo>(), Some(info));
    }
}
