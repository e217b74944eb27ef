//! Fuzzes the page-type system: any sequence of operations keeps every
//! reference count equal to what the frame contents account for, never
//! crashes, and a teardown gives every frame back.
#![no_main]

use dom0_abi::Errno;
use dom0_abi::layout::is_guest_l4_slot;
use dom0_abi::types::{DomId, Mfn};
use hypervisor::mm::effects::Effects;
use hypervisor::mm::frame_table::{FrameInfo, Owner, PageType};
use hypervisor::mm::machine::{DomainMm, MmMachine, PageTableMemory, VcpuMm};
use hypervisor::mm::pte;
use hypervisor::mm::types::{MapCtx, Mmu};
use libfuzzer_sys::fuzz_target;

const FRAMES: usize = 20;
const DOM: DomId = DomId(0);
const OTHER: DomId = DomId(1);

struct Machine {
    frames: Vec<FrameInfo>,
    mem: Vec<[u64; 512]>,
    free: Vec<bool>,
    domains: [DomainMm; 2],
}

impl PageTableMemory for Machine {
    fn read_pte(&self, mfn: Mfn, index: usize) -> u64 {
        self.mem[mfn.0 as usize][index]
    }
    fn write_pte(&mut self, mfn: Mfn, index: usize, value: u64) {
        self.mem[mfn.0 as usize][index] = value;
    }
    fn write_pte_preserve_ad(&mut self, mfn: Mfn, index: usize, value: u64) -> u64 {
        let v = value | (self.read_pte(mfn, index) & (pte::ACCESSED | pte::DIRTY));
        self.write_pte(mfn, index, v);
        v
    }
    fn clear_page(&mut self, mfn: Mfn) {
        self.mem[mfn.0 as usize] = [0; 512];
    }
    fn copy_page(&mut self, dst: Mfn, src: Mfn) {
        self.mem[dst.0 as usize] = self.mem[src.0 as usize];
    }
}

impl MmMachine for Machine {
    fn frames(&mut self) -> &mut [FrameInfo] {
        &mut self.frames
    }
    fn alloc_frames(&mut self, order: u32, limit: u64) -> Option<Mfn> {
        let n = 1usize << order;
        let start = (0..FRAMES).step_by(n).find(|&s| {
            s + n <= FRAMES && (s + n) as u64 <= limit && self.free[s..s + n].iter().all(|&f| f)
        })?;
        for f in start..start + n {
            self.free[f] = false;
            self.mem[f] = [0; 512];
        }
        Some(Mfn(start as u64))
    }
    fn free_frame(&mut self, mfn: Mfn) {
        assert!(!self.free[mfn.0 as usize], "double free");
        self.free[mfn.0 as usize] = true;
    }
    fn set_m2p(&mut self, _mfn: Mfn, _pfn: u64) {}
    fn iomem_permitted(&self, dom: DomId, mfn: Mfn) -> bool {
        dom == DOM && mfn.0 == 0x1_0000
    }
    fn domain_mm(&mut self, dom: DomId) -> Option<&mut DomainMm> {
        self.domains.get_mut(usize::from(dom.0))
    }
    fn set_cache_attr(&mut self, _mfn: Mfn, _attr: u8) -> Result<(), Errno> {
        Ok(())
    }
}

impl Machine {
    fn new() -> Machine {
        let domu = DomainMm {
            privileged: false,
            io_caps: false,
            max_pages: 8,
            ..DomainMm::dom0(0)
        };
        Machine {
            frames: vec![FrameInfo::UNOWNED; FRAMES],
            mem: vec![[0; 512]; FRAMES],
            free: vec![true; FRAMES],
            domains: [DomainMm::dom0(0), domu],
        }
    }

    /// Recounts every reference from the contents and compares.
    fn check(&self, roots: &[Mfn]) {
        let mut refs = [0u64; FRAMES];
        let mut types = [0u64; FRAMES];
        for (i, f) in self.frames.iter().enumerate() {
            if f.count() == 0 {
                assert_eq!(f.owner(), Owner::None);
                assert_eq!(f.type_count(), 0);
                continue;
            }
            assert!(!self.free[i], "frame {i} owned and free");
            refs[i] += u64::from(f.is_allocated()) + u64::from(f.is_pinned());
            types[i] += u64::from(f.is_pinned());
            let ty = f.page_type();
            if f.type_count() == 0 || !ty.is_page_table() {
                continue;
            }
            assert!(f.is_validated());
            for (slot, &e) in self.mem[i].iter().enumerate() {
                if !pte::is_present(e) || (ty == PageType::L4 && !is_guest_l4_slot(slot)) {
                    continue;
                }
                let t = pte::frame(e).0 as usize;
                if t >= FRAMES {
                    continue;
                }
                refs[t] += 1;
                if ty != PageType::L1 || pte::is_writable(e) {
                    types[t] += 1;
                }
            }
        }
        for r in roots {
            refs[r.0 as usize] += 1;
            types[r.0 as usize] += 1;
        }
        for (i, f) in self.frames.iter().enumerate() {
            assert_eq!(u64::from(f.count()), refs[i], "frame {i} count");
            assert_eq!(u64::from(f.type_count()), types[i], "frame {i} type count");
        }
    }
}

fn run(m: &mut Machine, f: impl FnOnce(&mut Mmu<'_, Machine>)) {
    let mut fx = Effects::default();
    f(&mut Mmu::new(m, &mut fx));
    assert!(!fx.crash, "the frame table became inconsistent");
}

fuzz_target!(|data: &[u8]| {
    let mut m = Machine::new();
    for _ in 0..12 {
        let mfn = m.alloc_frames(0, u64::MAX).unwrap();
        run(&mut m, |mmu| mmu.assign(mfn, DOM, None).unwrap());
    }
    let mfn = m.alloc_frames(0, u64::MAX).unwrap();
    run(&mut m, |mmu| mmu.assign(mfn, OTHER, None).unwrap());
    let ctx = MapCtx::own(DOM, true);
    let mut root: Option<Mfn> = None;
    for op in data.chunks_exact(11) {
        let frame = Mfn(u64::from(op[1]) % (FRAMES as u64 + 2));
        let index = usize::from(op[2]) * 2 + usize::from(op[0] >> 7);
        let raw = u64::from_le_bytes(op[3..11].try_into().unwrap());
        // Point the entry at a nearby frame most of the time.
        let target = match raw & 0xF000 {
            0xF000 => 0x1_0000,
            t => (t >> 12) % (FRAMES as u64 + 1),
        };
        let value = (raw & pte::FLAG_BITS) | (target << 12);
        match op[0] & 7 {
            0 => {
                // A guest store through a writable mapping: only untyped
                // or writable frames.
                let f = m.frames.get(frame.0 as usize).copied();
                let plain =
                    f.is_some_and(|f| f.type_count() == 0 || f.page_type() == PageType::Writable);
                if plain && f.is_some_and(|f| f.owner() == Owner::Domain(DOM)) {
                    m.mem[frame.0 as usize][index] = value;
                }
            }
            1 => {
                let ty = PageType::table(1 + (op[2] & 3)).unwrap();
                run(&mut m, |mmu| {
                    let _ = mmu.pin(frame, ty, Owner::Domain(DOM));
                });
            }
            2 => run(&mut m, |mmu| {
                let _ = mmu.unpin(frame, Owner::Domain(DOM));
            }),
            3 | 4 => {
                let maddr = (frame.0 << 12) | (index as u64 * 8);
                run(&mut m, |mmu| {
                    let _ = mmu.pt_update(maddr, value, op[0] & 8 != 0, &ctx);
                });
            }
            5 => {
                let new = (op[2] & 1 == 0).then_some(frame);
                let mut ok = false;
                run(&mut m, |mmu| ok = mmu.replace_root(root, new, DOM).is_ok());
                if ok {
                    root = new;
                }
            }
            6 => {
                if let Some(r) = root {
                    run(&mut m, |mmu| {
                        let _ = mmu.update_va(r, raw, value, &ctx);
                    });
                }
            }
            _ => {
                if op[2] & 1 == 0 {
                    run(&mut m, |mmu| {
                        let _ = mmu.remove_page(DOM, frame.0);
                    });
                } else if let Some(mfn) = m.alloc_frames(0, u64::MAX) {
                    run(&mut m, |mmu| mmu.assign(mfn, DOM, None).unwrap());
                }
            }
        }
        let roots: Vec<Mfn> = root.into_iter().collect();
        m.check(&roots);
    }
    let mut vcpus = [VcpuMm {
        kernel_l4: root,
        ..VcpuMm::default()
    }];
    run(&mut m, |mmu| {
        assert_eq!(mmu.teardown(DOM, &mut vcpus).remaining, 0);
        assert_eq!(mmu.teardown(OTHER, &mut []).remaining, 0);
    });
    assert!(m.free.iter().all(|&f| f), "every frame back");
});
