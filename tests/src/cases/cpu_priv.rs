//! `cpu_priv_kernel` and `cpu_priv_user`: privileged instructions.
//!
//! `cpu_priv_kernel`: the guest kernel is not in ring 0, so privileged
//! instructions fault and the hypervisor emulates some of them:
//! - emulated: `mov %cr3` read (the current L4's machine address, also
//!   when encoded with a ModRM memory mode, which the CPU ignores), `mov
//!   %cr0` read (PE, PG set; TS following `fpu_taskswitch` and `clts`),
//!   `mov %cr4` read (PAE set), `clts`, `wbinvd`, `rdmsr` of EFER (long
//!   mode active) and of the TSC;
//! - refused with #GP(0): `mov %cr8`, `hlt`, `cli`, `sti`, `lgdt`, `lidt`,
//!   `lldt`, `ltr`, `invd`, `invlpg`, `rdpmc`, `swapgs`, `in`/`out`
//!   without I/O rights set up, `rdmsr`/`wrmsr` of an unknown MSR and of
//!   the SYSCALL MSRs (LSTAR);
//! - `cli`/`sti` with a virtual IOPL of 1 (`PHYSDEVOP_set_iopl`) complete
//!   as no-ops (`cli` with a REX prefix too); `set_iopl` above 3 is `EINVAL`; back at 0 they are #GP(0);
//! - CPUID through the forced-emulation prefix reports Xen's leaves
//!   (`XenVMMXenVMM`) and the CPU's vendor; the prefix before anything
//!   but `cpuid` is #UD at the prefix; plain `cpuid` and `rdtsc` run.
//! - SGDT/SIDT/SLDT/STR/SMSW: this hypervisor sets CR4.UMIP where the CPU
//!   has it, so they fault (#GP); Xen does not for PV guests, so they run
//!   (and show Xen's addresses). Each platform is checked against its
//!   own documented behaviour.
//!
//! `cpu_priv_user`: from user mode every one of the kernel-only
//! instructions is #GP with error code 0 (and `ud2` is #UD, `int3` #BP),
//! including those the kernel may use.

use guest_pv_shim::dom0_abi::physdev::{PhysdevOp, PhysdevSetIopl};
use guest_pv_shim::dom0_abi::segment::FLAT_USER_CS;
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::traps::{self, Trap, UserEntry};
use guest_pv_shim::{fixup_asm, hypercall, mm, report};

use crate::support;
use crate::user_code;

/// CR0 bits.
const CR0_PE: u64 = 1 << 0;
const CR0_TS: u64 = 1 << 3;
const CR0_PG: u64 = 1 << 31;
/// CR4.PAE.
const CR4_PAE: u64 = 1 << 5;
/// EFER.LME | EFER.LMA.
const EFER_LONG_MODE: u64 = (1 << 8) | (1 << 10);

/// Runs `f` (an asm probe writing RAX) and returns (RAX, trap).
fn run_probe(f: impl FnOnce() -> u64) -> (u64, Option<Trap>) {
    traps::catch(f)
}

macro_rules! probe {
    ($($insn:literal),+) => {
        run_probe(|| {
            let mut rax: u64 = 0;
            // SAFETY: a privileged instruction that either faults (and
            // resumes after the block) or is emulated: the emulated ones
            // here change nothing the running code relies on (reads, a
            // TLB or cache flush, clearing the virtual TS).
            unsafe {
                fixup_asm!($($insn),+; inout("rax") rax, out("rcx") _, out("rdx") _, options(nostack));
            }
            rax
        })
    };
}

/// `PHYSDEVOP_set_iopl`: at 1 the kernel's `cli` and `sti` complete (as
/// no-ops); above 3 it is `EINVAL` and changes nothing; back at 0 they are
/// #GP(0) again.
fn virtual_iopl() {
    let set = |iopl: u32| {
        let arg = PhysdevSetIopl { iopl };
        // SAFETY: the hypervisor only reads the 4-byte argument.
        unsafe {
            hypercall::physdev_op_raw(PhysdevOp::SetIopl as u64, core::ptr::from_ref(&arg) as u64)
        }
    };
    report::check_ret("set_iopl 1", set(1), 0);
    emulated("cli with virtual IOPL 1", probe!("cli"));
    emulated("sti with virtual IOPL 1", probe!("sti"));
    emulated(
        "cli with a REX prefix with virtual IOPL 1",
        probe!(".byte 0x48", "cli"),
    );
    report::check_ret("set_iopl 4", set(4), -22);
    emulated("cli after a refused set_iopl", probe!("cli"));
    report::check_ret("set_iopl 0", set(0), 0);
    gp0("cli with virtual IOPL 0", probe!("cli"));
}

fn gp0(name: &str, got: (u64, Option<Trap>)) {
    let (_, t) = got;
    report::check(
        format_args!("{name} in the kernel is #GP(0)"),
        t.is_some_and(|t| t.vector == 13 && t.error_code == 0),
        format_args!("{t:x?}"),
    );
}

fn emulated(name: &str, got: (u64, Option<Trap>)) -> u64 {
    let (v, t) = got;
    report::check(
        format_args!("{name} in the kernel is emulated"),
        t.is_none(),
        format_args!("{t:x?}"),
    );
    v
}

/// CPUID leaf `leaf` through the forced-emulation prefix: (eax, ebx, ecx,
/// edx), or the trap.
fn fep_cpuid(leaf: u32) -> Result<[u32; 4], Trap> {
    fep_cpuid_count(leaf, 0)
}

/// CPUID leaf `leaf`, subleaf `subleaf`, through the forced-emulation
/// prefix.
pub(super) fn fep_cpuid_count(leaf: u32, subleaf: u32) -> Result<[u32; 4], Trap> {
    let (mut a, mut b, mut c, mut d) = (leaf, 0u32, subleaf, 0u32);
    let (_, t) = traps::catch(|| {
        // SAFETY: CPUID (emulated by the hypervisor after the prefix) only
        // writes the four declared registers; RBX is saved in R8 because
        // LLVM reserves it. EBX's value goes out through ESI, named
        // explicitly: a register the compiler picks could be RBX itself,
        // which the restore would overwrite.
        unsafe {
            fixup_asm!(
                "mov r8, rbx",
                "ud2",
                ".ascii \"xen\"",
                "cpuid",
                "mov esi, ebx",
                "mov rbx, r8";
                out("esi") b,
                inout("eax") a,
                inout("ecx") c,
                out("edx") d,
                out("r8") _,
                options(nostack),
            );
        }
    });
    t.map_or(Ok([a, b, c, d]), Err)
}

/// Plain CPUID leaf `leaf` (subleaf 0).
fn cpuid(leaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, 0);
    [r.eax, r.ebx, r.ecx, r.edx]
}

fn vendor(r: [u32; 4]) -> [u32; 3] {
    [r[1], r[3], r[2]]
}

fn rdmsr(msr: u32) -> (u64, Option<Trap>) {
    let (mut lo, mut hi) = (0u64, 0u64);
    let (_, t) = traps::catch(|| {
        // SAFETY: RDMSR writes only RAX and RDX; it faults or is emulated.
        unsafe {
            fixup_asm!("rdmsr"; in("ecx") msr, inout("rax") lo, inout("rdx") hi, options(nostack));
        }
    });
    (((hi & 0xFFFF_FFFF) << 32) | (lo & 0xFFFF_FFFF), t)
}

fn wrmsr(msr: u32, value: u64) -> Option<Trap> {
    let (_, t) = traps::catch(|| {
        // SAFETY: the MSRs written here are refused by the hypervisor (the
        // test checks that): nothing changes.
        unsafe {
            fixup_asm!(
                "wrmsr";
                in("ecx") msr,
                in("eax") (value & 0xFFFF_FFFF) as u32,
                in("edx") (value >> 32) as u32,
                options(nostack),
            );
        }
    });
    t
}

fn control_registers() {
    let cr3 = emulated("mov %cr3 read", probe!("mov rax, cr3"));
    crate::support::check_entry(
        "mov %cr3 read gives the current L4's machine address",
        cr3,
        mm::boot_l4_mfn() << 12,
    );
    // The CPU ignores the ModRM mode of a control-register move.
    let (cr3_mod0, t) = probe!(".byte 0x0f, 0x20, 0x18");
    report::check(
        "mov %cr3 read encoded with ModRM mode 0 reads CR3 into RAX",
        t.is_none() && cr3_mod0 == cr3,
        format_args!("{t:x?}, RAX {cr3_mod0:#x}, CR3 {cr3:#x}"),
    );
    let cr0 = emulated("mov %cr0 read", probe!("mov rax, cr0"));
    report::check_eq(
        "CR0 reads with PE and PG set",
        cr0 & (CR0_PE | CR0_PG),
        CR0_PE | CR0_PG,
    );
    report::check_eq("CR0.TS reads clear at first", cr0 & CR0_TS, 0);
    hypercall::fpu_taskswitch(1);
    let (cr0, _) = probe!("mov rax, cr0");
    report::check_eq(
        "CR0.TS reads set after fpu_taskswitch(1)",
        cr0 & CR0_TS,
        CR0_TS,
    );
    emulated("clts", probe!("clts"));
    let (cr0, _) = probe!("mov rax, cr0");
    report::check_eq("CR0.TS reads clear after clts", cr0 & CR0_TS, 0);
    let (_, t) = probe!("fnop");
    report::check(
        "x87 runs after clts without #NM",
        t.is_none(),
        format_args!("{t:x?}"),
    );
    let cr4 = emulated("mov %cr4 read", probe!("mov rax, cr4"));
    report::check_eq("CR4 reads with PAE set", cr4 & CR4_PAE, CR4_PAE);
    gp0("mov %cr8 read", probe!("mov rax, cr8"));
}

fn msrs() {
    let (efer, t) = rdmsr(0xC000_0080);
    report::check(
        "rdmsr EFER shows long mode active",
        t.is_none() && efer & EFER_LONG_MODE == EFER_LONG_MODE,
        format_args!("{efer:#x} {t:x?}"),
    );
    let (tsc, t) = rdmsr(0x10);
    report::check(
        "rdmsr TSC is emulated",
        t.is_none() && tsc != 0,
        format_args!("{tsc:#x} {t:x?}"),
    );
    for (name, msr) in [
        ("LSTAR", 0xC000_0082u32),
        ("unknown MSR 0x12345678", 0x1234_5678),
    ] {
        let (_, t) = rdmsr(msr);
        report::check(
            format_args!("rdmsr {name} is #GP(0)"),
            t.is_some_and(|t| t.vector == 13 && t.error_code == 0),
            format_args!("{t:x?}"),
        );
    }
    let t = wrmsr(0x1234_5678, 1);
    report::check(
        "wrmsr of an unknown MSR is #GP(0)",
        t.is_some_and(|t| t.vector == 13 && t.error_code == 0),
        format_args!("{t:x?}"),
    );
}

fn cpuid_checks() {
    match fep_cpuid(0x4000_0000) {
        Ok(r) => {
            report::check_eq(
                "forced-emulation CPUID 0x40000000 is XenVMMXenVMM",
                [r[1], r[2], r[3]],
                [0x566E_6558, 0x6558_4D4D, 0x4D4D_566E],
            );
            report::check(
                "forced-emulation CPUID 0x40000000 has leaves up to 0x40000002 at least",
                r[0] >= 0x4000_0002,
                format_args!("{:#x}", r[0]),
            );
        }
        Err(t) => report::fail(
            "forced-emulation CPUID 0x40000000 is XenVMMXenVMM",
            format_args!("{t:x?}"),
        ),
    }
    match fep_cpuid(0) {
        Ok(r) => {
            report::check_eq(
                "forced-emulation CPUID 0 gives the CPU's vendor",
                vendor(r),
                vendor(cpuid(0)),
            );
        }
        Err(t) => report::fail(
            "forced-emulation CPUID 0 gives the CPU's vendor",
            format_args!("{t:x?}"),
        ),
    }
    let mut at: u64 = 0;
    let (_, t) = traps::catch(|| {
        // SAFETY: the prefix followed by `nop` must be #UD; the fault
        // resumes after the block.
        unsafe {
            fixup_asm!("lea {a}, [rip + 5f]", "5:", "ud2", ".ascii \"xen\"", "nop"; a = out(reg) at, options(nostack));
        }
    });
    report::check(
        "the forced-emulation prefix before anything but cpuid is #UD at the prefix",
        t.is_some_and(|t| t.vector == 6 && t.rip == at),
        format_args!("{t:x?} prefix at {at:#x}"),
    );
    let (_, t) = probe!("rdtsc");
    report::check(
        "rdtsc runs in the kernel",
        t.is_none(),
        format_args!("{t:x?}"),
    );
}

fn descriptor_table_reads() {
    // UMIP: CPUID.7.0:ECX bit 2.
    let umip = cpuid(7)[2] & (1 << 2) != 0;
    let faults_here = !traps::on_xen() && umip;
    let probes: [(&str, (u64, Option<Trap>)); 5] = [
        ("sgdt", probe!("sgdt [rsp - 16]")),
        ("sidt", probe!("sidt [rsp - 16]")),
        ("sldt", probe!("sldt rax")),
        ("str", probe!("str rax")),
        ("smsw", probe!("smsw rax")),
    ];
    for (name, (_, t)) in probes {
        // Xen does not set UMIP for PV guests; this hypervisor does when
        // the CPU has it.
        let ok = if faults_here {
            t.is_some_and(|t| t.vector == 13 && t.error_code == 0)
        } else {
            t.is_none()
        };
        support::check_value(
            format_args!("{name} in the kernel behaves as the platform documents"),
            ok,
            support::Ended(t),
            format_args!("{t:x?}, UMIP {umip}"),
        );
    }
}

pub fn kernel(_start_info: &'static StartInfo) {
    if !support::traps() {
        return;
    }
    control_registers();
    emulated("wbinvd", probe!("wbinvd"));
    gp0("hlt", probe!("hlt"));
    gp0("cli", probe!("cli"));
    gp0("sti", probe!("sti"));
    virtual_iopl();
    gp0("lgdt", probe!("lgdt [rsp - 16]"));
    gp0("lidt", probe!("lidt [rsp - 16]"));
    gp0("lldt", probe!("xor eax, eax", "lldt ax"));
    gp0("ltr", probe!("xor eax, eax", "ltr ax"));
    gp0("invd", probe!("invd"));
    gp0("invlpg", probe!("invlpg [rsp]"));
    gp0("rdpmc", probe!("xor ecx, ecx", "rdpmc"));
    gp0("swapgs", probe!("swapgs"));
    gp0("in without I/O rights", probe!("in al, 0x80"));
    gp0("out without I/O rights", probe!("out 0x80, al"));
    msrs();
    cpuid_checks();
    descriptor_table_reads();
}

pub fn user(_start_info: &'static StartInfo) {
    if !support::traps_and_user() {
        return;
    }
    let gp = [
        "cli",
        "sti",
        "hlt",
        "mov rax, cr3",
        "mov rax, cr0",
        "mov cr3, rax",
        "rdmsr",
        "wrmsr",
        "in al, 0x80",
        "out 0x80, al",
        "lgdt [rsp]",
        "lidt [rsp]",
        "wbinvd",
        "invlpg [rsp]",
        "clts",
        "swapgs",
    ];
    for insn in gp {
        let t = user_probe(insn);
        report::check(
            format_args!("{insn} in user mode is #GP(0)"),
            t.is_some_and(|t| t.vector == 13 && t.error_code == 0 && t.from_user()),
            format_args!("{t:x?}"),
        );
    }
    let t = user_probe("ud2");
    report::check(
        "ud2 in user mode is #UD",
        t.is_some_and(|t| t.vector == 6 && t.from_user()),
        format_args!("{t:x?}"),
    );
    let t = user_probe("int3");
    report::check(
        "int3 in user mode is #BP",
        t.is_some_and(|t| t.vector == 3 && t.from_user()),
        format_args!("{t:x?}"),
    );
}

/// Runs the user probe of `insn` and returns the trap it took.
fn user_probe(insn: &str) -> Option<Trap> {
    let entry = user_code::probe_address(insn)?;
    let before = traps::count();
    traps::run_user(entry, FLAT_USER_CS, 0x202, UserEntry::Hypercall);
    (traps::count() != before).then(traps::last)
}

/// The leaves `cpu_cpuid_policy` shows: (leaf, subleaf).
const POLICY_LEAVES: &[(u32, u32)] = &[
    (0, 0),
    (1, 0),
    (6, 0),
    (7, 0),
    (7, 1),
    (0xd, 0),
    (0xd, 1),
    (0xd, 2),
    (0xd, 3),
    (0xd, 9),
    (2, 0),
    (4, 0),
    (0xb, 0),
    (0x8000_0000, 0),
    (0x8000_0001, 0),
    (0x8000_0005, 0),
    (0x8000_0006, 0),
    (0x8000_0007, 0),
    (0x8000_0008, 0),
    (0x8000_000a, 0),
    (0x8000_001f, 0),
    (0x8000_0021, 0),
];

/// Shows every leaf of [`POLICY_LEAVES`].
fn show_policy_leaves() {
    for &(leaf, subleaf) in POLICY_LEAVES {
        show_leaf(leaf, subleaf, "");
    }
}

/// Shows one leaf, named with `when`.
fn show_leaf(leaf: u32, subleaf: u32, when: &str) {
    match fep_cpuid_count(leaf, subleaf) {
        Ok([a, b, c, d]) => {
            report::ok_value(
                format_args!("cpuid {leaf:#x}.{subleaf}{when}"),
                format_args!("eax {a:#010x} ebx {b:#010x} ecx {c:#010x} edx {d:#010x}"),
            );
        }
        Err(t) => report::fail(
            format_args!("cpuid {leaf:#x}.{subleaf}{when}"),
            format_args!("{t:x?}"),
        ),
    }
}

/// XCR0, or `None` without CR4.OSXSAVE in the CPU (XGETBV is then #UD).
fn xgetbv0() -> Option<u64> {
    let ((lo, hi), t) = traps::catch(|| {
        let (mut lo, mut hi) = (0u32, 0u32);
        // SAFETY: XGETBV reads XCR0; a #UD resumes after it.
        unsafe {
            fixup_asm!("xgetbv"; in("ecx") 0, inout("eax") lo, inout("edx") hi, options(nomem, nostack));
        }
        (lo, hi)
    });
    t.is_none().then(|| (u64::from(hi) << 32) | u64::from(lo))
}

/// `xsetbv` of `value` into XCR`register`: the trap, if any.
fn xsetbv(register: u32, value: u64) -> Option<Trap> {
    traps::catch(|| {
        // SAFETY: XSETBV (emulated for a PV kernel, or refused) changes
        // only which XSAVE components are enabled; this guest's code uses
        // none but x87 and SSE, which every accepted value keeps.
        unsafe {
            fixup_asm!(
                "xsetbv";
                in("ecx") register,
                in("eax") value & 0xffff_ffff,
                in("edx") value >> 32,
                options(nomem, nostack),
            );
        }
    })
    .1
}

/// What a trap (or none) shows in a check line.
struct Outcome(Option<Trap>);

impl core::fmt::Display for Outcome {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match &self.0 {
            None => f.write_str("completes"),
            Some(t) => write!(f, "vector {} error {:#x}", t.vector, t.error_code),
        }
    }
}

/// CR4 as the kernel reads it, or 0 if the read faults (reported).
fn read_cr4() -> u64 {
    emulated("mov %cr4 read", probe!("mov rax, cr4"))
}

/// Writes `value` to CR4: the trap, if any.
fn write_cr4(value: u64) -> Option<Trap> {
    traps::catch(|| {
        // SAFETY: CR4 writes are emulated for a PV kernel (or refused); at
        // most they change the virtual CR4.OSXSAVE, which only decides
        // whether `xsetbv` is allowed.
        unsafe { fixup_asm!("mov cr4, {v}"; v = in(reg) value, options(nomem, nostack)) };
    })
    .1
}

/// `cpu_cpuid_policy`: the CPUID leaves a PV kernel sees through the
/// forced-emulation prefix, as Xen 4.17's PV policy gives them, and the
/// virtual CR4.OSXSAVE and XCR0 that leaf 0xd's sizes follow: a vCPU
/// starts with XCR0 = x87|SSE; `xsetbv` is #UD until the kernel sets
/// CR4.OSXSAVE (a CR4 write is accepted whatever it holds), then
/// enables AVX (0xd.0's EBX grows), and refuses another XCR, x87 left
/// out, AVX without SSE and components not offered (#GP(0)).
pub fn cpuid_policy(_start_info: &'static StartInfo) {
    if !support::traps() {
        return;
    }
    show_policy_leaves();
    if fep_cpuid(1).map_or(true, |l| l[2] & (1 << 26) == 0) {
        report::skip("XCR0", format_args!("no XSAVE"));
        return;
    }
    report::ok_value("XCR0 at boot", format_args!("{:#x?}", xgetbv0()));
    report::ok_value("CR4 at boot", format_args!("{:#x}", read_cr4()));
    report::ok_value("xsetbv before CR4.OSXSAVE", Outcome(xsetbv(0, 3)));
    let cr4 = read_cr4();
    report::ok_value(
        "a CR4 write setting OSXSAVE and PGE",
        Outcome(write_cr4(cr4 | (1 << 18) | (1 << 7))),
    );
    report::ok_value("CR4 after it", format_args!("{:#x}", read_cr4()));
    show_leaf(1, 0, " with CR4.OSXSAVE");
    report::ok_value("xsetbv of XCR1", Outcome(xsetbv(1, 3)));
    report::ok_value("xsetbv without x87", Outcome(xsetbv(0, 2)));
    report::ok_value("xsetbv of AVX without SSE", Outcome(xsetbv(0, 5)));
    report::ok_value("xsetbv of PKRU", Outcome(xsetbv(0, 0x203)));
    report::ok_value("xsetbv of x87|SSE|AVX", Outcome(xsetbv(0, 7)));
    report::ok_value("XCR0 after it", format_args!("{:#x?}", xgetbv0()));
    show_leaf(0xd, 0, " with AVX enabled");
    report::ok_value("xsetbv of x87|SSE", Outcome(xsetbv(0, 3)));
    report::ok_value("XCR0 at the end", format_args!("{:#x?}", xgetbv0()));
}

/// The MSRs `cpu_msr_policy` reads: (name, index).
const POLICY_MSRS: &[(&str, u32)] = &[
    ("APIC_BASE", 0x1b),
    ("FEATURE_CONTROL", 0x3a),
    ("SPEC_CTRL", 0x48),
    ("UCODE_REV", 0x8b),
    ("PLATFORM_INFO", 0xce),
    ("MTRR_CAP", 0xfe),
    ("ARCH_CAPABILITIES", 0x10a),
    ("MISC_FEATURES_ENABLES", 0x140),
    ("MCG_CAP", 0x179),
    ("MCG_STATUS", 0x17a),
    ("MCG_CTL", 0x17b),
    ("MISC_ENABLE", 0x1a0),
    ("MTRR_DEF_TYPE", 0x2ff),
    ("MC0_CTL", 0x400),
    ("MC0_STATUS", 0x401),
    ("MC0_ADDR", 0x402),
    ("MC0_MISC", 0x403),
    ("MC1_CTL", 0x404),
    ("MC1_STATUS", 0x405),
    ("MC2_CTL", 0x408),
    ("MC0_CTL2", 0x280),
    ("HWCR", 0xc001_0015),
    ("DE_CFG", 0xc001_1029),
];

/// `cpu_msr_policy`: what a PV kernel's `rdmsr` of each of
/// [`POLICY_MSRS`] gives (a value, or the exception), as Xen 4.17 answers
/// it.
pub fn msr_policy(_start_info: &'static StartInfo) {
    if !support::traps() {
        return;
    }
    for &(name, msr) in POLICY_MSRS {
        let (value, trap) = rdmsr(msr);
        match trap {
            None => report::ok_value(
                format_args!("rdmsr {name} ({msr:#x})"),
                format_args!("{value:#x}"),
            ),
            Some(t) => report::ok_value(
                format_args!("rdmsr {name} ({msr:#x})"),
                format_args!("vector {} error {:#x}", t.vector, t.error_code),
            ),
        }
    }
}
