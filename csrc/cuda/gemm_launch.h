// Host-side entry points to the kernels of gemm.cuh, one explicit instantiation per
// (math, element type) in its own .cu so that the builds of the heavy templates run in parallel.
// They run exactly the plan they are given (cuda/plan.h decides it); a plan without kernels is a
// launch error, never a silent change of tile.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "cuda/gemm_problem.h"

namespace pointwise::cuda {

// Launches the GEMM on `stream` with block tile `tile` (tile_instantiated, gemm_problem.h, says
// which have kernels: cudaErrorInvalidValue for the others). `partials`: C receives partial sums
// in the accumulator type (float, or double for double) instead of T, one set per split of the K
// range, for launch_finish_splits to add up; every reduction over pixels writes them.
template <Math MATH, typename T>
cudaError_t launch_gemm(const GemmProblem& problem, BlockTile tile, Reduction reduction, bool partials,
                        cudaStream_t stream);

// The most dynamic shared memory a block of that launch can ask for (over the operands' and C's
// orientations), so that plans only use tiles within what the device grants a block; 0 for a
// tile without kernels.
template <Math MATH, typename T>
size_t gemm_smem_bytes(BlockTile tile, Reduction reduction, bool partials);

// The end of a split GEMM: for every (group, m, n), C = act(sum over the splits, in split order, of
// the partials + bias + residual), cast to T and stored through C's dimension maps (`problem`
// describes the real C). The partials of one split are groups x m x n accumulators laid out with
// C's contiguous dimension fastest. A fixed order and no atomics: the same bits on every run.
template <typename T>
cudaError_t launch_finish_splits(const GemmProblem& problem, const void* partials, cudaStream_t stream);

}  // namespace pointwise::cuda
