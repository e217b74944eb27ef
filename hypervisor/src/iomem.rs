//! Machine address ranges of device memory the hypervisor restricts even
//! for a domain with I/O rights: the interrupt controllers it drives (the
//! local APIC and its MSI window, the I/O APICs), which no domain maps,
//! and the HPET and PCI's memory-mapped configuration space (MMCFG), which
//! such a domain maps read-only, as on Xen (a writable MMCFG would let it
//! reprogram a device to DMA anywhere). Found at boot (MSRs, ACPI
//! MADT/HPET/MCFG); `mmu_update` on `DOMID_IO` frames checks them. A
//! kernel store that faults on such a read-only page is emulated as Xen
//! emulates it ([`read_only_write`]): a configuration write in MMCFG, a
//! write without effect anywhere else.
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;

use dom0_abi::memory::{E820_RESERVED, E820Entry};

use crate::layout::PAGE_SIZE;

/// Frame ranges, each `[first, end)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReservedMmio {
    ranges: Vec<(u64, u64)>,
}

impl ReservedMmio {
    /// Adds the bytes `[base, base + len)`, widened to whole frames (`len`
    /// 0 adds nothing).
    pub fn add(&mut self, base: u64, len: u64) {
        if len == 0 {
            return;
        }
        let first = base / PAGE_SIZE;
        let end = base.saturating_add(len).div_ceil(PAGE_SIZE);
        self.ranges.push((first, end));
    }

    /// Whether frame `mfn` lies in one of the ranges.
    pub fn contains(&self, mfn: u64) -> bool {
        self.ranges
            .iter()
            .any(|&(first, end)| (first..end).contains(&mfn))
    }

    /// The ranges, as frame numbers `[first, end)`.
    pub fn ranges(&self) -> &[(u64, u64)] {
        &self.ranges
    }
}

/// The machine frames a domain may map as device memory (Xen's
/// `iomem_caps`), as sorted, disjoint, non-adjacent inclusive runs
/// `[first, last]`. The hardware domain starts with every frame below the
/// physical address width but the hypervisor's own ([`ReservedMmio`]);
/// another domain with none, until `XEN_DOMCTL_iomem_permission` grants
/// it some of the caller's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IomemCaps {
    runs: Vec<(u64, u64)>,
}

/// Runs one domain's [`IomemCaps`] may hold: a grant that would split
/// them further is `ENOMEM` (Xen bounds its range sets too).
pub const MAX_IOMEM_RUNS: usize = 256;

impl IomemCaps {
    /// No frame.
    pub const fn none() -> IomemCaps {
        IomemCaps { runs: Vec::new() }
    }

    /// The hardware domain's: frames `0..frames` but the `reserved` ones.
    pub fn hardware_domain(frames: u64, reserved: &ReservedMmio) -> IomemCaps {
        let mut caps = IomemCaps::none();
        if frames > 0 {
            caps.runs.push((0, frames - 1));
        }
        for &(first, end) in reserved.ranges() {
            if end > first {
                caps.runs = caps.without(first, end - 1);
            }
        }
        caps
    }

    /// Whether no frame is permitted.
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// Whether every frame of `[first, last]` is permitted.
    pub fn permits(&self, first: u64, last: u64) -> bool {
        self.runs.iter().any(|&(a, b)| a <= first && last <= b)
    }

    /// Whether frame `mfn` is permitted.
    pub fn contains(&self, mfn: u64) -> bool {
        self.permits(mfn, mfn)
    }

    /// Permits `[first, last]` (`first <= last`). `ENOMEM` if that would
    /// take more than [`MAX_IOMEM_RUNS`] runs (nothing changes then).
    pub fn grant(&mut self, first: u64, last: u64) -> Result<(), dom0_abi::Errno> {
        let (mut lo, mut hi) = (first, last);
        let mut kept = Vec::with_capacity(self.runs.len() + 1);
        for &(a, b) in &self.runs {
            if b.saturating_add(1) < lo || hi.saturating_add(1) < a {
                kept.push((a, b));
            } else {
                lo = lo.min(a);
                hi = hi.max(b);
            }
        }
        if kept.len() >= MAX_IOMEM_RUNS {
            return Err(dom0_abi::Errno::ENOMEM);
        }
        let at = kept.partition_point(|&(a, _)| a < lo);
        kept.insert(at, (lo, hi));
        self.runs = kept;
        Ok(())
    }

    /// Stops permitting `[first, last]` (`first <= last`). `ENOMEM` if a
    /// run would split past [`MAX_IOMEM_RUNS`] (nothing changes then).
    pub fn revoke(&mut self, first: u64, last: u64) -> Result<(), dom0_abi::Errno> {
        let kept = self.without(first, last);
        if kept.len() > MAX_IOMEM_RUNS.max(self.runs.len()) {
            return Err(dom0_abi::Errno::ENOMEM);
        }
        self.runs = kept;
        Ok(())
    }

    /// The runs without `[first, last]`.
    fn without(&self, first: u64, last: u64) -> Vec<(u64, u64)> {
        let mut kept = Vec::with_capacity(self.runs.len() + 1);
        for &(a, b) in &self.runs {
            if b < first || last < a {
                kept.push((a, b));
                continue;
            }
            if a < first {
                kept.push((a, first - 1));
            }
            if last < b {
                kept.push((last + 1, b));
            }
        }
        kept
    }
}

/// The interrupt address window (`0xfee00000`-`0xfeefffff`): a write there
/// is an MSI, not memory, so no domain maps it (as on Xen).
pub const MSI_WINDOW: (u64, u64) = (0xfee0_0000, 0x10_0000);

/// The machine memory map the hardware domain is given
/// (`XENMEM_machine_memory_map`), as Xen builds it: the boot loader's
/// entries `e820` (sorted, not overlapping), and in each gap between them,
/// and after the last one below 2^`paddr_bits`, an `E820_RESERVED` entry
/// for each run of frames the domain may not map (`denied`, frame ranges
/// `[first, end)`), so that it never places a device there.
pub fn machine_map(e820: &[E820Entry], denied: &ReservedMmio, paddr_bits: u8) -> Vec<E820Entry> {
    let limit = 1u64.checked_shl(u32::from(paddr_bits)).unwrap_or(u64::MAX) / PAGE_SIZE;
    let mut runs: Vec<(u64, u64)> = denied.ranges().to_vec();
    runs.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (first, end) in runs {
        match merged.last_mut() {
            Some(last) if first <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((first, end)),
        }
    }
    let mut out = Vec::new();
    let reserve_gap = |out: &mut Vec<E820Entry>, gap_first: u64, gap_end: u64| {
        for &(first, end) in &merged {
            let (s, e) = (first.max(gap_first), end.min(gap_end).min(limit));
            if s < e {
                out.push(E820Entry {
                    addr: s * PAGE_SIZE,
                    size: (e - s) * PAGE_SIZE,
                    kind: E820_RESERVED,
                });
            }
        }
    };
    let mut next = 0;
    for entry in e820 {
        let first = entry.addr / PAGE_SIZE;
        if first > next {
            reserve_gap(&mut out, next, first);
        }
        out.push(*entry);
        next = entry.addr.saturating_add(entry.size).div_ceil(PAGE_SIZE);
    }
    if next > 0 {
        reserve_gap(&mut out, next, u64::MAX);
    }
    out
}

/// The bytes of an MMCFG region covering buses `start..=end`: 1 MiB per bus
/// (32 devices × 8 functions × 4 KiB).
pub fn mmcfg_len(start_bus: u8, end_bus: u8) -> u64 {
    (u64::from(end_bus.saturating_sub(start_bus)) + 1) << 20
}

/// One region of memory-mapped PCI configuration space (an ACPI MCFG
/// entry), covering buses `start_bus..=end_bus` of its segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mmcfg {
    /// The machine address of bus `start_bus`'s configuration space.
    pub base: u64,
    /// The first bus.
    pub start_bus: u8,
    /// The last bus.
    pub end_bus: u8,
}

impl Mmcfg {
    /// Whether frame `mfn` holds configuration space of this region.
    pub fn contains(&self, mfn: u64) -> bool {
        let first = self.base / PAGE_SIZE;
        let end = (self.base + mmcfg_len(self.start_bus, self.end_bus)) / PAGE_SIZE;
        (first..end).contains(&mfn)
    }
}

/// What becomes of a guest kernel's store that faulted on device memory
/// its domain maps read-only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadOnlyWrite {
    /// A PCI configuration write: the store's bytes go to machine address
    /// `address` in MMCFG.
    Config {
        /// Where, in an MMCFG region.
        address: u64,
    },
    /// The instruction completes and the store has no effect (the HPET,
    /// and any other read-only device memory).
    Dropped,
    /// Not emulated: the page fault goes to the guest.
    Refused,
}

/// Xen 4.17's emulation of a store of `width` bytes (1, 2, 4 or 8) at
/// `cr2` that faulted on the read-only mapping of device frame `mfn`
/// (`reads`: the instruction also reads its destination, as `cmpxchg`
/// does). Only a naturally aligned plain store is emulated; in an MMCFG
/// region of `mmcfg` it becomes a configuration write of at most 4 bytes,
/// elsewhere it is dropped. The hypervisor drives no PCI device and sets
/// up no MSI, so no device's registers are withheld from the hardware
/// domain (Xen withholds those of devices it uses itself).
pub fn read_only_write(
    mmcfg: &[Mmcfg],
    mfn: u64,
    cr2: u64,
    width: u8,
    reads: bool,
) -> ReadOnlyWrite {
    let bytes = u64::from(width);
    if reads || !width.is_power_of_two() || width > 8 || cr2 & (bytes - 1) != 0 {
        return ReadOnlyWrite::Refused;
    }
    if !mmcfg.iter().any(|region| region.contains(mfn)) {
        return ReadOnlyWrite::Dropped;
    }
    if width > 4 {
        return ReadOnlyWrite::Refused;
    }
    ReadOnlyWrite::Config {
        address: mfn * PAGE_SIZE + (cr2 & (PAGE_SIZE - 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iomem_caps_grant_revoke_and_merge() {
        let mut c = IomemCaps::none();
        assert!(c.is_empty() && !c.contains(0));
        c.grant(0xb8, 0xbf).unwrap();
        c.grant(0xc0, 0xc3).unwrap();
        assert_eq!(c.runs, [(0xb8, 0xc3)], "adjacent runs merge");
        c.grant(0x10, 0x10).unwrap();
        c.grant(0x100, 0x1ff).unwrap();
        assert_eq!(c.runs, [(0x10, 0x10), (0xb8, 0xc3), (0x100, 0x1ff)]);
        assert!(c.permits(0xb8, 0xc3) && !c.permits(0xb8, 0xc4));
        c.revoke(0xba, 0xba).unwrap();
        assert_eq!(
            c.runs,
            [(0x10, 0x10), (0xb8, 0xb9), (0xbb, 0xc3), (0x100, 0x1ff)]
        );
        c.revoke(0, u64::MAX).unwrap();
        assert!(c.is_empty());
        c.grant(u64::MAX, u64::MAX).unwrap();
        c.grant(0, 0).unwrap();
        assert!(c.contains(u64::MAX) && c.contains(0) && !c.contains(1));
    }

    #[test]
    fn hardware_domain_has_all_but_the_hypervisors_frames() {
        let mut reserved = ReservedMmio::default();
        reserved.add(0xfee0_0000, 0x1000);
        reserved.add(0xfec0_0000, 0x1000);
        let c = IomemCaps::hardware_domain(1 << 28, &reserved);
        assert!(c.contains(0) && c.contains(0xb8) && c.contains((1 << 28) - 1));
        assert!(!c.contains(0xfee00) && !c.contains(0xfec00) && !c.contains(1 << 28));
        assert!(c.permits(0xfec01, 0xfedff));
    }

    #[test]
    fn iomem_caps_stay_bounded() {
        let mut c = IomemCaps::none();
        for i in 0..MAX_IOMEM_RUNS as u64 {
            c.grant(2 * i, 2 * i).unwrap();
        }
        assert_eq!(c.grant(1_000_000, 1_000_000), Err(dom0_abi::Errno::ENOMEM));
        assert_eq!(c.grant(1, 1), Ok(()), "a merging grant still fits");
        let mut full = IomemCaps::none();
        full.grant(0, 10_000).unwrap();
        for i in 0..MAX_IOMEM_RUNS as u64 - 1 {
            full.revoke(2 * i + 1, 2 * i + 1).unwrap();
        }
        assert_eq!(full.revoke(9_000, 9_000), Err(dom0_abi::Errno::ENOMEM));
    }

    #[test]
    fn stores_on_read_only_device_memory() {
        let mmcfg = [Mmcfg {
            base: 0xb000_0000,
            start_bus: 0,
            end_bus: 255,
        }];
        let config = |address| ReadOnlyWrite::Config { address };
        // A byte, word and dword at their own alignment: configuration
        // writes at the same offset of the page's frame.
        assert_eq!(
            read_only_write(&mmcfg, 0xb00f8, 0xffff_c900_0000_103c, 1, false),
            config(0xb00f_803c)
        );
        assert_eq!(
            read_only_write(&mmcfg, 0xb0000, 0x7000_0004, 2, false),
            config(0xb000_0004)
        );
        assert_eq!(
            read_only_write(&mmcfg, 0xbffff, 0x7000_0ffc, 4, false),
            config(0xbfff_fffc)
        );
        // MMCFG stores misaligned, wider than a dword, or reading: the
        // guest's #PF. Other read-only device memory: aligned stores, 8
        // bytes too, are dropped; the rest is the guest's #PF.
        use ReadOnlyWrite::{Dropped, Refused};
        for (mfn, cr2, width, reads, want) in [
            (0xb0000, 0x3d, 2, false, Refused),
            (0xb0000, 0x3e, 4, false, Refused),
            (0xb0000, 0x38, 8, false, Refused),
            (0xb0000, 0x3c, 4, true, Refused),
            (0xfed00, 0x10, 8, false, Dropped),
            (0xc0000, 0xf0, 4, false, Dropped),
            (0xfed00, 0x12, 4, false, Refused),
            (0xfed00, 0x10, 3, false, Refused),
            (0xfed00, 0x10, 4, true, Refused),
        ] {
            assert_eq!(
                read_only_write(&mmcfg, mfn, cr2, width, reads),
                want,
                "{mfn:#x} {cr2:#x} {width}"
            );
        }
    }

    #[test]
    fn ranges_cover_whole_frames() {
        let mut r = ReservedMmio::default();
        r.add(0xfee0_0000, 0x1000);
        r.add(0xfed0_0000, 0x400);
        r.add(0xfec0_0010, 0x20);
        r.add(0xb000_0000, mmcfg_len(0, 255));
        r.add(0x1234_5000, 0);
        assert!(r.contains(0xfee00));
        assert!(!r.contains(0xfee01) && !r.contains(0xfedff));
        assert!(r.contains(0xfed00) && r.contains(0xfec00));
        assert!(r.contains(0xb0000) && r.contains(0xbffff) && !r.contains(0xc0000));
        assert!(!r.contains(0x12345));
        assert_eq!(r.ranges().len(), 4);
        assert_eq!(mmcfg_len(0, 0), 1 << 20);
        assert_eq!(mmcfg_len(5, 4), 1 << 20);
    }

    #[test]
    fn gaps_get_reserved_entries_for_what_dom0_may_not_map() {
        let ram = |addr: u64, size: u64| E820Entry {
            addr,
            size,
            kind: dom0_abi::memory::E820_RAM,
        };
        let reserved = |addr: u64, size: u64| E820Entry {
            addr,
            size,
            kind: E820_RESERVED,
        };
        // QEMU's map with 256 MiB, and what Xen 4.17 gave dom0 for it.
        let e820 = [
            ram(0, 0x9_fc00),
            reserved(0x9_fc00, 0x400),
            reserved(0xf_0000, 0x1_0000),
            ram(0x10_0000, 0xfed_f000),
            reserved(0xffd_f000, 0x2_1000),
            reserved(0xb000_0000, 0x1000_0000),
            reserved(0xfed1_c000, 0x4000),
            reserved(0xfffc_0000, 0x4_0000),
            reserved(0xfd_0000_0000, 0x3_0000_0000),
        ];
        let mut denied = ReservedMmio::default();
        denied.add(0xfec0_0000, 0x1000);
        denied.add(MSI_WINDOW.0, MSI_WINDOW.1);
        denied.add(0xfee0_0000, 0x1000);
        denied.add(0xb000_0000, 0x1000_0000);
        let map = machine_map(&e820, &denied, 40);
        let mut want = e820.to_vec();
        want.insert(6, reserved(0xfec0_0000, 0x1000));
        want.insert(8, reserved(0xfee0_0000, 0x10_0000));
        assert_eq!(map, want);
        // Nothing past the physical address width.
        denied.add(1 << 40, 0x1000);
        assert_eq!(machine_map(&e820, &denied, 40), want);
        assert_eq!(machine_map(&[], &denied, 40), []);
    }
}
