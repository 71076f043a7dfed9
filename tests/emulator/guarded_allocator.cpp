// A CPU allocator for the emulated CUDA tests: each allocation gets pages of its own with an
// inaccessible page right after its end and another right before its start, so that a kernel
// reading or writing outside a tensor faults at once (within the 15 bytes of slack that 16-byte
// alignment leaves at the end) instead of silently using a neighbour's bytes; and every
// allocation starts as 0xff bytes (NaN in every floating-point type), so an output element a
// kernel never writes is caught by the finiteness check of the reference comparison.
#include "guarded_allocator.h"

#include <c10/core/CPUAllocator.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstring>
#include <mutex>
#include <unordered_map>

namespace pointwise::emulator {
namespace {

struct Mapping {
  void* base;
  size_t bytes;
};

// Each allocation's mapping, by its data pointer: the data pointer is also the DataPtr's context,
// as c10's raw_allocate requires (some CPU kernels, F.gelu's among them, allocate that way).
std::mutex mappings_mutex;
std::unordered_map<void*, Mapping>& mappings() {
  static std::unordered_map<void*, Mapping> instance;
  return instance;
}

void unmap(void* data) {
  Mapping m;
  {
    const std::lock_guard<std::mutex> lock(mappings_mutex);
    auto it = mappings().find(data);
    m = it->second;
    mappings().erase(it);
  }
  munmap(m.base, m.bytes);
}

struct GuardedAllocator final : c10::Allocator {
  c10::DataPtr allocate(size_t n) override {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    const size_t body = (n + 15) / 16 * 16;
    const size_t bytes = (body + page - 1) / page * page + 2 * page;
    void* base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    TORCH_CHECK(base != MAP_FAILED, "guarded allocator: mmap of ", bytes, " bytes failed");
    auto* first = static_cast<char*>(base);
    TORCH_CHECK(mprotect(first, page, PROT_NONE) == 0 && mprotect(first + bytes - page, page, PROT_NONE) == 0,
                "guarded allocator: mprotect failed");
    char* data = first + bytes - page - body;
    std::memset(data, 0xff, body);
    {
      const std::lock_guard<std::mutex> lock(mappings_mutex);
      mappings()[data] = Mapping{base, bytes};
    }
    return {data, data, &unmap, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &unmap; }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};

// Above the priority of every allocator PyTorch registers for the CPU by itself.
constexpr uint8_t kPriority = 100;

}  // namespace

void guard_cpu_allocations(bool enabled) {
  static GuardedAllocator guarded;
  static c10::Allocator* previous = nullptr;
  if (enabled && previous == nullptr) {
    previous = c10::GetCPUAllocator();
    c10::SetCPUAllocator(&guarded, kPriority);
  } else if (!enabled && previous != nullptr) {
    c10::SetCPUAllocator(previous, kPriority);
    previous = nullptr;
  }
}

}  // namespace pointwise::emulator
