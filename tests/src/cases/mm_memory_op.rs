//! `mm_memory_op` and `mm_reservation`: the `memory_op` sub-ops a PV
//! guest uses.
//!
//! `mm_memory_op` (queries): `maximum_ram_page` lies above every frame of
//! the domain; `current_reservation` is `nr_pages`; `maximum_reservation`
//! is Xen's "no limit" for dom0; `maximum_gpfn` follows the p2m size the
//! guest reports in `shared_info.arch.max_pfn` (0 until it does);
//! `machphys_mapping` names the M2P's range and highest MFN;
//! `memory_map` has no map for dom0 (`ENOSYS`); `machine_memory_map` gives
//! the machine's E820 map (see `machine_memory_map` below for its
//! errors); unknown domains (`ESRCH`),
//! unreadable arguments (`EFAULT`), unknown sub-ops (`ENOSYS`).
//!
//! `mm_reservation` (ballooning): `increase_reservation` hands out frames
//! (M2P entry still invalid) and raises `current_reservation`;
//! `decrease_reservation` gives them back (a second time does nothing);
//! `populate_physmap` backs chosen pfns and writes their M2P entries; the
//! count of extents done is the result, also for the failures Xen does not
//! report as errors (unknown domain, unreadable argument: 0 done).
//!
//! `mm_balloon_ceiling` (booted with `dom0_mem=max:65M` after the default
//! 64 MiB): `dom0_mem=max:` is dom0's `maximum_reservation`, and
//! `increase_reservation` stops exactly there (the extents done are the
//! room left); the frames go back with `decrease_reservation`.

use guest_pv_shim::dom0_abi::Errno;
use guest_pv_shim::dom0_abi::layout::{MACH2PHYS_VIRT_END, MACH2PHYS_VIRT_START};
use guest_pv_shim::dom0_abi::memory::{
    E820Entry, MemoryOpCmd, XenMachphysMapping, XenMemoryExchange, XenMemoryMap,
    XenMemoryReservation,
};
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::dom0_abi::types::DomId;
use guest_pv_shim::hypercall as hc;
use guest_pv_shim::{mm, report, shared};

const SELF: u16 = DomId::SELF.0;

pub fn queries(start_info: &'static StartInfo) {
    let max = hc::maximum_ram_page();
    let highest_own = (0..start_info.nr_pages)
        .filter_map(mm::pfn_to_mfn)
        .max()
        .unwrap_or(0);
    report::check(
        "maximum_ram_page lies above every frame of the domain",
        u64::try_from(max).is_ok_and(|m| m > highest_own),
        format_args!("{} vs highest mfn {highest_own:#x}", report::Ret(max)),
    );
    let nr = i64::try_from(start_info.nr_pages).unwrap_or(-1);
    report::check_ret(
        "current_reservation of DOMID_SELF is nr_pages",
        hc::memory_op_domain(MemoryOpCmd::CurrentReservation, SELF),
        nr,
    );
    report::check_ret(
        "current_reservation of dom0 by id",
        hc::memory_op_domain(MemoryOpCmd::CurrentReservation, 0),
        nr,
    );
    report::check_ret(
        "maximum_reservation of dom0 is unlimited (0xffffffff)",
        hc::memory_op_domain(MemoryOpCmd::MaximumReservation, SELF),
        0xFFFF_FFFF,
    );
    report::check_ret(
        "maximum_gpfn before the guest reports its p2m size is 0",
        hc::memory_op_domain(MemoryOpCmd::MaximumGpfn, SELF),
        0,
    );
    if shared::map() == 0 && shared::set_arch_max_pfn(start_info.nr_pages) {
        report::check_ret(
            "maximum_gpfn is shared_info.arch.max_pfn - 1",
            hc::memory_op_domain(MemoryOpCmd::MaximumGpfn, SELF),
            nr - 1,
        );
    } else {
        report::error("shared_info", format_args!("cannot map it"));
    }
    for cmd in [
        MemoryOpCmd::CurrentReservation,
        MemoryOpCmd::MaximumReservation,
        MemoryOpCmd::MaximumGpfn,
    ] {
        let name = cmd.name();
        report::check_ret(
            format_args!("{name} of a domain that does not exist is ESRCH"),
            hc::memory_op_domain(cmd, 77),
            Errno::ESRCH.neg(),
        );
        report::check_ret(
            format_args!("{name} of DOMID_IO is ESRCH"),
            hc::memory_op_domain(cmd, DomId::IO.0),
            Errno::ESRCH.neg(),
        );
        // SAFETY: an unmapped argument; the hypervisor must refuse.
        let ret = unsafe { hc::memory_op_raw(cmd as u64, 0x1000) };
        report::check_ret(
            format_args!("{name} with an unreadable argument is EFAULT"),
            ret,
            Errno::EFAULT.neg(),
        );
    }

    let mut m = XenMachphysMapping::default();
    report::check_ret("machphys_mapping", hc::machphys_mapping(&mut m), 0);
    report::check_eq(
        "machphys_mapping gives the M2P's range",
        (m.v_start, m.v_end),
        (MACH2PHYS_VIRT_START, MACH2PHYS_VIRT_END),
    );
    report::check(
        "machphys_mapping max_mfn is maximum_ram_page - 1",
        i64::try_from(m.max_mfn).is_ok_and(|v| v == max - 1),
        format_args!("{:#x}", m.max_mfn),
    );
    // SAFETY: an unmapped argument; the hypervisor must refuse.
    let ret = unsafe { hc::memory_op_raw(MemoryOpCmd::MachphysMapping as u64, 0x1000) };
    report::check_ret(
        "machphys_mapping with an unwritable argument is EFAULT",
        ret,
        Errno::EFAULT.neg(),
    );

    let mut map = [E820Entry::default(); 8];
    let (ret, _) = hc::memory_map(&mut map);
    report::check_ret(
        "memory_map of dom0 (no map set) is ENOSYS",
        ret,
        Errno::ENOSYS.neg(),
    );
    // SAFETY: an unmapped argument; the hypervisor must refuse.
    let ret = unsafe { hc::memory_op_raw(MemoryOpCmd::MemoryMap as u64, 0x1000) };
    report::check_ret(
        "memory_map with an unreadable argument is EFAULT",
        ret,
        Errno::EFAULT.neg(),
    );
    machine_memory_map();
    for cmd in [8u64, 20, 29, 63] {
        // SAFETY: no sub-op with this number: nothing is read.
        let ret = unsafe { hc::memory_op_raw(cmd, 0) };
        report::check_ret(
            format_args!("memory_op {cmd} is ENOSYS"),
            ret,
            Errno::ENOSYS.neg(),
        );
    }
}

/// `machine_memory_map` for dom0: the count alone (NULL buffer), each
/// entry, a buffer one entry too small (`EINVAL`, as Xen wants room for
/// one more), a buffer in the hypervisor's range and an unreadable
/// argument (`EFAULT`).
fn machine_memory_map() {
    let mut query = XenMemoryMap::default();
    // SAFETY: a NULL buffer: the hypervisor writes only the count.
    let ret = unsafe {
        hc::memory_op_raw(
            MemoryOpCmd::MachineMemoryMap as u64,
            core::ptr::addr_of_mut!(query) as u64,
        )
    };
    report::check_ret("machine_memory_map with a NULL buffer", ret, 0);
    let count = query.nr_entries;
    report::ok_value("the machine map's entry count", count);
    let mut map = [E820Entry::default(); 32];
    let n = (count as usize).min(map.len() - 1);
    let (ret, _) = hc::machine_memory_map(&mut map[..n]);
    report::check_ret(
        "machine_memory_map with room for exactly the map is EINVAL",
        ret,
        Errno::EINVAL.neg(),
    );
    let (ret, written) = hc::machine_memory_map(&mut map);
    report::check_ret("machine_memory_map into 32 entries", ret, 0);
    for e in map.iter().take(written as usize) {
        let (addr, size, kind) = (e.addr, e.size, e.kind);
        report::ok_value(
            format_args!("machine map entry at {addr:#x}"),
            format_args!("+{size:#x} type {kind}"),
        );
    }
    let mut bad = XenMemoryMap {
        nr_entries: 32,
        pad: 0,
        buffer: 0xffff_8000_0000_0000,
    };
    // SAFETY: the buffer lies in the hypervisor's range: the hypervisor
    // must refuse it without writing anything.
    let ret = unsafe {
        hc::memory_op_raw(
            MemoryOpCmd::MachineMemoryMap as u64,
            core::ptr::addr_of_mut!(bad) as u64,
        )
    };
    report::check_ret(
        "machine_memory_map into the hypervisor's range is EFAULT",
        ret,
        Errno::EFAULT.neg(),
    );
    // SAFETY: an unmapped argument; the hypervisor must refuse it.
    let ret = unsafe { hc::memory_op_raw(MemoryOpCmd::MachineMemoryMap as u64, 0x1000) };
    report::check_ret(
        "machine_memory_map with an unreadable argument is EFAULT",
        ret,
        Errno::EFAULT.neg(),
    );
}

/// `cmd` on `extents` for `domid`.
fn reserve(cmd: MemoryOpCmd, extents: &mut [u64], order: u32, flags: u32, domid: u16) -> i64 {
    // SAFETY: only frames this test got from `increase_reservation` or
    // `populate_physmap`, or frames it does not own, are given back.
    unsafe { hc::reservation(cmd, extents, order, flags, domid) }
}

fn current() -> i64 {
    hc::memory_op_domain(MemoryOpCmd::CurrentReservation, SELF)
}

pub fn reservation(start_info: &'static StartInfo) {
    let base = current();
    let mut got = [0u64; 2];
    report::check_ret(
        "increase_reservation of two frames",
        reserve(MemoryOpCmd::IncreaseReservation, &mut got, 0, 0, SELF),
        2,
    );
    report::check(
        "increase_reservation wrote two distinct frames",
        got[0] != got[1] && got.iter().all(|&m| m != 0),
        format_args!("{got:x?}"),
    );
    report::check_eq(
        "new frames have no M2P entry yet",
        [mm::m2p(got[0]), mm::m2p(got[1])],
        [u64::MAX; 2],
    );
    report::check_ret("current_reservation grew by two", current(), base + 2);
    let mut one = [got[0]];
    report::check_ret(
        "decrease_reservation of one frame",
        reserve(MemoryOpCmd::DecreaseReservation, &mut one, 0, 0, SELF),
        1,
    );
    report::check_ret("current_reservation shrank by one", current(), base + 1);
    report::check_ret(
        "decrease_reservation of a frame already given back does nothing",
        reserve(MemoryOpCmd::DecreaseReservation, &mut one, 0, 0, SELF),
        0,
    );
    let mut other = [got[1]];
    report::check_ret(
        "decrease_reservation of the second frame",
        reserve(MemoryOpCmd::DecreaseReservation, &mut other, 0, 0, SELF),
        1,
    );
    report::check_ret("current_reservation is back", current(), base);

    let mut pfns = [start_info.nr_pages + 5, start_info.nr_pages + 6];
    let want = pfns;
    report::check_ret(
        "populate_physmap of two pfns",
        reserve(MemoryOpCmd::PopulatePhysmap, &mut pfns, 0, 0, SELF),
        2,
    );
    report::check_eq(
        "populate_physmap wrote the M2P entries",
        [mm::m2p(pfns[0]), mm::m2p(pfns[1])],
        want,
    );
    report::check_ret(
        "give the populated frames back",
        reserve(MemoryOpCmd::DecreaseReservation, &mut pfns, 0, 0, SELF),
        2,
    );
    let mut big = [0u64];
    report::check_ret(
        "increase_reservation of one 2 MiB extent",
        reserve(MemoryOpCmd::IncreaseReservation, &mut big, 9, 0, SELF),
        1,
    );
    report::check_eq("a 2 MiB extent is 2 MiB aligned", big[0] % 512, 0);
    report::check_ret(
        "give the 2 MiB extent back",
        reserve(MemoryOpCmd::DecreaseReservation, &mut big, 9, 0, SELF),
        1,
    );
    report::check_ret("current_reservation is back again", current(), base);

    let mut x = [0u64];
    report::check_ret(
        "increase_reservation for a domain that does not exist does nothing",
        reserve(MemoryOpCmd::IncreaseReservation, &mut x, 0, 0, 77),
        0,
    );
    report::check_ret(
        "increase_reservation below 1 MiB (address bits 20) does nothing",
        reserve(MemoryOpCmd::IncreaseReservation, &mut x, 0, 20, SELF),
        0,
    );
    const DECREASE_FOREIGN: &str =
        "decrease_reservation of a frame the domain does not own does nothing";
    if let Some(foreign) = crate::support::foreign_mfn_or_skip(&[DECREASE_FOREIGN]) {
        let mut f = [foreign];
        report::check_ret(
            DECREASE_FOREIGN,
            reserve(MemoryOpCmd::DecreaseReservation, &mut f, 0, 0, SELF),
            0,
        );
    }
    // SAFETY: an unmapped argument; nothing can be done.
    let ret = unsafe { hc::memory_op_raw(MemoryOpCmd::IncreaseReservation as u64, 0x1000) };
    report::check_ret(
        "increase_reservation with an unreadable argument does nothing",
        ret,
        0,
    );
    report::check_ret("current_reservation is unchanged", current(), base);
    let mut arg = XenMemoryReservation {
        extent_start: 0x1000,
        nr_extents: 1,
        extent_order: 0,
        mem_flags: 0,
        domid: SELF,
        pad: [0; 6],
    };
    // SAFETY: the extent array is unmapped; nothing can be done.
    let ret = unsafe {
        hc::memory_op_raw(
            MemoryOpCmd::IncreaseReservation as u64,
            core::ptr::from_mut(&mut arg) as u64,
        )
    };
    // Xen allocates the frame before it fails to write its MFN back, so
    // the reservation grows by one here; that is not checked (a hypervisor
    // that checks the array first is equally right).
    report::check_ret(
        "increase_reservation with an unwritable extent array reports nothing done",
        ret,
        0,
    );
}

/// dom0's `max_pages` with `dom0_mem=max:65M`.
const CEILING_PAGES: i64 = 65 << 8;

pub fn balloon_ceiling(_start_info: &'static StartInfo) {
    report::check_ret(
        "maximum_reservation of dom0 is dom0_mem=max: (65 MiB)",
        hc::memory_op_domain(MemoryOpCmd::MaximumReservation, SELF),
        CEILING_PAGES,
    );
    let base = current();
    let mut got = [0u64; 512];
    let done = reserve(MemoryOpCmd::IncreaseReservation, &mut got, 0, 0, SELF);
    report::check_ret(
        "increase_reservation of 512 frames stops at the ceiling",
        done,
        CEILING_PAGES - base,
    );
    report::check_ret(
        "current_reservation is the ceiling",
        current(),
        CEILING_PAGES,
    );
    let mut one = [0u64];
    report::check_ret(
        "one more frame: none done",
        reserve(MemoryOpCmd::IncreaseReservation, &mut one, 0, 0, SELF),
        0,
    );
    let given = usize::try_from(done).unwrap_or(0).min(got.len());
    report::check_ret(
        "the frames go back",
        reserve(
            MemoryOpCmd::DecreaseReservation,
            &mut got[..given],
            0,
            0,
            SELF,
        ),
        done,
    );
    report::check_ret("current_reservation is back", current(), base);
}

/// An exchange argument: `ins` (GMFNs) of order `in_order` for `outs`
/// (GPFNs in, MFNs out) of order `out_order` with `flags`.
fn exchange_arg(
    ins: &mut [u64],
    in_order: u32,
    outs: &mut [u64],
    out_order: u32,
    flags: u32,
) -> XenMemoryExchange {
    let list = |extents: &mut [u64], order: u32, flags: u32| XenMemoryReservation {
        extent_start: extents.as_mut_ptr() as u64,
        nr_extents: extents.len() as u64,
        extent_order: order,
        mem_flags: flags,
        domid: SELF,
        pad: [0; 6],
    };
    XenMemoryExchange {
        input: list(ins, in_order, 0),
        output: list(outs, out_order, flags),
        nr_exchanged: 0,
    }
}

/// `XENMEM_exchange` on `arg`: the result and `nr_exchanged` after it.
fn exchange_call(arg: &mut XenMemoryExchange) -> (i64, u64) {
    // SAFETY: the `in` frames of every call here are frames this test got
    // from `increase_reservation` or the previous exchanges, which no
    // running code uses, or frames the hypervisor must refuse.
    let ret = unsafe { hc::memory_exchange(arg) };
    (ret, arg.nr_exchanged)
}

/// Checks an exchange that must fail with `errno` having done `done`.
fn exchange_fails(what: &str, arg: &mut XenMemoryExchange, errno: Errno, done: u64) {
    let (ret, got) = exchange_call(arg);
    report::check_ret(format_args!("exchange {what}"), ret, errno.neg());
    report::check_eq(format_args!("exchange {what}: nr_exchanged"), got, done);
}

/// Whether the M2P entries of `mfn` and the `n - 1` frames after it are
/// `pfn` onwards.
fn m2p_run(mfn: u64, pfn: u64, n: u64) -> bool {
    (0..n).all(|i| mm::m2p(mfn + i) == pfn + i)
}

pub fn exchange(start_info: &'static StartInfo) {
    let base = current();
    let gpfn = start_info.nr_pages + 16;
    let mut ins = [0u64; 4];
    report::check_ret(
        "increase_reservation of four frames to exchange",
        reserve(MemoryOpCmd::IncreaseReservation, &mut ins, 0, 0, SELF),
        4,
    );
    // Four single frames for one machine-contiguous extent below 4 GiB,
    // as Linux makes its DMA buffers.
    let mut big = [gpfn];
    let mut arg = exchange_arg(&mut ins, 0, &mut big, 2, 32);
    report::check_eq(
        "exchange four frames for an order-2 extent below 4 GiB",
        exchange_call(&mut arg),
        (0, 4),
    );
    report::check_eq("the order-2 extent is aligned", big[0] % 4, 0);
    report::check(
        "the order-2 extent lies below 4 GiB",
        big[0] < 1 << 20,
        format_args!("{:#x}", big[0]),
    );
    report::check(
        "the order-2 extent has the M2P entries of the GPFNs asked for",
        m2p_run(big[0], gpfn, 4),
        format_args!("{:#x}", mm::m2p(big[0])),
    );
    report::check_ret("exchange leaves current_reservation", current(), base + 4);
    // And back: one order-2 extent for four single frames.
    let mut pool = [gpfn + 4, gpfn + 5, gpfn + 6, gpfn + 7];
    let mut arg = exchange_arg(&mut big, 2, &mut pool, 0, 0);
    report::check_eq(
        "exchange an order-2 extent for four frames",
        exchange_call(&mut arg),
        (0, 1),
    );
    report::check(
        "each new frame has the M2P entry of its GPFN",
        (0..4).all(|i| mm::m2p(pool[i]) == gpfn + 4 + i as u64),
        format_args!("{pool:x?}"),
    );
    report::check_eq(
        "exchange with everything exchanged already does nothing",
        exchange_call(&mut arg),
        (0, 1),
    );
    report::check_ret("current_reservation is unchanged", current(), base + 4);
    exchange_errors(&mut pool);
    exchange_partial(&mut pool, gpfn);
    exchange_continued(gpfn);
    report::check_ret(
        "the frames go back",
        reserve(MemoryOpCmd::DecreaseReservation, &mut pool, 0, 0, SELF),
        4,
    );
    report::check_ret("current_reservation is back", current(), base);
    // Last, as the frame it trades for stays with the domain unknown.
    let mut one = [0u64];
    report::check_ret(
        "increase_reservation of one more frame",
        reserve(MemoryOpCmd::IncreaseReservation, &mut one, 0, 0, SELF),
        1,
    );
    let mut out = [0u64];
    let mut arg = exchange_arg(&mut one, 0, &mut out, 0, 0);
    arg.output.extent_start = 0x1000;
    exchange_fails("with an unmapped out list", &mut arg, Errno::EFAULT, 0);
    report::check_ret(
        "the domain keeps the frame it got for it",
        current(),
        base + 1,
    );
}

/// The checks before anything is exchanged, on `pool`'s frames, which
/// stay the domain's.
fn exchange_errors(pool: &mut [u64; 4]) {
    let mut outs = [0u64; 4];
    let mut arg = exchange_arg(pool, 0, &mut outs, 0, 0);
    // SAFETY: a start extent: refused before anything is read.
    let ret = unsafe {
        hc::memory_op_raw(
            MemoryOpCmd::Exchange as u64 | (1 << 6),
            core::ptr::addr_of_mut!(arg) as u64,
        )
    };
    report::check_ret(
        "exchange with a start extent in cmd",
        ret,
        Errno::EINVAL.neg(),
    );
    arg.nr_exchanged = 5;
    exchange_fails(
        "with nr_exchanged above nr_extents",
        &mut arg,
        Errno::EINVAL,
        5,
    );
    arg.nr_exchanged = 0;
    arg.output.nr_extents = 2;
    exchange_fails("of four frames for two", &mut arg, Errno::EINVAL, 0);
    arg.output.nr_extents = 4;
    arg.output.domid = 0;
    exchange_fails(
        "with in and out domids differing",
        &mut arg,
        Errno::EINVAL,
        0,
    );
    arg.output.domid = SELF;
    arg.output.extent_order = 19;
    exchange_fails("for an order-19 extent", &mut arg, Errno::EPERM, 0);
    arg.output.extent_order = 0;
    for (what, domid) in [("for domain 77", 77), ("for DOMID_IO", DomId::IO.0)] {
        arg.input.domid = domid;
        arg.output.domid = domid;
        exchange_fails(what, &mut arg, Errno::ESRCH, 0);
    }
    arg.input.domid = SELF;
    arg.output.domid = SELF;
    arg.output.mem_flags = 20;
    exchange_fails("for frames below 1 MiB", &mut arg, Errno::ENOMEM, 0);
    arg.output.mem_flags = 0;
    arg.input.extent_start = 0xffff_8000_0000_0000;
    exchange_fails(
        "with an in list in the hypervisor's range",
        &mut arg,
        Errno::EFAULT,
        0,
    );
    // SAFETY: an unmapped argument; the hypervisor must refuse it.
    let ret = unsafe { hc::memory_op_raw(MemoryOpCmd::Exchange as u64, 0x1000) };
    report::check_ret(
        "exchange with an unreadable argument",
        ret,
        Errno::EFAULT.neg(),
    );
    // Two frames for one order-1 extent, one of them not exchangeable.
    let mapped = mm::virt_to_mfn(core::ptr::from_ref(pool) as u64).unwrap_or(0);
    const FOREIGN: &str = "exchange of a frame the domain does not own";
    let foreign = crate::support::foreign_mfn_or_skip(&[FOREIGN]);
    for (what, second) in [
        ("of one frame twice", Some(pool[1])),
        ("of a mapped frame", Some(mapped)),
        ("of a frame the domain does not own", foreign),
    ] {
        let Some(second) = second else {
            continue;
        };
        let mut two = [pool[1], second];
        let mut out = [0u64];
        let mut arg = exchange_arg(&mut two, 0, &mut out, 1, 0);
        exchange_fails(what, &mut arg, Errno::EINVAL, 0);
    }
}

/// Two chunks, the second of which holds a mapped frame: the first is
/// traded (`pool[0]` is replaced), the call fails with `EINVAL`.
fn exchange_partial(pool: &mut [u64; 4], gpfn: u64) {
    let mapped = mm::virt_to_mfn(core::ptr::from_ref(pool) as u64).unwrap_or(0);
    let mut two = [pool[0], mapped];
    let mut outs = [gpfn + 8, gpfn + 9];
    let mut arg = exchange_arg(&mut two, 0, &mut outs, 0, 0);
    exchange_fails(
        "of a frame and then a mapped frame",
        &mut arg,
        Errno::EINVAL,
        1,
    );
    report::check_eq(
        "the first chunk was traded: its frame has the M2P entry asked for",
        mm::m2p(outs[0]),
        gpfn + 8,
    );
    pool[0] = outs[0];
}

/// Two 2 MiB extents for two others: more than one batch of frames, so
/// the hypervisor may continue the call; the result is the same.
fn exchange_continued(gpfn: u64) {
    let mut big = [0u64; 2];
    if reserve(MemoryOpCmd::IncreaseReservation, &mut big, 9, 0, SELF) != 2 {
        report::error("increase_reservation", format_args!("no two 2 MiB extents"));
        return;
    }
    let mut outs = [gpfn + 1024, gpfn + 2048];
    let mut arg = exchange_arg(&mut big, 9, &mut outs, 9, 0);
    report::check_eq(
        "exchange two 2 MiB extents",
        exchange_call(&mut arg),
        (0, 2),
    );
    report::check(
        "the new extents are aligned and have their M2P entries",
        outs.iter().all(|m| m % 512 == 0)
            && m2p_run(outs[0], gpfn + 1024, 512)
            && m2p_run(outs[1], gpfn + 2048, 512),
        format_args!("{outs:x?}"),
    );
    report::check_ret(
        "the 2 MiB extents go back",
        reserve(MemoryOpCmd::DecreaseReservation, &mut outs, 9, 0, SELF),
        2,
    );
}
