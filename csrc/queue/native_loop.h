// A push/pop loop that runs entirely in C++ (no Python per operation): the `core_native` case of
// `pangu-core bench queue`, measuring what the queue itself costs per operation.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pangu::queue {

struct LoopTiming {
  double wall_s;  // elapsed time
  double cpu_s;   // CPU time of the calling thread (what the loop costs when it has a core to itself)
};

// Fills a queue with `resident` items, then alternates one put (random priority in [0, 1), version
// advancing every 1024 puts, age boost `age_boost`) and one get for `ops` operations in total.
// Returns the time the alternating part took (setup excluded). The caller releases the GIL.
// Throws ValueError for ops < 2.
LoopTiming push_pop_loop(size_t ops, size_t resident, double age_boost, uint64_t seed);

}  // namespace pangu::queue
