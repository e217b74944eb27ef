//! The serial console (COM1): the `log` backend that writes to it, and
//! its input for the hardware domain.
//!
//! Every hypervisor log line starts with `(HV) ` so that a reader (or a test
//! harness) can tell it from dom0's console output, which goes to the same
//! port unprefixed, as on Xen.
//!
//! Input: what arrives on the line goes into the input ring
//! (`crate::console::InputRing`, Xen's semantics) — from the UART's
//! receive interrupt when one is routed ([`enable_receive_interrupts`]),
//! and in any case whenever `CONSOLEIO_read` asks (it drains the UART
//! with [`receive`] before [`read_input`], so input works without
//! interrupts too). Bytes that arrive mark input pending
//! ([`take_input_pending`]); the CPU then raises `VIRQ_CONSOLE` for the
//! hardware domain (`schedule::run_due`).
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use spin::Mutex;
use uart_16550::backend::PioBackend;
use uart_16550::spec::registers::{IER, Parity as UartParity, WordLength};
use uart_16550::{BaudRate, Config, Uart16550};

use crate::cmdline::{Baud, LogLevels, Parity, SerialConfig};
use crate::console::{InputRing, LogRead, LogRing};
use crate::logfilter::{LogFilter, Verdict};

const COM1_PORT: u16 = 0x3f8;

static COM1: Mutex<Option<Uart16550<PioBackend>>> = Mutex::new(None);
static LOGGER: SerialLogger = SerialLogger;
/// `loglvl=` and `guest_loglvl=` with their rate-limiting state; until
/// [`set_log_levels`], every line up to `info` prints.
static FILTER: Mutex<Option<LogFilter>> = Mutex::new(None);
/// Set while the hypervisor is dying: the console lock may be held by the
/// code that failed, so output then bypasses it.
static PANICKING: AtomicBool = AtomicBool::new(false);
/// Console input the hardware domain has not read yet. A leaf lock, like
/// [`COM1`]'s (never held with it: bytes are drained first, stored after).
static INPUT: Mutex<InputRing> = Mutex::new(InputRing::new());
/// Input arrived that the hardware domain has not been told of.
static INPUT_PENDING: AtomicBool = AtomicBool::new(false);
/// The vector of COM1's receive interrupt (0: none is routed).
static RECEIVE_VECTOR: AtomicU8 = AtomicU8::new(0);
/// Bytes taken from the UART per drain at most: a device whose "data
/// ready" never clears cannot hold the CPU (what is left waits for the
/// next interrupt or read).
const DRAIN_LIMIT: usize = 4096;

/// Programs COM1 at 0x3f8 with 115200 8n1 (until the command line says
/// otherwise, see [`configure`]) and installs the logger.
pub fn init() {
    if let Some(uart) = open(COM1_PORT, &boot_config()) {
        *COM1.lock() = Some(uart);
    }
    // A second call (never made) would only fail to replace the logger.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
}

/// Applies the command line's `loglvl=` and `guest_loglvl=`
/// (`crate::logfilter`).
pub fn set_log_levels(loglvl: LogLevels, guest_loglvl: LogLevels) {
    let filter = LogFilter::new(loglvl, guest_loglvl);
    log::set_max_level(filter.max_level());
    *FILTER.lock() = Some(filter);
}

/// The line settings the console starts with.
fn boot_config() -> Config {
    Config {
        baud_rate: BaudRate::Baud115200,
        ..Config::DEFAULT
    }
}

/// A UART at `port` programmed with `config`.
fn open(port: u16, config: &Config) -> Option<Uart16550<PioBackend>> {
    // SAFETY: the port is COM1's (0x3f8) or the one the command line's
    // `com1=` names as its I/O base; the hypervisor drives the console
    // there for the rest of the run and gives dom0 no access to it.
    let mut uart = unsafe { Uart16550::new_port(port) }.ok()?;
    uart.init(config.clone()).ok()?;
    Some(uart)
}

/// The UART settings `com1=` asks for (`auto` keeps the boot speed).
pub fn uart_config(com1: &SerialConfig) -> Config {
    let boot = boot_config();
    Config {
        baud_rate: match com1.baud {
            Baud::Auto => boot.baud_rate,
            Baud::Rate(rate) => BaudRate::from_integer(rate),
        },
        frequency: com1
            .base_baud
            .map_or(boot.frequency, |b| b.saturating_mul(16)),
        data_bits: WordLength::from_integer(com1.data_bits),
        extra_stop_bits: com1.stop_bits == 2,
        parity: match com1.parity {
            Parity::None => UartParity::Disabled,
            Parity::Odd => UartParity::Odd,
            Parity::Even => UartParity::Even,
            Parity::Mark => UartParity::Forced1,
            Parity::Space => UartParity::Forced0,
        },
        ..boot
    }
}

/// Reprograms the console as the command line's `com1=` says: speed,
/// UART clock, data bits, parity, stop bits and I/O base (its IRQ is
/// routed later, see [`enable_receive_interrupts`]). When the port does
/// not answer, the console stays where it was.
pub fn configure(com1: &SerialConfig) {
    let config = uart_config(com1);
    if com1.io_base == COM1_PORT && config == boot_config() {
        return;
    }
    match open(com1.io_base, &config) {
        Some(uart) => *COM1.lock() = Some(uart),
        None => log::warn!(
            "com1: no UART answers at {:#x}; the console stays at {COM1_PORT:#x}",
            com1.io_base
        ),
    }
}

/// Turns on COM1's "received data available" interrupt, which arrives on
/// `vector` once `open_line` has opened the interrupt controller's pin
/// for it (called first, so that the line's first edge is not lost at a
/// masked pin); returns `false`, without calling it, when there is no
/// UART. The UART's OUT2, which gates its interrupt line, is on since it
/// was opened.
pub fn enable_receive_interrupts(vector: u8, open_line: impl FnOnce()) -> bool {
    let mut guard = COM1.lock();
    let Some(uart) = guard.as_mut() else {
        return false;
    };
    RECEIVE_VECTOR.store(vector, Ordering::Relaxed);
    open_line();
    uart.enable_interrupts(IER::DATA_READY);
    true
}

/// Whether `vector` is COM1's receive interrupt.
pub fn is_receive_vector(vector: u64) -> bool {
    let routed = RECEIVE_VECTOR.load(Ordering::Relaxed);
    routed != 0 && vector == u64::from(routed)
}

/// Moves what the UART has received into the input ring (a full ring
/// drops it, as Xen's does) and marks input pending if anything came;
/// returns the bytes taken. Takes only the console's two leaf locks, one
/// after the other: it runs in the interrupt path, even while the CPU
/// idles.
pub fn receive() -> usize {
    let mut chunk = [0u8; 64];
    let mut total = 0;
    while total < DRAIN_LIMIT {
        let n = {
            let mut guard = COM1.lock();
            let Some(uart) = guard.as_mut() else { break };
            uart.receive_bytes(&mut chunk)
        };
        if n == 0 {
            break;
        }
        let mut ring = INPUT.lock();
        for &byte in &chunk[..n] {
            ring.receive(byte);
        }
        total += n;
    }
    if total > 0 {
        INPUT_PENDING.store(true, Ordering::Release);
    }
    total
}

/// Whether input arrived since the last call (the hardware domain is to
/// get `VIRQ_CONSOLE`); clears the mark.
pub fn take_input_pending() -> bool {
    INPUT_PENDING.swap(false, Ordering::AcqRel)
}

/// The hypervisor's console log (`sysctl readconsole`): every line the
/// logger prints, without its carriage return. A leaf lock; the logger
/// only tries it (a line logged while it is held, by the reader itself,
/// is left out of the ring).
static LOG: Mutex<LogRing> = Mutex::new(LogRing::new());

/// Reads the console log as `req` asks, through `copy` (see
/// [`LogRing::read`]).
pub fn read_log<E>(
    req: LogRead,
    copy: impl FnMut(u32, &[u8]) -> Result<(), E>,
) -> Result<(u32, u32), E> {
    LOG.lock().read(req, copy)
}

/// Reads at most `count` bytes of pending input through `copy` (see
/// `InputRing::read`).
pub fn read_input<E>(count: u32, copy: impl FnMut(u32, &[u8]) -> Result<(), E>) -> Result<u32, E> {
    INPUT.lock().read(count, copy)
}

/// Writes raw bytes to the console (dom0's `console_io` output goes here).
pub fn write_bytes(bytes: &[u8]) {
    if PANICKING.load(Ordering::Relaxed) {
        // SAFETY: see `force_unlock` below: the hypervisor is dying and
        // the lock holder, if any, will never run again.
        unsafe { COM1.force_unlock() };
    }
    if let Some(uart) = COM1.lock().as_mut() {
        uart.send_bytes_exact(bytes);
    }
}

/// Makes the console usable from the panic path even if its lock is held.
pub fn enter_panic_mode() {
    PANICKING.store(true, Ordering::Relaxed);
}

/// A `fmt::Write` sink over the console.
pub struct Console;

impl Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        write_bytes(s.as_bytes());
        Ok(())
    }
}

struct SerialLogger;

impl log::Log for SerialLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        // A line logged while the filter is held on this CPU (an NMI in
        // the middle of a line) is printed: never lost for a lock.
        let verdict = FILTER
            .try_lock()
            .map_or(Verdict::Print { suppressed: 0 }, |mut f| {
                f.as_mut().map_or(Verdict::Print { suppressed: 0 }, |f| {
                    f.decide(
                        record.target(),
                        record.level(),
                        super::time::now_ns() / 1_000_000,
                    )
                })
            });
        let Verdict::Print { suppressed } = verdict else {
            return;
        };
        if suppressed != 0 {
            self.emit(format_args!(
                "(HV) {suppressed} log lines held back by the rate limit\r\n"
            ));
        }
        let tag = match record.level() {
            log::Level::Error => "ERROR ",
            log::Level::Warn => "WARN ",
            log::Level::Info => "",
            log::Level::Debug => "debug ",
            log::Level::Trace => "trace ",
        };
        self.emit(format_args!("(HV) {tag}{}\r\n", record.args()));
    }

    fn flush(&self) {}
}

impl SerialLogger {
    /// Writes one line to COM1 and the log ring dom0 reads.
    fn emit(&self, text: fmt::Arguments<'_>) {
        // Format into a line buffer first so concurrent lines never interleave.
        let mut line = LineBuffer::new();
        let _ = line.write_fmt(text);
        write_bytes(line.as_bytes());
        if let Some(mut log) = LOG.try_lock() {
            for piece in line.as_bytes().split(|&b| b == b'\r') {
                log.write(piece);
            }
        }
    }
}

/// A fixed-size line buffer; a line too long for it is cut with a marker
/// rather than lost.
struct LineBuffer {
    bytes: [u8; 512],
    len: usize,
}

impl LineBuffer {
    const MARK: &'static [u8] = b"...\r\n";

    fn new() -> Self {
        LineBuffer {
            bytes: [0; 512],
            len: 0,
        }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

impl Write for LineBuffer {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.bytes.len() - Self::MARK.len();
        for &b in s.as_bytes() {
            if self.len >= room {
                self.bytes[room..].copy_from_slice(Self::MARK);
                self.len = self.bytes.len();
                return Ok(());
            }
            self.bytes[self.len] = b;
            self.len += 1;
        }
        Ok(())
    }
}
