// The emulated CUDA ops for Python: the package's own argument handling (conv_args.cpp) and GEMM
// planning (conv_gemm.cpp) around the kernels of gemm.cuh, run by the emulator on CPU tensors.
#include <torch/extension.h>

#include <dlfcn.h>

#include <chrono>
#include <optional>

#include "autotune.h"
#include "conv_args.h"
#include "cuda/conv_gemm.h"
#include "guarded_allocator.h"
#include "runtime.h"

namespace {

using namespace pointwise;

// The plan autotuning should find fastest (tests pin it to check every candidate's results), or
// none: then each plan's time is the emulator's wall-clock time for it. A pinned ranking needs no
// runs: autotuning has run each candidate once, untimed, before timing it.
std::optional<std::string> preferred_plan;

cudaError_t time_plan(const cuda::Plan& plan, const std::function<cudaError_t()>& launches, double& ms) {
  if (preferred_plan) {
    ms = cuda::plan_name(plan) == *preferred_plan ? 0.0 : 1.0;
    return cudaSuccess;
  }
  const auto start = std::chrono::steady_clock::now();
  const cudaError_t err = launches();
  ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  return err;
}

cuda::Device emulated_device() {
  cuda::Device device;
  device.index = emulator::current_device();
  const emulator::DeviceSpec& spec = emulator::device_spec(device.index);
  device.multiprocessors = spec.multiprocessors;
  device.compute_capability = spec.compute_capability;
  device.smem_per_block = static_cast<size_t>(spec.block_smem_optin);
  device.autotune = autotune::enabled();
  if (device.autotune) device.time = &time_plan;
  return device;
}

void check(cudaError_t err) {
  TORCH_CHECK(err == cudaSuccess, "emulated CUDA launch failed (cudaError ", static_cast<int>(err),
              "): ", emulator::last_error());
}

void forward(const ForwardArgs& args) { check(cuda::gemm_forward(args, emulated_device())); }
void backward_input(const BackwardInputArgs& args) { check(cuda::gemm_backward_input(args, emulated_device())); }
void backward_weight(const BackwardWeightArgs& args) { check(cuda::gemm_backward_weight(args, emulated_device())); }

py::dict access_counts(const emulator::AccessCounts& c) {
  py::dict d;
  d["requests"] = c.requests;
  d["bytes"] = c.bytes;
  d["sectors"] = c.sectors;
  d["wavefronts"] = c.wavefronts;
  d["ideal_wavefronts"] = c.ideal;
  return d;
}

// A launch's counters (runtime.h) for Python; "kernel" is the kernel's address less this module's
// load address, which names it in the module's symbol table (emulator.kernel_names).
py::dict launch_counters(const emulator::LaunchRecord& r) {
  Dl_info info{};
  const bool found = dladdr(r.kernel, &info) != 0;
  py::dict d;
  d["kernel"] = found ? reinterpret_cast<uintptr_t>(r.kernel) - reinterpret_cast<uintptr_t>(info.dli_fbase) : 0;
  d["grid"] = std::vector<unsigned>{r.grid.x, r.grid.y, r.grid.z};
  d["threads"] = r.block.x * r.block.y * r.block.z;
  d["smem_bytes"] = r.smem_bytes;
  const emulator::MemoryCounters& m = r.counters;
  d["blocks_counted"] = m.blocks;
  py::dict by_access;
  for (int a = 0; a < emulator::kAccessKinds; ++a)
    by_access[emulator::access_name(static_cast<emulator::Access>(a))] = access_counts(m.by_access[a]);
  d["access"] = by_access;
  py::list sites;
  for (const auto& s : m.sites) {
    py::dict site = access_counts(s.counts);
    site["file"] = s.file;
    site["line"] = s.line;
    site["access"] = emulator::access_name(s.access);
    sites.append(site);
  }
  d["sites"] = sites;
  d["unique_bytes_read"] = m.unique_bytes_read;
  d["unique_bytes_written"] = m.unique_bytes_written;
  return d;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "pointwise_cuda's CUDA kernels and planning, run on the CPU by tests/emulator";
  m.def(
      "conv_forward",
      [](const at::Tensor& input, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
         const std::optional<at::Tensor>& residual, std::vector<int64_t> stride, std::vector<int64_t> padding,
         int64_t groups, const std::string& activation) {
        return run_forward<forward>(input, weight, bias, residual, stride, padding, groups, activation);
      },
      "torch.ops.pointwise_cuda.conv_forward, emulated");
  m.def(
      "conv_backward_input",
      [](const at::Tensor& grad_output, const at::Tensor& weight, std::vector<int64_t> input_size,
         std::vector<int64_t> stride, std::vector<int64_t> padding, int64_t groups) {
        return run_backward_input<backward_input>(grad_output, weight, input_size, stride, padding, groups);
      },
      "torch.ops.pointwise_cuda.conv_backward_input, emulated");
  m.def(
      "conv_backward_weight",
      [](const at::Tensor& grad_output, const at::Tensor& input, std::vector<int64_t> stride,
         std::vector<int64_t> padding, int64_t groups) {
        return run_backward_weight<backward_weight>(grad_output, input, stride, padding, groups);
      },
      "torch.ops.pointwise_cuda.conv_backward_weight, emulated");
  m.def("devices", [] {
    std::vector<std::string> names;
    for (const auto& spec : emulator::devices()) names.emplace_back(spec.name);
    return names;
  }, "The emulated GPUs, by index.");
  m.def("set_device", &emulator::set_device, "Emulate the GPU of this index in devices().");
  m.def("set_copy_landing", [](const std::string& when) {
    TORCH_CHECK(when == "late" || when == "early", "copy landing must be 'late' or 'early', got '", when, "'");
    emulator::set_copy_landing(when == "late" ? emulator::CopyLanding::kLate : emulator::CopyLanding::kEarly);
  }, "When cp.async copies land: 'late' (at the wait that covers them) or 'early' (at once).");
  m.def("launches", [] {
    std::vector<std::tuple<std::vector<unsigned>, unsigned, size_t>> out;
    for (const auto& r : emulator::launches())
      out.emplace_back(std::vector<unsigned>{r.grid.x, r.grid.y, r.grid.z}, r.block.x * r.block.y * r.block.z,
                       r.smem_bytes);
    return out;
  }, "The launches since clear_launches(): (grid, threads a block, dynamic shared memory bytes).");
  m.def("set_counting", [](const std::string& which, bool run_uncounted) {
    TORCH_CHECK(which == "off" || which == "sampled" || which == "all",
                "counting must be 'off', 'sampled' or 'all', got '", which, "'");
    emulator::set_counting(which == "off" ? emulator::Counting::kOff
                           : which == "sampled" ? emulator::Counting::kSampled : emulator::Counting::kAll,
                           run_uncounted);
  }, py::arg("which"), py::arg("run_uncounted") = true,
     "Memory counters for no block, the sampled blocks, or all (tests/emulator/runtime.h); with "
     "run_uncounted=False the other blocks do not run (outputs left unwritten).");
  m.def("count_instruction", [](const std::string& access, int bytes, const std::vector<std::pair<int, uintptr_t>>& lanes) {
    for (int a = 0; a < emulator::kAccessKinds; ++a)
      if (access == emulator::access_name(static_cast<emulator::Access>(a)))
        return access_counts(emulator::count_instruction(static_cast<emulator::Access>(a), bytes, lanes));
    TORCH_CHECK(false, "unknown access kind '", access, "'");
  }, "The counts of one warp instruction: (lane, address) of each active lane, `bytes` each.");
  m.def("launch_counters", [] {
    py::list out;
    for (const auto& r : emulator::launches()) out.append(launch_counters(r));
    return out;
  }, "The launches since clear_launches() with their memory counters (a model, not a measurement).");
  m.def("copies_by_size", &emulator::copies_by_size,
        "The cp.asyncs of the launches since clear_launches(), counted by size in bytes.");
  m.def("clear_launches", &emulator::clear_launches);
  m.def("set_autotune", &autotune::set_enabled, "Autotuning on or off (csrc/autotune.h).");
  m.def("autotune_entries", [] {
    std::vector<std::tuple<std::string, std::vector<std::string>, std::string>> out;
    for (const auto& entry : autotune::entries()) {
      std::vector<std::string> plans;
      for (const auto& t : entry.timings) plans.push_back(t.plan);
      out.emplace_back(entry.problem, plans, entry.timings.at(entry.chosen).plan);
    }
    return out;
  }, "Every tuned problem: (problem, the candidate plans in the order timed, the plan kept).");
  m.def("clear_autotune_cache", &autotune::clear);
  m.def("prefer_plan", [](std::optional<std::string> plan) { preferred_plan = std::move(plan); },
        "Autotuning times this plan 0 ms and every other 1 ms (None: wall-clock times).");
  m.def("guard_cpu_allocations", &emulator::guard_cpu_allocations,
        "Every CPU allocation between guard pages and filled with NaN bytes (True), or back to normal (False).");
}
