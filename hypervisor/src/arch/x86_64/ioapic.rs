//! The I/O APICs: where device interrupts enter (Intel 82093AA datasheet,
//! §3: registers reached through the IOREGSEL/IOWIN pair; §3.2.4, the
//! redirection table).
//!
//! The MADT says where each one is and which GSIs its pins take
//! (`acpi::Platform`); every pin is masked at boot, and a pin is opened
//! only for an interrupt the hypervisor handles (`crate::irq` decides the
//! entry). The registers are reached through the direct map, which covers
//! the first 4 GiB; the firmware's MTRRs make that range uncached, as for
//! the local APIC. The boot CPU programs them during setup; afterwards
//! they are only reached through `super::pirq`, under its lock.
extern crate alloc;

use alloc::vec::Vec;

use crate::irq::{RedirectionEntry, pin_of};

use super::acpi::IoApicInfo;
use super::paging::phys_to_virt;

/// Register select, then the window onto the selected register.
const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;
/// The version register: bits 16-23 hold the highest pin's number.
const IOAPICVER: u32 = 0x01;
/// The first redirection table register; pin `n` is `0x10 + 2n` (low
/// dword) and `0x11 + 2n` (high dword).
const IOREDTBL: u32 = 0x10;

/// One I/O APIC.
#[derive(Debug)]
pub struct IoApic {
    /// Its id (as the MADT says).
    pub id: u8,
    /// Its register window in the direct map.
    window: u64,
    /// The GSI of its pin 0.
    pub gsi_base: u32,
    /// Its pins.
    pub pins: u8,
}

impl IoApic {
    /// The I/O APIC the MADT describes with `info`, its pins counted.
    ///
    /// # Safety
    /// `info.address` must be an I/O APIC's register window (the
    /// firmware's MADT says so), which no other code programs.
    unsafe fn new(info: &IoApicInfo) -> IoApic {
        let mut ioapic = IoApic {
            id: info.id,
            window: phys_to_virt(u64::from(info.address)),
            gsi_base: info.gsi_base,
            pins: 0,
        };
        let highest = (ioapic.read(IOAPICVER) >> 16) & 0xff;
        ioapic.pins = u8::try_from(highest + 1).unwrap_or(u8::MAX);
        ioapic
    }

    fn read(&self, register: u32) -> u32 {
        // SAFETY: `window` maps an I/O APIC's registers (the constructor's
        // contract); IOREGSEL and IOWIN are its 32-bit registers, and one
        // CPU at a time touches them (setup, then `super::pirq`'s lock),
        // so the select-then-access pair is not interleaved.
        unsafe {
            ((self.window + IOREGSEL) as *mut u32).write_volatile(register);
            ((self.window + IOWIN) as *const u32).read_volatile()
        }
    }

    fn write(&self, register: u32, value: u32) {
        // SAFETY: as in `read`; the registers written are redirection
        // entries, which only say where the pins' interrupts go.
        unsafe {
            ((self.window + IOREGSEL) as *mut u32).write_volatile(register);
            ((self.window + IOWIN) as *mut u32).write_volatile(value);
        }
    }

    /// Opens pin `pin` with `entry`.
    pub fn route(&self, pin: u8, entry: &RedirectionEntry) {
        self.set_entry(pin, entry.encode());
    }

    /// Masks or unmasks pin `pin`, its route unchanged.
    pub fn set_masked(&self, pin: u8, masked: bool) {
        const MASK: u32 = 1 << 16;
        let register = IOREDTBL + 2 * u32::from(pin);
        let low = self.read(register);
        self.write(register, if masked { low | MASK } else { low & !MASK });
    }

    /// Writes pin `pin`'s entry: masked while its destination changes.
    fn set_entry(&self, pin: u8, (low, high): (u32, u32)) {
        let register = IOREDTBL + 2 * u32::from(pin);
        self.write(register, RedirectionEntry::DISABLED.0);
        self.write(register + 1, high);
        self.write(register, low);
    }
}

/// Every I/O APIC of the machine, each pin masked.
#[derive(Debug, Default)]
pub struct IoApics {
    found: Vec<IoApic>,
}

impl IoApics {
    /// Takes the I/O APICs the MADT lists and masks every pin.
    pub fn init(infos: &[IoApicInfo]) -> IoApics {
        let found: Vec<IoApic> = infos
            .iter()
            // SAFETY: each entry comes from the firmware's MADT, and only
            // this module programs I/O APICs.
            .map(|info| unsafe { IoApic::new(info) })
            .collect();
        for ioapic in &found {
            for pin in 0..ioapic.pins {
                ioapic.set_entry(pin, RedirectionEntry::DISABLED);
            }
            log::info!(
                "IOAPIC {}: GSIs {}-{} masked",
                ioapic.id,
                ioapic.gsi_base,
                ioapic.gsi_base + u32::from(ioapic.pins).saturating_sub(1)
            );
        }
        IoApics { found }
    }

    /// How many GSIs there are: up to the highest pin of any I/O APIC.
    pub fn nr_gsis(&self) -> u32 {
        self.found
            .iter()
            .map(|i| i.gsi_base + u32::from(i.pins))
            .max()
            .unwrap_or(0)
    }

    /// The I/O APIC and pin of `gsi`, if one has it.
    pub fn find(&self, gsi: u32) -> Option<(&IoApic, u8)> {
        self.found
            .iter()
            .find_map(|ioapic| pin_of(gsi, ioapic.gsi_base, ioapic.pins).map(|pin| (ioapic, pin)))
    }
}
