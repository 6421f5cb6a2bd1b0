//! Calendar arithmetic in UTC, by hand: "a month of a subscription" (docs/api.md, "Catalogue, purchases and plans").
//!
//! A month is a calendar month: adding N months keeps the day of the month and the
//! time of day, clamping the day to the last day of the target month (Jan 31 + 1
//! month = Feb 28, or Feb 29 in a leap year). Periods of a subscription are always
//! counted from its anchor (`add_months(anchor, k)`), never by adding one month to
//! the previous boundary, so Jan 31 -> Feb 28 -> Mar 31, not Mar 28.
//!
//! Dates use the proleptic Gregorian calendar (Howard Hinnant's `days_from_civil`
//! and `civil_from_days`). UTC has no daylight saving, and leap seconds are not
//! counted by Unix time, so a day is always `DAY_MS`.

use crate::UnixMillis;

pub const SECOND_MS: i64 = 1000;
pub const MINUTE_MS: i64 = 60 * SECOND_MS;
pub const HOUR_MS: i64 = 60 * MINUTE_MS;
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// A UTC calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CivilDate {
    pub year: i64,
    /// 1..=12
    pub month: u32,
    /// 1..=31
    pub day: u32,
}

pub fn is_leap_year(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

/// Days in `month` (1..=12) of `year`.
pub fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => panic!("month {month} is not in 1..=12"),
    }
}

/// Days since 1970-01-01 of a civil date (negative before it).
pub fn days_from_civil(date: CivilDate) -> i64 {
    let (m, d) = (date.month as i64, date.day as i64);
    let y = if m <= 2 { date.year - 1 } else { date.year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let mp = (m + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + d - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// The civil date `days` days after 1970-01-01.
pub fn civil_from_days(days: i64) -> CivilDate {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    CivilDate { year, month, day }
}

/// The UTC date of an instant and the milliseconds since that date's midnight.
pub fn split_instant(at: UnixMillis) -> (CivilDate, i64) {
    (
        civil_from_days(at.div_euclid(DAY_MS)),
        at.rem_euclid(DAY_MS),
    )
}

/// The instant at `ms_of_day` milliseconds after midnight UTC of `date`.
pub fn join_instant(date: CivilDate, ms_of_day: i64) -> UnixMillis {
    days_from_civil(date)
        .saturating_mul(DAY_MS)
        .saturating_add(ms_of_day)
}

/// `at` moved by `months` calendar months (negative moves back), same time of day,
/// the day clamped to the target month's length.
pub fn add_months(at: UnixMillis, months: i64) -> UnixMillis {
    let (date, ms) = split_instant(at);
    let index = date.year * 12 + (date.month as i64 - 1) + months;
    let year = index.div_euclid(12);
    let month = (index.rem_euclid(12) + 1) as u32;
    let day = date.day.min(days_in_month(year, month));
    join_instant(CivilDate { year, month, day }, ms)
}

/// Which month of a subscription anchored at `anchor` the instant `at` falls in:
/// the largest `m >= 0` with `add_months(anchor, m) <= at` (0 when `at` is before
/// the anchor). Month `m` is `[add_months(anchor, m), add_months(anchor, m + 1))`.
pub fn month_index(anchor: UnixMillis, at: UnixMillis) -> u32 {
    if at <= anchor {
        return 0;
    }
    let (a, _) = split_instant(anchor);
    let (b, _) = split_instant(at);
    let guess = (b.year - a.year) * 12 + (b.month as i64 - a.month as i64);
    // Clamping makes the calendar-month difference off by at most one either way.
    let mut m = (guess - 1).max(0);
    while add_months(anchor, m + 1) <= at {
        m += 1;
    }
    while m > 0 && add_months(anchor, m) > at {
        m -= 1;
    }
    u32::try_from(m).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(year: i64, month: u32, day: u32, h: i64) -> UnixMillis {
        join_instant(CivilDate { year, month, day }, h * HOUR_MS)
    }

    #[test]
    fn civil_round_trips_known_dates() {
        assert_eq!(
            civil_from_days(0),
            CivilDate {
                year: 1970,
                month: 1,
                day: 1
            }
        );
        // 2000-03-01 is day 11017; 1969-12-31 is day -1.
        assert_eq!(
            days_from_civil(CivilDate {
                year: 2000,
                month: 3,
                day: 1
            }),
            11_017
        );
        assert_eq!(
            civil_from_days(-1),
            CivilDate {
                year: 1969,
                month: 12,
                day: 31
            }
        );
        // 2024-02-29 12:00 UTC = 1709208000000.
        assert_eq!(at(2024, 2, 29, 12), 1_709_208_000_000);
        for d in -800_000..800_000 {
            assert_eq!(days_from_civil(civil_from_days(d)), d);
        }
    }

    #[test]
    fn leap_years_follow_the_gregorian_rule() {
        assert!(is_leap_year(2024));
        assert!(is_leap_year(2000));
        assert!(!is_leap_year(1900));
        assert!(!is_leap_year(2023));
        assert_eq!(days_in_month(2024, 2), 29);
        assert_eq!(days_in_month(2100, 2), 28);
    }

    #[test]
    fn adding_months_clamps_the_day_and_keeps_the_time() {
        assert_eq!(add_months(at(2023, 1, 31, 9), 1), at(2023, 2, 28, 9));
        assert_eq!(add_months(at(2024, 1, 31, 9), 1), at(2024, 2, 29, 9));
        assert_eq!(add_months(at(2024, 1, 31, 9), 2), at(2024, 3, 31, 9));
        assert_eq!(add_months(at(2024, 3, 31, 0), -1), at(2024, 2, 29, 0));
        assert_eq!(add_months(at(2023, 12, 15, 23), 1), at(2024, 1, 15, 23));
        assert_eq!(add_months(at(2024, 2, 29, 1), 12), at(2025, 2, 28, 1));
        assert_eq!(add_months(at(2024, 2, 29, 1), 48), at(2028, 2, 29, 1));
        assert_eq!(add_months(at(1969, 12, 31, 5), 2), at(1970, 2, 28, 5));
    }

    #[test]
    fn month_index_finds_the_month_an_instant_is_in() {
        let anchor = at(2024, 1, 31, 10);
        assert_eq!(month_index(anchor, anchor), 0);
        assert_eq!(month_index(anchor, anchor - 1), 0);
        assert_eq!(month_index(anchor, at(2024, 2, 29, 9)), 0);
        assert_eq!(month_index(anchor, at(2024, 2, 29, 10)), 1);
        assert_eq!(month_index(anchor, at(2024, 3, 31, 9)), 1);
        assert_eq!(month_index(anchor, at(2024, 3, 31, 10)), 2);
        assert_eq!(month_index(anchor, at(2025, 1, 31, 10)), 12);
    }
}
