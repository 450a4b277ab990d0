//! The org-facing messages of one org-day (DESIGN §5.1, §5.2, §5.5): the alert of the
//! crossings one run found (near-limit or overage, the lower ones it covers), and the daily
//! summary at close. Every breakdown adds up under the day's model; times are the org's.

use chrono::{DateTime, Offset, Utc};
use chrono_tz::Tz;

use super::format::{clock, cut, date_clock, forecast, percent, thousands};
use super::layout::{Align, Doc, Tone};
use super::{one_line, Chart, Rendered, MAX_HTML};
use crate::allotment::Model;
use crate::events::{AtMark, DayDetails, FINE_MS};
use crate::store::{Crossing, LedgerRow};

/// One org-day, as the org-facing messages see it.
pub struct OrgDayView<'a> {
    pub org_name: &'a str,
    pub tz: Tz,
    pub row: &'a LedgerRow,
    pub crossings: &'a [Crossing],
    /// The day's details; for an alert, `details.marks` holds the figures at the alert's
    /// crossings, in the order given to [`alert`].
    pub details: &'a DayDetails,
    /// The start of the local day and of the next one (ms since the epoch).
    pub start_ms: i64,
    pub reset_ms: i64,
}

fn legacy(r: &LedgerRow) -> bool {
    r.model == Model::Legacy
}

fn unit(r: &LedgerRow) -> &'static str {
    r.model.unit()
}

/// `n` with its unit: `5,503 credits`.
fn units(r: &LedgerRow, n: u64) -> String {
    format!("{} {}", thousands(n), unit(r))
}

fn threshold_name(t: u64) -> String {
    if t == 100 {
        "over 100%".to_string()
    } else {
        format!("{t}%")
    }
}

fn weekday_date(v: &OrgDayView<'_>) -> String {
    DateTime::<Utc>::from_timestamp_millis(v.start_ms)
        .unwrap_or_default()
        .with_timezone(&v.tz)
        .format("%a %Y-%m-%d")
        .to_string()
}

/// The allotment of the day as rows that add up: legacy in calls, credits as base + variable
/// + additional, grandfathered with both capacities and which one applies.
fn breakdown(r: &LedgerRow) -> Vec<(String, String)> {
    let mut rows = vec![
        ("Org ID".to_string(), r.org_id.clone()),
        (
            "Edition".to_string(),
            format!("{} ({} agents)", r.edition, thousands(r.agents)),
        ),
    ];
    let variable = format!("{} ({} agents)", thousands(r.variable), thousands(r.agents));
    match r.model {
        Model::Legacy => {
            rows.push(("Model".into(), "legacy per-call limit".into()));
            rows.push(("Why".into(), r.reason.clone()));
            rows.push(("=Daily limit".into(), units(r, r.allotted)));
        }
        Model::Grandfathered => {
            let credits = r.base.saturating_add(r.variable);
            let applies = if r.legacy_limit >= credits {
                "legacy limit"
            } else {
                "base + variable"
            };
            rows.push(("Model".into(), "grandfathered".into()));
            rows.push(("Why".into(), r.reason.clone()));
            rows.push(("Legacy limit".into(), thousands(r.legacy_limit)));
            rows.push(("Base credits".into(), thousands(r.base)));
            rows.push(("Variable credits".into(), variable));
            rows.push((
                "Applies".into(),
                format!(
                    "the higher: {applies}, {}",
                    thousands(r.legacy_limit.max(credits))
                ),
            ));
            rows.push(("Additional credits".into(), thousands(r.additional)));
            rows.push(("=Allotted".into(), units(r, r.allotted)));
        }
        Model::Credits => {
            rows.push(("Model".into(), "credits".into()));
            rows.push(("Why".into(), r.reason.clone()));
            rows.push(("Base credits".into(), thousands(r.base)));
            rows.push(("Variable credits".into(), variable));
            rows.push(("Additional credits".into(), thousands(r.additional)));
            rows.push(("=Allotted".into(), units(r, r.allotted)));
        }
    }
    rows
}

/// How much of the strings a log line brought (paths, request ids) a message shows: a path or
/// a request id can be up to a MiB, so each is cut to `cell` characters; `None` leaves the
/// endpoint lists out. A message is rendered with the first fit whose HTML is under
/// [`MAX_HTML`]; by construction the first one always is, the others are the guard.
#[derive(Clone, Copy)]
struct Fit {
    cell: Option<usize>,
}

const FITS: [Fit; 3] = [
    Fit { cell: Some(160) },
    Fit { cell: Some(40) },
    Fit { cell: None },
];

impl Fit {
    fn cell(self, s: &str) -> String {
        cut(s, self.cell.unwrap_or(40))
    }
}

/// Renders with the first of [`FITS`] whose HTML fits.
fn fitted(render: impl Fn(Fit) -> Rendered) -> Rendered {
    let mut last = Rendered::default();
    for fit in FITS {
        last = render(fit);
        if last.html.len() <= MAX_HTML {
            break;
        }
    }
    last
}

/// The org's name as a message shows it: one line, at most 120 characters.
fn org_name(v: &OrgDayView<'_>) -> String {
    cut(&one_line(v.org_name), 120)
}

fn endpoints(v: &OrgDayView<'_>, doc: &mut Doc, fit: Fit) {
    if v.details.top_endpoints.is_empty() {
        return;
    }
    // A legacy day counts billable calls, not credits (DESIGN §5).
    let unit = if legacy(v.row) {
        "billable calls"
    } else {
        "credits"
    };
    doc.heading(&format!("Top endpoints by {unit}"));
    if fit.cell.is_none() {
        doc.note(&format!(
            "{} endpoints left out to keep this message small; `creditd explain --org {} --date {}` lists every call.",
            v.details.top_endpoints.len(),
            v.row.org_id,
            v.row.local_date
        ));
        return;
    }
    let rows: Vec<Vec<String>> = v
        .details
        .top_endpoints
        .iter()
        .map(|(e, calls, credits)| vec![fit.cell(e), thousands(*calls), thousands(*credits)])
        .collect();
    doc.table(
        &[
            ("Endpoint", Align::Left),
            ("Calls", Align::Right),
            (
                if legacy(v.row) { "Billable" } else { "Credits" },
                Align::Right,
            ),
        ],
        &rows,
    );
}

/// How to keep calling, by model.
fn remedy(r: &LedgerRow) -> &'static str {
    if legacy(r) {
        "This day is on the legacy per-call limit: each billable call counts 1, and credits \
         bought for it do not raise it."
    } else {
        "To call beyond the allotment, buy additional credits per day (Setup → Developer \
         Space → API → Buy credits); they apply from the day they are valid."
    }
}

/// The alert of the crossings one run found on an org-day: `main` is the highest news (over,
/// else the highest threshold), `covered` the lower ones reported with it. `v.details.marks`
/// holds their figures: `main`'s first, then `covered`'s in order.
pub fn alert(
    v: &OrgDayView<'_>,
    main: &Crossing,
    covered: &[&Crossing],
    now: DateTime<Utc>,
) -> Rendered {
    fitted(|fit| alert_fit(v, main, covered, now, fit))
}

fn alert_fit(
    v: &OrgDayView<'_>,
    main: &Crossing,
    covered: &[&Crossing],
    now: DateTime<Utc>,
    fit: Fit,
) -> Rendered {
    let r = v.row;
    let name = org_name(v);
    let over = main.threshold == 100;
    let when = clock(v.tz, main.ts);
    let news = if over {
        format!("went over its daily API allotment at {when}")
    } else {
        format!(
            "reached {}% of its daily API allotment at {when}",
            main.threshold
        )
    };
    let subject = format!("[creditd] {name} ({}) {news} on {}", r.org_id, r.local_date);
    let mut doc = Doc::default();
    doc.headline(
        if over { Tone::Alarm } else { Tone::Warn },
        &format!("{name} (org {}) {news} on {}.", r.org_id, weekday_date(v)),
    );
    let day_over = now.timestamp_millis() >= v.reset_ms;
    let late = now.timestamp_millis() - main.ts > 3_600_000;
    if late {
        doc.note(&format!(
            "Reported late: the logs that show it arrived by {}.",
            date_clock(v.tz, now.timestamp_millis())
        ));
    }
    let reset = date_clock(v.tz, v.reset_ms);
    if over {
        doc.para(&if day_over {
            format!(
                "Calls after it were rejected with HTTP 429 THRESHOLD_EXCEEDED until the allotment reset at local midnight, {reset}."
            )
        } else {
            format!(
                "Further calls are rejected with HTTP 429 THRESHOLD_EXCEEDED until the allotment resets at local midnight, {reset}."
            )
        });
    } else if !day_over {
        doc.para(&format!(
            "At 100%, further calls are rejected with HTTP 429 THRESHOLD_EXCEEDED until the allotment resets at local midnight, {reset}."
        ));
    } else if r.used <= r.allotted {
        doc.para(&format!(
            "The day ended at {}, within its allotment: no call was rejected for it.",
            percent(r.used, r.allotted)
        ));
    }
    let marks = &v.details.marks;
    let at_main = marks.first().copied().unwrap_or_default();
    let mut usage = vec![
        (
            "At the crossing".to_string(),
            format!(
                "{} of {} ({}), request {}",
                thousands(at_main.used),
                units(r, r.allotted),
                percent(at_main.used, r.allotted),
                fit.cell(&main.request_id)
            ),
        ),
        (
            if day_over { "Whole day" } else { "So far" }.to_string(),
            format!("{} ({})", units(r, r.used), percent(r.used, r.allotted)),
        ),
    ];
    for (i, c) in covered.iter().enumerate() {
        let at: AtMark = marks.get(i + 1).copied().unwrap_or_default();
        usage.push((
            format!("Reached {}", threshold_name(c.threshold)),
            format!(
                "at {}: {} ({})",
                clock(v.tz, c.ts),
                units(r, at.used),
                percent(at.used, r.allotted)
            ),
        ));
    }
    doc.heading("Usage");
    doc.pairs(&usage);
    if !over {
        doc.para(&forecast_sentence(v, main.ts, at_main, now));
    }
    doc.heading("Allotment");
    doc.pairs(&breakdown(r));
    endpoints(v, &mut doc, fit);
    doc.heading("What you can do");
    doc.para(remedy(r));
    Rendered {
        html: doc.page(&subject),
        subject,
        text: doc.text,
        ..Rendered::default()
    }
}

/// The forecast of DESIGN §5.5 at `t` with the figures `at`, as one sentence; in the past
/// tense when the day is over by `now`, or the forecast time has passed (a late report).
fn forecast_sentence(v: &OrgDayView<'_>, t: i64, at: AtMark, now: DateTime<Utc>) -> String {
    let r = v.row;
    let pace = format!("{} an hour", units(r, at.last_hour));
    let now_ms = now.timestamp_millis();
    let eta = forecast(t, at.used, at.last_hour, r.allotted, v.reset_ms);
    let past = now_ms >= v.reset_ms || eta.is_some_and(|eta| now_ms >= eta);
    match (eta, past) {
        (Some(eta), false) => format!(
            "Forecast: at the pace of the hour before the crossing ({pace}), the org reaches 100% at about {}.",
            clock(v.tz, eta)
        ),
        (Some(eta), true) => format!(
            "Forecast at the crossing: at the pace of the hour before it ({pace}), 100% was due at about {}.",
            clock(v.tz, eta)
        ),
        (None, false) => format!(
            "Forecast: at the pace of the hour before the crossing ({pace}), the org does not reach 100% before the reset at midnight."
        ),
        (None, true) => format!(
            "Forecast at the crossing: at the pace of the hour before it ({pace}), 100% was not due before the reset at midnight."
        ),
    }
}

/// The local time at the start of each hour of the day.
fn hour_starts(v: &OrgDayView<'_>) -> Vec<DateTime<Tz>> {
    (0..v.details.hourly.len())
        .map(|h| {
            DateTime::<Utc>::from_timestamp_millis(v.start_ms + h as i64 * 3_600_000)
                .unwrap_or_default()
                .with_timezone(&v.tz)
        })
        .collect()
}

/// Whether the day changes its UTC offset (a DST day).
fn offset_changes(starts: &[DateTime<Tz>]) -> bool {
    starts
        .windows(2)
        .any(|w| w[0].offset().fix() != w[1].offset().fix())
}

/// The local clock at the start of each hour of the day, `HH:MM`; on a day that changes its
/// offset each with its zone and offset, as every other time (`01:00 CDT (UTC-05:00)`, then
/// `01:00 CST (UTC-06:00)`).
fn hour_labels(v: &OrgDayView<'_>) -> Vec<String> {
    let starts = hour_starts(v);
    let changes = offset_changes(&starts);
    starts
        .iter()
        .map(|t| {
            if changes {
                clock(v.tz, t.timestamp_millis())
            } else {
                t.format("%H:%M").to_string()
            }
        })
        .collect()
}

/// The chart's hour ticks: `HH` (`HH:MM` off the hour, as after a 30-minute shift), with the
/// zone's abbreviation where an hour repeats (the 01 of CDT and of CST on a fall-back day).
fn chart_hour_labels(v: &OrgDayView<'_>) -> Vec<String> {
    let starts = hour_starts(v);
    let short = |t: &DateTime<Tz>| {
        if t.format("%M").to_string() == "00" {
            t.format("%H").to_string()
        } else {
            t.format("%H:%M").to_string()
        }
    };
    let shorts: Vec<String> = starts.iter().map(short).collect();
    starts
        .iter()
        .zip(&shorts)
        .map(|(t, s)| {
            if shorts.iter().filter(|o| *o == s).count() > 1 {
                // A zone without an abbreviation has its offset as its name: `UTC-03`.
                let abbr = t.format("%Z").to_string();
                if abbr.starts_with(['+', '-']) {
                    format!("{s} UTC{abbr}")
                } else {
                    format!("{s} {abbr}")
                }
            } else {
                s.clone()
            }
        })
        .collect()
}

/// The zone of the chart's time axis: `CDT (UTC-05:00)`, or both on a day that changes its
/// offset (`CDT (UTC-05:00), then CST (UTC-06:00)`).
fn chart_zone(v: &OrgDayView<'_>) -> String {
    let zone_of = |ts: i64| {
        clock(v.tz, ts)
            .split_once(' ')
            .map(|(_, z)| z.to_string())
            .unwrap_or_default()
    };
    let first = zone_of(v.start_ms);
    let last = zone_of(v.reset_ms - 1);
    if first == last {
        first
    } else {
        format!("{first}, then {last}")
    }
}

/// The chart of the day: the running total against the allotment, crossings marked.
fn chart(v: &OrgDayView<'_>) -> Chart {
    let r = v.row;
    let slot = |ts: i64| ((ts - v.start_ms).max(0) / FINE_MS) as usize;
    Chart {
        per_5min: v.details.per_5min.clone(),
        hourly: v.details.hourly.clone(),
        allotted: r.allotted,
        unit: unit(r),
        hour_labels: chart_hour_labels(v),
        crossings: v
            .crossings
            .iter()
            .map(|c| (threshold_name(c.threshold), slot(c.ts)))
            .collect(),
        zone: chart_zone(v),
    }
}

/// The daily summary at close; `revision` marks an amended summary.
pub fn summary(v: &OrgDayView<'_>, revision: u64, concurrency_limit: u64) -> Rendered {
    fitted(|fit| summary_fit(v, revision, concurrency_limit, fit))
}

fn summary_fit(v: &OrgDayView<'_>, revision: u64, concurrency_limit: u64, fit: Fit) -> Rendered {
    let r = v.row;
    let name = org_name(v);
    let over_at = v.crossings.iter().find(|c| c.threshold == 100);
    let amended = if revision > 0 {
        format!("Amended (revision {revision}): ")
    } else {
        String::new()
    };
    let tail = match over_at {
        Some(c) => format!(", over since {}", clock(v.tz, c.ts)),
        None => String::new(),
    };
    let subject = format!(
        "[creditd] {amended}{name} ({}) used {} of its API allotment on {}{tail}",
        r.org_id,
        percent(r.used, r.allotted),
        r.local_date
    );
    let mut doc = Doc::default();
    let tone = match (over_at, v.crossings.is_empty()) {
        (Some(_), _) => Tone::Alarm,
        (None, false) => Tone::Warn,
        (None, true) => Tone::Info,
    };
    doc.headline(
        tone,
        &format!(
            "{amended}{name} (org {}) used {} of {} ({}) on {}{tail}.",
            r.org_id,
            thousands(r.used),
            units(r, r.allotted),
            percent(r.used, r.allotted),
            weekday_date(v)
        ),
    );
    if revision > 0 {
        doc.note("Logs that arrived after the day closed changed its figures; this summary replaces the one sent before. Alerts already sent are not repeated.");
    }
    doc.note(&format!(
        "Local day {} in {}: {} to {}.",
        r.local_date,
        v.tz.name(),
        date_clock(v.tz, v.start_ms),
        date_clock(v.tz, v.reset_ms)
    ));
    doc.heading("Allotment");
    let mut rows = breakdown(r);
    rows.push((
        "Used".into(),
        format!("{} ({})", units(r, r.used), percent(r.used, r.allotted)),
    ));
    if r.used > r.allotted {
        rows.push(("Over by".into(), units(r, r.used - r.allotted)));
    }
    doc.pairs(&rows);
    doc.heading("Calls");
    let mut calls = vec![
        ("Calls".to_string(), thousands(r.calls)),
        ("Billable".to_string(), thousands(r.billable_calls)),
        (
            "Not billable".to_string(),
            format!(
                "{} (exempt statuses)",
                thousands(r.calls.saturating_sub(r.billable_calls))
            ),
        ),
    ];
    if r.unpriced_calls > 0 {
        calls.push((
            "Unpriced".to_string(),
            format!(
                "{} (no pricing rule matched; listed below)",
                thousands(r.unpriced_calls)
            ),
        ));
    }
    calls.push((
        "Peak concurrency".to_string(),
        format!(
            "{} at once (limit {})",
            thousands(v.details.peak_concurrency),
            thousands(concurrency_limit)
        ),
    ));
    doc.pairs(&calls);
    if !v.crossings.is_empty() {
        doc.heading("Thresholds reached");
        let rows: Vec<Vec<String>> = v
            .crossings
            .iter()
            .map(|c| vec![threshold_name(c.threshold), clock(v.tz, c.ts)])
            .collect();
        doc.table(&[("Threshold", Align::Left), ("At", Align::Left)], &rows);
    }
    doc.heading(&format!("Usage through the day ({})", unit(r)));
    let chart = chart(v);
    doc.chart(
        super::CHART_W,
        super::CHART_H,
        &format!(
            "Running total of {} through the local day against the allotment of {}",
            unit(r),
            thousands(r.allotted)
        ),
    );
    let labels = hour_labels(v);
    let mut running = 0u64;
    let rows: Vec<Vec<String>> = v
        .details
        .hourly
        .iter()
        .enumerate()
        .filter(|(_, u)| **u > 0)
        .map(|(i, u)| {
            running += u;
            vec![
                labels.get(i).cloned().unwrap_or_default(),
                thousands(*u),
                thousands(running),
                percent(running, r.allotted),
            ]
        })
        .collect();
    if rows.is_empty() {
        doc.para("No calls this day.");
    } else {
        doc.note("Hours without calls are left out. The chart above shows the same figures.");
        doc.table(
            &[
                ("Hour", Align::Left),
                ("Used", Align::Right),
                ("Running total", Align::Right),
                ("Of allotment", Align::Right),
            ],
            &rows,
        );
    }
    endpoints(v, &mut doc, fit);
    if !v.details.unpriced.is_empty() {
        doc.heading("Unpriced calls (no pricing rule matched)");
        if fit.cell.is_none() {
            doc.note(&format!(
                "{} endpoints left out to keep this message small; `creditd explain --org {} --date {}` lists every call.",
                v.details.unpriced.len(),
                r.org_id,
                r.local_date
            ));
        } else {
            let rows: Vec<Vec<String>> = v
                .details
                .unpriced
                .iter()
                .map(|(e, n)| vec![fit.cell(e), thousands(*n)])
                .collect();
            doc.table(&[("Endpoint", Align::Left), ("Calls", Align::Right)], &rows);
        }
    }
    if over_at.is_some() {
        doc.heading("What you can do");
        doc.para(remedy(r));
    }
    Rendered {
        html: doc.page(&subject),
        subject,
        text: doc.text,
        chart: Some(chart),
        ..Rendered::default()
    }
}

#[cfg(test)]
mod tests;
