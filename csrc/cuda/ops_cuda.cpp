// The CUDA ops: the device checks, guard and stream around conv_gemm.h's GEMMs, and their
// registration for the CUDA dispatch key.
// Only c10's CUDA headers: ATen/cuda/CUDAContext.h would pull in cuBLAS/cuSPARSE headers, which
// a toolkit that ships just the compiler lacks.
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "autotune.h"
#include "cuda/busy_wait.h"
#include "cuda/conv_gemm.h"
#include "cuda/cuda_kernels.h"

namespace pointwise::cuda {
namespace {

int device_attribute(cudaDeviceAttr attribute, int device) {
  int value = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&value, attribute, device));
  return value;
}

// Device::time for autotuning: events around the launches on the current stream, then a wait for
// the second one (the only host synchronisation of the package, on a problem's first call only).
// The stream is first held busy long enough for the host to enqueue both events and every launch
// in between, so the interval is the kernels' time back to back. Without that hold it would include
// the host's time to launch the plan (an allocation and one or two launches, several microseconds),
// as long as a small problem's kernels themselves, and more for split plans than for the others.
constexpr uint64_t kHoldNanoseconds = 200'000;

cudaError_t time_on_stream(cudaStream_t stream, const std::function<cudaError_t()>& launches, double& ms) {
  struct Events {  // destroyed also when `launches` throws (an allocation that fails)
    cudaEvent_t start = nullptr, end = nullptr;
    ~Events() {
      if (start != nullptr) cudaEventDestroy(start);
      if (end != nullptr) cudaEventDestroy(end);
    }
  } events;
  cudaError_t err = cudaEventCreate(&events.start);
  if (err == cudaSuccess) err = cudaEventCreate(&events.end);
  if (err == cudaSuccess) err = busy_wait(stream, kHoldNanoseconds);
  if (err == cudaSuccess) err = cudaEventRecord(events.start, stream);
  if (err == cudaSuccess) err = launches();
  if (err == cudaSuccess) err = cudaEventRecord(events.end, stream);
  if (err == cudaSuccess) err = cudaEventSynchronize(events.end);
  float elapsed = 0;
  if (err == cudaSuccess) err = cudaEventElapsedTime(&elapsed, events.start, events.end);
  ms = elapsed;
  return err;
}

// Whether `stream` is being captured into a CUDA graph, when timing (which waits for the GPU) must
// not happen. The query fails where another stream's capture forbids touching this one (the legacy
// default stream during a global-mode capture): that counts as capturing too.
bool capturing(cudaStream_t stream) {
  cudaStreamCaptureStatus status = cudaStreamCaptureStatusNone;
  if (cudaStreamIsCapturing(stream, &status) == cudaSuccess) return status != cudaStreamCaptureStatusNone;
  (void)cudaGetLastError();  // the failed query's error is an answer here, not a fault to report later
  return true;
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
    device_.index = index;
    device_.multiprocessors = device_attribute(cudaDevAttrMultiProcessorCount, index);
    device_.compute_capability = major * 10 + minor;
    device_.smem_per_block = device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin, index);
    device_.stream = c10::cuda::getCurrentCUDAStream(index);
    device_.autotune = autotune::enabled();
    if (device_.autotune && !capturing(device_.stream)) {
      device_.time = [stream = device_.stream](const Plan&, const std::function<cudaError_t()>& launches, double& ms) {
        return time_on_stream(stream, launches, ms);
      };
    }
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
