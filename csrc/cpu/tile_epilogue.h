// What happens to a finished tile of C: bias, residual and activation (the element-wise epilogue of
// epilogue.h), conversion to the output type, and the store through per-row and per-column offsets.
#pragma once

#include <cstdint>
#include <type_traits>

#include "epilogue.h"
#include "cpu/gemm.h"

namespace pointwise::cpu {

// Finishes a kRows x kCols tile in place: tile = act(tile + bias + residual), rows row_stride
// apart and columns contiguous, the residual laid out like the tile and the bias per row or per
// column (null: none). Each kernel set has one (cpu/kernels.h), finish_in_place below in its own
// vectors; store_tile calls it too, on a tile gathered into a buffer. One pass while the tile is
// still in L1: applied element by element after the store, it cost more than the GEMM itself for
// short reductions (2 cycles an element against ~1 at K = 16).
template <typename Acc>
using InPlaceFinisher = void (*)(Acc* tile, int64_t row_stride, const Acc* bias, bool bias_on_rows,
                                 const Acc* residual, Activation activation);

// The element-wise epilogue of epilogue.h over a Tile, in M's vectors (M::kLanes elements; one
// for ScalarMath), for activation A.
template <class M, class Tile, Activation A, typename Acc>
POINTWISE_HOST_DEVICE void finish_in_place(Acc* tile, int64_t row_stride, const Acc* bias, bool bias_on_rows,
                                           const Acc* residual) {
  using V = typename M::V;
  constexpr int kLanes = M::kLanes, kVectors = Tile::kCols / kLanes;
  static_assert(Tile::kCols % kLanes == 0, "a tile row is a whole number of vectors");
  const bool add_bias = bias != nullptr, add_residual = residual != nullptr;
  // Loaded once: the stores into the tile below could alias the bias for all the compiler knows.
  V column_bias[kVectors];
  for (int v = 0; v < kVectors; ++v)
    column_bias[v] = add_bias && !bias_on_rows ? M::load(bias + v * kLanes) : M::splat(0);
  for (int i = 0; i < Tile::kRows; ++i) {
    Acc* row = tile + i * row_stride;
    const Acc row_bias = add_bias && bias_on_rows ? bias[i] : Acc(0);  // a scalar operand (vec.h)
    for (int v = 0; v < kVectors; ++v) {
      const V z = M::load(row + v * kLanes);
      const V r = add_residual ? M::load(residual + i * row_stride + v * kLanes) : M::splat(0);
      M::store(row + v * kLanes, bias_on_rows ? epilogue_value<A, M>(z, add_bias, row_bias, add_residual, r)
                                              : epilogue_value<A, M>(z, add_bias, column_bias[v], add_residual, r));
    }
  }
}

// dst[i] = z[i] converted to the output type, i < n: a row of a finished tile stored where the output
// type is not the accumulator's (bfloat16, float16). Each kernel set has one (cpu/kernels.h).
template <typename Acc, typename Out>
using RowStore = void (*)(const Acc* z, Out* dst, int64_t n);

template <typename Acc, typename Out>
void store_row_portable(const Acc* z, Out* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<Out>(z[i]);
}

// finish_in_place for a run-time activation.
template <class M, class Tile, typename Acc>
POINTWISE_HOST_DEVICE void finish_in_place(Acc* tile, int64_t row_stride, const Acc* bias, bool bias_on_rows,
                                           const Acc* residual, Activation activation) {
  // always_inline: an ISA's kernel file calls this from its target-attributed functions, and a
  // lambda left out of line would be built for the baseline ISA (SiLU's and GELU's were, in SSE).
  dispatch_activation(activation, [&](auto a) __attribute__((always_inline)) {
    finish_in_place<M, Tile, decltype(a)::value>(tile, row_stride, bias, bias_on_rows, residual);
  });
}

// What is added to a tile before the activation: a bias, given per tile and indexed by the
// tile's rows or columns, whichever are channels, and a residual at the destination's offsets.
template <typename Acc, typename T>
struct TileEpilogue {
  bool bias_on_rows = false;
  const T* residual = nullptr;
  Activation activation = Activation::kNone;
  InPlaceFinisher<Acc> finish_in_place = nullptr;  // the kernel set's
  RowStore<Acc, T> store_row = store_row_portable<Acc, T>;  // the kernel set's, where T is not Acc

  bool plain(const Acc* bias) const {
    return bias == nullptr && residual == nullptr && activation == Activation::kNone;
  }
};

// The destination of a Tile-sized tile whose elements go to dst[rows[i] + cols[j]], for the
// micro-kernel to write straight into: possible when the destination has the accumulation type,
// every row and column is inside it (no negative offset), the columns are contiguous and the rows
// evenly spaced. Otherwise null: the tile goes through the accumulator buffer and store_tile.
template <class Tile, typename Acc, typename Out>
TileDestination<Acc> direct_destination(Out* dst, const int64_t* rows, const int64_t* cols) {
  constexpr int kRows = Tile::kRows, kCols = Tile::kCols;
  if constexpr (std::is_same_v<Out, Acc>) {
    const int64_t row_stride = rows[1] - rows[0];
    if (row_stride < kCols || !evenly_spaced(rows, kRows, row_stride) ||
        !unit_stride(cols, kCols)) {
      return {};
    }
    return {dst + rows[0] + cols[0], row_stride};
  } else {
    return {};
  }
}

// dst[rows[i] + cols[j]] = act(tile[i * kCols + j] + bias + residual[rows[i] + cols[j]]) for the
// tile's rows and columns whose offsets are not negative, finishing the tile in place on the way
// (it is the accumulator buffer, not read again). bias and the offsets point at this tile's first
// row and column.
template <class Tile, typename Acc, typename T, typename Out>
void store_tile(Acc* tile, const int64_t* rows, const int64_t* cols, const Acc* bias,
                const TileEpilogue<Acc, T>& epilogue, Out* dst) {
  constexpr int kRows = Tile::kRows, kCols = Tile::kCols;
  // Columns are usually one contiguous run (pixels of one image, or channels of NHWC); the loops
  // then vectorise. Otherwise they cross an image, the padding or the end of the operand.
  const bool contiguous = unit_stride(cols, kCols);
  if (!epilogue.plain(bias)) {
    // The residual is gathered into a buffer laid out as the tile, for one finishing call.
    alignas(64) Acc r[kRows][kCols];
    if (epilogue.residual != nullptr) {
      for (int i = 0; i < kRows; ++i) {
        const T* residual = epilogue.residual + rows[i];
        if (rows[i] < 0) {
          for (int j = 0; j < kCols; ++j) r[i][j] = Acc(0);
        } else if (contiguous) {
          for (int j = 0; j < kCols; ++j) r[i][j] = static_cast<Acc>(residual[cols[0] + j]);
        } else {
          for (int j = 0; j < kCols; ++j) r[i][j] = cols[j] < 0 ? Acc(0) : static_cast<Acc>(residual[cols[j]]);
        }
      }
    }
    epilogue.finish_in_place(tile, kCols, bias, epilogue.bias_on_rows, epilogue.residual != nullptr ? &r[0][0] : nullptr,
                             epilogue.activation);
  }
  for (int i = 0; i < kRows; ++i) {
    if (rows[i] < 0) continue;
    Out* out = dst + rows[i];
    const Acc* z = tile + i * kCols;
    if (contiguous) {
      if constexpr (std::is_same_v<Out, T>) {
        epilogue.store_row(z, out + cols[0], kCols);
      } else {
        for (int j = 0; j < kCols; ++j) out[cols[0] + j] = static_cast<Out>(z[j]);
      }
    } else {
      for (int j = 0; j < kCols; ++j) {
        if (cols[j] >= 0) out[cols[j]] = static_cast<Out>(z[j]);
      }
    }
  }
}

// Completes a tile that the micro-kernel wrote to `written`: scatters it from the accumulator
// buffer, or applies bias, residual and activation in place when it went straight to dst.
template <class Tile, typename Acc, typename T, typename Out>
void finish_tile(const TileDestination<Acc>& written, bool direct, const int64_t* rows,
                 const int64_t* cols, const Acc* bias, const TileEpilogue<Acc, T>& epilogue,
                 Out* dst) {
  if (direct) {
    if (epilogue.plain(bias)) return;
    if constexpr (std::is_same_v<T, Acc>) {  // always so: a direct tile has the output's type
      const T* residual = epilogue.residual != nullptr ? epilogue.residual + rows[0] + cols[0] : nullptr;
      epilogue.finish_in_place(written.data, written.row_stride, bias, epilogue.bias_on_rows, residual,
                               epilogue.activation);
      return;
    }
  }
  store_tile<Tile>(written.data, rows, cols, bias, epilogue, dst);  // the accumulator buffer, rows kCols apart
}

}  // namespace pointwise::cpu
