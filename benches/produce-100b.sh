#!/usr/bin/env bash
# 100-byte records to one partition with `tidelog perf produce` at its default settings
# (1 MiB batches, linger 5 ms, acks=leader, idempotence on, at most 5 batches in flight per
# partition); the broker at its default flush policy (always: fdatasync before every
# acknowledgement) unless FLUSH says otherwise. Each run writes a fresh topic; the median run
# by records/s is printed last, after every run's summary line, the machine's load and the CPU
# ticks the hypervisor stole during the run.
#
# Usage: benches/produce-100b.sh [RUNS] [RECORDS]   (defaults 5 and 5000000)
#        FLUSH=never benches/produce-100b.sh         (any tidelogd --flush value)
#        NO_BUILD=1 ...                              (use the release binaries as they are)
#        BIN=DIR NO_BUILD=1 ...                      (binaries from another build, for A/B runs)
#        PERF_ARGS="--records-per-send 1000" ...     (more perf produce flags)
#
# Before each run the page cache is synced and, when this user may (root), dropped, as in
# perf-matrix.sh: on the VMs we measure on, writes into never-touched page-cache memory run at
# a fraction of the speed of writes into reused pages.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
records=${2:-5000000}
flush=${FLUSH:-always}
read -r -a perf_args <<<"${PERF_ARGS:-}"
bin=${BIN:-target/release}
port=${TIDELOG_PERF_PORT:-7398}
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

# CPU time the hypervisor gave to others (the 8th value of /proc/stat's cpu line, in clock
# ticks over all cores): a run that lost many was measured on a busy host, not a quiet one.
steal_ticks() {
  awk '$1 == "cpu" { print $9 }' /proc/stat
}

if [ -z "${NO_BUILD:-}" ]; then
  cargo build --release --bins >&2
fi

"$bin/tidelogd" --data-dir "$work/data" --listen "$broker" --flush "$flush" 2>"$work/broker.log" &
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

echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null || echo unknown) flush=$flush records=$records runs=$runs nproc=$(nproc) bin=$bin perf_args=${PERF_ARGS:-}"
echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg)"
results="$work/results"
for run in $(seq 1 "$runs"); do
  topic="p100-$run"
  "$bin/tidelog" --broker "$broker" topic create "$topic" --partitions 1 >/dev/null
  sync
  if [ -w /proc/sys/vm/drop_caches ]; then
    echo 3 >/proc/sys/vm/drop_caches
  fi
  steal_before=$(steal_ticks)
  line=$("$bin/tidelog" --broker "$broker" perf produce "$topic" --records "$records" --record-size 100 "${perf_args[@]}" 2>/dev/null | tail -n 1)
  echo "run $run: $line (load $(cut -d' ' -f1 /proc/loadavg), steal $(($(steal_ticks) - steal_before)) ticks)"
  echo "$line" >>"$results"
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
# records_per_s is the second field: sort on it and take the middle line.
median=$(sort -t= -k3 -g "$results" | awk -v n="$runs" '{ lines[NR] = $0 } END { print lines[int((n + 1) / 2)] }')
echo "median: $median"
