#!/usr/bin/env bash
# Issue 7 §4: the Kafka listener against the native one, on one broker, in one run. Starts one
# release `tidelogd` (native and Kafka listeners) and runs, interleaved and repeated, produce
# and consume of 1 KiB and 100 B records through both: `tidelog perf` on the native listener,
# `kafka-load` (librdkafka, benches/kafka-load) on the Kafka one, with the same settings (1 MiB
# batches, idempotent, 5 batches in flight, 64 MiB buffer; fetch responses of about 8 MiB),
# except linger: perf produce's is 5 ms, kafka-load's here 100 ms (KAFKA_LINGER_MS). At full
# load batches close on size either way; linger only sets when librdkafka's broker thread
# wakes. Shorter, it busy-waits whenever a batch waits longer than linger.ms for an in-flight
# slot (see benches/kafka-load/src/produce.rs); at kafka-load's own default of 1000 ms it
# left a capped broker idle between 1 KiB batches (docs/benchmarks.md, k11). Prints one line
# per run and a table of medians with the ratio Kafka/native.
#
# Usage: benches/kafka-vs-native.sh [RUNS] [RECORDS_1K] [RECORDS_100B]   (defaults 3 1000000 3000000)
#   The issue 7 §4 run, broker-bound (as root, on a quiet machine; see docs/benchmarks.md):
#   CAP=0.3 CAP_100B=0.1 INSTANCES=2 INSTANCES_100B=4 PARTITIONS=1 benches/kafka-vs-native.sh 5
#   PARTITIONS="1 8"   partition counts to measure (default "1 8")
#   FLUSH=always       broker flush policy (default never: the listener's own cost shows most)
#   TWO=1              also run two Kafka generators at once (half the records each, one
#                      topic), to show whether one generator limits the Kafka figures
#   PROFILE=perf       afterwards, `perf record` the broker during a Kafka consume of each size
#                      and print where its time goes
#   PROFILE=callgrind  afterwards, restart the broker under valgrind's callgrind and count its
#                      instructions during a Kafka consume of a tenth of each topic: the total
#                      per record and per MiB, and the functions they go to
#                      (PROFILE="perf callgrind" does both)
#   NO_BUILD=1         use the binaries already built
#   PIN=1              pin the broker to CPU 0 and every tool to CPU 1 (taskset), so neither
#                      side takes the other's core: a tool at 1.00 core is the bottleneck
#   CAP=FRACTION       run the broker in a CPU-capped cgroup (e.g. CAP=0.25: a quarter of one
#                      core, whatever its threads), so the broker, not a generator, is the limit:
#                      with both tools well below a core and the broker at its cap (the table's
#                      "throttled" column: the share of the cgroup's periods in which the broker
#                      used up its quota), the records/s ratio measures the listeners on equal
#                      CPU. Tools stay unpinned (both cores) unless PIN=1. cgroup v1's cpu
#                      controller (cpu.cfs_quota_us) or v2's (cpu.max); fails if neither works.
#   CAP_100B=FRACTION  the cap for the 100 B rounds (default: CAP), when a generator needs a
#                      lower broker rate to stay below a core at 100 B
#   KAFKA_LINGER_MS=N  kafka-load's linger.ms for produce (default 100)
#   SIZES="1024"       record sizes of the rounds (default "1024 100")
#   CAP_PERIOD_US=N    the cgroup's period (default 20000: the quota comes in 20 ms slices, so
#                      a capped broker stalls for at most 20 ms at a time)
#   INSTANCES=N        kafka-load produce runs N librdkafka producers on threads of one
#                      process (default 1), each a share of the records: one producer sends
#                      one request at a time. Consume keeps one client: several split a
#                      partition by offsets, and each prefetches past its stretch (about 10%
#                      more broker work at 4 clients)
#   INSTANCES_100B=N   the producers for the 100 B rounds (default: INSTANCES): at 100 B one
#                      librdkafka producer builds batches slower than a capped broker takes
#                      them; at 1 KiB four of them take more than a core
#
# Per run it records the wall-clock rate (the tool's summary line), the tool's CPU (user+sys,
# bash `time`) and the broker's (its threads' nanoseconds from /proc/PID/task/*/schedstat
# around the run; utime+stime ticks from /proc/PID/stat if a thread ended meanwhile), so the
# table shows how much of the 2 cores each side used and the broker's CPU per record. The
# last column compares the listeners without the tools: records per broker CPU second,
# Kafka over native (1.00: the Kafka listener costs the broker what the native one does).
# Each of a round's two produce runs writes a fresh topic after its own `sync` and, as root,
# dropping the page cache (see docs/benchmarks.md: fresh page-cache pages are slow on our VMs);
# both consume runs of a round read the topic the native producer wrote, read back into the
# page cache first, so both listeners serve the same bytes from memory.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
records_1k=${2:-1000000}
records_100=${3:-3000000}
partitions_list=${PARTITIONS:-"1 8"}
flush=${FLUSH:-never}
bin=target/release
load=benches/kafka-load/target/release/kafka-load
native_port=${TIDELOG_PERF_PORT:-7398}
kafka_port=${TIDELOG_PERF_KAFKA_PORT:-9398}
native="127.0.0.1:$native_port"
kafka="127.0.0.1:$kafka_port"
work=$(mktemp -d "${TMPDIR:-/tmp}/kafka-vs-native.XXXXXX")
broker_pid=
ticks=$(getconf CLK_TCK)
broker_cpus=
tool_cpus=
if [ -n "${PIN:-}" ]; then
  broker_cpus="taskset -c 0"
  tool_cpus="taskset -c 1"
fi
cap=${CAP:-}
cap_100=${CAP_100B:-$cap}
cap_period_us=${CAP_PERIOD_US:-20000}
instances=${INSTANCES:-1}
kafka_linger_ms=${KAFKA_LINGER_MS:-100}
sizes=${SIZES:-1024 100}
instances_100=${INSTANCES_100B:-$instances}
if [ -z "$cap" ] && [ -n "${CAP_100B:-}" ]; then
  echo "CAP_100B needs CAP" >&2
  exit 2
fi
# The capped broker's cgroup: its directory and which interface (v1 or v2) it speaks.
cgroup=
cgroup_version=

if [ -z "${NO_BUILD:-}" ]; then
  nice -n 10 cargo build --release --bins -p tidelog-broker -p tidelog-client >&2
  (cd benches/kafka-load && nice -n 10 cargo build --release >&2)
fi

stop_broker() {
  if [ -n "$broker_pid" ]; then
    kill -TERM "$broker_pid" 2>/dev/null || true
    wait "$broker_pid" 2>/dev/null || true
    broker_pid=
  fi
}
remove_cgroup() { # only once its process has gone: a cgroup with members cannot be removed
  if [ -n "$cgroup" ]; then
    rmdir "$cgroup" 2>/dev/null || echo "could not remove the cgroup $cgroup" >&2
    cgroup=
  fi
}
trap 'stop_broker; remove_cgroup; rm -rf "$work"' EXIT

# make_cgroup: a fresh cgroup with a cpu controller, from /proc/self/mountinfo: cgroup v1's
# cpu hierarchy (an fstype "cgroup" mount whose options name cpu), else a v2 hierarchy with
# cpu among its controllers. Sets cgroup and cgroup_version, or fails the run.
make_cgroup() {
  local v1 v2
  v1=$(awk '{ for (i = 7; i <= NF; i++) if ($i == "-") break
              if ($(i + 1) == "cgroup" && ("," $(i + 3) ",") ~ /,cpu,/) { print $5; exit } }' /proc/self/mountinfo)
  v2=$(awk '{ for (i = 7; i <= NF; i++) if ($i == "-") break
              if ($(i + 1) == "cgroup2") { print $5; exit } }' /proc/self/mountinfo)
  if [ -n "$v1" ] && [ -w "$v1/cgroup.procs" ]; then
    cgroup="$v1/kafka-vs-native-$$"
    cgroup_version=1
    mkdir "$cgroup"
    echo "$cap_period_us" >"$cgroup/cpu.cfs_period_us"
  elif [ -n "$v2" ] && grep -qw cpu "$v2/cgroup.controllers" 2>/dev/null; then
    # A v2 child gets the cpu controller only if its parent hands it down.
    grep -qw cpu "$v2/cgroup.subtree_control" || echo +cpu >"$v2/cgroup.subtree_control"
    cgroup="$v2/kafka-vs-native-$$"
    cgroup_version=2
    mkdir "$cgroup"
  else
    echo "CAP=$cap: no writable cgroup cpu controller (v1 cpu.cfs_quota_us or v2 cpu.max) in /proc/self/mountinfo" >&2
    exit 2
  fi
}

# set_cap FRACTION: the broker's quota, FRACTION of one core per period.
set_cap() {
  local quota
  quota=$(awk -v f="$1" -v p="$cap_period_us" 'BEGIN { q = int(f * p + 0.5); if (q < 1000 || f <= 0) exit 1; print q }') || {
    echo "cap $1 is below the kernel's 1 ms quota per $cap_period_us us period" >&2
    exit 2
  }
  if [ "$cgroup_version" = 1 ]; then
    echo "$quota" >"$cgroup/cpu.cfs_quota_us"
  else
    echo "$quota $cap_period_us" >"$cgroup/cpu.max"
  fi
}

# cgroup_throttle: "periods throttled" so far (cpu.stat, the same two counters in v1 and v2).
cgroup_throttle() {
  if [ -n "$cgroup" ]; then
    awk '$1 == "nr_periods" { p = $2 } $1 == "nr_throttled" { t = $2 } END { print p + 0, t + 0 }' "$cgroup/cpu.stat"
  else
    echo "0 0"
  fi
}

if [ -n "$cap" ]; then
  make_cgroup
  set_cap "$cap"
fi

$broker_cpus "$bin/tidelogd" --data-dir "$work/data" --listen "$native" --flush "$flush" \
  --kafka-listen "$kafka" --kafka-advertised "$kafka" 2>"$work/broker.log" &
broker_pid=$!
if [ -n "$cgroup" ]; then
  # cgroup.procs moves the whole process, every thread it has and will have.
  echo "$broker_pid" >"$cgroup/cgroup.procs" || { echo "cannot put the broker into $cgroup" >&2; exit 2; }
  grep -qx "$broker_pid" "$cgroup/cgroup.procs" || { echo "the broker is not in $cgroup" >&2; exit 2; }
fi
for _ in $(seq 1 100); do
  "$bin/tidelog" --broker "$native" topic list >/dev/null 2>&1 && break
  sleep 0.1
done
"$bin/tidelog" --broker "$native" topic list >/dev/null || { cat "$work/broker.log" >&2; exit 1; }

broker_cpu_ticks() { # utime + stime of the broker (fields 14 and 15; the name has no spaces)
  awk '{ print $14 + $15 }' "/proc/$broker_pid/stat"
}

# broker_threads_cpu FILE: "tid nanoseconds" of every live broker thread (schedstat's first
# field), to FILE: /proc/PID/stat counts in 10 ms ticks, a few percent of a 100 B run.
broker_threads_cpu() {
  local task ns
  for task in /proc/"$broker_pid"/task/*; do
    # A thread ending under us has no schedstat any more: leave it out (then it counts as
    # ended, and the ticks are used).
    ns=$(cut -d' ' -f1 "$task/schedstat" 2>/dev/null) || continue
    [ -n "$ns" ] && echo "${task##*/} $ns"
  done >"$1" || true
}

# broker_cpu_s BEFORE AFTER TICKS_BEFORE TICKS_AFTER: the broker's CPU seconds between two
# samples, from the per-thread nanoseconds; from the ticks if a thread ended in between (its
# nanoseconds went with it).
broker_cpu_s() {
  awk -v tb="$3" -v ta="$4" -v t="$ticks" '
    FNR == NR { before[$1] = $2; next }
    { after[$1] = $2 }
    END {
      for (tid in before) if (!(tid in after)) { printf "%.3f", (ta - tb) / t; exit }
      for (tid in after) sum += after[tid] - (tid in before ? before[tid] : 0)
      printf "%.3f", sum / 1e9
    }' "$1" "$2"
}

# cache_topic NAME: reads a topic's files once, so the consumes that follow read from memory.
cache_topic() {
  cat "$work/data/topics/$1"/*/* >/dev/null 2>&1 || true
}

settle_page_cache() {
  sync
  if [ -w /proc/sys/vm/drop_caches ]; then
    echo 3 > /proc/sys/vm/drop_caches
  fi
}

# measure LABEL RECORDS CMD...: runs CMD, prints "LABEL <summary> wall_s=W tool_cpu_s=U
# broker_cpu_s=B throttled=T" (T: the share of the cgroup's periods the broker was throttled in).
measure() {
  local label=$1 records=$2
  shift 2
  local before after summary times throttle_before throttle_after
  throttle_before=$(cgroup_throttle)
  broker_threads_cpu "$work/threads-before"
  before=$(broker_cpu_ticks)
  times="$work/times"
  summary=$( { TIMEFORMAT='%R %U %S'; time $tool_cpus "$@" 2>"$work/tool.err" | tail -n 1; } 2>"$times" ) || {
    echo "$label failed: $(tail -n 5 "$work/tool.err")" >&2
    return 1
  }
  after=$(broker_cpu_ticks)
  broker_threads_cpu "$work/threads-after"
  throttle_after=$(cgroup_throttle)
  local broker_s
  broker_s=$(broker_cpu_s "$work/threads-before" "$work/threads-after" "$before" "$after")
  awk -v label="$label" -v summary="$summary" -v broker_s="$broker_s" \
    -v tb="$throttle_before" -v ta="$throttle_after" \
    '{ split(tb, x, " "); split(ta, y, " "); periods = y[1] - x[1]
       printf "%s %s wall_s=%.3f tool_cpu_s=%.3f broker_cpu_s=%.3f throttled=%.2f\n", label, summary, $1, $2 + $3,
         broker_s, (periods > 0 ? (y[2] - x[2]) / periods : 0) }' "$times"
}

# Two generators at once, each with half the records; prints the aggregate like `measure`.
measure_two() {
  local label=$1 records=$2
  shift 2
  local half=$((records / 2)) before after start end
  before=$(broker_cpu_ticks)
  start=$(date +%s.%N)
  $tool_cpus "$@" --records "$half" >"$work/two-a" 2>"$work/two-a.err" &
  local a=$!
  $tool_cpus "$@" --records "$half" >"$work/two-b" 2>"$work/two-b.err" &
  local b=$!
  wait "$a" && wait "$b" || { echo "$label failed: $(tail -n 3 "$work"/two-*.err)" >&2; return 1; }
  end=$(date +%s.%N)
  after=$(broker_cpu_ticks)
  awk -v label="$label" -v s="$start" -v e="$end" -v n="$((half * 2))" -v b="$before" -v a="$after" -v t="$ticks" \
    'BEGIN { printf "%s records=%d records_per_s=%.1f (two generators, wall) wall_s=%.3f broker_cpu_s=%.3f\n", label, n, n / (e - s), e - s, (a - b) / t }'
}

results="$work/results"
: >"$results"
caps=none
[ -n "$cap" ] && caps="$cap of a core (100 B: $cap_100), period ${cap_period_us} us, cgroup v$cgroup_version"
echo "# $(date -u '+%F %T') UTC, $(git rev-parse --short HEAD), flush=$flush, pinned=${PIN:-no}, broker cap: $caps, kafka-load producers: $instances (100 B: $instances_100), linger ${kafka_linger_ms} ms, uptime: $(uptime)" >&2
round=0
for run in $(seq 1 "$runs"); do
  for partitions in $partitions_list; do
    size_index=0
    for size in $sizes; do
      size_index=$((size_index + 1))
      records=$records_1k
      [ "$size" = 100 ] && records=$records_100
      key="p$partitions-s$size"
      round=$((round + 1))
      if [ -n "$cap" ]; then
        if [ "$size" = 100 ]; then set_cap "$cap_100"; else set_cap "$cap"; fi
      fi
      tn="n-$key-$run"
      tk="k-$key-$run"
      "$bin/tidelog" --broker "$native" topic create "$tn" --partitions "$partitions" >/dev/null
      "$bin/tidelog" --broker "$native" topic create "$tk" --partitions "$partitions" >/dev/null
      # Alternate which listener goes first, so a drift in the machine's load hits both.
      produce_native() {
        measure "produce native $key" "$records" "$bin/tidelog" --broker "$native" perf produce "$tn" \
          --records "$records" --record-size "$size"
      }
      # Passed only when asked for, so a kafka-load built before --instances existed still runs.
      producers=$instances
      [ "$size" = 100 ] && producers=$instances_100
      instances_flag=()
      [ "$producers" != 1 ] && instances_flag=(--instances "$producers")
      produce_kafka() {
        measure "produce kafka $key" "$records" "$load" --bootstrap "$kafka" produce "$tk" \
          --records "$records" --record-size "$size" --linger-ms "$kafka_linger_ms" "${instances_flag[@]}"
      }
      consume_native() {
        measure "consume native $key" "$records" "$bin/tidelog" --broker "$native" perf consume "$tn" \
          --records "$records"
      }
      consume_kafka() {
        measure "consume kafka $key" "$records" "$load" --bootstrap "$kafka" consume "$tn" \
          --records "$records"
      }
      # The page cache is settled before each produce: once per round made the second
      # producer of every round write into pages the first had left in the cache, so it
      # needed fresh memory and paid twice the broker CPU per record at 1 KiB (k11, 1.6 us
      # against 0.8 us, whichever listener went second). The consumes must read from memory
      # (as in perf-matrix.sh), so the native topic is read back into the page cache after
      # both produces.
      # By run and by size, so each workload alternates from run to run whatever the sizes
      # (the round count alone, with two sizes, sent every 1 KiB round native-first).
      if [ $(((run + size_index) % 2)) = 1 ]; then
        settle_page_cache; produce_native; settle_page_cache; produce_kafka
        cache_topic "$tn"; consume_native; consume_kafka
      else
        settle_page_cache; produce_kafka; settle_page_cache; produce_native
        cache_topic "$tn"; consume_kafka; consume_native
      fi | tee -a "$results" >&2
      if [ -n "${TWO:-}" ]; then
        "$bin/tidelog" --broker "$native" topic create "$tk-two" --partitions "$partitions" >/dev/null
        settle_page_cache
        measure_two "produce kafka-two $key" "$records" "$load" --bootstrap "$kafka" produce "$tk-two" \
          --record-size "$size" --linger-ms "$kafka_linger_ms" | tee -a "$results" >&2
        measure_two "consume kafka-two $key" "$records" "$load" --bootstrap "$kafka" consume "$tn" \
          | tee -a "$results" >&2
        "$bin/tidelog" --broker "$native" topic delete "$tk-two" >/dev/null
      fi
      # The last round's native topics stay for the profile below; the rest go, to bound disk.
      "$bin/tidelog" --broker "$native" topic delete "$tk" >/dev/null
      if [ "$run" != "$runs" ]; then
        "$bin/tidelog" --broker "$native" topic delete "$tn" >/dev/null
      fi
    done
  done
done
echo "# done $(date -u '+%T') UTC, uptime: $(uptime)" >&2

# The table: per workload the median records/s of each listener, the median of the per-round
# ratios, and CPU (cores used = CPU seconds / measured seconds; broker CPU per record).
echo
echo "Medians of $runs rounds, flush=$flush, pinned=${PIN:-no}. kafka/native: records/s through each listener"
echo "(each tool's own rate). Cores: CPU seconds of the tool and of the broker over the measured"
echo "seconds (records / rate; the tool's start-up CPU included, so its figure errs high); a"
echo "tool near 1.00 core (or near 2.00 with the broker) is the limit, not the listener. Broker"
echo "capacity: records per broker CPU second, Kafka over native, the comparison no tool limits."
echo
if [ -n "$cap" ]; then
  echo "Broker capped at $caps: broker cores at the cap say the broker was the limit. Throttled:"
  echo "the share of the periods the broker was runnable in that it spent its whole quota."
  echo
  echo "| workload | partitions | record | native records/s | kafka records/s | kafka/native | native: tool, broker cores | kafka: tool, broker cores | broker ns/record native, kafka | broker capacity kafka/native | broker throttled native, kafka |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
else
  echo "| workload | partitions | record | native records/s | kafka records/s | kafka/native | native: tool, broker cores | kafka: tool, broker cores | broker ns/record native, kafka | broker capacity kafka/native |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
fi
awk -v capped="$cap" '
  function field(name,   i, kv) {
    for (i = 1; i <= NF; i++) { split($i, kv, "="); if (kv[1] == name) return kv[2] }
    return ""
  }
  function median(list,   n, arr, i, j, t) {
    n = split(list, arr, " ")
    for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (arr[j] + 0 < arr[i] + 0) { t = arr[i]; arr[i] = arr[j]; arr[j] = t }
    return n % 2 ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
  }
  $2 == "native" || $2 == "kafka" {
    k = $1 " " $3; side = $2; seen[k] = 1
    # Cores over the measured seconds (records / rate): kafka-load starts its clock after
    # librdkafka has started (about 0.5 s), so over wall seconds it would look idle. Start-up
    # CPU stays in the tool figure, which so errs high.
    rate = field("records_per_s"); measured = field("records") / rate
    rates[k, side] = rates[k, side] " " rate
    tool[k, side] = tool[k, side] " " field("tool_cpu_s") / measured
    broker[k, side] = broker[k, side] " " field("broker_cpu_s") / measured
    per[k, side] = per[k, side] " " field("broker_cpu_s") * 1e9 / field("records")
    throttled[k, side] = throttled[k, side] " " field("throttled")
    count[k, side]++
    last[k, side] = rate
    if (side == "kafka") kafka_rates[k, count[k, side]] = rate
    else native_rates[k, count[k, side]] = rate
  }
  END {
    for (k in seen) {
      ratios = ""
      for (i = 1; i <= count[k, "kafka"]; i++) ratios = ratios " " kafka_rates[k, i] / native_rates[k, i]
      split(k, parts, " "); split(parts[2], ps, "-")
      pn = median(per[k, "native"]); pk = median(per[k, "kafka"])
      printf "| %s | %s | %s B | %.0f | %.0f | %.2f | %.2f, %.2f | %.2f, %.2f | %.0f, %.0f | %s |", parts[1], substr(ps[1], 2), substr(ps[2], 2),
        median(rates[k, "native"]), median(rates[k, "kafka"]), median(ratios),
        median(tool[k, "native"]), median(broker[k, "native"]), median(tool[k, "kafka"]), median(broker[k, "kafka"]),
        pn, pk, (pk > 0 ? sprintf("%.2f", pn / pk) : "-")
      if (capped != "") printf " %.2f, %.2f |", median(throttled[k, "native"]), median(throttled[k, "kafka"])
      printf "\n"
    }
  }' "$results" | sort
if [ -n "${TWO:-}" ]; then
  echo
  grep kafka-two "$results" || true
fi

case " ${PROFILE:-} " in *" perf "*)
  # Where the broker spends a Kafka consume: sampled call stacks of tidelogd only, for the
  # whole of one consume of each size (the topics of the last round).
  for partitions in $partitions_list; do
    for size in 1024 100; do
      records=$records_1k
      [ "$size" = 100 ] && records=$records_100
      key="p$partitions-s$size"
      perf record -F 999 -g -o "$work/perf-$key.data" -p "$broker_pid" 2>"$work/perf-record.err" &
      perf_pid=$!
      # perf attaches asynchronously: wait (bounded) for it to write its header first.
      for _ in $(seq 1 100); do
        [ -s "$work/perf-$key.data" ] && break
        sleep 0.05
      done
      measure "profiled consume kafka $key" "$records" "$load" --bootstrap "$kafka" consume "n-$key-$runs" \
        --records "$records" >&2
      kill -INT "$perf_pid"
      wait "$perf_pid" || true
      echo
      echo "## broker during a Kafka consume, $key: self time by symbol (top 25)"
      perf report -i "$work/perf-$key.data" --no-children --sort symbol --percent-limit 0.5 \
        --stdio 2>/dev/null | grep -v '^#' | grep '%' | head -n 25
    done
  done
;;
esac

case " ${PROFILE:-} " in *" callgrind "*)
  # The same data directory, the broker restarted under callgrind (valgrind runs it in the same
  # process, so $! is the broker). Counters are zeroed right before each consume and dumped
  # right after, so startup and idle time are left out.
  stop_broker
  valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.out" \
    "$bin/tidelogd" --data-dir "$work/data" --listen "$native" --flush "$flush" \
    --kafka-listen "$kafka" --kafka-advertised "$kafka" 2>"$work/broker-callgrind.log" &
  broker_pid=$!
  for _ in $(seq 1 600); do
    "$bin/tidelog" --broker "$native" topic list >/dev/null 2>&1 && break
    sleep 0.2
  done
  dump=0
  for partitions in $partitions_list; do
    for size in 1024 100; do
      records=$((records_1k / 10))
      [ "$size" = 100 ] && records=$((records_100 / 10))
      key="p$partitions-s$size"
      callgrind_control --zero "$broker_pid" >/dev/null
      measure "callgrind consume kafka $key" "$records" "$load" --bootstrap "$kafka" consume "n-$key-$runs" \
        --records "$records" --timeout-ms 120000 >&2
      callgrind_control --dump="$key" "$broker_pid" >/dev/null
      dump=$((dump + 1))
      file=$(ls -t "$work"/callgrind.out* | head -n 1)
      total=$(awk '/^summary:/ { print $2 }' "$file")
      echo
      echo "## broker instructions during a Kafka consume of $records records, $key"
      awk -v total="$total" -v n="$records" -v size="$size" 'BEGIN {
        printf "total %d Ir: %.0f per record, %.0f per MiB of record values\n", total, total / n, total / (n * size / 1048576) }'
      # Self cost by function (the first lines are the thread entry points, inclusive).
      callgrind_annotate --threshold=100 --inclusive=no "$file" 2>/dev/null \
        | grep -E '^ *[0-9,]+ +\(' | grep -v 'PROGRAM TOTALS' | head -n 25
    done
  done
;;
esac
