// The float kernels with Math::kTf32 (one translation unit per instantiation keeps builds parallel).
#include "cuda/gemm_launch.cuh"

namespace pointwise::cuda {
template cudaError_t launch_gemm<Math::kTf32, float>(const GemmProblem&, TileShape, Reduction, cudaStream_t);
}  // namespace pointwise::cuda
