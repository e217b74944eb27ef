//! `physdev_op`: I/O privilege and physical interrupts.
//!
//! Each wrapper passes the structure its command takes; results are the
//! raw hypercall values, OUT fields are in the structure.

use dom0_abi::physdev::{
    MAP_PIRQ_TYPE_GSI, PhysdevEoi, PhysdevIrqStatusQuery, PhysdevMapPirq, PhysdevOp,
    PhysdevSetIopl, PhysdevSetupGsi,
};
use dom0_abi::types::DomId;

use super::{addr_of_mut, physdev_op_raw};

/// Issues `cmd` with `arg`, the structure that command takes.
fn op<T>(cmd: PhysdevOp, arg: &mut T) -> i64 {
    // SAFETY: every caller passes the structure `cmd` reads and writes;
    // the hypervisor touches no more than its size.
    unsafe { physdev_op_raw(cmd as u64, addr_of_mut(arg)) }
}

/// `PHYSDEVOP_set_iopl`: the virtual IOPL (0-3).
pub fn physdev_set_iopl(iopl: u32) -> i64 {
    op(PhysdevOp::SetIopl, &mut PhysdevSetIopl { iopl })
}

/// `PHYSDEVOP_setup_gsi`: `gsi`'s trigger (`level`) and polarity
/// (`active_low`).
pub fn physdev_setup_gsi(gsi: u32, level: bool, active_low: bool) -> i64 {
    let Ok(gsi) = i32::try_from(gsi) else {
        return dom0_abi::Errno::EINVAL.neg();
    };
    op(
        PhysdevOp::SetupGsi,
        &mut PhysdevSetupGsi {
            gsi,
            triggering: u8::from(level),
            polarity: u8::from(active_low),
            pad: 0,
        },
    )
}

/// `PHYSDEVOP_map_pirq` of GSI `gsi` for the caller, asking for PIRQ
/// number `gsi` as Linux does; returns the result and the PIRQ.
pub fn physdev_map_gsi(gsi: u32) -> (i64, u32) {
    let Ok(index) = i32::try_from(gsi) else {
        return (dom0_abi::Errno::EINVAL.neg(), 0);
    };
    let mut arg = PhysdevMapPirq {
        domid: DomId::SELF.0,
        kind: MAP_PIRQ_TYPE_GSI,
        index,
        pirq: index,
        ..PhysdevMapPirq::default()
    };
    let ret = op(PhysdevOp::MapPirq, &mut arg);
    (ret, u32::try_from(arg.pirq).unwrap_or(0))
}

/// `PHYSDEVOP_eoi` of `pirq`.
pub fn physdev_eoi(pirq: u32) -> i64 {
    op(PhysdevOp::Eoi, &mut PhysdevEoi { irq: pirq })
}

/// `PHYSDEVOP_irq_status_query` of `irq`; returns the result and the
/// `XENIRQSTAT_*` flags.
pub fn physdev_irq_status_query(irq: u32) -> (i64, u32) {
    let mut arg = PhysdevIrqStatusQuery { irq, flags: 0 };
    let ret = op(PhysdevOp::IrqStatusQuery, &mut arg);
    (ret, arg.flags)
}
