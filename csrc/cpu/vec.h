// CPU vectors of floats for the epilogue's math (epilogue.h): GCC vector extensions, so that one
// generic definition compiles to AVX2 or AVX-512 code where it is inlined into an ISA's kernel
// functions (which carry the target attribute), and needs no target of its own. Nothing here is
// compiled for an ISA on its own: a copy the compiler keeps out of line is baseline code, so no
// symbol built for one ISA can stand in for another's.
#pragma once

#include <cstdint>

#include "epilogue.h"

// Values of these types pass by value between always-inline functions only, so the warning that
// their ABI differs without AVX enabled concerns no call that is ever made.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace pointwise::cpu {

template <int kLanes>
struct FloatVector;
template <>
struct FloatVector<8> {
  typedef float V __attribute__((vector_size(32)));
  typedef int32_t I __attribute__((vector_size(32)));
};
template <>
struct FloatVector<16> {
  typedef float V __attribute__((vector_size(64)));
  typedef int32_t I __attribute__((vector_size(64)));
};

// The math policy of epilogue.h for kLanes floats.
template <int LANES>
struct VecMath {
  using V = typename FloatVector<LANES>::V;
  using I = typename FloatVector<LANES>::I;  // comparisons' masks, exponent arithmetic
  static constexpr int kLanes = LANES;

  POINTWISE_HOST_DEVICE static V load(const float* p) {
    V v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
  }
  POINTWISE_HOST_DEVICE static void store(float* p, V v) { __builtin_memcpy(p, &v, sizeof v); }
  POINTWISE_HOST_DEVICE static V splat(double c) { return V{} + static_cast<float>(c); }
  POINTWISE_HOST_DEVICE static I splat_int(int32_t c) { return I{} + c; }
  POINTWISE_HOST_DEVICE static V select(I mask, V a, V b) { return mask ? a : b; }
  POINTWISE_HOST_DEVICE static V abs(V x) { return (V)((I)x & 0x7fffffff); }

  // e^x, the Cephes expf scheme: x = n ln2 + r with |r| <= ln2 / 2, e^r from a degree-6
  // polynomial (about 1 ulp), 2^n built in the exponent bits as two factors, so that results down
  // to the smallest subnormal and up to FLT_MAX need no special case; beyond those, 0 and
  // infinity as expf gives them. NaN stays NaN (every comparison with it is false).
  POINTWISE_HOST_DEVICE static V exp(V x) {
    const V hi = splat(88.72283935546875), lo = splat(-103.97208404541015625);
    const V clamped = select(x > hi, hi, select(x < lo, lo, x));
    // Round x / ln2 to the nearest integer: adding and subtracting 1.5 * 2^23 leaves no fraction.
    const V shift = splat(12582912.0);
    const V n = (clamped * splat(1.44269504088896341) + shift) - shift;
    // ln 2 in two parts, so that n * ln2_hi is exact.
    V r = clamped - n * splat(0.693359375);
    r = r - n * splat(-2.12194440e-4);
    V p = splat(1.9875691500e-4);
    p = p * r + splat(1.3981999507e-3);
    p = p * r + splat(8.3334519073e-3);
    p = p * r + splat(4.1665795894e-2);
    p = p * r + splat(1.6666665459e-1);
    p = p * r + splat(5.0000001201e-1);
    const V e_r = p * (r * r) + (r + splat(1.0));
    // Exact: n is integral, -150 <= n <= 128 (NaN, whose conversion is undefined, becomes 0).
    const I k = __builtin_convertvector(select(n == n, n, splat(0)), I);
    const I half = k >> 1;
    const V two_half = (V)((half + 127) << 23), two_rest = (V)((k - half + 127) << 23);
    const V e = (e_r * two_half) * two_rest;
    return select(x > hi, splat(__builtin_inff()), select(x < lo, splat(0), e));
  }

  // erfc(x) for x >= 0, Abramowitz & Stegun 7.1.26: absolute error below 1.5e-7.
  POINTWISE_HOST_DEVICE static V erfc_nonnegative(V x) {
    const V one = splat(1.0);
    const V t = one / (splat(0.3275911) * x + one);
    V p = splat(1.061405429);
    p = p * t + splat(-1.453152027);
    p = p * t + splat(1.421413741);
    p = p * t + splat(-0.284496736);
    p = p * t + splat(0.254829592);
    return (p * t) * exp(-(x * x));
  }
};

}  // namespace pointwise::cpu
