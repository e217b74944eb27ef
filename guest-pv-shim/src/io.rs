//! Device access for a kernel with I/O rights (dom0, or a domain given
//! ports and IRQs): port I/O that reports a fault instead of taking it,
//! and the `physdev_op` commands that set I/O privilege and route
//! physical interrupts. Each `physdev` wrapper returns the raw hypercall
//! result (0 or a negative errno).

use dom0_abi::physdev::{
    PhysdevEoi, PhysdevIrqStatusQuery, PhysdevMapPirq, PhysdevOp, PhysdevSetIobitmap,
    PhysdevSetIopl, PhysdevSetupGsi, PhysdevUnmapPirq,
};

use crate::fixup_asm;
use crate::hypercall::physdev_op_raw;
use crate::traps::{self, Trap};

/// An access width: 1, 2 or 4 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    /// `inb`/`outb`.
    Byte,
    /// `inw`/`outw`.
    Word,
    /// `inl`/`outl`.
    Dword,
}

/// Reads `port` with `in` (through DX) at `width`; a fault (#GP when the
/// port is not open to this kernel) is returned instead of taken.
pub fn port_in(port: u16, width: Width) -> Result<u32, Trap> {
    let mut value: u32 = 0;
    let (_, trap) = traps::catch(|| {
        // SAFETY: `in` writes only EAX (or its low part); a fault resumes
        // after it through the fixup table. Which device answers is the
        // caller's business: reading a port has no effect on memory.
        unsafe {
            match width {
                Width::Byte => {
                    fixup_asm!("in al, dx"; in("dx") port, inout("eax") value, options(nostack));
                }
                Width::Word => {
                    fixup_asm!("in ax, dx"; in("dx") port, inout("eax") value, options(nostack));
                }
                Width::Dword => {
                    fixup_asm!("in eax, dx"; in("dx") port, inout("eax") value, options(nostack));
                }
            }
        }
    });
    trap.map_or(Ok(value), Err)
}

/// Writes `value` (its low `width` bytes) to `port` with `out`; a fault is
/// returned instead of taken.
pub fn port_out(port: u16, width: Width, value: u32) -> Result<(), Trap> {
    let (_, trap) = traps::catch(|| {
        // SAFETY: `out` changes no register or memory of this kernel; a
        // fault resumes after it through the fixup table.
        unsafe {
            match width {
                Width::Byte => {
                    fixup_asm!("out dx, al"; in("dx") port, in("eax") value, options(nostack));
                }
                Width::Word => {
                    fixup_asm!("out dx, ax"; in("dx") port, in("eax") value, options(nostack));
                }
                Width::Dword => {
                    fixup_asm!("out dx, eax"; in("dx") port, in("eax") value, options(nostack));
                }
            }
        }
    });
    trap.map_or(Ok(()), Err)
}

/// Reads the PCI configuration dword at `offset` of `bus:dev.fn` through
/// ports 0xCF8/0xCFC (configuration mechanism #1).
pub fn pci_config_read(bus: u8, dev: u8, func: u8, offset: u8) -> Result<u32, Trap> {
    port_out(0xcf8, Width::Dword, pci_address(bus, dev, func, offset))?;
    port_in(0xcfc, Width::Dword)
}

/// Writes the PCI configuration dword at `offset` of `bus:dev.fn`.
pub fn pci_config_write(bus: u8, dev: u8, func: u8, offset: u8, value: u32) -> Result<(), Trap> {
    port_out(0xcf8, Width::Dword, pci_address(bus, dev, func, offset))?;
    port_out(0xcfc, Width::Dword, value)
}

/// The CONFIG_ADDRESS value for a dword of `bus:dev.fn`.
#[must_use]
pub fn pci_address(bus: u8, dev: u8, func: u8, offset: u8) -> u32 {
    drivers::pci::Address {
        bus,
        device: dev,
        function: func,
    }
    .cf8(offset)
}

/// `physdev_op(cmd, arg)` on a structure the hypervisor may write back.
fn physdev<T>(cmd: PhysdevOp, arg: &mut T) -> i64 {
    // SAFETY: `arg` is a live, exclusively borrowed structure of the
    // command's type.
    unsafe { physdev_op_raw(cmd as u64, core::ptr::from_mut(arg) as u64) }
}

/// `PHYSDEVOP_set_iopl`: the calling vCPU's virtual IOPL.
pub fn set_iopl(iopl: u32) -> i64 {
    physdev(PhysdevOp::SetIopl, &mut PhysdevSetIopl { iopl })
}

/// `PHYSDEVOP_set_iobitmap`: `bitmap` (a guest address, one bit per port,
/// set = denied) covers ports below `nr_ports`.
pub fn set_iobitmap(bitmap: u64, nr_ports: u32) -> i64 {
    let mut arg = PhysdevSetIobitmap {
        bitmap,
        nr_ports,
        pad: 0,
    };
    physdev(PhysdevOp::SetIobitmap, &mut arg)
}

/// `PHYSDEVOP_irq_status_query`: `Ok(flags)` or the negative errno.
pub fn irq_status_query(irq: u32) -> Result<u32, i64> {
    let mut arg = PhysdevIrqStatusQuery { irq, flags: 0 };
    match physdev(PhysdevOp::IrqStatusQuery, &mut arg) {
        0 => Ok(arg.flags),
        e => Err(e),
    }
}

/// `PHYSDEVOP_map_pirq` of `map`; on success `map.pirq` is the PIRQ.
pub fn map_pirq(map: &mut PhysdevMapPirq) -> i64 {
    physdev(PhysdevOp::MapPirq, map)
}

/// `PHYSDEVOP_map_pirq` of GSI `gsi` for `domid` at `pirq` (negative:
/// let the hypervisor choose): `Ok(pirq)` or the negative errno.
pub fn map_gsi(domid: u16, gsi: i32, pirq: i32) -> Result<u32, i64> {
    let mut map = PhysdevMapPirq {
        domid,
        kind: dom0_abi::physdev::MAP_PIRQ_TYPE_GSI,
        index: gsi,
        pirq,
        ..PhysdevMapPirq::default()
    };
    match map_pirq(&mut map) {
        0 => Ok(map.pirq.cast_unsigned()),
        e => Err(e),
    }
}

/// `PHYSDEVOP_unmap_pirq`.
pub fn unmap_pirq(domid: u16, pirq: u32) -> i64 {
    physdev(
        PhysdevOp::UnmapPirq,
        &mut PhysdevUnmapPirq {
            domid,
            pad: 0,
            pirq: pirq.cast_signed(),
        },
    )
}

/// `PHYSDEVOP_setup_gsi`: `gsi`'s trigger (1 level) and polarity (1 low).
pub fn setup_gsi(gsi: i32, triggering: u8, polarity: u8) -> i64 {
    physdev(
        PhysdevOp::SetupGsi,
        &mut PhysdevSetupGsi {
            gsi,
            triggering,
            polarity,
            pad: [0; 2],
        },
    )
}

/// `PHYSDEVOP_pirq_eoi_gmfn_v2` of frame `gmfn` (an MFN for PV): the
/// hypervisor sets bit `n` of it while PIRQ `n` waits for an EOI.
pub fn pirq_eoi_gmfn_v2(gmfn: u64) -> i64 {
    physdev(
        PhysdevOp::PirqEoiGmfnV2,
        &mut dom0_abi::physdev::PhysdevPirqEoiGmfn { gmfn },
    )
}

/// `PHYSDEVOP_alloc_irq_vector` of `irq`: `Ok(vector)` or the negative
/// errno.
pub fn alloc_irq_vector(irq: u32) -> Result<u32, i64> {
    let mut arg = dom0_abi::physdev::PhysdevIrq { irq, vector: 0 };
    match physdev(PhysdevOp::AllocIrqVector, &mut arg) {
        0 => Ok(arg.vector),
        e => Err(e),
    }
}

/// `PHYSDEVOP_eoi` of `pirq`.
pub fn eoi(pirq: u32) -> i64 {
    physdev(PhysdevOp::Eoi, &mut PhysdevEoi { irq: pirq })
}

/// `EVTCHNOP_bind_pirq` of `pirq` (`flags`: `BIND_PIRQ__WILL_SHARE` or
/// 0): `Ok(port)` or the negative errno.
pub fn bind_pirq(pirq: u32, flags: u32) -> Result<u32, i64> {
    let mut arg = dom0_abi::event_channel::EvtchnBindPirq {
        pirq,
        flags,
        port: 0,
    };
    // SAFETY: `arg` is the command's structure, exclusively borrowed.
    let ret = unsafe {
        crate::hypercall::event_channel_op_raw(
            dom0_abi::event_channel::EvtchnOp::BindPirq as u64,
            core::ptr::from_mut(&mut arg) as u64,
        )
    };
    if ret == 0 { Ok(arg.port) } else { Err(ret) }
}
