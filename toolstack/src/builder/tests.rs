//! The builder against a fake hypervisor that keeps every frame it hands
//! out, so the test can walk the domU's page tables as the CPU would.

#![allow(
    clippy::cast_possible_truncation,
    reason = "test images and addresses are small and 64-bit"
)]

extern crate std;
use std::collections::BTreeMap;
use std::vec::Vec;

use super::*;
use crate::config::Action;

const BASE: u64 = 0xFFFF_FFFF_8000_0000;
const CODE: &[u8] = b"\x0f\x0b guest code here";

/// Every call, and the frames of the one domain.
#[derive(Default)]
struct FakeHv {
    calls: Vec<&'static str>,
    frames: BTreeMap<u64, [u8; PAGE_BYTES]>,
    next_mfn: u64,
    fail: Option<&'static str>,
    pinned: Option<u64>,
    hypercall_page: Option<u64>,
    ctxt: Option<VcpuGuestContext>,
    destroyed: bool,
    ports: u32,
}

const SHARED_INFO_MFN: u64 = 0x77;
const GRANT_TABLE_MFN: u64 = 0x78;
const DOMID: u16 = 5;

impl FakeHv {
    fn call(&mut self, op: &'static str) -> Result<(), HvError> {
        self.calls.push(op);
        if self.fail == Some(op) {
            return Err(HvError { op, ret: -22 });
        }
        Ok(())
    }

    fn read_u64(&self, maddr: u64) -> u64 {
        let page = &self.frames[&(maddr >> 12)];
        let off = (maddr & 0xFFF) as usize;
        u64::from_le_bytes(page[off..off + 8].try_into().unwrap())
    }

    /// Translates `va` through the tables under `cr3`, as the CPU would.
    fn translate(&self, cr3: u64, va: u64) -> Option<(u64, u64)> {
        let mut table = cr3 & !0xFFF;
        for level in [4u32, 3, 2, 1] {
            let index = (va >> (12 + 9 * (level - 1))) & 511;
            let entry = self.read_u64(table + index * 8);
            if entry & 1 == 0 {
                return None;
            }
            if level == 1 {
                return Some((
                    (entry & 0x000F_FFFF_FFFF_F000) | (va & 0xFFF),
                    entry & 0xFFF,
                ));
            }
            table = entry & 0x000F_FFFF_FFFF_F000;
        }
        None
    }

    fn read_va(&self, cr3: u64, va: u64, len: usize) -> Vec<u8> {
        (0..len as u64)
            .map(|i| {
                let (maddr, _) = self.translate(cr3, va + i).unwrap();
                self.frames[&(maddr >> 12)][(maddr & 0xFFF) as usize]
            })
            .collect()
    }
}

impl Hypervisor for FakeHv {
    fn create_domain(&mut self, config: &CreateDomain) -> Result<u16, HvError> {
        self.call("createdomain")?;
        assert_eq!(
            (config.max_evtchn_port, config.max_grant_frames),
            (1023, -1)
        );
        self.next_mfn = 0x9000;
        Ok(DOMID)
    }
    fn max_vcpus(&mut self, dom: u16, _max: u32) -> Result<(), HvError> {
        assert_eq!(dom, DOMID);
        self.call("max_vcpus")
    }
    fn max_mem(&mut self, _dom: u16, kb: u64) -> Result<(), HvError> {
        assert_eq!(kb, 4 * 1024 + 1024);
        self.call("max_mem")
    }
    fn set_address_size(&mut self, _dom: u16, bits: u32) -> Result<(), HvError> {
        assert_eq!(bits, 64);
        self.call("set_address_size")
    }
    fn alloc_unbound(&mut self, _dom: u16, remote: u16) -> Result<u32, HvError> {
        assert_eq!(remote, 0);
        self.call("alloc_unbound")?;
        self.ports += 1;
        Ok(self.ports + 2)
    }
    fn populate_physmap(&mut self, _dom: u16, frames: &mut [u64]) -> Result<usize, HvError> {
        self.call("populate_physmap")?;
        // MFNs run downwards, so a pfn/mfn mix-up shows.
        for f in frames.iter_mut() {
            *f = self.next_mfn;
            self.frames.insert(self.next_mfn, [0xAA; PAGE_BYTES]);
            self.next_mfn -= 1;
        }
        Ok(frames.len())
    }
    fn write_frame(
        &mut self,
        _dom: u16,
        mfn: u64,
        offset: usize,
        bytes: &[u8],
    ) -> Result<(), HvError> {
        self.call("write_frame")?;
        if mfn == SHARED_INFO_MFN {
            self.frames.entry(mfn).or_insert([0xAA; PAGE_BYTES]);
        }
        let page = self
            .frames
            .get_mut(&mfn)
            .expect("write to a frame of the domain");
        page[offset..offset + bytes.len()].copy_from_slice(bytes);
        Ok(())
    }
    fn shared_info_frame(&mut self, _dom: u16) -> Result<u64, HvError> {
        self.call("getdomaininfo")?;
        Ok(SHARED_INFO_MFN)
    }
    fn grant_table_frame(&mut self, _dom: u16) -> Result<u64, HvError> {
        self.call("setup_table")?;
        self.frames
            .entry(GRANT_TABLE_MFN)
            .or_insert([0; PAGE_BYTES]);
        Ok(GRANT_TABLE_MFN)
    }
    fn hypercall_init(&mut self, _dom: u16, mfn: u64) -> Result<(), HvError> {
        self.call("hypercall_init")?;
        self.hypercall_page = Some(mfn);
        Ok(())
    }
    fn pin_l4(&mut self, _dom: u16, mfn: u64) -> Result<(), HvError> {
        self.call("pin_l4")?;
        self.pinned = Some(mfn);
        Ok(())
    }
    fn set_vcpu_context(
        &mut self,
        _dom: u16,
        vcpu: u32,
        ctxt: &VcpuGuestContext,
    ) -> Result<(), HvError> {
        assert_eq!(vcpu, 0);
        self.call("setvcpucontext")?;
        self.ctxt = Some(*ctxt);
        Ok(())
    }
    fn unpause(&mut self, _dom: u16) -> Result<(), HvError> {
        self.call("unpausedomain")
    }
    fn destroy(&mut self, _dom: u16) -> Result<(), HvError> {
        self.destroyed = true;
        self.call("destroydomain")
    }
}

/// One Xen note.
fn note(out: &mut Vec<u8>, kind: u32, desc: &[u8]) {
    out.extend_from_slice(&4u32.to_le_bytes());
    out.extend_from_slice(&(desc.len() as u32).to_le_bytes());
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(b"Xen\0");
    out.extend_from_slice(desc);
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// A 64-bit PV ELF: one PT_LOAD (code at `BASE + 0x1000`, 12 KiB in
/// memory, the hypercall page at `BASE + 0x2000`) and one PT_NOTE.
fn tiny_kernel() -> Vec<u8> {
    let mut notes = Vec::new();
    note(&mut notes, 6, b"tiny\0");
    note(&mut notes, 8, b"generic\0");
    note(&mut notes, 5, b"xen-3.0\0");
    note(&mut notes, 3, &BASE.to_le_bytes());
    note(&mut notes, 4, &0u64.to_le_bytes());
    note(&mut notes, 2, &(BASE + 0x2000).to_le_bytes());
    let mut elf = std::vec![0u8; 0x1000];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2; // 64-bit
    elf[5] = 1; // little-endian
    elf[6] = 1; // version
    elf[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
    elf[20..24].copy_from_slice(&1u32.to_le_bytes());
    elf[24..32].copy_from_slice(&(BASE + 0x1000).to_le_bytes()); // e_entry
    elf[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    elf[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    elf[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    elf[56..58].copy_from_slice(&2u16.to_le_bytes()); // e_phnum
    elf[58..60].copy_from_slice(&64u16.to_le_bytes()); // e_shentsize
    let phdr = |elf: &mut Vec<u8>,
                at: usize,
                kind: u32,
                flags: u32,
                off: u64,
                va: u64,
                pa: u64,
                filesz: u64,
                memsz: u64| {
        elf[at..at + 4].copy_from_slice(&kind.to_le_bytes());
        elf[at + 4..at + 8].copy_from_slice(&flags.to_le_bytes());
        for (i, v) in [off, va, pa, filesz, memsz, 0x1000].into_iter().enumerate() {
            elf[at + 8 + i * 8..at + 16 + i * 8].copy_from_slice(&v.to_le_bytes());
        }
    };
    let notes_at = 0x200u64;
    phdr(
        &mut elf,
        64,
        1,
        5,
        0x1000,
        BASE + 0x1000,
        0x1000,
        CODE.len() as u64,
        0x3000,
    );
    phdr(
        &mut elf,
        120,
        4,
        4,
        notes_at,
        0,
        0,
        notes.len() as u64,
        notes.len() as u64,
    );
    elf[notes_at as usize..notes_at as usize + notes.len()].copy_from_slice(&notes);
    elf.extend_from_slice(CODE);
    elf
}

fn config() -> DomainConfig<'static> {
    DomainConfig {
        name: "tiny",
        kernel: "tiny",
        memory_mib: 4,
        vcpus: 1,
        cmdline: "hello=1",
        on_poweroff: Action::Destroy,
        on_crash: Action::Destroy,
        vif: None,
        disks: [None; crate::config::MAX_DISKS],
    }
}

#[test]
fn builds_a_bootable_domain() {
    let mut hv = FakeHv::default();
    let mut p2m = [0u64; 1024];
    let built = build(&mut hv, &config(), &tiny_kernel(), &mut p2m).unwrap();
    assert_eq!(built.domid, DOMID);
    assert_eq!((built.store_port, built.console_port), (3, 4));
    // The order xl uses, then the writes; the domain stays paused.
    let mut ops: Vec<&str> = hv.calls.clone();
    ops.dedup();
    assert_eq!(
        ops,
        [
            "createdomain",
            "max_vcpus",
            "max_mem",
            "alloc_unbound",
            "set_address_size",
            "populate_physmap",
            "write_frame",
            "getdomaininfo",
            "write_frame",
            "setup_table",
            "write_frame",
            "hypercall_init",
            "pin_l4",
            "write_frame",
            "setvcpucontext",
        ]
    );
    // Grant entries 0 and 1 give dom0 the console and xenstore pages.
    let table = &hv.frames[&GRANT_TABLE_MFN];
    for (gref, mfn) in [built.console_mfn, built.store_mfn].into_iter().enumerate() {
        let entry = &table[gref * 8..gref * 8 + 8];
        assert_eq!(entry[..4], [1, 0, 0, 0], "permit_access for dom0");
        assert_eq!(
            u64::from(u32::from_le_bytes(entry[4..].try_into().unwrap())),
            mfn
        );
    }
    let ctxt = hv.ctxt.unwrap();
    let cr3 = ctxt.ctrlreg[3];
    assert_eq!(hv.pinned, Some(cr3 >> 12));
    assert_eq!(cr3 >> 12, p2m[built.layout.pt_pfn as usize]);
    assert_eq!(
        (ctxt.user_regs.cs, ctxt.user_regs.ss),
        (FLAT_KERNEL_CS, FLAT_KERNEL_SS)
    );
    assert_eq!(ctxt.flags, 0x24);
    // The entry point maps the code; .bss after it reads zero.
    assert_eq!(ctxt.user_regs.rip, BASE + 0x1000);
    assert_eq!(hv.read_va(cr3, ctxt.user_regs.rip, CODE.len()), CODE);
    assert!(
        hv.read_va(cr3, BASE + 0x1000 + CODE.len() as u64, 64)
            .iter()
            .all(|&b| b == 0)
    );
    assert_eq!(hv.hypercall_page, Some(p2m[2]));
    // start_info through the guest's own view.
    let si = hv.read_va(cr3, ctxt.user_regs.rsi, StartInfo::SIZE);
    let si = StartInfo::from_wire(&si).unwrap();
    assert_eq!(si.magic_bytes(), b"xen-3.0-x86_64");
    assert_eq!(si.nr_pages, 1024);
    assert_eq!(si.shared_info, SHARED_INFO_MFN << 12);
    assert_eq!(si.flags, 0);
    assert_eq!((si.store_mfn, si.store_evtchn), (built.store_mfn, 3));
    assert_eq!(si.store_mfn, p2m[built.layout.store_pfn as usize]);
    assert_eq!(si.console.domu_mfn(), built.console_mfn);
    assert_eq!(si.console.domu_evtchn(), 4);
    assert_eq!(si.cmdline(), b"hello=1");
    assert_eq!(si.pt_base, built.layout.va(built.layout.pt_pfn));
    // The p2m list in the guest says where every pfn is.
    for pfn in [0u64, 7, 1023] {
        let entry = hv.read_va(cr3, si.mfn_list + pfn * 8, 8);
        assert_eq!(
            u64::from_le_bytes(entry.try_into().unwrap()),
            p2m[pfn as usize]
        );
    }
    // The page tables are mapped read-only, the stack writable.
    let (_, flags) = hv.translate(cr3, si.pt_base).unwrap();
    assert_eq!(flags & 2, 0);
    let (_, flags) = hv.translate(cr3, ctxt.user_regs.rsp - 8).unwrap();
    assert_eq!(flags & 2, 2);
    // shared_info: every legacy vcpu_info masked.
    let shared = hv.frames[&SHARED_INFO_MFN];
    assert!((0..32).all(|v| shared[v * 64 + 1] == 1 && shared[v * 64] == 0));
    assert!(!hv.destroyed);
}

#[test]
fn failures_destroy_the_domain() {
    for op in ["max_mem", "populate_physmap", "pin_l4", "setvcpucontext"] {
        let mut hv = FakeHv {
            fail: Some(op),
            ..FakeHv::default()
        };
        let mut p2m = [0u64; 1024];
        let err = build(&mut hv, &config(), &tiny_kernel(), &mut p2m).unwrap_err();
        assert_eq!(err, BuildError::Hypervisor(HvError { op, ret: -22 }));
        assert!(hv.destroyed, "{op}");
    }
    let mut hv = FakeHv {
        fail: Some("createdomain"),
        ..FakeHv::default()
    };
    let mut p2m = [0u64; 1024];
    assert!(build(&mut hv, &config(), &tiny_kernel(), &mut p2m).is_err());
    assert!(!hv.destroyed);
}

#[test]
fn refusals_before_any_hypercall() {
    let mut hv = FakeHv::default();
    let mut small = [0u64; 100];
    assert_eq!(
        build(&mut hv, &config(), &tiny_kernel(), &mut small),
        Err(BuildError::P2mBuffer {
            pages: 1024,
            capacity: 100
        })
    );
    let mut p2m = [0u64; 1024];
    assert!(matches!(
        build(&mut hv, &config(), b"not an elf", &mut p2m),
        Err(BuildError::Image(_))
    ));
    let big = DomainConfig {
        memory_mib: 1,
        ..config()
    };
    let mut kernel = tiny_kernel();
    // 1 MiB is enough; grow .bss past it.
    kernel[64 + 40..64 + 48].copy_from_slice(&(2u64 << 20).to_le_bytes());
    assert!(matches!(
        build(&mut hv, &big, &kernel, &mut p2m),
        Err(BuildError::Layout(_))
    ));
    assert!(hv.calls.is_empty());
}
