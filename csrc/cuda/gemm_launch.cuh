// Definitions behind gemm_launch.h; included by the one .cu per (math, element type).
#pragma once

#include <algorithm>
#include <atomic>
#include <limits>

#include "cuda/gemm.cuh"
#include "cuda/gemm_launch.h"

namespace pointwise::cuda {

template <class Cfg>
constexpr bool extent_matches(TileShape shape) {
  return tile_extent(shape).m == Cfg::BM && tile_extent(shape).n == Cfg::BN;
}
static_assert(extent_matches<LargeTile>(TileShape::kLarge) && extent_matches<MediumTile>(TileShape::kMedium) &&
                  extent_matches<NarrowMTile>(TileShape::kNarrowM) && extent_matches<NarrowNTile>(TileShape::kNarrowN),
              "tile_extent (gemm_problem.h) must describe the TileConfigs of gemm.cuh");

template <Math MATH, typename T, typename OutT, class Cfg, bool A_K, bool B_K, Reduction R>
cudaError_t launch_tile(const GemmProblem& p, cudaStream_t stream) {
  using Kernel = GemmKernel<MATH, T, OutT, Cfg, A_K, B_K, R>;
  auto* kernel = &pointwise_gemm_kernel<MATH, T, OutT, Cfg, A_K, B_K, R>;
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

template <Math MATH, typename T, class Cfg, Reduction R, bool PARTIALS>
cudaError_t launch_oriented(const GemmProblem& p, cudaStream_t stream) {
  using OutT = std::conditional_t<PARTIALS, typename AccumulatorOf<T>::type, T>;
  // Orientations in use: forward NCHW (k, n) and NHWC (k, k); grad-input NCHW (m, n) and NHWC
  // (m, k); grad-weight (the reduction over pixels) NCHW (k, k) and NHWC (m, n).
  if (p.a_k_contiguous && p.b_k_contiguous) return launch_tile<MATH, T, OutT, Cfg, true, true, R>(p, stream);
  if (!p.a_k_contiguous && !p.b_k_contiguous) return launch_tile<MATH, T, OutT, Cfg, false, false, R>(p, stream);
  if constexpr (R == Reduction::kChannels) {
    if (p.a_k_contiguous) return launch_tile<MATH, T, OutT, Cfg, true, false, R>(p, stream);
    return launch_tile<MATH, T, OutT, Cfg, false, true, R>(p, stream);
  }
  return cudaErrorNotSupported;
}

// The most shared memory a block of this kernel asks for, over the four orientations.
template <Math MATH, typename T, typename OutT, class Cfg, Reduction R>
constexpr size_t smem_bytes() {
  return std::max({GemmKernel<MATH, T, OutT, Cfg, true, true, R>::kSmemBytes,
                   GemmKernel<MATH, T, OutT, Cfg, true, false, R>::kSmemBytes,
                   GemmKernel<MATH, T, OutT, Cfg, false, true, R>::kSmemBytes,
                   GemmKernel<MATH, T, OutT, Cfg, false, false, R>::kSmemBytes});
}

// The least shared memory a block may opt into on the GPUs we build for: 99 KB on sm_86, sm_89 and
// sm_120 (163 KB on sm_80, 227 KB on sm_90).
constexpr size_t kLeastBlockSmem = 99 * 1024;

// What a block may opt into on the current device (cached per device).
inline size_t block_smem_limit() {
  static std::atomic<int> cached[64];
  int device = 0;
  if (current_device(device) != cudaSuccess || device >= 64) return kLeastBlockSmem;
  int bytes = cached[device].load(std::memory_order_relaxed);
  if (bytes == 0) {
    if (block_smem_optin(bytes, device) != cudaSuccess) return kLeastBlockSmem;
    cached[device].store(bytes, std::memory_order_relaxed);
  }
  return static_cast<size_t>(bytes);
}

// The large tile, or the medium one on a device that grants a block less shared memory than the
// large tile needs (4-byte elements on sm_86 / sm_89 / sm_120).
template <Math MATH, typename T, Reduction R, bool PARTIALS>
cudaError_t launch_large(const GemmProblem& p, cudaStream_t stream) {
  using OutT = std::conditional_t<PARTIALS, typename AccumulatorOf<T>::type, T>;
  static_assert(smem_bytes<MATH, T, OutT, MediumTile, R>() <= kLeastBlockSmem, "the medium tile must fit anywhere");
  if constexpr (smem_bytes<MATH, T, OutT, LargeTile, R>() > kLeastBlockSmem) {
    if (smem_bytes<MATH, T, OutT, LargeTile, R>() > block_smem_limit())
      return launch_oriented<MATH, T, MediumTile, R, PARTIALS>(p, stream);
  }
  return launch_oriented<MATH, T, LargeTile, R, PARTIALS>(p, stream);
}

template <Math MATH, typename T>
cudaError_t launch_gemm(const GemmProblem& p, TileShape shape, Reduction reduction, cudaStream_t stream) {
  if constexpr (std::is_same_v<T, double>) {  // one small tile for the float64 checks
    if (reduction == Reduction::kPixels)
      return launch_oriented<MATH, T, DoubleTile, Reduction::kPixels, true>(p, stream);
    if (p.splits > 1) return launch_oriented<MATH, T, DoubleTile, Reduction::kChannels, true>(p, stream);
    return launch_oriented<MATH, T, DoubleTile, Reduction::kChannels, false>(p, stream);
  } else {
    if (reduction == Reduction::kPixels) {
      if (shape == TileShape::kMedium) return launch_oriented<MATH, T, MediumTile, Reduction::kPixels, true>(p, stream);
      return launch_large<MATH, T, Reduction::kPixels, true>(p, stream);
    }
    if (p.splits > 1) return launch_oriented<MATH, T, MediumTile, Reduction::kChannels, true>(p, stream);
    switch (shape) {
      case TileShape::kMedium: return launch_oriented<MATH, T, MediumTile, Reduction::kChannels, false>(p, stream);
      case TileShape::kNarrowM: return launch_oriented<MATH, T, NarrowMTile, Reduction::kChannels, false>(p, stream);
      case TileShape::kNarrowN: return launch_oriented<MATH, T, NarrowNTile, Reduction::kChannels, false>(p, stream);
      default: return launch_large<MATH, T, Reduction::kChannels, false>(p, stream);
    }
  }
}

template <typename T, typename Acc>
__global__ void pointwise_finish_splits_kernel(const GemmProblem p, const Acc* __restrict__ partials) {
  const int64_t per_group = int64_t(p.m) * p.n, count = per_group * p.groups;
  const int32_t fast_len = p.c_m_contiguous ? p.m : p.n;
  T* C = static_cast<T*>(const_cast<void*>(p.c.data));
  const T* bias = static_cast<const T*>(p.bias);
  const T* residual = static_cast<const T*>(p.residual);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x) {
    Acc z = partials[i];
    for (int32_t s = 1; s < p.splits; ++s) z += partials[s * count + i];
    const int32_t group = static_cast<int32_t>(i / per_group);
    const int64_t within = i - group * per_group;
    const int32_t slow = static_cast<int32_t>(within / fast_len);
    const int32_t fast = static_cast<int32_t>(within - int64_t(slow) * fast_len);
    const int32_t m = p.c_m_contiguous ? fast : slow, n = p.c_m_contiguous ? slow : fast;
    const int64_t row = p.c.rows.offset(m), col = p.c.cols.offset(n);
    if (row < 0 || col < 0) continue;  // a pixel in the padding: no such output
    const int64_t offset = group * p.c.group_stride + row + col;
    if (bias) z += load_acc<Acc>(bias[int64_t(group) * p.m + m]);
    if (residual) z += load_acc<Acc>(residual[offset]);
    switch (p.activation) {
      case 1: z = activate<1>(z); break;
      case 2: z = activate<2>(z); break;
      case 3: z = activate<3>(z); break;
      case 4: z = activate<4>(z); break;
      default: break;
    }
    C[offset] = from_acc<T>(z);
  }
}

template <typename T>
cudaError_t launch_finish_splits(const GemmProblem& p, const void* partials, cudaStream_t stream) {
  using Acc = typename AccumulatorOf<T>::type;
  const int threads = 256;
  const int64_t count = int64_t(p.groups) * p.m * p.n;
  const int64_t blocks = std::min<int64_t>((count + threads - 1) / threads, 4096);
  return launch_kernel(&pointwise_finish_splits_kernel<T, Acc>, dim3(static_cast<unsigned>(blocks)), dim3(threads), 0,
                       stream, p, static_cast<const Acc*>(partials));
}

}  // namespace pointwise::cuda
