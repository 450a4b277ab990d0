//! Metrics: after every job run, the Prometheus text format in `[metrics] textfile`, valid for
//! `promtool check metrics`, with figures equal to what `files`, `status` and `outbox` say.

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use crate::Dir;

/// The value of the sample `name{labels}` (labels exactly as written).
fn value(text: &str, sample: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no sample {sample} in\n{text}"))
        .parse()
        .unwrap()
}

fn promtool_check(text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian: prometheus; scripts/test installs it)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // promtool's lint findings (names, units, HELP) come on stdout; there must be none.
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool findings:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_run_writes_valid_metrics_that_agree_with_files_and_status() {
    let dir = Dir::sample();
    dir.expect(0, &["--now", "2026-01-02T12:00:00Z", "run", "ingest"]);
    let path = dir.path().join("state/metrics.prom");
    let text = std::fs::read_to_string(&path).unwrap();
    promtool_check(&text);
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o644
    );
    // The sample's 40 files, all ingested; the lines as `files` counts them.
    assert_eq!(value(&text, "creditd_files{status=\"ingested\"}"), 40.0);
    assert_eq!(
        value(&text, "creditd_files{status=\"duplicate_file\"}"),
        0.0
    );
    assert_eq!(value(&text, "creditd_files{status=\"failed\"}"), 0.0);
    let files = crate::csv_rows(&dir.expect(0, &["files"]));
    let sum = |col: usize| -> f64 {
        files[1..]
            .iter()
            .filter(|r| r[2] == "ingested")
            .map(|r| r[col].parse::<f64>().unwrap())
            .sum()
    };
    assert_eq!(
        value(&text, "creditd_input_lines{outcome=\"unique\",reason=\"\"}"),
        sum(5)
    );
    assert_eq!(
        value(
            &text,
            "creditd_input_lines{outcome=\"duplicate\",reason=\"\"}"
        ),
        sum(6)
    );
    assert_eq!(
        value(
            &text,
            "creditd_input_lines{outcome=\"quarantined\",reason=\"unknown_org\"}"
        ),
        sum(12)
    );
    assert_eq!(value(&text, "creditd_job_runs_total{task=\"ingest\"}"), 1.0);
    assert_eq!(
        value(&text, "creditd_job_failures_total{task=\"ingest\"}"),
        0.0
    );
    assert_eq!(
        value(
            &text,
            "creditd_job_last_success_timestamp_seconds{task=\"ingest\"}"
        ),
        1767355200.0
    );
    assert_eq!(value(&text, "creditd_inbox_files"), 0.0);
    // Ingest queued the alerts; nothing was delivered yet.
    assert_eq!(
        value(&text, "creditd_outbox_messages{status=\"held\"}"),
        0.0
    );
    let queued = value(&text, "creditd_outbox_messages{status=\"queued\"}");
    assert!(queued > 0.0);
    assert!(value(&text, "creditd_state_bytes{area=\"archive\"}") > 1e6);
    assert!(
        value(
            &text,
            "creditd_gateway_last_file_timestamp_seconds{gateway=\"gw1\"}"
        ) > 0.0
    );

    // A hostile gateway name is escaped as a label value, and a failed file counts as a problem.
    dir.write("inbox/gw1-broken.ndjson.gz", b"\x1f\x8b\x08\x00garbage");
    dir.write(
        "inbox/g\"w\\x-1.ndjson",
        // A line of an unknown org: the file goes through, the ledger stays.
        crate::ingest::call("2025-10-10T10:00:00Z", "h1", "999", "/api/v1/tickets", 200),
    );
    let out = dir.creditd(&["--now", "2026-01-02T12:05:00Z", "run", "all"]);
    assert_eq!(out.status.code(), Some(1));
    let text = std::fs::read_to_string(&path).unwrap();
    promtool_check(&text);
    assert_eq!(value(&text, "creditd_open_problems{unit=\"file\"}"), 1.0);
    assert_eq!(value(&text, "creditd_files{status=\"failed\"}"), 1.0);
    assert_eq!(value(&text, "creditd_job_runs_total{task=\"ingest\"}"), 2.0);
    assert_eq!(
        value(&text, "creditd_job_failures_total{task=\"ingest\"}"),
        1.0
    );
    assert_eq!(
        value(&text, "creditd_outbox_messages{status=\"queued\"}"),
        0.0
    );
    // Every message of the sample run went out: its alerts, summaries and the digest.
    assert_eq!(
        value(&text, "creditd_outbox_messages{status=\"sent\"}"),
        27.0
    );
    assert!(queued < 27.0);
    assert_eq!(
        value(&text, "creditd_inbox_files"),
        1.0,
        "the broken file waits"
    );
    assert!(text.contains("gateway=\"g\\\"w\\\\x\""), "{text}");
}

#[test]
fn the_textfile_goes_where_the_config_says_and_a_failure_to_write_it_costs_the_run_nothing() {
    let dir = Dir::sample();
    std::fs::create_dir_all(dir.path().join("textfile")).unwrap();
    let config = dir.read("creditd.toml");
    dir.write(
        "creditd.toml",
        format!("{config}\n[metrics]\ntextfile = \"textfile/creditd.prom\"\n"),
    );
    dir.expect(0, &["check"]);
    dir.expect(0, &["run", "ingest"]);
    let text = std::fs::read_to_string(dir.path().join("textfile/creditd.prom")).unwrap();
    promtool_check(&text);
    assert!(!dir.path().join("state/metrics.prom").exists());
    // No temp file is left for the collector to trip over.
    let names: Vec<String> = std::fs::read_dir(dir.path().join("textfile"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["creditd.prom"]);

    // A directory that does not exist: the run does its work, logs the failure, exit 0.
    dir.write(
        "creditd.toml",
        format!("{config}\n[metrics]\ntextfile = \"nowhere/creditd.prom\"\n"),
    );
    dir.write(
        "inbox/gw3-20251010T0000.ndjson",
        crate::ingest::call(
            "2025-10-10T10:00:00Z",
            "m1",
            "60000021",
            "/api/v1/tickets",
            200,
        ),
    );
    let out = dir.creditd(&["run", "ingest"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot write the metrics to"));
    assert!(dir.inbox().is_empty());
}
