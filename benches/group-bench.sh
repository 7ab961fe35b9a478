#!/usr/bin/env bash
# The "Consumer groups" figures of docs/benchmarks.md.
#
# 1. Group throughput: a 4-partition topic filled with RECORDS records (100 B, then 1 KiB) by
#    `tidelog perf produce`, then two `tidelog perf consume --group G --records RECORDS/2`
#    started together. Reported: wall time from starting both to both exiting (join, assignment
#    and the rebalance included) as records/s and MiB/s, plus each member's own summary line.
#    Under flush=never and flush=always (the broker's flush policy also applies to offset
#    commits' neighbours on disk, not to reads, so the two should be close).
# 2. Failover: a producer writes FAILOVER_RATE records/s (key = sequence number, value = send
#    time) to a 4-partition topic; two `tidelog consume --group --print-offset` members split
#    it; one is SIGKILLed. Reported: the time from the SIGKILL to the first record of one of
#    its partitions printed by the survivor, for session timeouts of 3 s and 10 s (default).
#
# Each configuration runs RUNS times; the median is reported, with the load average.
#
# Usage: benches/group-bench.sh [RECORDS] [RUNS]   (defaults 1000000 and 3)
#        GROUP_BENCH_FLUSH="never always" and GROUP_BENCH_SESSIONS_MS="3000 10000" pick the
#        configurations; an empty value skips that part.
# Needs release binaries: cargo build --release --bins
set -euo pipefail
cd "$(dirname "$0")/.."
records=${1:-1000000}
runs=${2:-3}
max_poll=10000
half=$((records / 2))
read_total=$((2 * half))
bin=target/release
port=${TIDELOG_PERF_PORT:-7398}
broker="127.0.0.1:$port"
failover_rate=${FAILOVER_RATE:-200}
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

load() { cut -d' ' -f1 /proc/loadavg; }

now_ns() { date +%s%N; }

# Median line of stdin, sorted numerically by its first field.
median() {
  sort -g | awk -v n="$runs" '{ lines[NR] = $0 } END { print lines[int((n + 1) / 2)] }'
}

echo "## group throughput: 4 partitions, $records records, two members of one group reading $half each"
echo
echo "| flush | record | records/s (wall) | MiB/s (wall) | wall s | load | member summaries (median run) |"
echo "|---|---|---|---|---|---|---|"
for flush in ${GROUP_BENCH_FLUSH:-never always}; do
  start_broker "$flush"
  for size in 100 1024; do
    for run in $(seq 1 "$runs"); do
      topic="g-$flush-$size-$run"
      "$bin/tidelog" --broker "$broker" topic create "$topic" --partitions 4 >/dev/null
      if ! "$bin/tidelog" --broker "$broker" perf produce "$topic" --records "$records" --record-size "$size" \
        >/dev/null 2>"$work/produce.err"; then
        echo "perf produce to $topic failed: $(tail -n 1 "$work/produce.err")" >&2
        continue
      fi
      before=$(load)
      start=$(now_ns)
      "$bin/tidelog" --broker "$broker" perf consume "$topic" --records "$half" --max-poll-records "$max_poll" \
        --group "grp-$topic" >"$work/m1" 2>"$work/m1.err" &
      m1=$!
      "$bin/tidelog" --broker "$broker" perf consume "$topic" --records "$half" --max-poll-records "$max_poll" \
        --group "grp-$topic" >"$work/m2" 2>"$work/m2.err" &
      m2=$!
      status=ok
      wait "$m1" || status="member 1 failed: $(tail -n 1 "$work/m1.err")"
      wait "$m2" || status="member 2 failed: $(tail -n 1 "$work/m2.err")"
      end=$(now_ns)
      seconds=$(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
      rate=$(awk -v n="$read_total" -v s="$seconds" 'BEGIN { printf "%.0f", n / s }')
      mib=$(awk -v n="$read_total" -v z="$size" -v s="$seconds" 'BEGIN { printf "%.1f", n * z / 1048576 / s }')
      echo "$rate $mib $seconds $before/$(load) [$(tail -n 1 "$work/m1")] [$(tail -n 1 "$work/m2")] $status"
    done | median | awk -v flush="$flush" -v size="$size" '{
      rest = ""; for (i = 5; i <= NF; i++) rest = rest " " $i
      printf "| %s | %s B | %s | %s | %s | %s |%s |\n", flush, size, $1, $2, $3, $4, rest }'
  done
done
stop_broker

echo
echo "## failover: SIGKILL of one of two members, $failover_rate records/s over 4 partitions"
echo
echo "| session timeout | kill to resume, ms (median) | all runs, ms | load |"
echo "|---|---|---|---|"
start_broker never
for session in ${GROUP_BENCH_SESSIONS_MS:-3000 10000}; do
  for run in $(seq 1 "$runs"); do
    topic="fo-$session-$run"
    "$bin/tidelog" --broker "$broker" topic create "$topic" --partitions 4 >/dev/null
    python3 - "$bin/tidelog" "$broker" "$topic" "$session" "$failover_rate" "$work" <<'EOF'
# Runs the producer and two group members, kills one, prints "GAP_MS LOAD".
import os, signal, subprocess, sys, threading, time

tidelog, broker, topic, session, rate, work = sys.argv[1:]
rate = int(rate)
group = topic + "-group"
now_ms = lambda: time.time() * 1000.0

producer = subprocess.Popen(
    [tidelog, "--broker", broker, "produce", topic, "--key-separator", "\t", "--linger-ms", "1"],
    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "producer.err"), "w"),
    text=True)
stop = threading.Event()

def produce():
    n = 0
    start = time.time()
    while not stop.is_set():
        producer.stdin.write(f"{n}\t{int(now_ms())}\n")
        producer.stdin.flush()
        n += 1
        delay = start + n / rate - time.time()
        if delay > 0:
            time.sleep(delay)

class Member:
    def __init__(self, name):
        self.name = name
        self.lines = []  # (receive ms, partition)
        self.proc = subprocess.Popen(
            [tidelog, "--broker", broker, "consume", topic, "--group", group,
             "--session-timeout-ms", session, "--print-offset"],
            stdout=subprocess.PIPE, stderr=open(os.path.join(work, name + ".err"), "w"), text=True)
        threading.Thread(target=self.read, daemon=True).start()

    def read(self):
        for line in self.proc.stdout:
            self.lines.append((now_ms(), int(line.split("\t", 1)[0])))

    def partitions(self, since=0.0):
        return {p for (t, p) in list(self.lines) if t >= since}

threading.Thread(target=produce, daemon=True).start()
a, b = Member("a"), Member("b")
deadline = time.time() + 60
try:
    # Both members consume two partitions each, for at least a second.
    while True:
        if time.time() > deadline:
            sys.exit(f"members never settled: a={a.partitions()} b={b.partitions()}")
        recent = now_ms() - 1000
        if len(a.partitions(recent)) == 2 and len(b.partitions(recent)) == 2 \
                and not (a.partitions(recent) & b.partitions(recent)):
            break
        time.sleep(0.05)
    victim = a.partitions(now_ms() - 1000)
    killed = now_ms()
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait()
    deadline = time.time() + 60
    while True:
        if time.time() > deadline:
            sys.exit(f"the survivor never consumed {victim}")
        resumed = [t for (t, p) in list(b.lines) if p in victim and t > killed]
        if resumed:
            print(f"{min(resumed) - killed:.0f} {open('/proc/loadavg').read().split()[0]}")
            break
        time.sleep(0.01)
finally:
    stop.set()
    b.proc.send_signal(signal.SIGTERM)
    try:
        b.proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        b.proc.kill()
    if a.proc.poll() is None:
        a.proc.kill()
    producer.stdin.close()
    producer.wait(timeout=20)
EOF
  done >"$work/failover-$session"
  gaps=$(cut -d' ' -f1 "$work/failover-$session" | sort -g | paste -sd, -)
  loads=$(cut -d' ' -f2 "$work/failover-$session" | paste -sd, -)
  median_gap=$(cut -d' ' -f1 "$work/failover-$session" | median)
  echo "| $((session / 1000)) s | $median_gap | $gaps | $loads |"
done
