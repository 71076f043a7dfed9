// The AMX micro-kernel (amx_kernels.h) on the tile registers. Its functions carry the AMX target
// attribute.
#include "cpu/amx_kernels.h"

#ifdef POINTWISE_CPU_AMX

#include <c10/util/Exception.h>

namespace pointwise::cpu {
namespace {

// amx_micro_kernel.h's tile operations as the instructions, in inline assembly: the register
// numbers are immediates (%c prints one bare), and memory clobbers keep the tail's copies before
// the loads that read them (GCC's intrinsics, also inline assembly, have none). No target attribute, so they inline into
// amx_micro_kernel.h's generic code, which micro_kernel_amx (below) builds for AMX.
struct AmxInstructions {
  template <int t>
  __attribute__((always_inline)) static void zero() {
    asm volatile("tilezero %%tmm%c0" ::"i"(t));
  }
  template <int t>
  __attribute__((always_inline)) static void load(const void* p, int64_t stride) {
    asm volatile("tileloadd (%0,%1,1), %%tmm%c2" ::"r"(p), "r"(stride), "i"(t) : "memory");
  }
  template <int t>
  __attribute__((always_inline)) static void store(void* p, int64_t stride) {
    asm volatile("tilestored %%tmm%c2, (%0,%1,1)" ::"r"(p), "r"(stride), "i"(t) : "memory");
  }
  // c += a . b (AT&T order: b, a, c).
  template <int c, int a, int b>
  __attribute__((always_inline)) static void dot() {
    asm volatile("tdpbf16ps %%tmm%c2, %%tmm%c1, %%tmm%c0" ::"i"(c), "i"(a), "i"(b));
  }
};

}  // namespace

POINTWISE_TARGET_AMX void micro_kernel_amx(int64_t depth, const c10::BFloat16* a, int64_t a_line_stride,
                                           int64_t a_depth_stride, const c10::BFloat16* b,
                                           int64_t b_depth_stride, const float* partial, float* c,
                                           int64_t c_row_stride, const TileFinish<float>* finish) {
  TORCH_INTERNAL_ASSERT_DEBUG_ONLY(a_depth_stride == 1, "the AMX micro-kernel reads A in rows");
  amx_micro_kernel<AmxInstructions, finish_in_place_avx512<AmxTile>>(depth, a, a_line_stride, b, b_depth_stride,
                                                                     partial, c, c_row_stride, finish);
}

// The whole 64 bytes as the memory operand (GCC's _tile_loadconfig names only the first 8).
POINTWISE_TARGET_AMX void configure_amx_tiles(const AmxTileConfig& config) {
  asm volatile("ldtilecfg %0" ::"m"(config));
}

POINTWISE_TARGET_AMX void release_amx_tiles() { asm volatile("tilerelease" ::: "memory"); }

}  // namespace pointwise::cpu

#endif  // POINTWISE_CPU_AMX
