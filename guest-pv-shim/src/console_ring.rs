//! The guest's end of the PV console ring (`dom0_abi::console::
//! XenconsInterface`): output bytes produced into `output[]`, input bytes
//! consumed from `input[]`, over memory the guest maps its own way
//! ([`RingMemory`]).
//!
//! The back end's indices are read once per step and never trusted: an
//! output consumer index that claims more than the guest produced leaves
//! no room (nothing is written over bytes the back end may still read),
//! an input producer index running more than the buffer ahead yields at
//! most one buffer of bytes. Ordering as for every shared ring: bytes,
//! release fence, producer index; producer index, acquire fence, bytes.

#![forbid(unsafe_code)]

use core::mem::offset_of;
use core::sync::atomic::{Ordering, fence};

use dom0_abi::console::{XENCONS_IN_SIZE, XENCONS_OUT_SIZE, XenconsInterface};

use crate::ring::RingMemory;

const OUTPUT: usize = offset_of!(XenconsInterface, output);
const INPUT: usize = offset_of!(XenconsInterface, input);
const IN_CONS: usize = offset_of!(XenconsInterface, in_cons);
const IN_PROD: usize = offset_of!(XenconsInterface, in_prod);
const OUT_CONS: usize = offset_of!(XenconsInterface, out_cons);
const OUT_PROD: usize = offset_of!(XenconsInterface, out_prod);

#[allow(clippy::cast_possible_truncation, reason = "2048 and 1024")]
const OUT_SIZE: u32 = XENCONS_OUT_SIZE as u32;
#[allow(clippy::cast_possible_truncation, reason = "2048 and 1024")]
const IN_SIZE: u32 = XENCONS_IN_SIZE as u32;

/// The guest's end of a console ring in `M`.
#[derive(Debug)]
pub struct ConsoleRing<M> {
    mem: M,
}

impl<M: RingMemory> ConsoleRing<M> {
    /// The ring in `mem` (a page the builder set up; nothing is written).
    pub fn new(mem: M) -> Self {
        ConsoleRing { mem }
    }

    /// Bytes of output that fit now: 0 while the back end's consumer
    /// index claims more than was produced.
    #[must_use]
    pub fn room(&self) -> usize {
        let prod = self.mem.read_u32(OUT_PROD);
        let cons = self.mem.read_u32(OUT_CONS);
        let used = prod.wrapping_sub(cons);
        (OUT_SIZE.saturating_sub(used)) as usize
    }

    /// Whether the back end has read every byte produced.
    #[must_use]
    pub fn drained(&self) -> bool {
        self.room() == XENCONS_OUT_SIZE
    }

    /// Writes as much of `bytes` as fits and publishes it; how many bytes
    /// were written (the caller notifies the back end if any).
    pub fn put(&mut self, bytes: &[u8]) -> usize {
        let len = bytes.len().min(self.room());
        let prod = self.mem.read_u32(OUT_PROD);
        let at = (prod % OUT_SIZE) as usize;
        let (first, second) = bytes[..len].split_at(len.min(XENCONS_OUT_SIZE - at));
        self.mem.write_bytes(OUTPUT + at, first);
        self.mem.write_bytes(OUTPUT, second);
        // The bytes are visible before the index that publishes them.
        fence(Ordering::Release);
        #[allow(clippy::cast_possible_truncation, reason = "len <= 2048")]
        self.mem.write_u32(OUT_PROD, prod.wrapping_add(len as u32));
        len
    }

    /// Takes up to `out.len()` bytes of input, oldest first; how many.
    pub fn take(&mut self, out: &mut [u8]) -> usize {
        let prod = self.mem.read_u32(IN_PROD);
        // The bytes below `prod` are read after it.
        fence(Ordering::Acquire);
        let cons = self.mem.read_u32(IN_CONS);
        let pending = prod.wrapping_sub(cons).min(IN_SIZE) as usize;
        let len = pending.min(out.len());
        let at = (cons % IN_SIZE) as usize;
        let (first, second) = out[..len].split_at_mut(len.min(XENCONS_IN_SIZE - at));
        self.mem.read_bytes(INPUT + at, first);
        self.mem.read_bytes(INPUT, second);
        // The bytes are read before the back end may reuse them.
        fence(Ordering::Release);
        #[allow(clippy::cast_possible_truncation, reason = "len <= 1024")]
        self.mem.write_u32(IN_CONS, cons.wrapping_add(len as u32));
        len
    }
}

#[cfg(test)]
mod tests;
