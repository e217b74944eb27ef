//! The wall clock: the date the CMOS real-time clock gives at boot, and
//! the wall time at system time 0 that every domain reads from its
//! shared_info page.
//!
//! Xen's model, kept: the hypervisor holds one [`Wallclock`], the wall
//! time (since 1970-01-01 00:00 UTC) at system time 0, and publishes it in
//! each domain's `wc_sec`, `wc_sec_hi` and `wc_nsec`; a guest adds its
//! system time to get the time now. It is set once at boot from the RTC
//! and again by `XENPF_settime32`/`XENPF_settime64`, which say what the
//! wall time is at a given system time.
//!
//! Invariants: a [`Wallclock`]'s nanoseconds are below 10^9; its
//! arithmetic is Xen's, in unsigned 64-bit nanoseconds that wrap, so any
//! setting a guest asks for gives the value Xen gives, with no error. An
//! [`RtcRegisters`] decodes to a [`DateTime`] only when every field is in
//! range and the date exists, so a missing or broken RTC gives `None`,
//! never a wrong date.
//!
//! The registers (Motorola MC146818 layout, as every PC keeps it): seconds
//! 0x00, minutes 0x02, hours 0x04, day of month 0x07, month 0x08, year
//! 0x09, status A 0x0A (bit 7: update in progress), status B 0x0B (bit 1:
//! 24-hour mode, bit 2: binary rather than BCD), and a century register
//! wherever the ACPI FADT's `CENTURY` field says (0: none).
#![forbid(unsafe_code)]

use core::fmt;

use crate::time::NS_PER_SEC;

/// Status register B: hours count 0-23 (else 1-12 with [`HOUR_PM`]).
pub const STATUS_B_24_HOUR: u8 = 1 << 1;
/// Status register B: values are binary (else BCD).
pub const STATUS_B_BINARY: u8 = 1 << 2;
/// Hours register in 12-hour mode: the time is after noon.
pub const HOUR_PM: u8 = 1 << 7;
/// The century when the RTC has no century register (or a bad one).
pub const DEFAULT_CENTURY: u32 = 20;

/// Seconds in a day.
const SECS_PER_DAY: u64 = 86_400;

/// The RTC's date and time registers as read, undecoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RtcRegisters {
    /// Register 0x00.
    pub seconds: u8,
    /// Register 0x02.
    pub minutes: u8,
    /// Register 0x04 (bit 7 is the PM flag in 12-hour mode).
    pub hours: u8,
    /// Register 0x07, day of the month.
    pub day: u8,
    /// Register 0x08.
    pub month: u8,
    /// Register 0x09, the year in the century.
    pub year: u8,
    /// The century register, if the FADT names one.
    pub century: Option<u8>,
    /// Status register B (the encoding of the others).
    pub status_b: u8,
}

/// A date and time of day in UTC, valid (every field in range, the day
/// exists in its month) and not before 1970.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DateTime {
    year: u32,
    month: u8,
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
}

/// A BCD byte's value, `None` if a digit is above 9.
fn from_bcd(raw: u8) -> Option<u8> {
    let (high, low) = (raw >> 4, raw & 0xf);
    (high <= 9 && low <= 9).then_some(high * 10 + low)
}

impl RtcRegisters {
    /// The date the registers hold: BCD or binary and 12- or 24-hour as
    /// status register B says; the century from the century register when
    /// it holds 19-99, else [`DEFAULT_CENTURY`]. `None` if a field is out
    /// of range (an RTC that is absent reads all ones) or the date lies
    /// before 1970.
    pub fn decode(&self) -> Option<DateTime> {
        let binary = self.status_b & STATUS_B_BINARY != 0;
        let value = |raw: u8| if binary { Some(raw) } else { from_bcd(raw) };
        let hour = if self.status_b & STATUS_B_24_HOUR != 0 {
            value(self.hours)?
        } else {
            // 12 AM is midnight, 12 PM noon.
            let hour = value(self.hours & !HOUR_PM)?;
            if !(1..=12).contains(&hour) {
                return None;
            }
            hour % 12 + if self.hours & HOUR_PM != 0 { 12 } else { 0 }
        };
        let century = self
            .century
            .and_then(value)
            .map(u32::from)
            .filter(|c| (19..=99).contains(c))
            .unwrap_or(DEFAULT_CENTURY);
        let year = value(self.year).filter(|&y| y <= 99)?;
        DateTime::new(
            century * 100 + u32::from(year),
            value(self.month)?,
            value(self.day)?,
            hour,
            value(self.minutes)?,
            value(self.seconds)?,
        )
    }
}

/// The CMOS index of the century register from the FADT's `CENTURY`
/// field: `None` for 0 (no such register), for the clock's own registers
/// (0x00-0x0D) and beyond the 128-byte bank (bit 7 of the index port
/// masks NMIs instead).
pub fn century_register(fadt_century: u8) -> Option<u8> {
    (0x0e..=0x7f)
        .contains(&fadt_century)
        .then_some(fadt_century)
}

/// Whether `year` is a Gregorian leap year.
fn is_leap(year: u32) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

/// Days in `month` (1-12) of `year`.
fn days_in_month(year: u32, month: u8) -> u8 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl DateTime {
    /// The date and time, if valid and not before 1970.
    pub fn new(
        year: u32,
        month: u8,
        day: u8,
        hour: u8,
        minute: u8,
        second: u8,
    ) -> Option<DateTime> {
        let valid = year >= 1970
            && (1..=12).contains(&month)
            && (1..=days_in_month(year, month)).contains(&day)
            && hour < 24
            && minute < 60
            && second < 60;
        valid.then_some(DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
        })
    }

    /// Days from 1970-01-01 to the date: whole years of 365 days, a day
    /// per leap day passed (years 1969 and before are not counted in), the
    /// months of this year so far, then the day.
    fn days_since_epoch(&self) -> u64 {
        let years = u64::from(self.year - 1970);
        // Leap years in 1970..year: every 4th from 1972, less every 100th
        // from 2000 (counted in the first term), plus every 400th.
        let before = u64::from(self.year - 1);
        let leaps =
            (before / 4 - 1969 / 4) - (before / 100 - 1969 / 100) + (before / 400 - 1969 / 400);
        let months: u64 = (1..self.month)
            .map(|m| u64::from(days_in_month(self.year, m)))
            .sum();
        years * 365 + leaps + months + u64::from(self.day - 1)
    }

    /// Seconds since 1970-01-01 00:00 UTC.
    pub fn unix_seconds(&self) -> u64 {
        self.days_since_epoch() * SECS_PER_DAY
            + u64::from(self.hour) * 3600
            + u64::from(self.minute) * 60
            + u64::from(self.second)
    }
}

impl fmt::Display for DateTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            self.year, self.month, self.day, self.hour, self.minute, self.second
        )
    }
}

/// The wall time at system time 0: seconds and nanoseconds since
/// 1970-01-01 00:00 UTC (Xen's `wc_sec`/`wc_nsec`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Wallclock {
    sec: u64,
    nsec: u32,
}

/// A [`Wallclock`] as a shared_info page holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedWallclock {
    /// `wc_sec`: the low 32 bits of the seconds.
    pub wc_sec: u32,
    /// `wc_nsec`.
    pub wc_nsec: u32,
    /// `wc_sec_hi`: the high 32 bits of the seconds.
    pub wc_sec_hi: u32,
}

impl Wallclock {
    /// 1970-01-01 00:00 UTC at system time 0: the wall clock before
    /// anything set it.
    pub const EPOCH: Wallclock = Wallclock { sec: 0, nsec: 0 };

    /// The wall clock that reads `secs`.`nsecs` at system time
    /// `system_time` (ns): `secs * 10^9 + nsecs - system_time`
    /// nanoseconds, each step wrapping modulo 2^64 as in Xen's
    /// `do_settime`. `nsecs` may be a second or more: it carries.
    pub fn reading_at(secs: u64, nsecs: u32, system_time: u64) -> Wallclock {
        let ns = secs
            .wrapping_mul(NS_PER_SEC)
            .wrapping_add(u64::from(nsecs))
            .wrapping_sub(system_time);
        Wallclock {
            sec: ns / NS_PER_SEC,
            nsec: u32::try_from(ns % NS_PER_SEC).unwrap_or(0),
        }
    }

    /// Whole seconds since 1970 at system time 0.
    pub fn sec(&self) -> u64 {
        self.sec
    }

    /// The nanoseconds beyond [`Wallclock::sec`] (below 10^9).
    pub fn nsec(&self) -> u32 {
        self.nsec
    }

    /// The shared_info fields for this wall clock.
    #[allow(
        clippy::cast_possible_truncation,
        reason = "the seconds are split into their two 32-bit halves"
    )]
    pub fn shared(&self) -> SharedWallclock {
        SharedWallclock {
            wc_sec: self.sec as u32,
            wc_nsec: self.nsec,
            wc_sec_hi: (self.sec >> 32) as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(year: u32, month: u8, day: u8, hour: u8, minute: u8, second: u8) -> DateTime {
        DateTime::new(year, month, day, hour, minute, second).expect("a valid date")
    }

    /// Registers in BCD, 24-hour mode, as PC firmware sets them.
    fn bcd24(raw: [u8; 6], century: Option<u8>) -> RtcRegisters {
        let [year, month, day, hours, minutes, seconds] = raw;
        RtcRegisters {
            seconds,
            minutes,
            hours,
            day,
            month,
            year,
            century,
            status_b: STATUS_B_24_HOUR,
        }
    }

    #[test]
    fn unix_seconds_of_known_dates() {
        assert_eq!(date(1970, 1, 1, 0, 0, 0).unix_seconds(), 0);
        assert_eq!(date(1970, 1, 2, 0, 0, 1).unix_seconds(), 86_401);
        assert_eq!(date(1972, 3, 1, 0, 0, 0).unix_seconds(), 68_256_000);
        assert_eq!(date(2000, 3, 1, 0, 0, 0).unix_seconds(), 951_868_800);
        assert_eq!(date(2024, 1, 1, 0, 0, 0).unix_seconds(), 1_704_067_200);
        assert_eq!(date(2024, 2, 29, 12, 34, 56).unix_seconds(), 1_709_210_096);
        assert_eq!(date(2038, 1, 19, 3, 14, 8).unix_seconds(), 1 << 31);
        assert_eq!(date(2100, 3, 1, 0, 0, 0).unix_seconds(), 4_107_542_400);
        assert_eq!(date(2106, 2, 7, 6, 28, 16).unix_seconds(), 1 << 32);
    }

    #[test]
    fn every_day_is_one_day_after_the_one_before() {
        let mut previous = date(1970, 1, 1, 0, 0, 0).unix_seconds();
        let mut days = 0;
        for year in 1970..2400 {
            for month in 1..=12 {
                for day in 1..=days_in_month(year, month) {
                    let now = date(year, month, day, 0, 0, 0).unix_seconds();
                    if days > 0 {
                        assert_eq!(now - previous, SECS_PER_DAY, "{year}-{month}-{day}");
                    }
                    previous = now;
                    days += 1;
                }
            }
        }
        // 430 years of 365 days plus their 104 leap days.
        assert_eq!(days, 430 * 365 + 104);
    }

    #[test]
    fn invalid_dates_are_refused() {
        assert_eq!(DateTime::new(2100, 2, 29, 0, 0, 0), None);
        assert!(DateTime::new(2000, 2, 29, 0, 0, 0).is_some());
        assert_eq!(DateTime::new(2023, 2, 29, 0, 0, 0), None);
        assert_eq!(DateTime::new(2024, 4, 31, 0, 0, 0), None);
        assert_eq!(DateTime::new(2024, 13, 1, 0, 0, 0), None);
        assert_eq!(DateTime::new(2024, 0, 1, 0, 0, 0), None);
        assert_eq!(DateTime::new(2024, 1, 0, 0, 0, 0), None);
        assert_eq!(DateTime::new(2024, 1, 1, 24, 0, 0), None);
        assert_eq!(DateTime::new(2024, 1, 1, 0, 60, 0), None);
        assert_eq!(DateTime::new(2024, 1, 1, 0, 0, 60), None);
        assert_eq!(DateTime::new(1969, 12, 31, 23, 59, 59), None);
    }

    #[test]
    fn bcd_registers_decode() {
        let regs = bcd24([0x26, 0x12, 0x07, 0x23, 0x59, 0x58], None);
        assert_eq!(regs.decode(), Some(date(2026, 12, 7, 23, 59, 58)));
        assert_eq!(
            regs.decode().map(|d| d.to_string()).as_deref(),
            Some("2026-12-07 23:59:58 UTC")
        );
        // A digit above 9 is no BCD value.
        assert_eq!(bcd24([0x2a, 0x12, 0x07, 0, 0, 0], None).decode(), None);
        assert_eq!(bcd24([0x26, 0x12, 0x07, 0, 0x5f, 0], None).decode(), None);
    }

    #[test]
    fn binary_registers_decode() {
        let regs = RtcRegisters {
            seconds: 5,
            minutes: 4,
            hours: 3,
            day: 29,
            month: 2,
            year: 24,
            century: Some(20),
            status_b: STATUS_B_24_HOUR | STATUS_B_BINARY,
        };
        assert_eq!(regs.decode(), Some(date(2024, 2, 29, 3, 4, 5)));
        assert_eq!(RtcRegisters { year: 100, ..regs }.decode(), None);
    }

    #[test]
    fn twelve_hour_mode() {
        let at = |hours: u8| {
            RtcRegisters {
                status_b: 0,
                ..bcd24([0x24, 0x01, 0x01, hours, 0, 0], None)
            }
            .decode()
            .map(|d| d.hour)
        };
        assert_eq!(at(0x12), Some(0), "12 AM is midnight");
        assert_eq!(at(0x01), Some(1));
        assert_eq!(at(0x11), Some(11));
        assert_eq!(at(HOUR_PM | 0x12), Some(12), "12 PM is noon");
        assert_eq!(at(HOUR_PM | 0x01), Some(13));
        assert_eq!(at(HOUR_PM | 0x11), Some(23));
        assert_eq!(at(0x00), None);
        assert_eq!(at(0x13), None);
        let binary_pm = RtcRegisters {
            hours: HOUR_PM | 7,
            status_b: STATUS_B_BINARY,
            ..bcd24([24, 1, 1, 0, 0, 0], None)
        };
        assert_eq!(binary_pm.decode().map(|d| d.hour), Some(19));
    }

    #[test]
    fn the_century_register_gives_the_century() {
        let regs = |century| bcd24([0x99, 0x12, 0x31, 0, 0, 0], century);
        assert_eq!(regs(None).decode().map(|d| d.year), Some(2099));
        assert_eq!(regs(Some(0x19)).decode().map(|d| d.year), Some(1999));
        assert_eq!(regs(Some(0x21)).decode().map(|d| d.year), Some(2199));
        // Registers that are no century: the default one.
        assert_eq!(regs(Some(0x00)).decode().map(|d| d.year), Some(2099));
        assert_eq!(regs(Some(0xff)).decode().map(|d| d.year), Some(2099));
        assert_eq!(regs(Some(0x18)).decode().map(|d| d.year), Some(2099));
        // 1950 lies before the epoch.
        let old = bcd24([0x50, 0x01, 0x01, 0, 0, 0], Some(0x19));
        assert_eq!(old.decode(), None);
    }

    #[test]
    fn century_register_index() {
        assert_eq!(century_register(0), None);
        assert_eq!(century_register(0x0b), None);
        assert_eq!(century_register(0x32), Some(0x32));
        assert_eq!(century_register(0x7f), Some(0x7f));
        assert_eq!(century_register(0x80), None);
    }

    #[test]
    fn an_absent_rtc_gives_no_date() {
        let ones = RtcRegisters {
            seconds: 0xff,
            minutes: 0xff,
            hours: 0xff,
            day: 0xff,
            month: 0xff,
            year: 0xff,
            century: Some(0xff),
            status_b: 0xff,
        };
        assert_eq!(ones.decode(), None);
        assert_eq!(RtcRegisters::default().decode(), None);
    }

    #[test]
    fn settings_give_xens_values() {
        // The values Xen 4.17 gives (the time_wallclock test guest).
        let cases = [
            ((1_700_000_000, 5, 0), (1_700_000_000, 5)),
            ((0x1_0000_0005, 0, 0), (4_294_967_301, 0)),
            (
                (1_700_000_000, 1_500_000_000, 0),
                (1_700_000_001, 500_000_000),
            ),
            ((1_700_000_000, u32::MAX, 0), (1_700_000_004, 294_967_295)),
            ((0, 0, NS_PER_SEC), (18_446_744_072, 709_551_616)),
            ((1 << 40, 17, 3), (11_153_727_427, 136_454_670)),
            (
                (u64::from(u32::MAX), 2_000_000_001, 5 * NS_PER_SEC),
                (4_294_967_292, 1),
            ),
        ];
        for ((secs, nsecs, system_time), (sec, nsec)) in cases {
            let wc = Wallclock::reading_at(secs, nsecs, system_time);
            assert_eq!(
                (wc.sec(), wc.nsec()),
                (sec, nsec),
                "{secs}.{nsecs} at {system_time}"
            );
        }
    }

    #[test]
    fn the_time_set_is_read_back_at_its_system_time() {
        let wc = Wallclock::reading_at(1_750_000_000, 123_456_789, 987_654_321_012);
        let at = wc
            .sec()
            .wrapping_mul(NS_PER_SEC)
            .wrapping_add(u64::from(wc.nsec()))
            .wrapping_add(987_654_321_012);
        assert_eq!(at, 1_750_000_000 * NS_PER_SEC + 123_456_789);
        assert!(wc.nsec() < 1_000_000_000);
    }

    #[test]
    fn shared_fields_split_the_seconds() {
        let wc = Wallclock::reading_at(0x2_8000_0001, 9, 0);
        assert_eq!(
            wc.shared(),
            SharedWallclock {
                wc_sec: 0x8000_0001,
                wc_nsec: 9,
                wc_sec_hi: 2,
            }
        );
        assert_eq!(
            Wallclock::EPOCH.shared(),
            SharedWallclock {
                wc_sec: 0,
                wc_nsec: 0,
                wc_sec_hi: 0,
            }
        );
    }
}
