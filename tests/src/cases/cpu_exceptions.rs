//! `cpu_exceptions_iret` and `cpu_exceptions_iretq`: the guest kernel
//! takes #DE, #DB, #BP, #OF, #UD, #NM, #GP and #PF through its trap table
//! and returns through `HYPERVISOR_iret` or a native `iretq`.
//!
//! For each exception: the vector, the error code, the RIP in the frame
//! (the faulting instruction for faults, the next one for traps), the
//! frame showing kernel mode, and that the kernel carries on afterwards.
//! For #PF also `vcpu_info.arch.cr2` and the error code's P/W/U bits. One
//! exception (#UD) is checked in depth for the bounce-frame layout: the
//! RCX/R11 slots hold the interrupted registers, the frame lies 16-byte
//! aligned just below the interrupted RSP, RSP/RFLAGS slots, the saved
//! upcall mask in CS bits 32-39 with RFLAGS.IF = !mask, and the selectors
//! the handler runs with. The registers the handler's return restores
//! (R12-R15 and the scratch registers) must come back intact.
//!
//! Ring-1 difference: kernel frames show CS 0xe019 (RPL 1) and SS 0xe039
//! here, but RPL 0 (0xe030, and Xen's SS value) on Xen, whose kernel runs
//! in ring 3; the handler runs with 0xe019/0xe039 here and 0xe033/0xe02b
//! on Xen. The checks compare with each platform's documented selector
//! and tell kernel from user with `CS & 2`, which works on both. A native
//! `iretq` to the kernel works from ring 1 here; on Xen the shim returns
//! with `HYPERVISOR_iret` in both tests (see `guest_pv_shim::traps`: under
//! QEMU's TCG a ring-3 `iretq` trips over Xen's SMAP), so there the two
//! tests check the same path.

use core::arch::asm;

use guest_pv_shim::dom0_abi::segment::{
    FLAT_KERNEL_CS, FLAT_KERNEL_SS, RING1_KERNEL_CS, RING1_KERNEL_SS,
};
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::traps::{self, ReturnMode, Trap};
use guest_pv_shim::{fixup_asm, hypercall, mm, report};

use crate::support;

pub fn iret(_start_info: &'static StartInfo) {
    run(ReturnMode::Hypercall, "iret");
}

pub fn iretq(_start_info: &'static StartInfo) {
    run(ReturnMode::Native, "iretq");
}

/// The kernel CS a frame for kernel context shows on this platform: the
/// kernel's CS with RPL 0 on both.
fn kernel_frame_cs() -> u16 {
    if traps::on_xen() {
        FLAT_KERNEL_CS & !3
    } else {
        RING1_KERNEL_CS & !3
    }
}

/// The CS and SS the kernel (and so the handler) runs with.
fn kernel_selectors() -> (u16, u16) {
    if traps::on_xen() {
        (FLAT_KERNEL_CS, FLAT_KERNEL_SS)
    } else {
        (RING1_KERNEL_CS, RING1_KERNEL_SS)
    }
}

/// Checks that `trap` is `vector` at `rip` from kernel mode.
fn check_trap(name: &str, trap: Option<Trap>, vector: u32, rip: u64, how: &str) -> Option<Trap> {
    let Some(t) = trap else {
        report::fail(
            format_args!("{name} is delivered ({how})"),
            format_args!("no exception arrived"),
        );
        return None;
    };
    report::check_eq(
        format_args!("{name} is delivered ({how})"),
        t.vector,
        vector,
    );
    report::check(
        format_args!("{name} frame RIP ({how})"),
        t.rip == rip,
        format_args!("got {:#x}, want {rip:#x}", t.rip),
    );
    support::check_value(
        format_args!("{name} frame shows kernel mode ({how})"),
        t.cs_selector() == kernel_frame_cs() && !t.from_user(),
        format_args!("cs {:#x}", t.cs_selector()),
        format_args!("cs {:#x}, want {:#x}", t.cs, kernel_frame_cs()),
    );
    Some(t)
}

fn divide_error(how: &str) {
    let mut rip: u64 = 0;
    let (_, trap) = traps::catch(|| {
        // SAFETY: divides by zero on purpose; the fault resumes after the
        // block (fixup table). Only the declared registers change.
        unsafe {
            fixup_asm!(
                "lea {rip}, [rip + 5f]",
                "xor edx, edx",
                "mov eax, 1",
                "xor ecx, ecx",
                "5:",
                "div ecx";
                rip = out(reg) rip,
                out("rax") _, out("rcx") _, out("rdx") _,
                options(nostack),
            );
        }
    });
    if let Some(t) = check_trap("#DE", trap, 0, rip, how) {
        report::check_eq(
            format_args!("#DE resumes at the fixup ({how})"),
            t.fixed_up,
            true,
        );
    }
}

fn single_step(how: &str) {
    let mut rip: u64 = 0;
    let (_, trap) = traps::catch(|| {
        // SAFETY: sets TF; the #DB after the next instruction is handled by
        // the shim, which clears TF in the frame. Only RIP-relative data
        // and the declared register are touched.
        unsafe {
            asm!(
                "lea {rip}, [rip + 5f]",
                "pushfq",
                "or qword ptr [rsp], 0x100",
                "popfq",
                "nop",
                "5:",
                "nop",
                rip = out(reg) rip,
            );
        }
    });
    if let Some(t) = check_trap("#DB single step", trap, 1, rip, how) {
        report::check(
            format_args!("#DB frame RFLAGS has TF ({how})"),
            t.rflags & traps::RFLAGS_TF != 0,
            format_args!("rflags {:#x}", t.rflags),
        );
    }
    let after = rflags();
    report::check(
        format_args!("TF is clear after the #DB return ({how})"),
        after & traps::RFLAGS_TF == 0,
        format_args!("rflags {after:#x}"),
    );
}

fn rflags() -> u64 {
    let f: u64;
    // SAFETY: reads RFLAGS through the stack; no other effect.
    unsafe { asm!("pushfq", "pop {}", out(reg) f) };
    f
}

fn breakpoint(how: &str) {
    let mut rip: u64 = 0;
    let (_, trap) = traps::catch(|| {
        // SAFETY: int3 is a trap: the shim returns after it.
        unsafe { asm!("lea {rip}, [rip + 5f]", "int3", "5:", rip = out(reg) rip) };
    });
    check_trap("#BP", trap, 3, rip, how);
}

fn overflow(how: &str) {
    let mut rip: u64 = 0;
    let (_, trap) = traps::catch(|| {
        // SAFETY: `int $4` (INTO is invalid in 64-bit mode) reaches the
        // #OF handler (DPL 3) and returns after the instruction.
        unsafe { asm!("lea {rip}, [rip + 5f]", "int 4", "5:", rip = out(reg) rip) };
    });
    check_trap("#OF (int $4)", trap, 4, rip, how);
}

fn invalid_opcode(how: &str) {
    let mut rip: u64 = 0;
    let mut rsp: u64 = 0;
    let mut rcx: u64 = 0x1111_2222_3333_4444;
    let mut r11: u64 = 0x5555_6666_7777_8888;
    let (mut r12, mut r13, mut r14, mut r15, mut rsi, mut rdi) = (
        0x1212_u64, 0x1313_u64, 0x1414_u64, 0x1515_u64, 0x5151_u64, 0xD1D1_u64,
    );
    let (_, trap) = traps::catch(|| {
        // SAFETY: ud2 faults on purpose and resumes after the block; the
        // registers are declared inout so the compiler sees their values
        // come back.
        unsafe {
            fixup_asm!(
                "lea {rip}, [rip + 5f]",
                "mov {rsp}, rsp",
                "5:",
                "ud2";
                rip = out(reg) rip,
                rsp = out(reg) rsp,
                inout("rcx") rcx,
                inout("r11") r11,
                inout("r12") r12,
                inout("r13") r13,
                inout("r14") r14,
                inout("r15") r15,
                inout("rsi") rsi,
                inout("rdi") rdi,
                options(nostack),
            );
        }
    });
    let Some(t) = check_trap("#UD", trap, 6, rip, how) else {
        return;
    };
    report::check_eq(
        format_args!("frame RCX slot holds the interrupted RCX ({how})"),
        t.rcx,
        0x1111_2222_3333_4444,
    );
    report::check_eq(
        format_args!("frame R11 slot holds the interrupted R11 ({how})"),
        t.r11,
        0x5555_6666_7777_8888,
    );
    report::check_eq(
        format_args!("frame RSP slot is the interrupted RSP ({how})"),
        t.rsp,
        rsp,
    );
    report::check(
        format_args!("frame ends at the interrupted RSP aligned down to 16 ({how})"),
        t.frame + 56 == rsp & !15,
        format_args!("frame {:#x}, rsp {rsp:#x}", t.frame),
    );
    report::check_eq(
        format_args!("frame SS slot is the kernel stack selector ({how})"),
        t.ss & 0xFFFF,
        u64::from(kernel_selectors().1),
    );
    report::check_eq(
        format_args!("saved upcall mask in CS bits 32-39 is 1 ({how})"),
        t.saved_mask(),
        1,
    );
    report::check_eq(
        format_args!("frame RFLAGS.IF is clear while events are masked ({how})"),
        t.rflags & traps::RFLAGS_IF,
        0,
    );
    report::check_eq(
        format_args!("handler runs with the kernel CS and SS ({how})"),
        (t.handler_cs, t.handler_ss),
        kernel_selectors(),
    );
    report::check_eq(
        format_args!("handler runs with events masked ({how})"),
        t.mask,
        Some(1),
    );
    report::check_eq(
        format_args!("registers are restored by the return ({how})"),
        (rcx, r11, r12, r13, r14, r15, rsi, rdi),
        (
            0x1111_2222_3333_4444,
            0x5555_6666_7777_8888,
            0x1212,
            0x1313,
            0x1414,
            0x1515,
            0x5151,
            0xD1D1,
        ),
    );
}

/// #UD with RSP 8 bytes off 16-byte alignment: the frame still ends at
/// the RSP aligned down.
fn misaligned_stack(how: &str) {
    let mut rsp: u64 = 0;
    let (_, trap) = traps::catch(|| {
        // SAFETY: moves RSP down by 8 around a faulting ud2 and back up at
        // the fixup (own fixup-table entry: fault at 5, resume at 6, where
        // RSP is restored).
        unsafe {
            asm!(
                "mov {rsp}, rsp",
                "and {rsp}, 8",
                "sub rsp, {rsp}",
                "push {rsp}",
                "mov {rsp}, rsp",
                "5:",
                "ud2",
                "6:",
                "pop {t}",
                "add rsp, {t}",
                ".pushsection .ex_table, \"a\"",
                ".balign 8",
                ".quad 5b, 6b, 6b",
                ".popsection",
                rsp = out(reg) rsp,
                t = out(reg) _,
            );
        }
    });
    let Some(t) = trap else {
        report::fail(
            format_args!("#UD on a misaligned stack is delivered ({how})"),
            format_args!("no exception arrived"),
        );
        return;
    };
    report::check(
        format_args!("#UD on a misaligned stack is delivered ({how})"),
        t.vector == 6 && rsp % 16 == 8,
        format_args!("vector {}, rsp {rsp:#x}", t.vector),
    );
    report::check(
        format_args!("frame on a misaligned stack ends at RSP aligned down to 16 ({how})"),
        t.frame + 56 == rsp & !15 && t.rsp == rsp,
        format_args!("frame {:#x}, rsp slot {:#x}, rsp {rsp:#x}", t.frame, t.rsp),
    );
}

fn device_not_available(how: &str) {
    report::check_ret(
        format_args!("fpu_taskswitch(1) ({how})"),
        hypercall::fpu_taskswitch(1),
        0,
    );
    let mut rip: u64 = 0;
    let (_, trap) = traps::catch(|| {
        // SAFETY: an x87 no-op; with CR0.TS set it faults (#NM) and
        // resumes after the block.
        unsafe {
            fixup_asm!("lea {rip}, [rip + 5f]", "5:", "fnop"; rip = out(reg) rip, options(nostack));
        }
    });
    check_trap("#NM", trap, 7, rip, how);
    report::check_ret(
        format_args!("fpu_taskswitch(0) ({how})"),
        hypercall::fpu_taskswitch(0),
        0,
    );
    let (_, again) = traps::catch(|| {
        // SAFETY: as above; TS is clear now, so nothing faults.
        unsafe { fixup_asm!("fnop"; options(nostack)) };
    });
    report::check(
        format_args!("x87 runs after fpu_taskswitch(0) ({how})"),
        again.is_none(),
        format_args!("{again:?}"),
    );
}

fn general_protection(how: &str) {
    let mut rip: u64 = 0;
    let (_, trap) = traps::catch(|| {
        // SAFETY: a load from a non-canonical address faults (#GP(0)) and
        // resumes after the block.
        unsafe {
            fixup_asm!(
                "lea {rip}, [rip + 5f]",
                "mov {t}, 0x8000000000000000",
                "5:",
                "mov {t}, qword ptr [{t}]";
                rip = out(reg) rip,
                t = out(reg) _,
                options(nostack),
            );
        }
    });
    if let Some(t) = check_trap("#GP non-canonical load", trap, 13, rip, how) {
        report::check_eq(format_args!("#GP error code is 0 ({how})"), t.error_code, 0);
    }
}

fn page_faults(how: &str) {
    let va = 0x1000;
    let mut rip: u64 = 0;
    let (_, trap) = traps::catch(|| {
        // SAFETY: reads an unmapped address (nothing maps L4 slot 0 at
        // boot); the #PF resumes after the block.
        unsafe {
            fixup_asm!(
                "lea {rip}, [rip + 5f]",
                "5:",
                "mov {t}, qword ptr [{a}]";
                rip = out(reg) rip,
                a = in(reg) va,
                t = out(reg) _,
                options(nostack),
            );
        }
    });
    if let Some(t) = check_trap("#PF not-present read", trap, 14, rip, how) {
        report::check_eq(
            format_args!("#PF not-present read error code is 0 ({how})"),
            t.error_code,
            0,
        );
        report::check_eq(
            format_args!("#PF not-present read cr2 ({how})"),
            t.cr2,
            Some(va),
        );
    }
    // The L4 is mapped read-only; storing its own first entry back would
    // change nothing even if it went through.
    let l4 = mm::boot_l4_va();
    let old = mm::walk(0)[0].map_or(0, |e| e.value);
    let (_, trap) = traps::catch(|| {
        // SAFETY: a store to the read-only L4 page; it faults (#PF) and
        // resumes after the block; the value is the entry's own.
        unsafe {
            fixup_asm!(
                "lea {rip}, [rip + 5f]",
                "5:",
                "mov qword ptr [{a}], {v}";
                rip = out(reg) rip,
                a = in(reg) l4,
                v = in(reg) old,
                options(nostack),
            );
        }
    });
    if let Some(t) = check_trap("#PF write to read-only page", trap, 14, rip, how) {
        report::check_eq(
            format_args!("#PF write to read-only page error code is P|W ({how})"),
            t.error_code,
            3,
        );
        report::check_eq(
            format_args!("#PF write to read-only page cr2 ({how})"),
            t.cr2,
            Some(l4),
        );
    }
}

fn run(mode: ReturnMode, how: &str) {
    if !support::traps() {
        return;
    }
    traps::set_return_mode(mode);
    divide_error(how);
    single_step(how);
    breakpoint(how);
    overflow(how);
    invalid_opcode(how);
    misaligned_stack(how);
    device_not_available(how);
    general_protection(how);
    page_faults(how);
    let total = traps::count();
    report::check_eq(
        format_args!("exactly one entry per exception ({how})"),
        total,
        10,
    );
}

/// `cpu_iretq_rpl0` (this hypervisor only: Xen's kernel runs in ring 3):
/// a native `iretq` from the kernel to a kernel frame whose CS has RPL 0,
/// as the hypervisor's own frames carry it, is refused by the CPU at CPL 1
/// and completed by the hypervisor as `HYPERVISOR_iret` would: the guest
/// lands where the frame says, on the kernel's own CS, with no exception,
/// and its upcall mask follows the frame's IF (clear here: masked).
pub fn iretq_rpl0(_start_info: &'static StartInfo) {
    if !support::traps() {
        return;
    }
    let rpl0 = u64::from(RING1_KERNEL_CS & !3);
    let ((cs, landed), trap) = traps::catch(|| {
        let (cs, landed): (u64, u64);
        // SAFETY: builds an iretq frame to the next instruction on the
        // current stack (RSP as it was, SS the kernel's, RFLAGS with IF
        // clear); the return lands at label 4 with the stack as before.
        unsafe {
            fixup_asm!(
                "mov rax, rsp",
                "push {ss}",
                "push rax",
                "pushfq",
                "and qword ptr [rsp], ~0x200",
                "push {cs}",
                "lea rax, [rip + 4f]",
                "push rax",
                "xor edx, edx",
                "iretq",
                "4:",
                "mov edx, 1",
                "mov rax, cs";
                cs = in(reg) rpl0,
                ss = const RING1_KERNEL_SS as u64,
                out("rax") cs,
                out("rdx") landed,
            );
        }
        (cs, landed)
    });
    report::check(
        "an iretq to a kernel frame with CS RPL 0 is completed by the hypervisor",
        trap.is_none() && landed == 1 && cs == u64::from(RING1_KERNEL_CS),
        format_args!("landed {landed}, cs {cs:#x}, {trap:x?}"),
    );
    report::check_eq(
        "the upcall mask follows the frame's IF (clear)",
        guest_pv_shim::shared::upcall_mask(),
        Some(1),
    );
}
