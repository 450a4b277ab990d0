//! `creditd explain`: every call of an org-day in running-total order, adding up to its ledger
//! row.

use std::collections::BTreeMap;

use crate::{csv_rows, Dir};

const HEADER: &str =
    "local_time,request_id,method,path,rule,tier,credits,billable,running_total,crossing";

#[test]
fn every_org_day_of_a_generated_set_adds_up_to_its_ledger_row() {
    let dir = Dir::generated(&[
        "--seed",
        "21",
        "--orgs",
        "12",
        "--dates",
        "2025-10-05..2025-10-09,2025-11-01..2025-11-03",
        "--calls-per-day",
        "40",
        "--hot-days",
        "8",
    ]);
    dir.expect(0, &["run", "ingest"]);
    let ledger = csv_rows(&dir.export());
    let col: BTreeMap<&str, usize> = ledger[0]
        .iter()
        .enumerate()
        .map(|(i, n)| (n.as_str(), i))
        .collect();
    let (mut tiers, mut crossings, mut exempt) = (0, 0, 0);
    for row in &ledger[1..] {
        let (org, date) = (&row[col["org_id"]], &row[col["local_date"]]);
        let out = dir.expect(
            0,
            &["explain", "--org", org, "--date", date, "--format", "csv"],
        );
        let rows = csv_rows(&out);
        assert_eq!(rows[0].join(","), HEADER);
        let calls = &rows[1..];
        let n = |name: &str| row[col[name]].parse::<u64>().unwrap();
        assert_eq!(calls.len() as u64, n("calls"), "{org} {date}");
        let billable: Vec<&Vec<String>> = calls.iter().filter(|c| c[7] == "true").collect();
        assert_eq!(billable.len() as u64, n("billable_calls"), "{org} {date}");
        let credits: u64 = billable.iter().map(|c| c[6].parse::<u64>().unwrap()).sum();
        assert_eq!(credits, n("credits"), "{org} {date}");
        // The running total ends at `used` (credits, or billable calls on a legacy day) and
        // never falls.
        let totals: Vec<u64> = calls.iter().map(|c| c[8].parse().unwrap()).collect();
        assert!(totals.windows(2).all(|w| w[0] <= w[1]), "{org} {date}");
        assert_eq!(
            totals.last().copied().unwrap_or(0),
            n("used"),
            "{org} {date}"
        );
        // Calls come in time order, each with the path it was sent with.
        let times: Vec<&str> = calls.iter().map(|c| c[0].as_str()).collect();
        assert!(calls.iter().all(|c| c[3].starts_with('/')), "{org} {date}");
        if times
            .iter()
            .all(|t| t.ends_with(&times[0][times[0].len() - 6..]))
        {
            assert!(times.windows(2).all(|w| w[0] <= w[1]), "{org} {date}");
        }
        // The overage crossing is the call at which the total passed the allotment.
        let allotted = n("allotted");
        if let Some(i) = calls
            .iter()
            .position(|c| c[9].split(' ').any(|x| x == "over"))
        {
            assert!(totals[i] > allotted, "{org} {date}");
            assert!(i == 0 || totals[i - 1] <= allotted, "{org} {date}");
        }
        tiers += calls.iter().filter(|c| !c[5].is_empty()).count();
        crossings += calls.iter().filter(|c| !c[9].is_empty()).count();
        exempt += calls.len() - billable.len();
    }
    assert!(
        tiers > 0 && crossings > 0 && exempt > 0,
        "{tiers} {crossings} {exempt}"
    );
}

#[test]
fn the_text_form_names_the_totals_and_marks_exempt_calls_and_crossings() {
    let dir = Dir::sample();
    dir.expect(0, &["run", "ingest"]);
    let ledger = csv_rows(&dir.export());
    // The first over-limit org-day of the sample.
    let exceeded = ledger[0].iter().position(|c| c == "exceeded_at").unwrap();
    let row = ledger[1..]
        .iter()
        .find(|r| !r[exceeded].is_empty())
        .expect("an org-day over its allotment");
    let (org, date) = (&row[0], &row[1]);
    let text = dir.expect(0, &["explain", "--org", org, "--date", date]);
    let first = text.lines().next().unwrap();
    assert!(
        first.starts_with(&format!("org {org} on {date} (")) && first.contains(" calls, "),
        "{first}"
    );
    assert!(text.contains(" over "), "{text}");
    // An org-day without calls, and an org that does not exist.
    let out = dir.creditd(&["explain", "--org", org, "--date", "2024-01-01"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no ledger row"));
    let out = dir.creditd(&["explain", "--org", "nope", "--date", date]);
    assert_eq!(out.status.code(), Some(2));
}
