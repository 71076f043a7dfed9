// The __half kernels with Math::kMma16 (one translation unit per instantiation keeps builds parallel).
#include "cuda/gemm_launch.cuh"

namespace pointwise::cuda {
template cudaError_t launch_gemm<Math::kMma16, __half>(const GemmProblem&, BlockTile, Reduction, bool, cudaStream_t);
template size_t gemm_smem_bytes<Math::kMma16, __half>(BlockTile, Reduction, bool);
template cudaError_t launch_finish_splits<__half>(const GemmProblem&, const void*, cudaStream_t);
}  // namespace pointwise::cuda
