//! dom0's own disks as blkback serves them (`phy:` targets): the names
//! (`vda`, `vdb`, ... in the order the drivers found the disks; `vda1` ..
//! `vda4` for the primary partitions of an MBR on them), the MBR's
//! partition table, and [`Slice`], which serves a whole disk or one
//! partition of it to blkback through its [`BlockDevice`] trait.
//!
//! Several slices share one device (`Rc<RefCell<_>>`: dom0 serves one
//! request at a time, so a borrow never overlaps another). A slice never
//! reaches outside its sectors: blkback refuses requests past a slice's
//! end before they get here, and [`Slice`] checks again.

use alloc::rc::Rc;
use alloc::vec::Vec;
use core::cell::RefCell;

use drivers::Error;
use drivers::blk::BlockDevice as Driver;

use crate::blkback::{BlockDevice, DeviceError, Piece};

/// Bytes of a sector.
const SECTOR: usize = 512;
/// Offset of the partition table in the MBR.
const TABLE: usize = 446;
/// Primary partitions of an MBR.
pub const PRIMARY: usize = 4;

/// One primary partition of an MBR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partition {
    /// Its number (1..=4), as in `vda1`.
    pub number: u8,
    /// First sector.
    pub start: u64,
    /// Sectors.
    pub sectors: u64,
}

/// The primary partitions of the MBR `sector0` on a disk of `capacity`
/// sectors: entries of a non-zero type and length, wholly within the disk
/// (others are left out). No signature `55 AA`: no partitions.
#[must_use]
pub fn parse_mbr(sector0: &[u8; SECTOR], capacity: u64) -> Vec<Partition> {
    if sector0[510..] != [0x55, 0xAA] {
        return Vec::new();
    }
    (1u8..)
        .zip(sector0[TABLE..TABLE + PRIMARY * 16].chunks_exact(16))
        .filter_map(|(number, entry)| {
            let word = |at: usize| {
                u64::from(u32::from_le_bytes([
                    entry[at],
                    entry[at + 1],
                    entry[at + 2],
                    entry[at + 3],
                ]))
            };
            let (kind, start, sectors) = (entry[4], word(8), word(12));
            (kind != 0 && sectors != 0 && start != 0 && start + sectors <= capacity).then_some(
                Partition {
                    number,
                    start,
                    sectors,
                },
            )
        })
        .collect()
}

/// The name of dom0's disk number `index` (`vda` for 0), `None` past
/// `vdz`.
#[must_use]
pub fn disk_name(index: usize) -> Option<[u8; 3]> {
    let letter = u8::try_from(index).ok().filter(|&i| i < 26)?;
    Some([b'v', b'd', b'a' + letter])
}

/// Parses a `phy:` device name: the disk's index and the partition's
/// number (0: the whole disk). `vda` is `(0, 0)`, `vdb2` is `(1, 2)`.
#[must_use]
pub fn parse_name(name: &str) -> Option<(usize, u8)> {
    let rest = name.strip_prefix("vd")?;
    let (&letter, number) = rest.as_bytes().split_first()?;
    if !letter.is_ascii_lowercase() {
        return None;
    }
    let partition = match number {
        [] => 0,
        [n @ b'1'..=b'4'] => n - b'0',
        _ => return None,
    };
    Some((usize::from(letter - b'a'), partition))
}

/// The reason a driver error gives blkback (logged with the request).
#[must_use]
pub fn device_error(e: Error) -> DeviceError {
    DeviceError(match e {
        Error::Timeout => "the disk did not answer in time",
        Error::Io(_) => "the disk reported an I/O error",
        Error::NeedsReset => "the disk needs a reset",
        Error::BadUsed => "the disk returned a descriptor it was not given",
        Error::QueueFull => "the disk's queue is full",
        Error::Invalid => "the disk refused the range",
        Error::Map(_)
        | Error::NoMemory
        | Error::Interrupt(_)
        | Error::BadDevice(_)
        | Error::Features => "the disk failed",
    })
}

/// A whole disk or one partition of it, shared with the other slices of
/// the same disk.
pub struct Slice<D> {
    device: Rc<RefCell<D>>,
    start: u64,
    sectors: u64,
    writable: bool,
}

impl<D: Driver> Slice<D> {
    /// `sectors` sectors of `device` from `start`; `None` if they are not
    /// all on it.
    pub fn new(device: Rc<RefCell<D>>, start: u64, sectors: u64, writable: bool) -> Option<Self> {
        let capacity = device.borrow().sectors();
        start.checked_add(sectors).filter(|&end| end <= capacity)?;
        Some(Slice {
            device,
            start,
            sectors,
            writable,
        })
    }

    /// The device's sector of the slice's `sector`, for `len` bytes.
    fn at(&self, sector: u64, len: usize) -> Result<u64, DeviceError> {
        let count = (len / SECTOR) as u64;
        sector
            .checked_add(count)
            .filter(|&end| end <= self.sectors && len.is_multiple_of(SECTOR))
            .map(|_| self.start + sector)
            .ok_or(DeviceError("past the end of the partition"))
    }
}

impl<D: Driver> BlockDevice for Slice<D> {
    fn sectors(&self) -> u64 {
        self.sectors
    }
    fn writable(&self) -> bool {
        self.writable
    }
    fn read(&mut self, sector: u64, buf: &mut [u8]) -> Result<(), DeviceError> {
        let at = self.at(sector, buf.len())?;
        self.device.borrow_mut().read(at, buf).map_err(device_error)
    }
    fn write(&mut self, sector: u64, buf: &[u8]) -> Result<(), DeviceError> {
        if !self.writable {
            return Err(DeviceError("read-only"));
        }
        let at = self.at(sector, buf.len())?;
        self.device
            .borrow_mut()
            .write(at, buf)
            .map_err(device_error)
    }
    fn flush(&mut self) -> Result<(), DeviceError> {
        self.device.borrow_mut().flush().map_err(device_error)
    }
    fn direct(&self) -> bool {
        true
    }
    fn read_direct(&mut self, sector: u64, pieces: &[Piece]) -> Result<(), DeviceError> {
        let at = self.at(sector, bytes(pieces))?;
        self.device
            .borrow_mut()
            .read_direct(at, pieces)
            .map_err(device_error)
    }
    fn write_direct(&mut self, sector: u64, pieces: &[Piece]) -> Result<(), DeviceError> {
        if !self.writable {
            return Err(DeviceError("read-only"));
        }
        let at = self.at(sector, bytes(pieces))?;
        self.device
            .borrow_mut()
            .write_direct(at, pieces)
            .map_err(device_error)
    }
}

/// Bytes of `pieces` in all.
fn bytes(pieces: &[Piece]) -> usize {
    pieces.iter().map(|p| p.len as usize).sum()
}

#[cfg(test)]
mod tests;
