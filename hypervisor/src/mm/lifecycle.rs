//! The beginning and the end of a domain's life in the frame table.
//!
//! [`Mmu::install_initial_root`] is the last step of building a domain:
//! its bootstrap L4 is validated (with everything below it), pinned and
//! loaded, as Xen's dom0 builder leaves it (type count 2: the pin and the
//! vCPU's base pointer). Every frame the tables reference must have been
//! given to the domain first ([`Mmu::assign`] or
//! [`super::frame_table::FrameTable::share_xen_page`]), and page-table
//! frames must be mapped read-only.
//!
//! [`Mmu::teardown`] undoes, in order, everything that keeps the domain's
//! frames typed or referenced:
//!
//! 1. each vCPU's base pointers (`kernel_l4`, `user_l4`) and LDT;
//! 2. every pin (this devalidates the pinned tables, and the cascade
//!    devalidates every table below them: the reference graph has no
//!    cycles, even with linear page tables (whose chains are one step
//!    long), so all page-table types of the domain are gone once the roots
//!    and pins are);
//! 3. the hypervisor's permanent references on pages it shared with the
//!    domain (`shared_info`), and their permanent type;
//! 4. the allocation reference of every frame it owns.
//!
//! A frame whose count reaches 0 goes back to the allocator on the spot.
//! Frames still referenced from elsewhere (mapped by another domain, or a
//! descriptor-table type the CPU code has not dropped yet) stay owned by
//! the domain until their last reference goes, and are counted in
//! [`TeardownReport::remaining`].
#![forbid(unsafe_code)]

use dom0_abi::Errno;
use dom0_abi::types::{DomId, Mfn};

use super::frame_table::{FrameInfo, Owner, PageType};
use super::machine::{MmMachine, VcpuMm};
use super::types::Mmu;

/// What [`Mmu::teardown`] achieved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TeardownReport {
    /// Frames returned to the allocator.
    pub released: u64,
    /// Frames still owned by the domain because something else holds a
    /// reference to them.
    pub remaining: u64,
}

impl<M: MmMachine + ?Sized> Mmu<'_, M> {
    /// Validates, pins and loads `l4` as the first base pointer of `vcpu`
    /// of domain `dom`. Errors as [`Mmu::pin`]; nothing changes on error.
    pub fn install_initial_root(
        &mut self,
        dom: DomId,
        vcpu: &mut VcpuMm,
        l4: Mfn,
    ) -> Result<(), Errno> {
        self.pin(l4, PageType::L4, Owner::Domain(dom))?;
        if let Err(e) = self.replace_root(vcpu.kernel_l4, Some(l4), dom) {
            let _ = self.unpin(l4, Owner::Domain(dom));
            return Err(e);
        }
        vcpu.kernel_l4 = Some(l4);
        Ok(())
    }

    /// Releases every type and reference `dom` holds; `vcpus` are its
    /// vCPUs (their base pointers and LDTs are cleared). See the module
    /// documentation.
    pub fn teardown(&mut self, dom: DomId, vcpus: &mut [VcpuMm]) -> TeardownReport {
        let owner = Owner::Domain(dom);
        let before = self.owned_frames(owner);
        for vcpu in vcpus.iter_mut() {
            for root in [vcpu.kernel_l4.take(), vcpu.user_l4.take()]
                .into_iter()
                .flatten()
            {
                self.put_page_and_type(root);
            }
            vcpu.ldt_base = 0;
            vcpu.ldt_ents = 0;
        }
        self.for_each_owned(owner, |mmu, mfn| {
            if mmu.with_frame(mfn, FrameInfo::clear_pinned) {
                mmu.put_page_and_type(mfn);
            }
        });
        self.for_each_owned(owner, |mmu, mfn| {
            if mmu.with_frame(mfn, FrameInfo::clear_hv_ref) {
                mmu.put_page_type(mfn);
                mmu.put_page(mfn);
            }
        });
        self.for_each_owned(owner, |mmu, mfn| {
            if mmu.with_frame(mfn, FrameInfo::clear_allocated) {
                mmu.put_page(mfn);
            }
        });
        let remaining = self.owned_frames(owner);
        TeardownReport {
            released: before - remaining,
            remaining,
        }
    }

    /// Applies `f` to the record of `mfn` (false if the table lacks it).
    fn with_frame(&mut self, mfn: Mfn, f: impl FnOnce(&mut FrameInfo) -> bool) -> bool {
        crate::index::get_mut(self.machine.frames(), mfn.0).is_some_and(f)
    }

    /// Calls `f` for every frame owned by `owner` at the time it is
    /// reached.
    fn for_each_owned(&mut self, owner: Owner, mut f: impl FnMut(&mut Self, Mfn)) {
        let n = self.machine.frames().len();
        for i in 0..n {
            if self
                .machine
                .frames()
                .get(i)
                .is_some_and(|r| r.owner() == owner)
            {
                f(self, Mfn(u64::try_from(i).unwrap_or(u64::MAX)));
            }
        }
    }

    /// Frames owned by `owner`.
    pub fn owned_frames(&mut self, owner: Owner) -> u64 {
        let n = self
            .machine
            .frames()
            .iter()
            .filter(|r| r.owner() == owner)
            .count();
        u64::try_from(n).unwrap_or(u64::MAX)
    }
}
