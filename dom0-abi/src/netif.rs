//! `io/netif.h`: the split network driver's two rings and its xenstore
//! keys.
//!
//! A virtual interface (vif) has two shared rings ([`crate::ring`]), each
//! one page granted by the front end (`tx-ring-ref`, `rx-ring-ref`), and
//! one event channel (`event-channel`) for both:
//! - **TX** (front end → back end): a [`NetifTxRequest`] names a granted
//!   page holding (part of) one Ethernet frame; the back end copies or
//!   maps it, then answers [`NetifTxResponse`] with the request's `id`.
//!   A frame spread over several slots has [`NetTxFlags::MORE_DATA`] on
//!   all but its last slot (only with `feature-sg`); a slot with
//!   [`NetTxFlags::EXTRA_INFO`] is followed by a [`NetifExtraInfo`] slot
//!   (GSO, multicast control: only with the matching features).
//! - **RX** (back end → front end): the front end posts empty granted
//!   pages ([`NetifRxRequest`]); with `request-rx-copy` the back end
//!   copies each received frame into one of them with `GNTTABOP_copy` and
//!   answers [`NetifRxResponse`]: `status` is the frame's length, or a
//!   negative `NETIF_RSP_*` error.
//!
//! Neither side trusts the other: a back end checks every `gref`,
//! `offset`, `size` and `id`; a front end checks every response's `id`
//! against what it posted. A slot never carries pointers.
//!
//! Checksum offload: a TX frame with [`NetTxFlags::CSUM_BLANK`] has an
//! unfilled transport checksum (the receiver must not verify it, and may
//! fill it); [`NetTxFlags::DATA_VALIDATED`] says it was already checked.
//! A back end forwarding such a frame to another vif passes the facts on
//! as [`NetRxFlags::CSUM_BLANK`] and [`NetRxFlags::DATA_VALIDATED`].

use bitflags::bitflags;

use crate::ring::ring_slots;

/// Largest frame one TX request chain may describe (`XEN_NETIF_MAX_TX_SIZE`).
pub const MAX_TX_SIZE: u32 = 0xFFFF;
/// Slots a back end must accept per frame (`XEN_NETIF_NR_SLOTS_MIN`).
pub const NR_SLOTS_MIN: u32 = 18;
/// Bytes of an Ethernet header (`ETH_HLEN`): a shorter TX frame is an
/// error.
pub const ETH_HLEN: u16 = 14;
/// Bytes of a page: a slot's `offset + size` must stay within one.
pub const PAGE_BYTES: u32 = 4096;

/// TX ring slots in one page: 256 (a slot is 12 bytes, the request).
pub const TX_RING_SLOTS: u32 = ring_slots(4096, 12);
/// RX ring slots in one page: 256 (a slot is 8 bytes).
pub const RX_RING_SLOTS: u32 = ring_slots(4096, 8);

bitflags! {
    /// `NETTXF_*`: [`NetifTxRequest::flags`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct NetTxFlags: u16 {
        /// The transport checksum is blank (to be filled by the receiver
        /// or whatever offloads it).
        const CSUM_BLANK = 1 << 0;
        /// The data was validated (its checksum checked) already.
        const DATA_VALIDATED = 1 << 1;
        /// More slots of this frame follow (`feature-sg`).
        const MORE_DATA = 1 << 2;
        /// A [`NetifExtraInfo`] slot follows.
        const EXTRA_INFO = 1 << 3;
    }
}

bitflags! {
    /// `NETRXF_*`: [`NetifRxResponse::flags`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct NetRxFlags: u16 {
        /// The data was validated (its checksum need not be checked).
        const DATA_VALIDATED = 1 << 0;
        /// The transport checksum is blank.
        const CSUM_BLANK = 1 << 1;
        /// More slots of this frame follow.
        const MORE_DATA = 1 << 2;
        /// A [`NetifExtraInfo`] slot follows.
        const EXTRA_INFO = 1 << 3;
        /// A GSO prefix slot precedes the data (legacy).
        const GSO_PREFIX = 1 << 4;
    }
}

/// `XEN_NETIF_RSP_DROPPED`: the frame was dropped.
pub const NETIF_RSP_DROPPED: i16 = -2;
/// `XEN_NETIF_RSP_ERROR`: the request was bad (a grant that could not be
/// copied, a frame shorter than an Ethernet header, …).
pub const NETIF_RSP_ERROR: i16 = -1;
/// `XEN_NETIF_RSP_OKAY`.
pub const NETIF_RSP_OKAY: i16 = 0;
/// `XEN_NETIF_RSP_NULL`: the response to an extra-info slot.
pub const NETIF_RSP_NULL: i16 = 1;

/// `XEN_NETIF_EXTRA_TYPE_*`: [`NetifExtraInfo::ty`].
pub mod extra_type {
    /// Never used.
    pub const NONE: u8 = 0;
    /// Generic segmentation offload.
    pub const GSO: u8 = 1;
    /// Multicast address added (`feature-multicast-control`).
    pub const MCAST_ADD: u8 = 2;
    /// Multicast address removed.
    pub const MCAST_DEL: u8 = 3;
    /// Receive-side hash.
    pub const HASH: u8 = 4;
    /// XDP headroom.
    pub const XDP: u8 = 5;
    /// One past the last type.
    pub const MAX: u8 = 6;
}

/// `XEN_NETIF_EXTRA_FLAG_MORE`: another extra-info slot follows.
pub const EXTRA_FLAG_MORE: u8 = 1 << 0;

/// `netif_tx_request`: one slot of a frame to send (`[FRONT]` writes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetifTxRequest {
    /// Grant of the page holding the data (granted to the back end,
    /// read-only is enough).
    pub gref: u32,
    /// Byte offset of the data in the page.
    pub offset: u16,
    /// [`NetTxFlags`].
    pub flags: u16,
    /// Echoed in the response.
    pub id: u16,
    /// In the first slot of a frame: the whole frame's length; in later
    /// slots: this slot's bytes.
    pub size: u16,
}

/// `netif_tx_response` (`[BACK]` writes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetifTxResponse {
    /// The request's `id`.
    pub id: u16,
    /// `NETIF_RSP_*`.
    pub status: i16,
}

/// `netif_rx_request`: an empty page posted for a received frame
/// (`[FRONT]` writes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetifRxRequest {
    /// Echoed in the response.
    pub id: u16,
    /// Padding.
    pub pad: u16,
    /// Grant of the page (writable, to the back end).
    pub gref: u32,
}

/// `netif_rx_response` (`[BACK]` writes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetifRxResponse {
    /// The request's `id`.
    pub id: u16,
    /// Byte offset of the data in the page.
    pub offset: u16,
    /// [`NetRxFlags`].
    pub flags: u16,
    /// Bytes of data (> 0) or a negative `NETIF_RSP_*`.
    pub status: i16,
}

/// `netif_extra_info`: an extra slot after a request or response with
/// `EXTRA_INFO`. The union is kept as its three 16-bit words.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetifExtraInfo {
    /// [`extra_type`].
    pub ty: u8,
    /// [`EXTRA_FLAG_MORE`].
    pub flags: u8,
    /// The type's fields (GSO: size, type and pad, features).
    pub u: [u16; 3],
}

crate::assert_layout!(NetifTxRequest, 12, { gref: 0, offset: 4, flags: 6, id: 8, size: 10 });
crate::assert_layout!(NetifTxResponse, 4, { id: 0, status: 2 });
crate::assert_layout!(NetifRxRequest, 8, { id: 0, pad: 2, gref: 4 });
crate::assert_layout!(NetifRxResponse, 8, { id: 0, offset: 2, flags: 4, status: 6 });
crate::assert_layout!(NetifExtraInfo, 8, { ty: 0, flags: 1, u: 2 });

/// Parses a `mac` key's value, `aa:bb:cc:dd:ee:ff` (hex, either case).
#[must_use]
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        let part = parts.next()?;
        if part.len() != 2 {
            return None;
        }
        *byte = u8::from_str_radix(part, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// The xenstore keys of the vif protocol. Directories:
/// back end `/local/domain/<B>/backend/vif/<D>/<devid>`, front end
/// `/local/domain/<D>/device/vif/<devid>`.
pub mod keys {
    /// Both: the `XenbusState` in decimal.
    pub const STATE: &str = "state";
    /// Both: `aa:bb:cc:dd:ee:ff`, the front end's address.
    pub const MAC: &str = "mac";
    /// Both: the device number.
    pub const HANDLE: &str = "handle";
    /// Back end: the front end's domain id.
    pub const FRONTEND_ID: &str = "frontend-id";
    /// Back end: the front end's directory.
    pub const FRONTEND: &str = "frontend";
    /// Front end: the back end's domain id.
    pub const BACKEND_ID: &str = "backend-id";
    /// Front end: the back end's directory.
    pub const BACKEND: &str = "backend";
    /// Back end: `1` while the device should exist.
    pub const ONLINE: &str = "online";
    /// Back end: `vif`.
    pub const TYPE: &str = "type";
    /// Back end: the bridge the vif joins.
    pub const BRIDGE: &str = "bridge";
    /// Back end: the front end's IPv4 address(es), as configured.
    pub const IP: &str = "ip";
    /// Back end: the hotplug script.
    pub const SCRIPT: &str = "script";
    /// Back end: `connected` once the hotplug script ran (Linux netback
    /// waits for it before Connected).
    pub const HOTPLUG_STATUS: &str = "hotplug-status";
    /// Front end: grant of the TX ring page.
    pub const TX_RING_REF: &str = "tx-ring-ref";
    /// Front end: grant of the RX ring page.
    pub const RX_RING_REF: &str = "rx-ring-ref";
    /// Front end: the unbound port for the back end.
    pub const EVENT_CHANNEL: &str = "event-channel";
    /// Front end: `1`: receive by grant copy (the only mode supported).
    pub const REQUEST_RX_COPY: &str = "request-rx-copy";
    /// Front end: `1`: it notifies when it posts RX buffers.
    pub const FEATURE_RX_NOTIFY: &str = "feature-rx-notify";
    /// Both: scatter-gather (frames over several slots).
    pub const FEATURE_SG: &str = "feature-sg";
    /// Back end: it can copy into RX buffers (`1`).
    pub const FEATURE_RX_COPY: &str = "feature-rx-copy";
    /// Back end: page flipping (`0`: not offered).
    pub const FEATURE_RX_FLIP: &str = "feature-rx-flip";
    /// Both: TCPv4 segmentation offload.
    pub const FEATURE_GSO_TCPV4: &str = "feature-gso-tcpv4";
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Wire;

    #[test]
    fn one_page_rings_hold_256_slots() {
        assert_eq!(TX_RING_SLOTS, 256);
        assert_eq!(RX_RING_SLOTS, 256);
    }

    #[test]
    fn requests_decode_at_xens_offsets() {
        let bytes = [9, 0, 0, 0, 0x10, 0, 3, 0, 7, 0, 0xdc, 5];
        let req = NetifTxRequest::from_wire(&bytes).unwrap();
        assert_eq!(
            req,
            NetifTxRequest {
                gref: 9,
                offset: 16,
                flags: (NetTxFlags::CSUM_BLANK | NetTxFlags::DATA_VALIDATED).bits(),
                id: 7,
                size: 1500,
            }
        );
        let rsp = NetifRxResponse {
            id: 3,
            offset: 0,
            flags: NetRxFlags::DATA_VALIDATED.bits(),
            status: NETIF_RSP_ERROR,
        };
        let mut out = [0u8; 8];
        rsp.to_wire(&mut out).unwrap();
        assert_eq!(out, [3, 0, 0, 0, 1, 0, 0xff, 0xff]);
    }
}
