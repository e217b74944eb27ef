//! `isolation_*`: the guest kernel touches the hypervisor's address range.
//!
//! The guest kernel runs in ring 1 here, where any *mapped* supervisor page
//! would be readable, so the hypervisor keeps itself out of guest address
//! spaces (only the read-only M2P and a per-CPU trampoline are there).
//! Each hostile test says what it is about to do and does it with one
//! access; the hypervisor must crash the domain (the harness checks the
//! exit status and the hypervisor's log), never leak or corrupt data. If
//! the access succeeds the test reports FAILURE.
//! - `read_hv_text`: the hypervisor's text (0xFFFF82D080000000).
//! - `read_directmap`: the direct map of RAM (0xFFFF830000000000).
//! - `read_slot271`: the last page of the reserved range.
//! - `write_m2p`: a store to the read-only M2P.
//! - `write_trampoline`: a store to the trampoline slot (257).
//!
//! `isolation_read_m2p` is the legitimate counterpart: the M2P *is*
//! readable, and maps the MFN of the start_info page back to its PFN. It
//! passes on Xen too.

use guest_pv_shim::dom0_abi::layout::{
    DIRECTMAP_VIRT_START, HYPERVISOR_TEXT_START, HYPERVISOR_VIRT_END, MACH2PHYS_VIRT_START,
    TRAMPOLINE_VIRT_START,
};
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::entry::p2m_entry;
use guest_pv_shim::platform::initial_mapping_pfn;
use guest_pv_shim::{println, report};

use crate::probe;

/// Reads `va`, which must fault; reports FAILURE if it does not.
fn hostile_read(what: &str, va: u64) {
    println!("isolation: reading u64 at {va:#x} ({what}); the domain must be crashed");
    let value = probe::read_u64(va);
    report::fail(
        format_args!("read of {what}"),
        format_args!("read succeeded: {value:#x} at {va:#x}"),
    );
}

/// Writes `va`, which must fault; reports FAILURE if it does not.
fn hostile_write(what: &str, va: u64) {
    println!("isolation: writing u64 at {va:#x} ({what}); the domain must be crashed");
    // SAFETY: `va` is in the hypervisor's reserved range, which holds no
    // memory of this guest's Rust code.
    unsafe { probe::write_u64(va, 0x5A5A_5A5A_5A5A_5A5A) };
    report::fail(
        format_args!("write of {what}"),
        format_args!("write succeeded at {va:#x}"),
    );
}

pub fn read_hv_text(_start_info: &'static StartInfo) {
    hostile_read("hypervisor text", HYPERVISOR_TEXT_START);
}

pub fn read_directmap(_start_info: &'static StartInfo) {
    hostile_read("direct map", DIRECTMAP_VIRT_START);
}

pub fn read_slot271(_start_info: &'static StartInfo) {
    hostile_read("reserved L4 slot 271", HYPERVISOR_VIRT_END - 0x1000);
}

pub fn write_m2p(_start_info: &'static StartInfo) {
    hostile_write("read-only M2P", MACH2PHYS_VIRT_START);
}

pub fn write_trampoline(_start_info: &'static StartInfo) {
    hostile_write("trampoline slot 257", TRAMPOLINE_VIRT_START);
}

pub fn read_m2p(start_info: &'static StartInfo) {
    let va = core::ptr::from_ref(start_info) as u64;
    let Some(pfn) = initial_mapping_pfn(va) else {
        report::error(
            "start_info",
            format_args!("start_info at {va:#x} is below VIRT_BASE"),
        );
        return;
    };
    let Some(mfn) = p2m_entry(start_info, pfn) else {
        report::error(
            "p2m",
            format_args!("pfn {pfn:#x} beyond nr_pages {:#x}", start_info.nr_pages),
        );
        return;
    };
    println!(
        "isolation: start_info at {va:#x} is pfn {pfn:#x}, mfn {mfn:#x}; reading M2P[{mfn:#x}]"
    );
    let m2p = probe::read_u64(MACH2PHYS_VIRT_START + mfn * 8);
    report::check_eq("M2P[mfn of start_info] is its pfn", m2p, pfn);
}
