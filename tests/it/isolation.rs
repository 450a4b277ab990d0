//! Fault isolation (DESIGN §7): a failing org-day, message or task is an open problem, tried
//! again at every run, while every other unit proceeds exactly as if it were absent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use creditd::store::{Problem, Store, Unit};

use crate::daemon::wait_for;
use crate::ingest::{
    assert_nothing_lost, expected_file_counts, file_counts, late_file_dir, release_aside,
};
use crate::{csv_rows, without_status, Dir};

/// The open problems of a state directory.
fn problems(dir: &Dir) -> Vec<Problem> {
    Store::open_read_only(&dir.path().join("state/creditd.sqlite"))
        .unwrap()
        .problems(None)
        .unwrap()
}

/// Ledger rows by (org_id, local_date), status column dropped.
fn rows_by_org_day(export: &str) -> BTreeMap<(String, String), Vec<String>> {
    csv_rows(export)
        .into_iter()
        .skip(1)
        .map(|r| ((r[0].clone(), r[1].clone()), r[..17].to_vec()))
        .collect()
}

/// The keys of the messages written as `.eml` files.
fn eml_keys(dir: &Dir) -> Vec<String> {
    let mut keys: Vec<String> = std::fs::read_dir(dir.path().join("state/outbox"))
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter_map(|n| n.strip_suffix(".eml").map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    keys.sort();
    keys
}

fn parts_of(dir: &Dir, date: &str) -> Vec<PathBuf> {
    let mut parts: Vec<PathBuf> =
        std::fs::read_dir(dir.path().join(format!("state/events/local_date={date}")))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
            .collect();
    parts.sort();
    parts
}

#[test]
fn a_corrupt_part_fails_its_org_days_alone_and_they_recover_once_it_is_repaired() {
    let dir = late_file_dir();
    dir.expect(0, &["run", "ingest"]);
    let before = rows_by_org_day(&dir.export());
    let expected = rows_by_org_day(&format!("{}\n", dir.read("expected-ledger.csv").trim_end()));

    // One part of 2025-10-27 becomes unreadable, then the late file arrives: it touches that
    // date and, in the zones east of UTC+10, the next one.
    let bad_date = "2025-10-27";
    let part = parts_of(&dir, bad_date).remove(0);
    let good = std::fs::read(&part).unwrap();
    std::fs::write(&part, b"this is not parquet").unwrap();
    release_aside(&dir);
    let out = dir.creditd(&["--now", "2025-10-29T00:00:00Z", "run", "ingest"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(":{bad_date}: cannot reconcile {bad_date}")),
        "{stderr}"
    );

    // Every org-day of another date is exactly the independent expectation; those of the bad
    // date are as they were before the late file.
    let now = rows_by_org_day(&dir.export());
    let mut other_dates_changed = 0;
    for (key, row) in &expected {
        if key.1 == bad_date {
            assert_eq!(now.get(key), before.get(key), "{key:?}");
        } else {
            assert_eq!(now.get(key), Some(row), "{key:?}");
            other_dates_changed += usize::from(before.get(key) != Some(row));
        }
    }
    assert!(other_dates_changed > 0, "the late file touches other dates");
    let open = problems(&dir);
    assert!(!open.is_empty());
    for p in &open {
        assert_eq!(p.unit, Unit::OrgDay, "{p}");
        assert!(p.target.ends_with(bad_date), "{p}");
        assert!(p.error.contains("cannot reconcile"), "{p}");
    }
    // Nothing was lost: the files' counts are whole.
    let counts = file_counts(&dir);
    assert_eq!(counts, expected_file_counts(&dir));
    assert_nothing_lost(&counts);

    // Still broken: tried again, counted as another attempt.
    dir.expect(1, &["--now", "2025-10-29T00:05:00Z", "run", "ingest"]);
    assert!(problems(&dir).iter().all(|p| p.attempts == 2));

    // Repaired: the next run recomputes the bad date, closes the problems, and the whole
    // ledger equals the expectation.
    std::fs::write(&part, good).unwrap();
    dir.expect(0, &["--now", "2025-10-29T00:10:00Z", "run", "ingest"]);
    assert_eq!(problems(&dir), Vec::new());
    assert_eq!(
        without_status(&dir.export()),
        dir.read("expected-ledger.csv")
    );
}

#[test]
fn a_part_whose_detail_columns_cannot_be_read_still_gets_its_ledger() {
    // The day query reads what the alerts show too; a part whose `endpoint` column chunks are
    // damaged (its other columns whole) must cost the alerts at most, not the ledger.
    use polars::prelude::SerReader;
    let dir = late_file_dir();
    dir.expect(0, &["run", "ingest"]);
    let date = "2025-10-27";
    for part in parts_of(&dir, date) {
        let mut reader = polars::prelude::ParquetReader::new(std::fs::File::open(&part).unwrap());
        let meta = reader.get_metadata().unwrap().clone();
        let mut bytes = std::fs::read(&part).unwrap();
        for group in &meta.row_groups {
            for chunk in group.columns_under_root_iter("endpoint").unwrap() {
                let range = chunk.byte_range();
                bytes[range.start as usize..range.end as usize].fill(0xff);
            }
        }
        std::fs::write(&part, bytes).unwrap();
    }
    release_aside(&dir);
    let out = dir.creditd(&["--now", "2025-10-29T00:00:00Z", "run", "ingest"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("reading the day with its details failed"),
        "{stderr}"
    );
    // Every org-day, the late file's on that date included, is exactly the expectation;
    // whatever failed is a message, never an org-day.
    let expected = rows_by_org_day(&format!("{}\n", dir.read("expected-ledger.csv").trim_end()));
    assert_eq!(rows_by_org_day(&dir.export()), expected);
    for p in &problems(&dir) {
        assert_eq!(p.unit, Unit::Message, "{p}");
    }
}

/// The over-limit alert keys a clean run of the sample data queues.
fn sample_over_keys() -> Vec<String> {
    let dir = Dir::sample();
    dir.expect(0, &["--now", "2025-10-12T00:00:00Z", "run", "all"]);
    eml_keys(&dir)
        .into_iter()
        .filter(|k| k.starts_with("over."))
        .collect()
}

#[test]
fn a_message_that_cannot_be_built_holds_back_nothing_else() {
    let clean = sample_over_keys();
    assert!(clean.len() >= 2, "{clean:?}");
    // `over.<org>.<date>` as a file name is `over:<org>:<date>` as a key.
    let broken_key = clean[0].replacen('.', ":", 2);

    let dir = Dir::sample();
    let faults = format!("build:{broken_key}");
    let out = dir.creditd_with_faults(&faults, &["--now", "2025-10-12T00:00:00Z", "run", "all"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let target = format!("build:alerts:{}", broken_key.trim_start_matches("over:"));
    assert!(stderr.contains(&format!("message {target}: ")), "{stderr}");

    // The ledger is whole and every other message went out.
    assert_eq!(
        without_status(&dir.export()),
        dir.read("expected-ledger.csv")
    );
    let sent = eml_keys(&dir);
    for k in &clean[1..] {
        assert!(sent.contains(k), "{k} missing from {sent:?}");
    }
    assert!(!sent.contains(&clean[0]));
    assert!(sent.iter().any(|k| k.starts_with("digest.")), "{sent:?}");
    let open = problems(&dir);
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(
        (open[0].unit, open[0].target.as_str()),
        (Unit::Message, target.as_str())
    );

    // The next run, without the fault, queues and sends it, and closes the problem.
    dir.expect(0, &["--now", "2025-10-12T00:05:00Z", "run", "all"]);
    assert!(eml_keys(&dir).contains(&clean[0]));
    assert_eq!(problems(&dir), Vec::new());
}

#[test]
fn a_failing_task_leaves_the_other_tasks_of_run_all_running() {
    let dir = Dir::sample();
    let out = dir.creditd_with_faults(
        "task:close-days",
        &["--now", "2025-10-12T00:00:00Z", "run", "all"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("task close-days failed: fault injected"),
        "{stderr}"
    );
    // Ingest, the digest and delivery all ran.
    assert!(stdout.contains("close-days: failed"), "{stdout}");
    assert_eq!(
        without_status(&dir.export()),
        dir.read("expected-ledger.csv")
    );
    let sent = eml_keys(&dir);
    assert!(sent.iter().any(|k| k.starts_with("digest.")), "{sent:?}");
    assert!(!sent.iter().any(|k| k.starts_with("summary.")), "{sent:?}");
    let open = problems(&dir);
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(
        (open[0].unit, open[0].target.as_str()),
        (Unit::Task, "close-days")
    );

    // Without the fault the days close, their summaries go out, and the problem is closed.
    let stdout = dir.expect(0, &["--now", "2025-10-12T00:05:00Z", "run", "all"]);
    assert!(stdout.contains("org-day(s) closed"), "{stdout}");
    assert!(eml_keys(&dir).iter().any(|k| k.starts_with("summary.")));
    assert_eq!(problems(&dir), Vec::new());
}

/// Starts the daemon on `dir` at a fixed clock, its log in `daemon.err`.
fn start_daemon(dir: &Dir, now: &str) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_creditd"))
        .current_dir(dir.path())
        .args(["--config", "creditd.toml", "--now", now, "daemon"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("daemon.err")).unwrap())
        .spawn()
        .unwrap()
}

fn sigterm(child: &std::process::Child) {
    // SAFETY: kill(2) on our own child's pid sends a signal; no memory is involved.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
}

/// Waits for the child to exit within `limit`; returns its exit code.
fn exit_within(child: &mut std::process::Child, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("the daemon did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

#[test]
fn sigterm_during_the_start_up_catch_up_exits_0_quickly_and_loses_nothing() {
    // A catch-up with a large backlog: many files over many days.
    let dir = Dir::generated(&[
        "--seed",
        "5",
        "--orgs",
        "200",
        "--dates",
        "2025-10-01..2025-10-20",
        "--calls-per-day",
        "60",
        "--hours-per-file",
        "12",
    ]);
    dir.write(
        "jobs/ingest.toml",
        "schedule = \"0 */5 * * * *\"\ntask = \"ingest\"\n",
    );
    let pristine = dir.path().join("pristine");
    copy_tree(&dir.path().join("inbox"), &pristine);
    // SIGTERM at several points of the catch-up: at once, early, and later on.
    for (round, delay_ms) in [0u64, 150, 600, 1500, 3000].into_iter().enumerate() {
        let mut child = start_daemon(&dir, "2025-10-21T12:00:00Z");
        wait_for("the catch-up to start", Duration::from_secs(30), || {
            dir.read("daemon.err").contains("catching up")
        });
        std::thread::sleep(Duration::from_millis(delay_ms));
        sigterm(&child);
        let code = exit_within(&mut child, Duration::from_secs(10));
        let log = dir.read("daemon.err");
        assert_eq!(code, Some(0), "round {round}: {log}");
        assert!(!log.contains("panicked"), "round {round}: {log}");
    }
    // Left alone, the catch-up runs to its end on the clock `--now` started: the ops digest
    // of that date is written.
    let mut child = start_daemon(&dir, "2025-10-21T12:00:00Z");
    wait_for("the catch-up to finish", Duration::from_secs(300), || {
        dir.read("daemon.err").contains("catch-up done")
    });
    assert!(
        eml_keys(&dir).contains(&"digest.2025-10-21".to_string()),
        "{:?}",
        eml_keys(&dir)
    );
    sigterm(&child);
    assert_eq!(exit_within(&mut child, Duration::from_secs(10)), Some(0));
    // Whatever the interrupted runs left, a run to the end gives the expected ledger.
    dir.expect(0, &["--now", "2025-10-21T12:00:00Z", "run", "ingest"]);
    assert_eq!(
        without_status(&dir.export()),
        dir.read("expected-ledger.csv")
    );
    let counts = file_counts(&dir);
    assert_eq!(counts, expected_file_counts(&dir));
    assert_nothing_lost(&counts);
    wait_for("nothing left in the inbox", Duration::from_secs(1), || {
        dir.inbox().is_empty()
    });
}

#[test]
fn a_recipient_refused_for_good_parks_its_messages_as_failed_and_the_rest_go_out() {
    let clean = sample_over_keys();
    let org = clean[0].split('.').nth(1).unwrap().to_string();
    let dir = Dir::sample();
    let port = crate::mail::free_port();
    let cfg = dir.read("creditd.toml")
        + &format!("\n[smtp]\nurl = \"smtp://127.0.0.1:{port}\"\ntls = \"none\"\n");
    dir.write("creditd.toml", cfg);
    let domain = format!("@org{org}.example.com");
    let server =
        crate::mail::SmtpServer::start_rejecting(port, &dir.path().join("smtp-received"), &domain);
    let out = dir.creditd(&["--now", "2025-10-12T00:00:00Z", "run", "all"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("refused for good"), "{stderr}");

    let store = Store::open_read_only(&dir.path().join("state/creditd.sqlite")).unwrap();
    let outbox = store.outbox().unwrap();
    let to_org =
        |m: &&creditd::store::OutboxMessage| m.recipients.iter().any(|r| r.ends_with(&domain));
    let failed: Vec<_> = outbox.iter().filter(to_org).collect();
    assert!(!failed.is_empty());
    for m in &failed {
        assert_eq!(m.status.as_str(), "failed", "{}", m.key);
        assert!(
            m.last_error.as_deref().unwrap_or("").contains("550"),
            "{m:?}"
        );
    }
    // Everything else went out, once.
    let others: Vec<_> = outbox.iter().filter(|m| !to_org(m)).collect();
    assert!(
        others.iter().all(|m| m.status.as_str() == "sent"),
        "{others:?}"
    );
    assert_eq!(server.received().len(), others.len());
    let open: Vec<String> = problems(&dir).into_iter().map(|p| p.target).collect();
    let mut parked: Vec<String> = failed.iter().map(|m| m.key.clone()).collect();
    parked.sort();
    assert_eq!(open, parked);

    // A parked message is not tried again by itself, and stays an open problem.
    dir.expect(0, &["--now", "2025-10-12T00:00:00Z", "run", "all"]);
    let store = Store::open_read_only(&dir.path().join("state/creditd.sqlite")).unwrap();
    for m in store.outbox().unwrap().iter().filter(to_org) {
        assert_eq!((m.status.as_str(), m.attempts), ("failed", 1), "{}", m.key);
    }
    let still: Vec<String> = problems(&dir).into_iter().map(|p| p.target).collect();
    assert_eq!(still, parked);
    let others = store
        .outbox()
        .unwrap()
        .into_iter()
        .filter(|m| !to_org(&m))
        .count();
    assert_eq!(server.received().len(), others);

    // `outbox list` shows them; `retry` sends one again, `drop` parks another for good.
    assert!(parked.len() >= 2, "{parked:?}");
    let listed = dir.expect(0, &["outbox", "list"]);
    for k in &parked {
        assert!(listed.contains(&format!("{k},failed,")), "{listed}");
    }
    drop(server);
    let port2 = crate::mail::free_port();
    let cfg = dir
        .read("creditd.toml")
        .replace(&port.to_string(), &port2.to_string());
    dir.write("creditd.toml", cfg);
    let server = crate::mail::SmtpServer::start(port2, &dir.path().join("smtp-again"), 0);
    dir.expect(
        0,
        &[
            "--now",
            "2025-10-12T00:00:00Z",
            "outbox",
            "retry",
            &parked[0],
        ],
    );
    dir.expect(0, &["outbox", "drop", &parked[1]]);
    dir.expect(0, &["--now", "2025-10-12T00:00:00Z", "run", "deliver"]);
    assert_eq!(server.received().len(), 1);
    let open: Vec<String> = problems(&dir).into_iter().map(|p| p.target).collect();
    assert_eq!(open, parked[2..].to_vec());
    let listed = dir.expect(0, &["outbox", "list"]);
    assert!(
        !listed.contains(&parked[0]) && !listed.contains(&parked[1]),
        "{listed}"
    );
    // A key that does not exist, or a sent message, is a usage error.
    dir.expect(2, &["outbox", "retry", "over:nobody:2025-10-01"]);
    dir.expect(2, &["outbox", "drop", &parked[0]]);
}

#[test]
fn a_broken_registry_at_reload_keeps_the_last_valid_version_and_tells_ops_once() {
    let dir = Dir::sample();
    let later = dir.hold_back(|n| n.contains("20251030"));
    dir.write(
        "jobs/ingest.toml",
        "schedule = \"* * * * * *\"\ntask = \"ingest\"\n",
    );
    let daemon = crate::daemon::Daemon::start(&dir);
    let good = dir.read("orgs.csv");
    // An operator's typo: a zone that does not exist.
    dir.write(
        "orgs.csv",
        good.replacen("America/Havana", "America/Havanna", 1),
    );
    wait_for("the rejection", Duration::from_secs(60), || {
        daemon.log().contains("running on the last valid version")
    });
    // Files still go through, priced and localized with the last valid registry.
    dir.release(&later);
    wait_for("the inbox to empty", Duration::from_secs(120), || {
        dir.inbox().is_empty()
    });
    // Every job reads it again (each a counted attempt), and keeps rejecting it.
    wait_for("a second rejected reload", Duration::from_secs(30), || {
        problems(&dir).first().is_some_and(|p| p.attempts >= 2)
    });
    let open = problems(&dir);
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].unit, Unit::Config);
    assert!(
        open[0].error.contains("America/Havanna"),
        "{}",
        open[0].error
    );
    let store = Store::open_read_only(&dir.path().join("state/creditd.sqlite")).unwrap();
    let told: Vec<_> = store
        .outbox()
        .unwrap()
        .into_iter()
        .filter(|m| m.kind == "config")
        .collect();
    assert_eq!(told.len(), 1, "ops are told once per rejected version");
    assert_eq!(told[0].key, open[0].target);
    assert_eq!(told[0].recipients, vec!["api-ops@example.com".to_string()]);

    // Fixed: the next job reads it, and the problem closes.
    dir.write("orgs.csv", good);
    wait_for("the problem to close", Duration::from_secs(60), || {
        problems(&dir).is_empty()
    });
    daemon.stop();
    dir.expect(0, &["run", "ingest"]);
    assert_eq!(
        without_status(&dir.export()),
        dir.read("expected-ledger.csv")
    );
}

/// A panic while decoding a batch — on a worker thread or, with one thread, where the file is
/// read — fails that file alone: no hang, the other files go through, and the next run
/// ingests it whole.
#[test]
fn a_panic_while_decoding_fails_its_file_alone_on_any_number_of_threads() {
    for threads in [1, 2] {
        let dir = Dir::sample();
        dir.set_threads(threads);
        // The first batch of every NDJSON file starts at line 1; a CSV file's at line 2.
        let out = dir.creditd_with_faults(
            "decode:1",
            &["--now", "2025-11-20T00:00:00Z", "run", "ingest"],
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "threads {threads}: {stderr}");
        assert!(
            stderr.contains("panicked in the batch of lines from 1"),
            "threads {threads}: {stderr}"
        );
        let left = dir.inbox();
        assert!(!left.is_empty(), "threads {threads}");
        assert!(
            left.iter().all(|f| !f.contains(".csv")),
            "threads {threads}: the CSV files went through, left {left:?}"
        );
        let failed: Vec<Problem> = problems(&dir);
        assert_eq!(failed.len(), left.len(), "threads {threads}: {failed:?}");
        assert!(failed.iter().all(|p| p.unit == Unit::File));

        next_run_ingests_the_rest_whole(&dir, &format!("threads {threads}"));
    }
}

/// The next run of the sample data ingests every file left, closes every problem, and the
/// ledger is the expected one.
fn next_run_ingests_the_rest_whole(dir: &Dir, context: &str) {
    dir.expect(0, &["--now", "2025-11-20T00:00:00Z", "run", "ingest"]);
    assert!(dir.inbox().is_empty(), "{context}");
    assert_eq!(
        without_status(&dir.export()),
        dir.read("expected-ledger.csv"),
        "{context}"
    );
    assert!(problems(dir).is_empty(), "{context}");
}

/// The thread reading files ahead ending in the middle of a run (a panic it did not expect)
/// fails only the files it was handing over: the calling thread reads the rest itself, and
/// the next run ingests the failed ones whole.
#[test]
fn a_reading_thread_that_dies_fails_only_the_files_in_flight() {
    let dir = Dir::sample();
    dir.set_threads(2);
    let inbox = dir.inbox();
    assert!(inbox.len() >= 4, "{inbox:?}");
    let out = dir.creditd_with_faults(
        "read-ahead:1",
        &["--now", "2025-11-20T00:00:00Z", "run", "ingest"],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the thread reading ahead stopped before the end of"),
        "{stderr}"
    );
    // Only the file it was handing over, or the one it was about to take, is left.
    let left = dir.inbox();
    assert!(
        !left.is_empty() && left.iter().all(|f| inbox[..2].contains(f)),
        "{left:?}"
    );
    assert_eq!(problems(&dir).len(), left.len());
    next_run_ingests_the_rest_whole(&dir, "after the reading thread died");
}
