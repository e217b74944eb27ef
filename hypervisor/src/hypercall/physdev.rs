//! `physdev_op`: I/O privilege (`set_iopl`, `set_iobitmap`) and physical
//! interrupts (`map_pirq` and `unmap_pirq` of GSIs, `setup_gsi`,
//! `irq_status_query`, `eoi`, and the no-op `alloc_irq_vector`;
//! `crate::pirq` keeps the tables), PCI device reports (`pci_device_add`,
//! `manage_pci_add`, `manage_pci_add_ext`, `pci_device_remove`,
//! `manage_pci_remove`: from the control domain, kept in `crate::pci`);
//! every
//! other command, and MSI mappings, answer `-ENOSYS`
//! (docs/abi-differences.md).
#![forbid(unsafe_code)]

use dom0_abi::Errno;
use dom0_abi::layout::guest_addr_ok;
use dom0_abi::physdev::{
    MAP_PIRQ_TYPE_GSI, MAP_PIRQ_TYPE_MSI, MAP_PIRQ_TYPE_MSI_SEG, MAP_PIRQ_TYPE_MULTI_MSI,
    PhysdevEoi, PhysdevIrq, PhysdevIrqStatusQuery, PhysdevManagePci, PhysdevManagePciExt,
    PhysdevMapPirq, PhysdevOp, PhysdevPciDevice, PhysdevPciDeviceAdd, PhysdevPirqEoiGmfn,
    PhysdevSetIobitmap, PhysdevSetupGsi, PhysdevUnmapPirq, XEN_PCI_DEV_PXM, XEN_PCI_DEV_VIRTFN,
    XENIRQSTAT_NEEDS_EOI,
};
use dom0_abi::types::{DomId, Mfn};
use dom0_abi::wire::Wire;

use crate::domain::{Domain, PirqEoiMap};
use crate::ioport::{IoBitmap, NR_PORTS};
use crate::mm::effects::Effects;
use crate::mm::types::Mmu;
use crate::pci::sbdf;
use crate::pirq::Pirqs;

use super::domctl::{ControlEnv, get_own_writable};
use super::{Env, read_struct, write_struct};

/// `physdev_op(cmd, arg)`.
pub fn physdev_op(
    env: &mut impl ControlEnv,
    fx: &mut Effects,
    cmd: u64,
    arg: u64,
) -> Result<u64, Errno> {
    match PhysdevOp::from_number(cmd) {
        Some(PhysdevOp::SetIopl) => set_iopl(env, arg),
        Some(PhysdevOp::SetIobitmap) => set_iobitmap(env, arg),
        Some(PhysdevOp::IrqStatusQuery) => irq_status_query(env, arg),
        Some(PhysdevOp::MapPirq) => map_pirq(env, arg),
        Some(PhysdevOp::UnmapPirq) => unmap_pirq(env, arg),
        Some(PhysdevOp::SetupGsi) => setup_gsi(env, arg),
        Some(PhysdevOp::AllocIrqVector) => alloc_irq_vector(env, arg),
        Some(PhysdevOp::Eoi) => eoi(env, arg),
        Some(PhysdevOp::PirqEoiGmfnV1) => pirq_eoi_gmfn(env, fx, arg, true),
        Some(PhysdevOp::PirqEoiGmfnV2) => pirq_eoi_gmfn(env, fx, arg, false),
        Some(PhysdevOp::PciDeviceAdd) => pci_device_add(env, arg),
        Some(PhysdevOp::ManagePciAdd) => {
            let add: PhysdevManagePci = read_struct(env, arg)?;
            pci_add(env, &[sbdf(0, add.bus, add.devfn)])
        }
        Some(PhysdevOp::ManagePciAddExt) => {
            let ext: PhysdevManagePciExt = read_struct(env, arg)?;
            if ext.is_extfn > 1 || ext.is_virtfn > 1 {
                return Err(Errno::EINVAL);
            }
            let physfn = sbdf(0, ext.physfn_bus, ext.physfn_devfn);
            let device = sbdf(0, ext.bus, ext.devfn);
            let both = [physfn, device];
            pci_add(
                env,
                if ext.is_virtfn == 1 {
                    &both
                } else {
                    &both[1..]
                },
            )
        }
        Some(PhysdevOp::PciDeviceRemove) => {
            let dev: PhysdevPciDevice = read_struct(env, arg)?;
            pci_remove(env, sbdf(dev.seg, dev.bus, dev.devfn))
        }
        Some(PhysdevOp::ManagePciRemove) => {
            let dev: PhysdevManagePci = read_struct(env, arg)?;
            pci_remove(env, sbdf(0, dev.bus, dev.devfn))
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// `PHYSDEVOP_pci_device_add`: the argument, then the proximity domain
/// after it with `XEN_PCI_DEV_PXM` (`EFAULT`), then [`pci_add`].
fn pci_device_add(env: &mut impl Env, arg: u64) -> Result<u64, Errno> {
    let add: PhysdevPciDeviceAdd = read_struct(env, arg)?;
    if add.flags & XEN_PCI_DEV_PXM != 0 {
        let at = arg.wrapping_add(PhysdevPciDeviceAdd::SIZE as u64);
        read_struct::<u32>(env, at)?;
    }
    let physfn = sbdf(add.seg, add.physfn_bus, add.physfn_devfn);
    let device = sbdf(add.seg, add.bus, add.devfn);
    let virtfn = add.flags & XEN_PCI_DEV_VIRTFN != 0;
    let both = [physfn, device];
    pci_add(env, if virtfn { &both } else { &both[1..] })
}

/// Xen's `pci_add_device` once the report is read: Xen records the device
/// (a virtual function's physical function first) for its IOMMU and MSI
/// code, which this hypervisor does not have, so a report from the control
/// domain only makes the `devices` known, present or not, as Xen accepts
/// them. `EPERM`: any other caller.
fn pci_add(env: &mut impl Env, devices: &[u32]) -> Result<u64, Errno> {
    let domain = env.domain();
    if !domain.is_privileged() {
        return Err(Errno::EPERM);
    }
    if let Some(pci) = domain.pci.as_mut() {
        for &device in devices {
            pci.add(device);
        }
    }
    Ok(0)
}

/// Xen's `pci_remove_device` once the argument is read: the control
/// domain's device `sbdf` is forgotten. `EPERM`: any other caller;
/// `ENODEV`: a device the hypervisor does not know.
fn pci_remove(env: &mut impl Env, sbdf: u32) -> Result<u64, Errno> {
    let domain = env.domain();
    if !domain.is_privileged() {
        return Err(Errno::EPERM);
    }
    domain
        .pci
        .as_mut()
        .ok_or(Errno::ENODEV)?
        .remove(sbdf)
        .map(|()| 0)
}

/// `PHYSDEVOP_irq_status_query`: `flags` of a PIRQ below the caller's
/// `nr_pirqs` (mapped or not) is `XENIRQSTAT_needs_eoi`, as Xen 4.17
/// answers every PV domain; `EINVAL` from `nr_pirqs` on, `EFAULT` if
/// `arg` cannot be read or written. Any domain may ask.
fn irq_status_query(env: &mut impl Env, arg: u64) -> Result<u64, Errno> {
    let mut q: PhysdevIrqStatusQuery = read_struct(env, arg)?;
    env.domain().pirqs.check(q.irq.into())?;
    q.flags = XENIRQSTAT_NEEDS_EOI;
    write_struct(env, arg, &q)?;
    Ok(0)
}

/// The domain `domid` names (`DOMID_SELF` or an id) for a PIRQ command,
/// which only a privileged caller may make: `ESRCH` for no such domain,
/// then `EPERM` for an unprivileged caller.
fn pirq_target(env: &mut impl ControlEnv, domid: u16) -> Result<&mut Domain, Errno> {
    let me = env.domain().id;
    let id = if DomId(domid) == DomId::SELF {
        me
    } else {
        DomId(domid)
    };
    let privileged = env.domain().is_privileged();
    let target = if id == me {
        env.domain()
    } else {
        &mut env.other_domain(id).ok_or(Errno::ESRCH)?.domain
    };
    if privileged {
        Ok(target)
    } else {
        Err(Errno::EPERM)
    }
}

/// `PHYSDEVOP_map_pirq` (privileged): maps GSI `index` to a PIRQ of
/// `domid` (the one named, or with `pirq` negative the first free one)
/// and writes the PIRQ back. `ESRCH` no such domain; `EPERM` caller not
/// privileged, or the GSI not the caller's to give; `EINVAL` an unknown
/// type, a GSI out of range (or 0, the timer), a PIRQ out of range;
/// `EEXIST` the GSI is mapped at another PIRQ; `ENOSPC` no PIRQ free;
/// `ENOSYS` for the MSI types (not implemented); `EFAULT`.
fn map_pirq(env: &mut impl ControlEnv, arg: u64) -> Result<u64, Errno> {
    let mut map: PhysdevMapPirq = read_struct(env, arg)?;
    let caller_permitted = {
        let gsi = u32::try_from(map.index).unwrap_or(u32::MAX);
        env.domain().pirqs.permitted(gsi)
    };
    let target = pirq_target(env, map.domid)?;
    map.pirq = match map.kind {
        MAP_PIRQ_TYPE_GSI => {
            let pirq = target
                .pirqs
                .map_gsi(map.index, map.pirq, caller_permitted)?;
            i32::try_from(pirq).map_err(|_| Errno::EINVAL)?
        }
        MAP_PIRQ_TYPE_MSI | MAP_PIRQ_TYPE_MSI_SEG | MAP_PIRQ_TYPE_MULTI_MSI => {
            return Err(Errno::ENOSYS);
        }
        _ => return Err(Errno::EINVAL),
    };
    write_struct(env, arg, &map)?;
    Ok(0)
}

/// `PHYSDEVOP_unmap_pirq` (privileged): undoes `map_pirq`; a PIRQ still
/// bound is unbound first (its line masked, its port left to fire
/// nothing until closed). `ESRCH`, `EPERM` as for `map_pirq`; `EINVAL`
/// for a PIRQ out of range or not mapped; `EFAULT`.
fn unmap_pirq(env: &mut impl ControlEnv, arg: u64) -> Result<u64, Errno> {
    let unmap: PhysdevUnmapPirq = read_struct(env, arg)?;
    let target = pirq_target(env, unmap.domid)?;
    let id = target.id;
    let mapped = target.pirqs.unmap(unmap.pirq)?;
    if mapped.port.is_some() {
        let owner = (id, unmap.pirq.unsigned_abs());
        env.irq_lines(|lines| ((), lines.unbind(mapped.gsi, owner)));
    }
    Ok(0)
}

/// `PHYSDEVOP_setup_gsi` (privileged): the trigger mode (`triggering` 1:
/// level) and polarity (`polarity` 1: active low) a GSI gets when it is
/// bound. `EINVAL` for a GSI out of range; `EPERM` for an unprivileged
/// caller; `EEXIST` once the GSI was set up; `EFAULT`.
fn setup_gsi(env: &mut impl Env, arg: u64) -> Result<u64, Errno> {
    let setup: PhysdevSetupGsi = read_struct(env, arg)?;
    let in_range = env.irq_lines(|lines| {
        let n = i64::from(lines.len());
        ((0..n).contains(&i64::from(setup.gsi)), None)
    });
    if !in_range {
        return Err(Errno::EINVAL);
    }
    if !env.domain().is_privileged() {
        return Err(Errno::EPERM);
    }
    env.irq_lines(|lines| {
        (
            lines.setup(setup.gsi, setup.triggering != 0, setup.polarity != 0),
            None,
        )
    })?;
    Ok(0)
}

/// `PHYSDEVOP_alloc_irq_vector` (privileged): as on Xen 4.17, which
/// assigns vectors itself when a GSI is bound, a no-op that answers the
/// IRQ as its vector. `EFAULT` if `arg` cannot be read (checked first) or
/// written; `EPERM` for an unprivileged caller.
fn alloc_irq_vector(env: &mut impl Env, arg: u64) -> Result<u64, Errno> {
    let mut op: PhysdevIrq = read_struct(env, arg)?;
    if !env.domain().is_privileged() {
        return Err(Errno::EPERM);
    }
    op.vector = op.irq;
    write_struct(env, arg, &op)?;
    Ok(0)
}

/// `PHYSDEVOP_eoi`: the caller is done with an interrupt on `irq` (a
/// PIRQ of its own); a level-triggered line masked since it fired is
/// unmasked. `EINVAL` for a PIRQ out of range or not mapped; `EFAULT`.
/// Any domain may call it for its own PIRQs.
fn eoi(env: &mut impl ControlEnv, arg: u64) -> Result<u64, Errno> {
    let PhysdevEoi { irq } = read_struct(env, arg)?;
    let domain = env.domain();
    let pirq = domain.pirqs.check(irq.into())?;
    let mapped = domain.pirqs.get(pirq).ok_or(Errno::EINVAL)?;
    let owner = (domain.id, pirq);
    let eoi_map = domain.pirq_eoi_map;
    if let Some(map) = eoi_map {
        let (word, bit) = (pirq as usize / 64, pirq % 64);
        let value = env.read_pte(map.mfn, word);
        env.write_pte(map.mfn, word, value & !(1 << bit));
        if map.auto_unmask
            && let Some(port) = mapped.port
        {
            let (channels, bits) = env.event_channels();
            let _ = channels.unmask(bits, port);
        }
    }
    env.irq_lines(|lines| ((), lines.eoi(mapped.gsi, owner)));
    Ok(0)
}

/// `PHYSDEVOP_pirq_eoi_gmfn_v1`/`v2`: registers frame `gmfn` (an MFN for
/// PV) of the caller's as its PIRQ EOI bitmap, taking a writable type
/// reference on it until the domain goes; the hypervisor sets bit `n`
/// when PIRQ `n` fires on a line that waits for `PHYSDEVOP_eoi` and
/// clears it at the EOI. With v1 the EOI also unmasks the PIRQ's port.
/// `EINVAL` for a frame that is not the caller's or cannot be writable;
/// `EBUSY` once a page is registered; `EFAULT`. Any domain may call it.
fn pirq_eoi_gmfn(
    env: &mut impl ControlEnv,
    fx: &mut Effects,
    arg: u64,
    v1: bool,
) -> Result<u64, Errno> {
    let PhysdevPirqEoiGmfn { gmfn } = read_struct(env, arg)?;
    let mfn = Mfn(gmfn);
    let me = env.domain().id;
    get_own_writable(env, fx, me, mfn).map_err(|_| Errno::EINVAL)?;
    if env.domain().pirq_eoi_map.is_some() {
        Mmu::new(env, fx).put_page_and_type(mfn);
        return Err(Errno::EBUSY);
    }
    env.domain().pirq_eoi_map = Some(PirqEoiMap {
        mfn,
        auto_unmask: v1,
    });
    Ok(0)
}

/// `PHYSDEVOP_set_iopl`: the calling vCPU's virtual IOPL, which decides
/// whether its `cli`/`sti` are accepted (as no-ops). Any domain may set
/// it, as on Xen; `EFAULT` if `arg` cannot be read, `EINVAL` above 3.
fn set_iopl(env: &mut impl Env, arg: u64) -> Result<u64, Errno> {
    let mut bytes = [0u8; 4];
    env.copy_from_guest(arg, &mut bytes)?;
    let iopl = u8::try_from(u32::from_le_bytes(bytes))
        .ok()
        .filter(|&iopl| iopl <= 3)
        .ok_or(Errno::EINVAL)?;
    env.vcpu().iopl = iopl;
    Ok(0)
}

/// `PHYSDEVOP_set_iobitmap`: the calling vCPU's I/O bitmap (one bit per
/// port, set = denied, read from guest memory at each access) for ports
/// below `nr_ports`; 0 ports turns it off. Any domain may set it, as on
/// Xen: it only narrows what the domain's rights give. `EFAULT` if `arg`
/// cannot be read; `EINVAL` for more than 65536 ports or a bitmap that
/// starts outside guest space (only the start is checked, as Xen's
/// `guest_handle_okay` does).
fn set_iobitmap(env: &mut impl Env, arg: u64) -> Result<u64, Errno> {
    let mut bytes = [0u8; size_of::<PhysdevSetIobitmap>()];
    env.copy_from_guest(arg, &mut bytes)?;
    let base = u64::from_le_bytes(bytes[0..8].try_into().unwrap_or_default());
    let limit = u32::from_le_bytes(bytes[8..12].try_into().unwrap_or_default());
    if limit > NR_PORTS || !guest_addr_ok(base) {
        return Err(Errno::EINVAL);
    }
    env.vcpu().iobitmap = IoBitmap { base, limit };
    Ok(0)
}

/// What a domain that goes away gives back: its lines are unbound (and
/// masked), its EOI bitmap page loses the reference `pirq_eoi_gmfn`
/// took. `domain` is not running (it is being destroyed).
pub fn release(env: &mut impl ControlEnv, fx: &mut Effects, domain: &mut Domain) {
    let pirqs = core::mem::take(&mut domain.pirqs);
    release_taken(env, fx, domain.id, &pirqs, domain.pirq_eoi_map.take());
}

/// [`release`] of what was taken out of domain `id` already.
pub fn release_taken(
    env: &mut impl ControlEnv,
    fx: &mut Effects,
    id: DomId,
    pirqs: &Pirqs,
    eoi_map: Option<PirqEoiMap>,
) {
    for (pirq, mapped) in pirqs.all() {
        env.irq_lines(|lines| ((), lines.unbind(mapped.gsi, (id, pirq))));
    }
    if let Some(map) = eoi_map {
        Mmu::new(env, fx).put_page_and_type(map.mfn);
    }
}

#[cfg(test)]
mod tests {
    extern crate alloc;

    use super::*;
    use crate::mm::fake::{BASE, FakeMachine};
    use crate::pirq::Program;

    fn set(env: &mut FakeMachine, iopl: u32) -> Result<u64, Errno> {
        env.poke(BASE, &iopl.to_le_bytes());
        physdev_op(
            env,
            &mut Effects::default(),
            PhysdevOp::SetIopl as u64,
            BASE,
        )
    }

    #[test]
    fn set_iopl_as_xen() {
        let mut env = FakeMachine::new(16);
        assert_eq!(set(&mut env, 1), Ok(0));
        assert_eq!(env.vcpu().iopl, 1);
        assert_eq!(set(&mut env, 3), Ok(0));
        assert_eq!(env.vcpu().iopl, 3);
        for bad in [4, 0x100, u32::MAX] {
            assert_eq!(set(&mut env, bad), Err(Errno::EINVAL));
            assert_eq!(env.vcpu().iopl, 3);
        }
        assert_eq!(
            physdev_op(
                &mut env,
                &mut Effects::default(),
                PhysdevOp::SetIopl as u64,
                0
            ),
            Err(Errno::EFAULT)
        );
        assert_eq!(
            physdev_op(
                &mut env,
                &mut Effects::default(),
                PhysdevOp::ApicRead as u64,
                BASE
            ),
            Err(Errno::ENOSYS)
        );
        assert_eq!(
            physdev_op(&mut env, &mut Effects::default(), 9999, BASE),
            Err(Errno::ENOSYS)
        );
    }

    fn call<T: dom0_abi::wire::Wire>(
        env: &mut FakeMachine,
        op: PhysdevOp,
        arg: &T,
    ) -> (Result<u64, Errno>, T) {
        let mut bytes = alloc::vec![0u8; T::SIZE];
        arg.to_wire(&mut bytes).unwrap();
        env.poke(BASE, &bytes);
        let r = physdev_op(env, &mut Effects::default(), op as u64, BASE);
        let mut out = alloc::vec![0u8; T::SIZE];
        env.copy_from_guest(BASE, &mut out).unwrap();
        (r, T::from_wire(&out).unwrap())
    }

    fn map(
        env: &mut FakeMachine,
        domid: u16,
        kind: i32,
        index: i32,
        pirq: i32,
    ) -> Result<i32, Errno> {
        let arg = PhysdevMapPirq {
            domid,
            kind,
            index,
            pirq,
            ..PhysdevMapPirq::default()
        };
        let (r, out) = call(env, PhysdevOp::MapPirq, &arg);
        r.map(|_| out.pirq)
    }

    fn bind(env: &mut FakeMachine, pirq: u32) -> Result<u32, Errno> {
        let arg = dom0_abi::event_channel::EvtchnBindPirq {
            pirq,
            flags: 0,
            port: 0,
        };
        let mut bytes = [0u8; 12];
        dom0_abi::wire::Wire::to_wire(&arg, &mut bytes).unwrap();
        env.poke(BASE, &bytes);
        let op = dom0_abi::event_channel::EvtchnOp::BindPirq as u64;
        crate::hypercall::evtchn::event_channel_op(env, op, BASE)?;
        env.copy_from_guest(BASE + 8, &mut bytes[..4]).unwrap();
        Ok(u32::from_le_bytes(bytes[..4].try_into().unwrap()))
    }

    #[test]
    fn alloc_irq_vector_answers_the_irq_to_dom0_only() {
        let mut env = FakeMachine::new(16);
        let op = PhysdevIrq { irq: 9, vector: 0 };
        assert_eq!(
            call(&mut env, PhysdevOp::AllocIrqVector, &op),
            (Ok(0), PhysdevIrq { irq: 9, vector: 9 })
        );
        let cmd = PhysdevOp::AllocIrqVector as u64;
        assert_eq!(
            physdev_op(&mut env, &mut Effects::default(), cmd, 0),
            Err(Errno::EFAULT)
        );
        env.domain.mm.privilege = None;
        assert_eq!(
            call(&mut env, PhysdevOp::AllocIrqVector, &op),
            (Err(Errno::EPERM), op)
        );
    }

    #[test]
    fn removed_devices_are_forgotten_once() {
        let mut env = FakeMachine::new(16);
        env.domain.pci = Some(Box::default());
        let dev = |seg, bus, devfn| PhysdevPciDevice { seg, bus, devfn };
        let remove = PhysdevOp::PciDeviceRemove;
        assert_eq!(
            call(&mut env, remove, &dev(0, 0, 0)).0,
            Err(Errno::ENODEV),
            "not reported"
        );
        let host_bridge = PhysdevManagePci { bus: 0, devfn: 0 };
        assert_eq!(
            call(&mut env, PhysdevOp::ManagePciAdd, &host_bridge).0,
            Ok(0)
        );
        assert_eq!(call(&mut env, remove, &dev(0, 0, 0)).0, Ok(0));
        assert_eq!(call(&mut env, remove, &dev(0, 0, 0)).0, Err(Errno::ENODEV));
        assert_eq!(call(&mut env, remove, &dev(2, 0, 0)).0, Err(Errno::ENODEV));
        let vf = PhysdevPciDeviceAdd {
            seg: 2,
            bus: 1,
            devfn: 0x11,
            flags: XEN_PCI_DEV_VIRTFN,
            physfn_bus: 1,
            physfn_devfn: 0x10,
            pad: 0,
        };
        assert_eq!(call(&mut env, PhysdevOp::PciDeviceAdd, &vf).0, Ok(0));
        assert_eq!(
            call(&mut env, remove, &dev(2, 1, 0x10)).0,
            Ok(0),
            "the PF too"
        );
        assert_eq!(call(&mut env, remove, &dev(2, 1, 0x11)).0, Ok(0));
        let manage = PhysdevManagePci { bus: 3, devfn: 4 };
        let manage_remove = PhysdevOp::ManagePciRemove;
        assert_eq!(call(&mut env, manage_remove, &manage).0, Err(Errno::ENODEV));
        assert_eq!(call(&mut env, PhysdevOp::ManagePciAdd, &manage).0, Ok(0));
        assert_eq!(call(&mut env, manage_remove, &manage).0, Ok(0));
        for op in [remove, manage_remove] {
            assert_eq!(
                physdev_op(&mut env, &mut Effects::default(), op as u64, 0x10),
                Err(Errno::EFAULT)
            );
        }
        env.domain.mm.privilege = None;
        assert_eq!(call(&mut env, manage_remove, &manage).0, Err(Errno::EPERM));
        assert_eq!(call(&mut env, remove, &dev(0, 0, 0)).0, Err(Errno::EPERM));
    }

    #[test]
    fn pci_device_reports_as_xen_answers_them() {
        use crate::mm::fake::GUEST_BYTES;
        let mut env = FakeMachine::new(16);
        let add = |flags| PhysdevPciDeviceAdd {
            seg: 1,
            bus: 0x7f,
            devfn: 0xff,
            flags,
            ..PhysdevPciDeviceAdd::default()
        };
        assert_eq!(call(&mut env, PhysdevOp::PciDeviceAdd, &add(0)).0, Ok(0));
        assert_eq!(
            call(&mut env, PhysdevOp::PciDeviceAdd, &add(XEN_PCI_DEV_PXM)).0,
            Ok(0),
            "the proximity domain after it is readable"
        );
        // The proximity domain just past the end of guest memory.
        let mut bytes = [0u8; 12];
        add(XEN_PCI_DEV_PXM).to_wire(&mut bytes).unwrap();
        let at = BASE + GUEST_BYTES as u64 - 12;
        env.poke(at, &bytes);
        let cmd = PhysdevOp::PciDeviceAdd as u64;
        assert_eq!(
            physdev_op(&mut env, &mut Effects::default(), cmd, at),
            Err(Errno::EFAULT)
        );
        let ext = |is_extfn, is_virtfn| PhysdevManagePciExt {
            is_extfn,
            is_virtfn,
            ..PhysdevManagePciExt::default()
        };
        let manage = PhysdevManagePci { bus: 0, devfn: 8 };
        assert_eq!(call(&mut env, PhysdevOp::ManagePciAdd, &manage).0, Ok(0));
        assert_eq!(
            call(&mut env, PhysdevOp::ManagePciAddExt, &ext(1, 1)).0,
            Ok(0)
        );
        assert_eq!(
            call(&mut env, PhysdevOp::ManagePciAddExt, &ext(0, 2)).0,
            Err(Errno::EINVAL)
        );
        for op in [
            PhysdevOp::PciDeviceAdd,
            PhysdevOp::ManagePciAdd,
            PhysdevOp::ManagePciAddExt,
        ] {
            assert_eq!(
                physdev_op(&mut env, &mut Effects::default(), op as u64, 0x10),
                Err(Errno::EFAULT)
            );
        }
        env.domain.mm.privilege = None;
        assert_eq!(
            call(&mut env, PhysdevOp::PciDeviceAdd, &add(0)).0,
            Err(Errno::EPERM)
        );
        assert_eq!(
            call(&mut env, PhysdevOp::ManagePciAdd, &manage).0,
            Err(Errno::EPERM)
        );
        assert_eq!(
            call(&mut env, PhysdevOp::ManagePciAddExt, &ext(0, 2)).0,
            Err(Errno::EINVAL),
            "the fields are checked first"
        );
        assert_eq!(
            call(&mut env, PhysdevOp::ManagePciAddExt, &ext(0, 0)).0,
            Err(Errno::EPERM)
        );
    }

    #[test]
    fn a_gsi_mapped_bound_acknowledged_and_unmapped() {
        let mut env = FakeMachine::new(16);
        let q = |env: &mut FakeMachine, irq| {
            call(
                env,
                PhysdevOp::IrqStatusQuery,
                &PhysdevIrqStatusQuery { irq, flags: 0 },
            )
        };
        assert_eq!(
            q(&mut env, 207),
            (Ok(0), PhysdevIrqStatusQuery { irq: 207, flags: 1 })
        );
        assert_eq!(q(&mut env, 208).0, Err(Errno::EINVAL));
        assert_eq!(map(&mut env, 0x7ff0, 7, 8, 8), Err(Errno::EINVAL));
        assert_eq!(
            map(&mut env, 0x7ff0, MAP_PIRQ_TYPE_MSI, 8, 8),
            Err(Errno::ENOSYS)
        );
        assert_eq!(
            map(&mut env, 0x3ff, MAP_PIRQ_TYPE_GSI, 8, 8),
            Err(Errno::ESRCH)
        );
        assert_eq!(bind(&mut env, 20), Err(Errno::EPERM));
        assert_eq!(map(&mut env, 0x7ff0, MAP_PIRQ_TYPE_GSI, 20, 20), Ok(20));
        let port = bind(&mut env, 20).unwrap();
        assert_eq!(bind(&mut env, 20), Err(Errno::EEXIST));
        let Some(Program::Route { vector, .. }) = env.programs.last().copied() else {
            panic!("binding routes the line");
        };
        // A level line fires: masked until the EOI.
        assert_eq!(
            env.lines.interrupt(vector),
            Some((20, Some(Program::Mask(20))))
        );
        let eoi = |env: &mut FakeMachine, irq| call(env, PhysdevOp::Eoi, &PhysdevEoi { irq }).0;
        assert_eq!(eoi(&mut env, 21), Err(Errno::EINVAL));
        assert_eq!(eoi(&mut env, 20), Ok(0));
        assert_eq!(env.programs.last(), Some(&Program::Unmask(20)));
        // The console's line is the hypervisor's.
        assert_eq!(map(&mut env, 0x7ff0, MAP_PIRQ_TYPE_GSI, 4, 4), Ok(4));
        assert_eq!(bind(&mut env, 4), Err(Errno::EBUSY));
        // Closing the port masks the line; unmapping works once.
        let close = dom0_abi::event_channel::EvtchnOp::Close as u64;
        env.poke(BASE, &port.to_le_bytes());
        assert_eq!(
            crate::hypercall::evtchn::event_channel_op(&mut env, close, BASE),
            Ok(0)
        );
        assert_eq!(env.programs.last(), Some(&Program::Mask(20)));
        let unmap = |env: &mut FakeMachine, pirq| {
            call(
                env,
                PhysdevOp::UnmapPirq,
                &PhysdevUnmapPirq {
                    domid: 0x7ff0,
                    pad: 0,
                    pirq,
                },
            )
            .0
        };
        assert_eq!(unmap(&mut env, 20), Ok(0));
        assert_eq!(unmap(&mut env, 20), Err(Errno::EINVAL));
        // setup_gsi: once per GSI.
        let setup = |env: &mut FakeMachine, gsi| {
            call(
                env,
                PhysdevOp::SetupGsi,
                &PhysdevSetupGsi {
                    gsi,
                    triggering: 1,
                    polarity: 1,
                    pad: [0; 2],
                },
            )
            .0
        };
        assert_eq!(setup(&mut env, 24), Err(Errno::EINVAL));
        assert_eq!(setup(&mut env, 22), Ok(0));
        assert_eq!(setup(&mut env, 22), Err(Errno::EEXIST));
    }

    fn iobitmap(env: &mut FakeMachine, base: u64, nr_ports: u32) -> Result<u64, Errno> {
        let mut arg = [0u8; 16];
        arg[..8].copy_from_slice(&base.to_le_bytes());
        arg[8..12].copy_from_slice(&nr_ports.to_le_bytes());
        env.poke(BASE, &arg);
        physdev_op(
            env,
            &mut Effects::default(),
            PhysdevOp::SetIobitmap as u64,
            BASE,
        )
    }

    #[test]
    fn set_iobitmap_as_xen() {
        let mut env = FakeMachine::new(16);
        assert_eq!(iobitmap(&mut env, 0x1000, 0x100), Ok(0));
        assert_eq!(
            env.vcpu().iobitmap,
            IoBitmap {
                base: 0x1000,
                limit: 0x100
            }
        );
        assert_eq!(iobitmap(&mut env, 0x2000, 0x1_0000), Ok(0));
        assert_eq!(iobitmap(&mut env, 0x7fff_ffff_f000, 0x100), Ok(0));
        for (base, ports) in [
            (0x1000, 0x1_0001),
            (0xffff_8000_0000_0000, 0x100),
            (0x0000_8000_0000_0000, 0x10),
        ] {
            assert_eq!(iobitmap(&mut env, base, ports), Err(Errno::EINVAL));
        }
        assert_eq!(env.vcpu().iobitmap.base, 0x7fff_ffff_f000);
        assert_eq!(iobitmap(&mut env, 0, 0), Ok(0));
        assert_eq!(env.vcpu().iobitmap, IoBitmap::default());
        assert_eq!(
            physdev_op(
                &mut env,
                &mut Effects::default(),
                PhysdevOp::SetIobitmap as u64,
                0
            ),
            Err(Errno::EFAULT)
        );
    }
}
