//! Physical interrupts as event channels (Xen 4.17's PIRQs), as pure
//! bookkeeping: each domain's PIRQ table ([`Pirqs`]: which GSI a PIRQ
//! names, which port it is bound to, which GSIs the domain may use), and
//! the machine's lines ([`Lines`]: who has each GSI bound, its trigger
//! mode and polarity, its vector, whether an interrupt waits for the
//! owner's EOI). The arch layer programs the I/O APIC with what these
//! decide and delivers the events.
//!
//! Rules, as Xen gives them to a PV domain:
//! - a domain has `nr_pirqs` PIRQs: the GSIs plus one CPU's dynamic
//!   vectors (184), whatever is mapped;
//! - `map_pirq` of a GSI: the hardware domain maps GSI `g` (1 to the last
//!   GSI; 0, the timer, is the hypervisor's) at the PIRQ it names, or at
//!   the first free one from 16 up, then from the top down; a GSI already
//!   mapped keeps its PIRQ (asking for another is `EEXIST`);
//! - `bind_pirq` needs the PIRQ mapped and the GSI permitted (`EPERM`),
//!   unbound (`EEXIST`), and a line the hypervisor does not use and no
//!   other domain has bound (`EBUSY`);
//! - an interrupt on a bound line marks it pending for its owner; a
//!   level-triggered line is masked at the I/O APIC until the owner's
//!   `PHYSDEVOP_eoi`, so that it cannot storm while the guest handles it;
//! - closing the port or unmapping the PIRQ masks the line again.
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

use dom0_abi::Errno;
use dom0_abi::types::DomId;

use crate::irq::{Polarity, Trigger, VectorAllocator};

/// PIRQs beyond the GSIs: the dynamic vectors of one CPU (0x20-0xd7), as
/// Xen sizes a hardware domain's table on a one-CPU machine.
pub const DYNAMIC_PIRQS: u32 = 184;
/// PIRQs beyond the GSIs of any other domain (Xen's `extra_domU_irqs`).
pub const EXTRA_DOMU_PIRQS: u32 = 32;
/// The first PIRQ handed out for a GSI when the caller names none.
const FIRST_FREE_GSI_PIRQ: u32 = 16;

/// One mapped PIRQ of a domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pirq {
    /// The GSI it names.
    pub gsi: u32,
    /// The event channel it is bound to, if any.
    pub port: Option<u32>,
}

/// A domain's PIRQs and the GSIs it may use.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pirqs {
    /// How many PIRQs it has (0: none at all).
    pub nr_pirqs: u32,
    mapped: BTreeMap<u32, Pirq>,
    /// GSIs it may map and bind (`XEN_DOMCTL_irq_permission`).
    permitted: Vec<bool>,
}

impl Pirqs {
    /// A table of `nr_gsis + extra` PIRQs and no permitted GSI.
    fn new(nr_gsis: u32, extra: u32) -> Pirqs {
        Pirqs {
            nr_pirqs: nr_gsis + extra,
            mapped: BTreeMap::new(),
            permitted: vec![false; nr_gsis as usize],
        }
    }

    /// Another domain's: `nr_gsis + EXTRA_DOMU_PIRQS` PIRQs, no GSI
    /// permitted until `XEN_DOMCTL_irq_permission`.
    pub fn domu(nr_gsis: u32) -> Pirqs {
        Pirqs::new(nr_gsis, EXTRA_DOMU_PIRQS)
    }

    /// The hardware domain's: `nr_gsis + DYNAMIC_PIRQS` PIRQs, every GSI
    /// but 0 permitted.
    pub fn hardware_domain(nr_gsis: u32) -> Pirqs {
        let mut pirqs = Pirqs::new(nr_gsis, DYNAMIC_PIRQS);
        for gsi in 1..nr_gsis {
            pirqs.permit(gsi, true);
        }
        pirqs
    }

    /// Permits (or forbids) GSI `gsi`; ignored past the last GSI.
    pub fn permit(&mut self, gsi: u32, allow: bool) {
        if let Some(p) = self.permitted.get_mut(gsi as usize) {
            *p = allow;
        }
    }

    /// Whether GSI `gsi` is permitted.
    pub fn permitted(&self, gsi: u32) -> bool {
        self.permitted.get(gsi as usize).copied().unwrap_or(false)
    }

    /// The GSIs of the machine (as this table was sized).
    pub fn nr_gsis(&self) -> u32 {
        u32::try_from(self.permitted.len()).unwrap_or(u32::MAX)
    }

    /// `pirq` as a table index: `EINVAL` outside `0..nr_pirqs`.
    pub fn check(&self, pirq: i64) -> Result<u32, Errno> {
        u32::try_from(pirq)
            .ok()
            .filter(|&p| p < self.nr_pirqs)
            .ok_or(Errno::EINVAL)
    }

    /// The mapping of `pirq`, if it is mapped.
    pub fn get(&self, pirq: u32) -> Option<Pirq> {
        self.mapped.get(&pirq).copied()
    }

    /// The PIRQ mapping `gsi`, if one does.
    pub fn pirq_of(&self, gsi: u32) -> Option<u32> {
        self.mapped
            .iter()
            .find_map(|(&pirq, m)| (m.gsi == gsi).then_some(pirq))
    }

    /// `map_pirq` of GSI `gsi` at `pirq` (negative: any free one) for a
    /// caller that may use `gsi` (`caller_permitted`); the PIRQ mapped.
    pub fn map_gsi(&mut self, gsi: i32, pirq: i32, caller_permitted: bool) -> Result<u32, Errno> {
        let gsi = u32::try_from(gsi)
            .ok()
            .filter(|&g| g < self.nr_gsis())
            .ok_or(Errno::EINVAL)?;
        let current = self.pirq_of(gsi);
        let pirq = match (u32::try_from(pirq), current) {
            (Err(_), Some(current)) => current,
            (Err(_), None) => self.free_gsi_pirq().ok_or(Errno::ENOSPC)?,
            (Ok(p), Some(current)) if p != current => return Err(Errno::EEXIST),
            (Ok(p), _) => p,
        };
        if pirq >= self.nr_pirqs || gsi == 0 {
            return Err(Errno::EINVAL);
        }
        if !caller_permitted {
            return Err(Errno::EPERM);
        }
        match self.mapped.get(&pirq) {
            // Already this mapping, or the PIRQ names another GSI: Xen
            // answers both with success and changes nothing.
            Some(_) => {}
            None => {
                self.mapped.insert(pirq, Pirq { gsi, port: None });
            }
        }
        Ok(pirq)
    }

    fn free_gsi_pirq(&self) -> Option<u32> {
        let free = |p: &u32| !self.mapped.contains_key(p);
        (FIRST_FREE_GSI_PIRQ..self.nr_gsis())
            .find(free)
            .or_else(|| (self.nr_gsis()..self.nr_pirqs).rev().find(free))
    }

    /// `unmap_pirq`: the mapping removed (`EINVAL` if `pirq` is out of
    /// range or not mapped).
    pub fn unmap(&mut self, pirq: i32) -> Result<Pirq, Errno> {
        let pirq = self.check(pirq.into())?;
        self.mapped.remove(&pirq).ok_or(Errno::EINVAL)
    }

    /// The GSI `bind_pirq` would bind: `EINVAL` out of range, `EPERM` not
    /// mapped or not permitted, `EEXIST` already bound.
    pub fn bindable(&self, pirq: u32) -> Result<u32, Errno> {
        let pirq = self.check(pirq.into())?;
        let mapped = self.get(pirq).ok_or(Errno::EPERM)?;
        if !self.permitted(mapped.gsi) {
            return Err(Errno::EPERM);
        }
        if mapped.port.is_some() {
            return Err(Errno::EEXIST);
        }
        Ok(mapped.gsi)
    }

    /// Records that `pirq` is bound to `port` (or unbound, `None`).
    pub fn set_port(&mut self, pirq: u32, port: Option<u32>) {
        if let Some(m) = self.mapped.get_mut(&pirq) {
            m.port = port;
        }
    }

    /// Every mapped PIRQ (for teardown).
    pub fn all(&self) -> impl Iterator<Item = (u32, Pirq)> + '_ {
        self.mapped.iter().map(|(&p, &m)| (p, m))
    }
}

/// One GSI of the machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Line {
    /// How it signals.
    pub trigger: Trigger,
    /// Its polarity.
    pub polarity: Polarity,
    /// Whether `setup_gsi` set it up already.
    pub set_up: bool,
    /// The hypervisor uses it (the console UART's interrupt).
    pub hypervisor: bool,
    /// Its vector, once it was first bound.
    pub vector: Option<u8>,
    /// The domain and PIRQ it is bound to.
    pub owner: Option<(DomId, u32)>,
    /// An interrupt came that the owner has not been told of.
    pub pending: bool,
    /// Level-triggered and masked until the owner's EOI.
    pub in_flight: bool,
}

/// What the I/O APIC must be told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Program {
    /// Route `gsi` to `vector` with this signalling, unmasked.
    Route {
        /// The GSI.
        gsi: u32,
        /// Its vector.
        vector: u8,
        /// How it signals.
        trigger: Trigger,
        /// Its polarity.
        polarity: Polarity,
    },
    /// Mask `gsi`.
    Mask(u32),
    /// Unmask `gsi` (its route is already there).
    Unmask(u32),
}

/// The machine's GSIs.
#[derive(Clone, Debug)]
pub struct Lines {
    lines: Vec<Line>,
    vectors: VectorAllocator,
}

impl Lines {
    /// `nr_gsis` lines: `isa(gsi)` gives the signalling of one an ISA IRQ
    /// arrives on (others are PCI's: level, active low); `hypervisor`
    /// lists the lines the hypervisor keeps; `vectors` hands out vectors.
    pub fn new(
        nr_gsis: u32,
        isa: impl Fn(u32) -> Option<(Trigger, Polarity)>,
        hypervisor: &[u32],
        vectors: VectorAllocator,
    ) -> Lines {
        let lines = (0..nr_gsis)
            .map(|gsi| {
                let (trigger, polarity) = isa(gsi).unwrap_or(if gsi < 16 {
                    (Trigger::Edge, Polarity::ActiveHigh)
                } else {
                    (Trigger::Level, Polarity::ActiveLow)
                });
                Line {
                    trigger,
                    polarity,
                    set_up: false,
                    hypervisor: gsi == 0 || hypervisor.contains(&gsi),
                    vector: None,
                    owner: None,
                    pending: false,
                    in_flight: false,
                }
            })
            .collect();
        Lines { lines, vectors }
    }

    /// How many GSIs there are.
    pub fn len(&self) -> u32 {
        u32::try_from(self.lines.len()).unwrap_or(u32::MAX)
    }

    /// Whether there is no GSI at all.
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
    }

    /// Line `gsi`.
    pub fn line(&self, gsi: u32) -> Option<&Line> {
        self.lines.get(gsi as usize)
    }

    /// `PHYSDEVOP_setup_gsi`: `EINVAL` past the last GSI, `EEXIST` the
    /// second time.
    pub fn setup(&mut self, gsi: i32, level: bool, active_low: bool) -> Result<(), Errno> {
        let line = usize::try_from(gsi)
            .ok()
            .and_then(|g| self.lines.get_mut(g))
            .ok_or(Errno::EINVAL)?;
        if line.set_up {
            return Err(Errno::EEXIST);
        }
        line.set_up = true;
        line.trigger = if level { Trigger::Level } else { Trigger::Edge };
        line.polarity = if active_low {
            Polarity::ActiveLow
        } else {
            Polarity::ActiveHigh
        };
        Ok(())
    }

    /// Binds `gsi` to `owner`: `EBUSY` if the hypervisor uses it or
    /// someone has it bound, `ENOSPC` without a free vector.
    pub fn bind(&mut self, gsi: u32, owner: (DomId, u32)) -> Result<Program, Errno> {
        let line = self.lines.get_mut(gsi as usize).ok_or(Errno::EINVAL)?;
        if line.hypervisor || line.owner.is_some() {
            return Err(Errno::EBUSY);
        }
        let vector = match line.vector {
            Some(v) => v,
            None => self.vectors.allocate().ok_or(Errno::ENOSPC)?,
        };
        line.vector = Some(vector);
        line.owner = Some(owner);
        line.pending = false;
        line.in_flight = false;
        Ok(Program::Route {
            gsi,
            vector,
            trigger: line.trigger,
            polarity: line.polarity,
        })
    }

    /// Unbinds `gsi` if `owner` has it: the line is masked.
    pub fn unbind(&mut self, gsi: u32, owner: (DomId, u32)) -> Option<Program> {
        let line = self.lines.get_mut(gsi as usize)?;
        if line.owner != Some(owner) {
            return None;
        }
        line.owner = None;
        line.pending = false;
        line.in_flight = false;
        Some(Program::Mask(gsi))
    }

    /// An interrupt on `vector`: the GSI it belongs to, and whether the
    /// line must be masked now (level-triggered: until the EOI).
    pub fn interrupt(&mut self, vector: u8) -> Option<(u32, Option<Program>)> {
        let (gsi, line) = self
            .lines
            .iter_mut()
            .enumerate()
            .find(|(_, l)| l.vector == Some(vector) && l.owner.is_some())?;
        let gsi = u32::try_from(gsi).ok()?;
        line.pending = true;
        let mask = (line.trigger == Trigger::Level && !line.in_flight).then(|| {
            line.in_flight = true;
            Program::Mask(gsi)
        });
        Some((gsi, mask))
    }

    /// Whether any line has an interrupt waiting for `dom`.
    pub fn any_pending(&self, dom: DomId) -> bool {
        self.lines
            .iter()
            .any(|l| l.pending && l.owner.is_some_and(|(d, _)| d == dom))
    }

    /// Whether any line has an interrupt waiting for anyone.
    pub fn any_pending_at_all(&self) -> bool {
        self.lines.iter().any(|l| l.pending)
    }

    /// Takes the interrupts waiting for `dom`: their PIRQs, and whether
    /// each must be EOI'd (level-triggered).
    pub fn take_pending(&mut self, dom: DomId) -> impl Iterator<Item = (u32, bool)> + '_ {
        self.lines.iter_mut().filter_map(move |l| match l.owner {
            Some((d, pirq)) if d == dom && l.pending => {
                l.pending = false;
                Some((pirq, l.in_flight))
            }
            _ => None,
        })
    }

    /// `PHYSDEVOP_eoi` of `gsi` by `owner`: the line unmasked if it was
    /// waiting for it.
    pub fn eoi(&mut self, gsi: u32, owner: (DomId, u32)) -> Option<Program> {
        let line = self.lines.get_mut(gsi as usize)?;
        if line.owner != Some(owner) || !line.in_flight {
            return None;
        }
        line.in_flight = false;
        Some(Program::Unmask(gsi))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D0: DomId = DomId(0);

    fn lines() -> Lines {
        Lines::new(24, |_| None, &[4], VectorAllocator::new())
    }

    #[test]
    fn a_domain_has_the_gsis_and_184_more() {
        let p = Pirqs::hardware_domain(24);
        assert_eq!(p.nr_pirqs, 208);
        assert_eq!(p.check(207), Ok(207));
        for bad in [208, -1, i64::from(u32::MAX), 1 << 40] {
            assert_eq!(p.check(bad), Err(Errno::EINVAL));
        }
        assert!(!p.permitted(0) && p.permitted(1) && p.permitted(23) && !p.permitted(24));
        assert!(!Pirqs::domu(24).permitted(8));
        assert_eq!(Pirqs::domu(24).nr_pirqs, 56);
    }

    #[test]
    fn map_gsi_as_xen() {
        let mut p = Pirqs::hardware_domain(24);
        for gsi in [-1, 24, 1000] {
            assert_eq!(p.map_gsi(gsi, 8, true), Err(Errno::EINVAL));
        }
        assert_eq!(p.map_gsi(8, 0x10_0000, true), Err(Errno::EINVAL));
        assert_eq!(p.map_gsi(8, 8, false), Err(Errno::EPERM));
        assert_eq!(p.map_gsi(0, 0, true), Err(Errno::EINVAL));
        assert_eq!(p.map_gsi(8, 8, true), Ok(8));
        assert_eq!(p.map_gsi(8, 8, true), Ok(8));
        assert_eq!(p.map_gsi(8, -1, true), Ok(8));
        assert_eq!(p.map_gsi(8, 40, true), Err(Errno::EEXIST));
        // Free PIRQs for GSIs: from 16 up, then from the top down.
        assert_eq!(p.map_gsi(9, -1, true), Ok(16));
        for gsi in 10..17 {
            p.map_gsi(gsi, -1, true).unwrap();
        }
        assert_eq!(p.pirq_of(16), Some(23));
        assert_eq!(p.map_gsi(17, -1, true), Ok(207));
        // A PIRQ that names another GSI: success, nothing changes.
        assert_eq!(p.map_gsi(18, 8, true), Ok(8));
        assert_eq!(p.get(8).map(|m| m.gsi), Some(8));
        assert_eq!(p.unmap(8).map(|m| m.gsi), Ok(8));
        assert_eq!(p.unmap(8), Err(Errno::EINVAL));
        assert_eq!(p.unmap(-1), Err(Errno::EINVAL));
    }

    #[test]
    fn bindable_as_xen() {
        let mut p = Pirqs::hardware_domain(24);
        assert_eq!(p.bindable(0x10_0000), Err(Errno::EINVAL));
        assert_eq!(p.bindable(30), Err(Errno::EPERM));
        p.map_gsi(8, 8, true).unwrap();
        assert_eq!(p.bindable(8), Ok(8));
        p.set_port(8, Some(5));
        assert_eq!(p.bindable(8), Err(Errno::EEXIST));
        p.permit(8, false);
        assert_eq!(p.bindable(8), Err(Errno::EPERM));
    }

    #[test]
    fn setup_gsi_once() {
        let mut l = lines();
        assert_eq!(l.setup(-1, false, false), Err(Errno::EINVAL));
        assert_eq!(l.setup(24, false, false), Err(Errno::EINVAL));
        assert_eq!(l.setup(22, true, true), Ok(()));
        assert_eq!(l.setup(22, true, true), Err(Errno::EEXIST));
        assert_eq!(l.line(22).map(|x| x.trigger), Some(Trigger::Level));
    }

    #[test]
    fn lines_bind_deliver_and_wait_for_eoi() {
        let mut l = lines();
        assert_eq!(l.bind(4, (D0, 4)), Err(Errno::EBUSY));
        assert_eq!(l.bind(0, (D0, 0)), Err(Errno::EBUSY));
        let Ok(Program::Route {
            vector, trigger, ..
        }) = l.bind(8, (D0, 8))
        else {
            panic!("GSI 8 binds");
        };
        assert_eq!(trigger, Trigger::Edge);
        assert_eq!(l.bind(8, (DomId(1), 8)), Err(Errno::EBUSY));
        // Edge: pending, never masked; the EOI changes nothing.
        assert_eq!(l.interrupt(vector), Some((8, None)));
        assert!(l.any_pending(D0) && !l.any_pending(DomId(1)));
        assert_eq!(l.take_pending(D0).collect::<Vec<_>>(), [(8, false)]);
        assert!(!l.any_pending(D0));
        assert_eq!(l.eoi(8, (D0, 8)), None);
        // Level: masked at the first interrupt until the owner's EOI.
        let Ok(Program::Route {
            vector: v20,
            trigger,
            polarity,
            ..
        }) = l.bind(20, (D0, 20))
        else {
            panic!("GSI 20 binds");
        };
        assert_eq!((trigger, polarity), (Trigger::Level, Polarity::ActiveLow));
        assert_ne!(v20, vector);
        assert_eq!(l.interrupt(v20), Some((20, Some(Program::Mask(20)))));
        assert_eq!(l.take_pending(D0).collect::<Vec<_>>(), [(20, true)]);
        assert_eq!(l.eoi(20, (DomId(1), 20)), None);
        assert_eq!(l.eoi(20, (D0, 20)), Some(Program::Unmask(20)));
        assert_eq!(l.eoi(20, (D0, 20)), None);
        // Unbinding masks and forgets; the vector stays the line's.
        assert_eq!(l.unbind(20, (DomId(1), 20)), None);
        assert_eq!(l.unbind(20, (D0, 20)), Some(Program::Mask(20)));
        assert_eq!(l.interrupt(v20), None);
        assert!(
            matches!(l.bind(20, (DomId(1), 3)), Ok(Program::Route { vector, .. }) if vector == v20)
        );
    }
}
