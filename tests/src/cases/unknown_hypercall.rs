//! `unknown_hypercall`: numbers with no hypercall behind them give
//! `ENOSYS`.
//!
//! 11 (never assigned), 38 (`tmem_op`, removed), 43 and 56 (unassigned),
//! 127 (last slot of the page) go through the hypercall page; 1000 lies
//! beyond the page and is issued with the stubs' trap instruction directly.
//! Why: the dispatcher must reject every number it does not implement
//! without crashing or misreading the table, in and out of the page.

use guest_pv_shim::dom0_abi::Errno;
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::hypercall::raw::hypercall0;
use guest_pv_shim::report;

pub fn run(_start_info: &'static StartInfo) {
    for nr in [11u64, 38, 43, 56, 127, 1000] {
        // SAFETY: no hypercall exists with these numbers, so nothing is
        // read or written.
        let ret = unsafe { hypercall0(nr) };
        report::check_ret(
            format_args!("hypercall {nr} is ENOSYS"),
            ret,
            Errno::ENOSYS.neg(),
        );
    }
}
