// Autotuning of the GEMM plans (pointwise_cuda.set_autotune): off by default, as
// torch.backends.cudnn.benchmark is. When on, the first call of each distinct problem times every
// candidate plan (tile shape x K splits) on the GPU, keeps the fastest, and every later call of that
// problem in this process runs it. This file holds the switch and the cache; what a problem and a
// plan are is the CUDA backend's business (cuda/conv_gemm.cpp), so problems are keyed by opaque byte
// strings and described by readable ones, and plans are an opaque code. Compiled into every build, so that the switch exists even where no
// backend uses it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace pointwise::autotune {

bool enabled();
void set_enabled(bool enabled);

struct Timing {
  std::string plan;  // e.g. "medium x4"
  int64_t code;      // the backend's encoding of the plan
  double ms;         // the fastest of a few timed runs
};

// One tuned problem: its description, every candidate's time, and the index of the one kept.
struct Entry {
  std::string problem;  // readable, for reports
  std::vector<Timing> timings;
  size_t chosen = 0;
};

// The code of the plan kept for the problem with this key, if it was tuned.
std::optional<int64_t> lookup(const std::string& key);
// Keeps timings[chosen] for the problem with this key and returns the code of the plan kept: the
// first entry's, if two threads tuned the same problem at once, so that every call after this one
// runs the same plan.
int64_t store(const std::string& key, Entry entry);
// Every tuned problem, in the order they were tuned.
std::vector<Entry> entries();
void clear();

}  // namespace pointwise::autotune
