//! `creditd backfill`: bringing the ledger, the quarantine and the reports back to the truth.

use std::collections::BTreeMap;
use std::path::Path;

use crate::ingest::{assert_nothing_lost, expected_file_counts, file_counts};
use crate::mail::{eml_keys, expected_alerts, reported_keys};
use crate::{csv_rows, without_status, Dir};

const NOW: &str = "2026-01-02T12:00:00Z";
const RANGE: [&str; 4] = ["--from", "2025-10-01", "--to", "2025-11-10"];

fn backfill(dir: &Dir, extra: &[&str]) -> String {
    let mut args = vec!["--now", NOW, "backfill"];
    args.extend(RANGE);
    args.extend(extra);
    dir.expect(0, &args)
}

/// Every file under the state directory with its contents.
pub fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// Rewrites `orgs.csv` with `edit` applied to every row (header left alone).
fn edit_orgs(dir: &Dir, edit: impl Fn(&mut Vec<String>) -> bool) -> String {
    let original = dir.read("orgs.csv");
    let rows = csv_rows(&original);
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(&rows[0]).unwrap();
    for r in &rows[1..] {
        let mut r = r.clone();
        if edit(&mut r) {
            w.write_record(&r).unwrap();
        }
    }
    dir.write(
        "orgs.csv",
        String::from_utf8(w.into_inner().unwrap()).unwrap(),
    );
    original
}

#[test]
fn a_registry_fix_recovers_quarantined_rows_and_a_dry_run_writes_nothing() {
    let dir = Dir::sample();
    // Org 60000000 is missing from the registry, and org 60000021 has a wrong, later signup.
    let original = edit_orgs(&dir, |r| {
        if r[0] == "60000021" {
            r[7] = "2025-10-28".to_string();
        }
        r[0] != "60000000"
    });
    dir.expect(0, &["--now", NOW, "run", "all"]);
    let broken = dir.export();
    assert!(!broken.contains("\n60000000,"));
    let counts = file_counts(&dir);
    let unknown: u64 = counts.values().map(|c| c[9]).sum();
    let expected_unknown: u64 = expected_file_counts(&dir).values().map(|c| c[9]).sum();
    assert!(
        unknown > expected_unknown + 100,
        "{unknown} vs {expected_unknown}"
    );
    let early: u64 = counts.values().map(|c| c[10]).sum();
    let expected_early: u64 = expected_file_counts(&dir).values().map(|c| c[10]).sum();
    assert!(early > expected_early + 100, "{early} vs {expected_early}");

    dir.write("orgs.csv", original);
    // A dry run shows what would change and leaves the state byte-identical.
    let before = snapshot(&dir.path().join("state"));
    let out = backfill(&dir, &["--dry-run"]);
    assert!(out.contains("60000000 2025-10-08 row: (none) → "), "{out}");
    assert!(out.contains("Dry run: nothing was written."), "{out}");
    assert_eq!(snapshot(&dir.path().join("state")), before);
    assert_eq!(dir.export(), broken);

    let out = backfill(&dir, &[]);
    assert!(
        out.contains("line(s) recovered from the quarantine"),
        "{out}"
    );
    assert!(out.contains("Queued: backfill:"), "{out}");
    assert_eq!(
        without_status(&dir.export()),
        dir.read("expected-ledger.csv")
    );
    let counts = file_counts(&dir);
    assert_eq!(counts, expected_file_counts(&dir));
    assert_nothing_lost(&counts);

    // The same backfill again changes nothing and queues nothing.
    let export = dir.export();
    let out = backfill(&dir, &[]);
    assert!(out.contains(": 0 org-day(s) changed (0 value(s))"), "{out}");
    assert!(
        out.contains("Nothing changed, so nothing was queued."),
        "{out}"
    );
    assert_eq!(dir.export(), export);
    assert_eq!(file_counts(&dir), expected_file_counts(&dir));

    // The ops report went out once, as a message with the diff.
    dir.expect(0, &["--now", NOW, "run", "deliver"]);
    let reports: Vec<String> = eml_keys(&dir)
        .into_iter()
        .filter(|k| k.starts_with("backfill:"))
        .collect();
    assert_eq!(reports.len(), 1, "{reports:?}");
}

#[test]
fn a_range_without_data_says_so() {
    let dir = Dir::sample();
    dir.expect(0, &["--now", NOW, "run", "all"]);
    let out = dir.expect(
        0,
        &[
            "--now",
            NOW,
            "backfill",
            "--from",
            "2024-01-01",
            "--to",
            "2024-01-31",
        ],
    );
    assert!(out.contains("no data in this range"), "{out}");
}

fn wrong_pricing(dir: &Dir) -> String {
    let right = dir.read("pricing.toml");
    let wrong = right.replacen("credits = 50", "credits = 5", 1);
    assert_ne!(wrong, right);
    dir.write("pricing.toml", wrong);
    right
}

fn alert_keys(keys: &std::collections::BTreeSet<String>) -> Vec<String> {
    keys.iter()
        .filter(|k| k.starts_with("near:") || k.starts_with("over:"))
        .cloned()
        .collect()
}

#[test]
fn a_pricing_fix_reprices_and_mails_alerts_only_with_resend() {
    let expected: Vec<String> = {
        let dir = Dir::sample();
        alert_keys(&expected_alerts(&dir))
    };
    for resend in [false, true] {
        let dir = Dir::sample();
        let right = wrong_pricing(&dir);
        dir.expect(0, &["--now", NOW, "run", "all"]);
        let sent_before = eml_keys(&dir);
        assert!(alert_keys(&reported_keys(&dir)).len() < expected.len());
        dir.write("pricing.toml", right);

        let out = backfill(&dir, if resend { &["--resend"] } else { &[] });
        assert!(
            out.contains(" credits: "),
            "the diff shows the repricing: {out}"
        );
        assert_eq!(
            without_status(&dir.export()),
            dir.read("expected-ledger.csv")
        );
        let delivered = dir.expect(0, &["--now", NOW, "run", "deliver"]);
        let sent_after = eml_keys(&dir);
        let new: Vec<&String> = sent_after.difference(&sent_before).collect();
        assert_eq!(
            delivered.lines().filter(|l| l.starts_with("sent ")).count(),
            new.len(),
            "every message sent is a new key: {delivered}"
        );
        // The report says what the outbox holds for each alert now due.
        let report = new
            .iter()
            .find(|k| k.starts_with("backfill:"))
            .expect("a backfill report");
        let raw = std::fs::read(
            dir.path()
                .join(format!("state/outbox/{}.eml", report.replace(':', "."))),
        )
        .unwrap();
        let text = crate::mail::body_of(&raw, "text/plain");
        let due = if resend {
            ": now due: its alert is queued"
        } else {
            ": now due: not mailed (run with --resend)"
        };
        assert!(text.contains(due), "{text}");
        assert!(!text.contains("is now wrong"), "{text}");
        if resend {
            // Every crossing is reported, once: in its own message or covered by another.
            assert_eq!(alert_keys(&reported_keys(&dir)), expected);
            assert!(
                new.iter()
                    .any(|k| k.starts_with("summary:") && k.ends_with(":r1")),
                "{new:?}"
            );
        } else {
            assert!(new.iter().all(|k| k.starts_with("backfill:")), "{new:?}");
        }
        // A second backfill finds nothing left to fix.
        let out = backfill(&dir, &["--resend"]);
        assert!(out.contains(": 0 org-day(s) changed"), "{out}");
    }
}

#[test]
fn late_files_amend_closed_days_and_a_later_backfill_is_a_no_op() {
    let dir = Dir::sample();
    let late = dir.hold_back(|n| n.contains("20251030") || n.contains("20251101"));
    assert!(!late.is_empty());
    dir.expect(0, &["--now", NOW, "run", "all"]);
    dir.release(&late);
    dir.expect(0, &["--now", NOW, "run", "all"]);
    let export = dir.export();
    assert_eq!(without_status(&export), dir.read("expected-ledger.csv"));

    let out = backfill(&dir, &[]);
    assert!(out.contains(": 0 org-day(s) changed (0 value(s))"), "{out}");
    assert_eq!(dir.export(), export);
    assert_eq!(file_counts(&dir), expected_file_counts(&dir));
}

#[test]
fn a_backfill_of_one_org_leaves_the_others_alone() {
    let dir = Dir::sample();
    let right = wrong_pricing(&dir);
    dir.expect(0, &["--now", NOW, "run", "all"]);
    let broken = csv_rows(&dir.export());
    dir.write("pricing.toml", right);
    backfill(&dir, &["--org", "60000000"]);
    let fixed = csv_rows(&dir.export());
    let expected = csv_rows(&dir.read("expected-ledger.csv"));
    assert_eq!(fixed.len(), broken.len());
    let mut changed = 0;
    for (i, row) in fixed.iter().enumerate().skip(1) {
        if row[0] == "60000000" {
            assert_eq!(row[..17], expected[i][..17], "repriced");
            changed += usize::from(row[7] != broken[i][7]);
        } else {
            assert_eq!(row, &broken[i], "untouched");
        }
    }
    assert!(changed > 5, "the org's credits changed on {changed} day(s)");
}

#[test]
fn a_backfill_and_the_running_daemon_take_turns_on_the_state_lock() {
    use crate::daemon::{wait_for, Daemon};
    use std::time::Duration;

    let dir = Dir::sample();
    let right = wrong_pricing(&dir);
    let late = dir.hold_back(|n| n.contains("20251030"));
    dir.expect(0, &["run", "all"]);
    dir.write("pricing.toml", right);
    dir.write(
        "jobs/ingest.toml",
        "schedule = \"* * * * * *\"\ntask = \"ingest\"\n",
    );
    dir.write(
        "jobs/close.toml",
        "schedule = \"* * * * * *\"\ntask = \"close-days\"\n",
    );
    let daemon = Daemon::start(&dir);

    // Late files arrive while the backfill runs: whichever takes the lock first, the other
    // waits, and the ledger ends exact.
    dir.release(&late);
    let mut args = vec!["backfill"];
    args.extend(RANGE);
    dir.expect(0, &args);
    wait_for("the inbox to empty", Duration::from_secs(60), || {
        dir.inbox().is_empty()
    });
    daemon.stop();
    // A stop may leave org-days dirty (the recompute stops between dates); the next run
    // finishes them.
    dir.expect(0, &["run", "ingest"]);
    assert_eq!(
        without_status(&dir.export()),
        dir.read("expected-ledger.csv")
    );
    let counts = file_counts(&dir);
    assert_eq!(counts, expected_file_counts(&dir));
    assert_nothing_lost(&counts);
}
