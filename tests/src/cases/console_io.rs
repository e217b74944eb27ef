//! `console_io`: writes, zero-length writes, bad buffers, unknown commands
//! and reads.
//!
//! Checks, as Xen 4.17 answers them for dom0 (the hypervisor must match):
//! - a write returns 0, and a write of 0 bytes returns 0 without looking at
//!   the buffer (even a bad one);
//! - a write from an unmapped buffer, from the direct map and from the M2P
//!   is `EFAULT`: Xen refuses every guest pointer into the hypervisor's
//!   range, even the guest-readable M2P;
//! - an unknown command is `ENOSYS`;
//! - a read of up to 16 bytes returns a count in 0..=16.

use guest_pv_shim::dom0_abi::Errno;
use guest_pv_shim::dom0_abi::console::ConsoleIoCmd;
use guest_pv_shim::dom0_abi::layout::MACH2PHYS_VIRT_START;
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::hypercall::{console_io_raw, console_read, console_write};
use guest_pv_shim::report;

use super::BAD_POINTERS;

pub fn run(_start_info: &'static StartInfo) {
    report::check_ret(
        "write returns 0",
        console_write(b"console_io: a line written by the test\n"),
        0,
    );

    let empty: [u8; 0] = [];
    report::check_ret("write of 0 bytes returns 0", console_write(&empty), 0);
    // SAFETY: a count of 0 makes the hypervisor read nothing at 0x1000.
    let ret = unsafe { console_io_raw(ConsoleIoCmd::Write as u64, 0, 0x1000) };
    report::check_ret("write of 0 bytes from a bad buffer returns 0", ret, 0);

    let m2p = [("M2P 0xffff800000000000", MACH2PHYS_VIRT_START)];
    for &(what, ptr) in BAD_POINTERS.iter().chain(m2p.iter()) {
        // SAFETY: a write only reads the buffer, and `ptr` is not Rust memory.
        let ret = unsafe { console_io_raw(ConsoleIoCmd::Write as u64, 16, ptr) };
        report::check_ret(
            format_args!("write from {what} is EFAULT"),
            ret,
            Errno::EFAULT.neg(),
        );
    }

    let text = *b"unknown command\n";
    // SAFETY: command 7 is unknown; the buffer is a valid local either way.
    let ret = unsafe { console_io_raw(7, text.len() as u64, &raw const text as u64) };
    report::check_ret("unknown command 7 is ENOSYS", ret, Errno::ENOSYS.neg());

    let mut buf = [0u8; 16];
    let ret = console_read(&mut buf);
    report::check(
        "read of 16 bytes returns 0..=16",
        (0..=16).contains(&ret),
        format_args!("got {}", report::Ret(ret)),
    );
}
