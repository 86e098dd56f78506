#!/usr/bin/env bash
# The decode work's GPU call (bench/cuda/NOTES-decode.md, Session 5): a decode
# test binary (TEST_SPEC), compute-sanitizer memcheck (SANITIZE_SPEC), Nsight
# Compute on single decode launches (NCU=1: flash_decode_kernel at B1 kv32768
# and kv4096, the one-warp flash_fwd_kernel at B1 kv32768), then the decode
# bench (+ VARIANTS=1) and PyTorch on the same CSV (TORCH=1). Logs go to $OUT;
# the table is printed last. BIN: the folder holding attnkit_cuda_tests (or
# any test binary of that name), attnkit_cuda_bench, libcudart.so.13 and
# torch_compare.py (default: this script's folder).
set -u
OUT=${OUT:-/tmp/attnkit_gpu_out}
mkdir -p "$OUT"
BIN=${BIN:-$(cd "$(dirname "$0")" && pwd)}
export LD_LIBRARY_PATH=$BIN:${LD_LIBRARY_PATH:-}
export PYTHONUNBUFFERED=1
REPS=${REPS:-20}
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,temperature.gpu --format=csv,noheader | tee "$OUT/device.txt"
summary=()
if [ -n "${TEST_SPEC+x}" ] && [ -x "$BIN/attnkit_cuda_tests" ]; then
  timeout "${TEST_TIMEOUT:-240}" "$BIN/attnkit_cuda_tests" ${TEST_SPEC:+"$TEST_SPEC"} >"$OUT/tests.log" 2>&1
  rc=$?
  [ "$rc" != 0 ] && grep -B3 -A14 -E "FAILED|failed with|due to unexpected" "$OUT/tests.log" | head -150
  summary+=("tests [${TEST_SPEC}]: rc=$rc $(grep -E '^(test cases|All tests passed)' "$OUT/tests.log" | tail -1)")
fi
if [ -n "${SANITIZE_SPEC:-}" ] && [ -x "$BIN/attnkit_cuda_tests" ]; then
  timeout "${SANITIZE_TIMEOUT:-200}" compute-sanitizer --tool memcheck --error-exitcode 3 "$BIN/attnkit_cuda_tests" \
    "$SANITIZE_SPEC" >"$OUT/memcheck.log" 2>&1
  rc=$?
  summary+=("memcheck [$SANITIZE_SPEC]: rc=$rc $(grep -E 'ERROR SUMMARY' "$OUT/memcheck.log" | tail -1) $(grep -E '^(test cases|All tests passed)' "$OUT/memcheck.log" | tail -1)")
  [ "$rc" != 0 ] && grep -m 40 -E "Invalid|ERROR|FAILED|Address" "$OUT/memcheck.log"
fi
if [ "${NCU:-0}" = 1 ]; then
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
  prof new_b1_kv32768 flash_decode --one-decode --one-decode-kv 32768
  prof new_b1_kv4096 flash_decode --one-decode --one-decode-kv 4096
  prof old_b1_kv32768 flash_fwd --one-decode-old --one-decode-kv 32768
fi
if [ "${NCU_FULL:-0}" = 1 ]; then
  # Full set with per-instruction stall samples on one decode launch
  # (NCU_ARGS: bench arguments, default B1 kv32768 on flash_decode_kernel).
  timeout 150 ncu --launch-skip 3 --launch-count 1 -k "regex:${NCU_KERNEL:-flash_decode}" --set full \
    --import-source no -o "$OUT/prof" -f "$BIN/attnkit_cuda_bench" ${NCU_ARGS:---one-decode --one-decode-kv 32768} \
    >"$OUT/ncu_full.log" 2>&1
  summary+=("ncu full: rc=$?")
  ncu --import "$OUT/prof.ncu-rep" --page details >"$OUT/prof_details.txt" 2>&1
  ncu --import "$OUT/prof.ncu-rep" --page source --print-source sass --csv >"$OUT/prof_sass.csv" 2>&1
  grep -E "Stall|stall" "$OUT/prof_details.txt" | head -30
fi
if [ "${BENCH:-1}" = 1 ]; then
  extra="--decode"
  [ "${VARIANTS:-0}" = 1 ] && extra="$extra --variants"
  timeout "${BENCH_TIMEOUT:-200}" "$BIN/attnkit_cuda_bench" --csv "$OUT/attnkit.csv" --reps "$REPS" $extra >"$OUT/bench.log" 2>&1
  summary+=("bench: rc=$?")
  grep -E "^(variant|decode|latency|host)" "$OUT/bench.log"
fi
if [ "${TORCH:-1}" = 1 ] && [ -f "$OUT/attnkit.csv" ]; then
  timeout 200 python3 "$BIN/torch_compare.py" --attnkit "$OUT/attnkit.csv" --reps "$REPS" --out "$OUT/torch.csv" \
    >"$OUT/torch.log" 2>&1
  summary+=("torch: rc=$?")
fi
echo
printf '%s\n' "${summary[@]}"
[ -f "$OUT/torch.log" ] && sed -n '/^=====/,$p' "$OUT/torch.log"
