// The CPU kernel sets, one per instruction set (cpu/isa.h), and the run-time choice among them.
//
// KernelSet<isa, Acc> is everything the drivers (pointwise_cpu.cpp) take from an ISA for
// accumulation type Acc:
//   Tile             the micro-kernel's register tile (gemm.h's RegisterTile)
//   Blocking         its cache blocking (gemm.h)
//   micro_kernel     gemm.h's MicroKernel for that tile
//   finish_in_place  tile_epilogue.h's InPlaceFinisher for that tile
// An ISA's header specialises it for the types it improves; every other type falls back to the
// kernel set of the ISA below, down to the portable one. A new ISA is a new file pair and a value
// of Isa: nothing shared changes.
#pragma once

#include <cstdint>

#include "cpu/gemm.h"
#include "cpu/isa.h"
#include "cpu/tile_epilogue.h"
#include "dispatch.h"

namespace pointwise::cpu {

constexpr Isa isa_below(Isa isa) { return isa == Isa::kPortable ? isa : static_cast<Isa>(static_cast<int>(isa) - 1); }

template <Isa kIsa, typename Acc>
struct KernelSet : KernelSet<isa_below(kIsa), Acc> {};

// Plain C++ for any CPU: the compiler vectorises the micro-kernel's column loop for the baseline ISA.
template <typename Acc>
struct KernelSet<Isa::kPortable, Acc> {
  using Tile = RegisterTile<6, 64 / sizeof(Acc)>;
  using Blocking = cpu::Blocking<Acc, Tile>;
  static constexpr MicroKernel<Acc> micro_kernel = micro_kernel_portable<Acc, Tile>;
  static void finish_in_place(Acc* tile, int64_t row_stride, const Acc* bias, bool bias_on_rows,
                              const Acc* residual, Activation activation) {
    cpu::finish_in_place<ScalarMath<Acc>, Tile>(tile, row_stride, bias, bias_on_rows, residual, activation);
  }
};

// f(std::integral_constant<Isa, selected_isa()>{}): the running ISA as a template argument.
template <typename F>
decltype(auto) dispatch_isa(F&& f) {
  return dispatch_enum<Isa, kIsaCount>(selected_isa(), static_cast<F&&>(f));
}

}  // namespace pointwise::cpu

#include "cpu/avx2_kernels.h"  // the specialisations, after the primary template
