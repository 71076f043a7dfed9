// The float kernels with Math::kSimt (one translation unit per instantiation keeps builds parallel).
#include "cuda/gemm_launch.cuh"

namespace pointwise::cuda {
template cudaError_t launch_gemm<Math::kSimt, float>(const GemmProblem&, TileShape, Reduction, cudaStream_t);
template cudaError_t launch_finish_splits<float>(const GemmProblem&, const void*, cudaStream_t);
}  // namespace pointwise::cuda
