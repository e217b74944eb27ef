//! Machine address ranges of device memory the hypervisor restricts even
//! for a domain with I/O rights: the interrupt controllers it drives (the
//! local APIC and its MSI window, the I/O APICs), which no domain maps,
//! and the HPET and PCI's memory-mapped configuration space (MMCFG), which
//! such a domain maps read-only, as on Xen (a writable MMCFG would let it
//! reprogram a device to DMA anywhere). Found at boot (MSRs, ACPI
//! MADT/HPET/MCFG); `mmu_update` on `DOMID_IO` frames checks them.
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

#[cfg(test)]
mod tests {
    use super::*;

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
