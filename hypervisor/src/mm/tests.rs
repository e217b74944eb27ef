//! The page-type system as a state machine, on the fake machine.
#![allow(
    clippy::cast_possible_truncation,
    reason = "test fixtures use small frame numbers and indices"
)]

use dom0_abi::Errno;
use dom0_abi::types::Mfn;

use super::INVALID_M2P_ENTRY;
use super::effects::TlbFlush;
use super::fake::{DOM, FakeMachine, OTHER, PRO, PRW, XorShift};
use super::frame_table::{FrameInfo, FrameTable, Owner, PageType};
use super::machine::{MmMachine, PageTableMemory, VcpuMm};
use super::pte;
use super::types::{L4Slots, MapCtx, PtwrOutcome, PtwrWrite, l4_generation};
use crate::emulate::{Alu, Rmw, Update};

const VA: u64 = 0xFFFF_FFFF_8020_3000;
const OWN: Owner = Owner::Domain(DOM);

/// The reference state of every frame: counts, owner, flags, and the
/// type where it is held (a type kept at count 0 is not a reference).
type Refs = (u32, u32, Owner, bool, bool, Option<PageType>);

fn snapshot(m: &FakeMachine) -> Vec<Refs> {
    m.frames
        .iter()
        .map(|f| {
            let ty = (f.type_count() > 0).then(|| f.page_type());
            (
                f.count(),
                f.type_count(),
                f.owner(),
                f.is_pinned(),
                f.is_allocated(),
                ty,
            )
        })
        .collect()
}

#[test]
fn general_references_follow_the_owner() {
    let mut m = FakeMachine::new(16);
    let a = m.give(DOM);
    assert_eq!(m.tot_pages(DOM), 1);
    assert_eq!(m.m2p[a.0 as usize], a.0);
    let (ok, _) = m.with(|mmu| {
        (
            mmu.get_page(a, OWN),
            mmu.get_page(a, Owner::Domain(OTHER)),
            mmu.get_page(Mfn(9), OWN),
            mmu.get_page(Mfn(99), OWN),
        )
    });
    assert_eq!(ok, (true, false, false, false));
    assert_eq!(m.info(a).count(), 2);
    m.with(|mmu| mmu.put_page(a));
    // Giving back the allocation frees the frame.
    let (r, fx) = m.with(|mmu| mmu.remove_page(DOM, a.0));
    assert_eq!(r, Ok(()));
    assert_eq!(m.info(a), FrameInfo::UNOWNED);
    assert!(m.free.contains(&a.0));
    assert_eq!(m.m2p[a.0 as usize], INVALID_M2P_ENTRY);
    assert_eq!(m.tot_pages(DOM), 0);
    assert!(fx.stale_writable && fx.flush.domain == TlbFlush::Full);
    // Removing again: not owned.
    assert_eq!(m.with(|mmu| mmu.remove_page(DOM, a.0)).0, Err(Errno::ENXIO));
    assert_eq!(
        m.with(|mmu| mmu.remove_page(DOM, 1000)).0,
        Err(Errno::EINVAL)
    );
}

#[test]
fn put_without_reference_is_reported_not_panicking() {
    let mut m = FakeMachine::new(4);
    let (_, fx) = m.with(|mmu| {
        mmu.put_page(Mfn(1));
        mmu.put_page_type(Mfn(1));
        mmu.put_page(Mfn(77));
    });
    assert!(fx.crash);
    assert_eq!(m.info(Mfn(1)), FrameInfo::UNOWNED);
}

#[test]
fn writable_and_table_types_exclude_each_other() {
    let mut m = FakeMachine::new(16);
    let f = m.give(DOM);
    let (r, fx) = m.with(|mmu| mmu.get_page_type(f, PageType::Writable));
    assert_eq!(r, Ok(()));
    assert!(!fx.stale_writable, "a fresh frame has no stale mappings");
    assert_eq!(
        m.with(|mmu| mmu.get_page_type(f, PageType::L1)).0,
        Err(Errno::EINVAL)
    );
    assert_eq!(
        m.with(|mmu| mmu.get_page_type(f, PageType::Writable)).0,
        Ok(())
    );
    assert_eq!(m.info(f).type_count(), 2);
    m.with(|mmu| {
        mmu.put_page_type(f);
        mmu.put_page_type(f);
    });
    // The type is kept at count 0; changing it now needs a flush.
    assert_eq!(m.info(f).page_type(), PageType::Writable);
    let (r, fx) = m.with(|mmu| mmu.get_page_type(f, PageType::L1));
    assert_eq!(r, Ok(()));
    assert!(fx.stale_writable);
    assert!(m.info(f).has_live_type(PageType::L1));
    assert_eq!(
        m.with(|mmu| mmu.get_page_type(f, PageType::Writable)).0,
        Err(Errno::EINVAL)
    );
    assert_eq!(
        m.with(|mmu| mmu.get_page_type(f, PageType::L2)).0,
        Err(Errno::EINVAL)
    );
    m.with(|mmu| mmu.put_page_type(f));
    assert!(!m.info(f).is_validated());
    assert_eq!(m.info(f).type_count(), 0);
}

#[test]
fn pinning_validates_the_whole_tree_and_unpinning_undoes_it() {
    let mut m = FakeMachine::new(32);
    let data = m.give(DOM);
    let [l4, l3, l2, l1] = m.build_tables(DOM, VA, data);
    let (r, _) = m.with(|mmu| mmu.pin(l4, PageType::L4, OWN));
    assert_eq!(r, Ok(()));
    for (t, ty) in [
        (l4, PageType::L4),
        (l3, PageType::L3),
        (l2, PageType::L2),
        (l1, PageType::L1),
    ] {
        assert!(m.info(t).has_live_type(ty), "{ty:?}");
        assert_eq!(m.info(t).type_count(), 1);
    }
    assert!(m.info(l4).is_pinned());
    assert!(m.info(data).has_live_type(PageType::Writable));
    m.check_invariants(&[]);
    // Pinning again fails and changes nothing.
    let before = snapshot(&m);
    assert_eq!(
        m.with(|mmu| mmu.pin(l4, PageType::L4, OWN)).0,
        Err(Errno::EINVAL)
    );
    assert_eq!(m.with(|mmu| mmu.pin(l3, PageType::L3, OWN)).0, Ok(()));
    assert_eq!(m.info(l3).type_count(), 2);
    m.check_invariants(&[]);
    assert_eq!(m.with(|mmu| mmu.unpin(l3, OWN)).0, Ok(()));
    assert_eq!(snapshot(&m), before);
    // Unpinning the root devalidates everything below it.
    assert_eq!(m.with(|mmu| mmu.unpin(l4, OWN)).0, Ok(()));
    for t in [l4, l3, l2, l1, data] {
        assert_eq!(m.info(t).type_count(), 0);
        assert_eq!(m.info(t).count(), 1, "only the allocation is left");
    }
    m.check_invariants(&[]);
    assert_eq!(m.with(|mmu| mmu.unpin(l4, OWN)).0, Err(Errno::EINVAL));
    assert_eq!(m.with(|mmu| mmu.unpin(data, OWN)).0, Err(Errno::EINVAL));
    assert_eq!(m.with(|mmu| mmu.unpin(Mfn(31), OWN)).0, Err(Errno::EINVAL));
}

#[test]
fn l4_contents_are_tracked_by_generation() {
    let mut m = FakeMachine::new(32);
    let data = m.give(DOM);
    let [l4, l3, _, _] = m.build_tables(DOM, VA, data);
    // Other tests run alongside and only ever add to the count.
    let before = l4_generation();
    assert_eq!(m.with(|mmu| mmu.pin(l4, PageType::L4, OWN)).0, Ok(()));
    let validated = l4_generation();
    assert!(validated > before, "validating an L4 moves it");
    let mut entries = [0u64; 512];
    for (i, e) in entries.iter_mut().enumerate() {
        *e = m.get(l4, i);
    }
    let slots = L4Slots::scan(l4, validated, &entries);
    let i = pte::table_index(VA, 4);
    let mut used = [0u64; 8];
    used[i / 64] = 1 << (i % 64);
    assert_eq!(slots.used, used);
    assert!(slots.valid_for(l4, validated));
    assert!(!slots.valid_for(l3, validated));
    // An entry update, even one refused later on, moves it too.
    let j = (i + 1) % 256;
    let link = (l3.0 << 12) | PRW;
    let _ = m.with(|mmu| mmu.mod_upper_entry(l4, PageType::L4, j, link, false, DOM));
    assert!(!slots.valid_for(l4, l4_generation()));
    // The hypervisor's slots are never counted as used.
    entries[256] = 1;
    entries[300] = 1;
    let slots = L4Slots::scan(l4, 0, &entries);
    assert_eq!(slots.used[4], 1 << (300 - 256));
}

#[test]
fn a_failed_validation_takes_no_reference() {
    let mut m = FakeMachine::new(32);
    let data = m.give(DOM);
    let foreign = m.give(OTHER);
    let [l4, _, _, l1] = m.build_tables(DOM, VA, data);
    // The last entry of the deepest table maps a frame of another domain.
    m.set(l1, 511, (foreign.0 << 12) | PRO);
    let before = snapshot(&m);
    assert_eq!(
        m.with(|mmu| mmu.pin(l4, PageType::L4, OWN)).0,
        Err(Errno::EBUSY)
    );
    assert_eq!(snapshot(&m), before);
    assert_eq!(
        m.with(|mmu| mmu.pin(l1, PageType::L1, OWN)).0,
        Err(Errno::EBUSY)
    );
    assert_eq!(snapshot(&m), before);
    // The same table with a free frame, and with an unowned hypervisor frame.
    m.set(l1, 511, (30 << 12) | PRO);
    assert_eq!(
        m.with(|mmu| mmu.pin(l4, PageType::L4, OWN)).0,
        Err(Errno::EBUSY)
    );
    assert_eq!(snapshot(&m), before);
    m.set(l1, 511, 0);
    assert_eq!(m.with(|mmu| mmu.pin(l4, PageType::L4, OWN)).0, Ok(()));
    m.check_invariants(&[]);
}

#[test]
fn tables_mapped_writable_cannot_be_typed_and_vice_versa() {
    let mut m = FakeMachine::new(32);
    let data = m.give(DOM);
    let [l4, _, _, l1] = m.build_tables(DOM, VA, data);
    // An L1 mapping itself writable does not validate.
    let i = pte::table_index(VA, 1);
    m.set(l1, i + 4, (l1.0 << 12) | PRW);
    assert_eq!(
        m.with(|mmu| mmu.pin(l4, PageType::L4, OWN)).0,
        Err(Errno::EBUSY)
    );
    m.set(l1, i + 4, (l1.0 << 12) | PRO);
    assert_eq!(m.with(|mmu| mmu.pin(l4, PageType::L4, OWN)).0, Ok(()));
    // Now make the L1 or the L4 writable through the L1: EBUSY.
    let ctx = m.ctx(DOM);
    for t in [l1, l4] {
        let r = m
            .with(|mmu| mmu.mod_l1_entry(l1, 300, (t.0 << 12) | PRW, false, &ctx))
            .0;
        assert_eq!(r, Err(Errno::EBUSY));
    }
    // A frame mapped writable cannot become a table.
    assert_eq!(
        m.with(|mmu| mmu.pin(data, PageType::L1, OWN)).0,
        Err(Errno::EINVAL)
    );
    m.check_invariants(&[]);
}

#[test]
fn mapping_frames_of_others() {
    let mut m = FakeMachine::new(32);
    let data = m.give(DOM);
    let foreign = m.give(OTHER);
    let [l4, ..] = m.build_tables(DOM, VA, data);
    assert_eq!(m.with(|mmu| mmu.pin(l4, PageType::L4, OWN)).0, Ok(()));
    let (l1, _) = m.with(|mmu| mmu.walk_to_l1(l4, VA)).0.unwrap();
    let ctx = m.ctx(DOM);
    for target in [foreign, Mfn(31)] {
        for flags in [PRO, PRW] {
            let r = m.with(|mmu| mmu.mod_l1_entry(l1, 300, (target.0 << 12) | flags, false, &ctx));
            assert_eq!(r.0, Err(Errno::EBUSY), "{target:?}");
        }
    }
    // A privileged foreign owner may map another domain's frame.
    let foreign_ctx = MapCtx {
        pg_owner: Owner::Domain(OTHER),
        pg_owner_privileged: true,
        ..ctx
    };
    let r = m.with(|mmu| mmu.mod_l1_entry(l1, 300, (foreign.0 << 12) | PRW, false, &foreign_ctx));
    assert_eq!(r.0, Ok(()));
    assert!(m.info(foreign).has_live_type(PageType::Writable));
    // An unprivileged one only its own.
    let weak = MapCtx {
        pg_owner_privileged: false,
        ..foreign_ctx
    };
    let r = m.with(|mmu| mmu.mod_l1_entry(l1, 301, (data.0 << 12) | PRO, false, &weak));
    assert_eq!(r.0, Err(Errno::EBUSY));
    m.check_invariants(&[]);
}

#[test]
fn pte_flag_rules_at_every_level() {
    let mut m = FakeMachine::new(32);
    let data = m.give(DOM);
    let [l4, l3, l2, l1] = m.build_tables(DOM, VA, data);
    assert_eq!(m.with(|mmu| mmu.pin(l4, PageType::L4, OWN)).0, Ok(()));
    let spare_l1 = m.give(DOM);
    let spare_l2 = m.give(DOM);
    let mut ctx = m.ctx(DOM);
    ctx.pt_io_caps = false;
    let pse = pte::PAT_PSE;
    let g = 1 << 8;
    for (table, ty, child) in [(l2, PageType::L2, spare_l1), (l3, PageType::L3, spare_l2)] {
        for bad in [pse, pte::PWT, pte::PCD, g] {
            let r = m.with(|mmu| {
                mmu.mod_upper_entry(table, ty, 7, (child.0 << 12) | PRW | bad, false, DOM)
            });
            assert_eq!(r.0, Err(Errno::EINVAL), "{ty:?} {bad:#x}");
        }
    }
    for bad in [pte::PWT, pte::PCD, pte::PAT_PSE] {
        let r = m.with(|mmu| mmu.mod_l1_entry(l1, 300, (data.0 << 12) | PRW | bad, false, &ctx));
        assert_eq!(r.0, Err(Errno::EINVAL));
        ctx.pt_io_caps = true;
        let r = m.with(|mmu| mmu.mod_l1_entry(l1, 300, (data.0 << 12) | PRW | bad, false, &ctx));
        assert_eq!(r.0, Ok(()));
        ctx.pt_io_caps = false;
    }
    // G, NX, bit 62 and the AVAIL bits are fine in an L1 entry.
    let fine = (data.0 << 12) | PRW | g | (1 << 63) | (1 << 62) | (7 << 9);
    assert_eq!(
        m.with(|mmu| mmu.mod_l1_entry(l1, 301, fine, false, &ctx)).0,
        Ok(())
    );
    // Kernel pages stay supervisor: the entry is stored as written.
    assert_eq!(m.get(l1, 301), fine);
    // PSE in a table being validated fails the validation too.
    m.with(|mmu| mmu.unpin(l4, OWN)).0.unwrap();
    m.set(l2, 9, (spare_l1.0 << 12) | PRW | pse);
    let before = snapshot(&m);
    assert_eq!(
        m.with(|mmu| mmu.pin(l4, PageType::L4, OWN)).0,
        Err(Errno::EINVAL)
    );
    assert_eq!(snapshot(&m), before);
    m.check_invariants(&[]);
}

#[test]
fn reserved_l4_slots_are_refused_and_ignored() {
    let mut m = FakeMachine::new(32);
    let data = m.give(DOM);
    let [l4, l3, ..] = m.build_tables(DOM, VA, data);
    // Junk in the hypervisor's slots is not validated (Xen overwrites them).
    m.set(l4, 256, 0xdead_b000 | PRW | pte::PAT_PSE);
    m.set(l4, 271, (l3.0 << 12) | PRW);
    assert_eq!(m.with(|mmu| mmu.pin(l4, PageType::L4, OWN)).0, Ok(()));
    assert_eq!(m.info(l3).type_count(), 1);
    let spare = m.give(DOM);
    for slot in [256, 257, 261, 262, 271] {
        let r = m.with(|mmu| {
            mmu.mod_upper_entry(l4, PageType::L4, slot, (spare.0 << 12) | PRW, false, DOM)
        });
        assert_eq!(r.0, Err(Errno::EINVAL), "slot {slot}");
        let r = m.with(|mmu| mmu.mod_upper_entry(l4, PageType::L4, slot, 0, false, DOM));
        assert_eq!(r.0, Err(Errno::EINVAL), "slot {slot}");
    }
    for slot in [255, 272] {
        let r = m.with(|mmu| {
            mmu.mod_upper_entry(l4, PageType::L4, slot, (spare.0 << 12) | PRW, false, DOM)
        });
        assert_eq!(r.0, Ok(()), "slot {slot}");
    }
    assert!(m.info(spare).has_live_type(PageType::L3));
    m.check_invariants(&[]);
    assert_eq!(m.with(|mmu| mmu.unpin(l4, OWN)).0, Ok(()));
    m.check_invariants(&[]);
    assert_eq!(m.info(spare).type_count(), 0);
}

/// Writes entry `slot` of the live table `table` (type `ty`) to point at
/// `target` with `flags`, as `mmu_update` would.
fn link(
    m: &mut FakeMachine,
    table: Mfn,
    ty: PageType,
    slot: usize,
    target: Mfn,
    flags: u64,
) -> Result<(), Errno> {
    m.with(|mmu| mmu.mod_upper_entry(table, ty, slot, (target.0 << 12) | flags, false, DOM))
        .0
}

#[test]
fn linear_self_maps_are_read_only_and_take_nothing() {
    let mut m = FakeMachine::new(32);
    let data = m.give(DOM);
    let [l4, l3, l2, _] = m.build_tables(DOM, VA, data);
    assert_eq!(m.with(|mmu| mmu.pin(l4, PageType::L4, OWN)).0, Ok(()));
    for (table, ty) in [(l2, PageType::L2), (l3, PageType::L3), (l4, PageType::L4)] {
        let before = snapshot(&m);
        assert_eq!(
            link(&mut m, table, ty, 100, table, PRW),
            Err(Errno::EINVAL),
            "{ty:?} RW"
        );
        assert_eq!(
            link(&mut m, table, ty, 100, table, PRO),
            Ok(()),
            "{ty:?} RO"
        );
        assert_eq!(
            snapshot(&m),
            before,
            "{ty:?}: a self-map holds no reference"
        );
        assert_eq!(m.info(table).linear_count(), 0);
        // RW is not on the fast path: turning it on revalidates, and fails.
        assert_eq!(link(&mut m, table, ty, 100, table, PRW), Err(Errno::EINVAL));
        m.check_invariants(&[]);
    }
    // A self-map present before validation passes it, and unpinning
    // releases everything.
    assert_eq!(m.with(|mmu| mmu.unpin(l4, OWN)).0, Ok(()));
    m.check_invariants(&[]);
    assert_eq!(m.with(|mmu| mmu.pin(l4, PageType::L4, OWN)).0, Ok(()));
    m.check_invariants(&[]);
    assert_eq!(m.with(|mmu| mmu.unpin(l4, OWN)).0, Ok(()));
    m.check_invariants(&[]);
    assert_eq!(m.info(l3).type_count(), 0);
}

#[test]
fn linear_entries_follow_xen_s_chain_rules() {
    let mut m = FakeMachine::new(48);
    let data = m.give(DOM);
    let [a, l3, l2, l1] = m.build_tables(DOM, VA, data);
    // B also points at A's L3, writable, so that once unpinned it cannot
    // pass for an L3 (neither as the L2's parent nor with a linear entry).
    let b = m.give(DOM);
    m.set(b, 0, (l3.0 << 12) | PRW);
    let c = m.give(DOM);
    for root in [a, b, c] {
        assert_eq!(m.with(|mmu| mmu.pin(root, PageType::L4, OWN)).0, Ok(()));
    }
    // Another validated L4, read-only: a reference and a type reference.
    assert_eq!(link(&mut m, a, PageType::L4, 1, b, PRW), Err(Errno::EINVAL));
    assert_eq!(link(&mut m, a, PageType::L4, 1, b, PRO), Ok(()));
    assert_eq!((m.info(b).count(), m.info(b).type_count()), (3, 2));
    assert_eq!(
        (m.info(a).linear_count(), m.info(b).linear_count()),
        (1, -1)
    );
    m.check_invariants(&[]);
    // A table may hold several linear entries...
    assert_eq!(link(&mut m, a, PageType::L4, 2, c, PRO), Ok(()));
    // ...but a target may hold none, and a holder may not be a target.
    assert_eq!(link(&mut m, b, PageType::L4, 1, c, PRO), Err(Errno::EINVAL));
    assert_eq!(link(&mut m, c, PageType::L4, 1, a, PRO), Err(Errno::EINVAL));
    // Other levels: a table of another level is neither a child nor a
    // linear target.
    assert_eq!(
        link(&mut m, l3, PageType::L3, 7, a, PRO),
        Err(Errno::EINVAL)
    );
    assert_eq!(
        link(&mut m, l2, PageType::L2, 7, l3, PRO),
        Err(Errno::EINVAL)
    );
    assert_eq!(link(&mut m, l2, PageType::L2, 7, l2, PRO), Ok(()));
    assert_eq!(
        link(&mut m, l2, PageType::L2, 8, l1, PRO),
        Ok(()),
        "an ordinary L1"
    );
    m.check_invariants(&[]);
    // Unpinned, B keeps its type through A's entry; removing the entry
    // devalidates it.
    assert_eq!(m.with(|mmu| mmu.unpin(b, OWN)).0, Ok(()));
    assert!(m.info(b).has_live_type(PageType::L4));
    let (r, _) = m.with(|mmu| mmu.mod_upper_entry(a, PageType::L4, 1, 0, false, DOM));
    assert_eq!(r, Ok(()));
    assert_eq!((m.info(b).type_count(), m.info(b).linear_count()), (0, 0));
    assert_eq!(m.info(a).linear_count(), 1);
    m.check_invariants(&[]);
    // A target that is not a validated L4 is refused (B is no longer one).
    assert_eq!(link(&mut m, a, PageType::L4, 1, b, PRO), Err(Errno::EINVAL));
    // Unpinning A drops its linear entry on C.
    assert_eq!(m.with(|mmu| mmu.unpin(a, OWN)).0, Ok(()));
    assert_eq!((m.info(c).type_count(), m.info(c).linear_count()), (1, 0));
    m.check_invariants(&[]);
}

#[test]
fn failed_validation_gives_back_linear_counts() {
    let mut m = FakeMachine::new(32);
    let data = m.give(DOM);
    let [a, _, _, _] = m.build_tables(DOM, VA, data);
    let b = m.give(DOM);
    assert_eq!(m.with(|mmu| mmu.pin(b, PageType::L4, OWN)).0, Ok(()));
    // A's entry 1 is linear to B; entry 2 is a writable self-map, which
    // fails A's validation after entry 1 took its references.
    m.set(a, 1, (b.0 << 12) | PRO);
    m.set(a, 2, (a.0 << 12) | PRW);
    let before = snapshot(&m);
    assert_eq!(
        m.with(|mmu| mmu.pin(a, PageType::L4, OWN)).0,
        Err(Errno::EINVAL)
    );
    assert_eq!(snapshot(&m), before);
    assert_eq!((m.info(a).linear_count(), m.info(b).linear_count()), (0, 0));
    m.check_invariants(&[]);
    m.set(a, 2, 0);
    assert_eq!(m.with(|mmu| mmu.pin(a, PageType::L4, OWN)).0, Ok(()));
    assert_eq!(
        (m.info(a).linear_count(), m.info(b).linear_count()),
        (1, -1)
    );
    m.check_invariants(&[]);
    let (report, _) = m.with(|mmu| mmu.teardown(DOM, &mut []));
    assert_eq!(report.remaining, 0);
    m.check_invariants(&[]);
}

#[test]
fn entry_updates_move_references() {
    let mut m = FakeMachine::new(32);
    let data = m.give(DOM);
    let other_data = m.give(DOM);
    let [l4, _, l2, l1] = m.build_tables(DOM, VA, data);
    assert_eq!(m.with(|mmu| mmu.pin(l4, PageType::L4, OWN)).0, Ok(()));
    let ctx = m.ctx(DOM);
    let i = pte::table_index(VA, 1);
    // Remap VA to another frame: the old loses its writable type.
    let r = m.with(|mmu| mmu.mod_l1_entry(l1, i, (other_data.0 << 12) | PRW, false, &ctx));
    assert_eq!(r.0, Ok(()));
    assert_eq!(m.info(data).type_count(), 0);
    assert!(m.info(other_data).has_live_type(PageType::Writable));
    m.check_invariants(&[]);
    // Fast path: A/D/G/US changes keep references and write once.
    m.writes.clear();
    let before = snapshot(&m);
    let same = (other_data.0 << 12) | PRW | pte::DIRTY | (1 << 8) | (1 << 2);
    assert_eq!(
        m.with(|mmu| mmu.mod_l1_entry(l1, i, same, false, &ctx)).0,
        Ok(())
    );
    assert_eq!(snapshot(&m), before);
    assert_eq!(m.writes, vec![(l1, i, same)]);
    // Read-only now: the writable type goes.
    let ro = (other_data.0 << 12) | PRO;
    assert_eq!(
        m.with(|mmu| mmu.mod_l1_entry(l1, i, ro, false, &ctx)).0,
        Ok(())
    );
    assert_eq!(m.info(other_data).type_count(), 0);
    // Preserve A/D: the dirty bit already there stays.
    m.set(l1, i, ro | pte::DIRTY);
    let r = m.with(|mmu| mmu.mod_l1_entry(l1, i, (other_data.0 << 12) | pte::PRESENT, true, &ctx));
    assert_eq!(r.0, Ok(()));
    assert_eq!(m.get(l1, i) & pte::DIRTY, pte::DIRTY);
    // Clearing the L2 entry devalidates the L1 below it.
    let j = pte::table_index(VA, 2);
    assert_eq!(
        m.with(|mmu| mmu.mod_upper_entry(l2, PageType::L2, j, 0, false, DOM))
            .0,
        Ok(())
    );
    assert_eq!(m.info(l1).type_count(), 0);
    assert_eq!(m.info(other_data).count(), 1);
    m.check_invariants(&[]);
}

#[test]
fn pt_update_dispatches_on_the_frame_type() {
    let mut m = FakeMachine::new(32);
    let data = m.give(DOM);
    let plain = m.give(DOM);
    let [l4, _, l2, _] = m.build_tables(DOM, VA, data);
    assert_eq!(m.with(|mmu| mmu.pin(l4, PageType::L4, OWN)).0, Ok(()));
    let ctx = m.ctx(DOM);
    // Untyped frame: a plain write through a temporary writable type.
    let r = m.with(|mmu| mmu.pt_update(plain.0 << 12 | 0x18, 0x1234, false, &ctx));
    assert_eq!(r.0, Ok(PageType::Writable));
    assert_eq!(m.get(plain, 3), 0x1234);
    assert_eq!(m.info(plain).type_count(), 0);
    // Writable-typed frame: plain write.
    let r = m.with(|mmu| mmu.pt_update(data.0 << 12, 0xdead_beef, false, &ctx));
    assert_eq!(r.0, Ok(PageType::Writable));
    assert_eq!(m.get(data, 0), 0xdead_beef);
    // An L2 with a foreign pg_owner: EINVAL.
    let foreign = MapCtx {
        pg_owner: Owner::Io,
        ..ctx
    };
    let r = m.with(|mmu| mmu.pt_update(l2.0 << 12, 0, false, &foreign));
    assert_eq!(r.0, Err(Errno::EINVAL));
    // Frames of others, or beyond the table: EINVAL.
    let other = m.give(OTHER);
    assert_eq!(
        m.with(|mmu| mmu.pt_update(other.0 << 12, 0, false, &ctx)).0,
        Err(Errno::EINVAL)
    );
    assert_eq!(
        m.with(|mmu| mmu.pt_update(500 << 12, 0, false, &ctx)).0,
        Err(Errno::EINVAL)
    );
    // A descriptor page: EINVAL.
    let gdt = m.give(DOM);
    m.with(|mmu| mmu.get_page_type(gdt, PageType::SegDesc))
        .0
        .unwrap();
    assert_eq!(
        m.with(|mmu| mmu.pt_update(gdt.0 << 12, 0, false, &ctx)).0,
        Err(Errno::EINVAL)
    );
}

#[test]
fn device_memory_mappings() {
    let mut m = FakeMachine::new(32);
    let data = m.give(DOM);
    let [l4, ..] = m.build_tables(DOM, VA, data);
    assert_eq!(m.with(|mmu| mmu.pin(l4, PageType::L4, OWN)).0, Ok(()));
    let (l1, _) = m.with(|mmu| mmu.walk_to_l1(l4, VA)).0.unwrap();
    let mmio = 0xF_EBF0_u64;
    m.iomem.insert(mmio);
    let io_in_table = Mfn(20);
    FrameTable::new(&mut m.frames)
        .assign_io(io_in_table)
        .unwrap();
    m.free.remove(&20);
    m.iomem.insert(20);
    let ctx = m.ctx(DOM);
    let before = snapshot(&m);
    // Write-back becomes uncacheable; no reference is taken.
    let r = m.with(|mmu| mmu.mod_l1_entry(l1, 300, (mmio << 12) | PRW, false, &ctx));
    assert_eq!(r.0, Ok(()));
    assert_eq!(m.get(l1, 300), (mmio << 12) | PRW | pte::PWT | pte::PCD);
    let r = m.with(|mmu| mmu.mod_l1_entry(l1, 301, (20 << 12) | PRW | pte::PCD, false, &ctx));
    assert_eq!(r.0, Ok(()));
    assert_eq!(m.get(l1, 301), (20 << 12) | PRW | pte::PCD);
    assert_eq!(snapshot(&m), before);
    // Read-only device memory (the HPET): a writable mapping is made
    // read-only, as Xen does for the hardware domain.
    m.iomem.insert(0xF_ED00);
    m.iomem_read_only.insert(0xF_ED00);
    let r = m.with(|mmu| mmu.mod_l1_entry(l1, 303, (0xF_ED00 << 12) | PRW, false, &ctx));
    assert_eq!(r.0, Ok(()));
    assert_eq!(m.get(l1, 303), (0xF_ED00 << 12) | PRO | pte::PWT | pte::PCD);
    // Not permitted: EPERM; the largest frame number: EINVAL.
    let r = m.with(|mmu| mmu.mod_l1_entry(l1, 302, (0xF_EC00 << 12) | PRW, false, &ctx));
    assert_eq!(r.0, Err(Errno::EPERM));
    let r = m.with(|mmu| mmu.mod_l1_entry(l1, 302, ((1u64 << 40) - 1) << 12 | PRO, false, &ctx));
    assert_eq!(r.0, Err(Errno::EINVAL));
    // DOMID_XEN as the foreign owner has no I/O rights.
    let xen = MapCtx {
        pg_owner: Owner::Xen,
        ..ctx
    };
    let r = m.with(|mmu| mmu.mod_l1_entry(l1, 302, (mmio << 12) | PRW, false, &xen));
    assert_eq!(r.0, Err(Errno::EPERM));
    // A domain without I/O rights, or DOMID_IO for one: EPERM.
    m.domains.get_mut(&DOM.0).unwrap().io_caps = false;
    let io = MapCtx {
        pg_owner: Owner::Io,
        pt_io_caps: false,
        ..ctx
    };
    let r = m.with(|mmu| mmu.mod_l1_entry(l1, 302, (mmio << 12) | PRW, false, &io));
    assert_eq!(r.0, Err(Errno::EPERM));
    // Clearing device mappings drops nothing.
    m.domains.get_mut(&DOM.0).unwrap().io_caps = true;
    let r = m.with(|mmu| mmu.mod_l1_entry(l1, 300, 0, false, &ctx));
    assert_eq!(r.0, Ok(()));
    assert_eq!(snapshot(&m), before);
    m.check_invariants(&[]);
}

#[test]
fn the_hypervisor_mapping_follows_a_frame_s_cache_attribute() {
    let mut m = FakeMachine::new(32);
    let data = m.give(DOM);
    let [l4, ..] = m.build_tables(DOM, VA, data);
    assert_eq!(m.with(|mmu| mmu.pin(l4, PageType::L4, OWN)).0, Ok(()));
    let (l1, _) = m.with(|mmu| mmu.walk_to_l1(l4, VA)).0.unwrap();
    let frame = m.give(DOM);
    let ctx = m.ctx(DOM);
    let map = |m: &mut FakeMachine, index: usize, flags: u64| {
        m.with(|mmu| mmu.mod_l1_entry(l1, index, (frame.0 << 12) | flags, false, &ctx))
            .0
    };
    // Uncached (PCD): the frame and the hypervisor's mapping follow.
    assert_eq!(map(&mut m, 300, PRW | pte::PCD), Ok(()));
    assert_eq!(m.info(frame).cache_attr(), 2);
    m.check_invariants(&[]);
    // A write-back mapping next to it: the last one wins, as on Xen.
    assert_eq!(map(&mut m, 301, PRO), Ok(()));
    assert_eq!((m.info(frame).cache_attr(), m.hv_cache_attr.len()), (0, 0));
    // Write-protect (PAT | PWT), then no memory to split the hypervisor's
    // mapping: ENOMEM, and nothing changed.
    m.cache_attr_fails = true;
    let before = snapshot(&m);
    assert_eq!(
        map(&mut m, 302, PRW | pte::PAT_PSE | pte::PWT),
        Err(Errno::ENOMEM)
    );
    assert_eq!(snapshot(&m), before);
    assert_eq!(m.info(frame).cache_attr(), 0);
    m.cache_attr_fails = false;
    assert_eq!(map(&mut m, 302, PRW | pte::PAT_PSE | pte::PWT), Ok(()));
    assert_eq!(m.hv_cache_attr.get(&frame.0), Some(&5));
    m.check_invariants(&[]);
    // The frame goes back to the allocator with a write-back mapping.
    for index in 300..303 {
        let r = m.with(|mmu| mmu.mod_l1_entry(l1, index, 0, false, &ctx));
        assert_eq!(r.0, Ok(()));
    }
    assert_eq!(
        m.info(frame).cache_attr(),
        5,
        "kept while the frame is owned"
    );
    assert_eq!(m.with(|mmu| mmu.remove_page(DOM, frame.0)).0, Ok(()));
    assert!(m.free.contains(&frame.0));
    assert!(m.hv_cache_attr.is_empty());
    m.check_invariants(&[]);
}

#[test]
fn shared_hypervisor_pages() {
    let mut m = FakeMachine::new(32);
    let data = m.give(DOM);
    let [l4, ..] = m.build_tables(DOM, VA, data);
    assert_eq!(m.with(|mmu| mmu.pin(l4, PageType::L4, OWN)).0, Ok(()));
    let (l1, _) = m.with(|mmu| mmu.walk_to_l1(l4, VA)).0.unwrap();
    let shared = Mfn(m.alloc_frame_for_test());
    FrameTable::new(&mut m.frames)
        .share_xen_page(shared, OWN, true)
        .unwrap();
    let ctx = m.ctx(DOM);
    let r = m.with(|mmu| mmu.mod_l1_entry(l1, 300, (shared.0 << 12) | PRW, false, &ctx));
    assert_eq!(r.0, Ok(()));
    let r = m.with(|mmu| mmu.mod_l1_entry(l1, 301, (shared.0 << 12) | PRW | pte::PCD, false, &ctx));
    assert_eq!(r.0, Err(Errno::EACCES));
    // It can never become a table, and giving it back does not free it.
    assert_eq!(
        m.with(|mmu| mmu.pin(shared, PageType::L1, OWN)).0,
        Err(Errno::EINVAL)
    );
    assert_eq!(m.with(|mmu| mmu.remove_page(DOM, shared.0)).0, Ok(()));
    assert!(!m.free.contains(&shared.0));
    assert_eq!(m.info(shared).owner(), OWN);
    m.check_invariants(&[]);
    // A read-only share cannot be mapped writable.
    let ro = Mfn(m.alloc_frame_for_test());
    FrameTable::new(&mut m.frames)
        .share_xen_page(ro, Owner::Xen, false)
        .unwrap();
    let xen = MapCtx {
        pg_owner: Owner::Xen,
        ..ctx
    };
    let r = m.with(|mmu| mmu.mod_l1_entry(l1, 302, (ro.0 << 12) | PRW, false, &xen));
    assert_eq!(r.0, Err(Errno::EBUSY));
    let r = m.with(|mmu| mmu.mod_l1_entry(l1, 302, (ro.0 << 12) | PRO, false, &xen));
    assert_eq!(r.0, Ok(()));
}

impl FakeMachine {
    fn alloc_frame_for_test(&mut self) -> u64 {
        use super::machine::MmMachine;
        self.alloc_frames(0, u64::MAX).unwrap().0
    }
}

#[test]
fn update_va_walks_the_current_tables() {
    let mut m = FakeMachine::new(32);
    let data = m.give(DOM);
    let [l4, _, _, l1] = m.build_tables(DOM, VA, data);
    let ctx = m.ctx(DOM);
    // Not typed yet: EINVAL.
    assert_eq!(
        m.with(|mmu| mmu.update_va(l4, VA, 0, &ctx)).0,
        Err(Errno::EINVAL)
    );
    assert_eq!(m.with(|mmu| mmu.pin(l4, PageType::L4, OWN)).0, Ok(()));
    assert_eq!(
        m.with(|mmu| mmu.update_va(l4, VA, (data.0 << 12) | PRO, &ctx))
            .0,
        Ok(())
    );
    assert_eq!(m.get(l1, pte::table_index(VA, 1)), (data.0 << 12) | PRO);
    // The table mapped (read-only) through itself, then unmapped: the
    // entry's reference goes, the table's own type keeps it referenced
    // (no reference is held on the table during the update).
    assert_eq!(
        m.with(|mmu| mmu.update_va(l4, VA, (l1.0 << 12) | PRO, &ctx))
            .0,
        Ok(())
    );
    assert_eq!(m.with(|mmu| mmu.update_va(l4, VA, 0, &ctx)).0, Ok(()));
    assert!(
        m.with(|mmu| mmu.frame(l1))
            .0
            .is_some_and(|f| f.count() > 0 && f.has_live_type(PageType::L1))
    );
    m.check_invariants(&[]);
    // Unmapped, reserved or non-canonical addresses: EINVAL.
    for va in [
        0x1000,
        0xFFFF_8000_0000_0000,
        0x0000_8000_0000_0000,
        VA + (2 << 21),
    ] {
        assert_eq!(
            m.with(|mmu| mmu.update_va(l4, va, 0, &ctx)).0,
            Err(Errno::EINVAL),
            "{va:#x}"
        );
    }
    m.check_invariants(&[]);
}

#[test]
fn base_pointers_hold_references() {
    let mut m = FakeMachine::new(32);
    let data = m.give(DOM);
    let [l4, l3, ..] = m.build_tables(DOM, VA, data);
    assert_eq!(
        m.with(|mmu| mmu.replace_root(None, Some(l4), DOM)).0,
        Ok(())
    );
    m.check_invariants(&[l4]);
    // A frame that does not validate as an L4 is refused; nothing changes.
    let before = snapshot(&m);
    assert_eq!(
        m.with(|mmu| mmu.replace_root(Some(l4), Some(l3), DOM)).0,
        Err(Errno::EINVAL)
    );
    assert_eq!(
        m.with(|mmu| mmu.replace_root(Some(l4), Some(data), DOM)).0,
        Err(Errno::EINVAL)
    );
    assert_eq!(
        m.with(|mmu| mmu.replace_root(Some(l4), Some(Mfn(31)), DOM))
            .0,
        Err(Errno::EINVAL)
    );
    assert_eq!(snapshot(&m), before);
    assert_eq!(
        m.with(|mmu| mmu.replace_root(Some(l4), Some(l4), DOM)).0,
        Ok(())
    );
    assert_eq!(snapshot(&m), before);
    assert_eq!(
        m.with(|mmu| mmu.replace_root(Some(l4), None, DOM)).0,
        Ok(())
    );
    m.check_invariants(&[]);
    assert_eq!(m.info(l3).type_count(), 0);
}

#[test]
fn writable_page_table_emulation() {
    let mut m = FakeMachine::new(32);
    let data = m.give(DOM);
    let spare = m.give(DOM);
    let [l4, _, _, l1] = m.build_tables(DOM, VA, data);
    assert_eq!(m.with(|mmu| mmu.pin(l4, PageType::L4, OWN)).0, Ok(()));
    // The L1 is mapped read-only at VA + 4 pages (build_tables slot i+4).
    let i = pte::table_index(VA, 1);
    let l1_va = VA + 4 * 4096;
    let target = l1_va + 8 * 300;
    let w = |value, bytes, addr, compare: Option<u64>| PtwrWrite {
        addr,
        bytes,
        op: compare.map_or(Update::Write(value), |expected| Update::CompareExchange {
            expected,
            value,
        }),
    };
    let modify = |alu, operand| {
        Update::Modify(Rmw {
            alu,
            operand,
            carry: false,
        })
    };
    let emulate = |m: &mut FakeMachine, wr: PtwrWrite| {
        m.with(|mmu| mmu.ptwr_emulate(l4, DOM, true, wr.addr, wr)).0
    };
    assert_eq!(
        emulate(&mut m, w((spare.0 << 12) | PRW, 8, target, None)),
        PtwrOutcome::Done(0)
    );
    assert!(m.info(spare).has_live_type(PageType::Writable));
    // Writable mapping of a page table: not handled (the #PF is delivered).
    assert_eq!(
        emulate(&mut m, w((l1.0 << 12) | PRW, 8, target + 8, None)),
        PtwrOutcome::NotHandled
    );
    // Sub-word write: the low 4 bytes, keeping the high half.
    m.set(l1, 302, 0x8000_0000_0000_0000);
    assert_eq!(
        emulate(&mut m, w((spare.0 << 12) | PRO, 4, target + 16, None)),
        PtwrOutcome::Done(0)
    );
    assert_eq!(
        m.get(l1, 302),
        0x8000_0000_0000_0000 | (spare.0 << 12) | PRO
    );
    // cmpxchg with the wrong expected value: nothing written.
    let r = emulate(&mut m, w(0, 8, target, Some(0x1234)));
    assert_eq!(r, PtwrOutcome::CompareFailed((spare.0 << 12) | PRW));
    let r = emulate(&mut m, w(0, 8, target, Some((spare.0 << 12) | PRW)));
    assert_eq!(r, PtwrOutcome::Done((spare.0 << 12) | PRW));
    // and/or of the entry's bytes: the RW bit cleared and set again in
    // its byte, the old byte returned.
    let entry = (spare.0 << 12) | PRW;
    assert_eq!(
        emulate(&mut m, w(entry, 8, target, None)),
        PtwrOutcome::Done(0)
    );
    let and = PtwrWrite {
        op: modify(Alu::And, !2 & 0xff),
        ..w(0, 1, target, None)
    };
    assert_eq!(emulate(&mut m, and), PtwrOutcome::Done(entry & 0xff));
    assert_eq!(m.get(l1, 300), entry & !2);
    let or = PtwrWrite {
        op: modify(Alu::Or, 2),
        ..w(0, 1, target, None)
    };
    assert_eq!(emulate(&mut m, or), PtwrOutcome::Done(entry & 0xfd));
    assert_eq!(m.get(l1, 300), entry);
    // A bts making a page table's mapping writable is validated too.
    m.set(l1, 303, (l1.0 << 12) | PRO);
    let or = PtwrWrite {
        op: modify(Alu::Bts, 1),
        ..w(0, 8, target + 24, None)
    };
    assert_eq!(emulate(&mut m, or), PtwrOutcome::NotHandled);
    m.set(l1, 303, 0);
    assert_eq!(
        emulate(&mut m, w(0, 8, target, None)),
        PtwrOutcome::Done(entry)
    );
    // Misaligned, another page, bad width, or a writable/non-table page.
    assert_eq!(
        emulate(&mut m, w(0, 8, target + 4, None)),
        PtwrOutcome::NotHandled
    );
    assert_eq!(
        emulate(&mut m, w(0, 3, target, None)),
        PtwrOutcome::NotHandled
    );
    let wr = w(0, 8, target + 4096, None);
    assert_eq!(
        m.with(|mmu| mmu.ptwr_emulate(l4, DOM, true, target, wr)).0,
        PtwrOutcome::NotHandled
    );
    assert_eq!(emulate(&mut m, w(0, 8, VA, None)), PtwrOutcome::NotHandled);
    let _ = i;
    m.check_invariants(&[]);
}

#[test]
fn initial_root_is_pinned_and_loaded() {
    let mut m = FakeMachine::new(32);
    let data = m.give(DOM);
    let [l4, l3, ..] = m.build_tables(DOM, VA, data);
    let mut vcpu = VcpuMm::default();
    assert_eq!(
        m.with(|mmu| mmu.install_initial_root(DOM, &mut vcpu, l4)).0,
        Ok(())
    );
    assert_eq!(vcpu.kernel_l4, Some(l4));
    assert!(m.info(l4).is_pinned());
    assert_eq!(m.info(l4).type_count(), 2);
    m.check_invariants(&[l4]);
    // A table that does not validate: nothing changes.
    let mut other = VcpuMm::default();
    let before = snapshot(&m);
    assert_eq!(
        m.with(|mmu| mmu.install_initial_root(DOM, &mut other, l3))
            .0,
        Err(Errno::EINVAL)
    );
    assert_eq!(snapshot(&m), before);
    assert_eq!(other.kernel_l4, None);
}

#[test]
fn populate_and_teardown_return_every_frame() {
    let mut m = FakeMachine::new(64);
    let free_before = m.free.len();
    // A domain with page tables, a pinned and a loaded root, a user root,
    // a shared page mapped writable, data mapped twice, ballooned frames.
    let data = m.give(DOM);
    let [l4, l3, _, l1] = m.build_tables(DOM, VA, data);
    let second_l4 = m.give(DOM);
    m.set(second_l4, 511, (l3.0 << 12) | PRW);
    let shared = Mfn(m.alloc_frame_for_test());
    FrameTable::new(&mut m.frames)
        .share_xen_page(shared, OWN, true)
        .unwrap();
    assert_eq!(m.with(|mmu| mmu.pin(l4, PageType::L4, OWN)).0, Ok(()));
    let mut vcpus = [VcpuMm {
        kernel_l4: Some(l4),
        user_l4: Some(second_l4),
        ldt_ents: 3,
        ..VcpuMm::default()
    }];
    m.with(|mmu| {
        mmu.replace_root(None, Some(l4), DOM).unwrap();
        mmu.replace_root(None, Some(second_l4), DOM).unwrap();
    });
    let ctx = m.ctx(DOM);
    m.with(|mmu| mmu.mod_l1_entry(l1, 300, (shared.0 << 12) | PRW, false, &ctx))
        .0
        .unwrap();
    m.with(|mmu| mmu.mod_l1_entry(l1, 301, (data.0 << 12) | PRW, false, &ctx))
        .0
        .unwrap();
    let balloon = m.give(DOM);
    m.with(|mmu| mmu.remove_page(DOM, balloon.0)).0.unwrap();
    // A frame given back while still mapped stays until unmapped.
    m.with(|mmu| mmu.remove_page(DOM, data.0)).0.unwrap();
    assert_eq!(m.info(data).owner(), OWN);
    assert!(!m.info(data).is_allocated());
    m.check_invariants(&[l4, second_l4]);
    let (report, _) = m.with(|mmu| mmu.teardown(DOM, &mut vcpus));
    assert_eq!(report.remaining, 0);
    assert_eq!(report.released, 7);
    assert_eq!(m.free.len(), free_before);
    assert_eq!(m.tot_pages(DOM), 0);
    assert_eq!(vcpus[0], VcpuMm::default());
    assert!(m.frames.iter().all(|f| *f == FrameInfo::UNOWNED));
    assert!(m.m2p.iter().all(|&e| e == INVALID_M2P_ENTRY));
}

/// A reference dropped too early (a hypervisor bug) is dropped again by
/// the teardown. The frame counts can still come out right, so the
/// teardown must say that it found the frame table inconsistent
/// (`fx.crash`, which `destroy_dom0` turns into the "FRAME TABLE
/// INCONSISTENT" line), and keep the frame out of the allocator.
#[test]
fn teardown_reports_a_reference_dropped_early() {
    let mut m = FakeMachine::new(32);
    let free_before = m.free.len();
    let data = m.give(DOM);
    let [l4, ..] = m.build_tables(DOM, VA, data);
    let mut vcpu = [VcpuMm::default()];
    m.with(|mmu| mmu.install_initial_root(DOM, &mut vcpu[0], l4))
        .0
        .unwrap();
    let (_, fx) = m.with(|mmu| mmu.teardown(DOM, &mut vcpu.clone()));
    assert!(!fx.crash, "a clean teardown is consistent");
    assert_eq!(m.free.len(), free_before);

    // A mapped data frame, and the loaded root: an early drop of either
    // makes the count reach zero while the frame still records a
    // reference (its mapping's type, its pin, its allocation).
    for early in [0, 1] {
        let data = m.give(DOM);
        let tables = m.build_tables(DOM, VA, data);
        let mut vcpu = [VcpuMm::default()];
        m.with(|mmu| mmu.install_initial_root(DOM, &mut vcpu[0], tables[0]))
            .0
            .unwrap();
        let victim = if early == 0 { data } else { tables[0] };
        let (_, fx) = m.with(|mmu| mmu.put_page(victim));
        assert!(
            !fx.crash,
            "dropping one of several references is legal by itself"
        );
        let (_, fx) = m.with(|mmu| mmu.teardown(DOM, &mut vcpu));
        assert!(fx.crash, "case {early}: the second drop must be reported");
        assert!(
            !m.free.contains(&victim.0),
            "case {early}: kept out of the allocator"
        );
    }
}

/// A frame of `OTHER` mapped writable at entry 300 of an L1 of `DOM`'s
/// pinned tables, as a privileged foreign mapping: (frame, L1, context).
fn foreign_frame_mapped(m: &mut FakeMachine) -> (Mfn, Mfn, MapCtx) {
    let theirs = m.give(OTHER);
    let data = m.give(DOM);
    let [l4, _, _, l1] = m.build_tables(DOM, VA, data);
    assert_eq!(m.with(|mmu| mmu.pin(l4, PageType::L4, OWN)).0, Ok(()));
    let ctx = MapCtx {
        pg_owner: Owner::Domain(OTHER),
        pg_owner_privileged: true,
        ..m.ctx(DOM)
    };
    m.with(|mmu| mmu.mod_l1_entry(l1, 300, (theirs.0 << 12) | PRW, false, &ctx))
        .0
        .unwrap();
    (theirs, l1, ctx)
}

#[test]
fn teardown_keeps_frames_other_domains_still_map() {
    let mut m = FakeMachine::new(64);
    let (mine, l1, ctx) = foreign_frame_mapped(&mut m);
    let (report, _) = m.with(|mmu| mmu.teardown(OTHER, &mut []));
    assert_eq!(
        report,
        super::lifecycle::TeardownReport {
            released: 0,
            remaining: 1
        }
    );
    assert_eq!(m.tot_pages(OTHER), 1);
    // Unmapping it later frees it and uncounts it.
    m.with(|mmu| mmu.mod_l1_entry(l1, 300, 0, false, &ctx))
        .0
        .unwrap();
    assert!(m.free.contains(&mine.0));
    assert_eq!(m.tot_pages(OTHER), 0);
    m.check_invariants(&[]);
}

/// The last reference to a frame of a domain whose slot another CPU
/// holds: the frame is freed and the operation goes on (it is not run
/// again: it changed something already); the owner's count owes the page
/// until its slot is looked up next.
#[test]
fn a_frame_freed_while_its_owners_slot_is_busy_is_owed() {
    let mut m = FakeMachine::new(64);
    let (theirs, l1, ctx) = foreign_frame_mapped(&mut m);
    assert!(m.with(|mmu| mmu.remove_page(OTHER, theirs.0)).0.is_ok());
    m.busy.insert(OTHER.0);
    m.with(|mmu| mmu.mod_l1_entry(l1, 300, 0, false, &ctx))
        .0
        .unwrap();
    assert!(m.free.contains(&theirs.0));
    assert!(!m.slot_busy, "not run again");
    assert_eq!(m.preempted, None);
    assert_eq!(m.tot_pages(OTHER), 1, "owed");
    m.busy.clear();
    let looked_up = MmMachine::domain_mm(&mut m, OTHER).map(|d| d.tot_pages);
    assert_eq!(looked_up, Some(0), "settled");
    m.check_invariants(&[]);
}

/// The seed of [`random_operations_keep_the_invariants`]: `OXEN_MM_SEED`
/// (decimal, or hex with `0x`) if set, else a fixed default. Zero, which
/// would stall the generator, becomes 1.
fn mm_seed() -> u64 {
    const DEFAULT: u64 = 0x2545_f491_4f6c_dd1d;
    let Ok(text) = std::env::var("OXEN_MM_SEED") else {
        return DEFAULT;
    };
    let text = text.trim();
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    match parsed {
        Ok(0) => 1,
        Ok(seed) => seed,
        Err(e) => panic!("OXEN_MM_SEED={text:?}: {e}"),
    }
}

/// The operations of the random test, for counting.
#[derive(Clone, Copy, Debug)]
enum Op {
    Pin,
    Unpin,
    PtUpdate,
    ReplaceRoot,
    UpdateVa,
    RemovePage,
    Alloc,
    Ptwr,
}

/// The fewest successes each operation must reach over the whole run,
/// as a percentage of its attempts: a run whose operations mostly fail
/// early (bad chains, unowned frames) would not test the reference
/// counting. `PtUpdate` counts only updates of a live page table (one
/// holding a page-table type), the ones that take and drop references.
const MIN_SUCCESS_PERCENT: [(Op, u64); 8] = [
    (Op::Pin, 20),
    (Op::Unpin, 10),
    (Op::PtUpdate, 40),
    (Op::ReplaceRoot, 40),
    (Op::UpdateVa, 35),
    (Op::RemovePage, 50),
    (Op::Alloc, 30),
    (Op::Ptwr, 35),
];

/// Random sequences of operations, hostile values included, checked
/// against the reference-count invariants after every step; at the end a
/// teardown must give back every frame, consistently.
///
/// Each round builds a valid four-level chain mapping `VA` and pins its
/// L4, so that `update_va_mapping`, updates of live L1 entries and
/// writable-page-table stores into the chain's L1 (through its read-only
/// mapping) mostly succeed (each operation must reach its
/// [`MIN_SUCCESS_PERCENT`]); the other operations work on 24 data frames
/// that random pins turn into page tables, and a page shared by the
/// hypervisor (like `shared_info`) that updates may map. The seed comes from `OXEN_MM_SEED` (see [`mm_seed`]) and
/// every failure names it.
#[test]
fn random_operations_keep_the_invariants() {
    const FRAMES: usize = 48;
    const INDICES: [u64; 7] = [0, 1, 2, 255, 256, 300, 511];
    let seed = mm_seed();
    let mut rng = XorShift(seed);
    let mut tried = [0u64; 8];
    let mut succeeded = [0u64; 8];
    let mut count = |op: Op, ok: bool| {
        tried[op as usize] += 1;
        succeeded[op as usize] += u64::from(ok);
    };
    for round in 0..40 {
        let at = format!("OXEN_MM_SEED={seed:#x}, round {round}");
        let mut m = FakeMachine::new(FRAMES);
        m.iomem.insert(1000);
        let free_before = m.free.len();
        let data = m.give(DOM);
        let chain = m.build_tables(DOM, VA, data);
        assert_eq!(
            m.with(|mmu| mmu.pin(chain[0], PageType::L4, OWN)).0,
            Ok(()),
            "{at}: the chain validates"
        );
        let mut owned: Vec<Mfn> = (0..24).map(|_| m.give(DOM)).collect();
        owned.push(data);
        let foreign = m.give(OTHER);
        let shared = Mfn(m.alloc_frame_for_test());
        FrameTable::new(&mut m.frames)
            .share_xen_page(shared, OWN, true)
            .unwrap();
        // The chain's L1 maps itself read-only at L1 index `index(VA) + 4`
        // (see `build_tables`), an index no update below touches.
        let l1_va = (VA & !(511 << 12)) | ((pte::table_index(VA, 1) as u64 + 4) << 12);
        let mut root: Option<Mfn> = None;
        let ctx = m.ctx(DOM);
        for step in 0..400 {
            // Every operation must leave the table consistent: `fx.crash`
            // marks a hypervisor bug, never guest input alone.
            macro_rules! op {
                ($f:expr) => {{
                    let (r, fx) = m.with($f);
                    assert!(
                        !fx.crash,
                        "{at}, step {step}: the table became inconsistent"
                    );
                    r
                }};
            }
            let pick = |rng: &mut XorShift, v: &[Mfn]| v[rng.below(v.len() as u64) as usize];
            let target = match rng.below(12) {
                0 => foreign,
                1 => Mfn(rng.below(FRAMES as u64 + 4)),
                2 => Mfn(1000),
                3 => shared,
                _ => pick(&mut rng, &owned),
            };
            let flags = [
                PRW,
                PRO,
                0,
                PRW | pte::PAT_PSE,
                PRO | pte::PCD,
                PRW | (1 << 8),
            ][rng.below(6) as usize];
            let value = if flags == 0 {
                0
            } else {
                (target.0 << 12) | flags
            };
            let index = INDICES[rng.below(7) as usize] as usize;
            let table = pick(&mut rng, &owned);
            match rng.below(10) {
                9 => {
                    let write = PtwrWrite {
                        addr: l1_va + index as u64 * 8,
                        bytes: 8,
                        op: Update::Write(value),
                    };
                    let r = op!(|mmu| mmu.ptwr_emulate(chain[0], DOM, false, write.addr, write));
                    count(Op::Ptwr, matches!(r, PtwrOutcome::Done(_)));
                }
                0 => {
                    let ty = PageType::table(1 + rng.below(4) as u8).unwrap();
                    let r = op!(|mmu| mmu.pin(table, ty, OWN));
                    count(Op::Pin, r.is_ok());
                }
                1 => {
                    let r = op!(|mmu| mmu.unpin(table, OWN));
                    count(Op::Unpin, r.is_ok());
                }
                2..=4 => {
                    // Half of the updates go to the chain's live L1.
                    let table = if rng.below(2) == 0 { chain[3] } else { table };
                    let live = m.info(table).type_count() > 0;
                    let maddr = (table.0 << 12) | (index as u64 * 8);
                    let r = op!(|mmu| mmu.pt_update(maddr, value, rng.below(2) == 0, &ctx));
                    if live {
                        count(Op::PtUpdate, r.is_ok());
                    }
                }
                5 => {
                    let new = match rng.below(4) {
                        0 => None,
                        1 | 2 => Some(chain[0]),
                        _ => Some(table),
                    };
                    let r = op!(|mmu| mmu.replace_root(root, new, DOM));
                    if r.is_ok() {
                        root = new;
                    }
                    count(Op::ReplaceRoot, r.is_ok());
                }
                6 => {
                    // Mostly an address the chain maps down to its L1
                    // (whatever the L1 index), else a random walk from the
                    // loaded root.
                    let (walk_root, va) = if rng.below(8) != 0 {
                        let slot = INDICES[rng.below(7) as usize];
                        (Some(chain[0]), (VA & !(511 << 12)) | (slot << 12))
                    } else {
                        let mut va = 0u64;
                        for level in [4u32, 3, 2, 1] {
                            va |= INDICES[rng.below(7) as usize] << (12 + 9 * (level - 1));
                        }
                        if va & (1 << 47) != 0 {
                            va |= 0xFFFF_0000_0000_0000;
                        }
                        (root, va)
                    };
                    if let Some(r) = walk_root {
                        let result = op!(|mmu| mmu.update_va(r, va, value, &ctx));
                        count(Op::UpdateVa, result.is_ok());
                    }
                }
                7 => {
                    if rng.below(3) == 0 {
                        let r = op!(|mmu| mmu.remove_page(DOM, table.0));
                        count(Op::RemovePage, r.is_ok());
                    }
                }
                _ => {
                    use super::machine::MmMachine;
                    let got = m.alloc_frames(0, u64::MAX);
                    if let Some(mfn) = got {
                        op!(|mmu| mmu.assign(mfn, DOM, Some(mfn.0))).unwrap();
                        owned.push(mfn);
                    }
                    count(Op::Alloc, got.is_some());
                }
            }
            let roots: Vec<Mfn> = root.into_iter().collect();
            let check = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                m.check_invariants(&roots)
            }));
            assert!(check.is_ok(), "{at}, step {step}: invariants broken");
        }
        let mut vcpus = [VcpuMm {
            kernel_l4: root,
            ..VcpuMm::default()
        }];
        let (report, fx) = m.with(|mmu| mmu.teardown(DOM, &mut vcpus));
        assert!(!fx.crash, "{at}: the teardown found the table inconsistent");
        assert_eq!(report.remaining, 0, "{at}: frames left after the teardown");
        let (_, fx) = m.with(|mmu| mmu.teardown(OTHER, &mut []));
        assert!(!fx.crash, "{at}: the other domain's teardown");
        assert_eq!(m.free.len(), free_before, "{at}: frames lost");
        assert_eq!(m.tot_pages(DOM), 0, "{at}");
    }
    for (op, percent) in MIN_SUCCESS_PERCENT {
        let (ok, all) = (succeeded[op as usize], tried[op as usize]);
        assert!(
            all > 0 && ok * 100 >= all * percent,
            "OXEN_MM_SEED={seed:#x}: {op:?} succeeded {ok} of {all} times, below {percent}%"
        );
    }
}

#[test]
fn supervisor_pages_are_told_from_user_pages() {
    let mut m = FakeMachine::new(32);
    let data = m.give(DOM);
    let [l4, l3, l2, l1] = m.build_tables(DOM, VA, data);
    let walk = |m: &mut FakeMachine, va| {
        pte::maps_supervisor_page(|mfn, i| (mfn.0 < 32).then(|| m.read_pte(mfn, i)), l4, va)
    };
    // build_tables leaves the user bit clear everywhere: supervisor.
    assert_eq!(walk(&mut m, VA), Some(true));
    let user = |m: &mut FakeMachine, table: Mfn, va: u64, level: u32| {
        let i = pte::table_index(va, level);
        let entry = m.read_pte(table, i);
        m.set(table, i, entry | pte::USER);
    };
    for (table, level) in [(l4, 4), (l3, 3), (l2, 2)] {
        user(&mut m, table, VA, level);
        assert_eq!(walk(&mut m, VA), Some(true), "user up to level {level}");
    }
    // Only with the user bit at every level is it a user page.
    user(&mut m, l1, VA, 1);
    assert_eq!(walk(&mut m, VA), Some(false));
    // Not mapped, or not a guest address: unknown.
    assert_eq!(walk(&mut m, VA + 0x20_0000), None);
    // Not mapped below a supervisor entry: ring 3 reaches nothing there.
    let l4_entry = m.read_pte(l4, pte::table_index(VA, 4));
    m.set(l4, pte::table_index(VA, 4), l4_entry & !pte::USER);
    assert_eq!(walk(&mut m, VA + 0x20_0000), Some(true));
    m.set(l4, pte::table_index(VA, 4), l4_entry);
    assert_eq!(walk(&mut m, 0xffff_8000_0000_0000), None);
    assert_eq!(walk(&mut m, 0x8000_0000_0000), None);
    // A 2 MiB superpage ends the walk at the L2 entry.
    let big = VA + 0x40_0000;
    let i = pte::table_index(big, 2);
    m.set(l2, i, (data.0 << 12) | PRO | pte::PAT_PSE);
    assert_eq!(walk(&mut m, big), Some(true));
    m.set(l2, i, (data.0 << 12) | PRO | pte::PAT_PSE | pte::USER);
    assert_eq!(walk(&mut m, big), Some(false));
    // A table the reader cannot read ends the walk.
    m.set(l2, i, (99 << 12) | PRO | pte::USER);
    assert_eq!(walk(&mut m, big), None);
}
