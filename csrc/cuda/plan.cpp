// The plans of the GEMMs (plan.h).
#include "cuda/plan.h"

#include <algorithm>

#include "cuda/element_types.h"
#include "cuda/gemm_launch.h"
#include "cuda/operand_layout.h"

namespace pointwise::cuda {
namespace {

// Split-K chunks are multiples of this, which every tile's BK divides.
constexpr int32_t kSplitGranule = 32;

// Split partials autotuning may allocate for one candidate: 32 M accumulators (128 MB of fp32).
constexpr int64_t kMostCandidatePartials = int64_t(1) << 25;

// Output tiles of the given shape over all groups: the GEMM's blocks when it is not split.
int64_t tile_count(const GemmProblem& p, BlockTile tile) {
  const TileExtent t = tile_extent(tile);
  return ((int64_t(p.m) + t.m - 1) / t.m) * ((int64_t(p.n) + t.n - 1) / t.n) * p.groups;
}

// The number of chunks set_splits makes of p's K range for `wanted`.
int32_t splits_for(GemmProblem p, int64_t wanted) {
  set_splits(p, wanted);
  return p.splits;
}

// The largest tile that still gives every SM about two blocks; narrow tiles where one GEMM side
// is small, so that no block computes mostly padding. `large`: the large tile, or the medium one
// where the large one's shared memory does not fit a block of the device.
BlockTile choose_tile(const GemmProblem& p, const Device& device, BlockTile large) {
  const int64_t enough = 2 * device.multiprocessors;
  if (p.m <= 32) return BlockTile::kNarrowM;
  if (p.n <= 32) return BlockTile::kNarrowN;
  if (p.m > 64 && p.n > 64 && tile_count(p, BlockTile::kLarge) >= enough) return large;
  if (p.m <= 48 && tile_count(p, BlockTile::kNarrowM) >= tile_count(p, BlockTile::kMedium) / 2)
    return BlockTile::kNarrowM;
  return BlockTile::kMedium;
}

// A channel reduction (forward, grad-input): the tile of choose_tile, and its K range split when
// those tiles leave SMs idle -- squeeze-excite layers at 1x1, few output channels on a 7x7 map --
// into enough chunks of at least two pipeline stages for about two medium tiles per SM (split GEMMs
// run on the medium tile). A first rule, not yet tuned on a GPU.
Plan channel_plan(const GemmProblem& p, const Device& device, BlockTile large) {
  const BlockTile tile = choose_tile(p, device, large);
  const int64_t sms = device.multiprocessors;
  if (tile_count(p, tile) >= sms) return {tile, 1};
  const int64_t medium = tile_count(p, BlockTile::kMedium);
  const int64_t wanted = std::min<int64_t>((2 * sms + medium - 1) / medium, p.k / (2 * kSplitGranule));
  const int32_t splits = wanted < 2 ? 1 : splits_for(p, wanted);
  return splits > 1 ? Plan{BlockTile::kMedium, splits} : Plan{tile, 1};
}

// Grad-weight's reduction over every pixel of the batch is long (~10^5) and its output small: the
// heuristic splits it so that the grid fills the GPU with about two blocks per SM, each split
// writing its own fp32 partials, summed in a fixed order. A weight of at most 64 x 64 per group
// takes the medium tile: in a large one most loads would be zero fill.
int64_t most_pixel_splits(const GemmProblem& p) { return std::max<int64_t>(1, p.k / (4 * kSplitGranule)); }
Plan pixel_plan(const GemmProblem& p, const Device& device, BlockTile large) {
  const BlockTile tile = p.m <= 64 && p.n <= 64 ? BlockTile::kMedium : large;
  const int64_t tiles = tile_count(p, tile);
  return {tile, splits_for(p, std::clamp<int64_t>((2 * device.multiprocessors + tiles - 1) / tiles, 1,
                                                  most_pixel_splits(p)))};
}

}  // namespace

std::string plan_name(const Plan& plan) {
  return std::string(kBlockTileNames[static_cast<int>(plan.tile)]) + " x" + std::to_string(plan.splits);
}

bool writes_partials(const Plan& plan, Reduction reduction) {
  return reduction == Reduction::kPixels || plan.splits > 1;
}

bool plan_runs(const Plan& plan, const GemmKind& kind, const Device& device) {
  const bool partials = writes_partials(plan, kind.reduction);
  const size_t bytes = dispatch_element_type(kind.dtype, kind.tf32, [&](auto math, auto element) {
    return gemm_smem_bytes<decltype(math)::value, decltype(element)>(plan.tile, kind.reduction, partials);
  });
  return bytes > 0 && bytes <= device.smem_per_block;
}

void set_splits(GemmProblem& p, int64_t wanted) {
  if (wanted <= 1) {
    p.splits = 1;
    p.k_per_split = p.k;
    return;
  }
  const int64_t chunk = (p.k + wanted - 1) / wanted;
  p.k_per_split = checked_int32((chunk + kSplitGranule - 1) / kSplitGranule * kSplitGranule, "K per split");
  p.splits = static_cast<int32_t>((p.k + p.k_per_split - 1) / p.k_per_split);
}

// The large tile falls back to the medium one where its shared memory does not fit a block of the
// device (4-byte elements on GPUs with 99 KB a block: sm_86, sm_89, sm_120). float64 has one tile,
// for checking: the splits the others would get with every tile fitting, on that tile.
Plan heuristic_plan(const GemmProblem& p, const GemmKind& kind, const Device& device) {
  const bool is_double = kind.dtype == at::kDouble;
  const BlockTile large =
      is_double || plan_runs({BlockTile::kLarge, 1}, kind, device) ? BlockTile::kLarge : BlockTile::kMedium;
  Plan plan = kind.reduction == Reduction::kPixels ? pixel_plan(p, device, large) : channel_plan(p, device, large);
  if (is_double) plan.tile = BlockTile::kDouble;
  return plan;
}

// Channel reductions: every tile unsplit, and, where medium tiles would not give every SM two,
// the medium tile with the K range cut in 2, 4, 8, ... chunks of at least two granules.
// Grad-weight: the large and medium tiles with a quarter to four times the heuristic's splits.
// Only plans that run on the device, and none whose partial sums would pass kMostCandidatePartials.
std::vector<Plan> candidate_plans(const GemmProblem& p, const GemmKind& kind, const Plan& heuristic,
                                  const Device& device) {
  std::vector<Plan> plans{heuristic};
  auto add = [&](Plan plan) {
    const bool known = std::any_of(plans.begin(), plans.end(), [&](const Plan& q) {
      return q.tile == plan.tile && q.splits == plan.splits;
    });
    const bool fits = plan.splits == 1 || int64_t(plan.splits) * p.groups * p.m * p.n <= kMostCandidatePartials;
    if (!known && fits && int64_t(p.groups) * plan.splits <= 65535 && plan_runs(plan, kind, device))
      plans.push_back(plan);
  };
  if (kind.reduction == Reduction::kChannels) {
    for (BlockTile tile : {BlockTile::kLarge, BlockTile::kMedium, BlockTile::kNarrowM, BlockTile::kNarrowN})
      add({tile, 1});
    if (tile_count(p, BlockTile::kMedium) < 2 * device.multiprocessors)
      for (int64_t wanted = 2; wanted <= 64 && p.k >= wanted * 2 * kSplitGranule; wanted *= 2)
        add({BlockTile::kMedium, splits_for(p, wanted)});
  } else {
    const int64_t s = heuristic.splits;
    for (BlockTile tile : {BlockTile::kLarge, BlockTile::kMedium})
      for (int64_t wanted : {s / 4, s / 2, s, 2 * s, 4 * s})
        add({tile, splits_for(p, std::clamp<int64_t>(wanted, 1, most_pixel_splits(p)))});
  }
  return plans;
}

}  // namespace pointwise::cuda
