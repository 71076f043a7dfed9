// Autograd for the three ops, registered for the Autograd key in C++.
//
// Why C++: through torch.library.register_autograd every call of an op, gradients wanted or not,
// runs a Python wrapper; on a small layer that wrapper cost more than the whole of F.conv2d's host
// path (bench/overhead.py has the numbers). Here a call stays in the dispatcher.
//
// Every backward is made of the package's own ops and aten's activation derivatives, all called
// through the dispatcher, so they are recorded when the graph of the backward is wanted and
// gradients of any order work. Each op saves only what the gradients its inputs need will read.
#include <ATen/ATen.h>
#include <torch/autograd.h>
#include <torch/library.h>

#include "conv_args.h"
#include "op_calls.h"

namespace pointwise {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The convolution's stride, padding and groups, kept in a context for the backward.
void save_conv(AutogradContext* ctx, at::IntArrayRef stride, at::IntArrayRef padding, int64_t groups) {
  ctx->saved_data["stride"] = stride.vec();
  ctx->saved_data["padding"] = padding.vec();
  ctx->saved_data["groups"] = groups;
}

struct ConvParams {
  std::vector<int64_t> stride, padding;
  int64_t groups;
};

ConvParams saved_conv(AutogradContext* ctx) {
  return {ctx->saved_data["stride"].toIntVector(), ctx->saved_data["padding"].toIntVector(),
          ctx->saved_data["groups"].toInt()};
}

at::Tensor defined_or_undefined(bool keep, const at::Tensor& t) { return keep ? t : at::Tensor(); }

const at::Tensor& value_or_undefined(const std::optional<at::Tensor>& t) {
  static const at::Tensor undefined;
  return t.has_value() ? *t : undefined;
}

std::optional<at::Tensor> optional_of(const at::Tensor& t) {
  return t.defined() ? std::optional<at::Tensor>(t) : std::nullopt;
}

// d act(z) / dz applied to grad_output. relu and relu6 read it off the output; silu and gelu need
// the pre-activation z, recomputed rather than kept alive as a second output.
template <typename Preactivation>
at::Tensor activation_grad(const at::Tensor& grad_output, Activation activation, const at::Tensor& output,
                           const Preactivation& preactivation) {
  switch (activation) {
    case Activation::kNone: return grad_output;
    case Activation::kReLU: return at::threshold_backward(grad_output, output, 0);
    case Activation::kReLU6: return at::hardtanh_backward(grad_output, output, 0, 6);
    case Activation::kSiLU: {
      // Written out rather than aten's silu_backward, which has no derivative of its own.
      const at::Tensor z = preactivation();
      const at::Tensor s = at::sigmoid(z);
      return grad_output * s * (1 + z * (1 - s));
    }
    case Activation::kGELU: return at::gelu_backward(grad_output, preactivation());
    case Activation::kHardswish: return at::hardswish_backward(grad_output, preactivation());
  }
  TORCH_INTERNAL_ASSERT(false, "unknown activation");
}

// ---- conv_forward: y = act(conv(x, W) + b + r) ----------------------------------------------------

struct ConvForward : torch::autograd::Function<ConvForward> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& input, const at::Tensor& weight,
                            const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual,
                            at::IntArrayRef stride, at::IntArrayRef padding, int64_t groups,
                            c10::string_view activation) {
    at::Tensor output;
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      output = call_conv_forward(input, weight, bias, residual, stride, padding, groups, activation);
    }
    const Activation act = parse_activation(activation);
    const bool recompute = act == Activation::kSiLU || act == Activation::kGELU || act == Activation::kHardswish;
    const at::Tensor& b = value_or_undefined(bias);
    const at::Tensor& r = value_or_undefined(residual);
    // grad-input reads the weight, grad-weight the input; recomputing z reads all four.
    ctx->save_for_backward({defined_or_undefined(weight.requires_grad() || recompute, input),
                            defined_or_undefined(input.requires_grad() || recompute, weight),
                            defined_or_undefined(recompute, b), defined_or_undefined(recompute, r),
                            defined_or_undefined(act == Activation::kReLU || act == Activation::kReLU6, output)});
    save_conv(ctx, stride, padding, groups);
    // grad-input needs the input's size, not the input: kept apart, as the input may not be saved.
    ctx->saved_data["input_size"] = input.sym_sizes().vec();
    ctx->saved_data["activation"] = static_cast<int64_t>(act);
    ctx->saved_data["has_bias"] = b.defined();
    ctx->saved_data["has_residual"] = r.defined();
    return output;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &input = saved[0], &weight = saved[1], &output = saved[4];
    const ConvParams conv = saved_conv(ctx);
    const auto act = static_cast<Activation>(ctx->saved_data["activation"].toInt());
    // Gradient edges exist for the tensor arguments that were given: input, weight, then bias and
    // residual when present.
    size_t edge = 0;
    const bool needs_input = ctx->needs_input_grad(edge++);
    const bool needs_weight = ctx->needs_input_grad(edge++);
    const bool needs_bias = ctx->saved_data["has_bias"].toBool() && ctx->needs_input_grad(edge++);
    const bool needs_residual = ctx->saved_data["has_residual"].toBool() && ctx->needs_input_grad(edge++);

    const at::Tensor grad_z = activation_grad(grad_outputs[0], act, output, [&] {
      return call_conv_forward(input, weight, optional_of(saved[2]), optional_of(saved[3]), conv.stride,
                               conv.padding, conv.groups, "none");
    });
    at::Tensor grad_input, grad_weight, grad_bias, grad_residual;
    if (needs_input)
      grad_input = call_conv_backward_input(grad_z, weight, ctx->saved_data["input_size"].toSymIntVector(),
                                            conv.stride, conv.padding, conv.groups);
    if (needs_weight) grad_weight = call_conv_backward_weight(grad_z, input, conv.stride, conv.padding, conv.groups);
    if (needs_bias) grad_bias = grad_z.sum({0, 2, 3});
    if (needs_residual) grad_residual = grad_z;
    return {grad_input, grad_weight, grad_bias, grad_residual, {}, {}, {}, {}};
  }
};

// ---- conv_backward_input: bilinear in (grad_output, weight) ---------------------------------------

struct ConvBackwardInput : torch::autograd::Function<ConvBackwardInput> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& grad_output, const at::Tensor& weight,
                            c10::SymIntArrayRef input_size, at::IntArrayRef stride, at::IntArrayRef padding,
                            int64_t groups) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    ctx->save_for_backward({defined_or_undefined(weight.requires_grad(), grad_output),
                            defined_or_undefined(grad_output.requires_grad(), weight)});
    save_conv(ctx, stride, padding, groups);
    return call_conv_backward_input(grad_output, weight, input_size, stride, padding, groups);
  }

  // Its adjoints: a forward convolution (for grad_output) and a grad-weight (for the weight).
  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &grad_output = saved[0], &weight = saved[1], &grad_grad_input = grad_outputs[0];
    const ConvParams conv = saved_conv(ctx);
    at::Tensor grad_grad_output, grad_weight;
    if (ctx->needs_input_grad(0))
      grad_grad_output = call_conv_forward(grad_grad_input, weight, std::nullopt, std::nullopt, conv.stride,
                                           conv.padding, conv.groups, "none");
    if (ctx->needs_input_grad(1))
      grad_weight = call_conv_backward_weight(grad_output, grad_grad_input, conv.stride, conv.padding, conv.groups);
    return {grad_grad_output, grad_weight, {}, {}, {}, {}};
  }
};

// ---- conv_backward_weight: bilinear in (grad_output, input) ---------------------------------------

struct ConvBackwardWeight : torch::autograd::Function<ConvBackwardWeight> {
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& grad_output, const at::Tensor& input,
                            at::IntArrayRef stride, at::IntArrayRef padding, int64_t groups) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    // Both are kept whenever either needs a gradient: the grad-input adjoint reads the input's size.
    ctx->save_for_backward({grad_output, input});
    save_conv(ctx, stride, padding, groups);
    return call_conv_backward_weight(grad_output, input, stride, padding, groups);
  }

  // Its adjoints: a forward convolution (for grad_output) and a grad-input (for the input).
  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const variable_list saved = ctx->get_saved_variables();
    const at::Tensor &grad_output = saved[0], &input = saved[1], &grad_grad_weight = grad_outputs[0];
    const ConvParams conv = saved_conv(ctx);
    at::Tensor grad_grad_output, grad_input;
    if (ctx->needs_input_grad(0))
      grad_grad_output = call_conv_forward(input, grad_grad_weight, std::nullopt, std::nullopt, conv.stride,
                                           conv.padding, conv.groups, "none");
    if (ctx->needs_input_grad(1))
      grad_input = call_conv_backward_input(grad_output, grad_grad_weight, input.sym_sizes(), conv.stride,
                                            conv.padding, conv.groups);
    return {grad_grad_output, grad_input, {}, {}, {}};
  }
};

// Forward-mode AD (torch.func.jvp, jacfwd, torch.autograd.forward_ad) has no formula here. A C++
// Function refuses tangents on inputs that need gradients; an input without would pass through the
// fast path below and its tangent be dropped, a silent zero: refused as well, in the same words.
void check_no_tangents(const char* op, std::initializer_list<const at::Tensor*> inputs) {
  for (const at::Tensor* t : inputs)
    TORCH_CHECK(!(t->defined() && t->_fw_grad(/*level=*/0).defined()), "pointwise_cuda::", op,
                ": forward-mode AD (torch.func.jvp, jacfwd, torch.autograd.forward_ad) is not supported; "
                "use reverse mode (backward, torch.autograd.grad)");
}

// Whether this call has a graph to record. Without one (grad mode off, as in inference and in a
// backward that is not itself differentiated, or no input that needs a gradient) the op runs
// directly below autograd: Function::apply would build a graph node only to drop it (~3 us a call).
bool records_graph(std::initializer_list<const at::Tensor*> inputs) {
  if (!at::GradMode::is_enabled()) return false;
  for (const at::Tensor* t : inputs)
    if (t->defined() && t->requires_grad()) return true;
  return false;
}

at::Tensor conv_forward_autograd(const at::Tensor& input, const at::Tensor& weight,
                                 const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& residual,
                                 at::IntArrayRef stride, at::IntArrayRef padding, int64_t groups,
                                 c10::string_view activation) {
  check_no_tangents("conv_forward", {&input, &weight, &value_or_undefined(bias), &value_or_undefined(residual)});
  if (!records_graph({&input, &weight, &value_or_undefined(bias), &value_or_undefined(residual)})) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return call_conv_forward(input, weight, bias, residual, stride, padding, groups, activation);
  }
  return ConvForward::apply(input, weight, bias, residual, stride, padding, groups, activation);
}

at::Tensor conv_backward_input_autograd(const at::Tensor& grad_output, const at::Tensor& weight,
                                        c10::SymIntArrayRef input_size, at::IntArrayRef stride,
                                        at::IntArrayRef padding, int64_t groups) {
  check_no_tangents("conv_backward_input", {&grad_output, &weight});
  if (!records_graph({&grad_output, &weight})) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return call_conv_backward_input(grad_output, weight, input_size, stride, padding, groups);
  }
  return ConvBackwardInput::apply(grad_output, weight, input_size, stride, padding, groups);
}

at::Tensor conv_backward_weight_autograd(const at::Tensor& grad_output, const at::Tensor& input,
                                         at::IntArrayRef stride, at::IntArrayRef padding, int64_t groups) {
  check_no_tangents("conv_backward_weight", {&grad_output, &input});
  if (!records_graph({&grad_output, &input})) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return call_conv_backward_weight(grad_output, input, stride, padding, groups);
  }
  return ConvBackwardWeight::apply(grad_output, input, stride, padding, groups);
}

}  // namespace

TORCH_LIBRARY_IMPL(pointwise_cuda, Autograd, m) {
  m.impl("conv_forward", &conv_forward_autograd);
  m.impl("conv_backward_input", &conv_backward_input_autograd);
  m.impl("conv_backward_weight", &conv_backward_weight_autograd);
}

}  // namespace pointwise
