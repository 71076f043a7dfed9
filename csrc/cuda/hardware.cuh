// What gemm.cuh and gemm_launch.cuh ask of the GPU beyond CUDA C++: the PTX instructions (cp.async,
// ldmatrix, mma.sync, the TF32 conversion), every other access to global and shared memory, and the
// runtime calls that configure and launch kernels.
//
// tests/emulator/cuda/hardware.cuh defines the same functions for the CPU (with threadIdx,
// __syncthreads and the rest of what nvcc provides), and comes first on the emulator's include
// path: that is how the test suite runs these kernels, unchanged, on a machine without a GPU.
// Keep the two in step.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>
#include <utility>

namespace pointwise::cuda {

// ---- device: cp.async (sm_80+) ---------------------------------------------------------------

// Copies BYTES (4, 8 or 16; smem and gmem aligned to it) from global to shared memory
// asynchronously; writes zeros instead when !valid.
template <int BYTES>
__device__ __forceinline__ void cp_async(void* smem, const void* gmem, bool valid) {
  const uint32_t dst = static_cast<uint32_t>(__cvta_generic_to_shared(smem));
  const int src_bytes = valid ? BYTES : 0;
  if constexpr (BYTES == 16) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(gmem), "r"(src_bytes));
  } else {
    asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(dst), "l"(gmem), "n"(BYTES),
                 "r"(src_bytes));
  }
}
// Closes the group of this thread's cp.asyncs issued since the last commit.
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
// Waits until at most PENDING of this thread's committed groups are still in flight.
template <int PENDING>
__device__ __forceinline__ void cp_async_wait() { asm volatile("cp.async.wait_group %0;\n" ::"n"(PENDING)); }

// ---- device: plain memory accesses -------------------------------------------------------------

// Every global and shared access of the kernels other than cp.async and ldmatrix goes through
// these: here the plain access, in the emulator a counted one (requests, 32-byte sectors, bank
// wavefronts: tests/emulator/runtime.h).
template <typename T>
__device__ __forceinline__ T load_global(const T* p) { return *p; }
template <typename T>
__device__ __forceinline__ void store_global(T* p, const T& v) { *p = v; }
template <typename T>
__device__ __forceinline__ T load_shared(const T* p) { return *p; }
template <typename T>
__device__ __forceinline__ void store_shared(T* p, const T& v) { *p = v; }

// ---- device: tensor cores ----------------------------------------------------------------------

// fp32 -> TF32 (round to nearest, ties away from zero), as the 32-bit pattern the mma reads.
__device__ __forceinline__ uint32_t to_tf32(float x) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
  return r;
}

// Four 8x8 matrices of 16-bit elements from shared memory into the mma fragment registers of a
// warp: lane l gives the address of row l % 8 of matrix l / 8 (16 contiguous bytes, 16-byte
// aligned) and receives, in register i, elements (l / 4, 2 (l % 4) + {0, 1}) of matrix i -- or of
// its transpose with TRANS (PTX ISA, "ldmatrix").
template <bool TRANS>
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* row_address) {
  const uint32_t address = static_cast<uint32_t>(__cvta_generic_to_shared(row_address));
  if constexpr (TRANS)
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(address));
  else
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(address));
}

// d += a * b for one warp: a 16x8 (TF32) A fragment, an 8x8 B fragment, a 16x8 fp32 accumulator
// (fragment layouts: PTX ISA, "Matrix Fragments for mma.m16n8k8", .tf32).
__device__ __forceinline__ void mma_m16n8k8_tf32(float* d, const uint32_t* a, const uint32_t* b) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// d += a * b for one warp: 16x16 A and 16x8 B fragments of T (__half or __nv_bfloat16), fp32
// accumulator ("Matrix Fragments for mma.m16n8k16 with floating point type").
template <typename T>
__device__ __forceinline__ void mma_m16n8k16(float* d, const uint32_t* a, const uint32_t* b) {
  if constexpr (std::is_same_v<T, __half>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    static_assert(std::is_same_v<T, __nv_bfloat16>, "mma_m16n8k16 takes __half or __nv_bfloat16");
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
        "{%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
}

// ---- host: the runtime -------------------------------------------------------------------------

inline cudaError_t current_device(int& device) { return cudaGetDevice(&device); }

// Lets `kernel` launch with up to `bytes` of dynamic shared memory on the current device.
template <typename... Params>
cudaError_t set_max_dynamic_smem(void (*kernel)(Params...), size_t bytes) {
  return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
}

// kernel<<<grid, block, smem_bytes, stream>>>(args...), and the launch's error code.
template <typename... Params, typename... Args>
cudaError_t launch_kernel(void (*kernel)(Params...), dim3 grid, dim3 block, size_t smem_bytes, cudaStream_t stream,
                          Args&&... args) {
  kernel<<<grid, block, smem_bytes, stream>>>(std::forward<Args>(args)...);
  return cudaGetLastError();
}

}  // namespace pointwise::cuda
