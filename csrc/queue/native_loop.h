// A push/pop loop that runs entirely in C++ (no Python per operation): the `core_native` case of
// `pangu-core bench queue`, measuring what the queue itself costs per operation.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pangu::queue {

// Fills a queue with `resident` items, then alternates one put (random priority in [0, 1), version
// advancing every 1024 puts, age boost `age_boost`) and one get for `ops` operations in total.
// Returns the seconds the alternating part took (setup excluded). Releases no locks of its own;
// the caller releases the GIL. Throws ValueError for ops < 2.
double push_pop_loop_seconds(size_t ops, size_t resident, double age_boost, uint64_t seed);

}  // namespace pangu::queue
