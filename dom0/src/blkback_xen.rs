//! dom0's block back end on the hypervisor: one virtual block device per
//! `disk` entry of a domU's configuration, each a RAM disk here
//! ([`RamDisk`]), served by the pure logic of [`dom0::blkback`].
//!
//! The handshake follows the store, which dom0 serves itself: each round
//! reads the front end's `state` and acts on [`backend_step`]. Connecting
//! maps the ring's grant in one of dom0's windows and binds the ring's
//! event channel, whose events wake dom0's loop. Data moves with
//! `GNTTABOP_copy` between the front end's grants and dom0's bounce
//! pages, one hypercall per request direction: no data page is ever
//! mapped, so a bad grant fails one request (`BLKIF_RSP_ERROR`) and
//! leaves nothing to unmap. A front end whose ring indices are impossible
//! is disconnected (ring unmapped, port closed, back end `Closing`) with
//! its reason logged; the others go on.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use dom0::blkback::{
    BlkRing, BlockDevice, CopyError, PAGE_BYTES, Pages, RamDisk, Segment, backend_step,
    connected_keys, front_details,
};
use guest_pv_shim::dom0_abi::blkif::{MAX_SEGMENTS, RING_SLOTS, keys};
use guest_pv_shim::dom0_abi::grant_table::{
    GNTCOPY_DEST_GREF, GNTCOPY_SOURCE_GREF, GntmapFlags, GnttabCopy, GnttabCopyPtr,
    GnttabMapGrantRef, GnttabUnmapGrantRef, GrantStatus,
};
use guest_pv_shim::dom0_abi::types::DomId as AbiDomId;
use guest_pv_shim::dom0_abi::xenstore::XenbusState;
use guest_pv_shim::ring::WindowMemory;
use guest_pv_shim::xenbus::parse_state;
use guest_pv_shim::{hypercall, mm, println, report};
use toolstack::config::{Backing, Disk, DomainConfig};
use toolstack::store::{vbd_backend, vbd_frontend};
use toolstack::xen::{BLKBACK_WINDOW_BASE, BLKBACK_WINDOW_END};
use xenstore::DomId;

use crate::devices::Disks;
use crate::domains::bind_interdomain;
use crate::store::Xenstore;

/// Devices served at once (one ring window each).
pub const MAX_VBDS: usize = BLKBACK_WINDOW_END - BLKBACK_WINDOW_BASE;
const _: () = assert!(BLKBACK_WINDOW_END <= guest_pv_shim::devices::MMIO_WINDOWS.start);

/// dom0's bounce pages: one per segment of the request being served.
#[repr(C, align(4096))]
struct Bounce([[u8; PAGE_BYTES]; MAX_SEGMENTS]);

static BOUNCE: spin::Mutex<Bounce> = spin::Mutex::new(Bounce([[0; PAGE_BYTES]; MAX_SEGMENTS]));

/// The bounce pages and grant copies for front end `domid`.
struct GrantCopy<'a> {
    domid: DomId,
    bounce: &'a mut Bounce,
}

impl GrantCopy<'_> {
    /// One `GNTTABOP_copy` per segment, in one hypercall: towards the
    /// front end (`to_front`) or from it.
    fn copy(&mut self, segments: &[Segment], to_front: bool) -> Result<(), CopyError> {
        let mut ops = [GnttabCopy::default(); MAX_SEGMENTS];
        for (i, (seg, op)) in segments.iter().zip(&mut ops).enumerate() {
            let va = core::ptr::from_ref(&self.bounce.0[i]) as u64;
            let mfn = mm::virt_to_mfn(va).ok_or(CopyError {
                index: i,
                status: GrantStatus::GeneralError as i16,
            })?;
            let grant = GnttabCopyPtr {
                u: u64::from(seg.gref),
                domid: self.domid,
                offset: seg.offset,
                pad: 0,
            };
            let own = GnttabCopyPtr {
                u: mfn,
                domid: AbiDomId::SELF.0,
                offset: seg.offset,
                pad: 0,
            };
            *op = if to_front {
                GnttabCopy {
                    source: own,
                    dest: grant,
                    len: seg.len,
                    flags: GNTCOPY_DEST_GREF,
                    ..GnttabCopy::default()
                }
            } else {
                GnttabCopy {
                    source: grant,
                    dest: own,
                    len: seg.len,
                    flags: GNTCOPY_SOURCE_GREF,
                    ..GnttabCopy::default()
                }
            };
        }
        let ops = &mut ops[..segments.len()];
        let ret = hypercall::gnttab_copy(ops);
        if ret != 0 {
            return Err(CopyError {
                index: 0,
                status: i16::try_from(ret).unwrap_or(i16::MIN),
            });
        }
        match ops
            .iter()
            .position(|op| op.status != GrantStatus::Okay as i16)
        {
            Some(index) => Err(CopyError {
                index,
                status: ops[index].status,
            }),
            None => Ok(()),
        }
    }
}

impl Pages for GrantCopy<'_> {
    fn gather(&mut self, segments: &[Segment]) -> Result<(), CopyError> {
        self.copy(segments, false)
    }
    fn scatter(&mut self, segments: &[Segment]) -> Result<(), CopyError> {
        self.copy(segments, true)
    }
    fn bounces(&mut self) -> &mut [u8] {
        self.bounce.0.as_flattened_mut()
    }
}

/// A connected ring.
struct Connection {
    ring: BlkRing<WindowMemory>,
    /// The ring grant's mapping.
    handle: u32,
    /// dom0's end of the ring's event channel.
    local_port: u32,
}

/// One virtual block device.
struct Vbd {
    domid: DomId,
    devid: u32,
    backend: String,
    frontend: String,
    /// The back end's state, as last written.
    state: XenbusState,
    disk: Box<dyn BlockDevice>,
    window: usize,
    conn: Option<Connection>,
}

/// Every virtual block device dom0 serves.
#[derive(Default)]
pub struct Blkback {
    vbds: Vec<Vbd>,
    /// dom0's own disks, for `phy:` targets.
    disks: Disks,
    /// A ring still had requests when its budget ran out.
    busy: bool,
    /// The store's generation when the handshake steps last ran.
    steps_seen: Option<u64>,
}

/// Writes `<dir>/<key>`; failures are logged (dom0 owns these nodes).
fn write(xs: &mut Xenstore, dir: &str, key: &str, value: &str) {
    let path = format!("{dir}/{key}");
    if let Err(e) = toolstack::store::write_value(&mut xs.store, &mut xs.rings, &path, value) {
        println!("dom0: blkback: writing {path}: {e}");
    }
}

/// Reads `<dir>/<key>`.
fn read(xs: &mut Xenstore, dir: &str, key: &str) -> Option<Vec<u8>> {
    toolstack::store::read(&mut xs.store, &mut xs.rings, &format!("{dir}/{key}")).ok()
}

impl Blkback {
    /// Creates the disks of a new domU (`cfg`) and has each back end wait
    /// for its front end (`InitWait`). A disk that cannot be created is
    /// reported and left out.
    pub fn attach(&mut self, xs: &mut Xenstore, domid: DomId, cfg: &DomainConfig<'_>) {
        for spec in cfg.disks() {
            if let Err(why) = self.add(xs, domid, spec) {
                report::fail(
                    format_args!("{} disk {}", cfg.name, spec.vdev),
                    format_args!("{}: {why}", spec.target),
                );
            }
        }
    }

    /// Opens dom0's own disk `name` (`vda`, `vda1`, ...) read-only, for
    /// dom0 itself (the block benchmark's reference).
    ///
    /// # Errors
    /// No such disk or partition.
    pub fn open_own(&mut self, name: &str) -> Result<Box<dyn BlockDevice>, &'static str> {
        self.disks.open(name, false)
    }

    /// Opens the disk `spec` for domU `domid` and has its back end wait
    /// for the front end (`InitWait`); the toolstack's nodes are written.
    fn add(
        &mut self,
        xs: &mut Xenstore,
        domid: DomId,
        spec: &Disk<'_>,
    ) -> Result<(), &'static str> {
        let window = (BLKBACK_WINDOW_BASE..BLKBACK_WINDOW_END)
            .find(|w| self.vbds.iter().all(|v| v.window != *w))
            .ok_or("no ring window left: dom0 serves at most 8 disks")?;
        let disk = match spec.backing {
            Backing::Ram(bytes) => RamDisk::new(bytes, spec.writable)
                .map(|d| Box::new(d) as Box<dyn BlockDevice>)
                .ok_or("no memory for it"),
            Backing::Phy(device) => self.disks.open(device, spec.writable),
        }?;
        let vbd = Vbd {
            domid,
            devid: spec.devid,
            backend: vbd_backend(domid, spec.devid),
            frontend: vbd_frontend(domid, spec.devid),
            state: XenbusState::InitWait,
            disk,
            window,
            conn: None,
        };
        write(xs, &vbd.backend, keys::STATE, "2");
        self.vbds.push(vbd);
        Ok(())
    }

    /// `block-attach`: hot-plugs `spec` into the running domU `domid`:
    /// the nodes `xl` writes, then the back end waits for the front end,
    /// which connects when it sees the new device.
    ///
    /// # Errors
    /// The domain already has the vdev, the store refused, or the disk
    /// cannot be opened.
    pub fn hot_plug(
        &mut self,
        xs: &mut Xenstore,
        domid: DomId,
        spec: &Disk<'_>,
    ) -> Result<(), &'static str> {
        if self.find(domid, spec.devid).is_some() {
            return Err("the domain already has this vdev");
        }
        toolstack::store::write_vbd(&mut xs.store, &mut xs.rings, domid, spec)
            .map_err(|_| "the store refused the device's nodes")?;
        let added = self.add(xs, domid, spec);
        if added.is_err() {
            let _ = toolstack::store::remove_vbd(&mut xs.store, &mut xs.rings, domid, spec.devid);
        }
        added
    }

    /// `block-detach`, first step: the back end of `domid`'s disk `devid`
    /// goes `Closing`; the front end answers `Closed` and the next rounds
    /// disconnect it ([`Blkback::state`] is then `Closed`).
    ///
    /// # Errors
    /// No such device.
    pub fn unplug(
        &mut self,
        xs: &mut Xenstore,
        domid: DomId,
        devid: u32,
    ) -> Result<(), &'static str> {
        let vbd = self.find(domid, devid).ok_or("no such device")?;
        let vbd = &mut self.vbds[vbd];
        if vbd.state != XenbusState::Closed {
            vbd.set_state(xs, XenbusState::Closing);
        }
        Ok(())
    }

    /// The back end's state of `domid`'s disk `devid`.
    pub fn state(&self, domid: DomId, devid: u32) -> Option<XenbusState> {
        self.find(domid, devid).map(|i| self.vbds[i].state)
    }

    /// `block-detach`, last step: forgets the device (disconnecting it if
    /// the front end never closed) and removes its nodes.
    pub fn remove(&mut self, xs: &mut Xenstore, domid: DomId, devid: u32) {
        if let Some(i) = self.find(domid, devid) {
            let mut vbd = self.vbds.remove(i);
            vbd.disconnect();
        }
        if let Err(e) = toolstack::store::remove_vbd(&mut xs.store, &mut xs.rings, domid, devid) {
            println!("dom0: blkback: removing vbd {domid}/{devid}: {e}");
        }
    }

    /// `(domid, devid, back end directory)` of every device, or of
    /// `domid`'s.
    pub fn devices(&self, domid: Option<DomId>) -> impl Iterator<Item = (DomId, u32, &str)> + '_ {
        self.vbds
            .iter()
            .filter(move |v| domid.is_none_or(|d| d == v.domid))
            .map(|v| (v.domid, v.devid, v.backend.as_str()))
    }

    fn find(&self, domid: DomId, devid: u32) -> Option<usize> {
        self.vbds
            .iter()
            .position(|v| v.domid == domid && v.devid == devid)
    }

    /// One round: every handshake step due, then every connected ring
    /// served (at most a ring's worth of requests each). The front ends'
    /// states are read again only when the store changed since the last
    /// round's steps (every change bumps its generation): a round that
    /// only serves rings does not walk the store for each disk.
    pub fn poll(&mut self, xs: &mut Xenstore) {
        self.busy = false;
        if self.steps_seen != Some(xs.store.generation()) {
            for vbd in &mut self.vbds {
                let front = read(xs, &vbd.frontend, keys::STATE)
                    .and_then(|v| parse_state(&v))
                    .unwrap_or(XenbusState::Unknown);
                match backend_step(vbd.state, front) {
                    Some(XenbusState::Connected) => vbd.connect(xs),
                    Some(XenbusState::Closed) => {
                        vbd.disconnect();
                        vbd.set_state(xs, XenbusState::Closed);
                    }
                    Some(state) => vbd.set_state(xs, state),
                    None => {}
                }
            }
            self.steps_seen = Some(xs.store.generation());
        }
        for vbd in &mut self.vbds {
            self.busy |= vbd.serve(xs);
        }
    }

    /// Whether a ring has requests left over from the last round.
    pub fn busy(&self) -> bool {
        self.busy
    }

    /// The ports whose events wake dom0's loop.
    pub fn ports(&self) -> impl Iterator<Item = u32> + '_ {
        self.vbds
            .iter()
            .filter_map(|v| v.conn.as_ref().map(|c| c.local_port))
    }

    /// Disconnects and forgets the devices of a domain being destroyed.
    pub fn detach(&mut self, domid: DomId) {
        for vbd in &mut self.vbds {
            if vbd.domid == domid {
                vbd.disconnect();
            }
        }
        self.vbds.retain(|v| v.domid != domid);
    }
}

impl Vbd {
    fn set_state(&mut self, xs: &mut Xenstore, state: XenbusState) {
        self.state = state;
        write(xs, &self.backend, keys::STATE, &format!("{}", state as u32));
    }

    /// Gives up on a front end that broke the rules: logged, a check
    /// (`<domid>/<devid> disconnected`), ring and port let go, `Closing`.
    fn fail(&mut self, xs: &mut Xenstore, why: core::fmt::Arguments<'_>) {
        println!(
            "dom0: blkback: disconnecting vbd {}/{}: {why}",
            self.domid, self.devid
        );
        report::ok_value(
            format_args!("vbd {}/{} disconnected", self.domid, self.devid),
            why,
        );
        self.disconnect();
        self.set_state(xs, XenbusState::Closing);
    }

    /// Maps the ring, binds its event channel, publishes the disk and
    /// switches to `Connected`.
    fn connect(&mut self, xs: &mut Xenstore) {
        let details = front_details(
            read(xs, &self.frontend, keys::RING_REF).as_deref(),
            read(xs, &self.frontend, keys::EVENT_CHANNEL).as_deref(),
            read(xs, &self.frontend, keys::PROTOCOL).as_deref(),
        );
        let details = match details {
            Ok(d) => d,
            Err(why) => return self.fail(xs, format_args!("{why}")),
        };
        let mut map = GnttabMapGrantRef {
            host_addr: mm::window_va(self.window),
            flags: GntmapFlags::HOST_MAP.bits(),
            gref: details.ring_ref,
            dom: self.domid,
            ..GnttabMapGrantRef::default()
        };
        let ret = hypercall::gnttab_map(core::slice::from_mut(&mut map));
        if ret != 0 || map.status != GrantStatus::Okay as i16 {
            return self.fail(
                xs,
                format_args!("ring grant {} not mapped: {ret}/{}", map.gref, map.status),
            );
        }
        let bound = bind_interdomain(self.domid, details.event_channel);
        self.conn = Some(Connection {
            ring: BlkRing::attach(WindowMemory::new(self.window)),
            handle: map.handle,
            local_port: bound.unwrap_or(0),
        });
        if let Err(ret) = bound {
            return self.fail(
                xs,
                format_args!("event channel {} not bound: {ret}", details.event_channel),
            );
        }
        for (key, value) in connected_keys(&*self.disk) {
            write(xs, &self.backend, key, &value);
        }
        println!(
            "dom0: blkback: vbd {}/{} connected: ring-ref {}, {} sectors",
            self.domid,
            self.devid,
            details.ring_ref,
            self.disk.sectors()
        );
        self.set_state(xs, XenbusState::Connected);
    }

    /// Serves the ring once; `true` if requests were left for later.
    fn serve(&mut self, xs: &mut Xenstore) -> bool {
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        let mut bounce = BOUNCE.lock();
        let mut pages = GrantCopy {
            domid: self.domid,
            bounce: &mut bounce,
        };
        match conn.ring.serve(&mut *self.disk, &mut pages, RING_SLOTS) {
            Ok(round) => {
                if round.notify {
                    hypercall::evtchn_send(conn.local_port);
                }
                if let Some(failure) = round.first_failure {
                    println!(
                        "dom0: blkback: vbd {}/{}: {} of {} requests failed, the first: {failure:?}",
                        self.domid, self.devid, round.failed, round.answered
                    );
                }
                round.more
            }
            Err(e) => {
                drop(bounce);
                self.fail(xs, format_args!("{e}"));
                false
            }
        }
    }

    /// Unmaps the ring and closes the port, if connected.
    fn disconnect(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let mut unmap = GnttabUnmapGrantRef {
            host_addr: mm::window_va(self.window),
            handle: conn.handle,
            ..GnttabUnmapGrantRef::default()
        };
        let ret = hypercall::gnttab_unmap(core::slice::from_mut(&mut unmap));
        if ret != 0 || unmap.status != GrantStatus::Okay as i16 {
            println!(
                "dom0: blkback: vbd {}/{}: ring unmap: {ret}/{}",
                self.domid, self.devid, unmap.status
            );
        }
        if conn.local_port != 0 {
            hypercall::evtchn_close(conn.local_port);
        }
    }
}
