//! `grant_table_op(cmd, uop, count)` (20): grant tables v1 as Xen 4.17
//! answers a PV domain (`xen/common/grant_table.c`,
//! `xen/arch/x86/pv/grant_table.c`), over [`crate::gnttab`].
//!
//! The call returns 0 when it ran (or a continuation); each operation's
//! own result is its `status` (`GNTST_*`). Call-level errors: `EINVAL` a
//! negative `count`, continuation bits in `cmd` (above bit 11), or a
//! `count` other than 1 for `setup_table`, `query_size` and
//! `get_status_frames`; `EFAULT` an argument that cannot be read or a
//! status that cannot be written; `ENOSYS` `dump_table`, `transfer`,
//! `cache_flush` and unknown operations.
//!
//! | op | here |
//! |---|---|
//! | `map_grant_ref` | host (`GNTMAP_host_map`, by VA or `contains_pte`) and device mappings, read-only or writable, `application_map`, the guest's available bits |
//! | `unmap_grant_ref`, `unmap_and_replace` | by handle; the PTE must still map the frame |
//! | `setup_table`, `query_size` | frames shared with the domain, grown up to `max_grant_frames` |
//! | `copy` | each side a grant reference or (own domain only) a frame |
//! | `set_version`, `get_version`, `get_status_frames` | version 1 only (Xen with `gnttab=max_ver:1`) |
//! | `swap_grant_ref` | two entries of the caller's table |
//!
//! Who may call: any domain, on its own table; `setup_table`,
//! `query_size`, `get_version` and `get_status_frames` on another
//! domain's need privilege (`GNTST_permission_denied`, or `EPERM` for
//! `get_version`). Batches of maps, unmaps, copies and swaps are
//! continued every [`CHUNK`] operations.
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::boxed::Box;
use alloc::vec::Vec;

use dom0_abi::Errno;
use dom0_abi::event_channel::Virq;
use dom0_abi::grant_table::{
    GNTCOPY_DEST_GREF, GNTCOPY_SOURCE_GREF, GNTMAP_GUEST_AVAIL_SHIFT, GNTTABOP_CMD_MASK,
    GntmapFlags, GnttabCopy, GnttabCopyPtr, GnttabGetStatusFrames, GnttabGetVersion,
    GnttabMapGrantRef, GnttabOp, GnttabQuerySize, GnttabSetVersion, GnttabSetupTable,
    GnttabSwapGrantRef, GnttabUnmapAndReplace, GnttabUnmapGrantRef, GrantStatus,
};
use dom0_abi::layout::guest_addr_ok;
use dom0_abi::types::{DomId, Mfn};
use dom0_abi::wire::Wire;

use super::domctl::ControlEnv;
use super::mmu::low32;
use super::{read_struct, write_struct};
use crate::gnttab::{GrantTable, MAX_VERSION, PinRequest, pin_incr};
use crate::mm::effects::Effects;
use crate::mm::frame_table::{FrameTable, Owner, PageType};
use crate::mm::grant::PteAddr;
use crate::mm::pte;
use crate::mm::types::Mmu;

/// Operations of a batch done per invocation before it is continued.
pub const CHUNK: u32 = 64;
/// Bytes of a page.
const PAGE: u32 = 4096;
/// The NX bit of a PTE.
const PTE_NX: u64 = 1 << 63;
/// The user bit of a PTE.
const PTE_USER: u64 = 1 << 2;
/// The three available bits (9-11) of a PTE.
const PTE_AVAIL_SHIFT: u32 = 9;

/// `grant_table_op(cmd, uop, count)`; see the module documentation.
pub fn grant_table_op(
    env: &mut impl ControlEnv,
    fx: &mut Effects,
    cmd: u64,
    uop: u64,
    count: u64,
) -> Result<u64, Errno> {
    let count = low32(count);
    if count.cast_signed() < 0 {
        return Err(Errno::EINVAL);
    }
    let cmd = low32(cmd);
    let op = GnttabOp::from_number(u64::from(cmd & GNTTABOP_CMD_MASK));
    if op != Some(GnttabOp::CacheFlush) && cmd & !GNTTABOP_CMD_MASK != 0 {
        return Err(Errno::EINVAL);
    }
    let Some(op) = op else {
        return Err(Errno::ENOSYS);
    };
    let args = Batch { cmd, uop, count };
    match op {
        GnttabOp::MapGrantRef => args.run(env, |env, at| {
            let mut op: GnttabMapGrantRef = read_struct(env, at)?;
            match map_grant(env, fx, &op) {
                Ok((handle, mfn)) => {
                    op.handle = handle;
                    op.dev_bus_addr = mfn.maddr();
                    op.status = GrantStatus::Okay as i16;
                }
                Err(s) => op.status = s as i16,
            }
            write_struct(env, at, &op)
        }),
        GnttabOp::UnmapGrantRef => args.run(env, |env, at| {
            let op: GnttabUnmapGrantRef = read_struct(env, at)?;
            let unmap = Unmap {
                host_addr: op.host_addr,
                dev_bus_addr: op.dev_bus_addr,
                new_addr: 0,
                handle: op.handle,
            };
            let status = unmap_grant(env, fx, unmap).unwrap_or(op.status);
            write_status(env, at, GnttabUnmapGrantRef::SIZE - 4, status)
        }),
        GnttabOp::UnmapAndReplace => args.run(env, |env, at| {
            let op: GnttabUnmapAndReplace = read_struct(env, at)?;
            let unmap = Unmap {
                host_addr: op.host_addr,
                dev_bus_addr: 0,
                new_addr: op.new_addr,
                handle: op.handle,
            };
            let status = unmap_grant(env, fx, unmap).unwrap_or(op.status);
            write_status(env, at, GnttabUnmapAndReplace::SIZE - 4, status)
        }),
        GnttabOp::Copy => args.run(env, |env, at| {
            let op: GnttabCopy = read_struct(env, at)?;
            let status = copy(env, fx, &op) as i16;
            write_status(env, at, 36, status)
        }),
        GnttabOp::SwapGrantRef => args.run(env, |env, at| {
            let op: GnttabSwapGrantRef = read_struct(env, at)?;
            let id = env.domain().id;
            let status = with_table(env, id, |env, gt| gt.swap(env, op.ref_a, op.ref_b))
                .unwrap_or(Err(GrantStatus::GeneralError))
                .err()
                .unwrap_or(GrantStatus::Okay);
            write_status(env, at, 8, status as i16)
        }),
        GnttabOp::SetupTable => {
            if count != 1 {
                return Err(Errno::EINVAL);
            }
            setup_table(env, uop)
        }
        GnttabOp::QuerySize => {
            if count != 1 {
                return Err(Errno::EINVAL);
            }
            query_size(env, uop)
        }
        GnttabOp::SetVersion => set_version(env, uop),
        GnttabOp::GetVersion => get_version(env, uop),
        GnttabOp::GetStatusFrames => {
            if count != 1 {
                return Err(Errno::EINVAL);
            }
            get_status_frames(env, uop)
        }
        GnttabOp::DumpTable | GnttabOp::Transfer | GnttabOp::CacheFlush => Err(Errno::ENOSYS),
    }
}

/// A batch of `count` structures at `uop`.
struct Batch {
    cmd: u32,
    uop: u64,
    count: u32,
}

impl Batch {
    /// Runs `one` on each structure's address in turn; continues the call
    /// after [`CHUNK`], and from the structure that found another domain's
    /// slot busy (run again, whatever it wrote: `Env::slot_busy`).
    /// `EFAULT` if the array does not start in guest space (Xen's
    /// `guest_handle_okay`) or `one` fails.
    fn run<E: ControlEnv>(
        &self,
        env: &mut E,
        mut one: impl FnMut(&mut E, u64) -> Result<(), Errno>,
    ) -> Result<u64, Errno> {
        let size = u64::try_from(op_size(self.cmd)).unwrap_or(0);
        if !guest_addr_ok(self.uop) {
            return Err(Errno::EFAULT);
        }
        for i in 0..self.count {
            let at = self.uop.wrapping_add(u64::from(i) * size);
            if i == CHUNK {
                return Ok(self.continue_at(env, i, at));
            }
            let done = one(env, at);
            if env.slot_busy() {
                return Ok(self.continue_at(env, i, at));
            }
            done?;
        }
        Ok(0)
    }

    /// Continues the batch from its structure `i`, at `at`.
    fn continue_at(&self, env: &mut impl ControlEnv, i: u32, at: u64) -> u64 {
        env.preempt([u64::from(self.cmd), at, u64::from(self.count - i), 0, 0]);
        0
    }
}

/// The size of one structure of a batch operation.
fn op_size(cmd: u32) -> usize {
    match GnttabOp::from_number(u64::from(cmd)) {
        Some(GnttabOp::MapGrantRef) => GnttabMapGrantRef::SIZE,
        Some(GnttabOp::UnmapGrantRef) => GnttabUnmapGrantRef::SIZE,
        Some(GnttabOp::UnmapAndReplace) => GnttabUnmapAndReplace::SIZE,
        Some(GnttabOp::Copy) => GnttabCopy::SIZE,
        Some(GnttabOp::SwapGrantRef) => GnttabSwapGrantRef::SIZE,
        _ => 0,
    }
}

/// Writes a 16-bit status at `offset` in the structure at `at`.
fn write_status(
    env: &mut impl ControlEnv,
    at: u64,
    offset: usize,
    status: i16,
) -> Result<(), Errno> {
    env.copy_to_guest(at + offset as u64, &status.to_le_bytes())
}

// ---- domains and their tables ----

/// Whether domain `id` exists (Xen's `rcu_lock_domain_by_id`; a dying
/// domain still does).
fn exists(env: &mut impl ControlEnv, id: DomId) -> bool {
    id == env.domain().id || env.other_domain(id).is_some()
}

/// Xen's `rcu_lock_domain_by_any_id`: `DOMID_SELF` or an existing domain.
fn any_id(env: &mut impl ControlEnv, dom: u16) -> Option<DomId> {
    let id = if DomId(dom) == DomId::SELF {
        env.domain().id
    } else {
        DomId(dom)
    };
    exists(env, id).then_some(id)
}

/// Xen's `XSM_TARGET`: the caller itself, or privilege.
fn may_act_on(env: &mut impl ControlEnv, id: DomId) -> bool {
    id == env.domain().id || env.domain().is_privileged()
}

/// Whether domain `id` is dying (destroyed, some frames still in use).
fn dying(env: &mut impl ControlEnv, id: DomId) -> bool {
    if id == env.domain().id {
        return env.domain().dying;
    }
    env.other_domain(id).is_some_and(|entry| entry.domain.dying)
}

/// The domain a table operation names (`DOMID_SELF` or an id):
/// `bad_domain` if none, `permission_denied` if another and the caller
/// lacks privilege.
fn target(env: &mut impl ControlEnv, dom: u16) -> Result<DomId, GrantStatus> {
    let d = any_id(env, dom).ok_or(GrantStatus::BadDomain)?;
    if may_act_on(env, d) {
        Ok(d)
    } else {
        Err(GrantStatus::PermissionDenied)
    }
}

/// Domain `id`'s grant table.
fn table(env: &mut impl ControlEnv, id: DomId) -> Option<&mut Option<Box<GrantTable>>> {
    if id == env.domain().id {
        return Some(&mut env.domain().grant);
    }
    env.other_domain(id).map(|entry| &mut entry.domain.grant)
}

/// Runs `f` on domain `id`'s grant table, taken out of the domain for the
/// time (so that `f` has the machine too), after giving the table its
/// first frame if it has none yet (Xen allocates it with the domain).
/// `None` if there is no such domain.
fn with_table<E: ControlEnv, R>(
    env: &mut E,
    id: DomId,
    f: impl FnOnce(&mut E, &mut GrantTable) -> R,
) -> Option<R> {
    let mut gt = table(env, id)?.take()?;
    if gt.nr_frames() == 0 && !dying(env, id) {
        grow(env, id, &mut gt, 1);
    }
    let result = f(env, &mut gt);
    if let Some(slot) = table(env, id)
        && slot.is_none()
    {
        *slot = Some(gt);
    }
    Some(result)
}

/// Grows `gt`, domain `id`'s table, to `want` shared frames; false if
/// memory runs out.
fn grow(env: &mut impl ControlEnv, id: DomId, gt: &mut GrantTable, want: u32) -> bool {
    while gt.nr_frames() < want.min(gt.max_frames()) {
        let Some(mfn) = env.alloc_frames(0, u64::MAX) else {
            return false;
        };
        if FrameTable::new(env.frames())
            .share_xen_page(mfn, Owner::Domain(id), true)
            .is_err()
        {
            env.free_frame(mfn);
            return false;
        }
        gt.add_frame(mfn);
    }
    gt.nr_frames() >= want
}

/// Whether `mfn` is a RAM frame owned by `dom` (Xen's `get_paged_frame`
/// for a PV domain: otherwise `GNTST_bad_page`).
fn owned_frame(env: &mut impl ControlEnv, gfn: u64, dom: DomId) -> Result<Mfn, GrantStatus> {
    let owned = crate::index::get(env.frames(), gfn)
        .is_some_and(|f| f.owner() == Owner::Domain(dom) && f.count() != 0);
    if owned {
        Ok(Mfn(gfn))
    } else {
        Err(GrantStatus::BadPage)
    }
}

// ---- map ----

/// `map_grant_ref` of one entry: returns the handle and the frame.
fn map_grant(
    env: &mut impl ControlEnv,
    fx: &mut Effects,
    op: &GnttabMapGrantRef,
) -> Result<(u32, Mfn), GrantStatus> {
    let flags = GntmapFlags::from_bits_retain(op.flags);
    let ro = flags.contains(GntmapFlags::READONLY);
    let incr = pin_incr(
        flags.contains(GntmapFlags::HOST_MAP),
        flags.contains(GntmapFlags::DEVICE_MAP),
        ro,
    );
    if incr == 0 {
        return Err(GrantStatus::BadGntref);
    }
    let ld = env.domain().id;
    let rd = DomId(op.dom);
    if !exists(env, rd) {
        return Err(GrantStatus::BadDomain);
    }
    let handle = with_table(env, ld, |_, gt| gt.get_handle())
        .flatten()
        .ok_or(GrantStatus::NoSpace)?;
    let req = PinRequest {
        user: ld,
        incr,
        readonly: ro,
        map: true,
    };
    let pinned = with_table(env, rd, |env, gt| {
        gt.pin(env, op.gref, req, |env, gfn| owned_frame(env, gfn, rd))
    })
    .unwrap_or(Err(GrantStatus::BadDomain));
    let result = pinned.and_then(|(mfn, _)| {
        take_map_refs(env, fx, ld, rd, mfn, flags, op.host_addr)?;
        Ok(mfn)
    });
    match result {
        Ok(mfn) => {
            with_table(env, ld, |_, gt| {
                if let Some(m) = gt.mapping_mut(handle) {
                    m.flags = op.flags;
                    m.domid = rd;
                    m.gref = op.gref;
                }
            });
            Ok((handle, mfn))
        }
        Err(status) => {
            if pinned.is_ok() {
                with_table(env, rd, |env, gt| gt.unpin(env, op.gref, incr, ro));
            }
            with_table(env, ld, |_, gt| gt.put_handle(handle));
            Err(status)
        }
    }
}

/// The PTE of a host mapping of `mfn` (Xen's `grant_to_pte_flags`).
fn grant_pte(env: &impl ControlEnv, mfn: Mfn, flags: GntmapFlags) -> u64 {
    let mut entry = mfn.maddr() | pte::PRESENT | pte::ACCESSED | pte::DIRTY;
    if env.host().nx {
        entry |= PTE_NX;
    }
    if flags.contains(GntmapFlags::APPLICATION_MAP) {
        entry |= PTE_USER;
    }
    if !flags.contains(GntmapFlags::READONLY) {
        entry |= pte::RW;
    }
    entry | (u64::from((flags.bits() >> GNTMAP_GUEST_AVAIL_SHIFT) & 7) << PTE_AVAIL_SHIFT)
}

/// Where a mapping's PTE is: `host_addr` as a VA of the caller's, or the
/// machine address of the entry (`GNTMAP_contains_pte`).
fn pte_addr(env: &mut impl ControlEnv, flags: GntmapFlags, host_addr: u64) -> Option<PteAddr> {
    if flags.contains(GntmapFlags::CONTAINS_PTE) {
        return Some(PteAddr::Machine(host_addr));
    }
    let root = env.vcpu_mm().kernel_l4?;
    Some(PteAddr::Va {
        root,
        va: host_addr,
    })
}

/// The references a mapping of `mfn` (owned by `rd`) holds, as Xen takes
/// them: one per mapping kind, plus the writable type for each writable
/// one; a host mapping's PTE is then written. `general_error` if the
/// frame cannot be referenced or typed writable (a page table, a
/// descriptor table) or the PTE cannot be written.
fn take_map_refs(
    env: &mut impl ControlEnv,
    fx: &mut Effects,
    ld: DomId,
    rd: DomId,
    mfn: Mfn,
    flags: GntmapFlags,
    host_addr: u64,
) -> Result<(), GrantStatus> {
    let ro = flags.contains(GntmapFlags::READONLY);
    let host = flags.contains(GntmapFlags::HOST_MAP);
    let device = flags.contains(GntmapFlags::DEVICE_MAP);
    let pte_value = grant_pte(env, mfn, flags);
    let at = pte_addr(env, flags, host_addr);
    let owner = Owner::Domain(rd);
    let mut mmu = Mmu::new(env, fx);
    let (mut refs, mut types) = (0, 0);
    let mut ok = mmu.get_page(mfn, owner);
    if ok {
        refs += 1;
    }
    if ok && device && !ro {
        ok = mmu.get_page_type(mfn, PageType::Writable).is_ok();
        types += u32::from(ok);
    }
    if ok && host {
        if device {
            ok = mmu.get_page(mfn, owner);
            refs += u32::from(ok);
        }
        if ok && !ro {
            ok = mmu.get_page_type(mfn, PageType::Writable).is_ok();
            types += u32::from(ok);
        }
        ok = ok && at.is_some_and(|at| mmu.install_grant_pte(ld, at, pte_value));
    }
    if ok {
        return Ok(());
    }
    for _ in 0..types {
        mmu.put_page_type(mfn);
    }
    for _ in 0..refs {
        mmu.put_page(mfn);
    }
    Err(GrantStatus::GeneralError)
}

// ---- unmap ----

/// One unmap request.
#[derive(Clone, Copy)]
struct Unmap {
    host_addr: u64,
    dev_bus_addr: u64,
    new_addr: u64,
    handle: u32,
}

/// `unmap_grant_ref` / `unmap_and_replace` of one mapping (Xen's
/// `unmap_common` and `unmap_common_complete`). `None`: the granting
/// domain no longer exists, and the caller is crashed, as on Xen (the
/// status is left as it was).
fn unmap_grant(env: &mut impl ControlEnv, fx: &mut Effects, op: Unmap) -> Option<i16> {
    let ld = env.domain().id;
    let found = with_table(env, ld, |_, gt| {
        (op.handle < gt.maptrack_limit())
            .then(|| gt.mapping_mut(op.handle).copied())
            .flatten()
    })
    .flatten();
    let Some(map) = found.filter(|m| m.flags != 0) else {
        return Some(GrantStatus::BadHandle as i16);
    };
    let rd = map.domid;
    if !exists(env, rd) {
        // A slot held elsewhere is no answer: the operation is run again.
        fx.crash |= !env.slot_busy();
        return None;
    }
    let Some(act) = with_table(env, rd, |_, gt| gt.active(map.gref)).flatten() else {
        return Some(GrantStatus::BadHandle as i16);
    };
    let flags = GntmapFlags::from_bits_retain(map.flags);
    let ro = flags.contains(GntmapFlags::READONLY);
    let device = flags.contains(GntmapFlags::DEVICE_MAP);
    if op.dev_bus_addr != 0 && device && op.dev_bus_addr != act.mfn.maddr() {
        return Some(GrantStatus::BadDevAddr as i16);
    }
    let mut done = GntmapFlags::empty();
    if op.host_addr != 0 && flags.contains(GntmapFlags::HOST_MAP) {
        if !remove_host_pte(env, fx, ld, flags, op, act.mfn) {
            return Some(GrantStatus::GeneralError as i16);
        }
        done |= GntmapFlags::HOST_MAP;
    }
    if op.dev_bus_addr != 0 && device {
        done |= GntmapFlags::DEVICE_MAP;
    }
    let left = flags.bits() & !done.bits();
    with_table(env, ld, |_, gt| {
        if left & (GntmapFlags::HOST_MAP | GntmapFlags::DEVICE_MAP).bits() == 0 {
            gt.put_handle(op.handle);
        } else if let Some(m) = gt.mapping_mut(op.handle) {
            m.flags = left;
        }
    });
    if done.is_empty() {
        return Some(GrantStatus::Okay as i16);
    }
    if done.contains(GntmapFlags::HOST_MAP) {
        fx.flush.domain.add_full();
    }
    let mut mmu = Mmu::new(env, fx);
    let mut decr = 0;
    if done.contains(GntmapFlags::DEVICE_MAP) {
        if !ro {
            mmu.put_page_type(act.mfn);
        }
        mmu.put_page(act.mfn);
        decr += pin_incr(false, true, ro);
    }
    if done.contains(GntmapFlags::HOST_MAP) {
        if !ro {
            mmu.put_page_type(act.mfn);
        }
        mmu.put_page(act.mfn);
        decr += pin_incr(true, false, ro);
    }
    with_table(env, rd, |env, gt| gt.unpin(env, map.gref, decr, ro));
    if rd != ld && dying(env, rd) {
        free_if_unused(env, fx, rd);
    }
    Some(GrantStatus::Okay as i16)
}

/// A destroyed domain kept only because others mapped its frames (Xen's
/// zombie) goes away with its last frame, and dom0 hears of it again
/// through `VIRQ_DOM_EXC`, as from Xen's final domain destruction.
fn free_if_unused(env: &mut impl ControlEnv, fx: &mut Effects, id: DomId) {
    if Mmu::new(env, fx).owned_frames(Owner::Domain(id)) != 0 || env.remove_domain(id).is_none() {
        return;
    }
    log::info!("d{}: its last frame came back, the domain is gone", id.0);
    if env.domain().id == DomId::DOM0 {
        let (channels, bits) = env.event_channels();
        channels.send_virq(bits, Virq::DomExc, 0);
    } else if let Some(pair) = env.event_channels_of(DomId::DOM0) {
        pair.peer.send_virq(pair.peer_bits, Virq::DomExc, 0);
    } else if env.slot_busy() {
        // The domain is gone: nothing to run again for a busy dom0.
        env.clear_slot_busy();
        env.take_preempted();
        env.owe_dom_exc();
    }
}

/// Takes the host mapping's PTE out (Xen's `replace_grant_pv_mapping`):
/// with `new_addr`, the entry mapping `new_addr` moves there (VA form
/// only). False, nothing changed (but a moved entry is dropped, as on
/// Xen), if the PTE does not map `mfn` with the mapping's access.
fn remove_host_pte(
    env: &mut impl ControlEnv,
    fx: &mut Effects,
    ld: DomId,
    flags: GntmapFlags,
    op: Unmap,
    mfn: Mfn,
) -> bool {
    let contains_pte = flags.contains(GntmapFlags::CONTAINS_PTE);
    if contains_pte && op.new_addr != 0 {
        return false;
    }
    let Some(at) = pte_addr(env, flags, op.host_addr) else {
        return false;
    };
    let mut mmu = Mmu::new(env, fx);
    let replacement = if op.new_addr == 0 {
        0
    } else {
        let PteAddr::Va { root, .. } = at else {
            return false;
        };
        match mmu.steal_grant_pte(ld, root, op.new_addr) {
            Some(stolen) => stolen,
            None => return false,
        }
    };
    let writable = !flags.contains(GntmapFlags::READONLY);
    let done = mmu.remove_grant_pte(ld, at, mfn, writable, replacement);
    if !done {
        mmu.put_page_from_l1e(replacement);
    }
    done
}

// ---- copy ----

/// One side of a copy, claimed.
struct CopyBuf {
    dom: DomId,
    gref: Option<u32>,
    mfn: Mfn,
    readonly: bool,
    typed: bool,
}

/// `copy` of one operation.
fn copy(env: &mut impl ControlEnv, fx: &mut Effects, op: &GnttabCopy) -> GrantStatus {
    let src_gref = op.flags & GNTCOPY_SOURCE_GREF != 0;
    let dst_gref = op.flags & GNTCOPY_DEST_GREF != 0;
    // Both sides are held from here on, their slots taken in id order
    // before anything is looked at: releasing one after the other was
    // looked up cannot find its slot busy (the operation would be run
    // again with its pin taken). Busy now: run again, nothing done. A
    // side that does not exist is answered below.
    let own = env.domain().id;
    let side = |domid: u16| {
        if DomId(domid) == DomId::SELF {
            own
        } else {
            DomId(domid)
        }
    };
    if !env.hold_two(side(op.source.domid), side(op.dest.domid)) && env.slot_busy() {
        return GrantStatus::GeneralError;
    }
    let src_dom = match copy_domain(env, op.source.domid, src_gref) {
        Ok(d) => d,
        Err(s) => return s,
    };
    let dst_dom = match copy_domain(env, op.dest.domid, dst_gref) {
        Ok(d) => d,
        Err(s) => return s,
    };
    let src = match claim(env, fx, src_dom, &op.source, src_gref, true) {
        Ok(b) => b,
        Err(s) => return s,
    };
    let dst = match claim(env, fx, dst_dom, &op.dest, dst_gref, false) {
        Ok(b) => b,
        Err(s) => {
            release(env, fx, &src);
            return s;
        }
    };
    let len = u32::from(op.len);
    let status =
        if u32::from(op.source.offset) + len > PAGE || u32::from(op.dest.offset) + len > PAGE {
            GrantStatus::BadCopyArg
        } else {
            env.copy_bytes(
                dst.mfn,
                usize::from(op.dest.offset),
                src.mfn,
                usize::from(op.source.offset),
                usize::from(op.len),
            );
            GrantStatus::Okay
        };
    release(env, fx, &dst);
    release(env, fx, &src);
    status
}

/// A copy side's domain: a frame may only be named in the caller's own
/// domain, as `DOMID_SELF` (`permission_denied`); `bad_domain` if none.
fn copy_domain(env: &mut impl ControlEnv, domid: u16, gref: bool) -> Result<DomId, GrantStatus> {
    if !gref && DomId(domid) != DomId::SELF {
        return Err(GrantStatus::PermissionDenied);
    }
    any_id(env, domid).ok_or(GrantStatus::BadDomain)
}

/// Xen's `gnttab_copy_claim_buf`: pins the grant (or checks the frame is
/// the domain's: `bad_page`), takes a reference, and for the destination
/// the writable type (`general_error` if the frame is typed otherwise).
fn claim(
    env: &mut impl ControlEnv,
    fx: &mut Effects,
    dom: DomId,
    ptr: &GnttabCopyPtr,
    is_gref: bool,
    readonly: bool,
) -> Result<CopyBuf, GrantStatus> {
    let caller = env.domain().id;
    let (mfn, gref) = if is_gref {
        let gref = low32(ptr.u);
        let req = PinRequest {
            user: caller,
            incr: pin_incr(true, false, readonly),
            readonly,
            map: false,
        };
        let (mfn, _) = with_table(env, dom, |env, gt| {
            gt.pin(env, gref, req, |env, gfn| owned_frame(env, gfn, dom))
        })
        .unwrap_or(Err(GrantStatus::BadDomain))?;
        (mfn, Some(gref))
    } else {
        (owned_frame(env, ptr.u, dom)?, None)
    };
    let mut buf = CopyBuf {
        dom,
        gref,
        mfn,
        readonly,
        typed: false,
    };
    if !Mmu::new(env, fx).get_page(mfn, Owner::Domain(dom)) {
        if let Some(gref) = gref {
            with_table(env, dom, |env, gt| {
                gt.unpin(env, gref, req_incr(readonly), readonly);
            });
        }
        return Err(if is_gref {
            GrantStatus::BadDomain
        } else {
            GrantStatus::BadPage
        });
    }
    if !readonly {
        if Mmu::new(env, fx)
            .get_page_type(mfn, PageType::Writable)
            .is_err()
        {
            release(env, fx, &buf);
            return Err(GrantStatus::GeneralError);
        }
        buf.typed = true;
    }
    Ok(buf)
}

/// The pin a copy side holds.
const fn req_incr(readonly: bool) -> u32 {
    pin_incr(true, false, readonly)
}

/// Gives back what [`claim`] took.
fn release(env: &mut impl ControlEnv, fx: &mut Effects, buf: &CopyBuf) {
    if let Some(gref) = buf.gref {
        with_table(env, buf.dom, |env, gt| {
            gt.unpin(env, gref, req_incr(buf.readonly), buf.readonly);
        });
    }
    let mut mmu = Mmu::new(env, fx);
    if buf.typed {
        mmu.put_page_type(buf.mfn);
    }
    mmu.put_page(buf.mfn);
}

// ---- table set-up and queries ----

/// `setup_table`: grows the domain's table to `nr_frames` (never shrinks
/// it) and writes the frames' MFNs. Statuses: `bad_domain`,
/// `permission_denied` (another domain, unprivileged), `general_error`
/// (above `max_grant_frames`, or no memory), `bad_virt_addr` (a frame
/// that cannot be written). Only `status` is written back.
fn setup_table(env: &mut impl ControlEnv, uop: u64) -> Result<u64, Errno> {
    let op: GnttabSetupTable = read_struct(env, uop)?;
    if !guest_addr_ok(op.frame_list) {
        return Err(Errno::EFAULT);
    }
    let status = match target(env, op.dom) {
        Err(status) => status,
        Ok(d) => with_table(env, d, |env, gt| {
            if op.nr_frames > gt.max_frames() || !grow(env, d, gt, op.nr_frames) {
                return GrantStatus::GeneralError;
            }
            let mut status = GrantStatus::Okay;
            let frames: Vec<Mfn> = gt
                .frames()
                .iter()
                .take(op.nr_frames as usize)
                .copied()
                .collect();
            for (i, mfn) in (0u64..).zip(frames) {
                let at = op.frame_list.wrapping_add(i * 8);
                if env.copy_to_guest(at, &mfn.0.to_le_bytes()).is_err() {
                    status = GrantStatus::BadVirtAddr;
                }
            }
            status
        })
        .unwrap_or(GrantStatus::BadDomain),
    };
    write_status(env, uop, 8, status as i16)?;
    Ok(0)
}

/// `query_size`: the table's frames and limit. Statuses `bad_domain`,
/// `permission_denied`; the whole structure is written back.
fn query_size(env: &mut impl ControlEnv, uop: u64) -> Result<u64, Errno> {
    let mut op: GnttabQuerySize = read_struct(env, uop)?;
    op.status = match target(env, op.dom) {
        Err(status) => status,
        Ok(d) => with_table(env, d, |_, gt| {
            op.nr_frames = gt.nr_frames();
            op.max_nr_frames = gt.max_frames();
            GrantStatus::Okay
        })
        .unwrap_or(GrantStatus::BadDomain),
    } as i16;
    write_struct(env, uop, &op)?;
    Ok(0)
}

/// `set_version`: 1 is the version in force (0); 2 is `ENOSYS` (v2 is not
/// offered, as Xen with `gnttab=max_ver:1`); anything else `EINVAL`. The
/// version in force is written back in every case.
fn set_version(env: &mut impl ControlEnv, uop: u64) -> Result<u64, Errno> {
    let mut op: GnttabSetVersion = read_struct(env, uop)?;
    let result = match op.version {
        1 => Ok(0),
        2 => Err(Errno::ENOSYS),
        _ => Err(Errno::EINVAL),
    };
    op.version = MAX_VERSION;
    write_struct(env, uop, &op)?;
    result
}

/// `get_version`: `ESRCH` no such domain, `EPERM` another domain without
/// privilege; writes `version`.
fn get_version(env: &mut impl ControlEnv, uop: u64) -> Result<u64, Errno> {
    let op: GnttabGetVersion = read_struct(env, uop)?;
    let d = any_id(env, op.dom).ok_or(Errno::ESRCH)?;
    if !may_act_on(env, d) {
        return Err(Errno::EPERM);
    }
    env.copy_to_guest(uop + 4, &MAX_VERSION.to_le_bytes())?;
    Ok(0)
}

/// `get_status_frames`: a v1 table has no status frames, so any
/// `nr_frames` but 0 is `general_error`; `bad_domain`,
/// `permission_denied` as `setup_table`. Only `status` is written.
fn get_status_frames(env: &mut impl ControlEnv, uop: u64) -> Result<u64, Errno> {
    let op: GnttabGetStatusFrames = read_struct(env, uop)?;
    if !guest_addr_ok(op.frame_list) {
        return Err(Errno::EFAULT);
    }
    let status = match target(env, op.dom) {
        Err(status) => status,
        Ok(_) if op.nr_frames > 0 => GrantStatus::GeneralError,
        Ok(_) => GrantStatus::Okay,
    };
    write_status(env, uop, 6, status as i16)?;
    Ok(0)
}

// ---- teardown ----

/// A domain's grant state at its destruction (Xen's
/// `gnttab_release_mappings`): every mapping it holds of a grant gives
/// up its pins in the granter's table (its host mappings' references go
/// with its page tables; its device mappings' are returned in `device`,
/// for the caller to drop), and its own table forgets its frames, which
/// the frame table releases with its other shared pages. `own` is the
/// dying domain's table, already out of the domain table.
pub fn release_mappings(
    env: &mut impl ControlEnv,
    id: DomId,
    own: &mut GrantTable,
) -> Vec<(Mfn, bool)> {
    let mut device = Vec::new();
    let maps: Vec<_> = own.mappings().map(|(_, m)| m).collect();
    for m in maps {
        let flags = GntmapFlags::from_bits_retain(m.flags);
        let ro = flags.contains(GntmapFlags::READONLY);
        let host = flags.contains(GntmapFlags::HOST_MAP);
        let dev = flags.contains(GntmapFlags::DEVICE_MAP);
        let decr = pin_incr(host, dev, ro);
        let mfn = if m.domid == id {
            let mfn = own.active(m.gref).map(|a| a.mfn);
            own.unpin(env, m.gref, decr, ro);
            mfn
        } else {
            with_table(env, m.domid, |env, gt| {
                let mfn = gt.active(m.gref).map(|a| a.mfn);
                gt.unpin(env, m.gref, decr, ro);
                mfn
            })
            .flatten()
        };
        if let (true, Some(mfn)) = (dev, mfn) {
            device.push((mfn, !ro));
        }
    }
    own.release();
    device
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gnttab::encode;
    use crate::mm::fake::{BASE, DOM, FakeMachine};
    use dom0_abi::grant_table::{GrantEntryV1, GtfFlags};

    const VA: u64 = 0xFFFF_FFFF_8020_3000;
    const OP: u64 = BASE + 0x100;
    const LIST: u64 = BASE + 0x800;

    /// dom0 on a loaded L4 mapping `VA`; its table set up; a data frame
    /// granted to itself (read-only if `ro`) at reference 8.
    fn setup(ro: bool) -> (FakeMachine, Mfn, Mfn, Mfn) {
        let mut m = FakeMachine::new(64);
        let data = m.give(DOM);
        let t = m.build_tables(DOM, VA, data);
        m.with(|mmu| mmu.pin(t[0], PageType::L4, Owner::Domain(DOM)))
            .0
            .unwrap();
        m.with(|mmu| mmu.replace_root(None, Some(t[0]), DOM))
            .0
            .unwrap();
        m.vcpu.kernel_l4 = Some(t[0]);
        let granted = m.give(DOM);
        let op = GnttabSetupTable {
            dom: DomId::SELF.0,
            nr_frames: 1,
            frame_list: LIST,
            ..GnttabSetupTable::default()
        };
        assert_eq!(call(&mut m, 2, &op, 1), Ok(0));
        assert_eq!(peek_i16(&m, OP + 8), 0);
        let table = Mfn(m.peek_u64(LIST));
        let mut flags = GtfFlags::PERMIT_ACCESS;
        flags.set(GtfFlags::READONLY, ro);
        let entry = GrantEntryV1 {
            flags: flags.bits(),
            domid: DOM.0,
            frame: u32::try_from(granted.0).unwrap(),
        };
        m.set(table, 8, encode(entry));
        (m, t[3], table, granted)
    }

    fn call<T: Wire>(m: &mut FakeMachine, cmd: u64, op: &T, count: u64) -> Result<u64, Errno> {
        let mut bytes = alloc::vec![0u8; T::SIZE];
        op.to_wire(&mut bytes).unwrap();
        m.poke(OP, &bytes);
        let mut fx = Effects::default();
        grant_table_op(m, &mut fx, cmd, OP, count)
    }

    fn map(m: &mut FakeMachine, flags: GntmapFlags, gref: u32, dom: u16) -> GnttabMapGrantRef {
        let op = GnttabMapGrantRef {
            host_addr: VA,
            flags: flags.bits(),
            gref,
            dom,
            ..GnttabMapGrantRef::default()
        };
        assert_eq!(call(m, 0, &op, 1), Ok(0));
        let mut raw = [0u8; 32];
        raw.iter_mut()
            .enumerate()
            .for_each(|(i, b)| *b = m.guest[usize::try_from(OP - BASE).unwrap() + i]);
        GnttabMapGrantRef::from_wire(&raw).unwrap()
    }

    fn unmap(m: &mut FakeMachine, handle: u32, host_addr: u64) -> i16 {
        let op = GnttabUnmapGrantRef {
            host_addr,
            handle,
            ..GnttabUnmapGrantRef::default()
        };
        assert_eq!(call(m, 1, &op, 1), Ok(0));
        peek_i16(m, OP + 20)
    }

    fn gtf(m: &FakeMachine, table: Mfn) -> GtfFlags {
        GtfFlags::from_bits_retain(crate::gnttab::decode(m.get(table, 8)).flags)
    }

    fn peek_i16(m: &FakeMachine, va: u64) -> i16 {
        let i = usize::try_from(va - BASE).unwrap();
        i16::from_le_bytes([m.guest[i], m.guest[i + 1]])
    }

    fn roots(m: &FakeMachine) -> Vec<Mfn> {
        m.vcpu.kernel_l4.into_iter().collect()
    }

    #[test]
    fn map_read_write_and_unmap() {
        let (mut m, l1, table, granted) = setup(false);
        let host = GntmapFlags::HOST_MAP;
        let done = map(&mut m, host, 8, DOM.0);
        assert_eq!(done.status, 0);
        assert_eq!((done.handle, done.dev_bus_addr), (0, granted.maddr()));
        assert_eq!(
            gtf(&m, table),
            GtfFlags::PERMIT_ACCESS | GtfFlags::READING | GtfFlags::WRITING
        );
        let entry = m.get(l1, pte::table_index(VA, 1));
        assert_eq!(pte::frame(entry), granted);
        assert!(pte::is_writable(entry) && entry & PTE_NX != 0);
        assert_eq!(m.info(granted).page_type(), PageType::Writable);
        m.check_invariants(&roots(&m));
        // A writable grant mapping keeps the frame from becoming a table.
        let pinned = m.with(|mmu| mmu.pin(granted, PageType::L1, Owner::Domain(DOM)));
        assert!(pinned.0.is_err());
        // A second, read-only mapping elsewhere... by contains_pte.
        let at = (l1.0 << 12) | (8 * 300);
        let op = GnttabMapGrantRef {
            host_addr: at,
            flags: (host | GntmapFlags::READONLY | GntmapFlags::CONTAINS_PTE).bits() | (5 << 16),
            gref: 8,
            dom: DOM.0,
            ..GnttabMapGrantRef::default()
        };
        assert_eq!(call(&mut m, 0, &op, 1), Ok(0));
        assert_eq!(m.peek_u32(OP + 20), 1, "handle 1");
        assert_eq!(m.get(l1, 300) & 0xFFF, 0x1 | 0x20 | 0x40 | (5 << 9));
        m.check_invariants(&roots(&m));
        assert_eq!(unmap(&mut m, 0, VA), 0);
        assert_eq!(gtf(&m, table), GtfFlags::PERMIT_ACCESS | GtfFlags::READING);
        assert_eq!(unmap(&mut m, 0, VA), GrantStatus::BadHandle as i16);
        let op = GnttabUnmapGrantRef {
            host_addr: at,
            handle: 1,
            ..GnttabUnmapGrantRef::default()
        };
        assert_eq!(call(&mut m, 1, &op, 1), Ok(0));
        assert_eq!(peek_i16(&m, OP + 20), 0);
        assert_eq!(gtf(&m, table), GtfFlags::PERMIT_ACCESS);
        assert_eq!(m.get(l1, 300), 0);
        m.check_invariants(&roots(&m));
        let pinned = m.with(|mmu| mmu.pin(granted, PageType::L1, Owner::Domain(DOM)));
        assert!(pinned.0.is_ok(), "unmapped: the frame may become a table");
    }

    #[test]
    fn map_refusals() {
        let (mut m, _, table, _) = setup(true);
        let host = GntmapFlags::HOST_MAP;
        let status =
            |m: &mut FakeMachine, f: GntmapFlags, gref: u32, dom: u16| map(m, f, gref, dom).status;
        assert_eq!(
            status(&mut m, GntmapFlags::READONLY, 8, 0),
            GrantStatus::BadGntref as i16
        );
        assert_eq!(
            status(&mut m, host, 8, DomId::SELF.0),
            GrantStatus::BadDomain as i16
        );
        assert_eq!(status(&mut m, host, 512, 0), GrantStatus::BadGntref as i16);
        assert_eq!(status(&mut m, host, 9, 0), GrantStatus::GeneralError as i16);
        assert_eq!(
            status(&mut m, host, 8, 0),
            GrantStatus::GeneralError as i16,
            "r/o grant"
        );
        assert_eq!(gtf(&m, table), GtfFlags::PERMIT_ACCESS | GtfFlags::READONLY);
        let op = GnttabMapGrantRef {
            host_addr: 0x1000,
            flags: (host | GntmapFlags::READONLY).bits(),
            gref: 8,
            ..GnttabMapGrantRef::default()
        };
        assert_eq!(call(&mut m, 0, &op, 1), Ok(0));
        assert_eq!(
            m.peek_u32(OP + 16) >> 16,
            GrantStatus::GeneralError as u16 as u32
        );
        assert_eq!(
            gtf(&m, table),
            GtfFlags::PERMIT_ACCESS | GtfFlags::READONLY,
            "undone"
        );
        m.check_invariants(&roots(&m));
    }

    /// 8 bytes from offset 24 of the caller's grant 8 to offset 8 of its
    /// frame `own`.
    fn grant_to_frame(own: Mfn) -> GnttabCopy {
        GnttabCopy {
            source: GnttabCopyPtr {
                u: 8,
                domid: DomId::SELF.0,
                offset: 24,
                pad: 0,
            },
            dest: GnttabCopyPtr {
                u: own.0,
                domid: DomId::SELF.0,
                offset: 8,
                pad: 0,
            },
            len: 8,
            flags: GNTCOPY_SOURCE_GREF,
            ..GnttabCopy::default()
        }
    }

    #[test]
    fn a_copy_batch_continues_at_the_copy_that_found_a_busy_slot() {
        let (mut m, _, _, granted) = setup(false);
        m.set(granted, 3, 0x1122_3344_5566_7788);
        let own = m.give(DOM);
        let copy = |domid: u16| {
            let mut op = grant_to_frame(own);
            op.source.domid = domid;
            op.status = 0x55;
            op
        };
        let mut bytes = alloc::vec![0u8; 3 * GnttabCopy::SIZE];
        for (chunk, domid) in
            bytes
                .chunks_exact_mut(GnttabCopy::SIZE)
                .zip([DomId::SELF.0, 5, DomId::SELF.0])
        {
            copy(domid).to_wire(chunk).unwrap();
        }
        m.poke(OP, &bytes);
        m.busy.insert(5);
        let mut fx = Effects::default();
        assert_eq!(grant_table_op(&mut m, &mut fx, 5, OP, 3), Ok(0));
        let second = OP + GnttabCopy::SIZE as u64;
        assert_eq!(m.preempted.take(), Some([5, second, 2, 0, 0]));
        assert!(!m.slot_busy, "taken care of by the batch");
        assert_eq!(peek_i16(&m, OP + 36), 0, "the first copy is done");
        assert_eq!(m.get(own, 1), 0x1122_3344_5566_7788);
        assert_eq!(
            peek_i16(&m, second + GnttabCopy::SIZE as u64 + 36),
            0x55,
            "the third is not reached"
        );
    }

    /// Domain `id` among the fake's other domains, its table set up by
    /// dom0, granting domain 6 a frame of its at reference 8: (frame,
    /// table).
    fn granting_to_six(m: &mut FakeMachine, id: u16) -> (Mfn, Mfn) {
        use crate::domain::{Domain, DomainEntry};
        let entry = DomainEntry::new(Domain::domu(DomId(id), [7; 16], 1, 1023, 0x5000));
        m.others.insert(id, alloc::boxed::Box::new(entry));
        let frame = m.give(DomId(id));
        let s = GnttabSetupTable {
            dom: id,
            nr_frames: 1,
            frame_list: LIST,
            ..GnttabSetupTable::default()
        };
        assert_eq!(call(m, 2, &s, 1), Ok(0));
        assert_eq!(peek_i16(m, OP + 8), 0);
        let table = Mfn(m.peek_u64(LIST));
        let entry = GrantEntryV1 {
            flags: GtfFlags::PERMIT_ACCESS.bits(),
            domid: 6,
            frame: u32::try_from(frame.0).unwrap(),
        };
        m.set(table, 8, encode(entry));
        (frame, table)
    }

    /// Domain 6 copies from domain 5's grant to domain 7's: 5's slot is
    /// lower than the caller's, and another CPU waits for it. Both sides
    /// are held from the start, so the copy is done at once and both pins
    /// are given back; with 5 busy from the start, nothing is done and
    /// the copy runs again.
    #[test]
    fn a_copy_between_two_other_domains_holds_both_sides() {
        let mut m = FakeMachine::new(64);
        let (src, src_table) = granting_to_six(&mut m, 5);
        let (dst, dst_table) = granting_to_six(&mut m, 7);
        m.set(src, 3, 0x1122_3344_5566_7788);
        let mm = m.domains[&crate::mm::fake::OTHER.0];
        m.domains.insert(6, mm);
        m.domain.id = DomId(6);
        let side = |domid: u16, offset: u16| GnttabCopyPtr {
            u: 8,
            domid,
            offset,
            pad: 0,
        };
        let op = GnttabCopy {
            source: side(5, 24),
            dest: side(7, 8),
            len: 8,
            flags: GNTCOPY_SOURCE_GREF | GNTCOPY_DEST_GREF,
            ..GnttabCopy::default()
        };
        m.entry_args = [5, OP, 1, 0, 0];
        m.busy.insert(5);
        assert_eq!(call(&mut m, 5, &op, 1), Ok(0));
        assert_eq!(m.preempted.take(), Some([5, OP, 1, 0, 0]), "run again");
        assert_eq!(m.get(dst, 1), 0);
        m.busy.clear();
        m.taken_when_released.insert(5);
        assert_eq!(call(&mut m, 5, &op, 1), Ok(0));
        assert_eq!(m.preempted, None, "done at once");
        assert!(!m.slot_busy);
        assert_eq!(peek_i16(&m, OP + 36), 0);
        assert_eq!(m.get(dst, 1), 0x1122_3344_5566_7788);
        for table in [src_table, dst_table] {
            assert_eq!(gtf(&m, table), GtfFlags::PERMIT_ACCESS, "unpinned");
        }
    }

    #[test]
    fn a_zombie_goes_whole_when_dom0_is_busy() {
        use crate::domain::{Domain, DomainEntry};
        let mut m = FakeMachine::new(16);
        m.domain.id = DomId(3);
        let mut zombie = DomainEntry::new(Domain::domu(DomId(7), [7; 16], 1, 1023, 0x5000));
        zombie.domain.dying = true;
        m.others.insert(7, alloc::boxed::Box::new(zombie));
        let dom0 = DomainEntry::new(Domain::dom0(1, 0));
        m.others.insert(0, alloc::boxed::Box::new(dom0));
        m.busy.insert(0);
        m.entry_args = [1, OP, 1, 0, 0];
        let mut fx = Effects::default();
        free_if_unused(&mut m, &mut fx, DomId(7));
        assert!(!m.others.contains_key(&7), "gone");
        assert_eq!(m.preempted, None, "not run again");
        assert!(!m.slot_busy);
        assert!(m.dom_exc_owed, "dom0 hears of it later");
    }

    #[test]
    fn copies() {
        let (mut m, _, table, granted) = setup(false);
        m.set(granted, 3, 0x1122_3344_5566_7788);
        let own = m.give(DOM);
        let mut op = grant_to_frame(own);
        let status = |m: &mut FakeMachine, op: &GnttabCopy| {
            assert_eq!(call(m, 5, op, 1), Ok(0));
            peek_i16(m, OP + 36)
        };
        assert_eq!(status(&mut m, &op), 0);
        assert_eq!(m.get(own, 1), 0x1122_3344_5566_7788);
        assert_eq!(
            gtf(&m, table),
            GtfFlags::PERMIT_ACCESS,
            "flags cleared after the copy"
        );
        op.len = 4090;
        assert_eq!(status(&mut m, &op), GrantStatus::BadCopyArg as i16);
        op.len = 8;
        op.dest.domid = DOM.0;
        assert_eq!(status(&mut m, &op), GrantStatus::PermissionDenied as i16);
        op.dest.domid = DomId::SELF.0;
        op.dest.u = u64::from(u32::MAX);
        assert_eq!(status(&mut m, &op), GrantStatus::BadPage as i16);
        op.dest.u = m.vcpu.kernel_l4.map_or(0, |r| r.0);
        assert_eq!(
            status(&mut m, &op),
            GrantStatus::GeneralError as i16,
            "a page table"
        );
        op.dest.u = own.0;
        op.source.u = 600;
        assert_eq!(status(&mut m, &op), GrantStatus::BadGntref as i16);
        op.source.domid = 0x7000;
        assert_eq!(status(&mut m, &op), GrantStatus::BadDomain as i16);
        // Into the grant, from the own frame.
        op.source = GnttabCopyPtr {
            u: own.0,
            domid: DomId::SELF.0,
            offset: 8,
            pad: 0,
        };
        op.dest = GnttabCopyPtr {
            u: 8,
            domid: DomId::SELF.0,
            offset: 0,
            pad: 0,
        };
        op.flags = GNTCOPY_DEST_GREF;
        assert_eq!(status(&mut m, &op), 0);
        assert_eq!(m.get(granted, 0), 0x1122_3344_5566_7788);
        m.check_invariants(&roots(&m));
    }

    #[test]
    fn table_queries_and_versions() {
        let (mut m, _, _, _) = setup(false);
        let q = GnttabQuerySize {
            dom: DomId::SELF.0,
            ..GnttabQuerySize::default()
        };
        assert_eq!(call(&mut m, 6, &q, 1), Ok(0));
        assert_eq!((m.peek_u32(OP + 4), m.peek_u32(OP + 8)), (1, 64));
        assert_eq!(call(&mut m, 6, &q, 2), Err(Errno::EINVAL));
        let s = GnttabSetupTable {
            dom: 0,
            nr_frames: 65,
            frame_list: LIST,
            ..GnttabSetupTable::default()
        };
        assert_eq!(call(&mut m, 2, &s, 1), Ok(0));
        assert_eq!(peek_i16(&m, OP + 8), GrantStatus::GeneralError as i16);
        let s = GnttabSetupTable { nr_frames: 3, ..s };
        assert_eq!(call(&mut m, 2, &s, 1), Ok(0));
        assert_eq!(peek_i16(&m, OP + 8), 0);
        assert_eq!(call(&mut m, 6, &q, 1), Ok(0));
        assert_eq!(m.peek_u32(OP + 4), 3);
        let s = GnttabSetupTable { dom: 0x7000, ..s };
        assert_eq!(call(&mut m, 2, &s, 1), Ok(0));
        assert_eq!(peek_i16(&m, OP + 8), GrantStatus::BadDomain as i16);
        for (version, want) in [(1, Ok(0)), (2, Err(Errno::ENOSYS)), (3, Err(Errno::EINVAL))] {
            assert_eq!(call(&mut m, 8, &GnttabSetVersion { version }, 1), want);
            assert_eq!(m.peek_u32(OP), 1);
        }
        let g = GnttabGetVersion {
            dom: DomId::SELF.0,
            ..GnttabGetVersion::default()
        };
        assert_eq!(call(&mut m, 10, &g, 1), Ok(0));
        assert_eq!(m.peek_u32(OP + 4), 1);
        let g = GnttabGetVersion { dom: 0x7000, ..g };
        assert_eq!(call(&mut m, 10, &g, 1), Err(Errno::ESRCH));
        let f = GnttabGetStatusFrames {
            nr_frames: 1,
            dom: DomId::SELF.0,
            frame_list: LIST,
            ..GnttabGetStatusFrames::default()
        };
        assert_eq!(call(&mut m, 9, &f, 1), Ok(0));
        assert_eq!(
            m.peek_u32(OP + 4) >> 16,
            GrantStatus::GeneralError as u16 as u32
        );
        assert_eq!(call(&mut m, 3, &f, 1), Err(Errno::ENOSYS));
        assert_eq!(call(&mut m, 1 << 12, &f, 1), Err(Errno::EINVAL));
        assert_eq!(call(&mut m, 0, &f, u64::from(u32::MAX)), Err(Errno::EINVAL));
        let sw = GnttabSwapGrantRef {
            ref_a: 8,
            ref_b: 9,
            ..GnttabSwapGrantRef::default()
        };
        assert_eq!(call(&mut m, 11, &sw, 1), Ok(0));
        assert_eq!(peek_i16(&m, OP + 8), 0);
        let sw = GnttabSwapGrantRef { ref_b: 5000, ..sw };
        assert_eq!(call(&mut m, 11, &sw, 1), Ok(0));
        assert_eq!(peek_i16(&m, OP + 8), GrantStatus::BadGntref as i16);
    }

    /// A mapping held by a domain being destroyed gives up its pins in
    /// the granter's table; its device mapping's references come back
    /// for the caller to drop.
    #[test]
    fn teardown_releases_the_mappings_a_domain_holds() {
        let (mut m, _, table, granted) = setup(false);
        let user = DomId(1);
        let entry = GrantEntryV1 {
            flags: GtfFlags::PERMIT_ACCESS.bits(),
            domid: user.0,
            frame: u32::try_from(granted.0).unwrap(),
        };
        m.set(table, 8, encode(entry));
        let req = PinRequest {
            user,
            incr: pin_incr(true, true, false),
            readonly: false,
            map: true,
        };
        let pinned = with_table(&mut m, DOM, |env, gt| {
            gt.pin(env, 8, req, |env, gfn| owned_frame(env, gfn, DOM))
        });
        assert_eq!(pinned, Some(Ok((granted, true))));
        let mut dying = GrantTable::new(1, 1);
        let handle = dying.get_handle().unwrap();
        *dying.mapping_mut(handle).unwrap() = crate::gnttab::Mapping {
            flags: (GntmapFlags::HOST_MAP | GntmapFlags::DEVICE_MAP).bits(),
            domid: DOM,
            gref: 8,
        };
        let device = release_mappings(&mut m, user, &mut dying);
        assert_eq!(device, alloc::vec![(granted, true)]);
        assert_eq!(gtf(&m, table), GtfFlags::PERMIT_ACCESS);
        let own = m.domain.grant.as_ref().and_then(|g| g.active(8));
        assert_eq!(own.map(|a| a.pin), Some(0));
        assert_eq!(dying.mappings().count(), 0);
        assert_eq!(dying.nr_frames(), 0);
    }

    /// A granter destroyed while dom0 maps its page stays, dying, until
    /// the unmap; then it is gone and every frame is back.
    #[test]
    fn a_granter_destroyed_while_mapped_goes_with_the_unmap() {
        use dom0_abi::domctl::{CreateDomain, Domctl, DomctlCmd, MaxMem, NoPayload};
        use dom0_abi::memory::{MemoryOpCmd, XenMemoryReservation};
        let (mut m, l1, _, _) = setup(false);
        m.domains.remove(&crate::mm::fake::OTHER.0);
        let free = m.free.len();
        let domctl =
            |m: &mut FakeMachine, cmd: DomctlCmd, dom: u16, payload: &dyn Fn(&mut [u8])| {
                let mut bytes = [0u8; Domctl::SIZE];
                Domctl::new(cmd, dom, &NoPayload)
                    .to_wire(&mut bytes)
                    .unwrap();
                payload(&mut bytes[16..]);
                m.poke(OP, &bytes);
                let mut fx = Effects::default();
                let r = super::super::domctl::domctl(m, &mut fx, OP);
                (
                    r,
                    Domctl::from_wire(&m.guest[0x100..0x100 + Domctl::SIZE]).unwrap(),
                )
            };
        let config = CreateDomain {
            max_vcpus: 1,
            max_evtchn_port: 1023,
            max_grant_frames: -1,
            max_maptrack_frames: -1,
            grant_opts: 1,
            ..CreateDomain::default()
        };
        let (r, out) = domctl(&mut m, DomctlCmd::CreateDomain, 0, &|b| {
            config.to_wire(b).unwrap();
        });
        assert_eq!(r, Ok(0));
        let id = out.domain;
        let (r, _) = domctl(&mut m, DomctlCmd::MaxMem, id, &|b| {
            MaxMem { max_memkb: 64 }.to_wire(b).unwrap();
        });
        assert_eq!(r, Ok(0));
        let reservation = XenMemoryReservation {
            extent_start: LIST,
            nr_extents: 1,
            extent_order: 0,
            mem_flags: 0,
            domid: id,
            pad: Default::default(),
        };
        let mut b = [0u8; XenMemoryReservation::SIZE];
        reservation.to_wire(&mut b).unwrap();
        m.poke(OP, &b);
        m.poke(LIST, &0u64.to_le_bytes());
        let mut fx = Effects::default();
        let populated = super::super::memory::memory_op(
            &mut m,
            &mut fx,
            MemoryOpCmd::PopulatePhysmap as u64,
            OP,
        );
        assert_eq!(populated, Ok(1));
        let page = Mfn(m.peek_u64(LIST));
        // dom0 sets the domU's table up and grants the page to itself
        // there, as the domU would.
        let s = GnttabSetupTable {
            dom: id,
            nr_frames: 1,
            frame_list: LIST,
            ..GnttabSetupTable::default()
        };
        assert_eq!(call(&mut m, 2, &s, 1), Ok(0));
        assert_eq!(peek_i16(&m, OP + 8), 0);
        let table = Mfn(m.peek_u64(LIST));
        let entry = GrantEntryV1 {
            flags: GtfFlags::PERMIT_ACCESS.bits(),
            domid: DOM.0,
            frame: u32::try_from(page.0).unwrap(),
        };
        m.set(table, 3, encode(entry));
        let done = map(&mut m, GntmapFlags::HOST_MAP, 3, id);
        assert_eq!(done.status, 0);
        assert_eq!(pte::frame(m.get(l1, pte::table_index(VA, 1))), page);
        let (r, _) = domctl(&mut m, DomctlCmd::DestroyDomain, id, &|_| {});
        assert_eq!(r, Ok(0));
        assert!(
            m.others.get(&id).is_some_and(|e| e.domain.dying),
            "kept, dying"
        );
        assert_eq!(m.info(page).owner(), Owner::Domain(DomId(id)));
        assert_eq!(unmap(&mut m, done.handle, VA), 0);
        assert!(!m.others.contains_key(&id), "gone with its last frame");
        assert_eq!(m.free.len(), free, "every frame is back");
        m.check_invariants(&roots(&m));
    }

    /// A batch longer than [`CHUNK`] stops there and asks to be
    /// continued with the rest.
    #[test]
    fn long_batches_are_continued() {
        let (mut m, _, _, granted) = setup(false);
        let swap = GnttabSwapGrantRef {
            ref_a: 8,
            ref_b: 9,
            ..GnttabSwapGrantRef::default()
        };
        for i in 0..70u64 {
            let mut bytes = [0u8; GnttabSwapGrantRef::SIZE];
            swap.to_wire(&mut bytes).unwrap();
            m.poke(OP + i * 12, &bytes);
        }
        let mut fx = Effects::default();
        assert_eq!(grant_table_op(&mut m, &mut fx, 11, OP, 70), Ok(0));
        let rest = OP + u64::from(CHUNK) * 12;
        assert_eq!(m.preempted.take(), Some([11, rest, 6, 0, 0]));
        assert_eq!(grant_table_op(&mut m, &mut fx, 11, rest, 6), Ok(0));
        assert_eq!(m.preempted.take(), None);
        // 70 swaps of the same two entries: back where they started.
        let first = m.domain.grant.as_ref().and_then(|g| g.entry(&m, 8));
        assert_eq!(first.map(|e| u64::from(e.frame)), Some(granted.0));
    }
}
