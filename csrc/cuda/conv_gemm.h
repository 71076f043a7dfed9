// The three convolutions as channel GEMMs (gemm_problem.h) and their runs: the problem each op
// describes, its plan (cuda/plan.h, or autotuning's), the split workspace, and the launches of
// gemm_launch.h. Device-independent host code, so that the same runs happen on a GPU
// (ops_cuda.cpp) and on the CPU emulator of the tests (tests/emulator/), which runs the kernels
// of gemm.cuh there.
#pragma once

#include <cuda_runtime.h>

#include "conv_args.h"
#include "cuda/device.h"
#include "cuda/plan.h"

namespace pointwise::cuda {

// Each returns the first launch error. User errors (sizes past the kernels' limits) raise before
// any launch.
cudaError_t gemm_forward(const ForwardArgs& args, const Device& device);
cudaError_t gemm_backward_input(const BackwardInputArgs& args, const Device& device);
cudaError_t gemm_backward_weight(const BackwardWeightArgs& args, const Device& device);

}  // namespace pointwise::cuda
