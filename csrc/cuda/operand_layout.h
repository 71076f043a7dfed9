// How a convolution's tensors are seen as GEMM operands (gemm_problem.h): their channel and pixel
// dimensions in either layout, and how the kernels may move them (16-byte vectors, 4-byte pairs of
// 16-bit elements, or one by one).
#pragma once

#include <cstddef>
#include <cstdint>

#include "conv_args.h"
#include "cuda/gemm_problem.h"

namespace pointwise::cuda {

// Raises (naming `what`) where a size passes the kernels' 32-bit indices.
int32_t checked_int32(int64_t value, const char* what);

// Whether the GEMM sees the activations with their channels contiguous. NHWC tensors have them so;
// so do NCHW ones whose images are single pixels (squeeze-excite layers), where both layouts are
// the same bytes: read that way their channels move as 16-byte vectors instead of one by one.
bool channels_contiguous(const ConvGeometry& g);

// The layout's strides of an activation-sized tensor with `channels` channels on an h x w grid.
struct ActivationLayout {
  int64_t channel_stride, pixel_stride, image_stride;
};
ActivationLayout activation_layout(const ConvGeometry& g, int64_t channels, int64_t h, int64_t w);

// A channel dimension of the given stride.
DimIndex channel_dim(int64_t stride);

// The GEMM's pixel dimension (the output grid, all images) on a tensor of the given grid: the
// output's own grid, or the input's, which the stride and padding map onto.
DimIndex pixel_dim(const ConvGeometry& g, const ActivationLayout& layout, bool input_grid);

// Whether the operand's contiguous dimension can move in runs of `bytes` (16: vectors, 4: pairs of
// 16-bit elements): every run must start aligned and lie wholly inside one image's unmapped pixels
// or one row's channels.
bool runs_fit(const GemmOperand& op, const DimIndex& contiguous, int64_t extent, const DimIndex& other,
              size_t element_size, int64_t split_stride = 0, int64_t bytes = 16);

// Sets how A, B and C move (vectorized, paired) from their data, strides and orientations.
void set_vectorization(GemmProblem& p, size_t element_size, size_t c_element_size, const void* residual);

}  // namespace pointwise::cuda
