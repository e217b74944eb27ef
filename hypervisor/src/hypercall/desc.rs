//! Guest descriptor tables: `set_gdt` and `update_descriptor`.
//!
//! A guest's GDT frames hold the `SegDesc` type for as long as they are
//! loaded (so they cannot be mapped writable), and every descriptor in
//! them has passed [`check_descriptor`]: code and data segments with DPL
//! raised to at least 1 (so nothing a guest loads can run or be used at
//! ring 0), not-present entries, and nothing else — no LDT or TSS
//! descriptors and no gates of any kind. The CPU reads the GDT through
//! read-only mappings, so descriptors are stored with their accessed bit
//! already set. LDT pages follow the same rules, claimed lazily on the
//! CPU's first access ([`take_ldt_page`]).
#![forbid(unsafe_code)]

use dom0_abi::Errno;
use dom0_abi::segment::FIRST_RESERVED_GDT_ENTRY;
use x86_64::structures::gdt::DescriptorFlags;

use super::mmu::MmuEnv;
use crate::mm::effects::Effects;
use crate::mm::frame_table::{Owner, PageType};
use crate::mm::pte;
use crate::mm::types::Mmu;
use crate::vcpu::Pending;
use dom0_abi::types::{DomId, Mfn};

/// Descriptors per GDT frame.
const PER_FRAME: u64 = 512;
/// Frames a guest GDT may span (entries 0-7167).
pub const MAX_GDT_FRAMES: usize = FIRST_RESERVED_GDT_ENTRY / 512;

const PRESENT: u64 = DescriptorFlags::PRESENT.bits();
const CODE_OR_DATA: u64 = DescriptorFlags::USER_SEGMENT.bits();
const ACCESSED: u64 = DescriptorFlags::ACCESSED.bits();

/// Checks one 8-byte descriptor and returns it as it must be stored, or
/// `None` if a guest may not have it.
pub const fn check_descriptor(d: u64) -> Option<u64> {
    if d & PRESENT == 0 {
        return Some(d);
    }
    if d & CODE_OR_DATA != 0 {
        let raised = if (d >> 45) & 3 == 0 { d | (1 << 45) } else { d };
        return Some(raised | ACCESSED);
    }
    // A system descriptor of type 0 is invalid and faults when loaded.
    if (d >> 40) & 0xf == 0 { Some(d) } else { None }
}

/// `set_gdt(frames, entries)`: loads a new GDT of `entries` descriptors
/// from the machine frames listed at `frames`. Errors: `-EINVAL` for more
/// than 7168 entries, a frame the domain does not own or that cannot be a
/// descriptor frame (a page table, or mapped writable), or a descriptor
/// [`check_descriptor`] refuses; `-EFAULT` for an unreadable list. On
/// failure the old GDT stays.
pub fn set_gdt(
    env: &mut impl MmuEnv,
    fx: &mut Effects,
    frames: u64,
    entries: u64,
) -> Result<u64, Errno> {
    let entries = entries & 0xffff_ffff;
    if entries > FIRST_RESERVED_GDT_ENTRY as u64 {
        return Err(Errno::EINVAL);
    }
    let count = usize::try_from(entries.div_ceil(PER_FRAME)).map_err(|_| Errno::EINVAL)?;
    let mut list = [0u64; MAX_GDT_FRAMES];
    for (i, slot) in list.iter_mut().enumerate().take(count) {
        let mut raw = [0u8; 8];
        env.copy_from_guest(frames.wrapping_add(8 * i as u64), &mut raw)?;
        *slot = u64::from_le_bytes(raw);
    }
    take_gdt_frames(env, fx, &list[..count])?;
    let vcpu = env.vcpu();
    let old = (vcpu.gdt_frames, vcpu.gdt_count);
    vcpu.gdt_frames = list;
    vcpu.gdt_count = count;
    vcpu.gdt_entries = entries;
    vcpu.pending.insert(Pending::GDT);
    release(env, fx, &old.0[..old.1]);
    Ok(0)
}

/// Takes the descriptor type of every frame in `frames` for the calling
/// domain, checking (and fixing up) every descriptor in them. `EINVAL`
/// (with none of them held) if one cannot be a descriptor frame.
pub fn take_gdt_frames(
    env: &mut impl MmuEnv,
    fx: &mut Effects,
    frames: &[u64],
) -> Result<(), Errno> {
    let dom = env.domain().id;
    take_gdt_frames_of(env, fx, dom, frames)
}

/// [`take_gdt_frames`] for domain `dom`'s frames (the caller's, or
/// another domain's whose context the control domain sets).
pub fn take_gdt_frames_of(
    env: &mut impl MmuEnv,
    fx: &mut Effects,
    dom: DomId,
    frames: &[u64],
) -> Result<(), Errno> {
    let owner = Owner::Domain(dom);
    for (i, &mfn) in frames.iter().enumerate() {
        if let Err(e) = take_frame(env, fx, Mfn(mfn), owner) {
            release(env, fx, &frames[..i]);
            return Err(e);
        }
    }
    Ok(())
}

/// Takes the descriptor type for one GDT frame and checks (and fixes up)
/// every descriptor in it.
fn take_frame(
    env: &mut impl MmuEnv,
    fx: &mut Effects,
    mfn: Mfn,
    owner: Owner,
) -> Result<(), Errno> {
    Mmu::new(env, fx)
        .get_page_and_type(mfn, owner, PageType::SegDesc)
        .map_err(|_| Errno::EINVAL)?;
    for index in 0..512 {
        let d = env.read_pte(mfn, index);
        match check_descriptor(d) {
            Some(fixed) if fixed != d => env.write_pte(mfn, index, fixed),
            Some(_) => {}
            None => {
                Mmu::new(env, fx).put_page_and_type(mfn);
                return Err(Errno::EINVAL);
            }
        }
    }
    Ok(())
}

/// Drops what [`take_gdt_frames`] took.
pub fn release(env: &mut impl MmuEnv, fx: &mut Effects, frames: &[u64]) {
    let mut mmu = Mmu::new(env, fx);
    for &mfn in frames {
        mmu.put_page_and_type(Mfn(mfn));
    }
}

/// Claims the guest page at `va` for the LDT (the lazy half of
/// `MMUEXT_SET_LDT`, run when the CPU first touches that page of the LDT):
/// the page must be mapped in the vCPU's page tables and be the domain's;
/// it takes the descriptor type (so it can no longer be mapped writable)
/// and every descriptor in it is checked as for the GDT. Returns its frame,
/// or `None` when the guest gets the page fault instead.
pub fn take_ldt_page(env: &mut impl MmuEnv, fx: &mut Effects, va: u64) -> Option<Mfn> {
    let root = env.vcpu_mm().kernel_l4?;
    let entry = Mmu::new(env, fx).l1e_of(root, va)?;
    if !pte::is_present(entry) {
        return None;
    }
    let mfn = pte::frame(entry);
    let owner = Owner::Domain(env.domain().id);
    take_frame(env, fx, mfn, owner).ok()?;
    Some(mfn)
}

/// Gives back an LDT page claimed by [`take_ldt_page`].
pub fn release_ldt_page(env: &mut impl MmuEnv, fx: &mut Effects, mfn: Mfn) {
    Mmu::new(env, fx).put_page_and_type(mfn);
}

/// `update_descriptor(maddr, desc)`: writes one checked descriptor at
/// machine address `maddr` (8-byte aligned) in a frame of the caller's: a
/// loaded descriptor frame, or any frame that may be mapped writable.
/// `-EINVAL` for a misaligned address, a frame the caller does not own or
/// that is a page table, or a descriptor [`check_descriptor`] refuses.
pub fn update_descriptor(
    env: &mut impl MmuEnv,
    fx: &mut Effects,
    maddr: u64,
    desc: u64,
) -> Result<u64, Errno> {
    if !maddr.is_multiple_of(8) {
        return Err(Errno::EINVAL);
    }
    let fixed = check_descriptor(desc).ok_or(Errno::EINVAL)?;
    let mfn = Mfn(maddr >> 12);
    let owner = Owner::Domain(env.domain().id);
    let index = usize::try_from((maddr & 0xfff) / 8).map_err(|_| Errno::EINVAL)?;
    let mut mmu = Mmu::new(env, fx);
    if mmu
        .get_page_and_type(mfn, owner, PageType::SegDesc)
        .is_err()
    {
        mmu.get_page_and_type(mfn, owner, PageType::Writable)
            .map_err(|_| Errno::EINVAL)?;
    }
    env.write_pte(mfn, index, fixed);
    Mmu::new(env, fx).put_page_and_type(mfn);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_rules() {
        let code64 = |dpl: u64| 0x00AF_9A00_0000_FFFF | dpl << 45;
        let data = |dpl: u64| 0x00CF_9200_0000_FFFF | dpl << 45;
        assert_eq!(check_descriptor(0x1234), Some(0x1234), "not present");
        assert_eq!(check_descriptor(code64(3)), Some(code64(3) | ACCESSED));
        assert_eq!(
            check_descriptor(code64(0)),
            Some(code64(1) | ACCESSED),
            "DPL 0 raised to 1"
        );
        assert_eq!(check_descriptor(data(1)), Some(data(1) | ACCESSED));
        for kind in [2u64, 9, 0xb, 0xc, 0xe, 0xf] {
            assert_eq!(
                check_descriptor(0x0000_8000_0000_0067 | kind << 40),
                None,
                "system type {kind}"
            );
        }
        assert_eq!(
            check_descriptor(0x0000_8000_0000_0000),
            Some(0x0000_8000_0000_0000),
            "system type 0"
        );
    }
}
