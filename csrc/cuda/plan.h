// How each GEMM runs: the plan (block tile, and how many chunks its K range is cut into), decided
// here once by the host, from the problem and what it knows of the device, and then run exactly by
// the launchers (gemm_launch.h). The built-in heuristic's plan, and the candidates autotuning times.
#pragma once

#include <c10/core/ScalarType.h>

#include <cstdint>
#include <string>
#include <vector>

#include "cuda/device.h"
#include "cuda/gemm_problem.h"

namespace pointwise::cuda {

struct Plan {
  BlockTile tile = BlockTile::kLarge;
  int32_t splits = 1;  // 1: not split
};

// "<tile> x<splits>", as autotuning reports it: "large x1", "medium x4", "narrow_m x1", "double x2".
std::string plan_name(const Plan& plan);

// What a plan depends on besides the problem's sizes.
struct GemmKind {
  at::ScalarType dtype;
  bool tf32;            // float32 on TF32 tensor cores
  Reduction reduction;  // over channels (forward, grad-input) or over pixels (grad-weight)
};

// Whether the GEMM writes split-K partial sums under this plan (every reduction over pixels does).
bool writes_partials(const Plan& plan, Reduction reduction);

// Whether `plan` can run: its tile has kernels for the kind, and their shared memory fits a block.
bool plan_runs(const Plan& plan, const GemmKind& kind, const Device& device);

// The heuristic's plan: see plan.cpp.
Plan heuristic_plan(const GemmProblem& p, const GemmKind& kind, const Device& device);

// What autotuning times: the heuristic's plan first, then the others worth trying (plan.cpp).
std::vector<Plan> candidate_plans(const GemmProblem& p, const GemmKind& kind, const Plan& heuristic,
                                  const Device& device);

// Cuts p's K range into about `wanted` chunks, each a multiple of kSplitGranule (one chunk: all of K).
void set_splits(GemmProblem& p, int64_t wanted);

}  // namespace pointwise::cuda
