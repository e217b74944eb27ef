//! dom0's toolstack: what `xl` and libxenguest do, for Rust PV dom0s.
//!
//! - [`cpio`]: the ramdisk archive that carries domU kernels and configs;
//! - [`config`]: domain configurations in a subset of `xl.cfg`;
//! - [`layout`]: a domU's initial memory layout and bootstrap page tables;
//! - [`bridge`]: dom0's learning Ethernet bridge and its [`bridge::NetDevice`]
//!   ports;
//! - [`netback`]: the network back end's ring logic (one vif's TX and RX
//!   rings, moved by grant copy);
//! - [`builder`]: building and starting a domU from any 64-bit Xen PV ELF
//!   through the [`builder::Hypervisor`] interface;
//! - [`console`]: the console back end's ring logic (output with a
//!   `(d<N>) ` prefix per line);
//! - [`store`]: the xenstore nodes `xl` writes for a domain, and its
//!   INTRODUCE to the store (the `xenstore` crate).
//!
//! Everything here is pure and host-tested; the hypercalls are behind
//! [`builder::Hypervisor`], which the `xen` module implements on the
//! bare-metal target (`target_os = "none"` only) through guest-pv-shim's
//! hypercall wrappers and mapping windows. The crate forbids `unsafe`;
//! the shim holds every `unsafe` block.

#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod bridge;
pub mod builder;
pub mod config;
pub mod console;
pub mod cpio;
pub mod layout;
pub mod netback;
pub mod shell;
pub mod store;
#[cfg(target_os = "none")]
pub mod xen;
