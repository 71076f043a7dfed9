// The AVX2/FMA kernel set (cpu/kernels.h), compiled only for x86 with GCC or Clang (cpu/isa.h). Its functions are built for the baseline ISA plus a per-function target attribute,
// never -mavx2, so the library still loads on CPUs without AVX2; cpu/isa.cpp picks them at run time.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

#include "cpu/kernel_set.h"

#ifdef POINTWISE_CPU_X86
namespace pointwise::cpu {

// A 6 x 16 float (6 x 8 double) tile: its 12 accumulators, 2 B vectors and 1 broadcast A value fit
// the 16 ymm registers.
using Avx2Tile = RegisterTile<6, 16>;
using Avx2DoubleTile = RegisterTile<6, 8>;

POINTWISE_TARGET_AVX2 void micro_kernel_avx2(int64_t depth, const float* a, int64_t a_line_stride, int64_t a_depth_stride,
                       const float* b, int64_t b_depth_stride, const float* partial, float* c,
                       int64_t c_row_stride, const TileFinish<float>* finish);
POINTWISE_TARGET_AVX2 void micro_kernel_avx2(int64_t depth, const double* a, int64_t a_line_stride,
                       int64_t a_depth_stride, const double* b, int64_t b_depth_stride,
                       const double* partial, double* c, int64_t c_row_stride, const TileFinish<double>* finish);
POINTWISE_TARGET_AVX2 void store_contiguous_avx2(const float* tile, const int64_t* rows, int64_t col0, const float* bias,
                                                bool bias_on_rows, const c10::BFloat16* residual, Activation activation,
                                                c10::BFloat16* dst);
POINTWISE_TARGET_AVX2 void store_contiguous_avx2(const float* tile, const int64_t* rows, int64_t col0, const float* bias,
                                                bool bias_on_rows, const c10::Half* residual, Activation activation,
                                                c10::Half* dst);
POINTWISE_TARGET_AVX2 void finish_in_place_avx2(float* tile, int64_t row_stride, const float* bias, bool bias_on_rows,
                          const float* residual, Activation activation);

template <>
struct KernelSet<Isa::kAvx2, float> {
  using Acc = float;
  using Packed = float;
  static constexpr int kDepthGroup = 1;
  using Tile = Avx2Tile;
  using Blocking = cpu::Blocking<float, Tile>;
  static constexpr MicroKernel<float> micro_kernel = micro_kernel_avx2;
  static constexpr InPlaceFinisher<float> finish_in_place = finish_in_place_avx2;
  template <typename Out>
  static constexpr ContiguousStore<float, Out> store_contiguous = store_contiguous_avx2;
};

template <>
struct KernelSet<Isa::kAvx2, double> : KernelSet<Isa::kPortable, double> {
  static_assert(std::is_same_v<KernelSet<Isa::kPortable, double>::Tile, Avx2DoubleTile>,
                "the portable finisher must have the AVX2 micro-kernel's tile");
  static constexpr MicroKernel<double> micro_kernel = micro_kernel_avx2;
};

}  // namespace pointwise::cpu
#endif
