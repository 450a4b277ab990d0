//! The backfill report to ops (DESIGN §5.4): first the org-days whose over/near status flipped
//! (an alert that is now wrong, or one now due), then one row per other changed org-day; the
//! full diff, one row per changed value, attached as CSV.

use chrono::NaiveDate;

use super::format::{percent, thousands};
use super::layout::{Align, Doc, Tone};
use super::{one_line, Rendered};
use crate::backfill::Change;

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
    pub local_date: String,
    pub before: Option<DayFigures>,
    pub after: Option<DayFigures>,
}

impl DayChange {
    fn status(f: &Option<DayFigures>) -> &str {
        f.as_ref().map_or("-", |f| f.status.as_str())
    }

    /// Whether the over/near status changed.
    pub fn flipped(&self) -> bool {
        Self::status(&self.before) != Self::status(&self.after)
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

fn figures(f: &Option<DayFigures>) -> String {
    match f {
        None => "(no row)".to_string(),
        Some(f) => format!(
            "{} of {} {} ({})",
            thousands(f.used),
            thousands(f.allotted),
            f.unit,
            percent(f.used, f.allotted)
        ),
    }
}

/// What a flip means for the org's mail.
fn meaning(d: &DayChange, resend: bool) -> String {
    let before = DayChange::status(&d.before);
    let after = DayChange::status(&d.after);
    let rank = |s: &str| match s {
        "over" => 1000,
        "-" => 0,
        near => near
            .trim_start_matches("near ")
            .trim_end_matches('%')
            .parse()
            .unwrap_or(1),
    };
    if rank(after) > rank(before) {
        if resend {
            "now due: its alert was queued".into()
        } else {
            "now due: not mailed (run with --resend)".into()
        }
    } else {
        format!("an alert already sent for {before} is now wrong")
    }
}

/// The most org-days the report lists; the CSV has every changed value.
const SHOWN: usize = 200;

/// The backfill report to ops.
pub fn backfill(v: &BackfillView<'_>) -> Rendered {
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
        ("Before", Align::Left),
        ("After", Align::Left),
        ("Status", Align::Left),
    ];
    let row = |d: &DayChange, status: String| {
        vec![
            d.org_id.clone(),
            d.local_date.clone(),
            figures(&d.before),
            figures(&d.after),
            status,
        ]
    };
    doc.heading(&format!("Status flips ({})", flips.len()));
    if flips.is_empty() {
        doc.note("None: no alert became wrong or due.");
    } else {
        let rows: Vec<Vec<String>> = flips
            .iter()
            .take(SHOWN)
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
        doc.table(&head, &rows);
    }
    doc.heading(&format!("Other changed org-days ({})", others.len()));
    if others.is_empty() {
        doc.note("None.");
    } else {
        let rows: Vec<Vec<String>> = others
            .iter()
            .take(SHOWN)
            .map(|d| row(d, DayChange::status(&d.after).to_string()))
            .collect();
        doc.table(&head, &rows);
    }
    let listed = flips.len().min(SHOWN) + others.len().min(SHOWN);
    if listed < v.days.len() {
        doc.note(&format!(
            "{} more org-day(s) not listed.",
            thousands((v.days.len() - listed) as u64)
        ));
    }
    let mut attachments = Vec::new();
    if !v.changes.is_empty() {
        let mut w = csv::Writer::from_writer(Vec::new());
        let _ = w.write_record(["org_id", "local_date", "column", "before", "after"]);
        for c in v.changes {
            let _ = w.write_record([&c.org_id, &c.local_date, &c.column, &c.before, &c.after]);
        }
        let csv = String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default();
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
