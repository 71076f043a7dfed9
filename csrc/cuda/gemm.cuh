// The tiled channel GEMM behind every CUDA op of the package (see gemm_problem.h for the problem).
//
// One block computes a BM x BN tile of C for one group (and one split-K chunk) in three parts:
//   1. the offsets of its fixed coordinates (rows of A and C, columns of B and C), computed once so
//      that neither the K loop nor the epilogue divides;
//   2. the mainloop (gemm_mainloop.cuh): the cp.async pipeline and a math engine accumulate the
//      tile, then the engine writes it to shared memory, C's contiguous dimension fastest;
//   3. the epilogue (gemm_epilogue.cuh): bias, residual, activation, cast and store, read from
//      there in 16-byte vectors along C's contiguous dimension, whichever layout that is.
#pragma once

#include <cstdint>
#include <type_traits>

#include "cuda/gemm_epilogue.cuh"
#include "cuda/gemm_mainloop.cuh"

namespace pointwise::cuda {

// PARTIALS: the kernel writes split-K partial sums (gemm_launch.h) in the accumulator type.
template <Math MATH, typename T, class Cfg, bool A_K, bool B_K, Reduction R, bool PARTIALS>
struct GemmKernel {
  using Loop = Mainloop<MATH, T, Cfg, A_K, B_K, R>;
  using Acc = typename Loop::Acc;
  using Epilogue = CTileEpilogue<T, Acc, Cfg::BM, Cfg::BN, Cfg::kThreads, PARTIALS>;
  static constexpr int BM = Cfg::BM, BN = Cfg::BN;
  static_assert(PARTIALS || R == Reduction::kChannels, "a reduction over pixels writes partial sums");

  // Offsets of the block's fixed coordinates, -1 past the end of the GEMM or at a pixel in the
  // padding. They open the block's shared memory; the pipeline's stages follow, and the C tile
  // reuses the stages once the K loop is done.
  struct Offsets {
    int64_t a_m[BM], c_m[BM], b_n[BN], c_n[BN];
  };
  static constexpr size_t kOffsetsBytes = (sizeof(Offsets) + 15) / 16 * 16;

  // Shared memory for a GEMM whose blocks run at most k_tiles stages of K (Mainloop::smem_bytes).
  __host__ __device__ static constexpr size_t smem_bytes(int k_tiles) {
    const size_t stages = Loop::smem_bytes(k_tiles);
    return kOffsetsBytes + (stages > Epilogue::kSmemBytes ? stages : Epilogue::kSmemBytes);
  }
  static constexpr size_t kSmemBytes = smem_bytes(Cfg::STAGES);

  __device__ static void compute_offsets(Offsets& off, const GemmProblem& p, int32_t m0, int32_t n0) {
    for (int i = threadIdx.x; i < BM; i += Cfg::kThreads) {
      const bool inside = m0 + i < p.m;
      store_shared(off.a_m + i, inside ? p.a.rows.offset(m0 + i) : int64_t(-1));
      store_shared(off.c_m + i, inside ? p.c.rows.offset(m0 + i) : int64_t(-1));
    }
    for (int i = threadIdx.x; i < BN; i += Cfg::kThreads) {
      const bool inside = n0 + i < p.n;
      store_shared(off.b_n + i, inside ? p.b.cols.offset(n0 + i) : int64_t(-1));
      store_shared(off.c_n + i, inside ? p.c.cols.offset(n0 + i) : int64_t(-1));
    }
  }

  __device__ static void run(const GemmProblem& p) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    Offsets& off = *reinterpret_cast<Offsets*>(smem_raw);
    // Output tiles along x, n's fastest, so that the blocks running together share A's rows; y (at
    // most 65535) would cap m at 65535 tiles.
    const int32_t n_tiles = static_cast<int32_t>((int64_t(p.n) + BN - 1) / BN);
    const int32_t n0 = int32_t(blockIdx.x % n_tiles) * BN, m0 = int32_t(blockIdx.x / n_tiles) * BM;
    const int32_t group = blockIdx.z % p.groups, split = blockIdx.z / p.groups;
    const int32_t k_begin = split * p.k_per_split;
    const int32_t k_end = static_cast<int32_t>(min(int64_t(p.k), int64_t(k_begin) + p.k_per_split));
    const T* A = static_cast<const T*>(p.a.data) + group * p.a.group_stride;
    const T* B = static_cast<const T*>(p.b.data) + group * p.b.group_stride;

    compute_offsets(off, p, m0, n0);
    __syncthreads();
    typename Loop::Eng engine;
    Loop::run(engine, reinterpret_cast<T*>(smem_raw + kOffsetsBytes), p, off.a_m, off.b_n, A, B, k_begin, k_end);
    // The pipeline's shared memory becomes the C tile.
    Acc* Cs = reinterpret_cast<Acc*>(smem_raw + kOffsetsBytes);
    engine.store(Cs, Epilogue::ld_m(p), Epilogue::ld_n(p));
    __syncthreads();
    if constexpr (PARTIALS) {
      Epilogue::template store<Activation::kNone>(p, Cs, off.c_m, off.c_n, m0, group, split);
    } else {
      dispatch_activation(p.activation, [&](auto act) {
        Epilogue::template store<decltype(act)::value>(p, Cs, off.c_m, off.c_n, m0, group, split);
      });
    }
  }
};

template <Math MATH, typename T, class Cfg, bool A_K, bool B_K, Reduction R, bool PARTIALS>
__global__ void __launch_bounds__(Cfg::kThreads, Cfg::kMinBlocks) pointwise_gemm_kernel(const GemmProblem p) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  GemmKernel<MATH, T, Cfg, A_K, B_K, R, PARTIALS>::run(p);
#endif
}

}  // namespace pointwise::cuda
