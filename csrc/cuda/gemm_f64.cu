// The double kernels with Math::kSimt (one translation unit per instantiation keeps builds parallel).
#include "cuda/gemm_launch.cuh"

namespace pointwise::cuda {
template cudaError_t launch_gemm<Math::kSimt, double>(const GemmProblem&, BlockTile, Reduction, bool, cudaStream_t);
template size_t gemm_smem_bytes<Math::kSimt, double>(BlockTile, Reduction, bool);
template cudaError_t launch_finish_splits<double>(const GemmProblem&, const void*, cudaStream_t);
}  // namespace pointwise::cuda
