// Autotuning of the GEMM plans (gemm_autotune.h).
#include "cuda/gemm_autotune.h"

#include <c10/core/ScalarType.h>

#include <algorithm>
#include <limits>
#include <sstream>
#include <string>
#include <type_traits>

#include "autotune.h"

namespace pointwise::cuda {
namespace {

int64_t plan_code(const Plan& plan) { return int64_t(plan.tile) << 32 | plan.splits; }
Plan plan_of(int64_t code) { return {static_cast<BlockTile>(code >> 32), static_cast<int32_t>(code & 0xffffffff)}; }

// Everything a plan's speed depends on: its bytes are the autotuning cache's key (cheap enough to
// build on every call with autotuning on), and describe() writes it out for the reports. All fields
// int64_t, so no padding byte is left undefined in the key.
struct ProblemKey {
  int64_t op, dtype, tf32, m, n, k, groups;
  int64_t a_k_contiguous, b_k_contiguous, c_m_contiguous;
  int64_t a_vectorized, b_vectorized, c_vectorized, a_paired, b_paired;
  int64_t b_rows_pixels, b_rows_mapped, b_cols_pixels, b_cols_mapped, c_cols_pixels, c_cols_mapped;
  int64_t bias, residual, activation, device, sms, compute_capability, smem_per_block;
};
static_assert(std::has_unique_object_representations_v<ProblemKey>, "the key's bytes must be its value");

const char* op_name(int64_t op) {
  return op == int64_t(Op::kForward) ? "forward" : op == int64_t(Op::kGradInput) ? "grad_input" : "grad_weight";
}

ProblemKey key_of(Op op, const GemmProblem& p, const GemmKind& kind, const Device& device) {
  return {int64_t(op), int64_t(kind.dtype), kind.tf32, p.m, p.n, p.k, p.groups,
          p.a_k_contiguous, p.b_k_contiguous, p.c_m_contiguous,
          p.a.vectorized, p.b.vectorized, p.c.vectorized, p.a.paired, p.b.paired,
          p.b.rows.pixels, p.b.rows.mapped, p.b.cols.pixels, p.b.cols.mapped, p.c.cols.pixels, p.c.cols.mapped,
          p.bias != nullptr, p.residual != nullptr, int64_t(p.activation), device.index, device.multiprocessors,
          device.compute_capability, int64_t(device.smem_per_block)};
}

std::string describe(const ProblemKey& k) {
  auto pixels = [](int64_t count, int64_t mapped) {
    return count == 0 ? std::string("-") : std::to_string(count) + (mapped ? "mapped" : "");
  };
  std::ostringstream s;
  s << op_name(k.op) << " " << c10::toString(static_cast<at::ScalarType>(k.dtype)) << (k.tf32 ? "/tf32" : "")
    << " m=" << k.m << " n=" << k.n << " k=" << k.k << " groups=" << k.groups << " contiguous="
    << (k.a_k_contiguous ? "k" : "m") << (k.b_k_contiguous ? "k" : "n") << (k.c_m_contiguous ? "m" : "n")
    << " vectors=" << k.a_vectorized << k.b_vectorized << k.c_vectorized << " pairs=" << k.a_paired << k.b_paired
    << " pixels=" << pixels(k.b_rows_pixels, k.b_rows_mapped) << "," << pixels(k.b_cols_pixels, k.b_cols_mapped)
    << "," << pixels(k.c_cols_pixels, k.c_cols_mapped) << " epilogue=" << k.bias << k.residual << k.activation
    << " device=" << k.device << " sms=" << k.sms << " sm=" << k.compute_capability;
  return s.str();
}

}  // namespace

cudaError_t run_tuned(Op op, const GemmProblem& p, const GemmKind& kind, const Plan& heuristic, const Device& device,
                      const std::function<cudaError_t(const Plan&)>& run) {
  const ProblemKey problem = key_of(op, p, kind, device);
  const std::string key(reinterpret_cast<const char*>(&problem), sizeof(problem));
  if (const auto kept = autotune::lookup(key)) return run(plan_of(*kept));
  if (!device.time) return run(heuristic);

  autotune::Entry entry{describe(problem), {}, 0};
  for (const Plan& plan : candidate_plans(p, kind, heuristic, device)) {
    auto launches = [&] { return run(plan); };
    if (cudaError_t err = launches(); err != cudaSuccess) return err;
    double best = std::numeric_limits<double>::infinity();
    for (int i = 0; i < 3; ++i) {
      double ms = 0;
      if (cudaError_t err = device.time(plan, launches, ms); err != cudaSuccess) return err;
      best = std::min(best, ms);
    }
    if (entry.timings.empty() || best < entry.timings[entry.chosen].ms) entry.chosen = entry.timings.size();
    entry.timings.push_back({plan_name(plan), plan_code(plan), best});
  }
  return run(plan_of(autotune::store(key, std::move(entry))));
}

}  // namespace pointwise::cuda
