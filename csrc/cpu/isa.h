// The instruction sets the CPU kernels have kernel sets for (cpu/kernels.h), which of them this
// build holds and this CPU runs, and which one runs: the best of those, capped by the
// POINTWISE_CPU_ISA environment variable (as oneDNN's ONEDNN_MAX_CPU_ISA caps oneDNN) or, for
// tests, by set_isa.
#pragma once

#include <string>

// The x86 kernel sets (AVX2 and up) are built with GCC or Clang for x86 (per-function target
// attributes), unless the build leaves them out (POINTWISE_CUDA_NO_AVX2=1 in setup.py).
#if defined(POINTWISE_WITH_X86_KERNELS) && (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
#define POINTWISE_CPU_X86 1
// The target attribute of each ISA's kernel functions, on their declarations and definitions alike
// (a function template instantiated from a definition whose declaration lacks it is built for the
// baseline ISA).
#define POINTWISE_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define POINTWISE_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma,f16c")))
#define POINTWISE_TARGET_AVX512_BF16 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,fma,f16c")))
#endif
// The AMX set also needs a compiler that knows the target and an assembler that knows the tile
// instructions (GCC 11 or Clang 12, binutils 2.36): setup.py checks, and leaves it out otherwise.
#if defined(POINTWISE_CPU_X86) && defined(POINTWISE_WITH_AMX_KERNELS)
#define POINTWISE_CPU_AMX 1
#define POINTWISE_TARGET_AMX \
  __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16,fma,f16c,amx-tile,amx-bf16")))
#endif

namespace pointwise::cpu {

// Ordered: each ISA's kernel set falls back to the one below for what it does not improve.
enum class Isa : int { kPortable = 0, kAvx2, kAvx512, kAvx512Bf16, kAmx };
inline constexpr const char* kIsaNames[] = {"portable", "avx2", "avx512", "avx512_bf16", "amx"};
// The /proc/cpuinfo flags each needs, for messages and skipped tests.
inline constexpr const char* kIsaFlags[] = {"", "avx2 fma f16c", "avx512f avx512bw avx512dq avx512vl f16c",
                                            "avx512f avx512bw avx512dq avx512vl avx512_bf16 f16c",
                                            "avx512f avx512bw avx512dq avx512vl avx512_bf16 f16c amx_tile amx_bf16"};
inline constexpr int kIsaCount = sizeof(kIsaNames) / sizeof(kIsaNames[0]);

const char* isa_name(Isa isa);
// Built into this library (POINTWISE_CUDA_NO_AVX2 and non-x86 builds leave the x86 sets out, and
// toolchains without AMX the AMX set).
bool isa_compiled(Isa isa);
// Run by this CPU: cpuid says so, and the OS saves the registers the ISA uses (for AMX, Linux
// granted this process the tile data's state: amx_permitted).
bool isa_supported(Isa isa);
// The best ISA compiled and supported.
Isa detected_isa();
// What the ops run: detected_isa(), capped by POINTWISE_CPU_ISA when that is set (read once;
// an unknown name fails the first call with the names allowed), or what set_isa chose.
Isa selected_isa();
// Runs `name` from now on (tests run every path a machine has this way); raises where the build
// lacks it or the CPU cannot run it, naming which.
void set_isa(const std::string& name);
// The value of POINTWISE_CPU_ISA, or "" when unset.
std::string isa_cap();

}  // namespace pointwise::cpu
