//! The machine's devices for a PV kernel with I/O privilege (dom0, or a
//! driver domain given the ports, memory and interrupts): PCI
//! configuration space and PIRQs through [`crate::io`], uncached MMIO pages
//! mapped with `mmu_update` and `DOMID_IO`, DMA pages whose machine
//! addresses come from the p2m, and legacy interrupts as PIRQ event
//! channels. [`Devices`] implements the `drivers` crate's
//! [`drivers::Platform`] with them.
//!
//! Invariants:
//! - DMA pages are page-aligned pages of `.bss` ([`DMA_PAGES`] of them),
//!   handed out once and never given back; no Rust reference points into
//!   them, every access is volatile through [`Page`].
//! - MMIO pages are mapping windows ([`crate::mm`]) from
//!   [`MMIO_WINDOWS`], handed out once.
//! - The kernel must first raise its I/O privilege ([`enable_io`]); a
//!   configuration access without it faults, and reads as no device.

use core::arch::global_asm;
use core::sync::atomic::{AtomicUsize, Ordering, fence};

use dom0_abi::layout::PAGE_SIZE;
use dom0_abi::mmu::PteFlags;
use dom0_abi::types::DomId;
use drivers::pci::Address;
use drivers::{Error, Interrupt, Platform, Region};

use crate::io;
use crate::{hypercall, mm, shared};

/// DMA pages in the pool.
pub const DMA_PAGES: usize = 40;
/// The mapping windows MMIO pages use: the last 16, above every window
/// dom0's back ends use (`toolstack::xen`'s `*_WINDOW_BASE`), so that
/// dom0 can drive devices while it serves domUs (four pages per virtio
/// device).
pub const MMIO_WINDOWS: core::ops::Range<usize> = 56..mm::WINDOW_COUNT;

global_asm!(
    ".pushsection .bss.shim_dma, \"aw\", @nobits",
    ".balign 4096",
    ".globl shim_dma_area",
    "shim_dma_area:",
    ".space {size}",
    ".popsection",
    size = const DMA_PAGES * 4096,
);

unsafe extern "C" {
    /// The first DMA page (only its address is used).
    static shim_dma_area: u8;
}

/// DMA pages handed out.
static DMA_USED: AtomicUsize = AtomicUsize::new(0);
/// MMIO windows handed out.
static MMIO_USED: AtomicUsize = AtomicUsize::new(0);

/// Raises the virtual IOPL to 1 (`PHYSDEVOP_set_iopl`), so that the kernel
/// (ring 1) may use the ports the domain was given, as Linux does at boot.
pub fn enable_io() -> i64 {
    io::set_iopl(1)
}

/// A mapped page: a DMA page or an MMIO window.
pub struct Page {
    va: u64,
    /// Ordinary memory (a DMA page), which may be copied in bulk; device
    /// registers are only read and written with their own widths.
    dma: bool,
}

impl Page {
    fn at(&self, offset: usize, width: usize) -> u64 {
        let offset = offset.min(4096 - width) & !(width - 1);
        self.va + offset as u64
    }

    /// The part of `offset..offset + len` inside the page, as a start
    /// address and a length.
    fn span(&self, offset: usize, len: usize) -> (u64, usize) {
        let offset = offset.min(4096);
        (self.va + offset as u64, len.min(4096 - offset))
    }
}

impl Region for Page {
    fn read8(&self, offset: usize) -> u8 {
        // SAFETY: `at` keeps the access inside the page, which is mapped
        // (module invariants) and referenced by no Rust code.
        unsafe { (self.at(offset, 1) as *const u8).read_volatile() }
    }
    fn read16(&self, offset: usize) -> u16 {
        // SAFETY: as for `read8`; aligned by `at`.
        unsafe { (self.at(offset, 2) as *const u16).read_volatile() }
    }
    fn read32(&self, offset: usize) -> u32 {
        // SAFETY: as for `read8`; aligned by `at`.
        unsafe { (self.at(offset, 4) as *const u32).read_volatile() }
    }
    fn write8(&mut self, offset: usize, value: u8) {
        // SAFETY: as for `read8`; the page is mapped writable.
        unsafe { (self.at(offset, 1) as *mut u8).write_volatile(value) }
    }
    fn write16(&mut self, offset: usize, value: u16) {
        // SAFETY: as for `write8`; aligned by `at`.
        unsafe { (self.at(offset, 2) as *mut u16).write_volatile(value) }
    }
    fn write32(&mut self, offset: usize, value: u32) {
        // SAFETY: as for `write8`; aligned by `at`.
        unsafe { (self.at(offset, 4) as *mut u32).write_volatile(value) }
    }
    fn read_bytes(&self, offset: usize, buf: &mut [u8]) {
        if !self.dma {
            for (i, b) in buf.iter_mut().enumerate() {
                *b = self.read8(offset + i);
            }
            return;
        }
        let (va, len) = self.span(offset, buf.len());
        // What the device wrote is read after the used entry that says
        // so (a volatile read): no load of the page may move before it.
        fence(Ordering::Acquire);
        // SAFETY: `span` keeps the range inside the page, which is mapped
        // ordinary memory referenced by no Rust code; `buf` is another
        // object.
        unsafe { core::ptr::copy_nonoverlapping(va as *const u8, buf.as_mut_ptr(), len) };
    }
    fn write_bytes(&mut self, offset: usize, bytes: &[u8]) {
        if !self.dma {
            for (i, &b) in bytes.iter().enumerate() {
                self.write8(offset + i, b);
            }
            return;
        }
        let (va, len) = self.span(offset, bytes.len());
        // SAFETY: as in `read_bytes`; the page is mapped writable.
        unsafe { core::ptr::copy_nonoverlapping(bytes.as_ptr(), va as *mut u8, len) };
        // Stored before the descriptor that hands the page to the device.
        fence(Ordering::Release);
    }
}

/// A legacy interrupt bound to an event channel.
pub struct Pirq {
    /// The PIRQ.
    pub pirq: u32,
    /// Its event channel port.
    pub port: u32,
}

impl Interrupt for Pirq {
    fn wait(&mut self, timeout_ms: Option<u64>) -> bool {
        let deadline = timeout_ms.map_or(0, |ms| {
            shared::system_time_of(0)
                .unwrap_or(0)
                .saturating_add(ms.saturating_mul(1_000_000))
        });
        hypercall::sched_poll(&[self.port], deadline);
        shared::clear_evtchn_pending(self.port).unwrap_or(false)
    }

    fn eoi(&mut self) {
        io::eoi(self.pirq);
    }
}

/// The platform of a PV kernel with I/O privilege.
#[derive(Default)]
pub struct Devices;

impl Platform for Devices {
    type Page = Page;
    type Irq = Pirq;

    fn config_read(&mut self, function: Address, offset: u8) -> u32 {
        // A faulting access reads as no device, as on a bus where nothing
        // answers.
        io::pci_config_read(function.bus, function.device, function.function, offset)
            .unwrap_or(u32::MAX)
    }

    fn config_write(&mut self, function: Address, offset: u8, value: u32) {
        // A refused write has no effect; the read back shows it.
        let _ = io::pci_config_write(
            function.bus,
            function.device,
            function.function,
            offset,
            value,
        );
    }

    fn map_mmio(&mut self, phys: u64) -> Result<Page, Error> {
        let slot = MMIO_WINDOWS.start + MMIO_USED.load(Ordering::Relaxed);
        if slot >= MMIO_WINDOWS.end {
            return Err(Error::NoMemory);
        }
        let flags = mm::PTE_RW | PteFlags::PCD.bits() | PteFlags::PWT.bits();
        let ret = mm::map_foreign_window_mmu(slot, DomId::IO.0, phys / PAGE_SIZE, flags);
        if ret != 0 {
            return Err(Error::Map(ret));
        }
        MMIO_USED.fetch_add(1, Ordering::Relaxed);
        Ok(Page {
            va: mm::window_va(slot),
            dma: false,
        })
    }

    fn alloc_dma(&mut self) -> Result<(Page, u64), Error> {
        let index = DMA_USED.load(Ordering::Relaxed);
        if index >= DMA_PAGES {
            return Err(Error::NoMemory);
        }
        let va = core::ptr::addr_of!(shim_dma_area) as u64 + index as u64 * PAGE_SIZE;
        let mfn = mm::virt_to_mfn(va).ok_or(Error::NoMemory)?;
        DMA_USED.fetch_add(1, Ordering::Relaxed);
        let mut page = Page { va, dma: true };
        for offset in (0..4096).step_by(4) {
            page.write32(offset, 0);
        }
        Ok((page, mfn * PAGE_SIZE))
    }

    fn bind_gsi(&mut self, gsi: u32) -> Result<Pirq, Error> {
        let gsi =
            i32::try_from(gsi).map_err(|_| Error::Interrupt(dom0_abi::Errno::EINVAL.neg()))?;
        // Level triggered, active low (a PCI INTx line). Xen answers
        // EEXIST once the GSI is set up: not an error here.
        let ret = io::setup_gsi(gsi, 1, 1);
        if ret != 0 && ret != dom0_abi::Errno::EEXIST.neg() {
            return Err(Error::Interrupt(ret));
        }
        // PIRQ number `gsi`, as Linux asks for.
        let pirq = io::map_gsi(DomId::SELF.0, gsi, gsi).map_err(Error::Interrupt)?;
        let port = io::bind_pirq(pirq, 0).map_err(Error::Interrupt)?;
        Ok(Pirq { pirq, port })
    }
}
