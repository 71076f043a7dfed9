// The float kernels with Math::kTf32 (one translation unit per instantiation keeps builds parallel).
#include "cuda/gemm_launch.cuh"

namespace pointwise::cuda {
template cudaError_t launch_gemm<Math::kTf32, float>(const GemmProblem&, BlockTile, Reduction, bool, cudaStream_t);
template size_t gemm_smem_bytes<Math::kTf32, float>(BlockTile, Reduction, bool);
}  // namespace pointwise::cuda
