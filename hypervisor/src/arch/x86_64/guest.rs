//! Delivering events to a guest: exceptions and software interrupts as
//! bounce frames to the handlers of its virtual IDT, `SYSCALL` from user
//! mode to its syscall callback, pending NMIs and event upcalls on the way
//! back to the guest, and `HYPERVISOR_iret` back. The frame
//! layouts and checks are the pure `crate::vcpu` functions; this module
//! reads and writes the guest and the CPU.
use dom0_abi::cpu::IretContext;
use dom0_abi::segment::{FLAT_USER_CS32, RING1_KERNEL_CS, RING1_KERNEL_SS};
use dom0_abi::shared_info::VcpuInfo;
use dom0_abi::stats::Counter;
use dom0_abi::types::Mfn;
use dom0_abi::wire::Wire;

use crate::emulate::{self, Insn};
use crate::hypercall::mmu;
use crate::iomem::{self, ReadOnlyWrite};
use crate::logfilter::GUEST;
use crate::mm::effects::Effects;
use crate::mm::pte;
use crate::mm::types::{PtwrOutcome, PtwrWrite};
use crate::resume::{self, Descriptors, Location};
use crate::vcpu::{self, Context, NmiDelivery, Pending, Vcpu, debug};

use super::entry::GuestRegs;
use super::env::{ArchEnv, apply_effects, fault_in_ldt_page};
use super::fastpath::this_lane;
use super::paging::phys_to_virt;
use super::traps::{Current, crash, exception_name};
use super::{cpu, guest_mem, mem, percpu};
use crate::layout::{PAGE_SIZE, trampoline};

/// Pseudo-vector the SYSCALL entry stub reports for a 64-bit `SYSCALL`.
pub const SYSCALL_VECTOR: u64 = 0x100;
/// Pseudo-vector for a `SYSCALL` from 32-bit compatibility mode.
pub const SYSCALL32_VECTOR: u64 = 0x101;

const UD: u8 = 6;
const DB: u64 = 1;
const NM: u64 = 7;
const GP: u64 = 13;
const PF: u64 = 14;
/// Page-fault error-code bits no descriptor load by the CPU sets: write,
/// user mode, reserved bit.
const PF_NOT_A_DESCRIPTOR_LOAD: u64 = 0b1110;
/// [`PF`] as an IDT vector number.
const PF_VECTOR: u8 = 14;
/// Bytes of `int $n` (`CD ib`), `int $0x82` and `syscall` (`0F 05`).
const TWO_BYTE_INSN: u64 = 2;

fn context(regs: &GuestRegs) -> Context {
    Context {
        rip: regs.rip,
        cs: regs.cs,
        rflags: regs.rflags,
        rsp: regs.rsp,
        ss: regs.ss,
        rcx: regs.rcx,
        r11: regs.r11,
        rax: regs.rax,
    }
}

fn set_context(regs: &mut GuestRegs, c: &Context) {
    (regs.rip, regs.cs, regs.rflags, regs.rsp, regs.ss) = (c.rip, c.cs, c.rflags, c.rsp, c.ss);
    (regs.rcx, regs.r11, regs.rax) = (c.rcx, c.r11, c.rax);
}

/// The running vCPU's `vcpu_info`.
fn vcpu_info(current: &Current) -> *mut VcpuInfo {
    phys_to_virt(current.vcpu.vcpu_info) as *mut VcpuInfo
}

fn upcall_mask(current: &Current) -> u8 {
    // SAFETY: shared_info is a hypervisor-owned frame for this domain's
    // lifetime; the byte is plain data the guest may also change at any time.
    unsafe { core::ptr::addr_of!((*vcpu_info(current)).evtchn_upcall_mask).read_volatile() }
}

fn set_upcall_mask(current: &Current, mask: u8) {
    // SAFETY: as in `upcall_mask`.
    unsafe {
        core::ptr::addr_of_mut!((*vcpu_info(current)).evtchn_upcall_mask).write_volatile(mask)
    }
}

/// `shared_info.arch.max_pfn` as the guest last wrote it.
pub fn shared_max_pfn(current: &Current) -> u64 {
    shared_max_pfn_at(current.domain.shared_info)
}

/// `arch.max_pfn` of the shared_info page at machine address
/// `shared_info` (a domain's, which the caller holds).
pub fn shared_max_pfn_at(shared_info: u64) -> u64 {
    let info = phys_to_virt(shared_info) as *const dom0_abi::shared_info::SharedInfo;
    // SAFETY: shared_info is a hypervisor-owned frame for the domain's
    // lifetime (the caller holds the domain); the field is plain data the
    // guest may change at any time.
    unsafe { core::ptr::addr_of!((*info).arch.max_pfn).read_volatile() }
}

/// `shared_info.arch.nmi_reason` as the guest last wrote it.
pub fn shared_nmi_reason(current: &Current) -> u64 {
    let info = phys_to_virt(current.domain.shared_info) as *const dom0_abi::shared_info::SharedInfo;
    // SAFETY: as in `shared_max_pfn`.
    unsafe { core::ptr::addr_of!((*info).arch.nmi_reason).read_volatile() }
}

fn cr2(current: &Current) -> u64 {
    // SAFETY: as in `upcall_mask`.
    unsafe { core::ptr::addr_of!((*vcpu_info(current)).arch.cr2).read_volatile() }
}

fn set_cr2(current: &Current, address: u64) {
    // SAFETY: as in `upcall_mask`; `arch.cr2` is where PV guests read the
    // fault address.
    unsafe { core::ptr::addr_of_mut!((*vcpu_info(current)).arch.cr2).write_volatile(address) }
}

/// An exception from the guest: to its handler, or the domain is crashed.
pub fn exception(current: &mut Current, regs: &mut GuestRegs) {
    let vector = regs.vector;
    if vector == GP && regs.error_code & 0b011 == 0b010 && software_interrupt(current, regs) {
        return;
    }
    if vector == GP && regs.error_code != 0 && kernel_iretq(current, regs) {
        return;
    }
    let emulable = (vector == GP && regs.error_code == 0) || vector == u64::from(UD);
    if emulable && emulate(current, regs) {
        return;
    }
    if vector == DB {
        // The guest reads what happened from its virtual DR6.
        current.vcpu.debugreg[6] = cpu::read_dr6();
        cpu::clear_dr6();
    }
    if vector == NM && current.vcpu.fpu_ts {
        // The guest's own CR0.TS caused this: it is now "handled", as a
        // native #NM handler would `clts` it.
        current.vcpu.fpu_ts = false;
        current.vcpu.pending.insert(Pending::FPU);
    }
    if vector == PF {
        let address = cpu::read_cr2();
        let ldt_window = trampoline::LDT..trampoline::LDT + trampoline::LDT_PAGES * PAGE_SIZE;
        if ldt_window.contains(&address) {
            let page = (address - trampoline::LDT) / PAGE_SIZE;
            let mapped = usize::try_from(page)
                .ok()
                .and_then(|i| current.cpu.ldt_pages.get(i))
                .is_some_and(|&mfn| mfn != 0);
            // Only the CPU's own descriptor loads (implicit supervisor
            // reads) of a page not mapped yet are the window's to fix. A
            // store, a user-mode access or a fault on a page already
            // mapped is an access to memory the guest does not own: its
            // #PF, at the window address, as Xen delivers it for its own
            // LDT area.
            if regs.error_code & PF_NOT_A_DESCRIPTOR_LOAD != 0 || mapped {
                set_cr2(current, address);
                deliver(current, regs, PF_VECTOR, Some(regs.error_code));
                return;
            }
            if fault_in_ldt_page(&mut ArchEnv::new(current, regs), page) {
                return;
            }
            // Not a usable LDT page: the fault is the guest's, at the
            // guest's own address of that descriptor.
            let guest_address = current.vcpu.mm.ldt_base + (address - trampoline::LDT);
            set_cr2(current, guest_address);
            deliver(current, regs, PF_VECTOR, Some(regs.error_code));
            return;
        }
        if read_only_page_store(current, regs) {
            return;
        }
        set_cr2(current, address);
    }
    let has_error_code = matches!(vector, 8 | 10..=14 | 17 | 21 | 29 | 30);
    #[allow(
        clippy::cast_possible_truncation,
        reason = "exception vectors are below 32"
    )]
    deliver(
        current,
        regs,
        vector as u8,
        has_error_code.then_some(regs.error_code),
    );
}

/// `int $n` from the guest: every IDT gate but #BP/#OF/0x82 has DPL 0, so
/// it arrives as #GP with "IDT" in the error code. It becomes a software
/// interrupt when the instruction at RIP is `int $n` and the guest's own
/// gate for `n` allows it from the current ring (DPL >= 1 from the kernel,
/// 3 from user mode). The vector is taken from the instruction: the error
/// code's index field is not reliable across CPUs and emulators (QEMU's TCG
/// reports the vector's byte offset in the 64-bit IDT).
fn software_interrupt(current: &mut Current, regs: &mut GuestRegs) -> bool {
    let mut insn = [0u8; 2];
    if guest_mem::copy_from_guest(regs.rip, &mut insn).is_err() || insn[0] != 0xcd {
        return false;
    }
    let gate = current.vcpu.traps[usize::from(insn[1])];
    let required = if context(regs).in_user_mode() { 3 } else { 1 };
    if gate.address == 0 || gate.dpl < required {
        return false;
    }
    regs.rip = regs.rip.wrapping_add(TWO_BYTE_INSN);
    bounce_to(current, regs, gate.address, None, gate.mask_events);
    true
}

/// Delivers `vector` to the guest's handler, or crashes the domain when it
/// has none.
pub fn deliver(current: &mut Current, regs: &mut GuestRegs, vector: u8, error_code: Option<u64>) {
    let gate = current.vcpu.traps[usize::from(vector)];
    if gate.address == 0 {
        let cr2 = (u64::from(vector) == PF).then(cpu::read_cr2);
        crash(
            current,
            format_args!(
                "unhandled {} (vector {vector}, error {:#x}) at rip {:#x} cs {:#x}{}",
                exception_name(u64::from(vector)),
                error_code.unwrap_or(0),
                regs.rip,
                regs.cs,
                Cr2(cr2)
            ),
        );
        return;
    }
    bounce_to(current, regs, gate.address, error_code, gate.mask_events);
}

/// Formats the fault address of a page fault, when there is one.
struct Cr2(Option<u64>);

impl core::fmt::Display for Cr2 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(address) => write!(f, ", cr2 {address:#x}"),
            None => Ok(()),
        }
    }
}

/// Writes a bounce frame for the interrupted context and resumes the guest
/// at `handler`.
fn bounce_to(
    current: &mut Current,
    regs: &mut GuestRegs,
    handler: u64,
    error_code: Option<u64>,
    mask_events: bool,
) {
    let saved_mask = upcall_mask(current);
    // The frame is used where it was returned (moving it out of the
    // `Result` cost every bounce a copy), and the handler's context is
    // set in `regs` field by field: RCX, R11 and RAX stay as they are.
    let frame = vcpu::bounce_frame(
        current.vcpu.kernel_sp,
        &context(regs),
        error_code,
        saved_mask,
    );
    let b = match &frame {
        Ok(b) => b,
        Err(e) => return crash(current, format_args!("cannot deliver an event: {e}")),
    };
    if guest_mem::copy_words_to_guest(b.rsp, b.words()).is_err() {
        return crash(
            current,
            format_args!("cannot write a bounce frame at {:#x}", b.rsp),
        );
    }
    (regs.rip, regs.cs, regs.rsp, regs.ss) = (handler, vcpu::HANDLER_CS, b.rsp, vcpu::HANDLER_SS);
    regs.rflags = vcpu::handler_rflags(regs.rflags);
    current.vcpu.stats.add(Counter::Bounces, 1);
    if mask_events {
        set_upcall_mask(current, 1);
    }
    if b.from_user {
        set_kernel_gs(current.vcpu, true);
    }
}

/// On every return to the guest, in Xen's order: first a pending NMI
/// (unless NMIs are masked) to the NMI handler, then, if the guest has an
/// event upcall pending, events unmasked and an event callback registered,
/// the callback (events masked); each with a bounce frame for where the
/// guest was going. An NMI handler that masks events (the usual case)
/// keeps the upcall for after its `iret`.
pub fn deliver_pending_event(current: &mut Current, regs: &mut GuestRegs) {
    if current.vcpu.nmi.is_pending() {
        deliver_nmi(current, regs);
        if !current.domain.is_running() {
            return;
        }
    }
    let callback = current.vcpu.event;
    if callback.address == 0 || upcall_mask(current) != 0 {
        return;
    }
    // SAFETY: as in `upcall_mask`.
    let pending =
        unsafe { core::ptr::addr_of!((*vcpu_info(current)).evtchn_upcall_pending).read_volatile() };
    if pending != 0 {
        bounce_to(current, regs, callback.address, None, true);
    }
}

/// Takes the pending NMI unless NMIs are masked: into the NMI handler
/// (trap-table entry 2, which masks events if its flags say so; NMIs stay
/// masked until the guest's next `HYPERVISOR_iret`), or, with no handler,
/// dropped as Xen drops it.
/// The drop is logged at debug level only: a guest may send itself NMIs
/// without a handler as often as it likes.
#[cold]
#[inline(never)]
fn deliver_nmi(current: &mut Current, regs: &mut GuestRegs) {
    match current.vcpu.nmi.take(current.vcpu.nmi_handler()) {
        NmiDelivery::None => {}
        NmiDelivery::Dropped => log::debug!(
            target: GUEST,
            "d{}v{}: NMI with no NMI callback registered: dropped",
            current.domain.id.0,
            current.vcpu.id
        ),
        NmiDelivery::Deliver(gate) => {
            // NMIs are masked now: the fast `iret` must leave the next
            // `iret` to the full path, which unmasks them.
            this_lane().note_work();
            bounce_to(current, regs, gate.address, None, gate.mask_events);
        }
    }
}

/// The lowest address of the upper canonical half.
const UPPER_HALF: u64 = 0xffff_8000_0000_0000;

/// Whether the 64-bit `SYSCALL` that entered with `regs` was executed by
/// the guest kernel (ring 1). `SYSCALL` does not record the ring it came
/// from, so the page holding the instruction decides: ring 3 cannot fetch
/// from a supervisor page, so a `SYSCALL` in one came from ring 1 (see
/// docs/address-spaces.md, "SYSCALL from the kernel"). Two cases need no
/// walk: a vCPU the hypervisor last put in user mode (`HYPERVISOR_iret`
/// to ring 3; only a bounce through the hypervisor brings it back to ring
/// 1, and that marks it kernel again), and the lower half, where user
/// programs live. Both can only take a kernel `SYSCALL` for a user one,
/// which costs the guest its own call, never the other way round.
///
/// The walk reads the tables through the direct map without the frame
/// table's lock (this is on every user `SYSCALL` from the upper half):
/// from a validated L4, every present L4, L3 and L2 entry names a
/// page-table frame of the domain, which is RAM; a frame past the direct
/// map ends the walk as "not mapped" all the same.
fn syscall_from_kernel(current: &Current, regs: &GuestRegs) -> bool {
    if !current.vcpu.gs_kernel_active {
        return false;
    }
    // RIP is the next instruction: its last two bytes are `0F 05`.
    let at = regs.rip.wrapping_sub(TWO_BYTE_INSN);
    if at < UPPER_HALF {
        return false;
    }
    current
        .vcpu
        .mm
        .kernel_l4
        .is_some_and(|root| maps_supervisor_page(root, at))
}

/// Whether the guest tables under the validated L4 `root` map `at` as a
/// supervisor page (see [`syscall_from_kernel`] for why the walk needs no
/// lock).
pub fn maps_supervisor_page(root: Mfn, at: u64) -> bool {
    let frames = mem::frame_count();
    let read = |mfn: Mfn, index: usize| {
        (mfn.0 < frames).then(|| {
            let table = phys_to_virt(mfn.maddr()) as *const u64;
            // SAFETY: the direct map covers every frame below
            // `frame_count`; the index is below 512; a page-table entry is
            // plain data another vCPU may change at any time.
            unsafe { table.wrapping_add(index % 512).read_volatile() }
        })
    };
    pte::maps_supervisor_page(read, root, at) == Some(true)
}

/// `SYSCALL` from the guest kernel is a hypercall (Xen's register
/// convention: RAX the number, RDI, RSI, RDX, R10, R8 the arguments; RCX
/// and R11 are the CPU's), returning in kernel mode with the RFLAGS the
/// CPU saved in R11: true is returned, and the caller makes the hypercall.
/// From guest user mode it goes to the registered callback, without a
/// page-table switch; with none registered, `#UD` at the `SYSCALL`.
pub fn syscall(current: &mut Current, regs: &mut GuestRegs) -> bool {
    if regs.vector == SYSCALL_VECTOR && syscall_from_kernel(current, regs) {
        regs.cs = u64::from(RING1_KERNEL_CS);
        regs.ss = u64::from(RING1_KERNEL_SS);
        return true;
    }
    let callback = if regs.vector == SYSCALL_VECTOR {
        current.vcpu.syscall
    } else {
        current.vcpu.syscall32
    };
    if callback.address == 0 {
        regs.rip = regs.rip.wrapping_sub(TWO_BYTE_INSN);
        deliver(current, regs, UD, None);
    } else {
        bounce_to(current, regs, callback.address, None, callback.mask_events);
    }
    false
}

/// `HYPERVISOR_iret`: the guest jumped to slot 23 with an `iret_context` at
/// its stack pointer.
pub fn iret(current: &mut Current, regs: &mut GuestRegs) {
    let mut raw = [0u8; IretContext::SIZE];
    let Some(frame) = guest_mem::copy_from_guest(regs.rsp, &mut raw)
        .ok()
        .and_then(|()| IretContext::from_wire(&raw))
    else {
        return crash(
            current,
            format_args!("iret frame at {:#x} cannot be read", regs.rsp),
        );
    };
    complete_iret(current, regs, &frame);
}

/// Resumes the guest as an `iret_context` says (`HYPERVISOR_iret`).
fn complete_iret(current: &mut Current, regs: &mut GuestRegs, frame: &IretContext) {
    let target = vcpu::iret(frame);
    set_context(regs, &target.context);
    set_upcall_mask(current, target.upcall_mask);
    if current.vcpu.nmi.is_masked() {
        // The fast lanes read the mask: they take it afresh.
        this_lane().note_work();
        current.vcpu.nmi.unmask();
    }
    set_kernel_gs(current.vcpu, !target.context.in_user_mode());
}

/// `iretq` with REX.W, the only `iret` a 64-bit kernel returns with.
const IRETQ: [u8; 2] = [0x48, 0xcf];

/// A native `iretq` in the kernel to a frame whose CS has RPL 0, as the
/// kernel-mode frames this hypervisor builds carry it (like Xen's): the CPU
/// refuses it at CPL 1 with #GP(selector), and the hypervisor completes it
/// as `HYPERVISOR_iret` completes the same frame (flags 0, RAX, R11 and
/// RCX as they are). Returns whether it did. A kernel wanting the native
/// return without a hypervisor entry ORs 1 into the frame's CS first.
fn kernel_iretq(current: &mut Current, regs: &mut GuestRegs) -> bool {
    if context(regs).in_user_mode() {
        return false;
    }
    let mut insn = [0u8; 2];
    if guest_mem::copy_from_guest(regs.rip, &mut insn).is_err() || insn != IRETQ {
        return false;
    }
    let mut raw = [0u8; 40];
    if guest_mem::copy_from_guest(regs.rsp, &mut raw).is_err() {
        return false;
    }
    let mut words = raw
        .chunks_exact(8)
        .map(|w| w.try_into().map_or(0, u64::from_le_bytes));
    let mut next = || words.next().unwrap_or(0);
    let (rip, cs, rflags, rsp, ss) = (next(), next(), next(), next(), next());
    if cs & 3 != 0 || regs.error_code != cs & 0xfffc {
        return false;
    }
    let frame = IretContext {
        rax: regs.rax,
        r11: regs.r11,
        rcx: regs.rcx,
        flags: 0,
        rip,
        cs,
        rflags,
        rsp,
        ss,
    };
    complete_iret(current, regs, &frame);
    true
}

fn set_kernel_gs(vcpu: &mut Vcpu, kernel: bool) {
    if vcpu.gs_kernel_active != kernel {
        // The mode being left may have moved its GS base (or the FS base)
        // with WRGSBASE: keep it before the swap reloads both.
        super::context::sync_bases(vcpu);
        vcpu.gs_kernel_active = kernel;
        this_lane().record_mode(kernel);
        vcpu.pending.insert(Pending::SEGMENTS);
    }
}

/// Applies what hypercalls and deliveries left pending: segment bases and
/// the user GS selector, CR0.TS, the guest's GDT frames, debug registers.
/// Usually there is nothing: that case costs one test on the exit path.
#[inline(always)]
pub fn apply_pending(current: &mut Current) {
    if !current.vcpu.pending.is_empty() {
        apply_pending_work(current);
    }
}

#[cold]
#[inline(never)]
fn apply_pending_work(current: &mut Current) {
    let vcpu = &mut current.vcpu;
    if vcpu.pending.contains(Pending::GDT) {
        let cpu = &mut *current.cpu;
        super::trampoline::load_guest_gdt(
            &cpu.views,
            &mut cpu.gdt_mapped,
            &vcpu.gdt_frames[..vcpu.gdt_count],
        );
    }
    if vcpu.pending.contains(Pending::SELECTORS) {
        super::context::load_selectors(&vcpu.selectors);
    }
    if vcpu.pending.contains(Pending::SEGMENTS) {
        let (active, inactive) = if vcpu.gs_kernel_active {
            (vcpu.gs_base_kernel, vcpu.gs_base_user)
        } else {
            (vcpu.gs_base_user, vcpu.gs_base_kernel)
        };
        let selector = if vcpu.gs_kernel_active {
            0
        } else {
            vcpu.user_gs_sel
        };
        cpu::load_guest_segments(vcpu.fs_base, selector, active, inactive);
    }
    if vcpu.pending.contains(Pending::DEBUG) {
        cpu::load_debug_registers(&vcpu.debugreg);
    }
    if vcpu.pending.intersects(Pending::FPU | Pending::CR4) {
        if vcpu.pending.contains(Pending::FPU) {
            cpu::set_cr0_ts(vcpu.fpu_ts);
            cpu::set_xcr0(vcpu.xcr0);
        }
        if vcpu.pending.contains(Pending::CR4) {
            cpu::set_cr4_fsgsbase(vcpu.cr4_fsgsbase);
        }
    }
    vcpu.pending = Default::default();
}

/// A general register by its encoding number (0 = RAX ... 15 = R15).
fn gpr(regs: &mut GuestRegs, n: u8) -> &mut u64 {
    match n & 15 {
        0 => &mut regs.rax,
        1 => &mut regs.rcx,
        2 => &mut regs.rdx,
        3 => &mut regs.rbx,
        4 => &mut regs.rsp,
        5 => &mut regs.rbp,
        6 => &mut regs.rsi,
        7 => &mut regs.rdi,
        8 => &mut regs.r8,
        9 => &mut regs.r9,
        10 => &mut regs.r10,
        11 => &mut regs.r11,
        12 => &mut regs.r12,
        13 => &mut regs.r13,
        14 => &mut regs.r14,
        _ => &mut regs.r15,
    }
}

/// The bytes of the instruction at `rip`: as many of the longest
/// instruction's 15 as the guest can read there (it may end just before
/// an unmapped page).
fn instruction_bytes(rip: u64) -> ([u8; 15], usize) {
    let mut bytes = [0u8; 15];
    let mut n = bytes.len();
    while n > 0 && guest_mem::copy_from_guest(rip, &mut bytes[..n]).is_err() {
        n -= 1;
    }
    (bytes, n)
}

/// The guest's registers as the store emulation reads and writes them,
/// with its FS and active GS bases.
struct EmulatedCpu<'r> {
    regs: &'r mut GuestRegs,
    fs_base: u64,
    gs_base: u64,
}

impl<'r> EmulatedCpu<'r> {
    fn new(current: &mut Current, regs: &'r mut GuestRegs) -> EmulatedCpu<'r> {
        super::context::sync_bases(current.vcpu);
        let vcpu = &current.vcpu;
        let gs_base = if vcpu.gs_kernel_active {
            vcpu.gs_base_kernel
        } else {
            vcpu.gs_base_user
        };
        EmulatedCpu {
            regs,
            fs_base: vcpu.fs_base,
            gs_base,
        }
    }
}

impl emulate::Registers for EmulatedCpu<'_> {
    fn gpr(&mut self, number: u8) -> u64 {
        *gpr(self.regs, number)
    }
    fn set_gpr(&mut self, number: u8, value: u64) {
        *gpr(self.regs, number) = value;
    }
    fn rflags(&self) -> u64 {
        self.regs.rflags
    }
    fn set_rflags(&mut self, value: u64) {
        self.regs.rflags = value;
    }
    fn segment_base(&self, fs: bool) -> u64 {
        if fs { self.fs_base } else { self.gs_base }
    }
}

/// A kernel store that faulted on a page it maps read-only: into one of
/// its L1 tables ("writable page tables"), or, for the hardware domain,
/// on device memory it maps read-only (`crate::iomem::read_only_write`).
/// Returns whether it was emulated (registers, flags and RIP updated);
/// otherwise the page fault goes to the guest.
fn read_only_page_store(current: &mut Current, regs: &mut GuestRegs) -> bool {
    let kernel = !context(regs).in_user_mode();
    if !mmu::ptwr_applies(&current.domain.mm, regs.error_code, kernel) {
        return false;
    }
    let (bytes, n) = instruction_bytes(regs.rip);
    let rip = regs.rip;
    let Some(store) = emulate::decode_store(&bytes[..n], rip, &mut EmulatedCpu::new(current, regs))
    else {
        return false;
    };
    let cr2 = cpu::read_cr2();
    let old = match read_only_device_store(current, regs, &store, cr2) {
        Some(done) => done.then_some(0),
        None => writable_page_table(current, regs, &store, cr2),
    };
    let Some(old) = old else {
        return false;
    };
    store.complete(old, &mut EmulatedCpu::new(current, regs));
    regs.rip = rip.wrapping_add(store.len);
    true
}

/// The store `store` that faulted at `cr2` if it faulted on device memory
/// the hardware domain maps read-only: whether it was emulated, or `None`
/// if the page is not such memory.
fn read_only_device_store(
    current: &mut Current,
    regs: &mut GuestRegs,
    store: &emulate::Store,
    cr2: u64,
) -> Option<bool> {
    if !current.domain.is_privileged() {
        return None;
    }
    let mut fx = Effects::default();
    let frame = mmu::read_only_frame(&mut ArchEnv::new(current, regs), &mut fx, cr2);
    apply_effects(current, &fx);
    let mfn = frame?.0;
    if !percpu::READ_ONLY_MMIO
        .get()
        .is_some_and(|ro| ro.contains(mfn))
    {
        return None;
    }
    let mmcfg = percpu::MMCFG
        .get()
        .map_or(&[][..], |regions| regions.as_slice());
    Some(
        match iomem::read_only_write(mmcfg, mfn, cr2, store.width, store.reads()) {
            ReadOnlyWrite::Config { address } => {
                let value = store.update.new_bytes(0, store.width);
                super::ports::mmcfg_write(address, store.width, value);
                true
            }
            ReadOnlyWrite::Dropped => true,
            ReadOnlyWrite::Refused => false,
        },
    )
}

/// The store `store` that faulted at `cr2` if it targets one of the guest
/// kernel's read-only L1 tables: the memory core validates and applies it
/// like `mmu_update`. Returns the destination's old bytes if it did
/// (including a compare-exchange that found other bytes and wrote
/// nothing).
fn writable_page_table(
    current: &mut Current,
    regs: &mut GuestRegs,
    store: &emulate::Store,
    cr2: u64,
) -> Option<u64> {
    let write = PtwrWrite {
        addr: store.addr,
        bytes: store.width,
        op: store.update,
    };
    let mut fx = Effects::default();
    let mut env = ArchEnv::new(current, regs);
    let outcome = mmu::ptwr_fault(&mut env, &mut fx, cr2, write);
    drop(env);
    apply_effects(current, &fx);
    match outcome {
        PtwrOutcome::NotHandled => None,
        PtwrOutcome::Done(old) | PtwrOutcome::CompareFailed(old) => Some(old),
    }
}

/// Emulates the instruction at RIP if `crate::emulate`'s policy allows it
/// from the guest's current ring; returns whether it did (RIP advanced).
pub fn emulate(current: &mut Current, regs: &mut GuestRegs) -> bool {
    let (bytes, n) = instruction_bytes(regs.rip);
    // Compatibility-mode user code is 32-bit code (0x40-0x4f are `inc` and
    // `dec` there, not REX prefixes).
    let bitness = if regs.cs == u64::from(FLAT_USER_CS32) {
        32
    } else {
        64
    };
    let Some(decoded) = emulate::decode(&bytes[..n], bitness) else {
        return false;
    };
    let kernel = !context(regs).in_user_mode();
    let kernel_l4 = current.vcpu.mm.kernel_l4.map_or(0, Mfn::maddr);
    let fault_address = cr2(current);
    let privileged = current.domain.is_privileged();
    let vcpu = &mut current.vcpu;
    // `xsetbv` before CR4.OSXSAVE: #UD, as the CPU gives it.
    let mut undefined = false;
    let done = match decoded.insn {
        Insn::ForcedCpuid => {
            let view = crate::cpuid::View {
                xcr0: vcpu.xcr0,
                cr4_osxsave: vcpu.cr4_osxsave,
                kernel,
            };
            #[allow(clippy::cast_possible_truncation, reason = "CPUID takes EAX and ECX")]
            let r = cpu::guest_cpuid(regs.rax as u32, regs.rcx as u32, view);
            (regs.rax, regs.rbx, regs.rcx, regs.rdx) =
                (r[0].into(), r[1].into(), r[2].into(), r[3].into());
            true
        }
        // Xen's rule: the virtual IOPL must reach the mode's privilege;
        // the instruction changes nothing (events stay as the upcall mask
        // says).
        Insn::CliSti => vcpu.iopl >= if kernel { 1 } else { 3 },
        Insn::Io(access) => super::ports::emulate(current, regs, access, kernel),
        _ if !kernel => false,
        Insn::Wbinvd => {
            if privileged {
                cpu::wbinvd();
            }
            privileged
        }
        Insn::ReadDr { dr, reg } => match debug::register(u64::from(dr)) {
            Ok(index) => {
                *gpr(regs, reg) = vcpu.debugreg[index];
                true
            }
            Err(_) => false,
        },
        Insn::WriteDr { dr, reg } => {
            let value = *gpr(regs, reg);
            match debug::register(u64::from(dr))
                .and_then(|index| Ok((index, debug::check(index, value)?)))
            {
                Ok((index, value)) => {
                    vcpu.debugreg[index] = value;
                    vcpu.pending.insert(Pending::DEBUG);
                    true
                }
                Err(_) => false,
            }
        }
        Insn::Clts => {
            vcpu.fpu_ts = false;
            vcpu.pending.insert(Pending::FPU);
            true
        }
        Insn::ReadCr { cr, reg } => {
            let value = match cr {
                0 => Some(emulate::guest_cr0(vcpu.fpu_ts)),
                2 => Some(fault_address),
                3 => Some(kernel_l4),
                4 => Some(emulate::guest_cr4(vcpu.cr4_osxsave, vcpu.cr4_fsgsbase)),
                _ => None,
            };
            value.map(|v| *gpr(regs, reg) = v).is_some()
        }
        Insn::WriteCr { cr: 0, reg } => {
            let value = *gpr(regs, reg);
            let allowed = emulate::cr0_write_allowed(value, vcpu.fpu_ts);
            if allowed {
                vcpu.fpu_ts = value & (1 << 3) != 0;
                vcpu.pending.insert(Pending::FPU);
            }
            allowed
        }
        Insn::WriteCr { cr: 3, reg } => *gpr(regs, reg) == kernel_l4,
        Insn::WriteCr { cr: 4, reg } => {
            let value = *gpr(regs, reg);
            vcpu.cr4_osxsave = value & emulate::CR4_OSXSAVE != 0 && cpu::offered_xcr0() != 0;
            // As on Xen: the CPU's CR4.FSGSBASE is the guest kernel's
            // while it runs (never set behind its back); other bits are
            // ignored.
            let fsgsbase = value & emulate::CR4_FSGSBASE != 0 && cpu::fsgsbase_offered();
            if fsgsbase != vcpu.cr4_fsgsbase {
                // The fast `iret` knows the segments only while this is
                // clear: it takes the state afresh.
                this_lane().note_work();
                super::context::sync_bases(vcpu);
                vcpu.cr4_fsgsbase = fsgsbase;
                vcpu.pending.insert(Pending::CR4);
            }
            true
        }
        Insn::Xsetbv if !vcpu.cr4_osxsave => {
            undefined = true;
            false
        }
        Insn::Xsetbv => {
            let value = (regs.rdx << 32) | (regs.rax & 0xffff_ffff);
            let valid =
                regs.rcx & 0xffff_ffff == 0 && crate::cpuid::valid_xcr0(value, cpu::offered_xcr0());
            if valid {
                vcpu.xcr0 = value;
                vcpu.pending.insert(Pending::FPU);
            }
            valid
        }
        Insn::WriteCr { .. } => false,
        Insn::Rdmsr => {
            super::context::sync_bases(vcpu);
            let value = match u32::try_from(regs.rcx & 0xffff_ffff).unwrap_or(0) {
                emulate::msr::EFER => Some(cpu::efer()),
                emulate::msr::TSC => Some(cpu::rdtsc()),
                emulate::msr::PAT => Some(cpu::pat()),
                emulate::msr::TSC_AUX | emulate::msr::XEN_HYPERCALL_PAGE => Some(0),
                emulate::msr::UCODE_REV => cpu::ucode_revision(),
                emulate::msr::FS_BASE => Some(vcpu.fs_base),
                emulate::msr::GS_BASE => Some(if vcpu.gs_kernel_active {
                    vcpu.gs_base_kernel
                } else {
                    vcpu.gs_base_user
                }),
                emulate::msr::KERNEL_GS_BASE => Some(if vcpu.gs_kernel_active {
                    vcpu.gs_base_user
                } else {
                    vcpu.gs_base_kernel
                }),
                index => emulate::made_up_msr(index, cpu::msr_view(vcpu.id)),
            };
            value
                .map(|v| (regs.rax, regs.rdx) = (v & 0xffff_ffff, v >> 32))
                .is_some()
        }
        Insn::Wrmsr => {
            super::context::sync_bases(vcpu);
            let value = (regs.rdx << 32) | (regs.rax & 0xffff_ffff);
            let active_kernel = vcpu.gs_kernel_active;
            let slot = match u32::try_from(regs.rcx & 0xffff_ffff).unwrap_or(0) {
                emulate::msr::FS_BASE => Some(&mut vcpu.fs_base),
                emulate::msr::GS_BASE if active_kernel => Some(&mut vcpu.gs_base_kernel),
                emulate::msr::GS_BASE => Some(&mut vcpu.gs_base_user),
                emulate::msr::KERNEL_GS_BASE if active_kernel => Some(&mut vcpu.gs_base_user),
                emulate::msr::KERNEL_GS_BASE => Some(&mut vcpu.gs_base_kernel),
                _ => None,
            };
            match slot {
                Some(slot) if crate::layout::is_canonical(value) => {
                    *slot = value;
                    // The fast `iret` loads the bases the vCPU published.
                    this_lane().note_work();
                    vcpu.pending.insert(Pending::SEGMENTS);
                    true
                }
                Some(_) => false,
                None => {
                    emulate::ignored_msr_write(u32::try_from(regs.rcx & 0xffff_ffff).unwrap_or(0))
                }
            }
        }
    };
    if undefined {
        deliver(current, regs, UD, None);
        return true;
    }
    if done {
        regs.rip = regs.rip.wrapping_add(decoded.len);
    }
    done
}

/// The guest's descriptor tables as the CPU sees them on this exit: GDT
/// entries past the loaded frames read as zero (the trampoline maps zero
/// pages there); an LDT page not yet used is faulted in first.
struct GuestTables<'a, 'c> {
    current: &'a mut Current<'c>,
    regs: &'a mut GuestRegs,
}

impl Descriptors for GuestTables<'_, '_> {
    fn descriptor(&mut self, selector: u16) -> Option<u64> {
        let (frame, offset) = match resume::locate(selector) {
            Location::Gdt(offset) => {
                let vcpu = &self.current.vcpu;
                let page = usize::try_from(offset / PAGE_SIZE).ok()?;
                if page >= vcpu.gdt_count {
                    return Some(0);
                }
                (*vcpu.gdt_frames.get(page)?, offset % PAGE_SIZE)
            }
            Location::Ldt(offset) => {
                if offset >= u64::from(self.current.vcpu.mm.ldt_ents) * 8 {
                    return None;
                }
                let page = offset / PAGE_SIZE;
                let index = usize::try_from(page).ok()?;
                if *self.current.cpu.ldt_pages.get(index)? == 0
                    && !fault_in_ldt_page(&mut ArchEnv::new(self.current, self.regs), page)
                {
                    return None;
                }
                (*self.current.cpu.ldt_pages.get(index)?, offset % PAGE_SIZE)
            }
        };
        let va = phys_to_virt(frame * PAGE_SIZE + offset) as *const u64;
        // SAFETY: `frame` is a descriptor frame of this domain's GDT or LDT
        // (it holds the descriptor type while loaded, so it stays
        // allocated and cannot be mapped writable); `offset` is 8-aligned
        // and inside the page.
        Some(unsafe { va.read_volatile() })
    }
}

/// Makes sure the context in `regs` can be loaded by the exit `iretq`
/// (see `crate::resume`). A context the CPU would refuse gets the fault
/// the CPU would raise, delivered to the guest's handler; if the handler's
/// context cannot be loaded either, or there is no handler, the domain is
/// crashed with a log line.
#[inline]
pub fn check_exit(current: &mut Current, regs: &mut GuestRegs) {
    let frame = resume::Frame::of(regs);
    if !resume::is_plain(&frame) {
        check_unusual_exit(current, regs);
    }
}

/// [`check_exit`] for a context with the guest's own selectors or a
/// questionable RIP or RSP.
#[cold]
#[inline(never)]
fn check_unusual_exit(current: &mut Current, regs: &mut GuestRegs) {
    for delivered in [false, true] {
        if !current.domain.is_running() {
            return;
        }
        let frame = resume::Frame::of(regs);
        let Err(fault) = resume::check(&frame, &mut GuestTables { current, regs }) else {
            return;
        };
        if !delivered {
            log::debug!(
                target: GUEST,
                "d{}v0: cannot resume rip {:#x} cs {:#x} rsp {:#x} ss {:#x}: {fault}: delivered to the guest",
                current.domain.id.0,
                frame.rip,
                frame.cs,
                frame.rsp,
                frame.ss
            );
            deliver(current, regs, fault.vector, Some(fault.error_code));
            continue;
        }
        return crash(
            current,
            format_args!(
                "cannot resume rip {:#x} cs {:#x} rsp {:#x} ss {:#x}: {fault}",
                frame.rip, frame.cs, frame.rsp, frame.ss
            ),
        );
    }
}
