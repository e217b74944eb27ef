//! CPU identification (CPUID): what the hypervisor uses or reports, and
//! CPUID as a PV guest sees it.
use core::arch::x86_64::{__cpuid, __cpuid_count};

/// The CPU features the hypervisor uses or reports.
#[derive(Clone, Copy, Debug, Default)]
pub struct Features {
    /// Vendor string ("GenuineIntel", "AuthenticAMD", ...).
    pub vendor: [u8; 12],
    /// Family, model, stepping (display values).
    pub family: u32,
    /// Model number (display value).
    pub model: u32,
    /// Stepping.
    pub stepping: u32,
    /// No-execute pages.
    pub nx: bool,
    /// 1 GiB pages.
    pub page1gb: bool,
    /// Global pages.
    pub pge: bool,
    /// Process-context identifiers.
    pub pcid: bool,
    /// INVPCID instruction.
    pub invpcid: bool,
    /// Supervisor-mode execution prevention.
    pub smep: bool,
    /// Supervisor-mode access prevention (present but not used: the guest kernel is "supervisor").
    pub smap: bool,
    /// User-mode instruction prevention.
    pub umip: bool,
    /// RDFSBASE/RDGSBASE/WRFSBASE/WRGSBASE (CPUID.7.0:EBX[0]).
    pub fsgsbase: bool,
    /// XSAVE family.
    pub xsave: bool,
    /// Invariant TSC.
    pub invariant_tsc: bool,
    /// Running under a hypervisor (CPUID.1:ECX[31]).
    pub hypervisor: bool,
    /// The local APIC's x2APIC mode (CPUID.1:ECX[21]).
    pub x2apic: bool,
    /// The local APIC timer's TSC-deadline mode (CPUID.1:ECX[24]).
    pub tsc_deadline: bool,
    /// Physical address bits.
    pub phys_bits: u8,
    /// Linear address bits.
    pub virt_bits: u8,
}

/// Physical address bits of this CPU (set from CPUID at boot).
static PHYS_BITS: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(36);

/// Physical address bits of this CPU.
pub fn phys_bits() -> u8 {
    PHYS_BITS.load(core::sync::atomic::Ordering::Relaxed)
}

/// Reads the CPU's identification and feature leaves.
pub fn features() -> Features {
    let mut f = Features::default();
    let leaf0 = __cpuid(0);
    f.vendor = vendor();
    let leaf1 = __cpuid(1);
    let base_family = (leaf1.eax >> 8) & 0xf;
    let base_model = (leaf1.eax >> 4) & 0xf;
    f.family = if base_family == 0xf {
        base_family + ((leaf1.eax >> 20) & 0xff)
    } else {
        base_family
    };
    f.model = if base_family == 0x6 || base_family == 0xf {
        base_model | (((leaf1.eax >> 16) & 0xf) << 4)
    } else {
        base_model
    };
    f.stepping = leaf1.eax & 0xf;
    f.pge = leaf1.edx & (1 << 13) != 0;
    f.pcid = leaf1.ecx & (1 << 17) != 0;
    f.xsave = leaf1.ecx & (1 << 26) != 0;
    f.hypervisor = leaf1.ecx & (1 << 31) != 0;
    f.x2apic = leaf1.ecx & (1 << 21) != 0;
    f.tsc_deadline = leaf1.ecx & (1 << 24) != 0;
    if leaf0.eax >= 7 {
        let leaf7 = __cpuid_count(7, 0);
        f.fsgsbase = leaf7.ebx & 1 != 0;
        f.smep = leaf7.ebx & (1 << 7) != 0;
        f.invpcid = leaf7.ebx & (1 << 10) != 0;
        f.smap = leaf7.ebx & (1 << 20) != 0;
        f.umip = leaf7.ecx & (1 << 2) != 0;
    }
    let max_ext = __cpuid(0x8000_0000).eax;
    if max_ext >= 0x8000_0001 {
        let ext1 = __cpuid(0x8000_0001);
        f.nx = ext1.edx & (1 << 20) != 0;
        f.page1gb = ext1.edx & (1 << 26) != 0;
    }
    if max_ext >= 0x8000_0007 {
        f.invariant_tsc = __cpuid(0x8000_0007).edx & (1 << 8) != 0;
    }
    if max_ext >= 0x8000_0008 {
        let sizes = __cpuid(0x8000_0008).eax;
        f.phys_bits = (sizes & 0xff) as u8;
        PHYS_BITS.store(f.phys_bits, core::sync::atomic::Ordering::Relaxed);
        f.virt_bits = ((sizes >> 8) & 0xff) as u8;
    } else {
        f.phys_bits = 36;
        f.virt_bits = 48;
    }
    f
}

/// The CPU's own leaf `leaf`, subleaf `subleaf`.
pub fn raw_cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let r = __cpuid_count(leaf, subleaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}

/// CPUID as a PV guest sees it through the forced-emulation prefix: the
/// CPU's own leaves through Xen's PV policy ([`crate::cpuid`]), and Xen's
/// hypervisor leaves at 0x40000000 (signature "XenVMMXenVMM", version
/// 4.17). Leaf 0x40000002 reports no hypercall-page MSR: this hypervisor
/// installs the hypercall page from the ELF note only.
pub fn guest_cpuid(leaf: u32, subleaf: u32, view: crate::cpuid::View) -> [u32; 4] {
    const SIGNATURE: [u32; 3] = [0x566e_6558, 0x65584d4d, 0x4d4d_566e];
    match leaf {
        0x4000_0000 => [0x4000_0002, SIGNATURE[0], SIGNATURE[1], SIGNATURE[2]],
        0x4000_0001 => [(4 << 16) | 17, 0, 0, 0],
        0x4000_0002..=0x4000_00ff => [0; 4],
        _ => crate::cpuid::pv_leaf(&raw_cpuid, leaf, subleaf, view),
    }
}

/// The CPU's vendor string (CPUID leaf 0).
fn vendor() -> [u8; 12] {
    let leaf0 = __cpuid(0);
    let mut v = [0u8; 12];
    v[0..4].copy_from_slice(&leaf0.ebx.to_le_bytes());
    v[4..8].copy_from_slice(&leaf0.edx.to_le_bytes());
    v[8..12].copy_from_slice(&leaf0.ecx.to_le_bytes());
    v
}

/// What the MSR emulation needs to know of this CPU, for vCPU `vcpu`.
pub fn msr_view(vcpu: u32) -> crate::emulate::MsrView {
    let v = vendor();
    let amd = v == *b"AuthenticAMD";
    crate::emulate::MsrView {
        vcpu,
        intel_or_amd: amd || v == *b"GenuineIntel",
        amd,
    }
}

/// The host's microcode revision (MSR 0x8b, which Intel and AMD both
/// have), as Xen forwards it to guests; `None` on other CPUs.
pub fn ucode_revision() -> Option<u64> {
    msr_view(0).intel_or_amd.then(|| {
        // SAFETY: MSR 0x8b exists on every Intel and AMD CPU; reading it
        // has no side effects.
        unsafe { super::msr::rdmsr(crate::emulate::msr::UCODE_REV) }
    })
}
