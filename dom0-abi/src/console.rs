//! `console_io(cmd, count, buf)` and the PV console ring.
//!
//! `console_io` is the hypervisor's own serial console, meant for the
//! hardware domain (Xen's release builds refuse it to other domains with
//! `EPERM`). Other guests use the console ring ([`XenconsInterface`]) that
//! a console back end serves.

numbered_enum! {
    /// `CONSOLEIO_*`: the `cmd` argument of `console_io`. Unknown: `ENOSYS`.
    ConsoleIoCmd {
        /// `buf`: `count` bytes (IN). Writes them to the console (dom0: raw,
        /// unfiltered). Returns 0. `count == 0` returns 0 without reading
        /// `buf`. `EFAULT`: `buf` unreadable (bytes before the bad part may
        /// already be printed). A write longer than 4 KiB is done 4 KiB per
        /// invocation and continued (the call re-executes with `count` and
        /// `buf` advanced); a guest sees one call.
        Write = 0, "write";
        /// `buf`: up to `count` bytes (OUT). Takes pending serial input,
        /// oldest first, and returns the number of bytes stored in `buf`
        /// (0 if none is pending; `buf` is then not touched, whatever it
        /// is). Input waits in a 128-byte ring: bytes typed while it is
        /// full are lost, and each byte comes without bit 7 (7-bit
        /// characters). [`Virq::Console`](crate::event_channel::Virq::Console)
        /// says input came; read until 0 is returned.
        ///
        /// Errors: `E2BIG`: `count` > `i32::MAX` (the result would be
        /// ambiguous). `EFAULT`: part of `buf` is unwritable while input
        /// is pending; the input that was to go there stays pending, but
        /// input copied before it in the same call (the ring is copied in
        /// at most two pieces, to its end and from its start) is consumed.
        Read = 1, "read";
    }
}

/// Size of the console ring's input buffer (back end to guest).
pub const XENCONS_IN_SIZE: usize = 1024;
/// Size of the console ring's output buffer (guest to back end).
pub const XENCONS_OUT_SIZE: usize = 2048;

/// `struct xencons_interface` (3088 bytes), in the page named by
/// `start_info.console.domU.mfn`.
///
/// Indices run freely and wrap; index `i` maps to `buf[i % size]`.
/// The guest writes `out[]` then, after a write barrier, `out_prod`; the
/// back end advances `out_cons`. Symmetrically the back end writes `in[]`
/// and `in_prod`; the guest advances `in_cons`. Each side notifies the
/// console event channel after publishing.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XenconsInterface {
    /// `[BACKEND]` Input bytes.
    pub input: [u8; XENCONS_IN_SIZE],
    /// `[GUEST]` Output bytes.
    pub output: [u8; XENCONS_OUT_SIZE],
    /// `[GUEST]` Input consumer index.
    pub in_cons: u32,
    /// `[BACKEND]` Input producer index.
    pub in_prod: u32,
    /// `[BACKEND]` Output consumer index.
    pub out_cons: u32,
    /// `[GUEST]` Output producer index.
    pub out_prod: u32,
}

crate::assert_layout!(XenconsInterface, 3088, {
    input: 0, output: 1024, in_cons: 3072, in_prod: 3076, out_cons: 3080, out_prod: 3084,
});
