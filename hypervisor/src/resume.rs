//! Whether a guest context can be handed to the exit path's `iretq`.
//!
//! The exit `iretq` runs at CPL 0 with the guest view loaded: a fault
//! there cannot be handled (the hypervisor is not mapped), so every
//! context is checked here first, with the rules the CPU applies to an
//! `iretq` that returns to an outer ring. A guest may legally hold many
//! selectors besides the five of the reserved GDT page: a null SS with
//! RPL = CPL in 64-bit mode, code and data descriptors of its own GDT or
//! LDT. Those are accepted after their descriptor is checked. A context
//! the CPU would refuse becomes the fault the CPU would raise, for the
//! caller to deliver to the guest (or, if that fails, to crash the
//! domain). Nothing here trusts the guest: every input is checked data.
#![forbid(unsafe_code)]

use dom0_abi::segment::{
    FLAT_RING3_CS32, FLAT_RING3_CS64, FLAT_RING3_DS, RING1_KERNEL_CS, RING1_KERNEL_SS, index,
    is_ldt, is_reserved, rpl,
};
use x86_64::structures::gdt::DescriptorFlags;

use crate::layout::is_canonical;

/// #NP.
pub const NP: u8 = 11;
/// #SS.
pub const SS: u8 = 12;
/// #GP.
pub const GP: u8 = 13;

const PRESENT: u64 = DescriptorFlags::PRESENT.bits();
const CODE_OR_DATA: u64 = DescriptorFlags::USER_SEGMENT.bits();
const CODE: u64 = DescriptorFlags::EXECUTABLE.bits();
const CONFORMING: u64 = DescriptorFlags::CONFORMING.bits();
const WRITABLE: u64 = DescriptorFlags::WRITABLE.bits();
const LONG: u64 = DescriptorFlags::LONG_MODE.bits();
const DEFAULT_SIZE: u64 = DescriptorFlags::DEFAULT_SIZE.bits();
const GRANULARITY: u64 = DescriptorFlags::GRANULARITY.bits();

/// The fault the CPU would raise for a context it cannot load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Exception vector (#GP, #NP or #SS).
    pub vector: u8,
    /// Its error code (a selector with its RPL cleared, or 0).
    pub error_code: u64,
    /// What is wrong, for the log.
    pub what: &'static str,
}

impl core::fmt::Display for Fault {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{} (vector {}, error {:#x})",
            self.what, self.vector, self.error_code
        )
    }
}

const fn fault(vector: u8, selector: u16, what: &'static str) -> Fault {
    Fault {
        vector,
        error_code: (selector & !3) as u64,
        what,
    }
}

/// The part of a context the exit `iretq` loads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame {
    /// RIP.
    pub rip: u64,
    /// CS (only bits 0-15 are loaded).
    pub cs: u64,
    /// RSP.
    pub rsp: u64,
    /// SS (only bits 0-15 are loaded).
    pub ss: u64,
}

impl Frame {
    /// The frame of a saved context.
    #[inline(always)]
    #[must_use]
    pub fn of(regs: &crate::regs::GuestRegs) -> Frame {
        Frame {
            rip: regs.rip,
            cs: regs.cs,
            rsp: regs.rsp,
            ss: regs.ss,
        }
    }
}

/// Where a selector's descriptor comes from: the guest's GDT or LDT.
pub trait Descriptors {
    /// The 8-byte descriptor `selector` names (TI and index; never a
    /// reserved or null selector), or `None` when it lies beyond the
    /// table's limit or cannot be read.
    fn descriptor(&mut self, selector: u16) -> Option<u64>;
}

/// Whether `frame` is the common case every entry returns to, which
/// [`check`] would accept without reading a descriptor: the ring-1 kernel
/// selectors or Xen's 64-bit user selectors (the hypervisor's own
/// descriptors, which no guest can change), with a canonical RIP and RSP.
#[inline]
#[must_use]
pub fn is_plain(frame: &Frame) -> bool {
    let (cs, ss) = (frame.cs & 0xffff, frame.ss & 0xffff);
    let selectors = (cs == u64::from(RING1_KERNEL_CS) && ss == u64::from(RING1_KERNEL_SS))
        || (cs == u64::from(FLAT_RING3_CS64) && ss == u64::from(FLAT_RING3_DS));
    selectors && is_canonical(frame.rip) && is_canonical(frame.rsp)
}

/// Checks `frame` as an `iretq` from ring 0 would: CS must name a code
/// segment the RPL may run (RPL 1-3), SS a writable data segment of the
/// same privilege (or null in 64-bit mode below ring 3), RIP must lie in
/// CS (canonical in 64-bit mode, below the limit otherwise) and, in 64-bit
/// mode, RSP must be canonical. Returns the fault the CPU would raise
/// otherwise.
pub fn check(frame: &Frame, tables: &mut impl Descriptors) -> Result<(), Fault> {
    let cs = (frame.cs & 0xffff) as u16;
    let ss = (frame.ss & 0xffff) as u16;
    let cpl = rpl(cs);
    if cpl == 0 {
        return Err(fault(GP, cs, "CS with RPL 0"));
    }
    let code = code_segment(cs, tables)?;
    stack_segment(ss, cpl, code.long, tables)?;
    if code.long {
        if !is_canonical(frame.rip) {
            return Err(fault(GP, 0, "non-canonical RIP"));
        }
        if !is_canonical(frame.rsp) {
            return Err(fault(SS, 0, "non-canonical RSP"));
        }
    } else if frame.rip > code.limit {
        return Err(fault(GP, 0, "RIP beyond the CS limit"));
    }
    Ok(())
}

/// What a valid CS gives the return.
struct Code {
    /// 64-bit mode (otherwise compatibility mode).
    long: bool,
    /// The segment limit in bytes (compatibility mode).
    limit: u64,
}

fn code_segment(cs: u16, tables: &mut impl Descriptors) -> Result<Code, Fault> {
    if is_reserved(cs) {
        return match cs {
            RING1_KERNEL_CS | FLAT_RING3_CS64 => Ok(Code {
                long: true,
                limit: u64::MAX,
            }),
            FLAT_RING3_CS32 => Ok(Code {
                long: false,
                limit: 0xffff_ffff,
            }),
            _ => Err(fault(GP, cs, "CS names a reserved descriptor")),
        };
    }
    if cs & !3 == 0 {
        return Err(fault(GP, 0, "null CS"));
    }
    let d = tables
        .descriptor(cs)
        .ok_or(fault(GP, cs, "CS beyond the descriptor table"))?;
    if d & CODE_OR_DATA == 0 || d & CODE == 0 {
        return Err(fault(GP, cs, "CS is not a code segment"));
    }
    let dpl = dpl(d);
    let cpl = rpl(cs);
    let allowed = if d & CONFORMING != 0 {
        dpl <= cpl
    } else {
        dpl == cpl
    };
    if !allowed {
        return Err(fault(GP, cs, "CS descriptor privilege does not match"));
    }
    if d & PRESENT == 0 {
        return Err(fault(NP, cs, "CS not present"));
    }
    let long = d & LONG != 0;
    if long && d & DEFAULT_SIZE != 0 {
        return Err(fault(GP, cs, "CS with both L and D set"));
    }
    Ok(Code {
        long,
        limit: limit(d),
    })
}

fn stack_segment(
    ss: u16,
    cpl: u16,
    long: bool,
    tables: &mut impl Descriptors,
) -> Result<(), Fault> {
    if rpl(ss) != cpl {
        return Err(fault(GP, ss, "SS RPL differs from CS RPL"));
    }
    if ss & !3 == 0 {
        return if long && cpl != 3 {
            Ok(())
        } else {
            Err(fault(GP, 0, "null SS"))
        };
    }
    if is_reserved(ss) {
        return match (ss, cpl) {
            (RING1_KERNEL_SS, 1) | (FLAT_RING3_DS, 3) => Ok(()),
            _ => Err(fault(GP, ss, "SS names a reserved descriptor")),
        };
    }
    let d = tables
        .descriptor(ss)
        .ok_or(fault(GP, ss, "SS beyond the descriptor table"))?;
    if d & CODE_OR_DATA == 0 || d & CODE != 0 || d & WRITABLE == 0 {
        return Err(fault(GP, ss, "SS is not a writable data segment"));
    }
    if dpl(d) != cpl {
        return Err(fault(GP, ss, "SS descriptor privilege does not match"));
    }
    if d & PRESENT == 0 {
        return Err(fault(SS, ss, "SS not present"));
    }
    Ok(())
}

const fn dpl(d: u64) -> u16 {
    ((d >> 45) & 3) as u16
}

/// A descriptor's segment limit in bytes (the last valid offset).
const fn limit(d: u64) -> u64 {
    let raw = (d & 0xffff) | ((d >> 32) & 0xf_0000);
    if d & GRANULARITY != 0 {
        (raw << 12) | 0xfff
    } else {
        raw
    }
}

/// Where the descriptor of `selector` lies: in the LDT or the GDT, and
/// at which byte offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// Byte offset into the guest's GDT.
    Gdt(u64),
    /// Byte offset into the guest's LDT.
    Ldt(u64),
}

/// The table and offset a selector's descriptor comes from.
pub const fn locate(selector: u16) -> Location {
    let offset = (index(selector) as u64) * 8;
    if is_ldt(selector) {
        Location::Ldt(offset)
    } else {
        Location::Gdt(offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GDT/LDT of up to 16 descriptors; index 1 of the LDT is at 16+1.
    struct Table([u64; 32]);

    impl Descriptors for Table {
        fn descriptor(&mut self, selector: u16) -> Option<u64> {
            let i = index(selector) + if is_ldt(selector) { 16 } else { 0 };
            self.0.get(i).copied()
        }
    }

    const CODE64_DPL1: u64 = 0x00AF_BA00_0000_FFFF;
    const CODE64_DPL3: u64 = 0x00AF_FA00_0000_FFFF;
    const CODE32_DPL3: u64 = 0x00CF_FA00_0000_FFFF;
    const CODE16_DPL3_SMALL: u64 = 0x0000_FA00_0000_0FFF;
    const DATA_DPL1: u64 = 0x00CF_B200_0000_FFFF;
    const DATA_DPL3: u64 = 0x00CF_F200_0000_FFFF;
    const CONFORMING_DPL1: u64 = 0x00AF_BE00_0000_FFFF;

    fn table() -> Table {
        let mut t = [0u64; 32];
        t[1] = CODE64_DPL1;
        t[2] = DATA_DPL1;
        t[3] = CODE64_DPL3;
        t[4] = DATA_DPL3;
        t[5] = CODE32_DPL3;
        t[6] = CODE64_DPL1 & !PRESENT;
        t[7] = DATA_DPL1 & !WRITABLE;
        t[8] = CODE16_DPL3_SMALL;
        t[9] = CONFORMING_DPL1;
        t[10] = CODE64_DPL1 | DEFAULT_SIZE;
        t[11] = DATA_DPL1 & !PRESENT;
        t[17] = CODE64_DPL1;
        Table(t)
    }

    fn frame(cs: u16, ss: u16) -> Frame {
        Frame {
            rip: 0xffff_ffff_8000_1000,
            cs: cs.into(),
            rsp: 0xffff_ffff_8002_0000,
            ss: ss.into(),
        }
    }

    fn check_sel(cs: u16, ss: u16) -> Result<(), Fault> {
        check(&frame(cs, ss), &mut table())
    }

    #[test]
    fn the_reserved_pairs_pass() {
        assert_eq!(check_sel(RING1_KERNEL_CS, RING1_KERNEL_SS), Ok(()));
        assert_eq!(check_sel(FLAT_RING3_CS64, FLAT_RING3_DS), Ok(()));
        let mut compat = frame(FLAT_RING3_CS32, FLAT_RING3_DS);
        compat.rip = 0x1000;
        assert_eq!(check(&compat, &mut table()), Ok(()));
    }

    #[test]
    fn legal_guest_selectors_pass() {
        assert_eq!(check_sel(RING1_KERNEL_CS, 1), Ok(()), "null SS, RPL 1");
        assert_eq!(check_sel(RING1_KERNEL_CS, 0x10 | 1), Ok(()), "own data SS");
        assert_eq!(check_sel(0x08 | 1, RING1_KERNEL_SS), Ok(()), "own code CS");
        assert_eq!(check_sel(0x18 | 3, 0x20 | 3), Ok(()), "user code/data");
        assert_eq!(check_sel(0x48 | 3, FLAT_RING3_DS), Ok(()), "conforming");
        assert_eq!(check_sel(0x08 | 4 | 1, 1), Ok(()), "LDT code");
    }

    #[test]
    fn ring0_and_mismatched_privileges_fault() {
        assert_eq!(check_sel(0xe008, 0xe010).unwrap_err().vector, GP);
        assert_eq!(
            check_sel(0xe019 | 2, RING1_KERNEL_SS).unwrap_err().vector,
            GP
        );
        assert_eq!(check_sel(0x08 | 3, 0x20 | 3).unwrap_err().error_code, 0x08);
        assert_eq!(check_sel(0x18 | 1, 0x10 | 1).unwrap_err().error_code, 0x18);
        assert_eq!(
            check_sel(RING1_KERNEL_CS, 0x20 | 1).unwrap_err().error_code,
            0x20
        );
        assert_eq!(
            check_sel(RING1_KERNEL_CS, FLAT_RING3_DS)
                .unwrap_err()
                .vector,
            GP
        );
        assert_eq!(check_sel(FLAT_RING3_CS64, 3).unwrap_err().what, "null SS");
        assert_eq!(check_sel(RING1_KERNEL_CS, 0).unwrap_err().vector, GP);
    }

    #[test]
    fn bad_descriptors_fault_as_the_cpu_would() {
        assert_eq!(check_sel(0x30 | 1, 1).unwrap_err().vector, NP);
        assert_eq!(check_sel(0x10 | 1, 1).unwrap_err().vector, GP, "data as CS");
        assert_eq!(check_sel(RING1_KERNEL_CS, 0x38 | 1).unwrap_err().vector, GP);
        assert_eq!(check_sel(RING1_KERNEL_CS, 0x58 | 1).unwrap_err().vector, SS);
        assert_eq!(check_sel(0x50 | 1, 1).unwrap_err().vector, GP, "L and D");
        assert_eq!(check_sel(0xf8 | 1, 1).unwrap_err().vector, GP, "beyond");
        assert_eq!(check_sel(1, 1).unwrap_err().what, "null CS");
        assert_eq!(check_sel(0x60 | 4 | 1, 1).unwrap_err().vector, GP);
    }

    #[test]
    fn rip_and_rsp_must_fit_the_mode() {
        let mut f = frame(RING1_KERNEL_CS, RING1_KERNEL_SS);
        f.rip = 0x8000_0000_0000;
        assert_eq!(check(&f, &mut table()).unwrap_err().vector, GP);
        f.rip = 0x7fff_ffff_ffff;
        f.rsp = 0x8000_0000_0000;
        assert_eq!(check(&f, &mut table()).unwrap_err().vector, SS);
        let mut c = frame(FLAT_RING3_CS32, FLAT_RING3_DS);
        c.rip = 0x1_0000_0000;
        assert_eq!(check(&c, &mut table()).unwrap_err().vector, GP);
        c.rip = 0xffff_ffff;
        c.rsp = 0x8000_0000_0000_0000;
        assert_eq!(check(&c, &mut table()), Ok(()), "compat mode uses ESP");
        let mut small = frame(0x40 | 3, FLAT_RING3_DS);
        small.rip = 0xfff;
        assert_eq!(check(&small, &mut table()), Ok(()));
        small.rip = 0x1000;
        assert_eq!(check(&small, &mut table()).unwrap_err().vector, GP);
    }

    #[test]
    fn descriptors_are_found_in_their_table() {
        assert_eq!(locate(0x0b), Location::Gdt(8));
        assert_eq!(locate(0x0f), Location::Ldt(8));
    }
}
