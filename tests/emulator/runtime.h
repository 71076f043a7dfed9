// A small CUDA emulator for the CPU, enough to run the kernels of csrc/cuda/gemm.cuh unchanged:
// every CUDA thread of a block is a fiber on one OS thread, switched at barriers, so a block's
// __syncthreads and a warp's collective instructions (ldmatrix, mma.sync) behave as on a GPU.
// Blocks run one after another. cp.async copies land as late as PTX allows (at the wait that
// covers them) or, in the "early" mode, at once; shared memory starts out as NaN bytes; a launch
// checks its configuration the way the CUDA runtime does. Any violation fails the launch with a
// message (last_error()). With counting on, it also counts what the memory instructions of the
// kernels would cost the memory pipeline (requests, sectors, bank wavefronts: a model, below).
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

// ---- memory counters: a model of the memory pipeline, not a measurement --------------------------
// With counting on, every memory instruction of the counted blocks is recorded per lane, and the
// lanes of one warp instruction (same warp, same code address, same count of earlier executions of
// that address by the lane since the last __syncthreads) are grouped as the hardware groups them:
//   - global (plain loads and stores, the source of cp.async): one request, the 32-byte sectors its
//     lanes touch, and the bytes they asked for (distinct bytes: lanes reading the same address
//     share them);
//   - shared (plain loads and stores, the destination of cp.async, ldmatrix): 32 banks of 4 bytes;
//     a request is cut into phases of at most 128 bytes (all lanes for accesses of up to 4 bytes,
//     16 lanes for 8, 8 for 16; ldmatrix.x4: one 8x8 matrix a phase), and each phase takes as many
//     wavefronts as the most distinct 4-byte words any one bank holds in it. The ideal is one a phase:
//     bank conflicts are the wavefronts beyond it.
// Lanes that skip an access inside a loop that other lanes go on running (a pixel in the padding)
// shift their later executions of it into other instructions: counts of such layers are approximate.
enum class Access { kGlobalLoad, kGlobalStore, kCpAsyncGlobal, kSharedLoad, kSharedStore, kCpAsyncShared, kLdmatrix };
constexpr int kAccessKinds = 7;
const char* access_name(Access a);
inline bool is_global(Access a) { return a <= Access::kCpAsyncGlobal; }

// A memory instruction: its code address (which instruction) and its place in the kernels' source.
struct Site {
  const void* pc;
  const char* file;
  int line;
};

struct AccessCounts {
  uint64_t requests = 0;    // warp instructions
  uint64_t bytes = 0;       // distinct bytes the lanes of each instruction asked for, summed
  uint64_t sectors = 0;     // global: 32-byte sectors touched
  uint64_t wavefronts = 0;  // shared: wavefronts taken
  uint64_t ideal = 0;       // shared: wavefronts without bank conflicts (one a phase)
  void add(const AccessCounts& o);
};

// The counts of one warp instruction of `bytes` a lane: (lane, address) of each active lane.
AccessCounts count_instruction(Access access, int bytes, const std::vector<std::pair<int, uintptr_t>>& lanes);

// Which blocks a launch counts: none, the first, middle and last block of the first and last
// z-slices (the first group's first split and the last group's last split), or all.
enum class Counting { kOff, kSampled, kAll };
// run_uncounted false: the blocks not counted do not run at all (their output is left unwritten),
// for counts and launch configurations of problems too large to emulate whole.
void set_counting(Counting counting, bool run_uncounted);

struct SiteCounts {
  std::string file;
  int line;
  Access access;
  AccessCounts counts;
};

struct MemoryCounters {
  uint64_t blocks = 0;  // counted
  AccessCounts by_access[kAccessKinds];
  std::vector<SiteCounts> sites;
  // Bytes of global memory read and written at least once (Counting::kAll only; 0 otherwise).
  uint64_t unique_bytes_read = 0, unique_bytes_written = 0;
};

// One launch as the runtime saw it, for tests that check which kernels a problem ran.
struct LaunchRecord {
  const void* kernel;
  dim3 grid, block;
  size_t smem_bytes;
  MemoryCounters counters;  // empty unless counting was on
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
void cp_async(void* smem, const void* gmem, int bytes, bool valid, Site site);
void cp_async_commit();
void cp_async_wait(int pending);

enum class MmaKind { kTf32, kF16, kBf16 };
void ldmatrix_x4(uint32_t (&r)[4], const void* row_address, bool trans, Site site);
void mma(float* d, const uint32_t* a, const uint32_t* b, MmaKind kind);

// A plain load or store of `bytes` at p by the running thread, for the counters.
extern bool counting_block;  // whether the running block is counted
void record_access(Access access, const void* p, int bytes, Site site);
inline void count_access(Access access, const void* p, int bytes, Site site) {
  if (counting_block) record_access(access, p, bytes, site);
}
}  // namespace pointwise::emulator
