// The AVX2/FMA kernel set: vec.h's micro-kernel and tile_epilogue.h's epilogue in 256-bit vectors.
// Every function here carries the avx2,fma target attribute; nothing else in the library is built
// for AVX2.
#include "cpu/avx2_kernels.h"

#ifdef POINTWISE_CPU_X86

#include <immintrin.h>

#include "cpu/vec.h"


namespace pointwise::cpu {

POINTWISE_TARGET_AVX2 void micro_kernel_avx2(int64_t depth, const float* a, int64_t a_line_stride, int64_t a_depth_stride,
                                      const float* b, int64_t b_depth_stride, const float* partial, float* c,
                                      int64_t c_row_stride) {
  micro_kernel<VecMath<float, 8>, Avx2Tile>(depth, a, a_line_stride, a_depth_stride, b, b_depth_stride, partial, c,
                                            c_row_stride);
}

POINTWISE_TARGET_AVX2 void micro_kernel_avx2(int64_t depth, const double* a, int64_t a_line_stride,
                                      int64_t a_depth_stride, const double* b, int64_t b_depth_stride,
                                      const double* partial, double* c, int64_t c_row_stride) {
  micro_kernel<VecMath<double, 4>, Avx2DoubleTile>(depth, a, a_line_stride, a_depth_stride, b, b_depth_stride,
                                                   partial, c, c_row_stride);
}

POINTWISE_TARGET_AVX2 void finish_in_place_avx2(float* tile, int64_t row_stride, const float* bias, bool bias_on_rows,
                                         const float* residual, Activation activation) {
  finish_in_place<VecMath<float, 8>, Avx2Tile>(tile, row_stride, bias, bias_on_rows, residual, activation);
}

POINTWISE_TARGET_AVX2 void store_row_avx2(const float* z, c10::BFloat16* dst, int64_t n) { store_bf16<8>(z, dst, n); }

// vcvtps2ph rounds to nearest even, as c10::Half does (a NaN keeps its payload where c10 writes 0x7e00).
POINTWISE_TARGET_AVX2 void store_row_avx2(const float* z, c10::Half* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), _mm256_cvtps_ph(_mm256_loadu_ps(z + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; ++i) dst[i] = c10::Half(z[i]);
}

}  // namespace pointwise::cpu

#endif  // POINTWISE_CPU_X86
