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

/// The trap handlers, two frames of the domain, and the address of the
/// window's L1 entry; `None` (reported) if one is missing.
fn prepare() -> Option<(u64, Frame, Frame)> {
    if !support::traps() {
        return None;
    }
    let (f, g) = (support::frame()?, support::frame()?);
    let Some(va) = entry_va() else {
        report::error("window L1", format_args!("not readable"));
        return None;
    };
    Some((va, f, g))
}

/// Checks that an instruction did not fault and left the entry's frame
/// and present/writable bits at `want`.
fn check_bits(what: &str, trap: Option<Trap>, want: u64) {
    report::check(
        what,
        trap.is_none() && frame_bits(pte()) == want,
        format_args!("{trap:x?}, entry {:#x}", pte()),
    );
}

pub fn run(_start_info: &'static StartInfo) {
    let Some((va, f, g)) = prepare() else {
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

/// Runs `insn` (one instruction, a read-modify-write of the qword at
/// `{a}` with the operand `{v}`) on the L1 entry at `va`; returns the
/// operand register afterwards, the arithmetic flags it left, and its
/// fault.
macro_rules! rmw {
    ($va:expr, $value:expr, $($insn:literal),+) => {{
        let (mut operand, mut flags) = ($value, 0u64);
        let (_, trap) = traps::catch(|| {
            // SAFETY: `va` is one of the guest's own L1 entries, mapped
            // read-only: the instruction is emulated as a checked PTE
            // update of a window (no Rust memory) or faults and resumes
            // after the block; the flags are read through the stack.
            unsafe {
                fixup_asm!($($insn,)+ "/* {v} */", "pushfq", "pop {f}"; a = in(reg) $va, v = inout(reg) operand, f = inout(reg) flags)
            }
        });
        (operand, flags & ARITHMETIC_FLAGS, trap)
    }};
}

/// CF, PF, ZF, SF and OF (AF is undefined after `and` and `or`).
const ARITHMETIC_FLAGS: u64 = 0x8c5;

/// The flags `and`/`or` leave for a result of `width` bytes (the entries
/// differ between the hypervisors, so the flags are checked against the
/// entry read back rather than compared).
fn logic_flags(result: u64, width: u32) -> u64 {
    let value = if width == 8 {
        result
    } else {
        result & ((1 << (8 * width)) - 1)
    };
    let parity = u64::from((value & 0xff).count_ones() % 2 == 0) << 2;
    let zero = u64::from(value == 0) << 6;
    let sign = (value >> (8 * width - 1) & 1) << 7;
    parity | zero | sign
}

fn check_flags(what: &str, flags: u64, width: u32) {
    let want = logic_flags(pte(), width);
    report::check(
        format_args!("{what} leaves the flags of its result"),
        flags == want,
        format_args!("flags {flags:#x}, want {want:#x}"),
    );
}

/// The entry's frame and its present and writable bits.
fn frame_bits(entry: u64) -> u64 {
    entry & (PTE_ADDR_MASK | 3)
}

/// `mm_writable_pt_rmw`: the read-modify-write instructions Linux uses on
/// its page-table entries, on a read-only L1 entry: `xchg` (its
/// `ptep_get_and_clear`) returns the old entry and installs the new one;
/// `lock andb $~2` (`clear_bit` of the RW bit in `ptep_set_wrprotect`),
/// the same with the `ds` prefix Linux's alternatives put in place of
/// `lock` on one CPU, `lock orb $2`, `and`/`or` with a register and
/// `lock andq` with a sign-extended byte each change just their bits and
/// leave the flags `and`/`or` set; an `xchg` that would map the L4
/// writable is the guest's #PF with the register and the entry unchanged;
/// an `and` with 0 clears the entry and sets ZF.
pub fn run_rmw(_start_info: &'static StartInfo) {
    let Some((va, f, g)) = prepare() else {
        return;
    };
    let stored = store(va, f.maddr() | PTE_RW);
    report::check(
        "a mov of a PTE",
        stored.is_ok(),
        format_args!("{stored:x?}"),
    );

    let (old, _, trap) = rmw!(va, g.maddr() | PTE_RW, "xchg qword ptr [{a}], {v}");
    report::check(
        "xchg installs the new entry and returns the old one",
        trap.is_none() && frame_bits(old) == f.maddr() | 3 && frame_bits(pte()) == g.maddr() | 3,
        format_args!("{trap:x?}, old {old:#x}, entry {:#x}", pte()),
    );
    let (_, flags, trap) = rmw!(va, 0u64, "lock and byte ptr [{a}], 0xfd");
    check_bits("lock andb $0xfd clears the RW bit", trap, g.maddr() | 1);
    check_flags("lock andb", flags, 1);
    let (_, _, trap) = rmw!(va, 0u64, ".byte 0x3e", "and byte ptr [{a}], 0xfd");
    check_bits("ds andb $0xfd again changes nothing", trap, g.maddr() | 1);
    let (_, flags, trap) = rmw!(va, 0u64, "lock or byte ptr [{a}], 2");
    check_bits("lock orb $2 sets it again", trap, g.maddr() | 3);
    check_flags("lock orb", flags, 1);
    let (_, flags, trap) = rmw!(va, !2u64, "and qword ptr [{a}], {v}");
    check_bits(
        "andq with a register clears the RW bit",
        trap,
        g.maddr() | 1,
    );
    check_flags("andq", flags, 8);
    let (_, _, trap) = rmw!(va, 2u64, "lock or qword ptr [{a}], {v}");
    check_bits("lock orq with a register sets it", trap, g.maddr() | 3);
    let (_, _, trap) = rmw!(va, 0u64, "lock and qword ptr [{a}], -3");
    check_bits("lock andq $-3 clears it", trap, g.maddr() | 1);

    let before = pte();
    let l4 = (mm::boot_l4_mfn() << 12) | PTE_RW;
    let (operand, _, trap) = rmw!(va, l4, "xchg qword ptr [{a}], {v}");
    check_refused(
        &"an xchg mapping the L4 writable is refused with #PF",
        trap.map_or(Ok(()), Err),
        va,
    );
    report::check(
        "the refused xchg left the register and the entry unchanged",
        operand == l4 && pte() == before,
        format_args!(
            "register {operand:#x}, entry {:#x} (was {before:#x})",
            pte()
        ),
    );
    let (_, flags, trap) = rmw!(va, 0u64, "and qword ptr [{a}], {v}");
    report::check(
        "andq with 0 clears the entry",
        trap.is_none() && pte() == 0,
        format_args!("{trap:x?}, entry {:#x}", pte()),
    );
    check_flags("andq with 0", flags, 8);
}
