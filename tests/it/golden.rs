//! The emails of the sample data as a reader gets them (DESIGN §5): the plain-text part of
//! one message of each kind against a reviewed copy under `tests/golden/` (regenerated with
//! `CREDITD_BLESS=1`, reviewed in the diff), and every message of the run parsed with a
//! standard MIME parser: its headers, its size, and breakdowns that add up.

use std::path::{Path, PathBuf};

use crate::mail::{attachment, body_of, header};
use crate::Dir;

const NOW: &str = "2025-11-04T12:00:00Z";

/// The sample run and a backfill that re-prices a week (the report's example), delivered as
/// `.eml` files.
fn sample_outbox() -> Dir {
    let dir = Dir::sample();
    dir.expect(0, &["--now", NOW, "run", "all"]);
    // The gateways go quiet for more than half an hour (ops told), then a late file of gw1
    // comes back with a call of a day already closed and summarized (an amended summary).
    let config = dir.read("creditd.toml");
    dir.write(
        "creditd.toml",
        format!("{config}\n[alerts]\ngateway_silence = \"30m\"\n"),
    );
    dir.expect(0, &["--now", "2025-11-04T12:45:00Z", "run", "all"]);
    dir.write(
        "inbox/gw1-20251104T1250.ndjson",
        crate::ingest::call(
            "2025-10-08T12:00:00Z",
            "late-1",
            "60000000",
            "/api/v1/tickets",
            200,
        ),
    );
    dir.expect(0, &["--now", "2025-11-04T12:50:00Z", "run", "all"]);
    let pricing = dir
        .read("pricing.toml")
        .replacen("credits = 50", "credits = 40", 1);
    dir.write("pricing.toml", pricing);
    dir.expect(
        0,
        &[
            "--now",
            "2025-11-04T13:00:00Z",
            "backfill",
            "--from",
            "2025-10-24",
            "--to",
            "2025-10-31",
        ],
    );
    dir.expect(0, &["--now", "2025-11-04T13:00:00Z", "run", "deliver"]);
    dir
}

fn messages(dir: &Dir) -> Vec<(String, Vec<u8>)> {
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.path().join("state/outbox"))
        .unwrap()
        .map(|e| {
            let raw = std::fs::read(e.unwrap().path()).unwrap();
            (header(&raw, "X-Creditd-Key"), raw)
        })
        .collect();
    out.sort();
    out
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// The message as the golden file holds it: the headers a reader sees, then the text part.
/// The backfill's id (random per run) reads `<id>`.
fn as_read(raw: &[u8], backfill_id: Option<&str>) -> String {
    let mut out = String::new();
    for h in ["Subject", "To", "X-Creditd-Key", "X-Creditd-Covers"] {
        let v = header(raw, h);
        if !v.is_empty() {
            out.push_str(&format!("{h}: {v}\n"));
        }
    }
    out.push('\n');
    out.push_str(&body_of(raw, "text/plain").replace("\r\n", "\n"));
    match backfill_id {
        Some(id) => out.replace(id, "<id>"),
        None => out,
    }
}

#[test]
fn the_text_of_each_kind_of_message_reads_as_reviewed() {
    let dir = sample_outbox();
    let all = messages(&dir);
    let backfill = all
        .iter()
        .find(|(k, _)| k.starts_with("backfill:"))
        .expect("a backfill report");
    let backfill_id = backfill.0.trim_start_matches("backfill:").to_string();
    let examples = [
        ("near-limit", "near:60000021:2025-11-02:80"),
        ("overage", "over:60000000:2025-10-08"),
        ("daily-summary-credits", "summary:60000000:2025-10-08"),
        ("daily-summary-grandfathered", "summary:60000021:2025-10-30"),
        ("daily-summary-legacy", "summary:60000021:2025-10-04"),
        ("ops-digest", "digest:2025-11-04"),
        ("backfill-report", backfill.0.as_str()),
        ("amended-summary", "summary:60000000:2025-10-08:r1"),
        ("gateway-silence", "silence:gw2:2025-11-04T12:00:00.000Z"),
        ("gateway-back", "back:gw1:2025-11-04T12:50:00.000Z"),
    ];
    let bless = std::env::var_os("CREDITD_BLESS").is_some();
    let mut differ = Vec::new();
    for (name, key) in examples {
        let (_, raw) = all
            .iter()
            .find(|(k, _)| k == key)
            .unwrap_or_else(|| panic!("{key} in the outbox"));
        let got = as_read(raw, Some(&backfill_id));
        let path = golden_dir().join(format!("{name}.txt"));
        if bless {
            std::fs::create_dir_all(golden_dir()).unwrap();
            std::fs::write(&path, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|_| panic!("{} (CREDITD_BLESS=1 writes it)", path.display()));
        if got != want {
            differ.push(format!(
                "{name} ({key}) differs from {}:\n{got}",
                path.display()
            ));
        }
    }
    assert!(
        differ.is_empty(),
        "{}\n(if the change is intended: CREDITD_BLESS=1 cargo test golden, and review the diff)",
        differ.join("\n")
    );
}

/// The figure on the text line whose label is `label`: `  Base credits   75,000` → 75000.
fn figure(text: &str, label: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.trim_start().strip_prefix(label)?;
        if !rest.starts_with("  ") {
            return None;
        }
        let n: String = rest
            .trim_start()
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == ',')
            .filter(|c| *c != ',')
            .collect();
        n.parse().ok()
    })
}

/// The lines of a text section, from its heading to the next blank line.
fn section<'a>(text: &'a str, heading: &str) -> Vec<&'a str> {
    text.lines()
        .skip_while(|l| *l != heading)
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .collect()
}

/// Checks one message as DESIGN §5 says every message must be: it parses, carries its
/// headers, fits, and its breakdown adds up; records the day's model in `models`.
fn check_message(key: &str, raw: &[u8], models: &mut std::collections::BTreeSet<String>) {
    let parsed = mailparse::parse_mail(raw).unwrap_or_else(|e| panic!("{key}: {e}"));
    // ':' becomes '.', letters, digits and '-' stay, any other byte is `=XX`.
    let dotted: String = key
        .bytes()
        .map(|b| match b {
            b':' => ".".to_string(),
            b if b.is_ascii_alphanumeric() || b == b'-' => (b as char).to_string(),
            b => format!("={b:02X}"),
        })
        .collect();
    assert_eq!(header(raw, "Message-ID"), format!("<{dotted}@example.com>"));
    assert_eq!(header(raw, "Auto-Submitted"), "auto-generated", "{key}");
    let kind = key.split(':').next().unwrap();
    if matches!(kind, "near" | "over" | "summary") {
        let f: Vec<&str> = key.split(':').collect();
        let root = format!("<orgday.{}.{}@example.com>", f[1], f[2]);
        assert_eq!(header(raw, "In-Reply-To"), root, "{key}");
        assert_eq!(header(raw, "References"), root, "{key}");
    }
    let html = body_of(raw, "text/html");
    assert!(html.len() <= 100_000, "{key}: {} bytes of HTML", html.len());
    assert!(
        html.contains("<meta name=\"viewport\" content=\"width=device-width"),
        "{key}: a phone lays it out at its own width"
    );
    assert!(!html.contains("<svg"), "{key}: Outlook draws no SVG");
    let text = body_of(raw, "text/plain");
    // The news comes first: the subject and the text's first line say the same thing.
    let first = text.lines().next().unwrap_or_default();
    let subject = header(raw, "Subject");
    let f: Vec<&str> = key.split(':').collect();
    let news = match kind {
        "near" => format!("reached {}%", f[3]),
        "over" => "went over".to_string(),
        "summary" => "used ".to_string(),
        "digest" => "digest".to_string(),
        "backfill" => "ackfill".to_string(),
        _ => String::new(),
    };
    assert!(
        first.contains(&news) && subject.contains(&news),
        "{key}: {subject} / {first}"
    );
    // The counts the subject gives are the lists' own.
    let count = |s: &str, after: &str| -> Option<u64> {
        let at = s.find(after)?;
        let n: String = s[..at]
            .chars()
            .rev()
            .skip_while(|c| *c == ' ')
            .take_while(|c| c.is_ascii_digit() || *c == ',')
            .filter(|c| *c != ',')
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        n.parse().ok()
    };
    // The heading "Title: N" of a list, if the text has one.
    let heading = |title: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(title)?.trim().parse::<u64>().ok())
    };
    match kind {
        "digest" => {
            for (said, title, csv) in [
                (" org-day(s) over", "Over the limit:", "over.csv"),
                (" near the limit", "Near the limit:", "near.csv"),
            ] {
                let n = count(&subject, said).unwrap_or_else(|| panic!("{key}: {subject}"));
                assert_eq!(count(first, said), Some(n), "{key}: {first}");
                // One row per org-day the subject counts: in the attached list when the
                // text cuts it, else in the text's table (its first line is the header).
                let rows = match attachment(raw, csv) {
                    Some(c) => c.lines().count() as u64 - 1,
                    None if n == 0 => 0,
                    None => section(&text, &format!("{title} {n}")).len() as u64 - 1,
                };
                assert_eq!(rows, n, "{key}: {title} against {subject}\n{text}");
                if n > 0 {
                    assert_eq!(heading(title), Some(n), "{key}: {title}\n{text}");
                }
            }
        }
        "backfill" => {
            let n = count(&subject, " status flip(s)").unwrap_or_else(|| panic!("{subject}"));
            assert_eq!(count(first, " of them flipped"), Some(n), "{key}: {first}");
            // Every flip is a row of its table (at most 200 are shown).
            let rows = section(&text, &format!("Status flips: {n}"));
            let shown = rows.iter().filter(|l| l.contains(" → ")).count() as u64;
            assert_eq!(shown, n.min(200), "{key}\n{text}");
            let changed = count(&subject, " org-day(s) changed");
            assert_eq!(changed, count(first, " org-day(s) changed"), "{key}");
        }
        _ => {}
    }
    if matches!(kind, "near" | "over" | "summary") {
        assert!(
            first.contains(f[1]) && subject.contains(f[1]),
            "{key}: the org"
        );
    }
    if kind == "summary" {
        // The related part names its root; the chart is a PNG.
        let related = &parsed.subparts[1];
        assert_eq!(related.ctype.mimetype, "multipart/related", "{key}");
        assert_eq!(
            related.ctype.params.get("type").map(String::as_str),
            Some("text/html")
        );
        assert_eq!(related.subparts[1].ctype.mimetype, "image/png");
        let calls = figure(&text, "Calls").unwrap();
        let billable = figure(&text, "Billable").unwrap();
        let not_billable = figure(&text, "Not billable").unwrap();
        assert_eq!(
            calls,
            billable + not_billable,
            "{key}: calls add up\n{text}"
        );
    }
    if !matches!(kind, "near" | "over" | "summary") {
        return;
    }
    // The breakdown adds up under the day's model.
    let allotment = section(&text, "Allotment").join("\n");
    let allotted = figure(&allotment, "Allotted").or(figure(&allotment, "Daily limit"));
    let model = allotment
        .lines()
        .find_map(|l| l.trim().strip_prefix("Model"))
        .unwrap()
        .trim()
        .to_string();
    models.insert(model.clone());
    let get = |label: &str| {
        figure(&allotment, label).unwrap_or_else(|| panic!("{key}: {label} in\n{allotment}"))
    };
    match model.as_str() {
        "legacy per-call limit" => {
            let figures: Vec<&str> = allotment
                .lines()
                .filter(|l| !l.trim_start().starts_with("Why"))
                .collect();
            assert!(
                figures.iter().all(|l| !l.contains("credits")),
                "{key}: calls only\n{allotment}"
            );
            assert!(allotment.contains("calls"), "{key}\n{allotment}");
            assert!(!text.contains("buy additional credits"), "{key}");
        }
        "grandfathered" => {
            let credits = get("Base credits") + get("Variable credits");
            let higher = get("Legacy limit").max(credits);
            assert_eq!(Some(higher + get("Additional credits")), allotted, "{key}");
            assert!(
                allotment.contains("Applies"),
                "{key}: which capacity applies"
            );
        }
        "credits" => {
            let sum = get("Base credits") + get("Variable credits") + get("Additional credits");
            assert_eq!(Some(sum), allotted, "{key}\n{allotment}");
        }
        other => panic!("{key}: model {other}"),
    }
    if kind == "near" {
        // Usage at the crossing and so far.
        let usage = section(&text, "Usage").join("\n");
        assert!(usage.contains("At the crossing"), "{key}\n{usage}");
        assert!(
            usage.contains("So far") || usage.contains("Whole day"),
            "{key}"
        );
        assert!(text.contains("Forecast"), "{key}");
    }
}

#[test]
fn every_message_parses_carries_its_headers_fits_and_adds_up() {
    let dir = sample_outbox();
    let all = messages(&dir);
    assert!(all.len() > 20);
    let mut models = std::collections::BTreeSet::new();
    for (key, raw) in &all {
        check_message(key, raw, &mut models);
    }
    assert_eq!(
        models.len(),
        3,
        "the sample has days of every model: {models:?}"
    );
    // The digest and the backfill report attach their full lists.
    let digest = &all
        .iter()
        .find(|(k, _)| k == "digest:2025-11-04")
        .unwrap()
        .1;
    let files = attachment(digest, "files.csv").expect("files.csv");
    assert!(files.starts_with("File,Status,Lines,"), "{files}");
    let report = &all
        .iter()
        .find(|(k, _)| k.starts_with("backfill:"))
        .unwrap();
    let id = report.0.trim_start_matches("backfill:");
    let diff = attachment(&report.1, &format!("backfill-{id}.csv")).expect("the diff");
    assert!(
        diff.starts_with("org_id,local_date,column,before,after"),
        "{diff}"
    );
    assert!(diff.lines().count() > 100, "every changed value");
}

#[test]
fn the_messages_of_a_generated_data_set_meet_the_same_form() {
    let dir = Dir::generated(&[
        "--seed",
        "31",
        "--orgs",
        "30",
        "--dates",
        "2025-10-24..2025-11-03,2026-03-06..2026-03-09,2026-03-28..2026-03-30",
        "--calls-per-day",
        "20",
        "--hot-days",
        "12",
        "--hours-per-file",
        "24",
    ]);
    let cfg = dir.read("creditd.toml") + "\n[alerts]\ndaily_summary = \"all\"\n";
    dir.write("creditd.toml", cfg);
    dir.expect(0, &["--now", "2026-04-02T12:00:00Z", "run", "all"]);
    let all = messages(&dir);
    let alerts = all
        .iter()
        .filter(|(k, _)| k.starts_with("near:") || k.starts_with("over:"))
        .count();
    assert!(alerts > 5, "hot days cross thresholds: {alerts}");
    let mut models = std::collections::BTreeSet::new();
    for (key, raw) in &all {
        check_message(key, raw, &mut models);
    }
    assert!(models.len() >= 2, "{models:?}");
}
