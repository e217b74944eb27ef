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
//! works, a write is refused.

use core::fmt::Write;

use guest_pv_shim::blkfront::MAX_REQUEST_BYTES;
use guest_pv_shim::cmdline;
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::rng::Rng;
use pv_tests::disk::{SECTOR, Written, pattern};

use crate::Console;
use crate::blk::{BUF, DISK_WINDOWS, Shown, XVDA, XVDB, XVDB_WINDOWS, connect_disk};

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

/// Runs the test on `xvda`.
pub fn run(console: &mut Console, si: &StartInfo) {
    let Some((mut disk, _)) = connect_disk(console, si, XVDA, DISK_WINDOWS, "xvda") else {
        let _ = writeln!(console, "disk: no disk\r");
        return;
    };
    let seed = number(si, b"seed", 1);
    let base = number(si, b"base", 0);
    let ranges = number(si, b"ranges", 8);
    let sectors = disk.info.sectors;
    let max = number(si, b"max", 32_768).min(sectors);
    let mut rng = Rng::new(seed.wrapping_mul(0x2545_F491_4F6C_DD1D));
    let mut buf = BUF.lock();
    let (mut written, mut intact, mut moved) = (0u64, 0u64, 0u64);
    let mut failure = None;
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
        while at < count && failure.is_none() {
            let n = (count - at).min(CHUNK_SECTORS);
            #[allow(clippy::cast_possible_truncation, reason = "at most 88 sectors")]
            let bytes = &mut buf[..n as usize * SECTOR];
            fill(bytes, range.sector + at, seed);
            if let Err(e) = disk.write(start + at, bytes) {
                failure = Some(e);
            }
            at += n;
        }
        if let Some(e) = failure {
            let _ = writeln!(console, "check: xvda write of range {index} = {e}\r");
            break;
        }
        let _ = writeln!(console, "{range}\r");
        written += 1;
        moved += count;
        let (mut at, mut same) = (0, true);
        let mut one = [0u8; SECTOR];
        while at < count {
            let n = (count - at).min(CHUNK_SECTORS);
            #[allow(clippy::cast_possible_truncation, reason = "at most 88 sectors")]
            let len = n as usize * SECTOR;
            if let Err(e) = disk.read(start + at, &mut buf[..len]) {
                let _ = writeln!(console, "check: xvda read of range {index} = {e}\r");
                same = false;
                break;
            }
            for (i, got) in buf[..len].chunks(SECTOR).enumerate() {
                pattern(range.sector + at + i as u64, seed, &mut one);
                same &= got == one;
            }
            at += n;
        }
        intact += u64::from(same);
    }
    let _ = writeln!(console, "check: xvda ranges written = {written}\r");
    let _ = writeln!(console, "check: xvda ranges read back intact = {intact}\r");
    let flushed = Shown(disk.flush());
    let _ = writeln!(console, "check: xvda flush = {flushed}\r");
    let past = Shown(disk.read(sectors, &mut buf[..SECTOR]));
    let _ = writeln!(console, "check: xvda read past the end = {past}\r");
    drop(buf);
    let ok = written == ranges && intact == ranges && matches!(flushed.0, Ok(()));
    let _ = writeln!(
        console,
        "disk: wrote, read back and verified {intact} of {ranges} ranges ({} KiB) on a \
         disk of {sectors} sectors, flushed: {}\r",
        moved / 2,
        if ok { "ok" } else { "FAILED" }
    );
    if cmdline::has_flag(si.cmdline(), b"ro") {
        read_only(console, si);
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
