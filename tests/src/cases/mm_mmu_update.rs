//! `mm_mmu_update`: batched, checked writes to the guest's L1 entries and
//! the M2P, with exact `pdone`, and the documented errors.
//!
//! Success paths: `MMU_NORMAL_PT_UPDATE` of a window's L1 entry (with
//! `pdone` and with a NULL `pdone`), `MMU_PT_UPDATE_PRESERVE_AD` keeping
//! the accessed/dirty bits the CPU set (where a normal update drops them),
//! `MMU_MACHPHYS_UPDATE` of an own frame, a write into an own data page
//! (Xen treats a frame of the writable type as plain memory), an empty
//! batch, and `foreigndom` naming the caller (`DOMID_SELF` and 0).
//! Also `MMU_PT_UPDATE_NO_TRANSLATE` (a normal update for PV), an
//! unwritable `pdone` (ignored, as Xen does), the page-table-owner field
//! of `foreigndom` naming dom0, and `DOMID_IO` mapping an I/O frame.
//! Errors: a batch whose third request fails (`pdone` = 2, the first two
//! applied, the fourth untouched), an unreadable request array, an M2P
//! update of a frame the domain does not own, an entry in a frame the
//! domain does not own (`EINVAL`), command 4 (the command is `ptr & 7`:
//! `ENOSYS`), a `foreigndom` naming no domain or the caller by its own id
//! (`ESRCH`), `DOMID_XEN` (`EPERM`), `DOMID_IO` for RAM (`EBUSY`), a
//! page-table owner naming no domain (`ESRCH`, `pdone` untouched).

use guest_pv_shim::dom0_abi::Errno;
use guest_pv_shim::dom0_abi::mmu::{MmuUpdate, MmuUpdateCmd, MmuextCmd, PTE_ADDR_MASK, PteFlags};
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::dom0_abi::types::DomId;
use guest_pv_shim::hypercall::{self as hc, FOREIGNDOM_SELF};
use guest_pv_shim::mm::{self, Frame, PTE_RO, PTE_RW};
use guest_pv_shim::report;

use crate::support;

/// Address and P/RW bits of an entry.
const CHECKED_BITS: u64 = PTE_ADDR_MASK | 3;
/// Accessed and dirty.
const AD: u64 = PteFlags::ACCESSED.bits() | PteFlags::DIRTY.bits();

/// The machine address of window `slot`'s L1 entry.
fn l1e(slot: usize) -> u64 {
    mm::l1_entry(mm::window_va(slot)).map_or(0, |e| e.maddr)
}

/// Window `slot`'s L1 entry value.
fn pte(slot: usize) -> u64 {
    mm::l1_entry(mm::window_va(slot)).map_or(u64::MAX, |e| e.value)
}

/// `mmu_update` of `reqs` for `foreigndom`; returns (result, pdone).
fn update(reqs: &[MmuUpdate], foreigndom: u64) -> (i64, u32) {
    let mut done = u32::MAX;
    // SAFETY: every request targets a window's L1 entry, an own scratch
    // frame or the M2P entry of an own scratch frame: nothing the running
    // Rust code uses.
    let ret = unsafe { hc::mmu_update(reqs, Some(&mut done), foreigndom) };
    (ret, done)
}

/// `MMUEXT_INVLPG_LOCAL` of window `slot`.
fn invlpg(slot: usize) -> i64 {
    // SAFETY: a TLB flush changes no mapping.
    unsafe { hc::mmuext_one(MmuextCmd::InvlpgLocal as u32, mm::window_va(slot), 0) }
}

fn normal(slot: usize, val: u64) -> MmuUpdate {
    MmuUpdate::new(MmuUpdateCmd::NormalPtUpdate, l1e(slot), val)
}

fn successes(f: Frame, g: Frame) {
    let (ret, done) = update(&[normal(0, f.maddr() | PTE_RW)], FOREIGNDOM_SELF);
    report::check_ret("MMU_NORMAL_PT_UPDATE of an L1 entry", ret, 0);
    report::check_eq("pdone after one request", done, 1);
    support::check_entry(
        "the entry maps the frame",
        pte(0) & CHECKED_BITS,
        f.maddr() | 3,
    );
    mm::window_write(0, 0, 0xFEED);
    report::check_eq("the new mapping is usable", mm::window_read(0, 0), 0xFEED);

    // SAFETY: as in `update`, with a NULL pdone.
    let ret = unsafe { hc::mmu_update(&[normal(1, f.maddr() | PTE_RO)], None, FOREIGNDOM_SELF) };
    report::check_ret("a NULL pdone is allowed", ret, 0);
    report::check_eq(
        "the read-only mapping sees the data",
        mm::window_read(1, 0),
        0xFEED,
    );

    // Without A/D in the new value, the CPU sets them on first use.
    let plain = f.maddr() | PteFlags::PRESENT.bits() | PteFlags::RW.bits();
    let (ret, _) = update(&[normal(0, plain)], FOREIGNDOM_SELF);
    report::check_ret("map without accessed/dirty", ret, 0);
    // mmu_update does not flush: drop the old translation first.
    report::check_ret("MMUEXT_INVLPG_LOCAL of the window", invlpg(0), 0);
    mm::window_write(0, 1, 1);
    report::check_eq("the CPU set accessed and dirty", pte(0) & AD, AD);
    let (ret, _) = update(
        &[MmuUpdate::new(
            MmuUpdateCmd::PtUpdatePreserveAd,
            l1e(0),
            plain,
        )],
        FOREIGNDOM_SELF,
    );
    report::check_ret("MMU_PT_UPDATE_PRESERVE_AD", ret, 0);
    invlpg(0);
    report::check_eq(
        "MMU_PT_UPDATE_PRESERVE_AD keeps accessed and dirty",
        pte(0) & AD,
        AD,
    );
    let (ret, _) = update(&[normal(0, plain)], FOREIGNDOM_SELF);
    report::check_ret("MMU_NORMAL_PT_UPDATE over accessed/dirty", ret, 0);
    report::check_eq(
        "MMU_NORMAL_PT_UPDATE drops accessed and dirty",
        pte(0) & AD,
        0,
    );

    let machphys =
        |mfn: u64, pfn: u64| MmuUpdate::new(MmuUpdateCmd::MachphysUpdate, mfn << 12, pfn);
    let (ret, done) = update(&[machphys(f.mfn, 0x1234)], FOREIGNDOM_SELF);
    report::check_ret("MMU_MACHPHYS_UPDATE of an own frame", ret, 0);
    report::check_eq("pdone after MMU_MACHPHYS_UPDATE", done, 1);
    report::check_eq("the M2P entry changed", mm::m2p(f.mfn), 0x1234);
    let (ret, _) = update(&[machphys(f.mfn, f.pfn)], FOREIGNDOM_SELF);
    report::check_ret("MMU_MACHPHYS_UPDATE back", ret, 0);
    report::check_eq("the M2P entry is restored", mm::m2p(f.mfn), f.pfn);

    // `g` is mapped writable in window 2: it has the writable type, and an
    // update "of an entry" in it is a plain store.
    if support::map_window(2, g.mfn, PTE_RW) {
        let (ret, _) = update(
            &[MmuUpdate::new(
                MmuUpdateCmd::NormalPtUpdate,
                g.maddr() + 8 * 5,
                0xABCD,
            )],
            FOREIGNDOM_SELF,
        );
        report::check_ret("an update in an own writable data frame", ret, 0);
        report::check_eq(
            "the data frame holds the value",
            mm::window_read(2, 5),
            0xABCD,
        );
    }

    let (ret, done) = update(&[], FOREIGNDOM_SELF);
    report::check_ret("an empty batch", ret, 0);
    report::check_eq("pdone after an empty batch", done, 0);
    let (ret, _) = update(
        &[MmuUpdate::new(
            MmuUpdateCmd::PtUpdateNoTranslate,
            l1e(1),
            f.maddr() | PTE_RO,
        )],
        FOREIGNDOM_SELF,
    );
    report::check_ret(
        "MMU_PT_UPDATE_NO_TRANSLATE works like a normal update",
        ret,
        0,
    );
    let req = [normal(1, f.maddr() | PTE_RO)];
    // SAFETY: as in `update`; the pdone address is unmapped on purpose.
    let ret =
        unsafe { hc::mmu_update_raw(core::ptr::from_ref(&req) as u64, 1, 0x1000, FOREIGNDOM_SELF) };
    report::check_ret("an unwritable pdone is ignored", ret, 0);
    let (ret, _) = update(&req, 1 << 16 | FOREIGNDOM_SELF);
    report::check_ret("page-table owner field naming dom0", ret, 0);
    let (ret, _) = update(&[normal(3, 0xB8000 | PTE_RW)], u64::from(DomId::IO.0));
    report::check_ret("foreigndom DOMID_IO maps an I/O frame", ret, 0);
    let (ret, _) = update(&[normal(3, 0)], FOREIGNDOM_SELF);
    report::check_ret("unmap the I/O frame", ret, 0);
}

fn errors(f: Frame) {
    // Windows 4-7: the third request maps a frame the domain does not own.
    let Some(foreign) = support::foreign_mfn() else {
        report::error("foreign frame", format_args!("none found"));
        return;
    };
    let before: [u64; 4] = core::array::from_fn(|i| pte(4 + i));
    let batch = [
        normal(4, f.maddr() | PTE_RO),
        normal(5, f.maddr() | PTE_RO),
        normal(6, (foreign << 12) | PTE_RO),
        normal(7, f.maddr() | PTE_RO),
    ];
    let (ret, done) = update(&batch, FOREIGNDOM_SELF);
    report::check_ret(
        "a batch whose third request fails returns that error",
        ret,
        Errno::EBUSY.neg(),
    );
    report::check_eq("pdone is 2 after the third request failed", done, 2);
    report::check(
        "the first two requests were applied",
        pte(4) & CHECKED_BITS == f.maddr() | 1 && pte(5) & CHECKED_BITS == f.maddr() | 1,
        format_args!("{:#x} {:#x}", pte(4), pte(5)),
    );
    report::check(
        "the third and fourth entries are untouched",
        pte(6) == before[2] && pte(7) == before[3],
        format_args!(
            "{:#x} {:#x}, were {:#x} {:#x}",
            pte(6),
            pte(7),
            before[2],
            before[3]
        ),
    );

    let mut done = u32::MAX;
    // SAFETY: the request array is unmapped; the hypervisor must refuse.
    let ret = unsafe {
        hc::mmu_update_raw(
            0x1000,
            1,
            core::ptr::from_mut(&mut done) as u64,
            FOREIGNDOM_SELF,
        )
    };
    report::check_ret(
        "an unreadable request array is EFAULT",
        ret,
        Errno::EFAULT.neg(),
    );
    report::check_eq("pdone after an unreadable request array", done, 0);

    let (ret, _) = update(
        &[MmuUpdate::new(
            MmuUpdateCmd::MachphysUpdate,
            foreign << 12,
            0x1,
        )],
        FOREIGNDOM_SELF,
    );
    report::check_ret(
        "MMU_MACHPHYS_UPDATE of a frame the domain does not own is EINVAL",
        ret,
        Errno::EINVAL.neg(),
    );
    let (ret, _) = update(
        &[MmuUpdate::new(
            MmuUpdateCmd::NormalPtUpdate,
            foreign << 12,
            0,
        )],
        FOREIGNDOM_SELF,
    );
    report::check_ret(
        "an update inside a frame the domain does not own is EINVAL",
        ret,
        Errno::EINVAL.neg(),
    );
    let (ret, done) = update(
        &[MmuUpdate {
            ptr: l1e(1) + 4,
            val: f.maddr() | PTE_RO,
        }],
        FOREIGNDOM_SELF,
    );
    report::check_ret(
        "command 4 (ptr bits 2-0) is ENOSYS",
        ret,
        Errno::ENOSYS.neg(),
    );
    report::check_eq("pdone after an unknown command", done, 0);
    let (ret, _) = update(&[normal(1, f.maddr() | PTE_RO)], 77);
    report::check_ret(
        "a foreigndom naming no domain is ESRCH",
        ret,
        Errno::ESRCH.neg(),
    );
    let (ret, _) = update(&[normal(1, f.maddr() | PTE_RO)], u64::from(DomId::DOM0.0));
    report::check_ret(
        "a foreigndom naming the caller by its id is ESRCH",
        ret,
        Errno::ESRCH.neg(),
    );
    let (ret, _) = update(&[normal(3, 0xB8000 | PTE_RW)], u64::from(DomId::XEN.0));
    report::check_ret(
        "foreigndom DOMID_XEN for an I/O frame is EPERM",
        ret,
        Errno::EPERM.neg(),
    );
    let (ret, _) = update(&[normal(3, f.maddr() | PTE_RO)], u64::from(DomId::IO.0));
    report::check_ret(
        "foreigndom DOMID_IO for an own RAM frame is EBUSY",
        ret,
        Errno::EBUSY.neg(),
    );
    let (ret, done) = update(&[normal(1, f.maddr() | PTE_RO)], 2 << 16 | FOREIGNDOM_SELF);
    report::check_ret(
        "a page-table owner naming no domain is ESRCH",
        ret,
        Errno::ESRCH.neg(),
    );
    report::check_eq(
        "pdone is not written when the owner is unknown",
        done,
        u32::MAX,
    );
}

pub fn run(_start_info: &'static StartInfo) {
    let (Some(f), Some(g)) = (support::frame(), support::frame()) else {
        return;
    };
    successes(f, g);
    errors(f);
}
