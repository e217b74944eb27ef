//! `io_mmcfg_write`: dom0's stores to the device memory it maps read-only,
//! as Xen 4.17 emulates them (Linux's `pci_mmcfg_write` relies on it).
//!
//! Checks, on the host bridge 00:00.0 of QEMU's q35 (MMCFG at
//! 0xb0000000) and the HPET (0xfed00000):
//! - the host bridge's MMCFG page maps read-only, and its ids read the
//!   same through MMCFG as through 0xCF8/0xCFC;
//! - a byte, a word and a dword `mov` to the read-only MMCFG page complete
//!   and become configuration writes: the interrupt line (a scratch
//!   register), the line and pin, and the cache-line-size dword read back
//!   through both MMCFG and the ports; a dword store in the extended space
//!   (0x100) completes;
//! - a misaligned word, an 8-byte store, a read-modify-write `or` and a
//!   `cmpxchg` are not emulated: each is the guest's #PF with the store's
//!   error code, and the register is unchanged;
//! - on the HPET a dword and a qword store complete without effect (the
//!   capabilities and configuration read back as before);
//! - the interrupt line is restored through MMCFG.

use guest_pv_shim::dom0_abi::mmu::{MmuUpdate, MmuUpdateCmd};
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::dom0_abi::types::DomId;
use guest_pv_shim::hypercall as hc;
use guest_pv_shim::io;
use guest_pv_shim::mm::{self, PTE_RO};
use guest_pv_shim::report;
use guest_pv_shim::traps::{self, Trap};

/// The host bridge's configuration page in q35's MMCFG (bus 0, device 0,
/// function 0).
const HOST_BRIDGE_MMCFG: u64 = 0xb0000;
/// The HPET's registers.
const HPET: u64 = 0xfed00;
/// Windows the test maps the two pages at.
const CONFIG_SLOT: usize = 3;
const HPET_SLOT: usize = 4;
/// Configuration registers: cache line size (dword 0x0c) and interrupt
/// line (dword 0x3c).
const CACHE_LINE: u8 = 0x0c;
const INTERRUPT_LINE: u8 = 0x3c;

pub fn run(_start_info: &'static StartInfo) {
    if !crate::support::traps() {
        return;
    }
    report::check_ret("set_iopl 1", io::set_iopl(1), 0);
    if map_read_only(CONFIG_SLOT, HOST_BRIDGE_MMCFG) {
        config_writes(mm::window_va(CONFIG_SLOT));
    }
    if map_read_only(HPET_SLOT, HPET) {
        hpet_writes(mm::window_va(HPET_SLOT));
    }
    for slot in [CONFIG_SLOT, HPET_SLOT] {
        report::check_ret(
            format_args!("unmapping window {slot}"),
            mm::unmap_window(slot),
            0,
        );
    }
}

/// Maps device frame `mfn` read-only at window `slot` through `DOMID_IO`.
fn map_read_only(slot: usize, mfn: u64) -> bool {
    let entry = mm::l1_entry(mm::window_va(slot)).map_or(0, |e| e.maddr);
    let req = MmuUpdate::new(MmuUpdateCmd::NormalPtUpdate, entry, (mfn << 12) | PTE_RO);
    // SAFETY: the request targets a window's L1 entry, which no Rust code
    // uses; `run` unmaps it again.
    let ret = unsafe { hc::mmu_update(core::slice::from_ref(&req), None, u64::from(DomId::IO.0)) };
    report::check_ret(format_args!("mapping frame {mfn:#x} read-only"), ret, 0)
}

/// A `mov` of `width` bytes of `value` to `va`.
fn store(va: u64, width: u8, value: u64) -> Option<Trap> {
    let (_, trap) = traps::catch(|| {
        // SAFETY: single stores to a window mapping device memory; a
        // fault resumes after them (fixup table).
        unsafe {
            match width {
                1 => {
                    guest_pv_shim::fixup_asm!("mov byte ptr [{a}], {v:l}"; a = in(reg) va, v = in(reg) value, options(nostack))
                }
                2 => {
                    guest_pv_shim::fixup_asm!("mov word ptr [{a}], {v:x}"; a = in(reg) va, v = in(reg) value, options(nostack))
                }
                4 => {
                    guest_pv_shim::fixup_asm!("mov dword ptr [{a}], {v:e}"; a = in(reg) va, v = in(reg) value, options(nostack))
                }
                _ => {
                    guest_pv_shim::fixup_asm!("mov qword ptr [{a}], {v}"; a = in(reg) va, v = in(reg) value, options(nostack))
                }
            }
        }
    });
    trap
}

/// Reads the dword at `va` (a mapped window).
fn load(va: u64) -> u32 {
    // SAFETY: an aligned volatile load from a mapped window, which no Rust
    // reference covers.
    unsafe { (va as *const u32).read_volatile() }
}

/// Reports the dword `offset` of the host bridge through the ports and
/// through MMCFG at `page`.
fn read_back(what: &str, page: u64, offset: u8) {
    match io::pci_config_read(0, 0, 0, offset) {
        Ok(v) => report::ok_value(
            format_args!("{what}: dword {offset:#x} through 0xcfc"),
            format_args!("{v:#x}"),
        ),
        Err(t) => report::fail(
            format_args!("{what}: dword {offset:#x} through 0xcfc"),
            format_args!("{t:x?}"),
        ),
    }
    report::ok_value(
        format_args!("{what}: dword {offset:#x} through MMCFG"),
        format_args!("{:#x}", load(page + u64::from(offset))),
    );
}

fn completes(what: &str, trap: Option<Trap>) {
    report::check(
        format_args!("{what} completes"),
        trap.is_none(),
        format_args!("{trap:x?}"),
    );
}

/// A #PF for a supervisor write to a present page (error code P|W).
fn page_fault(what: &str, trap: Option<Trap>) {
    report::check_observed(
        format_args!("{what} is the guest's #PF"),
        trap.is_some_and(|t| t.vector == 14 && t.error_code & 7 == 3),
        format_args!("{trap:x?}"),
    );
}

fn config_writes(page: u64) {
    match io::pci_config_read(0, 0, 0, 0) {
        Ok(ids) => {
            report::check_eq("host bridge ids through MMCFG", load(page), ids);
        }
        Err(t) => report::fail("host bridge ids through 0xcfc", format_args!("{t:x?}")),
    }
    let line = page + u64::from(INTERRUPT_LINE);
    let original = load(line) & 0xff;
    completes("movb 0x5a to the interrupt line", store(line, 1, 0x5a));
    read_back("after movb", page, INTERRUPT_LINE);
    completes(
        "movw 0xa5a5 to the interrupt line and pin",
        store(line, 2, 0xa5a5),
    );
    read_back("after movw", page, INTERRUPT_LINE);
    let cache_line = page + u64::from(CACHE_LINE);
    let dword = load(cache_line);
    completes(
        "movl to the cache line size dword",
        store(cache_line, 4, u64::from(dword & !0xff | 0x08)),
    );
    read_back("after movl", page, CACHE_LINE);
    completes("movl restoring it", store(cache_line, 4, u64::from(dword)));
    read_back("restored", page, CACHE_LINE);
    completes("movl to extended dword 0x100", store(page + 0x100, 4, 0));
    report::ok_value(
        "extended dword 0x100 through MMCFG",
        format_args!("{:#x}", load(page + 0x100)),
    );
    page_fault("a misaligned movw", store(line + 1, 2, 0x1234));
    page_fault("a movq", store(line - 4, 8, 0));
    let (_, trap) = traps::catch(|| {
        // SAFETY: a read-modify-write of a window mapping device memory
        // (`or` with 0 changes nothing); a fault resumes after it.
        unsafe {
            guest_pv_shim::fixup_asm!("or byte ptr [{a}], 0"; a = in(reg) line, options(nostack))
        }
    });
    page_fault("an orb", trap);
    let (_, trap) = traps::catch(|| {
        // SAFETY: as for `or`; RAX is clobbered by `cmpxchg`.
        unsafe {
            guest_pv_shim::fixup_asm!("lock cmpxchg byte ptr [{a}], {v:l}"; a = in(reg) line, v = in(reg) 0x33u64, inout("rax") 0xa5u64 => _, options(nostack))
        }
    });
    page_fault("a cmpxchgb", trap);
    read_back("after the refused stores", page, INTERRUPT_LINE);
    completes(
        "movb restoring the interrupt line",
        store(line, 1, u64::from(original)),
    );
    report::check_eq("interrupt line restored", load(line) & 0xff, original);
}

fn hpet_writes(page: u64) {
    let (capabilities, configuration) = (load(page), load(page + 0x10));
    completes(
        "movl of its value to the HPET configuration",
        store(page + 0x10, 4, u64::from(configuration)),
    );
    completes("movq of 0 to the HPET capabilities", store(page, 8, 0));
    // Xen runs the HPET and this hypervisor does not: only the absence of
    // change is compared.
    let after = (load(page), load(page + 0x10));
    report::check(
        "the HPET capabilities and configuration unchanged",
        after == (capabilities, configuration),
        format_args!("{after:#x?}, before {capabilities:#x}, {configuration:#x}"),
    );
    page_fault("a misaligned movl on the HPET", store(page + 0x12, 4, 0));
}
