//! The demo domU as a xenstore client (command-line word `xenstore`):
//! every answer it gets is printed as a `check:` line, which dom0 turns
//! into one of its checks, so the run compares with Xen 4.17 value by
//! value. Includes what a hostile client tries: other domains' and dom0's
//! nodes, malformed and privileged requests, and each quota.

use core::fmt::Write;

use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::dom0_abi::xenstore::{XenbusState, XsType};
use guest_pv_shim::shared;
use guest_pv_shim::xenbus::{WindowRing, Xenbus, XenbusError};
use pv_bench::stats::Samples;
use pv_bench::{catalogue, line};

use crate::Console;

/// The window the store ring is mapped in.
const STORE_WINDOW: usize = 2;
/// The benchmark [`read_bench`] measures.
const BENCH: &str = "xenstore_read";

/// A result as a check value: the text of a reply, or the error's name.
struct Shown<'a>(Result<&'a [u8], XenbusError>);

impl core::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Ok(bytes) => write!(f, "{:?}", core::str::from_utf8(bytes).unwrap_or("?")),
            Err(e) => f.write_str(e.name()),
        }
    }
}

fn show(console: &mut Console, what: &str, result: Result<&[u8], XenbusError>) {
    let _ = write!(console, "check: xs {what} = {}\r\n", Shown(result));
}

fn done(r: Result<(), XenbusError>) -> Result<&'static [u8], XenbusError> {
    r.map(|()| &b"OK"[..])
}

/// The client of the domain's store ring, mapped; `None` (reported as a
/// check) if the ring cannot be mapped.
fn connect(console: &mut Console, si: &StartInfo) -> Option<Xenbus<WindowRing>> {
    match WindowRing::map(
        STORE_WINDOW,
        si.store_mfn,
        si.store_evtchn,
        crate::PATIENCE_NS,
    ) {
        Ok(ring) => Some(Xenbus::new(ring)),
        Err(e) => {
            let _ = write!(console, "check: xs map the store ring = {e}\r\n");
            None
        }
    }
}

/// Runs every check.
pub fn checks(console: &mut Console, si: &StartInfo) {
    let Some(mut xb) = connect(console, si) else {
        return;
    };
    let mut buf = [0u8; 256];
    let mut domid = [0u8; 8];
    let n = xb.read(0, "domid", &mut domid).unwrap_or(0);
    show(console, "read domid", Ok(&domid[..n]));
    let r = xb.read(0, "name", &mut buf).map(|n| &buf[..n]);
    show(console, "read name", r);
    let own: u16 = core::str::from_utf8(&domid[..n])
        .ok()
        .and_then(|d| d.parse().ok())
        .unwrap_or(0);
    let r = xb.domain_path(own, &mut buf).map(|n| &buf[..n]);
    show(console, "get_domain_path", r);
    let r = xb.read(0, "console/type", &mut buf).map(|n| &buf[..n]);
    show(console, "read console/type", r);
    show(
        console,
        "write data/greeting",
        done(xb.write(0, "data/greeting", b"hi")),
    );
    let r = xb.read(0, "data/greeting", &mut buf).map(|n| &buf[..n]);
    show(console, "read data/greeting", r);
    let r = xb.directory(0, "data", &mut buf).map(|n| &buf[..n]);
    show(console, "directory data", r);
    let r = xb
        .get_perms(0, "data/greeting", &mut buf)
        .map(|n| &buf[..n]);
    show(console, "get_perms data/greeting", r);
    let r = xb.read(0, "data/missing", &mut buf).map(|n| &buf[..n]);
    show(console, "read a missing node", r);

    // Permissions: another domain's home, dom0-only and read-only nodes.
    let r = xb
        .read(0, "/local/domain/0/name", &mut buf)
        .map(|n| &buf[..n]);
    show(console, "read dom0's name", r);
    let r = xb
        .directory(0, "/local/domain/0", &mut buf)
        .map(|n| &buf[..n]);
    show(console, "directory dom0's home", r);
    show(
        console,
        "write under /tool",
        done(xb.write(0, "/tool/mine", b"x")),
    );
    show(
        console,
        "write its own name",
        done(xb.write(0, "name", b"evil")),
    );
    show(console, "rm its console", done(xb.rm(0, "console")));
    show(
        console,
        "give data/greeting to dom0",
        done(xb.set_perms(0, "data/greeting", &["n0"])),
    );
    let r = xb.set_perms(0, "data/greeting", &["n1", "r0", "r2", "r3", "r4", "r5"]);
    show(console, "six permission entries", done(r));

    // Watches: the initial event, then one per change below the path.
    show(console, "watch data/w", done(xb.watch("data/w", "tok")));
    let r = xb.wait_event(&mut buf).map(|(path, _)| path);
    show(console, "first event", r);
    show(
        console,
        "write data/w/x",
        done(xb.write(0, "data/w/x", b"1")),
    );
    let r = xb.wait_event(&mut buf).map(|(path, _)| path);
    show(console, "event after the write", r);
    show(console, "watch it again", done(xb.watch("data/w", "tok")));
    show(console, "unwatch", done(xb.unwatch("data/w", "tok")));
    show(console, "unwatch again", done(xb.unwatch("data/w", "tok")));

    // Transactions: a conflicting commit, then a clean one.
    let conflict = xb.transaction_start().and_then(|tx| {
        xb.read(tx, "data/greeting", &mut buf)?;
        xb.write(tx, "data/from-tx", b"1")?;
        xb.write(0, "data/greeting", b"changed meanwhile")?;
        xb.transaction_end(tx, true)
    });
    show(console, "conflicting commit", done(conflict));
    let r = xb.read(0, "data/from-tx", &mut buf).map(|n| &buf[..n]);
    show(console, "read what the failed commit wrote", r);
    let clean = xb.transaction_start().and_then(|tx| {
        xb.write(tx, "data/from-tx", b"2")?;
        xb.transaction_end(tx, true)
    });
    show(console, "clean commit", done(clean));
    let r = xb.read(0, "data/from-tx", &mut buf).map(|n| &buf[..n]);
    show(console, "read what the commit wrote", r);

    // XenbusState as a front end writes it.
    let r = xb.set_state(0, "data/vdev", XenbusState::Initialising);
    show(console, "set state Initialising", done(r));
    let r = xb.state(0, "data/vdev").map(|s| s.name().as_bytes());
    show(console, "read state", r);

    hostile(console, &mut xb, &mut buf);
    quotas(console, &mut xb);
}

/// Malformed and privileged requests.
fn hostile(console: &mut Console, xb: &mut Xenbus<WindowRing>, buf: &mut [u8]) {
    let mut out = [0u8; 64];
    for (what, ty, payload) in [
        ("read without a NUL", XsType::Read as u32, &b"name"[..]),
        ("read with two paths", XsType::Read as u32, b"name\0domid\0"),
        ("unknown type", 99, b"x\0"),
        (
            "watch with three strings",
            XsType::Watch as u32,
            b"data\0t\0d\0",
        ),
        ("introduce", XsType::Introduce as u32, b"9\x001\x001\0"),
        ("release", XsType::Release as u32, b"0\0"),
        (
            "is_domain_introduced",
            XsType::IsDomainIntroduced as u32,
            b"0\0",
        ),
        ("relative path with //", XsType::Read as u32, b"data//x\0"),
    ] {
        let (msg, len) = frame(ty, payload);
        let r = xb.raw_request(&msg[..len], &mut out).map(|n| &out[..n]);
        show(console, what, r);
    }
    let r = xb.read(9, "name", buf).map(|n| &buf[..n]);
    show(console, "read in an unknown transaction", r);
}

/// A request of type `ty` with a short `payload`, as bytes, and its length.
fn frame(ty: u32, payload: &[u8]) -> ([u8; 64], usize) {
    let mut msg = [0u8; 64];
    msg[..4].copy_from_slice(&ty.to_le_bytes());
    msg[4..8].copy_from_slice(&0x4242u32.to_le_bytes());
    #[allow(clippy::cast_possible_truncation, reason = "short payloads")]
    msg[12..16].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    msg[16..16 + payload.len()].copy_from_slice(payload);
    (msg, 16 + payload.len())
}

/// Repeats `attempt(i)` for i = 0, 1, ... until it fails (or `limit`
/// attempts succeed: `Protocol`, the quota never came); the successes and
/// the error.
fn until_refused(
    limit: u32,
    mut attempt: impl FnMut(u32) -> Result<(), XenbusError>,
) -> (u32, XenbusError) {
    for i in 0..limit {
        if let Err(e) = attempt(i) {
            return (i, e);
        }
    }
    (limit, XenbusError::Protocol)
}

/// Reports how many attempts fit under a quota and the error beyond.
fn report_quota(console: &mut Console, what: &str, (fit, error): (u32, XenbusError)) {
    let _ = write!(console, "check: xs {what} that fit = {fit}\r\n");
    show(console, what, Err(error));
}

/// Each per-domain quota, hit from inside: the count that fit and the
/// error beyond.
fn quotas(console: &mut Console, xb: &mut Xenbus<WindowRing>) {
    let mut path = [0u8; 32];
    let children = until_refused(2000, |i| {
        xb.write(0, format_into(&mut path, format_args!("data/q/{i}")), b"")
    });
    report_quota(console, "children of one node (its record size)", children);
    show(console, "rm data/q", done(xb.rm(0, "data/q")));
    let r = xb.write(0, "data/q", b"");
    show(console, "a node once there is room", done(r));

    let nodes = until_refused(2000, |i| {
        let name = format_into(&mut path, format_args!("data/n/{}/{}", i / 25, i % 25));
        xb.write(0, name, b"")
    });
    report_quota(console, "nodes (the node quota)", nodes);
    show(console, "rm data/n", done(xb.rm(0, "data/n")));

    let big = [b'v'; 2100];
    show(
        console,
        "a 2100-byte value",
        done(xb.write(0, "data/big", &big)),
    );
    let r = xb.write(0, "data/big", &big[..1900]);
    show(console, "a 1900-byte value", done(r));

    let watches = until_refused(500, |i| {
        xb.watch("data", format_into(&mut path, format_args!("w{i}")))
    });
    report_quota(console, "watches", watches);

    let transactions = until_refused(100, |_| xb.transaction_start().map(|_| ()));
    report_quota(console, "transactions", transactions);
    let r = xb.request(XsType::ResetWatches, 0, &[&[]], false, &mut [0; 3]);
    show(console, "reset_watches", r.map(|_| &b"OK"[..]));
    let r = xb
        .transaction_start()
        .and_then(|tx| xb.transaction_end(tx, false));
    show(console, "a transaction after the reset", done(r));
}

/// Formats into `buf` (truncated to fit) and returns the text.
pub fn format_into<'b>(buf: &'b mut [u8; 32], args: core::fmt::Arguments<'_>) -> &'b str {
    struct Cursor<'c> {
        buf: &'c mut [u8; 32],
        len: usize,
    }
    impl Write for Cursor<'_> {
        fn write_str(&mut self, s: &str) -> core::fmt::Result {
            let room = self.buf.len() - self.len;
            let n = s.len().min(room);
            self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
            self.len += n;
            Ok(())
        }
    }
    let mut cursor = Cursor { buf, len: 0 };
    let _ = cursor.write_fmt(args);
    let len = cursor.len;
    core::str::from_utf8(&buf[..len]).unwrap_or("")
}

/// `xsread=<n>`: times `n` reads of the domain's own `name` node (a
/// request on the store ring, dom0's xenstored answering, the reply read
/// back), checks every answer, and prints the round trips' TSC deltas as
/// a `BENCH xenstore_read` line (the first tenth are warm-up), which dom0
/// passes on for `cargo xtask bench`.
pub fn read_bench(console: &mut Console, si: &StartInfo, rounds: u32) {
    let Some(mut xb) = connect(console, si) else {
        return;
    };
    let mut name = [0u8; 64];
    let mut expected = [0u8; 64];
    let Ok(len) = xb.read(0, "name", &mut expected) else {
        let _ = write!(
            console,
            "check: xs read name before the benchmark = failed\r\n"
        );
        return;
    };
    let mut samples = Samples::new();
    let mut answered = 0;
    for round in 0..rounds {
        let start = shared::tsc();
        let read = xb.read(0, "name", &mut name);
        let ticks = shared::tsc().saturating_sub(start);
        if read.map(|n| &name[..n]) != Ok(&expected[..len]) {
            break;
        }
        if round >= rounds / 10 {
            samples.record(ticks);
        }
        answered += 1;
    }
    let _ = write!(
        console,
        "check: xs reads answered = {answered} of {rounds}\r\n"
    );
    let summary = catalogue::find(BENCH)
        .and_then(|bench| Some((bench.unit, samples.summary(bench.items_per_sample)?)))
        .filter(|_| answered == rounds);
    let _ = match summary {
        Some((unit, summary)) => line::write_measured(console, BENCH, unit, &summary),
        None => line::write_failed(console, BENCH),
    };
}
