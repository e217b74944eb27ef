//! Start of day: from the boot code's first Rust call to dom0's first instruction.
extern crate alloc;

use alloc::vec::Vec;

use crate::bootinfo::{BootInfo, MAX_BOOT_DATA_RANGES, MAX_MODULES, MemoryKind, PhysRange};
use crate::cmdline::{self, SerialConfig};
use crate::exit::HostExit;
use crate::irq::{RedirectionEntry, VectorAllocator};
use crate::layout::PAGE_SIZE;
use crate::pirq::Lines;
use crate::wallclock::Wallclock;

use super::ioapic::IoApics;
use super::percpu::{MMCFG, READ_ONLY_MMIO, RESERVED_MMIO};
use super::{
    acpi, apic, builder, cpu, entry, machine, mem, percpu, pic, pirq, rtc, serial, smp, time,
    trampoline, traps,
};
use crate::iomem::{MSI_WINDOW, Mmcfg, mmcfg_len};

/// Called by `boot/entry.S` in long mode, on the boot stack, with the boot
/// loader's magic and the physical address of its information structure.
#[unsafe(no_mangle)]
extern "C" fn hv_start64(magic: u32, info: u32) -> ! {
    serial::init();
    pic::disable();
    log::info!(
        "oxen {} ({}), a Xen-compatible PV hypervisor",
        env!("CARGO_PKG_VERSION"),
        env!("HV_CHANGESET")
    );
    let boot = match super::bootinfo::read(magic, info) {
        Ok(boot) => boot,
        Err(e) => panic!("boot information unusable: {e}"),
    };
    let command_line = boot.hypervisor_cmdline();
    let (config, diagnostics) = cmdline::parse(command_line);
    serial::configure(&config.com1);
    serial::set_log_levels(config.loglvl, config.guest_loglvl);
    if config.dom0_vcpus_pin {
        log::info!("dom0_vcpus_pin: dom0 runs on CPU 0 only, so every vCPU of it runs there");
    }
    // Logged with the test nonce hidden: dom0 reads the log
    // (`sysctl readconsole`).
    let mut shown = [0u8; 1024];
    let n = cmdline::hide_test_nonce(command_line.as_bytes(), &mut shown);
    let shown = core::str::from_utf8(&shown[..n])
        .or_else(|e| core::str::from_utf8(&shown[..e.valid_up_to()]))
        .unwrap_or_default();
    log::info!("command line: {shown}");
    log::info!(
        "boot loader: {} ({:?})",
        boot.loader_name.unwrap_or("unknown"),
        boot.protocol
    );
    for diagnostic in diagnostics.iter() {
        log::warn!("command line: {diagnostic}");
    }
    if diagnostics.dropped() > 0 {
        log::warn!(
            "command line: {} more problems not shown",
            diagnostics.dropped()
        );
    }

    let features = cpu::features();
    report_cpu(&features);
    let (tsc_hz, ppm) = time::init();
    log::info!(
        "TSC: {}.{:03} MHz (measured against the PIT, to {ppm} ppm)",
        tsc_hz / 1_000_000,
        (tsc_hz / 1000) % 1000
    );
    let apic_id = apic::init(&features, tsc_hz);
    let (max_frame, direct_map_end, startup_area) = init_memory(&boot);
    let (hv_root, hv_stack_top) = mem::build_hypervisor_tables(&features, direct_map_end);
    mem::build_m2p(hv_root, max_frame);
    mem::init_frame_table(max_frame, |mfn| is_ram(&boot, mfn));
    let pcid = features.pcid;
    // SAFETY: the new tree maps the image, the boot stack (in .bss), the
    // direct map (which holds every frame in use) exactly as the boot
    // tables did, so everything running keeps working.
    unsafe { cpu::write_cr3(hv_root) };
    enable_protections(&features);
    mem::init_heap(config.max_domains);
    crate::emulate::prepare_decoder();
    // SAFETY: `hv_root` is live and holds the M2P; the allocator hands out
    // zeroed hypervisor frames.
    let views = unsafe {
        trampoline::build(
            0,
            hv_root,
            hv_stack_top,
            pcid,
            &mut mem::alloc_zeroed,
            mem::image_to_phys,
        )
    };
    // SAFETY: `views` was just built for this CPU and `hv_root` is CR3.
    unsafe { trampoline::load(&views) };
    percpu::this_cpu().set_apic_id(apic_id);
    let (lstar, cstar) = entry::syscall_entries();
    cpu::enable_guest_features(&features, lstar, cstar);
    let platform = acpi::report(match boot.rsdp {
        Some(rsdp) => acpi::RsdpSource::Copy(rsdp.bytes()),
        None => acpi::RsdpSource::Search,
    })
    .unwrap_or_default();
    smp::start_cpus(
        &features,
        hv_root,
        apic_id,
        &platform.apic_ids,
        startup_area,
    );
    smp::record_pcpus(apic_id, &platform.apic_ids, &platform.acpi_ids);
    reserve_mmio(&platform, direct_map_end);
    init_wallclock(&platform);
    let ioapics = IoApics::init(&platform.ioapics);
    let mut vectors = VectorAllocator::new();
    let console_gsi = route_console_input(&config.com1, &platform, &ioapics, apic_id, &mut vectors);
    let isa = |gsi: u32| {
        (0..16u8)
            .filter_map(|irq| platform.isa_overrides.route(irq))
            .find(|route| route.gsi == gsi)
            .map(|route| (route.trigger, route.polarity))
    };
    let lines = Lines::new(ioapics.nr_gsis(), isa, console_gsi.as_slice(), vectors);
    pirq::init(lines, ioapics, apic_id);
    let (free, total) = mem::frame_counts();
    log::info!(
        "memory: {} MiB usable, {} MiB free after setup",
        (total * PAGE_SIZE) >> 20,
        (free * PAGE_SIZE) >> 20
    );

    let mut regs = match builder::build_dom0(&boot, &config, &views) {
        Ok(regs) => regs,
        Err(e) => {
            log::error!("dom0 image rejected: {e}");
            machine::end(HostExit::BadDom0Image)
        }
    };
    log::info!("starting dom0");
    traps::run_guest(&mut regs)
}

/// Keeps the hypervisor's own MMIO from every domain: the local APIC page
/// and the MSI window it lies in, the I/O APICs ACPI describes, and the
/// conventional I/O APIC page whatever ACPI says. The HPET (ACPI's and the
/// conventional page) and PCI's MMCFG, which the hypervisor does not use,
/// a domain with I/O rights may map read-only, as on Xen (its stores there
/// are emulated: see `crate::iomem::read_only_write`). Configuration
/// writes through MMCFG are performed through the direct map, which ends
/// at `direct_map_end`; a region past it takes no writes.
fn reserve_mmio(platform: &acpi::Platform, direct_map_end: u64) {
    const LEGACY_IOAPIC: u64 = 0xfec0_0000;
    const LEGACY_HPET: u64 = 0xfed0_0000;
    let mut mmio = platform.mmio.clone();
    for base in [apic::mmio_base(), LEGACY_IOAPIC] {
        mmio.add(base, PAGE_SIZE);
    }
    mmio.add(MSI_WINDOW.0, MSI_WINDOW.1);
    RESERVED_MMIO.call_once(|| mmio);
    let mut read_only = platform.read_only_mmio.clone();
    read_only.add(LEGACY_HPET, PAGE_SIZE);
    READ_ONLY_MMIO.call_once(|| read_only);
    let (covered, beyond): (Vec<Mmcfg>, Vec<Mmcfg>) = platform.mmcfg.iter().partition(|region| {
        region.base + mmcfg_len(region.start_bus, region.end_bus) <= direct_map_end
    });
    for region in beyond {
        log::warn!(
            "ACPI: PCI MMCFG at {:#x} lies past the direct map: stores to it are dropped",
            region.base
        );
    }
    MMCFG.call_once(|| covered);
}

/// Sets the wall clock from the CMOS RTC (it stays at 1970-01-01 at
/// system time 0 when the RTC gives no valid date).
fn init_wallclock(platform: &acpi::Platform) {
    if platform.no_cmos_rtc {
        log::warn!("wall clock: the FADT says there is no CMOS RTC; starting at 1970-01-01");
        return;
    }
    let Some((registers, at)) = rtc::read(platform.rtc_century) else {
        log::warn!("wall clock: the CMOS RTC gives no stable reading; starting at 1970-01-01");
        return;
    };
    let Some(date) = registers.decode() else {
        log::warn!(
            "wall clock: the CMOS RTC holds no valid date ({registers:?}); starting at 1970-01-01"
        );
        return;
    };
    time::set_wallclock(Wallclock::reading_at(date.unix_seconds(), 0, at));
    log::info!("wall clock: {date} (CMOS RTC)");
}

/// Routes COM1's receive interrupt (ISA IRQ `com1.irq`, through the
/// MADT's overrides, with the polarity and trigger mode they give) to
/// this CPU, fixed delivery, with a vector from `vectors`; returns its
/// GSI, which no guest may then bind. Without it (`irq` 0, as on Xen, or
/// no I/O APIC for its GSI) `CONSOLEIO_read` still finds the input: it
/// drains the UART itself.
fn route_console_input(
    com1: &SerialConfig,
    platform: &acpi::Platform,
    ioapics: &IoApics,
    apic_id: u32,
    vectors: &mut VectorAllocator,
) -> Option<u32> {
    let polled = |why: core::fmt::Arguments<'_>| {
        log::info!("com1: no receive interrupt ({why}): input is read when dom0 asks");
        None
    };
    if com1.irq == 0 {
        return polled(format_args!("irq 0"));
    }
    let Some(route) = platform.isa_overrides.route(com1.irq) else {
        return polled(format_args!("irq {} is not an ISA IRQ", com1.irq));
    };
    let Some((ioapic, pin)) = ioapics.find(route.gsi) else {
        return polled(format_args!("no IOAPIC has GSI {}", route.gsi));
    };
    let Some(vector) = vectors.allocate() else {
        return polled(format_args!("no free vector"));
    };
    let Some(entry) = RedirectionEntry::fixed(vector, &route, apic_id) else {
        return polled(format_args!(
            "APIC id {apic_id} is out of the IOAPIC's reach"
        ));
    };
    if serial::enable_receive_interrupts(vector, || ioapic.route(pin, &entry)) {
        log::info!(
            "com1: receive interrupt on ISA IRQ {} ({route}), IOAPIC {} pin {pin}, vector {vector:#x}",
            com1.irq,
            ioapic.id
        );
        Some(route.gsi)
    } else {
        polled(format_args!("no UART"))
    }
}

fn report_cpu(f: &cpu::Features) {
    let vendor = core::str::from_utf8(&f.vendor).unwrap_or("?");
    log::info!(
        "CPU: {vendor} family {:#x} model {:#x} stepping {}, {} physical / {} virtual address bits",
        f.family,
        f.model,
        f.stepping,
        f.phys_bits,
        f.virt_bits
    );
    log::info!(
        "CPU features: nx={} pge={} pcid={} invpcid={} smep={} smap={} umip={} 1g-pages={} xsave={} invariant-tsc={} x2apic={} tsc-deadline={}",
        f.nx,
        f.pge,
        f.pcid,
        f.invpcid,
        f.smep,
        f.smap,
        f.umip,
        f.page1gb,
        f.xsave,
        f.invariant_tsc,
        f.x2apic,
        f.tsc_deadline
    );
    if !f.nx {
        log::warn!("CPU has no NX: hypervisor data is executable");
    }
}

/// Initialises the frame allocator over usable RAM minus the image, the
/// modules and the boot data. Returns the number of machine frames the M2P
/// must cover, the end of the direct map, and where the other CPUs'
/// start-up code can go (`crate::smp::startup_area`: free RAM below 1 MiB,
/// which the allocator never hands out).
fn init_memory(boot: &BootInfo<'static>) -> (u64, u64, Option<u64>) {
    let (image_start, image_end) = mem::image_range();
    let mut excluded = [PhysRange { start: 0, end: 0 }; 2 + MAX_MODULES + MAX_BOOT_DATA_RANGES];
    let mut n = 0;
    let ranges = [
        PhysRange {
            start: 0,
            end: 0x10_0000,
        },
        PhysRange {
            start: image_start,
            end: image_end,
        },
    ];
    let modules = boot.modules().iter().map(|m| PhysRange {
        start: m.start,
        end: m.end,
    });
    for range in ranges
        .into_iter()
        .chain(modules)
        .chain(boot.boot_data_ranges().iter().copied())
    {
        excluded[n] = range;
        n += 1;
    }
    let mut usable = [(0u64, 0u64); 64];
    let mut count = 0;
    for range in boot.usable_ranges(&excluded[..n]) {
        log::info!(
            "RAM: {:#014x}-{:#014x} ({} KiB free)",
            range.start,
            range.end,
            range.len() >> 10
        );
        if count < usable.len() {
            usable[count] = (range.start, range.end);
            count += 1;
        } else {
            log::warn!(
                "RAM: more than {} free ranges; the rest is not used",
                usable.len()
            );
            break;
        }
    }
    let max_frame = boot.usable_frame_limit();
    if let Err(e) = mem::init_frames(max_frame, &usable[..count]) {
        panic!("memory: {e}");
    }
    // The first MiB (excluded[0]) is free for the start-up area, but for
    // what the boot loader left there.
    let low = boot
        .usable_ranges(&excluded[1..n])
        .map(|range| (range.start, range.end));
    (
        max_frame,
        (max_frame * PAGE_SIZE)
            .max(1 << 32)
            .next_multiple_of(1 << 30),
        crate::smp::startup_area(low),
    )
}

/// Whether machine frame `mfn` is RAM a domain may own: usable per the
/// memory map, and not in the first MiB (which, as on Xen, belongs to
/// DOMID_IO with the other non-RAM frames).
fn is_ram(boot: &BootInfo<'static>, mfn: u64) -> bool {
    let address = mfn * PAGE_SIZE;
    mfn >= 0x100
        && boot.regions().iter().any(|r| {
            r.kind == MemoryKind::Usable && r.start <= address && address + PAGE_SIZE <= r.end
        })
}

/// CR0.WP and CR0.AM (alignment checks for guest user code that sets
/// RFLAGS.AC), SMEP, UMIP, PGE and PCID where the CPU has them.
pub(super) fn enable_protections(f: &cpu::Features) {
    let mut cr4 = cpu::read_cr4();
    for (present, bit) in [
        (f.smep, cpu::CR4_SMEP),
        (f.umip, cpu::CR4_UMIP),
        (f.pge, cpu::CR4_PGE),
        (f.pcid, cpu::CR4_PCIDE),
    ] {
        if present {
            cr4 |= bit;
        }
    }
    // SAFETY: WP only makes read-only pages read-only for ring 0 too; the
    // CR4 bits are set only where CPUID reports them, and PCIDE only while
    // CR3[11:0] is zero (the hypervisor view runs with PCID 0).
    unsafe {
        cpu::write_cr0(cpu::read_cr0() | cpu::CR0_WP | cpu::CR0_AM);
        cpu::write_cr4(cr4);
    }
}
