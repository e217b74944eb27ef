//! Boot entry, the guest's main function, `return_from_entry`, panics.
//!
//! `_start` is the ELF entry point. The hypervisor enters it with RSI =
//! virtual address of `start_info` and RSP = top of a boot-stack page.
//! `_start` saves that RSP (for [`return_from_entry`]), switches to a
//! 64 KiB stack in `.bss`, and calls the guest's main function registered
//! with [`guest_kernel!`](crate::guest_kernel). If main returns, the guest
//! powers off.
//!
//! This file and `hypercall/raw.rs` hold the shim's only `unsafe` code.

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU64, Ordering};

use dom0_abi::sched::ShutdownReason;
use dom0_abi::start_info::StartInfo;

/// RSP as the hypervisor set it at entry (written once, by `_start`).
static BOOT_RSP: AtomicU64 = AtomicU64::new(0);

/// Virtual address of `start_info` (written once, by `shim_entry`).
static START_INFO: AtomicU64 = AtomicU64::new(0);

/// Size of the stack `_start` switches to.
pub const BOOT_STACK_SIZE: usize = 64 * 1024;

global_asm!(
    ".pushsection .text.boot, \"ax\", @progbits",
    ".globl _start",
    ".type _start, @function",
    "_start:",
    "mov qword ptr [rip + {boot_rsp}], rsp",
    "lea rsp, [rip + guest_pv_shim_stack_top]",
    "xor ebp, ebp",
    "mov rdi, rsi",
    "call {entry}",
    "ud2",
    ".size _start, . - _start",
    ".popsection",
    ".pushsection .bss.guest_pv_shim_stack, \"aw\", @nobits",
    ".balign 16",
    "guest_pv_shim_stack:",
    ".space {stack_size}",
    "guest_pv_shim_stack_top:",
    ".popsection",
    boot_rsp = sym BOOT_RSP,
    entry = sym shim_entry,
    stack_size = const BOOT_STACK_SIZE,
);

unsafe extern "Rust" {
    /// The guest's main function, defined by
    /// [`guest_kernel!`](crate::guest_kernel).
    fn __guest_pv_shim_main(start_info: &'static StartInfo);
}

/// Called by `_start` on the shim's stack with the start_info address.
extern "C" fn shim_entry(start_info_va: u64) -> ! {
    let ptr = start_info_va as *const StartInfo;
    // SAFETY: by the PV boot protocol RSI holds the virtual address of the
    // start_info page, mapped (aligned, initialised) in the initial mapping
    // for the domain's lifetime. Nothing writes it after boot (the
    // hypervisor only refills it on resume from suspend, which this shim
    // does not support), so a shared `'static` reference is sound.
    let start_info: &'static StartInfo = unsafe { &*ptr };
    START_INFO.store(start_info_va, Ordering::Relaxed);
    crate::console::attach(start_info);
    // SAFETY: `guest_kernel!` defines this symbol with exactly this
    // signature; without it the image does not link.
    unsafe { __guest_pv_shim_main(start_info) };
    crate::hypercall::shutdown(ShutdownReason::Poweroff)
}

/// Behaves exactly like a kernel whose entry function returned: restores
/// the RSP the hypervisor gave `_start` and executes `ret`, which pops
/// whatever lies above the initial stack top and jumps there.
///
/// Used by a test: the hypervisor must crash the domain, not itself.
pub fn return_from_entry() -> ! {
    // SAFETY: deliberately abandons all Rust state; no Rust code runs after
    // this. Where `ret` lands is the hypervisor's business (the test checks
    // that it contains the damage).
    unsafe {
        asm!(
            "mov rsp, qword ptr [rip + {boot_rsp}]",
            "ret",
            boot_rsp = sym BOOT_RSP,
            options(noreturn),
        );
    }
}

/// The RSP the hypervisor gave the entry point.
#[must_use]
pub fn boot_rsp() -> u64 {
    BOOT_RSP.load(Ordering::Relaxed)
}

/// The `start_info` page the guest was started with.
///
/// # Panics
/// If called before the boot entry ran (impossible from guest code).
#[must_use]
pub fn start_info() -> &'static StartInfo {
    let va = START_INFO.load(Ordering::Relaxed);
    assert!(va != 0, "start_info() before the boot entry");
    // SAFETY: `shim_entry` stored the address of the start_info page, which
    // stays mapped and unchanged for the domain's lifetime (see
    // `shim_entry`).
    unsafe { &*(va as *const StartInfo) }
}

/// Entry `pfn` of the p2m list (`start_info.mfn_list`): the MFN backing
/// pseudo-physical frame `pfn`, or `None` past `nr_pages`.
#[must_use]
pub fn p2m_entry(start_info: &StartInfo, pfn: u64) -> Option<u64> {
    if pfn >= start_info.nr_pages {
        return None;
    }
    let ptr = (start_info.mfn_list as *const u64).wrapping_add(usize::try_from(pfn).ok()?);
    // SAFETY: by the boot protocol `mfn_list` is the virtual address of
    // `nr_pages` u64 entries in the initial (readable) mapping, and
    // `pfn < nr_pages`. A volatile read takes no reference, so the guest
    // may update the list elsewhere.
    Some(unsafe { ptr.read_volatile() })
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    match info.location() {
        Some(loc) => crate::println!("PANIC: {}:{}: {}", loc.file(), loc.line(), info.message()),
        None => crate::println!("PANIC: {}", info.message()),
    }
    crate::hypercall::shutdown(ShutdownReason::Crash)
}

/// The boot module (`start_info.mod_start`, `mod_len` bytes) when the
/// builder mapped it in the initial mapping; empty if there is none or it
/// was passed by PFN (`SIF_MOD_START_PFN`).
#[must_use]
pub fn ramdisk() -> &'static [u8] {
    let si = start_info();
    let by_pfn = si
        .sif_flags()
        .contains(dom0_abi::start_info::SifFlags::MOD_START_PFN);
    let Ok(len) = usize::try_from(si.mod_len) else {
        return &[];
    };
    if si.mod_start == 0 || len == 0 || by_pfn {
        return &[];
    }
    // SAFETY: the domain builder maps the module at `mod_start` for
    // `mod_len` bytes in the initial mapping (Xen's start-of-day layout),
    // read-write and never unmapped by the shim; nothing writes to it.
    unsafe { core::slice::from_raw_parts(si.mod_start as *const u8, len) }
}
