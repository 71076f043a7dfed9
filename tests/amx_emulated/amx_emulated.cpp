// The CPU drivers (csrc/cpu/pointwise_cpu.cpp, included: its templates are internal to it) run with
// the AMX kernel set's micro-kernel (amx_micro_kernel.h), tile shape, blocking, GemmScope and A
// packing on an emulation of the tile registers, and the portable epilogue: so every machine checks
// the AMX path's indexing, depth tails, partial sums and packing; only the instructions (and the
// AVX-512 epilogue, the same templates as the other sets') need an AMX CPU.
#include <torch/extension.h>

#include <atomic>
#include <cstring>

#include "cpu/pointwise_cpu.cpp"
#include "guarded_allocator.h"  // tests/emulator's

namespace pointwise::cpu {
namespace {

std::atomic<int64_t> dot_products{0};

// The tile registers as the Intel SDM describes them: 8 tiles of up to 16 rows of 64 bytes, shaped
// by LDTILECFG, zeroed by it; TDPBF16PS's checks of shapes become errors here where the CPU raises #UD.
struct EmulatedTile {
  int rows, bytes;
  alignas(64) unsigned char data[16][64];
};

struct EmulatedTileRegisters {
  using Tile = EmulatedTile;
  static inline thread_local Tile tiles[8] = {};
  static inline thread_local bool configured = false;

  static void configure(const AmxTileConfig& config) {
    TORCH_CHECK(config.palette == 1 && config.start_row == 0, "LDTILECFG: palette 1 from row 0");
    for (int t = 0; t < 8; ++t) {
      TORCH_CHECK(config.rows[t] <= 16 && config.bytes_per_row[t] <= 64, "LDTILECFG: tile ", t, " too large");
      tiles[t].rows = config.rows[t];
      tiles[t].bytes = config.bytes_per_row[t];
      std::memset(tiles[t].data, 0, sizeof tiles[t].data);
    }
    configured = true;
  }
  static void release() { configured = false; }
  static Tile& tile(int t) {
    TORCH_CHECK(configured, "a tile instruction without a configuration (LDTILECFG)");
    TORCH_CHECK(tiles[t].rows > 0, "tile ", t, " is not configured");
    return tiles[t];
  }
  template <int t>
  static void zero() {
    std::memset(tile(t).data, 0, sizeof tiles[t].data);
  }
  template <int t>
  static void load(const void* p, int64_t stride) {
    Tile& x = tile(t);
    for (int r = 0; r < x.rows; ++r) std::memcpy(x.data[r], static_cast<const char*>(p) + r * stride, x.bytes);
  }
  template <int t>
  static void store(void* p, int64_t stride) {
    const Tile& x = tile(t);
    for (int r = 0; r < x.rows; ++r) std::memcpy(static_cast<char*>(p) + r * stride, x.data[r], x.bytes);
  }
  // c[m][n] += a[m][2k] * b[k][2n] + a[m][2k + 1] * b[k][2n + 1], each product added in float.
  template <int c, int a, int b>
  static void dot() {
    static_assert(c != a && c != b && a != b, "TDPBF16PS takes three distinct tiles");
    Tile &tc = tile(c), &ta = tile(a), &tb = tile(b);
    TORCH_CHECK(tc.rows == ta.rows && ta.bytes == 4 * tb.rows && tc.bytes == tb.bytes, "TDPBF16PS: tile shapes");
    auto value = [](const Tile& x, int row, int index) {
      c10::BFloat16 v;
      std::memcpy(&v, x.data[row] + 2 * index, 2);
      return static_cast<float>(v);
    };
    for (int m = 0; m < tc.rows; ++m) {
      for (int n = 0; n < tc.bytes / 4; ++n) {
        float sum;
        std::memcpy(&sum, tc.data[m] + 4 * n, 4);
        for (int k = 0; k < ta.bytes / 4; ++k) {
          sum += value(ta, m, 2 * k) * value(tb, k, 2 * n);
          sum += value(ta, m, 2 * k + 1) * value(tb, k, 2 * n + 1);
        }
        std::memcpy(tc.data[m] + 4 * n, &sum, 4);
      }
    }
    ++dot_products;
  }
};

// The AMX kernel set with the emulated tiles and the portable epilogue; no second width (the real
// set's is AVX512-BF16 code): every GEMM runs on tiles.
struct EmulatedAmxKernelSet {
  using Real = KernelSet<Isa::kAmx, c10::BFloat16>;
  using Portable = KernelSet<Isa::kPortable, float>;
  using Acc = float;
  using Packed = Real::Packed;
  static constexpr int kDepthGroup = Real::kDepthGroup;
  static constexpr bool kAInRows = Real::kAInRows;
  using Tile = Real::Tile;
  using Blocking = Real::Blocking;
  using GemmScope = AmxGemmScope<EmulatedTileRegisters>;
  static void finish_in_place(float* tile, int64_t row_stride, const float* bias, bool bias_on_rows,
                              const float* residual, Activation activation) {
    cpu::finish_in_place<ScalarMath<float>, Tile>(tile, row_stride, bias, bias_on_rows, residual, activation);
  }
  static void micro_kernel(int64_t depth, const c10::BFloat16* a, int64_t a_line_stride, int64_t a_depth_stride,
                           const c10::BFloat16* b, int64_t b_depth_stride, const float* partial, float* c,
                           int64_t c_row_stride, const TileFinish<float>* finish) {
    TORCH_CHECK(a_depth_stride == 1, "the AMX micro-kernel reads A in rows; got a depth stride of ", a_depth_stride);
    amx_micro_kernel<EmulatedTileRegisters, finish_in_place>(depth, a, a_line_stride, b, b_depth_stride, partial, c,
                                                             c_row_stride, finish);
  }
  template <typename Out>
  static void store_contiguous(const float* tile, const int64_t* rows, int64_t col0, const float* bias,
                               bool bias_on_rows, const Out* residual, Activation activation, Out* dst) {
    cpu::store_contiguous<ScalarMath<float>, Tile, ScalarConversion<float, Out>>(tile, rows, col0, bias, bias_on_rows,
                                                                                 residual, activation, dst);
  }
};

struct EmulatedAmx {
  template <typename T, typename F>
  static void dispatch(int64_t /*columns*/, F&& f) {
    f(KernelSetTag<EmulatedAmxKernelSet>{});
  }
};

void check_bfloat16(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.scalar_type() == at::kBFloat16, "the AMX kernel set is for bfloat16; ", name, " is ", t.scalar_type());
}

void emulated_forward(const ForwardArgs& args) {
  check_bfloat16(args.input, "input");
  forward_typed<c10::BFloat16, EmulatedAmx>(args);
}
void emulated_backward_input(const BackwardInputArgs& args) {
  check_bfloat16(args.grad_output, "grad_output");
  backward_input_typed<c10::BFloat16, EmulatedAmx>(args);
}
void emulated_backward_weight(const BackwardWeightArgs& args) {
  check_bfloat16(args.input, "input");
  backward_weight_typed<EmulatedAmxKernelSet, c10::BFloat16>(args);
}

}  // namespace
}  // namespace pointwise::cpu

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  using namespace pointwise;
  m.def("conv_forward", &run_forward<cpu::emulated_forward>, "the op's forward on the emulated AMX kernel set");
  m.def("conv_backward_input", &run_backward_input<cpu::emulated_backward_input>);
  m.def("conv_backward_weight", &run_backward_weight<cpu::emulated_backward_weight>);
  m.def("guard_cpu_allocations", &emulator::guard_cpu_allocations,
        "Every CPU allocation between guard pages and filled with NaN bytes (True), or back to normal (False).");
  m.def("dot_products", [] { return cpu::dot_products.load(); }, "TDPBF16PS carried out so far");
}
