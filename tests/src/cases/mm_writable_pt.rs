//! `mm_writable_pt`: plain stores to the guest's read-only L1 pages
//! (writable page tables).
//!
//! The guest stores a PTE straight into one of its bootstrap L1 tables,
//! which it sees read-only. The hypervisor decodes the store, validates
//! the new entry like `mmu_update` and applies it: the window it maps
//! then reaches the new frame. A store that would create a writable
//! mapping of a page table, or map a frame the domain does not own, is
//! refused: the guest gets the #PF of its store (error code P|W, `cr2` =
//! the entry's address) and the entry is unchanged. Also a store of a
//! non-present entry and a 4-byte store of the entry's low half.
//!
//! Xen gives dom0 this emulation whether or not it enabled
//! `VMASST_TYPE_writable_pagetables`; the test runs the same stores with
//! the assist enabled and disabled and expects the same on both.

use guest_pv_shim::dom0_abi::mmu::{PTE_ADDR_MASK, VmAssistCmd, VmAssistType};
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::hypercall as hc;
use guest_pv_shim::mm::{self, Frame, PTE_RW};
use guest_pv_shim::traps::{self, Trap};
use guest_pv_shim::{fixup_asm, report};

use crate::support;

/// The window these stores remap.
const SLOT: usize = 0;

/// The virtual address of window `SLOT`'s L1 entry (read-only mapped).
fn entry_va() -> Option<u64> {
    let e = mm::l1_entry(mm::window_va(SLOT))?;
    Some(mm::table_va(e.maddr >> 12)? + (e.maddr & 0xFFF))
}

/// Stores `value` to the L1 entry at `va`.
fn store(va: u64, value: u64) -> Result<(), Trap> {
    // SAFETY: `va` is one of the guest's own L1 entries, mapped read-only:
    // the store either is emulated as a checked PTE update of a window
    // (no Rust memory) or faults and resumes after the store.
    unsafe { traps::try_write_u64(va, value) }
}

/// Stores the low 32 bits of `value` to the L1 entry at `va`.
fn store_low_half(va: u64, value: u64) -> Option<Trap> {
    let low = u32::try_from(value & 0xFFFF_FFFF).unwrap_or(0);
    let (_, trap) = traps::catch(|| {
        // SAFETY: as in `store`, for a 4-byte store.
        unsafe {
            fixup_asm!("mov dword ptr [{a}], {v:e}"; a = in(reg) va, v = in(reg) low, options(nostack));
        }
    });
    trap
}

fn pte() -> u64 {
    mm::l1_entry(mm::window_va(SLOT)).map_or(u64::MAX, |e| e.value)
}

fn round(how: &str, va: u64, f: Frame, g: Frame) {
    let stored = store(va, f.maddr() | PTE_RW);
    report::check(
        format_args!("a store of a valid PTE into an L1 table is applied ({how})"),
        stored.is_ok() && pte() & (PTE_ADDR_MASK | 3) == f.maddr() | 3,
        format_args!("{stored:x?}, entry {:#x}", pte()),
    );
    mm::window_write(SLOT, 0, 0x77A1 + f.pfn);
    report::check_eq(
        format_args!("the window reaches the stored frame ({how})"),
        mm::window_read(SLOT, 0),
        0x77A1 + f.pfn,
    );

    let before = pte();
    let l4 = mm::boot_l4_mfn() << 12;
    let refused = store(va, l4 | PTE_RW);
    check_refused(
        &format_args!("a store mapping the L4 writable is refused with #PF ({how})"),
        refused,
        va,
    );
    support::check_entry(
        format_args!("the refused store left the entry unchanged ({how})"),
        pte(),
        before,
    );
    let foreign_check =
        format_args!("a store mapping a frame the domain does not own is refused ({how})");
    match support::foreign_mfn() {
        Some(foreign) => {
            let refused = store(va, (foreign << 12) | PTE_RW);
            check_refused(&foreign_check, refused, va);
        }
        None => report::skip(
            foreign_check,
            format_args!("no frame below maximum_ram_page that this domain does not own"),
        ),
    }

    let half = store_low_half(va, g.maddr() | PTE_RW);
    report::check(
        format_args!("a 4-byte store of an entry's low half is applied ({how})"),
        half.is_none() && pte() & (PTE_ADDR_MASK | 3) == g.maddr() | 3,
        format_args!("{half:x?}, entry {:#x}", pte()),
    );
    let cleared = store(va, 0);
    report::check(
        format_args!("a store of a non-present entry is applied ({how})"),
        cleared.is_ok() && pte() == 0,
        format_args!("{cleared:x?}, entry {:#x}", pte()),
    );
}

fn check_refused(name: &dyn core::fmt::Display, result: Result<(), Trap>, va: u64) {
    match result {
        Ok(()) => report::fail(name, format_args!("the store went through")),
        Err(t) => {
            report::check(
                name,
                t.vector == 14 && t.error_code == 3 && t.cr2 == Some(va),
                format_args!(
                    "vector {} error {:#x} cr2 {:x?}",
                    t.vector, t.error_code, t.cr2
                ),
            );
        }
    }
}

pub fn run(_start_info: &'static StartInfo) {
    if !support::traps() {
        return;
    }
    let (Some(f), Some(g)) = (support::frame(), support::frame()) else {
        return;
    };
    let Some(va) = entry_va() else {
        report::error("window L1", format_args!("not readable"));
        return;
    };
    round("no assist", va, f, g);
    report::check_ret(
        "enable writable_pagetables",
        hc::vm_assist(VmAssistCmd::Enable, VmAssistType::WritablePagetables),
        0,
    );
    round("assist enabled", va, g, f);
    report::check_ret(
        "disable writable_pagetables",
        hc::vm_assist(VmAssistCmd::Disable, VmAssistType::WritablePagetables),
        0,
    );
    round("assist disabled", va, f, g);
}
