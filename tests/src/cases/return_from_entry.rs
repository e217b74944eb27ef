//! `return_from_entry`: the kernel's entry function returns.
//!
//! `ret` on the hypervisor-provided initial stack pops whatever lies above
//! the stack top and jumps there. A hypervisor must treat that like any
//! other guest fault: crash the domain, not itself. The harness checks the
//! exit status and the log.

use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::{println, return_from_entry};

pub fn run(_start_info: &'static StartInfo) {
    println!(
        "return_from_entry: returning from the entry point (initial RSP {:#x}); \
         the domain must be crashed",
        guest_pv_shim::entry::boot_rsp()
    );
    return_from_entry()
}
