//! The hypercall fuzzer (issue 10): `test=fuzz seed=<S> calls=<N>`.
//!
//! Makes `N` random hypercalls (default 20000) from a generator seeded
//! with `S` (default 1), then prints two summary lines (`fuzz summary:`
//! with the rate and the kinds of rounds, `fuzz returns:` with the
//! distribution of return codes) and ends as every test does (poweroff
//! with `Test result: SUCCESS`). The harness
//! (`cargo xtask fuzz-guest`, and the `fuzz` test with the defaults)
//! judges the run: the hypervisor must neither panic nor hang, and the
//! teardown must get every frame back.
//!
//! What is random: the hypercall number (every number below 64, some far
//! beyond), the sub-operation, and every argument, drawn from pools that
//! mix plausible values with adversarial ones: pointers into the reserved
//! slots 256-271 (M2P, trampoline, hypervisor image, direct map, the last
//! bytes of slot 271), non-canonical and page-crossing pointers, NULL,
//! counts such as 2^31-1 and 2^64-1, random page-table entries, frames
//! the domain does not own. Before some calls, random selectors are
//! loaded into DS/ES/FS/GS, SS (`mov`) or CS (`lretq`); some rounds run
//! user-mode children at random RIPs with random CS and RFLAGS, which
//! make hypercalls, system calls or software interrupts from ring 3.
//! When dom0 has a second vCPU, it is started to yield in a loop, so
//! fuzzed yields and `vcpu_op` calls switch vCPUs with fuzzed state.
//!
//! What keeps the fuzzer alive: everything it lets the hypervisor change
//! is its own scratch state. Page-table updates target entries of two
//! scratch L1 tables and entries 1-511 of the scratch L2 and L3 under L4
//! slot [`FUZZ_L4_SLOT`] (never the entries and tables that map the
//! fuzzer's buffers, never the kernel's), and frame arguments come
//! from scratch frames or from frames that are not the domain's at all.
//! Structured inputs are written flush against an unmapped guard page, so
//! a huge count walks into the guard and not into kernel data. Outputs go
//! to a sink page. Calls that would end the run are kept away from their
//! target (`SCHEDOP_shutdown` and `SCHEDOP_shutdown_code` get unreadable
//! reason pointers, `remote_shutdown` never names dom0, watchdogs expire
//! long after the run, `SCHEDOP_poll` always has a timeout a few
//! milliseconds ahead, `SCHEDOP_block` (which nothing would wake), the
//! compat shutdown and block, and `VCPUOP_down` of vCPU 0 are replaced, `iret` is left to the user-mode children, `NEW_BASEPTR` only
//! gets the current L4 or bad frames, `decrease_reservation` only scratch
//! frames with order 0), and state the fuzzer itself relies on (trap
//! table, callbacks, kernel stack, GDT, CR0.TS, debug registers, segment
//! bases, user L4) is put back after every call that may have changed it;
//! a call that may replace the trap table never runs with fuzzed
//! selectors, whose return could fault with no handler left. NMIs
//! (`VCPUOP_send_nmi` to either vCPU) may be taken at any exit, so every
//! NMI handler a fuzzed call registers (`nmi_op`, `callback_op`, trap
//! entry 2) is one of the shim's NMI stubs, none, or a non-canonical
//! address the hypervisor refuses; the hook returns from every NMI.

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use guest_pv_shim::dom0_abi::Errno;
use guest_pv_shim::dom0_abi::layout::{
    DIRECTMAP_VIRT_START, MACH2PHYS_VIRT_START, TRAMPOLINE_VIRT_START,
};
use guest_pv_shim::dom0_abi::mmu::{MmuUpdate, MmuUpdateCmd, MmuextCmd};
use guest_pv_shim::dom0_abi::segment::{
    FLAT_KERNEL_CS, FLAT_KERNEL_SS, FLAT_USER_CS, FLAT_USER_CS32, RING1_KERNEL_CS, RING1_KERNEL_SS,
};
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::hypercall::{self as hc, FOREIGNDOM_SELF};
use guest_pv_shim::mm::{self, Frame, PTE_RO, PTE_RW};
use guest_pv_shim::traps::{
    self, Callback, Disposition, Trap, TrapFrame, UserEntry, VECTOR_NMI_CALLBACK,
};
use guest_pv_shim::{cmdline, println, report, shared};

use crate::support;
use crate::user_code::ARG;

/// The L4 slot of the fuzzer's scratch tables (unused by the kernel).
const FUZZ_L4_SLOT: u64 = 200;
/// The first address under that slot.
const BASE: u64 = FUZZ_L4_SLOT << 39;
/// Bytes one L1 table maps.
const REGION: u64 = 2 << 20;
/// A page.
const PAGE: u64 = 4096;
/// Structured data of nested calls and the lists of top-level calls;
/// followed by an unmapped guard page.
const AREA_A: u64 = BASE;
/// Structured inputs of top-level calls, [`B_PAGES`] pages (room for
/// more than a batch of `mmu_update` or `mmuext_op`, so that long ones
/// are preempted and continued); followed by an unmapped guard page.
const AREA_B: u64 = BASE + 2 * PAGE;
/// Pages of area B.
const B_PAGES: u64 = 4;
/// A read-only page (the sink page follows it).
const AREA_RO: u64 = BASE + 7 * PAGE;
/// The sink for outputs; followed by an unmapped guard page.
const AREA_S: u64 = BASE + 8 * PAGE;
/// Bytes of one nested call's slot in area A.
const SLOT: u64 = 512;
/// Most entries in a fuzzed multicall (one A slot each, the last slot
/// stays free).
const MAX_NESTED: u64 = 7;
/// [`MAX_NESTED`] as an array length.
const MAX_NESTED_ENTRIES: usize = 7;
/// Entries of a long `mmu_update` or `mmuext_op` that cannot fail:
/// more than the hypervisor's batch of 512.
const LONG_VALID: u64 = 520;
/// Scratch data frames the fuzzed page tables may map.
const DATA_FRAMES: usize = 6;

/// `__HYPERVISOR_*` numbers the generator treats specially.
mod nr {
    pub const SET_TRAP_TABLE: u64 = 0;
    pub const MMU_UPDATE: u64 = 1;
    pub const SET_GDT: u64 = 2;
    pub const STACK_SWITCH: u64 = 3;
    pub const SET_CALLBACKS: u64 = 4;
    pub const FPU_TASKSWITCH: u64 = 5;
    pub const SCHED_OP_COMPAT: u64 = 6;
    pub const SET_DEBUGREG: u64 = 8;
    pub const GET_DEBUGREG: u64 = 9;
    pub const UPDATE_DESCRIPTOR: u64 = 10;
    pub const MEMORY_OP: u64 = 12;
    pub const MULTICALL: u64 = 13;
    pub const UPDATE_VA_MAPPING: u64 = 14;
    pub const XEN_VERSION: u64 = 17;
    pub const CONSOLE_IO: u64 = 18;
    pub const VM_ASSIST: u64 = 21;
    pub const UPDATE_VA_MAPPING_OTHERDOMAIN: u64 = 22;
    pub const IRET: u64 = 23;
    pub const VCPU_OP: u64 = 24;
    pub const SET_SEGMENT_BASE: u64 = 25;
    pub const MMUEXT_OP: u64 = 26;
    pub const NMI_OP: u64 = 28;
    pub const SCHED_OP: u64 = 29;
    pub const CALLBACK_OP: u64 = 30;
    pub const STATS_OP: u64 = 63;
}

/// What a call may have changed that the fuzzer relies on.
mod dirty {
    pub const TRAPS: u8 = 1;
    pub const FPU: u8 = 2;
    pub const DEBUG: u8 = 4;
    pub const SEGBASE: u8 = 8;
    pub const GDT: u8 = 16;
    pub const USER_L4: u8 = 32;
}

/// The fuzzer's GDT: 1 = ring-1 64-bit code, 2 = ring-1 data, 3 = user
/// 64-bit code, 4 = user data. Entries 5 and up are fuzzed.
const GDT: [u64; 5] = [
    0,
    0x00AF_BA00_0000_FFFF,
    0x00CF_B200_0000_FFFF,
    0x00AF_FA00_0000_FFFF,
    0x00CF_F200_0000_FFFF,
];
/// GDT entries the fuzzer keeps for itself.
const GDT_FIXED: u64 = 5;
const GDT_KERNEL_CS: u16 = 0x08 | 1;
const GDT_KERNEL_DS: u16 = 0x10 | 1;
const GDT_USER_CS: u16 = 0x18 | 3;

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n` (0 for `n == 0`).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        let i = usize::try_from(self.below(items.len() as u64)).unwrap_or(0);
        items[i]
    }
}

/// Writes `value` at `va`, an address of the fuzzer's areas.
fn poke(va: u64, value: u64) {
    // SAFETY: `va` lies in areas A, B or S, which the fuzzer's own L1
    // table maps writable for the whole run (that table is never a target)
    // and which no Rust code references.
    unsafe { (va as *mut u64).write_volatile(value) };
}

/// Space for structured data, filled downwards from its end so that the
/// data ends exactly where the space does.
struct Space {
    top: u64,
    floor: u64,
}

impl Space {
    const fn new(start: u64, len: u64) -> Space {
        Space {
            top: start + len,
            floor: start,
        }
    }

    /// Reserves `bytes` right below what was placed before; `None` when
    /// they do not fit.
    fn reserve(&mut self, bytes: u64) -> Option<u64> {
        if self.top - self.floor < bytes {
            return None;
        }
        self.top -= bytes;
        Some(self.top)
    }

    /// Places `words` right below what was placed before; `None` when
    /// they do not fit.
    fn push(&mut self, words: &[u64]) -> Option<u64> {
        let at = self.reserve(words.len() as u64 * 8)?;
        for (i, &w) in words.iter().enumerate() {
            poke(at + i as u64 * 8, w);
        }
        Some(at)
    }
}

/// Where one generated call puts its data.
struct Places {
    /// Its structured input.
    main: Space,
    /// Its lists (extents, frames, masks); `None`: in `main`, below.
    aux: Option<Space>,
    /// Nested in a multicall: every count stays within what was placed.
    nested: bool,
}

impl Places {
    fn aux(&mut self) -> &mut Space {
        match &mut self.aux {
            Some(space) => space,
            None => &mut self.main,
        }
    }
}

/// One generated call.
#[derive(Clone, Copy)]
struct Call {
    nr: u64,
    args: [u64; 5],
    dirty: u8,
}

/// The frames and addresses the generator draws from.
struct Pools {
    /// Frames the fuzzed calls may do anything with.
    safe: [Frame; DATA_FRAMES + 5],
    /// Frames `decrease_reservation` may take (order 0 only).
    releasable: [Frame; DATA_FRAMES + 3],
    /// Frames that are not the domain's, or not RAM.
    bad_mfns: [u64; 6],
    /// The fuzzer's GDT frame.
    gdt: Frame,
    /// The kernel's L4.
    l4_mfn: u64,
    /// The sink page's frame (never released).
    sink_mfn: u64,
    /// The domain's page count.
    nr_pages: u64,
}

/// Return codes seen, by errno (index = -ret), plus successes.
struct Tally {
    zero: u64,
    positive: u64,
    errno: [u64; 136],
    other: u64,
}

impl Tally {
    fn add(&mut self, ret: i64) {
        match ret {
            0 => self.zero += 1,
            1.. => self.positive += 1,
            _ => match usize::try_from(ret.unsigned_abs())
                .ok()
                .filter(|&i| i < 136)
            {
                Some(i) => self.errno[i] += 1,
                None => self.other += 1,
            },
        }
    }
}

/// Statistics of the run.
struct Stats {
    kernel: u64,
    selectors: u64,
    cs: u64,
    user: u64,
    /// User-mode children that ended by their own exit, and by a fault.
    user_exits: [u64; 2],
    faults: u64,
    restore_failures: u64,
    tally: Tally,
}

struct Fuzzer {
    rng: Rng,
    pools: Pools,
    /// Whether the fuzzer's GDT is loaded (else no CS of it is used).
    gdt_ok: bool,
    /// What the entries of the multicall being generated may change.
    nested_dirty: u8,
    stats: Stats,
}

/// Set while a fuzzed hypercall runs in the kernel: a fault on its return
/// (fuzzed CS or SS) resumes with the kernel's own selectors.
static IN_CALL: AtomicBool = AtomicBool::new(false);

/// NMIs taken by either vCPU (the shim counts them with the exceptions).
static NMIS: AtomicU64 = AtomicU64::new(0);

/// The shim's entry count and [`NMIS`], to tell exceptions from NMIs.
fn entries() -> (u64, u64) {
    (traps::count(), NMIS.load(Ordering::Relaxed))
}

/// Exceptions (not NMIs) since `before`, from [`entries`].
fn faults_since(before: (u64, u64)) -> u64 {
    let (count, nmis) = entries();
    (count - before.0) - (nmis - before.1)
}

/// The kernel's own code and stack selectors: ring 1 here, ring 3 on Xen
/// (whose 64-bit PV kernels run there).
fn kernel_selectors() -> (u16, u16) {
    if guest_pv_shim::on_xen() {
        (FLAT_KERNEL_CS, FLAT_KERNEL_SS)
    } else {
        (RING1_KERNEL_CS, RING1_KERNEL_SS)
    }
}

fn hook(frame: &mut TrapFrame, rec: &Trap) -> Disposition {
    if rec.vector == 2 || rec.vector == VECTOR_NMI_CALLBACK {
        // From a fuzzed `send_nmi`: back to where it struck, which may be
        // a user-mode child or the other vCPU.
        NMIS.fetch_add(1, Ordering::Relaxed);
        return Disposition::Return;
    }
    // While a user-mode child runs, any entry ends it. (Only then: an
    // event upcall may also arrive in the kernel, e.g. after a child's
    // RFLAGS.IF unmasked events, and must not end anything.)
    if traps::in_user_run() {
        return Disposition::ResumeKernel;
    }
    let (kernel_cs, kernel_ss) = kernel_selectors();
    let fuzzed_selectors =
        rec.cs_selector() != kernel_cs & !3 || (rec.ss & 0xffff) != u64::from(kernel_ss);
    if IN_CALL.load(Ordering::Relaxed) && matches!(rec.vector, 10..=13) && fuzzed_selectors {
        frame.cs = kernel_cs.into();
        frame.ss = kernel_ss.into();
        return Disposition::Return;
    }
    Disposition::Default
}

/// `int $0x82` with `nr` and `args`, in the kernel.
fn raw_call(nr: u64, args: [u64; 5]) -> i64 {
    // SAFETY: every argument was generated to touch only the fuzzer's
    // scratch state (module documentation).
    unsafe { guest_pv_shim::hypercall::raw::hypercall_trap(nr, args) }
}

/// As [`raw_call`], with CS `cs` (a far return there and back); a CS that
/// does not load leaves the call undone (`None`).
fn call_with_cs(cs: u16, nr: u64, args: [u64; 5]) -> Option<i64> {
    let (ret, skipped): (u64, u64);
    // SAFETY: `cs` is the kernel's CS, a ring-1 64-bit code selector of
    // the fuzzer's GDT, or a selector that cannot be loaded (the `retfq`
    // faults; the fixup entry drops the two pushed words). Code runs on
    // unchanged after the far return; a fault on the hypercall's return
    // resumes with the kernel's selectors (the hook). Arguments as in
    // `raw_call`.
    unsafe {
        asm!(
            "xor {skipped:e}, {skipped:e}",
            "lea {tmp}, [rip + 2f]",
            "push {cs}",
            "push {tmp}",
            "4:",
            "retfq",
            "5:",
            "add rsp, 16",
            "mov {skipped:e}, 1",
            "jmp 6f",
            "2:",
            "int 0x82",
            "lea {tmp}, [rip + 6f]",
            "push {kcs}",
            "push {tmp}",
            "retfq",
            "6:",
            ".pushsection .ex_table, \"a\"",
            ".balign 8",
            ".quad 4b, 5b, 5b",
            ".popsection",
            cs = in(reg) u64::from(cs),
            kcs = in(reg) u64::from(kernel_selectors().0),
            tmp = out(reg) _,
            skipped = out(reg) skipped,
            inout("rax") nr => ret,
            inout("rdi") args[0] => _,
            inout("rsi") args[1] => _,
            inout("rdx") args[2] => _,
            inout("r10") args[3] => _,
            inout("r8") args[4] => _,
            out("rcx") _, out("r11") _,
        );
    }
    (skipped == 0).then_some(ret.cast_signed())
}

/// Data segment registers as they are.
fn data_selectors() -> [u16; 4] {
    let (ds, es, fs, gs): (u16, u16, u16, u16);
    // SAFETY: reads four segment registers.
    unsafe {
        asm!(
            "mov {0:x}, ds", "mov {1:x}, es", "mov {2:x}, fs", "mov {3:x}, gs",
            out(reg) ds, out(reg) es, out(reg) fs, out(reg) gs,
            options(nomem, nostack, preserves_flags),
        );
    }
    [ds, es, fs, gs]
}

/// Tries to load DS, ES, FS and GS with `sel`; a selector that faults
/// leaves its register as it was.
fn load_data_selectors(sel: [u16; 4]) {
    // SAFETY: no Rust code depends on DS/ES/FS/GS or the FS/GS bases (the
    // shim and the tests use neither); each load that faults resumes
    // after its block (fixup table).
    unsafe {
        guest_pv_shim::fixup_asm!("mov ds, {s:e}"; s = in(reg) u32::from(sel[0]), options(nostack));
        guest_pv_shim::fixup_asm!("mov es, {s:e}"; s = in(reg) u32::from(sel[1]), options(nostack));
        guest_pv_shim::fixup_asm!("mov fs, {s:e}"; s = in(reg) u32::from(sel[2]), options(nostack));
        guest_pv_shim::fixup_asm!("mov gs, {s:e}"; s = in(reg) u32::from(sel[3]), options(nostack));
    }
}

/// Tries to load SS with `sel`.
fn load_ss(sel: u16) {
    // SAFETY: in 64-bit mode SS's base and limit are ignored, so the stack
    // works with any SS that loads; a selector that faults resumes after
    // the block with SS unchanged.
    unsafe {
        guest_pv_shim::fixup_asm!("mov ss, {s:e}"; s = in(reg) u32::from(sel), options(nostack));
    }
}

global_asm!(
    ".pushsection .text.user, \"ax\", @progbits",
    // Loads RAX, RDI, RSI, RDX, R10, R8 from ARG.. and makes a hypercall
    // from ring 3.
    ".globl user_fuzz_int82",
    "user_fuzz_int82:",
    "call 7f",
    "int 0x82",
    "jmp shim_user_exit",
    // The same registers, then SYSCALL.
    ".globl user_fuzz_syscall",
    "user_fuzz_syscall:",
    "call 7f",
    "syscall",
    "jmp shim_user_exit",
    // The same registers, then `int $0x80`.
    ".globl user_fuzz_int80",
    "user_fuzz_int80:",
    "call 7f",
    "int 0x80",
    "jmp shim_user_exit",
    // DS/ES/FS/GS from ARG+48.., then the hypercall.
    ".globl user_fuzz_selectors",
    "user_fuzz_selectors:",
    "mov ax, word ptr [rip + shim_user_data + {arg} + 48]",
    "mov ds, ax",
    "mov ax, word ptr [rip + shim_user_data + {arg} + 50]",
    "mov es, ax",
    "mov ax, word ptr [rip + shim_user_data + {arg} + 52]",
    "mov fs, ax",
    "mov ax, word ptr [rip + shim_user_data + {arg} + 54]",
    "mov gs, ax",
    "call 7f",
    "int 0x82",
    "jmp shim_user_exit",
    "7:",
    "mov rax, qword ptr [rip + shim_user_data + {arg}]",
    "mov rdi, qword ptr [rip + shim_user_data + {arg} + 8]",
    "mov rsi, qword ptr [rip + shim_user_data + {arg} + 16]",
    "mov rdx, qword ptr [rip + shim_user_data + {arg} + 24]",
    "mov r10, qword ptr [rip + shim_user_data + {arg} + 32]",
    "mov r8, qword ptr [rip + shim_user_data + {arg} + 40]",
    "ret",
    ".popsection",
    arg = const ARG,
);

unsafe extern "C" {
    /// See the assembly above.
    static user_fuzz_int82: u8;
    static user_fuzz_syscall: u8;
    static user_fuzz_int80: u8;
    static user_fuzz_selectors: u8;
}

/// A canonical address that faults for everyone: unmapped or outside
/// every mapping the guest has.
const UNMAPPED: u64 = AREA_A + PAGE;

impl Fuzzer {
    // ---- value pools ----------------------------------------------------

    /// A pointer nothing may read or write: not the guest's, not
    /// canonical, or not mapped.
    fn bad_ptr(&mut self) -> u64 {
        let r = self.rng.next();
        match self.rng.below(12) {
            0 => 0,
            1 => 0x1000,
            2 => MACH2PHYS_VIRT_START + (r & 0xffff_fff8),
            3 => TRAMPOLINE_VIRT_START + (r & 0x7_ffff),
            4 => 0xFFFF_82D0_8000_0000 + (r & 0xf_ffff),
            5 => DIRECTMAP_VIRT_START + (r & 0xfff_ffff),
            6 => 0xFFFF_87FF_FFFF_FFF8 - (r & 7),
            7 => 0x0000_8000_0000_0000 | (r & 0x7FFF_FFFF_FFFF),
            8 => (1 << 63) | (r & 0x7FFF_FFFF_FFFF_FFFF & !0xFFFF_8000_0000_0000),
            9 => 0x0000_7FFF_FFFF_FFFC,
            10 => UNMAPPED + (r & 0xfff),
            _ => r & !0xFFFF_FFFF_FFFF | 0x0000_8000_0000_0000,
        }
    }

    /// An NMI handler to register: one of the shim's NMI stubs, none, or
    /// a non-canonical address (refused). Nothing else: a pending NMI may
    /// be taken at any exit.
    fn nmi_handler(&mut self) -> u64 {
        match self.rng.below(4) {
            0 => traps::callback_address(Callback::Nmi),
            1 => traps::stub_address(2).unwrap_or(0),
            2 => 0,
            _ => 0x0000_8000_0000_0000 | (self.rng.next() & 0x7FFF_FFFF_FFFF),
        }
    }

    /// A pointer for outputs: the sink, the read-only page or a bad one.
    fn out_ptr(&mut self) -> u64 {
        match self.rng.below(10) {
            0..=3 => AREA_S + self.rng.below(PAGE),
            4 => AREA_S + PAGE - 1 - self.rng.below(8),
            5 => AREA_RO + self.rng.below(PAGE),
            _ => self.bad_ptr(),
        }
    }

    /// `good` most of the time, else a bad pointer.
    fn in_ptr(&mut self, good: Option<u64>) -> u64 {
        match good {
            Some(p) if self.rng.chance(80) => p,
            _ => self.bad_ptr(),
        }
    }

    /// The arguments of an `mmu_update` or `mmuext_op` batch of `placed`
    /// requests at `requests`: the array, a count, `pdone` (NULL half the
    /// time), a foreign domain, and `last` as the unused fifth.
    fn batch_args(
        &mut self,
        requests: Option<u64>,
        placed: u64,
        nested: bool,
        last: u64,
    ) -> [u64; 5] {
        let array = self.in_ptr(requests);
        let count = self.count(placed, nested);
        let pdone = if self.rng.chance(50) {
            0
        } else {
            self.out_ptr()
        };
        [array, count, pdone, self.domid(), last]
    }

    /// A count for an array of `placed` elements.
    fn count(&mut self, placed: u64, nested: bool) -> u64 {
        if nested {
            return self.rng.below(placed + 1);
        }
        match self.rng.below(20) {
            0..=11 => 1 + self.rng.below(placed.max(1)),
            12 => 0,
            13 => 0x7FFF_FFFF,
            14 => u64::from(u32::MAX),
            15 => u64::MAX,
            16 => 1 << 31,
            17 => 1 << 32,
            _ => self.rng.next(),
        }
    }

    /// A small number, a boundary value or a random one.
    fn value(&mut self) -> u64 {
        match self.rng.below(8) {
            0..=2 => self.rng.below(16),
            3 => 0x7FFF_FFFF,
            4 => u64::MAX - self.rng.below(4),
            5 => u64::from(u32::MAX),
            _ => self.rng.next(),
        }
    }

    fn domid(&mut self) -> u64 {
        match self.rng.below(8) {
            0..=2 => FOREIGNDOM_SELF,
            3 => 0,
            4 => 0x7FF0 + self.rng.below(8),
            5 => 1 + self.rng.below(4),
            _ => self.rng.next() & 0xffff,
        }
    }

    /// A frame the fuzzed calls may do anything with, or a bad one.
    fn mfn(&mut self) -> u64 {
        if self.rng.chance(70) {
            self.rng.pick(&self.pools.safe).mfn
        } else {
            self.rng.pick(&self.pools.bad_mfns)
        }
    }

    /// A random page-table entry over [`Self::mfn`].
    fn pte(&mut self) -> u64 {
        let r = self.rng.next();
        match self.rng.below(10) {
            0 => r,
            1 => 0,
            _ => {
                let flags = if self.rng.chance(50) {
                    PTE_RW
                } else {
                    r & 0xfff
                };
                let nx = r & (1 << 63);
                let high = if self.rng.chance(10) {
                    r & 0x7FF0_0000_0000_0000
                } else {
                    0
                };
                (self.mfn() << 12) | flags | nx | high
            }
        }
    }

    /// A virtual address whose mapping the fuzzer may change: under its
    /// fuzzed L1 tables (regions 1 and 2) or their L2 (regions 3 and up),
    /// or one that is not the guest's at all.
    fn fuzz_va(&mut self) -> u64 {
        let page = self.rng.below(512) * PAGE;
        match self.rng.below(10) {
            0..=5 => BASE + REGION * (1 + self.rng.below(2)) + page,
            6 | 7 => BASE + REGION * (3 + self.rng.below(509)) + page,
            // Never the region of the fuzzer's own areas and guards.
            _ => match self.bad_ptr() & !0xfff {
                va if (BASE..BASE + REGION).contains(&va) => BASE + REGION + page,
                va => va,
            },
        }
    }

    /// A machine address of a page-table entry the fuzzer may change (or a
    /// bad one), with `MMU_*` command bits.
    fn mmu_ptr(&mut self) -> u64 {
        let p = &self.pools;
        let [l1a, l1b, l2, l3] = [
            p.safe[DATA_FRAMES],
            p.safe[DATA_FRAMES + 1],
            p.safe[DATA_FRAMES + 2],
            p.safe[DATA_FRAMES + 3],
        ];
        let entry = self.rng.below(512) * 8;
        let upper = (1 + self.rng.below(511)) * 8;
        let target = match self.rng.below(10) {
            0..=3 => self.rng.pick(&[l1a, l1b]).maddr() + entry,
            4 => l2.maddr() + upper,
            5 => l3.maddr() + upper,
            // Frames that are no table of the fuzzer's (yet): never entry
            // 0 of its L2 or L3, which lead to its own areas.
            6 => self.rng.pick(&self.pools.safe[..DATA_FRAMES]).maddr() + entry,
            7 => self.rng.pick(&self.pools.bad_mfns) << 12 | entry,
            8 => self.rng.pick(&[l1a, l1b]).maddr() + (self.rng.next() & 0xfff),
            _ => self.rng.next(),
        };
        let cmd = match self.rng.below(20) {
            0..=13 => 0,
            14 | 15 => {
                // MMU_MACHPHYS_UPDATE: the target names a frame.
                return (self.mfn() << 12) | 1;
            }
            16..=18 => 2,
            _ => 3,
        };
        (target & !3) | cmd
    }

    /// A descriptor: plausible or random.
    fn descriptor(&mut self) -> u64 {
        let dpl = self.rng.below(4) << 45;
        let r = self.rng.next();
        match self.rng.below(8) {
            0 => 0x00AF_9A00_0000_FFFF | dpl,
            1 => 0x00CF_9A00_0000_FFFF | dpl,
            2 => 0x00CF_9200_0000_FFFF | dpl,
            3 => 0x0000_8C00_0000_0000 | dpl | (r & 0xFFFF_0000_FFFF),
            4 => r & !(1 << 47),
            5 => 0,
            _ => r,
        }
    }

    fn selector(&mut self) -> u16 {
        let r = u16::try_from(self.rng.next() & 0xffff).unwrap_or(0);
        match self.rng.below(8) {
            0 => 0,
            1 => r & 3,
            2 => kernel_selectors().1,
            3 => GDT_KERNEL_DS,
            4 => r | 4,
            _ => r,
        }
    }

    // ---- calls ----------------------------------------------------------

    /// A hypercall number: mostly implemented ones, every number below 64
    /// sometimes, and numbers far beyond.
    fn number(&mut self, nested: bool) -> u64 {
        const IMPLEMENTED: [u64; 24] = [
            nr::SET_TRAP_TABLE,
            nr::MMU_UPDATE,
            nr::SET_GDT,
            nr::STACK_SWITCH,
            nr::SET_CALLBACKS,
            nr::FPU_TASKSWITCH,
            nr::SCHED_OP_COMPAT,
            nr::SET_DEBUGREG,
            nr::GET_DEBUGREG,
            nr::UPDATE_DESCRIPTOR,
            nr::MEMORY_OP,
            nr::MULTICALL,
            nr::UPDATE_VA_MAPPING,
            nr::XEN_VERSION,
            nr::CONSOLE_IO,
            nr::VM_ASSIST,
            nr::UPDATE_VA_MAPPING_OTHERDOMAIN,
            nr::VCPU_OP,
            nr::SET_SEGMENT_BASE,
            nr::MMUEXT_OP,
            nr::NMI_OP,
            nr::SCHED_OP,
            nr::CALLBACK_OP,
            nr::STATS_OP,
        ];
        let n = match self.rng.below(20) {
            0..=14 => self.rng.pick(&IMPLEMENTED),
            15..=17 => self.rng.below(64),
            18 => 64 + self.rng.below(512),
            _ => self.rng.next(),
        };
        if n == nr::IRET || (nested && n == nr::MULTICALL && self.rng.chance(70)) {
            nr::XEN_VERSION
        } else {
            n
        }
    }

    /// Generates hypercall `n` with its data in `at`.
    #[allow(clippy::too_many_lines, reason = "one arm per hypercall")]
    fn generate(&mut self, n: u64, at: &mut Places) -> Call {
        let nested = at.nested;
        let mut args = [
            self.value(),
            self.value(),
            self.value(),
            self.value(),
            self.value(),
        ];
        let mut dirty = 0;
        match n {
            nr::SET_TRAP_TABLE => {
                let k = 1 + self.rng.below(6);
                let mut words = [0u64; 14];
                for e in words
                    .chunks_exact_mut(2)
                    .take(usize::try_from(k).unwrap_or(0))
                {
                    let vector = self.rng.below(256);
                    let flags = self.rng.below(256);
                    let cs = u64::from(self.selector());
                    e[0] = vector | flags << 8 | cs << 16;
                    e[1] = if self.rng.chance(20) {
                        0
                    } else if vector == 2 {
                        self.nmi_handler()
                    } else {
                        self.rng.next()
                    };
                }
                let len = usize::try_from(2 * k + 2).unwrap_or(2);
                let table = at.main.push(&words[..len]);
                args[0] = self.in_ptr(table);
                dirty = dirty::TRAPS;
            }
            nr::MMU_UPDATE => {
                // Sometimes more than a batch, preempted and continued: a
                // batch stops at its first error, so the first
                // `LONG_VALID` entries are M2P updates that cannot fail.
                let long = !nested && self.rng.chance(5);
                let k = match (nested, long) {
                    (true, _) => 1 + self.rng.below(8),
                    (false, true) => LONG_VALID + self.rng.below(241),
                    (false, false) => 1 + self.rng.below(32),
                };
                let reqs = at.main.reserve(k * 16);
                if let Some(base) = reqs {
                    for i in 0..k {
                        let (ptr, val) = if long && i < LONG_VALID {
                            ((self.pools.sink_mfn << 12) | 1, self.rng.below(1 << 20))
                        } else {
                            (self.mmu_ptr(), self.pte())
                        };
                        poke(base + i * 16, ptr);
                        poke(base + i * 16 + 8, val);
                    }
                }
                args = self.batch_args(reqs, k, nested, args[4]);
            }
            nr::SET_GDT => {
                let k = 1 + self.rng.below(4);
                let mut frames = [0u64; 4];
                for f in frames.iter_mut().take(usize::try_from(k).unwrap_or(0)) {
                    *f = if self.rng.chance(20) {
                        self.pools.gdt.mfn
                    } else {
                        self.mfn()
                    };
                }
                let list = at.aux().push(&frames[..usize::try_from(k).unwrap_or(0)]);
                args[0] = self.in_ptr(list);
                args[1] = if self.rng.chance(70) {
                    self.rng.below(k * 512 + 2)
                } else {
                    self.value()
                };
                dirty = dirty::GDT;
            }
            nr::STACK_SWITCH => {
                args[0] = u64::from(self.selector());
                args[1] = if self.rng.chance(50) {
                    self.bad_ptr()
                } else {
                    self.rng.next()
                };
                dirty = dirty::TRAPS;
            }
            nr::SET_CALLBACKS => dirty = dirty::TRAPS,
            nr::FPU_TASKSWITCH => dirty = dirty::FPU,
            // Compat shutdown takes its reason in the register: never.
            // Compat shutdown would end the run, compat block sleep for ever.
            nr::SCHED_OP_COMPAT if matches!(args[0] & 0xffff_ffff, 1 | 2) => args[0] = 0,
            nr::SET_DEBUGREG => {
                args[0] = self.rng.below(9);
                if self.rng.chance(30) {
                    args[1] = self.bad_ptr();
                }
                dirty = dirty::DEBUG;
            }
            nr::GET_DEBUGREG => args[0] = self.rng.below(10),
            nr::UPDATE_DESCRIPTOR => {
                args[0] = match self.rng.below(4) {
                    0 | 1 => {
                        self.pools.gdt.maddr() + (GDT_FIXED + self.rng.below(512 - GDT_FIXED)) * 8
                    }
                    2 => self.rng.pick(&self.pools.safe).maddr() + (self.rng.next() & 0xfff),
                    _ => self.rng.pick(&self.pools.bad_mfns) << 12 | (self.rng.next() & 0xfff),
                };
                args[1] = self.descriptor();
            }
            nr::MEMORY_OP => args[..2].copy_from_slice(&self.memory_op(at)),
            nr::MULTICALL => {
                if nested {
                    args[0] = self.in_ptr(None);
                } else {
                    let (list, k) = self.multicall_entries(&mut at.main);
                    args[0] = self.in_ptr(list);
                    args[1] = self.count(k, false);
                    dirty = self.nested_dirty;
                }
            }
            nr::UPDATE_VA_MAPPING | nr::UPDATE_VA_MAPPING_OTHERDOMAIN => {
                args[0] = self.fuzz_va();
                args[1] = self.pte();
                args[2] = match self.rng.below(6) {
                    0 => 0,
                    1 => 1,
                    2 => 2,
                    3 => {
                        let mask = at.aux().push(&[self.rng.next()]);
                        (self.in_ptr(mask) & !7) | self.rng.below(3)
                    }
                    4 => 4 | self.rng.below(3),
                    _ => self.rng.next(),
                };
                args[3] = self.domid();
            }
            nr::XEN_VERSION => {
                args[0] = if self.rng.chance(80) {
                    self.rng.below(14)
                } else {
                    self.value()
                };
                args[1] = self.out_ptr();
            }
            nr::CONSOLE_IO => {
                args[0] = self.rng.below(4);
                if args[0] == 0 {
                    // Writes: only pointers nothing can be read from.
                    args[2] = self.bad_ptr();
                } else {
                    args[2] = self.out_ptr();
                }
            }
            nr::VM_ASSIST => {
                args[0] = self.rng.below(3);
                args[1] = self.rng.below(12);
            }
            nr::VCPU_OP => {
                args[0] = if self.rng.chance(80) {
                    self.rng.below(16)
                } else {
                    self.value()
                };
                args[1] = if self.rng.chance(60) {
                    self.rng.below(4)
                } else {
                    self.value()
                };
                // vCPU 0, the fuzzer, never goes down.
                if args[0] & 0xffff_ffff == 2 && args[1] & 0xffff_ffff == 0 {
                    args[1] = 1;
                }
                let blob = [self.rng.next(), self.rng.next(), self.rng.next()];
                let ctx = at.main.push(&blob);
                args[2] = if args[0] & 0xffff_ffff == 11 && self.rng.chance(70) {
                    // `send_nmi` with the NULL it needs: NMIs do arrive.
                    0
                } else if self.rng.chance(50) {
                    self.out_ptr()
                } else {
                    self.in_ptr(ctx)
                };
            }
            nr::SET_SEGMENT_BASE => {
                args[0] = self.rng.below(5);
                dirty = dirty::SEGBASE;
            }
            nr::MMUEXT_OP => {
                let (ops, k, d) = self.mmuext_ops(at);
                args = self.batch_args(ops, k, nested, args[4]);
                dirty = d;
            }
            nr::SCHED_OP => {
                args[0] = self.rng.below(8);
                let arg = match args[0] {
                    // Block would sleep for ever (no event is bound): yield.
                    1 => {
                        args[0] = 0;
                        [self.rng.next(); 3]
                    }
                    // Poll: any ports, but always a timeout at most 2 ms
                    // ahead (0 could sleep for ever).
                    3 => {
                        let ports = [self.rng.next(), self.rng.next()];
                        let ports = at.main.push(&ports);
                        let now = shared::system_time_of(0).unwrap_or(0);
                        [
                            self.in_ptr(ports),
                            self.rng.below(140),
                            now + 1 + self.rng.below(2_000_000),
                        ]
                    }
                    // Remote shutdown: never of dom0 itself.
                    4 => [
                        (self.rng.next() & !0xffff) | (1 + self.rng.below(0xffff)),
                        0,
                        0,
                    ],
                    // Watchdogs: stopped, or expiring long after the run (a
                    // new one with timeout 0 would expire at once).
                    6 => {
                        let id = self.rng.below(4);
                        let timeout = if id != 0 && self.rng.chance(30) {
                            0
                        } else {
                            1 << 20
                        };
                        [id | (timeout << 32), 0, 0]
                    }
                    _ => [self.rng.next(); 3],
                };
                args[1] = if args[0] & 0xffff_ffff == 2 || args[0] & 0xffff_ffff == 5 {
                    // Shutdown and shutdown_code: reasons nothing can read.
                    self.bad_ptr()
                } else {
                    let arg = at.main.push(&arg);
                    self.in_ptr(arg)
                };
            }
            nr::CALLBACK_OP => {
                args[0] = self.rng.below(4);
                let kind = self.rng.below(8);
                let reg = [
                    kind | (self.rng.below(4) << 16),
                    if kind == 4 {
                        self.nmi_handler()
                    } else if self.rng.chance(30) {
                        self.bad_ptr()
                    } else {
                        self.rng.next()
                    },
                ];
                let reg = at.main.push(&reg);
                args[1] = self.in_ptr(reg);
                dirty = dirty::TRAPS;
            }
            nr::NMI_OP => {
                args[0] = self.rng.below(3);
                if self.rng.chance(10) {
                    args[0] |= self.rng.next() << 32;
                }
                let callback = [self.nmi_handler(), self.rng.next()];
                let callback = at.main.push(&callback);
                args[1] = self.in_ptr(callback);
                dirty = dirty::TRAPS;
            }
            nr::STATS_OP => {
                args[0] = self.rng.below(3);
                args[1] = self.out_ptr();
            }
            _ => {}
        }
        Call { nr: n, args, dirty }
    }
}

impl Fuzzer {
    /// `memory_op`: the command and its argument.
    fn memory_op(&mut self, at: &mut Places) -> [u64; 2] {
        let cmd = self
            .rng
            .pick(&[0u64, 1, 6, 0, 1, 6, 2, 3, 4, 5, 8, 9, 10, 11, 11, 12, 13])
            .max(if self.rng.chance(10) {
                self.rng.below(64)
            } else {
                0
            });
        let start = if self.rng.chance(20) {
            self.rng.below(8) << 6
        } else {
            0
        };
        let nested = at.nested;
        let arg = match cmd {
            0 | 1 | 6 => {
                let k = 1 + self.rng.below(6);
                let mut list = [0u64; 6];
                let safe_list = cmd == 1 && self.rng.chance(80);
                for e in list.iter_mut().take(usize::try_from(k).unwrap_or(0)) {
                    *e = match cmd {
                        1 if safe_list => self.rng.pick(&self.pools.releasable).mfn,
                        1 => self.rng.pick(&self.pools.bad_mfns),
                        _ if self.rng.chance(50) => self.rng.pick(&self.pools.safe).pfn,
                        _ => self.pools.nr_pages + self.rng.below(64),
                    };
                }
                let list = at.aux().push(&list[..usize::try_from(k).unwrap_or(0)]);
                let extents = match cmd {
                    0 if self.rng.chance(50) => self.out_ptr(),
                    _ => self.in_ptr(list),
                };
                // Freeing by order walks contiguous frames: only frames
                // that are not the domain's get an order above 0.
                let order = if safe_list {
                    0
                } else {
                    self.rng.pick(&[0u64, 0, 1, 9, 18, 63, u64::from(u32::MAX)])
                };
                let reservation = [
                    extents,
                    self.count(k, nested),
                    order | (self.rng.below(4) << 32),
                    if self.rng.chance(80) {
                        FOREIGNDOM_SELF
                    } else {
                        self.domid()
                    },
                ];
                let r = at.main.push(&reservation);
                self.in_ptr(r)
            }
            11 => self.exchange(at),
            3 | 4 | 10 | 12 => {
                let domid = [self.domid()];
                let d = at.main.push(&domid);
                self.in_ptr(d)
            }
            5 | 9 => {
                let request = [
                    if self.rng.chance(70) {
                        self.rng.below(64)
                    } else {
                        self.value()
                    },
                    self.out_ptr(),
                ];
                let r = at.main.push(&request);
                self.in_ptr(r)
            }
            _ => self.out_ptr(),
        };
        let cmd = if nested { cmd } else { cmd | start };
        [cmd, arg]
    }

    /// A `xen_memory_exchange`: `in` frames that `decrease_reservation`
    /// may take (order 0 only, as there) or that are not the domain's (any
    /// order), `out` GPFNs past the domain's or of its scratch frames, with
    /// fuzzed orders, address-width flags, domids, counts and
    /// `nr_exchanged`. Returns its address.
    fn exchange(&mut self, at: &mut Places) -> u64 {
        let nested = at.nested;
        let k = 1 + self.rng.below(4);
        let own = self.rng.chance(60);
        let mut ins = [0u64; 4];
        for e in ins.iter_mut() {
            *e = if own {
                self.rng.pick(&self.pools.releasable).mfn
            } else {
                self.rng.pick(&self.pools.bad_mfns)
            };
        }
        let mut outs = [0u64; 4];
        for e in outs.iter_mut() {
            *e = if self.rng.chance(50) {
                self.rng.pick(&self.pools.safe).pfn
            } else {
                self.pools.nr_pages + self.rng.below(64)
            };
        }
        let n = usize::try_from(k).unwrap_or(1);
        let ins = at.aux().push(&ins[..n]);
        let outs = at.aux().push(&outs[..n]);
        let in_order = if own {
            0
        } else {
            self.rng.pick(&[0u64, 0, 1, 2, 9, 18, u64::from(u32::MAX)])
        };
        let out_order = self.rng.pick(&[0u64, 0, 1, 2, 9, 19, u64::from(u32::MAX)]);
        let flags = if self.rng.chance(70) {
            0
        } else {
            self.rng.pick(&[20u64, 32, 31, 64, 255]) << 8
        };
        let domid = if self.rng.chance(85) {
            FOREIGNDOM_SELF
        } else {
            self.domid()
        };
        let in_count = self.count(k, nested);
        let out_count = if self.rng.chance(80) {
            in_count
        } else {
            self.count(k, nested)
        };
        let done = if self.rng.chance(85) {
            0
        } else {
            self.count(k, nested)
        };
        let exchange = [
            self.in_ptr(ins),
            in_count,
            in_order,
            domid,
            self.in_ptr(outs),
            out_count,
            out_order | (flags << 32),
            if self.rng.chance(90) {
                domid
            } else {
                self.domid()
            },
            done,
        ];
        let e = at.main.push(&exchange);
        self.in_ptr(e)
    }

    /// `mmuext_op` operations: their address, how many, and what they may
    /// change.
    fn mmuext_ops(&mut self, at: &mut Places) -> (Option<u64>, u64, u8) {
        // Sometimes more than a batch, preempted and continued: the first
        // `LONG_VALID` operations are local TLB flushes, which cannot fail.
        let long = !at.nested && self.rng.chance(5);
        let k = if long {
            LONG_VALID + self.rng.below(160)
        } else {
            1 + self.rng.below(6)
        };
        let ops = at.main.reserve(k * 24);
        let mut dirty = 0;
        for i in 0..k {
            if long && i < LONG_VALID {
                if let Some(base) = ops {
                    poke(base + i * 24, MmuextCmd::TlbFlushLocal as u64);
                }
                continue;
            }
            let cmd = if self.rng.chance(90) {
                self.rng.below(22)
            } else {
                self.value()
            };
            let (arg1, arg2) = match MmuextCmd::from_number(cmd & 0xffff_ffff) {
                Some(MmuextCmd::NewBaseptr) => {
                    let l4 = if self.rng.chance(50) {
                        self.pools.l4_mfn
                    } else {
                        self.rng.pick(&self.pools.bad_mfns)
                    };
                    (l4, self.value())
                }
                Some(MmuextCmd::NewUserBaseptr) => {
                    dirty |= dirty::USER_L4;
                    (self.mfn(), self.value())
                }
                Some(MmuextCmd::SetLdt) => (
                    if self.rng.chance(60) {
                        self.fuzz_va()
                    } else {
                        self.bad_ptr()
                    },
                    self.rng
                        .pick(&[0, 1, 2, 511, 512, 8191, 8192, u64::from(u32::MAX)]),
                ),
                Some(MmuextCmd::InvlpgLocal | MmuextCmd::InvlpgAll) => {
                    (self.fuzz_va(), self.value())
                }
                Some(MmuextCmd::TlbFlushMulti | MmuextCmd::InvlpgMulti) => {
                    let mask = at.aux().push(&[self.rng.next()]);
                    (self.fuzz_va(), self.in_ptr(mask))
                }
                Some(MmuextCmd::CopyPage) => (self.mfn(), self.mfn()),
                _ => (self.mfn(), self.value()),
            };
            if let Some(base) = ops {
                let cmd = if self.rng.chance(90) {
                    cmd & 0xffff_ffff
                } else {
                    cmd
                };
                poke(base + i * 24, cmd);
                poke(base + i * 24 + 8, arg1);
                poke(base + i * 24 + 16, arg2);
            }
        }
        (ops, k, dirty)
    }

    /// The entries of a top-level multicall, at the end of `main`, and
    /// how many; their data goes to slots of area A.
    fn multicall_entries(&mut self, main: &mut Space) -> (Option<u64>, u64) {
        let k = 1 + self.rng.below(MAX_NESTED);
        let mut calls = [Call {
            nr: 0,
            args: [0; 5],
            dirty: 0,
        }; MAX_NESTED_ENTRIES];
        self.nested_dirty = 0;
        for (i, call) in calls
            .iter_mut()
            .enumerate()
            .take(usize::try_from(k).unwrap_or(0))
        {
            let slot = AREA_A + i as u64 * SLOT;
            let mut at = Places {
                main: Space::new(slot, SLOT),
                aux: None,
                nested: true,
            };
            let n = self.number(true);
            *call = self.generate(n, &mut at);
            self.nested_dirty |= call.dirty;
        }
        // Entries run upwards: write them from the last.
        let mut first = None;
        for call in calls[..usize::try_from(k).unwrap_or(0)].iter().rev() {
            let a = call.args;
            first = main.push(&[
                call.nr,
                self.rng.next(),
                a[0],
                a[1],
                a[2],
                a[3],
                a[4],
                self.rng.next(),
            ]);
        }
        (first, k)
    }

    // ---- running --------------------------------------------------------

    /// Puts back the state the fuzzer relies on; returns whether it could.
    fn restore(&mut self, dirty: u8) -> bool {
        let mut ok = true;
        if dirty & dirty::TRAPS != 0 {
            // SAFETY: clears the whole trap table (Xen's semantics for
            // NULL); `traps::init` installs the shim's right after.
            unsafe { hc::set_trap_table_raw(0) };
            ok &= traps::init().is_ok();
        }
        if dirty & dirty::FPU != 0 {
            ok &= hc::fpu_taskswitch(0) == 0;
        }
        if dirty & dirty::DEBUG != 0 {
            // SAFETY: disables every breakpoint.
            ok &= unsafe { hc::set_debugreg(7, 0x400) } == 0;
        }
        if dirty & dirty::SEGBASE != 0 {
            for which in 0..3 {
                ok &= hc::set_segment_base(which, 0) == 0;
            }
        }
        if dirty & dirty::GDT != 0 {
            // SAFETY: the running code uses only the reserved selectors.
            self.gdt_ok = unsafe { hc::set_gdt(&[self.pools.gdt.mfn], GDT.len() as u64) } == 0;
        }
        if dirty & dirty::USER_L4 != 0 {
            // SAFETY: the kernel's own L4, as `traps::prepare_user` set it.
            ok &= unsafe { hc::mmuext_one(MmuextCmd::NewUserBaseptr as u32, self.pools.l4_mfn, 0) }
                == 0;
        }
        ok
    }

    /// One round: a kernel-mode call (plain, with fuzzed data selectors
    /// or SS, or with a fuzzed CS), or a user-mode child.
    fn round(&mut self) -> bool {
        let kind = self.rng.below(20);
        if kind >= 18 {
            self.user_round();
            return true;
        }
        let mut at = Places {
            main: Space::new(AREA_B, B_PAGES * PAGE),
            aux: Some(Space::new(AREA_A, PAGE)),
            nested: false,
        };
        let n = self.number(false);
        let call = self.generate(n, &mut at);
        // A call that replaces the trap table must return to a context
        // that cannot fault: with no handler the domain would be crashed.
        let kind = if call.dirty & dirty::TRAPS != 0 {
            0
        } else {
            kind
        };
        let before = entries();
        IN_CALL.store(true, Ordering::Relaxed);
        let ret = match kind {
            0..=13 => {
                self.stats.kernel += 1;
                Some(raw_call(call.nr, call.args))
            }
            14..=16 => {
                self.stats.selectors += 1;
                let saved = data_selectors();
                let fuzzed = [
                    self.selector(),
                    self.selector(),
                    self.selector(),
                    self.selector(),
                ];
                load_data_selectors(fuzzed);
                let ss = self.rng.chance(50).then(|| self.selector());
                if let Some(ss) = ss {
                    load_ss(ss);
                }
                let ret = raw_call(call.nr, call.args);
                if ss.is_some() {
                    load_ss(kernel_selectors().1);
                }
                load_data_selectors(saved);
                Some(ret)
            }
            _ => {
                self.stats.cs += 1;
                // Each with RPL 1: a far return to RPL 3 would also pop SS:RSP.
                let (kernel_cs, kernel_ss) = kernel_selectors();
                let mut choices = [kernel_cs, 1, kernel_ss, FLAT_USER_CS & !3 | 1, 0];
                choices[4] = if self.gdt_ok {
                    // Beyond the fuzzer's GDT frame: never present.
                    u16::try_from((512 + self.rng.below(7168 - 512)) << 3 | 1).unwrap_or(1)
                } else {
                    GDT_USER_CS & !3 | 1
                };
                let cs = if self.gdt_ok && self.rng.chance(40) {
                    GDT_KERNEL_CS
                } else {
                    self.rng.pick(&choices)
                };
                call_with_cs(cs, call.nr, call.args)
            }
        };
        IN_CALL.store(false, Ordering::Relaxed);
        self.stats.faults += faults_since(before);
        if let Some(ret) = ret {
            self.stats.tally.add(ret);
        }
        if call.dirty != 0 && !self.restore(call.dirty) {
            self.stats.restore_failures += 1;
            // The trap table is what everything else needs.
            if call.dirty & dirty::TRAPS != 0 && !self.restore(dirty::TRAPS) {
                return false;
            }
        }
        true
    }

    /// A user-mode child at a random RIP with a random CS and RFLAGS.
    fn user_round(&mut self) {
        self.stats.user += 1;
        let data = traps::user_data() + ARG;
        let n = self.number(false);
        let regs = [
            n,
            self.value(),
            self.bad_ptr(),
            self.value(),
            self.value(),
            self.value(),
        ];
        for (i, r) in regs.iter().enumerate() {
            // SAFETY: the user data page is the children's; no Rust code
            // references it.
            unsafe { ((data + i as u64 * 8) as *mut u64).write_volatile(*r) };
        }
        let sels = u64::from(self.selector())
            | u64::from(self.selector()) << 16
            | u64::from(self.selector()) << 32
            | u64::from(self.selector()) << 48;
        // SAFETY: as above.
        unsafe { ((data + 48) as *mut u64).write_volatile(sels) };
        let routines = [
            &raw const user_fuzz_int82 as u64,
            &raw const user_fuzz_syscall as u64,
            &raw const user_fuzz_int80 as u64,
            &raw const user_fuzz_selectors as u64,
            traps::user_exit_entry(),
        ];
        // RIPs that fault in every mode and at every privilege.
        let faulting = [
            0,
            UNMAPPED,
            0x0000_8000_0000_0000 | (self.rng.next() & 0xFFFF_F000),
            0x0000_7FFF_FFFF_F000,
            0x1_0000_0000 + (self.rng.next() & 0xFFFF_F000),
        ];
        let (cs, rip) = if self.rng.chance(70) {
            let cs = if self.gdt_ok && self.rng.chance(30) {
                GDT_USER_CS
            } else {
                FLAT_USER_CS
            };
            let rip = if self.rng.chance(80) {
                self.rng.pick(&routines)
            } else {
                // Kernel text: a user page fault.
                hook as *const () as u64
            };
            (cs, rip)
        } else {
            let cs = match self.rng.below(3) {
                0 => FLAT_USER_CS32,
                1 => self.selector(),
                _ => self.selector() | 3,
            };
            (cs, self.rng.pick(&faulting))
        };
        let rflags = self.rng.next() & 0x003F_7FD7 | 2;
        // `HYPERVISOR_iret` to a non-canonical RIP crashes the domain on
        // this hypervisor: such RIPs go through a native `iretq`, which
        // faults in the guest.
        let canonical = !(1 << 47..0xFFFF_8000_0000_0000).contains(&rip);
        let how = if canonical && self.rng.chance(50) {
            UserEntry::Hypercall
        } else {
            UserEntry::Native
        };
        let before = entries();
        let exit = traps::run_user(rip, cs, rflags, how);
        self.stats.faults += faults_since(before);
        let own_exit = exit.vector == 6 && exit.rip == traps::user_exit_entry();
        self.stats.user_exits[usize::from(!own_exit)] += 1;
    }
}

/// vCPU 1's life: yielding back to the fuzzer, forever.
fn idle(_vcpu: usize) {
    loop {
        hc::sched_yield();
    }
}

/// A number from the command line (decimal, or hex after `0x`).
fn number_option(start_info: &StartInfo, key: &[u8], default: u64) -> Option<u64> {
    let Some(raw) = cmdline::option(start_info.cmdline(), key) else {
        return Some(default);
    };
    let text = core::str::from_utf8(raw).ok()?;
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => text.parse().ok(),
    }
}

/// `count` scratch frames, or an `ERROR`.
fn frames<const N: usize>() -> Option<[Frame; N]> {
    let mut out = [Frame { pfn: 0, mfn: 0 }; N];
    for f in &mut out {
        *f = support::frame()?;
    }
    Some(out)
}

/// Builds the scratch tables under [`FUZZ_L4_SLOT`]; returns the pools.
fn set_up(start_info: &StartInfo) -> Option<Pools> {
    let data: [Frame; DATA_FRAMES] = frames()?;
    let [l1a, l1b, l2, l3, l1_areas, a, b0, b1, b2, b3, ro, sink, gdt] = frames::<13>()?;
    let prepared = [
        (
            l1a,
            &[data[0].maddr() | PTE_RW, data[1].maddr() | PTE_RW][..],
        ),
        (l1b, &[data[2].maddr() | PTE_RW][..]),
        (
            l1_areas,
            &[
                a.maddr() | PTE_RW,
                0,
                b0.maddr() | PTE_RW,
                b1.maddr() | PTE_RW,
                b2.maddr() | PTE_RW,
                b3.maddr() | PTE_RW,
                0,
                ro.maddr() | PTE_RO,
                sink.maddr() | PTE_RW,
            ][..],
        ),
        (
            l2,
            &[
                l1_areas.maddr() | PTE_RW,
                l1a.maddr() | PTE_RW,
                l1b.maddr() | PTE_RW,
            ][..],
        ),
        (l3, &[l2.maddr() | PTE_RW][..]),
        (gdt, &GDT[..]),
    ];
    for (frame, words) in prepared {
        if mm::prepare_frame(26, frame, words) != 0 {
            report::error(
                "fuzzer tables",
                format_args!("cannot prepare mfn {:#x}", frame.mfn),
            );
            return None;
        }
    }
    let req = MmuUpdate::new(
        MmuUpdateCmd::NormalPtUpdate,
        (mm::boot_l4_mfn() << 12) + FUZZ_L4_SLOT * 8,
        l3.maddr() | PTE_RW,
    );
    // SAFETY: the L4 slot is unused by the running code.
    let ret = unsafe { hc::mmu_update(core::slice::from_ref(&req), None, FOREIGNDOM_SELF) };
    // SAFETY: the running code uses only the reserved selectors.
    let gdt_ret = unsafe { hc::set_gdt(&[gdt.mfn], GDT.len() as u64) };
    if ret != 0 || gdt_ret != 0 {
        report::error(
            "fuzzer tables",
            format_args!(
                "L4 slot: {}, set_gdt: {}",
                report::Ret(ret),
                report::Ret(gdt_ret)
            ),
        );
        return None;
    }
    let max_ram = u64::try_from(hc::maximum_ram_page()).unwrap_or(0);
    let safe = [
        data[0], data[1], data[2], data[3], data[4], data[5], l1a, l1b, l2, l3, sink,
    ];
    Some(Pools {
        safe,
        releasable: [
            data[0], data[1], data[2], data[3], data[4], data[5], l1a, l1b, l2,
        ],
        bad_mfns: [
            0,
            support::foreign_mfn().unwrap_or(1),
            0xB8,
            max_ram + 7,
            (1 << 40) - 1,
            u64::MAX >> 12,
        ],
        gdt,
        l4_mfn: mm::boot_l4_mfn(),
        sink_mfn: sink.mfn,
        nr_pages: start_info.nr_pages,
    })
}

pub fn run(start_info: &'static StartInfo) {
    let (Some(seed), Some(calls)) = (
        number_option(start_info, b"seed", 1),
        number_option(start_info, b"calls", 20_000),
    ) else {
        report::error(
            "fuzz options",
            format_args!("seed= and calls= take numbers"),
        );
        return;
    };
    if !support::traps_and_user() {
        return;
    }
    let Some(pools) = set_up(start_info) else {
        return;
    };
    let mut fuzzer = Fuzzer {
        rng: Rng(seed),
        pools,
        gdt_ok: true,
        nested_dirty: 0,
        stats: Stats {
            kernel: 0,
            selectors: 0,
            cs: 0,
            user: 0,
            user_exits: [0; 2],
            faults: 0,
            restore_failures: 0,
            tally: Tally {
                zero: 0,
                positive: 0,
                errno: [0; 136],
                other: 0,
            },
        },
    };
    if !fuzzer.fill_data_frames() {
        return;
    }
    // With a second vCPU (dom0_max_vcpus=2), it idles in yields: fuzzed
    // yields and vCPU operations then switch vCPUs with fuzzed state.
    let second = hc::vcpu_is_up(1) >= 0;
    if second && !support::start_vcpu(1, idle) {
        return;
    }
    println!(
        "fuzz: seed {seed:#x}, {calls} calls, {} vCPU(s)",
        1 + u8::from(second)
    );
    traps::set_hook(Some(hook));
    let started = shared::system_time_of(0).unwrap_or(0);
    let mut done = 0;
    while done < calls {
        if !fuzzer.round() {
            break;
        }
        done += 1;
        if done % 100_000 == 0 {
            println!("fuzz: {done} calls");
        }
    }
    let elapsed = shared::system_time_of(0)
        .unwrap_or(0)
        .saturating_sub(started);
    traps::set_hook(None);
    fuzzer.report(seed, done, elapsed);
    report::check_eq("the fuzzer made every call it was asked for", done, calls);
    report::check_eq(
        "the fuzzer could always put back its trap table",
        fuzzer.stats.restore_failures,
        0,
    );
}

impl Fuzzer {
    /// Fills the data frames with page-table entries and descriptors of
    /// the pools, for the calls that make them page tables, GDT or LDT
    /// pages (their validation then has something to check).
    fn fill_data_frames(&mut self) -> bool {
        let mut words = [0u64; 512];
        for i in 0..DATA_FRAMES {
            for w in &mut words {
                *w = if self.rng.chance(50) {
                    self.pte()
                } else {
                    self.descriptor()
                };
            }
            if mm::prepare_frame(26, self.pools.safe[i], &words) != 0 {
                report::error("fuzzer data frames", format_args!("cannot fill frame {i}"));
                return false;
            }
        }
        true
    }

    /// Prints the summary line.
    fn report(&self, seed: u64, done: u64, elapsed_ns: u64) {
        let s = &self.stats;
        let per_sec = done.saturating_mul(1_000_000_000) / elapsed_ns.max(1);
        println!(
            "fuzz summary: seed {seed:#x}, {done} calls in {} ms ({per_sec} calls/s): \
             {} kernel, {} with data selectors or SS, {} with CS, {} user children \
             ({} own exits, {} faults); {} guest faults; {} NMIs; gdt {}",
            elapsed_ns / 1_000_000,
            s.kernel,
            s.selectors,
            s.cs,
            s.user,
            s.user_exits[0],
            s.user_exits[1],
            s.faults,
            NMIS.load(Ordering::Relaxed),
            if self.gdt_ok { "kept" } else { "lost" },
        );
        guest_pv_shim::print!(
            "fuzz returns: 0 x{}, >0 x{}",
            s.tally.zero,
            s.tally.positive
        );
        for (code, &n) in s.tally.errno.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let name = i32::try_from(code)
                .ok()
                .and_then(Errno::from_code)
                .map_or("?", Errno::name);
            guest_pv_shim::print!(", -{name} x{n}");
        }
        println!(", other <0 x{}", s.tally.other);
    }
}
