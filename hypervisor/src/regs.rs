//! A vCPU's general registers as the entry stubs save them. Plain data:
//! the layout is what the stubs in `arch::x86_64::entry` push and pop, so
//! it is fixed here, and a vCPU that is not running keeps its context in
//! this form.
#![forbid(unsafe_code)]

/// A guest's (or the interrupted hypervisor's) registers, as the entry stubs
/// save them: general registers, then vector and error code, then the
/// hardware frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
#[allow(missing_docs, reason = "each field is the register it is named after")]
pub struct GuestRegs {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rbx: u64,
    pub rax: u64,
    pub rcx: u64,
    /// The IDT vector that brought us here.
    pub vector: u64,
    /// The CPU's error code, or 0 for vectors without one.
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

const _: () = assert!(core::mem::size_of::<GuestRegs>() == 22 * 8);
