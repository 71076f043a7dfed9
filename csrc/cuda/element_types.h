// The tensors' dtype as what the GEMM kernels are instantiated for: the element type T and the
// math (gemm_problem.h's Math). Host code; the one place that dispatch is written.
#pragma once

#include <ATen/Context.h>
#include <c10/core/ScalarType.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

#include "cuda/gemm_problem.h"

namespace pointwise::cuda {

// F.conv2d's rule: fp32 convolutions may use TF32 exactly when cuDNN's convolutions may
// (torch.backends.cudnn.allow_tf32, or cudnn.conv.fp32_precision). Asking for the conv flag by
// name: without it PyTorch raises when conv and RNN precisions were set apart.
inline bool tf32_allowed() { return at::globalContext().allowTF32CuDNN(at::Float32Op::CONV); }

// f(std::integral_constant<Math, math>{}, T{}) for the kernels of `dtype`: fp32 on TF32 tensor
// cores where tf32 is true, else exact; fp64 exact; fp16 and bf16 on 16-bit tensor cores.
template <typename F>
decltype(auto) dispatch_element_type(at::ScalarType dtype, bool tf32, F&& f) {
  using std::integral_constant;
  switch (dtype) {
    case at::kFloat:
      if (tf32) return f(integral_constant<Math, Math::kTf32>{}, float{});
      return f(integral_constant<Math, Math::kSimt>{}, float{});
    case at::kDouble: return f(integral_constant<Math, Math::kSimt>{}, double{});
    case at::kHalf: return f(integral_constant<Math, Math::kMma16>{}, __half{});
    case at::kBFloat16: return f(integral_constant<Math, Math::kMma16>{}, __nv_bfloat16{});
    default: TORCH_CHECK(false, "pointwise_conv2d on CUDA: unsupported dtype ", dtype);
  }
}

}  // namespace pointwise::cuda
