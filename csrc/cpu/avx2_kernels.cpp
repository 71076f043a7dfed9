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
                                      int64_t c_row_stride, const TileFinish<float>* finish) {
  micro_kernel<VecMath<float, 8>, Avx2Tile>(depth, a, a_line_stride, a_depth_stride, b, b_depth_stride, partial, c,
                                            c_row_stride, finish);
}

POINTWISE_TARGET_AVX2 void micro_kernel_avx2(int64_t depth, const double* a, int64_t a_line_stride,
                                      int64_t a_depth_stride, const double* b, int64_t b_depth_stride,
                                      const double* partial, double* c, int64_t c_row_stride,
                                      const TileFinish<double>* finish) {
  micro_kernel<VecMath<double, 4>, Avx2DoubleTile>(depth, a, a_line_stride, a_depth_stride, b, b_depth_stride,
                                                   partial, c, c_row_stride, finish);
}

POINTWISE_TARGET_AVX2 void finish_in_place_avx2(float* tile, int64_t row_stride, const float* bias, bool bias_on_rows,
                                         const float* residual, Activation activation) {
  finish_in_place<VecMath<float, 8>, Avx2Tile>(tile, row_stride, bias, bias_on_rows, residual, activation);
}

POINTWISE_TARGET_AVX2 void store_contiguous_avx2(const float* tile, const int64_t* rows, int64_t col0, const float* bias,
                                                bool bias_on_rows, const c10::BFloat16* residual, Activation activation,
                                                c10::BFloat16* dst) {
  store_contiguous<VecMath<float, 8>, Avx2Tile, Bf16Conversion<8>>(tile, rows, col0, bias, bias_on_rows, residual,
                                                                   activation, dst);
}

POINTWISE_TARGET_AVX2 void store_contiguous_avx2(const float* tile, const int64_t* rows, int64_t col0, const float* bias,
                                                bool bias_on_rows, const c10::Half* residual, Activation activation,
                                                c10::Half* dst) {
  store_contiguous<VecMath<float, 8>, Avx2Tile, HalfConversion<8>>(tile, rows, col0, bias, bias_on_rows, residual,
                                                                  activation, dst);
}

}  // namespace pointwise::cpu

#endif  // POINTWISE_CPU_X86
