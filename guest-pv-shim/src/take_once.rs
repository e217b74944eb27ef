//! [`TakeOnce`]: a `static` whose contents are handed out once, as a
//! `&'static mut`, for buffers too large for the stack that a guest gives
//! to code wanting exclusive `'static` memory (network stack sockets, the
//! netfront's packet pages).

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

/// A value handed out at most once.
pub struct TakeOnce<T> {
    taken: AtomicBool,
    value: UnsafeCell<T>,
}

// SAFETY: the value is reached only through `take`, which hands out one
// exclusive reference in all (the atomic swap decides which caller gets
// it), so sharing the cell between threads shares no access to `T`.
unsafe impl<T: Send> Sync for TakeOnce<T> {}

impl<T> TakeOnce<T> {
    /// A cell holding `value`, not yet taken.
    pub const fn new(value: T) -> TakeOnce<T> {
        TakeOnce {
            taken: AtomicBool::new(false),
            value: UnsafeCell::new(value),
        }
    }

    /// The value, the first time; `None` ever after.
    #[allow(
        clippy::mut_from_ref,
        reason = "the atomic swap makes the one `&mut` handed out exclusive"
    )]
    pub fn take(&'static self) -> Option<&'static mut T> {
        if self.taken.swap(true, Ordering::AcqRel) {
            return None;
        }
        // SAFETY: the swap above succeeds once, so this is the only
        // reference to the value ever made; the cell is `'static`.
        Some(unsafe { &mut *self.value.get() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taken_once_only() {
        static CELL: TakeOnce<[u8; 4]> = TakeOnce::new([1, 2, 3, 4]);
        let first = CELL.take().unwrap();
        first[0] = 9;
        assert_eq!(*first, [9, 2, 3, 4]);
        assert!(CELL.take().is_none());
    }
}
