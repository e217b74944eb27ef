//! The hypercall page and the raw hypercall instructions.
//!
//! This file and the boot entry are the shim's only `unsafe` code.
//!
//! The page is a 4 KiB-aligned page of the image, named by the
//! `HYPERCALL_PAGE` ELF note and filled with `0xC3` (`ret`) in the file, so
//! a guest can tell whether the hypervisor wrote its stubs. The hypervisor
//! fills it before the guest starts and never changes it afterwards.
//!
//! Calls to numbers 0-127 go through the page (`call hypercall_page +
//! N*32`), which works unchanged on Xen (`syscall` stubs) and on this
//! hypervisor (`int $0x82` stubs). Numbers beyond the page are issued with
//! the same trap instruction the page's stubs use, found by looking at
//! slot 0.

use core::arch::{asm, global_asm};

use dom0_abi::hypercall::{HYPERCALL_PAGE_SIZE, HYPERCALL_PAGE_SLOTS, HYPERCALL_SLOT_SIZE};

// The page itself: `hypercall_page`, 4 KiB of `ret`.
global_asm!(
    ".pushsection .text.hypercall_page, \"ax\", @progbits",
    ".balign 4096",
    ".globl hypercall_page",
    ".type hypercall_page, @function",
    "hypercall_page:",
    ".fill 4096, 1, 0xc3",
    ".size hypercall_page, 4096",
    ".popsection",
    options(att_syntax)
);

/// Virtual address of the hypercall page.
#[must_use]
pub fn page_address() -> u64 {
    let va: u64;
    // SAFETY: computes an address only; reads and writes no memory.
    unsafe {
        asm!(
            "lea {}, [rip + hypercall_page]",
            out(reg) va,
            options(pure, nomem, nostack, preserves_flags),
        );
    }
    va
}

/// The address of the stub for hypercall `nr` in the hypercall page, for
/// assembly that calls it directly; `None` beyond the page's 128 slots.
#[must_use]
pub fn stub_address(nr: u32) -> Option<u64> {
    let slot = usize::try_from(nr)
        .ok()
        .filter(|&n| n < HYPERCALL_PAGE_SLOTS)?;
    Some(page_address() + (slot * HYPERCALL_SLOT_SIZE) as u64)
}

/// The hypercall page as the hypervisor left it.
#[must_use]
pub fn page() -> &'static [u8; HYPERCALL_PAGE_SIZE] {
    let ptr = page_address() as *const [u8; HYPERCALL_PAGE_SIZE];
    // SAFETY: `hypercall_page` is a 4096-byte, page-aligned object of this
    // image (defined above), mapped for the guest's lifetime. Only the
    // hypervisor writes it, before the guest starts; nothing writes it
    // while the guest runs, so a shared reference is sound.
    unsafe { &*ptr }
}

/// How the stubs enter the hypervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trap {
    /// `int $0x82` (this hypervisor; ring-1 kernel).
    Int82,
    /// `syscall` (Xen; ring-3 kernel).
    Syscall,
}

/// The trap instruction of slot 0's stub.
fn trap_kind() -> Option<Trap> {
    let slot0 = &page()[..HYPERCALL_SLOT_SIZE];
    slot0.windows(2).find_map(|w| match w {
        [0xCD, 0x82] => Some(Trap::Int82),
        [0x0F, 0x05] => Some(Trap::Syscall),
        _ => None,
    })
}

/// Calls the stub at `stub` with the Xen register convention.
///
/// # Safety
/// As [`hypercall5`]; `stub` is the start of a slot of the hypercall page.
#[inline(always)]
unsafe fn call_stub(stub: u64, nr: u64, a: [u64; 5]) -> i64 {
    let ret: i64;
    // SAFETY: the stub is hypervisor-provided code that follows the C
    // calling convention for the registers declared here (arguments may be
    // clobbered, RCX/R11 too). The guest stack has no red zone. What the
    // hypercall does to memory is the caller's contract.
    unsafe {
        asm!(
            "call {stub}",
            stub = in(reg) stub,
            inlateout("rax") nr => ret,
            inlateout("rdi") a[0] => _,
            inlateout("rsi") a[1] => _,
            inlateout("rdx") a[2] => _,
            inlateout("r10") a[3] => _,
            inlateout("r8") a[4] => _,
            clobber_abi("C"),
        );
    }
    ret
}

/// Issues a hypercall with the trap instruction itself (no stub).
///
/// # Safety
/// As [`hypercall5`].
#[inline(always)]
unsafe fn trap_direct(trap: Trap, nr: u64, a: [u64; 5]) -> i64 {
    let ret: i64;
    match trap {
        // SAFETY: same register contract as the stubs; the caller's
        // contract covers memory effects.
        Trap::Int82 => unsafe {
            asm!(
                "int 0x82",
                inlateout("rax") nr => ret,
                inlateout("rdi") a[0] => _,
                inlateout("rsi") a[1] => _,
                inlateout("rdx") a[2] => _,
                inlateout("r10") a[3] => _,
                inlateout("r8") a[4] => _,
                clobber_abi("C"),
            );
        },
        // SAFETY: as above; SYSCALL additionally overwrites RCX and R11,
        // which `clobber_abi("C")` covers.
        Trap::Syscall => unsafe {
            asm!(
                "syscall",
                inlateout("rax") nr => ret,
                inlateout("rdi") a[0] => _,
                inlateout("rsi") a[1] => _,
                inlateout("rdx") a[2] => _,
                inlateout("r10") a[3] => _,
                inlateout("r8") a[4] => _,
                clobber_abi("C"),
            );
        },
    }
    ret
}

/// Hypercall `nr` with five arguments; returns RAX (a negative errno on
/// failure).
///
/// `nr` < 128 goes through the hypercall page; larger numbers use the
/// page's trap instruction directly (the hypervisor answers `-ENOSYS`).
/// Never use this for `iret` (23), which does not return.
///
/// # Safety
/// The hypercall may read and write guest memory through the arguments:
/// every pointer argument must be valid for what hypercall `nr` does with
/// it, or point to memory no Rust code uses (e.g. an unmapped address or
/// the hypervisor's reserved range, which the hypervisor must refuse).
/// Hypercalls that change page tables, traps or the vCPU's state must not
/// break the assumptions of the running Rust code.
pub unsafe fn hypercall5(nr: u64, a1: u64, a2: u64, a3: u64, a4: u64, a5: u64) -> i64 {
    let args = [a1, a2, a3, a4, a5];
    if let Some(stub) = u32::try_from(nr).ok().and_then(stub_address) {
        // SAFETY: `stub` is slot `nr` of the hypercall page; the rest is the
        // caller's contract.
        unsafe { call_stub(stub, nr, args) }
    } else {
        let Some(trap) = trap_kind() else {
            panic!("hypercall page slot 0 holds no known trap instruction");
        };
        // SAFETY: the caller's contract.
        unsafe { trap_direct(trap, nr, args) }
    }
}

/// Hypercall `nr` with the platform's trap instruction itself (`int
/// $0x82` here, `syscall` on Xen), never through the hypercall page: what
/// a kernel that has no hypercall page does, and what a fuzzer wants for
/// numbers the page has no slot for.
///
/// # Safety
/// As [`hypercall5`].
pub unsafe fn hypercall_trap(nr: u64, args: [u64; 5]) -> i64 {
    let Some(trap) = trap_kind() else {
        panic!("hypercall page slot 0 holds no known trap instruction");
    };
    // SAFETY: the caller's contract.
    unsafe { trap_direct(trap, nr, args) }
}

/// Hypercall `nr` with no arguments.
///
/// # Safety
/// As [`hypercall5`].
pub unsafe fn hypercall0(nr: u64) -> i64 {
    // SAFETY: the caller's contract.
    unsafe { hypercall5(nr, 0, 0, 0, 0, 0) }
}

/// Hypercall `nr` with one argument.
///
/// # Safety
/// As [`hypercall5`].
pub unsafe fn hypercall1(nr: u64, a1: u64) -> i64 {
    // SAFETY: the caller's contract.
    unsafe { hypercall5(nr, a1, 0, 0, 0, 0) }
}

/// Hypercall `nr` with two arguments.
///
/// # Safety
/// As [`hypercall5`].
pub unsafe fn hypercall2(nr: u64, a1: u64, a2: u64) -> i64 {
    // SAFETY: the caller's contract.
    unsafe { hypercall5(nr, a1, a2, 0, 0, 0) }
}

/// Hypercall `nr` with three arguments.
///
/// # Safety
/// As [`hypercall5`].
pub unsafe fn hypercall3(nr: u64, a1: u64, a2: u64, a3: u64) -> i64 {
    // SAFETY: the caller's contract.
    unsafe { hypercall5(nr, a1, a2, a3, 0, 0) }
}

/// Hypercall `nr` with four arguments.
///
/// # Safety
/// As [`hypercall5`].
pub unsafe fn hypercall4(nr: u64, a1: u64, a2: u64, a3: u64, a4: u64) -> i64 {
    // SAFETY: the caller's contract.
    unsafe { hypercall5(nr, a1, a2, a3, a4, 0) }
}
