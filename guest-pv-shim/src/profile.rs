//! Markers for `cargo xtask bench --profile`: a window of a run whose
//! instructions the profiling plugin counts apart from the rest.
//!
//! Each marker is one `nopl disp32(%rax)` whose displacement carries the
//! marker's kind (begin `0xb1`, end `0xe1`), the window's tag and the
//! magic `"PO"`; the plugin (`qemu-profile`) recognises it by those bytes
//! when QEMU translates it. Anywhere else (Xen, hardware, QEMU without
//! the plugin) it is a no-op. A window's tag is a benchmark's index in
//! `pv_bench::catalogue::ALL` (`catalogue::tag`), so that the report
//! names it; the windows of one tag add up.

use core::arch::asm;

/// Marks the start of window `TAG`.
#[inline(always)]
pub fn begin<const TAG: u8>() {
    marker::<0xb1, TAG>();
}

/// Marks the end of window `TAG`.
#[inline(always)]
pub fn end<const TAG: u8>() {
    marker::<0xe1, TAG>();
}

/// The marker of kind `KIND` for window `TAG`.
#[inline(always)]
fn marker<const KIND: u8, const TAG: u8>() {
    // SAFETY: a `nopl` with a memory operand that is never accessed: no
    // effect on registers, flags or memory.
    unsafe {
        asm!(
            ".byte 0x0f, 0x1f, 0x80, {kind}, {tag}, 0x50, 0x4f",
            kind = const KIND,
            tag = const TAG,
            options(nomem, nostack, preserves_flags),
        );
    }
}
