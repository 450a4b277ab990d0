//! Security: private state files, SMTP secrets kept out of every output, hostile strings
//! escaped in every email.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use crate::mail::{attachment, body_of, header};
use crate::Dir;

fn walk(dir: &Path, out: &mut Vec<(String, u32, bool)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let meta = std::fs::symlink_metadata(&p).unwrap();
        out.push((
            p.display().to_string(),
            meta.permissions().mode() & 0o777,
            meta.is_dir(),
        ));
        if meta.is_dir() {
            walk(&p, out);
        }
    }
}

#[test]
fn state_files_are_0600_and_directories_0700_whatever_the_umask() {
    let dir = Dir::sample();
    // Gateways write world-readable files; creditd is started with a permissive umask.
    for name in dir.inbox() {
        let p = dir.path().join("inbox").join(name);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let out = Command::new("sh")
        .current_dir(dir.path())
        .arg("-c")
        .arg(format!(
            "umask 022 && exec {} --config creditd.toml --now 2026-01-02T12:00:00Z run all",
            env!("CARGO_BIN_EXE_creditd")
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut entries = Vec::new();
    walk(&dir.path().join("state"), &mut entries);
    assert!(entries.iter().any(|e| e.0.ends_with(".parquet")));
    assert!(entries.iter().any(|e| e.0.ends_with(".eml")));
    assert!(entries.iter().any(|e| e.0.contains("archive/")));
    for (path, mode, is_dir) in &entries {
        // The metrics file is 0644 by DESIGN §6, for node_exporter in its own directory; inside
        // the 0700 state directory nobody else can reach it.
        let want = if *is_dir {
            0o700
        } else if path.ends_with("metrics.prom") {
            0o644
        } else {
            0o600
        };
        assert_eq!(*mode, want, "{path}: mode {mode:o}");
    }
}

const SECRET: &str = "hunter2-Sup3r-S3cret";

fn run(dir: &Dir, env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_creditd"))
        .current_dir(dir.path())
        .env("CREDITD_LOG", "debug")
        .envs(env.iter().copied())
        .args(["--config", "creditd.toml"])
        .args(args)
        .output()
        .unwrap()
}

fn assert_no_secret(out: &Output, what: &str) {
    for stream in [&out.stdout, &out.stderr] {
        let text = String::from_utf8_lossy(stream);
        assert!(!text.contains(SECRET), "{what} shows the secret:\n{text}");
    }
}

#[test]
fn smtp_secrets_never_appear_in_logs_errors_or_check() {
    let dir = Dir::sample();
    let port = crate::mail::free_port();
    let base = dir.read("creditd.toml");
    dir.write(
        "creditd.toml",
        format!("{base}\n[smtp]\nurl = \"smtp://creditd@127.0.0.1:{port}\"\ntls = \"none\"\n"),
    );
    // From the environment: the server is down, so delivery fails and logs its error.
    let out = run(
        &dir,
        &[("CREDITD_SMTP_PASSWORD", SECRET)],
        &["--now", "2026-01-02T12:00:00Z", "run", "all"],
    );
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("could not send"));
    assert_no_secret(&out, "run all");
    assert_no_secret(
        &run(&dir, &[("CREDITD_SMTP_PASSWORD", SECRET)], &["check"]),
        "check",
    );

    // From a systemd credential.
    let creds = dir.path().join("creds");
    std::fs::create_dir_all(&creds).unwrap();
    std::fs::write(creds.join("smtp-password"), format!("{SECRET}\n")).unwrap();
    let creds = creds.display().to_string();
    let out = run(
        &dir,
        &[("CREDENTIALS_DIRECTORY", &creds)],
        &["--now", "2026-01-02T13:00:00Z", "run", "deliver"],
    );
    assert!(out.status.success());
    assert_no_secret(&out, "deliver");

    // Nothing of it lands in the state either.
    let mut entries = Vec::new();
    walk(&dir.path().join("state"), &mut entries);
    for (path, _, is_dir) in entries {
        if !is_dir {
            let bytes = std::fs::read(&path).unwrap();
            assert!(
                !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
                "{path} holds the secret"
            );
        }
    }

    // A password written into the config is refused without being repeated.
    dir.write(
        "creditd.toml",
        format!(
            "{base}\n[smtp]\nurl = \"smtp://creditd:{SECRET}@127.0.0.1:{port}\"\ntls = \"none\"\n"
        ),
    );
    for args in [&["check"][..], &["run", "deliver"][..]] {
        let out = run(&dir, &[], args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("no password in the url"));
        assert_no_secret(&out, "the config error");
    }
}

#[test]
fn hostile_endpoints_and_file_names_are_escaped_in_every_email() {
    let dir = Dir::empty();
    dir.write(
        "orgs.csv",
        "org_id,name,edition,agents,light_agents,timezone,data_center,signup_date,paid,legacy_daily_limit,report_to,effective_from\n\
         400,Plain,free,0,0,Europe/Berlin,eu,2025-01-01,false,,admin@four.example,\n",
    );
    dir.write(
        "pricing.toml",
        "effective_from = \"2025-10-01\"\nunpriced_credits = 60\n",
    );
    let cfg = dir.read("creditd.toml") + "\n[alerts]\ndaily_summary = \"all\"\n";
    dir.write("creditd.toml", cfg);
    let hostile = |range: std::ops::Range<usize>| {
        let mut lines = String::new();
        for i in range {
            lines.push_str(&format!(
                "{{\"ts\":\"2025-10-08T10:00:{:02}.{i:03}Z\",\"request_id\":\"h{i}\",\"org_id\":\"400\",\"method\":\"GET\",\"path\":\"/api/v1/<script>alert({i})</script>\\r\\nBcc: x@evil.example\",\"status\":200}}\n",
                i % 60
            ));
        }
        lines
    };
    // Two ingests, so the near-limit alert (70 × 60 credits: 84 %) and the overage go out
    // as messages of their own.
    let mut lines = hostile(0..70);
    lines.push_str("not json <img src=x onerror=alert(1)>\n");
    dir.write("inbox/<img src=x onerror=alert(1)>.ndjson", lines);
    dir.expect(0, &["--now", "2025-10-09T12:00:00Z", "run", "ingest"]);
    dir.write("inbox/late.ndjson", hostile(70..100));
    dir.expect(0, &["--now", "2025-10-09T12:00:00Z", "run", "all"]);

    let outbox = dir.path().join("state/outbox");
    let mut kinds = Vec::new();
    for e in std::fs::read_dir(outbox).unwrap() {
        let raw = std::fs::read(e.unwrap().path()).unwrap();
        let key = header(&raw, "X-Creditd-Key");
        kinds.push(key.split(':').next().unwrap().to_string());
        let (headers, _) = mailparse::parse_headers(&raw).unwrap();
        assert!(
            headers
                .iter()
                .all(|h| !h.get_key().eq_ignore_ascii_case("Bcc")),
            "{key}"
        );
        let html = body_of(&raw, "text/html");
        for raw_markup in ["<script", "<img src=x"] {
            assert!(!html.contains(raw_markup), "{key}: {raw_markup} in\n{html}");
        }
        let text = body_of(&raw, "text/plain");
        assert!(!text.contains("\nBcc:"), "{key}: a forged line in\n{text}");
    }
    kinds.sort();
    kinds.dedup();
    // Alerts, the summary (unpriced endpoints) and the digest (file names, endpoints).
    assert_eq!(kinds, ["digest", "near", "over", "summary"]);
    let digest = std::fs::read(dir.path().join("state/outbox/digest.2025-10-09.eml")).unwrap();
    let html = body_of(&digest, "text/html");
    // File names travel in the attached lists, as data.
    assert!(!html.contains("<img src=x"), "{html}");
    let files = attachment(&digest, "files.csv").expect("files.csv attached");
    assert!(
        files.contains("<img src=x onerror=alert(1)>.ndjson,ingested,"),
        "{files}"
    );
    assert!(html.contains("&lt;script&gt;alert("), "{html}");
}

#[test]
fn a_read_only_state_dir_is_a_clear_error_and_changes_nothing() {
    let dir = Dir::sample();
    let late = dir.hold_back(|n| n.contains("20251103"));
    dir.expect(0, &["--now", "2026-01-02T12:00:00Z", "run", "all"]);
    let before = dir.export();
    dir.release(&late);
    // The state becomes readable but not writable for the user creditd runs as: root
    // ignores modes, so as root the run drops to `nobody` (setpriv, util-linux).
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(p) = stack.pop() {
        let is_dir = p.is_dir();
        let mode = if is_dir { 0o555 } else { 0o444 };
        if is_dir {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    // SAFETY: geteuid only reads this process's effective user id.
    let root = unsafe { libc::geteuid() } == 0;
    let mut cmd = if root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"]);
        c.arg(env!("CARGO_BIN_EXE_creditd"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_creditd"))
    };
    let out = cmd
        .current_dir(dir.path())
        .args([
            "--config",
            "creditd.toml",
            "--now",
            "2026-01-02T12:00:00Z",
            "run",
            "ingest",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot open the state lock ./state/lock: Permission denied"),
        "{stderr}"
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    // Make it writable again for the clean-up; the ledger is as it was.
    let mut stack = vec![dir.path().to_path_buf()];
    while let Some(p) = stack.pop() {
        let is_dir = p.is_dir();
        std::fs::set_permissions(
            &p,
            std::fs::Permissions::from_mode(if is_dir { 0o700 } else { 0o600 }),
        )
        .unwrap();
        if is_dir {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    assert_eq!(dir.export(), before);
    assert_eq!(dir.inbox().len(), late.len(), "the files wait in the inbox");
}
