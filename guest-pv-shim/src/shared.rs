//! The `shared_info` page: mapping it and the `vcpu_info` fields.
//!
//! `start_info.shared_info` is a machine address; the guest maps it over a
//! page-aligned page of its own `.bss` with `update_va_mapping` (as XTF
//! and Mini-OS do). Until [`map`] succeeded, the accessors return `None`
//! or do nothing.
//!
//! vCPU `n` (below [`XEN_LEGACY_MAX_VCPUS`]) uses `vcpu_info[n]` of the
//! page; the `*_of` accessors take the vCPU id, the others act on vCPU 0.
//!
//! Invariant: the page is only accessed with volatile reads and writes of
//! single fields, or of a whole `vcpu_time_info` under its version
//! seqlock (the hypervisor writes the page concurrently), never through a
//! Rust reference.

use core::arch::global_asm;
use core::mem::offset_of;
use core::sync::atomic::{AtomicU64, Ordering};

use dom0_abi::shared_info::{
    ArchSharedInfo, ArchVcpuInfo, SharedInfo, VcpuInfo, VcpuTimeInfo, XEN_LEGACY_MAX_VCPUS,
};

use crate::entry::start_info;
use crate::hypercall;
use crate::mm::{PTE_RW, UVMF_INVLPG};

global_asm!(
    ".pushsection .bss.shim_shared_info, \"aw\", @nobits",
    ".balign 4096",
    ".globl shim_shared_info_page",
    "shim_shared_info_page:",
    ".space 4096",
    ".popsection",
);

unsafe extern "C" {
    /// The page the shared_info frame is mapped over (address only).
    static shim_shared_info_page: u8;
}

/// Address of the mapped shared_info page, 0 until [`map`] succeeded.
static MAPPED: AtomicU64 = AtomicU64::new(0);

/// Maps the shared_info page (once). Returns the `update_va_mapping`
/// result (0 if it is already mapped).
pub fn map() -> i64 {
    if MAPPED.load(Ordering::Relaxed) != 0 {
        return 0;
    }
    let va = core::ptr::addr_of!(shim_shared_info_page) as u64;
    let maddr = start_info().shared_info & !0xFFF;
    // SAFETY: the page is reserved for this mapping; no Rust code uses it
    // except through this module's volatile accesses.
    let ret = unsafe { hypercall::update_va_mapping(va, maddr | PTE_RW, UVMF_INVLPG) };
    if ret == 0 {
        MAPPED.store(va, Ordering::Relaxed);
    }
    ret
}

/// The address of vCPU `vcpu`'s `vcpu_info` field at `offset`, if mapped
/// and `vcpu` has a slot in the page.
fn vcpu_field(vcpu: usize, offset: usize) -> Option<u64> {
    let base = MAPPED.load(Ordering::Relaxed);
    (base != 0 && vcpu < XEN_LEGACY_MAX_VCPUS).then(|| {
        base + (offset_of!(SharedInfo, vcpu_info) + vcpu * size_of::<VcpuInfo>() + offset) as u64
    })
}

/// `vcpu_info[0].arch.cr2`: the address of the last page fault delivered.
#[must_use]
pub fn cr2() -> Option<u64> {
    let at = vcpu_field(
        0,
        offset_of!(VcpuInfo, arch) + offset_of!(ArchVcpuInfo, cr2),
    )?;
    // SAFETY: `at` lies in the mapped shared_info page (8-byte aligned
    // field); a volatile read takes no reference.
    Some(unsafe { (at as *const u64).read_volatile() })
}

/// `vcpu_info[0].evtchn_upcall_mask`.
#[must_use]
pub fn upcall_mask() -> Option<u8> {
    upcall_mask_of(0)
}

/// `vcpu_info[vcpu].evtchn_upcall_mask`.
#[must_use]
pub fn upcall_mask_of(vcpu: usize) -> Option<u8> {
    let at = vcpu_field(vcpu, offset_of!(VcpuInfo, evtchn_upcall_mask))?;
    // SAFETY: as in `cr2`, for a byte field.
    Some(unsafe { (at as *const u8).read_volatile() })
}

/// Sets `vcpu_info[0].evtchn_upcall_mask`; returns whether it is mapped.
pub fn set_upcall_mask(mask: u8) -> bool {
    set_upcall_mask_of(0, mask)
}

/// Sets `vcpu_info[vcpu].evtchn_upcall_mask`; returns whether it is
/// mapped.
pub fn set_upcall_mask_of(vcpu: usize, mask: u8) -> bool {
    let Some(at) = vcpu_field(vcpu, offset_of!(VcpuInfo, evtchn_upcall_mask)) else {
        return false;
    };
    // SAFETY: as in `cr2`; the guest owns this field.
    unsafe { (at as *mut u8).write_volatile(mask) };
    true
}

/// `vcpu_info[0].evtchn_upcall_pending`.
#[must_use]
pub fn upcall_pending() -> Option<u8> {
    let at = vcpu_field(0, offset_of!(VcpuInfo, evtchn_upcall_pending))?;
    // SAFETY: as in `cr2`, for a byte field.
    Some(unsafe { (at as *const u8).read_volatile() })
}

/// Sets `vcpu_info[0].evtchn_upcall_pending`; returns whether it is
/// mapped.
pub fn set_upcall_pending(pending: u8) -> bool {
    let Some(at) = vcpu_field(0, offset_of!(VcpuInfo, evtchn_upcall_pending)) else {
        return false;
    };
    // SAFETY: as in `cr2`; the guest may set or clear this byte.
    unsafe { (at as *mut u8).write_volatile(pending) };
    true
}

/// A consistent copy of `vcpu_info[vcpu].time` (the `version` seqlock:
/// retried while odd or changed during the copy).
#[must_use]
pub fn time_info_of(vcpu: usize) -> Option<VcpuTimeInfo> {
    let at = vcpu_field(vcpu, offset_of!(VcpuInfo, time))?;
    let ptr = at as *const VcpuTimeInfo;
    loop {
        // SAFETY: `at` is the 8-byte aligned `time` field of a slot in the
        // mapped page; field-wise volatile reads take no reference.
        let (before, copy, after) = unsafe {
            let version = &raw const (*ptr).version;
            let before = version.read_volatile();
            core::sync::atomic::fence(Ordering::Acquire);
            let copy = ptr.read_volatile();
            core::sync::atomic::fence(Ordering::Acquire);
            (before, copy, version.read_volatile())
        };
        if before & 1 == 0 && before == after {
            return Some(copy);
        }
    }
}

/// This CPU's time-stamp counter (under QEMU's `-icount`, the
/// instructions executed so far, by every domain and the hypervisor).
#[must_use]
pub fn tsc() -> u64 {
    // SAFETY: RDTSC reads the time-stamp counter; no memory is touched.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// The current system time (ns) from vCPU `vcpu`'s time record and this
/// CPU's TSC (meant for the calling vCPU's own record).
#[must_use]
pub fn system_time_of(vcpu: usize) -> Option<u64> {
    let info = time_info_of(vcpu)?;
    Some(info.system_time_at(tsc()))
}

/// Longest sleep of [`wait_for`] between two looks.
const LOOK_NS: u64 = 10_000_000;

/// Waits until `done` holds, for at most `patience_ns` of system time;
/// false if it never does. Between looks it sleeps in `SCHEDOP_poll` on
/// `port` (notified when what `done` looks at may have changed; at most
/// 10 ms a sleep), or yields when no event announces the change. Without
/// a clock ([`map`] not done) it looks once.
pub fn wait_for(port: Option<u32>, patience_ns: u64, mut done: impl FnMut() -> bool) -> bool {
    let Some(start) = system_time_of(0) else {
        return done();
    };
    loop {
        if done() {
            return true;
        }
        let now = system_time_of(0).unwrap_or(u64::MAX);
        if now.saturating_sub(start) > patience_ns {
            return false;
        }
        match port {
            Some(port) => {
                hypercall::sched_poll(&[port], now.saturating_add(LOOK_NS));
                let _ = clear_evtchn_pending(port);
            }
            None => {
                hypercall::sched_yield();
            }
        }
    }
}

/// The wall clock at system time 0, as `shared_info` publishes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Wallclock {
    /// `wc_version` when it was read (even: a consistent copy).
    pub version: u32,
    /// Seconds since 1970-01-01 00:00 UTC (`wc_sec_hi:wc_sec`).
    pub sec: u64,
    /// `wc_nsec`.
    pub nsec: u32,
}

impl Wallclock {
    /// The wall time at system time `system_time`, in nanoseconds since
    /// 1970-01-01 00:00 UTC (wrapping, as the hypervisor's arithmetic).
    #[must_use]
    pub fn ns_at(&self, system_time: u64) -> u64 {
        self.sec
            .wrapping_mul(1_000_000_000)
            .wrapping_add(u64::from(self.nsec))
            .wrapping_add(system_time)
    }
}

/// `shared_info.wc_version` as it is now (odd while the hypervisor
/// changes the wall clock).
#[must_use]
pub fn wc_version() -> Option<u32> {
    let base = MAPPED.load(Ordering::Relaxed);
    if base == 0 {
        return None;
    }
    let at = base + offset_of!(SharedInfo, wc_version) as u64;
    // SAFETY: `at` is the 4-byte aligned `wc_version` field of the mapped
    // page; a volatile read takes no reference.
    Some(unsafe { (at as *const u32).read_volatile() })
}

/// A consistent copy of the wall clock (`wc_version` seqlock: retried
/// while odd or changed during the copy).
#[must_use]
pub fn wallclock() -> Option<Wallclock> {
    let base = MAPPED.load(Ordering::Relaxed);
    if base == 0 {
        return None;
    }
    let field = |offset: usize| (base + offset as u64) as *const u32;
    loop {
        // SAFETY: the four `wc_*` fields are 4-byte aligned `u32`s of the
        // mapped page; volatile reads take no reference.
        let (before, sec, nsec, sec_hi, after) = unsafe {
            let before = field(offset_of!(SharedInfo, wc_version)).read_volatile();
            core::sync::atomic::fence(Ordering::Acquire);
            let sec = field(offset_of!(SharedInfo, wc_sec)).read_volatile();
            let nsec = field(offset_of!(SharedInfo, wc_nsec)).read_volatile();
            let sec_hi = field(offset_of!(SharedInfo, wc_sec_hi)).read_volatile();
            core::sync::atomic::fence(Ordering::Acquire);
            let after = field(offset_of!(SharedInfo, wc_version)).read_volatile();
            (before, sec, nsec, sec_hi, after)
        };
        if before & 1 == 0 && before == after {
            return Some(Wallclock {
                version: before,
                sec: (u64::from(sec_hi) << 32) | u64::from(sec),
                nsec,
            });
        }
    }
}

/// Sets `shared_info.arch.max_pfn` (the guest's p2m size as it reports it;
/// Xen derives `XENMEM_maximum_gpfn` of a PV guest from it). Returns
/// whether shared_info is mapped.
pub fn set_arch_max_pfn(max_pfn: u64) -> bool {
    let base = MAPPED.load(Ordering::Relaxed);
    if base == 0 {
        return false;
    }
    let at = base + (offset_of!(SharedInfo, arch) + offset_of!(ArchSharedInfo, max_pfn)) as u64;
    // SAFETY: `at` is the 8-byte aligned `arch.max_pfn` field of the
    // mapped shared_info page, a guest-owned field.
    unsafe { (at as *mut u64).write_volatile(max_pfn) };
    true
}

/// Sets `shared_info.arch.nmi_reason` (the hypervisor's record of why a
/// hardware NMI was passed on; vCPU 0 registering an NMI callback while it
/// is non-zero gets an NMI). Returns whether shared_info is mapped.
pub fn set_nmi_reason(reason: u64) -> bool {
    let base = MAPPED.load(Ordering::Relaxed);
    if base == 0 {
        return false;
    }
    let at = base + (offset_of!(SharedInfo, arch) + offset_of!(ArchSharedInfo, nmi_reason)) as u64;
    // SAFETY: `at` is the 8-byte aligned `arch.nmi_reason` field of the
    // mapped shared_info page, which the guest may write.
    unsafe { (at as *mut u64).write_volatile(reason) };
    true
}

/// Offset of `evtchn_pending` (`true`) or `evtchn_mask` (`false`) word
/// `port / 64`; `None` for a port beyond the 2-level bitmaps.
fn evtchn_word(pending: bool, port: u32) -> Option<u64> {
    let base = MAPPED.load(Ordering::Relaxed);
    let word = usize::try_from(port / 64).ok()?;
    let offset = if pending {
        offset_of!(SharedInfo, evtchn_pending)
    } else {
        offset_of!(SharedInfo, evtchn_mask)
    };
    (base != 0 && word < 64).then(|| base + (offset + word * 8) as u64)
}

/// Runs `f` on the shared word at `at` as an atomic.
fn with_word<R>(at: u64, f: impl FnOnce(&AtomicU64) -> R) -> R {
    // SAFETY: `at` is an 8-byte aligned word of the mapped shared_info
    // page (from `evtchn_word` or `vcpu_field`); the hypervisor updates it
    // with atomic operations too, and the reference ends with `f`.
    f(unsafe { AtomicU64::from_ptr(at as *mut u64) })
}

/// Whether `port`'s bit is set in `evtchn_pending`.
#[must_use]
pub fn evtchn_pending(port: u32) -> Option<bool> {
    let at = evtchn_word(true, port)?;
    Some(with_word(at, |w| w.load(Ordering::SeqCst)) & (1 << (port % 64)) != 0)
}

/// Clears `port`'s bit in `evtchn_pending`; returns whether it was set.
pub fn clear_evtchn_pending(port: u32) -> Option<bool> {
    let at = evtchn_word(true, port)?;
    let bit = 1u64 << (port % 64);
    Some(with_word(at, |w| w.fetch_and(!bit, Ordering::SeqCst)) & bit != 0)
}

/// Whether `port`'s bit is set in `evtchn_mask`.
#[must_use]
pub fn evtchn_masked(port: u32) -> Option<bool> {
    let at = evtchn_word(false, port)?;
    Some(with_word(at, |w| w.load(Ordering::SeqCst)) & (1 << (port % 64)) != 0)
}

/// Sets or clears `port`'s bit in `evtchn_mask` by hand (no hypercall:
/// unmasking this way does not re-raise a pending port).
pub fn set_evtchn_mask(port: u32, masked: bool) -> bool {
    let Some(at) = evtchn_word(false, port) else {
        return false;
    };
    let bit = 1u64 << (port % 64);
    with_word(at, |w| {
        if masked {
            w.fetch_or(bit, Ordering::SeqCst)
        } else {
            w.fetch_and(!bit, Ordering::SeqCst)
        }
    });
    true
}

/// `vcpu_info[vcpu].evtchn_pending_sel`.
#[must_use]
pub fn pending_sel_of(vcpu: usize) -> Option<u64> {
    let at = vcpu_field(vcpu, offset_of!(VcpuInfo, evtchn_pending_sel))?;
    Some(with_word(at, |w| w.load(Ordering::SeqCst)))
}

/// Exchanges `vcpu_info[vcpu].evtchn_pending_sel` with 0 and returns it
/// (step 2 of the upcall protocol).
pub fn take_pending_sel_of(vcpu: usize) -> Option<u64> {
    let at = vcpu_field(vcpu, offset_of!(VcpuInfo, evtchn_pending_sel))?;
    Some(with_word(at, |w| w.swap(0, Ordering::SeqCst)))
}

/// `vcpu_info[vcpu].evtchn_upcall_pending`.
#[must_use]
pub fn upcall_pending_of(vcpu: usize) -> Option<u8> {
    let at = vcpu_field(vcpu, offset_of!(VcpuInfo, evtchn_upcall_pending))?;
    // SAFETY: as in `cr2`, for a byte field.
    Some(unsafe { (at as *const u8).read_volatile() })
}

/// Sets `vcpu_info[vcpu].evtchn_upcall_pending`; returns whether it is
/// mapped.
pub fn set_upcall_pending_of(vcpu: usize, pending: u8) -> bool {
    let Some(at) = vcpu_field(vcpu, offset_of!(VcpuInfo, evtchn_upcall_pending)) else {
        return false;
    };
    // SAFETY: as in `cr2`; the guest may set or clear this byte.
    unsafe { (at as *mut u8).write_volatile(pending) };
    true
}

/// The 2-level upcall protocol for vCPU `vcpu`, as an event handler runs
/// it: clears `evtchn_upcall_pending`, takes the selector, and for every
/// port of the selected words that is pending and unmasked, clears its
/// pending bit and calls `port_seen` with it.
pub fn take_pending_ports(vcpu: usize, mut port_seen: impl FnMut(u32)) {
    set_upcall_pending_of(vcpu, 0);
    let mut sel = take_pending_sel_of(vcpu).unwrap_or(0);
    while sel != 0 {
        let word = sel.trailing_zeros();
        sel &= sel - 1;
        for port in word * 64..word * 64 + 64 {
            if evtchn_pending(port) == Some(true) && evtchn_masked(port) == Some(false) {
                clear_evtchn_pending(port);
                port_seen(port);
            }
        }
    }
}
