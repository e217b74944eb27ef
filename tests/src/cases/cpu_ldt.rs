//! `cpu_ldt`: `MMUEXT_SET_LDT` and a guest LDT in use.
//!
//! An LDT page with a flat data descriptor (DPL 3) is mapped read-only and
//! installed with `SET_LDT`; loading its selector works, and once the CPU
//! has used the page it cannot be mapped writable (it holds the descriptor
//! type, like a GDT frame). `SET_LDT` of no LDT gives the page back (it can
//! be mapped writable again) and the selector then faults. An LDT page
//! holding a gate is never used: loading a selector from it faults, and
//! the domain goes on. Both platforms check LDT pages when the CPU first
//! touches them, not at `SET_LDT`.

use guest_pv_shim::dom0_abi::Errno;
use guest_pv_shim::dom0_abi::mmu::MmuextCmd;
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::hypercall as hc;
use guest_pv_shim::mm::{self, PTE_RO, PTE_RW};
use guest_pv_shim::traps::{self, Trap};
use guest_pv_shim::{fixup_asm, report};

use crate::support;

/// A flat writable data descriptor with DPL 3.
const DATA_DPL3: u64 = 0x00CF_F200_0000_FFFF;
/// A 64-bit call gate's low half (never allowed in a guest table).
const CALL_GATE: u64 = 0x0000_EC00_E008_1000;
/// Selector of LDT entry 1 (TI set), RPL 3.
const LDT_SELECTOR: u32 = (1 << 3) | 4 | 3;

fn set_ldt(base: u64, entries: u64) -> i64 {
    // SAFETY: the running code uses no LDT selector; the tests load them
    // only inside `load_ds`, which restores the null selector.
    unsafe { hc::mmuext_one(MmuextCmd::SetLdt as u32, base, entries) }
}

/// Loads DS with `selector` and back to null; returns the trap, if any.
fn load_ds(selector: u32) -> Option<Trap> {
    let (_, trap) = traps::catch(|| {
        // SAFETY: DS is loaded and reset to null at once; a fault resumes
        // after the block (the fixup) with DS unchanged.
        unsafe {
            fixup_asm!("mov ds, {s:e}", "xor {s:e}, {s:e}", "mov ds, {s:e}"; s = inout(reg) selector => _, options(nostack))
        };
    });
    trap
}

pub fn run(_start_info: &'static StartInfo) {
    if !support::traps() {
        return;
    }
    let (Some(good), Some(bad)) = (support::frame(), support::frame()) else {
        return;
    };
    if mm::prepare_frame(20, good, &[0, DATA_DPL3]) != 0
        || mm::prepare_frame(21, bad, &[0, CALL_GATE]) != 0
    {
        report::error("LDT frames", format_args!("cannot prepare them"));
        return;
    }
    report::check_ret(
        "map the LDT page read-only",
        mm::map_window(22, good.mfn, PTE_RO),
        0,
    );
    report::check_ret("SET_LDT of two entries", set_ldt(mm::window_va(22), 2), 0);
    let trap = load_ds(LDT_SELECTOR);
    report::check(
        "a data selector from the LDT loads",
        trap.is_none(),
        format_args!("{trap:x?}"),
    );
    report::check_ret(
        "the LDT page cannot be mapped writable while in use",
        mm::map_window(23, good.mfn, PTE_RW),
        Errno::EBUSY.neg(),
    );

    report::check_ret("SET_LDT of no LDT", set_ldt(0, 0), 0);
    let trap = load_ds(LDT_SELECTOR);
    report::check(
        "without an LDT the selector is #GP",
        trap.as_ref().is_some_and(|t| t.vector == 13),
        format_args!("{trap:x?}"),
    );
    report::check_ret(
        "the former LDT page can be mapped writable again",
        mm::map_window(23, good.mfn, PTE_RW),
        0,
    );
    mm::unmap_window(23);

    report::check_ret(
        "map an LDT page holding a gate read-only",
        mm::map_window(24, bad.mfn, PTE_RO),
        0,
    );
    report::check_ret(
        "SET_LDT of a page holding a gate (checked on use)",
        set_ldt(mm::window_va(24), 2),
        0,
    );
    let trap = load_ds(LDT_SELECTOR);
    report::check(
        "a selector from an LDT page holding a gate is #PF at the descriptor's guest address",
        trap.as_ref()
            .is_some_and(|t| t.vector == 14 && t.cr2 == Some(mm::window_va(24) + 8)),
        format_args!("{trap:x?}"),
    );
    report::check_ret("SET_LDT of no LDT again", set_ldt(0, 0), 0);
    report::check_ret(
        "the refused page can be mapped writable",
        mm::map_window(23, bad.mfn, PTE_RW),
        0,
    );
    mm::unmap_window(23);
    mm::unmap_window(22);
    mm::unmap_window(24);
}
