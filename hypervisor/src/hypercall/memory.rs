//! `memory_op`: reservations (ballooning), the physmap, and memory facts.
//!
//! Xen 4.17's `do_memory_op` (`xen/common/memory.c`) and the x86 part of
//! `arch_memory_op`, for PV domains (GMFN = MFN):
//!
//! | op | result |
//! |---|---|
//! | `increase_reservation` (0) | extents done; their MFNs written to `extent_start` (unless NULL) |
//! | `decrease_reservation` (1) | extents done; each GMFN's allocation is given back |
//! | `populate_physmap` (6) | extents done; GPFNs in, MFNs out, M2P set |
//! | `maximum_ram_page` (2) | `max_page` (frames the frame table covers) |
//! | `current_reservation` (3) | the domain's pages |
//! | `maximum_reservation` (4) | its page limit |
//! | `maximum_gpfn` (14) | `shared_info.arch.max_pfn - 1` (0 if unset) |
//! | `memory_map` (9) | 0; the domain's E820 |
//! | `machphys_mfn_list` (5) | 0; the frames of the M2P, one per 2 MiB |
//! | `machphys_mapping` (12) | 0; where the M2P is |
//! | `machphys_compat_mfn_list` (25) | `EOPNOTSUPP` (no 32-bit guests) |
//! | `exchange` (11) | 0; `in` extents traded for new `out` extents chunk by chunk, `nr_exchanged` written back (see `exchange`) |
//! | `add_to_physmap` (7) | `EACCES` for a PV domain, after Xen's checks (`EDOM`, `EFAULT`, `ENOSYS` foreign space, `ESRCH`) |
//!
//! The three reservation ops never fail: any problem (unreadable argument,
//! unknown domain, bad flags, no privilege, an extent order above the
//! caller's limit, an unreadable list entry, no memory) ends the operation
//! and the result is the number of extents done, counting from the start
//! extent in `cmd` bits 6 and up (`MEMOP_EXTENT_SHIFT`), which is honoured
//! as Xen's continuations use it. Extents of order > 0 need that many
//! contiguous, aligned free frames; when there are none, the operation
//! stops there, as Xen's allocator does.
//!
//! `memory_map` returns the map the domain was given, a single RAM entry
//! `[0, size)` (what libxl sets for a PV guest); a domain without one (the
//! PV dom0, as on Xen) gets `ENOSYS`. The x86 operations (5, 9, 12, 25)
//! match the whole `cmd` (a start extent makes them unknown, `ENOSYS`),
//! as Xen's `arch_memory_op` does. Other operations: `ENOSYS`.
#![forbid(unsafe_code)]

use dom0_abi::Errno;
use dom0_abi::layout::{
    MACH2PHYS_NR_ENTRIES, MACH2PHYS_VIRT_END, MACH2PHYS_VIRT_START, guest_addr_ok,
};
use dom0_abi::memory::{
    E820_RAM, E820Entry, MEMOP_CMD_MASK, MEMOP_EXTENT_SHIFT, MemoryOpCmd, XENMAPSPACE_GMFN_FOREIGN,
    XENMEMF_ADDRESS_BITS_MASK, XENMEMF_EXACT_NODE_REQUEST, XENMEMF_POPULATE_ON_DEMAND,
    XENMEMF_VNODE, XenAddToPhysmap, XenMemoryExchange, XenMemoryMap, XenMemoryReservation,
};
use dom0_abi::types::{DomId, Mfn};
use dom0_abi::wire::Wire;

use super::mmu::{Caller, MmuEnv};
use super::{read_struct, write_struct};
use crate::layout::guest_range_ok;
use crate::mm::effects::Effects;
use crate::mm::frame_table::Owner;
use crate::mm::types::Mmu;

/// Xen's `MAX_ORDER` on x86 (`CONFIG_PAGEALLOC_MAX_ORDER`, 2 * 9).
const MAX_ORDER: u32 = 18;
/// Largest extent order for an ordinary domain (`CONFIG_DOMU_MAX_ORDER`).
const DOMU_MAX_ORDER: u32 = 9;
/// For a domain with I/O rights (`CONFIG_PTDOM_MAX_ORDER` = hwdom's).
const PTDOM_MAX_ORDER: u32 = 12;
/// For the control domain (`CONFIG_CTLDOM_MAX_ORDER` = `MAX_ORDER`).
const CTLDOM_MAX_ORDER: u32 = MAX_ORDER;
/// NUMA nodes Xen knows (`MAX_NUMNODES` on x86); this machine has node 0.
const MAX_NUMNODES: u32 = 64;
/// `XENMEMF_get_node` of flags naming no node.
const NO_NODE: u32 = 0xFF;

/// `memory_op(cmd, arg)`; see the module documentation.
pub fn memory_op(
    env: &mut impl MmuEnv,
    fx: &mut Effects,
    cmd: u64,
    arg: u64,
) -> Result<u64, Errno> {
    let start = cmd >> MEMOP_EXTENT_SHIFT;
    match MemoryOpCmd::from_number(cmd & MEMOP_CMD_MASK) {
        Some(
            op @ (MemoryOpCmd::IncreaseReservation
            | MemoryOpCmd::DecreaseReservation
            | MemoryOpCmd::PopulatePhysmap),
        ) => Ok(reservation(env, fx, op, start, arg)),
        Some(MemoryOpCmd::MaximumRamPage) => {
            if start != 0 {
                return Err(Errno::EINVAL);
            }
            Ok(Mmu::new(env, fx).max_page())
        }
        Some(
            op @ (MemoryOpCmd::CurrentReservation
            | MemoryOpCmd::MaximumReservation
            | MemoryOpCmd::MaximumGpfn),
        ) => domain_query(env, op, start, arg),
        Some(MemoryOpCmd::AddToPhysmap) => add_to_physmap(env, start, arg),
        Some(MemoryOpCmd::Exchange) => exchange(env, fx, start, arg),
        _ => match MemoryOpCmd::from_number(cmd) {
            Some(MemoryOpCmd::MemoryMap) => memory_map(env, arg),
            Some(MemoryOpCmd::MachineMemoryMap) => machine_memory_map(env, arg),
            Some(MemoryOpCmd::MachphysMapping) => machphys_mapping(env, fx, arg),
            Some(MemoryOpCmd::MachphysMfnList) => machphys_mfn_list(env, fx, arg),
            Some(MemoryOpCmd::MachphysCompatMfnList) => Err(Errno::EOPNOTSUPP),
            _ => Err(Errno::ENOSYS),
        },
    }
}

/// `add_to_physmap`: only translated (HVM) domains have a physmap to add
/// to, so for a PV domain every space, `XENMAPSPACE_grant_table` among
/// them, ends in `EACCES` after Xen's checks: `EDOM` a start extent above
/// the 16-bit `size`, `EFAULT` an unreadable argument, `ENOSYS` the
/// foreign space (batch only), `ESRCH` no such domain.
fn add_to_physmap(env: &mut impl MmuEnv, start: u64, arg: u64) -> Result<u64, Errno> {
    if start > u64::from(u16::MAX) {
        return Err(Errno::EDOM);
    }
    let xatp: XenAddToPhysmap = read_struct(env, arg)?;
    if xatp.space == XENMAPSPACE_GMFN_FOREIGN {
        return Err(Errno::ENOSYS);
    }
    let caller = Caller::of(env)?;
    Caller::any(env, &caller, xatp.domid).ok_or(Errno::ESRCH)?;
    Err(Errno::EACCES)
}

/// Frames an `exchange` trades per invocation before it is continued
/// (at least one chunk is always done).
const EXCHANGE_BATCH_FRAMES: u64 = 512;
/// Where `nr_exchanged` lies in `xen_memory_exchange`.
const NR_EXCHANGED_OFFSET: u64 = 64;

/// A checked `xen_memory_exchange`, in chunks: a chunk is one extent of
/// the larger order, traded for the extents of the smaller order that
/// make it up.
#[derive(Clone, Copy, Debug)]
struct Exchange {
    input: XenMemoryReservation,
    output: XenMemoryReservation,
    /// `in` extents per chunk, as an order.
    in_chunk_order: u32,
    /// `out` extents per chunk, as an order.
    out_chunk_order: u32,
    /// `out` frames must lie below this frame number.
    limit: u64,
    /// The domain whose frames are traded.
    target: DomId,
}

/// `exchange` (Xen's `memory_exchange`): see [`MemoryOpCmd::Exchange`].
/// `nr_exchanged` is written back on every path after the argument was
/// read (unless nothing was left to do), and a failure to write it is
/// `EFAULT`. Kept out of line: inlined, it grows the hypercall dispatch
/// and slows every other call (the benchmarks measured it).
#[inline(never)]
fn exchange(env: &mut impl MmuEnv, fx: &mut Effects, start: u64, arg: u64) -> Result<u64, Errno> {
    if start != 0 {
        return Err(Errno::EINVAL);
    }
    let mut exch: XenMemoryExchange = read_struct(env, arg)?;
    let (input, output) = (exch.input, exch.output);
    let caller = Caller::of(env)?;
    let too_many = |order: u32, nr: u64| (u64::MAX >> order) < nr;
    let rc = if input.extent_order.max(output.extent_order) > max_order(&caller) {
        Err(Errno::EPERM)
    } else if exch.nr_exchanged > input.nr_extents
        || input.domid != output.domid
        || too_many(input.extent_order, input.nr_extents)
        || too_many(output.extent_order, output.nr_extents)
        || input.nr_extents << input.extent_order != output.nr_extents << output.extent_order
    {
        Err(Errno::EINVAL)
    } else if exch.nr_exchanged == input.nr_extents {
        return Ok(0);
    } else {
        exchange_checked(env, fx, &caller, &mut exch)
    };
    env.copy_to_guest(
        arg.wrapping_add(NR_EXCHANGED_OFFSET),
        &exch.nr_exchanged.to_le_bytes(),
    )?;
    if rc == Ok(false) {
        env.preempt([MemoryOpCmd::Exchange as u64, arg, 0, 0, 0]);
    }
    rc.map(|_| 0)
}

/// Xen's `guest_handle_subrange_okay` for entries `first..=last` of a
/// list of 8-byte entries.
fn subrange_ok(list: u64, first: u64, last: u64) -> bool {
    last.wrapping_sub(first).wrapping_add(1) < u64::MAX / 8 && list_ok(list, first)
}

/// The rest of `exchange` once the sizes agree: the lists, the domain and
/// the address bits, then the chunks from `nr_exchanged`. `Ok(true)`
/// when all are done, `Ok(false)` to be continued; `exch.nr_exchanged`
/// says how far it got either way.
fn exchange_checked(
    env: &mut impl MmuEnv,
    fx: &mut Effects,
    caller: &Caller,
    exch: &mut XenMemoryExchange,
) -> Result<bool, Errno> {
    let (input, output) = (exch.input, exch.output);
    let done = exch.nr_exchanged;
    if !subrange_ok(input.extent_start, done, input.nr_extents - 1) {
        return Err(Errno::EFAULT);
    }
    let (in_chunk_order, out_chunk_order, out_first) = if input.extent_order <= output.extent_order
    {
        let order = output.extent_order - input.extent_order;
        (order, 0, done >> order)
    } else {
        let order = input.extent_order - output.extent_order;
        (0, order, done << order)
    };
    if !subrange_ok(output.extent_start, out_first, output.nr_extents - 1) {
        return Err(Errno::EFAULT);
    }
    let target = Caller::any(env, caller, input.domid).ok_or(Errno::ESRCH)?;
    if !caller.may_act_on(Owner::Domain(target.id)) {
        return Err(Errno::EPERM);
    }
    // Xen's allocator: frames below 2^bits bytes; 13 bits or fewer leave
    // no zone to allocate from.
    let bits = output.mem_flags & XENMEMF_ADDRESS_BITS_MASK;
    let limit = match bits {
        0 => u64::MAX,
        1..=13 => 0,
        _ => 1u64.checked_shl(bits - 12).unwrap_or(u64::MAX),
    };
    let x = Exchange {
        input,
        output,
        in_chunk_order,
        out_chunk_order,
        limit,
        target: target.id,
    };
    let mut mmu = Mmu::new(env, fx);
    let first = done >> in_chunk_order;
    let chunk_frames = 1u64 << (in_chunk_order + input.extent_order);
    for i in first..input.nr_extents >> in_chunk_order {
        if (i - first) * chunk_frames >= EXCHANGE_BATCH_FRAMES {
            exch.nr_exchanged = i << in_chunk_order;
            return Ok(false);
        }
        if let Err(e) = exchange_chunk(&mut mmu, &x, i) {
            exch.nr_exchanged = i << in_chunk_order;
            return Err(e);
        }
    }
    exch.nr_exchanged = input.nr_extents;
    Ok(true)
}

/// Reads `in` list entry `index` (a GMFN).
fn in_entry<M: MmuEnv>(mmu: &mut Mmu<'_, M>, x: &Exchange, index: u64) -> Result<u64, Errno> {
    read_entry(mmu, x.input.extent_start, index).ok_or(Errno::EFAULT)
}

/// Trades chunk `i`: steals its `in` frames, allocates its `out` extents,
/// then frees the first and gives the domain the second. A failure before
/// the trade gives the stolen frames back and frees what was allocated;
/// a fault on the `out` list after it is `EFAULT` with the chunk traded.
fn exchange_chunk<M: MmuEnv>(mmu: &mut Mmu<'_, M>, x: &Exchange, i: u64) -> Result<(), Errno> {
    let dom = x.target;
    let in_first = i << x.in_chunk_order;
    let in_entries = 1u64 << x.in_chunk_order;
    let in_pages = 1u64 << x.input.extent_order;
    let mut stolen = 0u64;
    let mut failure = None;
    'steal: for j in 0..in_entries {
        let gmfn = match in_entry(mmu, x, in_first + j) {
            Ok(gmfn) => gmfn,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        for k in 0..in_pages {
            if let Err(e) = mmu.steal(dom, gmfn.wrapping_add(k)) {
                failure = Some(e);
                break 'steal;
            }
            stolen += 1;
        }
    }
    // The out extents allocated so far, chained through the first word of
    // each extent's first frame (MFN + 1; 0 ends the chain): the frames
    // are the hypervisor's until they are assigned.
    let mut chain = 0u64;
    if failure.is_none() {
        for _ in 0..1u64 << x.out_chunk_order {
            let Some(mfn) = mmu.machine.alloc_frames(x.output.extent_order, x.limit) else {
                failure = Some(Errno::ENOMEM);
                break;
            };
            mmu.machine.write_pte(mfn, 0, chain);
            chain = mfn.0 + 1;
        }
    }
    settle_chunk(mmu, x, in_first, stolen, failure.is_some());
    if let Some(e) = failure {
        while let Some(mfn) = unchain(mmu, &mut chain) {
            for f in 0..1u64 << x.output.extent_order {
                mmu.machine.free_frame(Mfn(mfn.0 + f));
            }
        }
        return Err(e);
    }
    // The chain runs from the last extent allocated to the first.
    let out_pages = 1u64 << x.output.extent_order;
    let out_first = i << x.out_chunk_order;
    let mut rc = Ok(());
    let mut j = 1u64 << x.out_chunk_order;
    while let Some(mfn) = unchain(mmu, &mut chain) {
        j -= 1;
        let at = out_first + j;
        let gpfn = read_entry(mmu, x.output.extent_start, at);
        if gpfn.is_none() {
            rc = Err(Errno::EFAULT);
        }
        for f in 0..out_pages {
            let pfn = gpfn.map(|p| p.wrapping_add(f));
            if mmu.assign(Mfn(mfn.0 + f), dom, pfn).is_err() {
                mmu.fx.crash = true;
            }
        }
        if gpfn.is_some() && !write_entry(mmu, x.output.extent_start, at, mfn.0) {
            rc = Err(Errno::EFAULT);
        }
    }
    rc
}

/// Takes the next extent off an allocation chain, clearing its link.
fn unchain<M: MmuEnv>(mmu: &mut Mmu<'_, M>, chain: &mut u64) -> Option<Mfn> {
    let mfn = Mfn(chain.checked_sub(1)?);
    *chain = mmu.machine.read_pte(mfn, 0);
    mmu.machine.write_pte(mfn, 0, 0);
    Some(mfn)
}

/// Ends the steal of chunk `in_first`'s `stolen` frames: gives them back
/// (`keep`) or frees them. The `in` list is read again; frames it no
/// longer names (the guest changed it meanwhile) are found by a scan.
fn settle_chunk<M: MmuEnv>(
    mmu: &mut Mmu<'_, M>,
    x: &Exchange,
    in_first: u64,
    stolen: u64,
    keep: bool,
) {
    let dom = x.target;
    let mut settled = 0u64;
    'list: for j in 0..1u64 << x.in_chunk_order {
        let Ok(gmfn) = in_entry(mmu, x, in_first + j) else {
            break;
        };
        for k in 0..1u64 << x.input.extent_order {
            if settled == stolen {
                break 'list;
            }
            if mmu.settle_stolen(dom, gmfn.wrapping_add(k), keep) {
                settled += 1;
            }
        }
    }
    if settled != stolen {
        mmu.settle_all_stolen(dom, keep);
    }
}

/// `current_reservation`, `maximum_reservation`, `maximum_gpfn`: `EINVAL`
/// with a start extent, `EFAULT` unreadable `domid`, `ESRCH` no such
/// domain, `EPERM` another domain without privilege.
fn domain_query(
    env: &mut impl MmuEnv,
    op: MemoryOpCmd,
    start: u64,
    arg: u64,
) -> Result<u64, Errno> {
    if start != 0 {
        return Err(Errno::EINVAL);
    }
    let mut b = [0; 2];
    env.copy_from_guest(arg, &mut b)?;
    let caller = Caller::of(env)?;
    let target = Caller::any(env, &caller, u16::from_le_bytes(b)).ok_or(Errno::ESRCH)?;
    if !caller.may_act_on(Owner::Domain(target.id)) {
        return Err(Errno::EPERM);
    }
    Ok(match op {
        MemoryOpCmd::CurrentReservation => target.mm.tot_pages,
        MemoryOpCmd::MaximumReservation => target.mm.max_pages,
        _ => env.shared_max_pfn(target.id).max(1) - 1,
    })
}

/// `memory_map`: `EFAULT` for an unreadable argument or an unwritable
/// buffer, `ENOSYS` when the domain has no map.
fn memory_map(env: &mut impl MmuEnv, arg: u64) -> Result<u64, Errno> {
    let mut map = [0u8; 16];
    env.copy_from_guest(arg, &mut map)?;
    let caller = Caller::of(env)?;
    let size = caller.mm.memory_map.ok_or(Errno::ENOSYS)?;
    let wanted = u32::from_le_bytes([map[0], map[1], map[2], map[3]]);
    let n = wanted.min(1);
    if n > 0 {
        let buffer = u64::from_le_bytes(map[8..16].try_into().map_err(|_| Errno::EFAULT)?);
        let mut entry = [0u8; 20];
        entry[8..16].copy_from_slice(&size.to_le_bytes());
        entry[16..20].copy_from_slice(&E820_RAM.to_le_bytes());
        env.copy_to_guest(buffer, &entry)?;
    }
    map[0..4].copy_from_slice(&n.to_le_bytes());
    env.copy_to_guest(arg, &map)?;
    Ok(0)
}

/// `machine_memory_map`: the machine's memory map as the boot loader gave
/// it, for the hardware domain (`EPERM` for others), with Xen 4.17's
/// checks: `EFAULT` for an unreadable argument or a buffer reaching the
/// hypervisor's range, `EINVAL` for a buffer with room for fewer than one
/// entry more than the map has. A NULL buffer asks for the count only.
/// A fault writing an entry is ignored, as on Xen; one writing the count
/// back is `EFAULT`.
fn machine_memory_map(env: &mut impl MmuEnv, arg: u64) -> Result<u64, Errno> {
    if !Caller::of(env)?.mm.privileged() {
        return Err(Errno::EPERM);
    }
    let mut map: XenMemoryMap = read_struct(env, arg)?;
    let entries = env.host().machine_map;
    let store = map.buffer != 0;
    if store {
        let room = u64::from(map.nr_entries);
        if room < entries.len() as u64 + 1 {
            return Err(Errno::EINVAL);
        }
        if !guest_range_ok(map.buffer, room * E820Entry::SIZE as u64) {
            return Err(Errno::EFAULT);
        }
        for (i, entry) in (0u64..).zip(entries) {
            // As on Xen: the entry is the guest's business once the
            // buffer was found acceptable.
            let _ = write_struct(env, map.buffer + i * E820Entry::SIZE as u64, entry);
        }
    }
    map.nr_entries = u32::try_from(entries.len()).map_err(|_| Errno::EINVAL)?;
    write_struct(env, arg, &map)?;
    Ok(0)
}

/// `machphys_mapping`: the M2P's virtual range and the largest MFN it
/// covers (the hardware domain is told `max_page - 1`, others the size of
/// the window, as on Xen). `EFAULT` for an unwritable argument.
fn machphys_mapping(env: &mut impl MmuEnv, fx: &mut Effects, arg: u64) -> Result<u64, Errno> {
    let caller = Caller::of(env)?;
    let max_mfn = if caller.mm.privileged() {
        Mmu::new(env, fx).max_page().saturating_sub(1)
    } else {
        MACH2PHYS_NR_ENTRIES - 1
    };
    let mut out = [0u8; 24];
    out[0..8].copy_from_slice(&MACH2PHYS_VIRT_START.to_le_bytes());
    out[8..16].copy_from_slice(&MACH2PHYS_VIRT_END.to_le_bytes());
    out[16..24].copy_from_slice(&max_mfn.to_le_bytes());
    env.copy_to_guest(arg, &out)?;
    Ok(0)
}

/// M2P entries in one 2 MiB chunk of the table.
const M2P_ENTRIES_PER_CHUNK: u64 = (2 << 20) / 8;

/// `machphys_mfn_list`: the first frame of each 2 MiB chunk of the M2P
/// that covers `max_page` entries, at most `max_extents` of them. `EFAULT`
/// for an unreadable argument or an unwritable list.
fn machphys_mfn_list(env: &mut impl MmuEnv, fx: &mut Effects, arg: u64) -> Result<u64, Errno> {
    let mut xmml = [0u8; 24];
    env.copy_from_guest(arg, &mut xmml)?;
    let max_extents = u32::from_le_bytes([xmml[0], xmml[1], xmml[2], xmml[3]]);
    let list = u64::from_le_bytes(xmml[8..16].try_into().map_err(|_| Errno::EFAULT)?);
    let entries = Mmu::new(env, fx).max_page();
    let mut i = 0u32;
    let mut last = Mfn(0);
    while i != max_extents && u64::from(i) * M2P_ENTRIES_PER_CHUNK < entries {
        let mfn = env
            .m2p_frame(u64::from(i) * M2P_ENTRIES_PER_CHUNK)
            .unwrap_or(last);
        let at = list.wrapping_add(u64::from(i) * 8);
        env.copy_to_guest(at, &mfn.0.to_le_bytes())?;
        last = mfn;
        i += 1;
    }
    xmml[16..20].copy_from_slice(&i.to_le_bytes());
    env.copy_to_guest(arg, &xmml)?;
    Ok(0)
}

/// A decoded `xen_memory_reservation` for one of the three reservation
/// operations.
#[derive(Clone, Copy, Debug)]
struct Reservation {
    /// Guest pointer to the extent list (may be NULL for increase).
    list: u64,
    /// Extents in the list.
    nr: u64,
    /// Each extent is `2^order` frames.
    order: u32,
    /// Frames must lie below this frame number.
    limit: u64,
    /// An exact NUMA node other than 0 was asked for: nothing can be
    /// allocated.
    impossible_node: bool,
    /// `XENMEMF_populate_on_demand`.
    pod: bool,
    /// The domain making the call.
    caller: Caller,
    /// The domain the extents are for.
    target: Caller,
}

/// The three reservation operations: returns the extents done (from
/// `start`), never an error.
fn reservation(
    env: &mut impl MmuEnv,
    fx: &mut Effects,
    op: MemoryOpCmd,
    start: u64,
    arg: u64,
) -> u64 {
    let Some(r) = decode_reservation(env, fx, op, start, arg) else {
        return start;
    };
    let mut mmu = Mmu::new(env, fx);
    match op {
        MemoryOpCmd::IncreaseReservation => increase(&mut mmu, &r, start),
        MemoryOpCmd::DecreaseReservation => decrease(&mut mmu, &r, start),
        _ => populate(&mut mmu, &r, start),
    }
}

fn decode_reservation(
    env: &mut impl MmuEnv,
    fx: &mut Effects,
    op: MemoryOpCmd,
    start: u64,
    arg: u64,
) -> Option<Reservation> {
    let r: XenMemoryReservation = read_struct(env, arg).ok()?;
    let (list, nr, order, flags, domid) = (
        r.extent_start,
        r.nr_extents,
        r.extent_order,
        r.mem_flags,
        r.domid,
    );
    // The continuation must be able to encode the start extent.
    if nr > u64::from(u32::MAX >> MEMOP_EXTENT_SHIFT) || start >= nr {
        return None;
    }
    let caller = Caller::of(env).ok()?;
    let target = Caller::any(env, &caller, domid)?;
    let max_page = Mmu::new(env, fx).max_page();
    let bits = flags & XENMEMF_ADDRESS_BITS_MASK;
    let mut limit = u64::MAX;
    if bits != 0 && u64::from(bits) < u64::from(order_of(max_page)) + 12 {
        if bits <= 12 {
            return None;
        }
        limit = 1 << (bits - 12);
    }
    let mut impossible_node = false;
    if flags & XENMEMF_VNODE == 0 {
        // Xen's `propagate_node`: this machine is one node, node 0.
        let node = ((flags >> 8).wrapping_sub(1)) & 0xFF;
        let exact = flags & XENMEMF_EXACT_NODE_REQUEST != 0;
        if node != NO_NODE {
            if caller.mm.privileged() {
                if node >= MAX_NUMNODES {
                    return None;
                }
                impossible_node = exact && node != 0;
            } else if exact {
                return None;
            }
        }
    }
    if !caller.may_act_on(Owner::Domain(target.id)) {
        return None;
    }
    Some(Reservation {
        list,
        nr,
        order,
        limit,
        impossible_node,
        pod: op == MemoryOpCmd::PopulatePhysmap && flags & XENMEMF_POPULATE_ON_DEMAND != 0,
        caller,
        target,
    })
}

/// Xen's `get_order_from_pages`: the smallest order with `2^order >= n`.
fn order_of(n: u64) -> u32 {
    match n {
        0 | 1 => 0,
        _ => 64 - (n - 1).leading_zeros(),
    }
}

/// Xen's `max_order(current->domain)`.
fn max_order(caller: &Caller) -> u32 {
    let mut order = DOMU_MAX_ORDER;
    if caller.mm.io_caps {
        order = order.max(PTDOM_MAX_ORDER);
    }
    if caller.mm.privileged() {
        order = order.max(CTLDOM_MAX_ORDER);
    }
    order.min(MAX_ORDER)
}

/// Xen's `guest_handle_subrange_okay` for the list from entry `first`.
fn list_ok(list: u64, first: u64) -> bool {
    guest_addr_ok(list.wrapping_add(first.wrapping_mul(8)))
}

fn read_entry<M: MmuEnv>(mmu: &mut Mmu<'_, M>, list: u64, i: u64) -> Option<u64> {
    let mut b = [0; 8];
    mmu.machine
        .copy_from_guest(list.wrapping_add(i.wrapping_mul(8)), &mut b)
        .ok()?;
    Some(u64::from_le_bytes(b))
}

fn write_entry<M: MmuEnv>(mmu: &mut Mmu<'_, M>, list: u64, i: u64, value: u64) -> bool {
    mmu.machine
        .copy_to_guest(list.wrapping_add(i.wrapping_mul(8)), &value.to_le_bytes())
        .is_ok()
}

/// Allocates one extent for `r.target` (Xen's `alloc_domheap_pages`): the
/// domain's page limit, then the allocator; each frame is assigned with
/// M2P entry `pfn + j` (or invalid).
fn alloc_extent<M: MmuEnv>(mmu: &mut Mmu<'_, M>, r: &Reservation, pfn: Option<u64>) -> Option<Mfn> {
    let pages = 1u64 << r.order;
    let mm = mmu.machine.domain_mm(r.target.id)?;
    if mm.tot_pages.saturating_add(pages) > mm.max_pages || r.impossible_node {
        return None;
    }
    let first = mmu.machine.alloc_frames(r.order, r.limit)?;
    for j in 0..pages {
        let mfn = Mfn(first.0 + j);
        if mmu
            .assign(mfn, r.target.id, pfn.map(|p| p.wrapping_add(j)))
            .is_err()
        {
            // The allocator handed out a frame the table says is in use:
            // give back the rest and stop.
            mmu.fx.crash = true;
            for k in j..pages {
                mmu.machine.free_frame(Mfn(first.0 + k));
            }
            return None;
        }
    }
    Some(first)
}

fn increase<M: MmuEnv>(mmu: &mut Mmu<'_, M>, r: &Reservation, start: u64) -> u64 {
    if r.list != 0 && !list_ok(r.list, start) {
        return start;
    }
    if r.order > max_order(&r.caller) {
        return start;
    }
    let mut i = start;
    while i < r.nr {
        let Some(mfn) = alloc_extent(mmu, r, None) else {
            break;
        };
        if r.list != 0 && !write_entry(mmu, r.list, i, mfn.0) {
            break;
        }
        i += 1;
    }
    i
}

fn decrease<M: MmuEnv>(mmu: &mut Mmu<'_, M>, r: &Reservation, start: u64) -> u64 {
    if !list_ok(r.list, start) || r.order > max_order(&r.caller) {
        return start;
    }
    let mut i = start;
    while i < r.nr {
        let Some(gmfn) = read_entry(mmu, r.list, i) else {
            break;
        };
        for j in 0..1u64 << r.order {
            if mmu.remove_page(r.target.id, gmfn.wrapping_add(j)).is_err() {
                return i;
            }
        }
        i += 1;
    }
    i
}

fn populate<M: MmuEnv>(mmu: &mut Mmu<'_, M>, r: &Reservation, start: u64) -> u64 {
    let limit = if r.pod {
        MAX_ORDER
    } else {
        max_order(&r.caller)
    };
    if !list_ok(r.list, start) || r.order > limit {
        return start;
    }
    let mut i = start;
    while i < r.nr {
        let Some(gpfn) = read_entry(mmu, r.list, i) else {
            break;
        };
        if r.pod {
            // Populate-on-demand exists for HVM guests only: refused on
            // oneself, and a no-op for a PV target.
            if r.target.id == r.caller.id {
                break;
            }
            i += 1;
            continue;
        }
        let Some(mfn) = alloc_extent(mmu, r, Some(gpfn)) else {
            break;
        };
        if !write_entry(mmu, r.list, i, mfn.0) {
            break;
        }
        i += 1;
    }
    i
}

#[cfg(test)]
#[allow(
    clippy::cast_possible_truncation,
    reason = "test fixtures use small frame numbers"
)]
mod tests {
    use super::*;
    use crate::mm::INVALID_M2P_ENTRY;
    use crate::mm::fake::{BASE, DOM, FakeMachine, OTHER};
    use dom0_abi::types::DomId;

    const ARG: u64 = BASE;
    const LIST: u64 = BASE + 0x100;

    fn op(m: &mut FakeMachine, cmd: u64, arg: u64) -> Result<u64, Errno> {
        let mut fx = Effects::default();
        memory_op(m, &mut fx, cmd, arg)
    }

    fn reservation_arg(
        m: &mut FakeMachine,
        list: u64,
        nr: u64,
        order: u32,
        flags: u32,
        domid: u16,
    ) {
        let mut b = [0u8; 32];
        b[0..8].copy_from_slice(&list.to_le_bytes());
        b[8..16].copy_from_slice(&nr.to_le_bytes());
        b[16..20].copy_from_slice(&order.to_le_bytes());
        b[20..24].copy_from_slice(&flags.to_le_bytes());
        b[24..26].copy_from_slice(&domid.to_le_bytes());
        m.poke(ARG, &b);
    }

    fn list(m: &mut FakeMachine, values: &[u64]) {
        for (i, v) in values.iter().enumerate() {
            m.poke(LIST + 8 * i as u64, &v.to_le_bytes());
        }
    }

    fn list_at(m: &FakeMachine, i: u64) -> u64 {
        m.peek_u64(LIST + 8 * i)
    }

    const SELF: u16 = DomId::SELF.0;

    #[test]
    fn facts() {
        let mut m = FakeMachine::new(40);
        assert_eq!(op(&mut m, 2, 0), Ok(40));
        assert_eq!(op(&mut m, 2 | (1 << 6), 0), Err(Errno::EINVAL));
        m.give(DOM);
        m.give(DOM);
        for (domid, expect) in [
            (SELF, Ok(2)),
            (0, Ok(2)),
            (1, Ok(0)),
            (7, Err(Errno::ESRCH)),
        ] {
            m.poke(ARG, &domid.to_le_bytes());
            assert_eq!(op(&mut m, 3, ARG), expect, "domid {domid}");
        }
        m.poke(ARG, &SELF.to_le_bytes());
        assert_eq!(op(&mut m, 4, ARG), Ok(u64::from(u32::MAX)));
        assert_eq!(op(&mut m, 14, ARG), Ok(0));
        m.shared_max_pfn = 100;
        assert_eq!(op(&mut m, 14, ARG), Ok(99));
        assert_eq!(op(&mut m, 3, 0x10), Err(Errno::EFAULT));
        assert_eq!(op(&mut m, 3 | (3 << 6), ARG), Err(Errno::EINVAL));
        // An unprivileged domain asking about another.
        m.domain.id = OTHER;
        m.poke(ARG, &0u16.to_le_bytes());
        assert_eq!(op(&mut m, 4, ARG), Err(Errno::EPERM));
        m.poke(ARG, &SELF.to_le_bytes());
        assert_eq!(op(&mut m, 4, ARG), Ok(64));
    }

    #[test]
    fn machine_memory_map_as_xen_checks_it() {
        use crate::mm::fake::FAKE_MACHINE_MAP;
        let mut m = FakeMachine::new(40);
        let map = |m: &mut FakeMachine, n: u32, buffer: u64| {
            m.poke(ARG, &n.to_le_bytes());
            m.poke(ARG + 8, &buffer.to_le_bytes());
        };
        let n = FAKE_MACHINE_MAP.len() as u32;
        map(&mut m, n, LIST);
        assert_eq!(op(&mut m, 10, ARG), Err(Errno::EINVAL), "room for one more");
        map(&mut m, n + 1, LIST);
        assert_eq!(op(&mut m, 10, ARG), Ok(0));
        assert_eq!(m.peek_u32(ARG), n);
        for (i, want) in FAKE_MACHINE_MAP.iter().enumerate() {
            let at = LIST + i as u64 * 20;
            let got = (m.peek_u64(at), m.peek_u64(at + 8), m.peek_u32(at + 16));
            assert_eq!(got, (want.addr, want.size, want.kind), "entry {i}");
        }
        map(&mut m, 0, 0);
        assert_eq!(
            op(&mut m, 10, ARG),
            Ok(0),
            "a NULL buffer asks for the count"
        );
        assert_eq!(m.peek_u32(ARG), n);
        map(&mut m, 100, 0xffff_8000_0000_0000 - 40);
        assert_eq!(op(&mut m, 10, ARG), Err(Errno::EFAULT));
        map(&mut m, 100, 0x10);
        assert_eq!(op(&mut m, 10, ARG), Ok(0), "entries that fault are dropped");
        assert_eq!(op(&mut m, 10, 0x10), Err(Errno::EFAULT));
    }

    #[test]
    fn memory_map_and_machphys_mapping() {
        let mut m = FakeMachine::new(40);
        let map = |m: &mut FakeMachine, n: u32, buffer: u64| {
            m.poke(ARG, &n.to_le_bytes());
            m.poke(ARG + 8, &buffer.to_le_bytes());
        };
        map(&mut m, 4, LIST);
        assert_eq!(
            op(&mut m, 9, ARG),
            Err(Errno::ENOSYS),
            "dom0 has no map, as on Xen"
        );
        m.domains.get_mut(&DOM.0).unwrap().memory_map = Some(64 << 20);
        assert_eq!(op(&mut m, 9, ARG), Ok(0));
        assert_eq!(m.peek_u32(ARG), 1);
        assert_eq!((m.peek_u64(LIST), m.peek_u64(LIST + 8)), (0, 64 << 20));
        assert_eq!(m.peek_u32(LIST + 16), E820_RAM);
        map(&mut m, 0, 0x10);
        assert_eq!(op(&mut m, 9, ARG), Ok(0));
        assert_eq!(m.peek_u32(ARG), 0);
        map(&mut m, 1, 0x10);
        assert_eq!(op(&mut m, 9, ARG), Err(Errno::EFAULT));
        assert_eq!(op(&mut m, 9, 0x10), Err(Errno::EFAULT));
        assert_eq!(op(&mut m, 9 | (1 << 6), ARG), Err(Errno::ENOSYS));
        // machphys_mapping.
        assert_eq!(op(&mut m, 12, ARG), Ok(0));
        assert_eq!(m.peek_u64(ARG), MACH2PHYS_VIRT_START);
        assert_eq!(m.peek_u64(ARG + 8), MACH2PHYS_VIRT_END);
        assert_eq!(m.peek_u64(ARG + 16), 39);
        m.domain.id = OTHER;
        assert_eq!(op(&mut m, 12, ARG), Ok(0));
        assert_eq!(m.peek_u64(ARG + 16), MACH2PHYS_NR_ENTRIES - 1);
        assert_eq!(op(&mut m, 12, 0x10), Err(Errno::EFAULT));
        assert_eq!(op(&mut m, 12 | (1 << 6), ARG), Err(Errno::ENOSYS));
        assert_eq!(
            op(&mut m, 10, ARG),
            Err(Errno::EPERM),
            "not the hardware domain"
        );
        for unknown in [8, 13, 15, 28, 63] {
            assert_eq!(op(&mut m, unknown, ARG), Err(Errno::ENOSYS), "op {unknown}");
        }
        assert_eq!(op(&mut m, 25, 0), Err(Errno::EOPNOTSUPP));
        assert_eq!(op(&mut m, 25 | (1 << 6), 0), Err(Errno::ENOSYS));
        // add_to_physmap: a PV domain has no physmap.
        let xatp = |m: &mut FakeMachine, domid: u16, space: u32| {
            m.poke(ARG, &domid.to_le_bytes());
            m.poke(ARG + 4, &space.to_le_bytes());
        };
        xatp(&mut m, SELF, 1);
        assert_eq!(op(&mut m, 7, ARG), Err(Errno::EACCES));
        assert_eq!(op(&mut m, 7 | (1 << 6), ARG), Err(Errno::EACCES));
        assert_eq!(op(&mut m, 7 | (0x1_0000 << 6), ARG), Err(Errno::EDOM));
        assert_eq!(op(&mut m, 7, 0x10), Err(Errno::EFAULT));
        xatp(&mut m, SELF, 4);
        assert_eq!(op(&mut m, 7, ARG), Err(Errno::ENOSYS));
        xatp(&mut m, 0x1234, 1);
        assert_eq!(op(&mut m, 7, ARG), Err(Errno::ESRCH));
        // machphys_mfn_list: one frame per 2 MiB of M2P (40 entries: one).
        m.poke(ARG, &8u32.to_le_bytes());
        m.poke(ARG + 8, &LIST.to_le_bytes());
        m.poke(ARG + 16, &0xFFu32.to_le_bytes());
        assert_eq!(op(&mut m, 5, ARG), Ok(0));
        assert_eq!((m.peek_u32(ARG + 16), m.peek_u64(LIST)), (1, 0x1000));
        m.poke(ARG, &0u32.to_le_bytes());
        assert_eq!(op(&mut m, 5, ARG), Ok(0));
        assert_eq!(m.peek_u32(ARG + 16), 0);
        m.poke(ARG, &1u32.to_le_bytes());
        m.poke(ARG + 8, &0x10u64.to_le_bytes());
        assert_eq!(op(&mut m, 5, ARG), Err(Errno::EFAULT));
        assert_eq!(op(&mut m, 5, 0x10), Err(Errno::EFAULT));
    }

    const IN: u64 = BASE + 0x1000;
    const OUT: u64 = BASE + 0x4000;

    /// Writes an exchange argument: `ins` (GMFNs) of order `in_order` for
    /// `outs` (GPFNs) of order `out_order` with `flags`, for `domid`.
    #[allow(clippy::too_many_arguments, reason = "one per field")]
    fn exchange_arg(
        m: &mut FakeMachine,
        ins: &[u64],
        in_order: u32,
        outs: &[u64],
        out_order: u32,
        flags: u32,
        domid: u16,
        done: u64,
    ) {
        let mut b = [0u8; 72];
        for (at, list, values, order, flags) in
            [(0, IN, ins, in_order, 0), (32, OUT, outs, out_order, flags)]
        {
            b[at..at + 8].copy_from_slice(&list.to_le_bytes());
            b[at + 8..at + 16].copy_from_slice(&(values.len() as u64).to_le_bytes());
            b[at + 16..at + 20].copy_from_slice(&order.to_le_bytes());
            b[at + 20..at + 24].copy_from_slice(&flags.to_le_bytes());
            b[at + 24..at + 26].copy_from_slice(&domid.to_le_bytes());
            for (i, v) in values.iter().enumerate() {
                m.poke(list + 8 * i as u64, &v.to_le_bytes());
            }
        }
        b[64..72].copy_from_slice(&done.to_le_bytes());
        m.poke(ARG, &b);
    }

    fn exchanged(m: &FakeMachine) -> u64 {
        m.peek_u64(ARG + 64)
    }

    #[test]
    fn exchange_trades_frames_for_a_contiguous_extent_below_the_limit() {
        let mut m = FakeMachine::new(64);
        // Take the low frames so that the domain's own lie above 32.
        let low: Vec<Mfn> = (0..32).map(|_| m.give(OTHER)).collect();
        let ins: Vec<u64> = (0..4).map(|_| m.give(DOM).0).collect();
        assert!(ins.iter().all(|&f| f >= 32));
        for f in &low[8..16] {
            m.with(|mmu| mmu.remove_page(OTHER, f.0)).0.unwrap();
        }
        let tot = m.tot_pages(DOM);
        // Address bits 17: below frame 32, as one order-2 extent.
        exchange_arg(&mut m, &ins, 0, &[100], 2, 17, SELF, 0);
        assert_eq!(op(&mut m, 11, ARG), Ok(0));
        assert_eq!(exchanged(&m), 4);
        let mfn = m.peek_u64(OUT);
        assert!(mfn < 32 && mfn.is_multiple_of(4), "{mfn}");
        for f in 0..4 {
            assert_eq!(m.m2p[(mfn + f) as usize], 100 + f);
            assert_eq!(m.info(Mfn(mfn + f)).owner(), Owner::Domain(DOM));
            assert_eq!(m.get(Mfn(mfn + f), 0), 0, "no allocation link left");
        }
        for f in &ins {
            assert!(m.free.contains(f), "frame {f} given up");
            assert_eq!(m.m2p[*f as usize], INVALID_M2P_ENTRY);
        }
        assert_eq!(m.tot_pages(DOM), tot, "the page count does not change");
        // Back again: one order-2 extent for four single frames.
        exchange_arg(&mut m, &[mfn], 2, &[7, 8, 9, 10], 0, 0, SELF, 0);
        assert_eq!(op(&mut m, 11, ARG), Ok(0));
        assert_eq!(exchanged(&m), 1);
        for i in 0..4 {
            assert_eq!(m.m2p[list_at_of(&m, OUT, i) as usize], 7 + i);
        }
        assert_eq!(m.tot_pages(DOM), tot);
        // Nothing left to do: 0, nothing written.
        exchange_arg(&mut m, &[mfn], 2, &[7, 8, 9, 10], 0, 0, SELF, 1);
        assert_eq!(op(&mut m, 11, ARG), Ok(0));
        m.check_invariants(&[]);
    }

    fn list_at_of(m: &FakeMachine, list: u64, i: u64) -> u64 {
        m.peek_u64(list + 8 * i)
    }

    #[test]
    fn exchange_checks_as_xen() {
        let mut m = FakeMachine::new(64);
        let ins: Vec<u64> = (0..4).map(|_| m.give(DOM).0).collect();
        let check = |m: &mut FakeMachine, cmd: u64, want: Result<u64, Errno>, done: u64, why| {
            assert_eq!(op(m, cmd, ARG), want, "{why}");
            assert_eq!(exchanged(m), done, "{why}");
        };
        exchange_arg(&mut m, &ins, 0, &[0; 4], 0, 0, SELF, 0);
        check(&mut m, 11 | (1 << 6), Err(Errno::EINVAL), 0, "start extent");
        exchange_arg(&mut m, &ins, 0, &[0; 4], 0, 0, SELF, 5);
        check(&mut m, 11, Err(Errno::EINVAL), 5, "nr_exchanged too big");
        exchange_arg(&mut m, &ins, 0, &[0; 2], 0, 0, SELF, 0);
        check(&mut m, 11, Err(Errno::EINVAL), 0, "sizes differ");
        exchange_arg(&mut m, &ins, 0, &[0; 4], 0, 0, SELF, 0);
        m.poke(ARG + 32 + 24, &0u16.to_le_bytes());
        check(&mut m, 11, Err(Errno::EINVAL), 0, "domids differ");
        exchange_arg(&mut m, &ins, 0, &[0], 19, 0, SELF, 0);
        m.poke(ARG + 32 + 8, &1u64.to_le_bytes());
        check(&mut m, 11, Err(Errno::EPERM), 0, "order above MAX_ORDER");
        exchange_arg(&mut m, &ins, 0, &[0; 4], 0, 0, 9, 0);
        check(&mut m, 11, Err(Errno::ESRCH), 0, "no such domain");
        exchange_arg(&mut m, &ins, 0, &[0; 4], 0, 13, SELF, 0);
        check(&mut m, 11, Err(Errno::ENOMEM), 0, "13 address bits");
        exchange_arg(&mut m, &ins, 0, &[0; 4], 0, 0, SELF, 0);
        m.poke(ARG, &0xffff_8000_0000_0000u64.to_le_bytes());
        check(
            &mut m,
            11,
            Err(Errno::EFAULT),
            0,
            "in list in the hypervisor",
        );
        assert_eq!(op(&mut m, 11, 0x10), Err(Errno::EFAULT));
        // A mapped frame: the first chunk goes through, the second not,
        // and its frames are the domain's again.
        let mapped = ins[2];
        assert!(
            m.with(|mmu| mmu.get_page(Mfn(mapped), Owner::Domain(DOM)))
                .0
        );
        assert_eq!(ins, [0, 1, 2, 3]);
        exchange_arg(&mut m, &[ins[0], ins[2]], 1, &[50, 52], 1, 0, SELF, 0);
        check(&mut m, 11, Err(Errno::EINVAL), 1, "a referenced frame");
        assert!(m.free.contains(&ins[0]) && m.free.contains(&ins[1]));
        for f in &ins[2..] {
            assert_eq!(m.info(Mfn(*f)).owner(), Owner::Domain(DOM));
            assert!(m.info(Mfn(*f)).is_allocated());
        }
        m.with(|mmu| mmu.put_page(Mfn(mapped)));
        // The same frame twice, a frame of nobody's, beyond the table.
        for bad in [[ins[2], ins[2]], [ins[2], 1], [ins[2], 1000]] {
            exchange_arg(&mut m, &bad, 0, &[0], 1, 0, SELF, 0);
            check(&mut m, 11, Err(Errno::EINVAL), 0, "bad in frame");
            assert!(m.info(Mfn(ins[2])).is_allocated());
        }
        // No memory: the frames stay.
        exchange_arg(&mut m, &ins[2..], 0, &[0], 1, 14, SELF, 0);
        m.free.retain(|&f| f >= 4);
        check(&mut m, 11, Err(Errno::ENOMEM), 0, "nothing below frame 4");
        // An unprivileged domain: another's frames, and order 10.
        m.domain.id = OTHER;
        exchange_arg(&mut m, &ins[2..], 0, &[0, 0], 0, 0, 0, 0);
        check(&mut m, 11, Err(Errno::EPERM), 0, "foreign domain");
        exchange_arg(&mut m, &ins[2..], 0, &[0], 10, 0, SELF, 0);
        m.poke(ARG + 8, &1024u64.to_le_bytes());
        check(&mut m, 11, Err(Errno::EPERM), 0, "order 10 for a domU");
        m.domain.id = DOM;
        // An unwritable out list: the chunk is traded, EFAULT.
        exchange_arg(&mut m, &ins[2..], 0, &[0, 0], 0, 0, SELF, 0);
        m.poke(ARG + 32, &0x10u64.to_le_bytes());
        check(&mut m, 11, Err(Errno::EFAULT), 0, "out list unwritable");
        assert!(m.free.contains(&ins[2]));
        m.check_invariants(&[]);
    }

    #[test]
    fn exchange_is_continued_after_a_batch() {
        let mut m = FakeMachine::new(1400);
        let ins: Vec<u64> = (0..600).map(|_| m.give(DOM).0).collect();
        let outs: Vec<u64> = (0..600).collect();
        exchange_arg(&mut m, &ins, 0, &outs, 0, 0, SELF, 0);
        assert_eq!(op(&mut m, 11, ARG), Ok(0));
        assert_eq!(exchanged(&m), EXCHANGE_BATCH_FRAMES);
        assert_eq!(m.preempted.take(), Some([11, ARG, 0, 0, 0]));
        assert_eq!(op(&mut m, 11, ARG), Ok(0));
        assert_eq!(exchanged(&m), 600);
        assert_eq!(m.preempted.take(), None);
        for i in 0..600 {
            assert_eq!(m.m2p[list_at_of(&m, OUT, i) as usize], i);
        }
        assert_eq!(m.tot_pages(DOM), 600);
        m.check_invariants(&[]);
    }

    #[test]
    fn balloon_out_and_back_in() {
        let mut m = FakeMachine::new(40);
        let frames: Vec<u64> = (0..4).map(|_| m.give(DOM).0).collect();
        let free = m.free.len();
        // decrease_reservation of the last three; the fourth entry is bad.
        reservation_arg(&mut m, LIST, 4, 0, 0, SELF);
        list(&mut m, &[frames[1], frames[2], frames[3], 39]);
        assert_eq!(op(&mut m, 1, ARG), Ok(3));
        assert_eq!(m.free.len(), free + 3);
        assert_eq!(m.tot_pages(DOM), 1);
        assert_eq!(m.m2p[frames[1] as usize], INVALID_M2P_ENTRY);
        // populate_physmap gives frames for the pseudo-physical pages back.
        reservation_arg(&mut m, LIST, 3, 0, 0, SELF);
        list(&mut m, &[101, 102, 103]);
        assert_eq!(op(&mut m, 6, ARG), Ok(3));
        for i in 0..3 {
            let mfn = list_at(&m, i);
            assert_eq!(m.m2p[mfn as usize], 101 + i);
            assert_eq!(
                m.info(Mfn(mfn)).owner(),
                crate::mm::frame_table::Owner::Domain(DOM)
            );
        }
        assert_eq!(m.tot_pages(DOM), 4);
        // increase_reservation hands out frames, M2P invalid; NULL list ok.
        reservation_arg(&mut m, LIST, 2, 0, 0, SELF);
        assert_eq!(op(&mut m, 0, ARG), Ok(2));
        assert_eq!(m.m2p[list_at(&m, 0) as usize], INVALID_M2P_ENTRY);
        reservation_arg(&mut m, 0, 2, 0, 0, SELF);
        assert_eq!(op(&mut m, 0, ARG), Ok(2));
        assert_eq!(m.tot_pages(DOM), 8);
        m.check_invariants(&[]);
    }

    #[test]
    fn extents_orders_and_continuations() {
        let mut m = FakeMachine::new(40);
        // Order 2: aligned runs of four frames.
        reservation_arg(&mut m, LIST, 2, 2, 0, SELF);
        list(&mut m, &[0, 4]);
        assert_eq!(op(&mut m, 6, ARG), Ok(2));
        assert_eq!(list_at(&m, 0) % 4, 0);
        assert_eq!(m.tot_pages(DOM), 8);
        // Order 4 needs an aligned run of 16 free frames: 40 frames with
        // 0-7 taken hold one (16-31), not two.
        reservation_arg(&mut m, LIST, 2, 4, 0, SELF);
        assert_eq!(op(&mut m, 0, ARG), Ok(1), "one run of 16 fits in 40 frames");
        assert_eq!(op(&mut m, 0, ARG), Ok(0), "no second one");
        // A start extent: the count includes the extents done before.
        reservation_arg(&mut m, LIST, 3, 0, 0, SELF);
        list(&mut m, &[7, 8, 9]);
        assert_eq!(op(&mut m, 6 | (2 << 6), ARG), Ok(3));
        assert_eq!(m.m2p[list_at(&m, 2) as usize], 9);
        assert_eq!(
            list_at(&m, 0),
            7,
            "extents before the start are not touched"
        );
        assert_eq!(op(&mut m, 6 | (3 << 6), ARG), Ok(3), "start >= nr_extents");
        // Orders above the caller's limit, or an unprivileged caller with
        // order 10: nothing.
        reservation_arg(&mut m, LIST, 1, 19, 0, SELF);
        assert_eq!(op(&mut m, 0, ARG), Ok(0));
        m.domain.id = OTHER;
        reservation_arg(&mut m, LIST, 1, 10, 0, SELF);
        assert_eq!(op(&mut m, 6, ARG), Ok(0));
        assert_eq!(op(&mut m, 1 | (5 << 6), 0x10), Ok(5), "unreadable argument");
        m.check_invariants(&[]);
    }

    #[test]
    fn limits_flags_and_targets() {
        let mut m = FakeMachine::new(40);
        // The privileged dom0 gives the other domain every free frame.
        reservation_arg(&mut m, 0, 100, 0, 0, 1);
        assert_eq!(op(&mut m, 0, ARG), Ok(40));
        assert_eq!(m.tot_pages(OTHER), 40);
        // Takes them all back, then only 10 fit under a limit of 10.
        m.domains.get_mut(&OTHER.0).unwrap().max_pages = 10;
        reservation_arg(&mut m, LIST, 40, 0, 0, 1);
        list(&mut m, &(0..40).collect::<Vec<_>>());
        assert_eq!(op(&mut m, 1, ARG), Ok(40));
        assert_eq!(m.tot_pages(OTHER), 0);
        reservation_arg(&mut m, 0, 12, 0, 0, 1);
        assert_eq!(op(&mut m, 0, ARG), Ok(10));
        // Unknown domain, or an unprivileged caller for another: 0 done.
        reservation_arg(&mut m, 0, 1, 0, 0, 9);
        assert_eq!(op(&mut m, 0, ARG), Ok(0));
        m.domain.id = OTHER;
        reservation_arg(&mut m, 0, 1, 0, 0, 0);
        assert_eq!(op(&mut m, 0, ARG), Ok(0));
        m.domain.id = DOM;
        // Address bits: below 2^(12+5) = frame 32; 12 bits or less refused.
        let mut m = FakeMachine::new(40);
        reservation_arg(&mut m, LIST, 40, 0, 17, SELF);
        assert_eq!(op(&mut m, 0, ARG), Ok(32));
        reservation_arg(&mut m, LIST, 1, 0, 12, SELF);
        assert_eq!(op(&mut m, 0, ARG), Ok(0));
        // NUMA flags: node 0 fine, an exact other node never satisfied,
        // node >= 64 refused; an unprivileged exact request refused.
        let mut m = FakeMachine::new(40);
        let node = |n: u32| (n + 1) << 8;
        reservation_arg(&mut m, 0, 1, 0, node(0) | XENMEMF_EXACT_NODE_REQUEST, SELF);
        assert_eq!(op(&mut m, 0, ARG), Ok(1));
        reservation_arg(&mut m, 0, 1, 0, node(3), SELF);
        assert_eq!(op(&mut m, 0, ARG), Ok(1));
        reservation_arg(&mut m, 0, 1, 0, node(3) | XENMEMF_EXACT_NODE_REQUEST, SELF);
        assert_eq!(op(&mut m, 0, ARG), Ok(0));
        reservation_arg(&mut m, 0, 1, 0, node(64), SELF);
        assert_eq!(op(&mut m, 0, ARG), Ok(0));
        m.domain.id = OTHER;
        reservation_arg(&mut m, 0, 1, 0, node(0) | XENMEMF_EXACT_NODE_REQUEST, SELF);
        assert_eq!(op(&mut m, 0, ARG), Ok(0));
        reservation_arg(&mut m, 0, 1, 0, node(0), SELF);
        assert_eq!(op(&mut m, 0, ARG), Ok(1));
        // Populate-on-demand on oneself does nothing; for a PV target it
        // counts the extents without populating.
        m.domain.id = DOM;
        reservation_arg(&mut m, LIST, 2, 0, XENMEMF_POPULATE_ON_DEMAND, SELF);
        list(&mut m, &[1, 2]);
        assert_eq!(op(&mut m, 6, ARG), Ok(0));
        reservation_arg(&mut m, LIST, 2, 0, XENMEMF_POPULATE_ON_DEMAND, 1);
        let before = m.tot_pages(OTHER);
        assert_eq!(op(&mut m, 6, ARG), Ok(2));
        assert_eq!(m.tot_pages(OTHER), before);
        // A list in the hypervisor's range: nothing.
        reservation_arg(&mut m, 0xFFFF_8000_0000_0000, 2, 0, 0, SELF);
        assert_eq!(op(&mut m, 6, ARG), Ok(0));
        assert_eq!(op(&mut m, 0, ARG), Ok(0));
        m.check_invariants(&[]);
    }
}
