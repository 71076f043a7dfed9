// The CPU kernel sets, one per instruction set (cpu/isa.h): what they are, the portable one, and the
// run-time choice among them (cpu/kernels.h adds every ISA's specialisations).
//
// KernelSet<isa, T> is everything the drivers (pointwise_cpu.cpp) take from an ISA for tensors of
// element type T:
//   Acc              the accumulation type (float for 16-bit T)
//   Packed           the packed operands' element type, kDepthGroup their depth steps a group
//                    (gemm.h's Panels): Acc and 1 where operands are converted while packed
//   Tile             the micro-kernel's register tile (gemm.h's RegisterTile)
//   Blocking         its cache blocking (gemm.h)
//   micro_kernel     gemm.h's MicroKernel<Packed, Acc> for that tile
//   kAInRows, GemmScope  optional: below (AInRows) and in gemm.h (GemmScopeOf)
//   finish_in_place  tile_epilogue.h's InPlaceFinisher<Acc> for that tile
//   store_contiguous<Out>  tile_epilogue.h's ContiguousStore<Acc, Out> for that tile: a
//                    finished tile to a 16-bit output
// An ISA's header specialises it for the types it improves. Every other type falls back: a 16-bit
// type to the float kernel set of the same ISA (its operands converted to float while packed), a
// float or double to the kernel set of the ISA below, down to the portable one. A new ISA is a new
// file pair and a value of Isa: nothing shared changes.
#pragma once

#include <ATen/OpMathType.h>

#include <cstdint>
#include <type_traits>

#include "cpu/gemm.h"
#include "cpu/isa.h"
#include "cpu/tile_epilogue.h"
#include "dispatch.h"

namespace pointwise::cpu {

constexpr Isa isa_below(Isa isa) { return isa == Isa::kPortable ? isa : static_cast<Isa>(static_cast<int>(isa) - 1); }

template <typename T>
inline constexpr bool kComputesInFloat = !std::is_same_v<T, at::opmath_type<T>>;

template <Isa kIsa, typename T>
struct KernelSet
    : std::conditional_t<kComputesInFloat<T>, KernelSet<kIsa, float>, KernelSet<isa_below(kIsa), T>> {};

// Plain C++ for any CPU: the compiler vectorises the micro-kernel's column loop for the baseline ISA.
template <typename T>
struct KernelSet<Isa::kPortable, T> {
  using Acc = at::opmath_type<T>;
  using Packed = Acc;
  static constexpr int kDepthGroup = 1;
  using Tile = RegisterTile<6, 64 / sizeof(Acc)>;
  using Blocking = cpu::Blocking<Acc, Tile>;
  static constexpr MicroKernel<Acc> micro_kernel = micro_kernel_portable<Acc, Tile>;
  static void finish_in_place(Acc* tile, int64_t row_stride, const Acc* bias, bool bias_on_rows,
                              const Acc* residual, Activation activation) {
    cpu::finish_in_place<ScalarMath<Acc>, Tile>(tile, row_stride, bias, bias_on_rows, residual, activation);
  }
  template <typename Out>
  static void store_contiguous(const Acc* tile, const int64_t* rows, int64_t col0, const Acc* bias, bool bias_on_rows,
                               const Out* residual, Activation activation, Out* dst) {
    cpu::store_contiguous<ScalarMath<Acc>, Tile, ScalarConversion<Acc, Out>>(tile, rows, col0, bias, bias_on_rows,
                                                                             residual, activation, dst);
  }
};

// Whether kernel set K's micro-kernel reads A's panels only in rows (gemm.h's Panels), K::kAInRows
// (AMX's tiles load rows of A): the drivers then pack A in rows even from a source that is not
// contiguous along the depth, which they would interleave for the others.
template <class K, class = void>
struct AInRows : std::false_type {};
template <class K>
struct AInRows<K, std::enable_if_t<K::kAInRows>> : std::true_type {};

// A kernel set may have a second one whose tile has another number of columns, K::OtherWidth:
// f(KernelSetTag<K::OtherWidth>{}) where K has one and its tiles pad `columns` to fewer than K's
// do, else f(KernelSetTag<K>{}). `columns`: the extent of the GEMM along the tiles' columns. Padded
// columns are multiply-adds thrown away: 24 columns on 16-column tiles cost as much as 32.
template <class K>
struct KernelSetTag {
  using type = K;
};
template <class K, class = void>
struct HasOtherWidth : std::false_type {};
template <class K>
struct HasOtherWidth<K, std::void_t<typename K::OtherWidth>> : std::true_type {};

template <class K, typename F>
decltype(auto) dispatch_width(int64_t columns, F&& f) {
  if constexpr (HasOtherWidth<K>::value) {
    auto padded = [columns](int64_t width) { return (columns + width - 1) / width * width; };
    if (padded(K::OtherWidth::Tile::kCols) < padded(K::Tile::kCols)) return f(KernelSetTag<typename K::OtherWidth>{});
  }
  return f(KernelSetTag<K>{});
}

// f(std::integral_constant<Isa, selected_isa()>{}): the running ISA as a template argument.
template <typename F>
decltype(auto) dispatch_isa(F&& f) {
  return dispatch_enum<Isa, kIsaCount>(selected_isa(), static_cast<F&&>(f));
}

}  // namespace pointwise::cpu
