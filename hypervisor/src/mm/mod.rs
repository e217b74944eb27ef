//! Machine memory management.
pub mod frame_alloc;
