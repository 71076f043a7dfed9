// Runtime choices turned into compile-time constants, for the templates of both backends: the
// activation, the tile shape, an operand's orientation, the output type. One small function each,
// as flash-attention's static_switch.h does with macros: f receives a std::integral_constant and
// reads the choice as `decltype(c)::value`. ATen-free and usable in device code.
#pragma once

#include <type_traits>

#if defined(__CUDACC__)
#define POINTWISE_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define POINTWISE_HOST_DEVICE inline __attribute__((always_inline))
// CPU vectors (cpu/vec.h) pass by value only between such always-inline functions, so GCC's warning
// that their ABI differs without AVX enabled concerns no call that is ever made.
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

namespace pointwise {

// f(std::integral_constant<E, value>{}) for an enum E whose values are 0 .. kCount - 1; the last
// value's call where `value` is none of them.
template <typename E, int kCount, int I = 0, typename F>
POINTWISE_HOST_DEVICE decltype(auto) dispatch_enum(E value, F&& f) {
  constexpr E kThis = static_cast<E>(I);
  if constexpr (I + 1 == kCount) {
    return f(std::integral_constant<E, kThis>{});
  } else {
    if (value == kThis) return f(std::integral_constant<E, kThis>{});
    return dispatch_enum<E, kCount, I + 1>(value, static_cast<F&&>(f));
  }
}

// f(std::true_type{}) or f(std::false_type{}).
template <typename F>
POINTWISE_HOST_DEVICE decltype(auto) dispatch_bool(bool value, F&& f) {
  if (value) return f(std::true_type{});
  return f(std::false_type{});
}

}  // namespace pointwise
