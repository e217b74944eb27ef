//! The TSC as the system clock: its rate measured at boot against the PIT,
//! and the time since boot in nanoseconds; and the wall clock, published
//! in each domain's shared_info page.
use core::mem::offset_of;
use core::sync::atomic::{Ordering, compiler_fence};

use dom0_abi::shared_info::{SharedInfo, VcpuInfo, VcpuTimeInfo};
use spin::{Mutex, Once};

use crate::time::{Bracket, TscScale, Window};
use crate::wallclock::Wallclock;

use super::cpu::rdtsc;
use super::io::{inb, outb};
use super::paging::phys_to_virt;

/// The PIT's input clock.
const PIT_HZ: u64 = 1_193_182;
/// PIT ticks of the calibration window (10 ms).
const PIT_TICKS: u16 = 11_932;
/// Port of the PC speaker control, whose bit 0 gates PIT channel 2 and bit
/// 5 shows its output.
const PORT_B: u16 = 0x61;
/// PIT mode/command register and channel 2's data port.
const PIT_COMMAND: u16 = 0x43;
const PIT_CHANNEL2: u16 = 0x42;

/// Calibration windows measured at most (the first known to 100 ppm
/// ends it).
pub const CALIBRATION_TRIES: usize = 5;

/// The TSC at boot and its scale.
static CLOCK: Once<(u64, TscScale, u64)> = Once::new();

/// Measures the TSC rate over 10 ms one-shots of PIT channel 2 and starts
/// the clock. Returns the rate in Hz and the measurement's uncertainty in
/// parts per million.
pub fn init() -> (u64, u64) {
    let mut ppm = 0;
    let hz = CLOCK
        .call_once(|| {
            let (window, ()) = crate::time::best_window(CALIBRATION_TRIES, || (pit_window(), ()))
                .unwrap_or_else(|| (pit_window(), ()));
            ppm = window.ppm();
            let hz = window.ticks() * PIT_HZ / u64::from(PIT_TICKS);
            (rdtsc(), TscScale::for_hz(hz), hz)
        })
        .2;
    (hz, ppm)
}

/// One 10 ms one-shot of PIT channel 2 in TSC ticks: its start bracketed
/// by readings around the write that loads the count, its end by those
/// around the first read of the gate port that shows the output high and
/// the last one that did not.
fn pit_window() -> Window {
    // SAFETY: the PIT and the speaker gate belong to the hypervisor (dom0
    // gets no access to them); channel 2 only drives the speaker, which
    // stays off (bit 1 clear).
    unsafe {
        outb(PORT_B, (inb(PORT_B) & !0x02) | 0x01);
        // Channel 2, low then high byte, mode 0 (interrupt on terminal count).
        outb(PIT_COMMAND, 0b1011_0000);
        let [low, high] = PIT_TICKS.to_le_bytes();
        outb(PIT_CHANNEL2, low);
        let before = rdtsc();
        outb(PIT_CHANNEL2, high);
        let start = Bracket {
            before,
            after: rdtsc(),
        };
        let mut low_seen = start.before;
        loop {
            let before = rdtsc();
            let done = inb(PORT_B) & 0x20 != 0;
            let after = rdtsc();
            if done {
                break Window {
                    start,
                    end: Bracket {
                        before: low_seen,
                        after,
                    },
                };
            }
            low_seen = before;
        }
    }
}

/// The TSC's rate in Hz, as measured by [`init`] (0 before it).
pub fn tsc_hz() -> u64 {
    CLOCK.get().map_or(0, |&(_, _, hz)| hz)
}

/// Nanoseconds since [`init`] (0 before it).
pub fn now_ns() -> u64 {
    CLOCK.get().map_or(0, |&(boot, scale, _)| {
        scale.to_ns(rdtsc().wrapping_sub(boot))
    })
}

/// The TSC value at system time `ns` (`None` before [`init`]).
pub fn tsc_at(ns: u64) -> Option<u64> {
    CLOCK.get().map(|&(boot, _, hz)| {
        let ticks = u128::from(ns) * u128::from(hz) / u128::from(crate::time::NS_PER_SEC);
        boot.saturating_add(u64::try_from(ticks).unwrap_or(u64::MAX))
    })
}

/// Publishes the system time in the `vcpu_info` at machine address
/// `vcpu_info`, as Xen does when a vCPU is scheduled in: the TSC now, the
/// system time now, and the scale, under the record's version seqlock (odd
/// while it changes). A guest computes the time later as `system_time` plus
/// the scaled TSC ticks since `tsc_timestamp`.
pub fn publish(vcpu_info: u64) {
    let Some(&(boot, scale, _)) = CLOCK.get() else {
        return;
    };
    let record = phys_to_virt(vcpu_info + offset_of!(VcpuInfo, time) as u64) as *mut u8;
    let field = |offset: usize| record.wrapping_add(offset);
    let version = field(offset_of!(VcpuTimeInfo, version)).cast::<u32>();
    let tsc = rdtsc();
    // SAFETY: `vcpu_info` is a vCPU's record in its domain's shared_info,
    // a hypervisor-owned frame for the domain's life, mapped by the direct
    // map; every field is naturally aligned plain data the guest only reads.
    unsafe {
        let odd = version.read_volatile().wrapping_add(1) | 1;
        version.write_volatile(odd);
        compiler_fence(Ordering::SeqCst);
        field(offset_of!(VcpuTimeInfo, tsc_timestamp))
            .cast::<u64>()
            .write_volatile(tsc);
        field(offset_of!(VcpuTimeInfo, system_time))
            .cast::<u64>()
            .write_volatile(scale.to_ns(tsc.wrapping_sub(boot)));
        field(offset_of!(VcpuTimeInfo, tsc_to_system_mul))
            .cast::<u32>()
            .write_volatile(scale.mul);
        field(offset_of!(VcpuTimeInfo, tsc_shift))
            .cast::<i8>()
            .write_volatile(scale.shift);
        compiler_fence(Ordering::SeqCst);
        version.write_volatile(odd.wrapping_add(1));
    }
}

/// The wall clock (wall time at system time 0), Xen's `wc_sec`/`wc_nsec`.
/// Its lock is a leaf (`docs/locking.md`): it is held while a domain's
/// `wc_*` fields are written, so that two writers of one page never
/// interleave their `wc_version` updates, and each page gets the value
/// current when it is written.
static WALLCLOCK: Mutex<Wallclock> = Mutex::new(Wallclock::EPOCH);

/// The wall clock now.
pub fn wallclock() -> Wallclock {
    *WALLCLOCK.lock()
}

/// Sets the wall clock (the domains' pages are written by
/// [`publish_wallclock`]).
pub fn set_wallclock(wallclock: Wallclock) {
    *WALLCLOCK.lock() = wallclock;
}

/// Writes the wall clock into the shared_info page at machine address
/// `shared_info` (0: none), as Xen does: `wc_version` made odd, the
/// `wc_*` fields written, `wc_version` made even again.
pub fn publish_wallclock(shared_info: u64) {
    if shared_info == 0 {
        return;
    }
    let wallclock = WALLCLOCK.lock();
    let fields = wallclock.shared();
    let page = phys_to_virt(shared_info) as *mut u8;
    let field = |offset: usize| page.wrapping_add(offset).cast::<u32>();
    let version = field(offset_of!(SharedInfo, wc_version));
    // SAFETY: `shared_info` is a domain's shared_info page, a
    // hypervisor-owned frame for the domain's life, mapped by the direct
    // map; the `wc_*` fields are naturally aligned `u32`s the guest only
    // reads, and the lock held makes this the only writer.
    unsafe {
        let odd = version.read_volatile().wrapping_add(1) | 1;
        version.write_volatile(odd);
        compiler_fence(Ordering::SeqCst);
        field(offset_of!(SharedInfo, wc_sec)).write_volatile(fields.wc_sec);
        field(offset_of!(SharedInfo, wc_nsec)).write_volatile(fields.wc_nsec);
        field(offset_of!(SharedInfo, wc_sec_hi)).write_volatile(fields.wc_sec_hi);
        compiler_fence(Ordering::SeqCst);
        version.write_volatile(odd.wrapping_add(1));
    }
}
