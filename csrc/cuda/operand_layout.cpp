// The convolution's tensors as GEMM operands (operand_layout.h).
#include "cuda/operand_layout.h"

#include <c10/util/Exception.h>

#include <limits>

namespace pointwise::cuda {

int32_t checked_int32(int64_t value, const char* what) {
  TORCH_CHECK(value <= std::numeric_limits<int32_t>::max(), "pointwise_conv2d on CUDA supports up to 2^31 - 1 ",
              what, ", got ", value);
  return static_cast<int32_t>(value);
}

bool channels_contiguous(const ConvGeometry& g) {
  return g.channels_last || (g.in_pixels() == 1 && g.out_pixels() == 1);
}

ActivationLayout activation_layout(const ConvGeometry& g, int64_t channels, int64_t h, int64_t w) {
  return channels_contiguous(g) ? ActivationLayout{1, channels, channels * h * w}
                                : ActivationLayout{h * w, 1, channels * h * w};
}

DimIndex channel_dim(int64_t stride) {
  DimIndex d;
  d.stride = stride;
  return d;
}

DimIndex pixel_dim(const ConvGeometry& g, const ActivationLayout& layout, bool input_grid) {
  DimIndex d;
  d.stride = layout.pixel_stride;
  d.image_stride = layout.image_stride;
  d.pixels = checked_int32(g.out_pixels(), "pixels per image");
  d.grid_w = static_cast<int32_t>(g.out_w);
  d.mapped = input_grid && !g.identity_pixel_map();
  d.step_h = static_cast<int32_t>(g.stride_h);
  d.step_w = static_cast<int32_t>(g.stride_w);
  d.pad_h = static_cast<int32_t>(g.pad_h);
  d.pad_w = static_cast<int32_t>(g.pad_w);
  d.h = checked_int32(input_grid ? g.in_h : g.out_h, "rows");
  d.w = checked_int32(input_grid ? g.in_w : g.out_w, "columns");
  return d;
}

bool runs_fit(const GemmOperand& op, const DimIndex& contiguous, int64_t extent, const DimIndex& other,
              size_t element_size, int64_t split_stride, int64_t bytes) {
  const int64_t v = bytes / static_cast<int64_t>(element_size);
  auto aligned = [v](int64_t x) { return x % v == 0; };
  if (v < 1 || reinterpret_cast<uintptr_t>(op.data) % bytes != 0) return false;
  if (!aligned(op.group_stride) || !aligned(split_stride) || !aligned(extent)) return false;
  if (contiguous.stride != 1) return false;
  if (contiguous.pixels != 0 && (contiguous.mapped || !aligned(contiguous.pixels) || !aligned(contiguous.image_stride)))
    return false;
  return aligned(other.stride) && (other.pixels == 0 || aligned(other.image_stride));
}

namespace {

// How a GEMM input's tiles are loaded: 16-byte vectors, else pairs of 16-bit elements, else one by one.
void set_runs(GemmOperand& op, bool rows_contiguous, int64_t rows, int64_t cols, size_t element_size) {
  const DimIndex& contiguous = rows_contiguous ? op.rows : op.cols;
  const DimIndex& other = rows_contiguous ? op.cols : op.rows;
  const int64_t extent = rows_contiguous ? rows : cols;
  op.vectorized = runs_fit(op, contiguous, extent, other, element_size);
  op.paired = !op.vectorized && element_size == 2 && runs_fit(op, contiguous, extent, other, element_size, 0, 4);
}

}  // namespace

void set_vectorization(GemmProblem& p, size_t element_size, size_t c_element_size, const void* residual) {
  set_runs(p.a, !p.a_k_contiguous, p.m, p.k, element_size);  // A is m x k
  set_runs(p.b, p.b_k_contiguous, p.k, p.n, element_size);   // B is k x n
  p.c.vectorized = (p.c_m_contiguous ? runs_fit(p.c, p.c.rows, p.m, p.c.cols, c_element_size, p.c_split_stride)
                                     : runs_fit(p.c, p.c.cols, p.n, p.c.rows, c_element_size, p.c_split_stride)) &&
                   reinterpret_cast<uintptr_t>(residual) % 16 == 0;
}

}  // namespace pointwise::cuda
