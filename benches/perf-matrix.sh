#!/usr/bin/env bash
# The throughput matrix of docs/benchmarks.md: `tidelog perf produce` of N records of 100 B and
# 1 KiB, to 1 and to 8 partitions, under flush=never and flush=always, and `tidelog perf
# consume` of the same; each configuration run RUNS times, the median run reported.
#
# Usage: benches/perf-matrix.sh [RECORDS] [RUNS]   (defaults 1000000 and 3)
# Needs release binaries: cargo build --release --bins
#
# Before each produce run the page cache is synced and, when this user may (root), dropped:
# on the VMs we measure on, buffered writes into never-touched memory run at a fraction of
# the speed of writes into reused pages (dd shows the same), so runs would otherwise measure
# how much memory earlier runs dirtied. Consume runs read the topic written last, which is
# still in the page cache.
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:-1000000}
runs=${2:-3}
bin=target/release
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

start_broker() { # flush policy
  stop_broker
  rm -rf "$work/data"
  "$bin/tidelogd" --data-dir "$work/data" --listen "$broker" --flush "$1" 2>"$work/broker-$1.log" &
  broker_pid=$!
  for _ in $(seq 1 100); do
    "$bin/tidelog" --broker "$broker" topic list >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "broker did not start; see $work/broker-$1.log" >&2
  exit 1
}

settle_page_cache() {
  sync
  if [ -w /proc/sys/vm/drop_caches ]; then
    echo 3 > /proc/sys/vm/drop_caches
  fi
}

# Prints the median (by records_per_s) of RUNS summary lines of the command.
median_of_runs() {
  for _ in $(seq 1 "$runs"); do
    "$@" 2>/dev/null | tail -n 1
  done | sort -t= -k3 -g | awk -v n="$runs" '{ lines[NR] = $0 } END { print lines[int((n + 1) / 2)] }'
}

echo "| workload | flush | partitions | record | summary (median of $runs) |"
echo "|---|---|---|---|---|"
for flush in never always; do
  start_broker "$flush"
  for partitions in 1 8; do
    for size in 100 1024; do
      topic="p${partitions}-s${size}"
      produced=$(for run in $(seq 1 "$runs"); do
        "$bin/tidelog" --broker "$broker" topic create "$topic-$run" --partitions "$partitions" >/dev/null
        settle_page_cache
        "$bin/tidelog" --broker "$broker" perf produce "$topic-$run" --records "$records" --record-size "$size" 2>/dev/null | tail -n 1
      done | sort -t= -k3 -g | awk -v n="$runs" '{ lines[NR] = $0 } END { print lines[int((n + 1) / 2)] }')
      echo "| produce | $flush | $partitions | $size B | \`$produced\` |"
      if [ "$flush" = never ]; then
        consumed=$(median_of_runs "$bin/tidelog" --broker "$broker" perf consume "$topic-$runs" --records "$records")
        echo "| consume | - | $partitions | $size B | \`$consumed\` |"
      fi
    done
  done
done
