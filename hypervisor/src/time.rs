//! System time: nanoseconds since boot, from the TSC.
//!
//! A TSC delta becomes nanoseconds through a [`TscScale`] of the form Xen
//! publishes in `vcpu_time_info` (`tsc_to_system_mul`, `tsc_shift`): shift
//! the delta left by `shift` (right if negative), multiply by `mul` and
//! keep the upper 64 bits of the 96-bit product. Guests compute the same
//! thing from the same two numbers, so the hypervisor and its guests agree
//! on the time to the nanosecond.
#![forbid(unsafe_code)]

/// Nanoseconds in a second.
pub const NS_PER_SEC: u64 = 1_000_000_000;

/// The conversion from TSC ticks to nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TscScale {
    /// Nanoseconds per tick as a 0.32 fixed-point fraction, after the shift.
    pub mul: u32,
    /// Power of two the delta is scaled by first.
    pub shift: i8,
}

impl TscScale {
    /// The scale for a counter of `hz` ticks per second (Xen's
    /// `set_time_scale`): the shifted rate lies in (1e9/2, 1e9], so that
    /// `mul` = 1e9 / rate as a 32-bit fraction loses the least precision.
    pub fn for_hz(hz: u64) -> TscScale {
        let mut rate = hz.max(1);
        let mut shift: i8 = 0;
        while rate > 2 * NS_PER_SEC {
            rate >>= 1;
            shift -= 1;
        }
        while rate <= NS_PER_SEC {
            rate <<= 1;
            shift += 1;
        }
        let mul = (u128::from(NS_PER_SEC) << 32) / u128::from(rate);
        TscScale {
            mul: u32::try_from(mul).unwrap_or(u32::MAX),
            shift,
        }
    }

    /// `delta` ticks in nanoseconds.
    pub fn to_ns(self, delta: u64) -> u64 {
        let shifted = if self.shift < 0 {
            delta >> self.shift.unsigned_abs()
        } else {
            delta << self.shift.unsigned_abs()
        };
        let product = (u128::from(shifted) * u128::from(self.mul)) >> 32;
        u64::try_from(product).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_second_is_one_second() {
        for hz in [
            1_000_000,
            999_999_999,
            1_000_000_000,
            2_100_000_000,
            3_400_000_000,
        ] {
            let scale = TscScale::for_hz(hz);
            let ns = scale.to_ns(hz);
            assert!(ns.abs_diff(NS_PER_SEC) <= 2, "{hz} Hz: {ns} ns");
        }
    }

    #[test]
    fn scale_matches_xens_form() {
        // 2 GHz: shifted down once to 1e9, so half a nanosecond per tick.
        let s = TscScale::for_hz(2_000_000_000);
        assert_eq!(s.shift, 0);
        assert_eq!(s.mul, 0x8000_0000);
        let s = TscScale::for_hz(1_000_000_000);
        assert_eq!((s.shift, s.mul), (1, 0x8000_0000));
        assert_eq!(s.to_ns(3), 3);
    }
}
