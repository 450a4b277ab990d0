//! How figures and times read in every message (DESIGN §5, "Form"): `,` as the thousands
//! separator, percentages with their sign, local times with the zone's abbreviation and its
//! UTC offset in ASCII, and the forecast of §5.5.

use chrono::{DateTime, Offset, Utc};
use chrono_tz::Tz;

use crate::allotment::{format_pct, pct_hundredths};

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// An instant as RFC 3339 UTC with milliseconds, as the ledger export and the ops messages
/// write it: `2025-10-07T23:59:59.123Z`.
pub fn format_ts(ts_ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ts_ms)
        .expect("timestamp in range")
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string()
}

/// `s` cut to at most `max` characters, the cut marked with `…` (a cell of a message: a path
/// or a request id from a log line can be up to a MiB).
pub fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        let head: String = s.chars().take(max.saturating_sub(1)).collect();
        format!("{head}…")
    }
}

/// `used` of `allotted` as a percentage with two decimals: `110.06%`.
/// An allotment of 0 (a legacy limit of 0) has no percentage: any use reads `n/a (allotment
/// 0)`, none `0.00%`.
pub fn percent(used: u64, allotted: u64) -> String {
    hundredths(used, allotted).map_or(NO_PERCENTAGE.to_string(), |h| format!("{}%", format_pct(h)))
}

/// [`percent`] without the sign, as a column headed `%` shows it (`usage`): `110.06`.
pub fn percent_figure(used: u64, allotted: u64) -> String {
    hundredths(used, allotted).map_or(NO_PERCENTAGE.to_string(), format_pct)
}

const NO_PERCENTAGE: &str = "n/a (allotment 0)";

/// `used` of `allotted` in hundredths of a percent; none for any use of an allotment of 0.
fn hundredths(used: u64, allotted: u64) -> Option<u64> {
    (allotted > 0 || used == 0).then(|| pct_hundredths(used, allotted))
}

fn at(tz: Tz, ts: i64) -> DateTime<Tz> {
    DateTime::<Utc>::from_timestamp_millis(ts)
        .unwrap_or_default()
        .with_timezone(&tz)
}

/// The zone part of a local time: `CDT (UTC-05:00)`, or `(UTC+05:45)` alone for a zone that
/// has no abbreviation (chrono-tz then gives the offset as its name).
fn zone(t: &DateTime<Tz>) -> String {
    let secs = t.offset().fix().local_minus_utc();
    let sign = if secs < 0 { '-' } else { '+' };
    let m = secs.unsigned_abs() / 60;
    let offset = format!("UTC{sign}{:02}:{:02}", m / 60, m % 60);
    let abbr = t.format("%Z").to_string();
    if abbr.starts_with(['+', '-']) || abbr.is_empty() {
        format!("({offset})")
    } else {
        format!("{abbr} ({offset})")
    }
}

/// A time of the org's day: `21:07 CDT (UTC-05:00)`.
pub fn clock(tz: Tz, ts: i64) -> String {
    let t = at(tz, ts);
    format!("{} {}", t.format("%H:%M"), zone(&t))
}

/// A time with its date: `2025-10-08 21:07 CDT (UTC-05:00)`.
pub fn date_clock(tz: Tz, ts: i64) -> String {
    let t = at(tz, ts);
    format!("{} {}", t.format("%Y-%m-%d %H:%M"), zone(&t))
}

/// When, at the pace of the hour before `t`, the org reaches 100 % (DESIGN §5.5): `None`
/// when the pace is 0 or that time is not before `reset` (the start of the next local day).
/// `used` and `last_hour` are the units at `t` and in (t − 1 h, t]; the time is rounded down
/// to the minute.
pub fn forecast(t: i64, used: u64, last_hour: u64, allotted: u64, reset: i64) -> Option<i64> {
    if last_hour == 0 {
        return None;
    }
    let left = u128::from(allotted.saturating_sub(used));
    // ms to go = left / (last_hour per 3,600,000 ms), in integers.
    let ms = left * 3_600_000 / u128::from(last_hour);
    let eta = i128::from(t) + i128::try_from(ms).unwrap_or(i128::MAX);
    let eta = eta - eta.rem_euclid(60_000);
    if eta >= i128::from(reset) {
        return None;
    }
    i64::try_from(eta).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn thousands_and_percent() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(176_223), "176,223");
        assert_eq!(thousands(1_234_567_890), "1,234,567,890");
        assert_eq!(percent(5_503, 5_000), "110.06%");
        assert_eq!(percent(0, 5_000), "0.00%");
        assert_eq!(percent(0, 0), "0.00%");
        assert_eq!(percent(7, 0), "n/a (allotment 0)");
    }

    #[test]
    fn local_times_carry_the_zone_and_its_offset() {
        let chicago: Tz = "America/Chicago".parse().unwrap();
        let havana: Tz = "America/Havana".parse().unwrap();
        let kathmandu: Tz = "Asia/Kathmandu".parse().unwrap();
        let ts = Utc
            .with_ymd_and_hms(2025, 10, 9, 2, 7, 30)
            .unwrap()
            .timestamp_millis();
        assert_eq!(clock(chicago, ts), "21:07 CDT (UTC-05:00)");
        // Both say CDT/CST at times; the offset tells them apart.
        assert_eq!(clock(havana, ts), "22:07 CDT (UTC-04:00)");
        assert_eq!(date_clock(kathmandu, ts), "2025-10-09 07:52 (UTC+05:45)");
    }

    #[test]
    fn forecast_at_the_pace_of_the_last_hour() {
        let t = 1_000 * 3_600_000;
        let reset = t + 10 * 3_600_000;
        // 1,000 left at 500 per hour: two hours on.
        assert_eq!(forecast(t, 4_000, 500, 5_000, reset), Some(t + 7_200_000));
        // Rounded down to the minute: 1 left at 7 per hour is 8 min 34 s.
        assert_eq!(forecast(t, 4_999, 7, 5_000, reset), Some(t + 8 * 60_000));
        // No pace, or not before the reset.
        assert_eq!(forecast(t, 4_000, 0, 5_000, reset), None);
        assert_eq!(forecast(t, 4_000, 100, 5_000, reset), None);
        // Already at 100 %: now.
        assert_eq!(forecast(t, 5_000, 100, 5_000, reset), Some(t));
    }
}
