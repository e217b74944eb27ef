//! Console output through `CONSOLEIO_write`, and `print!`/`println!`.
//!
//! Output goes to the hypervisor's console (serial line). Each `print!`
//! formats into a small buffer and writes it with as few hypercalls as
//! possible, so a short line reaches the console in one piece. Failed
//! writes are dropped (like XTF, the guest has nowhere else to report).
//! Newlines are sent as `\n` only.

#![forbid(unsafe_code)]

use core::fmt;

use crate::hypercall::console_write;

/// The hypervisor console as a [`fmt::Write`] sink (unbuffered).
#[derive(Clone, Copy, Debug, Default)]
pub struct Console;

impl fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        console_write(s.as_bytes());
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
            console_write(&self.buf[..self.len]);
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
