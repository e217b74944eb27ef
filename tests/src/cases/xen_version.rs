//! `xen_version`: every sub-op 0..=10, an unknown sub-op and bad pointers.
//!
//! Checks, as Xen 4.17 answers them (the hypervisor must match):
//! - `version` is 4.17 (`0x00040011`) on both platforms;
//! - `extraversion`, `compile_info` (each field), `changeset`,
//!   `capabilities` and `commandline` come back NUL-terminated, and
//!   `capabilities` lists `xen-3.0-x86_64` (the builder's guest type);
//! - `platform_parameters.virt_start` is `HYPERVISOR_VIRT_START`;
//! - `get_features` submap 0 has the dom0 bit (this guest is dom0), is
//!   exactly dom0, direct_mapped, mmu_pt_update_preserve_ad,
//!   highmem_assist and gnttab_map_avail_bits (on Xen also
//!   memory_op_vnode_supported, not implemented here), and submap 1 is
//!   `EINVAL`;
//! - `pagesize` is 4096 with a NULL argument and `EINVAL` without;
//! - `guest_handle` is dom0's all-zero handle;
//! - `build_id` follows Xen's rules (length, NULL, too small, zero length);
//! - an unknown sub-op is `ENOSYS`;
//! - every pointer-taking sub-op refuses an unmapped and a reserved-slot
//!   pointer with `EFAULT`.

use guest_pv_shim::dom0_abi::Errno;
use guest_pv_shim::dom0_abi::features::XenFeature;
use guest_pv_shim::dom0_abi::layout::HYPERVISOR_VIRT_START;
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::dom0_abi::version::{
    CompileInfo, FeatureInfo, PlatformParameters, VersionCmd, XENVER_CAPABILITIES_LEN,
    XENVER_CHANGESET_LEN, XENVER_COMMANDLINE_LEN, XENVER_EXTRAVERSION_LEN, XENVER_GUEST_HANDLE_LEN,
    version_number,
};
use guest_pv_shim::hypercall::{self as hc, BuildIdBuffer};
use guest_pv_shim::{on_xen, report};

use super::BAD_POINTERS;

/// Poison for output buffers, so "NUL-terminated" means the hypervisor
/// wrote the NUL.
const POISON: u8 = 0xFF;

/// The sub-ops whose argument is a pointer the hypervisor dereferences.
const POINTER_SUB_OPS: &[VersionCmd] = &[
    VersionCmd::Extraversion,
    VersionCmd::CompileInfo,
    VersionCmd::Capabilities,
    VersionCmd::Changeset,
    VersionCmd::PlatformParameters,
    VersionCmd::GetFeatures,
    VersionCmd::GuestHandle,
    VersionCmd::Commandline,
    VersionCmd::BuildId,
];

fn nul_terminated(buf: &[u8]) -> bool {
    buf.contains(&0)
}

fn until_nul(buf: &[u8]) -> &[u8] {
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    &buf[..end]
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// Checks `XENVER_build_id` against Xen 4.17's rules, which both platforms
/// follow: with a buffer, the id's length (a 20-byte SHA-1 on Debian's Xen
/// and on this hypervisor) or `ENODATA` if built without one; with NULL, the
/// same length; with a buffer too small, `ENOBUFS`; with `len == 0`, `EINVAL`.
fn check_build_id() {
    let mut build_id = BuildIdBuffer::<64>::new();
    let ret = hc::xenver_build_id(&mut build_id);
    let has_id = (1..=64).contains(&ret);
    report::check(
        "build_id gives a length or ENODATA",
        has_id || ret == Errno::ENODATA.neg(),
        format_args!("got {}", report::Ret(ret)),
    );
    if has_id {
        // SAFETY: a NULL argument asks for the length only; nothing is written.
        let len = unsafe { hc::xen_version_raw(VersionCmd::BuildId as u64, 0) };
        report::check_ret("build_id with NULL returns the length", len, ret);
        let mut small = BuildIdBuffer::<1>::new();
        let small_ret = hc::xenver_build_id(&mut small);
        report::check_ret(
            "build_id into 1 byte is ENOBUFS",
            small_ret,
            Errno::ENOBUFS.neg(),
        );
    }
    let mut empty = BuildIdBuffer::<0>::new();
    report::check_ret(
        "build_id with len 0 is EINVAL",
        hc::xenver_build_id(&mut empty),
        Errno::EINVAL.neg(),
    );
}

pub fn run(_start_info: &'static StartInfo) {
    let ver = hc::xenver_version();
    report::check_ret("version is 4.17", ver, i64::from(version_number(4, 17)));

    let mut extra = [POISON; XENVER_EXTRAVERSION_LEN];
    let ret = hc::xenver_extraversion(&mut extra);
    report::check_ret("extraversion returns 0", ret, 0);
    report::check(
        "extraversion is NUL-terminated",
        nul_terminated(&extra),
        format_args!("{extra:?}"),
    );

    let mut info = CompileInfo {
        compiler: [POISON; 64],
        compile_by: [POISON; 16],
        compile_domain: [POISON; 32],
        compile_date: [POISON; 32],
    };
    let ret = hc::xenver_compile_info(&mut info);
    report::check_ret("compile_info returns 0", ret, 0);
    let fields_ok = nul_terminated(&info.compiler)
        && nul_terminated(&info.compile_by)
        && nul_terminated(&info.compile_domain)
        && nul_terminated(&info.compile_date);
    report::check(
        "compile_info fields are NUL-terminated",
        fields_ok,
        format_args!("{info:?}"),
    );

    let mut caps = [POISON; XENVER_CAPABILITIES_LEN];
    let ret = hc::xenver_capabilities(&mut caps);
    report::check_ret("capabilities returns 0", ret, 0);
    report::check(
        "capabilities is NUL-terminated",
        nul_terminated(&caps),
        format_args!("no NUL in 1024 bytes"),
    );
    report::check(
        "capabilities lists xen-3.0-x86_64",
        contains(until_nul(&caps), b"xen-3.0-x86_64"),
        format_args!("{:?}", core::str::from_utf8(until_nul(&caps))),
    );

    let mut changeset = [POISON; XENVER_CHANGESET_LEN];
    let ret = hc::xenver_changeset(&mut changeset);
    report::check_ret("changeset returns 0", ret, 0);
    report::check(
        "changeset is NUL-terminated",
        nul_terminated(&changeset),
        format_args!("{changeset:?}"),
    );

    let mut params = PlatformParameters { virt_start: 0 };
    let ret = hc::xenver_platform_parameters(&mut params);
    report::check_ret("platform_parameters returns 0", ret, 0);
    report::check_eq(
        "platform_parameters.virt_start",
        params.virt_start,
        HYPERVISOR_VIRT_START,
    );

    let mut features = FeatureInfo {
        submap_idx: 0,
        submap: 0,
    };
    let ret = hc::xenver_get_features(&mut features);
    report::check_ret("get_features submap 0 returns 0", ret, 0);
    report::check(
        "get_features submap 0 has the dom0 bit",
        XenFeature::Dom0.is_set_in(features.submap),
        format_args!("submap {:#x}", features.submap),
    );
    // The whole bitmap: what this hypervisor implements, and on Xen also
    // the vNUMA bit (xtask's allow-list names the difference).
    let here = [
        XenFeature::Dom0,
        XenFeature::DirectMapped,
        XenFeature::MmuPtUpdatePreserveAd,
        XenFeature::HighmemAssist,
        XenFeature::GnttabMapAvailBits,
    ];
    let xen_only = [XenFeature::MemoryOpVnodeSupported];
    let bits = |set: &[XenFeature]| set.iter().fold(0, |acc, f| acc | f.bit());
    let want = bits(&here) | if on_xen() { bits(&xen_only) } else { 0 };
    const WHOLE: &str = "get_features submap 0 is this platform's whole bitmap";
    if features.submap == want {
        report::ok_value(WHOLE, format_args!("{:#x}", features.submap));
    } else {
        report::fail(
            WHOLE,
            format_args!("got {:#x}, want {want:#x}", features.submap),
        );
    }
    let mut features = FeatureInfo {
        submap_idx: 1,
        submap: 0,
    };
    report::check_ret(
        "get_features submap 1 is EINVAL",
        hc::xenver_get_features(&mut features),
        Errno::EINVAL.neg(),
    );

    report::check_ret("pagesize is 4096", hc::xenver_pagesize(), 4096);
    // Xen 4.17 refuses a non-NULL argument to pagesize; the address given is
    // a harmless local that the hypervisor must not write.
    let dummy = 0u64;
    // SAFETY: pagesize writes nothing; `dummy` stays untouched either way.
    let ret = unsafe { hc::xen_version_raw(VersionCmd::Pagesize as u64, &raw const dummy as u64) };
    report::check_ret(
        "pagesize with a non-NULL argument is EINVAL",
        ret,
        Errno::EINVAL.neg(),
    );

    let mut handle = [POISON; XENVER_GUEST_HANDLE_LEN];
    let ret = hc::xenver_guest_handle(&mut handle);
    report::check_ret("guest_handle returns 0", ret, 0);
    report::check(
        "guest_handle of dom0 is all zero",
        handle == [0; XENVER_GUEST_HANDLE_LEN],
        format_args!("{handle:?}"),
    );

    let mut cmdline = [POISON; XENVER_COMMANDLINE_LEN];
    let ret = hc::xenver_commandline(&mut cmdline);
    report::check_ret("commandline returns 0", ret, 0);
    report::check(
        "commandline is NUL-terminated",
        nul_terminated(&cmdline),
        format_args!("no NUL in 1024 bytes"),
    );

    check_build_id();

    for nr in [11u64, 64] {
        // SAFETY: unknown sub-ops dereference nothing; NULL is passed.
        let ret = unsafe { hc::xen_version_raw(nr, 0) };
        report::check_ret(
            format_args!("unknown sub-op {nr} is ENOSYS"),
            ret,
            Errno::ENOSYS.neg(),
        );
    }

    for &cmd in POINTER_SUB_OPS {
        for &(what, ptr) in BAD_POINTERS {
            // SAFETY: `ptr` is unmapped or in the hypervisor's reserved
            // range: no Rust memory, and the hypervisor must refuse it.
            let ret = unsafe { hc::xen_version_raw(cmd as u64, ptr) };
            report::check_ret(
                format_args!("sub-op {} with {what}", cmd as u32),
                ret,
                Errno::EFAULT.neg(),
            );
        }
    }
}
