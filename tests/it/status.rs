//! `creditd status`: the operator's one screen, healthy or naming what needs a human.

use mailparse::MailHeaderMap;

use crate::Dir;

fn status_json(dir: &Dir, code: i32, now: &str) -> serde_json::Value {
    serde_json::from_str(&dir.expect(code, &["--now", now, "status", "--format", "json"])).unwrap()
}

const NOW: &str = "2026-01-02T12:00:00Z";

#[test]
fn a_fresh_state_is_healthy_and_status_creates_nothing() {
    let dir = Dir::sample();
    let text = dir.expect(0, &["--now", NOW, "status"]);
    assert!(
        text.starts_with("creditd status at 2026-01-02T12:00:00Z: healthy"),
        "{text}"
    );
    assert!(text.contains("none has run yet"), "{text}");
    // The sample's inbox is the backlog: 40 files waiting.
    assert!(text.contains("Inbox      40 file(s)"), "{text}");
    assert!(!dir.path().join("state").exists());
}

#[test]
fn after_a_run_it_shows_each_job_gateway_and_message_and_a_failure_needs_a_human() {
    let dir = Dir::sample();
    dir.expect(0, &["--now", NOW, "run", "all"]);
    let s = status_json(&dir, 0, NOW);
    assert_eq!(s["healthy"], true);
    let jobs: Vec<&str> = s["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["task"].as_str().unwrap())
        .collect();
    assert_eq!(jobs, ["close-days", "deliver", "ingest", "ops-digest"]);
    for j in s["jobs"].as_array().unwrap() {
        assert_eq!(j["ok"], true, "{j}");
        assert_eq!(j["runs"], 1, "{j}");
        assert_eq!(j["last_run"], NOW, "{j}");
        assert_eq!(j["last_success"], NOW, "{j}");
    }
    let ingest = &s["jobs"][2];
    assert!(
        ingest["summary"]
            .as_str()
            .unwrap()
            .starts_with("ingest: 40 file(s)"),
        "{ingest}"
    );
    // Two gateways, every file counted, each with its newest file.
    let gw = s["gateways"].as_array().unwrap();
    assert_eq!(gw.len(), 2, "{gw:?}");
    assert_eq!(gw[0]["gateway"], "gw1");
    let total: u64 = gw.iter().map(|g| g["files"].as_u64().unwrap()).sum();
    assert_eq!(total, 40);
    assert_eq!(s["inbox"]["files"], 0);
    // Every message went out (the sample run sends 27 as .eml files: one alert per org-day,
    // 13 summaries, the digest).
    assert_eq!(s["outbox"]["queued"], 0);
    assert_eq!(s["outbox"]["sent"], 27);
    assert!(s["disk"]["archive"].as_u64().unwrap() > 1_000_000);
    assert!(s["disk"]["events"].as_u64().unwrap() > 0);
    assert!(s["retention"]["events"].is_null());
    let text = dir.expect(0, &["--now", NOW, "status"]);
    assert!(
        text.contains("Retention  archive forever, events forever"),
        "{text}"
    );
    assert!(text.lines().count() < 30, "one screen:\n{text}");

    // A file that cannot be read is an open problem: status says so and exits 1.
    dir.write("inbox/gw1-broken.ndjson.gz", b"\x1f\x8b\x08\x00garbage");
    let later = "2026-01-02T12:05:00Z";
    assert_eq!(
        dir.creditd(&["--now", later, "run", "ingest"])
            .status
            .code(),
        Some(1)
    );
    let s = status_json(&dir, 1, later);
    assert_eq!(s["healthy"], false);
    assert_eq!(s["attention"][0], "1 open problem(s)");
    assert_eq!(s["problems"][0]["unit"], "file");
    assert_eq!(s["problems"][0]["target"], "gw1-broken.ndjson.gz");
    let ingest = s["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["task"] == "ingest")
        .unwrap();
    assert_eq!(ingest["runs"], 2);
    assert_eq!(ingest["ok"], false);
    assert_eq!(ingest["failures"], 1);
    assert_eq!(ingest["last_success"], NOW);
    let text = dir.expect(1, &["--now", later, "status"]);
    assert!(
        text.contains("NEEDS ATTENTION: 1 open problem(s)"),
        "{text}"
    );
    assert!(text.contains("file gw1-broken.ndjson.gz:"), "{text}");
    assert!(text.contains("Inbox      1 file(s)"), "{text}");

    // Once the file is gone and a run goes through, it is healthy again.
    std::fs::remove_file(dir.path().join("inbox/gw1-broken.ndjson.gz")).unwrap();
    dir.expect(0, &["--now", later, "run", "ingest"]);
    assert_eq!(status_json(&dir, 0, later)["healthy"], true);
}

fn with_silence(dir: &Dir, silence: &str) {
    let config = dir.read("creditd.toml");
    dir.write(
        "creditd.toml",
        format!("{config}\n[alerts]\ngateway_silence = \"{silence}\"\n"),
    );
}

fn eml_named(dir: &Dir, prefix: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir.path().join("state/outbox")) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(prefix))
        .collect();
    names.sort();
    names
}

fn one_call(rid: &str) -> String {
    crate::ingest::call(
        "2025-10-10T10:00:00Z",
        rid,
        "60000021",
        "/api/v1/tickets",
        200,
    )
}

#[test]
fn a_silent_gateway_is_reported_once_and_once_when_it_is_back() {
    let dir = Dir::sample();
    with_silence(&dir, "30m");
    dir.expect(0, &["check"]);
    dir.expect(0, &["--now", "2026-01-02T12:00:00Z", "run", "all"]);
    // 20 minutes on, both gateways are still within the half hour.
    let out = dir.expect(0, &["--now", "2026-01-02T12:20:00Z", "run", "all"]);
    assert!(!out.contains("silent"), "{out}");
    // gw2 sends again; gw1 goes quiet.
    dir.write("inbox/gw2-20260102T1225.ndjson", one_call("s1"));
    dir.expect(0, &["--now", "2026-01-02T12:25:00Z", "run", "all"]);
    let out = dir.expect(0, &["--now", "2026-01-02T12:31:00Z", "run", "all"]);
    assert!(
        out.contains("gateway gw1 silent since 2026-01-02T12:00:00.000Z (more than 30m): ops told"),
        "{out}"
    );
    assert!(!out.contains("gateway gw2 silent"), "{out}");
    let silence = eml_named(&dir, "silence.gw1.");
    assert_eq!(silence.len(), 1, "{silence:?}");
    let raw = std::fs::read(dir.path().join("state/outbox").join(&silence[0])).unwrap();
    let mail = mailparse::parse_mail(&raw).unwrap();
    assert_eq!(
        mail.headers.get_first_value("Subject").unwrap(),
        "[creditd] gateway gw1 silent: no file since 2026-01-02T12:00:00.000Z"
    );
    assert_eq!(
        mail.headers.get_first_value("To").unwrap(),
        "api-ops@example.com"
    );
    // Still silent an hour later: no second message; status needs a human.
    let out = dir.expect(0, &["--now", "2026-01-02T13:30:00Z", "run", "all"]);
    assert!(!out.contains("gateway gw1"), "{out}");
    assert!(
        out.contains("gateway gw2 silent since 2026-01-02T12:25:00.000Z"),
        "{out}"
    );
    assert_eq!(eml_named(&dir, "silence.gw1.").len(), 1);
    let text = dir.expect(1, &["--now", "2026-01-02T13:30:00Z", "status"]);
    assert!(text.contains("silent gateway(s): gw1, gw2"), "{text}");
    assert!(text.contains("SILENT"), "{text}");

    // A file of gw2 that cannot be read is no sign of life: no "back", still silent.
    dir.write("inbox/gw2-broken.ndjson.gz", b"\x1f\x8b\x08\x00garbage");
    for at in ["2026-01-02T13:35:00Z", "2026-01-02T13:36:00Z"] {
        let out = dir.creditd(&["--now", at, "run", "all"]);
        assert_eq!(out.status.code(), Some(1));
        assert!(!String::from_utf8_lossy(&out.stdout).contains("back"));
    }
    assert!(eml_named(&dir, "back.gw2.").is_empty());
    let s = status_json(&dir, 1, "2026-01-02T13:36:00Z");
    assert!(s["gateways"][1]["silent"].as_bool().unwrap(), "{s}");
    std::fs::remove_file(dir.path().join("inbox/gw2-broken.ndjson.gz")).unwrap();

    // gw1 is back: one message, and status is healthy for gw1 again.
    dir.write("inbox/gw1-20260102T1340.ndjson", one_call("s2"));
    let out = dir.expect(0, &["--now", "2026-01-02T13:40:00Z", "run", "all"]);
    assert!(
        out.contains("gateway gw1 is back (gw1-20260102T1340.ndjson): ops told"),
        "{out}"
    );
    let back = eml_named(&dir, "back.gw1.");
    assert_eq!(back.len(), 1, "{back:?}");
    let out = dir.expect(0, &["--now", "2026-01-02T13:45:00Z", "run", "all"]);
    assert!(!out.contains("back"), "{out}");
    let s = status_json(&dir, 1, "2026-01-02T13:45:00Z");
    assert_eq!(s["attention"][0], "silent gateway(s): gw2");
    assert_eq!(s["gateways"][0]["silent"], false);
}

#[test]
fn the_running_daemon_reports_a_silent_gateway_and_its_return() {
    use std::time::Duration;
    let dir = Dir::sample();
    std::fs::remove_dir_all(dir.path().join("inbox")).unwrap();
    std::fs::create_dir_all(dir.path().join("inbox")).unwrap();
    with_silence(&dir, "3s");
    for (name, schedule, task) in [
        ("ingest", "* * * * * *", "ingest"),
        ("deliver", "* * * * * *", "deliver"),
    ] {
        dir.write(
            &format!("jobs/{name}.toml"),
            format!("schedule = \"{schedule}\"\ntask = \"{task}\"\n"),
        );
    }
    let daemon = crate::daemon::Daemon::start(&dir);
    // Writers drop files under a temporary name and rename them when done.
    let drop_file = |name: &str, rid: &str| {
        let tmp = dir.write(&format!("inbox/{name}.tmp"), one_call(rid));
        std::fs::rename(tmp, dir.path().join("inbox").join(name)).unwrap();
    };
    drop_file("gwq-1.ndjson", "q1");
    let limit = Duration::from_secs(30);
    crate::daemon::wait_for("the silence message", limit, || {
        eml_named(&dir, "silence.gwq.").len() == 1
    });
    drop_file("gwq-2.ndjson", "q2");
    crate::daemon::wait_for("the back message", limit, || {
        eml_named(&dir, "back.gwq.").len() == 1
    });
    // Silent again after the second file, then that silence is reported once more (its own key).
    crate::daemon::wait_for("the second silence", limit, || {
        eml_named(&dir, "silence.gwq.").len() == 2
    });
    daemon.stop();
    assert_eq!(eml_named(&dir, "back.gwq.").len(), 1);
}
