//! The demo domU's event and CPU work for dom0's multi-domain tests:
//! `pong` answers every event dom0 sends on a port of its own (the
//! cross-domain wake test and the interdomain ping-pong benchmark),
//! `spin=<n>` does a fixed amount of work (the fairness test), and `idle`
//! sleeps for good (the many-domains test).

use core::fmt::Write;

use guest_pv_shim::dom0_abi::event_channel::EvtchnAllocUnbound;
use guest_pv_shim::{cmdline, hypercall, shared};

use crate::Console;

/// `DOMID_SELF`.
const DOMID_SELF: u16 = 0x7FF0;
/// Rounds when `rounds=` is absent.
const DEFAULT_ROUNDS: u32 = 16;

/// The numeric value of `key=` on `line`.
pub fn number(line: &[u8], key: &[u8]) -> Option<u64> {
    cmdline::option(line, key)
        .and_then(|v| core::str::from_utf8(v).ok())
        .and_then(|v| v.parse().ok())
}

/// `pong [rounds=<n>]`: allocates a port for dom0, announces it as
/// `pong: port <p> rounds <n>`, then `n` times sleeps in `SCHEDOP_poll`
/// on it (no timeout: only dom0's send can wake it), clears it and sends
/// back. Reports how many rounds were answered.
pub fn pong(console: &mut Console, line: &[u8]) -> core::fmt::Result {
    let rounds = number(line, b"rounds")
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(DEFAULT_ROUNDS);
    let mut alloc = EvtchnAllocUnbound {
        dom: DOMID_SELF,
        remote_dom: 0,
        port: 0,
    };
    let ret = hypercall::evtchn_alloc_unbound(&mut alloc);
    let mapped = shared::map();
    writeln!(
        console,
        "check: port for dom0 = {ret}, shared_info {mapped}\r"
    )?;
    if ret != 0 || mapped != 0 {
        return Ok(());
    }
    writeln!(console, "pong: port {} rounds {rounds}\r", alloc.port)?;
    let mut answered = 0;
    for _ in 0..rounds {
        if hypercall::sched_poll(&[alloc.port], 0) != 0
            || shared::clear_evtchn_pending(alloc.port) != Some(true)
            || hypercall::evtchn_send(alloc.port) != 0
        {
            break;
        }
        answered += 1;
    }
    writeln!(console, "check: rounds answered = {answered} of {rounds}\r")?;
    let _ = hypercall::evtchn_close(alloc.port);
    Ok(())
}

/// `spin=<n>`: `n` rounds of a fixed piece of work (a few arithmetic
/// instructions the compiler cannot fold away), then says it is done (a
/// plain line: which of two equal domains finishes first is a race). The
/// same instructions on every hypervisor: the fairness test's unit of
/// guest work.
pub fn spin(console: &mut Console, line: &[u8]) -> core::fmt::Result {
    let Some(rounds) = number(line, b"spin") else {
        return Ok(());
    };
    let mut x = 1u64;
    for i in 0..rounds {
        x = core::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i));
    }
    core::hint::black_box(x);
    writeln!(console, "domu-demo: {rounds} rounds of work done\r")
}

/// `idle`: sleeps in `SCHEDOP_poll` on `port` (its console's, which dom0
/// does not bind in the many-domains test) with no timeout, for good: an
/// idle domain until dom0 destroys it.
pub fn idle(port: u32) -> ! {
    let _ = shared::map();
    loop {
        hypercall::sched_poll(&[port], 0);
        let _ = shared::clear_evtchn_pending(port);
    }
}
