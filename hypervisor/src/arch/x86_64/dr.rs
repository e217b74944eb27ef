//! Debug registers (SDM vol. 3B §18.2).
use core::arch::asm;

/// Reads DR6 (what the last #DB recorded).
pub fn read_dr6() -> u64 {
    let v;
    // SAFETY: reading DR6 has no side effects at CPL 0.
    unsafe { asm!("mov {}, dr6", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Resets DR6 to "nothing recorded".
pub fn clear_dr6() {
    // SAFETY: writing DR6's default value only clears recorded conditions.
    unsafe {
        asm!("mov dr6, {}", in(reg) 0xffff_0ff0u64, options(nomem, nostack, preserves_flags))
    };
}

/// Loads a guest's breakpoint addresses (DR0-3) and control (DR7). The
/// values passed `vcpu::debug::check`: guest addresses, no GD, no I/O
/// breakpoints.
pub fn load_debug_registers(dr: &[u64; 8]) {
    // SAFETY: DR0-3 hold guest linear addresses and DR7 only enables
    // instruction or data breakpoints on them; a data breakpoint the
    // hypervisor's own guest copy hits is ignored by its #DB handler.
    unsafe {
        asm!("mov dr7, {}", in(reg) 0x400u64, options(nomem, nostack, preserves_flags));
        asm!("mov dr0, {}", in(reg) dr[0], options(nomem, nostack, preserves_flags));
        asm!("mov dr1, {}", in(reg) dr[1], options(nomem, nostack, preserves_flags));
        asm!("mov dr2, {}", in(reg) dr[2], options(nomem, nostack, preserves_flags));
        asm!("mov dr3, {}", in(reg) dr[3], options(nomem, nostack, preserves_flags));
        asm!("mov dr7, {}", in(reg) dr[7], options(nomem, nostack, preserves_flags));
    }
}
