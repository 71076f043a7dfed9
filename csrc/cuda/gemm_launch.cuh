// Definitions behind gemm_launch.h; included by the one .cu per (math, element type).
#pragma once

#include <atomic>

#include "cuda/gemm.cuh"
#include "cuda/gemm_launch.h"

namespace pointwise::cuda {

template <Math MATH, typename T, typename OutT, class Cfg, bool A_K, bool B_K, Reduction R>
cudaError_t launch_tile(const GemmProblem& p, cudaStream_t stream) {
  using Kernel = GemmKernel<MATH, T, OutT, Cfg, A_K, B_K, R>;
  auto* kernel = &pointwise_gemm_kernel<MATH, T, OutT, Cfg, A_K, B_K, R>;
  // Shared memory beyond 48 KB must be opted into, once per kernel and device.
  static std::atomic<bool> configured[64];
  int device = 0;
  if (cudaError_t e = cudaGetDevice(&device); e != cudaSuccess) return e;
  if (device < 64 && !configured[device].load(std::memory_order_relaxed)) {
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         static_cast<int>(Kernel::kSmemBytes));
    if (e != cudaSuccess) return e;
    configured[device].store(true, std::memory_order_relaxed);
  }
  const dim3 grid((p.n + Cfg::BN - 1) / Cfg::BN, (p.m + Cfg::BM - 1) / Cfg::BM, p.groups * p.splits);
  kernel<<<grid, Cfg::kThreads, Kernel::kSmemBytes, stream>>>(p);
  return cudaGetLastError();
}

template <Math MATH, typename T, class Cfg, Reduction R>
cudaError_t launch_oriented(const GemmProblem& p, cudaStream_t stream) {
  // Orientations in use: forward NCHW (k, n) and NHWC (k, k); grad-input NCHW (m, n) and NHWC
  // (m, k); grad-weight (the reduction over pixels) NCHW (k, k) and NHWC (m, n).
  if constexpr (R == Reduction::kPixels) {
    using Acc = typename AccumulatorOf<T>::type;
    if (p.a_k_contiguous && p.b_k_contiguous) return launch_tile<MATH, T, Acc, Cfg, true, true, R>(p, stream);
    if (!p.a_k_contiguous && !p.b_k_contiguous) return launch_tile<MATH, T, Acc, Cfg, false, false, R>(p, stream);
  } else {
    if (p.a_k_contiguous && p.b_k_contiguous) return launch_tile<MATH, T, T, Cfg, true, true, R>(p, stream);
    if (p.a_k_contiguous) return launch_tile<MATH, T, T, Cfg, true, false, R>(p, stream);
    if (p.b_k_contiguous) return launch_tile<MATH, T, T, Cfg, false, true, R>(p, stream);
    return launch_tile<MATH, T, T, Cfg, false, false, R>(p, stream);
  }
  return cudaErrorNotSupported;
}

template <Math MATH, typename T>
cudaError_t launch_gemm(const GemmProblem& p, TileShape shape, Reduction reduction, cudaStream_t stream) {
  if constexpr (std::is_same_v<T, double>) {
    return reduction == Reduction::kPixels ? launch_oriented<MATH, T, DoubleTile, Reduction::kPixels>(p, stream)
                                           : launch_oriented<MATH, T, DoubleTile, Reduction::kChannels>(p, stream);
  } else {
    if (reduction == Reduction::kPixels) return launch_oriented<MATH, T, LargeTile, Reduction::kPixels>(p, stream);
    switch (shape) {
      case TileShape::kMedium: return launch_oriented<MATH, T, MediumTile, Reduction::kChannels>(p, stream);
      case TileShape::kNarrowM: return launch_oriented<MATH, T, NarrowMTile, Reduction::kChannels>(p, stream);
      case TileShape::kNarrowN: return launch_oriented<MATH, T, NarrowNTile, Reduction::kChannels>(p, stream);
      default: return launch_oriented<MATH, T, LargeTile, Reduction::kChannels>(p, stream);
    }
  }
}

template <typename T, typename Acc>
__global__ void pointwise_sum_splits_kernel(const Acc* __restrict__ partials, T* __restrict__ out, int64_t count,
                                            int32_t splits) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x) {
    Acc sum = partials[i];
    for (int32_t s = 1; s < splits; ++s) sum += partials[s * count + i];
    out[i] = from_acc<T>(sum);
  }
}

template <typename T>
cudaError_t launch_sum_splits(const void* partials, T* out, int64_t count, int32_t splits, cudaStream_t stream) {
  using Acc = typename AccumulatorOf<T>::type;
  const int threads = 256;
  const int64_t blocks = std::min<int64_t>((count + threads - 1) / threads, 4096);
  pointwise_sum_splits_kernel<T, Acc><<<blocks, threads, 0, stream>>>(static_cast<const Acc*>(partials), out, count, splits);
  return cudaGetLastError();
}

}  // namespace pointwise::cuda
