// busy_wait.cu's kernel, for ops_cuda.cpp.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace pointwise::cuda {

// Keeps `stream` busy for about `nanoseconds`: work enqueued behind it meanwhile starts back to back.
cudaError_t busy_wait(cudaStream_t stream, uint64_t nanoseconds);

}  // namespace pointwise::cuda
