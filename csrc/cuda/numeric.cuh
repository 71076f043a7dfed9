// The element types of the kernels: the accumulator of each, and the conversions between them.
#pragma once

#include <type_traits>

#include "cuda/hardware.cuh"

namespace pointwise::cuda {

template <typename T> struct AccumulatorOf { using type = float; };
template <> struct AccumulatorOf<double> { using type = double; };

template <typename T> __device__ __forceinline__ float to_float(T v) { return static_cast<float>(v); }
template <> __device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

// Rounds an accumulator to T (to nearest even for the 16-bit types).
template <typename T, typename A> __device__ __forceinline__ T from_acc(A v) { return static_cast<T>(v); }
template <> __device__ __forceinline__ __half from_acc(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_acc(float v) { return __float2bfloat16_rn(v); }

// A value of T as an accumulator of type A.
template <typename A, typename T> __device__ __forceinline__ A load_acc(const T& v) {
  if constexpr (std::is_same_v<A, double>) return static_cast<double>(v);
  else return to_float(v);
}

}  // namespace pointwise::cuda
