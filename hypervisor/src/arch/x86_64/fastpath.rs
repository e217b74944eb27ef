//! The fast lanes' machine side: the hypercall vector's entry path calls
//! [`fast_hypercall`] for an `int $0x82` with the fast path's number
//! (`fastpath::FAST_HYPERCALL`) and [`fast_iret`] for one with
//! `HYPERVISOR_iret`'s and [`fast_evtchn_send`] for one with
//! `event_channel_op`'s, the page-fault vector's entry path calls
//! [`fast_page_fault`] and the 64-bit `SYSCALL` entry [`fast_syscall`],
//! each before the full entry; when one serves the
//! entry, the stub leaves for the guest at once. The policy (which
//! entries, when) is `crate::fastpath`.
use core::mem::offset_of;

use dom0_abi::cpu::IretContext;
use dom0_abi::shared_info::VcpuInfo;
use dom0_abi::wire::Wire;

use crate::domain::DOMAINS;
use crate::fastpath::{self, Lane};
use crate::layout::trampoline::{DATA, data};
use crate::stats::Stats;
use crate::vcpu::{self, Context};

use super::evtchn::SharedInfoBits;
use super::traps::sanitized_rflags;
use super::{cpu, guest, guest_mem};

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
    if !fastpath::events_allow(upcall_pending(info), upcall_mask(info)) {
        return DECLINED;
    }
    if !fastpath::kernel_frame_is_plain(frame.cs, frame.ss, frame.rip, frame.rsp) {
        return DECLINED;
    }
    frame.rflags = sanitized_rflags(frame.rflags);
    if Stats::ENABLED {
        lane.count(cpu::rdtsc().wrapping_sub(start));
    }
    value
}

/// Serves `event_channel_op(EVTCHNOP_send, arg)` (the stub compared the
/// number) when the event stays with the calling vCPU and the full path
/// would do nothing else (`fastpath::send_stays_here`): with the
/// domain's slot locked (tried only: a slot another CPU holds declines),
/// makes the port pending as `EventChannels::send` does, then delivers
/// the upcall the full exit would deliver (`fastpath::upcall_frame`): the
/// bounce frame on the kernel stack, the event callback's context in
/// `frame`, upcalls masked. `rcx` and `r11` are the guest's (they go
/// into the bounce frame). A port it declined last declines at once
/// (`Lane::declined_before`: the ping-pong's and xenstore's sends go to
/// another domain). Returns 0 for RAX, or [`DECLINED`] with
/// nothing changed, but for one case: a bounce frame that cannot be
/// written after the port was made pending declines too, and the full
/// path sends again (the port is pending already, so that changes
/// nothing) and crashes the domain, as it would have.
pub extern "C" fn fast_evtchn_send(
    cmd: u64,
    arg: u64,
    frame: &mut EntryFrame,
    rcx: u64,
    r11: u64,
) -> u64 {
    let start = if Stats::ENABLED { cpu::rdtsc() } else { 0 };
    if !fastpath::is_send(cmd) {
        return DECLINED;
    }
    let lane = this_lane();
    let Some((info, domain, me)) = lane.running() else {
        return DECLINED;
    };
    let mut port = [0u8; 4];
    if guest_mem::copy_from_guest(arg, &mut port).is_err() {
        return DECLINED;
    }
    let port = u32::from_le_bytes(port);
    if lane.declined_before(domain, me, port)
        || !fastpath::kernel_frame_is_plain(frame.cs, frame.ss, frame.rip, frame.rsp)
    {
        return DECLINED;
    }
    let Some(mut guard) = DOMAINS
        .get()
        .and_then(|table| table.slot(domain))
        .and_then(|slot| slot.try_lock())
    else {
        return DECLINED;
    };
    // Work flagged before the lock was taken (its state changed under
    // this lock) is the full path's.
    let (Some(entry), Some(_)) = (guard.as_deref_mut(), lane.ready()) else {
        return DECLINED;
    };
    if !fastpath::send_stays_here(&entry.domain.evtchn, &entry.vcpus, u32::from(me), port) {
        lane.note_declined(domain, me, port);
        return DECLINED;
    }
    let Some(vcpu) = entry.vcpus.get(usize::from(me)) else {
        return DECLINED;
    };
    let Some(upcall) =
        fastpath::upcall_frame(vcpu, &interrupted(frame, rcx, r11), upcall_mask(info))
    else {
        return DECLINED;
    };
    let mut bits = SharedInfoBits::new(entry.domain.shared_info, domain, u32::from(me));
    if entry.domain.evtchn.send(&mut bits, port).is_err() {
        return DECLINED;
    }
    match upcall {
        Some(bounce) if upcall_pending(info) != 0 => {
            if guest_mem::copy_words_to_guest(bounce.rsp, bounce.words()).is_err() {
                return DECLINED;
            }
            enter_handler(frame, vcpu.event.address, bounce.rsp, info, true);
            lane.count_upcall();
        }
        _ => frame.rflags = sanitized_rflags(frame.rflags),
    }
    drop(guard);
    if Stats::ENABLED {
        lane.count(cpu::rdtsc().wrapping_sub(start));
    }
    0
}

/// The address of field `offset` of the `vcpu_info` at hypervisor
/// address `info`, which a lane read from [`Lane::ready`] or
/// [`Lane::published`].
///
/// Every access through it is sound for the same reason: `info` is the
/// direct-map address of the running vCPU's `vcpu_info`, published by one
/// of its full entries (`begin_full`, again whenever the place moved) and
/// withdrawn when it leaves this CPU (`Lane::disarm`); the frame stays the
/// domain's while a vCPU of it runs. Its bytes are plain data the guest
/// may write at any time, hence volatile accesses.
fn vcpu_info_field(info: u64, offset: usize) -> u64 {
    info + offset as u64
}

/// The running vCPU's `evtchn_upcall_pending`.
#[inline(always)]
fn upcall_pending(info: u64) -> u8 {
    let at = vcpu_info_field(info, offset_of!(VcpuInfo, evtchn_upcall_pending));
    // SAFETY: see `vcpu_info_field`.
    unsafe { (at as *const u8).read_volatile() }
}

/// The running vCPU's `evtchn_upcall_mask`.
#[inline(always)]
fn upcall_mask(info: u64) -> u8 {
    let at = vcpu_info_field(info, offset_of!(VcpuInfo, evtchn_upcall_mask));
    // SAFETY: see `vcpu_info_field`.
    unsafe { (at as *const u8).read_volatile() }
}

/// Sets the running vCPU's `evtchn_upcall_mask`.
#[inline(always)]
fn set_upcall_mask(info: u64, mask: u8) {
    let at = vcpu_info_field(info, offset_of!(VcpuInfo, evtchn_upcall_mask));
    // SAFETY: see `vcpu_info_field`.
    unsafe { (at as *mut u8).write_volatile(mask) }
}

/// The frame a page fault left on the entry stack: the vector the stub
/// pushed, then the CPU's error code and frame.
#[repr(C)]
#[derive(Debug)]
pub struct FaultFrame {
    /// The vector (14).
    pub vector: u64,
    /// The page-fault error code.
    pub error_code: u64,
    /// What the exit's `iretq` loads.
    pub frame: EntryFrame,
}

/// Bounces a page fault of the guest kernel to its handler if the fault
/// needs no hypervisor policy and nothing is pending
/// (`fastpath::page_fault_bounce`): writes the bounce frame on the kernel
/// stack through the guest's own mappings (a fault there is recovered),
/// CR2 into `vcpu_info`, the handler's context into `fault`'s frame (which
/// the exit's `iretq` loads), and masks events if the handler's gate says
/// so: what the full path does for the same fault. `rcx` and `r11` are the
/// guest's (they go into the bounce frame); every other register is left
/// to the stub. Returns 1 when it bounced, 0 when the full path must run
/// (the context untouched, CR2 as the fault left it). Takes no lock.
pub extern "C" fn fast_page_fault(fault: &mut FaultFrame, rcx: u64, r11: u64) -> u64 {
    let start = if Stats::ENABLED { cpu::rdtsc() } else { 0 };
    let cr2 = cpu::read_cr2();
    let lane = this_lane();
    let Some(published) = lane.published() else {
        return 0;
    };
    let info = published.vcpu_info;
    let mask = upcall_mask(info);
    let f = &mut fault.frame;
    let Some(bounce) = fastpath::page_fault_bounce(
        &published,
        &interrupted(f, rcx, r11),
        fault.error_code,
        cr2,
        upcall_pending(info),
        mask,
    ) else {
        return 0;
    };
    if guest_mem::copy_words_to_guest(bounce.rsp, bounce.words()).is_err() {
        // The full path finds the kernel stack unwritable too (and crashes
        // the domain), after reading the fault's address again.
        cpu::write_cr2(cr2);
        return 0;
    }
    let at = vcpu_info_field(info, offset_of!(VcpuInfo, arch.cr2));
    // SAFETY: see `vcpu_info_field`; `arch.cr2` is where PV guests read
    // the fault address.
    unsafe { (at as *mut u64).write_volatile(cr2) };
    enter_handler(
        f,
        published.page_fault.address,
        bounce.rsp,
        info,
        published.page_fault.mask_events,
    );
    if Stats::ENABLED {
        lane.count_bounce(cpu::rdtsc().wrapping_sub(start));
    }
    1
}

/// The interrupted context a bounce frame records: `frame` and the
/// guest's RCX and R11 (RAX is not in the frame).
#[inline(always)]
fn interrupted(frame: &EntryFrame, rcx: u64, r11: u64) -> Context {
    Context {
        rip: frame.rip,
        cs: frame.cs,
        rflags: frame.rflags,
        rsp: frame.rsp,
        ss: frame.ss,
        rcx,
        r11,
        rax: 0,
    }
}

/// Makes `frame` resume at the bounce handler `handler`, on its frame at
/// `rsp`, as the full path's exit would (RCX, R11 and RAX stay the
/// guest's), and masks events in the `vcpu_info` at `info` if the
/// handler's gate or callback asks for it (`mask_events`).
#[inline(always)]
fn enter_handler(frame: &mut EntryFrame, handler: u64, rsp: u64, info: u64, mask_events: bool) {
    (frame.rip, frame.cs, frame.rsp, frame.ss) = (handler, vcpu::HANDLER_CS, rsp, vcpu::HANDLER_SS);
    frame.rflags = sanitized_rflags(vcpu::handler_rflags(frame.rflags));
    if mask_events {
        set_upcall_mask(info, 1);
    }
}

/// Bounces a 64-bit `SYSCALL` from guest user mode to the syscall
/// callback if the full path would do nothing else and nothing is pending
/// (`fastpath::syscall_bounce`): writes the bounce frame on the kernel
/// stack through the guest's own mappings, the callback's context into
/// `entry`'s frame, masks events if the callback asks for it, and loads
/// the kernel segments from what the vCPU published if its user GS base
/// was the active one (the lane then notes the mode for the vCPU's
/// record): what the full path does for the same `SYSCALL`. `rcx` and
/// `r11` are what the instruction left (the return RIP and RFLAGS).
/// Returns 1 when it bounced, 0 when the full path must run (nothing
/// changed). Takes no lock.
pub extern "C" fn fast_syscall(entry: &mut FaultFrame, rcx: u64, r11: u64) -> u64 {
    let start = if Stats::ENABLED { cpu::rdtsc() } else { 0 };
    let lane = this_lane();
    let Some(published) = lane.published() else {
        return 0;
    };
    let info = published.vcpu_info;
    let mask = upcall_mask(info);
    let f = &mut entry.frame;
    let Some(bounce) = fastpath::syscall_bounce(
        &published,
        &interrupted(f, rcx, r11),
        upcall_pending(info),
        mask,
        |at| {
            published
                .kernel_l4
                .is_some_and(|root| guest::maps_supervisor_page(root, at))
        },
    ) else {
        return 0;
    };
    if guest_mem::copy_words_to_guest(bounce.rsp, bounce.words()).is_err() {
        return 0;
    }
    enter_handler(
        f,
        published.syscall.address,
        bounce.rsp,
        info,
        published.syscall.mask_events,
    );
    if !published.kernel_gs {
        let s = lane.segments();
        cpu::load_guest_segments(s.fs_base, 0, s.gs_base_kernel, s.gs_base_user);
        lane.set_mode(true);
    }
    if Stats::ENABLED {
        lane.count_bounce(cpu::rdtsc().wrapping_sub(start));
    }
    1
}

/// The registers the `iret` entry saved on the hypervisor stack, lowest
/// first: the slot for the RAX the guest resumes with, the guest's RDI,
/// RSI, RDX, R8, R10 and R9 (put back as they are), R11 and RCX (the
/// guest's, or those the `iret` frame gives).
#[repr(C)]
#[derive(Debug)]
pub struct IretRegs {
    /// RAX after the `iret` (written only when it is served).
    pub rax: u64,
    /// RDI, RSI, RDX, R8, R10, R9.
    _kept: [u64; 6],
    /// R11.
    pub r11: u64,
    /// RCX.
    pub rcx: u64,
}

/// Completes a `HYPERVISOR_iret` if the lane may
/// (`fastpath::iret_target`): reads the `iret_context` at the guest's RSP
/// through its own mappings, writes the context it names into the frame
/// the exit's `iretq` loads and into `regs` (RAX, RCX, R11), the upcall
/// mask it restores into `vcpu_info`, and for a return to user mode loads
/// the user segments from what the vCPU published (the lane then notes
/// the mode for the vCPU's record): what the full path does for the same
/// frame. Returns 1 when it did, 0 when the full path must run (nothing
/// changed). Takes no lock.
pub extern "C" fn fast_iret(frame: &mut EntryFrame, regs: &mut IretRegs) -> u64 {
    let start = if Stats::ENABLED { cpu::rdtsc() } else { 0 };
    let lane = this_lane();
    let Some(published) = lane.published() else {
        return 0;
    };
    let mut words = [0u64; IretContext::SIZE / 8];
    if guest_mem::copy_words_from_guest(frame.rsp, &mut words).is_err() {
        return 0;
    }
    let [rax, r11, rcx, flags, rip, cs, rflags, rsp, ss] = words;
    let context = IretContext {
        rax,
        r11,
        rcx,
        flags,
        rip,
        cs,
        rflags,
        rsp,
        ss,
    };
    let info = published.vcpu_info;
    let Some(target) = fastpath::iret_target(&published, &context, || upcall_pending(info)) else {
        return 0;
    };
    let c = &target.context;
    if c.in_user_mode() {
        let s = lane.segments();
        cpu::load_guest_segments(s.fs_base, s.user_gs_sel, s.gs_base_user, s.gs_base_kernel);
        lane.set_mode(false);
    }
    (frame.rip, frame.cs, frame.rsp, frame.ss) = (c.rip, c.cs, c.rsp, c.ss);
    frame.rflags = sanitized_rflags(c.rflags);
    (regs.rax, regs.rcx, regs.r11) = (c.rax, c.rcx, c.r11);
    set_upcall_mask(info, target.upcall_mask);
    if Stats::ENABLED {
        lane.count(cpu::rdtsc().wrapping_sub(start));
    }
    1
}
