//! The store ring: requests straddling the wrap, hostile indices and
//! lengths, back-pressure, and a fuzz of whatever a guest may put there.

mod common;

use common::{MemRing, request, store_with};
use dom0_abi::xenstore::XsType;
use proptest::prelude::*;
use xenstore::ring::{BACKLOG, serve};

/// Splits the guest's received bytes into (type, req_id, payload).
fn replies(bytes: &[u8]) -> Vec<(u32, u32, Vec<u8>)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 16 <= bytes.len() {
        let word = |i: usize| u32::from_le_bytes(bytes[at + i..at + i + 4].try_into().unwrap());
        let len = word(12) as usize;
        out.push((word(0), word(4), bytes[at + 16..at + 16 + len].to_vec()));
        at += 16 + len;
    }
    out
}

#[test]
fn requests_and_replies_cross_the_wrap() {
    let (mut store, mut host) = store_with(&[1]);
    let mut ring = MemRing::new(u32::MAX - 5);
    for id in 0..40 {
        let req = request(XsType::Read as u32, id, 0, b"name\0");
        assert_eq!(ring.send(&req), req.len());
        let served = serve(&mut store, &mut host, 1, &mut ring);
        assert!(served.notify() && !served.closed);
        assert_eq!(served.requests, 1);
        assert_eq!(
            replies(&ring.receive()),
            vec![(XsType::Read as u32, id, b"guest1".to_vec())]
        );
    }
    assert!(ring.req_prod < 1000, "the indices wrapped");
}

#[test]
fn a_request_may_arrive_a_byte_at_a_time() {
    let (mut store, mut host) = store_with(&[1]);
    let mut ring = MemRing::new(0);
    let req = request(XsType::Write as u32, 3, 0, b"data/x\0value");
    for (i, byte) in req.iter().enumerate() {
        ring.send(&[*byte]);
        let served = serve(&mut store, &mut host, 1, &mut ring);
        assert_eq!(served.requests, u32::from(i + 1 == req.len()));
    }
    assert_eq!(
        replies(&ring.receive()),
        vec![(XsType::Write as u32, 3, b"OK\0".to_vec())]
    );
}

#[test]
fn oversized_length_closes_the_connection() {
    let (mut store, mut host) = store_with(&[1]);
    let mut ring = MemRing::new(0);
    let mut req = request(XsType::Read as u32, 1, 0, b"");
    req[12..16].copy_from_slice(&4097u32.to_le_bytes());
    ring.send(&req);
    assert!(serve(&mut store, &mut host, 1, &mut ring).closed);
    ring.send(&request(XsType::Read as u32, 2, 0, b"name\0"));
    let again = serve(&mut store, &mut host, 1, &mut ring);
    assert!(again.closed && !again.notify(), "no longer served");
    store
        .call(&mut host, 0, XsType::Introduce as u32, 0, b"1\x005\x003\0")
        .unwrap();
    let mut fresh = MemRing::new(0);
    fresh.send(&request(XsType::Read as u32, 2, 0, b"name\0"));
    assert_eq!(
        serve(&mut store, &mut host, 1, &mut fresh).requests,
        1,
        "served again once reintroduced"
    );
}

#[test]
fn impossible_indices_close_the_connection() {
    let (mut store, mut host) = store_with(&[1, 2]);
    let mut ring = MemRing::new(0);
    ring.req_prod = 1025;
    assert!(serve(&mut store, &mut host, 1, &mut ring).closed);
    let mut ring = MemRing::new(0);
    ring.rsp_cons = 5000;
    assert!(serve(&mut store, &mut host, 2, &mut ring).closed);
}

#[test]
fn a_guest_that_never_reads_stops_being_served() {
    let (mut store, mut host) = store_with(&[1]);
    let mut ring = MemRing::new(0);
    let req = request(XsType::Read as u32, 1, 0, b"name\0");
    let (mut sent, mut answered) = (0, 0);
    for _ in 0..1000 {
        if 1024 - ring.req_prod.wrapping_sub(ring.req_cons) as usize >= req.len() {
            ring.send(&req);
            sent += 1;
        }
        answered += serve(&mut store, &mut host, 1, &mut ring).requests;
    }
    let reply_len = 16 + 6;
    assert!(
        store.output_len(1) <= BACKLOG + reply_len,
        "output waiting: {}",
        store.output_len(1)
    );
    assert!(sent < 1000, "the request ring filled up");
    assert_eq!(answered as usize, (1024 + BACKLOG) / reply_len + 1);
    let mut stream = ring.receive();
    while ring.req_prod != ring.req_cons || store.output_len(1) > 0 {
        serve(&mut store, &mut host, 1, &mut ring);
        stream.extend(ring.receive());
    }
    let got = replies(&stream);
    assert_eq!(
        got.len(),
        sent,
        "every request answered once the guest reads"
    );
    assert!(got.iter().all(|r| r.2 == b"guest1"));
}

#[test]
fn unintroduced_domains_are_not_served() {
    let (mut store, mut host) = store_with(&[]);
    let mut ring = MemRing::new(0);
    ring.send(&request(XsType::Read as u32, 1, 0, b"name\0"));
    assert_eq!(
        serve(&mut store, &mut host, 7, &mut ring),
        Default::default()
    );
    assert_eq!(ring.req_cons, 0);
}

proptest! {
    /// Arbitrary ring contents and indices from a hostile guest: the
    /// server never panics, never moves an index past the other side's,
    /// and replies to a request it read only with whole messages.
    #[test]
    fn hostile_ring_never_breaks_the_server(
        req in proptest::collection::vec(any::<u8>(), 1024),
        rsp in proptest::collection::vec(any::<u8>(), 1024),
        req_cons in any::<u32>(), fill in 0u32..1100,
        rsp_prod in any::<u32>(), pending in 0u32..1100,
    ) {
        let (mut store, mut host) = store_with(&[1]);
        let mut ring = MemRing::new(0);
        ring.req.copy_from_slice(&req);
        ring.rsp.copy_from_slice(&rsp);
        ring.req_cons = req_cons;
        ring.req_prod = req_cons.wrapping_add(fill);
        ring.rsp_prod = rsp_prod;
        ring.rsp_cons = rsp_prod.wrapping_sub(pending);
        let served = serve(&mut store, &mut host, 1, &mut ring);
        prop_assert!(ring.req_prod.wrapping_sub(ring.req_cons) <= fill);
        prop_assert!(ring.rsp_prod.wrapping_sub(ring.rsp_cons) <= 1024 || served.closed);
        if fill > 1024 || pending > 1024 {
            prop_assert!(served.closed);
        }
        let _ = serve(&mut store, &mut host, 1, &mut ring);
    }

    /// Well-framed requests of any type with random payloads: each gets
    /// exactly one reply with its req_id, of its own type or ERROR.
    #[test]
    fn every_framed_request_gets_one_reply(
        msgs in proptest::collection::vec(
            (0u32..26, any::<u32>(), 0u32..4, proptest::collection::vec(
                prop_oneof![Just(0u8), Just(b'/'), Just(b'a'), Just(b'1'), Just(b'T'), Just(b'@'), any::<u8>()], 0..40)),
            1..20),
    ) {
        let (mut store, mut host) = store_with(&[1]);
        let mut ring = MemRing::new(u32::MAX - 100);
        for (ty, req_id, tx_id, payload) in msgs {
            let raw = request(ty, req_id, tx_id, &payload);
            prop_assert_eq!(ring.send(&raw), raw.len());
            let served = serve(&mut store, &mut host, 1, &mut ring);
            prop_assert_eq!(served.requests, 1);
            let got: Vec<_> = replies(&ring.receive())
                .into_iter()
                .filter(|r| r.0 != XsType::WatchEvent as u32)
                .collect();
            prop_assert_eq!(got.len(), 1);
            prop_assert_eq!(got[0].1, req_id);
            prop_assert!(got[0].0 == ty || got[0].0 == XsType::Error as u32);
        }
    }
}
