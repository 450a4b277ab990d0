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

/// A call of org 500 with the JSON text `ts`, `rid`, `org`, `method`, `status` as given.
fn raw(ts: &str, rid: &str, org: &str, method: &str, status: &str) -> String {
    format!("{{\"ts\":{ts},\"request_id\":{rid},\"org_id\":{org},\"method\":{method},\"path\":\"/x\",\"status\":{status}}}")
}

/// A valid call at 10:00 UTC on 2025-10-08 with its request id and one more member.
fn call_with(rid: &str, extra: &str) -> String {
    format!("{{\"ts\":\"2025-10-08T10:00:00Z\",\"request_id\":\"{rid}\",\"org_id\":\"500\",\"method\":\"GET\",\"path\":\"/x\",\"status\":200{extra}}}")
}

/// Every line of a hostile file with its expected outcome: `None` = charged, else the reason.
fn hostile_corpus() -> Vec<(String, Option<&'static str>)> {
    let ts = |ts: &str| raw(ts, "\"t\"", "\"500\"", "\"GET\"", "200");
    let rid = |rid: &str| raw("\"2025-10-08T10:00:00Z\"", rid, "\"500\"", "\"GET\"", "200");
    let org = |org: &str| raw("\"2025-10-08T10:00:00Z\"", "\"o\"", org, "\"GET\"", "200");
    let method = |m: &str| raw("\"2025-10-08T10:00:00Z\"", "\"m\"", "\"500\"", m, "200");
    let status = |s: &str, id: &str| {
        raw(
            "\"2025-10-08T10:00:00Z\"",
            &format!("\"{id}\""),
            "\"500\"",
            "\"GET\"",
            s,
        )
    };
    let mut big = call_with("big", ",\"pad\":\"");
    big.truncate(big.len() - 1);
    big.push_str(&"x".repeat(2 << 20));
    big.push_str("\"}");
    vec![
        (call_with("first", ""), None),
        // The line that panicked the local day (exit 101) and blocked the inbox.
        (
            r#"{"ts":8210266876799999,"request_id":"x","org_id":"500","method":"GET","path":"/a","status":200}"#.to_string(),
            Some("bad_timestamp"),
        ),
        (ts("-8210266876799999"), Some("bad_timestamp")),
        (ts("-1"), Some("bad_timestamp")),
        (ts("0"), Some("bad_timestamp")),
        (ts("-9223372036854775808"), Some("bad_timestamp")),
        (ts("9223372036854775807"), Some("bad_timestamp")),
        (ts("18446744073709551615"), Some("bad_timestamp")),
        (ts("1e400"), Some("bad_timestamp")),
        (ts("1759917600000.5"), Some("bad_timestamp")),
        (ts("true"), Some("bad_timestamp")),
        (ts("[1759917600000]"), Some("bad_timestamp")),
        (ts("{\"ms\":1759917600000}"), Some("bad_timestamp")),
        (ts("null"), Some("missing_field")),
        (ts("\"2100-01-01T00:00:00Z\""), Some("bad_timestamp")),
        (ts("\"2100-01-01T01:00:00+01:00\""), Some("bad_timestamp")),
        (ts("\"1999-12-31T23:59:59.999Z\""), Some("bad_timestamp")),
        (ts("\"0001-01-01T00:00:00Z\""), Some("bad_timestamp")),
        (ts("\"9999-12-31T23:59:59Z\""), Some("bad_timestamp")),
        // The last millisecond of 2099 is fine: 2100-01-01 in Berlin.
        (
            raw("\"2099-12-31T23:59:59.999Z\"", "\"late\"", "\"500\"", "\"GET\"", "200"),
            None,
        ),
        // Request ids of a type other than string or integer used to be read as "?" and
        // charged once between them.
        (rid("true"), Some("malformed")),
        (rid("false"), Some("malformed")),
        (rid("[1,2]"), Some("malformed")),
        (rid("{\"a\":1}"), Some("malformed")),
        (rid("1.5"), Some("malformed")),
        (rid("1e400"), Some("malformed")),
        (rid("null"), Some("missing_field")),
        (rid("\"\""), Some("missing_field")),
        // Integers are their decimal text, however long: two ids, two calls.
        (rid("123456789012345678901234567890"), None),
        (rid("123456789012345678901234567891"), None),
        (rid("18446744073709551615"), None),
        (org("500"), None),
        (org("500.0"), Some("malformed")),
        (org("[500]"), Some("malformed")),
        (org("\"501\""), Some("unknown_org")),
        (method("1"), Some("malformed")),
        (method("null"), Some("missing_field")),
        (method("\"HEAD\""), Some("bad_method")),
        (status("\"204\"", "s1"), None),
        (status("2.0e2", "s2"), Some("malformed")),
        (status("true", "s3"), Some("malformed")),
        (status("600", "s4"), Some("bad_status")),
        (status("18446744073709551615", "s5"), Some("bad_status")),
        (status("\"2xx\"", "s6"), Some("bad_status")),
        // Unusable optional fields are dropped; the call counts.
        (call_with("opt1", ",\"latency_ms\":1e400"), None),
        (call_with("opt2", ",\"latency_ms\":86400001,\"charged_credits\":-5"), None),
        (call_with("opt3", ",\"charged_credits\":[1],\"dc\":{\"a\":1}"), None),
        (call_with("opt4", ",\"dc\":18446744073709551615"), None),
        // 2 MiB on one line: malformed alone, its neighbours untouched.
        (big, Some("malformed")),
        (call_with("last", ""), None),
    ]
}

#[test]
fn a_corpus_of_hostile_lines_gets_the_outcomes_of_the_rules_and_the_inbox_goes_on() {
    let dir = small();
    let corpus = hostile_corpus();
    let mut text = String::new();
    for (line, _) in &corpus {
        text.push_str(line);
        text.push('\n');
    }
    dir.write("inbox/a-hostile.ndjson", &text);
    // The same lines as CSV timestamps and optional fields, and a file after them.
    dir.write(
        "inbox/b-hostile.csv",
        "ts,request_id,org_id,method,path,status,latency_ms,charged_credits,dc\n\
         8210266876799999,c1,500,GET,/x,200,,,\n\
         -1,c2,500,GET,/x,200,,,\n\
         2100-01-01T00:00:00Z,c3,500,GET,/x,200,,,\n\
         1999-12-31T23:59:59.999Z,c4,500,GET,/x,200,,,\n\
         1759917600000.5,c5,500,GET,/x,200,,,\n\
         1759917600000,c6,500,GET,/x,200,99999999999999999999,1000001,\n",
    );
    dir.write("inbox/c-after.ndjson", call("after"));

    dir.expect(0, &["--now", "2025-10-09T12:00:00Z", "run", "ingest"]);
    let counts = file_counts(&dir);
    assert_nothing_lost(&counts);
    let count = |reason: Option<&str>| corpus.iter().filter(|(_, r)| *r == reason).count() as u64;
    let charged = count(None);
    // lines, accepted, unique, duplicates, malformed, missing, ts, method, status, org, signup,
    // expired
    assert_eq!(
        counts["a-hostile.ndjson"],
        [
            corpus.len() as u64,
            charged,
            charged,
            0,
            count(Some("malformed")),
            count(Some("missing_field")),
            count(Some("bad_timestamp")),
            count(Some("bad_method")),
            count(Some("bad_status")),
            count(Some("unknown_org")),
            0,
            0
        ]
    );
    assert_eq!(
        counts["b-hostile.csv"],
        [6, 1, 1, 0, 0, 0, 5, 0, 0, 0, 0, 0]
    );
    assert_eq!(
        counts["c-after.ndjson"],
        [1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    );

    // Each quarantined line keeps its number and reason; the 2 MiB one only 4 KiB of itself.
    let store = rusqlite::Connection::open(dir.path().join("state/creditd.sqlite")).unwrap();
    let mut stmt = store
        .prepare("SELECT line, reason, length(raw) FROM quarantine WHERE file = 'a-hostile.ndjson' ORDER BY line")
        .unwrap();
    let rows: Vec<(i64, String, i64)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let expected: Vec<(i64, String)> = corpus
        .iter()
        .enumerate()
        .filter_map(|(i, (_, r))| r.map(|r| (i as i64 + 1, r.to_string())))
        .collect();
    let got: Vec<(i64, String)> = rows.iter().map(|(l, r, _)| (*l, r.clone())).collect();
    assert_eq!(got, expected);
    assert!(rows.iter().all(|(_, _, len)| *len < 5000), "{rows:?}");

    // The ledger charges exactly the valid calls: 2025-10-08 holds all but the one of 2099,
    // which is 2100-01-01 in Berlin, and the CSV and later files add one each.
    let export = dir.export();
    let day = format!("\n500,2025-10-08,credits,free,0,{0},{0},", charged - 1 + 2);
    assert!(export.contains(&day), "{day}\n{export}");
    assert!(
        export.contains("\n500,2100-01-01,credits,free,0,1,1,"),
        "{export}"
    );
}

#[test]
fn usage_never_prints_control_characters_from_the_logs_or_the_registry() {
    let dir = small();
    // A name and a request id that carry terminal escape sequences; one call is enough to go
    // over the free edition's 5,000 credits, so the crossing names the request.
    dir.write(
        "orgs.csv",
        "org_id,name,edition,agents,light_agents,timezone,data_center,signup_date,paid,legacy_daily_limit,report_to,effective_from\n\
         500,\"Five\u{1b}]0;pwned\u{7}\",free,0,0,Europe/Berlin,eu,2025-01-01,false,,admin@five.example,\n",
    );
    dir.write(
        "pricing.toml",
        "effective_from = \"2025-10-01\"\n[[rule]]\nmethod = \"GET\"\npath = \"/x\"\ncredits = 6000\n",
    );
    dir.write("inbox/a.ndjson", call("\\u001b[2J\\u001b[31mred"));
    dir.expect(0, &["run", "ingest"]);
    let out = dir.expect(0, &["usage", "--org", "500", "--date", "2025-10-08"]);
    assert!(out.contains("Exceeded"), "{out}");
    assert!(out.contains("[2J [31mred"), "{out}");
    assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
}
