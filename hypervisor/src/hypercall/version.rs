//! `xen_version`: version strings and feature bits.
//!
//! This hypervisor implements (part of) Xen 4.17's PV interface and reports
//! that interface level as its version, so that guests which key ABI
//! decisions on the version behave as they would on 4.17. It names itself in
//! the extra version (`-oxen`), which is how a guest can tell the two apart.
#![forbid(unsafe_code)]

use dom0_abi::Errno;
use dom0_abi::features::XenFeature;
use dom0_abi::layout::HYPERVISOR_VIRT_START;
use dom0_abi::version::{
    VersionCmd, XENFEAT_NR_SUBMAPS, XENVER_CAPABILITIES_LEN, XENVER_CHANGESET_LEN,
    XENVER_COMMANDLINE_LEN, XENVER_EXTRAVERSION_LEN,
};

use super::{Env, read_u32};
use crate::layout::PAGE_SIZE;

/// Major version of the Xen interface implemented.
pub const XEN_MAJOR: u32 = 4;
/// Minor version of the Xen interface implemented.
pub const XEN_MINOR: u32 = 17;
/// `XENVER_extraversion`.
pub const EXTRAVERSION: &str = "-oxen";
/// `XENVER_capabilities`: 64-bit PV guests only.
pub const CAPABILITIES: &str = "xen-3.0-x86_64";

/// `xen_version(cmd, arg)`; see `dom0_abi::version` for each sub-op.
///
/// `XENVER_version` (the benchmarks' null hypercall) is answered here,
/// inlined into the dispatcher's direct path; the other sub-ops are a
/// function of their own, whose stack buffers would otherwise make every
/// call pay their frame.
#[inline(always)]
pub fn xen_version(env: &mut impl Env, cmd: u64, arg: u64) -> Result<u64, Errno> {
    match VersionCmd::from_number(cmd) {
        Some(VersionCmd::Version) => Ok(u64::from((XEN_MAJOR << 16) | XEN_MINOR)),
        Some(cmd) => other_version_cmd(env, cmd, arg),
        None => Err(Errno::ENOSYS),
    }
}

/// Every `xen_version` sub-op but `XENVER_version`.
#[inline(never)]
fn other_version_cmd(env: &mut impl Env, cmd: VersionCmd, arg: u64) -> Result<u64, Errno> {
    match cmd {
        VersionCmd::Version => Ok(u64::from((XEN_MAJOR << 16) | XEN_MINOR)),
        VersionCmd::Extraversion => {
            copy_str::<XENVER_EXTRAVERSION_LEN>(env, arg, EXTRAVERSION.as_bytes())
        }
        VersionCmd::CompileInfo => copy_out(env, arg, &compile_info()),
        VersionCmd::Capabilities => {
            copy_str::<XENVER_CAPABILITIES_LEN>(env, arg, CAPABILITIES.as_bytes())
        }
        VersionCmd::Changeset => {
            copy_str::<XENVER_CHANGESET_LEN>(env, arg, build::CHANGESET.as_bytes())
        }
        VersionCmd::PlatformParameters => copy_out(env, arg, &HYPERVISOR_VIRT_START.to_le_bytes()),
        VersionCmd::GetFeatures => get_features(env, arg),
        // Xen refuses an argument here: there is nothing to write through it.
        VersionCmd::Pagesize if arg != 0 => Err(Errno::EINVAL),
        VersionCmd::Pagesize => Ok(PAGE_SIZE),
        VersionCmd::GuestHandle => {
            let handle = env.domain().handle;
            copy_out(env, arg, &handle)
        }
        VersionCmd::Commandline => {
            if !env.domain().is_privileged() {
                return Err(Errno::EPERM);
            }
            // The test harness's nonce stays with the hypervisor: a guest
            // that knew it could forge the teardown line.
            let mut line = [0u8; XENVER_COMMANDLINE_LEN];
            let n = crate::cmdline::hide_test_nonce(env.host().command_line, &mut line);
            copy_str::<XENVER_COMMANDLINE_LEN>(env, arg, &line[..n])
        }
        VersionCmd::BuildId => build_id(env, arg),
    }
}

/// The build facts `build.rs` records.
mod build {
    /// `rustc --version` of the compiler that built the hypervisor.
    pub const COMPILER: &str = env!("HV_COMPILER");
    /// Commit date of the source tree, or "unknown".
    pub const DATE: &str = env!("HV_BUILD_DATE");
    /// `git:<commit>` of the source tree (`+` when it had local changes), or "unknown".
    pub const CHANGESET: &str = env!("HV_CHANGESET");
}

/// `struct xen_compile_info`: compiler[64], compile_by[16],
/// compile_domain[32], compile_date[32], each NUL-terminated.
fn compile_info() -> [u8; 144] {
    let mut info = [0u8; 144];
    put_str(&mut info[0..64], build::COMPILER.as_bytes());
    put_str(&mut info[64..80], b"oxen");
    put_str(&mut info[112..144], build::DATE.as_bytes());
    info
}

/// Copies `s` into `dst`, cut to leave room for the terminating NUL.
fn put_str(dst: &mut [u8], s: &[u8]) {
    let n = s.len().min(dst.len().saturating_sub(1));
    dst[..n].copy_from_slice(&s[..n]);
}

fn copy_str<const N: usize>(env: &mut impl Env, arg: u64, s: &[u8]) -> Result<u64, Errno> {
    let mut buf = [0u8; N];
    put_str(&mut buf, s);
    copy_out(env, arg, &buf)
}

fn copy_out(env: &mut impl Env, arg: u64, bytes: &[u8]) -> Result<u64, Errno> {
    env.copy_to_guest(arg, bytes)?;
    Ok(0)
}

/// Feature bits of sub-map 0 for the calling domain: what is implemented
/// here. `mmu_pt_update_preserve_ad` (`MMU_PT_UPDATE_PRESERVE_AD` keeps
/// the accessed and dirty bits) and `gnttab_map_avail_bits` (the
/// `GNTMAP_guest_avail` bits of a grant map reach the PTE's available
/// bits) are; `highmem_assist` concerns 32-bit guests only, and Xen
/// reports it to every PV guest, so it is reported too. Xen also reports
/// `memory_op_vnode_supported`, which needs vNUMA, not implemented here
/// (`docs/abi-differences.md`).
fn feature_bits(privileged: bool) -> u32 {
    let mut bits = XenFeature::DirectMapped.bit()
        | XenFeature::MmuPtUpdatePreserveAd.bit()
        | XenFeature::HighmemAssist.bit()
        | XenFeature::GnttabMapAvailBits.bit();
    if privileged {
        bits |= XenFeature::Dom0.bit();
    }
    bits
}

/// `XENVER_get_features`: `{u32 submap_idx (IN), u32 submap (OUT)}`.
fn get_features(env: &mut impl Env, arg: u64) -> Result<u64, Errno> {
    let index = read_u32(env, arg)?;
    if index >= XENFEAT_NR_SUBMAPS {
        return Err(Errno::EINVAL);
    }
    let privileged = env.domain().is_privileged();
    let submap = feature_bits(privileged);
    env.copy_to_guest(arg.wrapping_add(4), &submap.to_le_bytes())?;
    Ok(0)
}

/// `XENVER_build_id`: `{u32 len (IN: buffer size), u8 buf[]}`; returns the
/// ID's length. A NULL `arg` asks for the length only. Errors, in the order
/// Xen checks them: `-EPERM` for unprivileged callers, `-EFAULT` if the
/// header cannot be read, `-EINVAL` for `len == 0`, `-ENODATA` when the
/// image carries no build ID, `-ENOBUFS` when `len` is too small.
fn build_id(env: &mut impl Env, arg: u64) -> Result<u64, Errno> {
    if !env.domain().is_privileged() {
        return Err(Errno::EPERM);
    }
    let room = if arg == 0 {
        None
    } else {
        Some(read_u32(env, arg)?)
    };
    if room == Some(0) {
        return Err(Errno::EINVAL);
    }
    let id = env.host().build_id;
    if id.is_empty() {
        return Err(Errno::ENODATA);
    }
    let Some(room) = room else {
        return Ok(id.len() as u64);
    };
    if (room as usize) < id.len() {
        return Err(Errno::ENOBUFS);
    }
    env.copy_to_guest(arg.wrapping_add(4), id)?;
    Ok(id.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::fake::{BASE, FakeMachine};

    fn c_str(bytes: &[u8]) -> &[u8] {
        &bytes[..bytes.iter().position(|&b| b == 0).expect("NUL-terminated")]
    }

    #[test]
    fn version_and_strings() {
        let mut env = FakeMachine::new(16);
        assert_eq!(xen_version(&mut env, 0, 0), Ok(0x0004_0011));
        assert_eq!(xen_version(&mut env, 1, BASE), Ok(0));
        assert_eq!(c_str(&env.guest[..16]), b"-oxen");
        assert_eq!(xen_version(&mut env, 3, BASE), Ok(0));
        assert_eq!(c_str(&env.guest[..1024]), b"xen-3.0-x86_64");
        assert_eq!(xen_version(&mut env, 9, BASE), Ok(0));
        assert_eq!(c_str(&env.guest[..1024]), b"console=com1 dom0_mem=64M");
        assert_eq!(xen_version(&mut env, 7, 0), Ok(4096));
        assert_eq!(xen_version(&mut env, 7, BASE), Err(Errno::EINVAL));
        env.host.command_line = b"loglvl=info test_nonce=0123456789abcdef noreboot";
        assert_eq!(xen_version(&mut env, 9, BASE), Ok(0));
        assert_eq!(
            c_str(&env.guest[..1024]),
            b"loglvl=info test_nonce=xxxxxxxxxxxxxxxx noreboot"
        );
    }

    #[test]
    fn platform_parameters_and_features() {
        let mut env = FakeMachine::new(16);
        assert_eq!(xen_version(&mut env, 5, BASE), Ok(0));
        assert_eq!(env.guest[..8], 0xFFFF_8000_0000_0000u64.to_le_bytes());
        env.guest[..8].fill(0);
        assert_eq!(xen_version(&mut env, 6, BASE), Ok(0));
        let submap = u32::from_le_bytes(env.guest[4..8].try_into().unwrap());
        // dom0, direct_mapped, mmu_pt_update_preserve_ad, highmem_assist,
        // gnttab_map_avail_bits.
        assert_eq!(
            submap,
            (1 << 11) | (1 << 17) | (1 << 5) | (1 << 6) | (1 << 7)
        );
        env.domain.mm.privilege = None;
        assert_eq!(xen_version(&mut env, 6, BASE), Ok(0));
        let submap = u32::from_le_bytes(env.guest[4..8].try_into().unwrap());
        assert_eq!(submap, (1 << 17) | (1 << 5) | (1 << 6) | (1 << 7));
        env.domain.mm.privilege = Some(crate::domain::Privilege::for_tests());
        env.guest[0] = 1;
        assert_eq!(xen_version(&mut env, 6, BASE), Err(Errno::EINVAL));
    }

    #[test]
    fn build_id_sizes() {
        let mut env = FakeMachine::new(16);
        assert_eq!(xen_version(&mut env, 10, 0), Ok(20));
        assert_eq!(xen_version(&mut env, 10, BASE), Err(Errno::EINVAL));
        env.guest[..4].copy_from_slice(&4u32.to_le_bytes());
        assert_eq!(xen_version(&mut env, 10, BASE), Err(Errno::ENOBUFS));
        env.guest[..4].copy_from_slice(&64u32.to_le_bytes());
        assert_eq!(xen_version(&mut env, 10, BASE), Ok(20));
        assert_eq!(env.guest[4..24], [0xab; 20]);
    }

    #[test]
    fn errors() {
        let mut env = FakeMachine::new(16);
        assert_eq!(xen_version(&mut env, 64, 0), Err(Errno::ENOSYS));
        for cmd in [1, 2, 3, 4, 5, 6, 8, 9, 10] {
            assert_eq!(
                xen_version(&mut env, cmd, 0x1000),
                Err(Errno::EFAULT),
                "sub-op {cmd}"
            );
        }
        env.domain.mm.privilege = None;
        assert_eq!(xen_version(&mut env, 9, BASE), Err(Errno::EPERM));
    }
}
