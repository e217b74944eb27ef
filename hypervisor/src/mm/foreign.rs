//! A machine that also answers for one domain taken out of the domain
//! table (or held apart from it): [`WithDomain`] lets the memory core
//! account pages of a domain whose state the caller holds itself, such
//! as a domain being destroyed.
#![forbid(unsafe_code)]

use dom0_abi::Errno;
use dom0_abi::types::{DomId, Mfn};

use super::frame_table::FrameInfo;
use super::machine::{DomainMm, MmMachine, PageTableMemory};

/// `machine`, with the memory state of domain `id` answered from `mm`.
pub struct WithDomain<'a, M: ?Sized> {
    machine: &'a mut M,
    id: DomId,
    mm: &'a mut DomainMm,
}

impl<'a, M: MmMachine + ?Sized> WithDomain<'a, M> {
    /// `machine`, answering for domain `id` with `mm`.
    pub fn new(machine: &'a mut M, id: DomId, mm: &'a mut DomainMm) -> WithDomain<'a, M> {
        WithDomain { machine, id, mm }
    }
}

impl<M: MmMachine + ?Sized> PageTableMemory for WithDomain<'_, M> {
    fn read_pte(&self, mfn: Mfn, index: usize) -> u64 {
        self.machine.read_pte(mfn, index)
    }
    fn write_pte(&mut self, mfn: Mfn, index: usize, value: u64) {
        self.machine.write_pte(mfn, index, value);
    }
    fn write_pte_preserve_ad(&mut self, mfn: Mfn, index: usize, value: u64) -> u64 {
        self.machine.write_pte_preserve_ad(mfn, index, value)
    }
    fn clear_page(&mut self, mfn: Mfn) {
        self.machine.clear_page(mfn);
    }
    fn copy_page(&mut self, dst: Mfn, src: Mfn) {
        self.machine.copy_page(dst, src);
    }
    fn cmpxchg_pte(&mut self, mfn: Mfn, index: usize, old: u64, new: u64) -> u64 {
        self.machine.cmpxchg_pte(mfn, index, old, new)
    }
    fn and_pte(&mut self, mfn: Mfn, index: usize, mask: u64) {
        self.machine.and_pte(mfn, index, mask);
    }
    fn copy_bytes(&mut self, dst: Mfn, dst_off: usize, src: Mfn, src_off: usize, len: usize) {
        self.machine.copy_bytes(dst, dst_off, src, src_off, len);
    }
}

impl<M: MmMachine + ?Sized> MmMachine for WithDomain<'_, M> {
    fn frames(&mut self) -> &mut [FrameInfo] {
        self.machine.frames()
    }
    fn alloc_frames(&mut self, order: u32, limit: u64) -> Option<Mfn> {
        self.machine.alloc_frames(order, limit)
    }
    fn free_frame(&mut self, mfn: Mfn) {
        self.machine.free_frame(mfn);
    }
    fn set_m2p(&mut self, mfn: Mfn, pfn: u64) {
        self.machine.set_m2p(mfn, pfn);
    }
    fn iomem_permitted(&self, dom: DomId, mfn: Mfn) -> bool {
        dom != self.id && self.machine.iomem_permitted(dom, mfn)
    }
    fn iomem_read_only(&self, mfn: Mfn) -> bool {
        self.machine.iomem_read_only(mfn)
    }
    fn set_cache_attr(&mut self, mfn: Mfn, attr: u8) -> Result<(), Errno> {
        self.machine.set_cache_attr(mfn, attr)
    }
    fn domain_mm(&mut self, dom: DomId) -> Option<&mut DomainMm> {
        if dom == self.id {
            return Some(self.mm);
        }
        self.machine.domain_mm(dom)
    }
    fn uncount_page(&mut self, dom: DomId) {
        if dom == self.id {
            self.mm.tot_pages = self.mm.tot_pages.saturating_sub(1);
        } else {
            self.machine.uncount_page(dom);
        }
    }
}
