// The CPU micro-kernels against PyTorch's batch-reduce GEMM micro-kernel (at::native::cpublas::brgemm,
// oneDNN's JIT ukernel) on the same packed operands, one thread (bench/microkernels.py builds this
// with the package's own kernel files, so the kernels timed are the ones the ops run).
//
// The operands are packed as the drivers pack them: A in rows (M rows, K contiguous), B in
// interleaved panels of the kernel set's tile width (each panel a K x width row-major block, in
// pairs of depth steps for bfloat16, which is oneDNN's VNNI layout). Ours: gemm_packed over them;
// brgemm: one call per B panel, C[:, panel] = A . panel, on the same memory.
#include <torch/extension.h>

#include <ATen/native/CPUBlas.h>

#include <chrono>
#include <vector>

#include "cpu/kernels.h"

namespace {

using namespace pointwise::cpu;
using pointwise::dispatch_enum;
using Clock = std::chrono::steady_clock;

template <class K>
struct Operands {
  using P = typename K::Packed;
  using Pack = Panels<P, K::kDepthGroup>;
  int64_t m, n, k;
  std::vector<P> a_data, b_data;
  Pack a, b;

  Operands(int64_t m_, int64_t n_, int64_t k_) : m(m_), n(n_), k(k_) {
    constexpr int kRows = K::Tile::kRows, kCols = K::Tile::kCols;
    TORCH_CHECK(m % kRows == 0 && n % kCols == 0, "M and N must be whole tiles (", kRows, " x ", kCols, ")");
    a_data.resize(Pack::capacity(m / kRows, kRows, k));
    b_data.resize(Pack::capacity(n / kCols, kCols, k));
    a = Pack::rows(a_data.data(), m / kRows, kRows, k);
    b = Pack::interleaved(b_data.data(), n / kCols, kCols, k);
    // Values in [-1, 1): their exact size does not change the time.
    for (size_t i = 0; i < a_data.size(); ++i) a_data[i] = P(float(int64_t(i * 7919 % 2001) - 1000) / 1000.0f);
    for (size_t i = 0; i < b_data.size(); ++i) b_data[i] = P(float(int64_t(i * 104729 % 2001) - 1000) / 1000.0f);
  }
};

// Seconds for `reps` products of C = A . B, with kernel set K's micro-kernel through gemm_packed.
template <class K>
double time_ours(int64_t m, int64_t n, int64_t k, int reps) {
  using Acc = typename K::Acc;
  Operands<K> ops(m, n, k);
  std::vector<Acc> c(m * n), accumulators(K::Blocking::kAccumulatorSize);
  constexpr int kRows = K::Tile::kRows, kCols = K::Tile::kCols;
  auto destination = [&](int64_t ap, int64_t bp) { return TileDestination<Acc>{c.data() + ap * kRows * n + bp * kCols, n}; };
  auto finish = [](const TileDestination<Acc>&, bool, int64_t, int64_t) {};
  const auto start = Clock::now();
  for (int r = 0; r < reps; ++r) gemm_packed<K>(ops.a, ops.b, k, accumulators.data(), destination, finish, TileOrder::kDownColumns);
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// The same with brgemm, one call per B panel (the B panel's K x width block; VNNI pairs for bf16).
template <class K>
double time_brgemm(int64_t m, int64_t n, int64_t k, int reps) {
  using P = typename K::Packed;
  Operands<K> ops(m, n, k);
  std::vector<float> c(m * n);
  constexpr int kCols = K::Tile::kCols;
  const bool vnni = K::kDepthGroup == 2;
  auto run = [&] {
    for (int64_t bp = 0; bp < ops.b.count; ++bp) {
      const P* b = ops.b.at(bp, 0);
      if constexpr (std::is_same_v<P, float>) {
        at::native::cpublas::brgemm(m, kCols, k, ops.a.line_stride, kCols, n, false, ops.a.data, b, c.data() + bp * kCols,
                                    false);
      } else {
        at::native::cpublas::brgemm(m, kCols, k, ops.a.line_stride, kCols, n, false, ops.a.data, b, c.data() + bp * kCols,
                                    vnni);
      }
    }
  };
  run();  // the first call generates the kernel
  const auto start = Clock::now();
  for (int r = 0; r < reps; ++r) run();
  const double seconds = std::chrono::duration<double>(Clock::now() - start).count();
  at::native::cpublas::brgemm_release(vnni);
  return seconds;
}

// {isa: (ours GFLOP/s, brgemm GFLOP/s)} for the kernel sets of `dtype` ("float32" or "bfloat16")
// the CPU runs.
std::vector<std::tuple<std::string, double, double>> compare(const std::string& dtype, int64_t m, int64_t n, int64_t k,
                                                            int reps) {
  std::vector<std::tuple<std::string, double, double>> out;
  const double flop = 2.0 * m * n * k * reps;
  for (int i = 0; i < kIsaCount; ++i) {
    const Isa isa = static_cast<Isa>(i);
    if (!isa_compiled(isa) || !isa_supported(isa)) continue;
    dispatch_enum<Isa, kIsaCount>(isa, [&](auto which) {
      auto measure = [&](auto tag) {
        using K = typename decltype(tag)::type;
        out.emplace_back(kIsaNames[i], flop / time_ours<K>(m, n, k, reps) / 1e9,
                         flop / time_brgemm<K>(m, n, k, reps) / 1e9);
      };
      if (dtype == "float32") {
        measure(KernelSetTag<KernelSet<decltype(which)::value, float>>{});
      } else {
        // bfloat16's own kernel set where the ISA has one; the others pack it as float.
        using K = KernelSet<decltype(which)::value, c10::BFloat16>;
        if constexpr (std::is_same_v<typename K::Packed, c10::BFloat16>) measure(KernelSetTag<K>{});
      }
    });
  }
  return out;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("compare", &compare, "Single-thread GFLOP/s of each kernel set's micro-kernel and of brgemm on its packing.");
}
