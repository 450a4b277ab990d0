//! Phase 4 of a backfill: what changed, value by value and org-day by org-day, and which
//! closed days it amends.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};

use super::*;

/// Phase 4: the changes, into `out`; returns the closed org-days the backfill amends.
pub fn diff(
    setup: &Setup,
    plan: &Plan<'_>,
    new_rows: &NewRows,
    now: DateTime<Utc>,
    out: &mut Outcome,
) -> Vec<OrgDay> {
    let keys: BTreeSet<&OrgDay> = plan.old_rows.keys().chain(new_rows.keys()).collect();
    let mut amended = Vec::new();
    for key in keys {
        let old = plan.old_rows.get(key);
        let new = new_rows.get(key).map(|(r, _)| r);
        let changes = diff_rows(setup, key, old, new, now);
        if changes.is_empty() {
            continue;
        }
        out.changed_org_days += 1;
        out.changes.extend(changes);
        let figures = |r: &LedgerRow| day_figures(setup, r);
        out.days.push(crate::report::DayChange {
            org_id: key.org_id.clone(),
            local_date: key.date,
            before: old.map(figures),
            after: new.map(figures),
            mail: None,
        });
        if let (Some(old), Some(new)) = (old, new) {
            let tz = setup
                .org(&key.org_id)
                .map_or(chrono_tz::UTC, |o| o.timezone);
            if differs(new, old) && now >= close_time(tz, key.date, setup.config.close_grace) {
                amended.push(key.clone());
            }
        }
    }
    amended
}

/// An org-day's figures and over/near status, as the backfill report compares them.
fn day_figures(setup: &Setup, r: &LedgerRow) -> crate::report::DayFigures {
    crate::report::DayFigures {
        used: r.used,
        allotted: r.allotted,
        unit: r.model.unit(),
        status: day_status(r.used, r.allotted, &setup.config.alerts.near_limit_percent),
    }
}

/// `over`, `near <t>%` (the highest of the ascending `thresholds` reached) or `-`; a day
/// without use is near nothing, even on an allotment of 0.
fn day_status(used: u64, allotted: u64, thresholds: &[u64]) -> String {
    if used > allotted {
        "over".to_string()
    } else if used == 0 {
        "-".to_string()
    } else {
        thresholds
            .iter()
            .rev()
            .find(|t| crate::allotment::reached(used, allotted, **t))
            .map_or("-".to_string(), |t| format!("near {t}%"))
    }
}

/// The export columns of an org-day that differ (`status` aside); a row that appears or
/// disappears is one change of the column `row`.
fn diff_rows(
    setup: &Setup,
    day: &OrgDay,
    old: Option<&LedgerRow>,
    new: Option<&LedgerRow>,
    now: DateTime<Utc>,
) -> Vec<Change> {
    let export = |r: &LedgerRow| export_rows(setup, std::slice::from_ref(r), now).remove(0);
    let change = |column: &str, before: String, after: String| Change {
        org_id: day.org_id.clone(),
        local_date: day.date,
        column: column.to_string(),
        before,
        after,
    };
    let brief = |e: &ExportRow| format!("{} calls, used {} of {}", e.calls, e.used, e.allotted);
    match (old.map(export), new.map(export)) {
        (None, None) => Vec::new(),
        (None, Some(n)) => vec![change("row", "(none)".into(), brief(&n))],
        (Some(o), None) => vec![change("row", brief(&o), "(none)".into())],
        (Some(o), Some(n)) => fields(&o)
            .into_iter()
            .zip(fields(&n))
            .filter(|(a, b)| a.1 != b.1)
            .map(|(a, b)| change(a.0, a.1, b.1))
            .collect(),
    }
}

/// The export columns a backfill compares: all but the org-day itself and `status` (which
/// comes from the clock).
fn fields(r: &ExportRow) -> Vec<(&'static str, String)> {
    r.columns()
        .into_iter()
        .filter(|(name, _)| !matches!(*name, "org_id" | "local_date" | "status"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::day_status;

    #[test]
    fn the_status_a_backfill_compares() {
        let t = [80, 90];
        assert_eq!(day_status(5_001, 5_000, &t), "over");
        assert_eq!(day_status(5_000, 5_000, &t), "near 90%");
        assert_eq!(day_status(4_000, 5_000, &t), "near 80%");
        assert_eq!(day_status(3_999, 5_000, &t), "-");
        // An allotment of 0: unused is nothing, any use is over.
        assert_eq!(day_status(0, 0, &t), "-");
        assert_eq!(day_status(1, 0, &t), "over");
    }
}
