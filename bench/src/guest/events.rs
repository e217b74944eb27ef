//! Event-channel paths: a send to an IPI port of the sender's own vCPU,
//! and a `VIRQ_TIMER` raised by `set_timer_op` and taken on the way out
//! of `SCHEDOP_block`, each delivered as an upcall to the guest's handler;
//! and the same `VIRQ_TIMER` ending a `SCHEDOP_poll` of its port.
//!
//! The guest maps `shared_info` over a page of its own `.bss`, registers
//! the upcall entry, binds an IPI port, unmasks the port and the vCPU's
//! upcalls, and times `EVTCHNOP_send` to the return from the upcall (the
//! hypervisor delivers the upcall on its way back from the send). Every
//! send must produce exactly one upcall for the port. Afterwards upcalls
//! are masked, the port closed and the page mapped back.

use core::sync::atomic::{AtomicU64, Ordering};

use guest_pv_shim::dom0_abi::cpu::{CallbackFlags, CallbackType};
use guest_pv_shim::dom0_abi::event_channel::Virq;
use guest_pv_shim::dom0_abi::mmu::{PTE_ADDR_MASK, PteFlags, UvmfFlags};
use guest_pv_shim::dom0_abi::start_info::StartInfo;

use crate::guest::asm::{
    self, SEND_PORT, SHARED_INFO_VA, UPCALL_PORT, UPCALLS, bench_syscall_send_entry,
    bench_upcall_entry,
};
use crate::guest::harness::{Harness, Measured, NotRun, failed, not_run};
use crate::guest::hc;
use crate::guest::pagetable::PageTables;
use crate::guest::traps::{USER_RFLAGS_EVENTS, iret_works, prepare_user_mode, user_loop};

/// Offset of `vcpu_info[0].evtchn_upcall_pending` in `shared_info`.
const UPCALL_PENDING: u64 = 0;
/// Offset of `vcpu_info[0].evtchn_upcall_mask`.
const UPCALL_MASK: u64 = 1;
/// Offset of `vcpu_info[0].evtchn_pending_sel`.
const PENDING_SEL: u64 = 8;
/// Offset of `evtchn_pending[]`.
const EVTCHN_PENDING: u64 = 2048;
/// Offset of `evtchn_mask[]`.
const EVTCHN_MASK: u64 = 2560;

/// Runs `f` on the `u64` of the mapped `shared_info` page at byte
/// `offset`, as an atomic shared with the hypervisor. The reference lives
/// only for the call: the page is unmapped again after the benchmark.
fn with_shared_word<R>(base: u64, offset: u64, f: impl FnOnce(&AtomicU64) -> R) -> R {
    // SAFETY: `base` is the page `shared_info` is mapped at (callers hold
    // it only while the mapping exists), `offset` is 8-byte aligned and
    // inside its 3136 bytes, every access to the shared words (ours and the
    // hypervisor's) is atomic, and the reference does not outlive `f`.
    f(unsafe { AtomicU64::from_ptr((base + offset) as *mut u64) })
}

/// Writes `value` to the byte at `offset` of `shared_info`.
fn write_shared_byte(base: u64, offset: u64, value: u8) {
    // SAFETY: as for `with_shared_word`; a single-byte volatile store is how the
    // ABI updates `evtchn_upcall_pending` and `evtchn_upcall_mask`.
    unsafe { ((base + offset) as *mut u8).write_volatile(value) };
}

/// The Rust part of the upcall handler (called by `bench_upcall_entry`
/// with every caller-saved register saved): acknowledges every pending,
/// unmasked port and counts those of the benchmark's port.
pub extern "C" fn upcall() {
    let base = SHARED_INFO_VA.load(Ordering::Relaxed);
    if base == 0 {
        return;
    }
    write_shared_byte(base, UPCALL_PENDING, 0);
    let mut selector = with_shared_word(base, PENDING_SEL, |w| w.swap(0, Ordering::SeqCst));
    let port = UPCALL_PORT.load(Ordering::Relaxed);
    while selector != 0 {
        let word = u64::from(selector.trailing_zeros());
        selector &= selector - 1;
        let mask = with_shared_word(base, EVTCHN_MASK + word * 8, |w| w.load(Ordering::SeqCst));
        let ready = with_shared_word(base, EVTCHN_PENDING + word * 8, |pending| {
            let ready = pending.load(Ordering::SeqCst) & !mask;
            pending.fetch_and(!ready, Ordering::SeqCst);
            ready
        });
        if port / 64 == word && ready & (1 << (port % 64)) != 0 {
            UPCALLS.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Maps `shared_info` at the guest's spare page; returns the page's
/// original entry.
fn map_shared_info(start_info: &StartInfo, pt: &PageTables, name: &str) -> Result<u64, NotRun> {
    let va = asm::shared_info_page_va();
    let original = pt
        .entry(va, 1)
        .map_err(|_| failed(name, "the shared_info page is not in the bootstrap tables"))?
        .value;
    let flags =
        PteFlags::PRESENT | PteFlags::RW | PteFlags::ACCESSED | PteFlags::DIRTY | PteFlags::NX;
    let pte = (start_info.shared_info & PTE_ADDR_MASK) | flags.bits();
    // SAFETY: replaces the mapping of a page of this image that nothing
    // uses (its own frame simply stays unmapped).
    let ret = unsafe { hc::update_va_mapping(va, pte, UvmfFlags::INVLPG.bits()) };
    if ret != 0 {
        return Err(not_run(name, "update_va_mapping (shared_info)", ret));
    }
    SHARED_INFO_VA.store(va, Ordering::Relaxed);
    Ok(original)
}

/// Undoes [`map_shared_info`].
fn unmap_shared_info(original: u64, name: &str) {
    SHARED_INFO_VA.store(0, Ordering::Relaxed);
    // SAFETY: puts the page's own frame back; nothing refers to the
    // shared_info mapping any more (upcalls are masked).
    let ret = unsafe {
        hc::update_va_mapping(
            asm::shared_info_page_va(),
            original,
            UvmfFlags::INVLPG.bits(),
        )
    };
    guest_pv_shim::report::check_ret(format_args!("spare page mapped back after {name}"), ret, 0);
}

/// Unmasks `port` and the upcalls and runs `timed`, each of whose runs
/// must cause exactly one upcall for `port`. Upcalls are masked and the
/// port closed afterwards.
fn timed_upcalls(
    base: u64,
    name: &str,
    port: u32,
    timed: impl FnOnce() -> Result<Measured, NotRun>,
) -> Result<Measured, NotRun> {
    UPCALL_PORT.store(u64::from(port), Ordering::Relaxed);
    let word = u64::from(port / 64);
    with_shared_word(base, EVTCHN_MASK + word * 8, |w| {
        w.fetch_and(!(1 << (port % 64)), Ordering::SeqCst)
    });
    write_shared_byte(base, UPCALL_MASK, 0);
    // Anything already pending is delivered on the way back from this call.
    let _ = hc::xen_version_null();
    let first = UPCALLS.load(Ordering::Relaxed);
    let timed = timed();
    write_shared_byte(base, UPCALL_MASK, 1);
    let upcalls = UPCALLS.load(Ordering::Relaxed) - first;
    let ret = hc::evtchn_close(port);
    guest_pv_shim::report::check_ret(format_args!("port closed after {name}"), ret, 0);
    let measured = timed?;
    if upcalls != measured.runs {
        return Err(failed(
            name,
            "the number of upcalls differs from the number of runs",
        ));
    }
    Ok(measured)
}

/// Registers the upcall entry.
fn register_upcall(name: &str) -> Result<(), NotRun> {
    // SAFETY: `bench_upcall_entry` saves every register it uses, handles
    // the event frame and returns with iret.
    let ret = unsafe {
        hc::callback_register(
            CallbackType::Event,
            asm::entry_address(bench_upcall_entry),
            CallbackFlags::empty(),
        )
    };
    if ret != 0 {
        return Err(not_run(name, "callback_op(register event)", ret));
    }
    Ok(())
}

/// Runs `bench` with `shared_info` mapped and the upcall entry registered.
fn with_upcalls(
    start_info: &StartInfo,
    pt: &PageTables,
    name: &str,
    bench: impl FnOnce(u64) -> Result<Measured, NotRun>,
) -> Result<Measured, NotRun> {
    iret_works(name)?;
    let original = map_shared_info(start_info, pt, name)?;
    let measured = register_upcall(name).and_then(|()| bench(asm::shared_info_page_va()));
    unmap_shared_info(original, name);
    measured
}

/// An IPI port bound to vCPU 0, the one the benchmarks run on.
fn self_ipi_port(name: &str) -> Result<u32, NotRun> {
    hc::evtchn_bind_ipi(0).map_err(|err| not_run(name, "EVTCHNOP_bind_ipi", err))
}

/// `evtchn_self`: a send to an IPI port of the vCPU itself.
pub fn evtchn_self(
    h: &Harness,
    start_info: &StartInfo,
    pt: &PageTables,
    name: &str,
) -> Result<Measured, NotRun> {
    with_upcalls(start_info, pt, name, |base| {
        let port = self_ipi_port(name)?;
        timed_upcalls(base, name, port, || {
            h.time(
                name,
                "EVTCHNOP_send",
                || hc::evtchn_send(port),
                |ret| ret == 0,
            )
        })
    })
}

/// `evtchn_user_upcall`: user mode makes a `SYSCALL`; the kernel's
/// callback (entered with events masked) sends on an IPI port of its own
/// vCPU and returns with `HYPERVISOR_iret`, which unmasks events; the
/// pending port's upcall interrupts user mode at once, and the handler
/// returns to user mode with `HYPERVISOR_iret`.
pub fn evtchn_user_upcall(
    h: &Harness,
    start_info: &StartInfo,
    pt: &PageTables,
    name: &str,
) -> Result<Measured, NotRun> {
    with_upcalls(start_info, pt, name, |base| {
        prepare_user_mode(
            pt,
            name,
            bench_syscall_send_entry,
            CallbackFlags::MASK_EVENTS,
        )?;
        let port = self_ipi_port(name)?;
        SEND_PORT.store(port, Ordering::Relaxed);
        timed_upcalls(base, name, port, || {
            // SAFETY: `prepare_user_mode` registered the sending callback,
            // which returns to user mode for a bounce and to the loop's
            // caller for the last `SYSCALL`.
            Ok(unsafe { user_loop(h, USER_RFLAGS_EVENTS) })
        })
    })
}

/// Stops the periodic timer and binds `VIRQ_TIMER` (which `set_timer_op`
/// then raises alone) to vCPU 0; returns its port.
fn timer_port(name: &str) -> Result<u32, NotRun> {
    let ret = hc::vcpu_stop_periodic_timer(0);
    if ret != 0 {
        return Err(not_run(name, "VCPUOP_stop_periodic_timer", ret));
    }
    hc::evtchn_bind_virq(Virq::Timer, 0)
        .map_err(|err| not_run(name, "EVTCHNOP_bind_virq(VIRQ_TIMER)", err))
}

/// `timer_block`: with upcalls masked, `set_timer_op` with a deadline
/// already past (its `VIRQ_TIMER` is raised before the call returns), then
/// `SCHEDOP_block`, which unmasks upcalls and returns at once with the
/// upcall delivered on its way out.
pub fn timer_block(
    h: &Harness,
    start_info: &StartInfo,
    pt: &PageTables,
    name: &str,
) -> Result<Measured, NotRun> {
    with_upcalls(start_info, pt, name, |base| {
        let port = timer_port(name)?;
        timed_upcalls(base, name, port, || {
            h.time(
                name,
                "set_timer_op + SCHEDOP_block",
                || {
                    write_shared_byte(base, UPCALL_MASK, 1);
                    match hc::set_timer_op(1) {
                        0 => hc::sched_block(),
                        err => err,
                    }
                },
                |ret| ret == 0,
            )
        })
    })
}

/// `timer_poll`: with upcalls masked, `set_timer_op` with a deadline
/// already past (its `VIRQ_TIMER` is raised before the call returns), then
/// `SCHEDOP_poll` of the timer's port without a timeout, which returns at
/// once since the port is pending; the guest then clears the port's
/// pending bit itself (no upcall: the poll leaves upcalls masked).
pub fn timer_poll(
    h: &Harness,
    start_info: &StartInfo,
    pt: &PageTables,
    name: &str,
) -> Result<Measured, NotRun> {
    with_upcalls(start_info, pt, name, |base| {
        let port = timer_port(name)?;
        write_shared_byte(base, UPCALL_MASK, 1);
        let (word, bit) = (u64::from(port / 64), 1u64 << (port % 64));
        let mut not_pending = 0u64;
        let timed = h.time(
            name,
            "set_timer_op + SCHEDOP_poll",
            || {
                let ret = match hc::set_timer_op(1) {
                    0 => hc::sched_poll_one(port),
                    err => err,
                };
                let was = with_shared_word(base, EVTCHN_PENDING + word * 8, |w| {
                    w.fetch_and(!bit, Ordering::SeqCst)
                });
                not_pending += u64::from(was & bit == 0);
                ret
            },
            |ret| ret == 0,
        );
        write_shared_byte(base, UPCALL_PENDING, 0);
        with_shared_word(base, PENDING_SEL, |w| w.store(0, Ordering::SeqCst));
        let ret = hc::evtchn_close(port);
        guest_pv_shim::report::check_ret(format_args!("port closed after {name}"), ret, 0);
        let measured = timed?;
        if not_pending != 0 {
            return Err(failed(
                name,
                "a poll returned without the timer's port pending",
            ));
        }
        Ok(measured)
    })
}
