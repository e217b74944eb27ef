//! `mm_multicall`: a batch of hypercalls with per-entry results, and
//! `update_va_mapping_otherdomain`, `vm_assist`.
//!
//! `mm_multicall`: one batch of `xen_version`, `update_va_mapping`, an
//! unknown hypercall, an `mmu_update` with an unreadable array, a working
//! `mmu_update` and another `xen_version`: every entry runs and gets its
//! own result; the call itself returns 0. A nested `multicall` entry
//! (`EINVAL`, the batch goes on), an unreadable entry array and an empty
//! batch.
//!
//! `mm_multicall_iret`: an `iret` entry ends the batch: the entries
//! before it ran, the iret returns to the context at the caller's RSP
//! (RIP, RSP and RAX from it; its result slot holds that RAX), and the
//! entries after it never run.
//!
//! `mm_uvm_otherdomain`: `update_va_mapping_otherdomain` for
//! `DOMID_SELF`, for the caller's own id, for a domain that does not exist,
//! and for `DOMID_IO` with an I/O frame.
//!
//! `mm_vm_assist`: enable and disable of every type (Xen accepts all of
//! them for a 64-bit PV guest), unknown types (`EINVAL`) and an unknown
//! command (`ENOSYS`, checked after the type).

use guest_pv_shim::dom0_abi::mmu::{MmuUpdate, MmuUpdateCmd, VmAssistCmd, VmAssistType};
use guest_pv_shim::dom0_abi::multicall::MulticallEntry;
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::dom0_abi::types::DomId;
use guest_pv_shim::dom0_abi::version::version_number;
use guest_pv_shim::dom0_abi::{Errno, Hypercall};
use guest_pv_shim::hypercall::{self as hc, FOREIGNDOM_SELF};
use guest_pv_shim::mm::{self, PTE_RO, PTE_RW, UVMF_INVLPG};
use guest_pv_shim::{report, traps};

use crate::support;

fn entry(op: Hypercall, args: [u64; 6]) -> MulticallEntry {
    MulticallEntry {
        op: u64::from(op.number()),
        result: 0xDEAD_BEEF,
        args,
    }
}

pub fn multicall(_start_info: &'static StartInfo) {
    let Some(f) = support::frame() else {
        return;
    };
    let va = mm::window_va(0);
    let req = MmuUpdate::new(
        MmuUpdateCmd::NormalPtUpdate,
        mm::l1_entry(mm::window_va(1)).map_or(0, |e| e.maddr),
        f.maddr() | PTE_RO,
    );
    let mut done: u32 = u32::MAX;
    let mut batch = [
        entry(Hypercall::XenVersion, [0; 6]),
        entry(
            Hypercall::UpdateVaMapping,
            [va, f.maddr() | PTE_RW, UVMF_INVLPG, 0, 0, 0],
        ),
        MulticallEntry {
            op: 11,
            result: 0xDEAD_BEEF,
            args: [0; 6],
        },
        entry(Hypercall::MmuUpdate, [0x1000, 1, 0, FOREIGNDOM_SELF, 0, 0]),
        entry(
            Hypercall::MmuUpdate,
            [
                core::ptr::from_ref(&req) as u64,
                1,
                core::ptr::from_mut(&mut done) as u64,
                FOREIGNDOM_SELF,
                0,
                0,
            ],
        ),
        entry(Hypercall::XenVersion, [0; 6]),
    ];
    // SAFETY: the batch remaps two windows (no Rust memory) and reads
    // `req`, writes `done`, both alive for the call.
    let ret = unsafe { hc::multicall(&mut batch) };
    report::check_ret("a multicall of six entries", ret, 0);
    let results: [i64; 6] = core::array::from_fn(|i| batch[i].result.cast_signed());
    let version = i64::from(version_number(4, 17));
    report::check_ret("entry 0 (xen_version) result", results[0], version);
    report::check_ret("entry 1 (update_va_mapping) result", results[1], 0);
    report::check_ret(
        "entry 2 (hypercall 11) result is ENOSYS",
        results[2],
        Errno::ENOSYS.neg(),
    );
    report::check_ret(
        "entry 3 (mmu_update of an unreadable array) result is EFAULT",
        results[3],
        Errno::EFAULT.neg(),
    );
    report::check_ret("entry 4 (mmu_update) result", results[4], 0);
    report::check_eq("entry 4 wrote its pdone", done, 1);
    report::check_ret("entry 5 runs after failed entries", results[5], version);
    mm::window_write(0, 0, 0x3CA1);
    report::check_eq(
        "the batch's mappings are live",
        mm::window_read(1, 0),
        0x3CA1,
    );

    let mut nested = [
        entry(Hypercall::Multicall, [0, 0, 0, 0, 0, 0]),
        entry(Hypercall::XenVersion, [0; 6]),
    ];
    // SAFETY: a nested multicall of nothing, and a version query.
    let ret = unsafe { hc::multicall(&mut nested) };
    report::check_ret("a batch holding a nested multicall", ret, 0);
    report::check_ret(
        "a nested multicall entry is EINVAL",
        nested[0].result.cast_signed(),
        Errno::EINVAL.neg(),
    );
    report::check_ret(
        "the entry after a nested multicall runs",
        nested[1].result.cast_signed(),
        version,
    );
    // SAFETY: an unmapped entry array; the hypervisor must refuse.
    let ret = unsafe { hc::multicall_raw(0x1000, 1) };
    report::check_ret(
        "an unreadable entry array is EFAULT",
        ret,
        Errno::EFAULT.neg(),
    );
    // SAFETY: an empty batch touches nothing.
    let ret = unsafe { hc::multicall(&mut []) };
    report::check_ret("an empty multicall", ret, 0);
    mm::unmap_window(0);
    mm::unmap_window(1);
}

pub fn uvm_otherdomain(_start_info: &'static StartInfo) {
    let Some(f) = support::frame() else {
        return;
    };
    let va = mm::window_va(0);
    let uvm = |pte: u64, domid: u64| {
        // SAFETY: window 0 holds no memory of the running code.
        unsafe { hc::update_va_mapping_otherdomain(va, pte, UVMF_INVLPG, domid) }
    };
    report::check_ret(
        "update_va_mapping_otherdomain for DOMID_SELF",
        uvm(f.maddr() | PTE_RW, FOREIGNDOM_SELF),
        0,
    );
    mm::window_write(0, 0, 0x0D0D);
    report::check_eq("the mapping is live", mm::window_read(0, 0), 0x0D0D);
    report::check_ret(
        "update_va_mapping_otherdomain naming the caller's own id is ESRCH",
        uvm(f.maddr() | PTE_RO, u64::from(DomId::DOM0.0)),
        Errno::ESRCH.neg(),
    );
    report::check_ret(
        "update_va_mapping_otherdomain for a domain that does not exist is ESRCH",
        uvm(f.maddr() | PTE_RO, 77),
        Errno::ESRCH.neg(),
    );
    report::check_ret(
        "update_va_mapping_otherdomain for DOMID_IO maps an I/O frame",
        uvm(0xB8000 | PTE_RW, u64::from(DomId::IO.0)),
        0,
    );
    report::check_ret(
        "update_va_mapping_otherdomain for DOMID_IO refuses own RAM",
        uvm(f.maddr() | PTE_RO, u64::from(DomId::IO.0)),
        Errno::EBUSY.neg(),
    );
    report::check_ret("unmap", uvm(0, FOREIGNDOM_SELF), 0);
}

pub fn vm_assist(_start_info: &'static StartInfo) {
    for &kind in VmAssistType::ALL {
        let name = kind.name();
        report::check_ret(
            format_args!("enable {name}"),
            hc::vm_assist(VmAssistCmd::Enable, kind),
            0,
        );
        report::check_ret(
            format_args!("disable {name}"),
            hc::vm_assist(VmAssistCmd::Disable, kind),
            0,
        );
    }
    for kind in [6u64, 31, 33, 63, 64, 1000] {
        report::check_ret(
            format_args!("enable of unknown type {kind} is EINVAL"),
            hc::vm_assist_raw(0, kind),
            Errno::EINVAL.neg(),
        );
    }
    report::check_ret(
        "command 2 is ENOSYS",
        hc::vm_assist_raw(2, VmAssistType::WritablePagetables as u64),
        Errno::ENOSYS.neg(),
    );
    report::check_ret(
        "command 2 with an unknown type is EINVAL (type checked first)",
        hc::vm_assist_raw(2, 6),
        Errno::EINVAL.neg(),
    );
}

/// Issues `multicall(entries, nr)` with the trap instruction itself and
/// RSP pointing at an `iret_context` that resumes at a label after it.
/// Returns (RAX after the call, whether the iret path was taken).
fn multicall_with_iret_context(entries: &mut [MulticallEntry]) -> (u64, bool) {
    let (cs, ss) = traps::current_cs_ss();
    // A kernel return needs the kernel's RPL: 1 here, 0 on Xen (whose
    // ring-3 kernel would otherwise be switched to user mode).
    let cs = if cs & 3 == 3 { cs & !3 } else { cs };
    // The stubs' trap instruction: SYSCALL on Xen, INT $0x82 here.
    let syscall = hc::raw::page()[13 * 32..14 * 32]
        .windows(2)
        .any(|w| w == [0x0F, 0x05]);
    let rax: u64;
    let via_iret: u64;
    // SAFETY: builds a 72-byte iret_context below the aligned stack, then
    // traps into the hypervisor with RSP at it; the multicall's iret entry
    // returns to label 5 with RSP restored from the context (R12 keeps the
    // original RSP for the path where the call returns normally). The
    // entries are a version query and the iret.
    unsafe {
        core::arch::asm!(
            "mov r12, rsp",
            "and rsp, -16",
            "sub rsp, 80",
            "mov qword ptr [rsp], 0x1111",
            "mov qword ptr [rsp + 8], 0x2222",
            "mov qword ptr [rsp + 16], 0x3333",
            "mov qword ptr [rsp + 24], 0",
            "lea rax, [rip + 5f]",
            "mov qword ptr [rsp + 32], rax",
            "mov qword ptr [rsp + 40], {cs}",
            "pushfq",
            "pop rax",
            "mov qword ptr [rsp + 48], rax",
            "mov qword ptr [rsp + 56], r12",
            "mov qword ptr [rsp + 64], {ss}",
            "mov eax, 13",
            "test {syscall}, {syscall}",
            "jz 2f",
            "syscall",
            "jmp 3f",
            "2:",
            "int 0x82",
            "3:",
            "mov rsp, r12",
            "xor {path:e}, {path:e}",
            "jmp 6f",
            "5:",
            "mov {path:e}, 1",
            "6:",
            cs = in(reg) u64::from(cs),
            ss = in(reg) u64::from(ss),
            syscall = in(reg) u64::from(syscall),
            path = out(reg) via_iret,
            inout("rdi") entries.as_mut_ptr() as u64 => _,
            inout("rsi") entries.len() as u64 => _,
            out("rax") rax,
            out("r12") _, out("rcx") _, out("r11") _, out("rdx") _, out("r10") _, out("r8") _,
        );
    }
    (rax, via_iret == 1)
}

pub fn multicall_iret(_start_info: &'static StartInfo) {
    let mut batch = [
        entry(Hypercall::XenVersion, [0; 6]),
        entry(Hypercall::Iret, [0; 6]),
        entry(Hypercall::XenVersion, [0; 6]),
    ];
    let (rax, via_iret) = multicall_with_iret_context(&mut batch);
    report::check(
        "the iret entry returns to the context's RIP",
        via_iret,
        format_args!("returned normally, rax {rax:#x}"),
    );
    report::check_eq("RAX comes from the iret context", rax, 0x1111);
    report::check_ret(
        "the entry before the iret ran",
        batch[0].result.cast_signed(),
        i64::from(version_number(4, 17)),
    );
    report::check_eq(
        "the iret entry's result is the restored RAX",
        batch[1].result,
        0x1111,
    );
    report::check_eq(
        "the entry after the iret did not run",
        batch[2].result,
        0xDEAD_BEEF,
    );
}
