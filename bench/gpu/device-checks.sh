#!/usr/bin/env bash
# The CUDA backend's checks on a GPU machine, in one go: the @Tag("gpu") tests of
# rrj.engine.cuda (every op against ReferenceBackend, training ops against CpuTraining, a BERT
# encoder against CpuBackend), then rrj.bench.GpuBench (parity of the real Bert on CUDA vs
# CPU, forward timings against the cuBLAS floor, LoRA overhead), then bench/gpu/torch_eager.py
# (PyTorch eager fp32 on the same shapes). About 3-5 minutes on an H100.
#
# The GPU machine has no Maven and may have no JDK 25, so the work is split in two:
#
#   bash bench/gpu/device-checks.sh prepare    # here: builds, stages classes + jars + a jlinked
#                                              # JDK 25 runtime into bench/target/gpu-run (~43 MB)
#   bash bench/gpu/device-checks.sh run        # there: runs everything, logs into $OUT (or
#                                              # bench/target/gpu-out); exit 0 only if all passed
#
# With the device tool: run(command="bash bench/gpu/device-checks.sh run",
# carry=["bench/target/gpu-run"], timeout_s=540). bench/target is git-ignored (target/), which
# is what lets it travel as a carried path.
#
# Environment for `run`: RRJ_CUBLAS=/path/to/libcublas.so.N if the script's search finds none;
# RRJ_REPS (default 20); SKIP_TORCH=1 to leave out the PyTorch run; GPUBENCH_ARGS (e.g. "--quick
# --layers 1") for a dry run on cuda-emu (engine/src/main/cuda/emu), where it checks the script only.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
stage="$root/bench/target/gpu-run"
flags=(--add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED -Xss4m)

prepare() {
  set -e
  cd "$root"
  export MAVEN_OPTS="${MAVEN_OPTS:---sun-misc-unsafe-memory-access=allow}"
  mvn -B -ntp -q -o install -DskipTests
  rm -rf "$stage"
  mkdir -p "$stage/lib" "$stage/engine" "$stage/engine-test" "$stage/model" "$stage/bench/rrj/bench"
  mvn -B -ntp -q -o -pl engine dependency:build-classpath -Dmdep.includeScope=test -Dmdep.outputFile="$stage/engine.cp"
  tr ':' '\n' < "$stage/engine.cp" | xargs -r cp -t "$stage/lib/"
  # JCuda's natives jar carries the runtime, NVRTC and PTX-compiler bindings too (24 MB); keep the driver's
  local natives
  natives=$(ls "$stage"/lib/jcuda-natives-*.jar)
  (cd "$stage" && mkdir -p natives.tmp && cd natives.tmp && unzip -q "$natives" 'lib/libJCudaDriver-*' 'META-INF/*' \
    && rm "$natives" && zip -q -r "$natives" . && cd .. && rm -rf natives.tmp)
  cp -r engine/target/classes/. "$stage/engine/"
  cp -r engine/target/test-classes/. "$stage/engine-test/"
  cp -r model/target/classes/. "$stage/model/"
  cp bench/target/classes/rrj/bench/GpuBench*.class bench/target/classes/rrj/bench/Shapes*.class "$stage/bench/rrj/bench/"
  # a JDK 25 runtime with just what the tests and the bench use (the GPU machine may have no JDK 25)
  "${JAVA_HOME:?set JAVA_HOME to a JDK 25}/bin/jlink" --add-modules java.base,jdk.incubator.vector,java.logging,java.management,jdk.unsupported \
    --strip-debug --no-man-pages --no-header-files --compress=zip-9 --output "$stage/jre" 2>&1 | grep -v "incubator modules" || true
  strip --strip-unneeded "$stage/jre/lib/server/libjvm.so" 2>/dev/null || true
  du -sh "$stage"   # the device tool sends at most 64 MiB: this plus the working tree
  echo "staged in $stage; on the GPU machine: bash bench/gpu/device-checks.sh run  (carry bench/target/gpu-run)"
}

find_cublas() {
  [ -n "${RRJ_CUBLAS:-}" ] && return
  local f
  f=$(ldconfig -p 2>/dev/null | awk '/libcublas\.so\.1[32] /{print $NF; exit}')
  [ -z "$f" ] && f=$(find /usr/local /opt /usr/lib /usr/lib64 -name 'libcublas.so.13' 2>/dev/null | head -1)
  [ -z "$f" ] && f=$(find /usr/local /opt /usr/lib /usr/lib64 -name 'libcublas.so.12' 2>/dev/null | head -1)
  [ -n "$f" ] && export RRJ_CUBLAS="$f"
}

run() {
  cd "$root"
  local out="${OUT:-$root/bench/target/gpu-out}" java="$stage/jre/bin/java" reps="${RRJ_REPS:-20}" failed=()
  mkdir -p "$out"
  [ -x "$java" ] || { echo "no staged runtime in $stage: run 'bash bench/gpu/device-checks.sh prepare' first, here, and carry bench/target/gpu-run"; exit 2; }
  { nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "nvidia-smi: none"; } 2>&1 | tee "$out/device.txt"
  find_cublas
  echo "RRJ_CUBLAS=${RRJ_CUBLAS:-<none found: JCublas (libcublas.so.12) or the loader path must provide cuBLAS>}" | tee -a "$out/device.txt"
  "$java" -version 2>&1 | head -1 | tee -a "$out/device.txt"

  echo "== 1/3 @Tag(\"gpu\") tests (rrj.engine.cuda)"
  timeout 300 "$java" "${flags[@]}" -Xmx16g -cp "$stage/engine:$stage/engine-test:$stage/lib/*" rrj.engine.cuda.GpuTestMain 2>&1 \
    | grep -v '^WARNING' | tee "$out/gpu-tests.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || failed+=("gpu tests")

  echo "== 2/3 GpuBench (parity with CpuBackend, timings)"
  timeout 300 "$java" "${flags[@]}" -Xmx32g -cp "$stage/engine:$stage/model:$stage/bench:$stage/lib/*" rrj.bench.GpuBench --reps "$reps" ${GPUBENCH_ARGS:-} 2>&1 \
    | grep -v '^WARNING' | tee "$out/gpubench.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || failed+=("GpuBench")

  if [ "${SKIP_TORCH:-0}" != 1 ]; then
    echo "== 3/3 PyTorch eager fp32, same shapes"
    PYTHONUNBUFFERED=1 timeout 240 python3 "$here/torch_eager.py" --reps "$reps" 2>&1 | tee "$out/torch.log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || failed+=("torch_eager.py")
  fi

  if [ ${#failed[@]} -eq 0 ]; then echo "device checks: all passed (logs in $out)"; else echo "device checks FAILED: ${failed[*]} (logs in $out)"; exit 1; fi
}

case "${1:-run}" in
  prepare) prepare ;;
  run) run ;;
  *) echo "usage: $0 prepare|run"; exit 2 ;;
esac
