// The three convolutions as channel GEMMs (gemm_problem.h): the problem each op describes, the tile
// shape and split-K it picks, and the launches of gemm_launch.h. Device-independent host code, so
// that the same planning runs on a GPU (ops_cuda.cpp) and on the CPU emulator of the tests
// (tests/emulator/), which runs the kernels of gemm.cuh there.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <string>

#include "conv_args.h"
#include "cuda/gemm_problem.h"

namespace pointwise::cuda {

// How one GEMM runs: its block tile, and how many chunks its K range is cut into (1: not split).
struct Plan {
  TileShape tile = TileShape::kLarge;
  int32_t splits = 1;
};

// "<tile> x<splits>", as autotuning reports it: "large x1", "medium x4", "narrow_m x1", "narrow_n x1".
std::string plan_name(const Plan& plan);

// The device the kernels run on, as the planning needs it.
struct Device {
  int index = 0;
  int multiprocessors = 0;
  cudaStream_t stream = nullptr;
  // Autotuning (autotune.h) on: each problem runs the plan timed fastest for it.
  bool autotune = false;
  // Runs `launches` (one plan of one GEMM) and sets `ms` to its time on the stream. Empty where
  // nothing may be timed (a stream being captured into a CUDA graph): a problem not tuned yet then
  // runs the heuristic's plan, and is tuned at a later call. The GPU's timer ignores `plan`; the
  // emulator's tests rank plans by it.
  std::function<cudaError_t(const Plan& plan, const std::function<cudaError_t()>& launches, double& ms)> time;
};

// Each returns the first launch error. User errors (sizes past the kernels' limits) raise before
// any launch.
cudaError_t gemm_forward(const ForwardArgs& args, const Device& device);
cudaError_t gemm_backward_input(const BackwardInputArgs& args, const Device& device);
cudaError_t gemm_backward_weight(const BackwardWeightArgs& args, const Device& device);

}  // namespace pointwise::cuda
