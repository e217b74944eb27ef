//! What the test guest (`test-guest`, the binary of this crate) shares
//! with `cargo xtask test`: the pure parts both sides must agree on.
//!
//! - [`typed_text`]: what the harness types into the serial line for the
//!   `console_input` guest, which checks it byte for byte.

#![no_std]
#![forbid(unsafe_code)]

pub mod typed_text;
