//! The daily ops digest (DESIGN §5.3), written for the engineer on call: severity first (over,
//! near, open problems, stuck or failed messages, held crossings), whether each org was
//! mailed, counts instead of long lists, every full list attached as CSV, and an HTML part
//! that stays under [`MAX_HTML`] bytes whatever the volume.

use chrono::NaiveDate;

use super::format::{cut, percent, thousands};
use super::layout::{Align, Doc, Tone};
use super::{Rendered, MAX_HTML};

/// An org-day over or near its limit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitRow {
    pub org_id: String,
    pub name: String,
    pub local_date: NaiveDate,
    pub model: crate::allotment::Model,
    pub used: u64,
    pub allotted: u64,
    pub over: bool,
    /// The highest threshold reached (100 when over).
    pub threshold: u64,
    /// What became of its alert: `mailed`, `queued`, `held`, `failed`, `not queued`, …
    pub mailed: String,
}

/// A message that could not be sent yet: retrying or parked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StuckMessage {
    pub key: String,
    pub status: String,
    pub attempts: u64,
    pub since: String,
    pub error: String,
}

/// An input file processed since the previous digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRow {
    pub file: String,
    pub status: crate::store::FileStatus,
    pub lines: u64,
    pub accepted: u64,
    pub unique: u64,
    pub duplicates: u64,
    pub quarantined: u64,
}

/// Everything the ops digest shows.
#[derive(Debug, Clone, Default)]
pub struct DigestView {
    pub date: NaiveDate,
    /// Org-days closed since the previous digest that reached a threshold, any order.
    pub limits: Vec<LimitRow>,
    /// (org_id, name, local_date, legacy_limit, credit allotment, headroom)
    pub grandfathered: Vec<(String, String, NaiveDate, u64, u64, u64)>,
    /// (reason, count)
    pub quarantine: Vec<(String, u64)>,
    /// (file, reason, count)
    pub quarantine_by_file: Vec<(String, String, u64)>,
    /// (endpoint, calls)
    pub unpriced: Vec<(String, u64)>,
    /// Distinct unpriced endpoints in all; `unpriced` lists the most called of them.
    pub unpriced_endpoints: u64,
    /// (org_id, calls with charged_credits, charged, computed)
    pub drift: Vec<(String, u64, u64, u64)>,
    pub files: Vec<FileRow>,
    /// Crossings too old to mail (`max_age`, status `held`): (key, subject, keys it covers)
    pub held: Vec<(String, String, String)>,
    /// Open problems (DESIGN §7): (unit, where, attempts, last error)
    pub problems: Vec<(String, String, u64, String)>,
    /// Messages retrying or parked.
    pub stuck: Vec<StuckMessage>,
    /// What retention removed since the previous digest (DESIGN §6): (when, area, what, bytes)
    pub purges: Vec<(String, String, String, u64)>,
}

/// One list of the digest: shown up to a number of rows, attached whole as CSV.
struct List<'a> {
    title: &'a str,
    csv: &'a str,
    head: Vec<(&'a str, Align)>,
    rows: Vec<Vec<String>>,
    /// Rows beyond `rows` that are counted but in neither the message nor the CSV.
    omitted: u64,
}

/// The most the unpriced endpoints attached to a digest take (paths with unique ids can make
/// every call an endpoint of its own; mail servers refuse messages of 10 MB by default): the
/// most called first, each path cut to 500 characters; the rest are counted.
const UNPRICED_CSV_BYTES: usize = 1_000_000;

/// The unpriced endpoints the digest lists and attaches, within [`UNPRICED_CSV_BYTES`].
fn unpriced_rows(d: &DigestView) -> Vec<Vec<String>> {
    let mut bytes = 0;
    d.unpriced
        .iter()
        .map(|(path, calls)| vec![cut(path, 500), thousands(*calls)])
        .take_while(|row| {
            bytes += row.iter().map(|c| c.len() + 3).sum::<usize>();
            bytes <= UNPRICED_CSV_BYTES
        })
        .collect()
}

/// A cell as the digest shows it: at most 160 characters (the CSV has it whole, but for the
/// unpriced endpoints' paths: [`UNPRICED_CSV_BYTES`]).
fn cell(s: &str) -> String {
    cut(s, 160)
}

/// A CSV cell a spreadsheet will not run: text starting with `=`, `+`, `-`, `@`, a tab or a
/// carriage return (a file name a gateway chose, an endpoint) gets a leading `'`; numbers
/// (`-5`, `+16`) stay as they are.
pub fn csv_cell(s: &str) -> std::borrow::Cow<'_, str> {
    let mut chars = s.chars();
    let first = chars.next();
    let rest = chars.as_str();
    let number = matches!(first, Some('+' | '-'))
        && !rest.is_empty()
        && rest
            .chars()
            .all(|c| c.is_ascii_digit() || c == ',' || c == '.');
    let risky = matches!(first, Some('=' | '+' | '-' | '@' | '\t' | '\r'));
    if risky && !number {
        format!("'{s}").into()
    } else {
        s.into()
    }
}

/// A CSV file: a header, then the rows, every cell through [`csv_cell`].
pub fn csv_of<S: AsRef<str>>(head: &[&str], rows: &[Vec<S>]) -> String {
    let mut w = csv::Writer::from_writer(Vec::new());
    let _ = w.write_record(head);
    for r in rows {
        let _ = w.write_record(r.iter().map(|c| csv_cell(c.as_ref()).into_owned()));
    }
    String::from_utf8(w.into_inner().unwrap_or_default()).unwrap_or_default()
}

fn head_names<'a>(head: &[(&'a str, Align)]) -> Vec<&'a str> {
    head.iter().map(|h| h.0).collect()
}

impl List<'_> {
    /// Shows the list (its first `limit` rows) in `doc`; returns whether rows were left out.
    fn show(&self, doc: &mut Doc, limit: usize) -> bool {
        let total = self.rows.len() as u64 + self.omitted;
        doc.heading(&format!("{}: {}", self.title, thousands(total)));
        if self.rows.is_empty() {
            doc.note("None.");
            return false;
        }
        let shown: Vec<Vec<String>> = self
            .rows
            .iter()
            .take(limit)
            .map(|r| r.iter().map(|c| cell(c)).collect())
            .collect();
        if !shown.is_empty() {
            doc.table(&self.head, &shown);
        }
        let cut = self.rows.len() > shown.len();
        if cut && self.omitted == 0 {
            doc.note(&format!(
                "{} more not shown: all {} are in the attached {}.",
                thousands((self.rows.len() - shown.len()) as u64),
                thousands(self.rows.len() as u64),
                self.csv
            ));
        } else if cut {
            doc.note(&format!(
                "{} more not shown: the first {} are in the attached {}, the other {} only counted.",
                thousands(total - shown.len() as u64),
                thousands(self.rows.len() as u64),
                self.csv,
                thousands(self.omitted)
            ));
        }
        cut
    }
}

fn severity(l: &LimitRow) -> (u64, u64, NaiveDate, String) {
    // Highest first: over, then the highest threshold, then the most used of allotted.
    let pct = if l.allotted == 0 {
        u64::MAX
    } else {
        (u128::from(l.used) * 10_000 / u128::from(l.allotted)).min(u128::from(u64::MAX)) as u64
    };
    (
        u64::MAX - l.threshold,
        u64::MAX - pct,
        l.local_date,
        l.org_id.clone(),
    )
}

/// The daily ops digest.
pub fn digest(d: &DigestView) -> Rendered {
    let mut limits = d.limits.clone();
    limits.sort_by_key(severity);
    let over = limits.iter().filter(|l| l.over).count();
    let near = limits.len() - over;
    let quarantined: u64 = d.quarantine.iter().map(|q| q.1).sum();
    let failed_files = d
        .files
        .iter()
        .filter(|f| f.status == crate::store::FileStatus::Failed)
        .count();
    let mut news = vec![
        format!("{over} org-day(s) over"),
        format!("{near} near the limit"),
    ];
    if !d.problems.is_empty() {
        news.push(format!("{} open problem(s)", d.problems.len()));
    }
    if !d.stuck.is_empty() {
        news.push(format!("{} message(s) not sent", d.stuck.len()));
    }
    if quarantined > 0 {
        news.push(format!("{} quarantined line(s)", thousands(quarantined)));
    }
    let subject = format!("[creditd] ops digest {}: {}", d.date, news.join(", "));
    let tone = if !d.problems.is_empty() || !d.stuck.is_empty() || failed_files > 0 {
        Tone::Alarm
    } else if over + near > 0 {
        Tone::Warn
    } else {
        Tone::Info
    };
    let limit_row = |l: &LimitRow| {
        vec![
            format!("{} ({})", l.name, l.org_id),
            l.local_date.to_string(),
            if l.over {
                "over".to_string()
            } else {
                format!("{}%", l.threshold)
            },
            percent(l.used, l.allotted),
            l.model.to_string(),
            l.mailed.clone(),
        ]
    };
    let limit_head = vec![
        ("Org", Align::Left),
        ("Day", Align::Right),
        ("Reached", Align::Left),
        ("Used", Align::Right),
        ("Model", Align::Left),
        ("Alert", Align::Left),
    ];
    let unpriced_rows = unpriced_rows(d);
    let lists = [
        List {
            omitted: 0,
            title: "Over the limit",
            csv: "over.csv",
            head: limit_head.clone(),
            rows: limits.iter().filter(|l| l.over).map(limit_row).collect(),
        },
        List {
            omitted: 0,
            title: "Near the limit",
            csv: "near.csv",
            head: limit_head,
            rows: limits.iter().filter(|l| !l.over).map(limit_row).collect(),
        },
        List {
            omitted: 0,
            title: "Open problems (tried again at every run)",
            csv: "problems.csv",
            head: vec![
                ("Unit", Align::Left),
                ("Where", Align::Left),
                ("Attempts", Align::Right),
                ("Last error", Align::Left),
            ],
            rows: d
                .problems
                .iter()
                .map(|p| vec![p.0.clone(), p.1.clone(), thousands(p.2), p.3.clone()])
                .collect(),
        },
        List {
            omitted: 0,
            title: "Messages not sent",
            csv: "messages.csv",
            head: vec![
                ("Message", Align::Left),
                ("Status", Align::Left),
                ("Attempts", Align::Right),
                ("Since", Align::Right),
                ("Last error", Align::Left),
            ],
            rows: d
                .stuck
                .iter()
                .map(|m| {
                    vec![
                        m.key.clone(),
                        m.status.clone(),
                        thousands(m.attempts),
                        m.since.clone(),
                        m.error.clone(),
                    ]
                })
                .collect(),
        },
        List {
            omitted: 0,
            title: "Crossings held back by max_age",
            csv: "held.csv",
            head: vec![
                ("Message", Align::Left),
                ("Also covers", Align::Left),
                ("Subject", Align::Left),
            ],
            rows: d
                .held
                .iter()
                .map(|h| vec![h.0.clone(), h.2.clone(), h.1.clone()])
                .collect(),
        },
    ];
    let files_head = vec![
        ("File", Align::Left),
        ("Status", Align::Left),
        ("Lines", Align::Right),
        ("Accepted", Align::Right),
        ("Unique", Align::Right),
        ("Duplicates", Align::Right),
        ("Quarantined", Align::Right),
    ];
    let file_rows: Vec<Vec<String>> = d
        .files
        .iter()
        .map(|f| {
            vec![
                f.file.clone(),
                f.status.to_string(),
                f.lines.to_string(),
                f.accepted.to_string(),
                f.unique.to_string(),
                f.duplicates.to_string(),
                f.quarantined.to_string(),
            ]
        })
        .collect();
    let by_file_head = vec![
        ("File", Align::Left),
        ("Reason", Align::Left),
        ("Lines", Align::Right),
    ];
    let by_file_rows: Vec<Vec<String>> = d
        .quarantine_by_file
        .iter()
        .map(|q| vec![q.0.clone(), q.1.clone(), q.2.to_string()])
        .collect();
    let rest = [
        List {
            omitted: 0,
            title: "Quarantined lines by reason",
            csv: "quarantine-by-file.csv",
            head: vec![("Reason", Align::Left), ("Lines", Align::Right)],
            rows: d
                .quarantine
                .iter()
                .map(|q| vec![q.0.clone(), thousands(q.1)])
                .collect(),
        },
        List {
            omitted: d
                .unpriced_endpoints
                .saturating_sub(unpriced_rows.len() as u64),
            title: "Unpriced endpoints",
            csv: "unpriced.csv",
            head: vec![("Endpoint", Align::Left), ("Calls", Align::Right)],
            rows: unpriced_rows,
        },
        List {
            omitted: 0,
            title: "Gateway drift: charged_credits against computed",
            csv: "drift.csv",
            head: vec![
                ("Org", Align::Left),
                ("Calls", Align::Right),
                ("Charged", Align::Right),
                ("Computed", Align::Right),
                ("Difference", Align::Right),
            ],
            rows: d
                .drift
                .iter()
                .map(|x| {
                    vec![
                        x.0.clone(),
                        thousands(x.1),
                        thousands(x.2),
                        thousands(x.3),
                        format!("{:+}", i128::from(x.2) - i128::from(x.3)),
                    ]
                })
                .collect(),
        },
        List {
            omitted: 0,
            title: "Migration impact: grandfathered orgs",
            csv: "grandfathered.csv",
            head: vec![
                ("Org", Align::Left),
                ("Days", Align::Left),
                ("Legacy limit", Align::Right),
                ("Credit allotment", Align::Right),
                ("Headroom", Align::Right),
            ],
            rows: migration_rows(d),
        },
        List {
            omitted: 0,
            title: "Removed by retention",
            csv: "retention.csv",
            head: vec![
                ("When", Align::Left),
                ("Area", Align::Left),
                ("What", Align::Left),
                ("Bytes", Align::Right),
            ],
            rows: d
                .purges
                .iter()
                .map(|p| vec![p.0.clone(), p.1.clone(), p.2.clone(), thousands(p.3)])
                .collect(),
        },
    ];

    // The fullest form that fits: 20 rows a list, then 5, then counts alone.
    let mut rendered = Rendered::default();
    for limit in [20, 5, 0] {
        let mut doc = Doc::default();
        let mut cut = std::collections::BTreeSet::new();
        doc.headline(
            tone,
            &format!("Ops digest {}: {}.", d.date, news.join(", ")),
        );
        doc.note("Org-days closed and files processed since the previous digest. Over and near come first; an org's Alert column says whether its alert was mailed.");
        for l in &lists {
            if l.show(&mut doc, limit) {
                cut.insert(l.csv);
            }
        }
        if !d.quarantine.is_empty() {
            // The reasons are few; the files are many: counted here, listed in the CSV.
            rest[0].show(&mut doc, limit);
            let files = d
                .quarantine_by_file
                .iter()
                .map(|q| &q.0)
                .collect::<std::collections::BTreeSet<_>>()
                .len();
            doc.note(&format!(
                "In {} file(s); per file and reason in the attached quarantine-by-file.csv.",
                thousands(files as u64)
            ));
            cut.insert("quarantine-by-file.csv");
        }
        for l in &rest[1..] {
            if l.show(&mut doc, limit) {
                cut.insert(l.csv);
            }
        }
        files_summary(d, &mut doc, limit);
        if !d.files.is_empty() {
            cut.insert("files.csv");
        }
        if !d.grandfathered.is_empty() {
            doc.note("A grandfathered day is allotted max(legacy limit, base + variable) + additional; the headroom is what that gives above the credit allotment alone.");
        }
        let html = doc.page(&subject);
        let mut attachments = Vec::new();
        for l in lists.iter().chain(&rest[1..]) {
            if cut.contains(l.csv) {
                attachments.push((l.csv.to_string(), csv_of(&head_names(&l.head), &l.rows)));
            }
        }
        if cut.contains("quarantine-by-file.csv") {
            attachments.push((
                "quarantine-by-file.csv".to_string(),
                csv_of(&head_names(&by_file_head), &by_file_rows),
            ));
        }
        if cut.contains("files.csv") {
            attachments.push((
                "files.csv".to_string(),
                csv_of(&head_names(&files_head), &file_rows),
            ));
        }
        rendered = Rendered {
            subject: subject.clone(),
            text: doc.text,
            html,
            attachments,
            ..Rendered::default()
        };
        if rendered.html.len() <= MAX_HTML {
            break;
        }
    }
    rendered
}

/// One row per org and figures: consecutive days with the same limits share a row.
fn migration_rows(d: &DigestView) -> Vec<Vec<String>> {
    type Figures<'a> = (&'a str, &'a str, u64, u64, u64);
    let mut impact: Vec<(Figures<'_>, Vec<NaiveDate>)> = Vec::new();
    for g in &d.grandfathered {
        let k = (g.0.as_str(), g.1.as_str(), g.3, g.4, g.5);
        match impact.iter_mut().find(|(key, _)| *key == k) {
            Some((_, days)) => days.push(g.2),
            None => impact.push((k, vec![g.2])),
        }
    }
    impact
        .iter()
        .map(|((org, name, legacy, credit, headroom), days)| {
            let days = match days.as_slice() {
                [one] => one.to_string(),
                [first, .., last] => format!("{first} to {last} ({} days)", days.len()),
                [] => String::new(),
            };
            vec![
                format!("{name} ({org})"),
                days,
                thousands(*legacy),
                thousands(*credit),
                thousands(*headroom),
            ]
        })
        .collect()
}

/// The input files as totals, the failed ones listed (all in files.csv).
fn files_summary(d: &DigestView, doc: &mut Doc, limit: usize) {
    let sum = |f: fn(&FileRow) -> u64| thousands(d.files.iter().map(f).sum());
    doc.heading(&format!("Input files: {}", thousands(d.files.len() as u64)));
    if d.files.is_empty() {
        doc.note("None since the previous digest.");
        return;
    }
    doc.pairs(&[
        ("Lines".into(), sum(|f| f.lines)),
        ("Accepted".into(), sum(|f| f.accepted)),
        ("Unique".into(), sum(|f| f.unique)),
        ("Duplicates".into(), sum(|f| f.duplicates)),
        ("Quarantined".into(), sum(|f| f.quarantined)),
    ]);
    let failed: Vec<Vec<String>> = d
        .files
        .iter()
        .filter(|f| f.status == crate::store::FileStatus::Failed)
        .map(|f| vec![f.file.clone(), f.status.to_string()])
        .collect();
    if !failed.is_empty() {
        let l = List {
            title: "Files not ingested",
            csv: "files.csv",
            head: vec![("File", Align::Left), ("Status", Align::Left)],
            rows: failed,
            omitted: 0,
        };
        l.show(doc, limit);
    }
    doc.note("Every file with its counts is in the attached files.csv.");
}

#[cfg(test)]
mod tests;
