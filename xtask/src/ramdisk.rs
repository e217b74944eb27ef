//! dom0's ramdisk: a cpio archive in the "newc" format (what `cpio -o -H
//! newc` writes and Linux initramfs reads) holding domU kernels and their
//! `xl.cfg`-subset configurations, which dom0's toolstack reads
//! (`toolstack::cpio`).
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use crate::build::Workspace;

/// The newc magic.
const MAGIC: &str = "070701";
/// Mode of a regular file, rw-r--r--.
const FILE_MODE: u32 = 0o100_644;

/// Pads `out` with zero bytes to a multiple of 4.
fn pad4(out: &mut Vec<u8>) {
    while !out.len().is_multiple_of(4) {
        out.push(0);
    }
}

/// One member: header, NUL-terminated name, data, each padded to 4 bytes.
fn member(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, data: &[u8]) -> Result<(), String> {
    let size = u32::try_from(data.len()).map_err(|_| format!("{name}: larger than 4 GiB"))?;
    let namesize = u32::try_from(name.len() + 1).map_err(|_| format!("{name}: name too long"))?;
    // ino, mode, uid, gid, nlink, mtime, filesize, devmajor, devminor,
    // rdevmajor, rdevminor, namesize, check.
    let fields = [ino, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, namesize, 0];
    out.extend_from_slice(MAGIC.as_bytes());
    for field in fields {
        out.extend_from_slice(format!("{field:08X}").as_bytes());
    }
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    pad4(out);
    out.extend_from_slice(data);
    pad4(out);
    Ok(())
}

/// Mode of an executable file, rwxr-xr-x.
pub const EXEC_MODE: u32 = 0o100_755;
/// Mode of a directory, rwxr-xr-x.
pub const DIR_MODE: u32 = 0o040_755;

/// A newc archive of regular files (in the given order), with the trailer.
pub fn newc(files: &[(&str, &[u8])]) -> Result<Vec<u8>, String> {
    let members: Vec<(&str, u32, &[u8])> = files
        .iter()
        .map(|&(name, data)| (name, FILE_MODE, data))
        .collect();
    newc_members(&members)
}

/// A newc archive of `(name, mode, data)` members in the given order (a
/// directory before what it holds), with the trailer.
pub fn newc_members(members: &[(&str, u32, &[u8])]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    for (ino, &(name, mode, data)) in (1..).zip(members) {
        if name.is_empty() || name.contains('\0') {
            return Err(format!("cpio: bad member name {name:?}"));
        }
        member(&mut out, ino, name, mode, data)?;
    }
    member(&mut out, 0, "TRAILER!!!", 0, b"")?;
    Ok(out)
}

/// The domUs a toolstack test puts in dom0's ramdisk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DomuSet {
    /// One demo domU that prints and powers off.
    Demo,
    /// One demo domU told to crash (`crash` on its command line).
    Crash,
    /// The demo domU driven by a shell script (`shell.xl`): created
    /// paused, pause counts, scheduling parameters, then run.
    Shell,
    /// The demo domU told to `probe`: it tries the control domain's
    /// hypercalls on dom0 and reports each result as a check line.
    Probe,
    /// The demo domU told to use `xenstore`: reads, writes, permissions,
    /// watches, transactions, malformed requests and quotas, each answer
    /// a check line.
    Xenstore,
    /// The demo domU and a script of the shell's xenstore commands
    /// (`xenstore.xl`): dom0 reads, writes and lists its nodes before and
    /// after it runs.
    XenstoreShell,
    /// The demo domU told to `grant`: it grants two pages to dom0, which
    /// maps, writes and copies one and keeps the other mapped while the
    /// domU shuts down and is destroyed.
    Grant,
    /// Two demo domUs on dom0's bridge (`vif = [...]`): one serves, the
    /// other pings it and exchanges a TCP echo with it (smoltcp).
    Net,
    /// The [`DomuSet::Net`] pair and two hostile front ends beside them:
    /// one sends a bad grant reference (an error status), then a TX slot
    /// past its page, the other runs its TX ring index past the ring
    /// (dom0 disconnects both; the pair keeps talking).
    NetHostile,
    /// The demo domU on a 2 MiB RAM disk (`blk`): random writes read
    /// back, the whole disk verified, a discard, a flush; then its second
    /// disk, read-only.
    Blk,
    /// Two demo domUs on separate RAM disks at once.
    BlkTwo,
    /// A hostile block front end (`blkhostile`) beside a well-behaved one.
    BlkHostile,
    /// The demo domU and a script (`devices.xl`) that first lists the
    /// machine's PCI functions with the drivers that take them.
    Devices,
    /// The `disk` domU on the virtio disk's first partition (`phy:vda1`):
    /// random ranges up to 16 MiB written and read back, a flush, a read
    /// past the partition's end; the second partition read-only.
    PhyDisk,
    /// Two `disk` domUs at once, one on each partition of the virtio disk.
    PhyDiskTwo,
    /// The `disk` domU with `hotplug`, driven by a script (`hotplug.xl`):
    /// `block-list`, `block-detach` of its `xvda` (closed through the
    /// handshake), `block-attach` of `vda2` as `xvdb` (it connects and
    /// runs its test there).
    PhyDiskHotplug,
    /// The web domU alone: HTTP on port 80 of 10.0.2.15, reached from the
    /// host through dom0's uplink (dom0 with `nic`).
    Web,
    /// The default scenario of `cargo xtask run`: every domU of
    /// [`SCENARIO`].
    Scenario,
    /// Eight demo domUs doing the same fixed work (`spin=`), weights
    /// 1:2:4:8 (two each), measured by the shell's `cpu-share`
    /// (`share.xl`).
    Fairness,
    /// Two demo domUs doing the same fixed work (`spin=`), measured by the
    /// shell's `cpu-share` on two CPUs: both run at once (`par.xl`).
    Parallel,
    /// Two demo domUs on two CPUs copying from each other's grant at
    /// once (`copy=<peer>`): the one that needs the lower id's domain
    /// while the other holds it is continued, never refused.
    CrossCopy,
    /// Three demo domUs on two CPUs: domain 2 copies from domain 1's grant
    /// into domain 3's (`copy=1 into=3`, a copy between two other
    /// domains, the lower one's slot often held by domain 1's own copies
    /// from domain 2) while domain 1 copies from domain 2's grant;
    /// domain 3 holds the destination (`hold=2`). No copy may fail and
    /// none may leave a grant pinned.
    CopyThree,
    /// The `disk` domU reading the whole virtio disk (`phy:vda`, read-only)
    /// for the block benchmark (`readbench`, `blk_read_domu`).
    BlkBench,
    /// The web domU as the network benchmark's receiver (`net web
    /// netbench`, `net_recv_domu`): the host's streams on port 80 of
    /// 10.0.2.15 through dom0's bridge (dom0 with `nic netbench`).
    NetBench,
    /// The demo domU answering dom0's events (`pong`): the cross-domain
    /// wake test and the interdomain ping-pong benchmark.
    Pong,
    /// A 1 MiB demo domU that prints and then idles (`tiny.cfg`), and the
    /// scripts that create many of them with the shell's `scale`:
    /// `scale.xl` (100, the `dom0_scale` test) and `scale500.xl` (500, the
    /// documented long run, `docs/dom0.md`).
    Scale,
    /// The demo domU waiting for a line on its console (`input`), typed
    /// at dom0's `console` attach.
    Typist,
    /// The hypercall fuzzer (the test guest's `test=fuzz`) as an
    /// unprivileged domU with two vCPUs: the hypercalls a domU may make,
    /// and those it may not, with hostile arguments. dom0 checks its
    /// result line and destroys it; the hypervisor's teardown at dom0's
    /// end then counts every frame back.
    Fuzz,
    /// The test guest's two shared-page-table tests as two domUs with two
    /// vCPUs each, on two CPUs (`test=smp_remote_flush` and
    /// `test=smp_mmu_update_shared`): dom0 checks each result line.
    SharedTables,
}

/// The domUs of the default scenario (`cargo xtask run`), created in this
/// order: one list, so that a new device domU is one more line.
pub const SCENARIO: &[(&str, &str)] = &[
    ("web.cfg", WEB_CONFIG),
    ("demo.cfg", DEMO_CONFIG),
    ("disk.cfg", PHY_DISK_CONFIG),
];

/// The web domU: smoltcp's HTTP server on QEMU's user network, with a
/// static address and QEMU's gateway.
const WEB_CONFIG: &str = "# The web domU: HTTP on port 80, reached from the host through dom0's uplink.\n\
    name = \"web\"\nkernel = \"domu-demo\"\nmemory = 8\ncmdline = \"net web gw=10.0.2.2\"\n\
    vif = ['mac=00:16:3e:00:00:80,ip=10.0.2.15']\n";

/// The `disk` domU on `vda1`, with `vda2` read-only (`base=` is where
/// `vda1` starts: `pv_tests::disk::PARTITIONS`); after the test it
/// breaks the rules of persistent grants (`revoke`).
const PHY_DISK_CONFIG: &str = "# The disk domU: a pattern written, read back and verified.\n\
    name = \"disk\"\nkernel = \"domu-demo\"\nmemory = 8\n\
    cmdline = \"disk seed=1 base=2048 ranges=8 revoke ro\"\n\
    disk = ['phy:vda1,xvda,w', 'phy:vda2,xvdb,r']\n";

/// Two `disk` domUs, one per partition; the second's front end offers
/// no persistent grants and sends no indirect requests (`plain`), so
/// blkback copies its data through the bounce pages.
const PHY_DISK_TWO_CONFIGS: [(&str, &str); 2] = [
    (
        "disk1.cfg",
        "# A disk domU on the first partition.\n\
         name = \"disk1\"\nkernel = \"domu-demo\"\nmemory = 8\n\
         cmdline = \"disk seed=2 base=2048 ranges=6 max=2048\"\n\
         disk = ['phy:vda1,xvda,w']\n",
    ),
    (
        "disk2.cfg",
        "# A disk domU on the second partition.\n\
         name = \"disk2\"\nkernel = \"domu-demo\"\nmemory = 8\n\
         cmdline = \"disk seed=3 base=83968 ranges=6 max=2048 plain\"\n\
         disk = ['phy:/dev/vda2,raw,xvda,rw']\n",
    ),
];

/// The script of [`DomuSet::PhyDiskHotplug`].
const HOTPLUG_SCRIPT: &str = "# Disk hot-plug (dom0 script=hotplug.xl)\n\
    create disk.cfg\n\
    block-list disk\n\
    block-detach disk xvda\n\
    block-list disk\n\
    block-attach disk phy:vda2,xvdb,w\n\
    block-list\n\
    wait\n\
    block-list\n";

/// The configurations and scripts of [`DomuSet::Scale`].
const SCALE: &[(&str, &str)] = &[
    (
        "tiny.cfg",
        "# A tiny domU: prints its greeting, then sleeps until destroyed.\n\
         name = \"tiny\"\nkernel = \"domu-demo\"\nmemory = 1\ncmdline = \"idle\"\n",
    ),
    (
        "scale.xl",
        "# Many domains (dom0 script=scale.xl): create, run, print, destroy.\nscale tiny.cfg 100\n",
    ),
    (
        "scale500.xl",
        "# 500 domains (dom0 script=scale500.xl, a 1 GiB machine).\nscale tiny.cfg 500\n",
    ),
];

/// A fairness domU's configuration: `name`, and the work every one does.
macro_rules! spin_config {
    ($name:literal) => {
        concat!(
            "# A domU doing a fixed amount of work for the fairness test.\n",
            "name = \"",
            $name,
            "\"\nkernel = \"domu-demo\"\nmemory = 4\ncmdline = \"spin=25000000\"\n"
        )
    };
}

/// The configurations of [`DomuSet::Fairness`], and its script.
const FAIRNESS: &[(&str, &str)] = &[
    ("w64a.cfg", spin_config!("w64a")),
    ("w64b.cfg", spin_config!("w64b")),
    ("w128a.cfg", spin_config!("w128a")),
    ("w128b.cfg", spin_config!("w128b")),
    ("w256a.cfg", spin_config!("w256a")),
    ("w256b.cfg", spin_config!("w256b")),
    ("w512a.cfg", spin_config!("w512a")),
    ("w512b.cfg", spin_config!("w512b")),
    (
        "share.xl",
        "# Weighted fair shares (dom0 script=share.xl): eight domUs, weights 1:2:4:8.\n\
         create -p w64a.cfg\ncreate -p w64b.cfg\ncreate -p w128a.cfg\ncreate -p w128b.cfg\n\
         create -p w256a.cfg\ncreate -p w256b.cfg\ncreate -p w512a.cfg\ncreate -p w512b.cfg\n\
         sched-credit -d w64a -w 64\nsched-credit -d w64b -w 64\n\
         sched-credit -d w128a -w 128\nsched-credit -d w128b -w 128\n\
         sched-credit -d w256a -w 256\nsched-credit -d w256b -w 256\n\
         sched-credit -d w512a -w 512\nsched-credit -d w512b -w 512\n\
         cpu-share\n\
         destroy w64a\ndestroy w64b\ndestroy w128a\ndestroy w128b\n\
         destroy w256a\ndestroy w256b\ndestroy w512a\ndestroy w512b\n",
    ),
];

/// A domU of [`DomuSet::Parallel`] doing `$spin` rounds of work.
macro_rules! parallel_config {
    ($name:literal, $spin:literal) => {
        concat!(
            "# A domU doing a fixed amount of work beside another.\n",
            "name = \"",
            $name,
            "\"\nkernel = \"domu-demo\"\nmemory = 4\ncmdline = \"spin=",
            $spin,
            "\"\n"
        )
    };
}

/// The configurations of [`DomuSet::Parallel`], and its script: two
/// domUs with four times the fairness test's work each (about a second
/// on one CPU under TCG, so that the time both take to start is small
/// beside it), measured by `cpu-share`; then two that would spin for
/// hours, paused, unpaused and destroyed while they run.
const PARALLEL: &[(&str, &str)] = &[
    ("p1.cfg", parallel_config!("p1", "100000000")),
    ("p2.cfg", parallel_config!("p2", "100000000")),
    ("f1.cfg", parallel_config!("f1", "1000000000000")),
    ("f2.cfg", parallel_config!("f2", "1000000000000")),
    (
        "par.xl",
        "# Two domUs at once on two CPUs (dom0 script=par.xl).\n\
         create -p p1.cfg\ncreate -p p2.cfg\ncpu-share\ndestroy p1\ndestroy p2\n\
         create f1.cfg\ncreate f2.cfg\npause f1\nunpause f1\ndestroy f1\ndestroy f2\n",
    ),
];

/// The script of [`DomuSet::Devices`].
const DEVICES_SCRIPT: &str = "# dom0's drivers, scripted (dom0 script=devices.xl)\n\
    pci-list\n\
    create demo.cfg\n\
    wait\n";

/// The serving network domU.
const NET_SERVER_CONFIG: &str = "# A domU on dom0's bridge, serving TCP echo.\n\
    name = \"server\"\nkernel = \"domu-demo\"\nmemory = 8\ncmdline = \"net serve\"\n\
    vif = ['mac=00:16:3e:00:00:01,ip=10.0.0.1']\n";

/// The network domU that pings and talks to the server.
const NET_PEER_CONFIG: &str = "# A domU on dom0's bridge: ping, then TCP echo.\n\
    name = \"peer\"\nkernel = \"domu-demo\"\nmemory = 8\ncmdline = \"net peer=10.0.0.1\"\n\
    vif = ['mac=00:16:3e:00:00:02,ip=10.0.0.2']\n";

/// The script of [`DomuSet::XenstoreShell`].
const XENSTORE_SCRIPT: &str = "# dom0's xenstore commands (dom0 script=xenstore.xl)\n\
    create -p demo.cfg\n\
    xenstore-read /local/domain/1/name\n\
    xenstore-write /local/domain/1/data/note hello from dom0\n\
    xenstore-read /local/domain/1/data/note\n\
    xenstore-ls /local/domain/1/control\n\
    xenstore-ls /local/domain/1\n\
    xenstore-read /local/domain/1/nothing\n\
    xenstore-write bad//path x\n\
    unpause demo\n\
    wait\n\
    xenstore-read /local/domain/1/name\n\
    xenstore-ls /local/domain\n";

/// The script of [`DomuSet::Shell`].
const SHELL_SCRIPT: &str = "# dom0's shell, scripted (dom0 script=shell.xl)\n\
    create -p demo.cfg\n\
    list\n\
    pause demo\n\
    unpause demo\n\
    sched-credit -d demo -w 512 -c 50\n\
    vcpu-list demo\n\
    unpause demo\n\
    wait\n\
    list\n\
    info\n\
    dmesg\n";

/// The demo domU's configuration.
const DEMO_CONFIG: &str = "# The demo domU: prints through its console ring, then powers off.\n\
     name = \"demo\"\nkernel = \"domu-demo\"\nmemory = 4\nvcpus = 1\n\
     cmdline = \"hello\"\non_poweroff = \"destroy\"\n";

/// The demo domU on a RAM disk.
const DISK_CONFIG: &str = "# The demo domU writing, reading back and flushing its disk.\n\
     name = \"disk\"\nkernel = \"domu-demo\"\nmemory = 8\n\
     cmdline = \"blk seed=1 xvdb\"\n\
     disk = ['ram:2M,raw,xvda,rw', 'ram:64K,raw,xvdb,r']\n";

/// A second one, on its own disk.
const DISK2_CONFIG: &str = "# A second disk domU, with its own disk and pattern.\n\
     name = \"disk2\"\nkernel = \"domu-demo\"\nmemory = 8\n\
     cmdline = \"blk seed=2\"\ndisk = [ \"ram:1M,raw,xvda,rw\" ]\n";

/// The demo domU's kernel name inside the archive.
const DEMO_KERNEL: &str = "domu-demo";
/// The test guest's kernel name inside the archive.
const TEST_KERNEL: &str = "test-guest";

impl DomuSet {
    /// Its name (also the archive's file name).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            DomuSet::Demo => "demo",
            DomuSet::Crash => "crash",
            DomuSet::Shell => "shell",
            DomuSet::Probe => "probe",
            DomuSet::Xenstore => "xenstore",
            DomuSet::XenstoreShell => "xenstore-shell",
            DomuSet::Grant => "grant",
            DomuSet::Net => "net",
            DomuSet::NetHostile => "net-hostile",
            DomuSet::Blk => "blk",
            DomuSet::BlkTwo => "blk-two",
            DomuSet::BlkHostile => "blk-hostile",
            DomuSet::Devices => "devices",
            DomuSet::PhyDisk => "phy-disk",
            DomuSet::PhyDiskTwo => "phy-disk-two",
            DomuSet::PhyDiskHotplug => "phy-disk-hotplug",
            DomuSet::Web => "web",
            DomuSet::Scenario => "scenario",
            DomuSet::Fairness => "fairness",
            DomuSet::Parallel => "parallel",
            DomuSet::CrossCopy => "cross-copy",
            DomuSet::CopyThree => "copy-three",
            DomuSet::BlkBench => "blk-bench",
            DomuSet::NetBench => "net-bench",
            DomuSet::Pong => "pong",
            DomuSet::Scale => "scale",
            DomuSet::Typist => "typist",
            DomuSet::Fuzz => "fuzz",
            DomuSet::SharedTables => "shared-tables",
        }
    }

    /// The configuration files and scripts, `(name, text)`.
    #[must_use]
    pub const fn configs(self) -> &'static [(&'static str, &'static str)] {
        match self {
            DomuSet::Demo => &[("demo.cfg", DEMO_CONFIG)],
            DomuSet::Fairness => FAIRNESS,
            DomuSet::Parallel => PARALLEL,
            DomuSet::CrossCopy => &[
                (
                    "copy1.cfg",
                    "# Copies from domain 2's grant while domain 2 copies from its own.\n\
                     name = \"copy1\"\nkernel = \"domu-demo\"\nmemory = 8\ncmdline = \"copy=2\"\n",
                ),
                (
                    "copy2.cfg",
                    "# Copies from domain 1's grant while domain 1 copies from its own.\n\
                     name = \"copy2\"\nkernel = \"domu-demo\"\nmemory = 8\ncmdline = \"copy=1\"\n",
                ),
            ],
            DomuSet::CopyThree => &[
                (
                    "copy1.cfg",
                    "# Copies from domain 2's grant while domain 2 copies from its own.\n\
                     name = \"copy1\"\nkernel = \"domu-demo\"\nmemory = 8\ncmdline = \"copy=2\"\n",
                ),
                (
                    "copy2.cfg",
                    "# Copies from domain 1's grant into domain 3's.\n\
                     name = \"copy2\"\nkernel = \"domu-demo\"\nmemory = 8\n\
                     cmdline = \"copy=1 into=3\"\n",
                ),
                (
                    "copy3.cfg",
                    "# Grants domain 2 the page it copies into.\n\
                     name = \"copy3\"\nkernel = \"domu-demo\"\nmemory = 8\ncmdline = \"hold=2\"\n",
                ),
            ],
            DomuSet::Scale => SCALE,
            DomuSet::Typist => &[(
                "typist.cfg",
                "# The demo domU reading a line from its console input.\n\
                 name = \"typist\"\nkernel = \"domu-demo\"\nmemory = 4\ncmdline = \"input\"\n",
            )],
            DomuSet::BlkBench => &[(
                "bench.cfg",
                "# The disk domU reading all of dom0's virtio disk for the block benchmark.\n\
                 name = \"disk\"\nkernel = \"domu-demo\"\nmemory = 8\n\
                 cmdline = \"disk readbench\"\ndisk = ['phy:vda,xvda,r']\n",
            )],
            DomuSet::NetBench => &[(
                "netbench.cfg",
                "# The web domU taking the host's streams for the network benchmark.\n\
                 name = \"web\"\nkernel = \"domu-demo\"\nmemory = 8\n\
                 cmdline = \"net web gw=10.0.2.2 netbench\"\n\
                 vif = ['mac=00:16:3e:00:00:80,ip=10.0.2.15']\n",
            )],
            DomuSet::Pong => &[(
                "pong.cfg",
                "# The demo domU answering each event dom0 sends on its port,\n\
                 # then timing its reads from xenstore.\n\
                 name = \"pong\"\nkernel = \"domu-demo\"\nmemory = 4\n\
                 cmdline = \"pong rounds=200 xsread=200\"\n",
            )],
            DomuSet::Shell => &[("demo.cfg", DEMO_CONFIG), ("shell.xl", SHELL_SCRIPT)],
            DomuSet::Devices => &[("demo.cfg", DEMO_CONFIG), ("devices.xl", DEVICES_SCRIPT)],
            DomuSet::Web => &[("web.cfg", WEB_CONFIG)],
            DomuSet::Scenario => SCENARIO,
            DomuSet::XenstoreShell => {
                &[("demo.cfg", DEMO_CONFIG), ("xenstore.xl", XENSTORE_SCRIPT)]
            }
            DomuSet::Probe => &[(
                "probe.cfg",
                "# The demo domU trying dom0-only hypercalls: each must fail as on Xen.\n\
                 name = \"prober\"\nkernel = \"domu-demo\"\nmemory = 4\n\
                 cmdline = \"probe\"\n",
            )],
            DomuSet::Xenstore => &[(
                "xenstore.cfg",
                "# The demo domU as a xenstore client, hostile in parts.\n\
                 name = \"xsdemo\"\nkernel = \"domu-demo\"\nmemory = 4\n\
                 cmdline = \"xenstore\"\n",
            )],
            DomuSet::Grant => &[(
                "grant.cfg",
                "# The demo domU granting pages to dom0 (grant tables v1).\n\
                 name = \"granter\"\nkernel = \"domu-demo\"\nmemory = 16\n\
                 cmdline = \"grant\"\n",
            )],
            DomuSet::Net => &[
                ("server.cfg", NET_SERVER_CONFIG),
                ("peer.cfg", NET_PEER_CONFIG),
            ],
            DomuSet::NetHostile => &[
                ("server.cfg", NET_SERVER_CONFIG),
                (
                    "hostile.cfg",
                    "# A front end breaking the netif protocol on purpose.\n\
                     name = \"hostile\"\nkernel = \"domu-demo\"\nmemory = 8\n\
                     cmdline = \"net hostile\"\nvif = ['ip=10.0.0.66']\n",
                ),
                (
                    "overrun.cfg",
                    "# A front end whose TX ring index runs past the ring.\n\
                     name = \"overrun\"\nkernel = \"domu-demo\"\nmemory = 8\n\
                     cmdline = \"net overrun\"\nvif = ['ip=10.0.0.67']\n",
                ),
                ("peer.cfg", NET_PEER_CONFIG),
            ],
            DomuSet::Blk => &[("disk.cfg", DISK_CONFIG)],
            DomuSet::PhyDisk => &[("disk.cfg", PHY_DISK_CONFIG)],
            DomuSet::PhyDiskTwo => &PHY_DISK_TWO_CONFIGS,
            DomuSet::PhyDiskHotplug => &[
                (
                    "disk.cfg",
                    "# The disk domU, its disks hot-plugged by dom0's script.\n\
                     name = \"disk\"\nkernel = \"domu-demo\"\nmemory = 8\n\
                     cmdline = \"disk seed=4 base=2048 ranges=3 max=256 hotplug base2=83968\"\n\
                     disk = ['phy:vda1,xvda,w']\n",
                ),
                ("hotplug.xl", HOTPLUG_SCRIPT),
            ],
            DomuSet::BlkTwo => &[("disk.cfg", DISK_CONFIG), ("disk2.cfg", DISK2_CONFIG)],
            DomuSet::BlkHostile => &[
                (
                    "hostile.cfg",
                    "# A block front end that breaks the rules on purpose.\n\
                     name = \"blkhostile\"\nkernel = \"domu-demo\"\nmemory = 8\n\
                     cmdline = \"blkhostile\"\ndisk = ['ram:1M,raw,xvda,rw']\n",
                ),
                ("disk2.cfg", DISK2_CONFIG),
            ],
            DomuSet::Fuzz => &[(
                "fuzz.cfg",
                "# The hypercall fuzzer as an unprivileged domU.\n\
                 name = \"fuzz\"\nkernel = \"test-guest\"\nmemory = 16\nvcpus = 2\n\
                 cmdline = \"test=fuzz seed=1 calls=20000\"\n",
            )],
            DomuSet::SharedTables => &[
                (
                    "flips.cfg",
                    "# One vCPU reads a window while the other flips it and flushes.\n\
                     name = \"flips\"\nkernel = \"test-guest\"\nmemory = 16\nvcpus = 2\n\
                     cmdline = \"test=smp_remote_flush\"\n",
                ),
                (
                    "hammer.cfg",
                    "# Two vCPUs' mmu_update batches on one L1 table.\n\
                     name = \"hammer\"\nkernel = \"test-guest\"\nmemory = 16\nvcpus = 2\n\
                     cmdline = \"test=smp_mmu_update_shared\"\n",
                ),
            ],
            DomuSet::Crash => &[(
                "crash.cfg",
                "# The demo domU told to crash: dom0 must see SHUTDOWN_crash.\n\
                 name = \"crasher\"\nkernel = \"domu-demo\"\nmemory = 4\n\
                 cmdline = \"crash\"\non_crash = \"destroy\"\n",
            )],
        }
    }

    /// The kernel its configurations name (inside the archive).
    const fn kernel(self) -> &'static str {
        match self {
            DomuSet::Fuzz | DomuSet::SharedTables => TEST_KERNEL,
            _ => DEMO_KERNEL,
        }
    }

    /// Writes the archive into `dir` and returns its path.
    pub fn write(self, workspace: &Workspace, dir: &Path) -> Result<PathBuf, String> {
        let kernel_path = match self.kernel() {
            TEST_KERNEL => workspace.test_guest(),
            _ => workspace.domu_demo(),
        };
        let kernel =
            std::fs::read(&kernel_path).map_err(|e| format!("{}: {e}", kernel_path.display()))?;
        let mut files: Vec<(&str, &[u8])> = self
            .configs()
            .iter()
            .map(|(n, t)| (*n, t.as_bytes()))
            .collect();
        files.push((self.kernel(), &kernel));
        let path = dir.join(format!("{}.cpio", self.name()));
        std::fs::write(&path, newc(&files)?).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use toolstack::config::{Action, DomainConfig};
    use toolstack::cpio::Archive;

    #[test]
    fn the_web_domu_sits_where_the_forward_and_the_ready_line_expect_it() {
        let cfg = DomainConfig::parse(WEB_CONFIG).unwrap();
        let vif = cfg.vif.unwrap();
        assert_eq!(vif.ip, Some(crate::qemu::WEB_ADDRESS));
        assert_eq!(
            crate::run::WEB_READY,
            format!("web: serving http://{}:80/", crate::qemu::WEB_ADDRESS)
        );
        assert!(SCENARIO.iter().any(|&(_, c)| c == WEB_CONFIG));
        // The unattended run waits for the domU named in its trigger.
        let disk = DomainConfig::parse(PHY_DISK_CONFIG).unwrap();
        assert!(crate::run::DISK_DONE.starts_with(&format!("({})", disk.name)));
        assert!(SCENARIO.iter().any(|&(_, c)| c == PHY_DISK_CONFIG));
        for (name, text) in SCENARIO {
            assert!(name.ends_with(".cfg"));
            assert!(DomainConfig::parse(text).is_ok(), "{name}");
        }
    }

    #[test]
    fn dom0_reads_what_xtask_writes() {
        let bytes = newc(&[
            ("a.cfg", b"name = \"a\"\n"),
            ("kernel", b"\x7fELF..."),
            ("e", b""),
        ])
        .unwrap();
        let archive = Archive::new(&bytes);
        assert_eq!(archive.check(), Ok(()));
        let names: Vec<&str> = archive.files().map(|e| e.name).collect();
        assert_eq!(names, ["a.cfg", "kernel", "e"]);
        assert_eq!(archive.find("kernel").unwrap().data, b"\x7fELF...");
        assert!(archive.find("e").unwrap().data.is_empty());
        assert_eq!(bytes.len() % 4, 0);
        assert!(newc(&[("", b"")]).is_err());
    }

    #[test]
    fn header_is_newc() {
        let bytes = newc(&[("x", b"1")]).unwrap();
        assert_eq!(&bytes[..6], b"070701");
        // ino 1, mode 0o100644, filesize 1, namesize 2.
        assert_eq!(&bytes[6..22], b"00000001000081A4");
        assert_eq!(&bytes[6 + 6 * 8..6 + 7 * 8], b"00000001");
        assert_eq!(&bytes[6 + 11 * 8..6 + 12 * 8], b"00000002");
        assert_eq!(&bytes[110..112], b"x\0");
    }

    #[test]
    fn test_configs_parse() {
        for set in [
            DomuSet::Demo,
            DomuSet::Crash,
            DomuSet::Shell,
            DomuSet::Probe,
            DomuSet::Grant,
            DomuSet::Net,
            DomuSet::NetHostile,
            DomuSet::Blk,
            DomuSet::BlkTwo,
            DomuSet::BlkHostile,
            DomuSet::PhyDisk,
            DomuSet::PhyDiskTwo,
            DomuSet::PhyDiskHotplug,
            DomuSet::Scenario,
            DomuSet::Fairness,
            DomuSet::Parallel,
            DomuSet::CrossCopy,
            DomuSet::CopyThree,
            DomuSet::BlkBench,
            DomuSet::NetBench,
            DomuSet::Pong,
            DomuSet::Scale,
            DomuSet::Typist,
            DomuSet::Fuzz,
            DomuSet::SharedTables,
        ] {
            for (file, text) in set.configs().iter().filter(|(f, _)| f.ends_with(".cfg")) {
                let cfg = DomainConfig::parse(text).unwrap_or_else(|e| panic!("{file}: {e}"));
                assert_eq!(cfg.kernel, set.kernel());
                assert_eq!(cfg.on_crash, Action::Destroy);
            }
        }
        // The `disk` domUs' `base=` is where their partition starts.
        for (file, text) in DomuSet::PhyDisk
            .configs()
            .iter()
            .chain(DomuSet::PhyDiskTwo.configs())
        {
            let cfg = DomainConfig::parse(text).unwrap();
            let disk = cfg.disks().next().unwrap();
            let number = disk.params().bytes().last().unwrap() - b'1';
            let base = pv_tests::disk::PARTITIONS[usize::from(number)].0;
            assert!(cfg.cmdline.contains(&format!("base={base} ")), "{file}");
        }
        let crash = DomainConfig::parse(DomuSet::Crash.configs()[0].1).unwrap();
        assert_eq!(crash.cmdline, "crash");
        let (_, share) = FAIRNESS[FAIRNESS.len() - 1];
        let scale = format!("{}{}", SCALE[1].1, SCALE[2].1);
        for set in [
            DomuSet::Shell,
            DomuSet::XenstoreShell,
            DomuSet::Devices,
            DomuSet::PhyDiskHotplug,
        ] {
            let (_, script) = set.configs()[1];
            for line in script.lines().chain(share.lines()).chain(scale.lines()) {
                assert!(toolstack::shell::parse(line).is_ok(), "{line}");
            }
        }
    }
}

/// One `--domu <ELF>[,memory=M][,vcpus=N][,cmdline=...]` of `cargo xtask
/// run`: a user's PV kernel that dom0 creates at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomuSpec {
    /// The kernel (a 64-bit Xen PV ELF).
    pub kernel: PathBuf,
    /// Memory in MiB (default [`DomuSpec::DEFAULT_MEMORY_MIB`]).
    pub memory_mib: u64,
    /// vCPUs (default 1).
    pub vcpus: u32,
    /// Kernel command line (default empty).
    pub cmdline: String,
}

impl DomuSpec {
    /// Memory of a domU whose `--domu` names none.
    pub const DEFAULT_MEMORY_MIB: u64 = 32;

    /// Parses the value of `--domu`. `cmdline=` must come last: it takes
    /// the rest of the value, commas included.
    pub fn parse(value: &str) -> Result<DomuSpec, String> {
        let (kernel, mut rest) = match value.split_once(',') {
            Some((kernel, rest)) => (kernel, Some(rest)),
            None => (value, None),
        };
        if kernel.is_empty() {
            return Err("--domu: missing the kernel path".to_owned());
        }
        let mut spec = DomuSpec {
            kernel: PathBuf::from(kernel),
            memory_mib: Self::DEFAULT_MEMORY_MIB,
            vcpus: 1,
            cmdline: String::new(),
        };
        while let Some(text) = rest {
            if let Some(cmdline) = text.strip_prefix("cmdline=") {
                if cmdline.contains(['"', '\\', '\n']) {
                    return Err(
                        "--domu: cmdline may not contain quotes, backslashes or newlines"
                            .to_owned(),
                    );
                }
                spec.cmdline = cmdline.to_owned();
                break;
            }
            let (item, next) = match text.split_once(',') {
                Some((item, next)) => (item, Some(next)),
                None => (text, None),
            };
            rest = next;
            let number = |v: &str, what: &str| -> Result<u64, String> {
                v.parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or(format!("--domu: bad {what} '{v}'"))
            };
            match item.split_once('=') {
                Some(("memory", v)) => spec.memory_mib = number(v, "memory")?,
                Some(("vcpus", v)) => {
                    spec.vcpus = u32::try_from(number(v, "vcpus")?)
                        .map_err(|_| format!("--domu: bad vcpus '{v}'"))?;
                }
                _ => {
                    return Err(format!(
                        "--domu: unknown item '{item}' (memory=, vcpus=, cmdline=)"
                    ));
                }
            }
        }
        Ok(spec)
    }

    /// Its `xl.cfg` as dom0 reads it, naming the kernel `kernel_file`.
    #[must_use]
    pub fn config(&self, name: &str, kernel_file: &str) -> String {
        format!(
            "# from cargo xtask run --domu {}\nname = \"{name}\"\nkernel = \"{kernel_file}\"\n\
             memory = {}\nvcpus = {}\ncmdline = \"{}\"\n",
            self.kernel.display(),
            self.memory_mib,
            self.vcpus,
            self.cmdline,
        )
    }
}

/// dom0's ramdisk for `cargo xtask run --domu ...`: each kernel as
/// `domu<i>.elf` with `domu<i>.cfg`, named after the kernel's file name
/// (with `-<i>` added when two would clash). Written to `path`.
pub fn write_domus(specs: &[DomuSpec], path: &Path) -> Result<(), String> {
    let mut kernels = Vec::new();
    for spec in specs {
        let data =
            std::fs::read(&spec.kernel).map_err(|e| format!("{}: {e}", spec.kernel.display()))?;
        kernels.push(data);
    }
    let mut names: Vec<String> = Vec::new();
    let mut texts = Vec::new();
    for (i, spec) in (1..).zip(specs) {
        let stem: String = spec
            .kernel
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            .collect();
        let mut name = if stem.is_empty() {
            format!("domu{i}")
        } else {
            stem
        };
        if names.contains(&name) {
            name = format!("{name}-{i}");
        }
        texts.push((
            format!("domu{i}.cfg"),
            spec.config(&name, &format!("domu{i}.elf")),
        ));
        names.push(name);
    }
    let elf_names: Vec<String> = (1..=specs.len()).map(|i| format!("domu{i}.elf")).collect();
    let mut files: Vec<(&str, &[u8])> = Vec::new();
    for (i, (cfg_name, text)) in texts.iter().enumerate() {
        files.push((cfg_name, text.as_bytes()));
        files.push((&elf_names[i], &kernels[i]));
    }
    std::fs::write(path, newc(&files)?).map_err(|e| format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod domu_tests {
    use super::*;
    use toolstack::config::DomainConfig;

    #[test]
    fn domu_options() {
        let spec = DomuSpec::parse("k.elf,memory=16,vcpus=2,cmdline=a=1,b=2 c").unwrap();
        assert_eq!(spec.kernel, PathBuf::from("k.elf"));
        assert_eq!((spec.memory_mib, spec.vcpus), (16, 2));
        assert_eq!(spec.cmdline, "a=1,b=2 c");
        let plain = DomuSpec::parse("/x/y").unwrap();
        assert_eq!(
            (plain.memory_mib, plain.vcpus, plain.cmdline.as_str()),
            (32, 1, "")
        );
        assert!(DomuSpec::parse("").is_err());
        assert!(DomuSpec::parse("k,memory=0").is_err());
        assert!(DomuSpec::parse("k,memory=x").is_err());
        assert!(DomuSpec::parse("k,colour=red").is_err());
        assert!(DomuSpec::parse("k,cmdline=say \"hi\"").is_err());
    }

    #[test]
    fn generated_configs_parse_in_dom0() {
        let spec = DomuSpec::parse("/k/my-kernel.elf,vcpus=3,cmdline=x,y").unwrap();
        let text = spec.config("my-kernel", "domu1.elf");
        let cfg = DomainConfig::parse(&text).unwrap();
        assert_eq!(cfg.name, "my-kernel");
        assert_eq!(cfg.kernel, "domu1.elf");
        assert_eq!((cfg.memory_mib, cfg.vcpus, cfg.cmdline), (32, 3, "x,y"));
    }

    #[test]
    fn ramdisk_of_two_domus() {
        let dir = std::env::temp_dir().join(format!("xtask-domus-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kernel = dir.join("k.elf");
        std::fs::write(&kernel, b"\x7fELF").unwrap();
        let spec = DomuSpec::parse(&format!("{},memory=8", kernel.display())).unwrap();
        let out = dir.join("rd.cpio");
        write_domus(&[spec.clone(), spec], &out).unwrap();
        let bytes = std::fs::read(&out).unwrap();
        let archive = toolstack::cpio::Archive::new(&bytes);
        let names: Vec<&str> = archive.files().map(|e| e.name).collect();
        assert_eq!(names, ["domu1.cfg", "domu1.elf", "domu2.cfg", "domu2.elf"]);
        let second = std::str::from_utf8(archive.find("domu2.cfg").unwrap().data).unwrap();
        assert_eq!(DomainConfig::parse(second).unwrap().name, "k-2");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
