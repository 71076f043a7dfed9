// The CPU emulator's csrc/cuda/hardware.cuh: the same functions, carried out by runtime.h, plus what
// nvcc provides to device code (threadIdx, __syncthreads, min, the keywords). It comes before csrc/
// on the emulator's include path, so gemm.cuh and gemm_launch.cuh include it instead of the real
// one. Keep the two in step.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>  // exp, erf, fma for float as well as double, unqualified, as in CUDA

#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

#include "runtime.h"

#define __launch_bounds__(...)

inline void __syncthreads() { pointwise::emulator::sync_block(); }

template <typename T>
inline T min(T a, T b) {
  return b < a ? b : a;
}

namespace pointwise::cuda {

// Each memory instruction names its place: the caller's code address (these are not inlined, so
// each instantiation and unrolled copy of a kernel's access is its own instruction, as in SASS),
// by which the counters group the lanes of one warp instruction, and its file and line (the
// defaults are the caller's), by which they report it.
#define POINTWISE_SITE \
  emulator::Site { __builtin_return_address(0), file, line }
template <int BYTES>
__attribute__((noinline)) void cp_async(void* smem, const void* gmem, bool valid, const char* file = __builtin_FILE(),
                     int line = __builtin_LINE()) {
  static_assert(BYTES == 4 || BYTES == 8 || BYTES == 16, "cp.async copies 4, 8 or 16 bytes");
  emulator::cp_async(smem, gmem, BYTES, valid, POINTWISE_SITE);
}
inline void cp_async_commit() { emulator::cp_async_commit(); }
template <int PENDING>
inline void cp_async_wait() {
  emulator::cp_async_wait(PENDING);
}

// cvt.rna.tf32.f32: round to nearest, ties away from zero, to 10 mantissa bits. Adding half a unit
// of the last kept bit to the magnitude and truncating does exactly that for finite values.
inline uint32_t to_tf32(float x) {
  uint32_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  if ((bits & 0x7f800000u) == 0x7f800000u) return bits;  // inf, nan
  return (bits + 0x1000u) & 0xffffe000u;
}

template <bool TRANS>
__attribute__((noinline)) void ldmatrix_x4(uint32_t (&r)[4], const void* row_address, const char* file = __builtin_FILE(),
                        int line = __builtin_LINE()) {
  emulator::ldmatrix_x4(r, row_address, TRANS, POINTWISE_SITE);
}

template <typename T>
__attribute__((noinline)) T load_global(const T* p, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  emulator::count_access(emulator::Access::kGlobalLoad, p, sizeof(T), POINTWISE_SITE);
  return *p;
}
template <typename T>
__attribute__((noinline)) void store_global(T* p, const T& v, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  emulator::count_access(emulator::Access::kGlobalStore, p, sizeof(T), POINTWISE_SITE);
  *p = v;
}
template <typename T>
__attribute__((noinline)) T load_shared(const T* p, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  emulator::count_access(emulator::Access::kSharedLoad, p, sizeof(T), POINTWISE_SITE);
  return *p;
}
template <typename T>
__attribute__((noinline)) void store_shared(T* p, const T& v, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  emulator::count_access(emulator::Access::kSharedStore, p, sizeof(T), POINTWISE_SITE);
  *p = v;
}

inline void mma_m16n8k8_tf32(float* d, const uint32_t* a, const uint32_t* b) {
  emulator::mma(d, a, b, emulator::MmaKind::kTf32);
}

template <typename T>
inline void mma_m16n8k16(float* d, const uint32_t* a, const uint32_t* b) {
  static_assert(std::is_same_v<T, __half> || std::is_same_v<T, __nv_bfloat16>, "mma_m16n8k16 takes 16-bit floats");
  emulator::mma(d, a, b, std::is_same_v<T, __half> ? emulator::MmaKind::kF16 : emulator::MmaKind::kBf16);
}

inline cudaError_t current_device(int& device) {
  device = emulator::current_device();
  return cudaSuccess;
}

template <typename... Params>
cudaError_t set_max_dynamic_smem(void (*kernel)(Params...), size_t bytes) {
  return emulator::set_max_dynamic_smem(reinterpret_cast<const void*>(kernel), bytes);
}

template <typename... Params, typename... Args>
cudaError_t launch_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem_bytes, cudaStream_t,
                          Args&&... args) {
  // Arguments are copied once, as a launch copies them to the device.
  const std::tuple<std::decay_t<Params>...> params(std::forward<Args>(args)...);
  return emulator::launch(reinterpret_cast<const void*>(kernel), grid, block, smem_bytes,
                          [&] { std::apply(kernel, params); });
}

}  // namespace pointwise::cuda
