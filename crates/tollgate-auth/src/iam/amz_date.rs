//! SigV4's timestamps: `YYYYMMDD'T'HHMMSS'Z'` (X-Amz-Date) and `YYYYMMDD` (credential scope).
//!
//! Parsed by hand into Unix seconds; a date crate would be a large dependency for two fixed
//! formats. Years are limited to 1970..=9999 so every accepted time is a valid `SystemTime`
//! after the epoch that `aws-sigv4` can format without panicking.

const SECS_PER_DAY: i64 = 86_400;

/// Parses `YYYYMMDDTHHMMSSZ` (UTC) into Unix seconds, or `None` if it is not a real time.
pub(crate) fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b.get(8) != Some(&b'T') || b.get(15) != Some(&b'Z') {
        return None;
    }
    let day = parse_date(s.get(..8)?)?;
    let hour = digits(b.get(9..11)?)?;
    let minute = digits(b.get(11..13)?)?;
    let second = digits(b.get(13..15)?)?;
    if hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    Some(day + hour * 3600 + minute * 60 + second)
}

/// Parses `YYYYMMDD` (UTC) into the Unix seconds of that day's midnight.
pub(crate) fn parse_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 8 {
        return None;
    }
    let year = digits(b.get(..4)?)?;
    let month = digits(b.get(4..6)?)?;
    let day = digits(b.get(6..8)?)?;
    if !(1970..=9999).contains(&year) || !(1..=12).contains(&month) {
        return None;
    }
    if day < 1 || day > days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(year, month, day) * SECS_PER_DAY)
}

/// Reads ASCII decimal digits (and only digits) as a number.
fn digits(b: &[u8]) -> Option<i64> {
    if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(
        b.iter()
            .fold(0i64, |n, d| n * 10 + i64::from(d.wrapping_sub(b'0'))),
    )
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_published_vectors_times() {
        assert_eq!(parse_amz_date("20240826T220000Z"), Some(1_724_709_600));
        assert_eq!(parse_amz_date("20250227T210000Z"), Some(1_740_690_000));
        assert_eq!(parse_amz_date("20161107T173933Z"), Some(1_478_540_373));
        assert_eq!(parse_amz_date("19700101T000000Z"), Some(0));
        assert_eq!(parse_amz_date("99991231T235959Z"), Some(253_402_300_799));
    }

    #[test]
    fn dates_are_midnight_and_know_leap_years() {
        assert_eq!(parse_date("20240826"), Some(1_724_630_400));
        assert_eq!(parse_date("20240229"), Some(1_709_164_800));
        assert_eq!(parse_date("20000229"), Some(951_782_400));
        assert_eq!(parse_date("20230229"), None);
        assert_eq!(parse_date("19000229"), None);
    }

    #[test]
    fn rejects_anything_not_a_real_utc_time() {
        for bad in [
            "",
            "20240826T220000",
            "20240826T220000z",
            "20240826t220000Z",
            "20240826 220000Z",
            "2024-08-26T22:00:00Z",
            "20241326T220000Z",
            "20240026T220000Z",
            "20240832T220000Z",
            "20240431T220000Z",
            "20240826T240000Z",
            "20240826T226000Z",
            "20240826T220060Z",
            "19691231T235959Z",
            "+0240826T220000Z",
            "2024082６T22000Z",
            "20240826T220000ZZ",
        ] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
        for bad in ["2024082", "202408261", "2024-826", "00000101", "+2024082"] {
            assert_eq!(parse_date(bad), None, "{bad}");
        }
    }
}
