//! Local-day closes driven by a simulated clock through DST changes and downtime.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use creditd::setup::Setup;
use creditd::state::State;

use crate::Dir;

/// Zones with a DST change in the simulated week, and steady 30/45-minute zones.
const ZONES: [&str; 12] = [
    "America/Havana",      // falls back 2025-11-02 (midnight repeats)
    "Asia/Beirut",         // falls back across midnight 2025-10-26
    "Africa/Cairo",        // falls back at 24:00 on 2025-10-30
    "Atlantic/Azores",     // midnight repeats 2025-10-26
    "America/St_Johns",    // falls back 2025-11-02, UTC-2:30 → -3:30
    "Europe/Berlin",       // falls back 2025-10-26
    "America/New_York",    // falls back 2025-11-02
    "Europe/London",       // falls back 2025-10-26
    "Australia/Lord_Howe", // UTC+11, half-hour zone
    "Asia/Kathmandu",      // UTC+5:45
    "Pacific/Chatham",     // UTC+13:45
    "Asia/Kolkata",        // UTC+5:30
];

/// The first minute whose wall-clock date in `tz` is `date`, found by brute force.
fn first_minute_of(tz: Tz, date: NaiveDate) -> DateTime<Utc> {
    let mut t = date.and_hms_opt(0, 0, 0).unwrap().and_utc() - Duration::hours(15);
    while t.with_timezone(&tz).date_naive() < date {
        t += Duration::minutes(1);
    }
    t
}

#[test]
fn every_org_day_closes_once_on_time_across_dst_and_downtime() {
    let dir = Dir::empty();
    let mut orgs = String::from("org_id,name,edition,agents,light_agents,timezone,data_center,signup_date,paid,legacy_daily_limit,report_to,effective_from\n");
    for (i, z) in ZONES.iter().enumerate() {
        orgs.push_str(&format!(
            "{},Org {i},standard,3,0,{z},us,2025-01-01,true,,a@x.example,\n",
            500 + i
        ));
    }
    dir.write("orgs.csv", orgs);
    dir.write("pricing.toml", "effective_from = \"2025-10-01\"\n");
    let first = NaiveDate::from_ymd_opt(2025, 10, 25).unwrap();
    let last = NaiveDate::from_ymd_opt(2025, 11, 2).unwrap();
    let mut lines = String::new();
    let mut d = first;
    while d <= last {
        for (i, z) in ZONES.iter().enumerate() {
            let tz: Tz = z.parse().unwrap();
            let noon = tz
                .from_local_datetime(&d.and_hms_opt(12, 0, 0).unwrap())
                .unwrap();
            lines.push_str(&format!(
                "{{\"ts\":\"{}\",\"request_id\":\"{}-{d}\",\"org_id\":\"{}\",\"method\":\"GET\",\"path\":\"/a\",\"status\":200}}\n",
                noon.to_rfc3339(),
                500 + i,
                500 + i
            ));
        }
        d = d.succ_opt().unwrap();
    }
    dir.write("inbox/week.ndjson", lines);

    let (setup, problems) = Setup::load(&dir.path().join("creditd.toml")).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    let mut state = State::open(&setup.config.state_dir).unwrap();
    let start = Utc.with_ymd_and_hms(2025, 10, 24, 0, 0, 0).unwrap();
    creditd::ingest::ingest_inbox(&setup, state.store(), start, &Default::default()).unwrap();
    let go = Default::default();
    creditd::ledger::recompute_dirty(&setup, state.store(), start, &go).unwrap();

    // Sweep every 15 minutes for two weeks, with the daemon down for 9 hours in the middle.
    let down = (
        Utc.with_ymd_and_hms(2025, 10, 30, 20, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(2025, 10, 31, 5, 0, 0).unwrap(),
    );
    let mut sweeps = Vec::new();
    let mut now = start;
    while now < start + Duration::days(14) {
        if !(now > down.0 && now < down.1) {
            let closing = creditd::ledger::close_days(&setup, state.store(), now, &go).unwrap();
            assert!(closing.failed.is_empty(), "{:?}", closing.failed);
            for c in closing.closed {
                sweeps.push((c.org_id, c.local_date, now));
            }
            // A second sweep at the same instant closes nothing more.
            assert!(creditd::ledger::close_days(&setup, state.store(), now, &go)
                .unwrap()
                .closed
                .is_empty());
        }
        now += Duration::minutes(15);
    }

    let mut seen: BTreeMap<(String, NaiveDate), DateTime<Utc>> = BTreeMap::new();
    for (org, date, at) in &sweeps {
        assert!(
            seen.insert((org.clone(), *date), *at).is_none(),
            "{org} {date} closed twice"
        );
    }
    assert_eq!(seen.len(), ZONES.len() * 9, "every org-day closed");
    let grace = Duration::hours(2);
    let mut caught_up = 0;
    for ((org, date), at) in &seen {
        let i: usize = org.parse::<usize>().unwrap() - 500;
        let tz: Tz = ZONES[i].parse().unwrap();
        let due = first_minute_of(tz, date.succ_opt().unwrap()) + grace;
        assert!(*at >= due, "{org} {date}: closed at {at}, before {due}");
        if due > down.0 && due < down.1 {
            assert_eq!(
                *at, down.1,
                "{org} {date}: missed while down, closed at restart"
            );
            caught_up += 1;
        } else {
            assert!(
                *at - due <= Duration::minutes(15),
                "{org} {date}: closed at {at}, due {due}"
            );
        }
    }
    assert!(caught_up >= 5, "the downtime covered {caught_up} closes");
}
