//! The measuring stick: a benchmark guest kernel (`bench-guest`, the
//! binary of this crate) and the pure parts it shares with `cargo xtask
//! bench` (this library).
//!
//! The guest boots as dom0 on this hypervisor and on Xen 4.17, times each
//! path with fenced `rdtsc` and prints one line per benchmark (see
//! [`line`]). Under QEMU TCG with `-icount shift=0,sleep=off` the TSC
//! advances exactly once per executed instruction, guest and hypervisor
//! alike, so a delta is the path's length in instructions, identical from
//! run to run. `docs/performance.md` explains the method and its limits.
//!
//! Library modules, all pure (`forbid(unsafe_code)`, host-tested):
//! - [`catalogue`]: every benchmark, its unit and what one sample is;
//! - [`stats`]: samples, mean and minimum in fixed-point decimals;
//! - [`line`]: the console lines the guest prints and xtask parses;
//! - [`options`]: the guest's command line (`iters=`, `warmup=`, `only=`);
//! - [`counters`]: the hypervisor statistics interface the guest reads
//!   (a proposal until the hypervisor implements it; `ENOSYS` today);
//! - [`sink`] (feature `net`): the TCP receiver of the network
//!   benchmarks, shared by dom0 and the demo domU.
//!
//! Invariant: the guest and xtask agree on the line format because both
//! use [`line`]; a benchmark name exists once, in [`catalogue::ALL`].

#![no_std]
#![forbid(unsafe_code)]

pub mod catalogue;
pub mod counters;
pub mod line;
pub mod options;
#[cfg(feature = "net")]
pub mod sink;
pub mod stats;
