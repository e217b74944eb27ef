//! The one audited way the hypervisor touches guest virtual memory.
//!
//! A copy first checks the whole range with `layout::guest_range_ok` (never
//! the reserved slots, never non-canonical), then runs one `rep movsb` in
//! the hypervisor view, where the current guest's own mappings (slots 0-255
//! and 272-511) decide what is readable and writable — CR0.WP makes
//! read-only guest pages read-only here too. A page fault on that one
//! instruction is recovered by [`fixup`]: the copy stops and reports
//! `EFAULT`, the hypervisor carries on.
use core::arch::global_asm;

use dom0_abi::Errno;

use crate::layout::guest_range_ok;

global_asm!(
    r#"
    .section .text.guest_copy, "ax"
    .global hv_guest_copy
    /* hv_guest_copy(dst, src, len) -> bytes left uncopied (0 = done) */
hv_guest_copy:
    mov %rdx, %rcx
    .global hv_guest_copy_insn
hv_guest_copy_insn:
    rep movsb
    .global hv_guest_copy_fixup
hv_guest_copy_fixup:
    mov %rcx, %rax
    ret
    "#,
    options(att_syntax)
);

unsafe extern "C" {
    fn hv_guest_copy(dst: *mut u8, src: *const u8, len: usize) -> usize;
    static hv_guest_copy_insn: u8;
    static hv_guest_copy_fixup: u8;
}

/// If a page fault at `rip` came from the guest copy, the address to resume at.
pub fn fixup(rip: u64) -> Option<u64> {
    (rip == core::ptr::addr_of!(hv_guest_copy_insn) as u64)
        .then_some(core::ptr::addr_of!(hv_guest_copy_fixup) as u64)
}

/// Copies `buf.len()` bytes from guest address `va`.
pub fn copy_from_guest(va: u64, buf: &mut [u8]) -> Result<(), Errno> {
    if !guest_range_ok(va, buf.len() as u64) {
        return Err(Errno::EFAULT);
    }
    // SAFETY: `buf` is a valid hypervisor buffer; the source range was
    // checked to lie in guest slots, and a fault while reading it is
    // recovered by `fixup` and reported as a short copy.
    let left = unsafe { hv_guest_copy(buf.as_mut_ptr(), va as *const u8, buf.len()) };
    if left == 0 {
        Ok(())
    } else {
        Err(Errno::EFAULT)
    }
}

/// Copies `buf` to guest address `va`.
pub fn copy_to_guest(va: u64, buf: &[u8]) -> Result<(), Errno> {
    if !guest_range_ok(va, buf.len() as u64) {
        return Err(Errno::EFAULT);
    }
    // SAFETY: the destination range was checked to lie in guest slots, so
    // the copy can only write guest-writable guest memory (CR0.WP), and a
    // fault is recovered by `fixup`; `buf` is a valid hypervisor buffer.
    let left = unsafe { hv_guest_copy(va as *mut u8, buf.as_ptr(), buf.len()) };
    if left == 0 {
        Ok(())
    } else {
        Err(Errno::EFAULT)
    }
}
