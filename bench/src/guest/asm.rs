//! Every instruction sequence of the benchmark guest that Rust cannot
//! express: fenced `rdtsc`, the trap, event and syscall entry points, the
//! user-mode loop, and the page-aligned storage the benchmarks remap.
//!
//! Handlers return with `HYPERVISOR_iret`: they leave `flags` on top of a
//! hardware-style frame (`RIP, CS, RFLAGS, RSP, SS`) and jump to slot 23 of
//! the hypercall page, whose stub pushes RCX, R11 and RAX; this works on
//! both hypervisors. Every bounce frame starts with the interrupted RCX and
//! R11, which the handlers pop first (`dom0_abi::cpu`).
//!
//! Invariants:
//! - the user-mode loop lives alone in its own page(s) (`.text.bench_user`,
//!   page aligned and padded), so only that page needs to be user
//!   accessible and the kernel never executes a user page (SMEP);
//! - the remapped storage (`.bss.bench_pages`) is only ever touched through
//!   raw addresses, never through Rust references, because benchmarks unmap
//!   it.

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU32, AtomicU64};

use guest_pv_shim::dom0_abi::Hypercall;
use guest_pv_shim::dom0_abi::cpu::VGCF_IN_SYSCALL;
use guest_pv_shim::dom0_abi::event_channel::EvtchnOp;
use guest_pv_shim::dom0_abi::segment::{FLAT_USER_CS, FLAT_USER_SS};

/// Byte offset of the `iret` stub (slot 23) in the hypercall page.
const IRET_SLOT_OFFSET: usize = 23 * 32;

/// `RAX` of the user loop's `SYSCALL` for one timed bounce.
pub const SYSCALL_BOUNCE: u64 = 0;
/// `RAX` of the user loop's last `SYSCALL`: go back to the kernel for good.
pub const SYSCALL_DONE: u64 = 1;

/// Pages of scratch memory the `mmu_update` benchmarks unmap and remap.
pub const SCRATCH_PAGES: usize = 512;
/// Pages of the kernel stack used when the vCPU enters from user mode.
pub const KERNEL_STACK_PAGES: usize = 4;

/// The kernel RSP saved by `bench_enter_user` (restored by the last
/// syscall).
static SAVED_KERNEL_RSP: AtomicU64 = AtomicU64::new(0);

/// Number of events the upcall handler has taken for [`UPCALL_PORT`].
pub static UPCALLS: AtomicU64 = AtomicU64::new(0);
/// The event-channel port the benchmark counts upcalls for.
pub static UPCALL_PORT: AtomicU64 = AtomicU64::new(0);
/// The `struct evtchn_send` of `bench_syscall_send_entry`: its port.
pub static SEND_PORT: AtomicU32 = AtomicU32::new(0);
/// Virtual address of the mapped `shared_info` page (0: not mapped).
pub static SHARED_INFO_VA: AtomicU64 = AtomicU64::new(0);

// Page-aligned storage: scratch pages, a page to pin as an L1 table, a page
// to map shared_info at, the user stack and the kernel stack for user
// entries. All zero at boot (.bss).
global_asm!(
    ".pushsection .bss.bench_pages, \"aw\", @nobits",
    ".balign 4096",
    ".globl bench_scratch",
    "bench_scratch: .space {scratch}",
    ".globl bench_pin_table",
    "bench_pin_table: .space 4096",
    ".globl bench_shared_info_page",
    "bench_shared_info_page: .space 4096",
    ".globl bench_user_stack",
    "bench_user_stack: .space 4096",
    ".globl bench_grant_pages",
    "bench_grant_pages: .space 4 * 4096",
    ".globl bench_kernel_stack",
    "bench_kernel_stack: .space {kstack}",
    ".globl bench_kernel_stack_top",
    "bench_kernel_stack_top:",
    ".popsection",
    scratch = const SCRATCH_PAGES * 4096,
    kstack = const KERNEL_STACK_PAGES * 4096,
);

// Trace markers: empty functions the harness calls around one sample when
// `trace=<name>` is given, for a debugger to break on (`cargo xtask bench
// --trace`).
global_asm!(
    ".pushsection .text.bench_traps, \"ax\", @progbits",
    ".globl bench_trace_begin",
    "bench_trace_begin:",
    "ret",
    ".globl bench_trace_end",
    "bench_trace_end:",
    "ret",
    ".popsection",
);

// #PF round trip: `bench_pf_touch` loads from the address in RDI; the #PF
// handler moves the saved RIP from the load to `bench_pf_resume`. A fault
// anywhere else goes to `bench_unexpected_fault` (a panic).
global_asm!(
    ".pushsection .text.bench_traps, \"ax\", @progbits",
    ".globl bench_pf_touch",
    "bench_pf_touch:",
    "mov rax, qword ptr [rdi]",
    "bench_pf_resume:",
    "ret",
    "",
    // Both #PF handlers start alike: RCX, R11 and the error code off the
    // frame, then the saved RIP moved past the expected load (or the
    // unexpected-fault path).
    ".macro pf_resume_past_load",
    "pop rcx",
    "pop r11",
    "add rsp, 8",
    "lea rax, [rip + bench_pf_touch]",
    "cmp qword ptr [rsp], rax",
    "jne bench_pf_unexpected",
    "lea rax, [rip + bench_pf_resume]",
    "mov qword ptr [rsp], rax",
    ".endm",
    "",
    ".globl bench_pf_handler",
    "bench_pf_handler:",
    "pf_resume_past_load",
    "push 0",
    "jmp hypercall_page + {iret}",
    "bench_pf_unexpected:",
    "mov rdi, rsp",
    "and rsp, -16",
    "call {unexpected}",
    "ud2",
    "",
    // The same handler returning with a native `iretq` from ring 1: no
    // second entry. The frame's CS gets the current CPL as its RPL (a
    // kernel-mode frame may carry RPL 0, as Xen's do).
    ".globl bench_pf_handler_iretq",
    "bench_pf_handler_iretq:",
    "pf_resume_past_load",
    "mov eax, cs",
    "and eax, 3",
    "or qword ptr [rsp + 8], rax",
    "iretq",
    "",
    // Event upcall: save every caller-saved register, call the Rust
    // handler on a 16-byte aligned stack, restore, iret.
    ".globl bench_upcall_entry",
    "bench_upcall_entry:",
    "pop rcx",
    "pop r11",
    "push rax",
    "push rcx",
    "push rdx",
    "push rsi",
    "push rdi",
    "push r8",
    "push r9",
    "push r10",
    "push r11",
    "push rbx",
    "mov rbx, rsp",
    "and rsp, -16",
    "call {upcall}",
    "mov rsp, rbx",
    "pop rbx",
    "pop r11",
    "pop r10",
    "pop r9",
    "pop r8",
    "pop rdi",
    "pop rsi",
    "pop rdx",
    "pop rcx",
    "pop rax",
    "push 0",
    "jmp hypercall_page + {iret}",
    "",
    // Syscall callback: a bounce goes straight back to user mode the
    // SYSRET way; SYSCALL_DONE returns from `bench_enter_user` with the
    // loop's totals (user RDI = sum, RSI = min).
    ".globl bench_syscall_entry",
    "bench_syscall_entry:",
    "cmp rax, {done}",
    "je bench_syscall_done",
    "bench_syscall_return:",
    "pop rcx",
    "pop r11",
    "push {in_syscall}",
    "jmp hypercall_page + {iret}",
    "",
    // Syscall callback of `evtchn_user_upcall` (registered with events
    // masked): a bounce sends on `SEND_PORT` and returns the SYSRET way;
    // the iret unmasks events (user mode runs with IF set), so the
    // pending port's upcall interrupts user mode at once.
    // The same callback returning to user mode with a native `iretq`
    // (ring 1 to ring 3: no second hypervisor entry).
    ".globl bench_syscall_entry_iretq",
    "bench_syscall_entry_iretq:",
    "cmp rax, {done}",
    "je bench_syscall_done",
    "pop rcx",
    "pop r11",
    "iretq",
    "",
    ".globl bench_syscall_send_entry",
    "bench_syscall_send_entry:",
    "cmp rax, {done}",
    "je bench_syscall_done",
    "mov edi, {send}",
    "lea rsi, [rip + {send_port}]",
    "call hypercall_page + {event_channel_op}",
    "jmp bench_syscall_return",
    "",
    "bench_syscall_done:",
    "mov rsp, qword ptr [rip + {saved_rsp}]",
    "mov rax, rdi",
    "mov rdx, rsi",
    guest_pv_shim::pop_callee_saved!(),
    "ret",
    "",
    // bench_enter_user(iterations, user_rsp, rflags) -> UserTotals: enters
    // user mode at `bench_user_loop` with RAX = iterations (RAX is restored
    // from the iret frame) and `rflags` (IF clear: events stay masked).
    ".globl bench_enter_user",
    "bench_enter_user:",
    guest_pv_shim::push_callee_saved!(),
    "mov qword ptr [rip + {saved_rsp}], rsp",
    "push {user_ss}",
    "push rsi",
    "push rdx",
    "push {user_cs}",
    "lea rax, [rip + bench_user_loop]",
    "push rax",
    "push 0",
    "mov rax, rdi",
    "jmp hypercall_page + {iret}",
    ".popsection",
    iret = const IRET_SLOT_OFFSET,
    unexpected = sym bench_unexpected_fault,
    upcall = sym crate::guest::events::upcall,
    done = const SYSCALL_DONE,
    in_syscall = const VGCF_IN_SYSCALL,
    saved_rsp = sym SAVED_KERNEL_RSP,
    send = const EvtchnOp::Send as u32,
    send_port = sym SEND_PORT,
    event_channel_op = const Hypercall::EventChannelOp as usize * 32,
    user_ss = const FLAT_USER_SS,
    user_cs = const FLAT_USER_CS,
);

// The user-mode loop, alone in its page: times `iterations` bounces with
// fenced rdtsc, keeps the sum in R13 and the minimum in R14, and hands
// them to the kernel with the last syscall.
global_asm!(
    ".pushsection .text.bench_user, \"ax\", @progbits",
    ".balign 4096",
    ".globl bench_user_loop",
    "bench_user_loop:",
    "mov r12, rax",
    "xor r13d, r13d",
    "mov r14, -1",
    "test r12, r12",
    "jz 5f",
    "4:",
    "lfence",
    "rdtsc",
    "lfence",
    ".globl bench_user_window_begin",
    "bench_user_window_begin:",
    "shl rdx, 32",
    "or rax, rdx",
    "mov r15, rax",
    "mov eax, {bounce}",
    "syscall",
    ".globl bench_user_window_end",
    "bench_user_window_end:",
    "lfence",
    "rdtsc",
    "lfence",
    "shl rdx, 32",
    "or rax, rdx",
    "sub rax, r15",
    "add r13, rax",
    "cmp rax, r14",
    "cmovb r14, rax",
    "dec r12",
    "jnz 4b",
    "5:",
    "mov rdi, r13",
    "mov rsi, r14",
    "mov eax, {done}",
    "syscall",
    "ud2",
    ".balign 4096",
    ".globl bench_user_end",
    "bench_user_end:",
    ".popsection",
    bounce = const SYSCALL_BOUNCE,
    done = const SYSCALL_DONE,
);

/// What the user loop hands back.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct UserTotals {
    /// Sum of the raw sample deltas.
    pub sum: u64,
    /// Smallest raw sample delta.
    pub min: u64,
}

unsafe extern "C" {
    /// Marks the start of a traced sample (does nothing).
    pub safe fn bench_trace_begin();
    /// Marks the end of a traced sample (does nothing).
    pub safe fn bench_trace_end();
    /// Loads from `addr` (the #PF benchmark's faulting access).
    pub safe fn bench_pf_touch(addr: u64) -> u64;
    /// Enters user mode and runs the bounce loop `iterations` times.
    ///
    /// # Safety
    /// The syscall callback must be [`bench_syscall_entry`], the kernel
    /// stack for user entries must be set (`stack_switch`), a user page
    /// table must be set (`NEW_USER_BASEPTR`), the user loop's page and
    /// `user_rsp`'s page must be user accessible, and `iret` must work.
    /// `rflags` is user mode's RFLAGS (with IF set, events are unmasked
    /// there).
    pub fn bench_enter_user(iterations: u64, user_rsp: u64, rflags: u64) -> UserTotals;
    /// The #PF handler (for `set_trap_table`).
    pub fn bench_pf_handler();
    /// The #PF handler that returns with a native `iretq`.
    pub fn bench_pf_handler_iretq();
    /// The event upcall entry (for `callback_op`).
    pub fn bench_upcall_entry();
    /// The syscall callback (for `callback_op`).
    pub fn bench_syscall_entry();
    /// The syscall callback that returns with a native `iretq`.
    pub fn bench_syscall_entry_iretq();
    /// The syscall callback that sends on [`SEND_PORT`] before returning
    /// (for `callback_op`, with events masked on entry).
    pub fn bench_syscall_send_entry();
}

/// An address defined in the assembly above, as `lea` computes it.
macro_rules! symbol_address {
    ($symbol:literal) => {{
        let va: u64;
        // SAFETY: computes an address only; reads and writes no memory.
        unsafe {
            asm!(
                concat!("lea {}, [rip + ", $symbol, "]"),
                out(reg) va,
                options(pure, nomem, nostack, preserves_flags),
            );
        }
        va
    }};
}

/// Virtual address of the first scratch page.
#[must_use]
pub fn scratch_va() -> u64 {
    symbol_address!("bench_scratch")
}

/// Virtual address of the page pinned as an L1 table.
#[must_use]
pub fn pin_table_va() -> u64 {
    symbol_address!("bench_pin_table")
}

/// Virtual address of the page `shared_info` is mapped at.
#[must_use]
pub fn shared_info_page_va() -> u64 {
    symbol_address!("bench_shared_info_page")
}

/// Virtual address of the grant benchmarks' pages: the table window, the
/// page the grant is mapped over, the copy source (the granted frame) and
/// the copy destination.
#[must_use]
pub fn grant_pages_va() -> u64 {
    symbol_address!("bench_grant_pages")
}

/// Copies `len` bytes from `src` to `dst` with `rep movsb`.
///
/// # Safety
/// Both ranges must be mapped (`dst` writable), not overlap, and hold no
/// Rust object.
#[inline(always)]
pub unsafe fn rep_movsb(dst: u64, src: u64, len: u64) {
    // SAFETY: the caller's contract.
    unsafe {
        asm!(
            "rep movsb",
            inout("rdi") dst => _,
            inout("rsi") src => _,
            inout("rcx") len => _,
            options(nostack, preserves_flags),
        );
    }
}

/// Virtual address of the user stack page.
#[must_use]
pub fn user_stack_va() -> u64 {
    symbol_address!("bench_user_stack")
}

/// Top of the kernel stack for entries from user mode.
#[must_use]
pub fn kernel_stack_top() -> u64 {
    symbol_address!("bench_kernel_stack_top")
}

/// First and end address of the user loop's pages.
#[must_use]
pub fn user_code_range() -> (u64, u64) {
    (
        symbol_address!("bench_user_loop"),
        symbol_address!("bench_user_end"),
    )
}

/// Address of an entry point, for registering it.
#[must_use]
pub fn entry_address(entry: unsafe extern "C" fn()) -> u64 {
    entry as usize as u64
}

/// The TSC, fenced on both sides so no instruction before it is still
/// running and none after it has started.
#[inline(always)]
#[must_use]
pub fn rdtsc_fenced() -> u64 {
    let lo: u32;
    let hi: u32;
    // SAFETY: `lfence` and `rdtsc` change no memory; `rdtsc` is allowed at
    // the guest kernel's privilege (CR4.TSD clear on both hypervisors).
    // Not `nomem`: the compiler must not move memory accesses across it.
    unsafe {
        asm!(
            "lfence",
            "rdtsc",
            "lfence",
            out("eax") lo,
            out("edx") hi,
            options(nostack, preserves_flags),
        );
    }
    (u64::from(hi) << 32) | u64::from(lo)
}

/// The current code and stack selectors.
#[must_use]
pub fn current_cs_ss() -> (u16, u16) {
    let cs: u16;
    let ss: u16;
    // SAFETY: reading segment registers has no side effects.
    unsafe {
        asm!(
            "mov {cs:x}, cs",
            "mov {ss:x}, ss",
            cs = out(reg) cs,
            ss = out(reg) ss,
            options(nomem, nostack, preserves_flags),
        );
    }
    (cs, ss)
}

/// Issues `HYPERVISOR_iret` directly with `int $0x82` and a frame that
/// returns right after it, keeping events masked. Returns 0 if the iret
/// happened, else the hypercall's (negative) result. Only for hypervisors
/// whose stubs use `int $0x82`: there a failing iret returns like any
/// hypercall, where a jump to the stub would run into the page's `int3`
/// filler.
#[must_use]
pub fn probe_iret_int82() -> i64 {
    let ret: i64;
    // SAFETY: builds a complete iret context on the stack (SS, RSP, RFLAGS
    // with IF clear, CS, RIP = label 2, flags 0, then RCX, R11, RAX = 0 as
    // the stub would push them). A working iret resumes at label 2 with
    // RSP as it was before the pushes and RAX = 0; a failing one returns
    // after `int` with the error in RAX, and the frame is dropped by
    // restoring RSP. Either way the stack ends as it started. The guest
    // has no red zone.
    unsafe {
        asm!(
            "mov {saved}, rsp",
            "mov {sel:e}, ss",
            "push {sel}",
            "push {saved}",
            "pushfq",
            "and qword ptr [rsp], ~0x200",
            "mov {sel:e}, cs",
            "push {sel}",
            "lea {sel}, [rip + 2f]",
            "push {sel}",
            "push 0",
            "push rcx",
            "push r11",
            "xor eax, eax",
            "push rax",
            "mov eax, 23",
            "int 0x82",
            "mov rsp, {saved}",
            "2:",
            saved = out(reg) _,
            sel = out(reg) _,
            out("rax") ret,
            out("rcx") _,
            out("r11") _,
        );
    }
    ret
}

/// Called by the #PF handler for a fault it did not expect; `frame`
/// points at the saved RIP (then CS, RFLAGS, RSP, SS).
extern "C" fn bench_unexpected_fault(frame: *const u64) -> ! {
    // SAFETY: the handler passes the address of the five-word hardware
    // frame the hypervisor built on this stack.
    let [rip, cs, rflags, rsp, ss] = unsafe { frame.cast::<[u64; 5]>().read() };
    panic!(
        "unexpected #PF at rip {rip:#x} (cs {cs:#x}, rflags {rflags:#x}, rsp {rsp:#x}, ss {ss:#x})"
    );
}
