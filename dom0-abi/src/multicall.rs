//! `multicall(entries, nr)`: several hypercalls in one entry.
//!
//! The hypervisor runs the entries in order, each exactly as if the guest
//! had made it, and stores each call's return value in its `result`. It
//! does not stop when one fails (the guest checks every `result`), except
//! that an `iret` entry ends the batch (it does not return), as does a
//! fatal error. A nested `multicall` gives `EINVAL`; an unreadable array
//! gives `EFAULT` for the whole call.

/// `struct multicall_entry` (64 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MulticallEntry {
    /// IN: hypercall number.
    pub op: u64,
    /// OUT: that call's return value (negative errno on failure).
    pub result: u64,
    /// IN: arguments 1-6 (the sixth is ignored by every 64-bit hypercall).
    pub args: [u64; 6],
}

crate::assert_layout!(MulticallEntry, 64, { op: 0, result: 8, args: 16 });
