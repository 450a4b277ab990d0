//! The command line's promises: quiet ends into closed pipes, readers on fresh or read-only
//! states, exit 2 for usage errors, inbox entries that are not regular files, non-UTF-8 names.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::Dir;

const NOW: &str = "2026-01-01T00:00:00Z";
const LEDGER_HEADER: &str = "org_id,local_date,model,edition,agents,calls,billable_calls,credits,base,variable,additional,legacy_limit,allotted,used,pct_used,overage,exceeded_at,status\n";

fn small() -> Dir {
    let dir = Dir::empty();
    dir.write(
        "orgs.csv",
        "org_id,name,edition,agents,light_agents,timezone,data_center,signup_date,paid,legacy_daily_limit,report_to,effective_from\n\
         500,Five,free,0,0,Europe/Berlin,eu,2025-01-01,false,,admin@five.example,\n",
    );
    dir.write("pricing.toml", "effective_from = \"2025-10-01\"\n");
    dir
}

fn calls(prefix: &str, n: usize) -> String {
    (0..n)
        .map(|i| format!("{{\"ts\":\"2025-10-08T10:00:00Z\",\"request_id\":\"{prefix}{i}\",\"org_id\":\"500\",\"method\":\"GET\",\"path\":\"/x\",\"status\":200}}\n"))
        .collect()
}

fn creditd(dir: &Dir) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_creditd"));
    c.current_dir(dir.path())
        .arg("--config")
        .arg(dir.path().join("creditd.toml"));
    c
}

/// Runs creditd with its stdout a pipe whose reader is gone before it writes a byte.
fn into_closed_pipe(dir: &Dir, args: &[&str]) -> std::process::Output {
    let mut child = creditd(dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    child.wait_with_output().unwrap()
}

#[test]
fn output_into_a_closed_pipe_ends_quietly_with_exit_0() {
    // 300 orgs over 5 days: an export well beyond a pipe's 64 KiB buffer.
    let dir = Dir::generated(&[
        "--orgs",
        "300",
        "--calls-per-day",
        "4",
        "--bad-per-file",
        "0",
    ]);
    dir.expect(0, &["--now", NOW, "run", "ingest"]);
    let full = dir.export();
    assert!(full.len() > 96 << 10, "only {} bytes", full.len());
    let org = crate::csv_rows(&full)[1][0].clone();

    // `creditd ledger export | head -1`.
    let mut child = creditd(&dir)
        .args(["--now", NOW, "ledger", "export"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(first, LEDGER_HEADER);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");

    // Every command that writes to stdout, into a pipe closed before it writes.
    let commands: Vec<Vec<&str>> = vec![
        vec!["ledger", "export", "--format", "json"],
        vec!["files"],
        vec!["files", "--format", "json"],
        vec!["usage", "--org", &org, "--date", "2025-10-06"],
        vec!["check"],
        vec!["run", "all"],
        vec![
            "backfill",
            "--from",
            "2025-10-06",
            "--to",
            "2025-10-06",
            "--dry-run",
        ],
        vec!["backfill", "--from", "2025-10-06", "--to", "2025-10-06"],
    ];
    for args in commands {
        let mut all = vec!["--now", NOW];
        all.extend(&args);
        let out = into_closed_pipe(&dir, &all);
        assert_eq!(
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).as_ref()
            ),
            (Some(0), ""),
            "{args:?}"
        );
    }
}

fn assert_no_data_yet(dir: &Dir, args: &[&str], stdout: &str) {
    let out = creditd(dir)
        .args(["--now", NOW])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    assert!(
        stderr.contains("no data yet: nothing has been ingested in") && stderr.contains("state"),
        "{args:?}: {stderr}"
    );
    assert!(!stderr.contains("no such table"), "{args:?}: {stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), stdout, "{args:?}");
}

fn assert_readers_see_no_data(dir: &Dir) {
    assert_no_data_yet(dir, &["ledger", "export"], LEDGER_HEADER);
    assert_no_data_yet(dir, &["ledger", "export", "--format", "json"], "[]\n");
    let files_header = "file,sha256,status,lines,accepted,unique,duplicates,malformed,missing_field,bad_timestamp,bad_method,bad_status,unknown_org,before_signup,expired\n";
    assert_no_data_yet(dir, &["files"], files_header);
    assert_no_data_yet(dir, &["files", "--format", "json"], "[]\n");
    let out = creditd(dir)
        .args([
            "--now",
            NOW,
            "usage",
            "--org",
            "500",
            "--date",
            "2025-10-08",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("no data yet"), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("API details — org 500"));
}

#[test]
fn readers_on_a_fresh_state_print_the_header_and_create_nothing() {
    let dir = small();
    assert_readers_see_no_data(&dir);
    assert!(
        !dir.path().join("state").exists(),
        "a reader created the state"
    );

    // A store created but not initialised yet: an empty file, then one with another table.
    let store = dir.path().join("state/creditd.sqlite");
    dir.write("state/creditd.sqlite", "");
    assert_readers_see_no_data(&dir);
    assert_eq!(
        std::fs::metadata(&store).unwrap().len(),
        0,
        "a reader wrote"
    );
    std::fs::remove_file(&store).unwrap();
    let conn = rusqlite::Connection::open(&store).unwrap();
    conn.execute_batch("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);")
        .unwrap();
    drop(conn);
    assert_readers_see_no_data(&dir);
    let conn = rusqlite::Connection::open(&store).unwrap();
    let tables: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(tables, 1, "a reader created tables");
}

/// Makes a tree read-only (`writable = false`) or private and writable again.
fn set_tree_mode(root: &Path, writable: bool) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let is_dir = p.is_dir();
        let mode = match (is_dir, writable) {
            (true, true) => 0o700,
            (true, false) => 0o555,
            (false, true) => 0o600,
            (false, false) => 0o444,
        };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        if is_dir {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
}

/// creditd as a user for whom the modes count: root ignores them, so as root it runs as
/// `nobody` (setpriv, util-linux).
fn creditd_unprivileged(dir: &Dir, args: &[&str]) -> std::process::Output {
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
    cmd.current_dir(dir.path())
        .args(["--config", "creditd.toml", "--now", NOW])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn readers_work_on_a_read_only_state() {
    let dir = Dir::sample();
    dir.expect(0, &["--now", NOW, "run", "ingest"]);
    let export = dir.export();
    let files = dir.expect(0, &["files"]);
    let usage = dir.expect(
        0,
        &[
            "--now",
            NOW,
            "usage",
            "--org",
            "60000000",
            "--date",
            "2025-10-08",
        ],
    );
    let fresh = small();

    set_tree_mode(dir.path(), false);
    set_tree_mode(fresh.path(), false);
    let mut seen = Vec::new();
    for (args, want) in [
        (&["ledger", "export"][..], &export),
        (&["files"][..], &files),
        (
            &["usage", "--org", "60000000", "--date", "2025-10-08"][..],
            &usage,
        ),
    ] {
        let out = creditd_unprivileged(&dir, args);
        seen.push((
            args,
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            String::from_utf8_lossy(&out.stdout) == want.as_str(),
        ));
    }
    // No state at all, in a directory nobody may write: the header and the note.
    let out = creditd_unprivileged(&fresh, &["ledger", "export"]);
    let fresh_out = (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    let state_created = fresh.path().join("state").exists();
    set_tree_mode(dir.path(), true);
    set_tree_mode(fresh.path(), true);

    for (args, code, stderr, same) in seen {
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert_eq!(stderr, "", "{args:?}");
        assert!(same, "{args:?}: other output than with write access");
    }
    assert_eq!(fresh_out.0, Some(0), "{}", fresh_out.2);
    assert_eq!(fresh_out.1, LEDGER_HEADER);
    assert!(fresh_out.2.contains("no data yet"), "{}", fresh_out.2);
    assert!(!state_created);
    assert_eq!(dir.export(), export);
}

#[test]
fn usage_errors_exit_2_and_name_the_problem() {
    let dir = small();
    dir.write("inbox/a.ndjson", calls("a", 3));
    dir.expect(0, &["--now", NOW, "run", "ingest"]);
    for (args, says) in [
        (&["ledger", "export", "--org", "999"][..], "--org 999"),
        (
            &[
                "ledger",
                "export",
                "--from",
                "2025-10-09",
                "--to",
                "2025-10-08",
            ][..],
            "--from 2025-10-09 is after --to 2025-10-08",
        ),
        (
            &["ledger", "export", "--from", "2025-10-32"][..],
            "2025-10-32",
        ),
        (&["usage", "--org", "999"][..], "--org 999"),
        (
            &["usage", "--org", "500", "--date", "tomorrow"][..],
            "tomorrow",
        ),
        (
            &[
                "backfill",
                "--from",
                "2025-10-08",
                "--to",
                "2025-10-08",
                "--org",
                "999",
            ][..],
            "--org 999",
        ),
        (
            &[
                "backfill",
                "--from",
                "2025-10-08",
                "--to",
                "2025-10-08",
                "--org",
                "999",
                "--dry-run",
            ][..],
            "--org 999",
        ),
        (
            &["backfill", "--from", "2025-10-09", "--to", "2025-10-08"][..],
            "--from 2025-10-09 is after --to 2025-10-08",
        ),
        (
            &["backfill", "--from", "2025-02-30", "--to", "2025-10-08"][..],
            "2025-02-30",
        ),
    ] {
        let out = creditd(&dir)
            .args(["--now", NOW])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    // A known org, and an org that only the ledger still knows, are fine.
    dir.expect(0, &["--now", NOW, "ledger", "export", "--org", "500"]);
    dir.write(
        "orgs.csv",
        "org_id,name,edition,agents,light_agents,timezone,data_center,signup_date,paid,legacy_daily_limit,report_to,effective_from\n\
         501,Other,free,0,0,Europe/Berlin,eu,2025-01-01,false,,admin@five.example,\n",
    );
    let out = dir.expect(0, &["--now", NOW, "ledger", "export", "--org", "500"]);
    assert_eq!(out.lines().count(), 2, "{out}");
}

fn warnings(stderr: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| l.contains("not a regular file"))
        .map(str::to_string)
        .collect()
}

fn skipped_in_store(dir: &Dir) -> Vec<(String, String)> {
    let store =
        creditd::store::Store::open_read_only(&dir.path().join("state/creditd.sqlite")).unwrap();
    store
        .skipped_entries()
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.kind))
        .collect()
}

#[test]
fn inbox_entries_that_are_not_regular_files_are_never_opened_and_warned_about_once() {
    let dir = small();
    dir.write("inbox/a.ndjson", calls("a", 2));
    // A valid log file outside the inbox, reached through a symlink that has a log's name.
    let target = dir.write("elsewhere/b.ndjson", calls("b", 5));
    std::os::unix::fs::symlink(&target, dir.path().join("inbox/link.ndjson")).unwrap();
    let fifo = dir.path().join("inbox/fifo.ndjson");
    let c = std::ffi::CString::new(fifo.as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo reads a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    std::fs::create_dir(dir.path().join("inbox/x.ndjson")).unwrap();
    let _socket =
        std::os::unix::net::UnixListener::bind(dir.path().join("inbox/sock.csv")).unwrap();

    let out = dir.creditd(&["--now", NOW, "run", "ingest"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = warnings(&out.stderr);
    assert_eq!(first.len(), 4, "{first:#?}");
    for (name, kind) in [
        ("link.ndjson", "symlink"),
        ("fifo.ndjson", "FIFO"),
        ("x.ndjson", "directory"),
        ("sock.csv", "socket"),
    ] {
        assert!(
            first.iter().any(|w| w.contains(name) && w.contains(kind)),
            "{name}: {first:#?}"
        );
    }
    let files = dir.expect(0, &["files"]);
    assert_eq!(
        files.lines().count(),
        2,
        "only a.ndjson is a file:\n{files}"
    );
    assert!(files.contains("a.ndjson,"));
    let export = dir.export();
    let rows = crate::csv_rows(&export);
    assert_eq!(
        (rows.len(), rows[1][5].as_str()),
        (2, "2"),
        "two calls, not seven"
    );
    assert_eq!(
        dir.inbox(),
        ["fifo.ndjson", "link.ndjson", "sock.csv", "x.ndjson"]
    );
    assert_eq!(std::fs::read_to_string(&target).unwrap(), calls("b", 5));

    // The next run says nothing more about them.
    let out = dir.creditd(&["--now", "2026-01-01T00:05:00Z", "run", "ingest"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(warnings(&out.stderr), Vec::<String>::new());
    assert_eq!(
        skipped_in_store(&dir),
        [
            ("fifo.ndjson".to_string(), "FIFO".to_string()),
            ("link.ndjson".to_string(), "symlink".to_string()),
            ("sock.csv".to_string(), "socket".to_string()),
            ("x.ndjson".to_string(), "directory".to_string()),
        ]
    );

    // A gone entry is forgotten; when it comes back it is news again.
    std::fs::remove_dir(dir.path().join("inbox/x.ndjson")).unwrap();
    dir.expect(0, &["--now", "2026-01-01T00:10:00Z", "run", "ingest"]);
    assert_eq!(skipped_in_store(&dir).len(), 3);
    std::fs::create_dir(dir.path().join("inbox/x.ndjson")).unwrap();
    let out = dir.creditd(&["--now", "2026-01-01T00:15:00Z", "run", "ingest"]);
    let again = warnings(&out.stderr);
    assert_eq!(again.len(), 1, "{again:#?}");
    assert!(again[0].contains("x.ndjson"));
    assert_eq!(dir.export(), export);
}

#[test]
fn non_utf8_file_names_are_ingested_and_archived_apart() {
    let dir = small();
    let inbox = dir.path().join("inbox");
    std::fs::write(
        inbox.join(OsStr::from_bytes(b"gw\xff-1.ndjson")),
        calls("a", 2),
    )
    .unwrap();
    std::fs::write(
        inbox.join(OsStr::from_bytes(b"gw\xfe-1.ndjson")),
        calls("b", 3),
    )
    .unwrap();
    dir.expect(0, &["--now", NOW, "run", "ingest"]);
    assert_eq!(dir.inbox(), Vec::<String>::new());
    let files = crate::csv_rows(&dir.expect(0, &["files"]));
    assert_eq!(files.len(), 3);
    for row in &files[1..] {
        assert_eq!(row[0], "gw\u{FFFD}-1.ndjson");
        assert_eq!(row[2], "ingested");
    }
    let mut archived: Vec<String> = std::fs::read_dir(dir.path().join("state/archive"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    archived.sort();
    let mut want: Vec<String> = files[1..]
        .iter()
        .map(|r| format!("{}-gw\u{FFFD}-1.ndjson", &r[1][..16]))
        .collect();
    want.sort();
    assert_eq!(archived, want);
    let rows = crate::csv_rows(&dir.export());
    assert_eq!(
        (rows.len(), rows[1][5].as_str()),
        (2, "5"),
        "both files count"
    );
}
