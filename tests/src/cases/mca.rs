//! `mca`: the machine-check hypercall as Linux's dom0 uses it at boot
//! (`xen_mcelog`): the number of physical CPUs, then their descriptions,
//! and a telemetry fetch, of which there is none on a healthy machine.
//!
//! Checks: the count with no array; each description (the values are the
//! machine's, compared with Xen's), but for the feature words, which are
//! Xen's internal feature set there (`docs/abi-differences.md`); `ncpus` 0
//! and 2^31 with an array; the fetch of
//! both classes (nothing there), its acknowledgement, its flag and buffer
//! errors; `notifydomain`, an unknown command and a wrong interface
//! version. An array shorter than the CPUs online is not tried: Xen 4.17
//! writes every CPU's entry whatever `ncpus` says, past its own buffer,
//! and panics.

use guest_pv_shim::dom0_abi::Errno;
use guest_pv_shim::dom0_abi::mca::{
    McaCmd, McinfoLogicalCpu, XEN_MC_ACK, XEN_MC_NODATA, XEN_MC_NONURGENT, XEN_MC_URGENT, XenMc,
    XenMcFetch, XenMcPhyscpuinfo,
};
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::hypercall as hc;
use guest_pv_shim::report;

/// Entries of the description array.
const SLOTS: u32 = 4;

/// `XEN_MC_physcpuinfo` with `ncpus` and an array at `info`: the result
/// and the `ncpus` written back.
fn physcpuinfo(ncpus: u32, info: u64) -> (i64, u32) {
    let given = XenMcPhyscpuinfo {
        ncpus,
        pad0: 0,
        info,
    };
    let mut op = XenMc::new(McaCmd::Physcpuinfo, &given);
    let ret = hc::mca(&mut op);
    (ret, op.payload().unwrap_or(given).ncpus)
}

/// `XEN_MC_fetch` with `flags` and a buffer at `data`: the result and
/// the `xen_mc_fetch` written back.
fn fetch(flags: u32, data: u64) -> (i64, XenMcFetch) {
    let given = XenMcFetch {
        flags,
        pad0: 0,
        fetch_id: 0x1234,
        data,
    };
    let mut op = XenMc::new(McaCmd::Fetch, &given);
    let ret = hc::mca(&mut op);
    (ret, op.payload().unwrap_or(given))
}

/// A NUL-terminated byte string as text.
fn text(bytes: &[u8]) -> &str {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    core::str::from_utf8(&bytes[..end]).unwrap_or("(not UTF-8)")
}

fn describe(cpu: &McinfoLogicalCpu) {
    let n = cpu.mc_cpunr;
    report::ok_value(
        format_args!("CPU {n}: chip, core, thread, APIC id, cluster"),
        format_args!(
            "{} {} {} {} {}",
            cpu.mc_chipid, cpu.mc_coreid, cpu.mc_threadid, cpu.mc_apicid, cpu.mc_clusterid
        ),
    );
    report::ok_value(
        format_args!("CPU {n}: cores, cores active, threads"),
        format_args!(
            "{} {} {}",
            cpu.mc_ncores, cpu.mc_ncores_active, cpu.mc_nthreads
        ),
    );
    report::ok_value(
        format_args!("CPU {n}: CPUID level, family, vendor, model, stepping"),
        format_args!(
            "{:#x} {:#x} {} {:#x} {}",
            cpu.mc_cpuid_level, cpu.mc_family, cpu.mc_vendor, cpu.mc_model, cpu.mc_step
        ),
    );
    report::ok_value(
        format_args!("CPU {n}: vendor and brand"),
        format_args!("'{}' '{}'", text(&cpu.mc_vendorid), text(&cpu.mc_brandid)),
    );
    report::ok_value(
        format_args!("CPU {n}: cache size (KiB) and alignment"),
        format_args!("{} {}", cpu.mc_cache_size, cpu.mc_cache_alignment),
    );
    let msrs = cpu.mc_msrvalues;
    report::ok_value(
        format_args!("CPU {n}: MSRs (count, first)"),
        format_args!(
            "{} {:#x}={:#x}",
            cpu.mc_nmsrvals, msrs[0].reg, msrs[0].value
        ),
    );
}

pub fn run(_start_info: &'static StartInfo) {
    let (ret, online) = physcpuinfo(0, 0);
    report::check_ret("physcpuinfo without an array", ret, 0);
    report::ok_value("physical CPUs online", online);

    let mut cpus = [McinfoLogicalCpu::default(); SLOTS as usize];
    let at = cpus.as_mut_ptr() as u64;
    let (ret, n) = physcpuinfo(SLOTS, at);
    report::check_ret("physcpuinfo with an array", ret, 0);
    report::check_eq("CPUs described", n, online.min(SLOTS));
    for cpu in cpus.iter().take(n as usize) {
        describe(cpu);
    }

    let (ret, _) = physcpuinfo(0, at);
    report::check_ret("physcpuinfo of no CPU", ret, Errno::EINVAL.neg());
    let (ret, _) = physcpuinfo(0x8000_0000, at);
    report::check_ret("physcpuinfo of 2^31 CPUs", ret, Errno::ENOMEM.neg());

    let buffer = [0u64; 96];
    let data = buffer.as_ptr() as u64;
    for (class, flags) in [("urgent", XEN_MC_URGENT), ("non-urgent", XEN_MC_NONURGENT)] {
        let (ret, answer) = fetch(flags, data);
        report::check_ret(format_args!("fetch {class}"), ret, 0);
        report::check_eq(
            format_args!("fetch {class}: no data, id 0"),
            (answer.flags, answer.fetch_id),
            (XEN_MC_NODATA, 0),
        );
        let (ret, answer) = fetch(flags | XEN_MC_ACK, 0);
        report::check_ret(format_args!("ack {class}"), ret, 0);
        report::check_eq(
            format_args!("ack {class}: nothing written back"),
            (answer.flags, answer.fetch_id),
            (flags | XEN_MC_ACK, 0x1234),
        );
    }
    let (ret, _) = fetch(XEN_MC_URGENT, 0);
    report::check_ret("fetch into no buffer", ret, Errno::EINVAL.neg());
    for flags in [0, XEN_MC_URGENT | XEN_MC_NONURGENT, XEN_MC_ACK] {
        let (ret, _) = fetch(flags, data);
        report::check_ret(
            format_args!("fetch with flags {flags:#x}"),
            ret,
            Errno::EINVAL.neg(),
        );
    }

    let mut op = XenMc::new(McaCmd::Notifydomain, &0u64);
    report::check_ret("notifydomain", hc::mca(&mut op), Errno::EINVAL.neg());
    op.cmd = 99;
    report::check_ret("an unknown command", hc::mca(&mut op), Errno::EINVAL.neg());
    op.cmd = McaCmd::Physcpuinfo as u32;
    op.interface_version ^= 1;
    report::check_ret(
        "a wrong interface version",
        hc::mca(&mut op),
        Errno::EACCES.neg(),
    );
}
