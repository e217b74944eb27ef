//! Entry and exit stubs: every way in from a guest and the one way back.
//!
//! The stubs live in `.text.entry`, which the trampoline maps into every
//! guest view at `layout::trampoline::TEXT`; IDT vector `n` points at
//! `TEXT + 16 * n`. On an entry from a guest (CS RPL != 0) the stub:
//!
//! 1. saves RAX and RCX on the entry stack, next to the frame the CPU pushed;
//! 2. loads the hypervisor-view CR3 from the trampoline's read-only data page;
//! 3. switches to this CPU's hypervisor stack (address from the same page),
//!    copies the frame there and saves every other register, forming a
//!    [`GuestRegs`] at the top of the hypervisor stack;
//! 4. calls [`guest_entry`] in the hypervisor image.
//!
//! A hypercall (`int $0x82`, whose vector stub goes to `hypercall_common`)
//! with the fast path's number takes the fast entry instead: it loads the
//! hypervisor view, leaves the frame on the entry stack, saves on the
//! hypervisor stack only the registers the call could clobber and the ABI
//! preserves (RCX, R9, R11; the callee keeps the callee-saved ones) and the
//! argument registers, and calls the fast path
//! (`fastpath::fast_hypercall`). When that answers, the stub restores
//! those registers, clears the argument registers RDX, RSI, R8, R10 and
//! RDI (the ABI lets a hypercall clobber them; they held hypervisor
//! values), loads the guest view and returns with `iretq` on the same
//! frame; when it declines, the stub puts every register back and goes on
//! with step 1's state into step 3.
//!
//! The bounce lanes enter alike: `HYPERVISOR_iret` (RAX = 23 at the
//! hypercall vector) saves every register the call preserves and leaves
//! with RAX, RCX and R11 from the `iret` frame (`fastpath::fast_iret`);
//! `event_channel_op` (RAX = 32) saves and leaves as the fast entry does
//! (`fastpath::fast_evtchn_send`, which may point the frame at the event
//! callback);
//! a not-present #PF and a 64-bit `SYSCALL` from a guest do step 1, load
//! the hypervisor view and save the other registers a call may clobber
//! (`fastpath::fast_page_fault`, `fastpath::fast_syscall`). Each first
//! tests its CPU's lane's work flag; a lane that declines leaves every
//! register and the frame as they came, and the stub goes on into step 3.
//!
//! Nothing is read from the entry stack but what the CPU and step 1 just
//! wrote; nothing the hypervisor computes is left on it. The way back
//! ([`exit_to_guest`]) copies only the guest's own RAX, RCX and iret frame
//! onto the entry stack, loads the guest-view CR3 and executes `iretq`.
//! An exception taken in the hypervisor itself (CS RPL 0) stays on the
//! current stack (or its IST stack: NMI, #DF, #MC, #DB) and goes to
//! [`hypervisor_trap`], in the hypervisor view even when it interrupted a
//! stub with the guest view loaded.
use core::arch::global_asm;

use dom0_abi::hypercall::{HYPERCALL_VECTOR, Hypercall};
use dom0_abi::segment::{FLAT_RING3_CS32, FLAT_RING3_CS64, FLAT_RING3_DS};

use super::guest::{SYSCALL_VECTOR, SYSCALL32_VECTOR};
use crate::layout::trampoline;

pub use crate::regs::GuestRegs;

/// Bytes of one vector stub (the IDT points at `TEXT + n * STUB_SIZE`).
pub const STUB_SIZE: u64 = 16;

global_asm!(
    r#"
    .section .text.entry, "ax"
    .balign 4096
    .code64
    .global entry_stubs
entry_stubs:
    .altmacro
    .macro ENTRY_STUB n
    .balign 16
    .if (\n == 8) || (\n == 10) || (\n == 11) || (\n == 12) || (\n == 13) || (\n == 14) || (\n == 17) || (\n == 21) || (\n == 29) || (\n == 30)
    .else
    push $0
    .endif
    push $\n
    .if \n == {hypercall_vector}
    jmp hypercall_common
    .elseif \n == {page_fault_vector}
    jmp page_fault_common
    .else
    jmp entry_common
    .endif
    .endm
    .set vec, 0
    .rept 256
    ENTRY_STUB %vec
    .set vec, vec + 1
    .endr
    .noaltmacro

    /* Every register but RAX and RCX, in GuestRegs order (pushed last = lowest). */
    .macro PUSH_GPRS
    push %rbx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    .endm
    .macro POP_GPRS
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rbx
    .endm

    /*
     * A hypercall lane's entry: the hypervisor view, and on the hypervisor
     * stack the entry stack's address (RAX after), RCX, R11, R9, R10, R8,
     * RDX, RSI, RDI (RSP after); its way back to the guest's registers;
     * and a decline to the full path with RAX = `number`.
     */
    .macro HYPERVISOR_VIEW
    mov ({hv_cr3} - {text} + entry_stubs)(%rip), %rax
    mov %rax, %cr3
    .endm
    /* Jumps to `closed` if this CPU's lanes are closed (RAX lost). */
    .macro LANE_CLOSED closed
    mov ({lane} - {text} + entry_stubs)(%rip), %rax
    testb ${work_bit}, {work_offset}(%rax)
    jnz \closed
    .endm
    .macro HYPERCALL_LANE_SAVE
    mov %rsp, %rax
    mov ({hv_stack_top} - {text} + entry_stubs)(%rip), %rsp
    push %rax
    push %rcx
    push %r11
    push %r9
    push %r10
    push %r8
    push %rdx
    push %rsi
    push %rdi
    .endm
    .macro HYPERCALL_LANE_RESTORE
    pop %rdi
    pop %rsi
    pop %rdx
    pop %r8
    pop %r10
    pop %r9
    pop %r11
    pop %rcx
    pop %rsp
    .endm
    /*
     * A lane for the hypercall `number` (any other goes on at `next`):
     * the hypervisor view, the lane's flag (closed: on at `closed`, as
     * when the lane's byte at `open_offset` lacks `open_bit`, if given),
     * the registers saved.
     */
    .macro HYPERCALL_LANE_ENTER number, next, closed, open_offset, open_bit
    cmp $\number, %rax
    jne \next
    HYPERVISOR_VIEW
    LANE_CLOSED \closed
    .ifnb \open_bit
    testb $\open_bit, \open_offset(%rax)
    jz \closed
    .endif
    HYPERCALL_LANE_SAVE
    .endm
    /* Calls the lane `fn` (RAX lost). */
    .macro CALL_LANE fn
    cld
    movabs $\fn, %rax
    call *%rax
    .endm
    .macro HYPERCALL_LANE_DECLINE number
    push %rcx
    mov $\number, %eax
    push %rax
    jmp guest_hv_view
    .endm

    /*
     * The hypercall vector: the fast path's number goes to the fast entry,
     * `HYPERVISOR_iret`'s to its lane, any other to the common path.
     */
hypercall_common:
    /* Stack: vector, error, rip, cs, rflags, rsp, ss */
    testb $3, 24(%rsp)
    jz from_hypervisor
    cmp ${fast_number}, %rax
    jne iret_or_full
    HYPERVISOR_VIEW

    /*
     * The fast entry. RAX is known (the fast path's number), so it is the
     * scratch register; the frame stays on the entry stack, which only
     * this CPU maps and only this CPU's guest, not running now, could
     * write. Saved on the hypervisor stack: the entry stack's address,
     * RCX, R11 and R9 (preserved by the ABI, clobbered by the call) and
     * the argument registers (for the full path if the fast one
     * declines). The callee-saved registers are the callee's to keep.
     */
    HYPERCALL_LANE_SAVE
    lea 16(%rax), %rdx
    CALL_LANE {fast_hypercall}
    test %rax, %rax
    js 1f
    /*
     * Answered: the argument registers the ABI lets a hypercall clobber
     * are cleared (they held hypervisor values), every other register is
     * the guest's own.
     */
hypercall_lane_answered:
    add $40, %rsp
    pop %r9
    pop %r11
    pop %rcx
    pop %rsp
    xor %edx, %edx
    xor %esi, %esi
    xor %r8d, %r8d
    xor %r10d, %r10d
    mov ({guest_cr3} - {text} + entry_stubs)(%rip), %rdi
    mov %rdi, %cr3
    xor %edi, %edi
    add $16, %rsp
    iretq
1:
    /* Declined: the guest's registers back, on to the full path. */
    HYPERCALL_LANE_RESTORE
    HYPERCALL_LANE_DECLINE {fast_number}

    /*
     * HYPERVISOR_iret's lane: as the fast entry, with every register the
     * guest keeps saved (the call returns RAX, RCX and R11 from the iret
     * frame and preserves the others), and a slot for the new RAX.
     */
iret_or_full:
    HYPERCALL_LANE_ENTER {iret_number}, send_or_full, 2f
    push $0
    lea 16(%rax), %rdi
    mov %rsp, %rsi
    CALL_LANE {fast_iret}
    test %eax, %eax
    pop %rax
    HYPERCALL_LANE_RESTORE
    jz 1f
    /*
     * Served: RAX, RCX and R11 are the iret frame's; the vector's slot of
     * the entry stack keeps RAX (the guest's own value) while RAX carries
     * the guest view's CR3.
     */
    mov %rax, (%rsp)
    mov ({guest_cr3} - {text} + entry_stubs)(%rip), %rax
    mov %rax, %cr3
    mov (%rsp), %rax
    add $16, %rsp
    iretq
1:
2:
    HYPERCALL_LANE_DECLINE {iret_number}

    /*
     * The event lane (`event_channel_op`): as the fast entry, closed too
     * while the domain has no port whose sends stay in it, the lane
     * also getting the guest's RCX and R11 for a bounce frame; an answer
     * leaves as the fast entry's does, on the frame the lane may have
     * pointed at the event callback.
     */
send_or_full:
    HYPERCALL_LANE_ENTER {send_number}, guest_common, 2f, {local_offset}, {local_bit}
    lea 16(%rax), %rdx
    mov %r11, %r8
    CALL_LANE {fast_evtchn_send}
    test %rax, %rax
    jns hypercall_lane_answered
    HYPERCALL_LANE_RESTORE
2:
    HYPERCALL_LANE_DECLINE {send_number}

    /*
     * A bounce lane: `fn(frame, rcx, r11)` on the entry frame (vector,
     * error, rip, cs, rflags, rsp, ss). RAX and RCX go to the entry stack
     * as on the full path, the other registers a call may clobber to the
     * hypervisor stack; the lane gets the frame and the guest's RCX and
     * R11 (they go into the bounce frame). When it declines, the full
     * path runs on the state it would have had.
     */
    .macro BOUNCE_LANE fn
    push %rcx
    push %rax
    HYPERVISOR_VIEW
    LANE_CLOSED guest_hv_view
    mov %rsp, %rax
    mov ({hv_stack_top} - {text} + entry_stubs)(%rip), %rsp
    push %rax
    push %rdx
    push %rsi
    push %rdi
    push %r8
    push %r9
    push %r10
    push %r11
    lea 16(%rax), %rdi
    mov 8(%rax), %rsi
    mov %r11, %rdx
    cld
    movabs $\fn, %rax
    call *%rax
    test %eax, %eax
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rsp
    jz guest_hv_view
    mov ({guest_cr3} - {text} + entry_stubs)(%rip), %rax
    mov %rax, %cr3
    pop %rax
    pop %rcx
    add $16, %rsp
    iretq
    .endm

    /*
     * The page-fault vector: a not-present fault from a guest tries its
     * lane first (a protection fault may be a store the hypervisor
     * emulates: straight to the full path).
     */
page_fault_common:
    testb $3, 24(%rsp)
    jz from_hypervisor
    testb $1, 8(%rsp)
    jnz guest_common
    BOUNCE_LANE {fast_page_fault}

    /* A 64-bit SYSCALL (from ring 3 or ring 1) tries its lane first. */
syscall_lane:
    BOUNCE_LANE {fast_syscall}

    /*
     * The way in from a guest (every vector but the hypercall's fast
     * number).
     */
entry_common:
    /* Stack: vector, error, rip, cs, rflags, rsp, ss */
    testb $3, 24(%rsp)
    jz from_hypervisor
guest_common:
    push %rcx
    push %rax
    movabs {hv_cr3}, %rax
    mov %rax, %cr3
guest_hv_view:
    mov %rsp, %rcx
    movabs {hv_stack_top}, %rax
    mov %rax, %rsp
    /* Frame on the entry stack (at rcx): rax, rcx, vector, error, rip, cs, rflags, rsp, ss */
    push 64(%rcx)
    push 56(%rcx)
    push 48(%rcx)
    push 40(%rcx)
    push 32(%rcx)
    push 24(%rcx)
    push 16(%rcx)
    push 8(%rcx)
    push (%rcx)
    PUSH_GPRS
    xor %ebp, %ebp
    mov %rsp, %rdi
    cld
    movabs ${guest_entry}, %rax
    call *%rax
    ud2

from_hypervisor:
    push %rcx
    push %rax
    PUSH_GPRS
    mov %rsp, %rdi
    cld
    /*
     * Taken with the guest view loaded (an NMI, #MC or #DB inside a stub,
     * before its CR3 write or after the exit's): the handler is not mapped
     * there, so load the hypervisor view for it and put the guest view
     * back after. RBX (callee-saved, restored by POP_GPRS) keeps the CR3
     * found; bit 63 (no flush) is never read back, so it is ignored.
     */
    mov %cr3, %rbx
    movabs {hv_cr3}, %rax
    mov %rax, %rcx
    btr $63, %rcx
    cmp %rcx, %rbx
    je 1f
    mov %rax, %cr3
1:
    movabs ${hypervisor_trap}, %rax
    call *%rax
    mov %cr3, %rax
    cmp %rax, %rbx
    je 2f
    mov %rbx, %cr3
2:
    POP_GPRS
    pop %rax
    pop %rcx
    add $16, %rsp
    iretq

    /*
     * SYSCALL from the guest (64-bit and compat). RSP is still the guest's:
     * save it into this CPU's entry stack with a RIP-relative store. The
     * stubs run at their trampoline address, not where they are linked, so
     * the target is named relative to `entry_stubs`: the displacement the
     * linker computes is then exactly the distance in the trampoline. Switch to the entry stack and build the same frame an
     * interrupt from user mode would have: SS, RSP, RFLAGS (R11), CS, RIP
     * (RCX), error 0, pseudo-vector.
     */
    .macro SYSCALL_STUB name, cs, vector, next
    .global \name
\name:
    mov %rsp, ({rsp_slot} - {text} + entry_stubs)(%rip)
    lea ({rsp_slot} - {text} + entry_stubs)(%rip), %rsp
    movq ${user_ss}, 8(%rsp)
    push %r11
    push $\cs
    push %rcx
    push $0
    push $\vector
    jmp \next
    .endm
    SYSCALL_STUB syscall_entry, {user_cs64}, {syscall_vector}, syscall_lane
    SYSCALL_STUB syscall32_entry, {user_cs32}, {syscall32_vector}, entry_common

    /* exit_to_guest_stub(regs): rdi = the GuestRegs at the top of the hypervisor stack. */
    .global exit_to_guest_stub
exit_to_guest_stub:
    mov %rdi, %rsp
    POP_GPRS
    /* rsp -> rax, rcx, vector, error, rip, cs, rflags, rsp, ss */
    movabs ${exit_frame}, %rcx
    mov 0(%rsp), %rax
    mov %rax, 0(%rcx)
    mov 8(%rsp), %rax
    mov %rax, 8(%rcx)
    mov 32(%rsp), %rax
    mov %rax, 16(%rcx)
    mov 40(%rsp), %rax
    mov %rax, 24(%rcx)
    mov 48(%rsp), %rax
    mov %rax, 32(%rcx)
    mov 56(%rsp), %rax
    mov %rax, 40(%rcx)
    mov 64(%rsp), %rax
    mov %rax, 48(%rcx)
    mov %rcx, %rsp
    movabs {guest_cr3}, %rax
    mov %rax, %cr3
    pop %rax
    pop %rcx
    iretq
    .balign 4096

    /* Where the trampoline maps exit_to_guest_stub: a link-time constant. */
    .global exit_to_guest_mapped
    .set exit_to_guest_mapped, exit_to_guest_stub - entry_stubs + {text}
    "#,
    hv_cr3 = const trampoline::DATA + trampoline::data::HV_CR3,
    lane = const trampoline::DATA + trampoline::data::LANE,
    work_offset = const crate::fastpath::WORK_OFFSET,
    work_bit = const crate::fastpath::WORK,
    hv_stack_top = const trampoline::DATA + trampoline::data::HV_STACK_TOP,
    guest_cr3 = const trampoline::DATA + trampoline::data::GUEST_CR3,
    exit_frame = const trampoline::stack_top(trampoline::ENTRY_STACK) - 7 * 8,
    rsp_slot = const trampoline::stack_top(trampoline::ENTRY_STACK) - 16,
    text = const trampoline::TEXT,
    user_ss = const FLAT_RING3_DS,
    user_cs64 = const FLAT_RING3_CS64,
    user_cs32 = const FLAT_RING3_CS32,
    syscall_vector = const SYSCALL_VECTOR,
    syscall32_vector = const SYSCALL32_VECTOR,
    guest_entry = sym guest_entry,
    fast_hypercall = sym super::fastpath::fast_hypercall,
    fast_iret = sym super::fastpath::fast_iret,
    fast_evtchn_send = sym super::fastpath::fast_evtchn_send,
    fast_page_fault = sym super::fastpath::fast_page_fault,
    fast_syscall = sym super::fastpath::fast_syscall,
    hypercall_vector = const HYPERCALL_VECTOR,
    page_fault_vector = const super::traps::PF_VECTOR,
    fast_number = const crate::fastpath::FAST_HYPERCALL,
    iret_number = const Hypercall::Iret as u64,
    send_number = const crate::fastpath::SEND_HYPERCALL,
    local_offset = const crate::fastpath::LOCAL_SENDS_OFFSET,
    local_bit = const crate::fastpath::LOCAL_SENDS_BIT,
    hypervisor_trap = sym hypervisor_trap,
    options(att_syntax)
);

unsafe extern "C" {
    static entry_stubs: u8;
    static syscall_entry: u8;
    static syscall32_entry: u8;
    /// `exit_to_guest_stub` at its trampoline address.
    fn exit_to_guest_mapped(regs: *const GuestRegs) -> !;
}

/// Offset of a symbol inside `.text.entry` (which the trampoline maps at
/// `trampoline::TEXT`).
fn entry_text_offset(addr: u64) -> u64 {
    addr - core::ptr::addr_of!(entry_stubs) as u64
}

/// Physical-to-trampoline bookkeeping for `trampoline.rs`: the image address
/// of the stub section's first byte.
pub fn entry_text_image_start() -> u64 {
    core::ptr::addr_of!(entry_stubs) as u64
}

/// Trampoline addresses of the 64-bit and compat `SYSCALL` entry stubs
/// (for IA32_LSTAR and IA32_CSTAR).
pub fn syscall_entries() -> (u64, u64) {
    let at = |sym: *const u8| trampoline::TEXT + entry_text_offset(sym as u64);
    (
        at(core::ptr::addr_of!(syscall_entry)),
        at(core::ptr::addr_of!(syscall32_entry)),
    )
}

/// Where IDT vector `n` must point.
pub const fn stub_address(vector: u8) -> u64 {
    trampoline::TEXT + vector as u64 * STUB_SIZE
}

/// Leaves the hypervisor for the guest whose registers are `regs`.
///
/// # Safety
/// `regs` must be the [`GuestRegs`] at the top of this CPU's hypervisor
/// stack, holding a validated guest context (CS and SS with RPL 1 or 3,
/// sane RFLAGS); this CPU's trampoline data must name the guest view to load.
#[inline(always)]
pub unsafe fn exit_to_guest(regs: &GuestRegs) -> ! {
    // SAFETY: `exit_to_guest_mapped` is `exit_to_guest_stub` as mapped in
    // the trampoline, which both views map (its address is resolved at
    // link time, so no entry computes it); the caller guarantees `regs` and
    // the context.
    unsafe { exit_to_guest_mapped(regs) }
}

/// First Rust code on every entry from a guest.
extern "C" fn guest_entry(regs: &mut GuestRegs) -> ! {
    super::traps::from_guest(regs)
}

/// Exceptions taken while the hypervisor itself runs.
extern "C" fn hypervisor_trap(regs: &mut GuestRegs) {
    super::traps::from_hypervisor(regs)
}
