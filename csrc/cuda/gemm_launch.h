// Host-side entry points to the kernels of gemm.cuh, one explicit instantiation per
// (math, element type) in its own .cu so that the builds of the heavy templates run in parallel.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/gemm_problem.h"

namespace pointwise::cuda {

// Launches the GEMM on `stream`. C receives partial sums in the accumulator type (float, or double
// for double) instead of T, one set per split of the K range, when the GEMM reduces over pixels or
// has more than one split; launch_finish_splits then adds them up. A split channel reduction runs
// on the medium tile whatever `shape` says; a reduction over pixels on the large or medium one.
// Returns the launch's error code.
template <Math MATH, typename T>
cudaError_t launch_gemm(const GemmProblem& problem, TileShape shape, Reduction reduction, cudaStream_t stream);

// The end of a split GEMM: for every (group, m, n), C = act(sum over the splits, in split order, of
// the partials + bias + residual), cast to T and stored through C's dimension maps (`problem`
// describes the real C). The partials of one split are groups x m x n accumulators laid out with
// C's contiguous dimension fastest. A fixed order and no atomics: the same bits on every run.
template <typename T>
cudaError_t launch_finish_splits(const GemmProblem& problem, const void* partials, cudaStream_t stream);

}  // namespace pointwise::cuda
