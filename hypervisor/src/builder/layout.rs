//! The initial virtual layout of a 64-bit PV dom0, computed as Xen's dom0
//! builder does.
//!
//! One contiguous region starting at `VIRT_BASE` maps pseudo-physical
//! frames in order, so `VA = virt_base + pfn * 4096` for every page of it.
//! Elements are packed page-aligned in this order (Xen's `pv/dom0_build.c`
//! order for dom0; fact sheet §2.2):
//!
//! 1. the kernel, from `virt_base` (pages before `kstart` are populated too)
//!    to `kend` rounded up;
//! 2. the initrd, unless the kernel has `MOD_START_PFN` (then it is passed
//!    by PFN, placed after the initial allocation, and not mapped);
//! 3. the p2m list, 8 bytes per page of dom0, unless `INIT_P2M` puts it
//!    elsewhere;
//! 4. one page holding `start_info` followed by the dom0 VGA console info;
//! 5. the bootstrap page tables: one L4, then the L1, L2 and L3 tables that
//!    map the region, in Xen's allocation order (see
//!    [`Dom0Layout::page_tables`]); their number is found by Xen's search,
//!    because the tables map themselves;
//! 6. one boot-stack page;
//! 7. padding: the end is rounded up to 4 MiB with at least 512 KiB after
//!    the stack.
//!
//! All arithmetic is checked: a layout that would overflow, reach the
//! hypervisor's reserved L4 slots 256-271, leave the canonical half it starts
//! in, or not fit in dom0's memory is an error, never a wrapped address.
//!
//! Xen's size rule is kept as is: the mapped region (initrd pages excepted)
//! is allocated as one power-of-two block, and that block plus the initrd
//! must fit in `nr_pages` (Xen panics "Domain 0 allocation is too small for
//! kernel image").
#![forbid(unsafe_code)]

use core::fmt;

use dom0_abi::start_info::StartInfo;

use crate::cmdline::{Dom0Mem, Dom0Pages};
use crate::layout::{HYPERVISOR_VIRT_END, HYPERVISOR_VIRT_START, PAGE_SIZE};
use crate::loader::GuestImageInfo;

const L2_SHIFT: u32 = 21;
const L3_SHIFT: u32 = 30;
const L4_SHIFT: u32 = 39;
/// log2 of the 2 MiB chunks under one L3 entry (1 GiB).
const L2_PER_L3_SHIFT: u32 = L3_SHIFT - L2_SHIFT;
/// log2 of the 2 MiB chunks under one L4 entry (512 GiB).
const L2_PER_L4_SHIFT: u32 = L4_SHIFT - L2_SHIFT;
const SUPERPAGE_4M: u64 = 4 << 20;
const MIN_PADDING: u64 = 512 << 10;
/// End of the lower canonical half (exclusive).
const LOWER_HALF_END: u64 = 0x0000_8000_0000_0000;

// `start_info` gets one page of the initial mapping to itself.
const _: () = assert!(size_of::<StartInfo>() as u64 <= PAGE_SIZE);

/// The parts of a kernel image the layout depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageBounds {
    /// `VIRT_BASE`.
    pub virt_base: u64,
    /// First VA of the kernel.
    pub kstart: u64,
    /// End VA (exclusive) of the kernel.
    pub kend: u64,
    /// Entry point VA.
    pub entry: u64,
    /// `HYPERCALL_PAGE` VA, if any.
    pub hypercall_page: Option<u64>,
    /// `INIT_P2M` VA, if any.
    pub init_p2m: Option<u64>,
    /// `MOD_START_PFN`: the initrd is not mapped.
    pub mod_start_pfn: bool,
}

impl From<&GuestImageInfo<'_>> for ImageBounds {
    fn from(info: &GuestImageInfo<'_>) -> Self {
        ImageBounds {
            virt_base: info.virt_base,
            kstart: info.kstart,
            kend: info.kend,
            entry: info.entry,
            hypercall_page: info.hypercall_page,
            init_p2m: info.init_p2m,
            mod_start_pfn: info.mod_start_pfn,
        }
    }
}

/// Why no layout could be made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// `VIRT_BASE` is not page-aligned.
    MisalignedVirtBase(u64),
    /// An address computation overflowed.
    Overflow(&'static str),
    /// dom0 has too few pages for its initial mapping.
    TooSmall {
        /// Pages Xen's rule needs (power-of-two block plus initrd).
        needed: u64,
        /// Pages dom0 has.
        nr_pages: u64,
    },
    /// The initial mapping overlaps L4 slots 256-271.
    ReservedSlots {
        /// Start VA of the region.
        start: u64,
        /// End VA (exclusive).
        end: u64,
    },
    /// The initial mapping is not inside one canonical half.
    NonCanonical {
        /// Start VA of the region.
        start: u64,
        /// End VA (exclusive).
        end: u64,
    },
    /// `HYPERCALL_PAGE` is not a page-aligned page of the initial mapping.
    HypercallPage(u64),
    /// The `INIT_P2M` list overlaps the initial mapping or is not usable
    /// guest address space.
    BadInitP2m(u64),
}

impl fmt::Display for LayoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LayoutError::MisalignedVirtBase(va) => {
                write!(f, "dom0 VIRT_BASE {va:#x} is not page-aligned")
            }
            LayoutError::Overflow(what) => {
                write!(f, "dom0 layout: address overflow computing the {what}")
            }
            LayoutError::TooSmall { needed, nr_pages } => write!(
                f,
                "dom0_mem too small for the kernel image: the initial mapping needs \
                 {needed} pages, dom0 has {nr_pages}"
            ),
            LayoutError::ReservedSlots { start, end } => write!(
                f,
                "dom0 initial mapping {start:#x}-{end:#x} overlaps the hypervisor's \
                 reserved L4 slots 256-271"
            ),
            LayoutError::NonCanonical { start, end } => write!(
                f,
                "dom0 initial mapping {start:#x}-{end:#x} is not in one canonical half"
            ),
            LayoutError::HypercallPage(va) => write!(
                f,
                "HYPERCALL_PAGE {va:#x} is not a page-aligned page of the initial mapping"
            ),
            LayoutError::BadInitP2m(va) => write!(
                f,
                "INIT_P2M list at {va:#x} overlaps the initial mapping or unusable addresses"
            ),
        }
    }
}

/// A VA range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VaRange {
    /// First VA.
    pub start: u64,
    /// End VA (exclusive).
    pub end: u64,
}

impl VaRange {
    /// True when `va` lies in the range.
    pub fn contains(&self, va: u64) -> bool {
        (self.start..self.end).contains(&va)
    }

    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// True for an empty range.
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }
}

/// Where the initrd goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RamdiskPlacement {
    /// No initrd (length 0).
    None,
    /// Mapped at `va` (`start_info.mod_start` = `va`).
    Mapped {
        /// Its VA range (unrounded end).
        va: VaRange,
        /// Its first PFN.
        pfn: u64,
    },
    /// Not mapped; passed by PFN (`SIF_MOD_START_PFN`, `mod_start` = `pfn`).
    ByPfn {
        /// Its first PFN: right after the initial power-of-two block.
        pfn: u64,
    },
}

/// Where the p2m list lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct P2mPlacement {
    /// VA of the list (`start_info.mfn_list`).
    pub va: u64,
    /// Bytes: 8 per page of dom0.
    pub bytes: u64,
    /// True when it is part of the initial mapping; false with `INIT_P2M`,
    /// where the builder maps it separately.
    pub in_initial_mapping: bool,
}

/// What a page of the initial mapping holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageRole {
    /// The kernel image (and pages between `virt_base` and `kstart`).
    Kernel,
    /// The mapped initrd.
    Ramdisk,
    /// The p2m list.
    P2m,
    /// `start_info` and the console info.
    StartInfo,
    /// A bootstrap page table (mapped read-only).
    PageTable,
    /// The boot stack.
    Stack,
    /// Padding at the end.
    Padding,
}

/// A page of the initial mapping as the L1 entries must map it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MappedPage {
    /// The pseudo-physical frame mapped there.
    pub pfn: u64,
    /// A page-table page: its L1 entry has RW clear.
    pub is_page_table: bool,
}

/// One bootstrap page-table page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageTablePage {
    /// Level: 4 (the root, CR3), 3, 2 or 1.
    pub level: u8,
    /// Its pseudo-physical frame.
    pub pfn: u64,
    /// Its own VA in the initial mapping.
    pub va: u64,
    /// The part of the initial mapping translated through it.
    pub maps: VaRange,
}

/// dom0's initial virtual layout. See the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dom0Layout {
    /// Start of the mapping: `VIRT_BASE`, the VA of PFN 0.
    pub v_start: u64,
    /// End of the mapping (exclusive, 4 MiB aligned).
    pub v_end: u64,
    /// The kernel image `[kstart, kend)`.
    pub kernel: VaRange,
    /// Entry point VA (RIP at start).
    pub entry: u64,
    /// Where the initrd goes.
    pub ramdisk: RamdiskPlacement,
    /// Initrd length in bytes (`start_info.mod_len`).
    pub ramdisk_len: u64,
    /// Where the p2m list goes.
    pub p2m: P2mPlacement,
    /// VA of `start_info` (RSI at start): the first bytes of a page of its
    /// own, [`StartInfo`](dom0_abi::start_info::StartInfo) followed by room
    /// for the dom0 console info.
    pub start_info: u64,
    /// VA of the first page table, the L4 (`start_info.pt_base`).
    pub pt_base: u64,
    /// Number of page-table pages (`start_info.nr_pt_frames`).
    pub nr_pt_frames: u64,
    /// L3 tables among them.
    pub nr_l3: u64,
    /// L2 tables among them.
    pub nr_l2: u64,
    /// L1 tables among them.
    pub nr_l1: u64,
    /// VA of the boot-stack page.
    pub stack: u64,
    /// Initial RSP: the end of the boot-stack page.
    pub stack_top: u64,
    /// `HYPERCALL_PAGE` VA, checked to be a page of the mapping.
    pub hypercall_page: Option<u64>,
    /// Pages dom0 has (`start_info.nr_pages`).
    pub nr_pages: u64,
    /// Pages in the initial mapping, `(v_end - v_start) / 4096`.
    pub mapping_pages: u64,
    /// Xen's initial power-of-two allocation covering the mapping (initrd
    /// pages excepted).
    pub alloc_pages: u64,
}

impl Dom0Layout {
    /// Computes the layout for `image`, an initrd of `ramdisk_len` bytes and
    /// `nr_pages` pages of dom0 memory.
    pub fn compute(
        image: &ImageBounds,
        ramdisk_len: u64,
        nr_pages: u64,
    ) -> Result<Self, LayoutError> {
        let v_start = image.virt_base;
        if !v_start.is_multiple_of(PAGE_SIZE) {
            return Err(LayoutError::MisalignedVirtBase(v_start));
        }
        let kernel_end =
            round_up(image.kend, PAGE_SIZE).ok_or(LayoutError::Overflow("kernel end"))?;
        let ramdisk_mapped = ramdisk_len > 0 && !image.mod_start_pfn;
        let ramdisk_end = if ramdisk_mapped {
            kernel_end
                .checked_add(ramdisk_len)
                .ok_or(LayoutError::Overflow("initrd end"))?
        } else {
            kernel_end
        };
        let p2m_bytes = nr_pages
            .checked_mul(8)
            .ok_or(LayoutError::Overflow("p2m size"))?;
        let p2m_start = round_up(ramdisk_end, PAGE_SIZE).ok_or(LayoutError::Overflow("p2m"))?;
        let p2m_end = if image.init_p2m.is_some() {
            p2m_start
        } else {
            p2m_start
                .checked_add(p2m_bytes)
                .ok_or(LayoutError::Overflow("p2m end"))?
        };
        let start_info = round_up(p2m_end, PAGE_SIZE).ok_or(LayoutError::Overflow("start_info"))?;
        let pt_base = start_info
            .checked_add(PAGE_SIZE)
            .ok_or(LayoutError::Overflow("page tables"))?;
        let tables = size_page_tables(v_start, pt_base)?;

        let mapping_pages = (tables.v_end - v_start) / PAGE_SIZE;
        let ramdisk_pages = ramdisk_len.div_ceil(PAGE_SIZE);
        let mapped_ramdisk_pages = if ramdisk_mapped { ramdisk_pages } else { 0 };
        let alloc_pages = (mapping_pages - mapped_ramdisk_pages)
            .checked_next_power_of_two()
            .ok_or(LayoutError::Overflow("initial allocation"))?;
        let needed = alloc_pages
            .checked_add(ramdisk_pages)
            .ok_or(LayoutError::Overflow("initial allocation"))?;
        if needed > nr_pages {
            return Err(LayoutError::TooSmall { needed, nr_pages });
        }
        check_guest_range(v_start, tables.v_end)?;

        let ramdisk = if ramdisk_mapped {
            RamdiskPlacement::Mapped {
                va: VaRange {
                    start: kernel_end,
                    end: ramdisk_end,
                },
                pfn: (kernel_end - v_start) / PAGE_SIZE,
            }
        } else if ramdisk_len > 0 {
            RamdiskPlacement::ByPfn { pfn: alloc_pages }
        } else {
            RamdiskPlacement::None
        };
        let p2m = match image.init_p2m {
            Some(va) => {
                check_init_p2m(va, p2m_bytes, v_start, tables.v_end)?;
                P2mPlacement {
                    va,
                    bytes: p2m_bytes,
                    in_initial_mapping: false,
                }
            }
            None => P2mPlacement {
                va: p2m_start,
                bytes: p2m_bytes,
                in_initial_mapping: true,
            },
        };
        let layout = Dom0Layout {
            v_start,
            v_end: tables.v_end,
            kernel: VaRange {
                start: image.kstart,
                end: image.kend,
            },
            entry: image.entry,
            ramdisk,
            ramdisk_len,
            p2m,
            start_info,
            pt_base,
            nr_pt_frames: tables.nr_pt_frames,
            nr_l3: tables.nr_l3,
            nr_l2: tables.nr_l2,
            nr_l1: tables.nr_l1,
            stack: tables.stack,
            stack_top: tables.stack + PAGE_SIZE,
            hypercall_page: image.hypercall_page,
            nr_pages,
            mapping_pages,
            alloc_pages,
        };
        if let Some(va) = image.hypercall_page
            && (!va.is_multiple_of(PAGE_SIZE) || !layout.mapping().contains(va))
        {
            return Err(LayoutError::HypercallPage(va));
        }
        Ok(layout)
    }

    /// [`Dom0Layout::compute`] for a parsed kernel image.
    pub fn for_image(
        image: &GuestImageInfo<'_>,
        ramdisk_len: u64,
        nr_pages: u64,
    ) -> Result<Self, LayoutError> {
        Self::compute(&ImageBounds::from(image), ramdisk_len, nr_pages)
    }

    /// The whole initial mapping `[v_start, v_end)`.
    pub fn mapping(&self) -> VaRange {
        VaRange {
            start: self.v_start,
            end: self.v_end,
        }
    }

    /// The page-table pages' VA range.
    pub fn page_table_range(&self) -> VaRange {
        VaRange {
            start: self.pt_base,
            end: self.pt_base + self.nr_pt_frames * PAGE_SIZE,
        }
    }

    /// The PFN mapped at `va`, if `va` is in the initial mapping.
    pub fn va_to_pfn(&self, va: u64) -> Option<u64> {
        self.mapping()
            .contains(va)
            .then(|| (va - self.v_start) / PAGE_SIZE)
    }

    /// The VA of `pfn`, if that PFN is in the initial mapping.
    pub fn pfn_to_va(&self, pfn: u64) -> Option<u64> {
        (pfn < self.mapping_pages).then(|| self.v_start + pfn * PAGE_SIZE)
    }

    /// How the page containing `va` is mapped: its PFN and whether its L1
    /// entry must be read-only (page-table pages).
    pub fn page_at(&self, va: u64) -> Option<MappedPage> {
        let pfn = self.va_to_pfn(va)?;
        Some(MappedPage {
            pfn,
            is_page_table: self.page_table_range().contains(va),
        })
    }

    /// What the page at `va` holds, if it is in the initial mapping.
    pub fn role_at(&self, va: u64) -> Option<PageRole> {
        if !self.mapping().contains(va) {
            return None;
        }
        let page = va & !(PAGE_SIZE - 1);
        let role = if page < round_up(self.kernel.end, PAGE_SIZE)? {
            PageRole::Kernel
        } else if let RamdiskPlacement::Mapped { va: range, .. } = self.ramdisk
            && page < round_up(range.end, PAGE_SIZE)?
        {
            PageRole::Ramdisk
        } else if page < self.start_info {
            PageRole::P2m
        } else if page < self.pt_base {
            PageRole::StartInfo
        } else if page < self.stack {
            PageRole::PageTable
        } else if page < self.stack_top {
            PageRole::Stack
        } else {
            PageRole::Padding
        };
        Some(role)
    }

    /// `start_info.mod_start`, `mod_len` and whether `SIF_MOD_START_PFN` is
    /// set: the initrd's VA, or its PFN when passed unmapped; (0, 0, false)
    /// without an initrd.
    pub fn start_info_module(&self) -> (u64, u64, bool) {
        match self.ramdisk {
            RamdiskPlacement::None => (0, 0, false),
            RamdiskPlacement::Mapped { va, .. } => (va.start, self.ramdisk_len, false),
            RamdiskPlacement::ByPfn { pfn } => (pfn, self.ramdisk_len, true),
        }
    }

    /// The bootstrap page tables in Xen's allocation order: the L4 first,
    /// then, walking the mapping in 2 MiB steps, each new L1, followed by a
    /// new L2 when the step starts a new 1 GiB region (or is the first),
    /// followed by a new L3 when it starts a new 512 GiB region (or is the
    /// first). The i-th item sits at `pt_base + i * 4096`.
    pub fn page_tables(&self) -> PageTableIter {
        PageTableIter {
            layout: *self,
            index: 0,
            chunk: self.v_start >> L2_SHIFT,
            pending: [None; 2],
        }
    }

    /// The PFN of the level-`level` table that translates `va`, if `va` is
    /// in the initial mapping (constant time; agrees with
    /// [`Dom0Layout::page_tables`]).
    pub fn table_pfn(&self, level: u8, va: u64) -> Option<u64> {
        if !self.mapping().contains(va) {
            return None;
        }
        // Position of the L1 for 2 MiB chunk `chunk`: after the L4, the
        // earlier L1s, and every L2 (L3) whose first chunk comes earlier.
        let first = self.v_start >> L2_SHIFT;
        let started_before = |chunk: u64, shift: u32| {
            let region_first = (chunk >> shift << shift).max(first);
            (chunk >> shift) - (first >> shift) + u64::from(chunk != region_first)
        };
        let l1_index = |chunk: u64| {
            1 + (chunk - first)
                + started_before(chunk, L2_PER_L3_SHIFT)
                + started_before(chunk, L2_PER_L4_SHIFT)
        };
        let chunk = va >> L2_SHIFT;
        let index = match level {
            4 => 0,
            1 => l1_index(chunk),
            // A new L2 follows the L1 of the first chunk of its 1 GiB.
            2 => l1_index((chunk >> L2_PER_L3_SHIFT << L2_PER_L3_SHIFT).max(first)) + 1,
            // A new L3 follows that L1 and a new L2.
            3 => l1_index((chunk >> L2_PER_L4_SHIFT << L2_PER_L4_SHIFT).max(first)) + 2,
            _ => return None,
        };
        Some((self.pt_base - self.v_start) / PAGE_SIZE + index)
    }
}

/// Iterator over the bootstrap page tables; see [`Dom0Layout::page_tables`].
#[derive(Clone, Debug)]
pub struct PageTableIter {
    layout: Dom0Layout,
    index: u64,
    chunk: u64,
    pending: [Option<(u8, VaRange)>; 2],
}

impl PageTableIter {
    fn emit(&mut self, level: u8, maps: VaRange) -> PageTablePage {
        let va = self.layout.pt_base + self.index * PAGE_SIZE;
        self.index += 1;
        PageTablePage {
            level,
            pfn: (va - self.layout.v_start) / PAGE_SIZE,
            va,
            maps,
        }
    }

    /// The part of the mapping inside the aligned block of `1 << shift`
    /// bytes containing `va`.
    fn clamp(&self, va: u64, shift: u32) -> VaRange {
        let block = va >> shift << shift;
        let end = block.saturating_add((1 << shift) - 1).saturating_add(1);
        VaRange {
            start: block.max(self.layout.v_start),
            end: end.min(self.layout.v_end),
        }
    }
}

impl Iterator for PageTableIter {
    type Item = PageTablePage;

    fn next(&mut self) -> Option<PageTablePage> {
        if self.index == 0 {
            let maps = self.layout.mapping();
            return Some(self.emit(4, maps));
        }
        if let Some(slot) = self.pending.iter_mut().find(|p| p.is_some())
            && let Some((level, maps)) = slot.take()
        {
            return Some(self.emit(level, maps));
        }
        let va = self.chunk << L2_SHIFT;
        if va >= self.layout.v_end || self.chunk > (self.layout.v_end - 1) >> L2_SHIFT {
            return None;
        }
        let va = va.max(self.layout.v_start);
        let first = self.chunk == self.layout.v_start >> L2_SHIFT;
        self.chunk += 1;
        if first || va.is_multiple_of(1 << L3_SHIFT) {
            self.pending[0] = Some((2, self.clamp(va, L3_SHIFT)));
        }
        if first || va.is_multiple_of(1 << L4_SHIFT) {
            self.pending[1] = Some((3, self.clamp(va, L4_SHIFT)));
        }
        let maps = self.clamp(va, L2_SHIFT);
        Some(self.emit(1, maps))
    }
}

/// Result of Xen's page-table sizing search.
struct TableSizing {
    nr_pt_frames: u64,
    nr_l3: u64,
    nr_l2: u64,
    nr_l1: u64,
    stack: u64,
    v_end: u64,
}

/// Finds the smallest page-table count whose tables, stack and padding are
/// all mapped by those tables (Xen's search, starting at 2).
fn size_page_tables(v_start: u64, pt_base: u64) -> Result<TableSizing, LayoutError> {
    let overflow = LayoutError::Overflow("page tables");
    let mut nr_pt_frames = 2u64;
    loop {
        let stack = nr_pt_frames
            .checked_mul(PAGE_SIZE)
            .and_then(|bytes| pt_base.checked_add(bytes))
            .ok_or(overflow)?;
        let stack_end = stack.checked_add(PAGE_SIZE).ok_or(overflow)?;
        let mut v_end = round_up(stack_end, SUPERPAGE_4M).ok_or(overflow)?;
        if v_end - stack_end < MIN_PADDING {
            v_end = v_end.checked_add(SUPERPAGE_4M).ok_or(overflow)?;
        }
        let nr_l3 = tables_spanning(v_start, v_end, L4_SHIFT);
        let nr_l2 = tables_spanning(v_start, v_end, L3_SHIFT);
        let nr_l1 = tables_spanning(v_start, v_end, L2_SHIFT);
        if 1 + nr_l3 + nr_l2 + nr_l1 <= nr_pt_frames {
            return Ok(TableSizing {
                nr_pt_frames,
                nr_l3,
                nr_l2,
                nr_l1,
                stack,
                v_end,
            });
        }
        nr_pt_frames += 1;
    }
}

/// Number of aligned `1 << shift` blocks that `[start, end)` touches.
fn tables_spanning(start: u64, end: u64, shift: u32) -> u64 {
    let first = start >> shift;
    let last = (end - 1) >> shift;
    last - first + 1
}

/// The mapping must lie in one canonical half and avoid L4 slots 256-271.
fn check_guest_range(start: u64, end: u64) -> Result<(), LayoutError> {
    let last = end - 1;
    if start < HYPERVISOR_VIRT_END && end > HYPERVISOR_VIRT_START {
        return Err(LayoutError::ReservedSlots { start, end });
    }
    let lower = last < LOWER_HALF_END;
    let upper = start >= HYPERVISOR_VIRT_START;
    if !(lower || upper) {
        return Err(LayoutError::NonCanonical { start, end });
    }
    Ok(())
}

fn check_init_p2m(va: u64, bytes: u64, v_start: u64, v_end: u64) -> Result<(), LayoutError> {
    let end = va
        .checked_add(bytes.max(1))
        .ok_or(LayoutError::BadInitP2m(va))?;
    // Xen refuses a list touching the mapping, inclusive at both ends.
    if v_start <= end && va <= v_end {
        return Err(LayoutError::BadInitP2m(va));
    }
    check_guest_range(va, end).map_err(|_| LayoutError::BadInitP2m(va))
}

fn round_up(value: u64, align: u64) -> Option<u64> {
    value.checked_next_multiple_of(align)
}

/// dom0's page counts: [`Dom0Mem::resolve`] plus Xen's cut for kernels
/// without `INIT_P2M` when no exact size was given: the initial allocation
/// may use at most about half of the VA space between `virt_base` and the
/// top of the address space, because such kernels build their own tables
/// there (Xen prints "Dom0 memory clipped").
pub fn dom0_nr_pages(
    mem: &Dom0Mem,
    avail_pages: u64,
    image: &ImageBounds,
    ramdisk_len: u64,
) -> Dom0Pages {
    let mut pages = mem.resolve(avail_pages);
    let applies = image.init_p2m.is_none()
        && !mem.size.is_positive()
        && (!mem.min.is_positive() || pages.nr_pages > pages.min_pages);
    if !applies {
        return pages;
    }
    // Xen's computation in 64-bit modular arithmetic, wrap included.
    let vstart = image.virt_base;
    let mut vend = image.kend.wrapping_add(PAGE_SIZE - 1) & !(PAGE_SIZE - 1);
    if !image.mod_start_pfn {
        vend = vend.wrapping_add(ramdisk_len.wrapping_add(PAGE_SIZE - 1) & !(PAGE_SIZE - 1));
    }
    let mut end = vend.wrapping_add(pages.nr_pages.wrapping_mul(8));
    if end > vstart {
        end = end.wrapping_add(end - vstart);
    }
    if end <= vstart {
        pages.nr_pages = 0u64.wrapping_sub(vend) / 16;
        if mem.min.is_positive() && pages.nr_pages < pages.min_pages {
            pages.nr_pages = pages.min_pages;
        }
    }
    pages
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINUX_BASE: u64 = 0xFFFF_FFFF_8000_0000;
    const MIB: u64 = 1 << 20;

    fn linux_kernel() -> ImageBounds {
        // A 100 KiB kernel right after the unused first page.
        ImageBounds {
            virt_base: LINUX_BASE,
            kstart: LINUX_BASE + 0x1000,
            kend: LINUX_BASE + 0x1000 + 100 * 1024,
            entry: LINUX_BASE + 0x1000,
            hypercall_page: Some(LINUX_BASE + 0x2000),
            init_p2m: None,
            mod_start_pfn: false,
        }
    }

    fn xtf_kernel() -> ImageBounds {
        ImageBounds {
            virt_base: 0,
            kstart: MIB,
            kend: MIB + 0x6000,
            entry: MIB,
            hypercall_page: Some(MIB + 0x1000),
            init_p2m: None,
            mod_start_pfn: false,
        }
    }

    /// Checks the invariants every layout must have.
    fn check_invariants(l: &Dom0Layout) {
        assert_eq!(l.v_end % SUPERPAGE_4M, 0);
        assert!(l.v_end - l.stack_top >= MIN_PADDING);
        assert_eq!(l.stack, l.pt_base + l.nr_pt_frames * PAGE_SIZE);
        assert_eq!(l.pt_base, l.start_info + PAGE_SIZE);
        let tables: Vec<_> = l.page_tables().collect();
        assert_eq!(tables.len() as u64, l.nr_pt_frames);
        assert_eq!(tables.len() as u64, 1 + l.nr_l3 + l.nr_l2 + l.nr_l1);
        assert_eq!(tables[0].level, 4);
        assert_eq!(tables[0].va, l.pt_base);
        for (i, t) in tables.iter().enumerate() {
            assert_eq!(t.va, l.pt_base + i as u64 * PAGE_SIZE);
            assert_eq!(l.pfn_to_va(t.pfn), Some(t.va));
            assert!(l.page_at(t.va).unwrap().is_page_table);
            assert_eq!(l.role_at(t.va), Some(PageRole::PageTable));
            assert_eq!(l.table_pfn(t.level, t.maps.start), Some(t.pfn));
            assert_eq!(l.table_pfn(t.level, t.maps.end - 1), Some(t.pfn));
        }
        // Every page of the mapping is translated by exactly one table of
        // each level, so the builder can write every entry.
        let mut va = l.v_start;
        while va < l.v_end {
            for level in 1..=4 {
                let n = tables
                    .iter()
                    .filter(|t| t.level == level && t.maps.contains(va))
                    .count();
                assert_eq!(n, 1, "level {level} at {va:#x}");
            }
            va += 64 * PAGE_SIZE;
        }
        let last = l.v_end - PAGE_SIZE;
        assert_eq!(l.va_to_pfn(last), Some(l.mapping_pages - 1));
        assert!(!l.page_at(l.stack).unwrap().is_page_table);
        assert_eq!(l.role_at(l.stack), Some(PageRole::Stack));
        assert_eq!(l.role_at(l.start_info), Some(PageRole::StartInfo));
        assert_eq!(l.role_at(l.kernel.start), Some(PageRole::Kernel));
        assert_eq!(l.role_at(l.v_end), None);
        assert!(l.alloc_pages.is_power_of_two());
    }

    #[test]
    fn linux_style_kernel_with_64_mib() {
        let l = Dom0Layout::compute(&linux_kernel(), 0, 16384).unwrap();
        check_invariants(&l);
        // kernel: pages 0..26 (virt_base .. round_up(kend)).
        let kernel_end = LINUX_BASE + 0x1000 + 0x19000;
        assert_eq!(l.p2m.va, kernel_end);
        assert!(l.p2m.in_initial_mapping);
        assert_eq!(l.p2m.bytes, 16384 * 8);
        // 128 KiB of p2m = 32 pages.
        assert_eq!(l.start_info, kernel_end + 32 * PAGE_SIZE);
        assert_eq!(l.role_at(kernel_end), Some(PageRole::P2m));
        // Everything fits under one L3, one L2 and two L1s (4 MiB).
        assert_eq!((l.nr_l3, l.nr_l2, l.nr_l1), (1, 1, 2));
        assert_eq!(l.nr_pt_frames, 5);
        assert_eq!(l.v_end, LINUX_BASE + 4 * MIB);
        assert_eq!(l.mapping_pages, 1024);
        assert_eq!(l.alloc_pages, 1024);
        assert_eq!(l.stack_top, l.pt_base + 6 * PAGE_SIZE);
        assert_eq!(l.ramdisk, RamdiskPlacement::None);
        assert_eq!(l.start_info_module(), (0, 0, false));
        // Xen's allocation order: L4, L1 #0, L2, L3, L1 #1.
        let levels: Vec<u8> = l.page_tables().map(|t| t.level).collect();
        assert_eq!(levels, [4, 1, 2, 3, 1]);
        let tables: Vec<_> = l.page_tables().collect();
        assert_eq!(
            tables[1].maps,
            VaRange {
                start: LINUX_BASE,
                end: LINUX_BASE + 2 * MIB
            }
        );
        assert_eq!(
            tables[4].maps,
            VaRange {
                start: LINUX_BASE + 2 * MIB,
                end: l.v_end
            }
        );
        assert_eq!(l.table_pfn(1, LINUX_BASE + 3 * MIB), Some(tables[4].pfn));
        assert_eq!(l.table_pfn(3, LINUX_BASE), Some(tables[3].pfn));
        assert_eq!(l.table_pfn(4, LINUX_BASE), Some(tables[0].pfn));
        assert_eq!(l.table_pfn(1, l.v_end), None);
        assert_eq!(
            l.page_at(LINUX_BASE + 0x1234),
            Some(MappedPage {
                pfn: 1,
                is_page_table: false
            })
        );
    }

    #[test]
    fn xtf_style_kernel_at_one_mib() {
        let l = Dom0Layout::compute(&xtf_kernel(), 0, 8192).unwrap();
        check_invariants(&l);
        assert_eq!(l.v_start, 0);
        assert_eq!(l.p2m.va, MIB + 0x6000);
        assert_eq!(l.start_info, MIB + 0x6000 + 16 * PAGE_SIZE);
        assert_eq!(l.v_end, 4 * MIB);
        assert_eq!(l.page_at(MIB).unwrap().pfn, 256);
        assert_eq!(l.role_at(0), Some(PageRole::Kernel));
    }

    #[test]
    fn large_ramdisk_is_mapped_after_the_kernel() {
        let ramdisk = 300 * MIB + 123;
        let l = Dom0Layout::compute(&linux_kernel(), ramdisk, 262_144).unwrap();
        check_invariants(&l);
        let kernel_end = LINUX_BASE + 0x1a000;
        let RamdiskPlacement::Mapped { va, pfn } = l.ramdisk else {
            panic!("ramdisk not mapped: {:?}", l.ramdisk);
        };
        assert_eq!(
            va,
            VaRange {
                start: kernel_end,
                end: kernel_end + ramdisk
            }
        );
        assert_eq!(pfn, 0x1a);
        assert_eq!(l.start_info_module(), (kernel_end, ramdisk, false));
        assert_eq!(l.p2m.va, round_up(kernel_end + ramdisk, PAGE_SIZE).unwrap());
        assert_eq!(l.role_at(kernel_end + 100 * MIB), Some(PageRole::Ramdisk));
        // 300 MiB crosses 2 MiB boundaries many times: ~153 L1s.
        assert!(l.nr_l1 > 150);
        assert_eq!(l.nr_l2, 1);
        // The power-of-two block excludes the mapped ramdisk pages.
        let ramdisk_pages = ramdisk.div_ceil(PAGE_SIZE);
        assert_eq!(
            l.alloc_pages,
            (l.mapping_pages - ramdisk_pages).next_power_of_two()
        );
    }

    #[test]
    fn ramdisk_by_pfn_with_mod_start_pfn() {
        let mut image = linux_kernel();
        image.mod_start_pfn = true;
        let l = Dom0Layout::compute(&image, 10 * MIB, 16384).unwrap();
        check_invariants(&l);
        assert_eq!(l.ramdisk, RamdiskPlacement::ByPfn { pfn: l.alloc_pages });
        assert_eq!(l.start_info_module(), (1024, 10 * MIB, true));
        assert_eq!(l.p2m.va, LINUX_BASE + 0x1a000);
    }

    #[test]
    fn init_p2m_moves_the_list_out() {
        let mut image = linux_kernel();
        image.init_p2m = Some(0xFFFF_EA00_0000_0000);
        let l = Dom0Layout::compute(&image, 0, 16384).unwrap();
        check_invariants(&l);
        assert_eq!(
            l.p2m,
            P2mPlacement {
                va: 0xFFFF_EA00_0000_0000,
                bytes: 16384 * 8,
                in_initial_mapping: false
            }
        );
        assert_eq!(l.start_info, LINUX_BASE + 0x1a000);
        // Overlapping the mapping is refused.
        image.init_p2m = Some(LINUX_BASE + 4 * MIB);
        let err = Dom0Layout::compute(&image, 0, 16384).unwrap_err();
        assert!(err.to_string().contains("INIT_P2M"));
        image.init_p2m = Some(HYPERVISOR_VIRT_START + 0x1000);
        assert!(Dom0Layout::compute(&image, 0, 16384).is_err());
    }

    #[test]
    fn crossing_a_1_gib_boundary_adds_an_l2() {
        let image = ImageBounds {
            virt_base: 0x3FE0_0000,
            kstart: 0x3FE0_0000,
            kend: 0x3FF0_0000,
            entry: 0x3FE0_0000,
            hypercall_page: None,
            init_p2m: None,
            mod_start_pfn: false,
        };
        let l = Dom0Layout::compute(&image, 0, 65536).unwrap();
        check_invariants(&l);
        assert_eq!(l.nr_l2, 2);
        let levels: Vec<u8> = l.page_tables().map(|t| t.level).collect();
        assert_eq!(&levels[..5], [4, 1, 2, 3, 1]);
        assert_eq!(levels[5], 2);
        assert_eq!(levels.iter().filter(|&&x| x == 1).count() as u64, l.nr_l1);
    }

    #[test]
    fn crossing_a_512_gib_boundary_adds_an_l3() {
        let base = (1u64 << 39) - MIB;
        let image = ImageBounds {
            virt_base: base,
            kstart: base,
            kend: base + MIB / 2,
            entry: base,
            hypercall_page: None,
            init_p2m: None,
            mod_start_pfn: false,
        };
        let l = Dom0Layout::compute(&image, 0, 16384).unwrap();
        check_invariants(&l);
        assert_eq!((l.nr_l3, l.nr_l2), (2, 2));
    }

    #[test]
    fn table_count_search_matches_a_direct_count() {
        // Many sizes: the search result always equals the tables needed.
        for nr_pages in (1u64..200).map(|i| i * 4099) {
            for ramdisk in [0, 5 * MIB + 7] {
                let l = Dom0Layout::compute(&linux_kernel(), ramdisk, nr_pages.max(8192));
                if let Ok(l) = l {
                    check_invariants(&l);
                }
            }
        }
    }

    #[test]
    fn too_little_memory_names_dom0_mem() {
        let err = Dom0Layout::compute(&linux_kernel(), 0, 1000).unwrap_err();
        assert_eq!(
            err,
            LayoutError::TooSmall {
                needed: 1024,
                nr_pages: 1000
            }
        );
        assert!(err.to_string().contains("dom0_mem"));
        // The ramdisk counts too.
        let err = Dom0Layout::compute(&linux_kernel(), 64 * MIB, 16384).unwrap_err();
        assert!(err.to_string().contains("dom0_mem"));
        assert!(Dom0Layout::compute(&linux_kernel(), 0, 0).is_err());
    }

    #[test]
    fn address_space_errors() {
        // Ending past the top of the address space.
        let mut image = linux_kernel();
        image.kend = u64::MAX - 0x1000;
        assert!(matches!(
            Dom0Layout::compute(&image, 0, 16384),
            Err(LayoutError::Overflow(_))
        ));
        // Reaching into the reserved slots from below (from the
        // non-canonical hole) and starting inside them.
        let image = ImageBounds {
            virt_base: HYPERVISOR_VIRT_START - 2 * MIB,
            kstart: HYPERVISOR_VIRT_START - 2 * MIB,
            kend: HYPERVISOR_VIRT_START + MIB,
            entry: HYPERVISOR_VIRT_START - 2 * MIB,
            hypercall_page: None,
            init_p2m: None,
            mod_start_pfn: false,
        };
        let err = Dom0Layout::compute(&image, 0, 16384).unwrap_err();
        assert!(matches!(err, LayoutError::ReservedSlots { .. }), "{err}");
        let image = ImageBounds {
            virt_base: HYPERVISOR_VIRT_END - MIB,
            kstart: HYPERVISOR_VIRT_END - MIB,
            kend: HYPERVISOR_VIRT_END,
            entry: HYPERVISOR_VIRT_END - MIB,
            hypercall_page: None,
            init_p2m: None,
            mod_start_pfn: false,
        };
        assert!(matches!(
            Dom0Layout::compute(&image, 0, 16384),
            Err(LayoutError::ReservedSlots { .. })
        ));
        // Running from the top of the lower half into the hole.
        let image = ImageBounds {
            virt_base: LOWER_HALF_END - 2 * MIB,
            kstart: LOWER_HALF_END - 2 * MIB,
            kend: LOWER_HALF_END - MIB / 4,
            entry: LOWER_HALF_END - 2 * MIB,
            hypercall_page: None,
            init_p2m: None,
            mod_start_pfn: false,
        };
        assert!(matches!(
            Dom0Layout::compute(&image, 0, 16384),
            Err(LayoutError::NonCanonical { .. })
        ));
        // Right after the reserved slots is fine.
        let image = ImageBounds {
            virt_base: HYPERVISOR_VIRT_END,
            kstart: HYPERVISOR_VIRT_END,
            kend: HYPERVISOR_VIRT_END + MIB,
            entry: HYPERVISOR_VIRT_END,
            hypercall_page: None,
            init_p2m: None,
            mod_start_pfn: false,
        };
        check_invariants(&Dom0Layout::compute(&image, 0, 16384).unwrap());
        let mut image = linux_kernel();
        image.virt_base += 0x10;
        assert_eq!(
            Dom0Layout::compute(&image, 0, 16384).unwrap_err(),
            LayoutError::MisalignedVirtBase(LINUX_BASE + 0x10)
        );
    }

    #[test]
    fn hypercall_page_must_be_a_mapped_page() {
        let mut image = linux_kernel();
        image.hypercall_page = Some(LINUX_BASE + 0x2010);
        assert!(Dom0Layout::compute(&image, 0, 16384).is_err());
        image.hypercall_page = Some(LINUX_BASE + 8 * MIB);
        let err = Dom0Layout::compute(&image, 0, 16384).unwrap_err();
        assert!(err.to_string().contains("HYPERCALL_PAGE"));
        image.hypercall_page = Some(LINUX_BASE + 3 * MIB);
        assert!(Dom0Layout::compute(&image, 0, 16384).is_ok());
    }

    #[test]
    fn nr_pages_with_the_legacy_clip() {
        let mem = Dom0Mem::default();
        // Plenty of VA space: no clip.
        let pages = dom0_nr_pages(&mem, 1 << 20, &xtf_kernel(), 0);
        assert_eq!(pages.nr_pages, (1 << 20) - 32768);
        // Linux-style kernel near the top: 2 GiB of VA space left. Half of
        // it at 8 bytes per page allows about 2^26 pages.
        let huge = 1u64 << 28;
        let pages = dom0_nr_pages(&mem, huge, &linux_kernel(), 0);
        let vend = LINUX_BASE + 0x1a000;
        assert_eq!(pages.nr_pages, 0u64.wrapping_sub(vend) / 16);
        // An exact dom0_mem size or INIT_P2M turns the clip off.
        let (config, _) = crate::cmdline::parse("dom0_mem=1T");
        let pages = dom0_nr_pages(&config.dom0_mem, huge, &linux_kernel(), 0);
        assert_eq!(pages.nr_pages, huge);
        let mut image = linux_kernel();
        image.init_p2m = Some(0xFFFF_EA00_0000_0000);
        assert_eq!(dom0_nr_pages(&mem, huge, &image, 0).nr_pages, huge - 32768);
    }
}
