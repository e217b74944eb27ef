//! The CMOS real-time clock: its date and time registers, read once at
//! boot for the wall clock (decoded by `crate::wallclock`).
//!
//! A register is read by writing its index to port 0x70 and reading port
//! 0x71. While status register A's bit 7 (update in progress) is set the
//! clock is changing its registers, so a read waits for it to clear, and
//! two reads in a row must agree (an update may start between them).
//! Bit 7 of the index is the NMI mask; every index written here leaves it
//! clear, as the firmware leaves it.
//!
//! After boot the registers belong to the hardware domain, through the
//! emulated ports of `crate::ioport` ([`guest_read`], [`guest_write`]):
//! the index/data pair is taken under [`LOCK`] so that two CPUs' accesses
//! do not interleave.
use core::hint::spin_loop;

use crate::wallclock::RtcRegisters;

use super::io::{inb, outb};
use super::time::now_ns;

/// The index port.
const INDEX: u16 = 0x70;
/// The data port.
const DATA: u16 = 0x71;

/// Register indices.
const SECONDS: u8 = 0x00;
const MINUTES: u8 = 0x02;
const HOURS: u8 = 0x04;
const DAY: u8 = 0x07;
const MONTH: u8 = 0x08;
const YEAR: u8 = 0x09;
const STATUS_A: u8 = 0x0a;
const STATUS_B: u8 = 0x0b;
/// Status register A: an update of the time registers is in progress.
const UPDATE_IN_PROGRESS: u8 = 1 << 7;

/// How long to wait for an update to end (one takes under 2 ms).
const UPDATE_WAIT_NS: u64 = 10_000_000;
/// Reads after the first before giving up on two that agree.
const ATTEMPTS: u32 = 8;

/// Held across an index write and the data access that follows it.
static LOCK: spin::Mutex<()> = spin::Mutex::new(());

/// Register `index` (below 0x80) for a domain with the RTC's ports.
pub fn guest_read(index: u8) -> u8 {
    let _held = LOCK.lock();
    read_register(index)
}

/// Writes register `index` (below 0x80) for a domain with the RTC's ports.
pub fn guest_write(index: u8, value: u8) {
    let _held = LOCK.lock();
    // SAFETY: the index keeps NMIs unmasked; what the register holds is
    // the domain's business (Xen lets its hardware domain write it too):
    // the hypervisor reads the clock only at boot.
    unsafe {
        outb(INDEX, index & 0x7f);
        outb(DATA, value);
    }
}

/// Register `index` (below 0x80).
fn read_register(index: u8) -> u8 {
    // SAFETY: guests reach the RTC only through `guest_read` and
    // `guest_write`, under the lock (boot reads it before any guest runs);
    // selecting a register below 0x80 (NMIs stay unmasked) and reading it
    // changes no state of the clock.
    unsafe {
        outb(INDEX, index & 0x7f);
        inb(DATA)
    }
}

/// Waits until no update is in progress; `false` if one lasts longer than
/// an update can (no RTC answers, or it is stuck).
fn wait_for_update() -> bool {
    let start = now_ns();
    while read_register(STATUS_A) & UPDATE_IN_PROGRESS != 0 {
        if now_ns().wrapping_sub(start) > UPDATE_WAIT_NS {
            return false;
        }
        spin_loop();
    }
    true
}

/// One read of every register, after any update in progress.
fn read_once(century: Option<u8>) -> Option<RtcRegisters> {
    wait_for_update().then(|| RtcRegisters {
        seconds: read_register(SECONDS),
        minutes: read_register(MINUTES),
        hours: read_register(HOURS),
        day: read_register(DAY),
        month: read_register(MONTH),
        year: read_register(YEAR),
        century: century.map(read_register),
        status_b: read_register(STATUS_B),
    })
}

/// Reads the date and time registers (and the century register at CMOS
/// index `century`, if any) until two reads in a row agree; returns them
/// with the system time of the read. `None` if an update never ends or
/// no two reads agree.
pub fn read(century: Option<u8>) -> Option<(RtcRegisters, u64)> {
    let mut last = read_once(century)?;
    for _ in 0..ATTEMPTS {
        let next = read_once(century)?;
        let at = now_ns();
        if next == last {
            return Some((next, at));
        }
        last = next;
    }
    None
}
