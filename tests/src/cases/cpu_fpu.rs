//! `cpu_fpu`: the guest's x87/SSE state across hypervisor entries, and a
//! lazy FPU switch between two tasks with `fpu_taskswitch` and #NM.
//!
//! Task A loads a pattern into XMM0-15 and three x87 registers. The state
//! must survive hypercalls, an exception and a user-mode run. Then the
//! kernel switches lazily to task B and back, as a PV kernel does: it
//! sets the virtual CR0.TS (`fpu_taskswitch(1)`); the next FPU
//! instruction raises #NM; the handler clears TS (`fpu_taskswitch(0)`),
//! saves the live state with FXSAVE for the outgoing task, loads the
//! incoming task's with FXRSTOR and returns to the faulting instruction,
//! which then runs. Each task finds its registers intact; exactly one #NM
//! arrives per switch.
//!
//! The guest's Rust code uses no FPU or SSE (soft-float target), so only
//! the assembly here touches these registers.

use core::arch::asm;
use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicUsize, Ordering};

use guest_pv_shim::dom0_abi::segment::FLAT_USER_CS;
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::traps::{self, Disposition, Trap, TrapFrame, UserEntry};
use guest_pv_shim::{fixup_asm, hypercall, report};

use crate::support;
use crate::user_code;

/// An FXSAVE area.
#[repr(C, align(16))]
#[derive(Clone, Copy)]
struct Fx([u8; 512]);

/// The areas: 0 and 1 hold the saved state of tasks A and B.
struct Areas(UnsafeCell<[Fx; 2]>);

// SAFETY: one vCPU; the #NM hook and the test's main flow never run at
// the same time (the hook runs while the main flow is stopped at an FPU
// instruction), and each accesses the areas through raw pointers only.
unsafe impl Sync for Areas {}

static AREAS: Areas = Areas(UnsafeCell::new([Fx([0; 512]); 2]));

/// The task whose state is live (0 = A, 1 = B).
static LIVE: AtomicUsize = AtomicUsize::new(0);
/// The task to switch to at the next #NM.
static NEXT: AtomicUsize = AtomicUsize::new(0);

fn area(task: usize) -> *mut Fx {
    // SAFETY: a pointer into the static array; no reference is created.
    unsafe { AREAS.0.get().cast::<Fx>().add(task) }
}

/// FXSAVE into `to`.
fn fxsave(to: *mut Fx) {
    // SAFETY: `to` is a 16-byte aligned 512-byte area that no reference
    // aliases (module invariant); FXSAVE writes only it.
    unsafe { asm!("fxsave64 [{}]", in(reg) to, options(nostack)) };
}

/// FXRSTOR from `from`.
fn fxrstor(from: *const Fx) {
    // SAFETY: `from` holds a state written by FXSAVE; FXRSTOR changes only
    // FPU/SSE registers, which no Rust code uses.
    unsafe { asm!("fxrstor64 [{}]", in(reg) from, options(nostack)) };
}

/// Loads task `seed`'s pattern: XMM0-15 and three x87 registers.
fn load_pattern(seed: u64) {
    #[repr(C, align(16))]
    struct Xmm([u64; 32]);
    let mut x = Xmm([0; 32]);
    for (i, w) in (0u32..).zip(x.0.iter_mut()) {
        *w = seed.rotate_left(i) ^ (0x0101_0101_0101_0101 * u64::from(i));
    }
    let p = core::ptr::from_ref(&x);
    // SAFETY: reads the 256-byte aligned buffer into the XMM registers and
    // resets/loads the x87 stack; no Rust code uses these registers.
    unsafe {
        asm!(
            "fninit",
            "fld1",
            "fldpi",
            "fldl2t",
            "movdqa xmm0, [{p}]",
            "movdqa xmm1, [{p} + 16]",
            "movdqa xmm2, [{p} + 32]",
            "movdqa xmm3, [{p} + 48]",
            "movdqa xmm4, [{p} + 64]",
            "movdqa xmm5, [{p} + 80]",
            "movdqa xmm6, [{p} + 96]",
            "movdqa xmm7, [{p} + 112]",
            "movdqa xmm8, [{p} + 128]",
            "movdqa xmm9, [{p} + 144]",
            "movdqa xmm10, [{p} + 160]",
            "movdqa xmm11, [{p} + 176]",
            "movdqa xmm12, [{p} + 192]",
            "movdqa xmm13, [{p} + 208]",
            "movdqa xmm14, [{p} + 224]",
            "movdqa xmm15, [{p} + 240]",
            p = in(reg) p,
            options(nostack),
        );
    }
}

/// The registers of an FXSAVE image: ST0-7 (bytes 32-159) and XMM0-15
/// (bytes 160-415).
fn registers(fx: &Fx) -> &[u8] {
    &fx.0[32..416]
}

/// A snapshot of the live state.
fn snapshot() -> Fx {
    let mut fx = Fx([0; 512]);
    fxsave(&raw mut fx);
    fx
}

/// The #NM handler of a lazy-switching kernel.
fn nm_hook(_frame: &mut TrapFrame, rec: &Trap) -> Disposition {
    if rec.vector != 7 {
        return Disposition::Default;
    }
    hypercall::fpu_taskswitch(0);
    let live = LIVE.load(Ordering::Relaxed);
    let next = NEXT.load(Ordering::Relaxed);
    fxsave(area(live));
    fxrstor(area(next));
    LIVE.store(next, Ordering::Relaxed);
    Disposition::Return
}

/// Switches lazily to `task`, then runs an FPU instruction (which takes
/// the #NM). Returns the number of #NM entries it caused.
fn switch_to(task: usize) -> u64 {
    NEXT.store(task, Ordering::Relaxed);
    hypercall::fpu_taskswitch(1);
    let before = traps::count();
    // SAFETY: an x87 no-op; the #NM it raises is handled by the hook,
    // which returns to it.
    unsafe { fixup_asm!("fnop"; options(nostack)) };
    traps::count() - before
}

pub fn run(_start_info: &'static StartInfo) {
    if !support::traps_and_user() {
        return;
    }
    load_pattern(0xB000_0000_0000_000B);
    let task_b = snapshot();
    load_pattern(0xA000_0000_0000_000A);
    let task_a = snapshot();

    for _ in 0..3 {
        hypercall::xenver_version();
    }
    let (_, ud) = traps::catch(|| {
        // SAFETY: faults and resumes after the block.
        unsafe { fixup_asm!("ud2"; options(nostack)) };
    });
    // SAFETY: taking the address of a user routine.
    let entry = core::ptr::addr_of!(user_code::user_selectors) as u64;
    traps::run_user(entry, FLAT_USER_CS, 0x202, UserEntry::Hypercall);
    let now = snapshot();
    report::check(
        "x87/SSE registers survive hypercalls, an exception and user mode",
        ud.is_some() && registers(&now) == registers(&task_a),
        format_args!("exception {ud:x?}"),
    );

    // SAFETY: the areas are only used through raw pointers (module
    // invariant); the hook is not installed yet.
    unsafe {
        *area(0) = task_a;
        *area(1) = task_b;
    }
    LIVE.store(0, Ordering::Relaxed);
    traps::set_hook(Some(nm_hook));
    let to_b = switch_to(1);
    let on_b = snapshot();
    let to_a = switch_to(0);
    let on_a = snapshot();
    traps::set_hook(None);
    report::check_eq("switching to task B takes exactly one #NM", to_b, 1);
    report::check(
        "task B finds its x87/SSE registers",
        registers(&on_b) == registers(&task_b),
        format_args!("state differs"),
    );
    report::check_eq("switching back to task A takes exactly one #NM", to_a, 1);
    report::check(
        "task A finds its x87/SSE registers intact",
        registers(&on_a) == registers(&task_a),
        format_args!("state differs"),
    );
    let (_, t) = traps::catch(|| {
        // SAFETY: TS is clear: this x87 no-op must not fault.
        unsafe { fixup_asm!("fnop"; options(nostack)) };
    });
    report::check(
        "no #NM once the switch is done",
        t.is_none(),
        format_args!("{t:x?}"),
    );
}
