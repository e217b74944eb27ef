//! `shared_info` and `vcpu_info`: the page the hypervisor and a guest share.
//!
//! Each domain has one shared_info page. The guest maps it by the machine
//! address in [`StartInfo::shared_info`](crate::start_info::StartInfo),
//! typically with `update_va_mapping(va, maddr | P | RW, UVMF_INVLPG)`.
//!
//! Who writes what (`[HV]` = hypervisor, `[GUEST]` = guest kernel):
//! - `vcpu_info[v].evtchn_upcall_pending`: set by `[HV]` when an event for
//!   vCPU v is pending; cleared by `[GUEST]` *before* it scans for events.
//! - `vcpu_info[v].evtchn_upcall_mask`: `[GUEST]` (its virtual interrupt
//!   flag; non-zero blocks upcalls). `[HV]` sets it when delivering an
//!   upcall or an interrupt-gate trap and restores it on `iret`, and clears
//!   it on `SCHEDOP_block`.
//! - `vcpu_info[v].evtchn_pending_sel`: bits set by `[HV]` (one per word of
//!   `evtchn_pending`); the guest takes them with an atomic exchange to 0.
//! - `vcpu_info[v].arch.cr2`: `[HV]` writes the faulting address before it
//!   delivers a page fault.
//! - `vcpu_info[v].time`, `wc_*`: `[HV]` only, under the version seqlock.
//! - `evtchn_pending`: bits set by `[HV]` (atomically), cleared by `[GUEST]`.
//! - `evtchn_mask`: `[GUEST]` only; `[HV]` reads it.
//! - `arch.*`: `[GUEST]` only (information for the toolstack).
//!
//! Invariants: pending/mask/selector bits are changed only with locked
//! (atomic) instructions on either side; the time fields are valid only
//! when `version` is even and unchanged across the read.

/// Number of `vcpu_info` slots in `shared_info` (vCPUs beyond it must use
/// `VCPUOP_register_vcpu_info`).
pub const XEN_LEGACY_MAX_VCPUS: usize = 32;
/// Number of ports of the 2-level event-channel ABI (64 words * 64 bits).
pub const EVTCHN_2L_NR_CHANNELS: usize = 64 * 64;

/// `vcpu_time_info.flags`: the TSC is stable (synchronised across CPUs).
pub const XEN_PVCLOCK_TSC_STABLE_BIT: u8 = 1 << 0;
/// `vcpu_time_info.flags`: the vCPU was paused by the toolstack.
pub const XEN_PVCLOCK_GUEST_STOPPED: u8 = 1 << 1;

/// `struct vcpu_time_info` (32 bytes): one vCPU's system-time parameters.
///
/// All fields `[HV]`. The hypervisor increments `version` to odd, updates
/// the rest, then increments it to even. Readers retry while `version` is
/// odd or changed during the read.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuTimeInfo {
    /// Seqlock counter (odd: update in progress).
    pub version: u32,
    /// Padding.
    pub pad0: u32,
    /// TSC value at the time of the last update.
    pub tsc_timestamp: u64,
    /// System time in ns (since the host booted) at `tsc_timestamp`.
    pub system_time: u64,
    /// TSC-to-ns multiplier, a 32.32 fixed-point fraction.
    pub tsc_to_system_mul: u32,
    /// Shift applied to the TSC delta before multiplying (left if positive).
    pub tsc_shift: i8,
    /// `XEN_PVCLOCK_*` flags.
    pub flags: u8,
    /// Padding.
    pub pad1: [u8; 2],
}

impl VcpuTimeInfo {
    /// An all-zero value.
    #[must_use]
    pub const fn zeroed() -> VcpuTimeInfo {
        VcpuTimeInfo {
            version: 0,
            pad0: 0,
            tsc_timestamp: 0,
            system_time: 0,
            tsc_to_system_mul: 0,
            tsc_shift: 0,
            flags: 0,
            pad1: [0; 2],
        }
    }

    /// Scales a TSC delta to nanoseconds with `tsc_shift` and
    /// `tsc_to_system_mul`: `((delta shifted) * mul) >> 32` (64x32-bit
    /// multiply keeping bits 95:32).
    #[must_use]
    #[allow(
        clippy::cast_possible_truncation,
        reason = "a 64x32 product >> 32 fits 64 bits"
    )]
    pub const fn scale_delta(&self, delta: u64) -> u64 {
        let shifted = if self.tsc_shift >= 0 {
            delta << self.tsc_shift.unsigned_abs()
        } else {
            delta >> self.tsc_shift.unsigned_abs()
        };
        ((shifted as u128 * self.tsc_to_system_mul as u128) >> 32) as u64
    }

    /// System time in ns at TSC value `tsc` (which must not be older than
    /// `tsc_timestamp`).
    #[must_use]
    pub const fn system_time_at(&self, tsc: u64) -> u64 {
        self.system_time
            .wrapping_add(self.scale_delta(tsc.wrapping_sub(self.tsc_timestamp)))
    }
}

/// `struct arch_vcpu_info` (x86-64, 16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArchVcpuInfo {
    /// `[HV]` The faulting address of the last page fault delivered.
    pub cr2: u64,
    /// Padding.
    pub pad: u64,
}

impl ArchVcpuInfo {
    /// An all-zero value.
    #[must_use]
    pub const fn zeroed() -> ArchVcpuInfo {
        ArchVcpuInfo { cr2: 0, pad: 0 }
    }
}

/// `struct vcpu_info` (64 bytes): one vCPU's event and time state.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuInfo {
    /// `[HV]` set / `[GUEST]` cleared: an event is pending for this vCPU.
    pub evtchn_upcall_pending: u8,
    /// `[GUEST]` (and `[HV]` on delivery/iret/block): non-zero masks upcalls.
    pub evtchn_upcall_mask: u8,
    /// Padding.
    pub pad0: [u8; 6],
    /// `[HV]` set / `[GUEST]` exchanged to 0: which `evtchn_pending` words
    /// may hold pending, unmasked ports.
    pub evtchn_pending_sel: u64,
    /// Architecture part (`cr2`).
    pub arch: ArchVcpuInfo,
    /// `[HV]` System-time parameters.
    pub time: VcpuTimeInfo,
}

impl VcpuInfo {
    /// An all-zero value.
    #[must_use]
    pub const fn zeroed() -> VcpuInfo {
        VcpuInfo {
            evtchn_upcall_pending: 0,
            evtchn_upcall_mask: 0,
            pad0: [0; 6],
            evtchn_pending_sel: 0,
            arch: ArchVcpuInfo::zeroed(),
            time: VcpuTimeInfo::zeroed(),
        }
    }
}

/// `struct arch_shared_info` (x86-64, 48 bytes). All fields `[GUEST]`,
/// read by the toolstack (save/restore, dumps); the hypervisor reads only
/// `max_pfn` (`XENMEM_maximum_gpfn`) and `nmi_reason`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArchSharedInfo {
    /// Number of valid p2m entries.
    pub max_pfn: u64,
    /// MFN of the p2m "list of lists" (3-level tree); 0 none, !0 invalid.
    pub pfn_to_mfn_frame_list_list: u64,
    /// `XEN_NMIREASON_*` bits: `[HV]` on Xen when it passes a hardware NMI
    /// to the hardware domain (never here), cleared by the guest. Non-zero
    /// when vCPU 0 registers its NMI callback: an NMI becomes pending (see
    /// [`crate::nmi`]).
    pub nmi_reason: u64,
    /// CR3 of the address space where `p2m_vaddr` is valid (0: unused).
    pub p2m_cr3: u64,
    /// Virtual address of the linear p2m list.
    pub p2m_vaddr: u64,
    /// Incremented around every change of the p2m mapping (odd: changing).
    pub p2m_generation: u64,
}

impl ArchSharedInfo {
    /// An all-zero value.
    #[must_use]
    pub const fn zeroed() -> ArchSharedInfo {
        ArchSharedInfo {
            max_pfn: 0,
            pfn_to_mfn_frame_list_list: 0,
            nmi_reason: 0,
            p2m_cr3: 0,
            p2m_vaddr: 0,
            p2m_generation: 0,
        }
    }
}

/// `struct shared_info` (x86-64, 3136 bytes, in its own page).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedInfo {
    /// Per-vCPU state for vCPUs 0-31.
    pub vcpu_info: [VcpuInfo; XEN_LEGACY_MAX_VCPUS],
    /// 2-level event channels: pending bit per port (`[HV]` set, `[GUEST]`
    /// clear).
    pub evtchn_pending: [u64; 64],
    /// 2-level event channels: mask bit per port (`[GUEST]`).
    pub evtchn_mask: [u64; 64],
    /// `[HV]` Seqlock counter of the wall clock (odd: update in progress).
    pub wc_version: u32,
    /// `[HV]` Wall-clock seconds since the Unix epoch at system time 0
    /// (low 32 bits).
    pub wc_sec: u32,
    /// `[HV]` Nanoseconds part of the wall clock.
    pub wc_nsec: u32,
    /// `[HV]` Wall-clock seconds, high 32 bits.
    pub wc_sec_hi: u32,
    /// Architecture part.
    pub arch: ArchSharedInfo,
}

impl SharedInfo {
    /// An all-zero value.
    #[must_use]
    pub const fn zeroed() -> SharedInfo {
        SharedInfo {
            vcpu_info: [VcpuInfo::zeroed(); XEN_LEGACY_MAX_VCPUS],
            evtchn_pending: [0; 64],
            evtchn_mask: [0; 64],
            wc_version: 0,
            wc_sec: 0,
            wc_nsec: 0,
            wc_sec_hi: 0,
            arch: ArchSharedInfo::zeroed(),
        }
    }
}

impl Default for SharedInfo {
    fn default() -> SharedInfo {
        SharedInfo::zeroed()
    }
}

crate::assert_layout!(VcpuTimeInfo, 32, {
    version: 0, pad0: 4, tsc_timestamp: 8, system_time: 16, tsc_to_system_mul: 24,
    tsc_shift: 28, flags: 29, pad1: 30,
});
crate::assert_layout!(ArchVcpuInfo, 16, { cr2: 0, pad: 8 });
crate::assert_layout!(VcpuInfo, 64, {
    evtchn_upcall_pending: 0, evtchn_upcall_mask: 1, pad0: 2, evtchn_pending_sel: 8,
    arch: 16, time: 32,
});
crate::assert_layout!(ArchSharedInfo, 48, {
    max_pfn: 0, pfn_to_mfn_frame_list_list: 8, nmi_reason: 16, p2m_cr3: 24, p2m_vaddr: 32,
    p2m_generation: 40,
});
crate::assert_layout!(SharedInfo, 3136, {
    vcpu_info: 0, evtchn_pending: 2048, evtchn_mask: 2560, wc_version: 3072, wc_sec: 3076,
    wc_nsec: 3080, wc_sec_hi: 3084, arch: 3088,
});
const _: () = assert!(core::mem::size_of::<SharedInfo>() <= 4096);
const _: () = assert!(
    core::mem::offset_of!(SharedInfo, arch) + core::mem::offset_of!(ArchSharedInfo, p2m_generation)
        == 3128
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_scaling() {
        // mul = 2^31 is a factor of 0.5; shift -1 halves again.
        let t = VcpuTimeInfo {
            tsc_timestamp: 1000,
            system_time: 5_000,
            tsc_to_system_mul: 1 << 31,
            tsc_shift: -1,
            ..VcpuTimeInfo::zeroed()
        };
        assert_eq!(t.system_time_at(1000 + 400), 5_100);
        let t2 = VcpuTimeInfo {
            tsc_shift: 1,
            tsc_to_system_mul: u32::MAX,
            ..t
        };
        // 1000 << 1 = 2000, times (2^32 - 1) / 2^32, truncated.
        assert_eq!(t2.scale_delta(1000), 1999);
        assert_eq!(SharedInfo::zeroed().vcpu_info.len(), 32);
    }
}
