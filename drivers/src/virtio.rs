//! The virtio 1.x PCI transport ("modern" devices only).
//!
//! A virtio function carries vendor capabilities (ID 9) that point into
//! its memory BARs: the common configuration, the notification area, the
//! ISR byte and the device-specific configuration. [`Transport::new`]
//! finds and maps them (each must lie within one page), resets the device
//! and routes its INTx line; [`Transport::negotiate`] runs the feature
//! handshake up to `FEATURES_OK`; [`Transport::setup_queue`] gives a queue
//! its rings; [`Transport::start`] sets `DRIVER_OK`.

use crate::pci::{self, Address, Bar};
use crate::queue::SplitQueue;
use crate::{Error, Interrupt, Platform, Region};

/// Vendor ID of virtio devices.
pub const VENDOR: u16 = 0x1AF4;
/// Device ID of a modern virtio device of type `n` is `DEVICE_BASE + n`.
pub const DEVICE_BASE: u16 = 0x1040;
/// Virtio device type: network card.
pub const TYPE_NET: u16 = 1;
/// Virtio device type: block device.
pub const TYPE_BLOCK: u16 = 2;

/// `VIRTIO_F_VERSION_1`: the device is a virtio 1.x device.
pub const F_VERSION_1: u64 = 1 << 32;

/// Device status: the driver noticed the device.
pub const STATUS_ACKNOWLEDGE: u8 = 1;
/// Device status: the driver knows how to drive it.
pub const STATUS_DRIVER: u8 = 2;
/// Device status: the driver is ready.
pub const STATUS_DRIVER_OK: u8 = 4;
/// Device status: feature negotiation is complete.
pub const STATUS_FEATURES_OK: u8 = 8;
/// Device status: the device hit an error it cannot recover from.
pub const STATUS_NEEDS_RESET: u8 = 64;
/// Device status: the driver gave up on the device.
pub const STATUS_FAILED: u8 = 128;

/// Interrupts in a row that bring no used buffer before
/// [`Transport::wait_used`] gives up with [`Error::Timeout`].
pub const FRUITLESS_WAKES: u32 = 64;

/// ISR bit: a queue has used buffers.
pub const ISR_QUEUE: u8 = 1;
/// ISR bit: the device configuration changed.
pub const ISR_CONFIG: u8 = 2;

/// `cfg_type` of the capability pointing at the common configuration.
pub const CAP_COMMON: u8 = 1;
/// `cfg_type` of the notification capability.
pub const CAP_NOTIFY: u8 = 2;
/// `cfg_type` of the ISR capability.
pub const CAP_ISR: u8 = 3;
/// `cfg_type` of the device-specific configuration capability.
pub const CAP_DEVICE: u8 = 4;

/// Offsets in the common configuration structure.
pub mod common {
    /// `device_feature_select` (u32).
    pub const DEVICE_FEATURE_SELECT: usize = 0x00;
    /// `device_feature` (u32).
    pub const DEVICE_FEATURE: usize = 0x04;
    /// `driver_feature_select` (u32).
    pub const DRIVER_FEATURE_SELECT: usize = 0x08;
    /// `driver_feature` (u32).
    pub const DRIVER_FEATURE: usize = 0x0C;
    /// `num_queues` (u16).
    pub const NUM_QUEUES: usize = 0x12;
    /// `device_status` (u8).
    pub const DEVICE_STATUS: usize = 0x14;
    /// `queue_select` (u16).
    pub const QUEUE_SELECT: usize = 0x16;
    /// `queue_size` (u16).
    pub const QUEUE_SIZE: usize = 0x18;
    /// `queue_msix_vector` (u16).
    pub const QUEUE_MSIX_VECTOR: usize = 0x1A;
    /// `queue_enable` (u16).
    pub const QUEUE_ENABLE: usize = 0x1C;
    /// `queue_notify_off` (u16).
    pub const QUEUE_NOTIFY_OFF: usize = 0x1E;
    /// `queue_desc` (u64).
    pub const QUEUE_DESC: usize = 0x20;
    /// `queue_driver` (u64): the available ring.
    pub const QUEUE_DRIVER: usize = 0x28;
    /// `queue_device` (u64): the used ring.
    pub const QUEUE_DEVICE: usize = 0x30;
    /// Size of the structure.
    pub const SIZE: u32 = 0x38;
}

/// A virtio capability as read from configuration space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capability {
    /// `cfg_type` (`CAP_*`).
    pub cfg_type: u8,
    /// The BAR it points into.
    pub bar: u8,
    /// Offset in the BAR.
    pub offset: u32,
    /// Length of the structure.
    pub length: u32,
    /// `notify_off_multiplier` (notification capability only, else 0).
    pub notify_multiplier: u32,
}

impl Capability {
    /// Decodes the capability from its configuration registers: `words`
    /// are the four (five for [`CAP_NOTIFY`]) dwords from its offset.
    #[must_use]
    pub fn decode(words: [u32; 5]) -> Capability {
        let cfg_type = (words[0] >> 24) as u8;
        Capability {
            cfg_type,
            bar: (words[1] & 0xFF) as u8,
            offset: words[2],
            length: words[3],
            notify_multiplier: if cfg_type == CAP_NOTIFY { words[4] } else { 0 },
        }
    }

    /// The capability's structure in a BAR at `bar_address` of `bar_size`
    /// bytes: its page's physical address and its offset in that page, if
    /// it lies within the BAR and within one page.
    #[must_use]
    pub fn page(&self, bar_address: u64, bar_size: u64) -> Option<(u64, usize)> {
        let end = u64::from(self.offset).checked_add(u64::from(self.length))?;
        if self.length == 0 || end > bar_size {
            return None;
        }
        let start = bar_address.checked_add(u64::from(self.offset))?;
        let page = start & !0xFFF;
        let in_page = start & 0xFFF;
        (in_page + u64::from(self.length) <= 0x1000).then_some((page, in_page as usize))
    }
}

/// The device type of a virtio function with vendor `vendor` and device
/// `device` (modern IDs only).
#[must_use]
pub fn device_type(vendor: u16, device: u16) -> Option<u16> {
    (vendor == VENDOR && device > DEVICE_BASE).then(|| device - DEVICE_BASE)
}

/// A structure of the device: its page and its offset there. As a
/// [`Region`], offsets are from the structure's start.
struct Window<R> {
    page: R,
    base: usize,
}

impl<R: Region> Region for Window<R> {
    fn read8(&self, offset: usize) -> u8 {
        self.page.read8(self.base + offset)
    }
    fn read16(&self, offset: usize) -> u16 {
        self.page.read16(self.base + offset)
    }
    fn read32(&self, offset: usize) -> u32 {
        self.page.read32(self.base + offset)
    }
    fn write8(&mut self, offset: usize, value: u8) {
        self.page.write8(self.base + offset, value);
    }
    fn write16(&mut self, offset: usize, value: u16) {
        self.page.write16(self.base + offset, value);
    }
    fn write32(&mut self, offset: usize, value: u32) {
        self.page.write32(self.base + offset, value);
    }
}

/// A virtio device through its PCI capabilities.
pub struct Transport<P: Platform> {
    common: Window<P::Page>,
    notify: Window<P::Page>,
    notify_multiplier: u32,
    isr: Window<P::Page>,
    device: Window<P::Page>,
    device_length: usize,
    irq: P::Irq,
    interrupts: u64,
    /// Where the function is.
    pub address: Address,
    /// The interrupt's GSI.
    pub gsi: u32,
}

/// Finds the capability of type `cfg_type` with the lowest offset in
/// configuration space (the spec's preferred one comes first).
fn find_capability<P: Platform>(
    platform: &mut P,
    address: Address,
    cfg_type: u8,
) -> Option<Capability> {
    let mut found = None;
    pci::capabilities(platform, address, |platform, offset, id| {
        if id != pci::CAP_VENDOR || found.is_some() {
            return;
        }
        let mut words = [0; 5];
        for (word, delta) in words.iter_mut().zip((0u8..).step_by(4)) {
            *word = platform.config_read(address, offset.wrapping_add(delta));
        }
        let cap = Capability::decode(words);
        if cap.cfg_type == cfg_type {
            found = Some(cap);
        }
    });
    found
}

fn map_capability<P: Platform>(
    platform: &mut P,
    address: Address,
    cfg_type: u8,
) -> Result<(Window<P::Page>, Capability), Error> {
    let cap = find_capability(platform, address, cfg_type)
        .ok_or(Error::BadDevice("virtio capability missing"))?;
    let Some(Bar::Memory {
        address: bar, size, ..
    }) = pci::read_bar(platform, address, cap.bar)
    else {
        return Err(Error::BadDevice("virtio capability not in a memory BAR"));
    };
    if bar == 0 {
        return Err(Error::BadDevice("BAR not assigned"));
    }
    let (phys, base) = cap.page(bar, size).ok_or(Error::BadDevice(
        "virtio structure crosses a page or its BAR",
    ))?;
    Ok((
        Window {
            page: platform.map_mmio(phys)?,
            base,
        },
        cap,
    ))
}

impl<P: Platform> Transport<P> {
    /// Maps the device's structures, enables memory decoding, bus
    /// mastering and INTx, routes its interrupt, and resets the device.
    pub fn new(platform: &mut P, address: Address) -> Result<Transport<P>, Error> {
        let (common, cap) = map_capability(platform, address, CAP_COMMON)?;
        if cap.length < common::SIZE {
            return Err(Error::BadDevice("common configuration too short"));
        }
        let (notify, cap) = map_capability(platform, address, CAP_NOTIFY)?;
        let notify_multiplier = cap.notify_multiplier;
        let (isr, _) = map_capability(platform, address, CAP_ISR)?;
        let (device, cap) = map_capability(platform, address, CAP_DEVICE)?;
        let pin = pci::read8(platform, address, pci::REG_INTERRUPT + 1);
        let gsi = pci::q35_gsi(address, pin).ok_or(Error::BadDevice("no routable INTx pin"))?;
        pci::update_command(
            platform,
            address,
            pci::COMMAND_MEMORY | pci::COMMAND_BUS_MASTER,
            pci::COMMAND_INTX_DISABLE,
        );
        let irq = platform.bind_gsi(gsi)?;
        let mut transport = Transport {
            common,
            notify,
            notify_multiplier,
            isr,
            device,
            device_length: cap.length as usize,
            irq,
            interrupts: 0,
            address,
            gsi,
        };
        transport.reset()?;
        Ok(transport)
    }

    /// Writes 0 to the status and waits for it to read back as 0.
    pub fn reset(&mut self) -> Result<(), Error> {
        self.common.write8(common::DEVICE_STATUS, 0);
        for _ in 0..1000 {
            if self.status() == 0 {
                return Ok(());
            }
        }
        Err(Error::Timeout)
    }

    /// The device status.
    #[must_use]
    pub fn status(&self) -> u8 {
        self.common.read8(common::DEVICE_STATUS)
    }

    fn add_status(&mut self, bits: u8) {
        let status = self.status() | bits;
        self.common.write8(common::DEVICE_STATUS, status);
    }

    /// Gives up on the device (`FAILED`).
    pub fn fail(&mut self) {
        self.add_status(STATUS_FAILED);
    }

    /// The 64 feature bits the device offers.
    #[must_use]
    pub fn device_features(&mut self) -> u64 {
        let mut features = 0;
        for half in 0..2u32 {
            self.common.write32(common::DEVICE_FEATURE_SELECT, half);
            features |= u64::from(self.common.read32(common::DEVICE_FEATURE)) << (32 * half);
        }
        features
    }

    /// Acknowledges the device, accepts `VERSION_1` and those of `wanted`
    /// it offers, and sets `FEATURES_OK`. Returns the accepted features;
    /// [`Error::Features`] (and `FAILED` set) if the device lacks
    /// `VERSION_1` or `required`, or refuses the set.
    pub fn negotiate(&mut self, wanted: u64, required: u64) -> Result<u64, Error> {
        self.add_status(STATUS_ACKNOWLEDGE | STATUS_DRIVER);
        let offered = self.device_features();
        let accepted = negotiated_features(offered, wanted, required).ok_or_else(|| {
            self.fail();
            Error::Features
        })?;
        for half in 0..2u32 {
            let bits = u32::try_from((accepted >> (32 * half)) & 0xFFFF_FFFF).unwrap_or(0);
            self.common.write32(common::DRIVER_FEATURE_SELECT, half);
            self.common.write32(common::DRIVER_FEATURE, bits);
        }
        self.add_status(STATUS_FEATURES_OK);
        if self.status() & STATUS_FEATURES_OK == 0 {
            self.fail();
            return Err(Error::Features);
        }
        Ok(accepted)
    }

    /// Number of queues the device has.
    #[must_use]
    pub fn num_queues(&self) -> u16 {
        self.common.read16(common::NUM_QUEUES)
    }

    /// Sets queue `index` up with a ring page from the platform (at most
    /// `max_size` entries, and no more than the device allows), and enables
    /// it.
    pub fn setup_queue(
        &mut self,
        platform: &mut P,
        index: u16,
        max_size: u16,
    ) -> Result<SplitQueue<P::Page>, Error> {
        if index >= self.num_queues() {
            return Err(Error::BadDevice("queue missing"));
        }
        self.common.write16(common::QUEUE_SELECT, index);
        let device_max = self.common.read16(common::QUEUE_SIZE);
        let size = crate::queue::choose_size(device_max, max_size)
            .ok_or(Error::BadDevice("queue size"))?;
        let (page, bus) = platform.alloc_dma()?;
        let queue = SplitQueue::new(page, bus, size, index);
        let layout = crate::queue::LAYOUT;
        let c = &mut self.common;
        c.write16(common::QUEUE_SIZE, size);
        c.write16(common::QUEUE_MSIX_VECTOR, 0xFFFF);
        c.write64(common::QUEUE_DESC, bus + layout.desc as u64);
        c.write64(common::QUEUE_DRIVER, bus + layout.avail as u64);
        c.write64(common::QUEUE_DEVICE, bus + layout.used as u64);
        c.write16(common::QUEUE_ENABLE, 1);
        Ok(queue)
    }

    /// Sets `DRIVER_OK`: the device may now use the queues.
    pub fn start(&mut self) {
        self.add_status(STATUS_DRIVER_OK);
    }

    /// Tells the device that queue `index` has new buffers.
    pub fn notify(&mut self, index: u16) -> Result<(), Error> {
        self.common.write16(common::QUEUE_SELECT, index);
        let off = self.common.read16(common::QUEUE_NOTIFY_OFF);
        let offset = notify_offset(self.notify.base, off, self.notify_multiplier)
            .ok_or(Error::BadDevice("notify offset past its page"))?;
        self.notify.page.write16(offset, index);
        Ok(())
    }

    /// Reads the ISR (which acknowledges the interrupt at the device).
    pub fn read_isr(&mut self) -> u8 {
        self.isr.read8(0)
    }

    /// The byte at `offset` of the device-specific configuration (0 past
    /// its end).
    #[must_use]
    pub fn config8(&self, offset: usize) -> u8 {
        if offset < self.device_length {
            self.device.read8(offset)
        } else {
            0
        }
    }

    /// The `u32` at `offset` (4-aligned) of the device-specific
    /// configuration (0 past its end).
    #[must_use]
    pub fn config32(&self, offset: usize) -> u32 {
        if offset + 4 <= self.device_length {
            self.device.read32(offset)
        } else {
            0
        }
    }

    /// Waits until queue `queue` has a used buffer: checks it, then blocks
    /// on the interrupt (acknowledging it at the device and ending it each
    /// time) until `pop` finds one. No timer is armed: a device that
    /// answers interrupts once per completion, so the steady state is one
    /// wake-up per request, and a timeout measured in system time would
    /// fire under `-icount`, where an idle CPU jumps the clock to the next
    /// deadline at once. The last resort is counted in wake-ups instead:
    /// [`FRUITLESS_WAKES`] interrupts in a row that bring nothing give
    /// [`Error::Timeout`]. A device that never interrupts again blocks the
    /// caller (as Linux's virtio-blk, which has no request timeout).
    /// Before it blocks it ends an interrupt the device already raised
    /// ([`Transport::acknowledge`]).
    pub fn wait_used<T>(
        &mut self,
        queue: &mut SplitQueue<P::Page>,
        mut pop: impl FnMut(&mut SplitQueue<P::Page>) -> Result<Option<T>, Error>,
    ) -> Result<T, Error> {
        for _ in 0..=FRUITLESS_WAKES {
            if let Some(done) = pop(queue)? {
                return Ok(done);
            }
            if self.status() & STATUS_NEEDS_RESET != 0 {
                return Err(Error::NeedsReset);
            }
            // An interrupt whose event a caller's event loop already took
            // (it clears every port it polled) but did not end yet keeps
            // the line masked, so no event would come: end it here and
            // look again.
            if !self.acknowledge() {
                self.wait_interrupt(None);
            }
        }
        pop(queue)?.ok_or(Error::Timeout)
    }

    /// Blocks until the device interrupts or `timeout_ms` pass (`None`:
    /// no timeout); acknowledges and ends the interrupt. Returns whether
    /// it fired.
    pub fn wait_interrupt(&mut self, timeout_ms: Option<u64>) -> bool {
        let fired = self.irq.wait(timeout_ms);
        self.read_isr();
        self.irq.eoi();
        self.interrupts += u64::from(fired);
        fired
    }

    /// Without blocking: acknowledges a pending interrupt at the device
    /// (reading the ISR lowers the line) and, if there was one, ends it so
    /// the line may fire again. For a driver served from an event loop
    /// that waits on the interrupt's event channel itself; returns whether
    /// the device had interrupted.
    pub fn acknowledge(&mut self) -> bool {
        let isr = self.read_isr();
        if isr != 0 {
            self.irq.eoi();
            self.interrupts += 1;
        }
        isr != 0
    }

    /// The interrupt (to add its event channel to a caller's wait).
    #[must_use]
    pub fn irq(&self) -> &P::Irq {
        &self.irq
    }

    /// How many interrupts the driver took: waits an interrupt ended, and
    /// interrupts [`Transport::acknowledge`] found.
    #[must_use]
    pub fn interrupts(&self) -> u64 {
        self.interrupts
    }
}

/// The features to accept of `offered`: `VERSION_1` and what of `wanted`
/// is offered, or `None` if `VERSION_1` or a `required` bit is missing.
#[must_use]
pub fn negotiated_features(offered: u64, wanted: u64, required: u64) -> Option<u64> {
    let needed = required | F_VERSION_1;
    (offered & needed == needed).then_some(offered & (wanted | needed))
}

/// The byte offset, in the notification structure's page, where queue
/// notifications with `queue_notify_off` = `off` go (`None` past the page).
#[must_use]
pub fn notify_offset(base: usize, off: u16, multiplier: u32) -> Option<usize> {
    let offset = (base as u64).checked_add(u64::from(off) * u64::from(multiplier))?;
    usize::try_from(offset)
        .ok()
        .filter(|_| offset + 2 <= 0x1000)
}

#[cfg(test)]
mod tests;
