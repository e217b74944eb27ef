//! The guest-facing ABI of the hypervisor: Xen 4.17's 64-bit PV interface,
//! with the guest kernel in ring 1.
//!
//! This crate is the single source of truth for every number and layout a
//! guest and the hypervisor share: hypercall numbers ([`hypercall`]),
//! error numbers ([`Errno`]), selectors ([`segment`]), fixed addresses
//! ([`layout`]), `start_info` ([`start_info`]), `shared_info`
//! ([`shared_info`]) and every hypercall argument structure (one module per
//! hypercall family). Both `hypervisor` and `guest-pv-shim` import these
//! definitions; a number defined twice elsewhere is a bug. The docs here are
//! the interface specification.
//!
//! Numbers and layouts are Xen's, checked against the 4.17 public headers:
//! every `#[repr(C)]` structure has compile-time assertions of its size and
//! of every field offset.
//!
//! # Conventions in these docs
//!
//! - **IN** / **OUT**: a field is read by the hypervisor / written by it.
//! - `[HV]` / `[GUEST]` (also `[GRANTER]`, `[BACKEND]`): who writes a field
//!   of shared memory.
//! - Error names are [`Errno`] variants; a hypercall returns them negated.
//!
//! # Register convention
//!
//! | register | use |
//! |---|---|
//! | `RAX` | hypercall number in; result out |
//! | `RDI`, `RSI`, `RDX`, `R10`, `R8` | arguments 1-5 |
//!
//! There is no sixth argument. The result is a value `>= 0`, or a negated
//! [`Errno`] (`-4095..=-1`). Argument registers may be clobbered (Xen's debug
//! builds poison them), as may `RCX` and `R11`; guests should treat a
//! hypercall like a function call and assume every caller-saved register
//! is clobbered. All other registers are preserved.
//!
//! # The hypercall page
//!
//! The image names one 4 KiB page with the `HYPERCALL_PAGE` ELF note; the
//! domain builder fills it before the guest starts. It has 128 slots of 32
//! bytes; a guest calls hypercall N with `call hypercall_page + N*32`, which
//! works unchanged on Xen and here. This hypervisor's stubs
//! ([`hypercall::fill_hypercall_page`]), the rest of the page being `0xCC`:
//!
//! | slot | bytes | instructions |
//! |---|---|---|
//! | N (normal) | `b8 NN 00 00 00 cd 82 c3` | `mov $N,%eax; int $0x82; ret` |
//! | 23 (`iret`) | `51 41 53 50 b8 17 00 00 00 cd 82` | `push %rcx; push %r11;` |
//! | | | `push %rax; mov $23,%eax; int $0x82` |
//!
//! Xen's 64-bit stubs are different (`push %rcx; push %r11; mov $N,%eax;
//! syscall; pop %r11; pop %rcx; ret`), but slot 23 starts with `0x51` on
//! both. The `iret` slot must be jumped to, never called.
//!
//! # Differences from Xen: the kernel runs in ring 1
//!
//! Xen runs 64-bit PV kernels in ring 3 and maps itself into every guest
//! address space. This hypervisor runs the guest kernel at **CPL 1** and
//! maps nothing of itself into a guest's address space except the
//! read-only M2P (Xen's address) and a per-CPU trampoline. What a guest sees:
//!
//! - **Selectors** ([`segment`]): the kernel runs on
//!   [`segment::RING1_KERNEL_CS`] (0xe019) and [`segment::RING1_KERNEL_SS`]
//!   (0xe039), not on Xen's `FLAT_KERNEL_CS` 0xe033 / `FLAT_KERNEL_SS`
//!   0xe02b. User selectors are Xen's (0xe033, 0xe023, 0xe02b).
//! - **Frames**: kernel-mode context shows CS with RPL 0 (0xe018), as Xen's
//!   (0xe030) do, user context RPL 3 on both, so `CS & 3` tells them apart
//!   on both hypervisors ([`segment::is_user_cs`]), as Linux's
//!   `user_mode()` does.
//! - **Hypercall entry**: `int $0x82` through a DPL-1 gate instead of
//!   `SYSCALL` (the CPU cannot tell ring 1 from ring 3 at `SYSCALL`), so
//!   only the kernel can make hypercalls; user code gets `#GP`.
//! - **Returning**: `HYPERVISOR_iret` works as on Xen. The kernel may also
//!   use a native `iretq` to user mode, or to itself after ORing its RPL 1
//!   into the frame's CS; an `iretq` to a kernel frame with RPL 0 is
//!   refused by the CPU and completed by the hypervisor as
//!   `HYPERVISOR_iret` would (one more hypervisor entry).
//! - **Page tables**: user and kernel share one table (kernel pages are
//!   supervisor, user pages user); `MMUEXT_NEW_USER_BASEPTR` is accepted for
//!   compatibility. User `SYSCALL` goes to the syscall callback without a
//!   page-table switch.
//! - **Privileged instructions**: `cli`, `sti` and `hlt` fault as on Xen;
//!   guests use `evtchn_upcall_mask` and `SCHEDOP_block`.
//! - **Hypervisor addresses**: reads or writes of the reserved range other
//!   than the M2P fault (with no handler registered, the domain is crashed),
//!   and hypercalls refuse guest pointers into it with `EFAULT`, as Xen does.
//!
//! # Boot
//!
//! The kernel image is a 64-bit ELF with Xen notes ([`elfnote`]); the entry
//! point gets `RSI` = virtual address of [`start_info::StartInfo`], `RSP` =
//! top of a boot stack page, events masked, the kernel CS (0xe019 here,
//! 0xe033 on Xen). The initial mapping maps pseudo-physical frames from
//! `VIRT_BASE` upward: `va = virt_base + pfn * 4096`.

#![no_std]
#![forbid(unsafe_code)]

/// Asserts a `#[repr(C)]` type's size and the offset of every listed field.
///
/// It also implements [`wire::Wire`] for the type from the same list, so
/// the list must name every field: one left out does not compile.
macro_rules! assert_layout {
    ($t:ident, $size:expr, { $($field:ident : $off:expr),* $(,)? }) => {
        const _: () = assert!(core::mem::size_of::<$t>() == $size);
        $(const _: () = assert!(core::mem::offset_of!($t, $field) == $off);)*
        impl $crate::wire::Wire for $t {
            const SIZE: usize = $size;
            #[inline]
            fn from_wire(bytes: &[u8]) -> Option<Self> {
                let bytes: &[u8; $size] = bytes.get(..$size)?.try_into().ok()?;
                Some($t {
                    $($field: $crate::wire::Wire::from_wire(&bytes[$off..])?,)*
                })
            }
            #[inline]
            fn to_wire(&self, out: &mut [u8]) -> Option<()> {
                let out: &mut [u8; $size] = out.get_mut(..$size)?.try_into().ok()?;
                $($crate::wire::Wire::to_wire(&{ self.$field }, &mut out[$off..])?;)*
                Some(())
            }
        }
    };
}
pub(crate) use assert_layout;

/// Declares a `#[repr(u32)]` enum with `from_number` and `name`.
macro_rules! numbered_enum {
    (
        $(#[$edoc:meta])*
        $ename:ident { $($(#[$doc:meta])* $name:ident = $nr:literal, $cname:literal;)* }
    ) => {
        $(#[$edoc])*
        #[repr(u32)]
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub enum $ename {
            $($(#[$doc])* $name = $nr,)*
        }

        impl $ename {
            /// Every value, ascending.
            pub const ALL: &'static [$ename] = &[$($ename::$name),*];

            /// The value with number `nr`, if defined.
            #[must_use]
            pub const fn from_number(nr: u64) -> Option<$ename> {
                match nr {
                    $($nr => Some($ename::$name),)*
                    _ => None,
                }
            }

            /// Xen's name (the part after the C prefix).
            #[must_use]
            pub const fn name(self) -> &'static str {
                match self {
                    $($ename::$name => $cname,)*
                }
            }
        }
    };
}

pub mod blkif;
pub mod console;
pub mod cpu;
pub mod domctl;
pub mod elfnote;
pub mod errno;
pub mod event_channel;
pub mod features;
pub mod grant_table;
pub mod hypercall;
pub mod layout;
pub mod mca;
pub mod memory;
pub mod mmu;
pub mod multicall;
pub mod netif;
pub mod nmi;
pub mod physdev;
pub mod platform;
pub mod ring;
pub mod sched;
pub mod segment;
pub mod shared_info;
pub mod start_info;
pub mod stats;
pub mod sysctl;
pub mod types;
pub mod vcpu;
pub mod version;
pub mod wire;
pub mod xenstore;

pub use errno::Errno;
pub use hypercall::Hypercall;
