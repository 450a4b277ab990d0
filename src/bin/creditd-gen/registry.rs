//! The generated orgs, their plans and purchases, written as `orgs.csv` and
//! `credit-purchases.csv`.

use super::*;

pub(super) fn make_orgs(
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

pub(super) fn csv_quote(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

pub(super) fn write_registry(
    dir: &Path,
    orgs: &[GenOrg],
    purchases: &[GenPurchase],
) -> anyhow::Result<()> {
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
