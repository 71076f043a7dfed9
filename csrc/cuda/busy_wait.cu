// A kernel that only waits, for autotuning's timer (ops_cuda.cpp). Not part of the GEMMs, so not
// in hardware.cuh: the CPU emulator of the tests never runs it.
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/busy_wait.h"

namespace pointwise::cuda {
namespace {

__device__ __forceinline__ uint64_t global_timer_ns() {
  uint64_t ns;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(ns));
  return ns;
}

__global__ void busy_wait_kernel(uint64_t nanoseconds) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 700  // __nanosleep; the package needs sm_80 anyway
  const uint64_t start = global_timer_ns();
  // At most about a second of sleeps, should the timer ever stand still.
  for (int i = 0; i < 1'000'000 && global_timer_ns() - start < nanoseconds; ++i) __nanosleep(1000);
#endif
}

}  // namespace

cudaError_t busy_wait(cudaStream_t stream, uint64_t nanoseconds) {
  busy_wait_kernel<<<1, 1, 0, stream>>>(nanoseconds);
  return cudaGetLastError();
}

}  // namespace pointwise::cuda
