//! The machine's devices as dom0 sees them through the `drivers` crate:
//! `pci-list` raises dom0's I/O privilege, walks the PCI buses through
//! configuration space and names the driver that takes each function.
//! dom0 touches no port before a command asks for it, so a machine
//! without devices (or a hypervisor that does not give dom0 its ports)
//! is unaffected.

use drivers::pci::{self, Function};
use guest_pv_shim::devices::{self, Devices};
use guest_pv_shim::{println, report};

use crate::shell::At;

/// The driver of `drivers` that takes `function`, if any.
fn driver_of(function: &Function) -> &'static str {
    if drivers::blk::is_virtio_blk(function) {
        "virtio-blk"
    } else if drivers::net::is_virtio_net(function) {
        "virtio-net"
    } else {
        "-"
    }
}

/// `pci-list`: one line per function (address, IDs, class, driver); the
/// check is the number of functions.
pub fn pci_list(at: At) {
    let ret = devices::enable_io();
    if ret != 0 {
        report::fail(
            format_args!("{at}pci-list set_iopl"),
            format_args!("{}", report::Ret(ret)),
        );
        return;
    }
    println!("address  vendor:device class  driver");
    let mut count = 0u32;
    pci::enumerate(&mut Devices, |_, f| {
        count += 1;
        println!(
            "{}  {:04x}:{:04x}    {:06x} {}",
            f.address,
            f.vendor,
            f.device,
            f.class,
            driver_of(&f)
        );
    });
    report::ok_value(format_args!("{at}pci-list functions"), count);
}
