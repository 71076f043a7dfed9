// The AVX512-BF16 micro-kernel (avx512_bf16_kernels.h). Its functions carry the AVX512-BF16
// target attribute.
#include "cpu/avx512_bf16_kernels.h"

#ifdef POINTWISE_CPU_X86

#include <immintrin.h>

#include <cstring>

#define POINTWISE_AVX512_BF16_INLINE POINTWISE_TARGET_AVX512_BF16 __attribute__((always_inline)) inline

namespace pointwise::cpu {
namespace {

// gemm.h's MicroKernel for pairs of depth steps: per pair, one 32-bit broadcast of A's pair per row
// and one load of B's pairs per 16 columns, 6 x 2 vdpbf16ps.
template <class Tile>
POINTWISE_AVX512_BF16_INLINE void micro_kernel(int64_t depth, const c10::BFloat16* a, int64_t a_line_stride,
                                               int64_t a_depth_stride, const c10::BFloat16* b,
                                               int64_t b_depth_stride, const float* partial, float* c,
                                               int64_t c_row_stride) {
  constexpr int kRows = Tile::kRows, kCols = Tile::kCols, kVectors = kCols / 16;
  static_assert(kCols % 16 == 0, "a tile row is a whole number of 16-float vectors");
  __m512 acc[kRows][kVectors];
#pragma GCC unroll 16
  for (int i = 0; i < kRows; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < kVectors; ++v)
      acc[i][v] = partial != nullptr ? _mm512_loadu_ps(partial + i * kCols + v * 16) : _mm512_setzero_ps();
  }
  const int64_t pairs = (depth + 1) / 2;  // an odd depth's last pair ends in the packed zero step
  for (int64_t k = 0; k < pairs; ++k) {
    __m512bh b_k[kVectors];
#pragma GCC unroll 4
    for (int v = 0; v < kVectors; ++v) b_k[v] = (__m512bh)_mm512_loadu_si512(b + v * 32);
#pragma GCC unroll 16
    for (int i = 0; i < kRows; ++i) {
      int32_t pair;
      std::memcpy(&pair, a + i * a_line_stride, sizeof pair);
      const __m512bh a_i = (__m512bh)_mm512_set1_epi32(pair);
#pragma GCC unroll 4
      for (int v = 0; v < kVectors; ++v) acc[i][v] = _mm512_dpbf16_ps(acc[i][v], a_i, b_k[v]);
    }
    a += 2 * a_depth_stride;
    b += 2 * b_depth_stride;
  }
#pragma GCC unroll 16
  for (int i = 0; i < kRows; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < kVectors; ++v) _mm512_storeu_ps(c + i * c_row_stride + v * 16, acc[i][v]);
  }
}

}  // namespace

template <class Tile>
POINTWISE_TARGET_AVX512_BF16 void micro_kernel_avx512_bf16(int64_t depth, const c10::BFloat16* a, int64_t a_line_stride,
                                                    int64_t a_depth_stride, const c10::BFloat16* b,
                                                    int64_t b_depth_stride, const float* partial, float* c,
                                                    int64_t c_row_stride) {
  micro_kernel<Tile>(depth, a, a_line_stride, a_depth_stride, b, b_depth_stride, partial, c, c_row_stride);
}

template void micro_kernel_avx512_bf16<Avx512Bf16Tile>(int64_t, const c10::BFloat16*, int64_t, int64_t,
                                                       const c10::BFloat16*, int64_t, const float*, float*, int64_t);
template void micro_kernel_avx512_bf16<Avx512Bf16NarrowTile>(int64_t, const c10::BFloat16*, int64_t, int64_t,
                                                             const c10::BFloat16*, int64_t, const float*, float*,
                                                             int64_t);

}  // namespace pointwise::cpu

#endif  // POINTWISE_CPU_X86
