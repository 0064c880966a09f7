# device_common.sh: how every device script of tools/bench starts (sourced once
# it has set OUT and STEPS): the environment the lent machines run NCCL and
# PyTorch with, the summary file and its helpers, and the card's line.
#   say TEXT     print TEXT and append it to $OUT/summary.txt
#   has STEP     STEP is in the comma-separated $STEPS
#   stamp TEXT   say TEXT after the seconds since the start ($t0)
#   tag, build_kernel_tools, kernel_tools(_start), check_plugins: below (they use BUILD, and KC)
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
SUM=$OUT/summary.txt
: > "$SUM"
say() { echo "$*" | tee -a "$SUM"; }
has() { [[ ",$STEPS," == *",$1,"* ]]; }
t0=$(date +%s)
stamp() { say "[$(( $(date +%s) - t0 ))s] $*"; }

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu --format=csv,noheader \
  | tee -a "$SUM"

# tag TEXT: TEXT as part of a file name (every character but letters and digits as _)
tag() { echo "${1//[^A-Za-z0-9]/_}"; }

# build_kernel_tools: configure $BUILD (Release, nvcc) and build usp_kernel_check, the example
# plugins (ABI 2, its ABI-1 build, a future ABI) and libusp_bench_gpu.so, logging to
# $OUT/build.log; the call ends (exit 1) with the log's tail if they do not build.
build_kernel_tools() {
  cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc \
    > "$OUT/build.log" 2>&1
  cmake --build "$BUILD" -j16 --target usp_kernel_check usp_naive_plugin usp_naive_plugin_v1 \
    usp_bad_abi_plugin usp_bench_gpu >> "$OUT/build.log" 2>&1 \
    || { say "build FAILED"; tail -40 "$OUT/build.log"; exit 1; }
}

# kernel_tools_start: $BUILD's usp_kernel_check and libusp_bench_gpu.so are there and start
# (another script of the same call may have built them)
kernel_tools_start() {
  "$BUILD/usp_kernel_check" --help > /dev/null 2>&1 &&
    python3 -c "import ctypes; ctypes.CDLL('$BUILD/libusp_bench_gpu.so')" 2> /dev/null
}

# kernel_tools: build_kernel_tools unless kernel_tools_start
kernel_tools() {
  if kernel_tools_start; then
    say "prebuilt binaries start: no build"
  else
    stamp "build"
    build_kernel_tools
  fi
}

# check_plugins: $KC on the example plugin (ABI 2) and its ABI-1 build, quick battery, and on
# the future-ABI plugin, which must be refused; logs plugin.txt, plugin_v1.txt, bad_abi.txt
check_plugins() {
  timeout 120 $KC --kernel "$BUILD/plugins/naive_plugin.so" --quick > "$OUT/plugin.txt" 2>&1
  say "naive plugin (ABI 2) rc=$?: $(tail -1 "$OUT/plugin.txt")"
  timeout 120 $KC --kernel "$BUILD/plugins/naive_plugin_v1.so" --quick > "$OUT/plugin_v1.txt" 2>&1
  say "naive plugin (ABI 1) rc=$?: $(tail -1 "$OUT/plugin_v1.txt")"
  $KC --kernel "$BUILD/plugins/bad_abi_plugin.so" > "$OUT/bad_abi.txt" 2>&1
  say "future-ABI plugin rc=$?: $(cat "$OUT/bad_abi.txt")"
}
