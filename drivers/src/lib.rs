//! Device drivers for the machine's devices, as dom0 (or later a driver
//! domain) runs them: nothing here assumes more than the access it is
//! given through [`Platform`].
//!
//! - [`pci`]: configuration space, enumeration (bus 0 and the buses behind
//!   bridges), BAR sizing and decoding, the capability list;
//! - [`region`]: the [`Region`] trait every register and DMA access goes
//!   through (MMIO pages, DMA pages);
//! - [`virtio`]: the virtio 1.x ("modern") PCI transport: its capabilities,
//!   the common configuration, feature negotiation, notifications, the ISR;
//! - [`queue`]: split virtqueues (descriptor table, available and used
//!   rings) in one DMA page;
//! - [`blk`]: virtio-blk behind [`blk::BlockDevice`];
//! - [`net`]: virtio-net behind [`net::NetDevice`].
//!
//! Everything is pure, safe Rust and tested on the host against fake
//! devices; the platform (port I/O, MMIO mappings, machine addresses of
//! DMA pages, PIRQ event channels) is the caller's [`Platform`], which
//! `guest-pv-shim` implements for a PV kernel on Xen's interface.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod blk;
pub mod net;
pub mod pci;
pub mod queue;
pub mod region;
pub mod virtio;

pub use region::Region;

/// Why a driver gave up on an operation or a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// The platform could not map a BAR page (the hypercall's errno).
    Map(i64),
    /// The platform has no DMA page left.
    NoMemory,
    /// The platform could not set up the interrupt (the hypercall's errno).
    Interrupt(i64),
    /// A device capability or register is not as the transport needs it.
    BadDevice(&'static str),
    /// The device refused the features the driver needs.
    Features,
    /// The device did not answer in time.
    Timeout,
    /// The device returned a descriptor it was not given.
    BadUsed,
    /// The device reported an I/O error (virtio-blk status).
    Io(u8),
    /// The device set `DEVICE_NEEDS_RESET`.
    NeedsReset,
    /// The request is malformed (length, range).
    Invalid,
    /// The queue has no free descriptor.
    QueueFull,
}

/// What the drivers need of the machine and the hypervisor.
pub trait Platform {
    /// A mapped page: MMIO or DMA memory.
    type Page: Region;
    /// One device interrupt.
    type Irq: Interrupt;

    /// Reads the 32-bit configuration register at `offset` (4-aligned)
    /// of `function`.
    fn config_read(&mut self, function: pci::Address, offset: u8) -> u32;
    /// Writes the 32-bit configuration register at `offset` (4-aligned).
    fn config_write(&mut self, function: pci::Address, offset: u8, value: u32);
    /// Maps the MMIO page at physical address `phys` (page-aligned),
    /// uncached.
    fn map_mmio(&mut self, phys: u64) -> Result<Self::Page, Error>;
    /// A zeroed DMA page and the bus (machine) address the device must be
    /// given for it.
    fn alloc_dma(&mut self) -> Result<(Self::Page, u64), Error>;
    /// Routes the legacy interrupt `gsi` (level-triggered, active low) to
    /// the caller.
    fn bind_gsi(&mut self, gsi: u32) -> Result<Self::Irq, Error>;
}

/// A device interrupt as the driver sees it.
pub trait Interrupt {
    /// Blocks until the interrupt fires, or `timeout_ms` pass if given
    /// (`None`: no timer at all, so an idle CPU under `-icount` has no
    /// deadline to jump the clock to); `true` if it fired. The driver then
    /// acknowledges it at the device and calls [`Interrupt::eoi`].
    fn wait(&mut self, timeout_ms: Option<u64>) -> bool;
    /// Ends the interrupt, so the line may fire again.
    fn eoi(&mut self);
}

#[cfg(test)]
pub(crate) mod fake;
