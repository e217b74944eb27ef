//! `vcpu_op(cmd, vcpuid, arg)`: bringing vCPUs up and down, timers,
//! runstate and `vcpu_info` placement.
//!
//! `vcpuid` names a vCPU of the calling domain (`ENOENT` if it has none by
//! that number). Timer and `vcpu_info` operations act on the caller's own
//! vCPUs. Unknown `cmd`: `ENOSYS`; unreadable `arg`: `EFAULT`.

numbered_enum! {
    /// `VCPUOP_*`: the `cmd` of `vcpu_op`.
    VcpuOpCmd {
        /// `arg`: [`VcpuGuestContext`](crate::cpu::VcpuGuestContext) (IN).
        /// Sets the initial state of a vCPU that is down. `EEXIST`: already
        /// initialised; `EINVAL`: bad context.
        Initialise = 0, "initialise";
        /// Starts an initialised vCPU. `EINVAL`: not initialised.
        Up = 1, "up";
        /// Stops a vCPU; the last one going down powers the domain off.
        Down = 2, "down";
        /// Returns 1 if the vCPU is up, else 0.
        IsUp = 3, "is_up";
        /// `arg`: [`VcpuRunstateInfo`] (OUT).
        GetRunstateInfo = 4, "get_runstate_info";
        /// `arg`: guest pointer to a [`VcpuRunstateInfo`] the hypervisor
        /// keeps updated.
        RegisterRunstateMemoryArea = 5, "register_runstate_memory_area";
        /// `arg`: [`VcpuSetPeriodicTimer`] (IN). `EINVAL`: period < 1 ms.
        SetPeriodicTimer = 6, "set_periodic_timer";
        /// Stops the periodic timer (default 10 ms for PV).
        StopPeriodicTimer = 7, "stop_periodic_timer";
        /// `arg`: [`VcpuSetSingleshotTimer`] (IN). Own vCPU only (`EINVAL`).
        /// A past deadline fires at once (`VCPU_SSHOTTMR_future` is ignored).
        SetSingleshotTimer = 8, "set_singleshot_timer";
        /// Stops the single-shot timer.
        StopSingleshotTimer = 9, "stop_singleshot_timer";
        /// `arg`: [`VcpuRegisterVcpuInfo`] (IN). Moves `vcpu_info` to guest
        /// memory, once per vCPU (`EINVAL` again); `ENXIO` if it does not
        /// fit the page. Sets `pending_sel` to all ones and raises
        /// `upcall_pending`.
        RegisterVcpuInfo = 10, "register_vcpu_info";
        /// Sends an NMI to the vCPU.
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
