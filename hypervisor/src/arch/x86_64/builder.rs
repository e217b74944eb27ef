//! The dom0 builder, machine side: puts a checked Xen PV kernel into fresh
//! frames exactly as Xen 4.17's dom0 builder lays it out, and returns the
//! register state dom0 starts with (CPL 1, RSI = `start_info`).
//!
//! Order of the initial mapping (`VA = virt_base + pfn * 4096`): kernel,
//! ramdisk, p2m list, `start_info`, bootstrap page tables (mapped
//! read-only), one stack page; then padding to a 4 MiB boundary with at
//! least 512 KiB spare.
use core::fmt;

use dom0_abi::hypercall::{HYPERCALL_PAGE_SLOTS, HYPERCALL_SLOT_SIZE, Hypercall};
use dom0_abi::segment::{RING1_KERNEL_CS, RING1_KERNEL_SS};
use dom0_abi::shared_info::XEN_LEGACY_MAX_VCPUS;
use dom0_abi::start_info::{MAX_GUEST_CMDLINE, START_INFO_MAGIC, SifFlags};

use crate::bootinfo::BootInfo;
use crate::builder::layout::{Dom0Layout, ImageBounds, LayoutError, RamdiskPlacement, dom0_nr_pages};
use crate::cmdline::Config;
use crate::domain::Domain;
use crate::hypercall::HostInfo;
use crate::layout::PAGE_SIZE;
use crate::loader::{GuestImageInfo, ImageError};

use super::entry::GuestRegs;
use super::paging::{self, A, D, P, RW, US};
use super::trampoline::CpuViews;
use super::traps::{CURRENT, Current};
use super::{mem, paging::phys_to_virt};

/// Why dom0 could not be built.
#[derive(Debug)]
pub enum BuildError {
    /// No module 1.
    NoKernel,
    /// The kernel image broke Xen's rules.
    Image(ImageError),
    /// The layout does not fit.
    Layout(LayoutError),
    /// The kernel asks for its p2m list outside the initial mapping
    /// (`INIT_P2M`), which this builder does not do yet.
    InitP2m,
    /// Not enough free frames for `dom0_mem`.
    OutOfMemory {
        /// Frames needed.
        wanted: u64,
        /// Frames free.
        free: u64,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::NoKernel => f.write_str("no dom0 kernel: the boot loader passed no module"),
            BuildError::Image(e) => write!(f, "{e}"),
            BuildError::Layout(e) => write!(f, "{e}"),
            BuildError::InitP2m => f.write_str("the INIT_P2M note (p2m list outside the initial mapping) is not supported"),
            BuildError::OutOfMemory { wanted, free } => {
                write!(f, "dom0_mem asks for {wanted} pages but only {free} are free")
            }
        }
    }
}

/// Frames of dom0, indexed by pseudo-physical frame number.
struct P2m<'a> {
    mfns: &'a mut [u64],
}

impl P2m<'_> {
    fn pa(&self, va: u64, virt_base: u64) -> u64 {
        let pfn = (va - virt_base) / PAGE_SIZE;
        (self.mfns[pfn as usize] << 12) + (va & (PAGE_SIZE - 1))
    }
}

/// Builds dom0 and makes it the current domain; returns its first context.
pub fn build_dom0(boot: &BootInfo<'static>, config: &Config, views: &CpuViews) -> Result<GuestRegs, BuildError> {
    let modules = boot.modules();
    let kernel = modules.first().ok_or(BuildError::NoKernel)?;
    // SAFETY: the module lies in RAM the loader filled and the frame
    // allocator excludes; the direct map covers it; nothing writes it.
    let image = unsafe { core::slice::from_raw_parts(phys_to_virt(kernel.start) as *const u8, (kernel.end - kernel.start) as usize) };
    let info = GuestImageInfo::parse_dom0(image).map_err(BuildError::Image)?;
    let ramdisk = modules.get(1);
    let ramdisk_len = ramdisk.map_or(0, |m| m.end - m.start);

    let (free, _) = mem::frame_counts();
    let nr_pages = dom0_nr_pages(&config.dom0_mem, free, &ImageBounds::from(&info), ramdisk_len).nr_pages;
    let layout = Dom0Layout::for_image(&info, ramdisk_len, nr_pages).map_err(BuildError::Layout)?;
    if info.init_p2m.is_some() {
        return Err(BuildError::InitP2m);
    }
    if nr_pages > free {
        return Err(BuildError::OutOfMemory { wanted: nr_pages, free });
    }
    log::info!(
        "dom0: {} ({}), {nr_pages} pages ({} MiB), entry {:#x}",
        info.guest_os,
        info.guest_version,
        nr_pages * PAGE_SIZE >> 20,
        info.entry
    );
    log_layout(&layout);

    // The p2m list lives in dom0's own frames; build it in a scratch area first.
    let p2m_pages = (nr_pages * 8).div_ceil(PAGE_SIZE);
    let scratch = mem::FRAMES.lock().as_mut().and_then(|f| f.alloc_contiguous(p2m_pages, 1)).ok_or(BuildError::OutOfMemory { wanted: nr_pages + p2m_pages, free })?;
    // SAFETY: the scratch frames were just allocated for this list alone.
    let mfns = unsafe { core::slice::from_raw_parts_mut(phys_to_virt(scratch.address()) as *mut u64, nr_pages as usize) };
    for (pfn, slot) in mfns.iter_mut().enumerate() {
        let mfn = mem::alloc_frame().ok_or(BuildError::OutOfMemory { wanted: nr_pages, free })?.0;
        // SAFETY: the frame was just allocated for dom0; zero it so nothing
        // of the hypervisor's past reaches the guest.
        unsafe { core::ptr::write_bytes(phys_to_virt(mfn << 12) as *mut u8, 0, PAGE_SIZE as usize) };
        *slot = mfn;
        mem::set_m2p(mfn, pfn as u64);
    }
    let p2m = P2m { mfns };
    let base = layout.v_start;
    let write = |va: u64, bytes: &[u8]| copy_into(&p2m, base, va, bytes);

    for segment in info.segments() {
        write(segment.va, segment.file_bytes);
    }
    if let Some(module) = ramdisk {
        // SAFETY: as for the kernel module.
        let bytes = unsafe { core::slice::from_raw_parts(phys_to_virt(module.start) as *const u8, ramdisk_len as usize) };
        match layout.ramdisk {
            RamdiskPlacement::Mapped { va, .. } => write(va.start, bytes),
            RamdiskPlacement::ByPfn { pfn } => write(base + pfn * PAGE_SIZE, bytes),
            RamdiskPlacement::None => {}
        }
    }
    for (pfn, mfn) in p2m.mfns.iter().enumerate() {
        write(layout.p2m.va + 8 * pfn as u64, &mfn.to_le_bytes());
    }
    let shared_info = build_shared_info();
    write(layout.start_info, &start_info(&layout, nr_pages, shared_info, boot.module_cmdline(0).unwrap_or("")));
    if let Some(va) = info.hypercall_page {
        write(va, &hypercall_page());
    }
    let l4 = build_page_tables(&layout, &p2m);
    install_guest_l4(views, l4);
    // The scratch list has been copied into dom0; its frames go back.
    if let Some(frames) = mem::FRAMES.lock().as_mut() {
        for i in 0..p2m_pages {
            frames.free(crate::mm::frame_alloc::Mfn(scratch.0 + i)).expect("scratch frames were allocated here");
        }
    }

    *CURRENT.lock() = Some(Current {
        domain: Domain::dom0(nr_pages),
        host: HostInfo { command_line: boot.hypervisor_cmdline().as_bytes(), build_id: build_id() },
    });
    Ok(GuestRegs {
        rip: info.entry,
        cs: u64::from(RING1_KERNEL_CS),
        rflags: 0x202,
        rsp: layout.stack_top,
        ss: u64::from(RING1_KERNEL_SS),
        rsi: layout.start_info,
        ..GuestRegs::default()
    })
}

fn log_layout(l: &Dom0Layout) {
    log::info!("dom0 layout (virt_base {:#x}):", l.v_start);
    log::info!("  kernel      {:#x}-{:#x}", l.kernel.start, l.kernel.end);
    match l.ramdisk {
        RamdiskPlacement::Mapped { va, .. } => log::info!("  ramdisk     {:#x}-{:#x}", va.start, va.end),
        RamdiskPlacement::ByPfn { pfn } => log::info!("  ramdisk     at pfn {pfn:#x} (unmapped)"),
        RamdiskPlacement::None => {}
    }
    log::info!("  p2m list    {:#x}-{:#x}", l.p2m.va, l.p2m.va + l.p2m.bytes);
    log::info!("  start_info  {:#x}", l.start_info);
    log::info!("  page tables {:#x} ({} frames)", l.pt_base, l.nr_pt_frames);
    log::info!("  boot stack  {:#x}-{:#x}", l.stack, l.stack_top);
    log::info!("  mapped to   {:#x}", l.v_end);
}

fn copy_into(p2m: &P2m<'_>, virt_base: u64, va: u64, bytes: &[u8]) {
    let mut done = 0usize;
    while done < bytes.len() {
        let at = va + done as u64;
        let n = ((PAGE_SIZE - (at & (PAGE_SIZE - 1))) as usize).min(bytes.len() - done);
        let pa = p2m.pa(at, virt_base);
        // SAFETY: `pa` is inside one of dom0's frames (checked by the layout),
        // which only the builder touches before dom0 starts.
        unsafe { core::ptr::copy_nonoverlapping(bytes[done..].as_ptr(), phys_to_virt(pa) as *mut u8, n) };
        done += n;
    }
}

/// Builds the bootstrap page tables in the frames the layout sets aside
/// (Xen's order, L4 first), mapping `[v_start, v_end)` with every
/// page-table frame read-only. Returns the L4's machine address.
fn build_page_tables(layout: &Dom0Layout, p2m: &P2m<'_>) -> u64 {
    const UPPER: u64 = P | RW | A | D | US;
    let base = layout.v_start;
    let table_pa = |level: u8, va: u64| {
        let pfn = layout.table_pfn(level, va).expect("the layout covers its own mapping");
        p2m.pa(base + pfn * PAGE_SIZE, base)
    };
    let mapping = layout.mapping();
    let mut va = mapping.start;
    while va < mapping.end {
        for level in [4u8, 3, 2] {
            let entry = table_pa(level - 1, va) | UPPER;
            // SAFETY: the table is one of dom0's bootstrap page-table
            // frames, which nothing else uses until dom0 starts.
            unsafe { paging::table(table_pa(level, va))[paging::index(va, u32::from(level))] = entry };
        }
        let page = layout.page_at(va).expect("the layout covers its own mapping");
        let flags = if page.is_page_table { P | A } else { P | RW | A };
        // SAFETY: as above, for the L1 table.
        unsafe { paging::table(table_pa(1, va))[paging::index(va, 1)] = p2m.pa(va, base) | flags };
        va += PAGE_SIZE;
    }
    table_pa(4, mapping.start)
}

/// Copies dom0's L4 guest slots into this CPU's two views.
fn install_guest_l4(views: &CpuViews, l4: u64) {
    // SAFETY: all three are hypervisor-owned tables (dom0's L4 is read-only
    // to dom0); only guest slots are copied, never 256-271.
    unsafe {
        let guest = paging::table(l4);
        let (gv, hv) = (paging::table(views.guest_root), paging::table(views.hv_root));
        for slot in (0..512).filter(|&s| !crate::layout::is_reserved_slot(s)) {
            gv[slot] = guest[slot];
            hv[slot] = guest[slot];
        }
    }
}

/// The shared_info page: a hypervisor frame dom0 maps by its machine
/// address, with events masked in every legacy vcpu_info.
fn build_shared_info() -> u64 {
    let pa = mem::alloc_zeroed();
    for vcpu in 0..XEN_LEGACY_MAX_VCPUS as u64 {
        // SAFETY: the frame was just allocated; byte 1 of each 64-byte
        // vcpu_info is evtchn_upcall_mask.
        unsafe { (phys_to_virt(pa + vcpu * 64 + 1) as *mut u8).write(1) };
    }
    pa
}

fn start_info(layout: &Dom0Layout, nr_pages: u64, shared_info: u64, cmdline: &str) -> [u8; 1168] {
    let mut si = [0u8; 1168];
    let put = |si: &mut [u8; 1168], at: usize, v: u64| si[at..at + 8].copy_from_slice(&v.to_le_bytes());
    let (mod_start, mod_len, mod_is_pfn) = layout.start_info_module();
    let mut flags = SifFlags::PRIVILEGED | SifFlags::INITDOMAIN;
    if mod_is_pfn {
        flags |= SifFlags::MOD_START_PFN;
    }
    si[..START_INFO_MAGIC.len()].copy_from_slice(START_INFO_MAGIC);
    put(&mut si, 32, nr_pages);
    put(&mut si, 40, shared_info);
    si[48..52].copy_from_slice(&flags.bits().to_le_bytes());
    put(&mut si, 88, layout.pt_base);
    put(&mut si, 96, layout.nr_pt_frames);
    put(&mut si, 104, layout.p2m.va);
    put(&mut si, 112, mod_start);
    put(&mut si, 120, mod_len);
    let n = cmdline.len().min(MAX_GUEST_CMDLINE - 1);
    si[128..128 + n].copy_from_slice(&cmdline.as_bytes()[..n]);
    si
}

/// This hypervisor's hypercall page: `mov $n, %eax; int $0x82; ret` in every
/// slot, the iret shape in slot 23, `int3` (0xCC) everywhere else.
fn hypercall_page() -> [u8; 4096] {
    let mut page = [0xCCu8; 4096];
    for n in 0..HYPERCALL_PAGE_SLOTS {
        let slot = &mut page[n * HYPERCALL_SLOT_SIZE..(n + 1) * HYPERCALL_SLOT_SIZE];
        let nr = (n as u32).to_le_bytes();
        if n == Hypercall::Iret as usize {
            slot[..11].copy_from_slice(&[0x51, 0x41, 0x53, 0x50, 0xb8, nr[0], nr[1], nr[2], nr[3], 0xcd, 0x82]);
        } else {
            slot[..8].copy_from_slice(&[0xb8, nr[0], nr[1], nr[2], nr[3], 0xcd, 0x82, 0xc3]);
        }
    }
    page
}

/// The image's GNU build ID (the descriptor of `.note.gnu.build-id`).
fn build_id() -> &'static [u8] {
    unsafe extern "C" {
        static __build_id_note: u8;
        static __build_id_note_end: u8;
    }
    let start = core::ptr::addr_of!(__build_id_note);
    let len = core::ptr::addr_of!(__build_id_note_end) as usize - start as usize;
    // SAFETY: the linker script brackets the note with these symbols in
    // read-only data.
    let note = unsafe { core::slice::from_raw_parts(start, len) };
    if note.len() < 16 {
        return &[];
    }
    let namesz = u32::from_le_bytes([note[0], note[1], note[2], note[3]]) as usize;
    let descsz = u32::from_le_bytes([note[4], note[5], note[6], note[7]]) as usize;
    let desc = 12 + namesz.next_multiple_of(4);
    note.get(desc..desc + descsz).unwrap_or(&[])
}
