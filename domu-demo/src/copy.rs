//! `copy=<peer> [rounds=<n>]`: two domUs grant each other a page and
//! copy from the other's grant (`GNTTABOP_copy`) as fast as they can, on
//! two CPUs at once. Each copy's call holds the caller's domain and needs
//! the peer's, so the two calls meet: the one that needs the lower id's
//! domain while the other holds it must be continued, never answered as
//! if the peer did not exist. Every copy after the first that finds the
//! peer's grant must succeed and bring the peer's page.
//!
//! The page granted holds [`PATTERN`] and, once this domain has done its
//! `n` copies, a done mark; each side copies until it has seen the peer's
//! mark, then keeps its grant a little longer for the peer's last copies,
//! and reports whether the peer's copies left its grant in use (pinned:
//! `GTF_reading`/`GTF_writing` still set).
//!
//! `copy=<peer> into=<dom>`: the copies go into domain `dom`'s grant
//! instead of a frame of this domain, so each one is between two other
//! domains; after its `n` copies this side copies its done mark there
//! too. `hold=<peer>`: grants a page writable to `peer` and waits for that
//! done mark in it (the destination of `into=`).

use core::fmt::Write;

use guest_pv_shim::dom0_abi::grant_table::{
    GNTCOPY_DEST_GREF, GNTCOPY_SOURCE_GREF, GnttabCopy, GnttabCopyPtr, GtfFlags,
};
use guest_pv_shim::dom0_abi::types::DomId;
use guest_pv_shim::{hypercall, mm, shared};

use crate::{Console, PATIENCE_NS, events};

/// Windows: the grant table's first frame, the page granted, the page
/// copied into.
const TABLE_WINDOW: usize = 5;
const GRANTED_WINDOW: usize = 6;
const COPY_WINDOW: usize = 7;
/// The reference granted to the peer.
const GREF: u32 = 8;
/// Word 0 of the page granted.
const PATTERN: u64 = 0x636f_7079_2d6d_6521;
/// Word 1 once this side has done its copies.
const DONE: u64 = 1;
/// Copies each side does unless `rounds=` says otherwise.
const ROUNDS: u64 = 2000;
/// How long a side keeps its grant after it saw the peer's done mark.
const LINGER_NS: u64 = 200_000_000;

/// What the copies found.
#[derive(Default)]
struct Tally {
    /// Copies that brought the peer's page.
    good: u64,
    /// Copies that failed (call or status) or brought something else,
    /// after the first good one.
    bad: u64,
    /// The first bad one: (call result, status, word 0).
    first_bad: Option<(i64, i16, u64)>,
}

/// Runs the test with domain `peer`; reports each result as a check line.
pub fn run(console: &mut Console, line: &[u8], peer: u16) -> core::fmt::Result {
    let rounds = events::number(line, b"rounds").unwrap_or(ROUNDS);
    let into_dom = events::number(line, b"into").and_then(|n| u16::try_from(n).ok());
    let (ret, status, frame) = crate::own_grant_table();
    let (Some(granted), Some(into)) = (mm::alloc_frame(), mm::alloc_frame()) else {
        return writeln!(console, "check: copy scratch frames = none\r");
    };
    let mapped = [
        mm::map_window(TABLE_WINDOW, frame, mm::PTE_RW),
        mm::map_window(GRANTED_WINDOW, granted.mfn, mm::PTE_RW),
        mm::map_window(COPY_WINDOW, into.mfn, mm::PTE_RW),
    ];
    writeln!(console, "check: copy set-up = {ret}/{status} {mapped:?}\r")?;
    if ret != 0 || mapped != [0; 3] {
        return Ok(());
    }
    mm::fill_window(GRANTED_WINDOW, &[PATTERN, 0]);
    mm::grant_access(
        TABLE_WINDOW,
        GREF,
        peer,
        u32::try_from(granted.mfn).unwrap_or(0),
        true,
    );
    let mut op = GnttabCopy {
        source: GnttabCopyPtr {
            u: u64::from(GREF),
            domid: peer,
            offset: 0,
            pad: 0,
        },
        dest: GnttabCopyPtr {
            u: into.mfn,
            domid: DomId::SELF.0,
            offset: 0,
            pad: 0,
        },
        len: 16,
        flags: GNTCOPY_SOURCE_GREF,
        ..GnttabCopy::default()
    };
    if let Some(dest) = into_dom {
        op.dest.u = u64::from(GREF);
        op.dest.domid = dest;
        op.flags |= GNTCOPY_DEST_GREF;
        // The pattern alone: the peer's done mark must not reach the
        // destination, which stops holding its grant once it sees one.
        op.len = 8;
    }
    let start = shared::system_time_of(0).unwrap_or(0);
    let mut tally = Tally::default();
    let mut peer_done = false;
    while !(peer_done && tally.good >= rounds) {
        let now = shared::system_time_of(0).unwrap_or(u64::MAX);
        if now.saturating_sub(start) > PATIENCE_NS {
            break;
        }
        mm::window_write(COPY_WINDOW, 0, 0);
        mm::window_write(COPY_WINDOW, 1, 0);
        op.status = 0x55;
        let ret = hypercall::gnttab_copy(core::slice::from_mut(&mut op));
        let (word, mark) = (
            mm::window_read(COPY_WINDOW, 0),
            mm::window_read(COPY_WINDOW, 1),
        );
        // Copied into another domain's grant, the page cannot be checked
        // here: that domain checks the last copy.
        let elsewhere = op.flags & GNTCOPY_DEST_GREF != 0;
        if ret == 0 && op.status == 0 && (elsewhere || word == PATTERN) {
            tally.good += 1;
            peer_done = !elsewhere && mark == DONE;
        } else if tally.good == 0 {
            // The peer is not there yet, or has not granted yet.
            hypercall::sched_yield();
        } else {
            tally.bad += 1;
            tally.first_bad.get_or_insert((ret, op.status, word));
        }
        if tally.good == rounds && mm::window_read(GRANTED_WINDOW, 1) != DONE {
            mm::window_write(GRANTED_WINDOW, 1, DONE);
            if let Some(dest) = into_dom {
                // The done mark goes to the destination; the peer's is
                // then looked for in a frame of this domain.
                mark_into(console, &op, granted.mfn, dest)?;
                op.dest = GnttabCopyPtr {
                    u: into.mfn,
                    domid: DomId::SELF.0,
                    offset: 0,
                    pad: 0,
                };
                op.flags = GNTCOPY_SOURCE_GREF;
                op.len = 16;
            }
        }
    }
    let good = tally.good >= rounds;
    writeln!(
        console,
        "check: copies from the peer = {good} {peer_done}\r"
    )?;
    writeln!(
        console,
        "check: failed copies from the peer = {} {:?}\r",
        tally.bad, tally.first_bad
    )?;
    linger_and_end(console, LINGER_NS)
}

/// Copies this domain's granted page, `granted` (with its done mark), to
/// where `op` copies: domain `dest`'s grant.
fn mark_into(console: &mut Console, op: &GnttabCopy, granted: u64, dest: u16) -> core::fmt::Result {
    let mut mark = GnttabCopy {
        source: GnttabCopyPtr {
            u: granted,
            domid: DomId::SELF.0,
            offset: 0,
            pad: 0,
        },
        flags: GNTCOPY_DEST_GREF,
        len: 16,
        status: 0x55,
        ..*op
    };
    let ret = hypercall::gnttab_copy(core::slice::from_mut(&mut mark));
    writeln!(
        console,
        "check: done mark into domain {dest} = {ret}/{}\r",
        mark.status
    )
}

/// `hold=<peer>`: grants a page writable to `peer` and waits (at most
/// [`PATIENCE_NS`]) until word 1 of it holds the done mark `peer` copies
/// there after its own copies (`copy=... into=`, which copy word 0
/// alone); reports what the page holds, then as [`run`] ends.
pub fn hold(console: &mut Console, peer: u16) -> core::fmt::Result {
    let (ret, status, frame) = crate::own_grant_table();
    let Some(granted) = mm::alloc_frame() else {
        return writeln!(console, "check: copy scratch frames = none\r");
    };
    let mapped = [
        mm::map_window(TABLE_WINDOW, frame, mm::PTE_RW),
        mm::map_window(GRANTED_WINDOW, granted.mfn, mm::PTE_RW),
    ];
    writeln!(console, "check: hold set-up = {ret}/{status} {mapped:?}\r")?;
    if ret != 0 || mapped != [0; 2] {
        return Ok(());
    }
    mm::fill_window(GRANTED_WINDOW, &[0, 0]);
    mm::grant_access(
        TABLE_WINDOW,
        GREF,
        peer,
        u32::try_from(granted.mfn).unwrap_or(0),
        false,
    );
    let start = shared::system_time_of(0).unwrap_or(0);
    while mm::window_read(GRANTED_WINDOW, 1) != DONE
        && shared::system_time_of(0).is_some_and(|now| now.saturating_sub(start) <= PATIENCE_NS)
    {
        hypercall::sched_yield();
    }
    writeln!(
        console,
        "check: copied into the held page = {} {}\r",
        mm::window_read(GRANTED_WINDOW, 0) == PATTERN,
        mm::window_read(GRANTED_WINDOW, 1) == DONE
    )?;
    linger_and_end(console, LINGER_NS)
}

/// Keeps the grant `linger` ns longer for the peer's last copies, reports
/// whether they left it in use, and ends it.
fn linger_and_end(console: &mut Console, linger: u64) -> core::fmt::Result {
    let until = shared::system_time_of(0)
        .unwrap_or(0)
        .saturating_add(linger);
    while shared::system_time_of(0).is_some_and(|now| now < until) {
        hypercall::sched_yield();
    }
    let entry = mm::window_read(TABLE_WINDOW, u64::from(GREF)).to_le_bytes();
    let flags = GtfFlags::from_bits_retain(u16::from_le_bytes([entry[0], entry[1]]));
    writeln!(
        console,
        "check: own grant in use after the peer's copies = {}\r",
        flags.intersects(GtfFlags::READING | GtfFlags::WRITING)
    )?;
    mm::end_grant_access(TABLE_WINDOW, GREF);
    Ok(())
}
