// The three convolutions as channel GEMMs (conv_gemm.h).
#include "cuda/conv_gemm.h"

#include <ATen/ops/empty.h>

#include "cuda/element_types.h"
#include "cuda/gemm_autotune.h"
#include "cuda/gemm_launch.h"
#include "cuda/operand_layout.h"

namespace pointwise::cuda {
namespace {

size_t element_size(at::ScalarType dtype) { return c10::elementSize(dtype); }

cudaError_t launch(const GemmProblem& p, const GemmKind& kind, BlockTile tile, bool partials, const Device& device) {
  TORCH_CHECK(int64_t(p.groups) * p.splits <= 65535, "pointwise_conv2d on CUDA supports up to 65535 groups, got ",
              p.groups);
  return dispatch_element_type(kind.dtype, kind.tf32, [&](auto math, auto element) {
    return launch_gemm<decltype(math)::value, decltype(element)>(p, tile, kind.reduction, partials, device.stream);
  });
}

// Runs `p` (its real output, bias, residual and activation) with its K range cut into p.splits
// chunks: the GEMM writes each chunk's partial sums to a workspace in the accumulator type, laid
// out like C with C's contiguous dimension fastest, and launch_finish_splits adds them in split
// order and applies the epilogue into C.
cudaError_t launch_split(const GemmProblem& p, const GemmKind& kind, BlockTile tile, const at::Tensor& like,
                         const Device& device) {
  const at::ScalarType acc_dtype = kind.dtype == at::kDouble ? at::kDouble : at::kFloat;
  const int64_t count = int64_t(p.groups) * p.m * p.n;
  at::Tensor partials = at::empty({p.splits, count}, like.options().dtype(acc_dtype));
  GemmProblem q = p;
  q.c = {partials.data_ptr(), int64_t(p.m) * p.n, channel_dim(p.c_m_contiguous ? 1 : p.n),
         channel_dim(p.c_m_contiguous ? p.m : 1)};
  q.c_split_stride = count;
  q.bias = nullptr;
  q.residual = nullptr;
  q.activation = Activation::kNone;
  const size_t acc_size = element_size(acc_dtype);
  q.c.vectorized = p.c_m_contiguous ? runs_fit(q.c, q.c.rows, q.m, q.c.cols, acc_size, count)
                                    : runs_fit(q.c, q.c.cols, q.n, q.c.rows, acc_size, count);
  if (cudaError_t err = launch(q, kind, tile, /*partials=*/true, device); err != cudaSuccess) return err;
  return dispatch_element_type(kind.dtype, kind.tf32, [&](auto, auto element) {
    return launch_finish_splits<decltype(element)>(p, partials.data_ptr(), device.stream);
  });
}

// Runs p by `plan`: a GEMM split along K (or reducing over pixels) writes partial sums that a
// second kernel adds up with the epilogue; an unsplit channel reduction applies it in the GEMM.
cudaError_t run_plan(GemmProblem p, const GemmKind& kind, const Plan& plan, const at::Tensor& like,
                     const Device& device) {
  set_splits(p, plan.splits);
  if (writes_partials(plan, kind.reduction)) return launch_split(p, kind, plan.tile, like, device);
  return launch(p, kind, plan.tile, /*partials=*/false, device);
}

// Runs p by the heuristic's plan or, with autotuning on, by the plan kept for this problem
// (gemm_autotune.h). The output is always that of the plan kept, so a problem's results have the
// same bits on every call of the process, but for calls captured into a CUDA graph before the
// problem was tuned (they run the heuristic's plan). float64 has one tile: nothing to tune.
cudaError_t run_gemm(Op op, const GemmProblem& p, const at::Tensor& like, Reduction reduction, const Device& device) {
  const GemmKind kind{like.scalar_type(), like.scalar_type() == at::kFloat && tf32_allowed(), reduction};
  const Plan heuristic = heuristic_plan(p, kind, device);
  auto run = [&](const Plan& plan) { return run_plan(p, kind, plan, like, device); };
  if (!device.autotune || kind.dtype == at::kDouble) return run(heuristic);
  return run_tuned(op, p, kind, heuristic, device, run);
}

}  // namespace

cudaError_t gemm_forward(const ForwardArgs& args, const Device& device) {
  const ConvGeometry& g = args.geometry;
  const auto in = activation_layout(g, g.in_channels, g.in_h, g.in_w);
  const auto out = activation_layout(g, g.out_channels, g.out_h, g.out_w);
  GemmProblem p;
  p.m = checked_int32(g.out_channels_per_group(), "output channels");
  p.k = checked_int32(g.in_channels_per_group(), "input channels");
  p.n = checked_int32(g.batch * g.out_pixels(), "pixels in the batch");
  p.groups = checked_int32(g.groups, "groups");
  p.k_per_split = p.k;
  p.a = {args.weight.data_ptr(), int64_t(p.m) * p.k, channel_dim(p.k), channel_dim(1)};
  p.b = {args.input.data_ptr(), p.k * in.channel_stride, channel_dim(in.channel_stride), pixel_dim(g, in, true)};
  p.c = {args.output.data_ptr(), p.m * out.channel_stride, channel_dim(out.channel_stride), pixel_dim(g, out, false)};
  p.a_k_contiguous = true;
  p.b_k_contiguous = channels_contiguous(g);
  p.c_m_contiguous = channels_contiguous(g);
  p.bias = args.bias.defined() ? args.bias.data_ptr() : nullptr;
  p.residual = args.residual.defined() ? args.residual.data_ptr() : nullptr;
  p.activation = args.activation;
  const size_t es = element_size(args.input.scalar_type());
  set_vectorization(p, es, es, p.residual);
  return run_gemm(Op::kForward, p, args.input, Reduction::kChannels, device);
}

cudaError_t gemm_backward_input(const BackwardInputArgs& args, const Device& device) {
  const ConvGeometry& g = args.geometry;
  const auto in = activation_layout(g, g.in_channels, g.in_h, g.in_w);
  const auto out = activation_layout(g, g.out_channels, g.out_h, g.out_w);
  GemmProblem p;  // grad_input[ci, pixel] = sum_co W[co, ci] grad_output[co, pixel]
  p.m = checked_int32(g.in_channels_per_group(), "input channels");
  p.k = checked_int32(g.out_channels_per_group(), "output channels");
  p.n = checked_int32(g.batch * g.out_pixels(), "pixels in the batch");
  p.groups = checked_int32(g.groups, "groups");
  p.k_per_split = p.k;
  p.a = {args.weight.data_ptr(), int64_t(p.m) * p.k, channel_dim(1), channel_dim(p.m)};
  p.b = {args.grad_output.data_ptr(), p.k * out.channel_stride, channel_dim(out.channel_stride),
         pixel_dim(g, out, false)};
  p.c = {args.grad_input.data_ptr(), p.m * in.channel_stride, channel_dim(in.channel_stride), pixel_dim(g, in, true)};
  p.a_k_contiguous = false;
  p.b_k_contiguous = channels_contiguous(g);
  p.c_m_contiguous = channels_contiguous(g);
  const size_t es = element_size(args.grad_output.scalar_type());
  set_vectorization(p, es, es, nullptr);
  return run_gemm(Op::kGradInput, p, args.grad_output, Reduction::kChannels, device);
}

cudaError_t gemm_backward_weight(const BackwardWeightArgs& args, const Device& device) {
  const ConvGeometry& g = args.geometry;
  const auto in = activation_layout(g, g.in_channels, g.in_h, g.in_w);
  const auto out = activation_layout(g, g.out_channels, g.out_h, g.out_w);
  GemmProblem p;  // grad_weight[co, ci] = sum_pixel grad_output[co, pixel] input[ci, map(pixel)]
  p.m = checked_int32(g.out_channels_per_group(), "output channels");
  p.n = checked_int32(g.in_channels_per_group(), "input channels");
  p.k = checked_int32(g.batch * g.out_pixels(), "pixels in the batch");
  p.groups = checked_int32(g.groups, "groups");
  p.a = {args.grad_output.data_ptr(), p.m * out.channel_stride, channel_dim(out.channel_stride),
         pixel_dim(g, out, false)};
  p.b = {args.input.data_ptr(), p.n * in.channel_stride, pixel_dim(g, in, true), channel_dim(in.channel_stride)};
  p.a_k_contiguous = !channels_contiguous(g);
  p.b_k_contiguous = !channels_contiguous(g);

  p.c = {args.grad_weight.data_ptr(), int64_t(p.m) * p.n, channel_dim(p.n), channel_dim(1)};
  p.c_m_contiguous = false;
  const size_t es = element_size(args.input.scalar_type());
  set_vectorization(p, es, es, nullptr);
  return run_gemm(Op::kGradWeight, p, args.input, Reduction::kPixels, device);
}

}  // namespace pointwise::cuda
