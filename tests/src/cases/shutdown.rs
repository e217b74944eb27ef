//! `shutdown_*`: the guest ends the machine with each shutdown reason.
//!
//! Each test prints `Test result: SUCCESS` first and then asks for the
//! shutdown; the harness checks how the machine ended (for dom0 the
//! reason becomes the machine's fate). If the hypercall returns, the test
//! panics, which shows up as a crash.
//! - `shutdown_<reason>`: `SCHEDOP_shutdown` with that reason.
//! - `shutdown_code`: `SCHEDOP_shutdown_code(reboot)` then
//!   `SCHEDOP_shutdown(poweroff)`: the run must end as a reboot, because
//!   the first recorded reason wins (Xen's semantics).
//! - `shutdown_compat`: the legacy `sched_op_compat(SCHEDOP_shutdown,
//!   SHUTDOWN_poweroff)`, whose argument is the reason itself.

use guest_pv_shim::dom0_abi::sched::{SchedOp, ShutdownReason};
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::hypercall::{sched_op_compat, sched_shutdown, sched_shutdown_code};
use guest_pv_shim::report::{self, Status};

/// Prints the result line, shuts down with `reason`; panics if that returns.
fn shut_down_with(reason: ShutdownReason) -> ! {
    guest_pv_shim::println!("shutting down: SCHEDOP_shutdown({})", reason.name());
    report::print_result(Status::Success);
    let ret = sched_shutdown(reason);
    panic!(
        "SCHEDOP_shutdown({}) returned {}",
        reason.name(),
        report::Ret(ret)
    );
}

pub fn poweroff(_start_info: &'static StartInfo) {
    shut_down_with(ShutdownReason::Poweroff)
}

pub fn reboot(_start_info: &'static StartInfo) {
    shut_down_with(ShutdownReason::Reboot)
}

pub fn suspend(_start_info: &'static StartInfo) {
    shut_down_with(ShutdownReason::Suspend)
}

pub fn crash(_start_info: &'static StartInfo) {
    shut_down_with(ShutdownReason::Crash)
}

pub fn watchdog(_start_info: &'static StartInfo) {
    shut_down_with(ShutdownReason::Watchdog)
}

pub fn soft_reset(_start_info: &'static StartInfo) {
    shut_down_with(ShutdownReason::SoftReset)
}

pub fn code(_start_info: &'static StartInfo) {
    let ret = sched_shutdown_code(ShutdownReason::Reboot);
    if !report::check_ret("shutdown_code(reboot) returns 0", ret, 0) {
        return;
    }
    guest_pv_shim::println!(
        "shutting down: SCHEDOP_shutdown(poweroff) after shutdown_code(reboot)"
    );
    report::print_result(Status::Success);
    let ret = sched_shutdown(ShutdownReason::Poweroff);
    panic!("SCHEDOP_shutdown(poweroff) returned {}", report::Ret(ret));
}

pub fn compat(_start_info: &'static StartInfo) {
    guest_pv_shim::println!("shutting down: sched_op_compat(SCHEDOP_shutdown, poweroff)");
    report::print_result(Status::Success);
    let ret = sched_op_compat(SchedOp::Shutdown as u64, ShutdownReason::Poweroff as u64);
    panic!(
        "sched_op_compat(SCHEDOP_shutdown) returned {}",
        report::Ret(ret)
    );
}
