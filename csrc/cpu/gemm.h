// The channel GEMM shared by the three CPU ops: operand packing, the micro-kernel interface with
// its portable implementation, and the cache-blocked driver.
//
// Every op is C = A . B over channels and pixels. Both operands reach the micro-kernel as panels
// (the layouts below), packed from the tensors whatever their layout, or read in place where a
// tensor already has that shape; so one micro-kernel serves NCHW and NHWC, forward and backward,
// and only the offsets that packing reads from and the tile epilogue writes to differ.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "epilogue.h"

// fbgemm's transpose (AVX2 or AVX-512, chosen at run time), exported by libtorch_cpu where PyTorch is
// built with fbgemm (x86). Its header needs C++20, the standard torch 2.14 builds extensions with;
// without it, pack_panels transposes on its own.
#if defined(__has_include)
#if __has_include(<fbgemm/Utils.h>) && __cplusplus >= 202002L
#include <fbgemm/Utils.h>
#define POINTWISE_FBGEMM_TRANSPOSE 1
#endif
#endif

namespace pointwise::cpu {

// The tile of C a micro-kernel keeps in registers: kRows x kCols. Each ISA's kernel set
// (cpu/kernels.h) has its own.
template <int ROWS, int COLS>
struct RegisterTile {
  static constexpr int kRows = ROWS, kCols = COLS;
};

// Whether offsets[k] == offsets[0] + k * stride for every k, none negative.
inline bool evenly_spaced(const int64_t* offsets, int64_t n, int64_t stride) {
  if (n == 0 || offsets[0] < 0) return false;
  for (int64_t k = 1; k < n; ++k) {
    if (offsets[k] != offsets[0] + k * stride) return false;
  }
  return true;
}

inline bool unit_stride(const int64_t* offsets, int64_t n) { return evenly_spaced(offsets, n, 1); }

// Whether offsets[0..n) are all valid and consecutive in runs of 32 or more on average: NCHW pixels
// of two or more images (grad-weight's chunks of 14x14 and 7x7 maps), which pack_panels packs run
// by run as if each were unit stride.
inline bool in_long_runs(const int64_t* offsets, int64_t n) {
  constexpr int64_t kMinRun = 32;
  int64_t runs = 1;
  for (int64_t k = 0; k < n; ++k) {
    if (offsets[k] < 0) return false;
    runs += k > 0 && offsets[k] != offsets[k - 1] + 1;
  }
  return n >= runs * kMinRun;
}

// out[i] = in[i] for i < n, converted to P (the packed operands' element type).
template <typename T, typename P>
void convert(const T* in, int64_t n, P* out) {
  if constexpr (std::is_same_v<T, P>) {
    std::memcpy(out, in, n * sizeof(P));  // the loop below does not vectorise for float
  } else {
    for (int64_t i = 0; i < n; ++i) out[i] = static_cast<P>(in[i]);
  }
}

// Packed operands are panels of `Width` lines (rows of A or columns of B) over the full depth
// (the reduction); lines past the operand's end are zero-filled. Depth steps come in groups of
// kGroup: 1, or 2 for kernels that multiply pairs of 16-bit values at a time (AVX512-BF16's
// vdpbf16ps), whose two elements of a pair are adjacent; an odd depth is padded with a zero step.
// Element (line r, depth k) of panel p is at data[p * panel_stride + offset(r, k)], in one of
// three orders:
//  - interleaved, [panel][k / g][r][k % g]: each panel is one contiguous block, the best for B
//    panels that stay in L1 while many A panels pass (weights on the B side, backward_weight);
//  - depth-major, [k / g][panel][r][k % g]: a depth group of all panels is one contiguous run, so
//    NCHW pixels are packed by copying (or interleaving) each channel's run of pixels (B side);
//  - rows, [panel][r][k]: each line is contiguous, so NHWC pixels and weight rows are packed by
//    copying each line (for the A side, which the micro-kernel reads one broadcast at a time).
// Packing then reads and writes sequentially; the interleaved order for everything made packing
// up to 40% of a small layer's time.
template <typename P, int kGroup = 1>
struct Panels {
  static_assert(kGroup == 1 || kGroup == 2, "depth steps are single or in pairs");
  P* data = nullptr;
  int64_t count = 0;
  int64_t panel_stride = 0, line_stride = 0, depth_stride = 0;

  static int64_t grouped(int64_t depth) { return (depth + kGroup - 1) / kGroup * kGroup; }

  static Panels interleaved(P* data, int64_t count, int width, int64_t depth) {
    return {data, count, width * grouped(depth), kGroup, width};
  }
  static Panels depth_major(P* data, int64_t count, int width) {
    return {data, count, width * kGroup, kGroup, padded(count * width)};
  }
  static Panels rows(P* data, int64_t count, int width, int64_t depth) {
    const int64_t line_stride = padded(grouped(depth));
    return {data, count, width * line_stride, line_stride, 1};
  }
  // Panels read in place from `data`, lines line_stride apart, for an operand that needs no
  // packing (with pairs, only for an even depth). gemm_packed only reads its operands.
  static Panels in_place(const P* data, int64_t count, int width, int64_t line_stride) {
    return {const_cast<P*>(data), count, width * line_stride, line_stride, 1};
  }
  // Panels read in place from an operand whose lines are contiguous and whose depth steps are
  // depth_stride apart (NHWC channels over pixels): panel p starts width lines after panel p - 1.
  static Panels strided(const P* data, int64_t count, int width, int64_t depth_stride) {
    return {const_cast<P*>(data), count, width, 1, depth_stride};
  }
  // The A operand's order: rows when its source is contiguous along the depth (packing copies
  // lines) or the micro-kernel reads only rows (kernel_set.h's AInRows), interleaved otherwise.
  static Panels for_a(P* data, int64_t count, int width, int64_t depth, bool in_rows) {
    return in_rows ? rows(data, count, width, depth) : interleaved(data, count, width, depth);
  }
  // Values to allocate for `count` panels of up to `depth` steps, in any order.
  static int64_t capacity(int64_t count, int width, int64_t depth) {
    return (count * width + kLine) * (grouped(depth) + kLine);
  }
  // A stride of n values, padded to an odd number of cache lines when it is a whole even number:
  // runs an even number of lines apart share L1 sets (a 1 KiB stride uses 4 of the 64 sets) and
  // evict each other.
  static int64_t padded(int64_t n) { return n * sizeof(P) % 128 == 0 ? n + kLine : n; }
  static constexpr int64_t kLine = 64 / sizeof(P);

  // Where element (line r, depth k) of a panel is, from the panel's start.
  int64_t offset(int64_t r, int64_t k) const {
    return r * line_stride + (k - k % kGroup) * depth_stride + k % kGroup;
  }
  Panels from(int64_t first, int64_t n) const {
    return {data + first * panel_stride, n, panel_stride, line_stride, depth_stride};
  }
  // The start of depth step k (a multiple of kGroup) of a panel.
  const P* at(int64_t panel, int64_t k) const {
    return data + panel * panel_stride + k * depth_stride;
  }
};

// Packs out.count panels of Width lines: element (line r, depth k) of the operand is
// src[line_offset[r] + depth_offset[k]], converted to the packed type, or zero where either
// offset is negative (a padding pixel, a missing line). `depth_unit_stride` says that
// depth_offset[k] == depth_offset[0] + k for every k, all valid. With pairs, an odd depth gets a
// zero step after the last.
template <int Width, typename T, typename P, int kGroup>
void pack_panels(const Panels<P, kGroup>& out, const T* src, const int64_t* line_offset,
                 const int64_t* depth_offset, int64_t depth, bool depth_unit_stride) {
  const int64_t ls = out.line_stride, ds = out.depth_stride;
  if (depth == 0) return;
  const int64_t lines = out.count * Width;
  auto line_start = [&](int64_t line) { return out.data + line / Width * out.panel_stride + out.offset(line % Width, 0); };
  if (depth % kGroup != 0) {
    for (int64_t line = 0; line < lines; ++line) line_start(line)[out.offset(0, depth)] = P(0);
  }
  if (depth_unit_stride && ds == 1) {
    // Each line is contiguous in memory, and in the panels: copy it.
    for (int64_t line = 0; line < lines; ++line) {
      P* dst = line_start(line);
      if (line_offset[line] < 0) {
        std::fill(dst, dst + depth, P(0));
      } else {
        convert(src + line_offset[line] + depth_offset[0], depth, dst);
      }
    }
    return;
  }
  if (depth_unit_stride) {
    // Each line is contiguous in memory, the panels interleave them: a transpose (weights on the B
    // side, NCHW channels as grad-weight's B).
    for (int64_t p = 0; p < out.count; ++p) {
#ifdef POINTWISE_FBGEMM_TRANSPOSE
      if constexpr (std::is_same_v<P, float> && kGroup == 1) {
        // fbgemm's transpose takes the panel's leading lines where they are evenly spaced and the
        // rest missing (a weight's last panel); lines read side by side below, 4 KiB apart (1024
        // input channels or more), evict each other from L1: 3x slower on a 2048 x 1024 weight.
        // 16-bit lines are converted kConvertedSteps steps at a time into a float block, then
        // transposed: read side by side, 2048 bfloat16 steps took 38% of a 2048 -> 512 NHWC layer.
        const int64_t* lines = line_offset + p * Width;
        int present = 0;
        while (present < Width && lines[present] >= 0) ++present;
        const int64_t line_step = present > 1 ? lines[1] - lines[0] : 1;
        bool rest_missing = true;
        for (int r = present; r < Width; ++r) rest_missing = rest_missing && lines[r] < 0;
        if (ls == 1 && present > 0 && rest_missing && line_step > 0 && evenly_spaced(lines, present, line_step)) {
          P* panel = out.data + p * out.panel_stride;
          const T* first = src + lines[0] + depth_offset[0];
          if constexpr (std::is_same_v<T, float>) {
            fbgemm::transpose_simd<float>(present, depth, first, line_step, panel, ds);
          } else {
            constexpr int64_t kConvertedSteps = 256;
            float converted[Width * kConvertedSteps];
            for (int64_t k0 = 0; k0 < depth; k0 += kConvertedSteps) {
              const int64_t steps = std::min(kConvertedSteps, depth - k0);
              for (int r = 0; r < present; ++r) convert(first + r * line_step + k0, steps, converted + r * steps);
              fbgemm::transpose_simd<float>(present, steps, converted, steps, panel + k0 * ds, ds);
            }
          }
          if (present < Width) {
            for (int64_t k = 0; k < depth; ++k) std::fill(panel + k * ds + present, panel + k * ds + Width, P(0));
          }
          continue;
        }
      }
#endif
      // Read the panel's lines side by side, so that the writes are sequential. Line by line, each
      // write landed on another cache line, and packing a 48 x 1152 weight took longer than the
      // GEMM of a squeeze-excite layer.
      const T* in[Width];
      for (int r = 0; r < Width; ++r) {
        const int64_t o = line_offset[p * Width + r];
        in[r] = o < 0 ? nullptr : src + o + depth_offset[0];
      }
      P* panel = out.data + p * out.panel_stride;
      for (int64_t k = 0; k < depth; ++k) {
        P* dst = panel + out.offset(0, k);
        for (int r = 0; r < Width; ++r) dst[r * ls] = in[r] == nullptr ? P(0) : static_cast<P>(in[r][k]);
      }
    }
    return;
  }
  // Depth steps in long runs (in_long_runs): each run packed as one, copied or transposed by the
  // branches above rather than gathered step by step below.
  if constexpr (kGroup == 1) {
    if (in_long_runs(depth_offset, depth)) {
      for (int64_t k0 = 0; k0 < depth;) {
        int64_t k1 = k0 + 1;
        while (k1 < depth && depth_offset[k1] == depth_offset[k1 - 1] + 1) ++k1;
        Panels<P, kGroup> run = out;
        run.data = out.data + out.offset(0, k0);
        pack_panels<Width>(run, src, line_offset, depth_offset + k0, k1 - k0, true);
        k0 = k1;
      }
      return;
    }
  }
  // Lines are usually runs of consecutive pixels of one channel (NCHW). Depth steps go outermost
  // so that each channel is read as one long run across all panels: going panel by panel instead
  // interleaves `depth` streams of 64 bytes each, which the hardware prefetchers do not follow
  // (measured 3x slower on Zen 3).
  constexpr int64_t kPrefetchSteps = 4;
  const bool one_run = ls == kGroup && out.panel_stride == Width * kGroup && unit_stride(line_offset, lines);
  std::vector<char> contiguous(out.count);
  for (int64_t p = 0; p < out.count; ++p)
    contiguous[p] = unit_stride(line_offset + p * Width, Width);
  for (int64_t k = 0; k < depth; ++k) {
    if (one_run && depth_offset[k] >= 0) {
      const T* in = src + depth_offset[k] + line_offset[0];
      P* dst = out.data + out.offset(0, k);
      if constexpr (kGroup == 1) {
        convert(in, lines, dst);
      } else {
        for (int64_t i = 0; i < lines; ++i) dst[i * kGroup] = static_cast<P>(in[i]);
      }
      // A step's run is one task's pixels, too short for the hardware prefetcher to catch up:
      // fetch the run a few steps ahead (1.4x faster from DRAM).
      if (k + kPrefetchSteps < depth && depth_offset[k + kPrefetchSteps] >= 0) {
        const T* ahead = src + depth_offset[k + kPrefetchSteps] + line_offset[0];
        for (int64_t i = 0; i < lines; i += 64 / sizeof(T)) __builtin_prefetch(ahead + i, 0, 2);
      }
      continue;
    }
    for (int64_t p = 0; p < out.count; ++p) {
      P* dst = out.data + p * out.panel_stride + out.offset(0, k);
      const int64_t* panel_lines = line_offset + p * Width;
      if (depth_offset[k] < 0) {
        for (int r = 0; r < Width; ++r) dst[r * ls] = P(0);
      } else if (contiguous[p] && ls == 1) {
        convert(src + depth_offset[k] + panel_lines[0], Width, dst);
      } else {
        const T* in = src + depth_offset[k];
        for (int r = 0; r < Width; ++r) {
          dst[r * ls] = panel_lines[r] < 0 ? P(0) : static_cast<P>(in[panel_lines[r]]);
        }
      }
    }
  }
}

// The epilogue a micro-kernel applies to a tile it writes, while the sums are still in registers:
// c = act(sum + bias + residual) (epilogue.h), the bias per row of the tile or per column (this
// tile's first), the residual's rows as far apart as c's. Plain (nothing to add, no activation):
// the sums are stored as they are. Applied in a second pass over the written tile instead (AVX2
// EPYC, one thread, batch 2, best of 10 runs): 2.6-2.8 ms against 1.5-1.6 ms for a 16 -> 96
// channels_last layer with a bias.
template <typename Acc>
struct TileFinish {
  const Acc* bias = nullptr;
  bool bias_on_rows = false;
  const Acc* residual = nullptr;
  Activation activation = Activation::kNone;
  // The tile's rows are stored past the caches (non-temporal vector stores, each row whole 64-byte
  // lines), to an op's output, which the next op reads: no read for ownership of each line first
  // (a third of the memory traffic of a layer that writes more than it reads) and no eviction of
  // what is in cache. Layers alone, 2 threads of an AVX2 EPYC, medians of 4 processes each, time
  // streamed / stored: 16 -> 96 channels at 112x112 (batch 2) 0.96 channels_last, 0.87 NCHW, with
  // bias, residual and ReLU 0.95 and 0.94; 64 -> 256 at 56x56 0.92 and 0.86; 24 -> 144 at 56x56 and
  // 96 -> 576 at 14x14 0.96-0.98; 256 -> 64 at 56x56 1.00; stored, the channels_last layers also
  // took up to 1.9x as long in some processes. Whole fused models (batch 4 and 1, interleaved) and a
  // training step: 0.97-1.02, the next layer reading from memory what it found in cache before.
  bool stream = false;

  bool plain() const { return bias == nullptr && residual == nullptr && activation == Activation::kNone; }
};

// Fetches the cache lines that a micro-kernel's tile at c (rows row_stride apart) will read from its
// residual and, where its rows are a page or more apart, store to; every micro-kernel calls it before
// its depth loop, so that they arrive while it computes. A tile's rows are a pixel's channels a whole
// output row apart (NHWC) or a channel's pixels a plane apart (NCHW), and each tile waited for its
// residual's lines: with them fetched, bias + residual + ReLU took 0.88-0.93x the time on ResNet-50's
// channels_last layers from 56x56 to 14x14, and 0.7-0.9x in NCHW at 56x56 and 112x112 (batch 4, 2
// threads, an AVX2 EPYC, interleaved with the build without it). Stores are fetched only where the
// hardware prefetchers, which stay within a 4 KiB page, cannot bring their lines: fetched, a 16 -> 96
// channels_last layer at 112x112 took 1.1x the time, and NCHW layers with 56x56 planes 0.75-0.96x.
template <class Tile, typename Acc>
__attribute__((always_inline)) inline void prefetch_tile(const Acc* c, int64_t row_stride,
                                                         const TileFinish<Acc>* finish) {
  constexpr int64_t kRowBytes = Tile::kCols * sizeof(Acc);
  const Acc* residual = finish != nullptr ? finish->residual : nullptr;
  // Not for streamed stores (TileFinish::stream), which write a fetched line back to memory and evict
  // it: fetched, NCHW layers took 1.02-1.1x as long streamed as stored.
  const bool streamed = finish != nullptr && finish->stream;
  const bool fetch_stores = row_stride * static_cast<int64_t>(sizeof(Acc)) >= 4096 && !streamed;
  if (residual == nullptr && !fetch_stores) return;
#pragma GCC unroll 16
  for (int i = 0; i < Tile::kRows; ++i) {
#pragma GCC unroll 4
    for (int64_t byte = 0; byte < kRowBytes + 63; byte += 64) {
      const int64_t at = std::min(byte, kRowBytes - 1);  // ends at the row's last byte, whichever line it is in
      if (fetch_stores) __builtin_prefetch(reinterpret_cast<const char*>(c + i * row_stride) + at, 1, 3);
      if (residual != nullptr) __builtin_prefetch(reinterpret_cast<const char*>(residual + i * row_stride) + at, 0, 3);
    }
  }
}

// What a tile without a bias adds in its place: -0.0, which leaves every value as it is (x + -0.0
// is x, -0.0 and NaN included), so that the epilogue's loops have no bias or no-bias branch.
template <typename Acc>
struct NoBias {
  static constexpr int kCount = 64;  // at least any tile's rows and columns
  alignas(64) Acc values[kCount];
  constexpr NoBias() : values{} {
    for (Acc& value : values) value = Acc(-0.0);
  }
};
template <typename Acc>
inline constexpr NoBias<Acc> kNoBias{};

// put(i, v, act(z(i, v) + bias + residual(i, v))) for every vector v of every row i of a kRows x
// kCols tile that skip(i) keeps: the epilogue of epilogue.h in M's vectors, its bias per row or
// per column (null: none) and the residual (residual(i, v), where add_residual). The run-time
// choices are made once a tile, each combination a loop of its own: tested on every vector, they
// left the micro-kernel a branch and often a jump per store, and a 16 -> 96 channels_last layer at
// 112x112 took 1.6x as long with a bias and ReLU6 as without (AVX2 EPYC, batch 4, 2 threads).
// kUnrollRows: the row loop unrolled, for sums held in registers (z reads acc[i][v]); a loop over
// a tile in memory stays rolled, its constants loaded once rather than again in every row.
template <class M, class Tile, bool kUnrollRows, typename Acc, typename Z, typename Skip, typename Residual,
          typename Put>
__attribute__((always_inline)) inline void finish_tile(Z z, Skip skip, const Acc* bias, bool bias_on_rows,
                                                       bool add_residual, Residual residual, Activation activation,
                                                       Put put) {
  using V = typename M::V;
  constexpr int kRows = Tile::kRows, kLanes = M::kLanes, kVectors = Tile::kCols / kLanes;
  static_assert(kRows <= NoBias<Acc>::kCount && Tile::kCols <= NoBias<Acc>::kCount, "kNoBias covers the tile");
  static_assert(kLanes == 1 || kVectors <= 4, "the vector loop below unrolls a register tile's row whole");
  if (bias == nullptr) bias = kNoBias<Acc>.values;
  // always_inline: a lambda left out of line would be built for the baseline ISA (SiLU's and
  // GELU's were, in SSE).
  dispatch_activation(activation, [&](auto a) __attribute__((always_inline)) {
    dispatch_bool(add_residual, [&](auto with_residual) __attribute__((always_inline)) {
      dispatch_bool(bias_on_rows, [&](auto on_rows) __attribute__((always_inline)) {
        constexpr Activation A = decltype(a)::value;
        constexpr bool kResidual = decltype(with_residual)::value, kOnRows = decltype(on_rows)::value;
        V column_bias[kVectors];
#pragma GCC unroll 4
        for (int v = 0; v < kVectors; ++v) column_bias[v] = kOnRows ? M::splat(0) : M::load(bias + v * kLanes);
        auto finish_row = [&](int i) __attribute__((always_inline)) {
          if (skip(i)) return;
          const Acc row_bias = kOnRows ? bias[i] : Acc(0);  // a scalar operand (vec.h)
#pragma GCC unroll 4  // a register tile's row whole; the portable kernels' scalars 4 at a time
          for (int v = 0; v < kVectors; ++v) {
            const V r = kResidual ? residual(i, v) : M::splat(0);
            put(i, v, kOnRows ? epilogue_value<A, M>(z(i, v), true, row_bias, kResidual, r)
                              : epilogue_value<A, M>(z(i, v), true, column_bias[v], kResidual, r));
          }
        };
        if constexpr (kUnrollRows) {
#pragma GCC unroll 16
          for (int i = 0; i < kRows; ++i) finish_row(i);
        } else {
#pragma GCC unroll 1
          for (int i = 0; i < kRows; ++i) finish_row(i);
        }
      });
    });
  });
}

// Stores the kRows x kCols sums held in M's vectors (acc[i][v]: row i, lanes v * M::kLanes on) to
// c, rows row_stride apart, finished by `finish` (null: plain): first every vector finished, then
// every one stored, streamed or not, in a loop of its own. Every micro-kernel ends with it; always
// inlined into the kernel set's function, whose target attribute M's arithmetic needs.
template <class M, class Tile, typename Acc>
__attribute__((always_inline)) inline void store_finished(
    const typename M::V (&acc)[Tile::kRows][Tile::kCols / M::kLanes], Acc* c, int64_t row_stride,
    const TileFinish<Acc>* finish) {
  using V = typename M::V;
  constexpr int kRows = Tile::kRows, kLanes = M::kLanes, kVectors = Tile::kCols / kLanes;
  // Plain sums pass through `out` too: stored straight from acc in a loop of their own, layers took
  // 1.01-1.04x as long (AVX2 EPYC, separate processes alternated).
  V out[kRows][kVectors];
  if (finish == nullptr || finish->plain()) {
#pragma GCC unroll 16
    for (int i = 0; i < kRows; ++i) {
#pragma GCC unroll 16
      for (int v = 0; v < kVectors; ++v) out[i][v] = acc[i][v];
    }
  } else {
    const Acc* residual = finish->residual;
    finish_tile<M, Tile, true>(
        [&](int i, int v) __attribute__((always_inline)) { return acc[i][v]; },
        [](int) __attribute__((always_inline)) { return false; }, finish->bias, finish->bias_on_rows,
        residual != nullptr,
        [&](int i, int v) __attribute__((always_inline)) { return M::load(residual + i * row_stride + v * kLanes); },
        finish->activation, [&](int i, int v, V value) __attribute__((always_inline)) { out[i][v] = value; });
  }
  if constexpr (kLanes > 1) {  // scalars (the portable kernels) are only stored
    if (finish != nullptr && finish->stream) {
#pragma GCC unroll 16
      for (int i = 0; i < kRows; ++i) {
#pragma GCC unroll 16
        for (int v = 0; v < kVectors; ++v) M::stream(c + i * row_stride + v * kLanes, out[i][v]);
      }
      return;
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < kRows; ++i) {
#pragma GCC unroll 16
    for (int v = 0; v < kVectors; ++v) M::store(c + i * row_stride + v * kLanes, out[i][v]);
  }
}

// c[i * c_row_stride + j] = partial[i * kCols + j] + sum over `depth` steps of A(i, k) * B(j, k)
// for the kRows x kCols tile, finished by `finish` (TileFinish; null: plain) as it is stored; a
// null `partial` counts as zeros. The panels are as Panels<P, g>
// lays them out: A's element (i, k) at a[i * a_line_stride + k * a_depth_stride] for single steps;
// B's lines contiguous, element (j, k) at b[j + k * b_depth_stride]; with pairs (g = 2), the pair
// of steps k, k + 1 (k even) of A's line i at a[i * a_line_stride + k * a_depth_stride + {0, 1}]
// and of B's line j at b[k * b_depth_stride + 2 j + {0, 1}], and an odd depth includes the zero
// step after it. c is the accumulator buffer (row stride kCols) or, for a finished tile, possibly
// the destination tensor itself. partial may equal c.
// Implementations: micro_kernel_portable below, and one in each ISA's kernel file.
template <typename P, typename Acc = P>
using MicroKernel = void (*)(int64_t depth, const P* a, int64_t a_line_stride,
                             int64_t a_depth_stride, const P* b, int64_t b_depth_stride,
                             const Acc* partial, Acc* c, int64_t c_row_stride, const TileFinish<Acc>* finish);

// Plain loops; the compiler vectorises the column loop for the baseline ISA.
template <typename Acc, class Tile>
void micro_kernel_portable(int64_t depth, const Acc* a, int64_t a_line_stride,
                           int64_t a_depth_stride, const Acc* b, int64_t b_depth_stride,
                           const Acc* partial, Acc* c, int64_t c_row_stride, const TileFinish<Acc>* finish) {
  constexpr int kRows = Tile::kRows, kCols = Tile::kCols;
  Acc acc[kRows][kCols];
  for (int i = 0; i < kRows; ++i) {
    for (int j = 0; j < kCols; ++j)
      acc[i][j] = partial != nullptr ? partial[i * kCols + j] : Acc(0);
  }
  prefetch_tile<Tile>(c, c_row_stride, finish);
  for (int64_t k = 0; k < depth; ++k) {
    for (int i = 0; i < kRows; ++i) {
      const Acc a_i = a[i * a_line_stride];
      for (int j = 0; j < kCols; ++j) acc[i][j] += a_i * b[j];
    }
    a += a_depth_stride;
    b += b_depth_stride;
  }
  store_finished<ScalarMath<Acc>, Tile>(acc, c, c_row_stride, finish);
}

// Where the micro-kernel writes a finished tile: rows `row_stride` apart from `data`, finished by
// `finish` on the way; or, with a null `data`, the accumulator buffer, plain.
template <typename Acc>
struct TileDestination {
  Acc* data = nullptr;
  int64_t row_stride = 0;
  TileFinish<Acc> finish;
};

// Cache blocking of a kernel set whose register tile is Tile, sized for 32 KiB of L1d and 512 KiB
// of L2 per core (Zen 3, Skylake and later) with a 6 x 64-byte tile:
//  - kDepth steps of one B panel (16 KiB) stay in L1 while every A panel of the block streams past;
//  - an A block of kRowPanels panels over kDepth steps (144 KiB) stays in L2 across the B panels;
//  - kColPanels bounds the B panels that share one pass over the A block, and so the accumulator
//    buffer that carries tiles from one depth block to the next.
template <typename Acc, class Tile, int64_t DEPTH = 1024 / sizeof(Acc), int64_t ROW_PANELS = 24,
          int64_t COL_PANELS = 16>
struct Blocking {
  static constexpr int64_t kDepth = DEPTH;
  static constexpr int64_t kRowPanels = ROW_PANELS;
  static constexpr int64_t kColPanels = COL_PANELS;
  static constexpr int64_t kAccumulatorSize = kRowPanels * kColPanels * Tile::kRows * Tile::kCols;
};

// What a kernel set K does around each GEMM: K::GemmScope, constructed before its first tile and
// destroyed after its last, where K has one (AMX configures its tile registers and releases them);
// nothing otherwise.
template <class K, class = void>
struct GemmScopeOf {
  struct type {};
};
template <class K>
struct GemmScopeOf<K, std::void_t<typename K::GemmScope>> {
  using type = typename K::GemmScope;
};

// No initial values: the sums start from zero (see gemm_packed).
struct FromZero {
  template <typename Acc>
  void operator()(int64_t, int64_t, Acc*) const {}
};

// The order in which gemm_packed runs the tiles of a block of C. Down the columns: each B panel
// against every A panel in turn, B's panel staying in L1. Along the rows: each A panel against
// every B panel, for destinations whose rows are pages apart (NCHW output planes), where down a
// column the tiles store one cache line to each of as many rows, more streams than the hardware
// prefetchers follow, and along a row a few rows line after line; it pays only where B's whole
// block stays in L1, as it is read again for each A panel. Measured on NCHW float32 layers, batch
// 4, 2 threads, an AVX2 Zen 2 EPYC, interleaved call by call, time along the rows / down the
// columns: 16 -> 96 channels at 112x112 0.59-0.76 (batch 1 and 4), with bias, residual and ReLU
// 0.50; 24 -> 144 at 56x56 0.66-0.90; 32 -> 16 at 112x112 1.01 (3 row panels); bfloat16 0.96 and
// 0.98. With deeper reductions, whose B blocks leave L1: 64 -> 256 at 56x56 0.91-1.07, 256 -> 64
// and 256 -> 128 1.03-1.04; with planes under a page (28x28 and less) 0.96-1.03 (128 -> 512 at
// 28x28 read 0.75 once, in a slower state of the machine, and 0.97 in the next run); NHWC, whose
// rows are a pixel's channels, close together, 0.97-1.35.
enum class TileOrder { kDownColumns, kAlongRows };

// C = A . B for packed operands, with the micro-kernel and blocking of kernel set K (cpu/kernels.h):
// a holds panels of K::Tile::kRows lines, b panels of K::Tile::kCols contiguous lines (not in
// rows), each over the full `depth`. For each tile of C, once its sum is complete, the micro-kernel
// writes it to destination(a_panel, b_panel) (see TileDestination: finished there as its
// TileFinish says) and then finish(written, direct, a_panel, b_panel) runs: `written` is where the
// tile went, `direct` whether that is the destination rather than the accumulator buffer. A tile's sum starts from
// zero or, with an `initial` other than FromZero, from the values initial(a_panel, b_panel, tile)
// writes into `tile` (kCols apart): how a long reduction goes on from where an earlier call left
// its partial sums. `accumulators` holds K::Blocking::kAccumulatorSize values. `order` is the order
// of the tiles within each block of C.
//
// The order of the sums does not depend on anything but the operand sizes, so results are
// reproducible bit for bit for a given micro-kernel, in either order of the tiles.
template <class K, typename P, int kGroup, typename Acc, typename Destination, typename Finish,
          typename Initial = FromZero>
void gemm_packed(const Panels<P, kGroup>& a, const Panels<P, kGroup>& b, int64_t depth, Acc* accumulators,
                 const Destination& destination, const Finish& finish, TileOrder order,
                 const Initial& initial = {}) {
  constexpr bool kFromZero = std::is_same_v<Initial, FromZero>;
  using Block = typename K::Blocking;
  static_assert(Block::kDepth % kGroup == 0, "depth blocks hold whole groups of steps");
  constexpr int64_t kCols = K::Tile::kCols;
  constexpr int64_t kTileSize = K::Tile::kRows * kCols;
  // With a single depth block each tile is finished at once, so one slot of the buffer serves all
  // tiles and stays in L1. An empty reduction still runs one block, to write zero tiles.
  const bool single_depth_block = depth <= Block::kDepth;
  const int64_t depth_blocks = std::max<int64_t>(1, (depth + Block::kDepth - 1) / Block::kDepth);
  [[maybe_unused]] const typename GemmScopeOf<K>::type scope;
  for (int64_t a0 = 0; a0 < a.count; a0 += Block::kRowPanels) {
    const int64_t a1 = std::min(a.count, a0 + Block::kRowPanels);
    for (int64_t b0 = 0; b0 < b.count; b0 += Block::kColPanels) {
      const int64_t b1 = std::min(b.count, b0 + Block::kColPanels);
      for (int64_t kb = 0; kb < depth_blocks; ++kb) {
        const int64_t k0 = kb * Block::kDepth, steps = std::min(Block::kDepth, depth - k0);
        const bool last = kb + 1 == depth_blocks;
        auto tile = [&](int64_t ap, int64_t bp) __attribute__((always_inline)) {
          Acc* buffered =
              single_depth_block
                  ? accumulators
                  : accumulators + ((bp - b0) * Block::kRowPanels + (ap - a0)) * kTileSize;
          TileDestination<Acc> out;
          if (last) out = destination(ap, bp);
          const bool direct = out.data != nullptr;
          if (!direct) out = {buffered, kCols};
          if (!kFromZero && kb == 0) initial(ap, bp, buffered);
          K::micro_kernel(steps, a.at(ap, k0), a.line_stride, a.depth_stride, b.at(bp, k0),
                          b.depth_stride, kb > 0 || !kFromZero ? buffered : nullptr, out.data, out.row_stride,
                          &out.finish);
          if (last) finish(out, direct, ap, bp);
        };
        if (order == TileOrder::kAlongRows) {
          for (int64_t ap = a0; ap < a1; ++ap) {
            for (int64_t bp = b0; bp < b1; ++bp) tile(ap, bp);
          }
        } else {
          for (int64_t bp = b0; bp < b1; ++bp) {
            for (int64_t ap = a0; ap < a1; ++ap) tile(ap, bp);
          }
        }
      }
    }
  }
}

}  // namespace pointwise::cpu
