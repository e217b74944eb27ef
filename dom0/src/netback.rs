//! dom0's network back end and bridge: every domU's vif is a port of one
//! learning bridge (`toolstack::bridge`); the ring logic is
//! `toolstack::netback`, this module its hypercalls: the rings mapped by
//! grant (two windows per vif), data moved with `GNTTABOP_copy` through
//! dom0's staging pages, one interdomain event channel per vif. The RX
//! copies of a round (every frame the bridge sends to a vif, from the
//! wire or from another vif) run in one `GNTTABOP_copy` at the end of the
//! round, or when their pages run out; only then are their responses
//! published. A vif's frame waits in a staging page; a frame from the
//! wire is copied straight out of the card's receive page, which the
//! driver lends until the round's copies have run ([`nic::Lent`]).
//!
//! The handshake follows `xl` and Linux's netback: the toolstack writes
//! the vif's nodes ([`toolstack::store::add_vif`]), [`Netback::add`]
//! publishes the back end's features and InitWait; once the front end
//! is Connected its keys are read, the rings mapped and the port bound,
//! and the back end turns Connected. A front end that breaks the
//! protocol is disconnected (rings unmapped, port closed, back end state
//! Closing) with a logged reason; the other vifs carry on.
//!
//! With `nic` on dom0's command line the machine's virtio-net card joins
//! the bridge as one more port, the uplink ([`Uplink`]): frames the bridge
//! sends to it go out through the driver, frames it receives are
//! forwarded like a vif's. It is served from the same loop, woken by its
//! PIRQ's event channel; a device error is logged and takes the uplink
//! down, never dom0.

use alloc::string::String;
use alloc::vec::Vec;

use guest_pv_shim::dom0_abi::event_channel::EvtchnBindInterdomain;
use guest_pv_shim::dom0_abi::grant_table::{
    GNTCOPY_DEST_GREF, GNTCOPY_SOURCE_GREF, GntmapFlags, GnttabCopy, GnttabCopyPtr,
    GnttabMapGrantRef, GnttabUnmapGrantRef, GrantStatus,
};
use guest_pv_shim::dom0_abi::netif::keys;
use guest_pv_shim::dom0_abi::types::DomId;
use guest_pv_shim::dom0_abi::xenstore::XenbusState;
use guest_pv_shim::ring::WindowMemory;
use guest_pv_shim::xenbus::parse_state;
use guest_pv_shim::{hypercall, mm, report};
use toolstack::bridge::{Bridge, Forward, NetDevice, Offload};
use toolstack::config::VifConfig;
use toolstack::netback::{Fault, FrontendKeys, GrantCopier, Vif, frontend_keys};
use toolstack::store::{add_vif, vif_backend, vif_backend_probe, vif_frontend};
use toolstack::xen::{BLKBACK_WINDOW_BASE, NET_WINDOW_BASE};

use guest_pv_shim::devices::{self, Devices};
use guest_pv_shim::drivers::net::{self as nic, NetDevice as _, VirtioNet};
use guest_pv_shim::drivers::pci;

use crate::domains::now;
use crate::store::Xenstore;

/// Vifs served at once (two windows each).
pub const MAX_VIFS: usize = 8;
const _: () = assert!(NET_WINDOW_BASE + 2 * MAX_VIFS <= BLKBACK_WINDOW_BASE);
/// Frames taken from one vif per round, so that a front end that keeps
/// its TX ring full cannot keep dom0 from everything else.
const TX_BUDGET: usize = 64;
/// Bytes of an Ethernet header: the two addresses and the type.
const ETHERNET_HEADER: usize = 14;
/// The bridge's port number of the uplink (after the vifs' slots).
const UPLINK: usize = MAX_VIFS;

/// Frames staged at once: each frame of a round stays in its page until
/// the round's RX copies have run.
const STAGED: usize = 32;

/// The pages frames pass through (page-aligned: one frame each).
#[repr(C, align(4096))]
struct Staging([[u8; 4096]; STAGED]);

static STAGING: spin::Mutex<Staging> = spin::Mutex::new(Staging([[0; 4096]; STAGED]));

/// `GNTTABOP_copy` between dom0's memory and domUs' grants.
struct Copier;

/// `bytes` (within one page of dom0's) as a copy end: its frame and
/// offset.
fn own(bytes: &[u8]) -> Option<GnttabCopyPtr> {
    let va = bytes.as_ptr() as u64;
    if (va & 0xfff) + bytes.len() as u64 > 4096 {
        return None;
    }
    Some(own_at((mm::virt_to_mfn(va & !0xfff)? << 12) | (va & 0xfff)))
}

/// The byte at machine address `maddr`, in a frame of dom0's, as a copy
/// end.
fn own_at(maddr: u64) -> GnttabCopyPtr {
    GnttabCopyPtr {
        u: maddr >> 12,
        domid: DomId::SELF.0,
        offset: (maddr & 0xfff) as u16,
        pad: 0,
    }
}

fn copy(source: GnttabCopyPtr, dest: GnttabCopyPtr, len: usize, flags: u16) -> Result<(), i16> {
    let mut op = GnttabCopy {
        source,
        dest,
        len: u16::try_from(len).map_err(|_| GrantStatus::GeneralError as i16)?,
        flags,
        ..GnttabCopy::default()
    };
    let ret = hypercall::gnttab_copy(core::slice::from_mut(&mut op));
    match (ret, op.status) {
        (0, 0) => Ok(()),
        (0, status) => Err(status),
        _ => Err(GrantStatus::GeneralError as i16),
    }
}

/// Grant `gref` of `domid` at `offset` as a copy end.
fn granted(domid: u16, gref: u32, offset: u16) -> GnttabCopyPtr {
    GnttabCopyPtr {
        u: u64::from(gref),
        domid,
        offset,
        pad: 0,
    }
}

impl GrantCopier for Copier {
    fn copy_in(&mut self, domid: u16, gref: u32, offset: u16, out: &mut [u8]) -> Result<(), i16> {
        let dest = own(out).ok_or(GrantStatus::GeneralError as i16)?;
        let source = granted(domid, gref, offset);
        copy(source, dest, out.len(), GNTCOPY_SOURCE_GREF)
    }

    fn copy_out(&mut self, domid: u16, gref: u32, offset: u16, data: &[u8]) -> Result<(), i16> {
        let source = own(data).ok_or(GrantStatus::GeneralError as i16)?;
        copy(
            source,
            granted(domid, gref, offset),
            data.len(),
            GNTCOPY_DEST_GREF,
        )
    }
}

/// A connected vif: its rings, their grant mappings and its port.
struct Link {
    vif: Vif<WindowMemory>,
    /// The RX copies queued for the round's batch, in the order the
    /// vif took their buffers.
    rx_copies: Vec<GnttabCopy>,
    handles: [u32; 2],
    port: u32,
}

/// Where a vif is in its handshake.
enum Phase {
    /// Back end in InitWait, waiting for the front end.
    Waiting,
    /// Both Connected.
    Connected(Link),
    /// Disconnected for a fault; the back end's state not yet Closing.
    Faulted,
    /// Disconnected (or never connected) for good.
    Closed,
}

/// One vif: a port of the bridge.
struct Port {
    domid: u16,
    backend: String,
    frontend: String,
    phase: Phase,
}

impl NetDevice for Port {
    /// Takes the vif's next RX buffer for `frame` and queues its copy for
    /// the round's batch ([`Netback::run_rx_copies`]): `frame` must stay
    /// where it is until then.
    fn transmit(&mut self, frame: &[u8], offload: Offload) -> bool {
        own(frame).is_some_and(|source| self.queue_copy(source, frame.len(), offload))
    }
}

impl Port {
    /// Takes the vif's next RX buffer for the `len`-byte frame at `source`
    /// (a page of dom0's) and queues its copy for the round's batch.
    fn queue_copy(&mut self, source: GnttabCopyPtr, len: usize, offload: Offload) -> bool {
        let Phase::Connected(link) = &mut self.phase else {
            return false;
        };
        let Ok(copy_len) = u16::try_from(len) else {
            return false;
        };
        match link.vif.queue_rx(len, offload) {
            Ok(Some(gref)) => {
                link.rx_copies.push(GnttabCopy {
                    source,
                    dest: granted(self.domid, gref, 0),
                    len: copy_len,
                    flags: GNTCOPY_DEST_GREF,
                    ..GnttabCopy::default()
                });
                true
            }
            Ok(None) => false,
            Err(fault) => {
                self.disconnect(&fault);
                false
            }
        }
    }

    /// Sends the event if a response was published.
    fn notify(&mut self) {
        if let Phase::Connected(link) = &mut self.phase
            && link.vif.take_notify()
        {
            hypercall::evtchn_send(link.port);
        }
    }

    /// Unmaps the rings and closes the port for `fault`, logging it; the
    /// next round sets the back end Closing.
    fn disconnect(&mut self, fault: &Fault) {
        if let Phase::Connected(link) = core::mem::replace(&mut self.phase, Phase::Faulted) {
            teardown(&link);
            report::ok_value(
                format_args!("vif {}/0 disconnected", self.domid),
                format_args!("{fault}"),
            );
        }
    }
}

/// The machine's NIC as a port of the bridge.
pub struct Uplink {
    nic: VirtioNet<Devices>,
    /// Frames sent to the wire and received from it.
    sent: u64,
    received: u64,
}

impl Uplink {
    /// Brings up the first virtio-net card of the PCI buses: raises dom0's
    /// I/O privilege, enumerates, initialises the driver. Reports the
    /// card (a check) or why there is none.
    pub fn probe() -> Option<Uplink> {
        let ret = devices::enable_io();
        if ret != 0 {
            report::fail("uplink set_iopl", format_args!("{}", report::Ret(ret)));
            return None;
        }
        let mut platform = Devices;
        let mut found = None;
        pci::enumerate(&mut platform, |_, f| {
            if found.is_none() && nic::is_virtio_net(&f) {
                found = Some(f.address);
            }
        });
        let Some(address) = found else {
            report::fail(
                "uplink",
                format_args!("no virtio-net card on the PCI buses"),
            );
            return None;
        };
        match VirtioNet::new(&mut platform, address) {
            Ok(nic) => {
                let m = nic.mac();
                report::ok_value(
                    "uplink virtio-net",
                    format_args!(
                        "{address} {:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
                        m[0], m[1], m[2], m[3], m[4], m[5]
                    ),
                );
                Some(Uplink {
                    nic,
                    sent: 0,
                    received: 0,
                })
            }
            Err(e) => {
                report::fail(
                    format_args!("uplink virtio-net {address}"),
                    format_args!("{e:?}"),
                );
                None
            }
        }
    }

    /// The card, for dom0's own use before the bridge takes it (the
    /// network benchmark).
    pub fn nic_mut(&mut self) -> &mut VirtioNet<Devices> {
        &mut self.nic
    }

    /// The event channel of its interrupt.
    fn port(&self) -> u32 {
        self.nic.transport().irq().port
    }
}

/// Queues `frame`'s copy to vif `port`.
fn deliver(port: &mut Port, frame: Frame<'_>, offload: Offload) {
    match frame {
        Frame::Staged(bytes) => {
            port.transmit(bytes, offload);
        }
        Frame::Lent { source, len, .. } => {
            port.queue_copy(source, len, offload);
        }
    }
}

/// Sends `frame` out of the uplink in `slot`; a device error takes the
/// uplink down (logged).
fn uplink_send(slot: &mut Option<Uplink>, frame: &[u8]) {
    let Some(uplink) = slot else { return };
    match uplink.nic.send(frame) {
        Ok(()) => uplink.sent += 1,
        // A frame the card cannot carry (larger than its MTU) is dropped.
        Err(drivers::Error::Invalid) => {}
        Err(e) => uplink_down(slot, e),
    }
}

/// Logs `error` and takes the uplink down: the card is marked failed and
/// the bridge carries on with the vifs.
fn uplink_down(slot: &mut Option<Uplink>, error: drivers::Error) {
    if let Some(mut uplink) = slot.take() {
        uplink.nic.transport_mut().fail();
        guest_pv_shim::println!(
            "dom0: uplink virtio-net: {error:?}; the uplink is down ({} frames sent, {} received)",
            uplink.sent,
            uplink.received
        );
    }
}

/// Unmaps the grant mapped by `handle` at `window`.
fn unmap(window: usize, handle: u32) {
    let mut op = GnttabUnmapGrantRef {
        host_addr: mm::window_va(window),
        handle,
        ..GnttabUnmapGrantRef::default()
    };
    hypercall::gnttab_unmap(core::slice::from_mut(&mut op));
}

/// Unmaps `link`'s rings.
fn unmap_rings(link: &Link) {
    let (tx, rx) = link.vif.memories();
    unmap(tx.window(), link.handles[0]);
    unmap(rx.window(), link.handles[1]);
}

/// Unmaps `link`'s rings and closes its port.
fn teardown(link: &Link) {
    unmap_rings(link);
    hypercall::evtchn_close(link.port);
}

/// Maps grant `gref` of `domid` writable at `window`; its handle.
fn map_ring(domid: u16, gref: u32, window: usize) -> Result<u32, &'static str> {
    let mut op = GnttabMapGrantRef {
        host_addr: mm::window_va(window),
        flags: GntmapFlags::HOST_MAP.bits(),
        gref,
        dom: domid,
        ..GnttabMapGrantRef::default()
    };
    let ret = hypercall::gnttab_map(core::slice::from_mut(&mut op));
    if ret == 0 && op.status == 0 {
        Ok(op.handle)
    } else {
        Err("a ring reference could not be mapped")
    }
}

/// Maps both rings at the slot's windows and binds the port.
fn attach(domid: u16, slot: usize, keys: FrontendKeys) -> Result<Link, &'static str> {
    let windows = [NET_WINDOW_BASE + 2 * slot, NET_WINDOW_BASE + 2 * slot + 1];
    let tx = map_ring(domid, keys.tx_ring_ref, windows[0])?;
    let rx = match map_ring(domid, keys.rx_ring_ref, windows[1]) {
        Ok(rx) => rx,
        Err(e) => {
            unmap(windows[0], tx);
            return Err(e);
        }
    };
    let mut bind = EvtchnBindInterdomain {
        remote_dom: domid,
        pad: 0,
        remote_port: keys.event_channel,
        local_port: 0,
    };
    let link = Link {
        vif: Vif::new(
            domid,
            WindowMemory::new(windows[0]),
            WindowMemory::new(windows[1]),
        ),
        rx_copies: Vec::new(),
        handles: [tx, rx],
        port: 0,
    };
    if hypercall::evtchn_bind_interdomain(&mut bind) != 0 {
        unmap_rings(&link);
        return Err("the event channel could not be bound");
    }
    Ok(Link {
        port: bind.local_port,
        ..link
    })
}

/// The back end of every vif and the bridge between them.
#[derive(Default)]
pub struct Netback {
    ports: [Option<Port>; MAX_VIFS],
    /// The machine's NIC, if dom0 was told to bring it up.
    uplink: Option<Uplink>,
    bridge: Bridge,
    /// A vif used up its budget in the last round.
    busy: bool,
    /// The store's generation when the handshakes last looked at it.
    steps_seen: Option<u64>,
    /// Staging pages holding frames whose RX copies have not run.
    staged: usize,
    /// The batch of RX copies being run (kept to reuse its allocation).
    batch: Vec<GnttabCopy>,
    /// System time at the start of this round (ns), for the bridge's
    /// address ageing: read once per round, not once per frame.
    round_start: u64,
    /// The card's receive pages holding frames whose RX copies have not
    /// run: given back to the card once they have.
    lent: Vec<nic::Lent>,
}

/// A frame the bridge forwards.
#[derive(Clone, Copy)]
enum Frame<'a> {
    /// In dom0's memory (a vif's frame, staged).
    Staged(&'a [u8]),
    /// In a receive page the card lent (a frame from the wire): its
    /// Ethernet header, where it starts as a copy source, its length.
    Lent {
        header: &'a [u8],
        source: GnttabCopyPtr,
        len: usize,
    },
}

impl Frame<'_> {
    /// Its first bytes, at least the two addresses when it has them.
    fn header(&self) -> &[u8] {
        match self {
            Frame::Staged(bytes) => bytes,
            Frame::Lent { header, .. } => header,
        }
    }
}

fn write(xs: &mut Xenstore, path: &str, value: &str) {
    if let Err(e) = toolstack::store::write_value(&mut xs.store, &mut xs.rings, path, value) {
        guest_pv_shim::println!("dom0: netback: writing {path}: {e}");
    }
}

impl Netback {
    /// Adds vif 0 of domain `domid` as `vif` says: its xenstore nodes,
    /// then the back end's probe (features, InitWait).
    pub fn add(&mut self, xs: &mut Xenstore, domid: u16, vif: &VifConfig<'_>) {
        let Some(slot) = self.ports.iter().position(Option::is_none) else {
            report::fail(
                format_args!("vif {domid}/0"),
                format_args!("more than {MAX_VIFS} vifs"),
            );
            return;
        };
        let added = add_vif(&mut xs.store, &mut xs.rings, domid, 0, vif)
            .and_then(|()| vif_backend_probe(&mut xs.store, &mut xs.rings, &vif_backend(domid, 0)));
        if let Err(e) = added {
            report::fail(format_args!("vif {domid}/0"), format_args!("{e}"));
            return;
        }
        self.ports[slot] = Some(Port {
            domid,
            backend: vif_backend(domid, 0),
            frontend: vif_frontend(domid, 0),
            phase: Phase::Waiting,
        });
    }

    /// Removes domain `domid`'s vifs (before it is destroyed: its grants
    /// must not stay mapped).
    pub fn remove(&mut self, domid: u16) {
        for (i, slot) in self.ports.iter_mut().enumerate() {
            if slot.as_ref().is_none_or(|p| p.domid != domid) {
                continue;
            }
            self.bridge.remove_port(i);
            if let Some(port) = slot.take()
                && let Phase::Connected(link) = &port.phase
            {
                let s = link.vif.stats;
                guest_pv_shim::println!(
                    "dom0: vif {domid}/0 removed: {} frames sent ({} errors), {} received ({} dropped)",
                    s.tx_frames,
                    s.tx_errors,
                    s.rx_frames,
                    s.rx_dropped
                );
                teardown(link);
            }
        }
    }

    /// Makes `uplink` the bridge's port to the wire.
    pub fn set_uplink(&mut self, uplink: Uplink) {
        self.uplink = Some(uplink);
    }

    /// The ports of the connected vifs and the uplink's interrupt (to
    /// wait on).
    pub fn event_ports(&self) -> impl Iterator<Item = u32> + '_ {
        self.ports
            .iter()
            .flatten()
            .filter_map(|p| match &p.phase {
                Phase::Connected(link) => Some(link.port),
                _ => None,
            })
            .chain(self.uplink.as_ref().map(Uplink::port))
    }

    /// One round: handshakes moved on, then every frame the vifs sent
    /// forwarded. `true` if the store was written (its watches must be
    /// served). The front ends' states are read only when the store
    /// changed since the last look (or a vif faulted): a round that only
    /// forwards frames does not walk the store for each vif.
    pub fn poll(&mut self, xs: &mut Xenstore) -> bool {
        self.busy = false;
        self.round_start = now();
        let faulted = self
            .ports
            .iter()
            .flatten()
            .any(|p| matches!(p.phase, Phase::Faulted));
        let wrote = if faulted || self.steps_seen != Some(xs.store.generation()) {
            let wrote = self.handshakes(xs);
            self.steps_seen = Some(xs.store.generation());
            wrote
        } else {
            false
        };
        for i in 0..MAX_VIFS {
            self.forward_from(i);
        }
        self.forward_from_uplink();
        self.run_rx_copies();
        for port in self.ports.iter_mut().flatten() {
            port.notify();
        }
        wrote
    }

    fn handshakes(&mut self, xs: &mut Xenstore) -> bool {
        let mut wrote = false;
        for (slot, entry) in self.ports.iter_mut().enumerate() {
            let Some(port) = entry else { continue };
            let state = toolstack::store::read(
                &mut xs.store,
                &mut xs.rings,
                &alloc::format!("{}/{}", port.frontend, keys::STATE),
            )
            .ok()
            .and_then(|v| parse_state(&v));
            match (&port.phase, state) {
                (Phase::Waiting, Some(XenbusState::Connected | XenbusState::Initialised)) => {
                    let keys = frontend_keys(|key| {
                        let path = alloc::format!("{}/{key}", port.frontend);
                        toolstack::store::read(&mut xs.store, &mut xs.rings, &path).ok()
                    });
                    let state = match keys
                        .map_err(|key| alloc::format!("front end key {key} missing or bad"))
                        .and_then(|k| attach(port.domid, slot, k).map_err(String::from))
                    {
                        Ok(link) => {
                            port.phase = Phase::Connected(link);
                            guest_pv_shim::println!("dom0: vif {}/0 connected", port.domid);
                            "4"
                        }
                        Err(why) => {
                            port.phase = Phase::Closed;
                            report::ok_value(
                                format_args!("vif {}/0 not connected", port.domid),
                                why,
                            );
                            "5"
                        }
                    };
                    write(
                        xs,
                        &alloc::format!("{}/{}", port.backend, keys::STATE),
                        state,
                    );
                    wrote = true;
                }
                (Phase::Connected(_), Some(XenbusState::Closing | XenbusState::Closed) | None) => {
                    if let Phase::Connected(link) =
                        core::mem::replace(&mut port.phase, Phase::Closed)
                    {
                        teardown(&link);
                    }
                    guest_pv_shim::println!("dom0: vif {}/0 closed by its front end", port.domid);
                    write(xs, &alloc::format!("{}/{}", port.backend, keys::STATE), "6");
                    wrote = true;
                }
                (Phase::Faulted, _) => {
                    port.phase = Phase::Closed;
                    write(xs, &alloc::format!("{}/{}", port.backend, keys::STATE), "5");
                    wrote = true;
                }
                _ => {}
            }
        }
        wrote
    }

    /// Forwards the frames port `from` has sent, at most [`TX_BUDGET`]
    /// (then [`Netback::busy`] says to come back without sleeping).
    fn forward_from(&mut self, from: usize) {
        let connected = |port: &Option<Port>| {
            port.as_ref()
                .is_some_and(|p| matches!(p.phase, Phase::Connected(_)))
        };
        if !self.ports.get(from).is_some_and(connected) {
            return;
        }
        let mut staging = STAGING.lock();
        for _ in 0..TX_BUDGET {
            let page = self.staging_page();
            let Some(Some(port)) = self.ports.get_mut(from) else {
                return;
            };
            let Phase::Connected(link) = &mut port.phase else {
                return;
            };
            let frame = match link.vif.next_tx(&mut Copier, &mut staging.0[page]) {
                Ok(Some(frame)) => frame,
                Ok(None) => return,
                Err(fault) => {
                    port.disconnect(&fault);
                    return;
                }
            };
            self.staged += 1;
            self.switch(
                from,
                Frame::Staged(&staging.0[page][..frame.len]),
                frame.offload,
            );
        }
        self.busy = true;
    }

    /// Forwards the frames the uplink received, at most [`TX_BUDGET`],
    /// after acknowledging its interrupt. Each stays in the receive page
    /// the card lent until the round's copies have run (all pages lent:
    /// the copies run at once).
    fn forward_from_uplink(&mut self) {
        let Some(uplink) = &mut self.uplink else {
            return;
        };
        uplink.nic.transport_mut().acknowledge();
        for _ in 0..TX_BUDGET {
            if self.lent.len() == nic::RX_BUFFERS {
                self.run_rx_copies();
            }
            let Some(uplink) = &mut self.uplink else {
                return;
            };
            let lent = match uplink.nic.lend() {
                Ok(Some(lent)) => lent,
                Ok(None) => return,
                Err(e) => return uplink_down(&mut self.uplink, e),
            };
            uplink.received += 1;
            let len = lent.len();
            let mut buf = [0u8; ETHERNET_HEADER];
            let header = &mut buf[..len.min(ETHERNET_HEADER)];
            uplink.nic.read_lent(&lent, 0, header);
            let source = own_at(uplink.nic.lent_bus_address(&lent));
            self.lent.push(lent);
            // The card checked nothing for the receivers (no offloads are
            // negotiated): the frame carries its own checksums.
            self.switch(
                UPLINK,
                Frame::Lent {
                    header,
                    source,
                    len,
                },
                Offload::default(),
            );
        }
        self.busy = true;
    }

    /// The staging page for the next frame: the next free one, after
    /// running the queued RX copies if none is.
    fn staging_page(&mut self) -> usize {
        if self.staged == STAGED {
            self.run_rx_copies();
        }
        self.staged
    }

    /// Runs the queued RX copies of every vif in one `GNTTABOP_copy` and
    /// publishes their responses (a failed copy's buffer is answered with
    /// `NETIF_RSP_ERROR`); the staging pages are free again and the lent
    /// receive pages go back to the card.
    fn run_rx_copies(&mut self) {
        self.staged = 0;
        self.batch.clear();
        self.run_batch();
        if self.lent.is_empty() {
            return;
        }
        if let Some(uplink) = &mut self.uplink
            && let Err(e) = uplink.nic.give_back(self.lent.drain(..))
        {
            uplink_down(&mut self.uplink, e);
        }
        // Pages of an uplink that went down are not given back.
        self.lent.clear();
    }

    /// The batch of [`Netback::run_rx_copies`]: gathers every vif's
    /// queued copies, runs them in one hypercall, publishes the
    /// responses.
    fn run_batch(&mut self) {
        for port in self.ports.iter().flatten() {
            if let Phase::Connected(link) = &port.phase {
                self.batch.extend_from_slice(&link.rx_copies);
            }
        }
        if self.batch.is_empty() {
            return;
        }
        let ran = hypercall::gnttab_copy(&mut self.batch) == 0;
        let mut results = self.batch.iter();
        for port in self.ports.iter_mut().flatten() {
            if let Phase::Connected(link) = &mut port.phase {
                for _ in link.rx_copies.drain(..) {
                    let copied = results
                        .next()
                        .is_some_and(|op| ran && op.status == GrantStatus::Okay as i16);
                    link.vif.finish_rx(copied);
                }
            }
        }
    }

    /// Sends `frame`, which came in on bridge port `from`, where the
    /// bridge says: one port, or every port but `from`.
    fn switch(&mut self, from: usize, frame: Frame<'_>, offload: Offload) {
        match self.bridge.forward(from, frame.header(), self.round_start) {
            Forward::Unicast(UPLINK) => self.send_uplink(frame, offload),
            Forward::Unicast(to) => {
                if let Some(Some(port)) = self.ports.get_mut(to) {
                    deliver(port, frame, offload);
                }
            }
            Forward::Flood => {
                for (i, port) in self.ports.iter_mut().enumerate() {
                    if i != from
                        && let Some(port) = port
                    {
                        deliver(port, frame, offload);
                    }
                }
                if from != UPLINK {
                    self.send_uplink(frame, offload);
                }
            }
            Forward::Drop => {}
        }
    }

    /// Sends a vif's frame out on the wire. The card offloads no
    /// checksum, so a frame whose transport checksum was left blank would
    /// leave broken: it is dropped.
    fn send_uplink(&mut self, frame: Frame<'_>, offload: Offload) {
        // Only a vif's frames go out: the bridge never sends the wire's
        // own frames back to it.
        if let Frame::Staged(bytes) = frame
            && !offload.csum_blank
        {
            uplink_send(&mut self.uplink, bytes);
        }
    }

    /// Whether a vif had more frames than one round's budget: the caller
    /// polls again before sleeping.
    pub fn busy(&self) -> bool {
        self.busy
    }
}
