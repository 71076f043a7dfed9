// The AMX kernel set (cpu/kernels.h) for bfloat16: amx_micro_kernel.h's micro-kernel on the tile
// registers (TDPBF16PS), the AVX512-BF16 set's epilogue and stores, and its 16-column set where a
// 32-column tile would pad more. Every other type runs the AVX512-BF16 set's. Built like the AVX2
// set; Linux must grant the process the tile data's state first (isa.cpp asks, through
// at::cpu::init_amx).
//
// TDPBF16PS adds each pair's two products to the float sum one after the other (products of two
// bfloat16 values are exact in float), the even step first, and treats subnormal inputs and results
// as zero.
#pragma once

#include <c10/util/BFloat16.h>

#include <cstdint>

#include "cpu/amx_micro_kernel.h"
#include "cpu/avx512_bf16_kernels.h"

#ifdef POINTWISE_CPU_AMX
namespace pointwise::cpu {

POINTWISE_TARGET_AMX void micro_kernel_amx(int64_t depth, const c10::BFloat16* a, int64_t a_line_stride,
                                           int64_t a_depth_stride, const c10::BFloat16* b, int64_t b_depth_stride,
                                           const float* partial, float* c, int64_t c_row_stride,
                                           const TileFinish<float>* finish);
POINTWISE_TARGET_AMX void configure_amx_tiles(const AmxTileConfig& config);
POINTWISE_TARGET_AMX void release_amx_tiles();

// The tile registers' configuration and release, for AmxGemmScope (the GEMM's tile operations are
// inlined into micro_kernel_amx).
struct AmxTileRegisters {
  static void configure(const AmxTileConfig& config) { configure_amx_tiles(config); }
  static void release() { release_amx_tiles(); }
};

// 256 depth steps keep a B panel of 32 lines at 16 KiB of L1, as the AVX512-BF16 set's; an A block
// of 8 panels of 32 rows is 128 KiB of L2.
template <>
struct KernelSet<Isa::kAmx, c10::BFloat16> {
  using Acc = float;
  using Packed = c10::BFloat16;
  static constexpr int kDepthGroup = 2;
  static constexpr bool kAInRows = true;
  using Tile = AmxTile;
  using Blocking = cpu::Blocking<float, Tile, 256, 8, 4>;
  using GemmScope = AmxGemmScope<AmxTileRegisters>;
  static constexpr MicroKernel<c10::BFloat16, float> micro_kernel = micro_kernel_amx;
  static constexpr InPlaceFinisher<float> finish_in_place = finish_in_place_avx512<Tile>;
  template <typename Out>
  static constexpr ContiguousStore<float, Out> store_contiguous = store_contiguous_avx512_bf16<Tile>;
  using OtherWidth = Avx512Bf16Kernels<Avx512Bf16NarrowTile, 512>;
};

}  // namespace pointwise::cpu
#endif
