//! `smp_dom0_vcpus`: without `dom0_max_vcpus`, dom0 gets one vCPU per
//! online physical CPU (Xen's default), of which only vCPU 0 is up.
//!
//! Checks: `VCPUOP_is_up` answers for vCPUs 0 to n-1 and `ENOENT` from n
//! on; vCPU 0 is up and the others are down; n (reported, so that both
//! hypervisors must agree) equals the physical CPU count `XENPF_get_cpuinfo`
//! gives (its highest CPU present, plus one).

use guest_pv_shim::dom0_abi::errno::Errno;
use guest_pv_shim::dom0_abi::platform::{PlatformCmd, PlatformOp, XenpfPcpuinfo};
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::hypercall as hc;
use guest_pv_shim::report;

/// More vCPUs than any test machine has CPUs.
const PROBE: u32 = 64;

pub fn run(_start_info: &'static StartInfo) {
    let mut op = PlatformOp::new(PlatformCmd::GetCpuinfo, &XenpfPcpuinfo::default());
    report::check_ret("get_cpuinfo of CPU 0", hc::platform_op(&mut op), 0);
    let pcpus = op
        .payload::<XenpfPcpuinfo>()
        .map_or(0, |info| info.max_present + 1);
    report::ok_value("physical CPUs", pcpus);
    let answers: [i64; PROBE as usize] = core::array::from_fn(|id| hc::vcpu_is_up(id as u64));
    let vcpus = answers
        .iter()
        .position(|&ret| ret == Errno::ENOENT.neg())
        .map_or(PROBE, |n| u32::try_from(n).unwrap_or(PROBE));
    report::ok_value("dom0's vCPUs", vcpus);
    report::check_eq("one vCPU per physical CPU", vcpus, pcpus);
    report::check_eq(
        "vCPU 0 is up, the others down, none after them",
        answers,
        core::array::from_fn(|id| match id {
            0 => 1,
            id if id < vcpus as usize => 0,
            _ => Errno::ENOENT.neg(),
        }),
    );
}
