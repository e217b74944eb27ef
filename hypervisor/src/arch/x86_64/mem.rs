//! Machine memory at run time: the frame allocator, the heap, and the
//! hypervisor's own page tables.
use core::sync::atomic::AtomicU64;

use dom0_abi::types::Mfn;
use linked_list_allocator::LockedHeap;
use spin::Mutex;

use crate::layout::{
    DIRECTMAP_VIRT_START, HYPERVISOR_TEXT_START, MACH2PHYS_VIRT_START, PAGE_SIZE, STACK_SIZE,
};
use crate::mm::frame_alloc::FrameAllocator;
use crate::mm::frame_table::{FrameInfo, FrameTable};

use super::cpu::Features;
use super::paging::{self, NX, PAGE_BYTES, PageSize, RW, US};

/// Every free machine frame.
pub static FRAMES: Mutex<Option<FrameAllocator<'static>>> = Mutex::new(None);

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// Bytes of hypervisor heap for the machine itself (dom0's records, the
/// tables made at boot).
const HEAP_BASE_BYTES: usize = 1 << 20;
/// Bytes of heap per domain slot (`max_domains=`): a domain with one vCPU
/// holds about 6 KiB (its records, the vCPU's FPU area, its event
/// channels and grant table), logged as "held ... bytes of hypervisor
/// memory" when it is destroyed; the rest is room for more vCPUs.
const HEAP_BYTES_PER_DOMAIN: usize = 16 << 10;

/// Bytes of heap for a domain table of `max_domains` slots.
pub const fn heap_size(max_domains: usize) -> usize {
    HEAP_BASE_BYTES + max_domains * HEAP_BYTES_PER_DOMAIN
}

/// The physical range of the hypervisor image (from the linker script).
pub fn image_range() -> (u64, u64) {
    unsafe extern "C" {
        static __load_start_phys: u8;
        static __bss_end_phys: u8;
    }
    // The two symbols are absolute physical addresses, not objects.
    (
        core::ptr::addr_of!(__load_start_phys) as u64,
        core::ptr::addr_of!(__bss_end_phys) as u64,
    )
}

/// Physical address of an address inside the image.
pub fn image_to_phys(va: u64) -> u64 {
    va - HYPERVISOR_TEXT_START
}

/// Sets up the frame allocator over the free `usable` ranges, carving its
/// bitmap out of the first one (below 4 GiB, which the boot page tables
/// map) that has room.
pub fn init_frames(max_frame: u64, usable: &[(u64, u64)]) -> Result<(), &'static str> {
    let words = FrameAllocator::words_needed(max_frame);
    let bytes = (words * 8).next_multiple_of(PAGE_SIZE);
    let at = usable
        .iter()
        .map(|&(start, _)| start.next_multiple_of(PAGE_SIZE))
        .zip(usable.iter().map(|&(_, end)| end.min(1 << 32)))
        .find(|&(start, end)| start + bytes <= end)
        .map(|(start, _)| start)
        .ok_or("no room for the frame bitmap")?;
    let len = usize::try_from(words).map_err(|_| "frame bitmap too large")?;
    // SAFETY: [at, at + bytes) is free usable RAM below 4 GiB (mapped by the
    // boot tables and later by the direct map), and is excluded from the
    // allocator below so nothing else will own it.
    let storage =
        unsafe { core::slice::from_raw_parts_mut((DIRECTMAP_VIRT_START + at) as *mut u64, len) };
    let allocator = FrameAllocator::new(
        storage,
        max_frame,
        usable.iter().copied(),
        &[(at, at + bytes)],
    )
    .map_err(|_| "frame allocator refused its storage")?;
    *FRAMES.lock() = Some(allocator);
    Ok(())
}

/// A zeroed frame for the hypervisor's own use; running out while the
/// hypervisor sets itself up is fatal.
pub fn alloc_zeroed() -> u64 {
    let mfn = FRAMES
        .lock()
        .as_mut()
        .and_then(FrameAllocator::alloc)
        .expect("out of memory");
    let pa = mfn.maddr();
    // SAFETY: the frame was just allocated, so nothing else refers to it,
    // and the direct map covers all RAM.
    unsafe { core::ptr::write_bytes(paging::phys_to_virt(pa) as *mut u8, 0, PAGE_BYTES) };
    pa
}

/// Frames taken from the allocator for good to split large pages of the
/// direct map (a guest mapped a frame under them with other cache
/// attributes): the teardown check counts them as accounted for.
pub static DIRECT_MAP_TABLES: AtomicU64 = AtomicU64::new(0);

/// Allocates one frame without zeroing it (the caller overwrites it).
pub fn alloc_frame() -> Option<Mfn> {
    FRAMES.lock().as_mut().and_then(FrameAllocator::alloc)
}

/// Free and total frame counts.
pub fn frame_counts() -> (u64, u64) {
    FRAMES
        .lock()
        .as_ref()
        .map_or((0, 0), |f| (f.free_count(), f.total()))
}

/// Builds the hypervisor view's root table: the image with per-section
/// permissions, the direct map of `[0, direct_map_end)`, and one hypervisor
/// stack (returned: its top). Nothing here is global: none of it may linger
/// in the TLB once a guest view is loaded.
pub fn build_hypervisor_tables(features: &Features, direct_map_end: u64) -> (u64, u64) {
    unsafe extern "C" {
        static __text_start: u8;
        static __text_end: u8;
        static __rodata_start: u8;
        static __rodata_end: u8;
        static __data_start: u8;
        static __data_end: u8;
    }
    let root = alloc_zeroed();
    let mut alloc = alloc_zeroed;
    let nx = if features.nx { NX } else { 0 };
    let sections = [
        (
            core::ptr::addr_of!(__text_start),
            core::ptr::addr_of!(__text_end),
            0,
        ),
        (
            core::ptr::addr_of!(__rodata_start),
            core::ptr::addr_of!(__rodata_end),
            nx,
        ),
        (
            core::ptr::addr_of!(__data_start),
            core::ptr::addr_of!(__data_end),
            nx | RW,
        ),
    ];
    for (start, end, flags) in sections {
        let (start, end) = (start as u64, end as u64);
        // SAFETY: `root` is a new tree only this function uses.
        unsafe {
            paging::map_range_4k(
                root,
                start,
                image_to_phys(start),
                end - start,
                flags,
                &mut alloc,
            )
        };
    }
    let size = if features.page1gb {
        PageSize::Size1G
    } else {
        PageSize::Size2M
    };
    let mut pa = 0;
    while pa < direct_map_end {
        // SAFETY: as above.
        unsafe {
            paging::map(
                root,
                DIRECTMAP_VIRT_START + pa,
                pa,
                RW | nx,
                size,
                &mut alloc,
            )
        };
        pa += size.bytes();
    }
    let top = map_stack(root, 0, features);
    (root, top)
}

/// Maps CPU `cpu`'s hypervisor stack (`crate::smp::stack_top`), above its
/// unmapped guard page, into the tree under `root` (whose image slot every
/// CPU's root shares), and returns its top.
pub fn map_stack(root: u64, cpu: usize, features: &Features) -> u64 {
    let top = crate::smp::stack_top(cpu);
    let nx = if features.nx { NX } else { 0 };
    let mut alloc = alloc_zeroed;
    let mut va = top - STACK_SIZE;
    while va < top {
        let frame = alloc_zeroed();
        // SAFETY: `root` is a hypervisor root table; the stack's range lies
        // in the image slot, where nothing else is mapped at these
        // addresses (each CPU has its own range).
        unsafe { paging::map(root, va, frame, RW | nx, PageSize::Size4K, &mut alloc) };
        va += PAGE_SIZE;
    }
    top
}

/// The M2P: one contiguous run of frames, mapped read-only for everyone at
/// `MACH2PHYS_VIRT_START` and written by the hypervisor through the direct map.
struct M2p {
    base: u64,
    entries: u64,
}

static M2P: Mutex<M2p> = Mutex::new(M2p {
    base: 0,
    entries: 0,
});

/// Builds the M2P for `max_frame` machine frames (all entries
/// `mm::INVALID_M2P_ENTRY`, all ones) and
/// maps it read-only under `root`.
pub fn build_m2p(root: u64, max_frame: u64) {
    let pages = (max_frame * 8).div_ceil(PAGE_SIZE);
    let first = FRAMES
        .lock()
        .as_mut()
        .and_then(|f| f.alloc_contiguous(pages, 1))
        .expect("no contiguous memory for the M2P");
    let base = first.maddr();
    let bytes = usize::try_from(pages * PAGE_SIZE).expect("the M2P fits in the address space");
    // SAFETY: the frames were just allocated for the M2P alone.
    unsafe { core::ptr::write_bytes(paging::phys_to_virt(base) as *mut u8, 0xff, bytes) };
    let mut alloc = alloc_zeroed;
    for i in 0..pages {
        let va = MACH2PHYS_VIRT_START + i * PAGE_SIZE;
        // SAFETY: `root` is the hypervisor's tree under construction; slot
        // 256 holds only the M2P.
        unsafe {
            paging::map(
                root,
                va,
                base + i * PAGE_SIZE,
                US | NX,
                PageSize::Size4K,
                &mut alloc,
            )
        };
    }
    *M2P.lock() = M2p {
        base,
        entries: max_frame,
    };
}

/// The machine frame holding M2P entry `entry`, if the table has one.
pub fn m2p_frame(entry: u64) -> Option<Mfn> {
    let m2p = M2P.lock();
    (entry < m2p.entries).then(|| Mfn((m2p.base + entry * 8) >> 12))
}

/// The frame table: one record per machine frame below the top of RAM.
pub static FRAME_TABLE: Mutex<Option<&'static mut [FrameInfo]>> = Mutex::new(None);

/// The number of machine frames the frame table (and the direct map)
/// covers; 0 until [`init_frame_table`] ran.
static FRAME_COUNT: core::sync::atomic::AtomicU64 = core::sync::atomic::AtomicU64::new(0);

/// The number of machine frames the frame table and the direct map cover,
/// read without the frame table's lock.
pub fn frame_count() -> u64 {
    FRAME_COUNT.load(core::sync::atomic::Ordering::Relaxed)
}

/// Creates the frame table for `max_frame` frames: all unowned, except
/// frames that are not RAM (`is_ram` false: the first MiB, holes, firmware
/// and device ranges), which belong to DOMID_IO as on Xen, so that a
/// privileged domain may map them and nobody may use them as memory.
pub fn init_frame_table(max_frame: u64, is_ram: impl Fn(u64) -> bool) {
    let bytes = max_frame * core::mem::size_of::<FrameInfo>() as u64;
    let pages = bytes.div_ceil(PAGE_SIZE);
    let first = FRAMES
        .lock()
        .as_mut()
        .and_then(|f| f.alloc_contiguous(pages, 1))
        .expect("no contiguous memory for the frame table");
    let base = paging::phys_to_virt(first.maddr());
    let len = usize::try_from(max_frame).expect("frame count fits in usize");
    // SAFETY: the frames were just allocated for the table alone and the
    // direct map covers them; zeroing them makes every record a valid
    // `FrameInfo` (all-zero is "unowned, no references", and 0 is
    // `PageType::None`, the only enum field).
    let table = unsafe {
        core::ptr::write_bytes(base as *mut FrameInfo, 0, len);
        core::slice::from_raw_parts_mut(base as *mut FrameInfo, len)
    };
    let mut frames = FrameTable::new(table);
    for mfn in (0..max_frame).filter(|&m| !is_ram(m)) {
        frames
            .assign_io(Mfn(mfn))
            .expect("a fresh frame table accepts DOMID_IO frames");
    }
    // SAFETY: as above; `frames` only borrowed the slice for the set-up.
    let table = unsafe { core::slice::from_raw_parts_mut(base as *mut FrameInfo, len) };
    *FRAME_TABLE.lock() = Some(table);
    FRAME_COUNT.store(max_frame, core::sync::atomic::Ordering::Relaxed);
}

/// Records that machine frame `mfn` holds pseudo-physical page `pfn`.
pub fn set_m2p(mfn: u64, pfn: u64) {
    let m2p = M2P.lock();
    assert!(
        mfn < m2p.entries,
        "M2P update for frame {mfn:#x} beyond the table"
    );
    // SAFETY: the entry lies inside the M2P frames, which only this module
    // writes, through the direct map.
    unsafe { (paging::phys_to_virt(m2p.base + mfn * 8) as *mut u64).write(pfn) };
}

/// Bytes of the heap in use.
pub fn heap_used() -> u64 {
    HEAP.lock().used() as u64
}

/// Gives the heap its memory: [`heap_size`] of `max_domains`.
pub fn init_heap(max_domains: usize) {
    let bytes = heap_size(max_domains.clamp(1, crate::domain::MAX_DOMAINS));
    let pages = (bytes / PAGE_BYTES) as u64;
    let first = FRAMES
        .lock()
        .as_mut()
        .and_then(|f| f.alloc_contiguous(pages, 1))
        .expect("no contiguous memory for the heap");
    // SAFETY: the frames were just allocated for the heap alone and are
    // mapped by the direct map.
    unsafe {
        HEAP.lock()
            .init(paging::phys_to_virt(first.maddr()) as *mut u8, bytes)
    };
}
