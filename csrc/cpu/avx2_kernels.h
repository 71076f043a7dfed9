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
// 4 x 24 floats: the same 12 accumulators with 3 B vectors, for GEMMs whose columns it pads less
// (NHWC layers of 24 output channels ran 32 columns of work on the 6 x 16 tile).
using Avx2WideTile = RegisterTile<4, 24>;

template <class Tile>
POINTWISE_TARGET_AVX2 void micro_kernel_avx2(int64_t depth, const float* a, int64_t a_line_stride, int64_t a_depth_stride,
                       const float* b, int64_t b_depth_stride, const float* partial, float* c,
                       int64_t c_row_stride, const TileFinish<float>* finish);
POINTWISE_TARGET_AVX2 void micro_kernel_avx2(int64_t depth, const double* a, int64_t a_line_stride,
                       int64_t a_depth_stride, const double* b, int64_t b_depth_stride,
                       const double* partial, double* c, int64_t c_row_stride, const TileFinish<double>* finish);
template <class Tile, typename Out>
POINTWISE_TARGET_AVX2 void store_contiguous_avx2(const float* tile, const int64_t* rows, int64_t col0, const float* bias,
                                                bool bias_on_rows, const Out* residual, Activation activation,
                                                Out* dst);
template <class Tile>
POINTWISE_TARGET_AVX2 void finish_in_place_avx2(float* tile, int64_t row_stride, const float* bias, bool bias_on_rows,
                          const float* residual, Activation activation);

template <class TILE, int64_t DEPTH, int64_t ROW_PANELS, int64_t COL_PANELS>
struct Avx2FloatKernels {
  using Acc = float;
  using Packed = float;
  static constexpr int kDepthGroup = 1;
  using Tile = TILE;
  using Blocking = cpu::Blocking<float, Tile, DEPTH, ROW_PANELS, COL_PANELS>;
  static constexpr MicroKernel<float> micro_kernel = micro_kernel_avx2<Tile>;
  static constexpr InPlaceFinisher<float> finish_in_place = finish_in_place_avx2<Tile>;
  template <typename Out>
  static constexpr ContiguousStore<float, Out> store_contiguous = store_contiguous_avx2<Tile, Out>;
};

// The wide tile's blocking keeps the 6 x 16 tile's footprints: a B panel of 24 lines over 160 steps
// (15 KiB of L1), and 36 panels of 4 rows for the same 144 rows a task.
template <>
struct KernelSet<Isa::kAvx2, float> : Avx2FloatKernels<Avx2Tile, 256, 24, 16> {
  using OtherWidth = Avx2FloatKernels<Avx2WideTile, 160, 36, 8>;
};

template <>
struct KernelSet<Isa::kAvx2, double> : KernelSet<Isa::kPortable, double> {
  static_assert(std::is_same_v<KernelSet<Isa::kPortable, double>::Tile, Avx2DoubleTile>,
                "the portable finisher must have the AVX2 micro-kernel's tile");
  static constexpr MicroKernel<double> micro_kernel = micro_kernel_avx2;
};

}  // namespace pointwise::cpu
#endif
