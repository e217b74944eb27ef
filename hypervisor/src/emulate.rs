//! Instructions the hypervisor emulates for a PV guest, decoded from the
//! bytes at the faulting RIP by `iced-x86` (a maintained `no_std`
//! decoder, so every prefix, REX and addressing form is read as the CPU
//! reads it), and the policy for each.
//!
//! Privileged instructions (Xen's PV emulation, narrowed to what a 64-bit
//! PV kernel needs), after a #GP:
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
//! | `ud2; .ascii "xen"; cpuid` | CPUID with the guest policy (see `arch`); the signature is exact, as Xen's: `cpuid` right after it, without prefixes |
//! | `cli`, `sti` | no-ops when the virtual IOPL (`PHYSDEVOP_set_iopl`) is at least 1, as on Xen; #GP otherwise |
//! | `in`, `out` (byte, word, dword; port in DX or an immediate) | as `crate::ioport` decides (Xen's rules) |
//! | everything else (`hlt`, `lgdt`, `lidt`, `ins`/`outs`, other CRs, bytes the decoder finds invalid) | the #GP goes to the guest |
//!
//! From ring 3 nothing is emulated except the forced-emulation CPUID, which
//! Xen also allows from user mode, `cli`/`sti` with a virtual IOPL
//! of 3, and `in`/`out` that the virtual IOPL or the I/O bitmap allows.
//!
//! Stores that fault on a page the kernel maps read-only (writable page
//! tables, and the hardware domain's read-only device memory), after a
//! #PF: [`decode_store`] and [`Store::complete`], below.
#![forbid(unsafe_code)]

use dom0_abi::cpu::XEN_EMULATE_PREFIX;
use iced_x86::{
    Code, Decoder, DecoderOptions, Instruction, MemorySize, Mnemonic, OpKind, Register,
};

/// A decoded instruction this module knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Insn {
    /// `mov %crN, reg`.
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

/// Builds the decoder's tables, which `iced-x86` makes on the heap (about
/// 80 KiB in some 2000 allocations) at its first decode: called once at
/// boot, after the heap and before any domain, so that no guest's fault
/// pays for them or allocates in the middle of its emulation.
pub fn prepare_decoder() {
    let _ = decode_one(&[0x90], 64, 0);
}

/// Decodes one instruction of code size `bitness` (64, or 32 for
/// compatibility-mode user code) at `rip`; `None` if the bytes are not a
/// whole valid instruction (cut short, a `lock` where it is not allowed,
/// an undefined opcode).
fn decode_one(bytes: &[u8], bitness: u32, rip: u64) -> Option<Instruction> {
    let bitness = if bitness == 32 { 32 } else { 64 };
    let insn = Decoder::with_ip(bitness, bytes, rip, DecoderOptions::NONE).decode();
    (!insn.is_invalid()).then_some(insn)
}

/// Decodes the bytes at a faulting RIP, for code of size `bitness` (64,
/// or 32 in compatibility mode). Only what the table above emulates is
/// recognised; anything else is `None` (the guest gets the fault).
pub fn decode(bytes: &[u8], bitness: u32) -> Option<Decoded> {
    if bytes.starts_with(&XEN_EMULATE_PREFIX) {
        return (bytes.get(5..7) == Some(&[0x0f, 0xa2][..])).then_some(Decoded {
            insn: Insn::ForcedCpuid,
            len: 7,
        });
    }
    let i = decode_one(bytes, bitness, 0)?;
    let gpr = |op| Gpr::of(i.op_register(op)).map(|g| g.number);
    let special = |op| {
        let r = i.op_register(op);
        [Register::CR0, Register::DR0]
            .into_iter()
            .find_map(|first| numbered(r, first, 16))
    };
    let insn = match i.code() {
        Code::Mov_r64_cr | Code::Mov_r32_cr => Insn::ReadCr {
            cr: special(1)?,
            reg: gpr(0)?,
        },
        Code::Mov_cr_r64 | Code::Mov_cr_r32 => Insn::WriteCr {
            cr: special(0)?,
            reg: gpr(1)?,
        },
        Code::Mov_r64_dr | Code::Mov_r32_dr => Insn::ReadDr {
            dr: special(1)?,
            reg: gpr(0)?,
        },
        Code::Mov_dr_r64 | Code::Mov_dr_r32 => Insn::WriteDr {
            dr: special(0)?,
            reg: gpr(1)?,
        },
        Code::Clts => Insn::Clts,
        Code::Wbinvd => Insn::Wbinvd,
        Code::Rdmsr => Insn::Rdmsr,
        Code::Wrmsr => Insn::Wrmsr,
        Code::Xsetbv => Insn::Xsetbv,
        Code::Cli | Code::Sti => Insn::CliSti,
        code => Insn::Io(port_io(&i, code)?),
    };
    Some(Decoded {
        insn,
        len: i.len() as u64,
    })
}

/// `in`/`out` with the port in an immediate or DX (the string forms are
/// not emulated).
fn port_io(i: &Instruction, code: Code) -> Option<PortIo> {
    let (bytes, write, immediate) = match code {
        Code::In_AL_imm8 => (1, false, true),
        Code::In_AX_imm8 => (2, false, true),
        Code::In_EAX_imm8 => (4, false, true),
        Code::In_AL_DX => (1, false, false),
        Code::In_AX_DX => (2, false, false),
        Code::In_EAX_DX => (4, false, false),
        Code::Out_imm8_AL => (1, true, true),
        Code::Out_imm8_AX => (2, true, true),
        Code::Out_imm8_EAX => (4, true, true),
        Code::Out_DX_AL => (1, true, false),
        Code::Out_DX_AX => (2, true, false),
        Code::Out_DX_EAX => (4, true, false),
        _ => return None,
    };
    Some(PortIo {
        port: immediate.then(|| u16::from(i.immediate8())),
        bytes,
        write,
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

    fn d(bytes: &[u8]) -> Option<Decoded> {
        decode(bytes, 64)
    }

    fn decoded(insn: Insn, len: u64) -> Option<Decoded> {
        Some(Decoded { insn, len })
    }

    #[test]
    fn decodes_what_it_emulates() {
        assert_eq!(
            d(&[0x0f, 0x20, 0xd8]),
            decoded(Insn::ReadCr { cr: 3, reg: 0 }, 3)
        );
        assert_eq!(
            d(&[0x41, 0x0f, 0x20, 0xc3]),
            decoded(Insn::ReadCr { cr: 0, reg: 11 }, 4)
        );
        assert_eq!(
            d(&[0x0f, 0x22, 0xc1]),
            decoded(Insn::WriteCr { cr: 0, reg: 1 }, 3)
        );
        assert_eq!(
            d(&[0x44, 0x0f, 0x22, 0xc7]),
            decoded(Insn::WriteCr { cr: 8, reg: 7 }, 4),
            "REX.R reaches CR8"
        );
        assert_eq!(d(&[0x44, 0x0f, 0x22, 0xe7]), None, "there is no CR12");
        assert_eq!(
            d(&[0x0f, 0x21, 0xf8]),
            decoded(Insn::ReadDr { dr: 7, reg: 0 }, 3)
        );
        assert_eq!(
            d(&[0x41, 0x0f, 0x23, 0xc6]),
            decoded(Insn::WriteDr { dr: 0, reg: 14 }, 4)
        );
        // The CPU ignores the ModRM mode of a control-register move.
        assert_eq!(
            d(&[0x0f, 0x20, 0x18]),
            decoded(Insn::ReadCr { cr: 3, reg: 0 }, 3)
        );
        assert_eq!(d(&[0x0f, 0x06]), decoded(Insn::Clts, 2));
        assert_eq!(d(&[0x0f, 0x09]), decoded(Insn::Wbinvd, 2));
        assert_eq!(d(&[0x0f, 0x32]), decoded(Insn::Rdmsr, 2));
        assert_eq!(d(&[0x0f, 0x30]), decoded(Insn::Wrmsr, 2));
        assert_eq!(d(&[0x0f, 0x01, 0xd1]), decoded(Insn::Xsetbv, 3));
        assert_eq!(
            d(&[0x0f, 0x0b, 0x78, 0x65, 0x6e, 0x0f, 0xa2]),
            decoded(Insn::ForcedCpuid, 7)
        );
    }

    #[test]
    fn in_and_out() {
        let io = |port, bytes, write, len| decoded(Insn::Io(PortIo { port, bytes, write }), len);
        assert_eq!(d(&[0xe4, 0x81]), io(Some(0x81), 1, false, 2));
        assert_eq!(d(&[0xe5, 0x70]), io(Some(0x70), 4, false, 2));
        assert_eq!(d(&[0x66, 0xe5, 0x70]), io(Some(0x70), 2, false, 3));
        assert_eq!(d(&[0xe6, 0x80]), io(Some(0x80), 1, true, 2));
        assert_eq!(d(&[0xe7, 0x80]), io(Some(0x80), 4, true, 2));
        assert_eq!(d(&[0xec]), io(None, 1, false, 1));
        assert_eq!(d(&[0x66, 0xed]), io(None, 2, false, 2));
        assert_eq!(d(&[0xed]), io(None, 4, false, 1));
        assert_eq!(d(&[0xee]), io(None, 1, true, 1));
        // REX.W overrides the operand-size prefix: a dword, as on the CPU.
        assert_eq!(d(&[0x66, 0x48, 0xef]), io(None, 4, true, 3));
        assert_eq!(d(&[0x66, 0x40, 0xef]), io(None, 2, true, 3));
        assert_eq!(d(&[0x48, 0xef]), io(None, 4, true, 2));
        // In compatibility mode 0x48 is `dec eax`, not a REX prefix.
        assert_eq!(decode(&[0x48, 0xef], 32), None);
        assert_eq!(decode(&[0x66, 0xef], 32), io(None, 2, true, 2));
        // An immediate cut short, and the string forms, are not decoded.
        assert_eq!(d(&[0xe4]), None);
        assert_eq!(d(&[0x6c]), None);
        assert_eq!(d(&[0x6f]), None);
    }

    #[test]
    fn cli_and_sti() {
        for op in [0xfa, 0xfb] {
            assert_eq!(d(&[op, 0x90]), decoded(Insn::CliSti, 1));
            // A REX prefix changes nothing for them, as on the CPU.
            assert_eq!(d(&[0x48, op]), decoded(Insn::CliSti, 2));
        }
    }

    #[test]
    fn refuses_the_rest() {
        for bytes in [
            &[0xf4][..],
            &[0x0f, 0x01, 0x10],
            &[0x6c],
            &[0x0f, 0x0b, 0x78, 0x65, 0x6e, 0x90],
            &[0x0f, 0x0b, 0x78, 0x65, 0x6e, 0x66, 0x0f, 0xa2],
            &[0xf0, 0x0f, 0x06],
            &[0x0f, 0x20],
        ] {
            assert_eq!(d(bytes), None, "{bytes:x?}");
        }
        assert_eq!(d(&[]), None);
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

/// The vCPU state a store's emulation reads and changes: only the
/// registers an instruction names are read or written.
pub trait Registers {
    /// General register `number` (0 = RAX ... 15 = R15).
    fn gpr(&mut self, number: u8) -> u64;
    /// Sets general register `number`.
    fn set_gpr(&mut self, number: u8, value: u64);
    /// RFLAGS.
    fn rflags(&self) -> u64;
    /// Sets RFLAGS.
    fn set_rflags(&mut self, value: u64);
    /// The FS base (`fs`) or the active GS base, for a segment prefix.
    fn segment_base(&self, fs: bool) -> u64;
}

/// The vCPU state as plain values (host tests; anything that has no
/// registers of its own).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cpu {
    /// The general registers by encoding number (0 = RAX ... 15 = R15).
    pub gprs: [u64; 16],
    /// RFLAGS.
    pub rflags: u64,
    /// The FS base (for an `fs` segment prefix).
    pub fs_base: u64,
    /// The active GS base (for a `gs` segment prefix).
    pub gs_base: u64,
}

impl Registers for Cpu {
    fn gpr(&mut self, number: u8) -> u64 {
        self.gprs[usize::from(number & 15)]
    }
    fn set_gpr(&mut self, number: u8, value: u64) {
        self.gprs[usize::from(number & 15)] = value;
    }
    fn rflags(&self) -> u64 {
        self.rflags
    }
    fn set_rflags(&mut self, value: u64) {
        self.rflags = value;
    }
    fn segment_base(&self, fs: bool) -> u64 {
        if fs { self.fs_base } else { self.gs_base }
    }
}

/// A general-register operand: which register, how many bytes, and
/// whether it is AH, CH, DH or BH.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gpr {
    /// 0 = RAX ... 15 = R15.
    pub number: u8,
    /// 1, 2, 4 or 8.
    pub bytes: u8,
    /// Bits 8-15 of the register.
    pub high: bool,
}

impl Gpr {
    /// The general register the decoder names, if `r` is one.
    fn of(r: Register) -> Option<Gpr> {
        // AL CL DL BL, AH CH DH BH, SPL BPL SIL DIL, R8L-R15L; then the
        // 16 words, dwords and qwords (the assertions below check it).
        let n = numbered(r, Register::AL, 20 + 3 * 16)?;
        Some(match n {
            0..20 => Gpr {
                number: if n < 4 { n } else { n - 4 },
                bytes: 1,
                high: (4..8).contains(&n),
            },
            _ => Gpr {
                number: (n - 20) % 16,
                bytes: 2 << ((n - 20) / 16),
                high: false,
            },
        })
    }

    /// The register's value, zero-extended.
    #[must_use]
    pub fn read(self, cpu: &mut impl Registers) -> u64 {
        let shift = if self.high { 8 } else { 0 };
        (cpu.gpr(self.number) >> shift) & mask(self.bytes)
    }

    /// Writes `value` as an instruction of this operand size does: a byte
    /// or a word keeps the register's other bits, a dword clears the upper
    /// half.
    pub fn write(self, cpu: &mut impl Registers, value: u64) {
        let reg = cpu.gpr(self.number);
        let new = match self.bytes {
            1 | 2 => {
                let shift = if self.high { 8 } else { 0 };
                let field = mask(self.bytes) << shift;
                (reg & !field) | ((value << shift) & field)
            }
            4 => value & 0xffff_ffff,
            _ => value,
        };
        cpu.set_gpr(self.number, new);
    }
}

/// `r`'s place in the run of `count` registers from `first` (the
/// decoder's `Register` numbers each class of registers in order, as the
/// assertions below check).
fn numbered(r: Register, first: Register, count: u8) -> Option<u8> {
    let n = (r as u32).checked_sub(first as u32)?;
    u8::try_from(n).ok().filter(|n| *n < count)
}

/// Whether `first` to `last` are `count` registers in a row.
const fn run(first: Register, last: Register, count: u32) -> bool {
    last as u32 - first as u32 + 1 == count
}

const _: () = {
    assert!(
        run(Register::AL, Register::R15L, 20) && Register::AH as u32 == Register::AL as u32 + 4
    );
    assert!(Register::SPL as u32 == Register::AL as u32 + 8);
    assert!(run(Register::AX, Register::R15W, 16) && run(Register::EAX, Register::R15D, 16));
    assert!(
        run(Register::RAX, Register::R15, 16) && Register::RDI as u32 == Register::RAX as u32 + 7
    );
    assert!(run(Register::CR0, Register::CR15, 16) && run(Register::DR0, Register::DR15, 16));
};

/// The low `bytes` bytes.
const fn mask(bytes: u8) -> u64 {
    if bytes >= 8 {
        u64::MAX
    } else {
        (1 << (8 * bytes as u32)) - 1
    }
}

/// The arithmetic flags (CF, PF, AF, ZF, SF, OF).
pub const ARITHMETIC_FLAGS: u64 = 0x8d5;
/// The carry flag.
pub const CF: u64 = 1 << 0;
/// The zero flag.
pub const ZF: u64 = 1 << 6;
const PF: u64 = 1 << 2;
const AF: u64 = 1 << 4;
const SF: u64 = 1 << 7;
const OF: u64 = 1 << 11;

/// A read-modify-write operation on a memory operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alu {
    /// `add` (also `xadd`).
    Add,
    /// `adc`.
    Adc,
    /// `sub`.
    Sub,
    /// `sbb`.
    Sbb,
    /// `and`.
    And,
    /// `or`.
    Or,
    /// `xor`.
    Xor,
    /// `inc`.
    Inc,
    /// `dec`.
    Dec,
    /// `neg`.
    Neg,
    /// `not`.
    Not,
    /// `bts`: sets the bit.
    Bts,
    /// `btr`: clears the bit.
    Btr,
    /// `btc`: complements the bit.
    Btc,
}

/// A read-modify-write: the operation, its source operand (the bit
/// number for `bts`/`btr`/`btc`) and the carry flag it starts from
/// (`adc`, `sbb`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rmw {
    /// The operation.
    pub alu: Alu,
    /// The source operand.
    pub operand: u64,
    /// CF before the instruction.
    pub carry: bool,
}

/// What a read-modify-write makes of the old bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AluResult {
    /// The new bytes.
    pub value: u64,
    /// The arithmetic flags it leaves (within `written`).
    pub flags: u64,
    /// The flags it sets or clears; the others keep their value
    /// (`inc`/`dec` keep CF, `bt*` all but CF, `not` all; flags the
    /// manuals call undefined are left unchanged, except AF after a logic
    /// operation, which is cleared as the CPU does).
    pub written: u64,
}

/// ZF, SF and PF of `result` (`width` bytes).
const fn result_flags(result: u64, width: u8) -> u64 {
    let mut flags = 0;
    if (result & 0xff).count_ones().is_multiple_of(2) {
        flags |= PF;
    }
    if result & mask(width) == 0 {
        flags |= ZF;
    }
    if result >> (8 * width as u32 - 1) & 1 != 0 {
        flags |= SF;
    }
    flags
}

impl Rmw {
    /// The operation on `old` (`width` bytes: 1, 2, 4 or 8).
    #[must_use]
    pub fn apply(self, old: u64, width: u8) -> AluResult {
        let width = match width {
            1 | 2 | 4 => width,
            _ => 8,
        };
        let m = mask(width);
        let bits = 8 * u32::from(width);
        let sign = 1u64 << (bits - 1);
        let (a, b) = (old & m, self.operand & m);
        let carry = u64::from(self.carry);
        let arithmetic = |r: u64, cf: bool, overflow: u64, x: u64, y: u64| {
            let mut flags = result_flags(r, width) | ((x ^ y ^ r) & AF);
            if cf {
                flags |= CF;
            }
            if overflow & sign != 0 {
                flags |= OF;
            }
            flags
        };
        let (value, flags, written) = match self.alu {
            Alu::Add | Alu::Adc | Alu::Inc => {
                let (y, c) = match self.alu {
                    Alu::Inc => (1, 0),
                    Alu::Adc => (b, carry),
                    _ => (b, 0),
                };
                let r = a.wrapping_add(y).wrapping_add(c) & m;
                let cf = u128::from(a) + u128::from(y) + u128::from(c) > u128::from(m);
                let written = if self.alu == Alu::Inc {
                    ARITHMETIC_FLAGS & !CF
                } else {
                    ARITHMETIC_FLAGS
                };
                (r, arithmetic(r, cf, (a ^ r) & (y ^ r), a, y), written)
            }
            Alu::Sub | Alu::Sbb | Alu::Dec | Alu::Neg => {
                let (x, y, c) = match self.alu {
                    Alu::Dec => (a, 1, 0),
                    Alu::Neg => (0, a, 0),
                    Alu::Sbb => (a, b, carry),
                    _ => (a, b, 0),
                };
                let r = x.wrapping_sub(y).wrapping_sub(c) & m;
                let cf = u128::from(x) < u128::from(y) + u128::from(c);
                let written = if self.alu == Alu::Dec {
                    ARITHMETIC_FLAGS & !CF
                } else {
                    ARITHMETIC_FLAGS
                };
                (r, arithmetic(r, cf, (x ^ y) & (x ^ r), x, y), written)
            }
            Alu::And | Alu::Or | Alu::Xor => {
                let r = match self.alu {
                    Alu::And => a & b,
                    Alu::Or => a | b,
                    _ => a ^ b,
                };
                (r, result_flags(r, width), ARITHMETIC_FLAGS)
            }
            Alu::Not => (!a & m, 0, 0),
            Alu::Bts | Alu::Btr | Alu::Btc => {
                let bit = 1u64 << (self.operand & u64::from(bits - 1));
                let r = match self.alu {
                    Alu::Bts => a | bit,
                    Alu::Btr => a & !bit,
                    _ => a ^ bit,
                };
                (r, if a & bit != 0 { CF } else { 0 }, CF)
            }
        };
        AluResult {
            value,
            flags,
            written,
        }
    }
}

/// How a store makes the destination's new bytes from its old ones: what
/// the memory core validates and applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Update {
    /// The value, whatever the old bytes were (`mov`, `xchg`).
    Write(u64),
    /// The value, if the old bytes equal `expected`; else nothing is
    /// written (`cmpxchg`, `cmpxchg8b`).
    CompareExchange {
        /// What the old bytes must be.
        expected: u64,
        /// The new bytes.
        value: u64,
    },
    /// A read-modify-write of the old bytes.
    Modify(Rmw),
}

impl Update {
    /// The new bytes (`width` of them) from `old`: for a compare-exchange,
    /// the bytes it writes if the compare succeeds.
    #[must_use]
    pub fn new_bytes(self, old: u64, width: u8) -> u64 {
        let value = match self {
            Update::Write(value) | Update::CompareExchange { value, .. } => value,
            Update::Modify(rmw) => rmw.apply(old, width).value,
        };
        value & mask(width)
    }

    /// What a compare-exchange expects.
    #[must_use]
    pub const fn expected(self) -> Option<u64> {
        match self {
            Update::CompareExchange { expected, .. } => Some(expected),
            _ => None,
        }
    }
}

/// What the instruction does to registers and flags once the old bytes
/// are known.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum After {
    /// Nothing (`mov`).
    Nothing,
    /// `xchg`: the register gets the old bytes.
    Exchange(Gpr),
    /// A read-modify-write: its flags; for `xadd` the register gets the
    /// old bytes.
    Modify(Option<Gpr>),
    /// `cmpxchg`: the flags of comparing the accumulator with the old
    /// bytes; on a mismatch the accumulator gets them.
    CompareExchange,
    /// `cmpxchg8b`: ZF; on a mismatch EDX:EAX gets the old bytes.
    CompareExchange8b,
}

/// A store to memory, as the emulation of a write fault needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Store {
    /// The linear address written (segment base and any addressing mode
    /// applied, as the CPU computes it).
    pub addr: u64,
    /// Bytes written: 1, 2, 4 or 8.
    pub width: u8,
    /// How the new bytes come about.
    pub update: Update,
    /// What happens to registers and flags.
    pub after: After,
    /// Instruction length.
    pub len: u64,
}

impl Store {
    /// Whether the instruction reads its destination too (all but `mov`).
    #[must_use]
    pub const fn reads(&self) -> bool {
        !matches!(self.after, After::Nothing)
    }

    /// Completes the instruction in `cpu` (registers and flags; not RIP)
    /// given the destination's `old` bytes, once the memory core applied
    /// [`Store::update`] (or found a compare-exchange's mismatch).
    pub fn complete(&self, old: u64, cpu: &mut impl Registers) {
        let old = old & mask(self.width);
        match self.after {
            After::Nothing => {}
            After::Exchange(reg) => reg.write(cpu, old),
            After::Modify(reg) => {
                if let Update::Modify(rmw) = self.update {
                    set_flags(cpu, rmw.apply(old, self.width));
                }
                if let Some(reg) = reg {
                    reg.write(cpu, old);
                }
            }
            After::CompareExchange => {
                let accumulator = Gpr {
                    number: 0,
                    bytes: self.width,
                    high: false,
                };
                let expected = accumulator.read(cpu);
                let compare = Rmw {
                    alu: Alu::Sub,
                    operand: old,
                    carry: false,
                };
                set_flags(cpu, compare.apply(expected, self.width));
                if expected != old {
                    accumulator.write(cpu, old);
                }
            }
            After::CompareExchange8b => {
                let dword = |number| Gpr {
                    number,
                    bytes: 4,
                    high: false,
                };
                let (eax, edx) = (dword(0), dword(2));
                let equal = (edx.read(cpu) << 32) | eax.read(cpu) == old;
                let rflags = cpu.rflags();
                cpu.set_rflags(if equal { rflags | ZF } else { rflags & !ZF });
                if !equal {
                    eax.write(cpu, old & 0xffff_ffff);
                    edx.write(cpu, old >> 32);
                }
            }
        }
    }
}

/// Sets the flags `r` writes.
fn set_flags(cpu: &mut impl Registers, r: AluResult) {
    let rflags = cpu.rflags();
    cpu.set_rflags((rflags & !r.written) | (r.flags & r.written));
}

/// A register's value, or a segment's base, as an address computation
/// reads it (64-bit mode: ES, CS, SS and DS have base 0).
fn address_register(cpu: &mut impl Registers, r: Register) -> Option<u64> {
    match r {
        Register::ES | Register::CS | Register::SS | Register::DS => Some(0),
        Register::FS => Some(cpu.segment_base(true)),
        Register::GS => Some(cpu.segment_base(false)),
        _ => Gpr::of(r).map(|g| g.read(cpu)),
    }
}

/// Decodes the 64-bit instruction at `rip` (its bytes in `bytes`) as a
/// store to memory, reading the registers it uses from `cpu`: any `mov`
/// to memory from a general register or an immediate (and `movnti`),
/// `xchg`, `cmpxchg`, `cmpxchg8b`, `xadd`, `add`, `adc`, `sub`, `sbb`,
/// `and`, `or`, `xor`, `inc`, `dec`, `neg`, `not`, `bts`, `btr` and
/// `btc` (a bit offset in a register reaches the word that holds the bit,
/// as on the CPU), with any prefixes the CPU accepts (`lock`, segment,
/// operand size, REX) and any addressing mode. Anything else, including
/// `cmpxchg16b` (two entries at once) and the string instructions, is
/// `None`: the fault goes to the guest.
#[must_use]
pub fn decode_store(bytes: &[u8], rip: u64, cpu: &mut impl Registers) -> Option<Store> {
    let i = decode_one(bytes, 64, rip)?;
    if i.op_count() == 0 || i.op0_kind() != OpKind::Memory {
        return None;
    }
    let width: u8 = match i.memory_size() {
        MemorySize::UInt8 | MemorySize::Int8 => 1,
        MemorySize::UInt16 | MemorySize::Int16 => 2,
        MemorySize::UInt32 | MemorySize::Int32 => 4,
        MemorySize::UInt64 | MemorySize::Int64 => 8,
        _ => return None,
    };
    let mut addr = i.virtual_address(0, 0, |r, _, _| address_register(cpu, r))?;
    let register = (i.op_count() > 1 && i.op1_kind() == OpKind::Register)
        .then(|| Gpr::of(i.op1_register()))
        .flatten();
    // The second operand's value: a general register or an immediate.
    let source = match register {
        Some(reg) => Some(reg.read(cpu)),
        None => i.try_immediate(1).ok(),
    };
    let carry = cpu.rflags() & CF != 0;
    let modify = |alu, operand| {
        Update::Modify(Rmw {
            alu,
            operand,
            carry,
        })
    };
    let alu = match i.mnemonic() {
        Mnemonic::Add => Some(Alu::Add),
        Mnemonic::Adc => Some(Alu::Adc),
        Mnemonic::Sub => Some(Alu::Sub),
        Mnemonic::Sbb => Some(Alu::Sbb),
        Mnemonic::And => Some(Alu::And),
        Mnemonic::Or => Some(Alu::Or),
        Mnemonic::Xor => Some(Alu::Xor),
        Mnemonic::Inc => Some(Alu::Inc),
        Mnemonic::Dec => Some(Alu::Dec),
        Mnemonic::Neg => Some(Alu::Neg),
        Mnemonic::Not => Some(Alu::Not),
        Mnemonic::Bts => Some(Alu::Bts),
        Mnemonic::Btr => Some(Alu::Btr),
        Mnemonic::Btc => Some(Alu::Btc),
        _ => None,
    };
    let (update, after) = match (i.mnemonic(), alu) {
        (Mnemonic::Mov | Mnemonic::Movnti, _) => (Update::Write(source?), After::Nothing),
        (Mnemonic::Xchg, _) => (Update::Write(source?), After::Exchange(register?)),
        (Mnemonic::Xadd, _) => (modify(Alu::Add, source?), After::Modify(Some(register?))),
        (Mnemonic::Cmpxchg, _) => {
            register?;
            let accumulator = Gpr {
                number: 0,
                bytes: width,
                high: false,
            };
            let update = Update::CompareExchange {
                expected: accumulator.read(cpu),
                value: source?,
            };
            (update, After::CompareExchange)
        }
        (Mnemonic::Cmpxchg8b, _) => {
            let mut low = |n| cpu.gpr(n) & 0xffff_ffff;
            let update = Update::CompareExchange {
                expected: (low(2) << 32) | low(0),
                value: (low(1) << 32) | low(3),
            };
            (update, After::CompareExchange8b)
        }
        (_, Some(alu @ (Alu::Bts | Alu::Btr | Alu::Btc))) => {
            let offset = source?;
            if register.is_some() {
                // A register offset is signed and may leave the operand:
                // the CPU accesses the word that holds the bit.
                let shift = 64 - 8 * u32::from(width);
                let signed = (offset << shift).cast_signed() >> shift;
                let words = signed >> (3 + width.trailing_zeros());
                addr = addr.wrapping_add(words.wrapping_mul(i64::from(width)).cast_unsigned());
            }
            (modify(alu, offset), After::Modify(None))
        }
        (_, Some(alu @ (Alu::Inc | Alu::Dec | Alu::Neg | Alu::Not))) => {
            (modify(alu, 0), After::Modify(None))
        }
        (_, Some(alu)) => (modify(alu, source?), After::Modify(None)),
        (_, None) => return None,
    };
    Some(Store {
        addr,
        width,
        update,
        after,
        len: i.len() as u64,
    })
}

#[cfg(test)]
mod store_tests {
    use super::*;

    const RIP: u64 = 0xffff_ffff_8000_1000;
    const RDI: u64 = 0xffff_8000_0020_3008;

    /// A vCPU with RDI pointing at the entry, recognisable values in the
    /// other registers, and `rflags`.
    fn cpu(rflags: u64) -> Cpu {
        let mut gprs = [0; 16];
        for (n, reg) in gprs.iter_mut().enumerate() {
            *reg = 0x1111_1111_1111_1111u64.wrapping_mul(n as u64 + 1);
        }
        gprs[7] = RDI;
        Cpu {
            gprs,
            rflags,
            fs_base: 0x10_0000,
            gs_base: 0x20_0000,
        }
    }

    /// Runs `bytes` on a memory operand holding `old`, as the memory core
    /// and the emulation do: the store, the new memory (`None`: a failed
    /// compare left it), and the vCPU after.
    fn run(bytes: &[u8], mut cpu: Cpu, old: u64) -> (Store, Option<u64>, Cpu) {
        let store = decode_store(bytes, RIP, &mut cpu).expect("a store");
        let m = mask(store.width);
        let written = match store.update.expected() {
            Some(expected) if expected & m != old & m => None,
            _ => Some(store.update.new_bytes(old, store.width)),
        };
        store.complete(old, &mut cpu);
        (store, written, cpu)
    }

    #[test]
    fn movs_of_every_form() {
        let c = cpu(0x202);
        let forms: &[(&[u8], u64, u8, u64)] = &[
            // mov %rcx, (%rdi)
            (&[0x48, 0x89, 0x0f], RDI, 8, c.gprs[1]),
            // mov %r9d, 0x10(%rdi)
            (
                &[0x44, 0x89, 0x4f, 0x10],
                RDI + 0x10,
                4,
                c.gprs[9] & 0xffff_ffff,
            ),
            // mov %cx, (%rdi,%rax,1) via SIB
            (
                &[0x66, 0x89, 0x0c, 0x07],
                RDI.wrapping_add(c.gprs[0]),
                2,
                c.gprs[1] & 0xffff,
            ),
            // mov %ah, (%rdi): the high byte
            (&[0x88, 0x27], RDI, 1, (c.gprs[0] >> 8) & 0xff),
            // mov %sil, (%rdi): REX makes 6 SIL, not DH
            (&[0x40, 0x88, 0x37], RDI, 1, c.gprs[6] & 0xff),
            // movq $-1, 8(%rdi): a sign-extended imm32
            (
                &[0x48, 0xc7, 0x47, 0x08, 0xff, 0xff, 0xff, 0xff],
                RDI + 8,
                8,
                u64::MAX,
            ),
            // movb $5, %gs:(%rdi) and %fs:, %ds:, %cs: prefixes
            (&[0x65, 0xc6, 0x07, 5], RDI + 0x20_0000, 1, 5),
            (&[0x64, 0xc6, 0x07, 5], RDI + 0x10_0000, 1, 5),
            (&[0x3e, 0xc6, 0x07, 5], RDI, 1, 5),
            (&[0x2e, 0xc6, 0x07, 5], RDI, 1, 5),
            // mov %rax, 0x100(%rip)
            (
                &[0x48, 0x89, 0x05, 0, 1, 0, 0],
                RIP + 7 + 0x100,
                8,
                c.gprs[0],
            ),
            // movnti %rdx, (%rdi)
            (&[0x48, 0x0f, 0xc3, 0x17], RDI, 8, c.gprs[2]),
            // movabs %rax, 0xffff800000001000 (moffs)
            (
                &[0x48, 0xa3, 0, 0x10, 0, 0, 0, 0x80, 0xff, 0xff],
                0xffff_8000_0000_1000,
                8,
                c.gprs[0],
            ),
        ];
        for &(bytes, addr, width, value) in forms {
            let (s, written, after) = run(bytes, c, 0x1234);
            assert_eq!(
                (s.addr, s.width, s.len, written, after),
                (addr, width, bytes.len() as u64, Some(value), c),
                "{bytes:x?}"
            );
        }
    }

    #[test]
    fn exchanges() {
        let c = cpu(0x202);
        // xchg %rdx, (%rdi): ptep_get_and_clear.
        let (_, written, after) = run(&[0x48, 0x87, 0x17], c, 0x8000_0000_1234_5067);
        assert_eq!(written, Some(c.gprs[2]));
        assert_eq!(after.gprs[2], 0x8000_0000_1234_5067);
        // xchg %ch, (%rdi) keeps the rest of RCX; a dword clears the upper half.
        let (_, _, after) = run(&[0x86, 0x2f], c, 0xab);
        assert_eq!(after.gprs[1], (c.gprs[1] & !0xff00) | 0xab00);
        let (_, _, after) = run(&[0x87, 0x0f], c, 0x1_0000_0042);
        assert_eq!(after.gprs[1], 0x42);
        // lock xadd %r8, (%rdi)
        let (_, written, after) = run(&[0xf0, 0x4c, 0x0f, 0xc1, 0x07], c, 5);
        assert_eq!(written, Some(c.gprs[8] + 5));
        assert_eq!(after.gprs[8], 5);
    }

    #[test]
    fn compare_exchanges() {
        let old = 0x1234_5067;
        let mut c = cpu(0x202);
        c.gprs[0] = old;
        // lock cmpxchg %rdx, (%rdi): equal, written, ZF set, RAX kept.
        let bytes = [0xf0, 0x48, 0x0f, 0xb1, 0x17];
        let (s, written, after) = run(&bytes, c, old);
        assert_eq!((s.update.expected(), written), (Some(old), Some(c.gprs[2])));
        assert_eq!(
            (after.gprs[0], after.rflags & ARITHMETIC_FLAGS),
            (old, ZF | PF)
        );
        // Not equal: nothing written, RAX gets the old bytes, the flags of
        // RAX - old (here a borrow: CF, SF).
        let (_, written, after) = run(&bytes, c, old + 1);
        assert_eq!((written, after.gprs[0]), (None, old + 1));
        assert_eq!(after.rflags & ARITHMETIC_FLAGS, CF | SF | PF | AF);
        // cmpxchg %ecx, (%rdi): a dword compare of EAX only.
        c.gprs[0] = 0xffff_ffff_0000_0007;
        let (_, written, _) = run(&[0x0f, 0xb1, 0x0f], c, 7);
        assert_eq!(written, Some(c.gprs[1] & 0xffff_ffff));
        // lock cmpxchg8b (%rdi): EDX:EAX against the qword, ECX:EBX written.
        c.gprs[0] = 0xdead_0000_5067;
        c.gprs[2] = 0xbeef_0000_0012;
        let bytes = [0xf0, 0x0f, 0xc7, 0x0f];
        let (_, written, after) = run(&bytes, c, 0x12_0000_5067);
        let ecx_ebx = ((c.gprs[1] & 0xffff_ffff) << 32) | (c.gprs[3] & 0xffff_ffff);
        assert_eq!((written, after.rflags & ZF), (Some(ecx_ebx), ZF));
        let (_, written, after) = run(&bytes, c, 0x99_0000_0001);
        assert_eq!((written, after.rflags & ZF), (None, 0));
        assert_eq!((after.gprs[0], after.gprs[2]), (1, 0x99));
        // cmpxchg16b (REX.W) is two entries at once: not emulated.
        assert_eq!(
            decode_store(&[0xf0, 0x48, 0x0f, 0xc7, 0x0f], RIP, &mut { c }),
            None
        );
    }

    #[test]
    fn logic_operations() {
        let c = cpu(0x202 | CF | OF | AF);
        let e = 0x8000_0000_1234_5067u64;
        let cases: &[(&[u8], u64, u64)] = &[
            // lock andb $0xfd, (%rdi) and with ds in place of lock:
            // ptep_set_wrprotect.
            (&[0xf0, 0x80, 0x27, 0xfd], e & !2, PF),
            (&[0x3e, 0x80, 0x27, 0xfd], e & !2, PF),
            // lock orb $2, (%rdi): the byte 0x67 stays.
            (&[0xf0, 0x80, 0x0f, 0x02], e | 2, 0),
            // andq $-3, (%rdi) (imm8 sign-extended): SF from bit 63.
            (&[0x48, 0x83, 0x27, 0xfd], e & !2, SF | PF),
            // xor %rax, (%rdi) with RAX = the entry: zero.
            (&[0x48, 0x31, 0x07], 0, ZF | PF),
            // xorw $0x40, (%rdi)
            (&[0x66, 0x83, 0x37, 0x40], e ^ 0x40, PF),
            // orl $0x100, (%rdi)
            (&[0x81, 0x0f, 0, 1, 0, 0], e | 0x100, 0),
        ];
        let mut c = c;
        c.gprs[0] = e;
        for &(bytes, value, flags) in cases {
            let (s, written, after) = run(bytes, c, e);
            assert_eq!(
                written.map(|w| w & mask(s.width)),
                Some(value & mask(s.width)),
                "{bytes:x?}"
            );
            assert_eq!(after.rflags & ARITHMETIC_FLAGS, flags, "{bytes:x?}");
            assert_eq!(after.rflags & !ARITHMETIC_FLAGS, 0x202, "{bytes:x?}");
        }
    }

    #[test]
    fn arithmetic() {
        let mut c = cpu(0x202);
        c.gprs[1] = 1;
        let run_flags = |bytes: &[u8], c: Cpu, old| {
            let (_, written, after) = run(bytes, c, old);
            (written, after.rflags & ARITHMETIC_FLAGS)
        };
        // add %cl, (%rdi): 0x7f + 1 overflows into the sign.
        assert_eq!(
            run_flags(&[0x00, 0x0f], c, 0x7f),
            (Some(0x80), OF | SF | AF)
        );
        // addb $1, (%rdi): 0xff + 1 carries out and is zero.
        assert_eq!(
            run_flags(&[0x80, 0x07, 1], c, 0xff),
            (Some(0), CF | ZF | PF | AF)
        );
        // sub %rcx, (%rdi): 0 - 1 borrows.
        assert_eq!(
            run_flags(&[0x48, 0x29, 0x0f], c, 0),
            (Some(u64::MAX), CF | SF | PF | AF)
        );
        // subq $2, (%rdi)
        assert_eq!(run_flags(&[0x48, 0x83, 0x2f, 2], c, 0x67), (Some(0x65), PF));
        // adc/sbb use CF.
        let carry = Cpu {
            rflags: 0x202 | CF,
            ..c
        };
        assert_eq!(run_flags(&[0x48, 0x11, 0x0f], carry, 1), (Some(3), PF));
        assert_eq!(run_flags(&[0x48, 0x19, 0x0f], carry, 3), (Some(1), 0));
        assert_eq!(run_flags(&[0x48, 0x19, 0x0f], c, 3), (Some(2), 0));
        // inc/dec keep CF; neg sets it for a non-zero operand; not
        // changes no flag.
        assert_eq!(run_flags(&[0xfe, 0x07], carry, 0x67), (Some(0x68), CF));
        assert_eq!(run_flags(&[0x48, 0xff, 0x0f], c, 1), (Some(0), ZF | PF));
        assert_eq!(
            run_flags(&[0x48, 0xf7, 0x1f], c, 1),
            (Some(u64::MAX), CF | SF | PF | AF)
        );
        assert_eq!(run_flags(&[0xf6, 0x17], carry, 0x0f), (Some(0xf0), CF));
    }

    #[test]
    fn bit_operations() {
        let mut c = cpu(0x202 | ZF);
        // lock btsq $1, (%rdi): CF = the old bit, ZF kept.
        let (_, written, after) = run(&[0xf0, 0x48, 0x0f, 0xba, 0x2f, 1], c, 0x65);
        assert_eq!((written, after.rflags & ARITHMETIC_FLAGS), (Some(0x67), ZF));
        // btr $65, (%rdi): an immediate offset wraps within the operand.
        let (s, written, after) = run(&[0x48, 0x0f, 0xba, 0x37, 65], c, 0x67);
        assert_eq!((s.addr, written, after.rflags & CF), (RDI, Some(0x65), CF));
        // btc %rcx, (%rdi) with RCX = 65: the next qword, bit 1.
        c.gprs[1] = 65;
        let (s, written, _) = run(&[0x48, 0x0f, 0xbb, 0x0f], c, 0x67);
        assert_eq!((s.addr, written), (RDI + 8, Some(0x65)));
        // bts %ecx, (%rdi) with ECX = -1: the dword before, bit 31.
        c.gprs[1] = 0xffff_ffff;
        let (s, written, _) = run(&[0x0f, 0xab, 0x0f], c, 0);
        assert_eq!((s.addr, written), (RDI - 4, Some(0x8000_0000)));
        // bt only reads: no store.
        assert_eq!(
            decode_store(&[0x48, 0x0f, 0xa3, 0x0f], RIP, &mut { c }),
            None
        );
    }

    #[test]
    fn not_stores() {
        let c = cpu(0x202);
        for bytes in [
            &[0x48, 0x89, 0xc8][..],   // register destination
            &[0x48, 0x8b, 0x08],       // a load
            &[0x48, 0x39, 0x08],       // cmp
            &[0xc7, 0x47, 0x08],       // an immediate cut short
            &[0x88, 0x40],             // a displacement cut short
            &[0x89, 0x05, 0, 0],       // disp32 cut short
            &[0x8c, 0x1f],             // mov %ds, (%rdi): not a GPR
            &[0x48, 0xab],             // stosq
            &[0xf0, 0x48, 0x89, 0x0f], // lock mov: #UD on the CPU
            &[0x0f, 0x11, 0x07],       // movups
            &[],
        ] {
            assert_eq!(decode_store(bytes, RIP, &mut { c }), None, "{bytes:x?}");
        }
    }

    /// A byte as a signed number.
    fn signed8(v: u64) -> i16 {
        let v = i16::try_from(v).expect("a byte");
        if v >= 128 { v - 256 } else { v }
    }

    #[test]
    fn alu_flags_match_wide_arithmetic() {
        // Exhaustive over bytes: the flags of add and sub against i16/u16
        // arithmetic.
        for a in 0..=255u64 {
            for b in (0..=255u64).step_by(7) {
                let add = Rmw {
                    alu: Alu::Add,
                    operand: b,
                    carry: false,
                }
                .apply(a, 1);
                let sum = a + b;
                let signed = signed8(a) + signed8(b);
                assert_eq!(add.value, sum & 0xff);
                assert_eq!(add.flags & CF != 0, sum > 0xff);
                assert_eq!(add.flags & OF != 0, !(-128..=127).contains(&signed));
                let sub = Rmw {
                    alu: Alu::Sub,
                    operand: b,
                    carry: false,
                }
                .apply(a, 1);
                let signed = signed8(a) - signed8(b);
                assert_eq!(sub.value, a.wrapping_sub(b) & 0xff);
                assert_eq!(sub.flags & CF != 0, a < b);
                assert_eq!(sub.flags & OF != 0, !(-128..=127).contains(&signed));
                assert_eq!(sub.flags & AF != 0, (a & 0xf) < (b & 0xf));
            }
        }
    }
}
