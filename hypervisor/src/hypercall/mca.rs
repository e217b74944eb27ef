//! `mca(op)`: the machine-check architecture interface, as much of it as
//! Linux's dom0 uses (`xen_mcelog`): describing the physical CPUs
//! (`XEN_MC_physcpuinfo`) and fetching telemetry (`XEN_MC_fetch`), of
//! which this hypervisor never has any: it handles no machine check.
//!
//! Xen 4.17's order of checks (`dom0_abi::mca`): the caller's privilege
//! (`EPERM`), the whole `xen_mc` read (`EFAULT`), its interface version
//! (`EACCES`), then the command. The injection commands are `-ENOSYS`.
//!
//! A CPU is described as Xen identifies it at boot, from the boot CPU's
//! CPUID leaves (every CPU is taken to be the same model) and the CPU's
//! own APIC id; `MSR_IA32_MCG_CAP` is the one MSR reported.
#![forbid(unsafe_code)]

use dom0_abi::Errno;
use dom0_abi::mca::{
    MSR_IA32_MCG_CAP, McaCmd, McinfoLogicalCpu, McinfoMsr, XEN_MC_ACK, XEN_MC_NODATA,
    XEN_MC_NONURGENT, XEN_MC_URGENT, XEN_MCA_INTERFACE_VERSION, XenMc, XenMcFetch,
    XenMcPhyscpuinfo,
};
use dom0_abi::wire::Wire;

use super::{Env, HostInfo, Pcpu};

/// `mca(op)`: `op` is the guest address of a `xen_mc`.
pub fn mca(env: &mut impl Env, op_addr: u64) -> Result<u64, Errno> {
    if env.domain().mm.privilege.is_none() {
        return Err(Errno::EPERM);
    }
    let mut op: XenMc = super::read_struct(env, op_addr)?;
    if op.interface_version != XEN_MCA_INTERFACE_VERSION {
        return Err(Errno::EACCES);
    }
    match McaCmd::from_number(u64::from(op.cmd)) {
        Some(McaCmd::Fetch) => {
            let mut fetch: XenMcFetch = op.payload().ok_or(Errno::EFAULT)?;
            if !matches!(
                fetch.flags & (XEN_MC_NONURGENT | XEN_MC_URGENT),
                XEN_MC_NONURGENT | XEN_MC_URGENT
            ) {
                return Err(Errno::EINVAL);
            }
            if fetch.flags & XEN_MC_ACK != 0 {
                return Ok(0);
            }
            if fetch.data == 0 {
                return Err(Errno::EINVAL);
            }
            fetch.flags = XEN_MC_NODATA;
            fetch.fetch_id = 0;
            op.set_payload(&fetch);
            put(env, op_addr, &op)?;
            Ok(0)
        }
        Some(McaCmd::Physcpuinfo) => physcpuinfo(env, op_addr, op),
        Some(McaCmd::Msrinject | McaCmd::Mceinject | McaCmd::InjectV2) => Err(Errno::ENOSYS),
        Some(McaCmd::Notifydomain) | None => Err(Errno::EINVAL),
    }
}

/// `XEN_MC_physcpuinfo`: the count of online CPUs, or their descriptions.
fn physcpuinfo(env: &mut impl Env, op_addr: u64, mut op: XenMc) -> Result<u64, Errno> {
    let mut info: XenMcPhyscpuinfo = op.payload().ok_or(Errno::EFAULT)?;
    let host = *env.host();
    let online = host.pcpus.iter().filter(|p| p.online).count();
    let mut count = u32::try_from(online).unwrap_or(u32::MAX);
    let mut result = Ok(0);
    if info.info != 0 {
        if info.ncpus == 0 {
            return Err(Errno::EINVAL);
        }
        // Xen takes the count as a signed int: from 2^31 on its array
        // cannot be allocated.
        if i32::try_from(info.ncpus).is_err() {
            return Err(Errno::ENOMEM);
        }
        count = count.min(info.ncpus);
        let identity = Identity::of(host.raw_cpuid);
        let mut at = info.info;
        for (cpunr, pcpu) in host.pcpus.iter().enumerate().filter(|(_, p)| p.online) {
            if at >= info.info + u64::from(count) * McinfoLogicalCpu::SIZE as u64 {
                break;
            }
            let cpu = identity.describe(&host, cpunr, pcpu);
            if put(env, at, &cpu).is_err() {
                result = Err(Errno::EFAULT);
                break;
            }
            at += McinfoLogicalCpu::SIZE as u64;
        }
    }
    info.ncpus = count;
    op.set_payload(&info);
    put(env, op_addr, &op)?;
    result
}

/// Writes `value` to guest address `va` through a stack buffer (`EFAULT`
/// if it cannot be written whole). `super::write_struct` would take the
/// heap for these sizes, and its instantiations for them cost
/// `mmu_update` three instructions per entry (`cargo xtask bench`).
fn put<T: Wire>(env: &mut impl Env, va: u64, value: &T) -> Result<(), Errno> {
    let mut bytes = [0u8; McinfoLogicalCpu::SIZE];
    let bytes = bytes.get_mut(..T::SIZE).ok_or(Errno::EFAULT)?;
    value.to_wire(bytes).ok_or(Errno::EFAULT)?;
    env.copy_to_guest(va, bytes)
}

/// Xen's vendor numbers, by CPUID leaf 0's EBX, ECX, EDX.
const VENDORS: [([u32; 3], u32); 5] = [
    ([0x756e_6547, 0x6c65_746e, 0x4965_6e69], 1), // GenuineIntel
    ([0x6874_7541, 0x444d_4163, 0x6974_6e65], 2), // AuthenticAMD
    ([0x746e_6543, 0x736c_7561, 0x4872_7561], 4), // CentaurHauls
    ([0x6853_2020, 0x2020_6961, 0x6867_6e61], 8), // "  Shanghai  "
    ([0x6f67_7948, 0x656e_6975, 0x6e65_476e], 16), // HygonGenuine
];
/// Xen's vendor number for Intel.
const INTEL: u32 = 1;
/// Leaf 1 EDX: CLFLUSH.
const CLFLUSH: u32 = 1 << 19;
/// Leaf 1 EDX: machine-check architecture.
const MCA: u32 = 1 << 14;
/// Leaf 1 EDX: several logical processors per package.
const HTT: u32 = 1 << 28;

/// What every CPU's description shares: the boot CPU's identification.
struct Identity {
    template: McinfoLogicalCpu,
    /// Logical processors per package, and threads per core.
    logical: u32,
    threads: u32,
    cores: u32,
}

impl Identity {
    /// The identification from the CPUID leaves `cpuid` gives.
    fn of(cpuid: fn(u32, u32) -> [u32; 4]) -> Identity {
        let leaf0 = cpuid(0, 0);
        let level = leaf0[0];
        let vendor = VENDORS
            .iter()
            .find(|(id, _)| *id == [leaf0[1], leaf0[2], leaf0[3]])
            .map_or(0, |&(_, v)| v);
        let mut t = McinfoLogicalCpu {
            mc_cpuid_level: i32::try_from(level).unwrap_or(i32::MAX),
            mc_vendor: vendor,
            mc_cache_alignment: 32,
            ..McinfoLogicalCpu::default()
        };
        for (i, word) in [leaf0[1], leaf0[3], leaf0[2]].iter().enumerate() {
            t.mc_vendorid[4 * i..4 * i + 4].copy_from_slice(&word.to_le_bytes());
        }
        let leaf = |l: u32, s: u32| if l <= level { cpuid(l, s) } else { [0; 4] };
        let leaf1 = leaf(1, 0);
        let (family, model, step) = family_model_step(leaf1[0]);
        (t.mc_family, t.mc_model, t.mc_step) = (family, model, step);
        if leaf1[3] & CLFLUSH != 0 {
            t.mc_cache_alignment = ((leaf1[1] >> 8) & 0xff) * 8;
        }
        let max_ext = cpuid(0x8000_0000, 0)[0];
        let ext = |l: u32| {
            if max_ext >= 0x8000_0000 && l <= max_ext {
                cpuid(l, 0)
            } else {
                [0; 4]
            }
        };
        let ext1 = ext(0x8000_0001);
        t.mc_cpu_caps = [
            leaf1[3],
            leaf1[2],
            ext1[3],
            ext1[2],
            leaf(0xd, 1)[0],
            leaf(7, 0)[1],
            leaf(7, 0)[2],
        ];
        t.mc_brandid = brand(max_ext, &ext);
        if t.mc_brandid[0] == 0 {
            let fallback = super::alloc::format!("{vendor:02x}/{model:02x}");
            t.mc_brandid[..fallback.len()].copy_from_slice(fallback.as_bytes());
        }
        t.mc_cache_size = if vendor == INTEL {
            intel_cache_kib(level, &leaf)
        } else if vendor == 0 {
            u32::MAX
        } else {
            amd_cache_kib(max_ext, &ext)
        };
        let logical = if leaf1[3] & HTT != 0 {
            ((leaf1[1] >> 16) & 0xff).max(1)
        } else {
            1
        };
        let cores = if vendor == INTEL {
            if level >= 4 {
                (leaf(4, 0)[0] >> 26) + 1
            } else {
                1
            }
        } else if max_ext >= 0x8000_0008 && logical > 1 {
            (ext(0x8000_0008)[2] & 0xff) + 1
        } else {
            1
        };
        let cores = cores.min(logical);
        t.mc_nmsrvals = 1;
        Identity {
            template: t,
            logical,
            threads: (logical / cores).max(1),
            cores,
        }
    }

    /// Physical CPU `cpunr` of `host`, `pcpu`.
    fn describe(&self, host: &HostInfo, cpunr: usize, pcpu: &Pcpu) -> McinfoLogicalCpu {
        let apic = pcpu.apic_id;
        let chip = |apic: u32| apic >> bits_for(self.logical);
        let package_cpus = host
            .pcpus
            .iter()
            .filter(|p| p.online && chip(p.apic_id) == chip(apic))
            .count();
        let mut cpu = self.template;
        cpu.mc_cpunr = u32::try_from(cpunr).unwrap_or(u32::MAX);
        cpu.mc_apicid = apic;
        cpu.mc_clusterid = apic & 0xff;
        cpu.mc_chipid = chip(apic);
        cpu.mc_coreid = if self.cores > 1 {
            u16::try_from((apic >> bits_for(self.threads)) & ((1 << bits_for(self.cores)) - 1))
                .unwrap_or(0)
        } else {
            0
        };
        // Xen's mask: the low `threads - 1` bits.
        let mask = 1u32
            .checked_shl(self.threads - 1)
            .unwrap_or(0)
            .wrapping_sub(1);
        cpu.mc_threadid = u16::try_from(apic & mask & 0xffff).unwrap_or(0);
        cpu.mc_ncores = self.cores;
        cpu.mc_ncores_active = u32::try_from(package_cpus)
            .unwrap_or(u32::MAX)
            .div_ceil(self.threads);
        cpu.mc_nthreads = self.threads;
        cpu.mc_msrvalues[0] = McinfoMsr {
            reg: MSR_IA32_MCG_CAP,
            value: if self.template.mc_cpu_caps[0] & MCA != 0 {
                host.mcg_cap
            } else {
                0
            },
        };
        cpu
    }
}

/// Bits needed for `n` values (`n` rounded up to a power of two).
fn bits_for(n: u32) -> u32 {
    n.max(1).next_power_of_two().trailing_zeros()
}

/// Family, model and stepping from leaf 1's EAX, as Xen computes them.
fn family_model_step(eax: u32) -> (u32, u32, u32) {
    let mut family = (eax >> 8) & 0xf;
    if family == 0xf {
        family += (eax >> 20) & 0xff;
    }
    let mut model = (eax >> 4) & 0xf;
    if family >= 6 {
        model |= (eax >> 12) & 0xf0;
    }
    (family, model, eax & 0xf)
}

/// The brand string of leaves 0x80000002-4 without its leading spaces,
/// NUL-padded (empty without those leaves).
fn brand(max_ext: u32, ext: &impl Fn(u32) -> [u32; 4]) -> [u8; 64] {
    let mut raw = [0u8; 48];
    if max_ext >= 0x8000_0004 {
        for (i, l) in (0x8000_0002..=0x8000_0004).enumerate() {
            for (j, word) in ext(l).iter().enumerate() {
                let at = 16 * i + 4 * j;
                raw[at..at + 4].copy_from_slice(&word.to_le_bytes());
            }
        }
    }
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let start = raw[..end].iter().take_while(|&&b| b == b' ').count();
    let mut out = [0u8; 64];
    out[..end - start].copy_from_slice(&raw[start..end]);
    out
}

/// Xen's cache size for AMD-style CPUs, in KiB: L1 data and instruction,
/// replaced by L2, replaced by L3 where the leaves give them (0 without).
fn amd_cache_kib(max_ext: u32, ext: &impl Fn(u32) -> [u32; 4]) -> u32 {
    let mut size = u32::MAX;
    if max_ext >= 0x8000_0005 {
        let l1 = ext(0x8000_0005);
        if (l1[2] | l1[3]) >> 24 != 0 {
            size = (l1[2] >> 24) + (l1[3] >> 24);
        }
    }
    if max_ext >= 0x8000_0006 {
        let l2 = ext(0x8000_0006);
        if l2[2] >> 16 != 0 {
            size = l2[2] >> 16;
        }
        if l2[3] >> 18 != 0 {
            size = (l2[3] >> 18) * 512;
        }
    }
    size
}

/// Xen's cache size for Intel CPUs, in KiB, from the deterministic cache
/// leaf 4: the L3, else the L2, else L1 data plus instruction.
fn intel_cache_kib(level: u32, leaf: &impl Fn(u32, u32) -> [u32; 4]) -> u32 {
    if level < 4 {
        return u32::MAX;
    }
    let (mut l1, mut l2, mut l3) = (0u32, 0u32, 0u32);
    for sub in 0..16 {
        let [eax, ebx, ecx, _] = leaf(4, sub);
        let kind = eax & 0x1f;
        if kind == 0 {
            break;
        }
        let bytes = u64::from((ebx >> 22) + 1)
            * u64::from(((ebx >> 12) & 0x3ff) + 1)
            * u64::from((ebx & 0xfff) + 1)
            * u64::from(ecx + 1);
        let kib = u32::try_from(bytes / 1024).unwrap_or(u32::MAX);
        match ((eax >> 5) & 7, kind) {
            (1, 1 | 2) => l1 += kib,
            (2, _) => l2 = kib,
            (3, _) => l3 = kib,
            _ => {}
        }
    }
    if l3 != 0 {
        l3
    } else if l2 != 0 {
        l2
    } else {
        l1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mm::fake::{BASE, FakeMachine};

    /// Writes `op` at `BASE` and runs `mca` on it; returns the result and
    /// the `xen_mc` read back.
    fn run(env: &mut FakeMachine, op: &XenMc) -> (Result<u64, Errno>, XenMc) {
        let mut bytes = [0u8; XenMc::SIZE];
        op.to_wire(&mut bytes).unwrap();
        env.poke(BASE, &bytes);
        let result = mca(env, BASE);
        let mut back = [0u8; XenMc::SIZE];
        env.copy_from_guest(BASE, &mut back).unwrap();
        (result, XenMc::from_wire(&back).unwrap())
    }

    fn physcpuinfo(ncpus: u32, info: u64) -> XenMc {
        XenMc::new(
            McaCmd::Physcpuinfo,
            &XenMcPhyscpuinfo {
                ncpus,
                pad0: 0,
                info,
            },
        )
    }

    #[test]
    fn physcpuinfo_counts_then_describes_the_cpus() {
        let mut env = FakeMachine::new(16);
        let (r, back) = run(&mut env, &physcpuinfo(0, 0));
        assert_eq!(r, Ok(0));
        assert_eq!(
            back.payload::<XenMcPhyscpuinfo>().unwrap().ncpus,
            1,
            "online only"
        );
        let array = BASE + 0x1000;
        env.poke(array + McinfoLogicalCpu::SIZE as u64, &[0x55; 8]);
        let (r, back) = run(&mut env, &physcpuinfo(8, array));
        assert_eq!(r, Ok(0));
        assert_eq!(back.payload::<XenMcPhyscpuinfo>().unwrap().ncpus, 1);
        let mut raw = [0u8; McinfoLogicalCpu::SIZE + 8];
        env.copy_from_guest(array, &mut raw).unwrap();
        assert_eq!(raw[McinfoLogicalCpu::SIZE..], [0x55; 8], "one entry only");
        let cpu = McinfoLogicalCpu::from_wire(&raw).unwrap();
        assert_eq!((cpu.mc_cpunr, cpu.mc_apicid, cpu.mc_chipid), (0, 0, 0));
        assert_eq!((cpu.mc_family, cpu.mc_model, cpu.mc_step), (0x19, 1, 2));
        assert_eq!(
            (cpu.mc_ncores, cpu.mc_nthreads, cpu.mc_ncores_active),
            (1, 1, 1)
        );
        assert_eq!(cpu.mc_nmsrvals, 1);
        assert_eq!(
            cpu.mc_msrvalues[0],
            McinfoMsr {
                reg: MSR_IA32_MCG_CAP,
                value: 0x10a
            }
        );
        assert_eq!(&cpu.mc_vendorid[..13], b"AuthenticAMD\0");
        assert_eq!(cpu.mc_vendor, 2);
        assert_eq!(&cpu.mc_brandid[..9], b"Fake CPU\0");
        assert_eq!((cpu.mc_cache_size, cpu.mc_cache_alignment), (512, 64));
    }

    #[test]
    fn errors_in_xens_order() {
        let mut env = FakeMachine::new(16);
        assert_eq!(
            run(&mut env, &physcpuinfo(0, BASE + 0x1000)).0,
            Err(Errno::EINVAL)
        );
        assert_eq!(
            run(&mut env, &physcpuinfo(0x8000_0000, BASE + 0x1000)).0,
            Err(Errno::ENOMEM)
        );
        assert_eq!(run(&mut env, &physcpuinfo(1, 0x10)).0, Err(Errno::EFAULT));
        let mut op = physcpuinfo(0, 0);
        op.cmd = 2;
        assert_eq!(run(&mut env, &op).0, Err(Errno::EINVAL));
        op.cmd = 99;
        assert_eq!(run(&mut env, &op).0, Err(Errno::EINVAL));
        op.cmd = 4;
        assert_eq!(run(&mut env, &op).0, Err(Errno::ENOSYS));
        op.interface_version += 1;
        assert_eq!(run(&mut env, &op).0, Err(Errno::EACCES));
        assert_eq!(mca(&mut env, 0x10), Err(Errno::EFAULT));
        env.domain().mm.privilege = None;
        assert_eq!(mca(&mut env, 0x10), Err(Errno::EPERM), "privilege first");
    }

    #[test]
    fn fetch_finds_no_telemetry() {
        let mut env = FakeMachine::new(16);
        let fetch = |flags, data| {
            XenMc::new(
                McaCmd::Fetch,
                &XenMcFetch {
                    flags,
                    pad0: 0,
                    fetch_id: 77,
                    data,
                },
            )
        };
        for flags in [0, XEN_MC_URGENT | XEN_MC_NONURGENT, XEN_MC_ACK] {
            assert_eq!(run(&mut env, &fetch(flags, BASE)).0, Err(Errno::EINVAL));
        }
        assert_eq!(
            run(&mut env, &fetch(XEN_MC_URGENT, 0)).0,
            Err(Errno::EINVAL)
        );
        let (r, back) = run(&mut env, &fetch(XEN_MC_URGENT | XEN_MC_ACK, 0));
        assert_eq!(r, Ok(0));
        assert_eq!(
            back.payload::<XenMcFetch>().unwrap().fetch_id,
            77,
            "not written"
        );
        let (r, back) = run(&mut env, &fetch(XEN_MC_NONURGENT, BASE + 0x1000));
        assert_eq!(r, Ok(0));
        let answer = back.payload::<XenMcFetch>().unwrap();
        assert_eq!((answer.flags, answer.fetch_id), (XEN_MC_NODATA, 0));
    }

    #[test]
    fn family_model_and_stepping_are_xens() {
        assert_eq!(family_model_step(0x0008_06c1), (6, 0x8c, 1));
        assert_eq!(family_model_step(0x00a5_0f00), (0x19, 0x50, 0));
        assert_eq!(family_model_step(0x0000_0663), (6, 6, 3));
    }

    #[test]
    fn brand_loses_its_leading_spaces() {
        let ext = |l: u32| match l {
            0x8000_0002 => [
                u32::from_le_bytes(*b"  AB"),
                u32::from_le_bytes(*b"C\0\0\0"),
                0,
                0,
            ],
            _ => [0; 4],
        };
        assert_eq!(&brand(0x8000_0004, &ext)[..4], b"ABC\0");
        assert_eq!(brand(0x8000_0003, &ext), [0; 64]);
    }
}
