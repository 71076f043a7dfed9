// The CPU ops: blocked channel GEMMs, threaded with at::parallel_for, with the kernel set of the
// selected instruction set (cpu/isa.h, cpu/kernels.h).
#pragma once

#include "conv_args.h"

namespace pointwise::cpu {

void forward(const ForwardArgs& args);
void backward_input(const BackwardInputArgs& args);
void backward_weight(const BackwardWeightArgs& args);

}  // namespace pointwise::cpu
