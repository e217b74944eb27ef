//! `vcpu_op(cmd, vcpuid, arg)`: giving a vCPU its first context, bringing
//! it up and down, reading where its time went, and sending it an NMI.
//!
//! Xen 4.17's answers: a `vcpuid` the domain has no vCPU for is `ENOENT`
//! whatever the command; an unknown command is `ENOSYS`. The timers
//! follow `crate::timer`: periodic ones on any vCPU of the domain,
//! singleshot ones on the caller's own only (`EINVAL`).
//! The time area and `get_physid` are not implemented and answer
//! `ENOSYS` (see `docs/abi-differences.md`).
#![forbid(unsafe_code)]

use dom0_abi::Errno;
use dom0_abi::cpu::{TrapInfo, VcpuGuestContext, VgcfFlags};
use dom0_abi::event_channel::Virq;
use dom0_abi::sched::ShutdownReason;
use dom0_abi::segment::{
    FIRST_RESERVED_GDT_ENTRY, FLAT_RING3_CS32, FLAT_RING3_CS64, FLAT_RING3_DS, RING1_KERNEL_CS,
    RING1_KERNEL_SS,
};
use dom0_abi::types::{DomId, Mfn};
use dom0_abi::vcpu::{
    RUNSTATE_OFFLINE, RUNSTATE_RUNNABLE, VcpuOpCmd, VcpuRegisterVcpuInfo, VcpuRunstateInfo,
    VcpuSetPeriodicTimer, VcpuSetSingleshotTimer,
};
use dom0_abi::wire::Wire;

use super::desc::{MAX_GDT_FRAMES, release, take_gdt_frames_of};
use super::domctl::{ControlEnv, get_own_writable};
use super::mmu::MmuEnv;
use super::{Env, read_struct, write_struct};
use crate::layout::{guest_range_ok, is_canonical};
use crate::mm::effects::Effects;
use crate::mm::machine::VcpuMm;
use crate::mm::types::Mmu;
use crate::regs::GuestRegs;
use crate::timer::{MAX_PERIOD_NS, MIN_PERIOD_NS};
use crate::vcpu::{Callback, DataSelectors, FpuArea, Pending, Power, TrapGate, Vcpu, debug};

/// Most LDT entries (`ldt_ents`).
const MAX_LDT_ENTRIES: u64 = 8192;

/// `vcpu_op(cmd, vcpuid, arg)`. `cmd` is a C `int` and `vcpuid` an
/// `unsigned int`: only their low 32 bits count.
pub fn vcpu_op(
    env: &mut impl ControlEnv,
    fx: &mut Effects,
    cmd: u64,
    vcpuid: u64,
    arg: u64,
) -> Result<u64, Errno> {
    let id = u32::try_from(vcpuid & 0xffff_ffff).map_err(|_| Errno::ENOENT)?;
    if env.vcpu_by_id(id).is_none() {
        return Err(Errno::ENOENT);
    }
    match VcpuOpCmd::from_number(cmd & 0xffff_ffff) {
        Some(VcpuOpCmd::Initialise) => initialise(env, fx, id, arg),
        Some(VcpuOpCmd::Up) => up(env, id),
        Some(VcpuOpCmd::Down) => down(env, id),
        Some(VcpuOpCmd::IsUp) => Ok(u64::from(
            env.vcpu_by_id(id).is_some_and(|v| v.power == Power::Up),
        )),
        Some(VcpuOpCmd::GetRunstateInfo) => {
            let now = env.now_ns();
            let info = env.vcpu_by_id(id).ok_or(Errno::ENOENT)?.runstate.info(now);
            write_struct(env, arg, &info)?;
            Ok(0)
        }
        Some(VcpuOpCmd::RegisterRunstateMemoryArea) => register_runstate_area(env, id, arg),
        Some(VcpuOpCmd::RegisterVcpuInfo) => register_vcpu_info(env, fx, id, arg),
        Some(VcpuOpCmd::SetPeriodicTimer) => {
            let t: VcpuSetPeriodicTimer = read_struct(env, arg)?;
            if !(MIN_PERIOD_NS..=MAX_PERIOD_NS).contains(&t.period_ns) {
                return Err(Errno::EINVAL);
            }
            set_periodic(env, id, t.period_ns)
        }
        Some(VcpuOpCmd::StopPeriodicTimer) => set_periodic(env, id, 0),
        Some(VcpuOpCmd::SetSingleshotTimer) => {
            own_vcpu(env, id)?;
            let t: VcpuSetSingleshotTimer = read_struct(env, arg)?;
            env.vcpu().timers.set_singleshot(t.timeout_abs_ns);
            env.timers_changed();
            Ok(0)
        }
        Some(VcpuOpCmd::StopSingleshotTimer) => {
            own_vcpu(env, id)?;
            env.vcpu().timers.singleshot = None;
            env.timers_changed();
            Ok(0)
        }
        Some(VcpuOpCmd::SendNmi) => send_nmi(env, id, arg),
        _ => Err(Errno::ENOSYS),
    }
}

/// `VCPUOP_register_runstate_memory_area`: vCPU `id` (any of the domain)
/// publishes its runstate at the guest address read from `arg` (0: no
/// longer), written at once (through the caller's page tables, as Xen
/// does) and then at every switch in and out. `EFAULT`: `arg` unreadable,
/// or the area reaches into the hypervisor's range. A fault writing the
/// area is ignored.
fn register_runstate_area(env: &mut impl Env, id: u32, arg: u64) -> Result<u64, Errno> {
    let area: u64 = read_struct(env, arg)?;
    if !guest_range_ok(area, VcpuRunstateInfo::SIZE as u64) {
        return Err(Errno::EFAULT);
    }
    let now = env.now_ns();
    let caller = env.vcpu().id;
    let vcpu = env.vcpu_by_id(id).ok_or(Errno::ENOENT)?;
    vcpu.runstate_area = area;
    let record = if id == caller {
        vcpu.runstate.area_record()
    } else {
        vcpu.runstate.info(now)
    };
    if area != 0 {
        // A fault is the guest's: the area stays registered.
        let _ = write_struct(env, area, &record);
    }
    Ok(0)
}

/// `VCPUOP_register_vcpu_info`: vCPU `id` keeps its `vcpu_info` at byte
/// `offset` of the domain's frame `mfn` from now on, as Xen 4.17 checks
/// it: `ENXIO` if it would not fit the page or is not 8-aligned; `EINVAL`
/// if the vCPU already moved it, if it is another vCPU that is up, or if
/// the frame is not the domain's or cannot be writable (a page table, a
/// descriptor page); `EFAULT` for an unreadable argument. The frame is
/// held writable until the domain goes. The guest finds its old contents
/// there, with every selector bit and the upcall pending, so that it
/// rescans its ports.
fn register_vcpu_info(
    env: &mut impl ControlEnv,
    fx: &mut Effects,
    id: u32,
    arg: u64,
) -> Result<u64, Errno> {
    const PAGE: u64 = 4096;
    const SIZE: u64 = 64;
    let info: VcpuRegisterVcpuInfo = read_struct(env, arg)?;
    let offset = u64::from(info.offset);
    if offset > PAGE - SIZE || offset % 8 != 0 {
        return Err(Errno::ENXIO);
    }
    let caller = env.vcpu().id;
    let vcpu = env.vcpu_by_id(id).ok_or(Errno::ENOENT)?;
    if vcpu.vcpu_info_frame.is_some() || (id != caller && vcpu.power == Power::Up) {
        return Err(Errno::EINVAL);
    }
    let mfn = Mfn(info.mfn);
    let me = env.domain().id;
    get_own_writable(env, fx, me, mfn).map_err(|_| Errno::EINVAL)?;
    if let Some(vcpu) = env.vcpu_by_id(id) {
        vcpu.vcpu_info_frame = Some(mfn);
    }
    env.move_vcpu_info(id, mfn.maddr() + offset);
    Ok(0)
}

/// Gives back the frames `register_vcpu_info` holds for `vcpus`, of a
/// domain that goes.
pub fn release_vcpu_info(env: &mut impl MmuEnv, fx: &mut Effects, vcpus: &mut [Vcpu]) {
    for vcpu in vcpus {
        if let Some(mfn) = vcpu.vcpu_info_frame.take() {
            Mmu::new(env, fx).put_page_and_type(mfn);
        }
    }
}

/// `EINVAL` unless `id` is the caller (the singleshot timer calls).
fn own_vcpu(env: &mut impl Env, id: u32) -> Result<(), Errno> {
    if env.vcpu().id == id {
        Ok(())
    } else {
        Err(Errno::EINVAL)
    }
}

/// Sets vCPU `id`'s period (0: stops its periodic timer), raising its
/// `VIRQ_TIMER` at once when a period has passed since the last event.
fn set_periodic(env: &mut impl Env, id: u32, period: u64) -> Result<u64, Errno> {
    let now = env.now_ns();
    let vcpu = env.vcpu_by_id(id).ok_or(Errno::ENOENT)?;
    if vcpu.timers.set_periodic(period, now) {
        let (channels, bits) = env.event_channels();
        channels.send_virq(bits, Virq::Timer, id);
    }
    env.timers_changed();
    Ok(0)
}

/// `VCPUOP_send_nmi`: an NMI is pending for vCPU `id` (any vCPU of the
/// domain, the caller, down or never initialised ones included); it takes
/// it on its next way back to the guest. A new NMI kicks the target as
/// Xen's `vcpu_kick` does: asleep in `SCHEDOP_block` or `SCHEDOP_poll`, it
/// wakes (the call returns 0) before the caller returns. `EINVAL` if `arg`
/// is not NULL (nothing is sent).
fn send_nmi(env: &mut impl Env, id: u32, arg: u64) -> Result<u64, Errno> {
    if arg != 0 {
        return Err(Errno::EINVAL);
    }
    let vcpu = env.vcpu_by_id(id).ok_or(Errno::ENOENT)?;
    let raised = vcpu.nmi.raise();
    if raised {
        crate::fastpath::note_work(vcpu.on_cpu);
    }
    if raised && vcpu.sleep.is_sleeping() {
        vcpu.kicked = true;
        // The scheduler looks at sleeping vCPUs, and wakes a kicked one,
        // before the exit.
        env.timers_changed();
    }
    Ok(0)
}

/// `VCPUOP_up`: `EINVAL` if the vCPU has no context yet; a vCPU already
/// up stays up.
fn up(env: &mut impl Env, id: u32) -> Result<u64, Errno> {
    let now = env.now_ns();
    let vcpu = env.vcpu_by_id(id).ok_or(Errno::ENOENT)?;
    if !vcpu.initialised {
        return Err(Errno::EINVAL);
    }
    if vcpu.power == Power::Down {
        vcpu.power = Power::Up;
        vcpu.runstate.enter(RUNSTATE_RUNNABLE, now);
        // Another vCPU waits to run: the running one's slice starts.
        env.timers_changed();
    }
    Ok(0)
}

/// `VCPUOP_down`: the vCPU stops (its context is kept for a later
/// `VCPUOP_up`); when no other vCPU of the domain is up, the domain is
/// powered off instead, as on Xen.
fn down(env: &mut impl Env, id: u32) -> Result<u64, Errno> {
    let count = env.domain().mm.max_vcpus;
    let others_up = (0..count)
        .filter(|&other| other != id)
        .any(|other| env.vcpu_by_id(other).is_some_and(|v| v.power == Power::Up));
    if !others_up {
        env.domain().shutdown(ShutdownReason::Poweroff as u8);
        return Ok(0);
    }
    let now = env.now_ns();
    let caller = env.vcpu().id;
    let vcpu = env.vcpu_by_id(id).ok_or(Errno::ENOENT)?;
    if vcpu.power == Power::Up {
        vcpu.power = Power::Down;
        vcpu.runstate.enter(RUNSTATE_OFFLINE, now);
        if id == caller {
            env.reschedule();
        }
    }
    Ok(0)
}

/// Xen's checks of a 64-bit PV `vcpu_guest_context` that need no frame:
/// every address canonical (`EINVAL`), the LDT page-aligned, in guest
/// space and at most 8192 entries, the GDT at most 7168 entries, the debug
/// registers as `set_debugreg` allows them.
pub(super) fn check_context(c: &VcpuGuestContext) -> Result<(), Errno> {
    let addresses = [
        c.user_regs.rip,
        c.user_regs.rsp,
        c.kernel_sp,
        c.fs_base,
        c.gs_base_kernel,
        c.gs_base_user,
        c.event_callback_eip,
        c.syscall_callback_eip,
        c.failsafe_callback_eip,
    ];
    if !addresses.iter().all(|&a| is_canonical(a))
        || !c.trap_ctxt.iter().all(|t| is_canonical(t.address))
    {
        return Err(Errno::EINVAL);
    }
    let ldt_bytes = c.ldt_ents.saturating_mul(8);
    if c.ldt_ents > MAX_LDT_ENTRIES
        || !c.ldt_base.is_multiple_of(4096)
        || (c.ldt_ents != 0 && !guest_range_ok(c.ldt_base, ldt_bytes))
    {
        return Err(Errno::EINVAL);
    }
    if c.gdt_ents > FIRST_RESERVED_GDT_ENTRY as u64 {
        return Err(Errno::EINVAL);
    }
    for index in [0, 1, 2, 3, 6, 7] {
        debug::check(index, c.debugreg[index]).map_err(|_| Errno::EINVAL)?;
    }
    Ok(())
}

/// The registers a context starts with: kernel mode (`VGCF_in_kernel`)
/// runs on the ring-1 kernel selectors whatever CS/SS the guest wrote
/// (Xen's `FLAT_KERNEL_CS` 0xe033 included), user mode on Xen's user
/// selectors.
fn start_registers(c: &VcpuGuestContext, in_kernel: bool) -> GuestRegs {
    let r = &c.user_regs;
    let (cs, ss) = if in_kernel {
        (RING1_KERNEL_CS, RING1_KERNEL_SS)
    } else if r.cs == FLAT_RING3_CS32 {
        (FLAT_RING3_CS32, FLAT_RING3_DS)
    } else {
        (FLAT_RING3_CS64, FLAT_RING3_DS)
    };
    GuestRegs {
        r15: r.r15,
        r14: r.r14,
        r13: r.r13,
        r12: r.r12,
        r11: r.r11,
        r10: r.r10,
        r9: r.r9,
        r8: r.r8,
        rbp: r.rbp,
        rdi: r.rdi,
        rsi: r.rsi,
        rdx: r.rdx,
        rbx: r.rbx,
        rax: r.rax,
        rcx: r.rcx,
        vector: 0,
        error_code: 0,
        rip: r.rip,
        cs: u64::from(cs),
        rflags: r.rflags,
        rsp: r.rsp,
        ss: u64::from(ss),
    }
}

/// `VCPUOP_initialise`: gives a vCPU that never had one its context.
/// `EFAULT` if the context cannot be read, `EEXIST` if the vCPU already
/// has a context, `EINVAL` for a context [`check_context`] refuses or GDT
/// frames that cannot hold descriptors, and the L4's own error when
/// `ctrlreg[3]` cannot be this vCPU's page-table base. Nothing changes on
/// error.
fn initialise(env: &mut impl MmuEnv, fx: &mut Effects, id: u32, arg: u64) -> Result<u64, Errno> {
    let c: VcpuGuestContext = read_struct(env, arg)?;
    if env.vcpu_by_id(id).is_none_or(|v| v.initialised) {
        return Err(Errno::EEXIST);
    }
    check_context(&c)?;
    let dom = env.domain().id;
    let roots = take_roots(env, fx, dom, &c)?;
    let vcpu = env.vcpu_by_id(id).ok_or(Errno::ENOENT)?;
    load_context(vcpu, &c, &roots);
    Ok(0)
}

/// The `vcpu_guest_context` Xen's `getvcpucontext` reports for `vcpu`
/// (`vm_assist`: the domain's, reported for vCPU 0): registers, with the
/// ring-1 kernel selectors shown as Xen's flat kernel ones (0xe033,
/// 0xe02b), `VGCF_online` if up and `VGCF_in_kernel` in kernel mode, the
/// trap table, LDT, GDT frames, kernel stack, L4s (`ctrlreg[3]` and
/// `ctrlreg[1]` as `mfn << 12`), debug registers, callbacks and segment
/// bases. The FPU image is not reported (`VGCF_i387_valid` clear).
pub(super) fn saved_context(vcpu: &Vcpu, vm_assist: u64) -> VcpuGuestContext {
    let r = &vcpu.context;
    let in_kernel = r.cs == u64::from(RING1_KERNEL_CS);
    let mut c = VcpuGuestContext::zeroed();
    let mut flags = VgcfFlags::empty();
    flags.set(VgcfFlags::ONLINE, vcpu.is_up());
    flags.set(VgcfFlags::IN_KERNEL, in_kernel);
    flags.set(
        VgcfFlags::FAILSAFE_DISABLES_EVENTS,
        vcpu.failsafe.mask_events,
    );
    flags.set(VgcfFlags::SYSCALL_DISABLES_EVENTS, vcpu.syscall.mask_events);
    c.flags = flags.bits();
    let u = &mut c.user_regs;
    (u.r15, u.r14, u.r13, u.r12, u.rbp, u.rbx) = (r.r15, r.r14, r.r13, r.r12, r.rbp, r.rbx);
    (u.r11, u.r10, u.r9, u.r8) = (r.r11, r.r10, r.r9, r.r8);
    (u.rax, u.rcx, u.rdx, u.rsi, u.rdi) = (r.rax, r.rcx, r.rdx, r.rsi, r.rdi);
    (u.rip, u.rflags, u.rsp) = (r.rip, r.rflags, r.rsp);
    let (cs, ss) = if in_kernel {
        (FLAT_RING3_CS64, FLAT_RING3_DS)
    } else {
        (
            u16::try_from(r.cs).unwrap_or(0),
            u16::try_from(r.ss).unwrap_or(0),
        )
    };
    (u.cs, u.ss) = (cs, ss);
    (u.ds, u.es, u.fs) = (vcpu.selectors.ds, vcpu.selectors.es, vcpu.selectors.fs);
    // Gates with a handler, each under its own vector and Xen's kernel CS;
    // the others all zero.
    for (i, (info, gate)) in c.trap_ctxt.iter_mut().zip(&vcpu.traps).enumerate() {
        if gate.address != 0 {
            *info = TrapInfo {
                vector: u8::try_from(i).unwrap_or(0),
                flags: gate.dpl
                    | if gate.mask_events {
                        TrapInfo::FLAG_IF
                    } else {
                        0
                    },
                cs: FLAT_RING3_CS64,
                address: gate.address,
            };
        }
    }
    c.ldt_base = vcpu.mm.ldt_base;
    c.ldt_ents = u64::from(vcpu.mm.ldt_ents);
    c.gdt_frames[..vcpu.gdt_count].copy_from_slice(&vcpu.gdt_frames[..vcpu.gdt_count]);
    c.gdt_ents = vcpu.gdt_entries;
    c.kernel_ss = vcpu.kernel_ss;
    c.kernel_sp = vcpu.kernel_sp;
    c.ctrlreg[3] = vcpu.mm.kernel_l4.map_or(0, Mfn::maddr);
    c.ctrlreg[1] = vcpu.mm.user_l4.map_or(0, Mfn::maddr);
    c.debugreg = vcpu.debugreg;
    c.event_callback_eip = vcpu.event.address;
    c.failsafe_callback_eip = vcpu.failsafe.address;
    c.syscall_callback_eip = vcpu.syscall.address;
    c.vm_assist = vm_assist;
    c.fs_base = vcpu.fs_base;
    c.gs_base_kernel = vcpu.gs_base_kernel;
    c.gs_base_user = vcpu.gs_base_user;
    c
}

/// What a context's first load holds in the frame table: its GDT frames'
/// descriptor type and its L4s as base pointers.
pub(super) struct Roots {
    gdt_frames: [u64; MAX_GDT_FRAMES],
    gdt_count: usize,
    kernel_l4: Mfn,
    user_l4: Option<Mfn>,
}

impl Roots {
    /// What a loaded vCPU holds already (`mm`'s L4s, its GDT frames).
    pub(super) fn held(mm: &VcpuMm, gdt_frames: [u64; MAX_GDT_FRAMES], gdt_count: usize) -> Roots {
        Roots {
            gdt_frames,
            gdt_count,
            kernel_l4: mm.kernel_l4.unwrap_or(Mfn(0)),
            user_l4: mm.user_l4,
        }
    }
}

/// Takes what the first load of context `c` into a vCPU of domain `dom`
/// holds: the GDT frames' descriptor type (`EINVAL` if one cannot hold
/// descriptors), the kernel L4 and the user L4 (if any) as page-table
/// bases of `dom`, validating every table below them (their own error).
/// Nothing is held on error.
pub(super) fn take_roots(
    env: &mut impl MmuEnv,
    fx: &mut Effects,
    dom: DomId,
    c: &VcpuGuestContext,
) -> Result<Roots, Errno> {
    let gdt_count = usize::try_from(c.gdt_ents.div_ceil(512)).map_err(|_| Errno::EINVAL)?;
    let mut gdt_frames = [0u64; MAX_GDT_FRAMES];
    gdt_frames[..gdt_count].copy_from_slice(&c.gdt_frames[..gdt_count]);
    take_gdt_frames_of(env, fx, dom, &gdt_frames[..gdt_count])?;
    let kernel_l4 = Mfn(c.ctrlreg[3] >> 12);
    let user_l4 = (c.ctrlreg[1] != 0).then_some(Mfn(c.ctrlreg[1] >> 12));
    let roots = {
        let mut mmu = Mmu::new(env, fx);
        mmu.replace_root(None, Some(kernel_l4), dom).and_then(|()| {
            match mmu.replace_root(None, user_l4, dom) {
                Ok(()) => Ok(()),
                Err(e) => {
                    mmu.put_page_and_type(kernel_l4);
                    Err(e)
                }
            }
        })
    };
    if let Err(e) = roots {
        release(env, fx, &gdt_frames[..gdt_count]);
        return Err(e);
    }
    Ok(Roots {
        gdt_frames,
        gdt_count,
        kernel_l4,
        user_l4,
    })
}

/// Loads context `c` into `vcpu`, which now owns `roots`.
pub(super) fn load_context(vcpu: &mut Vcpu, c: &VcpuGuestContext, roots: &Roots) {
    let flags = VgcfFlags::from_bits_retain(c.flags);
    let in_kernel = flags.contains(VgcfFlags::IN_KERNEL);
    vcpu.context = start_registers(c, in_kernel);
    vcpu.selectors = DataSelectors {
        ds: c.user_regs.ds,
        es: c.user_regs.es,
        fs: c.user_regs.fs,
    };
    *vcpu.fpu = if flags.contains(VgcfFlags::I387_VALID) {
        FpuArea::from_fxsave(&c.fpu_ctxt)
    } else {
        FpuArea::initial()
    };
    // The fast lanes read the trap table and the NMI mask (a running
    // vCPU's context is set only while its domain is paused, which
    // flagged it already).
    crate::fastpath::note_work(vcpu.on_cpu);
    for (gate, info) in vcpu.traps.iter_mut().zip(&c.trap_ctxt) {
        *gate = TrapGate {
            address: info.address,
            dpl: info.dpl(),
            mask_events: info.masks_events(),
        };
    }
    vcpu.event = Callback {
        address: c.event_callback_eip,
        mask_events: true,
    };
    vcpu.failsafe = Callback {
        address: c.failsafe_callback_eip,
        mask_events: flags.contains(VgcfFlags::FAILSAFE_DISABLES_EVENTS),
    };
    vcpu.syscall = Callback {
        address: c.syscall_callback_eip,
        mask_events: flags.contains(VgcfFlags::SYSCALL_DISABLES_EVENTS),
    };
    vcpu.kernel_ss = c.kernel_ss;
    vcpu.kernel_sp = c.kernel_sp;
    vcpu.fs_base = c.fs_base;
    vcpu.gs_base_kernel = c.gs_base_kernel;
    vcpu.gs_base_user = c.gs_base_user;
    vcpu.gs_kernel_active = in_kernel;
    for index in [0, 1, 2, 3, 6, 7] {
        vcpu.debugreg[index] = c.debugreg[index];
    }
    vcpu.gdt_frames = roots.gdt_frames;
    vcpu.gdt_count = roots.gdt_count;
    vcpu.gdt_entries = c.gdt_ents;
    vcpu.mm.kernel_l4 = Some(roots.kernel_l4);
    vcpu.mm.user_l4 = roots.user_l4;
    vcpu.mm.ldt_base = c.ldt_base;
    // `check_context` bounded it by 8192.
    vcpu.mm.ldt_ents = u32::try_from(c.ldt_ents).unwrap_or(0);
    vcpu.pending = Pending::all();
    vcpu.initialised = true;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::fake::{BASE, FakeMachine};
    use crate::timer::Sleep;
    use dom0_abi::vcpu::{RUNSTATE_RUNNING, VcpuRunstateInfo};

    fn op(m: &mut FakeMachine, cmd: VcpuOpCmd, id: u64, arg: u64) -> Result<u64, Errno> {
        let mut fx = Effects::default();
        vcpu_op(m, &mut fx, cmd as u64, id, arg)
    }

    /// A machine with a dom0 of `n` vCPUs (vCPU 0 up and running) and a
    /// pinned-able L4 of dom0's; returns the L4.
    fn machine(n: u32) -> (FakeMachine, Mfn) {
        let mut m = FakeMachine::with_vcpus(64, n);
        let l4 = m.give(crate::mm::fake::DOM);
        (m, l4)
    }

    fn context(l4: Mfn) -> VcpuGuestContext {
        let mut c = VcpuGuestContext::zeroed();
        c.flags = VgcfFlags::IN_KERNEL.bits();
        c.user_regs.rip = 0xffff_ffff_8000_2000;
        c.user_regs.rsp = 0xffff_ffff_8000_9000;
        c.user_regs.cs = 0xe033;
        c.user_regs.rbx = 7;
        c.ctrlreg[3] = l4.0 << 12;
        c.event_callback_eip = 0xffff_ffff_8000_3000;
        c
    }

    fn put_context(m: &mut FakeMachine, c: &VcpuGuestContext) {
        c.to_wire(&mut m.guest[..VcpuGuestContext::SIZE]).unwrap();
    }

    #[test]
    fn unknown_vcpu_and_command() {
        let (mut m, _) = machine(2);
        assert_eq!(op(&mut m, VcpuOpCmd::IsUp, 2, 0), Err(Errno::ENOENT));
        assert_eq!(
            op(&mut m, VcpuOpCmd::IsUp, 1 << 32, 0),
            Ok(1),
            "vcpuid is 32-bit"
        );
        let mut fx = Effects::default();
        assert_eq!(vcpu_op(&mut m, &mut fx, 99, 0, 0), Err(Errno::ENOSYS));
        assert_eq!(vcpu_op(&mut m, &mut fx, 99, 5, 0), Err(Errno::ENOENT));
        assert_eq!(
            op(&mut m, VcpuOpCmd::GetPhysid, 0, BASE),
            Err(Errno::ENOSYS)
        );
    }

    #[test]
    fn timers() {
        let (mut m, _) = machine(2);
        m.now = 50_000_000;
        m.guest[..8].copy_from_slice(&999_999u64.to_le_bytes());
        assert_eq!(
            op(&mut m, VcpuOpCmd::SetPeriodicTimer, 1, BASE),
            Err(Errno::EINVAL)
        );
        m.guest[..8].copy_from_slice(&2_000_000u64.to_le_bytes());
        assert_eq!(
            op(&mut m, VcpuOpCmd::SetPeriodicTimer, 1, 0x10),
            Err(Errno::EFAULT)
        );
        assert_eq!(op(&mut m, VcpuOpCmd::SetPeriodicTimer, 1, BASE), Ok(0));
        assert_eq!(m.vcpus[1].timers.period, 2_000_000);
        assert_eq!(
            m.vcpus[1].timers.last_periodic, 50_000_000,
            "raised at once"
        );
        assert_eq!(op(&mut m, VcpuOpCmd::StopPeriodicTimer, 1, 0), Ok(0));
        assert_eq!(m.vcpus[1].timers.period, 0);

        m.guest[..16].fill(0);
        m.guest[..8].copy_from_slice(&70_000_000u64.to_le_bytes());
        assert_eq!(
            op(&mut m, VcpuOpCmd::SetSingleshotTimer, 1, BASE),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            op(&mut m, VcpuOpCmd::StopSingleshotTimer, 1, 0),
            Err(Errno::EINVAL)
        );
        assert_eq!(
            op(&mut m, VcpuOpCmd::SetSingleshotTimer, 0, 0x10),
            Err(Errno::EFAULT)
        );
        assert_eq!(op(&mut m, VcpuOpCmd::SetSingleshotTimer, 0, BASE), Ok(0));
        assert_eq!(m.cpu.timers.singleshot, Some(70_000_000));
        assert!(m.timers_changed);
        assert_eq!(op(&mut m, VcpuOpCmd::StopSingleshotTimer, 0, 0), Ok(0));
        assert_eq!(m.cpu.timers.singleshot, None);
    }

    #[test]
    fn initialise_up_down() {
        let (mut m, l4) = machine(2);
        let c = context(l4);
        put_context(&mut m, &c);
        assert_eq!(op(&mut m, VcpuOpCmd::Up, 1, 0), Err(Errno::EINVAL));
        assert_eq!(op(&mut m, VcpuOpCmd::IsUp, 1, 0), Ok(0));
        assert_eq!(
            op(&mut m, VcpuOpCmd::Initialise, 1, 0x10),
            Err(Errno::EFAULT)
        );
        assert_eq!(op(&mut m, VcpuOpCmd::Initialise, 1, BASE), Ok(0));
        assert_eq!(
            op(&mut m, VcpuOpCmd::Initialise, 1, BASE),
            Err(Errno::EEXIST)
        );
        assert_eq!(
            op(&mut m, VcpuOpCmd::Initialise, 0, BASE),
            Err(Errno::EEXIST)
        );
        let v1 = &m.vcpus[1];
        assert_eq!(v1.context.cs, u64::from(RING1_KERNEL_CS));
        assert_eq!(v1.context.ss, u64::from(RING1_KERNEL_SS));
        assert_eq!((v1.context.rip, v1.context.rbx), (c.user_regs.rip, 7));
        assert_eq!(v1.mm.kernel_l4, Some(l4));
        assert_eq!(v1.event.address, c.event_callback_eip);
        assert!(m.info(l4).type_count() >= 1, "the L4 is typed for vCPU 1");
        assert_eq!(op(&mut m, VcpuOpCmd::Up, 1, 0), Ok(0));
        assert_eq!(op(&mut m, VcpuOpCmd::IsUp, 1, 0), Ok(1));
        assert_eq!(op(&mut m, VcpuOpCmd::Up, 1, 0), Ok(0), "up twice");
        assert_eq!(op(&mut m, VcpuOpCmd::Down, 1, 0), Ok(0));
        assert_eq!(op(&mut m, VcpuOpCmd::IsUp, 1, 0), Ok(0));
        assert!(!m.rescheduled, "another vCPU went down");
        assert!(m.domain.is_running());
        assert_eq!(op(&mut m, VcpuOpCmd::Up, 1, 0), Ok(0));
        assert_eq!(op(&mut m, VcpuOpCmd::Down, 0, 0), Ok(0));
        assert!(m.rescheduled, "the caller went down");
        assert!(m.domain.is_running());
    }

    #[test]
    fn the_last_vcpu_down_powers_off() {
        let (mut m, _) = machine(2);
        assert_eq!(op(&mut m, VcpuOpCmd::Down, 0, 0), Ok(0));
        assert!(!m.domain.is_running());
    }

    #[test]
    fn bad_contexts_change_nothing() {
        let (mut m, l4) = machine(2);
        let mut bad = [context(l4); 6];
        bad[0].user_regs.rip = 1 << 47;
        bad[1].trap_ctxt[14].address = 0x8000_0000_0000_0000;
        bad[2].ldt_base = 0x1001;
        bad[3].ldt_ents = 8193;
        bad[4].gdt_ents = 7169;
        bad[5].debugreg[7] = 1 << 13;
        for c in &bad {
            put_context(&mut m, c);
            assert_eq!(
                op(&mut m, VcpuOpCmd::Initialise, 1, BASE),
                Err(Errno::EINVAL)
            );
        }
        let mut not_l4 = context(l4);
        not_l4.ctrlreg[3] = 63 << 12;
        put_context(&mut m, &not_l4);
        assert!(op(&mut m, VcpuOpCmd::Initialise, 1, BASE).is_err());
        assert!(!m.vcpus[1].initialised);
        assert_eq!(m.info(l4).type_count(), 0, "no type left behind");
    }

    #[test]
    fn send_nmi() {
        let (mut m, _) = machine(2);
        assert_eq!(op(&mut m, VcpuOpCmd::SendNmi, 1, BASE), Err(Errno::EINVAL));
        assert!(!m.vcpus[1].nmi.deliverable(), "refused, nothing sent");
        assert_eq!(op(&mut m, VcpuOpCmd::SendNmi, 2, BASE), Err(Errno::ENOENT));
        assert_eq!(op(&mut m, VcpuOpCmd::SendNmi, 1, 0), Ok(0));
        assert!(m.vcpus[1].nmi.deliverable(), "to a vCPU never initialised");
        assert!(!m.cpu.nmi.deliverable());
        assert_eq!(op(&mut m, VcpuOpCmd::SendNmi, 1 << 32, 0), Ok(0));
        assert!(m.cpu.nmi.deliverable(), "to itself");
    }

    #[test]
    fn send_nmi_kicks_a_sleeping_vcpu_once() {
        let (mut m, _) = machine(2);
        m.vcpus[1].sleep = Sleep::Blocked;
        assert_eq!(op(&mut m, VcpuOpCmd::SendNmi, 1, 0), Ok(0));
        assert!(m.vcpus[1].kicked && m.timers_changed);
        m.vcpus[1].kicked = false;
        m.timers_changed = false;
        assert_eq!(op(&mut m, VcpuOpCmd::SendNmi, 1, 0), Ok(0));
        assert!(
            !m.vcpus[1].kicked && !m.timers_changed,
            "an NMI already pending kicks nobody"
        );
        assert_eq!(op(&mut m, VcpuOpCmd::SendNmi, 0, 0), Ok(0));
        assert!(!m.cpu.kicked && !m.timers_changed, "an awake vCPU");
    }

    #[test]
    fn runstate_info() {
        let (mut m, _) = machine(2);
        m.now = 1000;
        m.cpu.runstate.enter(RUNSTATE_RUNNING, 1000);
        m.now = 4000;
        assert_eq!(op(&mut m, VcpuOpCmd::GetRunstateInfo, 0, BASE), Ok(0));
        let info = VcpuRunstateInfo::from_wire(&m.guest).unwrap();
        assert_eq!(info.state, RUNSTATE_RUNNING);
        assert_eq!(info.state_entry_time, 1000);
        assert_eq!(info.time[0], 3000);
        assert_eq!(info.time[3], 1000, "offline from creation at 0");
        assert_eq!(
            op(&mut m, VcpuOpCmd::GetRunstateInfo, 1, 0x10),
            Err(Errno::EFAULT)
        );
    }
}
