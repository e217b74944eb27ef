//! `hypercall_registers`: what a hypercall leaves in the general registers.
//!
//! Every register but RSP is loaded with a pattern of its own, the call is
//! made through the hypercall page (as a kernel makes it), and every
//! register is read back at once. Checks, per call:
//! - RAX is the call's answer;
//! - RBX, RCX, RBP, R9, R11 and R12-R15 are the guest's own values (the ABI
//!   clobbers only the argument registers; the page's stubs keep RCX and
//!   R11 across Xen's `syscall`);
//! - RDI, RSI, RDX, R8 and R10 (the argument registers, which the ABI lets a
//!   hypercall clobber) are the guest's own values or zero (or the poison
//!   debug builds of both hypervisors write): never a value of the
//!   hypervisor's.
//!
//! Calls: `XENVER_version` and `XENVER_pagesize` (this hypervisor answers
//! them in its fast entry, which saves only what the ABI preserves and
//! clears the argument registers), `XENVER_pagesize` with a pointer
//! (`EINVAL`) and an unknown sub-op (`ENOSYS`), which take the full path,
//! and `XENVER_version` with a stack selector the fast entry does not take
//! (here the null selector with RPL 1, on Xen the kernel's own), so that
//! the fast entry declines and hands the untouched context to the full
//! path.

use core::arch::global_asm;

use guest_pv_shim::dom0_abi::Errno;
use guest_pv_shim::dom0_abi::hypercall::{HYPERCALL_SLOT_SIZE, Hypercall};
use guest_pv_shim::dom0_abi::segment::FLAT_KERNEL_SS;
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::dom0_abi::version::{VersionCmd, version_number};
use guest_pv_shim::hypercall::raw::page_address;
use guest_pv_shim::{on_xen, report};

/// The registers in the order `registers_probe` stores them.
const NAMES: [&str; 15] = [
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10", "r11", "r12", "r13", "r14",
    "r15",
];

/// The argument registers (indices into [`NAMES`]).
const ARGUMENTS: [usize; 5] = [3, 4, 5, 7, 9];

/// What debug builds of Xen (and of this hypervisor) write into the
/// argument registers.
const DEBUG_POISON: u64 = 0xdead_beef_dead_f00d;

/// The pattern register `i` of [`NAMES`] is loaded with (RDI and RSI carry
/// the call's arguments instead).
const fn pattern(i: usize) -> u64 {
    PATTERN_BASE + (i as u64 + 1) * PATTERN_STEP
}

const PATTERN_BASE: u64 = 0x5a5a_0000_0000_0000;
const PATTERN_STEP: u64 = 0x0101_0101;

// registers_probe(out: *mut [u64; 15], target, cmd, arg, ss): loads every
// register with its pattern (RDI = cmd, RSI = arg; SS = `ss` if not 0),
// calls `target`, stores every register into `out` in `NAMES` order and
// restores SS and the callee-saved registers.
global_asm!(
    ".pushsection .text.registers_probe, \"ax\", @progbits",
    ".globl registers_probe",
    "registers_probe:",
    "push %rbx",
    "push %rbp",
    "push %r12",
    "push %r13",
    "push %r14",
    "push %r15",
    "mov %ss, %eax",
    "push %rax",
    "push %rdi",
    "push %rsi",
    "test %r8, %r8",
    "jz 1f",
    "mov %r8d, %eax",
    "mov %ax, %ss",
    "1:",
    "mov %rdx, %rdi",
    "mov %rcx, %rsi",
    "movabs $({base} + 1 * {step}), %rax",
    "movabs $({base} + 2 * {step}), %rbx",
    "movabs $({base} + 3 * {step}), %rcx",
    "movabs $({base} + 4 * {step}), %rdx",
    "movabs $({base} + 7 * {step}), %rbp",
    "movabs $({base} + 8 * {step}), %r8",
    "movabs $({base} + 9 * {step}), %r9",
    "movabs $({base} + 10 * {step}), %r10",
    "movabs $({base} + 11 * {step}), %r11",
    "movabs $({base} + 12 * {step}), %r12",
    "movabs $({base} + 13 * {step}), %r13",
    "movabs $({base} + 14 * {step}), %r14",
    "movabs $({base} + 15 * {step}), %r15",
    "call *(%rsp)",
    "push %r15",
    "mov 16(%rsp), %r15",
    "mov %rax, 0(%r15)",
    "mov %rbx, 8(%r15)",
    "mov %rcx, 16(%r15)",
    "mov %rdx, 24(%r15)",
    "mov %rsi, 32(%r15)",
    "mov %rdi, 40(%r15)",
    "mov %rbp, 48(%r15)",
    "mov %r8, 56(%r15)",
    "mov %r9, 64(%r15)",
    "mov %r10, 72(%r15)",
    "mov %r11, 80(%r15)",
    "mov %r12, 88(%r15)",
    "mov %r13, 96(%r15)",
    "mov %r14, 104(%r15)",
    "pop %rax",
    "mov %rax, 112(%r15)",
    "add $16, %rsp",
    "pop %rax",
    "mov %ax, %ss",
    "pop %r15",
    "pop %r14",
    "pop %r13",
    "pop %r12",
    "pop %rbp",
    "pop %rbx",
    "ret",
    ".popsection",
    base = const PATTERN_BASE,
    step = const PATTERN_STEP,
    options(att_syntax)
);

unsafe extern "C" {
    fn registers_probe(out: *mut [u64; 15], target: u64, cmd: u64, arg: u64, ss: u64);
}

/// Makes `xen_version(cmd, arg)` through the hypercall page with SS = `ss`
/// (0: unchanged) and returns every register after it.
fn probe(cmd: u64, arg: u64, ss: u64) -> [u64; 15] {
    let target = page_address() + Hypercall::XenVersion as u64 * HYPERCALL_SLOT_SIZE as u64;
    let mut out = [0u64; 15];
    // SAFETY: `registers_probe` preserves the callee-saved registers, RSP
    // and SS and writes only `out`; the call goes to the xen_version stub
    // of the hypercall page, and every sub-op used here with its argument
    // writes no guest memory (NULL, or a pointer for a sub-op that refuses
    // it before writing). `ss` is 0 or a selector the kernel may load.
    unsafe { registers_probe(&raw mut out, target, cmd, arg, ss) };
    out
}

/// Checks one call's registers (see the module comment).
fn check(call: &str, cmd: u64, arg: u64, ss: u64, want: i64) {
    let regs = probe(cmd, arg, ss);
    report::check_ret(format_args!("{call}: rax"), regs[0].cast_signed(), want);
    for (i, name) in NAMES.iter().enumerate().skip(1) {
        let own = match i {
            5 => cmd,
            4 => arg,
            _ => pattern(i),
        };
        let got = regs[i];
        if ARGUMENTS.contains(&i) {
            report::check(
                format_args!("{call}: {name} is the guest's own, zero or the debug poison"),
                got == own || got == 0 || got == DEBUG_POISON,
                format_args!("got {got:#x}, own {own:#x}"),
            );
        } else {
            report::check(
                format_args!("{call}: {name} preserved"),
                got == own,
                format_args!("got {got:#x}, want {own:#x}"),
            );
        }
    }
}

pub fn run(_start_info: &'static StartInfo) {
    let version = i64::from(version_number(4, 17));
    check("version", VersionCmd::Version as u64, 0, 0, version);
    check("pagesize", VersionCmd::Pagesize as u64, 0, 0, 4096);
    check(
        "pagesize with a pointer",
        VersionCmd::Pagesize as u64,
        0x1000,
        0,
        Errno::EINVAL.neg(),
    );
    check("unknown sub-op", 99, 0, 0, Errno::ENOSYS.neg());
    // A null SS with RPL 1 is legal in ring 1 (64-bit mode); Xen's kernel
    // runs in ring 3, where only its own stack selector is.
    let ss: u64 = if on_xen() {
        u64::from(FLAT_KERNEL_SS)
    } else {
        1
    };
    check(
        "version, another SS",
        VersionCmd::Version as u64,
        0,
        ss,
        version,
    );
}
