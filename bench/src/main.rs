//! `bench-guest`: the benchmark guest kernel.
//!
//! Boots as dom0 on this hypervisor and on Xen 4.17 and runs every
//! benchmark of [`pv_bench::catalogue::ALL`] in order, printing one line
//! each ([`pv_bench::line`]): a result, `unsupported` (the platform
//! answered `ENOSYS` to a hypercall it needs) or `failed`. Checks of what
//! the benchmarks did (remapped pages intact, every upcall delivered)
//! print XTF-style `ok:`/`FAIL:` lines, and the run ends with one
//! `Test result:` line and a poweroff, so the same guest doubles as a
//! smoke test (`iters=4`).
//!
//! Command line: see [`pv_bench::options`].

#![no_std]
#![no_main]

mod guest;

use guest_pv_shim::dom0_abi::mmu::UvmfFlags;
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::report;
use pv_bench::catalogue::{self, Benchmark, MMU_UPDATE_BATCHES};
use pv_bench::line;
use pv_bench::options::Options;

use guest::grants::{self, GrantPages};
use guest::harness::{Harness, Measured, NotRun, Reason};
use guest::mmu::Scratch;
use guest::pagetable::PageTables;
use guest::{events, hypercalls, mmu, traps};

guest_pv_shim::guest_kernel! {
    main: bench_main,
    guest_os: "pv-bench",
    guest_version: "0.1.0",
}

/// Name printed in the banner.
const SUITE: &str = "pv-bench";

/// Why the interdomain benchmark is not measured here.
const NO_SECOND_DOMAIN: &str = "needs a second domain, which this guest does not build: \
     `cargo xtask bench` measures it in a run of the toolstack dom0 with a domU";

/// Why the block benchmarks are not measured here.
const NO_DISK: &str = "needs a virtio disk, dom0's drivers and a domU: `cargo xtask bench` \
     measures them in a run of the toolstack dom0 with a disk";

/// Why the network benchmarks are not measured here.
const NO_NIC: &str = "needs a virtio-net card, dom0's drivers, a domU and a sender on the host: \
     `cargo xtask bench` measures them in a run of the toolstack dom0 with a network";

/// Why the Linux benchmark is not measured here.
const NO_LINUX: &str = "boots Linux as dom0 instead of this guest: `cargo xtask bench` measures it \
     in a boot of its own";

/// Runs the benchmark `bench` (by name) and returns its outcome.
fn run_one(
    h: &Harness,
    start_info: &'static StartInfo,
    pt: &PageTables,
    scratch: &Result<Scratch, NotRun>,
    grant_pages: &Result<GrantPages, NotRun>,
    bench: &Benchmark,
) -> Result<Measured, NotRun> {
    let name = bench.name;
    let scratch = || scratch.as_ref().map_err(|err| *err);
    let grant_pages = grant_pages.as_ref().map_err(|err| *err);
    match name {
        "null_hypercall" => hypercalls::null_hypercall(h, name),
        "multicall_32" => hypercalls::multicall(h, name),
        "update_va_mapping_invlpg" => {
            mmu::update_va_mapping(h, scratch()?, name, UvmfFlags::INVLPG)
        }
        "update_va_mapping_flush" => {
            mmu::update_va_mapping(h, scratch()?, name, UvmfFlags::TLB_FLUSH)
        }
        "mmuext_pin_unpin_l1" => mmu::pin_unpin(h, pt, name),
        "ptwr_xchg" => mmu::ptwr_xchg(h, scratch()?, name),
        "page_fault" => traps::page_fault(h, pt, name, traps::Return::Hypercall),
        "page_fault_iretq" => traps::page_fault(h, pt, name, traps::Return::Iretq),
        "syscall_bounce" => traps::syscall_bounce(h, pt, name, traps::Return::Hypercall),
        "syscall_bounce_iretq" => traps::syscall_bounce(h, pt, name, traps::Return::Iretq),
        "evtchn_self" => events::evtchn_self(h, start_info, pt, name),
        "evtchn_user_upcall" => events::evtchn_user_upcall(h, start_info, pt, name),
        "timer_block" => events::timer_block(h, start_info, pt, name),
        "timer_poll" => events::timer_poll(h, start_info, pt, name),
        "grant_copy_4k" => grants::copy(h, grant_pages?, name),
        "rep_movsb_4k" => grants::rep_movsb_4k(h, grant_pages?, name),
        "grant_map_unmap" => grants::map_unmap(h, grant_pages?, name),
        "evtchn_interdomain_pingpong" | "xenstore_read" => {
            Err(NotRun::Unsupported(Reason::Text(NO_SECOND_DOMAIN)))
        }
        "blk_read_dom0" | "blk_read_domu" => Err(NotRun::Unsupported(Reason::Text(NO_DISK))),
        "net_recv_dom0" | "net_recv_domu" => Err(NotRun::Unsupported(Reason::Text(NO_NIC))),
        "linux_boot_to_init" => Err(NotRun::Unsupported(Reason::Text(NO_LINUX))),
        _ => match MMU_UPDATE_BATCHES
            .iter()
            .find(|&&n| catalogue::mmu_update(n).is_some_and(|b| b.name == name))
        {
            Some(&n) => mmu::mmu_update(h, scratch()?, name, usize::try_from(n).unwrap_or(0)),
            None => Err(guest::harness::failed(name, "no code for this benchmark")),
        },
    }
}

fn bench_main(start_info: &'static StartInfo) {
    report::banner(SUITE, "bench");
    let options = match Options::parse(start_info.cmdline()) {
        Ok(options) => options,
        Err(err) => {
            report::error("command line", format_args!("{err}"));
            report::finish()
        }
    };
    let Some(pt) = PageTables::new(start_info) else {
        report::error(
            "page tables",
            format_args!("pt_base is not in the initial mapping"),
        );
        report::finish()
    };
    let platform = if guest_pv_shim::on_xen() {
        "xen"
    } else {
        "oxen"
    };
    let h = Harness::new(options);
    guest_pv_shim::print!(
        "{}",
        Info {
            platform,
            overhead: h.overhead,
            options: &options,
            counters: h.has_counters(),
        }
    );
    let wants_scratch = catalogue::ALL
        .iter()
        .any(|b| options.selects(b.name) && uses_scratch(b.name));
    let scratch = if wants_scratch {
        Scratch::prepare(&pt)
    } else {
        Err(NotRun::Unsupported(Reason::Text("not selected")))
    };
    let grant_pages = if catalogue::ALL
        .iter()
        .any(|b| options.selects(b.name) && uses_grant_pages(b.name))
    {
        GrantPages::prepare(&pt, "grant benchmarks")
    } else {
        Err(NotRun::Unsupported(Reason::Text("not selected")))
    };
    for bench in catalogue::ALL.iter().filter(|b| options.selects(b.name)) {
        let outcome = run_one(&h, start_info, &pt, &scratch, &grant_pages, bench);
        h.report(bench, outcome);
    }
    if let Ok(scratch) = &scratch {
        scratch.verify(&pt, "the page-table benchmarks");
    }
    if let Ok(pages) = &grant_pages {
        pages.restore();
    }
    report::finish()
}

/// Whether benchmark `name` uses the grant pages.
fn uses_grant_pages(name: &str) -> bool {
    matches!(name, "grant_copy_4k" | "rep_movsb_4k" | "grant_map_unmap")
}

/// Whether benchmark `name` unmaps and remaps the scratch pages.
fn uses_scratch(name: &str) -> bool {
    name.starts_with("mmu_update_") || name.starts_with("update_va_mapping_") || name == "ptwr_xchg"
}

/// The `BENCH-INFO` line.
struct Info<'a> {
    platform: &'a str,
    overhead: u64,
    options: &'a Options<'a>,
    counters: bool,
}

impl core::fmt::Display for Info<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        line::write_info(
            f,
            format_args!(
                "platform={} rdtsc_overhead={} iters={} warmup={} counters={}",
                self.platform,
                self.overhead,
                self.options.iters,
                self.options.warmup,
                if self.counters { "yes" } else { "no" }
            ),
        )
    }
}
