//! The disk image of the virtio-blk tests and of `cargo xtask run`, as
//! the guests and `cargo xtask` all see it: its size, its partition table,
//! the line a guest prints for each range it wrote, and the pattern it
//! wrote there (which the host checks in the image file after the run;
//! every sector outside those ranges must still be as [`initial_sector`]
//! made it).

pub use drivers::blk::{SECTOR, pattern};

/// The image's size in sectors (64 MiB).
pub const SECTORS: u64 = 131_072;

/// The image's MBR partitions (`vda1`, `vda2` in dom0), as (first
/// sector, sectors): 40 MiB and 20 MiB, type 0x83.
pub const PARTITIONS: [(u64, u64); 2] = [(2048, 81_920), (83_968, 40_960)];

/// Sector `sector` of a fresh image: the MBR holding [`PARTITIONS`] for
/// sector 0, zeros elsewhere.
#[must_use]
pub fn initial_sector(sector: u64) -> [u8; SECTOR] {
    let mut out = [0u8; SECTOR];
    if sector != 0 {
        return out;
    }
    for (entry, &(start, count)) in out[446..510].chunks_exact_mut(16).zip(&PARTITIONS) {
        entry[4] = 0x83;
        entry[8..12].copy_from_slice(&u32::try_from(start).unwrap_or(0).to_le_bytes());
        entry[12..16].copy_from_slice(&u32::try_from(count).unwrap_or(0).to_le_bytes());
    }
    out[510] = 0x55;
    out[511] = 0xAA;
    out
}

/// Start of the line the guest prints for each range it wrote:
/// `virtio_blk: wrote <first sector> +<count> seed <seed, hex>`.
pub const WROTE: &str = "virtio_blk: wrote ";

/// A range the guest wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// First sector.
    pub sector: u64,
    /// Number of sectors.
    pub count: u64,
    /// The pattern's seed.
    pub seed: u64,
}

impl Written {
    /// Parses the rest of a line after [`WROTE`].
    #[must_use]
    pub fn parse(rest: &str) -> Option<Written> {
        let mut words = rest.split_whitespace();
        let sector = words.next()?.parse().ok()?;
        let count = words.next()?.strip_prefix('+')?.parse().ok()?;
        if words.next()? != "seed" {
            return None;
        }
        let seed = u64::from_str_radix(words.next()?, 16).ok()?;
        words.next().is_none().then_some(Written {
            sector,
            count,
            seed,
        })
    }
}

impl core::fmt::Display for Written {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{WROTE}{} +{} seed {:x}",
            self.sector, self.count, self.seed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partitions_are_on_the_disk_and_apart() {
        let [(a, n), (b, m)] = PARTITIONS;
        assert!(a >= 1 && a + n <= b && b + m <= SECTORS);
        let mbr = initial_sector(0);
        assert_eq!(mbr[446 + 4], 0x83);
        assert_eq!(mbr[462 + 8..462 + 12], 83_968u32.to_le_bytes());
        assert_eq!(mbr[510..], [0x55, 0xAA]);
        assert_eq!(initial_sector(1), [0; SECTOR]);
    }

    #[test]
    fn written_lines_round_trip() {
        let w = Written {
            sector: 1000,
            count: 65,
            seed: 0xDEAD_BEEF,
        };
        let line = w.to_string();
        assert_eq!(line, "virtio_blk: wrote 1000 +65 seed deadbeef");
        assert_eq!(Written::parse(line.strip_prefix(WROTE).unwrap()), Some(w));
        assert_eq!(Written::parse("1 +2 seed"), None);
        assert_eq!(Written::parse("1 2 seed 3"), None);
        assert_eq!(Written::parse("1 +2 seed 3 4"), None);
    }
}
