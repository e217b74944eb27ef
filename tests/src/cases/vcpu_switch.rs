//! `vcpu_switch` (2 vCPUs, `dom0_max_vcpus=2`) and `vcpu_switch4` (4):
//! vCPUs taking turns through `SCHEDOP_yield` keep their own registers.
//!
//! vCPU 0 starts the others (`VCPUOP_initialise` with a kernel context of
//! `guest_pv_shim::smp`, then `VCPUOP_up`), and every vCPU runs the same
//! loop of [`ITERS`] rounds. In each round a vCPU:
//! - points its FS base and kernel GS base (`set_segment_base`) at one of
//!   two tag words of its own, alternating by round;
//! - loads values unique to (vCPU, round, register) into RBX, RBP, R9 and
//!   R12-R15 (the registers a `sched_op` call must preserve), into
//!   YMM0-15 (XMM0-15 without AVX), MXCSR (rounding mode) and the x87
//!   control word (precision), then yields and stores them all back;
//! - compares them, and reads `fs:[0]` and `gs:[0]` to see its own tag;
//! - counts a switch when another vCPU ran since its previous round.
//!
//! The rounds begin once every vCPU has reached them (each waits by
//! yielding), so that each starts them while the others can run.
//!
//! With AVX, each vCPU first enables YMM state in its XCR0 if it is not
//! (on Xen XCR0 is per vCPU and starts as x87|SSE; a PV kernel sets
//! CR4.OSXSAVE and XCR0 through emulated `mov %cr4` and `xsetbv`).
//! Each vCPU reads its system time from its own `vcpu_info`. vCPU 0 then
//! waits until every other vCPU has finished and taken itself down, and
//! reports per vCPU: rounds done, switches seen, and any register, vector,
//! MXCSR/FCW or segment-base value that was not its own.

use core::arch::{asm, x86_64::__cpuid};
use core::mem::offset_of;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use guest_pv_shim::dom0_abi::cpu::SegmentBase;
use guest_pv_shim::dom0_abi::sched::SchedOp;
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::hypercall::{self as hc, raw};
use guest_pv_shim::{fixup_asm, report, shared, smp};

use crate::support;

/// Rounds (yields) per vCPU.
const ITERS: usize = 300;
/// Yields vCPU 0 waits for the others at most.
const WAIT: u32 = 200_000;
/// General registers checked, in the order of [`Block::gpr_in`].
const GPR_NAMES: [&str; 7] = ["rbx", "rbp", "r9", "r12", "r13", "r14", "r15"];
/// 64-bit words of YMM0-15.
const VEC_WORDS: usize = 64;

/// What one round loads, and what it finds after the yield.
#[repr(C, align(32))]
struct Block {
    vec_in: [u64; VEC_WORDS],
    vec_out: [u64; VEC_WORDS],
    gpr_in: [u64; GPR_NAMES.len()],
    gpr_out: [u64; GPR_NAMES.len()],
    mxcsr_in: u32,
    mxcsr_out: u32,
    fcw_in: u16,
    fcw_out: u16,
    ret: i64,
}

/// One vCPU's results (written by that vCPU, read by vCPU 0 after it
/// finished).
struct Results {
    rounds: AtomicU64,
    switches: AtomicU64,
    gpr_bad: AtomicU64,
    vec_bad: AtomicU64,
    ctl_bad: AtomicU64,
    seg_bad: AtomicU64,
    yield_bad: AtomicU64,
    /// First wrong value seen: (round << 8 | what, got).
    first_bad: AtomicU64,
    first_bad_value: AtomicU64,
    avx: AtomicBool,
    cpuid_ecx: AtomicU64,
    xcr0_before: AtomicU64,
    xcr0_after: AtomicU64,
    cr4: AtomicU64,
    time_first: AtomicU64,
    time_last: AtomicU64,
    done: AtomicBool,
}

impl Results {
    const fn new() -> Results {
        Results {
            rounds: AtomicU64::new(0),
            switches: AtomicU64::new(0),
            gpr_bad: AtomicU64::new(0),
            vec_bad: AtomicU64::new(0),
            ctl_bad: AtomicU64::new(0),
            seg_bad: AtomicU64::new(0),
            yield_bad: AtomicU64::new(0),
            first_bad: AtomicU64::new(u64::MAX),
            first_bad_value: AtomicU64::new(0),
            avx: AtomicBool::new(false),
            cpuid_ecx: AtomicU64::new(0),
            xcr0_before: AtomicU64::new(0),
            xcr0_after: AtomicU64::new(0),
            cr4: AtomicU64::new(0),
            time_first: AtomicU64::new(0),
            time_last: AtomicU64::new(0),
            done: AtomicBool::new(false),
        }
    }

    /// Counts a wrong value in `counter`, remembering the first one.
    fn bad(&self, counter: &AtomicU64, round: usize, what: u64, got: u64) {
        counter.fetch_add(1, Ordering::Relaxed);
        if self.first_bad.load(Ordering::Relaxed) == u64::MAX {
            self.first_bad
                .store((round as u64) << 8 | what, Ordering::Relaxed);
            self.first_bad_value.store(got, Ordering::Relaxed);
        }
    }
}

/// The first wrong value a vCPU saw, for a check line (empty if none).
struct FirstBad<'a>(&'a Results);

impl core::fmt::Display for FirstBad<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let first = self.0.first_bad.load(Ordering::Relaxed);
        if first == u64::MAX {
            return Ok(());
        }
        write!(
            f,
            "; first: round {} item {:#x} value {:#x}",
            first >> 8,
            first & 0xFF,
            self.0.first_bad_value.load(Ordering::Relaxed)
        )
    }
}

static RESULTS: [Results; smp::MAX_VCPUS] = [const { Results::new() }; smp::MAX_VCPUS];

/// The vCPU that finished a round last.
static LAST_RUNNER: AtomicUsize = AtomicUsize::new(usize::MAX);
/// vCPUs the test runs, and how many of them reached their rounds: each
/// waits (yielding) until all have, so that every vCPU starts its rounds
/// while the others are runnable. Without it, a vCPU the credit
/// scheduler passes over at first (its credit the lowest, say after a
/// host hiccup was charged to it) could start only after the others had
/// finished, and see no switch through no fault of the yields.
static VCPUS: AtomicUsize = AtomicUsize::new(0);
static ARRIVED: AtomicUsize = AtomicUsize::new(0);

/// Two tag words per vCPU for FS and two for GS (each on its own line).
#[repr(C, align(64))]
struct Tags([[u64; 8]; 4 * smp::MAX_VCPUS]);

static TAGS: Tags = Tags([[0; 8]; 4 * smp::MAX_VCPUS]);

/// The value tag word `slot` (0-3: FS even/odd, GS even/odd) of `vcpu`
/// holds.
const fn tag_value(vcpu: usize, slot: usize) -> u64 {
    0x7A60_0000_0000_0000 | ((vcpu as u64) << 8) | slot as u64
}

/// The address of tag word `slot` of `vcpu`.
fn tag_address(vcpu: usize, slot: usize) -> u64 {
    core::ptr::from_ref(&TAGS.0[vcpu * 4 + slot]) as u64
}

/// Writes every tag word (before any vCPU reads one).
fn write_tags(vcpus: usize) {
    for vcpu in 0..vcpus {
        for slot in 0..4 {
            // SAFETY: a word of the static tag array; nothing reads it
            // before the vCPUs start.
            unsafe { (tag_address(vcpu, slot) as *mut u64).write_volatile(tag_value(vcpu, slot)) };
        }
    }
}

/// A value unique to (vCPU, round, register index).
const fn pattern(vcpu: usize, round: usize, index: u64) -> u64 {
    (((vcpu as u64) + 1) << 56) | (index << 40) | ((round as u64) << 8) | 0x5A
}

/// What [`enable_avx`] found.
#[derive(Clone, Copy, Debug, Default)]
struct AvxProbe {
    /// CPUID.1:ECX.
    cpuid_ecx: u32,
    /// XCR0 before, and after the `xsetbv` if one was needed.
    xcr0: (u64, u64),
    /// CR4 as read after setting OSXSAVE, if that was needed.
    cr4: u64,
}

/// Whether the CPU has AVX with OS support, enabling YMM state in this
/// vCPU's XCR0 if needed: on Xen a PV vCPU starts with XCR0 = x87|SSE
/// and must set CR4.OSXSAVE (emulated) before `xsetbv` (emulated). A
/// refused step faults and resumes after it (fixup); XCR0 tells.
fn enable_avx() -> (bool, AvxProbe) {
    let mut probe = AvxProbe {
        cpuid_ecx: __cpuid(1).ecx,
        ..AvxProbe::default()
    };
    let osxsave_avx = (1 << 27) | (1 << 28);
    if probe.cpuid_ecx & osxsave_avx != osxsave_avx {
        return (false, probe);
    }
    let xcr0 = xgetbv0();
    if xcr0 & 6 != 6 {
        let want = xcr0 | 6;
        // SAFETY: CR4 reads and writes are emulated for a PV kernel;
        // setting OSXSAVE only allows XSETBV, which enables SSE and AVX
        // state that only this test's assembly uses. A fault resumes after
        // the instruction.
        unsafe {
            fixup_asm!(
                "mov {c}, cr4",
                "bts {c}, 18",
                "mov cr4, {c}",
                "mov {c}, cr4";
                c = inout(reg) probe.cr4,
                options(nostack),
            );
            fixup_asm!(
                "xsetbv";
                in("ecx") 0,
                in("eax") want & 0xFFFF_FFFF,
                in("edx") want >> 32,
                options(nostack),
            );
        }
    }
    probe.xcr0 = (xcr0, xgetbv0());
    (probe.xcr0.1 & 6 == 6, probe)
}

/// XCR0.
fn xgetbv0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: XGETBV(0) reads XCR0 (CPUID says OSXSAVE is set).
    unsafe { asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Loads `b`'s inputs, yields with `SCHEDOP_yield` from inside the same
/// assembly, and stores the registers to `b`'s outputs.
macro_rules! round_asm {
    ($b:expr, $load:literal, $store:literal) => {{
        let stub = raw::stub_address(guest_pv_shim::dom0_abi::Hypercall::SchedOp.number())
            .expect("SchedOp has a slot in the hypercall page");
        // SAFETY: the block (RDI) is this vCPU's own; the stub (RSI) is
        // the sched_op slot of the hypercall page, called with
        // SCHEDOP_yield (no argument). RBX and RBP are saved and restored by hand; every
        // other register it changes is declared. Rust code uses no vector
        // or x87 register.
        unsafe {
            asm!(
                "push rbx",
                "push rbp",
                "push rdi",
                "push rsi",
                "mov rax, rdi",
                concat!(".irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n", $load, "\n.endr"),
                "ldmxcsr [rax + {mxcsr_in}]",
                "fldcw [rax + {fcw_in}]",
                "mov rbx, [rax + {gpr_in}]",
                "mov rbp, [rax + {gpr_in} + 8]",
                "mov r9, [rax + {gpr_in} + 16]",
                "mov r12, [rax + {gpr_in} + 24]",
                "mov r13, [rax + {gpr_in} + 32]",
                "mov r14, [rax + {gpr_in} + 40]",
                "mov r15, [rax + {gpr_in} + 48]",
                "mov eax, {nr}",
                "mov edi, {yield_op}",
                "xor esi, esi",
                "call qword ptr [rsp]",
                "mov rdi, [rsp + 8]",
                "mov [rdi + {ret}], rax",
                "mov [rdi + {gpr_out}], rbx",
                "mov [rdi + {gpr_out} + 8], rbp",
                "mov [rdi + {gpr_out} + 16], r9",
                "mov [rdi + {gpr_out} + 24], r12",
                "mov [rdi + {gpr_out} + 32], r13",
                "mov [rdi + {gpr_out} + 40], r14",
                "mov [rdi + {gpr_out} + 48], r15",
                concat!(".irp i,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n", $store, "\n.endr"),
                "stmxcsr [rdi + {mxcsr_out}]",
                "fnstcw [rdi + {fcw_out}]",
                "add rsp, 16",
                "pop rbp",
                "pop rbx",
                inout("rdi") core::ptr::from_mut($b) => _,
                inout("rsi") stub => _,
                nr = const guest_pv_shim::dom0_abi::Hypercall::SchedOp.number(),
                yield_op = const SchedOp::Yield as u32,
                mxcsr_in = const offset_of!(Block, mxcsr_in),
                fcw_in = const offset_of!(Block, fcw_in),
                gpr_in = const offset_of!(Block, gpr_in),
                ret = const offset_of!(Block, ret),
                gpr_out = const offset_of!(Block, gpr_out),
                mxcsr_out = const offset_of!(Block, mxcsr_out),
                fcw_out = const offset_of!(Block, fcw_out),
                out("rax") _,
                out("rcx") _,
                out("rdx") _,
                out("r8") _,
                out("r9") _,
                out("r10") _,
                out("r11") _,
                out("r12") _,
                out("r13") _,
                out("r14") _,
                out("r15") _,
            );
        }
    }};
}

/// One round with YMM0-15.
fn round_avx(b: &mut Block) {
    round_asm!(
        b,
        "vmovdqu ymm\\i, [rax + \\i * 32]",
        "vmovdqu [rdi + 512 + \\i * 32], ymm\\i"
    );
}

/// One round with XMM0-15.
fn round_sse(b: &mut Block) {
    round_asm!(
        b,
        "movdqu xmm\\i, [rax + \\i * 32]",
        "movdqu [rdi + 512 + \\i * 32], xmm\\i"
    );
}

const _: () = assert!(offset_of!(Block, vec_out) == 512);

/// The loop every vCPU runs (see the module documentation).
fn worker(vcpu: usize) {
    let me = &RESULTS[vcpu];
    let (avx, probe) = enable_avx();
    me.avx.store(avx, Ordering::Relaxed);
    me.cpuid_ecx
        .store(u64::from(probe.cpuid_ecx), Ordering::Relaxed);
    me.cr4.store(probe.cr4, Ordering::Relaxed);
    me.xcr0_before.store(probe.xcr0.0, Ordering::Relaxed);
    me.xcr0_after.store(probe.xcr0.1, Ordering::Relaxed);
    ARRIVED.fetch_add(1, Ordering::AcqRel);
    support::yield_until(WAIT, || {
        ARRIVED.load(Ordering::Acquire) >= VCPUS.load(Ordering::Acquire)
    });
    me.time_first
        .store(shared::system_time_of(vcpu).unwrap_or(0), Ordering::Relaxed);
    let mut b = Block {
        vec_in: [0; VEC_WORDS],
        vec_out: [0; VEC_WORDS],
        gpr_in: [0; GPR_NAMES.len()],
        gpr_out: [0; GPR_NAMES.len()],
        mxcsr_in: 0,
        mxcsr_out: 0,
        fcw_in: 0,
        fcw_out: 0,
        ret: 0,
    };
    // Words of a YMM register that hold state (all four with AVX).
    let live = if avx { 4 } else { 2 };
    for round in 0..ITERS {
        let parity = round & 1;
        hc::set_segment_base(SegmentBase::Fs as u64, tag_address(vcpu, parity));
        hc::set_segment_base(SegmentBase::GsKernel as u64, tag_address(vcpu, 2 + parity));
        for (i, w) in (0u64..).zip(b.vec_in.iter_mut()) {
            *w = pattern(vcpu, round, 16 + i);
        }
        for (i, g) in (0u64..).zip(b.gpr_in.iter_mut()) {
            *g = pattern(vcpu, round, i);
        }
        // All exceptions masked; the rounding control and the x87
        // precision control differ by vCPU and round.
        let k = (vcpu + round) % 4;
        b.mxcsr_in = 0x1F80 | [0, 1, 2, 3][k] << 13;
        b.fcw_in = 0x007F | [0, 2, 3, 2][k] << 8;
        if avx {
            round_avx(&mut b);
        } else {
            round_sse(&mut b);
        }
        if b.ret != 0 {
            me.bad(&me.yield_bad, round, 0xFF, b.ret.cast_unsigned());
        }
        let prev = LAST_RUNNER.swap(vcpu, Ordering::AcqRel);
        if prev != vcpu && round != 0 {
            me.switches.fetch_add(1, Ordering::Relaxed);
        }
        for (i, (got, want)) in b.gpr_out.iter().zip(&b.gpr_in).enumerate() {
            if got != want {
                me.bad(&me.gpr_bad, round, i as u64, *got);
            }
        }
        for (i, (got, want)) in b.vec_out.iter().zip(&b.vec_in).enumerate() {
            if i % 4 < live && got != want {
                me.bad(&me.vec_bad, round, 0x10 + i as u64, *got);
            }
        }
        if b.mxcsr_out != b.mxcsr_in {
            me.bad(&me.ctl_bad, round, 0x80, u64::from(b.mxcsr_out));
        }
        if b.fcw_out != b.fcw_in {
            me.bad(&me.ctl_bad, round, 0x81, u64::from(b.fcw_out));
        }
        // SAFETY: this round pointed both bases at tag words of this vCPU.
        let (fs, gs) = unsafe { support::fs_gs_words() };
        if fs != tag_value(vcpu, parity) {
            me.bad(&me.seg_bad, round, 0x90, fs);
        }
        if gs != tag_value(vcpu, 2 + parity) {
            me.bad(&me.seg_bad, round, 0x91, gs);
        }
        me.rounds.fetch_add(1, Ordering::Relaxed);
    }
    me.time_last
        .store(shared::system_time_of(vcpu).unwrap_or(0), Ordering::Relaxed);
    me.done.store(true, Ordering::Release);
}

/// The test body for `vcpus` vCPUs.
fn run_with(vcpus: usize) {
    if !support::traps() {
        return;
    }
    report::check_ret(
        format_args!("vCPU {} does not exist", vcpus),
        hc::vcpu_is_up(vcpus as u64),
        guest_pv_shim::dom0_abi::Errno::ENOENT.neg(),
    );
    write_tags(vcpus);
    VCPUS.store(vcpus, Ordering::Release);
    for vcpu in 1..vcpus {
        if !support::start_vcpu(vcpu, worker) {
            return;
        }
    }
    worker(0);
    let finished = support::yield_until(WAIT, || {
        (1..vcpus).all(|v| RESULTS[v].done.load(Ordering::Acquire) && hc::vcpu_is_up(v as u64) == 0)
    });
    report::check(
        "every vCPU finished and took itself down",
        finished,
        format_args!(
            "done {:?}, is_up {:?}",
            core::array::from_fn::<bool, { smp::MAX_VCPUS }, _>(
                |v| v < vcpus && RESULTS[v].done.load(Ordering::Acquire)
            ),
            core::array::from_fn::<i64, { smp::MAX_VCPUS }, _>(|v| if v < vcpus {
                hc::vcpu_is_up(v as u64)
            } else {
                -1
            }),
        ),
    );
    for (vcpu, r) in RESULTS.iter().enumerate().take(vcpus) {
        let first = FirstBad(r);
        let rounds = r.rounds.load(Ordering::Relaxed);
        let done = usize::try_from(rounds).is_ok_and(|n| n == ITERS);
        let switches = r.switches.load(Ordering::Relaxed);
        report::check_observed(
            format_args!("vCPU {vcpu} did {ITERS} rounds, each SCHEDOP_yield returning 0"),
            done && r.yield_bad.load(Ordering::Relaxed) == 0,
            format_args!(
                "{rounds} rounds, {} bad yields",
                r.yield_bad.load(Ordering::Relaxed)
            ),
        );
        report::check_observed(
            format_args!("vCPU {vcpu} saw other vCPUs run between its rounds"),
            switches > 0,
            format_args!("{switches} switches in {rounds} rounds"),
        );
        let gpr = r.gpr_bad.load(Ordering::Relaxed);
        report::check_observed(
            format_args!("vCPU {vcpu} kept its RBX, RBP, R9, R12-R15 across every yield"),
            gpr == 0,
            format_args!("{gpr} wrong{first}"),
        );
        let vec = r.vec_bad.load(Ordering::Relaxed);
        let kind = if r.avx.load(Ordering::Relaxed) {
            "YMM"
        } else {
            "XMM"
        };
        report::check_observed(
            format_args!("vCPU {vcpu} kept its vector registers across every yield"),
            vec == 0,
            format_args!(
                "{kind}0-15 (CPUID.1:ECX {:#x}, XCR0 {:#x} -> {:#x}, CR4 {:#x}), {vec} wrong{first}",
                r.cpuid_ecx.load(Ordering::Relaxed),
                r.xcr0_before.load(Ordering::Relaxed),
                r.xcr0_after.load(Ordering::Relaxed),
                r.cr4.load(Ordering::Relaxed),
            ),
        );
        let ctl = r.ctl_bad.load(Ordering::Relaxed);
        report::check_observed(
            format_args!("vCPU {vcpu} kept its MXCSR and x87 control word"),
            ctl == 0,
            format_args!("{ctl} wrong{first}"),
        );
        let seg = r.seg_bad.load(Ordering::Relaxed);
        report::check_observed(
            format_args!("vCPU {vcpu} kept its FS and kernel GS bases"),
            seg == 0,
            format_args!("{seg} wrong{first}"),
        );
        let (t0, t1) = (
            r.time_first.load(Ordering::Relaxed),
            r.time_last.load(Ordering::Relaxed),
        );
        report::check_observed(
            format_args!("vCPU {vcpu}'s own vcpu_info time advanced over its rounds"),
            t0 != 0 && t1 > t0,
            format_args!("{t0} ns -> {t1} ns"),
        );
    }
}

/// `vcpu_switch`: two vCPUs.
pub fn two(_start_info: &'static StartInfo) {
    run_with(2);
}

/// `vcpu_switch4`: four vCPUs.
pub fn four(_start_info: &'static StartInfo) {
    run_with(4);
}
