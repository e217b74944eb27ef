//! The block benchmarks, timed by dom0 (`readbench` on its command line),
//! and the clocks and domU timing the network benchmarks share
//! (`netbench`).
//!
//! `blk_read_dom0`: before it creates any domU, dom0 reads its first
//! virtio disk from sector 0 in 64 KiB reads through its own driver, a
//! few times over (one sample each)
//! (`drivers::blk::VirtioBlk` behind the `phy:` slice blkback serves).
//! `blk_read_domu`: the `disk` domU with `readbench` reads the same bytes
//! through blkfront and blkback as many times; dom0 times each pass from
//! the domU's console lines `readbench: start` and `readbench: done`
//! (it reads each line
//! before it serves the ring requests that follow it).
//!
//! Under `-icount` a TSC delta counts every instruction of every domain
//! and of the hypervisor, plus the time the CPU sat idle waiting for the
//! disk, which QEMU turns into a jump of the clock to its next timer
//! deadline. That idle time (`sysctl getcpuinfo`, CPU 0: the benchmark
//! machine has one) is taken out, converted to TSC ticks at the rate
//! the window itself shows. dom0 stops its 100 Hz periodic timer first,
//! as Linux does, so that it is not woken for nothing.

use alloc::string::String;
use alloc::vec;

use guest_pv_shim::dom0_abi::sysctl::CpuInfo;
use guest_pv_shim::{hypercall, println, profile, report, shared};
use pv_bench::catalogue::{
    self, BLK_READ_DONE, BLK_READ_MIB, BLK_READ_PASSES, BLK_READ_START, NET_RECV_DONE,
    NET_RECV_PASSES, NET_RECV_START,
};
use pv_bench::line;
use pv_bench::stats::Samples;
use spin::Mutex;

use crate::blkback_xen::Blkback;

/// Bytes of one read.
const UNIT: usize = 64 << 10;
/// Sectors of one read.
const UNIT_SECTORS: u64 = UNIT as u64 / 512;

/// One look at the clocks: TSC, system time, CPU 0's idle time.
#[derive(Clone, Copy)]
pub struct Meter {
    tsc: u64,
    ns: u64,
    idle_ns: u64,
}

impl Meter {
    /// Now; `None` if the idle time cannot be read.
    pub fn now() -> Option<Meter> {
        let mut info = [CpuInfo::default()];
        let (ret, n) = hypercall::sysctl_getcpuinfo(&mut info);
        if ret != 0 || n != 1 {
            report::fail(
                "benchmark meter sysctl getcpuinfo",
                format_args!("{}, {n} CPUs", report::Ret(ret)),
            );
            return None;
        }
        Some(Meter {
            tsc: shared::tsc(),
            ns: shared::system_time_of(0).unwrap_or(0),
            idle_ns: info[0].idletime,
        })
    }

    /// The TSC ticks from `self` to `end` when the CPU was not idle.
    pub fn busy_ticks(self, end: Meter, what: &str) -> u64 {
        let ticks = end.tsc.saturating_sub(self.tsc);
        let ns = end.ns.saturating_sub(self.ns).max(1);
        let idle_ns = end.idle_ns.saturating_sub(self.idle_ns);
        let idle = u64::try_from(u128::from(idle_ns) * u128::from(ticks) / u128::from(ns))
            .unwrap_or(u64::MAX);
        println!("dom0: {what}: {ticks} TSC ticks, {idle} of them idle");
        ticks.saturating_sub(idle)
    }
}

/// Stops dom0's periodic timer before benchmark `bench` (a check), so
/// that an idle wait is not ended for nothing.
pub fn stop_periodic_timer(bench: &str) {
    report::check_ret(
        format_args!("{bench} periodic timer stopped"),
        hypercall::vcpu_stop_periodic_timer(0),
        0,
    );
}

/// Prints the `BENCH` line of `name`.
pub fn print(name: &str, samples: &Samples) {
    let mut text = String::new();
    if line::write_catalogued(&mut text, name, samples).is_ok() {
        hypercall::console_write(text.as_bytes());
    }
}

/// `blk_read_dom0`: reads the first [`BLK_READ_MIB`] MiB of `vda`.
pub fn run(blk: &mut Blkback) {
    stop_periodic_timer("readbench");
    let mut disk = match blk.open_own("vda") {
        Ok(disk) => disk,
        Err(why) => {
            report::fail("readbench vda", format_args!("{why}"));
            return;
        }
    };
    let units = u64::from(BLK_READ_MIB) * (1 << 20) / UNIT as u64;
    if disk.sectors() < units * UNIT_SECTORS {
        report::fail(
            "readbench vda",
            format_args!("smaller than {BLK_READ_MIB} MiB"),
        );
        return;
    }
    let mut buf = vec![0u8; UNIT];
    let mut samples = Samples::new();
    for _ in 0..BLK_READ_PASSES {
        let Some(start) = Meter::now() else {
            return;
        };
        profile::begin::<{ catalogue::tag("blk_read_dom0") }>();
        for unit in 0..units {
            if let Err(e) = disk.read(unit * UNIT_SECTORS, &mut buf) {
                report::fail("readbench vda", format_args!("read {unit}: {e:?}"));
                return;
            }
        }
        profile::end::<{ catalogue::tag("blk_read_dom0") }>();
        let Some(end) = Meter::now() else {
            return;
        };
        samples.record(start.busy_ticks(end, "blk_read_dom0"));
    }
    report::ok_value("readbench MiB read by dom0", BLK_READ_MIB * BLK_READ_PASSES);
    print("blk_read_dom0", &samples);
}

/// The domU benchmarks timed from the domU's console lines: the line
/// before and the line after each pass, the benchmark, its passes.
const TIMED: [(&str, &str, &str, u32); 2] = [
    (
        BLK_READ_START,
        BLK_READ_DONE,
        "blk_read_domu",
        BLK_READ_PASSES,
    ),
    (
        NET_RECV_START,
        NET_RECV_DONE,
        "net_recv_domu",
        NET_RECV_PASSES,
    ),
];

/// Opens (`begin`) or closes the profiling window of the domU benchmark
/// `name` of [`TIMED`]: everything the machine runs while the pass is
/// timed, dom0, the domU and the hypervisor.
fn mark_domu(name: &str, begin: bool) {
    const BLK: u8 = catalogue::tag("blk_read_domu");
    const NET: u8 = catalogue::tag("net_recv_domu");
    match (name, begin) {
        ("blk_read_domu", true) => profile::begin::<BLK>(),
        ("blk_read_domu", false) => profile::end::<BLK>(),
        ("net_recv_domu", true) => profile::begin::<NET>(),
        ("net_recv_domu", false) => profile::end::<NET>(),
        _ => {}
    }
}

/// Per entry of [`TIMED`]: where the current pass started, and the
/// passes so far.
static DOMU: Mutex<[(Option<Meter>, Samples); TIMED.len()]> =
    Mutex::new([(None, Samples::new()), (None, Samples::new())]);

/// `blk_read_domu`, `net_recv_domu`: acts on one console line of a domU;
/// a benchmark's `BENCH` line comes after its last pass.
pub fn on_line(text: &[u8]) {
    let text = text.trim_ascii_end();
    let mut domu = DOMU.lock();
    for ((start, done, name, passes), (meter, samples)) in TIMED.iter().zip(domu.iter_mut()) {
        if text.ends_with(start.as_bytes()) {
            *meter = Meter::now();
            mark_domu(name, true);
        } else if text.ends_with(done.as_bytes())
            && let Some(begun) = meter.take()
            && let Some(end) = Meter::now()
        {
            mark_domu(name, false);
            samples.record(begun.busy_ticks(end, name));
            if samples.count() == u64::from(*passes) {
                print(name, samples);
            }
        }
    }
}
