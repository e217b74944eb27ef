//! virtio-blk: read, write, flush and the capacity, behind [`BlockDevice`].
//!
//! One request is in flight at a time: a chain of the 16-byte request
//! header (device reads), up to [`DATA_PAGES`] data pages (one descriptor
//! each, so every buffer is machine-contiguous) and the status byte
//! (device writes). Larger transfers are split. The driver waits for the
//! completion on the device's interrupt.
//!
//! A caller that holds the data in machine memory already (blkback with
//! a front end's persistently mapped grants) hands the device those
//! addresses instead ([`BlockDevice::read_direct`]): one request of up to
//! [`MAX_PIECES`] pieces, no copy through the driver's own pages.

use crate::queue::{Buffer, SplitQueue};
use crate::virtio::{self, Transport};
use crate::{Error, Platform, Region};

/// Bytes per sector.
pub const SECTOR: usize = 512;
/// Data pages per request (44 KiB): as many as a `blkif` request has
/// segments, so that blkback moves a whole ring request with one virtio
/// request.
pub const DATA_PAGES: usize = 11;
/// Sectors per request.
pub const SECTORS_PER_REQUEST: usize = DATA_PAGES * 4096 / SECTOR;

/// `VIRTIO_BLK_F_FLUSH`: the device has a volatile write cache.
pub const F_FLUSH: u64 = 1 << 9;
/// `VIRTIO_BLK_T_IN`: read.
pub const T_IN: u32 = 0;
/// `VIRTIO_BLK_T_OUT`: write.
pub const T_OUT: u32 = 1;
/// `VIRTIO_BLK_T_FLUSH`: flush the write cache.
pub const T_FLUSH: u32 = 4;
/// `VIRTIO_BLK_S_OK`.
pub const S_OK: u8 = 0;

/// Pieces of one direct request ([`BlockDevice::read_direct`]): a
/// 128 KiB transfer in whole pages.
pub const MAX_PIECES: usize = 32;

/// Bytes of machine memory the device reads or writes by DMA.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Piece {
    /// Bus (machine) address of the first byte.
    pub bus: u64,
    /// Bytes (at most a page; the pieces of a request add up to whole
    /// sectors).
    pub len: u32,
}

/// Checks a direct transfer of `pieces` from `sector`: 1 to
/// [`MAX_PIECES`] pieces of 1 to 4096 bytes, whole sectors in all, within
/// the disk. Returns the bytes moved.
pub fn check_pieces(sector: u64, pieces: &[Piece], capacity: u64) -> Result<usize, Error> {
    if pieces.is_empty()
        || pieces.len() > MAX_PIECES
        || pieces.iter().any(|p| p.len == 0 || p.len > 4096)
    {
        return Err(Error::Invalid);
    }
    let bytes = pieces.iter().map(|p| p.len as usize).sum();
    check_range(sector, bytes, capacity)?;
    Ok(bytes)
}

/// A disk as the block back end sees it.
pub trait BlockDevice {
    /// Capacity in 512-byte sectors.
    fn sectors(&self) -> u64;
    /// Reads `buf.len() / 512` sectors from `sector` (`buf.len()` a
    /// multiple of 512; [`Error::Invalid`] past the end).
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), Error>;
    /// Writes `buf` from `sector` (as for `read`).
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), Error>;
    /// Makes every completed write durable.
    fn flush(&mut self) -> Result<(), Error>;
    /// Reads the sectors from `sector` straight into `pieces` (machine
    /// memory the caller owns or has mapped for the device), in one
    /// request ([`check_pieces`]).
    fn read_direct(&mut self, sector: u64, pieces: &[Piece]) -> Result<(), Error>;
    /// Writes `pieces` at `sector` in one request (as for `read_direct`).
    fn write_direct(&mut self, sector: u64, pieces: &[Piece]) -> Result<(), Error>;
}

/// Checks a transfer of `len` bytes from `sector` against a disk of
/// `capacity` sectors.
pub fn check_range(sector: u64, len: usize, capacity: u64) -> Result<(), Error> {
    if !len.is_multiple_of(SECTOR) {
        return Err(Error::Invalid);
    }
    let count = (len / SECTOR) as u64;
    match sector.checked_add(count) {
        Some(end) if end <= capacity => Ok(()),
        _ => Err(Error::Invalid),
    }
}

/// The 16-byte request header: type, reserved, sector.
#[must_use]
pub fn request_header(kind: u32, sector: u64) -> [u8; 16] {
    let mut header = [0; 16];
    header[..4].copy_from_slice(&kind.to_le_bytes());
    header[8..].copy_from_slice(&sector.to_le_bytes());
    header
}

/// Offset of the status byte in the header page.
const STATUS_OFFSET: usize = 64;

/// A virtio-blk device.
pub struct VirtioBlk<P: Platform> {
    transport: Transport<P>,
    queue: SplitQueue<P::Page>,
    header: (P::Page, u64),
    data: [Option<(P::Page, u64)>; DATA_PAGES],
    capacity: u64,
    can_flush: bool,
}

impl<P: Platform> VirtioBlk<P> {
    /// Initialises the virtio-blk function at `address`.
    pub fn new(platform: &mut P, address: crate::pci::Address) -> Result<VirtioBlk<P>, Error> {
        let mut transport = Transport::new(platform, address)?;
        let features = transport.negotiate(F_FLUSH, 0)?;
        let queue = match transport.setup_queue(platform, 0, crate::queue::MAX_SIZE) {
            Ok(queue) => queue,
            Err(e) => {
                transport.fail();
                return Err(e);
            }
        };
        let header = platform.alloc_dma()?;
        let mut data = [const { None }; DATA_PAGES];
        for page in &mut data {
            *page = Some(platform.alloc_dma()?);
        }
        transport.start();
        let capacity = u64::from(transport.config32(0)) | (u64::from(transport.config32(4)) << 32);
        Ok(VirtioBlk {
            transport,
            queue,
            header,
            data,
            capacity,
            can_flush: features & F_FLUSH != 0,
        })
    }

    /// The transport (for its address and interrupt).
    #[must_use]
    pub fn transport(&self) -> &Transport<P> {
        &self.transport
    }

    /// Whether the device has a write cache to flush.
    #[must_use]
    pub fn can_flush(&self) -> bool {
        self.can_flush
    }

    /// Runs one request of `kind` at `sector` over the first `bytes`
    /// bytes of the driver's data pages.
    fn request(&mut self, kind: u32, sector: u64, bytes: usize) -> Result<(), Error> {
        let mut pieces = [Piece::default(); DATA_PAGES];
        let mut n = 0;
        let mut left = bytes;
        for ((_, bus), piece) in self.data.iter().flatten().zip(&mut pieces) {
            if left == 0 {
                break;
            }
            let len = left.min(4096);
            *piece = Piece {
                bus: *bus,
                len: u32::try_from(len).map_err(|_| Error::Invalid)?,
            };
            n += 1;
            left -= len;
        }
        self.request_over(kind, sector, &pieces[..n])
    }

    /// Runs one request of `kind` at `sector` over `pieces` (at most
    /// [`MAX_PIECES`]): the header, the pieces, the status byte.
    fn request_over(&mut self, kind: u32, sector: u64, pieces: &[Piece]) -> Result<(), Error> {
        let (page, bus) = &mut self.header;
        page.write_bytes(0, &request_header(kind, sector));
        page.write8(STATUS_OFFSET, 0xFF);
        let mut chain = [Buffer {
            addr: 0,
            len: 0,
            device_writes: false,
        }; MAX_PIECES + 2];
        if pieces.len() > MAX_PIECES {
            return Err(Error::Invalid);
        }
        chain[0] = Buffer {
            addr: *bus,
            len: 16,
            device_writes: false,
        };
        for (piece, slot) in pieces.iter().zip(&mut chain[1..]) {
            *slot = Buffer {
                addr: piece.bus,
                len: piece.len,
                device_writes: kind == T_IN,
            };
        }
        let n = pieces.len() + 1;
        chain[n] = Buffer {
            addr: *bus + STATUS_OFFSET as u64,
            len: 1,
            device_writes: true,
        };
        let head = self.queue.add(&chain[..=n])?;
        self.transport.notify(self.queue.index())?;
        let (id, _) = self
            .transport
            .wait_used(&mut self.queue, SplitQueue::pop_used)?;
        if id != head {
            return Err(Error::BadUsed);
        }
        match self.header.0.read8(STATUS_OFFSET) {
            S_OK => Ok(()),
            status => Err(Error::Io(status)),
        }
    }
}

impl<P: Platform> BlockDevice for VirtioBlk<P> {
    fn sectors(&self) -> u64 {
        self.capacity
    }

    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), Error> {
        check_range(sector, buf.len(), self.capacity)?;
        for (i, chunk) in buf.chunks_mut(SECTORS_PER_REQUEST * SECTOR).enumerate() {
            let at = sector + (i * SECTORS_PER_REQUEST) as u64;
            self.request(T_IN, at, chunk.len())?;
            for (piece, (page, _)) in chunk.chunks_mut(4096).zip(self.data.iter().flatten()) {
                page.read_bytes(0, piece);
            }
        }
        Ok(())
    }

    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), Error> {
        check_range(sector, buf.len(), self.capacity)?;
        for (i, chunk) in buf.chunks(SECTORS_PER_REQUEST * SECTOR).enumerate() {
            for (piece, (page, _)) in chunk.chunks(4096).zip(self.data.iter_mut().flatten()) {
                page.write_bytes(0, piece);
            }
            let at = sector + (i * SECTORS_PER_REQUEST) as u64;
            self.request(T_OUT, at, chunk.len())?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Error> {
        if !self.can_flush {
            return Ok(());
        }
        self.request(T_FLUSH, 0, 0)
    }

    fn read_direct(&mut self, sector: u64, pieces: &[Piece]) -> Result<(), Error> {
        check_pieces(sector, pieces, self.capacity)?;
        self.request_over(T_IN, sector, pieces)
    }

    fn write_direct(&mut self, sector: u64, pieces: &[Piece]) -> Result<(), Error> {
        check_pieces(sector, pieces, self.capacity)?;
        self.request_over(T_OUT, sector, pieces)
    }
}

/// The test pattern of `sector` under `seed`: what the disk tests write
/// and what the host checks in the image afterwards.
pub fn pattern(sector: u64, seed: u64, out: &mut [u8; SECTOR]) {
    let mut state = seed ^ sector.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5851_F42D_4C95_7F2D;
    for chunk in out.chunks_mut(8) {
        // xorshift64*: cheap, and every sector differs.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        chunk.copy_from_slice(&state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
}

/// Whether `function` is a modern virtio-blk device.
#[must_use]
pub fn is_virtio_blk(function: &crate::pci::Function) -> bool {
    virtio::device_type(function.vendor, function.device) == Some(virtio::TYPE_BLOCK)
}

#[cfg(test)]
mod tests;
