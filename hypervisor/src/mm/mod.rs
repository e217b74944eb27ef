//! Machine memory management.
//!
//! - [`frame_alloc`]: the bitmap allocator of free machine frames.
//! - [`frame_table`]: one record per machine frame (owner, references,
//!   type, pin), Xen's `page_info`.
//! - [`pte`]: which bits a guest may set in a page-table entry.
//! - [`types`]: the page-type system ([`types::Mmu`]): references, types,
//!   validation of page tables, checked entry updates, pins, base pointers,
//!   writable page tables.
//! - [`lifecycle`]: domain teardown.
//! - [`machine`]: the traits `arch` implements, and the per-domain and
//!   per-vCPU memory state.
//! - [`effects`]: the TLB flushes and view resyncs a batch leaves to `arch`.
//!
//! Everything here is pure logic (`forbid(unsafe_code)`), tested on the
//! host against a fake machine; `docs/memory.md` explains the design.
#![forbid(unsafe_code)]

pub mod effects;
pub mod foreign;
pub mod frame_alloc;
pub mod frame_table;
pub mod grant;
pub mod lifecycle;
pub mod machine;
pub mod pte;
pub mod types;

#[cfg(test)]
pub(crate) mod fake;
#[cfg(test)]
mod tests;

/// The M2P entry of a machine frame that backs no pseudo-physical page
/// (Xen's `INVALID_M2P_ENTRY`, `~0UL`).
pub const INVALID_M2P_ENTRY: u64 = u64::MAX;
