//! The local APIC: this CPU's timer, the end of every interrupt, and the
//! IPIs that start the other CPUs.
//!
//! x2APIC mode (registers as MSRs) where the CPU has it, else xAPIC (the
//! same registers in the page `IA32_APIC_BASE` names, through the direct
//! map). The timer is one-shot: in TSC-deadline mode where the CPU has it
//! (the deadline is a TSC value), else counting down at a rate measured
//! against the TSC at boot. It is armed only for the next deadline the
//! hypervisor has (a guest timer, a poll timeout, a time slice): no
//! periodic tick.
use spin::Once;

use crate::time::{Bracket, Window};

use super::cpu::{Features, rdtsc};
use super::msr::{rdmsr, wrmsr};
use super::paging::phys_to_virt;
use super::percpu;
use super::time::CALIBRATION_TRIES;

/// The timer's vector.
pub const TIMER_VECTOR: u8 = 0xf0;
/// The event-check IPI's vector: another CPU left work for this one to
/// look at.
pub const EVENT_CHECK_VECTOR: u8 = 0xf1;
/// The flush IPI's vector: another CPU changed a domain's page tables and
/// waits until this one flushed its TLB (`percpu::flush_elsewhere`).
pub const FLUSH_VECTOR: u8 = 0xf2;
/// The APIC error interrupt's vector.
pub const ERROR_VECTOR: u8 = 0xfe;
/// The spurious-interrupt vector (never acknowledged).
pub const SPURIOUS_VECTOR: u8 = 0xff;

const IA32_APIC_BASE: u32 = 0x1b;
const APIC_BASE_ENABLE: u64 = 1 << 11;
const APIC_BASE_X2APIC: u64 = 1 << 10;
const IA32_TSC_DEADLINE: u32 = 0x6e0;
/// The first x2APIC MSR; register at xAPIC offset `o` is MSR `0x800 + o / 16`.
const X2APIC_MSRS: u32 = 0x800;

/// Register offsets (xAPIC page).
const ID: u32 = 0x20;
const TPR: u32 = 0x80;
const EOI: u32 = 0xb0;
const SVR: u32 = 0xf0;
const ESR: u32 = 0x280;
const LVT_TIMER: u32 = 0x320;
const LVT_LINT0: u32 = 0x350;
const LVT_LINT1: u32 = 0x360;
const LVT_ERROR: u32 = 0x370;
const TIMER_INITIAL: u32 = 0x380;
const TIMER_CURRENT: u32 = 0x390;
const TIMER_DIVIDE: u32 = 0x3e0;
const ICR_LOW: u32 = 0x300;
const ICR_HIGH: u32 = 0x310;
/// The x2APIC's 64-bit interrupt command register.
const X2APIC_ICR: u32 = 0x830;

/// ICR: INIT delivery, level asserted, level-triggered.
const ICR_INIT: u32 = (0b101 << 8) | (1 << 14) | (1 << 15);
/// ICR: start-up delivery, level asserted (the vector is the page).
const ICR_STARTUP: u32 = (0b110 << 8) | (1 << 14);
/// ICR: fixed delivery of the vector in the low byte, level asserted.
const ICR_FIXED: u32 = 1 << 14;
/// ICR (xAPIC): the previous IPI is still being sent.
const ICR_PENDING: u32 = 1 << 12;

/// SVR: the APIC is software-enabled.
const SVR_ENABLE: u32 = 1 << 8;
/// LVT: the entry is masked.
const LVT_MASKED: u32 = 1 << 16;
/// LVT: NMI delivery.
const LVT_NMI: u32 = 0b100 << 8;
/// LVT timer: TSC-deadline mode.
const TIMER_TSC_DEADLINE: u32 = 0b10 << 17;
/// Divide configuration for "divide by 16".
const DIVIDE_BY_16: u32 = 0b0011;

/// How this CPU's APIC is reached and how its timer counts.
struct Apic {
    /// xAPIC register page in the direct map; `None` in x2APIC mode.
    mmio: Option<u64>,
    /// TSC-deadline mode.
    tsc_deadline: bool,
    /// One-shot mode: timer ticks per 2^32 TSC ticks.
    ticks_per_tsc: u64,
}

static APIC: Once<Apic> = Once::new();

impl Apic {
    /// Turns this CPU's APIC on in this mode: no task priority, spurious
    /// interrupts on [`SPURIOUS_VECTOR`], the 8259's LINT0 masked, LINT1
    /// as NMI, errors on [`ERROR_VECTOR`]. Returns its id.
    fn enable(&self, f: &Features) -> u32 {
        // SAFETY: IA32_APIC_BASE exists on every x86-64 CPU; setting the
        // enable bit (and the x2APIC bit only where CPUID reports x2APIC)
        // is the architected way to turn the APIC on.
        unsafe {
            let mut base = rdmsr(IA32_APIC_BASE) | APIC_BASE_ENABLE;
            wrmsr(IA32_APIC_BASE, base);
            if f.x2apic {
                base |= APIC_BASE_X2APIC;
                wrmsr(IA32_APIC_BASE, base);
            }
        }
        self.write(TPR, 0);
        self.write(SVR, SVR_ENABLE | u32::from(SPURIOUS_VECTOR));
        self.write(LVT_LINT0, LVT_MASKED);
        self.write(LVT_LINT1, LVT_NMI);
        self.write(LVT_ERROR, u32::from(ERROR_VECTOR));
        self.write(ESR, 0);
        let id = self.read(ID);
        if f.x2apic { id } else { id >> 24 }
    }

    /// Sets the timer up on [`TIMER_VECTOR`], disarmed: TSC-deadline
    /// mode, or one-shot counting at divide-by-16.
    fn timer_on(&self) {
        if self.tsc_deadline {
            self.write(LVT_TIMER, TIMER_TSC_DEADLINE | u32::from(TIMER_VECTOR));
        } else {
            self.write(TIMER_DIVIDE, DIVIDE_BY_16);
            self.write(LVT_TIMER, u32::from(TIMER_VECTOR));
        }
    }

    fn read(&self, reg: u32) -> u32 {
        match self.mmio {
            // SAFETY: `base` maps the APIC's register page (uncached by
            // the MTRRs) and `reg` is one of its 16-byte aligned 32-bit
            // registers.
            Some(base) => unsafe { ((base + u64::from(reg)) as *const u32).read_volatile() },
            // SAFETY: x2APIC mode is on, so the register's MSR exists.
            None => unsafe { (rdmsr(X2APIC_MSRS + reg / 16) & 0xffff_ffff) as u32 },
        }
    }

    fn write(&self, reg: u32, value: u32) {
        match self.mmio {
            // SAFETY: as in `read`; the registers written are the ones this
            // module programs.
            Some(base) => unsafe { ((base + u64::from(reg)) as *mut u32).write_volatile(value) },
            // SAFETY: x2APIC mode is on, so the register's MSR exists.
            None => unsafe { wrmsr(X2APIC_MSRS + reg / 16, u64::from(value)) },
        }
    }
}

/// Enables this CPU's local APIC: x2APIC mode where present, the 8259's
/// LINT0 masked, LINT1 as NMI, errors on [`ERROR_VECTOR`], the timer on
/// [`TIMER_VECTOR`] (disarmed). `tsc_hz` is the measured TSC rate (for
/// the one-shot mode's calibration). Returns the APIC id.
pub fn init(f: &Features, tsc_hz: u64) -> u32 {
    let mmio = (!f.x2apic).then(|| phys_to_virt(mmio_base()));
    let mut apic = Apic {
        mmio,
        tsc_deadline: f.tsc_deadline,
        ticks_per_tsc: 0,
    };
    let id = apic.enable(f);
    if !apic.tsc_deadline {
        apic.write(TIMER_DIVIDE, DIVIDE_BY_16);
        apic.ticks_per_tsc = calibrate(&apic, tsc_hz);
    }
    apic.timer_on();
    let apic = APIC.call_once(|| apic);
    log::info!(
        "local APIC {id}: {} mode, timer {}",
        if apic.mmio.is_some() {
            "xAPIC"
        } else {
            "x2APIC"
        },
        if apic.tsc_deadline {
            "TSC-deadline"
        } else {
            "one-shot"
        }
    );
    id
}

/// Enables the local APIC of a CPU started after the boot CPU, in the
/// boot CPU's mode, as [`init`] does (the one-shot timer counts at the
/// boot CPU's measured rate: the CPUs are the same). Returns its APIC id.
pub fn init_secondary(f: &Features) -> u32 {
    let Some(apic) = APIC.get() else {
        return 0;
    };
    let id = apic.enable(f);
    apic.timer_on();
    id
}

/// Sends INIT to the CPU with APIC id `id` (it stops and waits for a
/// start-up IPI).
pub fn send_init(id: u32) {
    send_ipi(id, ICR_INIT);
}

/// Sends a start-up IPI to the CPU with APIC id `id`: it starts in real
/// mode at page `vector`.
pub fn send_startup(id: u32, vector: u8) {
    send_ipi(id, ICR_STARTUP | u32::from(vector));
}

/// Sends an event-check IPI ([`EVENT_CHECK_VECTOR`]) to the CPU with
/// APIC id `id`: it leaves `hlt` (or its guest) and looks at what is due.
pub fn send_event_check(id: u32) {
    send_ipi(id, ICR_FIXED | u32::from(EVENT_CHECK_VECTOR));
}

/// Sends a flush IPI ([`FLUSH_VECTOR`]) to the CPU with APIC id `id`.
pub fn send_flush(id: u32) {
    send_ipi(id, ICR_FIXED | u32::from(FLUSH_VECTOR));
}

fn send_ipi(id: u32, command: u32) {
    let Some(apic) = APIC.get() else {
        return;
    };
    match apic.mmio {
        Some(_) => {
            apic.write(ICR_HIGH, id << 24);
            apic.write(ICR_LOW, command);
            while apic.read(ICR_LOW) & ICR_PENDING != 0 {
                core::hint::spin_loop();
            }
        }
        // SAFETY: x2APIC mode is on, so its ICR exists; the destination is
        // the full x2APIC id in the high half.
        None => unsafe { wrmsr(X2APIC_ICR, (u64::from(id) << 32) | u64::from(command)) },
    }
}

/// Timer ticks (at divide-by-16) per 2^32 TSC ticks, counted over 10 ms
/// windows (the best bracketed of a few, as the TSC's own measurement).
fn calibrate(apic: &Apic, tsc_hz: u64) -> u64 {
    let span = tsc_hz / 100;
    let measured = crate::time::best_window(CALIBRATION_TRIES, || {
        apic.write(LVT_TIMER, LVT_MASKED | u32::from(TIMER_VECTOR));
        let before = rdtsc();
        apic.write(TIMER_INITIAL, u32::MAX);
        let start = Bracket {
            before,
            after: rdtsc(),
        };
        while rdtsc().wrapping_sub(start.after) < span {
            core::hint::spin_loop();
        }
        let before = rdtsc();
        let left = apic.read(TIMER_CURRENT);
        let end = Bracket {
            before,
            after: rdtsc(),
        };
        apic.write(TIMER_INITIAL, 0);
        (Window { start, end }, u32::MAX - left)
    });
    let ratio = measured.map_or(0, |(window, counted)| {
        (u128::from(counted) << 32) / u128::from(window.ticks().max(1))
    });
    u64::try_from(ratio).unwrap_or(u64::MAX).max(1)
}

/// Arms the timer to interrupt at TSC value `deadline` (at once if it has
/// passed), or disarms it. Setting the deadline it already has is free.
pub fn set_timer(deadline: Option<u64>) {
    let Some(apic) = APIC.get() else {
        return;
    };
    let deadline = deadline.map_or(0, |d| d.max(1));
    if percpu::this_cpu().swap_armed(deadline) == deadline {
        return;
    }
    if apic.tsc_deadline {
        // SAFETY: the CPU has TSC-deadline mode (CPUID), so the MSR exists;
        // 0 disarms.
        unsafe { wrmsr(IA32_TSC_DEADLINE, deadline) };
        return;
    }
    let count = match deadline {
        0 => 0,
        at => {
            let delta = at.saturating_sub(rdtsc());
            let ticks = (u128::from(delta) * u128::from(apic.ticks_per_tsc)) >> 32;
            u32::try_from(ticks).unwrap_or(u32::MAX).max(1)
        }
    };
    apic.write(TIMER_INITIAL, count);
}

/// Forgets the armed deadline after the timer fired (so that the same
/// deadline can be armed again).
pub fn timer_fired() {
    percpu::this_cpu().swap_armed(0);
}

/// The physical address of the local APIC's register page (kept from
/// guests even in x2APIC mode, where the page is unused).
pub fn mmio_base() -> u64 {
    // SAFETY: IA32_APIC_BASE exists on every x86-64 CPU; reading it has no
    // effect.
    unsafe { rdmsr(IA32_APIC_BASE) & 0x000f_ffff_ffff_f000 }
}

/// Ends the interrupt being handled.
pub fn eoi() {
    if let Some(apic) = APIC.get() {
        apic.write(EOI, 0);
    }
}

/// Reads and clears the error status (after an error interrupt).
pub fn take_errors() -> u32 {
    APIC.get().map_or(0, |apic| {
        apic.write(ESR, 0);
        apic.read(ESR)
    })
}
