//! Serving a domain's store ring (`xenstore_domain_interface`).
//!
//! Requests arrive as bytes in `req[]` between `req_cons` (ours) and
//! `req_prod` (the guest's); replies and watch events go into `rsp[]`
//! after `rsp_prod` (ours), up to `rsp_cons` (the guest's) + 1024. Both
//! rings hold 1024 bytes; indices run freely and wrap, and a message may
//! straddle the wrap. [`serve`] moves whatever it can in both directions
//! and answers each complete request.
//!
//! The guest controls the ring's contents and its own indices. An index
//! pair more than 1024 apart, or a header announcing more than 4096 bytes,
//! closes the connection (as xenstored does): it is no longer served until
//! the domain is introduced again. Each index is read once per pass, and
//! every access goes through [`StoreRing`] with the index reduced modulo
//! the ring size and the bytes cut at the ring's end, so nothing outside
//! the ring is ever touched.
//! While more than [`BACKLOG`] bytes of output wait, no new request is
//! read: a guest that never reads its replies cannot grow dom0's heap.

use alloc::vec::Vec;

use dom0_abi::wire::Wire;
use dom0_abi::xenstore::{XENSTORE_PAYLOAD_MAX, XENSTORE_RING_SIZE, XsdSockmsg};

use crate::DomId;
use crate::store::{Host, Store};

#[allow(clippy::cast_possible_truncation, reason = "the ring is 1024 bytes")]
const SIZE: u32 = XENSTORE_RING_SIZE as u32;

/// Of `count` ring bytes from `index` on, how many lie before the ring's
/// end.
fn contiguous(index: u32, count: usize) -> u32 {
    let room = SIZE - index % SIZE;
    u32::try_from(count).map_or(room, |count| count.min(room))
}

/// Output bytes beyond which no further request is read.
pub const BACKLOG: usize = 2 * XENSTORE_PAYLOAD_MAX;

/// Access to one store ring. The memory access and the barriers belong to
/// the implementation.
pub trait StoreRing {
    /// `req_prod`, read with acquire semantics (the bytes before it are
    /// visible afterwards).
    fn req_prod(&self) -> u32;
    /// `req_cons`.
    fn req_cons(&self) -> u32;
    /// Reads `out.len()` bytes of `req` from `index % 1024` on (the
    /// caller keeps them before the ring's end; an implementation reads
    /// nothing past it).
    fn req_bytes(&self, index: u32, out: &mut [u8]);
    /// Publishes `req_cons` with release semantics.
    fn set_req_cons(&mut self, cons: u32);
    /// `rsp_prod`.
    fn rsp_prod(&self) -> u32;
    /// `rsp_cons`, read with acquire semantics.
    fn rsp_cons(&self) -> u32;
    /// Writes `bytes` to `rsp` from `index % 1024` on (the caller keeps
    /// them before the ring's end; an implementation writes nothing past
    /// it).
    fn set_rsp_bytes(&mut self, index: u32, bytes: &[u8]);
    /// Publishes `rsp_prod` with release semantics (after the bytes).
    fn set_rsp_prod(&mut self, prod: u32);
}

/// What one [`serve`] pass did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Served {
    /// Request bytes consumed.
    pub consumed: u32,
    /// Reply bytes produced.
    pub produced: u32,
    /// Requests answered.
    pub requests: u32,
    /// The connection is (now or already) closed for a protocol violation.
    pub closed: bool,
}

impl Served {
    /// The guest should be notified (something moved).
    #[must_use]
    pub const fn notify(&self) -> bool {
        self.consumed > 0 || self.produced > 0
    }
}

/// Moves requests and replies through `domid`'s ring, answering every
/// complete request. Nothing happens for a domain without a connection.
pub fn serve(
    store: &mut Store,
    host: &mut impl Host,
    domid: DomId,
    ring: &mut impl StoreRing,
) -> Served {
    let mut served = Served::default();
    let Some((input, broken)) = store.ring_state(domid) else {
        return served;
    };
    if *broken {
        served.closed = true;
        return served;
    }
    let mut input = core::mem::take(input);
    loop {
        if !write_output(store, domid, ring, &mut served) {
            break;
        }
        if store.output_len(domid) > BACKLOG {
            break;
        }
        match read_request(ring, &mut input, &mut served) {
            Ok(Some(header)) => {
                store.handle(host, domid, &header, &input[XsdSockmsg::SIZE..]);
                served.requests += 1;
                input.clear();
            }
            Ok(None) => break,
            Err(()) => {
                served.closed = true;
                break;
            }
        }
    }
    if !served.closed {
        write_output(store, domid, ring, &mut served);
    }
    if let Some((slot, broken)) = store.ring_state(domid) {
        *slot = input;
        *broken = served.closed;
    }
    served
}

/// Reads request bytes until `input` holds a whole message (its header
/// returned) or the ring is empty (`None`). `Err` for a hostile ring.
fn read_request(
    ring: &mut impl StoreRing,
    input: &mut Vec<u8>,
    served: &mut Served,
) -> Result<Option<XsdSockmsg>, ()> {
    let prod = ring.req_prod();
    let mut cons = ring.req_cons();
    if prod.wrapping_sub(cons) > SIZE {
        return Err(());
    }
    let header = loop {
        let header = XsdSockmsg::from_wire(input);
        let want = match header {
            Some(h) if h.len as usize > XENSTORE_PAYLOAD_MAX => return Err(()),
            Some(h) => XsdSockmsg::SIZE + h.len as usize,
            None => XsdSockmsg::SIZE,
        };
        if input.len() == want {
            break header;
        }
        if cons == prod {
            break None;
        }
        // The rest of the header or of the payload, as far as it is there
        // and runs before the ring's end.
        let missing = (want - input.len()).min(prod.wrapping_sub(cons) as usize);
        let n = contiguous(cons, missing);
        let start = input.len();
        input.resize(start + n as usize, 0);
        ring.req_bytes(cons, &mut input[start..]);
        cons = cons.wrapping_add(n);
        served.consumed += n;
    };
    ring.set_req_cons(cons);
    Ok(header.filter(|h| input.len() == XsdSockmsg::SIZE + h.len as usize))
}

/// Copies queued output into the ring; `false` for a hostile ring.
fn write_output(
    store: &mut Store,
    domid: DomId,
    ring: &mut impl StoreRing,
    served: &mut Served,
) -> bool {
    let prod = ring.rsp_prod();
    let used = prod.wrapping_sub(ring.rsp_cons());
    if used > SIZE {
        served.closed = true;
        return false;
    }
    let mut at = prod;
    store.drain_output(domid, (SIZE - used) as usize, |mut bytes| {
        while !bytes.is_empty() {
            let n = contiguous(at, bytes.len());
            let (now, rest) = bytes.split_at(n as usize);
            ring.set_rsp_bytes(at, now);
            at = at.wrapping_add(n);
            bytes = rest;
        }
    });
    if at != prod {
        ring.set_rsp_prod(at);
        served.produced += at.wrapping_sub(prod);
    }
    true
}
