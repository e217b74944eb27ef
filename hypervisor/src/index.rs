//! Indexing with guest-controlled numbers (frame numbers, hypercall and
//! vCPU ids, ports, grant references, domain ids).
//!
//! A bounds check the CPU predicts wrongly still lets later loads run
//! speculatively with the out-of-range index (Spectre variant 1). Every
//! guest-controlled index therefore goes through [`bounded`] before it
//! indexes anything: the index is masked with a value computed from the
//! comparison as data (all ones in range, zero outside), so even a
//! speculated load stays inside the table.
#![forbid(unsafe_code)]

/// `index` as a slice index below `len`, or `None`.
#[inline]
#[must_use]
pub fn bounded(index: u64, len: usize) -> Option<usize> {
    let len = len as u64;
    let in_range = index < len;
    let mask = 0u64.wrapping_sub(u64::from(in_range));
    let clamped = usize::try_from(index & mask).ok()?;
    in_range.then_some(clamped)
}

/// Element `index` of `slice`, through [`bounded`].
#[inline]
pub fn get<T>(slice: &[T], index: u64) -> Option<&T> {
    slice.get(bounded(index, slice.len())?)
}

/// Element `index` of `slice`, mutably, through [`bounded`].
#[inline]
pub fn get_mut<T>(slice: &mut [T], index: u64) -> Option<&mut T> {
    let i = bounded(index, slice.len())?;
    slice.get_mut(i)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_range_only() {
        assert_eq!(bounded(0, 4), Some(0));
        assert_eq!(bounded(3, 4), Some(3));
        assert_eq!(bounded(4, 4), None);
        assert_eq!(bounded(u64::MAX, 4), None);
        assert_eq!(bounded(0, 0), None);
        let mut v = [10, 20, 30];
        assert_eq!(get(&v, 2), Some(&30));
        assert_eq!(get(&v, 3), None);
        *get_mut(&mut v, 1).unwrap() = 7;
        assert_eq!(v, [10, 7, 30]);
        assert!(get_mut(&mut v, 1 << 40).is_none());
    }
}
