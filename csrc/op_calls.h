// Calls of the package's ops through the dispatcher, for the kernels that wrap them (autograd.cpp,
// autocast.cpp): such a call goes through every dispatch key still active, so a backward built from
// it is itself differentiable, and a wrapper that excludes its own key reaches the next one.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/string_view.h>

#include <optional>

namespace pointwise {

inline at::Tensor call_conv_forward(const at::Tensor& input, const at::Tensor& weight,
                                    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual,
                                    at::IntArrayRef stride, at::IntArrayRef padding, int64_t groups,
                                    c10::string_view activation) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("pointwise_cuda::conv_forward", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                                               const std::optional<at::Tensor>&, at::IntArrayRef, at::IntArrayRef,
                                               int64_t, c10::string_view)>();
  return op.call(input, weight, bias, residual, stride, padding, groups, activation);
}

inline at::Tensor call_conv_backward_input(const at::Tensor& grad_output, const at::Tensor& weight,
                                           c10::SymIntArrayRef input_size, at::IntArrayRef stride,
                                           at::IntArrayRef padding, int64_t groups) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("pointwise_cuda::conv_backward_input", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&, c10::SymIntArrayRef,
                                               at::IntArrayRef, at::IntArrayRef, int64_t)>();
  return op.call(grad_output, weight, input_size, stride, padding, groups);
}

inline at::Tensor call_conv_backward_weight(const at::Tensor& grad_output, const at::Tensor& input,
                                            at::IntArrayRef stride, at::IntArrayRef padding, int64_t groups) {
  static const auto op = c10::Dispatcher::singleton()
                             .findSchemaOrThrow("pointwise_cuda::conv_backward_weight", "")
                             .typed<at::Tensor(const at::Tensor&, const at::Tensor&, at::IntArrayRef,
                                               at::IntArrayRef, int64_t)>();
  return op.call(grad_output, input, stride, padding, groups);
}

}  // namespace pointwise
