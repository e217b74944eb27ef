//! `domctl` (36) and `sysctl` (35): the toolstack's control of domains
//! and the machine, as Xen 4.17 answers them (`docs/abi-differences.md`
//! lists what is not implemented).
//!
//! Order of checks, as Xen's: the argument is copied in (`EFAULT`), its
//! interface version checked (`EACCES`), the target domain looked up
//! (`ESRCH`; not for `createdomain`, and `getdomaininfo` reports the next
//! domain up), then the caller's privilege (`EPERM`: only the control
//! domain, dom0), then the command (`ENOSYS` for those not implemented).
//! Commands that need the target paused refuse the caller itself
//! (`EINVAL`).
//!
//! | domctl | here |
//! |---|---|
//! | `createdomain` | a paused PV domain with its shared_info page, no vCPUs, `max_pages` 0; id chosen (rover) or given |
//! | `destroydomain` | every frame returned (the domain's types, pins, shared_info and allocations dropped), then `VIRQ_DOM_EXC` |
//! | `pausedomain`/`unpausedomain` | the controller's pause count |
//! | `getdomaininfo` | every field; the first domain at or above the id |
//! | `max_mem`, `max_vcpus`, `setdomainhandle`, `set_address_size` (64), `get_address_size` | as Xen |
//! | `scheduler_op` | credit2's weight and cap (`crate::sched::credit`), Xen's errors |
//!
//! | sysctl | here |
//! |---|---|
//! | `getdomaininfolist` | as `getdomaininfo`, for each domain from `first_domain` |
//! | `readconsole` | the hypervisor's log ring (`crate::console::LogRing`), as Xen's `conring` |
//! | `physinfo` | one CPU, one node, the frame allocator's counts |
//! | `sched_id` | credit2's number (Xen 4.17's default, whose `scheduler_op` parameters `crate::sched::credit` takes) |
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::boxed::Box;
use alloc::vec::Vec;

use dom0_abi::Errno;
use dom0_abi::cpu::{VcpuGuestContext, VgcfFlags};
use dom0_abi::domctl::{
    AddressSize, CdfFlags, CreateDomain, DomInfoFlags, Domctl, DomctlCmd, EmulationFlags,
    GRANT_VERSION_MASK, GetDomainInfo, GetPageFrameInfo3, HypercallInit, INVALID_MAX_VCPU_ID,
    IomemPermission, IoportPermission, IrqPermission, MaxMem, MaxVcpus, MiscFlags, PFINFO_L1TAB,
    PFINFO_L2TAB, PFINFO_L3TAB, PFINFO_L4TAB, PFINFO_LPINTAB, PFINFO_NOTAB, PFINFO_XTAB,
    SchedCredit, SchedulerOp, SchedulerOpCmd, SetDomainHandle, VcpuContext,
    XEN_DOMCTL_INTERFACE_VERSION, XEN_SCHEDULER_CREDIT2,
};
use dom0_abi::event_channel::Virq;
use dom0_abi::hypercall::{HYPERCALL_PAGE_SIZE, fill_hypercall_page};
use dom0_abi::sysctl::{
    CpuInfo, GetCpuInfo, GetDomainInfoList, PhysCap, PhysInfo, ReadConsole, SchedId, Sysctl,
    SysctlCmd, XEN_SYSCTL_INTERFACE_VERSION,
};
use dom0_abi::types::{DomId, Mfn};
use dom0_abi::vcpu::RUNSTATE_RUNNING;
use dom0_abi::wire::Wire;

use super::mmu::{MmuEnv, VALID_VM_ASSISTS};
use super::vcpu;
use super::{read_struct, write_struct};
use crate::console::LogRead;
use crate::domain::{
    DEFAULT_GRANT_FRAMES, DEFAULT_MAPTRACK_FRAMES, Domain, DomainEntry, EMU_PIT, MAX_PAUSES,
};
use crate::evtchn::{EventBits, EventChannels};
use crate::gnttab::GrantTable;
use crate::ioport::{self, IoPorts};
use crate::mm::effects::Effects;
use crate::mm::foreign::WithDomain;
use crate::mm::frame_table::{FrameInfo, FrameTable, Owner, PageType};
use crate::mm::lifecycle::TeardownReport;
use crate::mm::machine::VcpuMm;
use crate::mm::types::Mmu;
use crate::pirq::Pirqs;
use crate::sched::credit::Share;
use crate::vcpu::{Power, Vcpu};

/// Most vCPUs of a PV domain (Xen's `MAX_VIRT_CPUS`).
const MAX_PV_VCPUS: u32 = 8192;
/// Xen's default `gnttab_max_frames` and `gnttab_max_maptrack_frames`
/// (the most a domain may ask for).
const MAX_GRANT_FRAMES: i32 = DEFAULT_GRANT_FRAMES.cast_signed();
const MAX_MAPTRACK_FRAMES: i32 = DEFAULT_MAPTRACK_FRAMES.cast_signed();
/// shared_info must lie below 4 GiB, as Xen allocates it (a frame
/// number, as `alloc_frames` takes it).
const SHARED_INFO_LIMIT: u64 = (1 << 32) >> 12;

/// Facts about the machine `physinfo` reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MachineInfo {
    /// The CPU's clock (the TSC's rate) in kHz.
    pub cpu_khz: u32,
    /// Frames the allocator manages.
    pub total_pages: u64,
    /// Of which free.
    pub free_pages: u64,
    /// Physical address bits of the CPU.
    pub phys_bits: u8,
    /// Bytes of the hypervisor's heap in use.
    pub heap_used: u64,
}

/// What the hypervisor itself held for a destroyed domain, from the
/// machine before and after its teardown: the heap it gave back and the
/// frames returned beyond the domain's own pages (its shared_info page,
/// its grant-table frames).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeldForDomain {
    /// Heap bytes freed.
    pub heap: u64,
    /// Hypervisor frames freed.
    pub frames: u64,
}

impl HeldForDomain {
    /// From the machine `before` and `after` the teardown of a domain
    /// that owned `own_pages` pages.
    #[must_use]
    pub fn between(before: &MachineInfo, after: &MachineInfo, own_pages: u64) -> HeldForDomain {
        HeldForDomain {
            heap: before.heap_used.saturating_sub(after.heap_used),
            frames: after
                .free_pages
                .saturating_sub(before.free_pages)
                .saturating_sub(own_pages),
        }
    }

    /// Both in bytes.
    #[must_use]
    pub fn bytes(self) -> u64 {
        self.heap + self.frames * crate::layout::PAGE_SIZE
    }
}

/// What `domctl` and `sysctl` need besides the memory core: the other
/// domains of the table. The caller's own domain is [`super::Env::domain`]
/// and never one of these.
pub trait ControlEnv: MmuEnv {
    /// Domain `id`, which is not the caller, held for the rest of the
    /// hypercall; `None` if there is no such domain.
    fn other_domain(&mut self, id: DomId) -> Option<&mut DomainEntry>;
    /// The first existing domain with an id of at least `from` (the caller
    /// included).
    fn first_domain_from(&mut self, from: DomId) -> Option<DomId>;
    /// A free id for a new domain, after the last one handed out (Xen's
    /// rover: 1, 2, 3, ... wrapping round to 1).
    fn free_domain_id(&mut self) -> Option<DomId>;
    /// Puts a new domain into the table; gives it back if its id is taken.
    fn insert_domain(&mut self, entry: Box<DomainEntry>) -> Result<(), Box<DomainEntry>>;
    /// Takes domain `id` (not the caller) out of the table.
    fn remove_domain(&mut self, id: DomId) -> Option<Box<DomainEntry>>;
    /// dom0 could not be told now that a domain went away (its slot was
    /// busy, `Env::slot_busy`, after the change was made): it gets its
    /// `VIRQ_DOM_EXC` the next time it is at hand.
    fn owe_dom_exc(&mut self) {}
    /// The machine's facts.
    fn machine_info(&mut self) -> MachineInfo;
    /// How long physical CPU `cpu` (an index into
    /// [`super::Env::host`]'s `pcpus`) has been idle, in ns of system
    /// time (0 for one that is not online).
    fn idle_ns(&mut self, cpu: usize) -> u64;
    /// Reads the hypervisor's console log (`crate::console::LogRing`) into
    /// the caller's `buffer`: the bytes copied and the position after
    /// them; `EFAULT` if a piece cannot be written.
    fn read_console(&mut self, req: LogRead, buffer: u64) -> Result<(u32, u32), Errno>;
    /// The caller's event channels and the event bits of its shared_info
    /// page, with those of domain `other` (not the caller); `None` if
    /// there is no such domain.
    fn event_channels_of(&mut self, other: DomId) -> Option<EventPair<'_>>;
}

/// Two domains' event channels with their event bits: the caller's and
/// another domain's.
pub struct EventPair<'a> {
    /// The caller's channels.
    pub own: &'a mut EventChannels,
    /// The caller's event bits.
    pub own_bits: &'a mut dyn EventBits,
    /// The other domain's channels.
    pub peer: &'a mut EventChannels,
    /// The other domain's event bits.
    pub peer_bits: &'a mut dyn EventBits,
    /// Whether the other domain is dying (destroyed, not yet freed).
    pub peer_dying: bool,
}

/// `domctl(arg)`; see the module documentation.
pub fn domctl(env: &mut impl ControlEnv, fx: &mut Effects, arg: u64) -> Result<u64, Errno> {
    let mut op: Domctl = read_struct(env, arg)?;
    if op.interface_version != XEN_DOMCTL_INTERFACE_VERSION {
        return Err(Errno::EACCES);
    }
    let caller = env.domain().id;
    let privileged = env.domain().is_privileged();
    let cmd = DomctlCmd::from_number(u64::from(op.cmd));
    let target = DomId(op.domain);
    match cmd {
        Some(DomctlCmd::CreateDomain) => {
            if !privileged {
                return Err(Errno::EPERM);
            }
            let config: CreateDomain = op.payload().ok_or(Errno::EFAULT)?;
            let id = create_domain(env, fx, target, &config)?;
            op.domain = id.0;
            write_struct(env, arg, &op)?;
            return Ok(0);
        }
        Some(DomctlCmd::GetDomainInfo) => {
            let found = if target.is_ordinary() {
                env.first_domain_from(target).ok_or(Errno::ESRCH)?
            } else if target == caller {
                target
            } else {
                return Err(Errno::EINVAL);
            };
            if !privileged {
                return Err(Errno::EPERM);
            }
            let info = domain_info(env, found).ok_or(Errno::ESRCH)?;
            op.domain = found.0;
            info.to_wire(&mut op.u).ok_or(Errno::EFAULT)?;
            write_struct(env, arg, &op)?;
            return Ok(0);
        }
        _ => {}
    }
    let exists = target == caller || env.other_domain(target).is_some();
    if !exists {
        return Err(Errno::ESRCH);
    }
    if !privileged {
        return Err(Errno::EPERM);
    }
    let Some(cmd) = cmd else {
        return Err(Errno::ENOSYS);
    };
    let itself = target == caller;
    match cmd {
        DomctlCmd::DestroyDomain => {
            if itself {
                return Err(Errno::EINVAL);
            }
            destroy_domain(env, fx, target)
        }
        DomctlCmd::PauseDomain => {
            if itself {
                return Err(Errno::EINVAL);
            }
            let d = other(env, target)?;
            if d.domain.pauses == MAX_PAUSES {
                return Err(Errno::EOVERFLOW);
            }
            d.domain.pauses += 1;
            for v in &d.vcpus {
                crate::fastpath::note_work(v.on_cpu);
            }
            Ok(0)
        }
        DomctlCmd::UnpauseDomain => {
            let d = target_domain(env, target)?;
            if d.pauses == 0 {
                return Err(Errno::EINVAL);
            }
            d.pauses -= 1;
            Ok(0)
        }
        DomctlCmd::MaxMem => {
            let MaxMem { max_memkb } = op.payload().ok_or(Errno::EFAULT)?;
            target_domain(env, target)?.mm.max_pages = max_memkb >> 2;
            Ok(0)
        }
        DomctlCmd::MaxVcpus => {
            if itself {
                return Err(Errno::EINVAL);
            }
            let MaxVcpus { max } = op.payload().ok_or(Errno::EFAULT)?;
            let d = other(env, target)?;
            if max != d.domain.config_vcpus {
                return Err(Errno::EINVAL);
            }
            if d.vcpus.is_empty() {
                d.make_vcpus(max);
            }
            Ok(0)
        }
        DomctlCmd::SetVcpuContext => {
            if itself {
                return Err(Errno::EINVAL);
            }
            let VcpuContext { vcpu, ctxt, .. } = op.payload().ok_or(Errno::EFAULT)?;
            set_vcpu_context(env, fx, target, vcpu, ctxt)
        }
        DomctlCmd::GetVcpuContext => {
            let VcpuContext { vcpu, ctxt, .. } = op.payload().ok_or(Errno::EFAULT)?;
            let context = if itself {
                if vcpu == env.vcpu().id {
                    return Err(Errno::EINVAL);
                }
                let vm_assist = env.domain().mm.vm_assist;
                let v = env.vcpu_by_id(vcpu).ok_or(Errno::EINVAL)?;
                if !v.initialised {
                    return Err(Errno::ENODATA);
                }
                vcpu::saved_context(v, vm_assist)
            } else {
                let entry = other(env, target)?;
                let vm_assist = entry.domain.mm.vm_assist;
                let index = usize::try_from(vcpu).map_err(|_| Errno::EINVAL)?;
                let v = entry.vcpus.get(index).ok_or(Errno::EINVAL)?;
                if !v.initialised {
                    return Err(Errno::ENODATA);
                }
                vcpu::saved_context(v, vm_assist)
            };
            write_struct(env, ctxt, &context)?;
            Ok(0)
        }
        DomctlCmd::HypercallInit => {
            let HypercallInit { gmfn } = op.payload().ok_or(Errno::EFAULT)?;
            hypercall_init(env, fx, target, Mfn(gmfn))
        }
        DomctlCmd::SchedulerOp => {
            let mut sop: SchedulerOp = op.payload().ok_or(Errno::EFAULT)?;
            let now = env.now_ns();
            let result = if itself {
                let vcpus = env.domain().config_vcpus;
                scheduler_op(&mut env.domain().share, vcpus, &mut sop, now)
            } else {
                let d = other(env, target)?;
                let vcpus = u32::try_from(d.vcpus.len()).unwrap_or(u32::MAX);
                scheduler_op(&mut d.domain.share, vcpus, &mut sop, now)
            };
            // Written back whatever the outcome, as Xen does.
            sop.to_wire(&mut op.u).ok_or(Errno::EFAULT)?;
            write_struct(env, arg, &op)?;
            result.map(|()| 0)
        }
        DomctlCmd::SetDomainHandle => {
            let SetDomainHandle { handle } = op.payload().ok_or(Errno::EFAULT)?;
            target_domain(env, target)?.handle = handle;
            Ok(0)
        }
        DomctlCmd::SetAddressSize => {
            let AddressSize { size } = op.payload().ok_or(Errno::EFAULT)?;
            match size {
                64 => Ok(0),
                32 => Err(Errno::EOPNOTSUPP),
                _ => Err(Errno::EINVAL),
            }
        }
        DomctlCmd::GetAddressSize => {
            AddressSize { size: 64 }
                .to_wire(&mut op.u)
                .ok_or(Errno::EFAULT)?;
            write_struct(env, arg, &op)?;
            Ok(0)
        }
        DomctlCmd::IoportPermission => {
            let p: IoportPermission = op.payload().ok_or(Errno::EFAULT)?;
            ioport_permission(env, target, p)
        }
        DomctlCmd::IrqPermission => {
            let p: IrqPermission = op.payload().ok_or(Errno::EFAULT)?;
            irq_permission(env, target, p)
        }
        DomctlCmd::IomemPermission => {
            let p: IomemPermission = op.payload().ok_or(Errno::EFAULT)?;
            iomem_permission(env, target, p)
        }
        DomctlCmd::GetPageFrameInfo3 => {
            let p: GetPageFrameInfo3 = op.payload().ok_or(Errno::EFAULT)?;
            getpageframeinfo3(env, target, p)
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// `sysctl(arg)`; see the module documentation.
pub fn sysctl(env: &mut impl ControlEnv, arg: u64) -> Result<u64, Errno> {
    let mut op: Sysctl = read_struct(env, arg)?;
    if op.interface_version != XEN_SYSCTL_INTERFACE_VERSION {
        return Err(Errno::EACCES);
    }
    if !env.domain().is_privileged() {
        return Err(Errno::EPERM);
    }
    match SysctlCmd::from_number(u64::from(op.cmd)) {
        Some(SysctlCmd::GetDomainInfoList) => {
            let mut list: GetDomainInfoList = op.payload().ok_or(Errno::EFAULT)?;
            let mut done = 0u32;
            let mut next = DomId(list.first_domain);
            while done < list.max_domains && next.is_ordinary() {
                let Some(id) = env.first_domain_from(next) else {
                    break;
                };
                let info = domain_info(env, id).ok_or(Errno::ESRCH)?;
                let at = list
                    .buffer
                    .wrapping_add(u64::from(done) * GetDomainInfo::SIZE as u64);
                write_struct(env, at, &info)?;
                done += 1;
                next = DomId(id.0 + 1);
            }
            list.num_domains = done;
            list.to_wire(&mut op.u).ok_or(Errno::EFAULT)?;
        }
        Some(SysctlCmd::PhysInfo) => {
            let m = env.machine_info();
            let cpus = u32::try_from(env.host().pcpus.len().max(1)).unwrap_or(u32::MAX);
            let info = PhysInfo {
                threads_per_core: 1,
                cores_per_socket: 1,
                nr_cpus: cpus,
                max_cpu_id: cpus - 1,
                nr_nodes: 1,
                max_node_id: 0,
                cpu_khz: m.cpu_khz,
                capabilities: PhysCap::PV.bits(),
                total_pages: m.total_pages,
                free_pages: m.free_pages,
                max_mfn: Mmu::new(env, &mut Effects::default())
                    .max_page()
                    .saturating_sub(1),
                ..PhysInfo::default()
            };
            info.to_wire(&mut op.u).ok_or(Errno::EFAULT)?;
        }
        Some(SysctlCmd::ReadConsole) => {
            let mut rc: ReadConsole = op.payload().ok_or(Errno::EFAULT)?;
            let req = LogRead {
                clear: rc.clear != 0,
                incremental: rc.incremental != 0,
                index: rc.index,
                count: rc.count,
            };
            (rc.count, rc.index) = env.read_console(req, rc.buffer)?;
            rc.to_wire(&mut op.u).ok_or(Errno::EFAULT)?;
        }
        Some(SysctlCmd::GetCpuInfo) => {
            let mut req: GetCpuInfo = op.payload().ok_or(Errno::EFAULT)?;
            let cpus = u32::try_from(env.host().pcpus.len()).unwrap_or(u32::MAX);
            let n = req.max_cpus.min(cpus);
            for i in 0..n {
                let info = CpuInfo {
                    idletime: env.idle_ns(i as usize),
                };
                let at = req.info.wrapping_add(u64::from(i) * CpuInfo::SIZE as u64);
                write_struct(env, at, &info)?;
            }
            req.nr_cpus = n;
            req.to_wire(&mut op.u).ok_or(Errno::EFAULT)?;
        }
        Some(SysctlCmd::SchedId) => {
            SchedId {
                sched_id: XEN_SCHEDULER_CREDIT2,
            }
            .to_wire(&mut op.u)
            .ok_or(Errno::EFAULT)?;
        }
        _ => return Err(Errno::ENOSYS),
    }
    write_struct(env, arg, &op)?;
    Ok(0)
}

/// `scheduler_op` on a domain with `share` and `vcpus` vCPUs, as Xen
/// 4.17's credit2 answers it: `EINVAL` for another scheduler's id, a
/// per-vCPU or unknown `cmd`, or a cap above 100 per vCPU (the weight of
/// the same call is set all the same, as there). On put a weight of 0
/// leaves the weight as it is and a cap of 0 removes the cap.
fn scheduler_op(
    share: &mut Share,
    vcpus: u32,
    op: &mut SchedulerOp,
    now: u64,
) -> Result<(), Errno> {
    if op.sched_id != XEN_SCHEDULER_CREDIT2 {
        return Err(Errno::EINVAL);
    }
    match SchedulerOpCmd::from_number(u64::from(op.cmd)) {
        Some(SchedulerOpCmd::GetInfo) => {
            op.credit = SchedCredit {
                weight: share.weight(),
                cap: share.cap(),
            };
            Ok(())
        }
        Some(SchedulerOpCmd::PutInfo) => {
            share.set_weight(op.credit.weight);
            let cap = op.credit.cap;
            if u32::from(cap) > vcpus.saturating_mul(100) {
                return Err(Errno::EINVAL);
            }
            share.set_cap(cap, now);
            Ok(())
        }
        _ => Err(Errno::EINVAL),
    }
}

/// `XEN_DOMCTL_ioport_permission`: grants or revokes ports
/// `first_port..first_port + nr_ports` of domain `target`. `EINVAL` for
/// no port, a range that wraps or passes 0xFFFF; `EPERM` if the caller
/// may not reach every port of it.
fn ioport_permission(
    env: &mut impl ControlEnv,
    target: DomId,
    p: IoportPermission,
) -> Result<u64, Errno> {
    let end = p.first_port.checked_add(p.nr_ports).ok_or(Errno::EINVAL)?;
    if end <= p.first_port || end > ioport::NR_PORTS {
        return Err(Errno::EINVAL);
    }
    let (first, last) = (p.first_port, end - 1);
    let caller_has = env
        .domain()
        .ioports
        .as_deref()
        .is_some_and(|ports| ports.permitted(first, last));
    if !caller_has {
        return Err(Errno::EPERM);
    }
    let d = target_domain(env, target)?;
    d.ioports
        .get_or_insert_with(|| Box::new(IoPorts::none()))
        .set(first, last, p.allow_access != 0);
    d.refresh_io_caps();
    Ok(0)
}

/// `XEN_DOMCTL_iomem_permission`: grants or revokes domain `target`'s
/// right to map machine frames `first_mfn..first_mfn + nr_mfns` as device
/// memory. `EINVAL` for a range that wraps (`nr_mfns` 0 included); `EPERM`
/// if the caller may not map every frame of it itself (so a domain that
/// gave up a frame cannot take it back); `ENOMEM` if the target's rights
/// would need too many runs ([`crate::iomem::MAX_IOMEM_RUNS`]).
fn iomem_permission(
    env: &mut impl ControlEnv,
    target: DomId,
    p: IomemPermission,
) -> Result<u64, Errno> {
    let first = p.first_mfn;
    let last = first.wrapping_add(p.nr_mfns).wrapping_sub(1);
    if last < first {
        return Err(Errno::EINVAL);
    }
    if !env.domain().iomem.permits(first, last) {
        return Err(Errno::EPERM);
    }
    let d = target_domain(env, target)?;
    if p.allow_access != 0 {
        d.iomem.grant(first, last)?;
    } else {
        d.iomem.revoke(first, last)?;
    }
    d.refresh_io_caps();
    Ok(0)
}

/// `XEN_DOMCTL_irq_permission`: grants or revokes domain `target`'s use
/// of the GSI behind the caller's PIRQ `pirq`. `EINVAL` for a PIRQ past
/// the caller's `nr_pirqs`; `EPERM` if the caller has it unmapped or may
/// not use its GSI.
fn irq_permission(
    env: &mut impl ControlEnv,
    target: DomId,
    p: IrqPermission,
) -> Result<u64, Errno> {
    let own = &env.domain().pirqs;
    let pirq = own.check(p.pirq.into())?;
    let gsi = own
        .get(pirq)
        .map(|m| m.gsi)
        .filter(|&gsi| own.permitted(gsi))
        .ok_or(Errno::EPERM)?;
    target_domain(env, target)?
        .pirqs
        .permit(gsi, p.allow_access != 0);
    Ok(0)
}

/// `XEN_DOMCTL_getpageframeinfo3`: replaces each of the `num` MFNs at
/// `array` with its type word as domain `target` holds it
/// ([`pfinfo`]). `E2BIG` for more than 1024; `EFAULT` for an entry that
/// cannot be read or written (the entries before it are done).
fn getpageframeinfo3(
    env: &mut impl ControlEnv,
    target: DomId,
    p: GetPageFrameInfo3,
) -> Result<u64, Errno> {
    if p.num > 1024 {
        return Err(Errno::E2BIG);
    }
    for i in 0..p.num {
        let at = p.array.wrapping_add(8 * i);
        let mfn: u64 = read_struct(env, at)?;
        let word = pfinfo(crate::index::get_mut(env.frames(), mfn), target);
        write_struct(env, at, &word)?;
    }
    Ok(0)
}

/// The `getpageframeinfo3` word of a frame for domain `dom`: its
/// page-table level (`PFINFO_L1TAB`..`PFINFO_L4TAB`) while it is in use
/// as a page table, ORed with `PFINFO_LPINTAB` when pinned;
/// `PFINFO_NOTAB` for any other type, or a table no longer referenced as
/// one (as Xen 4.17 reports it); `PFINFO_XTAB` when `dom` holds no
/// reference to it (another owner, no owner, a page the hypervisor
/// shares, or no frame at all).
fn pfinfo(frame: Option<&mut FrameInfo>, dom: DomId) -> u64 {
    let Some(f) =
        frame.filter(|f| f.owner() == Owner::Domain(dom) && f.count() > 0 && !f.is_xen_heap())
    else {
        return PFINFO_XTAB;
    };
    let level = match f.page_type() {
        _ if f.type_count() == 0 => PFINFO_NOTAB,
        PageType::L1 => PFINFO_L1TAB,
        PageType::L2 => PFINFO_L2TAB,
        PageType::L3 => PFINFO_L3TAB,
        PageType::L4 => PFINFO_L4TAB,
        _ => PFINFO_NOTAB,
    };
    if f.is_pinned() {
        level | PFINFO_LPINTAB
    } else {
        level
    }
}

/// Another domain than the caller (`ESRCH` if it went away).
fn other(env: &mut impl ControlEnv, id: DomId) -> Result<&mut DomainEntry, Errno> {
    env.other_domain(id).ok_or(Errno::ESRCH)
}

/// The caller or another domain.
fn target_domain(env: &mut impl ControlEnv, id: DomId) -> Result<&mut Domain, Errno> {
    if id == env.domain().id {
        return Ok(env.domain());
    }
    Ok(&mut other(env, id)?.domain)
}

/// `setvcpucontext` of vCPU `id` of domain `dom` (not the caller) from
/// the `vcpu_guest_context` at `ctxt`, as Xen's `arch_set_info_guest`
/// does for a 64-bit PV vCPU: `EINVAL` for a vCPU that was not created,
/// a context [`vcpu::check_context`] refuses, `vm_assist` bits outside the
/// PV set (vCPU 0), a first load in user mode without a user L4, GDT
/// frames that cannot hold descriptors; an L4 (`ctrlreg[3]`, and
/// `ctrlreg[1]` if set) that is not the domain's or fails validation gets
/// the memory core's error; the L4 is then the vCPU's base pointer, with
/// its type reference (every table below validated). A vCPU already
/// loaded may only be given the same L4s, GDT and LDT again
/// (`EOPNOTSUPP`), which reloads its registers. `VGCF_online` brings the
/// vCPU up (the domain's pause still holds it). A NULL `ctxt` is
/// `EINVAL` here (Xen resets the vCPU). Nothing changes on error.
fn set_vcpu_context(
    env: &mut impl ControlEnv,
    fx: &mut Effects,
    dom: DomId,
    id: u32,
    ctxt: u64,
) -> Result<u64, Errno> {
    let index = usize::try_from(id).map_err(|_| Errno::EINVAL)?;
    let loaded = {
        let entry = other(env, dom)?;
        let v = entry.vcpus.get(index).ok_or(Errno::EINVAL)?;
        v.initialised.then_some((v.mm, v.gdt_frames, v.gdt_count))
    };
    if ctxt == 0 {
        return Err(Errno::EINVAL);
    }
    let c: VcpuGuestContext = read_struct(env, ctxt)?;
    vcpu::check_context(&c)?;
    let flags = VgcfFlags::from_bits_retain(c.flags);
    if id == 0 && c.vm_assist & !VALID_VM_ASSISTS != 0 {
        return Err(Errno::EINVAL);
    }
    let roots = match loaded {
        None => {
            if !flags.contains(VgcfFlags::IN_KERNEL) && c.ctrlreg[1] == 0 {
                return Err(Errno::EINVAL);
            }
            vcpu::take_roots(env, fx, dom, &c)?
        }
        Some((mm, gdt_frames, gdt_count)) => {
            let same = mm.kernel_l4 == Some(Mfn(c.ctrlreg[3] >> 12))
                && mm.user_l4 == (c.ctrlreg[1] != 0).then_some(Mfn(c.ctrlreg[1] >> 12))
                && mm.ldt_base == c.ldt_base
                && u64::from(mm.ldt_ents) == c.ldt_ents
                && gdt_count == usize::try_from(c.gdt_ents.div_ceil(512)).unwrap_or(usize::MAX)
                && gdt_frames[..gdt_count] == c.gdt_frames[..gdt_count];
            if !same {
                return Err(Errno::EOPNOTSUPP);
            }
            vcpu::Roots::held(&mm, gdt_frames, gdt_count)
        }
    };
    let entry = other(env, dom)?;
    if id == 0 {
        entry.domain.mm.vm_assist = c.vm_assist;
    }
    let vcpu = entry.vcpus.get_mut(index).ok_or(Errno::EINVAL)?;
    vcpu::load_context(vcpu, &c, &roots);
    vcpu.power = if flags.contains(VgcfFlags::ONLINE) {
        Power::Up
    } else {
        Power::Down
    };
    Ok(0)
}

/// `hypercall_init`: fills frame `mfn` of domain `dom` with this
/// hypervisor's hypercall stubs (`int $0x82`), holding a writable type
/// reference while it writes, as Xen does. `EINVAL` if the frame is not
/// the domain's, `EPERM` if it cannot be writable (a page table or
/// descriptor frame).
fn hypercall_init(
    env: &mut impl ControlEnv,
    fx: &mut Effects,
    dom: DomId,
    mfn: Mfn,
) -> Result<u64, Errno> {
    get_own_writable(env, fx, dom, mfn).map_err(|refused| match refused {
        NotWritable::NotOwned => Errno::EINVAL,
        NotWritable::Typed => Errno::EPERM,
    })?;
    let mut page = [0u8; HYPERCALL_PAGE_SIZE];
    fill_hypercall_page(&mut page);
    for (index, word) in page.chunks_exact(8).enumerate() {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        env.write_pte(mfn, index, u64::from_le_bytes(bytes));
    }
    Mmu::new(env, fx).put_page_and_type(mfn);
    Ok(0)
}

/// Why a frame could not be taken writable.
pub(crate) enum NotWritable {
    /// The domain does not own it.
    NotOwned,
    /// It cannot take the writable type (it is a page table, say).
    Typed,
}

/// Takes a reference and the writable type on frame `mfn`, which domain
/// `dom` must own (Xen's `get_page_from_gfn` then `get_page_type` of
/// `PGT_writable_page`); `Mmu::put_page_and_type` gives them back.
pub(crate) fn get_own_writable(
    env: &mut impl ControlEnv,
    fx: &mut Effects,
    dom: DomId,
    mfn: Mfn,
) -> Result<(), NotWritable> {
    let owner = Owner::Domain(dom);
    let owned = crate::index::get_mut(env.frames(), mfn.0).is_some_and(|f| f.owner() == owner);
    if !owned {
        return Err(NotWritable::NotOwned);
    }
    Mmu::new(env, fx)
        .get_page_and_type(mfn, owner, PageType::Writable)
        .map_err(|_| NotWritable::Typed)
}

/// Checks a `createdomain` configuration as Xen 4.17 does for a PV domain.
fn check_config(config: &CreateDomain) -> Result<(), Errno> {
    let flags = CdfFlags::from_bits(config.flags).ok_or(Errno::EINVAL)?;
    // PV only; no IOMMU, nested virtualisation or vPMU on this machine.
    let unsupported = CdfFlags::HVM | CdfFlags::HAP | CdfFlags::IOMMU | CdfFlags::NESTED_VIRT;
    if flags.intersects(unsupported) || flags.contains(CdfFlags::S3_INTEGRITY) {
        return Err(Errno::EINVAL);
    }
    if flags.contains(CdfFlags::VPMU) || config.iommu_opts != 0 || config.vmtrace_size != 0 {
        return Err(Errno::EINVAL);
    }
    if config.max_vcpus == 0 || config.max_vcpus > MAX_PV_VCPUS {
        return Err(Errno::EINVAL);
    }
    if config.grant_opts & !GRANT_VERSION_MASK != 0 {
        return Err(Errno::EINVAL);
    }
    let version = config.grant_opts & GRANT_VERSION_MASK;
    if version == 0 || version > crate::gnttab::MAX_VERSION {
        return Err(Errno::EINVAL);
    }
    if config.max_grant_frames >= 0 && !(1..=MAX_GRANT_FRAMES).contains(&config.max_grant_frames) {
        return Err(Errno::EINVAL);
    }
    if config.max_maptrack_frames > MAX_MAPTRACK_FRAMES {
        return Err(Errno::EINVAL);
    }
    if MiscFlags::from_bits(config.arch.misc_flags).is_none() {
        return Err(Errno::EINVAL);
    }
    let emulation = EmulationFlags::from_bits(config.arch.emulation_flags).ok_or(Errno::EINVAL)?;
    if !emulation.is_empty() && emulation.bits() != EMU_PIT {
        return Err(Errno::EOPNOTSUPP);
    }
    Ok(())
}

/// `createdomain`: picks the id, checks the configuration, gives the
/// domain a zeroed shared_info page below 4 GiB and puts it into the
/// table, paused.
fn create_domain(
    env: &mut impl ControlEnv,
    fx: &mut Effects,
    wanted: DomId,
    config: &CreateDomain,
) -> Result<DomId, Errno> {
    // The id comes first, as on Xen: a creation that then fails has still
    // moved the rover on.
    let id = if wanted.0 != 0 && wanted.is_ordinary() {
        if env.first_domain_from(wanted) == Some(wanted) {
            return Err(Errno::EEXIST);
        }
        wanted
    } else {
        env.free_domain_id().ok_or(Errno::ENOMEM)?
    };
    check_config(config)?;
    // Zeroed, events unmasked in every vcpu_info, as on Xen (unlike
    // dom0's, which the dom0 builder masks).
    let mfn = env
        .alloc_frames(0, SHARED_INFO_LIMIT)
        .ok_or(Errno::ENOMEM)?;
    if FrameTable::new(env.frames())
        .share_xen_page(mfn, Owner::Domain(id), true)
        .is_err()
    {
        env.free_frame(mfn);
        return Err(Errno::ENOMEM);
    }
    let mut domain = Domain::domu(
        id,
        config.handle,
        config.max_vcpus,
        config.max_evtchn_port,
        mfn.maddr(),
    );
    domain.emulation_flags = config.arch.emulation_flags;
    domain.pirqs = Pirqs::domu(env.irq_lines(|lines| (lines.len(), None)));
    domain.grant = Some(Box::new(GrantTable::new(
        u32::try_from(config.max_grant_frames).unwrap_or(DEFAULT_GRANT_FRAMES),
        u32::try_from(config.max_maptrack_frames).unwrap_or(DEFAULT_MAPTRACK_FRAMES),
    )));
    if let Err(mut refused) = env.insert_domain(Box::new(DomainEntry::new(domain))) {
        // No slot for that id (the table has `max_domains=` slots; Xen
        // has room up to 0x7FEF): undo.
        let _ = teardown(env, fx, &mut refused);
        return Err(Errno::ENOMEM);
    }
    Ok(id)
}

/// `destroydomain`: [`reap`], then `VIRQ_DOM_EXC` for the caller (the
/// control domain).
/// A domain released in full also logs what the hypervisor held for it
/// ([`HeldForDomain`]): the counter behind "hypervisor memory per idle
/// domain" (`docs/state.md`).
fn destroy_domain(env: &mut impl ControlEnv, fx: &mut Effects, id: DomId) -> Result<u64, Errno> {
    let own_pages = env.other_domain(id).map(|e| e.domain.mm.tot_pages);
    let before = env.machine_info();
    let (report, _) = reap(env, fx, id).ok_or(Errno::ESRCH)?;
    if report.remaining == 0 {
        let held =
            HeldForDomain::between(&before, &env.machine_info(), own_pages.unwrap_or_default());
        log::info!(
            "d{} held {} bytes of hypervisor memory ({} of heap, {} frames)",
            id.0,
            held.bytes(),
            held.heap,
            held.frames
        );
    }
    let (channels, bits) = env.event_channels();
    channels.send_virq(bits, Virq::DomExc, 0);
    Ok(0)
}

/// Takes domain `id` (not the caller) out of the table and releases
/// everything it holds; a domain whose frames are still referenced from
/// elsewhere (mapped by another domain) goes back in, dying, until they
/// are released. Returns what was released and whether the frame table
/// stayed consistent; `None` if there is no such domain.
pub fn reap(
    env: &mut impl ControlEnv,
    fx: &mut Effects,
    id: DomId,
) -> Option<(TeardownReport, bool)> {
    let mut entry = env.remove_domain(id)?;
    super::physdev::release(env, fx, &mut entry.domain);
    super::vcpu::release_vcpu_info(env, fx, &mut entry.vcpus);
    // Its event channels close: each other end becomes unbound, naming
    // the destroyed domain.
    let caller = env.domain().id;
    for (peer, port) in entry.domain.evtchn.remote_ends() {
        if peer == caller {
            env.event_channels().0.disconnect(port, id);
        } else if let Some(other) = env.other_domain(peer) {
            other.domain.evtchn.disconnect(port, id);
        }
    }
    let (report, consistent) = teardown(env, fx, &mut entry);
    if !consistent {
        log::error!("d{}: teardown found the frame table inconsistent", id.0);
    }
    log::info!(
        "d{} destroyed: {} frames released, {} still referenced",
        id.0,
        report.released,
        report.remaining
    );
    if report.remaining != 0 {
        entry.domain.dying = true;
        // Its slot was just emptied and only the control domain creates
        // domains, so it is free again.
        let _ = env.insert_domain(entry);
    }
    Some((report, consistent))
}

/// Releases every type and reference `entry`'s domain holds (its grant
/// mappings of other domains' grants, its GDT frames' descriptor types,
/// base pointers, pins, shared_info and grant-table frames, its
/// allocations), returning each frame nothing else references. Returns
/// what it released and whether the frame table stayed consistent.
fn teardown(
    env: &mut impl ControlEnv,
    fx: &mut Effects,
    entry: &mut DomainEntry,
) -> (TeardownReport, bool) {
    let id = entry.domain.id;
    let mut grants = entry.domain.grant.take();
    let device_refs = grants
        .as_deref_mut()
        .map(|own| super::gnttab::release_mappings(env, id, own))
        .unwrap_or_default();
    entry.domain.grant = grants;
    let mut vcpus: Vec<VcpuMm> = entry.vcpus.iter().map(|v| v.mm).collect();
    let mut own = Effects::default();
    let report = {
        let mut machine = WithDomain::new(env, id, &mut entry.domain.mm);
        let mut mmu = Mmu::new(&mut machine, &mut own);
        for (mfn, writable) in device_refs {
            if writable {
                mmu.put_page_type(mfn);
            }
            mmu.put_page(mfn);
        }
        for vcpu in &mut entry.vcpus {
            let count = core::mem::take(&mut vcpu.gdt_count);
            for &mfn in vcpu.gdt_frames.iter().take(count) {
                mmu.put_page_and_type(Mfn(mfn));
            }
        }
        mmu.teardown(id, &mut vcpus)
    };
    for (vcpu, mm) in entry.vcpus.iter_mut().zip(vcpus) {
        vcpu.mm = mm;
    }
    // Flushes are the caller's (frames it mapped and gave up); an
    // inconsistency is the hypervisor's, not the caller's to crash for.
    fx.flush.local.merge(&own.flush.local);
    fx.flush.domain.merge(&own.flush.domain);
    (report, !own.crash)
}

/// Xen's `getdomaininfo` record of domain `id` (the caller or another).
fn domain_info(env: &mut impl ControlEnv, id: DomId) -> Option<GetDomainInfo> {
    let gpaddr_bits = env.machine_info().phys_bits;
    let now = env.now_ns();
    if id == env.domain().id {
        let count = env.domain().mm.max_vcpus;
        let mut vcpus = Vec::new();
        for i in 0..count {
            if let Some(v) = env.vcpu_by_id(i) {
                vcpus.push(summary(v, now));
            }
        }
        return Some(info_of(env.domain(), &vcpus, gpaddr_bits));
    }
    let entry = env.other_domain(id)?;
    let vcpus: Vec<VcpuSummary> = entry.vcpus.iter().map(|v| summary(v, now)).collect();
    Some(info_of(&entry.domain, &vcpus, gpaddr_bits))
}

/// What `getdomaininfo` needs of one vCPU.
#[derive(Clone, Copy)]
struct VcpuSummary {
    up: bool,
    sleeping: bool,
    running: bool,
    cpu_time: u64,
}

fn summary(v: &Vcpu, now: u64) -> VcpuSummary {
    let running = v.runstate.state == RUNSTATE_RUNNING;
    let info = v.runstate.info(now);
    VcpuSummary {
        up: v.is_up(),
        sleeping: v.sleep.is_sleeping(),
        running,
        cpu_time: info.time[RUNSTATE_RUNNING as usize],
    }
}

fn info_of(d: &Domain, vcpus: &[VcpuSummary], gpaddr_bits: u8) -> GetDomainInfo {
    let online: Vec<&VcpuSummary> = vcpus.iter().filter(|v| v.up).collect();
    let mut flags = DomInfoFlags::empty();
    flags.set(DomInfoFlags::DYING, d.dying);
    flags.set(DomInfoFlags::SHUTDOWN, !d.is_running());
    flags.set(DomInfoFlags::PAUSED, d.pauses > 0);
    flags.set(
        DomInfoFlags::BLOCKED,
        !online.is_empty() && online.iter().all(|v| v.sleeping),
    );
    flags.set(DomInfoFlags::RUNNING, online.iter().any(|v| v.running));
    let code = d.reported_shutdown_code();
    GetDomainInfo {
        domain: d.id.0,
        flags: flags.bits() | (code << 16),
        tot_pages: d.mm.tot_pages,
        max_pages: d.mm.max_pages,
        shared_info_frame: d.shared_info >> 12,
        cpu_time: vcpus.iter().map(|v| v.cpu_time).sum(),
        nr_online_vcpus: u32::try_from(online.len()).unwrap_or(u32::MAX),
        max_vcpu_id: match d.mm.max_vcpus {
            0 => INVALID_MAX_VCPU_ID,
            n => n - 1,
        },
        handle: d.handle,
        gpaddr_bits,
        arch_config: dom0_abi::domctl::ArchDomainConfig {
            emulation_flags: d.emulation_flags,
            misc_flags: 0,
        },
        ..GetDomainInfo::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::fake::{BASE, FAKE_IDLE_NS, FakeMachine, OTHER};
    use dom0_abi::domctl::{ArchDomainConfig, NoPayload};
    use dom0_abi::event_channel::{
        EvtchnAllocUnbound, EvtchnBindInterdomain, EvtchnOp, EvtchnPortArg, EvtchnStat,
        EvtchnStatus,
    };
    use dom0_abi::memory::{MemoryOpCmd, XenMemoryReservation};

    const ARG: u64 = BASE;
    const LIST: u64 = BASE + 0x1000;

    /// A machine whose caller is dom0 and which has no other domain.
    fn machine() -> FakeMachine {
        let mut m = FakeMachine::new(64);
        m.domains.remove(&OTHER.0);
        m
    }

    fn pv_config(vcpus: u32) -> CreateDomain {
        CreateDomain {
            max_vcpus: vcpus,
            max_evtchn_port: 1023,
            max_grant_frames: -1,
            max_maptrack_frames: -1,
            grant_opts: 1,
            handle: [0x5a; 16],
            ..CreateDomain::default()
        }
    }

    fn call<P: Wire>(
        m: &mut FakeMachine,
        cmd: DomctlCmd,
        dom: u16,
        p: &P,
    ) -> (Result<u64, Errno>, Domctl) {
        let mut bytes = [0u8; Domctl::SIZE];
        Domctl::new(cmd, dom, p).to_wire(&mut bytes).unwrap();
        m.poke(ARG, &bytes);
        let mut fx = Effects::default();
        let r = domctl(m, &mut fx, ARG);
        (r, Domctl::from_wire(&m.guest[..Domctl::SIZE]).unwrap())
    }

    fn create(m: &mut FakeMachine, dom: u16, vcpus: u32) -> Result<u16, Errno> {
        let (r, out) = call(m, DomctlCmd::CreateDomain, dom, &pv_config(vcpus));
        r.map(|_| out.domain)
    }

    fn info(m: &mut FakeMachine, dom: u16) -> Result<GetDomainInfo, Errno> {
        let (r, out) = call(m, DomctlCmd::GetDomainInfo, dom, &NoPayload);
        r.map(|_| {
            let info: GetDomainInfo = out.payload().unwrap();
            assert_eq!(info.domain, out.domain);
            info
        })
    }

    /// `scheduler_op` `cmd` with `weight` and `cap` on `dom`: the result
    /// and the weight and cap written back.
    fn sched(
        m: &mut FakeMachine,
        dom: u16,
        sched_id: u32,
        cmd: u32,
        credit: SchedCredit,
    ) -> (Result<u64, Errno>, SchedCredit) {
        let op = SchedulerOp {
            sched_id,
            cmd,
            credit,
            ..SchedulerOp::default()
        };
        let (r, out) = call(m, DomctlCmd::SchedulerOp, dom, &op);
        (r, out.payload::<SchedulerOp>().unwrap().credit)
    }

    #[test]
    fn held_for_a_domain_is_heap_given_back_and_frames_beyond_its_own() {
        let machine = |free_pages, heap_used| MachineInfo {
            cpu_khz: 1,
            total_pages: 4096,
            free_pages,
            phys_bits: 40,
            heap_used,
        };
        let held = HeldForDomain::between(&machine(100, 9000), &machine(1125, 3000), 1024);
        assert_eq!(
            held,
            HeldForDomain {
                heap: 6000,
                frames: 1
            }
        );
        assert_eq!(held.bytes(), 6000 + 4096);
        // Nothing came back (a dying domain): nothing is counted.
        let none = HeldForDomain::between(&machine(100, 9000), &machine(100, 9100), 1024);
        assert_eq!(none.bytes(), 0);
    }

    #[test]
    fn scheduler_op_weight_and_cap_as_credit2() {
        let mut m = machine();
        let id = create(&mut m, 0, 2).unwrap();
        let get =
            |m: &mut FakeMachine| sched(m, id, XEN_SCHEDULER_CREDIT2, 1, SchedCredit::default());
        let put = |m: &mut FakeMachine, weight, cap| {
            sched(m, id, XEN_SCHEDULER_CREDIT2, 0, SchedCredit { weight, cap }).0
        };
        assert_eq!(
            get(&mut m),
            (
                Ok(0),
                SchedCredit {
                    weight: 256,
                    cap: 0
                }
            )
        );
        // No vCPUs yet: any cap is above 100 per vCPU.
        assert_eq!(put(&mut m, 0, 1), Err(Errno::EINVAL));
        call(&mut m, DomctlCmd::MaxVcpus, id, &MaxVcpus { max: 2 })
            .0
            .unwrap();
        assert_eq!(put(&mut m, 512, 50), Ok(0));
        assert_eq!(
            get(&mut m).1,
            SchedCredit {
                weight: 512,
                cap: 50
            }
        );
        // The weight of a call refused for its cap is set all the same.
        assert_eq!(put(&mut m, 7, 201), Err(Errno::EINVAL));
        assert_eq!(get(&mut m).1, SchedCredit { weight: 7, cap: 50 });
        assert_eq!(put(&mut m, 0, 200), Ok(0));
        assert_eq!(
            get(&mut m).1,
            SchedCredit {
                weight: 7,
                cap: 200
            }
        );
        // Weight 0 leaves it; cap 0 removes the cap.
        assert_eq!(put(&mut m, 0, 0), Ok(0));
        assert_eq!(get(&mut m).1, SchedCredit { weight: 7, cap: 0 });
        let any = SchedCredit { weight: 9, cap: 9 };
        for (sched_id, cmd) in [(5, 0), (5, 1), (0, 1), (6, 2), (6, 3), (6, 4)] {
            let (r, back) = sched(&mut m, id, sched_id, cmd, any);
            assert_eq!((r, back), (Err(Errno::EINVAL), any), "{sched_id} {cmd}");
        }
        assert_eq!(get(&mut m).1, SchedCredit { weight: 7, cap: 0 });
        // dom0 may read and set its own.
        assert_eq!(
            sched(&mut m, 0, XEN_SCHEDULER_CREDIT2, 1, any),
            (
                Ok(0),
                SchedCredit {
                    weight: 256,
                    cap: 0
                }
            )
        );
        assert_eq!(sched(&mut m, 0, XEN_SCHEDULER_CREDIT2, 0, any).0, Ok(0));
        assert_eq!(m.domain.share.weight(), 9);
    }

    #[test]
    fn version_then_lookup_then_privilege() {
        let mut m = machine();
        let mut d = Domctl::new(DomctlCmd::PauseDomain, 0, &NoPayload);
        d.interface_version = 0x14;
        let mut bytes = [0u8; Domctl::SIZE];
        d.to_wire(&mut bytes).unwrap();
        m.poke(ARG, &bytes);
        assert_eq!(
            domctl(&mut m, &mut Effects::default(), ARG),
            Err(Errno::EACCES)
        );
        assert_eq!(
            domctl(&mut m, &mut Effects::default(), 0),
            Err(Errno::EFAULT)
        );
        assert_eq!(
            call(&mut m, DomctlCmd::PauseDomain, 9, &NoPayload).0,
            Err(Errno::ESRCH)
        );
        assert_eq!(
            call(&mut m, DomctlCmd::PauseDomain, 0, &NoPayload).0,
            Err(Errno::EINVAL)
        );
        let id = create(&mut m, 0, 1).unwrap();
        let mut bytes = [0u8; Domctl::SIZE];
        let mut unknown = Domctl::new(DomctlCmd::PauseDomain, id, &NoPayload);
        unknown.cmd = 77;
        unknown.to_wire(&mut bytes).unwrap();
        m.poke(ARG, &bytes);
        assert_eq!(
            domctl(&mut m, &mut Effects::default(), ARG),
            Err(Errno::ENOSYS)
        );
        // An unprivileged caller: EPERM once the target exists.
        m.domain.mm.privilege = None;
        assert_eq!(
            call(&mut m, DomctlCmd::PauseDomain, id, &NoPayload).0,
            Err(Errno::EPERM)
        );
        assert_eq!(
            call(&mut m, DomctlCmd::PauseDomain, 9, &NoPayload).0,
            Err(Errno::ESRCH)
        );
        assert_eq!(create(&mut m, 0, 1), Err(Errno::EPERM));
        assert_eq!(info(&mut m, 0).err(), Some(Errno::EPERM));
        let mut s = [0u8; Sysctl::SIZE];
        Sysctl::new(SysctlCmd::SchedId, &SchedId::default())
            .to_wire(&mut s)
            .unwrap();
        m.poke(ARG, &s);
        assert_eq!(sysctl(&mut m, ARG), Err(Errno::EPERM));
    }

    #[test]
    fn create_picks_or_takes_ids_and_checks_the_configuration() {
        let mut m = machine();
        assert_eq!(create(&mut m, 0, 2), Ok(1));
        assert_eq!(create(&mut m, DomId::SELF.0, 2), Ok(2));
        assert_eq!(create(&mut m, 7, 2), Ok(7));
        assert_eq!(create(&mut m, 7, 2), Err(Errno::EEXIST));
        assert_eq!(create(&mut m, 0, 2), Ok(3));
        assert_eq!(create(&mut m, 0, 0), Err(Errno::EINVAL));
        assert_eq!(create(&mut m, 0, 8193), Err(Errno::EINVAL));
        assert_eq!(create(&mut m, 0, 1), Ok(6), "failed creations used 4 and 5");
        let bad = [
            CreateDomain {
                flags: 1,
                ..pv_config(1)
            },
            CreateDomain {
                flags: 1 << 8,
                ..pv_config(1)
            },
            CreateDomain {
                iommu_opts: 1,
                ..pv_config(1)
            },
            CreateDomain {
                grant_opts: 0,
                ..pv_config(1)
            },
            CreateDomain {
                grant_opts: 3,
                ..pv_config(1)
            },
            CreateDomain {
                grant_opts: 0x11,
                ..pv_config(1)
            },
            CreateDomain {
                max_grant_frames: 0,
                ..pv_config(1)
            },
            CreateDomain {
                max_grant_frames: 65,
                ..pv_config(1)
            },
            CreateDomain {
                max_maptrack_frames: 1025,
                ..pv_config(1)
            },
            CreateDomain {
                vmtrace_size: 1,
                ..pv_config(1)
            },
            CreateDomain {
                arch: ArchDomainConfig {
                    emulation_flags: 0,
                    misc_flags: 2,
                },
                ..pv_config(1)
            },
        ];
        for config in bad {
            assert_eq!(
                call(&mut m, DomctlCmd::CreateDomain, 0, &config).0,
                Err(Errno::EINVAL),
                "{config:?}"
            );
        }
        let lapic = CreateDomain {
            arch: ArchDomainConfig {
                emulation_flags: 1,
                misc_flags: 0,
            },
            ..pv_config(1)
        };
        assert_eq!(
            call(&mut m, DomctlCmd::CreateDomain, 0, &lapic).0,
            Err(Errno::EOPNOTSUPP)
        );
        let pit = CreateDomain {
            arch: ArchDomainConfig {
                emulation_flags: EMU_PIT,
                misc_flags: 1,
            },
            ..pv_config(1)
        };
        assert_eq!(call(&mut m, DomctlCmd::CreateDomain, 0, &pit).0, Ok(0));
        assert_eq!(
            create(&mut m, 6, 1),
            Err(Errno::EEXIST),
            "before the configuration"
        );
    }

    #[test]
    fn a_new_domain_as_getdomaininfo_reports_it() {
        let mut m = machine();
        let free = m.free.len();
        let id = create(&mut m, 0, 3).unwrap();
        assert_eq!(m.free.len(), free - 1, "its shared_info page");
        let i = info(&mut m, id).unwrap();
        assert_eq!(i.domain, id);
        assert_eq!(i.dominf(), DomInfoFlags::PAUSED);
        assert_eq!(i.shutdown_code(), 255);
        assert_eq!(i.flags >> 16, 0xFFFF);
        assert_eq!((i.tot_pages, i.max_pages, i.nr_online_vcpus), (0, 0, 0));
        assert_eq!(i.max_vcpu_id, INVALID_MAX_VCPU_ID);
        assert_eq!(i.handle, [0x5a; 16]);
        assert_eq!(i.gpaddr_bits, 40);
        let shared = Mfn(i.shared_info_frame);
        let mfn = usize::try_from(shared.0).unwrap();
        assert_eq!(m.frames[mfn].owner(), Owner::Domain(DomId(id)));
        assert!(m.mem[mfn].iter().all(|&w| w == 0), "zeroed");
        // The next domain up; none above; reserved ids.
        assert_eq!(info(&mut m, 0).unwrap().domain, 0);
        assert_eq!(
            info(&mut m, 0).unwrap().arch_config.emulation_flags,
            EMU_PIT
        );
        let (_, out) = call(&mut m, DomctlCmd::GetDomainInfo, 1, &NoPayload);
        assert_eq!(out.domain, id);
        assert_eq!(info(&mut m, id + 1).err(), Some(Errno::ESRCH));
        assert_eq!(info(&mut m, DomId::IO.0).err(), Some(Errno::EINVAL));
        // max_vcpus must repeat createdomain's count.
        let (r, _) = call(&mut m, DomctlCmd::MaxVcpus, id, &MaxVcpus { max: 2 });
        assert_eq!(r, Err(Errno::EINVAL));
        let (r, _) = call(&mut m, DomctlCmd::MaxVcpus, id, &MaxVcpus { max: 3 });
        assert_eq!(r, Ok(0));
        assert_eq!(info(&mut m, id).unwrap().max_vcpu_id, 2);
        assert_eq!(info(&mut m, id).unwrap().nr_online_vcpus, 0);
        let (r, _) = call(
            &mut m,
            DomctlCmd::MaxMem,
            id,
            &MaxMem {
                max_memkb: 4096 + 1024,
            },
        );
        assert_eq!(r, Ok(0));
        assert_eq!(info(&mut m, id).unwrap().max_pages, 1280);
        let (r, _) = call(
            &mut m,
            DomctlCmd::SetDomainHandle,
            id,
            &SetDomainHandle { handle: [7; 16] },
        );
        assert_eq!(r, Ok(0));
        assert_eq!(info(&mut m, id).unwrap().handle, [7; 16]);
        assert_eq!(
            call(
                &mut m,
                DomctlCmd::SetAddressSize,
                id,
                &AddressSize { size: 64 }
            )
            .0,
            Ok(0)
        );
        assert_eq!(
            call(
                &mut m,
                DomctlCmd::SetAddressSize,
                id,
                &AddressSize { size: 32 }
            )
            .0,
            Err(Errno::EOPNOTSUPP)
        );
        assert_eq!(
            call(
                &mut m,
                DomctlCmd::SetAddressSize,
                id,
                &AddressSize { size: 48 }
            )
            .0,
            Err(Errno::EINVAL)
        );
        let (r, out) = call(&mut m, DomctlCmd::GetAddressSize, id, &NoPayload);
        assert_eq!((r, out.payload::<AddressSize>().unwrap().size), (Ok(0), 64));
    }

    #[test]
    fn io_permissions_as_xen() {
        let mut m = machine();
        let id = create(&mut m, 0, 1).unwrap();
        let ports = |first_port, nr_ports, allow_access| IoportPermission {
            first_port,
            nr_ports,
            allow_access,
            pad: [0; 3],
        };
        let io = |m: &mut FakeMachine, p| call(m, DomctlCmd::IoportPermission, id, &p).0;
        for bad in [
            ports(0x80, 0, 1),
            ports(0xffff, 2, 1),
            ports(u32::MAX, 2, 1),
        ] {
            assert_eq!(io(&mut m, bad), Err(Errno::EINVAL));
        }
        // The caller has no right to the 8259's ports.
        assert_eq!(io(&mut m, ports(0x20, 2, 1)), Err(Errno::EPERM));
        assert_eq!(io(&mut m, ports(0xc000, 0x40, 1)), Ok(0));
        let held = |m: &mut FakeMachine| {
            let d = &m.other_domain(DomId(id)).unwrap().domain;
            d.ioports
                .as_deref()
                .map(|p| (p.permitted(0xc000, 0xc03f), p.permitted(0xc040, 0xc040)))
        };
        assert_eq!(held(&mut m), Some((true, false)));
        assert_eq!(io(&mut m, ports(0xc000, 0x20, 0)), Ok(0));
        assert_eq!(held(&mut m), Some((false, false)));

        let irq = |m: &mut FakeMachine, pirq, allow_access| {
            let p = IrqPermission {
                pirq,
                allow_access,
                pad: [0; 3],
            };
            call(m, DomctlCmd::IrqPermission, id, &p).0
        };
        assert_eq!(irq(&mut m, 208, 1), Err(Errno::EINVAL));
        assert_eq!(irq(&mut m, 20, 1), Err(Errno::EPERM));
        m.domain.pirqs.map_gsi(20, 20, true).unwrap();
        assert_eq!(irq(&mut m, 20, 1), Ok(0));
        assert!(
            m.other_domain(DomId(id))
                .unwrap()
                .domain
                .pirqs
                .permitted(20)
        );
        assert_eq!(irq(&mut m, 20, 0), Ok(0));
        assert!(
            !m.other_domain(DomId(id))
                .unwrap()
                .domain
                .pirqs
                .permitted(20)
        );
    }

    #[test]
    fn iomem_permission_as_xen() {
        let mut m = machine();
        let id = create(&mut m, 0, 1).unwrap();
        let mut reserved = crate::iomem::ReservedMmio::default();
        reserved.add(0xfee0_0000, 0x1000);
        m.domain.iomem = crate::iomem::IomemCaps::hardware_domain(1 << 28, &reserved);
        let frames = |first_mfn, nr_mfns, allow_access| IomemPermission {
            first_mfn,
            nr_mfns,
            allow_access,
            pad: [0; 7],
        };
        let mem = |m: &mut FakeMachine, dom, p| call(m, DomctlCmd::IomemPermission, dom, &p).0;
        for bad in [frames(0xb8, 0, 1), frames(u64::MAX - 1, 4, 1)] {
            assert_eq!(mem(&mut m, id, bad), Err(Errno::EINVAL));
        }
        // The caller has no right to the local APIC's frame, nor past its
        // address width.
        assert_eq!(mem(&mut m, id, frames(0xfedff, 2, 1)), Err(Errno::EPERM));
        assert_eq!(mem(&mut m, id, frames(1 << 28, 1, 1)), Err(Errno::EPERM));
        assert_eq!(mem(&mut m, 77, frames(0xb8, 1, 1)), Err(Errno::ESRCH));
        let held = |m: &mut FakeMachine| {
            let d = &m.other_domain(DomId(id)).unwrap().domain;
            (
                d.iomem.permits(0xb8, 0xbf),
                d.iomem.contains(0xc0),
                d.mm.io_caps,
            )
        };
        assert_eq!(held(&mut m), (false, false, false));
        assert_eq!(mem(&mut m, id, frames(0xb8, 8, 1)), Ok(0));
        assert_eq!(
            held(&mut m),
            (true, false, true),
            "I/O rights allow cache attributes"
        );
        assert_eq!(mem(&mut m, id, frames(0xb8, 8, 0)), Ok(0));
        assert_eq!(held(&mut m), (false, false, false));
        // A domain that gave a frame up cannot take it back.
        assert_eq!(mem(&mut m, 0, frames(0xb8, 1, 0)), Ok(0));
        assert_eq!(mem(&mut m, 0, frames(0xb8, 1, 1)), Err(Errno::EPERM));
        assert_eq!(mem(&mut m, id, frames(0xb8, 2, 1)), Err(Errno::EPERM));
        assert_eq!(mem(&mut m, id, frames(0xb9, 1, 1)), Ok(0));
    }

    #[test]
    fn pauses_are_counted() {
        let mut m = machine();
        let id = create(&mut m, 0, 1).unwrap();
        assert_eq!(
            call(&mut m, DomctlCmd::UnpauseDomain, id, &NoPayload).0,
            Ok(0)
        );
        assert_eq!(info(&mut m, id).unwrap().dominf(), DomInfoFlags::empty());
        assert_eq!(
            call(&mut m, DomctlCmd::UnpauseDomain, id, &NoPayload).0,
            Err(Errno::EINVAL)
        );
        for _ in 0..255 {
            assert_eq!(
                call(&mut m, DomctlCmd::PauseDomain, id, &NoPayload).0,
                Ok(0)
            );
        }
        assert_eq!(
            call(&mut m, DomctlCmd::PauseDomain, id, &NoPayload).0,
            Err(Errno::EOVERFLOW)
        );
        assert_eq!(
            call(&mut m, DomctlCmd::UnpauseDomain, id, &NoPayload).0,
            Ok(0)
        );
        assert_eq!(info(&mut m, id).unwrap().dominf(), DomInfoFlags::PAUSED);
        // dom0 itself: never paused by the toolstack.
        assert_eq!(
            call(&mut m, DomctlCmd::UnpauseDomain, 0, &NoPayload).0,
            Err(Errno::EINVAL)
        );
    }

    #[test]
    fn destroy_returns_every_frame_and_raises_dom_exc() {
        let mut m = machine();
        let port = m.domain.evtchn.bind_virq(Virq::DomExc as u32, 0).unwrap();
        let free = m.free.len();
        let id = create(&mut m, 0, 1).unwrap();
        let (r, _) = call(&mut m, DomctlCmd::MaxMem, id, &MaxMem { max_memkb: 64 });
        assert_eq!(r, Ok(0));
        // dom0 populates four of its pages, as a toolstack does.
        let mut b = [0u8; XenMemoryReservation::SIZE];
        XenMemoryReservation {
            extent_start: LIST,
            nr_extents: 4,
            extent_order: 0,
            mem_flags: 0,
            domid: id,
            pad: Default::default(),
        }
        .to_wire(&mut b)
        .unwrap();
        m.poke(ARG, &b);
        for (i, pfn) in [0u64, 1, 2, 3].iter().enumerate() {
            m.poke(LIST + 8 * i as u64, &pfn.to_le_bytes());
        }
        let mut fx = Effects::default();
        let done = super::super::memory::memory_op(
            &mut m,
            &mut fx,
            MemoryOpCmd::PopulatePhysmap as u64,
            ARG,
        );
        assert_eq!(done, Ok(4));
        assert_eq!(info(&mut m, id).unwrap().tot_pages, 4);
        assert_eq!(m.free.len(), free - 5);
        assert!(!m.events.pending(port));
        assert_eq!(
            call(&mut m, DomctlCmd::DestroyDomain, id, &NoPayload).0,
            Ok(0)
        );
        assert_eq!(m.free.len(), free, "every frame is back");
        assert!(
            m.frames
                .iter()
                .all(|f| f.owner() != Owner::Domain(DomId(id)))
        );
        assert!(m.events.pending(port), "VIRQ_DOM_EXC");
        assert_eq!(info(&mut m, id).err(), Some(Errno::ESRCH));
        assert_eq!(
            call(&mut m, DomctlCmd::DestroyDomain, id, &NoPayload).0,
            Err(Errno::ESRCH)
        );
        assert_eq!(
            call(&mut m, DomctlCmd::DestroyDomain, 0, &NoPayload).0,
            Err(Errno::EINVAL)
        );
    }

    fn sys<P: Wire>(m: &mut FakeMachine, cmd: SysctlCmd, p: &P) -> (Result<u64, Errno>, Sysctl) {
        let mut bytes = [0u8; Sysctl::SIZE];
        Sysctl::new(cmd, p).to_wire(&mut bytes).unwrap();
        m.poke(ARG, &bytes);
        let r = sysctl(m, ARG);
        (r, Sysctl::from_wire(&m.guest[..Sysctl::SIZE]).unwrap())
    }

    #[test]
    fn sysctl_getcpuinfo_gives_each_cpu_its_idle_time() {
        let mut m = machine();
        let req = GetCpuInfo {
            max_cpus: 8,
            info: LIST,
            ..GetCpuInfo::default()
        };
        let idle = |m: &FakeMachine, i: usize| {
            let start = usize::try_from(LIST - BASE).unwrap() + i * CpuInfo::SIZE;
            CpuInfo::from_wire(&m.guest[start..start + CpuInfo::SIZE])
                .unwrap()
                .idletime
        };
        // Every CPU the machine has (the second is offline: 0).
        let (r, out) = sys(&mut m, SysctlCmd::GetCpuInfo, &req);
        assert_eq!(r, Ok(0));
        assert_eq!(out.payload::<GetCpuInfo>().unwrap().nr_cpus, 2);
        assert_eq!([idle(&m, 0), idle(&m, 1)], [FAKE_IDLE_NS, 0]);
        // No more than asked for.
        m.poke(LIST, &[0xFF; 16]);
        let one = GetCpuInfo { max_cpus: 1, ..req };
        let (r, out) = sys(&mut m, SysctlCmd::GetCpuInfo, &one);
        assert_eq!(
            (r, out.payload::<GetCpuInfo>().unwrap().nr_cpus),
            (Ok(0), 1)
        );
        assert_eq!([idle(&m, 0), idle(&m, 1)], [FAKE_IDLE_NS, u64::MAX]);
        let none = GetCpuInfo {
            max_cpus: 0,
            info: 8,
            ..req
        };
        let (r, out) = sys(&mut m, SysctlCmd::GetCpuInfo, &none);
        assert_eq!(
            (r, out.payload::<GetCpuInfo>().unwrap().nr_cpus),
            (Ok(0), 0)
        );
        let unwritable = GetCpuInfo { info: 8, ..req };
        assert_eq!(
            sys(&mut m, SysctlCmd::GetCpuInfo, &unwritable).0,
            Err(Errno::EFAULT)
        );
    }

    #[test]
    fn sysctl_lists_domains_and_describes_the_machine() {
        let mut m = machine();
        let a = create(&mut m, 0, 1).unwrap();
        let b = create(&mut m, 9, 1).unwrap();
        let req = GetDomainInfoList {
            first_domain: 0,
            max_domains: 8,
            buffer: LIST,
            ..GetDomainInfoList::default()
        };
        let (r, out) = sys(&mut m, SysctlCmd::GetDomainInfoList, &req);
        assert_eq!(r, Ok(0));
        assert_eq!(out.payload::<GetDomainInfoList>().unwrap().num_domains, 3);
        let size = GetDomainInfo::SIZE;
        let at = |m: &FakeMachine, i: usize| {
            let start = usize::try_from(LIST - BASE).unwrap() + i * size;
            GetDomainInfo::from_wire(&m.guest[start..start + size])
                .unwrap()
                .domain
        };
        assert_eq!([at(&m, 0), at(&m, 1), at(&m, 2)], [0, a, b]);
        let from_two = GetDomainInfoList {
            first_domain: 2,
            max_domains: 1,
            ..req
        };
        let (_, out) = sys(&mut m, SysctlCmd::GetDomainInfoList, &from_two);
        assert_eq!(out.payload::<GetDomainInfoList>().unwrap().num_domains, 1);
        assert_eq!(at(&m, 0), b);
        let unwritable = GetDomainInfoList { buffer: 8, ..req };
        assert_eq!(
            sys(&mut m, SysctlCmd::GetDomainInfoList, &unwritable).0,
            Err(Errno::EFAULT)
        );
        let (r, out) = sys(&mut m, SysctlCmd::PhysInfo, &PhysInfo::default());
        let p: PhysInfo = out.payload().unwrap();
        assert_eq!(r, Ok(0));
        // The fake machine has two physical CPUs (`getcpuinfo` above).
        assert_eq!(
            (p.nr_cpus, p.max_cpu_id, p.nr_nodes, p.total_pages),
            (2, 1, 1, 64)
        );
        assert_eq!(p.free_pages, m.free.len() as u64);
        assert!(PhysCap::from_bits_truncate(p.capabilities).contains(PhysCap::PV));
        let (r, out) = sys(&mut m, SysctlCmd::SchedId, &SchedId::default());
        assert_eq!((r, out.payload::<SchedId>().unwrap().sched_id), (Ok(0), 6));
        let mut bad = [0u8; Sysctl::SIZE];
        let mut s = Sysctl::new(SysctlCmd::SchedId, &SchedId::default());
        s.interface_version = 0x16;
        s.to_wire(&mut bad).unwrap();
        m.poke(ARG, &bad);
        assert_eq!(sysctl(&mut m, ARG), Err(Errno::EACCES));
        s.interface_version = XEN_SYSCTL_INTERFACE_VERSION;
        s.cmd = 2;
        s.to_wire(&mut bad).unwrap();
        m.poke(ARG, &bad);
        assert_eq!(sysctl(&mut m, ARG), Err(Errno::ENOSYS));
    }

    #[test]
    fn sysctl_readconsole_reads_the_log_ring() {
        const BUF: u64 = BASE + 0x800;
        let mut m = machine();
        m.log.write(b"(HV) boot\n(HV) more\n");
        let read = |m: &mut FakeMachine, clear, incremental, index, count, buffer| {
            let rc = ReadConsole {
                clear,
                incremental,
                index,
                buffer,
                count,
                ..ReadConsole::default()
            };
            let (r, out) = sys(m, SysctlCmd::ReadConsole, &rc);
            let out: ReadConsole = out.payload().unwrap();
            (r, out.count, out.index)
        };
        assert_eq!(read(&mut m, 0, 0, 0, 4, BUF), (Ok(0), 4, 4));
        assert_eq!(&m.guest[0x800..0x804], b"(HV)");
        assert_eq!(read(&mut m, 1, 1, 4, 6, BUF), (Ok(0), 6, 10));
        assert_eq!(&m.guest[0x800..0x806], b" boot\n");
        // Cleared up to 10: a plain read starts there.
        assert_eq!(read(&mut m, 0, 0, 0, 64, BUF), (Ok(0), 10, 20));
        assert_eq!(&m.guest[0x800..0x80a], b"(HV) more\n");
        assert_eq!(read(&mut m, 0, 0, 0, 64, 8).0, Err(Errno::EFAULT));
        assert_eq!(read(&mut m, 1, 1, 20, 64, BUF), (Ok(0), 0, 20));
        assert_eq!(
            read(&mut m, 0, 0, 0, 64, 8),
            (Ok(0), 0, 20),
            "nothing to copy"
        );
    }

    fn evtchn<T: Wire>(m: &mut FakeMachine, op: EvtchnOp, arg: &T) -> (Result<u64, Errno>, T) {
        let mut bytes = [0u8; 64];
        arg.to_wire(&mut bytes).unwrap();
        m.poke(ARG, &bytes[..T::SIZE]);
        let r = super::super::evtchn::event_channel_op(m, op as u64, ARG);
        (r, T::from_wire(&m.guest[..T::SIZE]).unwrap())
    }

    fn status(m: &mut FakeMachine, dom: u16, port: u32) -> (u32, u32) {
        let s = EvtchnStatus {
            dom,
            port,
            ..EvtchnStatus::default()
        };
        let (r, s) = evtchn(m, EvtchnOp::Status, &s);
        assert_eq!(r, Ok(0));
        (s.status, s.u[0] & 0xffff)
    }

    #[test]
    fn interdomain_channels_between_dom0_and_a_created_domain() {
        let mut m = machine();
        let id = create(&mut m, 0, 1).unwrap();
        let (r, _) = call(&mut m, DomctlCmd::MaxVcpus, id, &MaxVcpus { max: 1 });
        assert_eq!(r, Ok(0));
        // dom0 allocates a port in the new domain for itself.
        let alloc = EvtchnAllocUnbound {
            dom: id,
            remote_dom: DomId::SELF.0,
            port: 0,
        };
        let (r, a) = evtchn(&mut m, EvtchnOp::AllocUnbound, &alloc);
        assert_eq!((r, a.port), (Ok(0), 1));
        assert_eq!(status(&mut m, id, 1), (EvtchnStat::Unbound as u32, 0));
        let nobody = EvtchnAllocUnbound { dom: 77, ..alloc };
        assert_eq!(
            evtchn(&mut m, EvtchnOp::AllocUnbound, &nobody).0,
            Err(Errno::ESRCH)
        );
        // dom0 binds to it: its new port is pending, the pair connected.
        let bind = EvtchnBindInterdomain {
            remote_dom: id,
            remote_port: a.port,
            ..EvtchnBindInterdomain::default()
        };
        let (r, b) = evtchn(&mut m, EvtchnOp::BindInterdomain, &bind);
        assert_eq!(r, Ok(0));
        let local = b.local_port;
        assert!(m.events.pending(local));
        assert_eq!(status(&mut m, id, 1), (EvtchnStat::Interdomain as u32, 0));
        assert_eq!(
            status(&mut m, DomId::SELF.0, local),
            (EvtchnStat::Interdomain as u32, u32::from(id))
        );
        assert_eq!(
            evtchn(&mut m, EvtchnOp::BindInterdomain, &bind).0,
            Err(Errno::EINVAL)
        );
        // A send from dom0 reaches the new domain's bits.
        assert!(!m.other_events.get(&id).unwrap().pending(1));
        let send = EvtchnPortArg { port: local };
        assert_eq!(evtchn(&mut m, EvtchnOp::Send, &send).0, Ok(0));
        assert!(m.other_events.get(&id).unwrap().pending(1));
        // Closing dom0's end leaves the other unbound, naming dom0.
        assert_eq!(evtchn(&mut m, EvtchnOp::Close, &send).0, Ok(0));
        assert_eq!(status(&mut m, id, 1), (EvtchnStat::Unbound as u32, 0));
        // Bound again, then the domain is destroyed: dom0's end is left
        // unbound, naming it.
        let (r, b) = evtchn(&mut m, EvtchnOp::BindInterdomain, &bind);
        assert_eq!(r, Ok(0));
        assert_eq!(
            call(&mut m, DomctlCmd::DestroyDomain, id, &NoPayload).0,
            Ok(0)
        );
        assert_eq!(
            status(&mut m, DomId::SELF.0, b.local_port),
            (EvtchnStat::Unbound as u32, u32::from(id))
        );
        // Only the control domain reaches another domain's ports.
        let other = create(&mut m, 0, 1).unwrap();
        m.domain.mm.privilege = None;
        let alloc = EvtchnAllocUnbound {
            dom: other,
            ..alloc
        };
        assert_eq!(
            evtchn(&mut m, EvtchnOp::AllocUnbound, &alloc).0,
            Err(Errno::EPERM)
        );
        let s = EvtchnStatus {
            dom: other,
            port: 1,
            ..EvtchnStatus::default()
        };
        assert_eq!(evtchn(&mut m, EvtchnOp::Status, &s).0, Err(Errno::EPERM));
    }

    #[test]
    fn remote_shutdown_of_a_created_domain() {
        let mut m = machine();
        let port = m.domain.evtchn.bind_virq(Virq::DomExc as u32, 0).unwrap();
        let id = create(&mut m, 0, 1).unwrap();
        let shut = |m: &mut FakeMachine, dom: u16, reason: u32| {
            let mut b = [0u8; 8];
            b[0..2].copy_from_slice(&dom.to_le_bytes());
            b[4..8].copy_from_slice(&reason.to_le_bytes());
            m.poke(ARG, &b);
            super::super::sched::sched_op(m, dom0_abi::sched::SchedOp::RemoteShutdown as u64, ARG)
        };
        assert_eq!(shut(&mut m, 300, 0), Err(Errno::ESRCH));
        assert_eq!(shut(&mut m, DomId::SELF.0, 0), Err(Errno::ESRCH));
        assert_eq!(shut(&mut m, id, 0x101), Ok(0));
        assert!(m.events.pending(port), "VIRQ_DOM_EXC");
        let i = info(&mut m, id).unwrap();
        assert_eq!(i.dominf(), DomInfoFlags::SHUTDOWN | DomInfoFlags::PAUSED);
        assert_eq!(i.shutdown_code(), 1, "the low byte");
        assert_eq!(shut(&mut m, id, 0), Ok(0));
        assert_eq!(info(&mut m, id).unwrap().shutdown_code(), 1);
        m.domain.mm.privilege = None;
        assert_eq!(shut(&mut m, id, 0), Err(Errno::EPERM));
    }

    #[test]
    fn setvcpucontext_validates_and_takes_the_l4() {
        let mut m = machine();
        let free = m.free.len();
        let id = create(&mut m, 0, 2).unwrap();
        let (r, _) = call(&mut m, DomctlCmd::MaxMem, id, &MaxMem { max_memkb: 64 });
        assert_eq!(r, Ok(0));
        const CTXT: u64 = BASE + 0x2000;
        let set = |m: &mut FakeMachine, vcpu: u32, c: &VcpuGuestContext| {
            c.to_wire(&mut m.guest[0x2000..0x2000 + VcpuGuestContext::SIZE])
                .unwrap();
            let arg = VcpuContext {
                vcpu,
                pad: 0,
                ctxt: CTXT,
            };
            call(m, DomctlCmd::SetVcpuContext, id, &arg).0
        };
        let l4 = m.give(DomId(id));
        let mut c = VcpuGuestContext::zeroed();
        c.flags = (VgcfFlags::IN_KERNEL | VgcfFlags::ONLINE).bits();
        c.user_regs.rip = 0x1000;
        c.ctrlreg[3] = l4.0 << 12;
        assert_eq!(
            set(&mut m, 0, &c),
            Err(Errno::EINVAL),
            "vCPUs not created yet"
        );
        let (r, _) = call(&mut m, DomctlCmd::MaxVcpus, id, &MaxVcpus { max: 2 });
        assert_eq!(r, Ok(0));
        assert_eq!(set(&mut m, 2, &c), Err(Errno::EINVAL));
        let own = m.give(DomId(0));
        let theirs = VcpuGuestContext {
            ctrlreg: [0, 0, 0, own.0 << 12, 0, 0, 0, 0],
            ..c
        };
        assert_eq!(set(&mut m, 0, &theirs), Err(Errno::EINVAL), "dom0's frame");
        let user = VcpuGuestContext {
            flags: VgcfFlags::ONLINE.bits(),
            ..c
        };
        assert_eq!(
            set(&mut m, 0, &user),
            Err(Errno::EINVAL),
            "user mode, no user L4"
        );
        let assists = VcpuGuestContext {
            vm_assist: 1 << 6,
            ..c
        };
        assert_eq!(set(&mut m, 0, &assists), Err(Errno::EINVAL));
        assert_eq!(set(&mut m, 0, &c), Ok(0));
        let v = &m.others[&id].vcpus[0];
        assert_eq!(v.mm.kernel_l4, Some(l4));
        assert!(v.initialised && v.is_up());
        assert_eq!(v.context.rip, 0x1000);
        assert_eq!(info(&mut m, id).unwrap().nr_online_vcpus, 1);
        let get = |m: &mut FakeMachine, vcpu: u32| {
            let arg = VcpuContext {
                vcpu,
                pad: 0,
                ctxt: CTXT,
            };
            m.guest[0x2000..0x2000 + VcpuGuestContext::SIZE].fill(0xff);
            let r = call(m, DomctlCmd::GetVcpuContext, id, &arg).0;
            (r, VcpuGuestContext::from_wire(&m.guest[0x2000..]).unwrap())
        };
        let (r, got) = get(&mut m, 0);
        assert_eq!(r, Ok(0));
        assert_eq!(got.flags, c.flags);
        assert_eq!((got.user_regs.rip, got.user_regs.cs), (0x1000, 0xe033));
        assert_eq!((got.ctrlreg[3], got.ctrlreg[1]), (l4.0 << 12, 0));
        assert_eq!(get(&mut m, 1).0, Err(Errno::ENODATA));
        assert_eq!(get(&mut m, 2).0, Err(Errno::EINVAL));
        let moved = VcpuGuestContext {
            ctrlreg: [0, 0, 0, (l4.0 + 1) << 12, 0, 0, 0, 0],
            ..c
        };
        assert_eq!(set(&mut m, 0, &moved), Err(Errno::EOPNOTSUPP));
        let offline = VcpuGuestContext {
            flags: VgcfFlags::IN_KERNEL.bits(),
            ..c
        };
        assert_eq!(set(&mut m, 0, &offline), Ok(0), "the same L4 again");
        assert!(!m.others[&id].vcpus[0].is_up());
        assert_eq!(
            call(&mut m, DomctlCmd::DestroyDomain, id, &NoPayload).0,
            Ok(0)
        );
        assert_eq!(m.free.len(), free - 1, "all but dom0's frame are back");
    }
}
