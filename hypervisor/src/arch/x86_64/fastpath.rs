//! The hypercall fast path's machine side: the hypercall vector's entry
//! path calls [`fast_hypercall`] for an `int $0x82` with the fast path's
//! number (`fastpath::FAST_HYPERCALL`) before the full entry; when it
//! answers, the stub leaves for the guest at once. The policy (which calls,
//! when) is `crate::fastpath`.
use core::mem::offset_of;

use dom0_abi::shared_info::VcpuInfo;

use crate::fastpath::{self, Lane};
use crate::layout::trampoline::{DATA, data};
use crate::stats::Stats;

use super::cpu;

/// This CPU's lane.
#[inline(always)]
pub fn this_lane() -> &'static Lane {
    // SAFETY: every CPU runs the hypervisor on a root that maps its own
    // trampoline, whose read-only data page holds at `data::LANE` the
    // address of this CPU's element of the static lane table
    // (`fastpath::lane_address`, written when the trampoline was built and
    // never after); the element lives for the whole run.
    unsafe { &*core::ptr::read((DATA + data::LANE) as *const *const Lane) }
}

/// The frame an `int $0x82` left on the entry stack, after the vector
/// and the error code the stub pushed: what the exit's `iretq` loads.
#[repr(C)]
#[derive(Debug)]
pub struct EntryFrame {
    /// RIP after the `int`.
    pub rip: u64,
    /// CS (RPL 1: only ring 1 reaches the hypercall gate).
    pub cs: u64,
    /// RFLAGS.
    pub rflags: u64,
    /// RSP.
    pub rsp: u64,
    /// SS.
    pub ss: u64,
}

/// What [`fast_hypercall`] returns when it declines (no answer it gives
/// has bit 63 set; the stub tests the sign).
pub const DECLINED: u64 = u64::MAX;

/// Answers `xen_version(cmd, arg)` (the fast path's number, which the
/// stub compared) if it is a call the fast path serves and nothing is
/// pending for the running vCPU; returns the answer for RAX, or
/// [`DECLINED`] (the stub then runs the full path on the untouched
/// context). `frame` is the CPU's frame on this CPU's entry stack, which
/// the exit's `iretq` loads as it is; only its RFLAGS is written
/// (sanitised). Takes no lock: it reads only this CPU's lane and the
/// running vCPU's `vcpu_info`.
pub extern "C" fn fast_hypercall(cmd: u64, arg: u64, frame: &mut EntryFrame) -> u64 {
    let start = if Stats::ENABLED { cpu::rdtsc() } else { 0 };
    let Some(value) = fastpath::answer(fastpath::FAST_HYPERCALL, cmd, arg) else {
        return DECLINED;
    };
    let lane = this_lane();
    let Some(info) = lane.ready() else {
        return DECLINED;
    };
    // SAFETY: `info` is the direct-map address of the running vCPU's
    // `vcpu_info`, published by one of its full entries (`begin_full`,
    // again whenever the place moved) and withdrawn when it leaves this
    // CPU (`Lane::disarm`); the frame stays the domain's while a vCPU of it
    // runs. The two bytes are plain data the guest may write at any time,
    // hence the volatile reads.
    let (pending, mask) = unsafe {
        (
            ((info + offset_of!(VcpuInfo, evtchn_upcall_pending) as u64) as *const u8)
                .read_volatile(),
            ((info + offset_of!(VcpuInfo, evtchn_upcall_mask) as u64) as *const u8).read_volatile(),
        )
    };
    if !fastpath::events_allow(pending, mask) {
        return DECLINED;
    }
    if !fastpath::kernel_frame_is_plain(frame.cs, frame.ss, frame.rip, frame.rsp) {
        return DECLINED;
    }
    frame.rflags = super::traps::sanitized_rflags(frame.rflags);
    if Stats::ENABLED {
        lane.count(cpu::rdtsc().wrapping_sub(start));
    }
    value
}
