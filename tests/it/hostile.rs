//! Hostile input: a 100 MB line, non-UTF-8 bytes, a file that vanishes mid-ingest.

use std::io::Write;
use std::time::Duration;

use crate::ingest::{assert_nothing_lost, expected_file_counts, file_counts};
use crate::{without_status, Dir};

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

fn call(rid: &str) -> String {
    format!("{{\"ts\":\"2025-10-08T10:00:00Z\",\"request_id\":\"{rid}\",\"org_id\":\"500\",\"method\":\"GET\",\"path\":\"/x\",\"status\":200}}\n")
}

#[test]
fn a_100_mb_line_and_non_utf8_bytes_are_quarantined_alone() {
    let dir = small();
    let path = dir.path().join("inbox/big.ndjson");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    f.write_all(call("a").as_bytes()).unwrap();
    // One line of 100 MB: a JSON object whose path never ends.
    f.write_all(b"{\"ts\":\"2025-10-08T10:00:00Z\",\"request_id\":\"big\",\"path\":\"/")
        .unwrap();
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..100 {
        f.write_all(&chunk).unwrap();
    }
    f.write_all(b"\n").unwrap();
    // Bytes that are not UTF-8, inside an otherwise valid line.
    f.write_all(b"{\"ts\":\"2025-10-08T10:00:00Z\",\"request_id\":\"\xff\xfe\",\"org_id\":\"500\",\"method\":\"GET\",\"path\":\"/x\",\"status\":200}\n").unwrap();
    f.write_all(call("b").as_bytes()).unwrap();
    drop(f);

    dir.expect(0, &["--now", "2025-10-09T12:00:00Z", "run", "ingest"]);
    let counts = file_counts(&dir);
    // lines, accepted, unique, duplicates, malformed, …
    assert_eq!(counts["big.ndjson"][..5], [4, 2, 2, 0, 2]);
    assert_nothing_lost(&counts);
    let export = dir.export();
    assert!(
        export.contains("\n500,2025-10-08,credits,free,0,2,2,"),
        "{export}"
    );
    // The store keeps a bounded excerpt of the huge line, not 100 MB.
    let store = std::fs::metadata(dir.path().join("state/creditd.sqlite"))
        .unwrap()
        .len();
    assert!(store < 20 << 20, "the store grew to {store} bytes");
}

#[test]
fn a_file_that_vanishes_mid_ingest_fails_alone_and_is_taken_when_it_returns() {
    let dir = Dir::sample();
    let last = dir.inbox().pop().unwrap();
    let aside = dir.path().join(&last);
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_creditd"))
        .current_dir(dir.path())
        .args([
            "--config",
            "creditd.toml",
            "--now",
            "2026-01-02T12:00:00Z",
            "run",
            "ingest",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The run works through the files in name order (it has listed them once the first is
    // archived); the last one disappears meanwhile.
    let archive = dir.path().join("state/archive");
    let start = std::time::Instant::now();
    while std::fs::read_dir(&archive).map_or(0, |d| d.count()) == 0 {
        assert!(start.elapsed() < Duration::from_secs(60));
        std::thread::sleep(Duration::from_millis(5));
    }
    std::fs::rename(dir.path().join("inbox").join(&last), &aside).unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&last) && stderr.contains("No such file"),
        "{stderr}"
    );
    let files = dir.expect(0, &["files"]);
    assert!(files.contains(&format!("{last},,failed")), "{files}");

    // The writer puts it back: it is ingested, its failure row replaced, nothing counted twice.
    std::fs::rename(&aside, dir.path().join("inbox").join(&last)).unwrap();
    dir.expect(0, &["--now", "2026-01-02T12:00:00Z", "run", "all"]);
    assert_eq!(
        without_status(&dir.export()),
        dir.read("expected-ledger.csv")
    );
    let counts = file_counts(&dir);
    assert_eq!(counts, expected_file_counts(&dir));
}
