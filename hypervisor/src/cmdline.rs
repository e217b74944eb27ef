//! The hypervisor command line, parsed with Xen's syntax and rules.
//!
//! A command line is a list of space-separated options, each `name` or
//! `name=value` (`console=com1 com1=115200,8n1 dom0_mem=64M loglvl=info
//! noreboot`). [`parse`] turns it into a [`Config`] and a bounded list of
//! [`Diagnostics`]. The parser never logs and never fails: a problem with
//! one option becomes a diagnostic and leaves that setting at its previous
//! value (the default, or an earlier occurrence). Later occurrences of an
//! option override earlier ones, as on Xen.
//!
//! Invariants:
//! - Every problem is reported: [`Diagnostics`] keeps the first
//!   [`MAX_DIAGNOSTICS`] and counts the rest, and its iterator ends with a
//!   [`Diagnostic::Dropped`] entry when any were dropped.
//! - Message texts are fixed: `unknown option '<name>'` and
//!   `<option>: malformed value '<value>'` (tests match them).
//!
//! Xen's rules followed here (from its command-line documentation and
//! parser): booleans accept `yes/on/true/enable/1` and
//! `no/off/false/disable/0`, a bare name means true, a `no-` prefix means
//! false (and inverts an explicit value); sizes are integers (decimal, `0x`
//! hex or leading-`0` octal) with a `T/G/M/K/B` suffix, kilobytes without
//! one; log levels are `none|error|warning|info|debug|all`, optionally
//! followed by `/<rate-limited level>`.
//!
//! Two options are this hypervisor's own: `max_domains=<n>`, the size of
//! the domain table (see [`Config::max_domains`]), and
//! `test_nonce=<1-16 hex digits>`, which the test harness passes on every
//! boot and the hypervisor echoes in its dom0 teardown line (see
//! [`Config::test_nonce`]).
#![forbid(unsafe_code)]

use core::fmt;

use log::LevelFilter;

use crate::layout::PAGE_SHIFT;

/// How many diagnostics [`Diagnostics`] stores before it only counts.
pub const MAX_DIAGNOSTICS: usize = 16;

/// Everything the hypervisor command line configures.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// `console=`: which consoles to use (default `com1,vga`, as on Xen).
    pub console: Console,
    /// `com1=`: settings of the first serial port.
    pub com1: SerialConfig,
    /// `dom0_mem=`: how much memory dom0 gets.
    pub dom0_mem: Dom0Mem,
    /// `dom0_max_vcpus=`: bounds on dom0's vCPU count.
    pub dom0_max_vcpus: Dom0MaxVcpus,
    /// `dom0_vcpus_pin`: pin dom0's vCPUs to the physical CPUs of the same
    /// number (default false). With one CPU running guests every vCPU runs
    /// on CPU 0 anyway; the boot log says so when the option is given.
    pub dom0_vcpus_pin: bool,
    /// `loglvl=`: the hypervisor's own log thresholds (default `warning`;
    /// see [`crate::logfilter`]).
    pub loglvl: LogLevels,
    /// `guest_loglvl=`: thresholds for messages a guest causes (default
    /// `none/warning`: all rate-limited, those below `warning` dropped;
    /// see [`crate::logfilter`]).
    pub guest_loglvl: LogLevels,
    /// `noreboot`: stay down after a crash instead of rebooting. This
    /// hypervisor never reboots the machine (it ends the run with the
    /// outcome as QEMU's exit status), so it always behaves as with it.
    pub noreboot: bool,
    /// `max_domains=<n>` (this hypervisor only, not Xen's): slots in the
    /// domain table, 1 to [`crate::domain::MAX_DOMAINS`] (default
    /// [`crate::domain::DEFAULT_DOMAINS`]); domain ids run from 0 to n-1.
    pub max_domains: usize,
    /// `test_nonce=<hex>` (this hypervisor only, not Xen's): 1 to 16 hex
    /// digits that the test harness generates for each boot. The
    /// hypervisor echoes it in its dom0 teardown line, so that the
    /// harness can tell that line from one a guest prints; guests never
    /// see it (see [`hide_test_nonce`]). Default: none.
    pub test_nonce: Option<u64>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            console: Console {
                com1: true,
                vga: true,
            },
            com1: SerialConfig::default(),
            dom0_mem: Dom0Mem::default(),
            dom0_max_vcpus: Dom0MaxVcpus::default(),
            dom0_vcpus_pin: false,
            loglvl: LogLevels {
                level: LevelFilter::Warn,
                rate_limited: LevelFilter::Warn,
            },
            guest_loglvl: LogLevels {
                level: LevelFilter::Off,
                rate_limited: LevelFilter::Warn,
            },
            noreboot: false,
            max_domains: crate::domain::DEFAULT_DOMAINS,
            test_nonce: None,
        }
    }
}

/// The consoles named by `console=`.
///
/// Only COM1 exists in this hypervisor; `vga` (and Xen's `com2`, `pv`,
/// `dbgp`, `ehci`, `xhci`) are accepted with a note and otherwise ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Console {
    /// Write the console to COM1.
    pub com1: bool,
    /// `vga` was listed (not implemented; kept so callers can say so).
    pub vga: bool,
}

/// Parity setting of a serial port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parity {
    /// `n`: no parity bit.
    None,
    /// `o`: odd parity.
    Odd,
    /// `e`: even parity.
    Even,
    /// `m`: mark parity (always 1).
    Mark,
    /// `s`: space parity (always 0).
    Space,
}

/// The baud rate of a serial port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Baud {
    /// `auto`: keep what firmware or the boot loader programmed.
    Auto,
    /// A fixed rate in bits per second.
    Rate(u32),
}

/// `com1=<baud>[/<base-baud>][,[DPS][,[<io-base>][,[<irq>]]]]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SerialConfig {
    /// Baud rate (default `auto`, Xen's default for COM1).
    pub baud: Baud,
    /// The UART clock divided by 16, if given after a `/`.
    pub base_baud: Option<u32>,
    /// Data bits, 5 to 8 (default 8).
    pub data_bits: u8,
    /// Parity (default none).
    pub parity: Parity,
    /// Stop bits, 1 or 2 (default 1).
    pub stop_bits: u8,
    /// I/O port base (default 0x3f8).
    pub io_base: u16,
    /// IRQ line, 0 for polling (default 4).
    pub irq: u8,
}

impl Default for SerialConfig {
    fn default() -> Self {
        SerialConfig {
            baud: Baud::Auto,
            base_baud: None,
            data_bits: 8,
            parity: Parity::None,
            stop_bits: 1,
            io_base: 0x3f8,
            irq: 4,
        }
    }
}

/// One `dom0_mem` amount: `[-]<size>`, `[-]<frac>%` or `[-]<size>+<frac>%`.
///
/// The value is `pages + percent% of available memory`; with `minus` it is
/// subtracted from the available memory instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemSize {
    /// The absolute part, in 4 KiB pages (the size shifted right by 12).
    pub pages: u64,
    /// The part relative to available memory, in percent (below 100).
    pub percent: u8,
    /// A leading `-`: "all available memory but this much".
    pub minus: bool,
}

impl MemSize {
    /// The zero amount (Xen's "not given").
    pub const ZERO: MemSize = MemSize {
        pages: 0,
        percent: 0,
        minus: false,
    };

    /// The number of pages this amount means when `avail_pages` are
    /// available (Xen's `get_memsize`). A "minus" amount larger than the
    /// available memory gives 0.
    pub fn pages_of(&self, avail_pages: u64) -> u64 {
        let relative = u128::from(self.percent) * u128::from(avail_pages) / 100;
        let relative = u64::try_from(relative).unwrap_or(u64::MAX);
        let amount = self.pages.saturating_add(relative);
        if self.minus {
            avail_pages.saturating_sub(amount)
        } else {
            amount
        }
    }

    /// True when the amount is a positive absolute value (Xen's
    /// `memsize_gt_zero`).
    pub fn is_positive(&self) -> bool {
        !self.minus && self.pages != 0
    }
}

/// `dom0_mem=` as a list of `min:<sz>`, `max:<sz>` and `<sz>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dom0Mem {
    /// The exact amount; zero means "not given" (all available memory
    /// minus a reserve).
    pub size: MemSize,
    /// The lower bound (default 0).
    pub min: MemSize,
    /// The upper bound (default unlimited); also dom0's balloon ceiling.
    pub max: MemSize,
}

impl Default for Dom0Mem {
    fn default() -> Self {
        Dom0Mem {
            size: MemSize::ZERO,
            min: MemSize::ZERO,
            max: MemSize {
                pages: u64::MAX,
                percent: 0,
                minus: false,
            },
        }
    }
}

/// dom0's page counts derived from [`Dom0Mem`] and the available memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dom0Pages {
    /// Pages dom0 starts with.
    pub nr_pages: u64,
    /// The lower bound that applied (after clamping).
    pub min_pages: u64,
    /// The most pages dom0 may ever own.
    pub max_pages: u64,
}

impl Dom0Mem {
    /// Xen's rule for dom0's initial size, given `avail_pages` free pages.
    ///
    /// Without an exact size dom0 gets all available memory minus a reserve
    /// of 1/16 of it, at most 128 MiB. The result is raised to `min`, then
    /// lowered to `max` (so `max` wins over `min`) and to `avail_pages`.
    /// Xen's further cut for kernels without `INIT_P2M` lives in
    /// [`crate::builder::layout::dom0_nr_pages`].
    pub fn resolve(&self, avail_pages: u64) -> Dom0Pages {
        let reserve = (avail_pages / 16).min(128 << (20 - PAGE_SHIFT));
        let mut nr_pages = match self.size.pages_of(avail_pages) {
            0 => avail_pages - reserve,
            n => n,
        };
        let min_pages = self.min.pages_of(avail_pages);
        let max_pages = self.max.pages_of(avail_pages);
        nr_pages = nr_pages.max(min_pages).min(max_pages).min(avail_pages);
        Dom0Pages {
            nr_pages,
            min_pages,
            max_pages,
        }
    }
}

/// `dom0_max_vcpus=<n>` or `<min>-<max>` (either side may be left out).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dom0MaxVcpus {
    /// At least this many vCPUs (default 1).
    pub min: u32,
    /// At most this many vCPUs (default unlimited).
    pub max: u32,
}

impl Default for Dom0MaxVcpus {
    fn default() -> Self {
        Dom0MaxVcpus {
            min: 1,
            max: u32::MAX,
        }
    }
}

impl Dom0MaxVcpus {
    /// dom0's vCPU count on a machine with `nr_pcpus` CPUs: the CPU count
    /// raised to `min`, then lowered to `max` (Xen lets `max` win).
    pub fn resolve(&self, nr_pcpus: u32) -> u32 {
        nr_pcpus.max(self.min).min(self.max)
    }
}

/// A `loglvl=`-style setting: `<level>[/<rate-limited level>]`.
///
/// `level` is the first part; messages up to `rate_limited` are printed
/// rate-limited on Xen. `rate_limited` is never below `level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogLevels {
    /// The first part: the threshold for unconditional printing.
    pub level: LevelFilter,
    /// The second part (equal to `level` when absent).
    pub rate_limited: LevelFilter,
}

/// One problem found on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Diagnostic<'a> {
    /// No option has this name (shown as typed, `no-` prefix included).
    UnknownOption {
        /// The option name.
        name: &'a str,
    },
    /// The value of a known option could not be parsed; the setting kept
    /// its previous value.
    MalformedValue {
        /// The option name.
        option: &'static str,
        /// The value as typed.
        value: &'a str,
    },
    /// A `no-` prefix on an option that is not a boolean.
    NotBoolean {
        /// The option name.
        option: &'static str,
    },
    /// The value was accepted but names something this hypervisor does not
    /// implement.
    Unsupported {
        /// The option name.
        option: &'static str,
        /// The unimplemented item (for example `vga`).
        item: &'a str,
    },
    /// More diagnostics than [`MAX_DIAGNOSTICS`]: this many were not kept.
    Dropped {
        /// How many were dropped.
        count: usize,
    },
}

impl fmt::Display for Diagnostic<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Diagnostic::UnknownOption { name } => write!(f, "unknown option '{name}'"),
            Diagnostic::MalformedValue { option, value } => {
                write!(f, "{option}: malformed value '{value}'")
            }
            Diagnostic::NotBoolean { option } => {
                write!(f, "{option}: 'no-' prefix only applies to boolean options")
            }
            Diagnostic::Unsupported { option, item } => {
                write!(f, "{option}: '{item}' is not supported here, ignored")
            }
            Diagnostic::Dropped { count } => {
                write!(f, "{count} more command-line diagnostics not shown")
            }
        }
    }
}

/// A bounded list of diagnostics that never loses count.
#[derive(Clone, Debug)]
pub struct Diagnostics<'a> {
    items: [Option<Diagnostic<'a>>; MAX_DIAGNOSTICS],
    len: usize,
    dropped: usize,
}

impl<'a> Diagnostics<'a> {
    /// An empty list.
    pub const fn new() -> Self {
        Diagnostics {
            items: [None; MAX_DIAGNOSTICS],
            len: 0,
            dropped: 0,
        }
    }

    /// Adds a diagnostic, or counts it as dropped when the list is full.
    pub fn push(&mut self, diagnostic: Diagnostic<'a>) {
        if let Some(slot) = self.items.get_mut(self.len) {
            *slot = Some(diagnostic);
            self.len += 1;
        } else {
            self.dropped = self.dropped.saturating_add(1);
        }
    }

    /// How many diagnostics are stored (at most [`MAX_DIAGNOSTICS`]).
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing was reported at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0 && self.dropped == 0
    }

    /// How many diagnostics did not fit.
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// The stored diagnostics in order, followed by one
    /// [`Diagnostic::Dropped`] if any were dropped.
    pub fn iter(&self) -> impl Iterator<Item = Diagnostic<'a>> + '_ {
        let dropped = (self.dropped > 0).then_some(Diagnostic::Dropped {
            count: self.dropped,
        });
        self.items
            .iter()
            .take(self.len)
            .flatten()
            .copied()
            .chain(dropped)
    }
}

impl Default for Diagnostics<'_> {
    fn default() -> Self {
        Self::new()
    }
}

/// Parses a hypervisor command line (the image name already stripped, see
/// [`strip_image_name`]).
pub fn parse(cmdline: &str) -> (Config, Diagnostics<'_>) {
    let mut config = Config::default();
    let mut diagnostics = Diagnostics::new();
    for token in cmdline.split(is_separator).filter(|t| !t.is_empty()) {
        apply_option(&mut config, &mut diagnostics, token);
    }
    (config, diagnostics)
}

/// Xen separates options with spaces; tabs and newlines from odd boot
/// loaders are treated the same way.
fn is_separator(c: char) -> bool {
    c.is_ascii_whitespace()
}

/// How a known option takes its value.
#[derive(Clone, Copy)]
enum Kind {
    Bool(fn(&mut Config, bool)),
    Custom(for<'a> fn(&mut Config, &'a str, &mut Diagnostics<'a>) -> Result<(), ()>),
}

/// Every option the parser knows.
const OPTIONS: &[(&str, Kind)] = &[
    ("console", Kind::Custom(parse_console)),
    ("com1", Kind::Custom(parse_com1)),
    ("dom0_mem", Kind::Custom(parse_dom0_mem)),
    ("dom0_max_vcpus", Kind::Custom(parse_dom0_max_vcpus)),
    (
        "dom0_vcpus_pin",
        Kind::Bool(|c, v| {
            c.dom0_vcpus_pin = v;
        }),
    ),
    ("loglvl", Kind::Custom(parse_loglvl)),
    ("guest_loglvl", Kind::Custom(parse_guest_loglvl)),
    (
        "noreboot",
        Kind::Bool(|c, v| {
            c.noreboot = v;
        }),
    ),
    ("max_domains", Kind::Custom(parse_max_domains)),
    ("test_nonce", Kind::Custom(parse_test_nonce)),
];

/// The option whose value [`hide_test_nonce`] hides.
const TEST_NONCE: &[u8] = b"test_nonce=";

fn parse_max_domains(config: &mut Config, value: &str, _: &mut Diagnostics<'_>) -> Result<(), ()> {
    let n = usize::try_from(parse_u32(value).ok_or(())?).map_err(|_| ())?;
    if !(1..=crate::domain::MAX_DOMAINS).contains(&n) {
        return Err(());
    }
    config.max_domains = n;
    Ok(())
}

fn parse_test_nonce(config: &mut Config, value: &str, _: &mut Diagnostics<'_>) -> Result<(), ()> {
    if value.is_empty() || value.len() > 16 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(());
    }
    config.test_nonce = Some(u64::from_str_radix(value, 16).map_err(|_| ())?);
    Ok(())
}

/// Copies the command line `line` into `out` (cut to its length) with the
/// value of every `test_nonce=` option replaced by `x`s, and returns the
/// length copied. This is the line guests get (`XENVER_commandline`): a
/// guest that could read the nonce could forge the teardown line.
pub fn hide_test_nonce(line: &[u8], out: &mut [u8]) -> usize {
    let n = line.len().min(out.len());
    out[..n].copy_from_slice(&line[..n]);
    let mut start = 0;
    while start < n {
        let end = out[start..n]
            .iter()
            .position(u8::is_ascii_whitespace)
            .map_or(n, |at| start + at);
        if out[start..end].starts_with(TEST_NONCE) {
            out[start + TEST_NONCE.len()..end].fill(b'x');
        }
        start = end + 1;
    }
    n
}

fn apply_option<'a>(config: &mut Config, diagnostics: &mut Diagnostics<'a>, token: &'a str) {
    let (key, value) = match token.split_once('=') {
        Some((key, value)) => (key, value),
        None => (token, ""),
    };
    let (name, negated) = match key.strip_prefix("no-") {
        Some(rest) => (rest, true),
        None => (key, false),
    };
    let Some(&(option, kind)) = OPTIONS.iter().find(|(n, _)| *n == name) else {
        diagnostics.push(Diagnostic::UnknownOption { name: key });
        return;
    };
    match kind {
        Kind::Bool(set) => {
            let parsed = if value.is_empty() {
                Some(true)
            } else {
                parse_bool(value)
            };
            match parsed {
                // `no-x=false` is `x=true`: Xen inverts the explicit value.
                Some(v) => set(config, v != negated),
                None => diagnostics.push(Diagnostic::MalformedValue { option, value }),
            }
        }
        Kind::Custom(_) if negated => diagnostics.push(Diagnostic::NotBoolean { option }),
        Kind::Custom(parse_value) => {
            // Parse into a copy so a malformed value leaves no partial change.
            let mut updated = *config;
            let mut notes = Diagnostics::new();
            if parse_value(&mut updated, value, &mut notes).is_ok() {
                *config = updated;
                for note in notes.iter() {
                    diagnostics.push(note);
                }
            } else {
                diagnostics.push(Diagnostic::MalformedValue { option, value });
            }
        }
    }
}

/// Xen's boolean values.
pub fn parse_bool(value: &str) -> Option<bool> {
    match value {
        "1" | "on" | "yes" | "true" | "enable" => Some(true),
        "0" | "no" | "off" | "false" | "disable" => Some(false),
        _ => None,
    }
}

fn parse_console<'a>(
    config: &mut Config,
    value: &'a str,
    notes: &mut Diagnostics<'a>,
) -> Result<(), ()> {
    let mut console = Console {
        com1: false,
        vga: false,
    };
    for item in value.split(',') {
        match item {
            "com1" => console.com1 = true,
            "vga" => {
                console.vga = true;
                notes.push(Diagnostic::Unsupported {
                    option: "console",
                    item,
                });
            }
            "none" => {}
            "com2" | "pv" | "dbgp" | "ehci" | "xhci" | "com1H" | "com1L" | "com2H" | "com2L" => {
                notes.push(Diagnostic::Unsupported {
                    option: "console",
                    item,
                });
            }
            _ => return Err(()),
        }
    }
    config.console = console;
    Ok(())
}

fn parse_com1(config: &mut Config, value: &str, _: &mut Diagnostics<'_>) -> Result<(), ()> {
    let mut serial = SerialConfig::default();
    let mut fields = value.split(',');
    let speed = fields.next().unwrap_or("");
    let (baud, base_baud) = match speed.split_once('/') {
        Some((baud, base)) => (baud, Some(parse_u32(base).ok_or(())?)),
        None => (speed, None),
    };
    serial.base_baud = base_baud;
    serial.baud = if baud == "auto" {
        Baud::Auto
    } else {
        let rate = parse_u32(baud).ok_or(())?;
        let ceiling = base_baud.unwrap_or(115_200);
        if rate == 0 || rate > ceiling {
            return Err(());
        }
        Baud::Rate(rate)
    };
    if let Some(dps) = fields.next().filter(|f| !f.is_empty()) {
        parse_dps(&mut serial, dps)?;
    }
    if let Some(io_base) = fields.next().filter(|f| !f.is_empty()) {
        serial.io_base = u16::try_from(parse_u64(io_base).ok_or(())?).map_err(|_| ())?;
    }
    if let Some(irq) = fields.next().filter(|f| !f.is_empty()) {
        serial.irq = u8::try_from(parse_u64(irq).ok_or(())?).map_err(|_| ())?;
    }
    if fields.next().is_some() {
        return Err(());
    }
    config.com1 = serial;
    Ok(())
}

/// `DPS`: data bits 5-8, parity `n|o|e|m|s`, stop bits 1-2 (e.g. `8n1`).
fn parse_dps(serial: &mut SerialConfig, dps: &str) -> Result<(), ()> {
    let &[data, parity, stop] = dps.as_bytes() else {
        return Err(());
    };
    serial.data_bits = match data {
        b'5'..=b'8' => data - b'0',
        _ => return Err(()),
    };
    serial.parity = match parity {
        b'n' => Parity::None,
        b'o' => Parity::Odd,
        b'e' => Parity::Even,
        b'm' => Parity::Mark,
        b's' => Parity::Space,
        _ => return Err(()),
    };
    serial.stop_bits = match stop {
        b'1' | b'2' => stop - b'0',
        _ => return Err(()),
    };
    Ok(())
}

fn parse_dom0_mem(config: &mut Config, value: &str, _: &mut Diagnostics<'_>) -> Result<(), ()> {
    let mut mem = config.dom0_mem;
    for item in value.split(',') {
        if let Some(amount) = item.strip_prefix("min:") {
            mem.min = parse_mem_amount(amount).ok_or(())?;
        } else if let Some(amount) = item.strip_prefix("max:") {
            mem.max = parse_mem_amount(amount).ok_or(())?;
        } else {
            mem.size = parse_mem_amount(item).ok_or(())?;
        }
    }
    config.dom0_mem = mem;
    Ok(())
}

/// `[-]<size>`, `[-]<frac>%` or `[-]<size>+<frac>%` (Xen's `parse_amt`).
pub fn parse_mem_amount(text: &str) -> Option<MemSize> {
    let (minus, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let mut amount = MemSize {
        pages: 0,
        percent: 0,
        minus,
    };
    let (first, second) = match text.split_once('+') {
        Some((first, second)) => (first, Some(second)),
        None => (text, None),
    };
    if let Some(percent) = first.strip_suffix('%') {
        // A fraction must be the only (or last) item.
        if second.is_some() {
            return None;
        }
        amount.percent = parse_percent(percent)?;
    } else {
        amount.pages = parse_size(first)? >> PAGE_SHIFT;
        if let Some(second) = second {
            amount.percent = parse_percent(second.strip_suffix('%')?)?;
        }
    }
    Some(amount)
}

fn parse_percent(text: &str) -> Option<u8> {
    if !text.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    u8::try_from(parse_u64(text)?).ok().filter(|p| *p < 100)
}

/// A Xen size: an integer with an optional `T/G/M/K/B` suffix (either
/// case); no suffix means kilobytes. Returns bytes; overflow is an error.
pub fn parse_size(text: &str) -> Option<u64> {
    if !text.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let (digits, shift) = match text.as_bytes().last()? {
        b'T' | b't' => (&text[..text.len() - 1], 40),
        b'G' | b'g' => (&text[..text.len() - 1], 30),
        b'M' | b'm' => (&text[..text.len() - 1], 20),
        b'K' | b'k' => (&text[..text.len() - 1], 10),
        b'B' | b'b' if !is_hex_literal(text) => (&text[..text.len() - 1], 0),
        _ => (text, 10),
    };
    let number = parse_u64(digits)?;
    let bytes = number.checked_shl(shift)?;
    (bytes >> shift == number).then_some(bytes)
}

/// `0x…` literals may end in the hex digit `b`, which is then not a suffix.
fn is_hex_literal(text: &str) -> bool {
    text.starts_with("0x") || text.starts_with("0X")
}

fn parse_dom0_max_vcpus(
    config: &mut Config,
    value: &str,
    _: &mut Diagnostics<'_>,
) -> Result<(), ()> {
    let mut vcpus = Dom0MaxVcpus::default();
    match value.split_once('-') {
        None => {
            let n = parse_u32(value).ok_or(())?;
            vcpus.min = n.max(1);
            vcpus.max = vcpus.min;
        }
        Some((min, max)) => {
            if !min.is_empty() {
                vcpus.min = parse_u32(min).ok_or(())?.max(1);
            }
            if !max.is_empty() {
                vcpus.max = parse_u32(max).ok_or(())?;
                if vcpus.max == 0 {
                    return Err(());
                }
            }
            if min.is_empty() && max.is_empty() {
                return Err(());
            }
        }
    }
    config.dom0_max_vcpus = vcpus;
    Ok(())
}

fn parse_loglvl(config: &mut Config, value: &str, _: &mut Diagnostics<'_>) -> Result<(), ()> {
    config.loglvl = parse_log_levels(value).ok_or(())?;
    Ok(())
}

fn parse_guest_loglvl(config: &mut Config, value: &str, _: &mut Diagnostics<'_>) -> Result<(), ()> {
    config.guest_loglvl = parse_log_levels(value).ok_or(())?;
    Ok(())
}

/// `<level>[/<rate-limited level>]`; the second part is raised to the first
/// when lower, as Xen does.
pub fn parse_log_levels(value: &str) -> Option<LogLevels> {
    let (first, second) = match value.split_once('/') {
        Some((first, second)) => (first, Some(second)),
        None => (value, None),
    };
    let level = parse_log_level(first)?;
    let rate_limited = match second {
        Some(second) => parse_log_level(second)?.max(level),
        None => level,
    };
    Some(LogLevels {
        level,
        rate_limited,
    })
}

/// One of Xen's level names mapped onto [`LevelFilter`].
pub fn parse_log_level(name: &str) -> Option<LevelFilter> {
    match name {
        "none" => Some(LevelFilter::Off),
        "error" => Some(LevelFilter::Error),
        "warning" => Some(LevelFilter::Warn),
        "info" => Some(LevelFilter::Info),
        "debug" => Some(LevelFilter::Debug),
        "all" => Some(LevelFilter::Trace),
        _ => None,
    }
}

fn parse_u32(text: &str) -> Option<u32> {
    u32::try_from(parse_u64(text)?).ok()
}

/// A whole string as an unsigned integer in C's base-0 convention:
/// `0x`/`0X` hex, a leading `0` octal, decimal otherwise.
pub fn parse_u64(text: &str) -> Option<u64> {
    let (digits, radix) =
        if let Some(hex) = text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
            (hex, 16)
        } else if text.len() > 1 && text.starts_with('0') {
            (&text[1..], 8)
        } else {
            (text, 10)
        };
    if digits.is_empty() || !digits.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// True when the boot loader is GRUB 2, which (unlike GRUB Legacy and QEMU)
/// does not put the image name first on the command line. Xen's test: the
/// name contains `"GRUB "` not followed by `'0'` (GRUB Legacy calls itself
/// "GNU GRUB 0.97").
pub fn loader_is_grub2(loader_name: &str) -> bool {
    loader_name
        .find("GRUB ")
        .is_some_and(|at| loader_name.as_bytes().get(at + 5) != Some(&b'0'))
}

/// Removes leading blanks and, unless the boot loader is GRUB 2, the first
/// word (the image file name that multiboot1 loaders such as QEMU put
/// there). `loader_name` is `None` when the boot loader gave no name, which
/// Xen treats as "not GRUB 2". Apply it to the hypervisor command line and
/// to module strings alike.
pub fn strip_image_name<'a>(cmdline: &'a str, loader_name: Option<&str>) -> &'a str {
    let cmdline = cmdline.trim_start_matches(is_separator);
    if loader_name.is_some_and(loader_is_grub2) {
        return cmdline;
    }
    let rest = cmdline.find(is_separator).map_or("", |at| &cmdline[at..]);
    rest.trim_start_matches(is_separator)
}

/// Splits off the options after a `" -- "` separator, which Xen appends to
/// dom0's command line. Returns the hypervisor's part and dom0's extra part
/// (trimmed), if any.
pub fn split_dom0_options(cmdline: &str) -> (&str, Option<&str>) {
    match cmdline.split_once(" -- ") {
        Some((own, extra)) => (own, Some(extra.trim_matches(is_separator))),
        None => (cmdline, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn messages(d: &Diagnostics<'_>) -> Vec<String> {
        d.iter().map(|d| d.to_string()).collect()
    }

    #[test]
    fn defaults_match_xen() {
        let (config, diags) = parse("");
        assert!(diags.is_empty());
        assert_eq!(config, Config::default());
        assert!(config.console.com1);
        assert_eq!(config.loglvl.level, LevelFilter::Warn);
        assert_eq!(config.guest_loglvl.level, LevelFilter::Off);
        assert_eq!(config.guest_loglvl.rate_limited, LevelFilter::Warn);
        assert_eq!(config.com1.baud, Baud::Auto);
        assert!(!config.noreboot);
    }

    #[test]
    fn typical_command_line() {
        let (config, diags) =
            parse("console=com1 com1=115200,8n1 dom0_mem=64M noreboot loglvl=all guest_loglvl=all");
        assert!(diags.is_empty(), "{:?}", messages(&diags));
        assert!(config.console.com1 && !config.console.vga);
        assert_eq!(config.com1.baud, Baud::Rate(115_200));
        assert_eq!(config.com1.data_bits, 8);
        assert_eq!(config.com1.parity, Parity::None);
        assert_eq!(config.com1.stop_bits, 1);
        assert_eq!(config.dom0_mem.size.pages, 16384);
        assert!(config.noreboot);
        assert_eq!(config.loglvl.level, LevelFilter::Trace);
        assert_eq!(config.guest_loglvl.level, LevelFilter::Trace);
    }

    #[test]
    fn test_nonce_is_hex_and_hidden_from_guests() {
        let (config, diags) = parse("loglvl=info test_nonce=00c0ffee12345678");
        assert!(diags.is_empty(), "{:?}", messages(&diags));
        assert_eq!(config.test_nonce, Some(0x00c0_ffee_1234_5678));
        for bad in ["", "0x12", "12345678901234567", "xyz", "-1"] {
            let line = format!("test_nonce={bad}");
            let (config, diags) = parse(&line);
            assert_eq!(config.test_nonce, None, "{bad}");
            assert_eq!(
                messages(&diags),
                [format!("test_nonce: malformed value '{bad}'")]
            );
        }
        let line = b"console=com1 test_nonce=abc123  notest_nonce=1 test_nonce=9\ttest_nonce=";
        let mut out = [0u8; 128];
        let n = hide_test_nonce(line, &mut out);
        assert_eq!(
            &out[..n],
            b"console=com1 test_nonce=xxxxxx  notest_nonce=1 test_nonce=x\ttest_nonce="
        );
        let mut short = [0u8; 20];
        let n = hide_test_nonce(line, &mut short);
        assert_eq!(&short[..n], b"console=com1 test_no");
        let n = hide_test_nonce(b"test_nonce=12", &mut short);
        assert_eq!(&short[..n], b"test_nonce=xx");
    }

    #[test]
    fn unknown_and_malformed_messages() {
        let (config, diags) = parse("bogus_option loglvl=loud loglvl=info loglvl=verbose");
        let msgs = messages(&diags);
        assert_eq!(msgs[0], "unknown option 'bogus_option'");
        assert_eq!(msgs[1], "loglvl: malformed value 'loud'");
        assert_eq!(msgs[2], "loglvl: malformed value 'verbose'");
        // The last good value stays.
        assert_eq!(config.loglvl.level, LevelFilter::Info);
    }

    #[test]
    fn booleans_follow_xen() {
        for (line, expected) in [
            ("noreboot", true),
            ("noreboot=1", true),
            ("noreboot=yes", true),
            ("noreboot=on", true),
            ("noreboot=true", true),
            ("noreboot=enable", true),
            ("noreboot=0", false),
            ("noreboot=no", false),
            ("noreboot=off", false),
            ("noreboot=false", false),
            ("noreboot=disable", false),
            ("noreboot no-noreboot", false),
            ("no-noreboot=false", true),
            ("noreboot=", true),
        ] {
            let (config, diags) = parse(line);
            assert!(diags.is_empty(), "{line}");
            assert_eq!(config.noreboot, expected, "{line}");
        }
        let (config, diags) = parse("noreboot noreboot=maybe");
        assert!(config.noreboot);
        assert_eq!(messages(&diags), ["noreboot: malformed value 'maybe'"]);
        let (config, _) = parse("dom0_vcpus_pin");
        assert!(config.dom0_vcpus_pin);
    }

    #[test]
    fn no_prefix_on_non_boolean() {
        let (config, diags) = parse("no-dom0_mem");
        assert_eq!(config, Config::default());
        assert_eq!(
            messages(&diags),
            ["dom0_mem: 'no-' prefix only applies to boolean options"]
        );
        let (_, diags) = parse("no-bogus");
        assert_eq!(messages(&diags), ["unknown option 'no-bogus'"]);
    }

    #[test]
    fn sizes_follow_xen() {
        assert_eq!(parse_size("64M"), Some(64 << 20));
        assert_eq!(parse_size("64m"), Some(64 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("2T"), Some(2 << 40));
        assert_eq!(parse_size("4096B"), Some(4096));
        // No suffix: kilobytes.
        assert_eq!(parse_size("65536"), Some(64 << 20));
        assert_eq!(parse_size("0x10M"), Some(16 << 20));
        assert_eq!(parse_size("0x1b"), Some(0x1b << 10));
        assert_eq!(parse_size("010K"), Some(8 << 10));
        assert_eq!(parse_size("M"), None);
        assert_eq!(parse_size("12Q"), None);
        assert_eq!(parse_size("99999999999T"), None);
        assert_eq!(parse_size(""), None);
    }

    #[test]
    fn dom0_mem_forms() {
        let (config, diags) = parse("dom0_mem=min:128M,max:1G,512M");
        assert!(diags.is_empty());
        let mem = config.dom0_mem;
        assert_eq!(mem.min.pages, 32768);
        assert_eq!(mem.max.pages, 262_144);
        assert_eq!(mem.size.pages, 131_072);

        let (config, diags) = parse("dom0_mem=-1G");
        assert!(diags.is_empty());
        assert!(config.dom0_mem.size.minus);
        assert_eq!(config.dom0_mem.size.pages_of(1 << 20), (1 << 20) - 262_144);

        let (config, diags) = parse("dom0_mem=1G+25%");
        assert!(diags.is_empty());
        assert_eq!(config.dom0_mem.size.percent, 25);
        assert_eq!(config.dom0_mem.size.pages_of(400), 262_144 + 100);

        let (config, diags) = parse("dom0_mem=10%");
        assert!(diags.is_empty());
        assert_eq!(config.dom0_mem.size.pages_of(1000), 100);

        for bad in [
            "", "100%", "10%+1G", "abc", "64M,", "min:", "64X", "1G+", "-",
        ] {
            let (config, diags) = parse_owned(&format!("dom0_mem={bad}"));
            assert_eq!(config.dom0_mem, Dom0Mem::default(), "{bad}");
            assert_eq!(
                diags,
                [format!("dom0_mem: malformed value '{bad}'")],
                "{bad}"
            );
        }
    }

    fn parse_owned(line: &str) -> (Config, Vec<String>) {
        let (config, diags) = parse(line);
        (config, messages(&diags))
    }

    #[test]
    fn dom0_mem_resolution() {
        // Default: everything minus min(1/16, 128 MiB).
        let d = Dom0Mem::default();
        assert_eq!(d.resolve(16000).nr_pages, 15000);
        assert_eq!(d.resolve(1 << 22).nr_pages, (1 << 22) - 32768);
        // Exact size, clamped by the available memory.
        let (config, _) = parse("dom0_mem=64M");
        assert_eq!(config.dom0_mem.resolve(100_000).nr_pages, 16384);
        assert_eq!(config.dom0_mem.resolve(1000).nr_pages, 1000);
        // max wins over min.
        let (config, _) = parse("dom0_mem=min:128M,max:64M");
        let pages = config.dom0_mem.resolve(1 << 20);
        assert_eq!(pages.nr_pages, 16384);
        assert_eq!(pages.max_pages, 16384);
        // min raises the default.
        let (config, _) = parse("dom0_mem=min:512M");
        assert_eq!(config.dom0_mem.resolve(100_000).nr_pages, 100_000);
    }

    #[test]
    fn com1_forms() {
        let (config, diags) = parse("com1=9600,7e2,0x2f8,3");
        assert!(diags.is_empty());
        let s = config.com1;
        assert_eq!(s.baud, Baud::Rate(9600));
        assert_eq!((s.data_bits, s.parity, s.stop_bits), (7, Parity::Even, 2));
        assert_eq!((s.io_base, s.irq), (0x2f8, 3));

        let (config, diags) = parse("com1=auto");
        assert!(diags.is_empty());
        assert_eq!(config.com1.baud, Baud::Auto);

        let (config, diags) = parse("com1=115200/115200,,0x3e8");
        assert!(diags.is_empty());
        assert_eq!(config.com1.base_baud, Some(115_200));
        assert_eq!(config.com1.io_base, 0x3e8);

        for bad in [
            "fast",
            "115200,9n1",
            "115200,8x1",
            "115200,8n3",
            "115200,8n",
            "0",
            "230400",
            "115200,8n1,0x10000",
            "115200,8n1,0x3f8,4,extra",
        ] {
            let (config, diags) = parse_owned(&format!("com1={bad}"));
            assert_eq!(config.com1, SerialConfig::default(), "{bad}");
            assert_eq!(diags, [format!("com1: malformed value '{bad}'")]);
        }
    }

    #[test]
    fn console_list() {
        let (config, diags) = parse("console=com1,vga");
        assert!(config.console.com1 && config.console.vga);
        assert_eq!(
            messages(&diags),
            ["console: 'vga' is not supported here, ignored"]
        );
        let (config, diags) = parse("console=none");
        assert!(!config.console.com1);
        assert!(diags.is_empty());
        let (config, diags) = parse("console=com1,dbgp");
        assert!(config.console.com1);
        assert_eq!(
            messages(&diags),
            ["console: 'dbgp' is not supported here, ignored"]
        );
        let (config, diags) = parse("console=serial");
        assert_eq!(config.console, Config::default().console);
        assert_eq!(messages(&diags), ["console: malformed value 'serial'"]);
    }

    #[test]
    fn log_levels() {
        let (config, diags) = parse("loglvl=info/debug guest_loglvl=debug/error");
        assert!(diags.is_empty());
        assert_eq!(config.loglvl.level, LevelFilter::Info);
        assert_eq!(config.loglvl.rate_limited, LevelFilter::Debug);
        // The rate-limited level is never below the first.
        assert_eq!(config.guest_loglvl.rate_limited, LevelFilter::Debug);
        for (name, level) in [
            ("none", LevelFilter::Off),
            ("error", LevelFilter::Error),
            ("warning", LevelFilter::Warn),
            ("info", LevelFilter::Info),
            ("debug", LevelFilter::Debug),
            ("all", LevelFilter::Trace),
        ] {
            assert_eq!(parse_log_level(name), Some(level));
        }
        let (_, diags) = parse("loglvl=info/loud");
        assert_eq!(messages(&diags), ["loglvl: malformed value 'info/loud'"]);
    }

    #[test]
    fn dom0_max_vcpus_forms() {
        let cases = [
            ("4", 4, 4),
            ("0", 1, 1),
            ("2-", 2, u32::MAX),
            ("-8", 1, 8),
            ("4-8", 4, 8),
        ];
        for (value, min, max) in cases {
            let (config, diags) = parse_owned(&format!("dom0_max_vcpus={value}"));
            assert!(diags.is_empty(), "{value}");
            assert_eq!(config.dom0_max_vcpus, Dom0MaxVcpus { min, max }, "{value}");
        }
        let v = Dom0MaxVcpus { min: 4, max: 8 };
        assert_eq!(v.resolve(2), 4);
        assert_eq!(v.resolve(6), 6);
        assert_eq!(v.resolve(10), 8);
        for bad in ["", "-", "x", "4-0", "1-2-3"] {
            let (_, diags) = parse_owned(&format!("dom0_max_vcpus={bad}"));
            assert_eq!(diags, [format!("dom0_max_vcpus: malformed value '{bad}'")]);
        }
    }

    #[test]
    fn diagnostics_are_bounded_but_counted() {
        let line: String = (0..20).map(|i| format!("bad{i} ")).collect();
        let (_, diags) = parse(&line);
        assert_eq!(diags.len(), MAX_DIAGNOSTICS);
        assert_eq!(diags.dropped(), 4);
        let msgs = messages(&diags);
        assert_eq!(msgs.len(), MAX_DIAGNOSTICS + 1);
        assert_eq!(msgs[0], "unknown option 'bad0'");
        assert_eq!(msgs[15], "unknown option 'bad15'");
        assert_eq!(msgs[16], "4 more command-line diagnostics not shown");
    }

    #[test]
    fn image_name_stripping() {
        assert_eq!(
            strip_image_name("/boot/hv console=com1", Some("qemu")),
            "console=com1"
        );
        assert_eq!(strip_image_name("  hv   a b", None), "a b");
        assert_eq!(strip_image_name("hv", None), "");
        assert_eq!(strip_image_name("", None), "");
        assert_eq!(
            strip_image_name(" console=com1", Some("GRUB 2.06-13")),
            "console=com1"
        );
        assert_eq!(strip_image_name("kernel a=1", Some("GNU GRUB 0.97")), "a=1");
        assert!(loader_is_grub2("GRUB 2.12"));
        assert!(!loader_is_grub2("GNU GRUB 0.97"));
        assert!(!loader_is_grub2("qemu"));
    }

    #[test]
    fn dom0_extra_options() {
        assert_eq!(
            split_dom0_options("loglvl=all -- console=hvc0  "),
            ("loglvl=all", Some("console=hvc0"))
        );
        assert_eq!(split_dom0_options("loglvl=all"), ("loglvl=all", None));
    }

    #[test]
    fn max_domains() {
        assert_eq!(parse("").0.max_domains, crate::domain::DEFAULT_DOMAINS);
        assert_eq!(parse("max_domains=8").0.max_domains, 8);
        let (config, diagnostics) = parse("max_domains=0 max_domains=1025 max_domains=x");
        assert_eq!(config.max_domains, crate::domain::DEFAULT_DOMAINS);
        assert_eq!(diagnostics.iter().count(), 3);
    }

    #[test]
    fn integers() {
        assert_eq!(parse_u64("10"), Some(10));
        assert_eq!(parse_u64("0x10"), Some(16));
        assert_eq!(parse_u64("010"), Some(8));
        assert_eq!(parse_u64("0"), Some(0));
        assert_eq!(parse_u64("09"), None);
        assert_eq!(parse_u64("0x"), None);
        assert_eq!(parse_u64("-1"), None);
        assert_eq!(parse_u64("+1"), None);
        assert_eq!(parse_u64("18446744073709551616"), None);
    }
}
