//! `physdev_op(cmd, arg)`: physical interrupts, I/O privilege, PCI.
//!
//! For the hardware domain (and domains given device access). Unknown
//! `cmd`: `ENOSYS`; unreadable (or, for OUT fields, unwritable) `arg`:
//! `EFAULT`; no privilege: `EPERM`. A PIRQ is a domain's name for a
//! physical interrupt: PIRQs `0..nr_pirqs` (the GSIs plus 184 for the
//! hardware domain on one CPU, plus 32 for others).

numbered_enum! {
    /// `PHYSDEVOP_*`: the `cmd` of `physdev_op`.
    PhysdevOp {
        /// Legacy unmask notification.
        IrqUnmaskNotify = 4, "IRQ_UNMASK_NOTIFY";
        /// [`PhysdevIrqStatusQuery`] (IN `irq`, OUT `flags`): any domain,
        /// of its own PIRQs; a PV domain's answer is always
        /// [`XENIRQSTAT_NEEDS_EOI`], mapped or not. `EINVAL`: `irq` at or
        /// above `nr_pirqs`.
        IrqStatusQuery = 5, "irq_status_query";
        /// [`PhysdevSetIopl`] (IN): any domain; the calling vCPU's virtual
        /// IOPL, which lets `cli`/`sti` (as no-ops) and `in`/`out` (on to
        /// the domain's port rights) through from the kernel at 1 or
        /// more, from user mode at 3. `EINVAL`: above 3.
        SetIopl = 6, "set_iopl";
        /// [`PhysdevSetIobitmap`] (IN): any domain; the calling vCPU's I/O
        /// bitmap for ports below `nr_ports` (0: none), read at each
        /// access. `EINVAL`: more than 65536 ports, or a bitmap starting
        /// outside guest space (only the start is checked).
        SetIobitmap = 7, "set_iobitmap";
        /// Read an IOAPIC register.
        ApicRead = 8, "apic_read";
        /// Write an IOAPIC register.
        ApicWrite = 9, "apic_write";
        /// [`PhysdevIrq`] (IN `irq`, OUT `vector`): privileged; a no-op
        /// kept for old kernels (Linux calls it for each GSI it binds):
        /// the hypervisor owns the vectors, so `vector` is `irq` back.
        /// `EPERM`: caller not privileged.
        AllocIrqVector = 10, "alloc_irq_vector";
        /// Free an IRQ vector.
        FreeIrqVector = 11, "free_irq_vector";
        /// [`PhysdevEoi`] (IN): any domain, of its own mapped PIRQs: the
        /// end of an interrupt (a level line masked since it fired is
        /// unmasked; with a v1 EOI page the port is unmasked too).
        /// `EINVAL`: `irq` at or above `nr_pirqs`, or not mapped.
        Eoi = 12, "eoi";
        /// [`PhysdevMapPirq`] (IN, OUT `pirq`): privileged; maps GSI
        /// `index` (`MAP_PIRQ_TYPE_GSI`) at PIRQ `pirq` of `domid`
        /// (negative: the first free one from 16, then from the top).
        /// `ESRCH`: no such domain; `EPERM`: caller not privileged or
        /// without the GSI; `EINVAL`: unknown type, GSI out of range or 0,
        /// PIRQ out of range; `EEXIST`: the GSI is mapped at another PIRQ;
        /// `ENOSPC`: no free PIRQ; `ENOSYS`: the MSI types (not here).
        MapPirq = 13, "map_pirq";
        /// [`PhysdevUnmapPirq`] (IN): privileged; undoes `map_pirq` (a
        /// bound PIRQ is unbound first). `ESRCH`, `EPERM` as `map_pirq`;
        /// `EINVAL`: PIRQ out of range or not mapped.
        UnmapPirq = 14, "unmap_pirq";
        /// [`PhysdevManagePci`] (IN): privileged; reports PCI device
        /// `bus:devfn` of segment 0 (accepted: see [`PhysdevOp::PciDeviceAdd`]).
        /// `EPERM`: caller not privileged.
        ManagePciAdd = 15, "manage_pci_add";
        /// [`PhysdevManagePci`] (IN): as `pci_device_remove` in segment 0.
        ManagePciRemove = 16, "manage_pci_remove";
        /// [`PhysdevPirqEoiGmfn`] (IN): as `pirq_eoi_gmfn_v2`, and
        /// `PHYSDEVOP_eoi` also unmasks the PIRQ's port.
        PirqEoiGmfnV1 = 17, "pirq_eoi_gmfn_v1";
        /// Restore MSI state.
        RestoreMsi = 19, "restore_msi";
        /// [`PhysdevManagePciExt`] (IN): privileged; as `manage_pci_add`
        /// for an extended or virtual function. `EINVAL`: `is_extfn` or
        /// `is_virtfn` above 1; `EPERM`: caller not privileged.
        ManagePciAddExt = 20, "manage_pci_add_ext";
        /// [`PhysdevSetupGsi`] (IN): privileged; the trigger mode and
        /// polarity a GSI gets when bound. `EINVAL`: GSI out of range;
        /// `EPERM`: caller not privileged; `EEXIST`: already set up.
        SetupGsi = 21, "setup_gsi";
        /// Allocate a free PIRQ number.
        GetFreePirq = 23, "get_free_pirq";
        /// Report a reserved MMCFG range.
        PciMmcfgReserved = 24, "pci_mmcfg_reserved";
        /// [`PhysdevPciDeviceAdd`] (IN), followed by a `u32` proximity
        /// domain when `flags` has [`XEN_PCI_DEV_PXM`]: privileged; the
        /// hardware domain reports a PCI device it found. Xen records it
        /// for its IOMMU and MSI code; this hypervisor has neither, so the
        /// device is only recorded as known (any segment, bus and
        /// function, present or not, as on Xen; a virtual function's
        /// physical function too). `EFAULT`: `arg` or the
        /// proximity domain unreadable; `EPERM`: caller not privileged.
        PciDeviceAdd = 25, "pci_device_add";
        /// [`PhysdevPciDevice`] (IN): privileged; the hardware domain
        /// tells the hypervisor a PCI device is gone. The hypervisor
        /// forgets it (the devices reported with `pci_device_add` or
        /// `manage_pci_add*` are known: as Xen 4.17 without an IOMMU, it
        /// finds none itself). `EFAULT`: `arg` unreadable;
        /// `EPERM`: caller not privileged; `ENODEV`: no such device known
        /// (also a segment with none, or one removed already).
        PciDeviceRemove = 26, "pci_device_remove";
        /// Restore MSI state (segment aware).
        RestoreMsiExt = 27, "restore_msi_ext";
        /// [`PhysdevPirqEoiGmfn`] (IN): any domain; registers one of its
        /// frames as its PIRQ EOI bitmap (bit `n` set while PIRQ `n` waits
        /// for `PHYSDEVOP_eoi`), held writable until the domain goes.
        /// `EINVAL`: not the caller's frame, or it cannot be writable;
        /// `EBUSY`: one is registered already.
        PirqEoiGmfnV2 = 28, "pirq_eoi_gmfn_v2";
        /// Debug-port control.
        DbgpOp = 29, "dbgp_op";
        /// Prepare MSI-X.
        PrepareMsix = 30, "prepare_msix";
        /// Release MSI-X.
        ReleaseMsix = 31, "release_msix";
    }
}

/// `XEN_PCI_DEV_EXTFN`: an extended (ARI) function.
pub const XEN_PCI_DEV_EXTFN: u32 = 1 << 0;
/// `XEN_PCI_DEV_VIRTFN`: an SR-IOV virtual function of `physfn`.
pub const XEN_PCI_DEV_VIRTFN: u32 = 1 << 1;
/// `XEN_PCI_DEV_PXM`: a `u32` proximity domain follows the structure.
pub const XEN_PCI_DEV_PXM: u32 = 1 << 2;

/// `struct physdev_pci_device_add` (12 bytes, then `optarr`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhysdevPciDeviceAdd {
    /// IN: PCI segment.
    pub seg: u16,
    /// IN: bus.
    pub bus: u8,
    /// IN: device and function (`slot << 3 | function`).
    pub devfn: u8,
    /// IN: `XEN_PCI_DEV_*`.
    pub flags: u32,
    /// IN: the physical function's bus (with [`XEN_PCI_DEV_VIRTFN`]).
    pub physfn_bus: u8,
    /// IN: the physical function's devfn (with [`XEN_PCI_DEV_VIRTFN`]).
    pub physfn_devfn: u8,
    /// Padding up to `optarr`.
    pub pad: u16,
}

/// `struct physdev_pci_device` (4 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhysdevPciDevice {
    /// IN: PCI segment.
    pub seg: u16,
    /// IN: bus.
    pub bus: u8,
    /// IN: device and function (`slot << 3 | function`).
    pub devfn: u8,
}

/// `struct physdev_manage_pci` (2 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhysdevManagePci {
    /// IN: bus (segment 0).
    pub bus: u8,
    /// IN: device and function.
    pub devfn: u8,
}

/// `struct physdev_manage_pci_ext` (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhysdevManagePciExt {
    /// IN: bus (segment 0).
    pub bus: u8,
    /// IN: device and function.
    pub devfn: u8,
    /// Padding.
    pub pad: u16,
    /// IN: 0 or 1: an extended (ARI) function.
    pub is_extfn: u32,
    /// IN: 0 or 1: an SR-IOV virtual function of `physfn`.
    pub is_virtfn: u32,
    /// IN: the physical function's bus.
    pub physfn_bus: u8,
    /// IN: the physical function's devfn.
    pub physfn_devfn: u8,
    /// Padding.
    pub pad1: u16,
}

/// `XENIRQSTAT_needs_eoi`: the PIRQ needs `PHYSDEVOP_eoi`.
pub const XENIRQSTAT_NEEDS_EOI: u32 = 1 << 0;
/// `XENIRQSTAT_shared`: the PIRQ is shared.
pub const XENIRQSTAT_SHARED: u32 = 1 << 1;
/// `MAP_PIRQ_TYPE_MSI`.
pub const MAP_PIRQ_TYPE_MSI: i32 = 0;
/// `MAP_PIRQ_TYPE_GSI`.
pub const MAP_PIRQ_TYPE_GSI: i32 = 1;
/// `MAP_PIRQ_TYPE_UNKNOWN`.
pub const MAP_PIRQ_TYPE_UNKNOWN: i32 = 2;
/// `MAP_PIRQ_TYPE_MSI_SEG`.
pub const MAP_PIRQ_TYPE_MSI_SEG: i32 = 3;
/// `MAP_PIRQ_TYPE_MULTI_MSI`.
pub const MAP_PIRQ_TYPE_MULTI_MSI: i32 = 4;

/// `struct physdev_irq` (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhysdevIrq {
    /// IN: the IRQ.
    pub irq: u32,
    /// OUT: its vector (the IRQ itself for `alloc_irq_vector`).
    pub vector: u32,
}

/// `struct physdev_eoi` (4 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhysdevEoi {
    /// IN: the PIRQ.
    pub irq: u32,
}

/// `struct physdev_irq_status_query` (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhysdevIrqStatusQuery {
    /// IN: the PIRQ.
    pub irq: u32,
    /// OUT: `XENIRQSTAT_*`.
    pub flags: u32,
}

/// `struct physdev_set_iopl` (4 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhysdevSetIopl {
    /// IN: the virtual IOPL (0-3).
    pub iopl: u32,
}

/// `struct physdev_set_iobitmap` (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhysdevSetIobitmap {
    /// IN: guest pointer to the bitmap (a set bit denies the port).
    pub bitmap: u64,
    /// IN: number of ports covered (<= 65536).
    pub nr_ports: u32,
    /// Padding.
    pub pad: u32,
}

/// `struct physdev_map_pirq` (40 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhysdevMapPirq {
    /// IN: the domain.
    pub domid: u16,
    /// Padding.
    pub pad: u16,
    /// IN: `MAP_PIRQ_TYPE_*`.
    pub kind: i32,
    /// IN: GSI, or MSI vector index.
    pub index: i32,
    /// IN/OUT: the PIRQ (negative: allocate).
    pub pirq: i32,
    /// IN: PCI bus (segment in the high 16 bits for segment-aware types).
    pub bus: i32,
    /// IN: PCI device/function.
    pub devfn: i32,
    /// IN/OUT: MSI-X entry number (or count).
    pub entry_nr: i32,
    /// Padding.
    pub pad1: u32,
    /// IN: MSI-X table base.
    pub table_base: u64,
}

/// `struct physdev_setup_gsi` (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhysdevSetupGsi {
    /// IN: the GSI.
    pub gsi: i32,
    /// IN: 0 edge, 1 level.
    pub triggering: u8,
    /// IN: 0 active high, 1 active low.
    pub polarity: u8,
    /// Padding.
    pub pad: [u8; 2],
}

/// `struct physdev_pirq_eoi_gmfn` (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhysdevPirqEoiGmfn {
    /// IN: the guest frame of the EOI bitmap (bit `n` set: PIRQ `n` is
    /// masked until `PHYSDEVOP_eoi`).
    pub gmfn: u64,
}

/// `struct physdev_unmap_pirq` (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhysdevUnmapPirq {
    /// IN: the domain.
    pub domid: u16,
    /// Padding.
    pub pad: u16,
    /// IN: the PIRQ.
    pub pirq: i32,
}

crate::assert_layout!(PhysdevIrq, 8, { irq: 0, vector: 4 });
crate::assert_layout!(PhysdevEoi, 4, { irq: 0 });
crate::assert_layout!(PhysdevPciDeviceAdd, 12, {
    seg: 0, bus: 2, devfn: 3, flags: 4, physfn_bus: 8, physfn_devfn: 9, pad: 10,
});
crate::assert_layout!(PhysdevManagePci, 2, { bus: 0, devfn: 1 });
crate::assert_layout!(PhysdevPciDevice, 4, { seg: 0, bus: 2, devfn: 3 });
crate::assert_layout!(PhysdevManagePciExt, 16, {
    bus: 0, devfn: 1, pad: 2, is_extfn: 4, is_virtfn: 8, physfn_bus: 12, physfn_devfn: 13,
    pad1: 14,
});
crate::assert_layout!(PhysdevIrqStatusQuery, 8, { irq: 0, flags: 4 });
crate::assert_layout!(PhysdevSetIopl, 4, { iopl: 0 });
crate::assert_layout!(PhysdevSetIobitmap, 16, { bitmap: 0, nr_ports: 8, pad: 12 });
crate::assert_layout!(PhysdevMapPirq, 40, {
    domid: 0, pad: 2, kind: 4, index: 8, pirq: 12, bus: 16, devfn: 20, entry_nr: 24,
    pad1: 28, table_base: 32,
});
crate::assert_layout!(PhysdevUnmapPirq, 8, { domid: 0, pad: 2, pirq: 4 });
crate::assert_layout!(PhysdevSetupGsi, 8, { gsi: 0, triggering: 4, polarity: 5, pad: 6 });
crate::assert_layout!(PhysdevPirqEoiGmfn, 8, { gmfn: 0 });
