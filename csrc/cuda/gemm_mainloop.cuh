// The mainloop of the tiled channel GEMM (gemm.cuh): a block's BM x BN tile of C accumulated over
// its K range, in the registers of a math engine.
//   1. a STAGES-deep cp.async pipeline stages BM x BK tiles of A and BK x BN tiles of B in shared
//      memory, each kept in the orientation it has in global memory (16-byte vectors along the
//      contiguous dimension where the host allowed it, 4-byte pairs of 16-bit elements, or single
//      elements);
//   2. a math engine consumes the stages: tensor cores through mma.sync (bf16 / fp16 m16n8k16,
//      TF32 m16n8k8) or exact FFMA/DFMA (SIMT), accumulating in fp32 (fp64 for double), and
//      finally writes its accumulators into the shared C tile that the epilogue
//      (gemm_epilogue.cuh) reads. Another mainloop (a Hopper wgmma one) would end the same way and
//      reuse that epilogue.
#pragma once

#include <cstdint>
#include <type_traits>

#include "cuda/gemm_problem.h"
#include "cuda/hardware.cuh"
#include "cuda/numeric.cuh"

namespace pointwise::cuda {

// Tile shape: BM x BN per block, BK per pipeline stage, WARPS_M x WARPS_N warps.
template <int BM_, int BN_, int BK_, int WARPS_M_, int WARPS_N_, int STAGES_>
struct TileConfig {
  static constexpr int BM = BM_, BN = BN_, BK = BK_;
  static constexpr int WARPS_M = WARPS_M_, WARPS_N = WARPS_N_, STAGES = STAGES_;
  static constexpr int kThreads = 32 * WARPS_M * WARPS_N;
  // Blocks per SM the compiler must leave registers for (0: no bound). Two for 256-thread tiles, so
  // at most 128 registers a thread: unbounded, the fp32 SIMT engine on the large tile took 180-210,
  // one block (8 warps) per SM; at 128 it spills 4 bytes in two orientations (ptxas -v, sm_90a).
  // None for smaller tiles: even a bound of 1 made ptxas use more registers there (64 -> ~108).
  static constexpr int kMinBlocks = kThreads >= 256 ? 2 : 0;
  static_assert(STAGES >= 2, "the pipeline needs at least two stages");
  static_assert(BK % 16 == 0, "BK must hold whole mma k-steps (16 for bf16/fp16)");
  static_assert((BM & (BM - 1)) == 0 && (BN & (BN - 1)) == 0, "the epilogue splits C tile indices with shifts");
};

// The block tiles of BlockTile (gemm_problem.h); the host's plan (cuda/plan.cpp) picks one per GEMM.
using LargeTile = TileConfig<128, 128, 32, 2, 4, 3>;   // big GEMMs
using NarrowMTile = TileConfig<32, 128, 32, 1, 4, 4>;  // few output channels (e.g. 512 -> 10)
using MediumTile = TileConfig<64, 64, 32, 2, 2, 4>;    // mid-size GEMMs that would leave SMs idle with 128x128
using NarrowNTile = TileConfig<128, 32, 32, 4, 1, 4>;  // few pixels (7x7 maps, 1x1 squeeze-excite)
using DoubleTile = TileConfig<32, 32, 16, 1, 2, 2>;    // float64, for checking: small and within any smem limit

// ---- shared-memory tiles -------------------------------------------------------------------------

// A tile of OUTER x INNER elements stored row by row (INNER contiguous), rows padded so that the
// fragment reads of the engines below hit distinct banks and every row stays 16-byte aligned.
template <typename T, int OUTER, int INNER, int PAD_BYTES>
struct SmemTile {
  static constexpr int kOuter = OUTER, kInner = INNER;
  static constexpr int kLd = INNER + PAD_BYTES / int(sizeof(T));
  static constexpr int kElems = OUTER * kLd;
  static_assert((kLd * sizeof(T)) % 16 == 0, "rows must stay 16-byte aligned for cp.async");
};

// Fills one stage of a tile of OUTER x INNER elements, INNER being contiguous in global memory.
// One of the two is the K dimension (indices from k0, offsets from k_dim, which needs a division
// only for a reduction over pixels); the other is the block's fixed range of m or n, whose offsets
// were computed once per block (`fixed`, -1 where there is nothing to read). Positions with nothing
// to read are filled with zeros. The operand's layout (host-checked, gemm_problem.h) decides how:
// 16-byte vectors, 4-byte pairs of 16-bit elements, or single elements.
template <typename T, int OUTER, int INNER, int LD, int THREADS, bool K_INNER, Reduction R>
__device__ __forceinline__ void load_tile(T* smem, const T* gmem, const int64_t* fixed, const DimIndex& k_dim,
                                          int32_t k0, int32_t k_end, const GemmOperand& op) {
  // The global offset of element (o, i) of the tile, or -1 where there is nothing to read.
  auto offset = [&](int o, int i) -> int64_t {
    const int32_t k = k0 + (K_INNER ? i : o);
    const int64_t f = load_shared(fixed + (K_INNER ? o : i));
    const int64_t ko = k >= k_end ? -1 : R == Reduction::kChannels ? int64_t(k) * k_dim.stride : k_dim.offset(k);
    return f >= 0 && ko >= 0 ? f + ko : -1;
  };
  // Runs of V elements along INNER, wholly inside or outside the operand, each copied by one
  // cp.async of V * sizeof(T) bytes.
  auto copy_runs = [&](auto run_elements) {
    constexpr int V = decltype(run_elements)::value;
    constexpr int kRuns = OUTER * INNER / V;
#pragma unroll 4
    for (int it = 0; it < (kRuns + THREADS - 1) / THREADS; ++it) {
      const int r = threadIdx.x + it * THREADS;
      if (kRuns % THREADS != 0 && r >= kRuns) break;
      const int o = r / (INNER / V), i = (r % (INNER / V)) * V;
      const int64_t at = offset(o, i);
      cp_async<V * sizeof(T)>(smem + o * LD + i, at >= 0 ? gmem + at : gmem, at >= 0);
    }
  };
  if (op.vectorized) {
    copy_runs(std::integral_constant<int, 16 / sizeof(T)>{});
  } else if constexpr (sizeof(T) == 2) {
    if (op.paired) {
      copy_runs(std::integral_constant<int, 2>{});
    } else {
      // cp.async moves at least 4 bytes: single 16-bit elements go through registers, in batches
      // of 4 loads issued before the first is stored, so that a stage waits for one memory latency
      // per batch rather than per element or two. Batches of 8 took 96-110 registers on the
      // 128-thread tiles, 4 take 64-80, as before (ptxas, sm_90a, bf16).
      constexpr int kElems = OUTER * INNER, kPerThread = (kElems + THREADS - 1) / THREADS;
      constexpr int kBatch = kPerThread < 4 ? kPerThread : 4;
#pragma unroll 1
      for (int first = 0; first < kPerThread; first += kBatch) {
        T value[kBatch];
#pragma unroll
        for (int j = 0; j < kBatch; ++j) {
          const int e = threadIdx.x + (first + j) * THREADS;
          value[j] = from_acc<T>(0.0f);
          if (first + j < kPerThread && (kElems % THREADS == 0 || e < kElems)) {
            const int64_t at = offset(e / INNER, e % INNER);
            if (at >= 0) value[j] = load_global(gmem + at);
          }
        }
#pragma unroll
        for (int j = 0; j < kBatch; ++j) {
          const int e = threadIdx.x + (first + j) * THREADS;
          if (first + j < kPerThread && (kElems % THREADS == 0 || e < kElems))
            store_shared(smem + (e / INNER) * LD + e % INNER, value[j]);
        }
      }
    }
  } else {
#pragma unroll 2
    for (int e = threadIdx.x; e < OUTER * INNER; e += THREADS) {
      const int o = e / INNER, i = e % INNER;
      const int64_t at = offset(o, i);
      cp_async<sizeof(T)>(smem + o * LD + i, at >= 0 ? gmem + at : gmem, at >= 0);
    }
  }
}

// ---- math engines ------------------------------------------------------------------------------
// Each engine: padding of its shared tiles, the accumulator fragment, one BK stage of math,
// and the write of its accumulators into the shared C tile.

template <Math MATH, typename T, class Cfg, bool A_K, bool B_K>
struct Engine;

// Exact fp32 / fp64: thread (ty, tx) of a 16-wide grid owns rows ty + i*TY and columns tx + j*16,
// so a warp reads 2 rows of A (broadcast) and 16 consecutive columns of B per k.
template <typename T, class Cfg, bool A_K, bool B_K>
struct Engine<Math::kSimt, T, Cfg, A_K, B_K> {
  static constexpr int TX = 16, TY = Cfg::kThreads / TX;
  static constexpr int TM = Cfg::BM / TY, TN = Cfg::BN / TX;
  static_assert(Cfg::BM % TY == 0 && Cfg::BN % TX == 0, "SIMT thread grid must tile the block");
  static constexpr int kPadK = 16, kPadMN = 16;
  using Acc = T;
  Acc acc[TM][TN];

  __device__ void init() {
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int j = 0; j < TN; ++j) acc[i][j] = Acc(0);
  }
  template <int LDA, int LDB>
  __device__ void mma_stage(const T* As, const T* Bs) {
    const int ty = threadIdx.x / TX, tx = threadIdx.x % TX;
#pragma unroll 4
    for (int k = 0; k < Cfg::BK; ++k) {
      T a[TM], b[TN];
#pragma unroll
      for (int i = 0; i < TM; ++i) a[i] = load_shared(A_K ? As + (ty + i * TY) * LDA + k : As + k * LDA + ty + i * TY);
#pragma unroll
      for (int j = 0; j < TN; ++j) b[j] = load_shared(B_K ? Bs + (tx + j * TX) * LDB + k : Bs + k * LDB + tx + j * TX);
#pragma unroll
      for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = fma(a[i], b[j], acc[i][j]);
    }
  }
  // Writes the accumulators to Cs[m * ld_m + n * ld_n] (one of the two strides is 1).
  __device__ void store(Acc* Cs, int ld_m, int ld_n) const {
    const int ty = threadIdx.x / TX, tx = threadIdx.x % TX;
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
      for (int j = 0; j < TN; ++j) store_shared(Cs + (ty + i * TY) * ld_m + (tx + j * TX) * ld_n, acc[i][j]);
  }
};

// Tensor cores: warps tile the block WARPS_M x WARPS_N; each warp owns MI x NI mma tiles of 16x8.
// Fragments are read from the stage in its global orientation (fragment layouts: PTX ISA,
// "Matrix Fragments for mma.m16n8k16" / "mma.m16n8k8" with .tf32): by ldmatrix for 16-bit types
// (its transposing form for tiles stored m- or n-contiguous, as the mma wants k-contiguous
// fragments), element by element (with the conversion to TF32) for fp32.
template <Math MATH, typename T, class Cfg, bool A_K, bool B_K>
struct MmaEngine {
  static constexpr bool kTf32 = MATH == Math::kTf32;
  static constexpr int KSTEP = kTf32 ? 8 : 16;
  static constexpr int WTM = Cfg::BM / Cfg::WARPS_M, WTN = Cfg::BN / Cfg::WARPS_N;
  static constexpr int MI = WTM / 16, NI = WTN / 8;
  static_assert(WTM % 16 == 0 && WTN % 8 == 0, "warp tile must hold whole 16x8 mma tiles");
  static_assert(kTf32 || NI % 2 == 0, "16-bit B fragments are loaded two n-blocks at a time");
  // Row padding that keeps fragment reads free of bank conflicts: 16 bytes puts ldmatrix's eight
  // 16-byte rows on distinct banks; TF32's 4-byte reads of m- or n-major tiles need 32.
  static constexpr int kPadK = 16, kPadMN = kTf32 ? 32 : 16;
  using Acc = float;
  float acc[MI][NI][4];

  __device__ void init() {
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
      for (int j = 0; j < NI; ++j)
#pragma unroll
        for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.f;
  }
  template <int LDA>
  __device__ __forceinline__ static T a_at(const T* As, int m, int k) {
    return load_shared(A_K ? As + m * LDA + k : As + k * LDA + m);
  }
  template <int LDB>
  __device__ __forceinline__ static T b_at(const T* Bs, int k, int n) {
    return load_shared(B_K ? Bs + n * LDB + k : Bs + k * LDB + n);
  }

  // 16-bit fragments by ldmatrix. A's 16x16 fragment at (m0, k0) is four 8x8 matrices, in register
  // order (m0, k0), (m0 + 8, k0), (m0, k0 + 8), (m0 + 8, k0 + 8); B's fragments for the two n-blocks
  // at n0 and n0 + 8 are (k0, n0), (k0 + 8, n0), (k0, n0 + 8), (k0 + 8, n0 + 8).
  template <int LDA>
  __device__ __forceinline__ static void load_a16(uint32_t (&a)[4], const T* As, int m0, int k0, int lane) {
    const int q = lane / 8, row = lane % 8;
    const int m = m0 + (q % 2) * 8, k = k0 + (q / 2) * 8;
    ldmatrix_x4<!A_K>(a, A_K ? As + (m + row) * LDA + k : As + (k + row) * LDA + m);
  }
  template <int LDB>
  __device__ __forceinline__ static void load_b16_pair(uint32_t (&b0)[2], uint32_t (&b1)[2], const T* Bs, int n0,
                                                       int k0, int lane) {
    const int q = lane / 8, row = lane % 8;
    const int k = k0 + (q % 2) * 8, n = n0 + (q / 2) * 8;
    uint32_t r[4];
    ldmatrix_x4<!B_K>(r, B_K ? Bs + (n + row) * LDB + k : Bs + (k + row) * LDB + n);
    b0[0] = r[0], b0[1] = r[1], b1[0] = r[2], b1[1] = r[3];
  }

  template <int LDA, int LDB>
  __device__ void mma_stage(const T* As, const T* Bs) {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int wm = warp / Cfg::WARPS_N, wn = warp % Cfg::WARPS_N;
#pragma unroll
    for (int ks = 0; ks < Cfg::BK; ks += KSTEP) {
      uint32_t a[MI][4], b[NI][2];
      if constexpr (kTf32) {
        const int g = lane / 4, t = lane % 4;
#pragma unroll
        for (int i = 0; i < MI; ++i) {
          const int m = wm * WTM + i * 16 + g;
          a[i][0] = to_tf32(a_at<LDA>(As, m, ks + t));
          a[i][1] = to_tf32(a_at<LDA>(As, m + 8, ks + t));
          a[i][2] = to_tf32(a_at<LDA>(As, m, ks + t + 4));
          a[i][3] = to_tf32(a_at<LDA>(As, m + 8, ks + t + 4));
        }
#pragma unroll
        for (int j = 0; j < NI; ++j) {
          const int n = wn * WTN + j * 8 + g;
          b[j][0] = to_tf32(b_at<LDB>(Bs, ks + t, n));
          b[j][1] = to_tf32(b_at<LDB>(Bs, ks + t + 4, n));
        }
      } else {
#pragma unroll
        for (int i = 0; i < MI; ++i) load_a16<LDA>(a[i], As, wm * WTM + i * 16, ks, lane);
#pragma unroll
        for (int j = 0; j < NI; j += 2) load_b16_pair<LDB>(b[j], b[j + 1], Bs, wn * WTN + j * 8, ks, lane);
      }
#pragma unroll
      for (int i = 0; i < MI; ++i)
#pragma unroll
        for (int j = 0; j < NI; ++j) mma(acc[i][j], a[i], b[j]);
    }
  }

  __device__ __forceinline__ static void mma(float* d, const uint32_t* a, const uint32_t* b) {
    if constexpr (kTf32) mma_m16n8k8_tf32(d, a, b);
    else mma_m16n8k16<T>(d, a, b);
  }

  // Writes the accumulators to Cs[m * ld_m + n * ld_n] (one of the two strides is 1).
  __device__ void store(float* Cs, int ld_m, int ld_n) const {
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int wm = warp / Cfg::WARPS_N, wn = warp % Cfg::WARPS_N;
    const int g = lane / 4, t = lane % 4;
#pragma unroll
    for (int i = 0; i < MI; ++i)
#pragma unroll
      for (int j = 0; j < NI; ++j) {
        const int m = wm * WTM + i * 16 + g, n = wn * WTN + j * 8 + 2 * t;
        if (ld_n == 1) {  // (n, n + 1) adjacent: one 8-byte store (the tile's padding assumes it)
          store_shared(reinterpret_cast<float2*>(Cs + m * ld_m + n), make_float2(acc[i][j][0], acc[i][j][1]));
          store_shared(reinterpret_cast<float2*>(Cs + (m + 8) * ld_m + n), make_float2(acc[i][j][2], acc[i][j][3]));
        } else {
          store_shared(Cs + m * ld_m + n * ld_n, acc[i][j][0]);
          store_shared(Cs + m * ld_m + (n + 1) * ld_n, acc[i][j][1]);
          store_shared(Cs + (m + 8) * ld_m + n * ld_n, acc[i][j][2]);
          store_shared(Cs + (m + 8) * ld_m + (n + 1) * ld_n, acc[i][j][3]);
        }
      }
  }
};

template <typename T, class Cfg, bool A_K, bool B_K>
struct Engine<Math::kTf32, T, Cfg, A_K, B_K> : MmaEngine<Math::kTf32, T, Cfg, A_K, B_K> {};
template <typename T, class Cfg, bool A_K, bool B_K>
struct Engine<Math::kMma16, T, Cfg, A_K, B_K> : MmaEngine<Math::kMma16, T, Cfg, A_K, B_K> {};


// ---- the pipeline ------------------------------------------------------------------------------

template <Math MATH, typename T, class Cfg, bool A_K, bool B_K, Reduction R>
struct Mainloop {
  using Eng = Engine<MATH, T, Cfg, A_K, B_K>;
  using Acc = typename Eng::Acc;
  static constexpr int BM = Cfg::BM, BN = Cfg::BN, BK = Cfg::BK, STAGES = Cfg::STAGES;
  // A stage: (m, k) stored [m][k] when k is contiguous, else [k][m]; B: (k, n) stored [n][k] or [k][n].
  using TileA = SmemTile<T, A_K ? BM : BK, A_K ? BK : BM, A_K ? Eng::kPadK : Eng::kPadMN>;
  using TileB = SmemTile<T, B_K ? BN : BK, B_K ? BK : BN, B_K ? Eng::kPadK : Eng::kPadMN>;
  static constexpr size_t kStageBytes = (TileA::kElems + TileB::kElems) * sizeof(T);

  // Shared memory for the stages of a GEMM whose blocks run at most k_tiles stages of K: a block
  // never touches more than that many, so a short reduction (K <= 64 in most memory-bound layers)
  // asks for less and more blocks fit on an SM.
  __host__ __device__ static constexpr size_t smem_bytes(int k_tiles) {
    return size_t(k_tiles < 1 ? 1 : (k_tiles < STAGES ? k_tiles : STAGES)) * kStageBytes;
  }

  __device__ static void load_stage(T* As, T* Bs, const GemmProblem& p, const int64_t* a_rows, const int64_t* b_cols,
                                    const T* A, const T* B, int32_t k0, int32_t k_end) {
    load_tile<T, TileA::kOuter, TileA::kInner, TileA::kLd, Cfg::kThreads, A_K, R>(As, A, a_rows, p.a.cols, k0, k_end,
                                                                               p.a);
    load_tile<T, TileB::kOuter, TileB::kInner, TileB::kLd, Cfg::kThreads, B_K, R>(Bs, B, b_cols, p.b.rows, k0, k_end,
                                                                               p.b);
  }

  // Accumulates A[m0.., k_begin..k_end) . B[k_begin..k_end), n0..] into `engine` through the stages
  // at `smem`. a_rows / b_cols: the offsets of the block's rows of A and columns of B (-1 where there
  // is nothing to read). Returns with every copy landed and every thread past its last read of the
  // stages, so the caller may reuse their shared memory.
  __device__ static void run(Eng& engine, T* smem, const GemmProblem& p, const int64_t* a_rows, const int64_t* b_cols,
                             const T* A, const T* B, int32_t k_begin, int32_t k_end) {
    auto stage_a = [&](int s) { return smem + s * (TileA::kElems + TileB::kElems); };
    auto stage_b = [&](int s) { return stage_a(s) + TileA::kElems; };
    engine.init();
    const int k_tiles = (k_end - k_begin + BK - 1) / BK;
#pragma unroll 1
    for (int s = 0; s < STAGES - 1; ++s) {
      if (s < k_tiles) load_stage(stage_a(s), stage_b(s), p, a_rows, b_cols, A, B, k_begin + s * BK, k_end);
      cp_async_commit();
    }
    for (int kt = 0; kt < k_tiles; ++kt) {
      cp_async_wait<STAGES - 2>();
      __syncthreads();  // stage kt has landed for every thread; stage kt-1 is no longer being read
      const int next = kt + STAGES - 1;
      if (next < k_tiles)
        load_stage(stage_a(next % STAGES), stage_b(next % STAGES), p, a_rows, b_cols, A, B, k_begin + next * BK,
                   k_end);
      cp_async_commit();
      engine.template mma_stage<TileA::kLd, TileB::kLd>(stage_a(kt % STAGES), stage_b(kt % STAGES));
    }
    cp_async_wait<0>();
    __syncthreads();
  }
};

}  // namespace pointwise::cuda
