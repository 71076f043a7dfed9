// The op schemas (one namespace, one definition each) and the pybind11 module for the helpers
// that are not ops. The argument checks every backend shares are in conv_args.cpp.
#include <torch/extension.h>
#include <torch/library.h>

#include "autotune.h"
#include "cpu/cpu_kernels.h"
#ifdef POINTWISE_WITH_CUDA
#include "cuda/cuda_kernels.h"
#endif

namespace pointwise {

TORCH_LIBRARY(pointwise_cuda, m) {
  m.def(
      "conv_forward(Tensor input, Tensor weight, Tensor? bias, Tensor? residual, int[2] stride, "
      "int[2] padding, int groups, str activation) -> Tensor");
  m.def(
      "conv_backward_input(Tensor grad_output, Tensor weight, SymInt[4] input_size, int[2] stride, "
      "int[2] padding, int groups) -> Tensor");
  m.def(
      "conv_backward_weight(Tensor grad_output, Tensor input, int[2] stride, int[2] padding, "
      "int groups) -> Tensor");
}

}  // namespace pointwise

namespace {

pybind11::dict build_info() {
  pybind11::dict info;
  info["torch_version"] = TORCH_VERSION;
  info["cpu_avx2_compiled"] = pointwise::cpu::avx2_compiled();
  info["cpu_avx2_supported"] = pointwise::cpu::avx2_supported();
#ifdef POINTWISE_WITH_CUDA
  info["backends"] = std::vector<std::string>{"cpu", "cuda"};
  info["cuda_version"] = pointwise::cuda::runtime_version_built();
  info["cuda_arch_list"] = POINTWISE_CUDA_ARCH_LIST;
#else
  info["backends"] = std::vector<std::string>{"cpu"};
  info["cuda_version"] = pybind11::none();
  info["cuda_arch_list"] = pybind11::none();
#endif
  return info;
}

pybind11::list autotune_entries() {
  pybind11::list out;
  for (const auto& entry : pointwise::autotune::entries()) {
    pybind11::list timings;
    for (const auto& t : entry.timings) timings.append(pybind11::make_tuple(t.plan, t.ms));
    out.append(pybind11::make_tuple(entry.problem, timings, entry.timings.at(entry.chosen).plan));
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, module) {
  module.doc() = "pointwise_cuda: kernels registered under torch.ops.pointwise_cuda, plus build helpers";
  module.def("set_cpu_avx2_enabled", &pointwise::cpu::set_avx2_enabled,
             "Use the AVX2/FMA CPU kernels (True) or the portable ones (False); for testing both paths.");
  module.def("cpu_avx2_enabled", &pointwise::cpu::avx2_enabled,
             "Whether the CPU ops currently run the AVX2/FMA kernels.");
  module.def("set_autotune", &pointwise::autotune::set_enabled, "Autotune the CUDA GEMM plans (see autotune.h).");
  module.def("autotune_enabled", &pointwise::autotune::enabled);
  module.def("autotune_entries", &autotune_entries, "Every tuned problem: (problem, [(plan, ms)], plan kept).");
  module.def("clear_autotune_cache", &pointwise::autotune::clear);
  module.def("build_info", &build_info,
             "Which backends were compiled, the CUDA architectures, and the torch/CUDA versions built against.");
}
