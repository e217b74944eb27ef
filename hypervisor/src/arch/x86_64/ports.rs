//! `in`/`out` of a guest, after #GP: `crate::ioport` decides, this module
//! touches the ports. Direct accesses run on the real port; PCI
//! configuration goes through 0xCF8/0xCFC under [`PCI_LOCK`]; the RTC
//! through `rtc`'s guest accessors.
use crate::emulate::PortIo;
use crate::ioport::{self, Emulated, Hardware};

use super::entry::GuestRegs;
use super::guest_mem;
use super::io;
use super::paging::phys_to_virt;
use super::rtc;
use super::traps::Current;

/// Held across a write of 0xCF8 and the data access that follows it.
static PCI_LOCK: spin::Mutex<()> = spin::Mutex::new(());

/// The machine's PCI configuration mechanism #1 and CMOS RTC.
struct Machine;

impl Hardware for Machine {
    fn pci_read(&mut self, cf8: u32, offset: u16, size: u32) -> u32 {
        let _held = PCI_LOCK.lock();
        // SAFETY: only the hardware domain comes here (`crate::ioport`);
        // the address and data registers are taken together under the
        // lock, and the hypervisor itself uses no PCI device.
        unsafe {
            io::write(ioport::PCI_CF8, 4, cf8);
            io::read(ioport::PCI_CFC + offset, size)
        }
    }
    fn pci_write(&mut self, cf8: u32, offset: u16, size: u32, value: u32) {
        let _held = PCI_LOCK.lock();
        // SAFETY: as in `pci_read`.
        unsafe {
            io::write(ioport::PCI_CF8, 4, cf8);
            io::write(ioport::PCI_CFC + offset, size, value);
        }
    }
    fn rtc_read(&mut self, index: u8) -> u8 {
        rtc::guest_read(index)
    }
    fn rtc_write(&mut self, index: u8, value: u8) {
        rtc::guest_write(index, value);
    }
    fn pit_read(&mut self, port: u16) -> u8 {
        // SAFETY: `crate::ioport::pit_read` passes channel 2's data port
        // or port 0x61 for the hardware domain only; the hypervisor uses
        // channel 2 only to measure the TSC at boot, before any guest.
        let value = unsafe { io::read(port, 1) };
        value.to_le_bytes()[0]
    }
    fn pit_write(&mut self, port: u16, value: u8) {
        // SAFETY: as in `pit_read`; `crate::ioport::pit_write` lets only
        // channel 2's data, its control words and port 0x61's gate and
        // speaker bits through.
        unsafe { io::write(port, 1, u32::from(value)) };
    }
}

/// Writes the low `width` bytes (1, 2 or 4) of `value` to PCI
/// configuration space at machine address `address`, in an MMCFG region
/// the direct map covers (`super::percpu::MMCFG`), naturally aligned.
pub fn mmcfg_write(address: u64, width: u8, value: u64) {
    let at = phys_to_virt(address);
    #[allow(clippy::cast_possible_truncation, reason = "the store's width")]
    // SAFETY: `crate::iomem::read_only_write` gave an aligned address of
    // at most a dword in an MMCFG region, which the direct map covers
    // (setup registers only such regions) and no hypervisor code uses; a
    // configuration write there is what the hardware domain may do
    // through 0xCF8/0xCFC as well.
    unsafe {
        match width {
            1 => (at as *mut u8).write_volatile(value as u8),
            2 => (at as *mut u16).write_volatile(value as u16),
            _ => (at as *mut u32).write_volatile(value as u32),
        }
    }
}

/// Performs the guest's `in`/`out` if its virtual IOPL or I/O bitmap
/// allows it (`kernel`: it runs in kernel mode); `false` leaves the #GP
/// to the guest.
pub fn emulate(current: &mut Current, regs: &mut GuestRegs, access: PortIo, kernel: bool) -> bool {
    #[allow(clippy::cast_possible_truncation, reason = "DX holds the port")]
    let port = access.port.unwrap_or(regs.rdx as u16);
    let vcpu = &current.vcpu;
    let bitmap = vcpu.iobitmap;
    let allowed = ioport::guest_allows(vcpu.iopl, kernel, bitmap, port, access.bytes, |at| {
        let mut byte = [0u8];
        guest_mem::copy_from_guest(bitmap.base.wrapping_add(at), &mut byte)
            .ok()
            .map(|()| byte[0])
    });
    if !allowed {
        return false;
    }
    let domain = &mut *current.domain;
    let ports = domain.ioports.as_deref();
    let direct = ioport::direct(ports, port, access.bytes);
    let mut who = Emulated {
        ports,
        hardware_domain: domain.is_privileged(),
        latches: &mut domain.io_latches,
    };
    if access.write {
        #[allow(clippy::cast_possible_truncation, reason = "EAX holds the data")]
        let value = regs.rax as u32;
        if direct {
            // SAFETY: the domain was given these ports (`ioport::direct`),
            // none of which the hypervisor uses.
            unsafe { io::write(port, access.bytes, value) };
        } else {
            ioport::emulated_write(&mut Machine, &mut who, port, access.bytes, value);
        }
    } else {
        let value = if direct {
            // SAFETY: as for the write.
            unsafe { io::read(port, access.bytes) }
        } else {
            ioport::emulated_read(&mut Machine, &mut who, port, access.bytes)
        };
        regs.rax = match access.bytes {
            1 => (regs.rax & !0xff) | u64::from(value & 0xff),
            2 => (regs.rax & !0xffff) | u64::from(value & 0xffff),
            _ => u64::from(value),
        };
    }
    true
}
