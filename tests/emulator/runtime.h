// A small CUDA emulator for the CPU, enough to run the kernels of csrc/cuda/gemm.cuh unchanged:
// every CUDA thread of a block is a fiber on one OS thread, switched at barriers, so a block's
// __syncthreads and a warp's collective instructions (ldmatrix, mma.sync) behave as on a GPU.
// Blocks run one after another. cp.async copies land as late as PTX allows (at the wait that
// covers them) or, in the "early" mode, at once; shared memory starts out as NaN bytes; a launch
// checks its configuration the way the CUDA runtime does. Any violation fails the launch with a
// message (last_error()).
//
// What it does not model: timing, registers, memory-model subtleties beyond barriers, and
// global-memory bounds (guarded_allocator.cpp covers those for CPU tensors; compute-sanitizer on a GPU).
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

// What nvcc gives device code, for the kernels compiled as plain C++.
extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;

namespace pointwise::cuda {
// The kernels' `extern __shared__` array (their one dynamic shared-memory buffer).
extern unsigned char smem_raw[];
}  // namespace pointwise::cuda

namespace pointwise::emulator {

// The emulated GPUs: set_device picks one (device indices let the launchers' per-device caches
// see each as its own GPU).
struct DeviceSpec {
  const char* name;
  int multiprocessors;
  int block_smem_optin;  // bytes of shared memory a block may opt into
  int compute_capability;  // major * 10 + minor
};
const std::vector<DeviceSpec>& devices();
void set_device(int index);
int current_device();
const DeviceSpec& device_spec(int index);

enum class CopyLanding { kLate, kEarly };
void set_copy_landing(CopyLanding landing);

// One launch as the runtime saw it, for tests that check which kernels a problem ran.
struct LaunchRecord {
  dim3 grid, block;
  size_t smem_bytes;
};
const std::vector<LaunchRecord>& launches();
// The cp.asyncs those launches issued, counted by size in bytes.
const std::map<int, uint64_t>& copies_by_size();
void clear_launches();

// The first violation of the last failed launch.
const std::string& last_error();

// ---- the runtime calls --------------------------------------------------------------------------
cudaError_t set_max_dynamic_smem(const void* kernel, size_t bytes);
// Runs `body` (the kernel with its arguments) once per CUDA thread of every block.
cudaError_t launch(const void* kernel, dim3 grid, dim3 block, size_t smem_bytes, const std::function<void()>& body);

// ---- device side: called from inside a running kernel -------------------------------------------
void sync_block();
void cp_async(void* smem, const void* gmem, int bytes, bool valid);
void cp_async_commit();
void cp_async_wait(int pending);

enum class MmaKind { kTf32, kF16, kBf16 };
void ldmatrix_x4(uint32_t (&r)[4], const void* row_address, bool trans);
void mma(float* d, const uint32_t* a, const uint32_t* b, MmaKind kind);

}  // namespace pointwise::emulator
