// One channel GEMM, C[m, n] = sum_k A[m, k] * B[k, n] per group, described as plain data so that
// the host code (conv_gemm.cpp and its planning, compiled without nvcc) and the kernels (gemm.cuh)
// share it.
//
// Every operand dimension is either a channel dimension (offset = index * stride) or a pixel
// dimension spanning all images of the batch (index = image * pixels + pixel of the GEMM's grid),
// optionally mapped onto another grid by a stride and padding: that is how the forward gathers
// strided input pixels, grad-input scatters to them, and padding reads as zeros.
#pragma once

#include <cstdint>

#include "epilogue.h"

namespace pointwise::cuda {

struct DimIndex {
  int64_t stride = 0;        // elements per channel, or per pixel of a pixel dimension
  int64_t image_stride = 0;  // pixel dimensions: elements per image
  int32_t pixels = 0;        // pixel dimensions: pixels per image of the GEMM's grid; 0 for channels
  int32_t grid_w = 1;        // the GEMM grid's width (pixel dimensions)
  bool mapped = false;       // GEMM pixel (oh, ow) -> tensor pixel (oh*step_h - pad_h, ow*step_w - pad_w)
  int32_t step_h = 1, step_w = 1, pad_h = 0, pad_w = 0;
  int32_t h = 0, w = 0;  // the tensor's own grid, for mapped dimensions

  // Element offset of index i, or -1 where a mapped pixel falls in the padding.
  POINTWISE_HOST_DEVICE int64_t offset(int32_t i) const {
    if (pixels == 0) return int64_t(i) * stride;
    const int32_t image = i / pixels;
    const int32_t q = i - image * pixels;
    if (!mapped) return int64_t(image) * image_stride + int64_t(q) * stride;
    const int32_t oh = q / grid_w, ow = q - oh * grid_w;
    const int32_t ih = oh * step_h - pad_h, iw = ow * step_w - pad_w;
    if (ih < 0 || ih >= h || iw < 0 || iw >= w) return -1;
    return int64_t(image) * image_stride + (int64_t(ih) * w + iw) * stride;
  }
};

struct GemmOperand {
  const void* data = nullptr;
  int64_t group_stride = 0;  // elements between consecutive groups
  DimIndex rows, cols;       // A: (m, k); B: (k, n); C: (m, n)
  // The contiguous dimension may be read/written as 16-byte vectors: aligned, extent and strides
  // multiples of the vector, and no pixel map on it (checked on the host, conv_gemm.cpp).
  bool vectorized = false;
  // Where not vectorized, 16-bit elements may be read as 4-byte pairs on the same terms (an NCHW
  // image of 14x14 or 190x190 pixels: an even count, not a multiple of 8), by cp.async like vectors.
  bool paired = false;
};

// How the tiles are multiplied: exact FMA (fp32, fp64), TF32 tensor cores for fp32, or
// 16-bit tensor cores (bf16, fp16).
enum class Math { kSimt, kTf32, kMma16 };

// What the GEMM's K dimension runs over. The forward and grad-input reduce over channels (an offset
// is k * stride) and write the output in the tensors' dtype; grad-weight reduces over the pixels of
// the batch (gathered through the pixel map) and writes split-K partial sums in the accumulator type.
enum class Reduction { kChannels, kPixels };

// The block tiles of the kernels (gemm.cuh's TileConfigs): 128x128, 64x64, narrow in m (32x128),
// narrow in n (128x32), and float64's one small tile (32x32).
enum class BlockTile { kLarge, kMedium, kNarrowM, kNarrowN, kDouble };
inline constexpr int kBlockTileCount = 5;
inline constexpr const char* kBlockTileNames[] = {"large", "medium", "narrow_m", "narrow_n", "double"};

// A block tile's extent in m and n, for the host's plans (gemm_launch.cuh checks it against the
// kernels' TileConfigs).
struct TileExtent {
  int32_t m, n;
};
constexpr TileExtent tile_extent(BlockTile tile) {
  switch (tile) {
    case BlockTile::kMedium: return {64, 64};
    case BlockTile::kNarrowM: return {32, 128};
    case BlockTile::kNarrowN: return {128, 32};
    case BlockTile::kDouble: return {32, 32};
    default: return {128, 128};
  }
}

// Whether the kernels exist for this tile (gemm_launch.cuh instantiates exactly these): float64
// has only its own tile; the others have every tile for an unsplit channel reduction, the medium
// one for a split channel reduction, the large and medium ones for a reduction over pixels.
// `partials`: the GEMM writes split-K partial sums (gemm_launch.h), as every reduction over pixels does.
constexpr bool tile_instantiated(BlockTile tile, bool is_double, Reduction reduction, bool partials) {
  if (reduction == Reduction::kPixels && !partials) return false;
  if (is_double) return tile == BlockTile::kDouble;
  if (tile == BlockTile::kDouble) return false;
  if (reduction == Reduction::kPixels) return tile == BlockTile::kLarge || tile == BlockTile::kMedium;
  return !partials || tile == BlockTile::kMedium;
}

struct GemmProblem {
  int32_t m = 0, n = 0, k = 0;  // extents of one group
  int32_t groups = 1;
  int32_t splits = 1;       // the K range is cut into `splits` chunks of k_per_split (split-K)
  int32_t k_per_split = 0;  // a multiple of the tile's BK
  GemmOperand a, b, c;      // c.data is the output (written, not read)
  int64_t c_split_stride = 0;  // elements between split-K partials of C
  bool c_m_contiguous = false; // C's contiguous dimension: m (NHWC output channels) or n (NCHW pixels)
  bool a_k_contiguous = true;  // A's contiguous dimension is k (else m)
  bool b_k_contiguous = true;  // B's contiguous dimension is k (else n)
  const void* bias = nullptr;      // per m, offset by group * m; or null
  const void* residual = nullptr;  // indexed exactly as C; or null
  Activation activation = Activation::kNone;
};

}  // namespace pointwise::cuda
