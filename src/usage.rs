//! `creditd usage`: gathers the "API details" view of one org-day; `report::usage` renders it
//! for the terminal.

use anyhow::Context;
use chrono::{DateTime, NaiveDate, Utc};

use crate::events::{day_details, DaySpan, Mark};
use crate::ledger::close_time;
use crate::report::{self, UsageView};
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
        Some(s) => s.ledger(Some(day), Some(day), &[org_id.to_string()])?.pop(),
        None => None,
    };
    let crossings = match (store, &row) {
        (Some(s), Some(r)) => s.crossings(&r.org_day())?,
        _ => Vec::new(),
    };
    let closed = now >= close_time(org.timezone, day, setup.config.close_grace);
    // A stored row shows the terms it was computed with; otherwise today's rules.
    let figures = match &row {
        Some(r) => r.terms.clone(),
        None => terms.clone(),
    };
    // An open day that has not reached 100 % says when it will (DESIGN §5.5).
    let forecast = match (store, &row) {
        (Some(s), Some(r)) if !closed && r.used <= r.allotted => {
            let span = DaySpan::new(
                org.timezone,
                day,
                r.model == crate::allotment::Model::Legacy,
            );
            let parts = s.parts_on(day)?;
            let now_ms = now.timestamp_millis();
            let mark = Mark {
                ts: now_ms,
                request_id: None,
            };
            let d = day_details(&setup.config.state_dir, &parts, org_id, span, &[mark])?;
            let at = d.marks.first().copied().unwrap_or_default();
            let reset = crate::localday::day_span(org.timezone, day).1;
            Some(report::Forecast {
                last_hour: at.last_hour,
                eta: report::format::forecast(
                    now_ms,
                    at.used,
                    at.last_hour,
                    r.allotted,
                    reset.timestamp_millis(),
                ),
            })
        }
        _ => None,
    };
    Ok(report::usage(&UsageView {
        forecast,
        org_id,
        org_name: &plan.name,
        day,
        tz: org.timezone,
        closed,
        edition: &terms.edition,
        agents: terms.agents,
        light_agents: terms.light_agents,
        additional_excess: terms.additional_excess,
        concurrency: terms.concurrency,
        figures,
        row: row.as_ref(),
        crossings: &crossings,
    }))
}
