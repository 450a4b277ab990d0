//! Local days of an organization and the instants at which they begin.
//!
//! Day D of an org spans `[start(D), start(D+1))`, where `start(D)` is the earliest instant
//! whose local date in the org's zone is D (DESIGN §3.5). Where local midnight is skipped the
//! day starts at the first instant that exists; where it repeats, at its first occurrence.
//! An instant belongs to the day whose span contains it, which is not always the date a wall
//! clock shows: in zones that fall back across midnight (Africa/Cairo, Asia/Beirut) the last
//! hour of a day may read as the previous date.
//!
//! Pure code: no clock, no IO.

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveTime, Offset, TimeZone, Utc,
};
use chrono_tz::Tz;

/// One organization's local day: the unit the ledger keeps a row for, a recompute fails
/// alone on, and a close and its summary are once per. Shown as `<org_id>:<date>`, the form
/// problem targets and outbox keys use.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrgDay {
    pub org_id: String,
    pub date: NaiveDate,
}

impl OrgDay {
    pub fn new(org_id: impl Into<String>, date: NaiveDate) -> OrgDay {
        OrgDay {
            org_id: org_id.into(),
            date,
        }
    }
}

impl std::fmt::Display for OrgDay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.org_id, self.date)
    }
}

/// When day `date` of a zone closes (DESIGN §3.5): the next day's start plus the grace
/// period. Past the calendar's end, or with a grace too large to add, a day never closes.
pub fn close_time(tz: Tz, date: NaiveDate, grace: std::time::Duration) -> DateTime<Utc> {
    let Some(next) = date.succ_opt() else {
        return DateTime::<Utc>::MAX_UTC;
    };
    let grace = Duration::from_std(grace).unwrap_or(Duration::MAX);
    day_start(tz, next)
        .checked_add_signed(grace)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The earliest instant whose local date in `tz` is `date`.
///
/// Total over chrono's whole date range: for a date whose start cannot be shown as a UTC
/// instant (within a day of chrono's limits) it gives the nearest representable instant.
/// Ingest only lets in calls of 2000–2099, so such dates never come from data.
pub fn day_start(tz: Tz, date: NaiveDate) -> DateTime<Utc> {
    let midnight = date.and_time(NaiveTime::MIN);
    // Where midnight falls into a gap, the first local minute that exists is the first
    // instant of the day: every transition since 1970 happens on a whole minute, and none
    // skips more than a day.
    for minutes in 0..=(26 * 60) {
        let Some(local) = midnight.checked_add_signed(Duration::minutes(minutes)) else {
            break;
        };
        match tz.from_local_datetime(&local) {
            LocalResult::Single(t) => return t.with_timezone(&Utc),
            LocalResult::Ambiguous(a, b) => {
                return a.with_timezone(&Utc).min(b.with_timezone(&Utc))
            }
            LocalResult::None => continue,
        }
    }
    if date.year() > 0 {
        DateTime::<Utc>::MAX_UTC
    } else {
        DateTime::<Utc>::MIN_UTC
    }
}

/// The half-open UTC span `[start, end)` of local day `date` (the last representable date
/// ends at chrono's last instant).
pub fn day_span(tz: Tz, date: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
    let end = match date.succ_opt() {
        Some(next) => day_start(tz, next),
        None => DateTime::<Utc>::MAX_UTC,
    };
    (day_start(tz, date), end)
}

/// The local day an instant belongs to (within a day of chrono's limits, where that day may
/// not be representable, the nearest date chrono has).
pub fn local_day(tz: Tz, at: DateTime<Utc>) -> NaiveDate {
    // The wall date, computed without chrono's panicking conversion near its limits.
    let utc = at.naive_utc();
    let offset = tz.offset_from_utc_datetime(&utc).fix();
    let mut date = utc
        .checked_add_offset(offset)
        .map_or(utc.date(), |local| local.date());
    // The wall date can lag the day span by one where the clock falls back across midnight.
    while let Some(next) = date.succ_opt() {
        if at >= day_start(tz, next) {
            date = next;
        } else {
            break;
        }
    }
    while at < day_start(tz, date) {
        match date.pred_opt() {
            Some(prev) => date = prev,
            None => break,
        }
    }
    date
}

/// Maps instants (epoch milliseconds) to local days, remembering the last span per caller so
/// that a run of events from one day costs one comparison each.
#[derive(Debug, Clone)]
pub struct DayCursor {
    tz: Tz,
    span: Option<(i64, i64, NaiveDate)>,
}

impl DayCursor {
    pub fn new(tz: Tz) -> DayCursor {
        DayCursor { tz, span: None }
    }

    /// The local day of the instant `ts_ms` (epoch milliseconds, UTC); `None` for an instant
    /// chrono cannot show as a date (beyond ±262,000 years).
    pub fn day_of(&mut self, ts_ms: i64) -> Option<NaiveDate> {
        if let Some((start, end, date)) = self.span {
            if ts_ms >= start && ts_ms < end {
                return Some(date);
            }
        }
        let at = DateTime::<Utc>::from_timestamp_millis(ts_ms)?;
        let date = local_day(self.tz, at);
        let (start, end) = day_span(self.tz, date);
        self.span = Some((start.timestamp_millis(), end.timestamp_millis(), date));
        Some(date)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// Checks the span of one local day: its UTC start, its UTC end and its length.
    fn check(zone: &str, date: &str, start: &str, end: &str, hours: f64) {
        let tz: Tz = zone.parse().unwrap();
        let (s, e) = day_span(tz, d(date));
        assert_eq!(s, utc(start), "{zone} {date} start");
        assert_eq!(e, utc(end), "{zone} {date} end");
        assert_eq!(
            (e - s).num_minutes() as f64 / 60.0,
            hours,
            "{zone} {date} length"
        );
        // Every instant of the span belongs to the day, and the neighbours do not.
        let mut cursor = DayCursor::new(tz);
        assert_eq!(local_day(tz, s), d(date));
        assert_eq!(local_day(tz, e - Duration::milliseconds(1)), d(date));
        assert_eq!(
            local_day(tz, s - Duration::milliseconds(1)),
            d(date).pred_opt().unwrap()
        );
        assert_eq!(local_day(tz, e), d(date).succ_opt().unwrap());
        assert_eq!(cursor.day_of(s.timestamp_millis()).unwrap(), d(date));
        assert_eq!(cursor.day_of(e.timestamp_millis() - 1).unwrap(), d(date));
        assert_eq!(
            cursor.day_of(e.timestamp_millis()).unwrap(),
            d(date).succ_opt().unwrap()
        );
    }

    #[test]
    fn ordinary_days() {
        check(
            "UTC",
            "2025-10-07",
            "2025-10-07T00:00:00Z",
            "2025-10-08T00:00:00Z",
            24.0,
        );
        check(
            "Asia/Kolkata",
            "2025-10-08",
            "2025-10-07T18:30:00Z",
            "2025-10-08T18:30:00Z",
            24.0,
        );
    }

    #[test]
    fn havana_repeated_midnight_2025_11_02() {
        // Clocks fall back from 01:00 CDT to 00:00 CST: midnight happens twice, the day
        // starts at its first occurrence and lasts 25 hours.
        check(
            "America/Havana",
            "2025-11-02",
            "2025-11-02T04:00:00Z",
            "2025-11-03T05:00:00Z",
            25.0,
        );
        check(
            "America/Havana",
            "2025-11-01",
            "2025-11-01T04:00:00Z",
            "2025-11-02T04:00:00Z",
            24.0,
        );
    }

    #[test]
    fn havana_skipped_midnight_2026_03_08() {
        // Clocks spring forward from 00:00 CST to 01:00 CDT: the day starts at 01:00 local.
        check(
            "America/Havana",
            "2026-03-08",
            "2026-03-08T05:00:00Z",
            "2026-03-09T04:00:00Z",
            23.0,
        );
        check(
            "America/Havana",
            "2026-03-07",
            "2026-03-07T05:00:00Z",
            "2026-03-08T05:00:00Z",
            24.0,
        );
    }

    #[test]
    fn beirut_falls_back_across_midnight_2025_10_26() {
        // At 00:00 EEST on the 26th the clock goes back to 23:00 on the 25th: the 25th lasts
        // 25 hours and its last hour reads as the 25th again.
        check(
            "Asia/Beirut",
            "2025-10-25",
            "2025-10-24T21:00:00Z",
            "2025-10-25T22:00:00Z",
            25.0,
        );
        check(
            "Asia/Beirut",
            "2025-10-26",
            "2025-10-25T22:00:00Z",
            "2025-10-26T22:00:00Z",
            24.0,
        );
    }

    #[test]
    fn beirut_skipped_midnight_2026_03_29() {
        check(
            "Asia/Beirut",
            "2026-03-29",
            "2026-03-28T22:00:00Z",
            "2026-03-29T21:00:00Z",
            23.0,
        );
    }

    #[test]
    fn cairo_falls_back_at_midnight_2025_10_30() {
        // Egypt ends summer time at 24:00 on the last Thursday of October.
        check(
            "Africa/Cairo",
            "2025-10-30",
            "2025-10-29T21:00:00Z",
            "2025-10-30T22:00:00Z",
            25.0,
        );
        check(
            "Africa/Cairo",
            "2025-10-31",
            "2025-10-30T22:00:00Z",
            "2025-10-31T22:00:00Z",
            24.0,
        );
    }

    #[test]
    fn azores_repeats_midnight_2025_10_26() {
        // Summer time (UTC+0) ends at 01:00 local: 00:00–01:00 happens twice.
        check(
            "Atlantic/Azores",
            "2025-10-26",
            "2025-10-26T00:00:00Z",
            "2025-10-27T01:00:00Z",
            25.0,
        );
    }

    #[test]
    fn thirty_and_forty_five_minute_zones() {
        check(
            "Asia/Kathmandu",
            "2025-10-07",
            "2025-10-06T18:15:00Z",
            "2025-10-07T18:15:00Z",
            24.0,
        );
        // Chatham (UTC+12:45 / +13:45) starts summer time on 2025-09-28 at 02:45 local.
        check(
            "Pacific/Chatham",
            "2025-09-28",
            "2025-09-27T11:15:00Z",
            "2025-09-28T10:15:00Z",
            23.0,
        );
        // Lord Howe moves by half an hour: 2025-10-05 lasts 23.5 hours.
        check(
            "Australia/Lord_Howe",
            "2025-10-05",
            "2025-10-04T13:30:00Z",
            "2025-10-05T13:00:00Z",
            23.5,
        );
        // St John's falls back at 02:00 local on 2025-11-02: 25 hours, starting at 02:30 UTC.
        check(
            "America/St_Johns",
            "2025-11-02",
            "2025-11-02T02:30:00Z",
            "2025-11-03T03:30:00Z",
            25.0,
        );
    }

    #[test]
    fn cursor_follows_events_across_days_and_back() {
        let tz: Tz = "Asia/Beirut".parse().unwrap();
        let mut cursor = DayCursor::new(tz);
        let late_hour = utc("2025-10-25T21:30:00Z"); // reads 23:30 on the 25th, second time
        assert_eq!(
            cursor.day_of(late_hour.timestamp_millis()).unwrap(),
            d("2025-10-25")
        );
        let next = utc("2025-10-25T22:00:00Z");
        assert_eq!(
            cursor.day_of(next.timestamp_millis()).unwrap(),
            d("2025-10-26")
        );
        let earlier = utc("2025-10-20T10:00:00Z");
        assert_eq!(
            cursor.day_of(earlier.timestamp_millis()).unwrap(),
            d("2025-10-20")
        );
    }
    /// Zones with a fall-back or skip across midnight, large offsets both ways, and UTC.
    const ZONES: [&str; 8] = [
        "UTC",
        "Asia/Beirut",
        "America/Havana",
        "Pacific/Kiritimati",
        "Etc/GMT+12",
        "Pacific/Chatham",
        "Africa/Cairo",
        "America/St_Johns",
    ];

    #[test]
    fn the_edges_of_chrono_s_range_do_not_panic() {
        for zone in ZONES {
            let tz: Tz = zone.parse().unwrap();
            for at in [DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC] {
                // An instant whose local date chrono cannot hold gets the nearest date.
                let day = local_day(tz, at);
                let (start, end) = day_span(tz, day);
                assert!(start <= end, "{zone} {at}: {day} {start} {end}");
            }
            for date in [NaiveDate::MIN, NaiveDate::MAX] {
                let (start, end) = day_span(tz, date);
                assert!(start <= end, "{zone} {date}");
            }
            let mut cursor = DayCursor::new(tz);
            for ms in [i64::MIN, i64::MAX] {
                assert_eq!(cursor.day_of(ms), None, "{zone} {ms}");
            }
            let first = DateTime::<Utc>::MIN_UTC.timestamp_millis();
            let last = DateTime::<Utc>::MAX_UTC.timestamp_millis();
            // The middle ones made the local day panic (the year 262142, in a zone east of UTC).
            let edges = [
                first,
                first + 1,
                8_210_266_876_799_999,
                -8_210_266_876_799_999,
                last - 1,
                last,
            ];
            for ms in edges {
                assert!(cursor.day_of(ms).is_some(), "{zone} {ms}");
            }
        }
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Any i64 instant in any zone: no panic; an instant chrono can show lies in the
            /// span of its day.
            #[test]
            fn any_instant_has_a_day_or_none(ms in prop_oneof![
                any::<i64>(),
                DateTime::<Utc>::MIN_UTC.timestamp_millis()..DateTime::<Utc>::MAX_UTC.timestamp_millis(),
                // 1900–2200, where every zone's rules apply.
                -2_208_988_800_000i64..7_258_118_400_000,
            ], zone in 0..ZONES.len()) {
                let tz: Tz = ZONES[zone].parse().unwrap();
                let day = DayCursor::new(tz).day_of(ms);
                prop_assert_eq!(day.is_some(), DateTime::<Utc>::from_timestamp_millis(ms).is_some());
                if let Some(day) = day {
                    let (start, end) = day_span(tz, day);
                    prop_assert!(start.timestamp_millis() <= ms && ms <= end.timestamp_millis());
                    if (-2_208_988_800_000..7_258_118_400_000).contains(&ms) {
                        prop_assert!(ms < end.timestamp_millis());
                        prop_assert_eq!(local_day(tz, start), day);
                    }
                }
            }

            /// Any date chrono has, in any zone: a span that does not run backwards.
            #[test]
            fn any_date_has_a_span(days in any::<i32>(), zone in 0..ZONES.len()) {
                let tz: Tz = ZONES[zone].parse().unwrap();
                if let Some(date) = NaiveDate::from_num_days_from_ce_opt(days) {
                    let (start, end) = day_span(tz, date);
                    prop_assert!(start <= end);
                }
            }
        }
    }
}
