//! A property test of the store's internal consistency under random
//! requests from dom0 and two domUs, transactions included.

extern crate std;

use alloc::string::String;
use alloc::vec::Vec;

use proptest::prelude::*;

use super::*;

struct NoHost;

impl Host for NoHost {
    fn introduce(&mut self, _: DomId, _: u64, _: u32) -> Result<(), XsError> {
        Ok(())
    }
    fn release(&mut self, _: DomId) {}
}

/// Checks the tree's links and the usage counts against a recount.
fn consistent(store: &Store) -> Result<(), String> {
    let mut usage: BTreeMap<DomId, Usage> = BTreeMap::new();
    for (p, node) in &store.tree.nodes {
        account(&mut usage, node, 1);
        if node.perms.is_empty() {
            return Err(format!("{p}: no permissions"));
        }
        for child in &node.children {
            let c = if p == "/" {
                format!("/{child}")
            } else {
                format!("{p}/{child}")
            };
            if !store.tree.nodes.contains_key(&c) {
                return Err(format!("{p}: child {child} missing"));
            }
        }
        if p != "/" {
            let parent = store
                .tree
                .nodes
                .get(path::parent(p))
                .ok_or(format!("{p}: no parent"))?;
            if !parent.children.iter().any(|c| c == path::base(p)) {
                return Err(format!("{p}: not in its parent's list"));
            }
        }
    }
    usage.retain(|_, u| *u != Usage::default());
    let mut counted = store.tree.owned.clone();
    counted.retain(|_, u| *u != Usage::default());
    if usage != counted {
        return Err(format!("usage {counted:?} but recount {usage:?}"));
    }
    Ok(())
}

/// A store with `quota` and domain 1 introduced, owning
/// `/local/domain/1/data`.
fn domu_store(quota: Quota) -> Store {
    let mut store = Store::new(quota);
    for (ty, payload) in [
        (XsType::Mkdir, &b"/local/domain/1/data\0"[..]),
        (XsType::SetPerms, b"/local/domain/1/data\0n1\0"),
        (XsType::Introduce, b"1\x001\x001\0"),
    ] {
        store.call(&mut NoHost, 0, ty as u32, 0, payload).unwrap();
    }
    store
}

fn request() -> impl Strategy<Value = (DomId, u32, u32, Vec<u8>)> {
    let node = prop_oneof![
        Just("data"),
        Just("data/a"),
        Just("data/a/b"),
        Just("data/c"),
        Just("/local/domain/1/data/a"),
        Just("/local/domain/2/data"),
        Just("/x/y"),
        Just("/x"),
    ];
    let ty = prop_oneof![
        Just(XsType::Write),
        Just(XsType::Mkdir),
        Just(XsType::Rm),
        Just(XsType::Read),
        Just(XsType::Directory),
        Just(XsType::SetPerms),
        Just(XsType::Watch),
        Just(XsType::TransactionStart),
        Just(XsType::TransactionEnd),
    ];
    (0u16..3, ty, node, 0u32..3, any::<bool>()).prop_map(|(dom, ty, node, tx, flag)| {
        let mut payload = Vec::from(node.as_bytes());
        payload.push(0);
        match ty {
            XsType::Write => payload.extend_from_slice(if flag { b"v" } else { b"" }),
            XsType::SetPerms => payload.extend_from_slice(if flag { b"n1\0r2\0" } else { b"n2\0" }),
            XsType::Watch => payload.extend_from_slice(b"t\0"),
            XsType::TransactionStart => payload = Vec::from(&b"\0"[..]),
            XsType::TransactionEnd => payload = Vec::from(if flag { &b"T\0"[..] } else { b"F\0" }),
            _ => {}
        }
        (dom, ty as u32, tx, payload)
    })
}

proptest! {
    #[test]
    fn random_requests_keep_the_store_consistent(requests in proptest::collection::vec(request(), 1..60)) {
        let mut store = Store::default();
        let mut host = NoHost;
        for d in [1u16, 2] {
            let home = format!("/local/domain/{d}/data");
            store.call(&mut host, 0, XsType::Mkdir as u32, 0, format!("{home}\0").as_bytes()).unwrap();
            store.call(&mut host, 0, XsType::SetPerms as u32, 0, format!("{home}\0n{d}\0").as_bytes()).unwrap();
            store.call(&mut host, 0, XsType::Introduce as u32, 0, format!("{d}\x001\x001\0").as_bytes()).unwrap();
        }
        for (dom, ty, tx, payload) in requests {
            let _ = store.call(&mut host, dom, ty, tx, &payload);
            if let Err(e) = consistent(&store) {
                prop_assert!(false, "after {ty} from {dom} ({payload:?}): {e}");
            }
        }
    }
}

#[test]
fn memory_quota_counts_transaction_copies() {
    let quota = Quota {
        memory: 4096,
        ..Quota::default()
    };
    let mut store = domu_store(quota);
    let mut host = NoHost;
    let value = [b'v'; 1500];
    let mut write = |store: &mut Store, tx: u32, name: &str| {
        let mut payload = Vec::from(name.as_bytes());
        payload.push(0);
        payload.extend_from_slice(&value);
        store.call(&mut host, 1, XsType::Write as u32, tx, &payload)
    };
    assert!(write(&mut store, 0, "data/a").is_ok());
    assert!(write(&mut store, 0, "data/b").is_ok());
    assert_eq!(write(&mut store, 0, "data/c"), Err(XsError::Enomem));
    let tx = store
        .call(&mut NoHost, 1, XsType::TransactionStart as u32, 0, b"\0")
        .unwrap();
    assert_eq!(tx, b"1\0");
    assert_eq!(
        write(&mut store, 1, "data/a"),
        Err(XsError::Enomem),
        "a copy counts too"
    );
    assert!(
        store
            .call(
                &mut NoHost,
                0,
                XsType::Write as u32,
                0,
                b"/local/domain/1/data/c\0dom0 is not limited"
            )
            .is_ok()
    );
}

#[test]
fn watches_and_transaction_records_count_against_memory() {
    let quota = Quota {
        memory: 8192,
        ..Quota::default()
    };
    let mut store = domu_store(quota);
    let mut host = NoHost;
    let long = "t".repeat(3000);
    let watch = |store: &mut Store, token: &str| {
        store.call(
            &mut NoHost,
            1,
            XsType::Watch as u32,
            0,
            format!("data\0{token}\0").as_bytes(),
        )
    };
    assert!(watch(&mut store, &format!("{long}1")).is_ok());
    assert!(watch(&mut store, &format!("{long}2")).is_ok());
    assert_eq!(watch(&mut store, &format!("{long}3")), Err(XsError::Enomem));
    store
        .call(
            &mut host,
            1,
            XsType::Unwatch as u32,
            0,
            format!("data\0{long}1\0").as_bytes(),
        )
        .unwrap();
    // A transaction remembers every node it reads, missing ones too.
    store
        .call(&mut host, 1, XsType::TransactionStart as u32, 0, b"\0")
        .unwrap();
    let mut error = None;
    for i in 0..1000 {
        let read = store.call(
            &mut host,
            1,
            XsType::Read as u32,
            1,
            format!("data/missing-{i}\0").as_bytes(),
        );
        if read != Err(XsError::Enoent) {
            error = Some((i, read));
            break;
        }
    }
    let (reads, result) = error.expect("the records hit the quota");
    assert_eq!(result, Err(XsError::Enomem));
    assert!(reads > 50, "{reads}");
    store
        .call(&mut host, 1, XsType::TransactionEnd as u32, 1, b"F\0")
        .unwrap();
    assert!(
        watch(&mut store, &format!("{long}1")).is_ok(),
        "room again once the transaction ends"
    );
}

#[test]
fn every_change_grows_the_generation_and_reads_do_not() {
    let mut store = domu_store(Quota::default());
    let step = |store: &mut Store, ty: XsType, payload: &[u8]| {
        let before = store.generation();
        store.call(&mut NoHost, 1, ty as u32, 0, payload).unwrap();
        store.generation() > before
    };
    assert!(step(&mut store, XsType::Write, b"data/state\x004"));
    assert!(!step(&mut store, XsType::Read, b"data/state\0"));
    assert!(!step(&mut store, XsType::Directory, b"data\0"));
    assert!(step(&mut store, XsType::SetPerms, b"data/state\0n1\0r0\0"));
    assert!(step(&mut store, XsType::Rm, b"data/state\0"));
}
