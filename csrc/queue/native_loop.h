// Push/pop loops that run entirely in C++ (no Python per operation): the `core_native` case of
// `pangu-core bench queue`. The same loop drives our queue and, as the baseline, a
// std::priority_queue of (key, sequence), so the two differ only in the queue they call.
#pragma once

#include <cstddef>
#include <cstdint>

namespace pangu::queue {

struct LoopTiming {
  double wall_s;      // elapsed time of the alternating part
  double cpu_s;       // CPU time of the calling thread (what the loop costs when it has a core to itself)
  uint64_t checksum;  // order-sensitive mix of the popped payloads: equal only for the same pop order
};

enum class LoopQueue { Ours, StdPriorityQueue };

// Fills a queue with `resident` items, then alternates one put (random priority in [0, 1), version
// advancing every 1024 puts, age boost `age_boost`) and one get for `ops` operations in total.
// Ours is pangu::queue::PriorityQueue; StdPriorityQueue is std::priority_queue of
// (key = priority - age_boost * version, sequence), higher key first and older first on ties, which
// is the order ours defines, so both pop the same payloads in the same order (same checksum).
// Returns the time the alternating part took (setup excluded). The caller releases the GIL.
// Throws ValueError for ops < 2 or a negative or non-finite age_boost.
LoopTiming push_pop_loop(size_t ops, size_t resident, double age_boost, uint64_t seed,
                         LoopQueue which = LoopQueue::Ours);

}  // namespace pangu::queue
