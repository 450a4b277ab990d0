//! Calls and bad lines as log text: NDJSON or CSV, every timestamp form, and the hostile
//! lines each quarantine reason is for.

use super::*;

/// The reasons of the bad lines the generator writes (cycled). `expired` is not among them:
/// the generated setups keep events forever.
pub(super) const REASONS: [&str; 7] = [
    "malformed",
    "missing_field",
    "bad_timestamp",
    "bad_method",
    "bad_status",
    "unknown_org",
    "before_signup",
];

pub(super) fn render_call(rng: &mut Rng, orgs: &[GenOrg], c: &Call, csv: bool) -> String {
    let o = &orgs[c.org];
    let when = DateTime::<Utc>::from_timestamp_millis(c.ts).expect("in range");
    // Every timestamp form: UTC, the org's own offset, epoch milliseconds, microseconds.
    let ts = match rng.below(4) {
        0 => when.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        1 => when
            .with_timezone(&o.tz)
            .format("%Y-%m-%dT%H:%M:%S%.3f%:z")
            .to_string(),
        2 => c.ts.to_string(),
        _ => format!(
            "{}{:03}Z",
            when.format("%Y-%m-%dT%H:%M:%S%.3f"),
            rng.below(1000)
        ),
    };
    let charged = if exempt(c.status) {
        0
    } else {
        c.credits + u64::from(rng.chance(20))
    };
    if csv {
        format!(
            "{},{},{},{},{},{},{},{},{},gw",
            c.rid,
            ts,
            o.id,
            c.method,
            csv_quote(&c.path),
            c.status,
            c.latency,
            charged,
            o.dc
        )
    } else {
        let ts_json = if rng.chance(500) && !ts.contains('T') {
            ts.clone()
        } else {
            format!("\"{ts}\"")
        };
        format!(
            r#"{{"ts":{ts_json},"request_id":"{}","org_id":"{}","method":"{}","path":"{}","status":{},"latency_ms":{},"charged_credits":{},"dc":"{}","ua":"sdk/1.2"}}"#,
            c.rid, o.id, c.method, c.path, c.status, c.latency, charged, o.dc
        )
    }
}

/// A bad line for reason number `k % 7`, as JSON and as CSV.
pub(super) fn bad_line(rng: &mut Rng, orgs: &[GenOrg], k: usize, at: i64) -> Line {
    let reason = REASONS[k % REASONS.len()];
    let rid = format!("bad-{}-{}", k, rng.next() as u32);
    let o = &orgs[rng.below(orgs.len() as u64) as usize];
    let when = DateTime::<Utc>::from_timestamp_millis(at).expect("in range");
    let ts = when.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
    let (json, csv) = match reason {
        "malformed" => (
            if k.is_multiple_of(2) {
                "{\"ts\": \"oops\"".to_string()
            } else {
                "[1,2,3]".to_string()
            },
            format!("{rid},\"{ts},{},GET,/api/v1/tickets,200,1,1,us,gw", o.id),
        ),
        "missing_field" => (
            format!(
                r#"{{"ts":"{ts}","org_id":"{}","method":"GET","path":"/api/v1/tickets","status":200}}"#,
                o.id
            ),
            format!(",{ts},{},GET,/api/v1/tickets,200,1,1,us,gw", o.id),
        ),
        "bad_timestamp" => (
            format!(
                r#"{{"ts":"2025-13-45T99:00:00Z","request_id":"{rid}","org_id":"{}","method":"GET","path":"/x","status":200}}"#,
                o.id
            ),
            format!("{rid},last tuesday,{},GET,/x,200,1,1,us,gw", o.id),
        ),
        "bad_method" => (
            format!(
                r#"{{"ts":"{ts}","request_id":"{rid}","org_id":"{}","method":"HEAD","path":"/x","status":200}}"#,
                o.id
            ),
            format!("{rid},{ts},{},OPTIONS,/x,200,1,1,us,gw", o.id),
        ),
        "bad_status" => (
            format!(
                r#"{{"ts":"{ts}","request_id":"{rid}","org_id":"{}","method":"GET","path":"/x","status":700}}"#,
                o.id
            ),
            format!("{rid},{ts},{},GET,/x,2OO,1,1,us,gw", o.id),
        ),
        "unknown_org" => (
            format!(
                r#"{{"ts":"{ts}","request_id":"{rid}","org_id":"999999999","method":"GET","path":"/x","status":200}}"#
            ),
            format!("{rid},{ts},999999999,GET,/x,200,1,1,us,gw"),
        ),
        _ => {
            // A call a year before the newest signup: always before that org's signup day.
            let late = orgs.iter().max_by_key(|o| o.signup).expect("orgs");
            let before = late.signup.and_time(NaiveTime::MIN).and_utc() - Duration::days(365);
            let ts = before.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string();
            (
                format!(
                    r#"{{"ts":"{ts}","request_id":"{rid}","org_id":"{}","method":"GET","path":"/x","status":200}}"#,
                    late.id
                ),
                format!("{rid},{ts},{},GET,/x,200,1,1,us,gw", late.id),
            )
        }
    };
    Line::Bad { reason, json, csv }
}
