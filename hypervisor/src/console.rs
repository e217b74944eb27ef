//! The console's two rings, kept as Xen 4.17 keeps them: the input
//! received on the serial line for the hardware domain ([`InputRing`],
//! `console_io`'s `CONSOLEIO_read`), and the log of what the hypervisor
//! printed ([`LogRing`], `sysctl readconsole`).
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

/// The log ring's size as an index distance (Xen's default
/// `conring_size`, 16 KiB).
const LOG_SIZE: u32 = 16384;

/// Bytes the log ring holds.
pub const LOG_RING_SIZE: usize = LOG_SIZE as usize;

/// The hypervisor's console log, for `sysctl readconsole`, kept as Xen
/// 4.17 keeps its `conring`:
/// - a producer and a consumer index run freely (32 bits, wrapping); byte
///   `i` is at `i % 16384`; the ring holds the last 16384 bytes written
///   (the consumer is pushed up when the producer gets that far ahead);
/// - the consumer marks the **unread** position: a read starts there, or
///   at the caller's `index` if the read is incremental and `index` lies
///   after the consumer, up to the producer; it copies at most `count`
///   bytes in contiguous pieces and reports the bytes copied and the
///   position after them;
/// - a read with `clear` moves the consumer to that position: later
///   non-incremental reads start after what it read;
/// - a piece that cannot be copied ends the read with the error, and the
///   ring (consumer included) stays as it was.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRing {
    bytes: [u8; LOG_RING_SIZE],
    producer: u32,
    consumer: u32,
}

impl Default for LogRing {
    fn default() -> Self {
        Self::new()
    }
}

/// One `readconsole` request: where to start and how much.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogRead {
    /// Mark what is read as consumed.
    pub clear: bool,
    /// Start at `index` (if it is still unread) instead of the consumer.
    pub incremental: bool,
    /// The start for an incremental read.
    pub index: u32,
    /// Bytes at most.
    pub count: u32,
}

impl LogRing {
    /// An empty ring.
    #[must_use]
    pub const fn new() -> LogRing {
        LogRing {
            bytes: [0; LOG_RING_SIZE],
            producer: 0,
            consumer: 0,
        }
    }

    /// Appends `text`, dropping the oldest bytes beyond the ring's size.
    pub fn write(&mut self, text: &[u8]) {
        for &b in text {
            self.bytes[(self.producer % LOG_SIZE) as usize] = b;
            self.producer = self.producer.wrapping_add(1);
        }
        if self.producer.wrapping_sub(self.consumer) > LOG_SIZE {
            self.consumer = self.producer.wrapping_sub(LOG_SIZE);
        }
    }

    /// Reads as [`LogRing`] describes, handing each piece to
    /// `copy(offset, piece)` (`offset`: its place in the caller's buffer);
    /// returns the bytes copied and the position after them, or the first
    /// error of `copy`.
    pub fn read<E>(
        &mut self,
        req: LogRead,
        mut copy: impl FnMut(u32, &[u8]) -> Result<(), E>,
    ) -> Result<(u32, u32), E> {
        let (c, p) = (self.consumer, self.producer);
        // Whether `index` is after the consumer and at most the producer,
        // counting in the wrapping index space.
        let unread = |i: u32| i.wrapping_sub(c) != 0 && i.wrapping_sub(c) <= p.wrapping_sub(c);
        let mut at = if req.incremental && unread(req.index) {
            req.index
        } else {
            c
        };
        let mut done = 0u32;
        while at != p && done < req.count {
            let start = at % LOG_SIZE;
            let piece = p
                .wrapping_sub(at)
                .min(LOG_SIZE - start)
                .min(req.count - done);
            copy(done, &self.bytes[start as usize..(start + piece) as usize])?;
            done += piece;
            at = at.wrapping_add(piece);
        }
        if req.clear {
            self.consumer = at;
        }
        Ok((done, at))
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

    fn log_read(ring: &mut LogRing, req: LogRead) -> (Vec<u8>, u32) {
        let mut buffer = Buffer::new(req.count as usize, usize::MAX);
        let (n, index) = ring.read(req, |o, p| buffer.copy(o, p)).unwrap();
        buffer.bytes.truncate(n as usize);
        (buffer.bytes, index)
    }

    fn req(count: u32) -> LogRead {
        LogRead {
            count,
            ..LogRead::default()
        }
    }

    #[test]
    fn the_log_is_read_from_the_unread_position_until_cleared() {
        let mut ring = LogRing::new();
        ring.write(b"(HV) one\n(HV) two\n");
        assert_eq!(log_read(&mut ring, req(4)), (b"(HV)".to_vec(), 4));
        // Without clear the same bytes come again.
        assert_eq!(log_read(&mut ring, req(100)).1, 18);
        let cleared = LogRead {
            clear: true,
            ..req(9)
        };
        assert_eq!(log_read(&mut ring, cleared), (b"(HV) one\n".to_vec(), 9));
        assert_eq!(log_read(&mut ring, req(100)), (b"(HV) two\n".to_vec(), 18));
        // Incremental: from `index` while it is unread, else from the
        // consumer.
        let from = |index| LogRead {
            incremental: true,
            index,
            ..req(100)
        };
        assert_eq!(log_read(&mut ring, from(14)), (b"two\n".to_vec(), 18));
        assert_eq!(log_read(&mut ring, from(18)), (Vec::new(), 18));
        assert_eq!(log_read(&mut ring, from(3)).1, 18, "before the consumer");
        assert_eq!(log_read(&mut ring, from(9)).0, b"(HV) two\n");
        assert_eq!(log_read(&mut ring, from(40)).0, b"(HV) two\n");
        assert_eq!(log_read(&mut ring, req(0)), (Vec::new(), 9));
    }

    #[test]
    fn the_log_keeps_its_last_16_kib_and_wraps_in_two_pieces() {
        let mut ring = LogRing::new();
        let text: Vec<u8> = (0..LOG_RING_SIZE + 100)
            .map(|i| u8::try_from(i % 251).unwrap())
            .collect();
        ring.write(&text);
        let mut buffer = Buffer::new(LOG_RING_SIZE * 2, usize::MAX);
        let got = ring.read(req(u32::MAX), |o, p| buffer.copy(o, p));
        assert_eq!(got, Ok((LOG_SIZE, LOG_SIZE + 100)));
        assert_eq!(
            buffer.pieces,
            [(0, LOG_RING_SIZE - 100), (LOG_SIZE - 100, 100)]
        );
        assert_eq!(&buffer.bytes[..LOG_RING_SIZE], &text[100..]);
        // The indices wrap at 2^32 like Xen's.
        ring.producer = u32::MAX - 1;
        ring.consumer = u32::MAX - 1;
        ring.write(b"wrap");
        assert_eq!(log_read(&mut ring, req(10)), (b"wrap".to_vec(), 2));
        let from = LogRead {
            incremental: true,
            index: 0,
            ..req(10)
        };
        assert_eq!(log_read(&mut ring, from), (b"ap".to_vec(), 2));
    }

    #[test]
    fn a_failed_log_copy_changes_nothing() {
        let mut ring = LogRing::new();
        ring.write(b"hello");
        let mut buffer = Buffer::new(16, 2);
        let cleared = LogRead {
            clear: true,
            ..req(16)
        };
        assert_eq!(ring.read(cleared, |o, p| buffer.copy(o, p)), Err("EFAULT"));
        assert_eq!(log_read(&mut ring, req(16)).0, b"hello");
    }
}
