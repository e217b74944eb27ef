//! Memory hypercalls: `mmu_update`, `mmuext_op`, `update_va_mapping`,
//! `update_va_mapping_otherdomain`, `multicall`, `vm_assist`, `memory_op`.
//!
//! Every call that can change the guest's page tables is `unsafe`: the
//! caller promises that the change leaves every page the running Rust code
//! uses (image, stacks, statics it touches) mapped as before. The `*_raw`
//! forms take guest addresses for pointer arguments so that tests can pass
//! bad pointers on purpose.

use dom0_abi::Hypercall;
use dom0_abi::memory::{
    E820Entry, MemoryOpCmd, XenMachphysMapping, XenMemoryDomain, XenMemoryExchange, XenMemoryMap,
    XenMemoryReservation,
};
use dom0_abi::mmu::{MmuUpdate, MmuextOp, VmAssistCmd, VmAssistType};
use dom0_abi::multicall::MulticallEntry;
use dom0_abi::types::DomId;

use super::{addr_of, addr_of_mut, raw};

/// `DOMID_SELF` as the `foreigndom` argument.
pub const FOREIGNDOM_SELF: u64 = DomId::SELF.0 as u64;

/// The address of an optional `pdone` counter (NULL for `None`).
fn pdone_addr(pdone: Option<&mut u32>) -> u64 {
    pdone.map_or(0, addr_of_mut)
}

/// `mmu_update(reqs, count, pdone, foreigndom)` with raw addresses.
///
/// # Safety
/// As [`raw::hypercall5`]: `reqs` must be readable for `count` requests
/// (or deliberately bad), `pdone` writable for a `u32` (or NULL or
/// deliberately bad), and the requests must not unmap or alias memory the
/// running Rust code uses.
pub unsafe fn mmu_update_raw(reqs: u64, count: u64, pdone: u64, foreigndom: u64) -> i64 {
    // SAFETY: the caller's contract.
    unsafe {
        raw::hypercall4(
            u64::from(Hypercall::MmuUpdate.number()),
            reqs,
            count,
            pdone,
            foreigndom,
        )
    }
}

/// `mmu_update` of `reqs`; the number done goes to `pdone` if given.
///
/// # Safety
/// The requests must not unmap or alias memory the running Rust code uses.
pub unsafe fn mmu_update(reqs: &[MmuUpdate], pdone: Option<&mut u32>, foreigndom: u64) -> i64 {
    // SAFETY: `reqs` is readable for its length, `pdone` is an exclusive
    // `u32` or NULL; the effect of the requests is the caller's contract.
    unsafe {
        mmu_update_raw(
            addr_of(reqs),
            reqs.len() as u64,
            pdone_addr(pdone),
            foreigndom,
        )
    }
}

/// `mmuext_op(ops, count, pdone, foreigndom)` with raw addresses.
///
/// # Safety
/// As [`mmu_update_raw`], for `mmuext_op` requests (a new base pointer
/// must map the running code exactly as before).
pub unsafe fn mmuext_op_raw(ops: u64, count: u64, pdone: u64, foreigndom: u64) -> i64 {
    // SAFETY: the caller's contract.
    unsafe {
        raw::hypercall4(
            u64::from(Hypercall::MmuextOp.number()),
            ops,
            count,
            pdone,
            foreigndom,
        )
    }
}

/// `mmuext_op` of `ops`; the number done goes to `pdone` if given.
///
/// # Safety
/// As [`mmuext_op_raw`] for the effect of the operations.
pub unsafe fn mmuext_op(ops: &[MmuextOp], pdone: Option<&mut u32>, foreigndom: u64) -> i64 {
    // SAFETY: `ops` readable for its length, `pdone` exclusive or NULL; the
    // rest is the caller's contract.
    unsafe {
        mmuext_op_raw(
            addr_of(ops),
            ops.len() as u64,
            pdone_addr(pdone),
            foreigndom,
        )
    }
}

/// One `mmuext_op` with `cmd`, `arg1` and `arg2`, for `DOMID_SELF`.
///
/// # Safety
/// As [`mmuext_op_raw`] for the effect of the operation (`arg2` may be a
/// guest pointer the hypervisor reads).
pub unsafe fn mmuext_one(cmd: u32, arg1: u64, arg2: u64) -> i64 {
    let op = MmuextOp {
        cmd,
        pad: 0,
        arg1,
        arg2,
    };
    // SAFETY: the caller's contract.
    unsafe { mmuext_op(core::slice::from_ref(&op), None, FOREIGNDOM_SELF) }
}

/// `update_va_mapping(va, pte, flags)`.
///
/// # Safety
/// The new mapping of `va` must not unmap or alias memory the running Rust
/// code uses; a `UVMF_MULTI` pointer in `flags` must be readable.
pub unsafe fn update_va_mapping(va: u64, pte: u64, flags: u64) -> i64 {
    // SAFETY: the caller's contract.
    unsafe {
        raw::hypercall3(
            u64::from(Hypercall::UpdateVaMapping.number()),
            va,
            pte,
            flags,
        )
    }
}

/// `update_va_mapping_otherdomain(va, pte, flags, domid)`.
///
/// # Safety
/// As [`update_va_mapping`].
pub unsafe fn update_va_mapping_otherdomain(va: u64, pte: u64, flags: u64, domid: u64) -> i64 {
    // SAFETY: the caller's contract.
    unsafe {
        raw::hypercall4(
            u64::from(Hypercall::UpdateVaMappingOtherdomain.number()),
            va,
            pte,
            flags,
            domid,
        )
    }
}

/// `multicall(entries, nr)` with raw arguments.
///
/// # Safety
/// `entries` must be readable and writable for `nr` entries (or
/// deliberately bad), and every call in the batch must be sound as if made
/// on its own.
pub unsafe fn multicall_raw(entries: u64, nr: u64) -> i64 {
    // SAFETY: the caller's contract.
    unsafe { raw::hypercall2(u64::from(Hypercall::Multicall.number()), entries, nr) }
}

/// `multicall` of `entries`; each entry's `result` is written back.
///
/// # Safety
/// Every call in the batch must be sound as if made on its own.
pub unsafe fn multicall(entries: &mut [MulticallEntry]) -> i64 {
    // SAFETY: `entries` is exclusively borrowed for its length; the calls
    // are the caller's contract.
    unsafe { multicall_raw(addr_of_mut(entries), entries.len() as u64) }
}

/// `vm_assist(cmd, type)` with raw numbers (unknown ones included).
pub fn vm_assist_raw(cmd: u64, kind: u64) -> i64 {
    // SAFETY: vm_assist reads no guest memory; the assists only change how
    // the hypervisor handles later faults and updates.
    unsafe { raw::hypercall2(u64::from(Hypercall::VmAssist.number()), cmd, kind) }
}

/// `vm_assist(cmd, type)`.
pub fn vm_assist(cmd: VmAssistCmd, kind: VmAssistType) -> i64 {
    vm_assist_raw(cmd as u64, kind as u64)
}

/// `memory_op(cmd, arg)` with a raw argument.
///
/// # Safety
/// As [`raw::hypercall5`]: `arg` must be valid for what sub-op `cmd` reads
/// and writes (or deliberately bad); reservation sub-ops must not take
/// away frames the running code uses.
pub unsafe fn memory_op_raw(cmd: u64, arg: u64) -> i64 {
    // SAFETY: the caller's contract.
    unsafe { raw::hypercall2(u64::from(Hypercall::MemoryOp.number()), cmd, arg) }
}

/// `XENMEM_maximum_ram_page` (argument NULL).
pub fn maximum_ram_page() -> i64 {
    // SAFETY: the sub-op reads no argument.
    unsafe { memory_op_raw(MemoryOpCmd::MaximumRamPage as u64, 0) }
}

/// A `memory_op` sub-op that takes a [`XenMemoryDomain`]
/// (`current_reservation`, `maximum_reservation`, `maximum_gpfn`).
pub fn memory_op_domain(cmd: MemoryOpCmd, domid: u16) -> i64 {
    let arg = XenMemoryDomain { domid };
    // SAFETY: these sub-ops only read the 2-byte `arg`.
    unsafe { memory_op_raw(cmd as u64, addr_of(&arg)) }
}

/// `XENMEM_machphys_mapping` into `out`.
pub fn machphys_mapping(out: &mut XenMachphysMapping) -> i64 {
    // SAFETY: the sub-op writes exactly one `XenMachphysMapping`.
    unsafe { memory_op_raw(MemoryOpCmd::MachphysMapping as u64, addr_of_mut(out)) }
}

/// `XENMEM_memory_map` into `entries`; returns the result and the number
/// of entries the hypervisor reports.
pub fn memory_map(entries: &mut [E820Entry]) -> (i64, u32) {
    map_op(MemoryOpCmd::MemoryMap, entries)
}

/// `XENMEM_machine_memory_map` into `entries` (hardware domain only):
/// the result and the entry count the hypervisor wrote back.
pub fn machine_memory_map(entries: &mut [E820Entry]) -> (i64, u32) {
    map_op(MemoryOpCmd::MachineMemoryMap, entries)
}

/// `memory_map` or `machine_memory_map` into `entries`.
fn map_op(cmd: MemoryOpCmd, entries: &mut [E820Entry]) -> (i64, u32) {
    let mut map = XenMemoryMap {
        nr_entries: u32::try_from(entries.len()).unwrap_or(u32::MAX),
        pad: 0,
        buffer: addr_of_mut(entries),
    };
    // SAFETY: the hypervisor writes at most `nr_entries` entries into the
    // exclusively borrowed `entries` and updates `map`.
    let ret = unsafe { memory_op_raw(cmd as u64, addr_of_mut(&mut map)) };
    (ret, map.nr_entries)
}

/// A reservation sub-op (`increase_reservation`, `decrease_reservation`,
/// `populate_physmap`) on `extents`.
///
/// # Safety
/// `decrease_reservation` must not free frames the running code uses (or
/// frames still mapped, which the hypervisor must refuse anyway).
pub unsafe fn reservation(
    cmd: MemoryOpCmd,
    extents: &mut [u64],
    extent_order: u32,
    mem_flags: u32,
    domid: u16,
) -> i64 {
    let mut arg = XenMemoryReservation {
        extent_start: addr_of_mut(extents),
        nr_extents: extents.len() as u64,
        extent_order,
        mem_flags,
        domid,
        pad: [0; 6],
    };
    // SAFETY: the hypervisor reads and writes at most `extents.len()`
    // entries of the exclusively borrowed `extents`; freeing is the
    // caller's contract.
    unsafe { memory_op_raw(cmd as u64, addr_of_mut(&mut arg)) }
}

/// `XENMEM_exchange` with `arg` (its lists are guest addresses in it);
/// `nr_exchanged` is updated in place.
///
/// # Safety
/// The `in` frames must not be ones the running code uses (the
/// hypervisor refuses mapped frames, but not the p2m's view of them), and
/// both lists must be valid for the extents they describe, or be bad on
/// purpose.
pub unsafe fn memory_exchange(arg: &mut XenMemoryExchange) -> i64 {
    // SAFETY: the caller's contract; the hypervisor writes the `out` list
    // and `nr_exchanged`.
    unsafe { memory_op_raw(MemoryOpCmd::Exchange as u64, addr_of_mut(arg)) }
}
