//! `xen_version(cmd, arg)`: version, build and feature queries.
//!
//! Any domain may call it. Every sub-op that fills a buffer copies the whole
//! fixed-size buffer (zero-padded) to `arg`; a buffer that cannot be written
//! gives `EFAULT`. An unknown `cmd` gives `ENOSYS`.
//!
//! This hypervisor reports version 4.17 (the ABI it implements) and an
//! extraversion containing `"oxen"`, which is how guests tell it from Xen.

pub use crate::features::XENFEAT_NR_SUBMAPS;

/// Length of the `XENVER_extraversion` buffer.
pub const XENVER_EXTRAVERSION_LEN: usize = 16;
/// Length of the `XENVER_capabilities` buffer.
pub const XENVER_CAPABILITIES_LEN: usize = 1024;
/// Length of the `XENVER_changeset` buffer.
pub const XENVER_CHANGESET_LEN: usize = 64;
/// Length of the `XENVER_commandline` buffer.
pub const XENVER_COMMANDLINE_LEN: usize = 1024;
/// Length of the `XENVER_guest_handle` buffer (the domain's UUID).
pub const XENVER_GUEST_HANDLE_LEN: usize = 16;

/// `XENVER_extraversion` buffer, e.g. `".7"`; NUL-terminated.
pub type Extraversion = [u8; XENVER_EXTRAVERSION_LEN];
/// `XENVER_capabilities` buffer: space-separated guest types.
pub type Capabilities = [u8; XENVER_CAPABILITIES_LEN];
/// `XENVER_changeset` buffer: source revision, NUL-terminated.
pub type Changeset = [u8; XENVER_CHANGESET_LEN];
/// `XENVER_commandline` buffer: the hypervisor's command line.
pub type Commandline = [u8; XENVER_COMMANDLINE_LEN];
/// `XENVER_guest_handle` buffer: the domain handle (UUID).
pub type GuestHandle = [u8; XENVER_GUEST_HANDLE_LEN];

/// The version this hypervisor reports (the Xen ABI it implements): 4.17.
pub const XEN_VERSION_MAJOR: u32 = 4;
/// See [`XEN_VERSION_MAJOR`].
pub const XEN_VERSION_MINOR: u32 = 17;

/// The `XENVER_version` result for `major.minor`: `(major << 16) | minor`.
#[must_use]
pub const fn version_number(major: u32, minor: u32) -> u32 {
    (major << 16) | (minor & 0xFFFF)
}

/// Major part of a `XENVER_version` result.
#[must_use]
pub const fn version_major(version: u32) -> u32 {
    version >> 16
}

/// Minor part of a `XENVER_version` result.
#[must_use]
pub const fn version_minor(version: u32) -> u32 {
    version & 0xFFFF
}

/// Declares an enum of sub-op numbers with `from_number`.
macro_rules! version_cmds {
    ($($(#[$doc:meta])* $name:ident = $nr:literal;)*) => {
        /// `XENVER_*`: the `cmd` argument of `xen_version`.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum VersionCmd {
            $($(#[$doc])* $name = $nr,)*
        }

        impl VersionCmd {
            /// The sub-op with number `nr` (`None`: the call gives `ENOSYS`).
            #[must_use]
            #[inline]
            pub const fn from_number(nr: u64) -> Option<VersionCmd> {
                match nr {
                    $($nr => Some(VersionCmd::$name),)*
                    _ => None,
                }
            }
        }
    };
}

version_cmds! {
    /// `arg` ignored. Returns `(major << 16) | minor` (4.17: `0x0004_0011`).
    /// Never fails.
    Version = 0;
    /// `arg`: [`Extraversion`] (OUT). Returns 0. `EFAULT`: bad `arg`.
    Extraversion = 1;
    /// `arg`: [`CompileInfo`] (OUT). Returns 0. `EFAULT`: bad `arg`.
    CompileInfo = 2;
    /// `arg`: [`Capabilities`] (OUT); must contain `"xen-3.0-x86_64"`.
    /// Returns 0. `EFAULT`: bad `arg`.
    Capabilities = 3;
    /// `arg`: [`Changeset`] (OUT). Returns 0. `EFAULT`: bad `arg`.
    Changeset = 4;
    /// `arg`: [`PlatformParameters`] (OUT), `virt_start` =
    /// `HYPERVISOR_VIRT_START`. Returns 0. `EFAULT`: bad `arg`.
    PlatformParameters = 5;
    /// `arg`: [`FeatureInfo`] (IN `submap_idx`, OUT `submap`). Returns 0.
    /// `EFAULT`: bad `arg`. `EINVAL`: `submap_idx` >= `XENFEAT_NR_SUBMAPS`.
    GetFeatures = 6;
    /// `arg` must be NULL. Returns the page size (4096). `EINVAL`: non-NULL
    /// `arg` (Xen 4.17).
    Pagesize = 7;
    /// `arg`: [`GuestHandle`] (OUT). Returns 0. `EFAULT`: bad `arg`. Dom0's
    /// handle is all zero.
    GuestHandle = 8;
    /// `arg`: [`Commandline`] (OUT), the hypervisor's command line. Returns
    /// 0. `EFAULT`: bad `arg`. Xen allows it only to privileged domains
    /// (others get a placeholder string).
    Commandline = 9;
    /// `arg`: [`BuildIdHeader`] followed by `len` bytes (IN `len`, OUT
    /// bytes), or NULL to ask for the length only.
    ///
    /// Returns the build id's length (Xen 4.17 from Debian: 20, a SHA-1),
    /// also for a NULL `arg`. `EINVAL`: `len` is 0. `ENOBUFS`: `len` is
    /// smaller than the id. `ENODATA`: built without a build id. `EFAULT`:
    /// `arg` unreadable or the buffer unwritable. `EPERM`: caller not
    /// allowed to see build details (Xen's XSM policy; dom0 always is).
    BuildId = 10;
}

/// `struct xen_compile_info` (144 bytes): NUL-terminated strings.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CompileInfo {
    /// OUT: compiler identification.
    pub compiler: [u8; 64],
    /// OUT: user that built the hypervisor.
    pub compile_by: [u8; 16],
    /// OUT: domain (host) of the build.
    pub compile_domain: [u8; 32],
    /// OUT: build date.
    pub compile_date: [u8; 32],
}

impl CompileInfo {
    /// An all-zero value.
    #[must_use]
    pub const fn zeroed() -> CompileInfo {
        CompileInfo {
            compiler: [0; 64],
            compile_by: [0; 16],
            compile_domain: [0; 32],
            compile_date: [0; 32],
        }
    }
}

/// `struct xen_platform_parameters` (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlatformParameters {
    /// OUT: start of the hypervisor-reserved virtual range
    /// (`0xFFFF800000000000` for 64-bit PV).
    pub virt_start: u64,
}

/// `struct xen_feature_info` (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FeatureInfo {
    /// IN: which 32-bit submap to return (only 0 exists).
    pub submap_idx: u32,
    /// OUT: the submap, bits as [`XenFeature`](crate::features::XenFeature).
    pub submap: u32,
}

/// `struct xen_build_id` header (4 bytes), followed by the buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BuildIdHeader {
    /// IN: size of the buffer that follows.
    pub len: u32,
}

crate::assert_layout!(CompileInfo, 144, {
    compiler: 0, compile_by: 64, compile_domain: 80, compile_date: 112,
});
crate::assert_layout!(PlatformParameters, 8, { virt_start: 0 });
crate::assert_layout!(FeatureInfo, 8, { submap_idx: 0, submap: 4 });
crate::assert_layout!(BuildIdHeader, 4, { len: 0 });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(version_number(4, 17), 0x0004_0011);
        assert_eq!(version_major(0x0004_0011), 4);
        assert_eq!(version_minor(0x0004_0011), 17);
        assert_eq!(VersionCmd::from_number(10), Some(VersionCmd::BuildId));
        assert_eq!(VersionCmd::from_number(11), None);
        assert_eq!(VersionCmd::Pagesize as u32, 7);
    }
}
