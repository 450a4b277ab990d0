//! The expected ledger, worked out from the generated registry and calls alone (never from
//! creditd's rules): the independent oracle the tests and the benchmark compare against.

use super::*;

/// The terms of an org-day, worked out from the generated registry.
pub(super) struct Terms {
    pub(super) model: &'static str,
    pub(super) edition: &'static str,
    pub(super) agents: u64,
    pub(super) base: u64,
    pub(super) variable: u64,
    pub(super) additional: u64,
    pub(super) legacy_limit: u64,
    pub(super) allotted: u64,
}

pub(super) fn terms(o: &GenOrg, purchases: &[GenPurchase], oi: usize, day: NaiveDate) -> Terms {
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

pub(super) fn exempt(status: u16) -> bool {
    status == 429 || status / 100 == 5
}

pub(super) fn expected_ledger(
    orgs: &[GenOrg],
    purchases: &[GenPurchase],
    charged: &[&Call],
) -> String {
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
