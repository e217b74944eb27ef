//! Secondary vCPUs: their stacks, their entry path and their initial
//! context.
//!
//! vCPU 0 starts vCPU `n` (1 <= n < [`MAX_VCPUS`]) with [`start`]: it
//! masks events in `vcpu_info[n]` (as they are on vCPU 0), builds the
//! context with [`kernel_context`], and issues `VCPUOP_initialise` and
//! `VCPUOP_up`. The context says:
//! - kernel mode (`VGCF_in_kernel`) with Xen's flat kernel selectors
//!   (`FLAT_KERNEL_CS`/`FLAT_KERNEL_SS`, as on Xen, whose 64-bit kernels run
//!   in ring 3; this hypervisor loads its ring-1 selectors instead, see
//!   [`VcpuOpCmd::Initialise`](dom0_abi::vcpu::VcpuOpCmd::Initialise));
//! - RIP = `shim_secondary_entry`, RSP = the top of vCPU `n`'s 16 KiB stack
//!   (also the `stack_switch` stack), RDI = `n`, RSI = the function to run;
//! - CR3 = the boot page table vCPU 0 runs on;
//! - the trap table of [`traps::default_trap_table`] and the shim's event,
//!   failsafe and syscall callbacks;
//! - no FPU state (the hypervisor gives the vCPU its default one), no
//!   GDT frames (the hypervisor's default GDT), no LDT, zero segment bases.
//!
//! `shim_secondary_entry` stores every register the vCPU started with
//! ([`entry_regs`]) and calls the function with `n`. When it returns, the
//! vCPU takes itself down (`VCPUOP_down`), again each time it is brought
//! up.
//!
//! Invariants: each stack belongs to one vCPU id; only vCPU `n` writes its
//! entry record, and publishes it with a release store that readers
//! acquire. The rest of the shim is single-vCPU: the report, the console
//! buffer and the trap records belong to vCPU 0. A secondary vCPU must
//! not report; an exception on it reaches the shim's dispatcher, which
//! panics (crashing the domain) unless a fixup or hook handles it.

use core::arch::global_asm;
use core::cell::UnsafeCell;
use core::mem::offset_of;
use core::sync::atomic::{AtomicBool, Ordering};

use dom0_abi::cpu::{VGCF_IN_KERNEL, VGCF_SYSCALL_DISABLES_EVENTS, VcpuGuestContext};
use dom0_abi::layout::PAGE_SHIFT;
use dom0_abi::segment::{FLAT_KERNEL_CS, FLAT_KERNEL_SS};

use crate::traps::{self, Callback, RFLAGS_IF};
use crate::{hypercall, mm, shared};

/// vCPU ids the shim has stacks for: 1 to `MAX_VCPUS - 1` (0 is the boot
/// vCPU).
pub const MAX_VCPUS: usize = 8;

/// Size of each secondary vCPU's stack.
pub const STACK_SIZE: usize = 16 * 1024;

/// The registers a secondary vCPU had at its first instruction.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs, reason = "one field per register, named after it")]
pub struct EntryRegs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub rsp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rflags: u64,
    pub cs: u64,
    pub ss: u64,
    pub ds: u64,
    pub es: u64,
    pub fs: u64,
    pub gs: u64,
}

/// Stack space the entry code reserves: an [`EntryRegs`], then the RFLAGS
/// it pushed first, rounded to a multiple of 16 (so that the call below is
/// made on an aligned stack).
const ENTRY_FRAME: usize = (size_of::<EntryRegs>() + 8).next_multiple_of(16);

global_asm!(
    ".pushsection .bss.shim_vcpu_stacks, \"aw\", @nobits",
    ".balign 4096",
    "shim_vcpu_stacks:",
    ".space {stacks}",
    ".popsection",
    ".pushsection .text.shim_smp, \"ax\", @progbits",
    ".balign 16",
    ".globl shim_secondary_entry",
    "shim_secondary_entry:",
    "pushfq",
    "sub rsp, {frame} - 8",
    "mov [rsp + {rax}], rax",
    "mov [rsp + {rbx}], rbx",
    "mov [rsp + {rcx}], rcx",
    "mov [rsp + {rdx}], rdx",
    "mov [rsp + {rsi}], rsi",
    "mov [rsp + {rdi}], rdi",
    "mov [rsp + {rbp}], rbp",
    "mov [rsp + {r8}], r8",
    "mov [rsp + {r9}], r9",
    "mov [rsp + {r10}], r10",
    "mov [rsp + {r11}], r11",
    "mov [rsp + {r12}], r12",
    "mov [rsp + {r13}], r13",
    "mov [rsp + {r14}], r14",
    "mov [rsp + {r15}], r15",
    "mov rax, [rsp + {frame} - 8]",
    "mov [rsp + {rflags}], rax",
    "lea rax, [rsp + {frame}]",
    "mov [rsp + {rsp_}], rax",
    "mov eax, cs",
    "mov [rsp + {cs}], rax",
    "mov eax, ss",
    "mov [rsp + {ss}], rax",
    "mov eax, ds",
    "mov [rsp + {ds}], rax",
    "mov eax, es",
    "mov [rsp + {es}], rax",
    "mov eax, fs",
    "mov [rsp + {fs}], rax",
    "mov eax, gs",
    "mov [rsp + {gs}], rax",
    "xor ebp, ebp",
    "mov rdi, rsp",
    "cld",
    "call {start}",
    "ud2",
    ".popsection",
    stacks = const STACK_SIZE * (MAX_VCPUS - 1),
    frame = const ENTRY_FRAME,
    rax = const offset_of!(EntryRegs, rax),
    rbx = const offset_of!(EntryRegs, rbx),
    rcx = const offset_of!(EntryRegs, rcx),
    rdx = const offset_of!(EntryRegs, rdx),
    rsi = const offset_of!(EntryRegs, rsi),
    rdi = const offset_of!(EntryRegs, rdi),
    rbp = const offset_of!(EntryRegs, rbp),
    rsp_ = const offset_of!(EntryRegs, rsp),
    r8 = const offset_of!(EntryRegs, r8),
    r9 = const offset_of!(EntryRegs, r9),
    r10 = const offset_of!(EntryRegs, r10),
    r11 = const offset_of!(EntryRegs, r11),
    r12 = const offset_of!(EntryRegs, r12),
    r13 = const offset_of!(EntryRegs, r13),
    r14 = const offset_of!(EntryRegs, r14),
    r15 = const offset_of!(EntryRegs, r15),
    rflags = const offset_of!(EntryRegs, rflags),
    cs = const offset_of!(EntryRegs, cs),
    ss = const offset_of!(EntryRegs, ss),
    ds = const offset_of!(EntryRegs, ds),
    es = const offset_of!(EntryRegs, es),
    fs = const offset_of!(EntryRegs, fs),
    gs = const offset_of!(EntryRegs, gs),
    start = sym secondary_start,
);

unsafe extern "C" {
    /// The secondary vCPUs' stacks (address only).
    static shim_vcpu_stacks: u8;
    /// The first instruction of a secondary vCPU.
    static shim_secondary_entry: u8;
}

/// One vCPU's entry record, written by that vCPU only.
struct EntrySlot {
    regs: UnsafeCell<EntryRegs>,
    written: AtomicBool,
}

// SAFETY: only vCPU `n` writes slot `n`, before its release store of
// `written`; readers copy the registers only after acquiring `written`.
unsafe impl Sync for EntrySlot {}

impl EntrySlot {
    const fn new() -> EntrySlot {
        EntrySlot {
            regs: UnsafeCell::new(EntryRegs {
                rax: 0,
                rbx: 0,
                rcx: 0,
                rdx: 0,
                rsi: 0,
                rdi: 0,
                rbp: 0,
                rsp: 0,
                r8: 0,
                r9: 0,
                r10: 0,
                r11: 0,
                r12: 0,
                r13: 0,
                r14: 0,
                r15: 0,
                rflags: 0,
                cs: 0,
                ss: 0,
                ds: 0,
                es: 0,
                fs: 0,
                gs: 0,
            }),
            written: AtomicBool::new(false),
        }
    }
}

static ENTRY: [EntrySlot; MAX_VCPUS] = [const { EntrySlot::new() }; MAX_VCPUS];

/// Where `shim_secondary_entry` goes on the vCPU's stack, with the
/// registers it saved there.
extern "C" fn secondary_start(regs: *const EntryRegs) -> ! {
    // SAFETY: the entry code passes the record it just wrote on this
    // vCPU's stack.
    let regs = unsafe { regs.read() };
    let vcpu = usize::try_from(regs.rdi).unwrap_or(usize::MAX);
    assert!(
        (1..MAX_VCPUS).contains(&vcpu),
        "secondary vCPU entered with RDI {:#x}",
        regs.rdi
    );
    let slot = &ENTRY[vcpu];
    // SAFETY: only this vCPU writes its slot (module invariant), before
    // publishing it.
    unsafe { slot.regs.get().write(regs) };
    slot.written.store(true, Ordering::Release);
    // SAFETY: `kernel_context`, the only code that builds contexts
    // entering here, puts an `fn(usize)` in RSI.
    let entry: fn(usize) = unsafe { core::mem::transmute::<u64, fn(usize)>(regs.rsi) };
    entry(vcpu);
    loop {
        hypercall::vcpu_down(regs.rdi);
    }
}

/// The registers vCPU `vcpu` started with at its last entry through
/// `shim_secondary_entry`, once it got there.
#[must_use]
pub fn entry_regs(vcpu: usize) -> Option<EntryRegs> {
    let slot = ENTRY.get(vcpu)?;
    if !slot.written.load(Ordering::Acquire) {
        return None;
    }
    // SAFETY: the slot was published (release/acquire on `written`) and
    // its owner never writes it again before a new entry, which a reader
    // must not overlap (module invariant).
    Some(unsafe { slot.regs.get().read() })
}

/// The top of vCPU `vcpu`'s stack (1 <= `vcpu` < [`MAX_VCPUS`]).
#[must_use]
pub fn stack_top(vcpu: usize) -> Option<u64> {
    (1..MAX_VCPUS)
        .contains(&vcpu)
        .then(|| core::ptr::addr_of!(shim_vcpu_stacks) as u64 + (vcpu * STACK_SIZE) as u64)
}

/// Whether `addr` lies on a secondary vCPU's stack (what an entry on one
/// of them runs on: their kernel stacks are these).
#[must_use]
pub fn on_secondary_stack(addr: u64) -> bool {
    let base = core::ptr::addr_of!(shim_vcpu_stacks) as u64;
    (base..base + (STACK_SIZE * (MAX_VCPUS - 1)) as u64).contains(&addr)
}

/// The address a context built by [`kernel_context`] starts at.
#[must_use]
pub fn entry_address() -> u64 {
    core::ptr::addr_of!(shim_secondary_entry) as u64
}

/// Fills `ctx` with a kernel-mode context that runs `entry(vcpu)` on vCPU
/// `vcpu` (see the module documentation). Returns `false`, leaving `ctx`
/// alone, if the shim has no stack for `vcpu`.
pub fn kernel_context(ctx: &mut VcpuGuestContext, vcpu: usize, entry: fn(usize)) -> bool {
    let Some(top) = stack_top(vcpu) else {
        return false;
    };
    *ctx = VcpuGuestContext::zeroed();
    ctx.flags = VGCF_IN_KERNEL | VGCF_SYSCALL_DISABLES_EVENTS;
    let regs = &mut ctx.user_regs;
    regs.rip = entry_address();
    regs.rsp = top;
    regs.rdi = vcpu as u64;
    regs.rsi = entry as usize as u64;
    regs.cs = FLAT_KERNEL_CS;
    regs.ss = FLAT_KERNEL_SS;
    regs.rflags = RFLAGS_IF;
    for trap in traps::default_trap_table()
        .iter()
        .filter(|t| t.address != 0)
    {
        ctx.trap_ctxt[usize::from(trap.vector)] = *trap;
    }
    ctx.kernel_ss = u64::from(FLAT_KERNEL_SS);
    ctx.kernel_sp = top;
    ctx.ctrlreg[3] = mm::boot_l4_mfn() << PAGE_SHIFT;
    ctx.event_callback_eip = traps::callback_address(Callback::Event);
    ctx.failsafe_callback_eip = traps::callback_address(Callback::Failsafe);
    ctx.syscall_callback_eip = traps::callback_address(Callback::Syscall);
    true
}

/// A step of [`start`] that failed, with the hypercall's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StartError {
    /// `"no stack"`, `"VCPUOP_initialise"` or `"VCPUOP_up"`.
    pub step: &'static str,
    /// The hypercall's result (0 for `"no stack"`).
    pub ret: i64,
}

/// Masks events in `vcpu_info[vcpu]`, then initialises vCPU `vcpu` with
/// [`kernel_context`] for `entry` and brings it up. [`traps::init`] must
/// have mapped shared_info.
pub fn start(vcpu: usize, entry: fn(usize)) -> Result<(), StartError> {
    let mut ctx = VcpuGuestContext::zeroed();
    if !kernel_context(&mut ctx, vcpu, entry) {
        return Err(StartError {
            step: "no stack",
            ret: 0,
        });
    }
    shared::set_upcall_mask_of(vcpu, 1);
    // SAFETY: the context runs `entry` on vCPU `vcpu`'s own stack with
    // the shim's trap table and callbacks and the page tables vCPU 0 uses.
    let ret = unsafe { hypercall::vcpu_initialise(vcpu as u64, &ctx) };
    if ret != 0 {
        return Err(StartError {
            step: "VCPUOP_initialise",
            ret,
        });
    }
    // SAFETY: the vCPU was just initialised with that context.
    let ret = unsafe { hypercall::vcpu_up(vcpu as u64) };
    if ret != 0 {
        return Err(StartError {
            step: "VCPUOP_up",
            ret,
        });
    }
    Ok(())
}
