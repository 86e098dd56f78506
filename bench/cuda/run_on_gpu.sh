#!/usr/bin/env bash
# One call on the GPU machine: CUDA tests, a compute-sanitizer memcheck subset,
# the CUDA benchmarks and the PyTorch comparison on the same shapes; the
# table is printed last, full logs go to $OUT.
#
# Build here first (never on the GPU machine):
#   cmake -S . -B .gpu/build -DCMAKE_CUDA_ARCHITECTURES=90 && \
#   cmake --build .gpu/build --target attnkit_cuda_tests attnkit_cuda_bench -j2
#   cp .gpu/build/tests/cuda/attnkit_cuda_tests .gpu/build/bench/cuda/attnkit_cuda_bench \
#      .gpu/build/examples/cuda/llama3_decode .gpu/   (configure with -DATTNKIT_NATIVE=OFF: other CPU there)
#   cp -L "$(dirname "$(which nvcc)")/../lib/libcudart.so.13" .gpu/ && strip .gpu/attnkit_cuda_*
# then run `bash bench/cuda/run_on_gpu.sh` there with .gpu carried.
# Knobs: TESTS=0 SANITIZE=0 EXAMPLE=0 BENCH=0 TORCH=0 MOBA=0 VARIANTS=1 PROFILE=1 NCU_DECODE=1 REPS=20,
# BENCH_TIMEOUT=300 (seconds for the attnkit bench),
# BENCH_ARGS=--prefill-only (more bench flags), SM90_VARIANTS=1 (the sm90 configurations, own log),
# TEST_FILTER='[moba]' (a Catch2 test spec), MOBA_SIZES=32768,131072 and
# MOBA_CONFIGS=4096:12,512:3 (MoBA bench sizes and Bs:top_k configurations),
# SANITIZE_SPEC='[rope],[moba]' (the memcheck subset; tags, since names contain commas),
# PROFILE_KERNEL / PROFILE_ARGS / PROFILE_SKIP (the full Nsight Compute profile: default one
# D128 causal prefill; decode: PROFILE_KERNEL=flash_decode PROFILE_ARGS='--one-decode
# --one-decode-kv 32768' PROFILE_SKIP=3), NCU_DECODE=1 (a few Nsight Compute sections on three
# single decode launches: flash_decode_kernel at B1 kv32768 and kv4096, the one-warp kernel).
set -u
OUT=${OUT:-/tmp/attnkit_gpu_out}
mkdir -p "$OUT"
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=${BIN:-$HERE/../../.gpu}
export LD_LIBRARY_PATH=$BIN:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
REPS=${REPS:-20}

nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader | tee "$OUT/device.txt"

summary=()
if [ "${TESTS:-1}" = 1 ]; then
  timeout 400 "$BIN/attnkit_cuda_tests" ${TEST_FILTER:+"$TEST_FILTER"} >"$OUT/tests.log" 2>&1
  rc=$?
  [ "$rc" != 0 ] && grep -B3 -A14 -E "FAILED|failed with|due to unexpected" "$OUT/tests.log" | head -120
  summary+=("tests: rc=$rc $(grep -E '^(test cases|All tests passed)' "$OUT/tests.log" | tail -1)")
fi
if [ "${SANITIZE:-1}" = 1 ]; then
  timeout "${SANITIZE_TIMEOUT:-300}" compute-sanitizer --tool memcheck --error-exitcode 3 "$BIN/attnkit_cuda_tests" \
    "${SANITIZE_SPEC:-[padded],[varlen],[masked],[logits],[align],cuda masks: document & causal,cuda masks: block sparse & causal}" \
    >"$OUT/memcheck.log" 2>&1
  rc=$?
  summary+=("memcheck: rc=$rc $(grep -E 'ERROR SUMMARY' "$OUT/memcheck.log" | tail -1) $(grep -E '^(test cases|All tests passed)' "$OUT/memcheck.log" | tail -1)")
fi
if [ "${EXAMPLE:-1}" = 1 ] && [ -x "$BIN/llama3_decode" ]; then
  timeout 120 "$BIN/llama3_decode" >"$OUT/example.log" 2>&1
  summary+=("example: rc=$? $(tr '\n' ' ' <"$OUT/example.log")")
fi
if [ "${MOBA:-1}" = 1 ] && [ -x "$BIN/attnkit_moba_cuda_bench" ]; then
  timeout 420 "$BIN/attnkit_moba_cuda_bench" --csv "$OUT/moba.csv" ${MOBA_SIZES:+--sizes "$MOBA_SIZES"} \
    ${MOBA_CONFIGS:+--configs "$MOBA_CONFIGS"} \
    >"$OUT/moba.log" 2>&1
  summary+=("moba bench: rc=$?")
  if [ -x "$BIN/moba_long_context_cuda" ]; then
    timeout 120 "$BIN/moba_long_context_cuda" >"$OUT/moba_example.log" 2>&1
    summary+=("moba example: rc=$? $(tail -4 "$OUT/moba_example.log" | tr '\n' ' ')")
  fi
fi
if [ "${BENCH:-1}" = 1 ]; then
  extra=""
  [ "${VARIANTS:-0}" = 1 ] && extra="--variants"
  timeout "${BENCH_TIMEOUT:-300}" "$BIN/attnkit_cuda_bench" --csv "$OUT/attnkit.csv" --reps "$REPS" $extra ${BENCH_ARGS:-} \
    >"$OUT/bench.log" 2>&1
  summary+=("bench: rc=$?")
  grep -E "^variant" "$OUT/bench.log"
fi
if [ "${SM90_VARIANTS:-0}" = 1 ]; then
  timeout 240 "$BIN/attnkit_cuda_bench" --sm90-variants --reps "$REPS" >"$OUT/sm90_variants.log" 2>&1
  summary+=("sm90 variants: rc=$?")
fi
if [ "${PROFILE:-0}" = 1 ]; then
  # Nsight Compute, full set, on one launch: the details page (stall reasons,
  # occupancy, pipes) and per-instruction SASS counters.
  timeout 240 ncu --kernel-name "regex:${PROFILE_KERNEL:-flash_fwd_kernel}" --launch-skip "${PROFILE_SKIP:-2}" \
    --launch-count 1 --set full --import-source no -o "$OUT/prof" -f "$BIN/attnkit_cuda_bench" ${PROFILE_ARGS:---one} \
    >"$OUT/ncu.log" 2>&1
  summary+=("ncu: rc=$?")
  ncu --import "$OUT/prof.ncu-rep" --page details >"$OUT/prof_details.txt" 2>&1
  ncu --import "$OUT/prof.ncu-rep" --page source --print-source sass --csv >"$OUT/prof_sass.csv" 2>&1
  grep -E "Stall|stall" "$OUT/prof_details.txt" | head -30
fi
if [ "${NCU_DECODE:-0}" = 1 ]; then
  secs="--section SpeedOfLight --section LaunchStats --section Occupancy --section WarpStateStats --section MemoryWorkloadAnalysis --section SchedulerStats"
  prof() {  # name, kernel regex, bench args...
    local name=$1 re=$2
    shift 2
    timeout 90 ncu --launch-skip 3 --launch-count 1 -k "regex:$re" $secs "$BIN/attnkit_cuda_bench" "$@" \
      >"$OUT/ncu_$name.log" 2>&1
    summary+=("ncu $name: rc=$?")
    echo "== ncu $name"
    grep -E "Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Grid Size|Block Size|Waves Per SM|Warp Cycles Per Issued|Elapsed Cycles|SM Active Cycles|Issued Warp|No Eligible|Dynamic Shared" \
      "$OUT/ncu_$name.log" | head -24
  }
  prof decode_b1_kv32768 flash_decode --one-decode --one-decode-kv 32768
  prof decode_b1_kv4096 flash_decode --one-decode --one-decode-kv 4096
  prof one_warp_b1_kv32768 flash_fwd --one-decode-old --one-decode-kv 32768
fi
if [ "${TORCH:-1}" = 1 ] && [ -f "$OUT/attnkit.csv" ]; then
  timeout 400 python3 "$HERE/torch_compare.py" --attnkit "$OUT/attnkit.csv" --reps "$REPS" --out "$OUT/torch.csv" \
    >"$OUT/torch.log" 2>&1
  summary+=("torch: rc=$?")
fi
echo
printf '%s\n' "${summary[@]}"
[ -f "$OUT/torch.log" ] && sed -n '/^=====/,$p' "$OUT/torch.log"
[ -f "$OUT/torch.log" ] || cat "$OUT/bench.log" 2>/dev/null
[ -f "$OUT/moba.log" ] && cat "$OUT/moba.log"
[ -f "$OUT/sm90_variants.log" ] && cat "$OUT/sm90_variants.log"
