//! What happens after an entry stub: hypercalls, guest exceptions, and
//! exceptions in the hypervisor itself.
use core::fmt::Write;

use dom0_abi::hypercall::HYPERCALL_VECTOR;
use dom0_abi::sched::ShutdownReason;
use dom0_abi::segment::{
    FLAT_RING3_CS32, FLAT_RING3_CS64, FLAT_RING3_DS, RING1_KERNEL_CS, RING1_KERNEL_SS,
};
use dom0_abi::stats::Counter;
use spin::Mutex;

use crate::domain::{Domain, RunState};
use crate::exit::HostExit;
use crate::hypercall::{HostInfo, dispatch::dispatch};
use crate::layout::{DIRECTMAP_VIRT_START, HYPERVISOR_TEXT_START};
use crate::mm::machine::{DomainMm, VcpuMm};
use crate::stats::Stats;
use crate::vcpu::Vcpu;

use super::entry::{GuestRegs, exit_to_guest};
use super::env::ArchEnv;
use super::trampoline::CpuViews;
use super::{cpu, guest, guest_mem, machine, mem, serial};

/// Page-fault vector.
const PF_VECTOR: u64 = 14;
/// Debug-exception vector.
const DB_VECTOR: u64 = 1;

/// The domain running on this CPU, and what hypercalls may report about the host.
pub struct Current {
    /// The running domain.
    pub domain: Domain,
    /// Its (only) vCPU.
    pub vcpu: Vcpu,
    /// Machine address of its shared_info page.
    pub shared_info: u64,
    /// The domain's memory accounting and assists.
    pub mm: DomainMm,
    /// The vCPU's base pointers and LDT.
    pub vcpu_mm: VcpuMm,
    /// This CPU's two root tables.
    pub views: CpuViews,
    /// Facts about this boot.
    pub host: HostInfo,
    /// Event counters for `stats_op` (empty without the `stats` feature).
    pub stats: Stats,
    /// Frames mapped in this CPU's LDT window, by page (0: not mapped).
    pub ldt_pages: [u64; crate::layout::trampoline::LDT_PAGE_COUNT],
    /// Free frames just before the domain was built (teardown must give
    /// every one back).
    pub free_before_build: u64,
    /// `test_nonce=` from the command line, echoed in the teardown line.
    pub test_nonce: Option<u64>,
}

/// The running domain (one CPU, one domain for now).
pub static CURRENT: Mutex<Option<Current>> = Mutex::new(None);

/// Starts running the guest context `regs`, which must sit at the top of
/// this CPU's hypervisor stack.
pub fn run_guest(regs: &mut GuestRegs) -> ! {
    if !context_is_safe(regs) {
        fatal_guest_context(regs);
    }
    // SAFETY: `regs` is the frame at the top of this CPU's hypervisor stack
    // (the caller's contract) and `context_is_safe` checked its selectors and flags.
    unsafe { exit_to_guest(regs) }
}

/// Entry from a guest: every vector lands here on the hypervisor stack.
pub fn from_guest(regs: &mut GuestRegs) -> ! {
    {
        let mut guard = CURRENT.lock();
        let Some(current) = guard.as_mut() else {
            panic!("entry from a guest while no domain runs")
        };
        let start = if Stats::ENABLED { cpu::rdtsc() } else { 0 };
        count_entry(&mut current.stats, regs.vector);
        match regs.vector {
            v if v == u64::from(HYPERCALL_VECTOR) => hypercall(current, regs),
            guest::SYSCALL_VECTOR | guest::SYSCALL32_VECTOR => guest::syscall(current, regs),
            0..32 => guest::exception(current, regs),
            // Every interrupt source is masked: nothing to do for a stray one.
            _ => {}
        }
        guest::deliver_pending_event(current, regs);
        if let RunState::ShutDown(reason) = current.domain.state {
            dom0_shut_down(current, reason);
        }
        guest::apply_pending(current);
        if Stats::ENABLED {
            current
                .stats
                .add(Counter::HypervisorTsc, cpu::rdtsc().wrapping_sub(start));
        }
    }
    run_guest(regs)
}

/// Counts one entry: every entry and exit writes CR3 once each, and both
/// writes flush (the views are loaded without PCID's no-flush bit).
fn count_entry(stats: &mut Stats, vector: u64) {
    stats.add(Counter::Entries, 1);
    stats.add(Counter::Cr3Writes, 2);
    stats.add(Counter::Cr3Flushing, 2);
    let kind = match vector {
        v if v == u64::from(HYPERCALL_VECTOR) => Counter::Hypercalls,
        0..32 | guest::SYSCALL_VECTOR | guest::SYSCALL32_VECTOR => Counter::Exceptions,
        _ => Counter::Interrupts,
    };
    stats.add(kind, 1);
}

fn hypercall(current: &mut Current, regs: &mut GuestRegs) {
    let args = [regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8];
    let number = regs.rax;
    let mut env = ArchEnv::new(current, regs);
    let result = dispatch(&mut env, number, args);
    let (preempted, replaced) = (env.preempted, env.replaced_context);
    drop(env);
    if let Some(args) = preempted {
        // Continuation: re-execute `int $0x82` with the updated arguments
        // (RAX still holds the hypercall number).
        regs.rip -= 2;
        (regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8) =
            (args[0], args[1], args[2], args[3], args[4]);
        return;
    }
    if replaced {
        // An iret (on its own or ending a multicall) loaded a whole context.
        return;
    }
    regs.rax = result.cast_unsigned();
    if cfg!(debug_assertions) {
        // Argument registers are clobbered by the ABI: make sure no guest
        // comes to rely on them surviving.
        const POISON: u64 = 0xdead_beef_dead_f00d;
        (regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8) =
            (POISON, POISON, POISON, POISON, POISON);
    }
}

/// Crashes the running domain with a logged reason.
pub fn crash(current: &mut Current, reason: core::fmt::Arguments<'_>) {
    log::error!("d{}v0: {reason}: domain crashed", current.domain.id.0);
    current.domain.crash();
}

/// dom0 has shut down: report why and end the machine, as Xen ends it when
/// its hardware domain goes away.
fn dom0_shut_down(current: &mut Current, reason: u8) -> ! {
    let (outcome, what) = match ShutdownReason::from_number(u64::from(reason)) {
        Some(ShutdownReason::Poweroff) => (HostExit::Dom0Poweroff, "halting the machine"),
        Some(ShutdownReason::Crash) => (HostExit::Dom0Crash, "crashed"),
        Some(ShutdownReason::Reboot) => (HostExit::Dom0Reboot, "rebooting the machine"),
        Some(ShutdownReason::Suspend) => (
            HostExit::Dom0Suspend,
            "suspend is not supported for dom0; stopping",
        ),
        Some(ShutdownReason::Watchdog) => {
            (HostExit::Dom0Watchdog, "watchdog: rebooting the machine")
        }
        Some(ShutdownReason::SoftReset) => (
            HostExit::Dom0SoftReset,
            "soft reset is not supported for dom0; rebooting",
        ),
        None => (
            HostExit::Dom0Reboot,
            "unknown reason; rebooting the machine",
        ),
    };
    log::info!(
        "dom0 shut down (reason {reason}: {}): {what}",
        outcome.name()
    );
    let teardown = super::builder::destroy_dom0(current);
    let (free, _) = mem::frame_counts();
    // The test harness trusts only "all returned" on a line carrying the
    // nonce it gave this boot; an inconsistent frame table wins over the
    // counts (a reference dropped early and dropped again at teardown
    // leaves the counts right).
    let verdict = if teardown.inconsistent {
        "FRAME TABLE INCONSISTENT"
    } else if free == current.free_before_build {
        "all returned"
    } else {
        "FRAMES LOST"
    };
    let nonce = TestNonce(current.test_nonce);
    log::info!(
        "dom0 torn down{nonce}: {} frames released; free frames {} before the build, {free} now: {verdict}",
        teardown.released,
        current.free_before_build
    );
    machine::end(outcome)
}

/// ` (nonce <16 hex digits>)` when the command line gave `test_nonce=`,
/// else nothing.
struct TestNonce(Option<u64>);

impl core::fmt::Display for TestNonce {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(nonce) => write!(f, " (nonce {nonce:016x})"),
            None => Ok(()),
        }
    }
}

/// Whether a context may be loaded: selectors of ring 1 or 3 from our GDT,
/// and no privilege bits in RFLAGS (IOPL 0, no VM/NT, IF set).
fn context_is_safe(regs: &mut GuestRegs) -> bool {
    const IF: u64 = 1 << 9;
    const KEEP: u64 = 0x0000_0000_0004_0dd5 | (1 << 21); // CF PF AF ZF SF TF DF OF AC ID
    regs.rflags = (regs.rflags & KEEP) | IF | 0x2;
    let (cs, ss) = (regs.cs, regs.ss);
    let kernel = cs == u64::from(RING1_KERNEL_CS) && ss == u64::from(RING1_KERNEL_SS);
    let user = (cs == u64::from(FLAT_RING3_CS64) || cs == u64::from(FLAT_RING3_CS32))
        && ss == u64::from(FLAT_RING3_DS);
    kernel || user
}

fn fatal_guest_context(regs: &GuestRegs) -> ! {
    panic!(
        "refusing to load a guest context with cs {:#x} ss {:#x}",
        regs.cs, regs.ss
    )
}

/// An exception in the hypervisor: a guest-copy fault is recovered;
/// anything else is fatal.
pub fn from_hypervisor(regs: &mut GuestRegs) {
    if regs.vector == PF_VECTOR
        && let Some(resume) = guest_mem::fixup(regs.rip)
    {
        regs.rip = resume;
        return;
    }
    if regs.vector == DB_VECTOR {
        // A guest's data breakpoint hit by the hypervisor's own access to
        // guest memory: not the guest's event, and harmless here.
        cpu::clear_dr6();
        return;
    }
    serial::enter_panic_mode();
    let mut out = serial::Console;
    let _ = writeln!(
        out,
        "\r\n(HV) FATAL: {} (vector {}, error {:#x}) in the hypervisor at rip {:#x}\r",
        exception_name(regs.vector),
        regs.vector,
        regs.error_code,
        regs.rip
    );
    let _ = writeln!(
        out,
        "(HV)   cr2 {:#018x} cr3 {:#018x} cr0 {:#018x} cr4 {:#018x}\r",
        cpu::read_cr2(),
        cpu::read_cr3(),
        cpu::read_cr0(),
        cpu::read_cr4()
    );
    dump_registers(&mut out, regs);
    backtrace(&mut out, regs.rbp);
    machine::end(HostExit::HypervisorPanic)
}

fn dump_registers(out: &mut serial::Console, r: &GuestRegs) {
    let rows = [
        ("rax", r.rax, "rbx", r.rbx, "rcx", r.rcx),
        ("rdx", r.rdx, "rsi", r.rsi, "rdi", r.rdi),
        ("rbp", r.rbp, "rsp", r.rsp, "r8 ", r.r8),
        ("r9 ", r.r9, "r10", r.r10, "r11", r.r11),
        ("r12", r.r12, "r13", r.r13, "r14", r.r14),
        ("r15", r.r15, "rfl", r.rflags, "cs ", r.cs),
    ];
    for (a, av, b, bv, c, cv) in rows {
        let _ = writeln!(out, "(HV)   {a} {av:#018x} {b} {bv:#018x} {c} {cv:#018x}\r");
    }
}

/// Walks the frame-pointer chain (the image is built with frame pointers),
/// stopping at the first frame outside the hypervisor image.
pub fn backtrace(out: &mut serial::Console, mut rbp: u64) {
    let _ = writeln!(out, "(HV)   backtrace:\r");
    for _ in 0..16 {
        if !(HYPERVISOR_TEXT_START..DIRECTMAP_VIRT_START).contains(&rbp) || !rbp.is_multiple_of(8) {
            break;
        }
        // SAFETY: `rbp` lies in the hypervisor's own mapped area (image or
        // stacks), 8-byte aligned; frames there hold [saved rbp, return rip].
        let (next, ret) = unsafe { (*(rbp as *const u64), *((rbp + 8) as *const u64)) };
        let _ = writeln!(out, "(HV)     {ret:#018x}\r");
        rbp = next;
    }
}

/// Xen-style mnemonic of an exception vector.
pub fn exception_name(vector: u64) -> &'static str {
    const NAMES: [&str; 32] = [
        "#DE (divide error)",
        "#DB (debug)",
        "NMI",
        "#BP (breakpoint)",
        "#OF (overflow)",
        "#BR (bound range)",
        "#UD (invalid opcode)",
        "#NM (device not available)",
        "#DF (double fault)",
        "coprocessor segment overrun",
        "#TS (invalid TSS)",
        "#NP (segment not present)",
        "#SS (stack fault)",
        "#GP (general protection)",
        "#PF (page fault)",
        "reserved vector 15",
        "#MF (x87 error)",
        "#AC (alignment check)",
        "#MC (machine check)",
        "#XM (SIMD error)",
        "#VE (virtualization)",
        "#CP (control protection)",
        "reserved vector 22",
        "reserved vector 23",
        "reserved vector 24",
        "reserved vector 25",
        "reserved vector 26",
        "reserved vector 27",
        "#HV (hypervisor injection)",
        "#VC (VMM communication)",
        "#SX (security)",
        "reserved vector 31",
    ];
    match usize::try_from(vector) {
        Ok(v) if v < NAMES.len() => NAMES[v],
        _ => "external interrupt",
    }
}
