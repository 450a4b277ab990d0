//! The words and tables of every email: near-limit and overage alerts, the daily summary, the
//! ops digest. Pure code: views in, subject + plain text + HTML out. Every org-supplied string
//! is escaped for HTML and stripped of control characters for headers.

use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;

use crate::allotment::{format_pct, pct_hundredths};
use crate::events::DayDetails;
use crate::store::{Crossing, LedgerRow};

mod explain;
pub use explain::{explain_csv, explain_text, EXPLAIN_HEADER};

/// A rendered message, before it becomes MIME.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
    /// Hourly usage, drawn as the inline chart `cid:chart` when present.
    pub chart: Option<Vec<u64>>,
}

/// One org-day, as the org-facing messages see it.
pub struct OrgDayView<'a> {
    pub org_name: &'a str,
    pub tz: Tz,
    pub row: &'a LedgerRow,
    pub crossings: &'a [Crossing],
    pub details: &'a DayDetails,
}

/// Escapes text for HTML.
pub fn html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// Makes text safe for a header or a single line: control characters become spaces.
/// `s` with every control character (C0, DEL, C1) written as `\xNN` and everything else as it
/// is: for text shown exactly (a quarantined line), where a line a gateway or an attacker sent
/// must not drive the terminal that reads it.
pub fn escape_controls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

pub fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

fn local(tz: Tz, ts: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ts)
        .expect("in range")
        .with_timezone(&tz)
        .format("%Y-%m-%d %H:%M:%S %Z")
        .to_string()
}

fn unit(row: &LedgerRow) -> &'static str {
    if row.model == "legacy" {
        "calls"
    } else {
        "credits"
    }
}

fn breakdown(v: &OrgDayView<'_>, text: &mut String, out_html: &mut String) {
    let r = v.row;
    let pct = format_pct(pct_hundredths(r.used, r.allotted));
    let rows: Vec<(&str, String)> = vec![
        ("Org ID", r.org_id.clone()),
        ("Edition", format!("{} ({} agents)", r.edition, r.agents)),
        ("Model", format!("{} — {}", r.model, r.reason)),
        ("Base credits", r.base.to_string()),
        ("Variable credits", r.variable.to_string()),
        ("Additional credits", r.additional.to_string()),
        ("Allotted", format!("{} {}", r.allotted, unit(r))),
        ("Used", format!("{} {}", r.used, unit(r))),
        ("% used", pct),
    ];
    let _ = writeln!(out_html, "<table>");
    for (k, val) in rows {
        let _ = writeln!(text, "  {k:<20} {}", one_line(&val));
        let _ = writeln!(
            out_html,
            "<tr><th align=\"left\">{}</th><td>{}</td></tr>",
            html(k),
            html(&val)
        );
    }
    let _ = writeln!(out_html, "</table>");
}

fn endpoints(v: &OrgDayView<'_>, text: &mut String, out_html: &mut String) {
    if v.details.top_endpoints.is_empty() {
        return;
    }
    let _ = writeln!(text, "\nTop endpoints by credits:");
    let _ = writeln!(out_html, "<h3>Top endpoints by credits</h3><table><tr><th align=\"left\">Endpoint</th><th>Calls</th><th>Credits</th></tr>");
    for (e, calls, credits) in &v.details.top_endpoints {
        let _ = writeln!(
            text,
            "  {:<44} {calls:>8} calls {credits:>10} credits",
            one_line(e)
        );
        let _ = writeln!(out_html, "<tr><td><code>{}</code></td><td align=\"right\">{calls}</td><td align=\"right\">{credits}</td></tr>", html(e));
    }
    let _ = writeln!(out_html, "</table>");
}

const NEXT_STEPS: &str = "At 100 % of the allotment, further API calls are rejected with HTTP 429 \
THRESHOLD_EXCEEDED until the allotment resets at the next local midnight. To keep calling, buy \
additional credits per day (Setup → Developer Space → API → Buy credits); they apply from the \
day they are valid.";

/// A near-limit alert: `threshold` % was reached at `at`.
pub fn near_limit(
    v: &OrgDayView<'_>,
    threshold: u64,
    at: &Crossing,
    now: DateTime<Utc>,
) -> Rendered {
    crossing_message(
        v,
        &format!("reached {threshold}% of its daily API allotment"),
        at,
        now,
    )
}

/// An overage alert: the allotment was exceeded at `at`.
pub fn overage(v: &OrgDayView<'_>, at: &Crossing, now: DateTime<Utc>) -> Rendered {
    crossing_message(v, "exceeded its daily API allotment", at, now)
}

fn crossing_message(v: &OrgDayView<'_>, news: &str, at: &Crossing, now: DateTime<Utc>) -> Rendered {
    let r = v.row;
    let name = one_line(v.org_name);
    let subject = format!("[creditd] {name} ({}) {news} on {}", r.org_id, r.local_date);
    let when = local(v.tz, at.ts);
    let late = now.timestamp_millis() - at.ts > 3_600_000;
    let mut text = String::new();
    let mut h = String::new();
    let _ = writeln!(
        text,
        "{name} (org {}) {news} on {}.",
        r.org_id, r.local_date
    );
    let _ = writeln!(
        text,
        "It happened at {when} (request {}).",
        one_line(&at.request_id)
    );
    let _ = writeln!(
        h,
        "<p><b>{}</b> (org {}) {} on {}.</p>",
        html(&name),
        html(&r.org_id),
        html(news),
        r.local_date
    );
    let _ = writeln!(
        h,
        "<p>It happened at <b>{}</b> (request <code>{}</code>).</p>",
        html(&when),
        html(&at.request_id)
    );
    if late {
        let seen = now.with_timezone(&v.tz).format("%Y-%m-%d %H:%M %Z");
        let _ = writeln!(
            text,
            "This is reported late: the logs showing it arrived by {seen}."
        );
        let _ = writeln!(
            h,
            "<p><i>Reported late: the logs showing it arrived by {}.</i></p>",
            html(&seen.to_string())
        );
    }
    let _ = writeln!(text);
    breakdown(v, &mut text, &mut h);
    endpoints(v, &mut text, &mut h);
    let _ = writeln!(text, "\nWhat happens next: {NEXT_STEPS}");
    let _ = writeln!(h, "<h3>What happens next</h3><p>{}</p>", html(NEXT_STEPS));
    Rendered {
        subject,
        text,
        html: wrap(&h),
        chart: None,
    }
}

/// The daily summary at close; `revision` marks an amended summary.
pub fn summary(v: &OrgDayView<'_>, revision: u64, concurrency_limit: u64) -> Rendered {
    let r = v.row;
    let name = one_line(v.org_name);
    let amended = if revision > 0 {
        format!(" (amended, revision {revision})")
    } else {
        String::new()
    };
    let subject = format!(
        "[creditd] {name} ({}) daily API usage for {}: {}% used{amended}",
        r.org_id,
        r.local_date,
        format_pct(pct_hundredths(r.used, r.allotted))
    );
    let mut text = String::new();
    let mut h = String::new();
    let _ = writeln!(
        text,
        "API details for {name} (org {}), local day {} ({}){amended}.\n",
        r.org_id,
        r.local_date,
        v.tz.name()
    );
    let _ = writeln!(
        h,
        "<h2>API details — {} (org {})</h2><p>Local day {} ({}){}</p>",
        html(&name),
        html(&r.org_id),
        r.local_date,
        html(v.tz.name()),
        html(&amended)
    );
    breakdown(v, &mut text, &mut h);
    let _ = writeln!(text, "  {:<20} {concurrency_limit}", "Concurrency limit");
    let _ = writeln!(
        text,
        "  {:<20} {}",
        "Peak concurrency", v.details.peak_concurrency
    );
    let _ = writeln!(
        text,
        "  {:<20} {} ({} billable, {} unpriced)",
        "Calls", r.calls, r.billable_calls, r.unpriced_calls
    );
    let _ = writeln!(h, "<p>Concurrency limit {concurrency_limit}; observed peak {}. Calls: {} ({} billable, {} unpriced).</p>", v.details.peak_concurrency, r.calls, r.billable_calls, r.unpriced_calls);
    for c in v.crossings {
        let what = if c.threshold == 100 {
            "Exceeded the allotment".to_string()
        } else {
            format!("Reached {}%", c.threshold)
        };
        let _ = writeln!(text, "  {what} at {}", local(v.tz, c.ts));
        let _ = writeln!(h, "<p>{} at {}</p>", html(&what), html(&local(v.tz, c.ts)));
    }
    let _ = writeln!(
        text,
        "\nHourly usage ({} per hour from local midnight):",
        unit(r)
    );
    let max = v.details.hourly.iter().copied().max().unwrap_or(0).max(1);
    for (i, u) in v.details.hourly.iter().enumerate() {
        let bar = "#".repeat(((u * 40).div_ceil(max)) as usize);
        let _ = writeln!(text, "  +{i:02}h {u:>9} {bar}");
    }
    let caption = format!(
        "One bar per hour from local midnight (left) to the next (right), {} hours; \
         the top line is the busiest hour, {max} {}, the others its quarters.",
        v.details.hourly.len(),
        unit(r)
    );
    let _ = writeln!(
        h,
        "<h3>Hourly usage</h3><p><img src=\"cid:chart\" alt=\"Hourly usage chart\" width=\"600\" height=\"200\"><br><small>{}</small></p>",
        html(&caption)
    );
    endpoints(v, &mut text, &mut h);
    if !v.details.unpriced.is_empty() {
        let _ = writeln!(text, "\nUnpriced calls (no pricing rule matched):");
        let _ = writeln!(h, "<h3>Unpriced calls</h3><ul>");
        for (e, n) in &v.details.unpriced {
            let _ = writeln!(text, "  {:<44} {n:>8}", one_line(e));
            let _ = writeln!(h, "<li><code>{}</code>: {n}</li>", html(e));
        }
        let _ = writeln!(h, "</ul>");
    }
    Rendered {
        subject,
        text,
        html: wrap(&h),
        chart: Some(v.details.hourly.clone()),
    }
}

/// Everything the ops digest shows.
#[derive(Debug, Clone, Default)]
pub struct DigestView {
    pub date: NaiveDate,
    /// (org_id, name, local_date, model, pct, over?)
    pub limits: Vec<(String, String, String, String, String, bool)>,
    /// (org_id, name, local_date, legacy_limit, credit allotment, headroom)
    pub grandfathered: Vec<(String, String, String, u64, u64, u64)>,
    /// (reason, count)
    pub quarantine: Vec<(String, u64)>,
    /// (file, reason, count)
    pub quarantine_by_file: Vec<(String, String, u64)>,
    /// (endpoint, calls)
    pub unpriced: Vec<(String, u64)>,
    /// (org_id, calls with charged_credits, charged, computed)
    pub drift: Vec<(String, u64, u64, u64)>,
    /// (file, status, lines, accepted, unique, duplicates, quarantined)
    pub files: Vec<(String, String, u64, u64, u64, u64, u64)>,
    /// Crossings too old to mail (`max_age`): (key, when)
    pub expired: Vec<(String, String)>,
    /// Open problems (DESIGN §7): (unit, where, attempts, last error)
    pub problems: Vec<(String, String, u64, String)>,
    /// What retention removed since the previous digest (DESIGN §6): (when, area, what, bytes)
    pub purges: Vec<(String, String, String, u64)>,
}

fn table(text: &mut String, h: &mut String, title: &str, head: &[&str], rows: &[Vec<String>]) {
    let _ = writeln!(text, "\n{title}");
    let _ = writeln!(h, "<h3>{}</h3>", html(title));
    if rows.is_empty() {
        let _ = writeln!(text, "  (none)");
        let _ = writeln!(h, "<p>(none)</p>");
        return;
    }
    let _ = writeln!(text, "  {}", head.join(" | "));
    let _ = write!(h, "<table><tr>");
    for c in head {
        let _ = write!(h, "<th align=\"left\">{}</th>", html(c));
    }
    let _ = writeln!(h, "</tr>");
    for r in rows {
        let cells: Vec<String> = r.iter().map(|c| one_line(c)).collect();
        let _ = writeln!(text, "  {}", cells.join(" | "));
        let _ = write!(h, "<tr>");
        for c in r {
            let _ = write!(h, "<td>{}</td>", html(c));
        }
        let _ = writeln!(h, "</tr>");
    }
    let _ = writeln!(h, "</table>");
}

/// The daily ops digest.
pub fn digest(d: &DigestView) -> Rendered {
    let over = d.limits.iter().filter(|l| l.5).count();
    let subject = format!(
        "[creditd] ops digest {}: {} org-day(s) over, {} near the limit, {} quarantined line(s)",
        d.date,
        over,
        d.limits.len() - over,
        d.quarantine.iter().map(|q| q.1).sum::<u64>()
    );
    let subject = if d.problems.is_empty() {
        subject
    } else {
        format!("{subject}, {} open problem(s)", d.problems.len())
    };
    let mut text = format!("creditd ops digest for {}\n", d.date);
    let mut h = format!("<h2>creditd ops digest for {}</h2>\n", d.date);
    let s = |v: &dyn ToString| v.to_string();
    if !d.problems.is_empty() {
        table(
            &mut text,
            &mut h,
            "Open problems (each is tried again at every run)",
            &["unit", "where", "attempts", "last error"],
            &d.problems
                .iter()
                .map(|p| vec![p.0.clone(), p.1.clone(), s(&p.2), p.3.clone()])
                .collect::<Vec<_>>(),
        );
    }
    table(
        &mut text,
        &mut h,
        "Orgs over or near their limits",
        &["org", "name", "day", "model", "% used", "over"],
        &d.limits
            .iter()
            .map(|l| {
                vec![
                    l.0.clone(),
                    l.1.clone(),
                    l.2.clone(),
                    l.3.clone(),
                    l.4.clone(),
                    if l.5 { "over".into() } else { "near".into() },
                ]
            })
            .collect::<Vec<_>>(),
    );
    // One row per org and figures: consecutive days with the same limits share a row.
    type Figures<'a> = (&'a str, &'a str, u64, u64, u64);
    let mut impact: Vec<(Figures<'_>, Vec<&str>)> = Vec::new();
    for g in &d.grandfathered {
        let k = (g.0.as_str(), g.1.as_str(), g.3, g.4, g.5);
        match impact.iter_mut().find(|(key, _)| *key == k) {
            Some((_, days)) => days.push(&g.2),
            None => impact.push((k, vec![&g.2])),
        }
    }
    table(
        &mut text,
        &mut h,
        "Migration impact: grandfathered orgs",
        &[
            "org",
            "name",
            "days",
            "legacy limit",
            "credit allotment",
            "headroom",
        ],
        &impact
            .iter()
            .map(|((org, name, legacy, credit, headroom), days)| {
                let days = match days.as_slice() {
                    [one] => one.to_string(),
                    [first, .., last] => format!("{first} to {last} ({} days)", days.len()),
                    [] => String::new(),
                };
                vec![
                    org.to_string(),
                    name.to_string(),
                    days,
                    s(legacy),
                    s(credit),
                    s(headroom),
                ]
            })
            .collect::<Vec<_>>(),
    );
    if !impact.is_empty() {
        let note =
            "A grandfathered day is allotted max(legacy limit, base + variable) + additional; \
                    the headroom is what that gives above the credit allotment alone.";
        let _ = writeln!(text, "  {note}");
        let _ = writeln!(h, "<p>{}</p>", html(note));
    }
    table(
        &mut text,
        &mut h,
        "Quarantined lines by reason",
        &["reason", "lines"],
        &d.quarantine
            .iter()
            .map(|q| vec![q.0.clone(), s(&q.1)])
            .collect::<Vec<_>>(),
    );
    table(
        &mut text,
        &mut h,
        "Quarantined lines by file",
        &["file", "reason", "lines"],
        &d.quarantine_by_file
            .iter()
            .map(|q| vec![q.0.clone(), q.1.clone(), s(&q.2)])
            .collect::<Vec<_>>(),
    );
    table(
        &mut text,
        &mut h,
        "Unpriced endpoints",
        &["endpoint", "calls"],
        &d.unpriced
            .iter()
            .map(|u| vec![u.0.clone(), s(&u.1)])
            .collect::<Vec<_>>(),
    );
    table(
        &mut text,
        &mut h,
        "Gateway drift (charged_credits vs computed)",
        &["org", "calls", "charged", "computed", "difference"],
        &d.drift
            .iter()
            .map(|x| {
                vec![
                    x.0.clone(),
                    s(&x.1),
                    s(&x.2),
                    s(&x.3),
                    format!("{:+}", i128::from(x.2) - i128::from(x.3)),
                ]
            })
            .collect::<Vec<_>>(),
    );
    table(
        &mut text,
        &mut h,
        "Input files",
        &[
            "file",
            "status",
            "lines",
            "accepted",
            "unique",
            "duplicates",
            "quarantined",
        ],
        &d.files
            .iter()
            .map(|f| {
                vec![
                    f.0.clone(),
                    f.1.clone(),
                    s(&f.2),
                    s(&f.3),
                    s(&f.4),
                    s(&f.5),
                    s(&f.6),
                ]
            })
            .collect::<Vec<_>>(),
    );
    if !d.expired.is_empty() {
        table(
            &mut text,
            &mut h,
            "Crossings older than max_age (not mailed)",
            &["message", "when"],
            &d.expired
                .iter()
                .map(|e| vec![e.0.clone(), e.1.clone()])
                .collect::<Vec<_>>(),
        );
    }
    if !d.purges.is_empty() {
        table(
            &mut text,
            &mut h,
            "Removed by retention",
            &["when", "area", "what", "bytes"],
            &d.purges
                .iter()
                .map(|p| vec![p.0.clone(), p.1.clone(), p.2.clone(), s(&p.3)])
                .collect::<Vec<_>>(),
        );
    }
    Rendered {
        subject,
        text,
        html: wrap(&h),
        chart: None,
    }
}

/// Everything the backfill report shows.
pub struct BackfillView<'a> {
    pub id: &'a str,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub orgs: &'a [String],
    pub changes: &'a [crate::backfill::Change],
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

/// The backfill report to ops: per org-day what changed.
pub fn backfill(v: &BackfillView<'_>) -> Rendered {
    let subject = format!(
        "[creditd] backfill {} to {}: {} org-day(s) changed",
        v.from, v.to, v.changed_org_days
    );
    let summary = backfill_summary(v);
    let mut text = format!("{}\n", one_line(&summary));
    let mut h = format!("<h2>{}</h2>\n<p>{}</p>\n", html(&subject), html(&summary));
    table(
        &mut text,
        &mut h,
        "Changes",
        &["org", "day", "column", "before", "after"],
        &v.changes
            .iter()
            .map(|c| {
                vec![
                    c.org_id.clone(),
                    c.local_date.clone(),
                    c.column.clone(),
                    c.before.clone(),
                    c.after.clone(),
                ]
            })
            .collect::<Vec<_>>(),
    );
    Rendered {
        subject,
        text,
        html: wrap(&h),
        chart: None,
    }
}

/// The ops message sent once when the daemon rejects a changed config or registry and goes on
/// with the last valid version.
pub fn config_rejected(problems: &[String]) -> Rendered {
    let subject = format!(
        "[creditd] config rejected ({} problem(s)): running on the last valid version",
        problems.len()
    );
    let mut text = String::from(
        "creditd re-read its config, registry, purchases and pricing before a job and found \
         problems. It keeps running on the last valid version until they are fixed \
         (`creditd check` lists them).\n\n",
    );
    let mut h = format!("<p>{}</p>\n<ul>\n", html(text.trim()));
    for p in problems {
        let _ = writeln!(text, "  {}", one_line(p));
        let _ = writeln!(h, "<li>{}</li>", html(p));
    }
    h.push_str("</ul>\n");
    Rendered {
        subject,
        text,
        html: wrap(&h),
        chart: None,
    }
}

/// "A gateway went silent" to ops (`silence:<gateway>:<since>`, DESIGN §6).
pub fn gateway_silence(gateway: &str, last_file: &str, since: &str, silence: &str) -> Rendered {
    let g = one_line(gateway);
    let subject = format!("[creditd] gateway {g} silent: no file since {since}");
    let text = format!(
        "Gateway {g} has sent no log file for more than {silence} ([alerts] gateway_silence).\n\n\
         Its last file: {}\nFirst seen by ingest: {since}\n\n\
         Calls of that gateway are not being billed until its files arrive. Check the gateway \
         and its log shipping; when a file arrives, ops get one message that it is back.\n",
        one_line(last_file)
    );
    let h = format!(
        "<p>Gateway <b>{}</b> has sent no log file for more than {} (<code>[alerts] gateway_silence</code>).</p>\n\
         <table><tr><td>Last file</td><td>{}</td></tr><tr><td>First seen by ingest</td><td>{}</td></tr></table>\n\
         <p>Calls of that gateway are not being billed until its files arrive. Check the gateway and its log shipping; when a file arrives, ops get one message that it is back.</p>\n",
        html(gateway),
        html(silence),
        html(last_file),
        html(since)
    );
    Rendered {
        subject,
        text,
        html: wrap(&h),
        chart: None,
    }
}

/// "A silent gateway is back" to ops (`back:<gateway>:<at>`).
pub fn gateway_back(gateway: &str, file: &str, since: &str, at: &str) -> Rendered {
    let g = one_line(gateway);
    let subject = format!("[creditd] gateway {g} back: files again since {at}");
    let text = format!(
        "Gateway {g} is sending log files again.\n\nSilent since: {since}\nFirst file back: {} (first seen {at})\n",
        one_line(file)
    );
    let h = format!(
        "<p>Gateway <b>{}</b> is sending log files again.</p>\n\
         <table><tr><td>Silent since</td><td>{}</td></tr><tr><td>First file back</td><td>{} (first seen {})</td></tr></table>\n",
        html(gateway),
        html(since),
        html(file),
        html(at)
    );
    Rendered {
        subject,
        text,
        html: wrap(&h),
        chart: None,
    }
}

/// The terms an org-day's usage is measured against: those its ledger row was computed with,
/// or today's rules for a day without a row.
pub struct UsageFigures {
    pub model: String,
    pub reason: String,
    pub base: u64,
    pub variable: u64,
    pub additional: u64,
    pub allotted: u64,
    pub legacy_limit: u64,
}

/// The "API details" view of one org-day (`creditd usage`).
pub struct UsageView<'a> {
    pub org_id: &'a str,
    pub org_name: &'a str,
    pub day: NaiveDate,
    pub tz: Tz,
    pub closed: bool,
    pub edition: &'a str,
    pub agents: u64,
    pub light_agents: u64,
    pub additional_excess: u64,
    pub concurrency: u64,
    pub figures: UsageFigures,
    /// The stored ledger row, if the day has one.
    pub row: Option<&'a LedgerRow>,
    pub crossings: &'a [Crossing],
}

/// Renders the "API details" view for the terminal. Org names and request ids come from the
/// registry and the logs: control characters (an escape sequence) never reach the terminal.
pub fn usage(v: &UsageView<'_>) -> String {
    let local = |ts: i64| {
        DateTime::<Utc>::from_timestamp_millis(ts)
            .map(|t| {
                t.with_timezone(&v.tz)
                    .format("%Y-%m-%d %H:%M:%S%.3f %Z")
                    .to_string()
            })
            .unwrap_or_default()
    };
    let f = &v.figures;
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "API details — org {} ({})",
        one_line(v.org_id),
        one_line(v.org_name)
    );
    let _ = writeln!(
        w,
        "  Local day        {} ({}), {}",
        v.day,
        v.tz.name(),
        if v.closed { "closed" } else { "open" }
    );
    let _ = writeln!(
        w,
        "  Edition          {} ({} agents, {} light agents not counted)",
        v.edition, v.agents, v.light_agents
    );
    let _ = writeln!(w, "  Model            {} — {}", f.model, f.reason);
    let _ = writeln!(w, "  Base credits     {:>12}", f.base);
    let _ = writeln!(w, "  Variable credits {:>12}", f.variable);
    let _ = writeln!(w, "  Additional       {:>12}", f.additional);
    let _ = writeln!(
        w,
        "  Allotted         {:>12}   (legacy call limit {})",
        f.allotted, f.legacy_limit
    );
    if v.additional_excess > 0 {
        let _ = writeln!(
            w,
            "  Purchased above the edition cap, not granted: {}",
            v.additional_excess
        );
    }
    let used = v.row.map_or(0, |r| r.used);
    let unit = if f.model == "legacy" {
        "calls"
    } else {
        "credits"
    };
    let _ = writeln!(w, "  Used             {used:>12} {unit}");
    let _ = writeln!(
        w,
        "  % used           {:>12}",
        format_pct(pct_hundredths(used, f.allotted))
    );
    let _ = writeln!(
        w,
        "  Concurrency      {:>12} concurrent calls",
        v.concurrency
    );
    let Some(r) = v.row else {
        let _ = writeln!(w, "  Calls            {:>12}", 0);
        return out;
    };
    let _ = writeln!(
        w,
        "  Calls            {:>12} ({} billable, {} credits, {} unpriced)",
        r.calls, r.billable_calls, r.credits, r.unpriced_calls
    );
    if r.used > r.allotted {
        let _ = writeln!(w, "  Overage          {:>12}", r.used - r.allotted);
    }
    for c in v.crossings {
        let what = if c.threshold == 100 {
            "Exceeded".to_string()
        } else {
            format!("Reached {}%", c.threshold)
        };
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
    out
}

fn wrap(body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"></head>\n<body style=\"font-family: sans-serif\">\n{body}</body></html>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_one_line() {
        assert_eq!(
            html("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(
            one_line("Evil\r\nBcc: victim@example.com\tCorp"),
            "Evil Bcc: victim@example.com Corp"
        );
    }

    #[test]
    fn digest_folds_days_with_the_same_migration_figures_into_one_row() {
        let g = |day: &str, legacy: u64| {
            let org = ("7".to_string(), "Seven <b>".to_string());
            (org.0, org.1, day.to_string(), legacy, 50_000, 10_000)
        };
        let view = DigestView {
            date: NaiveDate::from_ymd_opt(2025, 11, 4).unwrap(),
            grandfathered: vec![
                g("2025-10-30", 60_000),
                g("2025-10-31", 60_000),
                g("2025-11-01", 60_000),
                g("2025-11-02", 70_000),
            ],
            ..Default::default()
        };
        let r = digest(&view);
        assert!(
            r.text.contains(
                "7 | Seven <b> | 2025-10-30 to 2025-11-01 (3 days) | 60000 | 50000 | 10000"
            ),
            "{}",
            r.text
        );
        assert!(r
            .text
            .contains("7 | Seven <b> | 2025-11-02 | 70000 | 50000 | 10000"));
        assert!(r.html.contains("Seven &lt;b&gt;") && !r.html.contains("Seven <b>"));
        assert!(r.subject.contains("0 org-day(s) over"), "{}", r.subject);
    }
}
