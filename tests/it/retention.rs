//! Retention (DESIGN §6): what is past each horizon goes, the ledger and the `files` rows stay,
//! late calls past the events horizon are `expired`, and a backfill into a purged range stops.

use std::collections::BTreeSet;
use std::path::Path;

use crate::ingest::{assert_nothing_lost, file_counts};
use crate::{csv_rows, Dir};

/// When the sample is ingested and its days closed.
pub const INGESTED: &str = "2026-01-02T12:00:00Z";
/// When retention runs: 80 days after 2025-11-01 in every zone of the sample.
pub const LATER: &str = "2026-01-20T12:00:00Z";

pub fn with_retention(dir: &Dir, section: &str) {
    let cfg = dir.read("creditd.toml") + "\n[retention]\n" + section;
    dir.write("creditd.toml", cfg);
}

/// The dates of `area` (`events` or `claims`) that have a directory.
pub fn dates(dir: &Dir, area: &str) -> BTreeSet<String> {
    let Ok(entries) = std::fs::read_dir(dir.path().join("state").join(area)) else {
        return BTreeSet::new();
    };
    entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter_map(|n| n.strip_prefix("local_date=").map(str::to_string))
        .collect()
}

pub fn count(dir: &Dir, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(dir.path().join("state/creditd.sqlite")).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

fn store_bytes(dir: &Dir) -> u64 {
    let state = dir.path().join("state");
    ["creditd.sqlite", "creditd.sqlite-wal"]
        .iter()
        .map(|f| std::fs::metadata(state.join(f)).map_or(0, |m| m.len()))
        .sum()
}

pub fn archived(dir: &Dir) -> usize {
    std::fs::read_dir(dir.path().join("state/archive")).map_or(0, |d| d.count())
}

/// The sample, ingested and closed, with every message delivered.
pub fn settled_sample() -> Dir {
    let dir = Dir::sample();
    dir.expect(0, &["--now", INGESTED, "run", "all"]);
    dir
}

#[test]
fn retention_removes_what_it_says_and_leaves_the_ledger_and_files_byte_identical() {
    let dir = settled_sample();
    let ledger = dir.export();
    let files = dir.expect(0, &["files"]);
    let all_dates = dates(&dir, "events");
    assert!(all_dates.contains("2025-10-08") && all_dates.contains("2025-11-03"));
    assert_eq!(dates(&dir, "claims"), all_dates);
    let quarantined = count(&dir, "SELECT count(*) FROM quarantine");
    assert!(quarantined > 0);
    let bodies = count(
        &dir,
        "SELECT count(*) FROM outbox WHERE length(message) > 0",
    );
    assert!(bodies > 0);
    assert!(archived(&dir) > 0);
    let bytes_before = store_bytes(&dir);

    with_retention(
        &dir,
        "events = \"80d\"\narchive = \"10d\"\nquarantine = \"10d\"\noutbox = \"10d\"\n",
    );
    let out = dir.expect(0, &["--now", LATER, "run", "retention"]);

    // The events and claims of every date before 2025-11-01 are gone, the later ones kept.
    let kept: BTreeSet<String> = all_dates
        .iter()
        .filter(|d| d.as_str() >= "2025-11-01")
        .cloned()
        .collect();
    assert!(!kept.is_empty());
    assert_eq!(dates(&dir, "events"), kept, "{out}");
    assert_eq!(dates(&dir, "claims"), kept, "{out}");
    let dropped = all_dates.len() - kept.len();
    let first = all_dates.first().unwrap();
    assert!(
        out.contains(&format!(
            "removed the events and claims of {dropped} dates from {first} to 2025-10-31"
        )),
        "{out}"
    );
    // Every archived file and quarantined line was ingested on 2026-01-02, every message sent
    // then: all past their 10 days.
    assert_eq!(archived(&dir), 0);
    assert!(
        out.contains("archived file(s) ingested before 2026-01-10"),
        "{out}"
    );
    assert_eq!(count(&dir, "SELECT count(*) FROM quarantine"), 0);
    assert!(
        out.contains(&format!("removed {quarantined} quarantined line(s)")),
        "{out}"
    );
    assert_eq!(
        count(
            &dir,
            "SELECT count(*) FROM outbox WHERE length(message) > 0"
        ),
        0
    );
    // ... but every key and status stays, so nothing is ever sent twice.
    assert_eq!(
        count(&dir, "SELECT count(*) FROM outbox WHERE status = 'sent'"),
        bodies
    );
    assert!(
        out.contains(&format!("the bodies of {bodies} message(s)")),
        "{out}"
    );
    // Without [smtp] the sent messages were .eml files too: they go with their bodies.
    assert!(
        out.contains(&format!("the .eml files of {bodies} message(s)")),
        "{out}"
    );
    assert_eq!(
        std::fs::read_dir(dir.path().join("state/outbox"))
            .unwrap()
            .count(),
        0
    );

    // The ledger and the files rows are kept forever, byte for byte.
    assert_eq!(dir.export(), ledger);
    assert_eq!(dir.expect(0, &["files"]), files);
    // The store gave the space back.
    let bytes_after = store_bytes(&dir);
    assert!(
        bytes_after < bytes_before,
        "store {bytes_before} → {bytes_after} bytes"
    );

    // A second run finds nothing more to remove.
    let again = dir.expect(0, &["--now", LATER, "run", "retention"]);
    assert!(again.contains("retention: 0 purge(s)"), "{again}");

    // A re-sent file whose archived copy was purged is still recognised.
    let src =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("sample-data/inbox/gw1-20251101T1200.jsonl");
    std::fs::copy(&src, dir.path().join("inbox/gw1-20251101T1200-again.jsonl")).unwrap();
    dir.expect(0, &["--now", LATER, "run", "ingest"]);
    let rows = csv_rows(&dir.expect(0, &["files"]));
    let again = rows
        .iter()
        .find(|r| r[0] == "gw1-20251101T1200-again.jsonl")
        .unwrap();
    assert_eq!(again[2], "duplicate_file");
    assert_eq!(dir.export(), ledger);

    // The ops digest lists what retention removed.
    dir.expect(0, &["--now", "2026-01-21T07:00:00Z", "run", "ops-digest"]);
    dir.expect(0, &["--now", "2026-01-21T07:00:00Z", "run", "deliver"]);
    let digest = std::fs::read_dir(dir.path().join("state/outbox"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .find(|m| m.contains("X-Creditd-Key: digest:2026-01-21"))
        .expect("the digest of 2026-01-21");
    assert!(digest.contains("Removed by retention"), "{digest}");
    assert!(digest.contains("quarantined line(s)"), "{digest}");
}

#[test]
fn retention_keeps_a_date_while_any_org_on_it_is_within_the_horizon() {
    // 2025-11-03 in Pacific/Kiritimati (UTC+14) against Pacific/Pago_Pago (UTC−11): at 2025-11-13
    // 05:00 UTC it is 11-13 19:00 in the first and 11-12 18:00 in the second.
    let dir = Dir::empty();
    dir.write(
        "orgs.csv",
        "org_id,name,edition,agents,light_agents,timezone,data_center,signup_date,paid,legacy_daily_limit,report_to,effective_from\n\
         1,East,professional,1,0,Pacific/Kiritimati,us,2025-01-01,true,,a@east.example,\n\
         2,West,professional,1,0,Pacific/Pago_Pago,us,2025-01-01,true,,a@west.example,\n",
    );
    dir.write(
        "pricing.toml",
        "effective_from = \"2025-10-01\"\n\n[[rule]]\nmethod = \"GET\"\npath = \"/api/v1/{module}\"\ncredits = 3\n",
    );
    let line = |ts: &str, id: &str, org: &str| {
        format!("{{\"ts\":\"{ts}\",\"request_id\":\"{id}\",\"org_id\":\"{org}\",\"method\":\"GET\",\"path\":\"/api/v1/tickets\",\"status\":200}}\n")
    };
    // Both on local 2025-11-03.
    let lines = line("2025-11-03T00:00:00Z", "e1", "1") + &line("2025-11-03T20:00:00Z", "w1", "2");
    dir.write("inbox/a.ndjson", lines);
    dir.expect(0, &["--now", "2025-11-06T00:00:00Z", "run", "all"]);
    let ledger = dir.export();
    assert_eq!(
        dates(&dir, "events"),
        BTreeSet::from(["2025-11-03".to_string()])
    );
    with_retention(&dir, "events = \"9d\"\n");
    // East's horizon is 11-04 (past 11-03), West's 11-03 (not yet): kept.
    let out = dir.expect(0, &["--now", "2025-11-13T05:00:00Z", "run", "retention"]);
    assert!(
        out.contains("kept 2025-11-03: within the horizon of org 2"),
        "{out}"
    );
    assert_eq!(dates(&dir, "events").len(), 1);
    // A day later it is past for both.
    let out = dir.expect(0, &["--now", "2025-11-14T05:00:00Z", "run", "retention"]);
    assert!(
        out.contains("removed the events and claims of 2025-11-03"),
        "{out}"
    );
    assert!(dates(&dir, "events").is_empty());
    assert!(dates(&dir, "claims").is_empty());
    assert_eq!(dir.export(), ledger);
}

#[test]
fn a_late_call_before_the_events_horizon_is_expired_by_its_orgs_own_clock() {
    let dir = Dir::empty();
    dir.write(
        "orgs.csv",
        "org_id,name,edition,agents,light_agents,timezone,data_center,signup_date,paid,legacy_daily_limit,report_to,effective_from\n\
         100,Acme,free,0,0,Africa/Cairo,eu,2025-01-01,false,,admin@acme.example,\n\
         200,Beta,professional,10,0,Asia/Kathmandu,us,2025-06-01,true,,admin@beta.example,\n",
    );
    dir.write(
        "pricing.toml",
        "effective_from = \"2025-10-01\"\n\n[[rule]]\nmethod = \"GET\"\npath = \"/api/v1/{module}\"\ncredits = 3\n",
    );
    with_retention(&dir, "events = \"30d\"\n");
    let line = |ts: &str, id: &str, org: &str| {
        format!("{{\"ts\":\"{ts}\",\"request_id\":\"{id}\",\"org_id\":\"{org}\",\"method\":\"GET\",\"path\":\"/api/v1/tickets\",\"status\":200}}\n")
    };
    // At 2025-11-20 20:00 UTC it is 11-20 in Cairo (horizon 10-21) and already 11-21 in
    // Kathmandu (horizon 10-22). A call on 10-21 is in time for Cairo, expired for Kathmandu.
    let lines = line("2025-10-21T12:00:00Z", "a", "100")
        + &line("2025-10-21T12:00:00Z", "b", "200")
        + &line("2025-10-20T12:00:00Z", "c", "100")
        + &line("2025-11-20T10:00:00Z", "d", "200");
    dir.write("inbox/late.ndjson", lines);
    dir.expect(0, &["--now", "2025-11-20T20:00:00Z", "run", "ingest"]);
    let counts = file_counts(&dir);
    assert_nothing_lost(&counts);
    // lines, accepted, unique, duplicates, malformed, missing, ts, method, status, org, signup,
    // expired
    assert_eq!(
        counts["late.ndjson"],
        vec![4, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 2]
    );
    let rows = csv_rows(&dir.export());
    let days: Vec<(&str, &str)> = rows[1..]
        .iter()
        .map(|r| (r[0].as_str(), r[1].as_str()))
        .collect();
    assert_eq!(days, [("100", "2025-10-21"), ("200", "2025-11-20")]);
    assert_eq!(
        count(
            &dir,
            "SELECT count(*) FROM quarantine WHERE reason = 'expired'"
        ),
        2
    );
}

#[test]
fn an_interrupted_retention_run_leaves_a_consistent_state_the_next_run_finishes() {
    let dir = settled_sample();
    let ledger = dir.export();
    let on_disk = dates(&dir, "events");
    with_retention(&dir, "events = \"80d\"\n");
    // Fails right after the first date's drop committed, before its files are removed.
    let out = dir.creditd_with_faults(
        "retention:after-commit",
        &["--now", LATER, "run", "retention"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("task retention failed"), "{stderr}");
    // The ledger never changes, and ingest still dedupes every kept date.
    assert_eq!(dir.export(), ledger);
    // The first date's drop committed, its files are still there: a leftover nothing lists.
    let before = dates(&dir, "events");
    assert_eq!(before, on_disk);
    let out = dir.expect(0, &["--now", LATER, "run", "retention"]);
    assert!(
        out.contains("removed 2 leftover(s) of an interrupted run"),
        "{out}"
    );
    assert!(out.contains("removed the events and claims of "), "{out}");
    let after = dates(&dir, "events");
    assert!(
        after.iter().all(|d| d.as_str() >= "2025-11-01"),
        "{after:?}"
    );
    assert!(after.len() < before.len());
    assert_eq!(dates(&dir, "claims"), after);
    assert_eq!(dir.export(), ledger);
    // Nothing is left that the store does not list, and no problem stays open.
    let problems = dir.expect(0, &["--now", LATER, "run", "retention"]);
    assert!(problems.contains("retention: 0 purge(s)"), "{problems}");
    assert_eq!(count(&dir, "SELECT count(*) FROM problems"), 0);
}

#[test]
fn a_backfill_into_a_purged_range_stops_with_its_reason() {
    let dir = settled_sample();
    let ledger = dir.export();
    with_retention(&dir, "events = \"80d\"\narchive = \"10d\"\n");
    dir.expect(0, &["--now", LATER, "run", "retention"]);
    // Past the events horizon.
    let out = dir.creditd(&[
        "--now",
        LATER,
        "backfill",
        "--from",
        "2025-10-01",
        "--to",
        "2025-11-04",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr.contains("cannot backfill from 2025-10-01: it is past the events retention horizon"),
        "{stderr}"
    );
    // Within it, but the archived files it needs are gone.
    let out = dir.creditd(&[
        "--now",
        LATER,
        "backfill",
        "--from",
        "2025-11-02",
        "--to",
        "2025-11-04",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        stderr.contains("was removed by retention ([retention] archive), and the range needs it"),
        "{stderr}"
    );
    assert_eq!(dir.export(), ledger);
}
