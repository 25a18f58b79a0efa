#!/usr/bin/env bash
# Runs one `rr bench` workload with JFR recording C2's inlining decisions and fails if a C2
# compilation of one of our methods gave up inlining for lack of node budget
# (NodeCountInliningCutoff) or size (DesiredMethodLimit). A Vector API call that C2 does not
# inline boxes its vectors and runs 10-50x slower (see CpuBackend's class comment, "JIT shape").
# Whether a compilation passes the budget can depend on compile timing (a profile seen before or
# after C2 starts), so one clean run proves little: CHECK_RUNS=N repeats the run N times and
# fails if any of them has a cut-off.
# Usage: bench/check-inlining.sh [workload, default c] [more rr bench options, e.g. --threads 1]
#                                                           (about 20-60 s per run on 2 cores)
#        CHECK_RUNS=5 bench/check-inlining.sh e             (five runs)
#        CHECK_JFR=recording.jfr bench/check-inlining.sh    (check an existing recording made with
#        -XX:StartFlightRecording:jdk.CompilerInlining#enabled=true,jdk.Compilation#threshold=0ms,...)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
java="${JAVA_HOME:-/usr/lib/jvm/temurin-25-jdk-amd64}/bin"
[[ -x "$java/jfr" ]] || java="$(dirname "$(readlink -f "$(command -v java)")")"
check() { # $1: a recording; prints the cut-offs, fails if there is one
  local rec="$1"
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
}
if [[ -n "${CHECK_JFR:-}" ]]; then
  check "$CHECK_JFR"
  exit
fi
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
runs="${CHECK_RUNS:-1}" failed=0
for ((run = 1; run <= runs; run++)); do
  rec="$dir/inlining-$run.jfr"
  RR_AOT=0 RR_JAVA_OPTS="-XX:StartFlightRecording:jdk.CompilerInlining#enabled=true,jdk.Compilation#threshold=0ms,filename=$rec" \
    "$root/rr" bench --workloads "${1:-c}" --repeat 2 --warmup 1 "${@:2}" > "$dir/bench.log" 2>&1 || { cat "$dir/bench.log"; exit 1; }
  (( runs > 1 )) && echo "run $run of $runs:"
  check "$rec" || failed=$((failed + 1))
done
(( runs > 1 )) && echo "$failed of $runs runs had cut-offs"
(( failed == 0 ))
