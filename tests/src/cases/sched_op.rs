//! `sched_op`: yield, an unknown sub-op, and shutdown requests with bad
//! pointers.
//!
//! Checks (Xen 4.17 behaviour): `SCHEDOP_yield` returns 0; sub-op 99 is
//! `ENOSYS`; `SCHEDOP_shutdown` and `SCHEDOP_shutdown_code` with an
//! unmapped or reserved-slot argument are `EFAULT` and do nothing (the
//! guest keeps running, so the result line proves it).

use guest_pv_shim::dom0_abi::Errno;
use guest_pv_shim::dom0_abi::sched::SchedOp;
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::hypercall::{sched_op_raw, sched_yield};
use guest_pv_shim::report;

use super::BAD_POINTERS;

pub fn run(_start_info: &'static StartInfo) {
    report::check_ret("yield returns 0", sched_yield(), 0);

    // SAFETY: sub-op 99 does not exist; the NULL argument is not read.
    let ret = unsafe { sched_op_raw(99, 0) };
    report::check_ret("unknown sub-op 99 is ENOSYS", ret, Errno::ENOSYS.neg());

    for op in [SchedOp::Shutdown, SchedOp::ShutdownCode] {
        for &(what, ptr) in BAD_POINTERS {
            // SAFETY: `ptr` is not Rust memory; the hypervisor must refuse
            // it and shut nothing down.
            let ret = unsafe { sched_op_raw(op as u64, ptr) };
            report::check_ret(
                format_args!("{} with {what} is EFAULT", op.name()),
                ret,
                Errno::EFAULT.neg(),
            );
        }
    }
}
