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

mod lines;
mod oracle;
mod registry;
use lines::{bad_line, render_call, REASONS};
use oracle::{exempt, expected_ledger, terms};
use registry::{csv_quote, make_orgs, write_registry};

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
