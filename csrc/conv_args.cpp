// The op's contract: argument checks, the geometry, dense layouts and output allocation, shared by
// every backend (conv_args.h).
#include <ATen/ATen.h>

#include "conv_args.h"

namespace pointwise {
namespace {

std::string shape_str(at::IntArrayRef sizes) { return c10::str(sizes); }

bool supported_dtype(at::ScalarType t) {
  return t == at::kFloat || t == at::kDouble || t == at::kHalf || t == at::kBFloat16;
}

// Parses an int[2] argument of the schema; the Python API expands ints to pairs before this.
std::pair<int64_t, int64_t> pair_arg(at::IntArrayRef value, const char* name) {
  TORCH_CHECK_VALUE(value.size() == 2, name, " must have 2 elements (height, width), got ",
                    value.size());
  return {value[0], value[1]};
}

void check_float_tensor(const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(supported_dtype(t.scalar_type()), name,
                   " must be a floating-point tensor (float32, float64, float16 or bfloat16), got ",
                   t.scalar_type());
}

void check_same_device_and_dtype(const at::Tensor& t, const char* name, const at::Tensor& ref,
                                 const char* ref_name) {
  TORCH_CHECK(t.device() == ref.device(), "Expected ", name, " and ", ref_name,
              " to be on the same device, but ", name, " is on ", t.device(), " and ", ref_name,
              " is on ", ref.device());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), "Expected ", name, " and ", ref_name,
              " to have the same dtype, but ", name, " is ", t.scalar_type(), " and ", ref_name,
              " is ", ref.scalar_type());
}

void check_activation_tensor(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 4, "Expected ", name, " to be a 4-D (N, C, H, W) tensor, got ", t.dim(),
              "-D of shape ", shape_str(t.sizes()));
  check_float_tensor(t, name);
}

// Checks weight, groups, stride and padding against the channel counts; fills the geometry's
// channel and stride fields. `in_channels` is C_in of the convolution's input.
ConvGeometry check_conv_params(at::IntArrayRef weight_size, int64_t in_channels,
                               at::IntArrayRef stride, at::IntArrayRef padding, int64_t groups) {
  TORCH_CHECK(weight_size.size() == 4,
              "Expected weight to be a 4-D (C_out, C_in / groups, 1, 1) tensor, got ",
              weight_size.size(), "-D of shape ", shape_str(weight_size));
  TORCH_CHECK_VALUE(weight_size[2] == 1 && weight_size[3] == 1,
                    "pointwise_conv2d needs a 1x1 kernel: weight must have shape "
                    "(C_out, C_in / groups, 1, 1), got ",
                    shape_str(weight_size));
  TORCH_CHECK(groups > 0, "non-positive groups is not supported: groups=", groups);
  ConvGeometry g;
  g.groups = groups;
  g.in_channels = in_channels;
  g.out_channels = weight_size[0];
  // As F.conv2d: a convolution with no output channels has no meaning, and would leave nothing to
  // write the (zero) input gradient.
  TORCH_CHECK(g.out_channels > 0, "Given groups=", groups,
              ", expected weight to be at least 1 at dimension 0, but got weight of size ",
              shape_str(weight_size), " instead");
  TORCH_CHECK(g.out_channels % groups == 0, "Given groups=", groups,
              ", expected weight to be divisible by ", groups, " at dimension 0, but got weight of size ",
              shape_str(weight_size));
  TORCH_CHECK(in_channels % groups == 0, "Given groups=", groups, ", expected input channels (",
              in_channels, ") to be divisible by ", groups);
  TORCH_CHECK(weight_size[1] * groups == in_channels, "Given groups=", groups, ", weight of size ",
              shape_str(weight_size), ", expected input to have ", weight_size[1] * groups,
              " channels, but got ", in_channels, " channels instead");
  std::tie(g.stride_h, g.stride_w) = pair_arg(stride, "stride");
  std::tie(g.pad_h, g.pad_w) = pair_arg(padding, "padding");
  TORCH_CHECK(g.stride_h > 0 && g.stride_w > 0, "non-positive stride is not supported: stride=",
              stride);
  TORCH_CHECK(g.pad_h >= 0 && g.pad_w >= 0, "negative padding is not supported: padding=",
              padding);
  return g;
}

void set_output_grid(ConvGeometry& g, int64_t in_h, int64_t in_w) {
  // As F.conv2d: the kernel needs at least one input pixel, padding included, along each axis.
  TORCH_CHECK(in_h + 2 * g.pad_h >= 1 && in_w + 2 * g.pad_w >= 1, "Calculated padded input size per channel: (",
              in_h + 2 * g.pad_h, " x ", in_w + 2 * g.pad_w,
              "). Kernel size: (1 x 1). Kernel size can't be greater than actual input size");
  g.in_h = in_h;
  g.in_w = in_w;
  g.out_h = (in_h + 2 * g.pad_h - 1) / g.stride_h + 1;
  g.out_w = (in_w + 2 * g.pad_w - 1) / g.stride_w + 1;
}

at::MemoryFormat layout_of(const ConvGeometry& g) {
  return g.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

at::Tensor dense_weight(const at::Tensor& weight) {
  // A (C_out, C_in/groups, 1, 1) weight has the same element order in either memory format.
  return weight.reshape({weight.size(0), weight.size(1)}).contiguous();
}

}  // namespace

Activation parse_activation(c10::string_view name) {
  if (name == "none") return Activation::kNone;
  if (name == "relu") return Activation::kReLU;
  if (name == "relu6") return Activation::kReLU6;
  if (name == "silu") return Activation::kSiLU;
  if (name == "gelu") return Activation::kGELU;
  TORCH_CHECK_VALUE(false, "activation must be one of None, 'relu', 'relu6', 'silu', 'gelu'; got '",
                    std::string(name), "'");
}

ForwardArgs prepare_forward(const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias,
                            const std::optional<at::Tensor>& residual, at::IntArrayRef stride,
                            at::IntArrayRef padding, int64_t groups, c10::string_view activation) {
  ForwardArgs args;
  args.activation = parse_activation(activation);
  check_activation_tensor(input, "input");
  check_same_device_and_dtype(weight, "weight", input, "input");
  ConvGeometry& g = args.geometry = check_conv_params(weight.sizes(), input.size(1), stride, padding, groups);
  g.batch = input.size(0);
  set_output_grid(g, input.size(2), input.size(3));
  g.channels_last = input.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  const std::vector<int64_t> out_size = {g.batch, g.out_channels, g.out_h, g.out_w};
  if (bias.has_value()) {
    check_same_device_and_dtype(*bias, "bias", input, "input");
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == g.out_channels, "Given weight of size ",
                shape_str(weight.sizes()), ", expected bias to be 1-dimensional with ",
                g.out_channels, " elements, but got bias of size ", shape_str(bias->sizes()));
    args.bias = bias->contiguous();
  }
  if (residual.has_value()) {
    check_same_device_and_dtype(*residual, "residual", input, "input");
    TORCH_CHECK_VALUE(residual->sizes() == at::IntArrayRef(out_size),
                      "residual must have the output's shape ", shape_str(out_size), ", got ",
                      shape_str(residual->sizes()));
    args.residual = residual->contiguous(layout_of(g));
  }
  args.input = input.contiguous(layout_of(g));
  args.weight = dense_weight(weight);
  args.output = at::empty(out_size, input.options().memory_format(layout_of(g)));
  return args;
}

BackwardInputArgs prepare_backward_input(const at::Tensor& grad_output, const at::Tensor& weight,
                                         at::IntArrayRef input_size, at::IntArrayRef stride,
                                         at::IntArrayRef padding, int64_t groups) {
  BackwardInputArgs args;
  check_activation_tensor(grad_output, "grad_output");
  check_same_device_and_dtype(weight, "weight", grad_output, "grad_output");
  TORCH_CHECK_VALUE(input_size.size() == 4, "input_size must be (N, C_in, H, W), got ", input_size);
  ConvGeometry& g = args.geometry = check_conv_params(weight.sizes(), input_size[1], stride, padding, groups);
  g.batch = input_size[0];
  set_output_grid(g, input_size[2], input_size[3]);
  TORCH_CHECK(grad_output.sizes() == at::IntArrayRef({g.batch, g.out_channels, g.out_h, g.out_w}),
              "grad_output must have shape ",
              shape_str({g.batch, g.out_channels, g.out_h, g.out_w}), " for input_size ",
              input_size, ", got ", shape_str(grad_output.sizes()));
  g.channels_last = grad_output.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  args.grad_output = grad_output.contiguous(layout_of(g));
  args.weight = dense_weight(weight);
  const auto options = grad_output.options().memory_format(layout_of(g));
  // With stride > 1 some input pixels feed no output: their gradient is zero and no kernel writes it.
  const bool every_pixel_written = g.stride_h == 1 && g.stride_w == 1;
  // (at::zeros would drop the memory format of `options`.)
  args.grad_input = every_pixel_written ? at::empty(input_size, options) : at::empty(input_size, options).zero_();
  return args;
}

BackwardWeightArgs prepare_backward_weight(const at::Tensor& grad_output, const at::Tensor& input,
                                           at::IntArrayRef stride, at::IntArrayRef padding,
                                           int64_t groups) {
  BackwardWeightArgs args;
  check_activation_tensor(grad_output, "grad_output");
  check_activation_tensor(input, "input");
  check_same_device_and_dtype(grad_output, "grad_output", input, "input");
  TORCH_CHECK(groups > 0, "non-positive groups is not supported: groups=", groups);
  TORCH_CHECK(grad_output.size(1) % groups == 0 && input.size(1) % groups == 0, "Given groups=",
              groups, ", expected grad_output channels (", grad_output.size(1),
              ") and input channels (", input.size(1), ") to be divisible by ", groups);
  // Checks stride and padding through the weight shape these tensors imply.
  ConvGeometry& g = args.geometry = check_conv_params(
      {grad_output.size(1), input.size(1) / groups, 1, 1}, input.size(1), stride, padding, groups);
  g.batch = input.size(0);
  set_output_grid(g, input.size(2), input.size(3));
  TORCH_CHECK(grad_output.sizes() == at::IntArrayRef({g.batch, g.out_channels, g.out_h, g.out_w}),
              "grad_output must have shape ",
              shape_str({g.batch, g.out_channels, g.out_h, g.out_w}), " for input of shape ",
              shape_str(input.sizes()), ", got ", shape_str(grad_output.sizes()));
  g.channels_last = input.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  args.input = input.contiguous(layout_of(g));
  args.grad_output = grad_output.contiguous(layout_of(g));
  const bool empty_reduction = grad_output.numel() == 0;
  const std::vector<int64_t> size = {g.out_channels, g.in_channels_per_group(), 1, 1};
  args.grad_weight = empty_reduction ? at::zeros(size, input.options()) : at::empty(size, input.options());
  return args;
}

}  // namespace pointwise
