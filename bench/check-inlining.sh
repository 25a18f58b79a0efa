#!/usr/bin/env bash
# Runs one `rr bench` workload with JFR recording C2's inlining decisions and fails if a C2
# compilation of one of our methods gave up inlining for lack of node budget
# (NodeCountInliningCutoff) or size (DesiredMethodLimit). A Vector API call that C2 does not
# inline boxes its vectors and runs 10-50x slower (see CpuBackend's class comment, "JIT shape").
# Usage: bench/check-inlining.sh [workload, default c] [more rr bench options, e.g. --threads 1]
#                                                           (about a minute on 2 cores)
#        CHECK_JFR=recording.jfr bench/check-inlining.sh    (check an existing recording made with
#        -XX:StartFlightRecording:jdk.CompilerInlining#enabled=true,jdk.Compilation#threshold=0ms,...)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
java="${JAVA_HOME:-/usr/lib/jvm/temurin-25-jdk-amd64}/bin"
[[ -x "$java/jfr" ]] || java="$(dirname "$(readlink -f "$(command -v java)")")"
if [[ -n "${CHECK_JFR:-}" ]]; then
  rec="$CHECK_JFR"
else
  dir="$(mktemp -d)"
  trap 'rm -rf "$dir"' EXIT
  rec="$dir/inlining.jfr"
  RR_AOT=0 RR_JAVA_OPTS="-XX:StartFlightRecording:jdk.CompilerInlining#enabled=true,jdk.Compilation#threshold=0ms,filename=$rec" \
    "$root/rr" bench --workloads "${1:-c}" --repeat 2 --warmup 1 "${@:2}" > "$dir/bench.log" 2>&1 || { cat "$dir/bench.log"; exit 1; }
fi
{ "$java/jfr" print --events jdk.Compilation "$rec"; echo "#INLINING"; "$java/jfr" print --events jdk.CompilerInlining "$rec"; } | awk '
  /^#INLINING/ { inl = 1; next }
  /^[a-zA-Z.]+ \{/ { id = ""; method = ""; caller = ""; callee = ""; msg = ""; thread = ""; next }
  /^  compileId = / { id = $3 }
  /^  method = / { method = $0; sub(/^ *method = /, "", method) }
  /^  caller = / { caller = $0; sub(/^ *caller = /, "", caller) }
  /^    type = / { type = $3; gsub(/"/, "", type); gsub(/\//, ".", type) }
  /^    name = / { callee = type "." $3; gsub(/"/, "", callee) }
  /^  message = / { msg = $0; sub(/^ *message = /, "", msg); gsub(/"/, "", msg) }
  /^  eventThread = / { thread = $0 }
  /^\}/ {
    if (!inl) root[id] = method
    else if (thread ~ /C2 CompilerThread/ && msg ~ /NodeCountInliningCutoff|DesiredMethodLimit/ && root[id] ~ /^rrj\./) {
      bad++; print "compile " id " of " root[id] ": " callee " not inlined into " caller " (" msg ")"
    }
  }
  END {
    if (bad) { print bad " inlining cut-offs in C2 compilations of rrj methods"; exit 1 }
    print "ok: no inlining cut-offs in C2 compilations of rrj methods"
  }'
