//! dom0's table of running domUs: creating them, serving their consoles
//! and xenstore rings, noticing shutdowns and reaping.

use guest_pv_shim::dom0_abi::domctl::DomInfoFlags;
use guest_pv_shim::dom0_abi::event_channel::EvtchnBindInterdomain;
use guest_pv_shim::dom0_abi::sched::ShutdownReason;
use guest_pv_shim::{hypercall, report, shared};
use toolstack::builder::{self, Built, HvError, Hypervisor};
use toolstack::config::{Action, DomainConfig};
use toolstack::console::ConsoleOutput;
use toolstack::cpio::Archive;
use toolstack::shell::Target;
use toolstack::xen::{CONSOLE_WINDOW_BASE, ConsoleRing, Xen, domain_info};

use crate::blkback_xen::{Blkback, MAX_VBDS};
use crate::grants::Grants;
use crate::netback::{MAX_VIFS, Netback};
use crate::store::Xenstore;

/// Domains served at once (one mapping window each).
pub const MAX_DOMUS: usize = 8;
/// Pages of the largest domU (256 MiB): the p2m buffer's size.
const P2M_CAPACITY: usize = 65536;
/// Nanoseconds per second.
pub const NS: u64 = 1_000_000_000;
/// How long one poll sleeps before dom0 rescans everything.
const POLL_NS: u64 = 100_000_000;

/// The MFNs of the domU being built (one build at a time).
static P2M: spin::Mutex<[u64; P2M_CAPACITY]> = spin::Mutex::new([0; P2M_CAPACITY]);

/// A domU and its console back end.
pub struct Domu {
    /// Its configuration (strings borrow from the ramdisk).
    pub cfg: DomainConfig<'static>,
    /// What the builder made.
    pub built: Built,
    /// dom0's end of the console event channel.
    local_port: u32,
    ring: ConsoleRing,
    output: ConsoleOutput,
    /// The grants dom0 holds of it (the grant test).
    grants: Grants,
}

/// The current system time in ns.
pub fn now() -> u64 {
    shared::system_time_of(0).unwrap_or(0)
}

/// The domUs dom0 serves.
pub struct Domains {
    slots: [Option<Domu>; MAX_DOMUS],
    virq_port: u32,
    /// A domain may have shut down: `VIRQ_DOM_EXC` fired, or a sleep
    /// ended without any event (so a lost notification costs one sleep,
    /// not a stuck domain). Only then are the domUs asked for their state.
    reap_due: bool,
    expect: Option<&'static str>,
    timeout_s: u64,
    /// The xenstore every domU is introduced to.
    pub xs: Xenstore,
    /// The split drivers' back ends.
    back: Backends,
}

/// dom0's split-driver back ends.
#[derive(Default)]
struct Backends {
    /// The vifs' back ends and their bridge.
    net: Netback,
    /// The block back end of every domU's disks.
    blk: Blkback,
}

impl Domains {
    /// An empty table; `VIRQ_DOM_EXC` is bound to `virq_port`.
    pub fn new(virq_port: u32, expect: Option<&'static str>, timeout_s: u64) -> Domains {
        Domains {
            slots: [const { None }; MAX_DOMUS],
            virq_port,
            reap_due: true,
            expect,
            timeout_s,
            xs: Xenstore::new(),
            back: Backends::default(),
        }
    }

    /// The block back end and the store (the shell's block commands).
    pub fn blk(&mut self) -> (&mut Blkback, &mut Xenstore) {
        (&mut self.back.blk, &mut self.xs)
    }

    /// Every domU being served.
    pub fn iter(&self) -> impl Iterator<Item = &Domu> {
        self.slots.iter().flatten()
    }

    /// The domU `target` names.
    pub fn find(&self, target: Target<'_>) -> Option<&Domu> {
        self.iter().find(|d| match target {
            Target::Id(id) => d.built.domid == id,
            Target::Name(name) => d.cfg.name == name,
        })
    }

    /// The id of the domain `target` names: a served domU, or any id.
    pub fn domid(&self, target: Target<'_>) -> Option<u16> {
        match target {
            Target::Id(id) => Some(id),
            Target::Name(_) => self.find(target).map(|d| d.built.domid),
        }
    }

    /// Parses `file` of the ramdisk, builds the domain, connects its
    /// console and, unless `paused`, unpauses it. Reports every failure.
    pub fn create(&mut self, archive: &Archive<'static>, file: &str, paused: bool) -> Option<u16> {
        let Some(slot) = self.slots.iter().position(Option::is_none) else {
            report::fail(
                format_args!("create {file}"),
                format_args!("more than {MAX_DOMUS} domains"),
            );
            return None;
        };
        let (cfg, kernel) = load(archive, file)?;
        let mut xen = Xen;
        let built = match build(&cfg, kernel) {
            Ok(built) => built,
            Err(e) => {
                report::fail(cfg.name, format_args!("build: {e}"));
                return None;
            }
        };
        report::ok_value(format_args!("create {} domain id", cfg.name), built.domid);
        if let Err(e) = self.xs.introduce(&cfg, &built) {
            report::fail(
                format_args!("introduce {} to xenstore", cfg.name),
                format_args!("{e}"),
            );
            self.xs.release(built.domid);
            let _ = xen.destroy(built.domid);
            return None;
        }
        if let Some(vif) = &cfg.vif {
            self.back.net.add(&mut self.xs, built.domid, vif);
        }
        self.back.blk.attach(&mut self.xs, built.domid, &cfg);
        match connect(&built, CONSOLE_WINDOW_BASE + slot, paused) {
            Ok((local_port, ring)) => {
                guest_pv_shim::println!(
                    "dom0: {} is domain {}: {} MiB, {} vCPU(s), entry {:#x}{}",
                    cfg.name,
                    built.domid,
                    cfg.memory_mib,
                    cfg.vcpus,
                    built.entry,
                    if paused { ", paused" } else { "" }
                );
                let output = ConsoleOutput::new(built.domid);
                self.slots[slot] = Some(Domu {
                    cfg,
                    built,
                    local_port,
                    ring,
                    output,
                    grants: Grants::default(),
                });
                Some(built.domid)
            }
            Err(e) => {
                report::fail(format_args!("start {}", cfg.name), format_args!("{e}"));
                self.back.net.remove(built.domid);
                self.back.blk.detach(built.domid);
                self.xs.release(built.domid);
                let _ = xen.destroy(built.domid);
                None
            }
        }
    }

    /// Destroys the served domU `domid` now (after a last console read).
    pub fn destroy(&mut self, domid: u16) -> bool {
        match self
            .slots
            .iter_mut()
            .find(|s| s.as_ref().is_some_and(|d| d.built.domid == domid))
        {
            Some(slot) => {
                if let Some(domu) = slot.take() {
                    destroy(domu, &mut self.xs, &mut self.back, "destroyed");
                }
                true
            }
            None => false,
        }
    }

    /// Writes `bytes` into the console input of the served domU `domid`
    /// and notifies it: how many fitted; `None` if it is not served.
    pub fn console_input(&mut self, domid: u16, bytes: &[u8]) -> Option<usize> {
        let domu = self
            .slots
            .iter_mut()
            .flatten()
            .find(|d| d.built.domid == domid)?;
        let written = toolstack::console::push_input(&mut domu.ring, bytes);
        hypercall::evtchn_send(domu.local_port);
        Some(written)
    }

    /// Destroys every domU still served.
    pub fn destroy_all(&mut self) {
        for domu in self.slots.iter_mut().filter_map(Option::take) {
            destroy(domu, &mut self.xs, &mut self.back, "destroyed");
        }
    }

    /// Makes `uplink` (the machine's NIC) a port of the vifs' bridge.
    pub fn set_uplink(&mut self, uplink: crate::netback::Uplink) {
        self.back.net.set_uplink(uplink);
    }

    /// Serves consoles and reaps domains until no domU is left or time
    /// runs out.
    pub fn wait(&mut self) {
        let deadline = now().saturating_add(self.timeout_s.saturating_mul(NS));
        loop {
            self.poll_once();
            if self.slots.iter().all(Option::is_none) {
                return;
            }
            if now() > deadline {
                for domu in self.iter() {
                    report::fail(
                        format_args!("{} shuts down", domu.cfg.name),
                        format_args!("still running after {} s", self.timeout_s),
                    );
                }
                return;
            }
            self.sleep(None);
        }
    }

    /// One round: every console read, every xenstore ring served, every
    /// block ring and vif served (the store again after the back ends'
    /// writes), every shut-down domain reaped (looked for only after
    /// `VIRQ_DOM_EXC` or a sleep without events: asking each domU costs a
    /// `domctl` apiece).
    pub fn poll_once(&mut self) {
        self.serve();
        let dom_exc = shared::clear_evtchn_pending(self.virq_port) == Some(true);
        if !core::mem::take(&mut self.reap_due) && !dom_exc {
            return;
        }
        for slot in &mut self.slots {
            if slot.as_ref().is_some_and(shut_down)
                && let Some(domu) = slot.take()
            {
                reap(domu, &mut self.xs, &mut self.back, self.expect);
            }
        }
    }

    /// Every console read, every xenstore ring served, every block ring
    /// and vif served (the store again if the back ends' writes queued
    /// watch events; a request that arrives meanwhile has its event
    /// pending for the next sleep).
    pub fn serve(&mut self) {
        for domu in self.slots.iter_mut().flatten() {
            drain(domu);
        }
        self.xs.serve();
        self.back.blk.poll(&mut self.xs);
        if self.xs.has_output() {
            self.xs.serve();
        }
        if self.back.net.poll(&mut self.xs) {
            self.xs.serve();
        }
    }

    /// The timeout of [`Domains::wait`], in seconds.
    pub fn timeout_s(&self) -> u64 {
        self.timeout_s
    }

    /// Sleeps until a console, xenstore, vif, block ring or `VIRQ_DOM_EXC`
    /// event (or one on `extra`), or 100 ms; not at all while a vif has
    /// frames or a block ring requests left over from the last round.
    pub fn sleep(&mut self, extra: Option<u32>) {
        if self.back.net.busy() || self.back.blk.busy() {
            return;
        }
        let mut ports = [0u32; 2 * MAX_DOMUS + MAX_VIFS + MAX_VBDS + 2];
        let mut n = 0;
        let domus = self
            .iter()
            .map(|d| d.local_port)
            .chain(self.xs.ports())
            .chain(self.back.net.event_ports())
            .chain(self.back.blk.ports());
        for port in domus.chain([self.virq_port]).chain(extra) {
            ports[n] = port;
            n += 1;
        }
        hypercall::sched_poll(&ports[..n], now().saturating_add(POLL_NS));
        let mut woken = false;
        for &port in &ports[..n] {
            if shared::clear_evtchn_pending(port) == Some(true) {
                woken = true;
                self.reap_due |= port == self.virq_port;
            }
        }
        self.reap_due |= !woken;
    }
}

/// Reads configuration `file` of the ramdisk and finds the kernel it
/// names; reports what is wrong.
pub fn load(
    archive: &Archive<'static>,
    file: &str,
) -> Option<(DomainConfig<'static>, &'static [u8])> {
    let Some(entry) = archive.find(file) else {
        report::fail(
            format_args!("create {file}"),
            format_args!("no such file in the ramdisk"),
        );
        return None;
    };
    let cfg = match core::str::from_utf8(entry.data).map(DomainConfig::parse) {
        Ok(Ok(cfg)) => cfg,
        Ok(Err(e)) => {
            report::fail(format_args!("create {file}"), format_args!("{e}"));
            return None;
        }
        Err(_) => {
            report::fail(format_args!("create {file}"), format_args!("not UTF-8"));
            return None;
        }
    };
    let Some(kernel) = archive.find(cfg.kernel) else {
        report::fail(
            cfg.name,
            format_args!("kernel {:?} is not in the ramdisk", cfg.kernel),
        );
        return None;
    };
    Some((cfg, kernel.data))
}

/// Builds a domain of `cfg` running `kernel` (left paused).
pub fn build(cfg: &DomainConfig<'_>, kernel: &[u8]) -> Result<Built, builder::BuildError> {
    builder::build(&mut Xen, cfg, kernel, &mut P2M.lock()[..])
}

/// Binds the console's event channel, maps its ring and (unless `paused`)
/// unpauses the domain.
fn connect(built: &Built, window: usize, paused: bool) -> Result<(u32, ConsoleRing), HvError> {
    let local_port = bind_interdomain(built.domid, built.console_port).map_err(|ret| HvError {
        op: "bind_interdomain",
        ret,
    })?;
    let ring = ConsoleRing::map(window, built.domid, built.console_mfn)?;
    if !paused {
        Xen.unpause(built.domid)?;
    }
    Ok((local_port, ring))
}

/// Binds dom0's end of an event channel to `remote_port` of `remote_dom`:
/// dom0's port, or the hypercall's error.
pub fn bind_interdomain(remote_dom: u16, remote_port: u32) -> Result<u32, i64> {
    let mut bind = EvtchnBindInterdomain {
        remote_dom,
        pad: 0,
        remote_port,
        local_port: 0,
    };
    match hypercall::evtchn_bind_interdomain(&mut bind) {
        0 => Ok(bind.local_port),
        ret => Err(ret),
    }
}

/// Prints what the domain's console has, and tells it the ring has room.
/// A line `check: <name> = <value>` from a test domU also becomes one of
/// dom0's checks, `<domain name> <name> = <value>`.
fn drain(domu: &mut Domu) {
    let (name, domid, grants) = (domu.cfg.name, domu.built.domid, &mut domu.grants);
    let consumed = domu.output.drain(&mut domu.ring, &mut |line, text| {
        show(name, line, text);
        grants.on_line(domid, name, text);
        crate::pingpong::on_line(domid, name, text);
        crate::readbench::on_line(text);
    });
    if consumed > 0 {
        hypercall::evtchn_send(domu.local_port);
    }
}

/// Prints one console line; reports it if it is a check line (a grant
/// test line is acted on by the caller). A test guest's result line
/// (`Test result: <status>`) becomes dom0's check that it is `SUCCESS`
/// instead of being printed: the run has one result line, dom0's.
fn show(name: &str, line: &[u8], text: &[u8]) {
    if let Some(status) = toolstack::console::parse_result(text) {
        report::check_eq(format_args!("{name} test result"), status, "SUCCESS");
        return;
    }
    hypercall::console_write(line);
    if let Some((check, value)) = toolstack::console::parse_check(text) {
        report::ok_value(format_args!("{name} {check}"), value);
    }
}

/// Whether the domain has shut down (all its vCPUs stopped).
fn shut_down(domu: &Domu) -> bool {
    has_shut_down(domu.built.domid)
}

/// Whether domain `domid` exists and has shut down.
pub fn has_shut_down(domid: u16) -> bool {
    domain_info(domid)
        .is_ok_and(|i| i.domain == domid && i.dominf().contains(DomInfoFlags::SHUTDOWN))
}

/// Reports a shut-down domain and destroys or preserves it.
fn reap(mut domu: Domu, xs: &mut Xenstore, back: &mut Backends, expect: Option<&str>) {
    drain(&mut domu);
    domu.output
        .flush(&mut |line, text| show(domu.cfg.name, line, text));
    let domid = domu.built.domid;
    let code = domain_info(domid).map_or(u32::MAX, |i| i.shutdown_code());
    let reason =
        ShutdownReason::from_number(u64::from(code)).map_or("unknown", ShutdownReason::name);
    report::check(
        format_args!("{} printed on its console", domu.cfg.name),
        domu.output.lines() > 0,
        format_args!("no output from domain {domid}"),
    );
    match expect {
        Some(want) => {
            report::check_eq(
                format_args!("{} shutdown reason", domu.cfg.name),
                reason,
                want,
            );
        }
        None => report::ok_value(format_args!("{} shutdown reason", domu.cfg.name), reason),
    }
    let action = if code == ShutdownReason::Crash as u32 {
        domu.cfg.on_crash
    } else {
        domu.cfg.on_poweroff
    };
    if action == Action::Preserve {
        guest_pv_shim::println!(
            "dom0: domain {domid} ({}) preserved ({reason})",
            domu.cfg.name
        );
        return;
    }
    destroy(domu, xs, back, reason);
}

/// Reads the console a last time, disconnects it, the vif, the disks and
/// the store, destroys the domain and checks it is gone.
fn destroy(mut domu: Domu, xs: &mut Xenstore, back: &mut Backends, why: &str) {
    drain(&mut domu);
    domu.output
        .flush(&mut |line, text| show(domu.cfg.name, line, text));
    let domid = domu.built.domid;
    let name = domu.cfg.name;
    let unmapped = domu.ring.unmap();
    report::check(
        format_args!("{name} console unmapped"),
        unmapped.is_ok(),
        format_args!("{unmapped:?}"),
    );
    report::check_ret(
        format_args!("{name} console port closed"),
        hypercall::evtchn_close(domu.local_port),
        0,
    );
    back.net.remove(domid);
    xs.serve();
    back.blk.detach(domid);
    xs.release(domid);
    let destroyed = Xen.destroy(domid);
    report::check(
        format_args!("destroy {name}"),
        destroyed.is_ok(),
        format_args!("{destroyed:?}"),
    );
    // Gone, or at least dying: getdomaininfo reports another domain, none,
    // or this one marked dying.
    let gone = domain_info(domid).map_or(true, |i| {
        i.domain != domid || i.dominf().contains(DomInfoFlags::DYING)
    });
    report::check(
        format_args!("{name} is gone after destroy"),
        gone,
        format_args!("domain {domid} still listed"),
    );
    // Unless dom0 keeps one of its pages on purpose (the grant test), no
    // back end may still hold a frame of it (blkback's persistent grants
    // are unmapped on detach): still listed, it owns no page.
    if !domu.grants.holds() {
        let returned = domain_info(domid).map_or(true, |i| i.domain != domid || i.tot_pages == 0);
        report::check(
            format_args!("{name}'s frames all returned after destroy"),
            returned,
            format_args!("domain {domid} still owns pages"),
        );
    }
    guest_pv_shim::println!("dom0: domain {domid} ({name}) destroyed ({why})");
    domu.grants.after_destroy(domid, name);
}
