//! The machine's devices as dom0 sees them through the `drivers` crate:
//! `pci-list` raises dom0's I/O privilege, walks the PCI buses through
//! configuration space and names the driver that takes each function;
//! [`Disks`] brings up the virtio disks when a domU's first `phy:` disk
//! needs them. dom0 touches no port before a command or a disk asks for
//! it, so a machine without devices (or a hypervisor that does not give
//! dom0 its ports) is unaffected.

use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;

use dom0::blkback::BlockDevice;
use dom0::physdisk::{self, Partition, Slice};
use drivers::blk::{BlockDevice as _, SECTOR, VirtioBlk};
use drivers::pci::{self, Function};
use guest_pv_shim::devices::{self, Devices};
use guest_pv_shim::{println, report};

use crate::shell::At;

/// One of dom0's virtio disks and the partitions of its MBR.
struct Physical {
    device: Rc<RefCell<VirtioBlk<Devices>>>,
    partitions: Vec<Partition>,
}

/// dom0's virtio disks, `vda`, `vdb`, ... in PCI order; found once, when
/// the first `phy:` disk is opened.
#[derive(Default)]
pub struct Disks {
    found: Option<Vec<Physical>>,
}

impl Disks {
    /// The disks, brought up on the first call: each virtio-blk function
    /// is initialised (interrupt-driven through its PIRQ) and its MBR
    /// read; what it found is logged.
    fn found(&mut self) -> &[Physical] {
        self.found.get_or_insert_with(|| {
            if devices::enable_io() != 0 {
                println!("dom0: disks: no I/O privilege");
                return Vec::new();
            }
            let mut addresses = Vec::new();
            pci::enumerate(&mut Devices, |_, f| {
                if drivers::blk::is_virtio_blk(&f) {
                    addresses.push(f.address);
                }
            });
            let mut found = Vec::new();
            for address in addresses {
                let Some(name) = physdisk::disk_name(found.len()) else {
                    break;
                };
                let name = core::str::from_utf8(&name).unwrap_or("vd?");
                let mut device = match VirtioBlk::new(&mut Devices, address) {
                    Ok(device) => device,
                    Err(e) => {
                        println!("dom0: disks: virtio-blk at {address}: {e:?}");
                        continue;
                    }
                };
                let mut mbr = [0u8; SECTOR];
                let partitions = match device.read(0, &mut mbr) {
                    Ok(()) => physdisk::parse_mbr(&mbr, device.sectors()),
                    Err(e) => {
                        println!("dom0: disks: {name}: reading the MBR: {e:?}");
                        Vec::new()
                    }
                };
                println!(
                    "dom0: disks: {name} at {address}: {} sectors, {} partitions",
                    device.sectors(),
                    partitions.len()
                );
                for p in &partitions {
                    println!(
                        "dom0: disks: {name}{}: sectors {} +{}",
                        p.number, p.start, p.sectors
                    );
                }
                found.push(Physical {
                    device: Rc::new(RefCell::new(device)),
                    partitions,
                });
            }
            found
        })
    }

    /// Opens `name` (`vda`, `vda1`, ...) for blkback.
    ///
    /// # Errors
    /// No such disk or partition.
    pub fn open(
        &mut self,
        name: &str,
        writable: bool,
    ) -> Result<Box<dyn BlockDevice>, &'static str> {
        let (index, number) =
            physdisk::parse_name(name).ok_or("not a disk name (vda, vda1, ...)")?;
        let disk = self.found().get(index).ok_or("no such disk")?;
        let (start, sectors) = if number == 0 {
            (0, disk.device.borrow().sectors())
        } else {
            let p = disk
                .partitions
                .iter()
                .find(|p| p.number == number)
                .ok_or("no such partition")?;
            (p.start, p.sectors)
        };
        Slice::new(disk.device.clone(), start, sectors, writable)
            .map(|s| Box::new(s) as Box<dyn BlockDevice>)
            .ok_or("the partition is not on the disk")
    }
}

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
