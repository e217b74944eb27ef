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

/// [`prepare`], then a `mov` of the first frame (present, writable) into
/// the entry.
fn prepare_entry() -> Option<(u64, Frame, Frame)> {
    let (va, f, g) = prepare()?;
    let stored = store(va, f.maddr() | PTE_RW);
    report::check(
        "a mov of a PTE",
        stored.is_ok(),
        format_args!("{stored:x?}"),
    );
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
    let Some((va, f, g)) = prepare_entry() else {
        return;
    };

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

/// The registers the instructions of `mm_writable_pt_forms` read and
/// write, and the arithmetic flags.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct State {
    rax: u64,
    rbx: u64,
    rcx: u64,
    rdx: u64,
    r8: u64,
    flags: u64,
}

/// Runs the instruction (its lines) on the qword at `va` from `state`
/// (flags loaded with `popfq`); returns the state after and its fault (a
/// fault resumes after the instruction, with RBX restored).
macro_rules! on {
    ($va:expr, $state:expr, $($insn:literal),+) => {{
        let mut s: State = $state;
        let mut flags = (s.flags & ARITHMETIC_FLAGS) | 0x202;
        let (_, trap) = traps::catch(|| {
            // SAFETY: `va` is the guest's own L1 entry, mapped read-only
            // (emulated as a checked PTE update, or a fault that resumes
            // at 5:), or a qword on this stack; RBX, which Rust reserves,
            // is swapped in and back around it on every path.
            unsafe {
                core::arch::asm!(
                    "xchg rbx, {b}",
                    "push {f}",
                    "popfq",
                    "4:",
                    $($insn,)+
                    "5:",
                    "pushfq",
                    "pop {f}",
                    "xchg rbx, {b}",
                    ".pushsection .ex_table, \"a\"",
                    ".balign 8",
                    ".quad 4b, 5b, 5b",
                    ".popsection",
                    a = in(reg) $va,
                    b = inout(reg) s.rbx,
                    f = inout(reg) flags,
                    inout("rax") s.rax,
                    inout("rcx") s.rcx,
                    inout("rdx") s.rdx,
                    inout("r8") s.r8,
                );
            }
        });
        s.flags = flags & ARITHMETIC_FLAGS_AF;
        (s, trap)
    }};
}

/// Runs the instruction on an ordinary qword holding the entry, then on
/// the entry itself, and checks that both end the same: the entry (but
/// for the bits Xen adds to a kernel entry), the registers and the
/// flags in `$flags`.
macro_rules! same {
    ($name:literal, $va:expr, $state:expr, $flags:expr, $($insn:literal),+) => {{
        let mut scratch = pte();
        let scratch_va = core::ptr::addr_of_mut!(scratch) as u64;
        let (want, want_trap) = on!(scratch_va, $state, $($insn),+);
        let want_entry = scratch;
        let (got, trap) = on!($va, $state, $($insn),+);
        check_same($name, (want, want_trap), (got, trap), want_entry, $flags);
    }};
}

/// CF, PF, AF, ZF, SF and OF.
const ARITHMETIC_FLAGS_AF: u64 = ARITHMETIC_FLAGS | 0x10;

/// What Xen adds to a kernel's L1 entry: the user bit and its bit 52.
const XEN_BITS: u64 = (1 << 2) | (1 << 52);

fn check_same(
    name: &str,
    want: (State, Option<Trap>),
    got: (State, Option<Trap>),
    want_entry: u64,
    flags: u64,
) {
    let masked = |s: State| State {
        flags: s.flags & flags,
        ..s
    };
    let entry = pte();
    report::check(
        format_args!("{name}: the entry, registers and flags as on ordinary memory"),
        want.1.is_none()
            && got.1.is_none()
            && masked(want.0) == masked(got.0)
            && entry & !XEN_BITS == want_entry & !XEN_BITS,
        format_args!(
            "got {:x?} {:x?}, entry {entry:#x}; want {:x?} {:x?}, entry {want_entry:#x}",
            got.0, got.1, want.0, want.1
        ),
    );
}

/// `mm_writable_pt_forms`: the other instructions a kernel may write a
/// read-only L1 entry with, each run on an ordinary qword holding the
/// entry and then on the entry itself, which must end the same (entry,
/// registers, flags; only CF and ZF after `bt*`, the others being
/// undefined): `xor`, `sub`, `add`, `adc`, `sbb`, `inc`, `dec`, `bts`,
/// `btr`, `btc` (immediate and register bit offsets), `xadd`, `cmpxchg`
/// and `cmpxchg8b` (matching and not), `xchg` with R8, word and dword
/// operands, `cs` and `es` prefixes, a SIB address with a negative
/// displacement; and an `xor` that would map the L4 writable is the
/// guest's #PF with the entry unchanged.
pub fn run_forms(_start_info: &'static StartInfo) {
    let Some((va, _, _)) = prepare_entry() else {
        return;
    };
    let all = ARITHMETIC_FLAGS_AF;
    let bits = 0x41;
    let none = State::default();
    let carry = State { flags: 1, ..none };
    let with_rcx = |rcx| State { rcx, ..none };
    same!("xorq $2 clears RW", va, none, all, "xor qword ptr [{a}], 2");
    same!("xorq $2 sets RW", va, none, all, "xor qword ptr [{a}], 2");
    same!("subq $2", va, none, all, "sub qword ptr [{a}], 2");
    same!("addq $2", va, none, all, "add qword ptr [{a}], 2");
    same!(
        "lock btrq $1",
        va,
        none,
        bits,
        "lock btr qword ptr [{a}], 1"
    );
    same!(
        "lock btsq $1",
        va,
        none,
        bits,
        "lock bts qword ptr [{a}], 1"
    );
    same!("btcq $1", va, none, bits, "btc qword ptr [{a}], 1");
    same!("btcq $1 again", va, none, bits, "btc qword ptr [{a}], 1");
    same!(
        "lock btr %rcx",
        va,
        with_rcx(1),
        bits,
        "lock btr qword ptr [{a}], rcx"
    );
    same!(
        "lock bts %rcx",
        va,
        with_rcx(1),
        bits,
        "lock bts qword ptr [{a}], rcx"
    );
    same!(
        "lock xadd %rcx",
        va,
        with_rcx(0),
        all,
        "lock xadd qword ptr [{a}], rcx"
    );
    let matching = State {
        rax: pte(),
        rcx: pte() & !2,
        ..none
    };
    same!(
        "lock cmpxchg, matching",
        va,
        matching,
        all,
        "lock cmpxchg qword ptr [{a}], rcx"
    );
    let other = State {
        rax: 0x1000,
        rcx: pte() | 2,
        ..none
    };
    same!(
        "lock cmpxchg, not matching",
        va,
        other,
        all,
        "lock cmpxchg qword ptr [{a}], rcx"
    );
    let halves = |v: u64| (v & 0xffff_ffff, v >> 32);
    let ((rax, rdx), (rbx, rcx)) = (halves(pte()), halves(pte() | 2));
    let matching = State {
        rax,
        rbx,
        rcx,
        rdx,
        ..none
    };
    same!(
        "lock cmpxchg8b, matching",
        va,
        matching,
        all,
        "lock cmpxchg8b qword ptr [{a}]"
    );
    let other = State { rax: 0, ..matching };
    same!(
        "lock cmpxchg8b, not matching",
        va,
        other,
        all,
        "lock cmpxchg8b qword ptr [{a}]"
    );
    same!(
        "cs andb $0xfd",
        va,
        none,
        all,
        ".byte 0x2e",
        "and byte ptr [{a}], 0xfd"
    );
    same!(
        "es lock orb $2",
        va,
        none,
        all,
        ".byte 0x26",
        "lock or byte ptr [{a}], 2"
    );
    same!("xorw %cx", va, with_rcx(2), all, "xor word ptr [{a}], cx");
    same!("orl %ecx", va, with_rcx(2), all, "or dword ptr [{a}], ecx");
    same!(
        "adc with CF clears P",
        va,
        carry,
        all,
        "adc qword ptr [{a}], rcx"
    );
    same!(
        "sbb with CF sets it back",
        va,
        carry,
        all,
        "sbb qword ptr [{a}], rcx"
    );
    same!("lock incb", va, carry, all, "lock inc byte ptr [{a}]");
    same!("lock decb", va, carry, all, "lock dec byte ptr [{a}]");
    let r8 = State {
        r8: pte() ^ 2,
        ..none
    };
    same!("xchg %r8", va, r8, all, "xchg qword ptr [{a}], r8");
    let sib = State {
        rcx: 1,
        rdx: pte() ^ 2,
        ..none
    };
    same!(
        "mov to -8(%a,%rcx,8)",
        va,
        sib,
        all,
        "mov qword ptr [{a} + rcx*8 - 8], rdx"
    );

    let before = pte();
    let to_l4 = with_rcx((before & PTE_ADDR_MASK) ^ (mm::boot_l4_mfn() << 12));
    let (_, trap) = on!(va, to_l4, "xor qword ptr [{a}], rcx");
    check_refused(
        &"an xor mapping the L4 writable is refused with #PF",
        trap.map_or(Ok(()), Err),
        va,
    );
    report::check(
        "the refused xor left the entry unchanged",
        pte() == before,
        format_args!("entry {:#x}, was {before:#x}", pte()),
    );
}
