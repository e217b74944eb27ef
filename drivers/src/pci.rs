//! PCI configuration space: addresses, enumeration, BARs, capabilities.
//!
//! Configuration mechanism #1 (ports `0xCF8`/`0xCFC`) reaches 256 bytes
//! per function; [`Address::cf8`] is the value written to `0xCF8`.
//! Enumeration starts at bus 0 and follows PCI-to-PCI bridges to their
//! secondary buses (each bus visited once, so a bridge misprogrammed into
//! a loop cannot hang it).
#![expect(
    clippy::cast_possible_truncation,
    reason = "register fields are cut out of 32-bit configuration registers with shifts"
)]

use crate::Platform;

/// Vendor ID of an absent function.
pub const NO_VENDOR: u16 = 0xFFFF;
/// Offset of the vendor/device ID register.
pub const REG_ID: u8 = 0x00;
/// Offset of the command (low) / status (high) register.
pub const REG_COMMAND: u8 = 0x04;
/// Offset of the class code / revision register.
pub const REG_CLASS: u8 = 0x08;
/// Offset of the register holding the header type (bits 16-23).
pub const REG_HEADER: u8 = 0x0C;
/// Offset of BAR 0.
pub const REG_BAR0: u8 = 0x10;
/// Offset of the bus numbers of a bridge (primary, secondary, subordinate).
pub const REG_BRIDGE_BUSES: u8 = 0x18;
/// Offset of the capability pointer (low byte).
pub const REG_CAP_PTR: u8 = 0x34;
/// Offset of the interrupt line (low byte) and pin (next byte).
pub const REG_INTERRUPT: u8 = 0x3C;

/// Command: respond to memory space accesses.
pub const COMMAND_MEMORY: u16 = 1 << 1;
/// Command: may master the bus (DMA).
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
/// Command: INTx disabled.
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
/// Status: the capability list is present.
pub const STATUS_CAP_LIST: u16 = 1 << 4;

/// Capability ID of a vendor-specific capability (virtio's).
pub const CAP_VENDOR: u8 = 0x09;

/// Number of BARs of a type 0 header.
pub const BAR_COUNT: u8 = 6;

/// A function's bus, device and function numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Address {
    /// Bus number.
    pub bus: u8,
    /// Device number (0-31).
    pub device: u8,
    /// Function number (0-7).
    pub function: u8,
}

impl Address {
    /// The `0xCF8` value that selects register `offset` (rounded down to
    /// 4) of this function.
    #[must_use]
    pub fn cf8(&self, offset: u8) -> u32 {
        0x8000_0000
            | u32::from(self.bus) << 16
            | u32::from(self.device & 0x1F) << 11
            | u32::from(self.function & 7) << 8
            | u32::from(offset & 0xFC)
    }
}

impl core::fmt::Display for Address {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

/// What enumeration reports of one function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Function {
    /// Where it is.
    pub address: Address,
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Class, subclass and programming interface (bits 8-31 of
    /// `REG_CLASS`).
    pub class: u32,
    /// Header type without the multi-function bit (0 device, 1 bridge).
    pub header_type: u8,
}

/// Calls `found` for every function on bus 0 and the buses behind its
/// bridges, in bus, device, function order per bus.
pub fn enumerate<P: Platform + ?Sized>(platform: &mut P, mut found: impl FnMut(&mut P, Function)) {
    let mut visited = [false; 256];
    let mut pending = [0u8; 256];
    let mut queued = 1;
    let mut next = 0;
    visited[0] = true;
    while next < queued {
        let bus = pending[next];
        next += 1;
        for device in 0..32 {
            let functions = match probe(
                platform,
                Address {
                    bus,
                    device,
                    function: 0,
                },
            ) {
                Some(f) if is_multifunction(platform, f.address) => 8,
                Some(_) => 1,
                None => continue,
            };
            for function in 0..functions {
                let address = Address {
                    bus,
                    device,
                    function,
                };
                let Some(f) = probe(platform, address) else {
                    continue;
                };
                if f.header_type == 1 {
                    let secondary = (platform.config_read(address, REG_BRIDGE_BUSES) >> 8) as u8;
                    if !visited[usize::from(secondary)] {
                        visited[usize::from(secondary)] = true;
                        pending[queued] = secondary;
                        queued += 1;
                    }
                }
                found(platform, f);
            }
        }
    }
}

fn is_multifunction<P: Platform + ?Sized>(platform: &mut P, address: Address) -> bool {
    platform.config_read(address, REG_HEADER) & (0x80 << 16) != 0
}

/// The function at `address`, if one answers.
pub fn probe<P: Platform + ?Sized>(platform: &mut P, address: Address) -> Option<Function> {
    let id = platform.config_read(address, REG_ID);
    let vendor = (id & 0xFFFF) as u16;
    if vendor == NO_VENDOR || vendor == 0 {
        return None;
    }
    Some(Function {
        address,
        vendor,
        device: (id >> 16) as u16,
        class: platform.config_read(address, REG_CLASS) >> 8,
        header_type: ((platform.config_read(address, REG_HEADER) >> 16) & 0x7F) as u8,
    })
}

/// One decoded BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bar {
    /// Not implemented (reads as zero, sizes to zero).
    None,
    /// I/O ports.
    Io {
        /// First port.
        port: u32,
        /// Number of ports.
        size: u32,
    },
    /// Memory.
    Memory {
        /// Physical address.
        address: u64,
        /// Size in bytes.
        size: u64,
        /// Whether it is prefetchable.
        prefetchable: bool,
        /// Whether it is a 64-bit BAR (taking the next BAR's slot).
        wide: bool,
    },
}

/// Decodes a BAR from its value (`low`, and `high` for the upper half of a
/// 64-bit one) and what it read back after all ones were written
/// (`mask_low`, `mask_high`). `None` if the read-back is impossible (an
/// implemented BAR whose size is not a power of two).
#[must_use]
pub fn decode_bar(low: u32, high: u32, mask_low: u32, mask_high: u32) -> Option<Bar> {
    if low & 1 == 1 {
        let mask = mask_low & 0xFFFF_FFFC;
        if mask == 0 {
            return Some(Bar::None);
        }
        let size = (!mask).wrapping_add(1) & 0xFFFF;
        return (size.is_power_of_two()).then_some(Bar::Io {
            port: low & 0xFFFF_FFFC,
            size,
        });
    }
    let wide = (low >> 1) & 3 == 2;
    let mut mask = u64::from(mask_low & 0xFFFF_FFF0);
    let mut address = u64::from(low & 0xFFFF_FFF0);
    if wide {
        mask |= u64::from(mask_high) << 32;
        address |= u64::from(high) << 32;
    } else {
        mask |= 0xFFFF_FFFF_0000_0000;
    }
    if mask & 0xFFFF_FFFF == 0 && (!wide || mask_high == 0) {
        return Some(Bar::None);
    }
    let size = (!mask).wrapping_add(1);
    size.is_power_of_two().then_some(Bar::Memory {
        address,
        size,
        prefetchable: low & 8 != 0,
        wide,
    })
}

/// Reads and sizes BAR `index` (0-5) of the type 0 function at
/// `address`, with memory and I/O decoding off while it is sized.
pub fn read_bar<P: Platform + ?Sized>(
    platform: &mut P,
    address: Address,
    index: u8,
) -> Option<Bar> {
    if index >= BAR_COUNT {
        return None;
    }
    let reg = REG_BAR0 + 4 * index;
    let command = platform.config_read(address, REG_COMMAND);
    platform.config_write(address, REG_COMMAND, command & !0b11);
    let low = platform.config_read(address, reg);
    platform.config_write(address, reg, 0xFFFF_FFFF);
    let mask_low = platform.config_read(address, reg);
    platform.config_write(address, reg, low);
    let wide = low & 1 == 0 && (low >> 1) & 3 == 2 && index + 1 < BAR_COUNT;
    let (high, mask_high) = if wide {
        let reg = reg + 4;
        let high = platform.config_read(address, reg);
        platform.config_write(address, reg, 0xFFFF_FFFF);
        let mask_high = platform.config_read(address, reg);
        platform.config_write(address, reg, high);
        (high, mask_high)
    } else {
        (0, 0)
    };
    platform.config_write(address, REG_COMMAND, command);
    decode_bar(low, high, mask_low, mask_high)
}

/// Calls `found(offset, id)` for each capability of the function, in list
/// order. Stops after 48 entries (a list cannot hold more in 192 bytes),
/// so a looping list ends.
pub fn capabilities<P: Platform + ?Sized>(
    platform: &mut P,
    address: Address,
    mut found: impl FnMut(&mut P, u8, u8),
) {
    let status = (platform.config_read(address, REG_COMMAND) >> 16) as u16;
    if status & STATUS_CAP_LIST == 0 {
        return;
    }
    let mut offset = (platform.config_read(address, REG_CAP_PTR) & 0xFC) as u8;
    for _ in 0..48 {
        if offset < 0x40 {
            return;
        }
        let header = platform.config_read(address, offset);
        found(platform, offset, (header & 0xFF) as u8);
        offset = ((header >> 8) & 0xFC) as u8;
    }
}

/// Reads the byte at `offset` of the function's configuration space.
pub fn read8<P: Platform + ?Sized>(platform: &mut P, address: Address, offset: u8) -> u8 {
    (platform.config_read(address, offset & 0xFC) >> (8 * (offset & 3))) as u8
}

/// Sets the bits `set` and clears the bits `clear` of the command register.
pub fn update_command<P: Platform + ?Sized>(
    platform: &mut P,
    address: Address,
    set: u16,
    clear: u16,
) {
    let reg = platform.config_read(address, REG_COMMAND);
    let command = (reg as u16 | set) & !clear;
    // The status half is write-one-to-clear: write zeros there.
    platform.config_write(address, REG_COMMAND, u32::from(command));
}

/// The IOAPIC GSI of the legacy interrupt `pin` (1 = INTA .. 4 = INTD) of
/// a device in `slot` on bus 0 of QEMU's q35 machine: the ICH9's default
/// routing sends INTx of slots 0-23 to PIRQ E-H, `(slot + pin - 1) mod 4`
/// from E, and PIRQ E-H are GSIs 20-23 (as the machine's ACPI `_PRT`
/// says). `None` for a pin of 0 (no interrupt) or above 4, or another
/// slot or bus.
#[must_use]
pub fn q35_gsi(address: Address, pin: u8) -> Option<u32> {
    if address.bus != 0 || address.device > 23 || !(1..=4).contains(&pin) {
        return None;
    }
    Some(20 + (u32::from(address.device) + u32::from(pin) - 1) % 4)
}

#[cfg(test)]
mod tests;
