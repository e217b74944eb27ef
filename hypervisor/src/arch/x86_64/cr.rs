//! Control registers (SDM vol. 3A §2.5): their bits, as the `x86_64`
//! crate names them, and the few accesses the hypervisor makes.
use core::arch::asm;

use x86_64::registers::control::{Cr0Flags, Cr4Flags};

/// CR0.WP: supervisor writes honour read-only pages (what makes a guest's
/// read-only page-table mappings hold against ring 1).
pub const CR0_WP: u64 = Cr0Flags::WRITE_PROTECT.bits();

/// CR0.AM: RFLAGS.AC enables alignment checks at CPL 3.
pub const CR0_AM: u64 = Cr0Flags::ALIGNMENT_MASK.bits();

/// CR0.TS.
const CR0_TS: u64 = Cr0Flags::TASK_SWITCHED.bits();

/// CR4.PGE: global pages.
pub const CR4_PGE: u64 = Cr4Flags::PAGE_GLOBAL.bits();

/// CR4.UMIP: SGDT/SIDT/SLDT/SMSW/STR fault outside ring 0.
pub const CR4_UMIP: u64 = Cr4Flags::USER_MODE_INSTRUCTION_PREVENTION.bits();

/// CR4.PCIDE: process-context identifiers.
pub const CR4_PCIDE: u64 = Cr4Flags::PCID.bits();

/// CR4.OSFXSR | CR4.OSXMMEXCPT: SSE state handled by the OS.
pub const CR4_OSFXSR_OSXMMEXCPT: u64 = Cr4Flags::OSFXSR.bits() | Cr4Flags::OSXMMEXCPT_ENABLE.bits();

/// CR4.SMEP: supervisor mode (rings 0-2) cannot execute user pages.
pub const CR4_SMEP: u64 = Cr4Flags::SUPERVISOR_MODE_EXECUTION_PROTECTION.bits();

/// CR4.OSXSAVE.
pub const CR4_OSXSAVE: u64 = Cr4Flags::OSXSAVE.bits();

/// CR4.FSGSBASE: RDFSBASE/RDGSBASE/WRFSBASE/WRGSBASE usable at any CPL.
pub const CR4_FSGSBASE: u64 = Cr4Flags::FSGSBASE.bits();

/// Reads CR0.
pub fn read_cr0() -> u64 {
    let v;
    // SAFETY: reading CR0 has no side effects; the hypervisor runs at CPL 0.
    unsafe { asm!("mov {}, cr0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Writes CR0.
///
/// # Safety
/// The new value must keep paging, protected mode and every invariant the
/// running code depends on (WP stays set once guests exist).
pub unsafe fn write_cr0(v: u64) {
    // SAFETY: the caller keeps the CPU in a state the running code expects.
    unsafe { asm!("mov cr0, {}", in(reg) v, options(nostack, preserves_flags)) };
}

/// Reads CR2 (the last page-fault address).
pub fn read_cr2() -> u64 {
    let v;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Puts `address` back into CR2, for a page fault's handler to read after
/// a recovered fault of the hypervisor's own overwrote it.
pub fn write_cr2(address: u64) {
    // SAFETY: CR2 only reports page-fault addresses; nothing but the
    // page-fault handlers reads it.
    unsafe { asm!("mov cr2, {}", in(reg) address, options(nomem, nostack, preserves_flags)) };
}

/// Reads CR3.
pub fn read_cr3() -> u64 {
    let v;
    // SAFETY: reading CR3 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Loads CR3.
///
/// # Safety
/// The new root must map the running code, its stack and all data it will
/// touch at the same addresses as before.
pub unsafe fn write_cr3(v: u64) {
    // SAFETY: the caller guarantees the new tables map what runs next.
    unsafe { asm!("mov cr3, {}", in(reg) v, options(nostack, preserves_flags)) };
}

/// Reads CR4.
pub fn read_cr4() -> u64 {
    let v;
    // SAFETY: reading CR4 has no side effects.
    unsafe { asm!("mov {}, cr4", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Writes CR4.
///
/// # Safety
/// Only bits the CPU supports may be set, and PCIDE only with CR3[11:0] = 0.
pub unsafe fn write_cr4(v: u64) {
    // SAFETY: the caller sets only supported bits in a valid combination.
    unsafe { asm!("mov cr4, {}", in(reg) v, options(nostack, preserves_flags)) };
}

/// Flushes the whole TLB of this CPU, global entries and every PCID
/// included (Xen's `FLUSH_TLB`): toggling CR4.PGE where it is on, else
/// reloading CR3. A CR3 reload alone keeps global entries, and a guest may
/// set G in its own L1 entries.
pub fn flush_tlb_all() {
    let cr4 = read_cr4();
    if cr4 & CR4_PGE != 0 {
        // SAFETY: clearing and restoring PGE changes no mapping and sets
        // no new bit; either write flushes every TLB entry.
        unsafe {
            write_cr4(cr4 & !CR4_PGE);
            write_cr4(cr4);
        }
    } else {
        // SAFETY: reloading the current root changes no mapping.
        unsafe { write_cr3(read_cr3()) };
    }
}

/// Invalidates the TLB entry for one linear address in the current PCID.
pub fn invlpg(va: u64) {
    // SAFETY: INVLPG only drops a cached translation.
    unsafe { asm!("invlpg [{}]", in(reg) va, options(nostack, preserves_flags)) };
}

/// Sets or clears CR0.TS (the guest's virtual TS; the hypervisor uses no
/// FPU state itself).
pub fn set_cr0_ts(set: bool) {
    let cr0 = read_cr0();
    let new = if set { cr0 | CR0_TS } else { cr0 & !CR0_TS };
    if new != cr0 {
        // SAFETY: TS only makes FPU/SSE instructions raise #NM, and the
        // hypervisor executes none.
        unsafe { write_cr0(new) };
    }
}

/// Sets or clears CR4.FSGSBASE as a guest kernel asked (writing CR4 only
/// when that changes it). The hypervisor never uses the FS or GS bases
/// itself, so the bit only decides what guest code may do.
pub fn set_cr4_fsgsbase(on: bool) {
    let cr4 = read_cr4();
    let want = if on {
        cr4 | CR4_FSGSBASE
    } else {
        cr4 & !CR4_FSGSBASE
    };
    if want != cr4 {
        // SAFETY: callers set the bit only where CPUID reports FSGSBASE;
        // no other bit changes.
        unsafe { write_cr4(want) };
    }
}
