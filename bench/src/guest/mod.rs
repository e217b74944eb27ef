//! The benchmark guest kernel's modules (bare-metal target only).
//!
//! `unsafe` code lives in `asm` (instruction sequences, entry points,
//! page-aligned storage), `hc` (the hypercall instruction), `pagetable`
//! (reads of the guest's own page tables), and in the benchmarks where they
//! make the hypercalls that change mappings or touch memory the hypervisor
//! shares (`mmu`, `traps`, `events`, `grants`), each with its own SAFETY argument.

pub mod asm;
pub mod events;
pub mod grants;
pub mod harness;
pub mod hc;
pub mod hypercalls;
pub mod mmu;
pub mod pagetable;
pub mod traps;
