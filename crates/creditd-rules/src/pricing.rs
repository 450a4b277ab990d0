//! Pricing catalogs: which rule prices a call, and how many credits it costs (DESIGN §2.4).
//!
//! A catalog is a list of rules; the most specific matching rule prices a call. Matching
//! ignores the query string and a trailing `/`; `{name}` matches one segment and a final `**`
//! matches one or more. Pure code: catalogs arrive parsed, nothing here reads files.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::NaiveDate;

/// The HTTP methods a call may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
}

impl Method {
    /// Parses a method in any case; `None` for anything but the five.
    pub fn parse(s: &str) -> Option<Method> {
        let m = match s.len() {
            3 if s.eq_ignore_ascii_case("GET") => Method::Get,
            3 if s.eq_ignore_ascii_case("PUT") => Method::Put,
            4 if s.eq_ignore_ascii_case("POST") => Method::Post,
            5 if s.eq_ignore_ascii_case("PATCH") => Method::Patch,
            6 if s.eq_ignore_ascii_case("DELETE") => Method::Delete,
            _ => return None,
        };
        Some(m)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
        }
    }
}

/// One segment of a rule's path pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    Literal(String),
    /// `{name}`: any one segment.
    Param,
    /// A final `**`: one or more segments.
    Rest,
}

/// A tier of an offset-priced rule: applies when the offset is at most `upto` (or always,
/// when `upto` is `None`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tier {
    pub upto: Option<u64>,
    pub credits: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `None` for `*`.
    pub method: Option<Method>,
    /// The pattern as written, e.g. `/api/v1/{module}`; names the endpoint in reports.
    pub pattern: String,
    pub segments: Vec<Segment>,
    pub credits: u64,
    pub offset_param: Option<String>,
    pub tiers: Vec<Tier>,
}

impl Rule {
    /// Parses a path pattern into segments; errors say what is wrong with it.
    pub fn parse_pattern(pattern: &str) -> Result<Vec<Segment>, String> {
        if !pattern.starts_with('/') {
            return Err("a path pattern must start with '/'".to_string());
        }
        let parts = split_segments(pattern);
        let mut segments = Vec::with_capacity(parts.len());
        for (i, part) in parts.iter().enumerate() {
            let seg = if *part == "**" {
                if i + 1 != parts.len() {
                    return Err("'**' may only be the last segment".to_string());
                }
                Segment::Rest
            } else if part.starts_with('{') && part.ends_with('}') && part.len() > 2 {
                Segment::Param
            } else if part.contains(['{', '}', '*']) {
                return Err(format!(
                    "segment '{part}' mixes a placeholder with text; use '{{name}}' or a final '**'"
                ));
            } else {
                Segment::Literal(part.to_string())
            };
            segments.push(seg);
        }
        Ok(segments)
    }

    fn literal_count(&self) -> usize {
        self.segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count()
    }

    fn has_rest(&self) -> bool {
        matches!(self.segments.last(), Some(Segment::Rest))
    }

    fn matches(&self, method: Method, segments: &[&str]) -> bool {
        if self.method.is_some_and(|m| m != method) {
            return false;
        }
        let mut i = 0;
        for seg in &self.segments {
            match seg {
                Segment::Rest => return segments.len() > i,
                Segment::Param => {
                    if i >= segments.len() {
                        return false;
                    }
                }
                Segment::Literal(lit) => {
                    if segments.get(i) != Some(&lit.as_str()) {
                        return false;
                    }
                }
            }
            i += 1;
        }
        i == segments.len()
    }

    /// The credits of a call priced by this rule, given its query string.
    pub fn credits_for(&self, query: &str) -> u64 {
        self.credits_and_tier(query).0
    }

    /// The credits, and the offset tier that gave them (1 = the first tier; `None` for a rule
    /// without tiers, or an offset past them all, which pays the rule's own credits).
    fn credits_and_tier(&self, query: &str) -> (u64, Option<u32>) {
        let Some(param) = &self.offset_param else {
            return (self.credits, None);
        };
        let offset = offset_in_query(query, param);
        self.tiers
            .iter()
            .position(|t| t.upto.is_none_or(|upto| offset <= upto))
            .map_or((self.credits, None), |i| {
                (self.tiers[i].credits, Some(i as u32 + 1))
            })
    }
}

/// A pricing catalog in effect from 00:00 UTC of `effective_from`.
#[derive(Debug, Clone)]
pub struct Catalog {
    pub effective_from: NaiveDate,
    pub unpriced_credits: u64,
    /// Rules in specificity order: the first that matches wins.
    rules: Vec<Rule>,
}

/// What a call costs and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    pub credits: u64,
    /// The endpoint that priced it (`GET /api/v1/{module}`), or the call's own path when no
    /// rule matched.
    pub endpoint: Arc<str>,
    pub unpriced: bool,
    /// The offset tier of the rule that applied (1 = its first), if it has tiers.
    pub tier: Option<u32>,
}

impl Catalog {
    /// Builds a catalog; rules keep file order among equally specific ones.
    pub fn new(effective_from: NaiveDate, unpriced_credits: u64, rules: Vec<Rule>) -> Catalog {
        let mut rules = rules;
        // Most literal segments first; then no `**` before `**`; then exact method before `*`;
        // the sort is stable, so file order breaks the remaining ties.
        rules.sort_by_key(|r| {
            (
                std::cmp::Reverse(r.literal_count()),
                r.has_rest(),
                r.method.is_none(),
            )
        });
        Catalog {
            effective_from,
            unpriced_credits,
            rules,
        }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The index (into [`Catalog::rules`]) of the rule that prices `method path`.
    pub fn rule_for(&self, method: Method, path: &str) -> Option<usize> {
        let segments = split_segments(path);
        self.rules.iter().position(|r| r.matches(method, &segments))
    }

    /// Prices one call; `path_and_query` may carry a query string.
    pub fn price(&self, method: Method, path_and_query: &str) -> Price {
        let (path, query) = split_query(path_and_query);
        let rule = self.rule_for(method, path);
        self.price_by(rule, self.endpoint(rule, method, path), query)
    }

    /// The price of a call once its rule (if any) and its endpoint name are known.
    fn price_by(&self, rule: Option<usize>, endpoint: Arc<str>, query: &str) -> Price {
        match rule {
            Some(i) => {
                let (credits, tier) = self.rules[i].credits_and_tier(query);
                Price {
                    credits,
                    endpoint,
                    unpriced: false,
                    tier,
                }
            }
            None => Price {
                credits: self.unpriced_credits,
                endpoint,
                unpriced: true,
                tier: None,
            },
        }
    }

    /// The endpoint a call is reported under: its rule's pattern, or its own path.
    fn endpoint(&self, rule: Option<usize>, method: Method, path: &str) -> Arc<str> {
        match rule {
            Some(i) => format!("{} {}", method.as_str(), self.rules[i].pattern).into(),
            None => format!("{} {}", method.as_str(), normalize_path(path)).into(),
        }
    }
}

/// A path's rule (if any) and endpoint name.
type Priced = (Option<usize>, Arc<str>);

/// Several catalogs by effective date; each call is priced by the newest in effect at its `ts`.
#[derive(Debug, Clone)]
pub struct Pricing {
    /// Sorted by `effective_from`, oldest first; never empty.
    catalogs: Vec<Catalog>,
    /// Remembers the rule chosen, and the endpoint name, for each (catalog, method) and path
    /// seen so far.
    memo: HashMap<(usize, Method), rustc_hash::FxHashMap<String, Priced>>,
    memo_len: usize,
}

impl Pricing {
    /// `catalogs` must not be empty.
    pub fn new(mut catalogs: Vec<Catalog>) -> Pricing {
        assert!(!catalogs.is_empty(), "at least one pricing catalog");
        catalogs.sort_by_key(|c| c.effective_from);
        Pricing {
            catalogs,
            memo: HashMap::new(),
            memo_len: 0,
        }
    }

    /// The catalog for a call at `ts_ms`; calls before the oldest catalog use the oldest, so
    /// legacy days still show what they would have cost in credits.
    pub fn catalog_index(&self, ts_ms: i64) -> usize {
        let day = ts_ms.div_euclid(86_400_000);
        let mut idx = 0;
        for (i, c) in self.catalogs.iter().enumerate() {
            let from = c
                .effective_from
                .signed_duration_since(NaiveDate::from_ymd_opt(1970, 1, 1).unwrap())
                .num_days();
            if from <= day {
                idx = i;
            }
        }
        idx
    }

    /// Prices one call at `ts_ms`, memoizing the rule match per distinct path.
    pub fn price(&mut self, ts_ms: i64, method: Method, path_and_query: &str) -> Price {
        let ci = self.catalog_index(ts_ms);
        let catalog = &self.catalogs[ci];
        let (path, query) = split_query(path_and_query);
        if let Some((rule, endpoint)) = self.memo.get(&(ci, method)).and_then(|m| m.get(path)) {
            return catalog.price_by(*rule, endpoint.clone(), query);
        }
        let rule = catalog.rule_for(method, path);
        let endpoint = catalog.endpoint(rule, method, path);
        if self.memo_len > 200_000 {
            self.memo.clear();
            self.memo_len = 0;
        }
        self.memo
            .entry((ci, method))
            .or_default()
            .insert(path.to_string(), (rule, endpoint.clone()));
        self.memo_len += 1;
        catalog.price_by(rule, endpoint, query)
    }

    pub fn catalogs(&self) -> &[Catalog] {
        &self.catalogs
    }
}

/// Splits `path?query` at the first `?`.
pub fn split_query(path_and_query: &str) -> (&str, &str) {
    match path_and_query.split_once('?') {
        Some((p, q)) => (p, q),
        None => (path_and_query, ""),
    }
}

fn split_segments(path: &str) -> Vec<&str> {
    path.trim_end_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect()
}

fn normalize_path(path: &str) -> String {
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        "/".to_string()
    } else {
        trimmed.to_string()
    }
}

/// The value of the first `param=` in a query, as an offset: missing or not all digits is 0;
/// digits too large for 64 bits count as the largest offset.
pub fn offset_in_query(query: &str, param: &str) -> u64 {
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if name == param {
            if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                return 0;
            }
            return value.parse().unwrap_or(u64::MAX);
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(method: &str, pattern: &str, credits: u64) -> Rule {
        Rule {
            method: if method == "*" {
                None
            } else {
                Method::parse(method)
            },
            pattern: pattern.to_string(),
            segments: Rule::parse_pattern(pattern).unwrap(),
            credits,
            offset_param: None,
            tiers: vec![],
        }
    }

    fn tiered(pattern: &str) -> Rule {
        let mut r = rule("GET", pattern, 3);
        r.offset_param = Some("from".to_string());
        r.tiers = [
            (Some(2000), 3),
            (Some(10000), 5),
            (Some(50000), 10),
            (Some(100000), 50),
        ]
        .into_iter()
        .map(|(upto, credits)| Tier { upto, credits })
        .chain([Tier {
            upto: None,
            credits: 100,
        }])
        .collect();
        r
    }

    fn catalog(rules: Vec<Rule>) -> Catalog {
        Catalog::new("2025-10-01".parse().unwrap(), 1, rules)
    }

    /// Prices `method path` and renders "credits endpoint [unpriced]".
    fn check(cat: &Catalog, method: &str, path: &str, expect: &str) {
        let p = cat.price(Method::parse(method).unwrap(), path);
        let got = format!(
            "{} {}{}",
            p.credits,
            p.endpoint,
            if p.unpriced { " unpriced" } else { "" }
        );
        assert_eq!(got, expect, "{method} {path}");
    }

    #[test]
    fn more_literal_segments_win_over_file_order() {
        let cat = catalog(vec![
            rule("GET", "/api/v1/{module}/{id}", 1),
            rule("GET", "/api/v1/tasks/count", 50),
            rule("GET", "/api/v1/{module}", 3),
        ]);
        check(
            &cat,
            "GET",
            "/api/v1/tasks/count",
            "50 GET /api/v1/tasks/count",
        );
        check(
            &cat,
            "GET",
            "/api/v1/tickets/123",
            "1 GET /api/v1/{module}/{id}",
        );
        check(&cat, "get", "/api/v1/tickets", "3 GET /api/v1/{module}");
    }

    #[test]
    fn no_rest_beats_rest_then_exact_method_beats_star() {
        let cat = catalog(vec![
            rule("*", "/api/v1/**", 7),
            rule("GET", "/api/v1/**", 6),
            rule("*", "/api/v1/{module}", 5),
            rule("POST", "/api/v1/{module}", 4),
        ]);
        check(&cat, "POST", "/api/v1/tickets", "4 POST /api/v1/{module}");
        check(
            &cat,
            "DELETE",
            "/api/v1/tickets",
            "5 DELETE /api/v1/{module}",
        );
        check(&cat, "GET", "/api/v1/tickets", "5 GET /api/v1/{module}");
        check(&cat, "GET", "/api/v1/tickets/1/threads", "6 GET /api/v1/**");
        check(&cat, "PATCH", "/api/v1/tickets/1", "7 PATCH /api/v1/**");
    }

    #[test]
    fn equally_specific_rules_keep_file_order() {
        let cat = catalog(vec![
            rule("GET", "/api/{a}/x", 11),
            rule("GET", "/api/v1/{b}", 12),
        ]);
        check(&cat, "GET", "/api/v1/x", "11 GET /api/{a}/x");
    }

    #[test]
    fn rest_needs_at_least_one_segment() {
        let cat = catalog(vec![rule("*", "/api/v1/**", 2)]);
        check(&cat, "GET", "/api/v1", "1 GET /api/v1 unpriced");
        check(&cat, "GET", "/api/v1/", "1 GET /api/v1 unpriced");
        check(&cat, "GET", "/api/v1/a/b/c", "2 GET /api/v1/**");
    }

    #[test]
    fn trailing_slash_and_query_are_ignored() {
        let cat = catalog(vec![rule("GET", "/api/v1/tickets", 3)]);
        check(&cat, "GET", "/api/v1/tickets/", "3 GET /api/v1/tickets");
        check(&cat, "GET", "/api/v1/tickets?x=/y", "3 GET /api/v1/tickets");
        check(
            &cat,
            "GET",
            "/api/v1/tickets/?limit=1",
            "3 GET /api/v1/tickets",
        );
        check(
            &cat,
            "GET",
            "/api/v1/ticketsx",
            "1 GET /api/v1/ticketsx unpriced",
        );
        check(&cat, "GET", "/", "1 GET / unpriced");
    }

    #[test]
    fn offset_tiers() {
        let cat = catalog(vec![tiered("/api/v1/{module}")]);
        let cases = [
            ("/api/v1/tickets", 3),
            ("/api/v1/tickets?from=0", 3),
            ("/api/v1/tickets?from=2000", 3),
            ("/api/v1/tickets?from=2001", 5),
            ("/api/v1/tickets?limit=100&from=2500", 5),
            ("/api/v1/tickets?from=10000", 5),
            ("/api/v1/tickets?from=50000", 10),
            ("/api/v1/tickets?from=100000", 50),
            ("/api/v1/tickets?from=100001", 100),
            ("/api/v1/tickets?from=99999999999999999999999", 100),
            // The first occurrence counts; anything but digits is 0.
            ("/api/v1/tickets?from=60000&from=1", 50),
            ("/api/v1/tickets?from=-5000", 3),
            ("/api/v1/tickets?from=5e4", 3),
            ("/api/v1/tickets?from=", 3),
            ("/api/v1/tickets?from", 3),
            ("/api/v1/tickets?xfrom=60000", 3),
        ];
        for (path, credits) in cases {
            assert_eq!(cat.price(Method::Get, path).credits, credits, "{path}");
        }
    }

    #[test]
    fn newest_catalog_in_effect_prices_the_call() {
        let old = Catalog::new("2025-10-01".parse().unwrap(), 1, vec![rule("GET", "/a", 1)]);
        let new = Catalog::new("2025-11-01".parse().unwrap(), 2, vec![rule("GET", "/a", 9)]);
        let mut pricing = Pricing::new(vec![new, old]);
        let ms = |s: &str| {
            chrono::DateTime::parse_from_rfc3339(s)
                .unwrap()
                .timestamp_millis()
        };
        assert_eq!(
            pricing
                .price(ms("2025-09-30T23:59:59Z"), Method::Get, "/a")
                .credits,
            1
        );
        assert_eq!(
            pricing
                .price(ms("2025-10-31T23:59:59.999Z"), Method::Get, "/a")
                .credits,
            1
        );
        assert_eq!(
            pricing
                .price(ms("2025-11-01T00:00:00Z"), Method::Get, "/a")
                .credits,
            9
        );
        assert_eq!(
            pricing
                .price(ms("2025-11-01T00:00:00Z"), Method::Get, "/b")
                .credits,
            2
        );
    }

    #[test]
    fn bad_patterns_are_explained() {
        assert!(Rule::parse_pattern("api/v1").is_err());
        assert!(Rule::parse_pattern("/api/**/x").is_err());
        assert!(Rule::parse_pattern("/api/v{n}").is_err());
        assert_eq!(
            Rule::parse_pattern("/a/{b}/**").unwrap(),
            vec![Segment::Literal("a".into()), Segment::Param, Segment::Rest]
        );
    }

    #[test]
    fn methods_parse_in_any_case_only_the_five() {
        assert_eq!(Method::parse("pAtCh"), Some(Method::Patch));
        assert_eq!(Method::parse("HEAD"), None);
        assert_eq!(Method::parse(""), None);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn sample_catalog() -> Catalog {
            let mut t = tiered("/api/v1/search");
            t.credits = 3;
            Catalog::new(
                NaiveDate::from_ymd_opt(2025, 10, 1).unwrap(),
                1,
                vec![
                    rule("GET", "/api/v1/tasks/count", 50),
                    t,
                    rule("GET", "/api/v1/{module}/{id}", 1),
                    rule("*", "/api/v1/{module}/**", 7),
                ],
            )
        }

        proptest! {
            /// Any method and path — arbitrary text, `..`, `%`, `?`, empty segments — gets
            /// a price and never a panic; unpriced calls cost the catalog's default.
            #[test]
            fn any_path_is_priced_without_panicking(
                m in 0usize..5,
                path in "\\PC{0,80}",
            ) {
                let method = [Method::Get, Method::Post, Method::Put, Method::Patch, Method::Delete][m];
                let c = sample_catalog();
                let p = c.price(method, &path);
                if p.unpriced {
                    prop_assert_eq!(p.credits, 1);
                } else {
                    prop_assert!(p.endpoint.starts_with(method.as_str()));
                }
            }

            /// A literal endpoint always beats the patterns that also match it, whatever the
            /// query string says.
            #[test]
            fn the_literal_rule_wins_for_any_query(query in "[a-z=&0-9%]{0,30}") {
                let c = sample_catalog();
                let p = c.price(Method::Get, &format!("/api/v1/tasks/count?{query}"));
                prop_assert_eq!(p.credits, 50);
                prop_assert_eq!(&*p.endpoint, "GET /api/v1/tasks/count");
            }

            /// Tiers are monotonic: a larger offset never costs less.
            #[test]
            fn tier_prices_never_fall_with_the_offset(a in 0u64..200_000, b in 0u64..200_000) {
                let c = sample_catalog();
                let (lo, hi) = (a.min(b), a.max(b));
                let at = |o: u64| c.price(Method::Get, &format!("/api/v1/search?from={o}")).credits;
                prop_assert!(at(lo) <= at(hi));
            }
        }
    }
}
