//! The `shared_info` page: mapping it and vCPU 0's `vcpu_info` fields.
//!
//! `start_info.shared_info` is a machine address; the guest maps it over a
//! page-aligned page of its own `.bss` with `update_va_mapping` (as XTF
//! and Mini-OS do). Until [`map`] succeeded, the accessors return `None`
//! or do nothing.
//!
//! Invariant: the page is only accessed with volatile reads and writes of
//! single fields (the hypervisor writes it concurrently), never through a
//! Rust reference.

use core::arch::global_asm;
use core::mem::offset_of;
use core::sync::atomic::{AtomicU64, Ordering};

use dom0_abi::shared_info::{ArchSharedInfo, ArchVcpuInfo, SharedInfo, VcpuInfo};

use crate::entry::start_info;
use crate::hypercall;
use crate::mm::{PTE_RW, UVMF_INVLPG};

global_asm!(
    ".pushsection .bss.shim_shared_info, \"aw\", @nobits",
    ".balign 4096",
    ".globl shim_shared_info_page",
    "shim_shared_info_page:",
    ".space 4096",
    ".popsection",
);

unsafe extern "C" {
    /// The page the shared_info frame is mapped over (address only).
    static shim_shared_info_page: u8;
}

/// Address of the mapped shared_info page, 0 until [`map`] succeeded.
static MAPPED: AtomicU64 = AtomicU64::new(0);

/// Maps the shared_info page (once). Returns the `update_va_mapping`
/// result (0 if it is already mapped).
pub fn map() -> i64 {
    if MAPPED.load(Ordering::Relaxed) != 0 {
        return 0;
    }
    let va = core::ptr::addr_of!(shim_shared_info_page) as u64;
    let maddr = start_info().shared_info & !0xFFF;
    // SAFETY: the page is reserved for this mapping; no Rust code uses it
    // except through this module's volatile accesses.
    let ret = unsafe { hypercall::update_va_mapping(va, maddr | PTE_RW, UVMF_INVLPG) };
    if ret == 0 {
        MAPPED.store(va, Ordering::Relaxed);
    }
    ret
}

/// The address of vCPU 0's `vcpu_info` field at `offset`, if mapped.
fn vcpu0_field(offset: usize) -> Option<u64> {
    let base = MAPPED.load(Ordering::Relaxed);
    (base != 0).then(|| base + (offset_of!(SharedInfo, vcpu_info) + offset) as u64)
}

/// `vcpu_info[0].arch.cr2`: the address of the last page fault delivered.
#[must_use]
pub fn cr2() -> Option<u64> {
    let at = vcpu0_field(offset_of!(VcpuInfo, arch) + offset_of!(ArchVcpuInfo, cr2))?;
    // SAFETY: `at` lies in the mapped shared_info page (8-byte aligned
    // field); a volatile read takes no reference.
    Some(unsafe { (at as *const u64).read_volatile() })
}

/// `vcpu_info[0].evtchn_upcall_mask`.
#[must_use]
pub fn upcall_mask() -> Option<u8> {
    let at = vcpu0_field(offset_of!(VcpuInfo, evtchn_upcall_mask))?;
    // SAFETY: as in `cr2`, for a byte field.
    Some(unsafe { (at as *const u8).read_volatile() })
}

/// Sets `vcpu_info[0].evtchn_upcall_mask`; returns whether it is mapped.
pub fn set_upcall_mask(mask: u8) -> bool {
    let Some(at) = vcpu0_field(offset_of!(VcpuInfo, evtchn_upcall_mask)) else {
        return false;
    };
    // SAFETY: as in `cr2`; the guest owns this field.
    unsafe { (at as *mut u8).write_volatile(mask) };
    true
}

/// `vcpu_info[0].evtchn_upcall_pending`.
#[must_use]
pub fn upcall_pending() -> Option<u8> {
    let at = vcpu0_field(offset_of!(VcpuInfo, evtchn_upcall_pending))?;
    // SAFETY: as in `cr2`, for a byte field.
    Some(unsafe { (at as *const u8).read_volatile() })
}

/// Sets `vcpu_info[0].evtchn_upcall_pending`; returns whether it is
/// mapped.
pub fn set_upcall_pending(pending: u8) -> bool {
    let Some(at) = vcpu0_field(offset_of!(VcpuInfo, evtchn_upcall_pending)) else {
        return false;
    };
    // SAFETY: as in `cr2`; the guest may set or clear this byte.
    unsafe { (at as *mut u8).write_volatile(pending) };
    true
}

/// Sets `shared_info.arch.max_pfn` (the guest's p2m size as it reports it;
/// Xen derives `XENMEM_maximum_gpfn` of a PV guest from it). Returns
/// whether shared_info is mapped.
pub fn set_arch_max_pfn(max_pfn: u64) -> bool {
    let base = MAPPED.load(Ordering::Relaxed);
    if base == 0 {
        return false;
    }
    let at = base + (offset_of!(SharedInfo, arch) + offset_of!(ArchSharedInfo, max_pfn)) as u64;
    // SAFETY: `at` is the 8-byte aligned `arch.max_pfn` field of the
    // mapped shared_info page, a guest-owned field.
    unsafe { (at as *mut u64).write_volatile(max_pfn) };
    true
}
