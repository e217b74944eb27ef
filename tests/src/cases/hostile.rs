//! Hostile guests: CPU state a guest may legally create, or ask for, that
//! the hypervisor must survive (issue 10).
//!
//! `hostile_selectors_kernel` (ring 1, this hypervisor only: Xen's kernel
//! runs in ring 3): hypercalls made with a null SS of RPL 1, with SS a data
//! selector of the guest's own GDT, and with CS a DPL-1 code selector of
//! the guest's own GDT (reached by `lretq`) all return normally with those
//! selectors. Marking that code descriptor not present during the
//! hypercall makes the return #NP(selector) for the guest, as the CPU's
//! `iretq` would.
//!
//! `hostile_unresumable`: as the last check of `hostile_selectors_kernel`,
//! but with no trap table: the #NP has nowhere to go, and the domain is
//! crashed (with a log line) while the hypervisor carries on.
//!
//! `hostile_selectors_user`: user code far-returns to a DPL-3 code
//! selector of the guest's GDT and makes a forced-emulation CPUID there.
//!
//! `hostile_rip`: returns to an impossible RIP are #GP for the guest: an
//! `int $0x82` and a forced-emulation CPUID as the last bytes below 2^47,
//! and `HYPERVISOR_iret` to 32-bit user mode above 4 GiB or to a
//! non-canonical RIP (as Xen's faulting exit `iretq` on hardware).
//!
//! `hostile_ldt_refault`: once an LDT page is in use, a kernel store to its
//! window and a user read of it are #PF for the guest, every time (they
//! neither loop nor take references: teardown gets every frame back).
//!
//! `hostile_debugreg`: DR6 and DR7 values with bits above 31 are EINVAL.
//!
//! `hostile_machphys_io`: `MMU_MACHPHYS_UPDATE` of an I/O frame (the VGA
//! text buffer) with `foreigndom = DOMID_IO` is refused, and its M2P
//! entry stays as it was. Xen 4.17 accepts it (a deliberate difference,
//! `docs/abi-differences.md`).
//!
//! Only `hostile_debugreg` is compared with Xen. `hostile_selectors_kernel`
//! needs a ring-1 kernel. On Xen 4.17 under QEMU, the user-mode `lretq`
//! of `hostile_selectors_user` itself faults (#PF, error P|U, at the user
//! stack it has just pushed to), even to `FLAT_USER_CS` and without a new
//! GDT; not investigated further. `hostile_rip`
//! cannot agree under QEMU's TCG, whose `iretq` checks RIP neither for
//! canonical form nor against a 32-bit CS: there Xen resumes what hardware
//! would refuse (the 32-bit return above 4 GiB runs at EIP 0). The LDT
//! window is this hypervisor's.

use core::arch::{asm, global_asm};

use guest_pv_shim::dom0_abi::Errno;
use guest_pv_shim::dom0_abi::layout::TRAMPOLINE_VIRT_START;
use guest_pv_shim::dom0_abi::mmu::{MmuUpdate, MmuUpdateCmd, MmuextCmd};
use guest_pv_shim::dom0_abi::segment::{
    FLAT_USER_CS, FLAT_USER_CS32, RING1_KERNEL_CS, RING1_KERNEL_SS,
};
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::dom0_abi::types::DomId;
use guest_pv_shim::hypercall::{self as hc, FOREIGNDOM_SELF};
use guest_pv_shim::mm::{self, Frame, PTE_RO, PTE_RW};
use guest_pv_shim::report;
use guest_pv_shim::traps::{self, Disposition, Trap, TrapFrame, UserEntry};

use crate::support;
use crate::user_code::{ARG, OUT_0, OUT_1, set_user_word, user_word};

/// `__HYPERVISOR_update_descriptor`.
const UPDATE_DESCRIPTOR: u64 = 10;
/// `__HYPERVISOR_xen_version`.
const XEN_VERSION: u64 = 17;
/// `xen_version(XENVER_version)` on both platforms: 4.17.
const VERSION_4_17: u64 = 0x0004_0011;

/// A 64-bit code descriptor with DPL `dpl`.
const fn code64(dpl: u64) -> u64 {
    0x00AF_9A00_0000_FFFF | dpl << 45
}

/// A flat writable data descriptor with DPL `dpl`.
const fn data(dpl: u64) -> u64 {
    0x00CF_9200_0000_FFFF | dpl << 45
}

/// Present bit of a descriptor.
const PRESENT: u64 = 1 << 47;

/// The test GDT: 1 = ring-1 code, 2 = ring-1 data, 3 = user code,
/// 4 = user data.
const GDT: [u64; 5] = [0, code64(1), data(1), code64(3), data(3)];
const KERNEL_CODE_SEL: u16 = 0x08 | 1;
const KERNEL_DATA_SEL: u16 = 0x10 | 1;
const USER_CODE_SEL: u16 = 0x18 | 3;

/// The user test's GDT: only the user descriptors.
const USER_GDT: [u64; 5] = [0, 0, 0, code64(3), data(3)];

/// Loads `table` as the GDT; returns its frame.
fn load_gdt(table: &[u64]) -> Option<Frame> {
    let gdt = support::frame()?;
    if mm::prepare_frame(10, gdt, table) != 0 {
        report::error("GDT frame", format_args!("cannot prepare it"));
        return None;
    }
    // SAFETY: the running code uses only the reserved selectors, which a
    // new GDT does not change.
    let ret = unsafe { hc::set_gdt(&[gdt.mfn], table.len() as u64) };
    if ret != 0 {
        report::error("set_gdt", format_args!("{}", report::Ret(ret)));
        return None;
    }
    Some(gdt)
}

/// `xen_version(0)` by `int $0x82` with SS = `ss`; returns the result and
/// SS as read right after the hypercall.
fn version_with_ss(ss: u16) -> (u64, u16) {
    let (ret, after): (u64, u64);
    // SAFETY: SS is loaded with a selector valid at CPL 1 and restored
    // right after the hypercall; the hypercall changes no memory.
    unsafe {
        asm!(
            "mov {saved:e}, ss",
            "mov ss, {ss:e}",
            "int 0x82",
            "mov {after:e}, ss",
            "mov ss, {saved:e}",
            ss = in(reg) u32::from(ss),
            saved = out(reg) _,
            after = out(reg) after,
            inout("rax") XEN_VERSION => ret,
            inout("rdi") 0u64 => _,
            inout("rsi") 0u64 => _,
            out("rdx") _, out("r10") _, out("r8") _, out("rcx") _, out("r11") _,
        );
    }
    (ret, (after & 0xffff) as u16)
}

/// Hypercall `nr(a1, a2)` by `int $0x82` with CS = `cs` (a far return
/// there and back to the kernel's CS); returns the result and CS as read
/// right after the hypercall.
fn hypercall_with_cs(cs: u16, nr: u64, a1: u64, a2: u64) -> (u64, u16) {
    let (ret, during): (u64, u64);
    // SAFETY: `cs` is a flat 64-bit ring-1 code selector, so the code runs
    // on unchanged; the far returns only use the stack they push to.
    unsafe {
        asm!(
            "lea {tmp}, [rip + 2f]",
            "push {cs}",
            "push {tmp}",
            "retfq",
            "2:",
            "int 0x82",
            "mov {during:e}, cs",
            "lea {tmp}, [rip + 3f]",
            "push {kcs}",
            "push {tmp}",
            "retfq",
            "3:",
            cs = in(reg) u64::from(cs),
            kcs = const RING1_KERNEL_CS,
            tmp = out(reg) _,
            during = out(reg) during,
            inout("rax") nr => ret,
            inout("rdi") a1 => _,
            inout("rsi") a2 => _,
            out("rdx") _, out("r10") _, out("r8") _, out("rcx") _, out("r11") _,
        );
    }
    (ret, (during & 0xffff) as u16)
}

/// A fault taken with selectors of the test GDT returns to the kernel's
/// own selectors.
fn back_to_kernel_selectors(frame: &mut TrapFrame, rec: &Trap) -> Disposition {
    if rec.from_user() || !matches!(rec.vector, 11 | 13) {
        return Disposition::Default;
    }
    frame.cs = RING1_KERNEL_CS.into();
    frame.ss = RING1_KERNEL_SS.into();
    Disposition::Return
}

pub fn selectors_kernel(_start_info: &'static StartInfo) {
    if !support::traps() {
        return;
    }
    let Some(gdt) = load_gdt(&GDT) else {
        return;
    };
    let (ret, ss) = version_with_ss(1);
    report::check(
        "a hypercall with a null SS of RPL 1 returns with it",
        ret == VERSION_4_17 && ss == 1,
        format_args!("ret {ret:#x} ss {ss:#x}"),
    );
    let (ret, ss) = version_with_ss(KERNEL_DATA_SEL);
    report::check(
        "a hypercall with SS from the guest's GDT returns with it",
        ret == VERSION_4_17 && ss == KERNEL_DATA_SEL,
        format_args!("ret {ret:#x} ss {ss:#x}"),
    );
    let (ret, cs) = hypercall_with_cs(KERNEL_CODE_SEL, XEN_VERSION, 0, 0);
    report::check(
        "a hypercall with CS a ring-1 code selector of the guest's GDT returns with it",
        ret == VERSION_4_17 && cs == KERNEL_CODE_SEL,
        format_args!("ret {ret:#x} cs {cs:#x}"),
    );
    traps::set_hook(Some(back_to_kernel_selectors));
    let ((ret, cs), trap) = traps::catch(|| {
        hypercall_with_cs(
            KERNEL_CODE_SEL,
            UPDATE_DESCRIPTOR,
            gdt.maddr() + 8,
            code64(1) & !PRESENT,
        )
    });
    traps::set_hook(None);
    report::check(
        "making the running CS not present is #NP(selector) on the hypercall's return",
        ret == 0
            && cs == RING1_KERNEL_CS
            && trap
                .is_some_and(|t| t.vector == 11 && t.error_code == u64::from(KERNEL_CODE_SEL & !3)),
        format_args!("ret {ret:#x} cs {cs:#x} {trap:x?}"),
    );
}

pub fn unresumable(_start_info: &'static StartInfo) {
    let Some(gdt) = load_gdt(&GDT) else {
        return;
    };
    let (ret, cs) = hypercall_with_cs(
        KERNEL_CODE_SEL,
        UPDATE_DESCRIPTOR,
        gdt.maddr() + 8,
        code64(1) & !PRESENT,
    );
    report::fail(
        "a return to a CS that is not present cannot complete without a handler",
        format_args!("came back with ret {ret:#x} cs {cs:#x}"),
    );
}

global_asm!(
    ".pushsection .text.user, \"ax\", @progbits",
    // Far-returns to the code selector in ARG, makes a forced-emulation
    // CPUID of leaf 0x40000000 there and stores EBX and CS.
    ".globl user_far_cpuid",
    "user_far_cpuid:",
    "mov rax, qword ptr [rip + shim_user_data + {arg}]",
    "lea rcx, [rip + 2f]",
    "push rax",
    "push rcx",
    "retfq",
    "2:",
    "mov eax, 0x40000000",
    "xor ecx, ecx",
    "ud2",
    ".ascii \"xen\"",
    "cpuid",
    "mov qword ptr [rip + shim_user_data + {o0}], rbx",
    "mov ax, cs",
    "movzx eax, ax",
    "mov qword ptr [rip + shim_user_data + {o1}], rax",
    "jmp shim_user_exit",
    ".popsection",
    arg = const ARG,
    o0 = const OUT_0,
    o1 = const OUT_1,
);

unsafe extern "C" {
    /// See the assembly above.
    static user_far_cpuid: u8;
}

pub fn selectors_user(_start_info: &'static StartInfo) {
    if !support::traps_and_user() || load_gdt(&USER_GDT).is_none() {
        return;
    }
    set_user_word(ARG, USER_CODE_SEL.into());
    set_user_word(OUT_0, 0);
    set_user_word(OUT_1, 0);
    let entry = &raw const user_far_cpuid as u64;
    let exit = traps::run_user(entry, FLAT_USER_CS, 0x202, UserEntry::Hypercall);
    report::check(
        "forced-emulation CPUID with CS a user code selector of the guest's GDT",
        exit.vector == 6 && user_word(OUT_0) == 0x566e_6558,
        format_args!("ebx {:#x} {exit:x?}", user_word(OUT_0)),
    );
    report::check_eq(
        "user mode keeps that CS across the emulation",
        user_word(OUT_1),
        u64::from(USER_CODE_SEL),
    );
}

/// The page that ends at 2^47, the top of the lower canonical half.
const TOP_PAGE: u64 = 0x7FFF_FFFF_F000;
/// `int $0x82` as the page's last two bytes.
const INT82_AT_END: [u8; 2] = [0xcd, 0x82];
/// `ud2; .ascii "xen"; cpuid` as the page's last seven bytes.
const CPUID_AT_END: [u8; 7] = [0x0f, 0x0b, b'x', b'e', b'n', 0x0f, 0xa2];

/// A frame holding `code` at its very end, or an `ERROR`.
fn code_frame(code: &[u8]) -> Option<Frame> {
    let f = support::frame()?;
    let mut words = [0u64; 512];
    let start = 4096 - code.len();
    for (i, byte) in code.iter().enumerate() {
        let at = start + i;
        words[at / 8] |= u64::from(*byte) << (8 * (at % 8));
    }
    if mm::prepare_frame(26, f, &words) != 0 {
        report::error("code frame", format_args!("cannot prepare it"));
        return None;
    }
    Some(f)
}

/// Builds L3 -> L2 -> L1 under L4 slot 255 so that `TOP_PAGE` can be
/// mapped with `update_va_mapping`.
fn map_top_tables() -> bool {
    let (Some(l1), Some(l2), Some(l3)) = (support::frame(), support::frame(), support::frame())
    else {
        return false;
    };
    let mut words = [0u64; 512];
    if mm::prepare_frame(26, l1, &words) != 0 {
        return false;
    }
    words[511] = l1.maddr() | PTE_RW;
    if mm::prepare_frame(26, l2, &words) != 0 {
        return false;
    }
    words[511] = l2.maddr() | PTE_RW;
    if mm::prepare_frame(26, l3, &words) != 0 {
        return false;
    }
    let req = MmuUpdate::new(
        MmuUpdateCmd::NormalPtUpdate,
        (mm::boot_l4_mfn() << 12) + 255 * 8,
        l3.maddr() | PTE_RW,
    );
    // SAFETY: L4 slot 255 is unused by the running code.
    let ret = unsafe { hc::mmu_update(core::slice::from_ref(&req), None, FOREIGNDOM_SELF) };
    if ret != 0 {
        report::error(
            "tables for the top page",
            format_args!("{}", report::Ret(ret)),
        );
    }
    ret == 0
}

/// A fault in the top page (or just past it) returns to the caller of the
/// code there, as its `ret` would.
fn return_from_top_page(frame: &mut TrapFrame, rec: &Trap) -> Disposition {
    if rec.from_user() || !(TOP_PAGE..=TOP_PAGE + 4096).contains(&rec.rip) {
        return Disposition::Default;
    }
    frame.rip = mm::read_mapped(frame.rsp);
    frame.rsp += 8;
    Disposition::Return
}

/// Calls the code that ends the top page, mapped from `code`; returns the
/// fault it ended in.
fn run_top_page(code: Frame, len: u64) -> Option<Trap> {
    // SAFETY: maps a fresh code frame at an address nothing else uses.
    let ret = unsafe { hc::update_va_mapping(TOP_PAGE, code.maddr() | PTE_RO, mm::UVMF_INVLPG) };
    if ret != 0 {
        report::error("map the top page", format_args!("{}", report::Ret(ret)));
        return None;
    }
    traps::set_hook(Some(return_from_top_page));
    let (_, trap) = traps::catch(|| {
        // SAFETY: the code at the target is a single instruction that
        // faults; the hook returns here as its `ret` would. Every register
        // it may change is declared clobbered.
        unsafe {
            asm!(
                "mov r9, rbx",
                "call {t}",
                "mov rbx, r9",
                t = in(reg) TOP_PAGE + 4096 - len,
                out("r9") _,
                out("rax") _, out("rcx") _, out("rdx") _,
                out("rdi") _, out("rsi") _, out("r8") _, out("r10") _, out("r11") _,
            );
        }
    });
    traps::set_hook(None);
    trap
}

/// Ends a user run at a #GP.
fn end_on_gp(_frame: &mut TrapFrame, rec: &Trap) -> Disposition {
    if rec.vector == 13 && rec.from_user() {
        Disposition::ResumeKernel
    } else {
        Disposition::Default
    }
}

pub fn rip(_start_info: &'static StartInfo) {
    if !support::traps_and_user() || !map_top_tables() {
        return;
    }
    let (Some(int82), Some(cpuid)) = (code_frame(&INT82_AT_END), code_frame(&CPUID_AT_END)) else {
        return;
    };
    let trap = run_top_page(int82, INT82_AT_END.len() as u64);
    report::check(
        "int $0x82 as the last bytes below 2^47 is #GP for the guest",
        trap.is_some_and(|t| t.vector == 13),
        format_args!("{trap:x?}"),
    );
    let trap = run_top_page(cpuid, CPUID_AT_END.len() as u64);
    report::check(
        "forced-emulation CPUID as the last bytes below 2^47 is #GP for the guest",
        trap.is_some_and(|t| t.vector == 13),
        format_args!("{trap:x?}"),
    );
    // SAFETY: unmaps the top page again.
    unsafe { hc::update_va_mapping(TOP_PAGE, 0, mm::UVMF_INVLPG) };

    traps::set_hook(Some(end_on_gp));
    let exit = traps::run_user(0x1_0000_0000, FLAT_USER_CS32, 0x202, UserEntry::Hypercall);
    traps::set_hook(None);
    report::check(
        "HYPERVISOR_iret to 32-bit user mode above 4 GiB is #GP for the guest",
        exit.vector == 13 && exit.from_user(),
        format_args!("{exit:x?}"),
    );
    traps::set_hook(Some(end_on_gp));
    let exit = traps::run_user(1 << 47, FLAT_USER_CS, 0x202, UserEntry::Hypercall);
    traps::set_hook(None);
    report::check(
        "HYPERVISOR_iret to a non-canonical RIP is #GP for the guest",
        exit.vector == 13 && exit.from_user(),
        format_args!("{exit:x?}"),
    );
}

/// A flat writable data descriptor with DPL 3.
const LDT_DATA_DPL3: u64 = 0x00CF_F200_0000_FFFF;
/// Selector of LDT entry 1, RPL 3.
const LDT_SELECTOR: u32 = (1 << 3) | 4 | 3;
/// Where this hypervisor maps the LDT's first page (the trampoline's LDT
/// window, `hypervisor/src/layout.rs`).
const LDT_WINDOW: u64 = TRAMPOLINE_VIRT_START + 0x40000;

fn set_ldt(base: u64, entries: u64) -> i64 {
    // SAFETY: the running code uses no LDT selector.
    unsafe { hc::mmuext_one(MmuextCmd::SetLdt as u32, base, entries) }
}

/// Loads DS from the LDT (and back to null); returns the trap, if any.
fn load_ds_from_ldt() -> Option<Trap> {
    let (_, trap) = traps::catch(|| {
        // SAFETY: DS is loaded and reset to null at once; a fault resumes
        // after the block with DS unchanged.
        unsafe {
            guest_pv_shim::fixup_asm!("mov ds, {s:e}", "xor {s:e}, {s:e}", "mov ds, {s:e}"; s = inout(reg) LDT_SELECTOR => _, options(nostack))
        };
    });
    trap
}

pub fn ldt_refault(_start_info: &'static StartInfo) {
    if !support::traps_and_user() {
        return;
    }
    let Some(page) = support::frame() else {
        return;
    };
    if mm::prepare_frame(20, page, &[0, LDT_DATA_DPL3]) != 0
        || !support::map_window(22, page.mfn, PTE_RO)
    {
        return;
    }
    report::check_ret("SET_LDT of two entries", set_ldt(mm::window_va(22), 2), 0);
    let trap = load_ds_from_ldt();
    report::check(
        "a data selector from the LDT loads",
        trap.is_none(),
        format_args!("{trap:x?}"),
    );
    for round in 1..=3 {
        // SAFETY: the window is not memory of this guest; the store faults.
        let r = unsafe { traps::try_write_u64(LDT_WINDOW + 8, 0) };
        report::check(
            format_args!("store {round} to the LDT window in use is #PF (P|W) at it"),
            r.is_err_and(|t| {
                t.vector == 14 && t.error_code & 3 == 3 && t.cr2 == Some(LDT_WINDOW + 8)
            }),
            format_args!("{r:x?}"),
        );
    }
    set_user_word(ARG, LDT_WINDOW);
    let read = &raw const crate::user_code::user_read as u64;
    let before = traps::count();
    traps::run_user(read, FLAT_USER_CS, 0x202, UserEntry::Hypercall);
    let t = (traps::count() != before).then(traps::last);
    report::check(
        "a user read of the LDT window in use is #PF (P|U) at it",
        t.is_some_and(|t| t.vector == 14 && t.error_code & 5 == 5 && t.cr2 == Some(LDT_WINDOW)),
        format_args!("{t:x?}"),
    );
    let trap = load_ds_from_ldt();
    report::check(
        "the LDT still works",
        trap.is_none(),
        format_args!("{trap:x?}"),
    );
    report::check_ret("SET_LDT of no LDT", set_ldt(0, 0), 0);
    report::check_ret(
        "the LDT page can be mapped writable again (no reference left)",
        mm::map_window(23, page.mfn, PTE_RW),
        0,
    );
    mm::unmap_window(23);
    mm::unmap_window(22);
}

pub fn debugreg(_start_info: &'static StartInfo) {
    for (reg, value, what) in [
        (7u64, 0x400 | 1 << 32, "DR7 with bit 32"),
        (7, 0x400 | 1 << 63, "DR7 with bit 63"),
        (6, 0xFFFF_0FF0 | 1 << 32, "DR6 with bit 32"),
    ] {
        // SAFETY: breakpoints stay disabled whatever the outcome.
        let ret = unsafe { hc::set_debugreg(reg, value) };
        report::check_ret(
            format_args!("set_debugreg of {what} is EINVAL"),
            ret,
            Errno::EINVAL.neg(),
        );
    }
    report::check_eq(
        "DR7 is unchanged",
        hc::get_debugreg(7).cast_unsigned(),
        0x400,
    );
    report::check_eq(
        "DR6 is unchanged",
        hc::get_debugreg(6).cast_unsigned(),
        0xFFFF_0FF0,
    );
}

/// The VGA text buffer: an I/O frame on both platforms under QEMU.
const VGA_MFN: u64 = 0xB8;

pub fn machphys_io(_start_info: &'static StartInfo) {
    let before = mm::m2p(VGA_MFN);
    let req = MmuUpdate::new(MmuUpdateCmd::MachphysUpdate, VGA_MFN << 12, 0x1234);
    // SAFETY: an M2P entry of a frame no Rust code uses; refused anyway.
    let ret = unsafe { hc::mmu_update(core::slice::from_ref(&req), None, u64::from(DomId::IO.0)) };
    report::check_ret(
        "MACHPHYS_UPDATE of an I/O frame with DOMID_IO is EINVAL",
        ret,
        Errno::EINVAL.neg(),
    );
    report::check_eq(
        "the I/O frame's M2P entry is unchanged",
        mm::m2p(VGA_MFN),
        before,
    );
}

/// The hypervisor's own MMIO under QEMU's q35 machine: the local APIC
/// and the I/O APIC.
const HYPERVISOR_MMIO: [(&str, u64); 2] = [("the local APIC", 0xfee00), ("the I/O APIC", 0xfec00)];

/// The PTE's writable bit.
const PTE_WRITABLE: u64 = 1 << 1;

/// Device memory dom0 maps read-only only, as on Xen: the HPET and the
/// first page of PCI's MMCFG window.
const READ_ONLY_MMIO: [(&str, u64); 2] = [("the HPET", 0xfed00), ("PCI MMCFG", 0xb0000)];

/// `hostile_hypervisor_mmio`: dom0, which has I/O rights, maps none of the
/// frames the hypervisor keeps for itself with `DOMID_IO`, writable or
/// read-only; the HPET and MMCFG map read-only even when asked writable;
/// an ordinary I/O frame still maps writable.
pub fn hypervisor_mmio(_start_info: &'static StartInfo) {
    let slot = 3;
    let entry = mm::l1_entry(mm::window_va(slot)).map_or(0, |e| e.maddr);
    let map = |value: u64| {
        let req = MmuUpdate::new(MmuUpdateCmd::NormalPtUpdate, entry, value);
        // SAFETY: the request targets a window's L1 entry, which no Rust
        // code uses; it is cleared again below.
        unsafe { hc::mmu_update(core::slice::from_ref(&req), None, u64::from(DomId::IO.0)) }
    };
    for (what, mfn) in HYPERVISOR_MMIO {
        for (how, flags) in [("writable", PTE_RW), ("read-only", PTE_RO)] {
            report::check_ret(
                format_args!("mapping {what} {how} with DOMID_IO is EPERM"),
                map((mfn << 12) | flags),
                Errno::EPERM.neg(),
            );
        }
    }
    for (what, mfn) in READ_ONLY_MMIO {
        for (how, flags) in [("writable", PTE_RW), ("read-only", PTE_RO)] {
            let ret = map((mfn << 12) | flags);
            let value = mm::l1_entry(mm::window_va(slot)).map_or(0, |e| e.value);
            report::check_observed(
                format_args!("mapping {what} asked {how} with DOMID_IO maps it read-only"),
                ret == 0 && value >> 12 & 0xff_ffff_ffff == mfn && value & PTE_WRITABLE == 0,
                format_args!("ret {}, entry {value:#x}", report::Ret(ret)),
            );
        }
    }
    report::check_ret(
        "the VGA text buffer still maps with DOMID_IO",
        map((VGA_MFN << 12) | PTE_RW),
        0,
    );
    report::check_ret("and is unmapped again", map(0), 0);
}
