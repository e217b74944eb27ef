//! Exception handling, callbacks and user mode for test guests, in the
//! style of XTF.
//!
//! [`init`] registers a virtual IDT (`set_trap_table`) with an entry stub
//! for every vector 0-20, plus:
//! - [`RET_TO_KERNEL_VECTOR`] (0x20, DPL 3): `int $0x20` from user code
//!   ends a [`run_user`] call (on real hardware; see below);
//! - [`TEST_VECTOR`] (0x21, DPL 0 until a test changes it) and
//!   [`SOFT_VECTOR`] (0x80, DPL 3): software-interrupt vectors for tests;
//!
//! and the event, failsafe and syscall callbacks (stubs for syscall32,
//! sysenter and NMI exist for [`register_callback`]), a kernel stack for
//! entries from user mode (`stack_switch`), and maps the shared_info page
//! (for `cr2` and the upcall mask).
//!
//! Every entry stub pops RCX and R11 off the bounce frame (Xen's 64-bit
//! layout: RCX, R11, [error code], RIP, CS, RFLAGS, RSP, SS), pushes a zero
//! error code where the CPU gives none and the vector number, saves every
//! general register and calls the dispatcher with a [`TrapFrame`]. The
//! dispatcher records the event as a [`Trap`], then:
//! - a fault whose RIP lies in a range of the fixup table (`.ex_table`,
//!   written by [`fixup_asm!`](crate::fixup_asm)) resumes at the range's
//!   fixup address;
//! - `#DB` returns with TF cleared; `#BP`, `#OF` and the software-interrupt
//!   vectors return after the instruction;
//! - the `ud2` at [`user_exit_entry`] (user code jumps there when done),
//!   `int $0x20`, and a user `SYSCALL` with RAX = [`USER_EXIT`] end the
//!   current [`run_user`] call (back on the kernel stack it was made on);
//! - anything else is unexpected: the guest panics (and crashes).
//!
//! A test may install a [`Hook`] that sees every entry first.
//!
//! `int $n` through a gate whose DPL is below the caller's privilege
//! reaches the hypervisor as #GP, whose error code names the vector. Under
//! QEMU 7.2's TCG that error code is `n * 16 + 2` instead of the
//! architectural `n * 8 + 2`, so Xen (which decodes `ec >> 3`) looks up
//! trap-table entry `2n mod 256` instead of `n`. Only vectors with a real
//! DPL-3 gate in the hypervisor's IDT (0x80 on Xen, and #BP/#OF) are
//! immune; user code therefore ends runs with an exception, not
//! `int $0x20`.
//!
//! Returns use `HYPERVISOR_iret` (push a flags word, jump to hypercall
//! slot 23) or a native `iretq`, as [`set_return_mode`] says. Here the
//! kernel runs in ring 1; its frames carry RPL 0 as Xen's do, so before an
//! `iretq` to the kernel the shim ORs the kernel's RPL 1 into the frame's
//! CS (frames to user mode are used as they are). On Xen the shim always uses
//! `HYPERVISOR_iret`:
//! - to user mode, because a native `iretq` would leave Xen believing the
//!   guest is still in kernel mode;
//! - to the kernel, because Xen's documented alternative (OR RPL 3 into the
//!   frame's CS and SS, then `iretq` at CPL 3) faults under QEMU 7.2's TCG
//!   when Xen has CR4.SMAP on: QEMU does IRETQ's stack reads as supervisor
//!   accesses, so they hit SMAP on the ring-3 kernel's user pages (#PF,
//!   error code 1, cr2 = RSP). It works with Xen's `smap=0` and on real
//!   hardware.
//!
//! Invariants: the statics written by the dispatcher are only read by the
//! main flow after the entry it records has returned. They belong to
//! vCPU 0: secondary vCPUs ([`crate::smp`]) share the trap table and
//! callbacks, and their fixups work, but their records may mix with vCPU
//! 0's. Rust code of the shim uses no FPU, SSE, FS or GS.

use core::arch::{asm, global_asm};
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};

use dom0_abi::cpu::{CallbackFlags, CallbackRegister, CallbackType, TrapInfo, VGCF_IN_SYSCALL};
use dom0_abi::hypercall::HYPERCALL_SLOT_SIZE;
use dom0_abi::mmu::{MmuextCmd, PteFlags};

use crate::hypercall;
use crate::{mm, shared, smp};

/// Software vector of the "return to kernel" gate (DPL 3).
pub const RET_TO_KERNEL_VECTOR: u8 = 0x20;
/// Software vector tests may reconfigure (DPL 0 after [`init`]).
pub const TEST_VECTOR: u8 = 0x21;
/// Software vector open to user mode (DPL 3), like Linux's `int $0x80`.
pub const SOFT_VECTOR: u8 = 0x80;

/// Pseudo-vector recorded for the syscall callback.
pub const VECTOR_SYSCALL: u32 = 0x100;
/// Pseudo-vector recorded for the event callback.
pub const VECTOR_EVENT: u32 = 0x200;
/// Pseudo-vector recorded for the failsafe callback.
pub const VECTOR_FAILSAFE: u32 = 0x300;
/// Pseudo-vector recorded for the sysenter callback.
pub const VECTOR_SYSENTER: u32 = 0x400;
/// Pseudo-vector recorded for the syscall32 callback.
pub const VECTOR_SYSCALL32: u32 = 0x500;
/// Pseudo-vector recorded for the NMI callback.
pub const VECTOR_NMI_CALLBACK: u32 = 0x600;

/// RAX value with which a user `SYSCALL` ends the current [`run_user`].
pub const USER_EXIT: u64 = 0xE817_0000;

/// Exception vectors the trap table covers (0-20).
pub const EXCEPTION_VECTORS: u8 = 21;

/// `RFLAGS.TF`.
pub const RFLAGS_TF: u64 = 1 << 8;
/// `RFLAGS.IF`.
pub const RFLAGS_IF: u64 = 1 << 9;
/// `RFLAGS.AC`.
pub const RFLAGS_AC: u64 = 1 << 18;

/// Byte offset of the iret stub (slot 23) in the hypercall page.
const IRET_SLOT_OFFSET: usize = 23 * HYPERCALL_SLOT_SIZE;

/// The registers and bounce frame as the common entry code saves them
/// (lowest address first).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs, reason = "one field per register, named after it")]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    /// Vector or pseudo-vector (`VECTOR_*`).
    pub vector: u64,
    /// Error code (0 where the CPU pushes none).
    pub error_code: u64,
    /// Interrupted RIP.
    pub rip: u64,
    /// Interrupted CS, with the saved upcall mask in bits 32-39.
    pub cs: u64,
    /// Interrupted RFLAGS.
    pub rflags: u64,
    /// Interrupted RSP.
    pub rsp: u64,
    /// Interrupted SS.
    pub ss: u64,
}

/// One recorded entry (exception, software interrupt or callback).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trap {
    /// Vector, or a `VECTOR_*` pseudo-vector for callbacks.
    pub vector: u32,
    /// Error code from the frame (0 if the vector has none).
    pub error_code: u64,
    /// RIP slot of the frame.
    pub rip: u64,
    /// CS slot of the frame, whole (saved upcall mask in bits 32-39).
    pub cs: u64,
    /// RFLAGS slot of the frame.
    pub rflags: u64,
    /// RSP slot of the frame.
    pub rsp: u64,
    /// SS slot of the frame.
    pub ss: u64,
    /// RCX slot of the frame.
    pub rcx: u64,
    /// R11 slot of the frame.
    pub r11: u64,
    /// RAX when the entry happened.
    pub rax: u64,
    /// `vcpu_info.arch.cr2` read by the handler (page faults only, and
    /// only with shared_info mapped).
    pub cr2: Option<u64>,
    /// The bounce frame's address (RSP when the handler was entered).
    pub frame: u64,
    /// `evtchn_upcall_mask` as the handler found it (shared_info mapped).
    pub mask: Option<u8>,
    /// CS the handler ran with.
    pub handler_cs: u16,
    /// SS the handler ran with.
    pub handler_ss: u16,
    /// Whether the fixup table redirected the return.
    pub fixed_up: bool,
}

impl Trap {
    /// The CS selector of the frame.
    #[must_use]
    pub const fn cs_selector(&self) -> u16 {
        (self.cs & 0xFFFF) as u16
    }

    /// The upcall mask saved in the CS slot (bits 32-39).
    #[must_use]
    pub const fn saved_mask(&self) -> u8 {
        ((self.cs >> 32) & 0xFF) as u8
    }

    /// Whether the frame shows user mode (`CS & 2`, right on both
    /// platforms).
    #[must_use]
    pub const fn from_user(&self) -> bool {
        self.cs & 2 != 0
    }
}

/// What the hook wants done with an entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// Continue with the default handling.
    Default,
    /// Return to the (possibly modified) frame.
    Return,
    /// End the current [`run_user`] call.
    ResumeKernel,
}

/// A test's handler, called first for every entry with the saved frame
/// (which it may change) and the record made of it.
pub type Hook = fn(&mut TrapFrame, &Trap) -> Disposition;

/// How the entry stubs return.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReturnMode {
    /// `HYPERVISOR_iret` (flags 0, or `VGCF_in_syscall` after a syscall).
    Hypercall,
    /// Native `iretq` (RPL fixed up for Xen's ring-3 kernel).
    Native,
}

/// How [`run_user`] enters user mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserEntry {
    /// `HYPERVISOR_iret` with flags 0.
    Hypercall,
    /// Native `iretq` from the kernel. On Xen the kernel runs in ring 3
    /// and an `iretq` cannot change Xen's notion of the guest mode, so
    /// there this also uses `HYPERVISOR_iret`.
    Native,
}

/// A static written by the dispatcher and read by the main flow.
struct Slot<T>(UnsafeCell<T>);

// SAFETY: on one vCPU the dispatcher and the main flow never access a slot
// at the same time (the main flow reads only after the entry returned,
// module invariant), and values are copied in and out whole. Secondary
// vCPUs enter the dispatcher only for exceptions the tests expect not to
// happen there (a fixup at most), and never read the slots.
unsafe impl<T: Copy> Sync for Slot<T> {}

impl<T: Copy> Slot<T> {
    const fn new(v: T) -> Slot<T> {
        Slot(UnsafeCell::new(v))
    }

    fn get(&self) -> T {
        // SAFETY: see the `Sync` impl: no concurrent writer.
        unsafe { self.0.get().read_volatile() }
    }

    fn set(&self, v: T) {
        // SAFETY: see the `Sync` impl: no concurrent access.
        unsafe { self.0.get().write_volatile(v) }
    }
}

const NO_TRAP: Trap = Trap {
    vector: 0,
    error_code: 0,
    rip: 0,
    cs: 0,
    rflags: 0,
    rsp: 0,
    ss: 0,
    rcx: 0,
    r11: 0,
    rax: 0,
    cr2: None,
    frame: 0,
    mask: None,
    handler_cs: 0,
    handler_ss: 0,
    fixed_up: false,
};

/// The last exception, software interrupt or syscall-type callback.
static LAST: Slot<Trap> = Slot::new(NO_TRAP);
/// How many entries `LAST` has recorded.
static COUNT: AtomicU64 = AtomicU64::new(0);
/// The entry that ended the last `run_user` call.
static EXIT: Slot<Trap> = Slot::new(NO_TRAP);
/// The last event (or NMI or failsafe) callback.
static LAST_EVENT: Slot<Trap> = Slot::new(NO_TRAP);
/// How many event-type callbacks arrived.
static EVENTS: AtomicU64 = AtomicU64::new(0);
/// 1: the current return uses `iretq` (read by the entry code).
static RET_NATIVE: AtomicU8 = AtomicU8::new(0);
/// The flags word pushed for `HYPERVISOR_iret` (read by the entry code).
static IRET_FLAGS: AtomicU64 = AtomicU64::new(0);
/// Configured return mode: true = native.
static MODE_NATIVE: AtomicBool = AtomicBool::new(false);
/// Flags for returns from the syscall callback.
static SYSCALL_IRET_FLAGS: AtomicU64 = AtomicU64::new(VGCF_IN_SYSCALL);
/// Kernel RSP saved by `shim_enter_user` (read by the entry code).
static USER_RETURN_RSP: AtomicU64 = AtomicU64::new(0);
/// Whether a `run_user` call's user code may be running: set by
/// `shim_enter_user` once the kernel context is saved, cleared by the
/// entry that ends the call (before it resumes the kernel), so that an
/// event upcall in the kernel on either side of the call never ends it.
static IN_USER_RUN: AtomicBool = AtomicBool::new(false);
/// The test's hook (a `Hook` as `usize`, 0 for none).
static HOOK: AtomicUsize = AtomicUsize::new(0);
/// Whether the guest runs on Xen (set by `init`).
static ON_XEN: AtomicBool = AtomicBool::new(false);

/// Size of the kernel stack for entries from user mode.
const ENTRY_STACK_SIZE: usize = 16 * 1024;

// The entry stubs, the common entry and exit code, user-mode entry and
// the kernel-resume path.
global_asm!(
    ".pushsection .text.shim_traps, \"ax\", @progbits",
    // Stub for an entry without an error code: pop the RCX/R11 slots,
    // push a zero error code and the vector.
    ".macro SHIM_STUB name, vec",
    ".balign 16",
    ".globl \\name",
    "\\name:",
    "pop rcx",
    "pop r11",
    "push 0",
    "push \\vec",
    "jmp shim_trap_common",
    ".endm",
    // Stub for an exception with an error code.
    ".macro SHIM_STUB_EC name, vec",
    ".balign 16",
    ".globl \\name",
    "\\name:",
    "pop rcx",
    "pop r11",
    "push \\vec",
    "jmp shim_trap_common",
    ".endm",
    "SHIM_STUB shim_vec_0, 0",
    "SHIM_STUB shim_vec_1, 1",
    "SHIM_STUB shim_vec_2, 2",
    "SHIM_STUB shim_vec_3, 3",
    "SHIM_STUB shim_vec_4, 4",
    "SHIM_STUB shim_vec_5, 5",
    "SHIM_STUB shim_vec_6, 6",
    "SHIM_STUB shim_vec_7, 7",
    "SHIM_STUB_EC shim_vec_8, 8",
    "SHIM_STUB shim_vec_9, 9",
    "SHIM_STUB_EC shim_vec_10, 10",
    "SHIM_STUB_EC shim_vec_11, 11",
    "SHIM_STUB_EC shim_vec_12, 12",
    "SHIM_STUB_EC shim_vec_13, 13",
    "SHIM_STUB_EC shim_vec_14, 14",
    "SHIM_STUB shim_vec_15, 15",
    "SHIM_STUB shim_vec_16, 16",
    "SHIM_STUB_EC shim_vec_17, 17",
    "SHIM_STUB shim_vec_18, 18",
    "SHIM_STUB shim_vec_19, 19",
    "SHIM_STUB shim_vec_20, 20",
    "SHIM_STUB shim_vec_32, 32",
    "SHIM_STUB shim_vec_33, 33",
    "SHIM_STUB shim_vec_128, 128",
    "SHIM_STUB shim_cb_syscall, 0x100",
    "SHIM_STUB shim_cb_event, 0x200",
    "SHIM_STUB shim_cb_sysenter, 0x400",
    "SHIM_STUB shim_cb_syscall32, 0x500",
    "SHIM_STUB shim_cb_nmi, 0x600",
    // Failsafe frame: RCX, R11, DS, ES, FS, GS, then as usual.
    ".balign 16",
    ".globl shim_cb_failsafe",
    "shim_cb_failsafe:",
    "pop rcx",
    "pop r11",
    "add rsp, 32",
    "push 0",
    "push 0x300",
    "jmp shim_trap_common",
    // Common entry: save the registers, call the dispatcher on a 16-byte
    // aligned stack, then return as it says.
    ".balign 16",
    "shim_trap_common:",
    "push rdi",
    "push rsi",
    "push rdx",
    "push rcx",
    "push rax",
    "push r8",
    "push r9",
    "push r10",
    "push r11",
    "push rbx",
    "push rbp",
    "push r12",
    "push r13",
    "push r14",
    "push r15",
    "mov rdi, rsp",
    "mov rbx, rsp",
    "and rsp, -16",
    "cld",
    "call {dispatch}",
    "mov rsp, rbx",
    "cmp rax, 1",
    "je shim_resume_kernel",
    "pop r15",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "pop r11",
    "pop r10",
    "pop r9",
    "pop r8",
    "pop rax",
    "pop rcx",
    "pop rdx",
    "pop rsi",
    "pop rdi",
    "add rsp, 16",
    "cmp byte ptr [rip + {ret_native}], 0",
    "jne 2f",
    "push qword ptr [rip + {iret_flags}]",
    "jmp hypercall_page + {iret_slot}",
    // A kernel-mode frame carries RPL 0 (as on Xen): give it the ring the
    // kernel runs in, 1, or the iretq would be refused and completed by
    // the hypervisor instead.
    "2:",
    "test byte ptr [rsp + 8], 3",
    "jnz 3f",
    "or byte ptr [rsp + 8], 1",
    "3:",
    "iretq",
    // End a run_user call: back to the kernel stack shim_enter_user saved.
    ".balign 16",
    "shim_resume_kernel:",
    "mov rsp, qword ptr [rip + {user_rsp}]",
    crate::pop_callee_saved!(),
    "ret",
    // shim_enter_user(frame: *const [u64; 5] = RIP, CS, RFLAGS, RSP, SS,
    // native: u64): saves the callee-saved registers and RSP, then enters
    // the frame with HYPERVISOR_iret (native == 0) or iretq. Returns when
    // the user code ends the run (shim_resume_kernel).
    ".balign 16",
    ".globl shim_enter_user",
    "shim_enter_user:",
    crate::push_callee_saved!(),
    "mov qword ptr [rip + {user_rsp}], rsp",
    "mov byte ptr [rip + {in_user_run}], 1",
    "push qword ptr [rdi + 32]",
    "push qword ptr [rdi + 24]",
    "push qword ptr [rdi + 16]",
    "push qword ptr [rdi + 8]",
    "push qword ptr [rdi]",
    "test rsi, rsi",
    "jnz 2f",
    "push 0",
    "jmp hypercall_page + {iret_slot}",
    "2:",
    "iretq",
    ".popsection",
    // The stub addresses, in the order of `STUB_VECTORS`.
    ".pushsection .rodata.shim_stub_table, \"a\", @progbits",
    ".balign 8",
    ".globl shim_stub_table",
    "shim_stub_table:",
    ".quad shim_vec_0, shim_vec_1, shim_vec_2, shim_vec_3, shim_vec_4",
    ".quad shim_vec_5, shim_vec_6, shim_vec_7, shim_vec_8, shim_vec_9",
    ".quad shim_vec_10, shim_vec_11, shim_vec_12, shim_vec_13, shim_vec_14",
    ".quad shim_vec_15, shim_vec_16, shim_vec_17, shim_vec_18, shim_vec_19",
    ".quad shim_vec_20, shim_vec_32, shim_vec_33, shim_vec_128",
    ".quad shim_cb_syscall, shim_cb_event, shim_cb_failsafe",
    ".quad shim_cb_sysenter, shim_cb_syscall32, shim_cb_nmi",
    ".popsection",
    // Kernel stack for entries from user mode.
    ".pushsection .bss.shim_entry_stack, \"aw\", @nobits",
    ".balign 16",
    "shim_entry_stack:",
    ".space {entry_stack}",
    ".globl shim_entry_stack_top",
    "shim_entry_stack_top:",
    ".popsection",
    dispatch = sym dispatch,
    ret_native = sym RET_NATIVE,
    iret_flags = sym IRET_FLAGS,
    user_rsp = sym USER_RETURN_RSP,
    in_user_run = sym IN_USER_RUN,
    iret_slot = const IRET_SLOT_OFFSET,
    entry_stack = const ENTRY_STACK_SIZE,
);

/// The vectors with a stub, in the order of `shim_stub_table`.
const STUB_VECTORS: [u8; 24] = [
    0,
    1,
    2,
    3,
    4,
    5,
    6,
    7,
    8,
    9,
    10,
    11,
    12,
    13,
    14,
    15,
    16,
    17,
    18,
    19,
    20,
    RET_TO_KERNEL_VECTOR,
    TEST_VECTOR,
    SOFT_VECTOR,
];

/// Callback stubs, following the vector stubs in `shim_stub_table`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Callback {
    /// The syscall callback (64-bit user `SYSCALL`).
    Syscall,
    /// The event-channel upcall.
    Event,
    /// The failsafe callback.
    Failsafe,
    /// The sysenter callback.
    Sysenter,
    /// The syscall32 callback.
    Syscall32,
    /// The NMI callback.
    Nmi,
}

unsafe extern "C" {
    /// Entry-stub addresses (vectors, then callbacks).
    static shim_stub_table: [u64; 30];
    /// Top of the kernel stack for entries from user mode.
    static shim_entry_stack_top: u8;
    /// Enters user mode (see the assembly above).
    fn shim_enter_user(frame: *const [u64; 5], native: u64);
    /// Start of the fixup table (from the linker script).
    static __ex_table_start: u64;
    /// End of the fixup table.
    static __ex_table_end: u64;
}

/// The address of the entry stub for `vector`, if the shim has one
/// (0-20, 0x20, 0x21, 0x80).
#[must_use]
pub fn stub_address(vector: u8) -> Option<u64> {
    let i = STUB_VECTORS.iter().position(|&v| v == vector)?;
    // SAFETY: `shim_stub_table` is an immutable table in `.rodata`.
    Some(unsafe { shim_stub_table[i] })
}

/// The address of a callback's entry stub.
#[must_use]
pub fn callback_address(cb: Callback) -> u64 {
    let i = STUB_VECTORS.len() + cb as usize;
    // SAFETY: as in `stub_address`.
    unsafe { shim_stub_table[i] }
}

/// The top of the kernel stack registered with `stack_switch`.
#[must_use]
pub fn entry_stack_top() -> u64 {
    core::ptr::addr_of!(shim_entry_stack_top) as u64
}

/// Whether `vector` pushes an error code.
const fn has_error_code(vector: u64) -> bool {
    matches!(vector, 8 | 10..=14 | 17)
}

/// The fixup-table entry covering `rip`: `[start, end, fixup]`.
fn find_fixup(rip: u64) -> Option<u64> {
    // SAFETY: the linker script brackets `.ex_table` with these symbols;
    // it holds whole `[u64; 3]` entries written by `fixup_asm!`.
    let table: &[[u64; 3]] = unsafe {
        let start = core::ptr::addr_of!(__ex_table_start).cast::<[u64; 3]>();
        let end = core::ptr::addr_of!(__ex_table_end) as usize;
        let len = (end - start as usize) / size_of::<[u64; 3]>();
        core::slice::from_raw_parts(start, len)
    };
    table
        .iter()
        .find(|e| (e[0]..e[1]).contains(&rip))
        .map(|e| e[2])
}

/// The CS and SS the code runs with.
#[must_use]
pub fn current_cs_ss() -> (u16, u16) {
    let (cs, ss): (u16, u16);
    // SAFETY: reads two segment registers; no memory or flags touched.
    unsafe {
        asm!(
            "mov {0:x}, cs",
            "mov {1:x}, ss",
            out(reg) cs,
            out(reg) ss,
            options(nomem, nostack, preserves_flags),
        );
    }
    (cs, ss)
}

/// Chooses the return path and sets the entry code's statics.
fn set_return(iret_flags: u64) {
    let native = MODE_NATIVE.load(Ordering::Relaxed) && !ON_XEN.load(Ordering::Relaxed);
    RET_NATIVE.store(u8::from(native), Ordering::Relaxed);
    IRET_FLAGS.store(iret_flags, Ordering::Relaxed);
}

/// Return value of `dispatch` for "return to the frame".
const ACTION_RETURN: u64 = 0;
/// Return value of `dispatch` for "end the run_user call".
const ACTION_RESUME_KERNEL: u64 = 1;

/// The record of an entry.
fn record(frame: &TrapFrame) -> Trap {
    let frame_base = core::ptr::addr_of!(frame.rip) as u64
        - 16
        - if has_error_code(frame.vector) { 8 } else { 0 };
    let (handler_cs, handler_ss) = current_cs_ss();
    Trap {
        vector: u32::try_from(frame.vector).unwrap_or(u32::MAX),
        error_code: frame.error_code,
        rip: frame.rip,
        cs: frame.cs,
        rflags: frame.rflags,
        rsp: frame.rsp,
        ss: frame.ss,
        rcx: frame.rcx,
        r11: frame.r11,
        rax: frame.rax,
        cr2: if frame.vector == 14 {
            shared::cr2()
        } else {
            None
        },
        frame: frame_base,
        mask: shared::upcall_mask(),
        handler_cs,
        handler_ss,
        fixed_up: false,
    }
}

/// Called by the common entry code with the saved frame.
extern "C" fn dispatch(frame: *mut TrapFrame) -> u64 {
    // SAFETY: the entry code passes the address of the frame it saved on
    // the current stack; nothing else refers to it until we return.
    let frame = unsafe { &mut *frame };
    let mut rec = record(frame);
    let hook = HOOK.load(Ordering::Relaxed);
    if hook != 0 {
        // SAFETY: `HOOK` only ever holds 0 or a `Hook` stored by `set_hook`.
        let hook: Hook = unsafe { core::mem::transmute::<usize, Hook>(hook) };
        match hook(frame, &rec) {
            Disposition::Default => {}
            Disposition::Return => {
                note(rec);
                set_return(0);
                return ACTION_RETURN;
            }
            Disposition::ResumeKernel => {
                EXIT.set(rec);
                return resume_kernel();
            }
        }
    }
    let vector = frame.vector;
    match vector {
        0x20 => {
            EXIT.set(rec);
            resume_kernel()
        }
        0x100 => {
            if frame.rax == USER_EXIT && in_user_run() {
                EXIT.set(rec);
                return resume_kernel();
            }
            note(rec);
            set_return(SYSCALL_IRET_FLAGS.load(Ordering::Relaxed));
            ACTION_RETURN
        }
        0x400 | 0x500 => {
            note(rec);
            if in_user_run() {
                EXIT.set(rec);
                return resume_kernel();
            }
            set_return(0);
            ACTION_RETURN
        }
        0x200 | 0x300 | 0x600 => {
            LAST_EVENT.set(rec);
            EVENTS.fetch_add(1, Ordering::Relaxed);
            if vector == 0x200 {
                shared::set_upcall_pending(0);
            }
            set_return(0);
            ACTION_RETURN
        }
        6 if frame.rip == user_exit_entry() && in_user_run() => {
            EXIT.set(rec);
            resume_kernel()
        }
        _ => {
            // Traps report the RIP after the instruction, which may start
            // the next fixup range: only faults are fixed up.
            let trap_type = matches!(vector, 1 | 3 | 4 | 0x21 | 0x80);
            if let Some(fixup) = find_fixup(frame.rip).filter(|_| !trap_type) {
                frame.rip = fixup;
                rec.fixed_up = true;
            } else if vector == 1 {
                frame.rflags &= !RFLAGS_TF;
            } else if !trap_type {
                panic!(
                    "unexpected exception {vector} error {:#x} at {:#x} cs {:#x} cr2 {:?} rsp {:#x}",
                    frame.error_code, frame.rip, frame.cs, rec.cr2, frame.rsp
                );
            }
            note(rec);
            set_return(0);
            ACTION_RETURN
        }
    }
}

/// Records an exception-type entry.
fn note(rec: Trap) {
    LAST.set(rec);
    COUNT.fetch_add(1, Ordering::Relaxed);
}

/// Whether the running entry interrupted a [`run_user`] call: its user
/// code, or the kernel entries that interrupt it. Only the vCPU that
/// runs it can be in one (`run_user` runs on vCPU 0: the entry stack and
/// the saved kernel context are single); an entry on a secondary vCPU's
/// stack is never part of it.
#[must_use]
pub fn in_user_run() -> bool {
    let here = 0u8;
    IN_USER_RUN.load(Ordering::Relaxed) && !smp::on_secondary_stack(&raw const here as u64)
}

/// Ends the current `run_user` call (or, outside one, panics: there is no
/// kernel context to go back to). The call is over from here on: an
/// event that interrupts the kernel before `run_user` returns is an
/// ordinary kernel entry.
fn resume_kernel() -> u64 {
    assert!(in_user_run(), "return-to-kernel request outside run_user");
    IN_USER_RUN.store(false, Ordering::Relaxed);
    ACTION_RESUME_KERNEL
}

/// A step of [`init`] that failed, with the hypercall's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InitError {
    /// What was being set up.
    pub step: &'static str,
    /// The hypercall's result.
    pub ret: i64,
}

/// The trap table [`init`] installs: every stub vector with DPL 0 and
/// event masking (`#BP`, `#OF`, 0x20 and 0x80 with DPL 3), terminated.
#[must_use]
pub fn default_trap_table() -> [TrapInfo; STUB_VECTORS.len() + 1] {
    let (cs, _) = current_cs_ss();
    let mut table = [TrapInfo::default(); STUB_VECTORS.len() + 1];
    for (entry, &vector) in table.iter_mut().zip(STUB_VECTORS.iter()) {
        let dpl = match vector {
            3 | 4 | RET_TO_KERNEL_VECTOR | SOFT_VECTOR => 3,
            _ => 0,
        };
        *entry = TrapInfo {
            vector,
            flags: dpl | TrapInfo::FLAG_IF,
            cs,
            address: stub_address(vector).unwrap_or(0),
        };
    }
    table
}

/// Installs one trap-table entry for `vector` with `flags` and the
/// shim's stub (or `address` if given). Returns the hypercall's result.
pub fn set_trap(vector: u8, flags: u8, address: Option<u64>) -> i64 {
    let (cs, _) = current_cs_ss();
    let table = [
        TrapInfo {
            vector,
            flags,
            cs,
            address: address.or_else(|| stub_address(vector)).unwrap_or(0),
        },
        TrapInfo::default(),
    ];
    // SAFETY: the handler is one of the shim's stubs or an address the
    // caller chose on purpose (tests of the hypercall).
    unsafe { hypercall::set_trap_table(&table) }
}

/// Registers callback `kind` at the shim's stub with `flags`.
pub fn register_callback(kind: CallbackType, cb: Callback, flags: CallbackFlags) -> i64 {
    let reg = CallbackRegister {
        kind: kind as u16,
        flags: flags.bits(),
        pad: 0,
        address: callback_address(cb),
    };
    // SAFETY: the address is the shim's entry stub for this callback.
    unsafe { hypercall::callback_register(&reg) }
}

/// Sets up exception handling (see the module documentation). Returns the
/// first step that failed; steps after it are not attempted, except that
/// a failure to map shared_info is not fatal (it only means no `cr2` and
/// no upcall mask in records) and is reported last.
pub fn init() -> Result<(), InitError> {
    ON_XEN.store(crate::platform::on_xen(), Ordering::Relaxed);
    let table = default_trap_table();
    // SAFETY: every handler in the table is one of the shim's stubs.
    let ret = unsafe { hypercall::set_trap_table(&table) };
    if ret != 0 {
        return Err(InitError {
            step: "set_trap_table",
            ret,
        });
    }
    let (_, ss) = current_cs_ss();
    // SAFETY: the entry stack is reserved for entries from user mode.
    let ret = unsafe { hypercall::stack_switch(u64::from(ss), entry_stack_top()) };
    if ret != 0 {
        return Err(InitError {
            step: "stack_switch",
            ret,
        });
    }
    let callbacks = [
        (
            CallbackType::Event,
            Callback::Event,
            CallbackFlags::empty(),
            "register event callback",
        ),
        (
            CallbackType::Failsafe,
            Callback::Failsafe,
            CallbackFlags::empty(),
            "register failsafe callback",
        ),
        (
            CallbackType::Syscall,
            Callback::Syscall,
            CallbackFlags::MASK_EVENTS,
            "register syscall callback",
        ),
    ];
    for (kind, cb, flags, step) in callbacks {
        let ret = register_callback(kind, cb, flags);
        if ret != 0 {
            return Err(InitError { step, ret });
        }
    }
    let ret = shared::map();
    if ret != 0 {
        return Err(InitError {
            step: "map shared_info",
            ret,
        });
    }
    Ok(())
}

/// Whether [`init`] found Xen (cached).
#[must_use]
pub fn on_xen() -> bool {
    ON_XEN.load(Ordering::Relaxed)
}

/// Chooses how entry stubs return from now on.
pub fn set_return_mode(mode: ReturnMode) {
    MODE_NATIVE.store(mode == ReturnMode::Native, Ordering::Relaxed);
}

/// The flags word for returns from the syscall callback (default
/// `VGCF_in_syscall`).
pub fn set_syscall_iret_flags(flags: u64) {
    SYSCALL_IRET_FLAGS.store(flags, Ordering::Relaxed);
}

/// Installs (or, with `None`, removes) the test's hook.
pub fn set_hook(hook: Option<Hook>) {
    HOOK.store(hook.map_or(0, |h| h as usize), Ordering::Relaxed);
}

/// How many exception-type entries were recorded so far.
#[must_use]
pub fn count() -> u64 {
    COUNT.load(Ordering::Relaxed)
}

/// The last recorded exception-type entry.
#[must_use]
pub fn last() -> Trap {
    LAST.get()
}

/// The entry that ended the last [`run_user`] call.
#[must_use]
pub fn last_exit() -> Trap {
    EXIT.get()
}

/// How many event, failsafe or NMI callbacks arrived so far.
#[must_use]
pub fn event_count() -> u64 {
    EVENTS.load(Ordering::Relaxed)
}

/// The last event, failsafe or NMI callback.
#[must_use]
pub fn last_event() -> Trap {
    LAST_EVENT.get()
}

/// Runs `f` and returns its result with the last entry it caused, if any.
pub fn catch<R>(f: impl FnOnce() -> R) -> (R, Option<Trap>) {
    let before = count();
    let r = f();
    let trap = (count() != before).then(last);
    (r, trap)
}

/// `push` of the System V callee-saved registers, as one line of an
/// `asm!` or `global_asm!` template (Intel syntax); [`pop_callee_saved`]
/// undoes it.
#[macro_export]
macro_rules! push_callee_saved {
    () => {
        "push rbx\npush rbp\npush r12\npush r13\npush r14\npush r15"
    };
}

/// `pop` of what [`push_callee_saved`] pushed, in reverse order.
#[macro_export]
macro_rules! pop_callee_saved {
    () => {
        "pop r15\npop r14\npop r13\npop r12\npop rbp\npop rbx"
    };
}

/// Inline assembly whose faults resume right after it: the fixup table
/// gets an entry covering every instruction of the block.
///
/// Usage: `fixup_asm!("insn", "insn"; operands and options)`. The block
/// must not use the local labels `2` and `3`. A fault inside it is
/// recorded (see [`catch`]) and execution continues at its end with the
/// registers as they were when the fault happened.
#[macro_export]
macro_rules! fixup_asm {
    ($($insn:literal),+ $(; $($rest:tt)*)?) => {
        core::arch::asm!(
            "2:",
            $($insn,)+
            "3:",
            ".pushsection .ex_table, \"a\"",
            ".balign 8",
            ".quad 2b, 3b, 3b",
            ".popsection",
            $($($rest)*)?
        )
    };
}

/// Reads the `u64` at `va`; a fault gives its record instead.
pub fn try_read_u64(va: u64) -> Result<u64, Trap> {
    let mut value: u64 = 0;
    let (_, trap) = catch(|| {
        // SAFETY: a single load through inline assembly: it creates no
        // reference, and a fault resumes after it (fixup table).
        unsafe {
            fixup_asm!("mov {v}, qword ptr [{a}]"; a = in(reg) va, v = inout(reg) value, options(nostack));
        }
    });
    trap.map_or(Ok(value), Err)
}

/// Writes `value` to the `u64` at `va`; a fault gives its record.
///
/// # Safety
/// `va` must not be memory the running Rust code relies on.
pub unsafe fn try_write_u64(va: u64, value: u64) -> Result<(), Trap> {
    let (_, trap) = catch(|| {
        // SAFETY: the caller's contract; a fault resumes after the store.
        unsafe {
            fixup_asm!("mov qword ptr [{a}], {v}"; a = in(reg) va, v = in(reg) value, options(nostack));
        }
    });
    trap.map_or(Ok(()), Err)
}

/// Runs user code at `entry` (an address in `.text.user`) in ring 3 with
/// CS `cs`, `rflags` and the shim's user stack, entered as `how` says,
/// until it executes `int $0x20` or a `SYSCALL` with RAX = [`USER_EXIT`].
/// Returns the record of that exit.
///
/// [`prepare_user`] must have succeeded.
pub fn run_user(entry: u64, cs: u16, rflags: u64, how: UserEntry) -> Trap {
    let frame = [
        entry,
        u64::from(cs),
        rflags,
        user_stack_top(),
        u64::from(dom0_abi::segment::FLAT_USER_SS),
    ];
    // On Xen, a native iretq would not switch Xen to guest user mode.
    let native = how == UserEntry::Native && !on_xen();
    if native {
        // HYPERVISOR_iret sets the upcall mask from RFLAGS.IF; a native
        // iretq cannot tell the hypervisor, so the kernel does it itself.
        crate::shared::set_upcall_mask(u8::from(rflags & RFLAGS_IF == 0));
    }
    // SAFETY: `frame` describes user code in `.text.user` on the user
    // stack; `shim_enter_user` saves the callee-saved registers and RSP
    // and sets `IN_USER_RUN`, and the user code ends by a kernel entry
    // that clears it, restores them and returns here (the dispatcher's
    // resume path). Nothing of this Rust frame is touched meanwhile.
    unsafe { shim_enter_user(&raw const frame, u64::from(native)) };
    EXIT.get()
}

global_asm!(
    ".pushsection .bss.user, \"aw\", @nobits",
    ".balign 4096",
    ".globl shim_user_data",
    "shim_user_data:",
    ".space 4096",
    ".globl shim_user_stack",
    "shim_user_stack:",
    ".space 8192",
    ".globl shim_user_stack_top",
    "shim_user_stack_top:",
    ".popsection",
    ".pushsection .text.user, \"ax\", @progbits",
    ".globl shim_user_exit",
    "shim_user_exit:",
    "ud2",
    ".globl shim_user_syscall_exit",
    "shim_user_syscall_exit:",
    "mov eax, {exit}",
    "syscall",
    "ud2",
    ".popsection",
    exit = const USER_EXIT,
);

unsafe extern "C" {
    static shim_user_exit: u8;
    static shim_user_data: u8;
    static shim_user_stack_top: u8;
    static shim_user_syscall_exit: u8;
    static __user_text_start: u8;
    static __user_text_end: u8;
    static __user_data_start: u8;
    static __user_data_end: u8;
}

/// The user-writable data page (4 KiB, in `.bss.user`).
#[must_use]
pub fn user_data() -> u64 {
    core::ptr::addr_of!(shim_user_data) as u64
}

/// The top of the user stack.
#[must_use]
pub fn user_stack_top() -> u64 {
    core::ptr::addr_of!(shim_user_stack_top) as u64
}

/// The `ud2` that ends a [`run_user`] call: user code jumps here when it
/// is done. An exception works from user mode whatever the trap table's
/// DPLs, unlike `int $0x20`, which needs the hypervisor to decode a #GP
/// (see the module documentation).
#[must_use]
pub fn user_exit_entry() -> u64 {
    core::ptr::addr_of!(shim_user_exit) as u64
}

/// User code that returns to the kernel with `SYSCALL` (RAX =
/// [`USER_EXIT`]).
#[must_use]
pub fn user_syscall_exit_entry() -> u64 {
    core::ptr::addr_of!(shim_user_syscall_exit) as u64
}

/// The page range `[start, end)` of user text and user data.
fn user_ranges() -> [(u64, u64); 2] {
    [
        (
            core::ptr::addr_of!(__user_text_start) as u64,
            core::ptr::addr_of!(__user_text_end) as u64,
        ),
        (
            core::ptr::addr_of!(__user_data_start) as u64,
            core::ptr::addr_of!(__user_data_end) as u64,
        ),
    ]
}

/// Makes user mode possible: sets the user bit on the user text and data
/// pages (`update_va_mapping`; the kernel's pages stay supervisor) and
/// registers the current L4 as the user page table (`NEW_USER_BASEPTR`;
/// Xen needs one, this hypervisor accepts it).
pub fn prepare_user() -> Result<(), InitError> {
    for (start, end) in user_ranges() {
        let mut va = start;
        while va < end {
            let Some(pte) = mm::l1_entry(va) else {
                return Err(InitError {
                    step: "find user page",
                    ret: 0,
                });
            };
            // SAFETY: adds only the user bit to an existing mapping of a
            // user page; the frame and the kernel's access stay as they
            // were.
            let ret = unsafe {
                hypercall::update_va_mapping(va, pte.value | PteFlags::USER.bits(), mm::UVMF_INVLPG)
            };
            if ret != 0 {
                return Err(InitError {
                    step: "set user bit",
                    ret,
                });
            }
            va += dom0_abi::layout::PAGE_SIZE;
        }
    }
    // SAFETY: the user page table is the one already in use; this changes
    // no mapping.
    let ret =
        unsafe { hypercall::mmuext_one(MmuextCmd::NewUserBaseptr as u32, mm::boot_l4_mfn(), 0) };
    if ret != 0 {
        return Err(InitError {
            step: "NEW_USER_BASEPTR",
            ret,
        });
    }
    Ok(())
}
