//! Crash safety: `creditd` killed with SIGKILL at arbitrary points, restarted, and compared
//! with a clean run.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ingest::{assert_nothing_lost, expected_file_counts, file_counts};
use crate::mail::{expected_alerts, free_port, header, one_alert_per_org_day, SmtpServer};
use crate::{without_status, Dir};

const NOW: &str = "2026-01-02T12:00:00Z";

/// A small deterministic generator of kill delays (xorshift), so a failure can be replayed.
struct Delays(u64);

impl Delays {
    fn next_ms(&mut self, max: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % max
    }
}

fn spawn(dir: &Dir, args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_creditd"))
        .current_dir(dir.path())
        .arg("--config")
        .arg(dir.path().join("creditd.toml"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run creditd")
}

/// Runs `args` again and again, each killed after a random delay below `max_ms` unless it
/// finished first, until `done` says so; `check` runs after every kill. Returns the kills.
fn kill_repeatedly(
    dir: &Dir,
    args: &[&str],
    max_ms: u64,
    seed: u64,
    mut done: impl FnMut(usize) -> bool,
    mut check: impl FnMut(),
) -> usize {
    let mut delays = Delays(seed);
    let mut killed = 0;
    let start = Instant::now();
    while !done(killed) {
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "seed {seed}: too slow"
        );
        let mut child = spawn(dir, args);
        std::thread::sleep(Duration::from_millis(delays.next_ms(max_ms)));
        match child.try_wait().unwrap() {
            Some(status) => assert!(status.success(), "seed {seed}: {args:?}: {status:?}"),
            None => {
                child.kill().unwrap();
                child.wait().unwrap();
                killed += 1;
                check();
            }
        }
    }
    killed
}

#[test]
fn ingest_killed_twenty_times_ends_like_a_clean_run() {
    // Many small files (one per gateway hour): a run takes seconds, files commit one by one.
    let dir = Dir::generated(&[
        "--orgs",
        "24",
        "--dates",
        "2025-10-05..2025-10-09",
        "--hours-per-file",
        "1",
        "--calls-per-day",
        "1500",
        "--seed",
        "11",
    ]);
    let files = dir.inbox().len();
    assert!(files > 100, "{files}");
    // Twenty runs, each killed within 300 ms: together far less than one whole ingest, so
    // every kill lands mid-ingest. The state is read after every kill.
    let kills = kill_repeatedly(
        &dir,
        &["--now", NOW, "run", "ingest"],
        300,
        0x9E37_79B9,
        |kills| kills >= 20,
        || {
            let export = dir.export();
            assert!(export.starts_with("org_id,local_date,"));
        },
    );
    assert_eq!(kills, 20);
    assert!(!dir.inbox().is_empty(), "the kills came before the end");
    dir.expect(0, &["--now", NOW, "run", "all"]);
    assert!(dir.inbox().is_empty());
    assert_eq!(
        without_status(&dir.export()),
        dir.read("expected-ledger.csv")
    );
    let counts = file_counts(&dir);
    assert_eq!(counts.len(), files);
    assert_eq!(counts, expected_file_counts(&dir));
    assert_nothing_lost(&counts);
}

#[test]
fn backfill_killed_leaves_the_old_or_the_new_ledger_never_a_mix() {
    let dir = Dir::sample();
    let right = dir.read("pricing.toml");
    dir.write(
        "pricing.toml",
        right.replacen("credits = 50", "credits = 5", 1),
    );
    dir.expect(0, &["--now", NOW, "run", "all"]);
    let old = dir.export();
    let old_files = file_counts(&dir);
    dir.write("pricing.toml", right);
    let expected = dir.read("expected-ledger.csv");
    let args = [
        "--now",
        NOW,
        "backfill",
        "--from",
        "2025-10-01",
        "--to",
        "2025-11-10",
    ];
    let mut states = (0, 0);
    kill_repeatedly(
        &dir,
        &args,
        2500,
        0xC0FF_EE11,
        |kills| kills >= 20,
        || {
            let now = dir.export();
            if now == old {
                states.0 += 1;
            } else {
                assert_eq!(
                    without_status(&now),
                    expected,
                    "a killed backfill left a mixed ledger"
                );
                states.1 += 1;
            }
            assert_eq!(file_counts(&dir), old_files);
        },
    );
    assert!(
        states.0 > 0,
        "some kills landed before a commit: {states:?}"
    );
    dir.expect(0, &args);
    assert_eq!(without_status(&dir.export()), expected);
    // No part of a killed run is ever read: every listed part exists, none is left over.
    let out = dir.expect(
        0,
        &[
            "--now",
            NOW,
            "backfill",
            "--from",
            "2025-10-01",
            "--to",
            "2025-11-10",
        ],
    );
    assert!(out.contains(": 0 org-day(s) changed"), "{out}");
}

#[test]
fn deliver_killed_loses_nothing_and_repeats_only_with_the_same_message_id() {
    let dir = Dir::sample();
    let port = free_port();
    let cfg = dir.read("creditd.toml")
        + &format!("\n[smtp]\nurl = \"smtp://127.0.0.1:{port}\"\ntls = \"none\"\n");
    dir.write("creditd.toml", cfg);
    // Queue everything with the server down (each message then waits its first backoff).
    dir.expect(0, &["--now", NOW, "run", "all"]);
    // A slow server (100 ms a message) keeps each run busy long enough to be killed mid-way.
    let server = SmtpServer::start_slow(port, &dir.path().join("smtp-received"), 0, 100);
    let later = "2026-01-02T13:00:00Z";
    let mut expected = expected_alerts(&dir);
    expected.insert("digest:2026-01-02".to_string());
    let expected = one_alert_per_org_day(&expected);
    let kills = kill_repeatedly(
        &dir,
        &["--now", later, "run", "deliver"],
        300,
        0x5EED_0042,
        |kills| kills >= 20,
        || {},
    );
    assert_eq!(kills, 20);
    assert!(
        server.received().len() < expected.len(),
        "the kills came before the end"
    );
    dir.expect(0, &["--now", later, "run", "deliver"]);

    let mut copies: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (_, raw) in server.received() {
        copies
            .entry(header(&raw, "X-Creditd-Key"))
            .or_default()
            .push(header(&raw, "Message-ID"));
    }
    assert_eq!(
        copies
            .keys()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>(),
        expected
    );
    let repeated: Vec<&String> = copies
        .iter()
        .filter(|(_, v)| v.len() > 1)
        .map(|(k, _)| k)
        .collect();
    // A kill between the server's 250 and the outbox commit can repeat one message per kill,
    // always with the same Message-ID, which mail systems deduplicate on.
    assert!(repeated.len() <= 20, "{repeated:?}");
    for ids in copies.values() {
        assert!(ids.iter().all(|id| id == &ids[0]), "{ids:?}");
    }
}

#[test]
fn a_full_disk_fails_files_whole_and_the_next_run_completes() {
    let dir = Dir::sample();
    // Files may not grow past 1 MB (dash counts 512-byte blocks): SQLite's writes fail as on a
    // full disk. SIGXFSZ is ignored so the write returns an error instead of killing us.
    let out = Command::new("sh")
        .current_dir(dir.path())
        .arg("-c")
        .arg(format!(
            "trap '' XFSZ; ulimit -f 2000; exec {} --config creditd.toml --now {NOW} run ingest",
            env!("CARGO_BIN_EXE_creditd")
        ))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("disk I/O error"), "{stderr}");
    let left = dir.inbox().len();
    assert!(left > 0, "some files could not be stored");
    // What was stored is whole: every ingested file has its full counts; the others are
    // recorded as failed (when even that could be written) and wait in the inbox.
    let expected = expected_file_counts(&dir);
    let rows = crate::csv_rows(&dir.expect(0, &["files"]));
    let mut ingested = 0;
    for r in &rows[1..] {
        let counts: Vec<u64> = r[3..].iter().map(|v| v.parse().unwrap()).collect();
        match r[2].as_str() {
            "ingested" => {
                assert_eq!(counts, expected[&r[0]], "{}", r[0]);
                ingested += 1;
            }
            "failed" => assert!(dir.inbox().contains(&r[0]), "{}", r[0]),
            other => panic!("{}: {other}", r[0]),
        }
    }
    assert!(ingested > 0 && ingested + left == expected.len());
    dir.expect(0, &["--now", NOW, "run", "all"]);
    assert_eq!(
        without_status(&dir.export()),
        dir.read("expected-ledger.csv")
    );
    assert_eq!(file_counts(&dir), expected);
}

#[test]
fn retention_killed_again_and_again_ends_like_one_clean_run() {
    use crate::retention::{archived, count, dates, settled_sample, with_retention, LATER};
    let horizons = "events = \"80d\"\narchive = \"10d\"\nquarantine = \"10d\"\noutbox = \"10d\"\n";
    // The reference: the same state, one retention run that nobody interrupts.
    let clean = settled_sample();
    with_retention(&clean, horizons);
    clean.expect(0, &["--now", LATER, "run", "retention"]);

    let dir = settled_sample();
    let ledger = dir.export();
    let files = dir.expect(0, &["files"]);
    with_retention(&dir, horizons);
    let purged = |dir: &Dir| {
        dates(dir, "events")
            .iter()
            .all(|d| d.as_str() >= "2025-11-01")
    };
    let kills = kill_repeatedly(
        &dir,
        &["--now", LATER, "run", "retention"],
        // A whole run takes about 50 ms here: most kills land inside one.
        45,
        0x5eed_0e7e,
        |kills| kills >= 12 || purged(&dir),
        || {
            // After every kill: the ledger and `files` never change, and every part the store
            // lists is on disk.
            assert_eq!(dir.export(), ledger);
            assert_eq!(dir.expect(0, &["files"]), files);
            let listed = count(&dir, "SELECT count(*) FROM parts");
            let on_disk = walk_count(&dir.path().join("state/events"), "parquet");
            assert!(
                listed as usize <= on_disk,
                "{listed} listed, {on_disk} on disk"
            );
        },
    );
    assert!(kills > 0, "no run was killed");
    // The next run finishes the job: the same state as the uninterrupted run.
    dir.expect(0, &["--now", LATER, "run", "retention"]);
    assert_eq!(dir.export(), clean.export());
    assert_eq!(dir.expect(0, &["files"]), clean.expect(0, &["files"]));
    assert_eq!(dates(&dir, "events"), dates(&clean, "events"));
    assert_eq!(dates(&dir, "claims"), dates(&clean, "claims"));
    assert_eq!(archived(&dir), archived(&clean));
    let emls = |d: &Dir| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d.path().join("state/outbox"))
            .map(|rd| {
                rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    assert_eq!(emls(&dir), emls(&clean));
    let sql = "SELECT count(*) FROM quarantine";
    assert_eq!(count(&dir, sql), count(&clean, sql));
    let sql = "SELECT count(*) FROM outbox WHERE length(message) > 0";
    assert_eq!(count(&dir, sql), count(&clean, sql));
    // Nothing is left that the store does not list.
    let listed = count(&dir, "SELECT count(*) FROM parts") as usize;
    assert_eq!(
        walk_count(&dir.path().join("state/events"), "parquet"),
        listed
    );
    // A further run finds nothing left to do.
    let again = dir.expect(0, &["--now", LATER, "run", "retention"]);
    assert!(again.contains("retention: 0 purge(s)"), "{again}");
}

/// Files under `dir` whose name ends with `.ext`.
fn walk_count(dir: &std::path::Path, ext: &str) -> usize {
    if !dir.exists() {
        return 0;
    }
    crate::backfill::snapshot(dir)
        .keys()
        .filter(|p| p.ends_with(&format!(".{ext}")))
        .count()
}
