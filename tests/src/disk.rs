//! The virtio-blk test's disk, as the test guest and `cargo xtask test`
//! both see it: its size, the line the guest prints for each range it
//! wrote, and the pattern it wrote there (which the host checks in the
//! image file after the run; every sector outside those ranges must still
//! be zero).

pub use drivers::blk::{SECTOR, pattern};

/// The image's size in sectors (8 MiB).
pub const SECTORS: u64 = 16384;

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
