//! The console back end's ring logic: reading a domU's `xencons_interface`
//! output and turning it into whole lines prefixed with `(d<N>) `.
//!
//! The protocol (Xen's `io/console.h`, see
//! [`dom0_abi::console::XenconsInterface`]): the guest writes bytes at
//! `out[out_prod % 2048]`, then publishes `out_prod`; the back end reads
//! from `out_cons` up to `out_prod` and publishes the new `out_cons`, then
//! notifies the guest, which may be waiting for room. Indices are free
//! running `u32`s. A guest that claims more than 2048 unread bytes is
//! lying; only the last 2048 are read.
//!
//! Input goes the other way ([`push_input`], for the shell's `console`
//! attach): the back end writes at `in[in_prod % 1024]` up to 1024 bytes
//! ahead of the guest's `in_cons`, then publishes `in_prod`.
//!
//! The memory access and barriers belong to the [`Ring`] implementation;
//! [`ConsoleOutput::drain`] only decides what to read and what to print.
#![forbid(unsafe_code)]

use dom0_abi::console::{XENCONS_IN_SIZE, XENCONS_OUT_SIZE};

/// Longest line printed in one piece; longer lines are split.
pub const LINE_MAX: usize = 240;

/// Access to one console ring's output half.
pub trait Ring {
    /// `out_prod`, read with acquire semantics (the bytes before it are
    /// visible afterwards).
    fn out_prod(&self) -> u32;
    /// `out_cons`.
    fn out_cons(&self) -> u32;
    /// `out[index % 2048]`.
    fn out_byte(&self, index: u32) -> u8;
    /// Publishes `out_cons` with release semantics (after the reads).
    fn set_out_cons(&mut self, cons: u32);
    /// `in_cons`, read with acquire semantics (the guest is done with the
    /// bytes before it).
    fn in_cons(&self) -> u32;
    /// `in_prod`.
    fn in_prod(&self) -> u32;
    /// Writes `in[index % 1024]`.
    fn set_in_byte(&mut self, index: u32, byte: u8);
    /// Publishes `in_prod` with release semantics (after the writes).
    fn set_in_prod(&mut self, prod: u32);
}

/// Writes as much of `bytes` as the input half has room for (the guest
/// has not consumed more than 1024 bytes behind `in_prod`) and publishes
/// it: how many were written.
pub fn push_input(ring: &mut impl Ring, bytes: &[u8]) -> usize {
    let mut prod = ring.in_prod();
    #[allow(clippy::cast_possible_truncation, reason = "XENCONS_IN_SIZE is 1024")]
    let size = XENCONS_IN_SIZE as u32;
    let used = prod.wrapping_sub(ring.in_cons());
    let room = size.saturating_sub(used.min(size)) as usize;
    let n = bytes.len().min(room);
    for &byte in &bytes[..n] {
        ring.set_in_byte(prod, byte);
        prod = prod.wrapping_add(1);
    }
    if n > 0 {
        ring.set_in_prod(prod);
    }
    n
}

/// Line assembly for one domain's console.
#[derive(Clone, Debug)]
pub struct ConsoleOutput {
    domid: u16,
    line: [u8; LINE_MAX],
    len: usize,
    lines: u64,
    bytes: u64,
}

impl ConsoleOutput {
    /// An empty line buffer for domain `domid`.
    #[must_use]
    pub const fn new(domid: u16) -> ConsoleOutput {
        ConsoleOutput {
            domid,
            line: [0; LINE_MAX],
            len: 0,
            lines: 0,
            bytes: 0,
        }
    }

    /// Lines printed so far (a split long line counts once per piece).
    #[must_use]
    pub const fn lines(&self) -> u64 {
        self.lines
    }

    /// Bytes consumed from the ring so far.
    #[must_use]
    pub const fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Reads everything the guest has published, calling `emit` with each
    /// complete line as `(d<N>) text\n` and as the bare text (carriage
    /// returns dropped). Returns the number of bytes consumed.
    pub fn drain(&mut self, ring: &mut impl Ring, emit: &mut impl FnMut(&[u8], &[u8])) -> u32 {
        let prod = ring.out_prod();
        let mut cons = ring.out_cons();
        let unread = prod.wrapping_sub(cons);
        #[allow(clippy::cast_possible_truncation, reason = "XENCONS_OUT_SIZE is 2048")]
        let size = XENCONS_OUT_SIZE as u32;
        if unread > size {
            cons = prod.wrapping_sub(size);
        }
        let start = cons;
        while cons != prod {
            let byte = ring.out_byte(cons);
            cons = cons.wrapping_add(1);
            self.push(byte, emit);
        }
        ring.set_out_cons(cons);
        let consumed = cons.wrapping_sub(start);
        self.bytes += u64::from(consumed);
        consumed
    }

    /// Prints a partial last line, if any (when the domain goes away).
    pub fn flush(&mut self, emit: &mut impl FnMut(&[u8], &[u8])) {
        if self.len > 0 {
            self.emit_line(emit);
        }
    }

    fn push(&mut self, byte: u8, emit: &mut impl FnMut(&[u8], &[u8])) {
        match byte {
            b'\r' => {}
            b'\n' => self.emit_line(emit),
            _ => {
                if self.len == LINE_MAX {
                    self.emit_line(emit);
                }
                self.line[self.len] = byte;
                self.len += 1;
            }
        }
    }

    fn emit_line(&mut self, emit: &mut impl FnMut(&[u8], &[u8])) {
        let mut out = [0u8; LINE_MAX + 16];
        let mut at = prefix(self.domid, &mut out);
        out[at..at + self.len].copy_from_slice(&self.line[..self.len]);
        at += self.len;
        out[at] = b'\n';
        emit(&out[..=at], &self.line[..self.len]);
        self.len = 0;
        self.lines += 1;
    }
}

/// A domU's report line, `check: <name> = <value>` (see
/// [`parse_check`]): how a test domU tells dom0 a result to report as one
/// of its own checks.
pub const CHECK_PREFIX: &str = "check: ";

/// The name and value of a console line `check: <name> = <value>`; `None`
/// for any other line (or one that is not UTF-8).
#[must_use]
pub fn parse_check(text: &[u8]) -> Option<(&str, &str)> {
    let text = core::str::from_utf8(text)
        .ok()?
        .strip_prefix(CHECK_PREFIX)?;
    let (name, value) = text.split_once(" = ")?;
    let (name, value) = (name.trim(), value.trim());
    (!name.is_empty() && !value.is_empty() && !name.contains(':')).then_some((name, value))
}

/// The status of a domU's XTF-style result line, `Test result: <status>`
/// (what a test guest built on `guest-pv-shim` prints last); `None` for
/// any other line.
#[must_use]
pub fn parse_result(text: &[u8]) -> Option<&str> {
    let status = core::str::from_utf8(text)
        .ok()?
        .strip_prefix("Test result: ")?
        .trim();
    (!status.is_empty()).then_some(status)
}

/// Writes `(d<domid>) ` into `out`; returns its length.
fn prefix(domid: u16, out: &mut [u8]) -> usize {
    let mut digits = [0u8; 5];
    let mut n = domid;
    let mut count = 0;
    loop {
        #[allow(clippy::cast_possible_truncation, reason = "a decimal digit")]
        let digit = (n % 10) as u8;
        digits[count] = b'0' + digit;
        count += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out[..2].copy_from_slice(b"(d");
    for i in 0..count {
        out[2 + i] = digits[count - 1 - i];
    }
    out[2 + count..4 + count].copy_from_slice(b") ");
    4 + count
}

#[cfg(test)]
mod tests {
    extern crate std;
    use std::string::String;
    use std::vec::Vec;

    use super::*;

    #[test]
    fn result_lines_are_recognised() {
        assert_eq!(parse_result(b"Test result: SUCCESS\r"), Some("SUCCESS"));
        assert_eq!(parse_result(b"Test result: FAILURE"), Some("FAILURE"));
        assert_eq!(parse_result(b"Test result: "), None);
        assert_eq!(parse_result(b"ok: Test result: SUCCESS"), None);
        assert_eq!(parse_result(b"\xffTest result: SUCCESS"), None);
    }

    struct FakeRing {
        out: [u8; XENCONS_OUT_SIZE],
        prod: u32,
        cons: u32,
        input: [u8; XENCONS_IN_SIZE],
        in_prod: u32,
        in_cons: u32,
    }

    #[test]
    fn input_fills_the_room_the_guest_left_and_wraps() {
        let mut ring = FakeRing::new(u32::MAX - 2);
        assert_eq!(push_input(&mut ring, b"hello"), 5);
        assert_eq!(ring.in_prod, 2);
        assert_eq!(&ring.input[1021..1024], b"hel");
        assert_eq!(&ring.input[..2], b"lo");
        // Full: the guest has consumed nothing.
        assert_eq!(push_input(&mut ring, &[b'x'; 2000]), 1019);
        assert_eq!(push_input(&mut ring, b"y"), 0);
        ring.in_cons = ring.in_cons.wrapping_add(3);
        assert_eq!(push_input(&mut ring, b"yyyy"), 3);
        // A guest claiming to have consumed more than was written gets no
        // more room than the ring has.
        ring.in_cons = ring.in_prod.wrapping_add(5000);
        assert_eq!(push_input(&mut ring, &[b'z'; 2000]), 0);
    }

    impl FakeRing {
        fn new(start: u32) -> FakeRing {
            FakeRing {
                out: [0; XENCONS_OUT_SIZE],
                prod: start,
                cons: start,
                input: [0; XENCONS_IN_SIZE],
                in_prod: start,
                in_cons: start,
            }
        }
        fn write(&mut self, text: &[u8]) {
            for &b in text {
                self.out[self.prod as usize % XENCONS_OUT_SIZE] = b;
                self.prod = self.prod.wrapping_add(1);
            }
        }
    }

    impl Ring for FakeRing {
        fn out_prod(&self) -> u32 {
            self.prod
        }
        fn out_cons(&self) -> u32 {
            self.cons
        }
        fn out_byte(&self, index: u32) -> u8 {
            self.out[index as usize % XENCONS_OUT_SIZE]
        }
        fn set_out_cons(&mut self, cons: u32) {
            self.cons = cons;
        }
        fn in_cons(&self) -> u32 {
            self.in_cons
        }
        fn in_prod(&self) -> u32 {
            self.in_prod
        }
        fn set_in_byte(&mut self, index: u32, byte: u8) {
            self.input[index as usize % XENCONS_IN_SIZE] = byte;
        }
        fn set_in_prod(&mut self, prod: u32) {
            self.in_prod = prod;
        }
    }

    fn drain(c: &mut ConsoleOutput, ring: &mut FakeRing) -> Vec<String> {
        let mut lines = Vec::new();
        c.drain(ring, &mut |l, text| {
            assert!(l.ends_with(b"\n") && l[..l.len() - 1].ends_with(text));
            lines.push(String::from_utf8(l.to_vec()).unwrap());
        });
        lines
    }

    #[test]
    fn whole_lines_with_prefix_across_wrap() {
        // Indices near u32::MAX wrap during the test.
        let mut ring = FakeRing::new(u32::MAX - 3);
        let mut c = ConsoleOutput::new(12);
        ring.write(b"hello\r\nwor");
        assert_eq!(drain(&mut c, &mut ring), ["(d12) hello\n"]);
        assert_eq!(ring.cons, ring.prod);
        ring.write(b"ld\n");
        assert_eq!(drain(&mut c, &mut ring), ["(d12) world\n"]);
        ring.write(b"tail");
        assert!(drain(&mut c, &mut ring).is_empty());
        let mut rest = Vec::new();
        c.flush(&mut |l, _| rest.push(l.to_vec()));
        assert_eq!(rest, [b"(d12) tail\n".to_vec()]);
        assert_eq!((c.lines(), c.bytes()), (3, 17));
    }

    #[test]
    fn long_lines_split_and_liars_clamped() {
        let mut ring = FakeRing::new(0);
        let mut c = ConsoleOutput::new(0);
        ring.write(&[b'x'; LINE_MAX + 5]);
        ring.write(b"\n");
        let lines = drain(&mut c, &mut ring);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), 5 + LINE_MAX + 1);
        assert_eq!(lines[1], "(d0) xxxxx\n");
        // A producer 5000 ahead: only the last 2048 bytes are read.
        ring.prod = ring.cons.wrapping_add(5000);
        let consumed = c.drain(&mut ring, &mut |_, _| {});
        assert_eq!(consumed, 2048);
        assert_eq!(ring.cons, ring.prod);
    }

    #[test]
    fn check_lines() {
        assert_eq!(parse_check(b"check: domctl = -1"), Some(("domctl", "-1")));
        assert_eq!(parse_check(b"check:  a b  =  x y "), Some(("a b", "x y")));
        assert_eq!(parse_check(b"check: a:b = 1"), None);
        assert_eq!(parse_check(b"check: = 1"), None);
        assert_eq!(parse_check(b"check: a ="), None);
        assert_eq!(parse_check(b"hello"), None);
        assert_eq!(parse_check(b"check: \xff = 1"), None);
    }

    #[test]
    fn prefixes() {
        let mut out = [0u8; 16];
        let n = prefix(32767, &mut out);
        assert_eq!(&out[..n], b"(d32767) ");
        let n = prefix(7, &mut out);
        assert_eq!(&out[..n], b"(d7) ");
    }
}
