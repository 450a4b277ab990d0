//! The backfill report to ops (DESIGN §5.4): first the org-days whose over/near status flipped
//! (an alert that is now wrong, or one now due), then one row per other changed org-day; the
//! full diff, one row per changed value, attached as CSV.

use chrono::NaiveDate;

use super::format::{percent, thousands};
use super::layout::{Align, Doc, Tone};
use super::MAX_HTML;
use super::{one_line, Rendered};
use crate::store::Status;

/// One changed value of one org-day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub org_id: String,
    pub local_date: NaiveDate,
    pub column: String,
    pub before: String,
    pub after: String,
}

/// An org-day's figures before or after a backfill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayFigures {
    pub used: u64,
    pub allotted: u64,
    /// `calls` on legacy days, else `credits`.
    pub unit: &'static str,
    /// `over`, `near 90%` (the highest threshold reached) or `-`.
    pub status: String,
}

/// One changed org-day; `None` when it had (or has) no row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayChange {
    pub org_id: String,
    pub local_date: NaiveDate,
    pub before: Option<DayFigures>,
    pub after: Option<DayFigures>,
    /// The outbox status of the alert a flip concerns (the new status's when it rose, the
    /// old one's when it fell), read after the backfill queued its messages; `None` when
    /// there is no such message.
    pub mail: Option<crate::store::Status>,
}

impl DayChange {
    fn status(f: &Option<DayFigures>) -> &str {
        f.as_ref().map_or("-", |f| f.status.as_str())
    }

    /// Whether the over/near status changed.
    pub fn flipped(&self) -> bool {
        Self::status(&self.before) != Self::status(&self.after)
    }

    /// The alert threshold of a status: `over` 100, `near 80%` 80, `-` none.
    fn threshold(status: &str) -> Option<u64> {
        match status {
            "over" => Some(100),
            "-" => None,
            near => near
                .trim_start_matches("near ")
                .trim_end_matches('%')
                .parse()
                .ok(),
        }
    }

    /// Whether the status rose (a new alert is due) rather than fell.
    pub fn rose(&self) -> bool {
        let rank = |f: &Option<DayFigures>| Self::threshold(Self::status(f)).unwrap_or(0);
        rank(&self.after) > rank(&self.before)
    }

    /// The threshold of the alert a flip concerns: the new status's when it rose, the old
    /// one's when it fell.
    pub fn alert_threshold(&self) -> Option<u64> {
        if !self.flipped() {
            None
        } else if self.rose() {
            Self::threshold(Self::status(&self.after))
        } else {
            Self::threshold(Self::status(&self.before))
        }
    }
}

/// Everything the backfill report shows.
pub struct BackfillView<'a> {
    pub id: &'a str,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub orgs: &'a [String],
    pub changes: &'a [Change],
    pub days: &'a [DayChange],
    pub changed_org_days: usize,
    pub rows_before: usize,
    pub rows_after: usize,
    pub recovered: u64,
    pub quarantined: u64,
    pub resend: bool,
}

/// The one-paragraph summary of a backfill, as the report and the command print it.
pub fn backfill_summary(v: &BackfillView<'_>) -> String {
    let scope = if v.orgs.is_empty() {
        "every org".to_string()
    } else {
        format!("org(s) {}", v.orgs.join(", "))
    };
    format!(
        "Backfill {} of {} to {} for {scope}: {} org-day(s) changed ({} value(s)); {} row(s) before, {} after; {} line(s) recovered from the quarantine, {} newly quarantined. {}",
        v.id,
        v.from,
        v.to,
        v.changed_org_days,
        v.changes.len(),
        v.rows_before,
        v.rows_after,
        v.recovered,
        v.quarantined,
        if v.resend {
            "Alerts and amended summaries were queued for what changed."
        } else {
            "No org was emailed (run with --resend to send alerts and amended summaries)."
        }
    )
}

/// Used and % used: `5,522 (110.44%)`.
fn figures(f: &Option<DayFigures>) -> String {
    match f {
        None => "(no row)".to_string(),
        Some(f) => format!("{} ({})", thousands(f.used), percent(f.used, f.allotted)),
    }
}

/// The allotment with its unit, `5,000 credits`, or its change, `5,000 → 6,000 credits`.
fn allotted(d: &DayChange) -> String {
    let one = |f: &DayFigures| format!("{} {}", thousands(f.allotted), f.unit);
    match (&d.before, &d.after) {
        (Some(b), Some(a)) if b.allotted == a.allotted && b.unit == a.unit => one(a),
        (Some(b), Some(a)) => format!("{} → {}", one(b), one(a)),
        (Some(f), None) | (None, Some(f)) => one(f),
        (None, None) => String::new(),
    }
}

/// What a flip means for the org's mail, by the real status of the alert it concerns.
fn meaning(d: &DayChange, resend: bool) -> String {
    let before = DayChange::status(&d.before);
    if d.rose() {
        match d.mail {
            Some(Status::Queued) => "now due: its alert is queued".into(),
            Some(Status::Sent) => "now due: its alert was sent before".into(),
            Some(Status::Held) => "now due: held, found later than max_age".into(),
            Some(Status::Failed) => "now due: its alert failed to send (see the outbox)".into(),
            Some(Status::Dropped) => "now due: its alert was dropped by hand".into(),
            None if resend => {
                "now due: not queued yet (its message failed to build: an open problem, retried by the next run)".into()
            }
            None => "now due: not mailed (run with --resend)".into(),
        }
    } else {
        match d.mail {
            Some(Status::Sent) => format!("the alert sent for {before} is now wrong"),
            Some(Status::Queued | Status::Failed) => format!(
                "the alert for {before} is now wrong and not sent yet (creditd outbox drop it)"
            ),
            Some(other) => format!("no longer {before}; its alert was not sent ({other})"),
            None => format!("no longer {before}; no alert was sent for it"),
        }
    }
}

/// The backfill report to ops: the fullest form whose HTML fits [`MAX_HTML`] (up to 200 flips
/// and 25 other org-days, then fewer); the CSV has every changed value.
pub fn backfill(v: &BackfillView<'_>) -> Rendered {
    let mut rendered = Rendered::default();
    for (flips, others) in [(200, 25), (50, 10), (10, 0), (0, 0)] {
        rendered = backfill_with(v, flips, others);
        if rendered.html.len() <= MAX_HTML {
            break;
        }
    }
    rendered
}

fn backfill_with(v: &BackfillView<'_>, shown_flips: usize, shown_others: usize) -> Rendered {
    let flips: Vec<&DayChange> = v.days.iter().filter(|d| d.flipped()).collect();
    let others: Vec<&DayChange> = v.days.iter().filter(|d| !d.flipped()).collect();
    let subject = format!(
        "[creditd] backfill {} to {}: {} org-day(s) changed, {} status flip(s)",
        v.from,
        v.to,
        v.changed_org_days,
        flips.len()
    );
    let mut doc = Doc::default();
    doc.headline(
        if flips.is_empty() {
            Tone::Info
        } else {
            Tone::Warn
        },
        &format!(
            "Backfill {} to {}: {} org-day(s) changed, {} of them flipped over/near status.",
            v.from,
            v.to,
            thousands(v.changed_org_days as u64),
            thousands(flips.len() as u64)
        ),
    );
    doc.note(&one_line(&backfill_summary(v)));
    let head = [
        ("Org", Align::Left),
        ("Day", Align::Right),
        ("Used before", Align::Right),
        ("Used after", Align::Right),
        ("Allotted", Align::Right),
        ("Status", Align::Left),
    ];
    let row = |d: &DayChange, status: String| {
        vec![
            d.org_id.clone(),
            d.local_date.to_string(),
            figures(&d.before),
            figures(&d.after),
            allotted(d),
            status,
        ]
    };
    doc.heading(&format!("Status flips: {}", flips.len()));
    if flips.is_empty() {
        doc.note("None: no alert became wrong or due.");
    } else {
        let rows: Vec<Vec<String>> = flips
            .iter()
            .take(shown_flips)
            .map(|d| {
                row(
                    d,
                    format!(
                        "{} → {}: {}",
                        DayChange::status(&d.before),
                        DayChange::status(&d.after),
                        meaning(d, v.resend)
                    ),
                )
            })
            .collect();
        if !rows.is_empty() {
            doc.table(&head, &rows);
        }
    }
    doc.heading(&format!("Other changed org-days: {}", others.len()));
    if others.is_empty() {
        doc.note("None.");
    } else {
        let rows: Vec<Vec<String>> = others
            .iter()
            .take(shown_others)
            .map(|d| row(d, DayChange::status(&d.after).to_string()))
            .collect();
        if !rows.is_empty() {
            doc.table(&head, &rows);
        }
    }
    let listed = flips.len().min(shown_flips) + others.len().min(shown_others);
    if listed < v.days.len() {
        doc.note(&format!(
            "{} more org-day(s) not listed here: every change is in the attached CSV.",
            thousands((v.days.len() - listed) as u64)
        ));
    }
    let mut attachments = Vec::new();
    if !v.changes.is_empty() {
        let dates: Vec<String> = v.changes.iter().map(|c| c.local_date.to_string()).collect();
        let rows: Vec<[&str; 5]> = v
            .changes
            .iter()
            .zip(&dates)
            .map(|(c, d)| [&c.org_id[..], d, &c.column, &c.before, &c.after])
            .collect();
        let rows: Vec<Vec<&str>> = rows.iter().map(|r| r.to_vec()).collect();
        let csv = super::digest::csv_of(
            &["org_id", "local_date", "column", "before", "after"],
            &rows,
        );
        attachments.push((format!("backfill-{}.csv", v.id), csv));
        doc.note(&format!(
            "Every changed value ({}) is in the attached backfill-{}.csv.",
            thousands(v.changes.len() as u64),
            v.id
        ));
    }
    Rendered {
        html: doc.page(&subject),
        subject,
        text: doc.text,
        attachments,
        ..Rendered::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(org: usize, before: (u64, &str), after: (u64, &str)) -> DayChange {
        let f = |(used, status): (u64, &str)| {
            Some(DayFigures {
                used,
                allotted: 1_000,
                unit: "credits",
                status: status.to_string(),
            })
        };
        DayChange {
            org_id: org.to_string(),
            local_date: NaiveDate::from_ymd_opt(2025, 10, 24).unwrap(),
            before: f(before),
            after: f(after),
            mail: None,
        }
    }

    #[test]
    fn flips_come_first_and_every_change_is_attached_whatever_the_volume() {
        let mut days: Vec<DayChange> = (0..20_000)
            .map(|i| day(i, (500, "-"), (400, "-")))
            .collect();
        let sent = |mut d: DayChange| {
            d.mail = Some(Status::Sent);
            d
        };
        days.push(sent(day(77_777, (1_200, "over"), (850, "near 80%"))));
        days.push(day(88_888, (700, "-"), (950, "near 90%")));
        days.push(day(99_999, (1_100, "over"), (700, "-")));
        let changes: Vec<Change> = days
            .iter()
            .map(|d| Change {
                org_id: d.org_id.clone(),
                local_date: d.local_date,
                column: "used".into(),
                before: "500".into(),
                after: "400".into(),
            })
            .collect();
        let view = BackfillView {
            id: "b1",
            from: NaiveDate::from_ymd_opt(2025, 10, 24).unwrap(),
            to: NaiveDate::from_ymd_opt(2025, 10, 24).unwrap(),
            orgs: &[],
            changes: &changes,
            days: &days,
            changed_org_days: days.len(),
            rows_before: days.len(),
            rows_after: days.len(),
            recovered: 0,
            quarantined: 0,
            resend: false,
        };
        let r = backfill(&view);
        assert!(r.html.len() <= MAX_HTML, "{} bytes", r.html.len());
        assert!(r.subject.contains("3 status flip(s)"), "{}", r.subject);
        let at = |s: &str| {
            r.text
                .find(s)
                .unwrap_or_else(|| panic!("{s} in {}", r.text))
        };
        assert!(at("Status flips") < at("77777") && at("77777") < at("Other changed"));
        assert!(r
            .text
            .contains("over → near 80%: the alert sent for over is now wrong"));
        assert!(r
            .text
            .contains("- → near 90%: now due: not mailed (run with --resend)"));
        assert!(r
            .text
            .contains("over → -: no longer over; no alert was sent for it"));
        let (name, csv) = &r.attachments[0];
        assert_eq!(name, "backfill-b1.csv");
        assert_eq!(csv.lines().count(), 20_004, "header + every change");
    }
}
