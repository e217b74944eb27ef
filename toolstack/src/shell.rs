//! The `xl`-like command language of dom0's shell: parsing one command
//! line, and how `xl list` shows a domain's state.
//!
//! Commands (a domain is named by its id or its configured name):
//!
//! | command | effect |
//! |---|---|
//! | `create [-p] <config>` | build the domain a ramdisk config describes; start it unless `-p` |
//! | `destroy <dom>` | destroy it now |
//! | `shutdown <dom>` | `SCHEDOP_remote_shutdown` with reason poweroff |
//! | `pause <dom>` / `unpause <dom>` | the controller pause count |
//! | `sched-credit -d <dom> [-w <weight>] [-c <cap>]` | read, or set, its weight and cap |
//! | `list` | every domain: name, id, memory, vCPUs, state, CPU time |
//! | `vcpu-list [<dom>]` | every vCPU of one or every domain |
//! | `info` | the machine (`physinfo`, scheduler, version) |
//! | `dmesg` | the hypervisor's console ring (`sysctl readconsole`) |
//! | `wait` | serve consoles until no domU is running (scripts only) |
//! | `xenstore-ls [<path>]` | the store's tree below `path` (default `/`) |
//! | `xenstore-read <path>` | a node's value |
//! | `xenstore-write <path> <value>` | set a node (created with its parents) |
//! | `block-list [<dom>]` | the virtual block devices of one or every domU, as `xl block-list` |
//! | `block-attach <dom> <disk spec>` | hot-plug a disk (a `disk` entry's syntax) into a running domU |
//! | `block-detach <dom> <vdev>` | close a disk through the handshake, then remove it |
//! | `help` | the command list |
//! | `quit` (or `exit`) | leave the shell: dom0 powers off (the rest of a script is skipped) |
//!
//! Blank lines and lines starting with `#` are ignored. Typed at the
//! console, a line is assembled by [`LineEditor`].
#![forbid(unsafe_code)]

use dom0_abi::domctl::DomInfoFlags;

/// A domain named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target<'a> {
    /// By id.
    Id(u16),
    /// By configured name.
    Name(&'a str),
}

/// One parsed command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// `create [-p] <config>`.
    Create {
        /// The configuration file in the ramdisk.
        config: &'a str,
        /// `-p`: leave it paused.
        paused: bool,
    },
    /// `destroy <dom>`.
    Destroy(Target<'a>),
    /// `shutdown <dom>`.
    Shutdown(Target<'a>),
    /// `console <dom>`: attach the console (input goes to the domain
    /// until Ctrl-]).
    Console(Target<'a>),
    /// `pause <dom>`.
    Pause(Target<'a>),
    /// `unpause <dom>`.
    Unpause(Target<'a>),
    /// `sched-credit -d <dom> [-w <weight>] [-c <cap>]`.
    SchedCredit {
        /// The domain.
        target: Target<'a>,
        /// New weight (1..=65535).
        weight: Option<u16>,
        /// New cap (percent of one CPU; 0: none).
        cap: Option<u16>,
    },
    /// `list`.
    List,
    /// `vcpu-list [<dom>]`.
    VcpuList(Option<Target<'a>>),
    /// `info`.
    Info,
    /// `dmesg`.
    Dmesg,
    /// `pci-list`.
    PciList,
    /// `network-list [<dom>]`.
    NetworkList(Option<Target<'a>>),
    /// `wait`.
    Wait,
    /// `scale <config> <count>`: create `count` domains of one
    /// configuration, one after the other, each printing and then idle;
    /// then destroy them all.
    Scale {
        /// The configuration file in the ramdisk.
        config: &'a str,
        /// How many (1..=65535).
        count: u16,
    },
    /// `cpu-share`: run the paused domUs together until the first one
    /// shuts down, then pause the others and compare each one's CPU time
    /// with its weight's share.
    CpuShare,
    /// `help`.
    Help,
    /// `quit` or `exit`.
    Quit,
    /// `xenstore-ls [<path>]`.
    XenstoreLs(&'a str),
    /// `xenstore-read <path>`.
    XenstoreRead(&'a str),
    /// `block-list [<dom>]`.
    BlockList(Option<Target<'a>>),
    /// `block-attach <dom> <disk spec>` (the spec is the rest of the
    /// line).
    BlockAttach {
        /// The domain.
        target: Target<'a>,
        /// The disk, as in a `disk` list.
        spec: &'a str,
    },
    /// `block-detach <dom> <vdev>`.
    BlockDetach {
        /// The domain.
        target: Target<'a>,
        /// The virtual device (`xvdb`, or its number).
        vdev: &'a str,
    },
    /// `xenstore-write <path> <value>` (the value is the rest of the
    /// line).
    XenstoreWrite {
        /// The node.
        path: &'a str,
        /// Its new value.
        value: &'a str,
    },
}

/// The key that leaves `console <dom>` (Ctrl-], as in `xl console`).
pub const CONSOLE_ESCAPE: u8 = 0x1d;

/// The help text, one line per command.
pub const HELP: &[&str] = &[
    "create [-p] <config>   create a domain from a ramdisk config (-p: leave it paused)",
    "destroy <dom>          destroy a domain",
    "shutdown <dom>         ask a domain to power off",
    "console <dom>          attach to a domain's console (Ctrl-] returns to the shell)",
    "pause <dom>            pause a domain",
    "unpause <dom>          unpause a domain",
    "sched-credit -d <dom> [-w <weight>] [-c <cap>]   show or set scheduling parameters",
    "list                   list the domains",
    "vcpu-list [<dom>]      list the vCPUs",
    "info                   show the machine",
    "dmesg                  show the hypervisor's console ring",
    "pci-list               list the PCI functions and the drivers that take them",
    "network-list [<dom>]   list the virtual network interfaces (of every domU, or one)",
    "wait                   serve consoles until no domU runs",
    "scale <config> <count> create that many domains of one config, then destroy them",
    "cpu-share              run the paused domUs until one shuts down; CPU shares against weights",
    "xenstore-ls [<path>]   show the xenstore tree below a path",
    "xenstore-read <path>   show a xenstore node's value",
    "xenstore-write <path> <value>   set a xenstore node",
    "block-list [<dom>]     list the virtual block devices",
    "block-attach <dom> <disk spec>   hot-plug a disk (phy:vda1,xvdb,w)",
    "block-detach <dom> <vdev>        unplug a disk",
    "help                   this list",
    "quit                   leave the shell and power the machine off",
];

fn target(word: &str) -> Target<'_> {
    word.parse().map_or(Target::Name(word), Target::Id)
}

fn one_target<'a>(mut words: impl Iterator<Item = &'a str>) -> Result<Target<'a>, &'static str> {
    let word = words.next().ok_or("missing domain")?;
    if words.next().is_some() {
        return Err("too many arguments");
    }
    Ok(target(word))
}

fn number(word: Option<&str>, what: &'static str) -> Result<u16, &'static str> {
    word.and_then(|w| w.parse().ok()).ok_or(what)
}

/// Parses one line; `Ok(None)` for a blank line or a comment.
pub fn parse(line: &str) -> Result<Option<Command<'_>>, &'static str> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let mut words = line.split_whitespace();
    let verb = words.next().unwrap_or("");
    let command = match verb {
        "create" => {
            let mut paused = false;
            let mut config = None;
            for word in words {
                match word {
                    "-p" => paused = true,
                    w if w.starts_with('-') => return Err("unknown option"),
                    w if config.is_none() => config = Some(w),
                    _ => return Err("too many arguments"),
                }
            }
            Command::Create {
                config: config.ok_or("missing config")?,
                paused,
            }
        }
        "destroy" => Command::Destroy(one_target(words)?),
        "scale" => {
            let config = words.next().ok_or("missing config")?;
            let count = number(words.next(), "count must be 1..=65535")?;
            if count == 0 {
                return Err("count must be 1..=65535");
            }
            if words.next().is_some() {
                return Err("too many arguments");
            }
            Command::Scale { config, count }
        }
        "shutdown" => Command::Shutdown(one_target(words)?),
        "console" => Command::Console(one_target(words)?),
        "pause" => Command::Pause(one_target(words)?),
        "unpause" => Command::Unpause(one_target(words)?),
        "sched-credit" => {
            let (mut dom, mut weight, mut cap) = (None, None, None);
            while let Some(flag) = words.next() {
                match flag {
                    "-d" => dom = Some(target(words.next().ok_or("missing domain")?)),
                    "-w" => {
                        let w = number(words.next(), "weight must be 1..=65535")?;
                        weight = Some(w).filter(|&w| w > 0);
                        if weight.is_none() {
                            return Err("weight must be 1..=65535");
                        }
                    }
                    "-c" => cap = Some(number(words.next(), "cap must be 0..=65535")?),
                    _ => return Err("unknown option"),
                }
            }
            Command::SchedCredit {
                target: dom.ok_or("missing -d <dom>")?,
                weight,
                cap,
            }
        }
        "list" | "info" | "dmesg" | "pci-list" | "wait" | "cpu-share" | "help" | "quit"
        | "exit" => {
            if words.next().is_some() {
                return Err("too many arguments");
            }
            match verb {
                "list" => Command::List,
                "info" => Command::Info,
                "dmesg" => Command::Dmesg,
                "pci-list" => Command::PciList,
                "wait" => Command::Wait,
                "cpu-share" => Command::CpuShare,
                "help" => Command::Help,
                _ => Command::Quit,
            }
        }
        "vcpu-list" | "network-list" => {
            let dom = words.next().map(target);
            if words.next().is_some() {
                return Err("too many arguments");
            }
            if verb == "vcpu-list" {
                Command::VcpuList(dom)
            } else {
                Command::NetworkList(dom)
            }
        }
        "xenstore-ls" => {
            let path = words.next().unwrap_or("/");
            if words.next().is_some() {
                return Err("too many arguments");
            }
            Command::XenstoreLs(path)
        }
        "xenstore-read" => {
            let path = words.next().ok_or("missing path")?;
            if words.next().is_some() {
                return Err("too many arguments");
            }
            Command::XenstoreRead(path)
        }
        "xenstore-write" => {
            let path = words.next().ok_or("missing path")?;
            let rest = line[verb.len()..].trim_start()[path.len()..].trim();
            if rest.is_empty() {
                return Err("missing value");
            }
            Command::XenstoreWrite { path, value: rest }
        }
        "block-list" => {
            let dom = words.next().map(target);
            if words.next().is_some() {
                return Err("too many arguments");
            }
            Command::BlockList(dom)
        }
        "block-attach" => {
            let dom = words.next().ok_or("missing domain")?;
            let spec = line[verb.len()..].trim_start()[dom.len()..].trim();
            if spec.is_empty() {
                return Err("missing disk spec");
            }
            Command::BlockAttach {
                target: target(dom),
                spec,
            }
        }
        "block-detach" => {
            let dom = words.next().ok_or("missing domain")?;
            let vdev = words.next().ok_or("missing vdev")?;
            if words.next().is_some() {
                return Err("too many arguments");
            }
            Command::BlockDetach {
                target: target(dom),
                vdev,
            }
        }
        _ => return Err("unknown command (try help)"),
    };
    Ok(Some(command))
}

/// The header of `network-list`, `xl network-list`'s columns.
pub const NETWORK_LIST_HEADER: &str =
    "Idx BE Mac Addr.         handle state evt-ch   tx-/rx-ring-ref BE-path";

/// One vif as `network-list` shows it: what the xenstore says of it, each
/// number -1 when its node is missing or unreadable (as `xl` shows it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VifRow<'a> {
    /// The device id (`Idx`, also `handle`).
    pub devid: u32,
    /// The back end's domain (`backend-id`).
    pub backend_id: i64,
    /// The back end's `mac`.
    pub mac: &'a str,
    /// The front end's `state`.
    pub state: i64,
    /// The front end's `event-channel`.
    pub evtchn: i64,
    /// The front end's `tx-ring-ref`.
    pub tx_ring_ref: i64,
    /// The front end's `rx-ring-ref`.
    pub rx_ring_ref: i64,
    /// The back end's directory.
    pub backend: &'a str,
}

impl core::fmt::Display for VifRow<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{:<3} {:<2} {:<17} {:>6} {:>5} {:>6} {:>5}/{:<11} {}",
            self.devid,
            self.backend_id,
            self.mac,
            self.devid,
            self.state,
            self.evtchn,
            self.tx_ring_ref,
            self.rx_ring_ref,
            self.backend
        )
    }
}

/// A store value as a `network-list` number (-1 if absent or not one).
#[must_use]
pub fn vif_number(value: Option<&[u8]>) -> i64 {
    value
        .and_then(|v| core::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(-1)
}

/// Longest line the console shell takes; further characters are refused
/// (rung with BEL) until the line is entered or shortened.
pub const LINE_MAX: usize = 160;

/// Assembles typed bytes into command lines, and says what to echo: the
/// editing a terminal user expects of a serial console (no cursor
/// movement). Printable ASCII is kept and echoed; Backspace (0x08) and
/// DEL (0x7f) remove the last character (echoed as `BS SP BS`); CR or LF
/// ends the line (a LF right after a CR is ignored); Ctrl-U clears it;
/// every other byte is dropped.
#[derive(Clone, Debug)]
pub struct LineEditor {
    line: [u8; LINE_MAX],
    len: usize,
    after_cr: bool,
}

/// What one typed byte did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Edit {
    /// Nothing to echo.
    Nothing,
    /// Echo these bytes.
    Echo(&'static [u8]),
    /// Echo the byte itself.
    EchoByte(u8),
    /// A line is complete ([`LineEditor::line`]); echo a newline.
    Line,
}

impl Default for LineEditor {
    fn default() -> Self {
        LineEditor::new()
    }
}

impl LineEditor {
    /// An empty line.
    #[must_use]
    pub const fn new() -> LineEditor {
        LineEditor {
            line: [0; LINE_MAX],
            len: 0,
            after_cr: false,
        }
    }

    /// Takes one typed byte. After [`Edit::Line`], [`LineEditor::line`] is
    /// the line until the next byte starts a new one.
    pub fn push(&mut self, byte: u8) -> Edit {
        let after_cr = core::mem::replace(&mut self.after_cr, byte == b'\r');
        match byte {
            b'\n' if after_cr => Edit::Nothing,
            b'\r' | b'\n' => Edit::Line,
            0x08 | 0x7f if self.len > 0 => {
                self.len -= 1;
                Edit::Echo(b"\x08 \x08")
            }
            0x15 => {
                self.len = 0;
                Edit::Echo(b"\r\n")
            }
            0x20..=0x7e if self.len < LINE_MAX => {
                self.line[self.len] = byte;
                self.len += 1;
                Edit::EchoByte(byte)
            }
            0x20..=0x7e => Edit::Echo(b"\x07"),
            _ => Edit::Nothing,
        }
    }

    /// The line entered (valid right after [`Edit::Line`]); taking it
    /// starts an empty one.
    pub fn take_line(&mut self) -> &str {
        let len = core::mem::replace(&mut self.len, 0);
        // Only printable ASCII is ever stored.
        core::str::from_utf8(&self.line[..len]).unwrap_or("")
    }
}

/// One domain's share of the CPU beside its weight's, in parts per
/// million of what all the domains measured used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Share {
    /// Its weight's share of the weights' sum.
    pub want_ppm: u64,
    /// Its share of the CPU time used.
    pub got_ppm: u64,
}

impl Share {
    /// The shares of domains with these `(weight, CPU time used)`, in
    /// order.
    pub fn of(domains: &[(u16, u64)]) -> impl Iterator<Item = Share> + '_ {
        let weights: u64 = domains.iter().map(|&(w, _)| u64::from(w)).sum();
        let used: u64 = domains.iter().map(|&(_, ns)| ns).sum();
        domains.iter().map(move |&(weight, ns)| Share {
            want_ppm: u64::from(weight) * 1_000_000 / weights.max(1),
            got_ppm: u64::try_from(u128::from(ns) * 1_000_000 / u128::from(used.max(1)))
                .unwrap_or(u64::MAX),
        })
    }

    /// Whether the share is within `percent` % of the weight's.
    #[must_use]
    pub fn within(self, percent: u64) -> bool {
        self.got_ppm.abs_diff(self.want_ppm) * 100 <= self.want_ppm * percent
    }
}

/// `xl list`'s state column: `r` running, `b` blocked, `p` paused, `s`
/// shut down, `c` crashed, `d` dying; `-` where a letter does not apply.
#[must_use]
pub fn state(flags: DomInfoFlags, shutdown_code: u32) -> [u8; 6] {
    let crashed = flags.contains(DomInfoFlags::SHUTDOWN)
        && shutdown_code == dom0_abi::sched::ShutdownReason::Crash as u32;
    let letters = [
        (flags.contains(DomInfoFlags::RUNNING), b'r'),
        (flags.contains(DomInfoFlags::BLOCKED), b'b'),
        (flags.contains(DomInfoFlags::PAUSED), b'p'),
        (flags.contains(DomInfoFlags::SHUTDOWN) && !crashed, b's'),
        (crashed, b'c'),
        (flags.contains(DomInfoFlags::DYING), b'd'),
    ];
    letters.map(|(set, letter)| if set { letter } else { b'-' })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(editor: &mut LineEditor, bytes: &[u8]) -> Vec<Edit> {
        bytes.iter().map(|&b| editor.push(b)).collect()
    }

    #[test]
    fn network_list_rows_line_up_under_xl_columns() {
        let row = VifRow {
            devid: 0,
            backend_id: 0,
            mac: "00:16:3e:00:00:80",
            state: 4,
            evtchn: 5,
            tx_ring_ref: vif_number(Some(b"72")),
            rx_ring_ref: vif_number(Some(b"73")),
            backend: "/local/domain/0/backend/vif/1/0",
        };
        let line = format!("{row}");
        assert_eq!(
            line,
            "0   0  00:16:3e:00:00:80      0     4      5    72/73          /local/domain/0/backend/vif/1/0"
        );
        let header_at = |name: &str| NETWORK_LIST_HEADER.find(name).unwrap();
        assert_eq!(line.find("00:16"), Some(header_at("Mac")));
        assert_eq!(line.find("/local"), Some(header_at("BE-path")));
        assert_eq!(vif_number(None), -1);
        assert_eq!(vif_number(Some(b"x")), -1);
    }

    #[test]
    fn the_line_editor_assembles_and_edits_lines() {
        let mut e = LineEditor::new();
        assert_eq!(
            typed(&mut e, b"lsx\x7f"),
            [
                Edit::EchoByte(b'l'),
                Edit::EchoByte(b's'),
                Edit::EchoByte(b'x'),
                Edit::Echo(b"\x08 \x08")
            ]
        );
        assert_eq!(typed(&mut e, b"\x1b\r"), [Edit::Nothing, Edit::Line]);
        assert_eq!(e.take_line(), "ls");
        // CR LF is one line end; a lone LF ends a line too.
        assert_eq!(
            typed(&mut e, b"\nab\n"),
            [
                Edit::Nothing,
                Edit::EchoByte(b'a'),
                Edit::EchoByte(b'b'),
                Edit::Line
            ]
        );
        assert_eq!(e.take_line(), "ab");
        assert_eq!(typed(&mut e, b"\n"), [Edit::Line]);
        assert_eq!(e.take_line(), "");
        // Backspace on an empty line does nothing; Ctrl-U clears.
        assert_eq!(
            typed(&mut e, b"\x08x\x15"),
            [Edit::Nothing, Edit::EchoByte(b'x'), Edit::Echo(b"\r\n")]
        );
        assert_eq!(typed(&mut e, b"\r"), [Edit::Line]);
        assert_eq!(e.take_line(), "");
        // A full line refuses more (BEL) but still ends.
        let long = [b'a'; LINE_MAX + 1];
        let edits = typed(&mut e, &long);
        assert_eq!(edits[LINE_MAX], Edit::Echo(b"\x07"));
        assert_eq!(e.push(b'\r'), Edit::Line);
        assert_eq!(e.take_line().len(), LINE_MAX);
    }

    #[test]
    fn quit_and_exit_leave_the_shell() {
        assert_eq!(parse("quit"), Ok(Some(Command::Quit)));
        assert_eq!(parse(" exit "), Ok(Some(Command::Quit)));
        assert_eq!(parse("quit now"), Err("too many arguments"));
    }

    #[test]
    fn commands() {
        assert_eq!(parse("  # note"), Ok(None));
        assert_eq!(parse(""), Ok(None));
        assert_eq!(
            parse("create -p demo.cfg"),
            Ok(Some(Command::Create {
                config: "demo.cfg",
                paused: true
            }))
        );
        assert_eq!(
            parse("create demo.cfg"),
            Ok(Some(Command::Create {
                config: "demo.cfg",
                paused: false
            }))
        );
        assert_eq!(parse("pause 3"), Ok(Some(Command::Pause(Target::Id(3)))));
        assert_eq!(
            parse("unpause demo"),
            Ok(Some(Command::Unpause(Target::Name("demo"))))
        );
        assert_eq!(
            parse("sched-credit -d demo -w 512 -c 50"),
            Ok(Some(Command::SchedCredit {
                target: Target::Name("demo"),
                weight: Some(512),
                cap: Some(50)
            }))
        );
        assert_eq!(
            parse("sched-credit -d 1"),
            Ok(Some(Command::SchedCredit {
                target: Target::Id(1),
                weight: None,
                cap: None
            }))
        );
        assert_eq!(parse("vcpu-list"), Ok(Some(Command::VcpuList(None))));
        assert_eq!(parse("list"), Ok(Some(Command::List)));
        assert_eq!(parse("wait"), Ok(Some(Command::Wait)));
        assert_eq!(parse("cpu-share"), Ok(Some(Command::CpuShare)));
        assert_eq!(
            parse("console web"),
            Ok(Some(Command::Console(Target::Name("web"))))
        );
        assert_eq!(
            parse("console 3"),
            Ok(Some(Command::Console(Target::Id(3))))
        );
        assert_eq!(parse("console"), Err("missing domain"));
        assert_eq!(
            parse("scale tiny.cfg 500"),
            Ok(Some(Command::Scale {
                config: "tiny.cfg",
                count: 500
            }))
        );
        assert_eq!(parse("scale tiny.cfg 0"), Err("count must be 1..=65535"));
        assert_eq!(parse("scale tiny.cfg"), Err("count must be 1..=65535"));
        assert_eq!(parse("scale"), Err("missing config"));
        assert_eq!(parse("scale a 1 2"), Err("too many arguments"));
        assert_eq!(parse("cpu-share x"), Err("too many arguments"));
        assert_eq!(parse("pci-list"), Ok(Some(Command::PciList)));
        assert_eq!(parse("network-list"), Ok(Some(Command::NetworkList(None))));
        assert_eq!(
            parse("network-list web"),
            Ok(Some(Command::NetworkList(Some(Target::Name("web")))))
        );
        assert_eq!(
            parse("network-list 3"),
            Ok(Some(Command::NetworkList(Some(Target::Id(3)))))
        );
        assert!(parse("network-list a b").is_err());
        assert!(parse("pci-list 0").is_err());
        assert_eq!(parse("xenstore-ls"), Ok(Some(Command::XenstoreLs("/"))));
        assert_eq!(
            parse("xenstore-read /local/domain/1/name"),
            Ok(Some(Command::XenstoreRead("/local/domain/1/name")))
        );
        assert_eq!(
            parse("xenstore-write  /a/b  two words "),
            Ok(Some(Command::XenstoreWrite {
                path: "/a/b",
                value: "two words"
            }))
        );
    }

    #[test]
    fn errors() {
        assert_eq!(parse("frobnicate"), Err("unknown command (try help)"));
        assert_eq!(parse("pause"), Err("missing domain"));
        assert_eq!(parse("pause a b"), Err("too many arguments"));
        assert_eq!(parse("create"), Err("missing config"));
        assert_eq!(parse("create -x a"), Err("unknown option"));
        assert_eq!(parse("sched-credit -w 5"), Err("missing -d <dom>"));
        assert_eq!(
            parse("sched-credit -d a -w 0"),
            Err("weight must be 1..=65535")
        );
        assert_eq!(
            parse("sched-credit -d a -w x"),
            Err("weight must be 1..=65535")
        );
        assert_eq!(
            parse("sched-credit -d a -c 70000"),
            Err("cap must be 0..=65535")
        );
        assert_eq!(parse("list x"), Err("too many arguments"));
        assert_eq!(parse("xenstore-read"), Err("missing path"));
        assert_eq!(parse("xenstore-write /a"), Err("missing value"));
        assert_eq!(parse("xenstore-ls / x"), Err("too many arguments"));
        assert_eq!(parse("block-list a b"), Err("too many arguments"));
        assert_eq!(parse("block-attach"), Err("missing domain"));
        assert_eq!(parse("block-attach d"), Err("missing disk spec"));
        assert_eq!(parse("block-detach d"), Err("missing vdev"));
        assert_eq!(parse("block-detach d xvdb x"), Err("too many arguments"));
    }

    #[test]
    fn block_commands() {
        assert_eq!(parse("block-list"), Ok(Some(Command::BlockList(None))));
        assert_eq!(
            parse("block-list 3"),
            Ok(Some(Command::BlockList(Some(Target::Id(3)))))
        );
        assert_eq!(
            parse("block-attach disk  phy:vda2, xvdb, w "),
            Ok(Some(Command::BlockAttach {
                target: Target::Name("disk"),
                spec: "phy:vda2, xvdb, w"
            }))
        );
        assert_eq!(
            parse("block-detach 2 xvda"),
            Ok(Some(Command::BlockDetach {
                target: Target::Id(2),
                vdev: "xvda"
            }))
        );
    }

    #[test]
    fn shares_follow_weights() {
        let shares: Vec<Share> =
            Share::of(&[(64, 100), (128, 200), (256, 430), (512, 770)]).collect();
        assert_eq!(shares[0].want_ppm, 66_666);
        assert_eq!(shares[0].got_ppm, 66_666);
        assert!(shares.iter().take(2).all(|s| s.within(0)));
        // 430 of 1500 is 286 666 ppm against 266 666: 7.5 % over.
        assert!(shares[2].within(10) && !shares[2].within(7));
        assert!(!shares[3].within(1) && shares[3].within(4));
        assert_eq!(Share::of(&[]).count(), 0);
        let idle: Vec<Share> = Share::of(&[(1, 0), (1, 0)]).collect();
        assert_eq!(
            idle[0],
            Share {
                want_ppm: 500_000,
                got_ppm: 0
            }
        );
    }

    #[test]
    fn states() {
        assert_eq!(&state(DomInfoFlags::RUNNING, 255), b"r-----");
        assert_eq!(
            &state(DomInfoFlags::BLOCKED | DomInfoFlags::PAUSED, 255),
            b"-bp---"
        );
        assert_eq!(&state(DomInfoFlags::SHUTDOWN, 0), b"---s--");
        assert_eq!(&state(DomInfoFlags::SHUTDOWN, 3), b"----c-");
        assert_eq!(
            &state(DomInfoFlags::SHUTDOWN | DomInfoFlags::DYING, 0),
            b"---s-d"
        );
    }
}
