//! `mm_update_va_mapping`: `update_va_mapping` on the guest's own L1
//! entries, every flush type and scope, and its errors.
//!
//! Success paths: map a scratch frame writable in a window and use it;
//! map it a second time read-only and see the same data; remap with every
//! `UVMF` flush type (NONE, TLB_FLUSH, INVLPG, the undefined 3) and scope
//! (LOCAL, ALL, MULTI with a vCPU bitmap); unmap (zero PTE).
//! Errors, each with Xen's code: a VA without an L1 table, a
//! non-canonical VA, a VA in the hypervisor's range (all `EINVAL`); a
//! frame the domain does not own, a writable mapping of one of the guest's
//! own L1 or L4 tables (all `EBUSY`). After each refusal the window's
//! entry must be unchanged and the guest goes on. A MULTI bitmap the
//! hypervisor cannot read gives `EFAULT`, but only after the entry was
//! written (Xen's order: update, then flush).
//!
//! `mm_cache_attributes`: dom0 (which has I/O rights) maps one of its RAM
//! frames uncached (PCD) and write-protect (PAT|PWT) next to a write-back
//! mapping, and the data is the same through all three (the hypervisor
//! re-maps its own view of the frame each time); `shared_info`, a
//! hypervisor page, refuses any attribute but write-back (`EACCES`).

use guest_pv_shim::dom0_abi::Errno;
use guest_pv_shim::dom0_abi::mmu::{PTE_ADDR_MASK, PteFlags, UvmfFlags};
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::hypercall as hc;
use guest_pv_shim::mm::{self, PTE_RO, PTE_RW, UVMF_INVLPG};
use guest_pv_shim::report;

use crate::support;

/// Present and writable bits, and the address: what must read back.
const CHECKED_BITS: u64 = PTE_ADDR_MASK | 3;

/// The L1 entry of window `slot`, address and P/RW bits only.
fn window_pte(slot: usize) -> u64 {
    mm::l1_entry(mm::window_va(slot)).map_or(u64::MAX, |e| e.value & CHECKED_BITS)
}

/// `update_va_mapping` of window `slot`.
fn uvm(slot: usize, pte: u64, flags: u64) -> i64 {
    // SAFETY: windows hold no memory of the running Rust code.
    unsafe { hc::update_va_mapping(mm::window_va(slot), pte, flags) }
}

/// A refused `update_va_mapping` of window `slot` to `pte`: the result
/// must be `want` and the entry unchanged.
fn refused(name: &str, slot: usize, pte: u64, flags: u64, want: i64) {
    let before = window_pte(slot);
    report::check_ret(name, uvm(slot, pte, flags), want);
    support::check_entry(
        format_args!("{name} leaves the entry unchanged"),
        window_pte(slot),
        before,
    );
}

pub fn run(_start_info: &'static StartInfo) {
    let Some(frame) = support::frame() else {
        return;
    };
    let (rw, ro) = (0, 1);

    report::check_ret(
        "map a scratch frame writable",
        uvm(rw, frame.maddr() | PTE_RW, UVMF_INVLPG),
        0,
    );
    support::check_entry(
        "the L1 entry maps the frame writable",
        window_pte(rw),
        frame.maddr() | 3,
    );
    mm::window_write(rw, 7, 0x0123_4567_89AB_CDEF);
    report::check_eq(
        "a store through the new mapping reads back",
        mm::window_read(rw, 7),
        0x0123_4567_89AB_CDEF,
    );
    report::check_ret(
        "map the same frame read-only elsewhere",
        uvm(ro, frame.maddr() | PTE_RO, UVMF_INVLPG),
        0,
    );
    report::check_eq(
        "the read-only mapping sees the same data",
        mm::window_read(ro, 7),
        0x0123_4567_89AB_CDEF,
    );
    support::check_entry(
        "the read-only L1 entry has RW clear",
        window_pte(ro),
        frame.maddr() | 1,
    );

    let mask: u64 = 1;
    let multi = core::ptr::from_ref(&mask) as u64;
    let flushes: [(&str, u64); 7] = [
        ("UVMF_NONE", 0),
        ("UVMF_TLB_FLUSH|UVMF_LOCAL", UvmfFlags::TLB_FLUSH.bits()),
        ("UVMF_INVLPG|UVMF_LOCAL", UvmfFlags::INVLPG.bits()),
        (
            "UVMF_TLB_FLUSH|UVMF_ALL",
            (UvmfFlags::TLB_FLUSH | UvmfFlags::ALL).bits(),
        ),
        (
            "UVMF_INVLPG|UVMF_ALL",
            (UvmfFlags::INVLPG | UvmfFlags::ALL).bits(),
        ),
        ("UVMF_INVLPG|UVMF_MULTI", multi | UvmfFlags::INVLPG.bits()),
        ("flush type 3", 3),
    ];
    for (i, (name, flags)) in flushes.into_iter().enumerate() {
        let value = 0x1000 + i as u64;
        mm::window_write(rw, 8, value);
        report::check_ret(
            format_args!("remap with {name}"),
            uvm(rw, frame.maddr() | PTE_RW, flags),
            0,
        );
        report::check_eq(
            format_args!("data intact after remap with {name}"),
            mm::window_read(rw, 8),
            value,
        );
    }
    // Xen writes the entry first and reads the bitmap for the flush only
    // afterwards: the call fails, but the new (read-only) entry is live.
    report::check_ret(
        "UVMF_MULTI with an unreadable bitmap is EFAULT",
        uvm(
            rw,
            frame.maddr() | PTE_RO,
            0x1000 | UvmfFlags::INVLPG.bits(),
        ),
        Errno::EFAULT.neg(),
    );
    support::check_entry(
        "UVMF_MULTI with an unreadable bitmap still writes the entry",
        window_pte(rw),
        frame.maddr() | 1,
    );
    report::check_ret(
        "make the window writable again",
        uvm(rw, frame.maddr() | PTE_RW, UVMF_INVLPG),
        0,
    );

    // SAFETY: 0x1000 is not mapped and holds nothing of this guest.
    let ret = unsafe { hc::update_va_mapping(0x1000, frame.maddr() | PTE_RW, UVMF_INVLPG) };
    report::check_ret(
        "a VA without an L1 table is EINVAL",
        ret,
        Errno::EINVAL.neg(),
    );
    // SAFETY: a non-canonical address maps nothing.
    let ret = unsafe {
        hc::update_va_mapping(0x8000_0000_0000_0000, frame.maddr() | PTE_RW, UVMF_INVLPG)
    };
    report::check_ret("a non-canonical VA is EINVAL", ret, Errno::EINVAL.neg());
    // SAFETY: the hypervisor's range; the call must be refused.
    let ret = unsafe {
        hc::update_va_mapping(
            guest_pv_shim::dom0_abi::layout::MACH2PHYS_VIRT_START,
            frame.maddr() | PTE_RW,
            UVMF_INVLPG,
        )
    };
    report::check_ret(
        "a VA in the hypervisor's range is EINVAL",
        ret,
        Errno::EINVAL.neg(),
    );

    match support::foreign_mfn() {
        Some(mfn) => refused(
            "mapping a frame the domain does not own is EBUSY",
            ro,
            (mfn << 12) | PTE_RO,
            UVMF_INVLPG,
            Errno::EBUSY.neg(),
        ),
        None => report::error("foreign frame", format_args!("none found")),
    }
    let l1 = mm::l1_entry(mm::window_va(rw)).map(|e| e.maddr >> 12);
    match l1 {
        Some(l1) => {
            refused(
                "a writable mapping of an own L1 table is EBUSY",
                ro,
                (l1 << 12) | PTE_RW,
                UVMF_INVLPG,
                Errno::EBUSY.neg(),
            );
            report::check_ret(
                "a read-only mapping of an own L1 table is accepted",
                uvm(ro, (l1 << 12) | PTE_RO, UVMF_INVLPG),
                0,
            );
        }
        None => report::error("own L1", format_args!("window has no L1 entry")),
    }
    refused(
        "a writable mapping of the own L4 is EBUSY",
        ro,
        (mm::boot_l4_mfn() << 12) | PTE_RW,
        UVMF_INVLPG,
        Errno::EBUSY.neg(),
    );

    report::check_ret("unmap with a zero PTE", uvm(rw, 0, UVMF_INVLPG), 0);
    report::check_eq("the unmapped L1 entry is zero", window_pte(rw), 0);
    report::check_ret("unmap the second window", uvm(ro, 0, UVMF_INVLPG), 0);
}

pub fn cache_attributes(start_info: &'static StartInfo) {
    let Some(frame) = support::frame() else {
        return;
    };
    if !support::map_window(26, frame.mfn, PTE_RW) {
        return;
    }
    mm::window_write(26, 5, 0xcafe_0001);
    let pcd = PteFlags::PCD.bits();
    let wp = PteFlags::PAT_PSE.bits() | PteFlags::PWT.bits();
    report::check_ret(
        "an uncached (PCD) mapping of an own RAM frame",
        uvm(27, frame.maddr() | PTE_RW | pcd, UVMF_INVLPG),
        0,
    );
    report::check_eq(
        "the uncached mapping reads what the write-back one wrote",
        mm::window_read(27, 5),
        0xcafe_0001,
    );
    mm::window_write(27, 6, 0xcafe_0002);
    report::check_ret(
        "a write-protect (PAT|PWT) mapping of the same frame",
        uvm(28, frame.maddr() | PTE_RO | wp, UVMF_INVLPG),
        0,
    );
    report::check_eq(
        "all three mappings read the same data",
        [
            mm::window_read(26, 6),
            mm::window_read(27, 5),
            mm::window_read(28, 6),
        ],
        [0xcafe_0002, 0xcafe_0001, 0xcafe_0002],
    );
    let before = window_pte(29);
    report::check_ret(
        "shared_info mapped uncached is EACCES",
        uvm(29, start_info.shared_info | PTE_RO | pcd, UVMF_INVLPG),
        Errno::EACCES.neg(),
    );
    support::check_entry(
        "the refused mapping leaves the entry unchanged",
        window_pte(29),
        before,
    );
    report::check_eq(
        "the windows come down",
        [
            mm::unmap_window(26),
            mm::unmap_window(27),
            mm::unmap_window(28),
        ],
        [0; 3],
    );
}
