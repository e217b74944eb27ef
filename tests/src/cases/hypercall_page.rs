//! `hypercall_page`: the hypervisor filled the page named by the
//! `HYPERCALL_PAGE` note.
//!
//! The image ships the page full of `0xC3` (`ret`). Checks on both
//! platforms: slot 0 no longer starts with that poison, and slot 23
//! (`iret`) starts with `0x51` (`push %rcx`). Then each platform's exact
//! stubs: on Xen, slot 0 is the documented 14-byte `syscall` stub; here the
//! whole page equals `dom0_abi::hypercall::fill_hypercall_page`'s output,
//! the stub bytes being part of this hypervisor's ABI.

use guest_pv_shim::dom0_abi::hypercall::{
    HYPERCALL_PAGE_SIZE, HYPERCALL_SLOT_SIZE, fill_hypercall_page,
};
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::hypercall::raw::page;
use guest_pv_shim::{on_xen, report};

/// Xen's 64-bit PV stub for hypercall 0: `push %rcx; push %r11;
/// mov $0,%eax; syscall; pop %r11; pop %rcx; ret`.
const XEN_SLOT0: [u8; 14] = [
    0x51, 0x41, 0x53, 0xB8, 0, 0, 0, 0, 0x0F, 0x05, 0x41, 0x5B, 0x59, 0xC3,
];

pub fn run(_start_info: &'static StartInfo) {
    let page = page();
    report::check(
        "slot 0 is no longer the 0xc3 poison",
        page[0] != 0xC3,
        format_args!("first byte {:#x}", page[0]),
    );
    let iret = &page[23 * HYPERCALL_SLOT_SIZE..];
    report::check_eq("slot 23 starts with push %rcx (0x51)", iret[0], 0x51);

    if on_xen() {
        // Xen's stubs use SYSCALL (its PV kernels run in ring 3).
        report::check_eq(
            "the page holds this platform's hypercall stubs",
            &page[..XEN_SLOT0.len()],
            &XEN_SLOT0[..],
        );
    } else {
        // This hypervisor's stubs use int $0x82 and are fixed by dom0-abi.
        let mut want = [0u8; HYPERCALL_PAGE_SIZE];
        fill_hypercall_page(&mut want);
        let first_diff = page.iter().zip(want.iter()).position(|(a, b)| a != b);
        report::check(
            "the page holds this platform's hypercall stubs",
            first_diff.is_none(),
            format_args!("first difference at byte {first_diff:?}"),
        );
    }
}
