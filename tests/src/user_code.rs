//! Code that runs in guest user mode (ring 3), in `.text.user`.
//!
//! Each routine ends with a jump to the shim's user exit (a `ud2` the
//! kernel recognises), which returns to the kernel
//! (`guest_pv_shim::traps::run_user` returns). Results go to the user
//! data page (`traps::user_data()`), at the byte offsets of the `OUT_*`
//! constants. Probes of single instructions have a fixup-table entry, so
//! the kernel's handler resumes after the instruction and the routine
//! goes on to the exit.

use core::arch::global_asm;

use guest_pv_shim::{mm, traps};

/// The word at byte `offset` of the user data page (a result).
pub fn user_word(offset: u64) -> u64 {
    mm::read_mapped(traps::user_data() + offset)
}

/// Writes the word at byte `offset` of the user data page (an argument).
pub fn set_user_word(offset: u64, value: u64) {
    // SAFETY: the user data page is guest memory no Rust code references.
    unsafe { ((traps::user_data() + offset) as *mut u64).write_volatile(value) };
}

/// User data offset: first result.
pub const OUT_0: u64 = 0;
/// User data offset: second result.
pub const OUT_1: u64 = 8;
/// User data offset: third result.
pub const OUT_2: u64 = 16;
/// User data offset: fourth result.
pub const OUT_3: u64 = 24;
/// User data offset: the routine's argument (written by the kernel).
pub const ARG: u64 = 64;

/// RAX with which `user_syscall` makes its system call.
pub const SYSCALL_NUMBER: u64 = 0x5CA1;

global_asm!(
    ".pushsection .text.user, \"ax\", @progbits",
    // Stores CS and SS, then returns.
    ".globl user_selectors",
    "user_selectors:",
    "mov ax, cs",
    "movzx eax, ax",
    "mov qword ptr [rip + shim_user_data + {o0}], rax",
    "mov ax, ss",
    "movzx eax, ax",
    "mov qword ptr [rip + shim_user_data + {o1}], rax",
    "pushfq",
    "pop rax",
    "mov qword ptr [rip + shim_user_data + {o2}], rax",
    "mov qword ptr [rip + shim_user_data + {o3}], rsp",
    "jmp shim_user_exit",
    // SYSCALL with RAX = the number in ARG and RDI = RSI = 0 (the
    // arguments of `xen_version(XENVER_version, NULL)` if RAX names it);
    // stores RAX as it comes back.
    ".globl user_syscall_arg",
    "user_syscall_arg:",
    "mov rax, qword ptr [rip + shim_user_data + {arg}]",
    "xor edi, edi",
    "xor esi, esi",
    "syscall",
    "mov qword ptr [rip + shim_user_data + {o0}], rax",
    "jmp shim_user_exit",
    // SYSCALL with RAX = SYSCALL_NUMBER and RCX/R11 poisoned; stores RAX,
    // RCX, R11 as they come back and the expected return address.
    ".globl user_syscall",
    "user_syscall:",
    "mov rcx, 0x1c1c",
    "mov r11, 0x1b1b",
    "mov eax, {nr}",
    "syscall",
    "5:",
    "mov qword ptr [rip + shim_user_data + {o0}], rax",
    "mov qword ptr [rip + shim_user_data + {o1}], rcx",
    "mov qword ptr [rip + shim_user_data + {o2}], r11",
    "lea rax, [rip + 5b]",
    "mov qword ptr [rip + shim_user_data + {o3}], rax",
    "jmp shim_user_exit",
    // Reads the u64 at the address in ARG (faults resume after the read).
    ".globl user_read",
    "user_read:",
    "mov rax, qword ptr [rip + shim_user_data + {arg}]",
    "2:",
    "mov rax, qword ptr [rax]",
    "3:",
    "mov qword ptr [rip + shim_user_data + {o0}], rax",
    "jmp shim_user_exit",
    ".pushsection .ex_table, \"a\"",
    ".balign 8",
    ".quad 2b, 3b, 3b",
    ".popsection",
    // Writes 0x5757 to the address in ARG.
    ".globl user_write",
    "user_write:",
    "mov rax, qword ptr [rip + shim_user_data + {arg}]",
    "mov ecx, 0x5757",
    "2:",
    "mov qword ptr [rax], rcx",
    "3:",
    "jmp shim_user_exit",
    ".pushsection .ex_table, \"a\"",
    ".balign 8",
    ".quad 2b, 3b, 3b",
    ".popsection",
    // Spins until the u64 at ARG is non-zero (something outside user mode
    // sets it), then stores it.
    ".globl user_wait",
    "user_wait:",
    "2:",
    "pause",
    "mov rax, qword ptr [rip + shim_user_data + {arg}]",
    "test rax, rax",
    "jz 2b",
    "mov qword ptr [rip + shim_user_data + {o0}], rax",
    "jmp shim_user_exit",
    ".popsection",
    o0 = const OUT_0,
    o1 = const OUT_1,
    o2 = const OUT_2,
    o3 = const OUT_3,
    arg = const ARG,
    nr = const SYSCALL_NUMBER,
);

/// Defines user routines that execute one instruction (with a fixup) and
/// return to the kernel, and a table of their names and addresses.
macro_rules! user_probes {
    ($table:ident: $($name:ident => $insn:literal),+ $(,)?) => {
        global_asm!(
            ".pushsection .text.user, \"ax\", @progbits",
            $(
                concat!(".globl ", stringify!($name)),
                concat!(stringify!($name), ":"),
                "2:",
                $insn,
                "3:",
                "jmp shim_user_exit",
                ".pushsection .ex_table, \"a\"",
                ".balign 8",
                ".quad 2b, 3b, 3b",
                ".popsection",
            )+
            ".popsection",
        );
        unsafe extern "C" {
            $(
                #[doc = concat!("User probe `", $insn, "`.")]
                static $name: u8;
            )+
        }
        /// The entry of the probe of `insn` (which is also the address of
        /// the instruction), if there is one.
        pub fn $table(insn: &str) -> Option<u64> {
            $(
                if insn == $insn {
                    return Some(core::ptr::addr_of!($name) as u64);
                }
            )+
            None
        }
    };
}

user_probes! {
    probe_address:
    user_cli => "cli",
    user_sti => "sti",
    user_hlt => "hlt",
    user_mov_cr3 => "mov rax, cr3",
    user_mov_cr0 => "mov rax, cr0",
    user_mov_to_cr3 => "mov cr3, rax",
    user_rdmsr => "rdmsr",
    user_wrmsr => "wrmsr",
    user_in => "in al, 0x80",
    user_out => "out 0x80, al",
    user_lgdt => "lgdt [rsp]",
    user_lidt => "lidt [rsp]",
    user_wbinvd => "wbinvd",
    user_invlpg => "invlpg [rsp]",
    user_clts => "clts",
    user_int82 => "int 0x82",
    user_int80 => "int 0x80",
    user_int21 => "int 0x21",
    user_int4 => "int 4",
    user_swapgs => "swapgs",
    user_ud2 => "ud2",
    user_int3 => "int3",
    user_syscall_probe => "syscall",
}

unsafe extern "C" {
    /// See the assembly above.
    pub static user_selectors: u8;
    /// See the assembly above.
    pub static user_syscall: u8;
    /// See the assembly above.
    pub static user_syscall_arg: u8;
    /// See the assembly above.
    pub static user_read: u8;
    /// See the assembly above.
    pub static user_write: u8;
    /// See the assembly above.
    pub static user_wait: u8;
}
