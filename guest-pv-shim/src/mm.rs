//! Page-table helpers for test guests: walking the guest's own tables,
//! pfn/mfn translation, scratch frames and mapping windows.
//!
//! The guest's bootstrap page tables are mapped read-only in the initial
//! mapping (`start_info.pt_base`, `nr_pt_frames` frames), so a walk reads
//! them directly. Tables the guest builds later are readable while a
//! window maps them.
//!
//! Invariants:
//! - Scratch frames come from the domain's own pseudo-physical frames that
//!   the initial mapping does not cover, handed out from the top
//!   (`nr_pages - 1` down) and never given back. They are unmapped when
//!   handed out, so they may take any page type.
//! - Windows are [`WINDOW_COUNT`] page-aligned pages of `.bss` that no Rust
//!   code uses except through this module. Remapping one (to a scratch
//!   frame, a table, shared memory) never affects other memory; their
//!   original frames are simply left unused.
//! - The statics here are only touched from vCPU 0's main flow, never
//!   from exception handlers or secondary vCPUs.

use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering, fence};

use dom0_abi::grant_table::{GnttabSetupTable, GtfFlags};
use dom0_abi::layout::{MACH2PHYS_VIRT_START, PAGE_SHIFT, PAGE_SIZE};
use dom0_abi::mmu::{PTE_ADDR_MASK, PteFlags, UvmfFlags};
use dom0_abi::types::DomId;

use crate::entry::{p2m_entry, start_info};
use crate::hypercall;
use crate::platform::VIRT_BASE;

/// Number of mapping windows (dom0 uses them all: see
/// `toolstack::xen`'s `*_WINDOW_BASE` for the first 56, and
/// `devices::MMIO_WINDOWS` for the rest).
pub const WINDOW_COUNT: usize = 72;

/// Present, writable, accessed, dirty: a normal data mapping.
pub const PTE_RW: u64 = PteFlags::PRESENT.bits()
    | PteFlags::RW.bits()
    | PteFlags::ACCESSED.bits()
    | PteFlags::DIRTY.bits();
/// Present, read-only, accessed: how page-table frames must be mapped.
pub const PTE_RO: u64 = PteFlags::PRESENT.bits() | PteFlags::ACCESSED.bits();
/// `UVMF_INVLPG`, local scope.
pub const UVMF_INVLPG: u64 = UvmfFlags::INVLPG.bits();

global_asm!(
    ".pushsection .bss.shim_windows, \"aw\", @nobits",
    ".balign 4096",
    ".globl shim_window_area",
    "shim_window_area:",
    ".space {size}",
    ".popsection",
    size = const WINDOW_COUNT * 4096,
);

unsafe extern "C" {
    /// The first window page (only its address is used).
    static shim_window_area: u8;
}

/// MFN each window maps now (0: unknown/unmapped by this module).
static WINDOW_MFN: [AtomicU64; WINDOW_COUNT] = [const { AtomicU64::new(0) }; WINDOW_COUNT];

/// Next scratch pfn to hand out, plus one (0: not started).
static NEXT_SCRATCH: AtomicU64 = AtomicU64::new(0);

/// Reads the `u64` at `va`, which must be mapped readable (one volatile
/// load; an unmapped `va` faults).
#[must_use]
pub fn read_mapped(va: u64) -> u64 {
    // SAFETY: callers only pass addresses of mapped, readable memory (the
    // M2P, the guest's own page tables, window pages they mapped). A
    // volatile read creates no reference.
    unsafe { (va as *const u64).read_volatile() }
}

/// `M2P[mfn]`: the pfn the machine frame backs (read from the read-only
/// M2P table the hypervisor maps at `MACH2PHYS_VIRT_START`).
#[must_use]
pub fn m2p(mfn: u64) -> u64 {
    read_mapped(MACH2PHYS_VIRT_START + mfn * 8)
}

/// The MFN of pseudo-physical frame `pfn` (from the p2m list).
#[must_use]
pub fn pfn_to_mfn(pfn: u64) -> Option<u64> {
    p2m_entry(start_info(), pfn)
}

/// The pfn of a virtual address of the initial mapping.
#[must_use]
pub fn virt_to_pfn(va: u64) -> Option<u64> {
    crate::platform::initial_mapping_pfn(va)
}

/// The MFN behind a virtual address of the initial mapping (by the p2m
/// list, not by walking).
#[must_use]
pub fn virt_to_mfn(va: u64) -> Option<u64> {
    pfn_to_mfn(virt_to_pfn(va)?)
}

/// The virtual address of `pfn` in the initial mapping (whether or not
/// the initial mapping reaches that far).
#[must_use]
pub const fn pfn_to_virt(pfn: u64) -> u64 {
    VIRT_BASE + (pfn << PAGE_SHIFT)
}

/// The pfn just past the bootstrap page tables: everything below it is
/// in the initial mapping.
fn boot_mapped_end_pfn() -> u64 {
    let si = start_info();
    virt_to_pfn(si.pt_base).unwrap_or(0) + si.nr_pt_frames
}

/// The virtual address of the L4 the guest booted on.
#[must_use]
pub fn boot_l4_va() -> u64 {
    start_info().pt_base
}

/// The MFN of the L4 the guest booted on.
#[must_use]
pub fn boot_l4_mfn() -> u64 {
    virt_to_mfn(boot_l4_va()).unwrap_or(0)
}

/// A readable virtual address of the page-table frame `mfn`: the initial
/// mapping for bootstrap frames, else a window that maps it.
#[must_use]
pub fn table_va(mfn: u64) -> Option<u64> {
    let pfn = m2p(mfn);
    if pfn < boot_mapped_end_pfn() && pfn_to_mfn(pfn) == Some(mfn) {
        return Some(pfn_to_virt(pfn));
    }
    WINDOW_MFN
        .iter()
        .position(|w| w.load(Ordering::Relaxed) == mfn)
        .map(window_va)
}

/// The entry at machine address `maddr` of a page-table frame readable
/// through [`table_va`].
#[must_use]
pub fn read_entry(maddr: u64) -> Option<u64> {
    let va = table_va(maddr >> PAGE_SHIFT)?;
    Some(read_mapped(va + (maddr & (PAGE_SIZE - 8))))
}

/// One page-table entry found by a walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Machine address of the entry.
    pub maddr: u64,
    /// Its value.
    pub value: u64,
}

impl Entry {
    /// Whether the entry is present.
    #[must_use]
    pub const fn present(&self) -> bool {
        self.value & PteFlags::PRESENT.bits() != 0
    }

    /// The MFN the entry points at.
    #[must_use]
    pub const fn mfn(&self) -> u64 {
        (self.value & PTE_ADDR_MASK) >> PAGE_SHIFT
    }
}

/// Index of `va` in its level-`level` table (1 = L1 ... 4 = L4).
#[must_use]
pub const fn table_index(va: u64, level: u32) -> u64 {
    (va >> (PAGE_SHIFT + 9 * (level - 1))) & 511
}

/// Walks the current (boot) tables for `va`: `[L4e, L3e, L2e, L1e]`, as
/// far as the entries are present and the tables readable.
#[must_use]
pub fn walk(va: u64) -> [Option<Entry>; 4] {
    walk_from(boot_l4_mfn(), va)
}

/// As [`walk`], from the L4 at `l4_mfn`.
#[must_use]
pub fn walk_from(l4_mfn: u64, va: u64) -> [Option<Entry>; 4] {
    let mut out = [None; 4];
    let mut table = l4_mfn;
    for (i, level) in [4u32, 3, 2, 1].into_iter().enumerate() {
        let Some(tva) = table_va(table) else {
            break;
        };
        let idx = table_index(va, level);
        let entry = Entry {
            maddr: (table << PAGE_SHIFT) + idx * 8,
            value: read_mapped(tva + idx * 8),
        };
        out[i] = Some(entry);
        if !entry.present() || entry.value & PteFlags::PAT_PSE.bits() != 0 {
            break;
        }
        table = entry.mfn();
    }
    out
}

/// The L1 entry that maps `va` in the boot tables, if its L1 exists.
#[must_use]
pub fn l1_entry(va: u64) -> Option<Entry> {
    walk(va)[3]
}

/// The address of window `slot`.
///
/// # Panics
/// If `slot >= WINDOW_COUNT`.
#[must_use]
pub fn window_va(slot: usize) -> u64 {
    assert!(slot < WINDOW_COUNT, "window {slot} out of range");
    core::ptr::addr_of!(shim_window_area) as u64 + slot as u64 * PAGE_SIZE
}

/// Maps window `slot` to machine frame `mfn` with PTE flags `flags`
/// (`update_va_mapping`, INVLPG). Returns the hypercall's result.
pub fn map_window(slot: usize, mfn: u64, flags: u64) -> i64 {
    let va = window_va(slot);
    // SAFETY: windows are used by no Rust code except through this module
    // (module invariant), so remapping one cannot affect memory the
    // running code relies on.
    let ret = unsafe { hypercall::update_va_mapping(va, (mfn << PAGE_SHIFT) | flags, UVMF_INVLPG) };
    if ret == 0 {
        WINDOW_MFN[slot].store(mfn, Ordering::Relaxed);
    }
    ret
}

/// Unmaps window `slot` (writes a zero PTE). Returns the result.
pub fn unmap_window(slot: usize) -> i64 {
    let va = window_va(slot);
    // SAFETY: as for `map_window`.
    let ret = unsafe { hypercall::update_va_mapping(va, 0, UVMF_INVLPG) };
    if ret == 0 {
        WINDOW_MFN[slot].store(0, Ordering::Relaxed);
    }
    ret
}

/// A scratch frame of the domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Its pseudo-physical frame number.
    pub pfn: u64,
    /// Its machine frame number.
    pub mfn: u64,
}

impl Frame {
    /// Its machine address.
    #[must_use]
    pub const fn maddr(&self) -> u64 {
        self.mfn << PAGE_SHIFT
    }
}

/// Hands out a scratch frame: a frame of the domain beyond the initial
/// mapping, not mapped anywhere. `None` when none is left.
pub fn alloc_frame() -> Option<Frame> {
    let si = start_info();
    let mut next = NEXT_SCRATCH.load(Ordering::Relaxed);
    if next == 0 {
        next = si.nr_pages;
    }
    while next > boot_mapped_end_pfn() {
        let pfn = next - 1;
        next = pfn;
        if l1_entry(pfn_to_virt(pfn)).is_some_and(|e| e.present()) {
            // Mapped by the initial mapping: every lower pfn is as well.
            break;
        }
        if let Some(mfn) = pfn_to_mfn(pfn) {
            NEXT_SCRATCH.store(next.max(1), Ordering::Relaxed);
            return Some(Frame { pfn, mfn });
        }
    }
    NEXT_SCRATCH.store(next.max(1), Ordering::Relaxed);
    None
}

/// Fills the frame that window `slot` maps with `words` (as `u64`s,
/// repeated from offset 0; the rest of the page is zeroed).
///
/// The window must map the frame writable.
pub fn fill_window(slot: usize, words: &[u64]) {
    let va = window_va(slot);
    for i in 0..(PAGE_SIZE / 8) {
        let v = usize::try_from(i)
            .ok()
            .and_then(|i| words.get(i))
            .copied()
            .unwrap_or(0);
        // SAFETY: the window is mapped writable by the caller's contract
        // (a write to a read-only window faults, which is the caller's
        // test), and no Rust code holds a reference into windows.
        unsafe { ((va + i * 8) as *mut u64).write_volatile(v) };
    }
}

/// Reads `u64` number `index` of the page window `slot` maps.
#[must_use]
pub fn window_read(slot: usize, index: u64) -> u64 {
    read_mapped(window_va(slot) + index * 8)
}

/// Writes `u64` number `index` of the page window `slot` maps (which must
/// be mapped writable).
pub fn window_write(slot: usize, index: u64, value: u64) {
    // SAFETY: as in `fill_window`.
    unsafe { ((window_va(slot) + index * 8) as *mut u64).write_volatile(value) };
}

/// Prepares `frame` as a page-table or descriptor frame: maps it writable
/// in window `slot`, writes `words` (zero-filled after), then unmaps the
/// window again so the frame has no writable mapping. Returns the first
/// failing hypercall result, or 0.
pub fn prepare_frame(slot: usize, frame: Frame, words: &[u64]) -> i64 {
    let ret = map_window(slot, frame.mfn, PTE_RW);
    if ret != 0 {
        return ret;
    }
    fill_window(slot, words);
    unmap_window(slot)
}

/// Maps window `slot` to machine frame `mfn` of domain `domid` with PTE
/// flags `flags` (`update_va_mapping_otherdomain`, INVLPG): how the
/// toolstack writes another domain's memory. Returns the result.
pub fn map_foreign_window(slot: usize, domid: u16, mfn: u64, flags: u64) -> i64 {
    let va = window_va(slot);
    // SAFETY: as for `map_window`: no Rust code uses window memory except
    // through this module.
    let ret = unsafe {
        hypercall::update_va_mapping_otherdomain(
            va,
            (mfn << PAGE_SHIFT) | flags,
            UVMF_INVLPG,
            u64::from(domid),
        )
    };
    // A foreign frame is never one of this domain's tables.
    WINDOW_MFN[slot].store(0, Ordering::Relaxed);
    ret
}

/// Maps window `slot` to machine frame `mfn` of domain `domid` the way
/// Linux's privcmd does: `mmu_update` of the window's own L1 entry with
/// `foreigndom` = `domid`, then a local INVLPG. Returns the `mmu_update`
/// result (`EFAULT` without a hypercall if the window's L1 entry cannot
/// be found).
pub fn map_foreign_window_mmu(slot: usize, domid: u16, mfn: u64, flags: u64) -> i64 {
    let va = window_va(slot);
    let Some(entry) = l1_entry(va) else {
        return dom0_abi::Errno::EFAULT.neg();
    };
    let req = dom0_abi::mmu::MmuUpdate::new(
        dom0_abi::mmu::MmuUpdateCmd::NormalPtUpdate,
        entry.maddr,
        (mfn << PAGE_SHIFT) | flags,
    );
    // SAFETY: the request rewrites only the L1 entry of a window, which no
    // Rust code uses except through this module.
    let ret = unsafe { hypercall::mmu_update(&[req], None, u64::from(domid)) };
    WINDOW_MFN[slot].store(0, Ordering::Relaxed);
    // SAFETY: a local TLB flush of the window's address changes no mapping.
    unsafe {
        hypercall::mmuext_one(dom0_abi::mmu::MmuextCmd::InvlpgLocal as u32, va, 0);
    }
    ret
}

/// A page shared with another domain (or the hypervisor), by the address
/// this domain maps it at: a window ([`MappedPage::window`]) or one of the
/// domain's own frames in the initial mapping ([`MappedPage::own_frame`],
/// e.g. the console ring). No Rust reference ever covers it: words are
/// single volatile accesses, byte runs one bulk copy behind a fence, so
/// the other side may change it at any time (a peer that breaks its ring
/// protocol only garbles bytes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MappedPage {
    va: u64,
}

impl MappedPage {
    /// The page window `slot` maps (the caller mapped it, writable for
    /// writes).
    ///
    /// # Panics
    /// If `slot >= WINDOW_COUNT`.
    #[must_use]
    pub fn window(slot: usize) -> MappedPage {
        MappedPage {
            va: window_va(slot),
        }
    }

    /// Machine frame `mfn` (a frame of the machine, as `start_info`
    /// names them: its M2P entry is read) where the initial mapping maps
    /// it, if it is one of this domain's frames and the initial mapping
    /// covers it (the builder puts the console and store rings there).
    #[must_use]
    pub fn own_frame(mfn: u64) -> Option<MappedPage> {
        let pfn = m2p(mfn);
        (pfn < boot_mapped_end_pfn() && pfn_to_mfn(pfn) == Some(mfn)).then(|| MappedPage {
            va: pfn_to_virt(pfn),
        })
    }

    /// The address it is mapped at.
    #[must_use]
    pub(crate) fn va(self) -> u64 {
        self.va
    }

    /// The page at `va`, which an earlier [`MappedPage`] returned from
    /// [`MappedPage::va`] and which is still mapped the same way.
    pub(crate) fn again(va: u64) -> MappedPage {
        MappedPage { va }
    }

    /// The start address and length of the part of `len` bytes from byte
    /// `offset` that lies inside the page.
    fn span(self, offset: usize, len: usize) -> (u64, usize) {
        let room = usize::try_from(PAGE_SIZE)
            .unwrap_or(0)
            .saturating_sub(offset);
        (self.va + offset as u64, len.min(room))
    }

    /// Copies `bytes` in from byte `offset` (bytes past the page are not
    /// written), then a release fence: the index that publishes them is
    /// written after it.
    pub fn write_bytes(self, offset: usize, bytes: &[u8]) {
        let (va, len) = self.span(offset, bytes.len());
        // SAFETY: the page is mapped writable (constructor contract) and
        // `span` keeps the range inside it; no Rust reference covers it.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), va as *mut u8, len) };
        fence(Ordering::Release);
    }

    /// Copies `out.len()` bytes from byte `offset` (bytes past the page
    /// are left as they are), after an acquire fence that keeps the copy
    /// behind the read of the index that published them.
    pub fn read_bytes(self, offset: usize, out: &mut [u8]) {
        let (va, len) = self.span(offset, out.len());
        fence(Ordering::Acquire);
        // SAFETY: the page is mapped readable and `span` keeps the range
        // inside it; no Rust reference covers it.
        unsafe { core::ptr::copy_nonoverlapping(va as *const u8, out.as_mut_ptr(), len) };
    }

    /// Reads byte `offset` (taken modulo the page).
    #[must_use]
    pub fn read_u8(self, offset: u64) -> u8 {
        // SAFETY: mapped readable, inside the page.
        unsafe { ((self.va + (offset & (PAGE_SIZE - 1))) as *const u8).read_volatile() }
    }

    /// Reads the little-endian `u32` at byte `offset` (4-aligned; taken
    /// modulo the page).
    #[must_use]
    pub fn read_u32(self, offset: u64) -> u32 {
        // SAFETY: mapped readable; aligned and inside the page.
        unsafe { ((self.va + (offset & (PAGE_SIZE - 4))) as *const u32).read_volatile() }
    }

    /// Writes the `u32` at byte `offset` (4-aligned; taken modulo the
    /// page).
    pub fn write_u32(self, offset: u64, value: u32) {
        // SAFETY: mapped writable; aligned and inside the page.
        unsafe { ((self.va + (offset & (PAGE_SIZE - 4))) as *mut u32).write_volatile(value) };
    }
}

/// Copies `bytes` into the page window `slot` maps, from byte `offset`
/// ([`MappedPage::write_bytes`]).
pub fn window_write_bytes(slot: usize, offset: usize, bytes: &[u8]) {
    MappedPage::window(slot).write_bytes(offset, bytes);
}

/// Copies `out.len()` bytes from byte `offset` of the page window `slot`
/// maps ([`MappedPage::read_bytes`]).
pub fn window_read_bytes(slot: usize, offset: usize, out: &mut [u8]) {
    MappedPage::window(slot).read_bytes(offset, out);
}

/// Reads byte `offset` of the page window `slot` maps.
#[must_use]
pub fn window_read_u8(slot: usize, offset: u64) -> u8 {
    MappedPage::window(slot).read_u8(offset)
}

/// Reads the little-endian `u32` at byte `offset` (4-aligned) of the page
/// window `slot` maps.
#[must_use]
pub fn window_read_u32(slot: usize, offset: u64) -> u32 {
    MappedPage::window(slot).read_u32(offset)
}

/// Writes the `u32` at byte `offset` (4-aligned) of the page window `slot`
/// maps (writable).
pub fn window_write_u32(slot: usize, offset: u64, value: u32) {
    MappedPage::window(slot).write_u32(offset, value);
}

/// Sets up this domain's grant table (one frame) and maps that frame
/// writable in `window`, for [`grant_access`].
///
/// # Errors
/// The step that failed and what it returned.
pub fn map_own_grant_table(window: usize) -> Result<(), (&'static str, i64)> {
    let mut frames = [0u64; 1];
    let mut setup = GnttabSetupTable {
        dom: DomId::SELF.0,
        nr_frames: 1,
        frame_list: frames.as_mut_ptr() as u64,
        ..GnttabSetupTable::default()
    };
    let ret = hypercall::gnttab_setup_table(&mut setup);
    if ret != 0 {
        return Err(("setup_table", ret));
    }
    if setup.status != 0 {
        return Err(("setup_table status", i64::from(setup.status)));
    }
    match map_window(window, frames[0], PTE_RW) {
        0 => Ok(()),
        ret => Err(("map grant table", ret)),
    }
}

/// Ends grant `gref` of the grant table mapped in `window` (its flags
/// cleared: the grantee can no longer map or copy it). Only for a grant
/// the grantee no longer uses.
pub fn end_grant_access(window: usize, gref: u32) {
    window_write_u32(window, u64::from(gref) * 8, 0);
}

/// Grants `frame` to `domid` (read-only if `readonly`) as entry `gref`
/// of the grant table mapped in `window`: the frame first, then the
/// flags that make the entry valid.
pub fn grant_access(window: usize, gref: u32, domid: u16, frame: u32, readonly: bool) {
    let at = u64::from(gref) * 8;
    window_write_u32(window, at + 4, frame);
    fence(Ordering::Release);
    let mut flags = GtfFlags::PERMIT_ACCESS;
    flags.set(GtfFlags::READONLY, readonly);
    window_write_u32(
        window,
        at,
        (u32::from(domid) << 16) | u32::from(flags.bits()),
    );
}

/// A page of this domain's own memory (page-aligned, in the initial
/// mapping) that a grant mapping may borrow ([`GrantOverPage`]): a
/// caller with no window to spare makes one, e.g. by leaking a `Box`.
#[repr(C, align(4096))]
#[derive(Debug)]
pub struct LendablePage(pub [u8; 4096]);

impl LendablePage {
    /// A zeroed page.
    #[must_use]
    pub const fn new() -> LendablePage {
        LendablePage([0; 4096])
    }
}

impl Default for LendablePage {
    fn default() -> Self {
        LendablePage::new()
    }
}

/// A grant of another domain mapped read-only (`GNTMAP_host_map`) at the
/// address of one of this domain's pages, which it borrows: the page's own
/// frame is unmapped first (so no stale translation survives), the grant
/// mapped there, and [`GrantOverPage::unmap`] maps the own frame back and
/// returns the page. While borrowed, the page is reached only through
/// [`GrantOverPage::read_bytes`]: no Rust reference covers it.
#[derive(Debug)]
pub struct GrantOverPage {
    page: core::ptr::NonNull<LendablePage>,
    /// The page's own frame.
    mfn: u64,
    handle: u32,
}

// SAFETY: the page is owned exclusively (borrowed for `'static`) and only
// read through `read_bytes`; nothing ties it to one CPU.
unsafe impl Send for GrantOverPage {}

/// Maps the page at `va` back to its own frame `mfn`, writable.
fn map_own(va: u64, mfn: u64) -> i64 {
    // SAFETY: `va` is a page this module borrowed exclusively
    // (`GrantOverPage`): no Rust code reaches it meanwhile, and mapping its
    // own frame back restores what the initial mapping had there.
    unsafe { hypercall::update_va_mapping(va, (mfn << PAGE_SHIFT) | PTE_RW, UVMF_INVLPG) }
}

impl GrantOverPage {
    /// Maps grant `gref` of `domid` read-only over `page`.
    ///
    /// # Errors
    /// The grant status (or the hypercall's result) if it could not be
    /// mapped, with the page back if its own frame could be mapped again
    /// (`None`: the page is lost).
    pub fn map(
        page: &'static mut LendablePage,
        domid: u16,
        gref: u32,
    ) -> Result<GrantOverPage, (Option<&'static mut LendablePage>, i64)> {
        let va = core::ptr::from_mut(page) as u64;
        let Some(mfn) = virt_to_mfn(va) else {
            return Err((Some(page), -1));
        };
        let page = core::ptr::NonNull::from(page);
        // SAFETY: the page is borrowed exclusively for `'static` and from
        // now on reached only through `page` (a raw pointer), so unmapping
        // it affects no reference.
        if unsafe { hypercall::update_va_mapping(va, 0, UVMF_INVLPG) } != 0 {
            // SAFETY: still mapped (the update failed), still ours.
            return Err((Some(unsafe { &mut *page.as_ptr() }), -1));
        }
        let mut op = dom0_abi::grant_table::GnttabMapGrantRef {
            host_addr: va,
            flags: (dom0_abi::grant_table::GntmapFlags::HOST_MAP
                | dom0_abi::grant_table::GntmapFlags::READONLY)
                .bits(),
            gref,
            dom: domid,
            ..Default::default()
        };
        let ret = hypercall::gnttab_map(core::slice::from_mut(&mut op));
        if ret == 0 && op.status == 0 {
            return Ok(GrantOverPage {
                page,
                mfn,
                handle: op.handle,
            });
        }
        let why = if ret == 0 { i64::from(op.status) } else { ret };
        let back = (map_own(va, mfn) == 0).then(|| {
            // SAFETY: its own frame is mapped again; the borrow was
            // exclusive and is handed back.
            unsafe { &mut *page.as_ptr() }
        });
        Err((back, why))
    }

    /// Copies `out.len()` bytes from byte `offset` of the granted page
    /// (bytes past the page are left as they are), after an acquire fence.
    pub fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        MappedPage {
            va: self.page.as_ptr() as u64,
        }
        .read_bytes(offset, out);
    }

    /// Unmaps the grant and maps the page's own frame back: the page.
    ///
    /// # Errors
    /// The unmap's status (or the hypercall's result), or the remap's
    /// result: the page is then lost (the grant may stay mapped).
    pub fn unmap(self) -> Result<&'static mut LendablePage, i64> {
        let va = self.page.as_ptr() as u64;
        let mut op = dom0_abi::grant_table::GnttabUnmapGrantRef {
            host_addr: va,
            handle: self.handle,
            ..Default::default()
        };
        let ret = hypercall::gnttab_unmap(core::slice::from_mut(&mut op));
        if ret != 0 || op.status != 0 {
            return Err(if ret == 0 { i64::from(op.status) } else { ret });
        }
        match map_own(va, self.mfn) {
            // SAFETY: its own frame is mapped again; the borrow was
            // exclusive and is handed back.
            0 => Ok(unsafe { &mut *self.page.as_ptr() }),
            ret => Err(ret),
        }
    }
}
