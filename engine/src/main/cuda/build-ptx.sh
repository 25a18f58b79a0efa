#!/usr/bin/env bash
# Regenerates the committed PTX (engine/src/main/resources/rrj/engine/cuda/*.ptx) from the
# CUDA sources beside this script. Run by `mvn -Pptx -pl engine generate-resources`, or by hand.
#
# -arch=compute_80: virtual architecture only (PTX, no SASS), which the driver JIT-compiles
# for the GPU it finds (sm_80 Ampere and later, sm_90 H100 included). The PTX ISA version is
# the one of the nvcc used (CUDA 13.0 emits ".version 9.0"), and a driver loads PTX up to the
# ISA of its own CUDA version: ISA 9.0 needs a CUDA 13.0 driver (R580) or newer.
# No --use_fast_math: expf / erff / sqrtf stay the accurate library forms.
#
# Each file ends with a comment holding the SHA-256 of the sources it came from
# (common.cuh + <module>.cu); PtxTest fails when a source changed and the PTX was not rebuilt.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out="$here/../resources/rrj/engine/cuda"
nvcc=${NVCC:-nvcc}
mkdir -p "$out"
for m in forward lora backward; do
  "$nvcc" -ptx -arch=compute_80 -O3 -std=c++17 -o "$out/$m.ptx" "$here/$m.cu"
  hash=$(cat "$here/common.cuh" "$here/$m.cu" | sha256sum | cut -d' ' -f1)
  printf '// rrj-source-sha256: %s\n' "$hash" >> "$out/$m.ptx"
  echo "wrote $out/$m.ptx ($(grep -c '^\.entry\|^\s*\.visible \.entry' "$out/$m.ptx") entries)"
done
