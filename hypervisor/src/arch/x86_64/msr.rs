//! Model-specific registers (SDM vol. 4): the numbers the hypervisor uses,
//! EFER's bits as the `x86_64` crate names them, and RDMSR/WRMSR.
use core::arch::asm;

use x86_64::registers::model_specific::EferFlags;

/// The MSR numbers a guest may also name (one definition, in the
/// emulator's table).
pub use crate::emulate::msr::{
    EFER as MSR_EFER, FS_BASE as MSR_FS_BASE, GS_BASE as MSR_GS_BASE,
    KERNEL_GS_BASE as MSR_KERNEL_GS_BASE,
};

/// EFER.NXE: the NX bit is honoured.
pub const EFER_NXE: u64 = EferFlags::NO_EXECUTE_ENABLE.bits();

/// EFER.SCE: SYSCALL enabled.
pub const EFER_SCE: u64 = EferFlags::SYSTEM_CALL_EXTENSIONS.bits();

/// IA32_STAR: SYSCALL/SYSRET selectors.
pub const MSR_STAR: u32 = 0xC000_0081;

/// IA32_LSTAR: 64-bit SYSCALL entry.
pub const MSR_LSTAR: u32 = 0xC000_0082;

/// IA32_CSTAR: compatibility-mode SYSCALL entry.
pub const MSR_CSTAR: u32 = 0xC000_0083;

/// IA32_FMASK: RFLAGS bits SYSCALL clears.
pub const MSR_FMASK: u32 = 0xC000_0084;

/// Reads an MSR.
///
/// # Safety
/// The MSR must exist on this CPU (else #GP).
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller guarantees the MSR exists.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes an MSR.
///
/// # Safety
/// The MSR must exist and the value must be valid for it and for the code running.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // Splitting into the EDX:EAX halves the instruction takes.
    #[allow(
        clippy::cast_possible_truncation,
        reason = "WRMSR takes the value as two 32-bit halves"
    )]
    let (lo, hi) = (value as u32, (value >> 32) as u32);
    // SAFETY: the caller guarantees the MSR and value are valid.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") lo, in("edx") hi, options(nostack, preserves_flags))
    };
}

/// EFER as a guest reads it.
pub fn efer() -> u64 {
    // SAFETY: EFER exists on every x86-64 CPU; reading it has no side effects.
    unsafe { rdmsr(MSR_EFER) }
}

/// IA32_PAT.
pub fn pat() -> u64 {
    // SAFETY: the PAT MSR exists on every x86-64 CPU; reading has no side effects.
    unsafe { rdmsr(0x277) }
}
