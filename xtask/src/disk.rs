//! A test's disk image: made fresh before each run (an MBR with
//! `pv_tests::disk::PARTITIONS`, zeros elsewhere), checked after it
//! ([`DiskCheck`]): still as made, or holding the guests' pattern in the
//! ranges they printed (`pv_tests::disk::WROTE` lines) and as made
//! elsewhere. So what the guests read back is also what reached the
//! host's file.
#![forbid(unsafe_code)]

use std::fs;
use std::path::Path;

use pv_tests::disk::{self, SECTOR, Written};

use crate::suite::DiskCheck;

/// Writes a fresh image of `disk::SECTORS` sectors to `path`.
pub fn create(path: &Path) -> Result<(), String> {
    let bytes: Vec<u8> = (0..disk::SECTORS).flat_map(disk::initial_sector).collect();
    fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// The ranges a run's log says the guest wrote.
fn written(log: &str) -> Vec<Written> {
    log.lines()
        .filter_map(|line| line.split_once(disk::WROTE))
        .filter_map(|(_, rest)| Written::parse(rest))
        .collect()
}

/// Checks the image `image` after a run whose serial log is `log`;
/// returns the problems (none if it holds exactly what `expect` says).
pub fn check(log: &str, image: &Path, expect: DiskCheck) -> Vec<String> {
    let contents = match fs::read(image) {
        Ok(contents) => contents,
        Err(e) => return vec![format!("disk image {}: {e}", image.display())],
    };
    let ranges = written(log);
    match expect {
        DiskCheck::Written if ranges.is_empty() => {
            vec!["disk image: the guest reported no written range".to_owned()]
        }
        DiskCheck::Untouched if !ranges.is_empty() => {
            vec!["disk image: the guest wrote to a disk it must leave alone".to_owned()]
        }
        _ => check_contents(&ranges, &contents),
    }
}

/// The problems of an image holding `contents` after the guest wrote
/// `ranges` (later ranges win where they overlap; none: as made).
fn check_contents(ranges: &[Written], contents: &[u8]) -> Vec<String> {
    let sectors = contents.len() / SECTOR;
    let mut expected: Vec<[u8; SECTOR]> = (0..sectors as u64).map(disk::initial_sector).collect();
    for range in ranges {
        for sector in range.sector..range.sector.saturating_add(range.count) {
            let Some(slot) = usize::try_from(sector)
                .ok()
                .and_then(|s| expected.get_mut(s))
            else {
                return vec![format!("disk image: range {range} is past the image's end")];
            };
            disk::pattern(sector, range.seed, slot);
        }
    }
    let wrong: Vec<usize> = expected
        .iter()
        .zip(contents.chunks_exact(SECTOR))
        .enumerate()
        .filter(|(_, (want, got))| want.as_slice() != *got)
        .map(|(i, _)| i)
        .collect();
    match wrong.first() {
        None => Vec::new(),
        Some(first) => vec![format!(
            "disk image: {} sectors differ from what the guest wrote (first: {first})",
            wrong.len()
        )],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_with(ranges: &[Written]) -> Vec<u8> {
        let mut image: Vec<u8> = (0..64).flat_map(disk::initial_sector).collect();
        for range in ranges {
            for sector in range.sector..range.sector + range.count {
                let at = usize::try_from(sector).unwrap() * SECTOR;
                let slot: &mut [u8; SECTOR] = (&mut image[at..at + SECTOR]).try_into().unwrap();
                disk::pattern(sector, range.seed, slot);
            }
        }
        image
    }

    #[test]
    fn an_image_holding_the_ranges_passes_and_any_other_fails() {
        let ranges = [
            Written {
                sector: 3,
                count: 5,
                seed: 7,
            },
            Written {
                sector: 40,
                count: 2,
                seed: 7,
            },
        ];
        let mut image = image_with(&ranges);
        assert_eq!(check_contents(&ranges, &image), Vec::<String>::new());
        // A sector the guest did not write must be zero.
        image[20 * SECTOR] = 1;
        assert_eq!(check_contents(&ranges, &image).len(), 1);
        image[20 * SECTOR] = 0;
        // A written sector with one byte lost.
        image[4 * SECTOR + 9] ^= 0xFF;
        assert!(check_contents(&ranges, &image)[0].contains("first: 4"));
        assert!(!check_contents(&[], &image).is_empty());
        let fresh: Vec<u8> = (0..8).flat_map(disk::initial_sector).collect();
        assert!(check_contents(&[], &fresh).is_empty());
        // The MBR is part of what must stay.
        assert!(!check_contents(&[], &[0; 8 * SECTOR]).is_empty());
        let past = [Written {
            sector: 63,
            count: 2,
            seed: 1,
        }];
        assert!(check_contents(&past, &image)[0].contains("past"));
    }

    #[test]
    fn ranges_come_from_the_guests_lines() {
        let log =
            "ok: flush\n(XEN) x\nvirtio_blk: wrote 10 +2 seed ff\nvirtio_blk: wrote 1 +x seed 1\n";
        assert_eq!(
            written(log),
            [Written {
                sector: 10,
                count: 2,
                seed: 0xFF
            }]
        );
    }
}
