//! The org registry (`orgs.csv`) and additional credit purchases (`credit-purchases.csv`).
//!
//! Both are ordinary RFC 4180 CSV: quoted fields may hold commas, quotes and newlines. Every
//! problem is collected with its file, line and field, so `creditd check` shows them all at once.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::Path;

use chrono::NaiveDate;
use chrono_tz::Tz;

use crate::allotment::{Org, Plan, Purchase, MAX_AGENTS, MAX_DAILY};

/// One problem in an input file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: String,
    pub line: Option<u64>,
    pub field: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field {field}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The orgs and purchases, valid rows only; problems are listed beside them.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    pub orgs: BTreeMap<String, Org>,
    pub purchases: Vec<Purchase>,
}

/// The columns of `orgs.csv`, in the documented order.
pub const ORG_COLUMNS: [&str; 12] = [
    "org_id",
    "name",
    "edition",
    "agents",
    "light_agents",
    "timezone",
    "data_center",
    "signup_date",
    "paid",
    "legacy_daily_limit",
    "report_to",
    "effective_from",
];

/// The columns of `credit-purchases.csv`.
pub const PURCHASE_COLUMNS: [&str; 5] = [
    "purchase_id",
    "org_id",
    "credits_per_day",
    "valid_from",
    "valid_to",
];

/// What the registry is checked against.
pub struct RegistryRules<'a> {
    pub editions: &'a [String],
    pub data_centers: &'a [String],
}

/// Loads `orgs.csv` and `credit-purchases.csv`; returns the valid rows and every problem.
/// A missing purchases file means no purchases.
pub fn load(orgs: &Path, purchases: &Path, rules: &RegistryRules) -> (Registry, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut registry = Registry::default();
    match std::fs::read(orgs) {
        Ok(bytes) => {
            registry.orgs = parse_orgs(&orgs.display().to_string(), &bytes, rules, &mut problems)
        }
        Err(e) => problems.push(Problem {
            file: orgs.display().to_string(),
            line: None,
            field: None,
            message: format!("cannot read the org registry: {e}"),
        }),
    }
    match std::fs::read(purchases) {
        Ok(bytes) => {
            registry.purchases = parse_purchases(
                &purchases.display().to_string(),
                &bytes,
                &registry.orgs,
                &mut problems,
            )
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => problems.push(Problem {
            file: purchases.display().to_string(),
            line: None,
            field: None,
            message: format!("cannot read the purchases file: {e}"),
        }),
    }
    (registry, problems)
}

/// A CSV record and the line it starts on.
type NumberedRecord = (u64, csv::StringRecord);

/// A reader over CSV rows that reports problems against the file's line numbers.
struct Rows<'a> {
    file: &'a str,
    problems: &'a mut Vec<Problem>,
}

impl Rows<'_> {
    fn problem(&mut self, line: u64, field: &str, message: String) {
        self.problems.push(Problem {
            file: self.file.to_string(),
            line: Some(line),
            field: Some(field.to_string()),
            message,
        });
    }

    /// Reads the header, checks that `columns` are present, and yields (line, record).
    fn read(
        &mut self,
        bytes: &[u8],
        columns: &[&str],
    ) -> Option<(Vec<usize>, Vec<NumberedRecord>)> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(true)
            .from_reader(bytes);
        let header = match reader.headers() {
            Ok(h) => h.clone(),
            Err(e) => {
                self.problems.push(Problem {
                    file: self.file.to_string(),
                    line: Some(1),
                    field: None,
                    message: format!("cannot read the header: {e}"),
                });
                return None;
            }
        };
        let mut index = Vec::new();
        for col in columns {
            match header.iter().position(|h| h.trim() == *col) {
                Some(i) => index.push(i),
                None => {
                    self.problems.push(Problem {
                        file: self.file.to_string(),
                        line: Some(1),
                        field: Some(col.to_string()),
                        message: format!(
                            "missing column; the header must name {}",
                            columns.join(",")
                        ),
                    });
                    return None;
                }
            }
        }
        let mut rows = Vec::new();
        let mut record = csv::StringRecord::new();
        loop {
            let line = reader.position().line();
            match reader.read_record(&mut record) {
                Ok(false) => break,
                Ok(true) => {
                    if record.iter().all(|f| f.trim().is_empty()) {
                        continue;
                    }
                    let line = record.position().map_or(line, |p| p.line());
                    rows.push((line, record.clone()));
                }
                Err(e) => {
                    let line = e.position().map_or(line, |p| p.line());
                    self.problems.push(Problem {
                        file: self.file.to_string(),
                        line: Some(line),
                        field: None,
                        message: format!("not a CSV record: {e}"),
                    });
                    if !matches!(e.kind(), csv::ErrorKind::Utf8 { .. }) {
                        break;
                    }
                }
            }
        }
        Some((index, rows))
    }
}

fn field<'r>(record: &'r csv::StringRecord, index: &[usize], i: usize) -> &'r str {
    record.get(index[i]).unwrap_or("").trim()
}

fn parse_date(s: &str) -> Result<NaiveDate, String> {
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map_err(|_| format!("expected a date like 2025-10-06, found {s:?}"))
}

/// A whole number from 0 to `max` (DESIGN §7 bounds what the registry may say).
fn parse_count(s: &str, max: u64) -> Result<u64, String> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("expected a whole number ≥ 0, found {s:?}"));
    }
    match s.parse::<u64>() {
        Ok(n) if n <= max => Ok(n),
        _ => Err(format!("expected a whole number up to {max}, found {s:?}")),
    }
}

fn parse_orgs(
    file: &str,
    bytes: &[u8],
    rules: &RegistryRules,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, Org> {
    let mut rows = Rows { file, problems };
    let Some((index, records)) = rows.read(bytes, &ORG_COLUMNS) else {
        return BTreeMap::new();
    };
    let mut orgs: BTreeMap<String, Org> = BTreeMap::new();
    // Where each org's fixed properties were first stated, for conflict messages.
    let mut first_line: BTreeMap<String, u64> = BTreeMap::new();
    for (line, rec) in records {
        let f = |i| field(&rec, &index, i);
        let before = rows.problems.len();
        let org_id = f(0);
        if org_id.is_empty() || !org_id.bytes().all(|b| b.is_ascii_digit()) {
            rows.problem(line, "org_id", format!("expected digits, found {org_id:?}"));
        }
        let name = rec.get(index[1]).unwrap_or("").to_string();
        let edition = f(2).to_string();
        if !rules.editions.contains(&edition) {
            rows.problem(
                line,
                "edition",
                format!(
                    "expected one of {}, found {edition:?}",
                    rules.editions.join(", ")
                ),
            );
        }
        let agents = parse_count(f(3), MAX_AGENTS)
            .map_err(|m| rows.problem(line, "agents", m))
            .ok();
        let light_agents = if f(4).is_empty() {
            Some(0)
        } else {
            parse_count(f(4), MAX_AGENTS)
                .map_err(|m| rows.problem(line, "light_agents", m))
                .ok()
        };
        let tz: Option<Tz> = f(5)
            .parse()
            .map_err(|_| {
                rows.problem(
                    line,
                    "timezone",
                    format!(
                        "expected an IANA time zone like Europe/Berlin, found {:?}",
                        f(5)
                    ),
                )
            })
            .ok();
        let dc = f(6).to_string();
        if !rules.data_centers.contains(&dc) {
            rows.problem(
                line,
                "data_center",
                format!(
                    "{dc:?} has no [migration] dc_cutover date (known: {}); add one rather than guess",
                    rules.data_centers.join(", ")
                ),
            );
        }
        let signup = parse_date(f(7))
            .map_err(|m| rows.problem(line, "signup_date", m))
            .ok();
        let paid = match f(8).to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            other => {
                rows.problem(
                    line,
                    "paid",
                    format!("expected true or false, found {other:?}"),
                );
                None
            }
        };
        let legacy = if f(9).is_empty() {
            Some(None)
        } else {
            match parse_count(f(9), MAX_DAILY) {
                Ok(0) => {
                    rows.problem(
                        line,
                        "legacy_daily_limit",
                        "expected a positive limit or empty, found 0".into(),
                    );
                    None
                }
                Ok(n) => Some(Some(n)),
                Err(m) => {
                    rows.problem(line, "legacy_daily_limit", m);
                    None
                }
            }
        };
        let mut report_to = Vec::new();
        for addr in f(10).split(';').map(str::trim).filter(|a| !a.is_empty()) {
            match crate::address::check_recipient(addr) {
                Ok(()) => report_to.push(addr.to_string()),
                Err(why) => rows.problem(
                    line,
                    "report_to",
                    format!("expected ';'-separated mail addresses, found {addr:?} ({why})"),
                ),
            }
        }
        let effective_from = if f(11).is_empty() {
            Some(None)
        } else {
            parse_date(f(11))
                .map(Some)
                .map_err(|m| rows.problem(line, "effective_from", m))
                .ok()
        };
        if rows.problems.len() > before {
            continue;
        }
        let (
            Some(agents),
            Some(light_agents),
            Some(tz),
            Some(signup),
            Some(paid),
            Some(legacy),
            Some(effective_from),
        ) = (
            agents,
            light_agents,
            tz,
            signup,
            paid,
            legacy,
            effective_from,
        )
        else {
            continue;
        };
        let plan = Plan {
            edition,
            agents,
            light_agents,
            paid,
            legacy_daily_limit: legacy,
            report_to,
            name,
            effective_from,
        };
        match orgs.get_mut(org_id) {
            None => {
                first_line.insert(org_id.to_string(), line);
                orgs.insert(
                    org_id.to_string(),
                    Org {
                        org_id: org_id.to_string(),
                        timezone: tz,
                        data_center: dc,
                        signup_date: signup,
                        plans: vec![plan],
                    },
                );
            }
            Some(org) => {
                let first = first_line[org_id];
                let mut conflict = |field: &str, was: String, now: String| {
                    rows.problem(
                        line,
                        field,
                        format!("org {org_id} has {field} {was} on line {first} but {now} here; it must be the same on every row"),
                    );
                };
                if org.timezone != tz {
                    conflict("timezone", org.timezone.name().into(), tz.name().into());
                } else if org.signup_date != signup {
                    conflict(
                        "signup_date",
                        org.signup_date.to_string(),
                        signup.to_string(),
                    );
                } else if org.data_center != dc {
                    conflict("data_center", org.data_center.clone(), dc);
                } else {
                    org.plans.push(plan);
                }
            }
        }
    }
    // Every day from signup on needs a plan: an org whose rows all take effect later has a gap.
    for (org_id, org) in &orgs {
        if org.plan_on(org.signup_date).is_none() {
            let earliest = org
                .plans
                .iter()
                .filter_map(|p| p.effective_from)
                .min()
                .expect("a plan without a date starts at signup");
            rows.problem(
                first_line[org_id],
                "effective_from",
                format!(
                    "org {org_id} has no plan from its signup_date {} until {earliest}; add a row with an empty or earlier effective_from",
                    org.signup_date
                ),
            );
        }
    }
    orgs
}

fn parse_purchases(
    file: &str,
    bytes: &[u8],
    orgs: &BTreeMap<String, Org>,
    problems: &mut Vec<Problem>,
) -> Vec<Purchase> {
    let mut rows = Rows { file, problems };
    let Some((index, records)) = rows.read(bytes, &PURCHASE_COLUMNS) else {
        return Vec::new();
    };
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for (line, rec) in records {
        let f = |i| field(&rec, &index, i);
        let before = rows.problems.len();
        let id = f(0).to_string();
        if id.is_empty() {
            rows.problem(
                line,
                "purchase_id",
                "expected a purchase id, found nothing".into(),
            );
        } else if !seen.insert(id.clone()) {
            rows.problem(line, "purchase_id", format!("{id:?} appears twice"));
        }
        let org_id = f(1).to_string();
        if !orgs.contains_key(&org_id) {
            rows.problem(
                line,
                "org_id",
                format!("{org_id:?} is not in the org registry"),
            );
        }
        let credits = parse_count(f(2), MAX_DAILY)
            .map_err(|m| rows.problem(line, "credits_per_day", m))
            .ok();
        let from = parse_date(f(3))
            .map_err(|m| rows.problem(line, "valid_from", m))
            .ok();
        let to = parse_date(f(4))
            .map_err(|m| rows.problem(line, "valid_to", m))
            .ok();
        if let (Some(a), Some(b)) = (from, to) {
            if b < a {
                rows.problem(line, "valid_to", format!("{b} is before valid_from {a}"));
            }
        }
        if rows.problems.len() > before {
            continue;
        }
        out.push(Purchase {
            purchase_id: id,
            org_id,
            credits_per_day: credits.expect("checked"),
            valid_from: from.expect("checked"),
            valid_to: to.expect("checked"),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "org_id,name,edition,agents,light_agents,timezone,data_center,signup_date,paid,legacy_daily_limit,report_to,effective_from\n";

    fn parse(body: &str) -> (BTreeMap<String, Org>, Vec<String>) {
        let editions: Vec<String> = crate::allotment::EDITIONS
            .iter()
            .map(|s| s.to_string())
            .collect();
        let dcs = vec!["us".to_string(), "eu".to_string()];
        let rules = RegistryRules {
            editions: &editions,
            data_centers: &dcs,
        };
        let mut problems = Vec::new();
        let text = format!("{HEADER}{body}");
        let orgs = parse_orgs("orgs.csv", text.as_bytes(), &rules, &mut problems);
        (orgs, problems.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn quoted_names_with_commas_quotes_and_newlines() {
        let (orgs, problems) = parse(
            "100,\"Acme, \"\"Inc\"\"\nEast\",professional,10,2,Europe/Berlin,eu,2024-01-01,true,,a@x.com;b@x.com,\n\
             101,Beta,free,0,,UTC,us,2025-11-01,false,,,\n",
        );
        assert_eq!(problems, Vec::<String>::new());
        assert_eq!(orgs["100"].plans[0].name, "Acme, \"Inc\"\nEast");
        assert_eq!(orgs["100"].plans[0].report_to, vec!["a@x.com", "b@x.com"]);
        assert_eq!(orgs["101"].plans[0].light_agents, 0);
    }

    #[test]
    fn every_problem_names_line_and_field() {
        let (orgs, problems) = parse(
            "10x,A,gold,ten,0,Mars/Base,mars,2024-13-01,yes,0,not-an-address,01/02/2025\n\
             200,B,free,0,0,UTC,us,2025-01-01,false,,,\n\
             200,B,free,0,0,Europe/Paris,us,2025-01-01,false,,,2025-02-01\n",
        );
        assert_eq!(
            problems,
            vec![
                "orgs.csv:2: field org_id: expected digits, found \"10x\"",
                "orgs.csv:2: field edition: expected one of free, express, standard, professional, enterprise, zoho_one, crm_plus, service_plus, found \"gold\"",
                "orgs.csv:2: field agents: expected a whole number ≥ 0, found \"ten\"",
                "orgs.csv:2: field timezone: expected an IANA time zone like Europe/Berlin, found \"Mars/Base\"",
                "orgs.csv:2: field data_center: \"mars\" has no [migration] dc_cutover date (known: us, eu); add one rather than guess",
                "orgs.csv:2: field signup_date: expected a date like 2025-10-06, found \"2024-13-01\"",
                "orgs.csv:2: field paid: expected true or false, found \"yes\"",
                "orgs.csv:2: field legacy_daily_limit: expected a positive limit or empty, found 0",
                "orgs.csv:2: field report_to: expected ';'-separated mail addresses, found \"not-an-address\" (Missing domain or user)",
                "orgs.csv:2: field effective_from: expected a date like 2025-10-06, found \"01/02/2025\"",
                "orgs.csv:4: field timezone: org 200 has timezone UTC on line 3 but Europe/Paris here; it must be the same on every row",
            ]
        );
        assert_eq!(orgs.keys().collect::<Vec<_>>(), vec!["200"]);
    }

    #[test]
    fn purchases_are_checked_against_the_registry() {
        let (orgs, _) = parse("200,B,free,0,0,UTC,us,2025-01-01,false,,,\n");
        let mut problems = Vec::new();
        let text = "purchase_id,org_id,credits_per_day,valid_from,valid_to\n\
                    p1,200,1000,2025-10-01,2025-10-31\n\
                    p1,201,-5,2025-10-01,2025-09-30\n";
        let ps = parse_purchases("p.csv", text.as_bytes(), &orgs, &mut problems);
        assert_eq!(ps.len(), 1);
        let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            vec![
                "p.csv:3: field purchase_id: \"p1\" appears twice",
                "p.csv:3: field org_id: \"201\" is not in the org registry",
                "p.csv:3: field credits_per_day: expected a whole number ≥ 0, found \"-5\"",
                "p.csv:3: field valid_to: 2025-09-30 is before valid_from 2025-10-01",
            ]
        );
    }

    #[test]
    fn counts_are_bounded_and_addresses_are_read_as_sending_reads_them() {
        let (orgs, problems) = parse(
            "300,A,free,1000000,1000000,UTC,us,2025-01-01,false,1000000000000,a@x.example; ;b@localhost,\n\
             301,B,free,1000001,18446744073709551616,UTC,us,2025-01-01,false,1000000000001,,\n\
             302,C,free,18446744073709551615,0,UTC,us,2025-01-01,false,,\"billing..team@acme.example;nobody;\"\"a,b\"\"@x.example;Ann <ann@x.example>\",\n",
        );
        assert_eq!(
            problems,
            vec![
                "orgs.csv:3: field agents: expected a whole number up to 1000000, found \"1000001\"",
                "orgs.csv:3: field light_agents: expected a whole number up to 1000000, found \"18446744073709551616\"",
                "orgs.csv:3: field legacy_daily_limit: expected a whole number up to 1000000000000, found \"1000000000001\"",
                "orgs.csv:4: field agents: expected a whole number up to 1000000, found \"18446744073709551615\"",
                "orgs.csv:4: field report_to: expected ';'-separated mail addresses, found \"billing..team@acme.example\" (Invalid email user)",
                "orgs.csv:4: field report_to: expected ';'-separated mail addresses, found \"nobody\" (Missing domain or user)",
                "orgs.csv:4: field report_to: expected ';'-separated mail addresses, found \"\\\"a,b\\\"@x.example\" (a comma separates addresses)",
                "orgs.csv:4: field report_to: expected ';'-separated mail addresses, found \"Ann <ann@x.example>\" (Invalid email user)",
            ]
        );
        let plan = &orgs["300"].plans[0];
        assert_eq!((plan.agents, plan.light_agents), (1_000_000, 1_000_000));
        assert_eq!(plan.legacy_daily_limit, Some(1_000_000_000_000));
        assert_eq!(plan.report_to, vec!["a@x.example", "b@localhost"]);

        let mut problems = Vec::new();
        let text = "purchase_id,org_id,credits_per_day,valid_from,valid_to\n\
                    p1,300,1000000000000,2025-10-01,2025-10-31\n\
                    p2,300,1000000000001,2025-10-01,2025-10-31\n";
        let ps = parse_purchases("p.csv", text.as_bytes(), &orgs, &mut problems);
        assert_eq!(ps.len(), 1);
        assert_eq!(ps[0].credits_per_day, 1_000_000_000_000);
        let shown: Vec<String> = problems.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            vec!["p.csv:3: field credits_per_day: expected a whole number up to 1000000000000, found \"1000000000001\""]
        );
    }
}
