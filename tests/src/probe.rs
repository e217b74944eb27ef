//! Single memory accesses at arbitrary virtual addresses, for the
//! isolation tests.
//!
//! Each is one `mov` in inline assembly, so the compiler neither removes,
//! merges nor reorders it, and no Rust reference to the address exists.
//! An access the page tables refuse faults; the test guest installs no
//! trap handlers, so the hypervisor then crashes the domain, which is what
//! the isolation tests expect.

use core::arch::asm;

/// Reads the `u64` at `va` (8 bytes, one load).
pub fn read_u64(va: u64) -> u64 {
    let value: u64;
    // SAFETY: a plain load through inline assembly: it changes no memory
    // and creates no reference, so it cannot break Rust's invariants; if
    // the address is not readable the vCPU faults and the hypervisor ends
    // the domain, which the callers want to observe.
    unsafe {
        asm!(
            "mov {v}, qword ptr [{a}]",
            a = in(reg) va,
            v = out(reg) value,
            options(nostack, readonly, preserves_flags),
        );
    }
    value
}

/// Writes `value` to the `u64` at `va` (one store).
///
/// # Safety
/// `va` must not be memory that Rust code of this guest uses: the store is
/// meant to hit memory the guest does not own (and to fault).
pub unsafe fn write_u64(va: u64, value: u64) {
    // SAFETY: the caller guarantees `va` is not guest-owned Rust memory; a
    // fault ends the domain.
    unsafe {
        asm!(
            "mov qword ptr [{a}], {v}",
            a = in(reg) va,
            v = in(reg) value,
            options(nostack, preserves_flags),
        );
    }
}
