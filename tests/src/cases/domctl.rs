//! `domctl_domains`: dom0 as a toolstack, through `domctl` and `sysctl`.
//!
//! Xen 4.17's answers, as dom0 sees them there:
//! - a wrong interface version is `EACCES` (both calls); an unknown
//!   command is `ENOSYS`, on a domain that does not exist `ESRCH`;
//! - `sched_id` is credit2 (6); `physinfo` has one CPU and the PV
//!   capability, and no more free pages than pages;
//! - dom0's `getdomaininfo`: not paused, running, one vCPU online, its
//!   pages, its shared_info frame, shutdown code 255 (none), the PIT;
//! - `createdomain` refuses 0 vCPUs (`EINVAL`) and emulated devices
//!   other than the PIT (`EOPNOTSUPP`), but only after choosing an id: the
//!   two refused creations use ids 1 and 2, and the first domain made is
//!   3; it takes a given id (`EEXIST` when taken); the new domain is paused, has no pages,
//!   no page allowance and no vCPUs until `max_vcpus`, which must repeat
//!   createdomain's count (`EINVAL`);
//! - `getdomaininfo` of a free id reports the next domain up, and of an
//!   id above every domain is `ESRCH`;
//! - dom0 populates the new domain's memory up to its `max_mem`
//!   allowance (the extents beyond it are not done), and its page count
//!   and `current_reservation` follow;
//! - dom0 writes page tables into four of the new domain's frames and
//!   loads vCPU 0's context with that L4 (`setvcpucontext`): a vCPU not
//!   created, dom0 itself, dom0's own L4, user mode without a user L4 and
//!   a non-canonical rip are `EINVAL`; once loaded, the vCPU is online
//!   (the domain still paused), another L4 is `EOPNOTSUPP`, the same one
//!   reloads (offline), and the L4 can no longer be mapped writable
//!   (`EBUSY`); `getvcpucontext` gives back what was loaded (flags,
//!   registers with Xen's flat kernel selectors, kernel stack, L4), is
//!   `ENODATA` for a vCPU never loaded and `EINVAL` for one not created;
//!   `hypercall_init` fills another of its frames with stubs,
//!   and refuses dom0's frame (`EINVAL`) and the loaded L4 (`EPERM`);
//! - pauses are counted: one more `unpausedomain` than pauses is `EINVAL`;
//!   dom0 cannot pause or destroy itself (`EINVAL`);
//! - `getdomaininfolist` lists the domains in id order;
//! - dom0 maps the new domain's frames with `update_va_mapping_otherdomain`
//!   and with `mmu_update` naming it as `foreigndom` (a `foreigndom` that
//!   does not exist is `ESRCH`), but not with `update_va_mapping`
//!   (`EBUSY`);
//! - an interdomain channel between dom0 and the new domain, which does
//!   not run: dom0 allocates the new domain's end for itself (port 1;
//!   `ESRCH` in a domain that does not exist) and binds to it (its own
//!   end starts pending; binding a connected port again is `EINVAL`);
//!   `status` shows both ends; dom0's send sets the new domain's pending
//!   bit (read through a foreign mapping of its shared_info, whose vCPU 0
//!   has events unmasked: the page is all zero); dom0's close leaves the other end unbound,
//!   naming dom0; after `destroydomain` dom0's end is unbound, naming the
//!   destroyed domain;
//! - `SCHEDOP_remote_shutdown` of a created domain shuts it down at once
//!   (it does not run): `getdomaininfo` shows it shut down with the
//!   reason, and a second reason does not replace the first; an id that
//!   does not exist, or `DOMID_SELF`, is `ESRCH`;
//! - `destroydomain` raises `VIRQ_DOM_EXC` for dom0, and the domain is
//!   then gone (or still listed as dying while Xen frees it).
//!
//! - a domain that runs: dom0 builds it (memory, page tables, code,
//!   hypercall page, vCPU 0's context) and unpauses it; its code gets
//!   `EPERM` for a `domctl`, writes a marker and shuts itself down
//!   (reboot), which dom0 sees in `getdomaininfo` and `VIRQ_DOM_EXC`.
//! - a domain that spins (`jmp .`) does not keep dom0 from waking from a
//!   30 ms `SCHEDOP_poll`, and has used the CPU meanwhile.
//!
//! That every frame comes back is checked by the hypervisor's destroy
//! line (`0 still referenced`) and dom0's teardown line.

use core::mem::offset_of;
use guest_pv_shim::dom0_abi::Errno;
use guest_pv_shim::dom0_abi::Hypercall;
use guest_pv_shim::dom0_abi::cpu::{VcpuGuestContext, VgcfFlags};
use guest_pv_shim::dom0_abi::domctl::{
    ArchDomainConfig, CreateDomain, DomInfoFlags, Domctl, DomctlCmd, GetDomainInfo, HypercallInit,
    MaxMem, MaxVcpus, NoPayload, SchedCredit, SchedulerOp, SchedulerOpCmd, VcpuContext,
    XEN_SCHEDULER_CREDIT, XEN_SCHEDULER_CREDIT2,
};

use guest_pv_shim::dom0_abi::event_channel::{
    EvtchnAllocUnbound, EvtchnBindInterdomain, EvtchnBindVirq, EvtchnStatus, Virq,
};
use guest_pv_shim::dom0_abi::memory::MemoryOpCmd;
use guest_pv_shim::dom0_abi::mmu::{MmuUpdate, MmuUpdateCmd};
use guest_pv_shim::dom0_abi::shared_info::SharedInfo;
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::dom0_abi::sysctl::{
    CpuInfo, GetCpuInfo, GetDomainInfoList, PhysCap, PhysInfo, ReadConsole, SchedId, Sysctl,
    SysctlCmd,
};
use guest_pv_shim::dom0_abi::types::DomId;
use guest_pv_shim::dom0_abi::wire::Wire;
use guest_pv_shim::hypercall::{self as hc, raw};
use guest_pv_shim::mm::{PTE_RO, PTE_RW, UVMF_INVLPG};
use guest_pv_shim::{mm, report, shared};

/// Code that never stops: `jmp .` (`eb fe`).
pub(super) const SPIN: u64 = 0xfeeb;

/// The id this test gives its second domain.
const GIVEN_ID: u16 = 5;
/// Pages the first domain may have (`max_mem` of 64 pages).
const ALLOWANCE: u64 = 64;

/// `domctl` on `op` (in and out).
fn domctl(op: &mut Domctl) -> i64 {
    // SAFETY: the hypervisor reads and writes exactly one `Domctl`, which
    // is exclusively borrowed.
    unsafe {
        raw::hypercall5(
            u64::from(Hypercall::Domctl.number()),
            core::ptr::from_mut(op) as u64,
            0,
            0,
            0,
            0,
        )
    }
}

/// `sysctl` on `op` (in and out).
fn sysctl(op: &mut Sysctl) -> i64 {
    // SAFETY: as in `domctl`, for one `Sysctl`.
    unsafe {
        raw::hypercall5(
            u64::from(Hypercall::Sysctl.number()),
            core::ptr::from_mut(op) as u64,
            0,
            0,
            0,
            0,
        )
    }
}

/// `cmd` on `domain` with `payload`; the result and what came back.
pub(super) fn call<P: Wire>(cmd: DomctlCmd, domain: u16, payload: &P) -> (i64, Domctl) {
    let mut op = Domctl::new(cmd, domain, payload);
    (domctl(&mut op), op)
}

/// `getdomaininfo` of `domain`: the result, the id reported and the record.
pub(super) fn info(domain: u16) -> (i64, u16, GetDomainInfo) {
    let (ret, op) = call(DomctlCmd::GetDomainInfo, domain, &NoPayload);
    (ret, op.domain, op.payload().unwrap_or_default())
}

fn pv_config(vcpus: u32, handle: u8) -> CreateDomain {
    CreateDomain {
        handle: [handle; 16],
        max_vcpus: vcpus,
        max_evtchn_port: 1023,
        max_grant_frames: -1,
        max_maptrack_frames: -1,
        grant_opts: 1,
        ..CreateDomain::default()
    }
}

/// Creates a domain (id `domain`, 0 to let the hypervisor choose).
fn create(domain: u16, config: &CreateDomain) -> (i64, u16) {
    let (ret, op) = call(DomctlCmd::CreateDomain, domain, config);
    (ret, op.domain)
}

pub fn run(start_info: &'static StartInfo) {
    versions_and_machine();
    cpu_idle_times();
    console_log();
    dom0_itself(start_info);
    let Some(first) = new_domain() else {
        return;
    };
    let frames = populate(first);
    foreign_mappings(first, frames);
    vcpu_context(first, frames);
    pauses(first);
    scheduling(first);
    let bound = event_channels(first);
    second_domain_and_list(first);
    destroy(first, bound);
    run_domain();
    spinning_domain();
}

fn versions_and_machine() {
    let mut op = Domctl::new(DomctlCmd::GetDomainInfo, 0, &NoPayload);
    op.interface_version = 0x14;
    report::check_ret(
        "domctl with interface version 0x14 is EACCES",
        domctl(&mut op),
        Errno::EACCES.neg(),
    );
    let mut op = Sysctl::new(SysctlCmd::SchedId, &SchedId::default());
    op.interface_version = 0x16;
    report::check_ret(
        "sysctl with interface version 0x16 is EACCES",
        sysctl(&mut op),
        Errno::EACCES.neg(),
    );
    let mut op = Domctl::new(DomctlCmd::GetDomainInfo, 0, &NoPayload);
    op.cmd = 999;
    report::check_ret(
        "unknown domctl 999 on dom0 is ENOSYS",
        domctl(&mut op),
        Errno::ENOSYS.neg(),
    );
    op.domain = 300;
    report::check_ret(
        "unknown domctl 999 on a domain that does not exist is ESRCH",
        domctl(&mut op),
        Errno::ESRCH.neg(),
    );
    let (ret, _) = call(DomctlCmd::PauseDomain, 300, &NoPayload);
    report::check_ret(
        "pausedomain of a domain that does not exist is ESRCH",
        ret,
        Errno::ESRCH.neg(),
    );
    let mut op = Sysctl::new(SysctlCmd::SchedId, &SchedId::default());
    op.cmd = 99;
    report::check_ret(
        "unknown sysctl 99 is ENOSYS",
        sysctl(&mut op),
        Errno::ENOSYS.neg(),
    );

    let mut op = Sysctl::new(SysctlCmd::SchedId, &SchedId::default());
    let ret = sysctl(&mut op);
    report::check_ret("sched_id", ret, 0);
    report::check_eq(
        "sched_id is credit2",
        op.payload::<SchedId>().map(|s| s.sched_id),
        Some(XEN_SCHEDULER_CREDIT2),
    );
    let mut op = Sysctl::new(SysctlCmd::PhysInfo, &PhysInfo::default());
    report::check_ret("physinfo", sysctl(&mut op), 0);
    let p: PhysInfo = op.payload().unwrap_or_default();
    report::check_eq("physinfo: one CPU", p.nr_cpus, 1);
    report::check_eq("physinfo: one node", p.nr_nodes, 1);
    report::check(
        "physinfo: PV guests",
        PhysCap::from_bits_truncate(p.capabilities).contains(PhysCap::PV),
        format_args!("capabilities {:#x}", p.capabilities),
    );
    report::check(
        "physinfo: free pages within total pages",
        p.free_pages > 0 && p.free_pages <= p.total_pages,
        format_args!("free {} total {}", p.free_pages, p.total_pages),
    );
}

/// `sysctl getcpuinfo` with room for `max_cpus` records at `info`: the
/// result and the records written. (The idle times themselves differ
/// between hypervisors and runs.)
fn cpu_info(max_cpus: u32, info: u64) -> (i64, u32) {
    let req = GetCpuInfo {
        max_cpus,
        info,
        ..GetCpuInfo::default()
    };
    let mut op = Sysctl::new(SysctlCmd::GetCpuInfo, &req);
    let ret = sysctl(&mut op);
    (
        ret,
        op.payload::<GetCpuInfo>().map_or(u32::MAX, |r| r.nr_cpus),
    )
}

/// `getcpuinfo`: one record per CPU, as many as there is room for, and
/// `EFAULT` for an array the hypervisor cannot write.
fn cpu_idle_times() {
    let mut records = [CpuInfo::default(); 4];
    let at = records.as_mut_ptr() as u64;
    report::check_eq(
        "getcpuinfo with room for 4: one CPU",
        cpu_info(4, at),
        (0, 1),
    );
    report::check_eq("getcpuinfo with room for none", cpu_info(0, at), (0, 0));
    report::check_ret(
        "getcpuinfo into an unmapped array is EFAULT",
        cpu_info(4, 8).0,
        Errno::EFAULT.neg(),
    );
}

/// `sysctl readconsole` of `count` bytes into `buffer`: the result, the
/// bytes copied and the position after them.
fn read_console(clear: bool, incremental: Option<u32>, buffer: u64, count: u32) -> (i64, u32, u32) {
    let rc = ReadConsole {
        clear: u8::from(clear),
        incremental: u8::from(incremental.is_some()),
        index: incremental.unwrap_or(0),
        buffer,
        count,
        ..ReadConsole::default()
    };
    let mut op = Sysctl::new(SysctlCmd::ReadConsole, &rc);
    let ret = sysctl(&mut op);
    let out: ReadConsole = op.payload().unwrap_or_default();
    (ret, out.count, out.index)
}

/// The hypervisor's console log: its text differs between hypervisors,
/// how it is read does not.
fn console_log() {
    let mut buffer = [0u8; 64];
    let at = buffer.as_mut_ptr() as u64;
    let (ret, count, first) = read_console(false, None, at, 16);
    report::check_ret("readconsole", ret, 0);
    report::check_eq("readconsole: 16 bytes of the boot log", count, 16);
    let (ret, count, next) = read_console(false, Some(first), at, 16);
    report::check_ret("readconsole incremental", ret, 0);
    report::check_eq(
        "readconsole incremental: 16 more bytes, the index after them",
        (count, next.wrapping_sub(first)),
        (16, 16),
    );
    report::check_ret(
        "readconsole into an unmapped buffer is EFAULT",
        read_console(false, None, 8, 16).0,
        Errno::EFAULT.neg(),
    );
    let (ret, _, again) = read_console(false, None, at, 16);
    report::check_eq(
        "readconsole without clear starts at the same place again",
        (ret, again),
        (0, first),
    );
    // Read and clear the whole log, then nothing is left to read.
    let mut rounds = 0;
    let mut last = (0, 0, 0);
    while rounds < 4096 {
        rounds += 1;
        last = read_console(true, None, at, 64);
        if last.0 != 0 || last.1 < 64 {
            break;
        }
    }
    report::check_eq("readconsole with clear to the end", last.0, 0);
    let (ret, count, end) = read_console(false, None, at, 64);
    report::check_eq(
        "readconsole after clearing: nothing, at the end",
        (ret, count, end == last.2),
        (0, 0, true),
    );
    let (ret, count, _) = read_console(false, Some(first), at, 64);
    report::check_eq(
        "readconsole incremental from a cleared index: nothing",
        (ret, count),
        (0, 0),
    );
}

fn dom0_itself(start_info: &StartInfo) {
    let (ret, id, i) = info(0);
    report::check_ret("getdomaininfo of dom0", ret, 0);
    report::check_eq("getdomaininfo of dom0 reports dom0", id, 0);
    report::check_eq(
        "dom0: running, not paused",
        i.dominf(),
        DomInfoFlags::RUNNING,
    );
    report::check_eq("dom0: no shutdown code (255)", i.shutdown_code(), 255);
    report::check_eq(
        "dom0: one vCPU online",
        (i.nr_online_vcpus, i.max_vcpu_id),
        (1, 0),
    );
    report::check_eq(
        "dom0: tot_pages is nr_pages",
        i.tot_pages,
        start_info.nr_pages,
    );
    report::check(
        "dom0: shared_info_frame is start_info's shared_info",
        i.shared_info_frame == start_info.shared_info >> 12,
        format_args!(
            "{:#x} vs {:#x}",
            i.shared_info_frame, start_info.shared_info
        ),
    );
    report::check_eq("dom0: all-zero handle", i.handle, [0; 16]);
    report::check_eq(
        "dom0: emulation flags (PIT)",
        i.arch_config.emulation_flags,
        1 << 8,
    );
    let (ret, _) = call(DomctlCmd::PauseDomain, 0, &NoPayload);
    report::check_ret(
        "pausedomain of dom0 itself is EINVAL",
        ret,
        Errno::EINVAL.neg(),
    );
    let (ret, _) = call(DomctlCmd::DestroyDomain, 0, &NoPayload);
    report::check_ret(
        "destroydomain of dom0 itself is EINVAL",
        ret,
        Errno::EINVAL.neg(),
    );
    let (ret, _) = call(DomctlCmd::UnpauseDomain, 0, &NoPayload);
    report::check_ret(
        "unpausedomain of dom0 (not paused) is EINVAL",
        ret,
        Errno::EINVAL.neg(),
    );
}

/// Creates the first domain and checks how it starts; its id.
fn new_domain() -> Option<u16> {
    let (ret, _) = create(0, &pv_config(0, 1));
    report::check_ret(
        "createdomain with 0 vCPUs is EINVAL",
        ret,
        Errno::EINVAL.neg(),
    );
    let lapic = CreateDomain {
        arch: ArchDomainConfig {
            emulation_flags: 1,
            misc_flags: 0,
        },
        ..pv_config(1, 1)
    };
    let (ret, _) = create(0, &lapic);
    report::check_ret(
        "createdomain of a PV domain with a LAPIC is EOPNOTSUPP",
        ret,
        Errno::EOPNOTSUPP.neg(),
    );
    let (ret, id) = create(0, &pv_config(2, 0xa1));
    if !report::check_ret("createdomain", ret, 0) {
        return None;
    }
    report::check_eq(
        "createdomain chose id 3 (the refused ones used 1 and 2)",
        id,
        3,
    );
    let (ret, reported, i) = info(id);
    report::check_ret("getdomaininfo of the new domain", ret, 0);
    report::check_eq("getdomaininfo reports the new domain", reported, id);
    report::check_eq("new domain: paused", i.dominf(), DomInfoFlags::PAUSED);
    report::check_eq("new domain: no shutdown code (255)", i.shutdown_code(), 255);
    report::check_eq(
        "new domain: no pages, no allowance",
        (i.tot_pages, i.max_pages),
        (0, 0),
    );
    report::check_eq(
        "new domain: no vCPUs",
        (i.nr_online_vcpus, i.max_vcpu_id),
        (0, u32::MAX),
    );
    report::check_eq("new domain: its handle", i.handle, [0xa1; 16]);
    report::check_eq("new domain: no emulation", i.arch_config.emulation_flags, 0);
    report::check(
        "new domain: a shared_info frame",
        i.shared_info_frame != 0,
        format_args!("frame 0"),
    );
    let (ret, _) = call(DomctlCmd::MaxVcpus, id, &MaxVcpus { max: 3 });
    report::check_ret(
        "max_vcpus other than createdomain's is EINVAL",
        ret,
        Errno::EINVAL.neg(),
    );
    let (ret, _) = call(DomctlCmd::MaxVcpus, id, &MaxVcpus { max: 2 });
    report::check_ret("max_vcpus", ret, 0);
    let (_, _, i) = info(id);
    report::check_eq(
        "after max_vcpus: two vCPUs, none online",
        (i.nr_online_vcpus, i.max_vcpu_id),
        (0, 1),
    );
    let (ret, _) = call(
        DomctlCmd::MaxMem,
        id,
        &MaxMem {
            max_memkb: ALLOWANCE * 4,
        },
    );
    report::check_ret("max_mem", ret, 0);
    report::check_eq("after max_mem: max_pages", info(id).2.max_pages, ALLOWANCE);
    Some(id)
}

/// dom0 populates the new domain's memory, as a domain builder does;
/// returns the first frames it got.
fn populate(id: u16) -> [u64; 16] {
    let mut extents: [u64; 16] = core::array::from_fn(|i| i as u64);
    // SAFETY: populate_physmap only fills `extents` with the new frames.
    let done = unsafe { hc::reservation(MemoryOpCmd::PopulatePhysmap, &mut extents, 0, 0, id) };
    report::check_ret("populate_physmap of 16 pages of the new domain", done, 16);
    report::check_eq(
        "the new domain has those 16 pages",
        info(id).2.tot_pages,
        16,
    );
    report::check_ret(
        "current_reservation of the new domain",
        hc::memory_op_domain(MemoryOpCmd::CurrentReservation, id),
        16,
    );
    report::check_ret(
        "maximum_reservation of the new domain is its max_mem",
        hc::memory_op_domain(MemoryOpCmd::MaximumReservation, id),
        ALLOWANCE.cast_signed(),
    );
    let mut more: [u64; 64] = core::array::from_fn(|i| 16 + i as u64);
    // SAFETY: as above.
    let done = unsafe { hc::reservation(MemoryOpCmd::PopulatePhysmap, &mut more, 0, 0, id) };
    report::check_ret(
        "populate_physmap stops at the allowance",
        done,
        (ALLOWANCE - 16).cast_signed(),
    );
    report::check_eq(
        "the new domain is at its allowance",
        info(id).2.tot_pages,
        ALLOWANCE,
    );
    extents
}

/// dom0 maps frames of the new domain, as a domain builder writes its
/// image: `update_va_mapping_otherdomain` and `mmu_update` with
/// `foreigndom`; without naming the owner the mapping is refused.
fn foreign_mappings(id: u16, frames: [u64; 16]) {
    const SLOT: usize = 0;
    let va = mm::window_va(SLOT);
    let ret = map_other(SLOT, id, frames[0], PTE_RW);
    report::check_ret(
        "update_va_mapping_otherdomain maps a frame of the new domain",
        ret,
        0,
    );
    if ret == 0 {
        mm::window_write(SLOT, 3, 0x1234_5678);
        report::check_eq(
            "dom0 writes the new domain's frame through it",
            mm::window_read(SLOT, 3),
            0x1234_5678,
        );
    }
    // SAFETY: the window is used by no Rust code; the mapping must be
    // refused.
    let ret = unsafe { hc::update_va_mapping(va, (frames[1] << 12) | PTE_RW, UVMF_INVLPG) };
    report::check_ret(
        "mapping the new domain's frame without naming it is EBUSY",
        ret,
        Errno::EBUSY.neg(),
    );
    let Some(l1) = mm::l1_entry(va) else {
        report::error("window L1", format_args!("the window has no L1 entry"));
        return;
    };
    let req = [MmuUpdate::new(
        MmuUpdateCmd::NormalPtUpdate,
        l1.maddr,
        (frames[1] << 12) | PTE_RW,
    )];
    // SAFETY: the request rewrites only the window's L1 entry.
    let ret = unsafe { hc::mmu_update(&req, None, u64::from(id)) };
    report::check_ret(
        "mmu_update with foreigndom maps another frame of it",
        ret,
        0,
    );
    if ret == 0 {
        mm::window_write(SLOT, 5, 0xabcd);
        report::check_eq(
            "dom0 writes that frame too",
            mm::window_read(SLOT, 5),
            0xabcd,
        );
    }
    // SAFETY: as above.
    let ret = unsafe { hc::mmu_update(&req, None, 300) };
    report::check_ret(
        "mmu_update with a foreigndom that does not exist is ESRCH",
        ret,
        Errno::ESRCH.neg(),
    );
    report::check_ret("unmapping the window", mm::unmap_window(SLOT), 0);
    report::check_eq(
        "the new domain still has its pages",
        info(id).2.tot_pages,
        ALLOWANCE,
    );
}

/// `update_va_mapping_otherdomain` of frame `mfn` of domain `id` at
/// window `slot` with `flags`: the result.
fn map_other(slot: usize, id: u16, mfn: u64, flags: u64) -> i64 {
    // SAFETY: the windows are used by no Rust code; what the hypervisor
    // maps there (or refuses to) is what the caller checks.
    unsafe {
        hc::update_va_mapping_otherdomain(
            mm::window_va(slot),
            (mfn << 12) | flags,
            UVMF_INVLPG,
            u64::from(id),
        )
    }
}

/// [`map_other`]; `false` (after an `ERROR` line naming `what`) if it
/// cannot map.
fn map_foreign(slot: usize, id: u16, mfn: u64, flags: u64, what: &str) -> bool {
    let ret = map_other(slot, id, mfn, flags);
    if ret != 0 {
        report::error(what, format_args!("cannot map it: {}", report::Ret(ret)));
    }
    ret == 0
}

/// Writes `entries` (index, value) into the new domain's frame `mfn`
/// through a writable foreign mapping, which is then removed.
fn write_foreign(id: u16, mfn: u64, entries: &[(u64, u64)]) -> bool {
    const SLOT: usize = 2;
    if !map_foreign(SLOT, id, mfn, PTE_RW, "foreign frame") {
        return false;
    }
    for &(index, value) in entries {
        mm::window_write(SLOT, index, value);
    }
    mm::unmap_window(SLOT) == 0
}

/// `setvcpucontext(vcpu, ctxt)` of domain `id`.
fn set_context(id: u16, vcpu: u32, ctx: &VcpuGuestContext) -> i64 {
    let arg = VcpuContext {
        vcpu,
        pad: 0,
        ctxt: core::ptr::from_ref(ctx) as u64,
    };
    call(DomctlCmd::SetVcpuContext, id, &arg).0
}

/// dom0 writes page tables for the new domain into four of its frames
/// (L4 -> L3 -> L2 -> L1 -> its first frame) and loads vCPU 0's context
/// with that L4, as a domain builder does: the L4 must be the new
/// domain's, and once loaded, only the same one may be loaded again.
fn vcpu_context(id: u16, frames: [u64; 16]) {
    const TABLE: u64 = 0x67; // present, writable, user, accessed, dirty
    const LEAF: u64 = 0x63; // present, writable, accessed, dirty
    let [data, _, l4, l3, l2, l1, ..] = frames;
    let written = write_foreign(id, l1, &[(0, (data << 12) | LEAF)])
        && write_foreign(id, l2, &[(0, (l1 << 12) | TABLE)])
        && write_foreign(id, l3, &[(0, (l2 << 12) | TABLE)])
        && write_foreign(id, l4, &[(0, (l3 << 12) | TABLE)]);
    if !written {
        return;
    }
    let mut ctx = VcpuGuestContext::zeroed();
    ctx.flags = (VgcfFlags::IN_KERNEL | VgcfFlags::ONLINE).bits();
    ctx.user_regs.rip = 0x100;
    ctx.user_regs.rsp = 0x1000;
    ctx.user_regs.cs = 0xe033;
    ctx.user_regs.ss = 0xe02b;
    ctx.user_regs.rflags = 0x200;
    ctx.kernel_ss = 0xe02b;
    ctx.kernel_sp = 0x1000;
    ctx.ctrlreg[3] = l4 << 12;
    report::check_ret(
        "setvcpucontext of vCPU 2 (not created) is EINVAL",
        set_context(id, 2, &ctx),
        Errno::EINVAL.neg(),
    );
    report::check_ret(
        "setvcpucontext of dom0 itself is EINVAL",
        set_context(0, 0, &ctx),
        Errno::EINVAL.neg(),
    );
    // One context changed in place and put back (each is 5 KiB of stack).
    ctx.ctrlreg[3] = mm::boot_l4_mfn() << 12;
    report::check_ret(
        "setvcpucontext with dom0's L4 is EINVAL",
        set_context(id, 0, &ctx),
        Errno::EINVAL.neg(),
    );
    ctx.ctrlreg[3] = l4 << 12;
    ctx.flags = VgcfFlags::ONLINE.bits();
    report::check_ret(
        "setvcpucontext in user mode without a user L4 is EINVAL",
        set_context(id, 0, &ctx),
        Errno::EINVAL.neg(),
    );
    ctx.flags = (VgcfFlags::IN_KERNEL | VgcfFlags::ONLINE).bits();
    ctx.user_regs.rip = 0x8000_0000_0000_0000;
    report::check_ret(
        "setvcpucontext with a non-canonical rip is EINVAL",
        set_context(id, 0, &ctx),
        Errno::EINVAL.neg(),
    );
    ctx.user_regs.rip = 0x100;
    report::check_ret(
        "setvcpucontext of vCPU 0 with its page tables",
        set_context(id, 0, &ctx),
        0,
    );
    let i = info(id).2;
    report::check_eq(
        "after setvcpucontext: vCPU 0 online, still paused",
        (i.nr_online_vcpus, i.dominf()),
        (1, DomInfoFlags::PAUSED),
    );
    get_context(id, &ctx);
    ctx.ctrlreg[3] = l3 << 12;
    report::check_ret(
        "setvcpucontext again with another L4 is EOPNOTSUPP",
        set_context(id, 0, &ctx),
        Errno::EOPNOTSUPP.neg(),
    );
    ctx.ctrlreg[3] = l4 << 12;
    ctx.flags = VgcfFlags::IN_KERNEL.bits();
    report::check_ret(
        "setvcpucontext again with the same L4, offline",
        set_context(id, 0, &ctx),
        0,
    );
    report::check_eq("vCPU 0 is offline again", info(id).2.nr_online_vcpus, 0);
    let ret = map_other(2, id, l4, PTE_RW);
    report::check_ret(
        "a writable mapping of the loaded L4 is EBUSY",
        ret,
        Errno::EBUSY.neg(),
    );
    if ret == 0 {
        let _ = mm::unmap_window(2);
    }
    hypercall_page(id, frames[6], l4);
}

/// `hypercall_init` fills a frame of the new domain with stubs; not on a
/// frame of another domain (`EINVAL`) or on one of its page tables
/// (`EPERM`).
fn hypercall_page(id: u16, frame: u64, l4: u64) {
    let init = |gmfn: u64| call(DomctlCmd::HypercallInit, id, &HypercallInit { gmfn }).0;
    report::check_ret(
        "hypercall_init on a frame of the new domain",
        init(frame),
        0,
    );
    let ret = map_other(2, id, frame, PTE_RO);
    if ret == 0 {
        let filled = (0..512).filter(|&i| mm::window_read(2, i) != 0).count();
        report::check(
            "the hypercall page holds stubs",
            filled > 256,
            format_args!("{filled} non-zero words"),
        );
        let _ = mm::unmap_window(2);
    }
    report::check_ret(
        "hypercall_init on dom0's own frame is EINVAL",
        init(mm::boot_l4_mfn()),
        Errno::EINVAL.neg(),
    );
    report::check_ret(
        "hypercall_init on the new domain's L4 is EPERM",
        init(l4),
        Errno::EPERM.neg(),
    );
}

/// `getvcpucontext` of vCPU 0 gives back what `setvcpucontext` loaded;
/// vCPU 1 (created, never loaded) is `ENODATA`, vCPU 2 (not created)
/// `EINVAL`.
fn get_context(id: u16, set: &VcpuGuestContext) {
    let mut got = VcpuGuestContext::zeroed();
    let get = |vcpu: u32, out: &mut VcpuGuestContext| {
        let arg = VcpuContext {
            vcpu,
            pad: 0,
            ctxt: core::ptr::from_mut(out) as u64,
        };
        call(DomctlCmd::GetVcpuContext, id, &arg).0
    };
    report::check_ret("getvcpucontext of vCPU 0", get(0, &mut got), 0);
    // The hypercall's asm may write any memory whose address escaped, as
    // `got`'s did: plain reads see what the hypervisor wrote.
    let u = &got.user_regs;
    report::check_eq(
        "getvcpucontext: flags, rip, rsp, cs, ss, rflags",
        (got.flags, u.rip, u.rsp, u.cs, u.ss, u.rflags),
        (
            0x24,
            set.user_regs.rip,
            set.user_regs.rsp,
            0xe033,
            0xe02b,
            0x200,
        ),
    );
    report::check_eq(
        "getvcpucontext: kernel stack",
        (got.kernel_ss, got.kernel_sp),
        (0xe02b, set.kernel_sp),
    );
    report::check(
        "getvcpucontext: ctrlreg[3] is the L4 loaded, ctrlreg[1] none",
        got.ctrlreg[3] == set.ctrlreg[3] && got.ctrlreg[1] == 0,
        format_args!("{:#x} {:#x}", got.ctrlreg[3], got.ctrlreg[1]),
    );
    report::check_ret(
        "getvcpucontext of vCPU 1 (never loaded) is ENODATA",
        get(1, &mut got),
        Errno::ENODATA.neg(),
    );
    report::check_ret(
        "getvcpucontext of vCPU 2 (not created) is EINVAL",
        get(2, &mut got),
        Errno::EINVAL.neg(),
    );
}

fn pauses(id: u16) {
    let (ret, _) = call(DomctlCmd::PauseDomain, id, &NoPayload);
    report::check_ret("pausedomain", ret, 0);
    let mut results = [0i64; 3];
    for r in &mut results {
        *r = call(DomctlCmd::UnpauseDomain, id, &NoPayload).0;
    }
    report::check_eq(
        "two unpauses undo creation's pause and one more; a third is EINVAL",
        results,
        [0, 0, Errno::EINVAL.neg()],
    );
    report::check_eq(
        "unpaused: no flags",
        info(id).2.dominf(),
        DomInfoFlags::empty(),
    );
    let (ret, _) = call(DomctlCmd::PauseDomain, id, &NoPayload);
    report::check_ret("pausedomain again", ret, 0);
    report::check_eq("paused again", info(id).2.dominf(), DomInfoFlags::PAUSED);
}

/// `scheduler_op` `cmd` for scheduler `sched_id` on `id` with `credit`:
/// the result and the weight and cap that came back.
fn sched(id: u16, sched_id: u32, cmd: u32, credit: SchedCredit) -> (i64, SchedCredit) {
    let op = SchedulerOp {
        sched_id,
        cmd,
        credit,
        ..SchedulerOp::default()
    };
    let (ret, out) = call(DomctlCmd::SchedulerOp, id, &op);
    (ret, out.payload::<SchedulerOp>().unwrap_or_default().credit)
}

/// Weight and cap of the first domain (two vCPUs) through credit2's
/// `scheduler_op`.
fn scheduling(id: u16) {
    let get = |id| {
        sched(
            id,
            XEN_SCHEDULER_CREDIT2,
            SchedulerOpCmd::GetInfo as u32,
            SchedCredit::default(),
        )
    };
    let put = |weight, cap| {
        sched(
            id,
            XEN_SCHEDULER_CREDIT2,
            SchedulerOpCmd::PutInfo as u32,
            SchedCredit { weight, cap },
        )
        .0
    };
    let credit = |weight, cap| SchedCredit { weight, cap };
    report::check_eq(
        "scheduler_op getinfo: defaults",
        get(id),
        (0, credit(256, 0)),
    );
    report::check_ret("scheduler_op putinfo weight 512 cap 50", put(512, 50), 0);
    report::check_eq("scheduler_op reads them back", get(id).1, credit(512, 50));
    report::check_ret(
        "scheduler_op cap 201 on two vCPUs is EINVAL",
        put(7, 201),
        Errno::EINVAL.neg(),
    );
    report::check_eq(
        "scheduler_op: the refused call's weight is set",
        get(id).1,
        credit(7, 50),
    );
    report::check_ret("scheduler_op cap 200", put(0, 200), 0);
    report::check_ret("scheduler_op weight 0 cap 0", put(0, 0), 0);
    report::check_eq(
        "scheduler_op: weight 0 keeps the weight, cap 0 removes the cap",
        get(id).1,
        credit(7, 0),
    );
    let other = credit(9, 9);
    for (what, sched_id, cmd) in [
        (
            "credit's sched_id",
            XEN_SCHEDULER_CREDIT,
            SchedulerOpCmd::GetInfo as u32,
        ),
        (
            "putvcpuinfo",
            XEN_SCHEDULER_CREDIT2,
            SchedulerOpCmd::PutVcpuInfo as u32,
        ),
        (
            "getvcpuinfo",
            XEN_SCHEDULER_CREDIT2,
            SchedulerOpCmd::GetVcpuInfo as u32,
        ),
        ("cmd 9", XEN_SCHEDULER_CREDIT2, 9),
    ] {
        report::check_eq(
            format_args!("scheduler_op with {what} is EINVAL, the op written back"),
            sched(id, sched_id, cmd, other),
            (Errno::EINVAL.neg(), other),
        );
    }
    report::check_ret("scheduler_op weight 256", put(256, 0), 0);
    report::check_eq("scheduler_op getinfo of dom0", get(0), (0, credit(256, 0)));
}

fn second_domain_and_list(first: u16) {
    let (ret, id) = create(GIVEN_ID, &pv_config(1, 0xb2));
    report::check_ret("createdomain with a given id", ret, 0);
    report::check_eq("createdomain took the given id", id, GIVEN_ID);
    let (ret, _) = create(GIVEN_ID, &pv_config(1, 0xb3));
    report::check_ret(
        "createdomain with a taken id is EEXIST",
        ret,
        Errno::EEXIST.neg(),
    );
    let (ret, reported, i) = info(first + 1);
    report::check_ret("getdomaininfo of a free id", ret, 0);
    report::check_eq(
        "getdomaininfo of a free id reports the next domain up",
        (reported, i.handle[0]),
        (GIVEN_ID, 0xb2),
    );
    let (ret, _, _) = info(GIVEN_ID + 1);
    report::check_ret(
        "getdomaininfo above every domain is ESRCH",
        ret,
        Errno::ESRCH.neg(),
    );

    let mut records = [GetDomainInfo::default(); 4];
    let list = GetDomainInfoList {
        first_domain: 0,
        max_domains: 4,
        buffer: records.as_mut_ptr() as u64,
        ..GetDomainInfoList::default()
    };
    let mut op = Sysctl::new(SysctlCmd::GetDomainInfoList, &list);
    report::check_ret("getdomaininfolist", sysctl(&mut op), 0);
    let n = op
        .payload::<GetDomainInfoList>()
        .map_or(0, |l| l.num_domains);
    // SAFETY: the hypervisor wrote the records through a raw pointer;
    // read them back without assuming the compiler saw it.
    let records = unsafe { core::ptr::read_volatile(&raw const records) };
    let ids = [records[0].domain, records[1].domain, records[2].domain];
    report::check_eq(
        "getdomaininfolist: three domains in id order",
        (n, ids),
        (3, [0, first, GIVEN_ID]),
    );

    remote_shutdown();
    let (ret, _) = call(DomctlCmd::DestroyDomain, GIVEN_ID, &NoPayload);
    report::check_ret("destroydomain of the second domain", ret, 0);
}

/// dom0 shuts the second domain down with `SCHEDOP_remote_shutdown`.
fn remote_shutdown() {
    report::check_ret(
        "remote_shutdown of a domain that does not exist is ESRCH",
        hc::sched_remote_shutdown(300, 0),
        Errno::ESRCH.neg(),
    );
    report::check_ret(
        "remote_shutdown of DOMID_SELF is ESRCH",
        hc::sched_remote_shutdown(DomId::SELF.0, 0),
        Errno::ESRCH.neg(),
    );
    report::check_ret(
        "remote_shutdown of the second domain (reboot)",
        hc::sched_remote_shutdown(GIVEN_ID, 1),
        0,
    );
    let i = info(GIVEN_ID).2;
    report::check_eq(
        "after remote_shutdown: shut down, still paused, code 1",
        (i.dominf(), i.shutdown_code()),
        (DomInfoFlags::SHUTDOWN | DomInfoFlags::PAUSED, 1),
    );
    report::check_ret(
        "remote_shutdown again (poweroff)",
        hc::sched_remote_shutdown(GIVEN_ID, 0),
        0,
    );
    report::check_eq(
        "the first reason stays",
        info(GIVEN_ID).2.shutdown_code(),
        1,
    );
}

/// The status of `port` of `dom`: state, remote domain (or 0) and
/// remote port (interdomain only).
fn port_status(dom: u16, port: u32) -> (i64, u32, u32, u32) {
    let mut s = EvtchnStatus {
        dom,
        port,
        ..EvtchnStatus::default()
    };
    let ret = hc::evtchn_status(&mut s);
    let (remote, remote_port) = match s.status {
        1 => (s.u[0] & 0xffff, 0),
        2 => (s.u[0] & 0xffff, s.u[1]),
        _ => (0, 0),
    };
    (ret, s.status, remote, remote_port)
}

/// The new domain's evtchn_pending bit of `port` and vCPU 0's
/// `evtchn_upcall_mask`, read through a read-only foreign mapping of its
/// shared_info page.
fn peer_bits(id: u16, port: u32) -> Option<(bool, u8)> {
    const SLOT: usize = 1;
    let frame = info(id).2.shared_info_frame;
    if !map_foreign(SLOT, id, frame, PTE_RO, "shared_info of the new domain") {
        return None;
    }
    let word = mm::window_read(
        SLOT,
        (offset_of!(SharedInfo, evtchn_pending) / 8) as u64 + u64::from(port / 64),
    );
    let mask = mm::window_read(SLOT, 0).to_le_bytes()[1];
    let _ = mm::unmap_window(SLOT);
    Some((word & (1 << (port % 64)) != 0, mask))
}

/// An interdomain channel between dom0 and the new domain (which does not
/// run): dom0 allocates the new domain's end, binds its own to it, sends
/// (the new domain's pending bit is set) and closes (the other end is
/// unbound again, naming dom0); then binds again. Returns dom0's port.
fn event_channels(id: u16) -> Option<u32> {
    if shared::map() != 0 {
        report::error("shared_info", format_args!("cannot map it"));
        return None;
    }
    let mut alloc = EvtchnAllocUnbound {
        dom: id,
        remote_dom: DomId::SELF.0,
        port: 0,
    };
    report::check_ret(
        "alloc_unbound in the new domain for dom0",
        hc::evtchn_alloc_unbound(&mut alloc),
        0,
    );
    report::check_eq("its port is the new domain's first", alloc.port, 1);
    report::check_eq(
        "status of the new domain's port: unbound, for dom0",
        port_status(id, alloc.port),
        (0, 1, 0, 0),
    );
    let mut nobody = EvtchnAllocUnbound { dom: 300, ..alloc };
    report::check_ret(
        "alloc_unbound in a domain that does not exist is ESRCH",
        hc::evtchn_alloc_unbound(&mut nobody),
        Errno::ESRCH.neg(),
    );
    if let Some((pending, mask)) = peer_bits(id, alloc.port) {
        report::check_eq("the new domain's port is not pending", pending, false);
        report::check_eq("the new domain's vCPU 0 has events unmasked", mask, 0);
    }
    let mut bind = EvtchnBindInterdomain {
        remote_dom: id,
        remote_port: alloc.port,
        ..EvtchnBindInterdomain::default()
    };
    let ret = hc::evtchn_bind_interdomain(&mut bind);
    if !report::check_ret("bind_interdomain to the new domain's port", ret, 0) {
        return None;
    }
    let local = bind.local_port;
    report::check_eq(
        "status of dom0's port: interdomain with the new domain's",
        port_status(DomId::SELF.0, local),
        (0, 2, u32::from(id), alloc.port),
    );
    report::check_eq(
        "status of the new domain's port: interdomain with dom0's",
        port_status(id, alloc.port),
        (0, 2, 0, local),
    );
    report::check_eq(
        "dom0's new port is pending",
        shared::evtchn_pending(local),
        Some(true),
    );
    let mut again = EvtchnBindInterdomain { ..bind };
    report::check_ret(
        "binding a connected port again is EINVAL",
        hc::evtchn_bind_interdomain(&mut again),
        Errno::EINVAL.neg(),
    );
    report::check_ret("send from dom0", hc::evtchn_send(local), 0);
    if let Some((pending, _)) = peer_bits(id, alloc.port) {
        report::check_eq("the send made the new domain's port pending", pending, true);
    }
    report::check_ret("close dom0's port", hc::evtchn_close(local), 0);
    report::check_eq(
        "after the close the new domain's port is unbound, for dom0",
        port_status(id, alloc.port),
        (0, 1, 0, 0),
    );
    let ret = hc::evtchn_bind_interdomain(&mut bind);
    report::check_ret("bind_interdomain again", ret, 0);
    (ret == 0).then_some(bind.local_port)
}

fn destroy(id: u16, bound: Option<u32>) {
    if shared::map() != 0 {
        report::error("shared_info", format_args!("cannot map it"));
        return;
    }
    let mut bind = EvtchnBindVirq {
        virq: Virq::DomExc as u32,
        vcpu: 0,
        port: 0,
    };
    if !report::check_ret("bind VIRQ_DOM_EXC", hc::evtchn_bind_virq(&mut bind), 0) {
        return;
    }
    let _ = shared::clear_evtchn_pending(bind.port);
    let (ret, _) = call(DomctlCmd::DestroyDomain, id, &NoPayload);
    report::check_ret("destroydomain", ret, 0);
    report::check_eq(
        "destroydomain raises VIRQ_DOM_EXC",
        shared::evtchn_pending(bind.port),
        Some(true),
    );
    if let Some(port) = bound {
        report::check_eq(
            "after destroydomain dom0's port is unbound, naming the destroyed domain",
            port_status(DomId::SELF.0, port),
            (0, 1, u32::from(id), 0),
        );
        let _ = hc::evtchn_close(port);
    }
    let (ret, reported, i) = info(id);
    let gone = ret == Errno::ESRCH.neg()
        || (ret == 0 && reported != id)
        || (ret == 0 && i.dominf().contains(DomInfoFlags::DYING));
    report::check(
        "after destroydomain the domain is gone or dying",
        gone,
        format_args!("{} d{reported} flags {:#x}", report::Ret(ret), i.flags),
    );
    let (ret, _) = call(DomctlCmd::PauseDomain, 300, &NoPayload);
    report::check_ret(
        "pausedomain of a domain that never existed is still ESRCH",
        ret,
        Errno::ESRCH.neg(),
    );
    let _ = hc::evtchn_close(bind.port);
}

/// Machine code of the domain `run_domain` starts (at virtual address 0,
/// its hypercall page at 0x1000): stores a marker at 0x800, calls
/// `domctl` on the structure at 0x900 and stores the result at 0x808,
/// then `SCHEDOP_shutdown` with the reason at 0xa00.
const DOMU_CODE: [u8; 53] = [
    0x48, 0xb8, 0xfe, 0xca, 0x0d, 0x60, 0, 0, 0, 0, // mov rax, 0x600dcafe
    0x48, 0x89, 0x04, 0x25, 0x00, 0x08, 0, 0, // mov [0x800], rax
    0xbf, 0x00, 0x09, 0, 0, // mov edi, 0x900
    0xe8, 0x64, 0x14, 0, 0, // call 0x1480 (hypercall page slot 36, domctl)
    0x48, 0x89, 0x04, 0x25, 0x08, 0x08, 0, 0, // mov [0x808], rax
    0xbf, 0x02, 0, 0, 0, // mov edi, 2 (SCHEDOP_shutdown)
    0xbe, 0x00, 0x0a, 0, 0, // mov esi, 0xa00
    0xe8, 0x6d, 0x13, 0, 0, // call 0x13a0 (hypercall page slot 29, sched_op)
    0xeb, 0xfe, // jmp .
];
/// The shutdown reason the domain passes (reboot).
const DOMU_REASON: u32 = 1;

/// A domain that runs: dom0 builds it as a toolstack does (memory, page
/// tables, code, hypercall page, vCPU 0's context), unpauses it and
/// yields until it has shut down. The domain's code writes a marker, gets
/// `EPERM` for a `domctl` (a domain without privilege) and shuts itself
/// down with reason reboot, which dom0 sees in `getdomaininfo` and
/// through `VIRQ_DOM_EXC`; then dom0 destroys it.
fn run_domain() {
    const TABLE: u64 = 0x67;
    const LEAF: u64 = 0x63;
    let (ret, id) = create(0, &pv_config(1, 0xc3));
    if !report::check_ret("createdomain of a domain that runs", ret, 0) {
        return;
    }
    let _ = call(DomctlCmd::MaxVcpus, id, &MaxVcpus { max: 1 });
    let _ = call(DomctlCmd::MaxMem, id, &MaxMem { max_memkb: 64 });
    let mut frames = [0u64; 6];
    for (i, f) in frames.iter_mut().enumerate() {
        *f = i as u64;
    }
    // SAFETY: populate_physmap only fills `frames` with the new frames.
    let done = unsafe { hc::reservation(MemoryOpCmd::PopulatePhysmap, &mut frames, 0, 0, id) };
    if !report::check_ret("populate_physmap of its 6 pages", done, 6) {
        return;
    }
    let [code, hypercalls, l4, l3, l2, l1] = frames;
    let mut request = Domctl::new(DomctlCmd::GetDomainInfo, id, &NoPayload);
    request.domain = id;
    let mut bytes = [0u8; Domctl::SIZE];
    let _ = request.to_wire(&mut bytes);
    // The code's words, the domctl structure's at 0x900, the reason.
    let mut page = [(0u64, 0u64); 7 + Domctl::SIZE / 8 + 1];
    for (i, chunk) in DOMU_CODE.chunks(8).enumerate() {
        let mut w = [0u8; 8];
        w[..chunk.len()].copy_from_slice(chunk);
        page[i] = (i as u64, u64::from_le_bytes(w));
    }
    for (i, chunk) in bytes.chunks(8).enumerate() {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        page[7 + i] = (0x900 / 8 + i as u64, u64::from_le_bytes(w));
    }
    page[7 + Domctl::SIZE / 8] = (0xa00 / 8, u64::from(DOMU_REASON));
    let built = write_foreign(id, code, &page)
        && write_foreign(
            id,
            l1,
            &[(0, (code << 12) | LEAF), (1, (hypercalls << 12) | LEAF)],
        )
        && write_foreign(id, l2, &[(0, (l1 << 12) | TABLE)])
        && write_foreign(id, l3, &[(0, (l2 << 12) | TABLE)])
        && write_foreign(id, l4, &[(0, (l3 << 12) | TABLE)]);
    if !built {
        return;
    }
    report::check_ret(
        "hypercall_init of its hypercall page",
        call(
            DomctlCmd::HypercallInit,
            id,
            &HypercallInit { gmfn: hypercalls },
        )
        .0,
        0,
    );
    let mut ctx = VcpuGuestContext::zeroed();
    ctx.flags = (VgcfFlags::IN_KERNEL | VgcfFlags::ONLINE).bits();
    ctx.user_regs.rip = 0;
    ctx.user_regs.rsp = 0x1000;
    ctx.user_regs.cs = 0xe033;
    ctx.user_regs.ss = 0xe02b;
    ctx.user_regs.rflags = 0x200;
    ctx.kernel_ss = 0xe02b;
    ctx.kernel_sp = 0x1000;
    ctx.ctrlreg[3] = l4 << 12;
    report::check_ret("setvcpucontext of its vCPU 0", set_context(id, 0, &ctx), 0);
    let mut bind = EvtchnBindVirq {
        virq: Virq::DomExc as u32,
        vcpu: 0,
        port: 0,
    };
    if hc::evtchn_bind_virq(&mut bind) != 0 {
        report::error("VIRQ_DOM_EXC", format_args!("cannot bind it"));
        return;
    }
    let _ = shared::clear_evtchn_pending(bind.port);
    report::check_ret(
        "unpausedomain starts it",
        call(DomctlCmd::UnpauseDomain, id, &NoPayload).0,
        0,
    );
    let mut yields = 0;
    while yields < 1000 && !info(id).2.dominf().contains(DomInfoFlags::SHUTDOWN) {
        hc::sched_yield();
        yields += 1;
    }
    let i = info(id).2;
    report::check_eq(
        "it ran and shut itself down (reboot)",
        (
            i.dominf().contains(DomInfoFlags::SHUTDOWN),
            i.shutdown_code(),
        ),
        (true, DOMU_REASON),
    );
    report::check_eq(
        "its shutdown raised VIRQ_DOM_EXC",
        shared::evtchn_pending(bind.port),
        Some(true),
    );
    let ret = map_other(2, id, code, PTE_RO);
    if ret == 0 {
        report::check_eq(
            "it wrote its marker",
            mm::window_read(2, 0x800 / 8),
            0x600d_cafe,
        );
        report::check_eq(
            "its domctl was refused with EPERM",
            mm::window_read(2, 0x808 / 8).cast_signed(),
            Errno::EPERM.neg(),
        );
        let _ = mm::unmap_window(2);
    }
    report::check_ret(
        "destroydomain of it",
        call(DomctlCmd::DestroyDomain, id, &NoPayload).0,
        0,
    );
    let _ = hc::evtchn_close(bind.port);
}

/// Builds a domain whose vCPU 0 runs `code` at virtual address 0 (its
/// stack below 0x1000), unpaused; its id and frames (code, then L4 to L1).
pub(super) fn start_domain(code: &[(u64, u64)], handle: u8) -> Option<(u16, [u64; 5])> {
    const TABLE: u64 = 0x67;
    const LEAF: u64 = 0x63;
    let (ret, id) = create(0, &pv_config(1, handle));
    if ret != 0 {
        report::error("createdomain", format_args!("{}", report::Ret(ret)));
        return None;
    }
    let _ = call(DomctlCmd::MaxVcpus, id, &MaxVcpus { max: 1 });
    let _ = call(DomctlCmd::MaxMem, id, &MaxMem { max_memkb: 64 });
    let mut frames: [u64; 5] = core::array::from_fn(|i| i as u64);
    // SAFETY: populate_physmap only fills `frames` with the new frames.
    let done = unsafe { hc::reservation(MemoryOpCmd::PopulatePhysmap, &mut frames, 0, 0, id) };
    if done != 5 {
        report::error("populate_physmap", format_args!("{}", report::Ret(done)));
        return None;
    }
    let [text, l4, l3, l2, l1] = frames;
    let built = write_foreign(id, text, code)
        && write_foreign(id, l1, &[(0, (text << 12) | LEAF)])
        && write_foreign(id, l2, &[(0, (l1 << 12) | TABLE)])
        && write_foreign(id, l3, &[(0, (l2 << 12) | TABLE)])
        && write_foreign(id, l4, &[(0, (l3 << 12) | TABLE)]);
    if !built {
        return None;
    }
    let mut ctx = VcpuGuestContext::zeroed();
    ctx.flags = (VgcfFlags::IN_KERNEL | VgcfFlags::ONLINE).bits();
    ctx.user_regs.rsp = 0x1000;
    ctx.user_regs.cs = 0xe033;
    ctx.user_regs.ss = 0xe02b;
    ctx.user_regs.rflags = 0x200;
    ctx.kernel_ss = 0xe02b;
    ctx.kernel_sp = 0x1000;
    ctx.ctrlreg[3] = l4 << 12;
    let ret = set_context(id, 0, &ctx);
    let unpaused = call(DomctlCmd::UnpauseDomain, id, &NoPayload).0;
    if ret != 0 || unpaused != 0 {
        report::error(
            "start",
            format_args!("{} {}", report::Ret(ret), report::Ret(unpaused)),
        );
        return None;
    }
    Some((id, frames))
}

/// A domain that never stops (`jmp .`) cannot keep dom0 from waking: dom0
/// sleeps in `SCHEDOP_poll` with a 30 ms timeout and wakes; the domain
/// has used the CPU meanwhile; dom0 pauses and destroys it.
fn spinning_domain() {
    const WAIT_NS: u64 = 30_000_000;
    let Some((id, _)) = start_domain(&[(0, SPIN)], 0xd4) else {
        return;
    };
    let Some((ret, slept)) = sleep_in_poll(WAIT_NS) else {
        return;
    };
    report::check(
        "dom0 wakes from a 30 ms poll while another domain spins",
        ret == 0 && slept >= WAIT_NS,
        format_args!("{} after {slept} ns", report::Ret(ret)),
    );
    let i = info(id).2;
    report::check(
        "the spinning domain ran meanwhile",
        i.cpu_time > 0,
        format_args!("cpu_time {} flags {:#x}", i.cpu_time, i.flags),
    );
    report::check_ret(
        "pausedomain of the spinning domain",
        call(DomctlCmd::PauseDomain, id, &NoPayload).0,
        0,
    );
    report::check_ret(
        "destroydomain of the spinning domain",
        call(DomctlCmd::DestroyDomain, id, &NoPayload).0,
        0,
    );
}

/// Sleeps in `SCHEDOP_poll` on a port of its own that nothing sends to,
/// until `ns` from now: the poll's result and the time slept; `None`
/// (reported) without a system time or a port.
pub(super) fn sleep_in_poll(ns: u64) -> Option<(i64, u64)> {
    let mut alloc = EvtchnAllocUnbound {
        dom: DomId::SELF.0,
        remote_dom: DomId::SELF.0,
        port: 0,
    };
    let (Some(start), 0) = (
        shared::system_time_of(0),
        hc::evtchn_alloc_unbound(&mut alloc),
    ) else {
        report::error("poll", format_args!("no system time or port"));
        return None;
    };
    let ret = hc::sched_poll(&[alloc.port], start + ns);
    let end = shared::system_time_of(0).unwrap_or(start);
    let _ = hc::evtchn_close(alloc.port);
    Some((ret, end.saturating_sub(start)))
}
