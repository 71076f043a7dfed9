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
// column (null: none): for tiles the micro-kernel wrote to the accumulator buffer (store_tile).
// Each kernel set has one (cpu/kernels.h), finish_in_place below in its own vectors.
template <typename Acc>
using InPlaceFinisher = void (*)(Acc* tile, int64_t row_stride, const Acc* bias, bool bias_on_rows,
                                 const Acc* residual, Activation activation);

// The InPlaceFinisher in M's vectors: the tile loaded into them and stored as a micro-kernel
// stores its sums (gemm.h's store_finished), so the two round alike.
template <class M, class Tile, typename Acc>
__attribute__((always_inline)) inline void finish_in_place(Acc* tile, int64_t row_stride, const Acc* bias,
                                                           bool bias_on_rows, const Acc* residual,
                                                           Activation activation) {
  constexpr int kLanes = M::kLanes, kVectors = Tile::kCols / kLanes;
  static_assert(Tile::kCols % kLanes == 0, "a tile row is a whole number of vectors");
  typename M::V z[Tile::kRows][kVectors];
  for (int i = 0; i < Tile::kRows; ++i) {
    for (int v = 0; v < kVectors; ++v) z[i][v] = M::load(tile + i * row_stride + v * kLanes);
  }
  const TileFinish<Acc> finish{bias, bias_on_rows, residual, activation};
  store_finished<M, Tile>(z, tile, row_stride, &finish);
}

// A finished tile stored to a 16-bit output (bfloat16, float16) whose columns are contiguous, in
// one pass from the accumulator buffer: dst[rows[i] + col0 + j] = act(tile[i * kCols + j] + bias +
// residual[rows[i] + col0 + j]) converted to Out, rows with a negative offset skipped, bias as in
// finish_in_place. Each kernel set has one per 16-bit type (cpu/kernels.h). Finishing the buffer in
// place, gathering the residual and converting each row in a call of its own took three passes
// and two calls a row: on an AVX2 EPYC (batch 4, 2 threads, best of 5 runs) a 16 -> 96 layer with
// bias, residual and ReLU took 3.55 ms that way in bfloat16 and 2.40 ms in one pass (float16:
// 5.57 and 2.91).
template <typename Acc, typename Out>
using ContiguousStore = void (*)(const Acc* tile, const int64_t* rows, int64_t col0, const Acc* bias,
                                 bool bias_on_rows, const Out* residual, Activation activation, Out* dst);

// The conversions of store_contiguous for ScalarMath<Acc>: one value, converted as c10 converts it.
template <typename Acc, typename Out>
struct ScalarConversion {
  static Acc load(const Out* p) { return static_cast<Acc>(*p); }
  static void store(Out* p, Acc v) { *p = static_cast<Out>(v); }
};

// The ContiguousStore in M's vectors, Convert loading and storing M::kLanes values of Out as one
// vector of M (load(const Out*) -> M::V, store(Out*, M::V)). Always inlined into the kernel set's
// function, whose target attribute Convert's intrinsics need.
template <class M, class Tile, class Convert, typename Acc, typename Out>
__attribute__((always_inline)) inline void store_contiguous(const Acc* tile, const int64_t* rows, int64_t col0,
                                                            const Acc* bias, bool bias_on_rows, const Out* residual,
                                                            Activation activation, Out* dst) {
  using V = typename M::V;
  constexpr int kLanes = M::kLanes;
  static_assert(Tile::kCols % kLanes == 0, "a tile row is a whole number of vectors");
  finish_tile<M, Tile, false>(
      [&](int i, int v) __attribute__((always_inline)) { return M::load(tile + i * Tile::kCols + v * kLanes); },
      [&](int i) __attribute__((always_inline)) { return rows[i] < 0; }, bias, bias_on_rows, residual != nullptr,
      [&](int i, int v) __attribute__((always_inline)) {
        return Convert::load(residual + rows[i] + col0 + v * kLanes);
      },
      activation,
      [&](int i, int v, V value) __attribute__((always_inline)) {
        Convert::store(dst + rows[i] + col0 + v * kLanes, value);
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
  ContiguousStore<Acc, T> store_contiguous = nullptr;  // the kernel set's, where T is not Acc
  bool stream = false;  // tiles written straight to dst stream there (TileFinish::stream), where they can

  bool plain(const Acc* bias) const {
    return bias == nullptr && residual == nullptr && activation == Activation::kNone;
  }
};

// A tile's column offsets, and how many of them from the first are one contiguous run
// (offsets[j] == offsets[0] + j) after which every offset is negative: all of them when the columns
// are one run (pixels of one image, or channels of NHWC), fewer in the last panel of an operand
// padded to whole panels, whose real columns are then copied by loops the compiler vectorises
// (stored one by one, the 20 channels a group of a 240 -> 60 channels_last layer in 3 groups, on
// 24-column tiles, took 1.3x as long on an AVX2 EPYC); 0 when the columns cross an image or the
// padding, and are stored one by one. Decided once per panel of columns by the drivers
// (contiguous_runs): checked for every tile, it took 15% of a 16 -> 96 channels_last layer (a
// profile on an AVX-512 EPYC).
struct TileColumns {
  const int64_t* offsets = nullptr;
  int run = 0;
};

// run[p] = TileColumns::run of panel p of `width` columns at offsets + p * width.
inline void contiguous_runs(const int64_t* offsets, int64_t panels, int width, int* run) {
  for (int64_t p = 0; p < panels; ++p) {
    const int64_t* panel = offsets + p * width;
    int length = 0;
    while (length < width && panel[length] >= 0 && panel[length] == panel[0] + length) ++length;
    bool padded = true;
    for (int j = length; j < width; ++j) padded = padded && panel[j] < 0;
    run[p] = padded ? length : 0;
  }
}

// The destination of a Tile-sized tile whose elements go to dst[rows[i] + cols[j]], for the
// micro-kernel to write straight into and finish on the way (bias: this tile's first row's or
// column's): possible when the destination has the accumulation type, every row and column is
// inside it (no negative offset), the columns are contiguous and the rows evenly spaced. Otherwise
// null: the tile goes through the accumulator buffer and store_tile. Always inlined: called for
// every tile, and out of line its result came back through memory, where the caller's wide reloads
// of fields written one by one waited for the stores (a third of a 16 -> 96 channels_last layer).
template <class Tile, typename Acc, typename T, typename Out>
__attribute__((always_inline)) inline TileDestination<Acc> direct_destination(Out* dst, const int64_t* rows,
                                                                              const TileColumns& cols, const Acc* bias,
                                                                              const TileEpilogue<Acc, T>& epilogue) {
  constexpr int kRows = Tile::kRows, kCols = Tile::kCols;
  if constexpr (std::is_same_v<Out, Acc>) {
    const int64_t row_stride = rows[1] - rows[0];
    if (cols.run != kCols || row_stride < kCols || !evenly_spaced(rows, kRows, row_stride)) return {};
    const int64_t first = rows[0] + cols.offsets[0];
    const Acc* residual = nullptr;
    if constexpr (std::is_same_v<T, Acc>) {
      if (epilogue.residual != nullptr) residual = epilogue.residual + first;
    } else if (epilogue.residual != nullptr) {
      return {};  // a residual of another type than the destination's: store_tile converts it
    }
    // Streamed where each row of the tile is whole cache lines (so none is written in part, the rest
    // later and stored), which also aligns every vector.
    constexpr uintptr_t kLine = 64;
    const bool stream = epilogue.stream && kCols * sizeof(Acc) % kLine == 0 &&
                        reinterpret_cast<uintptr_t>(dst + first) % kLine == 0 && row_stride * sizeof(Acc) % kLine == 0;
    return {dst + first, row_stride, {bias, epilogue.bias_on_rows, residual, epilogue.activation, stream}};
  } else {
    return {};
  }
}

// dst[rows[i] + cols[j]] = act(tile[i * kCols + j] + bias + residual[rows[i] + cols[j]]) for the
// tile's rows and columns whose offsets are not negative, finishing the tile in place on the way
// (it is the accumulator buffer, not read again). bias and the offsets point at this tile's first
// row and column.
template <class Tile, typename Acc, typename T, typename Out>
void store_tile(Acc* tile, const int64_t* rows, const TileColumns& columns, const Acc* bias,
                const TileEpilogue<Acc, T>& epilogue, Out* dst) {
  constexpr int kRows = Tile::kRows, kCols = Tile::kCols;
  const int64_t* cols = columns.offsets;
  const int run = columns.run;
  if constexpr (std::is_same_v<Out, T> && !std::is_same_v<T, Acc>) {
    if (run == kCols) {
      epilogue.store_contiguous(tile, rows, cols[0], bias, epilogue.bias_on_rows, epilogue.residual,
                                epilogue.activation, dst);
      return;
    }
  }
  if (!epilogue.plain(bias)) {
    // The residual is gathered into a buffer laid out as the tile, for one finishing call.
    alignas(64) Acc r[kRows][kCols];
    if (epilogue.residual != nullptr) {
      for (int i = 0; i < kRows; ++i) {
        const T* residual = epilogue.residual + rows[i];
        if (rows[i] < 0) {
          for (int j = 0; j < kCols; ++j) r[i][j] = Acc(0);
        } else if (run > 0) {
          for (int j = 0; j < run; ++j) r[i][j] = static_cast<Acc>(residual[cols[0] + j]);
          for (int j = run; j < kCols; ++j) r[i][j] = Acc(0);
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
    if (run > 0) {
      for (int j = 0; j < run; ++j) out[cols[0] + j] = static_cast<Out>(z[j]);
    } else {
      for (int j = 0; j < kCols; ++j) {
        if (cols[j] >= 0) out[cols[j]] = static_cast<Out>(z[j]);
      }
    }
  }
}

// Completes a tile that the micro-kernel wrote to `written`: scatters it from the accumulator
// buffer; one that went straight to dst was finished there (direct_destination).
template <class Tile, typename Acc, typename T, typename Out>
void finish_tile(const TileDestination<Acc>& written, bool direct, const int64_t* rows,
                 const TileColumns& cols, const Acc* bias, const TileEpilogue<Acc, T>& epilogue,
                 Out* dst) {
  if (direct) return;
  store_tile<Tile>(written.data, rows, cols, bias, epilogue, dst);  // the accumulator buffer, rows kCols apart
}

}  // namespace pointwise::cpu
