//! What an org may use on a local day: its plan, its allotment and its model (DESIGN §3.1–§3.4).
//!
//! Pure code over plain data: the registry, purchases and editions arrive as values.

use std::collections::BTreeMap;
use std::fmt;

use chrono::NaiveDate;

/// The editions of DESIGN §2.2, in a fixed order.
pub const EDITIONS: [&str; 8] = [
    "free",
    "express",
    "standard",
    "professional",
    "enterprise",
    "zoho_one",
    "crm_plus",
    "service_plus",
];

/// The numbers of one edition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EditionTerms {
    pub base: u64,
    pub per_agent: u64,
    pub concurrency: u64,
    pub legacy_base: u64,
    pub legacy_per_agent: u64,
    pub additional_max_per_day: u64,
}

/// The most billable or light agents a plan may have (DESIGN §7).
pub const MAX_AGENTS: u64 = 1_000_000;

/// The most any daily figure read from the config or the registry may be: an edition's
/// numbers, a `legacy_daily_limit`, a purchase's `credits_per_day` (DESIGN §7). With
/// [`MAX_AGENTS`] it keeps every allotment below 1.000002 × 10^18, inside [`MAX_FIGURE`].
pub const MAX_DAILY: u64 = 1_000_000_000_000;

/// Built-in defaults. Credits come from DESIGN §3.1; the legacy limits and purchase caps are
/// not published, and are documented (with the reasoning) in the README.
pub fn default_edition(name: &str) -> Option<EditionTerms> {
    let (base, per_agent, concurrency, legacy_base, legacy_per_agent, additional_max_per_day) =
        match name {
            "free" => (5_000, 0, 5, 5_000, 0, 0),
            "express" => (25_000, 100, 10, 30_000, 150, 25_000),
            "standard" => (50_000, 250, 10, 60_000, 300, 50_000),
            "professional" => (75_000, 500, 15, 90_000, 600, 100_000),
            "enterprise" | "zoho_one" | "crm_plus" | "service_plus" => {
                (100_000, 1_000, 25, 120_000, 1_200, 200_000)
            }
            _ => return None,
        };
    Some(EditionTerms {
        base,
        per_agent,
        concurrency,
        legacy_base,
        legacy_per_agent,
        additional_max_per_day,
    })
}

/// One row of an org's plan history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub edition: String,
    pub agents: u64,
    pub light_agents: u64,
    pub paid: bool,
    pub legacy_daily_limit: Option<u64>,
    pub report_to: Vec<String>,
    pub name: String,
    /// `None` = from the org's signup date.
    pub effective_from: Option<NaiveDate>,
}

/// An organization: its fixed properties and its plan history.
#[derive(Debug, Clone)]
pub struct Org {
    pub org_id: String,
    pub timezone: chrono_tz::Tz,
    pub data_center: String,
    pub signup_date: NaiveDate,
    /// In file order.
    pub plans: Vec<Plan>,
}

impl Org {
    /// The plan in effect on local day `day`: the row with the greatest effective date not
    /// after `day`, the later row in the file winning ties. `None` before every row.
    pub fn plan_on(&self, day: NaiveDate) -> Option<&Plan> {
        let mut best: Option<(&Plan, NaiveDate)> = None;
        for plan in &self.plans {
            let from = plan.effective_from.unwrap_or(self.signup_date);
            if from <= day && best.is_none_or(|(_, b)| from >= b) {
                best = Some((plan, from));
            }
        }
        best.map(|(p, _)| p)
    }
}

/// A purchase of additional credits per day, valid on local dates `valid_from..=valid_to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Purchase {
    pub purchase_id: String,
    pub org_id: String,
    pub credits_per_day: u64,
    pub valid_from: NaiveDate,
    pub valid_to: NaiveDate,
}

/// The October 2025 migration settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    pub dc_cutover: BTreeMap<String, NaiveDate>,
    pub new_signup_cutoff: NaiveDate,
    pub grandfather_until: Option<NaiveDate>,
}

/// Under which model a day is counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Model {
    Legacy,
    Grandfathered,
    /// The model of every org after the migration, and so the default.
    #[default]
    Credits,
}

impl Model {
    pub fn as_str(self) -> &'static str {
        match self {
            Model::Legacy => "legacy",
            Model::Grandfathered => "grandfathered",
            Model::Credits => "credits",
        }
    }

    /// The model a stored name (`as_str`) stands for.
    pub fn parse(s: &str) -> Option<Model> {
        [Model::Legacy, Model::Grandfathered, Model::Credits]
            .into_iter()
            .find(|m| m.as_str() == s)
    }

    /// What a day under the model counts: each billable call on the legacy limit, else
    /// credits.
    pub fn unit(self) -> &'static str {
        match self {
            Model::Legacy => "calls",
            Model::Grandfathered | Model::Credits => "credits",
        }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything about an org-day that does not depend on its calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DayTerms {
    pub model: Model,
    /// One sentence: why this model applies.
    pub reason: String,
    pub edition: String,
    pub agents: u64,
    pub light_agents: u64,
    pub base: u64,
    pub variable: u64,
    pub additional: u64,
    /// Purchased credits above the edition's cap, reported and not granted.
    pub additional_excess: u64,
    pub legacy_limit: u64,
    pub allotted: u64,
    pub concurrency: u64,
}

/// Computes the terms of org-day (`org`, `day`); `None` when no plan is in effect that day.
pub fn day_terms(
    org: &Org,
    day: NaiveDate,
    editions: &BTreeMap<String, EditionTerms>,
    purchases: &[Purchase],
    migration: &Migration,
) -> Option<DayTerms> {
    let plan = org.plan_on(day)?;
    let ed = editions.get(&plan.edition)?;
    let base = ed.base.min(MAX_FIGURE);
    let variable = times(ed.per_agent, plan.agents);
    let purchased = purchases
        .iter()
        .filter(|p| p.org_id == org.org_id && p.valid_from <= day && day <= p.valid_to)
        .fold(0, |sum, p| plus(sum, p.credits_per_day));
    let additional = purchased.min(ed.additional_max_per_day);
    let legacy_limit = plan.legacy_daily_limit.map_or_else(
        || plus(ed.legacy_base, times(ed.legacy_per_agent, plan.agents)),
        |limit| limit.min(MAX_FIGURE),
    );
    let credit_allotment = plus(plus(base, variable), additional);

    let cutover = migration.dc_cutover.get(&org.data_center)?;
    let (model, allotted, reason) = if day < *cutover {
        (
            Model::Legacy,
            legacy_limit,
            format!(
                "data center {} moves to credits on {cutover}; until then each billable call counts 1",
                org.data_center
            ),
        )
    } else if org.signup_date < migration.new_signup_cutoff
        && plan.paid
        && migration.grandfather_until.is_none_or(|until| day <= until)
    {
        (
            Model::Grandfathered,
            plus(legacy_limit.max(plus(base, variable)), additional),
            format!(
                "paid org signed up {} before {}: keeps the higher of its legacy limit and its credits",
                org.signup_date, migration.new_signup_cutoff
            ),
        )
    } else {
        let why = if !plan.paid {
            "unpaid plan: credits only".to_string()
        } else if org.signup_date >= migration.new_signup_cutoff {
            format!(
                "signed up {} on or after {}: credits only",
                org.signup_date, migration.new_signup_cutoff
            )
        } else {
            format!(
                "grandfathering ended {}: credits only",
                migration.grandfather_until.expect("set when it ended")
            )
        };
        (Model::Credits, credit_allotment, why)
    };

    Some(DayTerms {
        model,
        reason,
        edition: plan.edition.clone(),
        agents: plan.agents,
        light_agents: plan.light_agents,
        base,
        variable,
        additional,
        additional_excess: purchased.saturating_sub(additional),
        legacy_limit,
        allotted,
        concurrency: ed.concurrency,
    })
}

/// The largest figure of an allotment: the most a signed 64-bit integer holds, as the store
/// and the event files keep them. `check` bounds every input far below it (DESIGN §7), so
/// only a bound that was bypassed reaches it; the figures then saturate here, never wrap.
pub const MAX_FIGURE: u64 = i64::MAX as u64;

/// `100 × used / allotted` in hundredths, rounded half up in integer arithmetic (u128, so
/// no `used` can overflow it). An allotment of 0 (which `check` prevents) reads as 0 % when
/// nothing was used and as the largest percentage otherwise; results beyond `u64` saturate.
pub fn pct_hundredths(used: u64, allotted: u64) -> u64 {
    if allotted == 0 {
        return if used == 0 { 0 } else { u64::MAX };
    }
    let used = u128::from(used);
    let allotted = u128::from(allotted);
    u64::try_from((20_000 * used + allotted) / (2 * allotted)).unwrap_or(u64::MAX)
}

/// Renders hundredths as a percentage with two decimals: `8000` → `80.00`.
pub fn format_pct(hundredths: u64) -> String {
    format!("{}.{:02}", hundredths / 100, hundredths % 100)
}

/// Whether `used` has reached `threshold` percent of `allotted`, compared exactly.
/// Both sides are products of two `u64`s in `u128`, which cannot overflow.
pub fn reached(used: u64, allotted: u64, threshold: u64) -> bool {
    100 * u128::from(used) >= u128::from(threshold) * u128::from(allotted)
}

/// `a + b`, saturating at [`MAX_FIGURE`].
fn plus(a: u64, b: u64) -> u64 {
    a.saturating_add(b).min(MAX_FIGURE)
}

/// `a × b`, saturating at [`MAX_FIGURE`].
fn times(a: u64, b: u64) -> u64 {
    a.saturating_mul(b).min(MAX_FIGURE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn plan(edition: &str, agents: u64, paid: bool, from: Option<&str>) -> Plan {
        Plan {
            edition: edition.to_string(),
            agents,
            light_agents: 2,
            paid,
            legacy_daily_limit: None,
            report_to: vec![],
            name: "Acme".to_string(),
            effective_from: from.map(d),
        }
    }

    fn org(dc: &str, signup: &str, plans: Vec<Plan>) -> Org {
        Org {
            org_id: "100".to_string(),
            timezone: chrono_tz::UTC,
            data_center: dc.to_string(),
            signup_date: d(signup),
            plans,
        }
    }

    fn editions() -> BTreeMap<String, EditionTerms> {
        EDITIONS
            .iter()
            .map(|e| (e.to_string(), default_edition(e).unwrap()))
            .collect()
    }

    fn migration(until: Option<&str>) -> Migration {
        Migration {
            dc_cutover: [
                ("us", "2025-10-06"),
                ("eu", "2025-10-07"),
                ("au", "2025-10-08"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), d(v)))
            .collect(),
            new_signup_cutoff: d("2025-10-30"),
            grandfather_until: until.map(d),
        }
    }

    fn purchase(credits: u64, from: &str, to: &str) -> Purchase {
        Purchase {
            purchase_id: format!("p{credits}"),
            org_id: "100".to_string(),
            credits_per_day: credits,
            valid_from: d(from),
            valid_to: d(to),
        }
    }

    /// Renders the terms of one day as `model allotted = base+variable+additional | legacy`.
    fn check(o: &Org, day: &str, purchases: &[Purchase], until: Option<&str>, expect: &str) {
        let t = day_terms(o, d(day), &editions(), purchases, &migration(until));
        let got = match t {
            None => "none".to_string(),
            Some(t) => format!(
                "{} {} = {}+{}+{} | legacy {}",
                t.model, t.allotted, t.base, t.variable, t.additional, t.legacy_limit
            ),
        };
        assert_eq!(got, expect, "{day}");
    }

    #[test]
    fn legacy_before_the_data_center_cutover() {
        let o = org(
            "eu",
            "2024-01-01",
            vec![plan("professional", 10, true, None)],
        );
        check(
            &o,
            "2025-10-06",
            &[],
            None,
            "legacy 96000 = 75000+5000+0 | legacy 96000",
        );
        check(
            &o,
            "2025-10-07",
            &[],
            None,
            "grandfathered 96000 = 75000+5000+0 | legacy 96000",
        );
    }

    #[test]
    fn grandfathered_takes_the_higher_capacity_plus_purchases() {
        let mut o = org(
            "us",
            "2025-01-01",
            vec![plan("professional", 100, true, None)],
        );
        // Credits 75000 + 50000 = 125000 beat legacy 90000 + 60000 = 150000? No: legacy wins.
        check(
            &o,
            "2025-10-10",
            &[purchase(1000, "2025-10-10", "2025-10-10")],
            None,
            "grandfathered 151000 = 75000+50000+1000 | legacy 150000",
        );
        o.plans[0].legacy_daily_limit = Some(10);
        check(
            &o,
            "2025-10-10",
            &[],
            None,
            "grandfathered 125000 = 75000+50000+0 | legacy 10",
        );
    }

    #[test]
    fn credits_for_unpaid_late_signups_and_after_grandfathering() {
        let unpaid = org("us", "2025-01-01", vec![plan("free", 0, false, None)]);
        check(
            &unpaid,
            "2025-10-10",
            &[],
            None,
            "credits 5000 = 5000+0+0 | legacy 5000",
        );
        let late = org("us", "2025-10-30", vec![plan("standard", 4, true, None)]);
        check(
            &late,
            "2025-11-01",
            &[],
            None,
            "credits 51000 = 50000+1000+0 | legacy 61200",
        );
        let early = org("us", "2025-10-29", vec![plan("standard", 4, true, None)]);
        check(
            &early,
            "2025-11-01",
            &[],
            Some("2026-10-30"),
            "grandfathered 61200 = 50000+1000+0 | legacy 61200",
        );
        check(
            &early,
            "2026-10-30",
            &[],
            Some("2026-10-30"),
            "grandfathered 61200 = 50000+1000+0 | legacy 61200",
        );
        check(
            &early,
            "2026-10-31",
            &[],
            Some("2026-10-30"),
            "credits 51000 = 50000+1000+0 | legacy 61200",
        );
    }

    #[test]
    fn eligibility_follows_the_plan_of_the_day() {
        let o = org(
            "us",
            "2025-06-01",
            vec![
                plan("express", 1, true, None),
                plan("express", 1, false, Some("2025-10-20")),
                plan("enterprise", 3, true, Some("2025-11-01")),
            ],
        );
        check(
            &o,
            "2025-10-19",
            &[],
            None,
            "grandfathered 30150 = 25000+100+0 | legacy 30150",
        );
        check(
            &o,
            "2025-10-20",
            &[],
            None,
            "credits 25100 = 25000+100+0 | legacy 30150",
        );
        check(
            &o,
            "2025-11-01",
            &[],
            None,
            "grandfathered 123600 = 100000+3000+0 | legacy 123600",
        );
    }

    #[test]
    fn plan_history_ties_and_rows_before_signup() {
        let o = org(
            "us",
            "2025-10-10",
            vec![
                plan("standard", 1, true, Some("2025-09-01")),
                plan("express", 1, true, Some("2025-10-12")),
                plan("enterprise", 1, true, Some("2025-10-12")),
            ],
        );
        assert_eq!(o.plan_on(d("2025-10-10")).unwrap().edition, "standard");
        assert_eq!(o.plan_on(d("2025-10-12")).unwrap().edition, "enterprise");
        assert!(o.plan_on(d("2025-08-31")).is_none());
        // An empty effective date means the signup date.
        let o = org("us", "2025-10-10", vec![plan("free", 0, false, None)]);
        assert!(o.plan_on(d("2025-10-09")).is_none());
        assert!(o.plan_on(d("2025-10-10")).is_some());
    }

    #[test]
    fn purchases_sum_and_are_capped() {
        let o = org("us", "2025-11-01", vec![plan("express", 0, true, None)]);
        let ps = [
            purchase(20_000, "2025-11-01", "2025-11-05"),
            purchase(10_000, "2025-11-05", "2025-11-06"),
        ];
        check(
            &o,
            "2025-11-04",
            &ps,
            None,
            "credits 45000 = 25000+0+20000 | legacy 30000",
        );
        // 30000 bought, the express cap is 25000: the excess is reported, not granted.
        let t = day_terms(&o, d("2025-11-05"), &editions(), &ps, &migration(None)).unwrap();
        assert_eq!((t.additional, t.additional_excess), (25_000, 5_000));
        check(
            &o,
            "2025-11-06",
            &ps,
            None,
            "credits 35000 = 25000+0+10000 | legacy 30000",
        );
        check(
            &o,
            "2025-11-07",
            &ps,
            None,
            "credits 25000 = 25000+0+0 | legacy 30000",
        );
    }

    #[test]
    fn percentages_round_half_up_and_thresholds_compare_exactly() {
        assert_eq!(format_pct(pct_hundredths(0, 7)), "0.00");
        assert_eq!(format_pct(pct_hundredths(1, 3)), "33.33");
        assert_eq!(format_pct(pct_hundredths(2, 3)), "66.67");
        assert_eq!(format_pct(pct_hundredths(1, 8)), "12.50");
        assert_eq!(format_pct(pct_hundredths(1, 80_000)), "0.00"); // 0.00125 rounds down
        assert_eq!(format_pct(pct_hundredths(1, 20_000)), "0.01"); // 0.005 rounds up
        assert_eq!(format_pct(pct_hundredths(150, 100)), "150.00");
        // 79.995 % rounds to 80.00 but has not reached 80 %.
        assert_eq!(format_pct(pct_hundredths(15_999, 20_000)), "80.00");
        assert!(!reached(15_999, 20_000, 80));
        assert!(reached(16_000, 20_000, 80));
    }

    #[test]
    fn allotments_at_the_bounds_are_exact() {
        let big = EditionTerms {
            base: MAX_DAILY,
            per_agent: MAX_DAILY,
            concurrency: MAX_DAILY,
            legacy_base: MAX_DAILY,
            legacy_per_agent: MAX_DAILY,
            additional_max_per_day: MAX_DAILY,
        };
        let eds: BTreeMap<String, EditionTerms> = [("enterprise".to_string(), big)].into();
        let o = org(
            "us",
            "2025-01-01",
            vec![plan("enterprise", MAX_AGENTS, true, None)],
        );
        let ps = [
            purchase(MAX_DAILY, "2025-11-01", "2025-11-01"),
            purchase(MAX_DAILY - 1, "2025-11-01", "2025-11-01"),
        ];
        let t = day_terms(&o, d("2025-11-01"), &eds, &ps, &migration(None)).unwrap();
        assert_eq!(t.model, Model::Grandfathered);
        assert_eq!(t.variable, 1_000_000_000_000_000_000);
        assert_eq!(t.legacy_limit, 1_000_001_000_000_000_000);
        assert_eq!(
            (t.additional, t.additional_excess),
            (MAX_DAILY, MAX_DAILY - 1)
        );
        assert_eq!(t.allotted, 1_000_002_000_000_000_000);
        assert!(t.allotted < MAX_FIGURE);
    }

    #[test]
    fn figures_beyond_the_bounds_saturate_instead_of_wrapping() {
        let huge = EditionTerms {
            base: u64::MAX,
            per_agent: u64::MAX,
            concurrency: u64::MAX,
            legacy_base: u64::MAX,
            legacy_per_agent: u64::MAX,
            additional_max_per_day: u64::MAX,
        };
        let eds: BTreeMap<String, EditionTerms> = [("enterprise".to_string(), huge)].into();
        let o = org(
            "us",
            "2025-01-01",
            vec![plan("enterprise", u64::MAX, true, None)],
        );
        let ps = [
            purchase(u64::MAX, "2025-11-01", "2025-11-01"),
            purchase(u64::MAX - 1, "2025-11-01", "2025-11-01"),
        ];
        for (day, model) in [
            ("2025-10-01", Model::Legacy),
            ("2025-11-01", Model::Grandfathered),
        ] {
            let t = day_terms(&o, d(day), &eds, &ps, &migration(None)).unwrap();
            assert_eq!(t.model, model);
            assert_eq!(
                (t.base, t.variable, t.legacy_limit, t.allotted),
                (MAX_FIGURE, MAX_FIGURE, MAX_FIGURE, MAX_FIGURE),
                "{day}"
            );
        }
        let mut o = o;
        o.plans[0].paid = false;
        o.plans[0].legacy_daily_limit = Some(u64::MAX);
        let t = day_terms(&o, d("2025-11-01"), &eds, &ps, &migration(None)).unwrap();
        assert_eq!(t.model, Model::Credits);
        assert_eq!((t.legacy_limit, t.allotted), (MAX_FIGURE, MAX_FIGURE));
        assert_eq!(t.additional_excess, 0);
    }

    #[test]
    fn percentages_of_huge_usage_saturate_and_never_panic() {
        // 20000 × used would overflow u64 for any used above 9.2 × 10^14.
        assert_eq!(pct_hundredths(10_u64.pow(15), 10_u64.pow(15)), 10_000);
        assert_eq!(format_pct(pct_hundredths(u64::MAX, u64::MAX)), "100.00");
        assert_eq!(pct_hundredths(u64::MAX, 1), u64::MAX);
        // (20000 × (2^64 − 1) + 20000) / 40000 = 2^63, exactly.
        assert_eq!(pct_hundredths(u64::MAX, 20_000), 1 << 63);
        assert_eq!(pct_hundredths(0, 0), 0);
        assert_eq!(pct_hundredths(1, 0), u64::MAX);
        assert!(reached(u64::MAX, u64::MAX, 99));
        assert!(reached(u64::MAX, u64::MAX, 100));
        assert!(!reached(u64::MAX - 1, u64::MAX, 100));
        assert!(!reached(0, u64::MAX, 1));
    }
}
