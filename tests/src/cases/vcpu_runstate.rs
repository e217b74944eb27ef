//! `vcpu_runstate_area`: `VCPUOP_register_runstate_memory_area`, in a dom0
//! with 2 vCPUs (`dom0_max_vcpus=2`), as Xen 4.17 answers it.
//!
//! vCPU 1 spins, yielding, so that every yield of vCPU 0 switches it out
//! and back in. Checks:
//! - registering vCPU 0's own area returns 0 and writes the record at
//!   once: `running`, entered no later than now, `time[]` summing to no
//!   more than the system time, no update flag;
//! - after a yield (vCPU 0 switched out and in again) the area has been
//!   rewritten: still `running`, entered later, and the time spent
//!   runnable meanwhile added; with the `runstate_update_flag` assist the
//!   same, and the flag (bit 63 of `state_entry_time`) clear again;
//! - registering vCPU 1's area from vCPU 0 writes vCPU 1's record at once
//!   (not `running`: vCPU 0 is; it has run);
//! - an area reaching into the hypervisor's range, or an unreadable
//!   argument, is `EFAULT`; an unmapped area is accepted (the writes
//!   fault and are dropped); a NULL area stops the updates.

use core::sync::atomic::{AtomicU64, Ordering};

use guest_pv_shim::dom0_abi::Errno;
use guest_pv_shim::dom0_abi::event_channel::EvtchnBindIpi;
use guest_pv_shim::dom0_abi::mmu::{VmAssistCmd, VmAssistType};
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::dom0_abi::vcpu::{
    RUNSTATE_RUNNABLE, RUNSTATE_RUNNING, VcpuOpCmd, VcpuRegisterVcpuInfo, XEN_RUNSTATE_UPDATE,
};
use guest_pv_shim::hypercall::{self as hc, vcpu_op_raw};
use guest_pv_shim::{report, shared};

use crate::support::{self, SPINS, STOP, spinner};

/// Yields to wait for vCPU 1 at most.
const WAIT: u32 = 10_000;
/// The first address of the hypervisor's range.
const HYPERVISOR_VIRT_START: u64 = 0xffff_8000_0000_0000;
/// What an area holds before the hypervisor writes it.
const FILL: u64 = 0x5a5a_5a5a_5a5a_5a5a;

/// A `vcpu_runstate_info` the hypervisor writes: `state` and `pad`,
/// `state_entry_time`, `time[4]`.
struct Area([AtomicU64; 6]);

impl Area {
    const fn new() -> Area {
        Area([const { AtomicU64::new(FILL) }; 6])
    }

    fn address(&self) -> u64 {
        self.0.as_ptr() as u64
    }

    fn fill(&self) {
        for word in &self.0 {
            word.store(FILL, Ordering::SeqCst);
        }
    }

    fn read(&self) -> Record {
        let w: [u64; 6] = core::array::from_fn(|i| self.0[i].load(Ordering::SeqCst));
        Record {
            #[allow(clippy::cast_possible_truncation, reason = "the low half is `state`")]
            state: (w[0] as u32).cast_signed(),
            entry: w[1],
            time: [w[2], w[3], w[4], w[5]],
        }
    }
}

/// What an area showed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Record {
    state: i32,
    entry: u64,
    time: [u64; 4],
}

impl Record {
    fn sum(&self) -> u64 {
        self.time.iter().fold(0u64, |a, &t| a.wrapping_add(t))
    }
}

static AREA0: Area = Area::new();
static AREA1: Area = Area::new();

/// `register_runstate_memory_area` of `vcpuid` with the area address
/// read from `arg`.
fn register_raw(vcpuid: u64, arg: u64) -> i64 {
    // SAFETY: the hypervisor reads one u64 at `arg` and writes runstate
    // records only at the address it holds: one of this test's areas, an
    // unmapped address, or one it refuses.
    unsafe { vcpu_op_raw(VcpuOpCmd::RegisterRunstateMemoryArea as u64, vcpuid, arg) }
}

/// `register_runstate_memory_area` of `vcpuid` at `area`.
fn register(vcpuid: u64, area: u64) -> i64 {
    let handle = area;
    register_raw(vcpuid, core::ptr::from_ref(&handle) as u64)
}

fn now() -> u64 {
    shared::system_time_of(0).unwrap_or(0)
}

/// Yields once and checks vCPU 0's area was rewritten since `before`.
fn check_rewritten(what: &str, before: Record) -> Record {
    let spins = SPINS.load(Ordering::Acquire);
    hc::sched_yield();
    let after = AREA0.read();
    report::check_observed(
        format_args!("{what}: vCPU 1 ran meanwhile"),
        SPINS.load(Ordering::Acquire) > spins,
        format_args!("{} iterations", SPINS.load(Ordering::Acquire)),
    );
    report::check_observed(
        format_args!("{what}: the area says running, entered later, with runnable time added"),
        after.state == RUNSTATE_RUNNING
            && after.entry > before.entry
            && after.entry & XEN_RUNSTATE_UPDATE == 0
            && after.time[RUNSTATE_RUNNABLE as usize] > before.time[RUNSTATE_RUNNABLE as usize]
            && after.entry <= now(),
        format_args!("before {before:?}, after {after:?}"),
    );
    after
}

/// `vcpu_runstate_area`.
pub fn run(_start_info: &'static StartInfo) {
    if !support::traps() {
        return;
    }
    let own = register(0, AREA0.address());
    report::check_ret("register vCPU 0's own area returns 0", own, 0);
    let first = AREA0.read();
    let at = now();
    report::check_observed(
        "it is written at once: running, entered no later than now, no update flag",
        first.state == RUNSTATE_RUNNING
            && first.entry <= at
            && first.entry & XEN_RUNSTATE_UPDATE == 0
            && first.sum() <= at,
        format_args!("{first:?}, now {at}"),
    );
    if !support::start_vcpu(1, spinner) {
        return;
    }
    support::yield_until(WAIT, || SPINS.load(Ordering::Acquire) >= 2);
    let second = check_rewritten("a yield", AREA0.read());
    report::check_ret(
        "enable VMASST_TYPE_runstate_update_flag",
        hc::vm_assist(VmAssistCmd::Enable, VmAssistType::RunstateUpdateFlag),
        0,
    );
    check_rewritten("a yield with the update flag", second);

    let other = register(1, AREA1.address());
    report::check_ret("register vCPU 1's area from vCPU 0 returns 0", other, 0);
    let one = AREA1.read();
    report::check_observed(
        "vCPU 1's record is written at once: not running, has run",
        one.state == RUNSTATE_RUNNABLE
            && one.time[RUNSTATE_RUNNING as usize] > 0
            && one.entry <= now(),
        format_args!("{one:?}"),
    );

    report::check_ret(
        "an area at the start of the hypervisor's range is EFAULT",
        register(0, HYPERVISOR_VIRT_START),
        Errno::EFAULT.neg(),
    );
    report::check_ret(
        "an area ending in the hypervisor's range is EFAULT",
        register(0, HYPERVISOR_VIRT_START - 8),
        Errno::EFAULT.neg(),
    );
    report::check_ret(
        "an unreadable argument (unmapped 0x1000) is EFAULT",
        register_raw(0, 0x1000),
        Errno::EFAULT.neg(),
    );
    report::check_ret(
        "an unmapped area (0x2000) is accepted",
        register(0, 0x2000),
        0,
    );
    hc::sched_yield();
    report::check_ret("a NULL area returns 0", register(0, 0), 0);
    AREA0.fill();
    hc::sched_yield();
    report::check_observed(
        "after NULL, a yield no longer writes the old area",
        AREA0.0.iter().all(|w| w.load(Ordering::SeqCst) == FILL),
        format_args!("{:?}", AREA0.read()),
    );

    STOP.store(true, Ordering::Release);
    report::check(
        "vCPU 1 finishes",
        support::yield_until(WAIT, || hc::vcpu_is_up(1) == 0),
        format_args!("is_up {}", hc::vcpu_is_up(1)),
    );
}

/// A page the test moves vCPU 0's `vcpu_info` into (and vCPU 1's, at
/// another offset).
#[repr(C, align(4096))]
struct InfoPage([AtomicU64; 512]);

static INFO_PAGE: InfoPage = InfoPage([const { AtomicU64::new(0) }; 512]);

/// Byte offsets of the moved `vcpu_info`s in [`INFO_PAGE`].
const OFFSET_0: u32 = 256;
const OFFSET_1: u32 = 1024;

/// `register_vcpu_info` of `vcpuid` at `offset` of frame `mfn`.
fn register_info(vcpuid: u64, mfn: u64, offset: u32) -> i64 {
    let info = VcpuRegisterVcpuInfo {
        mfn,
        offset,
        rsvd: 0,
    };
    // SAFETY: the hypervisor reads the 16-byte argument; a frame it
    // accepts is INFO_PAGE, which no Rust code uses but through atomics.
    unsafe {
        vcpu_op_raw(
            VcpuOpCmd::RegisterVcpuInfo as u64,
            vcpuid,
            core::ptr::from_ref(&info) as u64,
        )
    }
}

/// The word at byte `offset` of [`INFO_PAGE`].
fn info_word(offset: u32) -> u64 {
    INFO_PAGE.0[offset as usize / 8].load(Ordering::SeqCst)
}

/// `vcpu_register_vcpu_info` (`dom0_max_vcpus=2`):
/// `VCPUOP_register_vcpu_info` as Xen 4.17 answers it: `ENXIO` for an
/// offset that does not fit the page or is not 8-aligned, `EINVAL` for a
/// frame that is not the domain's or is a page table, for another vCPU
/// that is up and for a second registration, `EFAULT` for an unreadable
/// argument; a successful move copies the old contents (the upcall mask),
/// sets every selector bit and the upcall pending, and events then land
/// in the new place.
pub fn register_vcpu_info(_start_info: &'static StartInfo) {
    if !support::traps() {
        return;
    }
    let Some(mfn) = guest_pv_shim::mm::virt_to_mfn(INFO_PAGE.0.as_ptr() as u64) else {
        report::fail("the info page's frame", format_args!("not mapped"));
        return;
    };
    report::check_ret(
        "an offset past the page's last 64 bytes is ENXIO",
        register_info(0, mfn, 4096 - 56),
        Errno::ENXIO.neg(),
    );
    report::check_ret(
        "an offset not 8-aligned is ENXIO",
        register_info(0, mfn, 4),
        Errno::ENXIO.neg(),
    );
    report::check_ret(
        "the boot L4 page table is EINVAL",
        register_info(0, guest_pv_shim::mm::boot_l4_mfn(), 0),
        Errno::EINVAL.neg(),
    );
    report::check_ret(
        "a frame past the end of memory is EINVAL",
        register_info(0, 1 << 40, 0),
        Errno::EINVAL.neg(),
    );
    // SAFETY: an unmapped argument: the hypervisor must refuse it.
    let ret = unsafe { vcpu_op_raw(VcpuOpCmd::RegisterVcpuInfo as u64, 0, 0x1000) };
    report::check_ret("an unreadable argument is EFAULT", ret, Errno::EFAULT.neg());
    if !support::start_vcpu(1, spinner) {
        return;
    }
    support::yield_until(WAIT, || SPINS.load(Ordering::Acquire) >= 1);
    report::check_ret(
        "vCPU 1 while it is up is EINVAL",
        register_info(1, mfn, OFFSET_1),
        Errno::EINVAL.neg(),
    );

    let mask = shared::upcall_mask();
    report::check_ret(
        "vCPU 0's own move returns 0",
        register_info(0, mfn, OFFSET_0),
        0,
    );
    let moved = [0, 8].map(|w| info_word(OFFSET_0 + w));
    report::check_observed(
        "the new place has the upcall pending, the old mask, every selector bit",
        moved[0] & 0xff == 1
            && Some(((moved[0] >> 8) & 0xff) as u8) == mask
            && moved[1] == u64::MAX,
        format_args!("{moved:#x?}, mask before {mask:?}"),
    );
    report::check_ret(
        "a second move of vCPU 0 is EINVAL",
        register_info(0, mfn, OFFSET_0 + 64),
        Errno::EINVAL.neg(),
    );
    INFO_PAGE.0[OFFSET_0 as usize / 8].fetch_and(!0xff, Ordering::SeqCst);
    INFO_PAGE.0[OFFSET_0 as usize / 8 + 1].store(0, Ordering::SeqCst);
    let mut ipi = EvtchnBindIpi {
        vcpu: 0,
        port: u32::MAX,
    };
    report::check_ret("bind_ipi to vCPU 0", hc::evtchn_bind_ipi(&mut ipi), 0);
    report::check_ret("send on it", hc::evtchn_send(ipi.port), 0);
    let after = [0, 8].map(|w| info_word(OFFSET_0 + w));
    report::check_observed(
        "the event lands in the new place",
        after[0] & 0xff == 1 && after[1] == 1 << (ipi.port / 64),
        format_args!("{after:#x?}, port {}", ipi.port),
    );

    STOP.store(true, Ordering::Release);
    report::check(
        "vCPU 1 goes down",
        support::yield_until(WAIT, || hc::vcpu_is_up(1) == 0),
        format_args!("is_up {}", hc::vcpu_is_up(1)),
    );
    report::check_ret(
        "vCPU 1 while it is down: 0",
        register_info(1, mfn, OFFSET_1),
        0,
    );
    report::check_observed(
        "its new place has every selector bit",
        info_word(OFFSET_1 + 8) == u64::MAX,
        format_args!("{:#x}", info_word(OFFSET_1 + 8)),
    );
}
