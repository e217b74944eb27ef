use proptest::prelude::*;

use super::*;
use crate::fake::Page;

/// The device side: takes the next available chain and returns it as used
/// with `len`.
struct Device {
    page: Page,
    size: u16,
    seen_avail: u16,
    used_idx: u16,
}

impl Device {
    fn new(page: Page, size: u16) -> Device {
        Device {
            page,
            size,
            seen_avail: 0,
            used_idx: 0,
        }
    }

    /// The next available chain's buffers, if any.
    fn take(&mut self) -> Option<(u16, Vec<Buffer>)> {
        let avail_idx = self.page.read16(LAYOUT.avail + 2);
        if avail_idx == self.seen_avail {
            return None;
        }
        let slot = usize::from(self.seen_avail % self.size);
        let head = self.page.read16(LAYOUT.avail + 4 + 2 * slot);
        self.seen_avail = self.seen_avail.wrapping_add(1);
        let mut chain = Vec::new();
        let mut id = head;
        loop {
            let at = LAYOUT.desc + 16 * usize::from(id);
            let flags = self.page.read16(at + 12);
            chain.push(Buffer {
                addr: self.page.read64(at),
                len: self.page.read32(at + 8),
                device_writes: flags & DESC_F_WRITE != 0,
            });
            if flags & DESC_F_NEXT == 0 {
                break;
            }
            id = self.page.read16(at + 14);
        }
        Some((head, chain))
    }

    fn give_back(&mut self, id: u32, len: u32) {
        let slot = usize::from(self.used_idx % self.size);
        self.page.write32(LAYOUT.used + 4 + 8 * slot, id);
        self.page.write32(LAYOUT.used + 8 + 8 * slot, len);
        self.used_idx = self.used_idx.wrapping_add(1);
        self.page.write16(LAYOUT.used + 2, self.used_idx);
    }
}

fn buffer(addr: u64) -> Buffer {
    Buffer {
        addr,
        len: 512,
        device_writes: addr % 2 == 1,
    }
}

#[test]
fn sizes_are_powers_of_two_within_both_limits() {
    assert_eq!(choose_size(256, 64), Some(64));
    assert_eq!(choose_size(100, 128), Some(64));
    assert_eq!(choose_size(48, 64), Some(32));
    assert_eq!(choose_size(1, 64), Some(1));
    assert_eq!(choose_size(0, 64), None);
    assert_eq!(choose_size(64, 0), None);
}

#[test]
fn used_pending_wraps_and_refuses_more_than_the_ring() {
    assert_eq!(used_pending(3, 1, 8), Some(2));
    assert_eq!(used_pending(2, 0xFFFE, 8), Some(4));
    assert_eq!(used_pending(5, 5, 8), Some(0));
    assert_eq!(used_pending(9, 0, 8), None);
    assert_eq!(used_pending(0, 1, 8), None);
}

#[test]
fn a_chain_goes_out_and_comes_back() {
    let page = Page::new();
    let mut queue = SplitQueue::new(page.clone(), 0x5000, 8, 0);
    let mut device = Device::new(page, 8);
    let chain = [buffer(0x1000), buffer(0x2001), buffer(0x3001)];
    let head = queue.add(&chain).unwrap();
    assert_eq!(queue.num_free(), 5);
    assert_eq!(queue.pop_used(), Ok(None));
    let (taken, buffers) = device.take().unwrap();
    assert_eq!((taken, buffers.as_slice()), (head, &chain[..]));
    device.give_back(u32::from(head), 77);
    assert!(queue.has_used());
    assert_eq!(queue.pop_used(), Ok(Some((head, 77))));
    assert_eq!(queue.num_free(), 8);
}

#[test]
fn full_queues_and_bad_chains_are_refused() {
    let page = Page::new();
    let mut queue = SplitQueue::new(page, 0, 4, 0);
    assert_eq!(queue.add(&[]), Err(Error::Invalid));
    assert_eq!(queue.add(&[buffer(0); 5]), Err(Error::Invalid));
    queue.add(&[buffer(0); 3]).unwrap();
    assert_eq!(queue.add(&[buffer(0); 2]), Err(Error::QueueFull));
    queue.add(&[buffer(0)]).unwrap();
}

#[test]
fn a_device_returning_ids_it_was_not_given_is_caught() {
    let page = Page::new();
    let mut queue = SplitQueue::new(page.clone(), 0, 8, 0);
    let mut device = Device::new(page.clone(), 8);
    let head = queue.add(&[buffer(0), buffer(1)]).unwrap();
    device.take().unwrap();
    // Out of range, then the chain's second descriptor (not a head).
    device.give_back(8, 0);
    assert_eq!(queue.pop_used(), Err(Error::BadUsed));
    let mut device = Device::new(page.clone(), 8);
    device.give_back(u32::from(head) + 1, 0);
    assert_eq!(queue.pop_used(), Err(Error::BadUsed));
    // A used index that runs past the ring.
    let mut page = page;
    page.write16(LAYOUT.used + 2, 9);
    assert_eq!(queue.pop_used(), Err(Error::BadUsed));
}

proptest! {
    /// Any interleaving of adds and completions (in any order the device
    /// picks) keeps every descriptor accounted for, across index wrap-around.
    #[test]
    fn descriptors_are_never_lost(ops in prop::collection::vec((1usize..4, any::<bool>(), any::<u8>()), 1..600)) {
        let size = 8;
        let page = Page::new();
        let mut queue = SplitQueue::new(page.clone(), 0, size, 0);
        let mut device = Device::new(page, size);
        let mut in_flight: Vec<(u16, usize)> = Vec::new();
        let mut taken: Vec<u16> = Vec::new();
        for (len, add, pick) in ops {
            if add {
                let chain = vec![buffer(0x1000); len];
                match queue.add(&chain) {
                    Ok(head) => in_flight.push((head, len)),
                    Err(e) => prop_assert_eq!(e, Error::QueueFull),
                }
            }
            while let Some((head, chain)) = device.take() {
                let expected = in_flight.iter().find(|(h, _)| *h == head).map(|(_, l)| *l);
                prop_assert_eq!(Some(chain.len()), expected);
                taken.push(head);
            }
            if !taken.is_empty() {
                let head = taken.remove(usize::from(pick) % taken.len());
                device.give_back(u32::from(head), u32::from(pick));
                prop_assert_eq!(queue.pop_used(), Ok(Some((head, u32::from(pick)))));
                in_flight.retain(|(h, _)| *h != head);
            }
            let busy: usize = in_flight.iter().map(|(_, l)| l).sum();
            prop_assert_eq!(usize::from(queue.num_free()) + busy, usize::from(size));
        }
    }
}
