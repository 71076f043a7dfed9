// The __nv_bfloat16 kernels with Math::kMma16 (one translation unit per instantiation keeps builds parallel).
#include "cuda/gemm_launch.cuh"

namespace pointwise::cuda {
template cudaError_t launch_gemm<Math::kMma16, __nv_bfloat16>(const GemmProblem&, BlockTile, Reduction, bool, cudaStream_t);
template size_t gemm_smem_bytes<Math::kMma16, __nv_bfloat16>(BlockTile, Reduction, bool);
template cudaError_t launch_finish_splits<__nv_bfloat16>(const GemmProblem&, const void*, cudaStream_t);
}  // namespace pointwise::cuda
