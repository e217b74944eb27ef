//! `mm_mmuext_pin`, `mm_mmuext_baseptr`, `mm_mmuext_misc`: every
//! `mmuext_op` command.
//!
//! - `pin`: PIN_L1..L4_TABLE of zeroed frames, pinning twice, unpinning
//!   what is not pinned, a pinned table cannot be mapped writable (but
//!   read-only), pinning a frame mapped writable, pinning a frame whose
//!   entry does not validate, a frame the domain does not own, a frame
//!   already typed as another level; the boot L4 is pinned by the builder.
//! - `baseptr`: NEW_BASEPTR to the current L4, to a clone of it with an
//!   extra mapping (the mapping becomes visible), back again (the clone
//!   then loses its L4 type and can be mapped writable), to a frame that
//!   does not validate, to a frame mapped writable; NEW_USER_BASEPTR.
//! - `misc`: the TLB and INVLPG flushes in every scope (each must remove
//!   a stale translation left by `update_va_mapping` without a flush flag;
//!   an unreadable vCPU bitmap is `EINVAL` here, where `update_va_mapping`
//!   says `EFAULT`),
//!   FLUSH_CACHE(_GLOBAL),
//!   SET_LDT and its limits, CLEAR_PAGE, COPY_PAGE, MARK/UNMARK_SUPER
//!   (`EOPNOTSUPP`), unknown commands (`ENOSYS`), a batch whose third
//!   operation fails (`pdone` = 2), empty and unreadable batches and an
//!   unknown `foreigndom`.

use guest_pv_shim::dom0_abi::Errno;
use guest_pv_shim::dom0_abi::mmu::{MmuextCmd, MmuextOp};
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::hypercall::{self as hc, FOREIGNDOM_SELF};
use guest_pv_shim::mm::{self, Frame, PTE_RO, PTE_RW};
use guest_pv_shim::report;

use crate::support;

/// One `mmuext_op` for `DOMID_SELF`.
fn ext(cmd: MmuextCmd, arg1: u64, arg2: u64) -> i64 {
    // SAFETY: the operations here pin or unpin scratch frames, switch to
    // an L4 that maps everything the running code uses exactly as the boot
    // L4 does, flush TLBs, or touch scratch frames only.
    unsafe { hc::mmuext_one(cmd as u32, arg1, arg2) }
}

/// `mmuext_op` of `ops` for `foreigndom`: (result, pdone).
fn batch(ops: &[MmuextOp], foreigndom: u64) -> (i64, u32) {
    let mut done = u32::MAX;
    // SAFETY: as in `ext`.
    let ret = unsafe { hc::mmuext_op(ops, Some(&mut done), foreigndom) };
    (ret, done)
}

fn op(cmd: MmuextCmd, arg1: u64, arg2: u64) -> MmuextOp {
    MmuextOp {
        cmd: cmd as u32,
        pad: 0,
        arg1,
        arg2,
    }
}

/// A zero-filled scratch frame with no mapping (window 30 is used).
fn zeroed() -> Option<Frame> {
    zeroed_with(&[])
}

/// A scratch frame holding `words` (zero after), with no mapping.
fn zeroed_with(words: &[u64]) -> Option<Frame> {
    support::prepared_frame(30, words)
}

/// `update_va_mapping` of window `slot`.
fn uvm(slot: usize, pte: u64) -> i64 {
    // SAFETY: windows hold no memory of the running code.
    unsafe { hc::update_va_mapping(mm::window_va(slot), pte, mm::UVMF_INVLPG) }
}

pub fn pin(_start_info: &'static StartInfo) {
    let pins = [
        (MmuextCmd::PinL1Table, "PIN_L1_TABLE"),
        (MmuextCmd::PinL2Table, "PIN_L2_TABLE"),
        (MmuextCmd::PinL3Table, "PIN_L3_TABLE"),
        (MmuextCmd::PinL4Table, "PIN_L4_TABLE"),
    ];
    for (cmd, name) in pins {
        let Some(f) = zeroed() else {
            return;
        };
        report::check_ret(
            format_args!("{name} of a zeroed frame"),
            ext(cmd, f.mfn, 0),
            0,
        );
        report::check_ret(
            format_args!("{name} twice is EINVAL"),
            ext(cmd, f.mfn, 0),
            Errno::EINVAL.neg(),
        );
        report::check_ret(
            format_args!("a pinned {name} frame cannot be mapped writable"),
            uvm(0, f.maddr() | PTE_RW),
            Errno::EBUSY.neg(),
        );
        report::check_ret(
            format_args!("a pinned {name} frame can be mapped read-only"),
            uvm(0, f.maddr() | PTE_RO),
            0,
        );
        uvm(0, 0);
        report::check_ret(
            format_args!("UNPIN_TABLE after {name}"),
            ext(MmuextCmd::UnpinTable, f.mfn, 0),
            0,
        );
        report::check_ret(
            format_args!("UNPIN_TABLE twice after {name} is EINVAL"),
            ext(MmuextCmd::UnpinTable, f.mfn, 0),
            Errno::EINVAL.neg(),
        );
        report::check_ret(
            format_args!("an unpinned {name} frame can be mapped writable again"),
            uvm(0, f.maddr() | PTE_RW),
            0,
        );
        uvm(0, 0);
    }

    let Some(f) = zeroed() else {
        return;
    };
    report::check_ret("map a frame writable", uvm(1, f.maddr() | PTE_RW), 0);
    report::check_ret(
        "PIN_L1_TABLE of a frame mapped writable is EINVAL",
        ext(MmuextCmd::PinL1Table, f.mfn, 0),
        Errno::EINVAL.neg(),
    );
    uvm(1, 0);
    report::check_ret(
        "PIN_L1_TABLE once the writable mapping is gone",
        ext(MmuextCmd::PinL1Table, f.mfn, 0),
        0,
    );
    report::check_ret(
        "PIN_L2_TABLE of a frame pinned as L1 is EINVAL",
        ext(MmuextCmd::PinL2Table, f.mfn, 0),
        Errno::EINVAL.neg(),
    );
    report::check_ret(
        "UNPIN_TABLE of the L1",
        ext(MmuextCmd::UnpinTable, f.mfn, 0),
        0,
    );

    let l4 = mm::boot_l4_mfn();
    if let Some(bad) = zeroed_with(&[(l4 << 12) | PTE_RW]) {
        report::check_ret(
            "PIN_L1_TABLE of a table mapping a page table writable is EBUSY",
            ext(MmuextCmd::PinL1Table, bad.mfn, 0),
            Errno::EBUSY.neg(),
        );
    }
    match support::foreign_mfn() {
        Some(foreign) => {
            report::check_ret(
                "PIN_L1_TABLE of a frame the domain does not own is EINVAL",
                ext(MmuextCmd::PinL1Table, foreign, 0),
                Errno::EINVAL.neg(),
            );
        }
        None => report::error("foreign frame", format_args!("none found")),
    }
    const UNPIN_L1: &str = "UNPIN_TABLE of an L1 in use but not pinned is EINVAL";
    match mm::l1_entry(mm::pfn_to_virt(0)) {
        Some(entry) => {
            report::check_ret(
                UNPIN_L1,
                ext(MmuextCmd::UnpinTable, entry.maddr >> 12, 0),
                Errno::EINVAL.neg(),
            );
        }
        None => report::skip(
            UNPIN_L1,
            format_args!("no L1 table maps pfn 0 in the boot tables"),
        ),
    }
    report::check_ret(
        "the boot L4 is pinned already (PIN_L4_TABLE is EINVAL)",
        ext(MmuextCmd::PinL4Table, l4, 0),
        Errno::EINVAL.neg(),
    );
    report::check_ret(
        "UNPIN_TABLE of the loaded boot L4",
        ext(MmuextCmd::UnpinTable, l4, 0),
        0,
    );
    report::check_ret(
        "PIN_L4_TABLE of the loaded boot L4 again",
        ext(MmuextCmd::PinL4Table, l4, 0),
        0,
    );
}

/// A copy of the boot L4 (reserved slots left zero) with slot 3 -> `l3`.
fn clone_l4(l3: Frame) -> Option<Frame> {
    let boot = mm::boot_l4_va();
    let mut words = [0u64; 512];
    for (i, w) in words.iter_mut().enumerate() {
        if !(256..272).contains(&i) {
            *w = mm::read_mapped(boot + i as u64 * 8);
        }
    }
    words[3] = l3.maddr() | PTE_RW;
    zeroed_with(&words)
}

pub fn baseptr(_start_info: &'static StartInfo) {
    let boot = mm::boot_l4_mfn();
    report::check_ret(
        "NEW_BASEPTR to the current L4",
        ext(MmuextCmd::NewBaseptr, boot, 0),
        0,
    );
    let Some(data) = zeroed_with(&[0xBA5E_0000_0000_0003]) else {
        return;
    };
    build_chain(boot, data);
}

/// Builds L3 -> L2 -> L1 -> `data` for L4 slot 3 in a clone of the boot
/// L4, switches to the clone, reads the data, switches back.
fn build_chain(boot: u64, data: Frame) {
    let Some(l1) = zeroed_with(&[data.maddr() | PTE_RO]) else {
        return;
    };
    let Some(l2) = zeroed_with(&[l1.maddr() | PTE_RW]) else {
        return;
    };
    let Some(l3) = zeroed_with(&[l2.maddr() | PTE_RW]) else {
        return;
    };
    let Some(clone) = clone_l4(l3) else {
        return;
    };
    report::check_ret(
        "NEW_BASEPTR to a clone of the L4 with an extra mapping",
        ext(MmuextCmd::NewBaseptr, clone.mfn, 0),
        0,
    );
    report::check_eq(
        "the clone's extra mapping is live",
        mm::read_mapped(3 << 39),
        0xBA5E_0000_0000_0003,
    );
    report::check_ret(
        "NEW_BASEPTR back to the boot L4",
        ext(MmuextCmd::NewBaseptr, boot, 0),
        0,
    );
    report::check_ret(
        "the unloaded clone lost its L4 type (maps writable)",
        uvm(2, clone.maddr() | PTE_RW),
        0,
    );
    uvm(2, 0);

    if let Some(writable) = zeroed() {
        uvm(3, writable.maddr() | PTE_RW);
        report::check_ret(
            "NEW_BASEPTR to a frame mapped writable is EINVAL",
            ext(MmuextCmd::NewBaseptr, writable.mfn, 0),
            Errno::EINVAL.neg(),
        );
        // An L4 whose slot 3 points at that writable frame as an L3.
        if let Some(bad) = clone_l4(writable) {
            report::check_ret(
                "NEW_BASEPTR to an L4 that does not validate is EINVAL",
                ext(MmuextCmd::NewBaseptr, bad.mfn, 0),
                Errno::EINVAL.neg(),
            );
        }
        uvm(3, 0);
    }
    match support::foreign_mfn() {
        Some(foreign) => {
            report::check_ret(
                "NEW_BASEPTR to a frame the domain does not own is EINVAL",
                ext(MmuextCmd::NewBaseptr, foreign, 0),
                Errno::EINVAL.neg(),
            );
        }
        None => report::error("foreign frame", format_args!("none found")),
    }
    report::check_ret(
        "NEW_USER_BASEPTR to the current L4",
        ext(MmuextCmd::NewUserBaseptr, boot, 0),
        0,
    );
    report::check_ret(
        "NEW_USER_BASEPTR 0 (none)",
        ext(MmuextCmd::NewUserBaseptr, 0, 0),
        0,
    );
    let (ret, _) = batch(
        &[op(MmuextCmd::NewBaseptr, boot, 0)],
        u64::from(guest_pv_shim::dom0_abi::types::DomId::IO.0),
    );
    report::check_ret(
        "NEW_BASEPTR with a foreign domain is EPERM",
        ret,
        Errno::EPERM.neg(),
    );
}

/// Window whose translation the flush tests make stale (window 0, the
/// one the INVLPG commands of [`misc`] name).
const STALE_SLOT: usize = 0;

/// Whether flush `cmd` removes a stale translation: window 0 maps frame
/// `a` (whose first word says `A`) and is read through, so the TLB holds
/// it; then `update_va_mapping` without a flush flag points it at `b`.
/// A read still seeing `A` shows a stale translation (if the TLB kept
/// none, the flush has nothing to remove: SKIP); after `cmd` the read
/// must see `B`.
fn flush_removes_stale_translation(
    cmd: MmuextCmd,
    arg1: u64,
    arg2: u64,
    name: &str,
    a: Frame,
    b: Frame,
) {
    const A: u64 = 0xA11C_E000_0000_000A;
    const B: u64 = 0xB0B0_0000_0000_000B;
    let check = format_args!("{name} removes a stale translation");
    if mm::prepare_frame(30, a, &[A]) != 0 || mm::prepare_frame(30, b, &[B]) != 0 {
        report::error("prepare the flush frames", format_args!("{name}"));
        return;
    }
    if uvm(STALE_SLOT, a.maddr() | PTE_RO) != 0 || mm::window_read(STALE_SLOT, 0) != A {
        report::error("map the flush window", format_args!("{name}"));
        return;
    }
    // SAFETY: window 0 holds no memory of the running code; no flush flag.
    let ret = unsafe { hc::update_va_mapping(mm::window_va(STALE_SLOT), b.maddr() | PTE_RO, 0) };
    if ret != 0 {
        report::error(
            "update_va_mapping without a flush",
            format_args!("{name}: {}", report::Ret(ret)),
        );
        return;
    }
    match mm::window_read(STALE_SLOT, 0) {
        A => {
            let ret = ext(cmd, arg1, arg2);
            let after = mm::window_read(STALE_SLOT, 0);
            report::check(
                check,
                ret == 0 && after == B,
                format_args!("returned {}, then read {after:#x}", report::Ret(ret)),
            );
        }
        B => report::skip(
            check,
            format_args!(
                "the window read the new frame right after update_va_mapping without a \
                 flush: the TLB kept no stale entry for the flush to remove"
            ),
        ),
        other => report::fail(
            check,
            format_args!("the window read {other:#x}, neither frame's contents"),
        ),
    }
    uvm(STALE_SLOT, 0);
}

pub fn misc(_start_info: &'static StartInfo) {
    let (Some(f), Some(g)) = (support::frame(), support::frame()) else {
        return;
    };
    let va = mm::window_va(0);
    let mask: u64 = 1;
    let maskp = core::ptr::from_ref(&mask) as u64;
    let flushes = [
        (MmuextCmd::TlbFlushLocal, 0, 0, "TLB_FLUSH_LOCAL"),
        (MmuextCmd::InvlpgLocal, va, 0, "INVLPG_LOCAL"),
        (MmuextCmd::TlbFlushMulti, 0, maskp, "TLB_FLUSH_MULTI"),
        (MmuextCmd::InvlpgMulti, va, maskp, "INVLPG_MULTI"),
        (MmuextCmd::TlbFlushAll, 0, 0, "TLB_FLUSH_ALL"),
        (MmuextCmd::InvlpgAll, va, 0, "INVLPG_ALL"),
        (MmuextCmd::FlushCache, 0, 0, "FLUSH_CACHE"),
        (MmuextCmd::FlushCacheGlobal, 0, 0, "FLUSH_CACHE_GLOBAL"),
    ];
    for (cmd, a1, a2, name) in flushes {
        report::check_ret(name, ext(cmd, a1, a2), 0);
    }
    if let (Some(a), Some(b)) = (support::frame(), support::frame()) {
        // The six TLB and INVLPG commands (not the cache flushes).
        for &(cmd, a1, a2, name) in &flushes[..6] {
            flush_removes_stale_translation(cmd, a1, a2, name, a, b);
        }
    }
    report::check_ret(
        "TLB_FLUSH_MULTI with an unreadable bitmap is EINVAL",
        ext(MmuextCmd::TlbFlushMulti, 0, 0x1000),
        Errno::EINVAL.neg(),
    );
    report::check_ret(
        "INVLPG_MULTI with an unreadable bitmap is EINVAL",
        ext(MmuextCmd::InvlpgMulti, va, 0x1000),
        Errno::EINVAL.neg(),
    );

    report::check_ret("SET_LDT of no LDT", ext(MmuextCmd::SetLdt, 0, 0), 0);
    report::check_ret(
        "SET_LDT of one page-aligned entry",
        ext(MmuextCmd::SetLdt, va, 1),
        0,
    );
    report::check_ret(
        "SET_LDT of 8192 entries",
        ext(MmuextCmd::SetLdt, va, 8192),
        0,
    );
    report::check_ret(
        "SET_LDT of 8193 entries is EINVAL",
        ext(MmuextCmd::SetLdt, va, 8193),
        Errno::EINVAL.neg(),
    );
    report::check_ret(
        "SET_LDT at an unaligned address is EINVAL",
        ext(MmuextCmd::SetLdt, va + 8, 1),
        Errno::EINVAL.neg(),
    );
    report::check_ret(
        "SET_LDT in the hypervisor's range is EINVAL",
        ext(
            MmuextCmd::SetLdt,
            guest_pv_shim::dom0_abi::layout::HYPERVISOR_VIRT_START,
            1,
        ),
        Errno::EINVAL.neg(),
    );
    report::check_ret("SET_LDT back to none", ext(MmuextCmd::SetLdt, 0, 0), 0);

    if support::map_window(1, f.mfn, PTE_RW) && support::map_window(2, g.mfn, PTE_RW) {
        mm::fill_window(1, &[0xC0FF_EE00, 0x1234, u64::MAX]);
        mm::fill_window(2, &[0xDEAD; 4]);
        report::check_ret("COPY_PAGE", ext(MmuextCmd::CopyPage, g.mfn, f.mfn), 0);
        report::check_eq(
            "COPY_PAGE copied the frame",
            [
                mm::window_read(2, 0),
                mm::window_read(2, 1),
                mm::window_read(2, 2),
                mm::window_read(2, 3),
            ],
            [0xC0FF_EE00, 0x1234, u64::MAX, 0],
        );
        report::check_ret("CLEAR_PAGE", ext(MmuextCmd::ClearPage, f.mfn, 0), 0);
        let nonzero = (0..512).filter(|&i| mm::window_read(1, i) != 0).count();
        report::check_eq("CLEAR_PAGE zeroed the frame", nonzero, 0);
    }
    let l4 = mm::boot_l4_mfn();
    report::check_ret(
        "CLEAR_PAGE of a page table is EINVAL",
        ext(MmuextCmd::ClearPage, l4, 0),
        Errno::EINVAL.neg(),
    );
    report::check_ret(
        "COPY_PAGE onto a page table is EINVAL",
        ext(MmuextCmd::CopyPage, l4, f.mfn),
        Errno::EINVAL.neg(),
    );
    report::check_ret(
        "COPY_PAGE from a page table",
        ext(MmuextCmd::CopyPage, g.mfn, l4),
        0,
    );
    const CLEAR_FOREIGN: &str = "CLEAR_PAGE of a frame the domain does not own is EINVAL";
    const COPY_FOREIGN: &str = "COPY_PAGE from a frame the domain does not own is EINVAL";
    if let Some(foreign) = support::foreign_mfn_or_skip(&[CLEAR_FOREIGN, COPY_FOREIGN]) {
        report::check_ret(
            CLEAR_FOREIGN,
            ext(MmuextCmd::ClearPage, foreign, 0),
            Errno::EINVAL.neg(),
        );
        report::check_ret(
            COPY_FOREIGN,
            ext(MmuextCmd::CopyPage, g.mfn, foreign),
            Errno::EINVAL.neg(),
        );
    }

    report::check_ret(
        "MARK_SUPER is EOPNOTSUPP",
        ext(MmuextCmd::MarkSuper, f.mfn, 0),
        Errno::EOPNOTSUPP.neg(),
    );
    report::check_ret(
        "UNMARK_SUPER is EOPNOTSUPP",
        ext(MmuextCmd::UnmarkSuper, f.mfn, 0),
        Errno::EOPNOTSUPP.neg(),
    );
    for cmd in [14u32, 21, 1000] {
        let raw = MmuextOp {
            cmd,
            pad: 0,
            arg1: 0,
            arg2: 0,
        };
        let (ret, done) = batch(&[raw], FOREIGNDOM_SELF);
        report::check_ret(
            format_args!("command {cmd} is ENOSYS"),
            ret,
            Errno::ENOSYS.neg(),
        );
        report::check_eq(format_args!("pdone after command {cmd}"), done, 0);
    }

    let flush = op(MmuextCmd::TlbFlushLocal, 0, 0);
    let bad = op(MmuextCmd::UnpinTable, f.mfn, 0);
    let (ret, done) = batch(&[flush, flush, bad, flush], FOREIGNDOM_SELF);
    report::check_ret(
        "a batch whose third operation fails returns its error",
        ret,
        Errno::EINVAL.neg(),
    );
    report::check_eq("pdone is 2 after the third operation failed", done, 2);
    let (ret, done) = batch(&[], FOREIGNDOM_SELF);
    report::check_ret("an empty batch", ret, 0);
    report::check_eq("pdone after an empty batch", done, 0);
    let mut done = u32::MAX;
    // SAFETY: the array address is unmapped; the hypervisor must refuse.
    let ret = unsafe {
        hc::mmuext_op_raw(
            0x1000,
            1,
            core::ptr::from_mut(&mut done) as u64,
            FOREIGNDOM_SELF,
        )
    };
    report::check_ret("an unreadable batch is EFAULT", ret, Errno::EFAULT.neg());
    let (ret, _) = batch(&[flush], 77);
    report::check_ret(
        "a foreigndom naming no domain is ESRCH",
        ret,
        Errno::ESRCH.neg(),
    );
}
