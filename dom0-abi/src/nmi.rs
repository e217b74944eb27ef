//! Virtual NMIs: `nmi_op(cmd, arg)`, the NMI callback and
//! `VCPUOP_send_nmi`.
//!
//! Each vCPU has one virtual NMI line: an NMI is *pending* or not (a
//! second one sent while the first is pending is the same NMI), and NMIs
//! are *masked* or not. Who sends one: any vCPU of the domain, to itself
//! or to another, with
//! [`VcpuOpCmd::SendNmi`](crate::vcpu::VcpuOpCmd::SendNmi).
//!
//! # The NMI callback is entry 2 of the virtual IDT
//!
//! The handler is the vCPU's trap-table entry for vector 2, however it was
//! set:
//! - [`NmiOp::RegisterCallback`] and `callback_op` with
//!   [`CallbackType::Nmi`](crate::cpu::CallbackType::Nmi) write entry 2 as
//!   `{ address, DPL 0, mask events }` (`CALLBACKF_mask_events` is
//!   ignored: events are always masked);
//! - `set_trap_table` with an entry for vector 2 sets it like any other,
//!   its flags included (without [`TrapInfo::FLAG_IF`](crate::cpu::TrapInfo::FLAG_IF)
//!   the NMI handler runs with events as they were);
//! - [`NmiOp::UnregisterCallback`], `callback_op` unregister of `nmi`,
//!   and `set_trap_table(NULL)` clear it; `VCPUOP_initialise` sets it from
//!   `trap_ctxt[2]`.
//!
//! Registration is per vCPU, on the calling vCPU only.
//!
//! # Delivery
//!
//! A new NMI wakes a vCPU asleep in `SCHEDOP_block` or `SCHEDOP_poll` (the
//! call returns 0). On every return to a vCPU (after a hypercall, an
//! exception, an interrupt, or when it is switched in), before the event
//! upcall is considered: if an NMI is
//! pending and NMIs are not masked, the NMI stops being pending and
//! - with a handler: NMIs become masked, and the vCPU enters the handler
//!   through a bounce frame without error code (as for an exception; from
//!   user mode on the `stack_switch` stack), the upcall mask set if the
//!   entry says so. The frame shows the interrupted context: after a
//!   hypercall, the instruction after its trap instruction, RAX = the
//!   hypercall's result. An event upcall also pending is taken once the
//!   handler's `iret` unmasks events (with an entry without the IF flag,
//!   at once, on top of the NMI frame);
//! - without a handler: the NMI is dropped (the hypervisor logs it); it is
//!   not delivered when a handler is registered later.
//!
//! NMIs stay masked until the vCPU's next `HYPERVISOR_iret` (any one, from
//! the NMI handler or from a handler it interrupted; a native `iretq` does
//! not unmask them). An NMI sent meanwhile stays pending and is taken on
//! the way out of that `iret`, interrupting the context it returns to.
//!
//! # The NMI reason
//!
//! `shared_info.arch.nmi_reason` holds `XEN_NMIREASON_*` bits, set by the
//! hypervisor for the hardware domain when it passes a hardware NMI on
//! (this hypervisor never does). When vCPU 0 registers an NMI callback
//! (either call) while that word is non-zero, an NMI becomes pending for
//! it, as Xen 4.17 does so that a reason recorded while no handler was
//! registered is not lost. The word is the guest's to clear.

numbered_enum! {
    /// `XENNMI_*`: the `cmd` of `nmi_op` (an `unsigned int`: bits 63:32 of
    /// the register are ignored). Unknown: `ENOSYS`. Any vCPU of any
    /// domain may call it, for itself.
    NmiOp {
        /// `arg`: [`XenNmiCallback`] (IN). Sets the calling vCPU's NMI
        /// callback (see the module documentation); returns 0.
        ///
        /// Errors: `EFAULT` `arg` cannot be read; `EINVAL`
        /// `handler_address` is not canonical (the callback is unchanged).
        RegisterCallback = 0, "register_callback";
        /// `arg` ignored (it is not read). Removes the calling vCPU's NMI
        /// callback; returns 0.
        UnregisterCallback = 1, "unregister_callback";
    }
}

/// `struct xennmi_callback` (16 bytes): the argument of
/// [`NmiOp::RegisterCallback`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XenNmiCallback {
    /// IN: the handler's address (must be canonical: `EINVAL`).
    pub handler_address: u64,
    /// Padding (not read).
    pub pad: u64,
}

/// `XEN_NMIREASON_io_error`: I/O check error (ISA port 0x61, bit 6).
pub const XEN_NMIREASON_IO_ERROR: u64 = 1 << 0;
/// `XEN_NMIREASON_pci_serr`: PCI SERR (ISA port 0x61, bit 7).
pub const XEN_NMIREASON_PCI_SERR: u64 = 1 << 1;
/// `XEN_NMIREASON_unknown`: an unknown hardware NMI.
pub const XEN_NMIREASON_UNKNOWN: u64 = 1 << 2;

/// The trap-table vector that holds the NMI callback.
pub const NMI_VECTOR: u8 = 2;

crate::assert_layout!(XenNmiCallback, 16, { handler_address: 0, pad: 8 });

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        assert_eq!(NmiOp::from_number(1), Some(NmiOp::UnregisterCallback));
        assert_eq!(NmiOp::from_number(2), None);
        assert_eq!(
            (
                XEN_NMIREASON_IO_ERROR,
                XEN_NMIREASON_PCI_SERR,
                XEN_NMIREASON_UNKNOWN
            ),
            (1, 2, 4)
        );
    }
}
