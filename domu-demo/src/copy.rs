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
//! mark, then keeps its grant a little longer for the peer's last copies.

use core::fmt::Write;

use guest_pv_shim::dom0_abi::grant_table::{GNTCOPY_SOURCE_GREF, GnttabCopy, GnttabCopyPtr};
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
            domid: 0x7FF0,
            offset: 0,
            pad: 0,
        },
        len: 16,
        flags: GNTCOPY_SOURCE_GREF,
        ..GnttabCopy::default()
    };
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
        if ret == 0 && op.status == 0 && word == PATTERN {
            tally.good += 1;
            peer_done = mark == DONE;
        } else if tally.good == 0 {
            // The peer is not there yet, or has not granted yet.
            hypercall::sched_yield();
        } else {
            tally.bad += 1;
            tally.first_bad.get_or_insert((ret, op.status, word));
        }
        if tally.good == rounds && mm::window_read(GRANTED_WINDOW, 1) != DONE {
            mm::window_write(GRANTED_WINDOW, 1, DONE);
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
    let until = shared::system_time_of(0)
        .unwrap_or(0)
        .saturating_add(LINGER_NS);
    while shared::system_time_of(0).is_some_and(|now| now < until) {
        hypercall::sched_yield();
    }
    mm::end_grant_access(TABLE_WINDOW, GREF);
    Ok(())
}
