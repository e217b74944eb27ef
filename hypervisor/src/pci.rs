//! The PCI devices the hypervisor knows of, as Xen 4.17 keeps its list on
//! a machine without an IOMMU (it scans configuration space only to set
//! one up): those the hardware domain reports (`pci_device_add`,
//! `manage_pci_add*`), minus those it removes (`pci_device_remove`,
//! `manage_pci_remove`). Nothing else is recorded: there is no IOMMU or
//! MSI here to set up for a device. A function is named by its
//! `seg << 16 | bus << 8 | devfn`.
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::collections::BTreeSet;

use dom0_abi::Errno;

/// The known PCI functions.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PciDevices {
    known: BTreeSet<u32>,
}

/// The name of function `devfn` of `bus` in segment `seg`.
pub fn sbdf(seg: u16, bus: u8, devfn: u8) -> u32 {
    (u32::from(seg) << 16) | (u32::from(bus) << 8) | u32::from(devfn)
}

impl PciDevices {
    /// Records function `sbdf` (known already or not).
    pub fn add(&mut self, sbdf: u32) {
        self.known.insert(sbdf);
    }

    /// Forgets function `sbdf`. `ENODEV`: not known.
    pub fn remove(&mut self, sbdf: u32) -> Result<(), Errno> {
        if self.known.remove(&sbdf) {
            Ok(())
        } else {
            Err(Errno::ENODEV)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remove_forgets_once() {
        let mut devices = PciDevices::default();
        devices.add(sbdf(1, 2, 3));
        assert_eq!(devices.remove(sbdf(1, 2, 3)), Ok(()));
        assert_eq!(devices.remove(sbdf(1, 2, 3)), Err(Errno::ENODEV));
        assert_eq!(devices.remove(sbdf(0, 0, 0)), Err(Errno::ENODEV));
    }
}
