//! What the boot loader handed over, read from either protocol into one
//! fixed-size summary (multiboot2 through the `multiboot2` crate, multiboot1
//! with a small reader). Everything is read through the direct map, and every
//! pointer and length the loader gave is bounded before use.
use core::fmt;

use multiboot2::{BootInformation, BootInformationHeader, MemoryAreaType};

use crate::cmdline::strip_image_name;

use super::paging::phys_to_virt;

const MB1_MAGIC: u32 = 0x2BAD_B002;
const MB2_MAGIC: u32 = 0x36D7_6289;
const MAX_MODULES: usize = 8;
const MAX_REGIONS: usize = 64;
/// Longest string (command line, loader name) taken from boot memory.
const MAX_STRING: usize = 4096;

/// A boot module: `[start, end)` physical, and its string.
#[derive(Clone, Copy, Debug)]
pub struct Module {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
    /// The module's string (dom0's command line for module 1).
    pub string: &'static str,
}

/// The boot information, summarised.
pub struct Boot {
    protocol: u8,
    info: (u64, u64),
    loader: Option<&'static str>,
    command_line: &'static str,
    ram: [(u64, u64); MAX_REGIONS],
    nr_ram: usize,
    modules: [Module; MAX_MODULES],
    nr_modules: usize,
    rsdp: Option<(u8, u64)>,
}

/// Why the boot information could not be used.
#[derive(Debug)]
pub enum BootError {
    /// EAX held neither multiboot magic.
    UnknownMagic(u32),
    /// The multiboot2 structure did not parse.
    Multiboot2,
    /// The loader gave no memory map.
    NoMemoryMap,
}

impl fmt::Display for BootError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BootError::UnknownMagic(m) => write!(f, "unknown boot loader magic {m:#x}"),
            BootError::Multiboot2 => f.write_str("malformed multiboot2 information"),
            BootError::NoMemoryMap => f.write_str("the boot loader gave no memory map"),
        }
    }
}

/// Reads the boot information at physical address `info`.
pub fn read(magic: u32, info: u32) -> Result<Boot, BootError> {
    let mut boot = Boot {
        protocol: 0,
        info: (u64::from(info), u64::from(info) + 4096),
        loader: None,
        command_line: "",
        ram: [(0, 0); MAX_REGIONS],
        nr_ram: 0,
        modules: [Module { start: 0, end: 0, string: "" }; MAX_MODULES],
        nr_modules: 0,
        rsdp: None,
    };
    match magic {
        MB2_MAGIC => read_mb2(&mut boot, info)?,
        MB1_MAGIC => read_mb1(&mut boot, info),
        other => return Err(BootError::UnknownMagic(other)),
    }
    if boot.nr_ram == 0 {
        return Err(BootError::NoMemoryMap);
    }
    boot.command_line = strip_image_name(boot.command_line, boot.loader);
    let loader = boot.loader;
    for module in &mut boot.modules[..boot.nr_modules] {
        module.string = strip_image_name(module.string, loader);
    }
    Ok(boot)
}

fn read_mb2(boot: &mut Boot, info: u32) -> Result<(), BootError> {
    boot.protocol = 2;
    let header = phys_to_virt(u64::from(info)) as *const BootInformationHeader;
    // SAFETY: the loader put a multiboot2 structure at `info`, which the
    // direct map covers; the crate validates its sizes and tags.
    let mbi = unsafe { BootInformation::load(header) }.map_err(|_| BootError::Multiboot2)?;
    boot.info = (u64::from(info), u64::from(info) + mbi.total_size() as u64);
    boot.loader = mbi.boot_loader_name_tag().and_then(|t| t.name().ok()).map(leak);
    boot.command_line = mbi.command_line_tag().and_then(|t| t.cmdline().ok()).map_or("", leak);
    if let Some(map) = mbi.memory_map_tag() {
        for area in map.memory_areas() {
            if MemoryAreaType::from(area.typ()) == MemoryAreaType::Available {
                push_ram(boot, area.start_address(), area.end_address());
            }
        }
    }
    for module in mbi.module_tags() {
        push_module(boot, u64::from(module.start_address()), u64::from(module.end_address()), leak(module.cmdline().unwrap_or("")));
    }
    boot.rsdp = match (mbi.rsdp_v2_tag(), mbi.rsdp_v1_tag()) {
        (Some(v2), _) => Some((v2.revision(), v2.xsdt_address() as u64)),
        (None, Some(v1)) => Some((v1.revision(), v1.rsdt_address() as u64)),
        _ => None,
    };
    Ok(())
}

/// Keeps a copy of a boot-loader string for the whole run (the loader's
/// memory is not reserved once the frame allocator takes over). A string
/// that does not fit in what is left of the arena is cut, with a warning.
fn leak(s: &str) -> &'static str {
    static ARENA: spin::Mutex<([u8; 16384], usize)> = spin::Mutex::new(([0; 16384], 0));
    let mut arena = ARENA.lock();
    let (buffer, used) = &mut *arena;
    let room = buffer.len() - *used;
    let mut n = s.len().min(room);
    while !s.is_char_boundary(n) {
        n -= 1;
    }
    if n < s.len() {
        log::warn!("boot information: a string of {} bytes was cut to {n}", s.len());
    }
    let start = *used;
    buffer[start..start + n].copy_from_slice(&s.as_bytes()[..n]);
    *used += n;
    let copy = &buffer[start..start + n];
    // SAFETY: the arena is a static that is only ever appended to, so the
    // bytes just written stay valid and unchanged for the whole run; they
    // are the UTF-8 prefix of `s` cut at a character boundary.
    unsafe { core::str::from_utf8_unchecked(core::slice::from_raw_parts(copy.as_ptr(), copy.len())) }
}

fn read_mb1(boot: &mut Boot, info: u32) {
    boot.protocol = 1;
    let word = |pa: u64| -> u32 {
        // SAFETY: `pa` lies in the multiboot1 structures the loader placed
        // in low memory, which the direct map covers.
        unsafe { (phys_to_virt(pa) as *const u32).read_unaligned() }
    };
    let base = u64::from(info);
    let flags = word(base);
    if flags & (1 << 9) != 0 {
        boot.loader = c_string(u64::from(word(base + 64)));
    }
    if flags & (1 << 2) != 0 {
        boot.command_line = c_string(u64::from(word(base + 16))).unwrap_or("");
    }
    if flags & (1 << 3) != 0 {
        let (count, table) = (word(base + 20), u64::from(word(base + 24)));
        for i in 0..u64::from(count.min(MAX_MODULES as u32)) {
            let at = table + 16 * i;
            let string = c_string(u64::from(word(at + 8))).unwrap_or("");
            push_module(boot, u64::from(word(at)), u64::from(word(at + 4)), string);
        }
    }
    if flags & (1 << 6) != 0 {
        let (length, mut at) = (u64::from(word(base + 44)), u64::from(word(base + 48)));
        let end = at + length;
        while at + 24 <= end {
            let size = u64::from(word(at));
            let start = u64::from(word(at + 4)) | (u64::from(word(at + 8)) << 32);
            let len = u64::from(word(at + 12)) | (u64::from(word(at + 16)) << 32);
            if word(at + 20) == 1 {
                push_ram(boot, start, start.saturating_add(len));
            }
            at += size + 4;
        }
    }
}

/// A NUL-terminated string at physical `pa`, at most `MAX_STRING` bytes.
fn c_string(pa: u64) -> Option<&'static str> {
    if pa == 0 {
        return None;
    }
    // SAFETY: the loader's strings live in low memory inside the direct map;
    // the scan stops at MAX_STRING bytes.
    let bytes = unsafe { core::slice::from_raw_parts(phys_to_virt(pa) as *const u8, MAX_STRING) };
    let len = bytes.iter().position(|&b| b == 0)?;
    core::str::from_utf8(&bytes[..len]).ok().map(leak)
}

fn push_ram(boot: &mut Boot, start: u64, end: u64) {
    if end > start && boot.nr_ram < MAX_REGIONS {
        boot.ram[boot.nr_ram] = (start, end);
        boot.nr_ram += 1;
    }
}

fn push_module(boot: &mut Boot, start: u64, end: u64, string: &'static str) {
    if boot.nr_modules < MAX_MODULES && end >= start {
        boot.modules[boot.nr_modules] = Module { start, end, string };
        boot.nr_modules += 1;
    }
}

/// Ranges the frame allocator must never hand out.
pub struct Excluded {
    ranges: [(u64, u64); 4 + MAX_MODULES],
    len: usize,
}

impl Excluded {
    /// The ranges.
    pub fn as_slice(&self) -> &[(u64, u64)] {
        &self.ranges[..self.len]
    }
}

impl Boot {
    /// The hypervisor's own command line (image name stripped).
    pub fn hypervisor_command_line(&self) -> &'static str {
        self.command_line
    }

    /// The boot loader's name, if it gave one.
    pub fn loader_name(&self) -> Option<&'static str> {
        self.loader
    }

    /// 1 or 2.
    pub fn protocol(&self) -> u8 {
        self.protocol
    }

    /// The ACPI root table pointer the loader gave: revision and address of
    /// the XSDT (revision 2+) or RSDT.
    pub fn rsdp(&self) -> Option<(u8, u64)> {
        self.rsdp
    }

    /// Usable RAM ranges, as the loader reported them.
    pub fn usable_ram(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ram[..self.nr_ram].iter().copied()
    }

    /// The modules, in order.
    pub fn modules(&self) -> &[Module] {
        &self.modules[..self.nr_modules]
    }

    /// Memory to keep out of the allocator: the first MiB, the image, the
    /// boot information and every module (with their strings' pages).
    pub fn excluded_ranges(&self, image: (u64, u64)) -> Excluded {
        let mut out = Excluded { ranges: [(0, 0); 4 + MAX_MODULES], len: 0 };
        let mut push = |r: (u64, u64)| {
            out.ranges[out.len] = r;
            out.len += 1;
        };
        push((0, 0x10_0000));
        push(image);
        push(self.info);
        for m in self.modules() {
            push((m.start, m.end));
        }
        out
    }
}
