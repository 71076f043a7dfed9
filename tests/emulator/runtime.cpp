// The emulator of runtime.h: fibers (ucontext) for CUDA threads, a round-robin scheduler that
// switches at barriers, and the PTX instructions written from the PTX ISA's definitions -- not
// from the kernels -- so that the kernels' use of them is checked, not assumed.
#include "runtime.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <ucontext.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <tuple>
#include <unordered_map>
#include <utility>

uint3 threadIdx, blockIdx;
dim3 blockDim, gridDim;

namespace pointwise::emulator {
namespace {

constexpr size_t kDefaultSmem = 48 * 1024;  // what a kernel may use without opting in
constexpr size_t kMostSmem = 232448;        // 227 KB: the largest opt-in of the emulated devices
constexpr size_t kGuardBytes = 1024;        // after the launch's shared memory: must stay untouched
constexpr unsigned char kGuardByte = 0xa5;
constexpr unsigned char kPoisonByte = 0xff;  // NaN in every floating-point type
constexpr size_t kStackBytes = 256 * 1024;

}  // namespace
}  // namespace pointwise::emulator

namespace pointwise::cuda {
alignas(128) unsigned char smem_raw[pointwise::emulator::kMostSmem + pointwise::emulator::kGuardBytes];
}  // namespace pointwise::cuda

namespace pointwise::emulator {
namespace {

struct Barrier {
  int expected = 0, arrived = 0;
  uint64_t generation = 0;
};

struct Copy {
  void* dst;
  const void* src;
  int bytes;
  bool valid;
};

void land(const Copy& c) {
  if (c.valid) std::memcpy(c.dst, c.src, c.bytes);
  else std::memset(c.dst, 0, c.bytes);
}

// One execution of a memory instruction by one thread, as the counters key it: the lanes of a
// warp instruction share it (runtime.h).
struct InstructionKey {
  int warp;
  const void* pc;
  Access access;  // cp.async is two: its global read and its shared write
  uint32_t occurrence;  // earlier executions of this instruction by the thread since the last barrier
  bool operator==(const InstructionKey&) const = default;
};
struct Executed {
  const void* pc;
  Access access;
  bool operator==(const Executed&) const = default;
};
struct SiteKey {
  const char* file;
  int line;
  Access access;
  bool operator==(const SiteKey&) const = default;
  bool operator<(const SiteKey& o) const {
    return std::tie(file, line, access) < std::tie(o.file, o.line, o.access);
  }
};
struct KeyHash {
  size_t operator()(const Executed& k) const {
    return std::hash<const void*>()(k.pc) ^ size_t(k.access) * 0x9e3779b97f4a7c15ull;
  }
  size_t operator()(const InstructionKey& k) const {
    return (*this)(Executed{k.pc, k.access}) ^ (size_t(k.occurrence) * 0xc2b2ae3d27d4eb4full) ^ size_t(k.warp) << 40;
  }
};
// The lanes of one warp instruction: (lane, address), all of the same access size.
struct Instruction {
  Site site{};
  int bytes = 0;
  std::vector<std::pair<int, uintptr_t>> lanes;
};

struct Fiber {
  ucontext_t context;
  std::unique_ptr<char[]> stack{new char[kStackBytes]};
  bool done = false;
  Barrier* waiting = nullptr;
  uint64_t generation = 0;       // of `waiting` when this fiber arrived
  std::vector<Copy> open;        // cp.asyncs since the last commit
  std::deque<std::vector<Copy>> committed;
  std::unordered_map<Executed, uint32_t, KeyHash> executions;  // since the last barrier, when counting
};

// What the lanes of a warp hand each other in a collective instruction.
struct WarpExchange {
  const void* address[32];
  bool valid[32];
  uint32_t a[32][4], b[32][2];
  float c[32][4];
};

struct Emulator {
  std::mutex mutex;
  int device = 0;
  CopyLanding landing = CopyLanding::kLate;
  std::vector<LaunchRecord> launches;
  std::map<int, uint64_t> copies;  // cp.asyncs by size in bytes
  std::map<std::pair<const void*, int>, size_t> max_smem;  // (kernel, device) -> opted-in bytes
  std::string error;

  // The launch being run.
  const std::function<void()>* body = nullptr;
  size_t smem_bytes = 0;
  unsigned threads = 0;
  std::vector<std::unique_ptr<Fiber>> fibers;
  int current = -1;  // the running fiber: the linear index of its thread in the block
  ucontext_t scheduler;
  Barrier block_barrier;
  std::vector<Barrier> warp_barriers;
  std::vector<WarpExchange> exchanges;

  // Counting (runtime.h): the mode, the warp instructions of the running block since its last
  // barrier, and the launch's totals.
  Counting counting = Counting::kOff;
  bool run_uncounted = true;
  std::unordered_map<InstructionKey, Instruction, KeyHash> pending;
  std::map<SiteKey, AccessCounts> sites;
  std::unordered_map<uint64_t, uint32_t> read_sectors, written_sectors;  // sector -> bytes touched (bit mask)
};

Emulator& state() {
  static Emulator e;
  return e;
}

void fail(const std::string& what) {
  Emulator& e = state();
  if (!e.error.empty()) return;
  std::ostringstream out;
  out << "block (" << blockIdx.x << ", " << blockIdx.y << ", " << blockIdx.z << ")";
  if (e.current >= 0) out << " thread " << e.current;
  out << ": " << what;
  e.error = out.str();
}

// Whether [p, p + bytes) lies in the launch's shared memory, aligned to `align`; a violation otherwise.
bool check_smem(const void* p, size_t bytes, size_t align, const char* what) {
  const Emulator& e = state();
  const auto* c = static_cast<const unsigned char*>(p);
  const unsigned char* base = pointwise::cuda::smem_raw;
  if (c < base || c + bytes > base + e.smem_bytes) {
    fail(std::string(what) + " outside the launch's " + std::to_string(e.smem_bytes) + " bytes of shared memory");
    return false;
  }
  if (reinterpret_cast<uintptr_t>(p) % align != 0) {
    fail(std::string(what) + " not aligned to " + std::to_string(align) + " bytes");
    return false;
  }
  return true;
}

void mark_bytes(std::unordered_map<uint64_t, uint32_t>& sectors, uintptr_t address, int bytes) {
  for (uintptr_t b = address; b < address + bytes; ++b) sectors[b / 32] |= 1u << (b % 32);
}

// Adds the warp instructions of the running block since its last barrier to the launch's counts.
void flush_instructions(Emulator& e) {
  for (const auto& [key, ins] : e.pending) {
    e.sites[SiteKey{ins.site.file, ins.site.line, key.access}].add(count_instruction(key.access, ins.bytes, ins.lanes));
    if (e.counting != Counting::kAll || !is_global(key.access)) continue;
    auto& touched = key.access == Access::kGlobalStore ? e.written_sectors : e.read_sectors;
    for (const auto& lane : ins.lanes) mark_bytes(touched, lane.second, ins.bytes);
  }
  e.pending.clear();
  for (unsigned i = 0; i < e.threads; ++i) e.fibers[i]->executions.clear();
}

bool counts_block(const Emulator& e, dim3 grid, uint3 block) {
  if (e.counting == Counting::kAll) return true;
  if (e.counting == Counting::kOff) return false;
  if (block.z != 0 && block.z != grid.z - 1) return false;
  const uint64_t plane = uint64_t(grid.x) * grid.y, at = uint64_t(block.y) * grid.x + block.x;
  return at == 0 || at == plane / 2 || at == plane - 1;
}

MemoryCounters launch_counts(Emulator& e, uint64_t blocks) {
  MemoryCounters m;
  m.blocks = blocks;
  for (const auto& [key, counts] : e.sites) {
    m.by_access[static_cast<int>(key.access)].add(counts);
    m.sites.push_back({key.file, key.line, key.access, counts});
  }
  std::sort(m.sites.begin(), m.sites.end(), [](const SiteCounts& a, const SiteCounts& b) {
    return std::tie(a.file, a.line, a.access) < std::tie(b.file, b.line, b.access);
  });
  for (const auto& [sector, mask] : e.read_sectors) m.unique_bytes_read += std::popcount(mask);
  for (const auto& [sector, mask] : e.written_sectors) m.unique_bytes_written += std::popcount(mask);
  e.sites.clear();
  e.read_sectors.clear();
  e.written_sectors.clear();
  return m;
}

void fiber_main() {
  Emulator& e = state();
  (*e.body)();
  Fiber& f = *e.fibers[e.current];
  f.done = true;
  swapcontext(&f.context, &e.scheduler);  // never resumed
}

void arrive_and_wait(Barrier& b) {
  Emulator& e = state();
  if (++b.arrived == b.expected) {
    b.arrived = 0;
    ++b.generation;
    return;
  }
  Fiber& f = *e.fibers[e.current];
  f.waiting = &b;
  f.generation = b.generation;
  swapcontext(&f.context, &e.scheduler);
}

void set_thread_index(unsigned linear) {
  threadIdx.x = linear % blockDim.x;
  threadIdx.y = linear / blockDim.x % blockDim.y;
  threadIdx.z = linear / (blockDim.x * blockDim.y);
}

// Runs the fibers of one block to completion, round robin, each until it exits or waits at a
// barrier that is still missing threads.
void run_block(Emulator& e) {
  for (unsigned i = 0; i < e.threads; ++i) {
    Fiber& f = *e.fibers[i];
    f.done = false;
    f.waiting = nullptr;
    f.open.clear();
    f.committed.clear();
    getcontext(&f.context);
    f.context.uc_stack.ss_sp = f.stack.get();
    f.context.uc_stack.ss_size = kStackBytes;
    f.context.uc_link = nullptr;
    makecontext(&f.context, fiber_main, 0);
  }
  e.block_barrier = Barrier{static_cast<int>(e.threads)};
  const unsigned warps = (e.threads + 31) / 32;
  e.warp_barriers.assign(warps, Barrier{});
  for (unsigned w = 0; w < warps; ++w) e.warp_barriers[w].expected = static_cast<int>(std::min(32u, e.threads - 32 * w));
  e.exchanges.resize(warps);
  for (;;) {
    bool ran = false, all_done = true;
    for (unsigned i = 0; i < e.threads; ++i) {
      Fiber& f = *e.fibers[i];
      if (f.done) continue;
      all_done = false;
      if (f.waiting != nullptr && f.waiting->generation == f.generation) continue;
      f.waiting = nullptr;
      e.current = static_cast<int>(i);
      set_thread_index(i);
      swapcontext(&e.scheduler, &f.context);
      ran = true;
    }
    if (all_done) break;
    if (!ran) {
      e.current = -1;
      fail("deadlock: threads wait at a barrier that others never reach (or exited without)");
      return;
    }
  }
  for (unsigned i = 0; i < e.threads; ++i) {
    const Fiber& f = *e.fibers[i];
    if (!f.open.empty() || !f.committed.empty()) {
      e.current = static_cast<int>(i);
      fail("exited with cp.async copies it never waited for");
      break;
    }
  }
  e.current = -1;
}

float bits_to_float(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

// Element `half` (0: the low 16 bits, 1: the high) of a register holding two 16-bit floats.
float element16(uint32_t reg, int half, MmaKind kind) {
  const uint16_t bits = static_cast<uint16_t>(half ? reg >> 16 : reg & 0xffffu);
  if (kind == MmaKind::kF16) {
    __half h;
    std::memcpy(&h, &bits, sizeof h);
    return __half2float(h);
  }
  __nv_bfloat16 h;
  std::memcpy(&h, &bits, sizeof h);
  return __bfloat162float(h);
}

// A TF32 operand: the tensor cores read the sign, exponent and top 10 mantissa bits.
float tf32_element(uint32_t reg) { return bits_to_float(reg & 0xffffe000u); }

}  // namespace

bool counting_block = false;

const char* access_name(Access a) {
  static const char* const names[kAccessKinds] = {"global_load", "global_store", "cp_async_global", "shared_load",
                                                  "shared_store", "cp_async_shared", "ldmatrix"};
  return names[static_cast<int>(a)];
}

AccessCounts count_instruction(Access access, int bytes, const std::vector<std::pair<int, uintptr_t>>& lanes) {
  AccessCounts c;
  c.requests = 1;
  std::vector<std::pair<uintptr_t, uintptr_t>> spans;  // [begin, end) of each lane
  for (const auto& lane : lanes) spans.emplace_back(lane.second, lane.second + bytes);
  std::sort(spans.begin(), spans.end());
  uintptr_t covered = 0;  // end of the bytes counted so far
  uint64_t last_sector = UINT64_MAX;
  for (const auto& [begin, end] : spans) {
    const uintptr_t from = std::max(begin, covered);
    if (from < end) c.bytes += end - from;
    covered = std::max(covered, end);
    for (uint64_t s = begin / 32; s <= (end - 1) / 32; ++s)
      if (last_sector == UINT64_MAX || s > last_sector) {
        ++c.sectors;
        last_sector = s;
      }
  }
  if (is_global(access)) return c;
  c.sectors = 0;
  // Shared: phases of at most 128 bytes of lanes, in lane order; in each, the most distinct 4-byte
  // words that one bank holds.
  const int lanes_per_phase = bytes <= 4 ? 32 : 128 / bytes;
  for (int first = 0; first < 32; first += lanes_per_phase) {
    std::vector<uintptr_t> words;
    for (const auto& [lane, address] : lanes)
      if (lane >= first && lane < first + lanes_per_phase)
        for (uintptr_t w = address / 4; w <= (address + bytes - 1) / 4; ++w) words.push_back(w);
    if (words.empty()) continue;
    std::sort(words.begin(), words.end());
    words.erase(std::unique(words.begin(), words.end()), words.end());
    int per_bank[32] = {};
    for (uintptr_t w : words) ++per_bank[w % 32];
    c.wavefronts += *std::max_element(per_bank, per_bank + 32);
    ++c.ideal;
  }
  return c;
}

void AccessCounts::add(const AccessCounts& o) {
  requests += o.requests;
  bytes += o.bytes;
  sectors += o.sectors;
  wavefronts += o.wavefronts;
  ideal += o.ideal;
}

// ---- settings -------------------------------------------------------------------------------------

const std::vector<DeviceSpec>& devices() {
  static const std::vector<DeviceSpec> specs = {
      {"sm_90 (H100 SXM): 132 SMs, 227 KB of shared memory a block", 132, 232448, 90},
      {"sm_86 (RTX 3090): 82 SMs, 99 KB of shared memory a block", 82, 101376, 86},
      {"a 4-SM GPU with 227 KB a block (few splits, large tiles on small problems)", 4, 232448, 90},
  };
  return specs;
}

const DeviceSpec& device_spec(int index) { return devices().at(static_cast<size_t>(index)); }

void set_device(int index) {
  (void)device_spec(index);  // throws std::out_of_range for an unknown device
  state().device = index;
}

int current_device() { return state().device; }

void set_copy_landing(CopyLanding landing) { state().landing = landing; }

void set_counting(Counting counting, bool run_uncounted) {
  state().counting = counting;
  state().run_uncounted = run_uncounted;
}

const std::vector<LaunchRecord>& launches() { return state().launches; }
const std::map<int, uint64_t>& copies_by_size() { return state().copies; }
void clear_launches() {
  state().launches.clear();
  state().copies.clear();
}
const std::string& last_error() { return state().error; }

// ---- the runtime calls ----------------------------------------------------------------------------

cudaError_t set_max_dynamic_smem(const void* kernel, size_t bytes) {
  Emulator& e = state();
  if (bytes > static_cast<size_t>(device_spec(e.device).block_smem_optin)) {
    e.error = "cudaFuncSetAttribute: " + std::to_string(bytes) + " bytes of dynamic shared memory, over the " +
              std::to_string(device_spec(e.device).block_smem_optin) + " this device allows a block";
    return cudaErrorInvalidValue;
  }
  e.max_smem[{kernel, e.device}] = bytes;
  return cudaSuccess;
}

cudaError_t launch(const void* kernel, dim3 grid, dim3 block, size_t smem_bytes, const std::function<void()>& body) {
  Emulator& e = state();
  const std::lock_guard<std::mutex> lock(e.mutex);
  e.error.clear();
  e.launches.push_back({kernel, grid, block, smem_bytes, {}});
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  if (threads == 0 || threads > 1024 || grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.y > 65535 ||
      grid.z > 65535) {
    std::ostringstream out;
    out << "invalid launch configuration: grid (" << grid.x << ", " << grid.y << ", " << grid.z << "), block ("
        << block.x << ", " << block.y << ", " << block.z << ")";
    e.error = out.str();
    return cudaErrorInvalidConfiguration;
  }
  const auto opted = e.max_smem.find({kernel, e.device});
  const size_t allowed = opted == e.max_smem.end() ? kDefaultSmem : opted->second;
  if (smem_bytes > allowed) {
    e.error = "launch asks for " + std::to_string(smem_bytes) + " bytes of dynamic shared memory; the kernel may use " +
              std::to_string(allowed) + " (cudaFuncSetAttribute)";
    return cudaErrorInvalidValue;
  }
  e.body = &body;
  e.smem_bytes = smem_bytes;
  e.threads = static_cast<unsigned>(threads);
  while (e.fibers.size() < e.threads) e.fibers.push_back(std::make_unique<Fiber>());
  gridDim = grid;
  blockDim = block;
  unsigned char* smem = pointwise::cuda::smem_raw;
  uint64_t counted = 0;
  for (unsigned z = 0; z < grid.z && e.error.empty(); ++z)
    for (unsigned y = 0; y < grid.y && e.error.empty(); ++y)
      for (unsigned x = 0; x < grid.x && e.error.empty(); ++x) {
        blockIdx = {x, y, z};
        counting_block = counts_block(e, grid, blockIdx);
        if (!counting_block && !e.run_uncounted) continue;
        std::memset(smem, kPoisonByte, smem_bytes);
        std::memset(smem + smem_bytes, kGuardByte, kGuardBytes);
        run_block(e);
        if (counting_block) {
          flush_instructions(e);
          ++counted;
        }
        counting_block = false;
        for (size_t i = 0; i < kGuardBytes; ++i)
          if (smem[smem_bytes + i] != kGuardByte) {
            fail("wrote shared memory past the launch's " + std::to_string(smem_bytes) + " bytes (at +" +
                 std::to_string(i) + ")");
            break;
          }
        if (!e.error.empty()) break;
      }
  e.body = nullptr;
  counting_block = false;
  e.pending.clear();
  e.launches.back().counters = launch_counts(e, counted);
  return e.error.empty() ? cudaSuccess : cudaErrorLaunchFailure;
}

// ---- device side ----------------------------------------------------------------------------------

void sync_block() {
  Emulator& e = state();
  // The last thread to arrive closes the counted instructions of this stretch between barriers.
  if (counting_block && e.block_barrier.arrived + 1 == e.block_barrier.expected) flush_instructions(e);
  arrive_and_wait(e.block_barrier);
}

void record_access(Access access, const void* p, int bytes, Site site) {
  Emulator& e = state();
  Fiber& f = *e.fibers[e.current];
  uint32_t& executions = f.executions[Executed{site.pc, access}];
  Instruction& ins = e.pending[InstructionKey{e.current / 32, site.pc, access, executions++}];
  if (ins.lanes.empty()) {
    ins.site = site;
    ins.bytes = bytes;
  } else if (ins.bytes != bytes) {
    fail("counters: lanes of one instruction access " + std::to_string(ins.bytes) + " and " + std::to_string(bytes) +
         " bytes");
  }
  ins.lanes.emplace_back(e.current % 32, reinterpret_cast<uintptr_t>(p));
}

void cp_async(void* smem, const void* gmem, int bytes, bool valid, Site site) {
  Emulator& e = state();
  if (!check_smem(smem, bytes, bytes, "cp.async destination")) return;
  if (counting_block) {
    record_access(Access::kCpAsyncShared, smem, bytes, site);
    if (valid) record_access(Access::kCpAsyncGlobal, gmem, bytes, site);
  }
  if (valid && reinterpret_cast<uintptr_t>(gmem) % bytes != 0) {
    fail("cp.async source not aligned to its " + std::to_string(bytes) + " bytes");
    return;
  }
  const Copy copy{smem, gmem, bytes, valid};
  ++e.copies[bytes];
  if (e.landing == CopyLanding::kEarly) land(copy);
  else e.fibers[e.current]->open.push_back(copy);
}

void cp_async_commit() {
  Fiber& f = *state().fibers[state().current];
  f.committed.push_back(std::move(f.open));
  f.open.clear();
}

void cp_async_wait(int pending) {
  Fiber& f = *state().fibers[state().current];
  while (f.committed.size() > static_cast<size_t>(pending)) {
    for (const Copy& c : f.committed.front()) land(c);
    f.committed.pop_front();
  }
}

void ldmatrix_x4(uint32_t (&r)[4], const void* row_address, bool trans, Site site) {
  Emulator& e = state();
  const int lane = e.current % 32, warp = e.current / 32;
  WarpExchange& x = e.exchanges[warp];
  x.address[lane] = row_address;
  x.valid[lane] = check_smem(row_address, 16, 16, "ldmatrix row address");
  // Eight 16-byte rows a phase: one 8x8 matrix (the phases of a 16-byte access, runtime.h).
  if (counting_block) record_access(Access::kLdmatrix, row_address, 16, site);
  arrive_and_wait(e.warp_barriers[warp]);
  // Lane l holds elements (row l/4, columns 2 (l%4) and 2 (l%4) + 1) of each 8x8 matrix, the
  // lower column in the low half; .trans delivers the matrix's transpose. Row j of matrix i
  // starts at the address of lane 8 i + j.
  const int g = lane / 4, t = lane % 4;
  for (int i = 0; i < 4; ++i) {
    auto element = [&](int row, int col) -> uint32_t {
      const int source = 8 * i + row;
      return x.valid[source] ? static_cast<const uint16_t*>(x.address[source])[col] : 0u;
    };
    const uint32_t lo = trans ? element(2 * t, g) : element(g, 2 * t);
    const uint32_t hi = trans ? element(2 * t + 1, g) : element(g, 2 * t + 1);
    r[i] = lo | hi << 16;
  }
  arrive_and_wait(e.warp_barriers[warp]);
}

void mma(float* d, const uint32_t* a, const uint32_t* b, MmaKind kind) {
  Emulator& e = state();
  const int lane = e.current % 32, warp = e.current / 32;
  WarpExchange& x = e.exchanges[warp];
  std::memcpy(x.a[lane], a, sizeof x.a[lane]);
  std::memcpy(x.b[lane], b, sizeof x.b[lane]);
  std::memcpy(x.c[lane], d, sizeof x.c[lane]);
  arrive_and_wait(e.warp_barriers[warp]);
  // The warp's whole A (16 x K) and B (K x 8), from the fragment layouts of the PTX ISA:
  // m16n8k8 .tf32: a0 (g, t), a1 (g+8, t), a2 (g, t+4), a3 (g+8, t+4); b0 (t, g), b1 (t+4, g).
  // m16n8k16 .f16/.bf16, two elements a register (low half first): a0 (g, 2t..), a1 (g+8, 2t..),
  // a2 (g, 2t+8..), a3 (g+8, 2t+8..); b0 (2t.., g), b1 (2t+8.., g).
  const int K = kind == MmaKind::kTf32 ? 8 : 16;
  float A[16][16], B[16][8];
  for (int l = 0; l < 32; ++l) {
    const int g = l / 4, t = l % 4;
    if (kind == MmaKind::kTf32) {
      A[g][t] = tf32_element(x.a[l][0]);
      A[g + 8][t] = tf32_element(x.a[l][1]);
      A[g][t + 4] = tf32_element(x.a[l][2]);
      A[g + 8][t + 4] = tf32_element(x.a[l][3]);
      B[t][g] = tf32_element(x.b[l][0]);
      B[t + 4][g] = tf32_element(x.b[l][1]);
    } else {
      for (int h = 0; h < 2; ++h) {
        A[g][2 * t + h] = element16(x.a[l][0], h, kind);
        A[g + 8][2 * t + h] = element16(x.a[l][1], h, kind);
        A[g][2 * t + 8 + h] = element16(x.a[l][2], h, kind);
        A[g + 8][2 * t + 8 + h] = element16(x.a[l][3], h, kind);
        B[2 * t + h][g] = element16(x.b[l][0], h, kind);
        B[2 * t + 8 + h][g] = element16(x.b[l][1], h, kind);
      }
    }
  }
  // This lane's accumulators: c0, c1 at (g, 2t), (g, 2t+1); c2, c3 at (g+8, 2t), (g+8, 2t+1).
  const int g = lane / 4, t = lane % 4;
  for (int i = 0; i < 4; ++i) {
    const int row = g + (i / 2) * 8, col = 2 * t + i % 2;
    float sum = x.c[lane][i];
    for (int k = 0; k < K; ++k) sum += A[row][k] * B[k][col];
    d[i] = sum;
  }
  arrive_and_wait(e.warp_barriers[warp]);
}

}  // namespace pointwise::emulator
