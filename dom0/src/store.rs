//! dom0 as the xenstore server of its domUs: the store, the rings it maps
//! (one window each) and the event channels it binds.

use guest_pv_shim::{hypercall, report};
use toolstack::builder::Built;
use toolstack::config::DomainConfig;
use toolstack::xen::{STORE_WINDOW_BASE, StoreRingWindow};
use xenstore::ring::serve;
use xenstore::{DomId, Host, Store, XsError};

use crate::domains::{MAX_DOMUS, bind_interdomain};

/// One introduced domU's ring and dom0's end of its event channel.
struct Connection {
    domid: DomId,
    local_port: u32,
    ring: StoreRingWindow,
    /// Its closing for a protocol violation was reported.
    closed: bool,
}

/// What INTRODUCE and RELEASE do on the hypervisor.
#[derive(Default)]
pub struct Rings {
    slots: [Option<Connection>; MAX_DOMUS],
}

fn bind(domid: DomId, port: u32) -> Result<u32, XsError> {
    bind_interdomain(domid, port).map_err(|_| XsError::Einval)
}

impl Host for Rings {
    fn introduce(&mut self, domid: DomId, mfn: u64, port: u32) -> Result<(), XsError> {
        if let Some(conn) = self.slots.iter_mut().flatten().find(|c| c.domid == domid) {
            let local_port = bind(domid, port)?;
            hypercall::evtchn_close(conn.local_port);
            conn.local_port = local_port;
            return Ok(());
        }
        let slot = self
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(XsError::Enospc)?;
        let ring = StoreRingWindow::map(STORE_WINDOW_BASE + slot, domid, mfn)
            .map_err(|_| XsError::Einval)?;
        match bind(domid, port) {
            Ok(local_port) => {
                self.slots[slot] = Some(Connection {
                    domid,
                    local_port,
                    ring,
                    closed: false,
                });
                Ok(())
            }
            Err(e) => {
                let _ = ring.unmap();
                Err(e)
            }
        }
    }

    fn release(&mut self, domid: DomId) {
        let Some(slot) = self
            .slots
            .iter_mut()
            .find(|s| s.as_ref().is_some_and(|c| c.domid == domid))
        else {
            return;
        };
        if let Some(conn) = slot.take() {
            report::check_ret(
                format_args!("xenstore port of domain {domid} closed"),
                hypercall::evtchn_close(conn.local_port),
                0,
            );
            let unmapped = conn.ring.unmap();
            report::check(
                format_args!("xenstore ring of domain {domid} unmapped"),
                unmapped.is_ok(),
                format_args!("{unmapped:?}"),
            );
        }
    }
}

/// The store and the rings it serves.
pub struct Xenstore {
    /// The node tree, connections, watches and transactions.
    pub store: Store,
    /// The mapped rings.
    pub rings: Rings,
}

impl Xenstore {
    /// A store with dom0's own nodes.
    pub fn new() -> Xenstore {
        let mut xs = Xenstore {
            store: Store::default(),
            rings: Rings::default(),
        };
        if let Err(e) = toolstack::store::write_dom0(&mut xs.store, &mut xs.rings) {
            report::fail("xenstore dom0 nodes", format_args!("{e}"));
        }
        xs
    }

    /// Writes a new domU's nodes and introduces it (its ring mapped, its
    /// event channel bound).
    pub fn introduce(&mut self, cfg: &DomainConfig<'_>, built: &Built) -> Result<(), XsError> {
        toolstack::store::introduce_domu(&mut self.store, &mut self.rings, cfg, built)
    }

    /// Ends a domU's connection (firing `@releaseDomain`) and removes its
    /// nodes, as xenstored and `xl destroy` do.
    pub fn release(&mut self, domid: DomId) {
        if self.store.is_introduced(domid) {
            let _ = self.store.release(&mut self.rings, domid);
        }
        if let Err(e) = toolstack::store::remove_domu(&mut self.store, &mut self.rings, domid) {
            report::fail(
                format_args!("xenstore nodes of domain {domid} removed"),
                format_args!("{e}"),
            );
        }
    }

    /// Serves every ring once, notifying each domU whose ring moved.
    pub fn serve(&mut self) {
        for slot in 0..MAX_DOMUS {
            let Some(mut conn) = self.rings.slots[slot].take() else {
                continue;
            };
            let served = serve(&mut self.store, &mut self.rings, conn.domid, &mut conn.ring);
            if served.notify() {
                hypercall::evtchn_send(conn.local_port);
            }
            if served.closed && !conn.closed {
                conn.closed = true;
                guest_pv_shim::println!(
                    "dom0: xenstore connection of domain {} closed (protocol violation)",
                    conn.domid
                );
            }
            if self.rings.slots[slot].is_none() {
                self.rings.slots[slot] = Some(conn);
            }
        }
    }

    /// Whether output (replies, watch events) waits for a ring.
    pub fn has_output(&self) -> bool {
        self.rings
            .slots
            .iter()
            .flatten()
            .any(|c| self.store.output_len(c.domid) > 0)
    }

    /// dom0's ports of the rings (to poll on).
    pub fn ports(&self) -> impl Iterator<Item = u32> + '_ {
        self.rings.slots.iter().flatten().map(|c| c.local_port)
    }
}
