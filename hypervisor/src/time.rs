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

/// A moment known only to lie between two TSC readings: one taken
/// before it and one after.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bracket {
    /// The reading before the moment.
    pub before: u64,
    /// The reading after it.
    pub after: u64,
}

impl Bracket {
    /// The best guess: halfway between the readings.
    fn middle(self) -> u64 {
        self.before + self.after.wrapping_sub(self.before) / 2
    }

    /// How far the moment may lie from [`Bracket::middle`], twice over.
    fn width(self) -> u64 {
        self.after.wrapping_sub(self.before)
    }
}

/// One window of a reference clock (the PIT's count running out, the
/// local APIC timer's count) measured in TSC ticks, its two ends each
/// bracketed by readings. A CPU that is preempted between a reading and
/// the moment it brackets (a vCPU thread of a loaded host under QEMU,
/// an SMI on hardware) only widens that bracket, so the window with the
/// narrowest brackets is the one to believe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// When the reference clock started.
    pub start: Bracket,
    /// When it was seen to end.
    pub end: Bracket,
}

impl Window {
    /// The window's length in TSC ticks.
    #[must_use]
    pub fn ticks(&self) -> u64 {
        self.end.middle().saturating_sub(self.start.middle())
    }

    /// How many TSC ticks [`Window::ticks`] may be off by, twice over.
    #[must_use]
    pub fn uncertainty(&self) -> u64 {
        self.start.width().saturating_add(self.end.width())
    }

    /// Whether it is known to 1 part in 10,000 (100 ppm): no further
    /// window needs measuring.
    #[must_use]
    pub fn is_precise(&self) -> bool {
        self.uncertainty().saturating_mul(10_000) <= self.ticks()
    }

    /// Its uncertainty in parts per million of its length.
    #[must_use]
    pub fn ppm(&self) -> u64 {
        u64::try_from(u128::from(self.uncertainty()) * 1_000_000 / u128::from(self.ticks().max(1)))
            .unwrap_or(u64::MAX)
    }
}

/// Measures windows with `measure` (each with what was read in it) until
/// one [`Window::is_precise`] or `tries` were made; the one with the least
/// uncertainty (`None` only for no tries).
pub fn best_window<T>(
    tries: usize,
    mut measure: impl FnMut() -> (Window, T),
) -> Option<(Window, T)> {
    let mut best: Option<(Window, T)> = None;
    for _ in 0..tries {
        let (window, reading) = measure();
        let precise = window.is_precise();
        if best
            .as_ref()
            .is_none_or(|(b, _)| window.uncertainty() < b.uncertainty())
        {
            best = Some((window, reading));
        }
        if precise {
            break;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(start: (u64, u64), end: (u64, u64)) -> Window {
        Window {
            start: Bracket {
                before: start.0,
                after: start.1,
            },
            end: Bracket {
                before: end.0,
                after: end.1,
            },
        }
    }

    #[test]
    fn a_preempted_window_is_not_believed() {
        // 10 ms at 2.6 GHz is 26e6 ticks; the second window's end was seen
        // 18e6 ticks late (its vCPU lost 7 ms), the third's start early.
        let windows = [
            window((1000, 3000), (26_001_000, 26_019_000)),
            window((0, 2000), (26_000_000, 44_000_000)),
            window((0, 9_000_000), (26_000_000, 26_002_000)),
            window((500, 1500), (26_000_500, 26_001_500)),
        ];
        let mut next = windows.iter().copied().zip(0..);
        let (best, which) = best_window(windows.len(), || next.next().unwrap()).unwrap();
        assert_eq!((best, which), (windows[3], 3));
        assert_eq!(best.ticks(), 26_000_000);
        assert_eq!(best.ppm(), 76);
        assert!(best.is_precise());
    }

    #[test]
    fn a_precise_window_ends_the_search() {
        let mut made = 0;
        let best = best_window(5, || {
            made += 1;
            (window((0, 50), (1_000_000, 1_000_040)), ())
        });
        assert_eq!(made, 1);
        assert_eq!(best.unwrap().0.ticks(), 999_995);
        assert_eq!(best_window::<()>(0, || unreachable!()), None);
    }

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
