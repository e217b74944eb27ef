//! The one audited way the hypervisor touches guest virtual memory.
//!
//! A copy first checks the whole range with `layout::guest_range_ok` (never
//! the reserved slots, never non-canonical), then copies with `rep movsq`/`rep movsb` in
//! the hypervisor view, where the current guest's own mappings (slots 0-255
//! and 272-511) decide what is readable and writable — CR0.WP makes
//! read-only guest pages read-only here too. A page fault on one of its two
//! string instructions is recovered by [`fixup`]: the copy stops and
//! reports `EFAULT`, the hypervisor carries on.
use core::arch::global_asm;

use dom0_abi::Errno;

use crate::layout::guest_range_ok;

global_asm!(
    r#"
    .section .text.guest_copy, "ax"
    .global hv_guest_copy
    /*
     * hv_guest_copy(dst, src, len) -> bytes left uncopied (0 = done).
     * Eight bytes at a time, then the tail: `rep movsq` and `rep movsb` are
     * the only instructions that touch guest memory, each with a fixup.
     */
hv_guest_copy:
    mov %rdx, %rcx
    shr $3, %rcx
    .global hv_guest_copy_quads
hv_guest_copy_quads:
    rep movsq
    mov %rdx, %rcx
    and $7, %rcx
    .global hv_guest_copy_bytes
hv_guest_copy_bytes:
    rep movsb
    xor %eax, %eax
    ret
    /* A fault in the quad loop: RCX quads and the tail are left. */
    .global hv_guest_copy_quads_fixup
hv_guest_copy_quads_fixup:
    shl $3, %rcx
    and $7, %rdx
    add %rdx, %rcx
    /* A fault in the byte loop: RCX bytes are left. */
    .global hv_guest_copy_bytes_fixup
hv_guest_copy_bytes_fixup:
    mov %rcx, %rax
    ret
    "#,
    options(att_syntax)
);

unsafe extern "C" {
    fn hv_guest_copy(dst: *mut u8, src: *const u8, len: usize) -> usize;
    static hv_guest_copy_quads: u8;
    static hv_guest_copy_bytes: u8;
    static hv_guest_copy_quads_fixup: u8;
    static hv_guest_copy_bytes_fixup: u8;
}

/// If a page fault at `rip` came from the guest copy, the address to resume at.
pub fn fixup(rip: u64) -> Option<u64> {
    let at = |sym: *const u8| sym as u64;
    if rip == at(core::ptr::addr_of!(hv_guest_copy_quads)) {
        Some(at(core::ptr::addr_of!(hv_guest_copy_quads_fixup)))
    } else if rip == at(core::ptr::addr_of!(hv_guest_copy_bytes)) {
        Some(at(core::ptr::addr_of!(hv_guest_copy_bytes_fixup)))
    } else {
        None
    }
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

/// Fills `words` from guest address `va` in the guest's byte order
/// (little-endian, as the words lie in memory here): no byte buffer is
/// decoded after.
pub fn copy_words_from_guest(va: u64, words: &mut [u64]) -> Result<(), Errno> {
    let len = core::mem::size_of_val(words);
    if !guest_range_ok(va, len as u64) {
        return Err(Errno::EFAULT);
    }
    // SAFETY: as in `copy_from_guest`; `words` is `len` bytes of
    // hypervisor memory, and any bytes make valid words.
    let left = unsafe { hv_guest_copy(words.as_mut_ptr().cast(), va as *const u8, len) };
    if left == 0 {
        Ok(())
    } else {
        Err(Errno::EFAULT)
    }
}

/// Copies `words` to guest address `va` in the guest's byte order
/// (little-endian, as the words lie in memory here): no byte buffer is
/// filled first.
pub fn copy_words_to_guest(va: u64, words: &[u64]) -> Result<(), Errno> {
    let len = core::mem::size_of_val(words);
    if !guest_range_ok(va, len as u64) {
        return Err(Errno::EFAULT);
    }
    // SAFETY: as in `copy_to_guest`; `words` is `len` bytes of initialised
    // hypervisor memory, and on x86 its bytes are the words' little-endian
    // encodings.
    let left = unsafe { hv_guest_copy(va as *mut u8, words.as_ptr().cast(), len) };
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
