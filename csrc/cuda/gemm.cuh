// The tiled channel GEMM behind every CUDA op of the package (see gemm_problem.h for the problem).
//
// One block computes a BM x BN tile of C for one group (and one split-K chunk):
//   1. a STAGES-deep cp.async pipeline stages BM x BK tiles of A and BK x BN tiles of B in shared
//      memory, each kept in the orientation it has in global memory (16-byte vectors along the
//      contiguous dimension where the host allowed it, gathered element by element otherwise);
//   2. a math engine consumes the stages: tensor cores through mma.sync (bf16 / fp16 m16n8k16,
//      TF32 m16n8k8) or exact FFMA/DFMA (SIMT), accumulating in fp32 (fp64 for double);
//   3. the accumulators go through shared memory so that the epilogue (bias, residual,
//      activation, cast) reads and writes 16-byte vectors along the output's contiguous dimension,
//      whichever layout that is.
#pragma once

#include <cstdint>
#include <type_traits>

#include "cuda/gemm_problem.h"
#include "cuda/hardware.cuh"

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

// The tile shapes of TileShape (gemm_problem.h); ops_cuda.cpp picks one per problem.
using LargeTile = TileConfig<128, 128, 32, 2, 4, 3>;   // big GEMMs
using NarrowMTile = TileConfig<32, 128, 32, 1, 4, 4>;  // few output channels (e.g. 512 -> 10)
using MediumTile = TileConfig<64, 64, 32, 2, 2, 4>;    // mid-size GEMMs that would leave SMs idle with 128x128
using NarrowNTile = TileConfig<128, 32, 32, 4, 1, 4>;  // few pixels (7x7 maps, 1x1 squeeze-excite)
using DoubleTile = TileConfig<32, 32, 16, 1, 2, 2>;    // float64, for checking: small and within any smem limit

template <typename T> struct AccumulatorOf { using type = float; };
template <> struct AccumulatorOf<double> { using type = double; };

template <typename T> __device__ __forceinline__ float to_float(T v) { return static_cast<float>(v); }
template <> __device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T, typename A> __device__ __forceinline__ T from_acc(A v) { return static_cast<T>(v); }
template <> __device__ __forceinline__ __half from_acc(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_acc(float v) { return __float2bfloat16_rn(v); }

template <typename A> __device__ __forceinline__ A to_acc(float v) { return v; }
template <typename A, typename T> __device__ __forceinline__ A load_acc(const T& v) {
  if constexpr (std::is_same_v<A, double>) return static_cast<double>(v);
  else return to_float(v);
}

// The activation is a template argument: a runtime switch inside the epilogue's unrolled loops put
// every activation's code (exp, erf) at every element, and the kernels' code outgrew the
// instruction caches.
template <int ACTIVATION, typename A> __device__ __forceinline__ A activate(A z) {
  if constexpr (ACTIVATION == 1) return z > A(0) ? z : A(0);                            // relu
  else if constexpr (ACTIVATION == 2) return z < A(0) ? A(0) : (z > A(6) ? A(6) : z);  // relu6
  else if constexpr (ACTIVATION == 3) return z / (A(1) + exp(-z));                       // silu
  else if constexpr (ACTIVATION == 4) return A(0.5) * z * (A(1) + erf(z * A(0.70710678118654752440)));  // gelu (erf)
  else return z;
}

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
    const int64_t f = fixed[K_INNER ? o : i];
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
            if (at >= 0) value[j] = gmem[at];
          }
        }
#pragma unroll
        for (int j = 0; j < kBatch; ++j) {
          const int e = threadIdx.x + (first + j) * THREADS;
          if (first + j < kPerThread && (kElems % THREADS == 0 || e < kElems))
            smem[(e / INNER) * LD + e % INNER] = value[j];
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
      for (int i = 0; i < TM; ++i) a[i] = A_K ? As[(ty + i * TY) * LDA + k] : As[k * LDA + ty + i * TY];
#pragma unroll
      for (int j = 0; j < TN; ++j) b[j] = B_K ? Bs[(tx + j * TX) * LDB + k] : Bs[k * LDB + tx + j * TX];
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
      for (int j = 0; j < TN; ++j) Cs[(ty + i * TY) * ld_m + (tx + j * TX) * ld_n] = acc[i][j];
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
    return A_K ? As[m * LDA + k] : As[k * LDA + m];
  }
  template <int LDB>
  __device__ __forceinline__ static T b_at(const T* Bs, int k, int n) {
    return B_K ? Bs[n * LDB + k] : Bs[k * LDB + n];
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
        Cs[m * ld_m + n * ld_n] = acc[i][j][0];
        Cs[m * ld_m + (n + 1) * ld_n] = acc[i][j][1];
        Cs[(m + 8) * ld_m + n * ld_n] = acc[i][j][2];
        Cs[(m + 8) * ld_m + (n + 1) * ld_n] = acc[i][j][3];
      }
  }
};

template <typename T, class Cfg, bool A_K, bool B_K>
struct Engine<Math::kTf32, T, Cfg, A_K, B_K> : MmaEngine<Math::kTf32, T, Cfg, A_K, B_K> {};
template <typename T, class Cfg, bool A_K, bool B_K>
struct Engine<Math::kMma16, T, Cfg, A_K, B_K> : MmaEngine<Math::kMma16, T, Cfg, A_K, B_K> {};

// ---- the kernel --------------------------------------------------------------------------------

template <Math MATH, typename T, typename OutT, class Cfg, bool A_K, bool B_K, Reduction R>
struct GemmKernel {
  using Eng = Engine<MATH, T, Cfg, A_K, B_K>;
  using Acc = typename Eng::Acc;
  static constexpr int BM = Cfg::BM, BN = Cfg::BN, BK = Cfg::BK, STAGES = Cfg::STAGES;
  // A stage: (m, k) stored [m][k] when k is contiguous, else [k][m]; B: (k, n) stored [n][k] or [k][n].
  using TileA = SmemTile<T, A_K ? BM : BK, A_K ? BK : BM, A_K ? Eng::kPadK : Eng::kPadMN>;
  using TileB = SmemTile<T, B_K ? BN : BK, B_K ? BK : BN, B_K ? Eng::kPadK : Eng::kPadMN>;
  // The C tile is stored with the output's contiguous dimension contiguous ([n][m] for NHWC
  // outputs, [m][n] for NCHW), so the epilogue reads whole 16-byte vectors of it.
  static constexpr int kPadC = 16 / int(sizeof(Acc));
  static constexpr size_t kStageBytes = (TileA::kElems + TileB::kElems) * sizeof(T);
  static constexpr size_t kEpilogueBytes =
      sizeof(Acc) * (BM * (BN + kPadC) > BN * (BM + kPadC) ? BM * (BN + kPadC) : BN * (BM + kPadC));
  // Split GEMMs write partial sums without bias, residual or activation (the host passes none; the
  // kernel that adds the splits up applies them). Where the partials' type differs from T (16-bit
  // inputs) that code is left out of the kernel altogether.
  static constexpr bool kFused = std::is_same_v<OutT, T>;

  // Offsets of the block's fixed coordinates, computed once per block so that neither the K loop
  // nor the epilogue divides: A's rows and C's rows (m), B's columns and C's columns (n); -1 past
  // the end of the GEMM or at a pixel in the padding. They open the block's shared memory; the
  // pipeline's stages follow, and the C tile reuses the stages once the K loop is done.
  struct Offsets {
    int64_t a_m[BM], c_m[BM], b_n[BN], c_n[BN];
  };
  static constexpr size_t kOffsetsBytes = (sizeof(Offsets) + 15) / 16 * 16;

  // Shared memory for a GEMM whose blocks run at most k_tiles stages of K: a block never touches
  // more than that many stages, so a short reduction (K <= 64 in most memory-bound layers) asks
  // for less and more blocks fit on an SM.
  __host__ __device__ static constexpr size_t smem_bytes(int k_tiles) {
    const size_t stages = size_t(k_tiles < 1 ? 1 : (k_tiles < STAGES ? k_tiles : STAGES)) * kStageBytes;
    return kOffsetsBytes + (stages > kEpilogueBytes ? stages : kEpilogueBytes);
  }
  static constexpr size_t kSmemBytes = smem_bytes(STAGES);

  __device__ static void compute_offsets(Offsets& off, const GemmProblem& p, int32_t m0, int32_t n0) {
    for (int i = threadIdx.x; i < BM; i += Cfg::kThreads) {
      const bool inside = m0 + i < p.m;
      off.a_m[i] = inside ? p.a.rows.offset(m0 + i) : -1;
      off.c_m[i] = inside ? p.c.rows.offset(m0 + i) : -1;
    }
    for (int i = threadIdx.x; i < BN; i += Cfg::kThreads) {
      const bool inside = n0 + i < p.n;
      off.b_n[i] = inside ? p.b.cols.offset(n0 + i) : -1;
      off.c_n[i] = inside ? p.c.cols.offset(n0 + i) : -1;
    }
  }

  __device__ static void load_stage(T* As, T* Bs, const GemmProblem& p, const Offsets& off, const T* A, const T* B,
                                    int32_t k0, int32_t k_end) {
    load_tile<T, TileA::kOuter, TileA::kInner, TileA::kLd, Cfg::kThreads, A_K, R>(As, A, off.a_m, p.a.cols, k0, k_end,
                                                                               p.a);
    load_tile<T, TileB::kOuter, TileB::kInner, TileB::kLd, Cfg::kThreads, B_K, R>(Bs, B, off.b_n, p.b.rows, k0, k_end,
                                                                               p.b);
  }

  static constexpr int log2_exact(int x) { return x <= 1 ? 0 : 1 + log2_exact(x / 2); }

  // Bias, residual, activation, cast and store of the C tile, along the output's contiguous
  // dimension: one 16-byte vector a thread where C allows (vectorized), else one element a thread,
  // consecutive threads on consecutive elements so that a warp's stores and residual loads cover
  // neighbouring addresses (a vector's elements a thread would spread them V elements apart).
  template <int ACTIVATION>
  __device__ static void epilogue(const GemmProblem& p, const Acc* Cs, const Offsets& off, int32_t m0, int32_t group,
                                  int32_t split) {
    constexpr int V = 16 / int(sizeof(OutT));
    OutT* C = static_cast<OutT*>(const_cast<void*>(p.c.data)) + group * p.c.group_stride + split * p.c_split_stride;
    const T* bias = kFused && p.bias ? static_cast<const T*>(p.bias) + int64_t(group) * p.m + m0 : nullptr;
    const T* residual = kFused && p.residual ? static_cast<const T*>(p.residual) + group * p.c.group_stride : nullptr;
    const bool m_fast = p.c_m_contiguous;
    const int fast_len = m_fast ? BM : BN;
    const int fast_shift = m_fast ? log2_exact(BM) : log2_exact(BN);
    const int ld = fast_len + kPadC;  // Cs[slow * ld + fast]
    if (p.c.vectorized) {  // each vector is wholly inside or outside, and unmapped (host-checked)
      for (int v = threadIdx.x; v < BM * BN / V; v += Cfg::kThreads) {
        const int slow = (v * V) >> fast_shift, fast = (v * V) & (fast_len - 1);
        const int m = m_fast ? fast : slow, n = m_fast ? slow : fast;
        const int64_t row = off.c_m[m], col = off.c_n[n];
        if (row < 0 || col < 0) continue;
        const int64_t offset = row + col;
        alignas(16) OutT out[V];
        alignas(16) T res[V];
        alignas(16) Acc acc[V];
        if (residual) *reinterpret_cast<uint4*>(res) = *reinterpret_cast<const uint4*>(residual + offset);
#pragma unroll
        for (int e = 0; e < V; e += 16 / int(sizeof(Acc)))
          *reinterpret_cast<uint4*>(acc + e) = *reinterpret_cast<const uint4*>(Cs + slow * ld + fast + e);
#pragma unroll
        for (int e = 0; e < V; ++e) {
          Acc z = acc[e];
          if (bias) z += load_acc<Acc>(bias[m + (m_fast ? e : 0)]);
          if (residual) z += load_acc<Acc>(res[e]);
          out[e] = from_acc<OutT>(activate<ACTIVATION>(z));
        }
        *reinterpret_cast<uint4*>(C + offset) = *reinterpret_cast<const uint4*>(out);
      }
    } else {
      for (int i = threadIdx.x; i < BM * BN; i += Cfg::kThreads) {
        const int slow = i >> fast_shift, fast = i & (fast_len - 1);
        const int m = m_fast ? fast : slow, n = m_fast ? slow : fast;
        const int64_t row = off.c_m[m], col = off.c_n[n];
        if (row < 0 || col < 0) continue;  // past the end, or a pixel in the padding
        const int64_t offset = row + col;
        Acc z = Cs[slow * ld + fast];
        if (bias) z += load_acc<Acc>(bias[m]);
        if (residual) z += load_acc<Acc>(residual[offset]);
        C[offset] = from_acc<OutT>(activate<ACTIVATION>(z));
      }
    }
  }

  __device__ static void run(const GemmProblem& p) {
    extern __shared__ __align__(16) unsigned char smem_raw[];
    Offsets& off = *reinterpret_cast<Offsets*>(smem_raw);
    T* smem = reinterpret_cast<T*>(smem_raw + kOffsetsBytes);
    // Output tiles along x, n's fastest, so that the blocks running together share A's rows; y (at
    // most 65535) would cap m at 65535 tiles.
    const int32_t n_tiles = static_cast<int32_t>((int64_t(p.n) + BN - 1) / BN);
    const int32_t n0 = int32_t(blockIdx.x % n_tiles) * BN, m0 = int32_t(blockIdx.x / n_tiles) * BM;
    const int32_t group = blockIdx.z % p.groups, split = blockIdx.z / p.groups;
    const int32_t k_begin = split * p.k_per_split;
    const int32_t k_end = static_cast<int32_t>(min(int64_t(p.k), int64_t(k_begin) + p.k_per_split));
    const T* A = static_cast<const T*>(p.a.data) + group * p.a.group_stride;
    const T* B = static_cast<const T*>(p.b.data) + group * p.b.group_stride;
    auto stage_a = [&](int s) { return smem + s * (TileA::kElems + TileB::kElems); };
    auto stage_b = [&](int s) { return stage_a(s) + TileA::kElems; };

    compute_offsets(off, p, m0, n0);
    __syncthreads();
    Eng engine;
    engine.init();
    const int k_tiles = (k_end - k_begin + BK - 1) / BK;
#pragma unroll 1
    for (int s = 0; s < STAGES - 1; ++s) {
      if (s < k_tiles) load_stage(stage_a(s), stage_b(s), p, off, A, B, k_begin + s * BK, k_end);
      cp_async_commit();
    }
    for (int kt = 0; kt < k_tiles; ++kt) {
      cp_async_wait<STAGES - 2>();
      __syncthreads();  // stage kt has landed for every thread; stage kt-1 is no longer being read
      const int next = kt + STAGES - 1;
      if (next < k_tiles)
        load_stage(stage_a(next % STAGES), stage_b(next % STAGES), p, off, A, B, k_begin + next * BK, k_end);
      cp_async_commit();
      engine.template mma_stage<TileA::kLd, TileB::kLd>(stage_a(kt % STAGES), stage_b(kt % STAGES));
    }
    cp_async_wait<0>();
    __syncthreads();  // the pipeline's shared memory becomes the C tile
    Acc* Cs = reinterpret_cast<Acc*>(smem_raw + kOffsetsBytes);
    if (p.c_m_contiguous) engine.store(Cs, 1, BM + kPadC);
    else engine.store(Cs, BN + kPadC, 1);
    __syncthreads();
    switch (kFused ? p.activation : 0) {
      case 1: epilogue<1>(p, Cs, off, m0, group, split); break;
      case 2: epilogue<2>(p, Cs, off, m0, group, split); break;
      case 3: epilogue<3>(p, Cs, off, m0, group, split); break;
      case 4: epilogue<4>(p, Cs, off, m0, group, split); break;
      default: epilogue<0>(p, Cs, off, m0, group, split); break;
    }
  }
};

template <Math MATH, typename T, typename OutT, class Cfg, bool A_K, bool B_K, Reduction R>
__global__ void __launch_bounds__(Cfg::kThreads, Cfg::kMinBlocks) pointwise_gemm_kernel(const GemmProblem p) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  GemmKernel<MATH, T, OutT, Cfg, A_K, B_K, R>::run(p);
#endif
}

}  // namespace pointwise::cuda
