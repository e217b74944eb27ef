//! CPU virtualisation: virtual IDT, callbacks, bounce frames, `iret`,
//! segment bases and the vCPU context.
//!
//! # How the hypervisor enters the guest kernel
//!
//! Exceptions, `INT n` and events are delivered as *bounce frames* on the
//! guest kernel stack (the `stack_switch` stack if the vCPU was in user
//! mode, the current stack otherwise, aligned down to 16 bytes). From the
//! new RSP upward (each slot 8 bytes), see [`BounceFrame`]:
//! `RCX, R11, [error code], RIP, CS, RFLAGS, RSP, SS`.
//! - Bits 32-39 of the CS slot hold the saved `evtchn_upcall_mask`; RFLAGS.IF
//!   shows `!saved_mask`.
//! - The handler starts with the kernel CS/SS, TF/NT/RF/VM/AC clear, and the
//!   upcall mask set if the trap has [`TrapInfo::FLAG_IF`] or it is an event
//!   upcall. For a page fault, CR2 is in `vcpu_info.arch.cr2`.
//! - Handlers pop RCX and R11 first; the rest looks like a hardware frame.
//!
//! # Difference from Xen
//!
//! On Xen the kernel runs in ring 3 and kernel-mode frames show CS with RPL
//! 0 (0xe030); here the kernel runs in ring 1 and frames show the real
//! [`RING1_KERNEL_CS`](crate::segment::RING1_KERNEL_CS) (0xe019). User
//! frames show 0xe033 or 0xe023 on both. Test `CS & 2` to tell user from
//! kernel ([`is_user_cs`](crate::segment::is_user_cs)). A ring-1 kernel may
//! also return with a native `iretq` (to itself or to user mode); `iret`
//! ([`IretContext`]) works as on Xen, with RPL 0 or 1 meaning kernel.
//!
//! Errors of the hypercalls here are listed on
//! [`Hypercall`](crate::hypercall::Hypercall).

use bitflags::bitflags;

/// `struct trap_info` (16 bytes): one virtual IDT entry for
/// `set_trap_table`. An entry with `address == 0` ends the array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrapInfo {
    /// IN: exception or interrupt vector.
    pub vector: u8,
    /// IN: bits 1:0 = DPL (who may `INT n` it: 0 nobody, 1-2 kernel, 3
    /// everyone); [`TrapInfo::FLAG_IF`] = mask events on entry.
    pub flags: u8,
    /// IN: code selector; ignored for 64-bit PV (the kernel CS is used).
    pub cs: u16,
    /// IN: handler address (must be canonical: `EINVAL`).
    pub address: u64,
}

impl TrapInfo {
    /// Mask of the DPL bits in [`TrapInfo::flags`].
    pub const FLAG_DPL_MASK: u8 = 3;
    /// Interrupt-gate semantics: set `evtchn_upcall_mask` on delivery.
    pub const FLAG_IF: u8 = 4;

    /// The DPL part of `flags`.
    #[must_use]
    pub const fn dpl(&self) -> u8 {
        self.flags & Self::FLAG_DPL_MASK
    }

    /// Whether delivery masks events.
    #[must_use]
    pub const fn masks_events(&self) -> bool {
        self.flags & Self::FLAG_IF != 0
    }
}

numbered_enum! {
    /// `CALLBACKOP_*`: the `cmd` of `callback_op` (a C `int`: bits 63:32
    /// of the register are ignored). Unknown: `ENOSYS`.
    CallbackOp {
        /// `arg`: [`CallbackRegister`] (IN).
        Register = 0, "register";
        /// `arg`: [`CallbackUnregister`] (IN). Only `nmi` may be
        /// unregistered (trap-table entry 2 is cleared, however it was
        /// set); other known types give `EINVAL`.
        Unregister = 1, "unregister";
    }
}

numbered_enum! {
    /// `CALLBACKTYPE_*`: which entry point a callback is. Unknown: `ENOSYS`.
    CallbackType {
        /// Event-channel upcall (always masks events).
        Event = 0, "event";
        /// Failsafe: the hypervisor could not load the guest's segment
        /// registers on return (frame: RCX, R11, DS, ES, FS, GS, RIP, CS,
        /// RFLAGS, RSP, SS).
        Failsafe = 1, "failsafe";
        /// 64-bit `SYSCALL` from guest user mode.
        Syscall = 2, "syscall";
        /// Old number of `sysenter` (kept for compatibility).
        SysenterDeprecated = 3, "sysenter_deprecated";
        /// NMI: writes the calling vCPU's trap-table entry 2 (DPL 0,
        /// always masking events); may be unregistered. On vCPU 0 with a
        /// non-zero `shared_info.arch.nmi_reason` it also makes an NMI
        /// pending. See [`crate::nmi`].
        Nmi = 4, "nmi";
        /// `SYSENTER` from 32-bit user code.
        Sysenter = 5, "sysenter";
        /// 32-bit `SYSCALL` from compat user code.
        Syscall32 = 7, "syscall32";
    }
}

bitflags! {
    /// `CALLBACKF_*`: [`CallbackRegister::flags`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct CallbackFlags: u16 {
        /// Mask events on entry (ignored for `event` and `nmi`, which
        /// always mask).
        const MASK_EVENTS = 1 << 0;
    }
}

/// `struct callback_register` (16 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallbackRegister {
    /// IN: a [`CallbackType`] number.
    pub kind: u16,
    /// IN: [`CallbackFlags`].
    pub flags: u16,
    /// Padding.
    pub pad: u32,
    /// IN: entry address (must be canonical: `EINVAL`, checked before the
    /// type).
    pub address: u64,
}

/// `struct callback_unregister` (4 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallbackUnregister {
    /// IN: a [`CallbackType`] number.
    pub kind: u16,
    /// Padding.
    pub unused: u16,
}

/// `VGCF_in_syscall` (bit 8) in [`IretContext::flags`]: return the SYSRET
/// way, discarding RCX, R11, CS and SS from the frame.
pub const VGCF_IN_SYSCALL: u64 = 1 << 8;

bitflags! {
    /// `VGCF_*`: [`VcpuGuestContext::flags`].
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct VgcfFlags: u64 {
        /// `fpu_ctxt` holds valid FPU state.
        const I387_VALID = 1 << 0;
        /// The vCPU is in kernel mode.
        const IN_KERNEL = 1 << 2;
        /// The failsafe callback masks events.
        const FAILSAFE_DISABLES_EVENTS = 1 << 3;
        /// The syscall callback masks events.
        const SYSCALL_DISABLES_EVENTS = 1 << 4;
        /// The vCPU is online.
        const ONLINE = 1 << 5;
    }
}

/// `VGCF_i387_valid` as a raw value.
pub const VGCF_I387_VALID: u64 = VgcfFlags::I387_VALID.bits();
/// `VGCF_in_kernel` as a raw value.
pub const VGCF_IN_KERNEL: u64 = VgcfFlags::IN_KERNEL.bits();
/// `VGCF_failsafe_disables_events` as a raw value.
pub const VGCF_FAILSAFE_DISABLES_EVENTS: u64 = VgcfFlags::FAILSAFE_DISABLES_EVENTS.bits();
/// `VGCF_syscall_disables_events` as a raw value.
pub const VGCF_SYSCALL_DISABLES_EVENTS: u64 = VgcfFlags::SYSCALL_DISABLES_EVENTS.bits();
/// `VGCF_online` as a raw value.
pub const VGCF_ONLINE: u64 = VgcfFlags::ONLINE.bits();

/// `struct iret_context` (72 bytes): what `HYPERVISOR_iret` finds at RSP.
///
/// The guest pushes `ss, rsp, rflags, cs, rip, flags` (a hardware-style
/// frame plus `flags`) and jumps to slot 23, whose stub pushes `rcx`, `r11`,
/// `rax`. All fields IN.
///
/// The hypervisor then:
/// - returns to user mode if `cs & 3 == 3` (else to kernel mode);
/// - forces the loaded CS and SS to the right RPL (3 for user; here 1 for
///   kernel);
/// - strips IOPL and VM from RFLAGS and forces IF on; sets
///   `evtchn_upcall_mask = !rflags.IF`;
/// - restores RAX; restores RCX and R11 unless `flags` has
///   [`VGCF_IN_SYSCALL`].
///
/// A frame that cannot be read crashes the domain. A non-canonical RIP or
/// RSP is loaded as given: the return then raises the #GP or #SS the CPU
/// would, delivered to the guest's handler (as on Xen).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IretContext {
    /// RAX to restore (pushed by the stub).
    pub rax: u64,
    /// R11 to restore (pushed by the stub).
    pub r11: u64,
    /// RCX to restore (pushed by the stub).
    pub rcx: u64,
    /// `VGCF_IN_SYSCALL` or 0 (pushed by the guest).
    pub flags: u64,
    /// Return address.
    pub rip: u64,
    /// Return code segment.
    pub cs: u64,
    /// Return flags.
    pub rflags: u64,
    /// Return stack pointer.
    pub rsp: u64,
    /// Return stack segment.
    pub ss: u64,
}

/// Shift of the saved `evtchn_upcall_mask` in a bounce frame's CS slot.
pub const BOUNCE_CS_SAVED_MASK_SHIFT: u32 = 32;

/// The bounce frame for an exception without error code, an `INT n` or an
/// event (56 bytes, lowest address first). With an error code, a `u64`
/// error code sits between `r11` and `rip`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BounceFrame {
    /// Interrupted RCX.
    pub rcx: u64,
    /// Interrupted R11.
    pub r11: u64,
    /// Interrupted RIP.
    pub rip: u64,
    /// Interrupted CS in bits 15:0, saved upcall mask in bits 39:32.
    pub cs: u64,
    /// Interrupted RFLAGS (IF = !saved mask).
    pub rflags: u64,
    /// Interrupted RSP.
    pub rsp: u64,
    /// Interrupted SS.
    pub ss: u64,
}

impl BounceFrame {
    /// The interrupted CS selector.
    #[must_use]
    pub const fn cs_selector(&self) -> u16 {
        (self.cs & 0xFFFF) as u16
    }

    /// The upcall mask saved when the frame was built.
    #[must_use]
    pub const fn saved_upcall_mask(&self) -> u8 {
        ((self.cs >> BOUNCE_CS_SAVED_MASK_SHIFT) & 0xFF) as u8
    }
}

numbered_enum! {
    /// `SEGBASE_*`: the `which` argument of `set_segment_base`. Other:
    /// `EINVAL`.
    SegmentBase {
        /// Set the FS base.
        Fs = 0, "FS";
        /// Set the user-mode GS base.
        GsUser = 1, "GS_USER";
        /// Set the kernel-mode GS base.
        GsKernel = 2, "GS_KERNEL";
        /// Load the user GS selector from `base[15:0]` (a bad selector
        /// loads the null selector instead; the call still returns 0).
        GsUserSel = 3, "GS_USER_SEL";
    }
}

/// The forced-emulation prefix `ud2; .ascii "xen"`: followed by `cpuid`,
/// the hypervisor emulates CPUID with the guest's policy.
pub const XEN_EMULATE_PREFIX: [u8; 5] = [0x0F, 0x0B, 0x78, 0x65, 0x6E];

/// `struct cpu_user_regs` (x86-64, 200 bytes): guest registers in a
/// [`VcpuGuestContext`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuUserRegs {
    /// R15.
    pub r15: u64,
    /// R14.
    pub r14: u64,
    /// R13.
    pub r13: u64,
    /// R12.
    pub r12: u64,
    /// RBP.
    pub rbp: u64,
    /// RBX.
    pub rbx: u64,
    /// R11.
    pub r11: u64,
    /// R10.
    pub r10: u64,
    /// R9.
    pub r9: u64,
    /// R8.
    pub r8: u64,
    /// RAX.
    pub rax: u64,
    /// RCX.
    pub rcx: u64,
    /// RDX.
    pub rdx: u64,
    /// RSI.
    pub rsi: u64,
    /// RDI.
    pub rdi: u64,
    /// Private to the hypervisor.
    pub error_code: u32,
    /// Private to the hypervisor.
    pub entry_vector: u32,
    /// RIP.
    pub rip: u64,
    /// CS.
    pub cs: u16,
    /// Padding.
    pub pad0: u16,
    /// Saved `evtchn_upcall_mask`.
    pub saved_upcall_mask: u8,
    /// Padding.
    pub pad1: [u8; 3],
    /// RFLAGS (IF = !saved_upcall_mask).
    pub rflags: u64,
    /// RSP.
    pub rsp: u64,
    /// SS.
    pub ss: u16,
    /// Padding.
    pub pad2: [u16; 3],
    /// ES.
    pub es: u16,
    /// Padding.
    pub pad3: [u16; 3],
    /// DS.
    pub ds: u16,
    /// Padding.
    pub pad4: [u16; 3],
    /// FS.
    pub fs: u16,
    /// Padding.
    pub pad5: [u16; 3],
    /// GS.
    pub gs: u16,
    /// Padding.
    pub pad6: [u16; 3],
}

/// `struct vcpu_guest_context` (x86-64, 5168 bytes): a whole vCPU state,
/// for `VCPUOP_initialise` and the toolstack. How `VCPUOP_initialise`
/// takes it (kernel selectors, ring 1 here) is the contract documented on
/// [`VcpuOpCmd::Initialise`](crate::vcpu::VcpuOpCmd::Initialise).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VcpuGuestContext {
    /// FXSAVE image of the FPU state (valid with `VGCF_I387_VALID`).
    pub fpu_ctxt: [u8; 512],
    /// [`VgcfFlags`].
    pub flags: u64,
    /// General registers.
    pub user_regs: CpuUserRegs,
    /// Virtual IDT.
    pub trap_ctxt: [TrapInfo; 256],
    /// LDT linear address.
    pub ldt_base: u64,
    /// LDT entries.
    pub ldt_ents: u64,
    /// GDT frames (MFNs).
    pub gdt_frames: [u64; 16],
    /// GDT entries.
    pub gdt_ents: u64,
    /// Kernel stack segment (`stack_switch`).
    pub kernel_ss: u64,
    /// Kernel stack pointer (`stack_switch`).
    pub kernel_sp: u64,
    /// CR0-CR7; `ctrlreg[3]` = kernel L4 as `mfn << 12`, `ctrlreg[1]` =
    /// user L4.
    pub ctrlreg: [u64; 8],
    /// DR0-DR7.
    pub debugreg: [u64; 8],
    /// Event callback address.
    pub event_callback_eip: u64,
    /// Failsafe callback address.
    pub failsafe_callback_eip: u64,
    /// Syscall callback address.
    pub syscall_callback_eip: u64,
    /// `VMASST_TYPE_*` bitmap.
    pub vm_assist: u64,
    /// FS base.
    pub fs_base: u64,
    /// Kernel GS base.
    pub gs_base_kernel: u64,
    /// User GS base.
    pub gs_base_user: u64,
}

impl VcpuGuestContext {
    /// An all-zero context.
    #[must_use]
    pub const fn zeroed() -> VcpuGuestContext {
        const REGS: CpuUserRegs = CpuUserRegs {
            r15: 0,
            r14: 0,
            r13: 0,
            r12: 0,
            rbp: 0,
            rbx: 0,
            r11: 0,
            r10: 0,
            r9: 0,
            r8: 0,
            rax: 0,
            rcx: 0,
            rdx: 0,
            rsi: 0,
            rdi: 0,
            error_code: 0,
            entry_vector: 0,
            rip: 0,
            cs: 0,
            pad0: 0,
            saved_upcall_mask: 0,
            pad1: [0; 3],
            rflags: 0,
            rsp: 0,
            ss: 0,
            pad2: [0; 3],
            es: 0,
            pad3: [0; 3],
            ds: 0,
            pad4: [0; 3],
            fs: 0,
            pad5: [0; 3],
            gs: 0,
            pad6: [0; 3],
        };
        const TRAP: TrapInfo = TrapInfo {
            vector: 0,
            flags: 0,
            cs: 0,
            address: 0,
        };
        VcpuGuestContext {
            fpu_ctxt: [0; 512],
            flags: 0,
            user_regs: REGS,
            trap_ctxt: [TRAP; 256],
            ldt_base: 0,
            ldt_ents: 0,
            gdt_frames: [0; 16],
            gdt_ents: 0,
            kernel_ss: 0,
            kernel_sp: 0,
            ctrlreg: [0; 8],
            debugreg: [0; 8],
            event_callback_eip: 0,
            failsafe_callback_eip: 0,
            syscall_callback_eip: 0,
            vm_assist: 0,
            fs_base: 0,
            gs_base_kernel: 0,
            gs_base_user: 0,
        }
    }
}

crate::assert_layout!(TrapInfo, 16, { vector: 0, flags: 1, cs: 2, address: 8 });
crate::assert_layout!(CallbackRegister, 16, { kind: 0, flags: 2, pad: 4, address: 8 });
crate::assert_layout!(CallbackUnregister, 4, { kind: 0, unused: 2 });
crate::assert_layout!(IretContext, 72, {
    rax: 0, r11: 8, rcx: 16, flags: 24, rip: 32, cs: 40, rflags: 48, rsp: 56, ss: 64,
});
crate::assert_layout!(BounceFrame, 56, {
    rcx: 0, r11: 8, rip: 16, cs: 24, rflags: 32, rsp: 40, ss: 48,
});
crate::assert_layout!(CpuUserRegs, 200, {
    r15: 0, r14: 8, r13: 16, r12: 24, rbp: 32, rbx: 40, r11: 48, r10: 56, r9: 64, r8: 72,
    rax: 80, rcx: 88, rdx: 96, rsi: 104, rdi: 112, error_code: 120, entry_vector: 124,
    rip: 128, cs: 136, pad0: 138, saved_upcall_mask: 140, pad1: 141, rflags: 144, rsp: 152,
    ss: 160, pad2: 162, es: 168, pad3: 170, ds: 176, pad4: 178, fs: 184, pad5: 186, gs: 192,
    pad6: 194,
});
crate::assert_layout!(VcpuGuestContext, 5168, {
    fpu_ctxt: 0, flags: 512, user_regs: 520, trap_ctxt: 720, ldt_base: 4816, ldt_ents: 4824,
    gdt_frames: 4832, gdt_ents: 4960, kernel_ss: 4968, kernel_sp: 4976, ctrlreg: 4984,
    debugreg: 5048, event_callback_eip: 5112, failsafe_callback_eip: 5120,
    syscall_callback_eip: 5128, vm_assist: 5136, fs_base: 5144, gs_base_kernel: 5152,
    gs_base_user: 5160,
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        assert_eq!(VGCF_IN_SYSCALL, 0x100);
        assert_eq!(VGCF_ONLINE, 0x20);
        assert_eq!(CallbackType::from_number(7), Some(CallbackType::Syscall32));
        assert_eq!(CallbackType::from_number(6), None);
        let t = TrapInfo {
            vector: 14,
            flags: 3 | TrapInfo::FLAG_IF,
            cs: 0,
            address: 1,
        };
        assert_eq!((t.dpl(), t.masks_events()), (3, true));
        let f = BounceFrame {
            cs: (1 << 32) | 0xe019,
            ..BounceFrame::default()
        };
        assert_eq!((f.cs_selector(), f.saved_upcall_mask()), (0xe019, 1));
        assert_eq!(VcpuGuestContext::zeroed().trap_ctxt.len(), 256);
    }
}
