// Definitions behind gemm_launch.h; included by the one .cu per (math, element type).
#pragma once

#include <algorithm>
#include <atomic>
#include <limits>

#include "cuda/gemm.cuh"
#include "cuda/gemm_launch.h"
#include "dispatch.h"

namespace pointwise::cuda {

template <BlockTile TILE> struct TileConfigOf;
template <> struct TileConfigOf<BlockTile::kLarge> { using type = LargeTile; };
template <> struct TileConfigOf<BlockTile::kMedium> { using type = MediumTile; };
template <> struct TileConfigOf<BlockTile::kNarrowM> { using type = NarrowMTile; };
template <> struct TileConfigOf<BlockTile::kNarrowN> { using type = NarrowNTile; };
template <> struct TileConfigOf<BlockTile::kDouble> { using type = DoubleTile; };

template <BlockTile TILE>
constexpr bool extent_matches() {
  using Cfg = typename TileConfigOf<TILE>::type;
  return tile_extent(TILE).m == Cfg::BM && tile_extent(TILE).n == Cfg::BN;
}
static_assert(extent_matches<BlockTile::kLarge>() && extent_matches<BlockTile::kMedium>() &&
                  extent_matches<BlockTile::kNarrowM>() && extent_matches<BlockTile::kNarrowN>() &&
                  extent_matches<BlockTile::kDouble>(),
              "tile_extent (gemm_problem.h) must describe the TileConfigs of gemm_mainloop.cuh");

// The least shared memory a block may opt into on the GPUs we build for: 99 KB on sm_86, sm_89 and
// sm_120 (163 KB on sm_80, 227 KB on sm_90). The plans fall back to the medium tile where the
// large one does not fit, so the medium one must fit everywhere.
constexpr size_t kLeastBlockSmem = 99 * 1024;

template <Math MATH, typename T, class Cfg, bool A_K, bool B_K, Reduction R, bool PARTIALS>
cudaError_t launch_tile(const GemmProblem& p, cudaStream_t stream) {
  using Kernel = GemmKernel<MATH, T, Cfg, A_K, B_K, R, PARTIALS>;
  auto* kernel = &pointwise_gemm_kernel<MATH, T, Cfg, A_K, B_K, R, PARTIALS>;
  static_assert(!std::is_same_v<Cfg, MediumTile> || Kernel::kSmemBytes <= kLeastBlockSmem,
                "the medium tile must fit any GPU's shared memory");
  // Shared memory beyond 48 KB must be opted into, once per kernel and device.
  static std::atomic<bool> configured[64];
  int device = 0;
  if (cudaError_t e = current_device(device); e != cudaSuccess) return e;
  if (device < 64 && !configured[device].load(std::memory_order_relaxed)) {
    if (cudaError_t e = set_max_dynamic_smem(kernel, Kernel::kSmemBytes); e != cudaSuccess) return e;
    configured[device].store(true, std::memory_order_relaxed);
  }
  // Every output tile on x (GemmKernel::run), groups x splits on z (host-checked).
  const int64_t tiles = (int64_t(p.n) + Cfg::BN - 1) / Cfg::BN * ((int64_t(p.m) + Cfg::BM - 1) / Cfg::BM);
  if (tiles > std::numeric_limits<int32_t>::max()) return cudaErrorInvalidConfiguration;  // 2^41 outputs a group
  const dim3 grid(static_cast<unsigned>(tiles), 1, p.groups * p.splits);
  const int k_tiles = static_cast<int>((int64_t(p.k_per_split) + Cfg::BK - 1) / Cfg::BK);
  return launch_kernel(kernel, grid, dim3(Cfg::kThreads), Kernel::smem_bytes(k_tiles), stream, p);
}

// f(std::integral_constant<bool, a_k>{}, std::integral_constant<bool, b_k>{}) for the orientations
// in use: forward NCHW (k, n) and NHWC (k, k); grad-input NCHW (m, n) and NHWC (m, k); grad-weight
// (the reduction over pixels) NCHW (k, k) and NHWC (m, n): there A and B always agree.
template <Reduction R, typename F>
cudaError_t dispatch_orientation(const GemmProblem& p, F&& f) {
  if constexpr (R == Reduction::kPixels) {
    if (p.a_k_contiguous != p.b_k_contiguous) return cudaErrorInvalidValue;
    return dispatch_bool(p.a_k_contiguous, [&](auto k) { return f(k, k); });
  } else {
    return dispatch_bool(p.a_k_contiguous, [&](auto a_k) {
      return dispatch_bool(p.b_k_contiguous, [&](auto b_k) { return f(a_k, b_k); });
    });
  }
}

// f(tile, reduction, partials) as integral constants, for a combination with kernels only; the
// value `otherwise` where there are none.
template <typename T, typename Result, typename F>
Result dispatch_kernels(BlockTile tile, Reduction reduction, bool partials, Result otherwise, F&& f) {
  return dispatch_enum<BlockTile, kBlockTileCount>(tile, [&](auto t) {
    constexpr BlockTile TILE = decltype(t)::value;
    return dispatch_enum<Reduction, 2>(reduction, [&](auto r) {
      constexpr Reduction R = decltype(r)::value;
      return dispatch_bool(partials, [&](auto with_partials) -> Result {
        constexpr bool PARTIALS = decltype(with_partials)::value;
        if constexpr (tile_instantiated(TILE, std::is_same_v<T, double>, R, PARTIALS)) {
          return f(std::integral_constant<BlockTile, TILE>{}, std::integral_constant<Reduction, R>{},
                   std::integral_constant<bool, PARTIALS>{});
        } else {
          return otherwise;
        }
      });
    });
  });
}

template <Math MATH, typename T>
cudaError_t launch_gemm(const GemmProblem& p, BlockTile tile, Reduction reduction, bool partials, cudaStream_t stream) {
  return dispatch_kernels<T>(tile, reduction, partials, cudaErrorInvalidValue, [&](auto t, auto r, auto with_partials) {
    using Cfg = typename TileConfigOf<decltype(t)::value>::type;
    constexpr Reduction R = decltype(r)::value;
    constexpr bool PARTIALS = decltype(with_partials)::value;
    return dispatch_orientation<R>(p, [&](auto a_k, auto b_k) {
      return launch_tile<MATH, T, Cfg, decltype(a_k)::value, decltype(b_k)::value, R, PARTIALS>(p, stream);
    });
  });
}

template <Math MATH, typename T>
size_t gemm_smem_bytes(BlockTile tile, Reduction reduction, bool partials) {
  return dispatch_kernels<T>(tile, reduction, partials, size_t(0), [&](auto t, auto r, auto with_partials) {
    using Cfg = typename TileConfigOf<decltype(t)::value>::type;
    constexpr Reduction R = decltype(r)::value;
    constexpr bool P = decltype(with_partials)::value;
    return std::max({GemmKernel<MATH, T, Cfg, true, true, R, P>::kSmemBytes,
                     GemmKernel<MATH, T, Cfg, true, false, R, P>::kSmemBytes,
                     GemmKernel<MATH, T, Cfg, false, true, R, P>::kSmemBytes,
                     GemmKernel<MATH, T, Cfg, false, false, R, P>::kSmemBytes});
  });
}

template <typename T>
cudaError_t launch_finish_splits(const GemmProblem& p, const void* partials, cudaStream_t stream) {
  using Acc = typename AccumulatorOf<T>::type;
  const int threads = 256;
  const int64_t count = int64_t(p.groups) * p.m * p.n;
  const int64_t blocks = std::min<int64_t>((count + threads - 1) / threads, 4096);
  return dispatch_activation(p.activation, [&](auto act) {
    return launch_kernel(&pointwise_finish_splits_kernel<T, Acc, decltype(act)::value>,
                         dim3(static_cast<unsigned>(blocks)), dim3(threads), 0, stream, p,
                         static_cast<const Acc*>(partials));
  });
}

}  // namespace pointwise::cuda
