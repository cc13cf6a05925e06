//! How console values are written: timestamps as PostgreSQL prints a UTC timestamptz,
//! latencies in milliseconds, flags as yes/no.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `2026-11-25 20:12:35+00` (UTC, whole seconds).
pub fn timestamp(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}+00",
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

/// The wall-clock time `ago` before now.
pub fn since(ago: Duration) -> String {
    timestamp(SystemTime::now().checked_sub(ago).unwrap_or(UNIX_EPOCH))
}

/// Microseconds as milliseconds with three decimals.
pub fn ms(micros: u64) -> String {
    format!("{}.{:03}", micros / 1000, micros % 1000)
}

/// `yes` / `no`.
pub fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_match_known_dates() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01 00:00:00+00");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400 + 3661); // 2000-02-29 01:01:01
        assert_eq!(timestamp(t), "2000-02-29 01:01:01+00");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_637_555); // 2026-11-25 20:12:35
        assert_eq!(timestamp(t), "2026-11-25 20:12:35+00");
    }

    #[test]
    fn milliseconds_keep_three_decimals() {
        assert_eq!(ms(0), "0.000");
        assert_eq!(ms(1_234_567), "1234.567");
        assert_eq!(ms(5), "0.005");
    }
}
