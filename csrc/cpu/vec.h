// CPU vectors for the micro-kernel of gemm.h and the epilogue's math (epilogue.h): GCC vector
// extensions, so that one generic definition compiles to AVX2 or AVX-512 code where it is inlined
// into an ISA's kernel functions (which carry the target attribute), and needs no target of its
// own. Nothing here is compiled for an ISA on its own: a copy the compiler keeps out of line is
// baseline code, so no symbol built for one ISA can stand in for another's. (GCC contracts
// a * b + c into one FMA in those functions, as the intrinsics would.)
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "cpu/gemm.h"
#include "cpu/isa.h"
#include "epilogue.h"

namespace pointwise::cpu {

template <typename T, int kLanes>
struct Vector {
  typedef T V __attribute__((vector_size(sizeof(T) * kLanes)));
  typedef std::conditional_t<sizeof(T) == 4, int32_t, int64_t> Int;
  typedef Int I __attribute__((vector_size(sizeof(T) * kLanes)));
};

// The math policy of epilogue.h for vectors of LANES values of T (exp and erfc: float only).
template <typename T, int LANES>
struct VecMath {
  using V = typename Vector<T, LANES>::V;
  using I = typename Vector<T, LANES>::I;  // comparisons' masks, exponent arithmetic
  static constexpr int kLanes = LANES;

  POINTWISE_HOST_DEVICE static V load(const T* p) {
    V v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
  }
  POINTWISE_HOST_DEVICE static void store(T* p, V v) { __builtin_memcpy(p, &v, sizeof v); }
  // store(p, v) past the caches (a non-temporal store), p aligned to the vector's size: gemm.h's
  // TileFinish::stream. Inline assembly, as in HalfConversion below, emitted only inside the kernel
  // functions it is inlined into.
  POINTWISE_HOST_DEVICE static void stream(T* p, V v) {
#ifdef POINTWISE_CPU_X86
    if constexpr (std::is_same_v<T, float>) {
      asm("vmovntps %1, %0" : "=m"(*reinterpret_cast<V*>(p)) : "v"(v));
    } else {
      asm("vmovntpd %1, %0" : "=m"(*reinterpret_cast<V*>(p)) : "v"(v));
    }
#else
    store(p, v);
#endif
  }
  // A constant in every lane (folded into a vector constant). GCC 12 builds a vector of a run-time
  // value lane by lane (16 masked broadcasts for 16 floats), so run-time scalars enter vector
  // arithmetic as scalar operands instead (v * x, v + x: one broadcast, or none, from memory).
  POINTWISE_HOST_DEVICE static V splat(double c) { return V{} + static_cast<T>(c); }
  POINTWISE_HOST_DEVICE static V select(I mask, V a, V b) { return mask ? a : b; }
  POINTWISE_HOST_DEVICE static V abs(V x) { return x < V{} ? -x : x; }

  // e^x. double: std::exp lane by lane, as ScalarMath<double> computes it, so that every double
  // path agrees. float: the Cephes expf scheme: x = n ln2 + r with |r| <= ln2 / 2, e^r
  // from a degree-6 polynomial (about 1 ulp), 2^n built in the exponent bits as two factors, so
  // that results down to the smallest subnormal and up to FLT_MAX need no special case; beyond
  // those, 0 and infinity as expf gives them. NaN stays NaN (every comparison with it is false).
  POINTWISE_HOST_DEVICE static V exp(V x) {
    if constexpr (std::is_same_v<T, double>) {
      return lanewise(x, [](T v) { return std::exp(v); });
    } else {
      static_assert(std::is_same_v<T, float>, "exp is written for float and double vectors");
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
  }

  // erfc(x) for x >= 0. double: std::erfc lane by lane, as exp. float: Abramowitz & Stegun
  // 7.1.26, absolute error below 1.5e-7.
  POINTWISE_HOST_DEVICE static V erfc_nonnegative(V x) {
    if constexpr (std::is_same_v<T, double>) {
      return lanewise(x, [](T v) { return std::erfc(v); });
    } else {
      const V one = splat(1.0);
      const V t = one / (splat(0.3275911) * x + one);
      V p = splat(1.061405429);
      p = p * t + splat(-1.453152027);
      p = p * t + splat(1.421413741);
      p = p * t + splat(-0.284496736);
      p = p * t + splat(0.254829592);
      return (p * t) * exp(-(x * x));
    }
  }

 private:
  template <typename F>
  POINTWISE_HOST_DEVICE static V lanewise(V x, F f) {
    for (int i = 0; i < kLanes; ++i) x[i] = f(x[i]);
    return x;
  }
};

// LANES bfloat16 values to and from one vector of VecMath<float, LANES> (tile_epilogue.h's
// store_contiguous), rounded to nearest even as c10::BFloat16 rounds (NaN becomes 0x7fc0): the
// scalar conversion cost more than the GEMM of a layer with 16 input channels.
template <int LANES>
struct Bf16Conversion {
  using V = typename VecMath<float, LANES>::V;
  using U = typename Vector<uint32_t, LANES>::V;
  using H = typename Vector<uint16_t, LANES>::V;

  POINTWISE_HOST_DEVICE static V load(const c10::BFloat16* p) {
    H half;
    __builtin_memcpy(&half, p, sizeof half);
    return (V)(__builtin_convertvector(half, U) << 16);
  }
  POINTWISE_HOST_DEVICE static void store(c10::BFloat16* p, V v) {
    const U bits = (U)v;
    const U rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
    const H half = __builtin_convertvector(v == v ? rounded : U{} + 0x7fc0u, H);
    __builtin_memcpy(p, &half, sizeof half);
  }
};

#ifdef POINTWISE_CPU_X86
// LANES float16 values (8 or 16) to and from one vector of VecMath<float, LANES>: vcvtps2ph rounds to
// nearest even, as c10::Half does (a NaN keeps its payload where c10 writes 0x7e00). Inline assembly
// rather than intrinsics: an intrinsic carries a target attribute, which the generic always-inline
// epilogue that calls this (tile_epilogue.h) would need too; the instruction itself is emitted only
// inside the F16C kernels that it is inlined into.
template <int LANES>
struct HalfConversion {
  using V = typename VecMath<float, LANES>::V;
  using H = typename Vector<uint16_t, LANES>::V;

  POINTWISE_HOST_DEVICE static V load(const c10::Half* p) {
    H half;
    __builtin_memcpy(&half, p, sizeof half);
    V v;
    asm("vcvtph2ps %1, %0" : "=v"(v) : "v"(half));
    return v;
  }
  POINTWISE_HOST_DEVICE static void store(c10::Half* p, V v) {
    H half;
    asm("vcvtps2ph $0, %1, %0" : "=v"(half) : "v"(v));
    __builtin_memcpy(p, &half, sizeof half);
  }
};

// The conversion of LANES floats to the 16-bit type Out and back.
template <typename Out, int LANES>
using Conversion16 = std::conditional_t<std::is_same_v<Out, c10::Half>, HalfConversion<LANES>, Bf16Conversion<LANES>>;
#endif

// The micro-kernel of gemm.h (single depth steps) for a Tile whose rows are whole vectors of M:
// kRows x kCols accumulators in registers, each depth step one broadcast of A per row (the scalar
// operand of the multiply-adds) and one load of B per vector.
template <class M, class Tile, typename T>
POINTWISE_HOST_DEVICE void micro_kernel(int64_t depth, const T* a, int64_t a_line_stride, int64_t a_depth_stride,
                                        const T* b, int64_t b_depth_stride, const T* partial, T* c,
                                        int64_t c_row_stride, const TileFinish<T>* finish) {
  using V = typename M::V;
  constexpr int kRows = Tile::kRows, kCols = Tile::kCols, kLanes = M::kLanes, kVectors = kCols / kLanes;
  static_assert(kCols % kLanes == 0, "a tile row is a whole number of vectors");
  // The row loops must be unrolled before GCC's scalar replacement, or it keeps the accumulators
  // in memory and stores them to the stack on every depth step.
  V acc[kRows][kVectors];
#pragma GCC unroll 16
  for (int i = 0; i < kRows; ++i) {
#pragma GCC unroll 4
    for (int v = 0; v < kVectors; ++v)
      acc[i][v] = partial != nullptr ? M::load(partial + i * kCols + v * kLanes) : M::splat(0);
  }
  prefetch_tile<Tile>(c, c_row_stride, finish);
  for (int64_t k = 0; k < depth; ++k) {
    V b_k[kVectors];
#pragma GCC unroll 4
    for (int v = 0; v < kVectors; ++v) b_k[v] = M::load(b + v * kLanes);
#pragma GCC unroll 16
    for (int i = 0; i < kRows; ++i) {
      const T a_i = a[i * a_line_stride];
#pragma GCC unroll 4
      for (int v = 0; v < kVectors; ++v) acc[i][v] = b_k[v] * a_i + acc[i][v];
    }
    a += a_depth_stride;
    b += b_depth_stride;
  }
  store_finished<M, Tile>(acc, c, c_row_stride, finish);
}

}  // namespace pointwise::cpu
