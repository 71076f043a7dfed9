// The AVX-512 kernel set (cpu/kernels.h) for float, and so for float16 and bfloat16 converted to
// float while packed: 512-bit vectors of vec.h's micro-kernel and tile_epilogue.h's epilogue. Built
// like the AVX2 set (per-function target attributes, chosen at run time by cpu/isa.cpp).
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

#include "cpu/kernel_set.h"

#ifdef POINTWISE_CPU_X86
namespace pointwise::cpu {

// 6 x 32 floats: 12 zmm accumulators, enough to hide the FMA latency of two pipes (as fast as 14 x 32
// and 6 x 64 in a single-core measurement, bench/microkernels.py), with the AVX2 set's 6 rows.
using Avx512Tile = RegisterTile<6, 32>;
// 12 x 16, for GEMMs whose columns it pads less than a 32-column tile (kernel_set.h's
// dispatch_width): 16 or fewer (NHWC layers with 16 or fewer output channels, or per group; NCHW
// maps of 16 or fewer pixels), where a 32-column tile would be half padding, or 48, 80, ...
using Avx512NarrowTile = RegisterTile<12, 16>;

template <class Tile>
POINTWISE_TARGET_AVX512 void micro_kernel_avx512(int64_t depth, const float* a, int64_t a_line_stride, int64_t a_depth_stride,
                         const float* b, int64_t b_depth_stride, const float* partial, float* c,
                         int64_t c_row_stride, const TileFinish<float>* finish);
template <class Tile>
POINTWISE_TARGET_AVX512 void finish_in_place_avx512(float* tile, int64_t row_stride, const float* bias, bool bias_on_rows,
                            const float* residual, Activation activation);

template <class Tile, typename Out>
POINTWISE_TARGET_AVX512 void store_contiguous_avx512(const float* tile, const int64_t* rows, int64_t col0,
                                                    const float* bias, bool bias_on_rows, const Out* residual,
                                                    Activation activation, Out* dst);

template <class TILE, int64_t DEPTH>
struct Avx512FloatKernels {
  using Acc = float;
  using Packed = float;
  static constexpr int kDepthGroup = 1;
  using Tile = TILE;
  using Blocking = cpu::Blocking<float, Tile, DEPTH, 24, 8>;
  static constexpr MicroKernel<float> micro_kernel = micro_kernel_avx512<Tile>;
  static constexpr InPlaceFinisher<float> finish_in_place = finish_in_place_avx512<Tile>;
  template <typename Out>
  static constexpr ContiguousStore<float, Out> store_contiguous = store_contiguous_avx512<Tile, Out>;
};

// 128 depth steps keep a B panel of 32 lines at 16 KiB of L1, as the AVX2 set's 256 of 16 lines.
template <>
struct KernelSet<Isa::kAvx512, float> : Avx512FloatKernels<Avx512Tile, 128> {
  using OtherWidth = Avx512FloatKernels<Avx512NarrowTile, 256>;
};

}  // namespace pointwise::cpu
#endif
