// The epilogue of every kernel, CPU and GPU, element by element: out = act(acc + bias + residual).
//
// Written once over a math policy M (M::V is the value: a float or double, or a CPU vector of
// them; M supplies the few operations that differ between those), so the CUDA kernels (scalars),
// the portable CPU kernels (scalars) and the CPU vector kernels (cpu/vec.h) all compute the same
// formulas with the same NaN and infinity behaviour as torch's own activations. ATen-free: nvcc and
// the CUDA emulator compile it too.
//
// Adding an activation: a line in POINTWISE_FOR_EACH_ACTIVATION, its formula in activate() below,
// its derivative in autograd.cpp (activation_grad) and its reference in tests/reference.py (act64).
#pragma once

#include <cmath>
#include <cstdint>

#include "dispatch.h"

namespace pointwise {

// Every activation: its enumerator and the name the op takes (its `activation` string).
#define POINTWISE_FOR_EACH_ACTIVATION(X) \
  X(kNone, "none")                        \
  X(kReLU, "relu")                        \
  X(kReLU6, "relu6")                      \
  X(kSiLU, "silu")                        \
  X(kGELU, "gelu")                        \
  X(kHardswish, "hardswish")

#define POINTWISE_ACTIVATION_ENUMERATOR(enumerator, name) enumerator,
#define POINTWISE_ACTIVATION_NAME(enumerator, name) name,
enum class Activation : int32_t { POINTWISE_FOR_EACH_ACTIVATION(POINTWISE_ACTIVATION_ENUMERATOR) };
inline constexpr const char* kActivationNames[] = {POINTWISE_FOR_EACH_ACTIVATION(POINTWISE_ACTIVATION_NAME)};
#undef POINTWISE_ACTIVATION_ENUMERATOR
#undef POINTWISE_ACTIVATION_NAME
inline constexpr int kActivationCount = sizeof(kActivationNames) / sizeof(kActivationNames[0]);

// f(std::integral_constant<Activation, activation>{}): the activation as a template argument.
template <typename F>
POINTWISE_HOST_DEVICE decltype(auto) dispatch_activation(Activation activation, F&& f) {
  return dispatch_enum<Activation, kActivationCount>(activation, static_cast<F&&>(f));
}

// Scalars: the policy of the CUDA kernels and of the portable CPU kernels.
template <typename T>
struct ScalarMath {
  using V = T;
  static constexpr int kLanes = 1;
  POINTWISE_HOST_DEVICE static V load(const T* p) { return *p; }
  POINTWISE_HOST_DEVICE static void store(T* p, V v) { *p = v; }
  POINTWISE_HOST_DEVICE static V splat(double c) { return static_cast<V>(c); }
  POINTWISE_HOST_DEVICE static V select(bool mask, V a, V b) { return mask ? a : b; }
  POINTWISE_HOST_DEVICE static V abs(V x) { return x < V(0) ? -x : x; }
  POINTWISE_HOST_DEVICE static V exp(V x) {
#if defined(__CUDA_ARCH__)
    return ::exp(x);  // expf for float: CUDA's overloads
#else
    return std::exp(x);
#endif
  }
  // erfc(x) for x >= 0 (the only arguments GELU gives it).
  POINTWISE_HOST_DEVICE static V erfc_nonnegative(V x) {
#if defined(__CUDA_ARCH__)
    return ::erfc(x);
#else
    return std::erfc(x);
#endif
  }
};

// act(z). Comparisons are written so that NaN passes through every activation (z < 0 is false for
// NaN), and exp overflows to infinity rather than saturating, as in torch: silu(-inf) is NaN,
// silu(-1e38) is -0.
template <Activation A, class M>
POINTWISE_HOST_DEVICE typename M::V activate(typename M::V z) {
  using V = typename M::V;
  const V zero = M::splat(0);
  if constexpr (A == Activation::kReLU) {
    return M::select(z < zero, zero, z);
  } else if constexpr (A == Activation::kReLU6) {
    const V six = M::splat(6);
    return M::select(z < zero, zero, M::select(z > six, six, z));
  } else if constexpr (A == Activation::kSiLU) {
    return z / (M::splat(1) + M::exp(-z));
  } else if constexpr (A == Activation::kGELU) {
    // The erf form, 0.5 z (1 + erf(z / sqrt 2)), with 1 + erf(x) as erfc(-x) below zero and
    // 2 - erfc(x) above: no cancellation for negative z, where 1 + erf(x) is tiny.
    const V x = z * M::splat(0.70710678118654752440);
    const V q = M::erfc_nonnegative(M::abs(x));
    return M::splat(0.5) * z * M::select(x < zero, q, M::splat(2) - q);
  } else if constexpr (A == Activation::kHardswish) {
    // z * relu6(z + 3) / 6, as torch writes it.
    const V t = z + M::splat(3), six = M::splat(6);
    return z * M::select(t < zero, zero, M::select(t > six, six, t)) / six;
  } else {
    return z;
  }
}

// The epilogue's value for one element (or a vector of them): act(acc + bias + residual), the terms
// added in this order on every path so that every kernel rounds alike; an absent term is not added.
// The bias may be a value like acc or one scalar for all of acc's lanes.
template <Activation A, class M, typename Bias>
POINTWISE_HOST_DEVICE typename M::V epilogue_value(typename M::V acc, bool add_bias, Bias bias, bool add_residual,
                                                  typename M::V residual) {
  if (add_bias) acc = acc + bias;
  if (add_residual) acc = acc + residual;
  return activate<A, M>(acc);
}

}  // namespace pointwise
