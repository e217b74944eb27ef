//! `mmu_update`, `mmuext_op`, `update_va_mapping[_otherdomain]`,
//! `vm_assist` and the writable-page-table decision.
//!
//! Each handler decodes its arguments exactly as Xen 4.17 does
//! (`xen/arch/x86/mm.c`), runs the requests through the page-type system
//! ([`crate::mm::types::Mmu`]) and leaves TLB flushes, view resyncs and LDT
//! reloads in the caller's [`Effects`] (carried out once per batch by
//! `arch`; a `multicall` passes the same value to every entry).
//!
//! Batches (`mmu_update`, `mmuext_op`) run in order and stop at the first
//! failing request, whose error is the result; `*pdone` (when not NULL)
//! receives the number of requests completed before it (the pointer is
//! written even on failure, and a failure to write it is ignored, as on
//! Xen). Requests are read from guest memory in small chunks; if a chunk
//! cannot be read, each request of it is read alone, so an unreadable
//! request fails exactly where Xen's would.
//!
//! Foreign domains: `foreigndom` (and `update_va_mapping_otherdomain`'s
//! `domid`) is Xen's `get_pg_owner`: `DOMID_SELF` is the caller, `DOMID_IO`
//! and `DOMID_XEN` are the special owners, the caller's own id or an
//! unknown id give `ESRCH`. Acting on another owner needs privilege
//! (`EPERM`), except that any domain may name `DOMID_IO` in `mmu_update`
//! (its I/O mappings are then checked against the caller's own rights).
//!
//! Ring-1 adaptations: `MMUEXT_NEW_USER_BASEPTR` takes and records an L4
//! (with its references, as on Xen) but that table is never loaded: user
//! mode runs on the kernel's table, whose user pages carry `US`.
//! `VMASST_TYPE_m2p_strict` is accepted and has no effect (the M2P is part
//! of the per-CPU view, not of the guest's L4).
#![forbid(unsafe_code)]

use core::marker::PhantomData;
use dom0_abi::Errno;
use dom0_abi::layout::{guest_addr_ok, is_canonical};

use dom0_abi::mmu::MMU_UPDATE_PREEMPTED;
use dom0_abi::mmu::{
    MmuUpdate, MmuextCmd, MmuextOp, UvmfFlush, UvmfScope, VmAssistCmd, VmAssistType, uvmf_decode,
};
use dom0_abi::types::{DomId, Mfn};
use dom0_abi::wire::Wire;

use super::{Env, read_struct};
use crate::mm::effects::{CacheFlush, Effects, TlbFlush};
use crate::mm::frame_table::{Owner, PageType};
use crate::mm::machine::{DomainMm, MmMachine, VcpuMm};
use crate::mm::pte;
use crate::mm::types::{HeldTable, MapCtx, Mmu, PtwrOutcome, PtwrWrite};

/// What the memory hypercalls need: guest memory and the calling domain
/// ([`Env`]), the memory manager's machine ([`MmMachine`]) and the calling
/// vCPU's memory state.
pub trait MmuEnv: Env + MmMachine {
    /// The calling vCPU's base pointers and LDT.
    fn vcpu_mm(&mut self) -> &mut VcpuMm;
    /// The `arch.max_pfn` field of domain `dom`'s `shared_info` (the guest
    /// writes it; `XENMEM_maximum_gpfn` reports it).
    fn shared_max_pfn(&mut self, dom: DomId) -> u64;
    /// The machine frame holding M2P entry `entry` (for
    /// `XENMEM_machphys_mfn_list`); `None` beyond the table.
    fn m2p_frame(&mut self, entry: u64) -> Option<Mfn>;
}

/// Requests of an `mmu_update` or `mmuext_op` done per invocation: a
/// longer batch is continued (Xen's `hypercall_create_continuation`), so
/// the time one call holds the CPU is bounded whatever count a guest
/// passes.
pub const BATCH_LIMIT: u32 = 512;
/// Requests read from the guest at once.
const CHUNK: usize = 16;
/// Largest LDT (entries), Xen's limit for `MMUEXT_SET_LDT`.
const MAX_LDT_ENTRIES: u32 = 8192;

/// The calling domain (or another domain looked up for it).
#[derive(Clone, Copy, Debug)]
pub(super) struct Caller {
    /// Its id.
    pub(super) id: DomId,
    /// A copy of its memory state.
    pub(super) mm: DomainMm,
}

impl Caller {
    /// The calling domain. `ESRCH` if it has no memory state (a wiring
    /// error, not reachable from a guest).
    pub(super) fn of(env: &mut impl MmuEnv) -> Result<Caller, Errno> {
        let id = env.domain().id;
        let mm = *env.domain_mm(id).ok_or(Errno::ESRCH)?;
        Ok(Caller { id, mm })
    }

    /// Xen's `rcu_lock_domain_by_any_id`: `DOMID_SELF` or an existing
    /// ordinary domain.
    pub(super) fn any(env: &mut impl MmuEnv, caller: &Caller, domid: u16) -> Option<Caller> {
        let id = if DomId(domid) == DomId::SELF {
            caller.id
        } else {
            DomId(domid)
        };
        if !id.is_ordinary() {
            return None;
        }
        let mm = *env.domain_mm(id)?;
        Some(Caller { id, mm })
    }

    /// Xen's `XSM_TARGET` default: the caller itself, or privilege.
    pub(super) fn may_act_on(&self, target: Owner) -> bool {
        target == Owner::Domain(self.id) || self.mm.privileged()
    }
}

/// Xen's `get_pg_owner`: the owner named by a foreign-domain argument.
fn pg_owner(env: &mut impl MmuEnv, caller: &Caller, domid: u16) -> Result<Owner, Errno> {
    if domid == caller.id.0 {
        return Err(Errno::ESRCH);
    }
    match DomId(domid) {
        DomId::IO => Ok(Owner::Io),
        DomId::XEN => Ok(Owner::Xen),
        _ => Caller::any(env, caller, domid)
            .map(|d| Owner::Domain(d.id))
            .ok_or(Errno::ESRCH),
    }
}

/// The mapping context for page tables of `pt_owner` referencing frames of
/// `pg_owner`, requested by `caller`.
fn map_ctx(env: &mut impl MmuEnv, caller: &Caller, pt_owner: &Caller, pg_owner: Owner) -> MapCtx {
    let pg_owner_privileged = match pg_owner {
        Owner::Domain(d) => env.domain_mm(d).is_some_and(|m| m.privileged()),
        _ => false,
    };
    MapCtx {
        pt_owner: pt_owner.id,
        pt_io_caps: pt_owner.mm.io_caps,
        caller: caller.id,
        pg_owner,
        pg_owner_privileged,
    }
}

/// Bytes of a chunk of `mmu_update` requests.
const UPDATE_CHUNK_BYTES: usize = CHUNK * size_of::<MmuUpdate>();
/// Bytes of a chunk of `mmuext_op` requests.
const MMUEXT_CHUNK_BYTES: usize = CHUNK * size_of::<MmuextOp>();

/// Reads requests of ABI type `T` from a guest array, a chunk at a time,
/// into a buffer of `BYTES` = [`CHUNK`] requests (sized per type: the
/// buffer is zeroed on every call, so it is no larger than one chunk).
struct Requests<T, const BYTES: usize> {
    base: u64,
    buf: [u8; BYTES],
    first: u32,
    len: u32,
    request: PhantomData<T>,
}

impl<T: Wire, const BYTES: usize> Requests<T, BYTES> {
    fn new(base: u64) -> Self {
        const { assert!(T::SIZE * CHUNK == BYTES) };
        Requests {
            base,
            buf: [0; BYTES],
            first: 0,
            len: 0,
            request: PhantomData,
        }
    }

    /// Request `i` of `count`.
    fn get(&mut self, env: &mut impl Env, i: u32, count: u32) -> Result<T, Errno> {
        if i < self.first || i - self.first >= self.len {
            self.fill(env, i, count)?;
        }
        let at = usize::try_from(i - self.first).map_err(|_| Errno::EFAULT)? * T::SIZE;
        T::from_wire(self.buf.get(at..).ok_or(Errno::EFAULT)?).ok_or(Errno::EFAULT)
    }

    fn fill(&mut self, env: &mut impl Env, i: u32, count: u32) -> Result<(), Errno> {
        let want = (count - i).min(u32::try_from(CHUNK).unwrap_or(1));
        let addr = self
            .base
            .wrapping_add(u64::from(i).wrapping_mul(T::SIZE as u64));
        for n in [want, 1] {
            let bytes = usize::try_from(n).map_err(|_| Errno::EFAULT)? * T::SIZE;
            if env.copy_from_guest(addr, &mut self.buf[..bytes]).is_ok() {
                self.first = i;
                self.len = n;
                return Ok(());
            }
        }
        self.len = 0;
        Err(Errno::EFAULT)
    }
}

/// Writes `*pdone = value` unless `pdone` is NULL; failures are ignored.
fn write_pdone(env: &mut impl Env, pdone: u64, value: u32) {
    if pdone != 0 {
        let _ = env.copy_to_guest(pdone, &value.to_le_bytes());
    }
}

/// Decodes Xen's continuation convention at the start of a batch: a
/// `count` with [`MMU_UPDATE_PREEMPTED`] continues a batch whose progress
/// is in `*pdone`. Returns `(count, done so far)`.
fn continuation(env: &mut impl Env, count: u32, pdone: u64) -> (u32, u32) {
    if count & MMU_UPDATE_PREEMPTED == 0 {
        return (count, 0);
    }
    let mut done = [0; 4];
    if pdone != 0 && env.copy_from_guest(pdone, &mut done).is_err() {
        done = [0; 4];
    }
    (count & !MMU_UPDATE_PREEMPTED, u32::from_le_bytes(done))
}

/// The arguments a batch of `count` requests at `base` is continued with
/// after `i` of them: the rest of the array, the rest of the count marked
/// as a continuation (the progress so far is in `pdone`, which the next
/// invocation reads), `pdone` and `foreigndom` unchanged.
fn continue_batch(
    base: u64,
    size: usize,
    i: u32,
    count: u32,
    pdone: u64,
    foreigndom: u32,
) -> [u64; 5] {
    [
        base + u64::from(i) * size as u64,
        u64::from((count - i) | MMU_UPDATE_PREEMPTED),
        pdone,
        u64::from(foreigndom),
        0,
    ]
}

/// The value Xen returns for the `count == MMU_UPDATE_PREEMPTED` with a
/// NULL array form (the final result of a continued batch, carried in
/// `foreigndom`).
fn carried_result(foreigndom: u32) -> Result<u64, Errno> {
    let value = i32::from_ne_bytes(foreigndom.to_ne_bytes());
    if value >= 0 {
        return Ok(u64::from(value.unsigned_abs()));
    }
    Errno::from_code(value.saturating_neg()).map_or(Err(Errno::EINVAL), Err)
}

/// `mmu_update(reqs, count, pdone, foreigndom)`.
///
/// Each request is `{ptr, val}`; the command is `ptr & 7` (Xen masks with
/// `sizeof(l1_pgentry_t) - 1`, so 4-7 are unknown commands, `ENOSYS`):
/// - 0 `MMU_NORMAL_PT_UPDATE`, 3 `MMU_PT_UPDATE_NO_TRANSLATE` (the same
///   for PV): checked write of `val` to the 8-byte word at `ptr & !7`,
///   whose frame must belong to the page-table owner (`EINVAL`);
/// - 2 `MMU_PT_UPDATE_PRESERVE_AD`: as 0, keeping the entry's A/D bits;
/// - 1 `MMU_MACHPHYS_UPDATE`: `M2P[ptr >> 12] = val` (`EPERM` with a
///   foreign page-table owner, `EINVAL` for a frame not owned by
///   `foreigndom`'s owner).
///
/// `foreigndom` bits 15:0 name the owner of mapped frames, bits 31:16 the
/// page-table owner plus one (0 = the caller). Early errors: `EFAULT`
/// (array start in the hypervisor's range), `ESRCH` (no such page-table
/// owner; `*pdone` untouched), `EINVAL` (owner without vCPUs), `ESRCH`
/// (bad `foreigndom`). L2-L4 updates flush every CPU of the domain at the
/// end (as Xen does), L4 updates of a loaded root resync the views.
pub fn mmu_update(
    env: &mut impl MmuEnv,
    fx: &mut Effects,
    reqs: u64,
    count: u64,
    pdone: u64,
    foreigndom: u64,
) -> Result<u64, Errno> {
    let count = low32(count);
    let foreigndom = low32(foreigndom);
    if count == MMU_UPDATE_PREEMPTED && reqs == 0 {
        return carried_result(foreigndom);
    }
    let (count, done) = continuation(env, count, pdone);
    if !guest_addr_ok(reqs) {
        return Err(Errno::EFAULT);
    }
    let caller = Caller::of(env)?;
    let pt_owner = match foreigndom >> 16 {
        0 => caller,
        pt_dom => {
            let id = DomId(u16::try_from(pt_dom - 1).unwrap_or(u16::MAX));
            let mm = match env.domain_mm(id) {
                Some(mm) if id.is_ordinary() => *mm,
                _ => return Err(Errno::ESRCH),
            };
            if mm.max_vcpus == 0 {
                write_pdone(env, pdone, done);
                return Err(Errno::EINVAL);
            }
            Caller { id, mm }
        }
    };
    let pg = match pg_owner(env, &caller, low16(foreigndom)) {
        Ok(pg) => pg,
        Err(e) => {
            write_pdone(env, pdone, done);
            return Err(e);
        }
    };
    let ctx = map_ctx(env, &caller, &pt_owner, pg);
    let mut batch = Batch {
        single: count == 1,
        ..Batch::default()
    };
    // A single request (Linux's `set_pte` outside lazy mode) is read
    // alone: the chunk reader's zeroed buffer cost it more than the copy.
    let mut reader = (count > 1).then(|| Requests::<MmuUpdate, UPDATE_CHUNK_BYTES>::new(reqs));
    let mut i = 0;
    let mut result = Ok(0);
    while i < count {
        if i == BATCH_LIMIT {
            env.preempt(continue_batch(
                reqs,
                MmuUpdate::SIZE,
                i,
                count,
                pdone,
                foreigndom,
            ));
            break;
        }
        let read = match &mut reader {
            Some(reader) => reader.get(env, i, count),
            None => read_struct::<MmuUpdate>(env, reqs),
        };
        let req = match read {
            Ok(req) => req,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        let MmuUpdate { ptr, val } = req;
        if let Err(e) = one_update(env, fx, &mut batch, &caller, &pt_owner, &ctx, ptr, val) {
            result = Err(e);
            break;
        }
        i += 1;
    }
    Mmu::new(env, fx).end_batch(&mut batch.table);
    if batch.upper_changed {
        // Xen flushes every CPU of the page-table owner after L2-L4
        // changes; guests may rely on it.
        fx.flush.domain.add_full();
    }
    write_pdone(env, pdone, done.wrapping_add(i));
    result
}

/// What an `mmu_update` batch changed, for the flushes at its end.
#[derive(Default)]
struct Batch {
    upper_changed: bool,
    /// The page-table frame whose reference the batch holds.
    table: HeldTable,
    /// One request: no reference is held (`Mmu::pt_update`), which costs
    /// it less than holding one for a run of requests.
    single: bool,
}

#[allow(
    clippy::too_many_arguments,
    reason = "the per-request context of one batch"
)]
fn one_update(
    env: &mut impl MmuEnv,
    fx: &mut Effects,
    batch: &mut Batch,
    caller: &Caller,
    pt_owner: &Caller,
    ctx: &MapCtx,
    ptr: u64,
    val: u64,
) -> Result<(), Errno> {
    let pg_ok = ctx.pg_owner == Owner::Io || caller.may_act_on(ctx.pg_owner);
    match ptr & 7 {
        cmd @ (0 | 2 | 3) => {
            if !pg_ok || !caller.may_act_on(Owner::Domain(pt_owner.id)) {
                return Err(Errno::EPERM);
            }
            let maddr = ptr & !7;
            let mut mmu = Mmu::new(env, fx);
            let ty = if batch.single {
                mmu.pt_update(maddr, val, cmd == 2, ctx)
            } else {
                mmu.pt_update_in_batch(&mut batch.table, maddr, val, cmd == 2, ctx)
            }?;
            if matches!(ty, PageType::L2 | PageType::L3 | PageType::L4) {
                batch.upper_changed = true;
            }
            if ty == PageType::L4 {
                root_changed(env, fx, Mfn(maddr >> 12));
            }
            Ok(())
        }
        1 => {
            if pt_owner.id != caller.id || !pg_ok {
                return Err(Errno::EPERM);
            }
            if ctx.pg_owner == Owner::Io {
                // Device memory has no pseudo-physical frame, and any
                // domain may name DOMID_IO: refused, unlike Xen 4.17,
                // which lets any domain rewrite those M2P entries.
                return Err(Errno::EINVAL);
            }
            let mfn = Mfn(ptr >> 12);
            let mut mmu = Mmu::new(env, fx);
            if !mmu.get_page(mfn, ctx.pg_owner) {
                return Err(Errno::EINVAL);
            }
            mmu.machine.set_m2p(mfn, val);
            mmu.put_page(mfn);
            Ok(())
        }
        _ => Err(Errno::ENOSYS),
    }
}

/// An entry of L4 `mfn` changed: which views must be resynced (Xen's
/// `flush_root_pt_local` / `flush_root_pt_others`).
fn root_changed(env: &mut impl MmuEnv, fx: &mut Effects, mfn: Mfn) {
    let vcpu = *env.vcpu_mm();
    let local = vcpu.kernel_l4 == Some(mfn);
    fx.root_sync.local |= local;
    let Some(info) = Mmu::new(env, fx).frame(mfn) else {
        return;
    };
    let accounted =
        u32::from(info.is_pinned()) + u32::from(vcpu.user_l4 == Some(mfn)) + u32::from(local);
    if info.type_count() > accounted {
        fx.root_sync.others = true;
    }
}

/// `mmuext_op(ops, count, pdone, foreigndom)`: see [`MmuextCmd`] for the
/// commands. Early errors (no `*pdone` written): `EFAULT` (array start in
/// the hypervisor's range), `ESRCH` (bad `foreigndom`, taken as a 16-bit
/// domain id), `EPERM` (no privilege over it).
pub fn mmuext_op(
    env: &mut impl MmuEnv,
    fx: &mut Effects,
    ops: u64,
    count: u64,
    pdone: u64,
    foreigndom: u64,
) -> Result<u64, Errno> {
    let count = low32(count);
    if count == MMU_UPDATE_PREEMPTED && ops == 0 {
        return carried_result(low32(foreigndom));
    }
    let (count, done) = continuation(env, count, pdone);
    if !guest_addr_ok(ops) {
        return Err(Errno::EFAULT);
    }
    let caller = Caller::of(env)?;
    let pg = pg_owner(env, &caller, low16(low32(foreigndom)))?;
    if !caller.may_act_on(pg) {
        return Err(Errno::EPERM);
    }
    let mut reader = Requests::<MmuextOp, MMUEXT_CHUNK_BYTES>::new(ops);
    let mut i = 0;
    let mut result = Ok(0);
    while i < count {
        if i == BATCH_LIMIT {
            env.preempt(continue_batch(
                ops,
                MmuextOp::SIZE,
                i,
                count,
                pdone,
                low32(foreigndom),
            ));
            break;
        }
        let op = match reader.get(env, i, count) {
            Ok(op) => op,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        let (cmd, arg1, arg2) = (u64::from(op.cmd), op.arg1, op.arg2);
        if let Err(e) = one_ext_op(env, fx, &caller, pg, cmd, arg1, arg2) {
            result = Err(e);
            break;
        }
        i += 1;
    }
    write_pdone(env, pdone, done.wrapping_add(i));
    result
}

fn one_ext_op(
    env: &mut impl MmuEnv,
    fx: &mut Effects,
    caller: &Caller,
    pg: Owner,
    cmd: u64,
    arg1: u64,
    arg2: u64,
) -> Result<(), Errno> {
    let Some(cmd) = MmuextCmd::from_number(cmd) else {
        return Err(Errno::ENOSYS);
    };
    let own = pg == Owner::Domain(caller.id);
    match cmd {
        MmuextCmd::PinL1Table => Mmu::new(env, fx).pin(Mfn(arg1), PageType::L1, pg),
        MmuextCmd::PinL2Table => Mmu::new(env, fx).pin(Mfn(arg1), PageType::L2, pg),
        MmuextCmd::PinL3Table => Mmu::new(env, fx).pin(Mfn(arg1), PageType::L3, pg),
        MmuextCmd::PinL4Table => Mmu::new(env, fx).pin(Mfn(arg1), PageType::L4, pg),
        MmuextCmd::UnpinTable => Mmu::new(env, fx).unpin(Mfn(arg1), pg),
        MmuextCmd::NewBaseptr if own => new_baseptr(env, fx, caller.id, Mfn(arg1)),
        MmuextCmd::NewUserBaseptr if own => new_user_baseptr(env, fx, caller.id, arg1),
        MmuextCmd::TlbFlushLocal if own => {
            fx.flush.local.add_full();
            Ok(())
        }
        MmuextCmd::InvlpgLocal if own => {
            if is_canonical(arg1) {
                fx.flush.local.add_page(arg1);
            }
            Ok(())
        }
        MmuextCmd::TlbFlushMulti | MmuextCmd::InvlpgMulti if own => {
            let target = vcpu_set(env, caller, arg2).map_err(|_| Errno::EINVAL)?;
            if let Some(flush) = target.flush(fx) {
                if cmd == MmuextCmd::TlbFlushMulti {
                    flush.add_full();
                } else if guest_addr_ok(arg1) {
                    flush.add_page(arg1);
                }
            }
            Ok(())
        }
        MmuextCmd::TlbFlushAll if own => {
            fx.flush.domain.add_full();
            Ok(())
        }
        MmuextCmd::InvlpgAll if own => {
            if guest_addr_ok(arg1) {
                fx.flush.domain.add_page(arg1);
            }
            Ok(())
        }
        MmuextCmd::FlushCache if own => {
            if !caller.mm.io_caps {
                return Err(Errno::EACCES);
            }
            fx.cache = fx.cache.max(CacheFlush::Local);
            Ok(())
        }
        MmuextCmd::FlushCacheGlobal if own => {
            if !caller.mm.io_caps {
                return Err(Errno::EINVAL);
            }
            fx.cache = CacheFlush::Global;
            Ok(())
        }
        MmuextCmd::SetLdt if own => set_ldt(env, fx, arg1, arg2),
        MmuextCmd::ClearPage => clear_page(env, fx, pg, Mfn(arg1)),
        MmuextCmd::CopyPage => copy_page(env, fx, pg, Mfn(arg1), Mfn(arg2)),
        MmuextCmd::MarkSuper | MmuextCmd::UnmarkSuper => Err(Errno::EOPNOTSUPP),
        // The commands above that act on the caller's own vCPU, given a
        // foreign domain.
        _ => Err(Errno::EPERM),
    }
}

/// `MMUEXT_NEW_BASEPTR`: the vCPU runs on L4 `mfn` from now on. The same
/// L4 again just reloads it. Errors from [`Mmu::replace_root`].
fn new_baseptr(env: &mut impl MmuEnv, fx: &mut Effects, dom: DomId, mfn: Mfn) -> Result<(), Errno> {
    let old = env.vcpu_mm().kernel_l4;
    if old != Some(mfn) {
        Mmu::new(env, fx).replace_root(old, Some(mfn), dom)?;
        env.vcpu_mm().kernel_l4 = Some(mfn);
        // LDT mappings were found through the old tables.
        fx.ldt_changed = true;
    }
    fx.root_sync.local = true;
    fx.flush.local.add_full();
    Ok(())
}

/// `MMUEXT_NEW_USER_BASEPTR`: records the L4 for user mode (`0`: none).
/// The same value again does nothing.
fn new_user_baseptr(
    env: &mut impl MmuEnv,
    fx: &mut Effects,
    dom: DomId,
    mfn: u64,
) -> Result<(), Errno> {
    let old = env.vcpu_mm().user_l4;
    let new = (mfn != 0).then_some(Mfn(mfn));
    if old.map_or(0, |m| m.0) == mfn {
        return Ok(());
    }
    Mmu::new(env, fx).replace_root(old, new, dom)?;
    env.vcpu_mm().user_l4 = new;
    Ok(())
}

/// `MMUEXT_SET_LDT`: `nr_ents` (the low 32 bits of `arg2`) entries at
/// `linear_addr` (`arg1`, ignored when there are none). `EINVAL` for more
/// than 8192 entries, or a base that is not page-aligned or lies in the
/// hypervisor's range.
fn set_ldt(env: &mut impl MmuEnv, fx: &mut Effects, arg1: u64, arg2: u64) -> Result<(), Errno> {
    let ents = low32(arg2);
    let base = if ents == 0 { 0 } else { arg1 };
    if ents > MAX_LDT_ENTRIES || (ents != 0 && (base & 0xFFF != 0 || !guest_addr_ok(base))) {
        return Err(Errno::EINVAL);
    }
    let vcpu = env.vcpu_mm();
    if vcpu.ldt_base != base || vcpu.ldt_ents != ents {
        vcpu.ldt_base = base;
        vcpu.ldt_ents = ents;
        fx.ldt_changed = true;
    }
    Ok(())
}

/// `MMUEXT_CLEAR_PAGE`: zeroes a frame of `pg`, which must be able to take
/// the writable type. `EINVAL` otherwise (also for `DOMID_IO`).
fn clear_page(env: &mut impl MmuEnv, fx: &mut Effects, pg: Owner, mfn: Mfn) -> Result<(), Errno> {
    let mut mmu = Mmu::new(env, fx);
    if pg == Owner::Io || !mmu.get_page(mfn, pg) {
        return Err(Errno::EINVAL);
    }
    if mmu.get_page_type(mfn, PageType::Writable).is_err() {
        mmu.put_page(mfn);
        return Err(Errno::EINVAL);
    }
    mmu.machine.clear_page(mfn);
    mmu.put_page_and_type(mfn);
    Ok(())
}

/// `MMUEXT_COPY_PAGE`: copies frame `src` to frame `dst`, both of `pg`;
/// `dst` must be able to take the writable type. `EINVAL` otherwise.
fn copy_page(
    env: &mut impl MmuEnv,
    fx: &mut Effects,
    pg: Owner,
    dst: Mfn,
    src: Mfn,
) -> Result<(), Errno> {
    let mut mmu = Mmu::new(env, fx);
    if pg == Owner::Io || !mmu.get_page(src, pg) {
        return Err(Errno::EINVAL);
    }
    if !mmu.get_page(dst, pg) {
        mmu.put_page(src);
        return Err(Errno::EINVAL);
    }
    if mmu.get_page_type(dst, PageType::Writable).is_err() {
        mmu.put_page(src);
        mmu.put_page(dst);
        return Err(Errno::EINVAL);
    }
    mmu.machine.copy_page(dst, src);
    mmu.put_page_and_type(dst);
    mmu.put_page(src);
    Ok(())
}

/// Which CPUs a vCPU bitmap asks to flush.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum VcpuSet {
    /// No vCPU of the domain.
    Empty,
    /// Only the calling vCPU.
    Current,
    /// Some other vCPU (flush everywhere the domain runs).
    Others,
}

impl VcpuSet {
    fn flush(self, fx: &mut Effects) -> Option<&mut TlbFlush> {
        match self {
            VcpuSet::Empty => None,
            VcpuSet::Current => Some(&mut fx.flush.local),
            VcpuSet::Others => Some(&mut fx.flush.domain),
        }
    }
}

/// Reads a guest vCPU bitmap (Xen's `vcpumask_to_pcpumask`): one 64-bit
/// word per 64 vCPUs of the domain; bits of vCPUs that do not exist are
/// ignored. `EFAULT` if a word cannot be read.
fn vcpu_set(env: &mut impl MmuEnv, caller: &Caller, ptr: u64) -> Result<VcpuSet, Errno> {
    let current = env.vcpu().id;
    let mut set = VcpuSet::Empty;
    let mut word = 0u32;
    while u64::from(word) * 64 < u64::from(caller.mm.max_vcpus) {
        let mut b = [0; 8];
        env.copy_from_guest(ptr.wrapping_add(u64::from(word) * 8), &mut b)?;
        let bits = u64::from_le_bytes(b);
        for bit in 0..64 {
            let id = word * 64 + bit;
            if id >= caller.mm.max_vcpus {
                break;
            }
            if bits & (1 << bit) != 0 {
                if id == current {
                    set = set.max_with(VcpuSet::Current);
                } else {
                    set = VcpuSet::Others;
                }
            }
        }
        word += 1;
    }
    Ok(set)
}

impl VcpuSet {
    fn max_with(self, other: VcpuSet) -> VcpuSet {
        match (self, other) {
            (VcpuSet::Others, _) | (_, VcpuSet::Others) => VcpuSet::Others,
            (VcpuSet::Current, _) | (_, VcpuSet::Current) => VcpuSet::Current,
            _ => VcpuSet::Empty,
        }
    }
}

/// `update_va_mapping(va, val, flags)`: the L1 entry mapping `va` in the
/// vCPU's current L4 becomes `val` (validated as by `mmu_update`), then the
/// flush in `flags` ([`uvmf_decode`]) is requested. `EINVAL`: no L1 table
/// of the caller maps `va`, or `val` fails validation (or `EBUSY`,
/// `EPERM`, `EACCES` as `mmu_update`). `EFAULT`: the `UVMF_MULTI` bitmap is
/// unreadable (the entry is written all the same, as on Xen). Nothing is
/// flushed after an error of the update.
pub fn update_va_mapping(
    env: &mut impl MmuEnv,
    fx: &mut Effects,
    va: u64,
    val: u64,
    flags: u64,
) -> Result<u64, Errno> {
    let caller = Caller::of(env)?;
    update_va(env, fx, &caller, Owner::Domain(caller.id), va, val, flags)
}

/// `update_va_mapping_otherdomain(va, val, flags, domid)`: as
/// [`update_va_mapping`] with the mapped frame owned by `domid` (a 16-bit
/// id, Xen's `get_pg_owner`). `ESRCH`: no such domain (or the caller's own
/// id); `EPERM`: no privilege over it.
pub fn update_va_mapping_otherdomain(
    env: &mut impl MmuEnv,
    fx: &mut Effects,
    va: u64,
    val: u64,
    flags: u64,
    domid: u64,
) -> Result<u64, Errno> {
    let caller = Caller::of(env)?;
    let pg = pg_owner(env, &caller, low16(low32(domid)))?;
    update_va(env, fx, &caller, pg, va, val, flags)
}

fn update_va(
    env: &mut impl MmuEnv,
    fx: &mut Effects,
    caller: &Caller,
    pg: Owner,
    va: u64,
    val: u64,
    flags: u64,
) -> Result<u64, Errno> {
    if !caller.may_act_on(pg) {
        return Err(Errno::EPERM);
    }
    let root = env.vcpu_mm().kernel_l4.ok_or(Errno::EINVAL)?;
    let ctx = map_ctx(env, caller, caller, pg);
    Mmu::new(env, fx).update_va(root, va, val, &ctx)?;
    let (kind, scope) = uvmf_decode(flags);
    if kind == UvmfFlush::None {
        return Ok(0);
    }
    let target = match scope {
        UvmfScope::Local => VcpuSet::Current,
        UvmfScope::All => VcpuSet::Others,
        UvmfScope::Multi(ptr) => vcpu_set(env, caller, ptr)?,
    };
    if let Some(flush) = target.flush(fx) {
        match kind {
            UvmfFlush::TlbFlush => flush.add_full(),
            _ => flush.add_page(va),
        }
    }
    Ok(0)
}

/// The `vm_assist` types a 64-bit PV guest may use (Xen's
/// `PV64_VM_ASSIST_MASK`).
pub(super) const VALID_VM_ASSISTS: u64 = {
    let mut mask = 0;
    let mut i = 0;
    while i < VmAssistType::ALL.len() {
        mask |= VmAssistType::ALL[i].mask();
        i += 1;
    }
    mask
};

/// `vm_assist(cmd, type)`: both are 32-bit. `EINVAL`: `type` not valid for
/// a 64-bit PV guest (checked first); `ENOSYS`: `cmd` neither enable nor
/// disable.
pub fn vm_assist(env: &mut impl MmuEnv, cmd: u64, ty: u64) -> Result<u64, Errno> {
    let ty = low32(ty);
    if ty >= 64 || VALID_VM_ASSISTS & (1 << ty) == 0 {
        return Err(Errno::EINVAL);
    }
    let caller = Caller::of(env)?;
    let mm = env.domain_mm(caller.id).ok_or(Errno::ESRCH)?;
    match VmAssistCmd::from_number(u64::from(low32(cmd))) {
        Some(VmAssistCmd::Enable) => mm.vm_assist |= 1 << ty,
        Some(VmAssistCmd::Disable) => mm.vm_assist &= !(1 << ty),
        None => return Err(Errno::ENOSYS),
    }
    Ok(0)
}

/// Page-fault error-code bits (`PFEC_*`).
mod pfec {
    pub const PRESENT: u64 = 1 << 0;
    pub const WRITE: u64 = 1 << 1;
    pub const RESERVED: u64 = 1 << 3;
    pub const INSN_FETCH: u64 = 1 << 4;
}

/// Whether a guest page fault is one the writable-page-table emulation
/// looks at (Xen's `fixup_page_fault`): a write to a present page, from
/// guest kernel mode, not a reserved-bit or instruction-fetch fault, by a
/// domain that enabled `VMASST_TYPE_writable_pagetables` or is the
/// hardware domain (Xen 4.17 emulates for dom0 without the assist).
#[must_use]
pub fn ptwr_applies(domain: &DomainMm, error_code: u64, kernel_mode: bool) -> bool {
    let assist = domain.vm_assist & VmAssistType::WritablePagetables.mask() != 0;
    kernel_mode
        && error_code & (pfec::RESERVED | pfec::INSN_FETCH) == 0
        && error_code & (pfec::WRITE | pfec::PRESENT) == (pfec::WRITE | pfec::PRESENT)
        && (assist || domain.privileged())
}

/// Emulates a guest write that faulted at `cr2` (decoded by `arch` into
/// `write`) if it targets an L1 table of the domain mapped read-only: the
/// new entry is validated and applied like an `mmu_update`. Returns
/// whether it was handled; [`PtwrOutcome::NotHandled`] means the page
/// fault goes to the guest with its original error code.
pub fn ptwr_fault(
    env: &mut impl MmuEnv,
    fx: &mut Effects,
    cr2: u64,
    write: PtwrWrite,
) -> PtwrOutcome {
    let Some(root) = env.vcpu_mm().kernel_l4 else {
        return PtwrOutcome::NotHandled;
    };
    let Ok(caller) = Caller::of(env) else {
        return PtwrOutcome::NotHandled;
    };
    Mmu::new(env, fx).ptwr_emulate(root, caller.id, caller.mm.io_caps, cr2, write)
}

/// The frame `va` maps present and read-only under the vCPU's kernel
/// tables (Xen looks at the kernel's view for its read-only page faults),
/// if the walk reaches an L1 entry.
pub fn read_only_frame(env: &mut impl MmuEnv, fx: &mut Effects, va: u64) -> Option<Mfn> {
    let root = env.vcpu_mm().kernel_l4?;
    let entry = Mmu::new(env, fx).l1e_of(root, va)?;
    (entry & (pte::PRESENT | pte::RW) == pte::PRESENT).then(|| pte::frame(entry))
}

/// The low 32 bits of a register argument (`unsigned int` in C).
#[allow(
    clippy::cast_possible_truncation,
    reason = "C truncates unsigned int arguments the same way"
)]
pub(super) const fn low32(value: u64) -> u32 {
    value as u32
}

/// The low 16 bits (`domid_t`).
#[allow(
    clippy::cast_possible_truncation,
    reason = "C truncates domid_t arguments the same way"
)]
const fn low16(value: u32) -> u16 {
    value as u16
}

#[cfg(test)]
#[allow(
    clippy::cast_possible_truncation,
    reason = "test fixtures use small frame numbers"
)]
mod tests {
    use super::*;
    use crate::emulate::Update;
    use crate::mm::fake::{BASE, DOM, FakeMachine, OTHER, PRO, PRW};
    use crate::mm::frame_table::FrameTable;
    use crate::mm::pte;
    use proptest::prelude::*;

    impl MmuEnv for FakeMachine {
        fn vcpu_mm(&mut self) -> &mut VcpuMm {
            &mut self.vcpu
        }
        fn shared_max_pfn(&mut self, _dom: DomId) -> u64 {
            self.shared_max_pfn
        }
        fn m2p_frame(&mut self, entry: u64) -> Option<Mfn> {
            // The fake's M2P "lives" in frames 0x1000 and up.
            (entry < self.frames.len() as u64).then(|| Mfn(0x1000 + entry / 512))
        }
    }

    const VA: u64 = 0xFFFF_FFFF_8020_3000;
    const OWN: Owner = Owner::Domain(DOM);
    const PDONE: u64 = BASE + 0x8000;
    const MASK: u64 = BASE + 0x9000;

    /// dom0 running on a pinned, loaded L4 that maps `VA` to `data`.
    fn setup() -> (FakeMachine, [Mfn; 4], Mfn) {
        let mut m = FakeMachine::new(64);
        let data = m.give(DOM);
        let t = m.build_tables(DOM, VA, data);
        m.with(|mmu| mmu.pin(t[0], PageType::L4, OWN)).0.unwrap();
        m.with(|mmu| mmu.replace_root(None, Some(t[0]), DOM))
            .0
            .unwrap();
        m.vcpu.kernel_l4 = Some(t[0]);
        (m, t, data)
    }

    fn put_updates(m: &mut FakeMachine, reqs: &[(u64, u64)]) {
        for (k, &(ptr, val)) in reqs.iter().enumerate() {
            m.poke(BASE + 16 * k as u64, &ptr.to_le_bytes());
            m.poke(BASE + 16 * k as u64 + 8, &val.to_le_bytes());
        }
    }

    fn put_ops(m: &mut FakeMachine, ops: &[(u32, u64, u64)]) {
        for (k, &(cmd, a1, a2)) in ops.iter().enumerate() {
            let at = BASE + 24 * k as u64;
            m.poke(at, &u64::from(cmd).to_le_bytes());
            m.poke(at + 8, &a1.to_le_bytes());
            m.poke(at + 16, &a2.to_le_bytes());
        }
    }

    fn update(m: &mut FakeMachine, reqs: &[(u64, u64)], fd: u64) -> (Result<u64, Errno>, Effects) {
        put_updates(m, reqs);
        m.poke(PDONE, &0xFFFF_FFFFu32.to_le_bytes());
        let mut fx = Effects::default();
        let r = mmu_update(m, &mut fx, BASE, reqs.len() as u64, PDONE, fd);
        (r, fx)
    }

    fn ext(m: &mut FakeMachine, ops: &[(u32, u64, u64)], fd: u64) -> (Result<u64, Errno>, Effects) {
        put_ops(m, ops);
        m.poke(PDONE, &0xFFFF_FFFFu32.to_le_bytes());
        let mut fx = Effects::default();
        let r = mmuext_op(m, &mut fx, BASE, ops.len() as u64, PDONE, fd);
        (r, fx)
    }

    fn l1e(l1: Mfn, index: u64) -> u64 {
        (l1.0 << 12) | (index * 8)
    }

    const SELF: u64 = DomId::SELF.0 as u64;

    /// One `mmu_update` request on the tables of [`setup`]: table (L4-L1),
    /// slot, command (0-3), then an entry naming one of the fake machine's
    /// frames with common or arbitrary flags and NX.
    fn pt_write() -> impl Strategy<Value = (usize, u64, u64, u64)> {
        let flags = prop_oneof![Just(PRW), Just(PRO), Just(0), 0u64..0x1000];
        (
            0usize..4,
            0u64..512,
            0u64..4,
            0u64..64,
            flags,
            any::<bool>(),
        )
            .prop_map(|(table, index, cmd, frame, flags, nx)| {
                (
                    table,
                    index,
                    cmd,
                    (frame << 12) | flags | (u64::from(nx) << 63),
                )
            })
    }

    proptest! {
        /// Any batch of page-table writes to the domain's own tables leaves
        /// the reference counts and types consistent with the tables: no
        /// panic, nothing leaked, nothing released twice.
        #[test]
        fn any_page_table_writes_keep_the_counts_consistent(
            writes in proptest::collection::vec(pt_write(), 1..12)
        ) {
            let (mut m, t, _) = setup();
            for (table, index, cmd, val) in writes {
                let _ = update(&mut m, &[(l1e(t[table], index) | cmd, val)], SELF);
            }
            let root = m.vcpu.kernel_l4;
            prop_assert!(root.is_some());
            m.check_invariants(&[root.unwrap_or(Mfn(0))]);
        }

        /// The same writes as one batch (which holds a table's reference
        /// across a run of requests to it): the same outcome as one call
        /// per request up to the first failure, and the counts consistent.
        #[test]
        fn batched_page_table_writes_match_single_ones(
            writes in proptest::collection::vec(pt_write(), 1..24)
        ) {
            let (mut one, t, _) = setup();
            let (mut batched, _, _) = setup();
            let reqs: Vec<(u64, u64)> = writes
                .iter()
                .map(|&(table, index, cmd, val)| (l1e(t[table], index) | cmd, val))
                .collect();
            let mut single = Ok(0);
            for &req in &reqs {
                single = update(&mut one, &[req], SELF).0;
                if single.is_err() {
                    break;
                }
            }
            let (all, _) = update(&mut batched, &reqs, SELF);
            prop_assert_eq!(all, single);
            for frame in 0..64 {
                prop_assert_eq!(batched.frames[frame], one.frames[frame]);
            }
            let root = batched.vcpu.kernel_l4.unwrap_or(Mfn(0));
            batched.check_invariants(&[root]);
        }
    }

    #[test]
    fn batch_stops_at_the_first_failure() {
        let (mut m, [_, _, _, l1], _) = setup();
        let frames: Vec<Mfn> = (0..4).map(|_| m.give(DOM)).collect();
        let foreign = m.give(OTHER);
        let reqs = [
            (l1e(l1, 300), (frames[0].0 << 12) | PRW),
            (l1e(l1, 301), (frames[1].0 << 12) | PRO),
            (l1e(l1, 302), (foreign.0 << 12) | PRO),
            (l1e(l1, 303), (frames[2].0 << 12) | PRW),
            (l1e(l1, 304), (frames[3].0 << 12) | PRW),
        ];
        let (r, _) = update(&mut m, &reqs, SELF);
        assert_eq!(r, Err(Errno::EBUSY));
        assert_eq!(m.peek_u32(PDONE), 2);
        assert_eq!(m.get(l1, 300), reqs[0].1);
        assert_eq!(m.get(l1, 301), reqs[1].1);
        for i in 302..305 {
            assert_eq!(m.get(l1, i), 0, "entry {i} untouched");
        }
        assert!(m.info(frames[0]).has_live_type(PageType::Writable));
        assert_eq!(m.info(frames[2]).type_count(), 0);
        // The whole batch, minus the bad entry.
        let good = [reqs[3], reqs[4]];
        assert_eq!(update(&mut m, &good, SELF).0, Ok(0));
        assert_eq!(m.peek_u32(PDONE), 2);
        let vcpu = m.vcpu;
        m.check_invariants(&vcpu.kernel_l4.into_iter().collect::<Vec<_>>());
    }

    #[test]
    fn unreadable_requests_fail_where_they_start() {
        let (mut m, [_, _, _, l1], data) = setup();
        // Two requests at the very end of guest memory: the third is beyond.
        let end = BASE + m.guest.len() as u64 - 32;
        for (k, idx) in [300u64, 301].into_iter().enumerate() {
            m.poke(end + 16 * k as u64, &l1e(l1, idx).to_le_bytes());
            m.poke(
                end + 16 * k as u64 + 8,
                &((data.0 << 12) | PRO).to_le_bytes(),
            );
        }
        let mut fx = Effects::default();
        assert_eq!(
            mmu_update(&mut m, &mut fx, end, 5, PDONE, SELF),
            Err(Errno::EFAULT)
        );
        assert_eq!(m.peek_u32(PDONE), 2);
        assert_eq!(m.get(l1, 301), (data.0 << 12) | PRO);
        // An array in the hypervisor's range: EFAULT before anything.
        m.poke(PDONE, &7u32.to_le_bytes());
        let r = mmu_update(&mut m, &mut fx, 0xFFFF_8000_0000_0000, 1, PDONE, SELF);
        assert_eq!(r, Err(Errno::EFAULT));
        assert_eq!(m.peek_u32(PDONE), 7);
        // NULL or unwritable pdone changes nothing else.
        put_updates(&mut m, &[(l1e(l1, 302), 0)]);
        assert_eq!(mmu_update(&mut m, &mut fx, BASE, 1, 0, SELF), Ok(0));
        assert_eq!(mmu_update(&mut m, &mut fx, BASE, 1, 0x10, SELF), Ok(0));
    }

    #[test]
    fn commands_and_foreign_domains() {
        let (mut m, [l4, _, l2, l1], data) = setup();
        // Unknown commands (Xen masks ptr with 7).
        for cmd in 4..8 {
            assert_eq!(
                update(&mut m, &[(l1e(l1, 300) | cmd, 0)], SELF).0,
                Err(Errno::ENOSYS)
            );
        }
        // M2P updates: own frames only.
        assert_eq!(update(&mut m, &[((data.0 << 12) | 1, 0x77)], SELF).0, Ok(0));
        assert_eq!(m.m2p[data.0 as usize], 0x77);
        let foreign = m.give(OTHER);
        assert_eq!(
            update(&mut m, &[((foreign.0 << 12) | 1, 1)], SELF).0,
            Err(Errno::EINVAL)
        );
        assert_eq!(
            update(&mut m, &[((63 << 12) | 1, 1)], SELF).0,
            Err(Errno::EINVAL)
        );
        // foreigndom: the caller's own id is ESRCH, with *pdone written.
        let (r, _) = update(&mut m, &[(l1e(l1, 300), 0)], 0);
        assert_eq!((r, m.peek_u32(PDONE)), (Err(Errno::ESRCH), 0));
        let (r, _) = update(&mut m, &[(l1e(l1, 300), 0)], 5);
        assert_eq!((r, m.peek_u32(PDONE)), (Err(Errno::ESRCH), 0));
        // A page-table owner that does not exist: ESRCH, *pdone untouched.
        let (r, _) = update(&mut m, &[(l1e(l1, 300), 0)], (9 << 16) | SELF);
        assert_eq!((r, m.peek_u32(PDONE)), (Err(Errno::ESRCH), 0xFFFF_FFFF));
        // The caller named as page-table owner is fine.
        assert_eq!(
            update(&mut m, &[(l1e(l1, 300), 0)], (1 << 16) | SELF).0,
            Ok(0)
        );
        // Another domain's frames with a privileged foreigndom.
        let r = update(
            &mut m,
            &[(l1e(l1, 300), (foreign.0 << 12) | PRW)],
            u64::from(OTHER.0),
        );
        assert_eq!(r.0, Ok(0));
        // L2-L4 updates need pg_owner == pt_owner.
        let r = update(&mut m, &[(l1e(l2, 9), 0)], u64::from(OTHER.0));
        assert_eq!(r.0, Err(Errno::EINVAL));
        // M2P update with a foreign page-table owner: EPERM.
        m.domains.get_mut(&OTHER.0).unwrap().max_vcpus = 1;
        let r = update(&mut m, &[((data.0 << 12) | 1, 1)], (2 << 16) | SELF);
        assert_eq!(r.0, Err(Errno::EPERM));
        let _ = l4;
    }

    #[test]
    fn unprivileged_callers() {
        let mut m = FakeMachine::new(64);
        m.domain.id = OTHER;
        let data = m.give(OTHER);
        let t = m.build_tables(OTHER, VA, data);
        m.with(|mmu| mmu.pin(t[0], PageType::L4, Owner::Domain(OTHER)))
            .0
            .unwrap();
        let l1 = t[3];
        let xen = u64::from(DomId::XEN.0);
        let (r, _) = update(&mut m, &[(l1e(l1, 300), 0)], xen);
        assert_eq!((r, m.peek_u32(PDONE)), (Err(Errno::EPERM), 0));
        // DOMID_IO needs no privilege, but I/O frames need rights.
        m.iomem.insert(0xFEE00);
        let io = u64::from(DomId::IO.0);
        let r = update(&mut m, &[(l1e(l1, 300), (0xFEE00 << 12) | PRW)], io);
        assert_eq!(r.0, Err(Errno::EPERM));
        assert_eq!(update(&mut m, &[(l1e(l1, 300), 0)], io).0, Ok(0));
        // MACHPHYS_UPDATE of an I/O frame with DOMID_IO: EINVAL, M2P kept.
        let io_frame = m.alloc_frames(0, u64::MAX).expect("a free frame");
        FrameTable::new(&mut m.frames).assign_io(io_frame).unwrap();
        let before = m.m2p[io_frame.0 as usize];
        let r = update(&mut m, &[((io_frame.0 << 12) | 1, 0x77)], io);
        assert_eq!(r.0, Err(Errno::EINVAL));
        assert_eq!(m.m2p[io_frame.0 as usize], before);
        // mmuext_op on DOMID_IO: EPERM up front, no *pdone.
        let (r, _) = ext(&mut m, &[(6, 0, 0)], io);
        assert_eq!((r, m.peek_u32(PDONE)), (Err(Errno::EPERM), 0xFFFF_FFFF));
        // Another domain: EPERM for update_va_mapping_otherdomain.
        let mut fx = Effects::default();
        let r = update_va_mapping_otherdomain(&mut m, &mut fx, VA, 0, 0, 0);
        assert_eq!(r, Err(Errno::EPERM));
        // Cache flushes need I/O rights.
        assert_eq!(ext(&mut m, &[(12, 0, 0)], SELF).0, Err(Errno::EACCES));
        assert_eq!(ext(&mut m, &[(18, 0, 0)], SELF).0, Err(Errno::EINVAL));
    }

    #[test]
    fn upper_level_updates_flush_and_resync() {
        let (mut m, [l4, l3, l2, l1], _) = setup();
        let (r, fx) = update(&mut m, &[(l1e(l1, 300), 0)], SELF);
        assert_eq!(r, Ok(0));
        assert_eq!(fx, Effects::default(), "L1 updates flush nothing");
        let spare = m.give(DOM);
        let (r, fx) = update(&mut m, &[(l1e(l2, 9), (spare.0 << 12) | PRW)], SELF);
        assert_eq!(r, Ok(0));
        assert_eq!(fx.flush.domain, TlbFlush::Full);
        assert!(!fx.root_sync.local);
        let (r, fx) = update(&mut m, &[(l1e(l4, 3), (spare.0 << 12) | PRW)], SELF);
        assert_eq!(r, Err(Errno::EINVAL), "an L1 does not validate as an L3");
        assert_eq!(fx.flush.domain, TlbFlush::None);
        let spare_l3 = m.give(DOM);
        let (r, fx) = update(&mut m, &[(l1e(l4, 3), (spare_l3.0 << 12) | PRW)], SELF);
        assert_eq!(r, Ok(0));
        assert!(fx.root_sync.local && !fx.root_sync.others);
        // The hypervisor's slots.
        let (r, _) = update(&mut m, &[(l1e(l4, 256), (spare_l3.0 << 12) | PRW)], SELF);
        assert_eq!(r, Err(Errno::EINVAL));
        // An L4 loaded by another vCPU: resync the others.
        m.with(|mmu| mmu.replace_root(None, Some(l4), DOM))
            .0
            .unwrap();
        let (_, fx) = update(&mut m, &[(l1e(l4, 3), 0)], SELF);
        assert!(fx.root_sync.local && fx.root_sync.others);
        let _ = l3;
    }

    #[test]
    fn long_batches_are_continued() {
        let (mut m, [.., l1], _) = setup();
        let n = BATCH_LIMIT + 10;
        let reqs: Vec<(u64, u64)> = (0..u64::from(n))
            .map(|k| (l1e(l1, 300 + k % 100), 0))
            .collect();
        put_updates(&mut m, &reqs);
        let mut fx = Effects::default();
        let r = mmu_update(&mut m, &mut fx, BASE, u64::from(n), PDONE, SELF);
        assert_eq!(r, Ok(0));
        let args = m.take_preempted().expect("a long batch is continued");
        assert_eq!(args[0], BASE + 16 * u64::from(BATCH_LIMIT));
        assert_eq!(args[1], u64::from(10 | MMU_UPDATE_PREEMPTED));
        assert_eq!((args[2], args[3]), (PDONE, SELF));
        assert_eq!(m.peek_u32(PDONE), BATCH_LIMIT);
        let r = mmu_update(&mut m, &mut fx, args[0], args[1], args[2], args[3]);
        assert_eq!(r, Ok(0));
        assert!(m.take_preempted().is_none());
        assert_eq!(m.peek_u32(PDONE), n, "progress adds up across the pieces");
        let ops = vec![(MmuextCmd::TlbFlushLocal as u32, 0, 0); n as usize];
        put_ops(&mut m, &ops);
        let r = mmuext_op(&mut m, &mut fx, BASE, u64::from(n), PDONE, SELF);
        assert_eq!(r, Ok(0));
        let args = m.take_preempted().expect("a long batch is continued");
        assert_eq!(args[0], BASE + 24 * u64::from(BATCH_LIMIT));
        assert_eq!(m.peek_u32(PDONE), BATCH_LIMIT);
    }

    #[test]
    fn continuation_convention() {
        let (mut m, [.., l1], _) = setup();
        put_updates(&mut m, &[(l1e(l1, 300), 0)]);
        m.poke(PDONE, &5u32.to_le_bytes());
        let mut fx = Effects::default();
        let r = mmu_update(
            &mut m,
            &mut fx,
            BASE,
            u64::from(MMU_UPDATE_PREEMPTED) | 1,
            PDONE,
            SELF,
        );
        assert_eq!((r, m.peek_u32(PDONE)), (Ok(0), 6));
        let carried = u64::from(MMU_UPDATE_PREEMPTED);
        assert_eq!(mmu_update(&mut m, &mut fx, 0, carried, 0, 3), Ok(3));
        let einval = u64::from(22u32.wrapping_neg());
        assert_eq!(
            mmuext_op(&mut m, &mut fx, 0, carried, 0, einval),
            Err(Errno::EINVAL)
        );
    }

    #[test]
    fn pins_and_base_pointers() {
        let (mut m, [l4, l3, _, l1], data) = setup();
        // Pin twice, unpin what is not pinned.
        assert_eq!(ext(&mut m, &[(2, l3.0, 0)], SELF).0, Ok(0));
        let (r, _) = ext(&mut m, &[(2, l3.0, 0), (2, l3.0, 0)], SELF);
        assert_eq!((r, m.peek_u32(PDONE)), (Err(Errno::EINVAL), 0));
        let (r, _) = ext(&mut m, &[(4, l3.0, 0), (4, l3.0, 0)], SELF);
        assert_eq!((r, m.peek_u32(PDONE)), (Err(Errno::EINVAL), 1));
        assert_eq!(ext(&mut m, &[(4, data.0, 0)], SELF).0, Err(Errno::EINVAL));
        // Pinning a frame mapped writable, or as the wrong level.
        assert_eq!(ext(&mut m, &[(0, data.0, 0)], SELF).0, Err(Errno::EINVAL));
        assert_eq!(ext(&mut m, &[(1, l1.0, 0)], SELF).0, Err(Errno::EINVAL));
        // NEW_BASEPTR to a frame that does not validate as an L4.
        let bad = m.give(DOM);
        m.set(bad, 5, (data.0 << 12) | PRW);
        let before = m.frames.clone();
        let (r, fx) = ext(&mut m, &[(5, bad.0, 0)], SELF);
        assert_eq!(r, Err(Errno::EINVAL));
        assert_eq!(m.vcpu.kernel_l4, Some(l4));
        assert!(!fx.root_sync.local);
        assert_eq!(
            m.frames[..before.len()]
                .iter()
                .map(|f| f.count())
                .collect::<Vec<_>>(),
            before.iter().map(|f| f.count()).collect::<Vec<_>>()
        );
        // A good one: a fresh L4 sharing the L3.
        let new = m.give(DOM);
        m.set(new, 511, (l3.0 << 12) | PRW);
        let (r, fx) = ext(&mut m, &[(5, new.0, 0)], SELF);
        assert_eq!(r, Ok(0));
        assert_eq!(m.vcpu.kernel_l4, Some(new));
        assert!(fx.root_sync.local && fx.ldt_changed);
        assert_eq!(fx.flush.local, TlbFlush::Full);
        assert_eq!(m.info(l4).type_count(), 1, "the pin is left");
        assert_eq!(m.info(l3).type_count(), 2);
        // The same again: a reload only.
        let (r, fx) = ext(&mut m, &[(5, new.0, 0)], SELF);
        assert_eq!(
            (r, fx.ldt_changed, fx.root_sync.local),
            (Ok(0), false, true)
        );
        // User base pointer: recorded with references, 0 drops it.
        assert_eq!(ext(&mut m, &[(15, l4.0, 0)], SELF).0, Ok(0));
        assert_eq!(m.vcpu.user_l4, Some(l4));
        assert_eq!(m.info(l4).type_count(), 2);
        assert_eq!(ext(&mut m, &[(15, bad.0, 0)], SELF).0, Err(Errno::EINVAL));
        assert_eq!(ext(&mut m, &[(15, 0, 0)], SELF).0, Ok(0));
        assert_eq!(m.vcpu.user_l4, None);
        assert_eq!(m.info(l4).type_count(), 1);
        // Base pointers of a foreign owner: EPERM.
        let io = u64::from(DomId::IO.0);
        for cmd in [5, 15, 6, 7, 8, 9, 10, 11, 12, 13, 18] {
            assert_eq!(
                ext(&mut m, &[(cmd, new.0, MASK)], io).0,
                Err(Errno::EPERM),
                "cmd {cmd}"
            );
        }
        let vcpu = m.vcpu;
        m.check_invariants(&[vcpu.kernel_l4.unwrap()]);
    }

    #[test]
    fn flushes_ldt_and_pages() {
        let (mut m, [_, _, _, l1], data) = setup();
        m.poke(MASK, &1u64.to_le_bytes());
        let (r, fx) = ext(
            &mut m,
            &[
                (7, 0x1000, 0),
                (7, 0x8000_0000_0000, 0),
                (11, 0x2000, 0),
                (11, 0xFFFF_8000_0000_0000, 0),
                (9, 0x3000, MASK),
            ],
            SELF,
        );
        assert_eq!(r, Ok(0));
        assert_eq!(fx.flush.local.pages(), &[0x1000, 0x3000]);
        assert_eq!(fx.flush.domain.pages(), &[0x2000]);
        let (_, fx) = ext(&mut m, &[(6, 0, 0), (10, 0, 0)], SELF);
        assert_eq!(
            (fx.flush.local, fx.flush.domain),
            (TlbFlush::Full, TlbFlush::Full)
        );
        // A bitmap naming only vCPUs that do not exist flushes nothing; an
        // unreadable one is EINVAL.
        m.poke(MASK, &2u64.to_le_bytes());
        let (r, fx) = ext(&mut m, &[(8, 0, MASK)], SELF);
        assert_eq!((r, fx), (Ok(0), Effects::default()));
        assert_eq!(ext(&mut m, &[(8, 0, 0x10)], SELF).0, Err(Errno::EINVAL));
        // Caches.
        let (r, fx) = ext(&mut m, &[(12, 0, 0)], SELF);
        assert_eq!((r, fx.cache), (Ok(0), CacheFlush::Local));
        let (r, fx) = ext(&mut m, &[(18, 0, 0), (12, 0, 0)], SELF);
        assert_eq!((r, fx.cache), (Ok(0), CacheFlush::Global));
        // SET_LDT.
        for (base, ents) in [(0x1001, 1), (0x1000, 8193), (0xFFFF_8000_0000_0000, 1)] {
            assert_eq!(ext(&mut m, &[(13, base, ents)], SELF).0, Err(Errno::EINVAL));
        }
        let (r, fx) = ext(&mut m, &[(13, 0x5000, 8192)], SELF);
        assert_eq!((r, fx.ldt_changed), (Ok(0), true));
        assert_eq!((m.vcpu.ldt_base, m.vcpu.ldt_ents), (0x5000, 8192));
        let (_, fx) = ext(&mut m, &[(13, 0x5000, 8192)], SELF);
        assert!(!fx.ldt_changed);
        assert_eq!(ext(&mut m, &[(13, 0x1001, 0)], SELF).0, Ok(0));
        assert_eq!((m.vcpu.ldt_base, m.vcpu.ldt_ents), (0, 0));
        // Page clearing and copying.
        let (a, b) = (m.give(DOM), m.give(DOM));
        m.set(b, 7, 0x55);
        assert_eq!(ext(&mut m, &[(17, a.0, b.0)], SELF).0, Ok(0));
        assert_eq!(m.get(a, 7), 0x55);
        assert_eq!(ext(&mut m, &[(16, a.0, 0)], SELF).0, Ok(0));
        assert_eq!(m.get(a, 7), 0);
        assert_eq!(
            ext(&mut m, &[(16, data.0, 0)], SELF).0,
            Ok(0),
            "writable frames may be cleared"
        );
        assert_eq!(ext(&mut m, &[(16, l1.0, 0)], SELF).0, Err(Errno::EINVAL));
        assert_eq!(ext(&mut m, &[(17, l1.0, b.0)], SELF).0, Err(Errno::EINVAL));
        assert_eq!(ext(&mut m, &[(17, a.0, 63)], SELF).0, Err(Errno::EINVAL));
        assert_eq!(
            ext(&mut m, &[(17, a.0, l1.0)], SELF).0,
            Ok(0),
            "tables may be read"
        );
        // Removed and unknown commands.
        assert_eq!(ext(&mut m, &[(19, 0, 0)], SELF).0, Err(Errno::EOPNOTSUPP));
        assert_eq!(ext(&mut m, &[(20, 0, 0)], SELF).0, Err(Errno::EOPNOTSUPP));
        for cmd in [14, 21, 99, u32::MAX] {
            assert_eq!(ext(&mut m, &[(cmd, 0, 0)], SELF).0, Err(Errno::ENOSYS));
        }
        // foreigndom is a 16-bit id for mmuext_op.
        assert_eq!(ext(&mut m, &[(6, 0, 0)], (1 << 16) | SELF).0, Ok(0));
        assert_eq!(ext(&mut m, &[(6, 0, 0)], 0).0, Err(Errno::ESRCH));
        let vcpu = m.vcpu;
        m.check_invariants(&[vcpu.kernel_l4.unwrap()]);
    }

    #[test]
    fn update_va_mapping_and_flush_flags() {
        let (mut m, [.., l1], data) = setup();
        let i = pte::table_index(VA, 1);
        let mut fx = Effects::default();
        let ro = (data.0 << 12) | PRO;
        assert_eq!(update_va_mapping(&mut m, &mut fx, VA, ro, 2), Ok(0));
        assert_eq!(m.get(l1, i), ro);
        assert_eq!(fx.flush.local.pages(), &[VA]);
        let mut fx = Effects::default();
        assert_eq!(update_va_mapping(&mut m, &mut fx, VA, ro, 1 | 4), Ok(0));
        assert_eq!(fx.flush.domain, TlbFlush::Full);
        let mut fx = Effects::default();
        assert_eq!(update_va_mapping(&mut m, &mut fx, VA, ro, 3), Ok(0));
        assert_eq!(fx, Effects::default());
        // UVMF_MULTI with an unreadable bitmap: written, then EFAULT.
        let mut fx = Effects::default();
        let rw = (data.0 << 12) | PRW;
        assert_eq!(
            update_va_mapping(&mut m, &mut fx, VA, rw, 2 | 0x10),
            Err(Errno::EFAULT)
        );
        assert_eq!(m.get(l1, i), rw);
        m.poke(MASK, &1u64.to_le_bytes());
        assert_eq!(update_va_mapping(&mut m, &mut fx, VA, rw, 1 | MASK), Ok(0));
        assert_eq!(fx.flush.local, TlbFlush::Full);
        // Errors flush nothing.
        let mut fx = Effects::default();
        let foreign = m.give(OTHER);
        let r = update_va_mapping(&mut m, &mut fx, VA, (foreign.0 << 12) | PRO, 2);
        assert_eq!((r, fx), (Err(Errno::EBUSY), Effects::default()));
        for va in [0x1000, VA + (1 << 21), 0xFFFF_8000_0000_0000] {
            assert_eq!(
                update_va_mapping(&mut m, &mut fx, va, 0, 2),
                Err(Errno::EINVAL)
            );
        }
        // No base pointer yet.
        let root = m.vcpu.kernel_l4.take();
        assert_eq!(
            update_va_mapping(&mut m, &mut fx, VA, 0, 0),
            Err(Errno::EINVAL)
        );
        m.vcpu.kernel_l4 = root;
        // The other-domain form.
        assert_eq!(
            update_va_mapping_otherdomain(&mut m, &mut fx, VA, 0, 0, 0),
            Err(Errno::ESRCH)
        );
        assert_eq!(
            update_va_mapping_otherdomain(&mut m, &mut fx, VA, 0, 0, 9),
            Err(Errno::ESRCH)
        );
        assert_eq!(
            update_va_mapping_otherdomain(&mut m, &mut fx, VA, ro, 0, SELF),
            Ok(0)
        );
        let r = update_va_mapping_otherdomain(&mut m, &mut fx, VA, (foreign.0 << 12) | PRW, 0, 1);
        assert_eq!(r, Ok(0));
        m.iomem.insert(0xFEE00);
        let io = u64::from(DomId::IO.0);
        let r = update_va_mapping_otherdomain(&mut m, &mut fx, VA, (0xFEE00 << 12) | PRW, 0, io);
        assert_eq!(r, Ok(0));
        assert_eq!(m.get(l1, i), (0xFEE00 << 12) | PRW | pte::PWT | pte::PCD);
        let vcpu = m.vcpu;
        m.check_invariants(&[vcpu.kernel_l4.unwrap()]);
    }

    #[test]
    fn vm_assist_types_and_commands() {
        let mut m = FakeMachine::new(4);
        for ty in [0, 1, 2, 3, 4, 5, 32] {
            assert_eq!(vm_assist(&mut m, 0, ty), Ok(0), "type {ty}");
        }
        assert_eq!(m.domains[&DOM.0].vm_assist, 0x1_0000_003F);
        assert_eq!(vm_assist(&mut m, 1, 2), Ok(0));
        assert_eq!(m.domains[&DOM.0].vm_assist, 0x1_0000_003B);
        for ty in [6, 31, 33, 63, 64, 0xFFFF_FFFF] {
            assert_eq!(vm_assist(&mut m, 0, ty), Err(Errno::EINVAL), "type {ty}");
        }
        assert_eq!(
            vm_assist(&mut m, 0, (1 << 32) | 6),
            Err(Errno::EINVAL),
            "type is 32-bit"
        );
        assert_eq!(vm_assist(&mut m, 0, (1 << 32) | 2), Ok(0));
        assert_eq!(vm_assist(&mut m, 2, 2), Err(Errno::ENOSYS));
        assert_eq!(vm_assist(&mut m, 2, 6), Err(Errno::EINVAL), "type first");
        assert_eq!(vm_assist(&mut m, 1 << 32, 2), Ok(0), "cmd is 32-bit");
    }

    #[test]
    fn writable_page_tables() {
        let (mut m, [_, _, _, l1], data) = setup();
        let dom0 = m.domains[&DOM.0];
        let mut domu = dom0;
        domu.privilege = None;
        // Write (2) to a present (1) page from kernel mode.
        assert!(ptwr_applies(&dom0, 3, true));
        assert!(!ptwr_applies(&domu, 3, true), "needs the assist");
        domu.vm_assist = VmAssistType::WritablePagetables.mask();
        assert!(ptwr_applies(&domu, 3, true));
        assert!(!ptwr_applies(&dom0, 3, false));
        assert!(!ptwr_applies(&dom0, 2, true));
        assert!(!ptwr_applies(&dom0, 1, true));
        assert!(!ptwr_applies(&dom0, 3 | 8, true));
        assert!(!ptwr_applies(&dom0, 3 | 16, true));
        // The L1 is mapped read-only 4 pages above VA (see build_tables).
        let cr2 = VA + 4 * 4096 + 8 * 300;
        let w = PtwrWrite {
            addr: cr2,
            bytes: 8,
            op: Update::Write((data.0 << 12) | PRO),
        };
        let mut fx = Effects::default();
        assert_eq!(ptwr_fault(&mut m, &mut fx, cr2, w), PtwrOutcome::Done(0));
        assert_eq!(m.get(l1, 300), (data.0 << 12) | PRO);
        let bad = PtwrWrite {
            op: Update::Write((l1.0 << 12) | PRW),
            ..w
        };
        assert_eq!(
            ptwr_fault(&mut m, &mut fx, cr2, bad),
            PtwrOutcome::NotHandled
        );
        assert_eq!(m.get(l1, 300), (data.0 << 12) | PRO);
        m.vcpu.kernel_l4 = None;
        assert_eq!(ptwr_fault(&mut m, &mut fx, cr2, w), PtwrOutcome::NotHandled);
    }
}
