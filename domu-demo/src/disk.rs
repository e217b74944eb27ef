//! `disk`: the demo domU on a disk dom0 serves from a real device (a
//! `phy:` disk: a virtio disk or one of its partitions). It writes the
//! shared test pattern (`pv_tests::disk::pattern`) over pseudo-random
//! ranges of `xvda`, the first `max` sectors long and the others of
//! random sizes up to `max` (log-uniform, so small and large both come),
//! reads each back at once and checks it, flushes, and checks that a read
//! past the end is refused. Each range is printed as a
//! `pv_tests::disk::WROTE` line at its sector on the host's image
//! (`base` + its sector on `xvda`), so `cargo xtask` checks the image
//! file after the run. The result is one line, `disk: ... ok` (or what
//! went wrong), besides the `check:` lines dom0 compares.
//!
//! Options: `seed=<n>` (1), `base=<sector>` (0: where `xvda` starts on
//! the host's image), `ranges=<n>` (8), `max=<sectors>` (32768: 16 MiB);
//! with `ro` it also checks its read-only second disk `xvdb`: a read
//! works, a write is refused. With `hotplug` (and `base2=<sector>`, where
//! `xvdb` will start) it then waits for dom0 to detach `xvda`
//! (`block-detach`: the back end goes `Closing`), closes it cleanly,
//! waits for `xvdb` to appear (`block-attach`), connects it and runs the
//! same test there with seed + 1. With `readbench` it only reads the
//! disk for the block benchmark (`blk_read_domu`).

use core::fmt::Write;

use guest_pv_shim::blkfront::{
    Disk, Features, MAX_REQUEST_BYTES, Windows, handshake, indirect_request,
};
use guest_pv_shim::dom0_abi::blkif::{BlkifOp, BlkifRequest};
use guest_pv_shim::dom0_abi::grant_table::GtfFlags;
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::dom0_abi::xenstore::XenbusState;
use guest_pv_shim::rng::Rng;
use guest_pv_shim::xenbus::{WindowRing, Xenbus};
use guest_pv_shim::{cmdline, mm};
use pv_bench::catalogue::{BLK_READ_DONE, BLK_READ_MIB, BLK_READ_PASSES, BLK_READ_START};
use pv_tests::disk::{SECTOR, Written, pattern};

use crate::Console;
use crate::blk::{BUF, DISK_WINDOWS, Shown, XVDA, XVDB, XVDB_WINDOWS, attach, connect_disk};

/// Watch events (or store timeouts) the hot-plug part waits for `xvdb`.
const HOTPLUG_TRIES: u32 = 50;

/// Sectors of one request.
const CHUNK_SECTORS: u64 = (MAX_REQUEST_BYTES / SECTOR) as u64;

/// The numeric option `key`, or `default`.
fn number(si: &StartInfo, key: &[u8], default: u64) -> u64 {
    cmdline::option(si.cmdline(), key)
        .and_then(|s| core::str::from_utf8(s).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Fills `buf` with the pattern of the sectors from `sector` on the host's
/// image.
fn fill(buf: &mut [u8], sector: u64, seed: u64) {
    let mut one = [0u8; SECTOR];
    for (i, chunk) in buf.chunks_mut(SECTOR).enumerate() {
        pattern(sector + i as u64, seed, &mut one);
        chunk.copy_from_slice(&one);
    }
}

/// What [`exercise`] did.
#[derive(Default)]
struct Outcome {
    written: u64,
    intact: u64,
    kib: u64,
    flushed: bool,
}

/// Writes `ranges` ranges on `disk` (named `name` in the checks, starting
/// at sector `base` of the host's image), reads each back and checks it,
/// flushes, and reads past the end; prints the result line.
fn exercise(
    console: &mut Console,
    disk: &mut Disk,
    name: &str,
    seed: u64,
    base: u64,
    ranges: u64,
    max: u64,
) -> Outcome {
    let sectors = disk.info.sectors;
    let max = max.min(sectors);
    let mut rng = Rng::new(seed.wrapping_mul(0x2545_F491_4F6C_DD1D));
    let mut buf = BUF.lock();
    let mut out = Outcome::default();
    for index in 0..ranges {
        let count = if index == 0 {
            max
        } else {
            // Log-uniform in 1..=max.
            let bits = 64 - max.leading_zeros();
            let cap = 1u64 << (rng.next_u64() % u64::from(bits + 1)).min(63);
            1 + rng.next_u64() % cap.min(max)
        };
        let range = Written {
            sector: base + rng.next_u64() % (sectors - count + 1),
            count,
            seed,
        };
        let start = range.sector - base;
        let mut at = 0;
        let mut failure = None;
        while at < count && failure.is_none() {
            let n = (count - at).min(CHUNK_SECTORS);
            #[allow(clippy::cast_possible_truncation, reason = "at most 128 sectors")]
            let bytes = &mut buf[..n as usize * SECTOR];
            fill(bytes, range.sector + at, seed);
            failure = disk.write(start + at, bytes).err();
            at += n;
        }
        if let Some(e) = failure {
            let _ = writeln!(console, "check: {name} write of range {index} = {e}\r");
            break;
        }
        let _ = writeln!(console, "{range}\r");
        out.written += 1;
        out.kib += count / 2;
        let (mut at, mut same) = (0, true);
        let mut one = [0u8; SECTOR];
        while at < count {
            let n = (count - at).min(CHUNK_SECTORS);
            #[allow(clippy::cast_possible_truncation, reason = "at most 128 sectors")]
            let len = n as usize * SECTOR;
            if let Err(e) = disk.read(start + at, &mut buf[..len]) {
                let _ = writeln!(console, "check: {name} read of range {index} = {e}\r");
                same = false;
                break;
            }
            for (i, got) in buf[..len].chunks(SECTOR).enumerate() {
                pattern(range.sector + at + i as u64, seed, &mut one);
                same &= got == one;
            }
            at += n;
        }
        out.intact += u64::from(same);
    }
    let _ = writeln!(console, "check: {name} ranges written = {}\r", out.written);
    let _ = writeln!(
        console,
        "check: {name} ranges read back intact = {}\r",
        out.intact
    );
    let flushed = Shown(disk.flush());
    out.flushed = flushed.0.is_ok();
    let _ = writeln!(console, "check: {name} flush = {flushed}\r");
    let past = Shown(disk.read(sectors, &mut buf[..SECTOR]));
    let _ = writeln!(console, "check: {name} read past the end = {past}\r");
    let ok = out.written == ranges && out.intact == ranges && out.flushed;
    let _ = writeln!(
        console,
        "disk: {name}: wrote, read back and verified {} of {ranges} ranges ({} KiB) on a \
         disk of {sectors} sectors, flushed: {}\r",
        out.intact,
        out.kib,
        if ok { "ok" } else { "FAILED" }
    );
    out
}

/// The block benchmark's read (`readbench`): reads the first
/// [`BLK_READ_MIB`] MiB of `xvda` [`BLK_READ_PASSES`] times in 64 KiB units
/// (one indirect request each, as many in flight as lanes fit in the
/// windows past the disk's own: `xvdb`'s, unused here), each copied out
/// into one buffer as dom0's own read does, between the console lines
/// `readbench: start` and `readbench: done`, by which dom0 times it
/// (`blk_read_domu`). The 100 Hz periodic timer is stopped first: it
/// would only wake the domU for nothing.
fn read_bench(console: &mut Console, disk: &mut Disk) {
    let stopped = guest_pv_shim::hypercall::vcpu_stop_periodic_timer(0);
    let _ = writeln!(
        console,
        "check: readbench periodic timer stopped = {stopped}\r"
    );
    let units = u64::from(BLK_READ_MIB) * 16;
    if disk.info.sectors < units * 128 {
        let _ = writeln!(
            console,
            "check: readbench = xvda smaller than {BLK_READ_MIB} MiB\r"
        );
        return;
    }
    let lanes = (mm::WINDOW_COUNT - XVDB_WINDOWS.first) / Windows::LANE;
    match disk.add_lanes(XVDB_WINDOWS.first, lanes) {
        Ok(n) => {
            let _ = writeln!(console, "disk: readbench: {n} requests in flight\r");
        }
        Err(e) => {
            let _ = writeln!(console, "check: readbench lanes = {e}\r");
            return;
        }
    }
    let mut buf = BUF.lock();
    for _ in 0..BLK_READ_PASSES {
        let _ = writeln!(console, "disk: {BLK_READ_START}\r");
        if let Err(e) = disk.read_stream(0, units, &mut buf[..128 * SECTOR], |_, _| {}) {
            let _ = writeln!(console, "check: readbench read = {e}\r");
            return;
        }
        let _ = writeln!(console, "disk: {BLK_READ_DONE}\r");
    }
    let _ = writeln!(
        console,
        "check: readbench MiB read = {}\r",
        BLK_READ_MIB * BLK_READ_PASSES
    );
}

/// Runs the test on `xvda`, then the read-only or hot-plug part (or,
/// with `readbench`, only the benchmark's measurement).
pub fn run(console: &mut Console, si: &StartInfo) {
    let Some((mut disk, mut xb)) = connect_disk(console, si, XVDA, DISK_WINDOWS, "xvda") else {
        let _ = writeln!(console, "disk: no disk\r");
        return;
    };
    if cmdline::has_flag(si.cmdline(), b"readbench") {
        read_bench(console, &mut disk);
        return;
    }
    let seed = number(si, b"seed", 1);
    let ranges = number(si, b"ranges", 8);
    let max = number(si, b"max", 32_768);
    exercise(
        console,
        &mut disk,
        "xvda",
        seed,
        number(si, b"base", 0),
        ranges,
        max,
    );
    if cmdline::has_flag(si.cmdline(), b"revoke") {
        revoke(console, &mut disk);
    }
    if cmdline::has_flag(si.cmdline(), b"ro") {
        read_only(console, si);
    }
    if cmdline::has_flag(si.cmdline(), b"hotplug") {
        hot_plug(
            console,
            &mut xb,
            disk,
            seed,
            number(si, b"base2", 0),
            ranges,
            max,
        );
    }
}

/// A front end breaking the rules of persistent grants (after the test,
/// so dom0 maps its data pages for the disk): a request naming a grant
/// never made fails, and so does an indirect one whose indirect page is
/// a grant never made (dom0 would keep it mapped); data page 0's grant entry shows it in use while
/// mapped; the front end then ends that grant anyway, and a read through
/// the page still lands in it (the mapping keeps the frame for the disk
/// until the device disconnects; the hypervisor never lets it go
/// elsewhere meanwhile), with the data the disk holds.
fn revoke(console: &mut Console, disk: &mut Disk) {
    let never = BlkifRequest::new(BlkifOp::Read as u8, 0x4000, 0, &[(400, 0, 7)]);
    let status = disk.call(&never).map(|rsp| rsp.status);
    let _ = writeln!(
        console,
        "check: xvda persistent, a grant never made = {status:?}\r"
    );
    let status = indirect_request(BlkifOp::Read, 0x4001, 0, SECTOR, &disk.grefs(), 401)
        .and_then(|(req, _, _)| disk.call(&req))
        .map(|rsp| rsp.status);
    let _ = writeln!(
        console,
        "check: xvda persistent, an indirect page never granted = {status:?}\r"
    );
    let mut buf = BUF.lock();
    let first = disk
        .read(0, &mut buf[..SECTOR])
        .map(|()| sector_of(&buf[..]));
    let in_use = GtfFlags::READING | GtfFlags::WRITING;
    let flags = GtfFlags::from_bits_retain(disk.data_grant_flags(0));
    let _ = writeln!(
        console,
        "check: xvda data grant 0 in use while mapped = {}\r",
        flags.contains(in_use)
    );
    disk.revoke_data_grant(0);
    buf[..SECTOR].fill(0xEE);
    let again = disk
        .read(0, &mut buf[..SECTOR])
        .map(|()| sector_of(&buf[..]));
    let _ = writeln!(
        console,
        "check: xvda read through a revoked, persistently mapped grant = {}, same data {}\r",
        Shown(again.as_ref().map(|_| ()).map_err(|e| *e)),
        first.is_ok() && first == again
    );
}

/// The first sector of `buf`.
fn sector_of(buf: &[u8]) -> [u8; SECTOR] {
    let mut sector = [0; SECTOR];
    sector.copy_from_slice(&buf[..SECTOR]);
    sector
}

/// The hot-plug part: waits until dom0 detaches `xvda` (its back end goes
/// `Closing`) and closes it cleanly, then waits for `xvdb` to appear
/// (`block-attach`), connects it and runs the test on it.
fn hot_plug(
    console: &mut Console,
    xb: &mut Xenbus<WindowRing>,
    disk: Disk,
    seed: u64,
    base: u64,
    ranges: u64,
    max: u64,
) {
    let closing = handshake::wait_until(xb, disk.backend(), |s| {
        matches!(s, XenbusState::Closing | XenbusState::Closed)
    });
    let _ = writeln!(
        console,
        "check: xvda back end closing = {}\r",
        Shown(closing.map(|_| ()))
    );
    let closed = Shown(disk.close(xb));
    let _ = writeln!(console, "check: xvda closed = {closed}\r");
    let mut dir = [0u8; 24];
    let appeared = handshake::front_dir(XVDB, &mut dir)
        .and_then(|dir| handshake::wait_for_device(xb, dir, HOTPLUG_TRIES));
    let _ = writeln!(console, "check: xvdb hot-plugged = {}\r", Shown(appeared));
    if let Some(mut disk) = attach(console, xb, XVDB, XVDB_WINDOWS, "xvdb", Features::ALL) {
        exercise(console, &mut disk, "xvdb", seed + 1, base, ranges, max);
    }
}

/// The read-only second disk `xvdb`: a read works, a write is refused.
fn read_only(console: &mut Console, si: &StartInfo) {
    let Some((mut disk, _)) = connect_disk(console, si, XVDB, XVDB_WINDOWS, "xvdb") else {
        return;
    };
    let mut buf = [0u8; 2 * SECTOR];
    let read = Shown(disk.read(0, &mut buf));
    let _ = writeln!(console, "check: xvdb read = {read}\r");
    let write = Shown(disk.write(0, &buf));
    let _ = writeln!(console, "check: xvdb write = {write}\r");
}
