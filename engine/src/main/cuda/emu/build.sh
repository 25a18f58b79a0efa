#!/usr/bin/env bash
# Builds cuda-emu: a fake libcuda.so.1 that runs forward.cu, lora.cu and backward.cu on the
# CPU (emu.h, emu_runtime.cpp) and a fake libcublas.so.13 (fake_cublas.cpp), into $1
# (default engine/target/cuda-emu). Needs g++ (C++17, x86-64 Linux). A test tool: see
# run-gpu-tests.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
src=$(cd "$here/.." && pwd)
out=${1:-$here/../../../../target/cuda-emu}
mkdir -p "$out/gen"
for m in forward lora backward; do
  # dynamic shared memory becomes the emulator's per-block buffer; every kernel is registered by name
  sed -E 's/extern __shared__ float ([A-Za-z_][A-Za-z_0-9]*)\[\];/float* \1 = static_cast<float*>(emu::dynamic_shared());/' \
    "$src/$m.cu" > "$out/gen/$m.cpp"
  grep -oE 'extern "C" __global__ void [A-Za-z_0-9]+' "$src/$m.cu" | awk '{print "EMU_REGISTER(" $5 ")"}' >> "$out/gen/$m.cpp"
done
flags=(-std=c++17 -O2 -g -fPIC -shared -Wall -Wno-unknown-pragmas -Wno-unused-variable -Wno-sign-compare)
# the kernels contract a*b + c into one FMA, as nvcc does by default (--fmad=true): a kernel
# whose result depends on that rounding (a difference of two products, say) fails here too
g++ "${flags[@]}" -mfma -ffp-contract=fast -include "$here/emu.h" -I"$src" -Wl,-soname,libcuda.so.1 -o "$out/libcuda.so.1" \
  "$here/emu_runtime.cpp" "$out/gen/forward.cpp" "$out/gen/lora.cpp" "$out/gen/backward.cpp"
g++ "${flags[@]}" -Wl,-soname,libcublas.so.13 -o "$out/libcublas.so.13" "$here/fake_cublas.cpp" \
  -L"$out" -l:libcuda.so.1 -Wl,-rpath,'$ORIGIN'
echo "cuda-emu built in $out"
