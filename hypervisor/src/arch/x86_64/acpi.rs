//! ACPI tables: CPUs, interrupt controllers (the I/O APICs and how ISA
//! IRQs reach them) and timers, logged at boot and returned for setup, and
//! where the real-time clock keeps its century (through the `acpi` crate,
//! over the direct map).
extern crate alloc;

use alloc::vec::Vec;
use core::ptr::NonNull;

use acpi::fadt::Fadt;
use acpi::madt::{Madt, MadtEntry};
use acpi::mcfg::Mcfg;
use acpi::{AcpiHandler, AcpiTables, HpetInfo, PhysicalMapping};

use crate::iomem::{Mmcfg, ReservedMmio, mmcfg_len};
use crate::irq::IsaOverrides;
use crate::layout::PAGE_SIZE;
use crate::wallclock::century_register;

use super::paging::phys_to_virt;

/// Maps ACPI tables through the direct map (which covers all of RAM and the
/// first 4 GiB).
#[derive(Clone, Copy)]
struct DirectMap;

impl AcpiHandler for DirectMap {
    unsafe fn map_physical_region<T>(
        &self,
        physical_address: usize,
        size: usize,
    ) -> PhysicalMapping<Self, T> {
        let virt = phys_to_virt(physical_address as u64) as *mut T;
        // SAFETY: the direct map covers the address (firmware tables live
        // below the top of RAM or in the first 4 GiB), so the pointer is
        // valid and non-null for `size` bytes.
        unsafe {
            PhysicalMapping::new(
                physical_address,
                NonNull::new_unchecked(virt),
                size,
                size,
                *self,
            )
        }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// One I/O APIC, as the MADT describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IoApicInfo {
    /// Its id.
    pub id: u8,
    /// The physical address of its registers.
    pub address: u32,
    /// The GSI of its pin 0.
    pub gsi_base: u32,
}

/// What the MADT, HPET, MCFG and FADT tables say.
#[derive(Clone, Debug, Default)]
pub struct Platform {
    /// Enabled (or online-capable) local APICs, i.e. CPUs.
    pub cpus: u32,
    /// The APIC ids of the enabled ones (the CPUs to start), in MADT order.
    pub apic_ids: Vec<u32>,
    /// The ACPI processor ids of the same CPUs, in the same order.
    pub acpi_ids: Vec<u32>,
    /// The I/O APICs.
    pub ioapics: Vec<IoApicInfo>,
    /// Where the ISA IRQs arrive (the interrupt source overrides).
    pub isa_overrides: IsaOverrides,
    /// Whether an HPET is described.
    pub hpet: bool,
    /// The CMOS index of the RTC's century register, if it has one.
    pub rtc_century: Option<u8>,
    /// Whether the FADT says the RTC must not be used through its ports
    /// (`IAPC_BOOT_ARCH` bit 5, "CMOS RTC not present").
    pub no_cmos_rtc: bool,
    /// The I/O APICs' address ranges.
    pub mmio: ReservedMmio,
    /// The HPET's and MMCFG's address ranges, which a domain with I/O
    /// rights may map read-only.
    pub read_only_mmio: ReservedMmio,
    /// The MMCFG regions (segment 0's and others alike).
    pub mmcfg: Vec<Mmcfg>,
}

/// Where the ACPI tables are, as the boot loader told us.
pub enum RsdpSource<'a> {
    /// A copy of the RSDP (multiboot2 tags).
    Copy(&'a [u8]),
    /// Not given: search the BIOS areas for the RSDP.
    Search,
}

/// Reads the ACPI tables, logs CPUs, I/O APICs, interrupt source
/// overrides and the HPET, and finds the RTC's century register.
pub fn report(rsdp: RsdpSource<'_>) -> Option<Platform> {
    // SAFETY: the addresses come from the firmware's own RSDP, and the
    // handler maps them through the direct map, read only.
    let tables = unsafe {
        match rsdp {
            RsdpSource::Copy(bytes) => from_copy(bytes),
            RsdpSource::Search => AcpiTables::search_for_rsdp_bios(DirectMap).ok(),
        }
    };
    let Some(tables) = tables else {
        log::warn!("ACPI: no usable RSDP; CPU and interrupt-controller report skipped");
        return None;
    };
    let mut platform = Platform::default();
    if let Ok(madt) = tables.find_table::<Madt>() {
        for entry in madt.get().entries() {
            match entry {
                MadtEntry::LocalApic(lapic) => {
                    let (id, flags) = (lapic.apic_id, lapic.flags);
                    if flags & 1 != 0 {
                        platform.apic_ids.push(u32::from(id));
                        platform.acpi_ids.push(u32::from(lapic.processor_id));
                    }
                    if flags & 0b11 != 0 {
                        platform.cpus += 1;
                        log::info!("ACPI: CPU {} (APIC id {id})", platform.cpus - 1);
                    }
                }
                MadtEntry::LocalX2Apic(x2) => {
                    let (id, flags) = (x2.x2apic_id, x2.flags);
                    if flags & 1 != 0 {
                        platform.apic_ids.push(id);
                        platform.acpi_ids.push(x2.processor_uid);
                    }
                    if flags & 0b11 != 0 {
                        platform.cpus += 1;
                        log::info!("ACPI: CPU {} (x2APIC id {id})", platform.cpus - 1);
                    }
                }
                MadtEntry::IoApic(io) => {
                    let (id, address, base) = (
                        io.io_apic_id,
                        io.io_apic_address,
                        io.global_system_interrupt_base,
                    );
                    platform.ioapics.push(IoApicInfo {
                        id,
                        address,
                        gsi_base: base,
                    });
                    platform.mmio.add(u64::from(address), PAGE_SIZE);
                    log::info!("ACPI: IOAPIC id {id} at {address:#x}, GSI base {base}");
                }
                MadtEntry::InterruptSourceOverride(o) => {
                    let (bus, irq, gsi, flags) = (o.bus, o.irq, o.global_system_interrupt, o.flags);
                    match platform.isa_overrides.record(bus, irq, gsi, flags) {
                        Ok(()) => {
                            if let Some(route) = platform.isa_overrides.route(irq) {
                                log::info!("ACPI: ISA IRQ {irq} overridden: {route}");
                            }
                        }
                        Err(e) => log::warn!(
                            "ACPI: interrupt source override of bus {bus} IRQ {irq} (GSI {gsi}, flags {flags:#x}) ignored: {e}"
                        ),
                    }
                }
                _ => {}
            }
        }
    } else {
        log::warn!("ACPI: no MADT");
    }
    if let Ok(fadt) = tables.find_table::<Fadt>() {
        let fadt = fadt.get();
        platform.rtc_century = century_register(fadt.century);
        // Copied out first: the table is packed.
        let boot_flags = fadt.iapc_boot_arch;
        platform.no_cmos_rtc = boot_flags.use_time_and_alarm_namespace_for_rtc();
    }
    if let Ok(mcfg) = tables.find_table::<Mcfg>() {
        for entry in mcfg.get().entries() {
            let (base, start, end) = (
                entry.base_address,
                entry.bus_number_start,
                entry.bus_number_end,
            );
            let len = mmcfg_len(start, end);
            platform
                .read_only_mmio
                .add(base + (u64::from(start) << 20), len);
            platform.mmcfg.push(Mmcfg {
                base: base + (u64::from(start) << 20),
                start_bus: start,
                end_bus: end.max(start),
            });
            log::info!(
                "ACPI: PCI MMCFG at {:#x}, buses {start}-{end}",
                base + (u64::from(start) << 20)
            );
        }
    }
    if let Ok(hpet) = HpetInfo::new(&tables) {
        platform.hpet = true;
        platform
            .read_only_mmio
            .add(hpet.base_address as u64, PAGE_SIZE);
        log::info!(
            "ACPI: HPET at {:#x}, {} comparators",
            hpet.base_address,
            hpet.num_comparators()
        );
    }
    Some(platform)
}

/// Opens the tables from a copy of the RSDP: revision at byte 15, RSDT
/// address at 16, XSDT address at 24 (revision 2 and later).
///
/// # Safety
/// The copy must come from the firmware, so that the addresses in it point
/// at its tables.
unsafe fn from_copy(rsdp: &[u8]) -> Option<AcpiTables<DirectMap>> {
    let revision = *rsdp.get(15)?;
    let rsdt = u32::from_le_bytes(rsdp.get(16..20)?.try_into().ok()?);
    let address = if revision >= 2 {
        u64::from_le_bytes(rsdp.get(24..32)?.try_into().ok()?)
    } else {
        u64::from(rsdt)
    };
    // SAFETY: forwarded from the caller (the address comes from the firmware).
    unsafe { AcpiTables::from_rsdt(DirectMap, revision, usize::try_from(address).ok()?).ok() }
}
