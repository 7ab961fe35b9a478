#!/usr/bin/env bash
# Durable single-record latency (issue 6, section 7), all on one disk in one run:
#   (a) bare 1 KiB pwrite-append + fdatasync into a growing file   (disk-latency append)
#   (b) 1 KiB overwrite of preallocated zeros + fdatasync          (disk-latency overwrite)
#   (c) `tidelog perf produce --sync` to one partition under `--flush always`: one record at a
#       time, each waiting for its acknowledgement (so each pays a whole fdatasync)
# and prints one summary line per measurement and the ratio of (c)'s p99 to (a)'s.
#
# Usage: benches/durable-latency.sh [RECORDS] [RUNS]   (defaults 10000 and 3)
# TIDELOG_LATENCY_BROKER_ARGS adds arguments to tidelogd (e.g. "--config off.toml" with
# `[log] preallocate_bytes = 0` for an A/B of preallocation).
# Needs release binaries: cargo build --release --bins (BIN=DIR: binaries from another build)
# The disk measured is the one holding $TMPDIR (or /tmp): the broker's data dir and the bare
# files are created there. Each measurement runs RUNS times, interleaved (a, b, c, a, b, c, ...)
# so that load from other processes hits all three alike; the median run (by p99) is reported.
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:-10000}
runs=${2:-3}
bin=${BIN:-target/release}
port=${TIDELOG_LATENCY_PORT:-7398}
broker="127.0.0.1:$port"
work=$(mktemp -d)
broker_pid=

for binary in tidelogd tidelog disk-latency; do
  if [ ! -x "$bin/$binary" ]; then
    echo "missing $bin/$binary: run cargo build --release --bins" >&2
    exit 1
  fi
done

stop_broker() {
  if [ -n "$broker_pid" ]; then
    kill -TERM "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
    broker_pid=
  fi
}
trap 'stop_broker; rm -rf "$work"' EXIT

start_broker() {
  stop_broker
  rm -rf "$work/data"
  # shellcheck disable=SC2086 # extra arguments are split on purpose
  "$bin/tidelogd" --data-dir "$work/data" --listen "$broker" --flush always \
    ${TIDELOG_LATENCY_BROKER_ARGS:-} 2>"$work/broker.log" &
  broker_pid=$!
  for _ in $(seq 1 100); do
    "$bin/tidelog" --broker "$broker" topic list >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "broker did not start; see $work/broker.log" >&2
  exit 1
}

produce_sync() {
  start_broker
  "$bin/tidelog" --broker "$broker" topic create latency --partitions 1 >/dev/null
  "$bin/tidelog" --broker "$broker" perf produce latency --records "$records" --record-size 1024 \
    --acks leader --linger-ms 0 --sync 2>/dev/null | tail -n 1
  stop_broker
}

field() { # line key
  tr ' ' '\n' <<<"$1" | sed -n "s/^$2=//p"
}

# The median line by p99 of the given lines.
median_by_p99() {
  awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^p99_ms=/) { split($i, kv, "="); print kv[2], $0 } }' \
    | sort -g | cut -d' ' -f2- | awk -v n="$runs" '{ lines[NR] = $0 } END { print lines[int((n + 1) / 2)] }'
}

mkdir -p "$work/bare"
: >"$work/a"; : >"$work/b"; : >"$work/c"
for _ in $(seq 1 "$runs"); do
  "$bin/disk-latency" "$work/bare" append --records "$records" --record-bytes 1024 >>"$work/a"
  "$bin/disk-latency" "$work/bare" overwrite --records "$records" --record-bytes 1024 >>"$work/b"
  produce_sync >>"$work/c"
done
a=$(median_by_p99 <"$work/a")
b=$(median_by_p99 <"$work/b")
c=$(median_by_p99 <"$work/c")
echo "(a) bare append+fdatasync:        $a"
echo "(b) overwrite+fdatasync:          $b"
echo "(c) perf produce --sync (always): $c"
awk -v c="$(field "$c" p99_ms)" -v a="$(field "$a" p99_ms)" -v c50="$(field "$c" p50_ms)" -v a50="$(field "$a" p50_ms)" \
  'BEGIN { printf "p99 ratio (c)/(a) = %.2f   p50 ratio (c)/(a) = %.2f\n", c / a, c50 / a50 }'
