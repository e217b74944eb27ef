//! A bare-metal, type-1, paravirtualizing hypervisor for x86-64.
#![cfg_attr(not(test), no_std)]

#[cfg(target_os = "none")]
pub mod arch;
pub mod bootinfo;
pub mod builder;
pub mod cmdline;
pub mod console;
pub mod cpuid;
pub mod domain;
pub mod emulate;
pub mod evtchn;
pub mod exit;
pub mod fastpath;
pub mod gnttab;
pub mod hypercall;
pub mod index;
pub mod iomem;
pub mod ioport;
pub mod irq;
pub mod layout;
pub mod loader;
pub mod logfilter;
pub mod mm;
pub mod pci;
pub mod pirq;
#[cfg(test)]
mod proptests;
pub mod regs;
pub mod resume;
pub mod sched;
pub mod segment;
pub mod smp;
pub mod stats;
pub mod time;
pub mod timer;
pub mod tlb;
pub mod vcpu;
pub mod wallclock;
