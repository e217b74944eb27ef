//! A store ring in host memory between a [`Xenbus`](super::Xenbus) client
//! and an in-process server (the `xenstore` crate), for host tests of
//! xenstore clients: the server answers whenever the client waits, and a
//! hook may act between its rounds as the rest of dom0's loop would.

extern crate alloc;

use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

use xenstore::ring::{StoreRing, serve};
use xenstore::{DomId, Host, Store, XsError};

use super::ClientRing;

/// Waits before the client gives up.
const MAX_WAITS: u32 = 1000;

/// A store host that maps nothing (INTRODUCE and RELEASE just succeed).
pub struct NoHost;

impl Host for NoHost {
    fn introduce(&mut self, _: DomId, _: u64, _: u32) -> Result<(), XsError> {
        Ok(())
    }
    fn release(&mut self, _: DomId) {}
}

/// The ring's bytes and indices.
#[derive(Default)]
struct Mem {
    req: Vec<u8>,
    rsp: Vec<u8>,
    req_cons: u32,
    req_prod: u32,
    rsp_cons: u32,
    rsp_prod: u32,
}

/// The server's view of the ring.
struct Server(Rc<RefCell<Mem>>);

impl StoreRing for Server {
    fn req_prod(&self) -> u32 {
        self.0.borrow().req_prod
    }
    fn req_cons(&self) -> u32 {
        self.0.borrow().req_cons
    }
    fn req_bytes(&self, index: u32, out: &mut [u8]) {
        let at = index as usize % 1024;
        out.copy_from_slice(&self.0.borrow().req[at..at + out.len()]);
    }
    fn set_req_cons(&mut self, cons: u32) {
        self.0.borrow_mut().req_cons = cons;
    }
    fn rsp_prod(&self) -> u32 {
        self.0.borrow().rsp_prod
    }
    fn rsp_cons(&self) -> u32 {
        self.0.borrow().rsp_cons
    }
    fn set_rsp_bytes(&mut self, index: u32, bytes: &[u8]) {
        let at = index as usize % 1024;
        self.0.borrow_mut().rsp[at..at + bytes.len()].copy_from_slice(bytes);
    }
    fn set_rsp_prod(&mut self, prod: u32) {
        self.0.borrow_mut().rsp_prod = prod;
    }
}

/// What runs between the server's rounds.
pub type Hook = Box<dyn FnMut(&mut Store)>;

/// The client's end of the ring, as domain `domid` of `store`.
pub struct Loopback {
    mem: Rc<RefCell<Mem>>,
    store: Rc<RefCell<Store>>,
    domid: DomId,
    hook: Option<Hook>,
    /// Waits so far; the client times out after 1000.
    pub waits: u32,
}

impl Loopback {
    /// A ring of domain `domid` (already introduced to `store`).
    #[must_use]
    pub fn new(store: Rc<RefCell<Store>>, domid: DomId) -> Loopback {
        Loopback {
            mem: Rc::new(RefCell::new(Mem {
                req: vec![0; 1024],
                rsp: vec![0; 1024],
                ..Mem::default()
            })),
            store,
            domid,
            hook: None,
            waits: 0,
        }
    }

    /// Runs `hook` after each round of the server (which then serves
    /// again, so what the hook wrote reaches the client).
    #[must_use]
    pub fn with_hook(mut self, hook: Hook) -> Loopback {
        self.hook = Some(hook);
        self
    }

    fn serve(&self, store: &mut Store) {
        serve(
            store,
            &mut NoHost,
            self.domid,
            &mut Server(self.mem.clone()),
        );
    }
}

impl ClientRing for Loopback {
    fn req_prod(&self) -> u32 {
        self.mem.borrow().req_prod
    }
    fn req_cons(&self) -> u32 {
        self.mem.borrow().req_cons
    }
    fn set_req_bytes(&mut self, index: u32, bytes: &[u8]) {
        let at = index as usize % 1024;
        self.mem.borrow_mut().req[at..at + bytes.len()].copy_from_slice(bytes);
    }
    fn set_req_prod(&mut self, prod: u32) {
        self.mem.borrow_mut().req_prod = prod;
    }
    fn rsp_prod(&self) -> u32 {
        self.mem.borrow().rsp_prod
    }
    fn rsp_cons(&self) -> u32 {
        self.mem.borrow().rsp_cons
    }
    fn rsp_bytes(&self, index: u32, out: &mut [u8]) {
        let at = index as usize % 1024;
        out.copy_from_slice(&self.mem.borrow().rsp[at..at + out.len()]);
    }
    fn set_rsp_cons(&mut self, cons: u32) {
        self.mem.borrow_mut().rsp_cons = cons;
    }
    fn notify(&mut self) {}
    fn wait(&mut self) -> bool {
        self.waits += 1;
        if self.waits > MAX_WAITS {
            return false;
        }
        let store = self.store.clone();
        let mut store = store.borrow_mut();
        self.serve(&mut store);
        if let Some(hook) = self.hook.as_mut() {
            hook(&mut store);
            self.serve(&mut store);
        }
        true
    }
}
