//! Virtual CPUs: the state a PV guest gives the hypervisor instead of
//! loading an IDT, a TSS and MSRs itself, and the two pieces of CPU
//! virtualization that are pure computation: building a bounce frame, and
//! checking an `iret` frame.
//!
//! Invariants:
//! - the contexts made here (bounce frames, `iret`) run at CPL 1 with the
//!   ring-1 kernel selectors, or at CPL 3 with Xen's user selectors —
//!   never anything a guest wrote into an `iret` frame's CS or SS itself
//!   (selectors the guest loaded with its own instructions are checked on
//!   every exit by `crate::resume`);
//! - RFLAGS never carries IOPL, NT or VM into the guest; IF is always set
//!   in the real RFLAGS (the guest's "interrupt flag" is its upcall mask);
//! - a bounce frame is only written below an address outside the reserved
//!   L4 slots.
#![forbid(unsafe_code)]

use dom0_abi::cpu::{IretContext, TrapInfo, VGCF_IN_SYSCALL};
use dom0_abi::nmi::NMI_VECTOR;
use dom0_abi::segment::{
    FLAT_RING3_CS32, FLAT_RING3_CS64, FLAT_RING3_DS, RING1_KERNEL_CS, RING1_KERNEL_SS,
};
use dom0_abi::vcpu::{RUNSTATE_OFFLINE, VcpuRunstateInfo, XEN_RUNSTATE_UPDATE};
use dom0_abi::wire::Wire;

use crate::ioport::IoBitmap;
use crate::layout::guest_range_ok;
use crate::mm::machine::VcpuMm;
use crate::mm::types::L4Slots;
use crate::regs::GuestRegs;
use crate::sched::credit::Credit;
use crate::stats::Stats;
use crate::timer::{Sleep, VcpuTimers};

extern crate alloc;
use alloc::boxed::Box;
use core::sync::atomic::{Ordering, fence};

/// Bytes of a vCPU's saved FPU/SSE/AVX state: room for the XSAVE area of
/// x87, SSE and AVX (576 + 256 bytes) with headroom, or the 512-byte
/// FXSAVE image.
pub const FPU_AREA_BYTES: usize = 4096;

/// A vCPU's saved FPU and extended state, in the CPU's XSAVE (or FXSAVE)
/// format; the alignment XSAVE requires.
#[repr(C, align(64))]
#[derive(Clone, Debug)]
pub struct FpuArea(pub [u8; FPU_AREA_BYTES]);

impl FpuArea {
    /// Offset of the x87 control word in the FXSAVE image.
    const FCW: usize = 0;
    /// Offset of MXCSR in the FXSAVE image.
    const MXCSR: usize = 24;
    /// Offset of the XSAVE header's `XSTATE_BV`.
    const XSTATE_BV: usize = 512;
    /// `XSTATE_BV` bits of the x87 and SSE components.
    const X87_SSE: u64 = 0b11;

    /// The state of a CPU after reset as a vCPU first sees it: x87 control
    /// word 0x37f, MXCSR 0x1f80, every register zero. Restores the same
    /// with FXRSTOR and with XRSTOR (its header marks every component as in
    /// its initial configuration, and MXCSR is read from the image).
    pub fn initial() -> FpuArea {
        let mut area = FpuArea([0; FPU_AREA_BYTES]);
        area.0[Self::FCW..Self::FCW + 2].copy_from_slice(&0x037fu16.to_le_bytes());
        area.0[Self::MXCSR..Self::MXCSR + 4].copy_from_slice(&0x1f80u32.to_le_bytes());
        area
    }

    /// The state a guest gave in FXSAVE format (`vcpu_guest_context`'s
    /// `fpu_ctxt`): its x87 and SSE registers, AVX state initial.
    pub fn from_fxsave(image: &[u8; 512]) -> FpuArea {
        let mut area = FpuArea([0; FPU_AREA_BYTES]);
        area.0[..512].copy_from_slice(image);
        area.0[Self::XSTATE_BV..Self::XSTATE_BV + 8].copy_from_slice(&Self::X87_SSE.to_le_bytes());
        area
    }
}

/// The data segment selectors a vCPU holds while switched out (CS and SS
/// are in its saved registers; GS is kept as `user_gs_sel`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DataSelectors {
    /// DS.
    pub ds: u16,
    /// ES.
    pub es: u16,
    /// FS.
    pub fs: u16,
}

/// Where a vCPU's time goes, for `VCPUOP_get_runstate_info`: Xen's
/// `vcpu_runstate_info`, kept in nanoseconds of system time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Runstate {
    /// The current `RUNSTATE_*`.
    pub state: i32,
    /// System time the state was entered.
    pub entry_time: u64,
    /// Time spent in each state, finished periods only.
    pub time: [u64; 4],
}

impl Runstate {
    /// A vCPU created at `now`: offline.
    pub fn new(now: u64) -> Runstate {
        Runstate {
            state: RUNSTATE_OFFLINE,
            entry_time: now,
            time: [0; 4],
        }
    }

    /// Enters `state` at `now` (the time in the old state is added up).
    pub fn enter(&mut self, state: i32, now: u64) {
        if let Some(slot) = usize::try_from(self.state)
            .ok()
            .and_then(|i| self.time.get_mut(i))
        {
            *slot += now.saturating_sub(self.entry_time);
        }
        self.state = state;
        self.entry_time = now;
    }

    /// The record as the runstate area shows it: the current state's
    /// period, still running, is not in `time` (the guest adds it from
    /// `state_entry_time`).
    pub fn area_record(&self) -> VcpuRunstateInfo {
        VcpuRunstateInfo {
            state: self.state,
            pad: 0,
            state_entry_time: self.entry_time,
            time: self.time,
        }
    }

    /// The guest-visible record at `now`: the current state's time
    /// includes the period still running, as Xen reports it.
    pub fn info(&self, now: u64) -> VcpuRunstateInfo {
        let mut time = self.time;
        if let Some(slot) = usize::try_from(self.state)
            .ok()
            .and_then(|i| time.get_mut(i))
        {
            *slot += now.saturating_sub(self.entry_time);
        }
        VcpuRunstateInfo {
            state: self.state,
            pad: 0,
            state_entry_time: self.entry_time,
            time,
        }
    }
}

/// Writes `record` into the runstate area at guest address `area` through
/// `write(address, bytes)`, as Xen does at a context switch: with the
/// `runstate_update_flag` assist (`flagged`), the top byte of
/// `state_entry_time` first gets [`XEN_RUNSTATE_UPDATE`], then the record is
/// written with the flag set, then the flag is cleared, so that a guest
/// reading the area sees the flag whenever its copy may be torn. Faults
/// are the guest's business and ignored, as on Xen.
pub fn publish_runstate(
    area: u64,
    record: &VcpuRunstateInfo,
    flagged: bool,
    mut write: impl FnMut(u64, &[u8]),
) {
    const TOP_BYTE: u64 = core::mem::offset_of!(VcpuRunstateInfo, state_entry_time) as u64 + 7;
    let mut bytes = [0u8; VcpuRunstateInfo::SIZE];
    let mut record = *record;
    if flagged {
        record.state_entry_time |= XEN_RUNSTATE_UPDATE;
        write(area + TOP_BYTE, &record.state_entry_time.to_le_bytes()[7..]);
        fence(Ordering::Release);
    }
    if record.to_wire(&mut bytes).is_some() {
        write(area, &bytes);
    }
    if flagged {
        record.state_entry_time &= !XEN_RUNSTATE_UPDATE;
        fence(Ordering::Release);
        write(area + TOP_BYTE, &record.state_entry_time.to_le_bytes()[7..]);
    }
}

/// Whether a vCPU is up (Xen's `!_VPF_down`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Power {
    /// Down: never brought up, or `VCPUOP_down`.
    #[default]
    Down,
    /// Up: runnable, running or blocked.
    Up,
}

/// RFLAGS bits.
pub mod rflags {
    /// Trap flag.
    pub const TF: u64 = 1 << 8;
    /// Interrupt flag.
    pub const IF: u64 = 1 << 9;
    /// I/O privilege level.
    pub const IOPL: u64 = 3 << 12;
    /// Nested task.
    pub const NT: u64 = 1 << 14;
    /// Resume flag.
    pub const RF: u64 = 1 << 16;
    /// Virtual-8086 mode.
    pub const VM: u64 = 1 << 17;
    /// Alignment check.
    pub const AC: u64 = 1 << 18;
    /// Always-one bit 1.
    pub const FIXED: u64 = 1 << 1;
}

/// One entry of the virtual IDT.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrapGate {
    /// Handler address (0: none).
    pub address: u64,
    /// Who may `INT n` it: 0 nobody, 1-2 the kernel, 3 everyone.
    pub dpl: u8,
    /// Mask events on delivery (interrupt-gate semantics).
    pub mask_events: bool,
}

/// A registered callback.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Callback {
    /// Entry address (0: none).
    pub address: u64,
    /// Mask events on entry.
    pub mask_events: bool,
}

/// A vCPU's virtual NMI line (Xen's `nmi_pending` and the NMI bit of its
/// `async_exception_mask`). The handler is not kept here: it is the
/// vCPU's trap-table entry 2, whichever call set it.
///
/// Invariant: at most one NMI is pending; NMIs are masked from the
/// delivery of one until the vCPU's next `HYPERVISOR_iret`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Nmi {
    /// An NMI was sent and not yet taken.
    pending: bool,
    /// The handler of the last NMI has not returned with `iret` yet.
    masked: bool,
}

/// What the way back to the guest does with the NMI line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NmiDelivery {
    /// Nothing: no NMI pending, or NMIs masked.
    None,
    /// An NMI was pending but there is no handler: it is gone.
    Dropped,
    /// Enter this handler (NMIs are now masked).
    Deliver(TrapGate),
}

impl Nmi {
    /// `VCPUOP_send_nmi` (or a registration that re-raises the NMI
    /// reason): an NMI is pending. One already pending absorbs it; returns
    /// whether this one was new (only a new one kicks a sleeping vCPU, as
    /// on Xen).
    pub fn raise(&mut self) -> bool {
        !core::mem::replace(&mut self.pending, true)
    }

    /// Whether an NMI is pending (taken or not, masked or not: one test
    /// on every exit decides whether [`Nmi::take`] is needed).
    pub const fn is_pending(&self) -> bool {
        self.pending
    }

    /// Whether NMIs are masked (the last one's handler has not returned
    /// with `iret` yet).
    pub const fn is_masked(&self) -> bool {
        self.masked
    }

    /// Whether the way back to the guest has something to do: an NMI is
    /// pending and NMIs are not masked.
    pub const fn deliverable(&self) -> bool {
        self.pending && !self.masked
    }

    /// Takes a deliverable NMI for `handler` (the vCPU's trap-table entry
    /// 2): with a handler, NMIs become masked and the handler is entered;
    /// without one the NMI is dropped (Xen loses it too: registering a
    /// handler later delivers nothing).
    pub fn take(&mut self, handler: TrapGate) -> NmiDelivery {
        if !self.deliverable() {
            return NmiDelivery::None;
        }
        self.pending = false;
        if handler.address == 0 {
            return NmiDelivery::Dropped;
        }
        self.masked = true;
        NmiDelivery::Deliver(handler)
    }

    /// `HYPERVISOR_iret`: NMIs are unmasked (whether or not this `iret`
    /// ends the NMI handler, as on Xen).
    pub fn unmask(&mut self) {
        self.masked = false;
    }
}

bitflags::bitflags! {
    /// Work the CPU must do before the guest runs again, set by pure
    /// handlers (one test on the way out when there is none).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct Pending: u8 {
        /// FS/GS bases or the user GS selector changed.
        const SEGMENTS = 1 << 0;
        /// The virtual CR0.TS or the XCR0 changed.
        const FPU = 1 << 1;
        /// The GDT frames changed.
        const GDT = 1 << 2;
        /// The debug registers changed.
        const DEBUG = 1 << 3;
        /// The data selectors must be loaded from the vCPU's record (it
        /// was switched in).
        const SELECTORS = 1 << 4;
        /// The CPU's CR4.FSGSBASE must follow the vCPU's.
        const CR4 = 1 << 5;
    }
}

/// A virtual CPU: its id, saved context, and the PV state a guest gives
/// the hypervisor instead of loading an IDT, a TSS and MSRs itself.
///
/// While the vCPU runs, its general registers live on the hypervisor stack
/// of its physical CPU and its FPU state in the CPU; `context` and `fpu`
/// hold them only while it is switched out.
#[derive(Clone, Debug)]
pub struct Vcpu {
    /// Its id within its domain (its index in the domain's vCPU list).
    pub id: u32,
    /// Up or down.
    pub power: Power,
    /// Machine address of its `vcpu_info` (in the domain's shared_info).
    pub vcpu_info: u64,
    /// Its XCR0 (the XSAVE components it enabled with `xsetbv`), loaded
    /// while it runs.
    pub xcr0: u64,
    /// Its CR4.OSXSAVE, as it last wrote CR4.
    pub cr4_osxsave: bool,
    /// Its CR4.FSGSBASE, as it last wrote CR4 (only where the CPU has
    /// FSGSBASE). While it is set, the CPU's CR4.FSGSBASE is too and the
    /// guest changes its FS and active GS bases without the hypervisor:
    /// `fs_base` and the active GS base are then only as current as the
    /// last time the hypervisor read them back.
    pub cr4_fsgsbase: bool,
    /// The frame its `vcpu_info` moved to (`VCPUOP_register_vcpu_info`),
    /// held writable until the domain goes; `None`: in shared_info.
    pub vcpu_info_frame: Option<dom0_abi::types::Mfn>,
    /// Guest address of its runstate area
    /// (`VCPUOP_register_runstate_memory_area`; 0: none), rewritten at
    /// every switch in and out.
    pub runstate_area: u64,
    /// Whether it has a context (the boot vCPU's from the builder, the
    /// others' from `VCPUOP_initialise`).
    pub initialised: bool,
    /// General registers and the iret frame, saved while switched out.
    pub context: GuestRegs,
    /// FPU/SSE/AVX state, saved while switched out (a vCPU that never ran
    /// has [`FpuArea::initial`]).
    pub fpu: Box<FpuArea>,
    /// DS, ES and FS, saved while switched out.
    pub selectors: DataSelectors,
    /// Time spent running, runnable, blocked and offline.
    pub runstate: Runstate,
    /// Its one-shot and periodic timers.
    pub timers: VcpuTimers,
    /// Whether it sleeps in `SCHEDOP_block` or `SCHEDOP_poll`.
    pub sleep: Sleep,
    /// An upcall was newly raised for it since the scheduler last looked
    /// (Xen's kick: it wakes a polling vCPU).
    pub kicked: bool,
    /// The physical CPU whose registers hold its context: set when it is
    /// loaded there, cleared when it is saved. A vCPU runs on one CPU at
    /// a time: no other CPU is offered it meanwhile (`sched::offer`).
    pub on_cpu: Option<u16>,
    /// Page-table bases and LDT.
    pub mm: VcpuMm,
    /// The non-zero guest slots of its kernel L4 when it was last switched
    /// in, so that the next switch copies only those (see
    /// `crate::mm::types::L4_GENERATION` for when they are stale).
    pub l4_slots: Option<L4Slots>,
    /// Event counters for `stats_op` (empty without the `stats` feature).
    pub stats: Stats,
    /// The virtual IDT (`set_trap_table`).
    pub traps: [TrapGate; 256],
    /// Event upcall entry.
    pub event: Callback,
    /// Failsafe entry.
    pub failsafe: Callback,
    /// Entry for 64-bit `SYSCALL` from user mode.
    pub syscall: Callback,
    /// Entry for 32-bit `SYSCALL` from compat user mode.
    pub syscall32: Callback,
    /// Entry for `SYSENTER`.
    pub sysenter: Callback,
    /// Its virtual NMI line (the NMI callback is `traps[2]`).
    pub nmi: Nmi,
    /// Kernel stack for user→kernel transitions (`stack_switch`).
    pub kernel_sp: u64,
    /// The SS the guest named in `stack_switch` (kept for `get_context`;
    /// frames always use the ring-1 SS).
    pub kernel_ss: u64,
    /// Virtual CR0.TS (`fpu_taskswitch`).
    pub fpu_ts: bool,
    /// Virtual IOPL (0-3, `PHYSDEVOP_set_iopl`): `cli`/`sti` are accepted
    /// as no-ops, and `in`/`out` go on to the domain's port rights, from
    /// the kernel at 1 or more, from user mode at 3.
    pub iopl: u8,
    /// The I/O bitmap of `PHYSDEVOP_set_iobitmap` (`crate::ioport`).
    pub iobitmap: IoBitmap,
    /// FS base.
    pub fs_base: u64,
    /// GS base while in kernel mode.
    pub gs_base_kernel: u64,
    /// GS base while in user mode.
    pub gs_base_user: u64,
    /// The user-mode GS selector (`SEGBASE_GS_USER_SEL`).
    pub user_gs_sel: u16,
    /// Whether the CPU's active GS base is the kernel one (the hypervisor's
    /// own record: a native `iretq` to user mode does not change it).
    pub gs_kernel_active: bool,
    /// Machine frames of the guest's GDT (`set_gdt`), the first
    /// `gdt_count` of them in use.
    pub gdt_frames: [u64; crate::hypercall::desc::MAX_GDT_FRAMES],
    /// How many GDT frames are loaded.
    pub gdt_count: usize,
    /// How many GDT entries the guest declared.
    pub gdt_entries: u64,
    /// Debug registers DR0-DR7 as the guest sees them (4 and 5 unused).
    pub debugreg: [u64; 8],
    /// CPU work pending before the next exit.
    pub pending: Pending,
    /// Its credit with the scheduler.
    pub credit: Credit,
}

impl Default for Vcpu {
    fn default() -> Self {
        Vcpu::new(0)
    }
}

impl Vcpu {
    /// vCPU `id`, down, with no context yet.
    pub fn new(id: u32) -> Vcpu {
        Vcpu {
            id,
            power: Power::Down,
            vcpu_info: 0,
            runstate_area: 0,
            vcpu_info_frame: None,
            xcr0: crate::cpuid::XCR0_INITIAL,
            cr4_osxsave: false,
            cr4_fsgsbase: false,
            initialised: false,
            context: GuestRegs::default(),
            fpu: Box::new(FpuArea::initial()),
            selectors: DataSelectors::default(),
            runstate: Runstate::new(0),
            timers: VcpuTimers::default(),
            sleep: Sleep::Awake,
            kicked: false,
            on_cpu: None,
            mm: VcpuMm::default(),
            l4_slots: None,
            stats: Stats::default(),
            traps: [TrapGate::default(); 256],
            event: Callback::default(),
            failsafe: Callback::default(),
            syscall: Callback::default(),
            syscall32: Callback::default(),
            sysenter: Callback::default(),
            nmi: Nmi::default(),
            kernel_sp: 0,
            kernel_ss: 0,
            fpu_ts: false,
            iopl: 0,
            iobitmap: IoBitmap::default(),
            fs_base: 0,
            gs_base_kernel: 0,
            gs_base_user: 0,
            user_gs_sel: 0,
            gs_kernel_active: true,
            gdt_frames: [0; crate::hypercall::desc::MAX_GDT_FRAMES],
            gdt_count: 0,
            gdt_entries: 0,
            debugreg: [0, 0, 0, 0, 0, 0, debug::DR6_DEFAULT, debug::DR7_DEFAULT],
            // Its XCR0 and CR0.TS are loaded before it first runs.
            pending: Pending::FPU,
            credit: Credit::default(),
        }
    }

    /// Whether the vCPU is up.
    pub fn is_up(&self) -> bool {
        self.power == Power::Up
    }

    /// Whether it can run now: up and not sleeping.
    pub fn is_runnable(&self) -> bool {
        self.is_up() && !self.sleep.is_sleeping()
    }

    /// Whether it can run on physical CPU `cpu`: runnable, and its
    /// context not held by another CPU.
    pub fn may_run_on(&self, cpu: u16) -> bool {
        self.is_runnable() && self.on_cpu.is_none_or(|on| on == cpu)
    }

    /// Merges one `trap_info` entry into the virtual IDT.
    pub fn set_trap(&mut self, info: &TrapInfo) {
        self.traps[usize::from(info.vector)] = TrapGate {
            address: info.address,
            dpl: info.dpl(),
            mask_events: info.masks_events(),
        };
    }

    /// The NMI handler: trap-table entry 2.
    pub fn nmi_handler(&self) -> TrapGate {
        self.traps[usize::from(NMI_VECTOR)]
    }

    /// Sets the NMI handler as `callback_op` and `nmi_op` do: entry 2
    /// becomes `handler` with DPL 0 and events masked (0 removes it).
    pub fn set_nmi_handler(&mut self, handler: u64) {
        self.traps[usize::from(NMI_VECTOR)] = if handler == 0 {
            TrapGate::default()
        } else {
            TrapGate {
                address: handler,
                dpl: 0,
                mask_events: true,
            }
        };
    }
}

/// The debug-register rules (Xen's `set_debugreg` checks).
pub mod debug {
    use crate::layout::guest_range_ok;

    /// DR6 with no condition recorded.
    pub const DR6_DEFAULT: u64 = 0xffff_0ff0;
    /// DR7 with every breakpoint disabled (bit 10 reads as one).
    pub const DR7_DEFAULT: u64 = 0x400;
    /// DR7.GD: general detect (the guest may not set it).
    const DR7_GD: u64 = 1 << 13;

    /// Why a debug-register value is refused.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Refused {
        /// No such register (`ENODEV`).
        NoRegister,
        /// A value the guest may not load (`EPERM`).
        Value,
        /// DR6 or DR7 with bits above 31, which are reserved (`EINVAL`).
        Reserved,
    }

    /// The register a number names (4 and 5 alias 6 and 7, as with CR4.DE
    /// clear).
    pub const fn register(reg: u64) -> Result<usize, Refused> {
        match reg {
            0 => Ok(0),
            1 => Ok(1),
            2 => Ok(2),
            3 => Ok(3),
            4 | 6 => Ok(6),
            5 | 7 => Ok(7),
            _ => Err(Refused::NoRegister),
        }
    }

    /// The value to store for `value` written to register `index`:
    /// breakpoint addresses must lie in guest memory; DR6 and DR7 may not
    /// set bits above 31 (Xen: `EINVAL`); DR6 keeps only its status bits;
    /// DR7 may not set GD or I/O breakpoints.
    pub fn check(index: usize, value: u64) -> Result<u64, Refused> {
        match index {
            0..=3 if guest_range_ok(value, 1) => Ok(value),
            0..=3 => Err(Refused::Value),
            _ if value >> 32 != 0 => Err(Refused::Reserved),
            6 => Ok((value & 0xe00f) | DR6_DEFAULT),
            _ => {
                let io_breakpoint =
                    (0..4).any(|i| value & (3 << (2 * i)) != 0 && (value >> (16 + 4 * i)) & 3 == 2);
                if value & DR7_GD != 0 || io_breakpoint {
                    Err(Refused::Value)
                } else {
                    Ok(value | DR7_DEFAULT)
                }
            }
        }
    }
}

/// The part of a guest context that events and `iret` change.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Context {
    /// RIP.
    pub rip: u64,
    /// CS.
    pub cs: u64,
    /// RFLAGS.
    pub rflags: u64,
    /// RSP.
    pub rsp: u64,
    /// SS.
    pub ss: u64,
    /// RCX.
    pub rcx: u64,
    /// R11.
    pub r11: u64,
    /// RAX.
    pub rax: u64,
}

impl Context {
    /// Whether this context runs in guest user mode (ring 3).
    pub const fn in_user_mode(&self) -> bool {
        self.cs & 3 == 3
    }
}

/// Why an event could not be bounced; the domain must be crashed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BounceError {
    /// No kernel stack registered (`stack_switch`) for an event from user mode.
    NoKernelStack,
    /// The frame would land in the reserved slots, wrap, or leave canonical space.
    BadStack(u64),
}

impl core::fmt::Display for BounceError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BounceError::NoKernelStack => {
                f.write_str("event from user mode but no kernel stack registered")
            }
            BounceError::BadStack(rsp) => {
                write!(f, "bounce frame at {rsp:#x} is outside guest memory")
            }
        }
    }
}

/// A bounce as a whole: the frame and the handler's context (the entry
/// path sets the context in place, `arch::x86_64::guest::bounce_to`; the
/// tests check the two together).
#[cfg(test)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bounce {
    /// The frame and where it goes.
    pub frame: BounceFrame,
    /// The context the guest resumes in: the handler.
    pub context: Context,
}

/// The words of a bounce frame and where they go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BounceFrame {
    /// Where the frame goes (the handler's RSP).
    pub rsp: u64,
    /// The frame, lowest address first.
    pub words: [u64; 8],
    /// How many words of `words` are used (7, or 8 with an error code).
    pub len: usize,
    /// Whether the delivery leaves guest user mode.
    pub from_user: bool,
}

impl BounceFrame {
    /// The frame's words.
    pub fn words(&self) -> &[u64] {
        &self.words[..self.len]
    }
}

/// Builds Xen's 64-bit bounce frame for an event interrupting `ctx`, to be
/// delivered to `handler`: RCX, R11, [error code], RIP, CS (saved upcall
/// mask in bits 32-39; for kernel context with RPL 0, as Xen's frames show
/// it, so that a kernel telling modes apart by `CS & 3` sees kernel),
/// RFLAGS (IF = !saved mask), RSP, SS — on the
/// current stack when the guest was in kernel mode, on `kernel_sp` when it
/// was in user mode, 16-byte aligned. The handler runs in ring 1 on the
/// frame ([`HANDLER_CS`], [`HANDLER_SS`], RSP = the frame's place,
/// RFLAGS from [`handler_rflags`]) with RCX, R11 and RAX as they were.
#[cfg(test)]
pub fn bounce(
    vcpu: &Vcpu,
    ctx: &Context,
    handler: u64,
    error_code: Option<u64>,
    saved_mask: u8,
) -> Result<Bounce, BounceError> {
    let frame = bounce_frame(vcpu.kernel_sp, ctx, error_code, saved_mask)?;
    let context = Context {
        rip: handler,
        cs: HANDLER_CS,
        rflags: handler_rflags(ctx.rflags),
        rsp: frame.rsp,
        ss: HANDLER_SS,
        rcx: ctx.rcx,
        r11: ctx.r11,
        rax: ctx.rax,
    };
    Ok(Bounce { frame, context })
}

/// A bounce handler's CS.
pub const HANDLER_CS: u64 = RING1_KERNEL_CS as u64;
/// A bounce handler's SS.
pub const HANDLER_SS: u64 = RING1_KERNEL_SS as u64;

/// A bounce handler's RFLAGS, from the interrupted context's: no trap,
/// nested-task, resume, VM, alignment-check or IOPL bits, IF set.
#[inline(always)]
#[must_use]
pub const fn handler_rflags(rflags: u64) -> u64 {
    (rflags & !(rflags::TF | rflags::NT | rflags::RF | rflags::VM | rflags::AC | rflags::IOPL))
        | rflags::IF
        | rflags::FIXED
}

/// The frame part of [`bounce`], for a caller that sets the handler's
/// context itself (in place, without building a [`Context`]); `kernel_sp`
/// is the vCPU's registered kernel stack (`stack_switch`, 0 for none),
/// used for an event from user mode. The place is checked first, and the
/// frame built once, in the returned value.
#[inline(always)]
pub fn bounce_frame(
    kernel_sp: u64,
    ctx: &Context,
    error_code: Option<u64>,
    saved_mask: u8,
) -> Result<BounceFrame, BounceError> {
    let from_user = ctx.in_user_mode();
    let stack = if from_user {
        if kernel_sp == 0 {
            return Err(BounceError::NoKernelStack);
        }
        kernel_sp
    } else {
        ctx.rsp
    };
    let len = if error_code.is_some() { 8 } else { 7 };
    let bytes = (len as u64) * 8;
    let rsp = (stack & !15)
        .checked_sub(bytes)
        .ok_or(BounceError::BadStack(stack))?;
    if !guest_range_ok(rsp, bytes) {
        return Err(BounceError::BadStack(rsp));
    }
    let guest_if = if saved_mask == 0 { rflags::IF } else { 0 };
    let cs = if from_user { ctx.cs } else { ctx.cs & !3 };
    let cs_word = (cs & 0xffff) | (u64::from(saved_mask) << 32);
    let rflags_word = (ctx.rflags & !rflags::IF) | guest_if;
    let words = match error_code {
        Some(code) => [
            ctx.rcx,
            ctx.r11,
            code,
            ctx.rip,
            cs_word,
            rflags_word,
            ctx.rsp,
            ctx.ss,
        ],
        None => [
            ctx.rcx,
            ctx.r11,
            ctx.rip,
            cs_word,
            rflags_word,
            ctx.rsp,
            ctx.ss,
            0,
        ],
    };
    Ok(BounceFrame {
        rsp,
        words,
        len,
        from_user,
    })
}

/// What an `iret` frame asks for, once checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IretTarget {
    /// The context to resume.
    pub context: Context,
    /// The upcall mask to set (`!RFLAGS.IF` of the frame).
    pub upcall_mask: u8,
}

/// Checks a `HYPERVISOR_iret` frame and computes the context it returns
/// to: RPL 3 in CS means user mode (CS 0xe033, or 0xe023 for a 32-bit CS
/// of Xen's; SS 0xe02b); RPL 0-2 means kernel mode (the ring-1 selectors).
/// IOPL, VM and NT are stripped and IF is forced on; the guest's "IF"
/// becomes the upcall mask. RAX is restored; RCX and R11 too, unless the
/// frame says `VGCF_in_syscall`: then they hold what SYSRET leaves, the
/// return RIP and RFLAGS. RIP and RSP are taken as they are: a
/// non-canonical one makes the exit's `iretq` fault, and the exit check
/// gives the guest that fault (#GP or #SS), as Xen's faulting exit does.
pub fn iret(frame: &IretContext) -> IretTarget {
    let to_user = frame.cs & 3 == 3;
    let (cs, ss) = if to_user {
        let cs = if frame.cs & 0xffff == u64::from(FLAT_RING3_CS32) {
            FLAT_RING3_CS32
        } else {
            FLAT_RING3_CS64
        };
        (u64::from(cs), u64::from(FLAT_RING3_DS))
    } else {
        (u64::from(RING1_KERNEL_CS), u64::from(RING1_KERNEL_SS))
    };
    let in_syscall = frame.flags & VGCF_IN_SYSCALL != 0;
    let rflags =
        (frame.rflags & !(rflags::IOPL | rflags::VM | rflags::NT)) | rflags::IF | rflags::FIXED;
    let context = Context {
        rip: frame.rip,
        cs,
        rflags,
        rsp: frame.rsp,
        ss,
        rcx: if in_syscall { frame.rip } else { frame.rcx },
        r11: if in_syscall { rflags } else { frame.r11 },
        rax: frame.rax,
    };
    let upcall_mask = u8::from(frame.rflags & rflags::IF == 0);
    IretTarget {
        context,
        upcall_mask,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use dom0_abi::vcpu::RUNSTATE_RUNNING;

    /// The writes `publish_runstate` makes to an area at 0x1000.
    fn writes(flagged: bool) -> Vec<(u64, Vec<u8>)> {
        let record = VcpuRunstateInfo {
            state: 1,
            pad: 0,
            state_entry_time: 0x1234,
            time: [1, 2, 3, 4],
        };
        let mut out = Vec::new();
        publish_runstate(0x1000, &record, flagged, |va, bytes| {
            out.push((va, bytes.to_vec()));
        });
        out
    }

    #[test]
    fn runstate_area_is_one_write_without_the_assist() {
        let w = writes(false);
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].0, 0x1000);
        assert_eq!(
            VcpuRunstateInfo::from_wire(&w[0].1)
                .unwrap()
                .state_entry_time,
            0x1234
        );
    }

    #[test]
    fn runstate_update_flag_brackets_the_record() {
        let w = writes(true);
        assert_eq!(w.len(), 3);
        // The top byte of state_entry_time gets the flag first ...
        assert_eq!((w[0].0, w[0].1.as_slice()), (0x1000 + 15, &[0x80][..]));
        // ... the record is written with it ...
        let record = VcpuRunstateInfo::from_wire(&w[1].1).unwrap();
        assert_eq!(record.state_entry_time, 0x1234 | XEN_RUNSTATE_UPDATE);
        assert_eq!(record.time, [1, 2, 3, 4]);
        // ... and the top byte is cleared last.
        assert_eq!((w[2].0, w[2].1.as_slice()), (0x1000 + 15, &[0][..]));
    }

    #[test]
    fn area_record_leaves_the_running_period_out() {
        let mut r = Runstate::new(100);
        r.enter(RUNSTATE_RUNNING, 150);
        let area = r.area_record();
        assert_eq!((area.state, area.state_entry_time), (RUNSTATE_RUNNING, 150));
        assert_eq!(area.time, [0, 0, 0, 50]);
        assert_eq!(r.info(170).time, [20, 0, 0, 50]);
    }

    fn kernel_ctx() -> Context {
        Context {
            rip: 0xffff_ffff_8000_1234,
            cs: u64::from(RING1_KERNEL_CS),
            rflags: 0x202,
            rsp: 0xffff_ffff_8002_0f08,
            ss: u64::from(RING1_KERNEL_SS),
            rcx: 1,
            r11: 2,
            rax: 3,
        }
    }

    #[test]
    fn kernel_bounce_uses_the_current_stack_aligned() {
        let v = Vcpu::default();
        let b = bounce(&v, &kernel_ctx(), 0xffff_ffff_8000_4000, Some(0x14), 0).unwrap();
        assert_eq!(b.frame.len, 8);
        assert_eq!(b.frame.rsp, 0xffff_ffff_8002_0f00 - 64);
        assert_eq!(
            b.frame.words(),
            &[
                1,
                2,
                0x14,
                0xffff_ffff_8000_1234,
                0xe018,
                0x202,
                0xffff_ffff_8002_0f08,
                0xe039
            ]
        );
        assert_eq!(b.context.rip, 0xffff_ffff_8000_4000);
        assert_eq!(b.context.cs, 0xe019);
        assert!(!b.frame.from_user);
    }

    #[test]
    fn saved_mask_goes_to_cs_and_clears_if() {
        let v = Vcpu::default();
        let b = bounce(&v, &kernel_ctx(), 0x1000, None, 1).unwrap();
        assert_eq!(b.frame.len, 7);
        assert_eq!(b.frame.words()[3], 0xe018 | (1 << 32));
        assert_eq!(b.frame.words()[4] & rflags::IF, 0);
    }

    #[test]
    fn user_bounce_needs_and_uses_the_kernel_stack() {
        let mut v = Vcpu::default();
        let user = Context {
            cs: 0xe033,
            ss: 0xe02b,
            rsp: 0x7000,
            ..kernel_ctx()
        };
        assert_eq!(
            bounce(&v, &user, 0x1000, None, 0),
            Err(BounceError::NoKernelStack)
        );
        v.kernel_sp = 0xffff_ffff_8003_0000;
        let b = bounce(&v, &user, 0x1000, None, 0).unwrap();
        assert_eq!(b.frame.rsp, 0xffff_ffff_8003_0000 - 56);
        assert!(b.frame.from_user);
        assert_eq!(b.frame.words()[3], 0xe033);
    }

    #[test]
    fn frames_never_land_in_the_reserved_slots() {
        let v = Vcpu::default();
        let ctx = Context {
            rsp: 0xffff_8800_0000_0010,
            ..kernel_ctx()
        };
        assert!(matches!(
            bounce(&v, &ctx, 0x1000, None, 0),
            Err(BounceError::BadStack(_))
        ));
        let ctx = Context {
            rsp: 0x20,
            ..kernel_ctx()
        };
        assert!(matches!(
            bounce(&v, &ctx, 0x1000, None, 0),
            Err(BounceError::BadStack(_))
        ));
    }

    #[test]
    fn handler_runs_without_tf_and_privileged_flags() {
        let v = Vcpu::default();
        let ctx = Context {
            rflags: 0x202 | rflags::TF | rflags::AC | rflags::NT,
            ..kernel_ctx()
        };
        let b = bounce(&v, &ctx, 0x1000, None, 0).unwrap();
        assert_eq!(b.context.rflags, 0x202);
    }

    #[test]
    fn one_nmi_pending_masked_until_iret() {
        let gate = TrapGate {
            address: 0x1000,
            dpl: 0,
            mask_events: true,
        };
        let mut nmi = Nmi::default();
        assert_eq!(nmi.take(gate), NmiDelivery::None, "nothing pending");
        assert!(nmi.raise());
        assert!(!nmi.raise(), "absorbed by the one pending");
        assert!(nmi.deliverable());
        assert_eq!(nmi.take(gate), NmiDelivery::Deliver(gate));
        assert_eq!(nmi.take(gate), NmiDelivery::None, "two sends, one NMI");
        nmi.raise();
        assert!(
            nmi.is_pending() && !nmi.deliverable(),
            "masked in the handler"
        );
        assert_eq!(nmi.take(gate), NmiDelivery::None);
        assert!(nmi.is_pending(), "kept for after the iret");
        nmi.unmask();
        assert_eq!(nmi.take(gate), NmiDelivery::Deliver(gate), "after iret");
        nmi.unmask();
        assert_eq!(nmi.take(gate), NmiDelivery::None);
    }

    #[test]
    fn an_nmi_without_a_handler_is_dropped_and_leaves_nmis_unmasked() {
        let mut nmi = Nmi::default();
        nmi.raise();
        assert_eq!(nmi.take(TrapGate::default()), NmiDelivery::Dropped);
        let gate = TrapGate {
            address: 0x1000,
            ..TrapGate::default()
        };
        assert_eq!(nmi.take(gate), NmiDelivery::None, "not pending any more");
        nmi.raise();
        assert_eq!(nmi.take(gate), NmiDelivery::Deliver(gate), "not masked");
    }

    #[test]
    fn the_nmi_handler_is_trap_entry_2() {
        let mut v = Vcpu::default();
        v.set_trap(&TrapInfo {
            vector: 2,
            flags: 3,
            cs: 0,
            address: 0x2000,
        });
        assert_eq!(
            v.nmi_handler(),
            TrapGate {
                address: 0x2000,
                dpl: 3,
                mask_events: false
            }
        );
        v.set_nmi_handler(0x3000);
        assert_eq!(
            v.nmi_handler(),
            TrapGate {
                address: 0x3000,
                dpl: 0,
                mask_events: true
            }
        );
        assert_eq!(v.traps[2], v.nmi_handler());
        v.set_nmi_handler(0);
        assert_eq!(v.nmi_handler(), TrapGate::default());
    }

    #[test]
    fn debug_registers_refuse_bits_above_31_as_einval() {
        assert_eq!(
            debug::check(7, 0x400 | 1 << 32),
            Err(debug::Refused::Reserved)
        );
        assert_eq!(debug::check(7, 1 << 63), Err(debug::Refused::Reserved));
        assert_eq!(
            debug::check(6, 0xffff_0ff0 | 1 << 32),
            Err(debug::Refused::Reserved)
        );
        assert_eq!(debug::check(7, 1 << 13), Err(debug::Refused::Value), "GD");
        assert_eq!(debug::check(7, 0x401), Ok(0x401));
        assert_eq!(debug::check(6, 0x1), Ok(0xffff_0ff1));
    }

    #[test]
    fn iret_to_kernel_and_user() {
        let frame = IretContext {
            rax: 7,
            r11: 8,
            rcx: 9,
            flags: 0,
            rip: 0x1000,
            cs: 0xe030,
            rflags: 0x3202,
            rsp: 0x2000,
            ss: 0xe02b,
        };
        let t = iret(&frame);
        assert_eq!((t.context.cs, t.context.ss), (0xe019, 0xe039));
        assert_eq!(t.context.rflags, 0x202, "IOPL stripped, IF forced");
        assert_eq!((t.context.rax, t.context.rcx, t.context.r11), (7, 9, 8));
        assert_eq!(t.upcall_mask, 0);
        let user = IretContext {
            cs: 0xe033,
            rflags: 0x2,
            flags: VGCF_IN_SYSCALL,
            ..frame
        };
        let t = iret(&user);
        assert_eq!((t.context.cs, t.context.ss), (0xe033, 0xe02b));
        assert_eq!(t.upcall_mask, 1);
        assert_eq!((t.context.rcx, t.context.r11), (user.rip, t.context.rflags));
        let bad = IretContext {
            rip: 0x8000_0000_0000,
            ..frame
        };
        assert_eq!(iret(&bad).context.rip, bad.rip, "left to the exit check");
    }
}
