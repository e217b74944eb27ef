//! dom0's xenstore server, in pure Rust: what Xen 4.17's C xenstored does
//! for its guests, behind two small interfaces so that every line runs in
//! host tests.
//!
//! - [`wire`]: errors, payload strings, framing of `xs_wire` messages;
//! - [`perms`]: permission lists (`n0`, `r5`, ...) and the access rule;
//! - [`path`]: path syntax and relative paths;
//! - [`store`]: the node tree and every message type, with watches,
//!   transactions and per-domain quotas ([`store::Store`]);
//! - [`ring`]: moving messages through a domain's
//!   `xenstore_domain_interface` ([`ring::StoreRing`]).
//!
//! The store never touches memory it was not given: the ring's bytes come
//! through [`ring::StoreRing`] and what INTRODUCE and RELEASE need from the
//! hypervisor (mapping the ring, binding its event channel) through
//! [`store::Host`]. Nothing a guest sends can make it panic: malformed
//! requests get Xen's error replies, a ring with impossible indices or an
//! oversized message closes that domain's connection.

#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod path;
pub mod perms;
pub mod ring;
pub mod store;
pub mod wire;

/// A domain id.
pub type DomId = u16;

pub use store::{Host, Quota, Store};
pub use wire::XsError;
