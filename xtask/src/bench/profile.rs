//! `cargo xtask bench --profile`: every instruction of each benchmark
//! boot, counted by function, across the hypervisor and all domains.
//!
//! QEMU loads the `qemu-profile` plugin (a crate of this workspace, built
//! for the host), which counts the executions of each translated block
//! and writes them out when QEMU exits (`<vaddr> <count> <instruction
//! lengths> <first bytes>` per block). Each block is then named here:
//! addresses in the hypervisor's reserved range from the hypervisor's
//! symbols (the per-CPU trampoline through its entry text, as a trace
//! does; Xen's as one group), every other address from the guest image
//! whose loaded bytes at that address are the block's first bytes (dom0
//! and a domU may be linked at the same addresses; their code differs).
//! Whatever matches no image (the firmware, QEMU's boot code) is counted
//! as `other`.
//!
//! Unlike `--trace` (one sample, single-stepped), the profile covers the
//! whole boot, set-up included. The plugin also counts *windows*: the
//! timed passes of a benchmark, bracketed by marker instructions
//! (`guest_pv_shim::profile`; dom0 marks its own block, network and
//! ping-pong passes and, from the domU's console lines, the domU's), each
//! reported on its own: everything the machine ran while that benchmark
//! was timed, every domain and the hypervisor.
#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use dom0_abi::layout::{HYPERVISOR_VIRT_END, HYPERVISOR_VIRT_START};

use super::trace::{Namer, Symbols};
use crate::elf;

/// Functions listed in a report, most instructions first.
const TOP: usize = 150;

/// What a profiled boot needs: the plugin and the images to name
/// addresses from.
#[derive(Clone, Debug)]
pub struct Profiler {
    /// The plugin (`libqemu_profile.so`).
    pub plugin: PathBuf,
    /// Guest images that may run in a boot besides its modules (the
    /// domUs a toolstack boot starts from its ramdisk).
    pub domus: Vec<PathBuf>,
}

impl Profiler {
    /// QEMU's arguments that load the plugin, writing to `out`.
    pub fn qemu_args(&self, out: &Path) -> [OsString; 2] {
        let mut spec = self.plugin.clone().into_os_string();
        spec.push(",out=");
        spec.push(out);
        ["-plugin".into(), spec]
    }
}

/// One guest image: its name, its loaded bytes and its symbols.
struct Image {
    name: String,
    segments: Vec<(u64, Vec<u8>)>,
    symbols: Symbols,
}

impl Image {
    fn load(path: &Path) -> Result<Image, String> {
        let bytes = fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut segments = Vec::new();
        for segment in elf::load_segments(&bytes)? {
            let start = usize::try_from(segment.offset).map_err(|e| e.to_string())?;
            let len = usize::try_from(segment.filesz).map_err(|e| e.to_string())?;
            let data = start
                .checked_add(len)
                .and_then(|end| bytes.get(start..end))
                .ok_or_else(|| format!("{}: a segment lies outside the file", path.display()))?;
            segments.push((segment.vaddr, data.to_vec()));
        }
        Ok(Image {
            name: path
                .file_stem()
                .map_or_else(|| "?".to_owned(), |s| s.to_string_lossy().into_owned()),
            segments,
            symbols: Symbols::of(path)?,
        })
    }

    /// Whether this image holds `bytes` at `vaddr`.
    fn holds(&self, vaddr: u64, bytes: &[u8]) -> bool {
        !bytes.is_empty()
            && self.segments.iter().any(|(start, data)| {
                vaddr
                    .checked_sub(*start)
                    .and_then(|offset| usize::try_from(offset).ok())
                    .and_then(|offset| data.get(offset..offset.checked_add(bytes.len())?))
                    == Some(bytes)
            })
    }
}

/// One line of the plugin's output.
#[derive(Debug, PartialEq, Eq)]
struct Block {
    vaddr: u64,
    count: u64,
    sizes: Vec<u64>,
    bytes: Vec<u8>,
}

fn parse_block(line: &str) -> Option<Block> {
    let mut parts = line.split(' ');
    let vaddr = u64::from_str_radix(parts.next()?, 16).ok()?;
    let count = parts.next()?.parse().ok()?;
    let sizes = parts
        .next()?
        .split(',')
        .map(str::parse)
        .collect::<Result<Vec<u64>, _>>()
        .ok()?;
    let hex = parts.next().unwrap_or("");
    let bytes = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    Some(Block {
        vaddr,
        count,
        sizes,
        bytes,
    })
}

/// Instructions per `(group, function)`.
type Totals = HashMap<(String, String), u64>;

/// Adds `block`'s instructions to `totals`, each named by `name`.
fn add_block(totals: &mut Totals, block: &Block, mut name: impl FnMut(u64) -> (String, String)) {
    let mut pc = block.vaddr;
    for size in &block.sizes {
        *totals.entry(name(pc)).or_default() += block.count;
        pc = pc.wrapping_add(*size);
    }
}

/// The report: the total, each group's share, then the [`TOP`] functions.
fn render(totals: &Totals, title: &str) -> String {
    let all: u64 = totals.values().sum();
    let share = |n: u64| {
        #[expect(clippy::cast_precision_loss, reason = "a percentage for people")]
        let percent = if all == 0 {
            0.0
        } else {
            n as f64 * 100.0 / all as f64
        };
        percent
    };
    let mut groups: HashMap<&str, u64> = HashMap::new();
    for ((group, _), n) in totals {
        *groups.entry(group).or_default() += n;
    }
    let mut groups: Vec<_> = groups.into_iter().collect();
    groups.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let mut functions: Vec<_> = totals.iter().collect();
    functions.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let mut out = format!("profile of {title}: {all} instructions\n  by image:\n");
    for (group, n) in groups {
        let _ = writeln!(out, "  {n:>14} {:>6.2} %  {group}", share(n));
    }
    let _ = writeln!(out, "  by function (top {TOP}):");
    for ((group, function), n) in functions.into_iter().take(TOP) {
        let _ = writeln!(
            out,
            "  {n:>14} {:>6.2} %  {group:<10} {function}",
            share(*n)
        );
    }
    out
}

/// The parts of the plugin's output `text`: the whole run's lines, then
/// each window's (`window <tag>` and its lines), with their titles.
fn sections<'a>(text: &'a str, title: &str) -> Vec<(String, Vec<&'a str>)> {
    let mut sections = vec![(title.to_owned(), Vec::new())];
    for line in text.lines() {
        if let Some(tag) = line.strip_prefix("window ") {
            let name = tag
                .parse::<usize>()
                .ok()
                .and_then(|i| pv_bench::catalogue::ALL.get(i))
                .map_or_else(|| format!("tag {tag}"), |b| b.name.to_owned());
            sections.push((format!("{title}, window {name}"), Vec::new()));
        } else if let Some((_, lines)) = sections.last_mut() {
            lines.push(line);
        }
    }
    sections
}

/// Names the blocks of the plugin's output `text`, the whole run first,
/// then each window (the timed passes of one benchmark). `hypervisor`
/// is this hypervisor's ELF (`None`: Xen, counted as one group); `guests`
/// are the guest images that may have run.
pub fn report(
    text: &str,
    title: &str,
    hypervisor: Option<&Path>,
    guests: &[PathBuf],
) -> Result<String, String> {
    let namer = match hypervisor {
        Some(path) => Some(Namer::new(Symbols::default(), Some(Symbols::of(path)?))),
        None => None,
    };
    let images = guests
        .iter()
        .map(|path| Image::load(path))
        .collect::<Result<Vec<_>, _>>()?;
    let mut out = String::new();
    for (title, lines) in sections(text, title) {
        let mut totals = Totals::new();
        for line in lines {
            let block = parse_block(line).ok_or_else(|| format!("a bad profile line: {line}"))?;
            name_block(&mut totals, &block, namer.as_ref(), &images);
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&render(&totals, &title));
    }
    Ok(out)
}

/// Adds `block` to `totals`, each instruction named by the hypervisor's
/// symbols or by the image that holds the block's bytes.
fn name_block(totals: &mut Totals, block: &Block, namer: Option<&Namer>, images: &[Image]) {
    if (HYPERVISOR_VIRT_START..HYPERVISOR_VIRT_END).contains(&block.vaddr) {
        add_block(totals, block, |pc| match namer {
            Some(namer) => {
                let (group, function) = namer.name(pc);
                (group.to_owned(), function)
            }
            None => ("xen".to_owned(), "(no symbols)".to_owned()),
        });
        return;
    }
    let image = images.iter().find(|i| i.holds(block.vaddr, &block.bytes));
    add_block(totals, block, |pc| match image {
        Some(image) => (
            image.name.clone(),
            image.symbols.name(pc).unwrap_or("?").to_owned(),
        ),
        None => ("other".to_owned(), "(no image matched)".to_owned()),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_line_is_parsed() {
        assert_eq!(
            parse_block("ffffffff80001000 7 1,3 904889c3"),
            Some(Block {
                vaddr: 0xffff_ffff_8000_1000,
                count: 7,
                sizes: vec![1, 3],
                bytes: vec![0x90, 0x48, 0x89, 0xc3],
            })
        );
        assert_eq!(parse_block("zz 7 1 90"), None);
        assert_eq!(
            parse_block("1000 7 1 9"),
            Some(Block {
                vaddr: 0x1000,
                count: 7,
                sizes: vec![1],
                bytes: vec![],
            })
        );
    }

    #[test]
    fn each_instruction_of_a_block_counts_its_executions() {
        let block = Block {
            vaddr: 0x1000,
            count: 5,
            sizes: vec![1, 3, 2],
            bytes: vec![],
        };
        let mut totals = Totals::new();
        add_block(&mut totals, &block, |pc| {
            let f = if pc < 0x1004 { "a" } else { "b" };
            ("g".to_owned(), f.to_owned())
        });
        assert_eq!(totals[&("g".to_owned(), "a".to_owned())], 10);
        assert_eq!(totals[&("g".to_owned(), "b".to_owned())], 5);
    }

    #[test]
    fn an_image_is_told_by_its_bytes_at_the_address() {
        let image = Image {
            name: "dom0".to_owned(),
            segments: vec![(0x1000, vec![0x90, 0x48, 0x89, 0xc3])],
            symbols: Symbols::default(),
        };
        assert!(image.holds(0x1001, &[0x48, 0x89]));
        assert!(!image.holds(0x1001, &[0x48, 0x88]));
        assert!(!image.holds(0x1003, &[0xc3, 0x00]));
        assert!(!image.holds(0xfff, &[0x90]));
        assert!(!image.holds(0x1000, &[]));
    }

    #[test]
    fn windows_are_titled_by_their_benchmark() {
        let text = "1000 2 1 90\nwindow 0\n1000 1 1 90\nwindow 250\n";
        let parts = sections(text, "oxen");
        assert_eq!(parts[0], ("oxen".to_owned(), vec!["1000 2 1 90"]));
        assert_eq!(
            parts[1],
            (
                "oxen, window null_hypercall".to_owned(),
                vec!["1000 1 1 90"]
            )
        );
        assert_eq!(parts[2], ("oxen, window tag 250".to_owned(), vec![]));
    }

    #[test]
    fn the_report_gives_shares_and_functions() {
        let mut totals = Totals::new();
        totals.insert(("hv".to_owned(), "entry".to_owned()), 75);
        totals.insert(("dom0".to_owned(), "main".to_owned()), 25);
        let text = render(&totals, "x");
        assert!(text.starts_with("profile of x: 100 instructions\n"));
        assert!(text.contains("75  75.00 %  hv"));
        assert!(text.contains("25  25.00 %  dom0       main"));
    }
}
