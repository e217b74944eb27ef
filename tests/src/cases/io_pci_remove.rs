//! `io_pci_remove`: dom0 telling the hypervisor a PCI device is gone
//! (`PHYSDEVOP_pci_device_remove`, or the older `manage_pci_remove`).
//!
//! Checks: functions of QEMU's q35 that dom0 has not reported are
//! `ENODEV` (Xen 4.17 scans configuration space only to set up an IOMMU,
//! and QEMU's q35 has none); reported ones (the host bridge 00:00.0 with
//! `pci_device_add`, 00:1f.2 with `manage_pci_add`) are removed once,
//! then `ENODEV`; a function that is not there and one of another segment
//! are `ENODEV`; a device reported in segment 1 can be removed; a
//! virtual function's report makes its physical function known as well;
//! an unreadable argument is `EFAULT`. (An unprivileged caller's `EPERM`
//! is a host unit test.)

use guest_pv_shim::dom0_abi::Errno;
use guest_pv_shim::dom0_abi::physdev::{
    PhysdevManagePci, PhysdevOp, PhysdevPciDevice, PhysdevPciDeviceAdd, XEN_PCI_DEV_VIRTFN,
};
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::hypercall as hc;
use guest_pv_shim::report;

/// `physdev_op(op, arg)` on a value of this test.
fn physdev<T>(op: PhysdevOp, arg: &T) -> i64 {
    // SAFETY: the commands here only read their argument.
    unsafe { hc::physdev_op_raw(op as u64, core::ptr::from_ref(arg) as u64) }
}

fn remove(seg: u16, bus: u8, devfn: u8) -> i64 {
    physdev(
        PhysdevOp::PciDeviceRemove,
        &PhysdevPciDevice { seg, bus, devfn },
    )
}

fn add(seg: u16, bus: u8, devfn: u8, flags: u32, physfn: (u8, u8)) -> i64 {
    let add = PhysdevPciDeviceAdd {
        seg,
        bus,
        devfn,
        flags,
        physfn_bus: physfn.0,
        physfn_devfn: physfn.1,
        pad: 0,
    };
    physdev(PhysdevOp::PciDeviceAdd, &add)
}

pub fn run(_start_info: &'static StartInfo) {
    let enodev = Errno::ENODEV.neg();
    for devfn in [0x00, 0x08, 0xf8, 0xfa] {
        report::check_ret(
            format_args!("remove 00:{:02x}.{}, not reported", devfn >> 3, devfn & 7),
            remove(0, 0, devfn),
            enodev,
        );
    }
    report::check_ret("add the host bridge 00:00.0", add(0, 0, 0, 0, (0, 0)), 0);
    report::check_ret("remove 00:00.0", remove(0, 0, 0), 0);
    report::check_ret("remove 00:00.0 again", remove(0, 0, 0), enodev);
    let manage = |bus, devfn| PhysdevManagePci { bus, devfn };
    report::check_ret(
        "manage_pci_add of 00:1f.2",
        physdev(PhysdevOp::ManagePciAdd, &manage(0, 0xfa)),
        0,
    );
    report::check_ret(
        "manage_pci_remove of 00:1f.2",
        physdev(PhysdevOp::ManagePciRemove, &manage(0, 0xfa)),
        0,
    );
    report::check_ret(
        "manage_pci_remove of 00:1f.2 again",
        physdev(PhysdevOp::ManagePciRemove, &manage(0, 0xfa)),
        enodev,
    );
    report::check_ret(
        "remove a function that is not there (7f:1f.7)",
        remove(0, 0x7f, 0xff),
        enodev,
    );
    report::check_ret("remove from segment 3", remove(3, 0, 0), enodev);
    report::check_ret("add 01:00.0 of segment 1", add(1, 1, 0, 0, (0, 0)), 0);
    report::check_ret("remove 01:00.0 of segment 1", remove(1, 1, 0), 0);
    report::check_ret("remove it again", remove(1, 1, 0), enodev);
    report::check_ret(
        "add virtual function 05:00.1 of 05:00.0",
        add(0, 5, 0x01, XEN_PCI_DEV_VIRTFN, (5, 0x00)),
        0,
    );
    report::check_ret("remove its physical function 05:00.0", remove(0, 5, 0), 0);
    report::check_ret("remove the virtual function", remove(0, 5, 0x01), 0);
    for (op, what) in [
        (PhysdevOp::PciDeviceRemove, "pci_device_remove"),
        (PhysdevOp::ManagePciRemove, "manage_pci_remove"),
    ] {
        // SAFETY: an unmapped argument; the hypervisor must refuse it.
        let ret = unsafe { hc::physdev_op_raw(op as u64, 0x1000) };
        report::check_ret(
            format_args!("{what} with an unreadable argument"),
            ret,
            Errno::EFAULT.neg(),
        );
    }
}
