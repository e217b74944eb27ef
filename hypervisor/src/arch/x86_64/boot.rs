//! The multiboot headers and 32-bit entry (`boot/entry.S`), and the panic
//! handler.
use core::fmt::Write;

use crate::exit::HostExit;

use super::{machine, serial, traps};

core::arch::global_asm!(
    include_str!("../../../../boot/entry.S"),
    options(att_syntax)
);

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    serial::enter_panic_mode();
    let mut out = serial::Console;
    let _ = writeln!(out, "\r\n(HV) PANIC: {}\r", info.message());
    if let Some(location) = info.location() {
        let _ = writeln!(out, "(HV)   at {}:{}\r", location.file(), location.line());
    }
    let rbp: u64;
    // SAFETY: reading the frame pointer register has no side effects.
    unsafe {
        core::arch::asm!("mov {}, rbp", out(reg) rbp, options(nomem, nostack, preserves_flags))
    };
    traps::backtrace(&mut out, rbp);
    machine::end(HostExit::HypervisorPanic)
}
