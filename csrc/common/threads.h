// Thread count shared by every parallel part, and the parallel loop they use. Every loop runs on the
// one executor of work_pool.h (the process's OpenMP team, or the core's own pool): the calling thread
// works too, and ranges are claimed dynamically so a thread that lost its core to another process
// simply takes fewer.
#pragma once

#include <algorithm>
#include <cstdint>

#include "common/work_pool.h"

namespace pangu {

// Threads a parallel_for uses: set_num_threads(n), else OMP_NUM_THREADS (read once, at first use),
// else the core count. Thread-safe.
int num_threads();
// Sets the thread count of every later parallel call, process-wide; n >= 1, ValueError otherwise.
// Thread-safe; calls already running keep the count they started with.
void set_num_threads(int n);

// Ranges handed out per thread: more than one, so that a thread slowed down by another process
// leaves its share to the others, and few enough that per-range setup (scratch buffers) stays small.
constexpr int64_t kRangesPerThread = 4;

// Calls fn(begin, end) over disjoint ranges covering [0, n), on up to num_threads() threads (the
// caller among them). Every range is at least `grain` long unless n itself is shorter, and there are
// at most kRangesPerThread per thread; a range is the unit threads claim, so fn should set up its
// scratch once per call. Blocks until all ranges are done; rethrows the first exception fn threw
// (ranges not yet started are then skipped). Runs fn(0, n) inline when one range suffices.
// Thread-safe; may be called from inside another parallel_for.
template <typename F>
void parallel_for(int64_t n, int64_t grain, F&& fn) {
  if (n <= 0) return;
  grain = std::max<int64_t>(grain, 1);
  const int threads = num_threads();
  const int64_t ranges = std::min<int64_t>(n / grain, threads * kRangesPerThread);
  if (threads <= 1 || ranges <= 1) {
    fn(int64_t{0}, n);
    return;
  }
  run_groups(ranges, threads, [&](int64_t first, const ClaimGroup& claim) {
    for (int64_t r = first; r >= 0; r = claim()) fn(n * r / ranges, n * (r + 1) / ranges);
  });
}

}  // namespace pangu
