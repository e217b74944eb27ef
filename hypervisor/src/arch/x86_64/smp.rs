//! Starting the other CPUs the MADT lists (INIT-SIPI-SIPI) and giving
//! each what the boot CPU has: its own root table with its own trampoline
//! (GDT, TSS, IDT, entry and IST stacks; another CPU's is never mapped
//! there), a hypervisor stack, the same control registers and SYSCALL
//! entry, and its local APIC. The pure parts (the start-up area, the
//! parameter block, the stacks) are `crate::smp`.
//!
//! CPUs are started one at a time through one start-up area below 1 MiB,
//! which is wiped once the last one has left it. A CPU that does not
//! report within [`ANSWER_NS`] is sent INIT again, which parks it until
//! another start-up IPI that it never gets, so it cannot wake later into
//! the parameters of the next one. A started CPU fills its slot of
//! `percpu::CPUS` (its views, its APIC id) and waits in its own idle loop
//! (`traps::idle_here`), halted with interrupts on, until the scheduler
//! gives it a domU's vCPU, which it enters through `traps::run_guest`
//! (dom0 runs on the boot CPU only, `docs/scheduler.md`). It takes
//! event-check IPIs, which the boot CPU sends each one once to check that
//! IPIs reach it ([`start_cpus`]).
extern crate alloc;

use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, Ordering};

use alloc::boxed::Box;
use alloc::vec::Vec;

use crate::hypercall::Pcpu;
use crate::layout::{PAGE_SIZE, TRAMPOLINE_L4_SLOT};
use crate::smp::{GDT, MAX_CPUS, STARTUP_PAGES, far_pointer, gdtr, params, selectors, sipi_vector};

use super::cpu::{self, Features};
use super::entry::GuestRegs;
use super::percpu::{self, PerCpu};
use super::trampoline::{self, CpuViews};
use super::{apic, entry, mem, msr, paging, time, traps};

/// How long a started CPU has to report, in nanoseconds.
const ANSWER_NS: u64 = 1_000_000_000;
/// How far ahead a started CPU arms its timer to check that it fires.
const TIMER_CHECK_NS: u64 = 1_000_000;
/// The wait after INIT before the first start-up IPI (10 ms, as the
/// MultiProcessor Specification asks).
const INIT_DELAY_NS: u64 = 10_000_000;
/// The wait between the two start-up IPIs (200 µs).
const SIPI_DELAY_NS: u64 = 200_000;

/// EFER.LMA, which only the CPU sets.
const EFER_LMA: u64 = 1 << 10;
/// CR0.PE | CR0.PG.
const CR0_PE_PG: u64 = (1 << 0) | (1 << 31);
/// CR0.TS.
const CR0_TS: u64 = 1 << 3;

global_asm!(
    r#"
    .pushsection .rodata.ap_startup, "a"
    .balign 16
    .global ap_startup_begin
    .global ap_startup_32
    .global ap_startup_64
    .global ap_startup_end
    .code16
ap_startup_begin:
    cli
    cld
    mov     %cs, %ax
    mov     %ax, %ds
    movzwl  %ax, %ebx
    shl     $4, %ebx
    lgdtl   {gdtr}
    mov     %cr0, %eax
    or      $1, %eax
    mov     %eax, %cr0
    ljmpl   *{far32}

    .code32
ap_startup_32:
    mov     ${data}, %ax
    mov     %ax, %ds
    mov     %ax, %es
    mov     %ax, %ss
    mov     %cr4, %eax
    or      $(1 << 5), %eax
    mov     %eax, %cr4
    mov     {cr3}(%ebx), %eax
    mov     %eax, %cr3
    mov     $0xc0000080, %ecx
    mov     {efer}(%ebx), %eax
    mov     {efer}+4(%ebx), %edx
    wrmsr
    mov     {cr0}(%ebx), %eax
    mov     %eax, %cr0
    ljmpl   *{far64}(%ebx)

    .code64
ap_startup_64:
    mov     %ebx, %ebx
    mov     {stack}(%rbx), %rsp
    mov     {arg}(%rbx), %rdi
    call    *{entry}(%rbx)
1:  cli
    hlt
    jmp     1b
ap_startup_end:
    .popsection
    "#,
    gdtr = const params::GDTR,
    far32 = const params::FAR32,
    far64 = const params::FAR64,
    cr3 = const params::CR3,
    efer = const params::EFER,
    cr0 = const params::CR0,
    stack = const params::STACK,
    arg = const params::ARG,
    entry = const params::ENTRY,
    data = const selectors::DATA,
    options(att_syntax)
);

unsafe extern "C" {
    static ap_startup_begin: u8;
    static ap_startup_32: u8;
    static ap_startup_64: u8;
    static ap_startup_end: u8;
}

/// What a started CPU is given, and how it says it is up.
struct ApStart {
    /// Its index (0 is the boot CPU; below `MAX_CPUS`).
    index: u16,
    /// Its two root tables and trampoline.
    views: CpuViews,
    /// The boot CPU's features (the same machine).
    features: Features,
    /// Set by the CPU once it runs on its own tables.
    online: AtomicBool,
}

/// The CPUs the boot CPU started and left halted, for the record.
static STARTED: spin::Mutex<Vec<u32>> = spin::Mutex::new(Vec::new());

/// Starts every CPU of `apic_ids` but the boot CPU (`boot_id`) through the
/// start-up area at `area` (`crate::smp::startup_area`), each on its own
/// tables built from the boot CPU's root `hv_root`. Logs which came up.
pub fn start_cpus(
    features: &Features,
    hv_root: u64,
    boot_id: u32,
    apic_ids: &[u32],
    area: Option<u64>,
) {
    let others: Vec<u32> = apic_ids
        .iter()
        .copied()
        .filter(|&id| id != boot_id)
        .collect();
    if others.is_empty() {
        return;
    }
    let Some((base, vector)) = area.and_then(|a| Some((a, sipi_vector(a)?))) else {
        log::warn!(
            "SMP: no free page below 1 MiB for the start-up code; {} CPUs stay down",
            others.len()
        );
        return;
    };
    load_startup_code(base);
    let mut up = 1usize;
    for &id in &others {
        if up >= MAX_CPUS {
            log::warn!("SMP: CPU with APIC id {id} not started: {MAX_CPUS} CPUs at most");
            continue;
        }
        if start_one(features, hv_root, base, vector, up, id) {
            STARTED.lock().push(id);
            up += 1;
        }
    }
    // SAFETY: the area is the hypervisor's (below 1 MiB, never handed to
    // the frame allocator) and no CPU runs there any more: each started
    // one reported from its own tables, each other one was parked by INIT.
    unsafe {
        core::ptr::write_bytes(
            paging::phys_to_virt(base) as *mut u8,
            0,
            usize::try_from(STARTUP_PAGES * PAGE_SIZE).unwrap_or(0),
        );
    }
    log::info!(
        "SMP: {up} of {} CPUs up (APIC ids {:?} started; each runs domUs, dom0 runs on the boot CPU)",
        others.len() + 1,
        STARTED.lock().as_slice()
    );
    let answered = (1..up).filter(|&cpu| answers_event_check(cpu)).count();
    log::info!(
        "SMP: {answered} of {} started CPUs answer event-check IPIs",
        up - 1
    );
    let flushed = (1..up).filter(|&cpu| answers_flush(cpu)).count();
    log::info!(
        "SMP: {flushed} of {} started CPUs answer flush IPIs",
        up - 1
    );
}

/// Asks started CPU `cpu` for a TLB flush (`percpu::flush_elsewhere`'s
/// request and IPI) and waits up to [`ANSWER_NS`] for its answer; whether
/// it answered.
fn answers_flush(cpu: usize) -> bool {
    let Some(slot) = percpu::cpu(cpu) else {
        return false;
    };
    let Some(ticket) = slot.ask_flush() else {
        return false;
    };
    let deadline = time::now_ns().saturating_add(ANSWER_NS);
    while !slot.flush_answered(ticket) {
        if time::now_ns() >= deadline {
            log::warn!("SMP: CPU {cpu} did not answer a flush IPI");
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

/// Sends started CPU `cpu` an event-check IPI and waits up to
/// [`ANSWER_NS`] for it to count one more; whether it did.
fn answers_event_check(cpu: usize) -> bool {
    let Some((slot, id)) = percpu::cpu(cpu).and_then(|s| Some((s, s.apic_id()?))) else {
        return false;
    };
    let before = slot.event_checks();
    apic::send_event_check(id);
    let deadline = time::now_ns().saturating_add(ANSWER_NS);
    while slot.event_checks() == before {
        if time::now_ns() >= deadline {
            log::warn!("SMP: CPU {cpu} (APIC id {id}) did not take an event-check IPI");
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

/// The physical CPUs for `XENPF_get_cpuinfo`, set once after
/// [`start_cpus`].
pub static PCPUS: spin::Once<Vec<Pcpu>> = spin::Once::new();

/// Records the physical CPUs: the boot CPU (`boot_id`) first, then the
/// others of `apic_ids` (with the ACPI ids `acpi_ids`, in the same MADT
/// order), online if [`start_cpus`] started them.
pub fn record_pcpus(boot_id: u32, apic_ids: &[u32], acpi_ids: &[u32]) {
    let acpi_of = |apic_id: u32| {
        apic_ids
            .iter()
            .position(|&id| id == apic_id)
            .and_then(|i| acpi_ids.get(i).copied())
            .unwrap_or(u32::MAX)
    };
    let started = STARTED.lock();
    let mut pcpus = alloc::vec![Pcpu {
        apic_id: boot_id,
        acpi_id: acpi_of(boot_id),
        online: true,
    }];
    pcpus.extend(
        apic_ids
            .iter()
            .filter(|&&id| id != boot_id)
            .map(|&id| Pcpu {
                apic_id: id,
                acpi_id: acpi_of(id),
                online: started.contains(&id),
            }),
    );
    PCPUS.call_once(|| pcpus);
}

/// Copies the start-up code into the first page of the area and builds
/// the identity map of the first 2 MiB in the next three.
fn load_startup_code(base: u64) {
    let code = core::ptr::addr_of!(ap_startup_begin);
    let len = core::ptr::addr_of!(ap_startup_end) as usize - code as usize;
    assert!(
        len as u64 <= params::GDT,
        "the start-up code overlaps its parameters"
    );
    let (root, pdpt, pd) = (base + PAGE_SIZE, base + 2 * PAGE_SIZE, base + 3 * PAGE_SIZE);
    // SAFETY: the area is free RAM below 1 MiB that only this module uses
    // (`crate::smp::startup_area`), reached through the direct map; the
    // code is `len` bytes of the image's read-only data.
    unsafe {
        core::ptr::write_bytes(
            paging::phys_to_virt(base) as *mut u8,
            0,
            usize::try_from(STARTUP_PAGES * PAGE_SIZE).unwrap_or(0),
        );
        core::ptr::copy_nonoverlapping(code, paging::phys_to_virt(base) as *mut u8, len);
        paging::table(root)[0] = pdpt | paging::P | paging::RW;
        paging::table(pdpt)[0] = pd | paging::P | paging::RW;
        paging::table(pd)[0] = paging::P | paging::RW | paging::PS;
    }
    let page = page_bytes(base);
    for (i, descriptor) in GDT.iter().enumerate() {
        let at = usize::try_from(params::GDT).unwrap_or(0) + 8 * i;
        page[at..at + 8].copy_from_slice(&descriptor.to_le_bytes());
    }
    put(page, params::GDTR, &gdtr(base));
    let offset = |sym: *const u8| sym as u64 - code as u64;
    put(
        page,
        params::FAR32,
        &far_pointer(
            base,
            offset(core::ptr::addr_of!(ap_startup_32)),
            selectors::CODE32,
        ),
    );
    put(
        page,
        params::FAR64,
        &far_pointer(
            base,
            offset(core::ptr::addr_of!(ap_startup_64)),
            selectors::CODE64,
        ),
    );
    put(page, params::CR3, &root.to_le_bytes());
    put(page, params::EFER, &(msr::efer() & !EFER_LMA).to_le_bytes());
    put(
        page,
        params::CR0,
        &((cpu::read_cr0() & !CR0_TS) | CR0_PE_PG).to_le_bytes(),
    );
    put(
        page,
        params::ENTRY,
        &(ap_entry as *const () as u64).to_le_bytes(),
    );
}

/// The start-up page at `base`, through the direct map.
fn page_bytes(base: u64) -> &'static mut [u8] {
    // SAFETY: the page is the start-up area's first, which only this
    // module touches, and only from the boot CPU while no other CPU runs
    // there (each CPU is started after its parameters are written).
    unsafe {
        core::slice::from_raw_parts_mut(
            paging::phys_to_virt(base) as *mut u8,
            usize::try_from(PAGE_SIZE).unwrap_or(0),
        )
    }
}

/// Writes `bytes` at offset `at` of the start-up page.
fn put(page: &mut [u8], at: u64, bytes: &[u8]) {
    let at = usize::try_from(at).unwrap_or(usize::MAX);
    if let Some(slot) = page.get_mut(at..at + bytes.len()) {
        slot.copy_from_slice(bytes);
    }
}

/// Builds CPU `index`'s tables and stack, starts the CPU with APIC id
/// `id` and waits for it. Whether it came up.
fn start_one(
    features: &Features,
    boot_root: u64,
    base: u64,
    vector: u8,
    index: usize,
    id: u32,
) -> bool {
    let root = mem::alloc_zeroed();
    // SAFETY: both are hypervisor root tables; the new one gets every slot
    // of the boot CPU's but the trampoline's, which `trampoline::build`
    // fills with this CPU's own.
    unsafe {
        let (from, to) = (paging::table(boot_root), paging::table(root));
        for (slot, entry) in from.iter().enumerate() {
            if slot != TRAMPOLINE_L4_SLOT {
                to[slot] = *entry;
            }
        }
    }
    let stack_top = mem::map_stack(boot_root, index, features);
    // SAFETY: `root` holds the M2P (slot 256, copied above); the allocator
    // hands out zeroed hypervisor frames.
    let views = unsafe {
        trampoline::build(
            u64::try_from(index).unwrap_or(u64::MAX),
            root,
            stack_top,
            features.pcid,
            &mut mem::alloc_zeroed,
            mem::image_to_phys,
        )
    };
    let start: &'static ApStart = Box::leak(Box::new(ApStart {
        index: u16::try_from(index).unwrap_or(u16::MAX),
        views,
        features: *features,
        online: AtomicBool::new(false),
    }));
    // The switch's root: the identity map of slot 0, and the upper half
    // of this CPU's own root (its trampoline included).
    // SAFETY: the area's second page is the switch's root (see
    // `load_startup_code`); nothing runs on it now.
    unsafe {
        let (own, switch) = (paging::table(root), paging::table(base + PAGE_SIZE));
        switch[256..].copy_from_slice(&own[256..]);
    }
    let page = page_bytes(base);
    put(page, params::STACK, &stack_top.to_le_bytes());
    put(
        page,
        params::ARG,
        &(start as *const ApStart as u64).to_le_bytes(),
    );

    apic::send_init(id);
    wait_ns(INIT_DELAY_NS);
    for _ in 0..2 {
        apic::send_startup(id, vector);
        wait_ns(SIPI_DELAY_NS);
        if start.online.load(Ordering::Acquire) {
            break;
        }
    }
    let deadline = time::now_ns().saturating_add(ANSWER_NS);
    while !start.online.load(Ordering::Acquire) {
        if time::now_ns() >= deadline {
            apic::send_init(id);
            log::warn!("SMP: CPU with APIC id {id} did not come up; parked with INIT");
            return false;
        }
        core::hint::spin_loop();
    }
    true
}

/// Arms this CPU's timer [`TIMER_CHECK_NS`] ahead and waits, halted with
/// interrupts on, until it has fired. A CPU whose timer never fires stays
/// halted here and never reports: the boot CPU parks it as one that did
/// not come up.
fn wait_for_timer() {
    let slot = percpu::this_cpu();
    apic::set_timer(time::tsc_at(time::now_ns().saturating_add(TIMER_CHECK_NS)));
    while slot.timer_armed() {
        cpu::wait_for_interrupt();
    }
}

/// Spins for `ns` nanoseconds.
fn wait_ns(ns: u64) {
    let until = time::now_ns().saturating_add(ns);
    while time::now_ns() < until {
        core::hint::spin_loop();
    }
}

/// Where a started CPU arrives from the start-up code, in long mode on the
/// switch's root and its own stack.
extern "C" fn ap_entry(start: &'static ApStart) -> ! {
    // SAFETY: the CPU's own root maps the image, its stack and the direct
    // map exactly as the switch's root did (the same upper-half entries).
    unsafe { cpu::write_cr3(start.views.hv_root) };
    super::setup::enable_protections(&start.features);
    // SAFETY: `views` was built for this CPU and its root is now CR3.
    unsafe { trampoline::load(&start.views) };
    let (lstar, cstar) = entry::syscall_entries();
    cpu::enable_guest_features(&start.features, lstar, cstar);
    let id = apic::init_secondary(&start.features);
    let slot = percpu::this_cpu();
    *slot.state.lock() = PerCpu::new(start.index, start.views);
    slot.set_apic_id(id);
    wait_for_timer();
    log::info!(
        "SMP: CPU {} (APIC id {id}) up, its timer fires",
        start.index
    );
    start.online.store(true, Ordering::Release);
    percpu::note_other_cpu_up(usize::from(start.index));
    let mut regs = GuestRegs::default();
    {
        let mut state = slot.state.lock();
        // The chosen domain stays this CPU's (`CpuSlot::holding`) while
        // its slot is let go for `run_guest` to take again.
        drop(traps::idle_here(&mut state, &mut regs));
    }
    traps::run_guest(&mut regs)
}
