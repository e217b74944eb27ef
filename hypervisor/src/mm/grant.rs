//! Grant mappings in a PV domain's own L1 tables (Xen's
//! `create_grant_pv_mapping` and `replace_grant_pv_mapping`).
//!
//! A grant host mapping is an ordinary L1 entry for the frame table's
//! accounting: the grant code takes the references such an entry holds
//! (one general reference, plus the writable type for a writable mapping)
//! before [`Mmu::install_grant_pte`] writes it, and drops them after
//! [`Mmu::remove_grant_pte`] took it out. So a granted frame mapped
//! writable can never become a page table while mapped, and a page table
//! torn down with a grant mapping still in it releases the frame like any
//! other entry.
#![forbid(unsafe_code)]

use dom0_abi::types::{DomId, Mfn};

use super::frame_table::{Owner, PageType};
use super::machine::MmMachine;
use super::pte;
use super::types::Mmu;

/// Where a grant mapping goes: a virtual address under the vCPU's L4, or
/// (`GNTMAP_contains_pte`) the machine address of the L1 entry itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PteAddr {
    /// A virtual address of the caller's, walked under this L4.
    Va {
        /// The vCPU's current L4.
        root: Mfn,
        /// The address.
        va: u64,
    },
    /// The machine address of an L1 entry.
    Machine(u64),
}

impl<M: MmMachine + ?Sized> Mmu<'_, M> {
    /// The L1 table and index `at` names, if it is an L1 table of `dom`
    /// in use. No reference is taken: the frame table is held for the
    /// whole hypercall, so the table cannot change type meanwhile.
    fn grant_l1(&mut self, dom: DomId, at: PteAddr) -> Option<(Mfn, usize)> {
        let (table, index) = match at {
            PteAddr::Va { root, va } => self.walk_to_l1(root, va)?,
            PteAddr::Machine(maddr) => {
                if maddr % 8 != 0 {
                    return None;
                }
                (Mfn(maddr >> 12), ((maddr & 0xFFF) / 8) as usize)
            }
        };
        self.frame(table)
            .is_some_and(|f| f.owner() == Owner::Domain(dom) && f.has_live_type(PageType::L1))
            .then_some((table, index))
    }

    /// Writes the grant entry `new` (whose references the caller holds)
    /// at `at` in an L1 table of `dom`, dropping what the old entry held.
    /// False (nothing written) if `at` is not an entry of such a table.
    pub fn install_grant_pte(&mut self, dom: DomId, at: PteAddr, new: u64) -> bool {
        let Some((table, index)) = self.grant_l1(dom, at) else {
            return false;
        };
        let old = self.machine.read_pte(table, index);
        self.machine.write_pte(table, index, new);
        self.put_page_from_l1e(old);
        true
    }

    /// Replaces the grant entry at `at` in an L1 table of `dom`, which
    /// must map `frame` present (and writable exactly when `writable`),
    /// with `replacement`; the caller then drops the references of the
    /// grant entry. False (nothing written) otherwise.
    pub fn remove_grant_pte(
        &mut self,
        dom: DomId,
        at: PteAddr,
        frame: Mfn,
        writable: bool,
        replacement: u64,
    ) -> bool {
        let Some((table, index)) = self.grant_l1(dom, at) else {
            return false;
        };
        let old = self.machine.read_pte(table, index);
        let matches =
            pte::is_present(old) && pte::frame(old) == frame && pte::is_writable(old) == writable;
        if matches {
            self.machine.write_pte(table, index, replacement);
        }
        matches
    }

    /// Takes the entry mapping `va` out of an L1 table of `dom` (Xen's
    /// `steal_linear_address`): it is cleared and returned with the
    /// references it holds. `None` if no such table maps `va`.
    pub fn steal_grant_pte(&mut self, dom: DomId, root: Mfn, va: u64) -> Option<u64> {
        let (table, index) = self.grant_l1(dom, PteAddr::Va { root, va })?;
        let old = self.machine.read_pte(table, index);
        self.machine.write_pte(table, index, 0);
        Some(old)
    }
}
