//! `io_pci_add`: dom0 reporting PCI devices, as Linux does for each one it
//! finds (`PHYSDEVOP_pci_device_add`, or the older `manage_pci_add` and
//! `manage_pci_add_ext`).
//!
//! Checks: the host bridge 00:00.0 of QEMU's q35, a function that is not
//! there, another segment, a virtual function and a proximity domain are
//! all accepted; an unreadable argument is `EFAULT`;
//! `manage_pci_add_ext` with `is_extfn` or `is_virtfn` above 1 is
//! `EINVAL`. (An unprivileged caller's `EPERM` and an unreadable proximity
//! domain are host unit tests.)

use guest_pv_shim::dom0_abi::Errno;
use guest_pv_shim::dom0_abi::physdev::{
    PhysdevManagePci, PhysdevManagePciExt, PhysdevOp, PhysdevPciDeviceAdd, XEN_PCI_DEV_EXTFN,
    XEN_PCI_DEV_PXM, XEN_PCI_DEV_VIRTFN,
};
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::hypercall as hc;
use guest_pv_shim::report;

/// `physdev_op(op, arg)` on a value of this test.
fn physdev<T>(op: PhysdevOp, arg: &T) -> i64 {
    // SAFETY: the commands here only read their argument.
    unsafe { hc::physdev_op_raw(op as u64, core::ptr::from_ref(arg) as u64) }
}

/// `pci_device_add` with its optional proximity domain after it.
#[repr(C)]
struct WithPxm {
    add: PhysdevPciDeviceAdd,
    pxm: u32,
}

fn add(seg: u16, bus: u8, devfn: u8, flags: u32) -> PhysdevPciDeviceAdd {
    PhysdevPciDeviceAdd {
        seg,
        bus,
        devfn,
        flags,
        ..PhysdevPciDeviceAdd::default()
    }
}

pub fn run(_start_info: &'static StartInfo) {
    for (what, arg) in [
        ("the host bridge 00:00.0", add(0, 0, 0, 0)),
        (
            "a function that is not there (7f:1f.7)",
            add(0, 0x7f, 0xff, 0),
        ),
        ("a device of segment 1", add(1, 0, 0x08, 0)),
        ("an extended function", add(0, 0, 0x09, XEN_PCI_DEV_EXTFN)),
    ] {
        report::check_ret(
            format_args!("pci_device_add of {what}"),
            physdev(PhysdevOp::PciDeviceAdd, &arg),
            0,
        );
    }
    let mut vf = add(0, 0, 0x11, XEN_PCI_DEV_VIRTFN);
    vf.physfn_bus = 0;
    vf.physfn_devfn = 0x10;
    report::check_ret(
        "pci_device_add of a virtual function",
        physdev(PhysdevOp::PciDeviceAdd, &vf),
        0,
    );
    let pxm = WithPxm {
        add: add(0, 0, 0, XEN_PCI_DEV_PXM),
        pxm: 0,
    };
    report::check_ret(
        "pci_device_add with a proximity domain",
        physdev(PhysdevOp::PciDeviceAdd, &pxm),
        0,
    );
    for (op, what) in [
        (PhysdevOp::PciDeviceAdd, "pci_device_add"),
        (PhysdevOp::ManagePciAdd, "manage_pci_add"),
        (PhysdevOp::ManagePciAddExt, "manage_pci_add_ext"),
    ] {
        // SAFETY: an unmapped argument; the hypervisor must refuse it.
        let ret = unsafe { hc::physdev_op_raw(op as u64, 0x1000) };
        report::check_ret(
            format_args!("{what} with an unreadable argument"),
            ret,
            Errno::EFAULT.neg(),
        );
    }
    report::check_ret(
        "manage_pci_add of the host bridge",
        physdev(
            PhysdevOp::ManagePciAdd,
            &PhysdevManagePci { bus: 0, devfn: 0 },
        ),
        0,
    );
    let ext = |is_extfn, is_virtfn| PhysdevManagePciExt {
        devfn: 0x09,
        is_extfn,
        is_virtfn,
        ..PhysdevManagePciExt::default()
    };
    for (extfn, virtfn, want) in [
        (1, 0, 0),
        (0, 1, 0),
        (0, 0, 0),
        (2, 0, Errno::EINVAL.neg()),
        (0, 2, Errno::EINVAL.neg()),
    ] {
        report::check_ret(
            format_args!("manage_pci_add_ext with is_extfn {extfn}, is_virtfn {virtfn}"),
            physdev(PhysdevOp::ManagePciAddExt, &ext(extfn, virtfn)),
            want,
        );
    }
}
