// The double kernels with Math::kSimt (one translation unit per instantiation keeps builds parallel).
#include "cuda/gemm_launch.cuh"

namespace pointwise::cuda {
template cudaError_t launch_gemm<Math::kSimt, double>(const GemmProblem&, TileShape, Reduction, cudaStream_t);
template cudaError_t launch_finish_splits<double>(const GemmProblem&, const void*, cudaStream_t);
}  // namespace pointwise::cuda
