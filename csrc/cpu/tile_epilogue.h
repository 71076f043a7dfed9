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
    const V row_bias = add_bias && bias_on_rows ? M::splat(bias[i]) : M::splat(0);
    for (int v = 0; v < kVectors; ++v) {
      const V b = bias_on_rows ? row_bias : column_bias[v];
      const V r = add_residual ? M::load(residual + i * row_stride + v * kLanes) : M::splat(0);
      M::store(row + v * kLanes, epilogue_value<A, M>(M::load(row + v * kLanes), add_bias, b, add_residual, r));
    }
  }
}

// finish_in_place for a run-time activation.
template <class M, class Tile, typename Acc>
POINTWISE_HOST_DEVICE void finish_in_place(Acc* tile, int64_t row_stride, const Acc* bias, bool bias_on_rows,
                                           const Acc* residual, Activation activation) {
  dispatch_activation(activation, [&](auto a) {
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

// dst[rows[i] + cols[j]] = act(tile[i * tile_stride + j] + bias + residual[rows[i] + cols[j]])
// for the tile's rows and columns whose offsets are not negative. bias and the offsets point at
// this tile's first row and column.
template <class Tile, typename Acc, typename T, typename Out>
void store_tile(const Acc* tile, int64_t tile_stride, const int64_t* rows, const int64_t* cols,
                const Acc* bias, const TileEpilogue<Acc, T>& epilogue, Out* dst) {
  constexpr int kRows = Tile::kRows, kCols = Tile::kCols;
  // Columns are usually one contiguous run (pixels of one image, or channels of NHWC); the loops
  // then vectorise. Otherwise they cross an image, the padding or the end of the operand.
  const bool contiguous = unit_stride(cols, kCols);
  // The tile and its residual go through buffers laid out alike, finished in one call.
  alignas(64) Acc z[kRows][kCols];
  alignas(64) Acc r[kRows][kCols];
  for (int i = 0; i < kRows; ++i) {
    for (int j = 0; j < kCols; ++j) z[i][j] = tile[i * tile_stride + j];
  }
  if (!epilogue.plain(bias)) {
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
    epilogue.finish_in_place(&z[0][0], kCols, bias, epilogue.bias_on_rows,
                             epilogue.residual != nullptr ? &r[0][0] : nullptr, epilogue.activation);
  }
  for (int i = 0; i < kRows; ++i) {
    if (rows[i] < 0) continue;
    Out* out = dst + rows[i];
    if (contiguous) {
      for (int j = 0; j < kCols; ++j) out[cols[0] + j] = static_cast<Out>(z[i][j]);
    } else {
      for (int j = 0; j < kCols; ++j) {
        if (cols[j] >= 0) out[cols[j]] = static_cast<Out>(z[i][j]);
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
  store_tile<Tile>(written.data, written.row_stride, rows, cols, bias, epilogue, dst);
}

}  // namespace pointwise::cpu
