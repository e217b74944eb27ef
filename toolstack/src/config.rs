//! Domain configurations in a subset of `xl.cfg` syntax.
//!
//! One setting per line, `key = value`; `#` starts a comment (outside a
//! string), blank lines are ignored, a trailing `;` is allowed. Values are
//! strings in double or single quotes (no escapes: a backslash is an
//! error) or decimal integers. Keys:
//!
//! | key | value | default |
//! |---|---|---|
//! | `name` | string, required | |
//! | `kernel` | string, required: a path in the ramdisk | |
//! | `memory` | integer, MiB, at least 1 | 128 (as `xl`) |
//! | `vcpus` | integer, 1..=[`MAX_VCPUS`] | 1 |
//! | `cmdline` (or `extra`) | string, at most 1023 bytes | empty |
//! | `on_poweroff` | `"destroy"` or `"preserve"` | `destroy` |
//! | `on_crash` | `"destroy"` or `"preserve"` | `destroy` |
//! | `type` | `"pv"` only | `pv` |
//! | `vif` | a list of one string `'mac=<aa:bb:..>,ip=<a.b.c.d>,bridge=<name>'` (each setting optional) | no vif |
//! | `disk` | list of disk specifications, at most [`MAX_DISKS`] | none |
//!
//! A disk specification is `xl`'s positional form
//! `'<target>,<format>,<vdev>,<access>'`, or its older form without the
//! format, `'<target>,<vdev>,<access>'`: `target` is `phy:<device>`, one
//! of dom0's disks (`vda`, `vdb`, ... for the virtio disks, `vda1`, ...
//! for their MBR partitions; `/dev/` in front is allowed, as `xl` writes
//! it), or `ram:<size>`, a RAM disk in dom0 of `<size>` bytes (with a `K`,
//! `M` or `G` suffix; a whole number of 512-byte sectors, at most
//! [`MAX_RAM_DISK`]); `format` is `raw` (or empty); `vdev` is `xvda` ..
//! `xvdp`; `access` is `rw`/`w` (read-write) or `r`/`ro` (read-only).
//! Two disks may not share a `vdev`.
//!
//! Any other key, a repeated key, or `restart`-style actions are errors:
//! this toolstack does not pretend to support what it does not do.
#![forbid(unsafe_code)]

/// Highest `vcpus` accepted (vCPUs below 32 have their `vcpu_info` in
/// `shared_info`; more would need `VCPUOP_register_vcpu_info` first).
pub const MAX_VCPUS: u32 = 32;

/// Disks a domain may have.
pub const MAX_DISKS: usize = 4;
/// Bytes of the largest RAM disk: RAM disks come out of dom0's heap
/// (16 MiB, shared with the store).
pub const MAX_RAM_DISK: u64 = 8 << 20;

/// What a disk is backed by in dom0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backing<'a> {
    /// A RAM disk of this many bytes.
    Ram(u64),
    /// One of dom0's disks or partitions, by its name (`vda`, `vda1`).
    Phy(&'a str),
}

impl Backing<'_> {
    /// The back end's `type` node, as `xl` writes it.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Backing::Ram(_) => "ram",
            Backing::Phy(_) => "phy",
        }
    }
}

/// One `disk` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Disk<'a> {
    /// The target as written (`params` in xenstore).
    pub target: &'a str,
    /// What backs it.
    pub backing: Backing<'a>,
    /// The virtual device's name (`xvda`).
    pub vdev: &'a str,
    /// Its device id (`xen-vbd-interface.7`).
    pub devid: u32,
    /// Read-write (else read-only).
    pub writable: bool,
}

impl<'a> Disk<'a> {
    /// Parses one disk specification.
    ///
    /// # Errors
    /// What is wrong with it.
    pub fn parse(spec: &'a str) -> Result<Disk<'a>, &'static str> {
        let fields: [Option<&str>; 5] = {
            let mut it = spec.split(',').map(str::trim);
            core::array::from_fn(|_| it.next())
        };
        let (target, format, vdev, access) = match fields {
            [Some(t), Some(f), Some(v), Some(a), None] => (t, f, v, a),
            [Some(t), Some(v), Some(a), None, None] => (t, "", v, a),
            _ => return Err("a disk is '<target>,<format>,<vdev>,<access>'"),
        };
        let backing = if let Some(device) = target.strip_prefix("phy:") {
            let name = device.strip_prefix("/dev/").unwrap_or(device);
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err("a phy: disk is one of dom0's disks (vda, vda1, ...)");
            }
            Backing::Phy(name)
        } else {
            Backing::Ram(ram_bytes(target)?)
        };
        if !matches!(format, "raw" | "") {
            return Err("the only disk format is raw");
        }
        let devid = dom0_abi::blkif::xvd_devid(vdev).ok_or("a disk's vdev is xvda..xvdp")?;
        let writable = match access {
            "rw" | "w" => true,
            "r" | "ro" => false,
            _ => return Err("a disk's access is rw or r"),
        };
        Ok(Disk {
            target,
            backing,
            vdev,
            devid,
            writable,
        })
    }

    /// The back end's `params` node: the device of a `phy:` target (as
    /// `xl` writes it, without the prefix), the whole target otherwise.
    #[must_use]
    pub fn params(&self) -> &'a str {
        self.target.strip_prefix("phy:").unwrap_or(self.target)
    }
}

/// The bytes of a `ram:<size>` target.
fn ram_bytes(target: &str) -> Result<u64, &'static str> {
    let size = target
        .strip_prefix("ram:")
        .ok_or("a disk target is phy:<device> or ram:<size>")?;
    let (digits, unit) = match size.as_bytes().last() {
        Some(b'K' | b'k') => (&size[..size.len() - 1], 1 << 10),
        Some(b'M' | b'm') => (&size[..size.len() - 1], 1 << 20),
        Some(b'G' | b'g') => (&size[..size.len() - 1], 1 << 30),
        _ => (size, 1),
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .filter(|&b| b > 0 && b % 512 == 0 && b <= MAX_RAM_DISK)
        .ok_or("a RAM disk is 512 B..=8 MiB in whole sectors")
}

/// What to do when a domain shuts down for a reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Destroy it (free everything).
    Destroy,
    /// Leave it shut down, for inspection.
    Preserve,
}

/// A parsed configuration; strings borrow from the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DomainConfig<'a> {
    /// The domain's name.
    pub name: &'a str,
    /// Path of its kernel in the ramdisk.
    pub kernel: &'a str,
    /// Memory in MiB.
    pub memory_mib: u64,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Kernel command line.
    pub cmdline: &'a str,
    /// Action on `SHUTDOWN_poweroff` (and every reason but crash).
    pub on_poweroff: Action,
    /// Action on `SHUTDOWN_crash`.
    pub on_crash: Action,
    /// Its network interface (`vif = [...]`), devid 0.
    pub vif: Option<VifConfig<'a>>,
    /// Its disks (`disks[..]` in order, `None` after the last).
    pub disks: [Option<Disk<'a>>; MAX_DISKS],
}

/// One `vif` list entry: `mac=..,ip=..,bridge=..`, each optional.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VifConfig<'a> {
    /// Its Ethernet address (default: `00:16:3e` and the domain id).
    pub mac: Option<crate::bridge::Mac>,
    /// Its IPv4 address, as written (the back end's `ip` key).
    pub ip: Option<&'a str>,
    /// The bridge it joins (default `xenbr0`; dom0 has one bridge).
    pub bridge: Option<&'a str>,
}

impl<'a> VifConfig<'a> {
    /// Parses the list on the right of `vif =`: `[]` or one quoted entry.
    fn parse_list(value: Value<'a>) -> Result<Option<VifConfig<'a>>, &'static str> {
        let Value::List(inner) = value else {
            return Err("expected a list [ ... ]");
        };
        let inner = inner.trim();
        let inner = inner.strip_suffix(',').unwrap_or(inner).trim_end();
        if inner.is_empty() {
            return Ok(None);
        }
        let spec = match parse_value(inner)? {
            Value::Str(spec) => spec,
            Value::Int(_) | Value::List(_) => return Err("expected a quoted vif specification"),
        };
        let mut vif = VifConfig::default();
        for setting in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match setting.split_once('=') {
                Some(("mac", mac)) => {
                    vif.mac = Some(crate::bridge::parse_mac(mac).ok_or("bad vif mac")?);
                }
                Some(("ip", ip)) => vif.ip = Some(ip),
                Some(("bridge", bridge)) => vif.bridge = Some(bridge),
                _ => return Err("vif settings supported: mac, ip, bridge"),
            }
        }
        Ok(Some(vif))
    }
}

/// A configuration error: the line (1-based) and what is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConfigError {
    /// Line number (0: the file as a whole).
    pub line: usize,
    /// What is wrong.
    pub what: &'static str,
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        if self.line == 0 {
            write!(f, "config: {}", self.what)
        } else {
            write!(f, "config line {}: {}", self.line, self.what)
        }
    }
}

/// A value on the right of `=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Value<'a> {
    Str(&'a str),
    Int(u64),
    /// The text between `[` and `]`.
    List(&'a str),
}

/// Splits off a comment outside quotes.
fn strip_comment(line: &str) -> &str {
    let mut quote = None;
    for (i, c) in line.char_indices() {
        match (quote, c) {
            (None, '#') => return &line[..i],
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            _ => {}
        }
    }
    line
}

fn parse_value(text: &str) -> Result<Value<'_>, &'static str> {
    let text = text.trim().trim_end_matches(';').trim_end();
    let bytes = text.as_bytes();
    match bytes.first() {
        Some(&q @ (b'"' | b'\'')) => {
            let inner = text
                .get(1..)
                .and_then(|rest| rest.strip_suffix(q as char))
                .ok_or("unterminated string")?;
            if inner.contains(q as char) {
                return Err("text after the closing quote");
            }
            if inner.contains('\\') {
                return Err("escapes in strings are not supported");
            }
            Ok(Value::Str(inner))
        }
        Some(b'0'..=b'9') => text.parse().map(Value::Int).map_err(|_| "not a number"),
        Some(b'[') => text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .map(Value::List)
            .ok_or("unterminated list"),
        _ => Err("expected a quoted string or a number"),
    }
}

fn action(value: Value<'_>) -> Result<Action, &'static str> {
    match value {
        Value::Str("destroy") => Ok(Action::Destroy),
        Value::Str("preserve") => Ok(Action::Preserve),
        Value::Str(_) => Err("only \"destroy\" and \"preserve\" are supported"),
        Value::Int(_) | Value::List(_) => Err("expected a string"),
    }
}

fn string(value: Value<'_>) -> Result<&str, &'static str> {
    match value {
        Value::Str(s) => Ok(s),
        Value::Int(_) | Value::List(_) => Err("expected a string"),
    }
}

fn int(value: Value<'_>) -> Result<u64, &'static str> {
    match value {
        Value::Int(n) => Ok(n),
        Value::Str(_) | Value::List(_) => Err("expected a number"),
    }
}

/// The `disk` list: quoted specifications separated by commas.
fn disks(value: Value<'_>) -> Result<[Option<Disk<'_>>; MAX_DISKS], &'static str> {
    let Value::List(mut rest) = value else {
        return Err("expected a list of disks");
    };
    let mut out = [None; MAX_DISKS];
    let mut n = 0;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let quote = rest.chars().next().filter(|c| matches!(c, '"' | '\''));
        let quote = quote.ok_or("a disk is a quoted string")?;
        let (spec, after) = rest[1..].split_once(quote).ok_or("unterminated string")?;
        let disk = Disk::parse(spec)?;
        if out
            .iter()
            .flatten()
            .any(|d: &Disk<'_>| d.devid == disk.devid)
        {
            return Err("two disks with the same vdev");
        }
        *out.get_mut(n).ok_or("more than 4 disks")? = Some(disk);
        n += 1;
        rest = after.trim_start();
        rest = match rest.strip_prefix(',') {
            Some(r) => r,
            None if rest.is_empty() => rest,
            None => return Err("expected , between disks"),
        };
    }
    Ok(out)
}

/// The keys, in the order of the seen-bitmap.
const KEYS: [&str; 11] = [
    "name",
    "kernel",
    "memory",
    "vcpus",
    "cmdline",
    "extra",
    "on_poweroff",
    "on_crash",
    "type",
    "vif",
    "disk",
];

impl<'a> DomainConfig<'a> {
    /// Parses a configuration file.
    pub fn parse(text: &'a str) -> Result<DomainConfig<'a>, ConfigError> {
        let mut name = None;
        let mut kernel = None;
        let mut cfg = DomainConfig {
            name: "",
            kernel: "",
            memory_mib: 128,
            vcpus: 1,
            cmdline: "",
            on_poweroff: Action::Destroy,
            on_crash: Action::Destroy,
            vif: None,
            disks: [None; MAX_DISKS],
        };
        let mut seen = 0u32;
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let err = |what| ConfigError { line, what };
            let body = strip_comment(raw).trim();
            if body.is_empty() {
                continue;
            }
            let (key, value) = body.split_once('=').ok_or(err("expected key = value"))?;
            let key = key.trim();
            let slot = KEYS
                .iter()
                .position(|k| *k == key)
                .ok_or(err("unknown key"))?;
            // `cmdline` and `extra` are one setting.
            let bit = 1 << if key == "extra" { 4 } else { slot };
            if seen & bit != 0 {
                return Err(err("key given twice"));
            }
            seen |= bit;
            let value = parse_value(value).map_err(err)?;
            match key {
                "name" => name = Some(string(value).map_err(err)?),
                "kernel" => kernel = Some(string(value).map_err(err)?),
                "memory" => {
                    cfg.memory_mib = int(value).map_err(err)?;
                    if cfg.memory_mib == 0 || cfg.memory_mib > 1 << 20 {
                        return Err(err("memory must be 1..=1048576 MiB"));
                    }
                }
                "vcpus" => {
                    let n = int(value).map_err(err)?;
                    cfg.vcpus = u32::try_from(n)
                        .ok()
                        .filter(|n| (1..=MAX_VCPUS).contains(n))
                        .ok_or(err("vcpus must be 1..=32"))?;
                }
                "cmdline" | "extra" => {
                    cfg.cmdline = string(value).map_err(err)?;
                    if cfg.cmdline.len() >= dom0_abi::start_info::MAX_GUEST_CMDLINE {
                        return Err(err("cmdline longer than 1023 bytes"));
                    }
                }
                "on_poweroff" => cfg.on_poweroff = action(value).map_err(err)?,
                "on_crash" => cfg.on_crash = action(value).map_err(err)?,
                "disk" => cfg.disks = disks(value).map_err(err)?,
                "vif" => cfg.vif = VifConfig::parse_list(value).map_err(err)?,
                _ => {
                    if string(value).map_err(err)? != "pv" {
                        return Err(err("only type = \"pv\" is supported"));
                    }
                }
            }
        }
        cfg.name = name.ok_or(ConfigError {
            line: 0,
            what: "no name",
        })?;
        cfg.kernel = kernel.ok_or(ConfigError {
            line: 0,
            what: "no kernel",
        })?;
        if cfg.name.is_empty() {
            return Err(ConfigError {
                line: 0,
                what: "empty name",
            });
        }
        Ok(cfg)
    }

    /// The `max_mem` a toolstack sets: the memory plus 1 MiB of slack, in
    /// KiB (as `xl`).
    #[must_use]
    pub const fn max_memkb(&self) -> u64 {
        self.memory_mib * 1024 + 1024
    }

    /// Its disks.
    pub fn disks(&self) -> impl Iterator<Item = &Disk<'a>> {
        self.disks.iter().flatten()
    }

    /// Pages of memory.
    #[must_use]
    pub const fn nr_pages(&self) -> u64 {
        self.memory_mib * 256
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_config() {
        let text = "# demo\nname = \"demo\"\nkernel='domu-demo' # the image\nmemory = 8\n\
                    vcpus=2;\ncmdline = \"say=hi # not a comment\"\non_crash = \"preserve\"\n\
                    type = \"pv\"\n\n";
        let cfg = DomainConfig::parse(text).unwrap();
        assert_eq!(cfg.name, "demo");
        assert_eq!(cfg.kernel, "domu-demo");
        assert_eq!(cfg.memory_mib, 8);
        assert_eq!(cfg.nr_pages(), 2048);
        assert_eq!(cfg.max_memkb(), 9216);
        assert_eq!(cfg.vcpus, 2);
        assert_eq!(cfg.cmdline, "say=hi # not a comment");
        assert_eq!(cfg.on_poweroff, Action::Destroy);
        assert_eq!(cfg.on_crash, Action::Preserve);
    }

    #[test]
    fn defaults_and_extra() {
        let cfg = DomainConfig::parse("name=\"a\"\nkernel=\"k\"\nextra=\"x\"").unwrap();
        assert_eq!((cfg.memory_mib, cfg.vcpus, cfg.cmdline), (128, 1, "x"));
    }

    #[test]
    fn errors_name_the_line() {
        let e = |t| DomainConfig::parse(t).unwrap_err();
        assert_eq!(
            e("name=\"a\"\nkernel=\"k\"\nbogus=1"),
            ConfigError {
                line: 3,
                what: "unknown key"
            }
        );
        assert_eq!(
            e("kernel=\"k\""),
            ConfigError {
                line: 0,
                what: "no name"
            }
        );
        assert_eq!(
            e("name=\"a\"\nname=\"b\""),
            ConfigError {
                line: 2,
                what: "key given twice"
            }
        );
        assert_eq!(e("cmdline=\"a\"\nextra=\"b\"").line, 2);
        assert_eq!(e("name=\"a").what, "unterminated string");
        assert_eq!(e("name=a").what, "expected a quoted string or a number");
        assert_eq!(e("vcpus=0").what, "vcpus must be 1..=32");
        assert_eq!(e("memory=\"8\"").what, "expected a number");
        assert_eq!(e("on_crash=\"restart\"").line, 1);
        assert_eq!(
            e("name=\"a\\n\"").what,
            "escapes in strings are not supported"
        );
        assert_eq!(e("name=\"a\" x").what, "unterminated string");
        assert_eq!(e("type=\"hvm\"").what, "only type = \"pv\" is supported");
    }

    #[test]
    fn vif_lists() {
        let vif = |t: &str| {
            let text = alloc::format!("name=\"a\"\nkernel=\"k\"\nvif = {t}").leak();
            DomainConfig::parse(text).map(|c| c.vif).map_err(|e| e.what)
        };
        assert_eq!(
            vif("['mac=00:16:3e:00:00:07,ip=10.0.0.7']"),
            Ok(Some(VifConfig {
                mac: Some([0, 0x16, 0x3e, 0, 0, 7]),
                ip: Some("10.0.0.7"),
                bridge: None,
            }))
        );
        assert_eq!(
            vif("[ \"bridge=xenbr0\", ]"),
            Ok(Some(VifConfig {
                bridge: Some("xenbr0"),
                ..VifConfig::default()
            }))
        );
        assert_eq!(vif("[]"), Ok(None));
        assert_eq!(vif("'mac=1'"), Err("expected a list [ ... ]"));
        assert_eq!(vif("['mac=00:16']"), Err("bad vif mac"));
        assert_eq!(
            vif("['model=e1000']"),
            Err("vif settings supported: mac, ip, bridge")
        );
        assert_eq!(vif("['ip=1', 'ip=2']"), Err("text after the closing quote"));
    }

    #[test]
    fn disks() {
        let cfg = DomainConfig::parse(
            "name='a'\nkernel='k'\ndisk = [ 'ram:2M,raw,xvda,rw', \"ram:512,,xvdc,r\", \
             'phy:vda1,xvdb,w', 'phy:/dev/vdb,raw,xvdd,ro' ]",
        )
        .unwrap();
        let disks: Vec<_> = cfg.disks().collect();
        assert_eq!(
            disks,
            [
                &Disk {
                    target: "ram:2M",
                    backing: Backing::Ram(2 << 20),
                    vdev: "xvda",
                    devid: 51712,
                    writable: true
                },
                &Disk {
                    target: "ram:512",
                    backing: Backing::Ram(512),
                    vdev: "xvdc",
                    devid: 51744,
                    writable: false
                },
                &Disk {
                    target: "phy:vda1",
                    backing: Backing::Phy("vda1"),
                    vdev: "xvdb",
                    devid: 51728,
                    writable: true
                },
                &Disk {
                    target: "phy:/dev/vdb",
                    backing: Backing::Phy("vdb"),
                    vdev: "xvdd",
                    devid: 51760,
                    writable: false
                },
            ]
        );
        assert_eq!(
            DomainConfig::parse("name='a'\nkernel='k'\ndisk=[]")
                .unwrap()
                .disks()
                .count(),
            0
        );
        let e = |t: &str| DomainConfig::parse(t).unwrap_err().what;
        assert_eq!(
            e("disk=['ram:1M,xvda']"),
            "a disk is '<target>,<format>,<vdev>,<access>'"
        );
        assert_eq!(
            e("disk=['/img,raw,xvda,rw']"),
            "a disk target is phy:<device> or ram:<size>"
        );
        assert_eq!(
            e("disk=['phy:,xvda,rw']"),
            "a phy: disk is one of dom0's disks (vda, vda1, ...)"
        );
        assert_eq!(
            e("disk=['phy:vd/a,xvda,rw']"),
            "a phy: disk is one of dom0's disks (vda, vda1, ...)"
        );
        assert_eq!(
            e("disk=['phy:vda,xvda']"),
            "a disk is '<target>,<format>,<vdev>,<access>'"
        );
        assert_eq!(
            e("disk=['ram:100,raw,xvda,rw']"),
            "a RAM disk is 512 B..=8 MiB in whole sectors"
        );
        assert_eq!(
            e("disk=['ram:9M,raw,xvda,rw']"),
            "a RAM disk is 512 B..=8 MiB in whole sectors"
        );
        assert_eq!(
            e("disk=['ram:1M,qcow2,xvda,rw']"),
            "the only disk format is raw"
        );
        assert_eq!(
            e("disk=['ram:1M,raw,hda,rw']"),
            "a disk's vdev is xvda..xvdp"
        );
        assert_eq!(
            e("disk=['ram:1M,raw,xvda,x']"),
            "a disk's access is rw or r"
        );
        assert_eq!(
            e("disk=['ram:1M,raw,xvda,rw','ram:1M,raw,xvda,r']"),
            "two disks with the same vdev"
        );
        assert_eq!(
            e("disk=['ram:1M,raw,xvda,rw' 'x']"),
            "expected , between disks"
        );
        assert_eq!(e("disk='ram:1M,raw,xvda,rw'"), "expected a list of disks");
        assert_eq!(e("disk=['ram:1M,raw,xvda,rw'"), "unterminated list");
        assert_eq!(e("name=[]"), "expected a string");
    }
}
