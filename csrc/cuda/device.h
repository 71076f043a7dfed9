// The GPU a GEMM runs on, as the host code needs it: what planning reads (SMs, shared memory a
// block may have, compute capability), the stream, and autotuning's timer. Device-independent, so
// the same host code drives a real GPU (ops_cuda.cpp) and the CPU emulator of the tests.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <functional>

namespace pointwise::cuda {

struct Plan;

struct Device {
  int index = 0;
  int multiprocessors = 0;
  int compute_capability = 0;  // major * 10 + minor
  size_t smem_per_block = 0;   // the dynamic shared memory a block may opt into
  cudaStream_t stream = nullptr;
  // Autotuning (autotune.h) on: each problem runs the plan timed fastest for it.
  bool autotune = false;
  // Runs `launches` (one plan of one GEMM) and sets `ms` to its time on the stream. Empty where
  // nothing may be timed (a stream being captured into a CUDA graph): a problem not tuned yet then
  // runs the heuristic's plan, and is tuned at a later call. The GPU's timer ignores `plan`; the
  // emulator's tests rank plans by it.
  std::function<cudaError_t(const Plan& plan, const std::function<cudaError_t()>& launches, double& ms)> time;
};

}  // namespace pointwise::cuda
