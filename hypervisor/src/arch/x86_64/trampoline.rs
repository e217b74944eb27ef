//! The per-CPU trampoline: the only part of the hypervisor a guest view maps
//! besides the read-only M2P (see `layout::trampoline` for the addresses).
//!
//! | what                      | guest view | why it must be there              |
//! |---------------------------|------------|-----------------------------------|
//! | entry/exit stubs          | RX         | the CPU jumps there on any entry  |
//! | data page (CR3s, stack)   | RO         | what the stubs trust              |
//! | IDT, GDT, TSS             | RO         | the CPU reads them on any entry   |
//! | entry stack, IST stacks   | RW         | the CPU pushes the frame there    |
//!
//! The GDT is 14 shared zero pages (guest descriptors, none yet) plus this
//! CPU's reserved page (entry 7168 on). `ltr` writes the busy bit into the
//! TSS descriptor, so the reserved page is mapped writable for that one
//! instruction and read-only from then on.
use core::arch::asm;

use dom0_abi::hypercall::HYPERCALL_VECTOR;
use dom0_abi::segment::{
    FIRST_RESERVED_GDT_BYTE, FIRST_RESERVED_GDT_PAGE, FLAT_RING3_CS32, FLAT_RING3_CS64,
    FLAT_RING3_DS, HYPERVISOR_CS, HYPERVISOR_DS, RING1_KERNEL_CS, RING1_KERNEL_SS,
};

use crate::layout::{M2P_L4_SLOT, PAGE_SIZE, TRAMPOLINE_L4_SLOT, trampoline as t};

use super::entry::{entry_text_image_start, stub_address};
use super::paging::{self, G, NX, RW};
use crate::segment;

/// Selector of this CPU's TSS (two GDT slots after the fixed ones).
pub const TSS_SELECTOR: u16 = 0xe040;
/// The GDT page holding the hypervisor's reserved entries (14: entries
/// 7168-7679), after the guest's pages.
const RESERVED_PAGE: u64 = FIRST_RESERVED_GDT_PAGE as u64;
/// One past the last GDT byte in use.
const GDT_END: u64 = FIRST_RESERVED_GDT_BYTE as u64 + 0x60;
/// The GDT limit (`GDT_END - 1`), which must fit the GDTR's 16-bit field.
const GDT_LIMIT: u16 = {
    assert!(GDT_END - 1 <= u16::MAX as u64);
    #[allow(
        clippy::cast_possible_truncation,
        reason = "checked against u16::MAX just above"
    )]
    let limit = (GDT_END - 1) as u16;
    limit
};

/// The two root tables of one CPU.
#[derive(Clone, Copy, Debug)]
pub struct CpuViews {
    /// CR3 of the hypervisor view.
    pub hv_root: u64,
    /// CR3 of the guest view (with its PCID when PCIDs are on).
    pub guest_cr3: u64,
    /// Physical address of the guest view's root table.
    pub guest_root: u64,
    /// The zero page that stands in for GDT frames a guest has not loaded.
    pub gdt_zero: u64,
}

/// Builds this CPU's trampoline under `hv_root` and a guest-view root that
/// shares the M2P and trampoline slots with it.
///
/// # Safety
/// `hv_root` must be the hypervisor's root table for this CPU, already
/// holding the M2P at slot 256; `alloc` must hand out zeroed frames owned by
/// the hypervisor; `image_to_phys` must translate image addresses.
pub unsafe fn build(
    cpu: u64,
    hv_root: u64,
    hv_stack_top: u64,
    pcid: bool,
    alloc: &mut dyn FnMut() -> u64,
    image_to_phys: fn(u64) -> u64,
) -> CpuViews {
    let data = alloc();
    let idt = alloc();
    let tss = alloc();
    let gdt = alloc();
    let zero = alloc();
    let stacks = [alloc(), alloc(), alloc(), alloc(), alloc()];

    // SAFETY: each frame was just allocated for this CPU and is reachable
    // through the direct map; nothing else refers to it yet.
    unsafe {
        fill_idt(paging::table(idt));
        fill_gdt(paging::table(gdt));
        let segment = segment::tss_with_stacks(
            t::stack_top(t::ENTRY_STACK),
            [
                t::stack_top(t::NMI_STACK),
                t::stack_top(t::DF_STACK),
                t::stack_top(t::MC_STACK),
                t::stack_top(t::DB_STACK),
            ],
        );
        core::ptr::write_unaligned(
            paging::phys_to_virt(tss) as *mut x86_64::structures::tss::TaskStateSegment,
            segment,
        );
    }

    let map = |va: u64, pa: u64, flags: u64, alloc: &mut dyn FnMut() -> u64| {
        // SAFETY: `hv_root` is this CPU's tree (caller's contract); slot 257
        // holds only the trampoline, which nothing uses yet.
        unsafe { paging::map(hv_root, va, pa, flags | G, paging::PageSize::Size4K, alloc) }
    };
    let text_start = entry_text_image_start();
    for page in 0..t::TEXT_MAX_PAGES {
        let va = text_start + page * PAGE_SIZE;
        if va >= entry_text_end() {
            break;
        }
        map(t::TEXT + page * PAGE_SIZE, image_to_phys(va), 0, alloc);
    }
    map(t::DATA, data, NX, alloc);
    map(t::IDT, idt, NX, alloc);
    map(t::TSS, tss, NX, alloc);
    for page in 0..RESERVED_PAGE {
        map(t::GDT + page * PAGE_SIZE, zero, NX, alloc);
    }
    map(t::GDT + RESERVED_PAGE * PAGE_SIZE, gdt, NX | RW, alloc);
    for (bottom, pa) in [
        t::ENTRY_STACK,
        t::NMI_STACK,
        t::DF_STACK,
        t::MC_STACK,
        t::DB_STACK,
    ]
    .into_iter()
    .zip(stacks)
    {
        map(bottom, pa, NX | RW, alloc);
    }

    let guest_root = alloc();
    // SAFETY: both roots are hypervisor-owned tables; only slots 256 and 257
    // are copied, which hold the M2P and this CPU's trampoline.
    unsafe {
        let hv = paging::table(hv_root);
        let guest = paging::table(guest_root);
        guest[M2P_L4_SLOT] = hv[M2P_L4_SLOT];
        guest[TRAMPOLINE_L4_SLOT] = hv[TRAMPOLINE_L4_SLOT];
    }
    let guest_cr3 = guest_root | u64::from(pcid);
    let views = CpuViews {
        hv_root,
        guest_cr3,
        guest_root,
        gdt_zero: zero,
    };
    // SAFETY: the data page is this CPU's, mapped read-only for everyone but
    // the hypervisor, which writes it here through the direct map.
    unsafe {
        let d = paging::phys_to_virt(data) as *mut u64;
        d.add((t::data::HV_CR3 / 8) as usize).write(hv_root);
        d.add((t::data::HV_STACK_TOP / 8) as usize)
            .write(hv_stack_top);
        d.add((t::data::GUEST_CR3 / 8) as usize).write(guest_cr3);
        d.add((t::data::CPU / 8) as usize).write(cpu);
        d.add((t::data::PERCPU / 8) as usize)
            .write(super::percpu::slot_address(cpu));
        d.add((t::data::LANE / 8) as usize)
            .write(crate::fastpath::lane_address(cpu));
    }
    views
}

fn entry_text_end() -> u64 {
    unsafe extern "C" {
        static __entry_text_end: u8;
    }
    core::ptr::addr_of!(__entry_text_end) as u64
}

fn fill_idt(idt: &mut [u64; 512]) {
    for vector in 0..=255u8 {
        let (ist, dpl) = match vector {
            1 => (4, 0),
            2 => (1, 0),
            8 => (2, 0),
            18 => (3, 0),
            3 | 4 => (0, 3),
            HYPERCALL_VECTOR => (0, 1),
            _ => (0, 0),
        };
        let gate = segment::interrupt_gate(stub_address(vector), HYPERVISOR_CS, ist, dpl);
        idt[2 * vector as usize] = gate[0];
        idt[2 * vector as usize + 1] = gate[1];
    }
}

fn fill_gdt(page: &mut [u64; 512]) {
    let slot = |selector: u16| usize::from(selector >> 3) - FIRST_RESERVED_GDT_BYTE / 8;
    page[slot(HYPERVISOR_CS)] = segment::code64(0);
    page[slot(HYPERVISOR_DS)] = segment::data(0);
    page[slot(RING1_KERNEL_CS)] = segment::code64(1);
    page[slot(FLAT_RING3_CS32)] = segment::code32(3);
    page[slot(FLAT_RING3_DS)] = segment::data(3);
    page[slot(FLAT_RING3_CS64)] = segment::code64(3);
    page[slot(RING1_KERNEL_SS)] = segment::data(1);
    let tss = segment::tss(t::TSS, segment::TSS_SIZE as u64 - 1);
    page[slot(TSS_SELECTOR)] = tss[0];
    page[slot(TSS_SELECTOR) + 1] = tss[1];
}

/// Loads this CPU's GDT, TSS and IDT from the trampoline and makes the GDT
/// read-only. Must run on the hypervisor view that `build` filled.
///
/// # Safety
/// `views` must come from [`build`] for this CPU, and its `hv_root` must be
/// the current CR3.
pub unsafe fn load(views: &CpuViews) {
    #[repr(C, packed)]
    struct Pointer {
        limit: u16,
        base: u64,
    }
    let gdtr = Pointer {
        limit: GDT_LIMIT,
        base: t::GDT,
    };
    let idtr = Pointer {
        limit: 4095,
        base: t::IDT,
    };
    // SAFETY: the GDT holds the hypervisor's code and data descriptors at
    // the selectors loaded here; the far return reloads CS from it.
    unsafe {
        asm!(
            "lgdt [{gdtr}]",
            "push {cs}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            "mov ss, {ds:x}",
            "xor {tmp:e}, {tmp:e}",
            "mov ds, {tmp:x}",
            "mov es, {tmp:x}",
            "mov fs, {tmp:x}",
            "mov gs, {tmp:x}",
            "ltr {tss:x}",
            "lidt [{idtr}]",
            gdtr = in(reg) &gdtr,
            idtr = in(reg) &idtr,
            cs = in(reg) u64::from(HYPERVISOR_CS),
            ds = in(reg) u64::from(HYPERVISOR_DS),
            tss = in(reg) u64::from(TSS_SELECTOR),
            tmp = out(reg) _,
        );
    }
    let reserved = t::GDT + RESERVED_PAGE * PAGE_SIZE;
    // SAFETY: `hv_root` is the live tree; the entry is this CPU's reserved
    // GDT page, which from now on only the CPU reads.
    unsafe {
        let (entry_pa, entry) =
            paging::lookup(views.hv_root, reserved).expect("GDT page is mapped");
        (paging::phys_to_virt(entry_pa) as *mut u64).write(entry & !RW);
    }
    super::cpu::invlpg(reserved);
}

// The GDT's pages share one L1 table, whose entries `load_guest_gdt`
// walks to once.
const _: () = assert!(t::GDT % (512 * PAGE_SIZE) + t::GDT_PAGES * PAGE_SIZE <= 512 * PAGE_SIZE);

/// Maps a guest's GDT frames (machine frame numbers) read-only into this
/// CPU's GDT pages 0-13, the zero page behind the rest, and drops the
/// translations that changed (they are global). `mapped` is how many
/// leading pages may map something other than the zero page, and becomes
/// the number of `frames`. Every switch between vCPUs loads a GDT: one
/// walk to the L1 table, only the pages either GDT covers looked at, and
/// no write or flush for a page that stays keep it short.
pub fn load_guest_gdt(views: &CpuViews, mapped: &mut u64, frames: &[u64]) {
    let count = u64::try_from(frames.len()).unwrap_or(u64::MAX);
    let end = count.max(*mapped).min(RESERVED_PAGE);
    *mapped = count.min(RESERVED_PAGE);
    // SAFETY: `hv_root` is this CPU's tree, in which the trampoline's
    // GDT pages are mapped.
    let Some(first) = (unsafe { paging::l1_entry_address(views.hv_root, t::GDT) }) else {
        return;
    };
    for page in 0..end {
        let pa = usize::try_from(page)
            .ok()
            .and_then(|i| frames.get(i))
            .map_or(views.gdt_zero, |mfn| mfn << 12);
        let slot = paging::phys_to_virt(first + page * 8) as *mut u64;
        // SAFETY: the GDT pages' L1 entries are consecutive in one table
        // (asserted above); each leaf is replaced by another read-only,
        // non-executable frame the guest cannot write.
        unsafe {
            let entry = slot.read();
            if entry & paging::P == 0 || entry & paging::ADDR_MASK == pa {
                continue;
            }
            slot.write(pa | (entry & !paging::ADDR_MASK));
        }
        super::cpu::invlpg(t::GDT + page * PAGE_SIZE);
    }
}

/// Selector of the LDT descriptor in the reserved GDT page (two slots after
/// the TSS's).
pub const LDT_SELECTOR: u16 = TSS_SELECTOR + 16;

/// Maps (`Some(frame)`, read-only) or unmaps page `page` of the LDT window.
fn set_ldt_page_raw(hv_root: u64, page: u64, frame: Option<u64>) {
    let va = t::LDT + page * PAGE_SIZE;
    // SAFETY: the LDT window's L1 is this CPU's (built above); its entries
    // only ever hold read-only, non-executable mappings of frames that
    // carry the descriptor type, or nothing.
    unsafe {
        if let Some(entry) = paging::l1_entry_address(hv_root, va) {
            let value = frame.map_or(0, |mfn| (mfn << 12) | paging::P | NX);
            (paging::phys_to_virt(entry) as *mut u64).write(value);
        }
    }
    super::cpu::invlpg(va);
}

/// Maps or unmaps one page of this CPU's LDT window.
pub fn set_ldt_page(views: &CpuViews, page: u64, frame: Option<u64>) {
    set_ldt_page_raw(views.hv_root, page, frame);
}

/// Loads an LDT of `entries` descriptors at the LDT window (or none, for 0):
/// writes the LDT descriptor into the reserved GDT page through the direct
/// map and loads LDTR.
pub fn load_ldt(views: &CpuViews, entries: u64) {
    if entries == 0 {
        // SAFETY: a null LDTR makes every LDT selector fault; nothing of
        // the hypervisor uses the LDT.
        unsafe { asm!("lldt {0:x}", in(reg) 0u32, options(nostack, preserves_flags)) };
        return;
    }
    let slot = usize::from(LDT_SELECTOR >> 3) - FIRST_RESERVED_GDT_BYTE / 8;
    let descriptor = segment::ldt(t::LDT, entries * 8 - 1);
    // SAFETY: the reserved GDT page of this CPU is mapped (read-only) in the
    // trampoline; its frame is written through the direct map, in the two
    // slots reserved for the LDT descriptor, which no loaded selector uses.
    // LLDT then loads that descriptor, which names the LDT window.
    unsafe {
        if let Some((_, entry)) = paging::lookup(views.hv_root, t::GDT + RESERVED_PAGE * PAGE_SIZE)
        {
            let page = paging::phys_to_virt(entry & paging::ADDR_MASK) as *mut u64;
            page.add(slot).write(descriptor[0]);
            page.add(slot + 1).write(descriptor[1]);
        }
        asm!("lldt {0:x}", in(reg) u32::from(LDT_SELECTOR), options(nostack, preserves_flags));
    }
}
