#!/usr/bin/env bash
# Conditional appends (issue 8 §6) with `tidelog perf stream-append`: one record per append,
# each writer waiting for its answer, the broker at flush=always (fdatasync before every
# acknowledgement; concurrent appends share a sync).
#
#  1. Distinct keys: WRITERS writers, APPENDS appends, each opening a new stream with
#     `--expect none`, against the same records with no condition (`--expect off`), the two
#     interleaved RUNS times on fresh one-partition topics; the medians and their ratio last.
#  2. Hot keys: HOT_WRITERS writers on HOT_KEYS keys with `--expect exact` (a conflict is
#     retried on the actual version), HOT_APPENDS successful appends: throughput and the
#     conflict rate (conflicts / attempts).
#
# Usage: benches/stream-append.sh [RUNS]              (default 3)
#        WRITERS=16 APPENDS=20000 HOT_WRITERS=100 HOT_KEYS=10 HOT_APPENDS=5000 (defaults)
#        NO_BUILD=1 / BIN=DIR NO_BUILD=1               (as benches/produce-100b.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
writers=${WRITERS:-16}
appends=${APPENDS:-20000}
hot_writers=${HOT_WRITERS:-100}
hot_keys=${HOT_KEYS:-10}
hot_appends=${HOT_APPENDS:-5000}
bin=${BIN:-target/release}
port=${TIDELOG_PERF_PORT:-7399}
broker="127.0.0.1:$port"
work=$(mktemp -d)
broker_pid=

stop_broker() {
  if [ -n "$broker_pid" ]; then
    kill -TERM "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
    broker_pid=
  fi
}
trap 'stop_broker; rm -rf "$work"' EXIT

if [ -z "${NO_BUILD:-}" ]; then
  cargo build --release --bins >&2
fi

"$bin/tidelogd" --data-dir "$work/data" --listen "$broker" --kafka-listen none --flush always 2>"$work/broker.log" &
broker_pid=$!
started=
for _ in $(seq 1 100); do
  if "$bin/tidelog" --broker "$broker" topic list >/dev/null 2>&1; then
    started=1
    break
  fi
  sleep 0.1
done
if [ -z "$started" ]; then
  echo "broker did not start:" >&2
  tail -n 20 "$work/broker.log" >&2
  exit 1
fi

echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null || echo unknown) runs=$runs writers=$writers appends=$appends hot_writers=$hot_writers hot_keys=$hot_keys hot_appends=$hot_appends nproc=$(nproc) bin=$bin"
echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg)"
field() { sed -n "s/.*$1=\([0-9.]*\).*/\1/p"; }
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
: >"$work/off"
: >"$work/none"
for run in $(seq 1 "$runs"); do
  for expect in off none; do
    topic="distinct-$expect-$run"
    "$bin/tidelog" --broker "$broker" topic create "$topic" --partitions 1 >/dev/null
    line=$("$bin/tidelog" --broker "$broker" perf stream-append "$topic" --appends "$appends" \
      --writers "$writers" --keys distinct --expect "$expect")
    echo "distinct expect=$expect run=$run $line"
    echo "$line" | field records_per_s >>"$work/$expect"
  done
done
off=$(median <"$work/off")
none=$(median <"$work/none")
echo "median distinct: off=$off none=$none ratio=$(awk -v a="$none" -v b="$off" 'BEGIN { printf "%.2f", a / b }')"
"$bin/tidelog" --broker "$broker" topic create hot --partitions 1 >/dev/null
line=$("$bin/tidelog" --broker "$broker" perf stream-append hot --appends "$hot_appends" \
  --writers "$hot_writers" --keys "$hot_keys" --expect exact)
echo "hot writers=$hot_writers keys=$hot_keys $line"
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
