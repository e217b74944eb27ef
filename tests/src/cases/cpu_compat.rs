//! `cpu_compat_callbacks`: 32-bit user code (CS 0xe023) and the
//! syscall32 and sysenter callbacks.
//!
//! The kernel maps a page of 32-bit code below 4 GiB (at 0x400000, through
//! new L3/L2/L1 tables in L4 slot 0, user-accessible at every level) and
//! runs it in compatibility mode. A 32-bit `SYSCALL` reaches the syscall32
//! callback with a 32-bit user frame (CS 0xe023, RIP and RCX = the
//! address after the instruction); a 32-bit `SYSENTER` reaches the
//! sysenter callback on Intel CPUs and is #GP(0) on AMD ones, which have
//! no SYSENTER in long mode. The callbacks (or the fault) end the run.
//!
//! The 32-bit code uses no stack: the run's RSP is a 64-bit address that
//! compatibility mode cannot use.

use guest_pv_shim::dom0_abi::cpu::{CallbackFlags, CallbackType};
use guest_pv_shim::dom0_abi::mmu::{MmuUpdate, MmuUpdateCmd, PteFlags};
use guest_pv_shim::dom0_abi::segment::FLAT_USER_CS32;
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::hypercall::{self as hc, FOREIGNDOM_SELF};
use guest_pv_shim::mm::{self, Frame, PTE_RO, PTE_RW};
use guest_pv_shim::report;
use guest_pv_shim::traps::{self, Callback, Disposition, Trap, TrapFrame, UserEntry};

use crate::support;

/// Where the 32-bit code is mapped.
const CODE_VA: u64 = 0x40_0000;
/// `syscall; ud2` at offset 0, `sysenter; ud2` at offset 16.
const CODE: [u64; 3] = [0x0B0F_050F, 0, 0x0B0F_340F];

const US: u64 = PteFlags::USER.bits();

fn frame_with(words: &[u64]) -> Option<Frame> {
    let f = support::frame()?;
    (mm::prepare_frame(26, f, words) == 0).then_some(f)
}

/// Maps the code page at `CODE_VA` through new tables in L4 slot 0.
fn map_code() -> bool {
    let (Some(code), Some(l1)) = (frame_with(&CODE), support::frame()) else {
        return false;
    };
    let mut l1_words = [0u64; 1];
    l1_words[0] = code.maddr() | PTE_RO | US;
    if mm::prepare_frame(26, l1, &l1_words) != 0 {
        return false;
    }
    let (Some(l2), Some(l3)) = (
        frame_with(&[0, 0, l1.maddr() | PTE_RW | US]),
        support::frame(),
    ) else {
        return false;
    };
    if mm::prepare_frame(26, l3, &[l2.maddr() | PTE_RW | US]) != 0 {
        return false;
    }
    let req = MmuUpdate::new(
        MmuUpdateCmd::NormalPtUpdate,
        mm::boot_l4_mfn() << 12,
        l3.maddr() | PTE_RW | US,
    );
    // SAFETY: L4 slot 0 is unused by the running code.
    let ret = unsafe { hc::mmu_update(core::slice::from_ref(&req), None, FOREIGNDOM_SELF) };
    if ret != 0 {
        report::error("map 32-bit code", format_args!("{}", report::Ret(ret)));
    }
    ret == 0
}

pub fn run(_start_info: &'static StartInfo) {
    if !support::traps_and_user() {
        return;
    }
    let mask = CallbackFlags::MASK_EVENTS;
    report::check_ret(
        "register the syscall32 callback",
        traps::register_callback(CallbackType::Syscall32, Callback::Syscall32, mask),
        0,
    );
    report::check_ret(
        "register the sysenter callback",
        traps::register_callback(CallbackType::Sysenter, Callback::Sysenter, mask),
        0,
    );
    if !map_code() {
        return;
    }
    let exit = traps::run_user(CODE_VA, FLAT_USER_CS32, 0x202, UserEntry::Hypercall);
    report::check_eq(
        "32-bit user SYSCALL reaches the syscall32 callback",
        exit.vector,
        traps::VECTOR_SYSCALL32,
    );
    report::check(
        "the syscall32 frame shows 32-bit user mode and the return address",
        exit.cs_selector() == FLAT_USER_CS32 && exit.rip == CODE_VA + 2 && exit.rcx == CODE_VA + 2,
        format_args!("{exit:x?}"),
    );
    traps::set_hook(Some(end_on_fault));
    let exit = traps::run_user(CODE_VA + 16, FLAT_USER_CS32, 0x202, UserEntry::Hypercall);
    traps::set_hook(None);
    // AMD CPUs (QEMU's TCG reports AuthenticAMD) have no SYSENTER in long
    // mode: it faults (#GP(0) under TCG, whose SYSENTER_CS is left 0).
    // Intel CPUs take it to the sysenter callback.
    let amd = core::arch::x86_64::__cpuid(0).ebx == 0x6874_7541;
    let ok = if amd {
        exit.vector == 13 && exit.error_code == 0 && exit.rip == CODE_VA + 16
    } else {
        exit.vector == traps::VECTOR_SYSENTER
    };
    report::check(
        "32-bit user SYSENTER reaches the sysenter callback (Intel) or is #GP (AMD)",
        ok,
        format_args!("{exit:x?}"),
    );
}

/// Ends the user run at a fault in the 32-bit code (which has no fixup
/// entries).
fn end_on_fault(_frame: &mut TrapFrame, rec: &Trap) -> Disposition {
    if rec.vector < 32 && (CODE_VA..CODE_VA + 4096).contains(&rec.rip) {
        Disposition::ResumeKernel
    } else {
        Disposition::Default
    }
}
