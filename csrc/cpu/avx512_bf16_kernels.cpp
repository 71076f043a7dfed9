// The AVX512-BF16 micro-kernel (avx512_bf16_kernels.h). Its functions carry the AVX512-BF16
// target attribute.
#include "cpu/avx512_bf16_kernels.h"

#include "cpu/amx_micro_kernel.h"

#ifdef POINTWISE_CPU_X86

#include <immintrin.h>

#include <cstring>

#include "cpu/vec.h"

#define POINTWISE_AVX512_BF16_INLINE POINTWISE_TARGET_AVX512_BF16 __attribute__((always_inline)) inline

namespace pointwise::cpu {
namespace {

// gemm.h's MicroKernel for pairs of depth steps: per pair, one 32-bit broadcast of A's pair per row
// and one load of B's pairs per 16 columns, 6 x 2 vdpbf16ps.
template <class Tile>
POINTWISE_AVX512_BF16_INLINE void micro_kernel(int64_t depth, const c10::BFloat16* a, int64_t a_line_stride,
                                               int64_t a_depth_stride, const c10::BFloat16* b,
                                               int64_t b_depth_stride, const float* partial, float* c,
                                               int64_t c_row_stride, const TileFinish<float>* finish) {
  using M = VecMath<float, 16>;
  constexpr int kRows = Tile::kRows, kCols = Tile::kCols, kVectors = kCols / 16;
  static_assert(kCols % 16 == 0, "a tile row is a whole number of 16-float vectors");
  M::V acc[kRows][kVectors];
#pragma GCC unroll 16
  for (int i = 0; i < kRows; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < kVectors; ++v) acc[i][v] = partial != nullptr ? M::load(partial + i * kCols + v * 16) : M::splat(0);
  }
  prefetch_tile<Tile>(c, c_row_stride, finish);
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
      for (int v = 0; v < kVectors; ++v) acc[i][v] = (M::V)_mm512_dpbf16_ps((__m512)acc[i][v], a_i, b_k[v]);
    }
    a += 2 * a_depth_stride;
    b += 2 * b_depth_stride;
  }
  store_finished<M, Tile>(acc, c, c_row_stride, finish);
}

}  // namespace

template <class Tile>
POINTWISE_TARGET_AVX512_BF16 void micro_kernel_avx512_bf16(int64_t depth, const c10::BFloat16* a, int64_t a_line_stride,
                                                    int64_t a_depth_stride, const c10::BFloat16* b,
                                                    int64_t b_depth_stride, const float* partial, float* c,
                                                    int64_t c_row_stride, const TileFinish<float>* finish) {
  micro_kernel<Tile>(depth, a, a_line_stride, a_depth_stride, b, b_depth_stride, partial, c, c_row_stride, finish);
}

// 16 bfloat16 values to and from one vector. vcvtneps2bf16 rounds to nearest even as c10::BFloat16
// does, in one instruction where Bf16Conversion takes eight (the 18% of a 16 -> 96 channels_last
// layer that this saved, profiled on an AVX512-BF16 EPYC). It flushes subnormals to zero and keeps a NaN's sign and payload, where
// c10 keeps subnormals and writes 0x7fc0: vfpclassps finds such lanes (subnormal, quiet or
// signalling NaN), and a vector that has one is converted as c10 converts it.
struct Bf16ConversionAvx512Bf16 {
  using V = VecMath<float, 16>::V;
  POINTWISE_HOST_DEVICE static V load(const c10::BFloat16* p) { return Bf16Conversion<16>::load(p); }
  // Inline assembly for HalfConversion's reason (vec.h).
  POINTWISE_HOST_DEVICE static void store(c10::BFloat16* p, V v) {
    uint16_t unlike_c10;
    asm("vfpclassps $0xa1, %1, %0" : "=k"(unlike_c10) : "v"(v));
    if (__builtin_expect(unlike_c10 != 0, 0)) {
      Bf16Conversion<16>::store(p, v);
      return;
    }
    Vector<uint16_t, 16>::V bf16;
    asm("vcvtneps2bf16 %1, %0" : "=v"(bf16) : "v"(v));
    __builtin_memcpy(p, &bf16, sizeof bf16);
  }
};

template <class Tile>
POINTWISE_TARGET_AVX512_BF16 void store_contiguous_avx512_bf16(const float* tile, const int64_t* rows, int64_t col0,
                                                              const float* bias, bool bias_on_rows,
                                                              const c10::BFloat16* residual, Activation activation,
                                                              c10::BFloat16* dst) {
  store_contiguous<VecMath<float, 16>, Tile, Bf16ConversionAvx512Bf16>(tile, rows, col0, bias, bias_on_rows, residual,
                                                                       activation, dst);
}

template void micro_kernel_avx512_bf16<Avx512Bf16Tile>(int64_t, const c10::BFloat16*, int64_t, int64_t,
                                                       const c10::BFloat16*, int64_t, const float*, float*, int64_t,
                                                       const TileFinish<float>*);
template void micro_kernel_avx512_bf16<Avx512Bf16NarrowTile>(int64_t, const c10::BFloat16*, int64_t, int64_t,
                                                             const c10::BFloat16*, int64_t, const float*, float*,
                                                             int64_t, const TileFinish<float>*);
template void store_contiguous_avx512_bf16<Avx512Bf16Tile>(const float*, const int64_t*, int64_t, const float*, bool,
                                                           const c10::BFloat16*, Activation, c10::BFloat16*);
template void store_contiguous_avx512_bf16<Avx512Bf16NarrowTile>(const float*, const int64_t*, int64_t, const float*,
                                                                 bool, const c10::BFloat16*, Activation,
                                                                 c10::BFloat16*);
template void store_contiguous_avx512_bf16<AmxTile>(const float*, const int64_t*, int64_t, const float*, bool,
                                                    const c10::BFloat16*, Activation, c10::BFloat16*);  // the AMX set's

}  // namespace pointwise::cpu

#endif  // POINTWISE_CPU_X86
