//! x86-64: boot, descriptor tables, paging, entry stubs, guest memory access.
//!
//! Everything here touches hardware; everything it decides with is in the
//! pure modules of the crate.
pub mod acpi;
pub mod apic;
pub mod boot;
pub mod bootinfo;
pub mod builder;
pub mod context;
pub mod cpu;
pub mod cpuid;
pub mod cr;
pub mod dr;
pub mod entry;
pub mod env;
pub mod evtchn;
pub mod fastpath;
pub mod guest;
pub mod guest_mem;
pub mod io;
pub mod ioapic;
pub mod machine;
pub mod mem;
pub mod msr;
pub mod paging;
pub mod percpu;
pub mod pic;
pub mod pirq;
pub mod ports;
pub mod rtc;
pub mod schedule;
pub mod serial;
pub mod setup;
pub mod smp;
pub mod time;
pub mod trampoline;
pub mod traps;
