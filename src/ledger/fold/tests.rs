//! Adding new calls to a stored row gives exactly the row worked out from all the day's calls,
//! or declines.

use proptest::prelude::*;

use super::*;
use crate::events::{added_of, figures_of, Measure};

/// Calls as (ts, request_id, billable, credits), all of org "o".
type Calls = Vec<(i64, String, bool, i64)>;

fn terms(model: Model, allotted: u64) -> DayTerms {
    DayTerms {
        model,
        reason: String::new(),
        edition: "standard".to_string(),
        agents: 0,
        light_agents: 0,
        base: allotted,
        variable: 0,
        additional: 0,
        additional_excess: 0,
        legacy_limit: allotted,
        allotted,
        concurrency: 10,
    }
}

fn rows(calls: &Calls) -> Vec<(&str, i64, &str, bool, i64)> {
    calls
        .iter()
        .map(|(ts, rid, billable, credits)| ("o", *ts, rid.as_str(), *billable, *credits))
        .collect()
}

/// The row and crossings worked out from all of `calls` in one reading, as the day query does.
fn whole(calls: &Calls, terms: &DayTerms, thresholds: &[u64]) -> Option<Computed> {
    let measure = Measure {
        org_id: "o".to_string(),
        legacy: terms.model == Model::Legacy,
        allotted: terms.allotted,
    };
    let f = figures_of(&rows(calls), &[measure], thresholds).pop()?;
    let day = NaiveDate::from_ymd_opt(2025, 11, 2).unwrap();
    Some(Computed::new(&f, day, terms))
}

/// `old` stored under `stored_terms`, then `new` added to it under `terms`.
fn folded(
    old: &Calls,
    new: &Calls,
    stored_terms: &DayTerms,
    terms: &DayTerms,
    thresholds: &[u64],
) -> Option<Computed> {
    let before = whole(old, stored_terms, thresholds).expect("old calls");
    let stored = Stored {
        row: before.row,
        crossings: before.crossings,
        parts_seen: 1,
    };
    let added = added_of(&rows(new));
    fold(&stored, added.first(), terms, thresholds)
}

fn calls(list: &[(i64, &str, bool, i64)]) -> Calls {
    list.iter()
        .map(|(ts, rid, b, c)| (*ts, rid.to_string(), *b, *c))
        .collect()
}

fn assert_same(got: &Computed, want: &Computed) {
    assert_eq!(got.row, want.row);
    assert_eq!(got.crossings, want.crossings);
}

/// Credits against an allotment of 10: 80 % reached at "b" (8), over at "c" (11).
fn crossing_at_b_then_c() -> Calls {
    calls(&[
        (100, "a", true, 5),
        (200, "b", true, 3),
        (300, "c", true, 3),
    ])
}

#[test]
fn calls_after_every_crossing_are_added_and_the_crossings_stay() {
    let t = terms(Model::Credits, 10);
    let old = crossing_at_b_then_c();
    let new = calls(&[
        (400, "d", true, 2),
        (150, "e", false, 9),
        (500, "f", true, 0),
    ]);
    // The new calls come after both crossings, or do not count.
    let got = folded(&old, &new, &t, &t, &[80, 90]).expect("added to");
    let all: Calls = old.iter().chain(&new).cloned().collect();
    assert_same(&got, &whole(&all, &t, &[80, 90]).unwrap());
    assert_eq!((got.row.calls, got.row.used), (6, 13));
}

#[test]
fn a_new_call_before_a_crossing_sends_the_org_day_to_be_recomputed() {
    let t = terms(Model::Credits, 10);
    let old = crossing_at_b_then_c();
    // Before the 80 % crossing at (200, "b"): on the same ts, an earlier request id.
    assert!(folded(&old, &calls(&[(200, "a0", true, 1)]), &t, &t, &[80]).is_none());
    // On the same ts, a later request id: after the 80 % crossing, but before the over
    // crossing at 300.
    assert!(folded(&old, &calls(&[(200, "b1", true, 1)]), &t, &t, &[80]).is_none());
    // After every crossing: added to.
    assert!(folded(&old, &calls(&[(300, "c1", true, 1)]), &t, &t, &[80]).is_some());
}

#[test]
fn a_threshold_newly_reached_or_terms_changed_send_it_to_be_recomputed() {
    let t = terms(Model::Credits, 100);
    let old = calls(&[(100, "a", true, 50)]);
    // 50 + 35 reaches 80 % of 100: where, only the calls in order tell.
    assert!(folded(&old, &calls(&[(200, "b", true, 35)]), &t, &t, &[80]).is_none());
    // 50 + 20 reaches nothing: added to.
    assert!(folded(&old, &calls(&[(200, "b", true, 20)]), &t, &t, &[80]).is_some());
    // The allotment changed since the row was stored (a purchase): recomputed.
    let more = terms(Model::Credits, 200);
    assert!(folded(&old, &calls(&[(200, "b", true, 1)]), &t, &more, &[80]).is_none());
    // So did the model.
    let legacy = terms(Model::Legacy, 100);
    assert!(folded(&old, &calls(&[(200, "b", true, 1)]), &t, &legacy, &[80]).is_none());
}

#[test]
fn legacy_days_look_at_billable_calls_and_credit_days_at_those_that_cost() {
    // Legacy, limit 2: over at the third billable call ("c"). A call that costs nothing but
    // is billable counts on a legacy day, and does not on a credit day.
    let old = calls(&[
        (100, "a", true, 1),
        (200, "b", true, 1),
        (300, "c", true, 1),
    ]);
    let early_free = calls(&[(50, "z", true, 0)]);
    let legacy = terms(Model::Legacy, 2);
    assert!(folded(&old, &early_free, &legacy, &legacy, &[]).is_none());
    let credits = terms(Model::Credits, 2);
    let got = folded(&old, &early_free, &credits, &credits, &[]).expect("added to");
    let all: Calls = old.iter().chain(&early_free).cloned().collect();
    assert_same(&got, &whole(&all, &credits, &[]).unwrap());
    // A call that is not billable never counts.
    let early_exempt = calls(&[(50, "z", false, 7)]);
    assert!(folded(&old, &early_exempt, &legacy, &legacy, &[]).is_some());
}

fn arb_calls(max: usize, tag: &'static str) -> impl Strategy<Value = Calls> {
    proptest::collection::vec((0i64..40, 0u8..6, any::<bool>(), 0i64..6), 0..max).prop_map(
        move |v| {
            v.into_iter()
                .enumerate()
                // Few distinct ts and request ids that share prefixes: ties are common.
                .map(|(i, (ts, r, b, c))| (ts, format!("{r}{tag}{i}"), b, c))
                .collect()
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// Whenever adding declines nothing, the result is the whole day's.
    #[test]
    fn adding_new_calls_gives_the_whole_days_row_or_declines(
        old in arb_calls(30, "o"),
        new in arb_calls(8, "n"),
        allotted in 0u64..60,
        legacy in any::<bool>(),
        thresholds in proptest::sample::subsequence(vec![50u64, 80, 90], 0..=3),
    ) {
        prop_assume!(!old.is_empty());
        let model = if legacy { Model::Legacy } else { Model::Credits };
        let t = terms(model, allotted);
        let all: Calls = old.iter().chain(&new).cloned().collect();
        let want = whole(&all, &t, &thresholds).unwrap();
        if let Some(got) = folded(&old, &new, &t, &t, &thresholds) {
            prop_assert_eq!(got.row, want.row);
            prop_assert_eq!(got.crossings, want.crossings);
        }
    }
}
