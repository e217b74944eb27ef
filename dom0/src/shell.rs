//! Running the `xl`-like commands of [`toolstack::shell`], from a script
//! in the ramdisk or typed at the console ([`interactive`]). Each command
//! that changes something is a check, so a script's run compares between
//! Xen 4.17 and this hypervisor; what only shows state (`list`, `info`,
//! ...) prints plain lines, whose values (CPU time, memory) legitimately
//! differ.

use guest_pv_shim::dom0_abi::domctl::{DomInfoFlags, GetDomainInfo, SchedCredit};
use guest_pv_shim::dom0_abi::sched::ShutdownReason;
use guest_pv_shim::dom0_abi::xenstore::XenbusState;
use guest_pv_shim::{hypercall, println, report};
use toolstack::builder::Hypervisor;
use toolstack::cpio::Archive;
use toolstack::shell::{self, Command, Edit, HELP, LineEditor, Target};
use toolstack::xen::{self, Xen, domain_info};

use crate::domains::{Domains, NS};

/// Domains `list` shows at most.
const LIST_MAX: usize = 16;

/// The interactive shell's prompt.
pub const PROMPT: &str = "dom0> ";

/// Whether the shell goes on after a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    Next,
    Quit,
    /// `console <dom>`: typed input goes to this domain until Ctrl-].
    Attach(u16),
}

/// Runs every line of `script` (up to a `quit`).
pub fn run(script: &str, domains: &mut Domains, archive: &Archive<'static>) {
    for (index, line) in script.lines().enumerate() {
        let at = At(index + 1);
        match shell::parse(line) {
            Ok(None) => {}
            Ok(Some(command)) => {
                println!("xl> {}", line.trim());
                match execute(at, command, domains, archive) {
                    Flow::Next => {}
                    Flow::Quit => return,
                    Flow::Attach(_) => report::fail(
                        format_args!("{at}{}", line.trim()),
                        format_args!("console attaches at the interactive shell only"),
                    ),
                }
            }
            Err(e) => report::fail(format_args!("{at}{line:?}"), format_args!("{e}")),
        }
    }
}

/// Runs the commands typed at the console until `quit`, serving the
/// domUs' consoles and stores and reaping them in between. Input arrives
/// with `VIRQ_CONSOLE` on `console_port` and is read with `CONSOLEIO_read`.
pub fn interactive(domains: &mut Domains, archive: &Archive<'static>, console_port: u32) {
    println!("dom0 shell: 'help' lists the commands, 'quit' powers the machine off");
    hypercall::console_write(PROMPT.as_bytes());
    let mut editor = LineEditor::new();
    let mut entered = 0;
    let mut attached = None;
    loop {
        domains.poll_once();
        if let Some(id) = attached
            && domains.find(Target::Id(id)).is_none()
        {
            attached = detach(id, "is gone");
        }
        let mut typed = [0u8; 64];
        let n = usize::try_from(hypercall::console_read(&mut typed)).unwrap_or(0);
        if n == 0 {
            domains.sleep(Some(console_port));
            continue;
        }
        let mut typed = &typed[..n.min(typed.len())];
        if let Some(id) = attached {
            let (input, rest) = typed.split_at(
                typed
                    .iter()
                    .position(|&b| b == shell::CONSOLE_ESCAPE)
                    .unwrap_or(typed.len()),
            );
            // What does not fit in the domain's input ring is dropped, as
            // a serial line would.
            let _ = domains.console_input(id, input);
            if rest.is_empty() {
                continue;
            }
            attached = detach(id, "Ctrl-]");
            typed = &rest[1..];
        }
        for &byte in typed {
            if attached.is_some() {
                break;
            }
            match editor.push(byte) {
                Edit::Nothing => {}
                Edit::Echo(bytes) => {
                    hypercall::console_write(bytes);
                }
                Edit::EchoByte(byte) => {
                    hypercall::console_write(&[byte]);
                }
                Edit::Line => {
                    hypercall::console_write(b"\r\n");
                    entered += 1;
                    let flow = match shell::parse(editor.take_line()) {
                        Ok(None) => Flow::Next,
                        Ok(Some(command)) => execute(At(entered), command, domains, archive),
                        Err(e) => {
                            println!("{e}");
                            Flow::Next
                        }
                    };
                    match flow {
                        Flow::Quit => return,
                        Flow::Attach(id) => {
                            println!(
                                "dom0: attached to the console of domain {id} \
                                 (Ctrl-] returns to the shell)"
                            );
                            attached = Some(id);
                        }
                        Flow::Next => {
                            hypercall::console_write(PROMPT.as_bytes());
                        }
                    }
                }
            }
        }
    }
}

/// Leaves `console <dom>` (why: the escape key, or the domain went) and
/// shows the prompt again: no domain attached.
fn detach(id: u16, why: &str) -> Option<u16> {
    println!("\r\ndom0: detached from the console of domain {id} ({why})");
    hypercall::console_write(PROMPT.as_bytes());
    None
}

fn execute(
    at: At,
    command: Command<'_>,
    domains: &mut Domains,
    archive: &Archive<'static>,
) -> Flow {
    match command {
        Command::Quit => return Flow::Quit,
        Command::Create { config, paused } => {
            domains.create(archive, config, paused);
        }
        Command::Console(target) => match domains.find(target) {
            Some(domu) => {
                let id = domu.built.domid;
                report::ok_value(format_args!("{at}console {}", Shown(target)), id);
                return Flow::Attach(id);
            }
            None => report::fail(
                format_args!("{at}console {}", Shown(target)),
                format_args!("not a domain this dom0 serves"),
            ),
        },
        Command::Destroy(target) => {
            let done = domains.domid(target).is_some_and(|id| domains.destroy(id));
            report::check(
                format_args!("{at}destroy {}", Shown(target)),
                done,
                format_args!("not a domain this dom0 runs"),
            );
        }
        Command::Shutdown(target) => with_domid(at, domains, target, "shutdown", |id| {
            let ret = xen::remote_shutdown(id, ShutdownReason::Poweroff);
            report::check(
                format_args!("{at}shutdown {}", Shown(target)),
                ret.is_ok(),
                format_args!("{ret:?}"),
            );
        }),
        Command::Pause(target) => with_domid(at, domains, target, "pause", |id| {
            let ret = xen::pause(id);
            report::check(
                format_args!("{at}pause {}", Shown(target)),
                ret.is_ok(),
                format_args!("{ret:?}"),
            );
            check_paused(at, target, id);
        }),
        Command::Unpause(target) => with_domid(at, domains, target, "unpause", |id| {
            let ret = Xen.unpause(id);
            report::check(
                format_args!("{at}unpause {}", Shown(target)),
                ret.is_ok(),
                format_args!("{ret:?}"),
            );
            check_paused(at, target, id);
        }),
        Command::SchedCredit {
            target,
            weight,
            cap,
        } => {
            with_domid(at, domains, target, "sched-credit", |id| {
                sched_credit(at, target, id, weight, cap);
            });
        }
        Command::List => list(at, domains),
        Command::VcpuList(target) => vcpu_list(at, domains, target),
        Command::Info => info(at),
        Command::Dmesg => dmesg(at),
        Command::PciList => crate::devices::pci_list(at),
        Command::NetworkList(target) => network_list(at, domains, target),
        Command::Wait => domains.wait(),
        Command::CpuShare => crate::share::cpu_share(at, domains),
        Command::Scale { config, count } => crate::scale::scale(at, archive, config, count),
        Command::Help => HELP.iter().for_each(|line| println!("{line}")),
        Command::BlockList(target) => block_list(at, domains, target),
        Command::BlockAttach { target, spec } => match domains.domid(target) {
            Some(id) => block_attach(at, domains, target, id, spec),
            None => no_domain(at, "block-attach", target),
        },
        Command::BlockDetach { target, vdev } => match domains.domid(target) {
            Some(id) => block_detach(at, domains, target, id, vdev),
            None => no_domain(at, "block-detach", target),
        },
        Command::XenstoreLs(path) => xenstore_ls(at, domains, path),
        Command::XenstoreRead(path) => {
            let xs = &mut domains.xs;
            let value = toolstack::store::read(&mut xs.store, &mut xs.rings, path);
            match &value {
                Ok(bytes) => println!("{}", core::str::from_utf8(bytes).unwrap_or("(not UTF-8)")),
                Err(e) => println!("xenstore-read: {e}"),
            }
            report::ok_value(format_args!("{at}xenstore-read {path}"), Stored(&value));
        }
        Command::XenstoreWrite { path, value } => {
            let xs = &mut domains.xs;
            let done = toolstack::store::write_value(&mut xs.store, &mut xs.rings, path, value);
            report::ok_value(
                format_args!("{at}xenstore-write {path}"),
                Stored(&done.map(|()| b"OK".to_vec())),
            );
        }
    }
    Flow::Next
}

/// A store answer as a check value: the text, or the error's name.
struct Stored<'a>(&'a Result<alloc::vec::Vec<u8>, xenstore::XsError>);

impl core::fmt::Display for Stored<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Ok(bytes) => write!(
                f,
                "{:?}",
                core::str::from_utf8(bytes).unwrap_or("(not UTF-8)")
            ),
            Err(e) => write!(f, "{e}"),
        }
    }
}

/// `xenstore-ls`: prints the tree; the check is the number of nodes (the
/// values, ring frames among them, may differ between hypervisors).
fn xenstore_ls(at: At, domains: &mut Domains, path: &str) {
    let xs = &mut domains.xs;
    let mut nodes = 0u32;
    let listed = toolstack::store::ls(&mut xs.store, &mut xs.rings, path, &mut |line| {
        nodes += 1;
        println!("{line}");
    });
    match listed {
        Ok(()) => report::ok_value(format_args!("{at}xenstore-ls {path} nodes"), nodes),
        Err(e) => report::ok_value(format_args!("{at}xenstore-ls {path}"), e),
    }
}

/// How long `block-detach` waits for the front end to close.
const DETACH_TIMEOUT_NS: u64 = 10 * NS;

/// `block-list`: `xl block-list`'s columns, from the front ends' nodes
/// (`-1` where one is missing); the check is the number of devices (the
/// states, ports and references depend on timing and the hypervisor).
fn block_list(at: At, domains: &mut Domains, target: Option<Target<'_>>) {
    let domid = match target.map(|t| domains.domid(t)) {
        Some(None) => {
            report::fail(
                format_args!("{at}block-list"),
                format_args!("no such domain"),
            );
            return;
        }
        Some(id) => id,
        None => None,
    };
    let (blk, xs) = domains.blk();
    println!("Vdev  BE  handle state evt-ch ring-ref BE-path");
    let mut count = 0u32;
    for (dom, devid, backend) in blk.devices(domid) {
        let front = toolstack::store::vbd_frontend(dom, devid);
        let mut number = |key: &str| {
            toolstack::store::read(
                &mut xs.store,
                &mut xs.rings,
                &alloc::format!("{front}/{key}"),
            )
            .ok()
            .and_then(|v| core::str::from_utf8(&v).ok()?.parse::<i64>().ok())
            .unwrap_or(-1)
        };
        let (state, evtchn, ring_ref) =
            (number("state"), number("event-channel"), number("ring-ref"));
        println!("{devid:<5} 0   {dom:<6} {state:<5} {evtchn:<6} {ring_ref:<8} {backend}");
        count += 1;
    }
    report::ok_value(format_args!("{at}block-list devices"), count);
}

/// `block-attach`: the disk is parsed as a `disk` entry and hot-plugged.
fn block_attach(at: At, domains: &mut Domains, target: Target<'_>, id: u16, spec: &str) {
    let name = format_args!("{at}block-attach {} {spec}", Shown(target));
    let (blk, xs) = domains.blk();
    match toolstack::config::Disk::parse(spec).and_then(|disk| blk.hot_plug(xs, id, &disk)) {
        Ok(()) => report::ok_value(name, "attached"),
        Err(why) => report::fail(name, format_args!("{why}")),
    }
}

/// `block-detach`: a front end still in its handshake is first given the
/// time to connect (so that it is never told to close before it has
/// opened); then the back end goes `Closing`, and dom0 serves
/// everything until the front end has closed and the back end is
/// `Closed`. Each wait lasts at most [`DETACH_TIMEOUT_NS`]. Then the
/// device is forgotten and its nodes removed; a front end that did not
/// close in time is disconnected anyway.
fn block_detach(at: At, domains: &mut Domains, target: Target<'_>, id: u16, vdev: &str) {
    let name = format_args!("{at}block-detach {} {vdev}", Shown(target));
    let Some(devid) = guest_pv_shim::dom0_abi::blkif::xvd_devid(vdev).or_else(|| vdev.parse().ok())
    else {
        report::fail(name, format_args!("not a vdev (xvda..xvdp or its number)"));
        return;
    };
    let state = |d: &mut Domains| d.blk().0.state(id, devid);
    if state(domains).is_none() {
        report::fail(name, format_args!("no such device"));
        return;
    }
    let front = toolstack::store::vbd_frontend(id, devid);
    serve_while(domains, |d| {
        let xs = &mut d.xs;
        let value = toolstack::store::read(
            &mut xs.store,
            &mut xs.rings,
            &alloc::format!("{front}/state"),
        );
        let front = value
            .ok()
            .and_then(|v| guest_pv_shim::xenbus::parse_state(&v));
        front.is_some_and(|s| (s as u32) < XenbusState::Connected as u32)
    });
    let (blk, xs) = domains.blk();
    if let Err(why) = blk.unplug(xs, id, devid) {
        report::fail(name, format_args!("{why}"));
        return;
    }
    let closed = |d: &mut Domains| state(d) == Some(XenbusState::Closed);
    serve_while(domains, |d| !closed(d));
    let outcome = if closed(domains) {
        "closed by the front end"
    } else {
        "forced: the front end did not close"
    };
    let (blk, xs) = domains.blk();
    blk.remove(xs, id, devid);
    report::ok_value(name, outcome);
}

/// Serves the domUs while `pending` holds, at most [`DETACH_TIMEOUT_NS`].
fn serve_while(domains: &mut Domains, mut pending: impl FnMut(&mut Domains) -> bool) {
    let deadline = crate::domains::now() + DETACH_TIMEOUT_NS;
    while pending(domains) && crate::domains::now() < deadline {
        domains.poll_once();
        domains.sleep(None);
    }
}

/// The script line a check comes from: check names stay unique when a
/// command repeats.
#[derive(Clone, Copy)]
pub struct At(usize);

impl core::fmt::Display for At {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "[{}] ", self.0)
    }
}

/// A target as the user wrote it.
struct Shown<'a>(Target<'a>);

impl core::fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Target::Id(id) => write!(f, "{id}"),
            Target::Name(name) => f.write_str(name),
        }
    }
}

/// Runs `f` with the id `target` names, or fails the command.
fn with_domid(at: At, domains: &Domains, target: Target<'_>, what: &str, f: impl FnOnce(u16)) {
    match domains.domid(target) {
        Some(id) => f(id),
        None => no_domain(at, what, target),
    }
}

/// Fails command `what` on `target`: no such domain.
fn no_domain(at: At, what: &str, target: Target<'_>) {
    report::fail(
        format_args!("{at}{what} {}", Shown(target)),
        format_args!("no such domain"),
    );
}

/// Whether domain `id` is paused by the controller.
fn paused(id: u16) -> bool {
    domain_info(id).is_ok_and(|i| i.domain == id && i.dominf().contains(DomInfoFlags::PAUSED))
}

/// Reports whether the domain is paused now (the value is compared with
/// Xen's).
fn check_paused(at: At, target: Target<'_>, id: u16) {
    report::ok_value(format_args!("{at}{} paused", Shown(target)), paused(id));
}

fn sched_credit(at: At, target: Target<'_>, id: u16, weight: Option<u16>, cap: Option<u16>) {
    let sched_id = match xen::sched_id() {
        Ok(s) => s,
        Err(e) => {
            report::fail(
                format_args!("{at}sched-credit {}", Shown(target)),
                format_args!("{e}"),
            );
            return;
        }
    };
    let put = (weight.is_some() || cap.is_some()).then(|| SchedCredit {
        // 0 and (credit) 0xFFFF mean "unchanged".
        weight: weight.unwrap_or(0),
        cap: cap.unwrap_or(
            if sched_id == guest_pv_shim::dom0_abi::domctl::XEN_SCHEDULER_CREDIT {
                u16::MAX
            } else {
                0
            },
        ),
    });
    match xen::sched_credit(id, sched_id, put) {
        Ok(now) => {
            println!("dom0: domain {id}: weight {} cap {}", now.weight, now.cap);
            if let Some(w) = weight {
                report::check_eq(
                    format_args!("{at}sched-credit {} weight", Shown(target)),
                    now.weight,
                    w,
                );
            }
            if let Some(c) = cap {
                report::check_eq(
                    format_args!("{at}sched-credit {} cap", Shown(target)),
                    now.cap,
                    c,
                );
            }
        }
        Err(e) => report::fail(
            format_args!("{at}sched-credit {}", Shown(target)),
            format_args!("{e}"),
        ),
    }
}

/// The name dom0 knows a domain by.
fn name_of(domains: &Domains, id: u16) -> &'static str {
    if id == 0 {
        return "Domain-0";
    }
    domains
        .find(Target::Id(id))
        .map_or("(unknown)", |d| d.cfg.name)
}

fn list(at: At, domains: &Domains) {
    let mut infos = [GetDomainInfo::default(); LIST_MAX];
    let n = match xen::domain_list(0, &mut infos) {
        Ok(n) => n,
        Err(e) => {
            report::fail(format_args!("{at}list"), format_args!("{e}"));
            return;
        }
    };
    println!("Name                ID   Mem VCPUs\tState\tTime(s)");
    for info in &infos[..n] {
        let state = shell::state(info.dominf(), info.shutdown_code());
        println!(
            "{:<16} {:>5} {:>5} {:>5}\t{}\t{}.{}",
            name_of(domains, info.domain),
            info.domain,
            info.tot_pages / 256,
            info.nr_online_vcpus,
            core::str::from_utf8(&state).unwrap_or("??????"),
            info.cpu_time / NS,
            info.cpu_time % NS / 100_000_000,
        );
    }
    // Which domains exist is the same on every hypervisor.
    report::ok_value(format_args!("{at}list domains"), n);
}

/// `network-list [<dom>]`: the vifs of one served domU or of every one,
/// in `xl network-list`'s columns, from what the xenstore says of them;
/// the check is the number of vifs.
fn network_list(at: At, domains: &mut Domains, target: Option<Target<'_>>) {
    let wanted = match target {
        Some(t) => match domains.find(t) {
            Some(domu) => Some(domu.built.domid),
            None => {
                report::fail(
                    format_args!("{at}network-list {}", Shown(t)),
                    format_args!("no such domain"),
                );
                return;
            }
        },
        None => None,
    };
    let with_vif: alloc::vec::Vec<u16> = domains
        .iter()
        .filter(|d| d.cfg.vif.is_some() && wanted.is_none_or(|w| w == d.built.domid))
        .map(|d| d.built.domid)
        .collect();
    println!("{}", shell::NETWORK_LIST_HEADER);
    let xs = &mut domains.xs;
    let mut read = |path: &str| toolstack::store::read(&mut xs.store, &mut xs.rings, path).ok();
    for &domid in &with_vif {
        // One vif per domain today (devid 0).
        let frontend = toolstack::store::vif_frontend(domid, 0);
        let number = |value: Option<alloc::vec::Vec<u8>>| shell::vif_number(value.as_deref());
        let backend = read(&alloc::format!("{frontend}/backend")).unwrap_or_default();
        let backend = core::str::from_utf8(&backend).unwrap_or("?");
        let mac = read(&alloc::format!("{backend}/mac")).unwrap_or_default();
        let row = shell::VifRow {
            devid: 0,
            backend_id: number(read(&alloc::format!("{frontend}/backend-id"))),
            mac: core::str::from_utf8(&mac).unwrap_or("?"),
            state: number(read(&alloc::format!("{frontend}/state"))),
            evtchn: number(read(&alloc::format!("{frontend}/event-channel"))),
            tx_ring_ref: number(read(&alloc::format!("{frontend}/tx-ring-ref"))),
            rx_ring_ref: number(read(&alloc::format!("{frontend}/rx-ring-ref"))),
            backend,
        };
        println!("{row}");
    }
    report::ok_value(format_args!("{at}network-list vifs"), with_vif.len());
}

fn vcpu_list(at: At, domains: &Domains, target: Option<Target<'_>>) {
    let mut infos = [GetDomainInfo::default(); LIST_MAX];
    let n = match (target, target.and_then(|t| domains.domid(t))) {
        (Some(_), None) => {
            report::fail(
                format_args!("{at}vcpu-list"),
                format_args!("no such domain"),
            );
            return;
        }
        (Some(_), Some(id)) => match domain_info(id) {
            Ok(info) if info.domain == id => {
                infos[0] = info;
                1
            }
            _ => 0,
        },
        (None, _) => xen::domain_list(0, &mut infos).unwrap_or(0),
    };
    println!("Name                ID  VCPU   CPU State   Time(s)");
    for info in &infos[..n] {
        let max = if info.max_vcpu_id == u32::MAX {
            0
        } else {
            info.max_vcpu_id + 1
        };
        for vcpu in 0..max {
            if let Ok(v) = xen::vcpu_info(info.domain, vcpu) {
                let state = match (v.online, v.running, v.blocked) {
                    (0, _, _) => "---",
                    (_, 1, _) => "r--",
                    (_, _, 1) => "-b-",
                    _ => "--p",
                };
                println!(
                    "{:<16} {:>5} {:>5} {:>5} {}   {}.{}",
                    name_of(domains, info.domain),
                    info.domain,
                    vcpu,
                    v.cpu,
                    state,
                    v.cpu_time / NS,
                    v.cpu_time % NS / 100_000_000,
                );
            }
        }
    }
}

fn info(at: At) {
    match xen::physinfo() {
        Ok(p) => {
            println!("nr_cpus                : {}", p.nr_cpus);
            println!("cores_per_socket       : {}", p.cores_per_socket);
            println!("threads_per_core       : {}", p.threads_per_core);
            println!("cpu_mhz                : {}", p.cpu_khz / 1000);
            println!("total_memory           : {}", p.total_pages / 256);
            println!("free_memory            : {}", p.free_pages / 256);
            println!("capabilities           : {:#x}", p.capabilities);
            report::ok(format_args!("{at}info physinfo"));
        }
        Err(e) => report::fail(format_args!("{at}info physinfo"), format_args!("{e}")),
    }
    match xen::sched_id() {
        Ok(id) => {
            println!("sched_id               : {id}");
            report::ok(format_args!("{at}info sched_id"));
        }
        Err(e) => report::fail(format_args!("{at}info sched_id"), format_args!("{e}")),
    }
    let version = hypercall::xenver_version();
    println!(
        "xen_version            : {}.{}",
        version >> 16,
        version & 0xFFFF
    );
}

fn dmesg(at: At) {
    let mut buf = [0u8; 1024];
    let (ret, n) = hypercall::sysctl_readconsole(&mut buf);
    if ret != 0 {
        report::fail(
            format_args!("{at}dmesg"),
            format_args!("readconsole returned {ret}"),
        );
        return;
    }
    let n = usize::try_from(n).unwrap_or(0).min(buf.len());
    hypercall::console_write(&buf[..n]);
    if n > 0 && buf[n - 1] != b'\n' {
        println!();
    }
    report::ok(format_args!("{at}dmesg readconsole"));
}
