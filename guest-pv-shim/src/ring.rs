//! The two ends of a shared I/O ring (`dom0_abi::ring`): a front end that
//! produces requests and consumes responses, a back end that does the
//! opposite, over memory either end maps its own way ([`RingMemory`]).
//!
//! Every index the other end writes is read once per step and checked
//! before it is used, so a hostile peer can make a ring stop or fail with
//! [`RingError`], never make this end read past the ring, answer a
//! request twice or overwrite a slot the peer has not released. Entries
//! are copied out of the shared slot in one read ([`Wire`]), so a peer
//! rewriting a slot while it is decoded cannot make the two halves of one
//! request disagree.
//!
//! Ordering follows `io/ring.h`: a producer writes its slots, then (after
//! a release fence) its index, then (after a full fence) reads the other
//! end's event index to decide whether to notify; a consumer reads the
//! producer's index, then (after an acquire fence) the slots.

#![forbid(unsafe_code)]

use core::marker::PhantomData;
use core::sync::atomic::{Ordering, fence};

use dom0_abi::ring::{
    HEADER_BYTES, REQ_EVENT, REQ_PROD, RSP_EVENT, RSP_PROD, must_notify, ring_slots,
};
use dom0_abi::wire::Wire;

/// Bytes of the largest slot a ring here may have.
pub const MAX_SLOT_BYTES: usize = 256;

/// Calls `f` with `len` zeroed bytes of scratch (`None` if `len` is
/// above [`MAX_SLOT_BYTES`]). The buffer grows in steps with `len`, which
/// is a constant per entry type: a netif entry (8 or 12 bytes) or a
/// blkif request (112) does not
/// zero 256 bytes on every access (a `memset` call that cost a network
/// frame about 110 instructions on each end).
#[inline(always)]
fn scratch<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> Option<R> {
    if len <= 16 {
        Some(f(&mut [0u8; 16][..len]))
    } else if len <= 64 {
        Some(f(&mut [0u8; 64][..len]))
    } else if len <= 128 {
        Some(f(&mut [0u8; 128][..len]))
    } else {
        Some(f([0u8; MAX_SLOT_BYTES].get_mut(..len)?))
    }
}

/// The shared memory of one ring, as one end has it mapped. Reads and
/// writes must be single accesses of the shared bytes (volatile): the
/// other end changes them at any time.
pub trait RingMemory {
    /// Bytes of the ring, header included.
    fn bytes(&self) -> usize;
    /// The aligned `u32` at byte `offset` (< [`RingMemory::bytes`]).
    fn read_u32(&self, offset: usize) -> u32;
    /// Writes the aligned `u32` at byte `offset`.
    fn write_u32(&mut self, offset: usize, value: u32);
    /// Copies `out.len()` bytes from byte `offset`.
    fn read_bytes(&self, offset: usize, out: &mut [u8]);
    /// Copies `bytes` to byte `offset`.
    fn write_bytes(&mut self, offset: usize, bytes: &[u8]);
}

/// What the other end did wrong; the ring is unusable afterwards.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RingError {
    /// Its producer index claims more entries than it may have produced:
    /// `prod` with this end at `cons` and `limit` entries allowed.
    Overrun {
        /// The producer index read from the ring.
        prod: u32,
        /// This end's consumer index.
        cons: u32,
        /// The most entries the peer may have outstanding.
        limit: u32,
    },
}

impl core::fmt::Display for RingError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RingError::Overrun { prod, cons, limit } => write!(
                f,
                "producer index {prod} is {} entries past consumer index {cons} (at most {limit})",
                prod.wrapping_sub(*cons)
            ),
        }
    }
}

/// Geometry of a ring of `Req` and `Rsp` over `M`.
#[derive(Debug)]
struct Slots<M, Req, Rsp> {
    mem: M,
    /// Number of slots, a power of two.
    size: u32,
    _entries: PhantomData<(Req, Rsp)>,
}

impl<M: RingMemory, Req: Wire, Rsp: Wire> Slots<M, Req, Rsp> {
    /// Bytes of one slot: the larger of a request and a response.
    const SLOT: usize = if Req::SIZE > Rsp::SIZE {
        Req::SIZE
    } else {
        Rsp::SIZE
    };
    const FITS: () = assert!(Self::SLOT <= MAX_SLOT_BYTES, "ring slot too large");

    fn new(mem: M) -> Self {
        let () = Self::FITS;
        let size = ring_slots(mem.bytes(), Self::SLOT);
        Slots {
            mem,
            size,
            _entries: PhantomData,
        }
    }

    fn offset(&self, index: u32) -> usize {
        HEADER_BYTES + (index & self.size.wrapping_sub(1)) as usize * Self::SLOT
    }

    fn read<T: Wire>(&self, index: u32) -> Option<T> {
        scratch(T::SIZE, |slot| {
            self.mem.read_bytes(self.offset(index), slot);
            T::from_wire(slot)
        })?
    }

    fn write<T: Wire>(&mut self, index: u32, value: &T) {
        scratch(T::SIZE, |slot| {
            if value.to_wire(slot).is_some() {
                let at = self.offset(index);
                self.mem.write_bytes(at, slot);
            }
        });
    }

    /// Reads a producer index with acquire semantics.
    fn producer(&self, offset: usize) -> u32 {
        let prod = self.mem.read_u32(offset);
        fence(Ordering::Acquire);
        prod
    }

    /// Publishes producer index `new` at `prod_at` and tells whether the
    /// consumer, whose event index is at `event_at`, must be notified.
    fn publish(&mut self, prod_at: usize, event_at: usize, new: u32) -> bool {
        let old = self.mem.read_u32(prod_at);
        fence(Ordering::Release);
        self.mem.write_u32(prod_at, new);
        fence(Ordering::SeqCst);
        must_notify(old, new, self.mem.read_u32(event_at))
    }

    /// Asks to be notified of the next entry after `cons` (event index at
    /// `event_at`); the caller then reads the producer index again.
    fn arm(&mut self, event_at: usize, cons: u32) {
        self.mem.write_u32(event_at, cons.wrapping_add(1));
        fence(Ordering::SeqCst);
    }
}

/// Checks that `prod` is at most `limit` entries past `base`.
fn checked(prod: u32, base: u32, limit: u32) -> Result<u32, RingError> {
    if prod.wrapping_sub(base) > limit {
        Err(RingError::Overrun {
            prod,
            cons: base,
            limit,
        })
    } else {
        Ok(prod)
    }
}

/// The front end of a ring: produces `Req`, consumes `Rsp`.
#[derive(Debug)]
pub struct FrontRing<M, Req, Rsp> {
    slots: Slots<M, Req, Rsp>,
    /// Requests written, published or not.
    req_prod_pvt: u32,
    /// Responses consumed.
    rsp_cons: u32,
}

impl<M: RingMemory, Req: Wire, Rsp: Wire> FrontRing<M, Req, Rsp> {
    /// Initialises the shared header of `mem` (every index 0, both event
    /// indices 1, the private bytes zero) and takes the front end of it.
    /// The back end must not be attached yet.
    pub fn init(mut mem: M) -> Self {
        mem.write_bytes(0, &[0; HEADER_BYTES]);
        mem.write_u32(REQ_EVENT, 1);
        mem.write_u32(RSP_EVENT, 1);
        FrontRing {
            slots: Slots::new(mem),
            req_prod_pvt: 0,
            rsp_cons: 0,
        }
    }

    /// Number of slots.
    #[must_use]
    pub fn size(&self) -> u32 {
        self.slots.size
    }

    /// Requests that may still be written before responses free slots.
    #[must_use]
    pub fn free_requests(&self) -> u32 {
        self.size() - self.outstanding()
    }

    /// Requests written whose responses have not been consumed.
    #[must_use]
    pub fn outstanding(&self) -> u32 {
        self.req_prod_pvt.wrapping_sub(self.rsp_cons)
    }

    /// Writes `req` into the next free slot (not yet visible to the back
    /// end: see [`FrontRing::publish`]); `false` if the ring is full.
    pub fn push(&mut self, req: &Req) -> bool {
        if self.free_requests() == 0 {
            return false;
        }
        self.slots.write(self.req_prod_pvt, req);
        self.req_prod_pvt = self.req_prod_pvt.wrapping_add(1);
        true
    }

    /// Makes the pushed requests visible; `true` if the back end must be
    /// notified.
    pub fn publish(&mut self) -> bool {
        self.slots.publish(REQ_PROD, REQ_EVENT, self.req_prod_pvt)
    }

    /// The responses the back end has published and this end not yet
    /// consumed, checked against the requests outstanding.
    fn unconsumed(&self) -> Result<u32, RingError> {
        let prod = self.slots.producer(RSP_PROD);
        checked(prod, self.rsp_cons, self.outstanding()).map(|p| p.wrapping_sub(self.rsp_cons))
    }

    /// The next response, if the back end has published one.
    ///
    /// # Errors
    /// The back end published more responses than there are requests.
    pub fn pop(&mut self) -> Result<Option<Rsp>, RingError> {
        if self.unconsumed()? == 0 {
            return Ok(None);
        }
        let rsp = self.slots.read(self.rsp_cons);
        self.rsp_cons = self.rsp_cons.wrapping_add(1);
        Ok(rsp)
    }

    /// Asks to be notified of the next response, then tells whether one is
    /// already there (Xen's `RING_FINAL_CHECK_FOR_RESPONSES`): when this is
    /// `false` the front end may wait for the event.
    ///
    /// # Errors
    /// As [`FrontRing::pop`].
    pub fn final_check(&mut self) -> Result<bool, RingError> {
        if self.unconsumed()? > 0 {
            return Ok(true);
        }
        self.slots.arm(RSP_EVENT, self.rsp_cons);
        Ok(self.unconsumed()? > 0)
    }

    /// The ring's memory.
    pub fn memory(&self) -> &M {
        &self.slots.mem
    }
}

/// The back end of a ring: consumes `Req`, produces `Rsp`.
#[derive(Debug)]
pub struct BackRing<M, Req, Rsp> {
    slots: Slots<M, Req, Rsp>,
    /// Requests consumed.
    req_cons: u32,
    /// Responses written, published or not.
    rsp_prod_pvt: u32,
}

impl<M: RingMemory, Req: Wire, Rsp: Wire> BackRing<M, Req, Rsp> {
    /// Takes the back end of a ring the front end has initialised (its
    /// indices start at 0).
    pub fn attach(mem: M) -> Self {
        BackRing {
            slots: Slots::new(mem),
            req_cons: 0,
            rsp_prod_pvt: 0,
        }
    }

    /// Number of slots (0 if the memory cannot hold one slot).
    #[must_use]
    pub fn size(&self) -> u32 {
        self.slots.size
    }

    /// Requests consumed and not yet answered.
    #[must_use]
    pub fn unanswered(&self) -> u32 {
        self.req_cons.wrapping_sub(self.rsp_prod_pvt)
    }

    /// The requests published and not yet consumed that this end may
    /// take now: none while every slot holds an unanswered request.
    fn available(&self) -> Result<u32, RingError> {
        let prod = self.slots.producer(REQ_PROD);
        checked(prod, self.rsp_prod_pvt, self.size())?;
        let waiting = prod.wrapping_sub(self.req_cons);
        Ok(waiting.min(self.size() - self.unanswered()))
    }

    /// The next request, if the front end has published one and a slot is
    /// free for its response.
    ///
    /// # Errors
    /// The front end's `req_prod` is more than the ring's size past the
    /// responses produced (it overwrote requests not yet answered).
    pub fn pop(&mut self) -> Result<Option<Req>, RingError> {
        if self.available()? == 0 {
            return Ok(None);
        }
        let req = self.slots.read(self.req_cons);
        self.req_cons = self.req_cons.wrapping_add(1);
        Ok(req)
    }

    /// Writes the response to the oldest unanswered request (not yet
    /// visible: see [`BackRing::publish`]); `false` if every request
    /// consumed has been answered.
    pub fn push(&mut self, rsp: &Rsp) -> bool {
        if self.unanswered() == 0 {
            return false;
        }
        self.slots.write(self.rsp_prod_pvt, rsp);
        self.rsp_prod_pvt = self.rsp_prod_pvt.wrapping_add(1);
        true
    }

    /// Makes the pushed responses visible; `true` if the front end must be
    /// notified.
    pub fn publish(&mut self) -> bool {
        self.slots.publish(RSP_PROD, RSP_EVENT, self.rsp_prod_pvt)
    }

    /// Asks to be notified of the next request, then tells whether one is
    /// already there (Xen's `RING_FINAL_CHECK_FOR_REQUESTS`).
    ///
    /// # Errors
    /// As [`BackRing::pop`].
    pub fn final_check(&mut self) -> Result<bool, RingError> {
        if self.available()? > 0 {
            return Ok(true);
        }
        self.slots.arm(REQ_EVENT, self.req_cons);
        Ok(self.available()? > 0)
    }

    /// The ring's memory.
    pub fn memory(&self) -> &M {
        &self.slots.mem
    }
}

#[cfg(not(target_os = "none"))]
pub use host::SharedPage;

#[cfg(not(target_os = "none"))]
mod host {
    extern crate alloc;

    use alloc::rc::Rc;
    use alloc::vec;
    use alloc::vec::Vec;
    use core::cell::RefCell;

    use super::RingMemory;

    /// A ring in host memory that both ends hold (clones share the
    /// bytes): host tests of split drivers run both ends over it.
    #[derive(Clone, Debug)]
    pub struct SharedPage(Rc<RefCell<Vec<u8>>>);

    impl SharedPage {
        /// `bytes` bytes, each `fill`.
        #[must_use]
        pub fn new(bytes: usize, fill: u8) -> SharedPage {
            SharedPage(Rc::new(RefCell::new(vec![fill; bytes])))
        }
    }

    impl RingMemory for SharedPage {
        fn bytes(&self) -> usize {
            self.0.borrow().len()
        }
        fn read_u32(&self, offset: usize) -> u32 {
            let mut word = [0; 4];
            self.read_bytes(offset, &mut word);
            u32::from_le_bytes(word)
        }
        fn write_u32(&mut self, offset: usize, value: u32) {
            self.write_bytes(offset, &value.to_le_bytes());
        }
        fn read_bytes(&self, offset: usize, out: &mut [u8]) {
            out.copy_from_slice(&self.0.borrow()[offset..offset + out.len()]);
        }
        fn write_bytes(&mut self, offset: usize, bytes: &[u8]) {
            self.0.borrow_mut()[offset..offset + bytes.len()].copy_from_slice(bytes);
        }
    }
}

/// A one-page ring mapped in one of the shim's windows.
#[cfg(target_os = "none")]
#[derive(Debug)]
pub struct WindowMemory {
    window: usize,
}

#[cfg(target_os = "none")]
impl WindowMemory {
    /// The page window `window` maps (the caller mapped it writable and
    /// keeps it mapped while the ring is used).
    #[must_use]
    pub fn new(window: usize) -> Self {
        WindowMemory { window }
    }

    /// The window.
    #[must_use]
    pub fn window(&self) -> usize {
        self.window
    }
}

#[cfg(target_os = "none")]
impl RingMemory for WindowMemory {
    fn bytes(&self) -> usize {
        4096
    }
    fn read_u32(&self, offset: usize) -> u32 {
        crate::mm::window_read_u32(self.window, offset as u64)
    }
    fn write_u32(&mut self, offset: usize, value: u32) {
        crate::mm::window_write_u32(self.window, offset as u64, value);
    }
    fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        crate::mm::window_read_bytes(self.window, offset, out);
    }
    fn write_bytes(&mut self, offset: usize, bytes: &[u8]) {
        crate::mm::window_write_bytes(self.window, offset, bytes);
    }
}

/// A page mapped wherever (`mm::MappedPage`: a window, or a frame of the
/// initial mapping such as the console ring).
#[cfg(target_os = "none")]
impl RingMemory for crate::mm::MappedPage {
    fn bytes(&self) -> usize {
        4096
    }
    fn read_u32(&self, offset: usize) -> u32 {
        crate::mm::MappedPage::read_u32(*self, offset as u64)
    }
    fn write_u32(&mut self, offset: usize, value: u32) {
        crate::mm::MappedPage::write_u32(*self, offset as u64, value);
    }
    fn read_bytes(&self, offset: usize, out: &mut [u8]) {
        crate::mm::MappedPage::read_bytes(*self, offset, out);
    }
    fn write_bytes(&mut self, offset: usize, bytes: &[u8]) {
        crate::mm::MappedPage::write_bytes(*self, offset, bytes);
    }
}

#[cfg(test)]
mod tests;
