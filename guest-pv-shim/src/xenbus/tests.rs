//! The client against the real server (the `xenstore` crate) through an
//! in-memory ring: the server runs whenever the client waits.

extern crate std;

use std::cell::RefCell;
use std::rc::Rc;

use dom0_abi::xenstore::{XenbusState, XsType};
use xenstore::{DomId, Store};

use super::loopback::{Loopback, NoHost};
use super::*;

const DOMID: DomId = 3;

fn dom0(store: &Rc<RefCell<Store>>, ty: XsType, payload: &[u8]) {
    store
        .borrow_mut()
        .call(&mut NoHost, 0, ty as u32, 0, payload)
        .unwrap();
}

fn setup() -> (Xenbus<Loopback>, Rc<RefCell<Store>>) {
    let store = Rc::new(RefCell::new(Store::default()));
    dom0(&store, XsType::Mkdir, b"/local/domain/3\0");
    dom0(&store, XsType::SetPerms, b"/local/domain/3\0n0\0r3\0");
    dom0(&store, XsType::Write, b"/local/domain/3/name\0guest");
    dom0(&store, XsType::Mkdir, b"/local/domain/3/data\0");
    dom0(&store, XsType::SetPerms, b"/local/domain/3/data\0n3\0");
    dom0(&store, XsType::Introduce, b"3\x001\x001\0");
    (Xenbus::new(Loopback::new(store.clone(), DOMID)), store)
}

#[test]
fn messages_longer_than_the_ring_cross_its_end() {
    let (mut xb, _) = setup();
    let mut buf = [0u8; 2048];
    for round in 0..12u8 {
        let value: std::vec::Vec<u8> = (0..1500)
            .map(|i| b"abcdefghijklmnopqrstuvwxyz"[(i + usize::from(round)) % 26])
            .collect();
        xb.write(0, "data/big", &value).unwrap();
        let n = xb.read(0, "data/big", &mut buf).unwrap();
        assert_eq!(&buf[..n], &value[..], "round {round}");
    }
}

#[test]
fn reads_writes_and_errors() {
    let (mut xb, _) = setup();
    let mut buf = [0u8; 64];
    let n = xb.read(0, "name", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"guest");
    xb.write(0, "data/a", b"1").unwrap();
    xb.mkdir(0, "data/b").unwrap();
    let n = xb.directory(0, "data", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"a\0b\0");
    assert_eq!(xb.write(0, "name", b"x").unwrap_err().name(), "EACCES");
    assert_eq!(
        xb.read(0, "missing", &mut buf).unwrap_err().name(),
        "ENOENT"
    );
    assert_eq!(
        xb.read(0, "data/a", &mut [0u8; 0]),
        Err(XenbusError::TooBig)
    );
    xb.set_perms(0, "data/a", &["n3", "r0"]).unwrap();
    let n = xb.get_perms(0, "data/a", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"n3\0r0\0");
    let n = xb.domain_path(12, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"/local/domain/12\0");
    xb.rm(0, "data/a").unwrap();
    let big = [b'x'; 4097];
    assert_eq!(
        xb.write(0, "data/big", &big),
        Err(XenbusError::RequestTooBig)
    );
}

#[test]
fn watches_and_transactions() {
    let (mut xb, store) = setup();
    let mut buf = [0u8; 128];
    xb.watch("data", "tok").unwrap();
    let (path, token) = xb.wait_event(&mut buf).unwrap();
    assert_eq!((path, token), (&b"data"[..], &b"tok"[..]));
    dom0(&store, XsType::Write, b"/local/domain/3/data/x\0v");
    let (path, _) = xb.wait_event(&mut buf).unwrap();
    assert_eq!(path, b"data/x");
    assert_eq!(xb.next_event(&mut buf).unwrap(), None);
    let tx = xb.transaction_start().unwrap();
    xb.read(tx, "data/x", &mut buf).unwrap();
    xb.write(0, "data/x", b"changed").unwrap();
    assert_eq!(xb.transaction_end(tx, true).unwrap_err().name(), "EAGAIN");
    let tx = xb.transaction_start().unwrap();
    xb.write(tx, "data/y", b"1").unwrap();
    xb.transaction_end(tx, true).unwrap();
    // The events of the two writes were kept while replies were awaited.
    let (path, _) = xb.next_event(&mut buf).unwrap().unwrap();
    assert_eq!(path, b"data/x");
    let (path, _) = xb.next_event(&mut buf).unwrap().unwrap();
    assert_eq!(path, b"data/y");
    xb.unwatch("data", "tok").unwrap();
}

#[test]
fn an_event_too_long_to_keep_is_dropped_while_a_reply_is_awaited() {
    let (mut xb, store) = setup();
    let mut buf = [0u8; 64];
    let token = [b't'; EVENT_BYTES];
    let token = core::str::from_utf8(&token).unwrap();
    xb.watch("data", token).unwrap();
    dom0(&store, XsType::Write, b"/local/domain/3/data/x\0v");
    let n = xb.read(0, "name", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"guest");
    // The watch's first event and the write's: both longer than a slot.
    assert_eq!(xb.dropped_events, 2);
    assert_eq!(xb.next_event(&mut buf).unwrap(), None);
    let n = xb.read(0, "data/x", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"v", "the ring stays in step after the drops");
}

#[test]
fn states_and_the_frontend_handshake() {
    let (mut xb, _) = setup();
    assert_eq!(xb.state(0, "data/dev"), Ok(XenbusState::Unknown));
    xb.set_state(0, "data/dev", XenbusState::Initialising)
        .unwrap();
    assert_eq!(xb.state(0, "data/dev"), Ok(XenbusState::Initialising));
    use XenbusState::*;
    let steps = [
        (Initialising, InitWait, Some(Initialised)),
        (Initialised, InitWait, None),
        (Initialised, Connected, Some(Connected)),
        (Connected, Connected, None),
        (Connected, Closing, Some(Closing)),
        (Closing, Closed, Some(Closed)),
        (Closed, Closed, None),
        (Initialising, Initialising, None),
    ];
    for (front, back, next) in steps {
        assert_eq!(frontend_step(front, back), next, "{front:?} with {back:?}");
    }
    assert_eq!(parse_state(b"4"), Some(Connected));
    assert_eq!(parse_state(b"x"), None);
}

#[test]
fn a_silent_server_times_out() {
    let (mut xb, _) = setup();
    xb.ring().waits = 2000;
    assert_eq!(xb.read(0, "name", &mut [0u8; 8]), Err(XenbusError::Timeout));
}
