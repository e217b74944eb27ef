//! Event channels (2-level ABI): `evtchn_ports` (port lifecycle, status
//! and every error), `evtchn_loopback` (a domain's ports bound to each
//! other: send, delivery, masks, close), `evtchn_vcpus`
//! (`dom0_max_vcpus=2`: ports delivered to the other vCPU) and
//! `evtchn_poll_wake` (a send wakes a vCPU polling the port even when it
//! raises no upcall). `evtchn_loopback` ends with Linux's forced callback:
//! an upcall the guest raised itself, delivered by a `xen_version` call.
//!
//! Xen 4.17's answers, as these guests see them there:
//! - port 0 is reserved (status "closed", every other use `EINVAL`); new
//!   ports are the lowest free one; a domain has 4096 ports (1-4095
//!   usable), then `ENOSPC`; ports are valid in buckets of 64 (a port of a
//!   bucket never allocated is `EINVAL` for status, unmask, close, send,
//!   `bind_vcpu` and `set_priority`; a free port of an allocated bucket
//!   is "closed" for status and unmask does its bit);
//! - `alloc_unbound` does not check that the remote domain exists;
//!   `DOMID_SELF` as the remote becomes the domain's own id;
//! - `status` writes only the fields of the port's state and copies the
//!   rest of the structure back as given;
//! - `bind_interdomain` leaves its new port pending; closing one end makes
//!   the other unbound (remote = the closer) and clears the closed port's
//!   pending bit, not its mask bit;
//! - `send` on an unbound port is dropped (0), on a VIRQ, free or
//!   reserved port `EINVAL`; `bind_vcpu` works on unbound, interdomain
//!   and global-VIRQ ports only (`EINVAL` for IPI ports);
//! - `unmask` re-raises a port only if its mask bit was set;
//! - FIFO ops on a 2-level domain: `expand_array` `EOPNOTSUPP`,
//!   `set_priority` `ENOSYS`; `init_control` checks the vCPU (`ENOENT`)
//!   and the offset (`EINVAL`) first;
//! - the compat call takes commands 0-9 only (`ENOSYS` for the others).
//!
//! Upcalls are handled by a hook on the shim's event callback that runs
//! the upcall protocol for the vCPU it interrupted (told by its stack)
//! and counts, per vCPU, the upcalls and the ports it found. In
//! `evtchn_vcpus`, vCPU 0 sends to vCPU 1 (an IPI and an interdomain port
//! moved there with `bind_vcpu`), and vCPU 1 sends IPIs to itself and to
//! vCPU 0; each vCPU takes its upcalls when it runs unmasked.

use core::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};

use guest_pv_shim::dom0_abi::Errno;
use guest_pv_shim::dom0_abi::event_channel::{
    EvtchnAllocUnbound, EvtchnBindInterdomain, EvtchnBindIpi, EvtchnBindVirq, EvtchnInitControl,
    EvtchnOp, EvtchnOpCompat, EvtchnStat, EvtchnStatus, Virq,
};
use guest_pv_shim::dom0_abi::start_info::StartInfo;
use guest_pv_shim::dom0_abi::types::DomId;
use guest_pv_shim::dom0_abi::vcpu::{RUNSTATE_BLOCKED, VcpuRunstateInfo};
use guest_pv_shim::hypercall::{self as hc};
use guest_pv_shim::traps::{self, Disposition, Trap, TrapFrame, VECTOR_EVENT};
use guest_pv_shim::{report, shared, smp};

use super::BAD_POINTERS;
use crate::support;

/// Ports a 2-level domain has.
const NR_PORTS: u32 = 4096;
/// A value `status` must leave alone where it writes nothing.
const UNTOUCHED: u32 = 0x5a5a_5a5a;
/// Yields the main vCPU waits for another at most.
const WAIT: u32 = 100_000;

/// Upcalls per vCPU.
static UPCALLS: [AtomicU64; smp::MAX_VCPUS] = [const { AtomicU64::new(0) }; smp::MAX_VCPUS];
/// Ports found pending and unmasked per vCPU.
static PORTS_SEEN: [AtomicU64; smp::MAX_VCPUS] = [const { AtomicU64::new(0) }; smp::MAX_VCPUS];
/// The last port found per vCPU.
static LAST_PORT: [AtomicU32; smp::MAX_VCPUS] = [const { AtomicU32::new(0) }; smp::MAX_VCPUS];

/// The upcall protocol for the vCPU the event interrupted.
fn upcall_hook(frame: &mut TrapFrame, rec: &Trap) -> Disposition {
    if rec.vector != VECTOR_EVENT {
        return Disposition::Default;
    }
    let vcpu = support::vcpu_of(frame.rsp);
    shared::take_pending_ports(vcpu, |port| {
        PORTS_SEEN[vcpu].fetch_add(1, Ordering::SeqCst);
        LAST_PORT[vcpu].store(port, Ordering::SeqCst);
    });
    // Counted last: another vCPU waiting for this count then reads the
    // ports already recorded, even if this vCPU is preempted here.
    UPCALLS[vcpu].fetch_add(1, Ordering::SeqCst);
    Disposition::Return
}

fn upcalls(vcpu: usize) -> u64 {
    UPCALLS[vcpu].load(Ordering::SeqCst)
}

fn last_port(vcpu: usize) -> u32 {
    LAST_PORT[vcpu].load(Ordering::SeqCst)
}

/// `alloc_unbound` in `dom` for `remote`: the result and the port.
fn alloc(dom: DomId, remote: DomId) -> (i64, u32) {
    let mut a = EvtchnAllocUnbound {
        dom: dom.0,
        remote_dom: remote.0,
        port: u32::MAX,
    };
    (hc::evtchn_alloc_unbound(&mut a), a.port)
}

/// `bind_interdomain` to `remote`'s `port`: the result and the local port.
fn bind_interdomain(remote: DomId, port: u32) -> (i64, u32) {
    let mut b = EvtchnBindInterdomain {
        remote_dom: remote.0,
        remote_port: port,
        local_port: u32::MAX,
        ..Default::default()
    };
    (hc::evtchn_bind_interdomain(&mut b), b.local_port)
}

fn bind_virq(virq: u32, vcpu: u32) -> (i64, u32) {
    let mut b = EvtchnBindVirq {
        virq,
        vcpu,
        port: u32::MAX,
    };
    (hc::evtchn_bind_virq(&mut b), b.port)
}

fn bind_ipi(vcpu: u32) -> (i64, u32) {
    let mut b = EvtchnBindIpi {
        vcpu,
        port: u32::MAX,
    };
    (hc::evtchn_bind_ipi(&mut b), b.port)
}

/// `status` of `port` in `dom`, with the OUT fields preset to
/// [`UNTOUCHED`].
fn status_in(dom: DomId, port: u32) -> (i64, EvtchnStatus) {
    let mut s = EvtchnStatus {
        dom: dom.0,
        port,
        status: UNTOUCHED,
        vcpu: UNTOUCHED,
        u: [UNTOUCHED; 2],
        ..Default::default()
    };
    let ret = hc::evtchn_status(&mut s);
    (ret, s)
}

fn status(port: u32) -> (i64, EvtchnStatus) {
    status_in(DomId::SELF, port)
}

/// Checks that `port`'s status is `want` on `vcpu` with detail `u`
/// (`None`: the detail words must be left alone).
fn check_status(what: &str, port: u32, want: EvtchnStat, vcpu: u32, u: Option<[u32; 2]>) {
    let (ret, s) = status(port);
    let u_ok = match u {
        Some(u) => s.u == u,
        None => s.u == [UNTOUCHED; 2],
    };
    report::check_observed(
        format_args!("status of {what} port: {}", want.name()),
        ret == 0 && s.status == want as u32 && s.vcpu == vcpu && u_ok,
        format_args!(
            "port {port}: ret {}, status {}, vcpu {}, u {:x?}",
            report::Ret(ret),
            s.status,
            s.vcpu,
            s.u
        ),
    );
}

/// `u` of an unbound port's status for remote `dom`: the domain in the
/// low half of the first word, the rest as given.
fn unbound_u(dom: u16) -> [u32; 2] {
    [(UNTOUCHED & 0xffff_0000) | u32::from(dom), UNTOUCHED]
}

/// `u` of an interdomain port's status: the domain (the rest of the first
/// word as given) and the port.
fn interdomain_u(dom: u16, port: u32) -> [u32; 2] {
    [(UNTOUCHED & 0xffff_0000) | u32::from(dom), port]
}

/// The first `n` ports are allocated in order from 1.
fn alloc_in_order(n: u32) -> Option<[u32; 3]> {
    let mut ports = [0u32; 3];
    for slot in ports.iter_mut().take(n as usize) {
        let (ret, port) = alloc(DomId::SELF, DomId::SELF);
        if ret != 0 {
            return None;
        }
        *slot = port;
    }
    Some(ports)
}

/// `evtchn_ports`: port lifecycle, status and errors, events masked.
pub fn ports(_start_info: &'static StartInfo) {
    if !support::traps() {
        return;
    }
    check_status("the reserved 0", 0, EvtchnStat::Closed, 0, None);

    // Allocation: lowest free port first, from 1.
    let Some([p1, p2, p3]) = alloc_in_order(3) else {
        report::error(
            "alloc_unbound",
            format_args!("three ports could not be allocated"),
        );
        return;
    };
    report::check_observed(
        "alloc_unbound gives ports 1, 2, 3 in order",
        [p1, p2, p3] == [1, 2, 3],
        format_args!("{p1}, {p2}, {p3}"),
    );
    check_status(
        "an unbound (remote DOMID_SELF)",
        p1,
        EvtchnStat::Unbound,
        0,
        Some(unbound_u(0)),
    );
    report::check_ret("close of an unbound port", hc::evtchn_close(p2), 0);
    let (ret, again) = alloc(DomId(0), DomId(7));
    report::check_observed(
        "alloc_unbound reuses the lowest free port; the remote need not exist",
        ret == 0 && again == p2,
        format_args!("ret {}, port {again}", report::Ret(ret)),
    );
    check_status(
        "an unbound (remote d7)",
        p2,
        EvtchnStat::Unbound,
        0,
        Some(unbound_u(7)),
    );
    for (what, dom) in [
        ("d1", DomId(1)),
        ("DOMID_IO", DomId::IO),
        ("DOMID_XEN", DomId::XEN),
    ] {
        report::check_ret(
            format_args!("alloc_unbound in {what} is ESRCH"),
            alloc(dom, DomId::SELF).0,
            Errno::ESRCH.neg(),
        );
    }

    // Interdomain, bound to the domain's own unbound port.
    let (ret, local) = bind_interdomain(DomId::SELF, p1);
    report::check_observed(
        "bind_interdomain to an own unbound port",
        ret == 0 && local == 4,
        format_args!("ret {}, local port {local}", report::Ret(ret)),
    );
    check_status(
        "the bound",
        local,
        EvtchnStat::Interdomain,
        0,
        Some(interdomain_u(0, p1)),
    );
    check_status(
        "the remote",
        p1,
        EvtchnStat::Interdomain,
        0,
        Some(interdomain_u(0, local)),
    );
    report::check_observed(
        "bind_interdomain leaves the new port pending",
        shared::evtchn_pending(local) == Some(true) && shared::evtchn_pending(p1) == Some(false),
        format_args!(
            "pending {:?}/{:?}, vcpu0 sel {:#x?}, upcall_pending {:?}",
            shared::evtchn_pending(local),
            shared::evtchn_pending(p1),
            shared::pending_sel_of(0),
            shared::upcall_pending_of(0)
        ),
    );
    let bad_binds: [(&str, DomId, u32, Errno); 7] = [
        (
            "a port whose remote is another domain",
            DomId::SELF,
            p2,
            Errno::EINVAL,
        ),
        ("an interdomain port", DomId::SELF, p1, Errno::EINVAL),
        ("the reserved port 0", DomId::SELF, 0, Errno::EINVAL),
        ("a free port", DomId::SELF, 60, Errno::EINVAL),
        ("a port of no bucket", DomId::SELF, 64, Errno::EINVAL),
        ("port 0xffffffff", DomId::SELF, u32::MAX, Errno::EINVAL),
        ("a domain that does not exist", DomId(1), p2, Errno::ESRCH),
    ];
    for (what, dom, port, errno) in bad_binds {
        report::check_ret(
            format_args!("bind_interdomain to {what} is {}", errno.name()),
            bind_interdomain(dom, port).0,
            errno.neg(),
        );
    }

    // VIRQs.
    let (ret, virq_port) = bind_virq(Virq::Debug as u32, 0);
    report::check_observed(
        "bind_virq VIRQ_DEBUG on vCPU 0",
        ret == 0 && virq_port == 5,
        format_args!("ret {}, port {virq_port}", report::Ret(ret)),
    );
    check_status(
        "a VIRQ",
        virq_port,
        EvtchnStat::Virq,
        0,
        Some([Virq::Debug as u32, UNTOUCHED]),
    );
    let bad_virqs: [(&str, u32, u32, Errno); 6] = [
        ("VIRQ_DEBUG again", Virq::Debug as u32, 0, Errno::EEXIST),
        (
            "VIRQ_TIMER on a missing vCPU",
            Virq::Timer as u32,
            1,
            Errno::ENOENT,
        ),
        (
            "global VIRQ_CONSOLE on vCPU 1",
            Virq::Console as u32,
            1,
            Errno::EINVAL,
        ),
        ("VIRQ 24", 24, 0, Errno::EINVAL),
        ("VIRQ 0xffffffff", u32::MAX, 0, Errno::EINVAL),
        (
            "VIRQ_TIMER on vCPU 0xffffffff",
            Virq::Timer as u32,
            u32::MAX,
            Errno::ENOENT,
        ),
    ];
    for (what, virq, vcpu, errno) in bad_virqs {
        report::check_ret(
            format_args!("bind_virq of {what} is {}", errno.name()),
            bind_virq(virq, vcpu).0,
            errno.neg(),
        );
    }
    let (ret, unused) = bind_virq(5, 0);
    report::check_observed(
        "bind_virq of the unnumbered VIRQ 5 (global) on vCPU 0",
        ret == 0,
        format_args!("ret {}, port {unused}", report::Ret(ret)),
    );
    report::check_ret("close of that VIRQ port", hc::evtchn_close(unused), 0);
    report::check_ret(
        "send on a VIRQ port is EINVAL",
        hc::evtchn_send(virq_port),
        Errno::EINVAL.neg(),
    );
    report::check_ret(
        "bind_vcpu of a per-vCPU VIRQ port is EINVAL",
        hc::evtchn_bind_vcpu(virq_port, 0),
        Errno::EINVAL.neg(),
    );
    report::check_ret("close of the VIRQ port", hc::evtchn_close(virq_port), 0);
    let (ret, rebound) = bind_virq(Virq::Debug as u32, 0);
    report::check_observed(
        "a closed VIRQ binds again",
        ret == 0 && rebound == virq_port,
        format_args!("ret {}, port {rebound}", report::Ret(ret)),
    );
    report::check_ret("close of it", hc::evtchn_close(rebound), 0);

    // IPIs and bind_vcpu.
    let (ret, ipi) = bind_ipi(0);
    report::check_ret("bind_ipi to vCPU 0", ret, 0);
    check_status("an IPI", ipi, EvtchnStat::Ipi, 0, None);
    for vcpu in [1, u32::MAX] {
        report::check_ret(
            format_args!("bind_ipi to vCPU {vcpu:#x} is ENOENT"),
            bind_ipi(vcpu).0,
            Errno::ENOENT.neg(),
        );
    }
    report::check_ret(
        "bind_vcpu of an IPI port is EINVAL",
        hc::evtchn_bind_vcpu(ipi, 0),
        Errno::EINVAL.neg(),
    );
    report::check_ret(
        "bind_vcpu of an unbound port to vCPU 0",
        hc::evtchn_bind_vcpu(p2, 0),
        0,
    );
    report::check_ret(
        "bind_vcpu of an interdomain port to vCPU 0",
        hc::evtchn_bind_vcpu(local, 0),
        0,
    );
    report::check_ret(
        "bind_vcpu to a missing vCPU is ENOENT (before the port)",
        hc::evtchn_bind_vcpu(u32::MAX, 1),
        Errno::ENOENT.neg(),
    );
    for (what, port) in [
        ("the reserved port 0", 0),
        ("a free port", 60),
        ("a port of no bucket", 64),
    ] {
        report::check_ret(
            format_args!("bind_vcpu of {what} is EINVAL"),
            hc::evtchn_bind_vcpu(port, 0),
            Errno::EINVAL.neg(),
        );
    }

    // Buckets: ports 0-63 exist, 64 not yet.
    check_status("a free", 63, EvtchnStat::Closed, 0, None);
    let (ret, _) = status(64);
    report::check_ret(
        "status of a port of no bucket is EINVAL",
        ret,
        Errno::EINVAL.neg(),
    );
    report::check_ret(
        "status in d1 is ESRCH",
        status_in(DomId(1), 1).0,
        Errno::ESRCH.neg(),
    );
    report::check_ret("unmask of a free port", hc::evtchn_unmask(60), 0);
    for (what, port) in [
        ("port 64", 64),
        ("port 4096", NR_PORTS),
        ("port 0xffffffff", u32::MAX),
    ] {
        report::check_ret(
            format_args!("unmask of {what} is EINVAL"),
            hc::evtchn_unmask(port),
            Errno::EINVAL.neg(),
        );
    }

    // send and close.
    report::check_ret("send on an unbound port is dropped", hc::evtchn_send(p2), 0);
    report::check_observed(
        "nothing became pending",
        shared::evtchn_pending(p2) == Some(false),
        format_args!("pending {:?}", shared::evtchn_pending(p2)),
    );
    for (what, port) in [
        ("the reserved port 0", 0),
        ("a free port", 60),
        ("a port of no bucket", 64),
    ] {
        report::check_ret(
            format_args!("send on {what} is EINVAL"),
            hc::evtchn_send(port),
            Errno::EINVAL.neg(),
        );
        report::check_ret(
            format_args!("close of {what} is EINVAL"),
            hc::evtchn_close(port),
            Errno::EINVAL.neg(),
        );
    }
    report::check_ret("close of an IPI port", hc::evtchn_close(ipi), 0);
    report::check_ret(
        "close of it again is EINVAL",
        hc::evtchn_close(ipi),
        Errno::EINVAL.neg(),
    );
    report::check_ret(
        "close of one end of an interdomain pair",
        hc::evtchn_close(local),
        0,
    );
    check_status(
        "the other end, now an unbound",
        p1,
        EvtchnStat::Unbound,
        0,
        Some(unbound_u(0)),
    );
    report::check_observed(
        "close cleared the closed port's pending bit",
        shared::evtchn_pending(local) == Some(false),
        format_args!("pending {:?}", shared::evtchn_pending(local)),
    );
    shared::clear_evtchn_pending(local);
    shared::take_pending_sel_of(0);
    shared::set_upcall_pending_of(0, 0);

    fifo_and_unknown(p1);
    compat();
    bad_pointers();
    exhaust_and_reset();
}

/// FIFO commands on a 2-level domain, and unknown commands.
fn fifo_and_unknown(port: u32) {
    report::check_ret(
        "expand_array is EOPNOTSUPP",
        hc::evtchn_expand_array(0),
        Errno::EOPNOTSUPP.neg(),
    );
    report::check_ret(
        "set_priority of a port is ENOSYS",
        hc::evtchn_set_priority(port, 3),
        Errno::ENOSYS.neg(),
    );
    report::check_ret(
        "set_priority of port 64 is EINVAL",
        hc::evtchn_set_priority(64, 3),
        Errno::EINVAL.neg(),
    );
    let cases: [(&str, u32, u32, Errno); 3] = [
        ("a missing vCPU", 5, 0, Errno::ENOENT),
        ("an offset past the page", 0, 4025, Errno::EINVAL),
        ("an unaligned offset", 0, 4, Errno::EINVAL),
    ];
    for (what, vcpu, offset, errno) in cases {
        let mut c = EvtchnInitControl {
            control_gfn: 0,
            offset,
            vcpu,
            link_bits: 0xee,
            ..Default::default()
        };
        let ret = hc::evtchn_init_control(&mut c);
        report::check_observed(
            format_args!("init_control with {what} is {}", errno.name()),
            ret == errno.neg() && c.link_bits == 0xee,
            format_args!("ret {}, link_bits {:#x}", report::Ret(ret), c.link_bits),
        );
    }
    for cmd in [15u64, 99, (1 << 32) | 15] {
        // SAFETY: no such command: the argument is not read.
        let ret = unsafe { hc::event_channel_op_raw(cmd, 0) };
        report::check_ret(
            format_args!("command {cmd:#x} is ENOSYS"),
            ret,
            Errno::ENOSYS.neg(),
        );
    }
}

/// `event_channel_op_compat`.
fn compat() {
    let mut op = EvtchnOpCompat {
        cmd: EvtchnOp::AllocUnbound as u32,
        u: [
            u32::from(DomId::SELF.0) | (u32::from(DomId::SELF.0) << 16),
            u32::MAX,
            0,
            0,
            0,
            0,
        ],
    };
    let ret = hc::evtchn_compat(&mut op);
    let port = op.u[1];
    report::check_observed(
        "compat alloc_unbound",
        ret == 0 && port == 4,
        format_args!("ret {}, port {port}", report::Ret(ret)),
    );
    let mut close = EvtchnOpCompat {
        cmd: EvtchnOp::Close as u32,
        u: [port, 0, 0, 0, 0, 0],
    };
    report::check_ret("compat close", hc::evtchn_compat(&mut close), 0);
    for cmd in [
        EvtchnOp::Reset,
        EvtchnOp::InitControl,
        EvtchnOp::ExpandArray,
        EvtchnOp::SetPriority,
        EvtchnOp::ResetCont,
    ] {
        let mut op = EvtchnOpCompat {
            cmd: cmd as u32,
            u: [u32::from(DomId::SELF.0), 0, 0, 0, 0, 0],
        };
        report::check_ret(
            format_args!("compat {} is ENOSYS", cmd.name()),
            hc::evtchn_compat(&mut op),
            Errno::ENOSYS.neg(),
        );
    }
    for &(what, ptr) in BAD_POINTERS {
        // SAFETY: `ptr` is not Rust memory; the hypervisor must refuse it.
        let ret = unsafe { hc::event_channel_op_compat_raw(ptr) };
        report::check_ret(
            format_args!("compat with {what} is EFAULT"),
            ret,
            Errno::EFAULT.neg(),
        );
    }
}

/// Every command that reads a structure refuses a bad pointer.
fn bad_pointers() {
    for cmd in 0..=14u64 {
        if cmd == EvtchnOp::BindPirq as u64 {
            continue;
        }
        for &(what, ptr) in BAD_POINTERS {
            // SAFETY: `ptr` is not Rust memory; the hypervisor must refuse it.
            let ret = unsafe { hc::event_channel_op_raw(cmd, ptr) };
            let name = EvtchnOp::from_number(cmd).map_or("?", EvtchnOp::name);
            report::check_ret(
                format_args!("{name} with {what} is EFAULT"),
                ret,
                Errno::EFAULT.neg(),
            );
        }
    }
}

/// Allocates every port, then resets.
fn exhaust_and_reset() {
    let (mut first, mut last, mut out_of_order) = (None, 0u32, 0u32);
    let ret = loop {
        let (ret, port) = alloc(DomId::SELF, DomId::SELF);
        if ret != 0 {
            break ret;
        }
        if first.is_none() {
            first = Some(port);
        } else if port != last + 1 {
            out_of_order += 1;
        }
        last = port;
    };
    report::check_observed(
        "alloc_unbound takes ports 4-4095 in order, then ENOSPC",
        ret == Errno::ENOSPC.neg() && first == Some(4) && last == NR_PORTS - 1 && out_of_order == 0,
        format_args!(
            "ports {first:?}-{last}, then {}, {out_of_order} out of order",
            report::Ret(ret)
        ),
    );
    check_status(
        "the last",
        NR_PORTS - 1,
        EvtchnStat::Unbound,
        0,
        Some(unbound_u(0)),
    );
    report::check_ret(
        "status of port 4096 is EINVAL",
        status(NR_PORTS).0,
        Errno::EINVAL.neg(),
    );
    report::check_ret(
        "reset of d1 is ESRCH",
        hc::evtchn_reset(1),
        Errno::ESRCH.neg(),
    );
    report::check_ret(
        "reset_cont with no reset under way",
        hc::evtchn_reset_cont(DomId::SELF.0),
        Errno::EBUSY.neg(),
    );
    report::check_ret("reset of DOMID_SELF", hc::evtchn_reset(DomId::SELF.0), 0);
    check_status("a reset", 100, EvtchnStat::Closed, 0, None);
    check_status("the last reset", NR_PORTS - 1, EvtchnStat::Closed, 0, None);
    let (ret, port) = alloc(DomId::SELF, DomId::SELF);
    report::check_observed(
        "after reset the first port is 1 again",
        ret == 0 && port == 1,
        format_args!("ret {}, port {port}", report::Ret(ret)),
    );
    report::check_ret("reset of d0 by id", hc::evtchn_reset(0), 0);
}

/// Makes `port` of a loopback pair deliverable: clears what the pair's
/// creation left pending.
fn quiesce() {
    shared::set_upcall_mask(1);
    for port in 0..8 {
        shared::clear_evtchn_pending(port);
    }
    shared::take_pending_sel_of(0);
    shared::set_upcall_pending_of(0, 0);
}

/// `evtchn_loopback`: send and delivery between two ports of the domain.
/// Linux's way to have a pending upcall delivered after it unmasks a port
/// by hand: it raises `evtchn_upcall_pending` itself and makes a
/// `xen_version` call, whose exit must deliver the upcall unless upcalls
/// are masked. (The hypervisor answers that call on its fast path only
/// when no unmasked upcall is pending.)
fn forced_callback() {
    let before = upcalls(0);
    shared::set_upcall_mask(1);
    shared::set_upcall_pending_of(0, 1);
    let masked = hc::xenver_version();
    report::check_observed(
        "an upcall the guest raised itself waits while upcalls are masked",
        masked == 0x0004_0011 && upcalls(0) == before,
        format_args!("xen_version {masked:#x}, {} upcalls", upcalls(0) - before),
    );
    shared::set_upcall_mask(0);
    let version = hc::xenver_version();
    report::check_observed(
        "and a xen_version call delivers it once they are unmasked",
        version == 0x0004_0011 && upcalls(0) == before + 1,
        format_args!("xen_version {version:#x}, {} upcalls", upcalls(0) - before),
    );
    hc::xenver_version();
    report::check_observed(
        "after which xen_version delivers nothing",
        upcalls(0) == before + 1 && shared::upcall_pending_of(0) == Some(0),
        format_args!(
            "{} upcalls, upcall_pending {:?}",
            upcalls(0) - before,
            shared::upcall_pending_of(0)
        ),
    );
}

pub fn loopback(_start_info: &'static StartInfo) {
    if !support::traps() {
        return;
    }
    traps::set_hook(Some(upcall_hook));
    let (ret_a, a) = alloc(DomId::SELF, DomId::SELF);
    let (ret_b, b) = bind_interdomain(DomId::SELF, a);
    if ret_a != 0 || ret_b != 0 {
        report::error("loopback pair", format_args!("alloc {ret_a}, bind {ret_b}"));
        return;
    }
    report::check_observed(
        "the new port is pending and vCPU 0 has an upcall pending",
        shared::evtchn_pending(b) == Some(true)
            && shared::pending_sel_of(0) == Some(1)
            && shared::upcall_pending_of(0) == Some(1),
        format_args!(
            "pending {:?}, sel {:?}, upcall_pending {:?}",
            shared::evtchn_pending(b),
            shared::pending_sel_of(0),
            shared::upcall_pending_of(0)
        ),
    );
    shared::set_upcall_mask(0);
    hc::xenver_version();
    report::check_observed(
        "unmasking upcalls delivers it at the next exit",
        upcalls(0) == 1 && last_port(0) == b,
        format_args!("{} upcalls, last port {}", upcalls(0), last_port(0)),
    );

    report::check_ret("send on one end", hc::evtchn_send(b), 0);
    report::check_observed(
        "the other end is delivered on the way back",
        upcalls(0) == 2 && last_port(0) == a,
        format_args!("{} upcalls, last port {}", upcalls(0), last_port(0)),
    );
    hc::evtchn_send(a);
    report::check_observed(
        "and the other way",
        upcalls(0) == 3 && last_port(0) == b,
        format_args!("{} upcalls, last port {}", upcalls(0), last_port(0)),
    );

    shared::set_evtchn_mask(a, true);
    hc::evtchn_send(b);
    report::check_observed(
        "a masked port becomes pending without an upcall",
        upcalls(0) == 3
            && shared::evtchn_pending(a) == Some(true)
            && shared::upcall_pending_of(0) == Some(0)
            && shared::pending_sel_of(0) == Some(0),
        format_args!(
            "{} upcalls, pending {:?}, sel {:?}, upcall_pending {:?}",
            upcalls(0),
            shared::evtchn_pending(a),
            shared::pending_sel_of(0),
            shared::upcall_pending_of(0)
        ),
    );
    report::check_ret("unmask of the pending port", hc::evtchn_unmask(a), 0);
    report::check_observed(
        "unmask re-raises it",
        upcalls(0) == 4 && last_port(0) == a && shared::evtchn_masked(a) == Some(false),
        format_args!(
            "{} upcalls, last port {}, masked {:?}",
            upcalls(0),
            last_port(0),
            shared::evtchn_masked(a)
        ),
    );

    shared::set_evtchn_mask(a, true);
    hc::evtchn_send(b);
    shared::set_evtchn_mask(a, false);
    hc::xenver_version();
    hc::evtchn_unmask(a);
    report::check_observed(
        "unmasked by hand, a pending port is not re-raised, not even by unmask",
        upcalls(0) == 4 && shared::evtchn_pending(a) == Some(true),
        format_args!(
            "{} upcalls, pending {:?}",
            upcalls(0),
            shared::evtchn_pending(a)
        ),
    );
    hc::evtchn_send(b);
    report::check_observed(
        "a send to a port already pending changes nothing",
        upcalls(0) == 4 && shared::pending_sel_of(0) == Some(0),
        format_args!(
            "{} upcalls, sel {:?}",
            upcalls(0),
            shared::pending_sel_of(0)
        ),
    );
    shared::clear_evtchn_pending(a);

    shared::set_upcall_mask(1);
    hc::evtchn_send(b);
    hc::evtchn_send(a);
    report::check_observed(
        "with upcalls masked, sends only set bits",
        upcalls(0) == 4
            && shared::upcall_pending_of(0) == Some(1)
            && shared::pending_sel_of(0) == Some(1),
        format_args!(
            "{} upcalls, sel {:?}, upcall_pending {:?}",
            upcalls(0),
            shared::pending_sel_of(0),
            shared::upcall_pending_of(0)
        ),
    );
    shared::set_upcall_mask(0);
    hc::xenver_version();
    report::check_observed(
        "one upcall takes both ports",
        upcalls(0) == 5 && PORTS_SEEN[0].load(Ordering::SeqCst) == 6,
        format_args!(
            "{} upcalls, {} ports",
            upcalls(0),
            PORTS_SEEN[0].load(Ordering::SeqCst)
        ),
    );

    shared::set_upcall_mask(1);
    hc::evtchn_send(b);
    shared::set_evtchn_mask(a, true);
    report::check_ret("close of one end", hc::evtchn_close(a), 0);
    report::check_observed(
        "close clears the pending bit and keeps the mask bit",
        shared::evtchn_pending(a) == Some(false) && shared::evtchn_masked(a) == Some(true),
        format_args!(
            "pending {:?}, masked {:?}",
            shared::evtchn_pending(a),
            shared::evtchn_masked(a)
        ),
    );
    check_status(
        "the remaining end, now an unbound",
        b,
        EvtchnStat::Unbound,
        0,
        Some(unbound_u(0)),
    );
    report::check_ret("send on it is dropped", hc::evtchn_send(b), 0);
    let (ret, again) = alloc(DomId::SELF, DomId::SELF);
    report::check_observed(
        "a new port reuses the closed one, still masked",
        ret == 0 && again == a && shared::evtchn_masked(a) == Some(true),
        format_args!(
            "ret {}, port {again}, masked {:?}",
            report::Ret(ret),
            shared::evtchn_masked(a)
        ),
    );
    shared::set_evtchn_mask(a, false);
    quiesce();

    let (ret, ipi) = bind_ipi(0);
    shared::set_upcall_mask(0);
    hc::xenver_version();
    let before = upcalls(0);
    let sent = hc::evtchn_send(ipi);
    report::check_observed(
        "an IPI to the sender's own vCPU",
        ret == 0 && sent == 0 && upcalls(0) == before + 1 && last_port(0) == ipi,
        format_args!(
            "bind {}, send {}, {} upcalls, last port {}",
            report::Ret(ret),
            report::Ret(sent),
            upcalls(0) - before,
            last_port(0)
        ),
    );
    forced_callback();
    shared::set_upcall_mask(1);
    report::check_ret("reset", hc::evtchn_reset(DomId::SELF.0), 0);
    traps::set_hook(None);
}

/// Set by vCPU 0 when vCPU 1 may unmask its upcalls.
static UNMASK: AtomicBool = AtomicBool::new(false);
/// Set by vCPU 0 when vCPU 1 may finish.
static STOP: AtomicBool = AtomicBool::new(false);

/// IPI ports vCPU 1 sends on when told: to itself, then to vCPU 0
/// (0: not yet).
static IPI_SELF: AtomicU32 = AtomicU32::new(0);
static IPI_TO_0: AtomicU32 = AtomicU32::new(0);
/// What vCPU 1 saw: the sends' results, and its upcalls during its send
/// to itself; then `SENT` is set.
static SELF_SEND: AtomicI64 = AtomicI64::new(1);
static SEND_TO_0: AtomicI64 = AtomicI64::new(1);
static SELF_UPCALLS: AtomicU64 = AtomicU64::new(0);
static SENT: AtomicBool = AtomicBool::new(false);

/// vCPU 1: events masked until told, then unmasked, yielding until told
/// to stop; once given the IPI ports, sends on them (once).
fn worker(vcpu: usize) {
    while !UNMASK.load(Ordering::SeqCst) {
        hc::sched_yield();
    }
    shared::set_upcall_mask_of(vcpu, 0);
    while !STOP.load(Ordering::SeqCst) {
        let (to_self, to_0) = (
            IPI_SELF.load(Ordering::SeqCst),
            IPI_TO_0.load(Ordering::SeqCst),
        );
        if to_self != 0 && to_0 != 0 && !SENT.load(Ordering::SeqCst) {
            let before = upcalls(vcpu);
            SELF_SEND.store(hc::evtchn_send(to_self), Ordering::SeqCst);
            SELF_UPCALLS.store(upcalls(vcpu) - before, Ordering::SeqCst);
            SEND_TO_0.store(hc::evtchn_send(to_0), Ordering::SeqCst);
            SENT.store(true, Ordering::SeqCst);
        }
        hc::sched_yield();
    }
    shared::set_upcall_mask_of(vcpu, 1);
}

/// `evtchn_vcpus`: ports delivered to vCPU 1.
pub fn vcpus(_start_info: &'static StartInfo) {
    if !support::traps() {
        return;
    }
    traps::set_hook(Some(upcall_hook));
    let (ret, ipi1) = bind_ipi(1);
    report::check_ret("bind_ipi to vCPU 1", ret, 0);
    check_status("an IPI to vCPU 1", ipi1, EvtchnStat::Ipi, 1, None);
    if !support::start_vcpu(1, worker) {
        return;
    }
    report::check_ret("send on it from vCPU 0", hc::evtchn_send(ipi1), 0);
    report::check_observed(
        "vCPU 1's selector and upcall flag are set, vCPU 0's not",
        shared::evtchn_pending(ipi1) == Some(true)
            && shared::pending_sel_of(1) == Some(1)
            && shared::upcall_pending_of(1) == Some(1)
            && shared::pending_sel_of(0) == Some(0)
            && shared::upcall_pending_of(0) == Some(0),
        format_args!(
            "pending {:?}, sel {:?}/{:?}, upcall_pending {:?}/{:?}",
            shared::evtchn_pending(ipi1),
            shared::pending_sel_of(0),
            shared::pending_sel_of(1),
            shared::upcall_pending_of(0),
            shared::upcall_pending_of(1)
        ),
    );
    UNMASK.store(true, Ordering::SeqCst);
    let delivered = support::yield_until(WAIT, || upcalls(1) == 1);
    report::check_observed(
        "vCPU 1 takes the upcall once it runs unmasked",
        delivered && last_port(1) == ipi1 && upcalls(0) == 0,
        format_args!(
            "vCPU 1: {} upcalls, last port {}; vCPU 0: {} upcalls",
            upcalls(1),
            last_port(1),
            upcalls(0)
        ),
    );

    let (ret_a, a) = alloc(DomId::SELF, DomId::SELF);
    let moved = hc::evtchn_bind_vcpu(a, 1);
    report::check_ret("bind_vcpu of an unbound port to vCPU 1", moved, 0);
    check_status(
        "an unbound on vCPU 1",
        a,
        EvtchnStat::Unbound,
        1,
        Some(unbound_u(0)),
    );
    report::check_ret(
        "bind_vcpu to vCPU 2 is ENOENT",
        hc::evtchn_bind_vcpu(a, 2),
        Errno::ENOENT.neg(),
    );
    report::check_ret(
        "bind_vcpu of an IPI port is EINVAL",
        hc::evtchn_bind_vcpu(ipi1, 0),
        Errno::EINVAL.neg(),
    );
    let (ret_b, b) = bind_interdomain(DomId::SELF, a);
    check_status(
        "the bound end, on vCPU 1",
        a,
        EvtchnStat::Interdomain,
        1,
        Some(interdomain_u(0, b)),
    );
    shared::clear_evtchn_pending(b);
    shared::take_pending_sel_of(0);
    shared::set_upcall_pending_of(0, 0);
    let sent = hc::evtchn_send(b);
    let delivered = support::yield_until(WAIT, || upcalls(1) == 2);
    report::check_observed(
        "a send on the other end reaches vCPU 1",
        ret_a == 0 && ret_b == 0 && sent == 0 && delivered && last_port(1) == a && upcalls(0) == 0,
        format_args!(
            "send {}, vCPU 1: {} upcalls, last port {}; vCPU 0: {} upcalls",
            report::Ret(sent),
            upcalls(1),
            last_port(1),
            upcalls(0)
        ),
    );
    report::check_ret(
        "bind_vcpu of it back to vCPU 0",
        hc::evtchn_bind_vcpu(a, 0),
        0,
    );
    shared::set_upcall_mask(0);
    hc::evtchn_send(b);
    report::check_observed(
        "now it reaches vCPU 0",
        upcalls(0) == 1 && last_port(0) == a && upcalls(1) == 2,
        format_args!(
            "vCPU 0: {} upcalls, last port {}; vCPU 1: {}",
            upcalls(0),
            last_port(0),
            upcalls(1)
        ),
    );

    let (ret, ipi0) = bind_ipi(0);
    report::check_ret("bind_ipi to vCPU 0", ret, 0);
    IPI_SELF.store(ipi1, Ordering::SeqCst);
    IPI_TO_0.store(ipi0, Ordering::SeqCst);
    let sent = support::yield_until(WAIT, || SENT.load(Ordering::SeqCst) && upcalls(0) == 2);
    report::check_observed(
        "vCPU 1's IPI to itself is delivered on the way back from the send",
        sent && SELF_SEND.load(Ordering::SeqCst) == 0 && SELF_UPCALLS.load(Ordering::SeqCst) == 1,
        format_args!(
            "send {}, {} upcalls during it, last port {}",
            report::Ret(SELF_SEND.load(Ordering::SeqCst)),
            SELF_UPCALLS.load(Ordering::SeqCst),
            last_port(1)
        ),
    );
    report::check_observed(
        "vCPU 1's IPI to vCPU 0 reaches vCPU 0 when it runs",
        sent && SEND_TO_0.load(Ordering::SeqCst) == 0
            && last_port(0) == ipi0
            && last_port(1) == ipi1,
        format_args!(
            "send {}, vCPU 0: {} upcalls, last port {} (IPI port {ipi0})",
            report::Ret(SEND_TO_0.load(Ordering::SeqCst)),
            upcalls(0),
            last_port(0)
        ),
    );
    shared::set_upcall_mask(1);

    STOP.store(true, Ordering::SeqCst);
    let down = support::yield_until(WAIT, || hc::vcpu_is_up(1) == 0);
    report::check(
        "vCPU 1 finished",
        down,
        format_args!("is_up {}", hc::vcpu_is_up(1)),
    );
    report::check_ret("reset", hc::evtchn_reset(DomId::SELF.0), 0);
    traps::set_hook(None);
}

/// The port vCPU 1 polls in `evtchn_poll_wake` (0: not chosen yet).
static POLLED: AtomicU32 = AtomicU32::new(0);
/// `SCHEDOP_poll`'s result on vCPU 1 (1: not returned yet).
static POLL_RET: AtomicI64 = AtomicI64::new(1);

/// vCPU 1: polls the port it is given, without a timeout.
fn poller(_vcpu: usize) {
    let port = loop {
        match POLLED.load(Ordering::SeqCst) {
            0 => hc::sched_yield(),
            port => break port,
        };
    };
    POLL_RET.store(hc::sched_poll(&[port], 0), Ordering::SeqCst);
}

/// vCPU `vcpu`'s `RUNSTATE_*` (-1 if it cannot be read).
fn runstate(vcpu: u64) -> i32 {
    let mut info = VcpuRunstateInfo::default();
    if hc::vcpu_get_runstate_info(vcpu, &mut info) == 0 {
        info.state
    } else {
        -1
    }
}

/// `evtchn_poll_wake` (`dom0_max_vcpus=2`): vCPU 1 polls a port bound to
/// vCPU 0, whose upcall is already pending (and masked); vCPU 0's send
/// raises no new upcall, yet wakes the poller, as Xen wakes every vCPU
/// polling a port that becomes pending.
pub fn poll_wake(_start_info: &'static StartInfo) {
    if !support::traps() {
        return;
    }
    let (ret_a, a) = alloc(DomId::SELF, DomId::SELF);
    let (ret_b, b) = bind_interdomain(DomId::SELF, a);
    report::check(
        "a loopback pair",
        ret_a == 0 && ret_b == 0,
        format_args!("{} / {}", report::Ret(ret_a), report::Ret(ret_b)),
    );
    shared::set_upcall_mask(1);
    shared::clear_evtchn_pending(a);
    shared::clear_evtchn_pending(b);
    shared::set_upcall_pending_of(0, 1);
    if !support::start_vcpu(1, poller) {
        return;
    }
    POLLED.store(a, Ordering::SeqCst);
    let blocked = support::yield_until(WAIT, || runstate(1) == RUNSTATE_BLOCKED);
    report::check(
        "vCPU 1 blocks in its poll",
        blocked && POLL_RET.load(Ordering::SeqCst) == 1,
        format_args!(
            "runstate {}, poll {}",
            runstate(1),
            report::Ret(POLL_RET.load(Ordering::SeqCst))
        ),
    );
    report::check_ret("send to the polled port", hc::evtchn_send(b), 0);
    report::check_observed(
        "the send raised no new upcall (vCPU 0's was pending already)",
        shared::upcall_pending_of(0) == Some(1) && shared::evtchn_pending(a) == Some(true),
        format_args!(
            "upcall_pending {:?}, port pending {:?}",
            shared::upcall_pending_of(0),
            shared::evtchn_pending(a)
        ),
    );
    let woken = support::yield_until(1, || POLL_RET.load(Ordering::SeqCst) != 1);
    report::check(
        "the poller wakes at the send (it runs at vCPU 0's next yield) and its poll returns 0",
        woken && POLL_RET.load(Ordering::SeqCst) == 0,
        format_args!(
            "poll {}, runstate {}",
            report::Ret(POLL_RET.load(Ordering::SeqCst)),
            runstate(1)
        ),
    );
    let down = support::yield_until(WAIT, || hc::vcpu_is_up(1) == 0);
    report::check(
        "vCPU 1 finished",
        down,
        format_args!("is_up {}", hc::vcpu_is_up(1)),
    );
    shared::set_upcall_pending_of(0, 0);
    report::check_ret("reset", hc::evtchn_reset(DomId::SELF.0), 0);
}
