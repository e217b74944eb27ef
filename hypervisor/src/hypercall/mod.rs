//! Hypercalls: the one dispatch table and the handlers, as pure logic.
//!
//! Handlers see the machine only through [`Env`]: guest memory copies that
//! fail with `EFAULT` (never fault the hypervisor), the console, the calling
//! domain (its event channels with the event bits of its shared_info page
//! among it), the clocks and facts about this build. `arch` implements it for real; the
//! tests below implement it over plain buffers. Every handler has the shape
//! copy in → decide → copy out, and returns `Result<u64, Errno>`;
//! [`dispatch::dispatch`] is the one place that turns that into the
//! guest-visible RAX value.
#![forbid(unsafe_code)]

extern crate alloc;

pub mod console;
pub mod cpu;
pub mod desc;
pub mod dispatch;
pub mod domctl;
pub mod evtchn;
pub mod gnttab;
pub mod mca;
pub mod memory;
pub mod mmu;
pub mod physdev;
pub mod platform;
pub mod sched;
pub mod stats;
pub mod vcpu;
pub mod version;

use dom0_abi::Errno;
use dom0_abi::wire::Wire;

use crate::domain::{Domain, Privilege};
use crate::evtchn::{EventBits, EventChannels};
use crate::mm::effects::Effects;
use crate::pirq::{Lines, Program};
use crate::stats::Stats;
use crate::vcpu::Vcpu;
use crate::wallclock::Wallclock;

/// What a handler may do to the machine.
pub trait Env {
    /// Copies `buf.len()` bytes from guest virtual address `va`.
    fn copy_from_guest(&mut self, va: u64, buf: &mut [u8]) -> Result<(), Errno>;
    /// Copies `buf` to guest virtual address `va`.
    fn copy_to_guest(&mut self, va: u64, buf: &[u8]) -> Result<(), Errno>;
    /// Writes bytes to the hypervisor console, unprefixed.
    fn console_write(&mut self, bytes: &[u8]);
    /// `CONSOLEIO_read`'s copy: takes at most `count` bytes of pending
    /// console input into the guest buffer at `buffer`, as
    /// `crate::console::InputRing::read` does (a piece that cannot be
    /// copied is `EFAULT` and stays pending); returns the bytes taken.
    fn console_read(&mut self, count: u32, buffer: u64) -> Result<u32, Errno>;
    /// The calling domain.
    fn domain(&mut self) -> &mut Domain;
    /// The calling vCPU.
    fn vcpu(&mut self) -> &mut Vcpu;
    /// How this environment reaches the event bits of a shared_info page
    /// (a concrete type, so that the bit operations inline).
    type Bits: EventBits;
    /// The calling domain's event channels, and the event bits of its
    /// shared_info page that sending and unmasking set.
    fn event_channels(&mut self) -> (&mut EventChannels, &mut Self::Bits);
    /// `shared_info.arch.nmi_reason` of the calling domain, as the guest
    /// last wrote it.
    fn nmi_reason(&mut self) -> u64;
    /// The calling domain's vCPU `id` (the caller itself included);
    /// `None` when the domain has no vCPU by that id.
    fn vcpu_by_id(&mut self, id: u32) -> Option<&mut Vcpu>;
    /// Moves vCPU `vcpu`'s `vcpu_info` to machine address `maddr`
    /// (`VCPUOP_register_vcpu_info`, checks done): its 64 bytes are copied
    /// there, `evtchn_upcall_pending` and every `evtchn_pending_sel` bit
    /// are set so that the guest rescans its ports, and the hypervisor
    /// uses the new place from now on.
    fn move_vcpu_info(&mut self, vcpu: u32, maddr: u64);
    /// Another vCPU of the domain should run before the caller returns to
    /// the guest (the caller yielded, or went down).
    fn reschedule(&mut self);
    /// System time: nanoseconds since boot.
    fn now_ns(&self) -> u64;
    /// A timer, a sleeping vCPU or a VIRQ binding changed (call it after
    /// the change): what is due fires now and the hypervisor's own timer
    /// is set again.
    fn timers_changed(&mut self);
    /// Wakes the sleeping vCPUs whose upcall the call newly raised through
    /// [`Env::event_channels`] (Xen's kick). The dispatcher calls it after
    /// every hypercall that can raise one.
    fn wake_kicked(&mut self);
    /// Sets the wall clock (`XENPF_settime*`, which needs the caller's
    /// `privilege`) and writes it into every domain's shared_info page
    /// before the hypercall returns.
    fn set_wallclock(&mut self, privilege: Privilege, wallclock: Wallclock);
    /// Continues the hypercall later: the guest re-issues it with `args`
    /// (Xen's continuation), so one call never holds the CPU for long. The
    /// handler's return value is then ignored.
    fn preempt(&mut self, args: [u64; 5]);
    /// Takes back a continuation requested with [`Env::preempt`], if any.
    fn take_preempted(&mut self) -> Option<[u64; 5]>;
    /// Whether another domain's slot this hypercall needed was held by
    /// another CPU that may be waiting for the caller's own (a lower id's,
    /// `docs/locking.md`): the lookup answered `None`, which is not the
    /// domain's state. The environment then has the call continued
    /// ([`Env::preempt`]) with the arguments the guest made it with, so
    /// the guest re-issues it after its entry, and the slot that other CPU
    /// waits for, ended; the handler's answer is dropped. A `multicall`
    /// runs the entry again with the entry's arguments; a batch handler
    /// may continue from the element that found it instead (its own
    /// `preempt`, which clears this).
    fn slot_busy(&self) -> bool {
        false
    }
    /// Clears [`Env::slot_busy`] (the dispatcher has continued the call).
    fn clear_slot_busy(&mut self) {}
    /// `HYPERVISOR_iret`: replaces the calling vCPU's context with the
    /// `iret_context` at its stack pointer and returns the restored RAX
    /// (the domain is crashed if the frame is bad). Also an entry of a
    /// `multicall`, which it ends.
    fn iret(&mut self) -> Result<u64, Errno>;
    /// Carries out what a batch of memory operations left to do (TLB
    /// flushes, view resyncs, crashing the domain); see `mm::effects`.
    fn apply_effects(&mut self, fx: &Effects);
    /// Facts about this hypervisor build and boot.
    fn host(&self) -> &HostInfo;
    /// The machine's interrupt lines (`crate::pirq`): `f` decides, and the
    /// I/O APIC is then told what it returns.
    fn irq_lines<R>(&mut self, f: impl FnOnce(&mut Lines) -> (R, Option<Program>)) -> R;
    /// Brings the calling vCPU's segment-base record up to date with what
    /// its guest changed without the hypervisor (WRFSBASE/WRGSBASE), before
    /// a handler changes part of it (nothing where bases cannot change so).
    fn sync_segment_bases(&mut self) {}
    /// The calling vCPU's event counters (none, unless the environment
    /// keeps them).
    fn stats(&self) -> Stats {
        Stats::EMPTY
    }
}

/// Facts about the running hypervisor that guests can ask for.
#[derive(Clone, Copy, Debug)]
pub struct HostInfo {
    /// The hypervisor's command line, as the boot loader gave it.
    pub command_line: &'static [u8],
    /// The image's GNU build ID, if it has one.
    pub build_id: &'static [u8],
    /// Whether the CPU honours the NX bit (EFER.NXE is set): grant
    /// mappings then carry it, as Xen's `_PAGE_NX`.
    pub nx: bool,
    /// The machine's memory map as the boot loader gave it
    /// (`XENMEM_machine_memory_map`).
    pub machine_map: &'static [dom0_abi::memory::E820Entry],
    /// The physical CPUs, the boot CPU first (`XENPF_get_cpuinfo`).
    pub pcpus: &'static [Pcpu],
    /// The boot CPU's own CPUID leaf and subleaf (`XEN_MC_physcpuinfo`).
    pub raw_cpuid: fn(u32, u32) -> [u32; 4],
    /// The boot CPU's `MSR_IA32_MCG_CAP` (0 without machine-check
    /// architecture).
    pub mcg_cap: u64,
}

/// One physical CPU as `XENPF_get_cpuinfo` describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pcpu {
    /// Its local APIC id.
    pub apic_id: u32,
    /// Its ACPI processor id (`u32::MAX` when no MADT named it).
    pub acpi_id: u32,
    /// Whether it was started.
    pub online: bool,
}

/// Structures up to this size are copied through a stack buffer; larger
/// ones (such as `vcpu_guest_context`) through the heap.
const STACK_COPY: usize = 64;

/// Reads an ABI structure from guest memory at `va` (`EFAULT` if it cannot
/// be read whole).
pub(crate) fn read_struct<T: Wire>(env: &mut impl Env, va: u64) -> Result<T, Errno> {
    if T::SIZE <= STACK_COPY {
        let mut bytes = [0u8; STACK_COPY];
        env.copy_from_guest(va, &mut bytes[..T::SIZE])?;
        return T::from_wire(&bytes).ok_or(Errno::EFAULT);
    }
    let mut bytes = alloc::vec![0u8; T::SIZE];
    env.copy_from_guest(va, &mut bytes)?;
    T::from_wire(&bytes).ok_or(Errno::EFAULT)
}

/// Writes an ABI structure to guest memory at `va` (`EFAULT` if it cannot
/// be written whole).
pub(crate) fn write_struct<T: Wire>(env: &mut impl Env, va: u64, value: &T) -> Result<(), Errno> {
    if T::SIZE <= STACK_COPY {
        let mut bytes = [0u8; STACK_COPY];
        value.to_wire(&mut bytes).ok_or(Errno::EFAULT)?;
        return env.copy_to_guest(va, &bytes[..T::SIZE]);
    }
    let mut bytes = alloc::vec![0u8; T::SIZE];
    value.to_wire(&mut bytes).ok_or(Errno::EFAULT)?;
    env.copy_to_guest(va, &bytes)
}

/// Reads a little-endian `u32` from guest memory.
pub(crate) fn read_u32(env: &mut impl Env, va: u64) -> Result<u32, Errno> {
    let mut b = [0u8; 4];
    env.copy_from_guest(va, &mut b)?;
    Ok(u32::from_le_bytes(b))
}
