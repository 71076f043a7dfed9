// The AVX2/FMA kernels, compiled only with POINTWISE_WITH_AVX2 on x86 with GCC or Clang. They are
// built for the baseline ISA plus a per-function target attribute, never -mavx2, so the library
// still loads on CPUs without AVX2; pointwise_cpu.cpp picks them at run time.
#pragma once

#include <cstdint>

#include "conv_args.h"

#if defined(POINTWISE_WITH_AVX2) && (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define POINTWISE_CPU_AVX2 1
#endif

#ifdef POINTWISE_CPU_AVX2
namespace pointwise::cpu {

// Same contract as MicroKernel in gemm.h.
void micro_kernel_avx2(int64_t depth, const float* a, int64_t a_line_stride, int64_t a_depth_stride,
                       const float* b, int64_t b_depth_stride, const float* partial, float* c,
                       int64_t c_row_stride);
void micro_kernel_avx2(int64_t depth, const double* a, int64_t a_line_stride,
                       int64_t a_depth_stride, const double* b, int64_t b_depth_stride,
                       const double* partial, double* c, int64_t c_row_stride);

// Same contract as ActivationKernel in epilogue.h, with vectorised exp and erf.
void activate_avx2(float* z, int64_t n, Activation activation);

// Same contract as InPlaceFinisher in epilogue.h.
void finish_in_place_avx2(float* tile, int64_t row_stride, const float* bias, bool bias_on_rows,
                          const float* residual, Activation activation);

}  // namespace pointwise::cpu
#endif
