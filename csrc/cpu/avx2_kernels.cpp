// The AVX2/FMA kernel set: the micro-kernel, and the epilogue of tile_epilogue.h in 8-float
// vectors. Every function here carries the avx2,fma target attribute; nothing else in the library
// is built for AVX2.
#include "cpu/avx2_kernels.h"

#ifdef POINTWISE_CPU_AVX2

#include <immintrin.h>

#include "cpu/vec.h"

#define POINTWISE_AVX2 __attribute__((target("avx2,fma")))
#define POINTWISE_AVX2_INLINE __attribute__((target("avx2,fma"), always_inline)) inline

namespace pointwise::cpu {
namespace {

// One AVX2 register of Acc and the few operations the micro-kernel needs, so that one template
// serves float and double.
template <typename Acc>
struct Vec;

template <>
struct Vec<float> {
  using Reg = __m256;
  static constexpr int kLanes = 8;
  POINTWISE_AVX2_INLINE static Reg zero() { return _mm256_setzero_ps(); }
  POINTWISE_AVX2_INLINE static Reg load(const float* p) { return _mm256_loadu_ps(p); }
  POINTWISE_AVX2_INLINE static void store(float* p, Reg v) { _mm256_storeu_ps(p, v); }
  POINTWISE_AVX2_INLINE static Reg broadcast(const float* p) { return _mm256_broadcast_ss(p); }
  POINTWISE_AVX2_INLINE static Reg fma(Reg a, Reg b, Reg c) { return _mm256_fmadd_ps(a, b, c); }
};

template <>
struct Vec<double> {
  using Reg = __m256d;
  static constexpr int kLanes = 4;
  POINTWISE_AVX2_INLINE static Reg zero() { return _mm256_setzero_pd(); }
  POINTWISE_AVX2_INLINE static Reg load(const double* p) { return _mm256_loadu_pd(p); }
  POINTWISE_AVX2_INLINE static void store(double* p, Reg v) { _mm256_storeu_pd(p, v); }
  POINTWISE_AVX2_INLINE static Reg broadcast(const double* p) { return _mm256_broadcast_sd(p); }
  POINTWISE_AVX2_INLINE static Reg fma(Reg a, Reg b, Reg c) { return _mm256_fmadd_pd(a, b, c); }
};

template <typename Acc, class Tile>
POINTWISE_AVX2_INLINE void micro_kernel(int64_t depth, const Acc* a, int64_t a_line_stride,
                                        int64_t a_depth_stride, const Acc* b,
                                        int64_t b_depth_stride, const Acc* partial, Acc* c,
                                        int64_t c_row_stride) {
  using V = Vec<Acc>;
  constexpr int kRows = Tile::kRows, kCols = Tile::kCols, kLanes = V::kLanes;
  static_assert(kCols == 2 * kLanes, "a tile row is two AVX2 registers");
  // The row loops must be unrolled before GCC's scalar replacement, or it keeps the accumulators
  // in memory and stores them to the stack on every depth step.
  typename V::Reg acc[kRows][2];
#pragma GCC unroll 8
  for (int i = 0; i < kRows; ++i) {
    acc[i][0] = partial != nullptr ? V::load(partial + i * kCols) : V::zero();
    acc[i][1] = partial != nullptr ? V::load(partial + i * kCols + kLanes) : V::zero();
  }
  for (int64_t k = 0; k < depth; ++k) {
    const typename V::Reg b0 = V::load(b), b1 = V::load(b + kLanes);
#pragma GCC unroll 8
    for (int i = 0; i < kRows; ++i) {
      const typename V::Reg a_i = V::broadcast(a + i * a_line_stride);
      acc[i][0] = V::fma(a_i, b0, acc[i][0]);
      acc[i][1] = V::fma(a_i, b1, acc[i][1]);
    }
    a += a_depth_stride;
    b += b_depth_stride;
  }
#pragma GCC unroll 8
  for (int i = 0; i < kRows; ++i) {
    V::store(c + i * c_row_stride, acc[i][0]);
    V::store(c + i * c_row_stride + kLanes, acc[i][1]);
  }
}

}  // namespace

POINTWISE_AVX2 void micro_kernel_avx2(int64_t depth, const float* a, int64_t a_line_stride,
                                      int64_t a_depth_stride, const float* b,
                                      int64_t b_depth_stride, const float* partial, float* c,
                                      int64_t c_row_stride) {
  micro_kernel<float, Avx2Tile>(depth, a, a_line_stride, a_depth_stride, b, b_depth_stride, partial, c,
                                c_row_stride);
}

POINTWISE_AVX2 void micro_kernel_avx2(int64_t depth, const double* a, int64_t a_line_stride,
                                      int64_t a_depth_stride, const double* b,
                                      int64_t b_depth_stride, const double* partial, double* c,
                                      int64_t c_row_stride) {
  micro_kernel<double, Avx2DoubleTile>(depth, a, a_line_stride, a_depth_stride, b, b_depth_stride, partial, c,
                                       c_row_stride);
}

POINTWISE_AVX2 void finish_in_place_avx2(float* tile, int64_t row_stride, const float* bias, bool bias_on_rows,
                                         const float* residual, Activation activation) {
  finish_in_place<VecMath<8>, Avx2Tile>(tile, row_stride, bias, bias_on_rows, residual, activation);
}

}  // namespace pointwise::cpu

#endif  // POINTWISE_CPU_AVX2
