#include <torch/library.h>

#include "cpu/cpu_kernels.h"

namespace pointwise {

TORCH_LIBRARY_IMPL(pointwise_cuda, CPU, m) {
  m.impl("conv_forward", &run_forward<cpu::forward>);
  m.impl("conv_backward_input", &run_backward_input<cpu::backward_input>);
  m.impl("conv_backward_weight", &run_backward_weight<cpu::backward_weight>);
}

}  // namespace pointwise
