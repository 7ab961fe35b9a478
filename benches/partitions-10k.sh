#!/usr/bin/env bash
# 10,000 partitions on one broker with default settings (docs/benchmarks.md, issue 6 §6):
# create TOPICS topics of PARTITIONS partitions each with `tidelog topic create`, measure the
# broker's idle CPU (from /proc/PID/stat over IDLE_S seconds) and RSS, write keyed records to
# (nearly) every partition, then time a graceful stop (SIGTERM until exit) and a restart (exec
# until the broker logs that it accepts connections), and measure idle CPU and RSS again.
#
# Usage: benches/partitions-10k.sh [TOPICS] [PARTITIONS] [IDLE_S]   (defaults 10, 1000, 30)
# Needs release binaries: cargo build --release --bins   (TIDELOG_BIN overrides target/release)
# Prints one `key=value` line per measurement.
set -euo pipefail
cd "$(dirname "$0")/.."
topics=${1:-10}
partitions=${2:-1000}
idle_s=${3:-30}
bin=${TIDELOG_BIN:-target/release}
broker=
work=$(mktemp -d)
broker_pid=
hz=$(getconf CLK_TCK)

stop_broker() {
  if [ -n "$broker_pid" ]; then
    kill -TERM "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
    broker_pid=
  fi
}
trap 'stop_broker; rm -rf "$work"' EXIT

now() { date +%s.%N; }
elapsed() { echo "$(now) - $1" | bc; }

# Starts the broker with default settings on a free port and waits until it logs that it
# accepts connections; sets start_s to the seconds taken and broker to its address. (Not run
# in $(...): the broker would hold the substitution's pipe open.)
starts=0
start_broker() {
  local started log
  starts=$((starts + 1))
  log="$work/broker-$starts.log"
  started=$(now)
  "$bin/tidelogd" --data-dir "$work/data" --listen 127.0.0.1:0 >/dev/null 2>"$log" &
  broker_pid=$!
  for _ in $(seq 1 12000); do
    broker=$(sed -n 's/.*tidelog broker started listen=\([0-9.:]*\).*/\1/p' "$log")
    if [ -n "$broker" ]; then
      start_s=$(elapsed "$started")
      return 0
    fi
    if ! kill -0 "$broker_pid" 2>/dev/null; then
      echo "broker exited; see $log" >&2
      tail -n 20 "$log" >&2
      exit 1
    fi
    sleep 0.01
  done
  echo "broker did not start within 120 s; see $log" >&2
  exit 1
}

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$broker_pid/stat"; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$broker_pid/status"; }

# CPU of the broker over IDLE_S seconds, in percent of one core.
idle_cpu() {
  local before after
  before=$(cpu_ticks)
  sleep "$idle_s"
  after=$(cpu_ticks)
  echo "scale=2; ($after - $before) * 100 / ($hz * $idle_s)" | bc
}

echo "machine: $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg), RLIMIT_NOFILE hard $(ulimit -Hn)"
start_broker
echo "start_empty_s=$start_s"
rss_empty=$(rss_kib)
echo "rss_empty_kib=$rss_empty"

started=$(now)
for topic in $(seq 1 "$topics"); do
  "$bin/tidelog" --broker "$broker" topic create "t$topic" --partitions "$partitions" >/dev/null
done
echo "create_s=$(elapsed "$started") topics=$topics partitions_each=$partitions"
echo "fds_after_create=$(ls "/proc/$broker_pid/fd" | wc -l)"
echo "idle_cpu_percent=$(idle_cpu) over ${idle_s}s"
rss_idle=$(rss_kib)
echo "rss_idle_kib=$rss_idle rss_per_idle_partition_bytes=$(( (rss_idle - rss_empty) * 1024 / (topics * partitions) ))"

# Small keyed records, ten keys per partition (keys spread over partitions by hash, so about
# every partition gets some: the count left empty is printed), acknowledged after fsync.
started=$(now)
for topic in $(seq 1 "$topics"); do
  seq 1 $((partitions * 10)) | sed 's/.*/key&:value&/' |
    "$bin/tidelog" --broker "$broker" produce "t$topic" --key-separator : --linger-ms 2 >/dev/null
done
echo "produce_keyed_s=$(elapsed "$started") records=$((topics * partitions * 10))"
records=$("$bin/tidelog" --broker "$broker" topic list | awk -F'│|┆' '/ t[0-9]/ { sum += $4 } END { print sum }')
echo "records_listed=$records"
rss_written=$(rss_kib)
echo "rss_written_kib=$rss_written rss_per_written_partition_bytes=$(( (rss_written - rss_empty) * 1024 / (topics * partitions) ))"
echo "fds_after_produce=$(ls "/proc/$broker_pid/fd" | wc -l)"

started=$(now)
stop_broker
echo "stop_s=$(elapsed "$started")"

start_broker
echo "restart_s=$start_s"
echo "fds_after_restart=$(ls "/proc/$broker_pid/fd" | wc -l)"
echo "idle_cpu_after_restart_percent=$(idle_cpu) over ${idle_s}s"
echo "rss_after_restart_kib=$(rss_kib)"
echo "topics_after_restart=$("$bin/tidelog" --broker "$broker" topic list 2>/dev/null | grep -c ' t[0-9]' || true)"
started=$(now)
stop_broker
echo "stop_after_restart_s=$(elapsed "$started")"
