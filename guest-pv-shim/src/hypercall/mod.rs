//! Typed hypercall wrappers over [`dom0_abi`].
//!
//! Each wrapper returns the raw hypercall result (`i64`, negative errno on
//! failure) because tests compare exact values; use
//! [`Errno::result`](dom0_abi::Errno::result) to turn one into a `Result`.
//! Wrappers whose arguments come from Rust references are safe; the `*_raw`
//! forms take guest addresses and are `unsafe` (see [`raw::hypercall5`]).
//! Memory, CPU, vCPU, event-channel and grant-table hypercalls live in
//! [`mm`], [`cpu`], [`vcpu`], [`evtchn`] and [`gnttab`] and are
//! re-exported here.

pub mod cpu;
pub mod domctl;
pub mod evtchn;
pub mod gnttab;
pub mod mm;
pub mod raw;
pub mod vcpu;

pub use cpu::*;
pub use domctl::*;
pub use evtchn::*;
pub use gnttab::*;
pub use mm::*;
pub use vcpu::*;

use dom0_abi::Hypercall;
use dom0_abi::console::ConsoleIoCmd;
use dom0_abi::mca::XenMc;
use dom0_abi::platform::PlatformOp;
use dom0_abi::sched::{
    SchedOp, SchedPoll, SchedRemoteShutdown, SchedShutdown, SchedWatchdog, ShutdownReason,
};
use dom0_abi::version::{
    BuildIdHeader, Capabilities, Changeset, Commandline, CompileInfo, Extraversion, FeatureInfo,
    GuestHandle, PlatformParameters, VersionCmd,
};

/// The address of `r` as a hypercall argument.
fn addr_of<T: ?Sized>(r: &T) -> u64 {
    (r as *const T).cast::<u8>() as u64
}

/// The address of `r` as a hypercall argument the hypervisor writes.
fn addr_of_mut<T: ?Sized>(r: &mut T) -> u64 {
    (r as *mut T).cast::<u8>() as u64
}

/// `console_io(cmd, count, buf)` with a raw buffer address.
///
/// # Safety
/// As [`raw::hypercall5`]: for `CONSOLEIO_read`, `buf` must be writable
/// for `count` bytes or be memory no Rust code uses.
pub unsafe fn console_io_raw(cmd: u64, count: u64, buf: u64) -> i64 {
    // SAFETY: the caller's contract.
    unsafe { raw::hypercall3(u64::from(Hypercall::ConsoleIo.number()), cmd, count, buf) }
}

/// `CONSOLEIO_write` of `bytes` (split into `u32`-sized pieces). Returns the
/// first non-zero result, or 0.
pub fn console_write(bytes: &[u8]) -> i64 {
    for chunk in bytes.chunks(u32::MAX as usize) {
        // SAFETY: the hypervisor only reads `chunk.len()` bytes of `chunk`.
        let ret = unsafe {
            console_io_raw(
                ConsoleIoCmd::Write as u64,
                chunk.len() as u64,
                addr_of(chunk),
            )
        };
        if ret != 0 {
            return ret;
        }
    }
    0
}

/// `CONSOLEIO_read` into `buf` (at most `i32::MAX` bytes asked for).
/// Returns the number of bytes read or a negative errno.
pub fn console_read(buf: &mut [u8]) -> i64 {
    let count = buf.len().min(i32::MAX as usize) as u64;
    // SAFETY: the hypervisor writes at most `count` <= `buf.len()` bytes
    // into the exclusively borrowed `buf`.
    unsafe { console_io_raw(ConsoleIoCmd::Read as u64, count, addr_of(buf)) }
}

/// `xen_version(cmd, arg)` with a raw argument address.
///
/// # Safety
/// As [`raw::hypercall5`]: `arg` must be valid for the sub-op's buffer or
/// be memory no Rust code uses.
pub unsafe fn xen_version_raw(cmd: u64, arg: u64) -> i64 {
    // SAFETY: the caller's contract.
    unsafe { raw::hypercall2(u64::from(Hypercall::XenVersion.number()), cmd, arg) }
}

/// `xen_version(cmd, &mut T)` where `T` is exactly the sub-op's buffer.
fn xen_version_into<T>(cmd: VersionCmd, out: &mut T) -> i64 {
    // SAFETY: every caller pairs `cmd` with the buffer type the hypervisor
    // writes for it (sizes fixed by dom0-abi), and `out` is exclusively
    // borrowed.
    unsafe { xen_version_raw(cmd as u64, addr_of(out)) }
}

/// `XENVER_version`: `(major << 16) | minor`.
pub fn xenver_version() -> i64 {
    // SAFETY: the sub-op ignores its argument; NULL is passed.
    unsafe { xen_version_raw(VersionCmd::Version as u64, 0) }
}

/// `XENVER_extraversion` into `out`.
pub fn xenver_extraversion(out: &mut Extraversion) -> i64 {
    xen_version_into(VersionCmd::Extraversion, out)
}

/// `XENVER_compile_info` into `out`.
pub fn xenver_compile_info(out: &mut CompileInfo) -> i64 {
    xen_version_into(VersionCmd::CompileInfo, out)
}

/// `XENVER_capabilities` into `out`.
pub fn xenver_capabilities(out: &mut Capabilities) -> i64 {
    xen_version_into(VersionCmd::Capabilities, out)
}

/// `XENVER_changeset` into `out`.
pub fn xenver_changeset(out: &mut Changeset) -> i64 {
    xen_version_into(VersionCmd::Changeset, out)
}

/// `XENVER_platform_parameters` into `out`.
pub fn xenver_platform_parameters(out: &mut PlatformParameters) -> i64 {
    xen_version_into(VersionCmd::PlatformParameters, out)
}

/// `XENVER_get_features` for `out.submap_idx`.
pub fn xenver_get_features(out: &mut FeatureInfo) -> i64 {
    xen_version_into(VersionCmd::GetFeatures, out)
}

/// `XENVER_pagesize` (argument NULL).
pub fn xenver_pagesize() -> i64 {
    // SAFETY: NULL argument; the sub-op writes nothing.
    unsafe { xen_version_raw(VersionCmd::Pagesize as u64, 0) }
}

/// `XENVER_guest_handle` into `out`.
pub fn xenver_guest_handle(out: &mut GuestHandle) -> i64 {
    xen_version_into(VersionCmd::GuestHandle, out)
}

/// `XENVER_commandline` into `out`.
pub fn xenver_commandline(out: &mut Commandline) -> i64 {
    xen_version_into(VersionCmd::Commandline, out)
}

/// A `xen_build_id` buffer: header plus `N` bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct BuildIdBuffer<const N: usize> {
    /// IN: `N`; set by [`xenver_build_id`].
    pub header: BuildIdHeader,
    /// OUT: the build id (the result says how many bytes).
    pub bytes: [u8; N],
}

impl<const N: usize> BuildIdBuffer<N> {
    /// An empty buffer.
    #[must_use]
    pub const fn new() -> BuildIdBuffer<N> {
        BuildIdBuffer {
            header: BuildIdHeader { len: 0 },
            bytes: [0; N],
        }
    }
}

impl<const N: usize> Default for BuildIdBuffer<N> {
    fn default() -> Self {
        BuildIdBuffer::new()
    }
}

/// `XENVER_build_id` into `out` (sets `out.header.len` to `N`). Returns the
/// id's length or a negative errno.
pub fn xenver_build_id<const N: usize>(out: &mut BuildIdBuffer<N>) -> i64 {
    out.header.len = u32::try_from(N).unwrap_or(u32::MAX);
    debug_assert_eq!(
        size_of::<BuildIdBuffer<N>>(),
        size_of::<BuildIdHeader>() + N
    );
    // SAFETY: the hypervisor writes at most `header.len` = N bytes after
    // the header, inside the exclusively borrowed `out`.
    unsafe { xen_version_raw(VersionCmd::BuildId as u64, addr_of(out)) }
}

/// `sched_op(cmd, arg)` with a raw argument address.
///
/// # Safety
/// As [`raw::hypercall5`]. Shutdown sub-ops end the domain.
pub unsafe fn sched_op_raw(cmd: u64, arg: u64) -> i64 {
    // SAFETY: the caller's contract.
    unsafe { raw::hypercall2(u64::from(Hypercall::SchedOp.number()), cmd, arg) }
}

/// `SCHEDOP_yield`.
pub fn sched_yield() -> i64 {
    // SAFETY: yield ignores its argument.
    unsafe { sched_op_raw(SchedOp::Yield as u64, 0) }
}

/// `SCHEDOP_shutdown` with `reason`; returns only on failure (for dom0) or
/// once a domU is resumed.
pub fn sched_shutdown(reason: ShutdownReason) -> i64 {
    let arg = SchedShutdown {
        reason: reason as u32,
    };
    // SAFETY: the hypervisor reads the 4-byte `arg`.
    unsafe { sched_op_raw(SchedOp::Shutdown as u64, addr_of(&arg)) }
}

/// `SCHEDOP_shutdown_code`: records `reason` for a later shutdown.
pub fn sched_shutdown_code(reason: ShutdownReason) -> i64 {
    let arg = SchedShutdown {
        reason: reason as u32,
    };
    // SAFETY: the hypervisor reads the 4-byte `arg`.
    unsafe { sched_op_raw(SchedOp::ShutdownCode as u64, addr_of(&arg)) }
}

/// `SCHEDOP_block`: enables event delivery and sleeps until an event is
/// pending (at once if one is).
pub fn sched_block() -> i64 {
    // SAFETY: block ignores its argument.
    unsafe { sched_op_raw(SchedOp::Block as u64, 0) }
}

/// `SCHEDOP_poll` on `ports` until one is pending or system time
/// `timeout` (0: no timeout).
pub fn sched_poll(ports: &[u32], timeout: u64) -> i64 {
    let arg = SchedPoll {
        ports: addr_of(ports),
        nr_ports: u32::try_from(ports.len()).unwrap_or(u32::MAX),
        pad: 0,
        timeout,
    };
    // SAFETY: the hypervisor reads `arg` and the `ports` it names.
    unsafe { sched_op_raw(SchedOp::Poll as u64, addr_of(&arg)) }
}

/// `SCHEDOP_watchdog`: `id` 0 creates a watchdog (returns its id), another
/// id re-arms it for `timeout` seconds (0 stops it).
pub fn sched_watchdog(id: u32, timeout: u32) -> i64 {
    let arg = SchedWatchdog { id, timeout };
    // SAFETY: the hypervisor reads the 8-byte `arg`.
    unsafe { sched_op_raw(SchedOp::Watchdog as u64, addr_of(&arg)) }
}

/// `SCHEDOP_remote_shutdown` of domain `domain_id` for `reason`.
pub fn sched_remote_shutdown(domain_id: u16, reason: u32) -> i64 {
    let arg = SchedRemoteShutdown {
        domain_id,
        pad: 0,
        reason,
    };
    // SAFETY: the hypervisor reads the 8-byte `arg`.
    unsafe { sched_op_raw(SchedOp::RemoteShutdown as u64, addr_of(&arg)) }
}

/// `set_timer_op(deadline)`: the calling vCPU's one-shot timer raises
/// `VIRQ_TIMER` at system time `deadline` (0 cancels it).
pub fn set_timer_op(deadline: u64) -> i64 {
    // SAFETY: the argument is a value, not a pointer.
    unsafe { raw::hypercall1(u64::from(Hypercall::SetTimerOp.number()), deadline) }
}

/// The legacy `sched_op_compat(cmd, arg)`: `arg` is a value (the shutdown
/// reason for `SCHEDOP_shutdown`), never a pointer.
pub fn sched_op_compat(cmd: u64, arg: u64) -> i64 {
    // SAFETY: no sub-op of the compat call dereferences `arg`.
    unsafe { raw::hypercall2(u64::from(Hypercall::SchedOpCompat.number()), cmd, arg) }
}

/// `physdev_op(cmd, arg)` with a raw argument address.
///
/// # Safety
/// As [`raw::hypercall5`]: `arg` must be the command's argument structure,
/// which the hypervisor may write back into, or memory no Rust code uses.
pub unsafe fn physdev_op_raw(cmd: u64, arg: u64) -> i64 {
    // SAFETY: the caller's contract.
    unsafe { raw::hypercall2(u64::from(Hypercall::PhysdevOp.number()), cmd, arg) }
}

/// `platform_op(op)` with a raw argument address.
///
/// # Safety
/// As [`raw::hypercall5`]: `op` must be a `xen_platform_op` the
/// hypervisor may write back into, or memory no Rust code uses.
pub unsafe fn platform_op_raw(op: u64) -> i64 {
    // SAFETY: the caller's contract.
    unsafe { raw::hypercall1(u64::from(Hypercall::PlatformOp.number()), op) }
}

/// `platform_op(op)`. The hypervisor reads all of `op`, and writes back
/// into it for the commands that answer.
pub fn platform_op(op: &mut PlatformOp) -> i64 {
    // SAFETY: `op` is a whole, exclusively borrowed `xen_platform_op`.
    unsafe { platform_op_raw(addr_of_mut(op)) }
}

/// `mca(op)` (hypercall 48). The hypervisor reads all of `op`, and
/// writes back into it for the commands that answer.
pub fn mca(op: &mut XenMc) -> i64 {
    // SAFETY: `op` is a whole, exclusively borrowed `xen_mc`.
    unsafe { raw::hypercall1(u64::from(Hypercall::Mca.number()), addr_of_mut(op)) }
}

/// Shuts the domain down with `reason` and never returns. If the hypervisor
/// refuses, tries the legacy call, then yields forever.
pub fn shutdown(reason: ShutdownReason) -> ! {
    sched_shutdown(reason);
    sched_op_compat(SchedOp::Shutdown as u64, reason as u64);
    loop {
        sched_yield();
    }
}
