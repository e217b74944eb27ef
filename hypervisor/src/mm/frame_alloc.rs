//! A bitmap allocator of machine frames.
//!
//! Two bits per machine frame in `[0, max_frame)`, kept in two bitmaps in
//! one caller-provided slice (the caller carves it out of RAM at boot, so
//! the allocator needs no heap):
//! - the *used* bitmap: set = allocated (or not managed), clear = free;
//! - the *managed* bitmap: set = the frame was free right after setup, so it
//!   is RAM this allocator owns.
//!
//! Invariants:
//! - `free_count` equals the number of clear used-bits below `max_frame`;
//!   used-bits at or above `max_frame` are always set, so a scan never hands
//!   them out. A clear used-bit implies a set managed-bit.
//! - A frame is handed out at most once until it is freed. Freeing a frame
//!   that is free, out of range or not managed (reserved, excluded, not RAM)
//!   is refused with an error and changes nothing.
#![forbid(unsafe_code)]

use core::fmt;

use dom0_abi::types::Mfn;

use crate::layout::PAGE_SIZE;

const BITS: u64 = u64::BITS as u64;

/// Why a frame operation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// The bitmap storage has fewer than `needed` words.
    StorageTooSmall {
        /// Words needed for `max_frame` frames.
        needed: u64,
        /// Words provided.
        provided: u64,
    },
    /// The frame lies at or above `max_frame`.
    OutOfRange(Mfn),
    /// The frame is already free.
    DoubleFree(Mfn),
    /// The frame is not RAM managed by the allocator (reserved, excluded
    /// or a hole), so it was never handed out.
    NotManaged(Mfn),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::StorageTooSmall { needed, provided } => write!(
                f,
                "frame bitmap needs {needed} words, only {provided} provided"
            ),
            FrameError::OutOfRange(mfn) => write!(f, "frame {:#x} is out of range", mfn.0),
            FrameError::DoubleFree(mfn) => write!(f, "frame {:#x} is already free", mfn.0),
            FrameError::NotManaged(mfn) => {
                write!(f, "frame {:#x} is not RAM owned by the allocator", mfn.0)
            }
        }
    }
}

/// The bitmap frame allocator. See the module documentation.
#[derive(Debug)]
pub struct FrameAllocator<'a> {
    /// One bit per frame: set = in use or not managed.
    bitmap: &'a mut [u64],
    /// One bit per frame: set = managed RAM.
    managed: &'a mut [u64],
    max_frame: u64,
    free: u64,
    total: u64,
    /// Word index where the next single-frame search starts.
    next_word: usize,
}

impl<'a> FrameAllocator<'a> {
    /// The number of `u64` words of storage needed for `max_frame` frames
    /// (two bits per frame).
    pub const fn words_needed(max_frame: u64) -> u64 {
        2 * max_frame.div_ceil(BITS)
    }

    /// Builds the allocator: every frame starts in use, then the frames of
    /// `usable` (machine address ranges `[start, end)`, rounded inward to
    /// whole frames) are freed, then the frames touched by `excluded`
    /// (rounded outward) are taken again. Frames at or above `max_frame`
    /// are ignored. `usable` may overlap itself.
    pub fn new(
        storage: &'a mut [u64],
        max_frame: u64,
        usable: impl IntoIterator<Item = (u64, u64)>,
        excluded: &[(u64, u64)],
    ) -> Result<Self, FrameError> {
        let needed = Self::words_needed(max_frame);
        let provided = u64::try_from(storage.len()).unwrap_or(u64::MAX);
        if provided < needed {
            return Err(FrameError::StorageTooSmall { needed, provided });
        }
        storage.fill(u64::MAX);
        let (bitmap, managed) = storage.split_at_mut(word_count(max_frame));
        let mut allocator = FrameAllocator {
            bitmap,
            managed,
            max_frame,
            free: 0,
            total: 0,
            next_word: 0,
        };
        for (start, end) in usable {
            let first = start.div_ceil(PAGE_SIZE);
            let last = end / PAGE_SIZE;
            allocator.set_range(first, last, false);
        }
        for &(start, end) in excluded {
            let first = start / PAGE_SIZE;
            let last = end.div_ceil(PAGE_SIZE);
            allocator.set_range(first, last, true);
        }
        allocator.total = allocator.free;
        for (managed, used) in allocator.managed.iter_mut().zip(allocator.bitmap.iter()) {
            *managed = !used;
        }
        Ok(allocator)
    }

    /// Marks frames `[first, last)` (clamped to `max_frame`) used or free,
    /// keeping the free count exact.
    fn set_range(&mut self, first: u64, last: u64, used: bool) {
        let last = last.min(self.max_frame);
        let mut frame = first;
        while frame < last {
            let (word, bit) = split(frame);
            let span = (BITS - u64::from(bit)).min(last - frame);
            let mask = if span == BITS {
                u64::MAX
            } else {
                ((1u64 << span) - 1) << bit
            };
            let old = self.bitmap[word];
            let new = if used { old | mask } else { old & !mask };
            let was_free = u64::from((!old & mask).count_ones());
            let now_free = u64::from((!new & mask).count_ones());
            self.free = self.free + now_free - was_free;
            self.bitmap[word] = new;
            frame += span;
        }
    }

    /// Allocates one frame, or `None` when none is free.
    pub fn alloc(&mut self) -> Option<Mfn> {
        let words = self.bitmap.len().min(word_count(self.max_frame));
        for step in 0..words {
            let word = (self.next_word + step) % words;
            let bits = self.bitmap[word];
            if bits != u64::MAX {
                let bit = bits.trailing_ones();
                let frame = to_u64(word) * BITS + u64::from(bit);
                if frame >= self.max_frame {
                    continue;
                }
                self.bitmap[word] |= 1 << bit;
                self.free -= 1;
                self.next_word = word;
                return Some(Mfn(frame));
            }
        }
        None
    }

    /// Allocates `count` contiguous frames whose first frame number is a
    /// multiple of `align` (a power of two, in frames). Returns the first
    /// frame, or `None` if there is no such run (or `count` is 0 or `align`
    /// is not a power of two).
    pub fn alloc_contiguous(&mut self, count: u64, align: u64) -> Option<Mfn> {
        if count == 0 || !align.is_power_of_two() {
            return None;
        }
        let mut start = 0u64;
        while start.checked_add(count)? <= self.max_frame {
            match (start..start + count).find(|&f| !self.is_free(Mfn(f))) {
                None => {
                    self.set_range(start, start + count, true);
                    return Some(Mfn(start));
                }
                Some(used) => start = (used + 1).checked_next_multiple_of(align)?,
            }
        }
        None
    }

    /// Frees one allocated frame.
    pub fn free(&mut self, mfn: Mfn) -> Result<(), FrameError> {
        if mfn.0 >= self.max_frame {
            return Err(FrameError::OutOfRange(mfn));
        }
        let (word, bit) = split(mfn.0);
        if self.managed[word] & (1 << bit) == 0 {
            return Err(FrameError::NotManaged(mfn));
        }
        if self.is_free(mfn) {
            return Err(FrameError::DoubleFree(mfn));
        }
        self.bitmap[word] &= !(1 << bit);
        self.free += 1;
        Ok(())
    }

    /// True when the frame is free (false for frames out of range).
    pub fn is_free(&self, mfn: Mfn) -> bool {
        if mfn.0 >= self.max_frame {
            return false;
        }
        let (word, bit) = split(mfn.0);
        self.bitmap[word] & (1 << bit) == 0
    }

    /// Frames free now.
    pub fn free_count(&self) -> u64 {
        self.free
    }

    /// Frames that were free right after setup (the RAM this allocator
    /// manages).
    pub fn total(&self) -> u64 {
        self.total
    }

    /// One past the highest frame number the allocator covers.
    pub fn max_frame(&self) -> u64 {
        self.max_frame
    }
}

/// Word index and bit of a frame. Only called with frames below
/// `max_frame`, whose word index fits the (checked) storage length.
fn split(frame: u64) -> (usize, u32) {
    let word = usize::try_from(frame / BITS).unwrap_or(usize::MAX);
    // The remainder of a division by 64 is below 64.
    let bit = u32::try_from(frame % BITS).unwrap_or(0);
    (word, bit)
}

fn word_count(max_frame: u64) -> usize {
    usize::try_from(max_frame.div_ceil(BITS)).unwrap_or(usize::MAX)
}

fn to_u64(value: usize) -> u64 {
    u64::try_from(value).unwrap_or(u64::MAX)
}

#[cfg(test)]
#[allow(
    clippy::cast_possible_truncation,
    reason = "test fixtures are small, fixed-size images and counters"
)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const MIB: u64 = 1 << 20;

    fn storage(frames: u64) -> Vec<u64> {
        vec![0; usize::try_from(FrameAllocator::words_needed(frames)).unwrap()]
    }

    #[test]
    fn setup_frees_usable_and_reserves_excluded() {
        let mut words = storage(1024);
        // Usable: 0..640K and 1M..4M; 1M..1M+64K excluded; the unaligned
        // edges are rounded inward (usable) and outward (excluded).
        let fa = FrameAllocator::new(
            &mut words,
            1024,
            [(0, 640 << 10), (MIB + 100, 4 * MIB)],
            &[(MIB, MIB + (64 << 10) + 1)],
        )
        .unwrap();
        assert_eq!(fa.total(), 160 + (1024 - 257) - 16);
        assert_eq!(fa.free_count(), fa.total());
        assert!(fa.is_free(Mfn(0)));
        assert!(!fa.is_free(Mfn(160)));
        assert!(!fa.is_free(Mfn(256)));
        assert!(!fa.is_free(Mfn(272)));
        assert!(fa.is_free(Mfn(273)));
        assert!(!fa.is_free(Mfn(1024)));
    }

    #[test]
    fn ranges_beyond_max_frame_are_ignored() {
        let mut words = storage(100);
        let fa = FrameAllocator::new(&mut words, 100, [(0, 1 << 40)], &[]).unwrap();
        assert_eq!(fa.total(), 100);
        assert_eq!(words[1] >> 36, (1 << 28) - 1);
    }

    #[test]
    fn storage_size_is_checked() {
        let mut words = vec![0u64; 3];
        assert_eq!(
            FrameAllocator::new(&mut words, 65, [], &[]).unwrap_err(),
            FrameError::StorageTooSmall {
                needed: 4,
                provided: 3
            }
        );
    }

    #[test]
    fn alloc_until_empty_then_free() {
        let mut words = storage(130);
        let mut fa = FrameAllocator::new(&mut words, 130, [(4096, 130 * 4096)], &[]).unwrap();
        let mut got = BTreeSet::new();
        while let Some(mfn) = fa.alloc() {
            assert!(got.insert(mfn.0));
        }
        assert_eq!(got.len(), 129);
        assert_eq!(fa.free_count(), 0);
        assert!(!got.contains(&0));
        assert_eq!(fa.free(Mfn(0)), Err(FrameError::NotManaged(Mfn(0))));
        assert_eq!(fa.free(Mfn(130)), Err(FrameError::OutOfRange(Mfn(130))));
        assert_eq!(fa.free(Mfn(77)), Ok(()));
        assert_eq!(fa.free(Mfn(77)), Err(FrameError::DoubleFree(Mfn(77))));
        assert_eq!(fa.free_count(), 1);
        assert_eq!(fa.alloc(), Some(Mfn(77)));
    }

    #[test]
    fn contiguous_respects_alignment_and_holes() {
        let mut words = storage(4096);
        let mut fa =
            FrameAllocator::new(&mut words, 4096, [(0, 4096 * 4096)], &[(0x3000, 0x4000)]).unwrap();
        assert_eq!(fa.alloc_contiguous(4, 1), Some(Mfn(4)));
        assert_eq!(fa.alloc_contiguous(3, 1), Some(Mfn(0)));
        assert_eq!(fa.alloc_contiguous(512, 512), Some(Mfn(512)));
        assert_eq!(fa.alloc_contiguous(1, 512), Some(Mfn(1024)));
        assert_eq!(fa.alloc_contiguous(0, 1), None);
        assert_eq!(fa.alloc_contiguous(1, 3), None);
        assert_eq!(fa.alloc_contiguous(4096, 1), None);
        assert_eq!(fa.free_count(), 4096 - 1 - 4 - 3 - 512 - 1);
    }

    /// A tiny xorshift64 generator, enough for randomized tests.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    #[test]
    fn random_operations_match_a_model() {
        const FRAMES: u64 = 700;
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for round in 0..20 {
            let mut words = storage(FRAMES);
            let holes = [(rng.below(FRAMES) * 4096, rng.below(FRAMES) * 4096)];
            let usable = [(4096 * rng.below(50), FRAMES * 4096 - rng.below(9000))];
            let mut fa = FrameAllocator::new(&mut words, FRAMES, usable, &holes).unwrap();
            // The model: the set of free frames.
            let mut free: BTreeSet<u64> = (0..FRAMES).filter(|&f| fa.is_free(Mfn(f))).collect();
            let mut allocated: Vec<u64> = Vec::new();
            assert_eq!(fa.free_count(), free.len() as u64);
            for _ in 0..3000 {
                match rng.below(10) {
                    0..=3 => match fa.alloc() {
                        Some(Mfn(f)) => {
                            assert!(free.remove(&f), "round {round}: {f} was not free");
                            allocated.push(f);
                        }
                        None => assert!(free.is_empty()),
                    },
                    4 => {
                        let count = 1 + rng.below(20);
                        let align = 1 << rng.below(5);
                        match fa.alloc_contiguous(count, align) {
                            Some(Mfn(f)) => {
                                assert_eq!(f % align, 0);
                                for g in f..f + count {
                                    assert!(free.remove(&g));
                                    allocated.push(g);
                                }
                            }
                            None => {
                                let possible = (0..FRAMES).step_by(align as usize).any(|s| {
                                    s + count <= FRAMES && (s..s + count).all(|g| free.contains(&g))
                                });
                                assert!(!possible, "a run of {count} aligned {align} exists");
                            }
                        }
                    }
                    5..=8 if !allocated.is_empty() => {
                        let i = rng.below(allocated.len() as u64) as usize;
                        let f = allocated.swap_remove(i);
                        assert_eq!(fa.free(Mfn(f)), Ok(()));
                        free.insert(f);
                    }
                    _ => {
                        // Freeing a frame that is not allocated never works.
                        let f = rng.below(FRAMES + 5);
                        if !allocated.contains(&f) {
                            assert!(fa.free(Mfn(f)).is_err());
                        }
                    }
                }
                assert_eq!(fa.free_count(), free.len() as u64);
            }
            for f in 0..FRAMES {
                assert_eq!(fa.is_free(Mfn(f)), free.contains(&f), "frame {f}");
            }
        }
    }
}
