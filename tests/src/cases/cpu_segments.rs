//! `cpu_segments`, `cpu_descriptors`, `cpu_debugreg`,
//! `cpu_alignment_check`.
//!
//! `cpu_segments`: `set_segment_base` of FS (read back through `%fs` and
//! `rdmsr FS_BASE`), of the kernel GS (through `%gs` in the kernel) and of
//! the user GS (through `%gs` in user mode, while the kernel keeps its
//! own), surviving hypercalls and user-mode round trips; loading the user
//! GS selector; errors for a non-canonical base and an unknown `which`.
//!
//! `cpu_descriptors`: `set_gdt` of a read-only frame with flat user code
//! and data descriptors (a data selector from it loads), its errors (a
//! frame mapped writable, too many entries, an unreadable frame list), and
//! `update_descriptor` of every kind of descriptor: accepted (code and data
//! of every DPL, not present) or refused (system descriptors, gates to the
//! hypervisor), plus bad addresses and frames.
//!
//! `cpu_debugreg`: `set_debugreg`/`get_debugreg` round trips, an
//! execution breakpoint raising #DB with DR6 naming it, a write watchpoint,
//! and the errors: register 8 (`ENODEV`), an address in the hypervisor's
//! range or non-canonical, DR7 with general detect (`EPERM`).
//!
//! `cpu_alignment_check`: CR0.AM reads as set, and an unaligned user
//! load with RFLAGS.AC set raises #AC (error code 0) where the CPU checks
//! alignment. QEMU's TCG does not: there the load completes, and the
//! check is a SKIP that says so (a FAIL if the load read wrong data).

use core::arch::global_asm;
use core::sync::atomic::{AtomicU64, Ordering};

use guest_pv_shim::dom0_abi::Errno;
use guest_pv_shim::dom0_abi::cpu::SegmentBase;
use guest_pv_shim::dom0_abi::segment::FLAT_USER_CS;
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::hypercall as hc;
use guest_pv_shim::mm::{self, PTE_RO, PTE_RW};
use guest_pv_shim::traps::{self, Disposition, Trap, TrapFrame, UserEntry};
use guest_pv_shim::{fixup_asm, report};

use crate::support;
use crate::user_code::{OUT_0, OUT_1, set_user_word, user_word};

global_asm!(
    ".pushsection .text.user, \"ax\", @progbits",
    // Reads fs:[0x100] and gs:[0x108] into OUT_0 and OUT_1.
    ".globl user_segment_reads",
    "user_segment_reads:",
    "mov rax, qword ptr fs:[0x100]",
    "mov qword ptr [rip + shim_user_data + {o0}], rax",
    "mov rax, qword ptr gs:[0x108]",
    "mov qword ptr [rip + shim_user_data + {o1}], rax",
    "jmp shim_user_exit",
    // Sets RFLAGS.AC and reads a misaligned u64 from the user data page.
    ".globl user_unaligned",
    "user_unaligned:",
    "pushfq",
    "or qword ptr [rsp], {ac}",
    "popfq",
    "xor eax, eax",
    "2:",
    "mov rax, qword ptr [rip + shim_user_data + 0x201]",
    "3:",
    "mov qword ptr [rip + shim_user_data + {o0}], rax",
    "pushfq",
    "and qword ptr [rsp], ~{ac}",
    "popfq",
    "jmp shim_user_exit",
    ".pushsection .ex_table, \"a\"",
    ".balign 8",
    ".quad 2b, 3b, 3b",
    ".popsection",
    ".popsection",
    o0 = const OUT_0,
    o1 = const OUT_1,
    ac = const traps::RFLAGS_AC,
);

unsafe extern "C" {
    static user_segment_reads: u8;
    static user_unaligned: u8;
}

fn fs_read(offset: u64) -> u64 {
    let v: u64;
    // SAFETY: reads through FS, whose base the test set to a mapped page.
    unsafe {
        core::arch::asm!("mov {v}, qword ptr fs:[{o}]", o = in(reg) offset, v = out(reg) v, options(nostack, readonly));
    }
    v
}

fn gs_read(offset: u64) -> u64 {
    let v: u64;
    // SAFETY: reads through GS, whose base the test set to a mapped page.
    unsafe {
        core::arch::asm!("mov {v}, qword ptr gs:[{o}]", o = in(reg) offset, v = out(reg) v, options(nostack, readonly));
    }
    v
}

pub fn segments(_start_info: &'static StartInfo) {
    if !support::traps_and_user() {
        return;
    }
    let page = traps::user_data();
    set_user_word(0x100, 0xF5F5);
    set_user_word(0x108, 0x65E5);
    set_user_word(0x800 + 0x108, 0x6565);
    report::check_ret(
        "set_segment_base FS",
        hc::set_segment_base(SegmentBase::Fs as u64, page),
        0,
    );
    report::check_eq("FS reads through the new base", fs_read(0x100), 0xF5F5);
    let mut lo: u64 = 0;
    let mut hi: u64 = 0;
    let (_, t) = traps::catch(|| {
        // SAFETY: RDMSR of FS_BASE writes only RAX and RDX.
        unsafe {
            fixup_asm!("rdmsr"; in("ecx") 0xC000_0100u32, inout("rax") lo, inout("rdx") hi, options(nostack));
        }
    });
    report::check(
        "rdmsr FS_BASE gives the base",
        t.is_none() && ((hi & 0xFFFF_FFFF) << 32 | (lo & 0xFFFF_FFFF)) == page,
        format_args!("{t:x?} {hi:#x}:{lo:#x}"),
    );
    report::check_ret(
        "set_segment_base GS_KERNEL",
        hc::set_segment_base(SegmentBase::GsKernel as u64, page + 0x800),
        0,
    );
    report::check_eq("GS reads through the kernel base", gs_read(0x108), 0x6565);
    report::check_ret(
        "set_segment_base GS_USER",
        hc::set_segment_base(SegmentBase::GsUser as u64, page),
        0,
    );
    report::check_eq(
        "the kernel GS base is unchanged by GS_USER",
        gs_read(0x108),
        0x6565,
    );
    hc::xenver_version();
    let entry = core::ptr::addr_of!(user_segment_reads) as u64;
    traps::run_user(entry, FLAT_USER_CS, 0x202, UserEntry::Hypercall);
    report::check_eq(
        "user mode reads FS through the same base",
        user_word(OUT_0),
        0xF5F5,
    );
    report::check_eq(
        "user mode reads GS through the user base",
        user_word(OUT_1),
        0x65E5,
    );
    report::check_eq(
        "the kernel GS base is back after user mode",
        gs_read(0x108),
        0x6565,
    );
    report::check_eq("FS base survives user mode", fs_read(0x100), 0xF5F5);
    report::check_ret(
        "set_segment_base GS_USER_SEL with the null selector",
        hc::set_segment_base(SegmentBase::GsUserSel as u64, 0),
        0,
    );
    report::check_ret(
        "set_segment_base GS_USER_SEL with the flat user data selector",
        hc::set_segment_base(SegmentBase::GsUserSel as u64, 0xE02B),
        0,
    );
    report::check_eq(
        "the kernel GS base survives GS_USER_SEL",
        gs_read(0x108),
        0x6565,
    );
    for which in [SegmentBase::Fs, SegmentBase::GsUser, SegmentBase::GsKernel] {
        report::check_ret(
            format_args!(
                "set_segment_base {} with a non-canonical base is EINVAL",
                which.name()
            ),
            hc::set_segment_base(which as u64, 0x8000_0000_0000_0000),
            Errno::EINVAL.neg(),
        );
    }
    report::check_ret(
        "set_segment_base which 4 is EINVAL",
        hc::set_segment_base(4, 0),
        Errno::EINVAL.neg(),
    );
    hc::set_segment_base(SegmentBase::Fs as u64, 0);
    hc::set_segment_base(SegmentBase::GsKernel as u64, 0);
    hc::set_segment_base(SegmentBase::GsUser as u64, 0);
}

/// A 64-bit code descriptor with DPL `dpl`.
const fn code64(dpl: u64) -> u64 {
    0x00AF_9A00_0000_FFFF | dpl << 45
}

/// A flat writable data descriptor with DPL `dpl`.
const fn data(dpl: u64) -> u64 {
    0x00CF_9200_0000_FFFF | dpl << 45
}

/// A system descriptor of `kind` (low half only), present, DPL 0.
const fn system(kind: u64) -> u64 {
    0x0000_8000_0000_0067 | kind << 40
}

/// A 64-bit call gate's low half to `selector`, DPL `dpl`.
const fn call_gate(selector: u64, dpl: u64) -> u64 {
    0x0000_8C00_0000_1000 | selector << 16 | dpl << 45
}

pub fn descriptors(_start_info: &'static StartInfo) {
    if !support::traps() {
        return;
    }
    let Some(gdt) = support::frame() else {
        return;
    };
    let table = [0, code64(3), data(3), data(3)];
    if mm::prepare_frame(10, gdt, &table) != 0 {
        report::error("GDT frame", format_args!("cannot prepare it"));
        return;
    }
    let frames = [gdt.mfn];
    report::check_ret(
        "map the GDT frame writable",
        mm::map_window(11, gdt.mfn, PTE_RW),
        0,
    );
    // SAFETY: the frame list is readable; the frame is mapped writable, so
    // the call must fail and nothing changes.
    let ret = unsafe { hc::set_gdt(&frames, 4) };
    report::check_ret(
        "set_gdt of a frame mapped writable is EINVAL",
        ret,
        Errno::EINVAL.neg(),
    );
    mm::unmap_window(11);
    // SAFETY: as above; too many entries must be refused.
    let ret = unsafe { hc::set_gdt(&frames, 7169) };
    report::check_ret(
        "set_gdt of 7169 entries is EINVAL",
        ret,
        Errno::EINVAL.neg(),
    );
    // SAFETY: an unmapped frame list must be refused.
    let ret = unsafe { hc::set_gdt_raw(0x1000, 4) };
    report::check_ret(
        "set_gdt with an unreadable frame list is EFAULT",
        ret,
        Errno::EFAULT.neg(),
    );
    // SAFETY: the table holds flat user code/data descriptors only; the
    // running code uses the hypervisor's reserved selectors and null DS/ES.
    let ret = unsafe { hc::set_gdt(&frames, 512) };
    report::check_ret("set_gdt of a read-only frame", ret, 0);
    let (_, t) = traps::catch(|| {
        // SAFETY: loads DS and ES with the new data selector and back to
        // null; the fixup resumes after the block if a load faults.
        unsafe {
            fixup_asm!("mov eax, 0x13", "mov ds, eax", "xor eax, eax", "mov ds, eax"; out("rax") _, options(nostack))
        };
    });
    report::check(
        "a data selector of the new GDT loads",
        t.is_none(),
        format_args!("{t:x?}"),
    );
    report::check_ret(
        "the GDT frame cannot be mapped writable while loaded",
        mm::map_window(11, gdt.mfn, PTE_RW),
        Errno::EBUSY.neg(),
    );
    report::check_ret(
        "map the GDT frame read-only",
        mm::map_window(11, gdt.mfn, PTE_RO),
        0,
    );

    let upd = |index: u64, desc: u64| {
        // SAFETY: entries 4 and up of the test's GDT, unused by any
        // selector the running code holds.
        unsafe { hc::update_descriptor(gdt.maddr() + index * 8, desc) }
    };
    let accepted = [
        ("not present", 0x1234_u64),
        ("64-bit code DPL 3", code64(3)),
        ("64-bit code DPL 0", code64(0)),
        ("data DPL 3", data(3)),
        ("data DPL 1", data(1)),
        ("data DPL 0", data(0)),
    ];
    for (name, desc) in accepted {
        report::check_ret(format_args!("update_descriptor {name}"), upd(4, desc), 0);
        let back = mm::window_read(11, 4);
        report::check(
            format_args!("update_descriptor {name} is stored with DPL 1 or more"),
            desc & (1 << 47) == 0 || (back >> 45) & 3 != 0,
            format_args!("{back:#x}"),
        );
    }
    let refused = [
        ("an LDT descriptor", system(2)),
        ("an available TSS", system(9)),
        ("an interrupt gate", system(0xE)),
        ("a trap gate", system(0xF)),
        ("a call gate to the hypervisor's CS", call_gate(0xE008, 3)),
    ];
    for (name, desc) in refused {
        report::check_ret(
            format_args!("update_descriptor of {name} is EINVAL"),
            upd(5, desc),
            Errno::EINVAL.neg(),
        );
    }
    // SAFETY: a misaligned address must be refused.
    let ret = unsafe { hc::update_descriptor(gdt.maddr() + 4 * 8 + 4, data(3)) };
    report::check_ret(
        "update_descriptor at a misaligned address is EINVAL",
        ret,
        Errno::EINVAL.neg(),
    );
    // SAFETY: a page table must be refused.
    let ret = unsafe { hc::update_descriptor(mm::boot_l4_mfn() << 12, data(3)) };
    report::check_ret(
        "update_descriptor into a page table is EINVAL",
        ret,
        Errno::EINVAL.neg(),
    );
    const FOREIGN: &str = "update_descriptor into a frame the domain does not own is EINVAL";
    if let Some(foreign) = support::foreign_mfn_or_skip(&[FOREIGN]) {
        // SAFETY: a frame the domain does not own must be refused.
        let ret = unsafe { hc::update_descriptor(foreign << 12, data(3)) };
        report::check_ret(FOREIGN, ret, Errno::EINVAL.neg());
    }
    if let Some(plain) = support::frame() {
        // SAFETY: an own data frame: the write is a plain store there.
        let ret = unsafe { hc::update_descriptor(plain.maddr() + 8, data(3)) };
        report::check_ret("update_descriptor into an own data frame", ret, 0);
    }
}

/// DR6 as the #DB hook found it.
static DR6: AtomicU64 = AtomicU64::new(0);

/// DR7 with every breakpoint disabled (bit 10 reads as one).
const DR7_OFF: u64 = 0x400;

/// Records DR6 when #DB arrives and disables the breakpoints, so that an
/// instruction breakpoint's instruction runs when returned to.
fn db_hook(_frame: &mut TrapFrame, rec: &Trap) -> Disposition {
    if rec.vector != 1 {
        return Disposition::Default;
    }
    DR6.store(hc::get_debugreg(6).cast_unsigned(), Ordering::Relaxed);
    // SAFETY: disables all breakpoints and clears DR6's status bits.
    unsafe {
        hc::set_debugreg(7, DR7_OFF);
        hc::set_debugreg(6, 0xFFFF_0FF0);
    }
    Disposition::Return
}

/// A word the write watchpoint watches.
static WATCHED: AtomicU64 = AtomicU64::new(0);

pub fn debugreg(_start_info: &'static StartInfo) {
    if !support::traps() {
        return;
    }
    for (reg, value) in [
        (0u64, 0x1000u64),
        (1, 0x2008),
        (2, 0xFFFF_FFFF_8000_0000),
        (3, 0x7FFF_FFFF_F000),
    ] {
        // SAFETY: breakpoints stay disabled (DR7 untouched).
        let ret = unsafe { hc::set_debugreg(reg, value) };
        report::check_ret(format_args!("set_debugreg DR{reg}"), ret, 0);
        report::check_eq(
            format_args!("get_debugreg DR{reg} gives it back"),
            hc::get_debugreg(reg).cast_unsigned(),
            value,
        );
    }
    // SAFETY: refused register numbers and addresses change nothing.
    let (bad_reg, hv, noncanon, gd) = unsafe {
        (
            hc::set_debugreg(8, 0),
            hc::set_debugreg(0, 0xFFFF_8000_0000_0000),
            hc::set_debugreg(0, 0x8000_0000_0000_0000),
            hc::set_debugreg(7, DR7_OFF | 1 << 13),
        )
    };
    report::check_ret(
        "set_debugreg of register 8 is ENODEV",
        bad_reg,
        Errno::ENODEV.neg(),
    );
    report::check_ret(
        "get_debugreg of register 8 is ENODEV",
        hc::get_debugreg(8),
        Errno::ENODEV.neg(),
    );
    report::check_ret(
        "a breakpoint in the hypervisor's range is EPERM",
        hv,
        Errno::EPERM.neg(),
    );
    report::check_ret(
        "a non-canonical breakpoint is EPERM",
        noncanon,
        Errno::EPERM.neg(),
    );
    report::check_ret(
        "DR7 with general detect (GD) is EPERM",
        gd,
        Errno::EPERM.neg(),
    );

    traps::set_hook(Some(db_hook));
    let mut at: u64 = 0;
    let (_, t) = traps::catch(|| {
        // SAFETY: sets an execution breakpoint on label 5, which the #DB
        // hook disables before the instruction runs again.
        unsafe {
            core::arch::asm!(
                "lea {a}, [rip + 5f]",
                "mov rdi, 0",
                "mov rsi, {a}",
                "call {set}",
                "mov rdi, 7",
                "mov rsi, 0x401",
                "call {set}",
                "5:",
                "nop",
                a = out(reg) at,
                set = sym set_debugreg_c,
                out("rdi") _, out("rsi") _, out("rax") _, out("rcx") _, out("rdx") _,
                out("r8") _, out("r9") _, out("r10") _, out("r11") _,
            );
        }
    });
    report::check(
        "an execution breakpoint raises #DB at the instruction",
        t.is_some_and(|t| t.vector == 1 && t.rip == at),
        format_args!("{t:x?} breakpoint at {at:#x}"),
    );
    report::check_eq(
        "DR6 names breakpoint 0",
        DR6.load(Ordering::Relaxed) & 0xF,
        1,
    );
    // SAFETY: a write watchpoint on `WATCHED` (8 bytes, RW = write).
    unsafe {
        hc::set_debugreg(1, WATCHED.as_ptr() as u64);
        hc::set_debugreg(7, DR7_OFF | 1 << 2 | 1 << 20 | 3 << 22);
    }
    let (_, t) = traps::catch(|| WATCHED.store(0x5EE, Ordering::SeqCst));
    report::check(
        "a write watchpoint raises #DB after the write",
        t.is_some_and(|t| t.vector == 1) && WATCHED.load(Ordering::Relaxed) == 0x5EE,
        format_args!("{t:x?}"),
    );
    report::check_eq(
        "DR6 names breakpoint 1",
        DR6.load(Ordering::Relaxed) & 0xF,
        2,
    );
    traps::set_hook(None);
}

/// `set_debugreg` for the assembly above (System V arguments).
extern "C" fn set_debugreg_c(reg: u64, value: u64) -> i64 {
    // SAFETY: the caller (the breakpoint probe) has the #DB hook installed.
    unsafe { hc::set_debugreg(reg, value) }
}

pub fn alignment_check(_start_info: &'static StartInfo) {
    if !support::traps_and_user() {
        return;
    }
    let mut cr0: u64 = 0;
    let (_, t) = traps::catch(|| {
        // SAFETY: an emulated read of CR0 into RAX.
        unsafe { fixup_asm!("mov rax, cr0"; inout("rax") cr0, options(nostack)) };
    });
    if t.is_some() {
        report::error("CR0", format_args!("cannot read it: {t:x?}"));
        return;
    }
    let am = cr0 & (1 << 18) != 0;
    report::check_eq("CR0.AM reads as set", am, true);
    set_user_word(0x200, 0x1122_3344_5566_7788);
    set_user_word(0x208, 0x99AA_BBCC_DDEE_FF00);
    let before = traps::count();
    let entry = core::ptr::addr_of!(user_unaligned) as u64;
    traps::run_user(entry, FLAT_USER_CS, 0x202, UserEntry::Hypercall);
    let t = (traps::count() != before).then(traps::last);
    // With CR0.AM and RFLAGS.AC the CPU raises #AC at CPL 3. QEMU's TCG
    // does not implement alignment checking (on both platforms the load
    // then completes): that is a SKIP, as long as the load read the
    // right bytes.
    const AC: &str = "an unaligned user load with RFLAGS.AC raises #AC (error code 0)";
    let loaded = user_word(OUT_0);
    match t {
        Some(t) => {
            report::check(
                AC,
                t.vector == 17 && t.error_code == 0 && t.from_user(),
                format_args!("{t:x?}"),
            );
        }
        None if loaded == 0x0011_2233_4455_6677 => report::skip(
            AC,
            format_args!(
                "the load completed without #AC, with the right data: this CPU does no \
                 alignment checking (QEMU's TCG does not implement it; hardware and KVM do)"
            ),
        ),
        None => report::fail(
            AC,
            format_args!("no #AC, and the load read {loaded:#x} instead of 0x11223344556677"),
        ),
    }
}
