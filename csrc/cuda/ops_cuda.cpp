// The CUDA ops: the device checks, guard and stream around conv_gemm.h's GEMMs, and their
// registration for the CUDA dispatch key.
// Only c10's CUDA headers: ATen/cuda/CUDAContext.h would pull in cuBLAS/cuSPARSE headers, which
// a toolkit that ships just the compiler lacks.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "cuda/conv_gemm.h"
#include "cuda/cuda_kernels.h"

namespace pointwise::cuda {
namespace {

int device_attribute(cudaDeviceAttr attribute, int device) {
  int value = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&value, attribute, device));
  return value;
}

// Checks that the tensor's GPU can run the kernels, makes it current, and describes it.
class DeviceScope {
 public:
  explicit DeviceScope(const at::Tensor& t) : guard_(t.device()) {
    const int index = t.get_device();
    const int major = device_attribute(cudaDevAttrComputeCapabilityMajor, index);
    const int minor = device_attribute(cudaDevAttrComputeCapabilityMinor, index);
    TORCH_CHECK(major >= 8, "pointwise_conv2d's CUDA kernels need compute capability 8.0 or newer (cp.async, ",
                "mma.sync); ", t.device(), " has ", major, ".", minor);
    device_.multiprocessors = device_attribute(cudaDevAttrMultiProcessorCount, index);
    device_.stream = c10::cuda::getCurrentCUDAStream(index);
  }
  const Device& device() const { return device_; }

 private:
  const c10::cuda::CUDAGuard guard_;
  Device device_;
};

}  // namespace

void forward(const ForwardArgs& args) {
  const DeviceScope scope(args.input);
  C10_CUDA_CHECK(gemm_forward(args, scope.device()));
}

void backward_input(const BackwardInputArgs& args) {
  const DeviceScope scope(args.grad_output);
  C10_CUDA_CHECK(gemm_backward_input(args, scope.device()));
}

void backward_weight(const BackwardWeightArgs& args) {
  const DeviceScope scope(args.input);
  C10_CUDA_CHECK(gemm_backward_weight(args, scope.device()));
}

std::string runtime_version_built() {
  return std::to_string(CUDART_VERSION / 1000) + "." + std::to_string(CUDART_VERSION % 1000 / 10);
}

TORCH_LIBRARY_IMPL(pointwise_cuda, CUDA, m) {
  m.impl("conv_forward", &run_forward<forward>);
  m.impl("conv_backward_input", &run_backward_input<backward_input>);
  m.impl("conv_backward_weight", &run_backward_weight<backward_weight>);
}

}  // namespace pointwise::cuda
