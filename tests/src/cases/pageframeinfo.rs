//! `domctl_getpageframeinfo3`: dom0 asks for the types of its own frames
//! with `XEN_DOMCTL_getpageframeinfo3`, as Xen 4.17 answers:
//! - more than 1024 entries is `E2BIG`, an array it cannot read `EFAULT`,
//!   a domain that does not exist `ESRCH`;
//! - its L4 is an L4 table (pinned or not, as the builder left it), the
//!   L1 that maps its own code an L1, an ordinary frame `NOTAB`; the
//!   shared_info page, frame 0, and a frame beyond RAM are `XTAB`;
//! - a scratch frame pinned as an L1 is `L1TAB | LPINTAB`; unpinned, with
//!   no reference left to its type, `NOTAB`, and so once it is mapped
//!   writable.

use guest_pv_shim::dom0_abi::Errno;
use guest_pv_shim::dom0_abi::domctl::{
    DomctlCmd, GetPageFrameInfo3, PFINFO_L1TAB, PFINFO_L4TAB, PFINFO_LPINTAB, PFINFO_LTABTYPE_MASK,
    PFINFO_NOTAB, PFINFO_XTAB,
};
use guest_pv_shim::dom0_abi::mmu::MmuextCmd;
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::hypercall as hc;
use guest_pv_shim::mm::{self, PTE_RW};
use guest_pv_shim::report;

use super::domctl::call;
use crate::support;

/// `getpageframeinfo3` of `num` entries at `array` for `dom`.
fn info(dom: u16, num: u64, array: u64) -> i64 {
    call(
        DomctlCmd::GetPageFrameInfo3,
        dom,
        &GetPageFrameInfo3 { num, array },
    )
    .0
}

/// The type word of `mfn` for dom0 (the call's result if it fails).
fn word(mfn: u64) -> u64 {
    let mut entry = [mfn];
    let ret = info(0, 1, entry.as_mut_ptr() as u64);
    if ret == 0 {
        entry[0]
    } else {
        ret.cast_unsigned()
    }
}

/// Checks that the word of `mfn` is `want`, showing it.
fn check_word(what: &str, mfn: u64, want: u64) {
    let got = word(mfn);
    report::check_observed(
        format_args!("{what} is {want:#x}"),
        got == want,
        format_args!("{got:#x}"),
    );
}

pub fn run(start_info: &'static StartInfo) {
    let mut array = [0u64; 2];
    report::check_ret(
        "1025 entries are E2BIG",
        info(0, 1025, array.as_mut_ptr() as u64),
        Errno::E2BIG.neg(),
    );
    report::check_ret(
        "an unreadable array is EFAULT",
        info(0, 1, 0x10),
        Errno::EFAULT.neg(),
    );
    report::check_ret(
        "a domain that does not exist is ESRCH",
        info(77, 1, array.as_mut_ptr() as u64),
        Errno::ESRCH.neg(),
    );
    report::check_ret("no entry at all", info(0, 0, 0x10), 0);

    let l4 = word(mm::boot_l4_mfn());
    report::check_observed(
        "the boot L4 is an L4 table",
        l4 & PFINFO_LTABTYPE_MASK == PFINFO_L4TAB,
        format_args!("{l4:#x}"),
    );
    let code_l1 = mm::l1_entry(run as *const () as u64).map_or(0, |e| e.maddr >> 12);
    check_word("the L1 mapping this code", code_l1, PFINFO_L1TAB);
    let stack = mm::virt_to_mfn(core::ptr::addr_of!(array) as u64).unwrap_or(0);
    check_word("the frame of this stack", stack, PFINFO_NOTAB);
    check_word(
        "the shared_info frame",
        start_info.shared_info >> 12,
        PFINFO_XTAB,
    );
    check_word("frame 0", 0, PFINFO_XTAB);
    check_word("a frame beyond RAM", 0xf_ffff_ffff, PFINFO_XTAB);

    let Some(f) = support::frame() else {
        return;
    };
    if mm::prepare_frame(30, f, &[]) != 0 {
        report::error("prepare a scratch frame", format_args!("failed"));
        return;
    }
    // SAFETY: the scratch frame is zero and mapped nowhere: pinning it as
    // an L1 and unpinning it changes no mapping the running code uses.
    let pin = |cmd: MmuextCmd| unsafe { hc::mmuext_one(cmd as u32, f.mfn, 0) };
    report::check_ret(
        "pin a scratch frame as an L1",
        pin(MmuextCmd::PinL1Table),
        0,
    );
    check_word("the pinned L1", f.mfn, PFINFO_L1TAB | PFINFO_LPINTAB);
    report::check_ret("unpin it", pin(MmuextCmd::UnpinTable), 0);
    check_word("the unpinned L1", f.mfn, PFINFO_NOTAB);
    report::check_ret("map it writable", mm::map_window(31, f.mfn, PTE_RW), 0);
    check_word("the frame mapped writable", f.mfn, PFINFO_NOTAB);
    mm::unmap_window(31);
}
