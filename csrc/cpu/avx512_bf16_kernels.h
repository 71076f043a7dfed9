// The AVX512-BF16 kernel set (cpu/kernels.h) for bfloat16: operands packed as bfloat16 in pairs of
// depth steps, multiplied by vdpbf16ps (16 lanes of two products each, accumulated in float), the
// AVX-512 set's epilogue with vcvtneps2bf16's stores. Every other type runs the AVX-512 set. Built like the AVX2 set.
//
// vdpbf16ps rounds like two FMAs in a row (a product of two bfloat16 values is exact in float),
// the odd step of a pair first, and treats subnormal inputs and results as zero.
#pragma once

#include <c10/util/BFloat16.h>

#include <cstdint>

#include "cpu/avx512_kernels.h"

#ifdef POINTWISE_CPU_X86
namespace pointwise::cpu {

template <class Tile>
POINTWISE_TARGET_AVX512_BF16 void micro_kernel_avx512_bf16(int64_t depth, const c10::BFloat16* a, int64_t a_line_stride, int64_t a_depth_stride,
                              const c10::BFloat16* b, int64_t b_depth_stride, const float* partial, float* c,
                              int64_t c_row_stride, const TileFinish<float>* finish);

template <class Tile>
POINTWISE_TARGET_AVX512_BF16 void store_contiguous_avx512_bf16(const float* tile, const int64_t* rows, int64_t col0,
                                                              const float* bias, bool bias_on_rows,
                                                              const c10::BFloat16* residual, Activation activation,
                                                              c10::BFloat16* dst);

template <class TILE, int64_t DEPTH>
struct Avx512Bf16Kernels {
  using Acc = float;
  using Packed = c10::BFloat16;
  static constexpr int kDepthGroup = 2;
  using Tile = TILE;
  using Blocking = cpu::Blocking<float, Tile, DEPTH, 24, 8>;
  static constexpr MicroKernel<c10::BFloat16, float> micro_kernel = micro_kernel_avx512_bf16<Tile>;
  static constexpr InPlaceFinisher<float> finish_in_place = finish_in_place_avx512<Tile>;
  template <typename Out>
  static constexpr ContiguousStore<float, Out> store_contiguous = store_contiguous_avx512_bf16<Tile>;
};

// 8 x 32 and 16 x 16: 16 accumulators, which vdpbf16ps's latency needs (6 x 32, with 12, ran at 90%
// of the CPU's peak, 8 x 32 at all of it, a little above brgemm: bench/microkernels.py).
using Avx512Bf16Tile = RegisterTile<8, 32>;
using Avx512Bf16NarrowTile = RegisterTile<16, 16>;

// 256 depth steps of 2-byte values keep a B panel of 32 lines at 16 KiB of L1.
template <>
struct KernelSet<Isa::kAvx512Bf16, c10::BFloat16> : Avx512Bf16Kernels<Avx512Bf16Tile, 256> {
  using OtherWidth = Avx512Bf16Kernels<Avx512Bf16NarrowTile, 512>;
};

}  // namespace pointwise::cpu
#endif
