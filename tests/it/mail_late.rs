//! Email when crossings arrive late: amended summaries, `max_age`, forecasts, and messages
//! kept under the size limit whatever the logs hold.

use std::collections::BTreeSet;

use crate::mail::{body_of, calls, eml_keys, header, mail_dir};

#[test]
fn late_data_amends_a_sent_summary_and_never_repeats_alerts() {
    let dir = mail_dir(None);
    dir.write("inbox/a.ndjson", calls("2025-10-08", "a", 85));
    dir.expect(0, &["--now", "2025-10-09T12:00:00Z", "run", "all"]);
    let first = eml_keys(&dir);
    assert!(first.contains("summary:300:2025-10-08"), "{first:?}");
    assert!(first.contains("near:300:2025-10-08:80"));
    assert!(!first.contains("over:300:2025-10-08"));

    // Late logs push the closed day over its allotment.
    dir.write("inbox/b.ndjson", calls("2025-10-08", "b", 30));
    dir.expect(0, &["--now", "2025-10-11T12:00:00Z", "run", "all"]);
    let second = eml_keys(&dir);
    let added: Vec<&String> = second.difference(&first).collect();
    assert_eq!(
        added,
        vec![
            "digest:2025-10-11",
            "over:300:2025-10-08",
            "summary:300:2025-10-08:r1"
        ]
    );
    // The late crossings say when they happened; 90 % rides in the overage message, and 80 %,
    // mailed before, is not repeated.
    let raw = std::fs::read(dir.path().join("state/outbox/over.300.2025-10-08.eml")).unwrap();
    assert_eq!(header(&raw, "X-Creditd-Covers"), "near:300:2025-10-08:90");
    let text = body_of(&raw, "text/plain");
    assert!(text.contains("Reported late"), "{text}");
    assert!(
        text.contains("Reached 90%") && !text.contains("Reached 80%"),
        "{text}"
    );
}

/// `max_age` is judged on each crossing: an old 80% found with a fresh over is held, not
/// mailed inside the over alert.
#[test]
fn a_crossing_older_than_max_age_is_not_mailed_inside_a_fresh_alert() {
    let dir = mail_dir(None);
    let cfg = dir.read("creditd.toml") + "\n[alerts]\nmax_age = \"20h\"\n";
    dir.write("creditd.toml", cfg);
    // 80 calls from 10:00 UTC reach 80% at 10:01:19; 30 more at 21:00 UTC (23:00 in
    // Berlin, the same local day) reach 90% and go over.
    let late: String = calls("2025-10-08", "b", 30).replace("T10:", "T21:");
    dir.write("inbox/a.ndjson", calls("2025-10-08", "a", 80) + &late);
    // Found at 12:00 the next day: the 80% is 26 h old, the others 15 h.
    dir.expect(0, &["--now", "2025-10-09T12:00:00Z", "run", "all"]);
    let over = std::fs::read(dir.path().join("state/outbox/over.300.2025-10-08.eml")).unwrap();
    assert_eq!(header(&over, "X-Creditd-Covers"), "near:300:2025-10-08:90");
    assert!(
        !body_of(&over, "text/plain").contains("Reached 80%"),
        "{}",
        body_of(&over, "text/plain")
    );
    assert!(!dir
        .path()
        .join("state/outbox/near.300.2025-10-08.80.eml")
        .exists());
    let digest = std::fs::read(dir.path().join("state/outbox/digest.2025-10-09.eml")).unwrap();
    let text = body_of(&digest, "text/plain");
    assert!(text.contains("near:300:2025-10-08:80"), "held:\n{text}");
    // The 80% is held on its own; the over message covers the 90% only.
    let store =
        creditd::store::Store::open_read_only(&dir.path().join("state/creditd.sqlite")).unwrap();
    let held = store.held_since(0).unwrap();
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0].0, "near:300:2025-10-08:80");
    assert_eq!(held[0].2, "", "it covers nothing");
    assert_eq!(
        store
            .outbox_status("over:300:2025-10-08")
            .unwrap()
            .map(|s| s.as_str()),
        Some("sent")
    );
    assert_eq!(
        store
            .covered_by("near:300:2025-10-08:90")
            .unwrap()
            .as_deref(),
        Some("over:300:2025-10-08")
    );
}

#[test]
fn crossings_older_than_max_age_go_to_the_digest_once_instead_of_the_org() {
    let dir = mail_dir(None);
    let cfg = dir.read("creditd.toml") + "\n[alerts]\nmax_age = \"2d\"\n";
    dir.write("creditd.toml", cfg);
    dir.write("inbox/a.ndjson", calls("2025-10-08", "a", 110));
    // Found five days late: no alert goes to the org; the digest lists them.
    dir.expect(0, &["--now", "2025-10-13T12:00:00Z", "run", "all"]);
    let keys = eml_keys(&dir);
    assert!(
        keys.iter()
            .all(|k| !k.starts_with("near:") && !k.starts_with("over:")),
        "{keys:?}"
    );
    let digest = std::fs::read(dir.path().join("state/outbox/digest.2025-10-13.eml")).unwrap();
    let text = body_of(&digest, "text/plain");
    // One held message for the three crossings, the lower two covered by it.
    assert!(
        text.contains("over:300:2025-10-08  near:300:2025-10-08:80, near:300:2025-10-08:90"),
        "missing from\n{text}"
    );
    assert!(
        text.contains("held (max_age)"),
        "the org's row says so:\n{text}"
    );
    // `outbox retry` of a covered key names the message that reports it.
    let out = dir.creditd(&["outbox", "retry", "near:300:2025-10-08:90"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("reported inside over:300:2025-10-08"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The next digest does not repeat them.
    dir.expect(0, &["--now", "2025-10-14T12:00:00Z", "run", "all"]);
    let next = std::fs::read(dir.path().join("state/outbox/digest.2025-10-14.eml")).unwrap();
    assert!(!body_of(&next, "text/plain").contains("over:300:2025-10-08"));
}

#[test]
fn the_near_limit_alert_and_an_open_days_usage_forecast_when_100_percent_is_reached() {
    let dir = mail_dir(None);
    // 85 calls × 50 credits from 10:00:00 UTC, one a second: 80 % at the 80th call (10:01:19).
    dir.write("inbox/a.ndjson", calls("2025-10-08", "a", 85));
    // Found at 10:10, before the forecast time: the forecast speaks in the present tense (a
    // report built after it speaks in the past: report::orgday's tests).
    dir.expect(0, &["--now", "2025-10-08T10:10:00Z", "run", "ingest"]);
    dir.expect(0, &["--now", "2025-10-08T10:10:00Z", "run", "deliver"]);
    let raw = std::fs::read(dir.path().join("state/outbox/near.300.2025-10-08.80.eml")).unwrap();
    let text = body_of(&raw, "text/plain");
    // 4,000 credits in the hour before the crossing, 1,000 left: 15 minutes on, in Berlin.
    assert!(
        text.contains("Forecast: at the pace of the hour before the crossing (4,000 credits an hour), the org reaches 100% at about 12:16 CEST (UTC+02:00)."),
        "{text}"
    );
    assert!(
        text.contains("At the crossing  4,000 of 5,000 credits (80.00%), request a79"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with("So far") && l.ends_with("4,250 credits (85.00%)")),
        "usage so far: {text}"
    );
    // The open day at 10:30: 4,250 in the last hour, 750 left: 10 min 35 s on, rounded down.
    let usage = dir.expect(
        0,
        &["--now", "2025-10-08T10:30:00Z", "usage", "--org", "300"],
    );
    assert!(
        usage.contains("Forecast         100% at about 12:40 CEST (UTC+02:00), at the pace of the last hour (4,250 credits)"),
        "{usage}"
    );
    // Two hours later nothing came in the last hour: not before the reset.
    let usage = dir.expect(
        0,
        &["--now", "2025-10-08T12:30:00Z", "usage", "--org", "300"],
    );
    assert!(
        usage.contains("Forecast         100% not before the reset at midnight, at the pace of the last hour (0 credits)"),
        "{usage}"
    );
}

/// A log line may bring a path or a request id of most of a MiB, full of characters HTML
/// escapes: every message of the org-day still keeps its HTML under 100 KB, cutting them.
#[test]
fn hostile_long_paths_and_request_ids_keep_every_message_under_100_kb() {
    let dir = mail_dir(None);
    let long = |i: usize| format!("{i}-{}", "<&\\\"'".repeat(60_000));
    let mut log = String::new();
    for i in 0..110 {
        log += &format!(
            "{{\"ts\":\"2025-10-08T10:{:02}:{:02}.000Z\",\"request_id\":\"{}\",\"org_id\":\"300\",\"method\":\"GET\",\"path\":\"/api/v1/tasks/count\",\"status\":200}}\n",
            i / 60,
            i % 60,
            long(i)
        );
    }
    for i in 0..12 {
        log += &format!(
            "{{\"ts\":\"2025-10-08T11:00:{i:02}.000Z\",\"request_id\":\"u{i}\",\"org_id\":\"300\",\"method\":\"GET\",\"path\":\"/api/v1/{}\",\"status\":200}}\n",
            long(i)
        );
    }
    dir.write("inbox/a.ndjson", log);
    dir.expect(0, &["--now", "2025-10-09T12:00:00Z", "run", "all"]);
    let out = dir.path().join("state/outbox");
    let mut kinds = BTreeSet::new();
    for e in std::fs::read_dir(&out).unwrap() {
        let path = e.unwrap().path();
        let raw = std::fs::read(&path).unwrap();
        let html = body_of(&raw, "text/html");
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            html.len() <= 100_000,
            "{name}: {} bytes of HTML",
            html.len()
        );
        kinds.insert(name.split('.').next().unwrap().to_string());
        if name.starts_with("over.") || name.starts_with("summary.") {
            let text = body_of(&raw, "text/plain");
            // The request id of the crossing / the unpriced paths are there, cut and marked.
            let shown = if name.starts_with("over.") {
                "request 100-<&"
            } else {
                "/api/v1/0-<&"
            };
            let at = text.find(shown).unwrap_or_else(|| panic!("{name}: {text}"));
            assert!(
                text[at..].lines().next().unwrap().contains('…'),
                "{name}: {text}"
            );
            assert!(html.contains("&lt;&amp;"), "{name}");
        }
    }
    assert!(
        kinds.contains("over") && kinds.contains("summary"),
        "{kinds:?}"
    );
}
