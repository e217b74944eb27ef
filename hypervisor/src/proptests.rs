//! Property tests of the pure cores that parse guest-controlled data:
//! instruction decoding for emulation and writable page tables, descriptor
//! and page-table-entry checks, `iret` frames and the exit check. Each
//! must accept any input without panicking and keep its invariants.
//! (The memory core's `mmu_update` property lives with its fake machine
//! in `hypercall::mmu`.)

use dom0_abi::cpu::IretContext;
use dom0_abi::segment::{
    FLAT_RING3_CS32, FLAT_RING3_CS64, FLAT_RING3_DS, RING1_KERNEL_CS, RING1_KERNEL_SS, is_reserved,
    rpl,
};
use proptest::prelude::*;

use crate::emulate::{self, Insn};
use crate::hypercall::desc::check_descriptor;
use crate::layout::{guest_range_ok, is_canonical};
use crate::mm::pte;
use crate::resume::{self, Descriptors};
use crate::vcpu::{self, rflags};

/// A descriptor table of 64 arbitrary entries (GDT and LDT alike).
struct Table(Vec<u64>);

impl Descriptors for Table {
    fn descriptor(&mut self, selector: u16) -> Option<u64> {
        self.0.get(usize::from(selector >> 3)).copied()
    }
}

/// Selectors near the interesting ones: any RPL, TI, small or reserved
/// indices.
fn selector() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u16>().prop_map(u64::from),
        (0u16..80).prop_map(u64::from),
        (0xe000u16..0xe060).prop_map(u64::from),
        any::<u64>(),
    ]
}

/// Addresses near the canonical and 4 GiB boundaries, or anything.
fn address() -> impl Strategy<Value = u64> {
    prop_oneof![
        any::<u64>(),
        (0x7fff_ffff_ff00u64..0x8000_0000_0100),
        (0xffff_7fff_ffff_ff00u64..=0xffff_8000_0000_0100),
        (0xffff_ff00u64..0x1_0000_0100),
    ]
}

proptest! {
    #[test]
    fn decode_never_reads_past_its_input(
        bytes in proptest::collection::vec(any::<u8>(), 0..16),
        compat in any::<bool>(),
    ) {
        if let Some(d) = emulate::decode(&bytes, if compat { 32 } else { 64 }) {
            prop_assert!(d.len >= 1 && d.len <= bytes.len() as u64, "{d:?}");
            match d.insn {
                Insn::ReadCr { cr, reg } | Insn::WriteCr { cr, reg } => {
                    prop_assert!(cr < 16 && reg < 16);
                }
                Insn::ReadDr { dr, reg } | Insn::WriteDr { dr, reg } => {
                    prop_assert!(dr < 16 && reg < 16);
                }
                _ => {}
            }
        }
    }

    #[test]
    fn a_decoded_store_changes_only_what_it_names(
        bytes in proptest::collection::vec(any::<u8>(), 0..16),
        gprs in proptest::array::uniform16(any::<u64>()),
        rflags in any::<u64>(),
        old in any::<u64>(),
    ) {
        let cpu = emulate::Cpu { gprs, rflags, fs_base: 0x1000, gs_base: 0x2000 };
        if let Some(s) = emulate::decode_store(&bytes, 0xffff_ffff_8000_0000, &mut { cpu }) {
            prop_assert!(matches!(s.width, 1 | 2 | 4 | 8), "{s:?}");
            prop_assert!(s.len >= 2 && s.len <= bytes.len() as u64, "{s:?} from {bytes:x?}");
            let mut after = cpu;
            s.complete(old, &mut after);
            prop_assert_eq!(after.rflags & !emulate::ARITHMETIC_FLAGS, rflags & !emulate::ARITHMETIC_FLAGS);
            let changed: Vec<usize> = (0..16).filter(|&n| after.gprs[n] != gprs[n]).collect();
            let allowed: &[usize] = match s.after {
                emulate::After::Nothing | emulate::After::Modify(None) => &[],
                emulate::After::Exchange(r) | emulate::After::Modify(Some(r)) => &[usize::from(r.number)],
                emulate::After::CompareExchange => &[0],
                emulate::After::CompareExchange8b => &[0, 2],
            };
            prop_assert!(changed.iter().all(|n| allowed.contains(n)), "{s:?} changed {changed:?}");
            let new = s.update.new_bytes(old, s.width);
            prop_assert!(s.width == 8 || new >> (8 * s.width) == 0, "{s:?}: {new:#x}");
        }
    }

    #[test]
    fn add_and_sub_flags_follow_wide_arithmetic(
        a in any::<u64>(), b in any::<u64>(), carry in any::<bool>(), width in prop_oneof![Just(1u8), Just(2), Just(4), Just(8)],
    ) {
        let bits = 8 * u32::from(width);
        let m = if width == 8 { u64::MAX } else { (1 << bits) - 1 };
        let signed = |v: u64| i128::from(((v & m) << (64 - bits)).cast_signed() >> (64 - bits));
        let (sa, sb, c) = (signed(a), signed(b), i128::from(carry));
        let (ua, ub, uc) = (u128::from(a & m), u128::from(b & m), u128::from(carry));
        let fits = |v: i128| v >= -(1 << (bits - 1)) && v < (1 << (bits - 1));
        for (alu, sum, unsigned_carry) in [
            (emulate::Alu::Adc, sa + sb + c, ua + ub + uc > u128::from(m)),
            (emulate::Alu::Sbb, sa - sb - c, ua < ub + uc),
        ] {
            let r = emulate::Rmw { alu, operand: b, carry }.apply(a, width);
            prop_assert_eq!(r.flags & emulate::CF != 0, unsigned_carry, "{:?}", alu);
            prop_assert_eq!(r.flags & (1 << 11) != 0, !fits(sum), "{:?} OF", alu);
            prop_assert_eq!(r.flags & emulate::ZF != 0, r.value == 0, "{:?} ZF", alu);
            prop_assert_eq!(i128::from(r.value), sum & i128::from(m), "{:?}", alu);
        }
    }

    #[test]
    fn checked_descriptors_never_reach_ring0(d in any::<u64>()) {
        use x86_64::structures::gdt::DescriptorFlags;
        const PRESENT: u64 = DescriptorFlags::PRESENT.bits();
        const CODE_OR_DATA: u64 = DescriptorFlags::USER_SEGMENT.bits();
        match check_descriptor(d) {
            None => {
                prop_assert!(d & PRESENT != 0 && d & CODE_OR_DATA == 0 && (d >> 40) & 0xf != 0);
            }
            Some(x) => {
                prop_assert_eq!(check_descriptor(x), Some(x), "idempotent");
                if x & PRESENT != 0 && x & CODE_OR_DATA != 0 {
                    prop_assert!((x >> 45) & 3 != 0, "DPL 0 stored: {x:#x}");
                    prop_assert!(x & (1 << 40) != 0, "accessed bit preset");
                    prop_assert_eq!(x & !(1 << 40 | 1 << 45), d & !(1 << 40 | 1 << 45));
                } else {
                    prop_assert_eq!(x, d);
                    prop_assert!(x & PRESENT == 0 || (x >> 40) & 0xf == 0);
                }
            }
        }
    }

    #[test]
    fn pte_checks_name_exactly_the_bits_to_drop(e in any::<u64>(), io in any::<bool>()) {
        let l1 = pte::l1_disallowed(e, io);
        prop_assert_eq!(l1 & !e, 0);
        prop_assert_eq!(l1 & !pte::FLAG_BITS, 0, "never an address bit");
        prop_assert_eq!(pte::l1_disallowed(e & !l1, io), 0);
        let upper = pte::upper_disallowed(e);
        prop_assert_eq!(upper & !e, 0);
        prop_assert_eq!(pte::upper_disallowed(e & !upper), 0);
        prop_assert!(pte::upper_disallowed(e) & (pte::PAT_PSE) == e & pte::PAT_PSE, "PSE refused above L1");
        prop_assert!(!pte::needs_revalidation(e, e));
        let flip = pte::io_cache_flip(e);
        prop_assert_eq!(flip & !pte::CACHE_ATTRS, 0);
    }

    #[test]
    fn iret_only_loads_our_selectors_and_no_privileged_flags(
        rip in address(), cs in selector(), rfl in any::<u64>(), rsp in address(),
        ss in selector(), flags in any::<u64>(), rax in any::<u64>(),
    ) {
        let frame = IretContext { rax, r11: 1, rcx: 2, flags, rip, cs, rflags: rfl, rsp, ss };
        let t = vcpu::iret(&frame);
        let pair = (t.context.cs, t.context.ss);
        prop_assert!(
            pair == (u64::from(RING1_KERNEL_CS), u64::from(RING1_KERNEL_SS))
                || pair == (u64::from(FLAT_RING3_CS64), u64::from(FLAT_RING3_DS))
                || pair == (u64::from(FLAT_RING3_CS32), u64::from(FLAT_RING3_DS)),
            "{pair:x?}"
        );
        prop_assert_eq!(t.context.rflags & (rflags::IOPL | rflags::VM | rflags::NT), 0);
        prop_assert!(t.context.rflags & rflags::IF != 0);
        prop_assert_eq!((t.context.rip, t.context.rsp), (rip, rsp), "the exit check judges them");
    }

    #[test]
    fn bounce_frames_stay_in_guest_memory_and_enter_ring1(
        rip in address(), cs in selector(), rfl in any::<u64>(), rsp in address(),
        ss in selector(), kernel_sp in address(), handler in address(),
        error in proptest::option::of(any::<u64>()), mask in any::<u8>(),
    ) {
        let v = vcpu::Vcpu { kernel_sp, ..vcpu::Vcpu::default() };
        let ctx = vcpu::Context { rip, cs, rflags: rfl, rsp, ss, rcx: 1, r11: 2, rax: 3 };
        if let Ok(b) = vcpu::bounce(&v, &ctx, handler, error, mask) {
            let bytes = 8 * b.frame.len as u64;
            prop_assert!(guest_range_ok(b.frame.rsp, bytes), "frame at {:#x}", b.frame.rsp);
            prop_assert_eq!(b.frame.rsp % 16, (16 - bytes % 16) % 16, "aligned frame top");
            prop_assert_eq!(b.frame.len, 7 + usize::from(error.is_some()));
            prop_assert_eq!(
                (b.context.cs, b.context.ss),
                (u64::from(RING1_KERNEL_CS), u64::from(RING1_KERNEL_SS))
            );
            prop_assert_eq!(b.context.rsp, b.frame.rsp);
            let forbidden = rflags::IOPL | rflags::VM | rflags::NT | rflags::TF | rflags::AC;
            prop_assert_eq!(b.context.rflags & forbidden, 0);
            prop_assert!(b.context.rflags & rflags::IF != 0);
        }
    }

    #[test]
    fn the_exit_check_passes_only_loadable_contexts(
        rip in address(), cs in selector(), rsp in address(), ss in selector(),
        table in proptest::collection::vec(any::<u64>(), 64),
    ) {
        let frame = resume::Frame { rip, cs, rsp, ss };
        match resume::check(&frame, &mut Table(table.clone())) {
            Ok(()) => {
                let (cs, ss) = ((cs & 0xffff) as u16, (ss & 0xffff) as u16);
                prop_assert!(rpl(cs) != 0, "ring 0");
                prop_assert_eq!(rpl(ss), rpl(cs));
                prop_assert!(is_canonical(rip) || rip <= 0xffff_ffff);
                prop_assert!(cs & !3 != 0, "null CS");
                if !is_reserved(cs) {
                    let d = table[usize::from(cs >> 3)];
                    prop_assert!(d & (1 << 47) != 0, "CS descriptor present");
                    prop_assert!(d & (3 << 43) == 3 << 43, "CS descriptor is code");
                }
                if ss & !3 != 0 && !is_reserved(ss) {
                    let d = table[usize::from(ss >> 3)];
                    prop_assert!(d & (1 << 47) != 0, "SS descriptor present");
                    prop_assert!(d & (3 << 43) == 1 << 44, "SS descriptor is data");
                    prop_assert!(d & (1 << 41) != 0, "SS descriptor is writable");
                }
            }
            Err(f) => prop_assert!(matches!(f.vector, resume::NP | resume::SS | resume::GP)),
        }
    }

    #[test]
    fn a_plain_exit_is_one_check_accepts(
        rip in address(),
        rsp in address(),
        user in any::<bool>(),
        entries in proptest::collection::vec(any::<u64>(), 64),
    ) {
        let (cs, ss) = if user {
            (FLAT_RING3_CS64, FLAT_RING3_DS)
        } else {
            (RING1_KERNEL_CS, RING1_KERNEL_SS)
        };
        let frame = resume::Frame { rip, cs: cs.into(), rsp, ss: ss.into() };
        prop_assert_eq!(resume::is_plain(&frame), is_canonical(rip) && is_canonical(rsp));
        if resume::is_plain(&frame) {
            prop_assert!(resume::check(&frame, &mut Table(entries)).is_ok(), "{frame:?}");
        }
    }
}
