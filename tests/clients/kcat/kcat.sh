#!/usr/bin/env bash
# kcat driver for Tidelog's end-to-end tests (tests/tests/kafka_librdkafka.rs): Debian's kcat
# 1.7.1 on librdkafka 2.0.2, older than 2.2, so it misreads tagged fields written with their
# default values. Prints JSON lines like tests/clients/node/kafka.js where kcat can (kcat
# reports no offsets when producing: the test consumes to learn them).
#
#   kcat.sh metadata --bootstrap H:P
#   kcat.sh produce  --bootstrap H:P --topic T --records N --keys K --tag TAG
#                    [--acks 1|-1|0] [--idempotent] [--compression none|gzip|snappy|lz4|zstd]
#   kcat.sh offsets  --bootstrap H:P --topic T --partitions N
#   kcat.sh consume  --bootstrap H:P --topic T                 (everything, then exit)
#   kcat.sh group    --bootstrap H:P --topic T --group G --records N
#                    (a balanced consumer; auto-commits; exits after N records)
# KCAT names the binary (default: kcat); KCAT_DEBUG=protocol,broker,cgrp adds librdkafka's
# debug log on stderr.
set -euo pipefail

kcat="${KCAT:-kcat}"
command="${1:?usage: kcat.sh COMMAND --bootstrap H:P ...}"
shift
bootstrap="" topic="" records="" keys=3 tag="" acks=-1 idempotent=false compression=none
partitions="" group=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bootstrap) bootstrap="$2"; shift 2 ;;
    --topic) topic="$2"; shift 2 ;;
    --records) records="$2"; shift 2 ;;
    --keys) keys="$2"; shift 2 ;;
    --tag) tag="$2"; shift 2 ;;
    --acks) acks="$2"; shift 2 ;;
    --idempotent) idempotent=true; shift ;;
    --compression) compression="$2"; shift 2 ;;
    --partitions) partitions="$2"; shift 2 ;;
    --group) group="$2"; shift 2 ;;
    *) echo "kcat.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
[ -n "$bootstrap" ] || { echo "kcat.sh: --bootstrap is required" >&2; exit 2; }

common=(-b "$bootstrap" -X socket.timeout.ms=20000 -X client.id=tidelog-e2e-kcat)
if [ -n "${KCAT_DEBUG:-}" ]; then
  common+=(-d "$KCAT_DEBUG")
fi

case "$command" in
  metadata)
    printf '{"event":"version","version":"%s"}\n' "$("$kcat" -V 2>&1 | sed -n 's/^Version \([^ ]*\).*librdkafka \([^ ]*\).*/\1 librdkafka \2/p')"
    printf '{"event":"metadata","metadata":%s}\n' "$("$kcat" "${common[@]}" -L -J)"
    ;;
  produce)
    [ -n "$topic" ] && [ -n "$records" ] && [ -n "$tag" ] || { echo "kcat.sh: produce needs --topic --records --tag" >&2; exit 2; }
    declare -A sequence=()
    lines=""
    for ((i = 0; i < records; i++)); do
      key="k$((i % keys))"
      seq="${sequence[$key]:-0}"
      sequence[$key]=$((seq + 1))
      lines+="$key|$tag-$key-$seq"$'\n'
    done
    # -K: the text before the first | is the key. librdkafka's murmur2 partitioner, as Java's
    # and kafkajs's default, so every client puts a key in the same partition.
    printf '%s' "$lines" | "$kcat" "${common[@]}" -P -t "$topic" -K '|' -z "$compression" \
      -X "acks=$acks" -X "enable.idempotence=$idempotent" -X partitioner=murmur2_random \
      -X linger.ms=5 -X message.timeout.ms=30000 -H "tag=$tag"
    printf '{"event":"produced_all","records":%s}\n' "$records"
    ;;
  offsets)
    [ -n "$topic" ] && [ -n "$partitions" ] || { echo "kcat.sh: offsets needs --topic --partitions" >&2; exit 2; }
    for ((p = 0; p < partitions; p++)); do
      # -Q with a logical offset: -2 beginning, -1 end (ListOffsets).
      low="$("$kcat" "${common[@]}" -Q -t "$topic:$p:-2" | sed -n 's/.* offset \(-\?[0-9]*\)$/\1/p')"
      high="$("$kcat" "${common[@]}" -Q -t "$topic:$p:-1" | sed -n 's/.* offset \(-\?[0-9]*\)$/\1/p')"
      printf '{"event":"offsets","partition":%d,"low":%s,"high":%s}\n' "$p" "${low:-null}" "${high:-null}"
    done
    ;;
  consume)
    [ -n "$topic" ] || { echo "kcat.sh: consume needs --topic" >&2; exit 2; }
    "$kcat" "${common[@]}" -C -t "$topic" -o beginning -e -J | sed 's/^/{"event":"consumed","record":/; s/$/}/'
    ;;
  group)
    [ -n "$topic" ] && [ -n "$group" ] && [ -n "$records" ] || { echo "kcat.sh: group needs --topic --group --records" >&2; exit 2; }
    # -c: exit after that many records; auto commit (on close too) keeps the position. No -o:
    # kcat would assign every partition at that offset, ignoring the group's commits.
    "$kcat" "${common[@]}" -G "$group" -c "$records" -J \
      -X auto.offset.reset=earliest -X enable.auto.commit=true -X session.timeout.ms=10000 \
      -X heartbeat.interval.ms=500 "$topic" | sed 's/^/{"event":"consumed","record":/; s/$/}/'
    ;;
  *)
    echo "kcat.sh: unknown command $command" >&2
    exit 2
    ;;
esac
