//! Page tables shared by two vCPUs (`dom0_max_vcpus=2`, two physical
//! CPUs): on Xen both run at once; on this hypervisor dom0's vCPUs take
//! turns on the boot CPU.
//!
//! `smp_mmu_update_shared`: both vCPUs hammer one pinned L1 table with
//! `mmu_update` batches at once, each its own entries, all of them
//! mapping the same four frames, writable on alternate rounds (so that
//! both change the frames' writable type counts), read-only otherwise.
//! Checks: every batch succeeds whole; the final table holds exactly the
//! last round's entries; a frame still mapped writable cannot be pinned
//! as an L1 table, and once every writable mapping is gone it can (no
//! type reference was lost or left behind).
//!
//! `smp_remote_flush`: vCPU 1 keeps reading a window (so its TLB holds the
//! translation) while vCPU 0 points the window at the other of two frames
//! and flushes vCPU 1 with each way the ABI has: `update_va_mapping` with
//! `UVMF_ALL` or `UVMF_MULTI` (full or one page), or an update without a
//! flush followed by `MMUEXT_TLB_FLUSH_MULTI`, `INVLPG_MULTI`,
//! `TLB_FLUSH_ALL` or `INVLPG_ALL`. Only after the flush returned does
//! vCPU 0 publish the flip; vCPU 1, on seeing it, must read the new
//! frame's marker, never the old one's.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use guest_pv_shim::dom0_abi::Errno;
use guest_pv_shim::dom0_abi::mmu::{
    MmuUpdate, MmuUpdateCmd, MmuextCmd, PTE_ADDR_MASK, PteFlags, UvmfFlags,
};
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::hypercall::{self as hc, FOREIGNDOM_SELF};
use guest_pv_shim::mm::{self, Frame, PTE_RO, PTE_RW};
use guest_pv_shim::report;

use crate::support;

/// Yields a vCPU waits for the other at most.
const WAIT: u32 = 400_000;
/// Rounds of map and unmap batches per vCPU.
const ROUNDS: u64 = 150;
/// Entries each vCPU maps per batch.
const ENTRIES: usize = 16;
/// The first entry of vCPU `v`'s run in the shared table.
const fn first_entry(v: usize) -> usize {
    v * 256
}
/// Frames the entries map (entry `i` maps frame `i % FRAMES`).
const FRAMES: usize = 4;
/// Window through which the shared table is read (read-only).
const TABLE_WINDOW: usize = 40;
/// Scratch window for preparing frames.
const PREP_WINDOW: usize = 41;
/// Window vCPU 1 reads in `smp_remote_flush`.
const FLIP_WINDOW: usize = 42;
/// Flips in `smp_remote_flush`.
const FLIPS: u64 = 160;
/// The word at offset 0 of flip frame `k`.
const fn marker(k: u64) -> u64 {
    0x5EED_0000 + k
}

/// The shared L1 table's machine address.
static TABLE: AtomicU64 = AtomicU64::new(0);
/// The frames the entries map.
static DATA: [AtomicU64; FRAMES] = [const { AtomicU64::new(0) }; FRAMES];
/// vCPU 1 is ready; both may start.
static READY: AtomicBool = AtomicBool::new(false);
static GO: AtomicBool = AtomicBool::new(false);
/// vCPU 1 is done.
static DONE: AtomicBool = AtomicBool::new(false);
/// Per vCPU: batches that did not succeed whole, and the first result
/// (as its two's complement).
static FAILED: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];
static FIRST_FAILURE: [AtomicU64; 2] = [const { AtomicU64::new(0) }; 2];

/// The flags entry `i` of vCPU `v` gets in round `round`.
const fn flags(v: usize, round: u64) -> u64 {
    if (round + v as u64).is_multiple_of(2) {
        PTE_RW
    } else {
        PTE_RO
    }
}

/// One batch of vCPU `v`: its entries mapped with `flags` (0: unmapped).
/// Counts a failure unless every request was done.
fn batch(v: usize, map: Option<u64>) {
    let table = TABLE.load(Ordering::Acquire);
    let reqs: [MmuUpdate; ENTRIES] = core::array::from_fn(|i| {
        let val = map.map_or(0, |flags| {
            (DATA[i % FRAMES].load(Ordering::Acquire) << 12) | flags
        });
        MmuUpdate::new(
            MmuUpdateCmd::NormalPtUpdate,
            table + 8 * (first_entry(v) + i) as u64,
            val,
        )
    });
    let mut done = 0;
    // SAFETY: the table maps no memory of the running code (it is hooked
    // nowhere); only its entries change.
    let ret = unsafe { hc::mmu_update(&reqs, Some(&mut done), FOREIGNDOM_SELF) };
    if (ret != 0 || done as usize != ENTRIES) && FAILED[v].fetch_add(1, Ordering::AcqRel) == 0 {
        FIRST_FAILURE[v].store(ret.cast_unsigned(), Ordering::Release);
    }
}

/// vCPU `v`'s rounds; the last round's entries stay.
fn hammer(v: usize) {
    for round in 0..ROUNDS {
        batch(v, Some(flags(v, round)));
        batch(v, None);
    }
    batch(v, Some(flags(v, ROUNDS)));
}

/// vCPU 1 of `smp_mmu_update_shared`.
fn second_hammer(v: usize) {
    READY.store(true, Ordering::Release);
    support::yield_until(WAIT, || GO.load(Ordering::Acquire));
    hammer(v);
    DONE.store(true, Ordering::Release);
}

/// A scratch frame holding `words` at its start, mapped nowhere.
fn prepared(words: &[u64]) -> Option<Frame> {
    support::prepared_frame(PREP_WINDOW, words)
}

/// One `mmuext_op` for the domain itself.
fn ext(cmd: MmuextCmd, arg1: u64, arg2: u64) -> i64 {
    // SAFETY: pins and unpins scratch frames, or flushes TLBs.
    unsafe { hc::mmuext_one(cmd as u32, arg1, arg2) }
}

pub fn mmu_update_shared(_start_info: &'static StartInfo) {
    let Some(table) = prepared(&[]) else {
        return;
    };
    for slot in &DATA {
        let Some(f) = prepared(&[]) else {
            return;
        };
        slot.store(f.mfn, Ordering::Release);
    }
    if !report::check_ret(
        "PIN_L1_TABLE of the shared table",
        ext(MmuextCmd::PinL1Table, table.mfn, 0),
        0,
    ) {
        return;
    }
    TABLE.store(table.maddr(), Ordering::Release);
    if !support::start_vcpu(1, second_hammer) {
        return;
    }
    report::check(
        "vCPU 1 is ready",
        support::yield_until(WAIT, || READY.load(Ordering::Acquire)),
        format_args!("it never started"),
    );
    GO.store(true, Ordering::Release);
    hammer(0);
    report::check(
        "vCPU 1 finished its rounds",
        support::yield_until(WAIT, || DONE.load(Ordering::Acquire)),
        format_args!("it did not within {WAIT} yields"),
    );
    for v in 0..2 {
        report::check_eq(
            format_args!(
                "vCPU {v}: batches not done whole (first result {:#x})",
                FIRST_FAILURE[v].load(Ordering::Acquire)
            ),
            FAILED[v].load(Ordering::Acquire),
            0,
        );
    }
    if !support::map_window(TABLE_WINDOW, table.mfn, PTE_RO) {
        return;
    }
    let mut wrong = 0;
    for e in 0..512usize {
        let want = (0..2)
            .find(|&v| (first_entry(v)..first_entry(v) + ENTRIES).contains(&e))
            .map_or(0, |v| {
                let i = e - first_entry(v);
                (DATA[i % FRAMES].load(Ordering::Acquire) << 12) | flags(v, ROUNDS)
            });
        let mask = PTE_ADDR_MASK | PteFlags::PRESENT.bits() | PteFlags::RW.bits();
        if mm::window_read(TABLE_WINDOW, e as u64) & mask != want & mask {
            wrong += 1;
        }
    }
    report::check_eq(
        "entries of the final table not as the last round left them",
        wrong,
        0,
    );
    mm::unmap_window(TABLE_WINDOW);
    // vCPU 0's last round mapped the frames writable (ROUNDS is even).
    let first = DATA[0].load(Ordering::Acquire);
    report::check_ret(
        "PIN_L1_TABLE of a frame still mapped writable is EINVAL",
        ext(MmuextCmd::PinL1Table, first, 0),
        Errno::EINVAL.neg(),
    );
    batch(0, None);
    report::check_ret(
        "PIN_L1_TABLE once its writable mappings are gone",
        ext(MmuextCmd::PinL1Table, first, 0),
        0,
    );
    report::check_ret(
        "UNPIN_TABLE of that frame",
        ext(MmuextCmd::UnpinTable, first, 0),
        0,
    );
    batch(1, None);
    report::check_ret(
        "UNPIN_TABLE of the shared table",
        ext(MmuextCmd::UnpinTable, table.mfn, 0),
        0,
    );
}

/// The flip vCPU 0 published last.
static GEN: AtomicU64 = AtomicU64::new(0);
/// The flip vCPU 1 saw last.
static ACK: AtomicU64 = AtomicU64::new(0);
/// Reads after a flip that found the old frame's marker (or another).
static STALE: AtomicU64 = AtomicU64::new(0);
static FIRST_STALE: AtomicU64 = AtomicU64::new(0);
/// Ends vCPU 1's loop.
static STOP: AtomicBool = AtomicBool::new(false);

/// vCPU 1 of `smp_remote_flush`: reads the window over and over; after
/// each flip, it must find the new frame's marker.
fn reader(_v: usize) {
    let mut seen = 0;
    let mut idle = 0u32;
    while !STOP.load(Ordering::Acquire) {
        // Keeps the window's translation in this CPU's TLB.
        let _ = mm::window_read(FLIP_WINDOW, 0);
        let flip = GEN.load(Ordering::Acquire);
        if flip != seen {
            let got = mm::window_read(FLIP_WINDOW, 0);
            if got != marker(flip % 2) && STALE.fetch_add(1, Ordering::AcqRel) == 0 {
                FIRST_STALE.store(flip << 32 | (got & 0xFFFF_FFFF), Ordering::Release);
            }
            seen = flip;
            ACK.store(flip, Ordering::Release);
            idle = 0;
        } else {
            idle += 1;
            if idle.is_multiple_of(4096) {
                hc::sched_yield();
            }
        }
    }
}

/// Points the flip window at `frame` and flushes vCPU 1 the way `flip`
/// selects; the first failing result, or 0.
fn flip_to(flip: u64, frame: u64, pte_maddr: u64) -> i64 {
    let va = mm::window_va(FLIP_WINDOW);
    let pte = (frame << 12) | PTE_RO;
    let mask: u64 = 0b10;
    let multi = core::ptr::from_ref(&mask) as u64;
    let uvm = |flags: u64| {
        // SAFETY: the window holds no memory of the running code.
        unsafe { hc::update_va_mapping(va, pte, flags) }
    };
    let update = || {
        let req = MmuUpdate::new(MmuUpdateCmd::NormalPtUpdate, pte_maddr, pte);
        // SAFETY: as above: only the window's entry changes.
        unsafe { hc::mmu_update(core::slice::from_ref(&req), None, FOREIGNDOM_SELF) }
    };
    let then = |first: i64, second: i64| if first != 0 { first } else { second };
    match flip % 8 {
        0 => uvm((UvmfFlags::INVLPG | UvmfFlags::ALL).bits()),
        1 => uvm((UvmfFlags::TLB_FLUSH | UvmfFlags::ALL).bits()),
        2 => uvm(multi | UvmfFlags::INVLPG.bits()),
        3 => uvm(multi | UvmfFlags::TLB_FLUSH.bits()),
        4 => then(uvm(0), ext(MmuextCmd::TlbFlushMulti, 0, multi)),
        5 => then(update(), ext(MmuextCmd::InvlpgMulti, va, multi)),
        6 => then(update(), ext(MmuextCmd::TlbFlushAll, 0, 0)),
        _ => then(update(), ext(MmuextCmd::InvlpgAll, va, 0)),
    }
}

pub fn remote_flush(_start_info: &'static StartInfo) {
    let (Some(f0), Some(f1)) = (prepared(&[marker(0)]), prepared(&[marker(1)])) else {
        return;
    };
    let frames = [f0.mfn, f1.mfn];
    if !support::map_window(FLIP_WINDOW, f0.mfn, PTE_RO) {
        return;
    }
    let Some(pte) = mm::l1_entry(mm::window_va(FLIP_WINDOW)) else {
        report::error("flip window", format_args!("no L1 entry"));
        return;
    };
    if !support::start_vcpu(1, reader) {
        return;
    }
    let mut failed = 0;
    let mut first_failure = 0;
    let mut done = 0;
    for flip in 1..=FLIPS {
        if !support::yield_until(WAIT, || ACK.load(Ordering::Acquire) == flip - 1) {
            break;
        }
        let ret = flip_to(flip, frames[(flip % 2) as usize], pte.maddr);
        if ret != 0 {
            failed += 1;
            if first_failure == 0 {
                first_failure = ret;
            }
        }
        GEN.store(flip, Ordering::Release);
        done = flip;
    }
    let seen = support::yield_until(WAIT, || ACK.load(Ordering::Acquire) == done);
    STOP.store(true, Ordering::Release);
    report::check_eq("flips vCPU 1 saw", (done, seen), (FLIPS, true));
    report::check_eq(
        format_args!("flushes that failed (first result {first_failure})"),
        failed,
        0,
    );
    report::check_eq(
        format_args!(
            "reads after a flip that found the old frame (first: flip and word {:#x})",
            FIRST_STALE.load(Ordering::Acquire)
        ),
        STALE.load(Ordering::Acquire),
        0,
    );
    mm::unmap_window(FLIP_WINDOW);
}
