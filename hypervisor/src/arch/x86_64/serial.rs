//! The serial console (COM1) and the `log` backend that writes to it.
//!
//! Every hypervisor log line starts with `(HV) ` so that a reader (or a test
//! harness) can tell it from dom0's console output, which goes to the same
//! port unprefixed, as on Xen.
use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, Ordering};

use spin::Mutex;
use uart_16550::backend::PioBackend;
use uart_16550::spec::registers::{Parity as UartParity, WordLength};
use uart_16550::{BaudRate, Config, Uart16550};

use crate::cmdline::{Baud, Parity, SerialConfig};

const COM1_PORT: u16 = 0x3f8;

static COM1: Mutex<Option<Uart16550<PioBackend>>> = Mutex::new(None);
static LOGGER: SerialLogger = SerialLogger;
/// Set while the hypervisor is dying: the console lock may be held by the
/// code that failed, so output then bypasses it.
static PANICKING: AtomicBool = AtomicBool::new(false);

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
/// UART clock, data bits, parity, stop bits and I/O base. The console is
/// polled, so an IRQ given there is not used (said in the log). When the
/// port does not answer, the console stays where it was.
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
    if com1.irq != SerialConfig::default().irq {
        log::info!("com1: irq {} not used: the console is polled", com1.irq);
    }
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
