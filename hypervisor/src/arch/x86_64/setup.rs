//! Start of day: from the boot code's first Rust call to dom0's first instruction.
use crate::cmdline;
use crate::exit::HostExit;
use crate::layout::PAGE_SIZE;

use super::{acpi, builder, cpu, machine, mem, pic, serial, trampoline, traps};

/// Called by `boot/entry.S` in long mode, on the boot stack, with the boot
/// loader's magic and the physical address of its information structure.
#[unsafe(no_mangle)]
extern "C" fn hv_start64(magic: u32, info: u32) -> ! {
    serial::init(115200);
    pic::disable();
    log::info!("oxen {} ({}), a Xen-compatible PV hypervisor", env!("CARGO_PKG_VERSION"), env!("HV_CHANGESET"));
    let boot = match super::bootinfo::read(magic, info) {
        Ok(boot) => boot,
        Err(e) => panic!("boot information unusable: {e}"),
    };
    let command_line = boot.hypervisor_command_line();
    let (config, diagnostics) = cmdline::parse(command_line);
    log::set_max_level(config.loglvl.level);
    log::info!("command line: {command_line}");
    log::info!("boot loader: {} (multiboot{})", boot.loader_name().unwrap_or("unknown"), boot.protocol());
    for diagnostic in diagnostics.iter() {
        log::warn!("command line: {diagnostic}");
    }
    if diagnostics.dropped() > 0 {
        log::warn!("command line: {} more problems not shown", diagnostics.dropped());
    }

    let features = cpu::features();
    report_cpu(&features);
    let (max_frame, direct_map_end) = init_memory(&boot);
    let (hv_root, hv_stack_top) = mem::build_hypervisor_tables(&features, direct_map_end);
    mem::build_m2p(hv_root, max_frame);
    let pcid = features.pcid;
    // SAFETY: the new tree maps the image, the boot stack (in .bss), the
    // direct map (which holds every frame in use) exactly as the boot
    // tables did, so everything running keeps working.
    unsafe { cpu::write_cr3(hv_root) };
    enable_protections(&features);
    mem::init_heap();
    // SAFETY: `hv_root` is live and holds the M2P; the allocator hands out
    // zeroed hypervisor frames.
    let views = unsafe { trampoline::build(0, hv_root, hv_stack_top, pcid, &mut mem::alloc_zeroed, mem::image_to_phys) };
    // SAFETY: `views` was just built for this CPU and `hv_root` is CR3.
    unsafe { trampoline::load(&views) };
    acpi::report(match boot.rsdp() {
        Some((revision, address)) => acpi::RsdpSource::Root(revision, address),
        None => acpi::RsdpSource::Search,
    });
    let (free, total) = mem::frame_counts();
    log::info!("memory: {} MiB usable, {} MiB free after setup", total * PAGE_SIZE >> 20, free * PAGE_SIZE >> 20);

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

fn report_cpu(f: &cpu::Features) {
    let vendor = core::str::from_utf8(&f.vendor).unwrap_or("?");
    log::info!("CPU: {vendor} family {:#x} model {:#x} stepping {}, {} physical / {} virtual address bits", f.family, f.model, f.stepping, f.phys_bits, f.virt_bits);
    log::info!(
        "CPU features: nx={} pge={} pcid={} invpcid={} smep={} smap={} umip={} 1g-pages={} xsave={} invariant-tsc={}",
        f.nx, f.pge, f.pcid, f.invpcid, f.smep, f.smap, f.umip, f.page1gb, f.xsave, f.invariant_tsc
    );
    if !f.nx {
        log::warn!("CPU has no NX: hypervisor data is executable");
    }
}

/// Initialises the frame allocator; returns the number of machine frames
/// the M2P must cover and the end of the direct map.
fn init_memory(boot: &super::bootinfo::Boot) -> (u64, u64) {
    let mut usable = [(0u64, 0u64); 64];
    let mut n = 0;
    let mut top = 0;
    for (start, end) in boot.usable_ram() {
        log::info!("RAM: {start:#014x}-{end:#014x} ({} KiB)", (end - start) >> 10);
        if n < usable.len() {
            usable[n] = (start, end);
            n += 1;
        }
        top = top.max(end);
    }
    let excluded = boot.excluded_ranges(mem::image_range());
    let max_frame = top.div_ceil(PAGE_SIZE);
    if let Err(e) = mem::init_frames(max_frame, &usable[..n], excluded.as_slice()) {
        panic!("memory: {e}");
    }
    (max_frame, top.max(1 << 32).next_multiple_of(1 << 30))
}

/// CR0.WP, SMEP, UMIP, PGE and PCID where the CPU has them.
fn enable_protections(f: &cpu::Features) {
    let mut cr4 = cpu::read_cr4();
    for (present, bit) in [(f.smep, cpu::CR4_SMEP), (f.umip, cpu::CR4_UMIP), (f.pge, cpu::CR4_PGE), (f.pcid, cpu::CR4_PCIDE)] {
        if present {
            cr4 |= bit;
        }
    }
    // SAFETY: WP only makes read-only pages read-only for ring 0 too; the
    // CR4 bits are set only where CPUID reports them, and PCIDE only while
    // CR3[11:0] is zero (the hypervisor view runs with PCID 0).
    unsafe {
        cpu::write_cr0(cpu::read_cr0() | cpu::CR0_WP);
        cpu::write_cr4(cr4);
    }
}
