//! virtio-net: the MAC address, a receive and a transmit queue, behind
//! [`NetDevice`].
//!
//! Every buffer is one DMA page: [`RX_BUFFERS`] receive pages stay posted
//! (each reposted once its frame is taken, or lent out with
//! [`VirtioNet::lend`] until [`VirtioNet::give_back`]), one transmit page
//! carries one frame at a time. Each starts with the 12-byte `virtio_net_hdr` of a
//! `VERSION_1` device (all zero on transmit: no offloads are negotiated).

use crate::queue::{Buffer, SplitQueue};
use crate::virtio::{self, Transport};
use crate::{Error, Platform, Region};

/// `VIRTIO_NET_F_MAC`: the device has a MAC address in its configuration.
pub const F_MAC: u64 = 1 << 5;
/// Bytes of `virtio_net_hdr` before every frame.
pub const HEADER: usize = 12;
/// Largest frame (without FCS) sent.
pub const MAX_FRAME: usize = 1514;
/// Receive pages kept posted.
pub const RX_BUFFERS: usize = RX_QUEUE as usize;
/// Entries of the receive queue.
const RX_QUEUE: u16 = 16;
/// The receive queue's index.
const RX: u16 = 0;
/// The transmit queue's index.
const TX: u16 = 1;

/// A network card as the bridge sees it.
pub trait NetDevice {
    /// Its MAC address.
    fn mac(&self) -> [u8; 6];
    /// Sends one Ethernet frame (without FCS, at most [`MAX_FRAME`] bytes).
    fn send(&mut self, frame: &[u8]) -> Result<(), Error>;
    /// Takes one received frame into `buf` (truncated to its length);
    /// returns the frame's length, or `None` if none is waiting. Never
    /// blocks.
    fn receive(&mut self, buf: &mut [u8]) -> Result<Option<usize>, Error>;
    /// Blocks until a frame may have arrived or `timeout_ms` pass (no
    /// timeout: only the card's interrupt ends the wait); returns whether
    /// one is waiting.
    fn wait(&mut self, timeout_ms: Option<u64>) -> bool;
}

/// A received frame left in its receive page: the card gets the page back
/// only with [`VirtioNet::give_back`].
#[derive(Debug, PartialEq, Eq)]
#[must_use = "a lent page must be given back to the card"]
pub struct Lent {
    slot: usize,
    len: usize,
}

impl Lent {
    /// The frame's length.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the frame is empty (a header and nothing else).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The head a lent receive page is marked with (no descriptor has it).
const LENT: u16 = u16::MAX;

/// A virtio-net device.
pub struct VirtioNet<P: Platform> {
    transport: Transport<P>,
    rx: SplitQueue<P::Page>,
    tx: SplitQueue<P::Page>,
    rx_pages: [Option<(P::Page, u64, u16)>; RX_BUFFERS],
    tx_page: (P::Page, u64),
    mac: [u8; 6],
}

impl<P: Platform> VirtioNet<P> {
    /// Initialises the virtio-net function at `address` and posts its
    /// receive buffers.
    pub fn new(platform: &mut P, address: crate::pci::Address) -> Result<VirtioNet<P>, Error> {
        let mut transport = Transport::new(platform, address)?;
        transport.negotiate(F_MAC, F_MAC)?;
        let queues = transport
            .setup_queue(platform, RX, RX_QUEUE)
            .and_then(|rx| Ok((rx, transport.setup_queue(platform, TX, 4)?)));
        let (mut rx, tx) = match queues {
            Ok(queues) => queues,
            Err(e) => {
                transport.fail();
                return Err(e);
            }
        };
        let mut rx_pages = [const { None }; RX_BUFFERS];
        for slot in rx_pages.iter_mut().take(usize::from(rx.size())) {
            let (page, bus) = platform.alloc_dma()?;
            let head = rx.add(&[Buffer {
                addr: bus,
                len: 4096,
                device_writes: true,
            }])?;
            *slot = Some((page, bus, head));
        }
        let tx_page = platform.alloc_dma()?;
        let mut mac = [0; 6];
        for (i, byte) in mac.iter_mut().enumerate() {
            *byte = transport.config8(i);
        }
        transport.start();
        transport.notify(RX)?;
        Ok(VirtioNet {
            transport,
            rx,
            tx,
            rx_pages,
            tx_page,
            mac,
        })
    }

    /// The transport (for its address and interrupt).
    #[must_use]
    pub fn transport(&self) -> &Transport<P> {
        &self.transport
    }

    /// The transport, to wait on its interrupt directly.
    pub fn transport_mut(&mut self) -> &mut Transport<P> {
        &mut self.transport
    }

    /// Takes the next received frame without copying it: its page stays
    /// out of the card's reach until [`VirtioNet::give_back`]. `None` if
    /// no frame is waiting.
    ///
    /// # Errors
    /// The device answered a buffer it was not given.
    #[inline]
    pub fn lend(&mut self) -> Result<Option<Lent>, Error> {
        let Some((head, len)) = self.rx.pop_used()? else {
            return Ok(None);
        };
        let (slot, h) = self
            .rx_pages
            .iter_mut()
            .enumerate()
            .find_map(|(i, page)| {
                page.as_mut()
                    .map(|(_, _, h)| (i, h))
                    .filter(|(_, h)| **h == head)
            })
            .ok_or(Error::BadUsed)?;
        *h = LENT;
        let len = (len as usize).saturating_sub(HEADER).min(4096 - HEADER);
        Ok(Some(Lent { slot, len }))
    }

    /// Copies `out.len()` bytes of a lent frame from byte `offset` of the
    /// frame (bytes past the frame's page are left as they are).
    #[inline]
    pub fn read_lent(&self, lent: &Lent, offset: usize, out: &mut [u8]) {
        if let Some((page, _, _)) = &self.rx_pages[lent.slot] {
            let start = HEADER + offset;
            let n = out.len().min(4096usize.saturating_sub(start));
            page.read_bytes(start, &mut out[..n]);
        }
    }

    /// The bus address of a lent frame's first byte (a machine address
    /// for a PV dom0: what a grant copy takes as its source).
    #[must_use]
    pub fn lent_bus_address(&self, lent: &Lent) -> u64 {
        self.rx_pages[lent.slot]
            .as_ref()
            .map_or(0, |(_, bus, _)| bus + HEADER as u64)
    }

    /// Posts lent pages again for the card to fill, with one notification
    /// for all of them.
    ///
    /// # Errors
    /// The receive queue or its notification failed (the pages not yet
    /// posted stay out of the card's reach).
    pub fn give_back(&mut self, lent: impl IntoIterator<Item = Lent>) -> Result<(), Error> {
        for lent in lent {
            let Some((_, bus, head)) = &mut self.rx_pages[lent.slot] else {
                return Err(Error::BadUsed);
            };
            *head = self.rx.add(&[Buffer {
                addr: *bus,
                len: 4096,
                device_writes: true,
            }])?;
        }
        self.transport.notify(RX)
    }
}

impl<P: Platform> NetDevice for VirtioNet<P> {
    fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn send(&mut self, frame: &[u8]) -> Result<(), Error> {
        if frame.len() > MAX_FRAME {
            return Err(Error::Invalid);
        }
        let (page, bus) = &mut self.tx_page;
        page.write_bytes(0, &[0; HEADER]);
        page.write_bytes(HEADER, frame);
        let head = self.tx.add(&[Buffer {
            addr: *bus,
            len: u32::try_from(HEADER + frame.len()).map_err(|_| Error::Invalid)?,
            device_writes: false,
        }])?;
        self.transport.notify(TX)?;
        let (id, _) = self
            .transport
            .wait_used(&mut self.tx, SplitQueue::pop_used)?;
        if id == head {
            Ok(())
        } else {
            Err(Error::BadUsed)
        }
    }

    fn receive(&mut self, buf: &mut [u8]) -> Result<Option<usize>, Error> {
        let Some(lent) = self.lend()? else {
            return Ok(None);
        };
        let len = lent.len();
        let copied = len.min(buf.len());
        self.read_lent(&lent, 0, &mut buf[..copied]);
        self.give_back([lent])?;
        Ok(Some(len))
    }

    fn wait(&mut self, timeout_ms: Option<u64>) -> bool {
        if self.rx.has_used() {
            return true;
        }
        self.transport.wait_interrupt(timeout_ms);
        self.rx.has_used()
    }
}

/// Whether `function` is a modern virtio-net device.
#[must_use]
pub fn is_virtio_net(function: &crate::pci::Function) -> bool {
    virtio::device_type(function.vendor, function.device) == Some(virtio::TYPE_NET)
}
