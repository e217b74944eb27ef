//! The block device interface (`io/blkif.h`): the requests and responses a
//! block front end (`[FRONT]`, the guest that owns the disk) and a block
//! back end (`[BACK]`, the domain that drives the device) exchange over a
//! shared ring ([`crate::ring`]), and the xenstore keys of their handshake.
//!
//! # The ring
//!
//! One page: the 64-byte ring header, then [`RING_SLOTS`] slots of
//! [`BlkifRequest::SIZE`] bytes (112: the request, the largest member of
//! the slot union). The front end grants the page to the back end
//! (`ring-ref`) and allocates an unbound event channel for it
//! (`event-channel`); the back end maps the grant and binds the channel.
//!
//! # A request
//!
//! `[FRONT]` fills a slot with a [`BlkifRequest`]: an operation
//! ([`BlkifOp`]), the first sector (`sector_number`, always in 512-byte
//! units whatever the device's `sector-size`), `nr_segments` data
//! segments, and an `id` the back end echoes untouched in the response.
//! Segment *i* is a granted page (`gref`) and the sectors `first_sect ..=
//! last_sect` of it (each 0..=7 for a 4 KiB page); the segments'
//! sectors follow each other on the disk, starting at `sector_number`.
//!
//! | operation | segments | what the back end does |
//! |---|---|---|
//! | [`BlkifOp::Read`] | 1..=11 | reads the sectors into the pages |
//! | [`BlkifOp::Write`] | 1..=11 | writes the pages' sectors |
//! | [`BlkifOp::WriteBarrier`] | 0..=11 | completes every earlier request, writes, and makes the write durable (`feature-barrier`) |
//! | [`BlkifOp::FlushDiskcache`] | 0..=11 | makes every completed write durable (`feature-flush-cache`); segments as for a write |
//! | [`BlkifOp::Discard`] | (layout [`BlkifRequestDiscard`]) | may forget `nr_sectors` sectors (`feature-discard`) |
//! | [`BlkifOp::Indirect`] | (layout [`BlkifRequestIndirect`]) | a read or write whose segments are in granted pages (`feature-max-indirect-segments`) |
//!
//! # A response
//!
//! `[BACK]` answers each request once with a [`BlkifResponse`]: the
//! request's `id` and `operation`, and a status: [`BLKIF_RSP_OKAY`],
//! [`BLKIF_RSP_ERROR`] (a bad request or an I/O error) or
//! [`BLKIF_RSP_EOPNOTSUPP`] (an operation the back end does not do, such
//! as one whose `feature-*` key it did not publish).

use crate::ring::ring_slots;
use crate::wire::Wire;

/// Segments a direct request carries at most
/// (`BLKIF_MAX_SEGMENTS_PER_REQUEST`).
pub const MAX_SEGMENTS: usize = 11;
/// Grant references of segment pages in an indirect request
/// (`BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST`).
pub const MAX_INDIRECT_PAGES: usize = 8;
/// Bytes of the sectors `sector_number`, `first_sect` and `last_sect`
/// count, whatever the device's `sector-size`.
pub const SECTOR_BYTES: usize = 512;
/// Sectors of a 4 KiB page: `last_sect` is at most this minus 1.
pub const SECTORS_PER_PAGE: u8 = 8;
/// Slots of a one-page blkif ring (Xen's `BLK_RING_SIZE` for one page).
pub const RING_SLOTS: u32 = ring_slots(4096, BlkifRequest::SIZE);

/// `BLKIF_RSP_OKAY`: done.
pub const BLKIF_RSP_OKAY: i16 = 0;
/// `BLKIF_RSP_ERROR`: a bad request or an I/O error.
pub const BLKIF_RSP_ERROR: i16 = -1;
/// `BLKIF_RSP_EOPNOTSUPP`: the back end does not do this operation.
pub const BLKIF_RSP_EOPNOTSUPP: i16 = -2;

/// `VDISK_CDROM`, a bit of the back end's `info` key.
pub const VDISK_CDROM: u32 = 1;
/// `VDISK_REMOVABLE`, a bit of `info`.
pub const VDISK_REMOVABLE: u32 = 2;
/// `VDISK_READONLY`, a bit of `info`: writes fail.
pub const VDISK_READONLY: u32 = 4;

/// `BLKIF_DISCARD_SECURE`, a bit of a discard request's `flag`.
pub const BLKIF_DISCARD_SECURE: u8 = 1;

/// The operations of a request (its first byte).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum BlkifOp {
    /// `BLKIF_OP_READ`.
    Read = 0,
    /// `BLKIF_OP_WRITE`.
    Write = 1,
    /// `BLKIF_OP_WRITE_BARRIER`.
    WriteBarrier = 2,
    /// `BLKIF_OP_FLUSH_DISKCACHE`.
    FlushDiskcache = 3,
    /// `BLKIF_OP_RESERVED_1`: never valid.
    Reserved1 = 4,
    /// `BLKIF_OP_DISCARD`.
    Discard = 5,
    /// `BLKIF_OP_INDIRECT`.
    Indirect = 6,
}

impl BlkifOp {
    /// The operation numbered `op`, if defined.
    #[must_use]
    pub const fn from_u8(op: u8) -> Option<BlkifOp> {
        Some(match op {
            0 => BlkifOp::Read,
            1 => BlkifOp::Write,
            2 => BlkifOp::WriteBarrier,
            3 => BlkifOp::FlushDiskcache,
            4 => BlkifOp::Reserved1,
            5 => BlkifOp::Discard,
            6 => BlkifOp::Indirect,
            _ => return None,
        })
    }
}

/// `struct blkif_request_segment`: one granted page and the sectors of it
/// a request moves.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkifRequestSegment {
    /// `[FRONT]` The grant of the page (to the back end).
    pub gref: u32,
    /// `[FRONT]` First sector of the page moved (0..=7).
    pub first_sect: u8,
    /// `[FRONT]` Last sector of the page moved, inclusive
    /// (`first_sect..=7`).
    pub last_sect: u8,
    /// Padding (Xen's structure has it implicitly). Kept so that a slot
    /// read as a request keeps every byte: a discard's `nr_sectors`
    /// overlaps the first segment, padding included.
    pub pad: u16,
}

/// `struct blkif_request`: read, write, barrier and flush requests.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkifRequest {
    /// `[FRONT]` A [`BlkifOp`] number.
    pub operation: u8,
    /// `[FRONT]` Segments used (`seg[..nr_segments]`).
    pub nr_segments: u8,
    /// `[FRONT]` Device handle (unused: one device per ring).
    pub handle: u16,
    /// `[FRONT]` Opaque; echoed in the response.
    pub id: u64,
    /// `[FRONT]` First sector, in 512-byte units.
    pub sector_number: u64,
    /// `[FRONT]` The data segments.
    pub seg: [BlkifRequestSegment; MAX_SEGMENTS],
}

/// `from` read again as another layout of the same request slot (112
/// bytes, the smaller layouts padded with what follows them).
fn reslot<A: Wire, B: Wire + Default>(from: &A) -> B {
    let mut bytes = [0u8; BlkifRequest::SIZE];
    let _ = from.to_wire(&mut bytes);
    B::from_wire(&bytes).unwrap_or_default()
}

impl BlkifRequest {
    /// The same slot as a discard request.
    #[must_use]
    pub fn as_discard(&self) -> BlkifRequestDiscard {
        reslot(self)
    }

    /// A discard request in a request slot.
    #[must_use]
    pub fn from_discard(discard: &BlkifRequestDiscard) -> Self {
        reslot(discard)
    }

    /// The same slot as an indirect request.
    #[must_use]
    pub fn as_indirect(&self) -> BlkifRequestIndirect {
        reslot(self)
    }

    /// An indirect request in a request slot.
    #[must_use]
    pub fn from_indirect(indirect: &BlkifRequestIndirect) -> Self {
        reslot(indirect)
    }

    /// A request of `operation` for `id` at `sector_number`, its segments
    /// given as `(gref, first_sect, last_sect)`: the first
    /// [`MAX_SEGMENTS`] are taken and counted in `nr_segments`.
    #[must_use]
    pub fn new(operation: u8, id: u64, sector_number: u64, segments: &[(u32, u8, u8)]) -> Self {
        let mut req = BlkifRequest {
            operation,
            id,
            sector_number,
            ..BlkifRequest::default()
        };
        for (slot, &(gref, first_sect, last_sect)) in req.seg.iter_mut().zip(segments) {
            *slot = BlkifRequestSegment {
                gref,
                first_sect,
                last_sect,
                pad: 0,
            };
            req.nr_segments += 1;
        }
        req
    }
}

/// `struct blkif_request_discard`: the same slot for [`BlkifOp::Discard`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkifRequestDiscard {
    /// `[FRONT]` [`BlkifOp::Discard`].
    pub operation: u8,
    /// `[FRONT]` [`BLKIF_DISCARD_SECURE`] or 0.
    pub flag: u8,
    /// `[FRONT]` Device handle.
    pub handle: u16,
    /// `[FRONT]` Echoed in the response.
    pub id: u64,
    /// `[FRONT]` First sector, in 512-byte units.
    pub sector_number: u64,
    /// `[FRONT]` Number of sectors.
    pub nr_sectors: u64,
}

/// `struct blkif_request_indirect`: the same slot for
/// [`BlkifOp::Indirect`]; the segments are [`BlkifRequestSegment`]s in the
/// granted pages `indirect_grefs[..]` (512 per page).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkifRequestIndirect {
    /// `[FRONT]` [`BlkifOp::Indirect`].
    pub operation: u8,
    /// `[FRONT]` The operation done: read or write.
    pub indirect_op: u8,
    /// `[FRONT]` Segments in the indirect pages.
    pub nr_segments: u16,
    /// `[FRONT]` Echoed in the response.
    pub id: u64,
    /// `[FRONT]` First sector, in 512-byte units.
    pub sector_number: u64,
    /// `[FRONT]` Device handle.
    pub handle: u16,
    /// Padding.
    pub pad: u16,
    /// `[FRONT]` The pages holding the segments.
    pub indirect_grefs: [u32; MAX_INDIRECT_PAGES],
}

/// `struct blkif_response`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlkifResponse {
    /// `[BACK]` The request's `id`.
    pub id: u64,
    /// `[BACK]` The request's `operation`.
    pub operation: u8,
    /// `[BACK]` [`BLKIF_RSP_OKAY`], [`BLKIF_RSP_ERROR`] or
    /// [`BLKIF_RSP_EOPNOTSUPP`].
    pub status: i16,
}

crate::assert_layout!(BlkifRequestSegment, 8, { gref: 0, first_sect: 4, last_sect: 5, pad: 6 });
crate::assert_layout!(BlkifRequest, 112, {
    operation: 0, nr_segments: 1, handle: 2, id: 8, sector_number: 16, seg: 24,
});
crate::assert_layout!(BlkifRequestDiscard, 32, {
    operation: 0, flag: 1, handle: 2, id: 8, sector_number: 16, nr_sectors: 24,
});
crate::assert_layout!(BlkifRequestIndirect, 64, {
    operation: 0, indirect_op: 1, nr_segments: 2, id: 8, sector_number: 16, handle: 24,
    pad: 26, indirect_grefs: 28,
});
crate::assert_layout!(BlkifResponse, 16, { id: 0, operation: 8, status: 10 });

/// The xenstore keys of a virtual block device (`vbd`), below the back
/// end's directory `/local/domain/<B>/backend/vbd/<D>/<devid>` and the
/// front end's `/local/domain/<D>/device/vbd/<devid>`.
pub mod keys {
    /// Both: the handshake state (a `XenbusState` in decimal).
    pub const STATE: &str = "state";
    /// Back end (toolstack): the front end's domain id.
    pub const FRONTEND_ID: &str = "frontend-id";
    /// Back end (toolstack): the front end's directory.
    pub const FRONTEND: &str = "frontend";
    /// Front end (toolstack): the back end's domain id.
    pub const BACKEND_ID: &str = "backend-id";
    /// Front end (toolstack): the back end's directory.
    pub const BACKEND: &str = "backend";
    /// Front end (toolstack): the device id in decimal.
    pub const VIRTUAL_DEVICE: &str = "virtual-device";
    /// Both (toolstack): `disk` or `cdrom`.
    pub const DEVICE_TYPE: &str = "device-type";
    /// Back end (toolstack): `w` (read-write) or `r` (read-only).
    pub const MODE: &str = "mode";
    /// Back end (toolstack): the device's target (`params` of `xl`).
    pub const PARAMS: &str = "params";
    /// Back end (toolstack): the virtual device's name (`xvda`).
    pub const DEV: &str = "dev";
    /// Front end: the grant of the ring page.
    pub const RING_REF: &str = "ring-ref";
    /// Front end: its port of the ring's event channel.
    pub const EVENT_CHANNEL: &str = "event-channel";
    /// Front end: the ABI of the ring's entries ([`super::PROTOCOL_X86_64`];
    /// absent: native).
    pub const PROTOCOL: &str = "protocol";
    /// Back end: the device's size in 512-byte sectors.
    pub const SECTORS: &str = "sectors";
    /// Back end: the device's logical sector size in bytes.
    pub const SECTOR_SIZE: &str = "sector-size";
    /// Back end: the device's physical sector size in bytes.
    pub const PHYSICAL_SECTOR_SIZE: &str = "physical-sector-size";
    /// Back end: `VDISK_*` bits.
    pub const INFO: &str = "info";
    /// Back end: `1` if [`super::BlkifOp::FlushDiskcache`] works.
    pub const FEATURE_FLUSH_CACHE: &str = "feature-flush-cache";
    /// Back end: `1` if [`super::BlkifOp::WriteBarrier`] works.
    pub const FEATURE_BARRIER: &str = "feature-barrier";
    /// Back end: `1` if [`super::BlkifOp::Discard`] works.
    pub const FEATURE_DISCARD: &str = "feature-discard";
    /// Back end: bytes a discard is best done in multiples of.
    pub const DISCARD_GRANULARITY: &str = "discard-granularity";
    /// Back end: byte offset of the first discard granule.
    pub const DISCARD_ALIGNMENT: &str = "discard-alignment";
    /// Back end: `1` if [`super::BLKIF_DISCARD_SECURE`] works.
    pub const DISCARD_SECURE: &str = "discard-secure";
    /// Back end: segments an indirect request may have (absent: none).
    pub const FEATURE_MAX_INDIRECT_SEGMENTS: &str = "feature-max-indirect-segments";
    /// Both: `1` if grants are kept mapped between requests.
    pub const FEATURE_PERSISTENT: &str = "feature-persistent";
}

/// The `protocol` value of the 64-bit x86 ABI (`XEN_IO_PROTO_ABI_X86_64`).
pub const PROTOCOL_X86_64: &str = "x86_64-abi";

/// The `devid` of an `xvd` disk name (`xen-vbd-interface.7`): `xvda` is
/// `202 << 8 | 0 << 4` (51712), up to `xvdp` (disk 15); partitions are
/// not accepted. `None` for any other name.
#[must_use]
pub fn xvd_devid(name: &str) -> Option<u32> {
    let letter = match name.strip_prefix("xvd")?.as_bytes() {
        [l @ b'a'..=b'p'] => u32::from(*l - b'a'),
        _ => return None,
    };
    Some((202 << 8) | (letter << 4))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_page_holds_32_requests() {
        assert_eq!(RING_SLOTS, 32);
        assert_eq!(BlkifResponse::SIZE, 16);
    }

    #[test]
    fn request_round_trips_at_xens_offsets() {
        let mut req = BlkifRequest {
            operation: BlkifOp::Write as u8,
            nr_segments: 2,
            handle: 0,
            id: 0x1122_3344_5566_7788,
            sector_number: 9,
            ..BlkifRequest::default()
        };
        req.seg[1] = BlkifRequestSegment {
            gref: 0xABCD,
            first_sect: 1,
            last_sect: 7,
            pad: 0,
        };
        let mut bytes = [0u8; 112];
        req.to_wire(&mut bytes).unwrap();
        assert_eq!(bytes[0], 1);
        assert_eq!(bytes[1], 2);
        assert_eq!(bytes[8], 0x88);
        assert_eq!(bytes[16], 9);
        assert_eq!(&bytes[32..38], &[0xCD, 0xAB, 0, 0, 1, 7]);
        assert_eq!(BlkifRequest::from_wire(&bytes), Some(req));
        let discard = BlkifRequestDiscard::from_wire(&bytes).unwrap();
        assert_eq!(discard.id, req.id);
        assert_eq!(discard.nr_sectors, 0);
    }

    #[test]
    fn a_discard_survives_the_request_slot() {
        let discard = BlkifRequestDiscard {
            operation: BlkifOp::Discard as u8,
            flag: BLKIF_DISCARD_SECURE,
            handle: 0,
            id: 9,
            sector_number: 100,
            nr_sectors: 0xFFFF_0000_0000_0001,
        };
        let req = BlkifRequest::from_discard(&discard);
        assert_eq!(req.seg[0].pad, 0xFFFF);
        assert_eq!(req.as_discard(), discard);
    }

    #[test]
    fn operations_and_devids() {
        for op in 0..=6 {
            assert_eq!(BlkifOp::from_u8(op).map(|o| o as u8), Some(op));
        }
        assert_eq!(BlkifOp::from_u8(7), None);
        assert_eq!(xvd_devid("xvda"), Some(51712));
        assert_eq!(xvd_devid("xvdb"), Some(51728));
        assert_eq!(xvd_devid("xvdp"), Some(51712 + 15 * 16));
        assert_eq!(xvd_devid("xvdq"), None);
        assert_eq!(xvd_devid("xvda1"), None);
        assert_eq!(xvd_devid("sda"), None);
    }
}
