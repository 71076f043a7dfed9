#include "autotune.h"

#include <atomic>
#include <mutex>
#include <unordered_map>
#include <utility>

namespace pointwise::autotune {
namespace {

std::atomic<bool> enabled_flag{false};

struct Cache {
  std::mutex mutex;
  std::vector<Entry> entries;                       // in tuning order, for reports
  std::unordered_map<std::string, int64_t> chosen;  // problem key -> plan code
};

Cache& cache() {
  static Cache instance;
  return instance;
}

}  // namespace

bool enabled() { return enabled_flag.load(std::memory_order_relaxed); }
void set_enabled(bool enabled) { enabled_flag.store(enabled, std::memory_order_relaxed); }

std::optional<int64_t> lookup(const std::string& key) {
  Cache& c = cache();
  const std::lock_guard<std::mutex> lock(c.mutex);
  const auto it = c.chosen.find(key);
  if (it == c.chosen.end()) return std::nullopt;
  return it->second;
}

int64_t store(const std::string& key, Entry entry) {
  Cache& c = cache();
  const std::lock_guard<std::mutex> lock(c.mutex);
  const auto [it, inserted] = c.chosen.emplace(key, entry.timings.at(entry.chosen).code);
  if (inserted) c.entries.push_back(std::move(entry));
  return it->second;
}

std::vector<Entry> entries() {
  Cache& c = cache();
  const std::lock_guard<std::mutex> lock(c.mutex);
  return c.entries;
}

void clear() {
  Cache& c = cache();
  const std::lock_guard<std::mutex> lock(c.mutex);
  c.entries.clear();
  c.chosen.clear();
}

}  // namespace pointwise::autotune
