//! `test-guest`: every QEMU test guest in one PV kernel.
//!
//! The dom0 command line `test=<name>` selects the test (see
//! [`cases::ALL`]). Output follows the XTF convention of
//! `guest_pv_shim::report`: a `--- pv-tests: <name> ---` banner, one line
//! per check, exactly one `Test result: ...` line, then the guest shuts
//! down (poweroff; a panic crashes it). A missing or unknown test name
//! gives `Test result: ERROR`.
//!
//! The same binary boots as dom0 on real Xen 4.17; where the platforms
//! legitimately differ, tests ask `guest_pv_shim::on_xen()` and say why.

#![no_std]
#![no_main]

mod cases;
mod probe;
mod support;
mod user_code;

use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::{cmdline, report};

guest_pv_shim::guest_kernel! {
    main: test_main,
    guest_os: "pv-tests",
    guest_version: "0.1.0",
}

/// Name printed in the banner.
const SUITE: &str = "pv-tests";

fn test_main(start_info: &'static StartInfo) {
    let name = cmdline::option(start_info.cmdline(), b"test").map(core::str::from_utf8);
    match name {
        Some(Ok(name)) => {
            report::banner(SUITE, name);
            match cases::find(name) {
                Some(case) => (case.run)(start_info),
                None => report::error("test", format_args!("unknown test {name:?}")),
            }
        }
        Some(Err(_)) => {
            report::banner(SUITE, "?");
            report::error("test", format_args!("test name is not UTF-8"));
        }
        None => {
            report::banner(SUITE, "?");
            report::error("test", format_args!("no test=<name> on the command line"));
        }
    }
    report::finish()
}
