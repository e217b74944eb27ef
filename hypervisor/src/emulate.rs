//! Privileged instructions a PV kernel may execute in ring 1, decoded from
//! the bytes at the faulting RIP, and the policy for each (Xen's PV
//! emulation, narrowed to what a 64-bit PV kernel needs):
//!
//! | instruction | from ring 1 |
//! |---|---|
//! | `mov %crN, reg` | CR0: PE MP ET NE WP AM PG plus the virtual TS; CR2: the last fault address; CR3: the guest's L4 (machine address); CR4: 0x660 |
//! | `mov reg, %cr0` | only TS may change (as `fpu_taskswitch`); anything else #GP |
//! | `mov reg, %cr3` / `%cr4` | writing back the value a read gives is a no-op; anything else #GP |
//! | `clts` | clears the virtual TS |
//! | `wbinvd` | performed for a privileged domain; #GP otherwise |
//! | `rdmsr` | TSC, PAT, EFER, the FS/GS base MSRs; TSC_AUX and Xen's hypercall-page MSR read 0; anything else #GP |
//! | `wrmsr` | the FS/GS base MSRs (as `set_segment_base`); anything else #GP |
//! | `ud2; .ascii "xen"; cpuid` | CPUID with the guest policy (see `arch`) |
//! | everything else (`hlt`, `cli`, `sti`, `lgdt`, `lidt`, `wbinvd`, `in`/`out`, other CRs) | #GP to the guest |
//!
//! From ring 3 nothing is emulated (except the forced-emulation CPUID, which
//! Xen also allows from user mode).
#![forbid(unsafe_code)]

use dom0_abi::cpu::XEN_EMULATE_PREFIX;

/// A decoded instruction this module knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insn {
    /// `mov %crN, reg` (register number in REX.B:rm order).
    ReadCr {
        /// Control register.
        cr: u8,
        /// Destination register (0 = RAX ... 15 = R15).
        reg: u8,
    },
    /// `mov reg, %crN`.
    WriteCr {
        /// Control register.
        cr: u8,
        /// Source register.
        reg: u8,
    },
    /// `clts`.
    Clts,
    /// `wbinvd`.
    Wbinvd,
    /// `rdmsr`.
    Rdmsr,
    /// `wrmsr`.
    Wrmsr,
    /// The forced-emulation prefix followed by `cpuid`.
    ForcedCpuid,
}

/// A decoded instruction and its length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// What it is.
    pub insn: Insn,
    /// Its length in bytes.
    pub len: u64,
}

/// Decodes the bytes at a faulting RIP. Only what the table above emulates
/// is recognised; anything else is `None` (the guest gets the fault).
pub fn decode(bytes: &[u8]) -> Option<Decoded> {
    if bytes.starts_with(&XEN_EMULATE_PREFIX) {
        return (bytes.get(5..7) == Some(&[0x0f, 0xa2][..])).then_some(Decoded {
            insn: Insn::ForcedCpuid,
            len: 7,
        });
    }
    let (rex_r, rex_b, rest) = match bytes.first() {
        Some(&b) if b & 0xf0 == 0x40 => ((b & 4) << 1, (b & 1) << 3, &bytes[1..]),
        _ => (0, 0, bytes),
    };
    let prefix = (bytes.len() - rest.len()) as u64;
    let decoded = |insn, len: u64| {
        Some(Decoded {
            insn,
            len: prefix + len,
        })
    };
    match rest {
        [0x0f, 0x06, ..] => decoded(Insn::Clts, 2),
        [0x0f, 0x09, ..] => decoded(Insn::Wbinvd, 2),
        [0x0f, 0x32, ..] => decoded(Insn::Rdmsr, 2),
        [0x0f, 0x30, ..] => decoded(Insn::Wrmsr, 2),
        [0x0f, op @ (0x20 | 0x22), modrm, ..] if modrm & 0xc0 == 0xc0 => {
            let cr = ((modrm >> 3) & 7) | rex_r;
            let reg = (modrm & 7) | rex_b;
            let insn = if *op == 0x20 {
                Insn::ReadCr { cr, reg }
            } else {
                Insn::WriteCr { cr, reg }
            };
            decoded(insn, 3)
        }
        _ => None,
    }
}

/// MSRs a guest kernel may touch.
pub mod msr {
    /// Time-stamp counter (read only).
    pub const TSC: u32 = 0x10;
    /// Page attribute table (read only).
    pub const PAT: u32 = 0x277;
    /// Xen's hypercall-page MSR (reads 0; the page comes from the ELF note).
    pub const XEN_HYPERCALL_PAGE: u32 = 0x4000_0000;
    /// IA32_TSC_AUX (reads 0).
    pub const TSC_AUX: u32 = 0xC000_0103;
    /// IA32_EFER (read only).
    pub const EFER: u32 = 0xC000_0080;
    /// FS base.
    pub const FS_BASE: u32 = 0xC000_0100;
    /// Active GS base (the kernel's, in kernel mode).
    pub const GS_BASE: u32 = 0xC000_0101;
    /// Inactive GS base (the user's, in kernel mode).
    pub const KERNEL_GS_BASE: u32 = 0xC000_0102;
}

/// CR0 bits a guest sees: PE, MP, ET, NE, WP, AM, PG, and TS when its
/// virtual TS is set.
pub const fn guest_cr0(ts: bool) -> u64 {
    const BASE: u64 = (1 << 0) | (1 << 1) | (1 << 4) | (1 << 5) | (1 << 16) | (1 << 18) | (1 << 31);
    if ts { BASE | (1 << 3) } else { BASE }
}

/// CR4 as a guest reads it: PAE, MCE, OSFXSR, OSXMMEXCPT (0x660, what Xen
/// 4.17 shows a PV kernel). Whether XSAVE is usable is told by CPUID's
/// OSXSAVE bit, as natively.
pub const GUEST_CR4: u64 = (1 << 5) | (1 << 6) | (1 << 9) | (1 << 10);

/// Whether a write of `new` to CR0 only changes TS relative to the guest's
/// view (the one CR0 change a PV guest may make).
pub const fn cr0_write_allowed(new: u64, ts: bool) -> bool {
    (new & !(1 << 3)) == (guest_cr0(ts) & !(1 << 3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_it_emulates() {
        assert_eq!(
            decode(&[0x0f, 0x20, 0xd8]),
            Some(Decoded {
                insn: Insn::ReadCr { cr: 3, reg: 0 },
                len: 3
            })
        );
        assert_eq!(
            decode(&[0x41, 0x0f, 0x20, 0xc3]),
            Some(Decoded {
                insn: Insn::ReadCr { cr: 0, reg: 11 },
                len: 4
            })
        );
        assert_eq!(
            decode(&[0x0f, 0x22, 0xc1]),
            Some(Decoded {
                insn: Insn::WriteCr { cr: 0, reg: 1 },
                len: 3
            })
        );
        assert_eq!(
            decode(&[0x0f, 0x06]),
            Some(Decoded {
                insn: Insn::Clts,
                len: 2
            })
        );
        assert_eq!(
            decode(&[0x0f, 0x32]),
            Some(Decoded {
                insn: Insn::Rdmsr,
                len: 2
            })
        );
        assert_eq!(
            decode(&[0x0f, 0x30]),
            Some(Decoded {
                insn: Insn::Wrmsr,
                len: 2
            })
        );
        assert_eq!(
            decode(&[0x0f, 0x0b, 0x78, 0x65, 0x6e, 0x0f, 0xa2]),
            Some(Decoded {
                insn: Insn::ForcedCpuid,
                len: 7
            })
        );
    }

    #[test]
    fn refuses_the_rest() {
        for bytes in [
            &[0xf4][..],
            &[0xfa],
            &[0xfb],
            &[0x0f, 0x01, 0x10],
            &[0xe4, 0x60],
            &[0x0f, 0x0b, 0x78, 0x65, 0x6e, 0x90],
        ] {
            assert_eq!(decode(bytes), None, "{bytes:x?}");
        }
        assert_eq!(decode(&[0x0f, 0x20, 0x18]), None, "memory operand");
        assert_eq!(decode(&[]), None);
    }

    #[test]
    fn cr0_policy() {
        assert!(cr0_write_allowed(guest_cr0(false) | 8, false));
        assert!(cr0_write_allowed(guest_cr0(true) & !8, true));
        assert!(!cr0_write_allowed(guest_cr0(false) & !(1 << 16), false));
    }
}
