//! Physical interrupts for guests: the machine's lines (`crate::pirq`
//! decides) and the I/O APICs behind them, both under one lock, which is
//! a leaf (taken from hypercalls and from the interrupt path, never
//! around another lock). An interrupt on a bound line marks it pending
//! (and masks it if it is level-triggered); [`deliver`] then raises the
//! owner's port the next time its domain's due work runs.
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use dom0_abi::types::Mfn;

use spin::{Mutex, Once};

use crate::domain::Domain;
use crate::evtchn::EventBits;
use crate::irq::{IsaRoute, RedirectionEntry};
use crate::pirq::{Lines, Program};

use crate::layout::PAGE_SIZE;

use super::ioapic::IoApics;
use super::paging::phys_to_virt;

/// The lines, the I/O APICs, and the local APIC interrupts go to.
struct Interrupts {
    lines: Lines,
    ioapics: IoApics,
    apic_id: u32,
}

static INTERRUPTS: Once<Mutex<Interrupts>> = Once::new();

/// Whether some line has an interrupt no domain was told of yet (read
/// without the lock, so that due work with nothing to deliver pays one
/// load).
static ANY_PENDING: AtomicBool = AtomicBool::new(false);

/// Takes the machine's lines and I/O APICs (once, at setup).
pub fn init(lines: Lines, ioapics: IoApics, apic_id: u32) {
    INTERRUPTS.call_once(|| {
        Mutex::new(Interrupts {
            lines,
            ioapics,
            apic_id,
        })
    });
}

impl Interrupts {
    fn program(&self, program: Program) {
        let (gsi, action) = match program {
            Program::Route {
                gsi,
                vector,
                trigger,
                polarity,
            } => (
                gsi,
                RedirectionEntry::fixed(
                    vector,
                    &IsaRoute {
                        gsi,
                        polarity,
                        trigger,
                    },
                    self.apic_id,
                ),
            ),
            Program::Mask(gsi) | Program::Unmask(gsi) => (gsi, None),
        };
        let Some((ioapic, pin)) = self.ioapics.find(gsi) else {
            return;
        };
        match (program, action) {
            (Program::Route { .. }, Some(entry)) => ioapic.route(pin, &entry),
            (Program::Route { .. }, None) => {
                log::warn!(
                    "GSI {gsi}: APIC id {} is out of the IOAPIC's reach",
                    self.apic_id
                );
            }
            (Program::Mask(_), _) => ioapic.set_masked(pin, true),
            (Program::Unmask(_), _) => ioapic.set_masked(pin, false),
        }
    }
}

/// Runs `f` on the lines and programs the I/O APIC as it says. Without
/// lines (no I/O APIC was found) `f` sees an empty set.
pub fn with_lines<R>(f: impl FnOnce(&mut Lines) -> (R, Option<Program>)) -> R {
    let Some(interrupts) = INTERRUPTS.get() else {
        let mut none = Lines::new(0, |_| None, &[], crate::irq::VectorAllocator::new());
        return f(&mut none).0;
    };
    let mut guard = interrupts.lock();
    let (r, program) = f(&mut guard.lines);
    if let Some(program) = program {
        guard.program(program);
    }
    r
}

/// An interrupt on `vector`: whether it was a guest's line (it is then
/// marked pending, and masked if level-triggered). The caller sends the
/// local APIC's EOI.
pub fn interrupt(vector: u64) -> bool {
    let Ok(vector) = u8::try_from(vector) else {
        return false;
    };
    let Some(interrupts) = INTERRUPTS.get() else {
        return false;
    };
    let mut guard = interrupts.lock();
    let Some((_, mask)) = guard.lines.interrupt(vector) else {
        return false;
    };
    if let Some(mask) = mask {
        guard.program(mask);
    }
    ANY_PENDING.store(true, Ordering::Relaxed);
    true
}

/// Sets bit `pirq` of the EOI bitmap page `mfn` (the guest reads it to
/// know which PIRQs wait for `PHYSDEVOP_eoi`).
fn mark_eoi_needed(mfn: Mfn, pirq: u32) {
    let Some(offset) = u64::from(pirq / 64)
        .checked_mul(8)
        .filter(|&o| o < PAGE_SIZE)
    else {
        return;
    };
    let word = phys_to_virt(mfn.maddr() + offset) as *const AtomicU64;
    // SAFETY: the domain holds a writable type reference on the frame
    // (`pirq_eoi_gmfn`), so it is its RAM, mapped by the direct map and
    // never a page table; the word is 8-byte aligned inside it, and the
    // atomic OR only races with the guest's own accesses to its page.
    unsafe { (*word).fetch_or(1 << (pirq % 64), Ordering::Relaxed) };
}

/// Raises the ports of `domain`'s PIRQs whose lines fired.
pub fn deliver(domain: &Domain, bits: &mut impl EventBits) {
    if !ANY_PENDING.load(Ordering::Relaxed) {
        return;
    }
    let Some(interrupts) = INTERRUPTS.get() else {
        return;
    };
    let mut guard = interrupts.lock();
    for (pirq, needs_eoi) in guard.lines.take_pending(domain.id) {
        if needs_eoi && let Some(map) = domain.pirq_eoi_map {
            mark_eoi_needed(map.mfn, pirq);
        }
        if let Some(port) = domain.pirqs.get(pirq).and_then(|m| m.port) {
            domain.evtchn.raise_pirq(bits, port);
        }
    }
    ANY_PENDING.store(guard.lines.any_pending_at_all(), Ordering::Relaxed);
}
