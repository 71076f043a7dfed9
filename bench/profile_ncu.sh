#!/usr/bin/env bash
# Nsight Compute on our kernels only: one layer (bench/profile_target.py), full section set, source view.
#
#   bench/profile_ncu.sh --layer 'r50:256>64@56' --dtype bf16 --layout channels_last
#   NCU_LAUNCH_SKIP=2 NCU_LAUNCH_COUNT=1 bench/profile_ncu.sh --shape 512,10,190,190
#
# Arguments go to bench/profile_target.py (layer, dtype, layout, pass, batch). The target runs its
# warm-up calls outside the cudaProfilerStart/Stop range (--profile-from-start off); inside it, the
# first NCU_LAUNCH_SKIP launches of kernels whose names match NCU_KERNEL are skipped as well and the
# next NCU_LAUNCH_COUNT are profiled with --set full and --import-source yes (the build passes
# -lineinfo, so the Source page shows CUDA lines next to SASS).
# --clock-control none: ncu's default locks the GPU clocks to base for the run; we leave the card's
# settings alone (see .library/device/METHOD.md) and measure it as we find it.
# Writes $OUT_DIR/<name>.ncu-rep (open with ncu-ui, or ncu --import ... --page details) and
# $OUT_DIR/<name>.csv (the key metrics, one row per profiled kernel), and prints that CSV.
set -euo pipefail

NCU=${NCU:-ncu}
if ! command -v "$NCU" >/dev/null 2>&1; then
  for candidate in /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu; do
    if [ -x "$candidate" ]; then NCU=$candidate; break; fi
  done
fi
if ! command -v "$NCU" >/dev/null 2>&1; then
  echo "error: Nsight Compute (ncu) was not found on PATH." >&2
  echo "  Install it with the CUDA toolkit (it ships in <cuda>/bin/ncu), or on its own: apt-get install nsight-compute" >&2
  echo "  (NVIDIA's CUDA apt repository) or from https://developer.nvidia.com/nsight-compute; or set NCU=/path/to/ncu." >&2
  exit 127
fi
PYTHON=${PYTHON:-python}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT_DIR=${OUT_DIR:-$HERE/out/ncu}
KERNEL=${NCU_KERNEL:-regex:pointwise}        # the lead names our CUDA kernels with "pointwise" in them
SKIP=${NCU_LAUNCH_SKIP:-2}
COUNT=${NCU_LAUNCH_COUNT:-3}
# Duration, DRAM traffic, occupancy, tensor-pipe use, registers, and the two stall reasons that tell
# a kernel starved of instructions (no_instruction: instruction-cache misses) from one starved of data.
METRICS=${NCU_METRICS:-gpu__time_duration.sum,dram__bytes.sum,sm__warps_active.avg.pct_of_peak_sustained_active,sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active,launch__registers_per_thread,smsp__average_warps_issue_stalled_no_instruction_per_issue_active.ratio,smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio}
NAME=${NAME:-ncu-$(printf '%s' "$*" | tr -c 'A-Za-z0-9.=-' '_' | sed 's/__*/_/g; s/^_//; s/_$//')}
NAME=${NAME%-}
[ "$NAME" = "ncu" ] && NAME=ncu-default
mkdir -p "$OUT_DIR"
REPORT="$OUT_DIR/$NAME"

# Enough profiled calls inside the capture range to reach SKIP + COUNT of our launches.
"$NCU" --target-processes all \
  --profile-from-start off \
  --kernel-name-base demangled --kernel-name "$KERNEL" \
  --launch-skip "$SKIP" --launch-count "$COUNT" \
  --set full --import-source yes \
  --clock-control none \
  --force-overwrite --export "$REPORT" \
  "$PYTHON" "$HERE/profile_target.py" --warmup 5 --iters $((SKIP + COUNT)) "$@"

if [ ! -f "$REPORT.ncu-rep" ]; then
  echo "error: ncu wrote no report: no kernel matched $KERNEL inside the capture range (is the CUDA build loaded?)," >&2
  echo "  or the counters could not be read (ERR_NVGPUCTRPERM: needs root or NVreg_RestrictProfilingToAdminUsers=0)." >&2
  exit 1
fi
"$NCU" --import "$REPORT.ncu-rep" --csv --page raw --metrics "$METRICS" > "$REPORT.csv"
echo "report: $REPORT.ncu-rep"
echo "metrics: $REPORT.csv"
# The hardware's side of the emulator's memory counters (tests/emulator/runtime.h, bench/gpu_model.py):
# global requests and the sectors they touch, shared wavefronts and bank conflicts, DRAM bytes,
# active warps. In a file of its own, so that a metric this ncu names otherwise costs that file only.
MEMORY_METRICS=${NCU_MEMORY_METRICS:-dram__bytes_read.sum,dram__bytes_write.sum,l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum,l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum,l1tex__t_requests_pipe_lsu_mem_global_op_st.sum,l1tex__t_sectors_pipe_lsu_mem_global_op_st.sum,l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum,l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum,l1tex__data_pipe_lsu_wavefronts_mem_shared_op_st.sum,l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum,smsp__warps_active.avg.per_cycle_active}
if "$NCU" --import "$REPORT.ncu-rep" --csv --page raw --metrics "$MEMORY_METRICS" > "$REPORT-memory.csv"; then
  echo "memory counters: $REPORT-memory.csv"
else
  echo "warning: ncu could not give the memory counters ($MEMORY_METRICS)" >&2
fi
"$PYTHON" - "$REPORT.csv" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
if len(rows) < 3:
    sys.exit("no rows in the metrics CSV")
header, units, data = rows[0], rows[1], rows[2:]
keep = [i for i, h in enumerate(header) if h in ("Kernel Name", "Block Size", "Grid Size") or "__" in h]
short = {"gpu__time_duration.sum": "time", "dram__bytes.sum": "DRAM bytes",
         "sm__warps_active.avg.pct_of_peak_sustained_active": "occupancy %",
         "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active": "tensor pipe %"}
print(" | ".join(f"{short.get(header[i], header[i])}" + (f" [{units[i]}]" if units[i] else "") for i in keep))
for r in data:
    print(" | ".join(r[i][:60] for i in keep))
PY
