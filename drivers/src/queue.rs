//! Split virtqueues in one DMA page.
//!
//! [`LAYOUT`] for a queue of `size` entries (a power of two, at most
//! [`MAX_SIZE`]): the descriptor table at 0 (16 bytes each), the available
//! ring after [`MAX_SIZE`] descriptors (`flags`, `idx`, `ring[size]`,
//! `used_event`), the used ring at the next 4-aligned offset past
//! [`MAX_SIZE`]'s available ring (`flags`, `idx`, `ring[size]` of `{id: u32, len: u32}`,
//! `avail_event`). With [`MAX_SIZE`] = 64 all of it fits in one page.
//!
//! The driver keeps its own copies of what the device must not change:
//! the free list, each chain's length, the next available index and the
//! last used index seen. What it reads back from the used ring (`id`,
//! `len`) is checked: an id that is not a chain in flight is
//! [`Error::BadUsed`](crate::Error::BadUsed), never an index into the
//! driver's state. Indices are free-running `u16`s; a ring slot is the
//! index modulo the size.

use core::sync::atomic::{Ordering, fence};

use crate::{Error, Region};

/// Largest queue this driver sets up.
pub const MAX_SIZE: u16 = 64;

/// Descriptor flag: the chain continues at `next`.
pub const DESC_F_NEXT: u16 = 1;
/// Descriptor flag: the device writes this buffer.
pub const DESC_F_WRITE: u16 = 2;

/// Byte offsets of a queue's three parts in its page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The descriptor table.
    pub desc: usize,
    /// The available (driver) ring.
    pub avail: usize,
    /// The used (device) ring.
    pub used: usize,
}

/// Where every queue's parts are in its page: laid out for [`MAX_SIZE`]
/// entries (a smaller queue leaves the rest unused).
pub const LAYOUT: Layout = Layout {
    desc: 0,
    avail: 16 * MAX_SIZE as usize,
    used: (16 * MAX_SIZE as usize + 6 + 2 * MAX_SIZE as usize + 3) & !3,
};

/// Bytes a [`MAX_SIZE`] queue takes in its page.
pub const LAYOUT_BYTES: usize = LAYOUT.used + 6 + 8 * MAX_SIZE as usize;

const _: () = assert!(LAYOUT_BYTES <= 4096);

/// The queue size to use when the device allows `device_max` and the
/// driver wants at most `driver_max`: the largest power of two no larger
/// than either (and [`MAX_SIZE`]); `None` if the device allows none.
#[must_use]
pub fn choose_size(device_max: u16, driver_max: u16) -> Option<u16> {
    let limit = device_max.min(driver_max).min(MAX_SIZE);
    (limit > 0).then(|| 1 << (15 - limit.leading_zeros()))
}

/// Number of used entries not yet seen, from the device's `used_idx` and
/// the last index the driver consumed; `None` if the device claims more
/// than the ring holds (a broken or hostile device).
#[must_use]
pub fn used_pending(used_idx: u16, last_seen: u16, size: u16) -> Option<u16> {
    let pending = used_idx.wrapping_sub(last_seen);
    (pending <= size).then_some(pending)
}

/// One buffer of a chain: its bus address, length and direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buffer {
    /// Bus (machine) address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// Whether the device writes it (else it reads it).
    pub device_writes: bool,
}

/// A split virtqueue over one DMA page.
pub struct SplitQueue<R: Region> {
    page: R,
    bus: u64,
    size: u16,
    index: u16,
    free_head: u16,
    num_free: u16,
    next: [u16; MAX_SIZE as usize],
    /// Length of the chain whose head is the index (0: not in flight).
    chain_len: [u16; MAX_SIZE as usize],
    avail_idx: u16,
    last_used: u16,
}

impl<R: Region> SplitQueue<R> {
    /// A queue of `size` entries (a power of two, at most [`MAX_SIZE`]) in
    /// `page` (zeroed) at bus address `bus`, the device's queue `index`.
    pub fn new(page: R, bus: u64, size: u16, index: u16) -> SplitQueue<R> {
        let size = size.clamp(1, MAX_SIZE);
        let mut next = [0; MAX_SIZE as usize];
        for (i, n) in next.iter_mut().enumerate() {
            *n = u16::try_from(i + 1).unwrap_or(u16::MAX);
        }
        SplitQueue {
            page,
            bus,
            size,
            index,
            free_head: 0,
            num_free: size,
            next,
            chain_len: [0; MAX_SIZE as usize],
            avail_idx: 0,
            last_used: 0,
        }
    }

    /// Its size.
    #[must_use]
    pub fn size(&self) -> u16 {
        self.size
    }

    /// The device's index of this queue.
    #[must_use]
    pub fn index(&self) -> u16 {
        self.index
    }

    /// The bus address of its page.
    #[must_use]
    pub fn bus(&self) -> u64 {
        self.bus
    }

    /// Free descriptors.
    #[must_use]
    pub fn num_free(&self) -> u16 {
        self.num_free
    }

    /// Puts `chain` on the available ring; returns its head id. The caller
    /// then notifies the device.
    pub fn add(&mut self, chain: &[Buffer]) -> Result<u16, Error> {
        if chain.is_empty() || chain.len() > usize::from(self.size) {
            return Err(Error::Invalid);
        }
        let count = u16::try_from(chain.len()).map_err(|_| Error::Invalid)?;
        if count > self.num_free {
            return Err(Error::QueueFull);
        }
        let head = self.free_head;
        let mut id = head;
        let desc = LAYOUT.desc;
        for (i, buffer) in chain.iter().enumerate() {
            let last = i + 1 == chain.len();
            let at = desc + 16 * usize::from(id);
            let mut flags = if buffer.device_writes {
                DESC_F_WRITE
            } else {
                0
            };
            let next = self.next[usize::from(id)];
            if !last {
                flags |= DESC_F_NEXT;
            }
            self.page.write64(at, buffer.addr);
            self.page.write32(at + 8, buffer.len);
            self.page.write16(at + 12, flags);
            self.page.write16(at + 14, if last { 0 } else { next });
            if last {
                self.free_head = next;
            } else {
                id = next;
            }
        }
        self.num_free -= count;
        self.chain_len[usize::from(head)] = count;
        let avail = LAYOUT.avail;
        let slot = usize::from(self.avail_idx % self.size);
        self.page.write16(avail + 4 + 2 * slot, head);
        // The ring entry must be visible before the index that publishes it.
        fence(Ordering::SeqCst);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.page.write16(avail + 2, self.avail_idx);
        fence(Ordering::SeqCst);
        Ok(head)
    }

    /// Takes the next used entry: its head id and the length the device
    /// wrote, returning the chain's descriptors to the free list.
    pub fn pop_used(&mut self) -> Result<Option<(u16, u32)>, Error> {
        let used = LAYOUT.used;
        let used_idx = self.page.read16(used + 2);
        let pending = used_pending(used_idx, self.last_used, self.size).ok_or(Error::BadUsed)?;
        if pending == 0 {
            return Ok(None);
        }
        // The entry is read only after the index that published it.
        fence(Ordering::SeqCst);
        let slot = usize::from(self.last_used % self.size);
        let id = self.page.read32(used + 4 + 8 * slot);
        let len = self.page.read32(used + 8 + 8 * slot);
        let head = u16::try_from(id)
            .ok()
            .filter(|&h| h < self.size)
            .ok_or(Error::BadUsed)?;
        let count = self.chain_len[usize::from(head)];
        if count == 0 {
            return Err(Error::BadUsed);
        }
        self.last_used = self.last_used.wrapping_add(1);
        self.chain_len[usize::from(head)] = 0;
        // Walk the chain through the driver's own links, not the
        // descriptor table the device can write.
        let mut tail = head;
        for _ in 1..count {
            tail = self.next[usize::from(tail)];
        }
        self.next[usize::from(tail)] = self.free_head;
        self.free_head = head;
        self.num_free += count;
        Ok(Some((head, len)))
    }

    /// Whether the device has used entries not taken yet.
    #[must_use]
    pub fn has_used(&self) -> bool {
        self.page.read16(LAYOUT.used + 2) != self.last_used
    }
}

#[cfg(test)]
mod tests;
