//! Hypercall numbers, the hypercall page and its stubs.
//!
//! Every hypercall has one number (`RAX`), at most five arguments (`RDI`,
//! `RSI`, `RDX`, `R10`, `R8`) and one result (`RAX`, a negated [`Errno`] on
//! failure). The per-variant docs of [`Hypercall`] give each call's C-style
//! prototype, who may make it and every error it returns; the structures
//! and sub-operation numbers live in the module named after the family.
//!
//! Invariants:
//! - Numbers are Xen 4.17's (`public/xen.h`). Number 11 and 43..=47 are
//!   unassigned; 38 (`tmem_op`) is assigned but always fails with `ENOSYS`.
//!   An unknown number returns `-ENOSYS`, whatever its size.
//! - The hypercall page is one 4 KiB page of [`HYPERCALL_PAGE_SLOTS`] slots of
//!   [`HYPERCALL_SLOT_SIZE`] bytes; slot N belongs to hypercall N. Guests
//!   `call` slot N (`call hypercall_page + N*32`), except slot 23 (`iret`),
//!   which they jump to.
//! - On this hypervisor the page holds the stubs built by
//!   [`fill_hypercall_page`]: the bytes are part of the ABI, guests may
//!   check them (the test guest checks slot 23's first byte).
//!
//! [`Errno`]: crate::Errno

/// Number of 32-byte slots in the hypercall page (one per hypercall number).
pub const HYPERCALL_PAGE_SLOTS: usize = 128;
/// Size of one hypercall-page slot in bytes: slot N starts at `N * 32`.
pub const HYPERCALL_SLOT_SIZE: usize = 32;
/// Size of the hypercall page in bytes.
pub const HYPERCALL_PAGE_SIZE: usize = HYPERCALL_PAGE_SLOTS * HYPERCALL_SLOT_SIZE;
/// The byte every part of the hypercall page that holds no stub is filled
/// with (`int3`), on Xen and here.
pub const HYPERCALL_PAGE_FILL: u8 = 0xCC;
/// The interrupt vector the stubs use to enter this hypervisor (`int $0x82`).
///
/// Its IDT gate has DPL 1: the ring-1 guest kernel may use it, ring-3 guest
/// user code gets `#GP` (delivered to the guest kernel as such).
pub const HYPERCALL_VECTOR: u8 = 0x82;
/// Number of argument registers of a hypercall (`RDI`, `RSI`, `RDX`, `R10`,
/// `R8`); there is no sixth argument and `R9` is never read.
pub const HYPERCALL_MAX_ARGS: usize = 5;
/// Length of a normal stub in bytes: `mov $N,%eax; int $0x82; ret`.
pub const STUB_LEN: usize = 8;
/// The `iret` stub (slot 23): `push %rcx; push %r11; push %rax;
/// mov $23,%eax; int $0x82`. It never returns to the stub: the hypervisor
/// resumes the context described by the frame on the stack
/// ([`IretContext`](crate::cpu::IretContext)).
pub const IRET_STUB: [u8; 11] = [
    0x51, 0x41, 0x53, 0x50, 0xB8, 0x17, 0x00, 0x00, 0x00, 0xCD, 0x82,
];

/// The normal stub for hypercall `nr`: `b8 <nr:imm32>` (`mov $nr,%eax`),
/// `cd 82` (`int $0x82`), `c3` (`ret`).
#[must_use]
pub const fn stub(nr: u8) -> [u8; STUB_LEN] {
    [0xB8, nr, 0x00, 0x00, 0x00, 0xCD, HYPERCALL_VECTOR, 0xC3]
}

/// Writes this hypervisor's hypercall page: every byte [`HYPERCALL_PAGE_FILL`],
/// then [`stub`]`(n)` at the start of slot n for every n < 128, except slot
/// [`Hypercall::Iret`], which gets [`IRET_STUB`].
///
/// Like Xen, every slot gets a stub, assigned number or not: an unassigned
/// number simply returns `-ENOSYS`.
pub fn fill_hypercall_page(page: &mut [u8; HYPERCALL_PAGE_SIZE]) {
    page.fill(HYPERCALL_PAGE_FILL);
    for (nr, slot) in page.chunks_exact_mut(HYPERCALL_SLOT_SIZE).enumerate() {
        if nr == Hypercall::Iret as usize {
            slot[..IRET_STUB.len()].copy_from_slice(&IRET_STUB);
        } else {
            // `nr` < 128 (128 slots of 32 bytes in a 4096-byte page).
            let nr = u8::try_from(nr).unwrap_or(u8::MAX);
            slot[..STUB_LEN].copy_from_slice(&stub(nr));
        }
    }
}

/// Declares `Hypercall` from one table: variant, number, Xen's name.
macro_rules! hypercall_table {
    ($($(#[$doc:meta])* $name:ident = $nr:literal, $cname:literal;)*) => {
        /// A hypercall number (the value in `RAX`).
        ///
        /// Each variant's doc gives the C prototype (64-bit PV), the caller
        /// it is meant for, what it returns, and every error.
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Hypercall {
            $($(#[$doc])* $name = $nr,)*
        }

        impl Hypercall {
            /// Every assigned hypercall number, ascending.
            pub const ALL: &'static [Hypercall] = &[$(Hypercall::$name),*];

            /// The hypercall with number `nr`, or `None` (the caller then
            /// returns `-ENOSYS`).
            #[must_use]
            #[inline]
            pub const fn from_number(nr: u64) -> Option<Hypercall> {
                match nr {
                    $($nr => Some(Hypercall::$name),)*
                    _ => None,
                }
            }

            /// Xen's name of the hypercall, e.g. `"sched_op"`.
            #[must_use]
            pub const fn name(self) -> &'static str {
                match self {
                    $(Hypercall::$name => $cname,)*
                }
            }
        }
    };
}

hypercall_table! {
    /// `set_trap_table(const trap_info *traps)`: installs virtual IDT entries.
    ///
    /// - `traps`: array of [`TrapInfo`](crate::cpu::TrapInfo), read until an
    ///   entry with `address == 0`; each entry replaces the one for its
    ///   vector. A NULL pointer clears all 256 entries.
    /// - Caller: guest kernel, for the calling vCPU.
    /// - Returns 0.
    /// - `EFAULT`: an entry could not be read (entries before it are kept).
    /// - `EINVAL`: an entry's address is not canonical (entries before it
    ///   are kept).
    SetTrapTable = 0, "set_trap_table";
    /// `mmu_update(const mmu_update *reqs, unsigned count, unsigned *pdone,
    /// unsigned foreigndom)`: batched checked page-table and M2P writes.
    ///
    /// See [`crate::mmu`] for the request format and rules.
    /// - Caller: guest kernel (any domain; `foreigndom` other than
    ///   `DOMID_SELF` needs privilege over that domain).
    /// - Returns 0 when all `count` requests were done. `*pdone` (unless
    ///   NULL) receives the number done, also on failure.
    /// - `EFAULT`: `reqs` or a request unreadable (an unwritable `pdone` is
    ///   ignored, as on Xen).
    /// - `ESRCH`: `foreigndom` names no domain.
    /// - `EPERM`: no privilege over `foreigndom`, or an M2P update of a
    ///   frame the caller does not own.
    /// - `EINVAL`: a PTE failed validation, `ptr` is not a page-table entry
    ///   of the right owner, or a frame is not valid for the update.
    /// - `EBUSY`: a writable mapping of a frame that is in use as a page
    ///   table or descriptor table.
    /// - `ENOENT`: only for paged-out frames (never here: no paging).
    /// - Long batches: this hypervisor does at most 512 requests per
    ///   invocation and continues the rest (the guest re-executes the call
    ///   with the array advanced and `count | MMU_UPDATE_PREEMPTED`; the
    ///   progress so far is in `*pdone`). A guest sees one call.
    MmuUpdate = 1, "mmu_update";
    /// `set_gdt(const xen_pfn_t frames[], unsigned entries)`: loads a new
    /// guest GDT of `entries` descriptors held in the listed frames (MFNs).
    ///
    /// - Caller: guest kernel.
    /// - Returns 0 (the local TLB is flushed).
    /// - `EINVAL`: `entries` > 7168 (`FIRST_RESERVED_GDT_ENTRY`), or a frame
    ///   cannot take the descriptor-table type (it is mapped writable, or a
    ///   descriptor fails the check described in [`crate::cpu`]).
    /// - `EFAULT`: `frames` unreadable.
    SetGdt = 2, "set_gdt";
    /// `stack_switch(unsigned long ss, unsigned long sp)`: sets the kernel
    /// stack used when an event or trap moves the vCPU from user to kernel
    /// mode (the TSS `SS0:RSP0` of a native kernel).
    ///
    /// - Caller: guest kernel. Returns 0; never fails. On this hypervisor
    ///   `ss` is forced to the ring-1 kernel SS and `sp` is checked, before
    ///   each use, to lie outside the reserved L4 slots.
    StackSwitch = 3, "stack_switch";
    /// `set_callbacks(unsigned long event, unsigned long failsafe,
    /// unsigned long syscall)`: registers three callbacks at once.
    ///
    /// - Caller: guest kernel, for the calling vCPU.
    /// - Returns 0 always: like Xen, a non-canonical address is silently not
    ///   registered. Use `callback_op` to see errors.
    SetCallbacks = 4, "set_callbacks";
    /// `fpu_taskswitch(int set)`: sets (`set != 0`) or clears the vCPU's
    /// virtual `CR0.TS`. Returns 0; never fails.
    FpuTaskswitch = 5, "fpu_taskswitch";
    /// `sched_op_compat(int cmd, unsigned long arg)`: the pre-3.0.2 form of
    /// `sched_op`, kept for old guests.
    ///
    /// - `cmd`: `SCHEDOP_yield`, `SCHEDOP_block` (arg ignored) or
    ///   `SCHEDOP_shutdown` with the reason *value* in `arg` (not a pointer).
    /// - Returns 0. `ENOSYS`: any other `cmd`.
    SchedOpCompat = 6, "sched_op_compat";
    /// `platform_op(xen_platform_op *op)`: host platform control (the
    /// wall clock; on Xen also microcode, power management and more).
    /// Control domain only (`EPERM` otherwise, after `EFAULT` and
    /// `EACCES`); the commands, their order of checks and every error are
    /// in [`platform`](crate::platform).
    PlatformOp = 7, "platform_op";
    /// `set_debugreg(int reg, unsigned long value)`: writes virtual DR0-7.
    /// `EINVAL` for a bad register number or value. Returns 0.
    SetDebugreg = 8, "set_debugreg";
    /// `get_debugreg(int reg)`: returns virtual DR`reg`; for `reg` > 7 it
    /// returns `-EINVAL` as an unsigned value (a defect Xen keeps).
    GetDebugreg = 9, "get_debugreg";
    /// `update_descriptor(u64 maddr, u64 desc)`: writes one GDT/LDT
    /// descriptor at machine address `maddr`.
    ///
    /// - Returns 0. `EINVAL`: `maddr` not 8-byte aligned, frame not owned
    ///   or not a descriptor/writable-typeable page, or `desc` fails the
    ///   descriptor check.
    UpdateDescriptor = 10, "update_descriptor";
    /// `memory_op(unsigned long cmd, void *arg)`: reservation and physmap
    /// operations, see [`crate::memory`]. Unknown `cmd`: `ENOSYS`.
    MemoryOp = 12, "memory_op";
    /// `multicall(multicall_entry *calls, uint32_t nr)`: runs `nr` hypercalls
    /// in order, see [`crate::multicall`].
    ///
    /// - Returns 0 once the batch ran; each entry's `result` holds that
    ///   call's own return value.
    /// - `EFAULT`: the array could not be read or a result not written back.
    /// - `EINVAL`: a nested `multicall` entry.
    Multicall = 13, "multicall";
    /// `update_va_mapping(unsigned long va, u64 pte, unsigned long flags)`:
    /// writes the L1 entry that maps `va` in the current page tables, with
    /// the same validation as `mmu_update`, then flushes as `flags` says
    /// ([`UvmfFlags`](crate::mmu::UvmfFlags)).
    ///
    /// - Returns 0.
    /// - `EINVAL`: no L1 table maps `va`, or the new PTE fails validation.
    /// - `EBUSY`: writable mapping of a page-table or descriptor frame.
    /// - `EFAULT`: the vCPU bitmap of a `UVMF_MULTI` flush is unreadable.
    UpdateVaMapping = 14, "update_va_mapping";
    /// `set_timer_op(s64 timeout_abs_ns)`: arms the calling vCPU's one-shot
    /// timer (raising its `VIRQ_TIMER`) at system time `timeout_abs_ns`; 0
    /// cancels it; a past deadline fires at once; a negative one, or one
    /// 2^50 ns or more ahead (a wrapped jiffies value), fires 100 ms from
    /// now instead. Any vCPU; returns 0; never fails.
    SetTimerOp = 15, "set_timer_op";
    /// `event_channel_op_compat(evtchn_op *op)`: the old form of
    /// `event_channel_op` taking `{u32 cmd; union}`. `EFAULT` if unreadable;
    /// otherwise as `event_channel_op`.
    EventChannelOpCompat = 16, "event_channel_op_compat";
    /// `xen_version(int cmd, void *arg)`: version and feature queries, see
    /// [`crate::version::VersionCmd`] for each sub-op's argument and errors.
    /// Unknown `cmd`: `ENOSYS`. Any domain may call it.
    XenVersion = 17, "xen_version";
    /// `console_io(unsigned cmd, unsigned count, char *buf)`: the
    /// hypervisor's own console, see [`crate::console::ConsoleIoCmd`].
    ///
    /// - Caller: the hardware domain (a domU gets `EPERM` from Xen's release
    ///   builds).
    /// - Unknown `cmd`: `ENOSYS`. Bad `buf`: `EFAULT`.
    ConsoleIo = 18, "console_io";
    /// `physdev_op_compat(physdev_op *op)`: the old form of `physdev_op`
    /// taking `{u32 cmd; union}`.
    PhysdevOpCompat = 19, "physdev_op_compat";
    /// `grant_table_op(unsigned cmd, void *uop, unsigned count)`: grant-table
    /// operations, see [`crate::grant_table`]. Per-operation failures are
    /// reported in each op's `status` field; the call itself fails with
    /// `EFAULT` (bad `uop`), `EINVAL` (bad `count`) or `ENOSYS` (unknown
    /// `cmd`).
    GrantTableOp = 20, "grant_table_op";
    /// `vm_assist(unsigned cmd, unsigned type)`: enables or disables an
    /// optional behaviour, see [`VmAssistType`](crate::mmu::VmAssistType).
    ///
    /// - Returns 0.
    /// - `EINVAL`: `type` is not valid for a 64-bit PV guest (checked first).
    /// - `ENOSYS`: `cmd` is neither enable (0) nor disable (1).
    VmAssist = 21, "vm_assist";
    /// `update_va_mapping_otherdomain(unsigned long va, u64 pte,
    /// unsigned long flags, domid_t domid)`: as `update_va_mapping` with
    /// the mapped frame owned by `domid`. `ESRCH` for an unknown domain,
    /// `EPERM` without privilege over it.
    UpdateVaMappingOtherdomain = 22, "update_va_mapping_otherdomain";
    /// `iret(void)`: returns from an event or exception to the context
    /// described by the [`IretContext`](crate::cpu::IretContext) at RSP.
    ///
    /// - Reached by *jumping* to slot 23 after pushing `flags` on top of
    ///   the frame `{RIP, CS, RFLAGS, RSP, SS}`; the stub pushes RCX, R11,
    ///   RAX. Does not return to the caller.
    /// - RAX is restored from the frame. A frame that cannot be read, or a
    ///   return to user mode that cannot be set up, crashes the domain.
    Iret = 23, "iret";
    /// `vcpu_op(int cmd, unsigned vcpuid, void *arg)`: per-vCPU control,
    /// see [`crate::vcpu::VcpuOpCmd`] for each command's argument and errors.
    ///
    /// - Caller: the guest kernel, on the vCPUs of its own domain (any of
    ///   them, itself included).
    /// - `ENOENT`: `vcpuid` (its low 32 bits) names no vCPU of the domain,
    ///   checked before the command. Unknown `cmd`: `ENOSYS`.
    VcpuOp = 24, "vcpu_op";
    /// `set_segment_base(unsigned which, unsigned long base)`: sets the FS
    /// base, the user or kernel GS base, or loads the user GS selector; see
    /// [`SegmentBase`](crate::cpu::SegmentBase).
    ///
    /// - Returns 0. `EINVAL`: non-canonical `base` or unknown `which`.
    SetSegmentBase = 25, "set_segment_base";
    /// `mmuext_op(mmuext_op *ops, unsigned count, unsigned *pdone,
    /// unsigned foreigndom)`: pinning, base pointers, TLB and cache
    /// maintenance, LDT; see [`MmuextCmd`](crate::mmu::MmuextCmd).
    /// Errors, `pdone` and the continuation of long batches as for
    /// `mmu_update`; an unknown `cmd` gives `ENOSYS`.
    MmuextOp = 26, "mmuext_op";
    /// `xsm_op(void *op)`: security-module control (`ENOSYS` without XSM).
    XsmOp = 27, "xsm_op";
    /// `nmi_op(unsigned cmd, void *arg)`: registers or removes the calling
    /// vCPU's NMI callback, see [`crate::nmi::NmiOp`].
    ///
    /// - Returns 0.
    /// - `EFAULT`: `arg` of `register_callback` unreadable.
    /// - `EINVAL`: non-canonical handler address.
    /// - `ENOSYS`: unknown `cmd`.
    NmiOp = 28, "nmi_op";
    /// `sched_op(int cmd, void *arg)`: yield, block, shutdown, poll; see
    /// [`crate::sched::SchedOp`] for each sub-op's argument and errors.
    /// Unknown `cmd`: `ENOSYS`. Any domain may call it for itself.
    SchedOp = 29, "sched_op";
    /// `callback_op(int cmd, const void *arg)`: registers or unregisters
    /// one callback, see [`crate::cpu::CallbackRegister`].
    ///
    /// - Returns 0.
    /// - `EFAULT`: `arg` unreadable.
    /// - `EINVAL`: non-canonical address, or unregistering a type other than
    ///   `nmi`.
    /// - `ENOSYS`: unknown `cmd` or callback type.
    CallbackOp = 30, "callback_op";
    /// `xenoprof_op(int op, void *arg)`: profiling (not provided here).
    XenoprofOp = 31, "xenoprof_op";
    /// `event_channel_op(int cmd, void *arg)`: event channels, see
    /// [`crate::event_channel`]. Unknown `cmd`: `ENOSYS`.
    EventChannelOp = 32, "event_channel_op";
    /// `physdev_op(int cmd, void *arg)`: physical device and interrupt
    /// control, see [`crate::physdev`]. Unknown `cmd`: `ENOSYS`.
    PhysdevOp = 33, "physdev_op";
    /// `hvm_op(unsigned long op, void *arg)`: HVM guest control (PV guests
    /// get `ENOSYS` or `EINVAL` for most ops).
    HvmOp = 34, "hvm_op";
    /// `sysctl(xen_sysctl *op)`: host-wide toolstack control. Control domain
    /// only (`EPERM`); `interface_version` mismatch gives `EACCES`.
    Sysctl = 35, "sysctl";
    /// `domctl(xen_domctl *op)`: per-domain toolstack control, see
    /// [`crate::domctl`]. Control domain only (`EPERM`);
    /// `interface_version` mismatch gives `EACCES`.
    Domctl = 36, "domctl";
    /// `kexec_op(unsigned long op, void *arg)`: crash-kernel loading.
    KexecOp = 37, "kexec_op";
    /// `tmem_op`: transcendent memory, removed; always `ENOSYS`.
    TmemOp = 38, "tmem_op";
    /// `argo_op(...)`: Argo inter-domain messaging.
    ArgoOp = 39, "argo_op";
    /// `xenpmu_op(...)`: performance-counter virtualisation.
    XenpmuOp = 40, "xenpmu_op";
    /// `dm_op(domid_t domid, unsigned nr_bufs, ...)`: device-model operations.
    DmOp = 41, "dm_op";
    /// `hypfs_op(...)`: hypervisor file-system access.
    HypfsOp = 42, "hypfs_op";
    /// `mca(op)`: the machine-check architecture (x86's `arch_0`;
    /// [`crate::mca`]).
    Mca = 48, "mca";
    /// Architecture-specific 1 (x86: `paging_domctl_cont`).
    Arch1 = 49, "arch_1";
    /// Architecture-specific 2 (unused on x86).
    Arch2 = 50, "arch_2";
    /// Architecture-specific 3 (unused on x86).
    Arch3 = 51, "arch_3";
    /// Architecture-specific 4 (unused on x86).
    Arch4 = 52, "arch_4";
    /// Architecture-specific 5 (unused on x86).
    Arch5 = 53, "arch_5";
    /// Architecture-specific 6 (unused on x86).
    Arch6 = 54, "arch_6";
    /// Architecture-specific 7 (unused on x86).
    Arch7 = 55, "arch_7";
    /// `stats_op(cmd, arg)`: this hypervisor's statistics interface for
    /// benchmarks (see [`crate::stats`]); not a Xen hypercall (Xen answers
    /// `ENOSYS`), and `ENOSYS` here too unless the hypervisor was built with
    /// its `stats` feature.
    StatsOp = 63, "stats_op";
}

impl Hypercall {
    /// The hypercall's number as it appears in `RAX`.
    #[must_use]
    pub const fn number(self) -> u32 {
        self as u32
    }

    /// Byte offset of this hypercall's slot in the hypercall page.
    #[must_use]
    pub const fn slot_offset(self) -> usize {
        self as usize * HYPERCALL_SLOT_SIZE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(Hypercall::SetTrapTable.number(), 0);
        assert_eq!(Hypercall::MemoryOp.number(), 12);
        assert_eq!(Hypercall::Iret.number(), 23);
        assert_eq!(Hypercall::SchedOp.number(), 29);
        assert_eq!(Hypercall::XenVersion.number(), 17);
        assert_eq!(Hypercall::ConsoleIo.number(), 18);
        assert_eq!(Hypercall::HypfsOp.number(), 42);
        assert_eq!(Hypercall::Arch7.number(), 55);
        assert_eq!(Hypercall::StatsOp.number(), 63);
        // Xen's 42 (0-42 less 11) and 8 arch numbers, plus stats_op.
        assert_eq!(Hypercall::ALL.len(), 42 + 8 + 1);
        for &h in Hypercall::ALL {
            assert_eq!(Hypercall::from_number(u64::from(h.number())), Some(h));
        }
        for nr in [11, 43, 47, 56, 64, 127, 1000, u64::MAX] {
            assert_eq!(Hypercall::from_number(nr), None);
        }
        assert_eq!(Hypercall::SchedOpCompat.name(), "sched_op_compat");
        assert_eq!(Hypercall::Iret.slot_offset(), 23 * 32);
    }

    #[test]
    fn page_bytes() {
        let mut page = [0u8; HYPERCALL_PAGE_SIZE];
        fill_hypercall_page(&mut page);
        assert_eq!(&page[..8], &[0xB8, 0, 0, 0, 0, 0xCD, 0x82, 0xC3]);
        assert!(page[8..32].iter().all(|&b| b == 0xCC));
        let s29 = 29 * 32;
        assert_eq!(&page[s29..s29 + 8], &[0xB8, 29, 0, 0, 0, 0xCD, 0x82, 0xC3]);
        let s23 = 23 * 32;
        assert_eq!(&page[s23..s23 + 11], &IRET_STUB);
        assert!(page[s23 + 11..s23 + 32].iter().all(|&b| b == 0xCC));
        let s127 = 127 * 32;
        assert_eq!(page[s127 + 1], 127);
        assert_eq!(page[4095], 0xCC);
    }
}
