// Which CPU kernel set runs (isa.h).
#include "cpu/isa.h"

#include <ATen/cpu/Utils.h>
#include <c10/util/Exception.h>

#include <atomic>
#include <cstdlib>

namespace pointwise::cpu {
namespace {

Isa parse_isa(const std::string& name, const char* source) {
  for (int i = 0; i < kIsaCount; ++i) {
    if (name == kIsaNames[i]) return static_cast<Isa>(i);
  }
  std::string known;
  for (int i = 0; i < kIsaCount; ++i) known += std::string(i ? ", " : "") + kIsaNames[i];
  TORCH_CHECK_VALUE(false, source, " must be one of ", known, "; got '", name, "'");
}

// cpuid has the ISA's flags, and the OS saves the registers it uses.
bool cpu_has(Isa isa) {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  // libgcc's cpuid checks include the OS's saving of the ymm and zmm registers (xgetbv).
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl");
  const bool avx512_bf16 = avx512 && __builtin_cpu_supports("avx512bf16");
  switch (isa) {
    case Isa::kPortable: return true;
    case Isa::kAvx2: return avx2;
    case Isa::kAvx512: return avx512;
    case Isa::kAvx512Bf16: return avx512_bf16;
    case Isa::kAmx: return avx512_bf16 && __builtin_cpu_supports("amx-tile") && __builtin_cpu_supports("amx-bf16");
  }
  return false;
#else
  return isa == Isa::kPortable;
#endif
}

// Linux lets a process use the tile registers only once it asked for their state
// (arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)): PyTorch's init_amx asks, once per process.
bool amx_permitted() {
  static const bool permitted = at::cpu::init_amx();
  return permitted;
}

Isa capped_detected_isa() {
  const Isa detected = detected_isa();
  const std::string cap = isa_cap();
  if (cap.empty()) return detected;
  const Isa most = parse_isa(cap, "POINTWISE_CPU_ISA");
  return static_cast<int>(most) < static_cast<int>(detected) ? most : detected;
}

std::atomic<int>& selected() {
  static std::atomic<int> isa(static_cast<int>(capped_detected_isa()));
  return isa;
}

}  // namespace

const char* isa_name(Isa isa) { return kIsaNames[static_cast<int>(isa)]; }

bool isa_compiled(Isa isa) {
#if defined(POINTWISE_CPU_AMX)
  return true;
#elif defined(POINTWISE_CPU_X86)
  return isa != Isa::kAmx;
#else
  return isa == Isa::kPortable;
#endif
}

bool isa_supported(Isa isa) { return cpu_has(isa) && (isa != Isa::kAmx || amx_permitted()); }

Isa detected_isa() {
  for (int i = kIsaCount - 1; i > 0; --i) {
    const Isa isa = static_cast<Isa>(i);
    if (isa_compiled(isa) && isa_supported(isa)) return isa;
  }
  return Isa::kPortable;
}

Isa selected_isa() { return static_cast<Isa>(selected().load(std::memory_order_relaxed)); }

void set_isa(const std::string& name) {
  const Isa isa = parse_isa(name, "the CPU ISA");
  TORCH_CHECK(isa_compiled(isa), "pointwise_cuda: cannot run the ", name,
              " CPU kernels: this build left them out (built with POINTWISE_CUDA_NO_AVX2=1, not for x86 "
              "with GCC or Clang, or, for amx, with a compiler or assembler that lacks AMX: GCC 11 and binutils "
              "2.36 or newer have it)");
  TORCH_CHECK(cpu_has(isa), "pointwise_cuda: cannot run the ", name, " CPU kernels: this CPU lacks ",
              kIsaFlags[static_cast<int>(isa)]);
  TORCH_CHECK(isa_supported(isa), "pointwise_cuda: cannot run the ", name,
              " CPU kernels: Linux refused this process the tile registers' state "
              "(arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA), through torch's at::cpu::init_amx)");
  selected().store(static_cast<int>(isa), std::memory_order_relaxed);
}

std::string isa_cap() {
  const char* cap = std::getenv("POINTWISE_CPU_ISA");
  return cap != nullptr ? cap : "";
}

}  // namespace pointwise::cpu
