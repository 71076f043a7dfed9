// guarded_allocator.cpp: guard pages around, and NaN bytes in, every CPU allocation.
#pragma once

namespace pointwise::emulator {

// Routes every CPU tensor allocation through the guarded allocator (true) or back to the one in
// use before (false). Memory keeps the deleter of the allocator that made it.
void guard_cpu_allocations(bool enabled);

}  // namespace pointwise::emulator
