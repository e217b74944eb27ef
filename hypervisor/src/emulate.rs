//! Privileged instructions a PV kernel may execute in ring 1, decoded from
//! the bytes at the faulting RIP, and the policy for each (Xen's PV
//! emulation, narrowed to what a 64-bit PV kernel needs):
//!
//! | instruction | from ring 1 |
//! |---|---|
//! | `mov %crN, reg` | CR0: PE MP ET NE WP AM PG plus the virtual TS; CR2: the last fault address; CR3: the guest's L4 (machine address); CR4: 0x660, plus OSXSAVE once the vCPU set it |
//! | `mov reg, %cr0` | only TS may change (as `fpu_taskswitch`); anything else #GP |
//! | `mov reg, %cr3` | writing back the value a read gives is a no-op; anything else #GP |
//! | `mov reg, %cr4` | accepted, as on Xen: OSXSAVE (where XSAVE is offered) is kept, every other bit ignored |
//! | `xsetbv` | XCR0 (ECX = 0) within the offered components, as Xen checks it (`crate::cpuid::valid_xcr0`); #UD before the vCPU set CR4.OSXSAVE, #GP for another register or a bad value |
//! | `mov %drN, reg` / `mov reg, %drN` | the virtual debug registers, as `get_debugreg` / `set_debugreg` |
//! | `clts` | clears the virtual TS |
//! | `wbinvd` | performed for a privileged domain; #GP otherwise |
//! | `rdmsr` | TSC, PAT, EFER, the FS/GS base MSRs; TSC_AUX and Xen's hypercall-page MSR read 0; the host's microcode revision; the values Xen makes up ([`made_up_msr`]: APIC base, virtual machine check, `MISC_ENABLE`, ...); anything else #GP |
//! | `wrmsr` | the FS/GS base MSRs (as `set_segment_base`); the virtual machine check's registers (ignored); anything else #GP |
//! | `ud2; .ascii "xen"; cpuid` | CPUID with the guest policy (see `arch`) |
//! | `cli`, `sti` | no-ops when the virtual IOPL (`PHYSDEVOP_set_iopl`) is at least 1, as on Xen; #GP otherwise |
//! | `in`, `out` (byte, word, dword; port in DX or an immediate) | as `crate::ioport` decides (Xen's rules) |
//! | everything else (`hlt`, `lgdt`, `lidt`, `ins`/`outs`, other CRs) | #GP to the guest |
//!
//! From ring 3 nothing is emulated except the forced-emulation CPUID, which
//! Xen also allows from user mode, `cli`/`sti` with a virtual IOPL
//! of 3, and `in`/`out` that the virtual IOPL or the I/O bitmap allows.
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
    /// `mov %drN, reg`.
    ReadDr {
        /// Debug register.
        dr: u8,
        /// Destination register.
        reg: u8,
    },
    /// `mov reg, %drN`.
    WriteDr {
        /// Debug register.
        dr: u8,
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
    /// `cli` or `sti`: no-ops when the virtual IOPL allows them.
    CliSti,
    /// `xsetbv`.
    Xsetbv,
    /// `in` or `out`.
    Io(PortIo),
}

/// A decoded `in` or `out`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortIo {
    /// The port (from the immediate), or `None` for DX.
    pub port: Option<u16>,
    /// Bytes moved: 1, 2 or 4.
    pub bytes: u32,
    /// `out` (else `in`).
    pub write: bool,
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
    if let Some(io) = decode_io(bytes) {
        return Some(io);
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
        [0xfa | 0xfb, ..] if prefix == 0 => decoded(Insn::CliSti, 1),
        [0x0f, 0x06, ..] => decoded(Insn::Clts, 2),
        [0x0f, 0x09, ..] => decoded(Insn::Wbinvd, 2),
        [0x0f, 0x32, ..] => decoded(Insn::Rdmsr, 2),
        [0x0f, 0x30, ..] => decoded(Insn::Wrmsr, 2),
        [0x0f, 0x01, 0xd1, ..] if prefix == 0 => decoded(Insn::Xsetbv, 3),
        [0x0f, op @ (0x21 | 0x23), modrm, ..] if modrm & 0xc0 == 0xc0 => {
            let dr = ((modrm >> 3) & 7) | rex_r;
            let reg = (modrm & 7) | rex_b;
            let insn = if *op == 0x21 {
                Insn::ReadDr { dr, reg }
            } else {
                Insn::WriteDr { dr, reg }
            };
            decoded(insn, 3)
        }
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

/// `in`/`out` (0xE4-0xE7 with an immediate port, 0xEC-0xEF with DX), with
/// an operand-size prefix (0x66: a word instead of a dword) and a REX
/// prefix (which changes nothing for them) before the opcode.
fn decode_io(bytes: &[u8]) -> Option<Decoded> {
    let (word, rest) = match bytes {
        [0x66, rest @ ..] => (true, rest),
        _ => (false, bytes),
    };
    let rest = match rest {
        [rex, rest @ ..] if rex & 0xf0 == 0x40 => rest,
        _ => rest,
    };
    let prefixes = (bytes.len() - rest.len()) as u64;
    let (&op, imm) = rest.split_first()?;
    if !matches!(op, 0xe4..=0xe7 | 0xec..=0xef) {
        return None;
    }
    let bytes = match (op & 1, word) {
        (0, _) => 1,
        (_, true) => 2,
        _ => 4,
    };
    let (port, len) = if op & 8 == 0 {
        (Some(u16::from(*imm.first()?)), 2)
    } else {
        (None, 1)
    };
    Some(Decoded {
        insn: Insn::Io(PortIo {
            port,
            bytes,
            write: op & 2 != 0,
        }),
        len: prefixes + len,
    })
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
    /// The local APIC's base.
    pub const APIC_BASE: u32 = 0x1b;
    /// The microcode revision (read: the host's, as Xen forwards it).
    pub const UCODE_REV: u32 = 0x8b;
    /// Platform information.
    pub const PLATFORM_INFO: u32 = 0xce;
    /// Miscellaneous feature enables.
    pub const MISC_FEATURES_ENABLES: u32 = 0x140;
    /// Machine-check capabilities.
    pub const MCG_CAP: u32 = 0x179;
    /// Machine-check status.
    pub const MCG_STATUS: u32 = 0x17a;
    /// Machine-check control.
    pub const MCG_CTL: u32 = 0x17b;
    /// Miscellaneous enables.
    pub const MISC_ENABLE: u32 = 0x1a0;
    /// The first machine-check bank register (`MC0_CTL`); four per bank.
    pub const MC0_CTL: u32 = 0x400;
    /// The first `MCi_CTL2`.
    pub const MC0_CTL2: u32 = 0x280;
    /// AMD's hardware configuration register.
    pub const HWCR: u32 = 0xc001_0015;
}

/// Machine-check banks a PV guest sees (Xen's `GUEST_MC_BANK_NUM`).
pub const GUEST_MC_BANKS: u32 = 2;

/// The banks Xen's virtual MCE answers for, present or not (32).
const MC_BANK_SLOTS: u32 = 32;

/// Who asks, for the MSRs whose value depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MsrView {
    /// The vCPU (vCPU 0 is the bootstrap processor).
    pub vcpu: u32,
    /// The CPU is Intel's or AMD's (the vendors whose MSRs Xen emulates).
    pub intel_or_amd: bool,
    /// The CPU is AMD's.
    pub amd: bool,
}

/// The value a PV kernel's `rdmsr` of `index` reads, for the MSRs whose
/// value Xen 4.17 makes up rather than takes from the vCPU (checked
/// against Xen by the `cpu_msr_policy` test guest); `None` for the others.
/// The local APIC's base (enabled, BSP flag on vCPU 0) though there is no
/// APIC to reach there; Xen's virtual machine check with two banks and
/// nothing logged; `MISC_ENABLE` with fast strings, no BTS, no PEBS,
/// xTPR disabled; zero platform information and feature enables; AMD's
/// `HWCR` zero.
#[must_use]
pub fn made_up_msr(index: u32, view: MsrView) -> Option<u64> {
    const APIC_ENABLE: u64 = 1 << 11;
    const APIC_BSP: u64 = 1 << 8;
    const MISC_ENABLE: u64 = 1 | (1 << 11) | (1 << 12) | (1 << 23);
    let bank_register = index.wrapping_sub(msr::MC0_CTL);
    match index {
        msr::APIC_BASE if view.intel_or_amd => {
            Some(0xfee0_0000 | APIC_ENABLE | if view.vcpu == 0 { APIC_BSP } else { 0 })
        }
        msr::MISC_ENABLE | msr::PLATFORM_INFO | msr::MISC_FEATURES_ENABLES if view.intel_or_amd => {
            Some(if index == msr::MISC_ENABLE {
                MISC_ENABLE
            } else {
                0
            })
        }
        msr::MCG_CAP => Some(u64::from(GUEST_MC_BANKS)),
        msr::MCG_STATUS | msr::MCG_CTL => Some(0),
        _ if bank_register < MC_BANK_SLOTS * 4 => {
            let control = bank_register.is_multiple_of(4) && bank_register / 4 < GUEST_MC_BANKS;
            Some(if control { u64::MAX } else { 0 })
        }
        _ if index.wrapping_sub(msr::MC0_CTL2) < MC_BANK_SLOTS => Some(0),
        msr::HWCR if view.amd => Some(0),
        _ => None,
    }
}

/// Whether a PV kernel's `wrmsr` of `index` is accepted and ignored, as
/// Xen's virtual machine check takes writes to its registers (clearing
/// status after a poll, enabling banks).
#[must_use]
pub fn ignored_msr_write(index: u32) -> bool {
    matches!(index, msr::MCG_STATUS | msr::MCG_CTL)
        || index.wrapping_sub(msr::MC0_CTL) < MC_BANK_SLOTS * 4
        || index.wrapping_sub(msr::MC0_CTL2) < MC_BANK_SLOTS
}

/// CR0 bits a guest sees: PE, MP, ET, NE, WP, AM, PG, and TS when its
/// virtual TS is set.
pub const fn guest_cr0(ts: bool) -> u64 {
    const BASE: u64 = (1 << 0) | (1 << 1) | (1 << 4) | (1 << 5) | (1 << 16) | (1 << 18) | (1 << 31);
    if ts { BASE | (1 << 3) } else { BASE }
}

/// CR4 as a guest reads it before it writes it: PAE, MCE, OSFXSR,
/// OSXMMEXCPT (0x660, what Xen 4.17 shows a PV kernel).
pub const GUEST_CR4: u64 = (1 << 5) | (1 << 6) | (1 << 9) | (1 << 10);
/// CR4.OSXSAVE.
pub const CR4_OSXSAVE: u64 = 1 << 18;
/// CR4.FSGSBASE.
pub const CR4_FSGSBASE: u64 = 1 << 16;

/// CR4 as a guest reads it: [`GUEST_CR4`], and OSXSAVE and FSGSBASE if it
/// set them (and they are offered).
#[must_use]
pub const fn guest_cr4(osxsave: bool, fsgsbase: bool) -> u64 {
    let mut cr4 = GUEST_CR4;
    if osxsave {
        cr4 |= CR4_OSXSAVE;
    }
    if fsgsbase {
        cr4 |= CR4_FSGSBASE;
    }
    cr4
}

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
            decode(&[0x0f, 0x01, 0xd1]),
            Some(Decoded {
                insn: Insn::Xsetbv,
                len: 3
            })
        );
        assert_eq!(decode(&[0x41, 0x0f, 0x01, 0xd1]), None);
        assert_eq!(
            decode(&[0x0f, 0x0b, 0x78, 0x65, 0x6e, 0x0f, 0xa2]),
            Some(Decoded {
                insn: Insn::ForcedCpuid,
                len: 7
            })
        );
    }

    #[test]
    fn in_and_out() {
        let io = |port, bytes, write, len| {
            Some(Decoded {
                insn: Insn::Io(PortIo { port, bytes, write }),
                len,
            })
        };
        assert_eq!(decode(&[0xe4, 0x81]), io(Some(0x81), 1, false, 2));
        assert_eq!(decode(&[0xe5, 0x70]), io(Some(0x70), 4, false, 2));
        assert_eq!(decode(&[0x66, 0xe5, 0x70]), io(Some(0x70), 2, false, 3));
        assert_eq!(decode(&[0xe6, 0x80]), io(Some(0x80), 1, true, 2));
        assert_eq!(decode(&[0xe7, 0x80]), io(Some(0x80), 4, true, 2));
        assert_eq!(decode(&[0xec]), io(None, 1, false, 1));
        assert_eq!(decode(&[0x66, 0xed]), io(None, 2, false, 2));
        assert_eq!(decode(&[0xed]), io(None, 4, false, 1));
        assert_eq!(decode(&[0xee]), io(None, 1, true, 1));
        assert_eq!(decode(&[0x66, 0x48, 0xef]), io(None, 2, true, 3));
        assert_eq!(decode(&[0x48, 0xef]), io(None, 4, true, 2));
        // An immediate cut short, and the string forms, are not decoded.
        assert_eq!(decode(&[0xe4]), None);
        assert_eq!(decode(&[0x6c]), None);
        assert_eq!(decode(&[0x6f]), None);
    }

    #[test]
    fn cli_and_sti() {
        for op in [0xfa, 0xfb] {
            assert_eq!(
                decode(&[op, 0x90]),
                Some(Decoded {
                    insn: Insn::CliSti,
                    len: 1
                })
            );
        }
    }

    #[test]
    fn refuses_the_rest() {
        for bytes in [
            &[0xf4][..],
            &[0x48, 0xfa],
            &[0x0f, 0x01, 0x10],
            &[0x6c],
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

    #[test]
    fn cr4_shows_what_the_kernel_set() {
        assert_eq!(guest_cr4(false, false), 0x660);
        assert_eq!(guest_cr4(true, false), 0x660 | CR4_OSXSAVE);
        assert_eq!(guest_cr4(false, true), 0x660 | CR4_FSGSBASE);
        assert_eq!(guest_cr4(true, true), 0x5_0660);
    }
}

/// Where a decoded store takes its value from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreValue {
    /// A general register (0 = RAX ... 15 = R15; for 1-byte stores without
    /// REX, 4-7 name AH, CH, DH, BH).
    Register(u8),
    /// An immediate, sign-extended to the store's width.
    Immediate(u64),
}

/// What a decoded store does with its destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreOp {
    /// `mov`: writes the value.
    Mov,
    /// `xchg`: writes the value; the register gets the old bytes.
    Xchg,
    /// `cmpxchg`: writes the value only if the old bytes equal RAX's.
    CmpXchg,
    /// `and`: ANDs the value into the old bytes (flags as `and` sets them).
    And,
    /// `or`: ORs the value into the old bytes.
    Or,
}

impl StoreOp {
    /// Whether the instruction reads its destination too.
    pub const fn reads(self) -> bool {
        !matches!(self, StoreOp::Mov)
    }
}

/// A store to memory, as the writable-page-table emulation needs it: the
/// width, where the value comes from, what it does with the old bytes,
/// and the instruction's length. The address is the fault address, so
/// the addressing mode only matters for the length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Store {
    /// Bytes written: 1, 2, 4 or 8.
    pub width: u8,
    /// The value's source.
    pub value: StoreValue,
    /// The operation.
    pub op: StoreOp,
    /// Whether a 1-byte register source names AH-BH (no REX prefix).
    pub high_byte: bool,
    /// Instruction length.
    pub len: u64,
}

/// Where a store's value comes from, by opcode.
#[derive(Clone, Copy)]
enum Source {
    /// The ModRM `reg` field.
    Register,
    /// An immediate of the store's width (at most 4 bytes, sign-extended).
    Immediate,
    /// A sign-extended byte.
    Immediate8,
}

/// Decodes the instructions Linux (and the test guests) use to write
/// page-table entries: `mov r/m, reg` (0x88/0x89), `mov r/m, imm`
/// (0xC6/0xC7 /0), `xchg r/m, reg` (0x86/0x87), `cmpxchg r/m, reg`
/// (0x0F 0xB0/0xB1), `or`/`and r/m, reg` (0x08/0x09, 0x20/0x21) and `or`/
/// `and r/m, imm` (0x80/0x81/0x83 /1 and /4), with optional LOCK,
/// operand-size, segment (`ds` is what Linux's alternatives put in place
/// of LOCK on one CPU) and REX prefixes and any memory addressing mode.
/// Anything else (or a register destination) is `None`.
pub fn decode_store(bytes: &[u8]) -> Option<Store> {
    let mut at = 0;
    let mut opsize16 = false;
    while let Some(&b) = bytes.get(at) {
        match b {
            0xf0 | 0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 => {}
            0x66 => opsize16 = true,
            _ => break,
        }
        at += 1;
    }
    let rex = match bytes.get(at) {
        Some(&b) if b & 0xf0 == 0x40 => {
            at += 1;
            b
        }
        _ => 0,
    };
    let wide = rex & 8 != 0;
    let (opcode, next) = (*bytes.get(at)?, bytes.get(at + 1).copied());
    // The ModRM `reg` field of a one-byte opcode.
    let group = next.map(|modrm| (modrm >> 3) & 7);
    let (op, byte_op, source) = match (opcode, next) {
        (0x88 | 0x89, _) => (StoreOp::Mov, opcode == 0x88, Source::Register),
        (0xc6 | 0xc7, _) if group == Some(0) => (StoreOp::Mov, opcode == 0xc6, Source::Immediate),
        (0x86 | 0x87, _) => (StoreOp::Xchg, opcode == 0x86, Source::Register),
        (0x08 | 0x09, _) => (StoreOp::Or, opcode == 0x08, Source::Register),
        (0x20 | 0x21, _) => (StoreOp::And, opcode == 0x20, Source::Register),
        (0x80 | 0x81 | 0x83, _) => {
            let op = match group? {
                1 => StoreOp::Or,
                4 => StoreOp::And,
                _ => return None,
            };
            let source = if opcode == 0x81 {
                Source::Immediate
            } else {
                Source::Immediate8
            };
            (op, opcode == 0x80, source)
        }
        (0x0f, Some(0xb0 | 0xb1)) => {
            at += 1;
            (StoreOp::CmpXchg, next == Some(0xb0), Source::Register)
        }
        _ => return None,
    };
    at += 1;
    let modrm = *bytes.get(at)?;
    at += 1;
    let (mode, reg, rm) = (modrm >> 6, (modrm >> 3) & 7, modrm & 7);
    if mode == 3 {
        return None;
    }
    if rm == 4 {
        let sib = *bytes.get(at)?;
        at += 1;
        if mode == 0 && sib & 7 == 5 {
            at += 4;
        }
    } else if mode == 0 && rm == 5 {
        at += 4;
    }
    at += match mode {
        1 => 1,
        2 => 4,
        _ => 0,
    };
    if at > bytes.len() {
        // The displacement is cut off: not a whole instruction.
        return None;
    }
    let width = if byte_op {
        1
    } else if wide {
        8
    } else if opsize16 {
        2
    } else {
        4
    };
    let immediate = |size: u8| -> Option<StoreValue> {
        let n = usize::from(size);
        let raw = bytes.get(at..at + n)?;
        let mut le = [0u8; 8];
        le[..n].copy_from_slice(raw);
        let value = u64::from_le_bytes(le);
        let shift = 64 - 8 * u32::from(size);
        Some(StoreValue::Immediate(
            ((value << shift).cast_signed() >> shift).cast_unsigned(),
        ))
    };
    let (value, size) = match source {
        Source::Register => (StoreValue::Register(reg | ((rex & 4) << 1)), 0),
        Source::Immediate => (immediate(width.min(4))?, width.min(4)),
        Source::Immediate8 => (immediate(1)?, 1),
    };
    at += usize::from(size);
    Some(Store {
        width,
        value,
        op,
        high_byte: byte_op && rex == 0,
        len: at as u64,
    })
}

/// The arithmetic flags (CF, PF, AF, ZF, SF, OF).
pub const ARITHMETIC_FLAGS: u64 = 0x8d5;

/// The arithmetic flags `and` and `or` leave for `result` of `width`
/// bytes: CF and OF clear, ZF, SF and PF from the result (AF, undefined,
/// clear).
pub const fn logic_flags(result: u64, width: u8) -> u64 {
    let bits = 8 * width as u32;
    let value = if bits >= 64 {
        result
    } else {
        result & ((1 << bits) - 1)
    };
    let mut flags = 0;
    if (value & 0xff).count_ones().is_multiple_of(2) {
        flags |= 1 << 2;
    }
    if value == 0 {
        flags |= 1 << 6;
    }
    if value >> (bits - 1) & 1 != 0 {
        flags |= 1 << 7;
    }
    flags
}

#[cfg(test)]
mod store_tests {
    use super::*;

    #[test]
    fn a_store_cut_short_is_not_decoded() {
        // mov %al, 0x10(%rax) without its displacement byte.
        assert_eq!(decode_store(&[0x88, 0x40]), None);
        assert_eq!(decode_store(&[0x88, 0x40, 0x10]).map(|s| s.len), Some(3));
        // mov %eax, disp32(%rip) with two of four displacement bytes.
        assert_eq!(decode_store(&[0x89, 0x05, 0, 0]), None);
    }

    #[test]
    fn register_stores() {
        // mov %rcx, (%rax)
        assert_eq!(
            decode_store(&[0x48, 0x89, 0x08]),
            Some(Store {
                width: 8,
                value: StoreValue::Register(1),
                op: StoreOp::Mov,
                high_byte: false,
                len: 3
            })
        );
        // mov %r9d, 0x10(%rbx)
        assert_eq!(
            decode_store(&[0x44, 0x89, 0x4b, 0x10]),
            Some(Store {
                width: 4,
                value: StoreValue::Register(9),
                op: StoreOp::Mov,
                high_byte: false,
                len: 4
            })
        );
        // mov %cx, (%rsp) with SIB
        assert_eq!(
            decode_store(&[0x66, 0x89, 0x0c, 0x24]).map(|s| (s.width, s.len)),
            Some((2, 4))
        );
        // mov %ah, 0x12345678(%rip)
        let s = decode_store(&[0x88, 0x25, 0x78, 0x56, 0x34, 0x12]).unwrap();
        assert_eq!(
            (s.width, s.value, s.high_byte, s.len),
            (1, StoreValue::Register(4), true, 6)
        );
    }

    #[test]
    fn immediates_and_cmpxchg() {
        // movq $-1, 8(%rdi)
        assert_eq!(
            decode_store(&[0x48, 0xc7, 0x47, 0x08, 0xff, 0xff, 0xff, 0xff]),
            Some(Store {
                width: 8,
                value: StoreValue::Immediate(u64::MAX),
                op: StoreOp::Mov,
                high_byte: false,
                len: 8
            })
        );
        // lock cmpxchg %rdx, (%rcx,%rax,8)
        assert_eq!(
            decode_store(&[0xf0, 0x48, 0x0f, 0xb1, 0x14, 0xc1]),
            Some(Store {
                width: 8,
                value: StoreValue::Register(2),
                op: StoreOp::CmpXchg,
                high_byte: false,
                len: 6
            })
        );
    }

    #[test]
    fn read_modify_writes_linux_uses_on_ptes() {
        let decoded = |bytes: &[u8]| decode_store(bytes).map(|s| (s.op, s.width, s.value, s.len));
        // xchg %rdx, (%rax): ptep_get_and_clear.
        assert_eq!(
            decoded(&[0x48, 0x87, 0x10]),
            Some((StoreOp::Xchg, 8, StoreValue::Register(2), 3))
        );
        // lock andb $0xfd, (%rdi) and the same with ds in place of lock:
        // clear_bit(_PAGE_BIT_RW) in ptep_set_wrprotect.
        for prefix in [0xf0, 0x3e] {
            assert_eq!(
                decoded(&[prefix, 0x80, 0x27, 0xfd]),
                Some((StoreOp::And, 1, StoreValue::Immediate(u64::MAX - 2), 4))
            );
        }
        // lock orb $2, 8(%rdi)
        assert_eq!(
            decoded(&[0xf0, 0x80, 0x4f, 0x08, 0x02]),
            Some((StoreOp::Or, 1, StoreValue::Immediate(2), 5))
        );
        // andq $-3, (%rax) (imm8 sign-extended) and orl $0x100, (%rax)
        assert_eq!(
            decoded(&[0x48, 0x83, 0x20, 0xfd]),
            Some((StoreOp::And, 8, StoreValue::Immediate(u64::MAX - 2), 4))
        );
        assert_eq!(
            decoded(&[0x81, 0x08, 0, 1, 0, 0]),
            Some((StoreOp::Or, 4, StoreValue::Immediate(0x100), 6))
        );
        // or %rcx, (%rax); and %ecx, (%rax); xchg %al, (%rbx)
        assert_eq!(
            decoded(&[0x48, 0x09, 0x08]),
            Some((StoreOp::Or, 8, StoreValue::Register(1), 3))
        );
        assert_eq!(
            decoded(&[0x21, 0x08]),
            Some((StoreOp::And, 4, StoreValue::Register(1), 2))
        );
        assert_eq!(
            decoded(&[0x86, 0x03]),
            Some((StoreOp::Xchg, 1, StoreValue::Register(0), 2))
        );
        // Other group-1 operations (add, sub, xor, cmp...) are not stores
        // emulated here; nor is an immediate cut short.
        assert_eq!(decoded(&[0x80, 0x07, 1]), None, "add");
        assert_eq!(decoded(&[0x83, 0x3f, 1]), None, "cmp");
        assert_eq!(decoded(&[0x81, 0x08, 0, 1]), None);
        assert_eq!(
            decoded(&[0xc7, 0x00, 0, 0, 0, 0]).map(|d| d.0),
            Some(StoreOp::Mov)
        );
        assert_eq!(
            decoded(&[0xc7, 0x40, 0x08, 0, 0, 0, 0]).map(|d| d.0),
            Some(StoreOp::Mov)
        );
        assert_eq!(decoded(&[0xc7, 0x08 | 0x10, 0, 0, 0, 0]), None, "c7 /3");
    }

    #[test]
    fn logic_flags_follow_the_result() {
        assert_eq!(logic_flags(0, 8), (1 << 6) | (1 << 2));
        assert_eq!(logic_flags(0x100, 1), (1 << 6) | (1 << 2));
        assert_eq!(logic_flags(0x80, 1), 1 << 7);
        assert_eq!(logic_flags(1 << 63, 8), (1 << 7) | (1 << 2));
        assert_eq!(logic_flags(0x8000_0003, 4), (1 << 7) | (1 << 2));
        assert_eq!(logic_flags(0x7, 2), 0);
    }

    #[test]
    fn not_stores() {
        assert_eq!(
            decode_store(&[0x48, 0x89, 0xc8]),
            None,
            "register destination"
        );
        assert_eq!(decode_store(&[0x48, 0x8b, 0x08]), None, "a load");
        assert_eq!(
            decode_store(&[0xc7, 0x48, 0x08]),
            None,
            "truncated immediate"
        );
        assert_eq!(decode_store(&[]), None);
    }

    #[test]
    fn made_up_msrs_as_xen_4_17_answers_on_amd() {
        let amd = MsrView {
            vcpu: 0,
            intel_or_amd: true,
            amd: true,
        };
        let read = |index| made_up_msr(index, amd);
        assert_eq!(read(msr::APIC_BASE), Some(0xfee0_0900));
        assert_eq!(
            made_up_msr(msr::APIC_BASE, MsrView { vcpu: 1, ..amd }),
            Some(0xfee0_0800)
        );
        assert_eq!(read(msr::MCG_CAP), Some(2));
        assert_eq!(read(msr::MCG_STATUS), Some(0));
        assert_eq!(read(msr::MCG_CTL), Some(0));
        assert_eq!(read(0x400), Some(u64::MAX));
        assert_eq!(read(0x401), Some(0));
        assert_eq!(read(0x404), Some(u64::MAX));
        assert_eq!(read(0x408), Some(0), "a bank past the two");
        assert_eq!(read(0x47f), Some(0));
        assert_eq!(read(0x480), None);
        assert_eq!(read(0x280), Some(0));
        assert_eq!(read(msr::MISC_ENABLE), Some(0x80_1801));
        assert_eq!(read(msr::PLATFORM_INFO), Some(0));
        assert_eq!(read(msr::HWCR), Some(0));
        assert_eq!(made_up_msr(msr::HWCR, MsrView { amd: false, ..amd }), None);
        assert_eq!(read(0x48), None, "SPEC_CTRL is not offered");
        assert!(ignored_msr_write(msr::MCG_STATUS));
        assert!(ignored_msr_write(0x401));
        assert!(!ignored_msr_write(msr::APIC_BASE));
    }
}
