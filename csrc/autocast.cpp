// conv_forward under torch.autocast: F.conv2d's rule. Inside an autocast region every floating
// input (input, weight, bias, residual) that is not float64 is cast to the region's dtype (the
// weight's cast cached for the region, as for nn.Conv2d), and the op runs in that dtype.
// The backward ops need no such kernel: they only ever see the dtypes the forward ran in.
#include <ATen/autocast_mode.h>
#include <torch/library.h>

#include "op_calls.h"

namespace pointwise {
namespace {

template <c10::DeviceType device_type>
at::Tensor conv_forward_autocast(const at::Tensor& input, const at::Tensor& weight,
                                 const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual,
                                 at::IntArrayRef stride, at::IntArrayRef padding, int64_t groups,
                                 c10::string_view activation) {
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(
      at::autocast::get_autocast_dispatch_key_from_device_type(device_type));
  const at::ScalarType dtype = at::autocast::get_autocast_dtype(device_type);
  using at::autocast::cached_cast;
  return call_conv_forward(cached_cast(dtype, input, device_type), cached_cast(dtype, weight, device_type),
                           cached_cast(dtype, bias, device_type), cached_cast(dtype, residual, device_type), stride,
                           padding, groups, activation);
}

}  // namespace

TORCH_LIBRARY_IMPL(pointwise_cuda, AutocastCPU, m) {
  m.impl("conv_forward", &conv_forward_autocast<c10::DeviceType::CPU>);
}

TORCH_LIBRARY_IMPL(pointwise_cuda, AutocastCUDA, m) {
  m.impl("conv_forward", &conv_forward_autocast<c10::DeviceType::CUDA>);
}

}  // namespace pointwise
