//! `creditd explain` as text for a person and CSV for a spreadsheet (DESIGN §4).

use std::fmt::Write as _;

use super::{escape_controls, one_line};
use crate::explain::Explanation;

/// The CSV columns of DESIGN §4.
pub const EXPLAIN_HEADER: &str =
    "local_time,request_id,method,path,rule,tier,credits,billable,running_total,crossing";

fn tier(t: Option<u32>) -> String {
    t.map(|t| t.to_string()).unwrap_or_default()
}

/// The CSV form: one row per call; org-supplied text with control characters as `\xNN`.
pub fn explain_csv(x: &Explanation) -> anyhow::Result<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(EXPLAIN_HEADER.split(','))?;
    for c in &x.calls {
        w.write_record([
            c.local_time.as_str(),
            &escape_controls(&c.request_id),
            &c.method,
            &escape_controls(c.path.as_deref().unwrap_or("")),
            &escape_controls(&c.rule),
            &tier(c.tier),
            &c.credits.to_string(),
            if c.billable { "true" } else { "false" },
            &c.running_total.to_string(),
            &c.crossing.join(" "),
        ])?;
    }
    Ok(String::from_utf8(w.into_inner()?)?)
}

/// The text form: the org-day's totals, then one line per call.
pub fn explain_text(x: &Explanation) -> String {
    let r = &x.row;
    let unit = r.model.unit();
    let mut o = String::new();
    let _ = writeln!(
        o,
        "org {} on {} ({}, {} model): {} calls, {} billable, {} credits; used {} of {} {unit}",
        one_line(&r.org_id),
        r.local_date,
        x.zone,
        r.model,
        r.calls,
        r.billable_calls,
        r.credits,
        r.used,
        r.allotted
    );
    if x.unknown_paths > 0 {
        let _ = writeln!(
            o,
            "{} call(s) without path and tier: their archived files were removed by retention",
            x.unknown_paths
        );
    }
    let _ = writeln!(
        o,
        "\n{:<29} {:<24} {:<6} {:>7} {:>10}  {:<9} rule / path",
        "local time", "request id", "method", "credits", "total", "crossing"
    );
    for c in &x.calls {
        let credits = if c.billable {
            c.credits.to_string()
        } else {
            format!("exempt ({})", c.status)
        };
        let _ = writeln!(
            o,
            "{:<29} {:<24} {:<6} {:>7} {:>10}  {:<9} {}{}  {}",
            c.local_time,
            one_line(&c.request_id),
            c.method,
            credits,
            c.running_total,
            c.crossing.join(" "),
            one_line(&c.rule),
            c.tier.map(|t| format!(" tier {t}")).unwrap_or_default(),
            c.path
                .as_deref()
                .map(one_line)
                .unwrap_or_else(|| "?".into())
        );
    }
    o
}
