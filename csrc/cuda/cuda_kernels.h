// The CUDA ops (ops_cuda.cpp): conv_gemm.h's GEMMs on the tensors' GPU and its current stream.
#pragma once

#include <string>

#include "conv_args.h"

namespace pointwise::cuda {

void forward(const ForwardArgs& args);
void backward_input(const BackwardInputArgs& args);
void backward_weight(const BackwardWeightArgs& args);

// The CUDA runtime version the extension was compiled against, as "major.minor".
std::string runtime_version_built();

}  // namespace pointwise::cuda
