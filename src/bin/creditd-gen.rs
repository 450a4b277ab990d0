//! `creditd-gen`: generates a realistic data set — registry, purchases, pricing catalog and
//! inbox files — together with the ledger and per-file counts it must produce.
//!
//! The expected values are worked out here from what was generated, by a deliberately simple
//! and separate implementation of the rules (wall-clock local dates, a fixed price per call
//! kind, the edition table written out again), so tests can compare creditd against it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use chrono::{DateTime, Duration, LocalResult, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use clap::Parser;

/// Generates a creditd data set and its expected ledger.
#[derive(Debug, Parser)]
struct Args {
    /// Output directory (created; existing files are overwritten).
    #[arg(long)]
    out: PathBuf,
    /// Number of organizations.
    #[arg(long, default_value_t = 24)]
    orgs: usize,
    /// Local dates to generate calls for: `2025-10-05..2025-10-08,2025-10-30`.
    #[arg(long, default_value = "2025-10-05..2025-10-09")]
    dates: String,
    /// Mean number of calls per org and day.
    #[arg(long, default_value_t = 60)]
    calls_per_day: u64,
    /// Org-days pushed to a chosen share of their allotment (near and over the limit).
    #[arg(long, default_value_t = 12)]
    hot_days: usize,
    /// Bad lines added to each file, cycling through every quarantine reason.
    #[arg(long, default_value_t = 8)]
    bad_per_file: usize,
    /// Share of calls repeated later as duplicates, in per mille.
    #[arg(long, default_value_t = 10)]
    dup_per_mille: u64,
    /// Hours of gateway time per inbox file.
    #[arg(long, default_value_t = 6)]
    hours_per_file: i64,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Skip the expected ledger (saves memory for very large sets).
    #[arg(long)]
    no_expected: bool,
    /// Set aside the calls of one window of gateway time, `START,MINUTES` (e.g.
    /// `2025-11-01T12:00:00Z,5`): they go to `aside/` as one NDJSON file, to be ingested after
    /// the inbox (a late five-minute file). The expected ledger and counts include it.
    #[arg(long)]
    aside: Option<String>,
    /// Every org signed up before the first date, so each day has the same load (the history
    /// benchmark); without it a tenth of the orgs sign up halfway through the dates.
    #[arg(long)]
    steady: bool,
    /// Deal the lines to this many files at random, each spanning every date (a customer's
    /// gateways), instead of one file per `--hours-per-file` of gateway time.
    #[arg(long)]
    spread_files: Option<usize>,
    /// Paths carry unique 16-digit record ids and deep paging offsets, now and then with
    /// `from` repeated (only the first counts).
    #[arg(long)]
    unique_ids: bool,
    /// Lines of each file in random order instead of by time.
    #[arg(long)]
    shuffle: bool,
    /// Share of an org's dates on which it makes calls at all, in per mille (orgs that use
    /// the API on some days only).
    #[arg(long, default_value_t = 1000)]
    active_per_mille: u64,
}

/// A small deterministic generator (SplitMix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

const ZONES: [&str; 24] = [
    "America/Havana",
    "Asia/Beirut",
    "Africa/Cairo",
    "Atlantic/Azores",
    "Asia/Kathmandu",
    "Pacific/Chatham",
    "Australia/Lord_Howe",
    "America/St_Johns",
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "Australia/Sydney",
    "Asia/Tokyo",
    "America/Los_Angeles",
    "Europe/London",
    "America/Sao_Paulo",
    "Africa/Johannesburg",
    "Asia/Singapore",
    "Pacific/Auckland",
    "America/Chicago",
    "Europe/Paris",
    "Asia/Dubai",
    "America/Denver",
];

const EDITIONS: [&str; 8] = [
    "free",
    "express",
    "standard",
    "professional",
    "enterprise",
    "zoho_one",
    "crm_plus",
    "service_plus",
];

/// base, per_agent, concurrency, legacy_base, legacy_per_agent, additional_max_per_day — the
/// README's table of defaults, written out independently of the program.
fn edition_numbers(e: &str) -> (u64, u64, u64, u64, u64) {
    match e {
        "free" => (5_000, 0, 5_000, 0, 0),
        "express" => (25_000, 100, 30_000, 150, 25_000),
        "standard" => (50_000, 250, 60_000, 300, 50_000),
        "professional" => (75_000, 500, 90_000, 600, 100_000),
        _ => (100_000, 1_000, 120_000, 1_200, 200_000),
    }
}

const DCS: [(&str, &str); 4] = [
    ("us", "2025-10-06"),
    ("eu", "2025-10-07"),
    ("in", "2025-10-07"),
    ("au", "2025-10-08"),
];

const PRICING: &str = r#"# Reference costs (Zoho Desk, October 2025).
effective_from = "2025-10-01"
unpriced_credits = 1

[[rule]]
method = "GET"
path = "/api/v1/tasks/count"
credits = 50

[[rule]]
method = "GET"
path = "/api/v1/search"
credits = 3
offset_param = "from"
tiers = [ { upto = 2000, credits = 3 }, { upto = 10000, credits = 5 },
          { upto = 50000, credits = 10 }, { upto = 100000, credits = 50 }, { credits = 100 } ]

[[rule]]
method = "GET"
path = "/api/v1/{module}"
credits = 3
offset_param = "from"
tiers = [ { upto = 2000, credits = 3 }, { upto = 10000, credits = 5 },
          { upto = 50000, credits = 10 }, { upto = 100000, credits = 50 }, { credits = 100 } ]

[[rule]]
method = "GET"
path = "/api/v1/{module}/{id}"
credits = 1

[[rule]]
method = "GET"
path = "/api/v1/{module}/{id}/{sub}"
credits = 3
offset_param = "from"
tiers = [ { upto = 2000, credits = 3 }, { upto = 10000, credits = 5 },
          { upto = 50000, credits = 10 }, { upto = 100000, credits = 50 }, { credits = 100 } ]

[[rule]]
method = "*"
path = "/api/v1/**"
credits = 1
"#;

fn tier(offset: u64) -> u64 {
    match offset {
        0..=2000 => 3,
        2001..=10000 => 5,
        10001..=50000 => 10,
        50001..=100000 => 50,
        _ => 100,
    }
}

struct PlanRow {
    edition: &'static str,
    agents: u64,
    light: u64,
    paid: bool,
    legacy_limit: Option<u64>,
    from: Option<NaiveDate>,
}

struct GenOrg {
    id: String,
    name: String,
    tz: Tz,
    dc: &'static str,
    signup: NaiveDate,
    plans: Vec<PlanRow>,
}

struct GenPurchase {
    id: String,
    org: usize,
    credits: u64,
    from: NaiveDate,
    to: NaiveDate,
}

/// One generated call, with what creditd must make of it.
#[derive(Clone)]
struct Call {
    ts: i64,
    org: usize,
    day: NaiveDate,
    rid: String,
    method: &'static str,
    path: String,
    status: u16,
    credits: u64,
    latency: u64,
}

/// A line to write: a call, a repeat of one, or a bad line with its reason.
enum Line {
    Call(Call),
    Dup(Call),
    Bad {
        reason: &'static str,
        json: String,
        csv: String,
    },
}

fn d(s: &str) -> NaiveDate {
    s.parse().expect("valid date")
}

/// `START,MINUTES` as a half-open window of epoch milliseconds.
fn parse_window(spec: &str) -> anyhow::Result<(i64, i64)> {
    let Some((start, minutes)) = spec.split_once(',') else {
        bail!("--aside wants START,MINUTES, not {spec:?}");
    };
    let from = DateTime::parse_from_rfc3339(start.trim())
        .with_context(|| format!("--aside: {start:?} is not an RFC 3339 time"))?
        .timestamp_millis();
    let minutes: i64 = minutes
        .trim()
        .parse()
        .with_context(|| format!("--aside: {minutes:?} is not a number of minutes"))?;
    Ok((from, from + minutes * 60_000))
}

fn parse_dates(spec: &str) -> anyhow::Result<Vec<NaiveDate>> {
    let mut out = Vec::new();
    for part in spec.split(',') {
        match part.split_once("..") {
            Some((a, b)) => {
                let (mut x, y): (NaiveDate, NaiveDate) = (a.trim().parse()?, b.trim().parse()?);
                while x <= y {
                    out.push(x);
                    x = x.succ_opt().expect("in range");
                }
            }
            None => out.push(part.trim().parse()?),
        }
    }
    out.sort();
    out.dedup();
    if out.is_empty() {
        bail!("--dates names no date");
    }
    Ok(out)
}

fn make_orgs(
    rng: &mut Rng,
    n: usize,
    first: NaiveDate,
    last: NaiveDate,
    steady: bool,
) -> Vec<GenOrg> {
    let mut orgs = Vec::new();
    for i in 0..n {
        let edition = EDITIONS[i % EDITIONS.len()];
        let tz: Tz = ZONES[i % ZONES.len()].parse().expect("known zone");
        let dc = DCS[i % DCS.len()].0;
        // Most orgs are old customers; some signed up just before or after the cutoff, and a
        // few during the generated range (their earlier calls are before signup).
        let signup = match i % 10 {
            7 => d("2025-10-15"),
            8 => d("2025-11-01"),
            9 if n > 9 && !steady => first + Duration::days(((last - first).num_days() / 2).max(1)),
            _ => d("2024-01-01") + Duration::days(rng.below(500) as i64),
        };
        let paid = edition != "free" && i % 13 != 5;
        let agents = if edition == "free" {
            0
        } else {
            1 + rng.below(60)
        };
        let legacy_limit = if i % 11 == 3 {
            Some(200 + rng.below(300))
        } else {
            None
        };
        let mut plans = vec![PlanRow {
            edition,
            agents,
            light: rng.below(5),
            paid,
            legacy_limit,
            from: None,
        }];
        if i % 5 == 2 {
            // Plan history: more agents from the middle of the range on.
            let mid = first + Duration::days(((last - first).num_days() / 2).max(1));
            plans.push(PlanRow {
                edition: if edition == "free" {
                    "express"
                } else {
                    edition
                },
                agents: agents + 5,
                light: 0,
                paid: true,
                legacy_limit,
                from: Some(mid.max(signup)),
            });
        }
        let name = match i % 6 {
            0 => format!("Acme {i}, Inc."),
            1 => format!("\"Quoted\" Corp {i}"),
            2 => format!("Multi\nLine {i}"),
            _ => format!("Org {i}"),
        };
        orgs.push(GenOrg {
            id: format!("{}", 60_000_000 + i * 7),
            name,
            tz,
            dc,
            signup,
            plans,
        });
    }
    orgs
}

fn csv_quote(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn write_registry(dir: &Path, orgs: &[GenOrg], purchases: &[GenPurchase]) -> anyhow::Result<()> {
    let mut s = String::from("org_id,name,edition,agents,light_agents,timezone,data_center,signup_date,paid,legacy_daily_limit,report_to,effective_from\n");
    for o in orgs {
        for p in &o.plans {
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},{},{},{},{},{},{}",
                o.id,
                csv_quote(&o.name),
                p.edition,
                p.agents,
                p.light,
                o.tz.name(),
                o.dc,
                o.signup,
                p.paid,
                p.legacy_limit.map(|l| l.to_string()).unwrap_or_default(),
                format_args!("admin@org{}.example.com;ops@org{}.example.com", o.id, o.id),
                p.from.map(|f| f.to_string()).unwrap_or_default()
            );
        }
    }
    std::fs::write(dir.join("orgs.csv"), s)?;
    let mut s = String::from("purchase_id,org_id,credits_per_day,valid_from,valid_to\n");
    for p in purchases {
        let _ = writeln!(
            s,
            "{},{},{},{},{}",
            p.id, orgs[p.org].id, p.credits, p.from, p.to
        );
    }
    std::fs::write(dir.join("credit-purchases.csv"), s)?;
    std::fs::write(dir.join("pricing.toml"), PRICING)?;
    Ok(())
}

/// The terms of an org-day, worked out from the generated registry.
struct Terms {
    model: &'static str,
    edition: &'static str,
    agents: u64,
    base: u64,
    variable: u64,
    additional: u64,
    legacy_limit: u64,
    allotted: u64,
}

fn terms(o: &GenOrg, purchases: &[GenPurchase], oi: usize, day: NaiveDate) -> Terms {
    let plan = o
        .plans
        .iter()
        .filter(|p| p.from.unwrap_or(o.signup) <= day)
        .max_by_key(|p| p.from.unwrap_or(o.signup))
        .expect("a plan from signup on");
    let (base, per_agent, legacy_base, legacy_per_agent, cap) = edition_numbers(plan.edition);
    let variable = per_agent * plan.agents;
    let bought: u64 = purchases
        .iter()
        .filter(|p| p.org == oi && p.from <= day && day <= p.to)
        .map(|p| p.credits)
        .sum();
    let additional = bought.min(cap);
    let legacy_limit = plan
        .legacy_limit
        .unwrap_or(legacy_base + legacy_per_agent * plan.agents);
    let cutover = d(DCS.iter().find(|(dc, _)| *dc == o.dc).expect("known dc").1);
    let (model, allotted) = if day < cutover {
        ("legacy", legacy_limit)
    } else if o.signup < d("2025-10-30") && plan.paid {
        (
            "grandfathered",
            legacy_limit.max(base + variable) + additional,
        )
    } else {
        ("credits", base + variable + additional)
    };
    Terms {
        model,
        edition: plan.edition,
        agents: plan.agents,
        base,
        variable,
        additional,
        legacy_limit,
        allotted,
    }
}

/// A random instant whose wall clock in `tz` shows local date `day`.
fn instant_on(rng: &mut Rng, tz: Tz, day: NaiveDate) -> i64 {
    loop {
        let ms = rng.below(86_400_000) as i64;
        let local = day.and_time(NaiveTime::MIN) + Duration::milliseconds(ms);
        let t = match tz.from_local_datetime(&local) {
            LocalResult::Single(t) => t,
            LocalResult::Ambiguous(a, b) => {
                if rng.chance(500) {
                    a
                } else {
                    b
                }
            }
            LocalResult::None => continue,
        };
        return t.with_timezone(&Utc).timestamp_millis();
    }
}

/// Picks a call kind: (method, path, status, credits).
fn call_kind(rng: &mut Rng, heavy: bool, unique: bool) -> (&'static str, String, u16, u64) {
    let status = match rng.below(100) {
        0..=2 => 429,
        3 => 503,
        4..=5 => 404,
        _ => 200,
    };
    if heavy && rng.chance(600) {
        return ("GET", "/api/v1/tasks/count".into(), status, 50);
    }
    let offset = if unique && rng.chance(50) {
        rng.below(1_000_000)
    } else if rng.chance(900) {
        rng.below(2000)
    } else {
        [2500, 9999, 10000, 10001, 60000, 150000][rng.below(6) as usize]
    };
    let module = *rng.pick(&["tickets", "contacts", "accounts", "tasks"]);
    // A record id: small, or (a customer's ids) unique and 16 digits long.
    let id = |rng: &mut Rng, n: u64| {
        if unique {
            1_000_000_000_000_000 + rng.below(9_000_000_000_000_000)
        } else {
            rng.below(n)
        }
    };
    match rng.below(20) {
        0..=5 => (
            "GET",
            format!("/api/v1/{module}/{}", id(rng, 99999)),
            status,
            1,
        ),
        6..=10 if unique && rng.chance(100) => (
            "GET",
            format!(
                "/api/v1/{module}?from={offset}&limit=100&from={}",
                rng.below(9999)
            ),
            status,
            tier(offset),
        ),
        6..=10 => (
            "GET",
            format!("/api/v1/{module}?from={offset}&limit=100"),
            status,
            tier(offset),
        ),
        11 => (
            "get",
            format!("/api/v1/{module}/?limit=50&from={offset}"),
            status,
            tier(offset),
        ),
        12 => (
            "GET",
            format!("/api/v1/{module}/{}/threads?from={offset}", id(rng, 999)),
            status,
            tier(offset),
        ),
        13 => (
            "GET",
            format!("/api/v1/search?searchStr=x&from={offset}"),
            status,
            tier(offset),
        ),
        14 => ("GET", "/api/v1/tasks/count".into(), status, 50),
        15 => (
            "POST",
            format!("/api/v1/{module}"),
            if status == 200 { 201 } else { status },
            1,
        ),
        16 => (
            "PATCH",
            format!("/api/v1/{module}/{}", id(rng, 999)),
            status,
            1,
        ),
        17 => (
            "Delete",
            format!("/api/v1/{module}/{}", id(rng, 999)),
            status,
            1,
        ),
        18 => ("GET", format!("/api/v1/{module}?from=abc"), status, 3),
        _ => ("GET", "/api/v2/reports/usage".into(), status, 1),
    }
}

fn exempt(status: u16) -> bool {
    status == 429 || status / 100 == 5
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dates = parse_dates(&args.dates)?;
    let (first, last) = (dates[0], *dates.last().expect("non-empty"));
    let mut rng = Rng(args.seed);
    std::fs::create_dir_all(args.out.join("inbox"))
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    let orgs = make_orgs(&mut rng, args.orgs, first, last, args.steady);
    let mut purchases = Vec::new();
    for (oi, o) in orgs.iter().enumerate() {
        if oi % 4 == 1 {
            let big = if oi % 8 == 1 { 400_000 } else { 20_000 };
            purchases.push(GenPurchase {
                id: format!("P-{}", purchases.len() + 1),
                org: oi,
                credits: big,
                from: first + Duration::days(1),
                to: last,
            });
            let _ = o;
        }
    }
    write_registry(&args.out, &orgs, &purchases)?;

    // Calls per org-day; some org-days are pushed near or over their allotment.
    let mut hot: HashMap<(usize, NaiveDate), u64> = HashMap::new();
    let targets = [85u64, 95, 112, 140];
    for k in 0..args.hot_days.min(orgs.len() * dates.len()) {
        // Every third hot day is a free org's: credits only, and cheap to push over.
        let free: Vec<usize> = (0..orgs.len())
            .filter(|i| orgs[*i].plans[0].edition == "free")
            .collect();
        let oi = if k % 3 == 0 && !free.is_empty() {
            *rng.pick(&free)
        } else {
            rng.below(orgs.len() as u64) as usize
        };
        let day = *rng.pick(&dates);
        hot.insert((oi, day), targets[k % targets.len()]);
    }
    let mut calls: Vec<Call> = Vec::new();
    let mut next_rid: u64 = 0;
    let mut rid = |rng: &mut Rng| {
        next_rid += 1;
        format!(
            "{:08x}-{:04x}-{}",
            rng.next() as u32,
            rng.below(0xffff),
            next_rid
        )
    };
    for (oi, o) in orgs.iter().enumerate() {
        for &day in &dates {
            if day < o.signup
                || (args.active_per_mille < 1000 && !rng.chance(args.active_per_mille))
            {
                continue;
            }
            let heavy = oi % 3 == 0;
            let n = args.calls_per_day / 2 + rng.below(args.calls_per_day + 1);
            let mut push = |rng: &mut Rng, kind: (&'static str, String, u16, u64)| {
                calls.push(Call {
                    ts: instant_on(rng, o.tz, day),
                    org: oi,
                    day,
                    rid: rid(rng),
                    method: kind.0,
                    path: kind.1,
                    status: kind.2,
                    credits: kind.3,
                    latency: 5 + rng.below(900),
                });
            };
            for _ in 0..n {
                let kind = call_kind(&mut rng, heavy, args.unique_ids);
                push(&mut rng, kind);
            }
            if let Some(pct) = hot.get(&(oi, day)) {
                let t = terms(o, &purchases, oi, day);
                let unit = if t.model == "legacy" { 1 } else { 50 };
                let extra = (t.allotted * pct / 100).div_ceil(unit);
                // Legacy limits of big plans would take too many calls to reach: skip those.
                let extra = if extra > 20_000 { 0 } else { extra };
                for _ in 0..extra {
                    push(&mut rng, ("GET", "/api/v1/tasks/count".into(), 200, 50));
                }
            }
        }
    }
    calls.sort_by(|a, b| (a.ts, &a.rid).cmp(&(b.ts, &b.rid)));
    let aside_window = args.aside.as_deref().map(parse_window).transpose()?;
    let mut aside: Vec<Call> = Vec::new();
    if let Some((from, to)) = aside_window {
        let (kept, set_aside): (Vec<Call>, Vec<Call>) =
            calls.into_iter().partition(|c| c.ts < from || c.ts >= to);
        calls = kept;
        aside = set_aside;
    }

    // Lines per file: time slices of gateway time (or files dealt at random, each spanning
    // every date), each with duplicates and bad lines mixed in.
    let slice_ms = args.hours_per_file * 3_600_000;
    let mut files: BTreeMap<i64, Vec<Line>> = BTreeMap::new();
    for c in calls {
        let key = match args.spread_files {
            Some(n) => rng.below(n as u64) as i64,
            None => c.ts.div_euclid(slice_ms),
        };
        files.entry(key).or_default().push(Line::Call(c));
    }
    let first_ms = first.and_time(NaiveTime::MIN).and_utc().timestamp_millis();
    let slices: Vec<i64> = files.keys().copied().collect();
    for (k, slice) in slices.iter().enumerate() {
        let lines = files.get_mut(slice).expect("listed");
        let n = lines.len();
        // Repeats of earlier calls of this file; the first occurrence stays the charged one.
        let mut dups = Vec::new();
        for line in lines.iter().take(n) {
            if rng.chance(args.dup_per_mille) {
                if let Line::Call(c) = line {
                    // A redelivery is a copy: same ts, org and request id. The draw that once
                    // shifted its ts is still made, so a seed's other data stays as it was.
                    let _ = rng.below(5000);
                    dups.push(Line::Dup(c.clone()));
                }
            }
        }
        lines.extend(dups);
        let at = match args.spread_files {
            Some(_) => first_ms + 12 * 3_600_000,
            None => slice * slice_ms + 1000,
        };
        for b in 0..args.bad_per_file {
            lines.push(bad_line(&mut rng, &orgs, b + k, at));
        }
        if args.shuffle {
            for i in (1..lines.len()).rev() {
                lines.swap(i, rng.below(i as u64 + 1) as usize);
            }
        }
    }

    let mut expected_files = String::from("file,lines,accepted,unique,duplicates,malformed,missing_field,bad_timestamp,bad_method,bad_status,unknown_org,before_signup,expired\n");
    // Dedupe is per org-day (DESIGN §2.1): (org, local date, request id).
    let mut claimed: HashSet<(usize, NaiveDate, String)> = HashSet::new();
    let mut charged: Vec<&Call> = Vec::new();
    let all_lines: Vec<(i64, Vec<Line>)> = files.into_iter().collect();
    for (k, (slice, lines)) in all_lines.iter().enumerate() {
        let ext = ["ndjson", "csv", "ndjson.gz", "csv.gz", "jsonl"][k % 5];
        let name = match args.spread_files {
            Some(_) => format!("gw{}-part{slice:03}.{ext}", 1 + k % 2),
            None => {
                let start =
                    DateTime::<Utc>::from_timestamp_millis(slice * slice_ms).expect("in range");
                format!("gw{}-{}.{ext}", 1 + k % 2, start.format("%Y%m%dT%H%M"))
            }
        };
        let csv = ext.starts_with("csv");
        let mut body = String::new();
        if csv {
            body.push_str(
                "request_id,ts,org_id,method,path,status,latency_ms,charged_credits,dc,gateway\n",
            );
        }
        // lines, accepted, unique, duplicates, then one count per reason (none is `expired`:
        // the generator sets no retention).
        let mut counts = [0u64; 12];
        for (j, line) in lines.iter().enumerate() {
            if j % 97 == 5 {
                body.push('\n'); // blank lines are skipped and not counted
            }
            counts[0] += 1;
            match line {
                Line::Call(c) | Line::Dup(c) => {
                    counts[1] += 1;
                    if claimed.insert((c.org, c.day, c.rid.clone())) {
                        counts[2] += 1;
                        charged.push(c);
                    } else {
                        counts[3] += 1;
                    }
                    body.push_str(&render_call(&mut rng, &orgs, c, csv));
                }
                Line::Bad {
                    reason,
                    json,
                    csv: csv_line,
                    ..
                } => {
                    let i = REASONS
                        .iter()
                        .position(|r| r == reason)
                        .expect("known reason");
                    counts[4 + i] += 1;
                    body.push_str(if csv { csv_line } else { json });
                }
            }
            body.push('\n');
        }
        let path = args.out.join("inbox").join(&name);
        if ext.ends_with(".gz") {
            let f = std::fs::File::create(&path)?;
            let mut gz = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
            gz.write_all(body.as_bytes())?;
            gz.finish()?;
        } else {
            std::fs::write(&path, body)?;
        }
        let c = counts.map(|v| v.to_string()).join(",");
        let _ = writeln!(expected_files, "{name},{c}");
    }
    if let Some((from, _)) = aside_window {
        let start = DateTime::<Utc>::from_timestamp_millis(from).expect("in range");
        let name = format!("late-{}.ndjson", start.format("%Y%m%dT%H%M"));
        let mut body = String::new();
        for c in &aside {
            // Set-aside calls are unique: their request ids appear nowhere else.
            claimed.insert((c.org, c.day, c.rid.clone()));
            charged.push(c);
            body.push_str(&render_call(&mut rng, &orgs, c, false));
            body.push('\n');
        }
        std::fs::create_dir_all(args.out.join("aside"))?;
        std::fs::write(args.out.join("aside").join(&name), body)?;
        let n = aside.len();
        let _ = writeln!(expected_files, "{name},{n},{n},{n},0,0,0,0,0,0,0,0,0");
    }
    std::fs::write(args.out.join("expected-files.csv"), expected_files)?;

    if !args.no_expected {
        let ledger = expected_ledger(&orgs, &purchases, &charged);
        std::fs::write(args.out.join("expected-ledger.csv"), ledger)?;
    }
    eprintln!(
        "creditd-gen: {} orgs, {} dates, {} files, {} calls charged, into {}",
        orgs.len(),
        dates.len(),
        all_lines.len(),
        charged.len(),
        args.out.display()
    );
    Ok(())
}

/// The reasons of the bad lines the generator writes (cycled). `expired` is not among them:
/// the generated setups keep events forever.
const REASONS: [&str; 7] = [
    "malformed",
    "missing_field",
    "bad_timestamp",
    "bad_method",
    "bad_status",
    "unknown_org",
    "before_signup",
];

fn render_call(rng: &mut Rng, orgs: &[GenOrg], c: &Call, csv: bool) -> String {
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
fn bad_line(rng: &mut Rng, orgs: &[GenOrg], k: usize, at: i64) -> Line {
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

fn expected_ledger(orgs: &[GenOrg], purchases: &[GenPurchase], charged: &[&Call]) -> String {
    let mut days: BTreeMap<(String, NaiveDate), Vec<&Call>> = BTreeMap::new();
    for c in charged {
        days.entry((orgs[c.org].id.clone(), c.day))
            .or_default()
            .push(c);
    }
    let mut out = String::from("org_id,local_date,model,edition,agents,calls,billable_calls,credits,base,variable,additional,legacy_limit,allotted,used,pct_used,overage,exceeded_at\n");
    for ((org_id, day), mut cs) in days {
        let oi = cs[0].org;
        let t = terms(&orgs[oi], purchases, oi, day);
        cs.sort_by(|a, b| (a.ts, &a.rid).cmp(&(b.ts, &b.rid)));
        let billable: Vec<&&Call> = cs.iter().filter(|c| !exempt(c.status)).collect();
        let credits: u64 = billable.iter().map(|c| c.credits).sum();
        let used = if t.model == "legacy" {
            billable.len() as u64
        } else {
            credits
        };
        let mut running = 0;
        let mut exceeded = String::new();
        for c in &billable {
            running += if t.model == "legacy" { 1 } else { c.credits };
            if running > t.allotted {
                exceeded = DateTime::<Utc>::from_timestamp_millis(c.ts)
                    .expect("in range")
                    .format("%Y-%m-%dT%H:%M:%S%.3fZ")
                    .to_string();
                break;
            }
        }
        // Percent in hundredths, rounded half up, by integer arithmetic.
        let h = (20_000 * used as u128 + t.allotted as u128) / (2 * t.allotted as u128);
        let _ = writeln!(
            out,
            "{org_id},{day},{},{},{},{},{},{credits},{},{},{},{},{},{used},{}.{:02},{},{exceeded}",
            t.model,
            t.edition,
            t.agents,
            cs.len(),
            billable.len(),
            t.base,
            t.variable,
            t.additional,
            t.legacy_limit,
            t.allotted,
            h / 100,
            h % 100,
            used.saturating_sub(t.allotted),
        );
    }
    out
}
