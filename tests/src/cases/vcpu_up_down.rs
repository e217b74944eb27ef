//! `vcpu_up_down`: a secondary vCPU's start, `VCPUOP_down` by another vCPU
//! and by itself, resuming, and the end of the domain when its last vCPU
//! goes down (`dom0_max_vcpus=3`).
//!
//! Checks, as Xen 4.17 behaves:
//! - how the initial context is taken: vCPU 1 starts at the context's RIP
//!   with its RSP, every general register as given, vCPU 0's kernel CS and
//!   SS, RFLAGS.IF set, the null selector in DS/ES/FS/GS, the context's FS
//!   and kernel GS bases, and the default FPU state (FCW 0x37f, MXCSR
//!   0x1f80) as the context carries none;
//! - vCPU 0 takes vCPU 1 down: `is_up` is 0, its runstate is `offline`,
//!   it makes no progress; `initialise` of the downed vCPU is `EEXIST`;
//!   `up` resumes it where it was (no second entry, its loop goes on);
//! - vCPU 1 takes itself down: the call returns 0 only once vCPU 0 has
//!   brought it up again, with its RBX, RBP and R12-R15 intact;
//! - vCPU 1 takes vCPU 0 down and brings it up again (both 0), seeing
//!   `is_up(0)` = 0 in between;
//! - vCPU 2, started from a context whose CS and SS have RPL 0 (0xe030,
//!   0xe028), runs with vCPU 0's kernel selectors all the same;
//! - vCPU 1's function returns and the shim takes it down; then vCPU 0,
//!   the last vCPU up, prints the result line and takes itself down, which
//!   must power the domain off (the harness requires a poweroff).

use core::arch::asm;
use core::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};

use guest_pv_shim::dom0_abi::Errno;
use guest_pv_shim::dom0_abi::cpu::VcpuGuestContext;
use guest_pv_shim::dom0_abi::segment::{FLAT_KERNEL_CS, FLAT_KERNEL_SS};
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::dom0_abi::vcpu::{RUNSTATE_OFFLINE, VcpuOpCmd, VcpuRunstateInfo};
use guest_pv_shim::hypercall::{self as hc, raw};
use guest_pv_shim::traps::{self, RFLAGS_IF};
use guest_pv_shim::{report, shared, smp};

use crate::support;

/// The secondary vCPU.
const ONE: u64 = 1;
/// Yields to wait for vCPU 1 at most.
const WAIT: u32 = 20_000;

/// What vCPU 1 is told to do next.
static CMD: AtomicU32 = AtomicU32::new(CMD_SPIN);
/// Keep counting and yielding.
const CMD_SPIN: u32 = 0;
/// Take yourself down.
const CMD_SELF_DOWN: u32 = 1;
/// Take vCPU 0 down and up again.
const CMD_DOWN_ZERO: u32 = 2;
/// Return.
const CMD_RETURN: u32 = 3;

/// Times vCPU 1 entered its function.
static ENTRIES: AtomicU64 = AtomicU64::new(0);
/// vCPU 1's loop iterations.
static SPINS: AtomicU64 = AtomicU64::new(0);
/// What vCPU 1 read at its start: FCW, MXCSR, `fs:[0]`, `gs:[0]`.
static START_FPU: AtomicU64 = AtomicU64::new(0);
static START_FS: AtomicU64 = AtomicU64::new(0);
static START_GS: AtomicU64 = AtomicU64::new(0);
/// 0 before vCPU 1's own `down`, then its result + 1000 once it returns.
static SELF_DOWN: AtomicI64 = AtomicI64::new(0);
/// Callee-saved registers that did not survive the self-down.
static SELF_DOWN_BAD: AtomicU64 = AtomicU64::new(u64::MAX);
/// vCPU 1's `down(0)` and `up(0)` results, and `is_up(0)` in between.
static ZERO_DOWN: AtomicI64 = AtomicI64::new(i64::MIN);
static ZERO_IS_UP: AtomicI64 = AtomicI64::new(i64::MIN);
static ZERO_UP: AtomicI64 = AtomicI64::new(i64::MIN);

/// Tag words the context's FS and kernel GS bases point at.
static FS_TAG: u64 = 0xF5F5_0000_0000_0001;
static GS_TAG: u64 = 0x6565_0000_0000_0002;

/// The value the context gives general register `index` (RAX..R15 in the
/// order of `cpu_user_regs`).
const fn initial(index: u64) -> u64 {
    0x1D00_0000_0000_0000 | (index << 32) | 0xC0DE
}

/// FCW and MXCSR.
fn fpu_controls() -> (u16, u32) {
    let mut fcw: u16 = 0;
    let mut mxcsr: u32 = 0;
    // SAFETY: stores two control registers into the two locals.
    unsafe {
        asm!(
            "fnstcw [{f}]",
            "stmxcsr [{m}]",
            f = in(reg) &raw mut fcw,
            m = in(reg) &raw mut mxcsr,
            options(nostack),
        );
    }
    (fcw, mxcsr)
}

/// `VCPUOP_down` of this vCPU from inside assembly that holds patterns
/// in RBX, RBP and R12-R15; returns the result and a bit mask of the
/// registers that changed.
fn self_down_keeping_registers(vcpuid: u64) -> (i64, u64) {
    let stub = raw::stub_address(guest_pv_shim::dom0_abi::Hypercall::VcpuOp.number())
        .expect("VcpuOp has a slot in the hypercall page");
    let mut changed: u64 = 0;
    let ret: i64;
    // SAFETY: RBX and RBP are saved and restored by hand, every other
    // register the block changes is declared; the stub is the vcpu_op
    // slot of the hypercall page, called with VCPUOP_down of this vCPU
    // (no argument).
    unsafe {
        asm!(
            "push rbx",
            "push rbp",
            "push r11",
            "mov rbx, 0x1111000000000001",
            "mov rbp, 0x1111000000000002",
            "mov r12, 0x1111000000000003",
            "mov r13, 0x1111000000000004",
            "mov r14, 0x1111000000000005",
            "mov r15, 0x1111000000000006",
            "mov eax, {nr}",
            "mov edi, {down}",
            "xor edx, edx",
            "call qword ptr [rsp]",
            "xor ecx, ecx",
            "mov r8, 0x1111000000000001",
            "cmp rbx, r8",
            "setne cl",
            "mov r8, 0x1111000000000002",
            "cmp rbp, r8",
            "setne r9b",
            "movzx r9d, r9b",
            "shl r9, 1",
            "or rcx, r9",
            "mov r8, 0x1111000000000003",
            "cmp r12, r8",
            "setne r9b",
            "movzx r9d, r9b",
            "shl r9, 2",
            "or rcx, r9",
            "mov r8, 0x1111000000000004",
            "cmp r13, r8",
            "setne r9b",
            "movzx r9d, r9b",
            "shl r9, 3",
            "or rcx, r9",
            "mov r8, 0x1111000000000005",
            "cmp r14, r8",
            "setne r9b",
            "movzx r9d, r9b",
            "shl r9, 4",
            "or rcx, r9",
            "mov r8, 0x1111000000000006",
            "cmp r15, r8",
            "setne r9b",
            "movzx r9d, r9b",
            "shl r9, 5",
            "or rcx, r9",
            "add rsp, 8",
            "pop rbp",
            "pop rbx",
            nr = const guest_pv_shim::dom0_abi::Hypercall::VcpuOp.number(),
            down = const VcpuOpCmd::Down as u32,
            in("r11") stub,
            inout("rsi") vcpuid => _,
            lateout("rax") ret,
            lateout("rcx") changed,
            lateout("rdx") _,
            lateout("rdi") _,
            lateout("r8") _,
            lateout("r9") _,
            lateout("r10") _,
            lateout("r11") _,
            lateout("r12") _,
            lateout("r13") _,
            lateout("r14") _,
            lateout("r15") _,
        );
    }
    (ret, changed)
}

/// vCPU 1's function: records its start, then follows `CMD`.
fn stepper(vcpu: usize) {
    let (fcw, mxcsr) = fpu_controls();
    START_FPU.store(u64::from(fcw) << 32 | u64::from(mxcsr), Ordering::Relaxed);
    // SAFETY: the initial context pointed both bases at tag words.
    let (fs, gs) = unsafe { support::fs_gs_words() };
    START_FS.store(fs, Ordering::Relaxed);
    START_GS.store(gs, Ordering::Relaxed);
    ENTRIES.fetch_add(1, Ordering::AcqRel);
    loop {
        match CMD.load(Ordering::Acquire) {
            CMD_SELF_DOWN => {
                CMD.store(CMD_SPIN, Ordering::Release);
                let (ret, changed) = self_down_keeping_registers(vcpu as u64);
                SELF_DOWN_BAD.store(changed, Ordering::Relaxed);
                SELF_DOWN.store(ret + 1000, Ordering::Release);
            }
            CMD_DOWN_ZERO => {
                CMD.store(CMD_SPIN, Ordering::Release);
                ZERO_DOWN.store(hc::vcpu_down(0), Ordering::Relaxed);
                ZERO_IS_UP.store(hc::vcpu_is_up(0), Ordering::Relaxed);
                // SAFETY: vCPU 0 resumes its own context where it stopped.
                ZERO_UP.store(unsafe { hc::vcpu_up(0) }, Ordering::Release);
            }
            CMD_RETURN => return,
            _ => {}
        }
        SPINS.fetch_add(1, Ordering::AcqRel);
        hc::sched_yield();
    }
}

/// Yields until vCPU 1's loop has moved on by at least `n`.
fn progresses(n: u64) -> bool {
    let from = SPINS.load(Ordering::Acquire);
    support::yield_until(WAIT, || SPINS.load(Ordering::Acquire) >= from + n)
}

/// Checks how vCPU 1 started against the context `ctx`.
fn check_start(ctx: &VcpuGuestContext) {
    let Some(regs) = smp::entry_regs(1) else {
        report::fail(
            "vCPU 1 reached its entry point",
            format_args!("no entry record"),
        );
        return;
    };
    report::ok("vCPU 1 reached its entry point");
    let u = &ctx.user_regs;
    let given = [
        ("RAX", u.rax, regs.rax),
        ("RBX", u.rbx, regs.rbx),
        ("RCX", u.rcx, regs.rcx),
        ("RDX", u.rdx, regs.rdx),
        ("RSI", u.rsi, regs.rsi),
        ("RDI", u.rdi, regs.rdi),
        ("RBP", u.rbp, regs.rbp),
        ("RSP", u.rsp, regs.rsp),
        ("R8", u.r8, regs.r8),
        ("R9", u.r9, regs.r9),
        ("R10", u.r10, regs.r10),
        ("R11", u.r11, regs.r11),
        ("R12", u.r12, regs.r12),
        ("R13", u.r13, regs.r13),
        ("R14", u.r14, regs.r14),
        ("R15", u.r15, regs.r15),
    ];
    for (name, want, got) in given {
        report::check_observed(
            format_args!("vCPU 1 starts with {name} from the context"),
            got == want,
            format_args!("{got:#x}, context {want:#x}"),
        );
    }
    let (cs, ss) = traps::current_cs_ss();
    report::check_observed(
        "vCPU 1 starts with vCPU 0's kernel CS and SS",
        regs.cs == u64::from(cs) && regs.ss == u64::from(ss),
        format_args!(
            "CS {:#x} SS {:#x}, vCPU 0 {cs:#x} {ss:#x}, context {:#x} {:#x}",
            regs.cs, regs.ss, u.cs, u.ss
        ),
    );
    report::check_observed(
        "vCPU 1 starts with RFLAGS.IF set",
        regs.rflags & RFLAGS_IF != 0,
        format_args!("RFLAGS {:#x}, context {:#x}", regs.rflags, u.rflags),
    );
    report::check_observed(
        "vCPU 1 starts with null DS, ES, FS and GS",
        [regs.ds, regs.es, regs.fs, regs.gs] == [0; 4],
        format_args!(
            "{:#x} {:#x} {:#x} {:#x}",
            regs.ds, regs.es, regs.fs, regs.gs
        ),
    );
    let (fs, gs) = (
        START_FS.load(Ordering::Relaxed),
        START_GS.load(Ordering::Relaxed),
    );
    report::check_observed(
        "vCPU 1 starts with the context's FS and kernel GS bases",
        fs == FS_TAG && gs == GS_TAG,
        format_args!("fs:[0] {fs:#x} gs:[0] {gs:#x}"),
    );
    let fpu = START_FPU.load(Ordering::Relaxed);
    report::check_observed(
        "vCPU 1 starts with the default FPU state (FCW 0x37f, MXCSR 0x1f80)",
        fpu == 0x037F_0000_1F80,
        format_args!("FCW {:#x} MXCSR {:#x}", fpu >> 32, fpu & 0xFFFF_FFFF),
    );
}

/// vCPU 2's function: nothing (its entry record is what counts).
fn nothing(_vcpu: usize) {}

/// Starts vCPU 2 with a context whose CS and SS have RPL 0 (0xe030 and
/// 0xe028, as XTF's ring-3 kernels name them), and checks that it runs
/// with vCPU 0's kernel selectors all the same.
fn check_rpl0_selectors() {
    let mut ctx = VcpuGuestContext::zeroed();
    if !smp::kernel_context(&mut ctx, 2, nothing) {
        report::error("context", format_args!("no stack for vCPU 2"));
        return;
    }
    ctx.user_regs.cs = FLAT_KERNEL_CS & !3;
    ctx.user_regs.ss = FLAT_KERNEL_SS & !3;
    shared::set_upcall_mask_of(2, 1);
    // SAFETY: the context of `smp::kernel_context` for `nothing`, with
    // the RPL of its selectors cleared.
    let ret = unsafe { hc::vcpu_initialise(2, &ctx) };
    report::check_ret(
        "initialise of vCPU 2 with RPL-0 CS and SS returns 0",
        ret,
        0,
    );
    // SAFETY: vCPU 2 was just initialised.
    report::check_ret("up of vCPU 2 returns 0", unsafe { hc::vcpu_up(2) }, 0);
    let done = support::yield_until(WAIT, || {
        smp::entry_regs(2).is_some() && hc::vcpu_is_up(2) == 0
    });
    let (cs, ss) = traps::current_cs_ss();
    let regs = smp::entry_regs(2).unwrap_or_default();
    report::check_observed(
        "vCPU 2 started from RPL-0 CS and SS runs with vCPU 0's kernel CS and SS",
        done && regs.cs == u64::from(cs) && regs.ss == u64::from(ss),
        format_args!(
            "ran and went down {done}, CS {:#x} SS {:#x}, vCPU 0 {cs:#x} {ss:#x}",
            regs.cs, regs.ss
        ),
    );
}

pub fn run(_start_info: &'static StartInfo) {
    if !support::traps() {
        return;
    }
    let mut ctx = VcpuGuestContext::zeroed();
    if !smp::kernel_context(&mut ctx, 1, stepper) {
        report::error("context", format_args!("no stack for vCPU 1"));
        return;
    }
    let u = &mut ctx.user_regs;
    for (index, reg) in [
        &mut u.rax, &mut u.rbx, &mut u.rcx, &mut u.rdx, &mut u.rbp, &mut u.r8, &mut u.r9,
        &mut u.r10, &mut u.r11, &mut u.r12, &mut u.r13, &mut u.r14, &mut u.r15,
    ]
    .into_iter()
    .enumerate()
    {
        *reg = initial(index as u64);
    }
    ctx.fs_base = core::ptr::from_ref(&FS_TAG) as u64;
    ctx.gs_base_kernel = core::ptr::from_ref(&GS_TAG) as u64;
    shared::set_upcall_mask_of(1, 1);
    // SAFETY: the context of `smp::kernel_context` for `stepper`, with
    // other general-register values and segment bases pointing at tags.
    report::check_ret(
        "initialise of vCPU 1 returns 0",
        unsafe { hc::vcpu_initialise(ONE, &ctx) },
        0,
    );
    // SAFETY: vCPU 1 was just initialised.
    report::check_ret("up of vCPU 1 returns 0", unsafe { hc::vcpu_up(ONE) }, 0);
    if !report::check(
        "vCPU 1 runs",
        progresses(3),
        format_args!("{} iterations", SPINS.load(Ordering::Acquire)),
    ) {
        return;
    }
    check_start(&ctx);

    report::check_ret("down of vCPU 1 by vCPU 0 returns 0", hc::vcpu_down(ONE), 0);
    report::check_ret("is_up of vCPU 1 is 0 after down", hc::vcpu_is_up(ONE), 0);
    let mut info = VcpuRunstateInfo::default();
    let ret = hc::vcpu_get_runstate_info(ONE, &mut info);
    report::check_observed(
        "vCPU 1 is offline after down",
        ret == 0 && info.state == RUNSTATE_OFFLINE,
        format_args!("result {ret}, state {}", info.state),
    );
    let stopped_at = SPINS.load(Ordering::Acquire);
    for _ in 0..50 {
        hc::sched_yield();
    }
    report::check_observed(
        "vCPU 1 makes no progress while down",
        SPINS.load(Ordering::Acquire) == stopped_at,
        format_args!("{stopped_at} -> {}", SPINS.load(Ordering::Acquire)),
    );
    // SAFETY: refused (vCPU 1 is initialised); nothing is changed.
    report::check_ret(
        "initialise of the downed vCPU 1 is EEXIST",
        unsafe { hc::vcpu_initialise(ONE, &ctx) },
        Errno::EEXIST.neg(),
    );
    // SAFETY: vCPU 1 resumes its own context.
    report::check_ret(
        "up of the downed vCPU 1 returns 0",
        unsafe { hc::vcpu_up(ONE) },
        0,
    );
    report::check_observed(
        "vCPU 1 resumes where it was, without entering again",
        progresses(3) && ENTRIES.load(Ordering::Acquire) == 1,
        format_args!(
            "{stopped_at} -> {} iterations, {} entries",
            SPINS.load(Ordering::Acquire),
            ENTRIES.load(Ordering::Acquire)
        ),
    );

    CMD.store(CMD_SELF_DOWN, Ordering::Release);
    report::check(
        "vCPU 1 takes itself down",
        support::yield_until(WAIT, || hc::vcpu_is_up(ONE) == 0),
        format_args!("is_up {}", hc::vcpu_is_up(ONE)),
    );
    report::check_observed(
        "vCPU 1's own down has not returned while it is down",
        SELF_DOWN.load(Ordering::Acquire) == 0,
        format_args!("{}", SELF_DOWN.load(Ordering::Acquire)),
    );
    // SAFETY: vCPU 1 resumes its own context.
    report::check_ret(
        "up of the self-downed vCPU 1 returns 0",
        unsafe { hc::vcpu_up(ONE) },
        0,
    );
    let returned = support::yield_until(WAIT, || SELF_DOWN.load(Ordering::Acquire) != 0);
    report::check_observed(
        "vCPU 1's own down returns 0 once it is up again",
        returned && SELF_DOWN.load(Ordering::Acquire) == 1000,
        format_args!("{}", SELF_DOWN.load(Ordering::Acquire) - 1000),
    );
    report::check_observed(
        "vCPU 1 keeps RBX, RBP and R12-R15 across its own down",
        SELF_DOWN_BAD.load(Ordering::Relaxed) == 0,
        format_args!("changed mask {:#x}", SELF_DOWN_BAD.load(Ordering::Relaxed)),
    );

    CMD.store(CMD_DOWN_ZERO, Ordering::Release);
    let done = support::yield_until(WAIT, || ZERO_UP.load(Ordering::Acquire) != i64::MIN);
    report::check_observed(
        "vCPU 1 takes vCPU 0 down and up again (both 0), is_up(0) 0 in between",
        done && ZERO_DOWN.load(Ordering::Relaxed) == 0
            && ZERO_IS_UP.load(Ordering::Relaxed) == 0
            && ZERO_UP.load(Ordering::Relaxed) == 0,
        format_args!(
            "down {} is_up {} up {}",
            ZERO_DOWN.load(Ordering::Relaxed),
            ZERO_IS_UP.load(Ordering::Relaxed),
            ZERO_UP.load(Ordering::Relaxed)
        ),
    );

    CMD.store(CMD_RETURN, Ordering::Release);
    report::check(
        "vCPU 1 is down once its function returned",
        support::yield_until(WAIT, || hc::vcpu_is_up(ONE) == 0),
        format_args!("is_up {}", hc::vcpu_is_up(ONE)),
    );

    check_rpl0_selectors();

    // The last vCPU going down must power the domain off: print the
    // result now, then go down. Coming back is a failure.
    report::print_result(report::status());
    let ret = hc::vcpu_down(0);
    panic!("down of the last vCPU returned {ret} instead of powering the domain off");
}
