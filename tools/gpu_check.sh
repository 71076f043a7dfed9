#!/usr/bin/env bash
# The whole GPU check in one call, for a machine with an NVIDIA GPU (sm_80+) and torch with CUDA,
# fitted to a time budget: the device tool lends 15 minutes a session, at most 10 a command, and a
# machine start comes out of the same 15. Steps, in the order they run (most wanted first):
#   build        pip install --no-build-isolation . for this GPU's architecture; stops the run if
#                the build holds no CUDA kernels
#   cases        tools/cuda_cases.py: every op, dtype, layout and alignment against float64; stops
#                the run if it hangs (every later step would hang the same way)
#   main         python -m pointwise_cuda: the 512 -> 10 reduction, checked and timed
#   test         pytest's CUDA tests (marked cuda, or parametrised on device "cuda") but test_cuda.py
#   test-cuda    tests/test_cuda.py with --runslow (graph capture, side streams, > 2^31 elements,
#                determinism), in a process of its own: a fault there cannot take the others down
#   bench        bench/run.py's forward comparisons, the issue's targets (with autotuning too)
#   sanitize     compute-sanitizer memcheck, then racecheck, over tools/cuda_cases.py --quick
#   bench-train  bench/run.py's forward+backward passes and bench/e2e.py
#   profile      host time per call, torch.profiler kernel tables, and Nsight Compute reports of a
#                latency-bound (squeeze-excite), a memory-bound and a compute-bound layer
#   test-cpu     the rest of pytest (CI runs it too, but with another torch)
# The emulator's tests (test_cuda_emulated, _counters, _audit) are left out: they never touch a GPU,
# every CI run has them, and building the emulator would eat the test step's budget.
#
# Usage: bash tools/gpu_check.sh [--budget SECONDS] [step ...]   (default: all, in that order; budget 540)
# A step starts only if the budget still holds its usual length, and is stopped at the budget's end;
# each finished step packs the results, so a call cut off still returns them. Logs and results go to
# $GPU_CHECK_DIR (default ./gpu_out, emptied first). Where $OUT is set (the device tool's folder of
# files to bring back, at most 8 files), each step packs that folder into $OUT/gpu_check.tar.gz
# (each Nsight Compute report into $OUT/ncu-<layer>.tar.gz). Where the tree is a copy without .git (the
# device tool's), set POINTWISE_COMMIT=<the commit it was copied from> so the benchmark JSONs record it.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
budget=540
if [ "${1:-}" = "--budget" ]; then budget=${2:?--budget needs a number of seconds}; shift 2; fi
WORK=${GPU_CHECK_DIR:-$PWD/gpu_out}
rm -rf "$WORK" && mkdir -p "$WORK"  # a warm machine keeps the last call's folder: start clean
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0a} MAX_JOBS=${MAX_JOBS:-16} PYTHONUNBUFFERED=1
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(build cases main test test-cuda bench sanitize bench-train profile test-cpu)
status=0

pack() {  # the device tool brings back at most 8 files from $OUT: here at most 5
  [ -n "${OUT:-}" ] || return 0
  # Written aside, then renamed: a call killed mid-pack still returns the previous, whole archive.
  tar czf "$OUT/gpu_check.tar.gz.part" -C "$WORK" --exclude='*.ncu-rep' . && mv "$OUT/gpu_check.tar.gz.part" "$OUT/gpu_check.tar.gz"
  local report name  # one archive per Nsight Compute report: each must stay under the 16 MiB a file
  for report in "$WORK"/ncu/*.ncu-rep; do
    [ -e "$report" ] || continue
    name=$(basename "$report" .ncu-rep)
    tar czf "$OUT/$name.tar.gz.part" -C "$WORK/ncu" "$name.ncu-rep" && mv "$OUT/$name.tar.gz.part" "$OUT/$name.tar.gz"
  done
  cp "$WORK/summary.txt" "$OUT/summary.txt"
}

# run_step NAME USUAL CAP command...: runs the command if the budget still holds USUAL seconds,
# for at most CAP seconds and no later than the budget's end; logs to $WORK/NAME.log.
run_step() {
  local name=$1 usual=$2 cap=$3; shift 3
  local left=$((budget - SECONDS))
  if [ "$left" -lt "$usual" ]; then
    printf '%-34s skipped: %ds of the budget left, it usually takes %ds\n' "$name" "$left" "$usual" \
      | tee -a "$WORK/summary.txt"
    status=1
    return 1
  fi
  local limit=$((cap < left ? cap : left)) start=$SECONDS
  timeout --kill-after=10 "$limit" "$@" > "$WORK/$name.log" 2>&1
  local rc=$?
  local note=""; { [ $rc -eq 124 ] || [ $rc -eq 137 ]; } && note=" (stopped at its ${limit}s limit)"
  printf '%-34s rc=%d %4ds%s\n' "$name" "$rc" $((SECONDS - start)) "$note" | tee -a "$WORK/summary.txt"
  tail -n 12 "$WORK/$name.log"
  pack
  [ $rc -eq 0 ] || status=1
  return $rc
}

stop_run() {  # a step whose failure leaves nothing for the later ones to measure
  echo "$1: stopping the run" | tee -a "$WORK/summary.txt"
  pack
  exit 1
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; python3 --version;
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; nvcc --version | tail -n 2;
  env | grep -E '^(CUDA|TORCH|PYTORCH|NVIDIA)' | sort
  echo "commit ${POINTWISE_COMMIT:-unknown}, budget ${budget}s"; } \
  | tee "$WORK/machine.txt"
: > "$WORK/summary.txt"

# pytest: no cache folder in the copied tree, and a stack dump of any test stuck for a minute.
PYTEST=(python3 -m pytest -q -rs -p no:cacheprovider -o faulthandler_timeout=60)
# The run.py configurations (dtype, layout, pass) of the two bench steps, the issue's targets first.
BENCH=("bf16 channels_last forward" "fp32 nchw forward" "bf16 nchw forward" "fp16 channels_last forward"
       "tf32 nchw forward")
BENCH_TRAIN=("bf16 channels_last fwdbwd" "fp32 nchw fwdbwd")

for step in "${steps[@]}"; do
  case $step in
    build)
      run_step build 90 300 python3 -m pip install --disable-pip-version-check --no-build-isolation --no-deps -v -e . \
        || stop_run "the build failed"
      # setup.py builds the CPU kernels alone where it finds no CUDA toolkit: that must not pass here.
      python3 -c "import pointwise_cuda as pw, sys; info = pw.build_info(); print(info); sys.exit('cuda' not in info['backends'])" \
        2>&1 | tee -a "$WORK/machine.txt" || stop_run "the build has no CUDA kernels" ;;
    cases)
      run_step cases 20 90 python3 tools/cuda_cases.py
      rc=$?
      if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then stop_run "cuda_cases did not finish"; fi ;;
    main) run_step main 15 60 python3 -m pointwise_cuda --device cuda ;;
    test) run_step test 120 200 "${PYTEST[@]}" tests -k cuda --ignore tests/test_cuda_emulated.py \
            --ignore tests/test_cuda_counters.py --ignore tests/test_cuda_audit.py --ignore tests/test_cuda.py ;;
    test-cuda) run_step test-cuda 45 120 "${PYTEST[@]}" tests/test_cuda.py --runslow ;;
    test-cpu) run_step test-cpu 90 240 "${PYTEST[@]}" tests -k "not cuda" --ignore tests/test_cuda_emulated.py ;;
    sanitize)
      # No caching allocator: memcheck then sees each tensor's own bounds, not those of a pooled block.
      for tool in memcheck racecheck; do
        PYTORCH_NO_CUDA_MEMORY_CACHING=1 run_step "sanitize-$tool" 120 200 compute-sanitizer --tool "$tool" \
          --kernel-regex kns=pointwise --error-exitcode 1 python3 tools/cuda_cases.py --quick
      done ;;
    bench|bench-train)
      if [ "$step" = bench ]; then configs=("${BENCH[@]}"); else configs=("${BENCH_TRAIN[@]}"); fi
      for config in "${configs[@]}"; do
        read -r dtype layout pass <<< "$config"
        run_step "bench-$dtype-$layout-$pass" 25 90 python3 bench/run.py --device cuda --dtype "$dtype" \
          --layout "$layout" --pass "$pass" --out "$WORK/bench"
      done
      if [ "$step" = bench-train ]; then
        run_step bench-e2e 90 150 python3 bench/e2e.py --device cuda --dtype bf16 --layout channels_last \
          --out "$WORK/bench"
      fi ;;
    profile)
      run_step overhead 20 60 python3 bench/overhead.py --device cuda --out "$WORK/bench"
      for layer in "effb0:1152>48@1" "mbv2:32>16@112" "r50:512>2048@7"; do
        tag=$(printf '%s' "$layer" | tr -c 'A-Za-z0-9' '_')
        run_step "torchprof-$tag" 15 60 python3 bench/profile_torch.py --layer "$layer" --impl ours,conv \
          --dtype bf16 --layout channels_last --out "$WORK/profile"
        PYTHON=python3 OUT_DIR="$WORK/ncu" NAME="ncu-$tag" run_step "ncu-$tag" 60 120 bash bench/profile_ncu.sh \
          --layer "$layer" --dtype bf16 --layout channels_last
      done ;;
    *) echo "unknown step $step"; exit 2 ;;
  esac
done
echo "--- summary (budget ${budget}s, used ${SECONDS}s) ---" >> "$WORK/summary.txt"
pack
cat "$WORK/summary.txt"
exit $status
