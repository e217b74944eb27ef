//! dom0's side of the cross-domain wake test and of the interdomain
//! ping-pong benchmark (`domu-demo pong`).
//!
//! A domU's console line `pong: port <p> rounds <n>` makes dom0 bind an
//! interdomain channel to that port, wait until the domU is blocked (in
//! `SCHEDOP_poll` on it, with no timeout: only dom0's event can wake it),
//! and then bounce `n` events: send, sleep in `SCHEDOP_poll` on its own
//! end until the answer (at most [`ROUND_LIMIT_NS`]), clear it. Checks:
//! every round answered, and the slowest round within [`AT_ONCE_NS`] of
//! system time (the domU woken at once, not by a later tick; the tests
//! run under `-icount`, where a nanosecond is an instruction). Each
//! round's TSC delta also goes into a `BENCH evtchn_interdomain_pingpong`
//! line (the first tenth of the rounds are warm-up), which `cargo xtask
//! bench` reads.

use alloc::string::String;

use guest_pv_shim::dom0_abi::domctl::DomInfoFlags;
use guest_pv_shim::{hypercall, profile, report, shared};
use pv_bench::stats::Samples;
use pv_bench::{catalogue, line};
use toolstack::xen::domain_info;

use crate::domains::{bind_interdomain, now};

/// The benchmark this measures.
const BENCH: &str = "evtchn_interdomain_pingpong";
/// How long one round may take before it counts as lost.
const ROUND_LIMIT_NS: u64 = 1_000_000_000;
/// The slowest round a wake "at once" may take.
const AT_ONCE_NS: u64 = 5_000_000;
/// How long dom0 waits for the domU to block before the first send.
const PATIENCE_NS: u64 = 5_000_000_000;

/// Acts on one console line of domain `domid` (named `name`): a
/// `pong: port` line starts the ping-pong, and a domU's `BENCH` result
/// line (`domu-demo xsread`) is repeated on dom0's console without the
/// domain prefix, for `cargo xtask bench` to read.
pub fn on_line(domid: u16, name: &str, text: &[u8]) {
    if text.starts_with(line::BENCH.as_bytes()) && text.get(line::BENCH.len()) == Some(&b' ') {
        hypercall::console_write(text);
        hypercall::console_write(b"\n");
        return;
    }
    let Some(rest) = text
        .strip_prefix(b"pong: port ")
        .and_then(|r| core::str::from_utf8(r).ok())
    else {
        return;
    };
    let mut words = rest.split_ascii_whitespace();
    let port = words.next().and_then(|w| w.parse::<u32>().ok());
    let rounds = match (words.next(), words.next()) {
        (Some("rounds"), Some(n)) => n.parse::<u32>().ok(),
        _ => None,
    };
    if let (Some(port), Some(rounds)) = (port, rounds) {
        bounce(domid, name, port, rounds);
    }
}

/// Whether every vCPU of `domid` is blocked.
fn blocked(domid: u16) -> bool {
    domain_info(domid)
        .is_ok_and(|i| i.domain == domid && i.dominf().contains(DomInfoFlags::BLOCKED))
}

/// Bounces `rounds` events with `port` of `domid`.
fn bounce(domid: u16, name: &str, port: u32, rounds: u32) {
    let local = match bind_interdomain(domid, port) {
        Ok(local) => local,
        Err(ret) => {
            report::fail(
                format_args!("{name} ping-pong port bound"),
                format_args!("{ret}"),
            );
            return;
        }
    };
    // Binding sets the new port pending (Xen's guard against a lost
    // notification): not an answer.
    let _ = shared::clear_evtchn_pending(local);
    report::check(
        format_args!("{name} blocked in its poll before dom0 sends"),
        guest_pv_shim::shared::wait_for(None, PATIENCE_NS, || blocked(domid)),
        format_args!("not blocked after {} s", PATIENCE_NS / 1_000_000_000),
    );
    let warmup = rounds / 10;
    let mut samples = Samples::new();
    let (mut answered, mut slowest) = (0, 0);
    for round in 0..rounds {
        if round == warmup {
            profile::begin::<{ catalogue::tag("evtchn_interdomain_pingpong") }>();
        }
        let (start, ticks) = (now(), shared::tsc());
        if hypercall::evtchn_send(local) != 0 {
            break;
        }
        while shared::clear_evtchn_pending(local) != Some(true)
            && now() < start.saturating_add(ROUND_LIMIT_NS)
        {
            hypercall::sched_poll(&[local], start.saturating_add(ROUND_LIMIT_NS));
        }
        let took = now().saturating_sub(start);
        if took >= ROUND_LIMIT_NS {
            break;
        }
        if round >= warmup {
            samples.record(shared::tsc().saturating_sub(ticks));
        }
        answered += 1;
        slowest = slowest.max(took);
    }
    profile::end::<{ catalogue::tag("evtchn_interdomain_pingpong") }>();
    report::check_eq(format_args!("{name} events bounced"), answered, rounds);
    report::check_observed(
        format_args!("{name} woken at once by each event from dom0"),
        answered > 0 && slowest <= AT_ONCE_NS,
        format_args!("slowest round {slowest} ns"),
    );
    report::check_ret(
        format_args!("{name} ping-pong port closed"),
        hypercall::evtchn_close(local),
        0,
    );
    if samples.count() > 0 {
        let mut text = String::new();
        if line::write_catalogued(&mut text, BENCH, &samples).is_ok() {
            hypercall::console_write(text.as_bytes());
        }
    }
}
