#!/usr/bin/env bash
# Nsight Systems timeline of one layer: CUDA API + kernels + NVTX, captured around the timed region only.
#
#   bench/profile_nsys.sh --layer 'r50:256>64@56' --impl ours,conv --dtype bf16 --layout channels_last
#
# Arguments go to bench/profile_target.py. It calls cudaProfilerStart/Stop around the profiled calls
# (after its warm-up), which --capture-range=cudaProfilerApi turns into the capture window; each call
# sits in an NVTX range named after the method, and our op adds its own
# ("pointwise_cuda.pointwise_conv2d"). Writes $OUT_DIR/<name>.nsys-rep (open with nsys-ui) and prints
# the kernel and NVTX summaries (also written as CSV next to it).
set -euo pipefail

NSYS=${NSYS:-nsys}
if ! command -v "$NSYS" >/dev/null 2>&1; then
  echo "error: Nsight Systems (nsys) was not found on PATH." >&2
  echo "  Install it: apt-get install nsight-systems-cli (NVIDIA's CUDA apt repository), or the installer from" >&2
  echo "  https://developer.nvidia.com/nsight-systems; or set NSYS=/path/to/nsys. (The copy bundled inside Nsight" >&2
  echo "  Compute's folder lacks the importer that turns its .qdstrm capture into a report.)" >&2
  exit 127
fi
PYTHON=${PYTHON:-python}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT_DIR=${OUT_DIR:-$HERE/out/nsys}
NAME=${NAME:-nsys-$(printf '%s' "$*" | tr -c 'A-Za-z0-9.=-' '_' | sed 's/__*/_/g; s/^_//; s/_$//')}
[ "$NAME" = "nsys-" ] && NAME=nsys-default
mkdir -p "$OUT_DIR"
REPORT="$OUT_DIR/$NAME"

"$NSYS" profile --trace=cuda,nvtx \
  --capture-range=cudaProfilerApi --capture-range-end=stop \
  --force-overwrite=true --output "$REPORT" \
  "$PYTHON" "$HERE/profile_target.py" --warmup 5 --iters "${NSYS_ITERS:-20}" "$@"

if [ ! -f "$REPORT.nsys-rep" ]; then
  echo "error: nsys wrote no report ($REPORT.nsys-rep); see its messages above" >&2
  exit 1
fi
echo "report: $REPORT.nsys-rep"
# Report names since Nsight Systems 2023.x; older versions call them gpukernsum and nvtxsum.
stats() { "$NSYS" stats --force-export=true "$@" "$REPORT.nsys-rep"; }
if stats --report cuda_gpu_kern_sum --report nvtx_sum --format csv --output "$REPORT" >/dev/null; then
  stats --report cuda_gpu_kern_sum --report nvtx_sum
else
  stats --report gpukernsum --report nvtxsum
fi
