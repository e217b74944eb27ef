//! dom0's block back end on the hypervisor: one virtual block device per
//! `disk` entry of a domU's configuration, each a RAM disk here
//! ([`RamDisk`]), served by the pure logic of [`dom0::blkback`].
//!
//! The handshake follows the store, which dom0 serves itself: each round
//! reads the front end's `state` and acts on [`backend_step`]. Connecting
//! maps the ring's grant in one of dom0's windows and binds the ring's
//! event channel, whose events wake dom0's loop. Data moves with
//! `GNTTABOP_copy` between the front end's grants and dom0's bounce
//! pages, one hypercall per request direction, so a bad grant fails one
//! request (`BLKIF_RSP_ERROR`). The segments of an indirect request are
//! copied the same way out of its indirect pages, or, with persistent
//! grants, read from the first [`MAX_INDIRECT_KEPT`] indirect pages kept
//! mapped (read-only, over pages of dom0's heap: `mm::GrantOverPage`).
//!
//! With `feature-persistent` on both sides and a disk that does DMA (a
//! `phy:` disk), each data grant is mapped once for the device
//! (`GNTMAP_device_map`, writable: no host mapping, dom0 never touches
//! the bytes) and kept, up to [`MAX_PERSISTENT`] per device; the disk
//! reads and writes the front end's frames at the `dev_bus_addr`s
//! themselves. A grant that cannot be mapped fails its request; while
//! mapped, the front end cannot revoke it (the hypervisor refuses). All
//! are unmapped when the device disconnects, so a destroyed domU's
//! frames all come back. A front end whose ring indices are impossible
//! is disconnected (ring unmapped, port closed, back end `Closing`) with
//! its reason logged; the others go on.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use dom0::blkback::{
    BlkRing, BlockDevice, CopyError, MAX_REQUEST_SEGMENTS, PAGE_BYTES, Pages, Piece, RamDisk,
    SEGMENTS_PER_INDIRECT_PAGE, Segment, backend_step, connected_keys, front_details,
};
use guest_pv_shim::dom0_abi::blkif::{BlkifRequestSegment, RING_SLOTS, keys};
use guest_pv_shim::dom0_abi::grant_table::{
    GNTCOPY_DEST_GREF, GNTCOPY_SOURCE_GREF, GntmapFlags, GnttabCopy, GnttabCopyPtr,
    GnttabMapGrantRef, GnttabUnmapGrantRef, GrantStatus,
};
use guest_pv_shim::dom0_abi::types::DomId as AbiDomId;
use guest_pv_shim::dom0_abi::wire::Wire;
use guest_pv_shim::dom0_abi::xenstore::XenbusState;
use guest_pv_shim::mm::{GrantOverPage, LendablePage};
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

/// Data grants of one device kept mapped for its disk at most: beyond,
/// requests move through the bounce pages.
pub const MAX_PERSISTENT: usize = 64;

/// Indirect pages of one device kept mapped (read-only, over pages of
/// dom0's heap) at most, with persistent grants: beyond, they are copied
/// in per request.
pub const MAX_INDIRECT_KEPT: usize = 4;

/// dom0's pages that kept indirect pages were mapped over, given back
/// when their device disconnected (reused before new ones are made).
static SPARE_PAGES: spin::Mutex<Vec<&'static mut LendablePage>> = spin::Mutex::new(Vec::new());

/// An indirect page kept mapped: its grant and the mapping.
struct KeptIndirect {
    gref: u32,
    map: GrantOverPage,
}

/// dom0's bounce pages: one per segment of the request being served, and
/// one for the segments of an indirect page.
#[repr(C, align(4096))]
struct Bounce {
    pages: [[u8; PAGE_BYTES]; MAX_REQUEST_SEGMENTS],
    indirect: [u8; PAGE_BYTES],
}

static BOUNCE: spin::Mutex<Bounce> = spin::Mutex::new(Bounce {
    pages: [[0; PAGE_BYTES]; MAX_REQUEST_SEGMENTS],
    indirect: [0; PAGE_BYTES],
});

/// A data grant mapped for the disk.
#[derive(Clone, Copy, Debug)]
struct Persistent {
    gref: u32,
    handle: u32,
    /// Its frame's machine address (`dev_bus_addr`).
    bus: u64,
}

/// The bounce pages, grant copies and persistent mappings for front end
/// `domid`.
struct GrantCopy<'a> {
    domid: DomId,
    bounce: &'a mut Bounce,
    /// The persistent mappings, when the front end offered them.
    persistent: Option<&'a mut Vec<Persistent>>,
    /// The indirect pages kept mapped, when the front end offered
    /// persistent grants.
    indirect: Option<&'a mut Vec<KeptIndirect>>,
}

/// The frame of dom0's page at `page`, or a copy error for segment
/// `index`.
fn own_mfn<T>(page: &T, index: usize) -> Result<u64, CopyError> {
    mm::virt_to_mfn(core::ptr::from_ref(page) as u64).ok_or(CopyError {
        index,
        status: GrantStatus::GeneralError as i16,
    })
}

/// Runs the grant copies `ops` in one hypercall; the first that failed.
fn run_copies(ops: &mut [GnttabCopy]) -> Result<(), CopyError> {
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

/// Maps grant `gref` of `domid` for the device (writable); its mapping.
fn map_for_device(domid: DomId, gref: u32, index: usize) -> Result<Persistent, CopyError> {
    let mut map = GnttabMapGrantRef {
        flags: GntmapFlags::DEVICE_MAP.bits(),
        gref,
        dom: domid,
        ..GnttabMapGrantRef::default()
    };
    let ret = hypercall::gnttab_map(core::slice::from_mut(&mut map));
    if ret != 0 || map.status != GrantStatus::Okay as i16 {
        return Err(CopyError {
            index,
            status: if ret == 0 {
                map.status
            } else {
                i16::try_from(ret).unwrap_or(i16::MIN)
            },
        });
    }
    Ok(Persistent {
        gref,
        handle: map.handle,
        bus: map.dev_bus_addr,
    })
}

/// Maps indirect page `gref` of `domid` over a page of dom0's (a spare
/// one, or a new one), for segment page `index`.
fn map_indirect(domid: DomId, gref: u32, index: usize) -> Result<KeptIndirect, CopyError> {
    let page = SPARE_PAGES
        .lock()
        .pop()
        .unwrap_or_else(|| Box::leak(Box::new(LendablePage::new())));
    match GrantOverPage::map(page, domid, gref) {
        Ok(map) => Ok(KeptIndirect { gref, map }),
        Err((page, why)) => {
            if let Some(page) = page {
                SPARE_PAGES.lock().push(page);
            }
            Err(CopyError {
                index,
                status: i16::try_from(why).unwrap_or(i16::MIN),
            })
        }
    }
}

/// Unmaps a device mapping; the hypercall's result and status.
fn unmap_for_device(mapping: Persistent) -> (i64, i16) {
    let mut unmap = GnttabUnmapGrantRef {
        dev_bus_addr: mapping.bus,
        handle: mapping.handle,
        ..GnttabUnmapGrantRef::default()
    };
    let ret = hypercall::gnttab_unmap(core::slice::from_mut(&mut unmap));
    (ret, unmap.status)
}

/// Fills `segs` from the descriptors at the start of `page`.
fn decode_segments(segs: &mut [BlkifRequestSegment], page: &[u8]) {
    for (seg, raw) in segs
        .iter_mut()
        .zip(page.chunks_exact(BlkifRequestSegment::SIZE))
    {
        *seg = BlkifRequestSegment::from_wire(raw).unwrap_or_default();
    }
}

impl GrantCopy<'_> {
    /// Reads the first `bytes` of indirect page `gref` (segment page
    /// `index`) into the indirect bounce page through its kept mapping,
    /// mapping it first if there is room: `false` if it is not kept (it is
    /// copied then).
    fn read_kept_indirect(
        &mut self,
        gref: u32,
        index: usize,
        bytes: usize,
    ) -> Result<bool, CopyError> {
        let Some(kept) = self.indirect.as_deref_mut() else {
            return Ok(false);
        };
        let at = match kept.iter().position(|k| k.gref == gref) {
            Some(at) => at,
            None if kept.len() < MAX_INDIRECT_KEPT => {
                kept.push(map_indirect(self.domid, gref, index)?);
                kept.len() - 1
            }
            None => return Ok(false),
        };
        kept[at]
            .map
            .read_bytes(0, &mut self.bounce.indirect[..bytes]);
        Ok(true)
    }

    /// One `GNTTABOP_copy` per segment, in one hypercall: towards the
    /// front end (`to_front`) or from it.
    fn copy(&mut self, segments: &[Segment], to_front: bool) -> Result<(), CopyError> {
        let mut ops = [GnttabCopy::default(); MAX_REQUEST_SEGMENTS];
        for (i, (seg, op)) in segments.iter().zip(&mut ops).enumerate() {
            let mfn = own_mfn(&self.bounce.pages[i], i)?;
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
        run_copies(&mut ops[..segments.len()])
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
        self.bounce.pages.as_flattened_mut()
    }
    fn indirect(
        &mut self,
        grefs: &[u32],
        out: &mut [BlkifRequestSegment],
    ) -> Result<(), CopyError> {
        for (index, (&gref, segs)) in grefs
            .iter()
            .zip(out.chunks_mut(SEGMENTS_PER_INDIRECT_PAGE))
            .enumerate()
        {
            let bytes = segs.len() * BlkifRequestSegment::SIZE;
            if self.read_kept_indirect(gref, index, bytes)? {
                decode_segments(segs, &self.bounce.indirect);
                continue;
            }
            let mut op = GnttabCopy {
                source: GnttabCopyPtr {
                    u: u64::from(gref),
                    domid: self.domid,
                    offset: 0,
                    pad: 0,
                },
                dest: GnttabCopyPtr {
                    u: own_mfn(&self.bounce.indirect, index)?,
                    domid: AbiDomId::SELF.0,
                    offset: 0,
                    pad: 0,
                },
                len: u16::try_from(bytes).unwrap_or(u16::MAX),
                flags: GNTCOPY_SOURCE_GREF,
                ..GnttabCopy::default()
            };
            run_copies(core::slice::from_mut(&mut op)).map_err(|e| CopyError { index, ..e })?;
            decode_segments(segs, &self.bounce.indirect);
        }
        Ok(())
    }
    fn direct(
        &mut self,
        segments: &[Segment],
    ) -> Result<Option<[Piece; MAX_REQUEST_SEGMENTS]>, CopyError> {
        let Some(kept) = self.persistent.as_deref_mut() else {
            return Ok(None);
        };
        let mut pieces = [Piece::default(); MAX_REQUEST_SEGMENTS];
        // Where the next segment's grant is most likely kept: a front end
        // names its pages in the order it granted them, so one after the
        // last one found (checked before searching).
        let mut next = 0;
        for (index, (seg, piece)) in segments.iter().zip(&mut pieces).enumerate() {
            let found = match kept.get(next) {
                Some(p) if p.gref == seg.gref => Ok(next),
                _ => kept.binary_search_by_key(&seg.gref, |p| p.gref),
            };
            let mapping = match found {
                Ok(at) => {
                    next = at + 1;
                    kept[at]
                }
                Err(at) if kept.len() < MAX_PERSISTENT => {
                    let p = map_for_device(self.domid, seg.gref, index)?;
                    kept.insert(at, p);
                    next = at + 1;
                    p
                }
                Err(_) => return Ok(None),
            };
            *piece = Piece {
                bus: mapping.bus + u64::from(seg.offset),
                len: u32::from(seg.len),
            };
        }
        Ok(Some(pieces))
    }
}

/// A connected ring.
struct Connection {
    ring: BlkRing<WindowMemory>,
    /// The ring grant's mapping.
    handle: u32,
    /// dom0's end of the ring's event channel.
    local_port: u32,
    /// The data grants mapped for the disk, when both ends offered
    /// `feature-persistent` and the disk does DMA, sorted by reference.
    persistent: Option<Vec<Persistent>>,
    /// The indirect pages kept mapped, under the same condition.
    indirect: Option<Vec<KeptIndirect>>,
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
        let persistent = self.disk.direct()
            && read(xs, &self.frontend, keys::FEATURE_PERSISTENT).as_deref() == Some(b"1");
        self.conn = Some(Connection {
            ring: BlkRing::attach(WindowMemory::new(self.window)),
            handle: map.handle,
            local_port: bound.unwrap_or(0),
            persistent: persistent.then(Vec::new),
            indirect: persistent.then(Vec::new),
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
            "dom0: blkback: vbd {}/{} connected: ring-ref {}, {} sectors, persistent grants {}",
            self.domid,
            self.devid,
            details.ring_ref,
            self.disk.sectors(),
            if persistent { "on" } else { "off" }
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
            persistent: conn.persistent.as_mut(),
            indirect: conn.indirect.as_mut(),
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

    /// Unmaps the persistent grants and the ring and closes the port, if
    /// connected. The grants' unmapping is a check: every one must come
    /// back, or the domU's frames would stay held after its destruction.
    fn disconnect(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if let Some(kept) = conn.persistent {
            let mut failed: Vec<(u32, (i64, i16))> = kept
                .iter()
                .map(|&p| (p.gref, unmap_for_device(p)))
                .filter(|(_, result)| *result != (0, GrantStatus::Okay as i16))
                .collect();
            let indirect = conn.indirect.unwrap_or_default();
            let count = kept.len() + indirect.len();
            for k in indirect {
                match k.map.unmap() {
                    Ok(page) => SPARE_PAGES.lock().push(page),
                    Err(why) => failed.push((k.gref, (why, 0))),
                }
            }
            report::check(
                format_args!(
                    "vbd {}/{} persistent grants unmapped",
                    self.domid, self.devid
                ),
                failed.is_empty(),
                format_args!("of {count}, failed: {failed:?}"),
            );
        }
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
