//! The test registry: every test's name (the `test=` value) and function.
//!
//! A test prints its checks through `guest_pv_shim::report` and returns;
//! `main` then prints the result line and powers off. Tests that end the
//! machine themselves (shutdown, isolation, return_from_entry) never
//! return.

use guest_pv_shim::dom0_abi::start_info::StartInfo;

mod console_io;
mod hello;
mod hypercall_page;
mod isolation;
mod return_from_entry;
mod sched_op;
mod shutdown;
mod unknown_hypercall;
mod xen_version;

/// One test.
pub struct Case {
    /// The name selected with `test=<name>`.
    pub name: &'static str,
    /// The test body.
    pub run: fn(&'static StartInfo),
}

/// Every test, by name.
pub const ALL: &[Case] = &[
    Case {
        name: "hello",
        run: hello::run,
    },
    Case {
        name: "xen_version",
        run: xen_version::run,
    },
    Case {
        name: "console_io",
        run: console_io::run,
    },
    Case {
        name: "unknown_hypercall",
        run: unknown_hypercall::run,
    },
    Case {
        name: "sched_op",
        run: sched_op::run,
    },
    Case {
        name: "shutdown_poweroff",
        run: shutdown::poweroff,
    },
    Case {
        name: "shutdown_reboot",
        run: shutdown::reboot,
    },
    Case {
        name: "shutdown_suspend",
        run: shutdown::suspend,
    },
    Case {
        name: "shutdown_crash",
        run: shutdown::crash,
    },
    Case {
        name: "shutdown_watchdog",
        run: shutdown::watchdog,
    },
    Case {
        name: "shutdown_soft_reset",
        run: shutdown::soft_reset,
    },
    Case {
        name: "shutdown_code",
        run: shutdown::code,
    },
    Case {
        name: "shutdown_compat",
        run: shutdown::compat,
    },
    Case {
        name: "isolation_read_hv_text",
        run: isolation::read_hv_text,
    },
    Case {
        name: "isolation_read_directmap",
        run: isolation::read_directmap,
    },
    Case {
        name: "isolation_read_slot271",
        run: isolation::read_slot271,
    },
    Case {
        name: "isolation_write_m2p",
        run: isolation::write_m2p,
    },
    Case {
        name: "isolation_write_trampoline",
        run: isolation::write_trampoline,
    },
    Case {
        name: "isolation_read_m2p",
        run: isolation::read_m2p,
    },
    Case {
        name: "return_from_entry",
        run: return_from_entry::run,
    },
    Case {
        name: "hypercall_page",
        run: hypercall_page::run,
    },
];

/// The test called `name`.
pub fn find(name: &str) -> Option<&'static Case> {
    ALL.iter().find(|c| c.name == name)
}

/// Guest pointers every hypercall must refuse with `EFAULT`: an unmapped
/// low address and the hypervisor's direct map (reserved L4 slot 262).
pub const BAD_POINTERS: &[(&str, u64)] = &[
    ("unmapped 0x1000", 0x1000),
    (
        "reserved 0xffff830000000000",
        guest_pv_shim::dom0_abi::layout::DIRECTMAP_VIRT_START,
    ),
];
