//! `domctl(arg)` (hypercall 36): the toolstack's domain operations.
//!
//! The one argument points at a [`Domctl`] (144 bytes): a command number,
//! [`XEN_DOMCTL_INTERFACE_VERSION`], the target domain id and a 128-byte
//! union whose meaning depends on the command. Results come back in the
//! same structure (the hypervisor copies the whole structure back for
//! commands that return data) and in `RAX`.
//!
//! # Checks, in this order (every command)
//!
//! 1. The structure cannot be read: `EFAULT`.
//! 2. `interface_version` is not [`XEN_DOMCTL_INTERFACE_VERSION`]: `EACCES`.
//! 3. The command names a domain (all but `createdomain` and
//!    `getdomaininfo`) and it does not exist: `ESRCH`.
//! 4. The caller is not the control domain (dom0): `EPERM`. Xen's default
//!    policy lets only the control domain use `domctl`; `getdomaininfo` is
//!    also open to the xenstore domain, but never to a domain asking about
//!    itself.
//! 5. The command's own checks, listed on each [`DomctlCmd`] variant.
//!
//! A command number not listed here: `ENOSYS` (on Xen some of them exist;
//! `docs/abi-differences.md` lists what this hypervisor answers).
//!
//! Several commands refuse to act on the caller itself because they have
//! to pause the target: `destroydomain`, `pausedomain`, `max_vcpus`,
//! `setvcpucontext` and (for the calling vCPU) `getvcpucontext` give
//! `EINVAL` then.

use bitflags::bitflags;

/// `XEN_DOMCTL_INTERFACE_VERSION` of Xen 4.17.
pub const XEN_DOMCTL_INTERFACE_VERSION: u32 = 0x0000_0015;
/// `XEN_SYSCTL_INTERFACE_VERSION` of Xen 4.17 (see [`crate::sysctl`]).
pub const XEN_SYSCTL_INTERFACE_VERSION: u32 = crate::sysctl::XEN_SYSCTL_INTERFACE_VERSION;
/// `XEN_DOMCTL_hypercall_init`: fill a domain's hypercall page (the
/// toolstack issues it for the `HYPERCALL_PAGE` note).
pub const XEN_DOMCTL_HYPERCALL_INIT: u32 = DomctlCmd::HypercallInit as u32;

/// Size of the per-command union in [`Domctl::u`].
pub const DOMCTL_PAYLOAD_SIZE: usize = 128;

/// `struct xen_domctl` (144 bytes): the argument of `domctl`.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Domctl {
    /// IN: a [`DomctlCmd`] number.
    pub cmd: u32,
    /// IN: must be [`XEN_DOMCTL_INTERFACE_VERSION`] (`EACCES`).
    pub interface_version: u32,
    /// IN: the target domain. OUT for `createdomain` (the id chosen) and
    /// `getdomaininfo` (the id reported).
    pub domain: u16,
    /// Padding.
    pub pad: [u16; 3],
    /// IN/OUT: the command's structure, zero-padded to 128 bytes.
    pub u: [u8; DOMCTL_PAYLOAD_SIZE],
}

impl Domctl {
    /// A request for `cmd` on `domain` carrying `payload` (zero-padded),
    /// with the right interface version.
    #[must_use]
    pub fn new<P: crate::wire::Wire>(cmd: DomctlCmd, domain: u16, payload: &P) -> Domctl {
        let mut u = [0u8; DOMCTL_PAYLOAD_SIZE];
        // Every payload type is at most 128 bytes (checked next to each
        // layout assertion below), so this cannot fail.
        let _ = payload.to_wire(&mut u);
        Domctl {
            cmd: cmd as u32,
            interface_version: XEN_DOMCTL_INTERFACE_VERSION,
            domain,
            pad: [0; 3],
            u,
        }
    }

    /// The union read as `P`.
    #[must_use]
    pub fn payload<P: crate::wire::Wire>(&self) -> Option<P> {
        P::from_wire(&self.u)
    }
}

/// A payload for commands that carry none (`destroydomain`,
/// `pausedomain`, `unpausedomain`, `getdomaininfo` in).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NoPayload;

impl crate::wire::Wire for NoPayload {
    const SIZE: usize = 0;
    fn from_wire(_bytes: &[u8]) -> Option<Self> {
        Some(NoPayload)
    }
    fn to_wire(&self, _out: &mut [u8]) -> Option<()> {
        Some(())
    }
}

numbered_enum! {
    /// `XEN_DOMCTL_*`: [`Domctl::cmd`]. Every command needs the control
    /// domain (`EPERM`) unless its entry says otherwise.
    DomctlCmd {
        /// `u`: [`CreateDomain`] (IN). Creates a PV domain, paused by the
        /// controller (one [`DomctlCmd::UnpauseDomain`] starts it), with no
        /// vCPUs until [`DomctlCmd::MaxVcpus`], `max_pages` 0 until
        /// [`DomctlCmd::MaxMem`], a zeroed `shared_info` page, event port 0
        /// reserved and a version-1 grant table. `domain` IN in
        /// `1..0x7FF0` asks for that id (`EEXIST` if taken); 0 or a
        /// reserved id lets the hypervisor choose the next free id after
        /// the last one chosen (1, 2, 3, ..., wrapping to 1). OUT: the id.
        /// `EINVAL`: unknown or HVM-only [`CdfFlags`], `iommu_opts` without
        /// `iommu`, `max_vcpus` 0 or above 8192, unknown `misc_flags` or
        /// emulation bits, `grant_opts` above 0xF or a grant version of 0
        /// or above 2, `max_grant_frames` (when `>= 0`) of 0 or above 64,
        /// `max_maptrack_frames` above 1024, `vmtrace_size` not 0.
        /// `EOPNOTSUPP`: `emulation_flags` other than 0 or PIT only.
        /// `ENOMEM`: no free id or memory. Not for an existing domain, so no
        /// `ESRCH`.
        CreateDomain = 1, "createdomain";
        /// No payload. Destroys the domain: marks it dying, closes its event
        /// channels (each interdomain peer becomes unbound with the dying
        /// domain as remote), drops its mappings, page-table types and
        /// memory, then raises `VIRQ_DOM_EXC`. A long destroy continues
        /// itself; the caller sees one call. Afterwards `getdomaininfo`
        /// reports it with [`DomInfoFlags::DYING`] until its last page
        /// mapped elsewhere is released, and another `VIRQ_DOM_EXC` is
        /// raised when it is finally gone. Destroying a dead domain again
        /// returns 0. `EINVAL`: the caller itself.
        DestroyDomain = 2, "destroydomain";
        /// No payload. Adds one controller pause (synchronous: the vCPUs are
        /// off their CPUs on return). `EINVAL`: the caller itself.
        /// `EOVERFLOW`: more than 255 nested pauses.
        PauseDomain = 3, "pausedomain";
        /// No payload. Drops one controller pause; the first time the count
        /// reaches 0 the domain's creation is complete and it runs.
        /// `EINVAL`: the count is already 0.
        UnpauseDomain = 4, "unpausedomain";
        /// OUT: [`GetDomainInfo`]; IN: only `domain`. Reports the domain
        /// with id `domain`, or, if none exists and `domain < 0x7FF0`, the
        /// first existing domain with a higher id (`domain` OUT names it):
        /// how a toolstack enumerates domains. May also be called by the
        /// xenstore domain, but not on the caller itself (`EPERM`).
        /// `ESRCH`: no domain at or above `domain`. `EINVAL`: `domain >=
        /// 0x7FF0` and no such domain.
        GetDomainInfo = 5, "getdomaininfo";
        /// `u`: [`MaxMem`] (IN). Sets `max_pages = max_memkb / 4`. No lower
        /// bound: a domain above its new limit keeps its pages and further
        /// allocations fail.
        MaxMem = 11, "max_mem";
        /// `u`: [`VcpuContext`] (IN). Loads vCPU `vcpu`'s register state
        /// from the [`crate::cpu::VcpuGuestContext`] at `ctxt` (a NULL
        /// `ctxt` resets the vCPU). On the first load, `ctrlreg[3]` (`mfn <<
        /// 12`) must be an L4 frame the domain owns; it gets a page and an
        /// L4 type reference (validating the whole tree if it is not yet
        /// validated); `ctrlreg[1]` (user L4) likewise if non-zero; the GDT
        /// frames get the descriptor type. IOPL bits of `rflags` become the
        /// virtual IOPL, IF is forced on, selectors with RPL 0-2 are
        /// raised to 3 (Xen) or kept at the ring-1 selectors (here).
        /// [`crate::cpu::VgcfFlags::ONLINE`] brings the vCPU up (the
        /// controller pause still holds it). `EINVAL`: the caller itself,
        /// `vcpu >= max_vcpus` or not created yet, a non-canonical address
        /// (rip, rsp, kernel_sp, callbacks, trap handlers, segment bases,
        /// ldt_base), ldt_base not page-aligned or `ldt_ents > 8192`,
        /// `gdt_ents > 7168`, vm_assist bits outside the PV set, first load
        /// in user mode without a user L4, a CR3 frame not the domain's, or
        /// a page table or GDT frame that fails validation. `EFAULT`:
        /// `ctxt` unreadable. `EOPNOTSUPP`: a reload of an initialised vCPU
        /// that changes CR3, CR1, GDT or LDT.
        SetVcpuContext = 12, "setvcpucontext";
        /// `u`: [`VcpuContext`] (IN). Writes vCPU `vcpu`'s state to `ctxt`:
        /// the stored flags plus `i387_valid` (FPU used), `online` (not
        /// down) and `in_kernel` (in kernel mode); `ctrlreg[3]` = kernel L4
        /// `mfn << 12`, `ctrlreg[1]` = user L4 or 0; the virtual IOPL merged
        /// into `rflags`. `EINVAL`: `vcpu` out of range, not created, or the
        /// calling vCPU. `ENODATA`: never initialised. `EFAULT`: `ctxt`
        /// unwritable.
        GetVcpuContext = 13, "getvcpucontext";
        /// `u`: [`GetVcpuInfo`] (IN `vcpu`, OUT the rest). `EINVAL`: `vcpu`
        /// at or above `max_vcpus`. `ESRCH`: that vCPU was not created.
        GetVcpuInfo = 14, "getvcpuinfo";
        /// `u`: [`MaxVcpus`] (IN). Creates vCPUs `0..max`, each down and
        /// uninitialised, with `vcpu_info` in `shared_info` (ids below 32).
        /// `EINVAL`: the caller itself, or `max` not equal to createdomain's
        /// `max_vcpus`. `ENOMEM`: a vCPU could not be allocated.
        MaxVcpus = 15, "max_vcpus";
        /// `u`: [`SchedulerOp`] (IN/OUT). Reads or sets the domain's
        /// scheduling parameters. `EINVAL`: `sched_id` is not the running
        /// scheduler's ([`crate::sysctl::SysctlCmd::SchedId`]), an unknown
        /// `cmd`, a per-vCPU `cmd` on a scheduler without per-vCPU
        /// parameters, or (credit2) a cap above 100 per vCPU. On put a
        /// weight of 0 leaves the weight unchanged, and so does (credit) a
        /// cap of 0xFFFF. `EFAULT`: the per-vCPU array.
        SchedulerOp = 16, "scheduler_op";
        /// `u`: [`SetDomainHandle`] (IN). Stores the domain's 16-byte UUID.
        /// No other error.
        SetDomainHandle = 17, "setdomainhandle";
        /// `u`: [`IrqPermission`] (IN). Grants or revokes the domain's
        /// access to the machine IRQ behind the *caller's* `pirq`.
        /// `EINVAL`: `pirq` at or above the caller's pirq count. `EPERM`:
        /// the pirq is not mapped in the caller or the caller has no access
        /// to its IRQ.
        IrqPermission = 19, "irq_permission";
        /// `u`: [`IomemPermission`] (IN). Grants or revokes the domain's
        /// right to map machine frames `first_mfn..first_mfn + nr_mfns`
        /// as device memory (`mmu_update` with `DOMID_IO`); a domain with
        /// some device memory or ports may also use cache attributes in
        /// its page tables. `EINVAL`: the range wraps (`nr_mfns` 0
        /// included). `EPERM`: the caller may not map some frame of the
        /// range itself (revoking too). `ENOMEM`: the domain's rights
        /// would need more runs than the hypervisor keeps (256 here).
        IomemPermission = 20, "iomem_permission";
        /// `u`: [`IoportPermission`] (IN). Grants or revokes the domain's
        /// access to I/O ports `first_port..first_port + nr_ports`.
        /// `EINVAL`: `nr_ports` 0, or the range wraps or passes 0x10000.
        /// `EPERM`: the caller lacks access to some of the ports.
        IoportPermission = 21, "ioport_permission";
        /// `u`: [`HypercallInit`] (IN). Takes a writable type reference on
        /// frame `gmfn` (an MFN for PV) and fills it with the hypercall
        /// stubs. `EINVAL`: the frame is not the domain's. `EPERM`: the
        /// frame cannot be typed writable (it is a page table or
        /// descriptor page).
        HypercallInit = 22, "hypercall_init";
        /// `u`: [`AddressSize`] (IN). 64 for a 64-bit PV domain: nothing to
        /// do, 0. 32 (compat PV): `EOPNOTSUPP` here (and on Xen built
        /// without 32-bit PV), `EACCES` on Xen if the domain already owns
        /// memory. Any other size: `EINVAL`.
        SetAddressSize = 35, "set_address_size";
        /// `u`: [`AddressSize`] (OUT). 64 for a 64-bit PV domain.
        GetAddressSize = 36, "get_address_size";
        /// `u`: [`GetPageFrameInfo3`] (IN/OUT). Replaces each MFN of the
        /// array with its type word: [`PFINFO_L1TAB`] .. [`PFINFO_L4TAB`]
        /// for a frame in use as a page table, ORed with
        /// [`PFINFO_LPINTAB`] if pinned; [`PFINFO_NOTAB`] for any other
        /// frame of the domain; [`PFINFO_XTAB`] for a frame it does not
        /// own (or a page the hypervisor shares with it). `E2BIG`:
        /// `num > 1024`. `EFAULT`: an entry cannot be read or written (the
        /// loop stops there, the entries before it done).
        GetPageFrameInfo3 = 61, "getpageframeinfo3";
    }
}

bitflags! {
    /// `XEN_DOMCTL_CDF_*`: [`CreateDomain::flags`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct CdfFlags: u32 {
        /// An HVM guest (refused here: PV only).
        const HVM = 1 << 0;
        /// Hardware-assisted paging (HVM only).
        const HAP = 1 << 1;
        /// Memory integrity checked by tboot across S3.
        const S3_INTEGRITY = 1 << 2;
        /// No out-of-sync shadows (Xen forces it on for PV).
        const OOS_OFF = 1 << 3;
        /// The domain is the xenstore domain.
        const XS_DOMAIN = 1 << 4;
        /// The domain may use the IOMMU (passthrough).
        const IOMMU = 1 << 5;
        /// Nested virtualisation (HVM).
        const NESTED_VIRT = 1 << 6;
        /// Expose the virtual PMU.
        const VPMU = 1 << 7;
    }
}

bitflags! {
    /// `XEN_X86_EMU_*`: [`ArchDomainConfig::emulation_flags`]. A PV domain
    /// passes none (PIT only is also accepted); anything else gives
    /// `EOPNOTSUPP`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct EmulationFlags: u32 {
        /// Local APIC.
        const LAPIC = 1 << 0;
        /// HPET.
        const HPET = 1 << 1;
        /// ACPI PM timer and registers.
        const PM = 1 << 2;
        /// RTC.
        const RTC = 1 << 3;
        /// IO-APIC.
        const IOAPIC = 1 << 4;
        /// 8259 PIC.
        const PIC = 1 << 5;
        /// VGA.
        const VGA = 1 << 6;
        /// Virtual IOMMU.
        const IOMMU = 1 << 7;
        /// 8254 PIT.
        const PIT = 1 << 8;
        /// Physical IRQs through event channels (HVM).
        const USE_PIRQ = 1 << 9;
        /// Virtual PCI.
        const VPCI = 1 << 10;
    }
}

bitflags! {
    /// `XEN_X86_MSR_*`: [`ArchDomainConfig::misc_flags`]. Unknown bits:
    /// `EINVAL`.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct MiscFlags: u32 {
        /// Reads of unknown MSRs return 0 instead of faulting.
        const MSR_RELAXED = 1 << 0;
    }
}

/// `XEN_DOMCTL_GRANT_version_mask`: the low bits of
/// [`CreateDomain::grant_opts`] give the highest grant-table version the
/// domain may use.
pub const GRANT_VERSION_MASK: u32 = 0xF;

/// `XEN_DOMCTL_IOMMU_no_sharept`: [`CreateDomain::iommu_opts`] bit 0 (only
/// with [`CdfFlags::IOMMU`]).
pub const IOMMU_NO_SHAREPT: u32 = 1 << 0;

/// `struct xen_arch_domainconfig` for x86 (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ArchDomainConfig {
    /// IN: [`EmulationFlags`].
    pub emulation_flags: u32,
    /// IN: [`MiscFlags`]. In `getdomaininfo`'s copy it is reported as 0.
    pub misc_flags: u32,
}

/// `struct xen_domctl_createdomain` (64 bytes). All fields IN.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CreateDomain {
    /// Security label (ignored by the default policy).
    pub ssidref: u32,
    /// The domain's UUID.
    pub handle: [u8; 16],
    /// [`CdfFlags`]; 0 for a PV domain.
    pub flags: u32,
    /// `IOMMU_*` options; must be 0 without [`CdfFlags::IOMMU`].
    pub iommu_opts: u32,
    /// Number of vCPUs (1..=8192); [`DomctlCmd::MaxVcpus`] must repeat it.
    pub max_vcpus: u32,
    /// Highest event-channel port the domain may allocate (a toolstack
    /// passes 1023).
    pub max_evtchn_port: u32,
    /// Grant-table frames; negative: the hypervisor's default.
    pub max_grant_frames: i32,
    /// Maptrack frames; negative: the hypervisor's default.
    pub max_maptrack_frames: i32,
    /// Low 4 bits: highest grant-table version allowed (1 or 2).
    pub grant_opts: u32,
    /// Per-vCPU trace buffer bytes; must be 0 for PV.
    pub vmtrace_size: u32,
    /// CPU pool; 0 is the default pool.
    pub cpupool_id: u32,
    /// x86 configuration.
    pub arch: ArchDomainConfig,
}

bitflags! {
    /// `XEN_DOMINF_*`: the flag bits of [`GetDomainInfo::flags`] (bits
    /// 16-31 hold the shutdown code: [`GetDomainInfo::shutdown_code`]).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct DomInfoFlags: u32 {
        /// Destroyed: set once `destroydomain` has finished (the domain
        /// lingers until its last foreign mapping goes).
        const DYING = 1 << 0;
        /// An HVM guest.
        const HVM_GUEST = 1 << 1;
        /// Fully shut down: every vCPU stopped after a shutdown or crash.
        const SHUTDOWN = 1 << 2;
        /// Paused by the controller (pause count above 0).
        const PAUSED = 1 << 3;
        /// Every online vCPU is blocked (clear when none is online).
        const BLOCKED = 1 << 4;
        /// Some vCPU is running now (clear when none is online).
        const RUNNING = 1 << 5;
        /// Being debugged.
        const DEBUGGED = 1 << 6;
        /// The xenstore domain.
        const XS_DOMAIN = 1 << 7;
        /// Hardware-assisted paging.
        const HAP = 1 << 8;
    }
}

/// Shift of the shutdown code in [`GetDomainInfo::flags`]
/// (`XEN_DOMINF_shutdownshift`).
pub const DOMINF_SHUTDOWN_SHIFT: u32 = 16;
/// Mask of the shutdown code after shifting (`XEN_DOMINF_shutdownmask`).
pub const DOMINF_SHUTDOWN_MASK: u32 = 0xFF;
/// [`GetDomainInfo::max_vcpu_id`] of a domain without vCPUs.
pub const INVALID_MAX_VCPU_ID: u32 = u32::MAX;

/// `struct xen_domctl_getdomaininfo` (112 bytes): all OUT. Also the
/// element of [`crate::sysctl::GetDomainInfoList`]'s buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GetDomainInfo {
    /// The domain reported (also written to [`Domctl::domain`]).
    pub domain: u16,
    /// Padding.
    pub pad1: u16,
    /// [`DomInfoFlags`] | shutdown code `<< 16`. The code is stored as
    /// 32-bit all-ones until a reason is latched, so bits 16-31 are all set
    /// for a domain that never shut down (the masked code reads 255).
    pub flags: u32,
    /// Pages the domain owns.
    pub tot_pages: u64,
    /// Its limit ([`DomctlCmd::MaxMem`] / 4).
    pub max_pages: u64,
    /// Pages claimed but not yet allocated.
    pub outstanding_pages: u64,
    /// Pages shared (memory sharing).
    pub shr_pages: u64,
    /// Pages paged out.
    pub paged_pages: u64,
    /// Frame of its `shared_info` (an MFN for PV).
    pub shared_info_frame: u64,
    /// Nanoseconds its vCPUs have been running, summed.
    pub cpu_time: u64,
    /// vCPUs currently up.
    pub nr_online_vcpus: u32,
    /// Highest vCPU id created, or [`INVALID_MAX_VCPU_ID`].
    pub max_vcpu_id: u32,
    /// Security label.
    pub ssidref: u32,
    /// UUID.
    pub handle: [u8; 16],
    /// CPU pool.
    pub cpupool: u32,
    /// Guest physical address width (x86 reports the HAP width even for
    /// PV).
    pub gpaddr_bits: u8,
    /// Padding.
    pub pad2: [u8; 7],
    /// The creation configuration (`emulation_flags` only).
    pub arch_config: ArchDomainConfig,
}

impl GetDomainInfo {
    /// The flag bits (without the shutdown code).
    #[must_use]
    pub const fn dominf(&self) -> DomInfoFlags {
        DomInfoFlags::from_bits_truncate(self.flags)
    }

    /// The latched shutdown reason ([`crate::sched::ShutdownReason`]
    /// number; 255 if none).
    #[must_use]
    pub const fn shutdown_code(&self) -> u32 {
        (self.flags >> DOMINF_SHUTDOWN_SHIFT) & DOMINF_SHUTDOWN_MASK
    }
}

/// `struct xen_domctl_max_mem` (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaxMem {
    /// IN: limit in KiB (a toolstack passes the target plus 1024).
    pub max_memkb: u64,
}

/// `struct xen_domctl_vcpucontext` (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuContext {
    /// IN: the vCPU.
    pub vcpu: u32,
    /// Padding.
    pub pad: u32,
    /// IN: address of a [`crate::cpu::VcpuGuestContext`] in the caller
    /// (read by set, written by get).
    pub ctxt: u64,
}

/// `struct xen_domctl_getvcpuinfo` (24 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GetVcpuInfo {
    /// IN: the vCPU.
    pub vcpu: u32,
    /// OUT: 1 if up.
    pub online: u8,
    /// OUT: 1 if blocked.
    pub blocked: u8,
    /// OUT: 1 if running now.
    pub running: u8,
    /// Padding.
    pub pad: u8,
    /// OUT: nanoseconds it has run.
    pub cpu_time: u64,
    /// OUT: the physical CPU it runs or last ran on.
    pub cpu: u32,
    /// Padding.
    pub pad2: u32,
}

/// `struct xen_domctl_max_vcpus` (4 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MaxVcpus {
    /// IN: number of vCPUs (equal to createdomain's `max_vcpus`).
    pub max: u32,
}

/// `XEN_SCHEDULER_CREDIT`: Xen's credit scheduler (the 4.17 default is
/// credit2).
pub const XEN_SCHEDULER_CREDIT: u32 = 5;
/// `XEN_SCHEDULER_CREDIT2`: Xen 4.17's default scheduler.
pub const XEN_SCHEDULER_CREDIT2: u32 = 6;
/// `XEN_SCHEDULER_ARINC653`.
pub const XEN_SCHEDULER_ARINC653: u32 = 7;
/// `XEN_SCHEDULER_RTDS`.
pub const XEN_SCHEDULER_RTDS: u32 = 8;
/// `XEN_SCHEDULER_NULL`.
pub const XEN_SCHEDULER_NULL: u32 = 9;

numbered_enum! {
    /// `XEN_DOMCTL_SCHEDOP_*`: [`SchedulerOp::cmd`].
    SchedulerOpCmd {
        /// Set the domain's parameters (all its vCPUs).
        PutInfo = 0, "putinfo";
        /// Read the domain's parameters.
        GetInfo = 1, "getinfo";
        /// Set per-vCPU parameters (RTDS only; `EINVAL` otherwise).
        PutVcpuInfo = 2, "putvcpuinfo";
        /// Read per-vCPU parameters (RTDS only; `EINVAL` otherwise).
        GetVcpuInfo = 3, "getvcpuinfo";
    }
}

/// `struct xen_domctl_sched_credit` / `credit2` (4 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedCredit {
    /// Relative weight (1..=65535; the default is 256); 0 on put: unchanged.
    pub weight: u16,
    /// Cap in percent of one CPU (0: none).
    pub cap: u16,
}

/// `struct xen_domctl_scheduler_op` (24 bytes): for credit and credit2 the
/// union holds [`SchedCredit`] at offset 8, the rest being padding (RTDS
/// and per-vCPU forms are not used here).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SchedulerOp {
    /// IN: the running scheduler's `XEN_SCHEDULER_*` (`EINVAL` if not).
    pub sched_id: u32,
    /// IN: a [`SchedulerOpCmd`] number.
    pub cmd: u32,
    /// IN (put) / OUT (get): weight and cap.
    pub credit: SchedCredit,
    /// Rest of the union (RTDS `flags`, per-vCPU handle and counts).
    pub union_pad: [u32; 3],
}

/// `struct xen_domctl_setdomainhandle` (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SetDomainHandle {
    /// IN: the UUID.
    pub handle: [u8; 16],
}

/// `struct xen_domctl_irq_permission` (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IrqPermission {
    /// IN: a pirq of the caller.
    pub pirq: u32,
    /// IN: non-zero grants, 0 revokes.
    pub allow_access: u8,
    /// Padding.
    pub pad: [u8; 3],
}

/// `struct xen_domctl_iomem_permission` (24 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IomemPermission {
    /// IN: first machine frame.
    pub first_mfn: u64,
    /// IN: number of frames.
    pub nr_mfns: u64,
    /// IN: non-zero grants, 0 revokes.
    pub allow_access: u8,
    /// Padding.
    pub pad: [u8; 7],
}

/// `struct xen_domctl_ioport_permission` (12 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoportPermission {
    /// IN: first port.
    pub first_port: u32,
    /// IN: number of ports (at least 1).
    pub nr_ports: u32,
    /// IN: non-zero grants, 0 revokes.
    pub allow_access: u8,
    /// Padding.
    pub pad: [u8; 3],
}

/// `struct xen_domctl_hypercall_init` (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HypercallInit {
    /// IN: the frame to fill (an MFN for PV).
    pub gmfn: u64,
}

/// `struct xen_domctl_address_size` (4 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AddressSize {
    /// IN (set) / OUT (get): 32 or 64.
    pub size: u32,
}

/// `struct xen_domctl_getpageframeinfo3` (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GetPageFrameInfo3 {
    /// IN: number of entries (at most 1024: `E2BIG`).
    pub num: u64,
    /// IN/OUT: address of `num` 8-byte entries, MFNs in, type words out.
    pub array: u64,
}

/// Type word shift of [`DomctlCmd::GetPageFrameInfo3`] results.
pub const PFINFO_LTAB_SHIFT: u32 = 28;
/// An ordinary page (or a page table neither validated nor pinned).
pub const PFINFO_NOTAB: u64 = 0;
/// A validated L1 page table.
pub const PFINFO_L1TAB: u64 = 1 << 28;
/// A validated L2 page table.
pub const PFINFO_L2TAB: u64 = 2 << 28;
/// A validated L3 page table.
pub const PFINFO_L3TAB: u64 = 3 << 28;
/// A validated L4 page table.
pub const PFINFO_L4TAB: u64 = 4 << 28;
/// Mask of the page-table level.
pub const PFINFO_LTABTYPE_MASK: u64 = 7 << 28;
/// ORed in when the page table is pinned.
pub const PFINFO_LPINTAB: u64 = 1 << 31;
/// A broken page.
pub const PFINFO_BROKEN: u64 = 0xD << 28;
/// Allocate-only (not produced for PV).
pub const PFINFO_XALLOC: u64 = 0xE << 28;
/// Not the domain's page, or a special page.
pub const PFINFO_XTAB: u64 = 0xF << 28;
/// Mask of the whole type field.
pub const PFINFO_LTAB_MASK: u64 = 0xF << 28;

crate::assert_layout!(Domctl, 144, { cmd: 0, interface_version: 4, domain: 8, pad: 10, u: 16 });
crate::assert_layout!(ArchDomainConfig, 8, { emulation_flags: 0, misc_flags: 4 });
crate::assert_layout!(CreateDomain, 64, {
    ssidref: 0, handle: 4, flags: 20, iommu_opts: 24, max_vcpus: 28, max_evtchn_port: 32,
    max_grant_frames: 36, max_maptrack_frames: 40, grant_opts: 44, vmtrace_size: 48,
    cpupool_id: 52, arch: 56,
});
crate::assert_layout!(GetDomainInfo, 112, {
    domain: 0, pad1: 2, flags: 4, tot_pages: 8, max_pages: 16, outstanding_pages: 24,
    shr_pages: 32, paged_pages: 40, shared_info_frame: 48, cpu_time: 56, nr_online_vcpus: 64,
    max_vcpu_id: 68, ssidref: 72, handle: 76, cpupool: 92, gpaddr_bits: 96, pad2: 97,
    arch_config: 104,
});
crate::assert_layout!(MaxMem, 8, { max_memkb: 0 });
crate::assert_layout!(VcpuContext, 16, { vcpu: 0, pad: 4, ctxt: 8 });
crate::assert_layout!(GetVcpuInfo, 24, {
    vcpu: 0, online: 4, blocked: 5, running: 6, pad: 7, cpu_time: 8, cpu: 16, pad2: 20,
});
crate::assert_layout!(MaxVcpus, 4, { max: 0 });
crate::assert_layout!(SchedCredit, 4, { weight: 0, cap: 2 });
crate::assert_layout!(SchedulerOp, 24, { sched_id: 0, cmd: 4, credit: 8, union_pad: 12 });
crate::assert_layout!(SetDomainHandle, 16, { handle: 0 });
crate::assert_layout!(IrqPermission, 8, { pirq: 0, allow_access: 4, pad: 5 });
crate::assert_layout!(IomemPermission, 24, { first_mfn: 0, nr_mfns: 8, allow_access: 16, pad: 17 });
crate::assert_layout!(IoportPermission, 12, { first_port: 0, nr_ports: 4, allow_access: 8, pad: 9 });
crate::assert_layout!(HypercallInit, 8, { gmfn: 0 });
crate::assert_layout!(AddressSize, 4, { size: 0 });
crate::assert_layout!(GetPageFrameInfo3, 16, { num: 0, array: 8 });

// Every payload fits the union, so `Domctl::new` never drops bytes.
const _: () = assert!(size_of::<CreateDomain>() <= DOMCTL_PAYLOAD_SIZE);
const _: () = assert!(size_of::<GetDomainInfo>() <= DOMCTL_PAYLOAD_SIZE);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Wire;

    #[test]
    fn request_carries_version_and_payload() {
        let d = Domctl::new(DomctlCmd::MaxMem, 7, &MaxMem { max_memkb: 0x1234 });
        assert_eq!(d.cmd, 11);
        assert_eq!(d.interface_version, 0x15);
        assert_eq!(d.domain, 7);
        assert_eq!(d.payload::<MaxMem>(), Some(MaxMem { max_memkb: 0x1234 }));
        let mut bytes = [0u8; Domctl::SIZE];
        d.to_wire(&mut bytes).unwrap();
        assert_eq!(bytes[16], 0x34);
        assert_eq!(bytes[17], 0x12);
    }

    #[test]
    fn shutdown_code_and_flags() {
        let info = GetDomainInfo {
            flags: (3 << 16) | 0b101,
            ..GetDomainInfo::default()
        };
        assert_eq!(info.shutdown_code(), 3);
        assert_eq!(info.dominf(), DomInfoFlags::DYING | DomInfoFlags::SHUTDOWN);
        // Never shut down: the code is stored as all-ones.
        let fresh = GetDomainInfo {
            flags: 0xFFFF_0000 | 0b1000,
            ..GetDomainInfo::default()
        };
        assert_eq!(fresh.shutdown_code(), 255);
        assert_eq!(fresh.dominf(), DomInfoFlags::PAUSED);
    }

    #[test]
    fn numbers_match_xen() {
        assert_eq!(DomctlCmd::from_number(22), Some(DomctlCmd::HypercallInit));
        assert_eq!(DomctlCmd::GetPageFrameInfo3 as u32, 61);
        assert_eq!(DomctlCmd::SetAddressSize.name(), "set_address_size");
        assert_eq!(DomctlCmd::from_number(6), None);
    }
}
