//! dom0's back-end logic, pure and host-tested; the `dom0` binary
//! (`main.rs`) drives it with hypercalls.
//!
//! - [`blkback`]: the block back end: checking and serving `blkif`
//!   requests against a [`blkback::BlockDevice`], and its side of the
//!   xenstore handshake.
//! - [`physdisk`]: dom0's own disks and their MBR partitions behind
//!   blkback's [`blkback::BlockDevice`] (`phy:` targets).

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod blkback;
pub mod physdisk;
