//! The machine address ranges the hypervisor keeps for itself even from a
//! domain with I/O rights: the interrupt controllers and timers it drives
//! (local APIC, I/O APICs, HPET) and PCI's memory-mapped configuration
//! space (MMCFG), through which a device could be made to DMA anywhere.
//! Found at boot (MSRs, ACPI MADT/HPET/MCFG); `mmu_update` on `DOMID_IO`
//! frames refuses any frame in them.
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;

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
}
