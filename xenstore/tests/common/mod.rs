//! Helpers shared by the store's tests: a recording host, a ring in a
//! byte array, and request shorthands.

#![allow(dead_code, reason = "each test file uses a different subset")]

use dom0_abi::wire::Wire;
use dom0_abi::xenstore::{XsType, XsdSockmsg};
use xenstore::ring::StoreRing;
use xenstore::{DomId, Host, Store, XsError};

/// Records what the store asked of the hypervisor.
#[derive(Default)]
pub struct FakeHost {
    pub introduced: Vec<(DomId, u64, u32)>,
    pub released: Vec<DomId>,
    pub refuse: bool,
}

impl Host for FakeHost {
    fn introduce(&mut self, domid: DomId, mfn: u64, port: u32) -> Result<(), XsError> {
        if self.refuse {
            return Err(XsError::Einval);
        }
        self.introduced.push((domid, mfn, port));
        Ok(())
    }
    fn release(&mut self, domid: DomId) {
        self.released.push(domid);
    }
}

/// A store with domains `domus` introduced, each with a home as the
/// toolstack makes it (`n0 r<D>`, a writable `data` directory).
pub fn store_with(domus: &[DomId]) -> (Store, FakeHost) {
    let mut store = Store::default();
    let mut host = FakeHost::default();
    for &d in domus {
        let home = format!("/local/domain/{d}");
        ok(
            &mut store,
            &mut host,
            0,
            XsType::Mkdir,
            0,
            &format!("{home}\0"),
        );
        ok(
            &mut store,
            &mut host,
            0,
            XsType::SetPerms,
            0,
            &format!("{home}\0n0\0r{d}\0"),
        );
        ok(
            &mut store,
            &mut host,
            0,
            XsType::Write,
            0,
            &format!("{home}/name\0guest{d}"),
        );
        ok(
            &mut store,
            &mut host,
            0,
            XsType::Mkdir,
            0,
            &format!("{home}/data\0"),
        );
        ok(
            &mut store,
            &mut host,
            0,
            XsType::SetPerms,
            0,
            &format!("{home}/data\0n{d}\0"),
        );
        ok(
            &mut store,
            &mut host,
            0,
            XsType::Introduce,
            0,
            &format!("{d}\0{}\0{}\0", 0x1000 + u32::from(d), 3),
        );
    }
    (store, host)
}

/// One request's reply payload or error.
pub fn call(
    store: &mut Store,
    host: &mut FakeHost,
    from: DomId,
    ty: XsType,
    tx: u32,
    payload: &str,
) -> Result<Vec<u8>, XsError> {
    store.call(host, from, ty as u32, tx, payload.as_bytes())
}

/// A request that must succeed.
#[track_caller]
pub fn ok(
    store: &mut Store,
    host: &mut FakeHost,
    from: DomId,
    ty: XsType,
    tx: u32,
    payload: &str,
) -> Vec<u8> {
    match call(store, host, from, ty, tx, payload) {
        Ok(reply) => reply,
        Err(e) => panic!("{ty:?} {payload:?} from {from}: {e}"),
    }
}

/// A request that must fail with `error`.
#[track_caller]
pub fn fails(
    store: &mut Store,
    host: &mut FakeHost,
    from: DomId,
    ty: XsType,
    tx: u32,
    payload: &str,
    error: XsError,
) {
    assert_eq!(
        call(store, host, from, ty, tx, payload),
        Err(error),
        "{ty:?} {payload:?} from {from}"
    );
}

/// The messages queued for `domid`, as (type, req_id, tx_id, payload).
pub fn messages(store: &mut Store, domid: DomId) -> Vec<(u32, u32, u32, Vec<u8>)> {
    let bytes = store.take_output(domid, usize::MAX);
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let h = XsdSockmsg::from_wire(&bytes[at..]).expect("whole header");
        let start = at + XsdSockmsg::SIZE;
        let end = start + h.len as usize;
        out.push((h.ty, h.req_id, h.tx_id, bytes[start..end].to_vec()));
        at = end;
    }
    out
}

/// The watch events queued for `domid`, as `path token` strings.
pub fn events(store: &mut Store, domid: DomId) -> Vec<String> {
    messages(store, domid)
        .into_iter()
        .filter(|m| m.0 == XsType::WatchEvent as u32)
        .map(|m| {
            let text = String::from_utf8(m.3).unwrap();
            text.trim_end_matches('\0').replace('\0', " ")
        })
        .collect()
}

/// A store ring in plain memory, with the guest's side driven by the test.
pub struct MemRing {
    pub req: [u8; 1024],
    pub rsp: [u8; 1024],
    pub req_cons: u32,
    pub req_prod: u32,
    pub rsp_cons: u32,
    pub rsp_prod: u32,
}

impl MemRing {
    pub fn new(start: u32) -> MemRing {
        MemRing {
            req: [0; 1024],
            rsp: [0; 1024],
            req_cons: start,
            req_prod: start,
            rsp_cons: start,
            rsp_prod: start,
        }
    }

    /// The guest writes `bytes` as requests; returns how many fit.
    pub fn send(&mut self, bytes: &[u8]) -> usize {
        let mut n = 0;
        for &b in bytes {
            if self.req_prod.wrapping_sub(self.req_cons) == 1024 {
                break;
            }
            self.req[(self.req_prod % 1024) as usize] = b;
            self.req_prod = self.req_prod.wrapping_add(1);
            n += 1;
        }
        n
    }

    /// The guest reads every reply byte.
    pub fn receive(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        while self.rsp_cons != self.rsp_prod {
            out.push(self.rsp[(self.rsp_cons % 1024) as usize]);
            self.rsp_cons = self.rsp_cons.wrapping_add(1);
        }
        out
    }
}

impl StoreRing for MemRing {
    fn req_prod(&self) -> u32 {
        self.req_prod
    }
    fn req_cons(&self) -> u32 {
        self.req_cons
    }
    fn req_bytes(&self, index: u32, out: &mut [u8]) {
        let at = (index % 1024) as usize;
        out.copy_from_slice(&self.req[at..at + out.len()]);
    }
    fn set_req_cons(&mut self, cons: u32) {
        self.req_cons = cons;
    }
    fn rsp_prod(&self) -> u32 {
        self.rsp_prod
    }
    fn rsp_cons(&self) -> u32 {
        self.rsp_cons
    }
    fn set_rsp_bytes(&mut self, index: u32, bytes: &[u8]) {
        let at = (index % 1024) as usize;
        self.rsp[at..at + bytes.len()].copy_from_slice(bytes);
    }
    fn set_rsp_prod(&mut self, prod: u32) {
        self.rsp_prod = prod;
    }
}

/// A framed request.
pub fn request(ty: u32, req_id: u32, tx_id: u32, payload: &[u8]) -> Vec<u8> {
    let header = XsdSockmsg {
        ty,
        req_id,
        tx_id,
        len: u32::try_from(payload.len()).unwrap(),
    };
    let mut out = vec![0; 16];
    header.to_wire(&mut out).unwrap();
    out.extend_from_slice(payload);
    out
}
