//! UTC timestamps as `YYYY-MM-DDTHH:MM:SSZ`, computed by hand from milliseconds since the Unix
//! epoch (no chrono, no time zone database, never reads a clock).
//!
//! The date is Howard Hinnant's `civil_from_days`: exact for every day of the proleptic
//! Gregorian calendar, with no loops and no tables.

/// Appends `timestamp_ms` as `YYYY-MM-DDTHH:MM:SSZ` (milliseconds truncated). Years past 9999
/// print with more digits; the format stays parseable left to right.
pub fn format_utc(timestamp_ms: u64, out: &mut Vec<u8>) {
    let secs = timestamp_ms / 1000;
    let days = secs / 86_400;
    let secs_of_day = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    push_decimal(out, year, 4);
    out.push(b'-');
    push_decimal(out, month, 2);
    out.push(b'-');
    push_decimal(out, day, 2);
    out.push(b'T');
    push_decimal(out, secs_of_day / 3600, 2);
    out.push(b':');
    push_decimal(out, secs_of_day / 60 % 60, 2);
    out.push(b':');
    push_decimal(out, secs_of_day % 60, 2);
    out.push(b'Z');
}

/// (year, month 1..=12, day 1..=31) of the day `days` after 1970-01-01.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01 so leap days fall at the end of a year; then count 400-year
    // eras (146097 days each), years of the era, and days of the March-based year.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097; // [0, 146096]
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365; // [0, 399]
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100); // [0, 365]
    let month_from_march = (5 * day_of_year + 2) / 153; // [0, 11]
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1; // [1, 31]
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    debug_assert!((1..=12).contains(&month) && (1..=31).contains(&day));
    (year, month, day)
}

/// Appends `value` in decimal, left-padded with zeros to at least `width` digits.
pub(crate) fn push_decimal(out: &mut Vec<u8>, value: u64, width: usize) {
    let mut digits = [0u8; 20];
    let mut n = value;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for _ in len..width {
        out.push(b'0');
    }
    out.extend(digits[..len].iter().rev());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(timestamp_ms: u64) -> String {
        let mut out = Vec::new();
        format_utc(timestamp_ms, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn known_values() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(999), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_000), "1970-01-01T00:00:01Z");
        assert_eq!(utc(1_700_000_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(utc(951_782_400_000), "2000-02-29T00:00:00Z"); // leap day of a 400-year
        assert_eq!(utc(951_868_799_000), "2000-02-29T23:59:59Z");
        assert_eq!(utc(951_868_800_000), "2000-03-01T00:00:00Z");
        assert_eq!(utc(4_107_542_400_000), "2100-03-01T00:00:00Z"); // 2100 is not leap
        assert_eq!(utc(4_107_542_399_000), "2100-02-28T23:59:59Z");
        assert_eq!(utc(1_709_164_800_000), "2024-02-29T00:00:00Z");
        assert_eq!(utc(1_735_689_599_000), "2024-12-31T23:59:59Z");
        assert_eq!(utc(2_147_483_647_000), "2038-01-19T03:14:07Z");
        assert_eq!(utc(253_402_300_799_000), "9999-12-31T23:59:59Z");
        assert_eq!(utc(253_402_300_800_000), "10000-01-01T00:00:00Z");
        // Ends with a 4-digit year in the far future; the point is: no panic, no overflow.
        assert!(utc(u64::MAX).ends_with('Z'));
    }

    #[test]
    fn every_day_follows_the_previous() {
        // Walk 1970..2500 day by day against a naive calendar.
        let (mut year, mut month, mut day) = (1970u64, 1u64, 1u64);
        let leap =
            |y: u64| (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
        for days in 0..(530 * 366) {
            assert_eq!(civil_from_days(days), (year, month, day), "day {days}");
            let month_days = match month {
                2 if leap(year) => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            day += 1;
            if day > month_days {
                day = 1;
                month += 1;
                if month > 12 {
                    month = 1;
                    year += 1;
                }
            }
        }
    }
}
