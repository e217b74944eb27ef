//! Console input: the bytes received on the serial line for the hardware
//! domain, kept and handed out as Xen 4.17 does (`console_io`'s
//! `CONSOLEIO_read`).
//!
//! Xen 4.17's rules, which [`InputRing`] keeps:
//! - input waits in a ring of [`INPUT_RING_SIZE`] (128) bytes, between a
//!   producer and a consumer index that run freely (32 bits, wrapping);
//!   index `i` is byte `i % 128`;
//! - a byte received while the ring is full is dropped: the ring keeps
//!   the older bytes (the hardware domain is still told input arrived);
//! - a byte is stored without its bit 7: Xen's serial layer hands console
//!   input on as 7-bit characters;
//! - a read takes at most `count` bytes, oldest first, in contiguous
//!   pieces (to the end of the ring, then from its start). A piece that
//!   cannot be copied to the guest ends the read with the copy's error and
//!   stays in the ring; the pieces copied before it are consumed (their
//!   bytes are in the guest's buffer, though the call returns the error).
//!   With nothing pending, a read copies nothing and returns 0, whatever
//!   the buffer.
//!
//! Who fills the ring and when the domain hears of it (`VIRQ_CONSOLE`) is
//! `arch`'s business; see `docs/state.md`.
#![forbid(unsafe_code)]

/// The ring's size as an index distance (Xen's `SERIAL_RX_SIZE`).
const SIZE: u32 = 128;

/// Bytes the input ring holds.
pub const INPUT_RING_SIZE: usize = SIZE as usize;

/// Console input not yet read by the hardware domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputRing {
    bytes: [u8; INPUT_RING_SIZE],
    /// Bytes ever stored (wrapping).
    producer: u32,
    /// Bytes ever read (wrapping); `producer - consumer` are pending.
    consumer: u32,
}

impl Default for InputRing {
    fn default() -> Self {
        Self::new()
    }
}

impl InputRing {
    /// An empty ring.
    #[must_use]
    pub const fn new() -> InputRing {
        InputRing {
            bytes: [0; INPUT_RING_SIZE],
            producer: 0,
            consumer: 0,
        }
    }

    /// Bytes pending.
    #[must_use]
    pub const fn len(&self) -> u32 {
        self.producer.wrapping_sub(self.consumer)
    }

    /// Whether nothing is pending.
    #[must_use]
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores a byte received on the serial line, without its bit 7;
    /// returns whether it was stored (`false`: the ring is full and the
    /// byte is dropped).
    pub fn receive(&mut self, byte: u8) -> bool {
        if self.len() == SIZE {
            return false;
        }
        self.bytes[(self.producer % SIZE) as usize] = byte & 0x7f;
        self.producer = self.producer.wrapping_add(1);
        true
    }

    /// Reads at most `count` bytes: hands each contiguous piece to
    /// `copy(offset, piece)`, where `offset` is the piece's place in the
    /// caller's buffer, and consumes it once `copy` succeeds. Returns the
    /// bytes read, or the first error of `copy` (that piece, and the rest,
    /// stay pending).
    pub fn read<E>(
        &mut self,
        count: u32,
        mut copy: impl FnMut(u32, &[u8]) -> Result<(), E>,
    ) -> Result<u32, E> {
        let mut done = 0u32;
        while !self.is_empty() && done < count {
            let start = self.consumer % SIZE;
            let piece = self.len().min(SIZE - start).min(count - done);
            let end = start + piece;
            copy(done, &self.bytes[start as usize..end as usize])?;
            done += piece;
            self.consumer = self.consumer.wrapping_add(piece);
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guest buffer of `size` bytes, every byte at or after `bad` (an
    /// offset) unwritable; a piece reaching into it fails whole, after
    /// the bytes before `bad` were written (as a copy that faults part-way
    /// leaves them).
    struct Buffer {
        bytes: Vec<u8>,
        bad: usize,
        pieces: Vec<(u32, usize)>,
    }

    impl Buffer {
        fn new(size: usize, bad: usize) -> Buffer {
            Buffer {
                bytes: vec![0; size],
                bad,
                pieces: Vec::new(),
            }
        }

        fn copy(&mut self, offset: u32, piece: &[u8]) -> Result<(), &'static str> {
            self.pieces.push((offset, piece.len()));
            let start = offset as usize;
            for (i, &b) in piece.iter().enumerate() {
                if start + i >= self.bad {
                    return Err("EFAULT");
                }
                self.bytes[start + i] = b;
            }
            Ok(())
        }
    }

    fn filled(text: &[u8]) -> InputRing {
        let mut ring = InputRing::new();
        for &b in text {
            assert!(ring.receive(b));
        }
        ring
    }

    fn read_all(ring: &mut InputRing, count: u32) -> Vec<u8> {
        let mut buffer = Buffer::new(count as usize, usize::MAX);
        let n = ring.read(count, |o, p| buffer.copy(o, p)).unwrap();
        buffer.bytes.truncate(n as usize);
        buffer.bytes
    }

    #[test]
    fn bytes_come_out_once_in_order_without_bit_7() {
        let mut ring = filled(b"caf\xe9 \x80\xff");
        assert_eq!(ring.len(), 7);
        assert_eq!(read_all(&mut ring, 3), b"caf");
        assert_eq!(read_all(&mut ring, 100), b"i \x00\x7f");
        assert!(ring.is_empty());
        assert_eq!(read_all(&mut ring, 100), b"");
    }

    #[test]
    fn a_full_ring_drops_new_bytes_and_keeps_the_old() {
        let text: Vec<u8> = (0..=u8::MAX).take(INPUT_RING_SIZE).collect();
        let mut ring = filled(&text);
        assert!(!ring.receive(b'x'));
        assert_eq!(ring.len(), SIZE);
        assert_eq!(read_all(&mut ring, 1), [0]);
        assert!(ring.receive(b'y'));
        assert!(!ring.receive(b'z'));
        let mut expected = text[1..].to_vec();
        expected.push(b'y');
        assert_eq!(read_all(&mut ring, 1000), expected);
    }

    #[test]
    fn a_wrapped_ring_is_read_in_two_pieces() {
        let mut ring = filled(&[b'a'; 100]);
        assert_eq!(read_all(&mut ring, 100).len(), 100);
        let text: Vec<u8> = (0..60u8).collect();
        for &b in &text {
            assert!(ring.receive(b));
        }
        let mut buffer = Buffer::new(60, usize::MAX);
        assert_eq!(ring.read(60, |o, p| buffer.copy(o, p)), Ok(60));
        assert_eq!(buffer.pieces, [(0, 28), (28, 32)]);
        assert_eq!(buffer.bytes, text);
    }

    #[test]
    fn nothing_pending_or_no_room_reads_nothing_and_copies_nothing() {
        let mut empty = InputRing::new();
        let mut calls = 0;
        let refuse = |_: u32, _: &[u8]| -> Result<(), &str> {
            calls += 1;
            Err("EFAULT")
        };
        assert_eq!(empty.read(16, refuse), Ok(0));
        let mut ring = filled(b"abc");
        assert_eq!(
            ring.read(0, |_, _| -> Result<(), &str> { Err("EFAULT") }),
            Ok(0)
        );
        assert_eq!(ring.len(), 3);
        assert_eq!(calls, 0);
    }

    #[test]
    fn a_failed_copy_keeps_its_piece_and_the_rest() {
        let mut ring = filled(b"hello");
        let mut buffer = Buffer::new(16, 2);
        assert_eq!(ring.read(16, |o, p| buffer.copy(o, p)), Err("EFAULT"));
        // The bytes before the fault were written, yet nothing is consumed.
        assert_eq!(&buffer.bytes[..2], b"he");
        assert_eq!(read_all(&mut ring, 16), b"hello");
    }

    #[test]
    fn pieces_copied_before_a_failed_one_are_consumed() {
        let mut ring = filled(&[0; 120]);
        read_all(&mut ring, 120);
        for &b in b"0123456789abcdef" {
            ring.receive(b);
        }
        // Bytes 120..128 of the ring, then 0..8: the second piece fails.
        let mut buffer = Buffer::new(16, 12);
        assert_eq!(ring.read(16, |o, p| buffer.copy(o, p)), Err("EFAULT"));
        assert_eq!(buffer.pieces, [(0, 8), (8, 8)]);
        assert_eq!(&buffer.bytes[..8], b"01234567");
        assert_eq!(read_all(&mut ring, 16), b"89abcdef");
    }

    #[test]
    fn indices_wrap_around_u32() {
        let mut ring = InputRing {
            bytes: [0; INPUT_RING_SIZE],
            producer: u32::MAX - 2,
            consumer: u32::MAX - 2,
        };
        for &b in b"wrapping" {
            assert!(ring.receive(b));
        }
        assert_eq!(ring.len(), 8);
        assert_eq!(read_all(&mut ring, 5), b"wrapp");
        assert_eq!(read_all(&mut ring, 5), b"ing");
        assert!(ring.is_empty());
    }
}
