// Host-side entry points to the kernels of gemm.cuh, one explicit instantiation per
// (math, element type) in its own .cu so that the builds of the heavy templates run in parallel.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/gemm_problem.h"

namespace pointwise::cuda {

// Launches the GEMM on `stream`. A reduction over pixels writes each split's partial sums to C in
// the accumulator type (float, or double for double) instead of T: sum them with launch_sum_splits.
// Returns the launch's error code.
template <Math MATH, typename T>
cudaError_t launch_gemm(const GemmProblem& problem, TileShape shape, Reduction reduction, cudaStream_t stream);

// out[i] = sum over s in 0..splits-1, in that order, of partials[s * count + i]: a deterministic
// split-K reduction (no atomics), cast to T.
template <typename T>
cudaError_t launch_sum_splits(const void* partials, T* out, int64_t count, int32_t splits, cudaStream_t stream);

}  // namespace pointwise::cuda
