// Autotuning of the GEMM plans on the CUDA backend: the key that says which problems share a plan,
// and the timing of the candidates (plan.h) on a problem's first call. The switch and the cache are
// csrc/autotune.h's.
#pragma once

#include <functional>

#include "cuda/device.h"
#include "cuda/plan.h"

namespace pointwise::cuda {

enum class Op { kForward, kGradInput, kGradWeight };

// The plan `p` runs with autotuning on: the one kept for its problem, or, on the problem's first
// call, the fastest of candidate_plans as timed by device.time, which is then kept (one untimed run
// of each, then the best of three). `run` runs a plan; each candidate writes the real output, the
// kept one last. Where nothing may be timed (device.time empty), an untuned problem runs the
// heuristic's plan and is not kept.
cudaError_t run_tuned(Op op, const GemmProblem& p, const GemmKind& kind, const Plan& heuristic, const Device& device,
                      const std::function<cudaError_t(const Plan&)>& run);

}  // namespace pointwise::cuda
