// The AVX-512 kernel set: vec.h's micro-kernel and tile_epilogue.h's epilogue in 512-bit vectors.
// Every function here carries the AVX-512 target attribute.
#include "cpu/avx512_kernels.h"

#include "cpu/amx_micro_kernel.h"
#include "cpu/avx512_bf16_kernels.h"

#ifdef POINTWISE_CPU_X86

#include <immintrin.h>

#include "cpu/vec.h"


namespace pointwise::cpu {

template <class Tile>
POINTWISE_TARGET_AVX512 void micro_kernel_avx512(int64_t depth, const float* a, int64_t a_line_stride,
                                          int64_t a_depth_stride, const float* b, int64_t b_depth_stride,
                                          const float* partial, float* c, int64_t c_row_stride,
                                          const TileFinish<float>* finish) {
  micro_kernel<VecMath<float, 16>, Tile>(depth, a, a_line_stride, a_depth_stride, b, b_depth_stride, partial, c,
                                         c_row_stride, finish);
}

template <class Tile>
POINTWISE_TARGET_AVX512 void finish_in_place_avx512(float* tile, int64_t row_stride, const float* bias, bool bias_on_rows,
                                             const float* residual, Activation activation) {
  finish_in_place<VecMath<float, 16>, Tile>(tile, row_stride, bias, bias_on_rows, residual, activation);
}

template <class Tile, typename Out>
POINTWISE_TARGET_AVX512 void store_contiguous_avx512(const float* tile, const int64_t* rows, int64_t col0,
                                                    const float* bias, bool bias_on_rows, const Out* residual,
                                                    Activation activation, Out* dst) {
  store_contiguous<VecMath<float, 16>, Tile, Conversion16<Out, 16>>(tile, rows, col0, bias, bias_on_rows, residual,
                                                                    activation, dst);
}

#define POINTWISE_AVX512_TILE(Tile)                                                                              \
  template void micro_kernel_avx512<Tile>(int64_t, const float*, int64_t, int64_t, const float*, int64_t,        \
                                          const float*, float*, int64_t, const TileFinish<float>*);              \
  template void finish_in_place_avx512<Tile>(float*, int64_t, const float*, bool, const float*, Activation);    \
  template void store_contiguous_avx512<Tile, c10::BFloat16>(const float*, const int64_t*, int64_t, const float*, \
                                                             bool, const c10::BFloat16*, Activation,             \
                                                             c10::BFloat16*);                                    \
  template void store_contiguous_avx512<Tile, c10::Half>(const float*, const int64_t*, int64_t, const float*,     \
                                                         bool, const c10::Half*, Activation, c10::Half*);
POINTWISE_AVX512_TILE(Avx512Tile)
POINTWISE_AVX512_TILE(Avx512NarrowTile)
template void finish_in_place_avx512<Avx512Bf16Tile>(float*, int64_t, const float*, bool, const float*,
                                                     Activation);  // the AVX512-BF16 set's
template void finish_in_place_avx512<Avx512Bf16NarrowTile>(float*, int64_t, const float*, bool, const float*,
                                                           Activation);
template void finish_in_place_avx512<AmxTile>(float*, int64_t, const float*, bool, const float*,
                                              Activation);  // the AMX set's

}  // namespace pointwise::cpu

#endif  // POINTWISE_CPU_X86
