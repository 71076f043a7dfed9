// The AVX-512 kernel set: vec.h's micro-kernel and tile_epilogue.h's epilogue in 512-bit vectors.
// Every function here carries the AVX-512 target attribute.
#include "cpu/avx512_kernels.h"

#include "cpu/avx512_bf16_kernels.h"

#ifdef POINTWISE_CPU_X86

#include <immintrin.h>

#include "cpu/vec.h"


namespace pointwise::cpu {

template <class Tile>
POINTWISE_TARGET_AVX512 void micro_kernel_avx512(int64_t depth, const float* a, int64_t a_line_stride,
                                          int64_t a_depth_stride, const float* b, int64_t b_depth_stride,
                                          const float* partial, float* c, int64_t c_row_stride) {
  micro_kernel<VecMath<float, 16>, Tile>(depth, a, a_line_stride, a_depth_stride, b, b_depth_stride, partial, c,
                                         c_row_stride);
}

template <class Tile>
POINTWISE_TARGET_AVX512 void finish_in_place_avx512(float* tile, int64_t row_stride, const float* bias, bool bias_on_rows,
                                             const float* residual, Activation activation) {
  finish_in_place<VecMath<float, 16>, Tile>(tile, row_stride, bias, bias_on_rows, residual, activation);
}

POINTWISE_TARGET_AVX512 void store_row_avx512(const float* z, c10::BFloat16* dst, int64_t n) {
  store_bf16<16>(z, dst, n);
}

// vcvtps2ph rounds to nearest even, as c10::Half does (a NaN keeps its payload where c10 writes 0x7e00).
POINTWISE_TARGET_AVX512 void store_row_avx512(const float* z, c10::Half* dst, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), _mm512_cvtps_ph(_mm512_loadu_ps(z + i), _MM_FROUND_TO_NEAREST_INT));
  for (; i < n; ++i) dst[i] = c10::Half(z[i]);
}

#define POINTWISE_AVX512_TILE(Tile)                                                                              \
  template void micro_kernel_avx512<Tile>(int64_t, const float*, int64_t, int64_t, const float*, int64_t,        \
                                          const float*, float*, int64_t);                                        \
  template void finish_in_place_avx512<Tile>(float*, int64_t, const float*, bool, const float*, Activation);
POINTWISE_AVX512_TILE(Avx512Tile)
POINTWISE_AVX512_TILE(Avx512NarrowTile)
POINTWISE_AVX512_TILE(Avx512Bf16Tile)  // the AVX512-BF16 set's epilogues
POINTWISE_AVX512_TILE(Avx512Bf16NarrowTile)

}  // namespace pointwise::cpu

#endif  // POINTWISE_CPU_X86
