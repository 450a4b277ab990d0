//! The org-day messages on odd days (DST, a 30-minute shift) and at their size guards.

use super::*;
use crate::events::DaySpan;
use chrono::NaiveDate;

fn row(date: &str) -> LedgerRow {
    LedgerRow {
        org_id: "7".into(),
        local_date: date.parse().unwrap(),
        terms: crate::allotment::DayTerms {
            model: crate::allotment::Model::Credits,
            reason: "signed up after the migration".into(),
            edition: "free".into(),
            agents: 0,
            light_agents: 0,
            base: 5_000,
            variable: 0,
            additional: 0,
            additional_excess: 0,
            legacy_limit: 0,
            allotted: 5_000,
            concurrency: 25,
        },
        calls: 0,
        billable_calls: 0,
        credits: 0,
        used: 0,
        exceeded_at: None,
        unpriced_calls: 0,
        revision: 0,
    }
}

/// The view of `r` with `details` on a day of 24 hours from `span`'s start, in `tz`.
fn view_of<'a>(
    tz: Tz,
    r: &'a LedgerRow,
    crossings: &'a [Crossing],
    details: &'a DayDetails,
    span: DaySpan,
) -> OrgDayView<'a> {
    OrgDayView {
        org_name: "Acme",
        tz,
        row: r,
        crossings,
        details,
        start_ms: span.start_ms,
        reset_ms: span.start_ms + 86_400_000,
    }
}

/// Renders the summary of `date` in `tz` with `calls` credits in every hour bucket.
fn summary_of(tz: Tz, date: &str, per_hour: u64) -> (Rendered, DaySpan, i64) {
    let day: NaiveDate = date.parse().unwrap();
    let span = DaySpan::new(tz, day, false);
    let (_, reset) = crate::localday::day_span(tz, day);
    let mut details = DayDetails::empty(span, 0);
    details.hourly.iter_mut().for_each(|h| *h = per_hour);
    let mut r = row(date);
    r.used = per_hour * details.hourly.len() as u64;
    let v = OrgDayView {
        org_name: "Acme",
        tz,
        row: &r,
        crossings: &[],
        details: &details,
        start_ms: span.start_ms,
        reset_ms: reset.timestamp_millis(),
    };
    (summary(&v, 0, 25), span, reset.timestamp_millis())
}

/// On a fall-back day the hour that repeats reads apart, in the text and on the chart.
#[test]
fn a_25_hour_day_labels_its_repeated_hour_with_zone_and_offset() {
    let (r, _, _) = summary_of(chrono_tz::America::Chicago, "2025-11-02", 10);
    assert!(r.text.contains("01:00 CDT (UTC-05:00)"), "{}", r.text);
    assert!(r.text.contains("01:00 CST (UTC-06:00)"), "{}", r.text);
    let chart = r.chart.unwrap();
    assert_eq!(chart.hour_labels.len(), 25);
    assert_eq!(&chart.hour_labels[..4], ["00", "01 CDT", "01 CST", "02"]);
    assert_eq!(chart.zone, "CDT (UTC-05:00), then CST (UTC-06:00)");
    // A steady day keeps the short forms.
    let (r, _, _) = summary_of(chrono_tz::America::Chicago, "2025-11-03", 10);
    assert!(r.text.contains("  01:00  "), "{}", r.text);
    assert!(!r.text.contains("01:00 CST"), "{}", r.text);
    assert_eq!(r.chart.unwrap().zone, "CST (UTC-06:00)");
}

/// Lord Howe moves its clocks by 30 minutes: the 23.5-hour day is charted to its reset,
/// not past it, and its hours after the change start at half past.
#[test]
fn a_23_and_a_half_hour_day_is_charted_to_its_reset() {
    let (r, span, reset) = summary_of(chrono_tz::Australia::Lord_Howe, "2025-10-05", 10);
    let chart = r.chart.unwrap();
    assert_eq!(reset - span.start_ms, 47 * 1_800_000);
    assert_eq!(chart.per_5min.len() as i64 * FINE_MS, reset - span.start_ms);
    assert_eq!(chart.hour_labels.len(), 24);
    assert_eq!(&chart.hour_labels[1..4], ["01", "02:30", "03:30"]);
}

/// The guard fits: paths cut to 40 characters, then the endpoint lists left out with a
/// count and the command that lists every call.
#[test]
fn the_smaller_fits_cut_then_leave_out_the_endpoint_lists() {
    let tz = chrono_tz::Europe::Berlin;
    let day: NaiveDate = "2025-10-08".parse().unwrap();
    let span = DaySpan::new(tz, day, false);
    let mut details = DayDetails::empty(span, 0);
    let path = format!("GET /api/v1/{}", "x".repeat(500));
    details.top_endpoints = vec![(path.clone(), 3, 150)];
    details.unpriced = vec![(path.clone(), 2), ("GET /api/v2/y".into(), 1)];
    let r = row("2025-10-08");
    let v = view_of(tz, &r, &[], &details, span);
    let full = summary_fit(&v, 0, 25, FITS[0]);
    let cut40 = summary_fit(&v, 0, 25, FITS[1]);
    let none = summary_fit(&v, 0, 25, FITS[2]);
    let shown = |r: &Rendered| {
        r.text
            .lines()
            .filter_map(|l| l.trim().split("  ").next())
            .filter(|c| c.starts_with("GET /api/v1/x"))
            .map(|c| c.chars().count())
            .collect::<Vec<_>>()
    };
    assert_eq!(shown(&full), [160, 160], "{}", full.text);
    assert_eq!(shown(&cut40), [40, 40], "{}", cut40.text);
    assert!(shown(&none).is_empty(), "{}", none.text);
    assert!(none.text.contains("1 endpoints left out to keep this message small; `creditd explain --org 7 --date 2025-10-08` lists every call."), "{}", none.text);
    assert!(none.text.contains("2 endpoints left out"), "{}", none.text);
    assert!(none.html.len() < cut40.html.len() && cut40.html.len() < full.html.len());
}

/// An alert mailed late the same day speaks of a forecast time that has passed in the past
/// tense; one mailed before it, in the present.
#[test]
fn a_late_alert_puts_a_passed_forecast_in_the_past_tense() {
    let tz = chrono_tz::UTC;
    let day: NaiveDate = "2025-10-08".parse().unwrap();
    let span = DaySpan::new(tz, day, false);
    let mut details = DayDetails::empty(span, 1);
    // 80% at 10:00 with 1,000 credits in the hour before: 100% due at 11:00.
    details.marks[0] = AtMark {
        used: 4_000,
        last_hour: 1_000,
    };
    let mut r = row("2025-10-08");
    r.used = 4_500;
    let ten = span.start_ms + 10 * 3_600_000;
    let crossing = Crossing {
        threshold: 80,
        ts: ten,
        request_id: "r1".into(),
    };
    let v = view_of(tz, &r, std::slice::from_ref(&crossing), &details, span);
    let at = |ms: i64| DateTime::<Utc>::from_timestamp_millis(ms).unwrap();
    let early = alert(&v, &crossing, &[], at(ten + 60_000));
    assert!(
        early.text.contains("the org reaches 100% at about 11:00"),
        "{}",
        early.text
    );
    let late = alert(&v, &crossing, &[], at(ten + 2 * 3_600_000));
    assert!(
        late.text.contains("100% was due at about 11:00"),
        "{}",
        late.text
    );
}

/// A legacy day ranks its endpoints by billable calls and never shows credits for them.
#[test]
fn a_legacy_day_ranks_endpoints_by_billable_calls() {
    let tz = chrono_tz::UTC;
    let day: NaiveDate = "2025-10-08".parse().unwrap();
    let span = DaySpan::new(tz, day, true);
    let mut details = DayDetails::empty(span, 0);
    details.top_endpoints = vec![("GET /api/v1/tickets".into(), 12, 10)];
    let mut r = row("2025-10-08");
    r.terms.model = crate::allotment::Model::Legacy;
    r.terms.legacy_limit = 360;
    r.terms.allotted = 360;
    r.used = 10;
    let v = view_of(tz, &r, &[], &details, span);
    let s = summary(&v, 0, 25);
    assert!(
        s.text.contains("Top endpoints by billable calls"),
        "{}",
        s.text
    );
    assert!(!s.html.contains(">Credits</th>"), "{}", s.html);
    assert!(s.html.contains(">Billable</th>"), "{}", s.html);
}
