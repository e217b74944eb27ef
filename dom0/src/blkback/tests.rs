//! The back end's checks, and the shim's front end against it over an
//! in-memory ring and in-memory "grants".

#![allow(
    clippy::cast_possible_truncation,
    reason = "test sizes, indices and patterns are small or truncated on purpose"
)]

extern crate std;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::vec;
use std::vec::Vec;

use dom0_abi::blkif::{BlkifRequestSegment, RING_SLOTS};
use dom0_abi::ring::REQ_PROD;
use dom0_abi::wire::Wire;
use guest_pv_shim::blkfront::{BlkError, BlkFront, DATA_PAGES};
use proptest::prelude::*;

use super::*;

/// The ring page both ends share.
type Page = guest_pv_shim::ring::SharedPage;

/// The front end's granted pages, by reference, and the back end's
/// bounce pages: what `GNTTABOP_copy` moves between.
#[derive(Clone, Default)]
struct Grants(Rc<RefCell<BTreeMap<u32, [u8; PAGE_BYTES]>>>);

struct Copier {
    grants: Grants,
    bounce: Vec<[u8; PAGE_BYTES]>,
    copies: usize,
    /// Persistent grants offered: `direct` answers, with "machine
    /// addresses" `gref << 12 | offset`.
    persistent: bool,
    /// The grants mapped for direct I/O.
    mapped: BTreeSet<u32>,
}

impl Copier {
    fn new(grants: Grants) -> Copier {
        Copier {
            grants,
            bounce: vec![[0u8; PAGE_BYTES]; MAX_REQUEST_SEGMENTS],
            copies: 0,
            persistent: false,
            mapped: BTreeSet::new(),
        }
    }
}

/// A RAM disk that moves data "by DMA" into the grants the addresses of
/// [`Copier::direct`] name.
struct DmaDisk {
    ram: RamDisk,
    grants: Grants,
    transfers: usize,
}

impl DmaDisk {
    fn transfer(&mut self, sector: u64, pieces: &[Piece], write: bool) -> Result<(), DeviceError> {
        self.transfers += 1;
        let mut at = sector;
        for piece in pieces {
            let (gref, offset) = ((piece.bus >> 12) as u32, (piece.bus & 0xFFF) as usize);
            let mut grants = self.grants.0.borrow_mut();
            let page = grants
                .get_mut(&gref)
                .ok_or(DeviceError("unmapped address"))?;
            let bytes = &mut page[offset..offset + piece.len as usize];
            if write {
                self.ram.write(at, bytes)?;
            } else {
                self.ram.read(at, bytes)?;
            }
            at += u64::from(piece.len) / 512;
        }
        Ok(())
    }
}

impl BlockDevice for DmaDisk {
    fn sectors(&self) -> u64 {
        self.ram.sectors()
    }
    fn writable(&self) -> bool {
        self.ram.writable()
    }
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        self.ram.read(sector, buf)
    }
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), DeviceError> {
        self.ram.write(sector, buf)
    }
    fn flush(&mut self) -> Result<(), DeviceError> {
        Ok(())
    }
    fn direct(&self) -> bool {
        true
    }
    fn read_direct(&mut self, sector: u64, pieces: &[Piece]) -> Result<(), DeviceError> {
        self.transfer(sector, pieces, false)
    }
    fn write_direct(&mut self, sector: u64, pieces: &[Piece]) -> Result<(), DeviceError> {
        self.transfer(sector, pieces, true)
    }
}

/// `GNTST_bad_gntref`.
const BAD_GNTREF: i16 = -4;

impl Pages for Copier {
    fn gather(&mut self, segments: &[Segment]) -> Result<(), CopyError> {
        let grants = self.grants.0.borrow();
        for (index, seg) in segments.iter().enumerate() {
            let page = grants.get(&seg.gref).ok_or(CopyError {
                index,
                status: BAD_GNTREF,
            })?;
            self.bounce[index][seg.bytes()].copy_from_slice(&page[seg.bytes()]);
            self.copies += 1;
        }
        Ok(())
    }
    fn scatter(&mut self, segments: &[Segment]) -> Result<(), CopyError> {
        let mut grants = self.grants.0.borrow_mut();
        for (index, seg) in segments.iter().enumerate() {
            let page = grants.get_mut(&seg.gref).ok_or(CopyError {
                index,
                status: BAD_GNTREF,
            })?;
            page[seg.bytes()].copy_from_slice(&self.bounce[index][seg.bytes()]);
            self.copies += 1;
        }
        Ok(())
    }
    fn bounces(&mut self) -> &mut [u8] {
        self.bounce.as_flattened_mut()
    }
    fn indirect(
        &mut self,
        grefs: &[u32],
        out: &mut [BlkifRequestSegment],
    ) -> Result<(), CopyError> {
        let grants = self.grants.0.borrow();
        for (index, (gref, segs)) in grefs
            .iter()
            .zip(out.chunks_mut(SEGMENTS_PER_INDIRECT_PAGE))
            .enumerate()
        {
            let page = grants.get(gref).ok_or(CopyError {
                index,
                status: BAD_GNTREF,
            })?;
            for (seg, raw) in segs.iter_mut().zip(page.chunks_exact(8)) {
                *seg = BlkifRequestSegment::from_wire(raw).unwrap();
            }
            self.copies += 1;
        }
        Ok(())
    }
    fn direct(
        &mut self,
        segments: &[Segment],
    ) -> Result<Option<[Piece; MAX_REQUEST_SEGMENTS]>, CopyError> {
        if !self.persistent {
            return Ok(None);
        }
        let mut pieces = [Piece::default(); MAX_REQUEST_SEGMENTS];
        for (index, (seg, piece)) in segments.iter().zip(&mut pieces).enumerate() {
            if !self.grants.0.borrow().contains_key(&seg.gref) {
                return Err(CopyError {
                    index,
                    status: BAD_GNTREF,
                });
            }
            self.mapped.insert(seg.gref);
            *piece = Piece {
                bus: (u64::from(seg.gref) << 12) | u64::from(seg.offset),
                len: u32::from(seg.len),
            };
        }
        Ok(Some(pieces))
    }
}

/// Puts the segments `segs` (grant, first, last) in grant `page` as an
/// indirect page.
fn indirect_page(grants: &Grants, page: u32, segs: &[(u32, u8, u8)]) {
    let mut bytes = [0u8; PAGE_BYTES];
    for (raw, &(gref, first_sect, last_sect)) in bytes.chunks_exact_mut(8).zip(segs) {
        let seg = BlkifRequestSegment {
            gref,
            first_sect,
            last_sect,
            pad: 0,
        };
        seg.to_wire(raw).unwrap();
    }
    grants.0.borrow_mut().insert(page, bytes);
}

/// An indirect request of `op` with `count` segments in pages `pages`.
fn indirect_request(op: BlkifOp, sector: u64, count: u16, pages: &[u32]) -> BlkifRequest {
    let mut indirect_grefs = [0; dom0_abi::blkif::MAX_INDIRECT_PAGES];
    indirect_grefs[..pages.len()].copy_from_slice(pages);
    BlkifRequest::from_indirect(&BlkifRequestIndirect {
        operation: BlkifOp::Indirect as u8,
        indirect_op: op as u8,
        nr_segments: count,
        id: 99,
        sector_number: sector,
        handle: 0,
        pad: 0,
        indirect_grefs,
    })
}

/// A front end with 11 granted pages (references 10..21), a back end on a
/// RAM disk of `sectors`, and what they share.
struct Rig {
    front: BlkFront<Page>,
    back: BlkRing<Page>,
    disk: RamDisk,
    copier: Copier,
    grants: Grants,
    page: Page,
}

impl Rig {
    fn new(sectors: u64, writable: bool) -> Rig {
        let page = Page::new(4096, 0x5a);
        let grefs: [u32; DATA_PAGES] = core::array::from_fn(|i| 10 + i as u32);
        let grants = Grants::default();
        for &g in &grefs {
            grants.0.borrow_mut().insert(g, [0; PAGE_BYTES]);
        }
        Rig {
            front: BlkFront::new(page.clone(), grefs),
            back: BlkRing::attach(page.clone()),
            disk: RamDisk::new(sectors * 512, writable).unwrap(),
            copier: Copier::new(grants.clone()),
            grants,
            page,
        }
    }

    /// The front end's data pages as one buffer.
    fn set_data(&self, data: &[u8]) {
        let mut grants = self.grants.0.borrow_mut();
        for (i, chunk) in data.chunks(PAGE_BYTES).enumerate() {
            grants.get_mut(&(10 + i as u32)).unwrap()[..chunk.len()].copy_from_slice(chunk);
        }
    }

    fn data(&self, len: usize) -> Vec<u8> {
        let grants = self.grants.0.borrow();
        (0..len.div_ceil(PAGE_BYTES))
            .flat_map(|i| grants[&(10 + i as u32)])
            .take(len)
            .collect()
    }

    /// One request through both ends: its status.
    fn run(&mut self, op: BlkifOp, sector: u64, bytes: usize) -> Result<i16, BlkError> {
        let notify = self.front.submit(op, sector, bytes)?;
        assert!(notify, "the back end armed its event");
        self.serve();
        Ok(self.front.poll()?.expect("a response").status)
    }

    fn raw(&mut self, req: &BlkifRequest) -> BlkifResponse {
        self.front.submit_raw(req).unwrap();
        self.serve();
        self.front.poll().unwrap().expect("a response")
    }

    fn serve(&mut self) -> Round {
        self.back
            .serve(&mut self.disk, &mut self.copier, RING_SLOTS)
            .unwrap()
    }
}

fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The limits of a disk of `sectors` that discards when writable.
fn lim(sectors: u64, writable: bool) -> Limits {
    Limits {
        sectors,
        writable,
        discard: writable,
    }
}

fn rw_request(op: BlkifOp, sector: u64, segs: &[(u32, u8, u8)]) -> BlkifRequest {
    BlkifRequest::new(op as u8, 77, sector, segs)
}

#[test]
fn decode_checks_every_field() {
    let ok = rw_request(BlkifOp::Write, 6, &[(1, 2, 7), (2, 0, 0)]);
    let d = decode(&ok, lim(13, true)).unwrap();
    assert_eq!(d.kind, Kind::Write);
    assert_eq!(
        d.segments(),
        [
            Segment {
                gref: 1,
                offset: 1024,
                len: 3072,
                sector: 6
            },
            Segment {
                gref: 2,
                offset: 0,
                len: 512,
                sector: 12
            },
        ]
    );
    assert_eq!(
        decode(&ok, lim(12, true)),
        Err(Reject::PastEnd {
            sector: 6,
            count: 7
        })
    );
    assert_eq!(decode(&ok, lim(13, false)), Err(Reject::ReadOnly));
    let read = BlkifRequest {
        operation: BlkifOp::Read as u8,
        ..ok
    };
    assert_eq!(
        decode(&read, lim(13, false)).map(|d| d.kind),
        Ok(Kind::Read)
    );
    let none = rw_request(BlkifOp::Read, 0, &[]);
    assert_eq!(decode(&none, lim(8, true)), Err(Reject::NoSegments));
    let flush = rw_request(BlkifOp::FlushDiskcache, 0, &[]);
    assert_eq!(decode(&flush, lim(8, true)).map(|d| d.count), Ok(0));
    let barrier = rw_request(BlkifOp::WriteBarrier, 0, &[(1, 0, 7)]);
    assert_eq!(
        decode(&barrier, lim(8, true)).map(|d| d.kind),
        Ok(Kind::FlushWrite)
    );
    let twelve = BlkifRequest {
        nr_segments: 12,
        ..read
    };
    assert_eq!(
        decode(&twelve, lim(1 << 20, true)),
        Err(Reject::TooManySegments(12))
    );
    let reversed = rw_request(BlkifOp::Read, 0, &[(1, 0, 7), (1, 5, 4)]);
    assert_eq!(
        decode(&reversed, lim(64, true)),
        Err(Reject::BadSectors {
            index: 1,
            first: 5,
            last: 4
        })
    );
    let past_page = rw_request(BlkifOp::Read, 0, &[(1, 0, 8)]);
    assert!(matches!(
        decode(&past_page, lim(64, true)),
        Err(Reject::BadSectors { last: 8, .. })
    ));
    let wrap = rw_request(BlkifOp::Read, u64::MAX - 1, &[(1, 0, 7)]);
    assert!(matches!(
        decode(&wrap, lim(u64::MAX, true)),
        Err(Reject::PastEnd { .. })
    ));
    for op in [4u8, 6, 7, 255] {
        let req = BlkifRequest {
            operation: op,
            ..ok
        };
        let reject = decode(&req, lim(64, true)).unwrap_err();
        assert_eq!(reject, Reject::Unsupported(op));
        assert_eq!(reject.status(), BLKIF_RSP_EOPNOTSUPP);
    }
    assert_eq!(Reject::NoSegments.status(), BLKIF_RSP_ERROR);
}

proptest! {
    #[test]
    fn decode_accepts_exactly_the_valid_requests(
        op in 0u8..8,
        nr in 0u8..14,
        sector in prop_oneof![0u64..64, any::<u64>()],
        segs in proptest::array::uniform11((any::<u32>(), 0u8..10, 0u8..10)),
        sectors in 0u64..128,
        writable in any::<bool>(),
    ) {
        let mut req = BlkifRequest {
            operation: op,
            nr_segments: nr,
            id: 5,
            sector_number: sector,
            ..BlkifRequest::default()
        };
        for (slot, (gref, first_sect, last_sect)) in req.seg.iter_mut().zip(segs) {
            *slot = BlkifRequestSegment { gref, first_sect, last_sect, pad: 0 };
        }
        let count = usize::from(nr).min(MAX_SEGMENTS);
        let used = &segs[..count];
        let in_page = used.iter().all(|&(_, f, l)| f <= l && l < 8);
        let total: u64 = used.iter().map(|&(_, f, l)| u64::from(l.saturating_sub(f)) + 1).sum();
        let discard = req.as_discard();
        let valid = if op == 5 {
            writable
                && discard.flag & 1 == 0
                && sector.checked_add(discard.nr_sectors).is_some_and(|end| end <= sectors)
        } else {
            op <= 3
                && usize::from(nr) <= MAX_SEGMENTS
                && (nr > 0 || op >= 2)
                && (op == 0 || writable)
                && in_page
                && sector.checked_add(total).is_some_and(|end| end <= sectors)
        };
        match decode(&req, lim(sectors, writable)) {
            Ok(d) if op == 5 => {
                prop_assert!(valid);
                prop_assert_eq!((d.kind, d.sector, d.length), (Kind::Discard, sector, discard.nr_sectors));
            }
            Ok(d) => {
                prop_assert!(valid);
                prop_assert_eq!(d.sector, sector);
                let mut next = sector;
                for seg in d.segments() {
                    prop_assert_eq!(seg.sector, next);
                    prop_assert!(seg.bytes().end <= PAGE_BYTES);
                    prop_assert!(seg.len > 0 && seg.len % 512 == 0);
                    next += u64::from(seg.len / 512);
                }
                prop_assert!(next <= sectors);
                prop_assert_eq!(d.length, next - sector);
            }
            Err(_) => prop_assert!(!valid),
        }
    }

    #[test]
    fn front_end_data_round_trips(ops in proptest::collection::vec((0u64..200, 1usize..=88), 1..12)) {
        let mut rig = Rig::new(300, true);
        let mut model = vec![0u8; 300 * 512];
        for (i, &(sector, n)) in ops.iter().enumerate() {
            let bytes = n * 512;
            let fits = sector + n as u64 <= 300;
            let data = pattern(i as u64 + 1, bytes);
            rig.set_data(&data);
            let status = rig.run(BlkifOp::Write, sector, bytes).unwrap();
            prop_assert_eq!(status, if fits { BLKIF_RSP_OKAY } else { BLKIF_RSP_ERROR });
            if fits {
                let at = sector as usize * 512;
                model[at..at + bytes].copy_from_slice(&data);
            }
            rig.set_data(&vec![0xEE; bytes]);
            let status = rig.run(BlkifOp::Read, sector, bytes).unwrap();
            if fits {
                prop_assert_eq!(status, BLKIF_RSP_OKAY);
                let at = sector as usize * 512;
                prop_assert_eq!(rig.data(bytes), &model[at..at + bytes]);
            }
        }
        prop_assert_eq!(rig.run(BlkifOp::FlushDiskcache, 0, 0).unwrap(), BLKIF_RSP_OKAY);
    }
}

#[test]
fn contiguous_whole_pages_move_in_one_run() {
    let seg = |offset: u16, len: u16, sector: u64| Segment {
        gref: 0,
        offset,
        len,
        sector,
    };
    // Three whole pages, then a page's first half, then (not contiguous
    // in the bounce pages) a page ending at its end followed by the next
    // sector at a page start, then a jump.
    let segments = [
        seg(0, 4096, 0),
        seg(0, 4096, 8),
        seg(0, 4096, 16),
        seg(0, 2048, 24),
        seg(0, 512, 28),
        seg(3584, 512, 29),
        seg(0, 512, 30),
        seg(0, 512, 40),
    ];
    let runs: Vec<_> = runs(&segments).collect();
    assert_eq!(runs, [0..4, 4..5, 5..7, 7..8]);
    assert_eq!(span(&segments, 0..4), 0..3 * 4096 + 2048);
    assert_eq!(span(&segments, 5..7), 5 * 4096 + 3584..6 * 4096 + 512);
    assert_eq!(runs_of(&[]), 0);
    // A request's data reaches the right sectors through the runs.
    let grants = Grants::default();
    let mut data = vec![0u8; 3 * PAGE_BYTES];
    data.iter_mut()
        .enumerate()
        .for_each(|(i, b)| *b = (i / 512) as u8);
    for (i, page) in data.chunks(PAGE_BYTES).enumerate() {
        grants
            .0
            .borrow_mut()
            .insert(i as u32, page.try_into().unwrap());
    }
    let mut disk = RamDisk::new(64 * 512, true).unwrap();
    let mut pages = Copier::new(grants);
    let req = rw_request(BlkifOp::Write, 4, &[(0, 0, 7), (1, 0, 7), (2, 0, 3)]);
    assert_eq!(serve(&req, &mut disk, &mut pages), Outcome::Done);
    let mut back = vec![0u8; 20 * 512];
    disk.read(4, &mut back).unwrap();
    assert_eq!(back, data[..20 * 512]);
}

fn runs_of(segments: &[Segment]) -> usize {
    runs(segments).count()
}

#[test]
fn discard_zeroes_a_range_of_a_writable_disk() {
    use dom0_abi::blkif::{BLKIF_DISCARD_SECURE, BlkifRequestDiscard};
    let mut rig = Rig::new(64, true);
    rig.set_data(&pattern(3, 8 * 512));
    assert_eq!(rig.run(BlkifOp::Write, 0, 8 * 512).unwrap(), BLKIF_RSP_OKAY);
    let discard = |sector, nr_sectors, flag| {
        BlkifRequest::from_discard(&BlkifRequestDiscard {
            operation: BlkifOp::Discard as u8,
            flag,
            handle: 0,
            id: 4,
            sector_number: sector,
            nr_sectors,
        })
    };
    assert_eq!(rig.raw(&discard(2, 3, 0)).status, BLKIF_RSP_OKAY);
    assert_eq!(rig.run(BlkifOp::Read, 0, 8 * 512).unwrap(), BLKIF_RSP_OKAY);
    let mut want = pattern(3, 8 * 512);
    want[2 * 512..5 * 512].fill(0);
    assert_eq!(rig.data(8 * 512), want);
    assert_eq!(rig.raw(&discard(60, 5, 0)).status, BLKIF_RSP_ERROR);
    assert_eq!(rig.raw(&discard(1, u64::MAX, 0)).status, BLKIF_RSP_ERROR);
    let secure = rig.raw(&discard(0, 1, BLKIF_DISCARD_SECURE));
    assert_eq!(secure.status, BLKIF_RSP_EOPNOTSUPP);
    let keys = connected_keys(&rig.disk);
    assert!(keys.contains(&(dom0_abi::blkif::keys::FEATURE_DISCARD, "1".into())));
    let read_only = RamDisk::new(4096, false).unwrap();
    assert!(!Limits::of(&read_only).discard);
    assert_eq!(connected_keys(&read_only).len(), 8);
}

#[test]
fn a_bad_grant_fails_only_its_request() {
    let mut rig = Rig::new(64, true);
    let good = rw_request(BlkifOp::Write, 0, &[(10, 0, 7)]);
    rig.set_data(&pattern(9, 4096));
    assert_eq!(rig.raw(&good).status, BLKIF_RSP_OKAY);
    let bad = rw_request(BlkifOp::Write, 0, &[(10, 0, 7), (4000, 0, 7)]);
    let rsp = rig.raw(&bad);
    assert_eq!(
        (rsp.id, rsp.operation, rsp.status),
        (77, 1, BLKIF_RSP_ERROR)
    );
    let bad_read = rw_request(BlkifOp::Read, 0, &[(4000, 0, 0)]);
    assert_eq!(rig.raw(&bad_read).status, BLKIF_RSP_ERROR);
    rig.set_data(&[0; 4096]);
    assert_eq!(rig.run(BlkifOp::Read, 0, 4096).unwrap(), BLKIF_RSP_OKAY);
    assert_eq!(rig.data(4096), pattern(9, 4096), "nothing was written");
}

#[test]
fn ids_are_echoed_and_unsupported_operations_say_so() {
    let mut rig = Rig::new(64, false);
    let req = BlkifRequest {
        id: u64::MAX,
        ..rw_request(BlkifOp::Discard, 0, &[])
    };
    let rsp = rig.raw(&req);
    assert_eq!((rsp.id, rsp.operation, rsp.status), (u64::MAX, 5, -2));
    let write = rw_request(BlkifOp::Write, 0, &[(10, 0, 0)]);
    assert_eq!(rig.raw(&write).status, BLKIF_RSP_ERROR, "read-only disk");
}

#[test]
fn a_runaway_producer_index_is_an_error_and_the_budget_holds() {
    let mut rig = Rig::new(64, true);
    let req = rw_request(BlkifOp::Read, 0, &[(10, 0, 0)]);
    // Fill the ring without consuming a response.
    for i in 0..RING_SLOTS {
        let mut page = rig.page.clone();
        let at = 64 + (i as usize) * BlkifRequest::SIZE;
        let mut bytes = [0u8; 112];
        req.to_wire(&mut bytes).unwrap();
        page.write_bytes(at, &bytes);
    }
    rig.page.clone().write_u32(REQ_PROD, RING_SLOTS);
    let round = rig.back.serve(&mut rig.disk, &mut rig.copier, 20).unwrap();
    assert_eq!((round.answered, round.more), (20, true));
    let round = rig.serve();
    assert_eq!((round.answered, round.more, round.failed), (12, false, 0));
    rig.page.clone().write_u32(REQ_PROD, 2 * RING_SLOTS + 1);
    let err = rig
        .back
        .serve(&mut rig.disk, &mut rig.copier, RING_SLOTS)
        .unwrap_err();
    assert!(matches!(err, RingError::Overrun { .. }));
}

#[test]
fn details_and_states_of_the_handshake() {
    assert_eq!(
        front_details(Some(b"8"), Some(b"5"), Some(b"x86_64-abi")),
        Ok(FrontDetails {
            ring_ref: 8,
            event_channel: 5
        })
    );
    assert!(front_details(Some(b"8"), Some(b"5"), None).is_ok());
    assert_eq!(
        front_details(Some(b"8"), Some(b"5"), Some(b"x86_32-abi")),
        Err("unsupported protocol")
    );
    assert_eq!(
        front_details(None, Some(b"5"), None),
        Err("no valid ring-ref")
    );
    assert_eq!(
        front_details(Some(b"8"), Some(b"-1"), None),
        Err("no valid event-channel")
    );
    use XenbusState::*;
    assert_eq!(backend_step(InitWait, Initialising), None);
    assert_eq!(backend_step(InitWait, Initialised), Some(Connected));
    assert_eq!(backend_step(InitWait, Connected), Some(Connected));
    assert_eq!(backend_step(Connected, Connected), None);
    assert_eq!(backend_step(Connected, Closing), Some(Closing));
    assert_eq!(backend_step(Closing, Closed), Some(Closed));
    assert_eq!(backend_step(Connected, Closed), Some(Closed));
    assert_eq!(backend_step(Closed, Closed), None);
}

#[test]
fn front_end_requests_and_their_limits() {
    use guest_pv_shim::blkfront::request;
    let grefs = [3u32; MAX_SEGMENTS];
    let req = request(BlkifOp::Write, 4, 100, 9 * 512, &grefs).unwrap();
    assert_eq!(req.nr_segments, 2);
    assert_eq!((req.seg[0].first_sect, req.seg[0].last_sect), (0, 7));
    assert_eq!((req.seg[1].first_sect, req.seg[1].last_sect), (0, 0));
    assert_eq!(decode(&req, lim(109, true)).map(|d| d.count), Ok(2));
    assert!(request(BlkifOp::Read, 0, 0, 0, &grefs).is_err());
    assert!(request(BlkifOp::Read, 0, 0, 100, &grefs).is_err());
    assert!(request(BlkifOp::Read, 0, 0, 45056 + 512, &grefs).is_err());
    assert_eq!(
        request(BlkifOp::FlushDiskcache, 0, 0, 0, &grefs).map(|r| r.nr_segments),
        Ok(0)
    );
    let mut rig = Rig::new(8, true);
    rig.front.submit(BlkifOp::Read, 0, 512).unwrap();
    assert_eq!(rig.front.submit(BlkifOp::Read, 0, 512), Err(BlkError::Busy));
}

/// The handshake end to end over the real store: the toolstack's nodes,
/// the shim's front end through a store ring, and a back end taking
/// [`backend_step`]s whenever the front end waits (as dom0's loop does).
mod handshake {
    use dom0_abi::xenstore::XsType;
    use guest_pv_shim::blkfront::handshake as front;
    use guest_pv_shim::xenbus::Xenbus;
    use guest_pv_shim::xenbus::loopback::{Loopback, NoHost};
    use toolstack::config::{Backing, Disk};
    use xenstore::{DomId, Store};

    use super::*;

    const D: DomId = 3;
    const BACK: &str = "/local/domain/0/backend/vbd/3/51712";
    const FRONT: &str = "device/vbd/51712";

    /// dom0's back end of one disk.
    struct Dom0 {
        state: XenbusState,
        disk: RamDisk,
        details: Option<Result<FrontDetails, &'static str>>,
        /// `block-detach` asked: a connected back end goes `Closing`.
        unplug: bool,
    }

    fn read(store: &mut Store, path: &str) -> Option<Vec<u8>> {
        toolstack::store::read(store, &mut NoHost, path).ok()
    }

    fn write(store: &mut Store, key: &str, value: &str) {
        let path = format!("{BACK}/{key}");
        toolstack::store::write_value(store, &mut NoHost, &path, value).unwrap();
    }

    impl Dom0 {
        /// One round of dom0's loop for this disk.
        fn step(&mut self, store: &mut Store) {
            let front = format!("/local/domain/{D}/{FRONT}");
            let state = read(store, &format!("{front}/state"))
                .and_then(|v| guest_pv_shim::xenbus::parse_state(&v))
                .unwrap_or(XenbusState::Unknown);
            let unplug = self.unplug && self.state == XenbusState::Connected;
            let Some(next) =
                backend_step(self.state, state).or(unplug.then_some(XenbusState::Closing))
            else {
                return;
            };
            if next == XenbusState::Connected {
                self.details = Some(front_details(
                    read(store, &format!("{front}/ring-ref")).as_deref(),
                    read(store, &format!("{front}/event-channel")).as_deref(),
                    read(store, &format!("{front}/protocol")).as_deref(),
                ));
                for (key, value) in connected_keys(&self.disk) {
                    write(store, key, &value);
                }
            }
            self.state = next;
            write(store, "state", &format!("{}", next as u32));
        }
    }

    /// A domU with `disk` introduced to a fresh store, its back end in
    /// `InitWait` and stepping whenever the client waits, and its
    /// xenstore client.
    fn setup(disk: &str) -> (Xenbus<Loopback>, Rc<RefCell<Dom0>>) {
        let spec = Disk::parse(disk).unwrap();
        let mut store = Store::default();
        toolstack::store::write_dom0(&mut store, &mut NoHost).unwrap();
        let introduce = XsType::Introduce as u32;
        store
            .call(&mut NoHost, 0, introduce, 0, b"3\x001\x001\0")
            .unwrap();
        toolstack::store::write_vbd(&mut store, &mut NoHost, D, &spec).unwrap();
        write(&mut store, "state", "2");
        let dom0 = Rc::new(RefCell::new(Dom0 {
            state: XenbusState::InitWait,
            disk: RamDisk::new(
                match spec.backing {
                    Backing::Ram(bytes) => bytes,
                    Backing::Phy(_) => 0,
                },
                spec.writable,
            )
            .unwrap(),
            details: None,
            unplug: false,
        }));
        let back = dom0.clone();
        let ring = Loopback::new(Rc::new(RefCell::new(store)), D).with_hook(std::boxed::Box::new(
            move |store| back.borrow_mut().step(store),
        ));
        (Xenbus::new(ring), dom0)
    }

    #[test]
    fn connect_then_close() {
        let (mut xb, dom0) = setup("ram:1M,raw,xvda,r");
        let mut buf = [0u8; 96];
        let back = front::read(&mut xb, FRONT, "backend", &mut buf).unwrap();
        assert_eq!(back, BACK.as_bytes());
        front::wait_for(&mut xb, BACK, XenbusState::InitWait).unwrap();
        front::publish(&mut xb, FRONT, 8, 5, true).unwrap();
        front::wait_for(&mut xb, BACK, XenbusState::Connected).unwrap();
        let mut buf = [0u8; 8];
        let key = dom0_abi::blkif::keys::FEATURE_PERSISTENT;
        assert_eq!(front::read(&mut xb, FRONT, key, &mut buf).unwrap(), b"1");
        assert_eq!(front::read(&mut xb, BACK, key, &mut buf).unwrap(), b"1");
        assert_eq!(
            dom0.borrow().details,
            Some(Ok(FrontDetails {
                ring_ref: 8,
                event_channel: 5
            }))
        );
        let info = front::disk_info(&mut xb, BACK).unwrap();
        assert_eq!(
            (
                info.sectors,
                info.sector_size,
                info.info,
                info.flush,
                info.max_indirect
            ),
            (
                2048,
                512,
                VDISK_READONLY,
                true,
                MAX_INDIRECT_SEGMENTS as u64
            )
        );
        xb.set_state(0, FRONT, XenbusState::Closing).unwrap();
        let s = front::wait_until(&mut xb, BACK, |s| s != XenbusState::Connected).unwrap();
        assert_eq!(s, XenbusState::Closing);
        xb.set_state(0, FRONT, XenbusState::Closed).unwrap();
        let s = front::wait_until(&mut xb, BACK, |s| s == XenbusState::Closed).unwrap();
        assert_eq!(s, XenbusState::Closed);
    }

    /// Connects the front end of `setup(disk)`.
    fn connected(disk: &str) -> (Xenbus<Loopback>, Rc<RefCell<Dom0>>) {
        let (mut xb, dom0) = setup(disk);
        front::wait_for(&mut xb, BACK, XenbusState::InitWait).unwrap();
        front::publish(&mut xb, FRONT, 8, 5, false).unwrap();
        front::wait_for(&mut xb, BACK, XenbusState::Connected).unwrap();
        let mut buf = [0u8; 8];
        let key = dom0_abi::blkif::keys::FEATURE_PERSISTENT;
        assert!(
            front::read(&mut xb, FRONT, key, &mut buf).is_err(),
            "not offered"
        );
        xb.set_state(0, FRONT, XenbusState::Connected).unwrap();
        (xb, dom0)
    }

    #[test]
    fn the_front_end_closes_whoever_starts() {
        // The front end leaves.
        let (mut xb, dom0) = connected("ram:4K,raw,xvda,rw");
        front::close(&mut xb, FRONT, BACK).unwrap();
        assert_eq!(dom0.borrow().state, XenbusState::Closed);
        assert_eq!(xb.state(0, FRONT), Ok(XenbusState::Closed));
        // The back end is unplugged (`block-detach`): the front end sees
        // `Closing` and answers `Closed`.
        let (mut xb, dom0) = connected("ram:4K,raw,xvda,rw");
        dom0.borrow_mut().unplug = true;
        let s = front::wait_until(&mut xb, BACK, |s| s != XenbusState::Connected).unwrap();
        assert_eq!(s, XenbusState::Closing);
        front::close(&mut xb, FRONT, BACK).unwrap();
        assert_eq!(dom0.borrow().state, XenbusState::Closed);
    }

    #[test]
    fn a_device_that_is_there_is_found_and_named() {
        let (mut xb, _) = setup("ram:4K,raw,xvda,rw");
        let mut buf = [0u8; 24];
        let dir = front::front_dir(51712, &mut buf).unwrap();
        assert_eq!(dir, FRONT);
        front::wait_for_device(&mut xb, dir, 3).unwrap();
    }

    #[test]
    fn the_front_end_cannot_write_the_back_ends_nodes() {
        let (mut xb, _) = setup("ram:4K,raw,xvda,rw");
        let e = xb.write(0, &format!("{BACK}/state"), b"4").unwrap_err();
        assert_eq!(e.name(), "EACCES");
        let e = xb.write(0, &format!("{BACK}/sectors"), b"99").unwrap_err();
        assert_eq!(e.name(), "EACCES");
    }
}

#[test]
fn indirect_requests_move_many_pages_and_are_checked() {
    let mut rig = Rig::new(512, true);
    let data_pages: Vec<u32> = (100..116).collect();
    for &g in &data_pages {
        rig.grants.0.borrow_mut().insert(g, [0; PAGE_BYTES]);
    }
    let segs: Vec<(u32, u8, u8)> = data_pages.iter().map(|&g| (g, 0, 7)).collect();
    indirect_page(&rig.grants, 50, &segs);
    let data = pattern(3, 16 * PAGE_BYTES);
    for (g, chunk) in data_pages.iter().zip(data.chunks(PAGE_BYTES)) {
        rig.grants
            .0
            .borrow_mut()
            .get_mut(g)
            .unwrap()
            .copy_from_slice(chunk);
    }
    let write = rig.raw(&indirect_request(BlkifOp::Write, 8, 16, &[50]));
    assert_eq!((write.id, write.operation, write.status), (99, 1, 0));
    for g in &data_pages {
        rig.grants.0.borrow_mut().insert(*g, [0; PAGE_BYTES]);
    }
    let read = rig.raw(&indirect_request(BlkifOp::Read, 8, 16, &[50]));
    assert_eq!(
        (read.operation, read.status),
        (0, 0),
        "the operation carried"
    );
    let back: Vec<u8> = data_pages
        .iter()
        .flat_map(|g| rig.grants.0.borrow()[g])
        .collect();
    assert_eq!(back, data);
    let status = |rig: &mut Rig, req| rig.raw(&req).status;
    let too_many = u16::try_from(MAX_INDIRECT_SEGMENTS + 1).unwrap();
    assert_eq!(
        status(
            &mut rig,
            indirect_request(BlkifOp::Read, 0, too_many, &[50])
        ),
        -1
    );
    assert_eq!(
        status(&mut rig, indirect_request(BlkifOp::Read, 0, 0, &[50])),
        -1
    );
    assert_eq!(
        status(&mut rig, indirect_request(BlkifOp::Read, 0, 1, &[4000])),
        -1,
        "bad page"
    );
    assert_eq!(
        status(&mut rig, indirect_request(BlkifOp::Discard, 0, 1, &[50])),
        -2
    );
    assert_eq!(
        status(&mut rig, indirect_request(BlkifOp::Read, 505, 16, &[50])),
        -1,
        "past end"
    );
    indirect_page(&rig.grants, 51, &[(100, 0, 7), (4000, 0, 7)]);
    assert_eq!(
        status(&mut rig, indirect_request(BlkifOp::Read, 0, 2, &[51])),
        -1,
        "bad data grant"
    );
    indirect_page(&rig.grants, 52, &[(100, 3, 2)]);
    assert_eq!(
        status(&mut rig, indirect_request(BlkifOp::Write, 0, 1, &[52])),
        -1,
        "bad sectors"
    );
}

#[test]
fn persistent_grants_move_data_straight_to_the_device() {
    let mut rig = Rig::new(64, true);
    let mut disk = DmaDisk {
        ram: RamDisk::new(64 * 512, true).unwrap(),
        grants: rig.grants.clone(),
        transfers: 0,
    };
    rig.copier.persistent = true;
    let raw = |rig: &mut Rig, disk: &mut DmaDisk, req: &BlkifRequest| {
        rig.front.submit_raw(req).unwrap();
        rig.back.serve(disk, &mut rig.copier, RING_SLOTS).unwrap();
        rig.front.poll().unwrap().unwrap().status
    };
    let data = pattern(5, 3 * PAGE_BYTES);
    rig.set_data(&data);
    let pages = [(10, 0, 7), (11, 0, 7), (12, 0, 7)];
    assert_eq!(
        raw(&mut rig, &mut disk, &rw_request(BlkifOp::Write, 4, &pages)),
        0
    );
    rig.set_data(&[0; 3 * PAGE_BYTES]);
    assert_eq!(
        raw(&mut rig, &mut disk, &rw_request(BlkifOp::Read, 4, &pages)),
        0
    );
    assert_eq!(rig.data(3 * PAGE_BYTES), data);
    assert_eq!(
        (disk.transfers, rig.copier.copies),
        (2, 0),
        "one transfer each, no copy"
    );
    assert_eq!(rig.copier.mapped, BTreeSet::from([10, 11, 12]));
    let bad = rw_request(BlkifOp::Read, 0, &[(10, 0, 7), (4000, 0, 7)]);
    assert_eq!(
        raw(&mut rig, &mut disk, &bad),
        -1,
        "a bad grant fails its request"
    );
    assert_eq!(disk.transfers, 2, "and moves nothing");
    let partial = rw_request(BlkifOp::Read, 5, &[(11, 1, 2)]);
    assert_eq!(raw(&mut rig, &mut disk, &partial), 0);
    assert_eq!(
        rig.data(2 * PAGE_BYTES)[PAGE_BYTES + 512..PAGE_BYTES + 1536],
        data[512..1536]
    );
}

#[test]
fn the_front_end_moves_64_kib_in_one_indirect_request() {
    use guest_pv_shim::blkfront::SLOT_BYTES;
    use guest_pv_shim::ring::RingMemory;
    let mut rig = Rig::new(256, true);
    assert_eq!(rig.front.max_bytes(), SLOT_BYTES, "no indirect page yet");
    assert!(
        rig.front
            .submit(BlkifOp::Read, 0, SLOT_BYTES + 512)
            .is_err()
    );
    let page = Page::new(4096, 0);
    rig.front.enable_indirect(page.clone(), 60);
    assert_eq!(rig.front.max_bytes(), DATA_PAGES * PAGE_BYTES);
    let data = pattern(11, DATA_PAGES * PAGE_BYTES);
    rig.set_data(&data);
    let notify = rig.front.submit(BlkifOp::Write, 16, data.len()).unwrap();
    assert!(notify);
    let mut bytes = [0u8; PAGE_BYTES];
    page.read_bytes(0, &mut bytes);
    rig.grants.0.borrow_mut().insert(60, bytes);
    assert_eq!(rig.serve().answered, 1, "one request for 64 KiB");
    let rsp = rig.front.poll().unwrap().unwrap();
    assert_eq!((rsp.operation, rsp.status), (BlkifOp::Write as u8, 0));
    rig.set_data(&vec![0; data.len()]);
    rig.front
        .submit_at(BlkifOp::Read, 16, SLOT_BYTES, 0)
        .unwrap();
    rig.serve();
    assert_eq!(rig.front.poll().unwrap().unwrap().status, 0);
    let rest = data.len() - SLOT_BYTES;
    rig.front
        .submit_at(
            BlkifOp::Read,
            16 + (SLOT_BYTES / 512) as u64,
            rest,
            MAX_SEGMENTS,
        )
        .unwrap();
    rig.serve();
    assert_eq!(rig.front.poll().unwrap().unwrap().status, 0);
    assert_eq!(
        rig.data(data.len()),
        data,
        "read back as two plain requests"
    );
}

/// [`BlkFront::read_stream`]'s side in the host tests: the back end
/// serves the ring when the front end waits, the units are collected.
struct StreamRig<'a> {
    back: &'a mut BlkRing<Page>,
    disk: &'a mut RamDisk,
    copier: &'a mut Copier,
    grants: &'a Grants,
    /// Per lane: its first data grant and its indirect page and grant.
    lanes: Vec<(u32, Page, u32)>,
    notified: usize,
    rounds: Vec<u32>,
    units: Vec<(u64, Vec<u8>)>,
}

impl guest_pv_shim::blkfront::StreamIo for StreamRig<'_> {
    fn notify(&mut self) {
        self.notified += 1;
    }
    fn wait(&mut self) {
        use guest_pv_shim::ring::RingMemory;
        for (_, page, gref) in &self.lanes {
            let mut bytes = [0u8; PAGE_BYTES];
            page.read_bytes(0, &mut bytes);
            self.grants.0.borrow_mut().insert(*gref, bytes);
        }
        let round = self.back.serve(self.disk, self.copier, RING_SLOTS).unwrap();
        self.rounds.push(round.answered);
    }
    fn data(&mut self, lane: usize, unit: u64) {
        let first = self.lanes[lane].0;
        let grants = self.grants.0.borrow();
        let bytes = (first..first + DATA_PAGES as u32).flat_map(|g| grants[&g]);
        self.units.push((unit, bytes.collect()));
    }
}

impl Rig {
    /// The front end, and the back end as [`BlkFront::read_stream`]'s
    /// side with `lanes`.
    fn stream(&mut self, lanes: Vec<(u32, Page, u32)>) -> (&mut BlkFront<Page>, StreamRig<'_>) {
        let io = StreamRig {
            back: &mut self.back,
            disk: &mut self.disk,
            copier: &mut self.copier,
            grants: &self.grants,
            lanes,
            notified: 0,
            rounds: Vec::new(),
            units: Vec::new(),
        };
        (&mut self.front, io)
    }
}

#[test]
fn a_stream_keeps_a_request_in_flight_on_every_lane() {
    use guest_pv_shim::blkfront::MAX_LANES;
    let unit = DATA_PAGES * PAGE_BYTES;
    let units = 10u64;
    let mut rig = Rig::new(units * (unit / 512) as u64, true);
    let data = pattern(23, units as usize * unit);
    rig.disk.write(0, &data).unwrap();
    let lane0 = Page::new(4096, 0);
    rig.front.enable_indirect(lane0.clone(), 60);
    let mut lanes = vec![(10, lane0, 60)];
    for lane in 1..MAX_LANES as u32 {
        let first = 100 + lane * 20;
        let grefs: [u32; DATA_PAGES] = core::array::from_fn(|i| first + i as u32);
        for &g in &grefs {
            rig.grants.0.borrow_mut().insert(g, [0; PAGE_BYTES]);
        }
        let page = Page::new(4096, 0);
        assert_eq!(
            rig.front.add_lane(grefs, page.clone(), 60 + lane),
            Some(lane as usize)
        );
        lanes.push((first, page, 60 + lane));
    }
    assert_eq!(
        rig.front.add_lane([0; DATA_PAGES], Page::new(4096, 0), 70),
        None
    );
    let (front, mut io) = rig.stream(lanes);
    front.read_stream(0, units, unit, 4, &mut io).unwrap();
    let got: Vec<u64> = io.units.iter().map(|(u, _)| *u).collect();
    assert_eq!(got, (0..units).collect::<Vec<_>>(), "every unit, in order");
    for (u, bytes) in &io.units {
        let at = *u as usize * unit;
        assert!(bytes == &data[at..at + unit], "unit {u}");
    }
    assert_eq!(
        io.rounds,
        [4, 4, 2],
        "all lanes' requests served in one round"
    );
    assert_eq!(io.notified, 3, "one notification per round");
    assert_eq!(rig.front.poll(), Ok(None), "nothing left in flight");
}

#[test]
fn a_stream_stops_at_an_error_status_or_after_its_fruitless_waits() {
    let unit = DATA_PAGES * PAGE_BYTES;
    let mut rig = Rig::new(64, true);
    rig.front.enable_indirect(Page::new(4096, 0), 60);
    let (front, mut io) = rig.stream(Vec::new());
    assert_eq!(
        front.read_stream(0, 2, unit, 4, &mut io),
        Err(BlkError::Status(-1)),
        "the indirect page is no grant: the back end's error"
    );
    front.submit(BlkifOp::Read, 0, 512).unwrap();
    assert_eq!(
        front.read_stream(0, 1, 512, 4, &mut io),
        Err(BlkError::Busy)
    );
    io.back.serve(io.disk, io.copier, RING_SLOTS).unwrap();
    assert_eq!(front.poll().unwrap().map(|r| r.status), Some(0));
    let mut silent = Rig::new(64, true);
    let mut waits = 0;
    struct Silent<'a>(&'a mut u32);
    impl guest_pv_shim::blkfront::StreamIo for Silent<'_> {
        fn notify(&mut self) {}
        fn wait(&mut self) {
            *self.0 += 1;
        }
        fn data(&mut self, _: usize, _: u64) {
            unreachable!("no response");
        }
    }
    assert_eq!(
        silent
            .front
            .read_stream(0, 1, 512, 5, &mut Silent(&mut waits)),
        Err(BlkError::Timeout)
    );
    assert_eq!(waits, 5);
}
