//! `mm_pt_validation`: `mmu_update` of L2, L3 and L4 entries, and the
//! validation a hostile guest runs into.
//!
//! Success paths: hook a zeroed scratch frame into a free guest L4 slot
//! (below and above the reserved range) as an L3, then an L2 and an L1
//! under it, map a page through the new tables and read it, and take it
//! all down again. Refusals, each with Xen's code, after each of which
//! the entry is unchanged and the guest goes on: an L4 entry in the
//! hypervisor's slots 256 and 271, a superpage (PSE) entry at L2 and L3,
//! PWT, PCD or G in an L2-L4 entry, an entry pointing at a frame the
//! domain does not own, an L2 entry pointing at a writable data frame, an
//! L3 entry pointing at a table of the wrong level (all `EINVAL`), an L1
//! holding a writable mapping of a page table (`EBUSY`, the L1's own
//! error). Linear (recursive) entries with Xen 4.17's rules: read-only
//! self-maps at L2-L4 (the L4 one used to read the L4), a read-only
//! entry to another validated L4, and the refusals (`EINVAL`): writable,
//! made writable, and each way of building a chain of two.

use core::fmt;

use guest_pv_shim::dom0_abi::Errno;
use guest_pv_shim::dom0_abi::mmu::{MmuUpdate, MmuUpdateCmd, MmuextCmd, PTE_ADDR_MASK, PteFlags};
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::hypercall::{self as hc, FOREIGNDOM_SELF};
use guest_pv_shim::mm::{self, Frame, PTE_RO, PTE_RW};
use guest_pv_shim::report;

use crate::support;

/// A table entry as guests write them (P, RW, A, D).
const TABLE: u64 = PTE_RW;

/// One `mmu_update` of the entry at `maddr`.
fn write(maddr: u64, val: u64) -> i64 {
    let req = MmuUpdate::new(MmuUpdateCmd::NormalPtUpdate, maddr, val);
    // SAFETY: every entry written here is in a slot or index nothing of
    // the running code uses (free L4 slots, unused L2/L3 indices, scratch
    // tables), or is refused.
    unsafe { hc::mmu_update(core::slice::from_ref(&req), None, FOREIGNDOM_SELF) }
}

/// Reads the entry at `maddr` of a table readable through the boot
/// mapping or a window.
fn read(maddr: u64) -> u64 {
    mm::read_entry(maddr).unwrap_or(u64::MAX)
}

/// A refused write of `val` at `maddr`: `want`, entry unchanged.
fn refused(name: fmt::Arguments<'_>, maddr: u64, val: u64, want: i64) {
    let before = read(maddr);
    report::check_ret(name, write(maddr, val), want);
    support::check_entry(
        format_args!("{name} leaves the entry unchanged"),
        read(maddr),
        before,
    );
}

/// A zero-filled scratch frame with no mapping.
fn zeroed() -> Option<Frame> {
    let f = support::frame()?;
    let ret = mm::prepare_frame(20, f, &[]);
    if ret != 0 {
        report::error("zero a scratch frame", format_args!("{}", report::Ret(ret)));
        return None;
    }
    Some(f)
}

/// Builds L3 -> L2 -> L1 -> data under L4 slot `slot` and reads through
/// it; tears it down again.
fn build_and_use(slot: u64, l3: Frame, l2: Frame, l1: Frame, data: Frame) {
    let l4e = (mm::boot_l4_mfn() << 12) + slot * 8;
    let va = if slot < 256 {
        slot << 39
    } else {
        0xFFFF_0000_0000_0000 | slot << 39
    };
    report::check_ret(
        format_args!("an empty L3 in L4 slot {slot}"),
        write(l4e, l3.maddr() | TABLE),
        0,
    );
    report::check_ret(
        format_args!("an empty L2 under slot {slot}"),
        write(l3.maddr(), l2.maddr() | TABLE),
        0,
    );
    report::check_ret(
        format_args!("an empty L1 under slot {slot}"),
        write(l2.maddr(), l1.maddr() | TABLE),
        0,
    );
    if support::map_window(21, data.mfn, PTE_RW) {
        mm::window_write(21, 0, 0x5107 + slot);
    }
    report::check_ret(
        format_args!("a data page under slot {slot}"),
        write(l1.maddr(), data.maddr() | PTE_RO),
        0,
    );
    report::check_eq(
        format_args!("the page is readable through the new tables in slot {slot}"),
        mm::read_mapped(va),
        0x5107 + slot,
    );
    let teardown = [
        write(l1.maddr(), 0),
        write(l2.maddr(), 0),
        write(l3.maddr(), 0),
        write(l4e, 0),
    ];
    report::check_eq(
        format_args!("the tables under slot {slot} come down"),
        teardown,
        [0; 4],
    );
    // SAFETY: flushing the TLB changes no mapping.
    unsafe { hc::mmuext_one(MmuextCmd::TlbFlushLocal as u32, 0, 0) };
}

pub fn run(_start_info: &'static StartInfo) {
    let (Some(l3), Some(l2), Some(l1), Some(data)) = (zeroed(), zeroed(), zeroed(), zeroed())
    else {
        return;
    };
    build_and_use(1, l3, l2, l1, data);
    build_and_use(272, l3, l2, l1, data);

    let l4 = mm::boot_l4_mfn() << 12;
    for slot in [256u64, 271] {
        refused(
            format_args!("an L4 entry in reserved slot {slot}"),
            l4 + slot * 8,
            l3.maddr() | TABLE,
            Errno::EINVAL.neg(),
        );
    }

    // The kernel's own path: L4[511] -> L3 -> L2 (the image is in the
    // first few MiB, so high indices are free).
    let walk = mm::walk(mm::pfn_to_virt(0));
    let (Some(l4e), Some(l3e)) = (walk[0], walk[1]) else {
        report::error("walk", format_args!("{walk:x?}"));
        return;
    };
    let kl3 = l4e.mfn() << 12;
    let kl2 = l3e.mfn() << 12;
    let pse = PteFlags::PAT_PSE.bits();
    refused(
        format_args!("a superpage (PSE) L3 entry"),
        kl3 + 8,
        l2.maddr() | TABLE | pse,
        Errno::EINVAL.neg(),
    );
    refused(
        format_args!("a superpage (PSE) L2 entry"),
        kl2 + 300 * 8,
        l1.maddr() | TABLE | pse,
        Errno::EINVAL.neg(),
    );
    for (name, bit) in [
        ("PWT", PteFlags::PWT.bits()),
        ("PCD", PteFlags::PCD.bits()),
        ("G", PteFlags::GLOBAL.bits()),
    ] {
        refused(
            format_args!("an L4 entry with {name}"),
            l4 + 8,
            l3.maddr() | TABLE | bit,
            Errno::EINVAL.neg(),
        );
        refused(
            format_args!("an L3 entry with {name}"),
            kl3 + 8,
            l2.maddr() | TABLE | bit,
            Errno::EINVAL.neg(),
        );
        refused(
            format_args!("an L2 entry with {name}"),
            kl2 + 300 * 8,
            l1.maddr() | TABLE | bit,
            Errno::EINVAL.neg(),
        );
    }
    match support::foreign_mfn() {
        Some(foreign) => refused(
            format_args!("an L2 entry to a frame the domain does not own"),
            kl2 + 300 * 8,
            (foreign << 12) | TABLE,
            Errno::EINVAL.neg(),
        ),
        None => report::error("foreign frame", format_args!("none found")),
    }
    if let Some(writable) = support::frame()
        && support::map_window(22, writable.mfn, PTE_RW)
    {
        refused(
            format_args!("an L2 entry to a frame mapped writable"),
            kl2 + 300 * 8,
            writable.maddr() | TABLE,
            Errno::EINVAL.neg(),
        );
    }
    // The kernel's L2 is a validated L2: it cannot also be an L2 for an
    // L3 entry of another level, i.e. an L1.
    let wrong_level = format_args!("an L3 entry to an L1 table (wrong level)");
    match mm::l1_entry(mm::pfn_to_virt(0)) {
        Some(entry) => refused(
            wrong_level,
            kl3 + 8,
            (entry.maddr & !0xFFF) | TABLE,
            Errno::EINVAL.neg(),
        ),
        None => report::skip(
            wrong_level,
            format_args!("no L1 table maps pfn 0 in the boot tables"),
        ),
    }
    // A fresh L1 whose first entry maps the L4 writable cannot validate.
    if let Some(bad) = support::frame() {
        let ret = mm::prepare_frame(23, bad, &[l4 | PTE_RW]);
        if ret == 0 {
            refused(
                format_args!("an L2 entry to an L1 holding a writable mapping of a page table"),
                kl2 + 300 * 8,
                bad.maddr() | TABLE,
                Errno::EBUSY.neg(),
            );
        }
    }

    linear(l4, kl3, kl2);
}

/// One `mmuext_op` on the frame at `mfn`.
fn ext(cmd: MmuextCmd, mfn: u64) -> i64 {
    // SAFETY: pinning and unpinning scratch frames nothing maps.
    unsafe { hc::mmuext_one(cmd as u32, mfn, 0) }
}

/// Linear (recursive) entries as Xen 4.17 allows them (`pv-linear-pt`):
/// read-only, same level; another table must be a validated one of that
/// level, and no chain is longer than one step (a table holding linear
/// entries is never a target, a target never holds any).
fn linear(l4: u64, kl3: u64, kl2: u64) {
    // With US set, as Xen stores every guest L4 entry.
    let user = PteFlags::USER.bits();
    report::check_ret(
        "a read-only linear L4 entry (self-map)",
        write(l4 + 2 * 8, l4 | PTE_RO | user),
        0,
    );
    let through_linear =
        mm::read_mapped((2u64 << 39) | (2 << 30) | (2 << 21) | (2 << 12) | (2 * 8));
    support::check_entry(
        "the L4 reads itself through the self-map",
        through_linear & (PTE_ADDR_MASK | 3),
        l4 | 1,
    );
    refused(
        format_args!("making the linear L4 entry writable"),
        l4 + 2 * 8,
        l4 | PTE_RW,
        Errno::EINVAL.neg(),
    );
    refused(
        format_args!("a writable linear L4 entry"),
        l4 + 3 * 8,
        l4 | PTE_RW,
        Errno::EINVAL.neg(),
    );
    for (level, table, index) in [(3, kl3, 1), (2, kl2, 300)] {
        report::check_eq(
            format_args!("a read-only L{level} self-map, then removed"),
            [
                write(table + index * 8, table | PTE_RO),
                write(table + index * 8, 0),
            ],
            [0, 0],
        );
    }
    let (Some(b), Some(c)) = (zeroed(), zeroed()) else {
        return;
    };
    report::check_eq(
        "two more L4 tables pinned",
        [
            ext(MmuextCmd::PinL4Table, b.mfn),
            ext(MmuextCmd::PinL4Table, c.mfn),
        ],
        [0, 0],
    );
    // Read-only windows on them, for the entry checks.
    if !support::map_window(24, b.mfn, PTE_RO) || !support::map_window(25, c.mfn, PTE_RO) {
        return;
    }
    report::check_ret(
        "a read-only linear entry to another validated L4",
        write(l4 + 3 * 8, b.maddr() | PTE_RO),
        0,
    );
    refused(
        format_args!("a writable entry to another L4"),
        l4 + 4 * 8,
        b.maddr() | PTE_RW,
        Errno::EINVAL.neg(),
    );
    refused(
        format_args!("a linear entry in a table that is a linear target"),
        b.maddr() + 8,
        c.maddr() | PTE_RO,
        Errno::EINVAL.neg(),
    );
    refused(
        format_args!("a linear entry to a table holding linear entries"),
        c.maddr() + 8,
        l4 | PTE_RO,
        Errno::EINVAL.neg(),
    );
    report::check_ret("remove the entry to the other L4", write(l4 + 3 * 8, 0), 0);
    report::check_ret(
        "a self-map is no linear entry: its table may be a target",
        write(c.maddr() + 8, l4 | PTE_RO),
        0,
    );
    refused(
        format_args!("a linear entry in the table that is now a target"),
        l4 + 3 * 8,
        b.maddr() | PTE_RO,
        Errno::EINVAL.neg(),
    );
    report::check_eq(
        "the linear entries come down and the tables are unpinned",
        [
            write(c.maddr() + 8, 0),
            write(l4 + 2 * 8, 0),
            mm::unmap_window(24),
            mm::unmap_window(25),
            ext(MmuextCmd::UnpinTable, b.mfn),
            ext(MmuextCmd::UnpinTable, c.mfn),
        ],
        [0; 6],
    );
    // SAFETY: flushing the TLB changes no mapping.
    unsafe { hc::mmuext_one(MmuextCmd::TlbFlushLocal as u32, 0, 0) };
}
