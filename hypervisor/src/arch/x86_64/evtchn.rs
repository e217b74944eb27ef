//! The event-channel bits of a domain's shared_info page as
//! `crate::evtchn` uses them: atomic bit operations through the direct
//! map, because the guest changes the same words at any time (on any of
//! its vCPUs).
use core::mem::offset_of;
use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

extern crate alloc;

use alloc::boxed::Box;
use alloc::vec::Vec;
use dom0_abi::shared_info::{SharedInfo, VcpuInfo, XEN_LEGACY_MAX_VCPUS};
use dom0_abi::types::DomId;
use spin::Once;

use crate::evtchn::{EventBits, WORD_BITS};
use crate::index::bounded;

use super::paging::phys_to_virt;

/// Words in each of the pending and mask bitmaps.
const BITMAP_WORDS: usize = 64;

/// Where each domain's vCPUs moved their `vcpu_info` with
/// `VCPUOP_register_vcpu_info` (machine addresses; 0: still in the
/// shared_info page), by domain id and vCPU id.
static MOVED: Once<Box<[[AtomicU64; XEN_LEGACY_MAX_VCPUS]]>> = Once::new();

/// Sets up the table for domain ids below `max_domains`; once, at boot.
pub fn init_moved_vcpu_info(max_domains: usize) {
    MOVED.call_once(|| {
        let rows: Vec<[AtomicU64; XEN_LEGACY_MAX_VCPUS]> = (0..max_domains)
            .map(|_| core::array::from_fn(|_| AtomicU64::new(0)))
            .collect();
        rows.into_boxed_slice()
    });
}

/// The row of domain `dom`.
fn moved_row(dom: DomId) -> Option<&'static [AtomicU64; XEN_LEGACY_MAX_VCPUS]> {
    MOVED.get()?.get(usize::from(dom.0))
}

/// Records that vCPU `vcpu` of `dom` keeps its `vcpu_info` at machine
/// address `maddr` from now on (0: back in the shared_info page, as for a
/// domain being created).
pub fn set_moved_vcpu_info(dom: DomId, vcpu: u32, maddr: u64) {
    if let Some(slot) = moved_row(dom).and_then(|row| row.get(vcpu as usize)) {
        slot.store(maddr, Ordering::SeqCst);
    }
}

/// Forgets every moved `vcpu_info` of `dom` (a new domain with that id).
pub fn reset_moved_vcpu_info(dom: DomId) {
    if let Some(row) = moved_row(dom) {
        for slot in row {
            slot.store(0, Ordering::SeqCst);
        }
    }
}

/// A domain's shared_info page, by machine address (0: it has none, and
/// every bit reads as clear and ignores writes), and the vCPUs whose
/// upcall it newly raised (Xen's kicks: they wake a vCPU sleeping in
/// the hypervisor).
pub struct SharedInfoBits {
    maddr: u64,
    /// The domain's row of moved `vcpu_info`s.
    moved: Option<&'static [AtomicU64; XEN_LEGACY_MAX_VCPUS]>,
    /// Bit `n`: vCPU `n`'s `evtchn_upcall_pending` went from 0 to 1.
    kicked: u64,
    /// The vCPU not to record kicks for: the one making the call, awake
    /// by definition.
    awake: u32,
}

impl SharedInfoBits {
    /// The page at machine address `maddr` of domain `dom`, used by vCPU
    /// `awake` (whose kicks are not recorded).
    pub fn new(maddr: u64, dom: DomId, awake: u32) -> SharedInfoBits {
        SharedInfoBits {
            maddr,
            moved: moved_row(dom),
            kicked: 0,
            awake,
        }
    }

    /// The machine address of vCPU `vcpu`'s `vcpu_info`: where it moved
    /// it, or its slot in the shared_info page.
    #[inline(always)]
    fn vcpu_info_maddr(&self, vcpu: u32) -> Option<u64> {
        let slot = bounded(u64::from(vcpu), XEN_LEGACY_MAX_VCPUS)?;
        if self.maddr == 0 {
            return None;
        }
        let moved = self
            .moved
            .map_or(0, |row| row[slot].load(Ordering::Relaxed));
        if moved != 0 {
            return Some(moved);
        }
        Some(self.maddr + (offset_of!(SharedInfo, vcpu_info) + slot * size_of::<VcpuInfo>()) as u64)
    }

    /// The byte at `offset` of vCPU `vcpu`'s `vcpu_info`.
    #[inline(always)]
    fn vcpu_byte(&self, vcpu: u32, offset: usize) -> Option<&AtomicU8> {
        let at = phys_to_virt(self.vcpu_info_maddr(vcpu)? + offset as u64);
        // SAFETY: a `vcpu_info` lies in the domain's shared_info page (a
        // hypervisor-owned frame for the domain's life) or in a frame of
        // the domain that `register_vcpu_info` holds writable until the
        // domain goes, 8-aligned with its 64 bytes inside the frame; both
        // are in the direct map. `offset` names a one-byte field, which
        // the guest and the hypervisor only access atomically.
        Some(unsafe { AtomicU8::from_ptr(at as *mut u8) })
    }

    /// The 8-byte word at `offset` (8-aligned) of vCPU `vcpu`'s
    /// `vcpu_info`.
    fn vcpu_word(&self, vcpu: u32, offset: usize) -> Option<&AtomicU64> {
        let at = phys_to_virt(self.vcpu_info_maddr(vcpu)? + offset as u64);
        // SAFETY: as in `vcpu_byte`; `offset` names an 8-aligned word.
        Some(unsafe { AtomicU64::from_ptr(at as *mut u64) })
    }

    /// The 8-byte word at `offset` (8-aligned, inside the page).
    fn word(&self, offset: usize) -> Option<&AtomicU64> {
        if self.maddr == 0 {
            return None;
        }
        let at = phys_to_virt(self.maddr) + offset as u64;
        // SAFETY: shared_info is a hypervisor-owned frame for the domain's
        // whole life, mapped by the direct map; every caller passes an
        // 8-aligned offset inside its 3136 bytes; the guest and the
        // hypervisor only ever access these words atomically.
        Some(unsafe { AtomicU64::from_ptr(at as *mut u64) })
    }

    /// The word and bit of `port` in the bitmap at `base`.
    fn port_bit(&self, base: usize, port: u32) -> Option<(&AtomicU64, u64)> {
        let word = bounded(u64::from(port / WORD_BITS), BITMAP_WORDS)?;
        Some((self.word(base + word * 8)?, 1 << (port % WORD_BITS)))
    }
}

impl EventBits for SharedInfoBits {
    fn test_and_set_pending(&mut self, port: u32) -> bool {
        self.port_bit(offset_of!(SharedInfo, evtchn_pending), port)
            .is_some_and(|(w, bit)| w.fetch_or(bit, Ordering::SeqCst) & bit != 0)
    }
    fn clear_pending(&mut self, port: u32) {
        if let Some((w, bit)) = self.port_bit(offset_of!(SharedInfo, evtchn_pending), port) {
            w.fetch_and(!bit, Ordering::SeqCst);
        }
    }
    fn is_pending(&self, port: u32) -> bool {
        self.port_bit(offset_of!(SharedInfo, evtchn_pending), port)
            .is_some_and(|(w, bit)| w.load(Ordering::SeqCst) & bit != 0)
    }
    fn is_masked(&self, port: u32) -> bool {
        self.port_bit(offset_of!(SharedInfo, evtchn_mask), port)
            .is_some_and(|(w, bit)| w.load(Ordering::SeqCst) & bit != 0)
    }
    fn test_and_clear_mask(&mut self, port: u32) -> bool {
        self.port_bit(offset_of!(SharedInfo, evtchn_mask), port)
            .is_some_and(|(w, bit)| w.fetch_and(!bit, Ordering::SeqCst) & bit != 0)
    }
    fn test_and_set_selector(&mut self, vcpu: u32, word: u32) -> bool {
        let Some(sel) = self.vcpu_word(vcpu, offset_of!(VcpuInfo, evtchn_pending_sel)) else {
            return true;
        };
        let bit = 1u64 << (word % WORD_BITS);
        sel.fetch_or(bit, Ordering::SeqCst) & bit != 0
    }
    fn test_and_set_upcall_pending(&mut self, vcpu: u32) -> bool {
        let Some(byte) = self.vcpu_byte(vcpu, offset_of!(VcpuInfo, evtchn_upcall_pending)) else {
            return true;
        };
        let was = byte.swap(1, Ordering::SeqCst) != 0;
        if !was && vcpu != self.awake {
            // `vcpu` has a `vcpu_info` slot, so it is below 64.
            self.kicked |= 1 << (vcpu % 64);
        }
        was
    }
    fn upcall_pending(&self, vcpu: u32) -> bool {
        self.vcpu_byte(vcpu, offset_of!(VcpuInfo, evtchn_upcall_pending))
            .is_some_and(|b| b.load(Ordering::SeqCst) != 0)
    }
    fn upcall_masked(&self, vcpu: u32) -> bool {
        self.vcpu_byte(vcpu, offset_of!(VcpuInfo, evtchn_upcall_mask))
            .is_some_and(|b| b.load(Ordering::SeqCst) != 0)
    }
    fn set_upcall_mask(&mut self, vcpu: u32, masked: bool) {
        if let Some(b) = self.vcpu_byte(vcpu, offset_of!(VcpuInfo, evtchn_upcall_mask)) {
            b.store(u8::from(masked), Ordering::SeqCst);
        }
    }
    #[inline]
    fn take_kicked(&mut self) -> u64 {
        core::mem::take(&mut self.kicked)
    }
}
