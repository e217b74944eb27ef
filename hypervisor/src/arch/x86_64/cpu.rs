//! CPU state the hypervisor sets up as a whole: the FPU/XSAVE and SYSCALL
//! configuration guests run with, guest segment bases, the TSC, caches,
//! and halting. Each hardware structure has its own module ([`super::cr`],
//! [`super::msr`], [`super::dr`], [`super::cpuid`]); their items are
//! re-exported here, where the rest of `arch` reaches them.
use core::arch::asm;

pub use super::cpuid::*;
pub use super::cr::*;
pub use super::dr::*;
pub use super::msr::*;

/// Stops this CPU for good: interrupts off, `hlt` forever.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: cli/hlt only stop this CPU, which is what is wanted.
        unsafe { asm!("cli; hlt", options(nomem, nostack)) };
    }
}

/// Waits for an interrupt: enables interrupts for the `hlt` only (the
/// one taken runs its handler on this stack) and disables them again.
pub fn wait_for_interrupt() {
    // SAFETY: `sti` takes effect after the next instruction, so no
    // interrupt is lost between it and `hlt`; the handlers of interrupts
    // taken in the hypervisor only acknowledge them (the serial port's
    // also drains the UART, under the console's leaf locks).
    unsafe { asm!("sti; hlt; cli", options(nomem, nostack)) };
}

/// Loads a guest's FS base, user GS selector and both GS bases (`active` is
/// the one in use now, `inactive` the other).
pub fn load_guest_segments(fs_base: u64, gs_selector: u16, active: u64, inactive: u64) {
    // SAFETY: the selector is null or the ring-3 data selector (the
    // hypercall allows nothing else), both loadable at CPL 0; the MSRs exist
    // on every x86-64 CPU and only affect guest-visible segment bases, which
    // the hypervisor itself does not use.
    unsafe {
        asm!("mov gs, {0:x}", in(reg) u32::from(gs_selector), options(nostack, preserves_flags));
        wrmsr(MSR_FS_BASE, fs_base);
        wrmsr(MSR_GS_BASE, active);
        wrmsr(MSR_KERNEL_GS_BASE, inactive);
    }
}

/// Whether the CPU has FSGSBASE, which guests are then offered.
static FSGSBASE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Whether guests may set CR4.FSGSBASE (the CPU has FSGSBASE).
pub fn fsgsbase_offered() -> bool {
    FSGSBASE.load(core::sync::atomic::Ordering::Relaxed)
}

/// Whether guest FPU state is saved with XSAVE (else FXSAVE).
static XSAVE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// The XSAVE components guests are offered ([`crate::cpuid::offered_xcr0`];
/// 0 without XSAVE): the XCR0 a vCPU's state is saved and restored with.
static OFFERED_XCR0: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// The XSAVE components guests are offered (0 without XSAVE).
pub fn offered_xcr0() -> u64 {
    OFFERED_XCR0.load(core::sync::atomic::Ordering::Relaxed)
}

/// XCR0 now.
fn xgetbv0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: only called with CR4.OSXSAVE set (`uses_xsave`); XGETBV(0)
    // reads XCR0.
    unsafe {
        asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Loads `xcr0` into XCR0 unless it is there already (XSETBV is slow);
/// nothing without XSAVE.
pub fn set_xcr0(xcr0: u64) {
    if !uses_xsave() || xgetbv0() == xcr0 {
        return;
    }
    #[allow(clippy::cast_possible_truncation, reason = "the two halves")]
    // SAFETY: every caller passes the offered components or a value
    // `crate::cpuid::valid_xcr0` accepted within them: bits the CPU
    // supports, x87 set, AVX only with SSE.
    unsafe {
        asm!("xsetbv", in("ecx") 0, in("eax") xcr0 as u32, in("edx") (xcr0 >> 32) as u32, options(nomem, nostack, preserves_flags));
    }
}

/// Whether guest FPU state is saved with XSAVE (set up by
/// [`enable_guest_features`]).
pub fn uses_xsave() -> bool {
    XSAVE.load(core::sync::atomic::Ordering::Relaxed)
}

/// Prepares the CPU for guests: SSE (and XSAVE with x87/SSE/AVX state when
/// present) usable by guest code, and `SYSCALL` entering the hypervisor at
/// `lstar` / `cstar` with IF, TF, DF, AC, NT and IOPL cleared.
pub fn enable_guest_features(f: &Features, lstar: u64, cstar: u64) {
    let mut cr4 = read_cr4() | CR4_OSFXSR_OSXMMEXCPT;
    if f.xsave {
        cr4 |= CR4_OSXSAVE;
    }
    XSAVE.store(f.xsave, core::sync::atomic::Ordering::Relaxed);
    FSGSBASE.store(f.fsgsbase, core::sync::atomic::Ordering::Relaxed);
    let offered = if f.xsave {
        crate::cpuid::offered_xcr0(&raw_cpuid)
    } else {
        0
    };
    OFFERED_XCR0.store(offered, core::sync::atomic::Ordering::Relaxed);
    // SAFETY: OSFXSR/OSXMMEXCPT exist on every x86-64 CPU and OSXSAVE is set
    // only where CPUID reports XSAVE; XCR0 gets only bits the CPU supports
    // (x87 always, SSE and AVX where present); the SYSCALL MSRs name the
    // trampoline's entry stubs and the hypervisor's own selectors.
    unsafe {
        write_cr4(cr4);
        if f.xsave {
            // Each vCPU's state is saved and restored with every offered
            // component enabled; the vCPU's own XCR0 is loaded after.
            #[allow(clippy::cast_possible_truncation, reason = "x87, SSE, AVX")]
            let xcr0 = offered as u32 | 1;
            asm!("xsetbv", in("ecx") 0, in("eax") xcr0, in("edx") 0, options(nomem, nostack, preserves_flags));
        }
        wrmsr(MSR_EFER, rdmsr(MSR_EFER) | EFER_SCE);
        // SYSCALL: CS 0xe008, SS 0xe010. SYSRET (unused): base 0xe020, so
        // it would load Xen's user selectors 0xe033/0xe02b/0xe023.
        wrmsr(MSR_STAR, (0xe020u64 << 48) | (0xe008u64 << 32));
        wrmsr(MSR_LSTAR, lstar);
        wrmsr(MSR_CSTAR, cstar);
        wrmsr(MSR_FMASK, 0x4_7700);
    }
}

/// The time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the counter (CR4.TSD is clear).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Writes back and invalidates the cache lines of the page at `va`
/// (CLFLUSH of each 64-byte line, then a fence).
///
/// # Safety
/// `va` must be the start of a page mapped in the current address space.
pub unsafe fn flush_page_cache_lines(va: u64) {
    for line in (va..va + 4096).step_by(64) {
        // SAFETY: `line` lies in the mapped page (caller's contract);
        // CLFLUSH changes no memory contents.
        unsafe { asm!("clflush [{}]", in(reg) line, options(nostack, preserves_flags)) };
    }
    // SAFETY: a fence only orders memory accesses.
    unsafe { asm!("mfence", options(nostack, preserves_flags)) };
}

/// Writes back and invalidates the caches (for a privileged guest that asks).
pub fn wbinvd() {
    // SAFETY: WBINVD only flushes caches; it changes no memory contents.
    unsafe { asm!("wbinvd", options(nostack, preserves_flags)) };
}
