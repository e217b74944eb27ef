//! `vcpu_op(cmd, vcpuid, arg)`: bringing vCPUs up and down, timers,
//! runstate and `vcpu_info` placement.
//!
//! `vcpuid` names a vCPU of the calling domain; it is an `unsigned int`, so
//! bits 63:32 of the register are ignored (`0x1_0000_0001` is vCPU 1). The
//! id is checked before `cmd`: a vCPU the domain does not have (`vcpuid >=
//! max_vcpus`, e.g. from `dom0_max_vcpus=`) is `ENOENT` for every `cmd`,
//! unknown ones included. Then: unknown `cmd` `ENOSYS`; unreadable or
//! unwritable `arg` `EFAULT`. Timer and `vcpu_info` operations act on the
//! caller's own vCPUs; `initialise`, `up`, `down`, `is_up`,
//! `get_runstate_info` and `send_nmi` on any vCPU of the domain, the caller
//! included.
//!
//! The vCPUs of a domain other than vCPU 0 exist from its creation, down
//! and uninitialised (runstate `offline`, never run).

numbered_enum! {
    /// `VCPUOP_*`: the `cmd` of `vcpu_op`.
    VcpuOpCmd {
        /// `arg`: [`VcpuGuestContext`](crate::cpu::VcpuGuestContext) (IN).
        /// Gives a vCPU that was never initialised its first state; it
        /// stays down until [`VcpuOpCmd::Up`].
        ///
        /// Errors: `ENOENT` no such vCPU; `EFAULT` the context cannot be
        /// read; `EEXIST` the vCPU is initialised (also while it is down,
        /// and for the caller itself); `EINVAL` a bad context, e.g. a
        /// non-canonical RIP, `kernel_sp` or event callback, more GDT
        /// entries than
        /// [`FIRST_RESERVED_GDT_ENTRY`](crate::segment::FIRST_RESERVED_GDT_ENTRY)
        /// or more than 8192 LDT entries. A refused context leaves the vCPU
        /// uninitialised.
        ///
        /// How the context is taken, the contract for 64-bit PV kernels on
        /// Xen and on this hypervisor:
        /// - `flags` has `VGCF_in_kernel`: the vCPU starts in kernel mode.
        ///   `user_regs.cs`/`ss` hold Xen's flat kernel selectors,
        ///   [`FLAT_KERNEL_CS`](crate::segment::FLAT_KERNEL_CS) (0xe033)
        ///   and [`FLAT_KERNEL_SS`](crate::segment::FLAT_KERNEL_SS)
        ///   (0xe02b), as for Xen's ring-3 kernels. This hypervisor runs
        ///   kernels in ring 1: with `VGCF_in_kernel` it loads its own
        ///   [`RING1_KERNEL_CS`](crate::segment::RING1_KERNEL_CS) and
        ///   [`RING1_KERNEL_SS`](crate::segment::RING1_KERNEL_SS) instead.
        ///   Either way the new vCPU runs with the CS and SS vCPU 0 has,
        ///   also when the context gives them with RPL 0 (0xe030, 0xe028:
        ///   Xen forces RPL 3).
        /// - RIP, RSP and every general register come from `user_regs`
        ///   as given (RCX and R11 included); RFLAGS too, with IF forced
        ///   on. DS, ES, FS and GS are loaded from `user_regs`, then the
        ///   `fs_base`, `gs_base_kernel` and `gs_base_user` bases.
        /// - `ctrlreg[3]` is the kernel L4 as `mfn << 12`, `ctrlreg[1]` the
        ///   user L4 (0: none); `trap_ctxt` (indexed by vector), the
        ///   callbacks and `kernel_ss`/`kernel_sp` act as
        ///   `set_trap_table`, `callback_op` and `stack_switch` would;
        ///   `gdt_ents` 0 means the hypervisor's default GDT.
        /// - Without `VGCF_i387_valid` the vCPU gets the default FPU state
        ///   (FCW 0x37f, MXCSR 0x1f80). On Xen its XCR0 starts as x87|SSE:
        ///   each vCPU enables AVX state itself (CR4.OSXSAVE, `xsetbv`).
        /// - `vcpu_info[vcpuid]` is not touched: the kernel sets its
        ///   `evtchn_upcall_mask` before `up`.
        Initialise = 0, "initialise";
        /// Starts an initialised vCPU, or resumes a downed one exactly
        /// where it stopped (its saved context, not the initial one).
        /// `EINVAL`: not initialised. 0 if it is already up.
        Up = 1, "up";
        /// Stops a vCPU: the caller itself (the call returns 0 when another
        /// vCPU brings it up again) or any other, vCPU 0 included. 0 if it
        /// is already down. The last vCPU that is up going down shuts the
        /// domain down with `SHUTDOWN_poweroff`.
        Down = 2, "down";
        /// Returns 1 if the vCPU is up, else 0 (also when it was never
        /// initialised).
        IsUp = 3, "is_up";
        /// `arg`: [`VcpuRunstateInfo`] (OUT), of any vCPU of the domain.
        /// `state` is the current `RUNSTATE_*` (the caller sees itself
        /// `running`); `state_entry_time` is the system time the state was
        /// entered; `time[]` are the ns spent in each state since the
        /// vCPU was created, the current state counted up to the call.
        GetRunstateInfo = 4, "get_runstate_info";
        /// `arg`: guest pointer to a `u64`, the guest address of a
        /// [`VcpuRunstateInfo`] the hypervisor keeps updated for vCPU
        /// `vcpuid` (any vCPU of the domain; 0 stops the updates). The
        /// record is written at once, through the caller's page tables
        /// (the caller's own: `time[]` without the running period, which
        /// the guest adds from `state_entry_time`; another vCPU's: as
        /// [`VcpuOpCmd::GetRunstateInfo`] gives it), and again whenever
        /// the vCPU is switched out or in. With
        /// [`crate::mmu::VmAssistType::RunstateUpdateFlag`] enabled, bit
        /// 63 of `state_entry_time` ([`XEN_RUNSTATE_UPDATE`]) is set
        /// while a rewrite is under way. Faults writing the area are
        /// ignored (it stays registered).
        ///
        /// Errors: `EFAULT` `arg` unreadable, or the area reaches into the
        /// hypervisor's range.
        RegisterRunstateMemoryArea = 5, "register_runstate_memory_area";
        /// `arg`: [`VcpuSetPeriodicTimer`] (IN). Any vCPU of the domain:
        /// `VIRQ_TIMER` every `period_ns`, and at once if a period has
        /// passed since its last periodic event. `EFAULT`: unreadable;
        /// `EINVAL`: period < 1 ms or > 2^62 ns.
        SetPeriodicTimer = 6, "set_periodic_timer";
        /// Stops vCPU `vcpuid`'s periodic timer (a PV vCPU starts with one
        /// of 10 ms); `arg` ignored.
        StopPeriodicTimer = 7, "stop_periodic_timer";
        /// `arg`: [`VcpuSetSingleshotTimer`] (IN). Own vCPU only (`EINVAL`,
        /// checked before `arg` is read; `EFAULT`: unreadable). Arms the
        /// one-shot timer `set_timer_op` also sets; a past deadline
        /// replaces the armed one and fires at once
        /// (`VCPU_SSHOTTMR_future` is ignored, as in Xen 4.17).
        SetSingleshotTimer = 8, "set_singleshot_timer";
        /// Stops the one-shot timer (also `set_timer_op`'s). Own vCPU only
        /// (`EINVAL`); `arg` ignored.
        StopSingleshotTimer = 9, "stop_singleshot_timer";
        /// `arg`: [`VcpuRegisterVcpuInfo`] (IN). Moves vCPU `vcpuid`'s
        /// `vcpu_info` to byte `offset` of the domain's frame `mfn`, once
        /// per vCPU, for the caller itself or a vCPU that is down. The old
        /// contents are copied there, `evtchn_pending_sel` is set to all
        /// ones and `evtchn_upcall_pending` raised, so that the guest
        /// rescans its ports. The frame is held writable until the domain
        /// goes.
        ///
        /// Errors: `ENXIO` the 64 bytes do not fit the page, or `offset`
        /// is not 8-aligned; `EINVAL` already moved, another vCPU that is
        /// up, or a frame that is not the domain's or cannot be writable
        /// (a page table); `EFAULT` `arg` unreadable.
        RegisterVcpuInfo = 10, "register_vcpu_info";
        /// `arg`: must be NULL. Makes an NMI pending for the vCPU (any vCPU
        /// of the domain: the caller, another one, one down or never
        /// initialised); returns 0. One already pending absorbs it. The
        /// vCPU takes it the next time it returns to the guest (the
        /// caller: on the way out of this call), unless NMIs are masked
        /// there; a vCPU asleep in `SCHEDOP_block` or `SCHEDOP_poll` wakes
        /// for a new one (its call returns 0). See [`crate::nmi`] for the
        /// handler, the frame and the masking.
        ///
        /// Errors: `ENOENT` no such vCPU (checked first); `EINVAL` `arg`
        /// is not NULL (nothing is sent).
        SendNmi = 11, "send_nmi";
        /// Physical CPU id (hardware domain).
        GetPhysid = 12, "get_physid";
        /// Registers a guest copy of `vcpu_time_info`.
        RegisterVcpuTimeMemoryArea = 13, "register_vcpu_time_memory_area";
    }
}

/// `RUNSTATE_running`: the vCPU is on a physical CPU.
pub const RUNSTATE_RUNNING: i32 = 0;
/// `RUNSTATE_runnable`: ready but not running.
pub const RUNSTATE_RUNNABLE: i32 = 1;
/// `RUNSTATE_blocked`: waiting for an event.
pub const RUNSTATE_BLOCKED: i32 = 2;
/// `RUNSTATE_offline`: down or paused.
pub const RUNSTATE_OFFLINE: i32 = 3;
/// Bit 63 of `state_entry_time`: update in progress (with the
/// `runstate_update_flag` assist).
pub const XEN_RUNSTATE_UPDATE: u64 = 1 << 63;
/// `VCPU_SSHOTTMR_future`: fail if the deadline has passed (ignored by 4.17).
pub const VCPU_SSHOTTMR_FUTURE: u32 = 1;

/// `struct vcpu_runstate_info` (48 bytes), all `[HV]`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuRunstateInfo {
    /// Current `RUNSTATE_*`.
    pub state: i32,
    /// Padding.
    pub pad: u32,
    /// System time (ns) when the state was entered.
    pub state_entry_time: u64,
    /// Time spent in each state (ns).
    pub time: [u64; 4],
}

/// `struct vcpu_set_periodic_timer` (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuSetPeriodicTimer {
    /// IN: period in ns (>= 1 ms).
    pub period_ns: u64,
}

/// `struct vcpu_set_singleshot_timer` (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuSetSingleshotTimer {
    /// IN: absolute system time (ns) to fire at.
    pub timeout_abs_ns: u64,
    /// IN: `VCPU_SSHOTTMR_*` flags.
    pub flags: u32,
    /// Padding.
    pub pad: u32,
}

/// `struct vcpu_register_vcpu_info` (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VcpuRegisterVcpuInfo {
    /// IN: MFN of the page to hold the `vcpu_info`.
    pub mfn: u64,
    /// IN: offset in that page.
    pub offset: u32,
    /// Reserved (zero).
    pub rsvd: u32,
}

crate::assert_layout!(VcpuRunstateInfo, 48, { state: 0, pad: 4, state_entry_time: 8, time: 16 });
crate::assert_layout!(VcpuSetPeriodicTimer, 8, { period_ns: 0 });
crate::assert_layout!(VcpuSetSingleshotTimer, 16, { timeout_abs_ns: 0, flags: 8, pad: 12 });
crate::assert_layout!(VcpuRegisterVcpuInfo, 16, { mfn: 0, offset: 8, rsvd: 12 });
