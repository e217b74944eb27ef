//! `domctl` and `sysctl`: the toolstack's hypercalls (control domain only).
//!
//! Each wrapper fills in the interface version ([`Domctl::new`]) and
//! returns the raw result. Payloads that carry a guest handle get a safe
//! wrapper taking the buffer by reference; [`domctl_raw`] and
//! [`sysctl_raw`] take any request.

use dom0_abi::Hypercall;
use dom0_abi::cpu::VcpuGuestContext;
use dom0_abi::domctl::{Domctl, DomctlCmd, VcpuContext};
use dom0_abi::sysctl::{CpuInfo, GetCpuInfo, GetDomainInfoList, Sysctl, SysctlCmd};
use dom0_abi::wire::Wire;

use super::{addr_of, addr_of_mut, raw};

/// `domctl(op)` for any request.
///
/// # Safety
/// Every guest handle inside `op`'s payload must point at memory the
/// hypervisor may read and write for that command (or that no Rust code
/// uses).
pub unsafe fn domctl_raw(op: &mut Domctl) -> i64 {
    // SAFETY: `op` is an exclusively borrowed 144-byte `xen_domctl` the
    // hypervisor reads and writes back; the handles are the caller's
    // contract.
    unsafe { raw::hypercall1(u64::from(Hypercall::Domctl.number()), addr_of_mut(op)) }
}

/// `sysctl(op)` for any request.
///
/// # Safety
/// As [`domctl_raw`], for the handles in `op`'s payload.
pub unsafe fn sysctl_raw(op: &mut Sysctl) -> i64 {
    // SAFETY: as in `domctl_raw`.
    unsafe { raw::hypercall1(u64::from(Hypercall::Sysctl.number()), addr_of_mut(op)) }
}

/// `domctl` with a payload that holds no guest handle (every command but
/// `setvcpucontext`, `getvcpucontext` and `getpageframeinfo3`, which have
/// wrappers of their own; those three are refused here with `EINVAL`
/// without a hypercall). Returns the result and the structure as the
/// hypervisor left it.
pub fn domctl<P: Wire>(cmd: DomctlCmd, domain: u16, payload: &P) -> (i64, Domctl) {
    let mut op = Domctl::new(cmd, domain, payload);
    if matches!(
        cmd,
        DomctlCmd::SetVcpuContext | DomctlCmd::GetVcpuContext | DomctlCmd::GetPageFrameInfo3
    ) {
        return (dom0_abi::Errno::EINVAL.neg(), op);
    }
    // SAFETY: the payload of the other commands holds no guest handle.
    let ret = unsafe { domctl_raw(&mut op) };
    (ret, op)
}

/// `XEN_DOMCTL_setvcpucontext` of `vcpu` in `domain` from `ctxt`.
pub fn domctl_setvcpucontext(domain: u16, vcpu: u32, ctxt: &VcpuGuestContext) -> i64 {
    let arg = VcpuContext {
        vcpu,
        pad: 0,
        ctxt: addr_of(ctxt),
    };
    let mut op = Domctl::new(DomctlCmd::SetVcpuContext, domain, &arg);
    // SAFETY: the handle points at `ctxt`, a whole `vcpu_guest_context`
    // the hypervisor only reads.
    unsafe { domctl_raw(&mut op) }
}

/// `XEN_DOMCTL_getvcpucontext` of `vcpu` in `domain` into `ctxt`.
pub fn domctl_getvcpucontext(domain: u16, vcpu: u32, ctxt: &mut VcpuGuestContext) -> i64 {
    let arg = VcpuContext {
        vcpu,
        pad: 0,
        ctxt: core::ptr::from_mut(ctxt) as u64,
    };
    let mut op = Domctl::new(DomctlCmd::GetVcpuContext, domain, &arg);
    // SAFETY: the handle points at `ctxt`, a whole `vcpu_guest_context`
    // the hypervisor may write.
    unsafe { domctl_raw(&mut op) }
}

/// `sysctl` with a payload that holds no guest handle (`physinfo`,
/// `sched_id`; the others are refused with `EINVAL` without a hypercall).
pub fn sysctl<P: Wire>(cmd: SysctlCmd, payload: &P) -> (i64, Sysctl) {
    let mut op = Sysctl::new(cmd, payload);
    if !matches!(cmd, SysctlCmd::PhysInfo | SysctlCmd::SchedId) {
        return (dom0_abi::Errno::EINVAL.neg(), op);
    }
    // SAFETY: these payloads hold no guest handle.
    let ret = unsafe { sysctl_raw(&mut op) };
    (ret, op)
}

/// `XEN_SYSCTL_getdomaininfolist` from `first_domain` into `out`: the
/// result and the number of records written.
pub fn sysctl_getdomaininfolist(
    first_domain: u16,
    out: &mut [dom0_abi::domctl::GetDomainInfo],
) -> (i64, u32) {
    let arg = GetDomainInfoList {
        first_domain,
        max_domains: u32::try_from(out.len()).unwrap_or(u32::MAX),
        buffer: addr_of_mut(out),
        ..GetDomainInfoList::default()
    };
    let mut op = Sysctl::new(SysctlCmd::GetDomainInfoList, &arg);
    // SAFETY: the handle points at `out`, exclusively borrowed, with room
    // for `max_domains` 112-byte records (`GetDomainInfo` is `repr(C)` with
    // that size).
    let ret = unsafe { sysctl_raw(&mut op) };
    let done = op
        .payload::<GetDomainInfoList>()
        .map_or(0, |l| l.num_domains);
    (ret, done)
}

/// `XEN_SYSCTL_getcpuinfo` into `out` (one record per CPU, from CPU 0):
/// the result and the number of records written.
pub fn sysctl_getcpuinfo(out: &mut [CpuInfo]) -> (i64, u32) {
    let arg = GetCpuInfo {
        max_cpus: u32::try_from(out.len()).unwrap_or(u32::MAX),
        info: addr_of_mut(out),
        ..GetCpuInfo::default()
    };
    let mut op = Sysctl::new(SysctlCmd::GetCpuInfo, &arg);
    // SAFETY: the handle points at `out`, exclusively borrowed, with room
    // for `max_cpus` 8-byte records (`CpuInfo` is `repr(C)` with that
    // size).
    let ret = unsafe { sysctl_raw(&mut op) };
    let done = op.payload::<GetCpuInfo>().map_or(0, |c| c.nr_cpus);
    (ret, done)
}

/// `XENMEM_populate_physmap` for domain `domid` (the toolstack building
/// another domain): `frames` holds pfns in, MFNs out (for a PV domain).
/// Returns how many extents were populated, or a negative errno.
pub fn populate_physmap(frames: &mut [u64], extent_order: u32, domid: u16) -> i64 {
    // SAFETY: populating allocates; it frees nothing this domain uses.
    unsafe {
        super::reservation(
            dom0_abi::memory::MemoryOpCmd::PopulatePhysmap,
            frames,
            extent_order,
            0,
            domid,
        )
    }
}

/// `mmuext_op` pinning (or unpinning) page-table frame `mfn` of domain
/// `domid` (`foreigndom`). `cmd` must be one of the `PIN_L*_TABLE`
/// commands or `UNPIN_TABLE`; others are refused with `EINVAL` without a
/// hypercall.
pub fn pin_foreign_table(cmd: dom0_abi::mmu::MmuextCmd, mfn: u64, domid: u16) -> i64 {
    use dom0_abi::mmu::{MmuextCmd, MmuextOp};
    if !matches!(
        cmd,
        MmuextCmd::PinL1Table
            | MmuextCmd::PinL2Table
            | MmuextCmd::PinL3Table
            | MmuextCmd::PinL4Table
            | MmuextCmd::UnpinTable
    ) {
        return dom0_abi::Errno::EINVAL.neg();
    }
    let op = MmuextOp {
        cmd: cmd as u32,
        pad: 0,
        arg1: mfn,
        arg2: 0,
    };
    // SAFETY: (un)pinning a table changes its type count only; none of
    // this domain's mappings changes.
    unsafe { super::mmuext_op(&[op], None, u64::from(domid)) }
}

/// `XEN_SYSCTL_readconsole` into `buf` from the unread position (not
/// incremental, not clearing): the result and the bytes copied.
pub fn sysctl_readconsole(buf: &mut [u8]) -> (i64, u32) {
    readconsole(buf, None).0
}

/// `XEN_SYSCTL_readconsole` into `buf` from position `*index`
/// (incremental), moving `*index` past what was copied: the result and
/// the bytes copied.
pub fn sysctl_readconsole_from(buf: &mut [u8], index: &mut u32) -> (i64, u32) {
    let ((ret, done), after) = readconsole(buf, Some(*index));
    *index = after;
    (ret, done)
}

/// `XEN_SYSCTL_readconsole`, incremental from `index` if given: the
/// result, the bytes copied and the position after them.
fn readconsole(buf: &mut [u8], index: Option<u32>) -> ((i64, u32), u32) {
    let arg = dom0_abi::sysctl::ReadConsole {
        buffer: addr_of_mut(buf),
        count: u32::try_from(buf.len()).unwrap_or(u32::MAX),
        incremental: u8::from(index.is_some()),
        index: index.unwrap_or(0),
        ..dom0_abi::sysctl::ReadConsole::default()
    };
    let mut op = Sysctl::new(SysctlCmd::ReadConsole, &arg);
    // SAFETY: the handle points at `buf`, exclusively borrowed, and
    // `count` is at most its length.
    let ret = unsafe { sysctl_raw(&mut op) };
    let out = op.payload::<dom0_abi::sysctl::ReadConsole>();
    let done = out.map_or(0, |r| r.count);
    let after = out.map_or(arg.index, |r| r.index);
    ((ret, done), after)
}
