//! The network back end's ring logic (`netif`, `dom0_abi::netif`): one
//! vif's TX and RX rings, every request checked, the data moved by a
//! [`GrantCopier`] (dom0 implements it with `GNTTABOP_copy`).
//!
//! - **TX**: each request is one whole frame (no `feature-sg`, no GSO are
//!   offered). Its data is copied out of the front end's granted page
//!   into the caller's buffer: a copy rather than a grant map because a
//!   frame is at most one page and is forwarded at once, so one copy per
//!   frame costs less than a map, a TLB flush and an unmap, and dom0 never
//!   has a front end's page in its address space.
//! - **RX**: the front end posts empty pages; each frame for it is copied
//!   into the next one (`request-rx-copy`), its checksum facts passed on.
//!
//! A misbehaving front end gets, as Linux's netback gives it, either an
//! error status (`NETIF_RSP_ERROR`: a frame shorter than an Ethernet
//! header, a grant that cannot be copied) or, for what only a broken or
//! hostile front end does (a slot crossing its page, a multi-slot or
//! extra-info frame that was not negotiated, ring indices past the
//! ring), a [`Fault`]: the caller disconnects that vif and logs why.
#![forbid(unsafe_code)]

use alloc::collections::VecDeque;
use dom0_abi::netif::{
    ETH_HLEN, NETIF_RSP_ERROR, NETIF_RSP_OKAY, NetRxFlags, NetTxFlags, NetifRxRequest,
    NetifRxResponse, NetifTxRequest, NetifTxResponse, PAGE_BYTES,
};
use guest_pv_shim::ring::{BackRing, RingError, RingMemory};

use crate::bridge::Offload;

/// Moves bytes between dom0 and a front end's granted pages.
pub trait GrantCopier {
    /// Copies `out.len()` bytes at `offset` of grant `gref` of `domid`
    /// into `out`; `Err` with the grant status if it failed.
    fn copy_in(&mut self, domid: u16, gref: u32, offset: u16, out: &mut [u8]) -> Result<(), i16>;
    /// Copies `data` to `offset` of grant `gref` of `domid`.
    fn copy_out(&mut self, domid: u16, gref: u32, offset: u16, data: &[u8]) -> Result<(), i16>;
}

/// Why a vif is disconnected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// A ring's producer index ran past the ring.
    Ring(&'static str, RingError),
    /// A TX slot's `offset + size` passes the end of its page.
    CrossesPage {
        /// The slot's offset.
        offset: u16,
        /// The slot's size.
        size: u16,
    },
    /// A TX slot asked for something not negotiated (its flags).
    NotNegotiated(u16),
}

impl core::fmt::Display for Fault {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Fault::Ring(which, e) => write!(f, "{which} ring: {e}"),
            Fault::CrossesPage { offset, size } => write!(
                f,
                "TX slot at offset {offset} of {size} bytes crosses its page"
            ),
            Fault::NotNegotiated(flags) => write!(
                f,
                "TX flags {flags:#x}: multi-slot or extra-info frames were not negotiated"
            ),
        }
    }
}

/// Counters of one vif.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VifStats {
    /// Frames taken from its TX ring.
    pub tx_frames: u64,
    /// TX requests answered with an error.
    pub tx_errors: u64,
    /// Frames copied into its RX buffers.
    pub rx_frames: u64,
    /// Frames for it dropped: no RX buffer posted, or a bad one.
    pub rx_dropped: u64,
}

/// One frame taken from a TX ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxFrame {
    /// Its bytes in the caller's buffer.
    pub len: usize,
    /// Its checksum facts.
    pub offload: Offload,
}

/// Checks one TX request: `Ok` if its data may be copied, `Err(Ok(status))`
/// for an error response, `Err(Err(fault))` to disconnect.
pub fn check_tx(req: &NetifTxRequest) -> Result<(), Result<i16, Fault>> {
    let flags = NetTxFlags::from_bits_retain(req.flags);
    if flags.intersects(NetTxFlags::MORE_DATA | NetTxFlags::EXTRA_INFO) {
        return Err(Err(Fault::NotNegotiated(req.flags)));
    }
    if u32::from(req.offset) + u32::from(req.size) > PAGE_BYTES {
        return Err(Err(Fault::CrossesPage {
            offset: req.offset,
            size: req.size,
        }));
    }
    if req.size < ETH_HLEN {
        return Err(Ok(NETIF_RSP_ERROR));
    }
    Ok(())
}

/// The checksum facts of TX `flags`.
#[must_use]
pub fn offload_of(flags: u16) -> Offload {
    let flags = NetTxFlags::from_bits_retain(flags);
    Offload {
        csum_blank: flags.contains(NetTxFlags::CSUM_BLANK),
        data_validated: flags.contains(NetTxFlags::DATA_VALIDATED),
    }
}

/// The RX flags that pass `offload` on: a blank checksum is also
/// validated (nothing can be wrong with what was never filled in), as
/// Linux's netback reports it.
#[must_use]
pub fn rx_flags(offload: Offload) -> u16 {
    let mut flags = NetRxFlags::empty();
    if offload.csum_blank {
        flags |= NetRxFlags::CSUM_BLANK | NetRxFlags::DATA_VALIDATED;
    }
    if offload.data_validated {
        flags |= NetRxFlags::DATA_VALIDATED;
    }
    flags.bits()
}

/// The back end of one connected vif.
#[derive(Debug)]
pub struct Vif<M> {
    domid: u16,
    tx: BackRing<M, NetifTxRequest, NetifTxResponse>,
    rx: BackRing<M, NetifRxRequest, NetifRxResponse>,
    notify: bool,
    /// The RX responses whose copies the caller runs later
    /// ([`Vif::queue_rx`]), oldest first.
    rx_pending: VecDeque<NetifRxResponse>,
    /// Its counters.
    pub stats: VifStats,
}

impl<M: RingMemory> Vif<M> {
    /// The back end of the rings of front end `domid`.
    pub fn new(domid: u16, tx: M, rx: M) -> Vif<M> {
        Vif {
            domid,
            tx: BackRing::attach(tx),
            rx: BackRing::attach(rx),
            notify: false,
            rx_pending: VecDeque::new(),
            stats: VifStats::default(),
        }
    }

    /// The front end's domain.
    #[must_use]
    pub fn domid(&self) -> u16 {
        self.domid
    }

    /// Whether a response was published that the front end must hear of
    /// (cleared: the caller sends the event).
    pub fn take_notify(&mut self) -> bool {
        core::mem::take(&mut self.notify)
    }

    fn respond_tx(&mut self, id: u16, status: i16) {
        self.tx.push(&NetifTxResponse { id, status });
        self.notify |= self.tx.publish();
    }

    /// Takes the next frame from the TX ring into `buf` (a page); `None`
    /// once the ring is empty (the event index is then armed).
    ///
    /// # Errors
    /// What disconnects the vif.
    pub fn next_tx(
        &mut self,
        copier: &mut impl GrantCopier,
        buf: &mut [u8],
    ) -> Result<Option<TxFrame>, Fault> {
        loop {
            let req = match self.tx.pop().map_err(|e| Fault::Ring("TX", e))? {
                Some(req) => req,
                None => {
                    if self.tx.final_check().map_err(|e| Fault::Ring("TX", e))? {
                        continue;
                    }
                    return Ok(None);
                }
            };
            if let Err(bad) = check_tx(&req) {
                let status = bad?;
                self.stats.tx_errors += 1;
                self.respond_tx(req.id, status);
                continue;
            }
            let len = usize::from(req.size);
            let Some(out) = buf.get_mut(..len) else {
                self.stats.tx_errors += 1;
                self.respond_tx(req.id, NETIF_RSP_ERROR);
                continue;
            };
            if copier
                .copy_in(self.domid, req.gref, req.offset, out)
                .is_err()
            {
                self.stats.tx_errors += 1;
                self.respond_tx(req.id, NETIF_RSP_ERROR);
                continue;
            }
            self.stats.tx_frames += 1;
            self.respond_tx(req.id, NETIF_RSP_OKAY);
            return Ok(Some(TxFrame {
                len,
                offload: offload_of(req.flags),
            }));
        }
    }

    /// Copies `frame` into the next posted RX buffer; `false` if it was
    /// dropped (none posted, or the copy failed: the buffer is then
    /// answered with `NETIF_RSP_ERROR`).
    ///
    /// # Errors
    /// What disconnects the vif.
    pub fn deliver(
        &mut self,
        copier: &mut impl GrantCopier,
        frame: &[u8],
        offload: Offload,
    ) -> Result<bool, Fault> {
        let Some(gref) = self.queue_rx(frame.len(), offload)? else {
            return Ok(false);
        };
        let copied = copier.copy_out(self.domid, gref, 0, frame).is_ok();
        self.finish_rx(copied);
        Ok(copied)
    }

    /// Takes the next posted RX buffer for a frame of `len` bytes, whose
    /// copy the caller runs later (several vifs' in one batch) and then
    /// reports with [`Vif::finish_rx`], in the order of these calls: the
    /// buffer's grant (the frame goes to its start), or `None` if the
    /// frame is dropped (none posted, or longer than a page: the buffer
    /// is then answered with `NETIF_RSP_ERROR` at once).
    ///
    /// # Errors
    /// What disconnects the vif.
    pub fn queue_rx(&mut self, len: usize, offload: Offload) -> Result<Option<u32>, Fault> {
        let mut req = self.rx.pop().map_err(|e| Fault::Ring("RX", e))?;
        if req.is_none() && self.rx.final_check().map_err(|e| Fault::Ring("RX", e))? {
            req = self.rx.pop().map_err(|e| Fault::Ring("RX", e))?;
        }
        let Some(req) = req else {
            self.stats.rx_dropped += 1;
            return Ok(None);
        };
        let mut rsp = NetifRxResponse {
            id: req.id,
            offset: 0,
            flags: rx_flags(offload),
            status: NETIF_RSP_ERROR,
        };
        match i16::try_from(len) {
            Ok(len) if len <= 4096 => {
                rsp.status = len;
                self.rx_pending.push_back(rsp);
                Ok(Some(req.gref))
            }
            _ => {
                self.respond_rx(&rsp, false);
                Ok(None)
            }
        }
    }

    /// Answers the oldest buffer [`Vif::queue_rx`] took: its frame if
    /// `copied`, `NETIF_RSP_ERROR` if the copy failed. Nothing if none is
    /// waiting.
    pub fn finish_rx(&mut self, copied: bool) {
        let Some(mut rsp) = self.rx_pending.pop_front() else {
            return;
        };
        if !copied {
            rsp.status = NETIF_RSP_ERROR;
        }
        self.respond_rx(&rsp, copied);
    }

    /// Publishes RX response `rsp`, counting its frame as `delivered` or
    /// dropped.
    fn respond_rx(&mut self, rsp: &NetifRxResponse, delivered: bool) {
        self.rx.push(rsp);
        self.notify |= self.rx.publish();
        if delivered {
            self.stats.rx_frames += 1;
        } else {
            self.stats.rx_dropped += 1;
        }
    }

    /// The rings' memories (TX, RX).
    pub fn memories(&self) -> (&M, &M) {
        (self.tx.memory(), self.rx.memory())
    }
}

/// What a front end published for its vif (`…/device/vif/<devid>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrontendKeys {
    /// Grant of the TX ring page.
    pub tx_ring_ref: u32,
    /// Grant of the RX ring page.
    pub rx_ring_ref: u32,
    /// Its unbound port for dom0.
    pub event_channel: u32,
}

/// Reads the front end's keys through `read` (a key's value, if present):
/// the two ring references, the event channel, and `request-rx-copy`,
/// which must be `1` (copy is the only receive mode, as in Linux).
///
/// # Errors
/// The key that is missing or malformed.
pub fn frontend_keys(
    mut read: impl FnMut(&str) -> Option<alloc::vec::Vec<u8>>,
) -> Result<FrontendKeys, &'static str> {
    use dom0_abi::netif::keys;
    let mut number = |key: &'static str| {
        read(key)
            .and_then(|v| core::str::from_utf8(&v).ok()?.trim().parse::<u32>().ok())
            .ok_or(key)
    };
    if number(keys::REQUEST_RX_COPY) != Ok(1) {
        return Err(keys::REQUEST_RX_COPY);
    }
    Ok(FrontendKeys {
        tx_ring_ref: number(keys::TX_RING_REF)?,
        rx_ring_ref: number(keys::RX_RING_REF)?,
        event_channel: number(keys::EVENT_CHANNEL)?,
    })
}

#[cfg(test)]
mod tests;
