// The op's contract in C++: argument checks, layout and output allocation shared by every backend.
//
// Each op entry point (registered per backend in cpu/ and cuda/) is `run_*<kernel>`: it checks the
// arguments once, makes the tensors dense in one layout (at most one copy each), allocates the
// output, and only then hands a fully validated *Args to the backend's kernel. The checks are the
// check_* functions below, in SymInt: the Meta kernels (meta.cpp), which fake tensors run for
// torch.compile and torch.export, call the very same ones, so a program that fails at run time
// fails when it is traced.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/SymInt.h>
#include <c10/util/string_view.h>

#include <optional>
#include <vector>

#include "epilogue.h"

namespace pointwise {

// Sizes of one pointwise convolution. Pixels are counted over the GEMM's spatial grid: the
// output grid (out_h x out_w); input pixel (oh * stride_h - pad_h, ow * stride_w - pad_w) feeds
// output pixel (oh, ow), and outputs whose input pixel lies in the padding see a zero input.
struct ConvGeometry {
  int64_t batch = 0;
  int64_t in_channels = 0;
  int64_t out_channels = 0;
  int64_t groups = 1;
  int64_t in_h = 0, in_w = 0;
  int64_t out_h = 0, out_w = 0;
  int64_t stride_h = 1, stride_w = 1;
  int64_t pad_h = 0, pad_w = 0;
  // Every activation-sized tensor of the call (input, output, residual, grads) is dense in this
  // layout: NHWC when true, NCHW otherwise.
  bool channels_last = false;

  int64_t in_channels_per_group() const { return in_channels / groups; }
  int64_t out_channels_per_group() const { return out_channels / groups; }
  int64_t in_pixels() const { return in_h * in_w; }
  int64_t out_pixels() const { return out_h * out_w; }
  // True when output pixel (oh, ow) reads input pixel (oh, ow): no stride, no padding.
  bool identity_pixel_map() const {
    return stride_h == 1 && stride_w == 1 && pad_h == 0 && pad_w == 0;
  }
};

// output = act(conv(input, weight) + bias + residual)
struct ForwardArgs {
  at::Tensor input;     // [N, C_in, H, W], dense in geometry.channels_last's layout
  at::Tensor weight;    // [C_out, C_in / groups], contiguous
  at::Tensor bias;      // [C_out] or undefined
  at::Tensor residual;  // output's shape and layout, or undefined
  at::Tensor output;    // [N, C_out, H_out, W_out], allocated, not yet written
  ConvGeometry geometry;
  Activation activation = Activation::kNone;
};

// grad_input = W^T . grad_output at the input pixels that fed an output; zero at the others.
struct BackwardInputArgs {
  at::Tensor grad_output;  // [N, C_out, H_out, W_out], dense in the layout
  at::Tensor weight;       // [C_out, C_in / groups], contiguous
  at::Tensor grad_input;   // [N, C_in, H, W]; already zero where no output pixel reads the input
  ConvGeometry geometry;
};

// grad_weight[co, ci] = sum over images and output pixels of grad_output[n, co, p] * input[n, ci, map(p)]
struct BackwardWeightArgs {
  at::Tensor grad_output;  // [N, C_out, H_out, W_out], dense in the layout
  at::Tensor input;        // [N, C_in, H, W], dense in the layout
  at::Tensor grad_weight;  // [C_out, C_in / groups, 1, 1], contiguous, allocated, not yet written
  ConvGeometry geometry;
};

Activation parse_activation(c10::string_view name);

// What the checks of an op's arguments establish: sizes (symbolic under fake tensors with dynamic
// shapes), the stride, padding and groups, and the layout the op computes in.
struct CheckedConv {
  c10::SymInt batch, in_channels, out_channels, in_h, in_w, out_h, out_w;
  int64_t groups = 1, stride_h = 1, stride_w = 1, pad_h = 0, pad_w = 0;
  bool channels_last = false;
  Activation activation = Activation::kNone;  // the forward's

  // The sizes as numbers, for a kernel (they are never symbolic there).
  ConvGeometry geometry() const;
  at::MemoryFormat layout() const;
  std::vector<c10::SymInt> output_size() const;  // (N, C_out, H_out, W_out)
  std::vector<c10::SymInt> weight_size() const;  // (C_out, C_in / groups, 1, 1)
};

// Every check of the op's arguments that their metadata decides (sizes, dtypes, devices, stride,
// padding, groups, activation), raising what F.conv2d raises where it has the same check.
CheckedConv check_forward(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                          const std::optional<at::Tensor>& residual, at::IntArrayRef stride, at::IntArrayRef padding,
                          int64_t groups, c10::string_view activation);
CheckedConv check_backward_input(const at::Tensor& grad_output, const at::Tensor& weight,
                                 c10::SymIntArrayRef input_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                 int64_t groups);
CheckedConv check_backward_weight(const at::Tensor& grad_output, const at::Tensor& input, at::IntArrayRef stride,
                                  at::IntArrayRef padding, int64_t groups);

ForwardArgs prepare_forward(const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias,
                            const std::optional<at::Tensor>& residual, at::IntArrayRef stride,
                            at::IntArrayRef padding, int64_t groups, c10::string_view activation);

BackwardInputArgs prepare_backward_input(const at::Tensor& grad_output, const at::Tensor& weight,
                                         at::IntArrayRef input_size, at::IntArrayRef stride,
                                         at::IntArrayRef padding, int64_t groups);

BackwardWeightArgs prepare_backward_weight(const at::Tensor& grad_output, const at::Tensor& input,
                                           at::IntArrayRef stride, at::IntArrayRef padding,
                                           int64_t groups);

// The op entry points every backend registers, parameterised by the backend's kernel.
template <void (*kernel)(const ForwardArgs&)>
at::Tensor run_forward(const at::Tensor& input, const at::Tensor& weight,
                       const std::optional<at::Tensor>& bias,
                       const std::optional<at::Tensor>& residual, at::IntArrayRef stride,
                       at::IntArrayRef padding, int64_t groups, c10::string_view activation) {
  ForwardArgs args =
      prepare_forward(input, weight, bias, residual, stride, padding, groups, activation);
  if (args.output.numel() > 0) kernel(args);
  return args.output;
}

template <void (*kernel)(const BackwardInputArgs&)>
at::Tensor run_backward_input(const at::Tensor& grad_output, const at::Tensor& weight,
                              at::IntArrayRef input_size, at::IntArrayRef stride,
                              at::IntArrayRef padding, int64_t groups) {
  BackwardInputArgs args =
      prepare_backward_input(grad_output, weight, input_size, stride, padding, groups);
  // Nothing to compute without images or pixels (grad_input is then empty too: C_out > 0), or
  // without input channels to receive the gradient.
  if (args.grad_output.numel() > 0 && args.grad_input.numel() > 0) kernel(args);
  return args.grad_input;
}

template <void (*kernel)(const BackwardWeightArgs&)>
at::Tensor run_backward_weight(const at::Tensor& grad_output, const at::Tensor& input,
                               at::IntArrayRef stride, at::IntArrayRef padding, int64_t groups) {
  BackwardWeightArgs args = prepare_backward_weight(grad_output, input, stride, padding, groups);
  // An empty reduction (no images or pixels) leaves the zeros prepare_backward_weight allocated.
  if (args.grad_weight.numel() > 0 && args.grad_output.numel() > 0) kernel(args);
  return args.grad_weight;
}

}  // namespace pointwise
