//! The fast lanes' policy: which hypercalls, bounces and `iret`s they
//! serve, and the per-CPU "work pending" flag that tells them when they
//! may.
//!
//! A hypercall that needs no domain state (today `xen_version`'s
//! `XENVER_version` and `XENVER_pagesize`) is answered by the entry itself
//! without taking a lock, routing through the hypercall table or running
//! the exit checks, as long as nothing is pending for the running vCPU.
//! The same holds for two more entries that need no hypervisor policy:
//! a page fault of the guest kernel on a page that is not present, which
//! is bounced to the kernel's handler ([`page_fault_bounce`]), and a
//! `HYPERVISOR_iret` back to kernel mode ([`iret_target`]). The event
//! lane serves an `EVTCHNOP_send` that raises the caller itself
//! ([`send_stays_here`]) and the upcall that follows ([`upcall_frame`]),
//! holding the domain's slot, which it only tries.
//! "Nothing pending" is two tests:
//!
//! - the CPU's [`Lane`] holds no work: no one changed the running vCPU's
//!   state behind its back since its last full entry began (an NMI
//!   raised, its domain paused, a new `vcpu_info` place, a new trap
//!   table, NMIs masked or unmasked: [`note_work`]), and a full entry has
//!   published what the lanes read of the vCPU ([`Lane::begin_full`]);
//! - that `vcpu_info` shows no unmasked upcall ([`events_allow`]). The
//!   guest writes these bytes itself (Linux sets `evtchn_upcall_pending`
//!   when it unmasks a pending port and then makes a `xen_version` call to
//!   have the upcall delivered), so they are read on every fast entry
//!   rather than trusted to a flag.
//!
//! Everything else the full exit looks at is made pending only by the
//! vCPU's own entries, each of which ends in a full exit, or by a switch
//! to the vCPU, which ends in one too; `docs/performance.md` ("The fast
//! path's flag") argues why no wake-up is lost.
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use dom0_abi::cpu::IretContext;
use dom0_abi::event_channel::EvtchnOp;
use dom0_abi::hypercall::Hypercall;
use dom0_abi::segment::{FLAT_RING3_CS32, RING1_KERNEL_CS, RING1_KERNEL_SS};
use dom0_abi::stats::Counter;
use dom0_abi::types::{DomId, Mfn};
use dom0_abi::version::VersionCmd;

use crate::evtchn::EventChannels;
use crate::hypercall::version::{XEN_MAJOR, XEN_MINOR};
use crate::layout::{PAGE_SIZE, guest_range_ok, is_canonical};
use crate::smp::MAX_CPUS;
use crate::stats::Stats;
use crate::timer::Sleep;
use crate::vcpu::{self, BounceFrame, Callback, Context, IretTarget, TrapGate, Vcpu};

/// The answer of a hypercall the fast path serves, or `None` when the full
/// path must run it (another hypercall, another sub-op, or an argument the
/// full path must look at, such as an error to report). Every answer is the
/// one `hypercall::dispatch` gives for the same call.
#[inline(always)]
#[must_use]
pub fn answer(number: u64, arg0: u64, arg1: u64) -> Option<u64> {
    if number != FAST_HYPERCALL {
        return None;
    }
    match arg0 {
        c if c == VersionCmd::Version as u64 => Some(u64::from((XEN_MAJOR << 16) | XEN_MINOR)),
        c if c == VersionCmd::Pagesize as u64 && arg1 == 0 => Some(PAGE_SIZE),
        _ => None,
    }
}

/// Whether `vcpu_info`'s upcall bytes let a hypercall return without the
/// event check: no upcall pending, or events masked (a masked upcall waits
/// for the guest to unmask, which is a write the guest follows with a
/// hypercall if it wants the upcall: that one sees it pending here).
#[inline(always)]
#[must_use]
pub fn events_allow(pending: u8, mask: u8) -> bool {
    pending == 0 || mask != 0
}

/// Whether the frame an `int $0x82` left (from ring 1: the gate's DPL
/// admits no other ring) is the common one [`crate::resume::is_plain`]
/// accepts: the ring-1 kernel selectors, a canonical RIP and RSP. The
/// exit's `iretq` can then load it without a descriptor check; any other
/// frame declines to the full path, whose exit checks it in full.
#[inline(always)]
#[must_use]
pub fn kernel_frame_is_plain(cs: u64, ss: u64, rip: u64, rsp: u64) -> bool {
    let selectors = (cs & 0xffff) | ((ss & 0xffff) << 16);
    selectors == u64::from(RING1_KERNEL_CS) | (u64::from(RING1_KERNEL_SS) << 16)
        && is_canonical(rip)
        && is_canonical(rsp)
}

/// The #PF vector.
const PAGE_FAULT: usize = 14;
/// Page-fault error-code bit: the page was present (a protection fault).
const PF_PRESENT: u64 = 1;

/// What the lanes read of the running vCPU's record, published by its full
/// entries ([`Lane::begin_full`]) and withdrawn when it leaves the CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Published {
    /// Hypervisor address of its `vcpu_info` (0: none: the lanes are off).
    pub vcpu_info: u64,
    /// Its trap-table entry for #PF (address 0: none registered).
    pub page_fault: TrapGate,
    /// Its 64-bit `SYSCALL` callback (address 0: none registered).
    pub syscall: Callback,
    /// Its kernel stack for events from user mode (`stack_switch`; 0:
    /// none).
    pub kernel_sp: u64,
    /// Its kernel page tables' root, if it has one.
    pub kernel_l4: Option<Mfn>,
    /// Whether it registered an event callback (without one no upcall is
    /// delivered, whatever `vcpu_info` says).
    pub event_callback: bool,
    /// Whether its NMIs are masked (an NMI handler has not returned yet).
    pub nmi_masked: bool,
    /// Whether its kernel GS base is the active one
    /// (`Vcpu::gs_kernel_active`, as the lanes left it).
    pub kernel_gs: bool,
    /// Its domain (whose slot the event lane locks).
    pub domain: DomId,
    /// Whether a send may stay in its domain
    /// (`EventChannels::may_send_locally`): without, the event lane's
    /// stub declines every send before it saves anything.
    pub local_sends: bool,
    /// Its id in that domain.
    pub vcpu: u16,
    /// Whether its segment state for a switch of modes is known
    /// ([`Lane::segments`]): whether the record is the whole truth. With
    /// CR4.FSGSBASE clear the guest moves its bases only through the
    /// hypervisor, so the record holds them; otherwise a return to user
    /// mode takes the full path, which reads the live bases first.
    pub segments_known: bool,
}

/// What a switch between guest kernel and user mode loads: the FS base,
/// the user GS selector and both GS bases, from the vCPU's record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segments {
    /// FS base.
    pub fs_base: u64,
    /// User GS selector (null or `FLAT_RING3_DS`).
    pub user_gs_sel: u16,
    /// User GS base (active in user mode).
    pub gs_base_user: u64,
    /// Kernel GS base (the inactive one in user mode).
    pub gs_base_kernel: u64,
}

impl Published {
    /// What the lanes need of `vcpu`, a vCPU of `domain` whose `vcpu_info`
    /// lies at hypervisor address `vcpu_info`, and its [`Segments`].
    #[must_use]
    pub fn of(
        vcpu: &Vcpu,
        domain: DomId,
        local_sends: bool,
        vcpu_info: u64,
    ) -> (Published, Segments) {
        let published = Published {
            vcpu_info,
            page_fault: vcpu.traps[PAGE_FAULT],
            syscall: vcpu.syscall,
            kernel_sp: vcpu.kernel_sp,
            kernel_l4: vcpu.mm.kernel_l4,
            event_callback: vcpu.event.address != 0,
            nmi_masked: vcpu.nmi.is_masked(),
            kernel_gs: vcpu.gs_kernel_active,
            domain,
            local_sends,
            // vCPU ids stay below `XEN_LEGACY_MAX_VCPUS`.
            vcpu: u16::try_from(vcpu.id).unwrap_or(u16::MAX),
            segments_known: !vcpu.cr4_fsgsbase,
        };
        let segments = Segments {
            fs_base: vcpu.fs_base,
            user_gs_sel: vcpu.user_gs_sel,
            gs_base_user: vcpu.gs_base_user,
            gs_base_kernel: vcpu.gs_base_kernel,
        };
        (published, segments)
    }

    /// Whether the full exit would bounce no upcall, with the upcall bytes
    /// `pending` and `mask` (`guest::deliver_pending_event`'s rule).
    #[inline(always)]
    #[must_use]
    pub fn no_upcall(&self, pending: u8, mask: u8) -> bool {
        !self.event_callback || events_allow(pending, mask)
    }
}

/// The bounce frame for a page fault (error code `error_code`, address
/// `cr2`) that interrupted `ctx`, when it needs no hypervisor policy and
/// the full path would do nothing but bounce it to the guest's handler;
/// `None` sends the fault to the full path. `pending` and `mask` are the
/// vCPU's upcall bytes before the bounce. The fault qualifies when all of
/// these hold:
///
/// - it came from the guest kernel (a bounce from user mode switches
///   stacks and GS bases);
/// - the page was not present: a protection fault may be a store the
///   hypervisor emulates (writable page tables, read-only device memory);
/// - the address lies in guest space: the hypervisor's slots hold the LDT
///   window, whose faults it handles itself;
/// - a handler is registered, at a canonical address (the exit can load
///   it without a check);
/// - no upcall is due once the handler's gate has (or has not) masked
///   events ([`Published::no_upcall`]): the full exit would bounce it on
///   top;
/// - the frame's place is guest memory ([`vcpu::bounce_frame`]).
#[inline(always)]
#[must_use]
pub fn page_fault_bounce(
    published: &Published,
    ctx: &Context,
    error_code: u64,
    cr2: u64,
    pending: u8,
    mask: u8,
) -> Option<BounceFrame> {
    let gate = published.page_fault;
    if ctx.in_user_mode()
        || error_code & PF_PRESENT != 0
        || !guest_range_ok(cr2, 1)
        || gate.address == 0
        || !is_canonical(gate.address)
    {
        return None;
    }
    let mask_after = if gate.mask_events { 1 } else { mask };
    if !published.no_upcall(pending, mask_after) {
        return None;
    }
    vcpu::bounce_frame(0, ctx, Some(error_code), mask).ok()
}

/// The lowest address of the upper canonical half.
const UPPER_HALF: u64 = 0xffff_8000_0000_0000;
/// Bytes of `syscall` (`0F 05`).
const SYSCALL_LEN: u64 = 2;

/// The bounce frame for a 64-bit `SYSCALL` from guest user mode that
/// interrupted `ctx` (RCX and R11 as the instruction left them), when the
/// full path would do nothing but bounce it to the syscall callback;
/// `None` sends it to the full path. `pending` and `mask` are the vCPU's
/// upcall bytes before the bounce. It qualifies when all of these hold:
///
/// - it is not the kernel's own `SYSCALL` hypercall: the vCPU's user GS
///   base is the active one (the hypervisor last returned it to user
///   mode), or the instruction lies in the lower half, or `in_supervisor_page`
///   (a walk of the kernel's page tables, `guest::syscall_from_kernel`'s
///   rule) says it is not in a supervisor page;
/// - a callback is registered, at a canonical address;
/// - the switch to kernel mode needs no live base read: the kernel GS base
///   is already the active one, or the segment record is the whole truth
///   ([`Published::segments_known`]);
/// - no upcall is due once the callback has (or has not) masked events;
/// - a kernel stack is registered and the frame's place is guest memory
///   ([`vcpu::bounce_frame`]).
#[inline(always)]
#[must_use]
pub fn syscall_bounce(
    published: &Published,
    ctx: &Context,
    pending: u8,
    mask: u8,
    in_supervisor_page: impl FnOnce(u64) -> bool,
) -> Option<BounceFrame> {
    let callback = published.syscall;
    let at = ctx.rip.wrapping_sub(SYSCALL_LEN);
    if (published.kernel_gs && at >= UPPER_HALF && in_supervisor_page(at))
        || callback.address == 0
        || !is_canonical(callback.address)
        || !(published.kernel_gs || published.segments_known)
    {
        return None;
    }
    let mask_after = if callback.mask_events { 1 } else { mask };
    if !published.no_upcall(pending, mask_after) {
        return None;
    }
    vcpu::bounce_frame(published.kernel_sp, ctx, None, mask).ok()
}

/// What a `HYPERVISOR_iret` with `frame` returns to, when the lane may
/// complete it: on a plain frame (`resume::is_plain`: the exit loads it
/// without a check), with NMIs not masked (the full path unmasks them),
/// no upcall due under the mask the frame restores (`pending` reads the
/// vCPU's upcall-pending byte), and, for a return to user mode, the
/// vCPU's segment state known ([`Published::segments_known`]: the lane
/// loads it). `None` sends the call to the full path.
///
/// The call came from ring 1 (the gate admits no other ring), where the
/// vCPU's kernel GS base is always the active one (only a bounce from
/// user mode brings a vCPU to ring 1, and it makes it so): a return to
/// kernel mode leaves the segments as they are, a return to user mode
/// loads the user ones, as the full path's `iret` does.
#[inline(always)]
#[must_use]
pub fn iret_target(
    published: &Published,
    frame: &IretContext,
    pending: impl FnOnce() -> u8,
) -> Option<IretTarget> {
    if published.nmi_masked || (frame.cs & 3 == 3 && !published.segments_known) {
        return None;
    }
    let target = vcpu::iret(frame);
    let c = &target.context;
    let no_upcall = !published.event_callback || events_allow(pending(), target.upcall_mask);
    (iret_context_is_plain(c) && no_upcall).then_some(target)
}

/// Whether a context `vcpu::iret` computed is one `resume::is_plain`
/// accepts: its selectors are the flat kernel or user ones but for a
/// 32-bit user CS, so only that CS and RIP and RSP are left to test.
#[inline(always)]
fn iret_context_is_plain(c: &Context) -> bool {
    c.cs != u64::from(FLAT_RING3_CS32) && is_canonical(c.rip) && is_canonical(c.rsp)
}

/// The hypercall number of the event lane (`event_channel_op`).
pub const SEND_HYPERCALL: u64 = Hypercall::EventChannelOp as u64;

/// Whether `event_channel_op(cmd, ..)` names `EVTCHNOP_send` (the full
/// path reads the low 32 bits of `cmd`).
#[inline(always)]
#[must_use]
pub fn is_send(cmd: u64) -> bool {
    cmd & 0xffff_ffff == EvtchnOp::Send as u64
}

/// Whether vCPU `me` of a domain with event channels `channels` and
/// vCPUs `vcpus` (its slot locked) may have its `EVTCHNOP_send` on `port`
/// served by the event lane: the full path would make the port pending
/// for `me` itself and do nothing else on the way. That holds when
///
/// - the send stays in the domain and raises `me`
///   ([`EventChannels::local_target`]): no other vCPU is kicked, no other
///   domain's slot is touched, and an error is the full path's to report;
/// - no other vCPU of the domain polls (the full path wakes the domain's
///   pollers of any port now pending);
/// - no NMI is pending for `me` (the full exit delivers it first).
#[must_use]
pub fn send_stays_here(channels: &EventChannels, vcpus: &[Vcpu], me: u32, port: u32) -> bool {
    channels.local_target(port) == Some(me)
        && vcpus
            .iter()
            .all(|v| v.id == me || !matches!(v.sleep, Sleep::Polling { .. }))
        && vcpus.get(me as usize).is_some_and(|v| !v.nmi.is_pending())
}

/// The bounce frame the full exit would build for an upcall delivered
/// to `vcpu` after a hypercall that interrupted `ctx` (RAX is not in the
/// frame), with `vcpu_info`'s upcall mask `mask` as the call leaves it:
/// `Some(None)` when no upcall can be delivered (no event callback, or
/// upcalls masked: `guest::deliver_pending_event`'s rule), `Some(frame)`
/// for the frame to write if the upcall is pending, and `None` when the
/// full path must run (the frame would not fit guest memory: the full
/// path crashes the domain).
#[inline(always)]
#[must_use]
pub fn upcall_frame(vcpu: &Vcpu, ctx: &Context, mask: u8) -> Option<Option<BounceFrame>> {
    if vcpu.event.address == 0 || mask != 0 {
        return Some(None);
    }
    vcpu::bounce_frame(vcpu.kernel_sp, ctx, None, mask)
        .ok()
        .map(Some)
}

/// What the fast lanes of one CPU read without a lock: the work flag of
/// the vCPU running there, what they need of its record ([`Published`]),
/// and (in statistics builds) the fast entries they served, not yet added
/// to the vCPU's counters.
#[derive(Debug)]
pub struct Lane {
    /// [`WORK`]: something may be pending for the running vCPU, the next
    /// entry takes the full path. Set by anyone who makes work pending
    /// ([`note_work`]); cleared by the running vCPU's full path, before it
    /// looks at what is pending ([`Lane::begin_full`]). [`MODE_SET`] and
    /// [`MODE_KERNEL`]: the mode a lane last switched the vCPU to, which
    /// its record takes at its next full entry (the same clear).
    work: AtomicU8,
    /// Hypervisor address of the running vCPU's `vcpu_info` (0: none
    /// published, the fast path is off).
    vcpu_info: AtomicU64,
    /// Its #PF handler ([`Published::page_fault`]).
    page_fault: AtomicU64,
    /// Its `SYSCALL` callback ([`Published::syscall`]).
    syscall: AtomicU64,
    /// [`Published::kernel_sp`].
    kernel_sp: AtomicU64,
    /// [`Published::kernel_l4`] (with [`KERNEL_L4`]).
    kernel_l4: AtomicU64,
    /// The user GS selector (bits 0-15), [`MASKS_EVENTS`],
    /// [`SYSCALL_MASKS_EVENTS`], [`NMI_MASKED`], [`GS_KERNEL`] and
    /// [`SEGMENTS_KNOWN`], the vCPU's id (bits 32-47) and its domain's
    /// (bits 48-63), [`LOCAL_SENDS`].
    flags: AtomicU64,
    /// [`Segments::fs_base`].
    fs_base: AtomicU64,
    /// [`Segments::gs_base_user`].
    gs_base_user: AtomicU64,
    /// [`Segments::gs_base_kernel`].
    gs_base_kernel: AtomicU64,
    /// Fast hypercalls (`iret` included) for the running vCPU (statistics
    /// builds).
    calls: AtomicU64,
    /// Fast bounces for the running vCPU (statistics builds).
    bounces: AtomicU64,
    /// Upcalls the event lane bounced for it (statistics builds).
    upcalls: AtomicU64,
    /// Sends the event lane declined after looking their port up, as
    /// [`declined_key`]s, by [`declined_slot`] (0: none): a hint that
    /// sends there (to another domain, typically) go to the full path at
    /// once. Kept across switches (the vCPUs that share this CPU in turn
    /// keep their own), never cleared: it only ever makes the lane
    /// decline.
    declined: [AtomicU64; DECLINED_SLOTS],
    /// Their `hv_tsc` (statistics builds).
    tsc: AtomicU64,
}

impl Lane {
    const fn new() -> Lane {
        Lane {
            work: AtomicU8::new(WORK),
            vcpu_info: AtomicU64::new(0),
            page_fault: AtomicU64::new(0),
            syscall: AtomicU64::new(0),
            kernel_sp: AtomicU64::new(0),
            kernel_l4: AtomicU64::new(0),
            flags: AtomicU64::new(0),
            fs_base: AtomicU64::new(0),
            gs_base_user: AtomicU64::new(0),
            gs_base_kernel: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            bounces: AtomicU64::new(0),
            upcalls: AtomicU64::new(0),
            declined: [const { AtomicU64::new(0) }; DECLINED_SLOTS],
            tsc: AtomicU64::new(0),
        }
    }

    /// Where the running vCPU's `vcpu_info` lies if a hypercall may take
    /// the fast path now (no work pending, a place published).
    #[inline(always)]
    #[must_use]
    pub fn ready(&self) -> Option<u64> {
        if self.work.load(Ordering::Acquire) & WORK != 0 {
            return None;
        }
        Some(self.vcpu_info.load(Ordering::Relaxed)).filter(|&va| va != 0)
    }

    /// What the running vCPU published, if a bounce or `iret` may take
    /// its lane now (no work pending, a place published).
    #[inline(always)]
    #[must_use]
    pub fn published(&self) -> Option<Published> {
        let work = self.work.load(Ordering::Acquire);
        let vcpu_info = self.vcpu_info.load(Ordering::Relaxed);
        if work & WORK != 0 || vcpu_info == 0 {
            return None;
        }
        let flags = self.flags.load(Ordering::Relaxed);
        Some(Published {
            vcpu_info,
            page_fault: TrapGate {
                address: self.page_fault.load(Ordering::Relaxed),
                dpl: 0,
                mask_events: flags & MASKS_EVENTS != 0,
            },
            syscall: Callback {
                address: self.syscall.load(Ordering::Relaxed),
                mask_events: flags & SYSCALL_MASKS_EVENTS != 0,
            },
            kernel_sp: self.kernel_sp.load(Ordering::Relaxed),
            kernel_l4: (flags & KERNEL_L4 != 0)
                .then(|| Mfn(self.kernel_l4.load(Ordering::Relaxed))),
            event_callback: flags & EVENT_CALLBACK != 0,
            nmi_masked: flags & NMI_MASKED != 0,
            kernel_gs: if work & MODE_SET != 0 {
                work & MODE_KERNEL != 0
            } else {
                flags & GS_KERNEL != 0
            },
            #[allow(clippy::cast_possible_truncation, reason = "bits 48-63")]
            domain: DomId((flags >> DOMAIN_SHIFT) as u16),
            local_sends: flags & LOCAL_SENDS != 0,
            #[allow(clippy::cast_possible_truncation, reason = "bits 32-47")]
            vcpu: (flags >> VCPU_SHIFT) as u16,
            segments_known: flags & SEGMENTS_KNOWN != 0,
        })
    }

    /// Where the running vCPU's `vcpu_info` lies, its domain and its id,
    /// if the event lane may serve it now (no work pending, a place
    /// published): the part of [`Lane::published`] the event lane reads.
    #[inline(always)]
    #[must_use]
    pub fn running(&self) -> Option<(u64, DomId, u16)> {
        let vcpu_info = self.ready()?;
        let flags = self.flags.load(Ordering::Relaxed);
        #[allow(clippy::cast_possible_truncation, reason = "bits 48-63 and 32-47")]
        Some((
            vcpu_info,
            DomId((flags >> DOMAIN_SHIFT) as u16),
            (flags >> VCPU_SHIFT) as u16,
        ))
    }

    /// The running vCPU's segment state as published (meaningful when
    /// [`Published::segments_known`]).
    #[inline(always)]
    #[must_use]
    pub fn segments(&self) -> Segments {
        Segments {
            fs_base: self.fs_base.load(Ordering::Relaxed),
            #[allow(clippy::cast_possible_truncation, reason = "bits 0-15")]
            user_gs_sel: self.flags.load(Ordering::Relaxed) as u16,
            gs_base_user: self.gs_base_user.load(Ordering::Relaxed),
            gs_base_kernel: self.gs_base_kernel.load(Ordering::Relaxed),
        }
    }

    /// A lane switched the running vCPU to kernel mode (`kernel`) or user
    /// mode, with the segments of that mode loaded: its record's mode
    /// follows at its next full entry. Only this CPU writes these bits;
    /// another may set [`WORK`] meanwhile, hence the atomic updates.
    #[inline(always)]
    pub fn set_mode(&self, kernel: bool) {
        if kernel {
            self.work
                .fetch_or(MODE_SET | MODE_KERNEL, Ordering::Relaxed);
        } else {
            self.work.fetch_and(!MODE_KERNEL, Ordering::Relaxed);
            self.work.fetch_or(MODE_SET, Ordering::Relaxed);
        }
    }

    /// The running vCPU's full path switched its record's mode (after
    /// [`Lane::begin_full`]): what the lanes read follows.
    pub fn record_mode(&self, kernel: bool) {
        let flags = self.flags.load(Ordering::Relaxed);
        let flags = if kernel {
            flags | GS_KERNEL
        } else {
            flags & !GS_KERNEL
        };
        self.flags.store(flags, Ordering::Relaxed);
    }

    /// The running vCPU's full path loaded the kernel root `l4`: if it is
    /// not the one published, the lanes take it afresh.
    pub fn note_root(&self, l4: Mfn) {
        let known = self.flags.load(Ordering::Relaxed) & KERNEL_L4 != 0;
        if !known || self.kernel_l4.load(Ordering::Relaxed) != l4.0 {
            self.note_work();
        }
    }

    /// Marks work pending for the vCPU running on this lane's CPU.
    pub fn note_work(&self) {
        self.work.fetch_or(WORK, Ordering::Release);
    }

    /// The full path of an entry of `vcpu`, the running vCPU, begins: its
    /// record takes the mode a lane switched it to last (its segments are
    /// loaded for that mode), and, if work was flagged, what it is about
    /// to check need not stay flagged and what the lanes read of it is
    /// published afresh (`vcpu_info`: where its `vcpu_info` lies, as a
    /// hypervisor address). Called before the checks and before anything
    /// reads the record, so that work made pending after them (a new
    /// place or trap table included) is flagged again. Costs a load and a
    /// branch while nothing was flagged.
    #[inline(always)]
    pub fn begin_full(
        &self,
        vcpu: &mut Vcpu,
        domain: DomId,
        local_sends: impl FnOnce() -> bool,
        vcpu_info: impl FnOnce(&Vcpu) -> u64,
    ) {
        let work = self.work.load(Ordering::Relaxed);
        if work != 0 {
            self.begin_flagged(work, vcpu, domain, local_sends, vcpu_info);
        }
    }

    /// [`Lane::begin_full`] when something was flagged.
    #[cold]
    #[inline(never)]
    fn begin_flagged(
        &self,
        work: u8,
        vcpu: &mut Vcpu,
        domain: DomId,
        local_sends: impl FnOnce() -> bool,
        vcpu_info: impl FnOnce(&Vcpu) -> u64,
    ) {
        if work & MODE_SET != 0 {
            vcpu.gs_kernel_active = work & MODE_KERNEL != 0;
        }
        if work & WORK == 0 {
            // Only the mode moved: the rest published stands. A WORK set
            // meanwhile by another CPU stays set.
            self.work
                .fetch_and(!(MODE_SET | MODE_KERNEL), Ordering::AcqRel);
            self.record_mode(vcpu.gs_kernel_active);
            return;
        }
        let (published, segments) = Published::of(vcpu, domain, local_sends(), vcpu_info(vcpu));
        self.reopen(&published, &segments);
    }

    /// Publishes `published` and `segments` and clears every flag.
    fn reopen(&self, published: &Published, segments: &Segments) {
        self.work.swap(0, Ordering::AcqRel);
        self.vcpu_info.store(published.vcpu_info, Ordering::Relaxed);
        self.page_fault
            .store(published.page_fault.address, Ordering::Relaxed);
        self.syscall
            .store(published.syscall.address, Ordering::Relaxed);
        self.kernel_sp.store(published.kernel_sp, Ordering::Relaxed);
        self.kernel_l4.store(
            published.kernel_l4.map_or(0, |mfn| mfn.0),
            Ordering::Relaxed,
        );
        let mut flags = (u64::from(published.domain.0) << DOMAIN_SHIFT)
            | (u64::from(published.vcpu) << VCPU_SHIFT);
        for (set, bit) in [
            (published.page_fault.mask_events, MASKS_EVENTS),
            (published.syscall.mask_events, SYSCALL_MASKS_EVENTS),
            (published.nmi_masked, NMI_MASKED),
            (published.kernel_gs, GS_KERNEL),
            (published.kernel_l4.is_some(), KERNEL_L4),
            (published.event_callback, EVENT_CALLBACK),
            (published.local_sends, LOCAL_SENDS),
        ] {
            if set {
                flags |= bit;
            }
        }
        if published.segments_known {
            flags |= SEGMENTS_KNOWN | u64::from(segments.user_gs_sel);
            self.fs_base.store(segments.fs_base, Ordering::Relaxed);
            self.gs_base_user
                .store(segments.gs_base_user, Ordering::Relaxed);
            self.gs_base_kernel
                .store(segments.gs_base_kernel, Ordering::Relaxed);
        }
        self.flags.store(flags, Ordering::Relaxed);
    }

    /// The running vCPU leaves this CPU: no fast path until the next one's
    /// full exit, and its fast calls are added to its counters.
    pub fn disarm(&self, stats: &mut Stats) {
        self.vcpu_info.store(0, Ordering::Relaxed);
        self.work.store(WORK, Ordering::Release);
        self.fold(stats);
    }

    /// Counts one fast hypercall that spent `tsc` ticks (statistics
    /// builds).
    #[inline(always)]
    pub fn count(&self, tsc: u64) {
        if Stats::ENABLED {
            self.calls.fetch_add(1, Ordering::Relaxed);
            self.tsc.fetch_add(tsc, Ordering::Relaxed);
        }
    }

    /// Counts one fast bounce (an exception entry that bounced) that
    /// spent `tsc` ticks (statistics builds).
    #[inline(always)]
    pub fn count_bounce(&self, tsc: u64) {
        if Stats::ENABLED {
            self.bounces.fetch_add(1, Ordering::Relaxed);
            self.tsc.fetch_add(tsc, Ordering::Relaxed);
        }
    }

    /// Whether the event lane declined a send by vCPU `vcpu` of `domain`
    /// on `port` lately.
    #[inline(always)]
    #[must_use]
    pub fn declined_before(&self, domain: DomId, vcpu: u16, port: u32) -> bool {
        let key = declined_key(domain, vcpu, port);
        self.declined[declined_slot(key)].load(Ordering::Relaxed) == key
    }

    /// The event lane declined a send by vCPU `vcpu` of `domain` on
    /// `port` after looking it up.
    #[inline(always)]
    pub fn note_declined(&self, domain: DomId, vcpu: u16, port: u32) {
        let key = declined_key(domain, vcpu, port);
        self.declined[declined_slot(key)].store(key, Ordering::Relaxed);
    }

    /// Counts one upcall bounced on a fast hypercall's way out
    /// (statistics builds).
    #[inline(always)]
    pub fn count_upcall(&self) {
        if Stats::ENABLED {
            self.upcalls.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Moves the fast entries counted so far into the leaving vCPU's
    /// `stats`.
    fn fold(&self, stats: &mut Stats) {
        if Stats::ENABLED {
            add(
                stats,
                self.calls.swap(0, Ordering::Relaxed),
                self.bounces.swap(0, Ordering::Relaxed),
                self.upcalls.swap(0, Ordering::Relaxed),
                self.tsc.swap(0, Ordering::Relaxed),
            );
        }
    }

    /// Adds the fast entries counted so far to `stats`, a copy of the
    /// running vCPU's counters (for `stats_op`); they stay counted here
    /// until the vCPU leaves.
    pub fn add_counts(&self, stats: &mut Stats) {
        if Stats::ENABLED {
            add(
                stats,
                self.calls.load(Ordering::Relaxed),
                self.bounces.load(Ordering::Relaxed),
                self.upcalls.load(Ordering::Relaxed),
                self.tsc.load(Ordering::Relaxed),
            );
        }
    }
}

/// Entries of [`Lane::declined`].
const DECLINED_SLOTS: usize = 4;

/// [`Lane::declined`]'s key of a send by vCPU `vcpu` of `domain` on
/// `port`: the three, plus one (never 0).
#[inline(always)]
fn declined_key(domain: DomId, vcpu: u16, port: u32) -> u64 {
    ((u64::from(domain.0) << 48) | (u64::from(vcpu) << 32) | u64::from(port)).wrapping_add(1)
}

/// Where `key` lies in [`Lane::declined`]: the domain's and the port's
/// low bits, so that the sends of two domains taking turns on a CPU
/// (a ping-pong) usually keep apart.
#[inline(always)]
fn declined_slot(key: u64) -> usize {
    usize::from((key ^ (key >> 48)).to_le_bytes()[0]) % DECLINED_SLOTS
}
/// [`Lane::work`]: work may be pending, the lanes are closed.
pub const WORK: u8 = 1;
/// Where [`Lane::work`] lies in a lane: the entry stubs test [`WORK`]
/// there before they save anything for a lane that is closed.
pub const WORK_OFFSET: usize = core::mem::offset_of!(Lane, work);
/// [`Lane::work`]: a lane switched the vCPU's mode since its last full
/// entry began.
const MODE_SET: u8 = 2;
/// [`Lane::work`]: that mode is kernel mode.
const MODE_KERNEL: u8 = 4;
/// [`Lane::flags`]: the #PF gate masks events.
const MASKS_EVENTS: u64 = 1 << 16;
/// [`Lane::flags`]: the vCPU's NMIs are masked.
const NMI_MASKED: u64 = 1 << 17;
/// [`Lane::flags`]: [`Published::segments_known`].
const SEGMENTS_KNOWN: u64 = 1 << 18;
/// [`Lane::flags`]: the `SYSCALL` callback masks events.
const SYSCALL_MASKS_EVENTS: u64 = 1 << 19;
/// [`Lane::flags`]: the record's kernel GS base is the active one.
const GS_KERNEL: u64 = 1 << 20;
/// [`Lane::flags`]: the vCPU has kernel page tables.
const KERNEL_L4: u64 = 1 << 21;
/// [`Lane::flags`]: the vCPU registered an event callback.
const EVENT_CALLBACK: u64 = 1 << 22;
/// [`Lane::flags`]: [`Published::local_sends`].
const LOCAL_SENDS: u64 = 1 << 23;
/// Where the byte of [`Lane::flags`] holding [`LOCAL_SENDS`] lies in a
/// lane, and the bit in it: the event lane's stub tests it.
pub const LOCAL_SENDS_OFFSET: usize = core::mem::offset_of!(Lane, flags) + 2;
/// See [`LOCAL_SENDS_OFFSET`].
pub const LOCAL_SENDS_BIT: u8 = 1 << 7;
const _: () = assert!(LOCAL_SENDS == (LOCAL_SENDS_BIT as u64) << 16);
/// [`Lane::flags`]: where the vCPU's id starts.
const VCPU_SHIFT: u32 = 32;
/// [`Lane::flags`]: where its domain's id starts.
const DOMAIN_SHIFT: u32 = 48;

/// Adds `calls` fast hypercalls, `bounces` fast bounces and `upcalls`
/// upcalls bounced on fast hypercalls' way out, which spent `tsc` ticks,
/// to `stats` as the full path counts them.
fn add(stats: &mut Stats, calls: u64, bounces: u64, upcalls: u64, tsc: u64) {
    stats.add(Counter::Entries, calls + bounces);
    stats.add(Counter::Hypercalls, calls);
    stats.add(Counter::Exceptions, bounces);
    stats.add(Counter::Bounces, bounces + upcalls);
    stats.add(Counter::HypervisorTsc, tsc);
}

/// Every CPU's lane, by CPU number.
static LANES: [Lane; MAX_CPUS] = [const { Lane::new() }; MAX_CPUS];

/// CPU `cpu`'s lane.
#[inline(always)]
#[must_use]
pub fn lane(cpu: u64) -> Option<&'static Lane> {
    LANES.get(usize::try_from(cpu).ok()?)
}

/// The address of CPU `cpu`'s lane, which its trampoline's data page
/// holds so that an entry finds the lane with one load. CPU numbers stop
/// below [`MAX_CPUS`] (`smp::start_cpus`); a larger one is a bug in the
/// boot code.
#[must_use]
pub fn lane_address(cpu: u64) -> u64 {
    let Some(lane) = lane(cpu) else {
        panic!("CPU number {cpu} is not below {MAX_CPUS}")
    };
    core::ptr::from_ref(lane) as u64
}

/// The one hypercall number [`answer`] may serve: the entry stub sends no
/// other to the fast path.
pub const FAST_HYPERCALL: u64 = Hypercall::XenVersion as u64;

/// Work is now pending for a vCPU that runs on CPU `on_cpu` (if it runs):
/// its next hypercall takes the full path. For whoever changes a vCPU's
/// state other than through that vCPU's own entry. A vCPU that does not
/// run needs nothing: switching it in ends in a full exit.
pub fn note_work(on_cpu: Option<u16>) {
    if let Some(lane) = on_cpu.and_then(|cpu| lane(u64::from(cpu))) {
        lane.note_work();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hypercall::dispatch::dispatch;
    use crate::mm::fake::FakeMachine;
    use proptest::prelude::*;

    /// What a vCPU with its `vcpu_info` at `va` and nothing else set
    /// publishes.
    fn open(lane: &Lane, va: u64) {
        lane.begin_full(&mut Vcpu::new(0), DomId(0), || true, |_| va);
    }

    #[test]
    fn a_lane_opens_after_a_full_entry_publishes_the_place() {
        let lane = Lane::new();
        assert_eq!(lane.ready(), None);
        open(&lane, 0x1000);
        assert_eq!(lane.ready(), Some(0x1000));
        open(&lane, 0x3000);
        assert_eq!(lane.ready(), Some(0x1000), "published only when flagged");
    }

    #[test]
    fn work_noted_during_a_full_path_survives_its_exit() {
        let lane = Lane::new();
        open(&lane, 0x1000);
        // An entry's full path starts; meanwhile another CPU raises work
        // (or this entry moves the vCPU's vcpu_info).
        open(&lane, 0x1000);
        lane.note_work();
        assert_eq!(lane.ready(), None);
        open(&lane, 0x2000);
        assert_eq!(lane.ready(), Some(0x2000), "the new place");
    }

    #[test]
    fn a_vcpu_leaving_closes_the_lane_and_takes_its_counts() {
        let lane = Lane::new();
        open(&lane, 0x1000);
        lane.count(7);
        lane.count(5);
        lane.count_bounce(3);
        let mut stats = Stats::default();
        let mut copy = Stats::default();
        lane.add_counts(&mut copy);
        lane.add_counts(&mut copy);
        let expect = |n| if Stats::ENABLED { n } else { 0 };
        assert_eq!(copy.get(Counter::Hypercalls), expect(4), "read, not taken");
        lane.disarm(&mut stats);
        assert_eq!(lane.ready(), None);
        assert_eq!(stats.get(Counter::Hypercalls), expect(2));
        assert_eq!(stats.get(Counter::Exceptions), expect(1));
        assert_eq!(stats.get(Counter::Bounces), expect(1));
        assert_eq!(stats.get(Counter::Entries), expect(3));
        assert_eq!(stats.get(Counter::HypervisorTsc), expect(15));
        lane.disarm(&mut stats);
        assert_eq!(stats.get(Counter::Hypercalls), expect(2), "taken once");
        open(&lane, 0x4000);
        assert_eq!(lane.ready(), Some(0x4000), "the next vCPU's place");
    }

    #[test]
    fn note_work_reaches_only_a_running_vcpu() {
        let last = MAX_CPUS as u64 - 1;
        let lane = lane(last).unwrap();
        open(lane, 0x2000);
        note_work(None);
        assert_eq!(lane.ready(), Some(0x2000));
        note_work(Some(u16::try_from(last).unwrap()));
        assert_eq!(lane.ready(), None);
        note_work(Some(u16::MAX));
        assert!(super::lane(u64::MAX).is_none());
        assert_eq!(lane_address(last), core::ptr::from_ref(lane) as u64);
    }

    const HANDLER: u64 = 0xffff_ffff_8000_1000;
    const CALLBACK: u64 = 0xffff_ffff_8000_2000;
    const KERNEL_STACK: u64 = 0xffff_ffff_8010_0000;

    /// A vCPU with a #PF handler, a syscall callback, a kernel stack and
    /// an event callback, in kernel mode, its segments known.
    fn ready_vcpu() -> Published {
        Published {
            vcpu_info: 0x1000,
            page_fault: TrapGate {
                address: HANDLER,
                dpl: 0,
                mask_events: false,
            },
            syscall: Callback {
                address: CALLBACK,
                mask_events: false,
            },
            kernel_sp: KERNEL_STACK,
            kernel_l4: Some(Mfn(0x42)),
            event_callback: true,
            nmi_masked: false,
            kernel_gs: true,
            domain: DomId(3),
            local_sends: true,
            vcpu: 1,
            segments_known: true,
        }
    }

    fn kernel_context() -> Context {
        Context {
            rip: 0xffff_ffff_8000_5000,
            cs: u64::from(RING1_KERNEL_CS),
            rflags: 0x202,
            rsp: 0xffff_ffff_8020_0000,
            ss: u64::from(RING1_KERNEL_SS),
            rcx: 1,
            r11: 2,
            rax: 3,
        }
    }

    fn user_context(rip: u64) -> Context {
        Context {
            rip,
            cs: u64::from(dom0_abi::segment::FLAT_RING3_CS64),
            rflags: 0x202,
            rsp: 0x7fff_0000,
            ss: u64::from(dom0_abi::segment::FLAT_RING3_DS),
            rcx: rip,
            r11: 0x202,
            rax: 3,
        }
    }

    #[test]
    fn a_kernel_page_fault_takes_the_lane_only_when_the_full_path_would_just_bounce_it() {
        let p = ready_vcpu();
        let ctx = kernel_context();
        let not_present = 0b010;
        let bounce = page_fault_bounce(&p, &ctx, not_present, 0x1000, 0, 0);
        assert_eq!(
            bounce,
            vcpu::bounce_frame(0, &ctx, Some(not_present), 0).ok(),
            "the full path's frame"
        );
        assert!(bounce.is_some());
        let user = Context {
            cs: u64::from(dom0_abi::segment::FLAT_RING3_CS64),
            ..ctx
        };
        assert_eq!(
            page_fault_bounce(&p, &user, 0b110, 0x1000, 0, 0),
            None,
            "from user mode"
        );
        assert_eq!(
            page_fault_bounce(&p, &ctx, 0b011, 0x1000, 0, 0),
            None,
            "a protection fault"
        );
        let ldt = crate::layout::trampoline::LDT;
        assert_eq!(
            page_fault_bounce(&p, &ctx, 0, ldt, 0, 0),
            None,
            "the LDT window"
        );
        let no_handler = Published {
            page_fault: TrapGate::default(),
            ..p
        };
        assert_eq!(page_fault_bounce(&no_handler, &ctx, 0, 0x1000, 0, 0), None);
        assert_eq!(
            page_fault_bounce(&p, &ctx, 0, 0x1000, 1, 0),
            None,
            "an upcall due"
        );
        assert!(
            page_fault_bounce(&p, &ctx, 0, 0x1000, 1, 1).is_some(),
            "masked"
        );
        let masking = Published {
            page_fault: TrapGate {
                mask_events: true,
                ..p.page_fault
            },
            ..p
        };
        assert!(
            page_fault_bounce(&masking, &ctx, 0, 0x1000, 1, 0).is_some(),
            "the handler's gate masks it"
        );
        let no_callback = Published {
            event_callback: false,
            ..p
        };
        assert!(page_fault_bounce(&no_callback, &ctx, 0, 0x1000, 1, 0).is_some());
        let bad_stack = Context { rsp: 0x20, ..ctx };
        assert_eq!(page_fault_bounce(&p, &bad_stack, 0, 0x1000, 0, 0), None);
    }

    #[test]
    fn a_user_syscall_takes_the_lane_unless_it_may_be_the_kernels_hypercall() {
        let p = ready_vcpu();
        let low = user_context(0x40_1002);
        let bounce = syscall_bounce(&p, &low, 0, 0, |_| {
            unreachable!("no walk below the upper half")
        });
        assert_eq!(bounce, vcpu::bounce_frame(KERNEL_STACK, &low, None, 0).ok());
        assert!(bounce.is_some());
        let high = user_context(0xffff_ffff_8040_1002);
        let mut walked = 0;
        assert_eq!(
            syscall_bounce(&p, &high, 0, 0, |at| {
                walked = at;
                true
            }),
            None,
            "a supervisor page: the kernel's hypercall"
        );
        assert_eq!(walked, 0xffff_ffff_8040_1000);
        assert!(
            syscall_bounce(&p, &high, 0, 0, |_| false).is_some(),
            "a user page"
        );
        let user_gs = Published {
            kernel_gs: false,
            ..p
        };
        assert!(
            syscall_bounce(&user_gs, &high, 0, 0, |_| unreachable!(
                "user GS: a user call"
            ))
            .is_some()
        );
        let unknown = Published {
            segments_known: false,
            ..user_gs
        };
        assert_eq!(
            syscall_bounce(&unknown, &low, 0, 0, |_| false),
            None,
            "bases to read"
        );
        let no_stack = Published { kernel_sp: 0, ..p };
        assert_eq!(syscall_bounce(&no_stack, &low, 0, 0, |_| false), None);
        let no_callback = Published {
            syscall: Callback::default(),
            ..p
        };
        assert_eq!(
            syscall_bounce(&no_callback, &low, 0, 0, |_| false),
            None,
            "#UD"
        );
        assert_eq!(
            syscall_bounce(&p, &low, 1, 0, |_| false),
            None,
            "an upcall due"
        );
    }

    fn iret_frame(cs: u16, ss: u16, rip: u64, rflags: u64) -> IretContext {
        IretContext {
            rax: 1,
            r11: 2,
            rcx: 3,
            flags: 0,
            rip,
            cs: u64::from(cs),
            rflags,
            rsp: 0x7fff_0000,
            ss: u64::from(ss),
        }
    }

    #[test]
    fn an_iret_takes_the_lane_on_a_plain_frame_with_nothing_to_undo() {
        use dom0_abi::segment::{FLAT_RING3_CS64, FLAT_RING3_DS};
        let p = ready_vcpu();
        let kernel = iret_frame(
            RING1_KERNEL_CS & !3,
            RING1_KERNEL_SS,
            0xffff_ffff_8000_5000,
            0x202,
        );
        assert_eq!(iret_target(&p, &kernel, || 0), Some(vcpu::iret(&kernel)));
        let user = iret_frame(FLAT_RING3_CS64, FLAT_RING3_DS, 0x40_1000, 0x202);
        assert_eq!(iret_target(&p, &user, || 0), Some(vcpu::iret(&user)));
        let unknown = Published {
            segments_known: false,
            ..p
        };
        assert_eq!(iret_target(&unknown, &user, || 0), None, "bases to read");
        assert!(iret_target(&unknown, &kernel, || 0).is_some());
        let compat = iret_frame(FLAT_RING3_CS32, FLAT_RING3_DS, 0x40_1000, 0x202);
        assert_eq!(
            iret_target(&p, &compat, || 0),
            None,
            "a 32-bit CS is checked"
        );
        let wild = iret_frame(FLAT_RING3_CS64, FLAT_RING3_DS, 0x8000_0000_0000, 0x202);
        assert_eq!(iret_target(&p, &wild, || 0), None, "non-canonical RIP");
        let nmi = Published {
            nmi_masked: true,
            ..p
        };
        assert_eq!(iret_target(&nmi, &kernel, || 0), None, "NMIs to unmask");
        assert_eq!(
            iret_target(&p, &kernel, || 1),
            None,
            "an upcall due once unmasked"
        );
        let masked = iret_frame(FLAT_RING3_CS64, FLAT_RING3_DS, 0x40_1000, 0x2);
        assert!(iret_target(&p, &masked, || 1).is_some(), "it stays masked");
    }

    #[test]
    fn the_lanes_mode_reaches_the_record_at_the_next_full_entry() {
        let lane = Lane::new();
        let mut vcpu = Vcpu::new(0);
        vcpu.gs_kernel_active = true;
        lane.begin_full(&mut vcpu, DomId(3), || false, |_| 0x1000);
        assert!(lane.published().unwrap().kernel_gs);
        lane.set_mode(false);
        assert!(!lane.published().unwrap().kernel_gs, "the lane's mode wins");
        lane.set_mode(true);
        lane.set_mode(false);
        lane.begin_full(
            &mut vcpu,
            DomId(3),
            || false,
            |_| unreachable!("only the mode moved"),
        );
        assert!(!vcpu.gs_kernel_active, "the last switch");
        assert!(!lane.published().unwrap().kernel_gs);
        lane.begin_full(
            &mut vcpu,
            DomId(3),
            || false,
            |_| unreachable!("nothing flagged"),
        );
        lane.record_mode(true);
        vcpu.gs_kernel_active = true;
        assert!(
            lane.published().unwrap().kernel_gs,
            "the full path's switch"
        );
        lane.set_mode(false);
        lane.note_work();
        assert_eq!(lane.published(), None);
        lane.begin_full(&mut vcpu, DomId(3), || false, |_| 0x2000);
        assert!(!vcpu.gs_kernel_active);
        let published = lane.published().unwrap();
        assert!(!published.kernel_gs, "published from the record");
        assert_eq!(published.vcpu_info, 0x2000);
        assert_eq!((published.domain, published.vcpu), (DomId(3), 0));
        assert!(!published.local_sends);
    }

    #[test]
    fn a_send_takes_the_event_lane_only_when_it_raises_the_sender_alone() {
        use crate::evtchn::EventChannels;
        use crate::timer::PollPorts;
        let me = DomId(3);
        let mut channels = EventChannels::new(me, 2);
        let mine = channels.bind_ipi(0).unwrap();
        let theirs = channels.bind_ipi(1).unwrap();
        let unbound = channels.alloc_unbound(me, DomId(7)).unwrap();
        let mut vcpus = [Vcpu::new(0), Vcpu::new(1)];
        assert!(send_stays_here(&channels, &vcpus, 0, mine));
        assert!(!send_stays_here(&channels, &vcpus, 0, theirs), "a kick");
        assert!(send_stays_here(&channels, &vcpus, 1, theirs));
        assert!(!send_stays_here(&channels, &vcpus, 0, unbound), "dropped");
        assert!(!send_stays_here(&channels, &vcpus, 0, 4000), "EINVAL");
        vcpus[1].sleep = Sleep::Polling {
            ports: PollPorts::One(unbound),
            deadline: None,
        };
        assert!(
            !send_stays_here(&channels, &vcpus, 0, mine),
            "a poller to wake"
        );
        vcpus[1].sleep = Sleep::Blocked;
        assert!(send_stays_here(&channels, &vcpus, 0, mine));
        vcpus[0].nmi.raise();
        assert!(!send_stays_here(&channels, &vcpus, 0, mine), "an NMI first");
        assert!(!send_stays_here(&channels, &vcpus, 2, mine), "no such vCPU");
    }

    #[test]
    fn the_upcall_after_a_fast_send_is_the_full_exits() {
        let mut vcpu = Vcpu::new(0);
        let ctx = kernel_context();
        assert_eq!(upcall_frame(&vcpu, &ctx, 0), Some(None), "no callback");
        vcpu.event = Callback {
            address: CALLBACK,
            mask_events: false,
        };
        assert_eq!(upcall_frame(&vcpu, &ctx, 1), Some(None), "masked");
        let frame = upcall_frame(&vcpu, &ctx, 0);
        assert_eq!(frame, Some(vcpu::bounce_frame(0, &ctx, None, 0).ok()));
        assert!(frame.flatten().is_some());
        let bad_stack = Context { rsp: 0x20, ..ctx };
        assert_eq!(
            upcall_frame(&vcpu, &bad_stack, 0),
            None,
            "the full path crashes"
        );
    }

    #[test]
    fn a_declined_send_is_remembered_per_vcpu_and_port() {
        let lane = Lane::new();
        open(&lane, 0x1000);
        assert_eq!(lane.running(), Some((0x1000, DomId(0), 0)));
        let (a, b) = (DomId(3), DomId(4));
        assert!(!lane.declined_before(a, 1, 5));
        lane.note_declined(a, 1, 5);
        lane.note_declined(b, 1, 5);
        assert!(lane.declined_before(a, 1, 5) && lane.declined_before(b, 1, 5));
        assert!(!lane.declined_before(a, 1, 6));
        assert!(!lane.declined_before(a, 0, 5), "another vCPU");
        lane.note_declined(a, 1, 9); // 5 + DECLINED_SLOTS: the same slot
        assert!(!lane.declined_before(a, 1, 5), "replaced");
        lane.note_work();
        assert_eq!(lane.running(), None);
    }

    #[test]
    fn only_unmasked_pending_upcalls_stop_the_fast_path() {
        assert!(events_allow(0, 0));
        assert!(events_allow(0, 1));
        assert!(events_allow(1, 1));
        assert!(!events_allow(1, 0));
    }

    #[test]
    fn serves_xen_version_and_pagesize_only() {
        assert_eq!(
            answer(Hypercall::XenVersion as u64, 0, 0),
            Some(0x0004_0011)
        );
        assert_eq!(
            answer(Hypercall::XenVersion as u64, 0, 0x1234),
            Some(0x0004_0011)
        );
        assert_eq!(answer(Hypercall::XenVersion as u64, 7, 0), Some(4096));
        assert_eq!(answer(Hypercall::XenVersion as u64, 7, 8), None, "EINVAL");
        assert_eq!(answer(Hypercall::XenVersion as u64, 1, 0), None);
        assert_eq!(answer(Hypercall::Multicall as u64, 0, 0), None);
    }

    proptest! {
        /// The fast entry's frame test accepts exactly the ring-1 frames
        /// the full exit's `is_plain` accepts.
        #[test]
        fn kernel_frames_are_plain_as_the_exit_sees_them(
            cs in prop_oneof![Just(u64::from(RING1_KERNEL_CS)), any::<u16>().prop_map(u64::from), any::<u64>()],
            ss in prop_oneof![Just(u64::from(RING1_KERNEL_SS)), any::<u16>().prop_map(u64::from), any::<u64>()],
            rip in prop_oneof![0u64..0x0001_0000_0000_0000, any::<u64>(), Just(0x0000_8000_0000_0000u64), Just(0xffff_8000_0000_0000u64)],
            rsp in prop_oneof![0u64..0x0001_0000_0000_0000, any::<u64>(), Just(0x0000_7fff_ffff_fff8u64), Just(0xffff_7fff_ffff_fff8u64)],
        ) {
            let frame = crate::resume::Frame { rip, cs, rsp, ss };
            let ring1 = cs & 3 == 1;
            prop_assert_eq!(
                kernel_frame_is_plain(cs, ss, rip, rsp),
                ring1 && crate::resume::is_plain(&frame)
            );
        }

        /// The fast answer is the full path's, for any call it serves.
        #[test]
        fn fast_answers_match_the_dispatcher(
            number in prop_oneof![Just(Hypercall::XenVersion as u64), 0u64..64, any::<u64>()],
            arg0 in prop_oneof![0u64..16, any::<u64>()],
            arg1 in prop_oneof![Just(0u64), any::<u64>()],
        ) {
            if let Some(value) = answer(number, arg0, arg1) {
                let mut env = FakeMachine::new(16);
                let full = dispatch(&mut env, number, [arg0, arg1, 0, 0, 0]);
                prop_assert_eq!(full, value.cast_signed());
            }
        }
    }
}
