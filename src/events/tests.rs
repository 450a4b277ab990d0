//! Tests of the part writer and the day query.

use super::reconcile::frame;
use super::*;

fn measure(org: &str, legacy: bool, allotted: u64) -> Measure {
    Measure {
        org_id: org.to_string(),
        legacy,
        allotted,
    }
}

#[test]
fn crossings_follow_ts_then_request_id() {
    // Allotment 10: 8 reached by "b" (tie on ts broken by request id), above 10 by "d".
    let events = frame(&[
        ("1", 300, "d", true, 3),
        ("1", 100, "b", true, 4),
        ("1", 100, "a", true, 4),
        ("1", 200, "c", false, 50),
        ("1", 250, "c2", true, 2),
    ]);
    let figs = reconcile_frame(events, &[measure("1", false, 10)], &[80, 90]).unwrap();
    assert_eq!(figs.len(), 1);
    let f = &figs[0];
    assert_eq!(
        (f.calls, f.billable_calls, f.credits, f.used),
        (5, 4, 13, 13)
    );
    assert_eq!(
        f.crossings,
        vec![
            (80, 100, "b".to_string()),
            (90, 250, "c2".to_string()),
            (100, 300, "d".to_string())
        ]
    );
}

#[test]
fn legacy_days_count_billable_calls() {
    let events = frame(&[
        ("2", 1, "a", true, 50),
        ("2", 2, "b", false, 50),
        ("2", 3, "c", true, 50),
        ("2", 4, "d", true, 50),
        ("3", 1, "x", true, 50),
    ]);
    let figs = reconcile_frame(events, &[measure("2", true, 2)], &[80]).unwrap();
    assert_eq!(figs.len(), 1, "only the measured org");
    let f = &figs[0];
    assert_eq!(
        (f.calls, f.billable_calls, f.credits, f.used),
        (4, 3, 150, 3)
    );
    assert_eq!(
        f.crossings,
        vec![(80, 3, "c".to_string()), (100, 4, "d".to_string())]
    );
}

#[test]
fn orgs_below_every_threshold_are_summed_without_crossings() {
    // "5" stays under 80 % (only its billable credits count); legacy "6" reaches 80 % of
    // its two calls and goes above them; "7" reaches exactly 80 % with its last call.
    let events = frame(&[
        ("5", 3, "a", true, 4),
        ("5", 1, "b", false, 90),
        ("5", 2, "c", true, 3),
        ("6", 2, "d", true, 9),
        ("6", 1, "e", true, 9),
        ("6", 3, "f", true, 9),
        ("7", 1, "g", true, 4),
        ("7", 2, "h", true, 4),
    ]);
    let measures = [
        measure("5", false, 10),
        measure("6", true, 2),
        measure("7", false, 10),
    ];
    let figs = reconcile_frame(events, &measures, &[80]).unwrap();
    let got: Vec<_> = figs
        .iter()
        .map(|f| {
            (
                f.org_id.as_str(),
                f.calls,
                f.credits,
                f.used,
                f.crossings.clone(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("5", 3, 7, 7, vec![]),
            (
                "6",
                3,
                27,
                3,
                vec![(80, 2, "d".to_string()), (100, 3, "f".to_string())]
            ),
            ("7", 2, 8, 8, vec![(80, 2, "h".to_string())]),
        ]
    );
}

const SHA: &str = "abababababababababababababababababababababababababababababababab";

/// Pushes `rows` events spread round-robin over `days` consecutive days from 2025-10-01:
/// event `i` has request id `r<i>` and line `i + 1`.
fn push_round_robin(writer: &mut PartWriter, rows: u64, days: u64) {
    push_events(writer, rows, |i| i % days);
}

/// Pushes `rows` events, event `i` on day `day_of(i)` from 2025-10-01, with request id `r<i>`
/// and line `i + 1`.
fn push_events(writer: &mut PartWriter, rows: u64, day_of: impl Fn(u64) -> u64) {
    let first = NaiveDate::from_ymd_opt(2025, 10, 1).unwrap();
    let endpoint: std::sync::Arc<str> = "/api/v1/tickets".into();
    for i in 0..rows {
        let id = format!("r{i}");
        writer
            .push(&Event {
                request_id: &id,
                org_id: "1",
                ts_ms: i as i64,
                local_date: first + chrono::Days::new(day_of(i)),
                method: "GET",
                endpoint: endpoint.clone(),
                status: 200,
                billable: true,
                credits: 1,
                unpriced: false,
                latency_ms: None,
                charged_credits: None,
                dc: None,
                file: SHA,
                line: i + 1,
            })
            .unwrap();
    }
}

/// Every file under `dir`, relative to it.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

/// Writes `rows` events spread round-robin over `days` consecutive days; returns the row
/// counts of each part's row groups, by day.
fn row_groups_written(rows: u64, days: u64) -> Vec<Vec<usize>> {
    let dir = tempfile::tempdir().unwrap();
    let mut writer = PartWriter::new(dir.path(), SHA, 1);
    push_round_robin(&mut writer, rows, days);
    let parts = writer.finish().unwrap();
    assert_eq!(parts.len() as u64, days.min(rows));
    parts
        .iter()
        .map(|p| {
            let f = File::open(dir.path().join(&p.path)).unwrap();
            let mut reader = ParquetReader::new(f);
            let meta = reader.get_metadata().unwrap();
            let groups: Vec<usize> = meta.row_groups.iter().map(|g| g.num_rows()).collect();
            assert_eq!(groups.iter().sum::<usize>() as u64, p.rows);
            groups
        })
        .collect()
}

#[test]
fn days_beyond_the_open_part_bound_get_more_parts_holding_every_row_once() {
    // More days than stay open, interleaved: the buffers are handed over once memory is full
    // and again at the end, so every day needs a writer twice.
    let days = MAX_OPEN_PARTS as u64 + 10;
    let rows = BUFFERED_ROWS as u64 * 3 / 2;
    let dir = tempfile::tempdir().unwrap();
    let mut writer = PartWriter::new(dir.path(), SHA, 1);
    push_round_robin(&mut writer, rows, days);
    let parts = writer.finish().unwrap();

    let mut per_day: BTreeMap<NaiveDate, usize> = BTreeMap::new();
    for p in &parts {
        *per_day.entry(p.local_date).or_default() += 1;
    }
    assert_eq!(per_day.len() as u64, days);
    assert!(parts.len() > days as usize, "{} parts", parts.len());
    let mut listed: Vec<String> = parts.iter().map(|p| p.path.clone()).collect();
    listed.sort();
    assert_eq!(files_under(dir.path()), listed, "no temporary file left");

    // Read back, part by part: each holds its own day's rows, and all of them together
    // are the input, each row once.
    let first = NaiveDate::from_ymd_opt(2025, 10, 1).unwrap();
    let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
    let mut seen = vec![false; rows as usize];
    for p in &parts {
        let df = scan_parts(dir.path(), std::slice::from_ref(&p.path))
            .unwrap()
            .select([
                col("request_id"),
                col("line"),
                col("local_date").cast(DataType::Int32),
            ])
            .collect()
            .unwrap();
        assert_eq!(df.height() as u64, p.rows, "{}", p.path);
        let ids = df.column("request_id").unwrap().str().unwrap().clone();
        let lines = df.column("line").unwrap().i64().unwrap().clone();
        let dates = df.column("local_date").unwrap().i32().unwrap().clone();
        for r in 0..df.height() {
            let line = lines.get(r).unwrap() as u64;
            let i = line - 1;
            assert_eq!(ids.get(r), Some(format!("r{i}").as_str()));
            let date = first + chrono::Days::new(i % days);
            assert_eq!(date, p.local_date, "{}", p.path);
            assert_eq!(
                dates.get(r),
                Some(date.signed_duration_since(epoch).num_days() as i32)
            );
            assert!(!seen[i as usize], "r{i} twice");
            seen[i as usize] = true;
        }
    }
    assert!(seen.iter().all(|s| *s), "every row written");
}

#[test]
fn an_abandoned_writer_removes_its_closed_and_open_parts() {
    // More days than stay open, so some parts are closed (not yet in place) and some open
    // when the file is given up.
    let dir = tempfile::tempdir().unwrap();
    let mut writer = PartWriter::new(dir.path(), SHA, 2).with_max_open(5);
    push_days(&mut writer, 12, 1100);
    drop(writer);
    assert_eq!(files_under(dir.path()), Vec::<String>::new());
}

/// Pushes `per_day` events of each of `days` consecutive days, one day after the other.
fn push_days(writer: &mut PartWriter, days: u64, per_day: u64) {
    push_events(writer, days * per_day, |i| i / per_day);
}

#[test]
fn the_parts_are_the_same_for_any_number_of_lanes() {
    // 12 days, 5 parts open at most: each day's first 1 Ki rows go over as it fills, the rest
    // at the end, when parts close and reopen. Where they do is decided in the order rows are
    // handed over, not per lane, so every lane count writes the same bytes.
    let layout = |lanes: usize| {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = PartWriter::new(dir.path(), SHA, lanes).with_max_open(5);
        push_days(&mut writer, 12, 1100);
        let parts = writer.finish().unwrap();
        let bytes: Vec<Vec<u8>> = parts
            .iter()
            .map(|p| std::fs::read(dir.path().join(&p.path)).unwrap())
            .collect();
        assert_eq!(files_under(dir.path()).len(), parts.len(), "{lanes} lanes");
        (parts, bytes)
    };
    let one = layout(1);
    assert!(
        one.0.len() > 12,
        "{} parts: some days got a second",
        one.0.len()
    );
    assert_eq!(one.0.iter().map(|p| p.rows).sum::<u64>(), 12 * 1100);
    for lanes in [2, 3, 4] {
        assert!(layout(lanes) == one, "{lanes} lanes wrote other parts");
    }
}

#[test]
fn a_file_over_many_days_still_makes_row_groups_worth_reading() {
    // 900 rows on each of 30 days: no day reaches a row group of its own before the end,
    // so each part is one row group (not 30 slivers of every 4 Ki batch).
    let groups = row_groups_written(27_000, 30);
    assert!(groups.iter().all(|g| g == &vec![900]), "{groups:?}");
}

#[test]
fn a_long_file_of_one_day_is_handed_over_in_batches_as_it_is_read() {
    // Encoding overlaps decoding: the rows go to the writer 4 Ki at a time.
    let groups = row_groups_written(10_000, 1);
    assert_eq!(groups, vec![vec![4096, 4096, 1808]]);
}

#[test]
fn exactly_at_the_allotment_is_not_above_it() {
    let events = frame(&[("4", 1, "a", true, 5), ("4", 2, "b", true, 5)]);
    let figs = reconcile_frame(events, &[measure("4", false, 10)], &[]).unwrap();
    assert_eq!(figs[0].crossings, vec![]);
}

/// Writes `files` parts of `rows` events each on 2025-10-01, over `orgs` orgs (`o0`…), with
/// scattered times, mixed credits and two endpoints; returns the listed parts.
fn day_of_many_orgs(dir: &Path, files: u64, rows: u64, orgs: u64) -> Vec<String> {
    let day = NaiveDate::from_ymd_opt(2025, 10, 1).unwrap();
    let start = day
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
        .timestamp_millis();
    let endpoints: [std::sync::Arc<str>; 2] = ["/api/v1/tickets".into(), "/api/v1/search".into()];
    let mut listed = Vec::new();
    for f in 0..files {
        let sha = format!("{f:064x}");
        let mut writer = PartWriter::new(dir, &sha, 1);
        for i in 0..rows {
            let n = f * rows + i;
            let (id, org) = (format!("r{n}"), format!("o{}", n % orgs));
            writer
                .push(&Event {
                    request_id: &id,
                    org_id: &org,
                    ts_ms: start + (n * 7_919 % 86_000) as i64 * 1_000,
                    local_date: day,
                    method: "GET",
                    endpoint: endpoints[n.is_multiple_of(3) as usize].clone(),
                    status: 200,
                    billable: !n.is_multiple_of(7),
                    credits: n % 5 + 1,
                    unpriced: n.is_multiple_of(11),
                    latency_ms: Some((n % 700) as i64),
                    charged_credits: n.is_multiple_of(2).then_some((n % 5) as i64),
                    dc: None,
                    file: &sha,
                    line: i + 1,
                })
                .unwrap();
        }
        listed.extend(writer.finish().unwrap().into_iter().map(|p| p.path));
    }
    listed
}

#[test]
fn a_few_orgs_or_many_get_the_same_figures_and_the_crossing_orgs_events_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let parts = day_of_many_orgs(dir.path(), 3, 2_000, 12);
    // Every third org is small enough to cross 80 % and go above its allotment (o9 counts
    // calls, on a legacy day).
    let measures: Vec<Measure> = (0..12)
        .map(|o| {
            measure(
                &format!("o{o}"),
                o % 4 == 1,
                if o % 3 == 0 { 300 } else { 100_000 },
            )
        })
        .collect();
    let all = reconcile_day(dir.path(), &parts, &measures, &[80]).unwrap();
    assert_eq!(all.len(), 12);
    // Measured alone (the filter read by the Parquet reader) or with all (no filter), each
    // org's figures are the same.
    for m in &measures {
        let alone = reconcile_day(dir.path(), &parts, std::slice::from_ref(m), &[80]).unwrap();
        let f = all.iter().find(|f| f.org_id == m.org_id).unwrap();
        assert_eq!(alone, vec![f.clone()]);
    }
    // Some of the orgs (more than the reader filters for), one of them with no events: the
    // others' rows in the frame change nothing.
    let mut some: Vec<Measure> = measures[..7].to_vec();
    some.push(measure("o99", false, 10));
    let (figures, kept) =
        reconcile_day_keeping(dir.path(), &parts, &some, &[80], true, some.len()).unwrap();
    let expected: Vec<DayFigures> = all
        .iter()
        .filter(|f| some.iter().any(|m| m.org_id == f.org_id))
        .cloned()
        .collect();
    assert_eq!(figures, expected);
    assert_eq!(figures.len(), 7, "no row for an org without events");
    // The same orgs as a small part of a day of many: their calls kept apart once read.
    let (apart, kept_apart) =
        reconcile_day_keeping(dir.path(), &parts, &some, &[80], true, 8 * some.len()).unwrap();
    assert_eq!(apart, expected);
    for org in ["o0", "o3", "o6"] {
        assert!(kept_apart.has(org), "{org} kept");
    }
    assert!(kept.has("o0") && kept.has("o3") && kept.has("o6"));
    assert!(!kept.has("o9"), "an org not measured is not kept");
    let crossing: Vec<&DayFigures> = all.iter().filter(|f| !f.crossings.is_empty()).collect();
    assert_eq!(crossing.len(), 4, "{all:?}");
    assert!(crossing.iter().all(|f| f.crossings.len() == 2));

    // The events kept from the same scan give the crossing orgs' details as a read of their
    // own does.
    let (again, kept) =
        reconcile_day_keeping(dir.path(), &parts, &measures, &[80], true, measures.len()).unwrap();
    assert_eq!(again, all);
    let names: Vec<String> = crossing.iter().map(|f| f.org_id.clone()).collect();
    let read = OrgEvents::load(dir.path(), &parts, &names).unwrap();
    let span = DaySpan::new(
        chrono_tz::UTC,
        NaiveDate::from_ymd_opt(2025, 10, 1).unwrap(),
        false,
    );
    for f in &crossing {
        let marks: Vec<Mark<'_>> = f
            .crossings
            .iter()
            .map(|(_, ts, rid)| Mark {
                ts: *ts,
                request_id: Some(rid.as_str()),
            })
            .collect();
        let from_kept = kept.details(&f.org_id, span, &marks).unwrap();
        assert!(from_kept.is_some(), "{} kept", f.org_id);
        assert_eq!(from_kept, read.details(&f.org_id, span, &marks).unwrap());
    }
    assert!(!kept.has("o1"), "an org below every threshold is not kept");
    // Kept when the reader filters too (4 orgs or fewer).
    let few = [measures[3].clone()];
    let (_, kept) =
        reconcile_day_keeping(dir.path(), &parts, &few, &[80], true, few.len()).unwrap();
    let f = all.iter().find(|f| f.org_id == "o3").unwrap();
    let marks = [Mark {
        ts: f.crossings[0].1,
        request_id: Some(f.crossings[0].2.as_str()),
    }];
    assert_eq!(
        kept.details("o3", span, &marks).unwrap(),
        read.details("o3", span, &marks).unwrap()
    );
}
