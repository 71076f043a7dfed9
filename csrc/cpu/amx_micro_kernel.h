// The AMX micro-kernel for bfloat16 (gemm.h's MicroKernel), written over the tile operations it
// uses (`Tiles`), so that the same code runs on the tile registers (amx_kernels.cpp) and, in the
// tests, on an emulation of them (tests/amx_emulated): the indexing, the depth tail, the partial
// sums and the epilogue are checked on every machine; only the instructions need an AMX CPU.
//
// A 32 x 32 float tile of C is 2 x 2 tile registers of 16 x 16 (tmm0-3); per step of 32 depth
// values (16 pairs), two A tiles (tmm4, 5: 16 rows x 32 bfloat16) and two B tiles (tmm6, 7: 16 pairs
// x 16 columns, the pairs of each column adjacent) make four TDPBF16PS. Every tile register is
// configured 16 rows x 64 bytes, once per GEMM (AmxGemmScope).
//
// Operand layouts (gemm.h's Panels with pairs): A must be in rows (its depth contiguous:
// a_depth_stride == 1), which is a tile's row; the drivers pack A so for this kernel set
// (kernel_set.h's AInRows). B's pairs of steps k, k + 1 are its line-contiguous rows, which is
// the tile's layout for B (oneDNN's VNNI) whatever B's depth stride.
#pragma once

#include <c10/util/BFloat16.h>

#include <cstdint>
#include <cstring>

#include "cpu/gemm.h"
#include "cpu/tile_epilogue.h"

namespace pointwise::cpu {

using AmxTile = RegisterTile<32, 32>;

// The tile registers' configuration (LDTILECFG's 64-byte operand, palette 1): tiles 0-7 of 16 rows
// of 64 bytes.
struct alignas(64) AmxTileConfig {
  uint8_t palette = 1;
  uint8_t start_row = 0;
  uint8_t reserved[14] = {};
  uint16_t bytes_per_row[16] = {64, 64, 64, 64, 64, 64, 64, 64};
  uint8_t rows[16] = {16, 16, 16, 16, 16, 16, 16, 16};
};
static_assert(sizeof(AmxTileConfig) == 64, "LDTILECFG reads 64 bytes");

// `Tiles` has static functions configure(const AmxTileConfig&), release(), zero<t>(),
// load<t>(const void*, int64_t stride_bytes), store<t>(void*, int64_t stride_bytes) and
// dot<c, a, b>() (TDPBF16PS: c += a . b, the pairs of a's row and b's column multiplied and added),
// for tile registers t, c, a, b.
template <class Tiles>
struct AmxGemmScope {
  AmxGemmScope() { Tiles::configure(AmxTileConfig{}); }
  ~AmxGemmScope() { Tiles::release(); }
  AmxGemmScope(const AmxGemmScope&) = delete;
  AmxGemmScope& operator=(const AmxGemmScope&) = delete;
};

// One step of 16 pairs: A's rows a (16 rows a_stride bytes apart, then 16 more), B's pair rows b
// (b_stride bytes apart; columns 0-15, then 16-31 at 64 bytes on).
template <class Tiles>
__attribute__((always_inline)) inline void amx_step(const char* a, int64_t a_stride, const char* b, int64_t b_stride) {
  Tiles::template load<4>(a, a_stride);
  Tiles::template load<5>(a + 16 * a_stride, a_stride);
  Tiles::template load<6>(b, b_stride);
  Tiles::template load<7>(b + 64, b_stride);
  Tiles::template dot<0, 4, 6>();
  Tiles::template dot<1, 4, 7>();
  Tiles::template dot<2, 5, 6>();
  Tiles::template dot<3, 5, 7>();
}

// gemm.h's MicroKernel contract for AmxTile, A in rows; kFinishInPlace applies a non-plain finish
// to the stored tile (the tile registers have no arithmetic of their own).
template <class Tiles, InPlaceFinisher<float> kFinishInPlace>
__attribute__((always_inline)) inline void amx_micro_kernel(int64_t depth, const c10::BFloat16* a, int64_t a_line_stride,
                                                           const c10::BFloat16* b, int64_t b_depth_stride,
                                                           const float* partial, float* c, int64_t c_row_stride,
                                                           const TileFinish<float>* finish) {
  constexpr int kCols = AmxTile::kCols;
  constexpr int64_t kPairs = 16, kStep = 2 * kPairs;  // depth values a tile row holds
  constexpr int64_t kFloat = sizeof(float), kValue = sizeof(c10::BFloat16);
  if (partial != nullptr) {
    Tiles::template load<0>(partial, kCols * kFloat);
    Tiles::template load<1>(partial + 16, kCols * kFloat);
    Tiles::template load<2>(partial + 16 * kCols, kCols * kFloat);
    Tiles::template load<3>(partial + 16 * kCols + 16, kCols * kFloat);
  } else {
    Tiles::template zero<0>();
    Tiles::template zero<1>();
    Tiles::template zero<2>();
    Tiles::template zero<3>();
  }
  prefetch_tile<AmxTile>(c, c_row_stride, finish);
  const int64_t a_stride = a_line_stride * kValue, b_stride = 2 * b_depth_stride * kValue;
  const int64_t pairs = (depth + 1) / 2;  // an odd depth's last pair ends in the packed zero step
  const int64_t steps = pairs / kPairs, tail_pairs = pairs % kPairs;
  for (int64_t s = 0; s < steps; ++s) {
    amx_step<Tiles>(reinterpret_cast<const char*>(a + s * kStep), a_stride,
                    reinterpret_cast<const char*>(b + s * kStep * b_depth_stride), b_stride);
  }
  if (tail_pairs != 0) {
    // A step reads 16 pairs: the last, shorter one goes through zero-padded copies, so that it
    // reads nothing past the operands (A read in place may end at a tensor's end) and adds zeros.
    alignas(64) c10::BFloat16 a_tail[AmxTile::kRows][kStep];
    alignas(64) c10::BFloat16 b_tail[kPairs][2 * kCols];
    std::memset(a_tail, 0, sizeof a_tail);
    std::memset(b_tail, 0, sizeof b_tail);
    const int64_t k0 = steps * kStep;
    for (int i = 0; i < AmxTile::kRows; ++i) std::memcpy(a_tail[i], a + i * a_line_stride + k0, 2 * tail_pairs * kValue);
    for (int64_t p = 0; p < tail_pairs; ++p) std::memcpy(b_tail[p], b + (k0 + 2 * p) * b_depth_stride, sizeof b_tail[p]);
    amx_step<Tiles>(reinterpret_cast<const char*>(a_tail), sizeof a_tail[0], reinterpret_cast<const char*>(b_tail),
                    sizeof b_tail[0]);
  }
  const int64_t c_stride = c_row_stride * kFloat;
  Tiles::template store<0>(c, c_stride);
  Tiles::template store<1>(c + 16, c_stride);
  Tiles::template store<2>(c + 16 * c_row_stride, c_stride);
  Tiles::template store<3>(c + 16 * c_row_stride + 16, c_stride);
  if (finish != nullptr && !finish->plain())
    kFinishInPlace(c, c_row_stride, finish->bias, finish->bias_on_rows, finish->residual, finish->activation);
}

}  // namespace pointwise::cpu
