//! Set-up shared by the memory (`mm_*`) and CPU (`cpu_*`) tests.
//!
//! Each helper reports a failed step as an `ERROR` line (the test could not
//! run as intended) and returns `false`; the test then stops.

use core::fmt;

use guest_pv_shim::dom0_abi::mmu::PTE_ADDR_MASK;
use guest_pv_shim::mm::{self, Frame};
use guest_pv_shim::report;
use guest_pv_shim::traps::{self, InitError};

/// Reports an [`InitError`] as the test's `ERROR`.
fn init_error(what: &str, e: InitError) {
    report::error(
        what,
        format_args!("{} failed: {}", e.step, report::Ret(e.ret)),
    );
}

/// Trap table, callbacks, entry stack and shared_info (see
/// `guest_pv_shim::traps::init`).
pub fn traps() -> bool {
    match traps::init() {
        Ok(()) => true,
        // The last step: without shared_info only `cr2` and the upcall
        // mask are missing from the records, so the test goes on (and the
        // checks that need them fail).
        Err(e) if e.step == "map shared_info" => {
            init_error("exception set-up", e);
            true
        }
        Err(e) => {
            init_error("exception set-up", e);
            false
        }
    }
}

/// [`traps`] plus user mode (user pages and the user page table).
pub fn traps_and_user() -> bool {
    if !traps() {
        return false;
    }
    match traps::prepare_user() {
        Ok(()) => true,
        Err(e) => {
            init_error("user-mode set-up", e);
            false
        }
    }
}

/// A scratch frame, or an `ERROR` line.
pub fn frame() -> Option<Frame> {
    let frame = mm::alloc_frame();
    if frame.is_none() {
        report::error("scratch frame", format_args!("no free frame left"));
    }
    frame
}

/// A scratch frame holding `words` (zero after) and mapped nowhere,
/// written through window `slot` (`mm::prepare_frame`), or an `ERROR`.
pub fn prepared_frame(slot: usize, words: &[u64]) -> Option<Frame> {
    let f = frame()?;
    let ret = mm::prepare_frame(slot, f, words);
    if ret != 0 {
        report::error(
            "prepare a scratch frame",
            format_args!("{}", report::Ret(ret)),
        );
        return None;
    }
    Some(f)
}

/// Maps window `slot` to `mfn` with `flags`, or reports an `ERROR`.
pub fn map_window(slot: usize, mfn: u64, flags: u64) -> bool {
    let ret = mm::map_window(slot, mfn, flags);
    if ret != 0 {
        report::error(
            "map window",
            format_args!(
                "update_va_mapping of window {slot} to mfn {mfn:#x}: {}",
                report::Ret(ret)
            ),
        );
    }
    ret == 0
}

/// A machine frame that the domain does not own: the highest RAM frame
/// (below `XENMEM_maximum_ram_page`) whose M2P entry does not lead back
/// to it through this domain's p2m list.
pub fn foreign_mfn() -> Option<u64> {
    let max = u64::try_from(guest_pv_shim::hypercall::maximum_ram_page()).ok()?;
    (max.saturating_sub(64)..max)
        .rev()
        .find(|&mfn| mm::pfn_to_mfn(mm::m2p(mfn)) != Some(mfn))
}

/// [`foreign_mfn`], or a `SKIP` line for each of `checks` (the checks
/// that needed it) when there is none.
pub fn foreign_mfn_or_skip(checks: &[&str]) -> Option<u64> {
    let found = foreign_mfn();
    if found.is_none() {
        for check in checks {
            report::skip(
                check,
                format_args!("no frame below maximum_ram_page that this domain does not own"),
            );
        }
    }
    found
}

/// A page-table entry (or CR3 value) shown without its machine address,
/// which differs between platforms: `pfn <pfn> | <other bits>` for a frame
/// of this domain, `not own | <other bits>` for any other frame, `0` for
/// zero. Check lines print this, so that `--xen` can compare the values.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry(pub u64);

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mfn = (self.0 & PTE_ADDR_MASK) >> 12;
        let rest = self.0 & !PTE_ADDR_MASK;
        if self.0 == 0 {
            return f.write_str("0");
        }
        let pfn = mm::m2p(mfn);
        if mm::pfn_to_mfn(pfn) == Some(mfn) {
            write!(f, "pfn {pfn:#x} | {rest:#x}")
        } else {
            write!(f, "not own | {rest:#x}")
        }
    }
}

/// `ok` if the entry `got` is `want` (compared whole), showing it as an
/// [`Entry`]; else `fail` with both raw values.
pub fn check_entry(check: impl fmt::Display, got: u64, want: u64) -> bool {
    if got == want {
        report::ok_value(check, Entry(got));
    } else {
        report::fail(check, format_args!("got {got:#x}, want {want:#x}"));
    }
    got == want
}

/// `ok` showing `value` if `pass`, else `fail` with `detail`: for checks
/// whose expected value depends on the platform, so that `--xen` sees
/// what each one observed. Returns `pass`.
pub fn check_value(
    check: impl fmt::Display,
    pass: bool,
    value: impl fmt::Display,
    detail: fmt::Arguments<'_>,
) -> bool {
    if pass {
        report::ok_value(check, value);
    } else {
        report::fail(check, detail);
    }
    pass
}

/// How an instruction ended, for check values: `completed`, or the
/// exception's vector and error code.
pub struct Ended(pub Option<guest_pv_shim::traps::Trap>);

impl fmt::Display for Ended {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("completed"),
            Some(t) => write!(f, "vector {} error {:#x}", t.vector, t.error_code),
        }
    }
}

/// Starts secondary vCPU `vcpu` running `entry` (see
/// `guest_pv_shim::smp::start`), or reports an `ERROR`.
pub fn start_vcpu(vcpu: usize, entry: fn(usize)) -> bool {
    match guest_pv_shim::smp::start(vcpu, entry) {
        Ok(()) => true,
        Err(e) => {
            report::error(
                format_args!("start vCPU {vcpu}"),
                format_args!("{} failed: {}", e.step, report::Ret(e.ret)),
            );
            false
        }
    }
}

/// The vCPU whose stack holds `rsp`: a secondary vCPU's own stack (see
/// `guest_pv_shim::smp`), else 0 (the boot stack, the user stack).
pub fn vcpu_of(rsp: u64) -> usize {
    use guest_pv_shim::smp;
    (1..smp::MAX_VCPUS)
        .find(|&v| {
            smp::stack_top(v).is_some_and(|top| rsp <= top && rsp > top - smp::STACK_SIZE as u64)
        })
        .unwrap_or(0)
}

/// Yields until `done()` holds, at most `limit` times; returns whether it
/// held. With one physical CPU, other vCPUs of the domain run only while
/// this one yields.
pub fn yield_until(limit: u32, mut done: impl FnMut() -> bool) -> bool {
    for _ in 0..limit {
        if done() {
            return true;
        }
        guest_pv_shim::hypercall::sched_yield();
    }
    done()
}

/// The words at `fs:[0]` and `gs:[0]`.
///
/// # Safety
/// The FS and GS bases must point at readable words of this vCPU.
pub unsafe fn fs_gs_words() -> (u64, u64) {
    let (fs, gs): (u64, u64);
    // SAFETY: the caller pointed both bases at readable words.
    unsafe {
        core::arch::asm!(
            "mov {fs}, qword ptr fs:[0]",
            "mov {gs}, qword ptr gs:[0]",
            fs = out(reg) fs,
            gs = out(reg) gs,
            options(nostack, readonly, preserves_flags),
        );
    }
    (fs, gs)
}

/// Iterations of [`spinner`]'s loop so far.
pub static SPINS: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);
/// Tells [`spinner`] to return (its vCPU then takes itself down).
pub static STOP: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// A secondary vCPU's loop for tests that need one running: counts in
/// [`SPINS`] and yields until [`STOP`].
pub fn spinner(_vcpu: usize) {
    use core::sync::atomic::Ordering;
    while !STOP.load(Ordering::Acquire) {
        SPINS.fetch_add(1, Ordering::AcqRel);
        guest_pv_shim::hypercall::sched_yield();
    }
}
