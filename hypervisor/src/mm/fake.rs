//! A fake machine for the host tests: frames are `Vec`s of 512 words, every
//! page-table write is logged, the allocator is a set of free frames, and
//! guest memory (for the hypercall handlers) is a flat buffer at [`BASE`].
#![allow(
    clippy::cast_possible_truncation,
    reason = "test fixtures use small frame numbers and indices"
)]

use std::collections::{BTreeMap, BTreeSet};

use dom0_abi::Errno;
use dom0_abi::types::{DomId, Mfn};

use super::INVALID_M2P_ENTRY;
use super::effects::Effects;
use super::frame_table::{FrameInfo, Owner, PageType};
use super::machine::{DomainMm, MmMachine, PageTableMemory, VcpuMm};
use super::pte;
use super::types::{MapCtx, Mmu};
use crate::console::{InputRing, LogRead, LogRing};
use crate::domain::{Domain, DomainEntry, Privilege};
use crate::evtchn::fake::FakeBits;
use crate::evtchn::{EventBits, EventChannels};
use crate::hypercall::domctl::{ControlEnv, EventPair, MachineInfo};
use crate::hypercall::{Env, HostInfo};
use crate::irq::VectorAllocator;
use crate::pirq::{Lines, Program};
use crate::stats::Stats;
use crate::vcpu::Vcpu;
use crate::wallclock::Wallclock;

/// Guest address of the first byte of fake guest memory.
pub const BASE: u64 = 0x10_0000;
/// Size of fake guest memory.
pub const GUEST_BYTES: usize = 0x10000;

/// The domain most tests run as.
pub const DOM: DomId = DomId(0);
/// A second domain.
pub const OTHER: DomId = DomId(1);

/// Present, writable, accessed.
pub const PRW: u64 = pte::PRESENT | pte::RW | pte::ACCESSED;
/// Present, read-only.
pub const PRO: u64 = pte::PRESENT | pte::ACCESSED;

/// The fake machine's CPUs: the boot CPU and a second one left down.
/// A family 0x19 AMD CPU named "Fake CPU" with a 512 KiB L2 cache,
/// 64-byte lines and machine checks.
pub fn fake_cpuid(leaf: u32, _subleaf: u32) -> [u32; 4] {
    let word = |s: &[u8; 4]| u32::from_le_bytes(*s);
    match leaf {
        0 => [0xd, word(b"Auth"), word(b"cAMD"), word(b"enti")],
        1 => [0x00a0_0f12, 8 << 8, 0, (1 << 19) | (1 << 14)],
        0x8000_0000 => [0x8000_0008, 0, 0, 0],
        0x8000_0002 => [word(b"Fake"), word(b" CPU"), 0, 0],
        0x8000_0006 => [0, 0, 512 << 16, 0],
        _ => [0; 4],
    }
}

pub const FAKE_PCPUS: [crate::hypercall::Pcpu; 2] = [
    crate::hypercall::Pcpu {
        apic_id: 0,
        acpi_id: 0,
        online: true,
    },
    crate::hypercall::Pcpu {
        apic_id: 2,
        acpi_id: 1,
        online: false,
    },
];

/// The memory map `FakeMachine::host` reports: QEMU's, with 512 MiB.
pub const FAKE_MACHINE_MAP: [dom0_abi::memory::E820Entry; 4] = [
    dom0_abi::memory::E820Entry {
        addr: 0,
        size: 0x9_fc00,
        kind: dom0_abi::memory::E820_RAM,
    },
    dom0_abi::memory::E820Entry {
        addr: 0x9_fc00,
        size: 0x400,
        kind: dom0_abi::memory::E820_RESERVED,
    },
    dom0_abi::memory::E820Entry {
        addr: 0x10_0000,
        size: 0x1fee_0000,
        kind: dom0_abi::memory::E820_RAM,
    },
    dom0_abi::memory::E820Entry {
        addr: 0xfffc_0000,
        size: 0x4_0000,
        kind: dom0_abi::memory::E820_RESERVED,
    },
];

pub struct FakeMachine {
    pub frames: Vec<FrameInfo>,
    pub mem: Vec<Vec<u64>>,
    /// Every `write_pte`: frame, index, value.
    pub writes: Vec<(Mfn, usize, u64)>,
    pub free: BTreeSet<u64>,
    pub m2p: Vec<u64>,
    pub domains: BTreeMap<u16, DomainMm>,
    /// Frames any domain with `io_caps` may map as device memory.
    pub iomem: BTreeSet<u64>,
    /// Device frames mapped read-only whatever the entry asks.
    pub iomem_read_only: BTreeSet<u64>,
    /// The hypervisor's mapping of each frame whose cache attribute is
    /// not write-back: frame, attribute.
    pub hv_cache_attr: BTreeMap<u64, u8>,
    /// Whether changing the hypervisor's mapping fails (no memory).
    pub cache_attr_fails: bool,
    pub guest: Vec<u8>,
    pub domain: Domain,
    /// The calling vCPU (id 0).
    pub cpu: Vcpu,
    /// The domain's other vCPUs by id (index 0 is unused: that is `cpu`).
    pub vcpus: Vec<Vcpu>,
    /// Whether a handler asked for another vCPU to run.
    pub rescheduled: bool,
    /// System time the handlers see.
    pub now: u64,
    /// Whether a handler changed a timer.
    pub timers_changed: bool,
    pub preempted: Option<[u64; 5]>,
    #[allow(dead_code, reason = "read by the hypercall::mmu tests")]
    pub vcpu: VcpuMm,
    #[allow(dead_code, reason = "read by the hypercall::mmu tests")]
    pub shared_max_pfn: u64,
    pub host: HostInfo,
    /// The machine's interrupt lines (24 GSIs, GSI 4 the hypervisor's).
    pub lines: Lines,
    /// What the I/O APIC was told, in order.
    pub programs: Vec<Program>,
    pub console: Vec<u8>,
    pub input: InputRing,
    /// The hypervisor's console log (`sysctl readconsole`).
    pub log: Box<LogRing>,
    pub stats: Stats,
    /// The event bits of the domain's shared_info page.
    pub events: FakeBits,
    /// `shared_info.arch.nmi_reason`.
    pub nmi_reason: u64,
    /// The wall clock a handler set, if any.
    pub wallclock: Option<Wallclock>,
    /// Whole domains besides the caller's (for `domctl`), by id.
    pub others: BTreeMap<u16, Box<DomainEntry>>,
    /// The last domain id handed out.
    pub rover: u16,
    /// The event bits of the other domains' shared_info pages.
    pub other_events: BTreeMap<u16, FakeBits>,
    /// Other domains whose slots another CPU holds: looking one up
    /// answers `None` and sets `slot_busy`.
    pub busy: BTreeSet<u16>,
    /// Other domains whose slots another CPU waits for: it takes each
    /// once this environment gives it up (they join `busy`).
    pub taken_when_released: BTreeSet<u16>,
    /// The other domains' slots this environment holds, as `ArchEnv`
    /// does: the last one looked up, or the two of `hold_two`.
    pub held: Vec<u16>,
    /// Frames of a domain whose slot was busy freed meanwhile
    /// (`MmMachine::uncount_page`), settled when it is looked up next.
    pub pages_owed: BTreeMap<u16, u64>,
    /// `Env::slot_busy`.
    pub slot_busy: bool,
    /// The arguments the running hypercall was made with (its registers),
    /// which a slot found busy continues it with.
    pub entry_args: [u64; 5],
    /// Whether dom0 is owed a `VIRQ_DOM_EXC` (`ControlEnv::owe_dom_exc`).
    pub dom_exc_owed: bool,
}

impl FakeMachine {
    /// `n` frames, all free, dom0 and domain 1 existing with no pages.
    pub fn new(n: usize) -> FakeMachine {
        let mut domains = BTreeMap::new();
        domains.insert(DOM.0, DomainMm::dom0(Privilege::for_tests(), 0));
        domains.insert(
            OTHER.0,
            DomainMm {
                privilege: None,
                io_caps: false,
                max_pages: 64,
                ..DomainMm::dom0(Privilege::for_tests(), 0)
            },
        );
        FakeMachine {
            frames: vec![FrameInfo::UNOWNED; n],
            mem: vec![vec![0; 512]; n],
            writes: Vec::new(),
            free: (0..n as u64).collect(),
            m2p: vec![INVALID_M2P_ENTRY; n],
            domains,
            iomem: BTreeSet::new(),
            iomem_read_only: BTreeSet::new(),
            hv_cache_attr: BTreeMap::new(),
            cache_attr_fails: false,
            guest: vec![0; GUEST_BYTES],
            domain: Domain {
                pirqs: crate::pirq::Pirqs::hardware_domain(24),
                ioports: Some(Box::new(crate::ioport::IoPorts::hardware_domain(0x3f8))),
                ..Domain::dom0(1, 0)
            },
            cpu: Vcpu::default(),
            vcpus: Vec::new(),
            rescheduled: false,
            now: 0,
            timers_changed: false,
            preempted: None,
            vcpu: VcpuMm::default(),
            shared_max_pfn: 0,
            host: HostInfo {
                command_line: b"console=com1 dom0_mem=64M",
                build_id: &[0xab; 20],
                nx: true,
                machine_map: &FAKE_MACHINE_MAP,
                pcpus: &FAKE_PCPUS,
                raw_cpuid: fake_cpuid,
                mcg_cap: 0x10a,
            },
            lines: Lines::new(24, |_| None, &[4], VectorAllocator::new()),
            programs: Vec::new(),
            console: Vec::new(),
            input: InputRing::new(),
            log: Box::new(LogRing::new()),
            stats: Stats::default(),
            events: FakeBits::default(),
            nmi_reason: 0,
            wallclock: None,
            others: BTreeMap::new(),
            rover: 0,
            other_events: BTreeMap::new(),
            busy: BTreeSet::new(),
            taken_when_released: BTreeSet::new(),
            held: Vec::new(),
            pages_owed: BTreeMap::new(),
            slot_busy: false,
            entry_args: [0; 5],
            dom_exc_owed: false,
        }
    }

    /// `n` frames, and a dom0 of `vcpus` vCPUs whose vCPU 0 (the caller)
    /// is up.
    pub fn with_vcpus(n: usize, vcpus: u32) -> FakeMachine {
        let mut m = FakeMachine::new(n);
        m.domain.mm.max_vcpus = vcpus;
        m.domain.evtchn = EventChannels::new(DOM, vcpus);
        m.cpu.power = crate::vcpu::Power::Up;
        m.cpu.initialised = true;
        m.vcpus = (0..vcpus).map(Vcpu::new).collect();
        m
    }

    /// Runs `f` with an [`Mmu`] over this machine; returns its result and
    /// the effects.
    pub fn with<R>(&mut self, f: impl FnOnce(&mut Mmu<'_, FakeMachine>) -> R) -> (R, Effects) {
        let mut fx = Effects::default();
        let r = {
            let mut mmu = Mmu::new(self, &mut fx);
            f(&mut mmu)
        };
        (r, fx)
    }

    /// Takes a free frame and gives it to `dom` (page `pfn` = mfn).
    pub fn give(&mut self, dom: DomId) -> Mfn {
        let mfn = self
            .alloc_frames(0, u64::MAX)
            .expect("fake machine out of frames");
        self.with(|m| m.assign(mfn, dom, Some(mfn.0))).0.unwrap();
        mfn
    }

    pub fn info(&self, mfn: Mfn) -> FrameInfo {
        self.frames[mfn.0 as usize]
    }

    pub fn set(&mut self, mfn: Mfn, index: usize, value: u64) {
        self.mem[mfn.0 as usize][index] = value;
    }

    pub fn get(&self, mfn: Mfn, index: usize) -> u64 {
        self.mem[mfn.0 as usize][index]
    }

    pub fn ctx(&self, dom: DomId) -> MapCtx {
        let io = self.domains.get(&dom.0).is_some_and(|d| d.io_caps);
        MapCtx::own(dom, io)
    }

    pub fn tot_pages(&self, dom: DomId) -> u64 {
        self.domains[&dom.0].tot_pages
    }

    /// A four-level hierarchy for `dom` mapping `va` to `data` (RW), with
    /// every table frame mapped read-only in slot `index(va)+1` of the L1.
    /// Returns (l4, l3, l2, l1). Nothing is typed yet.
    pub fn build_tables(&mut self, dom: DomId, va: u64, data: Mfn) -> [Mfn; 4] {
        let t = [
            self.give(dom),
            self.give(dom),
            self.give(dom),
            self.give(dom),
        ];
        let [l4, l3, l2, l1] = t;
        self.set(l4, pte::table_index(va, 4), (l3.0 << 12) | PRW);
        self.set(l3, pte::table_index(va, 3), (l2.0 << 12) | PRW);
        self.set(l2, pte::table_index(va, 2), (l1.0 << 12) | PRW);
        let i = pte::table_index(va, 1);
        self.set(l1, i, (data.0 << 12) | PRW);
        for (k, table) in t.iter().enumerate() {
            self.set(l1, (i + 1 + k) % 512, (table.0 << 12) | PRO);
        }
        t
    }

    /// Checks the frame-table invariants against the memory contents:
    /// every count equals the references the live tables, pins, roots and
    /// allocations account for.
    pub fn check_invariants(&self, roots: &[Mfn]) {
        let n = self.frames.len();
        let mut refs = vec![0u64; n];
        let mut types = vec![0u64; n];
        let mut linear = vec![(0i64, 0i64); n];
        for (i, f) in self.frames.iter().enumerate() {
            if f.count() == 0 {
                assert_eq!(f.owner(), Owner::None, "frame {i}: unreferenced but owned");
                assert_eq!(f.type_count(), 0, "frame {i}");
                assert!(!f.is_pinned(), "frame {i}");
                continue;
            }
            assert!(!self.free.contains(&(i as u64)), "frame {i} owned and free");
            assert!(f.type_count() <= f.count(), "frame {i}: {f:?}");
            refs[i] += u64::from(f.is_allocated()) + u64::from(f.holds_hv_ref());
            types[i] += u64::from(f.holds_hv_ref());
            if f.is_pinned() {
                assert!(
                    f.type_count() >= 1 && f.page_type().is_page_table(),
                    "frame {i}"
                );
                refs[i] += 1;
                types[i] += 1;
            }
            if f.type_count() > 0 && f.page_type().is_page_table() {
                assert!(f.is_validated(), "frame {i}: live table not validated");
                let ty = f.page_type();
                for (slot, &e) in self.mem[i].iter().enumerate() {
                    if ty == PageType::L4 && !dom0_abi::layout::is_guest_l4_slot(slot) {
                        continue;
                    }
                    if !pte::is_present(e) {
                        continue;
                    }
                    let target = pte::frame(e).0 as usize;
                    if target >= n || self.frames[target].owner() == Owner::Io {
                        continue;
                    }
                    if ty != PageType::L1 && target == i {
                        assert!(
                            !pte::is_writable(e),
                            "frame {i} slot {slot}: writable self-map"
                        );
                        continue;
                    }
                    refs[target] += 1;
                    if ty != PageType::L1 || pte::is_writable(e) {
                        types[target] += 1;
                    }
                    if ty != PageType::L1 {
                        let child = self.frames[target];
                        if child.page_type() == ty {
                            assert!(
                                !pte::is_writable(e),
                                "frame {i} slot {slot}: writable linear"
                            );
                            linear[i].0 += 1;
                            linear[target].1 += 1;
                        } else {
                            assert_eq!(
                                Some(child.page_type()),
                                ty.child(),
                                "frame {i} slot {slot}"
                            );
                        }
                    } else if pte::is_writable(e) {
                        assert_eq!(self.frames[target].page_type(), PageType::Writable);
                    }
                }
            }
        }
        for &r in roots {
            refs[r.0 as usize] += 1;
            types[r.0 as usize] += 1;
        }
        for i in 0..n {
            let f = self.frames[i];
            if f.owner() == Owner::Io || f.owner() == Owner::Xen {
                continue;
            }
            assert_eq!(
                u64::from(f.count()),
                refs[i],
                "frame {i}: general count {f:?}"
            );
            assert_eq!(
                u64::from(f.type_count()),
                types[i],
                "frame {i}: type count {f:?}"
            );
            assert_eq!(
                self.hv_cache_attr.get(&(i as u64)).copied().unwrap_or(0),
                f.cache_attr(),
                "frame {i}: the hypervisor's mapping has another cache attribute"
            );
            let (entries, uses) = linear[i];
            assert!(entries == 0 || uses == 0, "frame {i}: linear chain of two");
            assert_eq!(
                i64::from(f.linear_count()),
                entries - uses,
                "frame {i}: linear count {f:?}"
            );
        }
    }
}

impl PageTableMemory for FakeMachine {
    fn read_pte(&self, mfn: Mfn, index: usize) -> u64 {
        self.mem[mfn.0 as usize][index]
    }
    fn write_pte(&mut self, mfn: Mfn, index: usize, value: u64) {
        self.writes.push((mfn, index, value));
        self.mem[mfn.0 as usize][index] = value;
    }
    fn write_pte_preserve_ad(&mut self, mfn: Mfn, index: usize, value: u64) -> u64 {
        let v = value | (self.read_pte(mfn, index) & (pte::ACCESSED | pte::DIRTY));
        self.write_pte(mfn, index, v);
        v
    }
    fn clear_page(&mut self, mfn: Mfn) {
        self.mem[mfn.0 as usize].fill(0);
    }
    fn copy_page(&mut self, dst: Mfn, src: Mfn) {
        let data = self.mem[src.0 as usize].clone();
        self.mem[dst.0 as usize] = data;
    }
}

impl MmMachine for FakeMachine {
    fn frames(&mut self) -> &mut [FrameInfo] {
        &mut self.frames
    }
    fn alloc_frames(&mut self, order: u32, limit: u64) -> Option<Mfn> {
        let count = 1u64 << order;
        let start = (0..self.frames.len() as u64)
            .step_by(count as usize)
            .find(|&s| s + count <= limit && (s..s + count).all(|f| self.free.contains(&f)))?;
        for f in start..start + count {
            self.free.remove(&f);
            self.mem[f as usize].fill(0);
        }
        Some(Mfn(start))
    }
    fn free_frame(&mut self, mfn: Mfn) {
        assert!(self.free.insert(mfn.0), "double free of {mfn:?}");
    }
    fn set_m2p(&mut self, mfn: Mfn, pfn: u64) {
        self.m2p[mfn.0 as usize] = pfn;
    }
    fn iomem_permitted(&self, dom: DomId, mfn: Mfn) -> bool {
        self.domains.get(&dom.0).is_some_and(|d| d.io_caps) && self.iomem.contains(&mfn.0)
    }
    fn iomem_read_only(&self, mfn: Mfn) -> bool {
        self.iomem_read_only.contains(&mfn.0)
    }
    fn set_cache_attr(&mut self, mfn: Mfn, attr: u8) -> Result<(), Errno> {
        if attr == 0 {
            self.hv_cache_attr.remove(&mfn.0);
        } else if self.cache_attr_fails {
            return Err(Errno::ENOMEM);
        } else {
            self.hv_cache_attr.insert(mfn.0, attr);
        }
        Ok(())
    }
    fn domain_mm(&mut self, dom: DomId) -> Option<&mut DomainMm> {
        if self.found_busy(dom) {
            return None;
        }
        self.mm_of(dom)
    }
    fn uncount_page(&mut self, dom: DomId) {
        if dom != self.domain.id && self.busy.contains(&dom.0) {
            // Another CPU holds it (a test marked it so): not this one.
            self.held.retain(|&id| id != dom.0);
            *self.pages_owed.entry(dom.0).or_default() += 1;
        } else if let Some(d) = self.mm_of(dom) {
            d.tot_pages = d.tot_pages.saturating_sub(1);
        }
    }
    fn hold_two(&mut self, a: DomId, b: DomId) -> bool {
        let mut ids = [a, b].map(|id| id.0);
        ids.sort_unstable();
        let others: Vec<u16> = ids
            .into_iter()
            .filter(|&id| id != self.domain.id.0)
            .collect();
        if others.len() == 2 && others[0] != others[1] {
            if !(self.held.contains(&others[0]) && self.held.contains(&others[1])) {
                self.release_held();
                if others.iter().any(|id| self.busy.contains(id)) {
                    self.slot_busy = true;
                    self.preempted.get_or_insert(self.entry_args);
                    return false;
                }
                for &id in &others {
                    self.hold(DomId(id));
                }
            }
            return others.iter().all(|&id| self.mm_of(DomId(id)).is_some());
        }
        others
            .first()
            .is_none_or(|&id| self.domain_mm(DomId(id)).is_some())
    }
}

#[allow(dead_code, reason = "guest memory helpers for the hypercall tests")]
impl FakeMachine {
    /// Whether `id`'s slot is held elsewhere (`busy`); if so, the call is
    /// continued with `entry_args`, as `ArchEnv` does with its registers.
    /// A lookup of another domain that this environment does not hold
    /// gives up the slots it holds and holds that one (settling the pages
    /// it owes), as `ArchEnv` does. A test that marks a held slot busy
    /// starts a new hypercall, which holds nothing yet.
    fn found_busy(&mut self, id: DomId) -> bool {
        if id == self.domain.id || (self.held.contains(&id.0) && !self.busy.contains(&id.0)) {
            return false;
        }
        self.release_held();
        let busy = self.busy.contains(&id.0);
        if busy {
            self.slot_busy = true;
            self.preempted.get_or_insert(self.entry_args);
        } else {
            self.hold(id);
        }
        busy
    }

    /// Holds `id`'s slot besides those held, settling the pages it owes.
    fn hold(&mut self, id: DomId) {
        self.held.push(id.0);
        let owed = self.pages_owed.remove(&id.0).unwrap_or(0);
        if let Some(d) = self.mm_of(id) {
            d.tot_pages = d.tot_pages.saturating_sub(owed);
        }
    }

    /// Gives up the other slots held: another CPU waiting for one takes it.
    fn release_held(&mut self) {
        for id in self.held.drain(..) {
            if self.taken_when_released.contains(&id) {
                self.busy.insert(id);
            }
        }
    }

    /// The memory state of `dom`, without looking its slot up.
    fn mm_of(&mut self, dom: DomId) -> Option<&mut DomainMm> {
        if let Some(entry) = self.others.get_mut(&dom.0) {
            return Some(&mut entry.domain.mm);
        }
        self.domains.get_mut(&dom.0)
    }

    fn range(&self, va: u64, len: usize) -> Result<core::ops::Range<usize>, Errno> {
        let start = va.checked_sub(BASE).ok_or(Errno::EFAULT)?;
        let start = usize::try_from(start).map_err(|_| Errno::EFAULT)?;
        let end = start.checked_add(len).ok_or(Errno::EFAULT)?;
        if end > self.guest.len() {
            return Err(Errno::EFAULT);
        }
        Ok(start..end)
    }

    /// Writes `bytes` into guest memory at `va`.
    pub fn poke(&mut self, va: u64, bytes: &[u8]) {
        let r = self.range(va, bytes.len()).unwrap();
        self.guest[r].copy_from_slice(bytes);
    }

    /// Reads a `u64` from guest memory at `va`.
    pub fn peek_u64(&self, va: u64) -> u64 {
        let r = self.range(va, 8).unwrap();
        u64::from_le_bytes(self.guest[r].try_into().unwrap())
    }

    /// Reads a `u32` from guest memory at `va`.
    pub fn peek_u32(&self, va: u64) -> u32 {
        let r = self.range(va, 4).unwrap();
        u32::from_le_bytes(self.guest[r].try_into().unwrap())
    }
}

impl Env for FakeMachine {
    fn copy_from_guest(&mut self, va: u64, buf: &mut [u8]) -> Result<(), Errno> {
        let r = self.range(va, buf.len())?;
        buf.copy_from_slice(&self.guest[r]);
        Ok(())
    }
    fn copy_to_guest(&mut self, va: u64, buf: &[u8]) -> Result<(), Errno> {
        let r = self.range(va, buf.len())?;
        self.guest[r].copy_from_slice(buf);
        Ok(())
    }
    fn console_write(&mut self, bytes: &[u8]) {
        self.console.extend_from_slice(bytes);
    }
    fn console_read(&mut self, count: u32, buffer: u64) -> Result<u32, Errno> {
        let mut input = core::mem::take(&mut self.input);
        let read = input.read(count, |offset, piece| {
            let va = buffer.checked_add(u64::from(offset)).ok_or(Errno::EFAULT)?;
            self.copy_to_guest(va, piece)
        });
        self.input = input;
        read
    }
    fn domain(&mut self) -> &mut Domain {
        &mut self.domain
    }
    fn vcpu(&mut self) -> &mut Vcpu {
        &mut self.cpu
    }
    type Bits = FakeBits;
    fn event_channels(&mut self) -> (&mut EventChannels, &mut FakeBits) {
        (&mut self.domain.evtchn, &mut self.events)
    }
    fn nmi_reason(&mut self) -> u64 {
        self.nmi_reason
    }
    fn move_vcpu_info(&mut self, vcpu: u32, maddr: u64) {
        if let Some(v) = self.vcpu_by_id(vcpu) {
            v.vcpu_info = maddr;
        }
    }
    fn vcpu_by_id(&mut self, id: u32) -> Option<&mut Vcpu> {
        if id == self.cpu.id {
            return Some(&mut self.cpu);
        }
        if id >= self.domain.mm.max_vcpus {
            return None;
        }
        self.vcpus.get_mut(usize::try_from(id).ok()?)
    }
    fn reschedule(&mut self) {
        self.rescheduled = true;
    }
    fn now_ns(&self) -> u64 {
        self.now
    }
    fn timers_changed(&mut self) {
        self.timers_changed = true;
    }
    fn wake_kicked(&mut self) {
        for id in crate::sched::kicked_ids(self.events.take_kicked()) {
            if let Some(vcpu) = self.vcpu_by_id(id) {
                vcpu.kicked = true;
            }
        }
    }
    fn set_wallclock(&mut self, _privilege: Privilege, wallclock: Wallclock) {
        self.wallclock = Some(wallclock);
    }
    fn preempt(&mut self, args: [u64; 5]) {
        self.preempted = Some(args);
        self.slot_busy = false;
    }
    fn take_preempted(&mut self) -> Option<[u64; 5]> {
        self.preempted.take()
    }
    fn slot_busy(&self) -> bool {
        self.slot_busy
    }
    fn clear_slot_busy(&mut self) {
        self.slot_busy = false;
    }
    fn iret(&mut self) -> Result<u64, Errno> {
        Err(Errno::ENOSYS)
    }
    fn apply_effects(&mut self, _fx: &Effects) {}
    fn host(&self) -> &HostInfo {
        &self.host
    }
    fn irq_lines<R>(&mut self, f: impl FnOnce(&mut Lines) -> (R, Option<Program>)) -> R {
        let (r, program) = f(&mut self.lines);
        self.programs.extend(program);
        r
    }
    fn stats(&self) -> Stats {
        self.stats.clone()
    }
}

impl ControlEnv for FakeMachine {
    fn other_domain(&mut self, id: DomId) -> Option<&mut DomainEntry> {
        if id == self.domain.id || self.found_busy(id) {
            return None;
        }
        self.others.get_mut(&id.0).map(|e| &mut **e)
    }
    fn first_domain_from(&mut self, from: DomId) -> Option<DomId> {
        let own = self.domain.id;
        let other = self.others.range(from.0..).next().map(|(&id, _)| DomId(id));
        match other {
            Some(o) if own.0 >= from.0 && own.0 < o.0 => Some(own),
            None if own.0 >= from.0 => Some(own),
            found => found,
        }
    }
    fn free_domain_id(&mut self) -> Option<DomId> {
        let free = (1..DomId::FIRST_RESERVED.0)
            .map(|step| {
                (u32::from(self.rover) + u32::from(step)) % u32::from(DomId::FIRST_RESERVED.0)
            })
            .filter_map(|i| u16::try_from(i).ok())
            .find(|&i| i != 0 && i != self.domain.id.0 && !self.others.contains_key(&i))?;
        self.rover = free;
        Some(DomId(free))
    }
    fn insert_domain(&mut self, entry: Box<DomainEntry>) -> Result<(), Box<DomainEntry>> {
        let id = entry.domain.id.0;
        if id == self.domain.id.0 || self.others.contains_key(&id) {
            return Err(entry);
        }
        self.others.insert(id, entry);
        Ok(())
    }
    fn remove_domain(&mut self, id: DomId) -> Option<Box<DomainEntry>> {
        self.others.remove(&id.0)
    }
    fn owe_dom_exc(&mut self) {
        self.dom_exc_owed = true;
    }
    fn event_channels_of(&mut self, other: DomId) -> Option<EventPair<'_>> {
        if other == self.domain.id || self.found_busy(other) {
            return None;
        }
        let entry = self.others.get_mut(&other.0)?;
        let peer_dying = entry.domain.dying;
        Some(EventPair {
            own: &mut self.domain.evtchn,
            own_bits: &mut self.events,
            peer: &mut entry.domain.evtchn,
            peer_bits: self.other_events.entry(other.0).or_default(),
            peer_dying,
        })
    }
    fn read_console(&mut self, req: LogRead, buffer: u64) -> Result<(u32, u32), Errno> {
        let mut log = core::mem::take(&mut self.log);
        let read = log.read(req, |offset, piece| {
            let va = buffer.checked_add(u64::from(offset)).ok_or(Errno::EFAULT)?;
            self.copy_to_guest(va, piece)
        });
        self.log = log;
        read
    }
    fn idle_ns(&mut self, cpu: usize) -> u64 {
        if self.host().pcpus.get(cpu).is_some_and(|p| p.online) {
            FAKE_IDLE_NS + cpu as u64
        } else {
            0
        }
    }
    fn machine_info(&mut self) -> MachineInfo {
        MachineInfo {
            cpu_khz: 2_000_000,
            total_pages: self.frames.len() as u64,
            free_pages: self.free.len() as u64,
            phys_bits: 40,
            heap_used: 0,
        }
    }
}

/// CPU 0's idle time in [`FakeMachine`] (CPU `n`'s is this plus `n`).
pub const FAKE_IDLE_NS: u64 = 123_456_789;

/// A tiny xorshift64 generator for randomized tests.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}
