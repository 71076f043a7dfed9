// CPU kernels: blocked channel GEMMs, threaded with at::parallel_for, AVX2/FMA where available.
#pragma once

#include "conv_args.h"

namespace pointwise::cpu {

void forward(const ForwardArgs& args);
void backward_input(const BackwardInputArgs& args);
void backward_weight(const BackwardWeightArgs& args);

// Whether the AVX2/FMA kernels were compiled in (POINTWISE_WITH_AVX2), and whether this CPU runs them.
bool avx2_compiled();
bool avx2_supported();

// Whether the ops use the AVX2/FMA kernels or the portable ones; by default the AVX2 kernels when
// compiled in and supported. Enabling them where they are not fails with a TORCH_CHECK error.
// Lets tests run both paths on one machine.
void set_avx2_enabled(bool enabled);
bool avx2_enabled();

}  // namespace pointwise::cpu
