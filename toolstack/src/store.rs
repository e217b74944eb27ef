//! What the toolstack writes into xenstore for each domain, as `xl` does
//! (libxl's `libxl__domain_make`, `libxl__build_post` and the console
//! device), its virtual block devices (`libxl__device_disk_add`), and the
//! INTRODUCE that hands the domain's ring to the store.
//!
//! Everything goes through [`xenstore::Store::call`] as dom0, the same
//! requests libxl sends over its socket. Not written: `/vm/<uuid>` and the
//! `vm` link (domains have no UUID here), `start_time`, and the device
//! directories of network devices, which dom0's netback writes when it
//! adds a vif ([`add_vif`]).
#![forbid(unsafe_code)]

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use dom0_abi::xenstore::XsType;
use xenstore::{DomId, Host, Store, XsError};

use crate::builder::Built;
use crate::config::{Disk, DomainConfig};

/// `console/limit`, libxl's default.
const CONSOLE_LIMIT: &str = "1048576";

fn request(
    store: &mut Store,
    host: &mut impl Host,
    ty: XsType,
    args: &[&[u8]],
) -> Result<(), XsError> {
    let mut payload = Vec::new();
    for (i, arg) in args.iter().enumerate() {
        payload.extend_from_slice(arg);
        // WRITE's value is the rest of the payload, without a NUL.
        if !(ty == XsType::Write && i + 1 == args.len()) {
            payload.push(0);
        }
    }
    store.call(host, 0, ty as u32, 0, &payload).map(|_| ())
}

fn write(store: &mut Store, host: &mut impl Host, path: &str, value: &str) -> Result<(), XsError> {
    request(
        store,
        host,
        XsType::Write,
        &[path.as_bytes(), value.as_bytes()],
    )
}

fn mkdir(
    store: &mut Store,
    host: &mut impl Host,
    path: &str,
    perms: &[String],
) -> Result<(), XsError> {
    request(store, host, XsType::Mkdir, &[path.as_bytes()])?;
    let mut args: Vec<&[u8]> = alloc::vec![path.as_bytes()];
    args.extend(perms.iter().map(String::as_bytes));
    request(store, host, XsType::SetPerms, &args)
}

/// dom0's own nodes (`xen-init-dom0`): `/local/domain/0/{name,domid}`.
pub fn write_dom0(store: &mut Store, host: &mut impl Host) -> Result<(), XsError> {
    write(store, host, "/local/domain/0/name", "Domain-0")?;
    write(store, host, "/local/domain/0/domid", "0")
}

/// The nodes of a new domU, then INTRODUCE of its ring (`store_mfn`,
/// `store_port` of `built`): its home `/local/domain/<D>` (`n0 r<D>`) with
/// `name`, `domid`, `memory/{static-max,target,videoram}`,
/// `cpu/<N>/availability`, `control/*`, the guest-writable scratch
/// directories, `store/*` and `console/*`, the console back end directory
/// under `/local/domain/0/backend/console/<D>/0` and `/libxl/<D>/type`.
pub fn introduce_domu(
    store: &mut Store,
    host: &mut impl Host,
    cfg: &DomainConfig<'_>,
    built: &Built,
) -> Result<(), XsError> {
    let d: DomId = built.domid;
    let home = format!("/local/domain/{d}");
    let readable = [String::from("n0"), format!("r{d}")];
    let private = [format!("n{d}")];
    mkdir(store, host, &home, &readable)?;
    write(store, host, &format!("{home}/name"), cfg.name)?;
    write(store, host, &format!("{home}/domid"), &format!("{d}"))?;
    for dir in ["cpu", "memory", "device", "control"] {
        mkdir(store, host, &format!("{home}/{dir}"), &readable)?;
    }
    let kib = cfg.max_memkb().saturating_sub(1024);
    write(
        store,
        host,
        &format!("{home}/memory/static-max"),
        &format!("{kib}"),
    )?;
    write(
        store,
        host,
        &format!("{home}/memory/target"),
        &format!("{kib}"),
    )?;
    write(store, host, &format!("{home}/memory/videoram"), "-1")?;
    for vcpu in 0..cfg.vcpus {
        write(
            store,
            host,
            &format!("{home}/cpu/{vcpu}/availability"),
            "online",
        )?;
    }
    mkdir(
        store,
        host,
        &format!("{home}/device/suspend/event-channel"),
        &private,
    )?;
    for node in [
        "shutdown",
        "feature-poweroff",
        "feature-reboot",
        "feature-suspend",
        "sysrq",
    ] {
        mkdir(store, host, &format!("{home}/control/{node}"), &private)?;
    }
    for node in [
        "platform-feature-multiprocessor-suspend",
        "platform-feature-xs_reset_watches",
    ] {
        write(store, host, &format!("{home}/control/{node}"), "1")?;
    }
    for dir in ["data", "drivers", "feature", "attr", "error"] {
        mkdir(store, host, &format!("{home}/{dir}"), &private)?;
    }
    write(
        store,
        host,
        &format!("{home}/store/port"),
        &format!("{}", built.store_port),
    )?;
    write(
        store,
        host,
        &format!("{home}/store/ring-ref"),
        &format!("{}", built.store_mfn),
    )?;
    let backend = format!("/local/domain/0/backend/console/{d}/0");
    let console = format!("{home}/console");
    for (key, value) in [
        ("backend", backend.as_str()),
        ("backend-id", "0"),
        ("ring-ref", &format!("{}", built.console_mfn)),
        ("port", &format!("{}", built.console_port)),
        ("limit", CONSOLE_LIMIT),
        ("type", "xenconsoled"),
        ("output", "pty"),
    ] {
        write(store, host, &format!("{console}/{key}"), value)?;
    }
    mkdir(store, host, &backend, &readable)?;
    for (key, value) in [
        ("frontend-id", &format!("{d}")[..]),
        ("online", "1"),
        ("state", "1"),
        ("protocol", "vt100"),
        ("frontend", &console),
    ] {
        write(store, host, &format!("{backend}/{key}"), value)?;
    }
    for disk in cfg.disks() {
        write_vbd(store, host, d, disk)?;
    }
    mkdir(store, host, &format!("/libxl/{d}"), &[String::from("n0")])?;
    write(store, host, &format!("/libxl/{d}/type"), "pv")?;
    let mfn = format!("{}", built.store_mfn);
    let port = format!("{}", built.store_port);
    let domid = format!("{d}");
    request(
        store,
        host,
        XsType::Introduce,
        &[domid.as_bytes(), mfn.as_bytes(), port.as_bytes()],
    )
}

/// The back end directory of vif `devid` of domain `domid`.
#[must_use]
pub fn vif_backend(domid: DomId, devid: u32) -> String {
    format!("/local/domain/0/backend/vif/{domid}/{devid}")
}

/// The front end directory of vif `devid` of domain `domid`.
#[must_use]
pub fn vif_frontend(domid: DomId, devid: u32) -> String {
    format!("/local/domain/{domid}/device/vif/{devid}")
}

/// The MAC of a vif without `mac=`: `00:16:3e` (Xen's OUI), then the
/// domain id and the device number.
#[must_use]
pub fn default_mac(domid: DomId, devid: u32) -> crate::bridge::Mac {
    let [hi, lo] = domid.to_be_bytes();
    [0x00, 0x16, 0x3e, hi, lo, devid.to_le_bytes()[0]]
}

/// What `xl` writes for `vif = [...]` (libxl's device add, state 1): the
/// back end directory (dom0's, readable by the domain) with
/// `frontend`, `frontend-id`, `online`, `state`, `script`, `mac`,
/// `bridge`, `handle`, `type`, `hotplug-status` and `ip`; the front end
/// directory (the domain's, readable by dom0) with `backend`,
/// `backend-id`, `state`, `handle`, `mac` and `trusted`.
pub fn add_vif(
    store: &mut Store,
    host: &mut impl Host,
    domid: DomId,
    devid: u32,
    vif: &crate::config::VifConfig<'_>,
) -> Result<(), XsError> {
    use dom0_abi::netif::keys;
    let back = vif_backend(domid, devid);
    let front = vif_frontend(domid, devid);
    let mac = format!(
        "{}",
        crate::bridge::ShowMac(vif.mac.unwrap_or(default_mac(domid, devid)))
    );
    let (d, handle) = (format!("{domid}"), format!("{devid}"));
    mkdir(
        store,
        host,
        &back,
        &[String::from("n0"), format!("r{domid}")],
    )?;
    let mut back_keys = alloc::vec![
        (keys::FRONTEND, front.as_str()),
        (keys::FRONTEND_ID, d.as_str()),
        (keys::ONLINE, "1"),
        (keys::STATE, "1"),
        (keys::SCRIPT, "vif-bridge"),
        (keys::MAC, mac.as_str()),
        (keys::BRIDGE, vif.bridge.unwrap_or("xenbr0")),
        (keys::HANDLE, handle.as_str()),
        (keys::TYPE, "vif"),
        (keys::HOTPLUG_STATUS, ""),
    ];
    if let Some(ip) = vif.ip {
        back_keys.push((keys::IP, ip));
    }
    for (key, value) in back_keys {
        write(store, host, &format!("{back}/{key}"), value)?;
    }
    mkdir(
        store,
        host,
        &front,
        &[format!("n{domid}"), String::from("r0")],
    )?;
    for (key, value) in [
        (keys::BACKEND, back.as_str()),
        (keys::BACKEND_ID, "0"),
        (keys::STATE, "1"),
        (keys::HANDLE, handle.as_str()),
        (keys::MAC, mac.as_str()),
        ("trusted", "1"),
    ] {
        write(store, host, &format!("{front}/{key}"), value)?;
    }
    Ok(())
}

/// What a netback publishes when it probes a new vif: its features
/// (`feature-rx-copy` 1, `feature-rx-flip` 0, no scatter-gather or GSO),
/// `hotplug-status` `connected` (dom0 has no hotplug script to wait
/// for), then state 2 (InitWait).
pub fn vif_backend_probe(
    store: &mut Store,
    host: &mut impl Host,
    backend: &str,
) -> Result<(), XsError> {
    use dom0_abi::netif::keys;
    for (key, value) in [
        (keys::FEATURE_SG, "0"),
        (keys::FEATURE_GSO_TCPV4, "0"),
        (keys::FEATURE_RX_COPY, "1"),
        (keys::FEATURE_RX_FLIP, "0"),
        (keys::HOTPLUG_STATUS, "connected"),
        (keys::STATE, "2"),
    ] {
        write(store, host, &format!("{backend}/{key}"), value)?;
    }
    Ok(())
}

/// The back end directory of disk `devid` of domain `domid` (dom0 is
/// the back end).
#[must_use]
pub fn vbd_backend(domid: DomId, devid: u32) -> String {
    format!("/local/domain/0/backend/vbd/{domid}/{devid}")
}

/// The front end directory of disk `devid` of domain `domid`.
#[must_use]
pub fn vbd_frontend(domid: DomId, devid: u32) -> String {
    format!("/local/domain/{domid}/device/vbd/{devid}")
}

/// A disk's two directories, both in state 1 (Initialising), as libxl
/// writes them: the back end's (`n0 r<D>`: dom0 owns it, the domU reads
/// it) and the front end's (`n<D> r0`: the domU owns it).
///
/// # Errors
/// A store request failed.
pub fn write_vbd(
    store: &mut Store,
    host: &mut impl Host,
    d: DomId,
    disk: &Disk<'_>,
) -> Result<(), XsError> {
    use dom0_abi::blkif::keys;
    let backend = vbd_backend(d, disk.devid);
    let frontend = vbd_frontend(d, disk.devid);
    mkdir(
        store,
        host,
        &backend,
        &[String::from("n0"), format!("r{d}")],
    )?;
    for (key, value) in [
        (keys::FRONTEND_ID, &format!("{d}")[..]),
        (keys::FRONTEND, &frontend),
        ("online", "1"),
        ("removable", "0"),
        ("bootable", "1"),
        (keys::STATE, "1"),
        (keys::DEV, disk.vdev),
        ("type", disk.backing.kind()),
        (keys::MODE, if disk.writable { "w" } else { "r" }),
        (keys::DEVICE_TYPE, "disk"),
        ("discard-enable", if disk.writable { "1" } else { "0" }),
        (keys::PARAMS, disk.params()),
    ] {
        write(store, host, &format!("{backend}/{key}"), value)?;
    }
    mkdir(
        store,
        host,
        &frontend,
        &[format!("n{d}"), String::from("r0")],
    )?;
    for (key, value) in [
        (keys::BACKEND_ID, "0"),
        (keys::BACKEND, &backend[..]),
        (keys::STATE, "1"),
        (keys::VIRTUAL_DEVICE, &format!("{}", disk.devid)),
        (keys::DEVICE_TYPE, "disk"),
        ("trusted", "1"),
    ] {
        write(store, host, &format!("{frontend}/{key}"), value)?;
    }
    Ok(())
}

/// What `xl block-detach` removes once the device is closed: both of
/// disk `devid`'s directories.
///
/// # Errors
/// A store request failed (a directory already gone is not an error).
pub fn remove_vbd(
    store: &mut Store,
    host: &mut impl Host,
    d: DomId,
    devid: u32,
) -> Result<(), XsError> {
    for path in [vbd_backend(d, devid), vbd_frontend(d, devid)] {
        match request(store, host, XsType::Rm, &[path.as_bytes()]) {
            Ok(()) | Err(XsError::Enoent) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// What `xl destroy` removes from the store once the domain is gone
/// (after [`Store::release`]): its home, its console, disk and vif back
/// ends and `/libxl/<D>`.
pub fn remove_domu(store: &mut Store, host: &mut impl Host, domid: DomId) -> Result<(), XsError> {
    for path in [
        format!("/local/domain/{domid}"),
        format!("/local/domain/0/backend/console/{domid}"),
        format!("/libxl/{domid}"),
    ] {
        request(store, host, XsType::Rm, &[path.as_bytes()])?;
    }
    for kind in ["vbd", "vif"] {
        let backends = format!("/local/domain/0/backend/{kind}/{domid}");
        match request(store, host, XsType::Rm, &[backends.as_bytes()]) {
            Ok(()) | Err(XsError::Enoent) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// `xenstore-ls`: every node below `path` (not `path` itself), depth
/// first in each directory's order, as `<indent><name> = "<value>"` with
/// one space of indent per level below `path`, the value's non-printable
/// bytes escaped as `\xNN`.
pub fn ls(
    store: &mut Store,
    host: &mut impl Host,
    path: &str,
    emit: &mut impl FnMut(&str),
) -> Result<(), XsError> {
    let mut stack: Vec<(String, usize)> = alloc::vec![(String::from(path), 0)];
    let mut first = true;
    while let Some((node, depth)) = stack.pop() {
        if !first {
            let value = call(store, host, XsType::Read, &node)?;
            let mut line = String::new();
            line.extend(core::iter::repeat_n(' ', depth - 1));
            line.push_str(node.rsplit('/').next().unwrap_or(""));
            line.push_str(" = \"");
            for &b in &value {
                if b.is_ascii_graphic() || b == b' ' {
                    if b == b'"' || b == b'\\' {
                        line.push('\\');
                    }
                    line.push(char::from(b));
                } else {
                    line.push_str(&format!("\\x{b:02x}"));
                }
            }
            line.push('"');
            emit(&line);
        }
        first = false;
        let children = call(store, host, XsType::Directory, &node)?;
        let names: Vec<&[u8]> = children
            .split(|&b| b == 0)
            .filter(|n| !n.is_empty())
            .collect();
        for name in names.into_iter().rev() {
            let name = core::str::from_utf8(name).map_err(|_| XsError::Einval)?;
            let child = if node == "/" {
                format!("/{name}")
            } else {
                format!("{node}/{name}")
            };
            stack.push((child, depth + 1));
        }
    }
    Ok(())
}

/// One request of dom0's naming `path`.
fn call(
    store: &mut Store,
    host: &mut impl Host,
    ty: XsType,
    path: &str,
) -> Result<Vec<u8>, XsError> {
    let mut payload = Vec::from(path.as_bytes());
    payload.push(0);
    store.call(host, 0, ty as u32, 0, &payload)
}

/// `xenstore-read`: the value of `path`.
pub fn read(store: &mut Store, host: &mut impl Host, path: &str) -> Result<Vec<u8>, XsError> {
    call(store, host, XsType::Read, path)
}

/// `xenstore-write`: sets `path` to `value`.
pub fn write_value(
    store: &mut Store,
    host: &mut impl Host,
    path: &str,
    value: &str,
) -> Result<(), XsError> {
    write(store, host, path, value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Action;
    use crate::layout::DomuLayout;

    #[derive(Default)]
    struct Recorder(Vec<(DomId, u64, u32)>);

    impl Host for Recorder {
        fn introduce(&mut self, domid: DomId, mfn: u64, port: u32) -> Result<(), XsError> {
            self.0.push((domid, mfn, port));
            Ok(())
        }
        fn release(&mut self, _domid: DomId) {}
    }

    fn read(store: &mut Store, from: DomId, path: &str) -> Result<Vec<u8>, XsError> {
        let mut payload = Vec::from(path.as_bytes());
        payload.push(0);
        store.call(
            &mut Recorder::default(),
            from,
            XsType::Read as u32,
            0,
            &payload,
        )
    }

    #[test]
    fn a_domu_gets_xls_nodes_and_is_introduced() {
        let cfg = DomainConfig {
            name: "demo",
            kernel: "k",
            memory_mib: 4,
            vcpus: 2,
            cmdline: "",
            on_poweroff: Action::Destroy,
            on_crash: Action::Destroy,
            vif: None,
            disks: [
                Some(crate::config::Disk::parse("ram:1M,raw,xvdb,r").unwrap()),
                None,
                None,
                None,
            ],
        };
        let built = Built {
            domid: 3,
            console_mfn: 0x1234,
            console_port: 2,
            store_mfn: 0x1233,
            store_port: 1,
            shared_info_mfn: 0,
            l4_mfn: 0,
            layout: DomuLayout::new(0x40_0000, 0x40_0000, 0x50_0000, 1024).unwrap(),
            entry: 0,
        };
        let mut store = Store::default();
        let mut host = Recorder::default();
        write_dom0(&mut store, &mut host).unwrap();
        introduce_domu(&mut store, &mut host, &cfg, &built).unwrap();
        assert_eq!(host.0, [(3, 0x1233, 1)]);
        assert!(store.is_introduced(3));
        assert_eq!(read(&mut store, 3, "name").unwrap(), b"demo");
        assert_eq!(read(&mut store, 3, "domid").unwrap(), b"3");
        assert_eq!(read(&mut store, 3, "memory/target").unwrap(), b"4096");
        assert_eq!(
            read(&mut store, 3, "cpu/1/availability").unwrap(),
            b"online"
        );
        assert_eq!(read(&mut store, 3, "console/ring-ref").unwrap(), b"4660");
        assert_eq!(read(&mut store, 3, "store/port").unwrap(), b"1");
        assert_eq!(
            read(&mut store, 0, "/local/domain/0/name").unwrap(),
            b"Domain-0"
        );
        assert_eq!(
            read(&mut store, 3, "/local/domain/0/name"),
            Err(XsError::Eacces)
        );
        assert_eq!(
            read(
                &mut store,
                3,
                "/local/domain/0/backend/console/3/0/frontend"
            )
            .unwrap(),
            b"/local/domain/3/console"
        );
        assert_eq!(
            read(&mut store, 3, "device/vbd/51728/backend").unwrap(),
            b"/local/domain/0/backend/vbd/3/51728"
        );
        assert_eq!(
            read(&mut store, 3, "/local/domain/0/backend/vbd/3/51728/mode").unwrap(),
            b"r"
        );
        assert_eq!(read(&mut store, 3, "device/vbd/51728/state").unwrap(), b"1");
        let ring_ref = store.call(
            &mut host,
            3,
            XsType::Write as u32,
            0,
            b"device/vbd/51728/ring-ref\x008",
        );
        assert_eq!(ring_ref, Ok(Vec::from(&b"OK\0"[..])));
        let steal = store.call(
            &mut host,
            3,
            XsType::Write as u32,
            0,
            b"/local/domain/0/backend/vbd/3/51728/state\x004",
        );
        assert_eq!(steal, Err(XsError::Eacces));
        let write_data = store.call(&mut host, 3, XsType::Write as u32, 0, b"data/x\0y");
        assert_eq!(write_data, Ok(Vec::from(&b"OK\0"[..])));
        let write_home = store.call(&mut host, 3, XsType::Write as u32, 0, b"name\0evil");
        assert_eq!(write_home, Err(XsError::Eacces));
        // block-attach, then block-detach: a phy: disk's nodes, then none.
        let hot = crate::config::Disk::parse("phy:/dev/vda2,xvdc,w").unwrap();
        write_vbd(&mut store, &mut host, 3, &hot).unwrap();
        let hot_back = vbd_backend(3, hot.devid);
        for (key, value) in [("type", "phy"), ("params", "/dev/vda2"), ("mode", "w")] {
            let path = format!("{hot_back}/{key}");
            assert_eq!(read(&mut store, 3, &path).unwrap(), value.as_bytes());
        }
        remove_vbd(&mut store, &mut host, 3, hot.devid).unwrap();
        assert_eq!(
            read(&mut store, 3, "device/vbd/51744/state"),
            Err(XsError::Enoent)
        );
        assert!(read(&mut store, 0, &format!("{hot_back}/state")).is_err());
        remove_vbd(&mut store, &mut host, 3, hot.devid).unwrap();
        assert_eq!(read(&mut store, 3, "device/vbd/51728/state").unwrap(), b"1");
        let vif = crate::config::VifConfig {
            ip: Some("10.0.0.3"),
            ..Default::default()
        };
        add_vif(&mut store, &mut host, 3, 0, &vif).unwrap();
        let back = vif_backend(3, 0);
        assert_eq!(
            read(&mut store, 3, &format!("{back}/mac")).unwrap(),
            b"00:16:3e:00:03:00"
        );
        assert_eq!(
            read(&mut store, 3, &format!("{back}/ip")).unwrap(),
            b"10.0.0.3"
        );
        assert_eq!(
            read(&mut store, 3, "device/vif/0/backend").unwrap(),
            back.as_bytes()
        );
        let write_front = store.call(
            &mut host,
            3,
            XsType::Write as u32,
            0,
            b"device/vif/0/state\x004",
        );
        assert_eq!(write_front, Ok(Vec::from(&b"OK\0"[..])));
        let write_back = store.call(
            &mut host,
            3,
            XsType::Write as u32,
            0,
            b"/local/domain/0/backend/vif/3/0/state\x004",
        );
        assert_eq!(write_back, Err(XsError::Eacces));
        vif_backend_probe(&mut store, &mut host, &back).unwrap();
        assert_eq!(read(&mut store, 3, &format!("{back}/state")).unwrap(), b"2");
        store.release(&mut host, 3).unwrap();
        remove_domu(&mut store, &mut host, 3).unwrap();
        assert_eq!(read(&mut store, 0, &back), Err(XsError::Enoent));
        assert_eq!(read(&mut store, 0, "/local/domain/3"), Err(XsError::Enoent));
        assert_eq!(read(&mut store, 0, "/libxl/3"), Err(XsError::Enoent));
        assert_eq!(
            read(&mut store, 0, "/local/domain/0/backend/vbd/3"),
            Err(XsError::Enoent)
        );
        assert_eq!(store.owned_nodes(3), 0);
    }

    #[test]
    fn ls_shows_the_tree_like_xenstore_ls() {
        let mut store = Store::default();
        let mut host = Recorder::default();
        write_dom0(&mut store, &mut host).unwrap();
        write_value(&mut store, &mut host, "/a/b", "x\"y\u{1}").unwrap();
        write_value(&mut store, &mut host, "/a/c", "").unwrap();
        let mut lines = Vec::new();
        ls(&mut store, &mut host, "/", &mut |l| {
            lines.push(String::from(l))
        })
        .unwrap();
        assert_eq!(
            lines,
            [
                "tool = \"\"",
                " xenstored = \"\"",
                "local = \"\"",
                " domain = \"\"",
                "  0 = \"\"",
                "   name = \"Domain-0\"",
                "   domid = \"0\"",
                "a = \"\"",
                " b = \"x\\\"y\\x01\"",
                " c = \"\"",
            ]
        );
        lines.clear();
        ls(&mut store, &mut host, "/a", &mut |l| {
            lines.push(String::from(l))
        })
        .unwrap();
        assert_eq!(lines, ["b = \"x\\\"y\\x01\"", "c = \"\""]);
        assert_eq!(
            super::read(&mut store, &mut host, "/a/c").unwrap(),
            Vec::<u8>::new()
        );
        assert_eq!(
            ls(&mut store, &mut host, "/nope", &mut |_| {}),
            Err(XsError::Enoent)
        );
    }
}
