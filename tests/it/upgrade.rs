//! An existing state directory upgrades in place (DESIGN §6). The fixture is a state written
//! by release 881b223 (`scripts/make-upgrade-fixture`): the sample data ingested with one org
//! missing from the registry, then a backfill that recovered its lines and left each date's
//! events in one part of several input files, and the single claims index of that release.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use crate::ingest::{assert_nothing_lost, file_counts};
use crate::{csv_rows, Dir};

const RELEASE: &str = "881b223";
const NOW: &str = "2026-01-02T12:00:00Z";
const RANGE: [&str; 4] = ["--from", "2025-10-01", "--to", "2025-11-10"];

/// A copy of the fixture's installation and state.
fn earlier_state() -> Dir {
    let dir = Dir::empty();
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(format!("upgrade-{RELEASE}.tar.gz"));
    let out = Command::new("tar")
        .arg("xzf")
        .arg(&fixture)
        .arg("-C")
        .arg(dir.path())
        .output()
        .expect("run tar");
    assert!(out.status.success(), "{out:?}");
    dir
}

fn export(dir: &Dir) -> String {
    dir.expect(0, &["--now", NOW, "ledger", "export"])
}

/// The files under `dir`, by path relative to it.
fn names_under(dir: &Path) -> BTreeSet<String> {
    crate::backfill::snapshot(dir).into_keys().collect()
}

#[test]
fn a_state_of_the_previous_release_keeps_its_ledger_files_and_messages() {
    let dir = earlier_state();
    let ledger = dir.read(&format!("ledger-{RELEASE}.csv"));
    assert!(ledger.lines().count() > 300, "the fixture holds a ledger");
    let legacy_index = dir.path().join("state/claims/base-3.fp");
    assert!(legacy_index.exists(), "the fixture holds the single index");
    let sent = names_under(&dir.path().join("state/outbox"));

    // A reader changes nothing, so before the first writing command it says what to do.
    let out = dir.creditd(&["files"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("written by an earlier version of creditd (it lacks files.expired")
            && stderr.contains("run `creditd run ingest` once to upgrade it in place"),
        "{stderr}"
    );
    // Nothing new in the inbox: the writing run upgrades the store and finds nothing to do.
    let out = dir.expect(0, &["--now", NOW, "run", "ingest"]);
    assert!(out.contains("ingest: 0 file(s)"), "{out}");
    assert_eq!(export(&dir), ledger);
    let files = csv_rows(&dir.expect(0, &["files"]));
    let old_files = csv_rows(&dir.read(&format!("files-{RELEASE}.csv")));
    assert_eq!(files.len(), old_files.len());
    assert_eq!(files[0].last().unwrap(), "expired");
    for (new, old) in files.iter().zip(&old_files).skip(1) {
        // Every column the release had, unchanged; nothing of it was expired.
        assert_eq!(new[..new.len() - 1], old[..], "{}", old[0]);
        assert_eq!(new.last().unwrap(), "0", "{}", old[0]);
    }

    // Every later task does what the release's next run did (close the org-days its backfill
    // added, send their summaries and the backfill report), and no message twice.
    dir.expect(0, &["--now", NOW, "run", "all"]);
    assert_eq!(export(&dir), ledger);
    let outbox = names_under(&dir.path().join("state/outbox"));
    let expected: BTreeSet<String> = dir
        .read(&format!("outbox-after-next-run-{RELEASE}.txt"))
        .lines()
        .map(str::to_string)
        .collect();
    assert!(outbox.is_superset(&sent) && outbox.len() > sent.len());
    assert_eq!(outbox, expected);
    let out = dir.expect(0, &["--now", NOW, "run", "all"]);
    assert!(out.contains("deliver: 0 sent"), "{out}");
    // The release's single claims index is retired; each date rebuilds its own when touched.
    assert!(!legacy_index.exists());

    // The lines of an archived file delivered again under another name are all duplicates:
    // the claims rebuilt from the release's parts hold every id it accepted.
    let archived = names_under(&dir.path().join("state/archive"))
        .into_iter()
        .find(|n| n.ends_with("-gw2-20251008T1200.csv"))
        .expect("archived file");
    let text = std::fs::read_to_string(dir.path().join("state/archive").join(&archived)).unwrap();
    let (header, body) = text.split_once('\n').unwrap();
    let mut lines: Vec<&str> = body.lines().collect();
    lines.reverse();
    dir.write(
        "inbox/gw2-redelivered.csv",
        format!("{header}\n{}\n", lines.join("\n")),
    );
    dir.expect(0, &["--now", NOW, "run", "ingest"]);
    let counts = file_counts(&dir);
    let again = &counts["gw2-redelivered.csv"];
    assert!(again[1] > 100, "{again:?}");
    assert_eq!(again[2], 0, "no line of it is new: {again:?}");
    assert_eq!(again[3], again[1], "every accepted line is a duplicate");
    assert_nothing_lost(&counts);
    assert_eq!(export(&dir), ledger);
    let claimed = names_under(&dir.path().join("state/claims"));
    assert!(
        claimed
            .iter()
            .any(|n| n.starts_with("local_date=2025-10-08/")),
        "{claimed:?}"
    );

    // A backfill of the whole range reads the archive and finds the ledger right.
    let mut args = vec!["--now", NOW, "backfill"];
    args.extend(RANGE);
    let out = dir.expect(0, &args);
    assert!(out.contains(" 0 org-day(s) changed"), "{out}");
    assert_eq!(export(&dir), ledger);
}

#[test]
fn a_backfill_as_the_first_command_splits_the_release_parts_and_recomputes() {
    let dir = earlier_state();
    let ledger = dir.read(&format!("ledger-{RELEASE}.csv"));
    let mut dry = vec!["--now", NOW, "backfill"];
    dry.extend(RANGE);
    dry.push("--dry-run");
    // A dry run writes nothing, so it cannot upgrade the parts; it says what to do.
    let out = dir.creditd(&dry);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("run `creditd run ingest` once"), "{stderr}");

    // The org the release first quarantined is taken out again: the backfill must find its
    // events in the split parts, each still tied to the file it came from.
    let orgs = dir.read("orgs.csv");
    let without: String = orgs
        .lines()
        .filter(|l| !l.starts_with("60000000,"))
        .map(|l| format!("{l}\n"))
        .collect();
    dir.write("orgs.csv", &without);
    let mut args = vec!["--now", NOW, "backfill"];
    args.extend(RANGE);
    let out = dir.expect(0, &args);
    assert!(out.contains("0 line(s) recovered"), "{out}");
    let exported = export(&dir);
    assert!(!exported.contains("\n60000000,"), "{exported}");
    assert_nothing_lost(&file_counts(&dir));

    // With the org back, a second backfill restores the release's ledger exactly.
    dir.write("orgs.csv", &orgs);
    let out = dir.expect(0, &args);
    assert!(out.contains("recovered from the quarantine"), "{out}");
    assert_eq!(export(&dir), ledger);
    dir.expect(0, &dry);
}
