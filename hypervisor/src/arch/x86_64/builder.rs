//! The dom0 builder, machine side: puts a checked Xen PV kernel into fresh
//! frames exactly as Xen 4.17's dom0 builder lays it out, and returns the
//! register state dom0 starts with (CPL 1, RSI = `start_info`).
//!
//! Order of the initial mapping (`VA = virt_base + pfn * 4096`): kernel,
//! ramdisk, p2m list, `start_info`, bootstrap page tables (mapped
//! read-only), one stack page; then padding to a 4 MiB boundary with at
//! least 512 KiB spare.
use core::fmt;

use dom0_abi::hypercall::{HYPERCALL_PAGE_SIZE, fill_hypercall_page};
use dom0_abi::memory::{E820_ACPI, E820_NVS, E820_RAM, E820_RESERVED, E820_UNUSABLE, E820Entry};
use dom0_abi::segment::{RING1_KERNEL_CS, RING1_KERNEL_SS};
use dom0_abi::shared_info::SharedInfo;
use dom0_abi::start_info::{START_INFO_MAGIC, SifFlags, StartInfo};
use dom0_abi::types::{DomId, Mfn};

use crate::bootinfo::{BootInfo, MemoryKind};
use crate::builder::layout::{
    Dom0Layout, ImageBounds, LayoutError, RamdiskPlacement, dom0_nr_pages,
};
use crate::cmdline::Config;
use crate::domain::{DOMAINS, Domain, DomainEntry, DomainTable};
use crate::hypercall::desc::MAX_GDT_FRAMES;
use crate::hypercall::{Env, HostInfo};
use crate::hypercall::{domctl, gnttab, physdev};
use crate::iomem::{IomemCaps, ReservedMmio};
use crate::ioport::IoPorts;
use crate::layout::{END_RESERVED_L4_SLOT, FIRST_RESERVED_L4_SLOT, PAGE_SIZE};
use crate::loader::{GuestImageInfo, ImageError};
use crate::mm::effects::Effects;
use crate::mm::frame_table::{FrameTable, Owner};
use crate::mm::machine::VcpuMm;
use crate::mm::types::Mmu;
use crate::pirq::Pirqs;
use crate::vcpu::Power;
use dom0_abi::Errno;
use dom0_abi::shared_info::XEN_LEGACY_MAX_VCPUS;
use dom0_abi::vcpu::RUNSTATE_RUNNING;

extern crate alloc;
use alloc::boxed::Box;
use alloc::vec::Vec;

use super::entry::GuestRegs;
use super::env::ArchEnv;
use super::paging::{self, A, D, P, PAGE_BYTES, RW, US};
use super::percpu::{FREE_BEFORE_DOM0, HOST, PerCpu, RESERVED_MMIO, Running, TEST_NONCE, this_cpu};
use super::trampoline::CpuViews;
use super::traps::Current;
use super::{cpu, mem, paging::phys_to_virt};

/// Why dom0 could not be built.
#[derive(Debug)]
pub enum BuildError {
    /// No module 1.
    NoKernel,
    /// The kernel image broke Xen's rules.
    Image(ImageError),
    /// The layout does not fit.
    Layout(LayoutError),
    /// The bootstrap page tables did not validate (a builder bug).
    PageTables(Errno),
    /// An internal inconsistency (a builder bug).
    Internal(&'static str),
    /// Not enough free frames for `dom0_mem`.
    OutOfMemory {
        /// Frames needed.
        wanted: u64,
        /// Frames free.
        free: u64,
    },
    /// A boot module or dom0's p2m list is larger than the hypervisor's
    /// address space can hold (impossible on x86-64, where `usize` is 64
    /// bits).
    TooLarge(&'static str),
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::NoKernel => f.write_str("no dom0 kernel: the boot loader passed no module"),
            BuildError::Image(e) => write!(f, "{e}"),
            BuildError::Layout(e) => write!(f, "{e}"),
            BuildError::PageTables(e) => write!(
                f,
                "the bootstrap page tables do not validate ({})",
                e.name()
            ),
            BuildError::Internal(what) => write!(f, "internal error: {what}"),
            BuildError::OutOfMemory { wanted, free } => {
                write!(
                    f,
                    "dom0_mem asks for {wanted} pages but only {free} are free"
                )
            }
            BuildError::TooLarge(what) => write!(f, "the {what} does not fit in the address space"),
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
        Mfn(self.mfns[pfn as usize]).maddr() + (va & (PAGE_SIZE - 1))
    }
}

/// Builds dom0, puts it into the domain table and makes its vCPU 0 the one
/// running on this CPU; returns that vCPU's first context.
pub fn build_dom0(
    boot: &BootInfo<'static>,
    config: &Config,
    views: &CpuViews,
) -> Result<GuestRegs, BuildError> {
    let modules = boot.modules();
    let kernel = modules.first().ok_or(BuildError::NoKernel)?;
    let image_len = usize::try_from(kernel.end - kernel.start)
        .map_err(|_| BuildError::TooLarge("kernel module"))?;
    // SAFETY: the module lies in RAM the loader filled and the frame
    // allocator excludes; the direct map covers it; nothing writes it.
    let image =
        unsafe { core::slice::from_raw_parts(phys_to_virt(kernel.start) as *const u8, image_len) };
    let mut info = GuestImageInfo::parse_dom0(image).map_err(BuildError::Image)?;
    let ramdisk = modules.get(1);
    let ramdisk_len = ramdisk.map_or(0, |m| m.end - m.start);

    // A kernel with `INIT_P2M` also takes its p2m list inside the initial
    // mapping (`start_info.mfn_list` says where): Linux, the one kernel
    // that gives the note, moves the list itself when it finds it there.
    if let Some(va) = info.init_p2m.take() {
        log::info!("dom0: INIT_P2M {va:#x} noted; the p2m list stays in the initial mapping");
    }
    if info.bsd_symtab {
        log::warn!("dom0: BSD_SYMTAB is not supported; the kernel gets no symbol table");
    }

    // The builder needs one scratch page per 512 pages of dom0 (the p2m list
    // is assembled there first), so that much is not offered to dom0_mem.
    let (free, _) = mem::frame_counts();
    let free_before_build = free;
    let available = free - free.div_ceil(512);
    let pages = dom0_nr_pages(
        &config.dom0_mem,
        available,
        &ImageBounds::from(&info),
        ramdisk_len,
    );
    let nr_pages = pages.nr_pages;
    let p2m_pages = (nr_pages * 8).div_ceil(PAGE_SIZE);
    if nr_pages + p2m_pages > free {
        return Err(BuildError::OutOfMemory {
            wanted: nr_pages + p2m_pages,
            free,
        });
    }
    let layout = Dom0Layout::for_image(&info, ramdisk_len, nr_pages).map_err(BuildError::Layout)?;
    log::info!(
        "dom0: {} ({}), {nr_pages} pages ({} MiB), entry {:#x}",
        info.guest_os,
        info.guest_version,
        (nr_pages * PAGE_SIZE) >> 20,
        info.entry
    );
    log_layout(&layout);

    // The p2m list lives in dom0's own frames; build it in a scratch area first.
    let scratch = mem::FRAMES
        .lock()
        .as_mut()
        .and_then(|f| f.alloc_contiguous(p2m_pages, 1))
        .ok_or(BuildError::OutOfMemory {
            wanted: nr_pages + p2m_pages,
            free,
        })?;
    let p2m_len = usize::try_from(nr_pages).map_err(|_| BuildError::TooLarge("p2m list"))?;
    // SAFETY: the scratch frames were just allocated for this list alone.
    let mfns = unsafe {
        core::slice::from_raw_parts_mut(phys_to_virt(scratch.maddr()) as *mut u64, p2m_len)
    };
    for slot in mfns.iter_mut() {
        let mfn = mem::alloc_frame().ok_or(BuildError::OutOfMemory {
            wanted: nr_pages,
            free,
        })?;
        // SAFETY: the frame was just allocated for dom0; zero it so nothing
        // of the hypervisor's past reaches the guest.
        unsafe { core::ptr::write_bytes(phys_to_virt(mfn.maddr()) as *mut u8, 0, PAGE_BYTES) };
        *slot = mfn.0;
    }
    let p2m = P2m { mfns };
    let base = layout.v_start;
    let write = |va: u64, bytes: &[u8]| copy_into(&p2m, base, va, bytes);

    for segment in info.segments() {
        write(segment.va, segment.file_bytes);
    }
    if let Some(module) = ramdisk {
        let len =
            usize::try_from(ramdisk_len).map_err(|_| BuildError::TooLarge("initrd module"))?;
        // SAFETY: as for the kernel module.
        let bytes =
            unsafe { core::slice::from_raw_parts(phys_to_virt(module.start) as *const u8, len) };
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
    let si = start_info(
        &layout,
        nr_pages,
        shared_info,
        boot.module_cmdline(0).unwrap_or(""),
    );
    write(layout.start_info, start_info_bytes(&si));
    if let Some(va) = info.hypercall_page {
        let mut page = [0u8; HYPERCALL_PAGE_SIZE];
        fill_hypercall_page(&mut page);
        write(va, &page);
    }
    let l4 = build_page_tables(&layout, &p2m);
    install_guest_l4(views, l4);
    // The scratch list has been copied into dom0; its frames go back.
    if let Some(frames) = mem::FRAMES.lock().as_mut() {
        for i in 0..p2m_pages {
            frames
                .free(Mfn(scratch.0 + i))
                .expect("scratch frames were allocated here");
        }
    }

    HOST.call_once(|| HostInfo {
        command_line: boot.hypervisor_cmdline().as_bytes(),
        build_id: build_id(),
        nx: super::cpuid::features().nx,
        machine_map: machine_map(boot),
        pcpus: super::smp::PCPUS.get().map_or(&[], Vec::as_slice),
        raw_cpuid: super::cpuid::raw_cpuid,
        mcg_cap: mcg_cap(),
    });
    FREE_BEFORE_DOM0.call_once(|| free_before_build);
    if let Some(nonce) = config.test_nonce {
        TEST_NONCE.call_once(|| nonce);
    }
    let mut entry = Box::new(DomainEntry::new(Domain::dom0(
        dom0_vcpus(config),
        shared_info,
    )));
    // Xen's balloon ceiling for dom0: `dom0_mem=max:`, at most 2^32 - 1
    // pages (unlimited without it).
    entry.domain.mm.max_pages = pages.max_pages.min(u64::from(u32::MAX));
    entry.domain.ioports = Some(Box::new(IoPorts::hardware_domain(config.com1.io_base)));
    entry.domain.pci = Some(Box::default());
    entry.domain.iomem = IomemCaps::hardware_domain(
        1 << (cpu::phys_bits() - 12),
        RESERVED_MMIO.get().unwrap_or(&ReservedMmio::default()),
    );
    entry.domain.pirqs = Pirqs::hardware_domain(super::pirq::with_lines(|l| (l.len(), None)));
    let mut cpu = PerCpu::new(0, *views);
    register_frames(&mut cpu, &mut entry, &p2m, shared_info, Mfn(l4 >> 12))?;
    let boot_vcpu = &mut entry.vcpus[0];
    boot_vcpu.power = Power::Up;
    boot_vcpu.initialised = true;
    boot_vcpu.on_cpu = Some(cpu.number);
    boot_vcpu
        .runstate
        .enter(RUNSTATE_RUNNING, super::time::now_ns());
    super::time::publish(boot_vcpu.vcpu_info);
    let id = entry.domain.id;
    let table = DOMAINS.call_once(|| DomainTable::new(config.max_domains));
    super::evtchn::init_moved_vcpu_info(table.len());
    log::info!("domain table: {} slots (max_domains)", table.len());
    table
        .insert(entry)
        .map_err(|_| BuildError::Internal("dom0's slot is taken"))?;
    cpu.running = Some(Running {
        domain: id,
        slot: table
            .slot(id)
            .ok_or(BuildError::Internal("dom0 has no slot"))?,
        vcpu: 0,
    });
    *this_cpu().state.lock() = cpu;
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

/// dom0's vCPU count: `dom0_max_vcpus` against the CPUs that came up
/// (Xen's default is one vCPU per online CPU), at most the number of
/// `vcpu_info` slots in shared_info.
fn dom0_vcpus(config: &Config) -> u32 {
    let online = super::smp::PCPUS
        .get()
        .map_or(1, |pcpus| pcpus.iter().filter(|p| p.online).count());
    let wanted = config
        .dom0_max_vcpus
        .resolve(u32::try_from(online).unwrap_or(u32::MAX));
    let limit = u32::try_from(XEN_LEGACY_MAX_VCPUS).unwrap_or(u32::MAX);
    if wanted > limit {
        log::warn!("dom0_max_vcpus: {wanted} vCPUs asked for, {limit} is the most");
    }
    wanted.clamp(1, limit)
}

/// Enters dom0 into the frame table as Xen's builder does: every frame is
/// dom0's (which also fills the M2P), shared_info is a hypervisor page dom0
/// may map writable, and the boot L4 is pinned — which validates the whole
/// tree just built, so a builder bug shows up here rather than in the guest.
fn register_frames(
    cpu: &mut PerCpu,
    entry: &mut DomainEntry,
    p2m: &P2m<'_>,
    shared_info: u64,
    l4: Mfn,
) -> Result<(), BuildError> {
    let dom = entry.domain.id;
    {
        let mut table = mem::FRAME_TABLE.lock();
        let frames = table
            .as_deref_mut()
            .ok_or(BuildError::Internal("no frame table"))?;
        FrameTable::new(frames)
            .share_xen_page(Mfn(shared_info >> 12), Owner::Domain(dom), true)
            .map_err(|_| BuildError::Internal("shared_info cannot be shared"))?;
    }
    let mut regs = GuestRegs::default();
    let mut vcpu_mm = entry.vcpus[0].mm;
    let mut fx = Effects::default();
    let mut current =
        Current::of(entry, 0, cpu).ok_or(BuildError::Internal("dom0 has no vCPU 0"))?;
    let mut env = ArchEnv::new(&mut current, &mut regs);
    let mut mmu = Mmu::new(&mut env, &mut fx);
    for (pfn, &mfn) in p2m.mfns.iter().enumerate() {
        mmu.assign(Mfn(mfn), dom, Some(pfn as u64))
            .map_err(|_| BuildError::Internal("a dom0 frame is already owned"))?;
    }
    mmu.install_initial_root(dom, &mut vcpu_mm, l4)
        .map_err(BuildError::PageTables)?;
    drop(env);
    entry.vcpus[0].mm = vcpu_mm;
    Ok(())
}

fn log_layout(l: &Dom0Layout) {
    log::info!("dom0 layout (virt_base {:#x}):", l.v_start);
    log::info!("  kernel      {:#x}-{:#x}", l.kernel.start, l.kernel.end);
    match l.ramdisk {
        RamdiskPlacement::Mapped { va, .. } => {
            log::info!("  ramdisk     {:#x}-{:#x}", va.start, va.end)
        }
        RamdiskPlacement::ByPfn { pfn } => log::info!("  ramdisk     at pfn {pfn:#x} (unmapped)"),
        RamdiskPlacement::None => {}
    }
    log::info!(
        "  p2m list    {:#x}-{:#x}",
        l.p2m.va,
        l.p2m.va + l.p2m.bytes
    );
    log::info!("  start_info  {:#x}", l.start_info);
    log::info!("  page tables {:#x} ({} frames)", l.pt_base, l.nr_pt_frames);
    log::info!("  boot stack  {:#x}-{:#x}", l.stack, l.stack_top);
    log::info!("  mapped to   {:#x}", l.v_end);
}

fn copy_into(p2m: &P2m<'_>, virt_base: u64, va: u64, bytes: &[u8]) {
    let mut done = 0usize;
    while done < bytes.len() {
        let at = va + done as u64;
        #[allow(
            clippy::cast_possible_truncation,
            reason = "a page offset is below 4096"
        )]
        let offset = (at & (PAGE_SIZE - 1)) as usize;
        let n = (PAGE_BYTES - offset).min(bytes.len() - done);
        let pa = p2m.pa(at, virt_base);
        // SAFETY: `pa` is inside one of dom0's frames (checked by the layout),
        // which only the builder touches before dom0 starts.
        unsafe {
            core::ptr::copy_nonoverlapping(bytes[done..].as_ptr(), phys_to_virt(pa) as *mut u8, n)
        };
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
        let pfn = layout
            .table_pfn(level, va)
            .expect("the layout covers its own mapping");
        p2m.pa(base + pfn * PAGE_SIZE, base)
    };
    let mapping = layout.mapping();
    let mut va = mapping.start;
    while va < mapping.end {
        for level in [4u8, 3, 2] {
            let entry = table_pa(level - 1, va) | UPPER;
            // SAFETY: the table is one of dom0's bootstrap page-table
            // frames, which nothing else uses until dom0 starts.
            unsafe {
                paging::table(table_pa(level, va))[paging::index(va, u32::from(level))] = entry
            };
        }
        let page = layout
            .page_at(va)
            .expect("the layout covers its own mapping");
        let flags = if page.is_page_table {
            P | A
        } else {
            P | RW | A
        };
        // SAFETY: as above, for the L1 table.
        unsafe { paging::table(table_pa(1, va))[paging::index(va, 1)] = p2m.pa(va, base) | flags };
        va += PAGE_SIZE;
    }
    table_pa(4, mapping.start)
}

/// What [`destroy_dom0`] found.
#[derive(Clone, Copy, Debug)]
pub struct Dom0Teardown {
    /// Frames returned to the allocator.
    pub released: u64,
    /// Whether releasing found the frame table inconsistent (a reference
    /// or type count that was already zero, a count that reached zero
    /// while the frame still recorded a reference): a hypervisor bug,
    /// whatever the frame counts say.
    pub inconsistent: bool,
}

/// Undoes [`build_dom0`]: drops the GDT's descriptor types, unhooks dom0's
/// page tables from this CPU's views, then releases every type and
/// reference dom0 holds, which returns all its frames (shared_info
/// included) to the allocator; its GDT frames are unmapped from this
/// CPU's GDT window.
pub fn destroy_dom0(cpu: &mut PerCpu, entry: &mut DomainEntry) -> Dom0Teardown {
    let dom = entry.domain.id;
    clear_guest_slots(&cpu.views);
    let mut regs = GuestRegs::default();
    let mut fx = Effects::default();
    let mut vcpus: Vec<VcpuMm> = entry.vcpus.iter().map(|v| v.mm).collect();
    let gdts: Vec<([u64; MAX_GDT_FRAMES], usize)> = entry
        .vcpus
        .iter_mut()
        .map(|v| (v.gdt_frames, core::mem::take(&mut v.gdt_count)))
        .collect();
    let vcpu_info_frames: Vec<Mfn> = entry
        .vcpus
        .iter_mut()
        .filter_map(|v| v.vcpu_info_frame.take())
        .collect();
    let running = cpu.running.map_or(0, |r| r.vcpu);
    let mut others_consistent = true;
    let mut others_remaining = 0;
    let report = {
        let Some(mut current) = Current::of(entry, running, cpu) else {
            return Dom0Teardown {
                released: 0,
                inconsistent: true,
            };
        };
        let mut env = ArchEnv::new(&mut current, &mut regs);
        super::env::release_ldt(&mut env, &mut fx);
        let pirqs = core::mem::take(&mut env.domain().pirqs);
        let eoi_map = env.domain().pirq_eoi_map.take();
        physdev::release_taken(&mut env, &mut fx, dom, &pirqs, eoi_map);
        for mfn in vcpu_info_frames {
            Mmu::new(&mut env, &mut fx).put_page_and_type(mfn);
        }
        // dom0's grant mappings give up their pins and device references
        // (the host mappings' references go with its page tables).
        let mut grants = env.domain().grant.take();
        let device = grants
            .as_deref_mut()
            .map(|own| gnttab::release_mappings(&mut env, dom, own))
            .unwrap_or_default();
        env.domain().grant = grants;
        let mut mmu = Mmu::new(&mut env, &mut fx);
        for (mfn, writable) in device {
            if writable {
                mmu.put_page_type(mfn);
            }
            mmu.put_page(mfn);
        }
        // The other domains go first: dom0 may map their frames, and they
        // may be waiting for that (dying).
        for id in 1..DOMAINS.get().map_or(0, DomainTable::len) {
            let id = DomId(u16::try_from(id).unwrap_or(u16::MAX));
            if let Some((report, consistent)) = domctl::reap(&mut env, &mut fx, id) {
                others_consistent &= consistent;
                others_remaining += report.remaining;
            }
        }
        let mut mmu = Mmu::new(&mut env, &mut fx);
        for (frames, count) in &gdts {
            for &mfn in &frames[..*count] {
                mmu.put_page_and_type(Mfn(mfn));
            }
        }
        mmu.teardown(dom, &mut vcpus)
    };
    for (vcpu, mm) in entry.vcpus.iter_mut().zip(vcpus) {
        vcpu.mm = mm;
    }
    // The freed GDT frames leave this CPU's GDT window too: the zero page
    // stands behind every guest GDT page again.
    super::trampoline::load_guest_gdt(&cpu.views, &mut cpu.gdt_mapped, &[]);
    if report.remaining != 0 {
        log::warn!("dom0 teardown: {} frames still owned", report.remaining);
    }
    if others_remaining != 0 {
        log::warn!("dom0 teardown: {others_remaining} frames of other domains still owned");
    }
    Dom0Teardown {
        released: report.released,
        inconsistent: fx.crash || !others_consistent,
    }
}

/// Removes every guest slot from this CPU's two views (and the TLB).
fn clear_guest_slots(views: &CpuViews) {
    // SAFETY: both roots are this CPU's hypervisor-owned tables; only the
    // guest slots are cleared, and the running hypervisor uses none of them.
    unsafe {
        let (gv, hv) = (
            paging::table(views.guest_root),
            paging::table(views.hv_root),
        );
        for range in GUEST_L4_SLOTS {
            gv[range.clone()].fill(0);
            hv[range].fill(0);
        }
        cpu::write_cr3(cpu::read_cr3());
    }
}

/// The guest slots of an L4 table, as two runs around the hypervisor's.
const GUEST_L4_SLOTS: [core::ops::Range<usize>; 2] =
    [0..FIRST_RESERVED_L4_SLOT, END_RESERVED_L4_SLOT..512];

/// Copies a guest L4's guest slots into this CPU's two views: each run
/// as one block copy (a `rep movsq`), which every switch between
/// domains pays; a slot-by-slot loop cost about 12 instructions a slot,
/// 6000 a switch.
pub fn install_guest_l4(views: &CpuViews, l4: u64) {
    // SAFETY: all three are hypervisor-owned tables (dom0's L4 is read-only
    // to dom0) and different frames; only guest slots are copied, never
    // 256-271.
    unsafe {
        let guest = paging::table(l4);
        let (gv, hv) = (
            paging::table(views.guest_root),
            paging::table(views.hv_root),
        );
        for range in GUEST_L4_SLOTS {
            gv[range.clone()].copy_from_slice(&guest[range.clone()]);
            hv[range.clone()].copy_from_slice(&guest[range]);
        }
    }
}

/// Loads L4 `l4`, whose non-zero guest slots are `used`, into this CPU's
/// two views, which may hold non-zero only the slots `installed` names:
/// only those two sets of slots are copied (a switch between two domains'
/// vCPUs then writes a few slots, not 496), and `installed` becomes
/// `used`.
pub fn switch_guest_l4(views: &CpuViews, installed: &mut [u64; 8], l4: u64, used: &[u64; 8]) {
    // SAFETY: all three are hypervisor-owned tables (a guest's L4 is
    // read-only to it) and different frames; only guest slots are
    // copied: `used` names no others, and `installed` is masked.
    unsafe {
        let guest = paging::table(l4);
        let (gv, hv) = (
            paging::table(views.guest_root),
            paging::table(views.hv_root),
        );
        for (word, (&new, old)) in used.iter().zip(installed.iter_mut()).enumerate() {
            let mut bits = new | (*old & guest_slot_mask(word));
            while bits != 0 {
                let slot = word * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                gv[slot] = guest[slot];
                hv[slot] = guest[slot];
            }
            *old = new;
        }
    }
}

/// The guest slots among slots `64 * word` to `64 * word + 63`.
const fn guest_slot_mask(word: usize) -> u64 {
    let (first, end) = (word * 64, word * 64 + 64);
    if end <= FIRST_RESERVED_L4_SLOT || first >= END_RESERVED_L4_SLOT {
        u64::MAX
    } else {
        // Word 4: slots 256-271 are the hypervisor's.
        !((1u64 << (END_RESERVED_L4_SLOT - first)) - 1)
    }
}

/// The shared_info page: a hypervisor frame dom0 maps by its machine
/// address, with events masked in every legacy vcpu_info and the wall
/// clock in place (nothing else runs yet that could set it meanwhile).
fn build_shared_info() -> u64 {
    let pa = mem::alloc_zeroed();
    // SAFETY: the frame was just allocated and zeroed (a valid `SharedInfo`:
    // integers only), is page-aligned and holds a whole `SharedInfo`, and
    // nothing else refers to it yet.
    let shared = unsafe { &mut *(phys_to_virt(pa) as *mut SharedInfo) };
    for vcpu in &mut shared.vcpu_info {
        vcpu.evtchn_upcall_mask = 1;
    }
    super::time::publish_wallclock(pa);
    pa
}

/// dom0's `start_info`: everything but the console info (none: no VGA) and
/// the xenstore fields (dom0 has none).
fn start_info(layout: &Dom0Layout, nr_pages: u64, shared_info: u64, cmdline: &str) -> StartInfo {
    let (mod_start, mod_len, mod_is_pfn) = layout.start_info_module();
    let mut flags = SifFlags::PRIVILEGED | SifFlags::INITDOMAIN;
    if mod_is_pfn {
        flags |= SifFlags::MOD_START_PFN;
    }
    let mut si = StartInfo::zeroed();
    si.set_magic(START_INFO_MAGIC);
    si.nr_pages = nr_pages;
    si.shared_info = shared_info;
    si.flags = flags.bits();
    si.pt_base = layout.pt_base;
    si.nr_pt_frames = layout.nr_pt_frames;
    si.mfn_list = layout.p2m.va;
    si.mod_start = mod_start;
    si.mod_len = mod_len;
    si.set_cmdline(cmdline.as_bytes());
    si
}

/// The bytes of a `start_info`, as the guest reads them.
fn start_info_bytes(si: &StartInfo) -> &[u8] {
    // SAFETY: `StartInfo` is `repr(C)` without padding (dom0-abi asserts
    // every field offset, and the fields tile its 1168 bytes), so every byte
    // is initialised; the slice borrows `si` and is read-only.
    unsafe {
        core::slice::from_raw_parts(
            (si as *const StartInfo).cast::<u8>(),
            size_of::<StartInfo>(),
        )
    }
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

/// The machine memory map for `XENMEM_machine_memory_map`, kept for the
/// life of the hypervisor: the boot loader's, with the MMIO no domain may
/// map reserved in its gaps ([`crate::iomem::machine_map`]).
fn machine_map(boot: &BootInfo<'_>) -> &'static [E820Entry] {
    let mut entries: Vec<E820Entry> = boot
        .regions()
        .iter()
        .map(|r| E820Entry {
            addr: r.start,
            size: r.end - r.start,
            kind: match r.kind {
                MemoryKind::Usable => E820_RAM,
                MemoryKind::Reserved => E820_RESERVED,
                MemoryKind::AcpiReclaimable => E820_ACPI,
                MemoryKind::AcpiNvs => E820_NVS,
                MemoryKind::Bad => E820_UNUSABLE,
                MemoryKind::Other(kind) => kind,
            },
        })
        .collect();
    entries.sort_unstable_by_key(|e| e.addr);
    let denied = super::percpu::RESERVED_MMIO
        .get()
        .cloned()
        .unwrap_or_default();
    let bits = super::cpuid::phys_bits();
    Vec::leak(crate::iomem::machine_map(&entries, &denied, bits))
}

/// The boot CPU's `MSR_IA32_MCG_CAP`, 0 without machine-check
/// architecture (CPUID leaf 1 EDX bit 14).
fn mcg_cap() -> u64 {
    if super::cpuid::raw_cpuid(1, 0)[3] & (1 << 14) == 0 {
        return 0;
    }
    // SAFETY: the CPU has machine-check architecture, so the MSR exists.
    unsafe { super::msr::rdmsr(0x179) }
}
