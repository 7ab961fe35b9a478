#!/usr/bin/env bash
# The "Compaction" figures of docs/benchmarks.md (issue 9): on a compacted topic of RECORDS
# records over KEYS keys (defaults: the issue's 10 M over 100 k, 100-byte values),
#   1. disk space of the partition before and after cleaning (du -sb of its directory);
#   2. cleaner throughput: MiB of closed segments cleaned per second of cleaning, from the
#      broker start with the cleaner on to `tidelog topic describe` showing the partition
#      `idle (dirty 0.00)`, polled every 0.2 s (so it includes up to one cleaner backoff and
#      one poll period: a floor on the true rate);
#   3. produce p99 (tidelog perf produce, keyed, acks=leader) to a second topic, with the
#      cleaner off ([cleaner] threads = 0) and while it cleans the first topic's backlog.
# The cleaner runs at its default I/O limit (cleaner.io_bytes_per_sec_max, 64 MiB/s) unless
# CLEANER_IO=BYTES_PER_SEC says otherwise.
#
# Usage: benches/compaction.sh [RECORDS] [KEYS] [LOAD_RECORDS]   (defaults 10000000 100000 2000000)
#        NO_BUILD=1 ...      use the release binaries as they are
#        FLUSH=never ...     any tidelogd --flush value (default always)
# Needs release binaries (built unless NO_BUILD): cargo build --release --bins
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:-10000000}
keys=${2:-100000}
load_records=${3:-2000000}
flush=${FLUSH:-always}
record_size=100
segment_bytes=$((64 << 20))
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

if [ -z "${NO_BUILD:-}" ]; then
  cargo build --release --bins >&2
fi

tl() { "$bin/tidelog" --broker "$broker" "$@"; }
load() { cut -d' ' -f1-3 /proc/loadavg; }
now() { date +%s.%N; }

start_broker() { # cleaner threads
  stop_broker
  {
    echo "[cleaner]"
    echo "threads = $1"
    echo "backoff_ms = 500"
    if [ -n "${CLEANER_IO:-}" ]; then
      echo "io_bytes_per_sec_max = $CLEANER_IO"
    fi
  } >"$work/tidelogd.toml"
  "$bin/tidelogd" --data-dir "$work/data" --listen "$broker" --flush "$flush" \
    --config "$work/tidelogd.toml" 2>>"$work/broker.log" &
  broker_pid=$!
  for _ in $(seq 1 300); do
    tl topic list >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "broker did not start:" >&2
  tail -n 20 "$work/broker.log" >&2
  exit 1
}

partition_dir() { # topic
  find "$work/data" -type d -name "$1*" | head -n 1
}

cleaner_column() { # topic: the partition's Cleaner column, e.g. "idle (dirty 0.00)"
  tl topic describe "$1" | grep -oE '(idle|cleaning|uncleanable[^│|]*) \(dirty [0-9.]+[^)]*\)' | head -n 1
}

echo "# $(date -u +%FT%TZ) $(git rev-parse --short HEAD 2>/dev/null || echo unknown) records=$records keys=$keys load_records=$load_records record_size=$record_size flush=$flush segment_bytes=$segment_bytes cleaner_io=${CLEANER_IO:-default} nproc=$(nproc) bin=$bin"
echo "# load before: $(load)"

# The backlog: written with the cleaner off, so all of it is dirty when the cleaner starts.
start_broker 0
tl topic create backlog --partitions 1 --config cleanup.policy=compact \
  --config min.cleanable.dirty.ratio=0.5 --config segment.bytes=$segment_bytes >/dev/null
tl topic create load --partitions 1 --config segment.bytes=$segment_bytes >/dev/null
line=$(tl perf produce backlog --records "$records" --record-size $record_size --keys "$keys" 2>/dev/null | tail -n 1)
echo "backlog produce: $line (load $(load))"
sync
before=$(du -sb "$(partition_dir backlog)" | cut -f1)
closed=$(find "$(partition_dir backlog)" -name '*.log' -printf '%s %p\n' | sort -k2 | head -n -1 | awk '{ s += $1 } END { print s + 0 }')
echo "backlog on disk before cleaning: $before bytes ($((before >> 20)) MiB; closed segments' data files $((closed >> 20)) MiB)"

line=$(tl perf produce load --records "$load_records" --record-size $record_size --keys "$keys" 2>/dev/null | tail -n 1)
echo "load produce, cleaner off: $line (load $(load))"

# The cleaner on: it starts on the backlog at once; the same load is produced meanwhile.
started=$(now)
start_broker 1
line=$(tl perf produce load --records "$load_records" --record-size $record_size --keys "$keys" 2>/dev/null | tail -n 1)
state=$(cleaner_column backlog)
echo "load produce, cleaner on: $line (load $(load); backlog cleaner afterwards: $state)"
finished=
for _ in $(seq 1 36000); do
  state=$(cleaner_column backlog)
  if [[ "$state" == "idle (dirty 0.00"* ]]; then
    finished=$(now)
    break
  fi
  if [[ "$state" == uncleanable* ]]; then
    echo "the cleaner failed: $state" >&2
    exit 1
  fi
  sleep 0.2
done
if [ -z "$finished" ]; then
  echo "the backlog was not cleaned within two hours (last state: $state)" >&2
  exit 1
fi
sync
after=$(du -sb "$(partition_dir backlog)" | cut -f1)
seconds=$(echo "$finished - $started" | bc -l)
echo "backlog on disk after cleaning: $after bytes ($((after >> 20)) MiB), $(echo "scale=1; 100 * $after / $before" | bc -l)% of before"
echo "cleaning took ${seconds}s: $(echo "scale=1; $closed / 1048576 / $seconds" | bc -l) MiB/s of closed segments cleaned"
grep -iE 'clean' "$work/broker.log" | grep -iE 'backlog' | tail -n 5 || true
echo "# load after: $(load)"
