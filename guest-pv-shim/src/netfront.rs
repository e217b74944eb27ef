//! The network front end (`netif`, `dom0_abi::netif`): a vif's TX and RX
//! rings over [`RingMemory`], with a fixed set of granted packet pages
//! ([`PacketPages`]), one per request id.
//!
//! Each TX frame fits one page and takes one slot (no `feature-sg`); each
//! posted RX page receives one frame (`request-rx-copy`). Every response
//! is checked against what this end has outstanding: an id not in
//! flight, a length or offset past its page, or a ring index running
//! ahead is a [`NetfrontError`], never a read outside a page.
//!
//! `connect` (bare-metal only) is the xenstore handshake and the grants:
//! it publishes `tx-ring-ref`, `rx-ring-ref`, `event-channel` and
//! `request-rx-copy`, then waits for the back end to be Connected.

#![forbid(unsafe_code)]

use dom0_abi::netif::{
    NETIF_RSP_OKAY, NetTxFlags, NetifRxRequest, NetifRxResponse, NetifTxRequest, NetifTxResponse,
    PAGE_BYTES,
};

use crate::ring::{FrontRing, RingError, RingMemory};

/// Packet pages for TX (ids `0..TX_PAGES`).
pub const TX_PAGES: usize = 16;
/// Packet pages posted for RX (ids `0..RX_PAGES`).
pub const RX_PAGES: usize = 16;

/// The packet pages, each granted to the back end (TX read-only, RX
/// writable); index = request id.
pub trait PacketPages {
    /// Copies `frame` (at most a page) to the start of TX page `id`.
    fn write_tx(&mut self, id: usize, frame: &[u8]);
    /// Calls `f` with RX page `id`, as the back end filled it.
    fn with_rx<R>(&self, id: usize, f: impl FnOnce(&[u8]) -> R) -> R;
}

/// What the back end did wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetfrontError {
    /// A ring index ran ahead.
    Ring(RingError),
    /// A response for an id not in flight (`true`: on the TX ring).
    BadId(bool, u16),
}

impl core::fmt::Display for NetfrontError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            NetfrontError::Ring(e) => write!(f, "ring: {e}"),
            NetfrontError::BadId(tx, id) => {
                write!(f, "{} response for id {id} not in flight", ring_name(*tx))
            }
        }
    }
}

fn ring_name(tx: bool) -> &'static str {
    if tx { "TX" } else { "RX" }
}

impl From<RingError> for NetfrontError {
    fn from(e: RingError) -> Self {
        NetfrontError::Ring(e)
    }
}

/// Why a frame was not sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendError {
    /// Every TX page is in flight.
    Busy,
    /// Longer than a page.
    TooLong,
}

/// Counters of the front end.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetfrontStats {
    /// Frames sent and acknowledged with `NETIF_RSP_OKAY`.
    pub tx_ok: u64,
    /// TX responses with an error status.
    pub tx_errors: u64,
    /// Frames received.
    pub rx_frames: u64,
    /// RX responses with an error status or a bad length.
    pub rx_errors: u64,
}

/// A vif's front end.
#[derive(Debug)]
pub struct Netfront<M, P> {
    tx: FrontRing<M, NetifTxRequest, NetifTxResponse>,
    rx: FrontRing<M, NetifRxRequest, NetifRxResponse>,
    tx_grefs: [u32; TX_PAGES],
    rx_grefs: [u32; RX_PAGES],
    /// Bit `id`: TX page `id` is in flight.
    tx_busy: u32,
    /// Bit `id`: RX page `id` is posted.
    rx_posted: u32,
    pages: P,
    /// Its counters.
    pub stats: NetfrontStats,
}

impl<M: RingMemory, P: PacketPages> Netfront<M, P> {
    /// Initialises both rings (the back end not yet attached) over pages
    /// granted as `tx_grefs` and `rx_grefs`.
    pub fn new(
        tx: M,
        rx: M,
        tx_grefs: [u32; TX_PAGES],
        rx_grefs: [u32; RX_PAGES],
        pages: P,
    ) -> Self {
        Netfront {
            tx: FrontRing::init(tx),
            rx: FrontRing::init(rx),
            tx_grefs,
            rx_grefs,
            tx_busy: 0,
            rx_posted: 0,
            pages,
            stats: NetfrontStats::default(),
        }
    }

    /// Posts every RX page not posted; `true` if the back end must be
    /// notified.
    pub fn post_rx(&mut self) -> bool {
        let mut pushed = false;
        for (id, &gref) in (0u16..).zip(self.rx_grefs.iter()) {
            let bit = 1u32 << id;
            if self.rx_posted & bit == 0 && self.rx.push(&NetifRxRequest { id, pad: 0, gref }) {
                self.rx_posted |= bit;
                pushed = true;
            }
        }
        pushed && self.rx.publish()
    }

    /// Copies `frame` into a free TX page and queues it; `Ok(true)` if the
    /// back end must be notified.
    ///
    /// # Errors
    /// No page free, or the frame is longer than a page.
    pub fn transmit(&mut self, frame: &[u8]) -> Result<bool, SendError> {
        let size = u16::try_from(frame.len())
            .ok()
            .filter(|&s| u32::from(s) <= PAGE_BYTES)
            .ok_or(SendError::TooLong)?;
        let id = (0..TX_PAGES)
            .find(|&i| self.tx_busy & (1 << i) == 0)
            .ok_or(SendError::Busy)?;
        self.pages.write_tx(id, frame);
        let req = NetifTxRequest {
            gref: self.tx_grefs[id],
            offset: 0,
            flags: NetTxFlags::DATA_VALIDATED.bits(),
            id: u16::try_from(id).unwrap_or(u16::MAX),
            size,
        };
        self.push_tx(&req)
    }

    /// Queues `req` as it is (a hostile test's raw request): its page is
    /// marked in flight if its id names one.
    ///
    /// # Errors
    /// The ring is full.
    pub fn push_tx(&mut self, req: &NetifTxRequest) -> Result<bool, SendError> {
        if !self.tx.push(req) {
            return Err(SendError::Busy);
        }
        if usize::from(req.id) < TX_PAGES {
            self.tx_busy |= 1 << req.id;
        }
        Ok(self.tx.publish())
    }

    /// Whether a TX page is free.
    #[must_use]
    pub fn can_transmit(&self) -> bool {
        (self.tx_busy.count_ones() as usize) < TX_PAGES
    }

    /// Consumes the TX responses, freeing their pages.
    ///
    /// # Errors
    /// The back end answered an id not in flight, or ran its index ahead.
    pub fn reap_tx(&mut self) -> Result<(), NetfrontError> {
        while let Some(rsp) = self.tx.pop()? {
            let bit = 1u32.checked_shl(u32::from(rsp.id)).unwrap_or(0);
            if usize::from(rsp.id) >= TX_PAGES || self.tx_busy & bit == 0 {
                return Err(NetfrontError::BadId(true, rsp.id));
            }
            self.tx_busy &= !bit;
            if rsp.status == NETIF_RSP_OKAY {
                self.stats.tx_ok += 1;
            } else {
                self.stats.tx_errors += 1;
            }
        }
        Ok(())
    }

    /// Hands each received frame to `deliver`, then posts the pages again;
    /// `Ok(true)` if the back end must be notified.
    ///
    /// # Errors
    /// As [`Netfront::reap_tx`], on the RX ring.
    pub fn receive(&mut self, mut deliver: impl FnMut(&[u8])) -> Result<bool, NetfrontError> {
        while let Some(rsp) = self.rx.pop()? {
            let bit = 1u32.checked_shl(u32::from(rsp.id)).unwrap_or(0);
            if usize::from(rsp.id) >= RX_PAGES || self.rx_posted & bit == 0 {
                return Err(NetfrontError::BadId(false, rsp.id));
            }
            self.rx_posted &= !bit;
            let start = usize::from(rsp.offset);
            let len = usize::try_from(rsp.status).unwrap_or(0);
            let delivered = len > 0
                && self.pages.with_rx(usize::from(rsp.id), |page| {
                    page.get(start..start + len).map(&mut deliver).is_some()
                });
            if delivered {
                self.stats.rx_frames += 1;
            } else {
                self.stats.rx_errors += 1;
            }
        }
        Ok(self.post_rx())
    }

    /// Asks for an event on the next response of either ring; `true` if
    /// one is already there (do not wait then).
    ///
    /// # Errors
    /// A ring index ran ahead.
    pub fn arm(&mut self) -> Result<bool, NetfrontError> {
        let tx = self.tx.final_check()?;
        let rx = self.rx.final_check()?;
        Ok(tx || rx)
    }

    /// The packet pages.
    pub fn pages(&mut self) -> &mut P {
        &mut self.pages
    }
}

#[cfg(target_os = "none")]
mod connect;
#[cfg(target_os = "none")]
pub use connect::{Connected, FIRST_GREF, StaticPages, connect};
