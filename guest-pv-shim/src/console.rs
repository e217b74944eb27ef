//! Console output, and `print!`/`println!`.
//!
//! The initial domain writes to the hypervisor's console (serial line)
//! with `CONSOLEIO_write`. Any other domain (which Xen refuses
//! `console_io`) writes to its console ring ([`RingConsole`]), which the
//! toolstack's console back end in dom0 serves: the boot entry attaches it
//! ([`attach`]) before the guest's `main` runs. Each `print!` formats
//! into a small buffer and writes it in as few pieces as possible, so a
//! short line reaches the console in one piece. Failed writes are dropped
//! (like XTF, the guest has nowhere else to report); a ring write waits
//! for room at most [`RING_PATIENCE_NS`]. Newlines are sent as `\n` only.

#![forbid(unsafe_code)]

use core::fmt;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use dom0_abi::start_info::StartInfo;

use crate::console_ring::ConsoleRing;
use crate::hypercall::{self, console_write};
use crate::mm::MappedPage;
use crate::shared;

/// How long a ring write waits for the back end to make room (system
/// time without progress) before the rest of the output is dropped.
pub const RING_PATIENCE_NS: u64 = 10_000_000_000;

/// Where the console ring is mapped once [`attach`]ed (0: none, output
/// goes to `console_io`), and its event channel. The address is found
/// once: the guest may later change the M2P entry of the ring's frame
/// (a fuzzer does), which must not cut its output.
static RING_VA: AtomicU64 = AtomicU64::new(0);
static RING_PORT: AtomicU32 = AtomicU32::new(0);

/// Makes a domain that is not the initial domain print to its console
/// ring (`start_info.console.domU`), which must lie in the initial
/// mapping as the domain builders put it; maps `shared_info` for the
/// clock the waits read. The initial domain keeps `console_io`.
pub fn attach(si: &StartInfo) {
    if si.is_initdomain() {
        return;
    }
    let mfn = si.console.domu_mfn();
    if mfn == 0 {
        return;
    }
    if let Some(page) = MappedPage::own_frame(mfn)
        && shared::map() == 0
    {
        RING_PORT.store(si.console.domu_evtchn(), Ordering::Relaxed);
        RING_VA.store(page.va(), Ordering::Relaxed);
    }
}

/// The console ring, if [`attach`] found one.
#[must_use]
pub fn ring() -> Option<RingConsole> {
    let va = RING_VA.load(Ordering::Relaxed);
    (va != 0).then(|| RingConsole {
        ring: ConsoleRing::new(MappedPage::again(va)),
        port: RING_PORT.load(Ordering::Relaxed),
    })
}

/// This domain's console ring with its event channel: output that waits
/// for room, input read by line.
pub struct RingConsole {
    ring: ConsoleRing<MappedPage>,
    port: u32,
}

impl RingConsole {
    /// The console's event channel.
    #[must_use]
    pub fn port(&self) -> u32 {
        self.port
    }

    /// Writes `text`, notifying the back end after each piece and waiting
    /// (at most [`RING_PATIENCE_NS`] each time) while the ring is full;
    /// false if the back end never made room (the rest is dropped).
    pub fn write(&mut self, text: &[u8]) -> bool {
        let mut rest = text;
        while !rest.is_empty() {
            let written = self.ring.put(rest);
            rest = &rest[written..];
            if written > 0 {
                hypercall::evtchn_send(self.port);
            } else if !shared::wait_for(Some(self.port), RING_PATIENCE_NS, || self.ring.room() > 0)
            {
                return false;
            }
        }
        true
    }

    /// Waits (at most [`RING_PATIENCE_NS`]) until the back end has read
    /// everything; false if it did not.
    pub fn drained(&self) -> bool {
        shared::wait_for(Some(self.port), RING_PATIENCE_NS, || self.ring.drained())
    }

    /// Reads console input up to a CR or LF (at most `line.len()` bytes
    /// kept, the rest of a longer line dropped), sleeping on the console's
    /// event channel between reads: the line's length, or `None` if none
    /// ended within `patience_ns` of system time.
    pub fn read_line(&mut self, line: &mut [u8], patience_ns: u64) -> Option<usize> {
        let mut len = 0;
        let mut ended = false;
        let ring = &mut self.ring;
        shared::wait_for(Some(self.port), patience_ns, || {
            let mut byte = [0u8];
            while !ended && ring.take(&mut byte) == 1 {
                if matches!(byte[0], b'\r' | b'\n') {
                    ended = true;
                } else if let Some(slot) = line.get_mut(len) {
                    *slot = byte[0];
                    len += 1;
                }
            }
            ended
        })
        .then_some(len)
    }
}

impl fmt::Write for RingConsole {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.write(s.as_bytes()) {
            Ok(())
        } else {
            Err(fmt::Error)
        }
    }
}

/// Writes `bytes` where this domain's output goes.
fn write_out(bytes: &[u8]) {
    match ring() {
        Some(mut ring) => {
            ring.write(bytes);
        }
        None => {
            console_write(bytes);
        }
    }
}

/// This domain's console (`console_io` or its ring, see the module) as a
/// [`fmt::Write`] sink (unbuffered).
#[derive(Clone, Copy, Debug, Default)]
pub struct Console;

impl fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_out(s.as_bytes());
        Ok(())
    }
}

/// Bytes collected before a write hypercall.
const BUFFER_SIZE: usize = 256;

/// A buffer in front of [`Console`], flushed when full and when dropped.
/// Output collected and written with one `console_io` write per
/// [`BUFFER_SIZE`] bytes (and at drop), so that a line is not split
/// between hypercalls where other output (the hypervisor's, another
/// domain's) could land inside it.
pub(crate) struct Buffered {
    buf: [u8; BUFFER_SIZE],
    len: usize,
}

impl Buffered {
    /// An empty buffer.
    pub(crate) const fn new() -> Buffered {
        Buffered {
            buf: [0; BUFFER_SIZE],
            len: 0,
        }
    }

    fn flush(&mut self) {
        if self.len > 0 {
            write_out(&self.buf[..self.len]);
            self.len = 0;
        }
    }
}

impl fmt::Write for Buffered {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for &b in s.as_bytes() {
            if self.len == BUFFER_SIZE {
                self.flush();
            }
            self.buf[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}

impl Drop for Buffered {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Prints formatted text; used by [`print!`](crate::print) and
/// [`println!`](crate::println).
pub fn print_fmt(args: fmt::Arguments<'_>) {
    let mut out = Buffered::new();
    let _ = fmt::Write::write_fmt(&mut out, args);
}

/// Prints to the hypervisor console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::console::print_fmt(format_args!($($arg)*))
    };
}

/// Prints to the hypervisor console, followed by `\n`.
#[macro_export]
macro_rules! println {
    () => {
        $crate::console::print_fmt(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::console::print_fmt(format_args!("{}\n", format_args!($($arg)*)))
    };
}
