//! Ingest and the ledger, end to end.

use std::collections::BTreeMap;

use crate::{csv_rows, without_status, Dir};

/// `creditd files` as file → [lines, accepted, unique, duplicates, reasons…] (status checked).
pub fn file_counts(dir: &Dir) -> BTreeMap<String, Vec<u64>> {
    let out = dir.expect(0, &["files"]);
    let rows = csv_rows(&out);
    assert_eq!(
        rows[0].join(","),
        "file,sha256,status,lines,accepted,unique,duplicates,malformed,missing_field,bad_timestamp,bad_method,bad_status,unknown_org,before_signup,expired"
    );
    rows[1..]
        .iter()
        .map(|r| {
            (
                r[0].clone(),
                r[3..].iter().map(|v| v.parse().unwrap()).collect(),
            )
        })
        .collect()
}

pub fn expected_file_counts(dir: &Dir) -> BTreeMap<String, Vec<u64>> {
    let rows = csv_rows(&dir.read("expected-files.csv"));
    rows[1..]
        .iter()
        .map(|r| {
            (
                r[0].clone(),
                r[1..].iter().map(|v| v.parse().unwrap()).collect(),
            )
        })
        .collect()
}

/// Checks the nothing-lost invariants on every ingested file.
pub fn assert_nothing_lost(counts: &BTreeMap<String, Vec<u64>>) {
    for (file, c) in counts {
        let quarantined: u64 = c[4..].iter().sum();
        assert_eq!(
            c[0],
            c[1] + quarantined,
            "{file}: lines = accepted + quarantined"
        );
        assert_eq!(c[1], c[2] + c[3], "{file}: accepted = unique + duplicates");
    }
}

#[test]
fn sample_data_ledger_matches_the_independent_expectation() {
    let dir = Dir::sample();
    dir.expect(0, &["check"]);
    dir.expect(0, &["run", "all"]);
    assert_eq!(
        without_status(&dir.export()),
        dir.read("expected-ledger.csv")
    );
    let counts = file_counts(&dir);
    assert_eq!(counts, expected_file_counts(&dir));
    assert_nothing_lost(&counts);
    // Every quarantine reason occurs in the sample, but `expired`: the sample keeps its events
    // forever (no retention is set).
    let mut by_reason = [0u64; 8];
    for c in counts.values() {
        for (i, n) in c[4..].iter().enumerate() {
            by_reason[i] += n;
        }
    }
    assert!(by_reason[..7].iter().all(|n| *n > 0), "{by_reason:?}");
    assert_eq!(
        by_reason[7], 0,
        "nothing expires without a retention horizon"
    );
    assert!(dir.inbox().is_empty(), "ingested files are archived");
}

#[test]
fn generated_data_sets_match_their_expected_ledgers() {
    for seed in ["11", "12"] {
        let dir = Dir::generated(&[
            "--seed",
            seed,
            "--orgs",
            "30",
            "--dates",
            "2025-10-24..2025-11-03,2026-03-06..2026-03-09,2026-03-28..2026-03-30",
            "--calls-per-day",
            "20",
            "--hot-days",
            "10",
            "--hours-per-file",
            "24",
        ]);
        dir.expect(0, &["run", "ingest"]);
        assert_eq!(
            without_status(&dir.export()),
            dir.read("expected-ledger.csv"),
            "seed {seed}"
        );
        let counts = file_counts(&dir);
        assert_eq!(counts, expected_file_counts(&dir), "seed {seed}");
        assert_nothing_lost(&counts);
    }
}

/// A generated data set whose calls of five hours of 2025-10-27 are set aside (`aside/`), to
/// arrive after the days already hold everything else, near-limit and over-limit days among
/// them.
pub fn late_file_dir() -> Dir {
    Dir::generated(&[
        "--seed",
        "21",
        "--orgs",
        "40",
        "--dates",
        "2025-10-25..2025-10-28",
        "--calls-per-day",
        "30",
        "--hot-days",
        "30",
        "--aside",
        "2025-10-27T09:00:00Z,300",
    ])
}

/// Moves the files set aside by [`late_file_dir`] into the inbox.
pub fn release_aside(dir: &Dir) {
    for e in std::fs::read_dir(dir.path().join("aside")).unwrap() {
        let p = e.unwrap().path();
        std::fs::rename(&p, dir.path().join("inbox").join(p.file_name().unwrap())).unwrap();
    }
}

#[test]
fn a_late_file_updates_full_days_to_the_expected_ledger() {
    // The late calls include some later than theirs already ingested.
    let dir = late_file_dir();
    dir.expect(0, &["run", "ingest"]);
    let before = without_status(&dir.export());
    assert_ne!(
        before,
        dir.read("expected-ledger.csv"),
        "the late file matters"
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("aside")).unwrap().count(),
        1
    );
    release_aside(&dir);
    dir.expect(0, &["run", "ingest"]);
    assert_eq!(
        without_status(&dir.export()),
        dir.read("expected-ledger.csv")
    );
    let counts = file_counts(&dir);
    assert_eq!(counts, expected_file_counts(&dir));
    assert_nothing_lost(&counts);
}

#[test]
fn ingesting_in_several_runs_equals_one_run_and_reruns_change_nothing() {
    let args = [
        "--seed",
        "5",
        "--orgs",
        "12",
        "--dates",
        "2025-10-05..2025-10-08",
        "--hours-per-file",
        "6",
    ];
    let all_at_once = Dir::generated(&args);
    all_at_once.expect(0, &["run", "ingest"]);
    let expected = all_at_once.export();

    let piecewise = Dir::generated(&args);
    let names = piecewise.inbox();
    let second_half = &names[names.len() / 2..];
    let held = piecewise.hold_back(|n| second_half.iter().any(|h| h == n));
    piecewise.expect(0, &["run", "ingest"]);
    piecewise.release(&held);
    piecewise.expect(0, &["run", "ingest"]);
    assert_eq!(piecewise.export(), expected);

    // A run with nothing new changes nothing.
    piecewise.expect(0, &["run", "ingest"]);
    assert_eq!(piecewise.export(), expected);

    // The same file delivered again under another name is a duplicate file, charged never.
    let archived = std::fs::read_dir(piecewise.path().join("state/archive"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let ext = if archived.to_string_lossy().ends_with(".gz") {
        "ndjson.gz"
    } else {
        "ndjson"
    };
    let again = format!("zz-redelivered.{ext}");
    let bytes = std::fs::read(&archived).unwrap();
    let again_name = if archived.to_string_lossy().contains(".csv") {
        again.replace("ndjson", "csv")
    } else {
        again
    };
    piecewise.write(&format!("inbox/{again_name}"), bytes);
    let out = piecewise.expect(0, &["run", "ingest"]);
    assert!(
        out.contains(&format!("duplicate file {again_name}")),
        "{out}"
    );
    assert_eq!(piecewise.export(), expected);
    let counts = file_counts(&piecewise);
    let dup = &counts[&again_name];
    assert_eq!(dup[2], 0, "a duplicate file has no unique calls");
    assert_eq!(dup[1], dup[3], "all of its accepted calls are duplicates");
    assert_nothing_lost(&counts);

    // Byte-identical exports from two independent state directories.
    let third = Dir::generated(&args);
    third.expect(0, &["run", "ingest"]);
    assert_eq!(third.export(), expected);
}

pub const ORGS: &str = "org_id,name,edition,agents,light_agents,timezone,data_center,signup_date,paid,legacy_daily_limit,report_to,effective_from\n\
100,Acme,free,0,0,Africa/Cairo,eu,2025-01-01,false,,admin@acme.example,\n\
200,Beta,professional,10,0,Asia/Kathmandu,us,2025-06-01,true,,admin@beta.example,\n";

pub const PRICING: &str = "effective_from = \"2025-10-01\"\n\n[[rule]]\nmethod = \"GET\"\npath = \"/api/v1/tasks/count\"\ncredits = 50\n\n[[rule]]\nmethod = \"GET\"\npath = \"/api/v1/{module}\"\ncredits = 3\n";

pub fn small_dir() -> Dir {
    let dir = Dir::empty();
    dir.write("orgs.csv", ORGS);
    dir.write("pricing.toml", PRICING);
    dir
}

pub fn call(ts: &str, rid: &str, org: &str, path: &str, status: u16) -> String {
    format!(
        "{{\"ts\":\"{ts}\",\"request_id\":\"{rid}\",\"org_id\":\"{org}\",\"method\":\"GET\",\"path\":\"{path}\",\"status\":{status}}}\n"
    )
}

#[test]
fn cairo_fall_back_hour_counts_toward_the_long_day() {
    // 2025-10-30 in Cairo lasts 25 hours: 21:30 UTC reads 23:30 on the 30th a second time,
    // and 22:00 UTC starts the 31st.
    let dir = small_dir();
    let mut lines = String::new();
    lines.push_str(&call(
        "2025-10-29T21:00:00.000Z",
        "a",
        "100",
        "/api/v1/tickets",
        200,
    ));
    lines.push_str(&call(
        "2025-10-30T21:30:00.000+00:00",
        "b",
        "100",
        "/api/v1/tickets",
        200,
    ));
    lines.push_str(&call(
        "2025-10-30T21:59:59.999Z",
        "c",
        "100",
        "/api/v1/tickets",
        200,
    ));
    lines.push_str(&call(
        "2025-10-31T00:00:00.000+02:00",
        "d",
        "100",
        "/api/v1/tickets",
        200,
    ));
    dir.write("inbox/a.ndjson", lines);
    dir.expect(0, &["run", "ingest"]);
    let rows = csv_rows(&dir.export());
    let days: Vec<(String, String)> = rows[1..]
        .iter()
        .map(|r| (r[1].clone(), r[5].clone()))
        .collect();
    assert_eq!(
        days,
        vec![
            ("2025-10-30".to_string(), "3".to_string()),
            ("2025-10-31".to_string(), "1".to_string())
        ]
    );
}

#[test]
fn status_is_open_until_next_local_midnight_plus_grace() {
    // Kathmandu is UTC+5:45: 2025-10-07 ends at 18:15 UTC and closes two hours later.
    let dir = small_dir();
    dir.write(
        "inbox/a.ndjson",
        call(
            "2025-10-07T10:00:00Z",
            "a",
            "200",
            "/api/v1/tasks/count",
            200,
        ),
    );
    dir.expect(0, &["run", "ingest"]);
    let status = |now: &str| {
        let out = dir.expect(0, &["--now", now, "ledger", "export"]);
        csv_rows(&out)[1][17].clone()
    };
    assert_eq!(status("2025-10-07T20:14:59.999Z"), "open");
    assert_eq!(status("2025-10-07T20:15:00Z"), "closed");
}

#[test]
fn late_data_amends_a_closed_day_and_usage_shows_it() {
    let dir = small_dir();
    dir.write(
        "inbox/a.ndjson",
        call(
            "2025-10-07T10:00:00Z",
            "a",
            "200",
            "/api/v1/tasks/count",
            200,
        ),
    );
    dir.expect(0, &["--now", "2025-10-07T12:00:00Z", "run", "ingest"]);
    // A second file while the day is still open: no amendment.
    dir.write(
        "inbox/b.ndjson",
        call(
            "2025-10-07T11:00:00Z",
            "b",
            "200",
            "/api/v1/tasks/count",
            200,
        ),
    );
    dir.expect(0, &["--now", "2025-10-07T13:00:00Z", "run", "ingest"]);
    let usage = dir.expect(0, &["usage", "--org", "200", "--date", "2025-10-07"]);
    assert!(!usage.contains("Amended"), "{usage}");
    // Days later, a late log for that day.
    dir.write(
        "inbox/c.ndjson",
        call(
            "2025-10-07T12:00:00Z",
            "c",
            "200",
            "/api/v1/tasks/count",
            200,
        ),
    );
    dir.expect(0, &["--now", "2025-10-12T00:00:00Z", "run", "ingest"]);
    let usage = dir.expect(
        0,
        &[
            "--now",
            "2025-10-12T00:00:00Z",
            "usage",
            "--org",
            "200",
            "--date",
            "2025-10-07",
        ],
    );
    assert!(
        usage.contains("Used                      150 credits"),
        "{usage}"
    );
    assert!(usage.contains("Amended          1 time(s)"), "{usage}");
    assert!(usage.contains("closed"), "{usage}");
}

#[test]
fn usage_shows_the_api_details_view() {
    let dir = small_dir();
    let mut lines = String::new();
    // Professional, 10 agents, grandfathered in us from 2025-10-06: max(90000+6000, 75000+5000).
    for i in 0..100 {
        lines.push_str(&call(
            &format!("2025-10-08T0{}:00:{:02}Z", i / 60, i % 60),
            &format!("r{i}"),
            "200",
            "/api/v1/tasks/count",
            if i == 0 { 429 } else { 200 },
        ));
    }
    dir.write("inbox/a.ndjson", lines);
    dir.expect(0, &["run", "ingest"]);
    let usage = dir.expect(
        0,
        &["--now", "2025-10-08T12:00:00Z", "usage", "--org", "200"],
    );
    for want in [
        "API details — org 200 (Beta)",
        "Local day        2025-10-08 (Asia/Kathmandu), open",
        "Edition          professional (10 agents",
        "Model            grandfathered — paid org signed up 2025-06-01 before 2025-10-30",
        "Base credits            75000",
        "Variable credits         5000",
        "Additional                  0",
        "Allotted                96000   (legacy call limit 96000)",
        "Used                     4950 credits",
        "% used                   5.16",
        "Concurrency                15 concurrent calls",
        "Calls                     100 (99 billable, 4950 credits, 0 unpriced)",
    ] {
        assert!(usage.contains(want), "missing {want:?} in\n{usage}");
    }
}
