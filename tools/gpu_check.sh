#!/usr/bin/env bash
# The whole GPU check in one call, for a machine with an NVIDIA GPU (sm_80+) and torch with CUDA:
#   build      pip install --no-build-isolation . for this GPU's architecture
#   cases      tools/cuda_cases.py: every op, dtype and layout against float64 F.conv2d
#   test       the pytest suite with --runslow (its CUDA tests run because a GPU is present; the
#              emulated-CUDA tests are left out: they never touch a GPU and every CI run has them)
#   sanitize   compute-sanitizer memcheck and racecheck over tools/cuda_cases.py, our kernels only
#   bench      bench/run.py's forward comparisons (results land in $GPU_CHECK_DIR/bench)
#   bench-train  bench/run.py's forward+backward passes and bench/e2e.py
#   profile    host time per call (bench/overhead.py), torch.profiler kernel tables and Nsight Compute
#              reports of three layers: latency-bound (squeeze-excite), memory-bound, compute-bound
# Usage: tools/gpu_check.sh [step ...]   (default: all, in that order). Logs and results go to
# $GPU_CHECK_DIR (default ./gpu_out). Where $OUT is set (the device tool's folder of files to bring
# back, which takes at most 8 files), each step also packs that folder into $OUT/gpu_check.tar.gz
# (Nsight Compute reports into $OUT/ncu-reports.tar.gz), so a run cut off at its time limit still
# returns every finished step. Where the tree is a copy without .git (the device tool's), set
# POINTWISE_COMMIT=<the commit it was copied from> so the benchmark JSONs record it.
set -uo pipefail
cd "$(dirname "$0")/.."
WORK=${GPU_CHECK_DIR:-$PWD/gpu_out}
mkdir -p "$WORK"
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0a} MAX_JOBS=${MAX_JOBS:-16} PYTHONUNBUFFERED=1
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(build cases test sanitize bench bench-train profile)
status=0

pack() {  # the device tool brings back at most 8 files from $OUT: two archives and the summary
  [ -n "${OUT:-}" ] || return 0
  tar czf "$OUT/gpu_check.tar.gz" -C "$WORK" --exclude='*.ncu-rep' .
  if compgen -G "$WORK/ncu/*.ncu-rep" > /dev/null; then
    tar czf "$OUT/ncu-reports.tar.gz" -C "$WORK" $(cd "$WORK" && ls ncu/*.ncu-rep)
  fi
  cp "$WORK/summary.txt" "$OUT/summary.txt"
}

run_step() {  # name, command...: runs it, logs to $WORK/<name>.log, records pass/fail, packs
  local name=$1; shift
  local start=$SECONDS
  "$@" > "$WORK/$name.log" 2>&1
  local rc=$?
  printf '%-10s rc=%d  %4ds  (%s)\n' "$name" "$rc" $((SECONDS - start)) "$WORK/$name.log" | tee -a "$WORK/summary.txt"
  tail -n 15 "$WORK/$name.log"
  pack
  [ $rc -eq 0 ] || status=1
  return $rc
}

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader; python3 --version;
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; nvcc --version | tail -n 2;
  echo "commit ${POINTWISE_COMMIT:-unknown}"; } \
  | tee "$WORK/machine.txt"

for step in "${steps[@]}"; do
  case $step in
    build) run_step build python3 -m pip install --no-build-isolation --no-deps -v -e . || exit 1 ;;
    cases) run_step cases python3 tools/cuda_cases.py ;;
    test) run_step test python3 -m pytest tests -q -rs --runslow -p no:cacheprovider \
            --ignore tests/test_cuda_emulated.py ;;
    sanitize)
      for tool in memcheck racecheck; do
        run_step "sanitize-$tool" compute-sanitizer --tool "$tool" --kernel-regex kns=pointwise \
          --error-exitcode 1 python3 tools/cuda_cases.py
      done ;;
    bench|bench-train)  # bench: the issue's forward comparisons; bench-train: fwd+bwd passes, end to end
      if [ "$step" = bench ]; then
        configs=("fp32 nchw forward" "tf32 nchw forward" "bf16 nchw forward" "bf16 channels_last forward"
                 "fp16 channels_last forward")
      else
        configs=("bf16 channels_last fwdbwd" "fp32 nchw fwdbwd")
      fi
      for config in "${configs[@]}"; do
        set -- $config
        run_step "bench-$1-$2-$3" python3 bench/run.py --device cuda --dtype "$1" --layout "$2" --pass "$3" \
          --out "$WORK/bench"
      done
      if [ "$step" = bench-train ]; then
        run_step bench-e2e python3 bench/e2e.py --device cuda --dtype bf16 --layout channels_last --out "$WORK/bench"
      fi ;;
    profile)
      run_step overhead python3 bench/overhead.py --device cuda --out "$WORK/bench"
      for layer in "effb0:1152>48@1" "mbv2:32>16@112" "r50:512>2048@7"; do
        tag=$(printf '%s' "$layer" | tr -c 'A-Za-z0-9' '_')
        run_step "torchprof-$tag" python3 bench/profile_torch.py --layer "$layer" --impl ours,conv --dtype bf16 \
          --layout channels_last --out "$WORK/profile"
        PYTHON=python3 OUT_DIR="$WORK/ncu" NAME="ncu-$tag" run_step "ncu-$tag" bench/profile_ncu.sh --layer "$layer" --dtype bf16 \
          --layout channels_last
      done ;;
    *) echo "unknown step $step"; exit 2 ;;
  esac
done
exit $status
