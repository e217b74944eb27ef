//! `domctl_iomem_permission`: dom0's own device-memory rights through
//! `XEN_DOMCTL_iomem_permission`, as Xen 4.17 answers:
//! - a range that wraps (`nr_mfns` 0 among them) is `EINVAL`; one with a
//!   frame dom0 may not map itself (the local APIC's) is `EPERM`; a domain
//!   that does not exist is `ESRCH`;
//! - dom0 maps the VGA text buffer (frame 0xb8) with `DOMID_IO`; once it
//!   revokes its own right to that frame, the mapping is `EPERM` while the
//!   next frame still maps; granting 0xb8 back is `EPERM` (the caller no
//!   longer has it), and so is any range that includes it.

use guest_pv_shim::dom0_abi::Errno;
use guest_pv_shim::dom0_abi::domctl::{DomctlCmd, IomemPermission};
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::dom0_abi::types::DomId;
use guest_pv_shim::mm::{self, PTE_RW};
use guest_pv_shim::report;

use super::domctl::call;

/// The VGA text buffer's frame: device memory every dom0 may map.
const VGA_MFN: u64 = 0xb8;
/// The local APIC's frame, which the hypervisor keeps.
const LOCAL_APIC_MFN: u64 = 0xfee00;
/// The window the test maps device frames at.
const WINDOW: usize = 3;

/// `iomem_permission` on domain `dom` for `nr` frames from `first`.
fn permission(dom: u16, first: u64, nr: u64, allow: bool) -> i64 {
    let p = IomemPermission {
        first_mfn: first,
        nr_mfns: nr,
        allow_access: u8::from(allow),
        pad: [0; 7],
    };
    call(DomctlCmd::IomemPermission, dom, &p).0
}

/// Maps device frame `mfn` writable at the window with `DOMID_IO`, then
/// unmaps it; the mapping's result.
fn map_io(mfn: u64) -> i64 {
    let ret = mm::map_foreign_window_mmu(WINDOW, DomId::IO.0, mfn, PTE_RW);
    if ret == 0 {
        mm::map_foreign_window_mmu(WINDOW, DomId::IO.0, 0, 0);
    }
    ret
}

pub fn run(_start_info: &'static StartInfo) {
    let einval = Errno::EINVAL.neg();
    let eperm = Errno::EPERM.neg();
    report::check_ret(
        "iomem_permission of no frame is EINVAL",
        permission(0, VGA_MFN, 0, true),
        einval,
    );
    report::check_ret(
        "iomem_permission of a range that wraps is EINVAL",
        permission(0, u64::MAX - 1, 4, true),
        einval,
    );
    report::check_ret(
        "iomem_permission with the local APIC's frame is EPERM",
        permission(0, LOCAL_APIC_MFN - 1, 2, true),
        eperm,
    );
    report::check_ret(
        "iomem_permission of a domain that does not exist is ESRCH",
        permission(77, VGA_MFN, 1, true),
        Errno::ESRCH.neg(),
    );
    report::check_ret("dom0 maps the VGA text buffer", map_io(VGA_MFN), 0);
    report::check_ret(
        "dom0 revokes its own right to the VGA text buffer",
        permission(0, VGA_MFN, 1, false),
        0,
    );
    report::check_ret("then mapping it is EPERM", map_io(VGA_MFN), eperm);
    report::check_ret("the next frame still maps", map_io(VGA_MFN + 1), 0);
    report::check_ret(
        "granting it back is EPERM",
        permission(0, VGA_MFN, 1, true),
        eperm,
    );
    report::check_ret(
        "revoking a range that includes it is EPERM",
        permission(0, VGA_MFN, 2, false),
        eperm,
    );
    report::check_ret(
        "revoking the next frame alone is allowed",
        permission(0, VGA_MFN + 1, 1, false),
        0,
    );
    report::check_ret("then it no longer maps", map_io(VGA_MFN + 1), eperm);
}
