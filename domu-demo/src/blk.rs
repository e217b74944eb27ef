//! The demo domU on its virtual disk `xvda` (command-line word `blk`, or
//! `blkhostile`): every result is a `check:` line, which dom0 turns into
//! one of its checks, so the run compares with Xen 4.17 value by value.
//!
//! `blk` (with `seed=<n>`, default 1): writes a pattern at pseudo-random
//! offsets and sizes (1 to 88 sectors: one to eleven pages), reads each
//! write back at once, then reads the whole disk and checks every sector
//! holds what its last write put there (zero if none), discards 24
//! sectors and checks they read as zero, and flushes. With `xvdb` too, it
//! then connects its second disk, read-only: a read (zeros), a write and
//! a discard (both refused).
//!
//! `blkhostile`: a front end that breaks the rules on purpose: requests
//! with a grant never made, too many or no segments, sectors past the
//! device or outside a page, a discard past the end, operations not
//! offered (secure discard, indirect); each must come back
//! with an error status, and a valid write still works afterwards. It
//! writes state values out of turn and malformed ones into its `state`
//! (the back end stays connected and serving). Then it fills the ring without consuming a response and pushes its producer
//! index past the ring: the back end must disconnect it (`Closing`).

use core::fmt::Write;
use core::sync::atomic::{Ordering, fence};

use guest_pv_shim::blkfront::{BlkError, Disk, Features, MAX_REQUEST_BYTES, Windows, handshake};
use guest_pv_shim::dom0_abi::blkif::{
    BLKIF_DISCARD_SECURE, BlkifOp, BlkifRequest, BlkifRequestDiscard, BlkifRequestIndirect,
    MAX_INDIRECT_PAGES, MAX_SEGMENTS, RING_SLOTS,
};
use guest_pv_shim::dom0_abi::ring::{HEADER_BYTES, REQ_PROD, RSP_PROD};
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::dom0_abi::wire::Wire;
use guest_pv_shim::dom0_abi::xenstore::XenbusState;
use guest_pv_shim::rng::Rng;
use guest_pv_shim::xenbus::{WindowRing, Xenbus};
use guest_pv_shim::{cmdline, hypercall, mm, shared};

use crate::Console;

/// The window of the store ring (the xenstore checks use 2).
const STORE_WINDOW: usize = 3;
/// The disk's windows: 8 ..= 26.
pub(crate) const DISK_WINDOWS: Windows = Windows { first: 8 };
/// `xvda`.
pub(crate) const XVDA: u32 = 51712;
/// `xvdb`, and its windows: 27 ..= 45.
pub(crate) const XVDB: u32 = 51728;
pub(crate) const XVDB_WINDOWS: Windows = Windows {
    first: 8 + Windows::COUNT,
};
/// Writes of the random test.
const WRITES: u32 = 40;
/// Sectors the random test tracks (a disk of at most 4 MiB).
const MAX_SECTORS: usize = 8192;
/// Bytes of the largest request.
const CHUNK: usize = MAX_REQUEST_BYTES;

/// The data of one request (too large for the boot stack).
pub(crate) static BUF: spin::Mutex<[u8; CHUNK]> = spin::Mutex::new([0; CHUNK]);
/// Per sector, the write that last wrote it (0: none).
static LAST: spin::Mutex<[u8; MAX_SECTORS]> = spin::Mutex::new([0; MAX_SECTORS]);

/// The byte at `offset` of sector `sector` after write number `write`
/// (0: never written, all zero).
fn expected(seed: u64, write: u8, sector: u64, offset: usize) -> u8 {
    if write == 0 {
        return 0;
    }
    let x = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(u64::from(write) << 40)
        .wrapping_add(sector << 12)
        .wrapping_add(offset as u64);
    #[allow(clippy::cast_possible_truncation, reason = "one byte of a hash")]
    let byte = (x ^ (x >> 29) ^ (x >> 47)) as u8;
    byte
}

/// A result as a check value: `ok` or the error.
pub(crate) struct Shown(pub(crate) Result<(), BlkError>);

impl core::fmt::Display for Shown {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Ok(()) => f.write_str("ok"),
            Err(e) => write!(f, "{e}"),
        }
    }
}

/// Connects `xvda`, after mapping `shared_info` (waits clear the port's
/// pending bit there).
fn connect(console: &mut Console, si: &StartInfo) -> Option<(Disk, Xenbus<WindowRing>)> {
    connect_disk(console, si, XVDA, DISK_WINDOWS, "blk")
}

/// Connects disk `devid` on `windows`; its checks are named `<name> …`.
/// With `plain` on the command line the front end offers no persistent
/// grants and sends no indirect requests.
pub(crate) fn connect_disk(
    console: &mut Console,
    si: &StartInfo,
    devid: u32,
    windows: Windows,
    name: &str,
) -> Option<(Disk, Xenbus<WindowRing>)> {
    let _ = writeln!(console, "check: blk map shared_info = {}\r", shared::map());
    let ring = match WindowRing::map(
        STORE_WINDOW,
        si.store_mfn,
        si.store_evtchn,
        crate::PATIENCE_NS,
    ) {
        Ok(ring) => ring,
        Err(e) => {
            let _ = writeln!(console, "check: blk map the store ring = {e}\r");
            return None;
        }
    };
    let mut xb = Xenbus::new(ring);
    let features = if cmdline::has_flag(si.cmdline(), b"plain") {
        Features::PLAIN
    } else {
        Features::ALL
    };
    attach(console, &mut xb, devid, windows, name, features).map(|disk| (disk, xb))
}

/// Connects disk `devid` on `windows` through the store connection `xb`;
/// its check is `<name> connected`.
pub(crate) fn attach(
    console: &mut Console,
    xb: &mut Xenbus<WindowRing>,
    devid: u32,
    windows: Windows,
    name: &str,
    features: Features,
) -> Option<Disk> {
    match Disk::connect(xb, devid, windows, features) {
        Ok(disk) => {
            let _ = writeln!(
                console,
                "check: {name} connected = {} sectors, info {}, sector-size {}, flush {}, discard {}, \
                 indirect segments {}\r",
                disk.info.sectors,
                disk.info.info,
                disk.info.sector_size,
                disk.info.flush,
                disk.info.discard,
                disk.info.max_indirect
            );
            Some(disk)
        }
        Err(e) => {
            let _ = writeln!(console, "check: {name} connected = {e}\r");
            None
        }
    }
}

/// The well-behaved front end.
pub fn checks(console: &mut Console, si: &StartInfo) {
    let Some((mut disk, _)) = connect(console, si) else {
        return;
    };
    let seed = cmdline::option(si.cmdline(), b"seed")
        .and_then(|s| core::str::from_utf8(s).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(1u64);
    let sectors = disk.info.sectors.min(MAX_SECTORS as u64);
    if sectors < 88 {
        let _ = writeln!(
            console,
            "check: blk disk large enough = {sectors} sectors\r"
        );
        return;
    }
    let mut last = LAST.lock();
    let mut rng = Rng::new(seed.wrapping_mul(0x2545_F491_4F6C_DD1D));
    let mut buf = BUF.lock();
    let (mut written, mut verified) = (0u32, 0u32);
    for write in 1..=WRITES {
        let n = 1 + rng.next_u64() % 88;
        let sector = rng.next_u64() % (sectors - n + 1);
        #[allow(clippy::cast_possible_truncation, reason = "at most 88 sectors")]
        let bytes = n as usize * 512;
        #[allow(clippy::cast_possible_truncation, reason = "at most 40")]
        let tag = write as u8;
        for (i, byte) in buf[..bytes].iter_mut().enumerate() {
            *byte = expected(seed, tag, sector + (i / 512) as u64, i % 512);
        }
        if let Err(e) = disk.write(sector, &buf[..bytes]) {
            let _ = writeln!(console, "check: blk write {write} = {e}\r");
            break;
        }
        written += 1;
        for s in sector..sector + n {
            last[usize::try_from(s).unwrap_or(0)] = tag;
        }
        buf[..bytes].fill(0);
        match disk.read(sector, &mut buf[..bytes]) {
            Ok(()) => {
                let same = buf[..bytes]
                    .iter()
                    .enumerate()
                    .all(|(i, &b)| b == expected(seed, tag, sector + (i / 512) as u64, i % 512));
                verified += u32::from(same);
            }
            Err(e) => {
                let _ = writeln!(console, "check: blk read back {write} = {e}\r");
            }
        }
    }
    let _ = writeln!(console, "check: blk writes done = {written}\r");
    let _ = writeln!(console, "check: blk writes read back intact = {verified}\r");
    let mut good = 0u64;
    let mut sector = 0;
    while sector < sectors {
        let n = (sectors - sector).min(88);
        #[allow(clippy::cast_possible_truncation, reason = "at most 88 sectors")]
        let bytes = n as usize * 512;
        if let Err(e) = disk.read(sector, &mut buf[..bytes]) {
            let _ = writeln!(console, "check: blk read sector {sector} = {e}\r");
            break;
        }
        for (k, data) in buf[..bytes].chunks(512).enumerate() {
            let s = sector + k as u64;
            let tag = last[usize::try_from(s).unwrap_or(0)];
            good += u64::from(
                data.iter()
                    .enumerate()
                    .all(|(i, &b)| b == expected(seed, tag, s, i)),
            );
        }
        sector += n;
    }
    let _ = writeln!(console, "check: blk sectors as last written = {good}\r");
    let discarded = Shown(disk.discard(8, 24));
    let _ = writeln!(console, "check: blk discard sectors 8..32 = {discarded}\r");
    let zero = disk.read(0, &mut buf[..40 * 512]).map(|()| {
        buf[..40 * 512].chunks(512).enumerate().all(|(k, data)| {
            let s = k as u64;
            let tag = if (8..32).contains(&s) { 0 } else { last[k] };
            data.iter()
                .enumerate()
                .all(|(i, &b)| b == expected(seed, tag, s, i))
        })
    });
    let _ = writeln!(
        console,
        "check: blk discarded sectors read as zero, the others kept = {zero:?}\r"
    );
    let flushed = Shown(disk.flush());
    let _ = writeln!(console, "check: blk flush = {flushed}\r");
    let past = Shown(disk.read(disk.info.sectors, &mut buf[..512]));
    let _ = writeln!(console, "check: blk read past the end = {past}\r");
    if cmdline::has_flag(si.cmdline(), b"xvdb") {
        read_only(console, si);
    }
}

/// The second disk, `xvdb`, read-only: reads work (zeros), writes and
/// discards fail.
fn read_only(console: &mut Console, si: &StartInfo) {
    let Some((mut disk, _)) = connect_disk(console, si, XVDB, XVDB_WINDOWS, "xvdb") else {
        return;
    };
    let mut buf = [0xEEu8; 2048];
    let read = Shown(disk.read(0, &mut buf));
    let zero = buf.iter().all(|&b| b == 0);
    let _ = writeln!(console, "check: xvdb read = {read}, zero {zero}\r");
    let write = Shown(disk.write(0, &buf));
    let _ = writeln!(console, "check: xvdb write = {write}\r");
    let discard = Shown(disk.discard(0, 1));
    let _ = writeln!(console, "check: xvdb discard = {discard}\r");
}

/// A request of `op` with `segs` (grant, first, last) at `sector`.
fn crafted(op: u8, sector: u64, segs: &[(u32, u8, u8)]) -> BlkifRequest {
    BlkifRequest::new(op, 0x1000 + u64::from(op), sector, segs)
}

/// An indirect request of `op` with `count` segments in the page granted
/// as `page`.
fn indirect(op: BlkifOp, count: u16, page: u32) -> BlkifRequest {
    let mut indirect_grefs = [0; MAX_INDIRECT_PAGES];
    indirect_grefs[0] = page;
    BlkifRequest::from_indirect(&BlkifRequestIndirect {
        operation: BlkifOp::Indirect as u8,
        indirect_op: op as u8,
        nr_segments: count,
        id: 0x3000 + u64::from(count),
        sector_number: 0,
        handle: 0,
        pad: 0,
        indirect_grefs,
    })
}

/// A discard request of `count` sectors at `sector`.
fn discard(sector: u64, count: u64, flag: u8) -> BlkifRequest {
    BlkifRequest::from_discard(&BlkifRequestDiscard {
        operation: BlkifOp::Discard as u8,
        flag,
        handle: 0,
        id: 0x2000,
        sector_number: sector,
        nr_sectors: count,
    })
}

/// The hostile front end.
pub fn hostile(console: &mut Console, si: &StartInfo) {
    let Some((mut disk, mut xb)) = connect(console, si) else {
        return;
    };
    let g = disk.grefs()[0];
    let end = disk.info.sectors;
    let read = BlkifOp::Read as u8;
    let mut twelve = crafted(read, 0, &[(g, 0, 0); MAX_SEGMENTS]);
    twelve.nr_segments = 12;
    let cases = [
        ("a grant never made", crafted(read, 0, &[(400, 0, 7)])),
        ("12 segments", twelve),
        ("a read without segments", crafted(read, 0, &[])),
        ("sectors past the end", crafted(read, end - 1, &[(g, 0, 1)])),
        ("first_sect after last_sect", crafted(read, 0, &[(g, 5, 4)])),
        ("last_sect past the page", crafted(read, 0, &[(g, 0, 8)])),
        ("a discard past the end", discard(end - 1, 2, 0)),
        ("a secure discard", discard(0, 1, BLKIF_DISCARD_SECURE)),
        ("indirect without segments", indirect(BlkifOp::Read, 0, g)),
        (
            "indirect, its page a grant never made",
            indirect(BlkifOp::Read, 8, 400),
        ),
        ("indirect of 33 segments", indirect(BlkifOp::Read, 33, g)),
        ("indirect discard", indirect(BlkifOp::Discard, 8, g)),
        ("operation 4", crafted(4, 0, &[(g, 0, 0)])),
        (
            "an id of all ones",
            BlkifRequest {
                id: u64::MAX,
                ..crafted(200, 0, &[])
            },
        ),
    ];
    for (what, req) in cases {
        match disk.call(&req) {
            Ok(rsp) => {
                let _ = writeln!(
                    console,
                    "check: blk hostile {what} = status {}, id {:#x}, op {}\r",
                    rsp.status, rsp.id, rsp.operation
                );
            }
            Err(e) => {
                let _ = writeln!(console, "check: blk hostile {what} = {e}\r");
            }
        }
    }
    let good = Shown(disk.write(0, &[0x5A; 1024]));
    let _ = writeln!(
        console,
        "check: blk hostile a valid write after them = {good}\r"
    );
    flip_states(console, &mut disk, &mut xb);
    flood(console, &disk, &mut xb);
}

/// Writes state values out of turn and malformed ones into the front
/// end's `state`: none of them is `Closing` or `Closed`, so the back end
/// must stay connected and keep serving.
fn flip_states(console: &mut Console, disk: &mut Disk, xb: &mut Xenbus<WindowRing>) {
    let front = front_dir();
    let mut flips = 0;
    for value in [&b"1"[..], b"7", b"3", b"banana", b"", b"99999", b"2", b"4"] {
        if xb.write(0, front.as_str(), value).is_ok() {
            flips += 1;
        }
        let mut buf = [0u8; 1024];
        let still = Shown(disk.read(8, &mut buf));
        let _ = writeln!(
            console,
            "check: blk hostile a read after state {:?} = {still}\r",
            core::str::from_utf8(value).unwrap_or("?")
        );
    }
    let back = xb.state(0, disk.backend()).map_or("?", XenbusState::name);
    let _ = writeln!(
        console,
        "check: blk hostile back end after {flips} state flips = {back}\r"
    );
}

/// The front end's `state` path, relative to this domain's home.
fn front_dir() -> Path {
    let mut path = Path([0; 32], 0);
    let _ = write!(path, "device/vbd/{XVDA}/state");
    path
}

/// A short path, formatted in place.
struct Path([u8; 32], usize);

impl Path {
    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.0[..self.1]).unwrap_or("")
    }
}

impl Write for Path {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.1 + s.len();
        self.0
            .get_mut(self.1..end)
            .ok_or(core::fmt::Error)?
            .copy_from_slice(s.as_bytes());
        self.1 = end;
        Ok(())
    }
}

/// Fills the ring with valid requests, never consumes the responses, then
/// pushes `req_prod` past the ring and waits for the back end to close;
/// answers with `Closed` and waits for the back end's.
fn flood(console: &mut Console, disk: &Disk, xb: &mut Xenbus<WindowRing>) {
    let window = disk.ring_window();
    let prod = mm::window_read_u32(window, REQ_PROD as u64);
    let req = crafted(BlkifOp::Read as u8, 0, &[(disk.grefs()[0], 0, 0)]);
    let mut bytes = [0u8; 112];
    let _ = req.to_wire(&mut bytes);
    for i in 0..RING_SLOTS {
        let slot = prod.wrapping_add(i) % RING_SLOTS;
        mm::window_write_bytes(window, HEADER_BYTES + slot as usize * 112, &bytes);
    }
    fence(Ordering::Release);
    let full = prod.wrapping_add(RING_SLOTS);
    mm::window_write_u32(window, REQ_PROD as u64, full);
    hypercall::evtchn_send(disk.port());
    let answered = crate::wait_for(Some(disk.port()), || {
        mm::window_read_u32(window, RSP_PROD as u64) == full
    });
    let _ = writeln!(
        console,
        "check: blk hostile a full ring never consumed is answered = {answered}\r"
    );
    mm::window_write_u32(window, REQ_PROD as u64, full.wrapping_add(RING_SLOTS + 1));
    hypercall::evtchn_send(disk.port());
    let back = disk.backend();
    let state = handshake::wait_until(xb, back, |s| s != XenbusState::Connected);
    let _ = writeln!(
        console,
        "check: blk hostile back end after the overrun = {}\r",
        state.map_or("?", XenbusState::name)
    );
    let closed = xb.write(0, front_dir().as_str(), b"6");
    let state = handshake::wait_until(xb, back, |s| s == XenbusState::Closed);
    let _ = writeln!(
        console,
        "check: blk hostile back end after the front end closed = {} ({closed:?})\r",
        state.map_or("?", XenbusState::name)
    );
}
