//! TLB shootdown, the parts that need no hardware: which CPUs may hold a
//! domain's translations, how a flush is asked of another CPU and how
//! its answer is seen. The IPI, its handler and the flush itself are
//! `arch::x86_64::percpu`'s.
//!
//! Each domain id has a [`CpuSet`] (`DomainTable::dirty_cpus`): the CPUs
//! whose TLB may hold translations of its page tables that they could
//! use without flushing first. A CPU joins the set when it loads one of
//! the domain's vCPUs (after the full flush every switch makes, which is
//! also when it leaves the set of the domain it ran before), and leaves
//! it after a full flush while it does not hold the domain
//! ([`Residency`]). A flush the memory core or the guest asks for
//! "every CPU of the domain" (`Effects`'
//! `flush.domain`) is made here and asked of every other CPU of the set
//! through its [`Mailbox`]; the hypercall waits until each of them
//! answered or left the set ([`settled`]).
//!
//! Asking is a ticket: the asker draws the next number of the target's
//! mailbox, the target flushes and then publishes the highest number it
//! had seen before flushing. Every request with a number up to that one
//! was made before the flush began, so the flush came after whatever
//! change the request was for, and any number of CPUs can ask one target
//! at once without a lock.
#![forbid(unsafe_code)]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use dom0_abi::types::DomId;

/// A set of physical CPUs (bit `c`: CPU `c`; 64 at most, as
/// `smp::MAX_CPUS`), changed and read without a lock.
#[derive(Debug, Default)]
pub struct CpuSet(AtomicU64);

impl CpuSet {
    /// The empty set.
    pub const fn new() -> CpuSet {
        CpuSet(AtomicU64::new(0))
    }

    /// Adds CPU `cpu` (nothing for a number past 63).
    pub fn add(&self, cpu: u16) {
        self.0.fetch_or(bit(cpu), Ordering::SeqCst);
    }

    /// Removes CPU `cpu`.
    pub fn remove(&self, cpu: u16) {
        self.0.fetch_and(!bit(cpu), Ordering::SeqCst);
    }

    /// Whether CPU `cpu` is in the set.
    pub fn contains(&self, cpu: u16) -> bool {
        self.0.load(Ordering::SeqCst) & bit(cpu) != 0
    }

    /// The CPUs of the set other than `me`: those a flush of the domain
    /// made on CPU `me` must be asked of.
    pub fn others(&self, me: u16) -> u64 {
        self.0.load(Ordering::SeqCst) & !bit(me)
    }
}

/// CPU `cpu`'s bit (0 past 63).
fn bit(cpu: u16) -> u64 {
    1u64.checked_shl(u32::from(cpu)).unwrap_or(0)
}

/// One CPU's flush requests: how many were asked of it, and up to which
/// one it has flushed.
#[derive(Debug, Default)]
pub struct Mailbox {
    /// The last ticket drawn.
    asked: AtomicU64,
    /// Every ticket up to this one has been answered by a full flush.
    done: AtomicU64,
}

impl Mailbox {
    /// No request yet.
    pub const fn new() -> Mailbox {
        Mailbox {
            asked: AtomicU64::new(0),
            done: AtomicU64::new(0),
        }
    }

    /// Asks the CPU for a full flush (after the change it is for); returns
    /// the ticket [`Mailbox::answered`] takes.
    pub fn ask(&self) -> u64 {
        self.asked.fetch_add(1, Ordering::SeqCst).wrapping_add(1)
    }

    /// The CPU's side: the ticket a flush begun now answers, if a request
    /// is waiting. The flush must follow this call; then
    /// [`Mailbox::answer`] with the ticket.
    pub fn pending(&self) -> Option<u64> {
        let asked = self.asked.load(Ordering::SeqCst);
        (asked > self.done.load(Ordering::SeqCst)).then_some(asked)
    }

    /// The CPU's side: every request up to `ticket` is answered (its
    /// flush is done).
    pub fn answer(&self, ticket: u64) {
        self.done.fetch_max(ticket, Ordering::SeqCst);
    }

    /// Whether the request with `ticket` is answered.
    pub fn answered(&self, ticket: u64) -> bool {
        self.done.load(Ordering::SeqCst) >= ticket
    }
}

/// Whose set one CPU is in: the domain whose vCPU it loaded last, until
/// a full flush takes it out ([`Residency::flushed`]). Changed only by
/// the CPU itself; `sets` finds a domain's [`CpuSet`].
#[derive(Debug, Default)]
pub struct Residency(AtomicU32);

impl Residency {
    /// In no domain's set.
    pub const fn new() -> Residency {
        Residency(AtomicU32::new(0))
    }

    /// The domain whose set the CPU is in.
    pub fn domain(&self) -> Option<DomId> {
        let plus_one = self.0.load(Ordering::SeqCst);
        u16::try_from(plus_one.checked_sub(1)?).ok().map(DomId)
    }

    /// CPU `me` loaded a vCPU of `domain` after a full flush: it joins
    /// the domain's set (before it can use any of its translations) and
    /// leaves the set of the domain it was in, whose translations that
    /// flush removed. One load when it is in `domain`'s set already.
    pub fn loaded<'a>(&self, domain: DomId, me: u16, sets: impl Fn(DomId) -> Option<&'a CpuSet>) {
        let now = u32::from(domain.0) + 1;
        if self.0.load(Ordering::Relaxed) == now {
            return;
        }
        if let Some(set) = sets(domain) {
            set.add(me);
        }
        let before = self.0.swap(now, Ordering::SeqCst);
        let old = before.checked_sub(1).and_then(|d| u16::try_from(d).ok());
        if let Some(set) = old.map(DomId).and_then(sets) {
            set.remove(me);
        }
    }

    /// CPU `me` flushed its whole TLB while holding `holding`: it leaves
    /// the set it is in unless it holds that domain
    /// ([`leaves_after_flush`]).
    pub fn flushed<'a>(
        &self,
        holding: Option<DomId>,
        me: u16,
        sets: impl Fn(DomId) -> Option<&'a CpuSet>,
    ) {
        let domain = self.domain();
        if leaves_after_flush(domain, holding) {
            self.0.store(0, Ordering::SeqCst);
            if let Some(set) = domain.and_then(sets) {
                set.remove(me);
            }
        }
    }
}

/// Whether a CPU that just flushed its whole TLB leaves the set of
/// domain `tlb_of` (the one whose vCPU it loaded last): unless it holds
/// that domain still (runs, or idles with, one of its vCPUs, which it may
/// resume without loading it again), it flushes again before it next
/// loads any vCPU, so it holds nothing of the domain it could use.
pub fn leaves_after_flush<D: PartialEq>(tlb_of: Option<D>, holding: Option<D>) -> bool {
    tlb_of.is_some() && tlb_of != holding
}

/// Whether a flush asked of a CPU is settled: the CPU answered the
/// request, or it left the domain's set meanwhile (it flushed after
/// switching away from the domain, and cannot have loaded its
/// translations again without joining the set).
pub fn settled(answered: bool, still_in_set: bool) -> bool {
    answered || !still_in_set
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_name_cpus_by_bit() {
        let set = CpuSet::new();
        set.add(0);
        set.add(3);
        set.add(63);
        set.add(64);
        assert!(set.contains(3) && set.contains(63) && !set.contains(1));
        assert_eq!(set.others(0), 1 << 3 | 1 << 63);
        assert_eq!(set.others(5), 1 << 0 | 1 << 3 | 1 << 63);
        set.remove(3);
        assert_eq!(set.others(0), 1 << 63);
        assert!(!set.contains(64));
    }

    #[test]
    fn a_flush_answers_every_request_made_before_it() {
        let mb = Mailbox::new();
        assert_eq!(mb.pending(), None);
        let (a, b) = (mb.ask(), mb.ask());
        assert!(!mb.answered(a) && !mb.answered(b));
        // The CPU begins a flush: it covers both requests.
        let ticket = mb.pending().unwrap();
        // A request made while it flushes is not covered.
        let c = mb.ask();
        mb.answer(ticket);
        assert!(mb.answered(a) && mb.answered(b));
        assert!(!mb.answered(c));
        assert_eq!(mb.pending(), Some(c));
        mb.answer(c);
        assert!(mb.answered(c));
        assert_eq!(mb.pending(), None);
        // An older answer arriving late takes nothing back.
        mb.answer(ticket);
        assert!(mb.answered(c));
    }

    #[test]
    fn a_cpu_leaves_a_set_only_for_a_domain_it_does_not_hold() {
        // Idling in its own loop after running domain 3.
        assert!(leaves_after_flush(Some(3), None));
        // Claimed another domain and not loaded it yet.
        assert!(leaves_after_flush(Some(3), Some(5)));
        // Runs (or idles with) domain 3: it resumes without flushing.
        assert!(!leaves_after_flush(Some(3), Some(3)));
        // Loaded nothing yet.
        assert!(!leaves_after_flush(None::<u16>, None));
    }

    #[test]
    fn a_cpu_moves_between_sets_as_it_loads_and_flushes() {
        let sets: [CpuSet; 3] = [const { CpuSet::new() }; 3];
        let find = |d: DomId| sets.get(usize::from(d.0));
        let cpu1 = Residency::new();
        cpu1.loaded(DomId(1), 1, find);
        assert!(sets[1].contains(1));
        assert_eq!(cpu1.domain(), Some(DomId(1)));
        // Another vCPU of the same domain: nothing moves.
        cpu1.loaded(DomId(1), 1, find);
        assert!(sets[1].contains(1));
        // A vCPU of domain 2: out of 1's set, into 2's.
        cpu1.loaded(DomId(2), 1, find);
        assert!(!sets[1].contains(1) && sets[2].contains(1));
        // A flush while it still holds domain 2 (it may resume it).
        cpu1.flushed(Some(DomId(2)), 1, find);
        assert!(sets[2].contains(1));
        // A flush while it idles holding nothing: out.
        cpu1.flushed(None, 1, find);
        assert!(!sets[2].contains(1));
        assert_eq!(cpu1.domain(), None);
        // Loading domain 2 again puts it back.
        cpu1.loaded(DomId(2), 1, find);
        assert!(sets[2].contains(1));
        // An id without a set (past the table) is in no set.
        cpu1.loaded(DomId(7), 1, find);
        assert!(!sets[2].contains(1));
        assert_eq!(cpu1.domain(), Some(DomId(7)));
    }

    #[test]
    fn a_wait_ends_when_the_target_answers_or_leaves() {
        assert!(!settled(false, true));
        assert!(settled(true, true));
        assert!(settled(false, false));
    }
}
