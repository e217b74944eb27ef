//! `hello`: the smallest guest. Writes a greeting with
//! `console_io(CONSOLEIO_write)` and checks it returned 0.
//!
//! Why: proves the whole boot path (ELF notes, initial mapping, start_info
//! in RSI, hypercall page, console) before any other test can mean anything.

use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::hypercall::console_write;
use guest_pv_shim::report;

pub fn run(_start_info: &'static StartInfo) {
    let ret = console_write(b"Hello from a PV guest kernel in pv-tests\n");
    report::check_ret("console_io write of a greeting", ret, 0);
}
