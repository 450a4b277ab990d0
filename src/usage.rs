//! `creditd usage`: the "API details" view of one org-day, for the terminal.

use std::fmt::Write as _;

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};

use crate::allotment::{format_pct, pct_hundredths};
use crate::ledger::close_time;
use crate::report::one_line;
use crate::setup::Setup;
use crate::store::Store;

/// Renders the view; the day defaults to the org's current local day at `now`.
pub fn render(
    setup: &Setup,
    store: Option<&Store>,
    org_id: &str,
    date: Option<NaiveDate>,
    now: DateTime<Utc>,
) -> anyhow::Result<String> {
    let org = setup.org(org_id).with_context(|| {
        format!(
            "org {org_id} is not in the registry {}",
            setup.config.orgs.display()
        )
    })?;
    let day = date.unwrap_or_else(|| crate::localday::local_day(org.timezone, now));
    let terms = setup
        .terms(org, day)
        .with_context(|| format!("org {org_id} has no plan in effect on {day}"))?;
    let plan = org.plan_on(day).expect("terms imply a plan");
    let row = match store {
        Some(s) => s
            .ledger(
                Some(&day.to_string()),
                Some(&day.to_string()),
                &[org_id.to_string()],
            )?
            .pop(),
        None => None,
    };
    let crossings = match (store, &row) {
        (Some(s), Some(_)) => s.crossings(org_id, &day.to_string())?,
        _ => Vec::new(),
    };
    let local = |ts: i64| {
        DateTime::<Utc>::from_timestamp_millis(ts)
            .expect("in range")
            .with_timezone(&org.timezone)
            .format("%Y-%m-%d %H:%M:%S%.3f %Z")
            .to_string()
    };
    let closed = now >= close_time(org.timezone, day, setup.config.close_grace);

    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "API details — org {org_id} ({})", one_line(&plan.name));
    let _ = writeln!(
        w,
        "  Local day        {day} ({}), {}",
        org.timezone.name(),
        if closed { "closed" } else { "open" }
    );
    let _ = writeln!(
        w,
        "  Edition          {} ({} agents, {} light agents not counted)",
        terms.edition, terms.agents, terms.light_agents
    );
    // A stored row shows the terms it was computed with; otherwise today's rules.
    let (model, reason, base, variable, additional, allotted, legacy) = match &row {
        Some(r) => (
            r.model.clone(),
            r.reason.clone(),
            r.base,
            r.variable,
            r.additional,
            r.allotted,
            r.legacy_limit,
        ),
        None => (
            terms.model.as_str().to_string(),
            terms.reason.clone(),
            terms.base,
            terms.variable,
            terms.additional,
            terms.allotted,
            terms.legacy_limit,
        ),
    };
    let _ = writeln!(w, "  Model            {model} — {reason}");
    let _ = writeln!(w, "  Base credits     {base:>12}");
    let _ = writeln!(w, "  Variable credits {variable:>12}");
    let _ = writeln!(w, "  Additional       {additional:>12}");
    let _ = writeln!(
        w,
        "  Allotted         {allotted:>12}   (legacy call limit {legacy})"
    );
    if terms.additional_excess > 0 {
        let _ = writeln!(
            w,
            "  Purchased above the edition cap, not granted: {}",
            terms.additional_excess
        );
    }
    let used = row.as_ref().map_or(0, |r| r.used);
    let unit = if model == "legacy" {
        "calls"
    } else {
        "credits"
    };
    let _ = writeln!(w, "  Used             {used:>12} {unit}");
    let _ = writeln!(
        w,
        "  % used           {:>12}",
        format_pct(pct_hundredths(used, allotted))
    );
    let _ = writeln!(
        w,
        "  Concurrency      {:>12} concurrent calls",
        terms.concurrency
    );
    if let Some(r) = &row {
        let _ = writeln!(
            w,
            "  Calls            {:>12} ({} billable, {} credits, {} unpriced)",
            r.calls, r.billable_calls, r.credits, r.unpriced_calls
        );
        if r.used > r.allotted {
            let _ = writeln!(w, "  Overage          {:>12}", r.used - r.allotted);
        }
        for c in &crossings {
            let what = if c.threshold == 100 {
                "Exceeded".to_string()
            } else {
                format!("Reached {}%", c.threshold)
            };
            // Request ids come from the logs: control characters (an escape sequence) never
            // reach the terminal.
            let _ = writeln!(
                w,
                "  {what:<16} {} (request {})",
                local(c.ts),
                one_line(&c.request_id)
            );
        }
        if r.revision > 0 {
            let _ = writeln!(
                w,
                "  Amended          {} time(s) by late data after the day closed",
                r.revision
            );
        }
    } else {
        let _ = writeln!(w, "  Calls            {:>12}", 0);
    }
    Ok(out)
}
