//! `console_input`: what is typed on the serial line reaches dom0 through
//! `VIRQ_CONSOLE` and `CONSOLEIO_read`, every byte once and in order.
//!
//! The harness types two bursts (`pv_tests::typed_text::BURSTS`), each
//! once the guest prints its prompt; the guest sleeps in `SCHEDOP_block`
//! until `VIRQ_CONSOLE` wakes it, reads until it has the whole burst,
//! echoes it and compares it byte for byte.
//!
//! Checks, as Xen 4.17 answers them for dom0 (the hypervisor must match):
//! - `VIRQ_CONSOLE` (a global VIRQ) binds on vCPU 0;
//! - with nothing typed, a read returns 0 without touching its buffer
//!   (even a bad one), for any count up to `INT_MAX`; a count above it is
//!   `E2BIG`;
//! - a vCPU blocked in `SCHEDOP_block` wakes with `VIRQ_CONSOLE` once
//!   input arrives;
//! - with input pending: a read of 0 bytes returns 0; a read into an
//!   unmapped or hypervisor buffer is `EFAULT` and takes nothing (the
//!   next reads still return every byte); a read of 1 byte returns 1;
//! - every typed byte is read once, in order, with bit 7 cleared (Xen
//!   passes serial input on as 7-bit characters); the second burst wraps
//!   around the end of the 128-byte input ring and arrives whole too;
//! - once both bursts are read, nothing is pending.
//!
//! A burst that does not arrive within 30 s fails its check (a one-shot
//! timer on `VIRQ_TIMER` wakes the blocked vCPU) instead of hanging.
//!
//! `console_input_polled` types the same bursts with COM1's interrupt
//! turned off (`com1=...,0`; Xen then polls the UART on a timer, this
//! hypervisor when dom0 reads): the guest only calls `CONSOLEIO_read`
//! until each burst is in, and it must arrive whole all the same.
//!
//! `console_input_domu` types the first burst while a domain dom0 started
//! spins (`jmp .`) on the one CPU: `VIRQ_CONSOLE` must still reach dom0,
//! wake it from `SCHEDOP_block` and let it run.

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use guest_pv_shim::dom0_abi::Errno;
use guest_pv_shim::dom0_abi::console::ConsoleIoCmd;
use guest_pv_shim::dom0_abi::domctl::{DomctlCmd, NoPayload};
use guest_pv_shim::dom0_abi::event_channel::{EvtchnBindVirq, Virq};
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::hypercall::{self as hc, console_io_raw, console_read, console_write};
use guest_pv_shim::traps::{self, Disposition, Trap, TrapFrame, VECTOR_EVENT};
use guest_pv_shim::{report, shared};
use pv_tests::typed_text::{BURSTS, Burst, as_read};

use super::BAD_POINTERS;
use super::domctl;
use crate::support;

/// How long a burst may take to arrive.
const BURST_TIMEOUT_NS: u64 = 30_000_000_000;
/// Room for the longest burst.
const BUFFER: usize = 128;

/// The `VIRQ_CONSOLE` port.
static CONSOLE_PORT: AtomicU32 = AtomicU32::new(0);
/// Events taken on the console port.
static CONSOLE_EVENTS: AtomicU64 = AtomicU64::new(0);

/// The upcall protocol for vCPU 0, counting the console port's events.
fn upcall_hook(_frame: &mut TrapFrame, rec: &Trap) -> Disposition {
    if rec.vector != VECTOR_EVENT {
        return Disposition::Default;
    }
    shared::take_pending_ports(0, |port| {
        if port == CONSOLE_PORT.load(Ordering::SeqCst) {
            CONSOLE_EVENTS.fetch_add(1, Ordering::SeqCst);
        }
    });
    Disposition::Return
}

fn now() -> u64 {
    shared::system_time_of(0).unwrap_or(0)
}

/// `CONSOLEIO_read` of `count` bytes into `buffer`, raw.
fn read_raw(count: u64, buffer: u64) -> i64 {
    // SAFETY: a read writes at most `count` bytes at `buffer`; every
    // caller passes either a buffer that is not Rust memory (the call
    // must fail or touch nothing) or a count of 0.
    unsafe { console_io_raw(ConsoleIoCmd::Read as u64, count, buffer) }
}

/// Binds `virq` on vCPU 0; its port, or `None` after an `ERROR` line.
fn bind(virq: Virq, name: &str) -> Option<u32> {
    let mut b = EvtchnBindVirq {
        virq: virq as u32,
        vcpu: 0,
        port: 0,
    };
    let ret = hc::evtchn_bind_virq(&mut b);
    if ret != 0 {
        report::error(
            format_args!("bind {name}"),
            format_args!("{}", report::Ret(ret)),
        );
        return None;
    }
    Some(b.port)
}

/// Traps, the upcall hook, `VIRQ_CONSOLE` and `VIRQ_TIMER` bound, no
/// periodic timer, upcalls masked; `false` (after an `ERROR` line) if any
/// of it failed.
fn set_up() -> bool {
    if !support::traps() {
        return false;
    }
    shared::set_upcall_mask(1);
    traps::set_hook(Some(upcall_hook));
    let mut b = EvtchnBindVirq {
        virq: Virq::Console as u32,
        vcpu: 0,
        port: 0,
    };
    let ret = hc::evtchn_bind_virq(&mut b);
    report::check_ret("VIRQ_CONSOLE binds on vCPU 0", ret, 0);
    if ret != 0 {
        return false;
    }
    CONSOLE_PORT.store(b.port, Ordering::SeqCst);
    // Its events only end a wait for input that takes too long.
    if bind(Virq::Timer, "VIRQ_TIMER").is_none() {
        return false;
    }
    hc::vcpu_stop_periodic_timer(0);
    true
}

/// Sleeps in `SCHEDOP_block` until a console event has been taken since
/// `seen` events, or `deadline` passes; returns whether one was taken
/// before the deadline (one that only comes with the timeout's wake-up is
/// as late as none).
fn wait_for_input(seen: u64, deadline: u64) -> bool {
    hc::set_timer_op(deadline);
    while CONSOLE_EVENTS.load(Ordering::SeqCst) == seen && now() < deadline {
        hc::sched_block();
        shared::set_upcall_mask(1);
    }
    hc::set_timer_op(0);
    CONSOLE_EVENTS.load(Ordering::SeqCst) != seen && now() < deadline
}

pub fn run(_start_info: &'static StartInfo) {
    if !set_up() {
        return;
    }
    nothing_pending("before any typing");
    report::check_ret(
        "read of 2^31 bytes is E2BIG",
        read_raw(1 << 31, 0x1000),
        Errno::E2BIG.neg(),
    );
    report::check_ret(
        "read of 2^31 - 1 bytes with nothing typed returns 0",
        read_raw((1 << 31) - 1, 0x1000),
        0,
    );
    for (index, burst) in BURSTS.iter().enumerate() {
        if !receive(index + 1, burst) {
            return;
        }
    }
    nothing_pending("after both bursts");
}

/// A read with nothing pending returns 0 and leaves even a bad buffer
/// alone.
fn nothing_pending(when: &str) {
    let mut buffer = [0u8; 16];
    report::check_ret(
        format_args!("read {when} returns 0"),
        console_read(&mut buffer),
        0,
    );
    for &(what, ptr) in BAD_POINTERS {
        report::check_ret(
            format_args!("read into {what} {when} returns 0"),
            read_raw(16, ptr),
            0,
        );
    }
}

/// Prints burst `burst`'s prompt.
fn prompt(burst: &Burst) {
    console_write(burst.prompt.as_bytes());
    console_write(b"\n");
}

/// Echoes what was read of burst `number` and checks it against what was
/// typed; returns whether it matched.
fn check_burst(number: usize, burst: &Burst, got: &[u8]) -> bool {
    console_write(b"console_input: echo: ");
    console_write(got);
    console_write(b"\n");
    let mismatch = burst
        .bytes
        .iter()
        .zip(got)
        .position(|(&typed, &read)| as_read(typed) != read);
    report::check(
        format_args!("every byte of burst {number} is read once, in order, 7-bit"),
        got.len() == burst.bytes.len() && mismatch.is_none(),
        format_args!("{} bytes read, first difference at {mismatch:?}", got.len()),
    )
}

/// Prompts for burst `number`, waits for it and reads it whole; `false`
/// when it did not come (the test then stops).
fn receive(number: usize, burst: &Burst) -> bool {
    let seen = CONSOLE_EVENTS.load(Ordering::SeqCst);
    let deadline = now() + BURST_TIMEOUT_NS;
    prompt(burst);
    if !report::check(
        format_args!("VIRQ_CONSOLE wakes the blocked vCPU (burst {number})"),
        wait_for_input(seen, deadline),
        format_args!("no VIRQ_CONSOLE within 30 s"),
    ) {
        return false;
    }
    let mut got = [0u8; BUFFER];
    let mut len = 0;
    if number == 1 {
        len = pending_input(&mut got);
    }
    while len < burst.bytes.len() {
        let n = console_read(&mut got[len..]);
        let Ok(n) = usize::try_from(n) else {
            report::fail(
                format_args!("reads return burst {number}"),
                format_args!("read after {len} bytes: {}", report::Ret(n)),
            );
            return false;
        };
        len += n;
        let seen = CONSOLE_EVENTS.load(Ordering::SeqCst);
        if n == 0 && len < burst.bytes.len() && !wait_for_input(seen, deadline) {
            report::fail(
                format_args!("reads return burst {number}"),
                format_args!("{len} of {} bytes within 30 s", burst.bytes.len()),
            );
            return false;
        }
    }
    check_burst(number, burst, &got[..len])
}

/// `console_input_polled`: each burst read by calling `CONSOLEIO_read`
/// until it is in (no event is waited for).
pub fn run_polled(_start_info: &'static StartInfo) {
    if !support::traps() {
        return;
    }
    for (index, burst) in BURSTS.iter().enumerate() {
        let number = index + 1;
        let deadline = now() + BURST_TIMEOUT_NS;
        prompt(burst);
        let mut got = [0u8; BUFFER];
        let mut len = 0;
        while len < burst.bytes.len() && now() < deadline {
            let n = console_read(&mut got[len..]);
            let Ok(n) = usize::try_from(n) else {
                report::fail(
                    format_args!("reads return burst {number}"),
                    format_args!("read after {len} bytes: {}", report::Ret(n)),
                );
                return;
            };
            len += n;
        }
        if !check_burst(number, burst, &got[..len]) {
            return;
        }
    }
    let mut buffer = [0u8; 16];
    report::check_ret(
        "read after both bursts returns 0",
        console_read(&mut buffer),
        0,
    );
}

/// The checks that need input pending (the first burst has woken the
/// guest, so at least one byte is): bad buffers take nothing, a short
/// read takes what it asks for. Returns the bytes it read into `got`.
fn pending_input(got: &mut [u8; BUFFER]) -> usize {
    report::check_ret(
        "read of 0 bytes with input pending returns 0",
        read_raw(0, 0x1000),
        0,
    );
    for &(what, ptr) in BAD_POINTERS {
        report::check_ret(
            format_args!("read into {what} with input pending is EFAULT"),
            read_raw(16, ptr),
            Errno::EFAULT.neg(),
        );
    }
    let n = console_read(&mut got[..1]);
    report::check_ret("read of 1 byte with input pending returns 1", n, 1);
    usize::try_from(n).unwrap_or(0)
}

/// `console_input_domu`: the first burst while another domain spins.
pub fn run_with_domu(_start_info: &'static StartInfo) {
    if !set_up() {
        return;
    }
    let Some((id, _)) = domctl::start_domain(&[(0, domctl::SPIN)], 0xc1) else {
        return;
    };
    receive(1, &BURSTS[0]);
    report::check_ret(
        "pausedomain of the spinning domain",
        domctl::call(DomctlCmd::PauseDomain, id, &NoPayload).0,
        0,
    );
    report::check_ret(
        "destroydomain of the spinning domain",
        domctl::call(DomctlCmd::DestroyDomain, id, &NoPayload).0,
        0,
    );
}
