// What happens to a finished tile of C: bias, residual and activation, conversion to the output
// type, and the store through per-row and per-column offsets.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "conv_args.h"
#include "cpu/gemm.h"

namespace pointwise::cpu {

// Applies the activation to z[0..n) in place.
template <typename Acc>
using ActivationKernel = void (*)(Acc* z, int64_t n, Activation activation);

// Scalar reference forms, also the fallback; avx2_kernels.cpp has the vectorised float version.
// The comparisons are written so that NaN passes through, as torch's activations do.
template <typename Acc>
void activate_portable(Acc* z, int64_t n, Activation activation) {
  switch (activation) {
    case Activation::kNone:
      return;
    case Activation::kReLU:
      for (int64_t i = 0; i < n; ++i) z[i] = z[i] < Acc(0) ? Acc(0) : z[i];
      return;
    case Activation::kReLU6:
      for (int64_t i = 0; i < n; ++i)
        z[i] = z[i] < Acc(0) ? Acc(0) : (z[i] > Acc(6) ? Acc(6) : z[i]);
      return;
    case Activation::kSiLU:
      for (int64_t i = 0; i < n; ++i) z[i] = z[i] / (Acc(1) + std::exp(-z[i]));
      return;
    case Activation::kGELU:
      for (int64_t i = 0; i < n; ++i) {
        z[i] = Acc(0.5) * z[i] * (Acc(1) + std::erf(z[i] * Acc(M_SQRT1_2)));
      }
      return;
  }
}

// Finishes a kRows x kCols tile that the micro-kernel wrote straight into the destination (rows
// row_stride apart, columns contiguous): tile = act(tile + bias + residual) in place, the residual
// laid out like the tile and the bias per row or per column (null: none). One pass while the
// tile is still in L1, in registers: through store_tile it cost more than the GEMM itself for
// short reductions (2 cycles an element against ~1 at K = 16).
template <typename Acc>
using InPlaceFinisher = void (*)(Acc* tile, int64_t row_stride, const Acc* bias, bool bias_on_rows,
                                 const Acc* residual, Activation activation);

// What is added to a tile before the activation: a bias, given per tile and indexed by the
// tile's rows or columns, whichever are channels, and a residual at the destination's offsets.
template <typename Acc, typename T>
struct TileEpilogue {
  bool bias_on_rows = false;
  const T* residual = nullptr;
  Activation activation = Activation::kNone;
  ActivationKernel<Acc> activate = nullptr;
  InPlaceFinisher<Acc> finish_in_place = nullptr;  // where the CPU has one (AVX2, float)
};

// The destination of a tile whose elements go to dst[rows[i] + cols[j]], for the micro-kernel to
// write straight into: possible when the destination has the accumulation type, every row and
// column is inside it (no negative offset), the columns are contiguous and the rows evenly
// spaced. Otherwise null: the tile goes through the accumulator buffer and store_tile.
template <typename Acc, typename Out>
TileDestination<Acc> direct_destination(Out* dst, const int64_t* rows, const int64_t* cols) {
  constexpr int kRows = TileShape<Acc>::kRows, kCols = TileShape<Acc>::kCols;
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
// this tile's first row and column. The tile may be the destination itself (in place).
template <typename Acc, typename T, typename Out>
void store_tile(const Acc* tile, int64_t tile_stride, const int64_t* rows, const int64_t* cols,
                const Acc* bias, const TileEpilogue<Acc, T>& epilogue, Out* dst) {
  constexpr int kRows = TileShape<Acc>::kRows, kCols = TileShape<Acc>::kCols;
  // Columns are usually one contiguous run (pixels of one image, or channels of NHWC); the loops
  // then vectorise. Otherwise they cross an image, the padding or the end of the operand.
  const bool contiguous = unit_stride(cols, kCols);
  // The whole tile goes through z, so that the activation runs once per tile: per row, the call
  // overhead made SiLU cost twice as much.
  Acc z[kRows][kCols];
  for (int i = 0; i < kRows; ++i) {
    for (int j = 0; j < kCols; ++j) z[i][j] = tile[i * tile_stride + j];
    if (bias != nullptr) {
      for (int j = 0; j < kCols; ++j) z[i][j] += epilogue.bias_on_rows ? bias[i] : bias[j];
    }
    if (rows[i] < 0 || epilogue.residual == nullptr) continue;
    const T* residual = epilogue.residual + rows[i];
    if (contiguous) {
      for (int j = 0; j < kCols; ++j) z[i][j] += static_cast<Acc>(residual[cols[0] + j]);
    } else {
      for (int j = 0; j < kCols; ++j) {
        if (cols[j] >= 0) z[i][j] += static_cast<Acc>(residual[cols[j]]);
      }
    }
  }
  if (epilogue.activation != Activation::kNone) {
    epilogue.activate(&z[0][0], kRows * kCols, epilogue.activation);
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
template <typename Acc, typename T, typename Out>
void finish_tile(const TileDestination<Acc>& written, bool direct, const int64_t* rows,
                 const int64_t* cols, const Acc* bias, const TileEpilogue<Acc, T>& epilogue,
                 Out* dst) {
  const bool plain =
      bias == nullptr && epilogue.residual == nullptr && epilogue.activation == Activation::kNone;
  if (direct && plain) return;
  if constexpr (std::is_same_v<T, Acc>) {
    if (direct && epilogue.finish_in_place != nullptr) {
      const T* residual = epilogue.residual != nullptr ? epilogue.residual + rows[0] + cols[0] : nullptr;
      epilogue.finish_in_place(written.data, written.row_stride, bias, epilogue.bias_on_rows, residual,
                               epilogue.activation);
      return;
    }
  }
  store_tile(written.data, written.row_stride, rows, cols, bias, epilogue, dst);
}

}  // namespace pointwise::cpu
