//! [`Hypervisor`] on the real thing: the hypercalls through guest-pv-shim
//! (Xen 4.17 or this project's hypervisor), plus the console ring of a
//! running domU mapped into dom0.
//!
//! Foreign frames are reached through the shim's mapping windows:
//! [`SCRATCH_WINDOW`] for one write at a time (mapped, written, unmapped,
//! so no writable mapping of a domU frame outlives the write and page-table
//! frames can be pinned), and one window per console ring and one per
//! xenstore ring while the domain lives ([`ConsoleRing`], [`StoreRingWindow`]).
#![forbid(unsafe_code)]

use core::sync::atomic::{Ordering, fence};

use dom0_abi::Errno;
use dom0_abi::cpu::VcpuGuestContext;
use dom0_abi::domctl::{
    AddressSize, CreateDomain, DomctlCmd, GetDomainInfo, GetVcpuInfo, HypercallInit, MaxMem,
    MaxVcpus, NoPayload, SchedCredit, SchedulerOp, SchedulerOpCmd,
};
use dom0_abi::event_channel::EvtchnAllocUnbound;
use dom0_abi::grant_table::GnttabSetupTable;
use dom0_abi::mmu::MmuextCmd;
use dom0_abi::sched::ShutdownReason;
use dom0_abi::sysctl::{PhysInfo, SchedId, SysctlCmd};
use guest_pv_shim::hypercall;
use guest_pv_shim::mm;

use dom0_abi::xenstore::{XENSTORE_RING_SIZE, XenstoreDomainInterface};
use xenstore::ring::StoreRing;

use crate::builder::{HvError, Hypervisor};
use crate::console::Ring;

/// The window used for one-off writes to another domain's frames.
pub const SCRATCH_WINDOW: usize = 0;
/// The first window used for console rings; windows
/// `CONSOLE_WINDOW_BASE..STORE_WINDOW_BASE` hold one console ring each.
pub const CONSOLE_WINDOW_BASE: usize = 1;
/// `STORE_WINDOW_BASE..GRANT_WINDOW_BASE` hold one xenstore ring each.
pub const STORE_WINDOW_BASE: usize = 16;
/// `GRANT_WINDOW_BASE..NET_WINDOW_BASE` hold dom0's mappings of a domU's
/// grants and its own frame for grant copies (the grant test).
pub const GRANT_WINDOW_BASE: usize = 24;
/// `NET_WINDOW_BASE..BLKBACK_WINDOW_BASE` hold the vifs' rings, two each
/// (TX, RX): eight vifs.
pub const NET_WINDOW_BASE: usize = 32;
/// `BLKBACK_WINDOW_BASE..BLKBACK_WINDOW_END` hold the block back end's
/// rings, one each: eight disks.
pub const BLKBACK_WINDOW_BASE: usize = 48;
/// The end of the block back end's windows (the device drivers' MMIO
/// windows follow: `guest_pv_shim::devices::MMIO_WINDOWS`).
pub const BLKBACK_WINDOW_END: usize = 56;

/// `ret` as a result of operation `op`.
fn check(op: &'static str, ret: i64) -> Result<i64, HvError> {
    if ret < 0 {
        Err(HvError { op, ret })
    } else {
        Ok(ret)
    }
}

/// A `domctl` without handles; returns the structure written back.
fn domctl<P: dom0_abi::wire::Wire>(
    op: &'static str,
    cmd: DomctlCmd,
    dom: u16,
    payload: &P,
) -> Result<dom0_abi::domctl::Domctl, HvError> {
    let (ret, out) = hypercall::domctl(cmd, dom, payload);
    check(op, ret)?;
    Ok(out)
}

/// `getdomaininfo` for `dom` (which may report the next domain up).
pub fn domain_info(dom: u16) -> Result<GetDomainInfo, HvError> {
    let out = domctl("getdomaininfo", DomctlCmd::GetDomainInfo, dom, &NoPayload)?;
    out.payload::<GetDomainInfo>().ok_or(HvError {
        op: "getdomaininfo",
        ret: Errno::EFAULT.neg(),
    })
}

/// `pausedomain`.
pub fn pause(dom: u16) -> Result<(), HvError> {
    domctl("pausedomain", DomctlCmd::PauseDomain, dom, &NoPayload).map(|_| ())
}

/// The toolstack's hypercalls on the running hypervisor.
#[derive(Debug, Default)]
pub struct Xen;

impl Hypervisor for Xen {
    fn create_domain(&mut self, config: &CreateDomain) -> Result<u16, HvError> {
        // Domain 0 in the request: the hypervisor picks the id.
        domctl("createdomain", DomctlCmd::CreateDomain, 0, config).map(|d| d.domain)
    }

    fn max_vcpus(&mut self, dom: u16, max: u32) -> Result<(), HvError> {
        domctl("max_vcpus", DomctlCmd::MaxVcpus, dom, &MaxVcpus { max }).map(|_| ())
    }

    fn max_mem(&mut self, dom: u16, max_memkb: u64) -> Result<(), HvError> {
        domctl("max_mem", DomctlCmd::MaxMem, dom, &MaxMem { max_memkb }).map(|_| ())
    }

    fn set_address_size(&mut self, dom: u16, bits: u32) -> Result<(), HvError> {
        let arg = AddressSize { size: bits };
        domctl("set_address_size", DomctlCmd::SetAddressSize, dom, &arg).map(|_| ())
    }

    fn alloc_unbound(&mut self, dom: u16, remote: u16) -> Result<u32, HvError> {
        let mut arg = EvtchnAllocUnbound {
            dom,
            remote_dom: remote,
            port: 0,
        };
        check("alloc_unbound", hypercall::evtchn_alloc_unbound(&mut arg))?;
        Ok(arg.port)
    }

    fn populate_physmap(&mut self, dom: u16, frames: &mut [u64]) -> Result<usize, HvError> {
        let ret = hypercall::populate_physmap(frames, 0, dom);
        let done = check("populate_physmap", ret)?;
        Ok(usize::try_from(done).unwrap_or(0))
    }

    fn write_frame(
        &mut self,
        dom: u16,
        mfn: u64,
        offset: usize,
        bytes: &[u8],
    ) -> Result<(), HvError> {
        check(
            "update_va_mapping_otherdomain",
            mm::map_foreign_window(SCRATCH_WINDOW, dom, mfn, mm::PTE_RW),
        )?;
        mm::window_write_bytes(SCRATCH_WINDOW, offset, bytes);
        check("update_va_mapping", mm::unmap_window(SCRATCH_WINDOW)).map(|_| ())
    }

    fn shared_info_frame(&mut self, dom: u16) -> Result<u64, HvError> {
        let info = domain_info(dom)?;
        if info.domain != dom {
            return Err(HvError {
                op: "getdomaininfo",
                ret: Errno::ESRCH.neg(),
            });
        }
        Ok(info.shared_info_frame)
    }

    fn grant_table_frame(&mut self, dom: u16) -> Result<u64, HvError> {
        let mut frame = [0u64; 1];
        let mut setup = GnttabSetupTable {
            dom,
            nr_frames: 1,
            frame_list: frame.as_mut_ptr() as u64,
            ..GnttabSetupTable::default()
        };
        let ret = hypercall::gnttab_setup_table(&mut setup);
        let ret = if ret == 0 {
            i64::from(setup.status)
        } else {
            ret
        };
        if ret != 0 {
            return Err(HvError {
                op: "setup_table",
                ret,
            });
        }
        Ok(frame[0])
    }

    fn hypercall_init(&mut self, dom: u16, mfn: u64) -> Result<(), HvError> {
        let arg = HypercallInit { gmfn: mfn };
        domctl("hypercall_init", DomctlCmd::HypercallInit, dom, &arg).map(|_| ())
    }

    fn pin_l4(&mut self, dom: u16, mfn: u64) -> Result<(), HvError> {
        let ret = hypercall::pin_foreign_table(MmuextCmd::PinL4Table, mfn, dom);
        check("mmuext_op(PIN_L4_TABLE)", ret).map(|_| ())
    }

    fn set_vcpu_context(
        &mut self,
        dom: u16,
        vcpu: u32,
        ctxt: &VcpuGuestContext,
    ) -> Result<(), HvError> {
        check(
            "setvcpucontext",
            hypercall::domctl_setvcpucontext(dom, vcpu, ctxt),
        )
        .map(|_| ())
    }

    fn unpause(&mut self, dom: u16) -> Result<(), HvError> {
        domctl("unpausedomain", DomctlCmd::UnpauseDomain, dom, &NoPayload).map(|_| ())
    }

    fn destroy(&mut self, dom: u16) -> Result<(), HvError> {
        domctl("destroydomain", DomctlCmd::DestroyDomain, dom, &NoPayload).map(|_| ())
    }
}

/// Byte offset of a field of `xencons_interface`.
macro_rules! cons_offset {
    ($field:ident) => {
        core::mem::offset_of!(dom0_abi::console::XenconsInterface, $field) as u64
    };
}
const OUT_OFFSET: u64 = cons_offset!(output);
const IN_CONS: u64 = cons_offset!(in_cons);
const IN_PROD: u64 = cons_offset!(in_prod);
const OUT_CONS: u64 = cons_offset!(out_cons);
const OUT_PROD: u64 = cons_offset!(out_prod);

/// A domU's console ring, mapped writable in one of dom0's windows while
/// the domain lives.
#[derive(Debug)]
pub struct ConsoleRing {
    window: usize,
}

/// Maps frame `mfn` of `dom` read-write in `window`.
fn map_ring(window: usize, dom: u16, mfn: u64) -> Result<usize, HvError> {
    check(
        "update_va_mapping_otherdomain",
        mm::map_foreign_window(window, dom, mfn, mm::PTE_RW),
    )?;
    Ok(window)
}

/// Unmaps a ring's window (before the domain is destroyed, so none of its
/// frames stays referenced by dom0).
fn unmap_ring(window: usize) -> Result<(), HvError> {
    check("update_va_mapping", mm::unmap_window(window)).map(|_| ())
}

impl ConsoleRing {
    /// Maps console frame `mfn` of `dom` in window `window`.
    pub fn map(window: usize, dom: u16, mfn: u64) -> Result<ConsoleRing, HvError> {
        map_ring(window, dom, mfn).map(|window| ConsoleRing { window })
    }

    /// Unmaps the ring.
    pub fn unmap(self) -> Result<(), HvError> {
        unmap_ring(self.window)
    }
}

impl Ring for ConsoleRing {
    fn out_prod(&self) -> u32 {
        let prod = mm::window_read_u32(self.window, OUT_PROD);
        // The bytes below `prod` are read after it.
        fence(Ordering::Acquire);
        prod
    }

    fn out_cons(&self) -> u32 {
        mm::window_read_u32(self.window, OUT_CONS)
    }

    fn out_byte(&self, index: u32) -> u8 {
        mm::window_read_u8(self.window, OUT_OFFSET + u64::from(index % 2048))
    }

    fn set_out_cons(&mut self, cons: u32) {
        // The reads of the bytes complete before the guest may reuse them.
        fence(Ordering::Release);
        mm::window_write_u32(self.window, OUT_CONS, cons);
    }

    fn in_cons(&self) -> u32 {
        let cons = mm::window_read_u32(self.window, IN_CONS);
        // The guest's reads below `cons` are done before the bytes are
        // overwritten.
        fence(Ordering::Acquire);
        cons
    }

    fn in_prod(&self) -> u32 {
        mm::window_read_u32(self.window, IN_PROD)
    }

    fn set_in_byte(&mut self, index: u32, byte: u8) {
        let at = usize::try_from(index % 1024).unwrap_or(0);
        mm::window_write_bytes(self.window, at, &[byte]);
    }

    fn set_in_prod(&mut self, prod: u32) {
        // The bytes are visible before the new producer index.
        fence(Ordering::Release);
        mm::window_write_u32(self.window, IN_PROD, prod);
    }
}

/// `scheduler_op` on `dom` for scheduler `sched_id`: sets `put` (weight
/// and cap) if given, then reads the parameters back.
pub fn sched_credit(
    dom: u16,
    sched_id: u32,
    put: Option<SchedCredit>,
) -> Result<SchedCredit, HvError> {
    if let Some(credit) = put {
        let op = SchedulerOp {
            sched_id,
            cmd: SchedulerOpCmd::PutInfo as u32,
            credit,
            ..SchedulerOp::default()
        };
        domctl("scheduler_op(putinfo)", DomctlCmd::SchedulerOp, dom, &op)?;
    }
    let op = SchedulerOp {
        sched_id,
        cmd: SchedulerOpCmd::GetInfo as u32,
        ..SchedulerOp::default()
    };
    let out = domctl("scheduler_op(getinfo)", DomctlCmd::SchedulerOp, dom, &op)?;
    Ok(out
        .payload::<SchedulerOp>()
        .map(|o| o.credit)
        .unwrap_or_default())
}

/// `sysctl sched_id`.
pub fn sched_id() -> Result<u32, HvError> {
    let (ret, out) = hypercall::sysctl(SysctlCmd::SchedId, &SchedId::default());
    check("sched_id", ret)?;
    Ok(out.payload::<SchedId>().map_or(0, |s| s.sched_id))
}

/// `sysctl physinfo`.
pub fn physinfo() -> Result<PhysInfo, HvError> {
    let (ret, out) = hypercall::sysctl(SysctlCmd::PhysInfo, &PhysInfo::default());
    check("physinfo", ret)?;
    out.payload::<PhysInfo>().ok_or(HvError {
        op: "physinfo",
        ret: Errno::EFAULT.neg(),
    })
}

/// `getvcpuinfo` of vCPU `vcpu` of `dom`.
pub fn vcpu_info(dom: u16, vcpu: u32) -> Result<GetVcpuInfo, HvError> {
    let arg = GetVcpuInfo {
        vcpu,
        ..GetVcpuInfo::default()
    };
    let out = domctl("getvcpuinfo", DomctlCmd::GetVcpuInfo, dom, &arg)?;
    out.payload::<GetVcpuInfo>().ok_or(HvError {
        op: "getvcpuinfo",
        ret: Errno::EFAULT.neg(),
    })
}

/// `getdomaininfolist` from `first` into `out`; returns the records filled.
pub fn domain_list(first: u16, out: &mut [GetDomainInfo]) -> Result<usize, HvError> {
    let (ret, n) = hypercall::sysctl_getdomaininfolist(first, out);
    check("getdomaininfolist", ret)?;
    Ok(usize::try_from(n).unwrap_or(0).min(out.len()))
}

/// `SCHEDOP_remote_shutdown` of `dom` with `reason`.
pub fn remote_shutdown(dom: u16, reason: ShutdownReason) -> Result<(), HvError> {
    check(
        "remote_shutdown",
        hypercall::sched_remote_shutdown(dom, reason as u32),
    )
    .map(|_| ())
}

/// Offset of a field of the xenstore ring page.
macro_rules! xs_offset {
    ($field:ident) => {
        core::mem::offset_of!(XenstoreDomainInterface, $field) as u64
    };
}

/// A domU's xenstore ring, mapped read-write in one of dom0's windows.
#[derive(Debug)]
pub struct StoreRingWindow {
    window: usize,
}

impl StoreRingWindow {
    /// Maps frame `mfn` of `dom` in `window`.
    pub fn map(window: usize, dom: u16, mfn: u64) -> Result<StoreRingWindow, HvError> {
        map_ring(window, dom, mfn).map(|window| StoreRingWindow { window })
    }

    /// Unmaps the ring.
    pub fn unmap(self) -> Result<(), HvError> {
        unmap_ring(self.window)
    }
}

/// Where ring index `index` lies in a 1024-byte ring, and how many of
/// `len` bytes from there fit before the ring's end.
fn ring_span(index: u32, len: usize) -> (usize, usize) {
    let at = index as usize % XENSTORE_RING_SIZE;
    (at, len.min(XENSTORE_RING_SIZE - at))
}

impl StoreRing for StoreRingWindow {
    fn req_prod(&self) -> u32 {
        let prod = mm::window_read_u32(self.window, xs_offset!(req_prod));
        fence(Ordering::Acquire);
        prod
    }

    fn req_cons(&self) -> u32 {
        mm::window_read_u32(self.window, xs_offset!(req_cons))
    }

    fn req_bytes(&self, index: u32, out: &mut [u8]) {
        let (at, n) = ring_span(index, out.len());
        mm::window_read_bytes(
            self.window,
            core::mem::offset_of!(XenstoreDomainInterface, req) + at,
            &mut out[..n],
        );
    }

    fn set_req_cons(&mut self, cons: u32) {
        fence(Ordering::Release);
        mm::window_write_u32(self.window, xs_offset!(req_cons), cons);
    }

    fn rsp_prod(&self) -> u32 {
        mm::window_read_u32(self.window, xs_offset!(rsp_prod))
    }

    fn rsp_cons(&self) -> u32 {
        let cons = mm::window_read_u32(self.window, xs_offset!(rsp_cons));
        fence(Ordering::Acquire);
        cons
    }

    fn set_rsp_bytes(&mut self, index: u32, bytes: &[u8]) {
        let (at, n) = ring_span(index, bytes.len());
        mm::window_write_bytes(
            self.window,
            core::mem::offset_of!(XenstoreDomainInterface, rsp) + at,
            &bytes[..n],
        );
    }

    fn set_rsp_prod(&mut self, prod: u32) {
        fence(Ordering::Release);
        mm::window_write_u32(self.window, xs_offset!(rsp_prod), prod);
    }
}
