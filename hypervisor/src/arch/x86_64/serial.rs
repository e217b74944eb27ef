//! The serial console (COM1) and the `log` backend that writes to it.
//!
//! Every hypervisor log line starts with `(HV) ` so that a reader (or a test
//! harness) can tell it from dom0's console output, which goes to the same
//! port unprefixed, as on Xen.
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};

use spin::Mutex;
use uart_16550::backend::PioBackend;
use uart_16550::{Config, Uart16550};

const COM1_PORT: u16 = 0x3f8;

static COM1: Mutex<Option<Uart16550<PioBackend>>> = Mutex::new(None);
static LOGGER: SerialLogger = SerialLogger;
/// Set while the hypervisor is dying: the console lock may be held by the
/// code that failed, so output then bypasses it.
static PANICKING: AtomicBool = AtomicBool::new(false);

/// Programs COM1 with the given line settings and installs the logger.
pub fn init(baud: u32) {
    // SAFETY: COM1's eight registers at 0x3f8 are the hypervisor's console
    // for the whole run; nothing else drives them.
    let mut uart = match unsafe { Uart16550::new_port(COM1_PORT) } {
        Ok(uart) => uart,
        Err(_) => return,
    };
    let config = Config {
        baud_rate: uart_16550::BaudRate::from_integer(baud),
        ..Config::DEFAULT
    };
    if uart.init(config).is_err() {
        return;
    }
    *COM1.lock() = Some(uart);
    // A second call (never made) would only fail to replace the logger.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Info);
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

/// Reads whatever bytes the UART holds now, without waiting.
pub fn read_available(buffer: &mut [u8]) -> usize {
    let mut guard = COM1.lock();
    let Some(uart) = guard.as_mut() else { return 0 };
    let mut n = 0;
    while n < buffer.len() {
        match uart.try_receive_byte() {
            Ok(byte) => {
                buffer[n] = byte;
                n += 1;
            }
            Err(_) => break,
        }
    }
    n
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
        let tag = match record.level() {
            log::Level::Error => "ERROR ",
            log::Level::Warn => "WARN ",
            log::Level::Info => "",
            log::Level::Debug => "debug ",
            log::Level::Trace => "trace ",
        };
        // Format into a line buffer first so concurrent lines never interleave.
        let mut line = LineBuffer::new();
        let _ = write!(line, "(HV) {tag}{}\r\n", record.args());
        write_bytes(line.as_bytes());
    }

    fn flush(&self) {}
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
