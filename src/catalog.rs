//! Reads pricing catalog files (TOML, DESIGN §2.4) into [`crate::pricing::Catalog`]s.

use std::path::Path;

use chrono::NaiveDate;
use serde::Deserialize;

use crate::config::DateLit;
use crate::pricing::{Catalog, Method, Rule, Tier};
use crate::registry::Problem;

/// The most credits one call may cost (`credits`, a tier's `credits`, `unpriced_credits`).
/// A day's credits are summed in signed 64-bit integers: at this price 9 × 10^9 calls still fit.
pub const MAX_CALL_CREDITS: u64 = 1_000_000_000;

/// The largest tier bound `upto`: offsets beyond it are beyond any real pagination.
pub const MAX_UPTO: u64 = 1_000_000_000_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    /// Applies to calls at or after 00:00 UTC of this date.
    effective_from: DateLit,
    /// Credits for a billable call that matches no rule.
    #[serde(default)]
    unpriced_credits: Option<toml::Spanned<u64>>,
    #[serde(default)]
    rule: Vec<toml::Spanned<RawRule>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    /// `GET`, `POST`, `PUT`, `PATCH`, `DELETE` or `*`.
    method: String,
    /// Path pattern: literal segments, `{name}`, and a final `**`.
    path: String,
    /// Credits per call (or below the first tier).
    credits: u64,
    /// Query parameter holding the pagination offset.
    offset_param: Option<String>,
    #[serde(default)]
    tiers: Vec<RawTier>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTier {
    upto: Option<u64>,
    credits: u64,
}

/// Reads one catalog file; problems name the file, the rule's line and the field.
pub fn load(path: &Path) -> Result<Catalog, Vec<Problem>> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![Problem {
            file: file.clone(),
            line: None,
            field: None,
            message: format!("cannot read the pricing catalog: {e}"),
        }]
    })?;
    parse(&file, &text)
}

/// Parses a catalog from `text`, shown as `file` in problems.
pub fn parse(file: &str, text: &str) -> Result<Catalog, Vec<Problem>> {
    let problem = |line: Option<u64>, field: Option<String>, message: String| Problem {
        file: file.to_string(),
        line,
        field,
        message,
    };
    let raw: RawCatalog = toml::from_str(text).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start));
        vec![problem(line, None, e.message().to_string())]
    })?;
    let mut problems = Vec::new();
    let effective_from: Option<NaiveDate> = raw
        .effective_from
        .parse("effective_from")
        .map_err(|e| {
            problems.push(problem(
                None,
                Some("effective_from".into()),
                format!("{e:#}"),
            ))
        })
        .ok();
    let unpriced_credits = match &raw.unpriced_credits {
        None => 1,
        Some(u) if *u.get_ref() > MAX_CALL_CREDITS => {
            problems.push(problem(
                Some(line_of(text, u.span().start)),
                Some("unpriced_credits".into()),
                format!("expected at most {MAX_CALL_CREDITS}, found {}", u.get_ref()),
            ));
            1
        }
        Some(u) => *u.get_ref(),
    };
    let mut rules = Vec::new();
    for (i, spanned) in raw.rule.iter().enumerate() {
        let line = Some(line_of(text, spanned.span().start));
        let r = spanned.get_ref();
        let at = |field: &str| Some(format!("rule[{}].{field}", i + 1));
        let before = problems.len();
        let method = if r.method == "*" {
            None
        } else {
            match Method::parse(&r.method) {
                Some(m) => Some(m),
                None => {
                    problems.push(problem(
                        line,
                        at("method"),
                        format!(
                            "expected GET, POST, PUT, PATCH, DELETE or *, found {:?}",
                            r.method
                        ),
                    ));
                    None
                }
            }
        };
        let segments = Rule::parse_pattern(&r.path)
            .map_err(|m| {
                problems.push(problem(
                    line,
                    at("path"),
                    format!("{m}, found {:?}", r.path),
                ))
            })
            .unwrap_or_default();
        if !r.tiers.is_empty() && r.offset_param.is_none() {
            problems.push(problem(
                line,
                at("tiers"),
                "tiers need an offset_param naming the query parameter to price by".into(),
            ));
        }
        if r.credits > MAX_CALL_CREDITS {
            problems.push(problem(
                line,
                at("credits"),
                format!("expected at most {MAX_CALL_CREDITS}, found {}", r.credits),
            ));
        }
        let mut last: Option<u64> = None;
        for (j, t) in r.tiers.iter().enumerate() {
            if t.credits > MAX_CALL_CREDITS {
                problems.push(problem(
                    line,
                    at(&format!("tiers[{}].credits", j + 1)),
                    format!("expected at most {MAX_CALL_CREDITS}, found {}", t.credits),
                ));
            }
            if let Some(u) = t.upto.filter(|u| *u > MAX_UPTO) {
                problems.push(problem(
                    line,
                    at(&format!("tiers[{}].upto", j + 1)),
                    format!("expected at most {MAX_UPTO}, found {u}"),
                ));
            }
            match (t.upto, last) {
                (None, _) if j + 1 != r.tiers.len() => problems.push(problem(
                    line,
                    at(&format!("tiers[{}]", j + 1)),
                    "only the last tier may omit upto".into(),
                )),
                (Some(u), Some(l)) if u <= l => problems.push(problem(
                    line,
                    at(&format!("tiers[{}].upto", j + 1)),
                    format!("expected tiers in increasing order of upto, found {u} after {l}"),
                )),
                _ => {}
            }
            last = t.upto.or(last);
        }
        if problems.len() > before {
            continue;
        }
        rules.push(Rule {
            method,
            pattern: r.path.trim_end_matches('/').to_string(),
            segments,
            credits: r.credits,
            offset_param: r.offset_param.clone(),
            tiers: r
                .tiers
                .iter()
                .map(|t| Tier {
                    upto: t.upto,
                    credits: t.credits,
                })
                .collect(),
        });
    }
    match (effective_from, problems.is_empty()) {
        (Some(from), true) => Ok(Catalog::new(from, unpriced_credits, rules)),
        _ => Err(problems),
    }
}

fn line_of(text: &str, offset: usize) -> u64 {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count() as u64
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_documented_example() {
        let text = r#"
effective_from = "2025-10-01"
unpriced_credits = 1

[[rule]]
method = "GET"
path = "/api/v1/tasks/count"
credits = 50

[[rule]]
method = "GET"
path = "/api/v1/{module}"
credits = 3
offset_param = "from"
tiers = [ { upto = 2000, credits = 3 }, { upto = 10000, credits = 5 },
          { upto = 50000, credits = 10 }, { upto = 100000, credits = 50 }, { credits = 100 } ]
"#;
        let c = parse("pricing.toml", text).unwrap();
        assert_eq!(c.rules().len(), 2);
        assert_eq!(
            c.price(Method::Get, "/api/v1/tickets?from=2500&limit=100")
                .credits,
            5
        );
        assert_eq!(c.price(Method::Get, "/api/v1/tasks/count").credits, 50);
    }

    #[test]
    fn problems_name_line_and_field() {
        let text = "effective_from = 2025-10-01\n\n[[rule]]\nmethod = \"FETCH\"\npath = \"api\"\ncredits = 1\n\n[[rule]]\nmethod = \"GET\"\npath = \"/a\"\ncredits = 1\noffset_param = \"from\"\ntiers = [{ credits = 1 }, { upto = 5, credits = 2 }]\n";
        let shown: Vec<String> = parse("p.toml", text)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            shown,
            vec![
                "p.toml:3: field rule[1].method: expected GET, POST, PUT, PATCH, DELETE or *, found \"FETCH\"",
                "p.toml:3: field rule[1].path: a path pattern must start with '/', found \"api\"",
                "p.toml:8: field rule[2].tiers[1]: only the last tier may omit upto",
            ]
        );
        let bad = parse(
            "p.toml",
            "effective_from = 2025-10-01\n[[rule]]\nmethod = \"GET\"\npath = \"/a\"\ncredit = 1\n",
        )
        .unwrap_err();
        assert_eq!(bad[0].line, Some(5));
        assert!(
            bad[0].message.contains("unknown field `credit`"),
            "{}",
            bad[0].message
        );
    }

    #[test]
    fn prices_and_tier_bounds_are_bounded() {
        let at_bounds = "effective_from = 2025-10-01\nunpriced_credits = 1000000000\n[[rule]]\nmethod = \"GET\"\npath = \"/a\"\ncredits = 1000000000\noffset_param = \"from\"\ntiers = [{ upto = 1000000000000, credits = 1000000000 }, { credits = 1 }]\n";
        let c = parse("p.toml", at_bounds).unwrap();
        assert_eq!(c.price(Method::Get, "/a?from=7").credits, MAX_CALL_CREDITS);
        assert_eq!(c.price(Method::Get, "/b").credits, MAX_CALL_CREDITS);
        let over = "effective_from = 2025-10-01\nunpriced_credits = 1000000001\n[[rule]]\nmethod = \"GET\"\npath = \"/a\"\ncredits = 1000000001\noffset_param = \"from\"\ntiers = [{ upto = 1000000000001, credits = 1000000001 }, { credits = 1 }]\n";
        let shown: Vec<String> = parse("p.toml", over)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            shown,
            vec![
                "p.toml:2: field unpriced_credits: expected at most 1000000000, found 1000000001",
                "p.toml:3: field rule[1].credits: expected at most 1000000000, found 1000000001",
                "p.toml:3: field rule[1].tiers[1].credits: expected at most 1000000000, found 1000000001",
                "p.toml:3: field rule[1].tiers[1].upto: expected at most 1000000000000, found 1000000000001",
            ]
        );
        // Negative numbers and words are refused by the reader, with their line.
        for (text, line) in [
            ("effective_from = 2025-10-01\nunpriced_credits = -1\n", 2),
            ("effective_from = 2025-10-01\n[[rule]]\nmethod = \"GET\"\npath = \"/a\"\ncredits = \"three\"\n", 5),
        ] {
            let bad = parse("p.toml", text).unwrap_err();
            assert_eq!(bad[0].line, Some(line), "{}", bad[0].message);
        }
    }
}
