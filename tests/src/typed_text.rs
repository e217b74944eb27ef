//! The text typed into COM1 for the `console_input` test guest: two
//! bursts, each after the guest's prompt for it.
//!
//! The bursts are sized for what they exercise: each is longer than a
//! UART's 16-byte receive FIFO (the hypervisor must drain the UART over
//! several interrupts), each fits the hypervisor's 128-byte input ring
//! (Xen drops what arrives while it is full, and the guest may not run
//! before a whole burst is in), and together they are longer than the
//! ring, so the second one wraps around its end. The first holds a byte
//! with bit 7 set, which Xen delivers with that bit cleared.

/// One burst: typed once the serial output shows `prompt`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Burst {
    /// The line the guest prints when it waits for the burst.
    pub prompt: &'static str,
    /// The bytes typed.
    pub bytes: &'static [u8],
}

/// The bursts, in the order they are typed.
pub const BURSTS: [Burst; 2] = [
    Burst {
        prompt: "console_input: waiting for the first burst",
        bytes: b"Typed on COM1: the quick brown fox jumps over the lazy dog, caf\xe9 42.",
    },
    Burst {
        prompt: "console_input: waiting for the second burst",
        bytes: b"Second burst, wrapping around the end of the input ring: \
                 0123456789 abcdefghijklmnopqrstuvwxyz ~!",
    },
];

/// The byte `CONSOLEIO_read` returns for `typed`: Xen passes each
/// received byte on without bit 7.
#[must_use]
pub const fn as_read(typed: u8) -> u8 {
    typed & 0x7f
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hypervisor's console input ring (Xen's size).
    const RING: usize = 128;
    /// A 16550's receive FIFO.
    const UART_FIFO: usize = 16;

    #[test]
    fn bursts_fit_the_ring_and_overflow_the_fifo() {
        for burst in BURSTS {
            assert!(burst.bytes.len() > UART_FIFO, "{burst:?}");
            assert!(burst.bytes.len() < RING, "{burst:?}");
        }
        assert!(BURSTS.iter().map(|b| b.bytes.len()).sum::<usize>() > RING);
        assert!(BURSTS[0].bytes.iter().any(|&b| as_read(b) != b));
    }

    #[test]
    fn nothing_typed_switches_xens_console_or_triggers_a_prompt() {
        // Three CTRL-A (with or without bit 7) switch Xen's serial input
        // away from dom0: none is typed.
        for burst in BURSTS {
            assert!(burst.bytes.iter().all(|&b| as_read(b) != 0x01));
            for other in BURSTS {
                assert!(
                    !burst
                        .bytes
                        .windows(other.prompt.len())
                        .any(|w| w == other.prompt.as_bytes())
                );
            }
        }
        assert!(!BURSTS[1].prompt.contains(BURSTS[0].prompt));
        assert!(!BURSTS[0].prompt.contains(BURSTS[1].prompt));
    }
}
