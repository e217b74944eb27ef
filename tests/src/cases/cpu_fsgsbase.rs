//! `cpu_fsgsbase` (2 vCPUs, `dom0_max_vcpus=2`): FSGSBASE as Xen 4.17
//! offers it to a 64-bit PV kernel.
//!
//! The policy shows FSGSBASE (CPUID 7.0 EBX bit 0, through the
//! forced-emulation prefix) where the CPU has it; the instructions raise
//! #UD until the kernel sets CR4.FSGSBASE (emulated, per vCPU: the CPU's
//! bit is never set behind a kernel's back), and again once it clears it.
//! With it set, the bases written with WRFSBASE/WRGSBASE in the kernel and
//! in user mode:
//! - read back with RDFSBASE/RDGSBASE, and through `rdmsr` of `FS_BASE`,
//!   `GS_BASE` and `KERNEL_GS_BASE` (the user GS base while in the kernel);
//! - survive a hypercall, `set_segment_base` and `wrmsr` of the other
//!   bases, and each kernel<->user switch (the kernel and user GS bases
//!   swap; the FS base is shared), whether user mode ends with an
//!   exception or `SYSCALL`;
//! - survive vCPU switches: vCPU 1 and vCPU 0 each write their own values
//!   every round and yield, and `getvcpucontext` of vCPU 1 reports the FS
//!   and GS bases it last wrote.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use guest_pv_shim::dom0_abi::cpu::{SegmentBase, VcpuGuestContext};
use guest_pv_shim::dom0_abi::segment::FLAT_USER_CS;
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::hypercall as hc;
use guest_pv_shim::traps::{self, Trap, UserEntry};
use guest_pv_shim::{fixup_asm, report};

use crate::support;
use crate::user_code::{ARG, OUT_0, OUT_1, set_user_word, user_word};

/// CR4.FSGSBASE.
const CR4_FSGSBASE: u64 = 1 << 16;
/// The base MSRs.
const MSR_FS_BASE: u32 = 0xC000_0100;
const MSR_GS_BASE: u32 = 0xC000_0101;
const MSR_KERNEL_GS_BASE: u32 = 0xC000_0102;
/// Rounds (yields) of the vCPU-switch part.
const ROUNDS: u64 = 40;
/// Yields vCPU 0 waits for vCPU 1 at most.
const WAIT: u32 = 100_000;

/// Distinct canonical bases (never dereferenced).
const KERNEL_FS: u64 = 0x0000_7F11_1111_1000;
const KERNEL_GS: u64 = 0x0000_7F22_2222_2000;
const USER_GS: u64 = 0x0000_7F33_3333_3000;
const SEGBASE_FS: u64 = 0x0000_7F44_4444_4000;
const MSR_USER_GS: u64 = 0x0000_7F55_5555_5000;
const USER_FS_WRITTEN: u64 = 0x0000_7F66_6666_6000;
const USER_GS_WRITTEN: u64 = 0x0000_7F77_7777_7000;
const KERNEL_GS_LATE: u64 = 0x0000_7F88_8888_8000;

core::arch::global_asm!(
    ".pushsection .text.user, \"ax\", @progbits",
    // Stores the FS and GS bases into OUT_0 and OUT_1, writes ARG and
    // ARG + 8 into them, and ends with `ud2` (ARG + 16 zero) or SYSCALL.
    ".globl user_fsgsbase",
    "user_fsgsbase:",
    "rdfsbase rax",
    "mov qword ptr [rip + shim_user_data + {o0}], rax",
    "rdgsbase rax",
    "mov qword ptr [rip + shim_user_data + {o1}], rax",
    "mov rax, qword ptr [rip + shim_user_data + {arg}]",
    "wrfsbase rax",
    "mov rax, qword ptr [rip + shim_user_data + {arg} + 8]",
    "wrgsbase rax",
    "cmp qword ptr [rip + shim_user_data + {arg} + 16], 0",
    "je shim_user_exit",
    "jmp shim_user_syscall_exit",
    ".popsection",
    o0 = const OUT_0,
    o1 = const OUT_1,
    arg = const ARG,
);

unsafe extern "C" {
    static user_fsgsbase: u8;
}

/// A result for a check line: the value, or the trap's vector.
fn shown(r: Result<u64, Trap>) -> impl core::fmt::Display {
    struct Shown(Result<u64, Trap>);
    impl core::fmt::Display for Shown {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            match self.0 {
                Ok(v) => write!(f, "{v:#x}"),
                Err(t) => write!(f, "vector {}", t.vector),
            }
        }
    }
    Shown(r)
}

fn rdfsbase() -> Result<u64, Trap> {
    let mut v = 0u64;
    let (_, t) = traps::catch(|| {
        // SAFETY: reads the FS base; a #UD resumes after it.
        unsafe { fixup_asm!("rdfsbase {v}"; v = inout(reg) v, options(nomem, nostack)) };
    });
    t.map_or(Ok(v), Err)
}

fn rdgsbase() -> Result<u64, Trap> {
    let mut v = 0u64;
    let (_, t) = traps::catch(|| {
        // SAFETY: reads the GS base; a #UD resumes after it.
        unsafe { fixup_asm!("rdgsbase {v}"; v = inout(reg) v, options(nomem, nostack)) };
    });
    t.map_or(Ok(v), Err)
}

/// WRFSBASE and WRGSBASE of `fs` and `gs` (the test's code uses neither
/// segment).
fn write_bases(fs: u64, gs: u64) -> Option<Trap> {
    traps::catch(|| {
        // SAFETY: sets the FS and the active GS base, which this kernel
        // does not use for addressing; a #UD resumes after the block.
        unsafe {
            fixup_asm!("wrfsbase {f}", "wrgsbase {g}"; f = in(reg) fs, g = in(reg) gs, options(nomem, nostack))
        };
    })
    .1
}

fn rdmsr(index: u32) -> Result<u64, Trap> {
    let (mut lo, mut hi) = (0u64, 0u64);
    let (_, t) = traps::catch(|| {
        // SAFETY: an emulated RDMSR writes only RAX and RDX.
        unsafe {
            fixup_asm!("rdmsr"; in("ecx") index, inout("rax") lo, inout("rdx") hi, options(nostack))
        };
    });
    t.map_or(Ok((hi & 0xFFFF_FFFF) << 32 | (lo & 0xFFFF_FFFF)), Err)
}

fn wrmsr(index: u32, value: u64) -> Option<Trap> {
    traps::catch(|| {
        // SAFETY: an emulated WRMSR of a segment base this kernel does not
        // use for addressing.
        unsafe {
            fixup_asm!("wrmsr"; in("ecx") index, in("rax") value & 0xFFFF_FFFF, in("rdx") value >> 32, options(nostack))
        };
    })
    .1
}

/// CR4 as the kernel reads it, with FSGSBASE set or cleared first
/// (`None`: read only); 0 if the access faulted.
fn cr4(set: Option<bool>) -> u64 {
    let mut v = 0u64;
    let (_, t) = traps::catch(|| {
        // SAFETY: CR4 accesses are emulated for a PV kernel; FSGSBASE only
        // decides whether the *FSBASE/*GSBASE instructions are usable.
        unsafe {
            match set {
                None => fixup_asm!("mov {v}, cr4"; v = inout(reg) v, options(nostack)),
                Some(on) => fixup_asm!(
                    "mov {v}, cr4",
                    "btr {v}, 16",
                    "test {on}, {on}",
                    "jz 4f",
                    "bts {v}, 16",
                    "4:",
                    "mov cr4, {v}",
                    "mov {v}, cr4";
                    v = inout(reg) v,
                    on = in(reg) u64::from(on),
                    options(nostack)
                ),
            }
        }
    });
    if t.is_some() { 0 } else { v }
}

/// Whether the policy offers FSGSBASE (forced-emulation CPUID 7.0).
fn offered() -> Option<bool> {
    super::cpu_priv::fep_cpuid_count(7, 0)
        .ok()
        .map(|[_, ebx, ..]| ebx & 1 != 0)
}

/// Runs [`user_fsgsbase`]: it reports the bases it finds and writes `fs`
/// and `gs`; it ends with SYSCALL if `syscall`, else with `ud2`.
fn run_user(fs: u64, gs: u64, syscall: bool) -> (u64, u64) {
    set_user_word(ARG, fs);
    set_user_word(ARG + 8, gs);
    set_user_word(ARG + 16, u64::from(syscall));
    set_user_word(OUT_0, 0);
    set_user_word(OUT_1, 0);
    let entry = core::ptr::addr_of!(user_fsgsbase) as u64;
    traps::run_user(entry, FLAT_USER_CS, 0x202, UserEntry::Hypercall);
    (user_word(OUT_0), user_word(OUT_1))
}

pub fn run(_start_info: &'static StartInfo) {
    if !support::traps_and_user() {
        return;
    }
    match offered() {
        Some(true) => report::ok_value("cpuid 0x7.0 EBX bit 0 (FSGSBASE)", 1),
        other => {
            report::skip(
                "FSGSBASE",
                format_args!("not offered here (forced CPUID 7.0: {other:?})"),
            );
            return;
        }
    }
    report::ok_value("CR4.FSGSBASE at start", cr4(None) & CR4_FSGSBASE);
    report::ok_value("rdfsbase before CR4.FSGSBASE", shown(rdfsbase()));
    report::ok_value("rdgsbase before CR4.FSGSBASE", shown(rdgsbase()));
    report::ok_value(
        "CR4.FSGSBASE read back after setting it",
        cr4(Some(true)) & CR4_FSGSBASE,
    );
    kernel_and_user();
    vcpu_switches();
    report::ok_value(
        "CR4.FSGSBASE read back after clearing it",
        cr4(Some(false)) & CR4_FSGSBASE,
    );
    report::ok_value("rdfsbase after clearing CR4.FSGSBASE", shown(rdfsbase()));
    report::ok_value(
        "rdmsr FS_BASE after clearing CR4.FSGSBASE",
        shown(rdmsr(MSR_FS_BASE)),
    );
    for which in [SegmentBase::Fs, SegmentBase::GsKernel, SegmentBase::GsUser] {
        hc::set_segment_base(which as u64, 0);
    }
}

/// The bases as the kernel sees them: RDFSBASE, RDGSBASE, and the three
/// MSRs.
fn show_bases(when: &str) {
    report::ok_value(format_args!("rdfsbase {when}"), shown(rdfsbase()));
    report::ok_value(format_args!("rdgsbase {when}"), shown(rdgsbase()));
    for (name, index) in [
        ("FS_BASE", MSR_FS_BASE),
        ("GS_BASE", MSR_GS_BASE),
        ("KERNEL_GS_BASE", MSR_KERNEL_GS_BASE),
    ] {
        report::ok_value(format_args!("rdmsr {name} {when}"), shown(rdmsr(index)));
    }
}

fn kernel_and_user() {
    let t = write_bases(KERNEL_FS, KERNEL_GS);
    report::check(
        "wrfsbase and wrgsbase in the kernel",
        t.is_none(),
        format_args!("{t:x?}"),
    );
    show_bases("after wrfsbase/wrgsbase");
    hc::xenver_version();
    show_bases("after a hypercall");
    report::check_ret(
        "set_segment_base GS_USER",
        hc::set_segment_base(SegmentBase::GsUser as u64, USER_GS),
        0,
    );
    show_bases("after set_segment_base GS_USER");
    report::check_ret(
        "set_segment_base FS",
        hc::set_segment_base(SegmentBase::Fs as u64, SEGBASE_FS),
        0,
    );
    show_bases("after set_segment_base FS");
    let t = wrmsr(MSR_KERNEL_GS_BASE, MSR_USER_GS);
    report::check("wrmsr KERNEL_GS_BASE", t.is_none(), format_args!("{t:x?}"));
    show_bases("after wrmsr KERNEL_GS_BASE");

    let (fs, gs) = run_user(USER_FS_WRITTEN, USER_GS_WRITTEN, false);
    report::ok_value("user rdfsbase", format_args!("{fs:#x}"));
    report::ok_value("user rdgsbase", format_args!("{gs:#x}"));
    show_bases("after user wrfsbase/wrgsbase and ud2");

    // The kernel moves its own GS base just before returning to user mode.
    let t = write_bases(KERNEL_FS, KERNEL_GS_LATE);
    report::check(
        "wrfsbase and wrgsbase again",
        t.is_none(),
        format_args!("{t:x?}"),
    );
    let (fs, gs) = run_user(USER_FS_WRITTEN + 0x1000, USER_GS_WRITTEN + 0x1000, true);
    report::ok_value("user rdfsbase, second run", format_args!("{fs:#x}"));
    report::ok_value("user rdgsbase, second run", format_args!("{gs:#x}"));
    show_bases("after user wrfsbase/wrgsbase and SYSCALL");
    let (fs, gs) = run_user(0, 0, false);
    report::ok_value("user rdfsbase, third run", format_args!("{fs:#x}"));
    report::ok_value("user rdgsbase, third run", format_args!("{gs:#x}"));
}

/// What vCPU 1 found.
static V1_UD_BEFORE: AtomicU64 = AtomicU64::new(u64::MAX);
static V1_CR4: AtomicU64 = AtomicU64::new(0);
static V1_BAD: AtomicU64 = AtomicU64::new(0);
static V1_ROUND: AtomicU64 = AtomicU64::new(0);
static V1_DONE: AtomicBool = AtomicBool::new(false);
/// Set by vCPU 0 when it has read vCPU 1's context.
static V1_RELEASE: AtomicBool = AtomicBool::new(false);

/// The FS and GS bases vCPU `vcpu` writes in `round`.
const fn round_bases(vcpu: u64, round: u64) -> (u64, u64) {
    let base = 0x0000_6000_0000_0000 | vcpu << 32 | round << 12;
    (base, base | 0x8000_0000)
}

/// Writes this round's bases, yields, and counts a base that changed.
fn rounds(vcpu: u64, bad: &AtomicU64, round_done: Option<&AtomicU64>) {
    for round in 1..=ROUNDS {
        let (fs, gs) = round_bases(vcpu, round);
        if write_bases(fs, gs).is_some() {
            bad.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(done) = round_done {
            done.store(round, Ordering::Release);
        }
        hc::sched_yield();
        if rdfsbase() != Ok(fs) || rdgsbase() != Ok(gs) {
            bad.fetch_add(1, Ordering::Relaxed);
        }
    }
}

fn worker(_vcpu: usize) {
    V1_UD_BEFORE.store(
        rdfsbase().map_or_else(|t| u64::from(t.vector), |_| 0),
        Ordering::Relaxed,
    );
    V1_CR4.store(cr4(Some(true)) & CR4_FSGSBASE, Ordering::Relaxed);
    rounds(1, &V1_BAD, Some(&V1_ROUND));
    // The last round's bases stay for vCPU 0's getvcpucontext.
    while !V1_RELEASE.load(Ordering::Acquire) {
        hc::sched_yield();
    }
    cr4(Some(false));
    V1_DONE.store(true, Ordering::Release);
}

fn vcpu_switches() {
    if !support::start_vcpu(1, worker) {
        return;
    }
    let bad = AtomicU64::new(0);
    rounds(0, &bad, None);
    let finished = support::yield_until(WAIT, || V1_ROUND.load(Ordering::Acquire) == ROUNDS);
    report::check(
        "vCPU 1 finished its rounds",
        finished,
        format_args!("round {}", V1_ROUND.load(Ordering::Relaxed)),
    );
    // One more yield: vCPU 1 finishes its last round and waits.
    hc::sched_yield();
    report::ok_value(
        "vCPU 1: rdfsbase before its CR4.FSGSBASE (vCPU 0 has it)",
        format_args!("vector {}", V1_UD_BEFORE.load(Ordering::Relaxed)),
    );
    report::ok_value(
        "vCPU 1: CR4.FSGSBASE read back after setting it",
        V1_CR4.load(Ordering::Relaxed),
    );
    report::check_eq(
        "vCPU 0 kept its FS and GS bases across every yield",
        bad.load(Ordering::Relaxed),
        0,
    );
    report::check_eq(
        "vCPU 1 kept its FS and GS bases across every yield",
        V1_BAD.load(Ordering::Relaxed),
        0,
    );
    let mut c = VcpuGuestContext::zeroed();
    let ret = hc::domctl_getvcpucontext(0, 1, &mut c);
    report::check_ret("getvcpucontext of vCPU 1", ret, 0);
    let (fs, gs) = round_bases(1, ROUNDS);
    report::check_eq(
        "getvcpucontext of vCPU 1: fs_base, gs_base_kernel as it last wrote them",
        (c.fs_base, c.gs_base_kernel),
        (fs, gs),
    );
    V1_RELEASE.store(true, Ordering::Release);
    let done = support::yield_until(WAIT, || {
        V1_DONE.load(Ordering::Acquire) && hc::vcpu_is_up(1) == 0
    });
    report::check(
        "vCPU 1 finished and took itself down",
        done,
        format_args!(""),
    );
}
