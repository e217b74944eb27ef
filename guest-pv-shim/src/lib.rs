//! Runtime for tiny PV guest kernels (test guests, dom0): boot entry, Xen
//! ELF notes, hypercall wrappers, console output, XTF-style reporting.
//!
//! A kernel built on the shim boots unchanged on this hypervisor and on
//! real Xen 4.17 (as dom0 or domU):
//!
//! ```ignore
//! #![no_std]
//! #![no_main]
//!
//! use guest_pv_shim::dom0_abi::start_info::StartInfo;
//!
//! guest_pv_shim::guest_kernel! {
//!     main: kernel_main,
//!     guest_os: "my-kernel",
//!     guest_version: "0.1",
//! }
//!
//! fn kernel_main(si: &'static StartInfo) {
//!     guest_pv_shim::println!("hello from {:?}", core::str::from_utf8(si.magic_bytes()));
//! }
//! ```
//!
//! Linking: the binary must be linked with `guest.ld` (next to this
//! crate's `Cargo.toml`): pass `-T<path>/guest.ld` for the bare-metal
//! target only, e.g. from the binary's `build.rs` with
//! `cargo:rustc-link-arg-bins`. The script links the image from
//! `VIRT_BASE + 0x1000` ([`platform::VIRT_BASE`]) with every `p_paddr =
//! p_vaddr - VIRT_BASE`, puts the notes in a `PT_NOTE` segment and aligns
//! every segment to 4 KiB.
//!
//! Modules for test guests (bare-metal only):
//! - [`hypercall`]: typed wrappers for every hypercall the tests use,
//!   memory ([`hypercall::mm`]) and CPU ([`hypercall::cpu`]) ones included;
//! - [`mm`]: walking the guest's own page tables, pfn/mfn translation,
//!   scratch frames and mapping windows;
//! - [`shared`]: mapping `shared_info` and the `vcpu_info` fields;
//! - [`smp`]: starting secondary vCPUs (stacks, entry path, initial
//!   context);
//! - [`devices`]: the `drivers` crate's platform (MMIO and DMA pages, PCI
//!   configuration space and PIRQs through [`io`]);
//! - [`traps`]: an XTF-style trap table and callbacks, recorded
//!   exceptions with a fixup table ([`fixup_asm!`]), returns through
//!   `HYPERVISOR_iret` or `iretq`, and user mode.
//!
//! For every target: [`ring`], the two ends of a split driver's shared I/O
//! ring (its memory in a window, `ring::WindowMemory`, on the bare-metal
//! target only), and [`xenbus`], a xenstore client over the store ring
//! (its ring in a window, `xenbus::WindowRing`, on the bare-metal target
//! only).
//!
//! Structure and invariants:
//! - `unsafe` code exists only in the boot entry (`entry`), the hypercall
//!   instructions and wrappers (`hypercall`), and the modules that touch
//!   raw memory, registers, ports or entry code (`devices`, `mm`,
//!   `shared`, `smp`, `traps`); every other module forbids it.
//! - Everything that needs the bare-metal target (`_start`, the panic
//!   handler, hypercalls, console, the modules above) is compiled only for
//!   `target_os = "none"`; the pure parts (report status and lines, command
//!   line parsing, platform strings) build and are tested on the host.
//! - The guest runs with events masked. It has one vCPU unless it starts
//!   more with [`smp`]; everything else in the shim (report, console
//!   buffer, trap records) belongs to vCPU 0. Until a guest calls
//!   `traps::init`, nothing handles faults and any fault crashes the
//!   domain.

#![no_std]

pub use dom0_abi;
pub use drivers;

pub mod blkfront;
pub mod cmdline;
pub mod console_ring;
pub mod netfront;
pub mod platform;
pub mod profile;
pub mod report;
pub mod ring;
pub mod rng;
pub mod take_once;
pub mod xenbus;

#[cfg(target_os = "none")]
pub mod console;
#[cfg(target_os = "none")]
pub mod devices;
#[cfg(target_os = "none")]
pub mod entry;
#[cfg(target_os = "none")]
pub mod hypercall;
#[cfg(target_os = "none")]
pub mod io;
#[cfg(target_os = "none")]
pub mod mm;
#[cfg(target_os = "none")]
pub mod shared;
#[cfg(target_os = "none")]
pub mod smp;
#[cfg(target_os = "none")]
pub mod traps;

#[cfg(target_os = "none")]
pub use entry::{ramdisk, return_from_entry};
#[cfg(target_os = "none")]
pub use platform::on_xen;

/// Declares the guest kernel: emits the Xen ELF notes
/// ([`xen_elf_notes!`]) and registers `main` as the function the boot entry
/// calls with the `start_info` page.
///
/// `main` has type `fn(&'static StartInfo)`; if it returns, the guest
/// powers off. Use once per binary.
#[macro_export]
macro_rules! guest_kernel {
    (main: $main:path, guest_os: $os:literal, guest_version: $ver:literal $(,)?) => {
        $crate::xen_elf_notes!(guest_os: $os, guest_version: $ver);

        /// The guest's main function as the shim's boot entry calls it.
        // SAFETY: this is the only definition of the symbol, and it has the
        // signature the shim's entry declares.
        #[unsafe(no_mangle)]
        extern "Rust" fn __guest_pv_shim_main(
            start_info: &'static $crate::dom0_abi::start_info::StartInfo,
        ) {
            let main: fn(&'static $crate::dom0_abi::start_info::StartInfo) = $main;
            main(start_info)
        }
    };
}

/// Emits the Xen ELF notes of a kernel built on this shim into
/// `.note.Xen` (a `PT_NOTE` segment with `guest.ld`).
///
/// | note | value |
/// |---|---|
/// | `GUEST_OS` | `guest_os` |
/// | `GUEST_VERSION` | `guest_version` |
/// | `LOADER` | `"generic"` |
/// | `XEN_VERSION` | `"xen-3.0"` |
/// | `VIRT_BASE` | `0xFFFFFFFF80000000` ([`platform::VIRT_BASE`]) |
/// | `PADDR_OFFSET` | 0 |
/// | `HYPERCALL_PAGE` | address of the shim's hypercall page |
/// | `FEATURES` | `"dom0"` |
/// | `SUPPORTED_FEATURES` | `1 << 11` (dom0: Xen refuses a dom0 kernel without it) |
///
/// No `ENTRY` note: the entry point is the ELF `e_entry` (`_start`).
/// [`guest_kernel!`] invokes this; use it directly only without that macro.
#[macro_export]
macro_rules! xen_elf_notes {
    (guest_os: $os:literal, guest_version: $ver:literal $(,)?) => {
        core::arch::global_asm!(
            concat!(
                ".pushsection .note.Xen, \"a\", @note\n",
                // Each note: namesz = 4 ("Xen\0"), descsz, type, name, desc,
                // padding to 4 bytes. String descriptors are NUL-terminated.
                // GUEST_OS
                ".balign 4\n.long 4, 2f - 1f, 6\n.asciz \"Xen\"\n",
                "1: .asciz \"",
                $os,
                "\"\n2: .balign 4\n",
                // GUEST_VERSION
                ".balign 4\n.long 4, 2f - 1f, 7\n.asciz \"Xen\"\n",
                "1: .asciz \"",
                $ver,
                "\"\n2: .balign 4\n",
                // LOADER
                ".balign 4\n.long 4, 2f - 1f, 8\n.asciz \"Xen\"\n",
                "1: .asciz \"",
                "generic",
                "\"\n2: .balign 4\n",
                // XEN_VERSION
                ".balign 4\n.long 4, 2f - 1f, 5\n.asciz \"Xen\"\n",
                "1: .asciz \"",
                "xen-3.0",
                "\"\n2: .balign 4\n",
                // VIRT_BASE
                ".balign 4\n.long 4, 8, 3\n.asciz \"Xen\"\n",
                ".quad 0xffffffff80000000\n",
                // PADDR_OFFSET
                ".balign 4\n.long 4, 8, 4\n.asciz \"Xen\"\n",
                ".quad 0\n",
                // HYPERCALL_PAGE
                ".balign 4\n.long 4, 8, 2\n.asciz \"Xen\"\n",
                ".quad hypercall_page\n",
                // FEATURES
                ".balign 4\n.long 4, 2f - 1f, 10\n.asciz \"Xen\"\n",
                "1: .asciz \"",
                "dom0",
                "\"\n2: .balign 4\n",
                // SUPPORTED_FEATURES: submap 0 = XENFEAT_dom0
                ".balign 4\n.long 4, 4, 17\n.asciz \"Xen\"\n",
                ".long 0x800\n",
                ".popsection\n",
            ),
            options(att_syntax)
        );
    };
}
