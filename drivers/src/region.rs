//! [`Region`]: a mapped page of device registers or DMA memory.
//!
//! Every access has the width the device expects (virtio's common
//! configuration must be read and written with its fields' own widths),
//! and none is cached or merged by the compiler: the implementation uses
//! volatile accesses. Offsets are bytes from the page's start; an access
//! past the page is the implementation's to refuse (it must not touch
//! other memory).

/// A page of device-visible memory.
pub trait Region {
    /// Reads the byte at `offset`.
    fn read8(&self, offset: usize) -> u8;
    /// Reads the `u16` at `offset` (2-aligned).
    fn read16(&self, offset: usize) -> u16;
    /// Reads the `u32` at `offset` (4-aligned).
    fn read32(&self, offset: usize) -> u32;
    /// Writes the byte at `offset`.
    fn write8(&mut self, offset: usize, value: u8);
    /// Writes the `u16` at `offset` (2-aligned).
    fn write16(&mut self, offset: usize, value: u16);
    /// Writes the `u32` at `offset` (4-aligned).
    fn write32(&mut self, offset: usize, value: u32);

    /// Reads the `u64` at `offset` as two `u32`s, low half first (as
    /// virtio allows for its 64-bit fields).
    fn read64(&self, offset: usize) -> u64 {
        u64::from(self.read32(offset)) | (u64::from(self.read32(offset + 4)) << 32)
    }

    /// Writes the `u64` at `offset` as two `u32`s, low half first.
    #[expect(clippy::cast_possible_truncation, reason = "the two halves of a u64")]
    fn write64(&mut self, offset: usize, value: u64) {
        self.write32(offset, value as u32);
        self.write32(offset + 4, (value >> 32) as u32);
    }

    /// Copies `buf.len()` bytes from `offset` into `buf`.
    fn read_bytes(&self, offset: usize, buf: &mut [u8]) {
        for (i, b) in buf.iter_mut().enumerate() {
            *b = self.read8(offset + i);
        }
    }

    /// Copies `bytes` to `offset`.
    fn write_bytes(&mut self, offset: usize, bytes: &[u8]) {
        for (i, &b) in bytes.iter().enumerate() {
            self.write8(offset + i, b);
        }
    }
}
