// The three convolutions as channel GEMMs (conv_gemm.h).
#include "cuda/conv_gemm.h"

#include <ATen/Context.h>
#include <ATen/ops/empty.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <algorithm>
#include <limits>
#include <sstream>
#include <string>
#include <type_traits>
#include <vector>

#include "autotune.h"

#include "cuda/gemm_launch.h"

namespace pointwise::cuda {
namespace {

// Split-K chunks are multiples of this, which every tile's BK divides.
constexpr int32_t kSplitGranule = 32;

int32_t checked_int32(int64_t value, const char* what) {
  TORCH_CHECK(value <= std::numeric_limits<int32_t>::max(), "pointwise_conv2d on CUDA supports up to 2^31 - 1 ",
              what, ", got ", value);
  return static_cast<int32_t>(value);
}

// Whether the GEMM sees the activations with their channels contiguous. NHWC tensors have them so;
// so do NCHW ones whose images are single pixels (squeeze-excite layers), where both layouts are
// the same bytes: read that way their channels move as 16-byte vectors instead of one by one.
bool channels_contiguous(const ConvGeometry& g) {
  return g.channels_last || (g.in_pixels() == 1 && g.out_pixels() == 1);
}

// The layout's strides of an activation-sized tensor with `channels` channels on an h x w grid.
struct ActivationLayout {
  int64_t channel_stride, pixel_stride, image_stride;
};
ActivationLayout layout_of(const ConvGeometry& g, int64_t channels, int64_t h, int64_t w) {
  return channels_contiguous(g) ? ActivationLayout{1, channels, channels * h * w}
                                : ActivationLayout{h * w, 1, channels * h * w};
}

DimIndex channel_dim(int64_t stride) {
  DimIndex d;
  d.stride = stride;
  return d;
}

// The GEMM's pixel dimension (the output grid, all images) on a tensor of the given grid:
// the output's own grid, or the input's, which the stride and padding map onto.
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

// Whether the operand's contiguous dimension can move in runs of `bytes` (16: vectors, 4: pairs of
// 16-bit elements): every run must start aligned and lie wholly inside one image's unmapped pixels
// or one row's channels.
bool runs_fit(const GemmOperand& op, const DimIndex& contiguous, int64_t extent, const DimIndex& other,
              size_t element_size, int64_t split_stride = 0, int64_t bytes = 16) {
  const int64_t v = bytes / static_cast<int64_t>(element_size);
  auto aligned = [v](int64_t x) { return x % v == 0; };
  if (v < 1 || reinterpret_cast<uintptr_t>(op.data) % bytes != 0) return false;
  if (!aligned(op.group_stride) || !aligned(split_stride) || !aligned(extent)) return false;
  if (contiguous.stride != 1) return false;
  if (contiguous.pixels != 0 && (contiguous.mapped || !aligned(contiguous.pixels) || !aligned(contiguous.image_stride)))
    return false;
  return aligned(other.stride) && (other.pixels == 0 || aligned(other.image_stride));
}

// How a GEMM input's tiles are loaded: 16-byte vectors, else pairs of 16-bit elements, else one by one.
void set_runs(GemmOperand& op, bool rows_contiguous, int64_t rows, int64_t cols, size_t element_size) {
  const DimIndex& contiguous = rows_contiguous ? op.rows : op.cols;
  const DimIndex& other = rows_contiguous ? op.cols : op.rows;
  const int64_t extent = rows_contiguous ? rows : cols;
  op.vectorized = runs_fit(op, contiguous, extent, other, element_size);
  op.paired = !op.vectorized && element_size == 2 && runs_fit(op, contiguous, extent, other, element_size, 0, 4);
}

void set_vectorization(GemmProblem& p, size_t element_size, size_t c_element_size, const void* residual) {
  set_runs(p.a, !p.a_k_contiguous, p.m, p.k, element_size);  // A is m x k
  set_runs(p.b, p.b_k_contiguous, p.k, p.n, element_size);   // B is k x n
  p.c.vectorized = (p.c_m_contiguous ? runs_fit(p.c, p.c.rows, p.m, p.c.cols, c_element_size, p.c_split_stride)
                                     : runs_fit(p.c, p.c.cols, p.n, p.c.rows, c_element_size, p.c_split_stride)) &&
                   reinterpret_cast<uintptr_t>(residual) % 16 == 0;
}

// F.conv2d's rule: fp32 convolutions may use TF32 exactly when cuDNN's convolutions may
// (torch.backends.cudnn.allow_tf32, or cudnn.conv.fp32_precision). Asking for the conv flag by
// name: without it PyTorch raises when conv and RNN precisions were set apart.
bool tf32_allowed() { return at::globalContext().allowTF32CuDNN(at::Float32Op::CONV); }

// Runs the GEMM in the tensors' dtype.
cudaError_t launch(const GemmProblem& p, at::ScalarType dtype, TileShape shape, Reduction reduction,
                   const Device& device) {
  TORCH_CHECK(int64_t(p.groups) * p.splits <= 65535, "pointwise_conv2d on CUDA supports up to 65535 groups, got ",
              p.groups);
  switch (dtype) {
    case at::kFloat:
      return tf32_allowed() ? launch_gemm<Math::kTf32, float>(p, shape, reduction, device.stream)
                            : launch_gemm<Math::kSimt, float>(p, shape, reduction, device.stream);
    case at::kDouble: return launch_gemm<Math::kSimt, double>(p, shape, reduction, device.stream);
    case at::kHalf: return launch_gemm<Math::kMma16, __half>(p, shape, reduction, device.stream);
    case at::kBFloat16: return launch_gemm<Math::kMma16, __nv_bfloat16>(p, shape, reduction, device.stream);
    default: TORCH_CHECK(false, "unsupported dtype ", dtype);
  }
}

size_t element_size(at::ScalarType dtype) { return c10::elementSize(dtype); }

// Output tiles of the given shape over all groups: the GEMM's blocks when it is not split.
int64_t tile_count(const GemmProblem& p, TileShape shape) {
  const TileExtent t = tile_extent(shape);
  return ((int64_t(p.m) + t.m - 1) / t.m) * ((int64_t(p.n) + t.n - 1) / t.n) * p.groups;
}

// The largest tile that still gives every SM about two blocks; narrow tiles where one GEMM side
// is small, so that no block computes mostly padding.
TileShape choose_tile(const GemmProblem& p, const Device& device) {
  const int64_t enough = 2 * device.multiprocessors;
  if (p.m <= 32) return TileShape::kNarrowM;
  if (p.n <= 32) return TileShape::kNarrowN;
  if (p.m > 64 && p.n > 64 && tile_count(p, TileShape::kLarge) >= enough) return TileShape::kLarge;
  if (p.m <= 48 && tile_count(p, TileShape::kNarrowM) >= tile_count(p, TileShape::kMedium) / 2)
    return TileShape::kNarrowM;
  return TileShape::kMedium;
}

// Cuts the K range into about `wanted` chunks, each a multiple of kSplitGranule (one chunk: all of K).
void set_splits(GemmProblem& p, int64_t wanted) {
  if (wanted <= 1) {
    p.splits = 1;
    p.k_per_split = p.k;
    return;
  }
  const int64_t chunk = (p.k + wanted - 1) / wanted;
  p.k_per_split = checked_int32((chunk + kSplitGranule - 1) / kSplitGranule * kSplitGranule, "K per split");
  p.splits = static_cast<int32_t>((p.k + p.k_per_split - 1) / p.k_per_split);
}

// The number of chunks set_splits makes of p's K range for `wanted`.
int32_t splits_for(GemmProblem p, int64_t wanted) {
  set_splits(p, wanted);
  return p.splits;
}

// The heuristic's plan for a channel reduction (forward, grad-input): the tile of choose_tile, and
// its K range split when those tiles leave SMs idle -- squeeze-excite layers at 1x1, few output
// channels on a 7x7 map -- into enough chunks of at least two pipeline stages for about two medium
// tiles per SM (split GEMMs run on the medium tile). A first rule, not yet tuned on a GPU.
Plan channel_plan(const GemmProblem& p, const Device& device) {
  const TileShape shape = choose_tile(p, device);
  const int64_t sms = device.multiprocessors;
  if (tile_count(p, shape) >= sms) return {shape, 1};
  const int64_t medium = tile_count(p, TileShape::kMedium);
  const int64_t wanted = std::min<int64_t>((2 * sms + medium - 1) / medium, p.k / (2 * kSplitGranule));
  const int32_t splits = wanted < 2 ? 1 : splits_for(p, wanted);
  return splits > 1 ? Plan{TileShape::kMedium, splits} : Plan{shape, 1};
}

// Grad-weight's reduction over every pixel of the batch is long (~10^5) and its output small: the
// heuristic splits it so that the grid fills the GPU with about two blocks per SM, each split
// writing its own fp32 partials, summed in a fixed order. A weight of at most 64 x 64 per group
// takes the medium tile: in a large one most loads would be zero fill.
int64_t most_pixel_splits(const GemmProblem& p) { return std::max<int64_t>(1, p.k / (4 * kSplitGranule)); }
Plan pixel_plan(const GemmProblem& p, const Device& device) {
  const TileShape shape = p.m <= 64 && p.n <= 64 ? TileShape::kMedium : TileShape::kLarge;
  const int64_t tiles = tile_count(p, shape);
  return {shape, splits_for(p, std::clamp<int64_t>((2 * device.multiprocessors + tiles - 1) / tiles, 1,
                                                   most_pixel_splits(p)))};
}

// Split partials autotuning may allocate for one candidate: 32 M accumulators (128 MB of fp32).
constexpr int64_t kMostCandidatePartials = int64_t(1) << 25;

// What autotuning times besides the heuristic's plan. Channel reductions: every tile unsplit, and,
// where medium tiles would not give every SM two, the medium tile with the K range cut in 2, 4, 8,
// ... chunks of at least two granules. Grad-weight: the large and medium tiles with a quarter to
// four times the heuristic's splits. None whose partial sums would pass kMostCandidatePartials.
std::vector<Plan> candidate_plans(const GemmProblem& p, Reduction reduction, const Plan& heuristic,
                                  const Device& device) {
  std::vector<Plan> plans{heuristic};
  auto add = [&](Plan plan) {
    const bool known = std::any_of(plans.begin(), plans.end(), [&](const Plan& q) {
      return q.tile == plan.tile && q.splits == plan.splits;
    });
    const bool fits = plan.splits == 1 || int64_t(plan.splits) * p.groups * p.m * p.n <= kMostCandidatePartials;
    if (!known && fits && int64_t(p.groups) * plan.splits <= 65535) plans.push_back(plan);
  };
  if (reduction == Reduction::kChannels) {
    for (TileShape tile : {TileShape::kLarge, TileShape::kMedium, TileShape::kNarrowM, TileShape::kNarrowN})
      add({tile, 1});
    if (tile_count(p, TileShape::kMedium) < 2 * device.multiprocessors)
      for (int64_t wanted = 2; wanted <= 64 && p.k >= wanted * 2 * kSplitGranule; wanted *= 2)
        add({TileShape::kMedium, splits_for(p, wanted)});
  } else {
    const int64_t s = heuristic.splits;
    for (TileShape tile : {TileShape::kLarge, TileShape::kMedium})
      for (int64_t wanted : {s / 4, s / 2, s, 2 * s, 4 * s})
        add({tile, splits_for(p, std::clamp<int64_t>(wanted, 1, most_pixel_splits(p)))});
  }
  return plans;
}

// Runs `p` (its real output, bias, residual and activation) with its K range cut into p.splits
// chunks: the GEMM writes each chunk's partial sums to a workspace in the accumulator type, laid
// out like C with C's contiguous dimension fastest, and launch_finish_splits adds them in split
// order and applies the epilogue into C.
cudaError_t launch_split(const GemmProblem& p, const at::Tensor& like, TileShape shape, Reduction reduction,
                         const Device& device) {
  const at::ScalarType dtype = like.scalar_type();
  const at::ScalarType acc_dtype = dtype == at::kDouble ? at::kDouble : at::kFloat;
  const int64_t count = int64_t(p.groups) * p.m * p.n;
  at::Tensor partials = at::empty({p.splits, count}, like.options().dtype(acc_dtype));
  GemmProblem q = p;
  q.c = {partials.data_ptr(), int64_t(p.m) * p.n, channel_dim(p.c_m_contiguous ? 1 : p.n),
         channel_dim(p.c_m_contiguous ? p.m : 1)};
  q.c_split_stride = count;
  q.bias = nullptr;
  q.residual = nullptr;
  q.activation = 0;
  const size_t acc_size = element_size(acc_dtype);
  q.c.vectorized = p.c_m_contiguous ? runs_fit(q.c, q.c.rows, q.m, q.c.cols, acc_size, count)
                                    : runs_fit(q.c, q.c.cols, q.n, q.c.rows, acc_size, count);
  if (cudaError_t err = launch(q, dtype, shape, reduction, device); err != cudaSuccess) return err;

  const void* sums = partials.data_ptr();
  switch (dtype) {
    case at::kFloat: return launch_finish_splits<float>(p, sums, device.stream);
    case at::kDouble: return launch_finish_splits<double>(p, sums, device.stream);
    case at::kHalf: return launch_finish_splits<__half>(p, sums, device.stream);
    case at::kBFloat16: return launch_finish_splits<__nv_bfloat16>(p, sums, device.stream);
    default: TORCH_CHECK(false, "unsupported dtype ", dtype);
  }
}

// Runs p by `plan`: a GEMM split along K (or reducing over pixels) writes partial sums that a
// second kernel adds up with the epilogue; an unsplit channel reduction applies it in the GEMM.
cudaError_t run_plan(GemmProblem p, const Plan& plan, const at::Tensor& like, Reduction reduction,
                     const Device& device) {
  set_splits(p, plan.splits);
  if (reduction == Reduction::kPixels || p.splits > 1) return launch_split(p, like, plan.tile, reduction, device);
  return launch(p, like.scalar_type(), plan.tile, reduction, device);
}

// ---- autotuning ----------------------------------------------------------------------------------

int64_t plan_code(const Plan& plan) { return int64_t(plan.tile) << 32 | plan.splits; }
Plan plan_of(int64_t code) { return {static_cast<TileShape>(code >> 32), static_cast<int32_t>(code & 0xffffffff)}; }

// Everything a plan's speed depends on: its bytes are the autotuning cache's key (cheap enough to
// build on every call with autotuning on), and describe() writes it out for the reports. All fields
// int64_t, so no padding byte is left undefined in the key.
struct ProblemKey {
  int64_t op, dtype, tf32, m, n, k, groups;
  int64_t a_k_contiguous, b_k_contiguous, c_m_contiguous;
  int64_t a_vectorized, b_vectorized, c_vectorized, a_paired, b_paired;
  int64_t b_rows_pixels, b_rows_mapped, b_cols_pixels, b_cols_mapped, c_cols_pixels, c_cols_mapped;
  int64_t bias, residual, activation, device, sms;
};
static_assert(std::has_unique_object_representations_v<ProblemKey>, "the key's bytes must be its value");

enum class Op { kForward, kGradInput, kGradWeight };
const char* op_name(int64_t op) {
  return op == int64_t(Op::kForward) ? "forward" : op == int64_t(Op::kGradInput) ? "grad_input" : "grad_weight";
}

ProblemKey key_of(Op op, const GemmProblem& p, at::ScalarType dtype, const Device& device) {
  return {int64_t(op), int64_t(dtype), dtype == at::kFloat && tf32_allowed(), p.m, p.n, p.k, p.groups,
          p.a_k_contiguous, p.b_k_contiguous, p.c_m_contiguous,
          p.a.vectorized, p.b.vectorized, p.c.vectorized, p.a.paired, p.b.paired,
          p.b.rows.pixels, p.b.rows.mapped, p.b.cols.pixels, p.b.cols.mapped, p.c.cols.pixels, p.c.cols.mapped,
          p.bias != nullptr, p.residual != nullptr, p.activation, device.index, device.multiprocessors};
}

std::string describe(const ProblemKey& k) {
  auto pixels = [](int64_t count, int64_t mapped) {
    return count == 0 ? std::string("-") : std::to_string(count) + (mapped ? "mapped" : "");
  };
  std::ostringstream s;
  s << op_name(k.op) << " " << c10::toString(static_cast<at::ScalarType>(k.dtype)) << (k.tf32 ? "/tf32" : "")
    << " m=" << k.m << " n=" << k.n << " k=" << k.k << " groups=" << k.groups << " contiguous="
    << (k.a_k_contiguous ? "k" : "m") << (k.b_k_contiguous ? "k" : "n") << (k.c_m_contiguous ? "m" : "n")
    << " vectors=" << k.a_vectorized << k.b_vectorized << k.c_vectorized << " pairs=" << k.a_paired << k.b_paired
    << " pixels=" << pixels(k.b_rows_pixels, k.b_rows_mapped) << "," << pixels(k.b_cols_pixels, k.b_cols_mapped)
    << "," << pixels(k.c_cols_pixels, k.c_cols_mapped) << " epilogue=" << k.bias << k.residual << k.activation
    << " device=" << k.device << " sms=" << k.sms;
  return s.str();
}

// Runs p by the heuristic's plan or, with autotuning on, by the plan kept for this problem: the
// first call of a problem times every candidate (one untimed run, then the best of three) and keeps
// the fastest. The output is always that of the plan kept, so a problem's results have the same
// bits on every call of the process, but for calls captured into a CUDA graph before the problem
// was tuned (they run the heuristic's plan). float64 has one tile: nothing to tune.
cudaError_t run_gemm(Op op, const GemmProblem& p, const Plan& heuristic, const at::Tensor& like,
                     Reduction reduction, const Device& device) {
  if (!device.autotune || like.scalar_type() == at::kDouble) return run_plan(p, heuristic, like, reduction, device);
  const ProblemKey problem = key_of(op, p, like.scalar_type(), device);
  const std::string key(reinterpret_cast<const char*>(&problem), sizeof(problem));
  if (const auto kept = autotune::lookup(key)) return run_plan(p, plan_of(*kept), like, reduction, device);
  if (!device.time) return run_plan(p, heuristic, like, reduction, device);

  autotune::Entry entry{describe(problem), {}, 0};
  for (const Plan& plan : candidate_plans(p, reduction, heuristic, device)) {
    auto launches = [&] { return run_plan(p, plan, like, reduction, device); };
    if (cudaError_t err = launches(); err != cudaSuccess) return err;
    double best = std::numeric_limits<double>::infinity();
    for (int i = 0; i < 3; ++i) {
      double ms = 0;
      if (cudaError_t err = device.time(plan, launches, ms); err != cudaSuccess) return err;
      best = std::min(best, ms);
    }
    if (entry.timings.empty() || best < entry.timings[entry.chosen].ms) entry.chosen = entry.timings.size();
    entry.timings.push_back({plan_name(plan), plan_code(plan), best});
  }
  return run_plan(p, plan_of(autotune::store(key, std::move(entry))), like, reduction, device);
}

}  // namespace

std::string plan_name(const Plan& plan) {
  const char* tile = plan.tile == TileShape::kMedium    ? "medium"
                     : plan.tile == TileShape::kNarrowM ? "narrow_m"
                     : plan.tile == TileShape::kNarrowN ? "narrow_n"
                                                        : "large";
  return std::string(tile) + " x" + std::to_string(plan.splits);
}

cudaError_t gemm_forward(const ForwardArgs& args, const Device& device) {
  const ConvGeometry& g = args.geometry;
  const auto in = layout_of(g, g.in_channels, g.in_h, g.in_w);
  const auto out = layout_of(g, g.out_channels, g.out_h, g.out_w);
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
  p.activation = static_cast<int32_t>(args.activation);
  const size_t es = element_size(args.input.scalar_type());
  set_vectorization(p, es, es, p.residual);
  return run_gemm(Op::kForward, p, channel_plan(p, device), args.input, Reduction::kChannels, device);
}

cudaError_t gemm_backward_input(const BackwardInputArgs& args, const Device& device) {
  const ConvGeometry& g = args.geometry;
  const auto in = layout_of(g, g.in_channels, g.in_h, g.in_w);
  const auto out = layout_of(g, g.out_channels, g.out_h, g.out_w);
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
  return run_gemm(Op::kGradInput, p, channel_plan(p, device), args.grad_output, Reduction::kChannels, device);
}

cudaError_t gemm_backward_weight(const BackwardWeightArgs& args, const Device& device) {
  const ConvGeometry& g = args.geometry;
  const auto in = layout_of(g, g.in_channels, g.in_h, g.in_w);
  const auto out = layout_of(g, g.out_channels, g.out_h, g.out_w);
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

  return run_gemm(Op::kGradWeight, p, pixel_plan(p, device), args.input, Reduction::kPixels, device);
}

}  // namespace pointwise::cuda
