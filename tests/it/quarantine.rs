//! `creditd quarantine`: the quarantined lines themselves, equal in number to what `files`
//! counts, filtered, and safe on a terminal.

use std::collections::BTreeMap;

use creditd::logline::Reason;

use crate::ingest::file_counts;
use crate::{csv_rows, Dir};

/// Rows of `quarantine` with `args`, header checked and dropped.
fn listed(dir: &Dir, args: &[&str]) -> Vec<Vec<String>> {
    let mut all = vec!["quarantine"];
    all.extend(args);
    let rows = csv_rows(&dir.expect(0, &all));
    assert_eq!(rows[0].join(","), "file,line,reason,org_id,local_date,raw");
    rows[1..].to_vec()
}

#[test]
fn every_quarantined_line_is_listed_once_with_its_reason_and_filters_narrow_it() {
    let dir = Dir::sample();
    dir.expect(0, &["run", "all"]);
    let counts = file_counts(&dir);
    let files = csv_rows(&dir.expect(0, &["files"]));
    // (file, reason) → count, over the ingested rows of `files` (a duplicate file repeats
    // its original's counts and holds no lines of its own).
    let mut expected: BTreeMap<(String, String), u64> = BTreeMap::new();
    for r in &files[1..] {
        if r[2] != "ingested" {
            continue;
        }
        for (i, reason) in Reason::ALL.iter().map(|r| r.as_str()).enumerate() {
            let n = counts[&r[0]][4 + i];
            if n > 0 {
                expected.insert((r[0].clone(), reason.to_string()), n);
            }
        }
    }
    let rows = listed(&dir, &[]);
    let mut got: BTreeMap<(String, String), u64> = BTreeMap::new();
    for r in &rows {
        *got.entry((r[0].clone(), r[2].clone())).or_default() += 1;
    }
    assert_eq!(got, expected);
    assert!(rows.len() > 300, "{}", rows.len());
    // Line numbers are those of the file: the raw text is that line of the archived copy.
    let sample = rows
        .iter()
        .find(|r| r[0] == "gw1-20251003T0000.ndjson" && r[2] == "unknown_org")
        .expect("an unknown_org line of the first file");
    let original = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("sample-data/inbox/gw1-20251003T0000.ndjson"),
    )
    .unwrap();
    let n: usize = sample[1].parse().unwrap();
    assert_eq!(original.lines().nth(n - 1).unwrap(), sample[5]);
    // A call that decoded keeps its org; an unknown org has no zone, so no local date.
    assert_eq!((sample[3].as_str(), sample[4].as_str()), ("999999999", ""));
    let early = rows
        .iter()
        .find(|r| r[2] == "before_signup")
        .expect("a before_signup line");
    assert_eq!(
        (early[3].as_str(), early[4].as_str()),
        ("60000126", "2024-11-01")
    );

    let unknown = listed(&dir, &["--reason", "unknown_org"]);
    assert_eq!(
        unknown.len() as u64,
        expected
            .iter()
            .filter(|((_, r), _)| r == "unknown_org")
            .map(|(_, n)| n)
            .sum::<u64>()
    );
    assert!(unknown.iter().all(|r| r[2] == "unknown_org"));

    let one_file = listed(&dir, &["--file", "gw1-20251004T0000.ndjson.gz"]);
    assert!(!one_file.is_empty());
    assert!(one_file
        .iter()
        .all(|r| r[0] == "gw1-20251004T0000.ndjson.gz"));

    // The sample's dated quarantined lines are its calls before signup, on 2024-11-01.
    let day = listed(&dir, &["--from", "2024-11-01", "--to", "2024-11-01"]);
    assert!(!day.is_empty());
    assert!(day.iter().all(|r| r[4] == "2024-11-01"), "{day:?}");
    assert!(listed(&dir, &["--from", "2024-11-02", "--to", "2025-12-31"]).is_empty());
    let undated = rows.iter().filter(|r| r[4].is_empty()).count();
    assert!(undated > 0, "malformed lines have no local date");
    let from = listed(&dir, &["--from", "2024-01-01"]);
    assert_eq!(from.len(), rows.len() - undated);

    let json: serde_json::Value =
        serde_json::from_str(&dir.expect(0, &["quarantine", "--format", "json"])).unwrap();
    let json = json.as_array().unwrap();
    assert_eq!(json.len(), rows.len());
    assert_eq!(json[0]["file"], rows[0][0].as_str());
    assert_eq!(json[0]["line"], rows[0][1].parse::<u64>().unwrap());

    // A bad filter is a usage error that names the valid values.
    let out = dir.creditd(&["quarantine", "--reason", "oops"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("--reason oops: expected one of malformed, missing_field"));
    let out = dir.creditd(&["quarantine", "--from", "2025-10-09", "--to", "2025-10-01"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_hostile_line_cannot_reach_the_terminal() {
    let dir = Dir::sample();
    // An escape sequence (clear screen, set the window title) and a C1 CSI in a refused line.
    dir.write(
        "inbox/gw9-hostile.ndjson",
        "{\"request_id\":\"r\u{1b}]0;owned\u{7}\",\"ts\":\"nope\u{1b}[2J\u{9b}31m\"}\n\
         {\"ts\":\"2025-10-10T10:00:00Z\",\"request_id\":\"r2\",\"org_id\":\"o\u{9b}6n\u{7f}\",\"method\":\"GET\",\"path\":\"/x\",\"status\":200}\n",
    );
    dir.expect(0, &["run", "ingest"]);
    for format in ["csv", "json"] {
        let out = dir.creditd(&[
            "quarantine",
            "--file",
            "gw9-hostile.ndjson",
            "--format",
            format,
        ]);
        assert_eq!(out.status.code(), Some(0));
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(
            !text.chars().any(|c| c.is_control() && c != '\n'),
            "{format}: {text:?}"
        );
        let (raw, org) = if format == "json" {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            (
                v[0]["raw"].as_str().unwrap().to_string(),
                v[1]["org_id"].as_str().unwrap().to_string(),
            )
        } else {
            let rows = csv_rows(&text);
            (rows[1][5].clone(), rows[2][3].clone())
        };
        assert!(raw.contains("r\\x1b]0;owned\\x07"), "{format}: {raw}");
        assert!(raw.contains("nope\\x1b[2J\\x9b31m"), "{format}: {raw}");
        // An unknown org keeps its id, escaped like the raw line.
        assert_eq!(org, "o\\x9b6n\\x7f", "{format}");
    }
}

#[test]
fn on_a_fresh_state_it_prints_the_header() {
    let dir = Dir::sample();
    let out = dir.creditd(&["quarantine"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "file,line,reason,org_id,local_date,raw\n"
    );
    assert!(!dir.path().join("state").exists());
}
