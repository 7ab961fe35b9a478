#!/usr/bin/env bash
# Installs the real Kafka clients that tests/tests/kafka_*.rs drive, idempotently:
#   node    kafkajs (+ kafkajs-snappy) from tests/clients/node/package-lock.json, with `npm ci`
#   python  a venv with confluent-kafka and kafka-python (+ codecs) from
#           tests/clients/python/requirements.txt (exact pins)
#   kcat    Debian's kcat (bookworm: 1.7.1 on librdkafka 2.0.2) with apt-get
#
# Usage: install.sh [--print-paths] node|python|kcat|all ...
#
# The end-to-end tests run this once per test process (tests/src/kafka_clients.rs); .ci/run
# runs it up front. Many processes may run it at once, so all the work happens under an
# exclusive flock; a client already installed (its stamp matches the pinned inputs) costs a
# file comparison. Output of the package tools goes to $TIDELOG_CLIENTS_DIR/install.log; on
# failure its tail is printed and the exit status is non-zero, so a client that cannot be
# installed fails the run instead of being skipped.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
state="${TIDELOG_CLIENTS_DIR:-$repo/target/kafka-clients}"
mkdir -p "$state"
log="$state/install.log"
venv="$state/venv"
node_dir="$here/node"

print_paths=false
kinds=()
for arg in "$@"; do
  case "$arg" in
    --print-paths) print_paths=true ;;
    node | python | kcat) kinds+=("$arg") ;;
    all) kinds+=(node python kcat) ;;
    *)
      echo "install.sh: unknown argument '$arg' (want node, python, kcat, all, --print-paths)" >&2
      exit 2
      ;;
  esac
done
if [ ${#kinds[@]} -eq 0 ]; then
  kinds=(node python kcat)
fi

fail() {
  echo "install.sh: $1" >&2
  if [ -s "$log" ]; then
    echo "---- last lines of $log ----" >&2
    tail -n 40 "$log" >&2
  fi
  exit 1
}

# Runs a command with its output appended to the log.
logged() {
  echo "+ $*" >>"$log"
  "$@" >>"$log" 2>&1
}

# A stamp records what an install was made from; equal stamps mean nothing to do.
stamp_matches() { [ -f "$1" ] && [ "$(cat "$1")" = "$2" ]; }

install_node() {
  command -v node >/dev/null 2>&1 || fail "node is not installed (kafkajs needs Node.js >= 18: apt-get install nodejs npm)"
  command -v npm >/dev/null 2>&1 || fail "npm is not installed (apt-get install npm)"
  local major
  major="$(node -p 'process.versions.node.split(".")[0]')"
  [ "$major" -ge 18 ] || fail "node $(node --version) is too old for kafkajs 2.2.4 here (want >= 18)"
  local want stamp="$node_dir/node_modules/.tidelog-install-stamp"
  want="$(node --version) $(sha256sum "$node_dir/package-lock.json" | cut -d' ' -f1)"
  if stamp_matches "$stamp" "$want" && [ -f "$node_dir/node_modules/kafkajs/package.json" ]; then
    return 0
  fi
  echo "==== node: npm ci in $node_dir ($(date -u +%FT%TZ))" >>"$log"
  (cd "$node_dir" && logged npm ci --no-audit --no-fund --loglevel=warn) \
    || fail "npm ci of kafkajs failed (is the npm registry reachable?)"
  echo "$want" >"$stamp"
}

install_python() {
  command -v python3 >/dev/null 2>&1 || fail "python3 is not installed (apt-get install python3 python3-venv)"
  local requirements="$here/python/requirements.txt"
  local want stamp="$venv/.tidelog-install-stamp"
  want="$(python3 --version 2>&1) $(sha256sum "$requirements" | cut -d' ' -f1)"
  if stamp_matches "$stamp" "$want" && [ -x "$venv/bin/python" ]; then
    return 0
  fi
  echo "==== python: venv $venv ($(date -u +%FT%TZ))" >>"$log"
  rm -rf "$venv"
  logged python3 -m venv "$venv" \
    || fail "python3 -m venv failed (Debian's python3 needs: apt-get install python3-venv)"
  logged "$venv/bin/python" -m pip install --disable-pip-version-check --no-input \
    --only-binary=confluent-kafka -r "$requirements" \
    || fail "pip install of confluent-kafka and kafka-python failed (is PyPI reachable?)"
  # The codecs are optional to kafka-python and silently absent if an import fails: check.
  logged "$venv/bin/python" -c "
import confluent_kafka, kafka
from kafka.codec import has_gzip, has_snappy, has_lz4, has_zstd
assert has_gzip() and has_snappy() and has_lz4() and has_zstd(), 'kafka-python lacks a codec'
" || fail "the venv's clients or kafka-python's codecs do not import"
  echo "$want" >"$stamp"
}

install_kcat() {
  if command -v kcat >/dev/null 2>&1 && kcat -V >/dev/null 2>&1; then
    return 0
  fi
  echo "==== kcat: apt-get install kcat ($(date -u +%FT%TZ))" >>"$log"
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null \
      || fail "kcat is not installed and installing it needs root: apt-get install kcat"
    sudo=(sudo -n)
  fi
  command -v apt-get >/dev/null 2>&1 || fail "kcat is not installed and there is no apt-get: install kcat (librdkafka 2.0.x) by hand"
  export DEBIAN_FRONTEND=noninteractive
  logged "${sudo[@]}" apt-get update -q || fail "apt-get update failed"
  logged "${sudo[@]}" apt-get install -y -q --no-install-recommends kcat \
    || fail "apt-get install kcat failed"
  kcat -V >/dev/null 2>&1 || fail "kcat was installed but does not run"
}

exec 9>"$state/install.lock"
flock 9 || fail "could not lock $state/install.lock"
for kind in "${kinds[@]}"; do
  "install_$kind"
done

if $print_paths; then
  # Read by the test harness: one KEY=VALUE per line.
  echo "state=$state"
  echo "node_dir=$node_dir"
  echo "python=$venv/bin/python"
  echo "kcat=$(command -v kcat || true)"
fi
