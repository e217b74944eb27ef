//! The guest's end against a back end played by the test, honest and
//! hostile.

extern crate std;

use std::vec::Vec;

use proptest::prelude::*;

use super::*;
use crate::ring::SharedPage;

fn ring() -> (ConsoleRing<SharedPage>, SharedPage) {
    let page = SharedPage::new(4096, 0);
    (ConsoleRing::new(page.clone()), page)
}

/// What the back end reads: every byte between its consumer index and
/// the guest's producer index, then it consumes them.
fn consume(page: &mut SharedPage) -> Vec<u8> {
    let prod = page.read_u32(OUT_PROD);
    let mut cons = page.read_u32(OUT_CONS);
    let mut out = Vec::new();
    while cons != prod {
        let mut byte = [0];
        page.read_bytes(OUTPUT + (cons % OUT_SIZE) as usize, &mut byte);
        out.push(byte[0]);
        cons = cons.wrapping_add(1);
    }
    page.write_u32(OUT_CONS, cons);
    out
}

/// The back end queues `bytes` of input.
fn type_in(page: &mut SharedPage, bytes: &[u8]) {
    let mut prod = page.read_u32(IN_PROD);
    for &b in bytes {
        page.write_bytes(INPUT + (prod % IN_SIZE) as usize, &[b]);
        prod = prod.wrapping_add(1);
    }
    page.write_u32(IN_PROD, prod);
}

#[test]
fn output_fills_the_ring_then_waits_for_the_back_end() {
    let (mut ring, mut page) = ring();
    assert!(ring.drained());
    let text: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(ring.put(&text), XENCONS_OUT_SIZE);
    assert_eq!(ring.room(), 0);
    assert_eq!(ring.put(b"more"), 0);
    assert_eq!(consume(&mut page), &text[..XENCONS_OUT_SIZE]);
    assert!(ring.drained());
    assert_eq!(ring.put(&text[XENCONS_OUT_SIZE..]), 3000 - XENCONS_OUT_SIZE);
    assert_eq!(consume(&mut page), &text[XENCONS_OUT_SIZE..]);
}

#[test]
fn indices_wrap_around_u32() {
    let (mut ring, mut page) = ring();
    page.write_u32(OUT_PROD, u32::MAX - 2);
    page.write_u32(OUT_CONS, u32::MAX - 2);
    assert_eq!(ring.put(b"wrapped"), 7);
    assert_eq!(page.read_u32(OUT_PROD), 4);
    assert_eq!(consume(&mut page), b"wrapped");
}

#[test]
fn a_consumer_index_past_the_producer_leaves_no_room() {
    let (mut ring, mut page) = ring();
    assert_eq!(ring.put(b"abc"), 3);
    // The back end claims to have read 10 bytes of 3 (an index the guest
    // never produced) or runs backwards by more than the ring.
    for cons in [10, 3u32.wrapping_sub(OUT_SIZE + 1)] {
        page.write_u32(OUT_CONS, cons);
        assert_eq!(ring.room(), 0, "cons {cons}");
        assert_eq!(ring.put(b"x"), 0);
        assert_eq!(page.read_u32(OUT_PROD), 3);
    }
}

#[test]
fn input_is_taken_oldest_first_and_consumed() {
    let (mut ring, mut page) = ring();
    type_in(&mut page, b"hello\r");
    let mut out = [0u8; 4];
    assert_eq!(ring.take(&mut out), 4);
    assert_eq!(&out, b"hell");
    assert_eq!(ring.take(&mut out), 2);
    assert_eq!(&out[..2], b"o\r");
    assert_eq!(ring.take(&mut out), 0);
    assert_eq!(page.read_u32(IN_CONS), 6);
}

#[test]
fn a_runaway_input_producer_yields_one_buffer_at_most() {
    let (mut ring, mut page) = ring();
    page.write_u32(IN_PROD, 1 << 30);
    let mut out = std::vec![0u8; 4 * XENCONS_IN_SIZE];
    assert_eq!(ring.take(&mut out), XENCONS_IN_SIZE);
    assert_eq!(page.read_u32(IN_CONS), IN_SIZE);
}

proptest! {
    /// Whatever the chunking and wherever the indices start, the back end
    /// reads exactly the bytes written, in order.
    #[test]
    fn output_arrives_intact(
        start in any::<u32>(),
        chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..700), 0..12),
    ) {
        let (mut ring, mut page) = ring();
        page.write_u32(OUT_PROD, start);
        page.write_u32(OUT_CONS, start);
        let mut sent = Vec::new();
        let mut got = Vec::new();
        for chunk in &chunks {
            let mut rest = &chunk[..];
            while !rest.is_empty() {
                let n = ring.put(rest);
                sent.extend_from_slice(&rest[..n]);
                rest = &rest[n..];
                if n == 0 {
                    got.extend(consume(&mut page));
                }
            }
        }
        got.extend(consume(&mut page));
        prop_assert_eq!(got, sent.clone());
        prop_assert_eq!(sent, chunks.concat());
    }
}
