//! The block back end (`blkback`): serves a front end's `blkif` ring
//! (`dom0_abi::blkif`) from a [`BlockDevice`].
//!
//! Every request is copied out of the ring once (`guest_pv_shim::ring`)
//! and checked whole before anything moves ([`decode`]): the operation,
//! the segment count, each segment's sectors within its page, and the
//! whole sector range within the device. A request that fails a check is
//! answered `BLKIF_RSP_ERROR` (or `BLKIF_RSP_EOPNOTSUPP` for an
//! operation not offered) with its `id` echoed; nothing is read or
//! written. Data moves between the front end's granted pages and one
//! bounce page per segment ([`Pages`]: `GNTTABOP_copy` in dom0), so the
//! back end never maps a data page and a bad grant fails only that
//! request. A front end whose ring indices are impossible
//! ([`RingError`]) is disconnected; other front ends are not affected,
//! and each ring is served for at most a budget of requests per round.
//!
//! Two faster paths, each negotiated through xenstore as `blkif.h`
//! defines it, and each still checked whole before anything moves:
//!
//! - **Indirect requests** (`feature-max-indirect-segments`,
//!   [`MAX_INDIRECT_SEGMENTS`]): the segments of a read or write are in
//!   the front end's granted pages ([`Pages::indirect`] fetches them), so
//!   one request moves up to 128 KiB.
//! - **Direct I/O** (with `feature-persistent`): when the front end keeps
//!   its data pages granted and the device moves data by DMA
//!   ([`BlockDevice::direct`]), [`Pages::direct`] gives the machine
//!   addresses of the segments' bytes (grants mapped once for the device
//!   and kept) and the device reads or writes them in one request: no
//!   bounce page, no grant copy.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use dom0_abi::blkif::{
    BLKIF_DISCARD_SECURE, BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_ERROR, BLKIF_RSP_OKAY, BlkifOp,
    BlkifRequest, BlkifRequestIndirect, BlkifRequestSegment, BlkifResponse, MAX_SEGMENTS,
    PROTOCOL_X86_64, SECTOR_BYTES, SECTORS_PER_PAGE, VDISK_READONLY, keys,
};
use dom0_abi::wire::Wire;
use dom0_abi::xenstore::XenbusState;
pub use drivers::blk::Piece;
use guest_pv_shim::ring::{BackRing, RingError, RingMemory};

/// Bytes of a page (a segment's frame, a bounce page).
pub const PAGE_BYTES: usize = 4096;
/// Segments an indirect request may have (`feature-max-indirect-segments`):
/// as many as the virtio disk takes in one direct request, 128 KiB.
pub const MAX_INDIRECT_SEGMENTS: usize = drivers::blk::MAX_PIECES;
/// Segments of any request: [`MAX_SEGMENTS`] in the ring slot, more
/// through indirect pages.
pub const MAX_REQUEST_SEGMENTS: usize = MAX_INDIRECT_SEGMENTS;
const _: () = assert!(MAX_REQUEST_SEGMENTS >= MAX_SEGMENTS);
/// Segment descriptors in one indirect page.
pub const SEGMENTS_PER_INDIRECT_PAGE: usize = PAGE_BYTES / BlkifRequestSegment::SIZE;

/// An I/O error of a [`BlockDevice`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceError(pub &'static str);

/// A disk the back end serves: a RAM disk here, a virtio disk in dom0's
/// drivers. Sectors are 512 bytes; callers keep every access within
/// [`BlockDevice::sectors`] and buffers a whole number of sectors.
pub trait BlockDevice {
    /// Size in 512-byte sectors.
    fn sectors(&self) -> u64;
    /// Whether writes are allowed.
    fn writable(&self) -> bool;
    /// Reads `buf.len() / 512` sectors from `sector`.
    ///
    /// # Errors
    /// The device failed.
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), DeviceError>;
    /// Writes `buf` at `sector`.
    ///
    /// # Errors
    /// The device failed.
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), DeviceError>;
    /// Makes every completed write durable.
    ///
    /// # Errors
    /// The device failed.
    fn flush(&mut self) -> Result<(), DeviceError>;
    /// Whether [`BlockDevice::discard`] works.
    fn can_discard(&self) -> bool {
        false
    }
    /// Forgets `count` sectors from `sector` (they may then read as
    /// anything; a RAM disk zeroes them).
    ///
    /// # Errors
    /// The device failed or cannot discard.
    fn discard(&mut self, sector: u64, count: u64) -> Result<(), DeviceError> {
        let _ = (sector, count);
        Err(DeviceError("discard not supported"))
    }
    /// Whether the device moves data by DMA to machine addresses
    /// ([`BlockDevice::read_direct`]).
    fn direct(&self) -> bool {
        false
    }
    /// Reads the sectors from `sector` into `pieces` of machine memory,
    /// in one transfer.
    ///
    /// # Errors
    /// The device failed or cannot move data directly.
    fn read_direct(&mut self, sector: u64, pieces: &[Piece]) -> Result<(), DeviceError> {
        let _ = (sector, pieces);
        Err(DeviceError("no direct I/O"))
    }
    /// Writes `pieces` of machine memory at `sector`, in one transfer.
    ///
    /// # Errors
    /// As [`BlockDevice::read_direct`].
    fn write_direct(&mut self, sector: u64, pieces: &[Piece]) -> Result<(), DeviceError> {
        let _ = (sector, pieces);
        Err(DeviceError("no direct I/O"))
    }
}

/// A disk in dom0's memory, zero when created.
#[derive(Debug)]
pub struct RamDisk {
    data: Vec<u8>,
    writable: bool,
}

impl RamDisk {
    /// A disk of `bytes` (rounded down to whole sectors); `None` if the
    /// memory cannot be had.
    #[must_use]
    pub fn new(bytes: u64, writable: bool) -> Option<RamDisk> {
        let bytes = usize::try_from(bytes).ok()? / SECTOR_BYTES * SECTOR_BYTES;
        let mut data = Vec::new();
        data.try_reserve_exact(bytes).ok()?;
        data.resize(bytes, 0);
        Some(RamDisk { data, writable })
    }

    /// The byte range of `len` bytes at `sector`.
    fn range(&self, sector: u64, len: usize) -> Result<core::ops::Range<usize>, DeviceError> {
        let start = usize::try_from(sector)
            .ok()
            .and_then(|s| s.checked_mul(SECTOR_BYTES))
            .ok_or(DeviceError("sector out of range"))?;
        let end = start
            .checked_add(len)
            .filter(|&e| e <= self.data.len())
            .ok_or(DeviceError("past the end of the disk"))?;
        Ok(start..end)
    }
}

impl BlockDevice for RamDisk {
    fn sectors(&self) -> u64 {
        (self.data.len() / SECTOR_BYTES) as u64
    }
    fn writable(&self) -> bool {
        self.writable
    }
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        let range = self.range(sector, buf.len())?;
        buf.copy_from_slice(&self.data[range]);
        Ok(())
    }
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), DeviceError> {
        if !self.writable {
            return Err(DeviceError("read-only"));
        }
        let range = self.range(sector, buf.len())?;
        self.data[range].copy_from_slice(buf);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), DeviceError> {
        Ok(())
    }
    fn can_discard(&self) -> bool {
        true
    }
    fn discard(&mut self, sector: u64, count: u64) -> Result<(), DeviceError> {
        if !self.writable {
            return Err(DeviceError("read-only"));
        }
        let len = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_mul(SECTOR_BYTES))
            .ok_or(DeviceError("past the end of the disk"))?;
        let range = self.range(sector, len)?;
        self.data[range].fill(0);
        Ok(())
    }
}

/// What a request does, once checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Read the segments' sectors from the disk.
    Read,
    /// Write the segments' sectors to the disk.
    Write,
    /// Flush, then write the segments (if any): `FLUSH_DISKCACHE` and
    /// `WRITE_BARRIER` (requests are served in order, one at a time, so a
    /// barrier needs nothing more).
    FlushWrite,
    /// Discard the range.
    Discard,
}

/// One checked segment: `len` bytes at byte `offset` of grant `gref`,
/// which are the disk's bytes from `sector`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// The front end's grant.
    pub gref: u32,
    /// Byte offset in the page (`first_sect * 512`).
    pub offset: u16,
    /// Bytes (a whole number of sectors, at most a page).
    pub len: u16,
    /// First disk sector.
    pub sector: u64,
}

impl Segment {
    /// The byte range of the page (and of its bounce page) it covers.
    #[must_use]
    pub fn bytes(&self) -> core::ops::Range<usize> {
        usize::from(self.offset)..usize::from(self.offset) + usize::from(self.len)
    }
}

/// A checked request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decoded {
    /// What to do.
    pub kind: Kind,
    /// The first sector of the range it covers.
    pub sector: u64,
    /// Sectors it covers.
    pub length: u64,
    /// `segments[..count]` are used.
    pub segments: [Segment; MAX_REQUEST_SEGMENTS],
    /// Segments used.
    pub count: usize,
}

impl Decoded {
    /// The segments used.
    #[must_use]
    pub fn segments(&self) -> &[Segment] {
        &self.segments[..self.count]
    }
}

/// Why a request is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// An operation this back end does not offer (the reserved one, an
    /// undefined number, an indirect one other than read or write;
    /// discard on a read-only disk or secure).
    Unsupported(u8),
    /// A read or write without segments.
    NoSegments,
    /// More than 11 segments (more than [`MAX_INDIRECT_SEGMENTS`] in an
    /// indirect request).
    TooManySegments(u16),
    /// A segment's `first_sect..=last_sect` is not within its page.
    BadSectors {
        /// The segment.
        index: usize,
        /// Its `first_sect`.
        first: u8,
        /// Its `last_sect`.
        last: u8,
    },
    /// The sectors reach past the end of the device.
    PastEnd {
        /// The request's first sector.
        sector: u64,
        /// Sectors it moves.
        count: u64,
    },
    /// A write to a read-only device.
    ReadOnly,
}

impl Reject {
    /// The response status: `EOPNOTSUPP` for an operation not offered,
    /// `ERROR` for everything else.
    #[must_use]
    pub fn status(self) -> i16 {
        match self {
            Reject::Unsupported(_) => BLKIF_RSP_EOPNOTSUPP,
            _ => BLKIF_RSP_ERROR,
        }
    }
}

/// What requests are checked against: the device's size and abilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Size in 512-byte sectors.
    pub sectors: u64,
    /// Writes (and discards) allowed.
    pub writable: bool,
    /// Discard offered (`feature-discard`).
    pub discard: bool,
}

impl Limits {
    /// The limits of `dev`: discard is offered on a writable device that
    /// can discard.
    #[must_use]
    pub fn of(dev: &dyn BlockDevice) -> Limits {
        Limits {
            sectors: dev.sectors(),
            writable: dev.writable(),
            discard: dev.writable() && dev.can_discard(),
        }
    }
}

/// Checks `req` (not an indirect one: [`decode_indirect`]) against
/// `limits`.
///
/// # Errors
/// The first check `req` fails, as [`Reject`].
pub fn decode(req: &BlkifRequest, limits: Limits) -> Result<Decoded, Reject> {
    let kind = match BlkifOp::from_u8(req.operation) {
        Some(BlkifOp::Read) => Kind::Read,
        Some(BlkifOp::Write) => Kind::Write,
        Some(BlkifOp::FlushDiskcache | BlkifOp::WriteBarrier) => Kind::FlushWrite,
        Some(BlkifOp::Discard) => return decode_discard(req, limits),
        _ => return Err(Reject::Unsupported(req.operation)),
    };
    let count = usize::from(req.nr_segments);
    if count > MAX_SEGMENTS {
        return Err(Reject::TooManySegments(u16::from(req.nr_segments)));
    }
    if count == 0 && kind != Kind::FlushWrite {
        return Err(Reject::NoSegments);
    }
    decode_segments(kind, req.sector_number, &req.seg[..count], limits)
}

/// The operation and segment count of the indirect request `req`, before
/// its segments are fetched: a read or write of 1 to
/// [`MAX_INDIRECT_SEGMENTS`] segments.
///
/// # Errors
/// The operation or the count is refused.
pub fn indirect_header(req: &BlkifRequestIndirect) -> Result<(Kind, usize), Reject> {
    let kind = match BlkifOp::from_u8(req.indirect_op) {
        Some(BlkifOp::Read) => Kind::Read,
        Some(BlkifOp::Write) => Kind::Write,
        _ => return Err(Reject::Unsupported(req.indirect_op)),
    };
    let count = usize::from(req.nr_segments);
    if count == 0 {
        return Err(Reject::NoSegments);
    }
    if count > MAX_INDIRECT_SEGMENTS {
        return Err(Reject::TooManySegments(req.nr_segments));
    }
    Ok((kind, count))
}

/// The indirect pages of `req` that hold its `count` segments.
#[must_use]
pub fn indirect_pages(req: &BlkifRequestIndirect, count: usize) -> &[u32] {
    &req.indirect_grefs[..count.div_ceil(SEGMENTS_PER_INDIRECT_PAGE)]
}

/// Checks the indirect request `req` whose segments (fetched from its
/// indirect pages) are `segs` against `limits`.
///
/// # Errors
/// The first check fails, as [`Reject`].
pub fn decode_indirect(
    req: &BlkifRequestIndirect,
    segs: &[BlkifRequestSegment],
    limits: Limits,
) -> Result<Decoded, Reject> {
    let (kind, count) = indirect_header(req)?;
    let segs = segs.get(..count).ok_or(Reject::NoSegments)?;
    decode_segments(kind, req.sector_number, segs, limits)
}

/// Checks the segments `segs` of a read, write or flush from `sector`:
/// each within its page, the whole range within the device, writable
/// unless a read.
fn decode_segments(
    kind: Kind,
    sector: u64,
    segs: &[BlkifRequestSegment],
    limits: Limits,
) -> Result<Decoded, Reject> {
    if kind != Kind::Read && !limits.writable {
        return Err(Reject::ReadOnly);
    }
    let mut segments = [Segment::default(); MAX_REQUEST_SEGMENTS];
    let mut next = sector;
    for (index, (seg, out)) in segs.iter().zip(&mut segments).enumerate() {
        let (first, last) = (seg.first_sect, seg.last_sect);
        if first > last || last >= SECTORS_PER_PAGE {
            return Err(Reject::BadSectors { index, first, last });
        }
        let n = u16::from(last - first + 1);
        #[allow(clippy::cast_possible_truncation, reason = "512 fits a u16")]
        let sector_bytes = SECTOR_BYTES as u16;
        *out = Segment {
            gref: seg.gref,
            offset: u16::from(first) * sector_bytes,
            len: n * sector_bytes,
            sector: next,
        };
        next = next.saturating_add(u64::from(n));
    }
    let moved = next - sector;
    // `next` saturates: u64::MAX means the range wrapped.
    if next > limits.sectors || next == u64::MAX {
        return Err(Reject::PastEnd {
            sector,
            count: moved,
        });
    }
    Ok(Decoded {
        kind,
        sector,
        length: moved,
        segments,
        count: segs.len().min(MAX_REQUEST_SEGMENTS),
    })
}

/// Checks a discard: offered, not secure (never offered), writable,
/// within the device.
fn decode_discard(req: &BlkifRequest, limits: Limits) -> Result<Decoded, Reject> {
    let discard = req.as_discard();
    if !limits.discard || discard.flag & BLKIF_DISCARD_SECURE != 0 {
        return Err(Reject::Unsupported(req.operation));
    }
    if !limits.writable {
        return Err(Reject::ReadOnly);
    }
    let (sector, length) = (discard.sector_number, discard.nr_sectors);
    if sector
        .checked_add(length)
        .is_none_or(|end| end > limits.sectors)
    {
        return Err(Reject::PastEnd {
            sector,
            count: length,
        });
    }
    Ok(Decoded {
        kind: Kind::Discard,
        sector,
        length,
        segments: [Segment::default(); MAX_REQUEST_SEGMENTS],
        count: 0,
    })
}

/// A grant copy that failed: the segment and the hypervisor's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CopyError {
    /// The segment.
    pub index: usize,
    /// Its `GNTST_*` status.
    pub status: i16,
}

/// The data path to one front end's pages: a bounce page per segment and
/// the grant copies between them and the front end's grants, the
/// segments of indirect requests, and (persistent grants) the machine
/// addresses of the front end's pages for direct I/O.
pub trait Pages {
    /// Copies each segment's bytes from the front end's grant into the
    /// same bytes of bounce page *i*.
    ///
    /// # Errors
    /// A copy failed (a bad grant).
    fn gather(&mut self, segments: &[Segment]) -> Result<(), CopyError>;
    /// Copies each segment's bytes of bounce page *i* to the front end's
    /// grant.
    ///
    /// # Errors
    /// A copy failed (a bad grant, a read-only grant).
    fn scatter(&mut self, segments: &[Segment]) -> Result<(), CopyError>;
    /// The [`MAX_REQUEST_SEGMENTS`] bounce pages one after the other
    /// (page *i* at byte `i * PAGE_BYTES`), so a run of segments is one
    /// slice.
    fn bounces(&mut self) -> &mut [u8];
    /// Fills `out` with the segment descriptors in the front end's
    /// indirect pages `grefs` (512 per page, in order).
    ///
    /// # Errors
    /// A page cannot be read (a bad grant).
    fn indirect(&mut self, grefs: &[u32], out: &mut [BlkifRequestSegment])
    -> Result<(), CopyError>;
    /// The machine addresses of each segment's bytes when the front end's
    /// grants are (or now get) mapped for the device; `None`: move the
    /// data through the bounce pages.
    ///
    /// # Errors
    /// A grant cannot be mapped (a bad grant, one revoked).
    fn direct(
        &mut self,
        segments: &[Segment],
    ) -> Result<Option<[Piece; MAX_REQUEST_SEGMENTS]>, CopyError> {
        let _ = segments;
        Ok(None)
    }
}

/// The runs of `segments` the device can move in one transfer: ranges of
/// segment indices whose sectors follow one another and whose bytes are
/// contiguous in the bounce pages (each segment but a run's last ends at
/// its page's end, each but its first starts at the page's start). A
/// front end reading or writing whole pages gives one run per request.
pub fn runs(segments: &[Segment]) -> impl Iterator<Item = core::ops::Range<usize>> + '_ {
    let joins = |a: &Segment, b: &Segment| {
        usize::from(a.offset) + usize::from(a.len) == PAGE_BYTES
            && b.offset == 0
            && a.sector + u64::from(a.len) / SECTOR_BYTES as u64 == b.sector
    };
    let mut start = 0;
    core::iter::from_fn(move || {
        if start >= segments.len() {
            return None;
        }
        let mut end = start + 1;
        while end < segments.len() && joins(&segments[end - 1], &segments[end]) {
            end += 1;
        }
        let run = start..end;
        start = end;
        Some(run)
    })
}

/// The bytes of the bounce pages that run `run` of `segments` covers.
fn span(segments: &[Segment], run: core::ops::Range<usize>) -> core::ops::Range<usize> {
    let (first, last) = (&segments[run.start], &segments[run.end - 1]);
    let start = run.start * PAGE_BYTES + usize::from(first.offset);
    start..(run.end - 1) * PAGE_BYTES + usize::from(last.offset) + usize::from(last.len)
}

/// How one request ended, for the log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Done.
    Done,
    /// Refused before anything moved.
    Rejected(Reject),
    /// A grant copy failed.
    Copy(CopyError),
    /// The device failed.
    Device(DeviceError),
}

impl Outcome {
    /// The response status.
    #[must_use]
    pub fn status(self) -> i16 {
        match self {
            Outcome::Done => BLKIF_RSP_OKAY,
            Outcome::Rejected(r) => r.status(),
            Outcome::Copy(_) | Outcome::Device(_) => BLKIF_RSP_ERROR,
        }
    }
}

/// Checks `req` (fetching an indirect request's segments) against the
/// device `dev`.
fn decode_any(
    req: &BlkifRequest,
    dev: &dyn BlockDevice,
    pages: &mut dyn Pages,
) -> Result<Decoded, Outcome> {
    let limits = Limits::of(dev);
    if req.operation != BlkifOp::Indirect as u8 {
        return decode(req, limits).map_err(Outcome::Rejected);
    }
    let indirect = req.as_indirect();
    let (_, count) = indirect_header(&indirect).map_err(Outcome::Rejected)?;
    let mut segs = [BlkifRequestSegment::default(); MAX_INDIRECT_SEGMENTS];
    pages
        .indirect(indirect_pages(&indirect, count), &mut segs[..count])
        .map_err(Outcome::Copy)?;
    decode_indirect(&indirect, &segs[..count], limits).map_err(Outcome::Rejected)
}

/// Serves one request: checks it, moves its data, and tells how it went.
pub fn serve(req: &BlkifRequest, dev: &mut dyn BlockDevice, pages: &mut dyn Pages) -> Outcome {
    let decoded = match decode_any(req, dev, pages) {
        Ok(d) => d,
        Err(outcome) => return outcome,
    };
    let result = match decoded.kind {
        Kind::Read => read(&decoded, dev, pages),
        Kind::Write => write(&decoded, dev, pages),
        Kind::FlushWrite => dev
            .flush()
            .map_err(Outcome::Device)
            .and_then(|()| write(&decoded, dev, pages)),
        Kind::Discard => dev
            .discard(decoded.sector, decoded.length)
            .map_err(Outcome::Device),
    };
    result.err().unwrap_or(Outcome::Done)
}

/// The machine addresses of `decoded`'s data when both the device and
/// the front end's pages allow direct I/O.
fn direct(
    decoded: &Decoded,
    dev: &dyn BlockDevice,
    pages: &mut dyn Pages,
) -> Result<Option<[Piece; MAX_REQUEST_SEGMENTS]>, Outcome> {
    if !dev.direct() || decoded.count == 0 {
        return Ok(None);
    }
    pages.direct(decoded.segments()).map_err(Outcome::Copy)
}

fn read(
    decoded: &Decoded,
    dev: &mut dyn BlockDevice,
    pages: &mut dyn Pages,
) -> Result<(), Outcome> {
    if let Some(pieces) = direct(decoded, dev, pages)? {
        return dev
            .read_direct(decoded.sector, &pieces[..decoded.count])
            .map_err(Outcome::Device);
    }
    let segments = decoded.segments();
    for run in runs(segments) {
        let sector = segments[run.start].sector;
        dev.read(sector, &mut pages.bounces()[span(segments, run)])
            .map_err(Outcome::Device)?;
    }
    pages.scatter(segments).map_err(Outcome::Copy)
}

fn write(
    decoded: &Decoded,
    dev: &mut dyn BlockDevice,
    pages: &mut dyn Pages,
) -> Result<(), Outcome> {
    let segments = decoded.segments();
    if segments.is_empty() {
        return Ok(());
    }
    if let Some(pieces) = direct(decoded, dev, pages)? {
        return dev
            .write_direct(decoded.sector, &pieces[..decoded.count])
            .map_err(Outcome::Device);
    }
    pages.gather(segments).map_err(Outcome::Copy)?;
    for run in runs(segments) {
        let sector = segments[run.start].sector;
        dev.write(sector, &pages.bounces()[span(segments, run)])
            .map_err(Outcome::Device)?;
    }
    Ok(())
}

/// What one round of a ring did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Round {
    /// Requests answered.
    pub answered: u32,
    /// Requests refused or failed (answered with an error status).
    pub failed: u32,
    /// The front end must be notified.
    pub notify: bool,
    /// The budget ran out with requests left: serve again before sleeping.
    pub more: bool,
    /// The first failure of the round, for the log.
    pub first_failure: Option<Outcome>,
}

/// The `operation` of `req`'s response: the request's, or for an
/// indirect request the operation it carried (`indirect_op`), as Linux's
/// back end answers.
#[must_use]
pub fn response_operation(req: &BlkifRequest) -> u8 {
    if req.operation == BlkifOp::Indirect as u8 {
        req.as_indirect().indirect_op
    } else {
        req.operation
    }
}

/// The back end of one connected ring.
#[derive(Debug)]
pub struct BlkRing<M> {
    ring: BackRing<M, BlkifRequest, BlkifResponse>,
}

impl<M: RingMemory> BlkRing<M> {
    /// The back end of the ring in `mem` (initialised by the front end).
    pub fn attach(mem: M) -> Self {
        BlkRing {
            ring: BackRing::attach(mem),
        }
    }

    /// Serves at most `budget` requests, then publishes the responses and
    /// (with budget left) re-arms the request event.
    ///
    /// # Errors
    /// The front end's indices are impossible: disconnect it.
    pub fn serve(
        &mut self,
        dev: &mut dyn BlockDevice,
        pages: &mut dyn Pages,
        budget: u32,
    ) -> Result<Round, RingError> {
        let mut round = Round::default();
        loop {
            while round.answered < budget {
                let Some(req) = self.ring.pop()? else {
                    break;
                };
                let outcome = serve(&req, dev, pages);
                if outcome != Outcome::Done {
                    round.failed += 1;
                    round.first_failure.get_or_insert(outcome);
                }
                self.ring.push(&BlkifResponse {
                    id: req.id,
                    operation: response_operation(&req),
                    status: outcome.status(),
                });
                round.answered += 1;
            }
            round.notify |= self.ring.publish();
            if round.answered >= budget {
                round.more = true;
                return Ok(round);
            }
            if !self.ring.final_check()? {
                return Ok(round);
            }
        }
    }

    /// The ring's memory.
    pub fn memory(&self) -> &M {
        self.ring.memory()
    }
}

/// What the front end published for the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrontDetails {
    /// The ring page's grant.
    pub ring_ref: u32,
    /// The front end's port of the event channel.
    pub event_channel: u32,
}

/// Parses the front end's `ring-ref`, `event-channel` and `protocol`
/// (absent: native, which is 64-bit x86 here).
///
/// # Errors
/// What is missing or malformed, for the log.
pub fn front_details(
    ring_ref: Option<&[u8]>,
    event_channel: Option<&[u8]>,
    protocol: Option<&[u8]>,
) -> Result<FrontDetails, &'static str> {
    let number = |value: Option<&[u8]>, what| {
        value
            .and_then(|v| core::str::from_utf8(v).ok())
            .and_then(|v| v.parse::<u32>().ok())
            .ok_or(what)
    };
    if let Some(p) = protocol
        && p != PROTOCOL_X86_64.as_bytes()
    {
        return Err("unsupported protocol");
    }
    Ok(FrontDetails {
        ring_ref: number(ring_ref, "no valid ring-ref")?,
        event_channel: number(event_channel, "no valid event-channel")?,
    })
}

/// What the back end publishes when it connects, before `state` 4:
/// `(key, value)` below its directory. Discard, when offered, works on
/// any sector (granularity 512, alignment 0), never securely.
#[must_use]
pub fn connected_keys(dev: &dyn BlockDevice) -> Vec<(&'static str, String)> {
    let info = if dev.writable() { 0 } else { VDISK_READONLY };
    let mut keys = alloc::vec![
        (keys::SECTORS, format!("{}", dev.sectors())),
        (keys::INFO, format!("{info}")),
        (keys::SECTOR_SIZE, format!("{SECTOR_BYTES}")),
        (keys::PHYSICAL_SECTOR_SIZE, format!("{SECTOR_BYTES}")),
        (keys::FEATURE_FLUSH_CACHE, String::from("1")),
        (keys::FEATURE_BARRIER, String::from("1")),
        (keys::FEATURE_PERSISTENT, String::from("1")),
        (
            keys::FEATURE_MAX_INDIRECT_SEGMENTS,
            format!("{MAX_INDIRECT_SEGMENTS}"),
        ),
    ];
    if Limits::of(dev).discard {
        keys.extend([
            (keys::FEATURE_DISCARD, String::from("1")),
            (keys::DISCARD_GRANULARITY, format!("{SECTOR_BYTES}")),
            (keys::DISCARD_ALIGNMENT, String::from("0")),
            (keys::DISCARD_SECURE, String::from("0")),
        ]);
    }
    keys
}

/// The back end's next state given its own and the front end's (the
/// `vbd` handshake): connect when the front end is `Initialised` (or
/// already `Connected`, as Mini-OS goes) while waiting in `InitWait`;
/// answer `Closing` with `Closing`; on the front end's `Closed`,
/// disconnect and close. `None`: nothing to do.
#[must_use]
pub fn backend_step(back: XenbusState, front: XenbusState) -> Option<XenbusState> {
    use XenbusState::{Closed, Closing, Connected, InitWait, Initialised};
    match (back, front) {
        (InitWait, Initialised | Connected) => Some(Connected),
        (InitWait | Connected, Closing) => Some(Closing),
        (InitWait | Connected | Closing, Closed) => Some(Closed),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
