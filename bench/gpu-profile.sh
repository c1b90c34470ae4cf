#!/usr/bin/env bash
# Nsight Compute profile of the attention kernels that issue 3's targets measure, at the benchmark shapes:
#   bash bench/gpu-profile.sh [OUTDIR] [CASE...]     (on the GPU host, after `npm run build`; default: every case)
# Each case of bench/gpu-profile.js (one run of the op on device-generated inputs) is profiled by one ncu run with a
# small set of sections (SpeedOfLight, LaunchStats, Occupancy, WarpStateStats, ComputeWorkloadAnalysis,
# MemoryWorkloadAnalysis) plus the tensor-pipe and DRAM byte counters; the raw CSV goes to OUTDIR/ncu-CASE.csv and
# bench/ncu_summary.py --kernels prints one table: duration, DRAM GB/s and % of peak, L2 / SM throughput, tensor
# pipe, achieved occupancy, issue rate and the top warp-stall reasons of each kernel.
# Caches are flushed before each replay pass (--cache-control all) so that memory-bound kernels read DRAM as they
# do in a decode step; clocks are left as the card has them (--clock-control none). If ncu refuses an option on this
# machine the case is retried with fewer (no extra metrics, then no cache control) and the log says so.
set -u
OUT=${1:-bench/out/ncu}
shift || true
CASES=${*:-indexer-decode sparse-mla-decode sparse-mla-prefill indexer-prefill}
mkdir -p "$OUT"
NCU=$(command -v ncu || ls -d /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | tail -1)
if [ -z "$NCU" ]; then echo "gpu-profile: ncu not found (PATH, /opt/nvidia/nsight-compute/*/ncu)"; exit 1; fi
SECTIONS="--section SpeedOfLight --section LaunchStats --section Occupancy --section WarpStateStats --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis"
METRICS="--metrics sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,dram__bytes_read.sum,dram__bytes_write.sum,lts__t_bytes.sum"

filter_of() {
  case $1 in
    indexer-decode) echo "indexer_fp8|topk_" ;;
    sparse-mla-decode) echo "sparse_mla" ;;
    sparse-mla-prefill) echo "sparse_mla_kernel" ;;
    indexer-prefill) echo "indexer_fp8|topk_" ;;
  esac
}
# The indexer prefill runs 16 query chunks of 5 kernels (scores with the fused histogram, 4 top-k passes): profile
# the last chunk only (the longest rows).
extra_of() { [ "$1" = indexer-prefill ] && echo "--launch-skip 75 --launch-count 5"; }

for c in $CASES; do
  f=$(filter_of "$c")
  if [ -z "$f" ]; then echo "gpu-profile: unknown case $c"; exit 2; fi
  t0=$(date +%s)
  ok=0
  for opts in "--cache-control all $METRICS" "--cache-control all" "--cache-control none"; do
    # shellcheck disable=SC2086
    if "$NCU" --target-processes all --csv --page raw --clock-control none $opts $SECTIONS -k "regex:$f" $(extra_of "$c") \
        node dist/bench/gpu-profile.js "$c" > "$OUT/ncu-$c.csv" 2> "$OUT/ncu-$c.log"; then
      ok=1
      echo "gpu-profile: $c profiled in $(( $(date +%s) - t0 )) s (ncu options: $opts)"
      break
    fi
    echo "gpu-profile: $c: ncu failed with '$opts' ($(tail -2 "$OUT/ncu-$c.log" | tr '\n' ' ')); retrying with fewer options"
  done
  [ $ok = 1 ] || { echo "gpu-profile: $c could not be profiled (see $OUT/ncu-$c.log)"; continue; }
  python3 bench/ncu_summary.py --kernels "$OUT/ncu-$c.csv" --title "$c"
done
