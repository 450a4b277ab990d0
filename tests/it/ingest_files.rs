//! Ingest of awkward input: a truncated gzip, quarantined lines, repeats across runs and
//! org-days, CSV quoting, an interrupted archive move, data centers, any thread count.

use std::collections::BTreeMap;
use std::io::Write;

use crate::ingest::*;
use crate::{csv_rows, without_status, Dir};

/// A gzip NDJSON file of `n` calls of org 200, request ids `<prefix>0`, `<prefix>1`, ….
fn gzip_of_calls(prefix: &str, n: usize) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for i in 0..n {
        let line = call(
            "2025-10-08T10:00:00Z",
            &format!("{prefix}{i}"),
            "200",
            "/api/v1/tickets",
            200,
        );
        gz.write_all(line.as_bytes()).unwrap();
    }
    gz.finish().unwrap()
}

#[test]
fn a_truncated_gzip_fails_alone_is_retried_and_applies_nothing() {
    let dir = small_dir();
    let bytes = gzip_of_calls("t", 2000);
    dir.write("inbox/a-truncated.ndjson.gz", &bytes[..bytes.len() / 2]);
    dir.write(
        "inbox/b.ndjson",
        call("2025-10-08T10:00:00Z", "b1", "200", "/api/v1/tickets", 200),
    );
    let out = dir.creditd(&["run", "ingest"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("failed a-truncated.ndjson.gz"), "{stderr}");
    assert!(stderr.contains("a-truncated.ndjson.gz"), "{stderr}");
    // Nothing of the broken file counts; the good file does.
    let rows = csv_rows(&dir.export());
    assert_eq!(rows[1][5], "1", "calls");
    assert_eq!(dir.inbox(), vec!["a-truncated.ndjson.gz"]);
    let files = dir.expect(0, &["files"]);
    assert!(
        files.contains("a-truncated.ndjson.gz,,failed,0,"),
        "{files}"
    );

    // The writer re-delivers it whole under the same name: ingested, the failure replaced.
    dir.write("inbox/a-truncated.ndjson.gz", &bytes);
    dir.expect(0, &["run", "ingest"]);
    let rows = csv_rows(&dir.export());
    assert_eq!(rows[1][5], "2001", "calls");
    let files = dir.expect(0, &["files"]);
    assert!(!files.contains("failed"), "{files}");
}

#[test]
fn quarantined_lines_claim_no_request_id_and_keep_their_reason() {
    let dir = small_dir();
    let mut lines = String::new();
    lines.push_str("{\"ts\":\"2025-10-08T10:00:00Z\",\"request_id\":\"x\",\"org_id\":\"200\",\"method\":\"HEAD\",\"path\":\"/a\",\"status\":200}\n");
    lines.push('\n');
    lines.push_str(&call(
        "2025-10-08T10:00:01Z",
        "x",
        "200",
        "/api/v1/tickets",
        200,
    ));
    lines.push_str(&call(
        "2025-10-08T10:00:02Z",
        "x",
        "200",
        "/api/v1/tickets",
        200,
    ));
    lines.push_str(&call(
        "2025-10-08T10:00:02Z",
        "y",
        "300",
        "/api/v1/tickets",
        200,
    ));
    lines.push_str(&call(
        "2025-05-31T10:00:02Z",
        "z",
        "200",
        "/api/v1/tickets",
        200,
    ));
    dir.write("inbox/a.ndjson", lines);
    dir.expect(0, &["run", "ingest"]);
    let counts = file_counts(&dir);
    // lines, accepted, unique, duplicates, malformed, missing, ts, method, status, org, signup
    assert_eq!(counts["a.ndjson"], vec![5, 2, 1, 1, 0, 0, 0, 1, 0, 1, 1, 0]);
    let rows = csv_rows(&dir.export());
    assert_eq!(rows[1][5], "1");
}

#[test]
fn repeats_are_found_across_runs_through_every_layer_of_the_claims() {
    // Each run repeats a call of the first run and one of the run before. Runs leave the
    // claims of their date in run files that merge logarithmically, an unnamed file left by a
    // crash is removed, a lost run and then the whole claims directory are rebuilt from the
    // events: every repeat is still a duplicate.
    let dir = small_dir();
    let claims_dir = dir.path().join("state/claims/local_date=2025-10-08");
    let mut expected_calls = 0;
    for run in 0..14 {
        if run == 5 {
            // What a crash between writing a claims file and naming it leaves behind.
            dir.write("state/claims/local_date=2025-10-08/run-999.fp", [7u8; 16]);
        }
        if run == 8 {
            // A run lost from the disk while the store still names it.
            let first = std::fs::read_dir(&claims_dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .min()
                .unwrap();
            std::fs::remove_file(first).unwrap();
        }
        if run == 11 {
            std::fs::remove_dir_all(dir.path().join("state/claims")).unwrap();
        }
        // The first run is large, so the later ones stay small beside it.
        let fresh = if run == 0 { 400 } else { 3 };
        let mut lines = String::new();
        for i in 0..fresh {
            let ts = format!("2025-10-08T10:{run:02}:{:02}.{:03}Z", i / 100, i % 100);
            lines.push_str(&call(
                &ts,
                &format!("r{run}-{i}"),
                "200",
                "/api/v1/tickets",
                200,
            ));
        }
        expected_calls += fresh;
        if run > 0 {
            let ts = format!("2025-10-08T11:{run:02}:00Z");
            lines.push_str(&call(&ts, "r0-0", "200", "/api/v1/tickets", 200));
            let previous = format!("r{}-2", run - 1);
            lines.push_str(&call(&ts, &previous, "200", "/api/v1/tickets", 200));
        }
        dir.write(&format!("inbox/run{run:02}.ndjson"), lines);
        dir.expect(0, &["run", "ingest"]);
        let counts = file_counts(&dir);
        let name = format!("run{run:02}.ndjson");
        // lines, accepted, unique, duplicates
        let repeats = if run > 0 { 2 } else { 0 };
        assert_eq!(
            counts[&name][..4],
            [fresh + repeats, fresh + repeats, fresh, repeats],
            "run {run}"
        );
        let runs: Vec<String> = std::fs::read_dir(&claims_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            !runs.iter().any(|r| r == "run-999.fp"),
            "run {run}: the unnamed file is removed: {runs:?}"
        );
        // The logarithmic method keeps few runs: the large first one and at most a
        // handful of small ones (never one per run).
        assert!(!runs.is_empty() && runs.len() <= 4, "run {run}: {runs:?}");
        let sizes: u64 = runs
            .iter()
            .map(|r| std::fs::metadata(claims_dir.join(r)).unwrap().len())
            .sum();
        assert_eq!(
            sizes,
            16 * expected_calls,
            "run {run}: every claim of the date once, 16 bytes each"
        );
        let rows = csv_rows(&dir.export());
        assert_eq!(rows[1][5], expected_calls.to_string(), "run {run}");
    }
}

#[test]
fn a_reused_request_id_counts_once_per_org_day() {
    // DESIGN §2.1: the first occurrence of an id within one org and local date wins; the
    // same id on another org-day is another call. Kathmandu (UTC+5:45) starts 2025-10-08
    // at 18:15 UTC on the 7th, so two calls of one UTC date fall on two local dates.
    let id_x = |ts: &str, org: &str| call(ts, "x", org, "/api/v1/tickets", 200);
    let dir = small_dir();
    let mut lines = String::new();
    lines.push_str(&id_x("2025-10-07T10:00:00Z", "200"));
    lines.push_str(&id_x("2025-10-07T18:14:59Z", "200"));
    lines.push_str(&id_x("2025-10-07T18:15:00Z", "200"));
    lines.push_str(&id_x("2025-10-07T10:00:00Z", "100"));
    dir.write("inbox/a.ndjson", lines);
    dir.expect(0, &["run", "ingest"]);
    // lines, accepted, unique, duplicates
    assert_eq!(file_counts(&dir)["a.ndjson"][..4], [4, 4, 3, 1]);
    // A later file repeats the id on each org-day it already has, and once on a new one.
    let mut lines = String::new();
    lines.push_str(&id_x("2025-10-07T12:00:00Z", "200"));
    lines.push_str(&id_x("2025-10-08T12:00:00Z", "200"));
    lines.push_str(&id_x("2025-10-07T21:00:00Z", "100"));
    lines.push_str(&id_x("2025-10-09T10:00:00Z", "200"));
    dir.write("inbox/b.ndjson", lines);
    dir.expect(0, &["run", "ingest"]);
    // 21:00 UTC on the 7th is already the 8th in Cairo (UTC+3 until the 31st of October).
    assert_eq!(file_counts(&dir)["b.ndjson"][..4], [4, 4, 2, 2]);
    let rows = csv_rows(&dir.export());
    let calls: Vec<(String, String, String)> = rows[1..]
        .iter()
        .map(|r| (r[0].clone(), r[1].clone(), r[5].clone()))
        .collect();
    let row = |org: &str, date: &str, n: &str| (org.to_string(), date.to_string(), n.to_string());
    assert_eq!(
        calls,
        vec![
            row("100", "2025-10-07", "1"),
            row("100", "2025-10-08", "1"),
            row("200", "2025-10-07", "1"),
            row("200", "2025-10-08", "1"),
            row("200", "2025-10-09", "1"),
        ]
    );
}

#[test]
fn csv_logs_with_quotes_and_any_column_order() {
    let dir = small_dir();
    dir.write(
        "inbox/a.csv",
        "\u{feff}status,path,extra,method,org_id,request_id,ts\r\n\
         200,\"/api/v1/tickets?from=1,2\",\"x,y\",get,200,r1,1759917600000\n\
         200,/api/v1/tickets,\"unbalanced,GET,200,r2,1759917600000\n\
         200,/api/v1/tickets,x,GET,200,r3,1759917600000\n\
         200,/api/v1/tickets,x\"y,GET,200,r4,1759917600000\n",
    );
    dir.expect(0, &["run", "ingest"]);
    let counts = file_counts(&dir);
    assert_eq!(counts["a.csv"], vec![4, 2, 2, 0, 2, 0, 0, 0, 0, 0, 0, 0]);
    let rows = csv_rows(&dir.export());
    assert_eq!((rows[1][5].as_str(), rows[1][7].as_str()), ("2", "6"));
}

#[test]
fn an_interrupted_move_to_the_archive_is_finished_without_a_second_count() {
    let dir = small_dir();
    dir.write(
        "inbox/a.ndjson",
        call("2025-10-08T10:00:00Z", "a1", "200", "/api/v1/tickets", 200),
    );
    dir.expect(0, &["run", "ingest"]);
    let before = dir.export();
    // As if creditd had died after committing but before moving the file.
    let archive = dir.path().join("state/archive");
    let archived = std::fs::read_dir(&archive)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::rename(&archived, dir.path().join("inbox/a.ndjson")).unwrap();
    let out = dir.expect(0, &["run", "ingest"]);
    assert!(
        out.contains("archived a.ndjson (ingested earlier)"),
        "{out}"
    );
    assert!(archived.exists());
    assert!(dir.inbox().is_empty());
    assert_eq!(dir.export(), before);
    assert_eq!(file_counts(&dir).len(), 1, "still one row in files");
}

#[test]
fn an_instance_owns_only_the_orgs_of_its_data_centers() {
    let dir = small_dir();
    let cfg = dir.read("creditd.toml") + "\n[daemon]\ndata_centers = [\"eu\"]\n";
    dir.write("creditd.toml", cfg);
    let mut lines = call("2025-10-08T10:00:00Z", "e1", "100", "/api/v1/tickets", 200);
    lines.push_str(&call(
        "2025-10-08T10:00:00Z",
        "u1",
        "200",
        "/api/v1/tickets",
        200,
    ));
    dir.write("inbox/a.ndjson", lines);
    dir.expect(0, &["run", "ingest"]);
    // Org 100 is in eu; org 200 is in us, not this instance's: unknown here.
    assert_eq!(
        file_counts(&dir)["a.ndjson"],
        vec![2, 1, 1, 0, 0, 0, 0, 0, 0, 1, 0, 0]
    );
    let rows = csv_rows(&dir.export());
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[1][0], "100");
}

/// A customer's shape: few large orgs, each file's lines shuffled over three months (more
/// days than the writer keeps parts open per lane and the claims keep dates mapped), unique
/// record ids and deep paging offsets in the paths.
fn customer_shaped(threads: u32) -> Dir {
    let dir = Dir::generated(&[
        "--seed",
        "31",
        "--orgs",
        "8",
        "--dates",
        "2025-10-01..2025-12-31",
        "--active-per-mille",
        "700",
        "--calls-per-day",
        "12",
        "--hot-days",
        "6",
        "--spread-files",
        "3",
        "--unique-ids",
        "--shuffle",
    ]);
    dir.set_threads(threads);
    dir
}

/// Every part under `state/events`, with a digest of its bytes.
fn parts_with_digests(dir: &Dir) -> BTreeMap<String, String> {
    use sha2::Digest;
    let root = dir.path().join("state/events");
    let mut out = BTreeMap::new();
    for day in std::fs::read_dir(&root).unwrap() {
        for part in std::fs::read_dir(day.unwrap().path()).unwrap() {
            let p = part.unwrap().path();
            let bytes = std::fs::read(&p).unwrap();
            out.insert(
                p.strip_prefix(&root).unwrap().display().to_string(),
                format!("{:x}", sha2::Sha256::digest(&bytes)),
            );
        }
    }
    out
}

/// The messages in the outbox as a reader sees them: for each `.eml` file, its key, what it
/// covers, its subject and both bodies (the MIME boundaries are random).
fn messages(dir: &Dir) -> BTreeMap<String, [String; 5]> {
    use crate::mail::{body_of, header};
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir.path().join("state/outbox")).unwrap() {
        let raw = std::fs::read(e.unwrap().path()).unwrap();
        let key = header(&raw, "X-Creditd-Key");
        let seen = [
            header(&raw, "X-Creditd-Covers"),
            header(&raw, "Subject"),
            body_of(&raw, "text/plain"),
            body_of(&raw, "text/html"),
            header(&raw, "To"),
        ];
        out.insert(key, seen);
    }
    out
}

#[test]
fn any_number_of_threads_writes_the_same_ledger_counts_quarantine_parts_and_messages() {
    let one = customer_shaped(1);
    let four = customer_shaped(4);
    let now = ["--now", "2026-01-01T00:00:00Z"];
    for dir in [&one, &four] {
        dir.expect(0, &[&now[..], &["run", "ingest"]].concat());
        dir.expect(0, &[&now[..], &["run", "deliver"]].concat());
        assert_eq!(
            without_status(&dir.export()),
            dir.read("expected-ledger.csv")
        );
        let counts = file_counts(dir);
        assert_eq!(counts, expected_file_counts(dir));
        assert_nothing_lost(&counts);
    }
    let parts = parts_with_digests(&one);
    // One part per file and day: 3 files over (most of) 92 days.
    assert!(parts.len() > 200, "{} parts", parts.len());
    assert_eq!(parts, parts_with_digests(&four), "byte-identical parts");
    assert_eq!(
        one.expect(0, &["quarantine", "--format", "json"]),
        four.expect(0, &["quarantine", "--format", "json"])
    );
    // The alerts' details, worked out ahead on other threads with four, read the same.
    let sent = messages(&one);
    let kinds = |prefix: &str| sent.keys().filter(|k| k.starts_with(prefix)).count();
    assert!(
        kinds("over:") >= 2 && kinds("near:") >= 2,
        "{:?}",
        sent.keys()
    );
    assert_eq!(sent, messages(&four));
}

/// With more threads, files are read and decoded ahead of the one being written. A file that
/// turns out to be a copy, or breaks in the middle, is skipped there, and the files after it
/// go through whole, as with one thread.
#[test]
fn a_copy_or_a_broken_file_between_others_leaves_the_next_files_whole_on_any_thread_count() {
    let mut listed = Vec::new();
    for threads in [1, 4] {
        let dir = customer_shaped(threads);
        let expected_counts = expected_file_counts(&dir);
        let first = dir.inbox().into_iter().next().unwrap();
        let (stem, ext) = first.split_once('.').unwrap();
        // Names that sort right after the first file, before the second.
        let copy = format!("{stem}~again.{ext}");
        let broken = format!("{stem}~broken.ndjson.gz");
        let original = std::fs::read(dir.path().join("inbox").join(&first)).unwrap();
        dir.write(&format!("inbox/{copy}"), original);
        let bytes = gzip_of_calls("b", 50_000);
        dir.write(&format!("inbox/{broken}"), &bytes[..bytes.len() / 2]);

        let out = dir.creditd(&["run", "ingest"]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "threads {threads}: {stderr}");
        assert!(
            stdout.contains(&format!("duplicate file {copy}")),
            "threads {threads}: {stdout}"
        );
        assert!(
            stderr.contains(&format!("failed {broken}")),
            "threads {threads}: {stderr}"
        );
        assert_eq!(dir.inbox(), vec![broken.clone()], "threads {threads}");
        assert_eq!(
            without_status(&dir.export()),
            dir.read("expected-ledger.csv"),
            "threads {threads}"
        );
        let mut counts = file_counts(&dir);
        assert_eq!(
            counts.remove(&broken),
            Some(vec![0; 12]),
            "threads {threads}"
        );
        let dup = counts.remove(&copy).unwrap();
        assert_eq!(dup[2], 0, "threads {threads}: a copy has no unique calls");
        assert_eq!(dup[0], expected_counts[&first][0], "threads {threads}");
        assert_eq!(counts, expected_counts, "threads {threads}");
        listed.push(dir.expect(0, &["files"]));
    }
    assert_eq!(listed[0], listed[1]);
}
