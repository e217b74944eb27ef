//! The hypercall fast path's machine side: the hypercall vector's entry
//! path calls [`fast_hypercall`] for an `int $0x82` with the fast path's
//! number (`fastpath::FAST_HYPERCALL`) before the full entry; when it
//! answers, the stub leaves for the guest at once. The policy (which calls,
//! when) is `crate::fastpath`.
use core::mem::offset_of;

use dom0_abi::shared_info::VcpuInfo;

use crate::fastpath::{self, Lane};
use crate::layout::trampoline::{DATA, data};
use crate::regs::GuestRegs;
use crate::resume;
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

/// Answers the hypercall in `regs` if it is one the fast path serves and
/// nothing is pending for the running vCPU; returns whether it did (`regs`
/// then holds the result and is ready for the exit). Takes no lock: it
/// reads only this CPU's lane and the running vCPU's `vcpu_info`, and
/// writes only `regs`.
pub extern "C" fn fast_hypercall(regs: &mut GuestRegs) -> bool {
    let start = if Stats::ENABLED { cpu::rdtsc() } else { 0 };
    let Some(value) = fastpath::answer(regs.rax, regs.rdi, regs.rsi) else {
        return false;
    };
    let lane = this_lane();
    let Some(info) = lane.ready() else {
        return false;
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
        return false;
    }
    let frame = resume::Frame::of(regs);
    if !resume::is_plain(&frame) {
        return false;
    }
    regs.rax = value;
    if cfg!(debug_assertions) {
        super::traps::poison_arguments(regs);
    }
    super::traps::sanitize_rflags(regs);
    if Stats::ENABLED {
        lane.count(cpu::rdtsc().wrapping_sub(start));
    }
    true
}
