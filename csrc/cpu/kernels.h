// Every CPU kernel set: the primary template and the portable set (kernel_set.h) and each ISA's
// specialisations, which is what the drivers (pointwise_cpu.cpp) include.
#pragma once

#include "cpu/kernel_set.h"

#include "cpu/avx2_kernels.h"
#include "cpu/avx512_kernels.h"
#include "cpu/avx512_bf16_kernels.h"
#include "cpu/amx_kernels.h"
