//! Adding the calls of a date's new parts to the stored rows of its org-days, instead of
//! reading the whole day again.
//!
//! A stored row counts every part of its date listed up to `parts_seen` (parts are numbered by
//! a counter that only rises; replacing or unlisting a date's parts sets it back to 0, "not
//! known"). So the calls it lacks are exactly those of the parts listed after: its figures
//! are sums, and grow by theirs. Its crossings stay where they are when no new call that
//! counts comes before them in call order (`ts`, then `request_id`), and a threshold it had
//! not reached stays unreached when the new total still falls short of it. Anything else
//! (a crossing that may move, a threshold newly reached, terms that changed) needs the day's
//! calls in order: the org-day is then recomputed from all its events, as before.

use std::collections::{BTreeMap, HashMap};

use chrono::NaiveDate;

use super::Computed;
use crate::allotment::{DayTerms, Model};
use crate::events::{added_by, Added};
use crate::setup::Setup;
use crate::store::{LedgerRow, Stored};

/// The org-days of `orgs` on `date` worked out by adding the calls of the parts listed after
/// their stored rows (`listed`: the date's parts with their numbers), and the orgs left to be
/// recomputed from the day's events.
pub(super) fn fold_date(
    setup: &Setup,
    date: NaiveDate,
    listed: &[(String, i64)],
    orgs: &[String],
    stored: &HashMap<String, Stored>,
) -> anyhow::Result<(BTreeMap<String, Computed>, Vec<String>)> {
    let mut rows = BTreeMap::new();
    // The rows stored by one run share their `parts_seen`: the parts after the most common
    // one are read, once; rows of another are recomputed.
    let mut seen: HashMap<i64, usize> = HashMap::new();
    for s in orgs.iter().filter_map(|o| stored.get(o)) {
        if s.parts_seen > 0 {
            *seen.entry(s.parts_seen).or_default() += 1;
        }
    }
    let Some(base) = seen
        .into_iter()
        .max_by_key(|(seen, n)| (*n, *seen))
        .map(|(seen, _)| seen)
    else {
        return Ok((rows, orgs.to_vec()));
    };
    let new_parts: Vec<String> = listed
        .iter()
        .filter(|(_, added)| *added > base)
        .map(|(path, _)| path.clone())
        .collect();
    let added = added_by(&setup.config.state_dir, &new_parts)?;
    let added: HashMap<&str, &Added> = added.iter().map(|a| (a.org_id.as_str(), a)).collect();
    let mut rest = Vec::new();
    for org_id in orgs {
        let folded = stored
            .get(org_id)
            .filter(|s| s.parts_seen == base)
            .and_then(|s| {
                let terms = setup.terms(setup.org(org_id)?, date)?;
                let thresholds = &setup.config.alerts.near_limit_percent;
                fold(s, added.get(org_id.as_str()).copied(), &terms, thresholds)
            });
        match folded {
            Some(c) => {
                rows.insert(org_id.clone(), c);
            }
            None => rest.push(org_id.clone()),
        }
    }
    Ok((rows, rest))
}

/// The row of an org-day from its `stored` row and what new calls `added` to it (`None`: no
/// new calls), under today's `terms` and `thresholds`; `None` when only the day's calls in
/// order can tell.
pub(super) fn fold(
    stored: &Stored,
    added: Option<&Added>,
    terms: &DayTerms,
    thresholds: &[u64],
) -> Option<Computed> {
    let old = &stored.row;
    // Crossings are placed against the allotment and counted in the model's units.
    if terms.model != old.model || terms.allotted != old.allotted || thresholds.contains(&100) {
        return None;
    }
    let legacy = terms.model == Model::Legacy;
    let none = Added::default();
    let added = added.unwrap_or(&none);
    let calls = old.calls.checked_add(added.calls)?;
    let billable_calls = old.billable_calls.checked_add(added.billable_calls)?;
    let credits = old.credits.checked_add(added.credits)?;
    let unpriced_calls = old.unpriced_calls.checked_add(added.unpriced_calls)?;
    let used = if legacy { billable_calls } else { credits };
    // The first new call that moves the running total.
    let first = if legacy {
        added.first_billable.as_ref()
    } else {
        added.first_charged.as_ref()
    };
    // Each threshold with the least total that reaches it (100: above the allotment).
    let allotted = u128::from(terms.allotted);
    let needs = thresholds
        .iter()
        .map(|t| (*t, (allotted * u128::from(*t)).div_ceil(100)))
        .chain(std::iter::once((100, allotted + 1)));
    let mut crossings = Vec::new();
    for (threshold, need) in needs {
        match stored.crossings.iter().find(|c| c.threshold == threshold) {
            Some(c) => {
                // A new call before it could move it earlier.
                if first
                    .is_some_and(|(ts, rid)| (*ts, rid.as_str()) < (c.ts, c.request_id.as_str()))
                {
                    return None;
                }
                crossings.push(c.clone());
            }
            // Newly reached: where, only the calls in order tell.
            None if u128::from(used) >= need => return None,
            None => {}
        }
    }
    // A stored crossing of a threshold no longer configured: the rows' alerts may differ.
    if stored.crossings.len() != crossings.len() {
        return None;
    }
    crossings.sort_by_key(|c| c.threshold);
    let row = LedgerRow {
        org_id: old.org_id.clone(),
        local_date: old.local_date,
        terms: terms.clone(),
        calls,
        billable_calls,
        credits,
        used,
        exceeded_at: crossings.iter().find(|c| c.threshold == 100).map(|c| c.ts),
        unpriced_calls,
        revision: 0,
    };
    Some(Computed { row, crossings })
}

#[cfg(test)]
mod tests;
