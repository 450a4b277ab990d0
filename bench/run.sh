#!/usr/bin/env bash
# creditd against DuckDB on the same generated access logs, in one run on one machine.
#
#   bench/run.sh            # 4.7 M lines against DuckDB, one late 5-minute file, 20 M lines,
#                           # 5.6 M customer-shaped lines against DuckDB, threads 1 and all
#   bench/run.sh --quick    # the same steps on a tenth of the lines (a smoke test)
#   bench/run.sh --history [--quick]   # 120 simulated days with retention (bench/history.sh)
#
# Steps: build creditd (release) and the generator; create a Python venv with DuckDB from
# PyPI; generate the data set (1,000 orgs in 24 zones, NDJSON / CSV / gzip, pricing tiers,
# duplicates, bad lines of every reason); run creditd (`run ingest`, then `ledger export`) and
# bench/duckdb_ledger.py (the same reconciliation in DuckDB SQL) on the same files; check the
# two ledgers are byte-equal; then time an incremental ingest of one late 5-minute file (the
# median of three, from the same state; and check the ledger then equals the generator's own),
# and a run on 20 M lines; the same comparison with DuckDB on a second, customer-shaped set (48
# large orgs over five months, 24 files each spread over every day in shuffled order, unique
# record ids in paths, deep paging offsets); and `run ingest` on the main set with
# `[ingest] threads = 1` against the default (every core), three times each in turn (the
# medians count). Prints a table of wall time, lines/s, peak RSS and ratios, and the targets
# met or missed; writes the same to $BENCH_DIR/results-<time>.md.
#
# Environment: BENCH_DIR (data, venv and results; default ~/.cache/creditd-bench),
# CARGO_TARGET_DIR (default ~/.cache/creditd-target), DUCKDB_VERSION (default 2.0.1).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-$HOME/.cache/creditd-bench}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/creditd-target}
DUCKDB_VERSION=${DUCKDB_VERSION:-2.0.1}

ORGS=1000
DATES=2025-10-24..2025-11-02 # ten days over both October/November 2025 DST changes
CALLS=500                    # mean calls per org and day: ≈ 4.7 M lines
BIG_CALLS=2250               # the second run: ≈ 20 M lines, 4.3 × as many
ASIDE=2025-11-02T12:00:00Z,5 # the late 5-minute file, ingested into the full days
NOW=2025-11-20T00:00:00Z     # every day closed: the export is final
# The customer-shaped set: 48 orgs, each active on ~28 % of 151 days, ~2,900 calls an org-day.
CS_DATES=2025-10-01..2026-02-28
CS_CALLS=2900
CS_NOW=2026-03-20T00:00:00Z
case "${1:-}" in
--history)
	exec "$ROOT/bench/history.sh" "${@:2}"
	;;
--quick)
	CALLS=50
	BIG_CALLS=225
	CS_CALLS=290
	;;
"") ;;
*)
	echo "usage: bench/run.sh [--quick | --history [--quick]]" >&2
	exit 2
	;;
esac

say() { printf '\n== %s\n' "$*" >&2; }

say "building creditd (release)"
(cd "$ROOT" && cargo build --release --locked --bins)
BIN=$CARGO_TARGET_DIR/release

mkdir -p "$BENCH_DIR"
VENV=$BENCH_DIR/venv-duckdb-$DUCKDB_VERSION
if ! "$VENV/bin/python" -c "import duckdb" 2>/dev/null; then
	say "creating $VENV with duckdb==$DUCKDB_VERSION"
	python3 -m venv "$VENV"
	"$VENV/bin/pip" install --quiet "duckdb==$DUCKDB_VERSION"
fi

# gen DIR CALLS [extra args]: a data set, regenerated only when its arguments change.
gen() {
	local dir=$1 calls=$2
	shift 2
	gen_args "$dir" --orgs $ORGS --dates $DATES --calls-per-day "$calls" --hot-days 200 --bad-per-file 40 --dup-per-mille 10 --hours-per-file 1 --seed 2025 "$@"
}

# gen_args DIR ARGS...: a data set made with exactly these generator arguments.
gen_args() {
	local dir=$1
	shift
	local args="$*"
	if [[ -f $dir/.args && $(cat "$dir/.args") == "$args" ]]; then
		return
	fi
	say "generating $dir ($args)"
	rm -rf "$dir"
	# shellcheck disable=SC2086
	"$BIN/creditd-gen" --out "$dir" $args
	echo "$args" >"$dir/.args"
}

# lines DIR: the data lines of the inbox files (what both sides read).
lines() {
	awk -F, 'NR > 1 && $1 !~ /^late-/ { n += $2 } END { print n }' "$1/expected-files.csv"
}

# setup DATA WORK [TOML]: a fresh state and a config naming the data set's registry and
# pricing, with TOML appended.
setup() {
	local data=$1 work=$2 extra=${3:-}
	rm -rf "$work"
	mkdir -p "$work/inbox"
	# Hard links: ingest moves each file to its archive, and the data set stays whole.
	cp -al "$data/inbox/." "$work/inbox/"
	cat >"$work/creditd.toml" <<EOF
[paths]
inbox = "inbox"
state_dir = "state"
orgs = "$data/orgs.csv"
purchases = "$data/credit-purchases.csv"
pricing = "$data/pricing.toml"
$extra
EOF
}

RESULTS=$BENCH_DIR/measure.tsv
rm -f "$RESULTS"
m() { python3 "$ROOT/bench/measure.py" "$RESULTS" "$@"; }
field() { awk -F'\t' -v l="$1" -v c="$2" '$1 == l { print $c }' "$RESULTS"; }

BASE=$BENCH_DIR/data-$CALLS
BIG=$BENCH_DIR/data-$BIG_CALLS
gen "$BASE" "$CALLS" --aside "$ASIDE"
WORK=$BENCH_DIR/work
export CREDITD_LOG=warn

say "creditd: ingest and export ($(lines "$BASE") lines)"
setup "$BASE" "$WORK"
m creditd-ingest -- "$BIN/creditd" --config "$WORK/creditd.toml" --now "$NOW" run ingest >/dev/null
m creditd-export -- "$BIN/creditd" --config "$WORK/creditd.toml" --now "$NOW" ledger export --format csv >"$WORK/ledger-creditd.csv"

say "DuckDB $DUCKDB_VERSION: the same reconciliation in SQL"
m duckdb -- "$VENV/bin/python" "$ROOT/bench/duckdb_ledger.py" --config "$WORK/creditd.toml" \
	--inbox "$BASE/inbox" --now "$NOW" --out "$WORK/ledger-duckdb.csv"

say "checking the two ledgers are equal"
if ! cmp -s "$WORK/ledger-creditd.csv" "$WORK/ledger-duckdb.csv"; then
	echo "the ledgers differ:" >&2
	diff "$WORK/ledger-creditd.csv" "$WORK/ledger-duckdb.csv" | head -20 >&2
	exit 1
fi
echo "equal: $(($(wc -l <"$WORK/ledger-creditd.csv") - 1)) org-days" >&2

# A run of a fifth of a second is at the mercy of the machine's other work: it is timed three
# times from the same state, and the median counts.
say "creditd: one late 5-minute file into the full days (three times, from the same state)"
INC_LINES=$(cat "$BASE"/aside/* | wc -l)
cp -a "$WORK/state" "$WORK/state.full"
for i in 1 2 3; do
	rm -rf "$WORK/state"
	cp -a "$WORK/state.full" "$WORK/state"
	cp -l "$BASE"/aside/* "$WORK/inbox/"
	m "creditd-incremental-$i" -- "$BIN/creditd" --config "$WORK/creditd.toml" --now "$NOW" run ingest >/dev/null
done
rm -rf "$WORK/state.full"
# The generator worked out the ledger on its own, late file included: creditd must agree.
"$BIN/creditd" --config "$WORK/creditd.toml" --now "$NOW" ledger export --format csv |
	sed 's/,[a-z]*$//' >"$WORK/ledger-after-late.csv"
if ! cmp -s "$WORK/ledger-after-late.csv" "$BASE/expected-ledger.csv"; then
	echo "after the late file the ledger differs from the generator's:" >&2
	diff "$WORK/ledger-after-late.csv" "$BASE/expected-ledger.csv" | head -20 >&2
	exit 1
fi

# Two runs of ~15 s each, one after the other, move with the machine's other work as much as
# they differ: three pairs, one thread then the default in turn, and each side's median counts.
say "creditd: run ingest with [ingest] threads = 1, then with the default ($(nproc) cores), three times"
for i in 1 2 3; do
	setup "$BASE" "$WORK" $'[ingest]\nthreads = 1'
	m "creditd-ingest-1thread-$i" -- "$BIN/creditd" --config "$WORK/creditd.toml" --now "$NOW" run ingest >/dev/null
	setup "$BASE" "$WORK"
	m "creditd-ingest-default-$i" -- "$BIN/creditd" --config "$WORK/creditd.toml" --now "$NOW" run ingest >/dev/null
done

CS=$BENCH_DIR/data-customer-$CS_CALLS
gen_args "$CS" --orgs 48 --dates $CS_DATES --active-per-mille 276 --calls-per-day $CS_CALLS \
	--hot-days 400 --bad-per-file 40 --dup-per-mille 10 --spread-files 24 --unique-ids --shuffle --seed 2026
say "creditd: the customer-shaped set ($(lines "$CS") lines)"
setup "$CS" "$WORK"
m cs-creditd-ingest -- "$BIN/creditd" --config "$WORK/creditd.toml" --now "$CS_NOW" run ingest >/dev/null
m cs-creditd-export -- "$BIN/creditd" --config "$WORK/creditd.toml" --now "$CS_NOW" ledger export --format csv >"$WORK/ledger-creditd.csv"
say "DuckDB $DUCKDB_VERSION on the customer-shaped set"
m cs-duckdb -- "$VENV/bin/python" "$ROOT/bench/duckdb_ledger.py" --config "$WORK/creditd.toml" \
	--inbox "$CS/inbox" --now "$CS_NOW" --out "$WORK/ledger-duckdb.csv"
if ! cmp -s "$WORK/ledger-creditd.csv" "$WORK/ledger-duckdb.csv"; then
	echo "the ledgers of the customer-shaped set differ:" >&2
	diff "$WORK/ledger-creditd.csv" "$WORK/ledger-duckdb.csv" | head -20 >&2
	exit 1
fi
if ! sed 's/,[a-z]*$//' "$WORK/ledger-creditd.csv" | cmp -s - "$CS/expected-ledger.csv"; then
	echo "the customer-shaped ledger differs from the generator's" >&2
	exit 1
fi
echo "equal: $(($(wc -l <"$WORK/ledger-creditd.csv") - 1)) org-days, and equal to the generator's" >&2

gen "$BIG" "$BIG_CALLS" --no-expected
say "creditd: $(lines "$BIG") lines"
setup "$BIG" "$WORK"
m creditd-big-ingest -- "$BIN/creditd" --config "$WORK/creditd.toml" --now "$NOW" run ingest >/dev/null
m creditd-big-export -- "$BIN/creditd" --config "$WORK/creditd.toml" --now "$NOW" ledger export --format csv >/dev/null
rm -rf "$WORK"

# The report.
N=$(lines "$BASE")
NBIG=$(lines "$BIG")
NCS=$(lines "$CS")
python3 - "$RESULTS" "$N" "$NBIG" "$INC_LINES" "$DUCKDB_VERSION" "$NCS" "$(nproc)" >"$BENCH_DIR/report.md" <<'EOF'
import sys
path, n, nbig, ninc, duck, ncs, cores = sys.argv[1:]
n, nbig, ninc, ncs = int(n), int(nbig), int(ninc), int(ncs)
scale = nbig / n
r = {}
for row in open(path):
    label, wall, kib, rc = row.rstrip("\n").split("\t")
    r[label] = (float(wall), int(kib))
def total(*labels):
    return sum(r[l][0] for l in labels), max(r[l][1] for l in labels)
cd = total("creditd-ingest", "creditd-export")
dk = total("duckdb")
incs = sorted(r[f"creditd-incremental-{i}"] for i in (1, 2, 3))
inc = (incs[1][0], max(kib for _, kib in incs))
big = total("creditd-big-ingest", "creditd-big-export")
cs = total("cs-creditd-ingest", "cs-creditd-export")
csdk = total("cs-duckdb")
def median3(label):
    runs = sorted(r[f"{label}-{i}"] for i in (1, 2, 3))
    return (runs[1][0], max(kib for _, kib in runs)), ", ".join(f"{w:.1f}" for w, _ in sorted(runs))
(one, one_runs), (default, default_runs) = median3("creditd-ingest-1thread"), median3("creditd-ingest-default")
mib = lambda kib: f"{kib / 1024:,.0f} MiB"
print(f"| shape | run | lines | wall | lines/s | peak RSS | × DuckDB |")
print(f"|---|---|---:|---:|---:|---:|---:|")
print(f"| main | DuckDB {duck} (anchor) | {n:,} | {dk[0]:.1f} s | {n / dk[0]:,.0f} | {mib(dk[1])} | 1 |")
print(f"| main | creditd ingest + export | {n:,} | {cd[0]:.1f} s | {n / cd[0]:,.0f} | {mib(cd[1])} | {cd[0] / dk[0]:.2f} |")
print(f"| customer | DuckDB {duck} (anchor) | {ncs:,} | {csdk[0]:.1f} s | {ncs / csdk[0]:,.0f} | {mib(csdk[1])} | 1 |")
print(f"| customer | creditd ingest + export | {ncs:,} | {cs[0]:.1f} s | {ncs / cs[0]:,.0f} | {mib(cs[1])} | {cs[0] / csdk[0]:.2f} |")
print()
print(f"| run | lines | wall | lines/s | peak RSS |")
print(f"|---|---:|---:|---:|---:|")
print(f"| creditd `run ingest`, `[ingest] threads = 1` (median of 3: {one_runs} s) | {n:,} | {one[0]:.1f} s | {n / one[0]:,.0f} | {mib(one[1])} |")
print(f"| creditd `run ingest`, default, {cores} threads (median of 3: {default_runs} s) | {n:,} | {default[0]:.1f} s | {n / default[0]:,.0f} | {mib(default[1])} |")
print(f"| creditd, {scale:.2f}× the lines | {nbig:,} | {big[0]:.1f} s | {nbig / big[0]:,.0f} | {mib(big[1])} |")
print(f"| creditd, one late 5-minute file (median of 3: {', '.join(f'{w:.2f}' for w, _ in incs)} s) | {ninc:,} | {inc[0]:.2f} s | | {mib(inc[1])} |")
print()
# Each target is met when value ≤ limit (the speedup is written the other way round).
checks = [
    ("creditd wall time ≤ 0.35 × DuckDB's, main set", cd[0] / dk[0], 0.35, f"{cd[0] / dk[0]:.2f} ×"),
    ("creditd wall time ≤ 0.35 × DuckDB's, customer-shaped set", cs[0] / csdk[0], 0.35, f"{cs[0] / csdk[0]:.2f} ×"),
    (f"`run ingest` from 1 to {cores} threads ≥ 1.5 × faster", 1.5, one[0] / default[0], f"{one[0] / default[0]:.2f} ×"),
    (f"peak RSS ≤ 1 GiB at {nbig / 1e6:.0f} M lines", big[1] / 1048576, 1.0, f"{big[1] / 1048576:.2f} GiB"),
    (f"{scale:.2f}× the lines → ≤ {scale * 1.1:.2f}× the time", big[0] / cd[0], scale * 1.1, f"{big[0] / cd[0]:.2f} ×"),
    ("a late 5-minute file ≤ 2 % of the full run", inc[0] / cd[0], 0.02, f"{100 * inc[0] / cd[0]:.2f} %"),
]
print("| target | measured | |")
print("|---|---:|---|")
for name, value, limit, shown in checks:
    print(f"| {name} | {shown} | {'met' if value <= limit else 'MISSED'} |")
EOF
{
	echo
	echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr)."
	echo "creditd $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '(no git)'), DuckDB $DUCKDB_VERSION, $(date -u +%Y-%m-%d)."
} >>"$BENCH_DIR/report.md"
cp "$BENCH_DIR/report.md" "$BENCH_DIR/results-$(date -u +%Y%m%dT%H%M%SZ).md"
say "results (also in $BENCH_DIR/report.md)"
cat "$BENCH_DIR/report.md"
