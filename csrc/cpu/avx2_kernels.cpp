// AVX2/FMA versions of the micro-kernel and of the activations. Every function here carries the
// avx2,fma target attribute; nothing else in the library is built for AVX2.
#include "cpu/avx2_kernels.h"

#ifdef POINTWISE_CPU_AVX2

#include <immintrin.h>

#include <algorithm>

#include "cpu/gemm.h"

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

// e^x for floats, the Cephes expf scheme: x = n ln2 + r with |r| <= ln2 / 2, e^r from a degree-6
// polynomial (about 1 ulp), 2^n built in the exponent bits. x is clamped so that 2^n stays a
// normal float; the operand order of max/min lets NaN through.
POINTWISE_AVX2_INLINE __m256 exp_avx2(__m256 x) {
  x = _mm256_min_ps(_mm256_set1_ps(88.3f), _mm256_max_ps(_mm256_set1_ps(-87.3f), x));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  // ln 2 in two parts, so that n * ln2_hi is exact.
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  const __m256 e_r =
      _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i two_n =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(e_r, _mm256_castsi256_ps(two_n));
}

// erfc(x) for x >= 0, Abramowitz & Stegun 7.1.26: absolute error below 1.5e-7.
POINTWISE_AVX2_INLINE __m256 erfc_nonnegative_avx2(__m256 x) {
  const __m256 one = _mm256_set1_ps(1.0f);
  const __m256 t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(0.3275911f), x, one));
  __m256 p = _mm256_set1_ps(1.061405429f);
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.453152027f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.421413741f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.284496736f));
  p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.254829592f));
  p = _mm256_mul_ps(p, t);
  return _mm256_mul_ps(p, exp_avx2(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(x, x))));
}

POINTWISE_AVX2_INLINE __m256 activate_vector(__m256 z, Activation activation) {
  const __m256 zero = _mm256_setzero_ps();
  switch (activation) {
    case Activation::kNone:
      return z;
    case Activation::kReLU:
      return _mm256_max_ps(zero, z);
    case Activation::kReLU6:
      return _mm256_min_ps(_mm256_set1_ps(6.0f), _mm256_max_ps(zero, z));
    case Activation::kSiLU:
      return _mm256_div_ps(z,
                           _mm256_add_ps(_mm256_set1_ps(1.0f), exp_avx2(_mm256_sub_ps(zero, z))));
    case Activation::kGELU: {
      // 1 + erf(z / sqrt 2) is erfc(|z| / sqrt 2) below zero and 2 - erfc(...) above: no
      // cancellation for negative z.
      const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
      const __m256 q = erfc_nonnegative_avx2(
          _mm256_mul_ps(_mm256_and_ps(z, abs_mask), _mm256_set1_ps(0.70710678118654752f)));
      const __m256 one_plus_erf = _mm256_blendv_ps(_mm256_sub_ps(_mm256_set1_ps(2.0f), q), q,
                                                   _mm256_cmp_ps(z, zero, _CMP_LT_OQ));
      return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), z), one_plus_erf);
    }
  }
  return z;
}

template <typename Acc>
POINTWISE_AVX2_INLINE void micro_kernel(int64_t depth, const Acc* a, int64_t a_line_stride,
                                        int64_t a_depth_stride, const Acc* b,
                                        int64_t b_depth_stride, const Acc* partial, Acc* c,
                                        int64_t c_row_stride) {
  using V = Vec<Acc>;
  constexpr int kRows = TileShape<Acc>::kRows, kCols = TileShape<Acc>::kCols, kLanes = V::kLanes;
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
  micro_kernel(depth, a, a_line_stride, a_depth_stride, b, b_depth_stride, partial, c,
               c_row_stride);
}

POINTWISE_AVX2 void micro_kernel_avx2(int64_t depth, const double* a, int64_t a_line_stride,
                                      int64_t a_depth_stride, const double* b,
                                      int64_t b_depth_stride, const double* partial, double* c,
                                      int64_t c_row_stride) {
  micro_kernel(depth, a, a_line_stride, a_depth_stride, b, b_depth_stride, partial, c,
               c_row_stride);
}

POINTWISE_AVX2 void activate_avx2(float* z, int64_t n, Activation activation) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(z + i, activate_vector(_mm256_loadu_ps(z + i), activation));
  if (i < n) {
    // The tail goes through the same vector code, so every element gets the same formula.
    float tail[8] = {};
    std::copy(z + i, z + n, tail);
    _mm256_storeu_ps(tail, activate_vector(_mm256_loadu_ps(tail), activation));
    std::copy(tail, tail + (n - i), z + i);
  }
}

POINTWISE_AVX2 void finish_in_place_avx2(float* tile, int64_t row_stride, const float* bias,
                                         bool bias_on_rows, const float* residual,
                                         Activation activation) {
  using V = Vec<float>;
  constexpr int kRows = TileShape<float>::kRows, kLanes = V::kLanes;
  static_assert(TileShape<float>::kCols == 2 * kLanes, "a tile row is two AVX2 registers");
  const bool column_bias = bias != nullptr && !bias_on_rows;
  const __m256 bias0 = column_bias ? V::load(bias) : V::zero();
  const __m256 bias1 = column_bias ? V::load(bias + kLanes) : V::zero();
#pragma GCC unroll 8
  for (int i = 0; i < kRows; ++i) {
    float* row = tile + i * row_stride;
    __m256 z0 = V::load(row), z1 = V::load(row + kLanes);
    if (bias != nullptr) {
      const __m256 b0 = bias_on_rows ? V::broadcast(bias + i) : bias0;
      const __m256 b1 = bias_on_rows ? b0 : bias1;
      z0 = _mm256_add_ps(z0, b0);
      z1 = _mm256_add_ps(z1, b1);
    }
    if (residual != nullptr) {
      z0 = _mm256_add_ps(z0, V::load(residual + i * row_stride));
      z1 = _mm256_add_ps(z1, V::load(residual + i * row_stride + kLanes));
    }
    V::store(row, activate_vector(z0, activation));
    V::store(row + kLanes, activate_vector(z1, activation));
  }
}

}  // namespace pointwise::cpu

#endif  // POINTWISE_CPU_AVX2
