//! A block front end (`blkfront`): a guest's side of a virtual block
//! device (`dom0_abi::blkif`).
//!
//! The pure parts, host-tested against dom0's back end: [`BlkFront`]
//! builds requests over a fixed set of [`DATA_PAGES`] granted data pages
//! (one request in flight at a time, at most [`MAX_SEGMENTS`] pages of
//! data each, or all of them in one indirect request when the back end
//! offers `feature-max-indirect-segments`) on a [`FrontRing`], and
//! [`handshake`] publishes the ring on xenstore and follows the back
//! end's state. The data pages stay granted while connected, so the front
//! end offers `feature-persistent`. On the bare-metal target,
//! `Disk` puts them together: it grants the ring and data pages (its own
//! grant table mapped in a window), allocates the event channel, connects
//! and offers `Disk::read`, `write`, `flush` and `discard` of sectors,
//! sleeping on the event channel (`SCHEDOP_poll`) for each response.

#![forbid(unsafe_code)]

use dom0_abi::blkif::{
    BlkifOp, BlkifRequest, BlkifRequestIndirect, BlkifRequestSegment, BlkifResponse,
    MAX_INDIRECT_PAGES, MAX_SEGMENTS, PROTOCOL_X86_64, SECTOR_BYTES, keys,
};
use dom0_abi::wire::Wire;
use dom0_abi::xenstore::XenbusState;

use crate::ring::{FrontRing, RingError, RingMemory};
use crate::xenbus::{ClientRing, Xenbus, XenbusError, decimal, join};

/// Bytes of one data page.
pub const PAGE_BYTES: usize = 4096;
/// The data pages: 64 KiB.
pub const DATA_PAGES: usize = 16;
/// Bytes one request moves at most: all the data pages (in two requests
/// when the back end has no indirect requests).
pub const MAX_REQUEST_BYTES: usize = DATA_PAGES * PAGE_BYTES;
/// Bytes a request moves at most without indirect pages.
pub const SLOT_BYTES: usize = MAX_SEGMENTS * PAGE_BYTES;

/// Why an operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlkError {
    /// The length is 0, not a whole number of sectors, or more than one
    /// request moves.
    BadLength(usize),
    /// The ring is full (a request is still outstanding).
    Busy,
    /// The back end broke the ring's rules.
    Ring(RingError),
    /// The back end answered with this status.
    Status(i16),
    /// The response is not the request's (its `id` or operation).
    Mismatch,
    /// No response in time.
    Timeout,
    /// A xenstore request failed.
    Xenbus(XenbusError),
    /// The handshake went wrong: what.
    Handshake(&'static str),
    /// A hypercall failed: which, and its result.
    Hypercall(&'static str, i64),
}

impl From<RingError> for BlkError {
    fn from(e: RingError) -> Self {
        BlkError::Ring(e)
    }
}

impl From<XenbusError> for BlkError {
    fn from(e: XenbusError) -> Self {
        BlkError::Xenbus(e)
    }
}

impl core::fmt::Display for BlkError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BlkError::BadLength(n) => write!(f, "bad length {n}"),
            BlkError::Busy => f.write_str("ring full"),
            BlkError::Ring(e) => write!(f, "ring: {e}"),
            BlkError::Status(s) => write!(f, "status {s}"),
            BlkError::Mismatch => f.write_str("response does not match the request"),
            BlkError::Timeout => f.write_str("timeout"),
            BlkError::Xenbus(e) => write!(f, "xenstore: {e}"),
            BlkError::Handshake(what) => write!(f, "handshake: {what}"),
            BlkError::Hypercall(op, ret) => write!(f, "{op}: {ret}"),
        }
    }
}

/// Segments as `(gref, first_sect, last_sect)`.
type Segments = [(u32, u8, u8); DATA_PAGES];

/// The segments moving `bytes` bytes through the pages granted as
/// `grefs` (page *i* holds bytes `i * 4096..`), at most `max` of them:
/// `(gref, first_sect, last_sect)` and how many.
///
/// # Errors
/// [`BlkError::BadLength`]: `bytes` is not whole sectors or more than
/// `max` pages hold.
fn segments(bytes: usize, grefs: &[u32], max: usize) -> Result<(Segments, usize), BlkError> {
    if !bytes.is_multiple_of(SECTOR_BYTES)
        || bytes > grefs.len().min(max).min(DATA_PAGES) * PAGE_BYTES
    {
        return Err(BlkError::BadLength(bytes));
    }
    let mut segments = [(0, 0, 0); DATA_PAGES];
    let mut left = bytes / SECTOR_BYTES;
    let mut count = 0;
    for (seg, &gref) in segments.iter_mut().zip(grefs) {
        if left == 0 {
            break;
        }
        let n = left.min(PAGE_BYTES / SECTOR_BYTES);
        #[allow(clippy::cast_possible_truncation, reason = "1..=8")]
        let last = (n - 1) as u8;
        *seg = (gref, 0, last);
        count += 1;
        left -= n;
    }
    Ok((segments, count))
}

/// The request moving `bytes` bytes at disk sector `sector` through the
/// data pages granted as `grefs` (page *i* holds bytes `i * 4096..`).
///
/// # Errors
/// [`BlkError::BadLength`]: `bytes` is 0, not whole sectors, or more
/// than the pages hold; a flush may have 0.
pub fn request(
    op: BlkifOp,
    id: u64,
    sector: u64,
    bytes: usize,
    grefs: &[u32],
) -> Result<BlkifRequest, BlkError> {
    if bytes == 0 && op != BlkifOp::FlushDiskcache {
        return Err(BlkError::BadLength(bytes));
    }
    let (segments, count) = segments(bytes, grefs, MAX_SEGMENTS)?;
    Ok(BlkifRequest::new(op as u8, id, sector, &segments[..count]))
}

/// The indirect request of `op` (read or write) moving `bytes` bytes at
/// `sector` through the data pages `grefs`, its segments in the page
/// granted as `page`: the request, and the segment descriptors to put
/// in that page.
///
/// # Errors
/// [`BlkError::BadLength`]: `bytes` is 0, not whole sectors, or more
/// than the pages hold.
pub fn indirect_request(
    op: BlkifOp,
    id: u64,
    sector: u64,
    bytes: usize,
    grefs: &[u32],
    page: u32,
) -> Result<(BlkifRequest, [BlkifRequestSegment; DATA_PAGES], usize), BlkError> {
    if bytes == 0 {
        return Err(BlkError::BadLength(bytes));
    }
    let (raw, count) = segments(bytes, grefs, DATA_PAGES)?;
    let segs = raw.map(|(gref, first_sect, last_sect)| BlkifRequestSegment {
        gref,
        first_sect,
        last_sect,
        pad: 0,
    });
    let mut indirect_grefs = [0; MAX_INDIRECT_PAGES];
    indirect_grefs[0] = page;
    let req = BlkifRequest::from_indirect(&BlkifRequestIndirect {
        operation: BlkifOp::Indirect as u8,
        indirect_op: op as u8,
        #[allow(clippy::cast_possible_truncation, reason = "at most 16")]
        nr_segments: count as u16,
        id,
        sector_number: sector,
        handle: 0,
        pad: 0,
        indirect_grefs,
    });
    Ok((req, segs, count))
}

/// Lanes a front end has at most: each its own [`DATA_PAGES`] data pages
/// and indirect page, and one request in flight.
pub const MAX_LANES: usize = 4;

/// One lane: its data pages, indirect page and the request in flight.
#[derive(Debug)]
struct Lane<M> {
    grefs: [u32; DATA_PAGES],
    /// The indirect page and its grant, once the back end offers
    /// indirect requests of all the data pages.
    indirect: Option<(M, u32)>,
    /// The request in flight: its id and the operations its response
    /// may carry (an indirect request's is answered with the operation it
    /// carried, as Linux's back end does, or `BLKIF_OP_INDIRECT`).
    pending: Option<(u64, [u8; 2])>,
}

impl<M> Lane<M> {
    fn new(grefs: [u32; DATA_PAGES], indirect: Option<(M, u32)>) -> Self {
        Lane {
            grefs,
            indirect,
            pending: None,
        }
    }
}

/// The front end of a connected ring: one request at a time through
/// [`BlkFront::submit`] and [`BlkFront::submit_raw`], or one per lane
/// through [`BlkFront::read_stream`].
#[derive(Debug)]
pub struct BlkFront<M> {
    ring: FrontRing<M, BlkifRequest, BlkifResponse>,
    /// Lane 0 and the lanes added ([`BlkFront::add_lane`]).
    lanes: [Lane<M>; MAX_LANES],
    lane_count: usize,
    next_id: u64,
}

impl<M: RingMemory> BlkFront<M> {
    /// Initialises the ring in `mem`; the data pages of lane 0 are
    /// granted as `grefs`.
    pub fn new(mem: M, grefs: [u32; DATA_PAGES]) -> Self {
        let mut lanes = core::array::from_fn(|_| Lane::new([0; DATA_PAGES], None));
        lanes[0].grefs = grefs;
        BlkFront {
            ring: FrontRing::init(mem),
            lanes,
            lane_count: 1,
            next_id: 1,
        }
    }

    /// Moves reads and writes of more than [`SLOT_BYTES`] in one
    /// indirect request, its segments in `page`, granted as `gref` (the
    /// back end offers at least [`DATA_PAGES`] indirect segments).
    pub fn enable_indirect(&mut self, page: M, gref: u32) {
        self.lanes[0].indirect = Some((page, gref));
    }

    /// Adds a lane: data pages granted as `grefs`, the indirect page
    /// `page` granted as `gref` (only for a back end that offers indirect
    /// requests of all the data pages, as [`BlkFront::enable_indirect`]);
    /// its number, or `None` when there are [`MAX_LANES`] already.
    pub fn add_lane(&mut self, grefs: [u32; DATA_PAGES], page: M, gref: u32) -> Option<usize> {
        let lane = self.lanes.get_mut(self.lane_count)?;
        *lane = Lane::new(grefs, Some((page, gref)));
        self.lane_count += 1;
        Some(self.lane_count - 1)
    }

    /// How many lanes there are (1 before any [`BlkFront::add_lane`]).
    #[must_use]
    pub fn lanes(&self) -> usize {
        self.lane_count
    }

    /// Bytes one request moves at most.
    #[must_use]
    pub fn max_bytes(&self) -> usize {
        if self.lanes[0].indirect.is_some() {
            MAX_REQUEST_BYTES
        } else {
            SLOT_BYTES
        }
    }

    /// Puts a request for `bytes` at `sector` on the ring; `true` if the
    /// back end must be notified.
    ///
    /// # Errors
    /// A bad length, or a request already in flight.
    pub fn submit(&mut self, op: BlkifOp, sector: u64, bytes: usize) -> Result<bool, BlkError> {
        self.submit_at(op, sector, bytes, 0)
    }

    /// Puts a request for `bytes` at `sector` whose data is in lane 0's
    /// data pages from page `first` on the ring (indirect if it needs more
    /// than a slot's segments); `true` if the back end must be notified.
    ///
    /// # Errors
    /// A bad length (more than [`BlkFront::max_bytes`]), or a request
    /// already in flight.
    pub fn submit_at(
        &mut self,
        op: BlkifOp,
        sector: u64,
        bytes: usize,
        first: usize,
    ) -> Result<bool, BlkError> {
        let req = self.build(0, op, sector, bytes, first)?;
        self.submit_raw(&req)
    }

    /// The request for `bytes` at `sector` through lane `lane`'s data
    /// pages from page `first` (indirect through the lane's indirect page
    /// if it needs more than a slot's segments, its segments written
    /// there).
    fn build(
        &mut self,
        lane: usize,
        op: BlkifOp,
        sector: u64,
        bytes: usize,
        first: usize,
    ) -> Result<BlkifRequest, BlkError> {
        let id = self.next_id;
        let Lane {
            grefs, indirect, ..
        } = &mut self.lanes[lane];
        let grefs = grefs.get(first..).unwrap_or(&[]);
        let rw = matches!(op, BlkifOp::Read | BlkifOp::Write);
        match indirect {
            Some((page, gref)) if rw && bytes > SLOT_BYTES => {
                let (req, segs, count) = indirect_request(op, id, sector, bytes, grefs, *gref)?;
                // The segments go into the indirect page in one write.
                let mut raw = [0u8; DATA_PAGES * BlkifRequestSegment::SIZE];
                for (seg, out) in segs[..count]
                    .iter()
                    .zip(raw.chunks_exact_mut(BlkifRequestSegment::SIZE))
                {
                    let _ = seg.to_wire(out);
                }
                page.write_bytes(0, &raw[..count * BlkifRequestSegment::SIZE]);
                Ok(req)
            }
            _ => request(op, id, sector, bytes, grefs),
        }
    }

    /// Puts `req` on the ring as it is (a test front end's crafted
    /// requests); `true` if the back end must be notified.
    ///
    /// # Errors
    /// [`BlkError::Busy`]: a request is already in flight.
    pub fn submit_raw(&mut self, req: &BlkifRequest) -> Result<bool, BlkError> {
        if self.lanes.iter().any(|l| l.pending.is_some()) {
            return Err(BlkError::Busy);
        }
        self.push(0, req)
    }

    /// Puts `req` on the ring as lane `lane`'s request in flight; `true`
    /// if the back end must be notified.
    fn push(&mut self, lane: usize, req: &BlkifRequest) -> Result<bool, BlkError> {
        if self.lanes[lane].pending.is_some() || !self.ring.push(req) {
            return Err(BlkError::Busy);
        }
        let carried = if req.operation == BlkifOp::Indirect as u8 {
            req.as_indirect().indirect_op
        } else {
            req.operation
        };
        self.lanes[lane].pending = Some((req.id, [req.operation, carried]));
        self.next_id = self.next_id.wrapping_add(1);
        Ok(self.ring.publish())
    }

    /// The response to a request in flight, if one has come; `None`
    /// after arming the response event (wait for it, then call again).
    ///
    /// # Errors
    /// The back end broke the ring's rules, or answered a request not in
    /// flight.
    pub fn poll(&mut self) -> Result<Option<BlkifResponse>, BlkError> {
        Ok(self.poll_lane()?.map(|(_, rsp)| rsp))
    }

    /// As [`BlkFront::poll`], with the lane whose request it answers
    /// (which is free again).
    ///
    /// # Errors
    /// As [`BlkFront::poll`].
    pub fn poll_lane(&mut self) -> Result<Option<(usize, BlkifResponse)>, BlkError> {
        loop {
            if let Some(rsp) = self.ring.pop()? {
                let lane = self.lanes[..self.lane_count]
                    .iter()
                    .position(|l| {
                        l.pending
                            .is_some_and(|(id, ops)| rsp.id == id && ops.contains(&rsp.operation))
                    })
                    .ok_or(BlkError::Mismatch)?;
                self.lanes[lane].pending = None;
                return Ok(Some((lane, rsp)));
            }
            if !self.ring.final_check()? {
                return Ok(None);
            }
        }
    }

    /// Reads `units` units of `bytes` bytes each (at most
    /// [`BlkFront::max_bytes`]) from disk sector `sector` on, one request
    /// per unit, with every lane's request in flight at once (one
    /// notification for all that were put on the ring together). `io`
    /// takes each unit in order while its lane's data pages hold it (the
    /// lane is reused once [`StreamIo::data`] returns), notifies the back
    /// end when the ring says so, and waits when no response has come
    /// (the response event is armed), at most `waits` times in a row.
    ///
    /// # Errors
    /// A request already in flight, a bad length, the back end's error
    /// status, a broken ring, or [`BlkError::Timeout`] after `waits`
    /// fruitless waits.
    pub fn read_stream(
        &mut self,
        sector: u64,
        units: u64,
        bytes: usize,
        waits: u32,
        io: &mut impl StreamIo,
    ) -> Result<(), BlkError> {
        if self.lanes.iter().any(|l| l.pending.is_some()) {
            return Err(BlkError::Busy);
        }
        let sectors = (bytes / SECTOR_BYTES) as u64;
        // Per lane, the unit it carries and whether it has been answered.
        let mut carries: [Option<(u64, bool)>; MAX_LANES] = [None; MAX_LANES];
        let (mut next, mut done, mut idle) = (0, 0, 0);
        while done < units {
            let mut notify = false;
            for (lane, carried) in carries[..self.lane_count].iter_mut().enumerate() {
                if next < units && carried.is_none() {
                    let req = self.build(lane, BlkifOp::Read, sector + next * sectors, bytes, 0)?;
                    notify |= self.push(lane, &req)?;
                    *carried = Some((next, false));
                    next += 1;
                }
            }
            if notify {
                io.notify();
            }
            let mut answered = false;
            while let Some((lane, rsp)) = self.poll_lane()? {
                if rsp.status != 0 {
                    return Err(BlkError::Status(rsp.status));
                }
                if let Some((_, answered)) = &mut carries[lane] {
                    *answered = true;
                }
                answered = true;
            }
            while let Some(lane) = carries.iter().position(|&c| c == Some((done, true))) {
                io.data(lane, done);
                carries[lane] = None;
                done += 1;
            }
            if answered {
                idle = 0;
            } else if done < units {
                if idle == waits {
                    return Err(BlkError::Timeout);
                }
                io.wait();
                idle += 1;
            }
        }
        Ok(())
    }

    /// The ring's memory.
    pub fn memory(&self) -> &M {
        self.ring.memory()
    }

    /// Lane 0's data pages' grants.
    #[must_use]
    pub fn grefs(&self) -> [u32; DATA_PAGES] {
        self.lanes[0].grefs
    }
}

/// What [`BlkFront::read_stream`] asks of its caller.
pub trait StreamIo {
    /// Notifies the back end.
    fn notify(&mut self);
    /// Sleeps until the back end may have answered.
    fn wait(&mut self);
    /// Takes unit `unit`, which lane `lane`'s data pages hold.
    fn data(&mut self, lane: usize, unit: u64);
}

/// What a front end offers and uses of what the back end offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Features {
    /// Offer `feature-persistent`.
    pub persistent: bool,
    /// Use indirect requests when the back end offers enough segments.
    pub indirect: bool,
}

impl Features {
    /// Everything.
    pub const ALL: Features = Features {
        persistent: true,
        indirect: true,
    };
    /// Nothing: a front end as plain as `blkif.h`'s first version.
    pub const PLAIN: Features = Features {
        persistent: false,
        indirect: false,
    };
}

/// What the back end publishes about the disk.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DiskInfo {
    /// Size in 512-byte sectors.
    pub sectors: u64,
    /// Logical sector size.
    pub sector_size: u32,
    /// `VDISK_*` bits.
    pub info: u32,
    /// `feature-flush-cache` is 1.
    pub flush: bool,
    /// `feature-discard` is 1.
    pub discard: bool,
    /// `feature-max-indirect-segments` (0: absent).
    pub max_indirect: u64,
}

/// The front end's side of the `vbd` handshake.
pub mod handshake {
    use super::*;

    /// `<dir>/<key>` in `buf`.
    fn path<'b>(dir: &str, key: &str, buf: &'b mut [u8; 128]) -> Result<&'b str, BlkError> {
        join(dir, key, buf).ok_or(BlkError::Handshake("path too long"))
    }

    /// Reads `<dir>/<key>` into `buf`.
    ///
    /// # Errors
    /// The read failed.
    pub fn read<'b, R: ClientRing>(
        xb: &mut Xenbus<R>,
        dir: &str,
        key: &str,
        buf: &'b mut [u8],
    ) -> Result<&'b [u8], BlkError> {
        let mut p = [0u8; 128];
        let n = xb.read(0, path(dir, key, &mut p)?, buf)?;
        Ok(&buf[..n])
    }

    /// Reads `<dir>/<key>` as a decimal number.
    ///
    /// # Errors
    /// The read failed or the value is not a number.
    pub fn number<R: ClientRing>(
        xb: &mut Xenbus<R>,
        dir: &str,
        key: &str,
    ) -> Result<u64, BlkError> {
        let mut buf = [0u8; 24];
        let value = read(xb, dir, key, &mut buf)?;
        core::str::from_utf8(value)
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or(BlkError::Handshake("a number key is not a number"))
    }

    /// Publishes `ring-ref`, `event-channel`, `protocol` and, if
    /// `persistent`, `feature-persistent` (the front end keeps its data
    /// pages granted for as long as it is connected, so the back end may
    /// keep them mapped) in one transaction (retried on `EAGAIN`) and
    /// switches the front end (`dir`) to `Initialised`.
    ///
    /// # Errors
    /// A xenstore request failed.
    pub fn publish<R: ClientRing>(
        xb: &mut Xenbus<R>,
        dir: &str,
        ring_ref: u32,
        port: u32,
        persistent: bool,
    ) -> Result<(), BlkError> {
        let mut digits = [0u8; 10];
        loop {
            let tx = xb.transaction_start()?;
            let mut p = [0u8; 128];
            xb.write(
                tx,
                path(dir, keys::RING_REF, &mut p)?,
                decimal(ring_ref, &mut digits),
            )?;
            xb.write(
                tx,
                path(dir, keys::EVENT_CHANNEL, &mut p)?,
                decimal(port, &mut digits),
            )?;
            xb.write(
                tx,
                path(dir, keys::PROTOCOL, &mut p)?,
                PROTOCOL_X86_64.as_bytes(),
            )?;
            if persistent {
                xb.write(tx, path(dir, keys::FEATURE_PERSISTENT, &mut p)?, b"1")?;
            }
            xb.set_state(tx, dir, XenbusState::Initialised)?;
            match xb.transaction_end(tx, true) {
                Err(e) if e == XenbusError::store("EAGAIN") => {}
                other => return other.map_err(BlkError::from),
            }
        }
    }

    /// Waits (watching `<back>/state`) until the back end is in `want`;
    /// a back end that closes instead is an error.
    ///
    /// # Errors
    /// The back end closed, or xenstore failed or timed out.
    pub fn wait_for<R: ClientRing>(
        xb: &mut Xenbus<R>,
        back: &str,
        want: XenbusState,
    ) -> Result<(), BlkError> {
        let closed = |s| matches!(s, XenbusState::Closing | XenbusState::Closed);
        match wait_until(xb, back, |s| s == want || closed(s))? {
            s if s == want => Ok(()),
            _ => Err(BlkError::Handshake("the back end closed")),
        }
    }

    /// Waits (watching `<back>/state`) until the back end's state
    /// satisfies `done`, and returns it.
    ///
    /// # Errors
    /// Xenstore failed or timed out.
    pub fn wait_until<R: ClientRing>(
        xb: &mut Xenbus<R>,
        back: &str,
        done: impl FnMut(XenbusState) -> bool,
    ) -> Result<XenbusState, BlkError> {
        Ok(xb.wait_state(back, "blkfront", done)?)
    }

    /// The front end directory of device `devid`, relative to the
    /// domain's home (`device/vbd/<devid>`), in `buf`.
    ///
    /// # Errors
    /// Never in practice (the buffer fits every `u32`).
    pub fn front_dir(devid: u32, buf: &mut [u8; 24]) -> Result<&str, BlkError> {
        let prefix = b"device/vbd/";
        buf[..prefix.len()].copy_from_slice(prefix);
        let mut digits = [0u8; 10];
        let digits = decimal(devid, &mut digits);
        let len = prefix.len() + digits.len();
        buf[prefix.len()..len].copy_from_slice(digits);
        core::str::from_utf8(&buf[..len]).map_err(|_| BlkError::Handshake("device path"))
    }

    /// Waits (watching `device/vbd`) until the toolstack has written the
    /// front end directory `dir` of a hot-plugged disk (its `state` is
    /// `Initialising`), at most `tries` watch events or store timeouts.
    ///
    /// # Errors
    /// The device did not appear, or xenstore failed.
    pub fn wait_for_device<R: ClientRing>(
        xb: &mut Xenbus<R>,
        dir: &str,
        tries: u32,
    ) -> Result<(), BlkError> {
        const TOKEN: &str = "blkfront-hotplug";
        xb.watch("device/vbd", TOKEN)?;
        let mut result = Err(BlkError::Handshake("no such device"));
        for _ in 0..tries {
            if xb.state(0, dir) == Ok(XenbusState::Initialising) {
                result = Ok(());
                break;
            }
            let mut event = [0u8; 160];
            match xb.wait_event(&mut event) {
                Ok(_) | Err(XenbusError::Timeout) => {}
                Err(e) => {
                    result = Err(e.into());
                    break;
                }
            }
        }
        let _ = xb.unwatch("device/vbd", TOKEN);
        result
    }

    /// The front end's side of closing (`dir`, back end `back`), whoever
    /// started it: unless the back end is already closing, the front end
    /// goes `Closing` and waits for the back end's `Closing`; then it goes
    /// `Closed` and waits for the back end's `Closed` (by then the back
    /// end has unmapped the ring, so the front end may take its pages
    /// back). A back end directory the toolstack removed meanwhile (the
    /// read is refused: `ENOENT`, or `EACCES` once its parent is gone too)
    /// counts as `Closed`: the toolstack removes it only once closed.
    ///
    /// # Errors
    /// Xenstore failed or timed out.
    pub fn close<R: ClientRing>(xb: &mut Xenbus<R>, dir: &str, back: &str) -> Result<(), BlkError> {
        let closing = |s| matches!(s, XenbusState::Closing | XenbusState::Closed);
        if !closing(xb.state(0, back)?) {
            xb.set_state(0, dir, XenbusState::Closing)?;
            wait_until(xb, back, closing)?;
        }
        xb.set_state(0, dir, XenbusState::Closed)?;
        match wait_until(xb, back, |s| s == XenbusState::Closed) {
            Err(BlkError::Xenbus(e))
                if e == XenbusError::store("ENOENT") || e == XenbusError::store("EACCES") =>
            {
                Ok(())
            }
            other => other.map(|_| ()),
        }
    }

    /// What the connected back end publishes.
    ///
    /// # Errors
    /// A key is missing or malformed.
    pub fn disk_info<R: ClientRing>(xb: &mut Xenbus<R>, back: &str) -> Result<DiskInfo, BlkError> {
        let small = |v: u64| u32::try_from(v).map_err(|_| BlkError::Handshake("value too large"));
        Ok(DiskInfo {
            sectors: number(xb, back, keys::SECTORS)?,
            sector_size: small(number(xb, back, keys::SECTOR_SIZE)?)?,
            info: small(number(xb, back, keys::INFO)?)?,
            flush: number(xb, back, keys::FEATURE_FLUSH_CACHE).unwrap_or(0) == 1,
            discard: number(xb, back, keys::FEATURE_DISCARD).unwrap_or(0) == 1,
            max_indirect: number(xb, back, keys::FEATURE_MAX_INDIRECT_SEGMENTS).unwrap_or(0),
        })
    }
}

#[cfg(target_os = "none")]
pub use disk::{Disk, Windows};

#[cfg(target_os = "none")]
mod disk {

    use dom0_abi::blkif::{BlkifOp, BlkifRequest, BlkifRequestDiscard, BlkifResponse, keys};
    use dom0_abi::event_channel::EvtchnAllocUnbound;
    use dom0_abi::types::DomId;
    use dom0_abi::xenstore::XenbusState;

    use super::{
        BlkError, BlkFront, DATA_PAGES, DiskInfo, Features, MAX_LANES, MAX_REQUEST_BYTES,
        PAGE_BYTES, SECTOR_BYTES, StreamIo, handshake,
    };
    use crate::ring::WindowMemory;
    use crate::xenbus::{ClientRing, Xenbus};
    use crate::{hypercall, mm, shared};

    /// The shim windows a [`Disk`] uses: `first` maps its grant table's
    /// first frame, `first + 1` the ring, `first + 2 ..= first + 17` the
    /// data pages, `first + 18` the indirect page. The page in window `w`
    /// is granted as reference
    /// `8 + w` (below 8 are the toolstack's; netfront's start above
    /// `8 + mm::WINDOW_COUNT`), so disks on separate windows use separate
    /// references.
    #[derive(Clone, Copy, Debug)]
    pub struct Windows {
        /// The first of [`Windows::COUNT`] windows.
        pub first: usize,
    }

    impl Windows {
        /// Windows a disk uses.
        pub const COUNT: usize = DATA_PAGES + 3;
        /// Windows each lane added with [`Disk::add_lanes`] uses: its data
        /// pages, then its indirect page.
        pub const LANE: usize = DATA_PAGES + 1;

        /// The window of the indirect page.
        fn indirect(self) -> usize {
            self.first + 2 + DATA_PAGES
        }

        /// The grant reference of the page in window `window`.
        fn gref(window: usize) -> Result<u32, BlkError> {
            u32::try_from(window + 8).map_err(|_| BlkError::Handshake("window"))
        }
    }
    /// Wake-ups in a row that bring no response before a request times
    /// out. The wait arms no timer: under `-icount` an idle CPU jumps the
    /// clock to the next deadline at once, so a timeout in system time
    /// would fire while dom0 still serves the request. The back end
    /// notifies once per batch of responses, so the steady state is one
    /// wake-up per request.
    const WAITS: u32 = 64;

    /// A connected virtual block device.
    pub struct Disk {
        front: BlkFront<WindowMemory>,
        windows: Windows,
        devid: u32,
        port: u32,
        /// What the back end published.
        pub info: DiskInfo,
        /// The back end's directory (`backend_len` bytes).
        backend: [u8; 96],
        backend_len: usize,
        /// The first window of the lanes added ([`Disk::add_lanes`]).
        lanes_first: usize,
    }

    /// Grants frame `mfn` as reference `gref` to domain 0, writable.
    fn grant(table: usize, gref: u32, mfn: u64) -> Result<(), BlkError> {
        let frame = u32::try_from(mfn).map_err(|_| BlkError::Hypercall("grant frame", -1))?;
        mm::grant_access(table, gref, 0, frame, false);
        Ok(())
    }

    fn check(op: &'static str, ret: i64) -> Result<(), BlkError> {
        if ret == 0 {
            Ok(())
        } else {
            Err(BlkError::Hypercall(op, ret))
        }
    }

    /// [`Disk::read_stream`]'s side of [`BlkFront::read_stream`].
    struct Stream<'b, F> {
        port: u32,
        /// Per lane, the window of its first data page (the others follow).
        windows: [usize; MAX_LANES],
        buf: &'b mut [u8],
        each: F,
    }

    impl<F: FnMut(u64, &[u8])> StreamIo for Stream<'_, F> {
        fn notify(&mut self) {
            hypercall::evtchn_send(self.port);
        }
        fn wait(&mut self) {
            hypercall::sched_poll(&[self.port], 0);
            shared::clear_evtchn_pending(self.port);
        }
        fn data(&mut self, lane: usize, unit: u64) {
            for (i, chunk) in self.buf.chunks_mut(PAGE_BYTES).enumerate() {
                mm::window_read_bytes(self.windows[lane] + i, 0, chunk);
            }
            (self.each)(unit, self.buf);
        }
    }

    impl Disk {
        /// Connects the device `device/vbd/<devid>` of this domain:
        /// grants, event channel, handshake (`shared_info` must be
        /// mapped: waiting clears the port's pending bit there), offering
        /// and using what `features` allows.
        ///
        /// # Errors
        /// What failed.
        pub fn connect<R: ClientRing>(
            xb: &mut Xenbus<R>,
            devid: u32,
            windows: Windows,
            features: Features,
        ) -> Result<Disk, BlkError> {
            let mut dir_buf = [0u8; 24];
            let dir = handshake::front_dir(devid, &mut dir_buf)?;
            let mut backend = [0u8; 96];
            let backend_len = handshake::read(xb, dir, keys::BACKEND, &mut backend)?.len();
            let back = core::str::from_utf8(&backend[..backend_len])
                .map_err(|_| BlkError::Handshake("backend"))?;
            if xb.state(0, dir)? != XenbusState::Initialising {
                return Err(BlkError::Handshake("front end not Initialising"));
            }
            let table = windows.first;
            mm::map_own_grant_table(table).map_err(|(op, ret)| BlkError::Hypercall(op, ret))?;
            let mut grefs = [0u32; DATA_PAGES];
            let ring_frame = mm::alloc_frame().ok_or(BlkError::Hypercall("ring frame", -12))?;
            check(
                "map ring",
                mm::map_window(windows.first + 1, ring_frame.mfn, mm::PTE_RW),
            )?;
            let ring_ref = Windows::gref(windows.first + 1)?;
            grant(table, ring_ref, ring_frame.mfn)?;
            for (i, gref) in grefs.iter_mut().enumerate() {
                let window = windows.first + 2 + i;
                let frame = mm::alloc_frame().ok_or(BlkError::Hypercall("data frame", -12))?;
                check(
                    "map data page",
                    mm::map_window(window, frame.mfn, mm::PTE_RW),
                )?;
                *gref = Windows::gref(window)?;
                grant(table, *gref, frame.mfn)?;
            }
            let indirect = mm::alloc_frame().ok_or(BlkError::Hypercall("indirect frame", -12))?;
            check(
                "map the indirect page",
                mm::map_window(windows.indirect(), indirect.mfn, mm::PTE_RW),
            )?;
            let indirect_ref = Windows::gref(windows.indirect())?;
            grant(table, indirect_ref, indirect.mfn)?;
            let mut front = BlkFront::new(WindowMemory::new(windows.first + 1), grefs);
            let mut unbound = EvtchnAllocUnbound {
                dom: DomId::SELF.0,
                remote_dom: 0,
                port: 0,
            };
            check(
                "alloc_unbound",
                hypercall::evtchn_alloc_unbound(&mut unbound),
            )?;
            handshake::wait_for(xb, back, XenbusState::InitWait)?;
            handshake::publish(xb, dir, ring_ref, unbound.port, features.persistent)?;
            handshake::wait_for(xb, back, XenbusState::Connected)?;
            let info = handshake::disk_info(xb, back)?;
            if features.indirect && info.max_indirect >= DATA_PAGES as u64 {
                front.enable_indirect(WindowMemory::new(windows.indirect()), indirect_ref);
            }
            xb.set_state(0, dir, XenbusState::Connected)?;
            Ok(Disk {
                front,
                windows,
                devid,
                port: unbound.port,
                info,
                backend,
                backend_len,
                lanes_first: 0,
            })
        }

        /// Adds up to `count` lanes (each one more request in flight for
        /// [`Disk::read_stream`]), their pages in the [`Windows::LANE`]
        /// windows each from `first` on, granted as `8 + window` like the
        /// disk's own: only with indirect requests (a lane moves 64 KiB in
        /// one request), once, at most [`MAX_LANES`] lanes in all. The
        /// back end keeps every data page mapped (`feature-persistent`, up
        /// to 64 pages: the four lanes' own). Returns the lanes there are.
        ///
        /// # Errors
        /// The windows run past the last, or a frame or mapping failed
        /// (the lanes added until then stay).
        pub fn add_lanes(&mut self, first: usize, count: usize) -> Result<usize, BlkError> {
            if self.front.max_bytes() < MAX_REQUEST_BYTES || self.front.lanes() > 1 {
                return Ok(self.front.lanes());
            }
            let count = count.min(MAX_LANES - 1);
            if first + count * Windows::LANE > mm::WINDOW_COUNT {
                return Err(BlkError::Handshake("lane windows"));
            }
            self.lanes_first = first;
            let table = self.windows.first;
            for lane in 0..count {
                let base = first + lane * Windows::LANE;
                let mut grefs = [0u32; DATA_PAGES];
                for (i, window) in (base..base + Windows::LANE).enumerate() {
                    let frame = mm::alloc_frame().ok_or(BlkError::Hypercall("lane frame", -12))?;
                    check(
                        "map a lane page",
                        mm::map_window(window, frame.mfn, mm::PTE_RW),
                    )?;
                    let gref = Windows::gref(window)?;
                    grant(table, gref, frame.mfn)?;
                    if let Some(data) = grefs.get_mut(i) {
                        *data = gref;
                    }
                }
                let indirect = base + DATA_PAGES;
                self.front
                    .add_lane(grefs, WindowMemory::new(indirect), Windows::gref(indirect)?);
            }
            Ok(self.front.lanes())
        }

        /// The window of lane `lane`'s data page `page`.
        fn data_window(&self, lane: usize, page: usize) -> usize {
            match lane {
                0 => self.windows.first + 2 + page,
                _ => self.lanes_first + (lane - 1) * Windows::LANE + page,
            }
        }

        /// Reads `units` units of `buf.len()` bytes (whole sectors, at most
        /// 64 KiB) from `sector` on, one request per unit with a request
        /// in flight on every lane ([`BlkFront::read_stream`]); each unit
        /// is copied into `buf` and handed to `each` with its number, in
        /// order. Units larger than one request moves (a back end
        /// without indirect requests) are read one at a time.
        ///
        /// # Errors
        /// As [`Disk::read`]; [`BlkError::Busy`] with a request in flight.
        pub fn read_stream(
            &mut self,
            sector: u64,
            units: u64,
            buf: &mut [u8],
            mut each: impl FnMut(u64, &[u8]),
        ) -> Result<(), BlkError> {
            if buf.len() > self.front.max_bytes() {
                let sectors = (buf.len() / SECTOR_BYTES) as u64;
                for unit in 0..units {
                    self.read(sector + unit * sectors, buf)?;
                    each(unit, buf);
                }
                return Ok(());
            }
            let windows: [usize; MAX_LANES] = core::array::from_fn(|l| self.data_window(l, 0));
            let bytes = buf.len();
            let mut io = Stream {
                port: self.port,
                windows,
                buf,
                each,
            };
            self.front.read_stream(sector, units, bytes, WAITS, &mut io)
        }

        /// Disconnects, whoever closes first (a back end going `Closing`
        /// is a hot-unplug): the handshake's [`handshake::close`], then
        /// the port is closed and the ring's and data pages' grants are
        /// ended (the back end has unmapped the ring by then).
        ///
        /// # Errors
        /// Xenstore failed or timed out; the pages then stay granted.
        pub fn close<R: ClientRing>(self, xb: &mut Xenbus<R>) -> Result<(), BlkError> {
            let mut dir_buf = [0u8; 24];
            let dir = handshake::front_dir(self.devid, &mut dir_buf)?;
            handshake::close(xb, dir, self.backend())?;
            hypercall::evtchn_close(self.port);
            let lanes = (self.front.lanes() - 1) * Windows::LANE;
            for window in (self.windows.first + 1..=self.windows.indirect())
                .chain(self.lanes_first..self.lanes_first + lanes)
            {
                mm::end_grant_access(self.windows.first, Windows::gref(window)?);
            }
            Ok(())
        }

        /// Sends `req` and waits for its response.
        ///
        /// # Errors
        /// The ring failed, or no response came in time.
        pub fn call(&mut self, req: &BlkifRequest) -> Result<BlkifResponse, BlkError> {
            if self.front.submit_raw(req)? {
                hypercall::evtchn_send(self.port);
            }
            self.wait()
        }

        /// Waits for the response to the request in flight: sleeps on the
        /// ring's port (no timeout) until it comes, giving up after
        /// [`WAITS`] wake-ups without one.
        fn wait(&mut self) -> Result<BlkifResponse, BlkError> {
            for _ in 0..WAITS {
                if let Some(rsp) = self.front.poll()? {
                    return Ok(rsp);
                }
                hypercall::sched_poll(&[self.port], 0);
                shared::clear_evtchn_pending(self.port);
            }
            self.front.poll()?.ok_or(BlkError::Timeout)
        }

        /// Moves `bytes` at `sector` with `op`; the data is in the data
        /// pages. One request, or two for more than 44 KiB when the back
        /// end has no indirect requests.
        fn io(&mut self, op: BlkifOp, sector: u64, bytes: usize) -> Result<(), BlkError> {
            if bytes > MAX_REQUEST_BYTES {
                return Err(BlkError::BadLength(bytes));
            }
            let step = self.front.max_bytes();
            let mut done = 0;
            loop {
                let n = (bytes - done).min(step);
                let at = sector + (done / SECTOR_BYTES) as u64;
                if self.front.submit_at(op, at, n, done / PAGE_BYTES)? {
                    hypercall::evtchn_send(self.port);
                }
                match self.wait()?.status {
                    0 => {}
                    s => return Err(BlkError::Status(s)),
                }
                done += n;
                if done >= bytes {
                    return Ok(());
                }
            }
        }

        /// The data pages' grants.
        #[must_use]
        pub fn grefs(&self) -> [u32; DATA_PAGES] {
            self.front.grefs()
        }

        /// Reads `buf.len()` bytes (whole sectors, at most 64 KiB) from
        /// `sector`.
        ///
        /// # Errors
        /// A bad length, the back end's error status, a broken ring.
        pub fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), BlkError> {
            self.io(BlkifOp::Read, sector, buf.len())?;
            for (i, chunk) in buf.chunks_mut(PAGE_BYTES).enumerate() {
                mm::window_read_bytes(self.windows.first + 2 + i, 0, chunk);
            }
            Ok(())
        }

        /// Writes `data` (whole sectors, at most 64 KiB) at `sector`.
        ///
        /// # Errors
        /// As [`Disk::read`].
        pub fn write(&mut self, sector: u64, data: &[u8]) -> Result<(), BlkError> {
            if data.len() > MAX_REQUEST_BYTES {
                return Err(BlkError::BadLength(data.len()));
            }
            for (i, chunk) in data.chunks(PAGE_BYTES).enumerate() {
                mm::window_write_bytes(self.windows.first + 2 + i, 0, chunk);
            }
            self.io(BlkifOp::Write, sector, data.len())
        }

        /// Flushes the disk's cache (`BLKIF_OP_FLUSH_DISKCACHE`, no data).
        ///
        /// # Errors
        /// As [`Disk::read`].
        pub fn flush(&mut self) -> Result<(), BlkError> {
            self.io(BlkifOp::FlushDiskcache, 0, 0)
        }

        /// Discards `count` sectors from `sector` (`BLKIF_OP_DISCARD`).
        ///
        /// # Errors
        /// As [`Disk::read`].
        pub fn discard(&mut self, sector: u64, count: u64) -> Result<(), BlkError> {
            let req = BlkifRequest::from_discard(&BlkifRequestDiscard {
                operation: BlkifOp::Discard as u8,
                flag: 0,
                handle: 0,
                id: sector,
                sector_number: sector,
                nr_sectors: count,
            });
            match self.call(&req)?.status {
                0 => Ok(()),
                s => Err(BlkError::Status(s)),
            }
        }

        /// The flags of data page `page`'s grant entry (the hypervisor
        /// marks it `GTF_reading`/`GTF_writing` while the back end maps
        /// it).
        #[must_use]
        pub fn data_grant_flags(&self, page: usize) -> u16 {
            let gref = Windows::gref(self.windows.first + 2 + page).unwrap_or(0);
            #[allow(clippy::cast_possible_truncation, reason = "the low half is the flags")]
            let flags = mm::window_read_u32(self.windows.first, u64::from(gref) * 8) as u16;
            flags
        }

        /// Ends data page `page`'s grant as a front end taking its page
        /// back would, whether or not the back end still maps it (a test
        /// front end that breaks the rules).
        pub fn revoke_data_grant(&self, page: usize) {
            if let Ok(gref) = Windows::gref(self.windows.first + 2 + page) {
                mm::end_grant_access(self.windows.first, gref);
            }
        }

        /// The ring's window (for a test front end that breaks the rules).
        #[must_use]
        pub fn ring_window(&self) -> usize {
            self.windows.first + 1
        }

        /// The back end's xenstore directory.
        #[must_use]
        pub fn backend(&self) -> &str {
            core::str::from_utf8(&self.backend[..self.backend_len]).unwrap_or("")
        }

        /// The event channel's port.
        #[must_use]
        pub fn port(&self) -> u32 {
            self.port
        }
    }
}
