// The op schemas (one namespace, one definition each) and the pybind11 module for the helpers
// that are not ops. The argument checks every backend shares are in conv_args.cpp.
#include <ATen/core/enum_tag.h>
#include <torch/extension.h>
#include <torch/library.h>

#include "autotune.h"
#include "cpu/isa.h"
#include "epilogue.h"
#ifdef POINTWISE_WITH_CUDA
#include "cuda/cuda_kernels.h"
#endif

namespace pointwise {

// Every op takes inputs of any strides and memory format (conv_args.cpp makes them dense in the
// layout their strides suggest, and the output follows it): flexible_layout tells Inductor so,
// which may then run the whole graph in the layout it picks for its own convolutions (channels_last
// for an NCHW model on CPU) instead of converting every tensor before and after each of our calls.
TORCH_LIBRARY(pointwise_cuda, m) {
  const std::vector<at::Tag> tags = {at::Tag::flexible_layout};
  m.def(
      "conv_forward(Tensor input, Tensor weight, Tensor? bias, Tensor? residual, int[2] stride, "
      "int[2] padding, int groups, str activation) -> Tensor",
      tags);
  m.def(
      "conv_backward_input(Tensor grad_output, Tensor weight, SymInt[4] input_size, int[2] stride, "
      "int[2] padding, int groups) -> Tensor",
      tags);
  m.def(
      "conv_backward_weight(Tensor grad_output, Tensor input, int[2] stride, int[2] padding, "
      "int groups) -> Tensor",
      tags);
}

}  // namespace pointwise

namespace {

pybind11::dict build_info() {
  pybind11::dict info;
  namespace cpu = pointwise::cpu;
  info["torch_version"] = TORCH_VERSION;
  std::vector<std::string> compiled;
  for (int i = 0; i < cpu::kIsaCount; ++i) {
    if (cpu::isa_compiled(static_cast<cpu::Isa>(i))) compiled.emplace_back(cpu::kIsaNames[i]);
  }
  info["cpu_isa_compiled"] = compiled;                                  // kernel sets in this build
  info["cpu_isa_detected"] = cpu::isa_name(cpu::detected_isa());       // the best this CPU runs
  info["cpu_isa_cap"] = cpu::isa_cap();                                // POINTWISE_CPU_ISA, or ""
  info["cpu_isa"] = cpu::isa_name(cpu::selected_isa());                // what the ops run
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
  module.def("set_cpu_isa", &pointwise::cpu::set_isa,
             "Run the CPU kernel set of this ISA (build_info()['cpu_isa_compiled']); for testing every path.");
  module.def("cpu_isa", [] { return std::string(pointwise::cpu::isa_name(pointwise::cpu::selected_isa())); },
             "The ISA whose CPU kernel set the ops run.");
  module.def("cpu_isas", [] {
    namespace cpu = pointwise::cpu;
    pybind11::list isas;
    for (int i = 0; i < cpu::kIsaCount; ++i) {
      const auto isa = static_cast<cpu::Isa>(i);
      pybind11::dict d;
      d["name"] = cpu::kIsaNames[i];
      d["flags"] = cpu::kIsaFlags[i];
      d["compiled"] = cpu::isa_compiled(isa);
      d["supported"] = cpu::isa_supported(isa);
      isas.append(d);
    }
    return isas;
  }, "Every ISA with a CPU kernel set, in order: its name, the cpuinfo flags it needs, whether this build holds it and this CPU runs it.");
  module.def("activation_names", [] {
    return std::vector<std::string>(std::begin(pointwise::kActivationNames), std::end(pointwise::kActivationNames));
  }, "The activations the op takes, by name ('none' first).");
  module.def("set_autotune", &pointwise::autotune::set_enabled, "Autotune the CUDA GEMM plans (see autotune.h).");
  module.def("autotune_enabled", &pointwise::autotune::enabled);
  module.def("autotune_entries", &autotune_entries, "Every tuned problem: (problem, [(plan, ms)], plan kept).");
  module.def("clear_autotune_cache", &pointwise::autotune::clear);
  module.def("build_info", &build_info,
             "Which backends were compiled, the CUDA architectures, and the torch/CUDA versions built against.");
}
