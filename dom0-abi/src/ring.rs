//! Xen's shared I/O rings (`io/ring.h`): the page layout every split
//! driver's ring (`blkif`, `netif`, …) shares between a front end and a
//! back end.
//!
//! A shared ring is one page (or `2^order` pages, as a back end offers
//! with `max-ring-page-order`) that begins with a 64-byte header of four
//! free-running 32-bit indices and continues with a power-of-two number of
//! slots. Each slot holds one request or one response (a union of the two:
//! its size is the larger of the two structures). The front end
//! `[FRONT]` produces requests and consumes responses; the back end
//! `[BACK]` consumes requests and produces responses, in the same slots.
//!
//! Indices never wrap at the ring size: a slot is `index & (size - 1)`,
//! and differences are taken modulo 2^32. The `*_event` indices are the
//! notification hold-off: a producer that moves its index from `old` to
//! `new` notifies the other end (the ring's event channel) only if the
//! other end's event index lies in `(old, new]`.
//!
//! | offset | field | written by |
//! |---|---|---|
//! | 0 | `req_prod` | `[FRONT]` |
//! | 4 | `req_event` | `[BACK]`: notify me when `req_prod` passes this |
//! | 8 | `rsp_prod` | `[BACK]` |
//! | 12 | `rsp_event` | `[FRONT]`: notify me when `rsp_prod` passes this |
//! | 16 | private bytes (`netif`'s `smartpoll_active`: unused here) | |
//! | 64 | the slots | |
//!
//! A freshly initialised ring has every index 0 and both event indices 1.

/// Byte offset of `req_prod`.
pub const REQ_PROD: usize = 0;
/// Byte offset of `req_event`.
pub const REQ_EVENT: usize = 4;
/// Byte offset of `rsp_prod`.
pub const RSP_PROD: usize = 8;
/// Byte offset of `rsp_event`.
pub const RSP_EVENT: usize = 12;
/// Bytes of the header: the first slot's offset.
pub const HEADER_BYTES: usize = 64;

/// The number of slots of `slot_bytes` each in a ring of `ring_bytes`
/// (the header included): the largest power of two that fits, as Xen's
/// `__CONST_RING_SIZE` computes it; 0 if not even one fits.
#[must_use]
pub const fn ring_slots(ring_bytes: usize, slot_bytes: usize) -> u32 {
    if slot_bytes == 0 || ring_bytes <= HEADER_BYTES {
        return 0;
    }
    let fit = (ring_bytes - HEADER_BYTES) / slot_bytes;
    if fit == 0 {
        return 0;
    }
    let slots = 1usize << (usize::BITS - 1 - fit.leading_zeros());
    if slots > u32::MAX as usize {
        1 << 31
    } else {
        #[allow(clippy::cast_possible_truncation, reason = "checked just above")]
        {
            slots as u32
        }
    }
}

/// Whether a producer that moved its index from `old` to `new` must
/// notify the other end, whose event index is `event`: `event` lies in
/// `(old, new]` (modulo 2^32), as Xen's `RING_PUSH_*_AND_CHECK_NOTIFY`.
#[must_use]
pub const fn must_notify(old: u32, new: u32, event: u32) -> bool {
    new.wrapping_sub(event) < new.wrapping_sub(old)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_the_largest_power_of_two_that_fits() {
        // blkif: 112-byte slots → 32 in one page (Xen's BLK_RING_SIZE).
        assert_eq!(ring_slots(4096, 112), 32);
        // netif TX: 12-byte requests → 256 slots.
        assert_eq!(ring_slots(4096, 12), 256);
        // netif RX: 8-byte slots → 256 (504 fit).
        assert_eq!(ring_slots(4096, 8), 256);
        assert_eq!(ring_slots(4096 << 2, 112), 128);
        assert_eq!(ring_slots(64, 8), 0);
        assert_eq!(ring_slots(4096, 0), 0);
        assert_eq!(ring_slots(4096, 5000), 0);
    }

    #[test]
    fn notify_only_when_the_event_index_is_passed() {
        assert!(must_notify(0, 1, 1));
        assert!(!must_notify(1, 2, 1));
        assert!(must_notify(5, 9, 9));
        assert!(must_notify(5, 9, 6));
        assert!(!must_notify(5, 9, 5));
        assert!(!must_notify(5, 9, 10));
        assert!(must_notify(u32::MAX, 1, 0));
        assert!(!must_notify(3, 3, 3));
    }
}
