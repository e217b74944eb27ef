//! The store's answers to each message type, as Xen 4.17's xenstored
//! gives them.

mod common;

use common::{call, events, fails, messages, ok, request, store_with};
use dom0_abi::xenstore::XsType::{self, *};
use dom0_abi::xenstore::XsdSockmsg;
use xenstore::{Quota, Store, XsError::*};

const OK: &[u8] = b"OK\0";

#[test]
fn initial_tree_is_dom0s() {
    let (mut s, mut h) = store_with(&[]);
    assert_eq!(ok(&mut s, &mut h, 0, Directory, 0, "/\0"), b"tool\0");
    assert_eq!(
        ok(&mut s, &mut h, 0, Directory, 0, "/tool\0"),
        b"xenstored\0"
    );
    assert_eq!(ok(&mut s, &mut h, 0, GetPerms, 0, "/tool\0"), b"n0\0");
    assert_eq!(ok(&mut s, &mut h, 0, Read, 0, "/tool\0"), b"");
}

#[test]
fn write_read_mkdir_rm() {
    let (mut s, mut h) = store_with(&[]);
    assert_eq!(ok(&mut s, &mut h, 0, Write, 0, "/a/b/c\0value"), OK);
    assert_eq!(ok(&mut s, &mut h, 0, Read, 0, "/a/b/c\0"), b"value");
    assert_eq!(
        ok(&mut s, &mut h, 0, Read, 0, "/a/b\0"),
        b"",
        "parents are created empty"
    );
    ok(&mut s, &mut h, 0, Write, 0, "/a/b/d\0");
    assert_eq!(
        ok(&mut s, &mut h, 0, Directory, 0, "/a/b\0"),
        b"c\0d\0",
        "in creation order"
    );
    ok(&mut s, &mut h, 0, Write, 0, "/a/b\0x");
    ok(&mut s, &mut h, 0, Mkdir, 0, "/a/b\0");
    assert_eq!(
        ok(&mut s, &mut h, 0, Read, 0, "/a/b\0"),
        b"x",
        "MKDIR keeps a value"
    );
    ok(&mut s, &mut h, 0, Rm, 0, "/a/b\0");
    fails(&mut s, &mut h, 0, Read, 0, "/a/b/c\0", Enoent);
    assert_eq!(ok(&mut s, &mut h, 0, Directory, 0, "/a\0"), b"");
    assert_eq!(
        ok(&mut s, &mut h, 0, Rm, 0, "/a/missing\0"),
        OK,
        "a missing node under an existing parent"
    );
    fails(&mut s, &mut h, 0, Rm, 0, "/a/missing/deeper\0", Enoent);
    fails(&mut s, &mut h, 0, Rm, 0, "/\0", Einval);
    assert_eq!(
        s.call(&mut h, 0, Write as u32, 0, b"/bin\0a\0b\xff"),
        Ok(OK.to_vec())
    );
    assert_eq!(
        ok(&mut s, &mut h, 0, Read, 0, "/bin\0"),
        b"a\0b\xff",
        "values are bytes"
    );
}

#[test]
fn malformed_requests_are_einval() {
    let (mut s, mut h) = store_with(&[]);
    for (ty, payload) in [
        (Read, "/tool"),
        (Read, "/tool\0extra\0"),
        (Read, ""),
        (Read, "/tool/\0"),
        (Read, "/a//b\0"),
        (Read, "/a b\0"),
        (Write, "/no-nul"),
        (Watch, "/a\0"),
        (Watch, "/a\0t\0depth\0"),
        (SetPerms, "/tool\0"),
        (SetPerms, "/tool\0x0\0"),
        (SetPerms, "/tool\0n0"),
        (GetDomainPath, "abc\0"),
        (TransactionEnd, "X\0"),
        (Introduce, "1\x002\0"),
        (Introduce, "1\x002\x000\0"),
        (Introduce, "1\x002\0-3\0"),
    ] {
        fails(&mut s, &mut h, 0, ty, 0, payload, Einval);
    }
}

#[test]
fn unknown_types_are_enosys_and_replies_echo_the_header() {
    let (mut s, mut h) = store_with(&[3]);
    for ty in [15, 16, 20, 23, 0xffff_ffff] {
        assert_eq!(s.call(&mut h, 3, ty, 0, b"x\0"), Err(Enosys), "type {ty}");
    }
    let header = XsdSockmsg {
        ty: 99,
        req_id: 7,
        tx_id: 0,
        len: 0,
    };
    s.handle(&mut h, 3, &header, b"");
    assert_eq!(messages(&mut s, 3), vec![(16, 7, 0, b"ENOSYS\0".to_vec())]);
    let header = XsdSockmsg {
        ty: Read as u32,
        req_id: 0xabcd,
        tx_id: 0,
        len: 7,
    };
    s.handle(&mut h, 3, &header, b"domid\0");
    s.handle(&mut h, 3, &header, b"name\0");
    let replies = messages(&mut s, 3);
    assert_eq!(replies[0], (16, 0xabcd, 0, b"ENOENT\0".to_vec()));
    assert_eq!(replies[1], (Read as u32, 0xabcd, 0, b"guest3".to_vec()));
}

#[test]
fn replies_over_4096_bytes_are_e2big() {
    let (mut s, mut h) = store_with(&[]);
    for i in 0..300 {
        ok(
            &mut s,
            &mut h,
            0,
            Mkdir,
            0,
            &format!("/big/child-number-{i:04}\0"),
        );
    }
    let header = XsdSockmsg {
        ty: Directory as u32,
        req_id: 1,
        tx_id: 0,
        len: 5,
    };
    s.handle(&mut h, 0, &header, b"/big\0");
    assert_eq!(messages(&mut s, 0), vec![(16, 1, 0, b"E2BIG\0".to_vec())]);
    // DIRECTORY_PART hands the same list out in pieces.
    let mut all = Vec::new();
    let mut offset = 0;
    loop {
        let part = ok(
            &mut s,
            &mut h,
            0,
            DirectoryPart,
            0,
            &format!("/big\0{offset}\0"),
        );
        let nul = part.iter().position(|&b| b == 0).unwrap();
        let list = &part[nul + 1..];
        assert!(part.len() <= 4096);
        if list.ends_with(b"\0\0") || list == b"\0" {
            all.extend_from_slice(&list[..list.len() - 1]);
            break;
        }
        all.extend_from_slice(list);
        offset += list.len();
    }
    assert_eq!(all.iter().filter(|&&b| b == 0).count(), 300);
    assert!(all.starts_with(b"child-number-0000\0"));
}

#[test]
fn domains_see_what_their_permissions_allow() {
    let (mut s, mut h) = store_with(&[1, 2]);
    assert_eq!(
        ok(&mut s, &mut h, 1, Read, 0, "name\0"),
        b"guest1",
        "relative to its home"
    );
    assert_eq!(
        ok(&mut s, &mut h, 1, Read, 0, "/local/domain/1/name\0"),
        b"guest1"
    );
    assert_eq!(
        ok(&mut s, &mut h, 1, GetDomainPath, 0, "2\0"),
        b"/local/domain/2\0"
    );
    fails(&mut s, &mut h, 1, Write, 0, "name\0evil", Eacces);
    fails(&mut s, &mut h, 1, Read, 0, "/local/domain/2/name\0", Eacces);
    fails(
        &mut s,
        &mut h,
        1,
        Read,
        0,
        "/local/domain/2/nothing\0",
        Eacces,
    );
    fails(&mut s, &mut h, 1, Read, 0, "nothing\0", Enoent);
    fails(&mut s, &mut h, 1, Read, 0, "/tool\0", Eacces);
    fails(&mut s, &mut h, 1, Write, 0, "/tool/x\0v", Eacces);
    fails(&mut s, &mut h, 1, Rm, 0, "/tool\0", Eacces);
    fails(&mut s, &mut h, 1, Directory, 0, "/\0", Eacces);
    ok(&mut s, &mut h, 1, Write, 0, "data/x/y\0hi");
    assert_eq!(ok(&mut s, &mut h, 1, GetPerms, 0, "data/x/y\0"), b"n1\0");
    assert_eq!(s.owned_nodes(1), 3, "data, data/x, data/x/y");
    fails(
        &mut s,
        &mut h,
        2,
        Read,
        0,
        "/local/domain/1/data/x/y\0",
        Eacces,
    );
    assert_eq!(
        ok(&mut s, &mut h, 0, Read, 0, "/local/domain/1/data/x/y\0"),
        b"hi",
        "dom0 reads all"
    );
}

#[test]
fn privileged_types_are_eacces_for_domus() {
    let (mut s, mut h) = store_with(&[1]);
    for ty in [
        Control,
        Introduce,
        Release,
        IsDomainIntroduced,
        Resume,
        SetTarget,
    ] {
        fails(&mut s, &mut h, 1, ty, 0, "1\0", Eacces);
    }
}

#[test]
fn set_perms_rules() {
    let (mut s, mut h) = store_with(&[1, 2]);
    ok(&mut s, &mut h, 1, Write, 0, "data/shared\0x");
    assert_eq!(
        ok(&mut s, &mut h, 1, SetPerms, 0, "data/shared\0n1\0r2\0"),
        OK
    );
    assert_eq!(
        ok(&mut s, &mut h, 2, Read, 0, "/local/domain/1/data/shared\0"),
        b"x"
    );
    fails(
        &mut s,
        &mut h,
        2,
        Write,
        0,
        "/local/domain/1/data/shared\0y",
        Eacces,
    );
    fails(&mut s, &mut h, 1, SetPerms, 0, "data/shared\0n2\0", Eperm);
    fails(
        &mut s,
        &mut h,
        1,
        SetPerms,
        0,
        "data/shared\0n1\0r2\0r3\0r4\0r5\0r6\0",
        Enospc,
    );
    ok(&mut s, &mut h, 1, SetPerms, 0, "data/shared\0n1\0b2\0");
    fails(
        &mut s,
        &mut h,
        2,
        SetPerms,
        0,
        "/local/domain/1/data/shared\0n1\0b2\0",
        Eacces,
    );
    assert_eq!(
        ok(&mut s, &mut h, 1, GetPerms, 0, "data/shared\0"),
        b"n1\0b2\0"
    );
    ok(
        &mut s,
        &mut h,
        0,
        SetPerms,
        0,
        "/local/domain/1/data/shared\0r2\0",
    );
    assert_eq!(
        s.owned_nodes(2),
        2,
        "its data directory, and the node dom0 gave it"
    );
    assert_eq!(
        ok(&mut s, &mut h, 1, Read, 0, "data/shared\0"),
        b"x",
        "entry 0 is the default"
    );
}

#[test]
fn watches_fire_on_changes_they_may_see() {
    let (mut s, mut h) = store_with(&[1, 2]);
    ok(&mut s, &mut h, 1, Watch, 0, "data\0tok\0");
    assert_eq!(
        events(&mut s, 1),
        ["data tok"],
        "the initial event, as sent"
    );
    ok(&mut s, &mut h, 1, Write, 0, "data/a/b\0v");
    assert_eq!(events(&mut s, 1), ["data/a/b tok"]);
    ok(
        &mut s,
        &mut h,
        0,
        Watch,
        0,
        "/local/domain/1/data/a/b\0deep\0",
    );
    events(&mut s, 0);
    ok(&mut s, &mut h, 1, Rm, 0, "data/a\0");
    assert_eq!(events(&mut s, 1), ["data/a tok"]);
    assert_eq!(
        events(&mut s, 0),
        ["/local/domain/1/data/a/b deep"],
        "a removed parent reports the watch path"
    );
    fails(&mut s, &mut h, 1, Watch, 0, "data\0tok\0", Eexist);
    ok(&mut s, &mut h, 1, Watch, 0, "/local/domain/2\0peek\0");
    ok(&mut s, &mut h, 0, Write, 0, "/local/domain/2/name\0renamed");
    ok(&mut s, &mut h, 2, Write, 0, "data/private\0x");
    assert_eq!(
        events(&mut s, 1),
        ["/local/domain/2 peek"],
        "only the initial event: it cannot read dom2's nodes"
    );
    ok(&mut s, &mut h, 1, Unwatch, 0, "data\0tok\0");
    fails(&mut s, &mut h, 1, Unwatch, 0, "data\0tok\0", Enoent);
    ok(&mut s, &mut h, 0, Write, 0, "/local/domain/1/data/z\0v");
    assert_eq!(events(&mut s, 1), Vec::<String>::new());
    ok(&mut s, &mut h, 1, ResetWatches, 0, "\0");
}

#[test]
fn permission_changes_fire_for_old_and_new_readers() {
    let (mut s, mut h) = store_with(&[1, 2]);
    ok(&mut s, &mut h, 1, Write, 0, "data/p\0x");
    ok(&mut s, &mut h, 1, SetPerms, 0, "data/p\0n1\0r2\0");
    ok(&mut s, &mut h, 2, Watch, 0, "/local/domain/1/data/p\0w\0");
    events(&mut s, 2);
    ok(&mut s, &mut h, 1, SetPerms, 0, "data/p\0n1\0");
    assert_eq!(events(&mut s, 2), ["/local/domain/1/data/p w"]);
}

#[test]
fn watch_quota_is_e2big() {
    let (mut s, mut h) = store_with(&[1]);
    for i in 0..128 {
        ok(&mut s, &mut h, 1, Watch, 0, &format!("data\0t{i}\0"));
    }
    fails(&mut s, &mut h, 1, Watch, 0, "data\0t128\0", E2big);
    for i in 0..200 {
        ok(&mut s, &mut h, 0, Watch, 0, &format!("/tool\0t{i}\0"));
    }
}

#[test]
fn event_queue_is_bounded() {
    let (mut s, mut h) = store_with(&[1]);
    ok(&mut s, &mut h, 1, Watch, 0, "data\0t\0");
    for i in 0..5000 {
        ok(
            &mut s,
            &mut h,
            0,
            Write,
            0,
            &format!("/local/domain/1/data/n\0{i}"),
        );
    }
    assert!(s.output_len(1) <= xenstore::store::EVENT_QUEUE_MAX);
    assert!(s.dropped_events(1) > 0);
}

#[test]
fn transactions_commit_or_conflict() {
    let (mut s, mut h) = store_with(&[1]);
    let tx = ok(&mut s, &mut h, 1, TransactionStart, 0, "\0");
    assert_eq!(tx, b"1\0");
    ok(&mut s, &mut h, 1, Watch, 0, "data\0w\0");
    events(&mut s, 1);
    ok(&mut s, &mut h, 1, Write, 1, "data/t\0inside");
    fails(&mut s, &mut h, 1, Read, 0, "data/t\0", Enoent);
    assert_eq!(ok(&mut s, &mut h, 1, Read, 1, "data/t\0"), b"inside");
    assert_eq!(
        events(&mut s, 1),
        Vec::<String>::new(),
        "no event before the commit"
    );
    fails(&mut s, &mut h, 1, TransactionStart, 1, "\0", Ebusy);
    ok(&mut s, &mut h, 1, TransactionEnd, 1, "T\0");
    assert_eq!(ok(&mut s, &mut h, 1, Read, 0, "data/t\0"), b"inside");
    assert_eq!(events(&mut s, 1), ["data/t w"]);
    fails(&mut s, &mut h, 1, TransactionEnd, 1, "T\0", Enoent);
    fails(&mut s, &mut h, 1, Read, 9, "data/t\0", Enoent);

    // A node the transaction read changes: EAGAIN, nothing applied.
    let tx = ok(&mut s, &mut h, 1, TransactionStart, 0, "\0");
    assert_eq!(tx, b"2\0");
    ok(&mut s, &mut h, 1, Read, 2, "data/t\0");
    ok(&mut s, &mut h, 1, Write, 2, "data/u\0from-tx");
    ok(&mut s, &mut h, 1, Write, 0, "data/t\0outside");
    fails(&mut s, &mut h, 1, TransactionEnd, 2, "T\0", Eagain);
    fails(&mut s, &mut h, 1, Read, 0, "data/u\0", Enoent);

    // Untouched nodes may change meanwhile; aborting applies nothing.
    ok(&mut s, &mut h, 1, TransactionStart, 0, "\0");
    ok(&mut s, &mut h, 1, Write, 3, "data/v\0x");
    ok(&mut s, &mut h, 1, Rm, 3, "data/t\0");
    ok(&mut s, &mut h, 0, Write, 0, "/local/domain/1/name\0other");
    ok(&mut s, &mut h, 1, TransactionEnd, 3, "T\0");
    fails(&mut s, &mut h, 1, Read, 0, "data/t\0", Enoent);
    assert_eq!(ok(&mut s, &mut h, 1, Directory, 0, "data\0"), b"v\0");
    ok(&mut s, &mut h, 1, TransactionStart, 0, "\0");
    ok(&mut s, &mut h, 1, Write, 4, "data/w\0x");
    ok(&mut s, &mut h, 1, TransactionEnd, 4, "F\0");
    fails(&mut s, &mut h, 1, Read, 0, "data/w\0", Enoent);
    assert_eq!(s.owned_nodes(1), 2, "data and data/v");
}

#[test]
fn transaction_quota_is_enospc() {
    let (mut s, mut h) = store_with(&[1]);
    for _ in 0..10 {
        ok(&mut s, &mut h, 1, TransactionStart, 0, "\0");
    }
    fails(&mut s, &mut h, 1, TransactionStart, 0, "\0", Enospc);
    ok(&mut s, &mut h, 1, TransactionEnd, 5, "F\0");
    ok(&mut s, &mut h, 1, TransactionStart, 0, "\0");
    ok(&mut s, &mut h, 1, ResetWatches, 0, "\0");
    fails(&mut s, &mut h, 1, TransactionEnd, 1, "F\0", Enoent);
}

#[test]
fn node_and_size_quotas_are_enospc() {
    let quota = Quota {
        nodes: 20,
        ..Quota::default()
    };
    let mut s = Store::new(quota);
    let mut h = common::FakeHost::default();
    ok(&mut s, &mut h, 0, Mkdir, 0, "/local/domain/1/data\0");
    ok(&mut s, &mut h, 0, SetPerms, 0, "/local/domain/1/data\0n1\0");
    ok(&mut s, &mut h, 0, Introduce, 0, "1\x005\x003\0");
    for i in 0..19 {
        ok(&mut s, &mut h, 1, Write, 0, &format!("data/n{i}\0"));
    }
    fails(&mut s, &mut h, 1, Write, 0, "data/one-too-many\0", Enospc);
    fails(&mut s, &mut h, 1, Mkdir, 0, "data/one-too-many\0", Enospc);
    ok(
        &mut s,
        &mut h,
        1,
        Write,
        0,
        "data/n0\0existing nodes may change",
    );
    ok(
        &mut s,
        &mut h,
        0,
        Write,
        0,
        "/local/domain/1/data/by-dom0\0",
    );
    assert_eq!(s.owned_nodes(1), 21, "dom0 is not limited");
    ok(&mut s, &mut h, 1, Rm, 0, "data/n1\0");
    ok(&mut s, &mut h, 1, Rm, 0, "data/n2\0");
    let big = "v".repeat(2048 - 24 - 8 - 1);
    ok(&mut s, &mut h, 1, Write, 0, &format!("data/n0\0{big}"));
    fails(
        &mut s,
        &mut h,
        1,
        Write,
        0,
        &format!("data/n0\0{big}v"),
        Enospc,
    );
    fails(
        &mut s,
        &mut h,
        1,
        Write,
        0,
        &format!("data/new\0{big}v"),
        Enospc,
    );
    ok(
        &mut s,
        &mut h,
        0,
        Write,
        0,
        &format!("/local/domain/1/data/n0\0{big}{big}"),
    );
}

#[test]
fn introduce_release_and_special_watches() {
    let (mut s, mut h) = store_with(&[]);
    ok(&mut s, &mut h, 0, Watch, 0, "@introduceDomain\0in\0");
    ok(&mut s, &mut h, 0, Watch, 0, "@releaseDomain\0out\0");
    assert_eq!(
        events(&mut s, 0),
        ["@introduceDomain in", "@releaseDomain out"]
    );
    assert_eq!(ok(&mut s, &mut h, 0, IsDomainIntroduced, 0, "4\0"), b"F\0");
    ok(&mut s, &mut h, 0, Mkdir, 0, "/local/domain/4/data\0");
    ok(&mut s, &mut h, 0, SetPerms, 0, "/local/domain/4/data\0n4\0");
    ok(&mut s, &mut h, 0, Introduce, 0, "4\x00300\x007\0");
    assert_eq!(h.introduced, vec![(4, 300, 7)]);
    assert_eq!(events(&mut s, 0), ["@introduceDomain in"]);
    assert_eq!(ok(&mut s, &mut h, 0, IsDomainIntroduced, 0, "4\0"), b"T\0");
    assert_eq!(ok(&mut s, &mut h, 0, IsDomainIntroduced, 0, "0\0"), b"T\0");
    ok(&mut s, &mut h, 0, Introduce, 0, "4\x00300\x008\0");
    assert_eq!(
        events(&mut s, 0),
        Vec::<String>::new(),
        "introducing again only rebinds"
    );
    ok(&mut s, &mut h, 4, Watch, 0, "@releaseDomain\0mine\0");
    ok(&mut s, &mut h, 4, Write, 0, "data/x\0");
    ok(&mut s, &mut h, 0, Resume, 0, "4\0");
    fails(&mut s, &mut h, 0, Resume, 0, "5\0", Enoent);
    ok(&mut s, &mut h, 0, Release, 0, "4\0");
    assert_eq!(h.released, vec![4]);
    assert_eq!(events(&mut s, 0), ["@releaseDomain out"]);
    fails(&mut s, &mut h, 0, Read, 0, "/local/domain/4/data\0", Enoent);
    assert_eq!(
        ok(&mut s, &mut h, 0, Directory, 0, "/local/domain/4\0"),
        b"",
        "only its own nodes go"
    );
    assert_eq!(s.owned_nodes(4), 0);
    fails(&mut s, &mut h, 0, Release, 0, "4\0", Enoent);
    h.refuse = true;
    fails(&mut s, &mut h, 0, Introduce, 0, "6\x001\x002\0", Einval);
    assert!(!s.is_introduced(6));
}

#[test]
fn special_watch_permissions() {
    let (mut s, mut h) = store_with(&[1]);
    ok(&mut s, &mut h, 1, Watch, 0, "@introduceDomain\0i\0");
    events(&mut s, 1);
    fails(
        &mut s,
        &mut h,
        1,
        SetPerms,
        0,
        "@introduceDomain\0n0\0r1\0",
        Eacces,
    );
    ok(&mut s, &mut h, 0, Introduce, 0, "2\x001\x001\0");
    assert_eq!(events(&mut s, 1), Vec::<String>::new());
    ok(&mut s, &mut h, 0, SetPerms, 0, "@introduceDomain\0n0\0r1\0");
    assert_eq!(
        ok(&mut s, &mut h, 1, GetPerms, 0, "@introduceDomain\0"),
        b"n0\0r1\0"
    );
    ok(&mut s, &mut h, 0, Introduce, 0, "3\x001\x001\0");
    assert_eq!(events(&mut s, 1), ["@introduceDomain i"]);
}

#[test]
fn set_target_lets_a_device_model_act_for_its_domain() {
    let (mut s, mut h) = store_with(&[1, 2]);
    fails(&mut s, &mut h, 2, Read, 0, "/local/domain/1/name\0", Eacces);
    ok(&mut s, &mut h, 0, SetTarget, 0, "2\x001\0");
    assert_eq!(
        ok(&mut s, &mut h, 2, Read, 0, "/local/domain/1/name\0"),
        b"guest1"
    );
    fails(&mut s, &mut h, 0, SetTarget, 0, "2\x009\0", Enoent);
}

#[test]
fn framed_requests_keep_their_order() {
    let (mut s, mut h) = store_with(&[1]);
    let raw = request(Watch as u32, 5, 0, b"data\0t\0");
    let header = dom0_abi::wire::Wire::from_wire(&raw).unwrap();
    s.handle(&mut h, 1, &header, &raw[16..]);
    let out = messages(&mut s, 1);
    assert_eq!(out[0], (Watch as u32, 5, 0, OK.to_vec()));
    assert_eq!(
        out[1],
        (XsType::WatchEvent as u32, 0, 0, b"data\0t\0".to_vec())
    );
    assert_eq!(
        call(&mut s, &mut h, 9, Read, 0, "x\0"),
        Err(Einval),
        "no connection"
    );
}
