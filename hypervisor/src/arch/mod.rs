//! Hardware access. The only place with `asm!`, port and MSR access, control
//! registers and raw pointers into machine memory.
pub mod x86_64;
