//! Bounded resources: files whose lines touch thousands of local days, ingested and
//! backfilled under systemd's default soft limit of 1024 open files.

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::process::{Command, Output};

use chrono::{Days, NaiveDate};

use crate::ingest::{assert_nothing_lost, file_counts};
use crate::{csv_rows, Dir};

/// systemd's default soft `LimitNOFILE`.
const OPEN_FILES: u64 = 1024;

/// Local days the generated file touches: far more than [`OPEN_FILES`].
const DAYS: u64 = 3000;

const NOW: &str = "2026-01-01T00:00:00Z";

fn first_day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2017, 1, 1).unwrap()
}

/// Calls of day `i` (0-based) in the first file: 1 to 3.
fn calls_on(i: u64) -> u64 {
    1 + i % 3
}

/// Runs creditd with the soft open-file limit lowered to [`OPEN_FILES`].
fn creditd_limited(dir: &Dir, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_creditd"));
    cmd.current_dir(dir.path())
        .arg("--config")
        .arg(dir.path().join("creditd.toml"))
        .args(args);
    // SAFETY: only setrlimit, which is async-signal-safe, runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let mut lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            lim.rlim_cur = OPEN_FILES.min(lim.rlim_max);
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.output().expect("run creditd")
}

fn expect_limited(dir: &Dir, args: &[&str]) -> String {
    let out = creditd_limited(dir, args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "creditd {args:?}\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// One org in Kolkata (so local days differ from UTC days), signed up long before the data.
fn setup() -> Dir {
    let dir = Dir::empty();
    dir.write(
        "orgs.csv",
        "org_id,name,edition,agents,light_agents,timezone,data_center,signup_date,paid,legacy_daily_limit,report_to,effective_from\n\
         700,Org 700,standard,3,0,Asia/Kolkata,us,2010-01-01,true,,a@x.example,\n",
    );
    dir.write("pricing.toml", "effective_from = \"2000-01-01\"\n");
    dir
}

/// A line for call `n` of day `i`, at 23:59 local time of that day (18:29 UTC), so a
/// UTC-day bucketing would put it on the right date too but a wrong zone would not.
fn line(i: u64, n: u64) -> String {
    let day = first_day() + Days::new(i);
    format!(
        "{{\"ts\":\"{day}T23:59:{:02}+05:30\",\"request_id\":\"r{i}-{n}\",\"org_id\":\"700\",\"method\":\"GET\",\"path\":\"/api/v1/tickets/1\",\"status\":200}}\n",
        n % 60
    )
}

/// Lines over days `days`, day by day round-robin (every day's writer is needed again and
/// again until the end of the file), `calls(i)` calls on day `i` numbered from `from(i)`.
fn interleaved(
    days: std::ops::Range<u64>,
    from: impl Fn(u64) -> u64,
    calls: impl Fn(u64) -> u64,
) -> (String, u64) {
    let mut out = String::new();
    let mut lines = 0;
    let most = days.clone().map(&calls).max().unwrap_or(0);
    for round in 0..most {
        for i in days.clone() {
            if round < calls(i) {
                out.push_str(&line(i, from(i) + round));
                lines += 1;
            }
        }
    }
    (out, lines)
}

/// Calls per local date in the export.
fn calls_by_day(dir: &Dir) -> BTreeMap<NaiveDate, u64> {
    let rows = csv_rows(&dir.export());
    assert_eq!(rows[0][1], "local_date");
    assert_eq!(rows[0][5], "calls");
    rows[1..]
        .iter()
        .map(|r| {
            assert_eq!(r[0], "700");
            (r[1].parse().unwrap(), r[5].parse().unwrap())
        })
        .collect()
}

fn expected_calls(calls: impl Fn(u64) -> u64) -> BTreeMap<NaiveDate, u64> {
    (0..DAYS)
        .map(|i| (first_day() + Days::new(i), calls(i)))
        .collect()
}

/// Ingests the file of [`DAYS`] days under the limit; returns the directory.
fn ingested_over_thousands_of_days() -> Dir {
    let dir = setup();
    let (text, lines) = interleaved(0..DAYS, |_| 0, calls_on);
    dir.write("inbox/years.ndjson", text);
    expect_limited(&dir, &["--now", NOW, "run", "ingest"]);
    let counts = file_counts(&dir);
    assert_nothing_lost(&counts);
    // lines, accepted, unique, duplicates
    assert_eq!(counts["years.ndjson"][..4], [lines, lines, lines, 0]);
    assert_eq!(calls_by_day(&dir), expected_calls(calls_on));
    dir
}

#[test]
fn a_file_over_thousands_of_days_ingests_under_the_default_open_file_limit() {
    let dir = ingested_over_thousands_of_days();

    // An overlapping file: every call of the last 1,000 days again (redelivered), plus two
    // new calls on each of them, interleaved the same way.
    let overlap = DAYS - 1000..DAYS;
    let (again, again_lines) = interleaved(overlap.clone(), |_| 0, calls_on);
    let (new, new_lines) = interleaved(overlap.clone(), calls_on, |_| 2);
    dir.write("inbox/years-again.ndjson", again + &new);
    expect_limited(&dir, &["--now", NOW, "run", "ingest"]);
    let counts = file_counts(&dir);
    assert_nothing_lost(&counts);
    let total = again_lines + new_lines;
    assert_eq!(
        counts["years-again.ndjson"][..4],
        [total, total, new_lines, again_lines],
        "redelivered ids are duplicates, the new ones unique"
    );
    assert_eq!(
        calls_by_day(&dir),
        expected_calls(|i| calls_on(i) + if overlap.contains(&i) { 2 } else { 0 })
    );
}

#[test]
fn a_backfill_over_thousands_of_days_runs_under_the_default_open_file_limit() {
    let dir = ingested_over_thousands_of_days();
    let before = dir.export();
    let out = expect_limited(
        &dir,
        &[
            "--now",
            NOW,
            "backfill",
            "--from",
            "2016-12-31",
            "--to",
            "2025-12-31",
        ],
    );
    assert!(out.contains("Nothing changed"), "{out}");
    assert!(!out.contains(" → "), "an empty diff: {out}");
    assert_eq!(dir.export(), before);
    // The rebuilt parts and claims still hold every call once: the file again, with one new
    // call at its end, charges only that call.
    let (mut text, lines) = interleaved(0..DAYS, |_| 0, calls_on);
    text.push_str(&line(0, 99));
    dir.write("inbox/years-redelivered.ndjson", text);
    expect_limited(&dir, &["--now", NOW, "run", "ingest"]);
    assert_eq!(
        file_counts(&dir)["years-redelivered.ndjson"][..4],
        [lines + 1, lines + 1, 1, lines]
    );
    assert_eq!(
        calls_by_day(&dir),
        expected_calls(|i| calls_on(i) + u64::from(i == 0))
    );
}
