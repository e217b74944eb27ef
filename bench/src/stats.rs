//! Samples, their mean and minimum, and fixed-point decimals to print them.
//!
//! The guest has no floating point (the bare-metal target is soft-float and
//! the guest never touches SSE state), so results are [`Fixed`]: an integer
//! scaled by a power of ten, rounded half up. Invariant: a [`Samples`]
//! with `count() == 0` has no summary; the sum never overflows (`u128`).

#![forbid(unsafe_code)]

use core::fmt;

/// A non-negative decimal with `places` digits after the point, stored as
/// `scaled = value * 10^places`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fixed {
    /// The value times `10^places`.
    pub scaled: u64,
    /// Digits after the decimal point (at most [`Fixed::MAX_PLACES`]).
    pub places: u32,
}

impl Fixed {
    /// Most digits after the point.
    pub const MAX_PLACES: u32 = 6;

    /// `num / den` rounded half up to `places` digits; `None` if `den` is 0,
    /// `places` is above [`Fixed::MAX_PLACES`] or the result overflows.
    #[must_use]
    pub fn ratio(num: u128, den: u128, places: u32) -> Option<Fixed> {
        if den == 0 || places > Self::MAX_PLACES {
            return None;
        }
        let scale = 10u128.pow(places);
        let scaled = num.checked_mul(scale)?.checked_add(den / 2)? / den;
        Some(Fixed {
            scaled: u64::try_from(scaled).ok()?,
            places,
        })
    }

    /// The integer `value` with `places` zero decimals.
    #[must_use]
    pub fn integer(value: u64, places: u32) -> Option<Fixed> {
        Fixed::ratio(u128::from(value), 1, places)
    }

    /// Parses `123`, `123.4` or `0.25` (digits only, at most
    /// [`Fixed::MAX_PLACES`] decimals).
    #[must_use]
    pub fn parse(text: &str) -> Option<Fixed> {
        let (int, frac) = text.split_once('.').unwrap_or((text, ""));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(int) || (text.contains('.') && !digits(frac)) {
            return None;
        }
        let places = u32::try_from(frac.len()).ok()?;
        if places > Self::MAX_PLACES {
            return None;
        }
        let int: u64 = int.parse().ok()?;
        let frac: u64 = if frac.is_empty() {
            0
        } else {
            frac.parse().ok()?
        };
        let scaled = int.checked_mul(10u64.pow(places))?.checked_add(frac)?;
        Some(Fixed { scaled, places })
    }

    /// The value as `f64` (for hosts that print ratios).
    #[must_use]
    #[allow(
        clippy::cast_precision_loss,
        reason = "values are instruction counts far below 2^52"
    )]
    pub fn as_f64(self) -> f64 {
        self.scaled as f64 / 10u64.pow(self.places) as f64
    }
}

impl fmt::Display for Fixed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.places == 0 {
            return write!(f, "{}", self.scaled);
        }
        let scale = 10u64.pow(self.places);
        let width = usize::try_from(self.places).map_err(|_| fmt::Error)?;
        write!(
            f,
            "{}.{:0width$}",
            self.scaled / scale,
            self.scaled % scale,
            width = width
        )
    }
}

/// Decimals of the printed mean and minimum.
pub const RESULT_PLACES: u32 = 1;

/// Decimals of the printed per-sample hypervisor counters.
pub const COUNTER_PLACES: u32 = 2;

/// The printed result of one benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Mean per item.
    pub mean: Fixed,
    /// Smallest sample, per item.
    pub min: Fixed,
    /// Number of samples.
    pub n: u64,
}

/// Accumulated sample ticks (already corrected for the `rdtsc` overhead).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Samples {
    count: u64,
    sum: u128,
    min: u64,
}

impl Samples {
    /// No samples yet.
    #[must_use]
    pub const fn new() -> Samples {
        Samples {
            count: 0,
            sum: 0,
            min: u64::MAX,
        }
    }

    /// Adds one sample of `ticks`.
    pub fn record(&mut self, ticks: u64) {
        self.count += 1;
        self.sum += u128::from(ticks);
        self.min = self.min.min(ticks);
    }

    /// Adds `count` samples whose total is `sum` and smallest is `min`
    /// (for loops that keep their own totals, like the user-mode one).
    pub fn merge(&mut self, count: u64, sum: u64, min: u64) {
        if count == 0 {
            return;
        }
        self.count += count;
        self.sum += u128::from(sum);
        self.min = self.min.min(min);
    }

    /// Number of samples.
    #[must_use]
    pub const fn count(&self) -> u64 {
        self.count
    }

    /// Mean and minimum per item, `items_per_sample` items per sample;
    /// `None` without samples.
    #[must_use]
    pub fn summary(&self, items_per_sample: u32) -> Option<Summary> {
        if self.count == 0 || items_per_sample == 0 {
            return None;
        }
        let items = u128::from(items_per_sample);
        Some(Summary {
            mean: Fixed::ratio(self.sum, u128::from(self.count) * items, RESULT_PLACES)?,
            min: Fixed::ratio(u128::from(self.min), items, RESULT_PLACES)?,
            n: self.count,
        })
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::string::ToString;

    use super::*;

    #[test]
    fn fixed_rounds_half_up_and_prints() {
        assert_eq!(Fixed::ratio(2835, 10, 1).unwrap().to_string(), "283.5");
        assert_eq!(Fixed::ratio(1, 3, 2).unwrap().to_string(), "0.33");
        assert_eq!(Fixed::ratio(2, 3, 2).unwrap().to_string(), "0.67");
        assert_eq!(Fixed::ratio(1, 512, 2).unwrap().to_string(), "0.00");
        assert_eq!(Fixed::ratio(5, 1000, 2).unwrap().to_string(), "0.01");
        assert_eq!(Fixed::ratio(7, 1, 0).unwrap().to_string(), "7");
        assert_eq!(Fixed::integer(283, 1).unwrap().to_string(), "283.0");
        assert_eq!(Fixed::ratio(1, 0, 1), None);
        assert_eq!(Fixed::ratio(1, 1, 7), None);
        assert_eq!(Fixed::ratio(u128::MAX, 1, 1), None);
    }

    #[test]
    fn fixed_parses_what_it_prints() {
        for text in ["283.0", "0.33", "7", "519.25", "0.000001"] {
            assert_eq!(Fixed::parse(text).unwrap().to_string(), text);
        }
        assert_eq!(Fixed::parse("283.5").unwrap().as_f64(), 283.5);
        for bad in ["", ".5", "5.", "-1", "1e3", "1.2.3", "1.1234567", "x"] {
            assert_eq!(Fixed::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn summary_per_item() {
        let mut s = Samples::new();
        assert_eq!(s.summary(1), None);
        for ticks in [640, 600, 620] {
            s.record(ticks);
        }
        let per_pte = s.summary(64).unwrap();
        assert_eq!(per_pte.n, 3);
        assert_eq!(per_pte.mean.to_string(), "9.7");
        assert_eq!(per_pte.min.to_string(), "9.4");
        let per_call = s.summary(1).unwrap();
        assert_eq!(per_call.mean.to_string(), "620.0");
        assert_eq!(per_call.min.to_string(), "600.0");
        assert_eq!(s.summary(0), None);
    }

    #[test]
    fn merge_adds_a_loop_total() {
        let mut s = Samples::new();
        s.merge(0, 0, 0);
        assert_eq!(s.count(), 0);
        s.merge(4, 4000, 990);
        s.record(1000);
        let sum = s.summary(1).unwrap();
        assert_eq!(
            (sum.n, sum.mean.to_string(), sum.min.to_string()),
            (5, "1000.0".into(), "990.0".into())
        );
    }
}
