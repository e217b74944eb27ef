//! `event_channel_op(cmd, arg)`: event channels (2-level ABI, FIFO numbers).
//!
//! A port is a per-domain number; port 0 is never allocated, new ports are
//! the lowest free one from 1. Delivery uses the `evtchn_pending`,
//! `evtchn_mask` and `evtchn_pending_sel` bits of
//! [`SharedInfo`](crate::shared_info::SharedInfo):
//!
//! 1. `[HV]` sets `pending[P]`; if it was already set, nothing more.
//! 2. If `mask[P]` is clear and the vCPU's selector bit `P / 64` was clear,
//!    `[HV]` sets it and `evtchn_upcall_pending`, and kicks the vCPU.
//! 3. `[GUEST]` upcall: clear `evtchn_upcall_pending`, exchange the selector
//!    with 0, and for each set bit handle the unmasked pending ports,
//!    clearing their pending bits.
//!
//! Unmasking (`EVTCHNOP_unmask` or by hand) re-raises a port that became
//! pending while masked.

numbered_enum! {
    /// `EVTCHNOP_*`: the `cmd` of `event_channel_op`. Unknown: `ENOSYS`.
    /// `EFAULT` whenever `arg` cannot be read or written back.
    EvtchnOp {
        /// [`EvtchnBindInterdomain`]: connect to an unbound port of another
        /// domain (or of the caller itself) whose remote is the caller; the
        /// new local port starts pending. `ESRCH` no such domain, `ENOSPC`
        /// no free port, `EINVAL` bad remote port or state.
        BindInterdomain = 0, "bind_interdomain";
        /// [`EvtchnBindVirq`]: bind a VIRQ on a vCPU. `EINVAL` bad VIRQ or
        /// vCPU (a global VIRQ needs vCPU 0), `EEXIST` already bound,
        /// `ENOENT` no such vCPU.
        BindVirq = 1, "bind_virq";
        /// [`EvtchnBindPirq`] (IN `pirq`, `flags`; OUT `port`): any domain,
        /// of its own mapped PIRQs whose GSI it may use; the port notifies
        /// vCPU 0. `EINVAL`: `pirq` at or above `nr_pirqs`; `EPERM`: not
        /// mapped, or the GSI not permitted; `EEXIST`: already bound;
        /// `ENOSPC`: no free port; `EBUSY`: the hypervisor uses the line
        /// or another domain has it bound.
        BindPirq = 2, "bind_pirq";
        /// [`EvtchnPortArg`]: close a port (the peer of an interdomain port
        /// becomes unbound; the closed port's pending bit is cleared, its
        /// mask bit kept). `EINVAL` bad, free or reserved port.
        Close = 3, "close";
        /// [`EvtchnPortArg`]: notify the other end (an IPI port: its vCPU).
        /// Unbound ports drop the notification (returns 0); `EINVAL` bad
        /// port, or a VIRQ, PIRQ, free or reserved one.
        Send = 4, "send";
        /// [`EvtchnStatus`]: describe a port. `ESRCH`/`EPERM` bad domain,
        /// `EINVAL` bad port.
        Status = 5, "status";
        /// [`EvtchnAllocUnbound`]: allocate a port that `remote_dom` may
        /// bind to (not checked to exist; `DOMID_SELF` is the caller).
        /// `ESRCH` bad `dom`, `ENOSPC`, `EPERM`.
        AllocUnbound = 6, "alloc_unbound";
        /// [`EvtchnBindIpi`]: a port notifying a vCPU of the same domain.
        /// `ENOENT` no such vCPU.
        BindIpi = 7, "bind_ipi";
        /// [`EvtchnBindVcpu`]: deliver a port to another vCPU (unbound,
        /// interdomain, PIRQ and global-VIRQ ports only; bits already set
        /// stay). `ENOENT` no such vCPU, `EINVAL` bad port or binding.
        BindVcpu = 8, "bind_vcpu";
        /// [`EvtchnPortArg`]: clear the mask bit; if it was set and the
        /// port is pending, re-raise it. `EINVAL` bad port.
        Unmask = 9, "unmask";
        /// [`EvtchnReset`]: close all ports of a domain (back to 2-level).
        /// `ESRCH` no such domain.
        Reset = 10, "reset";
        /// [`EvtchnInitControl`]: switch to the FIFO ABI. `ENOENT` no such
        /// vCPU, `EINVAL` offset past the page or not 8-byte aligned, or a
        /// bad frame; `link_bits` is written only on success.
        InitControl = 11, "init_control";
        /// [`EvtchnExpandArray`]: add a FIFO event-word page
        /// (`EOPNOTSUPP` on a 2-level domain).
        ExpandArray = 12, "expand_array";
        /// [`EvtchnSetPriority`]: FIFO priority of a port (`ENOSYS` on a
        /// 2-level domain, after `EINVAL` for a bad port).
        SetPriority = 13, "set_priority";
        /// Continuation of `reset` (`EBUSY` when none is under way).
        ResetCont = 14, "reset_cont";
    }
}

numbered_enum! {
    /// `EVTCHNSTAT_*`: [`EvtchnStatus::status`].
    EvtchnStat {
        /// Not in use.
        Closed = 0, "closed";
        /// Waiting for an interdomain connection.
        Unbound = 1, "unbound";
        /// Connected to a remote domain.
        Interdomain = 2, "interdomain";
        /// Bound to a physical IRQ.
        Pirq = 3, "pirq";
        /// Bound to a VIRQ.
        Virq = 4, "virq";
        /// Bound to an IPI.
        Ipi = 5, "ipi";
    }
}

numbered_enum! {
    /// `VIRQ_*`: virtual interrupts (V = per vCPU, G = global, bound on
    /// vCPU 0 first).
    Virq {
        /// V: timer tick or requested timeout.
        Timer = 0, "TIMER";
        /// V: dump debug information.
        Debug = 1, "DEBUG";
        /// G (dom0): input arrived on the hypervisor's serial console:
        /// [`ConsoleIoCmd::Read`](crate::console::ConsoleIoCmd::Read)
        /// returns it. Raised for the hardware domain only, at least once
        /// after any input arrives (even input its full ring drops), with
        /// no count: read until nothing is left.
        Console = 2, "CONSOLE";
        /// G (dom0): something happened to a domain.
        DomExc = 3, "DOM_EXC";
        /// G (dom0): trace buffer records available.
        Tbuf = 4, "TBUF";
        /// G (dom0): a domain paused for debugging.
        Debugger = 6, "DEBUGGER";
        /// V: profiling sample available.
        Xenoprof = 7, "XENOPROF";
        /// G (dom0): bytes in the console ring.
        ConRing = 8, "CON_RING";
        /// G (dom0): physical CPU state changed.
        PcpuState = 9, "PCPU_STATE";
        /// G (dom0): memory event.
        MemEvent = 10, "MEM_EVENT";
        /// G: Argo message.
        Argo = 11, "ARGO";
        /// G (dom0): hypervisor low on memory.
        Enomem = 12, "ENOMEM";
        /// V: performance counter interrupt.
        Xenpmu = 13, "XENPMU";
        /// Architecture-specific 0.
        Arch0 = 16, "ARCH_0";
        /// Architecture-specific 1.
        Arch1 = 17, "ARCH_1";
        /// Architecture-specific 2.
        Arch2 = 18, "ARCH_2";
        /// Architecture-specific 3.
        Arch3 = 19, "ARCH_3";
        /// Architecture-specific 4.
        Arch4 = 20, "ARCH_4";
        /// Architecture-specific 5.
        Arch5 = 21, "ARCH_5";
        /// Architecture-specific 6.
        Arch6 = 22, "ARCH_6";
        /// Architecture-specific 7.
        Arch7 = 23, "ARCH_7";
    }
}

/// Number of VIRQ numbers (`NR_VIRQS`).
pub const NR_VIRQS: u32 = 24;
/// `BIND_PIRQ__WILL_SHARE`: the PIRQ may be shared.
pub const BIND_PIRQ_WILL_SHARE: u32 = 1;

/// `struct evtchn_bind_interdomain` (12 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnBindInterdomain {
    /// IN: the remote domain.
    pub remote_dom: u16,
    /// Padding.
    pub pad: u16,
    /// IN: its unbound port.
    pub remote_port: u32,
    /// OUT: the new local port.
    pub local_port: u32,
}

/// `struct evtchn_bind_virq` (12 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnBindVirq {
    /// IN: the [`Virq`].
    pub virq: u32,
    /// IN: the vCPU.
    pub vcpu: u32,
    /// OUT: the new port.
    pub port: u32,
}

/// `struct evtchn_bind_pirq` (12 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnBindPirq {
    /// IN: the PIRQ.
    pub pirq: u32,
    /// IN: [`BIND_PIRQ_WILL_SHARE`] or 0.
    pub flags: u32,
    /// OUT: the new port.
    pub port: u32,
}

/// `struct evtchn_close` / `evtchn_send` / `evtchn_unmask` (4 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnPortArg {
    /// IN: the port.
    pub port: u32,
}

/// `struct evtchn_status` (24 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnStatus {
    /// IN: the domain (`DOMID_SELF` allowed).
    pub dom: u16,
    /// Padding.
    pub pad: u16,
    /// IN: the port.
    pub port: u32,
    /// OUT: an [`EvtchnStat`] number.
    pub status: u32,
    /// OUT: the vCPU it is delivered to.
    pub vcpu: u32,
    /// OUT: per-status detail: unbound `{dom: u16}`; interdomain
    /// `{dom: u16 @0, port: u32 @4}`; pirq `u32`; virq `u32`.
    pub u: [u32; 2],
}

/// `struct evtchn_alloc_unbound` (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnAllocUnbound {
    /// IN: the domain to allocate in (`DOMID_SELF`).
    pub dom: u16,
    /// IN: the domain allowed to bind.
    pub remote_dom: u16,
    /// OUT: the new port.
    pub port: u32,
}

/// `struct evtchn_bind_ipi` (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnBindIpi {
    /// IN: the vCPU to notify.
    pub vcpu: u32,
    /// OUT: the new port.
    pub port: u32,
}

/// `struct evtchn_bind_vcpu` (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnBindVcpu {
    /// IN: the port.
    pub port: u32,
    /// IN: the vCPU to deliver it to.
    pub vcpu: u32,
}

/// `struct evtchn_reset` (2 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnReset {
    /// IN: the domain.
    pub dom: u16,
}

/// `struct evtchn_init_control` (24 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnInitControl {
    /// IN: frame of the control block.
    pub control_gfn: u64,
    /// IN: offset of the control block in the frame.
    pub offset: u32,
    /// IN: the vCPU.
    pub vcpu: u32,
    /// OUT: number of link bits (17).
    pub link_bits: u8,
    /// Padding.
    pub pad: [u8; 7],
}

/// `struct evtchn_expand_array` (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnExpandArray {
    /// IN: frame of the new event-word page.
    pub array_gfn: u64,
}

/// `struct evtchn_set_priority` (8 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnSetPriority {
    /// IN: the port.
    pub port: u32,
    /// IN: the priority (0 highest, 15 lowest, default 7).
    pub priority: u32,
}

/// `struct evtchn_op` (28 bytes): the argument of the legacy
/// `event_channel_op_compat`, a command and its structure (the union of
/// the structures of commands 0-9, at offset 4).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EvtchnOpCompat {
    /// An [`EvtchnOp`] number; only commands 0-9 are accepted.
    pub cmd: u32,
    /// The command's structure.
    pub u: [u32; 6],
}

/// Offset of [`EvtchnOpCompat::u`]: where the command's structure starts.
pub const EVTCHN_OP_COMPAT_ARG: u64 = 4;

crate::assert_layout!(EvtchnOpCompat, 28, { cmd: 0, u: 4 });
crate::assert_layout!(EvtchnBindInterdomain, 12, {
    remote_dom: 0, pad: 2, remote_port: 4, local_port: 8,
});
crate::assert_layout!(EvtchnBindVirq, 12, { virq: 0, vcpu: 4, port: 8 });
crate::assert_layout!(EvtchnBindPirq, 12, { pirq: 0, flags: 4, port: 8 });
crate::assert_layout!(EvtchnPortArg, 4, { port: 0 });
crate::assert_layout!(EvtchnStatus, 24, { dom: 0, pad: 2, port: 4, status: 8, vcpu: 12, u: 16 });
crate::assert_layout!(EvtchnAllocUnbound, 8, { dom: 0, remote_dom: 2, port: 4 });
crate::assert_layout!(EvtchnBindIpi, 8, { vcpu: 0, port: 4 });
crate::assert_layout!(EvtchnBindVcpu, 8, { port: 0, vcpu: 4 });
crate::assert_layout!(EvtchnReset, 2, { dom: 0 });
crate::assert_layout!(EvtchnInitControl, 24, {
    control_gfn: 0, offset: 8, vcpu: 12, link_bits: 16, pad: 17,
});
crate::assert_layout!(EvtchnExpandArray, 8, { array_gfn: 0 });
crate::assert_layout!(EvtchnSetPriority, 8, { port: 0, priority: 4 });
