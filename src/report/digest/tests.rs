//! The digest: severity first, lists cut with their CSV attached, under 100 KB at any volume.

use super::*;
use crate::store::FileStatus;

/// A duplicate file was read and counted nothing, as it should: it is not a failure.
#[test]
fn only_failed_files_are_listed_as_not_ingested() {
    let file = |name: &str, status| FileRow {
        file: name.into(),
        status,
        lines: 10,
        accepted: 10,
        unique: 10,
        duplicates: 0,
        quarantined: 0,
    };
    let view = DigestView {
        date: NaiveDate::from_ymd_opt(2025, 11, 4).unwrap(),
        files: vec![
            file("f-ok.ndjson", FileStatus::Ingested),
            file("f-dup.ndjson", FileStatus::DuplicateFile),
            file("f-bad.ndjson.gz", FileStatus::Failed),
        ],
        ..Default::default()
    };
    let r = digest(&view);
    assert!(r.text.contains("Files not ingested"), "{}", r.text);
    assert!(r.text.contains("f-bad.ndjson.gz  failed"), "{}", r.text);
    assert!(!r.text.contains("f-dup.ndjson"), "{}", r.text);
}

#[test]
fn digest_folds_days_with_the_same_migration_figures_into_one_row() {
    let g = |day: &str, legacy: u64| {
        let org = ("7".to_string(), "Seven <b>".to_string());
        (org.0, org.1, day.parse().unwrap(), legacy, 50_000, 10_000)
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
    // A text table's cells are two spaces or more apart.
    let rows: Vec<Vec<&str>> = r
        .text
        .lines()
        .map(|l| {
            l.trim()
                .split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect();
    let has = |cells: &[&str]| rows.iter().any(|r| r == cells);
    assert!(
        has(&[
            "Seven <b> (7)",
            "2025-10-30 to 2025-11-01 (3 days)",
            "60,000",
            "50,000",
            "10,000"
        ]),
        "{}",
        r.text
    );
    assert!(
        has(&["Seven <b> (7)", "2025-11-02", "70,000", "50,000", "10,000"]),
        "{}",
        r.text
    );
    assert!(r.html.contains("Seven &lt;b&gt;") && !r.html.contains("Seven <b>"));
    assert!(r.subject.contains("0 org-day(s) over"), "{}", r.subject);
}

fn limit(org: u64, over: bool, threshold: u64, used: u64) -> LimitRow {
    LimitRow {
        org_id: org.to_string(),
        name: format!("Org {org}"),
        local_date: NaiveDate::from_ymd_opt(2025, 11, 3).unwrap(),
        model: crate::allotment::Model::Credits,
        used,
        allotted: 1_000,
        over,
        threshold,
        mailed: "mailed".into(),
    }
}

#[test]
fn csv_cells_that_a_spreadsheet_would_run_are_neutralised() {
    assert_eq!(
        csv_cell("=HYPERLINK(\"x\").ndjson"),
        "'=HYPERLINK(\"x\").ndjson"
    );
    assert_eq!(csv_cell("@SUM(A1)"), "'@SUM(A1)");
    assert_eq!(csv_cell("-cmd"), "'-cmd");
    assert_eq!(csv_cell("+16"), "+16");
    assert_eq!(csv_cell("-5"), "-5");
    assert_eq!(csv_cell("gw1-2025.ndjson"), "gw1-2025.ndjson");
    assert_eq!(csv_cell("é=x"), "é=x");
    assert_eq!(csv_cell(""), "");
    let csv = csv_of(&["file"], &[vec!["=1+1"]]);
    assert_eq!(csv, "file\n'=1+1\n");
}

#[test]
fn over_comes_before_near_and_the_highest_first() {
    let view = DigestView {
        date: NaiveDate::from_ymd_opt(2025, 11, 4).unwrap(),
        limits: vec![
            limit(1, false, 80, 850),
            limit(2, true, 100, 1_200),
            limit(3, false, 90, 950),
            limit(4, true, 100, 1_500),
        ],
        ..Default::default()
    };
    let r = digest(&view);
    let at = |s: &str| {
        r.text
            .find(s)
            .unwrap_or_else(|| panic!("{s} in {}", r.text))
    };
    assert!(at("Over the limit") < at("Org 4"));
    assert!(at("Org 4") < at("Org 2"), "150% before 120%");
    assert!(at("Org 2") < at("Near the limit"));
    assert!(at("Near the limit") < at("Org 3") && at("Org 3") < at("Org 1"));
    assert!(r.subject.contains("2 org-day(s) over, 2 near the limit"));
}

#[test]
fn a_digest_of_thousands_of_files_stays_under_the_limit_with_every_row_attached() {
    let files: Vec<FileRow> = (0..5_000)
        .map(|i| FileRow {
            file: format!(
                "gw{}-2025-11-03T{:05}-{}.ndjson.gz",
                i % 40,
                i,
                "x".repeat(40)
            ),
            status: if i % 500 == 0 {
                crate::store::FileStatus::Failed
            } else {
                crate::store::FileStatus::Ingested
            },
            lines: 240_000,
            accepted: 239_000,
            unique: 238_000,
            duplicates: 1_000,
            quarantined: 1_000,
        })
        .collect();
    let quarantine_by_file = files
        .iter()
        .map(|f| (f.file.clone(), "malformed".to_string(), 1_000))
        .collect();
    let view = DigestView {
        date: NaiveDate::from_ymd_opt(2025, 11, 4).unwrap(),
        limits: (0..3_000).map(|i| limit(i, i % 3 == 0, 90, 950)).collect(),
        problems: (0..2_000)
            .map(|i| ("file".into(), format!("f{i}"), 3, "e".repeat(5_000)))
            .collect(),
        quarantine: vec![("malformed".into(), 5_000_000)],
        quarantine_by_file,
        files,
        ..Default::default()
    };
    let r = digest(&view);
    assert!(r.html.len() <= MAX_HTML, "{} bytes", r.html.len());
    let csv = |name: &str| {
        &r.attachments
            .iter()
            .find(|a| a.0 == name)
            .unwrap_or_else(|| panic!("{name} attached"))
            .1
    };
    // Header + every row.
    assert_eq!(csv("files.csv").lines().count(), 5_001);
    assert_eq!(csv("quarantine-by-file.csv").lines().count(), 5_001);
    assert_eq!(csv("over.csv").lines().count(), 1_001);
    assert_eq!(csv("problems.csv").lines().count(), 2_001);
    assert!(r.text.contains("in the attached files.csv"));
}

/// The attached `unpriced.csv` of a digest.
fn unpriced_csv(r: &Rendered) -> &str {
    &r.attachments
        .iter()
        .find(|(name, _)| name == "unpriced.csv")
        .expect("unpriced.csv attached")
        .1
}

/// Paths with unique ids make every call an endpoint of its own: the digest counts them all,
/// attaches the most called (each path cut to 500 characters, 1 MB in all) and says how many
/// are only counted.
#[test]
fn unpriced_endpoints_beyond_the_attached_ones_are_counted() {
    let view = DigestView {
        date: NaiveDate::from_ymd_opt(2025, 11, 4).unwrap(),
        unpriced: (0..30)
            .map(|i| (format!("GET /api/v9/{i}/{}", "x".repeat(2_000)), 30 - i))
            .collect(),
        unpriced_endpoints: 50_000,
        ..Default::default()
    };
    let r = digest(&view);
    assert!(r.text.contains("Unpriced endpoints: 50,000"), "{}", r.text);
    assert!(
        r.text.contains("49,980 more not shown: the first 30 are in the attached unpriced.csv, the other 49,970 only counted."),
        "{}",
        r.text
    );
    let csv = unpriced_csv(&r);
    assert_eq!(csv.lines().count(), 31, "header and 30 rows");
    assert!(csv.lines().all(|l| l.chars().count() < 520), "paths cut");
    // Thousands of long paths: the attachment stops at its budget, the rest is counted.
    let view = DigestView {
        unpriced: (0..10_000)
            .map(|i| (format!("GET /api/v9/{i}/{}", "x".repeat(2_000)), 1))
            .collect(),
        unpriced_endpoints: 10_000,
        ..view
    };
    let r = digest(&view);
    let csv = unpriced_csv(&r);
    assert!(csv.len() <= 1_100_000, "{} bytes", csv.len());
    let listed = csv.lines().count() as u64 - 1;
    assert!(
        r.text.contains(&format!(
            "the other {} only counted",
            thousands(10_000 - listed)
        )),
        "{}",
        r.text
    );
}
