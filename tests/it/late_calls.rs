//! Late calls added to the stored rows of the days they touch: file after file, across a
//! backfill, the ledger and the crossings are those of one reading of everything.

use crate::{without_status, Dir};

/// A generated set whose six files each hold calls of every date (a customer's gateways): each
/// file after the first brings calls before and after those already counted, near-limit and
/// over-limit days among them.
const ARGS: [&str; 12] = [
    "--seed",
    "9",
    "--orgs",
    "16",
    "--dates",
    "2025-10-25..2025-10-27",
    "--calls-per-day",
    "50",
    "--hot-days",
    "24",
    "--spread-files",
    "6",
];

/// A stored crossing: (org, date, threshold, ts, request id).
type Crossing = (String, String, i64, i64, String);

/// Every stored crossing.
fn crossings(dir: &Dir) -> Vec<Crossing> {
    let conn = rusqlite::Connection::open_with_flags(
        dir.path().join("state/creditd.sqlite"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT org_id, local_date, threshold, ts, request_id FROM crossings
             ORDER BY org_id, local_date, threshold",
        )
        .unwrap();
    let rows = stmt
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap();
    rows.map(Result::unwrap).collect()
}

/// How many org-days a run's summary says were worked out by adding their new calls.
fn added_to(summary: &str) -> usize {
    summary
        .split(" by adding their new calls")
        .next()
        .filter(|head| head.len() < summary.len())
        .and_then(|head| head.rsplit('(').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// Ingests the held-back files one run each (with `between` after the run of the `at`-th),
/// and returns how many org-days the runs worked out by adding new calls.
fn one_file_a_run(dir: &Dir, at: usize, between: impl Fn(&Dir)) -> usize {
    let names = dir.inbox();
    let held = dir.hold_back(|n| n != names[0]);
    assert!(held.len() >= 4, "{held:?}");
    let mut added = added_to(&dir.expect(0, &["run", "ingest"]));
    for (i, name) in held.iter().enumerate() {
        dir.release(std::slice::from_ref(name));
        added += added_to(&dir.expect(0, &["run", "ingest"]));
        if i + 1 == at {
            between(dir);
        }
    }
    added
}

fn one_reading() -> (Dir, String, Vec<Crossing>) {
    let once = Dir::generated(&ARGS);
    once.expect(0, &["run", "ingest"]);
    let ledger = once.export();
    assert_eq!(without_status(&ledger), once.read("expected-ledger.csv"));
    let crossed = crossings(&once);
    assert!(crossed.len() >= 10, "{crossed:?}");
    (once, ledger, crossed)
}

#[test]
fn calls_added_file_by_file_give_the_ledger_and_crossings_of_one_reading() {
    let (_once, ledger, crossed) = one_reading();
    let dir = Dir::generated(&ARGS);
    let added = one_file_a_run(&dir, 0, |_| ());
    assert!(
        added > 0,
        "no org-day was worked out by adding its new calls"
    );
    assert_eq!(dir.export(), ledger);
    assert_eq!(crossings(&dir), crossed);
}

#[test]
fn after_a_backfill_late_calls_are_counted_once() {
    // A backfill rewrites the parts of its dates: the rows it leaves as they were must not
    // take the rewritten parts for new calls.
    let (_once, ledger, crossed) = one_reading();
    let dir = Dir::generated(&ARGS);
    let added = one_file_a_run(&dir, 2, |dir| {
        dir.expect(
            0,
            &["backfill", "--from", "2025-10-24", "--to", "2025-10-28"],
        );
    });
    assert!(
        added > 0,
        "no org-day was worked out by adding its new calls"
    );
    assert_eq!(dir.export(), ledger);
    assert_eq!(crossings(&dir), crossed);
}
