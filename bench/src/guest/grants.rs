//! Grant-table paths: a 4 KiB `GNTTABOP_copy` beside the same copy done
//! in the guest with `rep movsb`, and a map + unmap pair.
//!
//! The guest grants one of its own pages (the copy source) to itself at
//! reference [`GREF`] in the first frame of its table, mapped over the
//! first of its grant pages. The map benchmark maps the grant over the
//! second page and unmaps it again; afterwards both pages get their
//! original mappings back.

use guest_pv_shim::dom0_abi::grant_table::{
    GNTCOPY_SOURCE_GREF, GntmapFlags, GnttabCopy, GnttabCopyPtr, GnttabMapGrantRef, GnttabOp,
    GnttabSetupTable, GnttabUnmapGrantRef, GtfFlags,
};
use guest_pv_shim::dom0_abi::mmu::UvmfFlags;
use guest_pv_shim::dom0_abi::types::DomId;
use guest_pv_shim::report;

use crate::guest::asm::{grant_pages_va, rep_movsb};
use crate::guest::harness::{Harness, Measured, NotRun, failed, not_run};
use crate::guest::hc;
use crate::guest::pagetable::PageTables;

/// Bytes per page.
const PAGE: u64 = 4096;
/// The grant reference used (above the reserved 0-7).
const GREF: u32 = 8;
/// This guest's domain id (it boots as dom0).
const ME: u16 = 0;

/// The guest's grant pages: their addresses and original entries.
pub struct GrantPages {
    table: u64,
    map: u64,
    src: u64,
    dst: u64,
    dst_mfn: u64,
    table_pte: u64,
    map_pte: u64,
}

impl GrantPages {
    /// Sets the table up, maps its first frame and grants the source page
    /// to this domain.
    ///
    /// # Errors
    /// `Unsupported` without grant tables; `Failed` otherwise.
    pub fn prepare(pt: &PageTables, name: &str) -> Result<GrantPages, NotRun> {
        let base = grant_pages_va();
        let [table, map, src, dst] = [0, 1, 2, 3].map(|i| base + i * PAGE);
        let (Ok(table_pte), Ok(map_pte), Some(src_mfn), Some(dst_mfn)) = (
            pt.entry(table, 1),
            pt.entry(map, 1),
            pt.mfn_of(src),
            pt.mfn_of(dst),
        ) else {
            return Err(failed(
                name,
                "the grant pages are not in the initial mapping",
            ));
        };
        let mut frame = [0u64; 1];
        let mut setup = [GnttabSetupTable {
            dom: DomId::SELF.0,
            nr_frames: 1,
            frame_list: frame.as_mut_ptr() as u64,
            ..GnttabSetupTable::default()
        }];
        // SAFETY: the hypervisor writes `setup`'s status and `frame`.
        let ret = unsafe { hc::grant_table_op(GnttabOp::SetupTable, &mut setup) };
        if ret != 0 || setup[0].status != 0 {
            return Err(not_run(
                name,
                "grant_table_op(setup_table)",
                ret.min(i64::from(setup[0].status)),
            ));
        }
        let window = (frame[0] << 12) | (table_pte.value & 0xFFF);
        // SAFETY: the table page is this image's `.bss` and holds nothing;
        // it now shows the table frame instead.
        let ret = unsafe { hc::update_va_mapping(table, window, UvmfFlags::INVLPG.bits()) };
        if ret != 0 {
            return Err(not_run(name, "update_va_mapping (table)", ret));
        }
        let entry = table + u64::from(GREF) * 8;
        // SAFETY: the entry lies in the mapped table frame; frame, then
        // domid and flags, as a granter writes them.
        unsafe {
            ((entry + 4) as *mut u32).write_volatile(u32::try_from(src_mfn).unwrap_or(0));
            (entry as *mut u32)
                .write_volatile((u32::from(ME) << 16) | u32::from(GtfFlags::PERMIT_ACCESS.bits()));
        }
        Ok(GrantPages {
            table,
            map,
            src,
            dst,
            dst_mfn,
            table_pte: table_pte.value,
            map_pte: map_pte.value,
        })
    }

    /// Gives both pages their original mappings back; checks it.
    pub fn restore(&self) {
        // SAFETY: the original entries of two `.bss` pages that hold no
        // Rust object.
        let rets = unsafe {
            [
                hc::update_va_mapping(self.table, self.table_pte, UvmfFlags::INVLPG.bits()),
                hc::update_va_mapping(self.map, self.map_pte, UvmfFlags::INVLPG.bits()),
            ]
        };
        report::check_eq("grant pages mapped as before", rets, [0, 0]);
    }
}

/// `grant_copy_4k`: one `GNTTABOP_copy` of a whole page from the grant to
/// the destination page (by frame).
pub fn copy(h: &Harness, pages: &GrantPages, name: &str) -> Result<Measured, NotRun> {
    let mut op = [GnttabCopy {
        source: GnttabCopyPtr {
            u: u64::from(GREF),
            domid: DomId::SELF.0,
            offset: 0,
            pad: 0,
        },
        dest: GnttabCopyPtr {
            u: pages.dst_mfn,
            domid: DomId::SELF.0,
            offset: 0,
            pad: 0,
        },
        len: 4096,
        flags: GNTCOPY_SOURCE_GREF,
        ..GnttabCopy::default()
    }];
    h.time(
        name,
        "grant_table_op(copy)",
        // SAFETY: the copy writes the destination page, which holds no
        // Rust object, and `op`'s status.
        || match unsafe { hc::grant_table_op(GnttabOp::Copy, &mut op) } {
            0 => i64::from(op[0].status),
            err => err,
        },
        |ret| ret == 0,
    )
}

/// `rep_movsb_4k`: the same page copied by the guest itself.
pub fn rep_movsb_4k(h: &Harness, pages: &GrantPages, name: &str) -> Result<Measured, NotRun> {
    h.time(
        name,
        "rep movsb",
        || {
            // SAFETY: two distinct `.bss` pages mapped read-write that hold
            // no Rust object.
            unsafe { rep_movsb(pages.dst, pages.src, PAGE) };
            0
        },
        |ret| ret == 0,
    )
}

/// `grant_map_unmap`: the grant mapped over the map page, then unmapped.
pub fn map_unmap(h: &Harness, pages: &GrantPages, name: &str) -> Result<Measured, NotRun> {
    let mut map = [GnttabMapGrantRef {
        host_addr: pages.map,
        flags: GntmapFlags::HOST_MAP.bits(),
        gref: GREF,
        dom: ME,
        ..GnttabMapGrantRef::default()
    }];
    let mut unmap = [GnttabUnmapGrantRef {
        host_addr: pages.map,
        ..GnttabUnmapGrantRef::default()
    }];
    h.time(
        name,
        "grant_table_op(map_grant_ref)",
        || {
            // SAFETY: maps the grant over the map page, which holds no
            // Rust object (its own mapping is restored at the end).
            match unsafe { hc::grant_table_op(GnttabOp::MapGrantRef, &mut map) } {
                0 if map[0].status == 0 => {
                    unmap[0].handle = map[0].handle;
                    // SAFETY: removes the mapping just made.
                    match unsafe { hc::grant_table_op(GnttabOp::UnmapGrantRef, &mut unmap) } {
                        0 => i64::from(unmap[0].status),
                        err => err,
                    }
                }
                0 => i64::from(map[0].status),
                err => err,
            }
        },
        |ret| ret == 0,
    )
}
