// The epilogue of the CUDA GEMMs: bias, residual and activation (the element-wise epilogue of
// epilogue.h, shared with the CPU kernels), the cast and the store into C. Two users, one formula:
//   - CTileEpilogue, for the block tile a mainloop (gemm_mainloop.cuh) leaves in shared memory;
//   - the kernel that finishes a split GEMM, adding its partial sums in split order first.
#pragma once

#include <cstdint>
#include <type_traits>

#include "cuda/gemm_problem.h"
#include "cuda/hardware.cuh"
#include "cuda/numeric.cuh"

namespace pointwise::cuda {

// The value stored for accumulator z: act(z + bias + residual), each term there where add_* says,
// cast to OutT.
template <Activation ACT, typename OutT, typename Acc>
__device__ __forceinline__ OutT epilogue_element(Acc z, bool add_bias, Acc bias, bool add_residual, Acc residual) {
  return from_acc<OutT>(epilogue_value<ACT, ScalarMath<Acc>>(z, add_bias, bias, add_residual, residual));
}

// p[i] as an accumulator, or zero where p is null.
template <typename Acc, typename T>
__device__ __forceinline__ Acc value_or_zero(const T* p, int64_t i) {
  return p ? load_acc<Acc>(load_global(p + i)) : Acc(0);
}

// The store of a BM x BN tile of accumulators staged in shared memory with C's contiguous dimension
// fastest (Cs[slow * (fast extent + padding) + fast]): a BN x BM tile [n][m] for NHWC outputs, BM x BN
// [m][n] for NCHW. PARTIALS: the GEMM writes split-K partial sums in Acc, without bias, residual or
// activation (the finishing kernel applies them), so that code is left out.
template <typename T, typename Acc, int BM, int BN, int THREADS, bool PARTIALS>
struct CTileEpilogue {
  using OutT = std::conditional_t<PARTIALS, Acc, T>;
  // Row padding of the staged tile, in elements: keeps 16-byte vector reads aligned and spreads the
  // rows over the banks for the engines' writes. An mma engine's lanes (g, t) write (m0 + g, n0 + 2t)
  // and its neighbour: into an [n][m] tile one 4-byte store each, rows 16 bytes apart mod 128 put
  // the 32 lanes on 32 banks; into an [m][n] tile a pair (8 bytes, one phase a half-warp), rows 32
  // bytes apart mod 128 put each half-warp on 32 banks (emulator counters: with 16 bytes there, every
  // phase took two wavefronts).
  static constexpr int kPadMFast = 16 / int(sizeof(Acc)), kPadNFast = 32 / int(sizeof(Acc));
  static constexpr size_t kSmemBytes = sizeof(Acc) * (BM * (BN + kPadNFast) > BN * (BM + kPadMFast)
                                                          ? BM * (BN + kPadNFast)
                                                          : BN * (BM + kPadMFast));
  static_assert((BM & (BM - 1)) == 0 && (BN & (BN - 1)) == 0, "tile indices are split with shifts");

  // Where an engine writes accumulator (m, n): Cs[m * ld_m + n * ld_n].
  __device__ static int ld_m(const GemmProblem& p) { return p.c_m_contiguous ? 1 : BN + kPadNFast; }
  __device__ static int ld_n(const GemmProblem& p) { return p.c_m_contiguous ? BM + kPadMFast : 1; }

  static constexpr int log2_exact(int x) { return x <= 1 ? 0 : 1 + log2_exact(x / 2); }

  // Stores the tile at rows m0.. of group `group` (split `split` of the partials). c_rows / c_cols:
  // the offsets in C of the tile's rows and columns, -1 past the end of the GEMM or at a pixel in the
  // padding. One 16-byte vector a thread along C's contiguous dimension where C allows (vectorized),
  // else one element a thread, consecutive threads on consecutive elements so that a warp's stores
  // and residual loads cover neighbouring addresses (a vector's elements a thread would spread them
  // V elements apart).
  template <Activation ACT>
  __device__ static void store(const GemmProblem& p, const Acc* Cs, const int64_t* c_rows, const int64_t* c_cols,
                               int32_t m0, int32_t group, int32_t split) {
    constexpr int V = 16 / int(sizeof(OutT));
    OutT* C = static_cast<OutT*>(const_cast<void*>(p.c.data)) + group * p.c.group_stride + split * p.c_split_stride;
    const T* bias = !PARTIALS && p.bias ? static_cast<const T*>(p.bias) + int64_t(group) * p.m + m0 : nullptr;
    const T* residual = !PARTIALS && p.residual ? static_cast<const T*>(p.residual) + group * p.c.group_stride : nullptr;
    const bool m_fast = p.c_m_contiguous;
    const int fast_len = m_fast ? BM : BN;
    const int fast_shift = m_fast ? log2_exact(BM) : log2_exact(BN);
    const int ld = m_fast ? ld_n(p) : ld_m(p);  // Cs[slow * ld + fast]
    if (p.c.vectorized) {  // each vector is wholly inside or outside, and unmapped (host-checked)
      for (int v = threadIdx.x; v < BM * BN / V; v += THREADS) {
        const int slow = (v * V) >> fast_shift, fast = (v * V) & (fast_len - 1);
        const int m = m_fast ? fast : slow, n = m_fast ? slow : fast;
        const int64_t row = load_shared(c_rows + m), col = load_shared(c_cols + n);
        if (row < 0 || col < 0) continue;
        const int64_t offset = row + col;
        alignas(16) OutT out[V];
        alignas(16) T res[V];
        alignas(16) T bias_v[V];
        alignas(16) Acc acc[V];
        if (residual) *reinterpret_cast<uint4*>(res) = load_global(reinterpret_cast<const uint4*>(residual + offset));
        // The accumulators in 16-byte pieces. With two pieces a vector, a phase's eight lanes read
        // 32 bytes apart, and taking the pieces in order would put them on half the banks where the
        // phase lies in one row. So each lane starts with the piece on the parity of 16-byte bank
        // group that its place in the phase (lanes 0-3: even, 4-7: odd) asks for: every phase then
        // covers all 32 banks, in one row or two (emulator counters).
        const Acc* at = Cs + slow * ld + fast;
        if constexpr (V * sizeof(Acc) == 32) {
          const int first = int((reinterpret_cast<uintptr_t>(at) >> 4 ^ threadIdx.x >> 2) & 1) * (V / 2);
          const uint4 a = load_shared(reinterpret_cast<const uint4*>(at + first));
          const uint4 b = load_shared(reinterpret_cast<const uint4*>(at + (V / 2 - first)));
          *reinterpret_cast<uint4*>(acc) = first ? b : a;
          *reinterpret_cast<uint4*>(acc + V / 2) = first ? a : b;
        } else {
#pragma unroll
          for (int e = 0; e < V; e += 16 / int(sizeof(Acc)))
            *reinterpret_cast<uint4*>(acc + e) = load_shared(reinterpret_cast<const uint4*>(at + e));
        }
        // The vector's bias: V channels along m (one 16-byte load where the bias is aligned to it),
        // or the one channel of a vector along n, loaded once.
        if constexpr (!PARTIALS) {
          if (bias && !m_fast) {
            const T b = load_global(bias + m);
#pragma unroll
            for (int e = 0; e < V; ++e) bias_v[e] = b;
          } else if (bias && reinterpret_cast<uintptr_t>(bias + m) % 16 == 0) {
            *reinterpret_cast<uint4*>(bias_v) = load_global(reinterpret_cast<const uint4*>(bias + m));
          } else if (bias) {
#pragma unroll
            for (int e = 0; e < V; ++e) bias_v[e] = load_global(bias + m + e);
          }
        }
#pragma unroll
        for (int e = 0; e < V; ++e)  // res[e], not a pointer into it: the vectors stay in registers
          out[e] = epilogue_element<ACT, OutT>(acc[e], bias != nullptr, bias ? load_acc<Acc>(bias_v[e]) : Acc(0),
                                               residual != nullptr, residual ? load_acc<Acc>(res[e]) : Acc(0));
        store_global(reinterpret_cast<uint4*>(C + offset), *reinterpret_cast<const uint4*>(out));
      }
    } else {
      for (int i = threadIdx.x; i < BM * BN; i += THREADS) {
        const int slow = i >> fast_shift, fast = i & (fast_len - 1);
        const int m = m_fast ? fast : slow, n = m_fast ? slow : fast;
        const int64_t row = load_shared(c_rows + m), col = load_shared(c_cols + n);
        if (row < 0 || col < 0) continue;  // past the end, or a pixel in the padding
        const int64_t offset = row + col;
        store_global(C + offset,
                     epilogue_element<ACT, OutT>(load_shared(Cs + slow * ld + fast), bias != nullptr,
                                                 value_or_zero<Acc>(bias, m), residual != nullptr,
                                                 value_or_zero<Acc>(residual, offset)));
      }
    }
  }
};

// The end of a split GEMM: for every (group, m, n), C = act(sum over the splits, in split order, of
// the partials + bias + residual), cast to T and stored through C's dimension maps (`p` describes
// the real C). The partials of one split are groups x m x n accumulators laid out with C's
// contiguous dimension fastest.
template <typename T, typename Acc, Activation ACT>
__global__ void pointwise_finish_splits_kernel(const GemmProblem p, const Acc* __restrict__ partials) {
  const int64_t per_group = int64_t(p.m) * p.n, count = per_group * p.groups;
  const int32_t fast_len = p.c_m_contiguous ? p.m : p.n;
  T* C = static_cast<T*>(const_cast<void*>(p.c.data));
  const T* bias = static_cast<const T*>(p.bias);
  const T* residual = static_cast<const T*>(p.residual);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < count; i += int64_t(gridDim.x) * blockDim.x) {
    Acc z = load_global(partials + i);
    for (int32_t s = 1; s < p.splits; ++s) z += load_global(partials + s * count + i);
    const int32_t group = static_cast<int32_t>(i / per_group);
    const int64_t within = i - group * per_group;
    const int32_t slow = static_cast<int32_t>(within / fast_len);
    const int32_t fast = static_cast<int32_t>(within - int64_t(slow) * fast_len);
    const int32_t m = p.c_m_contiguous ? fast : slow, n = p.c_m_contiguous ? slow : fast;
    const int64_t row = p.c.rows.offset(m), col = p.c.cols.offset(n);
    if (row < 0 || col < 0) continue;  // a pixel in the padding: no such output
    const int64_t offset = group * p.c.group_stride + row + col;
    store_global(C + offset, epilogue_element<ACT, T>(z, bias != nullptr, value_or_zero<Acc>(bias, int64_t(group) * p.m + m),
                                                      residual != nullptr, value_or_zero<Acc>(residual, offset)));
  }
}

}  // namespace pointwise::cuda
