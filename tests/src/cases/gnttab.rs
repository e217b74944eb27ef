//! `gnttab_self`: grant tables v1 with grants to the domain itself.
//!
//! The guest (dom0, id 0) sets its table up (`setup_table`, growing it,
//! `query_size`), maps its first frame and grants scratch frames to
//! itself. Then, each checked against Xen 4.17 (run with
//! `gnttab=max_ver:1`, as this hypervisor offers v1 only):
//! - `map_grant_ref` writable and read-only (by VA and by PTE address):
//!   handles, `dev_bus_addr`, `GTF_reading`/`GTF_writing` in the entry,
//!   data read and written through the mappings, a write through the
//!   read-only one faults, a revocation while mapped is refused;
//! - `unmap_grant_ref`: the flags clear as the mappings go, a read after
//!   the unmap faults, a handle used twice or a PTE that no longer maps
//!   the frame are refused; then the revocation succeeds;
//! - device mappings (`dev_bus_addr`, `bad_dev_addr`), a device and
//!   host mapping under one handle unmapped half by half, and a page
//!   table granted: mapped read-only, not writable;
//! - `unmap_and_replace` moving another mapping into the grant's place;
//! - `copy` in both directions (grant to own frame, own frame to grant);
//! - every status the guest can provoke alone: `bad_gntref`,
//!   `bad_domain`, `general_error` (not granted, read-only grant mapped
//!   writable, no L1 table, misaligned PTE address, frame typed as a page
//!   table), `bad_handle`, `permission_denied` (a frame named with the
//!   domain's own id), `bad_page`, `bad_copy_arg`, `eagain` (swap of a
//!   mapped entry);
//! - `swap_grant_ref`, `set_version` (1: 0; 2: `ENOSYS`; 3: `EINVAL`),
//!   `get_version`, `get_status_frames`, call-level `EINVAL`/`ENOSYS`,
//!   `add_to_physmap(XENMAPSPACE_grant_table)`: `EACCES` for PV;
//! - a host and a device mapping left in place at the end, for the
//!   domain's teardown to release.

use core::sync::atomic::{AtomicU32, Ordering};

use guest_pv_shim::dom0_abi::Errno;
use guest_pv_shim::dom0_abi::grant_table::{
    GNTCOPY_DEST_GREF, GNTCOPY_SOURCE_GREF, GntmapFlags, GnttabCopy, GnttabCopyPtr,
    GnttabGetStatusFrames, GnttabGetVersion, GnttabMapGrantRef, GnttabQuerySize, GnttabSetVersion,
    GnttabSetupTable, GnttabSwapGrantRef, GnttabUnmapAndReplace, GnttabUnmapGrantRef, GrantStatus,
    GtfFlags,
};
use guest_pv_shim::dom0_abi::memory::{MemoryOpCmd, XENMAPSPACE_GRANT_TABLE, XenAddToPhysmap};
use guest_pv_shim::dom0_abi::mmu::PTE_ADDR_MASK;
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::dom0_abi::types::DomId;
use guest_pv_shim::hypercall as hc;
use guest_pv_shim::mm::{self, Frame, PTE_RW};
use guest_pv_shim::report;
use guest_pv_shim::traps;

use crate::support;

/// This domain's id (the test guest is dom0).
const ME: u16 = 0;
const SELF: u16 = DomId::SELF.0;
/// Windows: the table's first frame, the two grant mappings, the
/// scratch frames, a spare for `unmap_and_replace`.
const W_TABLE: usize = 0;
const W_MAP: usize = 1;
const W_RO: usize = 2;
const W_DATA: usize = 3;
const W_OWN: usize = 4;
const W_SPARE: usize = 5;
/// The grant references used.
const G_RW: u32 = 10;
const G_FREE: u32 = 11;
const G_RO: u32 = 12;
const G_SWAP: u32 = 13;
const G_PT: u32 = 14;
/// The pattern the granted frame starts with.
const PATTERN: u64 = 0x6772_616E_7400_0001;

fn status(s: i16) -> &'static str {
    match GrantStatus::from_value(s) {
        Some(GrantStatus::Okay) => "GNTST_okay",
        Some(GrantStatus::GeneralError) => "GNTST_general_error",
        Some(GrantStatus::BadDomain) => "GNTST_bad_domain",
        Some(GrantStatus::BadGntref) => "GNTST_bad_gntref",
        Some(GrantStatus::BadHandle) => "GNTST_bad_handle",
        Some(GrantStatus::BadVirtAddr) => "GNTST_bad_virt_addr",
        Some(GrantStatus::BadDevAddr) => "GNTST_bad_dev_addr",
        Some(GrantStatus::PermissionDenied) => "GNTST_permission_denied",
        Some(GrantStatus::BadPage) => "GNTST_bad_page",
        Some(GrantStatus::BadCopyArg) => "GNTST_bad_copy_arg",
        Some(GrantStatus::Eagain) => "GNTST_eagain",
        Some(GrantStatus::NoSpace) => "GNTST_no_space",
        Some(_) => "another GNTST",
        None => "not a GNTST value",
    }
}

/// Checks a per-operation status.
fn check_status(name: &str, got: i16, want: GrantStatus) -> bool {
    report::check_eq(name, status(got), status(want as i16))
}

/// Checks two values that hold machine addresses (which differ between
/// the platforms) without printing them.
fn same(name: &str, got: u64, want: u64) -> bool {
    report::check(
        name,
        got == want,
        format_args!("got {got:#x}, want {want:#x}"),
    )
}

/// Offset of `gref`'s entry in the table's first frame.
fn entry_offset(gref: u32) -> u64 {
    u64::from(gref) * 8
}

/// Grants `frame` to this domain at `gref`: `domid` and `frame` first,
/// then the flags.
fn grant(gref: u32, frame: u64, flags: GtfFlags) {
    let at = entry_offset(gref);
    mm::window_write_u32(W_TABLE, at + 4, u32::try_from(frame).unwrap_or(u32::MAX));
    mm::window_write_u32(W_TABLE, at, (u32::from(ME) << 16) | u32::from(flags.bits()));
}

/// The flags of `gref`'s entry.
fn flags(gref: u32) -> GtfFlags {
    let word = mm::window_read_u32(W_TABLE, entry_offset(gref));
    GtfFlags::from_bits_retain(u16::try_from(word & 0xFFFF).unwrap_or(0))
}

/// The granter's revocation: compare-and-swap the flags (with `domid`)
/// from "granted, not in use" to 0. Returns whether it succeeded.
fn revoke(gref: u32) -> bool {
    let va = mm::window_va(W_TABLE) + entry_offset(gref);
    // SAFETY: the table frame is mapped writable at window W_TABLE and no
    // Rust value lives there; the word is 4-aligned.
    let word = unsafe { AtomicU32::from_ptr(va as *mut u32) };
    let current = word.load(Ordering::Acquire);
    let in_use = u32::from((GtfFlags::READING | GtfFlags::WRITING).bits());
    word.compare_exchange(current & !in_use, 0, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
}

fn map_op(host_addr: u64, flags: GntmapFlags, gref: u32, dom: u16) -> GnttabMapGrantRef {
    GnttabMapGrantRef {
        host_addr,
        flags: flags.bits(),
        gref,
        dom,
        ..GnttabMapGrantRef::default()
    }
}

/// Maps with `op`; returns the operation as the hypervisor left it.
fn map(name: &str, mut op: GnttabMapGrantRef) -> GnttabMapGrantRef {
    let ret = hc::gnttab_map(core::slice::from_mut(&mut op));
    report::check_ret(format_args!("{name}: the call returns 0"), ret, 0);
    op
}

/// Unmaps `handle` at `host_addr`; returns the status.
fn unmap(host_addr: u64, handle: u32) -> i16 {
    let mut op = GnttabUnmapGrantRef {
        host_addr,
        handle,
        ..GnttabUnmapGrantRef::default()
    };
    let ret = hc::gnttab_unmap(core::slice::from_mut(&mut op));
    if ret != 0 {
        return i16::MIN;
    }
    op.status
}

/// The L1 entry of window `slot`: its frame and P/RW bits only (the rest
/// differs between the platforms' kernel rings).
fn window_pte(slot: usize) -> u64 {
    mm::l1_entry(mm::window_va(slot)).map_or(u64::MAX, |e| e.value & (PTE_ADDR_MASK | 3))
}

/// Whether a read of window `slot` faults with #PF at its address.
fn read_faults(slot: usize) -> bool {
    let va = mm::window_va(slot);
    matches!(traps::try_read_u64(va), Err(t) if t.vector == 14)
}

pub fn run(_start_info: &'static StartInfo) {
    if !support::traps() {
        return;
    }
    let (Some(data), Some(own), Some(spare)) =
        (support::frame(), support::frame(), support::frame())
    else {
        return;
    };
    let Some(table) = set_up_table() else {
        return;
    };
    if !support::map_window(W_TABLE, table, PTE_RW)
        || !support::map_window(W_DATA, data.mfn, PTE_RW)
        || !support::map_window(W_OWN, own.mfn, PTE_RW)
    {
        return;
    }
    mm::fill_window(W_DATA, &[PATTERN, PATTERN + 1, PATTERN + 2]);
    mm::fill_window(W_OWN, &[0]);
    for slot in [W_MAP, W_RO] {
        mm::unmap_window(slot);
    }
    grant(G_RW, data.mfn, GtfFlags::PERMIT_ACCESS);
    mappings(data);
    device_maps(data);
    replace(spare);
    copies(data, own);
    swaps();
    versions();
    // Left in place: the domain's teardown must release them (xtask
    // checks that every frame comes back on this hypervisor).
    for (name, op) in [
        (
            "a host mapping left for the teardown",
            map_op(mm::window_va(W_MAP), GntmapFlags::HOST_MAP, G_RW, ME),
        ),
        (
            "a device mapping left for the teardown",
            map_op(0, GntmapFlags::DEVICE_MAP, G_RW, ME),
        ),
    ] {
        check_status(name, map(name, op).status, GrantStatus::Okay);
    }
}

/// `setup_table`'s `dom`, `nr_frames` and `frame_list`.
type SetupArgs = (u16, u32, u64);

/// `setup_table` and `query_size`; returns the first frame's MFN.
fn set_up_table() -> Option<u64> {
    let query = |dom: u16| {
        let mut q = GnttabQuerySize {
            dom,
            ..GnttabQuerySize::default()
        };
        (hc::gnttab_query_size(&mut q), q)
    };
    let (ret, q) = query(SELF);
    report::check_ret("query_size returns 0", ret, 0);
    check_status("query_size status", q.status, GrantStatus::Okay);
    report::check_eq(
        "query_size: one frame at first, at most 64",
        (q.nr_frames, q.max_nr_frames),
        (1, 64),
    );
    let mut frames = [0u64; 2];
    let list = frames.as_mut_ptr() as u64;
    let setup = |dom: u16, nr_frames: u32, frame_list: u64| {
        let mut s = GnttabSetupTable {
            dom,
            nr_frames,
            frame_list,
            ..GnttabSetupTable::default()
        };
        (hc::gnttab_setup_table(&mut s), s.status)
    };
    report::check_eq("setup_table of one frame", setup(SELF, 1, list), (0, 0));
    let first = frames[0];
    report::check_eq(
        "setup_table of two grows the table",
        setup(SELF, 2, list),
        (0, 0),
    );
    same("the first frame stays where it was", frames[0], first);
    report::check(
        "the second frame is another",
        frames[1] != first && frames[1] != 0,
        format_args!("{frames:x?}"),
    );
    report::check_eq("query_size: two frames now", query(SELF).1.nr_frames, 2);
    let refused: [(&str, SetupArgs, i64, GrantStatus); 3] = [
        (
            "setup_table beyond max_grant_frames",
            (SELF, 65, list),
            0,
            GrantStatus::GeneralError,
        ),
        (
            "setup_table of a domain that does not exist",
            (0x7000, 1, list),
            0,
            GrantStatus::BadDomain,
        ),
        (
            "setup_table with a hypervisor frame list",
            (SELF, 1, 0xFFFF_8000_0000_0000),
            Errno::EFAULT.neg(),
            GrantStatus::Okay,
        ),
    ];
    for (name, (dom, nr, at), ret, status) in refused {
        let (got, got_status) = setup(dom, nr, at);
        report::check_ret(name, got, ret);
        if ret == 0 {
            check_status(name, got_status, status);
        }
    }
    check_status(
        "query_size of a domain that does not exist",
        query(0x7000).1.status,
        GrantStatus::BadDomain,
    );
    let mut s = GnttabSetupTable::default();
    // SAFETY: `s` is one structure; the hypervisor refuses the count
    // before reading it.
    let ret = unsafe { hc::grant_table_op_raw(2, core::ptr::from_mut(&mut s) as u64, 2) };
    report::check_ret(
        "setup_table with count 2 is EINVAL",
        ret,
        Errno::EINVAL.neg(),
    );
    (first != 0).then_some(first)
}

/// Maps, reads, writes, faults, revocation and unmaps of `G_RW`.
fn mappings(data: Frame) {
    let host = GntmapFlags::HOST_MAP;
    let rw = map("map writable", map_op(mm::window_va(W_MAP), host, G_RW, ME));
    check_status("map writable", rw.status, GrantStatus::Okay);
    report::check_eq("the first handle is 0", rw.handle, 0);
    same(
        "dev_bus_addr is the frame's address",
        rw.dev_bus_addr,
        data.maddr(),
    );
    report::check_eq(
        "the entry is reading and writing",
        flags(G_RW),
        GtfFlags::PERMIT_ACCESS | GtfFlags::READING | GtfFlags::WRITING,
    );
    same(
        "the mapping's PTE maps the frame writable",
        window_pte(W_MAP),
        data.maddr() | 3,
    );
    report::check_eq(
        "a read through the mapping sees the data",
        mm::window_read(W_MAP, 1),
        PATTERN + 1,
    );
    mm::window_write(W_MAP, 2, 0x1234);
    report::check_eq(
        "a write through the mapping reaches the frame",
        mm::window_read(W_DATA, 2),
        0x1234,
    );
    report::check(
        "a revocation while mapped is refused",
        !revoke(G_RW),
        format_args!("flags {:?}", flags(G_RW)),
    );

    // A second, read-only mapping, given by the machine address of its PTE.
    let pte = mm::l1_entry(mm::window_va(W_RO)).map_or(0, |e| e.maddr);
    let ro_flags = host | GntmapFlags::READONLY | GntmapFlags::CONTAINS_PTE;
    let ro = map(
        "map read-only by PTE address",
        map_op(pte, ro_flags, G_RW, ME),
    );
    check_status("map read-only by PTE address", ro.status, GrantStatus::Okay);
    report::check_eq("the next handle is 1", ro.handle, 1);
    same(
        "the read-only PTE maps the frame read-only",
        window_pte(W_RO),
        data.maddr() | 1,
    );
    report::check_eq(
        "a read through the read-only mapping",
        mm::window_read(W_RO, 0),
        PATTERN,
    );
    // SAFETY: the window maps the granted frame read-only; the store
    // faults and resumes after it.
    let wrote = unsafe { traps::try_write_u64(mm::window_va(W_RO), 1) };
    report::check(
        "a write through the read-only mapping is a page fault",
        matches!(wrote, Err(t) if t.vector == 14),
        format_args!("{wrote:?}"),
    );

    map_refusals(data);

    check_status(
        "unmap the writable mapping",
        unmap(mm::window_va(W_MAP), 0),
        GrantStatus::Okay,
    );
    report::check_eq(
        "the entry is reading only",
        flags(G_RW),
        GtfFlags::PERMIT_ACCESS | GtfFlags::READING,
    );
    report::check_eq("the unmapped PTE is empty", window_pte(W_MAP), 0);
    report::check(
        "a read after the unmap faults",
        read_faults(W_MAP),
        format_args!("no fault"),
    );
    check_status(
        "a handle unmapped twice",
        unmap(mm::window_va(W_MAP), 0),
        GrantStatus::BadHandle,
    );
    check_status(
        "a handle never given",
        unmap(mm::window_va(W_MAP), 999),
        GrantStatus::BadHandle,
    );
    let empty = mm::l1_entry(mm::window_va(W_MAP)).map_or(0, |e| e.maddr);
    check_status(
        "unmap at a PTE that no longer maps the frame",
        unmap(empty, 1),
        GrantStatus::GeneralError,
    );
    check_status(
        "unmap the read-only mapping",
        unmap(pte, 1),
        GrantStatus::Okay,
    );
    report::check_eq(
        "the entry is idle again",
        flags(G_RW),
        GtfFlags::PERMIT_ACCESS,
    );
    report::check(
        "a revocation now succeeds",
        revoke(G_RW),
        format_args!("flags {:?}", flags(G_RW)),
    );
    grant(G_RW, data.mfn, GtfFlags::PERMIT_ACCESS);
}

/// Unmaps `handle` with `host_addr` and `dev_bus_addr`; the status.
fn unmap_both(host_addr: u64, dev_bus_addr: u64, handle: u32) -> i16 {
    let mut op = GnttabUnmapGrantRef {
        host_addr,
        dev_bus_addr,
        handle,
        ..GnttabUnmapGrantRef::default()
    };
    let ret = hc::gnttab_unmap(core::slice::from_mut(&mut op));
    if ret != 0 {
        return i16::MIN;
    }
    op.status
}

/// Device mappings, alone and with a host mapping under one handle, and
/// host mappings of a page table.
fn device_maps(data: Frame) {
    let dev = map("device map", map_op(0, GntmapFlags::DEVICE_MAP, G_RW, ME));
    check_status("device map", dev.status, GrantStatus::Okay);
    same(
        "a device map's bus address is the frame's",
        dev.dev_bus_addr,
        data.maddr(),
    );
    report::check_eq(
        "a writable device map sets reading and writing",
        flags(G_RW),
        GtfFlags::PERMIT_ACCESS | GtfFlags::READING | GtfFlags::WRITING,
    );
    check_status(
        "unmap with another bus address",
        unmap_both(0, data.maddr() + 0x1000, dev.handle),
        GrantStatus::BadDevAddr,
    );
    check_status(
        "unmap the device map",
        unmap_both(0, data.maddr(), dev.handle),
        GrantStatus::Okay,
    );
    report::check_eq(
        "the entry is idle after it",
        flags(G_RW),
        GtfFlags::PERMIT_ACCESS,
    );

    let both = GntmapFlags::DEVICE_MAP | GntmapFlags::HOST_MAP | GntmapFlags::READONLY;
    let op = map(
        "device and host map",
        map_op(mm::window_va(W_MAP), both, G_RW, ME),
    );
    check_status(
        "device and host map, read-only",
        op.status,
        GrantStatus::Okay,
    );
    check_status(
        "unmap the host half",
        unmap_both(mm::window_va(W_MAP), 0, op.handle),
        GrantStatus::Okay,
    );
    report::check_eq(
        "the device half still reads",
        flags(G_RW),
        GtfFlags::PERMIT_ACCESS | GtfFlags::READING,
    );
    check_status(
        "unmap the device half",
        unmap_both(0, data.maddr(), op.handle),
        GrantStatus::Okay,
    );
    check_status(
        "the handle is gone with both halves",
        unmap_both(0, data.maddr(), op.handle),
        GrantStatus::BadHandle,
    );
    report::check_eq(
        "the entry is idle again",
        flags(G_RW),
        GtfFlags::PERMIT_ACCESS,
    );

    grant(G_PT, mm::boot_l4_mfn(), GtfFlags::PERMIT_ACCESS);
    let host = GntmapFlags::HOST_MAP;
    let w = map(
        "writable map of a page table",
        map_op(mm::window_va(W_MAP), host, G_PT, ME),
    );
    check_status(
        "a writable map of a page table",
        w.status,
        GrantStatus::GeneralError,
    );
    report::check_eq(
        "the refused map leaves the entry idle",
        flags(G_PT),
        GtfFlags::PERMIT_ACCESS,
    );
    let ro = host | GntmapFlags::READONLY;
    let r = map(
        "read-only map of a page table",
        map_op(mm::window_va(W_MAP), ro, G_PT, ME),
    );
    check_status(
        "a read-only map of a page table",
        r.status,
        GrantStatus::Okay,
    );
    check_status(
        "unmap it",
        unmap(mm::window_va(W_MAP), r.handle),
        GrantStatus::Okay,
    );
    revoke(G_PT);
}

/// Maps that fail, each with its status, leaving nothing behind.
fn map_refusals(data: Frame) {
    let host = GntmapFlags::HOST_MAP;
    let va = mm::window_va(W_SPARE);
    let cases: [(&str, GnttabMapGrantRef, GrantStatus); 7] = [
        (
            "map with neither host nor device",
            map_op(va, GntmapFlags::READONLY, G_RW, ME),
            GrantStatus::BadGntref,
        ),
        (
            "map naming DOMID_SELF",
            map_op(va, host, G_RW, SELF),
            GrantStatus::BadDomain,
        ),
        (
            "map of a domain that does not exist",
            map_op(va, host, G_RW, 0x7000),
            GrantStatus::BadDomain,
        ),
        (
            "map beyond the table",
            map_op(va, host, 5000, ME),
            GrantStatus::BadGntref,
        ),
        (
            "map of an entry not granted",
            map_op(va, host, G_FREE, ME),
            GrantStatus::GeneralError,
        ),
        (
            "map at an address without an L1 table",
            map_op(0x1000, host, G_RW, ME),
            GrantStatus::GeneralError,
        ),
        (
            "map at a misaligned PTE address",
            map_op(3, host | GntmapFlags::CONTAINS_PTE, G_RW, ME),
            GrantStatus::GeneralError,
        ),
    ];
    for (name, op, want) in cases {
        check_status(name, map(name, op).status, want);
    }
    grant(G_RO, data.mfn, GtfFlags::PERMIT_ACCESS | GtfFlags::READONLY);
    let op = map("map a read-only grant writable", map_op(va, host, G_RO, ME));
    check_status(
        "map a read-only grant writable",
        op.status,
        GrantStatus::GeneralError,
    );
    report::check_eq(
        "the refused entry keeps its flags",
        flags(G_RO),
        GtfFlags::PERMIT_ACCESS | GtfFlags::READONLY,
    );
    report::check_eq(
        "the mapped entry keeps its flags",
        flags(G_RW),
        GtfFlags::PERMIT_ACCESS | GtfFlags::READING | GtfFlags::WRITING,
    );
    revoke(G_RO);
}

/// `unmap_and_replace`: the mapping of window `W_SPARE` moves into the
/// grant mapping's place.
fn replace(spare: Frame) {
    let op = map(
        "map for replace",
        map_op(mm::window_va(W_MAP), GntmapFlags::HOST_MAP, G_RW, ME),
    );
    check_status("map for replace", op.status, GrantStatus::Okay);
    if !support::map_window(W_SPARE, spare.mfn, PTE_RW) {
        return;
    }
    let mut r = GnttabUnmapAndReplace {
        host_addr: mm::window_va(W_MAP),
        new_addr: mm::window_va(W_SPARE),
        handle: op.handle,
        ..GnttabUnmapAndReplace::default()
    };
    let ret = hc::gnttab_unmap_and_replace(core::slice::from_mut(&mut r));
    report::check_ret("unmap_and_replace returns 0", ret, 0);
    check_status("unmap_and_replace", r.status, GrantStatus::Okay);
    same(
        "the grant's address now maps the other frame",
        window_pte(W_MAP),
        spare.maddr() | 3,
    );
    report::check_eq("the other address is empty", window_pte(W_SPARE), 0);
    report::check_eq("the entry is idle", flags(G_RW), GtfFlags::PERMIT_ACCESS);
    mm::unmap_window(W_MAP);
}

fn copy_op(src: (u64, u16, u16), dst: (u64, u16, u16), len: u16, flags: u16) -> GnttabCopy {
    GnttabCopy {
        source: GnttabCopyPtr {
            u: src.0,
            domid: src.1,
            offset: src.2,
            pad: 0,
        },
        dest: GnttabCopyPtr {
            u: dst.0,
            domid: dst.1,
            offset: dst.2,
            pad: 0,
        },
        len,
        flags,
        ..GnttabCopy::default()
    }
}

fn copy(name: &str, mut op: GnttabCopy) -> i16 {
    let ret = hc::gnttab_copy(core::slice::from_mut(&mut op));
    report::check_ret(format_args!("{name}: the call returns 0"), ret, 0);
    op.status
}

/// `copy` both ways and its refusals.
fn copies(data: Frame, own: Frame) {
    let from_grant = copy_op(
        (u64::from(G_RW), SELF, 8),
        (own.mfn, SELF, 100),
        16,
        GNTCOPY_SOURCE_GREF,
    );
    check_status(
        "copy from a grant to an own frame",
        copy("copy from a grant", from_grant),
        GrantStatus::Okay,
    );
    let mut bytes = [0u8; 16];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = mm::window_read_u8(W_OWN, 100 + i as u64);
    }
    let mut want = [0u8; 16];
    want[..8].copy_from_slice(&(PATTERN + 1).to_le_bytes());
    want[8..].copy_from_slice(&0x1234u64.to_le_bytes());
    report::check_eq("the copied bytes arrived", bytes, want);
    report::check_eq(
        "the source entry is idle after the copy",
        flags(G_RW),
        GtfFlags::PERMIT_ACCESS,
    );

    mm::window_write_bytes(W_OWN, 0, b"granted copy");
    let to_grant = copy_op(
        (own.mfn, SELF, 0),
        (u64::from(G_RW), SELF, 4000),
        12,
        GNTCOPY_DEST_GREF,
    );
    check_status(
        "copy from an own frame into a grant",
        copy("copy into a grant", to_grant),
        GrantStatus::Okay,
    );
    let got: [u8; 12] = core::array::from_fn(|i| mm::window_read_u8(W_DATA, 4000 + i as u64));
    report::check_eq("the bytes reached the granted frame", &got, b"granted copy");
    report::check_eq(
        "the destination entry is idle after the copy",
        flags(G_RW),
        GtfFlags::PERMIT_ACCESS,
    );

    let g = u64::from(G_RW);
    let foreign = support::foreign_mfn().unwrap_or(u64::MAX >> 12);
    let cases: [(&str, GnttabCopy, GrantStatus); 8] = [
        (
            "copy crossing the page end",
            copy_op(
                (g, SELF, 4000),
                (own.mfn, SELF, 0),
                200,
                GNTCOPY_SOURCE_GREF,
            ),
            GrantStatus::BadCopyArg,
        ),
        (
            "copy naming a frame with the own id",
            copy_op((g, SELF, 0), (own.mfn, ME, 0), 8, GNTCOPY_SOURCE_GREF),
            GrantStatus::PermissionDenied,
        ),
        (
            "copy from a domain that does not exist",
            copy_op((g, 0x7000, 0), (own.mfn, SELF, 0), 8, GNTCOPY_SOURCE_GREF),
            GrantStatus::BadDomain,
        ),
        (
            "copy into a frame the domain does not own",
            copy_op((g, SELF, 0), (foreign, SELF, 0), 8, GNTCOPY_SOURCE_GREF),
            GrantStatus::BadPage,
        ),
        (
            "copy from beyond the table",
            copy_op((5000, SELF, 0), (own.mfn, SELF, 0), 8, GNTCOPY_SOURCE_GREF),
            GrantStatus::BadGntref,
        ),
        (
            "copy from an entry not granted",
            copy_op(
                (u64::from(G_FREE), SELF, 0),
                (own.mfn, SELF, 0),
                8,
                GNTCOPY_SOURCE_GREF,
            ),
            GrantStatus::GeneralError,
        ),
        (
            "copy into the own L4 table",
            copy_op(
                (g, SELF, 0),
                (mm::boot_l4_mfn(), SELF, 0),
                8,
                GNTCOPY_SOURCE_GREF,
            ),
            GrantStatus::GeneralError,
        ),
        (
            "copy into a read-only grant",
            copy_op(
                (own.mfn, SELF, 0),
                (u64::from(G_RO), SELF, 0),
                8,
                GNTCOPY_DEST_GREF,
            ),
            GrantStatus::GeneralError,
        ),
    ];
    grant(G_RO, data.mfn, GtfFlags::PERMIT_ACCESS | GtfFlags::READONLY);
    for (name, op, want) in cases {
        check_status(name, copy(name, op), want);
    }
    report::check_eq(
        "no entry is left in use",
        (flags(G_RW), flags(G_RO)),
        (
            GtfFlags::PERMIT_ACCESS,
            GtfFlags::PERMIT_ACCESS | GtfFlags::READONLY,
        ),
    );
    revoke(G_RO);
}

/// `swap_grant_ref`.
fn swaps() {
    let swap = |a: u32, b: u32| {
        let mut op = GnttabSwapGrantRef {
            ref_a: a,
            ref_b: b,
            ..GnttabSwapGrantRef::default()
        };
        let ret = hc::gnttab_swap(core::slice::from_mut(&mut op));
        if ret == 0 { op.status } else { i16::MIN }
    };
    check_status("swap two entries", swap(G_RW, G_SWAP), GrantStatus::Okay);
    report::check_eq(
        "the entries changed places",
        (flags(G_RW), flags(G_SWAP)),
        (GtfFlags::empty(), GtfFlags::PERMIT_ACCESS),
    );
    check_status("swap back", swap(G_SWAP, G_RW), GrantStatus::Okay);
    check_status(
        "swap with an entry beyond the table",
        swap(G_RW, 5000),
        GrantStatus::BadGntref,
    );
    check_status(
        "swap an entry with itself",
        swap(G_RW, G_RW),
        GrantStatus::Okay,
    );
    let op = map(
        "map for swap",
        map_op(mm::window_va(W_MAP), GntmapFlags::HOST_MAP, G_RW, ME),
    );
    check_status("map for swap", op.status, GrantStatus::Okay);
    check_status(
        "swap of a mapped entry",
        swap(G_RW, G_SWAP),
        GrantStatus::Eagain,
    );
    check_status(
        "unmap after swap",
        unmap(mm::window_va(W_MAP), op.handle),
        GrantStatus::Okay,
    );
}

/// Versions, status frames and the call-level errors.
fn versions() {
    for (version, want) in [(1, 0), (2, Errno::ENOSYS.neg()), (3, Errno::EINVAL.neg())] {
        let mut op = GnttabSetVersion { version };
        report::check_ret(
            format_args!("set_version {version}"),
            hc::gnttab_set_version(&mut op),
            want,
        );
        report::check_eq(
            format_args!("set_version {version} reports version 1"),
            op.version,
            1,
        );
    }
    let mut g = GnttabGetVersion {
        dom: SELF,
        ..GnttabGetVersion::default()
    };
    report::check_ret("get_version returns 0", hc::gnttab_get_version(&mut g), 0);
    report::check_eq("get_version is 1", g.version, 1);
    g.dom = 0x7000;
    report::check_ret(
        "get_version of a domain that does not exist",
        hc::gnttab_get_version(&mut g),
        Errno::ESRCH.neg(),
    );
    let mut list = [0u64; 1];
    let mut f = GnttabGetStatusFrames {
        nr_frames: 0,
        dom: SELF,
        frame_list: list.as_mut_ptr() as u64,
        ..GnttabGetStatusFrames::default()
    };
    report::check_ret(
        "get_status_frames of none returns 0",
        hc::gnttab_get_status_frames(&mut f),
        0,
    );
    check_status("get_status_frames of none", f.status, GrantStatus::Okay);
    f.nr_frames = 1;
    hc::gnttab_get_status_frames(&mut f);
    check_status(
        "get_status_frames on a v1 table",
        f.status,
        GrantStatus::GeneralError,
    );
    f.dom = 0x7000;
    hc::gnttab_get_status_frames(&mut f);
    check_status(
        "get_status_frames of a domain that does not exist",
        f.status,
        GrantStatus::BadDomain,
    );
    // SAFETY: each raw call names `list` or nothing; the hypervisor
    // refuses them before reading.
    let calls = unsafe {
        [
            (
                "query_size with count 0 is EINVAL",
                hc::grant_table_op_raw(6, list.as_mut_ptr() as u64, 0),
                Errno::EINVAL,
            ),
            (
                "a command with continuation bits is EINVAL",
                hc::grant_table_op_raw(6 | (1 << 12), 0, 1),
                Errno::EINVAL,
            ),
            (
                "a negative count is EINVAL",
                hc::grant_table_op_raw(0, 0, 0x8000_0000),
                Errno::EINVAL,
            ),
            (
                "dump_table is ENOSYS",
                hc::grant_table_op_raw(3, 0, 1),
                Errno::ENOSYS,
            ),
            (
                "an unknown command is ENOSYS",
                hc::grant_table_op_raw(13, 0, 1),
                Errno::ENOSYS,
            ),
            (
                "a map array in the hypervisor's range is EFAULT",
                hc::grant_table_op_raw(0, 0xFFFF_8000_0000_0000, 1),
                Errno::EFAULT,
            ),
        ]
    };
    for (name, got, want) in calls {
        report::check_ret(name, got, want.neg());
    }
    let mut xatp = XenAddToPhysmap {
        domid: SELF,
        space: XENMAPSPACE_GRANT_TABLE,
        idx: 0,
        gpfn: 0x10_0000,
        ..XenAddToPhysmap::default()
    };
    // SAFETY: `xatp` is the structure `add_to_physmap` reads.
    let ret = unsafe {
        hc::memory_op_raw(
            MemoryOpCmd::AddToPhysmap as u64,
            core::ptr::from_mut(&mut xatp) as u64,
        )
    };
    report::check_ret(
        "add_to_physmap of a grant frame is EACCES for PV",
        ret,
        Errno::EACCES.neg(),
    );
}
