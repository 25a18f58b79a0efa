#!/usr/bin/env bash
# Runs engine's @Tag("gpu") tests (-Pgpu) against cuda-emu instead of a GPU: the real
# CudaBackend, JCuda's real driver binding and the FFM cuBLAS path, over a fake driver that
# runs our kernels on the CPU and a fake cuBLAS with plain loops. It checks kernel logic,
# argument passing and the host code's GEMM layouts; it says nothing about speed, the PTX JIT,
# the real cuBLAS or JCublas. Usage: run-gpu-tests.sh [surefire -Dtest pattern]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../../../.." && pwd)
out="$root/engine/target/cuda-emu"
bash "$here/build.sh" "$out"
export LD_LIBRARY_PATH="$out${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" RRJ_CUBLAS="$out/libcublas.so.13"
cd "$root"
mvn -B -ntp -o -Pgpu test -pl engine -Dtest="${1:-rrj.engine.cuda.*Test}" -Dsurefire.failIfNoSpecifiedTests=false
