#!/usr/bin/env python3
"""creditd's reconciliation (access logs -> `ledger export --format csv`) written as DuckDB SQL.

    duckdb_ledger.py --config creditd.toml --inbox DIR --now RFC3339 --out ledger.csv

The benchmark's comparison point: the same inputs, the same rules (DESIGN.md sections 2-4), the
same output bytes. Python reads only the small dimension inputs (config, registry, purchases,
pricing catalogs) and turns them into tables; every per-line step is SQL over the raw lines:
splitting, decoding, validating, deduplicating, localizing, pricing, the plan join, the running
totals and the figures.
"""
import argparse
import csv
import datetime as dt
import os
import re
import sys
import tomllib
import zoneinfo

import duckdb

# DESIGN 3.1 and the README's documented defaults (src/allotment.rs default_edition):
# base, per_agent, concurrency, legacy_base, legacy_per_agent, additional_max_per_day.
EDITIONS = {
    "free": (5_000, 0, 5, 5_000, 0, 0),
    "express": (25_000, 100, 10, 30_000, 150, 25_000),
    "standard": (50_000, 250, 10, 60_000, 300, 50_000),
    "professional": (75_000, 500, 15, 90_000, 600, 100_000),
    "enterprise": (100_000, 1_000, 25, 120_000, 1_200, 200_000),
    "zoho_one": (100_000, 1_000, 25, 120_000, 1_200, 200_000),
    "crm_plus": (100_000, 1_000, 25, 120_000, 1_200, 200_000),
    "service_plus": (100_000, 1_000, 25, 120_000, 1_200, 200_000),
}
EDITION_KEYS = ["base", "per_agent", "concurrency", "legacy_base", "legacy_per_agent",
                "additional_max_per_day"]
DEFAULT_CUTOVER = {"us": "2025-10-06", "eu": "2025-10-07", "in": "2025-10-07", "au": "2025-10-08"}
FIELDS = ["ts", "request_id", "org_id", "method", "path", "status"]


def as_date(v):
    return v if isinstance(v, dt.date) else dt.date.fromisoformat(str(v))


def duration(text):
    m = re.fullmatch(r"\s*(\d+)\s*([smhd])\s*", text)
    if not m:
        raise SystemExit(f"unsupported duration {text!r}")
    return dt.timedelta(seconds=int(m[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m[2]])


def load_config(path):
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    base = os.path.dirname(os.path.abspath(path))
    paths = raw.get("paths", {})
    rel = lambda p: os.path.join(base, p)
    pricing = paths.get("pricing", "pricing.toml")
    editions = {k: dict(zip(EDITION_KEYS, v)) for k, v in EDITIONS.items()}
    for name, over in raw.get("editions", {}).items():
        editions.setdefault(name, dict(zip(EDITION_KEYS, EDITIONS["enterprise"])))
        editions[name].update(over)
    mig = raw.get("migration", {})
    cutover = {k: as_date(v) for k, v in mig.get("dc_cutover", DEFAULT_CUTOVER).items()}
    return {
        "orgs": rel(paths.get("orgs", "orgs.csv")),
        "purchases": rel(paths.get("purchases", "credit-purchases.csv")),
        "pricing": [rel(p) for p in (pricing if isinstance(pricing, list) else [pricing])],
        "editions": editions,
        "cutover": cutover,
        "signup_cutoff": as_date(mig.get("new_signup_cutoff", "2025-10-30")),
        "grandfather_until": as_date(mig["grandfather_until"]) if "grandfather_until" in mig else None,
        "exempt": raw.get("billing", {}).get("exempt_status", ["429", "5xx"]),
        "close_grace": duration(raw.get("daemon", {}).get("close_grace", "2h")),
    }


def exempt_sql(patterns):
    """[billing] exempt_status as a SQL predicate on `status`."""
    terms = []
    for p in patterns:
        p = str(p)
        if re.fullmatch(r"[1-5]xx", p):
            terms.append(f"status // 100 = {p[0]}")
        else:
            terms.append(f"status = {int(p)}")
    return "(" + " OR ".join(terms) + ")" if terms else "false"


def load_dimensions(con, cfg):
    # orgs.csv: plan history rows in file order (RFC 4180, quoted newlines allowed).
    with open(cfg["orgs"], newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    plans = []
    for seq, r in enumerate(rows):
        ed = cfg["editions"][r["edition"].strip()]
        agents = int(r["agents"] or 0)
        signup = dt.date.fromisoformat(r["signup_date"].strip())
        eff = r.get("effective_from", "").strip()
        legacy = r["legacy_daily_limit"].strip()
        plans.append((
            r["org_id"].strip(), seq, dt.date.fromisoformat(eff) if eff else signup,
            r["edition"].strip(), agents, r["paid"].strip().lower() == "true",
            int(legacy) if legacy else ed["legacy_base"] + ed["legacy_per_agent"] * agents,
            ed["base"], ed["per_agent"] * agents, ed["additional_max_per_day"],
            r["timezone"].strip(), r["data_center"].strip(), signup,
        ))
    con.execute("""CREATE TABLE plans (org_id VARCHAR, seq INT, eff DATE, edition VARCHAR,
        agents BIGINT, paid BOOLEAN, legacy_limit BIGINT, base BIGINT, variable BIGINT,
        add_cap BIGINT, tz VARCHAR, dc VARCHAR, signup DATE)""")
    con.executemany("INSERT INTO plans VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", plans)
    con.execute("""CREATE TABLE orgs AS SELECT org_id, any_value(tz) AS tz,
        any_value(dc) AS dc, any_value(signup) AS signup FROM plans GROUP BY org_id""")

    with open(cfg["purchases"], newline="", encoding="utf-8") as f:
        buys = [(r["org_id"].strip(), int(r["credits_per_day"]),
                 dt.date.fromisoformat(r["valid_from"].strip()),
                 dt.date.fromisoformat(r["valid_to"].strip())) for r in csv.DictReader(f)]
    con.execute("CREATE TABLE purchases (org_id VARCHAR, credits BIGINT, vfrom DATE, vto DATE)")
    if buys:
        con.executemany("INSERT INTO purchases VALUES (?,?,?,?)", buys)
    con.execute("CREATE TABLE cutover (dc VARCHAR, day DATE)")
    con.executemany("INSERT INTO cutover VALUES (?,?)", list(cfg["cutover"].items()))

    # Pricing catalogs: each rule as a regular expression over the normalized path, in the
    # specificity order of DESIGN 2.4 (literal segments, no ** over **, exact method over *,
    # file order).
    catalogs = []
    for path in cfg["pricing"]:
        with open(path, "rb") as f:
            catalogs.append(tomllib.load(f))
    catalogs.sort(key=lambda c: as_date(c["effective_from"]))
    rules, cats = [], []
    for ci, cat in enumerate(catalogs):
        eff = as_date(cat["effective_from"])
        cats.append((ci, dt.datetime(eff.year, eff.month, eff.day, tzinfo=dt.timezone.utc),
                     int(cat.get("unpriced_credits", 1))))
        ordered = []
        for fi, r in enumerate(cat.get("rule", [])):
            segs = [s for s in r["path"].strip().strip("/").split("/") if s]
            rest = bool(segs) and segs[-1] == "**"
            parts = []
            for s in segs:
                if s == "**":
                    parts.append(".+")
                elif re.fullmatch(r"\{[^/{}]*\}", s):
                    parts.append("[^/]+")
                else:
                    parts.append(re.escape(s))
            literal = sum(1 for s in segs if s != "**" and not re.fullmatch(r"\{[^/{}]*\}", s))
            method = r.get("method", "*").upper()
            ordered.append(((-literal, rest, method == "*", fi),
                            "^/" + "/".join(parts) + "$", method, int(r["credits"]),
                            r.get("offset_param"), r.get("tiers", [])))
        ordered.sort(key=lambda x: x[0])
        for rank, (_, regex, method, credits, param, ts) in enumerate(ordered):
            rules.append((ci, rank, regex, method, credits, param,
                          [t.get("upto") for t in ts], [int(t["credits"]) for t in ts]))
    con.execute("CREATE TABLE catalogs (ci INT, eff TIMESTAMPTZ, unpriced BIGINT)")
    con.executemany("INSERT INTO catalogs VALUES (?,?,?)", cats)
    con.execute("""CREATE TABLE rules (ci INT, rank INT, regex VARCHAR, method VARCHAR,
        credits BIGINT, param VARCHAR, uptos HUGEINT[], tier_credits BIGINT[])""")
    if rules:
        con.executemany("INSERT INTO rules VALUES (?,?,?,?,?,?,?,?)", rules)
    return [int(c[1].timestamp() * 1000) for c in cats]


def day_start(tz, day):
    """The earliest instant whose local date in `tz` is `day` (DESIGN 3.5)."""
    zone = zoneinfo.ZoneInfo(tz)
    t = dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc) - dt.timedelta(hours=15)
    while t.astimezone(zone).date() < day:
        t += dt.timedelta(minutes=1)
    return t


# Fields of a CSV line: RFC 4180 quoting within the line (DESIGN 2.1).
CSV_FIELD = r'"(?:[^"]|"")*"|[^,"]*'
CSV_LINE = f"(?:{CSV_FIELD})(?:,(?:{CSV_FIELD}))*"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--inbox", required=True)
    ap.add_argument("--now", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int)
    args = ap.parse_args()
    cfg = load_config(args.config)
    now = dt.datetime.fromisoformat(args.now.replace("Z", "+00:00"))

    con = duckdb.connect()
    if args.threads:
        con.execute(f"SET threads = {args.threads}")
    con.execute("SET preserve_insertion_order = true")
    catalog_from_ms = load_dimensions(con, cfg)

    # The access logs: names in order (DESIGN 2.1: dotfiles, .tmp and .part are not logs).
    names = sorted(n for n in os.listdir(args.inbox)
                   if not n.startswith(".") and not n.endswith((".tmp", ".part"))
                   and re.search(r"\.(ndjson|jsonl|csv)(\.gz)?$", n))
    files = [os.path.join(args.inbox, n) for n in names]
    con.execute("CREATE TABLE file_order (filename VARCHAR, fno INT, is_csv BOOLEAN)")
    con.executemany("INSERT INTO file_order VALUES (?,?,?)",
                    [(f, i, bool(re.search(r"\.csv(\.gz)?$", f))) for i, f in enumerate(files)])

    # Every line as text, in file order then line order (the table keeps insertion order:
    # rowid is the global position). Blank lines are skipped and not counted.
    con.execute(f"""
        CREATE TABLE raw AS
        SELECT filename, line FROM read_csv({files!r}, columns = {{'line': 'VARCHAR'}},
            header = false, delim = chr(1), quote = '', escape = '', auto_detect = false,
            filename = true, compression = 'auto', strict_mode = false)""")
    con.execute(f"""
        CREATE TABLE lines AS
        SELECT r.rowid AS pos, f.fno, f.is_csv,
               rtrim(ltrim(r.line, chr(65279)), chr(13)) AS line
        FROM raw r JOIN file_order f USING (filename)
        WHERE r.line IS NOT NULL AND trim(r.line, ' ' || chr(9) || chr(13) || chr(12) || chr(11)) <> ''""")
    con.execute("DROP TABLE raw")

    # CSV: the first non-blank line of a file is its header; field positions from it.
    con.execute(f"""
        CREATE TABLE headers AS
        SELECT fno, first_pos,
               CASE WHEN regexp_full_match(line, '{CSV_LINE}') THEN
                 list_transform(regexp_extract_all(',' || line, ',({CSV_FIELD})', 1),
                   lambda x: trim(CASE WHEN starts_with(x, '"') THEN replace(x[2:-2], '""', '"') ELSE x END))
               END AS names
        FROM (SELECT fno, min(pos) AS first_pos, arg_min(line, pos) AS line
              FROM lines WHERE is_csv GROUP BY fno)""")

    # Each data line to the text of its fields (NULL = absent), or malformed.
    # JSON: a value's text is the string itself or the number's digits; a float or anything
    # else becomes text that fails its field's check (src/logline.rs Scalar::text).
    fields_sql = ", ".join(f"'$.{f}'" for f in FIELDS)
    json_text = lambda i: f"""CASE json_type(v[{i}])
            WHEN 'VARCHAR' THEN v[{i}] ->> '$' WHEN 'BIGINT' THEN v[{i}] ->> '$'
            WHEN 'UBIGINT' THEN v[{i}] ->> '$' WHEN 'DOUBLE' THEN (v[{i}] ->> '$') || '!'
            WHEN 'NULL' THEN NULL ELSE CASE WHEN v[{i}] IS NULL THEN NULL ELSE '?' END END"""
    def csv_text(f):
        x = f"vals[list_position(names, '{f}')]"
        return (f"""CASE WHEN list_position(names, '{f}') IS NULL THEN NULL
            WHEN starts_with({x}, '"') THEN replace({x}[2:-2], '""', '"') ELSE {x} END""")
    con.execute(f"""
        CREATE TABLE decoded AS
        WITH j AS (
          SELECT pos, fno, json_extract(line, [{fields_sql}]) AS v
          FROM lines
          WHERE NOT is_csv AND starts_with(ltrim(line), '{{') AND json_valid(line)
                AND json_type(line) = 'OBJECT'),
        c AS (
          SELECT l.pos, l.fno, h.names,
                 regexp_extract_all(',' || l.line, ',({CSV_FIELD})', 1) AS vals
          FROM lines l JOIN headers h USING (fno)
          WHERE l.is_csv AND l.pos > h.first_pos AND h.names IS NOT NULL
                AND regexp_full_match(l.line, '{CSV_LINE}'))
        SELECT pos, fno, {", ".join(f"{json_text(i + 1)} AS {f}" for i, f in enumerate(FIELDS))}
        FROM j
        UNION ALL
        SELECT pos, fno, {", ".join(f"{csv_text(f)} AS {f}" for f in FIELDS)}
        FROM c WHERE len(vals) = len(names)""")

    # Validation in the order of the quarantine reasons (malformed lines are already out):
    # missing_field, bad_timestamp, bad_method, bad_status, unknown_org, before_signup.
    # Timestamps: epoch milliseconds, or RFC 3339 with an offset, sub-millisecond digits cut.
    rfc3339 = r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?([Zz]|[+-][0-9]{2}:[0-9]{2})"
    con.execute(f"""
        CREATE TABLE accepted AS
        WITH t AS (
          SELECT pos, fno, trim(ts) AS ts, trim(request_id) AS request_id,
                 trim(org_id) AS org_id, upper(trim(method)) AS method, trim(path) AS path,
                 trim(status) AS status
          FROM decoded
          WHERE coalesce(trim(ts), '') <> '' AND coalesce(trim(request_id), '') <> ''
            AND coalesce(trim(org_id), '') <> '' AND coalesce(trim(method), '') <> ''
            AND coalesce(trim(path), '') <> '' AND coalesce(trim(status), '') <> ''),
        p AS (
          SELECT *, CASE
              WHEN regexp_full_match(ts, '-?[0-9]+') THEN TRY_CAST(ts AS BIGINT)
              WHEN regexp_full_match(ts, '{rfc3339}') THEN
                epoch_ms(TRY_CAST(replace(replace(ts[1:19], 't', 'T'), ' ', 'T') AS TIMESTAMP))
                + coalesce(TRY_CAST(rpad(regexp_extract(ts, '\\.([0-9]+)', 1)[1:3], 3, '0') AS BIGINT), 0)
                - CASE WHEN upper(ts[-1:]) = 'Z' THEN 0 ELSE
                    (CASE WHEN ts[-6:-6] = '-' THEN -1 ELSE 1 END)
                    * (TRY_CAST(ts[-5:-4] AS BIGINT) * 60 + TRY_CAST(ts[-2:] AS BIGINT)) * 60000 END
            END AS ts_ms
          FROM t)
        SELECT p.pos, p.fno, p.ts_ms, p.request_id, p.org_id, p.method, p.path,
               CAST(p.status AS INT) AS status,
               CAST(timezone(o.tz, epoch_ms(p.ts_ms) AT TIME ZONE 'UTC') AS DATE) AS local_date
        FROM p JOIN orgs o USING (org_id)
        WHERE p.ts_ms IS NOT NULL
          AND p.method IN ('GET', 'POST', 'PUT', 'PATCH', 'DELETE')
          AND regexp_full_match(p.status, '[0-9]{{1,3}}') AND CAST(p.status AS INT) BETWEEN 100 AND 599
          AND CAST(timezone(o.tz, epoch_ms(p.ts_ms) AT TIME ZONE 'UTC') AS DATE) >= o.signup""")

    # Duplicates: within one org-day, the first accepted occurrence of a request id wins (file
    # order, line order); the same id on another org-day is another call.
    con.execute("""
        CREATE TABLE events AS
        SELECT * FROM accepted
        QUALIFY row_number() OVER (PARTITION BY org_id, local_date, request_id ORDER BY pos) = 1""")

    # Pricing (DESIGN 2.4), on the distinct (catalog, method, path) only: the newest catalog in
    # effect at the call's ts, the most specific matching rule, the offset tier.
    catalog_of = "CASE " + " ".join(
        f"WHEN ts_ms >= {ms} THEN {ci}" for ci, ms in reversed(list(enumerate(catalog_from_ms)))
    ) + " ELSE 0 END"
    con.execute(f"""
        CREATE TABLE priced AS
        WITH e AS (
          SELECT *, {catalog_of} AS ci, split_part(path, '?', 1) AS bare,
            CASE WHEN contains(path, '?') THEN path[strpos(path, '?') + 1:] ELSE '' END AS query
          FROM events),
        paths AS (
          SELECT DISTINCT ci, method, bare,
            '/' || array_to_string(list_filter(string_split(bare, '/'), lambda s: s <> ''), '/') AS norm
          FROM e),
        matched AS (
          SELECT p.ci, p.method, p.bare, min(r.rank) AS rank
          FROM paths p JOIN rules r ON r.ci = p.ci AND (r.method = '*' OR r.method = p.method)
               AND regexp_full_match(p.norm, r.regex)
          GROUP BY ALL),
        q AS (
          SELECT e.*, r.rank, r.credits AS rule_credits, r.param, r.uptos, r.tier_credits,
                 c.unpriced,
                 list_filter(string_split(e.query, '&'), lambda x: split_part(x, '=', 1) = r.param)[1] AS pair
          FROM e LEFT JOIN matched m USING (ci, method, bare)
               LEFT JOIN rules r ON r.ci = e.ci AND r.rank = m.rank
               JOIN catalogs c ON c.ci = e.ci),
        o AS (
          SELECT *, CASE WHEN contains(pair, '=') THEN pair[strpos(pair, '=') + 1:] ELSE '' END AS v
          FROM q),
        t AS (
          SELECT *, CASE WHEN regexp_full_match(v, '[0-9]+')
                    THEN coalesce(TRY_CAST(v AS HUGEINT), 340282366920938463463374607431768211455)
                    ELSE 0 END AS page_offset
          FROM o)
        SELECT org_id, local_date, ts_ms, request_id, status,
          CASE WHEN rank IS NULL THEN unpriced
               WHEN param IS NULL OR len(uptos) = 0 THEN rule_credits
               ELSE coalesce(tier_credits[list_filter(range(1, len(uptos) + 1),
                                 lambda i: uptos[i] IS NULL OR page_offset <= uptos[i])[1]], rule_credits)
          END AS credits
        FROM t""")

    # The terms of each org-day (DESIGN 3.2, 3.3): the plan in effect (greatest effective_from
    # <= D, the later row on ties), purchases capped, the migration model.
    gu = f"DATE '{cfg['grandfather_until']}'" if cfg["grandfather_until"] else "NULL"
    con.execute(f"""
        CREATE TABLE terms AS
        WITH days AS (SELECT DISTINCT org_id, local_date FROM priced),
        plan AS (
          SELECT d.org_id, d.local_date, arg_max(p, (p.eff, p.seq)) AS p
          FROM days d JOIN plans p ON p.org_id = d.org_id AND p.eff <= d.local_date
          GROUP BY ALL),
        t AS (
          SELECT plan.org_id, plan.local_date, p.edition, p.agents, p.paid, p.legacy_limit,
                 p.base, p.variable, p.dc, p.signup,
                 least(coalesce((SELECT sum(b.credits) FROM purchases b WHERE b.org_id = plan.org_id
                       AND plan.local_date BETWEEN b.vfrom AND b.vto), 0), p.add_cap) AS additional
          FROM plan)
        SELECT t.*, CASE
            WHEN t.local_date < c.day THEN 'legacy'
            WHEN t.signup < DATE '{cfg['signup_cutoff']}' AND t.paid
                 AND ({gu} IS NULL OR t.local_date <= {gu}) THEN 'grandfathered'
            ELSE 'credits' END AS model
        FROM t JOIN cutover c ON c.dc = t.dc""")

    # Figures: calls, billable calls, credits, used, and the call that took the running total
    # above the allotment (calls by ts, then request_id).
    con.execute(f"""
        CREATE TABLE ledger AS
        WITH t AS (
          SELECT *, CASE model WHEN 'legacy' THEN legacy_limit
                    WHEN 'grandfathered' THEN greatest(legacy_limit, base + variable) + additional
                    ELSE base + variable + additional END AS allotted
          FROM terms),
        ev AS (
          SELECT p.*, NOT {exempt_sql(cfg['exempt'])} AS billable FROM priced p),
        run AS (
          SELECT ev.org_id, ev.local_date, ev.ts_ms, ev.billable, ev.credits, t.allotted, t.model,
            CASE WHEN NOT ev.billable THEN 0 WHEN t.model = 'legacy' THEN 1 ELSE ev.credits END AS units,
            sum(CASE WHEN NOT ev.billable THEN 0 WHEN t.model = 'legacy' THEN 1 ELSE ev.credits END)
              OVER (PARTITION BY ev.org_id, ev.local_date ORDER BY ev.ts_ms, ev.request_id
                    ROWS UNBOUNDED PRECEDING) AS running
          FROM ev JOIN t USING (org_id, local_date)),
        fig AS (
          SELECT org_id, local_date, count(*) AS calls,
                 count(*) FILTER (WHERE billable) AS billable_calls,
                 coalesce(sum(credits) FILTER (WHERE billable), 0) AS credits,
                 sum(units) AS used,
                 min(ts_ms) FILTER (WHERE running > allotted AND units > 0) AS exceeded_ms
          FROM run GROUP BY ALL)
        SELECT t.org_id, t.local_date, t.model, t.edition, t.agents, f.calls, f.billable_calls,
               f.credits, t.base, t.variable, t.additional, t.legacy_limit, t.allotted, f.used,
               (20000 * f.used + t.allotted) // (2 * t.allotted) AS hundredths,
               greatest(f.used - t.allotted, 0) AS overage, f.exceeded_ms
        FROM fig f JOIN t USING (org_id, local_date)""")

    # The export (DESIGN 4): sorted by org_id as text, then local_date; status from the clock.
    rows = con.execute("""
        SELECT l.*, o.tz FROM ledger l JOIN orgs o USING (org_id)
        ORDER BY l.org_id, l.local_date""").fetchall()
    starts = {}
    with open(args.out, "w", encoding="utf-8", newline="") as out:
        out.write("org_id,local_date,model,edition,agents,calls,billable_calls,credits,base,"
                  "variable,additional,legacy_limit,allotted,used,pct_used,overage,exceeded_at,status\n")
        for (org, day, model, edition, agents, calls, billable, credits, base, variable,
             additional, legacy, allotted, used, hundredths, overage, exceeded_ms, tz) in rows:
            nxt = day + dt.timedelta(days=1)
            if (tz, nxt) not in starts:
                starts[(tz, nxt)] = day_start(tz, nxt)
            closed = now >= starts[(tz, nxt)] + cfg["close_grace"]
            exceeded = ""
            if exceeded_ms is not None:
                t = dt.datetime.fromtimestamp(exceeded_ms / 1000, dt.timezone.utc)
                exceeded = t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{exceeded_ms % 1000:03d}Z"
            out.write(f"{org},{day},{model},{edition},{agents},{calls},{billable},{credits},"
                      f"{base},{variable},{additional},{legacy},{allotted},{used},"
                      f"{hundredths // 100}.{hundredths % 100:02d},{overage},{exceeded},"
                      f"{'closed' if closed else 'open'}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
