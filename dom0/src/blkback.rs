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

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use dom0_abi::blkif::{
    BLKIF_DISCARD_SECURE, BLKIF_RSP_EOPNOTSUPP, BLKIF_RSP_ERROR, BLKIF_RSP_OKAY, BlkifOp,
    BlkifRequest, BlkifResponse, MAX_SEGMENTS, PROTOCOL_X86_64, SECTOR_BYTES, SECTORS_PER_PAGE,
    VDISK_READONLY, keys,
};
use dom0_abi::xenstore::XenbusState;
use guest_pv_shim::ring::{BackRing, RingError, RingMemory};

/// Bytes of a page (a segment's frame, a bounce page).
pub const PAGE_BYTES: usize = 4096;

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
    pub segments: [Segment; MAX_SEGMENTS],
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
    /// An operation this back end does not offer (indirect, the reserved
    /// one, an undefined number; discard on a read-only disk or secure).
    Unsupported(u8),
    /// A read or write without segments.
    NoSegments,
    /// More than 11 segments.
    TooManySegments(u8),
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

/// Checks `req` against `limits`.
///
/// # Errors
/// The first check `req` fails, as [`Reject`].
pub fn decode(req: &BlkifRequest, limits: Limits) -> Result<Decoded, Reject> {
    let Limits {
        sectors, writable, ..
    } = limits;
    let kind = match BlkifOp::from_u8(req.operation) {
        Some(BlkifOp::Read) => Kind::Read,
        Some(BlkifOp::Write) => Kind::Write,
        Some(BlkifOp::FlushDiskcache | BlkifOp::WriteBarrier) => Kind::FlushWrite,
        Some(BlkifOp::Discard) => return decode_discard(req, limits),
        _ => return Err(Reject::Unsupported(req.operation)),
    };
    let count = usize::from(req.nr_segments);
    if count > MAX_SEGMENTS {
        return Err(Reject::TooManySegments(req.nr_segments));
    }
    if count == 0 && kind != Kind::FlushWrite {
        return Err(Reject::NoSegments);
    }
    if kind != Kind::Read && !writable {
        return Err(Reject::ReadOnly);
    }
    let mut segments = [Segment::default(); MAX_SEGMENTS];
    let mut next = req.sector_number;
    for (index, (seg, out)) in req.seg.iter().zip(&mut segments).take(count).enumerate() {
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
    let moved = next - req.sector_number;
    // `next` saturates: u64::MAX means the range wrapped.
    if next > sectors || next == u64::MAX {
        return Err(Reject::PastEnd {
            sector: req.sector_number,
            count: moved,
        });
    }
    Ok(Decoded {
        kind,
        sector: req.sector_number,
        length: moved,
        segments,
        count,
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
        segments: [Segment::default(); MAX_SEGMENTS],
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
/// the grant copies between them and the front end's grants.
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
    /// The 11 bounce pages one after the other (page *i* at byte
    /// `i * PAGE_BYTES`), so a run of segments is one slice.
    fn bounces(&mut self) -> &mut [u8];
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

/// Serves one request: checks it, moves its data, and tells how it went.
pub fn serve(req: &BlkifRequest, dev: &mut dyn BlockDevice, pages: &mut dyn Pages) -> Outcome {
    let decoded = match decode(req, Limits::of(dev)) {
        Ok(d) => d,
        Err(r) => return Outcome::Rejected(r),
    };
    let segments = decoded.segments();
    let result = match decoded.kind {
        Kind::Read => read(segments, dev, pages),
        Kind::Write => write(segments, dev, pages),
        Kind::FlushWrite => dev
            .flush()
            .map_err(Outcome::Device)
            .and_then(|()| write(segments, dev, pages)),
        Kind::Discard => dev
            .discard(decoded.sector, decoded.length)
            .map_err(Outcome::Device),
    };
    result.err().unwrap_or(Outcome::Done)
}

fn read(
    segments: &[Segment],
    dev: &mut dyn BlockDevice,
    pages: &mut dyn Pages,
) -> Result<(), Outcome> {
    for run in runs(segments) {
        let sector = segments[run.start].sector;
        dev.read(sector, &mut pages.bounces()[span(segments, run)])
            .map_err(Outcome::Device)?;
    }
    pages.scatter(segments).map_err(Outcome::Copy)
}

fn write(
    segments: &[Segment],
    dev: &mut dyn BlockDevice,
    pages: &mut dyn Pages,
) -> Result<(), Outcome> {
    if segments.is_empty() {
        return Ok(());
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
                    operation: req.operation,
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
