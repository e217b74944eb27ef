//! What the test guest (`test-guest`, the binary of this crate) shares
//! with `cargo xtask test`: the pure parts both sides must agree on.
//!
//! - [`disk`]: the virtio-blk test's disk size, its written-range lines
//!   and the pattern the host checks in the image afterwards;
//! - [`typed_text`]: what the harness types into the serial line for the
//!   `console_input` guest, which checks it byte for byte.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod disk;
pub mod typed_text;
