//! The part of a vCPU context switch that touches the CPU: FPU/SSE/AVX
//! state, segment bases and data selectors. The general registers are
//! copied by the caller; GDT, debug registers and the virtual CR0.TS are
//! loaded through the vCPU's pending work.
use core::arch::{asm, global_asm};

use crate::vcpu::{DataSelectors, Pending, Vcpu};

use super::cpu::{self, MSR_FS_BASE, MSR_GS_BASE, MSR_KERNEL_GS_BASE, rdmsr, set_cr0_ts};

global_asm!(
    r#"
    .section .text.selectors, "ax"
    /*
     * hv_load_ds, _es, _fs (selector) -> 0, or 1 if the CPU refused it (the
     * fault is recovered by `fixup`, and the register keeps its value).
     */
    .macro LOAD_SELECTOR reg
    .global hv_load_\reg
hv_load_\reg:
    .global hv_load_\reg\()_insn
hv_load_\reg\()_insn:
    mov %di, %\reg
    xor %eax, %eax
    ret
    .endm
    LOAD_SELECTOR ds
    LOAD_SELECTOR es
    LOAD_SELECTOR fs
    .global hv_load_selector_fixup
hv_load_selector_fixup:
    mov $1, %eax
    ret
    "#,
    options(att_syntax)
);

unsafe extern "C" {
    fn hv_load_ds(selector: u64) -> u64;
    fn hv_load_es(selector: u64) -> u64;
    fn hv_load_fs(selector: u64) -> u64;
    static hv_load_ds_insn: u8;
    static hv_load_es_insn: u8;
    static hv_load_fs_insn: u8;
    static hv_load_selector_fixup: u8;
}

/// If a fault at `rip` came from loading a guest selector, the address to
/// resume at (the load then reports failure).
pub fn fixup(rip: u64) -> Option<u64> {
    let at = |sym: *const u8| sym as u64;
    let loads = [
        at(core::ptr::addr_of!(hv_load_ds_insn)),
        at(core::ptr::addr_of!(hv_load_es_insn)),
        at(core::ptr::addr_of!(hv_load_fs_insn)),
    ];
    loads
        .contains(&rip)
        .then(|| at(core::ptr::addr_of!(hv_load_selector_fixup)))
}

/// Saves what of `vcpu` lives in the CPU and nowhere else: FPU/SSE/AVX
/// state, the data selectors, and the segment bases (the guest may have
/// changed them by loading a selector, or with WRFSBASE/WRGSBASE, since it
/// last told the hypervisor). Selectors and bases whose loading is still
/// pending are newer in the record than in the CPU and stay as they are.
pub fn save(vcpu: &mut Vcpu) {
    set_cr0_ts(false);
    // Every offered component, whatever the vCPU enabled: the next vCPU's
    // restore then sets each of them, from its image or to its initial
    // state, so that nothing of this vCPU's stays in the registers.
    cpu::set_xcr0(cpu::offered_xcr0());
    let area = vcpu.fpu.0.as_mut_ptr();
    // SAFETY: the area is 4096 bytes, 64-byte aligned, more than the XSAVE
    // image of the x87/SSE/AVX components XCR0 enables (or the 512-byte
    // FXSAVE image); CR0.TS is clear, so neither instruction faults.
    unsafe {
        if cpu::uses_xsave() {
            asm!("xsave64 [{}]", in(reg) area, in("eax") u32::MAX, in("edx") u32::MAX, options(nostack, preserves_flags));
        } else {
            asm!("fxsave64 [{}]", in(reg) area, options(nostack, preserves_flags));
        }
    }
    if !vcpu.pending.contains(Pending::SELECTORS) {
        let (ds, es, fs): (u16, u16, u16);
        // SAFETY: reading segment registers has no side effects.
        unsafe {
            asm!("mov {0:x}, ds", "mov {1:x}, es", "mov {2:x}, fs", out(reg) ds, out(reg) es, out(reg) fs, options(nomem, nostack, preserves_flags));
        }
        vcpu.selectors = DataSelectors { ds, es, fs };
    }
    if vcpu.pending.contains(Pending::SEGMENTS) {
        // The record is newer than the CPU (a hypercall changed it, or the
        // vCPU was switched in and never ran): the CPU's bases may even be
        // another vCPU's.
        return;
    }
    // SAFETY: the segment-base MSRs exist on every x86-64 CPU; reading
    // them has no side effects.
    let (fs_base, active, inactive) = unsafe {
        (
            rdmsr(MSR_FS_BASE),
            rdmsr(MSR_GS_BASE),
            rdmsr(MSR_KERNEL_GS_BASE),
        )
    };
    vcpu.fs_base = fs_base;
    if vcpu.gs_kernel_active {
        (vcpu.gs_base_kernel, vcpu.gs_base_user) = (active, inactive);
    } else {
        (vcpu.gs_base_user, vcpu.gs_base_kernel) = (active, inactive);
    }
}

/// Brings `vcpu`'s FS base and active GS base up to date with the CPU,
/// where the guest may have changed them with WRFSBASE/WRGSBASE (its
/// CR4.FSGSBASE is set) since the hypervisor last loaded them. Called
/// before anything that reads the record or loads it back whole; nothing
/// when the record is the newer one (loading it is pending) or the CPU's
/// CR4.FSGSBASE is still to follow the vCPU's.
#[inline(always)]
pub fn sync_bases(vcpu: &mut Vcpu) {
    if vcpu.cr4_fsgsbase {
        read_live_bases(vcpu);
    }
}

#[cold]
#[inline(never)]
fn read_live_bases(vcpu: &mut Vcpu) {
    if vcpu.pending.intersects(Pending::SEGMENTS | Pending::CR4) {
        return;
    }
    let (fs, gs): (u64, u64);
    // SAFETY: CR4.FSGSBASE is set: the vCPU's is, and no change of it is
    // pending, so the CPU's follows it; the instructions only read the
    // bases, which are this vCPU's (no segment load is pending).
    unsafe {
        asm!("rdfsbase {0}", "rdgsbase {1}", out(reg) fs, out(reg) gs, options(nomem, nostack, preserves_flags));
    }
    vcpu.fs_base = fs;
    if vcpu.gs_kernel_active {
        vcpu.gs_base_kernel = gs;
    } else {
        vcpu.gs_base_user = gs;
    }
}

/// Loads `vcpu`'s FPU/SSE/AVX state into the CPU and marks everything else
/// it owns (GDT, selectors, segment bases, debug registers, CR0.TS) to be
/// loaded on the way out, after its GDT is in place.
pub fn restore(vcpu: &mut Vcpu) {
    set_cr0_ts(false);
    let area = vcpu.fpu.0.as_ptr();
    cpu::set_xcr0(cpu::offered_xcr0());
    // SAFETY: as in `save`; the image was written by XSAVE/FXSAVE or built
    // by `FpuArea`, whose reserved header bytes are zero, so XRSTOR/FXRSTOR
    // accept it; XCR0 enables every component the image can hold.
    unsafe {
        if cpu::uses_xsave() {
            asm!("xrstor64 [{}]", in(reg) area, in("eax") u32::MAX, in("edx") u32::MAX, options(nostack, preserves_flags));
        } else {
            asm!("fxrstor64 [{}]", in(reg) area, options(nostack, preserves_flags));
        }
    }
    // Its own XCR0 is loaded with the FPU's pending work.
    vcpu.pending = Pending::all();
}

/// Loads the data selectors a vCPU was switched out with. One the CPU
/// refuses (its descriptor changed since, or it names an LDT page not
/// faulted in yet) is loaded as null instead.
pub fn load_selectors(selectors: &DataSelectors) {
    let loads: [(unsafe extern "C" fn(u64) -> u64, u16); 3] = [
        (hv_load_ds, selectors.ds),
        (hv_load_es, selectors.es),
        (hv_load_fs, selectors.fs),
    ];
    for (load, selector) in loads {
        // SAFETY: each routine loads one data segment register, which the
        // hypervisor does not use for addressing in long mode; a fault is
        // recovered through `fixup`, and a null selector never faults.
        unsafe {
            if load(u64::from(selector)) != 0 {
                load(0);
            }
        }
    }
}
