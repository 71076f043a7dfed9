// The op's contract: argument checks, the geometry, dense layouts and output allocation, shared by
// every backend and by the Meta kernels (conv_args.h).
#include <ATen/ATen.h>
#include <c10/core/SymBool.h>

#include <c10/util/safe_numerics.h>

#include <limits>

#include "conv_args.h"

namespace pointwise {
namespace {

using c10::SymBool;
using c10::SymInt;

constexpr int64_t kInt64Max = std::numeric_limits<int64_t>::max();

// TORCH_SYM_CHECK's condition for a symbolic size: true for a number; for a symbol, assumed while
// tracing and checked when the traced program runs.
#define POINTWISE_SYM_CHECK(cond, ...) TORCH_CHECK((cond).expect_true(__FILE__, __LINE__), __VA_ARGS__)
#define POINTWISE_SYM_CHECK_VALUE(cond, ...) TORCH_CHECK_VALUE((cond).expect_true(__FILE__, __LINE__), __VA_ARGS__)

std::string shape_str(c10::SymIntArrayRef sizes) { return c10::str(sizes); }

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
              "-D of shape ", shape_str(t.sym_sizes()));
  check_float_tensor(t, name);
}

SymBool sizes_equal(c10::SymIntArrayRef a, const std::vector<SymInt>& b) {
  if (a.size() != b.size()) return SymBool(false);
  SymBool equal(true);
  for (size_t i = 0; i < a.size(); ++i) equal = equal.sym_and(a[i].sym_eq(b[i]));
  return equal;
}

// Checks weight, groups, stride and padding against the input's channel count; fills the channel,
// stride and padding fields. `in_channels` is C_in of the convolution's input.
CheckedConv check_conv_params(c10::SymIntArrayRef weight_size, const SymInt& in_channels, at::IntArrayRef stride,
                              at::IntArrayRef padding, int64_t groups) {
  TORCH_CHECK(weight_size.size() == 4,
              "Expected weight to be a 4-D (C_out, C_in / groups, 1, 1) tensor, got ",
              weight_size.size(), "-D of shape ", shape_str(weight_size));
  POINTWISE_SYM_CHECK_VALUE(weight_size[2].sym_eq(1).sym_and(weight_size[3].sym_eq(1)),
                            "pointwise_conv2d needs a 1x1 kernel: weight must have shape "
                            "(C_out, C_in / groups, 1, 1), got ",
                            shape_str(weight_size));
  TORCH_CHECK(groups > 0, "non-positive groups is not supported: groups=", groups);
  CheckedConv c;
  c.groups = groups;
  c.in_channels = in_channels;
  c.out_channels = weight_size[0];
  // As F.conv2d: a convolution with no output channels has no meaning, and would leave nothing to
  // write the (zero) input gradient.
  POINTWISE_SYM_CHECK(c.out_channels.sym_gt(0), "Given groups=", groups,
                      ", expected weight to be at least 1 at dimension 0, but got weight of size ",
                      shape_str(weight_size), " instead");
  POINTWISE_SYM_CHECK((c.out_channels % groups).sym_eq(0), "Given groups=", groups,
                      ", expected weight to be divisible by ", groups, " at dimension 0, but got weight of size ",
                      shape_str(weight_size));
  POINTWISE_SYM_CHECK((in_channels % groups).sym_eq(0), "Given groups=", groups, ", expected input channels (",
                      in_channels, ") to be divisible by ", groups);
  POINTWISE_SYM_CHECK((weight_size[1] * groups).sym_eq(in_channels), "Given groups=", groups, ", weight of size ",
                      shape_str(weight_size), ", expected input to have ", weight_size[1] * groups,
                      " channels, but got ", in_channels, " channels instead");
  std::tie(c.stride_h, c.stride_w) = pair_arg(stride, "stride");
  std::tie(c.pad_h, c.pad_w) = pair_arg(padding, "padding");
  TORCH_CHECK(c.stride_h > 0 && c.stride_w > 0, "non-positive stride is not supported: stride=", stride);
  TORCH_CHECK(c.pad_h >= 0 && c.pad_w >= 0, "negative padding is not supported: padding=", padding);
  for (size_t d = 0; d < 2; ++d) {  // F.conv2d's bound, so that 2 * padding is a size
    TORCH_CHECK(padding[d] <= kInt64Max / 2, "Given padding=", padding[d], " at dimension ", d,
                " , expected padding to be at most ", kInt64Max / 2);
  }
  return c;
}

// in + 2 * pad, the input's extent along one axis with its padding.
SymInt padded_extent(const SymInt& in, int64_t pad, const char* axis) {
  // Sizes are at most 2^63 - 1 and so is 2 * pad (checked above): only their sum can leave int64_t.
  if (const auto n = in.maybe_as_int()) {
    TORCH_CHECK(*n <= kInt64Max - 2 * pad, "padding=", pad, " makes the padded input ", axis, " (", *n,
                " + 2 * padding) larger than 2^63 - 1");
  }
  return in + 2 * pad;
}

void set_output_grid(CheckedConv& c, const SymInt& in_h, const SymInt& in_w) {
  const SymInt padded_h = padded_extent(in_h, c.pad_h, "height"), padded_w = padded_extent(in_w, c.pad_w, "width");
  // As F.conv2d: the kernel needs at least one input pixel, padding included, along each axis.
  POINTWISE_SYM_CHECK(padded_h.sym_ge(1).sym_and(padded_w.sym_ge(1)), "Calculated padded input size per channel: (",
                      padded_h, " x ", padded_w,
                      "). Kernel size: (1 x 1). Kernel size can't be greater than actual input size");
  c.in_h = in_h;
  c.in_w = in_w;
  c.out_h = (padded_h - 1) / c.stride_h + 1;
  c.out_w = (padded_w - 1) / c.stride_w + 1;
}

// Refuses a tensor of these sizes whose element count would not fit int64_t (a huge padding).
void check_numel(const std::vector<SymInt>& size, const char* name) {
  int64_t numel = 1;
  for (const SymInt& s : size) {
    const auto n = s.maybe_as_int();
    if (!n) return;  // symbolic: the tensor that is finally allocated checks its own size
    TORCH_CHECK(!c10::mul_overflows(numel, *n, &numel), name, " of size ", shape_str(size),
                " would have more than 2^63 - 1 elements");
  }
}

at::Tensor dense_weight(const at::Tensor& weight) {
  // A (C_out, C_in/groups, 1, 1) weight has the same element order in either memory format.
  return weight.reshape({weight.size(0), weight.size(1)}).contiguous();
}

}  // namespace

ConvGeometry CheckedConv::geometry() const {
  ConvGeometry g;
  g.batch = batch.expect_int();
  g.in_channels = in_channels.expect_int();
  g.out_channels = out_channels.expect_int();
  g.groups = groups;
  g.in_h = in_h.expect_int();
  g.in_w = in_w.expect_int();
  g.out_h = out_h.expect_int();
  g.out_w = out_w.expect_int();
  g.stride_h = stride_h;
  g.stride_w = stride_w;
  g.pad_h = pad_h;
  g.pad_w = pad_w;
  g.channels_last = channels_last;
  return g;
}

at::MemoryFormat CheckedConv::layout() const {
  return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
}

std::vector<SymInt> CheckedConv::output_size() const { return {batch, out_channels, out_h, out_w}; }

std::vector<SymInt> CheckedConv::weight_size() const { return {out_channels, in_channels / groups, 1, 1}; }

Activation parse_activation(c10::string_view name) {
  for (int i = 0; i < kActivationCount; ++i) {
    if (name == kActivationNames[i]) return static_cast<Activation>(i);
  }
  std::string known = "None";  // what the Python API calls "none"
  for (int i = 1; i < kActivationCount; ++i) known += std::string(", '") + kActivationNames[i] + "'";
  TORCH_CHECK_VALUE(false, "activation must be one of ", known, "; got '", std::string(name), "'");
}

CheckedConv check_forward(const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                          const std::optional<at::Tensor>& residual, at::IntArrayRef stride, at::IntArrayRef padding,
                          int64_t groups, c10::string_view activation) {
  const Activation act = parse_activation(activation);
  check_activation_tensor(input, "input");
  check_same_device_and_dtype(weight, "weight", input, "input");
  CheckedConv c = check_conv_params(weight.sym_sizes(), input.sym_size(1), stride, padding, groups);
  c.activation = act;
  c.batch = input.sym_size(0);
  set_output_grid(c, input.sym_size(2), input.sym_size(3));
  c.channels_last = input.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  const std::vector<SymInt> out_size = c.output_size();
  check_numel(out_size, "the output");
  if (bias.has_value()) {
    check_same_device_and_dtype(*bias, "bias", input, "input");
    POINTWISE_SYM_CHECK(SymBool(bias->dim() == 1).sym_and(bias->sym_numel().sym_eq(c.out_channels)),
                        "Given weight of size ", shape_str(weight.sym_sizes()), ", expected bias to be 1-dimensional with ",
                        c.out_channels, " elements, but got bias of size ", shape_str(bias->sym_sizes()));
  }
  if (residual.has_value()) {
    check_same_device_and_dtype(*residual, "residual", input, "input");
    POINTWISE_SYM_CHECK_VALUE(sizes_equal(residual->sym_sizes(), out_size), "residual must have the output's shape ",
                              shape_str(out_size), ", got ", shape_str(residual->sym_sizes()));
  }
  return c;
}

CheckedConv check_backward_input(const at::Tensor& grad_output, const at::Tensor& weight,
                                 c10::SymIntArrayRef input_size, at::IntArrayRef stride, at::IntArrayRef padding,
                                 int64_t groups) {
  check_activation_tensor(grad_output, "grad_output");
  check_same_device_and_dtype(weight, "weight", grad_output, "grad_output");
  TORCH_CHECK_VALUE(input_size.size() == 4, "input_size must be (N, C_in, H, W), got ", input_size);
  CheckedConv c = check_conv_params(weight.sym_sizes(), input_size[1], stride, padding, groups);
  c.batch = input_size[0];
  set_output_grid(c, input_size[2], input_size[3]);
  POINTWISE_SYM_CHECK(sizes_equal(grad_output.sym_sizes(), c.output_size()), "grad_output must have shape ",
                      shape_str(c.output_size()), " for input_size ", input_size, ", got ",
                      shape_str(grad_output.sym_sizes()));
  check_numel(input_size.vec(), "grad_input");
  c.channels_last = grad_output.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  return c;
}

CheckedConv check_backward_weight(const at::Tensor& grad_output, const at::Tensor& input, at::IntArrayRef stride,
                                  at::IntArrayRef padding, int64_t groups) {
  check_activation_tensor(grad_output, "grad_output");
  check_activation_tensor(input, "input");
  check_same_device_and_dtype(grad_output, "grad_output", input, "input");
  TORCH_CHECK(groups > 0, "non-positive groups is not supported: groups=", groups);
  POINTWISE_SYM_CHECK((grad_output.sym_size(1) % groups).sym_eq(0).sym_and((input.sym_size(1) % groups).sym_eq(0)),
                      "Given groups=", groups, ", expected grad_output channels (", grad_output.sym_size(1),
                      ") and input channels (", input.sym_size(1), ") to be divisible by ", groups);
  // Checks stride and padding through the weight shape these tensors imply.
  const std::vector<SymInt> weight_size = {grad_output.sym_size(1), input.sym_size(1) / groups, 1, 1};
  CheckedConv c = check_conv_params(weight_size, input.sym_size(1), stride, padding, groups);
  c.batch = input.sym_size(0);
  set_output_grid(c, input.sym_size(2), input.sym_size(3));
  POINTWISE_SYM_CHECK(sizes_equal(grad_output.sym_sizes(), c.output_size()), "grad_output must have shape ",
                      shape_str(c.output_size()), " for input of shape ", shape_str(input.sym_sizes()), ", got ",
                      shape_str(grad_output.sym_sizes()));
  c.channels_last = input.suggest_memory_format() == at::MemoryFormat::ChannelsLast;
  return c;
}

ForwardArgs prepare_forward(const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias,
                            const std::optional<at::Tensor>& residual, at::IntArrayRef stride,
                            at::IntArrayRef padding, int64_t groups, c10::string_view activation) {
  const CheckedConv c = check_forward(input, weight, bias, residual, stride, padding, groups, activation);
  ForwardArgs args;
  args.activation = c.activation;
  args.geometry = c.geometry();
  if (bias.has_value()) args.bias = bias->contiguous();
  if (residual.has_value()) args.residual = residual->contiguous(c.layout());
  args.input = input.contiguous(c.layout());
  args.weight = dense_weight(weight);
  args.output = at::empty_symint(c.output_size(), input.options().memory_format(c.layout()));
  return args;
}

BackwardInputArgs prepare_backward_input(const at::Tensor& grad_output, const at::Tensor& weight,
                                         at::IntArrayRef input_size, at::IntArrayRef stride,
                                         at::IntArrayRef padding, int64_t groups) {
  const CheckedConv c =
      check_backward_input(grad_output, weight, c10::fromIntArrayRefSlow(input_size), stride, padding, groups);
  BackwardInputArgs args;
  args.geometry = c.geometry();
  args.grad_output = grad_output.contiguous(c.layout());
  args.weight = dense_weight(weight);
  const auto options = grad_output.options().memory_format(c.layout());
  // With stride > 1 some input pixels feed no output: their gradient is zero and no kernel writes it.
  const bool every_pixel_written = c.stride_h == 1 && c.stride_w == 1;
  // (at::zeros would drop the memory format of `options`.)
  args.grad_input = every_pixel_written ? at::empty(input_size, options) : at::empty(input_size, options).zero_();
  return args;
}

BackwardWeightArgs prepare_backward_weight(const at::Tensor& grad_output, const at::Tensor& input,
                                           at::IntArrayRef stride, at::IntArrayRef padding,
                                           int64_t groups) {
  const CheckedConv c = check_backward_weight(grad_output, input, stride, padding, groups);
  BackwardWeightArgs args;
  args.geometry = c.geometry();
  args.input = input.contiguous(c.layout());
  args.grad_output = grad_output.contiguous(c.layout());
  const bool empty_reduction = grad_output.numel() == 0;
  const std::vector<int64_t> size = {args.geometry.out_channels, args.geometry.in_channels_per_group(), 1, 1};
  args.grad_weight = empty_reduction ? at::zeros(size, input.options()) : at::empty(size, input.options());
  return args;
}

}  // namespace pointwise
