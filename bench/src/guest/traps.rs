//! Trap paths: a #PF round trip through the guest's handler, and a
//! `SYSCALL` bounce from guest user mode to the kernel and back.
//!
//! Both need the hypervisor to deliver bounce frames and to implement
//! `HYPERVISOR_iret`; each prerequisite hypercall is tried first, and an
//! `ENOSYS` makes the benchmark `unsupported` before anything can fault.
//!
//! User mode runs the loop in `asm.rs` on the kernel's own page table
//! (`NEW_USER_BASEPTR` = the current L4, as XTF does): the loop's page and
//! the user stack page must be user accessible. Xen marks every guest
//! page user accessible itself; on this hypervisor the guest sets the U
//! bit on the path to those two pages.

use guest_pv_shim::dom0_abi::cpu::{CallbackFlags, CallbackType, TrapInfo};
use guest_pv_shim::dom0_abi::mmu::{
    MmuUpdate, MmuUpdateCmd, MmuextCmd, MmuextOp, PteFlags, UvmfFlags,
};
use guest_pv_shim::hypercall::raw;

use crate::guest::asm::{
    self, bench_enter_user, bench_pf_handler, bench_pf_handler_iretq, bench_pf_touch,
    bench_syscall_entry, bench_syscall_entry_iretq, entry_address,
};
use crate::guest::harness::{Harness, Measured, NotRun, Reason, failed, not_run};
use crate::guest::hc;
use crate::guest::pagetable::PageTables;
use pv_bench::stats::Samples;

/// The address the #PF benchmark loads from: below every mapping of the
/// initial layout (the first page of the address space).
const FAULT_VA: u64 = 0x1000;

/// The #PF vector.
const PAGE_FAULT: u8 = 14;

/// Why `page_fault_iretq` does not run on Xen.
const NATIVE_IRET_XEN: &str = "a 64-bit PV kernel on Xen runs in ring 3 and returns from its \
     handlers with HYPERVISOR_iret (a native iretq there faults under QEMU)";

/// Whether the hypercall page's stubs enter with `int $0x82` (this
/// hypervisor) rather than `syscall` (Xen).
fn stubs_use_int82() -> bool {
    raw::page()[..32].windows(2).any(|w| w == [0xCD, 0x82])
}

/// `Ok` if `HYPERVISOR_iret` works. On `int $0x82` platforms it is tried
/// directly (a missing iret returns `ENOSYS` there); Xen always has it.
pub fn iret_works(name: &str) -> Result<(), NotRun> {
    if !stubs_use_int82() {
        return Ok(());
    }
    match asm::probe_iret_int82() {
        0 => Ok(()),
        err => Err(not_run(name, "iret", err)),
    }
}

/// How a trap handler returns to the interrupted code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Return {
    /// `HYPERVISOR_iret` (portable: a second hypervisor entry).
    Hypercall,
    /// A native `iretq` (kernel to kernel: no hypervisor entry).
    Iretq,
}

/// `page_fault` and `page_fault_iretq`: each sample is one load from an
/// unmapped address, the #PF bounce, the handler and its return (`how`)
/// back past the load.
pub fn page_fault(
    h: &Harness,
    pt: &PageTables,
    name: &str,
    how: Return,
) -> Result<Measured, NotRun> {
    if pt.is_mapped(FAULT_VA) {
        return Err(failed(name, "the fault address is mapped"));
    }
    iret_works(name)?;
    if how == Return::Iretq && !stubs_use_int82() {
        return Err(NotRun::Unsupported(Reason::Text(NATIVE_IRET_XEN)));
    }
    let (cs, _) = asm::current_cs_ss();
    let table = [
        TrapInfo {
            vector: PAGE_FAULT,
            flags: 0,
            cs,
            address: match how {
                Return::Hypercall => entry_address(bench_pf_handler),
                Return::Iretq => entry_address(bench_pf_handler_iretq),
            },
        },
        TrapInfo::default(),
    ];
    // SAFETY: `bench_pf_handler` handles a #PF frame (resuming the one
    // expected load, panicking on any other fault).
    let ret = unsafe { hc::set_trap_table(Some(&table)) };
    if ret != 0 {
        return Err(not_run(name, "set_trap_table", ret));
    }
    let measured = h.time(
        name,
        "#PF delivery",
        || {
            bench_pf_touch(FAULT_VA);
            0
        },
        |_| true,
    );
    // SAFETY: clearing the table only removes the handler again.
    let ret = unsafe { hc::set_trap_table(None) };
    if ret != 0 {
        return Err(not_run(name, "set_trap_table(NULL)", ret));
    }
    measured
}

/// Sets the U bit on every level of the mapping of `va`, where missing.
fn make_user_accessible(pt: &PageTables, name: &str, va: u64) -> Result<(), NotRun> {
    let user = PteFlags::USER.bits();
    for level in (2..=4).rev() {
        let entry = pt
            .entry(va, level)
            .map_err(|_| failed(name, "user page not in the bootstrap tables"))?;
        if entry.value & user == 0 {
            let req = [MmuUpdate::new(
                MmuUpdateCmd::NormalPtUpdate,
                entry.maddr,
                entry.value | user,
            )];
            let mut done = 0;
            // SAFETY: adds U to an upper-level entry: the kernel's own
            // accesses are unaffected.
            let ret = unsafe { hc::mmu_update(&req, &mut done) };
            if ret != 0 {
                return Err(not_run(name, "mmu_update (U bit)", ret));
            }
        }
    }
    let pte = pt
        .entry(va, 1)
        .map_err(|_| failed(name, "user page not in the bootstrap tables"))?;
    if pte.value & user == 0 {
        // SAFETY: makes a page that holds only user-mode code or the user
        // stack user accessible; the kernel never executes or uses it.
        let ret = unsafe { hc::update_va_mapping(va, pte.value | user, UvmfFlags::INVLPG.bits()) };
        if ret != 0 {
            return Err(not_run(name, "update_va_mapping (U bit)", ret));
        }
    }
    Ok(())
}

/// Registers `entry` as the syscall callback (with `flags`), the kernel
/// stack and the user page table, and makes the user pages accessible.
pub fn prepare_user_mode(
    pt: &PageTables,
    name: &str,
    entry: unsafe extern "C" fn(),
    flags: CallbackFlags,
) -> Result<(), NotRun> {
    iret_works(name)?;
    // SAFETY: both syscall entries of `asm.rs` handle the syscall frame.
    let ret = unsafe { hc::callback_register(CallbackType::Syscall, entry_address(entry), flags) };
    if ret != 0 {
        return Err(not_run(name, "callback_op(register syscall)", ret));
    }
    let (_, ss) = asm::current_cs_ss();
    // SAFETY: the kernel stack for user entries is reserved for them.
    let ret = unsafe { hc::stack_switch(ss, asm::kernel_stack_top()) };
    if ret != 0 {
        return Err(not_run(name, "stack_switch", ret));
    }
    let op = [MmuextOp {
        cmd: MmuextCmd::NewUserBaseptr as u32,
        pad: 0,
        arg1: pt.l4_mfn(),
        arg2: 0,
    }];
    let mut done = 0;
    // SAFETY: names the current L4 as the user-mode table; kernel mode is
    // unaffected.
    let ret = unsafe { hc::mmuext_op(&op, &mut done) };
    if ret != 0 {
        return Err(not_run(name, "mmuext_op(NEW_USER_BASEPTR)", ret));
    }
    let (code, code_end) = asm::user_code_range();
    let mut page = code;
    while page < code_end {
        make_user_accessible(pt, name, page)?;
        page += 4096;
    }
    make_user_accessible(pt, name, asm::user_stack_va())
}

/// RFLAGS of user mode with events masked (IF clear).
const USER_RFLAGS_MASKED: u64 = 0x2;
/// RFLAGS of user mode with events unmasked (IF set).
pub const USER_RFLAGS_EVENTS: u64 = 0x202;

/// `syscall_bounce` and `syscall_bounce_iretq`: user mode times each
/// `SYSCALL` bounce itself (the callback returning as `how` says) and
/// hands back the totals.
pub fn syscall_bounce(
    h: &Harness,
    pt: &PageTables,
    name: &str,
    how: Return,
) -> Result<Measured, NotRun> {
    let entry = match how {
        Return::Hypercall => bench_syscall_entry,
        Return::Iretq if !stubs_use_int82() => {
            return Err(NotRun::Unsupported(Reason::Text(NATIVE_IRET_XEN)));
        }
        Return::Iretq => bench_syscall_entry_iretq,
    };
    prepare_user_mode(pt, name, entry, CallbackFlags::empty())?;
    // SAFETY: `prepare_user_mode` registered the callback (which returns
    // every bounce), the stack and the user table and made the user pages
    // accessible; iret works.
    Ok(unsafe { user_loop(h, USER_RFLAGS_MASKED) })
}

/// Runs the user-mode loop (warm-up, then the timed iterations, each one
/// `SYSCALL` and whatever the callback does before user mode resumes)
/// with `rflags` in user mode, and returns its samples.
///
/// # Safety
/// As for [`bench_enter_user`]: [`prepare_user_mode`] has run with a
/// callback that returns to user mode for a bounce and to the loop's
/// caller for the last `SYSCALL`.
pub unsafe fn user_loop(h: &Harness, rflags: u64) -> Measured {
    let user_rsp = asm::user_stack_va() + 4096;
    let warmup = u64::from(h.options.warmup);
    let iters = u64::from(h.options.iters);
    // SAFETY: the caller vouches for the callback, stack and pages.
    unsafe { bench_enter_user(warmup, user_rsp, rflags) };
    let before = h.counters_now();
    // SAFETY: as above.
    let totals = unsafe { bench_enter_user(iters, user_rsp, rflags) };
    let counters = h.counters_since(before);
    let mut samples = Samples::new();
    samples.merge(
        iters,
        totals.sum.saturating_sub(iters * h.overhead),
        totals.min.saturating_sub(h.overhead),
    );
    Measured {
        samples,
        counters,
        runs: warmup + iters,
    }
}
