//! CPU identification, control registers and MSRs (SDM vol. 3A §2.5, vol. 4).
use core::arch::asm;
use core::arch::x86_64::{__cpuid, __cpuid_count};

/// CR0.WP: supervisor writes honour read-only pages (what makes a guest's
/// read-only page-table mappings hold against ring 1).
pub const CR0_WP: u64 = 1 << 16;
/// CR0.AM: RFLAGS.AC enables alignment checks at CPL 3.
pub const CR0_AM: u64 = 1 << 18;
/// CR4.PGE: global pages.
pub const CR4_PGE: u64 = 1 << 7;
/// CR4.UMIP: SGDT/SIDT/SLDT/SMSW/STR fault outside ring 0.
pub const CR4_UMIP: u64 = 1 << 11;
/// CR4.PCIDE: process-context identifiers.
pub const CR4_PCIDE: u64 = 1 << 17;
/// CR4.OSFXSR | CR4.OSXMMEXCPT: SSE state handled by the OS.
pub const CR4_OSFXSR_OSXMMEXCPT: u64 = (1 << 9) | (1 << 10);
/// CR4.SMEP: supervisor mode (rings 0-2) cannot execute user pages.
pub const CR4_SMEP: u64 = 1 << 20;

/// IA32_EFER.
pub const MSR_EFER: u32 = 0xC000_0080;
/// EFER.NXE: the NX bit is honoured.
pub const EFER_NXE: u64 = 1 << 11;

/// The CPU features the hypervisor uses or reports.
#[derive(Clone, Copy, Debug, Default)]
pub struct Features {
    /// Vendor string ("GenuineIntel", "AuthenticAMD", ...).
    pub vendor: [u8; 12],
    /// Family, model, stepping (display values).
    pub family: u32,
    /// Model number (display value).
    pub model: u32,
    /// Stepping.
    pub stepping: u32,
    /// No-execute pages.
    pub nx: bool,
    /// 1 GiB pages.
    pub page1gb: bool,
    /// Global pages.
    pub pge: bool,
    /// Process-context identifiers.
    pub pcid: bool,
    /// INVPCID instruction.
    pub invpcid: bool,
    /// Supervisor-mode execution prevention.
    pub smep: bool,
    /// Supervisor-mode access prevention (present but not used: the guest kernel is "supervisor").
    pub smap: bool,
    /// User-mode instruction prevention.
    pub umip: bool,
    /// XSAVE family.
    pub xsave: bool,
    /// Invariant TSC.
    pub invariant_tsc: bool,
    /// Running under a hypervisor (CPUID.1:ECX[31]).
    pub hypervisor: bool,
    /// Physical address bits.
    pub phys_bits: u8,
    /// Linear address bits.
    pub virt_bits: u8,
}

/// Physical address bits of this CPU (set from CPUID at boot).
static PHYS_BITS: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(36);

/// Physical address bits of this CPU.
pub fn phys_bits() -> u8 {
    PHYS_BITS.load(core::sync::atomic::Ordering::Relaxed)
}

/// Reads the CPU's identification and feature leaves.
pub fn features() -> Features {
    let mut f = Features::default();
    let leaf0 = __cpuid(0);
    f.vendor[0..4].copy_from_slice(&leaf0.ebx.to_le_bytes());
    f.vendor[4..8].copy_from_slice(&leaf0.edx.to_le_bytes());
    f.vendor[8..12].copy_from_slice(&leaf0.ecx.to_le_bytes());
    let leaf1 = __cpuid(1);
    let base_family = (leaf1.eax >> 8) & 0xf;
    let base_model = (leaf1.eax >> 4) & 0xf;
    f.family = if base_family == 0xf {
        base_family + ((leaf1.eax >> 20) & 0xff)
    } else {
        base_family
    };
    f.model = if base_family == 0x6 || base_family == 0xf {
        base_model | (((leaf1.eax >> 16) & 0xf) << 4)
    } else {
        base_model
    };
    f.stepping = leaf1.eax & 0xf;
    f.pge = leaf1.edx & (1 << 13) != 0;
    f.pcid = leaf1.ecx & (1 << 17) != 0;
    f.xsave = leaf1.ecx & (1 << 26) != 0;
    f.hypervisor = leaf1.ecx & (1 << 31) != 0;
    if leaf0.eax >= 7 {
        let leaf7 = __cpuid_count(7, 0);
        f.smep = leaf7.ebx & (1 << 7) != 0;
        f.invpcid = leaf7.ebx & (1 << 10) != 0;
        f.smap = leaf7.ebx & (1 << 20) != 0;
        f.umip = leaf7.ecx & (1 << 2) != 0;
    }
    let max_ext = __cpuid(0x8000_0000).eax;
    if max_ext >= 0x8000_0001 {
        let ext1 = __cpuid(0x8000_0001);
        f.nx = ext1.edx & (1 << 20) != 0;
        f.page1gb = ext1.edx & (1 << 26) != 0;
    }
    if max_ext >= 0x8000_0007 {
        f.invariant_tsc = __cpuid(0x8000_0007).edx & (1 << 8) != 0;
    }
    if max_ext >= 0x8000_0008 {
        let sizes = __cpuid(0x8000_0008).eax;
        f.phys_bits = (sizes & 0xff) as u8;
        PHYS_BITS.store(f.phys_bits, core::sync::atomic::Ordering::Relaxed);
        f.virt_bits = ((sizes >> 8) & 0xff) as u8;
    } else {
        f.phys_bits = 36;
        f.virt_bits = 48;
    }
    f
}

/// Reads CR0.
pub fn read_cr0() -> u64 {
    let v;
    // SAFETY: reading CR0 has no side effects; the hypervisor runs at CPL 0.
    unsafe { asm!("mov {}, cr0", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Writes CR0.
///
/// # Safety
/// The new value must keep paging, protected mode and every invariant the
/// running code depends on (WP stays set once guests exist).
pub unsafe fn write_cr0(v: u64) {
    // SAFETY: the caller keeps the CPU in a state the running code expects.
    unsafe { asm!("mov cr0, {}", in(reg) v, options(nostack, preserves_flags)) };
}

/// Reads CR2 (the last page-fault address).
pub fn read_cr2() -> u64 {
    let v;
    // SAFETY: reading CR2 has no side effects.
    unsafe { asm!("mov {}, cr2", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Reads CR3.
pub fn read_cr3() -> u64 {
    let v;
    // SAFETY: reading CR3 has no side effects.
    unsafe { asm!("mov {}, cr3", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Loads CR3.
///
/// # Safety
/// The new root must map the running code, its stack and all data it will
/// touch at the same addresses as before.
pub unsafe fn write_cr3(v: u64) {
    // SAFETY: the caller guarantees the new tables map what runs next.
    unsafe { asm!("mov cr3, {}", in(reg) v, options(nostack, preserves_flags)) };
}

/// Reads CR4.
pub fn read_cr4() -> u64 {
    let v;
    // SAFETY: reading CR4 has no side effects.
    unsafe { asm!("mov {}, cr4", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Writes CR4.
///
/// # Safety
/// Only bits the CPU supports may be set, and PCIDE only with CR3[11:0] = 0.
pub unsafe fn write_cr4(v: u64) {
    // SAFETY: the caller sets only supported bits in a valid combination.
    unsafe { asm!("mov cr4, {}", in(reg) v, options(nostack, preserves_flags)) };
}

/// Flushes the whole TLB of this CPU, global entries and every PCID
/// included (Xen's `FLUSH_TLB`): toggling CR4.PGE where it is on, else
/// reloading CR3. A CR3 reload alone keeps global entries, and a guest may
/// set G in its own L1 entries.
pub fn flush_tlb_all() {
    let cr4 = read_cr4();
    if cr4 & CR4_PGE != 0 {
        // SAFETY: clearing and restoring PGE changes no mapping and sets
        // no new bit; either write flushes every TLB entry.
        unsafe {
            write_cr4(cr4 & !CR4_PGE);
            write_cr4(cr4);
        }
    } else {
        // SAFETY: reloading the current root changes no mapping.
        unsafe { write_cr3(read_cr3()) };
    }
}

/// Reads an MSR.
///
/// # Safety
/// The MSR must exist on this CPU (else #GP).
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: the caller guarantees the MSR exists.
    unsafe {
        asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Writes an MSR.
///
/// # Safety
/// The MSR must exist and the value must be valid for it and for the code running.
pub unsafe fn wrmsr(msr: u32, value: u64) {
    // Splitting into the EDX:EAX halves the instruction takes.
    #[allow(
        clippy::cast_possible_truncation,
        reason = "WRMSR takes the value as two 32-bit halves"
    )]
    let (lo, hi) = (value as u32, (value >> 32) as u32);
    // SAFETY: the caller guarantees the MSR and value are valid.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") lo, in("edx") hi, options(nostack, preserves_flags))
    };
}

/// Stops this CPU for good: interrupts off, `hlt` forever.
pub fn halt_forever() -> ! {
    loop {
        // SAFETY: cli/hlt only stop this CPU, which is what is wanted.
        unsafe { asm!("cli; hlt", options(nomem, nostack)) };
    }
}

/// Invalidates the TLB entry for one linear address in the current PCID.
pub fn invlpg(va: u64) {
    // SAFETY: INVLPG only drops a cached translation.
    unsafe { asm!("invlpg [{}]", in(reg) va, options(nostack, preserves_flags)) };
}

/// IA32_FS_BASE.
pub const MSR_FS_BASE: u32 = 0xC000_0100;
/// IA32_GS_BASE (the active GS base).
pub const MSR_GS_BASE: u32 = 0xC000_0101;
/// IA32_KERNEL_GS_BASE (the one `swapgs` would bring in).
pub const MSR_KERNEL_GS_BASE: u32 = 0xC000_0102;
/// IA32_STAR: SYSCALL/SYSRET selectors.
const MSR_STAR: u32 = 0xC000_0081;
/// IA32_LSTAR: 64-bit SYSCALL entry.
const MSR_LSTAR: u32 = 0xC000_0082;
/// IA32_CSTAR: compatibility-mode SYSCALL entry.
const MSR_CSTAR: u32 = 0xC000_0083;
/// IA32_FMASK: RFLAGS bits SYSCALL clears.
const MSR_FMASK: u32 = 0xC000_0084;
/// EFER.SCE: SYSCALL enabled.
const EFER_SCE: u64 = 1 << 0;
/// CR0.TS.
const CR0_TS: u64 = 1 << 3;
/// CR4.OSXSAVE.
const CR4_OSXSAVE: u64 = 1 << 18;

/// Loads a guest's FS base, user GS selector and both GS bases (`active` is
/// the one in use now, `inactive` the other).
pub fn load_guest_segments(fs_base: u64, gs_selector: u16, active: u64, inactive: u64) {
    // SAFETY: the selector is null or the ring-3 data selector (the
    // hypercall allows nothing else), both loadable at CPL 0; the MSRs exist
    // on every x86-64 CPU and only affect guest-visible segment bases, which
    // the hypervisor itself does not use.
    unsafe {
        asm!("mov gs, {0:x}", in(reg) u32::from(gs_selector), options(nostack, preserves_flags));
        wrmsr(MSR_FS_BASE, fs_base);
        wrmsr(MSR_GS_BASE, active);
        wrmsr(MSR_KERNEL_GS_BASE, inactive);
    }
}

/// Sets or clears CR0.TS (the guest's virtual TS; the hypervisor uses no
/// FPU state itself).
pub fn set_cr0_ts(set: bool) {
    let cr0 = read_cr0();
    let new = if set { cr0 | CR0_TS } else { cr0 & !CR0_TS };
    if new != cr0 {
        // SAFETY: TS only makes FPU/SSE instructions raise #NM, and the
        // hypervisor executes none.
        unsafe { write_cr0(new) };
    }
}

/// Whether guest FPU state is saved with XSAVE (else FXSAVE).
static XSAVE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

/// Whether guest FPU state is saved with XSAVE (set up by
/// [`enable_guest_features`]).
pub fn uses_xsave() -> bool {
    XSAVE.load(core::sync::atomic::Ordering::Relaxed)
}

/// Drops the hypervisor view's TLB entries for guest slots after this CPU's
/// views were given another guest's page tables: a CR3 reload (guest
/// mappings are never global).
pub fn flush_hypervisor_view() {
    // SAFETY: reloading the current root changes no mapping.
    unsafe { write_cr3(read_cr3()) };
}

/// Prepares the CPU for guests: SSE (and XSAVE with x87/SSE/AVX state when
/// present) usable by guest code, and `SYSCALL` entering the hypervisor at
/// `lstar` / `cstar` with IF, TF, DF, AC, NT and IOPL cleared.
pub fn enable_guest_features(f: &Features, lstar: u64, cstar: u64) {
    let mut cr4 = read_cr4() | CR4_OSFXSR_OSXMMEXCPT;
    if f.xsave {
        cr4 |= CR4_OSXSAVE;
    }
    XSAVE.store(f.xsave, core::sync::atomic::Ordering::Relaxed);
    // SAFETY: OSFXSR/OSXMMEXCPT exist on every x86-64 CPU and OSXSAVE is set
    // only where CPUID reports XSAVE; XCR0 gets only bits the CPU supports
    // (x87 always, SSE and AVX where present); the SYSCALL MSRs name the
    // trampoline's entry stubs and the hypervisor's own selectors.
    unsafe {
        write_cr4(cr4);
        if f.xsave {
            let supported = __cpuid_count(0xd, 0).eax;
            let xcr0: u32 = (supported & 0x7) | 1;
            asm!("xsetbv", in("ecx") 0, in("eax") xcr0, in("edx") 0, options(nomem, nostack, preserves_flags));
        }
        wrmsr(MSR_EFER, rdmsr(MSR_EFER) | EFER_SCE);
        // SYSCALL: CS 0xe008, SS 0xe010. SYSRET (unused): base 0xe020, so
        // it would load Xen's user selectors 0xe033/0xe02b/0xe023.
        wrmsr(MSR_STAR, (0xe020u64 << 48) | (0xe008u64 << 32));
        wrmsr(MSR_LSTAR, lstar);
        wrmsr(MSR_CSTAR, cstar);
        wrmsr(MSR_FMASK, 0x4_7700);
    }
}

/// EFER as a guest reads it.
pub fn efer() -> u64 {
    // SAFETY: EFER exists on every x86-64 CPU; reading it has no side effects.
    unsafe { rdmsr(MSR_EFER) }
}

/// The time-stamp counter.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC only reads the counter (CR4.TSD is clear).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// IA32_PAT.
pub fn pat() -> u64 {
    // SAFETY: the PAT MSR exists on every x86-64 CPU; reading has no side effects.
    unsafe { rdmsr(0x277) }
}

/// Writes back and invalidates the caches (for a privileged guest that asks).
pub fn wbinvd() {
    // SAFETY: WBINVD only flushes caches; it changes no memory contents.
    unsafe { asm!("wbinvd", options(nostack, preserves_flags)) };
}

/// CPUID as a PV guest sees it through the forced-emulation prefix: the
/// CPU's own leaves with the "running under a hypervisor" bit set, and
/// Xen's hypervisor leaves at 0x40000000 (signature "XenVMMXenVMM", version
/// 4.17). Leaf 0x40000002 reports no hypercall-page MSR: this hypervisor
/// installs the hypercall page from the ELF note only.
pub fn guest_cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    const SIGNATURE: [u32; 3] = [0x566e_6558, 0x65584d4d, 0x4d4d_566e];
    match leaf {
        0x4000_0000 => [0x4000_0002, SIGNATURE[0], SIGNATURE[1], SIGNATURE[2]],
        0x4000_0001 => [(4 << 16) | 17, 0, 0, 0],
        0x4000_0002..=0x4000_00ff => [0; 4],
        _ => {
            let r = __cpuid_count(leaf, subleaf);
            let ecx = if leaf == 1 { r.ecx | (1 << 31) } else { r.ecx };
            [r.eax, r.ebx, ecx, r.edx]
        }
    }
}

/// Reads DR6 (what the last #DB recorded).
pub fn read_dr6() -> u64 {
    let v;
    // SAFETY: reading DR6 has no side effects at CPL 0.
    unsafe { asm!("mov {}, dr6", out(reg) v, options(nomem, nostack, preserves_flags)) };
    v
}

/// Resets DR6 to "nothing recorded".
pub fn clear_dr6() {
    // SAFETY: writing DR6's default value only clears recorded conditions.
    unsafe {
        asm!("mov dr6, {}", in(reg) 0xffff_0ff0u64, options(nomem, nostack, preserves_flags))
    };
}

/// Loads a guest's breakpoint addresses (DR0-3) and control (DR7). The
/// values passed `vcpu::debug::check`: guest addresses, no GD, no I/O
/// breakpoints.
pub fn load_debug_registers(dr: &[u64; 8]) {
    // SAFETY: DR0-3 hold guest linear addresses and DR7 only enables
    // instruction or data breakpoints on them; a data breakpoint the
    // hypervisor's own guest copy hits is ignored by its #DB handler.
    unsafe {
        asm!("mov dr7, {}", in(reg) 0x400u64, options(nomem, nostack, preserves_flags));
        asm!("mov dr0, {}", in(reg) dr[0], options(nomem, nostack, preserves_flags));
        asm!("mov dr1, {}", in(reg) dr[1], options(nomem, nostack, preserves_flags));
        asm!("mov dr2, {}", in(reg) dr[2], options(nomem, nostack, preserves_flags));
        asm!("mov dr3, {}", in(reg) dr[3], options(nomem, nostack, preserves_flags));
        asm!("mov dr7, {}", in(reg) dr[7], options(nomem, nostack, preserves_flags));
    }
}
