//! `cpu_user_mode` and `cpu_user_syscall`: the guest kernel runs code in
//! user mode (ring 3) and gets it back.
//!
//! `cpu_user_mode`: enter user mode with `HYPERVISOR_iret` and with a
//! native `iretq`; user code sees CS 0xe033, SS 0xe02b and the RSP it was
//! given; an exception (the shim's exit `ud2`) brings it back on the
//! `stack_switch` stack with a user frame; RFLAGS.IF in the iret frame sets the upcall mask for
//! user mode; user page faults (read and write of an unmapped page) reach
//! the kernel with the U bit in the error code and `cr2`, returning
//! through `HYPERVISOR_iret` and `iretq`; a user read of a page only the
//! kernel may use is #PF (here the page is a supervisor page: P|U; on Xen,
//! whose kernel runs in ring 3, it is a page the user page table leaves
//! out: U only); `stack_switch` moves later entries to a new stack; `int $0x80` (DPL 3) is delivered,
//! `int $0x21` with DPL 0 gives #GP with the vector in the error code
//! until the trap table opens it to DPL 3; `int $0x82` from user mode is a
//! #GP, never a hypercall.
//!
//! QEMU's TCG reports `int $n` through a closed gate with error code
//! `n * 16 + 2` (hardware: `n * 8 + 2`), and Xen then consults trap-table
//! entry `2n mod 256`; the test accepts both encodings and opens the
//! aliased entry alongside 0x21 (and closes #OF, the alias of 0x82).
//!
//! `cpu_user_syscall`: user `SYSCALL` reaches the syscall callback with
//! RCX = the return address and R11 = the user RFLAGS in the frame, the
//! user's RSP/CS/SS, on the `stack_switch` stack; the kernel's RAX comes
//! back to user mode; returning with `VGCF_in_syscall` hands the user RCX
//! = return address and R11 = RFLAGS (SYSRET's registers), returning
//! without it hands back the frame's RCX and R11. With no syscall
//! callback, a user `SYSCALL` is #UD. A `SYSCALL` from the guest kernel is
//! a hypercall (how Linux makes them): `xen_version(XENVER_version)` made
//! with it answers as through `int $0x82`/the hypercall page; a user
//! `SYSCALL` with the same registers still reaches the syscall callback,
//! whatever RAX holds (user code cannot make hypercalls that way).
//!
//! On Xen a native `iretq` cannot enter user mode (Xen would not switch to
//! its user page table and mode), so the shim uses `HYPERVISOR_iret` there
//! for the "iretq" variants (see `guest_pv_shim::traps`).

use guest_pv_shim::dom0_abi::cpu::{
    CallbackFlags, CallbackRegister, CallbackType, VGCF_IN_SYSCALL,
};
use guest_pv_shim::dom0_abi::hypercall::Hypercall;
use guest_pv_shim::dom0_abi::mmu::MmuextCmd;
use guest_pv_shim::dom0_abi::segment::{FLAT_USER_CS, FLAT_USER_SS};
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::hypercall as hc;
use guest_pv_shim::mm::{self, Frame};
use guest_pv_shim::report;
use guest_pv_shim::traps::{self, Disposition, ReturnMode, Trap, TrapFrame, UserEntry};

use crate::support;
use crate::user_code::{self, ARG, OUT_0, OUT_1, OUT_2, OUT_3};

/// RFLAGS for user mode: IF set (events unmasked), bit 1.
const USER_RFLAGS: u64 = 0x202;

fn out(offset: u64) -> u64 {
    mm::read_mapped(traps::user_data() + offset)
}

fn set_arg(value: u64) {
    // SAFETY: the user data page is guest memory no Rust code references.
    unsafe { ((traps::user_data() + ARG) as *mut u64).write_volatile(value) };
}

/// Whether a frame address lies at the top of the `stack_switch` stack.
fn on_entry_stack(frame: u64) -> bool {
    frame + 56 == traps::entry_stack_top()
}

fn address(sym: &u8) -> u64 {
    core::ptr::from_ref(sym) as u64
}

fn check_user_frame(name: core::fmt::Arguments<'_>, t: &Trap) {
    report::check(
        format_args!("{name} shows a user-mode frame"),
        t.from_user()
            && t.cs_selector() == FLAT_USER_CS
            && t.ss & 0xFFFF == u64::from(FLAT_USER_SS),
        format_args!("cs {:#x} ss {:#x}", t.cs, t.ss),
    );
}

fn enter(how: UserEntry, name: &str) {
    // SAFETY: taking the address of a user routine.
    let entry = address(unsafe { &user_code::user_selectors });
    let exit = traps::run_user(entry, FLAT_USER_CS, USER_RFLAGS, how);
    report::check_eq(
        format_args!("user code entered with {name} runs with CS 0xe033"),
        out(OUT_0),
        u64::from(FLAT_USER_CS),
    );
    report::check_eq(
        format_args!("user code entered with {name} runs with SS 0xe02b"),
        out(OUT_1),
        u64::from(FLAT_USER_SS),
    );
    report::check_eq(
        format_args!("user code entered with {name} has the RSP it was given"),
        out(OUT_3),
        traps::user_stack_top(),
    );
    report::check(
        format_args!("user code entered with {name} runs with IF set and IOPL 0"),
        out(OUT_2) & (traps::RFLAGS_IF | 0x3000) == traps::RFLAGS_IF,
        format_args!("rflags {:#x}", out(OUT_2)),
    );
    report::check(
        format_args!("the exit exception from user code entered with {name} returns to the kernel"),
        exit.vector == 6 && exit.rip == traps::user_exit_entry(),
        format_args!("vector {} rip {:#x}", exit.vector, exit.rip),
    );
    check_user_frame(format_args!("exit after {name}"), &exit);
    report::check(
        format_args!("the entry from user mode after {name} uses the stack_switch stack"),
        on_entry_stack(exit.frame),
        format_args!(
            "frame {:#x}, stack top {:#x}",
            exit.frame,
            traps::entry_stack_top()
        ),
    );
    report::check_eq(
        format_args!("RFLAGS.IF given to {name} unmasked events in user mode"),
        exit.saved_mask(),
        0,
    );
}

/// Runs the user probe of `insn` and returns the trap it took.
fn probe(insn: &str) -> Option<Trap> {
    let entry = user_code::probe_address(insn)?;
    let before = traps::count();
    traps::run_user(entry, FLAT_USER_CS, USER_RFLAGS, UserEntry::Hypercall);
    (traps::count() != before).then(traps::last)
}

fn page_faults(mode: ReturnMode, how: &str) {
    traps::set_return_mode(mode);
    // SAFETY: taking the addresses of user routines.
    let (read, write) = unsafe {
        (
            address(&user_code::user_read),
            address(&user_code::user_write),
        )
    };
    set_arg(0x1000);
    let before = traps::count();
    traps::run_user(read, FLAT_USER_CS, USER_RFLAGS, UserEntry::Hypercall);
    let t = (traps::count() != before).then(traps::last);
    report::check(
        format_args!("user read of an unmapped page is #PF with U, cr2 ({how})"),
        t.is_some_and(|t| {
            t.vector == 14 && t.error_code == 4 && t.cr2 == Some(0x1000) && t.from_user()
        }),
        format_args!("{t:x?}"),
    );
    let before = traps::count();
    traps::run_user(write, FLAT_USER_CS, USER_RFLAGS, UserEntry::Hypercall);
    let t = (traps::count() != before).then(traps::last);
    report::check(
        format_args!("user write of an unmapped page is #PF with U|W, cr2 ({how})"),
        t.is_some_and(|t| {
            t.vector == 14 && t.error_code == 6 && t.cr2 == Some(0x1000) && t.from_user()
        }),
        format_args!("{t:x?}"),
    );
    if let Some(t) = t {
        report::check(
            format_args!("the user #PF frame is on the stack_switch stack ({how})"),
            t.frame + 64 == traps::entry_stack_top(),
            format_args!(
                "frame {:#x}, stack top {:#x}",
                t.frame,
                traps::entry_stack_top()
            ),
        );
    }
    traps::set_return_mode(ReturnMode::Hypercall);
}

/// A copy of the page table `src_mfn` with entry `index` replaced by
/// `value`, in a fresh frame with no mapping left.
fn clone_table(src_mfn: u64, index: u64, value: u64) -> Option<Frame> {
    let src = mm::table_va(src_mfn)?;
    let f = support::frame()?;
    if !support::map_window(28, f.mfn, mm::PTE_RW) {
        return None;
    }
    for i in 0..512 {
        let v = if i == index {
            value
        } else {
            mm::read_mapped(src + i * 8)
        };
        // The window that maps the copy itself (writable) is left out.
        let own = v & guest_pv_shim::dom0_abi::mmu::PTE_ADDR_MASK == f.maddr();
        mm::window_write(28, i, if own { 0 } else { v });
    }
    (mm::unmap_window(28) == 0).then_some(f)
}

/// On Xen: a user page table (for `NEW_USER_BASEPTR`) equal to the boot
/// L4 except that `va` is not mapped. Its tables get their own windows
/// (29-31 are left free for `table_va` to find them by).
fn user_table_without(va: u64) -> Option<u64> {
    let walk = mm::walk(va);
    let (Some(l4e), Some(l3e), Some(l2e), Some(l1e)) = (walk[0], walk[1], walk[2], walk[3]) else {
        return None;
    };
    let flags = |e: mm::Entry| e.value & !guest_pv_shim::dom0_abi::mmu::PTE_ADDR_MASK;
    let l1 = clone_table(l2e.mfn(), mm::table_index(va, 1), 0)?;
    let l2 = clone_table(l3e.mfn(), mm::table_index(va, 2), l1.maddr() | flags(l2e))?;
    let l3 = clone_table(l4e.mfn(), mm::table_index(va, 3), l2.maddr() | flags(l3e))?;
    let l4 = clone_table(
        mm::boot_l4_mfn(),
        mm::table_index(va, 4),
        l3.maddr() | flags(l4e),
    )?;
    let _ = l1e;
    Some(l4.mfn)
}

/// User access to a page only the kernel may use. Here the kernel's pages
/// are supervisor pages of the one page table (#PF with P|U); on Xen the
/// kernel runs in ring 3, so a kernel-only page is one that the user page
/// table (`NEW_USER_BASEPTR`) leaves out (#PF with U only).
fn kernel_only_page() {
    let target = mm::window_va(27);
    let mut want_error = 5;
    if traps::on_xen() {
        let Some(user_l4) = user_table_without(target) else {
            report::error("user page table", format_args!("cannot build it"));
            return;
        };
        // SAFETY: the user page table maps everything user mode uses
        // exactly as the kernel's does.
        let ret = unsafe { hc::mmuext_one(MmuextCmd::NewUserBaseptr as u32, user_l4, 0) };
        if ret != 0 {
            report::error("NEW_USER_BASEPTR", format_args!("{}", report::Ret(ret)));
            return;
        }
        want_error = 4;
    }
    set_arg(target);
    let before = traps::count();
    // SAFETY: taking the address of a user routine.
    let read = address(unsafe { &user_code::user_read });
    traps::run_user(read, FLAT_USER_CS, USER_RFLAGS, UserEntry::Hypercall);
    let t = (traps::count() != before).then(traps::last);
    support::check_value(
        "user read of a kernel-only page is #PF with U, cr2",
        t.is_some_and(|t| t.vector == 14 && t.error_code == want_error && t.cr2 == Some(target)),
        support::Ended(t),
        format_args!("{t:x?}"),
    );
    if traps::on_xen() {
        // SAFETY: back to the shared table set up by `prepare_user`.
        unsafe { hc::mmuext_one(MmuextCmd::NewUserBaseptr as u32, mm::boot_l4_mfn(), 0) };
    }
}

/// Entries from user mode use whatever stack `stack_switch` names last.
fn second_stack() {
    let (_, ss) = traps::current_cs_ss();
    let other = traps::entry_stack_top() - 0x2000;
    // SAFETY: the lower half of the entry stack is unused while the
    // kernel runs on its own stack.
    let ret = unsafe { hc::stack_switch(u64::from(ss), other) };
    report::check_ret("stack_switch to another kernel stack", ret, 0);
    // SAFETY: taking the address of a user routine.
    let entry = address(unsafe { &user_code::user_selectors });
    let exit = traps::run_user(entry, FLAT_USER_CS, USER_RFLAGS, UserEntry::Hypercall);
    report::check_eq(
        "the next entry from user mode uses the new stack",
        exit.frame + 56,
        other,
    );
    // SAFETY: back to the shim's entry stack.
    unsafe { hc::stack_switch(u64::from(ss), traps::entry_stack_top()) };
}

pub fn mode(_start_info: &'static StartInfo) {
    if !support::traps_and_user() {
        return;
    }
    enter(UserEntry::Hypercall, "HYPERVISOR_iret");
    enter(UserEntry::Native, "iretq");

    // SAFETY: taking the address of a user routine.
    let entry = address(unsafe { &user_code::user_selectors });
    let exit = traps::run_user(entry, FLAT_USER_CS, 0x2, UserEntry::Hypercall);
    report::check_eq(
        "RFLAGS.IF clear in the iret frame keeps events masked in user mode",
        exit.saved_mask(),
        1,
    );

    page_faults(ReturnMode::Hypercall, "HYPERVISOR_iret");
    page_faults(ReturnMode::Native, "iretq");
    kernel_only_page();
    second_stack();

    let t = probe("int 0x80");
    report::check(
        "int $0x80 (DPL 3) from user mode is delivered",
        t.is_some_and(|t| t.vector == 0x80 && t.from_user() && t.error_code == 0),
        format_args!("{t:x?}"),
    );
    let t = probe("int 0x21");
    report::check(
        "int $0x21 (DPL 0) from user mode is #GP naming the vector",
        t.is_some_and(|t| t.vector == 13 && names_vector(t.error_code, 0x21) && t.from_user()),
        format_args!("{t:x?}"),
    );
    // Under QEMU's TCG the hypervisor sees vector 0x42 for `int $0x21`
    // (see `names_vector`): open that entry too, with the same handler.
    report::check_ret(
        "open vector 0x21 to user mode (DPL 3)",
        traps::set_trap(traps::TEST_VECTOR, 3 | 4, None)
            | traps::set_trap(0x42, 3 | 4, traps::stub_address(traps::TEST_VECTOR)),
        0,
    );
    let t = probe("int 0x21");
    report::check(
        "int $0x21 (DPL 3) from user mode is delivered",
        t.is_some_and(|t| t.vector == 0x21 && t.from_user()),
        format_args!("{t:x?}"),
    );
    // `int $0x82` would alias #OF (vector 4) under QEMU's TCG; close #OF
    // to user mode so that the alias cannot turn it into a delivery.
    report::check_ret("close #OF to user mode", traps::set_trap(4, 4, None), 0);
    let t = probe("int 0x82");
    report::check(
        "int $0x82 from user mode is #GP naming the vector, never a hypercall",
        t.is_some_and(|t| t.vector == 13 && names_vector(t.error_code, 0x82) && t.from_user()),
        format_args!("{t:x?}"),
    );
    // The hypervisor's own gate for #OF is DPL 3 (as for #BP): `int $4`
    // reaches the guest's #OF handler whatever that entry's DPL.
    let t = probe("int 4");
    report::check(
        "int $4 from user mode reaches #OF even with DPL 0 in the trap table",
        t.is_some_and(|t| t.vector == 4 && t.from_user()),
        format_args!("{t:x?}"),
    );
}

/// Whether a #GP error code names IDT vector `n`: `n * 8 + 2` on real
/// hardware, `n * 16 + 2` under QEMU 7.2's TCG (which both platforms pass
/// on unchanged).
fn names_vector(error_code: u64, n: u64) -> bool {
    error_code == n * 8 + 2 || error_code == n * 16 + 2
}

/// Sets distinct values into the syscall frame: RAX (the result), and
/// the RCX/R11 slots (seen by user mode only without `VGCF_in_syscall`).
fn syscall_hook(frame: &mut TrapFrame, rec: &Trap) -> Disposition {
    if rec.vector == traps::VECTOR_SYSCALL && frame.rax == user_code::SYSCALL_NUMBER {
        frame.rax = 0x600D;
        frame.rcx = 0xC1C1_C1C1;
        frame.r11 = 0xB1B1_B1B1;
    }
    Disposition::Default
}

/// `xen_version(XENVER_version, NULL)` made with `SYSCALL` from the
/// kernel, as Linux makes hypercalls (RCX and R11 saved around it).
fn kernel_syscall_xen_version() -> u64 {
    let ret: u64;
    // SAFETY: a hypercall with Xen's register convention; the call may
    // clobber the argument registers, RCX and R11, all declared.
    unsafe {
        core::arch::asm!(
            "push rcx",
            "push r11",
            "syscall",
            "pop r11",
            "pop rcx",
            inlateout("rax") u64::from(Hypercall::XenVersion.number()) => ret,
            inlateout("rdi") 0u64 => _,
            inlateout("rsi") 0u64 => _,
            lateout("rdx") _,
            lateout("r10") _,
            lateout("r8") _,
        );
    }
    ret
}

fn kernel_and_user_syscall_hypercalls() {
    // SAFETY: XENVER_version takes no buffer.
    let expected = unsafe { hc::xen_version_raw(0, 0) }.cast_unsigned();
    report::check_eq(
        "kernel SYSCALL is a hypercall (xen_version answers as through int $0x82)",
        kernel_syscall_xen_version(),
        expected,
    );
    // Entered with HYPERVISOR_iret the hypervisor knows the vCPU is in
    // user mode; entered with a native iretq (here) it does not, and the
    // page of the SYSCALL must decide.
    for (how, name) in [(UserEntry::Hypercall, "iret"), (UserEntry::Native, "iretq")] {
        set_arg(u64::from(Hypercall::XenVersion.number()));
        // SAFETY: taking the address of a user routine.
        let entry = address(unsafe { &user_code::user_syscall_arg });
        let before = traps::count();
        traps::run_user(entry, FLAT_USER_CS, USER_RFLAGS, how);
        let t = (traps::count() != before).then(traps::last);
        report::check(
            format_args!(
                "user SYSCALL with a hypercall's registers reaches the syscall callback ({name})"
            ),
            t.is_some_and(|t| t.vector == traps::VECTOR_SYSCALL && t.from_user()),
            format_args!("{t:x?}"),
        );
        report::check(
            format_args!(
                "user SYSCALL with a hypercall's registers gets no hypercall result ({name})"
            ),
            out(OUT_0) != expected,
            format_args!("rax {:#x}", out(OUT_0)),
        );
    }
}

pub fn syscall(_start_info: &'static StartInfo) {
    if !support::traps_and_user() {
        return;
    }
    traps::set_hook(Some(syscall_hook));
    // SAFETY: taking the address of a user routine.
    let entry = address(unsafe { &user_code::user_syscall });
    let before = traps::count();
    traps::run_user(entry, FLAT_USER_CS, USER_RFLAGS, UserEntry::Hypercall);
    let ret_rip = out(OUT_3);
    let t = (traps::count() != before).then(traps::last);
    let Some(t) = t else {
        report::fail(
            "user SYSCALL reaches the syscall callback",
            format_args!("nothing arrived"),
        );
        return;
    };
    report::check_eq(
        "user SYSCALL reaches the syscall callback",
        t.vector,
        traps::VECTOR_SYSCALL,
    );
    check_user_frame(format_args!("syscall callback"), &t);
    report::check_eq("syscall frame RIP is the return address", t.rip, ret_rip);
    report::check_eq("syscall frame RCX is the return address", t.rcx, ret_rip);
    report::check_eq("syscall frame R11 is the user RFLAGS", t.r11, t.rflags);
    report::check_eq(
        "syscall frame RSP is the user RSP",
        t.rsp,
        traps::user_stack_top(),
    );
    report::check(
        "syscall callback runs on the stack_switch stack",
        on_entry_stack(t.frame),
        format_args!("frame {:#x}", t.frame),
    );
    report::check_eq(
        "syscall callback registered with mask_events runs masked",
        t.mask,
        Some(1),
    );
    report::check_eq("user mode gets the kernel's RAX", out(OUT_0), 0x600D);
    report::check_eq(
        "VGCF_in_syscall return leaves RCX at the return address",
        out(OUT_1),
        ret_rip,
    );

    kernel_and_user_syscall_hypercalls();

    traps::set_syscall_iret_flags(0);
    traps::run_user(entry, FLAT_USER_CS, USER_RFLAGS, UserEntry::Hypercall);
    report::check_eq(
        "a return without VGCF_in_syscall restores RCX and R11 from the frame",
        (out(OUT_1), out(OUT_2)),
        (0xC1C1_C1C1, 0xB1B1_B1B1),
    );
    traps::set_syscall_iret_flags(VGCF_IN_SYSCALL);

    let exit = traps::run_user(
        traps::user_syscall_exit_entry(),
        FLAT_USER_CS,
        USER_RFLAGS,
        UserEntry::Native,
    );
    report::check_eq(
        "SYSCALL can end a user run (iretq entry)",
        exit.vector,
        traps::VECTOR_SYSCALL,
    );
    traps::set_hook(None);

    let none = CallbackRegister {
        kind: CallbackType::Syscall as u16,
        flags: CallbackFlags::MASK_EVENTS.bits(),
        pad: 0,
        address: 0,
    };
    // SAFETY: removes the syscall entry point; user SYSCALL must then fault.
    let ret = unsafe { hc::callback_register(&none) };
    report::check_ret("register a null syscall callback", ret, 0);
    let t = probe("syscall");
    report::check(
        "user SYSCALL without a callback is #UD",
        t.is_some_and(|t| t.vector == 6 && t.from_user()),
        format_args!("{t:x?}"),
    );
    report::check_ret(
        "re-register the syscall callback",
        traps::register_callback(
            CallbackType::Syscall,
            traps::Callback::Syscall,
            CallbackFlags::MASK_EVENTS,
        ),
        0,
    );
}
