#!/usr/bin/env bash
# creditd over a simulated stretch of days, one run per day, with retention: does the cost of a
# day stay the cost of a day?
#
#   bench/run.sh --history            # 120 days, ~230 k lines a day in 24 files, retention 30d
#   bench/run.sh --history --quick    # 40 days, a tenth of the lines (a smoke test)
#
# The data set is one generated stretch (1,000 orgs in 24 zones, every org signed up before it,
# so each day carries the same load). Day by day, the day's 24 hourly files are dropped into the
# inbox and creditd runs as its daemon would at 00:30 UTC of the next day, with the clock set
# there by `--now`: `run ingest` (timed: wall time and peak RSS), `run close-days`,
# `run ops-digest`, `run deliver` (messages as .eml files) and `run retention` ([retention] 30d
# for archive, events, quarantine and outbox). After each day
# the state directory's size is taken. Each series is smoothed as the median of 5 consecutive
# days; the report compares days 111–120 with days 11–20 (time, RSS) and with days 41–50 (state
# size, once retention bites), writes a table to $BENCH_DIR/history.md and a plot to
# $BENCH_DIR/history.png.
#
# Environment: BENCH_DIR (default ~/.cache/creditd-bench), CARGO_TARGET_DIR (default
# ~/.cache/creditd-target).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH_DIR=${BENCH_DIR:-$HOME/.cache/creditd-bench}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/creditd-target}

ORGS=1000
FIRST=2026-01-05
DAYS=120
CALLS=230 # mean calls per org and day: ≈ 230 k lines a day
KEEP=30d
case "${1:-}" in
--quick)
	DAYS=40
	CALLS=23
	;;
"") ;;
*)
	echo "usage: bench/run.sh --history [--quick]" >&2
	exit 2
	;;
esac
LAST=$(date -u -d "$FIRST + $((DAYS - 1)) days" +%F)

say() { printf '\n== %s\n' "$*" >&2; }

say "building creditd (release) and the plot"
(cd "$ROOT" && cargo build --release --locked --bins --example history_plot)
BIN=$CARGO_TARGET_DIR/release

mkdir -p "$BENCH_DIR"
DATA=$BENCH_DIR/history-data-$DAYS-$CALLS
args="--orgs $ORGS --dates $FIRST..$LAST --calls-per-day $CALLS --hot-days 400 --bad-per-file 40 --dup-per-mille 10 --hours-per-file 1 --seed 2026 --steady --no-expected"
if ! [[ -f $DATA/.args && $(cat "$DATA/.args") == "$args" ]]; then
	say "generating $DATA ($args)"
	rm -rf "$DATA"
	# shellcheck disable=SC2086
	"$BIN/creditd-gen" --out "$DATA" $args
	echo "$args" >"$DATA/.args"
fi

WORK=$BENCH_DIR/history-work
rm -rf "$WORK"
mkdir -p "$WORK/inbox"
cat >"$WORK/creditd.toml" <<EOF
[paths]
inbox = "inbox"
state_dir = "state"
orgs = "$DATA/orgs.csv"
purchases = "$DATA/credit-purchases.csv"
pricing = "$DATA/pricing.toml"

[retention]
archive = "$KEEP"
events = "$KEEP"
quarantine = "$KEEP"
outbox = "$KEEP"
EOF

RESULTS=$BENCH_DIR/history-measure.tsv
rm -f "$RESULTS"
m() { python3 "$ROOT/bench/measure.py" "$RESULTS" "$@"; }
DAYS_TSV=$BENCH_DIR/history-days.tsv
printf 'day\tdate\tfiles\tlines\tstate_bytes\n' >"$DAYS_TSV"
export CREDITD_LOG=warn
cd "$WORK"

# The files of gateway time before the first date (calls of orgs east of UTC on the first
# local date) go in with the first day.
for ((d = 1; d <= DAYS; d++)); do
	date=$(date -u -d "$FIRST + $((d - 1)) days" +%F)
	stamp=${date//-/}
	now=$(date -u -d "$date + 1 day" +%FT00:30:00Z)
	: >today
	for f in "$DATA"/inbox/*; do
		name=${f##*/}
		fday=${name#*-}
		fday=${fday:0:8}
		if [[ $fday == "$stamp" || ($d -eq 1 && $fday < $stamp) ]]; then
			cp -l "$f" inbox/
			echo "$name" >>today
		fi
	done
	n=$(wc -l <today)
	m "ingest-$d" -- "$BIN/creditd" --config creditd.toml --now "$now" run ingest >/dev/null
	# The rest of what the daemon does in a day: close, digest, send (as .eml files), retention.
	for task in close-days ops-digest deliver; do
		"$BIN/creditd" --config creditd.toml --now "$now" run "$task" >/dev/null
	done
	m "retention-$d" -- "$BIN/creditd" --config creditd.toml --now "$now" run retention >/dev/null
	# The day's lines, as `files` counted them.
	lines=$("$BIN/creditd" --config creditd.toml files |
		awk -F, 'NR == FNR { want[$1]; next } FNR > 1 && ($1 in want) { n += $4 } END { print n + 0 }' today -)
	bytes=$(du -sb state | cut -f1)
	printf '%d\t%s\t%d\t%d\t%d\n' "$d" "$date" "$n" "$lines" "$bytes" >>"$DAYS_TSV"
	printf 'day %3d %s: %2d files, %7d lines, ingest %ss, state %s MiB\n' "$d" "$date" "$n" "$lines" \
		"$(awk -F'\t' -v l="ingest-$d" '$1 == l { print $2 }' "$RESULTS")" "$((bytes / 1048576))" >&2
done
cd "$ROOT"

python3 - "$RESULTS" "$DAYS_TSV" "$BENCH_DIR/history-series.tsv" "$DAYS" >"$BENCH_DIR/history.md" <<'EOF'
import statistics
import sys

measure, days_tsv, series_out, ndays = sys.argv[1:]
ndays = int(ndays)
m = {}
for row in open(measure):
    label, wall, kib, rc = row.rstrip("\n").split("\t")
    if rc != "0":
        sys.exit(f"{label} exited with {rc}")
    m[label] = (float(wall), int(kib))
days = []
for row in list(open(days_tsv))[1:]:
    d, date, files, lines, state = row.rstrip("\n").split("\t")
    d = int(d)
    days.append(
        dict(day=d, date=date, files=int(files), lines=int(lines), state=int(state) / 2**20,
             ingest=m[f"ingest-{d}"][0], rss=m[f"ingest-{d}"][1] / 1024,
             retention=m[f"retention-{d}"][0])
    )

def smooth(key):
    # The median of 5 consecutive days, centred (fewer at the ends).
    out = []
    for i in range(len(days)):
        window = [days[j][key] for j in range(max(0, i - 2), min(len(days), i + 3))]
        out.append(statistics.median(window))
    return out

keys = ["ingest", "rss", "state", "lines"]
sm = {k: smooth(k) for k in keys}
with open(series_out, "w") as f:
    f.write("day\tlines\tingest_s\tingest_s_median5\trss_mib\trss_mib_median5\tstate_mib\tstate_mib_median5\n")
    for i, d in enumerate(days):
        f.write(f"{d['day']}\t{d['lines']}\t{d['ingest']:.3f}\t{sm['ingest'][i]:.3f}\t{d['rss']:.1f}\t{sm['rss'][i]:.1f}\t{d['state']:.1f}\t{sm['state'][i]:.1f}\n")

def window(key, first, last):
    # The mean of the smoothed series over days first..last (1-based), scaled to the run.
    scale = ndays / 120
    a, b = max(1, round(first * scale)), max(1, round(last * scale))
    vals = sm[key][a - 1:b]
    return statistics.mean(vals), f"{a}–{b}"

print("| days | lines/day | ingest (s) | µs per line | peak RSS (MiB) | state (MiB) |")
print("|---|---:|---:|---:|---:|---:|")
step = max(1, ndays // 12)
for lo in range(1, ndays + 1, step):
    hi = min(ndays, lo + step - 1)
    sel = days[lo - 1:hi]
    lines = statistics.mean(d["lines"] for d in sel)
    ing = statistics.median(d["ingest"] for d in sel)
    print(f"| {lo}–{hi} | {lines:,.0f} | {ing:.2f} | {1e6 * ing / lines:.2f} | "
          f"{statistics.median(d['rss'] for d in sel):,.0f} | {statistics.median(d['state'] for d in sel):,.0f} |")
print()
t_early, we = window("ingest", 11, 20)
t_late, wl = window("ingest", 111, 120)
l_early, _ = window("lines", 11, 20)
l_late, _ = window("lines", 111, 120)
r_early, _ = window("rss", 11, 20)
r_late, _ = window("rss", 111, 120)
s_mid, wm = window("state", 41, 50)
s_late, _ = window("state", 111, 120)
checks = [
    (f"ingest time, days {wl} ≤ 1.2 × days {we}", t_late / t_early),
    (f"ingest time per line, days {wl} ≤ 1.2 × days {we}", (t_late / l_late) / (t_early / l_early)),
    (f"peak RSS, days {wl} ≤ 1.2 × days {we}", r_late / r_early),
    (f"state size, days {wl} ≤ 1.2 × days {wm}", s_late / s_mid),
]
print("Each figure is the mean over the window of the median of 5 consecutive days.")
print()
print("| target | measured | |")
print("|---|---:|---|")
for name, ratio in checks:
    print(f"| {name} | {ratio:.2f} × | {'met' if ratio <= 1.2 else 'MISSED'} |")
EOF
"$BIN/examples/history_plot" "$BENCH_DIR/history-series.tsv" "$BENCH_DIR/history.png"
{
	echo
	echo "Machine: $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr)."
	echo "creditd $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '(no git)'), $(date -u +%Y-%m-%d); plot: $BENCH_DIR/history.png."
} >>"$BENCH_DIR/history.md"
cp "$BENCH_DIR/history.md" "$BENCH_DIR/history-$(date -u +%Y%m%dT%H%M%SZ).md"
say "results (also in $BENCH_DIR/history.md)"
cat "$BENCH_DIR/history.md"
