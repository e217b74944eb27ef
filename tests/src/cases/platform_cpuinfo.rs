//! `platform_cpuinfo`: `XENPF_get_cpuinfo`, which Linux's dom0 asks for the
//! boot CPU's APIC id and to list the physical CPUs.
//!
//! Checks: CPU 0 is online with its APIC and ACPI ids and the highest CPU
//! number present; every present CPU answers; the CPU after the last and
//! CPU 0xffffffff are invalid, their ids left as given; the answer is
//! written back whole (`max_present` for an invalid CPU too).

use guest_pv_shim::dom0_abi::platform::{
    PlatformCmd, PlatformOp, XEN_PCPU_FLAGS_INVALID, XEN_PCPU_FLAGS_ONLINE, XenpfPcpuinfo,
};
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::hypercall as hc;
use guest_pv_shim::report;

/// `XENPF_get_cpuinfo` of `xen_cpuid`, with recognisable ids in: the
/// result and the answer.
fn ask(xen_cpuid: u32) -> (i64, XenpfPcpuinfo) {
    let given = XenpfPcpuinfo {
        xen_cpuid,
        max_present: 0x5555,
        flags: 0x5555,
        apic_id: 0xdead,
        acpi_id: 0xbeef,
    };
    let mut op = PlatformOp::new(PlatformCmd::GetCpuinfo, &given);
    let ret = hc::platform_op(&mut op);
    (ret, op.payload().unwrap_or(given))
}

pub fn run(_start_info: &'static StartInfo) {
    let (ret, cpu0) = ask(0);
    report::check_ret("get_cpuinfo of CPU 0", ret, 0);
    report::check_eq("CPU 0 is online", cpu0.flags, XEN_PCPU_FLAGS_ONLINE);
    report::ok_value("CPU 0's APIC id", cpu0.apic_id);
    report::ok_value("CPU 0's ACPI id", cpu0.acpi_id);
    report::ok_value("the highest CPU present", cpu0.max_present);
    let last = cpu0.max_present;
    for cpu in 1..=last.min(63) {
        let (ret, info) = ask(cpu);
        report::check_ret(format_args!("get_cpuinfo of CPU {cpu}"), ret, 0);
        report::ok_value(
            format_args!("CPU {cpu}: flags, APIC id, ACPI id"),
            format_args!("{} {} {}", info.flags, info.apic_id, info.acpi_id),
        );
    }
    for cpu in [last + 1, u32::MAX] {
        let (ret, info) = ask(cpu);
        report::check_ret(format_args!("get_cpuinfo of CPU {cpu:#x}"), ret, 0);
        report::check_eq(
            format_args!("CPU {cpu:#x} is invalid, its ids left as given"),
            (info.flags, info.apic_id, info.acpi_id, info.xen_cpuid),
            (XEN_PCPU_FLAGS_INVALID, 0xdead, 0xbeef, cpu),
        );
        report::check_eq(
            format_args!("CPU {cpu:#x}: max_present is written too"),
            info.max_present,
            last,
        );
    }
}
