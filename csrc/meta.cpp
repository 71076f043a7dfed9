// The Meta kernels of the three ops: every check of the real kernels (conv_args.h), then an output
// allocated as theirs is, with nothing computed. Fake tensors run these, so torch.compile and
// torch.export trace the ops with the real output's shape and strides, symbolic sizes included,
// and refuse what the real kernels refuse.
#include <ATen/ATen.h>
#include <torch/library.h>

#include "conv_args.h"

namespace pointwise {
namespace {

at::Tensor conv_forward_meta(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                             const std::optional<at::Tensor>& residual, at::IntArrayRef stride,
                             at::IntArrayRef padding, int64_t groups, c10::string_view activation) {
  const CheckedConv c = check_forward(input, weight, bias, residual, stride, padding, groups, activation);
  return at::empty_symint(c.output_size(), input.options().memory_format(c.layout()));
}

at::Tensor conv_backward_input_meta(const at::Tensor& grad_output, const at::Tensor& weight,
                                    c10::SymIntArrayRef input_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                    int64_t groups) {
  const CheckedConv c = check_backward_input(grad_output, weight, input_size, stride, padding, groups);
  return at::empty_symint(input_size, grad_output.options().memory_format(c.layout()));
}

at::Tensor conv_backward_weight_meta(const at::Tensor& grad_output, const at::Tensor& input, at::IntArrayRef stride,
                                     at::IntArrayRef padding, int64_t groups) {
  const CheckedConv c = check_backward_weight(grad_output, input, stride, padding, groups);
  return at::empty_symint(c.weight_size(), input.options());
}

}  // namespace

TORCH_LIBRARY_IMPL(pointwise_cuda, Meta, m) {
  m.impl("conv_forward", &conv_forward_meta);
  m.impl("conv_backward_input", &conv_backward_input_meta);
  m.impl("conv_backward_weight", &conv_backward_weight_meta);
}

}  // namespace pointwise
