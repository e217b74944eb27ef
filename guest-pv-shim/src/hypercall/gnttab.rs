//! `grant_table_op(cmd, uop, count)`.
//!
//! Each wrapper passes the array of structures its command takes (the
//! hypervisor reads and writes only those); [`grant_table_op_raw`] takes
//! any command, address and count, so that tests can pass bad ones.
//! Results are the raw hypercall values; each operation's status and OUT
//! fields are in its structure.

use dom0_abi::Hypercall;
use dom0_abi::grant_table::{
    GnttabCopy, GnttabGetStatusFrames, GnttabGetVersion, GnttabMapGrantRef, GnttabOp,
    GnttabQuerySize, GnttabSetVersion, GnttabSetupTable, GnttabSwapGrantRef, GnttabUnmapAndReplace,
    GnttabUnmapGrantRef,
};

use super::raw;

/// `grant_table_op(cmd, uop, count)` with raw arguments.
///
/// # Safety
/// `uop` must be valid for `count` structures of the kind `cmd` reads and
/// writes, or be memory no Rust code uses.
pub unsafe fn grant_table_op_raw(cmd: u64, uop: u64, count: u64) -> i64 {
    // SAFETY: the caller's contract.
    unsafe { raw::hypercall3(u64::from(Hypercall::GrantTableOp.number()), cmd, uop, count) }
}

/// Issues `cmd` on the structures of `ops`.
fn op<T>(cmd: GnttabOp, ops: &mut [T]) -> i64 {
    // SAFETY: every caller passes the structures `cmd` reads and writes;
    // the hypervisor touches no more than `ops.len()` of them.
    unsafe { grant_table_op_raw(cmd as u64, ops.as_mut_ptr() as u64, ops.len() as u64) }
}

/// `GNTTABOP_map_grant_ref`.
pub fn gnttab_map(ops: &mut [GnttabMapGrantRef]) -> i64 {
    op(GnttabOp::MapGrantRef, ops)
}

/// `GNTTABOP_unmap_grant_ref`.
pub fn gnttab_unmap(ops: &mut [GnttabUnmapGrantRef]) -> i64 {
    op(GnttabOp::UnmapGrantRef, ops)
}

/// `GNTTABOP_unmap_and_replace`.
pub fn gnttab_unmap_and_replace(ops: &mut [GnttabUnmapAndReplace]) -> i64 {
    op(GnttabOp::UnmapAndReplace, ops)
}

/// `GNTTABOP_copy`.
pub fn gnttab_copy(ops: &mut [GnttabCopy]) -> i64 {
    op(GnttabOp::Copy, ops)
}

/// `GNTTABOP_swap_grant_ref`.
pub fn gnttab_swap(ops: &mut [GnttabSwapGrantRef]) -> i64 {
    op(GnttabOp::SwapGrantRef, ops)
}

/// `GNTTABOP_setup_table` (`op.frame_list` must have room for
/// `op.nr_frames` u64).
pub fn gnttab_setup_table(op: &mut GnttabSetupTable) -> i64 {
    self::op(GnttabOp::SetupTable, core::slice::from_mut(op))
}

/// `GNTTABOP_query_size`.
pub fn gnttab_query_size(op: &mut GnttabQuerySize) -> i64 {
    self::op(GnttabOp::QuerySize, core::slice::from_mut(op))
}

/// `GNTTABOP_set_version`.
pub fn gnttab_set_version(op: &mut GnttabSetVersion) -> i64 {
    self::op(GnttabOp::SetVersion, core::slice::from_mut(op))
}

/// `GNTTABOP_get_version`.
pub fn gnttab_get_version(op: &mut GnttabGetVersion) -> i64 {
    self::op(GnttabOp::GetVersion, core::slice::from_mut(op))
}

/// `GNTTABOP_get_status_frames` (`op.frame_list` must have room for
/// `op.nr_frames` u64).
pub fn gnttab_get_status_frames(op: &mut GnttabGetStatusFrames) -> i64 {
    self::op(GnttabOp::GetStatusFrames, core::slice::from_mut(op))
}
