//! Page-table update paths: `mmu_update` batches, `update_va_mapping`
//! with two flush types, and pinning an L1 table.
//!
//! The updates unmap and remap the guest's own scratch pages (512 pages of
//! `.bss`, each marked with a pattern at both ends): every sample writes
//! non-present entries, then the original ones again. Afterwards every
//! scratch page must be mapped with its pattern intact. The scratch pages
//! are only ever accessed through raw addresses, so unmapping them cannot
//! break a Rust reference.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use guest_pv_shim::dom0_abi::mmu::{
    MmuUpdate, MmuUpdateCmd, MmuextCmd, MmuextOp, PteFlags, UvmfFlags,
};
use guest_pv_shim::{mm, report};

use crate::guest::asm::{SCRATCH_PAGES, pin_table_va, scratch_va};
use crate::guest::harness::{Harness, Measured, NotRun, failed, not_run};
use crate::guest::hc;
use crate::guest::pagetable::PageTables;

/// Bytes per page.
const PAGE: u64 = 4096;

/// Marks scratch page `index` at its start (`!` of it at its end).
fn pattern(index: u64) -> u64 {
    0x5EED_0000_0000_0000 ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// The `mmu_update` request lists: unmap and remap of every scratch page.
struct Requests(UnsafeCell<[[MmuUpdate; SCRATCH_PAGES]; 2]>);

// SAFETY: the guest has one vCPU and no handler touches the lists; the
// only access is through `take_requests`, which hands out one exclusive
// reference for the guest's lifetime.
unsafe impl Sync for Requests {}

static REQUESTS: Requests = Requests(UnsafeCell::new(
    [[MmuUpdate { ptr: 0, val: 0 }; SCRATCH_PAGES]; 2],
));
static REQUESTS_TAKEN: AtomicBool = AtomicBool::new(false);

/// The request lists, once.
fn take_requests() -> &'static mut [[MmuUpdate; SCRATCH_PAGES]; 2] {
    assert!(
        !REQUESTS_TAKEN.swap(true, Ordering::Relaxed),
        "the mmu_update request lists are taken twice"
    );
    // SAFETY: the flag above makes this the only reference ever created.
    unsafe { &mut *REQUESTS.0.get() }
}

/// The scratch pages, marked, with their unmap and remap requests.
pub struct Scratch {
    requests: &'static mut [[MmuUpdate; SCRATCH_PAGES]; 2],
}

impl Scratch {
    /// Marks every scratch page and finds its L1 entry.
    ///
    /// # Errors
    /// `Failed` if a scratch page's L1 entry cannot be found.
    pub fn prepare(pt: &PageTables) -> Result<Scratch, NotRun> {
        let requests = take_requests();
        let base = scratch_va();
        for index in 0..SCRATCH_PAGES as u64 {
            let va = base + index * PAGE;
            // SAFETY: scratch page `index` is this image's `.bss`, mapped
            // read-write; nothing else uses it and no reference to it exists.
            unsafe {
                (va as *mut u64).write_volatile(pattern(index));
                ((va + PAGE - 8) as *mut u64).write_volatile(!pattern(index));
            }
            let Ok(pte) = pt.entry(va, 1) else {
                return Err(failed(
                    "scratch pages have L1 entries",
                    "a scratch page's L1 entry is not in the bootstrap tables",
                ));
            };
            let slot = usize::try_from(index).unwrap_or(usize::MAX);
            requests[0][slot] = MmuUpdate::new(MmuUpdateCmd::NormalPtUpdate, pte.maddr, 0);
            requests[1][slot] = MmuUpdate::new(MmuUpdateCmd::NormalPtUpdate, pte.maddr, pte.value);
        }
        Ok(Scratch { requests })
    }

    /// Maps every scratch page again (after a failure midway), ignoring
    /// errors: the check that follows reports what is still wrong.
    fn remap_all(&self) {
        let mut done = 0;
        // SAFETY: restores the original entries of pages no Rust object
        // lives in.
        let _ = unsafe { hc::mmu_update(&self.requests[1], &mut done) };
    }

    /// Whether every scratch page is mapped with its marks intact; prints
    /// the check.
    pub fn verify(&self, pt: &PageTables, after: &str) -> bool {
        let base = scratch_va();
        let intact = (0..SCRATCH_PAGES as u64).all(|index| {
            let va = base + index * PAGE;
            // SAFETY: reads two words of scratch page `index` only once its
            // L1 entry is present again (its own frame, as the request lists
            // restore exactly the original entry).
            pt.is_mapped(va)
                && unsafe {
                    (va as *const u64).read_volatile() == pattern(index)
                        && ((va + PAGE - 8) as *const u64).read_volatile() == !pattern(index)
                }
        });
        report::check(
            format_args!("scratch pages mapped and intact after {after}"),
            intact,
            format_args!("a scratch page is unmapped or its marks changed"),
        )
    }
}

/// `mmu_update_<n>`: `n` L1 entries per call, an unmap and a remap call
/// per sample.
pub fn mmu_update(
    h: &Harness,
    scratch: &Scratch,
    name: &str,
    n: usize,
) -> Result<Measured, NotRun> {
    let unmap = &scratch.requests[0][..n];
    let remap = &scratch.requests[1][..n];
    let mut done = 0;
    let timed = h.time(
        name,
        "mmu_update",
        || {
            // SAFETY: the requests change only scratch-page entries; no
            // Rust object lives in a scratch page.
            match unsafe { hc::mmu_update(unmap, &mut done) } {
                // SAFETY: as above.
                0 => unsafe { hc::mmu_update(remap, &mut done) },
                err => err,
            }
        },
        |ret| ret == 0,
    );
    if timed.is_err() {
        scratch.remap_all();
    } else if usize::try_from(done) != Ok(n) {
        return Err(failed(name, "mmu_update reported fewer entries done"));
    }
    timed
}

/// `update_va_mapping_*`: scratch page 0 unmapped and remapped, flushing
/// as `flags` says, two calls per sample.
pub fn update_va_mapping(
    h: &Harness,
    scratch: &Scratch,
    name: &str,
    flags: UvmfFlags,
) -> Result<Measured, NotRun> {
    let va = scratch_va();
    let original = scratch.requests[1][0].val;
    let flags = flags.bits();
    let timed = h.time(
        name,
        "update_va_mapping",
        || {
            // SAFETY: changes only scratch page 0's entry; no Rust object
            // lives there.
            match unsafe { hc::update_va_mapping(va, 0, flags) } {
                // SAFETY: as above.
                0 => unsafe { hc::update_va_mapping(va, original, flags) },
                err => err,
            }
        },
        |ret| ret == 0,
    );
    if timed.is_err() {
        scratch.remap_all();
    }
    timed
}

/// `ptwr_xchg`: scratch page 0's L1 entry, which the guest maps read-only,
/// exchanged with a non-present entry and back by two `xchg` stores,
/// each a page fault the hypervisor decodes and emulates (writable page
/// tables, which Xen and this hypervisor give dom0 without the assist).
pub fn ptwr_xchg(h: &Harness, scratch: &Scratch, name: &str) -> Result<Measured, NotRun> {
    let entry = scratch.requests[1][0];
    let Some(table) = mm::table_va(entry.ptr >> 12) else {
        return Err(failed(
            name,
            "scratch page 0's L1 table is not in the initial mapping",
        ));
    };
    let va = table + (entry.ptr & (PAGE - 1));
    let timed = h.time(
        name,
        "xchg",
        || {
            let mut value = 0u64;
            // SAFETY: `va` is scratch page 0's L1 entry, mapped read-only:
            // each store is emulated as a checked update of that entry (no
            // Rust object lives in the scratch page), the second putting
            // back what the first took out.
            unsafe {
                core::arch::asm!(
                    "xchg qword ptr [{a}], {v}",
                    "xchg qword ptr [{a}], {v}",
                    a = in(reg) va,
                    v = inout(reg) value,
                    options(nostack),
                );
            }
            if value == 0 { 0 } else { -1 }
        },
        |ret| ret == 0,
    );
    if timed.is_err() {
        scratch.remap_all();
    }
    timed
}

/// `mmuext_pin_unpin_l1`: an empty page, mapped read-only, pinned as an
/// L1 table and unpinned again, two calls per sample; then mapped
/// read-write again.
pub fn pin_unpin(h: &Harness, pt: &PageTables, name: &str) -> Result<Measured, NotRun> {
    let va = pin_table_va();
    let (Some(mfn), Ok(pte)) = (pt.mfn_of(va), pt.entry(va, 1)) else {
        return Err(failed(name, "the table page is not in the initial mapping"));
    };
    // SAFETY: the table page is this image's `.bss`, mapped read-write and
    // used by nothing else; an L1 table must start all zero (not present).
    unsafe { core::ptr::write_bytes(va as *mut u8, 0, 4096) };
    let read_only = pte.value & !PteFlags::RW.bits();
    // SAFETY: makes the unused table page read-only.
    let ret = unsafe { hc::update_va_mapping(va, read_only, UvmfFlags::INVLPG.bits()) };
    if ret != 0 {
        return Err(not_run(name, "update_va_mapping (read-only)", ret));
    }
    let pin = [MmuextOp {
        cmd: MmuextCmd::PinL1Table as u32,
        pad: 0,
        arg1: mfn,
        arg2: 0,
    }];
    let unpin = [MmuextOp {
        cmd: MmuextCmd::UnpinTable as u32,
        ..pin[0]
    }];
    let mut done = 0;
    let timed = h.time(
        name,
        "mmuext_op",
        || {
            // SAFETY: pins and unpins a table no page table refers to; the
            // running address space does not change.
            match unsafe { hc::mmuext_op(&pin, &mut done) } {
                // SAFETY: as above.
                0 => unsafe { hc::mmuext_op(&unpin, &mut done) },
                err => err,
            }
        },
        |ret| ret == 0,
    );
    // SAFETY: the page is unpinned (or was never pinned): map it
    // read-write again as it was.
    let ret = unsafe { hc::update_va_mapping(va, pte.value, UvmfFlags::INVLPG.bits()) };
    report::check_ret(
        "table page writable again after mmuext_pin_unpin_l1",
        ret,
        0,
    );
    timed
}
