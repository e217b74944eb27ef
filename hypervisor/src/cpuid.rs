//! CPUID as a PV guest sees it: Xen 4.17's PV policy applied to the
//! CPU's own leaves.
//!
//! A PV kernel asks with the forced-emulation prefix (`ud2; .ascii "xen";
//! cpuid`); plain `cpuid` is not intercepted and shows the hardware. The
//! policy hides what a PV guest cannot use or must not touch, as Xen does,
//! checked leaf by leaf against Xen 4.17 by the `cpu_cpuid_policy` test
//! guest:
//!
//! - page sizes and global pages (PSE, PSE36, PGE, 1 GiB pages): a PV
//!   guest's page tables are validated 4 KiB entries;
//! - SMEP, SMAP, UMIP, PKU, LA57, INVPCID, MPX, SGX, PT: CR4 and paging
//!   are the hypervisor's;
//! - MONITOR, VMX/SVM, SMX, thermal and performance-monitoring leaves,
//!   x2APIC and the TSC deadline: the guest has no APIC, and no access to
//!   the hardware's power or virtualization features;
//! - `SYSENTER` (SEP), which a 64-bit PV guest cannot use;
//! - XSAVE components other than x87, SSE and AVX (the ones the hypervisor
//!   switches), and XSAVES; leaf 0xd's sizes follow the vCPU's XCR0;
//! - the topology leaves (0xb, 0x1f) read as zero; 48-bit linear
//!   addresses.
//!
//! FSGSBASE is offered where the CPU has it, as on Xen: the guest kernel
//! sets CR4.FSGSBASE to use it. Where this differs from Xen 4.17 on
//! purpose: leaf 0x80000021 (AMD's speculation-control leaf, in which Xen
//! reports the LFENCE-serialising setting it makes) is not offered
//! (`docs/guest-cpu.md`).
#![forbid(unsafe_code)]

/// Leaf 1 ECX bits hidden: DTES64, MONITOR, DS-CPL, VMX, SMX, EST, TM2,
/// SDBG, xTPR, PDCM, DCA, x2APIC, TSC-deadline, OSXSAVE (set again from
/// the vCPU's view below).
const LEAF1_ECX_HIDDEN: u32 = bits(&[2, 3, 4, 5, 6, 7, 8, 11, 14, 15, 18, 21, 24, 27]);
/// Leaf 1 ECX: OSXSAVE.
const OSXSAVE: u32 = 1 << 27;
/// Leaf 1 ECX: XSAVE.
const XSAVE: u32 = 1 << 26;
/// Leaf 1 ECX: running under a hypervisor.
const HYPERVISOR: u32 = 1 << 31;
/// Leaf 1 EDX bits hidden: VME, PSE, SEP, PGE, PSE36, PSN, DS, TM, PBE.
const LEAF1_EDX_HIDDEN: u32 = bits(&[1, 3, 11, 13, 17, 18, 21, 29, 31]);
/// Leaf 7.0 EBX bits hidden: TSC_ADJUST, SGX, SMEP, INVPCID, PQM, MPX,
/// PQE, SMAP, PCOMMIT, PT.
const LEAF7_EBX_HIDDEN: u32 = bits(&[1, 2, 7, 10, 12, 14, 15, 20, 22, 25]);
/// Leaf 7.0 ECX bits hidden: UMIP, PKU, OSPKE, WAITPKG, LA57, ENQCMD, PKS.
const LEAF7_ECX_HIDDEN: u32 = bits(&[2, 3, 4, 5, 16, 29, 31]);
/// Leaf 0x80000001 ECX bits hidden: SVM, CR8 legacy, IBS, SKINIT, WDT,
/// LWP, NodeId, TOPOEXT, the performance-counter extensions, MONITORX.
const EXT1_ECX_HIDDEN: u32 = bits(&[2, 4, 10, 12, 13, 15, 19, 22, 23, 24, 26, 28, 29]);
/// Leaf 0x80000001 EDX bits hidden: VME, PSE, PGE, PSE36, 1 GiB pages.
const EXT1_EDX_HIDDEN: u32 = bits(&[1, 3, 13, 17, 26]);
/// Leaf 0xd.1 EAX bits offered: XSAVEOPT, XSAVEC, XGETBV with ECX = 1
/// (not XSAVES, nor XFD).
const XSAVE_1_EAX_OFFERED: u32 = bits(&[0, 1, 2]);
/// Basic leaves that read as zero: MONITOR (5), power management (6),
/// performance monitoring (0xa), topology (0xb, 0x1f), resource director
/// (0xf, 0x10), SGX (0x12), processor trace (0x14).
const ZERO_BASIC: &[u32] = &[5, 6, 0xa, 0xb, 0xf, 0x10, 0x12, 0x14, 0x1f];
/// Extended leaves that read as zero: SVM (0x8000000a), encrypted memory
/// (0x8000001f) and everything from 0x80000021 on.
const ZERO_EXTENDED: &[u32] = &[0x8000_000a, 0x8000_001f];
/// The first extended leaf not offered.
const EXTENDED_END: u32 = 0x8000_0021;
/// Linear address bits a guest is told (LA57 is hidden).
const LINEAR_BITS: u32 = 48;
/// Bytes of the legacy XSAVE region and header.
const XSAVE_LEGACY_BYTES: u32 = 576;

/// XSAVE components a guest may enable in XCR0: x87, SSE, AVX (the ones
/// the hypervisor enables and switches).
pub const XCR0_GUEST: u64 = 0b111;
/// XCR0 a vCPU starts with: x87 and SSE.
pub const XCR0_INITIAL: u64 = 0b11;

const fn bits(list: &[u32]) -> u32 {
    let mut mask = 0;
    let mut i = 0;
    while i < list.len() {
        mask |= 1 << list[i];
        i += 1;
    }
    mask
}

/// What the policy needs to know about the asking vCPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View {
    /// The vCPU's XCR0.
    pub xcr0: u64,
    /// The vCPU has set CR4.OSXSAVE.
    pub cr4_osxsave: bool,
    /// The guest kernel asks (not its user mode): it sees OSXSAVE whenever
    /// XSAVE is offered, as on Xen, where PV kernels have come to rely on
    /// it before they set CR4.OSXSAVE.
    pub kernel: bool,
}

/// XCR0 values a guest may load (Xen's `valid_xcr0`, within
/// [`XCR0_GUEST`]): x87 always, AVX only with SSE.
#[must_use]
pub fn valid_xcr0(value: u64, offered: u64) -> bool {
    value & !offered == 0 && value & 1 != 0 && (value & 4 == 0 || value & 2 != 0)
}

/// The XSAVE components the CPU supports that a guest is offered.
#[must_use]
pub fn offered_xcr0(raw: &impl Fn(u32, u32) -> [u32; 4]) -> u64 {
    let leaf0 = raw(0, 0);
    if leaf0[0] < 0xd || raw(1, 0)[2] & XSAVE == 0 {
        return 0;
    }
    let d = raw(0xd, 0);
    ((u64::from(d[3]) << 32) | u64::from(d[0])) & XCR0_GUEST
}

/// Bytes of an XSAVE image of the components in `mask`.
fn xsave_bytes(raw: &impl Fn(u32, u32) -> [u32; 4], mask: u64) -> u32 {
    (2..64)
        .filter(|&n| mask & (1 << n) != 0)
        .map(|n| {
            let [size, offset, ..] = raw(0xd, n);
            offset.saturating_add(size)
        })
        .fold(XSAVE_LEGACY_BYTES, u32::max)
}

/// Leaf `leaf`, subleaf `subleaf` as the policy shows it to `view`, from
/// the CPU's own leaves `raw` (the hypervisor leaves 0x400000xx are not
/// handled here).
#[must_use]
pub fn pv_leaf(
    raw: &impl Fn(u32, u32) -> [u32; 4],
    leaf: u32,
    subleaf: u32,
    view: View,
) -> [u32; 4] {
    let max_basic = raw(0, 0)[0];
    let max_extended = raw(0x8000_0000, 0)[0].min(EXTENDED_END - 1);
    let in_range = if leaf >= 0x8000_0000 {
        leaf <= max_extended
    } else {
        leaf <= max_basic
    };
    if !in_range || ZERO_BASIC.contains(&leaf) || ZERO_EXTENDED.contains(&leaf) {
        return [0; 4];
    }
    let [mut a, mut b, mut c, mut d] = raw(leaf, subleaf);
    let offered = offered_xcr0(raw);
    match (leaf, subleaf) {
        (0x8000_0000, _) => a = max_extended,
        (1, _) => {
            // The APIC ID of a PV vCPU reads 0.
            b &= 0x00ff_ffff;
            c = (c & !LEAF1_ECX_HIDDEN) | HYPERVISOR;
            if offered == 0 {
                c &= !XSAVE;
            } else if view.cr4_osxsave || view.kernel {
                c |= OSXSAVE;
            }
            d &= !LEAF1_EDX_HIDDEN;
        }
        (7, 0) => {
            b &= !LEAF7_EBX_HIDDEN;
            c &= !LEAF7_ECX_HIDDEN;
        }
        (0xd, 0) => {
            #[allow(clippy::cast_possible_truncation, reason = "the two halves")]
            {
                (a, d) = (offered as u32, (offered >> 32) as u32);
            }
            b = xsave_bytes(raw, view.xcr0 & offered);
            c = xsave_bytes(raw, offered);
        }
        (0xd, 1) => [a, b, c, d] = [a & XSAVE_1_EAX_OFFERED, 0, 0, 0],
        (0xd, n) if n >= 64 || offered & (1 << n) == 0 => return [0; 4],
        (0x8000_0001, _) => {
            c &= !EXT1_ECX_HIDDEN;
            d &= !EXT1_EDX_HIDDEN;
        }
        (0x8000_0008, _) => {
            let linear = ((a >> 8) & 0xff).min(LINEAR_BITS);
            a = (a & !0xff00) | (linear << 8);
        }
        _ => {}
    }
    [a, b, c, d]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The leaves QEMU 7.2's TCG `-cpu max` (AMD) reports, as the test
    /// guest saw them natively.
    fn tcg(leaf: u32, subleaf: u32) -> [u32; 4] {
        match (leaf, subleaf) {
            (0, _) => [0xd, 0x6874_7541, 0x444d_4163, 0x6974_6e65],
            (1, _) => [0x0006_0fb1, 0x0000_0800, 0x7ed8_320b, 0x0fcb_fbfd],
            (6, _) => [4, 0, 0, 0],
            (7, 0) => [0, 0x01d8_43a9, 0x8001_020c, 0],
            (0xd, 0) => [0x21f, 0x340, 0xa88, 0],
            (0xd, 1) => [5, 0x3c8, 0, 0],
            (0xd, 2) => [0x100, 0x240, 0, 0],
            (0xd, 3) => [0x40, 0x3c0, 0, 0],
            (0xd, 9) => [8, 0xa80, 0, 0],
            (0x8000_0000, _) => [0x8000_000a, 0x6874_7541, 0x444d_4163, 0x6974_6e65],
            (0x8000_0001, _) => [0x0006_0fb1, 0, 0x75, 0xedd3_fbfd],
            (0x8000_0008, _) => [0x3928, 0, 0, 0],
            (0x8000_000a, _) => [1, 0x10, 0, 0x1001_0001],
            _ => [0xdead, 0xbeef, 0xdead, 0xbeef],
        }
    }

    const KERNEL: View = View {
        xcr0: XCR0_INITIAL,
        cr4_osxsave: false,
        kernel: true,
    };

    fn leaf(l: u32, s: u32) -> [u32; 4] {
        pv_leaf(&tcg, l, s, KERNEL)
    }

    /// Each expected value is what Xen 4.17 showed the same guest on the
    /// same QEMU (`cargo xtask test --xen --filter cpu_cpuid_policy`).
    #[test]
    fn xen_4_17s_answers_on_tcg() {
        assert_eq!(leaf(1, 0), [0x0006_0fb1, 0x800, 0xfed8_3203, 0x0fc9_d3f5]);
        assert_eq!(leaf(6, 0), [0; 4]);
        assert_eq!(leaf(7, 0), [0, 0x0188_0329, 0x200, 0]);
        assert_eq!(leaf(0xd, 0), [7, 0x240, 0x340, 0]);
        assert_eq!(leaf(0xd, 1), [5, 0, 0, 0]);
        assert_eq!(leaf(0xd, 2), [0x100, 0x240, 0, 0]);
        assert_eq!(leaf(0xd, 3), [0; 4]);
        assert_eq!(leaf(0xd, 9), [0; 4]);
        assert_eq!(leaf(0x8000_0001, 0), [0x0006_0fb1, 0, 0x61, 0xe9d1_dbf5]);
        assert_eq!(leaf(0x8000_0008, 0), [0x3028, 0, 0, 0]);
        assert_eq!(leaf(0x8000_000a, 0), [0; 4]);
        assert_eq!(leaf(0xb, 0), [0; 4]);
    }

    #[test]
    fn leaves_past_the_maximum_are_zero() {
        assert_eq!(leaf(0xe, 0), [0; 4]);
        assert_eq!(leaf(0x8000_000b, 0), [0; 4]);
        assert_eq!(leaf(0x8000_0021, 0), [0; 4]);
        assert_eq!(leaf(0x8000_0000, 0)[0], 0x8000_000a);
    }

    #[test]
    fn osxsave_and_the_xsave_size_follow_the_vcpu() {
        let user = View {
            kernel: false,
            ..KERNEL
        };
        assert_eq!(pv_leaf(&tcg, 1, 0, user)[2] & OSXSAVE, 0);
        let enabled = View {
            xcr0: 7,
            cr4_osxsave: true,
            kernel: false,
        };
        assert_ne!(pv_leaf(&tcg, 1, 0, enabled)[2] & OSXSAVE, 0);
        assert_eq!(pv_leaf(&tcg, 0xd, 0, enabled)[1], 0x340);
    }

    #[test]
    fn xcr0_values_as_xen_checks_them() {
        assert!(valid_xcr0(1, 7));
        assert!(valid_xcr0(3, 7));
        assert!(valid_xcr0(7, 7));
        assert!(!valid_xcr0(0, 7), "x87 is required");
        assert!(!valid_xcr0(2, 7));
        assert!(!valid_xcr0(5, 7), "AVX needs SSE");
        assert!(!valid_xcr0(7, 3), "not offered");
        assert!(!valid_xcr0(0x207, 7), "PKRU is never offered");
    }

    #[test]
    fn no_xsave_no_xsave_leaf_bits() {
        let bare = |l: u32, s: u32| {
            let mut r = tcg(l, s);
            if l == 1 {
                r[2] &= !XSAVE;
            }
            r
        };
        assert_eq!(offered_xcr0(&bare), 0);
        assert_eq!(pv_leaf(&bare, 1, 0, KERNEL)[2] & (XSAVE | OSXSAVE), 0);
    }
}
