//! The words and tables of every email: near-limit and overage alerts, the daily summary, the
//! ops digest. Pure code: views in, subject + plain text + HTML out. Every org-supplied string
//! is escaped for HTML and stripped of control characters for headers.

use std::fmt::Write as _;

use chrono::{DateTime, NaiveDate, Utc};
use chrono_tz::Tz;

use crate::allotment::DayTerms;
use crate::store::{Crossing, LedgerRow};

mod backfill;
mod digest;
mod explain;
pub mod format;
mod layout;
mod orgday;
pub use backfill::{backfill, backfill_summary, BackfillView, Change, DayChange, DayFigures};
pub use digest::{digest, DigestView, FileRow, LimitRow, StuckMessage};

/// The most HTML a message carries (DESIGN §5, "Size"): Gmail clips a message past ~102 KB.
/// Every message kind keeps under it whatever the volume or the length of a log line's
/// strings.
pub const MAX_HTML: usize = 100_000;
pub use explain::{explain_csv, explain_text, EXPLAIN_HEADER};
pub use layout::{Align, Doc, Tone};
pub use orgday::{alert, summary, OrgDayView};

/// A rendered message, before it becomes MIME.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
    /// The day's usage, drawn as the inline chart `cid:chart` when present.
    pub chart: Option<Chart>,
    /// The lower keys this message reports (`X-Creditd-Covers`, DESIGN §5).
    pub covers: Vec<String>,
    /// Files attached whole: (file name, CSV text).
    pub attachments: Vec<(String, String)>,
}

/// The width and height of the usage chart, in px.
pub const CHART_W: u32 = 600;
pub const CHART_H: u32 = 320;

/// What the usage chart of an org-day draws (DESIGN §5 "charts"): the running total per five
/// minutes against the allotment line, the crossings marked, hour labels in local time.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chart {
    /// Units per five minutes from local midnight.
    pub per_5min: Vec<u64>,
    /// Units per hour from local midnight (the second panel).
    pub hourly: Vec<u64>,
    pub allotted: u64,
    /// `credits` or `calls`.
    pub unit: &'static str,
    /// The local hour (`HH`) at the start of each hour of the day.
    pub hour_labels: Vec<String>,
    /// (label, five-minute slot) of each threshold crossing.
    pub crossings: Vec<(String, usize)>,
    /// The zone of the labels: `CDT (UTC-05:00)`.
    pub zone: String,
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

/// The ops message sent once when the daemon rejects a changed config or registry and goes on
/// with the last valid version.
pub fn config_rejected(problems: &[String]) -> Rendered {
    let mut last = Rendered::default();
    for shown in [30, 5] {
        last = config_rejected_fit(problems, shown);
        if last.html.len() <= MAX_HTML {
            break;
        }
    }
    last
}

/// The message with the first `shown` problems, each cut to 300 characters (a problem quotes
/// the value it rejects, which can be long).
fn config_rejected_fit(problems: &[String], shown: usize) -> Rendered {
    let subject = format!(
        "[creditd] config rejected ({} problem(s)): running on the last valid version",
        problems.len()
    );
    let mut doc = Doc::default();
    doc.headline(
        Tone::Alarm,
        &format!(
            "The changed config was rejected ({} problem(s)): creditd runs on the last valid version.",
            problems.len()
        ),
    );
    doc.para(
        "creditd re-read its config, registry, purchases and pricing before a job and found \
         problems. It keeps running on the last valid version until they are fixed \
         (`creditd check` lists them).",
    );
    doc.heading("Problems");
    let rows: Vec<Vec<String>> = problems
        .iter()
        .take(shown)
        .map(|p| vec![format::cut(p, 300)])
        .collect();
    doc.table(&[("Problem", Align::Left)], &rows);
    if problems.len() > shown {
        doc.note(&format!(
            "{} more not shown; `creditd check` lists them all.",
            problems.len() - shown
        ));
    }
    Rendered {
        html: doc.page(&subject),
        subject,
        text: doc.text,
        ..Rendered::default()
    }
}

/// "A gateway went silent" to ops (`silence:<gateway>:<since>`, DESIGN §6).
pub fn gateway_silence(gateway: &str, last_file: &str, since: &str, silence: &str) -> Rendered {
    let g = one_line(gateway);
    let subject = format!("[creditd] gateway {g} silent: no file since {since}");
    let mut doc = Doc::default();
    doc.headline(
        Tone::Warn,
        &format!("Gateway {g} has sent no log file for more than {silence}."),
    );
    doc.pairs(&[
        ("Last file".into(), last_file.to_string()),
        ("First seen by ingest".into(), since.to_string()),
        (
            "Threshold".into(),
            format!("{silence} ([alerts] gateway_silence)"),
        ),
    ]);
    doc.para(
        "Calls of that gateway are not being billed until its files arrive. Check the gateway \
         and its log shipping; when a file arrives, ops get one message that it is back.",
    );
    Rendered {
        html: doc.page(&subject),
        subject,
        text: doc.text,
        ..Rendered::default()
    }
}

/// "A silent gateway is back" to ops (`back:<gateway>:<at>`).
pub fn gateway_back(gateway: &str, file: &str, since: &str, at: &str) -> Rendered {
    let g = one_line(gateway);
    let subject = format!("[creditd] gateway {g} back: files again since {at}");
    let mut doc = Doc::default();
    doc.headline(
        Tone::Info,
        &format!("Gateway {g} is sending log files again."),
    );
    doc.pairs(&[
        ("Silent since".into(), since.to_string()),
        (
            "First file back".into(),
            format!("{file} (first seen {at})"),
        ),
    ]);
    Rendered {
        html: doc.page(&subject),
        subject,
        text: doc.text,
        ..Rendered::default()
    }
}

/// When an open day reaches 100 % at the pace of the last hour (DESIGN §5.5).
pub struct Forecast {
    /// Units used in the last hour.
    pub last_hour: u64,
    /// When, or `None`: not before the reset.
    pub eta: Option<i64>,
}

/// The "API details" view of one org-day (`creditd usage`).
pub struct UsageView<'a> {
    /// The forecast of an open day below 100 %.
    pub forecast: Option<Forecast>,
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
    /// The terms usage is measured against: those the ledger row was computed with, or
    /// today's rules for a day without a row.
    pub figures: DayTerms,
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
    let unit = f.model.unit();
    let _ = writeln!(w, "  Used             {used:>12} {unit}");
    // An allotment of 0 has no percentage, as in the messages.
    let _ = writeln!(
        w,
        "  % used           {:>12}",
        format::percent_figure(used, f.allotted)
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
    if let Some(f) = &v.forecast {
        let when = match f.eta {
            Some(t) => format!("100% at about {}", format::clock(v.tz, t)),
            None => "100% not before the reset at midnight".to_string(),
        };
        let _ = writeln!(
            w,
            "  Forecast         {when}, at the pace of the last hour ({} {unit})",
            format::thousands(f.last_hour)
        );
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
    fn a_config_rejected_message_of_many_long_problems_stays_under_the_size_limit() {
        let problems: Vec<String> = (0..5_000)
            .map(|i| format!("orgs.csv line {i}: name {}", "<\"&'".repeat(10_000)))
            .collect();
        let r = config_rejected(&problems);
        assert!(r.html.len() <= MAX_HTML, "{} bytes", r.html.len());
        assert!(r.subject.contains("5000 problem(s)"), "{}", r.subject);
        assert!(r.text.contains("orgs.csv line 0: name <\"&'"), "{}", r.text);
        assert!(
            r.text
                .contains("4970 more not shown; `creditd check` lists them all."),
            "{}",
            r.text
        );
        assert!(!r.text.contains("orgs.csv line 30:"), "{}", r.text);
    }

    /// A legacy limit of 0 has no percentage: `usage` says n/a instead of a 20-digit figure.
    #[test]
    fn usage_on_an_allotment_of_0_reads_n_a() {
        let row = crate::store::LedgerRow {
            org_id: "7".into(),
            local_date: NaiveDate::from_ymd_opt(2025, 10, 8).unwrap(),
            terms: crate::allotment::DayTerms {
                model: crate::allotment::Model::Legacy,
                reason: "legacy".into(),
                edition: "free".into(),
                agents: 0,
                light_agents: 0,
                base: 0,
                variable: 0,
                additional: 0,
                additional_excess: 0,
                legacy_limit: 0,
                allotted: 0,
                concurrency: 0,
            },
            calls: 3,
            billable_calls: 3,
            credits: 0,
            used: 3,
            exceeded_at: None,
            unpriced_calls: 0,
            revision: 0,
        };
        fn view<'a>(
            row: &'a crate::store::LedgerRow,
            stored: Option<&'a crate::store::LedgerRow>,
        ) -> UsageView<'a> {
            UsageView {
                forecast: None,
                org_id: "7",
                org_name: "Seven",
                day: NaiveDate::from_ymd_opt(2025, 10, 8).unwrap(),
                tz: chrono_tz::UTC,
                closed: true,
                edition: "free",
                agents: 0,
                light_agents: 0,
                additional_excess: 0,
                concurrency: 0,
                figures: row.terms.clone(),
                row: stored,
                crossings: &[],
            }
        }
        let used = usage(&view(&row, Some(&row)));
        assert!(
            used.contains("% used           n/a (allotment 0)"),
            "{used}"
        );
        let unused = usage(&view(&row, None));
        assert!(unused.contains("% used                   0.00"), "{unused}");
    }

    /// The config-rejected message's text against its reviewed copy (the daemon sends it; the
    /// sample run does not): `CREDITD_BLESS=1` rewrites it.
    #[test]
    fn the_config_rejected_message_reads_as_reviewed() {
        let r = config_rejected(&[
            "orgs.csv:4: timezone: unknown time zone \"Europe/Berlinn\"".to_string(),
            "creditd.toml:12: [alerts] ops_to: not a mail address: \"ops@\"".to_string(),
        ]);
        let got = format!("Subject: {}\n\n{}", r.subject, r.text);
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/golden/config-rejected.txt");
        if std::env::var_os("CREDITD_BLESS").is_some() {
            std::fs::write(&path, &got).unwrap();
        }
        let want = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            got, want,
            "(if intended: CREDITD_BLESS=1 cargo test, review the diff)"
        );
    }
}
