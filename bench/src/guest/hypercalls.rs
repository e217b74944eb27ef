//! The plain hypercall paths: the null hypercall and a multicall of null
//! hypercalls.
//!
//! `xen_version(XENVER_version, NULL)` reads and writes no guest memory
//! and does no work beyond returning a constant, so its cost is the entry,
//! dispatch and exit of the hypervisor. Every result must be the version
//! the first call returned (4.17 on both platforms).

use guest_pv_shim::dom0_abi::Hypercall;
use guest_pv_shim::dom0_abi::multicall::MulticallEntry;
use guest_pv_shim::dom0_abi::version::VersionCmd;
use guest_pv_shim::report;

use crate::guest::harness::{Harness, Measured, NotRun, Reason, not_run};
use crate::guest::hc;

/// Entries per multicall.
pub const MULTICALL_ENTRIES: usize = 32;

/// The version every null hypercall must return (the first one's answer).
fn expected_version(name: &str) -> Result<i64, NotRun> {
    match hc::xen_version_null() {
        version if version > 0 => Ok(version),
        err => Err(not_run(name, "xen_version(XENVER_version)", err)),
    }
}

/// `null_hypercall`.
pub fn null_hypercall(h: &Harness, name: &str) -> Result<Measured, NotRun> {
    let version = expected_version(name)?;
    h.time(
        name,
        "xen_version(XENVER_version)",
        hc::xen_version_null,
        |ret| ret == version,
    )
}

/// `multicall_32`: every entry's result is checked after the timed runs.
pub fn multicall(h: &Harness, name: &str) -> Result<Measured, NotRun> {
    let version = expected_version(name)?;
    let null = MulticallEntry {
        op: u64::from(Hypercall::XenVersion.number()),
        result: 0,
        args: [VersionCmd::Version as u64, 0, 0, 0, 0, 0],
    };
    let mut entries = [null; MULTICALL_ENTRIES];
    let measured = h.time(
        name,
        "multicall",
        || hc::multicall(&mut entries),
        |ret| ret == 0,
    )?;
    let all_ok = entries.iter().all(|e| e.result.cast_signed() == version);
    report::check(
        "multicall_32 entries all return the version",
        all_ok,
        format_args!("results {:?}", entries.map(|e| e.result.cast_signed())),
    );
    if all_ok {
        Ok(measured)
    } else {
        Err(NotRun::Failed(Reason::Text(
            "a multicall entry returned something else",
        )))
    }
}
