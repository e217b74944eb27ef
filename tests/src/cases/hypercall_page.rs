//! `hypercall_page`: the hypervisor filled the page named by the
//! `HYPERCALL_PAGE` note.
//!
//! The image ships the page full of `0xC3` (`ret`). Checks on both
//! platforms: slot 0 no longer starts with that poison, and slots 0, 17
//! (`xen_version`) and 23 (`iret`) hold the stubs documented for the
//! platform in `docs/abi-differences.md`, written out here byte by byte
//! (not computed by the code that fills the page): Xen's use `syscall`,
//! this hypervisor's `int $0x82`. The bytes after each stub, up to the
//! next slot, must be the `0xCC` (`int3`) fill on both.

use guest_pv_shim::dom0_abi::hypercall::HYPERCALL_SLOT_SIZE;
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::hypercall::raw::page;
use guest_pv_shim::{on_xen, report};

/// Xen's 64-bit PV stub for hypercall 0: `push %rcx; push %r11;
/// mov $0,%eax; syscall; pop %r11; pop %rcx; ret`.
const XEN_SLOT0: &[u8] = &[
    0x51, 0x41, 0x53, 0xB8, 0, 0, 0, 0, 0x0F, 0x05, 0x41, 0x5B, 0x59, 0xC3,
];
/// The same for hypercall 17 (`xen_version`).
const XEN_SLOT17: &[u8] = &[
    0x51, 0x41, 0x53, 0xB8, 17, 0, 0, 0, 0x0F, 0x05, 0x41, 0x5B, 0x59, 0xC3,
];
/// Xen's `iret` stub: `push %rcx; push %r11; push %rax; mov $23,%eax;
/// syscall`.
const XEN_SLOT23: &[u8] = &[0x51, 0x41, 0x53, 0x50, 0xB8, 23, 0, 0, 0, 0x0F, 0x05];

/// This hypervisor's stub for hypercall 0: `mov $0,%eax; int $0x82; ret`.
const OXEN_SLOT0: &[u8] = &[0xB8, 0, 0, 0, 0, 0xCD, 0x82, 0xC3];
/// The same for hypercall 17.
const OXEN_SLOT17: &[u8] = &[0xB8, 17, 0, 0, 0, 0xCD, 0x82, 0xC3];
/// This hypervisor's `iret` stub: `push %rcx; push %r11; push %rax;
/// mov $23,%eax; int $0x82`.
const OXEN_SLOT23: &[u8] = &[0x51, 0x41, 0x53, 0x50, 0xB8, 23, 0, 0, 0, 0xCD, 0x82];

/// The byte both platforms fill the rest of the page with (`int3`).
const FILL: u8 = 0xCC;

pub fn run(_start_info: &'static StartInfo) {
    let page = page();
    report::check(
        "slot 0 is no longer the 0xc3 poison",
        page[0] != 0xC3,
        format_args!("first byte {:#x}", page[0]),
    );
    let stubs: [(usize, &str, &[u8], &[u8]); 3] = [
        (
            0,
            "slot 0 holds this platform's stub",
            XEN_SLOT0,
            OXEN_SLOT0,
        ),
        (
            17,
            "slot 17 holds this platform's stub",
            XEN_SLOT17,
            OXEN_SLOT17,
        ),
        (
            23,
            "slot 23 holds this platform's iret stub",
            XEN_SLOT23,
            OXEN_SLOT23,
        ),
    ];
    for (slot, name, xen, oxen) in stubs {
        let want = if on_xen() { xen } else { oxen };
        let start = slot * HYPERCALL_SLOT_SIZE;
        report::check_eq(name, &page[start..start + want.len()], want);
        let rest = &page[start + want.len()..start + HYPERCALL_SLOT_SIZE];
        report::check(
            format_args!("the rest of slot {slot} is the 0xcc fill"),
            rest.iter().all(|&b| b == FILL),
            format_args!("{rest:x?}"),
        );
    }
}
