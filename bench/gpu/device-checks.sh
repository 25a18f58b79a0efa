#!/usr/bin/env bash
# The CUDA backend's checks on a GPU machine, in one go: the @Tag("gpu") tests of
# rrj.engine.cuda (every op against ReferenceBackend, training ops against CpuTraining, a BERT
# encoder against CpuBackend), then rrj.bench.GpuBench (parity of the real Bert on CUDA vs
# CPU, forward timings against the cuBLAS floor, LoRA overhead), then bench/gpu/torch_eager.py
# (PyTorch eager fp32 on the same shapes), then the real default model (all-MiniLM-L6-v2):
# rrj.bench.GpuModelCheck (forward with base and mixed shipped experts, LoRA gradients against
# CpuBackend) and a short `rr train-expert --backend cuda` on SciFact. About 3-5 minutes.
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
# The real models' weights (all-MiniLM-L6-v2 87 MB, bge-small-en-v1.5 133 MB) do not fit one
# call's 64 MiB next to the runtime, so `prepare` also packs them into one tar cut in parts of
# 44 MB (bench/target/gpu-model-1 … -N), and N calls before `run`, on the same warm machine,
# park them in /tmp/rrj-model:
#   run(command="bash bench/gpu/device-checks.sh receive K", carry=["bench/target/gpu-model-K"])
# `run` checks the SHA-256 of the joined tar and leaves the real-model part out (saying so)
# when a part is missing, e.g. because the machine went back between the calls.

# Environment for `run`: RRJ_CUBLAS=/path/to/libcublas.so.N if the script's search finds none;
# RRJ_REPS (default 20); SKIP_TORCH=1 to leave out the PyTorch run; GPUBENCH_ARGS (e.g. "--quick
# --layers 1") for a dry run on cuda-emu (engine/src/main/cuda/emu), where it checks the script only;
# MODEL_BACKEND=cpu puts the CPU in CUDA's place in steps 3 and 4 (a dry run of those; cuda-emu is
# too slow for a real model).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
stage="$root/bench/target/gpu-run"
parked=/tmp/rrj-model
model_name=all-minilm-l6-v2
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
  cp bench/target/classes/rrj/bench/GpuBench*.class bench/target/classes/rrj/bench/GpuModelCheck*.class \
    bench/target/classes/rrj/bench/Shapes*.class "$stage/bench/rrj/bench/"
  mkdir -p "$stage/app"
  cp app/target/app-*.jar router/target/router-*.jar weights-converter/target/weights-converter-*.jar "$stage/app/"
  # the real models: the default one (converted into the cache by ./rr on first use) and
  # bge-small-en-v1.5 (converted by weights-converter's tests, when they have run), as one tar
  # in parts for the `receive` calls, with its SHA-256 and part count
  local cache="${RR_CACHE:-${XDG_CACHE_HOME:+$XDG_CACHE_HOME/rrj}}"
  cache="${cache:-$HOME/.cache/rrj}"
  [ -f "$cache/models/$model_name/model.safetensors" ] || ./rr embed hello >/dev/null
  local pack="$root/bench/target/gpu-models.tmp" bge=weights-converter/target/test-models/bge-small-en-v1.5-converted
  rm -rf "$pack" bench/target/gpu-model-* && mkdir -p "$pack/models" "$stage/model-files"
  ln -s "$cache/models/$model_name" "$pack/models/$model_name"
  if [ -f "$bge/model.safetensors" ]; then ln -s "$root/$bge" "$pack/models/bge-small-en-v1.5"
  else echo "no $bge (run weights-converter's tests once to convert it): bge-small-en-v1.5 left out"; fi
  tar -C "$pack/models" -chf "$pack/models.tar" .
  sha256sum < "$pack/models.tar" | cut -d' ' -f1 > "$stage/model-files/models.tar.sha256"
  split -b 44M -d -a 1 "$pack/models.tar" "$pack/part."
  local k=0 f
  for f in "$pack"/part.*; do k=$((k + 1)); mkdir -p "bench/target/gpu-model-$k"; mv "$f" "bench/target/gpu-model-$k/part"; done
  echo "$k" > "$stage/model-files/parts"
  rm -rf "$pack"
  # a JDK 25 runtime with just what the tests and the bench use (the GPU machine may have no JDK 25)
  "${JAVA_HOME:?set JAVA_HOME to a JDK 25}/bin/jlink" --add-modules java.base,jdk.incubator.vector,java.logging,java.management,jdk.unsupported,jdk.httpserver \
    --strip-debug --no-man-pages --no-header-files --compress=zip-9 --output "$stage/jre" 2>&1 | grep -v "incubator modules" || true
  strip --strip-unneeded "$stage/jre/lib/server/libjvm.so" 2>/dev/null || true
  du -sh "$stage" bench/target/gpu-model-*   # the device tool sends at most 64 MiB a call: each plus the working tree
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

  echo "== 1/5 @Tag(\"gpu\") tests (rrj.engine.cuda)"
  timeout 300 "$java" "${flags[@]}" -Xmx16g -cp "$stage/engine:$stage/engine-test:$stage/lib/*" rrj.engine.cuda.GpuTestMain 2>&1 \
    | grep -v '^WARNING' | tee "$out/gpu-tests.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || failed+=("gpu tests")

  echo "== 2/5 GpuBench (parity with CpuBackend, timings)"
  timeout 300 "$java" "${flags[@]}" -Xmx32g -cp "$stage/engine:$stage/model:$stage/bench:$stage/lib/*" rrj.bench.GpuBench --reps "$reps" ${GPUBENCH_ARGS:-} 2>&1 \
    | grep -v '^WARNING' | tee "$out/gpubench.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || failed+=("GpuBench")

  echo "== 3/5 real models: GpuModelCheck (forward, with experts on the default model; LoRA gradients vs CpuBackend)"
  local models=() parts k
  parts=$(cat "$stage/model-files/parts" 2>/dev/null || echo 0)
  for ((k = 1; k <= parts; k++)); do [ -f "$parked/part.$k" ] || parts=-1; done
  if [ "$parts" -gt 0 ]; then
    if [ "$(cat $(seq -f "$parked/part.%g" 1 "$parts") | sha256sum | cut -d' ' -f1)" = "$(cat "$stage/model-files/models.tar.sha256")" ]; then
      rm -rf "$parked/models" && mkdir -p "$parked/models" && cat $(seq -f "$parked/part.%g" 1 "$parts") | tar -C "$parked/models" -xf -
      models=("$parked"/models/*/)
    else echo "the joined model parts do not match their SHA-256: real-model checks left out"; failed+=("model transfer"); fi
  else echo "model parts missing in $parked (run 'receive 1' … 'receive N' first, on the same warm machine): only the tiny random BERT is checked"; fi
  local checks=(--data data/scifact --experts none) m
  for m in "${models[@]}"; do
    checks+=(--model "${m%/}" --experts "$([ "$(basename "$m")" = "$model_name" ] && echo experts || echo none)")
  done
  timeout 300 "$java" "${flags[@]}" -Xmx16g -cp "$stage/engine:$stage/model:$stage/bench:$stage/app/*:$stage/lib/*" rrj.bench.GpuModelCheck \
    --backend "${MODEL_BACKEND:-cuda}" "${checks[@]}" 2>&1 | grep -v '^WARNING' | tee "$out/modelcheck.log"
  [ "${PIPESTATUS[0]}" -eq 0 ] || failed+=("GpuModelCheck")

  local md="$parked/models/$model_name"
  if [ -d "$md" ]; then
    echo "== 4/5 rr train-expert --backend cuda: the shipped SciFact expert's recipe (experts/README.md)"
    rm -rf /tmp/rrj-cache /tmp/rrj-gpucheck
    RR_CACHE=/tmp/rrj-cache timeout 300 "$java" "${flags[@]}" -Xmx16g -Drr.home="$root" -cp "$stage/engine:$stage/model:$stage/app/*:$stage/lib/*" \
      rrj.app.Main train-expert --data data/scifact --name scifact-gpu --model "$md" --backend "${MODEL_BACKEND:-cuda}" \
      --epochs "${TRAIN_EPOCHS:-10}" --batch 32 --validate-every 25 --out /tmp/rrj-gpucheck 2>&1 | tr '\r' '\n' | grep -v '^WARNING' | tee "$out/train.log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || failed+=("train-expert")
    cp /tmp/rrj-gpucheck/adapter_model.safetensors "$out/scifact-gpu.adapter_model.safetensors" 2>/dev/null
    cp /tmp/rrj-gpucheck/adapter_config.json "$out/scifact-gpu.adapter_config.json" 2>/dev/null
  fi

  if [ "${SKIP_TORCH:-0}" != 1 ]; then
    echo "== 5/5 PyTorch eager fp32, same shapes"
    PYTHONUNBUFFERED=1 timeout 240 python3 "$here/torch_eager.py" --reps "$reps" 2>&1 | tee "$out/torch.log"
    [ "${PIPESTATUS[0]}" -eq 0 ] || failed+=("torch_eager.py")
  fi

  if [ ${#failed[@]} -eq 0 ]; then echo "device checks: all passed (logs in $out)"; else echo "device checks FAILED: ${failed[*]} (logs in $out)"; exit 1; fi
}

receive() { # park one half of the model's weights outside the working tree, for a later `run`
  local part="$root/bench/target/gpu-model-$1/part"
  [ -f "$part" ] || { echo "no $part: carry bench/target/gpu-model-$1"; exit 2; }
  mkdir -p "$parked" && cp "$part" "$parked/part.$1" && ls -la "$parked"
}

case "${1:-run}" in
  prepare) prepare ;;
  receive) receive "${2:?receive 1|2}" ;;
  run) run ;;
  *) echo "usage: $0 prepare|receive 1|receive 2|run"; exit 2 ;;
esac
